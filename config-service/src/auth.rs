//! Bearer-token check for the admin API.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Requires `authorization: Bearer <token>` when a token is configured.
#[derive(Clone, Default)]
pub struct AdminAuth {
    token: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AdminAuth {
    /// Checks requests against `token`; `None` lets every request through.
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.as_bytes())),
        }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = &self.token else {
            return Ok(req);
        };
        let Some(value) = req.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "the admin API needs a token: send `authorization: Bearer <token>` (the CLI reads SWITCHYARD_TOKEN)",
            ));
        };
        let got = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated("malformed authorization header: expected `Bearer <token>`")
            })?;
        if bool::from(got.as_bytes().ct_eq(want)) {
            Ok(req)
        } else {
            Err(Status::permission_denied("the admin token is not valid"))
        }
    }
}
