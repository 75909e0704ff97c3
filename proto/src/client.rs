//! Connecting to a config service as an operator or SDK: endpoint, TLS and bearer token.

/// Largest request or response message, bytes (a 20,000-topic snapshot is a few MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint or token is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The service could not be reached.
    #[error("could not connect to the config service at {endpoint}: {detail}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// The transport error's chain of causes, and what it usually means.
        detail: String,
        /// Transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

use std::time::Duration;

use crate::v1::metadata_service_client::MetadataServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::v1::admin_service_client::AdminServiceClient as AdminStub;

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Clone, Debug, Default)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// A token; `None` sends nothing.
    pub fn new(token: Option<&str>) -> Result<Self, ConnectError> {
        Ok(Self(
            token
                .map(|t| {
                    MetadataValue::try_from(format!("Bearer {}", t.trim())).map_err(|_| {
                        ConnectError::Invalid(
                            "the token contains characters not allowed in a header".into(),
                        )
                    })
                })
                .transpose()?,
        ))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// An admin client with its token.
pub type AdminClient = AdminStub<InterceptedService<Channel, BearerToken>>;
/// A metadata client with its token.
pub type MetadataClient = MetadataServiceClient<InterceptedService<Channel, BearerToken>>;

/// TLS settings for `https://` endpoints.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM) that signed the service's certificate; `None`: the system's
    /// trusted roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key (PEM), for a service that requires mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TlsOptions {
    /// A CA (PEM) and no client certificate; `None`: the system's roots.
    pub fn ca(ca_pem: Option<Vec<u8>>) -> Self {
        Self {
            ca_pem,
            identity: None,
        }
    }

    /// Checks that the CA and the client certificate and key are PEM that holds what they
    /// should, so a wrong file is refused when the client is built rather than at connect.
    pub fn check(&self) -> Result<(), ConnectError> {
        if let Some(ca) = &self.ca_pem {
            pem_blocks(ca, "the CA certificate", &["CERTIFICATE"])?;
        }
        if let Some((cert, key)) = &self.identity {
            pem_blocks(cert, "the client certificate", &["CERTIFICATE"])?;
            pem_blocks(
                key,
                "the client key",
                &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
            )?;
        }
        Ok(())
    }
}

/// Checks that `pem` holds at least one PEM block of one of `kinds`.
fn pem_blocks(pem: &[u8], what: &str, kinds: &[&str]) -> Result<(), ConnectError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| ConnectError::Invalid(format!("{what} is not PEM text (not UTF-8)")))?;
    let found = text.lines().any(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
            .is_some_and(|k| kinds.contains(&k))
    });
    if found {
        Ok(())
    } else {
        Err(ConnectError::Invalid(format!(
            "{what} holds no PEM block of type {}",
            kinds.join(" or ")
        )))
    }
}

/// Connects to `endpoint` (`http://host:port` or `https://host:port`; a bare `host:port` means
/// http). `ca_pem` is the CA that signed the server's certificate, for https (`None`: the
/// system's roots).
pub async fn connect(endpoint: &str, ca_pem: Option<Vec<u8>>) -> Result<Channel, ConnectError> {
    connect_with_keepalive(
        endpoint,
        &TlsOptions::ca(ca_pem),
        Duration::from_secs(5),
        Duration::from_secs(20),
    )
    .await
}

/// [`connect`] with TLS options and a connect timeout.
pub async fn connect_with_timeout(
    endpoint: &str,
    tls: &TlsOptions,
    timeout: Duration,
) -> Result<Channel, ConnectError> {
    connect_with_keepalive(endpoint, tls, timeout, Duration::from_secs(20)).await
}

