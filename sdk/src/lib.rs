//! # Switchyard SDK
//!
//! Produce and consume *logical topics*; the Switchyard config service says which Kafka
//! cluster and physical topic each one means today, and with which client properties. The SDK
//! watches that configuration and hot-swaps it: a topic moved to another cluster, or a changed
//! client property, takes effect in the running process without losing, duplicating or
//! reordering records.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard::Error> {
//! use switchyard::{Record, Switchyard};
//!
//! let sy = Switchyard::builder("checkout")
//!     .endpoint("http://127.0.0.1:7070")
//!     .connect()
//!     .await?;
//! let producer = sy.producer();
//! let delivery = producer
//!     .send(Record::new("orders").key("order-1").payload("{\"total\": 42}"))
//!     .await
//!     .map_err(|e| e.error)?;
//! println!("written to {}/{} partition {}", delivery.cluster, delivery.physical_topic, delivery.partition);
//! # Ok(()) }
//! ```
//!
//! Metrics: [`Switchyard::metrics`] is this client's Prometheus registry (records and bytes
//! sent and received per logical topic and cluster, send errors, send latency, throttling,
//! route changes, configuration version and age). Serve [`Metrics::encode`] on the
//! application's `/metrics`, or merge it into the application's own registry with
//! [`Metrics::register_into`]; see [`metrics`] for the list.
//!
//! ```no_run
//! # fn demo(sy: &switchyard::Switchyard) -> Result<(), switchyard::prometheus::Error> {
//! let text: String = sy.metrics().encode(); // Prometheus text format 0.0.4
//! let registry = switchyard::prometheus::Registry::new(); // or the application's own
//! sy.metrics().register_into(&registry)?;
//! # Ok(()) }
//! ```
//!
//! Guarantees:
//! - The configuration lives in one [`arc_swap::ArcSwap`], written only by the watch task;
//!   a version that fails validation is never swapped in, and the SDK never moves to an older
//!   version.
//! - Every applied version is persisted to a last-known-good cache; a process started while the
//!   service is down runs from it. A corrupt cache is reported and ignored.
//! - A send never straddles a route change: sends to a topic being switched are held, records
//!   in flight to the old cluster are delivered (or returned to their callers), then the held
//!   sends go to the new cluster.

mod cache;
mod consumer;
mod enqueue;
mod error;
mod gate;
mod metadata;
pub mod metrics;
mod producer;
mod record;
mod reports;
mod status;
pub mod throttle;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use cache::SnapshotCache;
pub use consumer::{Consumer, ConsumerOptions};
pub use error::{Error, ErrorKind, Result, SendError};
pub use metadata::{ClusterTarget, Metadata, Route};
pub use metrics::Metrics;
pub use producer::{
    DeliveryHandler, Producer, ProducerOptions, QUOTA_BLOCK_WAIT, SendCallback, SendRefCallback,
    TopicProducer,
};
/// The Prometheus client library of [`Metrics`], re-exported so that an application registers
/// the SDK's metrics into a registry of the same version.
pub use prometheus;
pub use record::{Delivery, DeliveryRef, Message, Record, RecordRef};
pub use reports::WantReports;
pub use switchyard_proto::state::State;
pub use throttle::{Limit, ThrottleStats, Throttled, TopicQuota};

use watch::{Shared, Source, WatchConfig};

/// A connection to the Switchyard configuration, shared by producers and consumers.
/// Dropping it stops the background watch and status tasks.
#[derive(Debug)]
pub struct Switchyard {
    shared: Arc<Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    cache_error: Option<String>,
}

/// Longest watch stall timeout accepted ([`SwitchyardBuilder::watch_stall_timeout`]).
const MAX_WATCH_STALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Builds a [`Switchyard`].
#[derive(Debug, Clone)]
pub struct SwitchyardBuilder {
    app: String,
    endpoints: Vec<String>,
    token: Option<String>,
    tls: switchyard_proto::client::TlsOptions,
    cache: Option<PathBuf>,
    no_cache: bool,
    client_id: Option<String>,
    properties: BTreeMap<String, String>,
    initial_timeout: Duration,
    status_interval: Duration,
    language: String,
    watch_stall_timeout: Duration,
}

impl Switchyard {
    /// A builder for application `app`.
    pub fn builder(app: impl Into<String>) -> SwitchyardBuilder {
        SwitchyardBuilder {
            app: app.into(),
            endpoints: Vec::new(),
            token: None,
            tls: Default::default(),
            cache: None,
            no_cache: false,
            client_id: None,
            properties: BTreeMap::new(),
            initial_timeout: Duration::from_secs(10),
            status_interval: Duration::from_secs(10),
            language: "rust".into(),
            watch_stall_timeout: Duration::from_secs(10),
        }
    }

