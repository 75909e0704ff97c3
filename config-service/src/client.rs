//! Connecting to a config service as an operator or SDK: endpoint, TLS and bearer token.

use std::time::Duration;

use anyhow::Context;
use switchyard_proto::v1::admin_service_client::AdminServiceClient;
use switchyard_proto::v1::metadata_service_client::MetadataServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::server::MAX_MESSAGE_BYTES;

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Clone, Debug, Default)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// A token; `None` sends nothing.
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self(
            token
                .map(|t| {
                    MetadataValue::try_from(format!("Bearer {}", t.trim()))
                        .context("the token contains characters not allowed in a header")
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
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, BearerToken>>;
/// A metadata client with its token.
pub type MetadataClient = MetadataServiceClient<InterceptedService<Channel, BearerToken>>;

/// Connects to `endpoint` (`http://host:port` or `https://host:port`; a bare `host:port` means
/// http). `ca_pem` is the CA that signed the server's certificate, for https.
pub async fn connect(endpoint: &str, ca_pem: Option<Vec<u8>>) -> anyhow::Result<Channel> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let mut ep = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid endpoint {endpoint:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        ep = ep.tls_config(tls).context("invalid TLS settings")?;
    }
    ep.connect()
        .await
        .with_context(|| format!("could not connect to the config service at {endpoint}"))
}

/// An admin client over `channel`.
pub fn admin(channel: Channel, token: BearerToken) -> AdminClient {
    AdminServiceClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A metadata client over `channel`.
pub fn metadata(channel: Channel, token: BearerToken) -> MetadataClient {
    MetadataServiceClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
