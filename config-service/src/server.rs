//! Wiring: store, services, auth, TLS, health, reflection, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use switchyard_proto::shared_watch::metadata_service_server::MetadataServiceServer;
use switchyard_proto::v1::admin_service_server::AdminServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{AdminAuth, MetadataAuth};
use crate::clients::Clients;
use crate::dashboard::{self, AdminHttp};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::migration::{Coordinator, KNOWN_CLIENTS_KEY, MIGRATIONS_KEY, MigrationConfig, Persist};
use crate::service::ConfigService;
use crate::store::{FileStore, KafkaConfig, KafkaStore, KeyedRecords, MemoryStore, Store};
use crate::tokens::ClientTokens;

pub use switchyard_proto::client::MAX_MESSAGE_BYTES;

/// Where versions are kept.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Nothing survives the process (tests, benchmarks, the demo).
    Memory,
    /// The embedded durable log in a directory.
    File {
        /// Data directory.
        dir: PathBuf,
    },
    /// A replicated log on a Kafka topic shared by every replica (see [`crate::store::KafkaStore`]).
    Kafka {
        /// `kafka://HOST:PORT[,HOST:PORT…]/TOPIC`.
        url: String,
        /// Set on the one replica that runs the migration coordinator (run exactly one such
        /// replica). The coordinator's record lives in the topic `TOPIC-migrations` on the same
        /// cluster, so a coordinator started on another replica after this one is lost takes up
        /// every move; a `migrations.pb` left here by an earlier version is taken up once.
        coordinator_dir: Option<PathBuf>,
    },
}

/// How to run the config service.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The store.
    pub store: StoreConfig,
    /// Versions of history kept at least.
    pub retain_versions: usize,
    /// Admin bearer token; required to listen on a non-loopback address.
    pub admin_token: Option<String>,
    /// PEM certificate chain and private key, for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Client properties for the Kafka-log store's home cluster (`security.protocol`,
    /// `sasl.*`, `ssl.*`…; values may hold `${file:}`/`${env:}` references). Checked with
    /// librdkafka's parser when the service starts.
    pub store_properties: std::collections::BTreeMap<String, String>,
    /// PEM CA certificate(s) that sign client certificates: with it (and `tls`), every client
    /// must present a certificate signed by one of them (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// How long a client's status report is kept.
    pub client_lease: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Address of the admin HTTP port (`/metrics`, the dashboard); `None` serves none. Without
    /// an admin token it must be a loopback address.
    pub admin_listen: Option<SocketAddr>,
    /// How the migration coordinator runs.
    pub migrations: MigrationConfig,
    /// Per-app client tokens file (see [`crate::tokens`]). Without it the MetadataService is
    /// open, which is allowed on a loopback address only, and serves no secret property.
    pub client_tokens: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            store: StoreConfig::Memory,
            retain_versions: 1000,
            admin_token: None,
            tls: None,
            tls_client_ca: None,
            store_properties: Default::default(),
            client_lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            admin_listen: None,
            migrations: MigrationConfig::default(),
            client_tokens: None,
        }
    }
}