    /// A client whose configuration is a static file: a desired-state YAML/JSON file (as used
    /// by `switchyard apply`) or a snapshot cache file. No config service is contacted.
    pub fn from_file(path: impl AsRef<Path>, app: impl Into<String>) -> Result<Self> {
        let path = path.as_ref();
        let app = app.into();
        check_app(&app)?;
        let data = std::fs::read(path).map_err(|e| Error::Cache {
            path: path.display().to_string(),
            reason: format!("unreadable: {e}"),
        })?;
        let state = if data.starts_with(b"SWYD") {
            SnapshotCache::new(path)
                .load()?
                .ok_or_else(|| Error::Cache {
                    path: path.display().to_string(),
                    reason: "missing".into(),
                })?
        } else {
            let text = String::from_utf8(data).map_err(|_| Error::Cache {
                path: path.display().to_string(),
                reason: "not UTF-8 text".into(),
            })?;
            let mut s = switchyard_proto::desired::DesiredState::parse(&text)
                .and_then(|d| d.to_state())
                .map_err(|e| Error::Cache {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            s.version = 1;
            s
        };
        let client_id = default_client_id(&app);
        let shared = Arc::new(Shared::new(
            app,
            client_id,
            BTreeMap::new(),
            "rust".into(),
            None,
        ));
        shared
            .apply(state, Source::File)
            .map_err(|reason| Error::Cache {
                path: path.display().to_string(),
                reason,
            })?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Ok(Self {
            shared,
            shutdown,
            cache_error: None,
        })
    }

    /// A producer. Must be called within a Tokio runtime.
    pub fn producer(&self) -> Producer {
        Producer::new(self.shared.clone(), ProducerOptions::default())
    }

    /// A producer with options.
    pub fn producer_with(&self, opts: ProducerOptions) -> Producer {
        Producer::new(self.shared.clone(), opts)
    }

    /// A consumer in `group` over logical `topics`.
    pub fn consumer(&self, group: &str, topics: &[&str]) -> Result<Consumer> {
        Consumer::new(
            self.shared.clone(),
            group,
            topics,
            ConsumerOptions::default(),
        )
    }

    /// A consumer with options.
    pub fn consumer_with(
        &self,
        group: &str,
        topics: &[&str],
        opts: ConsumerOptions,
    ) -> Result<Consumer> {
        Consumer::new(self.shared.clone(), group, topics, opts)
    }

    /// The configuration version in use.
    pub fn version(&self) -> u64 {
        self.shared.load().version
    }

    /// This client's metrics (shared by every producer and consumer made from it), to
    /// render in the Prometheus text format or merge into the application's registry. See
    /// [`metrics`].
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics.clone()
    }

    /// The configuration in use, compiled for this app.
    pub fn metadata(&self) -> Arc<Metadata> {
        self.shared.load_full()
    }

    /// Waits until version `v` or later is applied.
    pub async fn wait_for_version(&self, v: u64, timeout: Duration) -> Result<u64> {
        let mut rx = self.shared.subscribe();
        let r = tokio::time::timeout(timeout, rx.wait_for(|(cur, has)| *has && *cur >= v)).await;
        match r {
            Ok(Ok(g)) => Ok(g.0),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(format!(
                "configuration version {v} not applied within {timeout:?} (at {})",
                self.version()
            ))),
        }
    }

    /// Why the last-known-good cache was not used at start, if it was unusable.
    pub fn cache_error(&self) -> Option<&str> {
        self.cache_error.as_deref()
    }

    /// What is wrong with the config watch now (it keeps retrying), if anything: the error of
    /// the last attempt, cleared once an endpoint serves the watch again.
    pub fn last_watch_error(&self) -> Option<String> {
        self.shared.last_error()
    }

    /// This client's id as reported to the service.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn check_app(app: &str) -> Result<()> {
    switchyard_proto::validate::check_name("app", app)
        .map_err(|e| Error::InvalidArgument(e.to_string()))
}

