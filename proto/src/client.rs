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
    #[error("could not connect to the config service at {endpoint}: {source}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

use std::time::Duration;

use crate::v1::metadata_service_client::MetadataServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
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

/// Connects to `endpoint` (`http://host:port` or `https://host:port`; a bare `host:port` means
/// http). `ca_pem` is the CA that signed the server's certificate, for https.
pub async fn connect(endpoint: &str, ca_pem: Option<Vec<u8>>) -> Result<Channel, ConnectError> {
    connect_with_timeout(endpoint, ca_pem, Duration::from_secs(5)).await
}

/// [`connect`] with a connect timeout.
pub async fn connect_with_timeout(
    endpoint: &str,
    ca_pem: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Channel, ConnectError> {
    connect_with_keepalive(endpoint, ca_pem, timeout, Duration::from_secs(20)).await
}

/// [`connect_with_timeout`], pinging the server every `keepalive` (also while idle) and failing
/// the connection — and every stream on it — when a ping is not answered within `keepalive`:
/// a server that stopped answering is detected within about twice `keepalive`.
pub async fn connect_with_keepalive(
    endpoint: &str,
    ca_pem: Option<Vec<u8>>,
    timeout: Duration,
    keepalive: Duration,
) -> Result<Channel, ConnectError> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| ConnectError::Invalid(format!("invalid endpoint {endpoint:?}: {e}")))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive)
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| ConnectError::Invalid(format!("invalid TLS settings: {e}")))?;
    }
    ep.connect()
        .await
        .map_err(|source| ConnectError::Unreachable {
            endpoint: endpoint.to_string(),
            source,
        })
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