/// [`connect_with_timeout`], pinging the server every `keepalive` (also while idle) and failing
/// the connection — and every stream on it — when a ping is not answered within `keepalive`:
/// a server that stopped answering is detected within about twice `keepalive`.
pub async fn connect_with_keepalive(
    endpoint: &str,
    tls: &TlsOptions,
    timeout: Duration,
    keepalive: Duration,
) -> Result<Channel, ConnectError> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        return Err(ConnectError::Invalid(format!(
            "invalid endpoint {endpoint:?}: the scheme must be http:// or https://"
        )));
    }
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| ConnectError::Invalid(format!("invalid endpoint {endpoint:?}: {e}")))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive)
        .keep_alive_while_idle(true);
    if https {
        tls.check()?;
        let mut cfg = ClientTlsConfig::new();
        cfg = match &tls.ca_pem {
            Some(ca) => cfg.ca_certificate(Certificate::from_pem(ca)),
            None => cfg.with_native_roots(),
        };
        if let Some((cert, key)) = &tls.identity {
            cfg = cfg.identity(Identity::from_pem(cert, key));
        }
        ep = ep
            .tls_config(cfg)
            .map_err(|e| ConnectError::Invalid(format!("invalid TLS settings: {e}")))?;
    }
    // Connect now, so a scheme that does not match the server fails here with a hint rather
    // than on the first call.
    let channel = ep
        .connect()
        .await
        .map_err(|source| ConnectError::Unreachable {
            endpoint: endpoint.to_string(),
            detail: describe(&url, &source),
            source,
        })?;
    Ok(channel)
}

/// `error`'s chain of causes, then a hint at what it usually means.
pub fn describe(endpoint: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = chain(error);
    if let Some(h) = transport_hint(endpoint, error) {
        out.push_str(" (");
        out.push_str(h);
        out.push(')');
    }
    out
}

/// `error`'s chain of causes, each once, joined by `: `.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(x) = e {
        let t = x.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        e = x.source();
    }
    parts.join(": ")
}

/// A hint for a transport error's message: what a TLS or protocol failure usually means.
pub fn transport_hint(
    endpoint: &str,
    error: &(dyn std::error::Error + 'static),
) -> Option<&'static str> {
    let mut chain = String::new();
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(x) = e {
        chain.push_str(&format!("{x:?} {x} "));
        e = x.source();
    }
    let https = endpoint.starts_with("https://");
    if https
        && (chain.contains("InvalidContentType")
            || chain.contains("CorruptMessage")
            || chain.contains("corrupt message"))
    {
        Some("the service did not answer with TLS: if it serves plaintext, use an http:// endpoint")
    } else if chain.contains("UnknownIssuer")
        || chain.contains("unknown issuer")
        || chain.contains("BadSignature")
    {
        Some(
            "the service's certificate is not signed by a trusted CA: give the CA certificate that signed it",
        )
    } else if chain.contains("NotValidForName") || chain.contains("not valid for name") {
        Some(
            "the service's certificate does not name this host: connect by a name the certificate holds",
        )
    } else if chain.contains("Expired") || chain.contains("expired") {
        Some("the service's certificate has expired or is not yet valid")
    } else if chain.contains("CertificateRequired") || chain.contains("certificate required") {
        Some("the service requires a client certificate (mTLS): give a client certificate and key")
    } else if https
        && (chain.contains("BadCertificate")
            || chain.contains("bad certificate")
            || chain.contains("UnknownCA")
            || chain.contains("unknown ca")
            || chain.contains("DecryptError"))
    {
        Some(
            "the service refused the client certificate: it is not signed by a CA the service trusts",
        )
    } else if https
        && (chain.contains("connection closed")
            || chain.contains("reset")
            || chain.contains("broken pipe"))
    {
        Some(
            "the service closed the TLS connection: if it requires a client certificate (mTLS), give one signed by a CA it trusts",
        )
    } else if !https
        && (chain.contains("frame")
            || chain.contains("h2 protocol error")
            || chain.contains("connection closed")
            || chain.contains("broken pipe")
            || chain.contains("reset"))
    {
        Some("the service closed the connection: if it serves TLS, use an https:// endpoint")
    } else {
        None
    }
}

/// An admin client over `channel`.
pub fn admin(channel: Channel, token: BearerToken) -> AdminClient {
    AdminStub::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A metadata client over `channel`.
pub fn metadata(channel: Channel, token: BearerToken) -> MetadataClient {
    MetadataServiceClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