/// A config service running on a background task.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    service: ConfigService,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    admin: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
    metrics: Arc<Metrics>,
    grace: Duration,
    client_tokens: Option<Arc<ClientTokens>>,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound address of the admin HTTP port, if one is served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(a, _)| *a)
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The client tokens in force, if any ([`ClientTokens::reload`] re-reads their file).
    pub fn client_tokens(&self) -> Option<&Arc<ClientTokens>> {
        self.client_tokens.as_ref()
    }

    /// The service (for in-process inspection).
    pub fn service(&self) -> &ConfigService {
        &self.service
    }

    /// Ends watch streams, waits for in-flight requests up to the grace period, and stops.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.join().await
    }

    /// Waits until the server stops (after [`RunningServer::trigger_shutdown`] or an error).
    pub async fn join(self) -> anyhow::Result<()> {
        let mut rx = self.shutdown.subscribe();
        let mut task = self.task;
        let deadline = tokio::time::Instant::now() + self.grace;
        let grpc = tokio::select! {
            r = &mut task => Some(r),
            _ = rx.wait_for(|v| *v) => None,
        };
        // The gRPC server stopped (or is stopping): stop the admin port with it.
        let _ = self.shutdown.send(true);
        let grpc = match grpc {
            Some(r) => r
                .context("server task failed")?
                .map_err(anyhow::Error::from),
            None => match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(r) => r
                    .context("server task failed")?
                    .map_err(anyhow::Error::from),
                Err(_) => {
                    tracing::warn!(
                        "in-flight requests did not finish within the grace period; stopping"
                    );
                    task.abort();
                    Ok(())
                }
            },
        };
        if let Some((_, mut admin)) = self.admin {
            match tokio::time::timeout_at(deadline, &mut admin).await {
                Ok(r) => r
                    .context("admin HTTP task failed")?
                    .context("admin HTTP server failed")?,
                Err(_) => admin.abort(),
            }
        }
        grpc
    }

    /// A handle that starts shutdown when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens the store, binds the listener and starts serving.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
    if !cfg.listen.ip().is_loopback() && cfg.admin_token.is_none() {
        bail!(
            "refusing to serve the admin API on non-loopback address {} without an admin token; pass --admin-token-file or listen on 127.0.0.1",
            cfg.listen
        );
    }
    if !cfg.listen.ip().is_loopback() && cfg.client_tokens.is_none() {
        bail!(
            "refusing to serve the metadata API on non-loopback address {} without client tokens; pass --client-tokens or listen on 127.0.0.1",
            cfg.listen
        );
    }
    let client_tokens = match &cfg.client_tokens {
        Some(p) => Some(ClientTokens::open(p).context("invalid --client-tokens file")?),
        None => None,
    };
    if let (Some(t), Some(admin)) = (&client_tokens, &cfg.admin_token)
        && let Some(app) = t.app_of(admin)
    {
        bail!(
            "the client tokens file {} gives app {app:?} the admin token; admin and client tokens must differ",
            t.path().display()
        );
    }
    if let Some(a) = cfg.admin_listen
        && !dashboard::open_allowed(a)
        && cfg.admin_token.is_none()
    {
        bail!(
            "refusing to serve the admin HTTP port on non-loopback address {a} without an admin token; pass --admin-token-file or listen on 127.0.0.1"
        );
    }
    let store: Arc<dyn Store> = match &cfg.store {
        StoreConfig::Memory => Arc::new(MemoryStore::new(cfg.retain_versions)),
        StoreConfig::File { dir } => {
            let dir = dir.clone();
            let retain = cfg.retain_versions;
            let (s, rec) = tokio::task::spawn_blocking(move || FileStore::open(&dir, retain))
                .await?
                .with_context(|| "could not open the data directory".to_string())?;
            tracing::info!(
                versions = rec.versions,
                truncated_bytes = rec.truncated_bytes,
                latest = s.latest().version,
                "opened version log"
            );
            Arc::new(s)
        }
        StoreConfig::Kafka { url, .. } => {
            let mut kcfg = KafkaConfig::from_url(url, cfg.retain_versions)
                .map_err(|e| anyhow::anyhow!("invalid --store: {e}"))?;
            kcfg.properties = crate::properties::store_properties(&cfg.store_properties)?;
            let (s, open) = tokio::task::spawn_blocking(move || KafkaStore::open(kcfg))
                .await?
                .with_context(|| format!("could not open the config log {url}"))?;
            tracing::info!(
                created = open.created,
                snapshot_version = open.snapshot_version,
                replayed = open.replayed,
                latest = s.latest().version,
                writer = s.writer_id(),
                "opened the config log"
            );
            Arc::new(s)
        }
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("could not listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;

    let admin_listener = match cfg.admin_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("could not listen on {a} (admin HTTP port)"))?,
        ),
        None => None,
    };

    let metrics = Metrics::new();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let hub = Arc::new(Hub::new(shutdown_rx.clone()).with_metrics(metrics.hub_metrics()));
    let clients = Arc::new(Clients::new(cfg.client_lease));
    let service =
        ConfigService::new(store, hub, clients).with_secrets_on_request(cfg.admin_token.is_some());
    service.spawn_publisher(shutdown_rx.clone());
    // One coordinator per configuration: with a replicated store only the replica given a
    // directory for its log runs one; the others answer migration requests with
    // FAILED_PRECONDITION.
    let persist = match &cfg.store {
        StoreConfig::Memory => Some(Persist::Memory),
        StoreConfig::File { dir } => Some(Persist::File(dir.join("migrations.pb"))),
        StoreConfig::Kafka {
            url,
            coordinator_dir: Some(dir),
        } => {
            // The record lives in the replicated store's cluster, next to the config log; the
            // directory only says that this replica coordinates (and holds the migrations file
            // of an earlier version, taken up once).
            let mut kcfg = KafkaConfig::from_url(url, cfg.retain_versions)
                .map_err(|e| anyhow::anyhow!("invalid --store: {e}"))?;
            kcfg.properties = crate::properties::store_properties(&cfg.store_properties)?;
            let topic = format!("{}-migrations", kcfg.topic);
            let t = topic.clone();
            let (records, mut newest) = tokio::task::spawn_blocking(move || {
                KeyedRecords::open(&kcfg, &t, &[MIGRATIONS_KEY, KNOWN_CLIENTS_KEY])
            })
            .await?
            .with_context(|| format!("could not open the migrations topic {topic}"))?;
            let legacy = dir.join("migrations.pb");
            Some(Persist::Kafka {
                records: Arc::new(records),
                migrations: newest.remove(MIGRATIONS_KEY),
                known_clients: newest.remove(KNOWN_CLIENTS_KEY),
                legacy_file: legacy.exists().then_some(legacy),
            })
        }
        StoreConfig::Kafka {
            coordinator_dir: None,
            ..
        } => None,
    };
    if let Some(persist) = persist {
        let take_up = matches!(
            &persist,
            Persist::Kafka {
                migrations: None,
                legacy_file: Some(_),
                ..
            }
        );
        let coordinator = Coordinator::open(service.clone(), persist, cfg.migrations.clone())
            .context("could not load the migrations")?;
        if take_up {
            // The migrations file of an earlier run moves into the replicated store.
            coordinator.save().await;
        }
        service.set_coordinator(Some(coordinator.clone()));
        tokio::spawn(coordinator.run(shutdown_rx.clone()));
    } else {
        tracing::info!("no migration coordinator on this replica (no --data-dir)");
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServiceServer<ConfigService>>()
        .await;
    health_reporter
        .set_serving::<MetadataServiceServer<ConfigService>>()
        .await;
    // Reflection v1, and v1alpha beside it: older grpcurl and grpcio-reflection speak only
    // v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    let admin = AdminServiceServer::new(service.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = tonic::service::interceptor::InterceptedService::new(
        admin,
        AdminAuth::new(cfg.admin_token.as_deref()).with_client_tokens(client_tokens.clone()),
    );
    let metadata = MetadataServiceServer::new(service.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let metadata = tonic::service::interceptor::InterceptedService::new(
        metadata,
        MetadataAuth::new(cfg.admin_token.as_deref(), client_tokens.clone()),
    );

    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_nodelay(true)
        .layer(metrics.grpc_layer());
    if let Some((cert, key)) = &cfg.tls {
        let cert_pem = tokio::fs::read(cert)
            .await
            .with_context(|| format!("could not read TLS certificate {}", cert.display()))?;
        let key_pem = tokio::fs::read(key)
            .await
            .with_context(|| format!("could not read TLS key {}", key.display()))?;
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
        if let Some(ca) = &cfg.tls_client_ca {
            let ca_pem = tokio::fs::read(ca)
                .await
                .with_context(|| format!("could not read the client CA {}", ca.display()))?;
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca_pem));
        }
        builder = builder
            .tls_config(tls)
            .context("invalid TLS configuration")?;
    } else if cfg.tls_client_ca.is_some() {
        anyhow::bail!("a client CA (mutual TLS) needs a TLS certificate and key");
    }
    let router = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(metadata)
        .add_service(admin);

    let mut stop = shutdown_rx.clone();
    // `Server::tcp_nodelay` does not apply to a custom incoming stream: set it on each accepted
    // socket, or Nagle's algorithm delays every multi-segment response by a delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|v| *v).await;
            })
            .await
    });
    tracing::info!(%addr, tls = cfg.tls.is_some(), auth = cfg.admin_token.is_some(), client_tokens = client_tokens.is_some(), "config service listening");

    let admin = match admin_listener {
        Some(l) => {
            let admin_addr = l.local_addr()?;
            let http = AdminHttp::new(
                service.clone(),
                metrics.clone(),
                cfg.admin_token.as_deref(),
                shutdown_rx.clone(),
            );
            http.spawn_sweeper();
            let app = http.router();
            let mut stop = shutdown_rx.clone();
            let t = tokio::spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|v| *v).await;
                    })
                    .await
            });
            tracing::info!(addr = %admin_addr, "admin HTTP port listening (metrics, dashboard)");
            Some((admin_addr, t))
        }
        None => None,
    };
    Ok(RunningServer {
        addr,
        service,
        shutdown: shutdown_tx,
        task,
        admin,
        metrics,
        grace: cfg.shutdown_grace,
        client_tokens,
    })
}