fn default_client_id(app: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{app}-{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl SwitchyardBuilder {
    /// Adds a config service endpoint (`http://host:port`, `https://host:port`); several
    /// endpoints are tried in turn.
    pub fn endpoint(mut self, e: impl Into<String>) -> Self {
        self.endpoints.push(e.into());
        self
    }
    /// How long a config service that stopped answering (a hung or cut-off replica) may hold
    /// the watch before the client fails over to the next endpoint (default 10 s; 100 ms to
    /// 1 h).
    pub fn watch_stall_timeout(mut self, d: Duration) -> Self {
        self.watch_stall_timeout = d;
        self
    }
    /// Bearer token for the config service.
    pub fn token(mut self, t: impl Into<String>) -> Self {
        self.token = Some(t.into());
        self
    }
    /// CA certificate(s) (PEM) that signed the config service's certificate, for `https://`
    /// endpoints. Without it the system's trusted roots are used.
    pub fn ca_certificate(mut self, pem: Vec<u8>) -> Self {
        self.tls.ca_pem = Some(pem);
        self
    }
    /// A client certificate chain and its private key (PEM), for a config service that
    /// requires mutual TLS.
    pub fn client_certificate(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.tls.identity = Some((cert_pem, key_pem));
        self
    }
    /// Where to keep the last-known-good snapshot (default:
    /// `$SWITCHYARD_CACHE_DIR` or `$HOME/.cache/switchyard`, file `<app>.snapshot`).
    pub fn cache_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.cache = Some(p.into());
        self
    }
    /// Keep no cache.
    pub fn without_cache(mut self) -> Self {
        self.no_cache = true;
        self
    }
    /// The id reported to the service (default: app, host, pid and a random suffix).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }
    /// A client property set by the application (enforced service settings still win).
    pub fn property(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.properties.insert(k.into(), v.into());
        self
    }
    /// How long `connect` waits for a first configuration when there is no usable cache.
    pub fn initial_timeout(mut self, d: Duration) -> Self {
        self.initial_timeout = d;
        self
    }
    /// How often status is reported to the service.
    pub fn status_interval(mut self, d: Duration) -> Self {
        self.status_interval = d;
        self
    }
    /// The language reported to the service (bindings set theirs).
    pub fn language(mut self, l: impl Into<String>) -> Self {
        self.language = l.into();
        self
    }

    /// Starts watching the configuration. Returns once a configuration is in use: at once when
    /// the last-known-good cache is valid, else after the first snapshot from the service.
    pub async fn connect(self) -> Result<Switchyard> {
        check_app(&self.app)?;
        if self.endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "give at least one config service endpoint".into(),
            ));
        }
        if self.watch_stall_timeout < Duration::from_millis(100)
            || self.watch_stall_timeout > MAX_WATCH_STALL_TIMEOUT
        {
            return Err(Error::InvalidArgument(format!(
                "the watch stall timeout must be between 100 ms and 1 h, not {:?}",
                self.watch_stall_timeout
            )));
        }
        self.tls
            .check()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        for k in self.properties.keys() {
            switchyard_proto::validate::check_property_key("property", k)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            if k == "bootstrap.servers" {
                return Err(Error::InvalidArgument(
                    "bootstrap.servers comes from the config service".into(),
                ));
            }
        }
        let cache = if self.no_cache {
            None
        } else {
            Some(SnapshotCache::new(self.cache.unwrap_or_else(|| {
                let dir = std::env::var_os("SWITCHYARD_CACHE_DIR")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/switchyard"))
                    })
                    .unwrap_or_else(std::env::temp_dir);
                dir.join(format!("{}.snapshot", self.app))
            })))
        };
        let client_id = self
            .client_id
            .unwrap_or_else(|| default_client_id(&self.app));
        let shared = Arc::new(Shared::new(
            self.app,
            client_id,
            self.properties,
            self.language,
            cache.clone(),
        ));
        let mut cache_error = None;
        if let Some(c) = &cache {
            match c.load() {
                Ok(Some(state)) => {
                    let v = state.version;
                    match shared.apply(state, Source::Cache) {
                        Ok(_) => {
                            tracing::info!(version = v, path = %c.path().display(), "running from the last-known-good cache")
                        }
                        Err(e) => cache_error = Some(e),
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "ignoring the unusable snapshot cache");
                    cache_error = Some(e.to_string());
                }
            }
        }
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let wcfg = WatchConfig {
            endpoints: self.endpoints,
            token: self.token,
            tls: self.tls,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            stall_timeout: self.watch_stall_timeout,
        };
        tokio::spawn(watch::run(shared.clone(), wcfg.clone(), rx.clone()));
        tokio::spawn(status::run(shared.clone(), wcfg, self.status_interval, rx));
        let sy = Switchyard {
            shared,
            shutdown,
            cache_error,
        };
        if !sy.shared.has_config() {
            let mut rx = sy.shared.subscribe();
            let r = tokio::time::timeout(self.initial_timeout, rx.wait_for(|(_, has)| *has)).await;
            if r.is_err() {
                let mut why = format!(
                    "no configuration within {:?}: {}",
                    self.initial_timeout,
                    sy.shared
                        .last_error()
                        .unwrap_or_else(|| "the config service did not answer".into())
                );
                if let Some(c) = &sy.cache_error {
                    why.push_str(&format!("; the cache was not usable: {c}"));
                }
                return Err(Error::NoConfig(why));
            }
        }
        Ok(sy)
    }
}
