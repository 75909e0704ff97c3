//! Bearer-token checks.
//!
//! Two kinds of token, never interchangeable:
//! - the **admin token** (`--admin-token-file`): the AdminService and everything on the
//!   MetadataService;
//! - **client tokens**, one per app (`--client-tokens`, see [`crate::tokens`]): the
//!   MetadataService only, scoped to that app's view (see [`switchyard_proto::scope`]).
//!
//! [`MetadataAuth`] resolves who calls the MetadataService into a [`Caller`] request extension
//! the handlers read; [`AdminAuth`] guards the AdminService and refuses client tokens.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::tokens::ClientTokens;

/// Who calls the MetadataService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token: sees the whole configuration, secrets included.
    Admin,
    /// A client token of this app: sees that app's scoped view, with its clusters' secrets.
    App(String),
    /// No token, on a server without client tokens (loopback only): sees the whole
    /// configuration without any secret property.
    Anonymous,
}

/// Lets a client token's watch stream end once the token is revoked: set next to
/// [`Caller::App`] by [`MetadataAuth`]. Holds the token's SHA-256, not the token.
#[derive(Clone)]
pub struct Revocable {
    tokens: Arc<ClientTokens>,
    hash: [u8; 32],
    app: String,
}

impl std::fmt::Debug for Revocable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocable").field("app", &self.app).finish()
    }
}

impl Revocable {
    /// Changes on every reload of the client tokens.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tokens.reloads()
    }

    /// True while the token still acts for the same app.
    pub fn still_valid(&self) -> bool {
        self.tokens.app_of_hash(&self.hash).as_deref() == Some(self.app.as_str())
    }
}

/// The bearer token of a request: `Ok(None)` without an `authorization` header.
fn bearer(md: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = md.get("authorization") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(Some)
        .ok_or_else(|| {
            Status::unauthenticated("malformed authorization header: expected `Bearer <token>`")
        })
}

fn is_admin(want: Option<&Arc<[u8]>>, got: &str) -> bool {
    want.is_some_and(|w| bool::from(got.as_bytes().ct_eq(w)))
}

/// Requires `authorization: Bearer <token>` when a token is configured.
#[derive(Clone, Default)]
pub struct AdminAuth {
    token: Option<Arc<[u8]>>,
    clients: Option<Arc<ClientTokens>>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_tokens", &self.clients.is_some())
            .finish()
    }
}

impl AdminAuth {
    /// Checks requests against `token`; `None` lets every request through (but a client
    /// token, see [`AdminAuth::with_client_tokens`]).
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.as_bytes())),
            clients: None,
        }
    }

    /// Also refuses the client tokens of `clients` (with a message saying so).
    pub fn with_client_tokens(mut self, clients: Option<Arc<ClientTokens>>) -> Self {
        self.clients = clients;
        self
    }

    /// Checks one request's metadata.
    pub fn check(&self, md: &MetadataMap) -> Result<(), Status> {
        let got = bearer(md)?;
        if let Some(got) = got {
            if is_admin(self.token.as_ref(), got) {
                return Ok(());
            }
            if let Some(app) = self.clients.as_ref().and_then(|c| c.app_of(got)) {
                return Err(Status::permission_denied(format!(
                    "this is a client token (app {app:?}); the admin API needs the admin token"
                )));
            }
        }
        match (&self.token, got) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(Status::unauthenticated(
                "the admin API needs a token: send `authorization: Bearer <token>` (the CLI reads SWITCHYARD_TOKEN)",
            )),
            (Some(_), Some(_)) => Err(Status::permission_denied("the admin token is not valid")),
        }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(req.metadata())?;
        Ok(req)
    }
}

/// Resolves the [`Caller`] of every MetadataService request and stores it in the request's
/// extensions. With client tokens configured a token is required.
#[derive(Clone, Default)]
pub struct MetadataAuth {
    admin: Option<Arc<[u8]>>,
    clients: Option<Arc<ClientTokens>>,
}

impl std::fmt::Debug for MetadataAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataAuth")
            .field("admin_token", &self.admin.as_ref().map(|_| "<redacted>"))
            .field("client_tokens", &self.clients.is_some())
            .finish()
    }
}

impl MetadataAuth {
    /// Checks against the admin token and the client tokens, either optional.
    pub fn new(admin: Option<&str>, clients: Option<Arc<ClientTokens>>) -> Self {
        Self {
            admin: admin.map(|t| Arc::from(t.as_bytes())),
            clients,
        }
    }

    /// Who sends a request with this metadata.
    pub fn caller(&self, md: &MetadataMap) -> Result<Caller, Status> {
        self.resolve(md).map(|(c, _)| c)
    }

    fn resolve(&self, md: &MetadataMap) -> Result<(Caller, Option<Revocable>), Status> {
        let Some(got) = bearer(md)? else {
            return match &self.clients {
                Some(_) => Err(Status::unauthenticated(
                    "the metadata API needs a client token: send `authorization: Bearer <token>` (SDK: `.token(..)`; mint one with `switchyard token new --app APP`)",
                )),
                None => Ok((Caller::Anonymous, None)),
            };
        };
        if is_admin(self.admin.as_ref(), got) {
            return Ok((Caller::Admin, None));
        }
        match &self.clients {
            Some(c) => {
                let hash = crate::tokens::hash_token(got);
                let app = c.app_of_hash(&hash).ok_or_else(|| {
                    Status::permission_denied(
                        "the token is neither a client token nor the admin token of this server",
                    )
                })?;
                let rev = Revocable {
                    tokens: c.clone(),
                    hash,
                    app: app.clone(),
                };
                Ok((Caller::App(app), Some(rev)))
            }
            None => Err(Status::permission_denied(
                "the token is not valid: this server has no client tokens (and the token is not its admin token)",
            )),
        }
    }
}

impl Interceptor for MetadataAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let (caller, rev) = self.resolve(req.metadata())?;
        req.extensions_mut().insert(caller);
        if let Some(r) = rev {
            req.extensions_mut().insert(r);
        }
        Ok(req)
    }
}
