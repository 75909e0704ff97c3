//! The single writer of the SDK's configuration: loads the last-known-good cache, watches the
//! config service (reconnecting with jittered exponential backoff, resuming from its version,
//! failing over to the next endpoint whenever a watch fails or stalls), validates every version
//! before it is swapped in, and persists each applied version to the cache. A replica that is
//! behind the version in use (its snapshot or deltas are older) is never applied from: the
//! client keeps its version until the replica passes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rand::Rng;
use switchyard_proto::client::{self, BearerToken};
use switchyard_proto::state::State;
use switchyard_proto::v1::{WatchRequest, watch_event::Event};
use switchyard_proto::validate;
use tokio::sync::watch;

use crate::cache::SnapshotCache;
use crate::metadata::Metadata;

/// The client lease assumed until the service announces its own (the service's default).
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Where an applied version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The last-known-good cache file.
    Cache,
    /// A static snapshot file.
    File,
    /// The config service.
    Service,
}

/// The current configuration, readable lock-free by every send.
#[derive(Debug)]
pub struct Shared {
    pub(crate) app: String,
    pub(crate) client_id: String,
    /// Random per instance (see `ClientStatus.instance_id`).
    pub(crate) instance_id: String,
    pub(crate) app_props: BTreeMap<String, String>,
    pub(crate) language: String,
    registry: crate::status::Registry,
    current: ArcSwap<Metadata>,
    /// Whether the current metadata has any quota: a send skips the quota lookup otherwise
    /// (set right after the metadata is swapped; a send racing an apply is checked against
    /// either version, as it would be without it).
    any_quota: std::sync::atomic::AtomicBool,
    /// `(version, has_config)` notifications.
    version_tx: watch::Sender<(u64, bool)>,
    cache: Option<SnapshotCache>,
    last_error: Mutex<Option<String>>,
    /// Asks the status reporter to report now (a route switch or a drain finished: the
    /// migration coordinator advances on these reports).
    report_soon: tokio::sync::Notify,
    /// How recently the config service heard from this client (see [`Shared::check_contact`]).
    contact: Mutex<Contact>,
    /// Whether this client counts as cut off from the config service.
    cut_off_tx: watch::Sender<bool>,
    pub(crate) metrics: crate::metrics::Metrics,
}

/// What the SDK knows of the config service's view of it.
#[derive(Debug)]
struct Contact {
    /// Whether this client reports to a config service at all (a client started from a static
    /// file never counts as cut off).
    watched: bool,
    /// When the newest status report the service acknowledged was sent (or when reporting
    /// started). The service's lease for this client runs from no earlier than this.
    last_ok: Instant,
    /// The client lease the service announced.
    lease: Duration,
    /// The newest version a service replica said it had.
    server_version: u64,
    /// Since when the applied version has been behind `server_version`.
    behind_since: Option<Instant>,
}

impl Shared {
    /// Asks for a status report now instead of at the next interval.
    pub(crate) fn report_soon(&self) {
        self.report_soon.notify_one();
    }

    pub(crate) async fn report_requested(&self) {
        self.report_soon.notified().await;
    }

    pub(crate) fn new(
        app: String,
        client_id: String,
        app_props: BTreeMap<String, String>,
        language: String,
        cache: Option<SnapshotCache>,
    ) -> Self {
        let (version_tx, _) = watch::channel((0, false));
        let metrics = crate::metrics::Metrics::new(&app);
        Self {
            metrics,
            app,
            client_id,
            instance_id: format!("{:016x}", rand::random::<u64>()),
            app_props,
            language,
            registry: crate::status::Registry::default(),
            current: ArcSwap::from_pointee(Metadata::default()),
            any_quota: std::sync::atomic::AtomicBool::new(false),
            version_tx,
            cache,
            last_error: Mutex::new(None),
            report_soon: tokio::sync::Notify::new(),
            contact: Mutex::new(Contact {
                watched: false,
                last_ok: Instant::now(),
                lease: DEFAULT_LEASE,
                server_version: 0,
                behind_since: None,
            }),
            cut_off_tx: watch::channel(false).0,
        }
    }

    /// Starts judging contact with the config service (the status reporter calls it once).
    pub(crate) fn watch_contact(&self) {
        let mut c = self.contact.lock();
        c.watched = true;
        c.last_ok = Instant::now();
    }

    /// A status report sent at `sent_at` was acknowledged with this lease and version.
    pub(crate) fn report_acked(&self, sent_at: Instant, lease_seconds: u32, server_version: u64) {
        {
            let mut c = self.contact.lock();
            c.last_ok = c.last_ok.max(sent_at);
            if lease_seconds > 0 {
                c.lease = Duration::from_secs(u64::from(lease_seconds));
            }
            c.server_version = c.server_version.max(server_version);
        }
        self.check_contact();
    }

    /// Decides whether this client is cut off from the config service.
    ///
    /// The coordinator forgets a client whose lease (counted from its last report the service
    /// received) has ended, and may then seal, complete or abort a move without it. So a
    /// client counts as cut off once no report of the last half lease was acknowledged, or its
    /// applied version has stayed behind what the service said it had for half a lease (its
    /// watch is not getting through). It counts as reachable again only when a report got
    /// through within half a lease *and* it has applied the version the service had then — so
    /// it never goes back to sending on a route it has not re-read.
    pub(crate) fn check_contact(&self) {
        let applied = if self.has_config() {
            self.load().version
        } else {
            0
        };
        let cut = {
            let mut c = self.contact.lock();
            if !c.watched {
                return;
            }
            let behind = applied < c.server_version;
            if !behind {
                c.behind_since = None;
            } else if c.behind_since.is_none() {
                c.behind_since = Some(Instant::now());
            }
            let half = c.lease / 2;
            let silent = c.last_ok.elapsed() > half;
            if *self.cut_off_tx.borrow() {
                silent || behind
            } else {
                silent || c.behind_since.is_some_and(|t| t.elapsed() > half)
            }
        };
        self.cut_off_tx.send_if_modified(|v| {
            if *v == cut {
                return false;
            }
            *v = cut;
            if cut {
                tracing::warn!("the config service has not acknowledged this client for over half its lease; sends to topics in the middle of a move are held");
            } else {
                tracing::info!("the config service is reachable again");
            }
            true
        });
    }

    /// Whether this client is cut off from the config service (see [`Shared::check_contact`]).
    pub(crate) fn cut_off(&self) -> watch::Receiver<bool> {
        self.cut_off_tx.subscribe()
    }

    /// Whether this client is cut off from the config service right now.
    pub(crate) fn is_cut_off(&self) -> bool {
        *self.cut_off_tx.borrow()
    }

    /// Since the service last acknowledged a report of this client.
    pub(crate) fn silent_for(&self) -> Duration {
        self.contact.lock().last_ok.elapsed()
    }

    /// The current metadata. Callers hold it briefly and never across an `.await`.
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Metadata>> {
        self.current.load()
    }

    /// Whether the current metadata may have a quota (false: it has none).
    pub(crate) fn any_quota(&self) -> bool {
        self.any_quota.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current metadata, owned.
    pub(crate) fn load_full(&self) -> Arc<Metadata> {
        self.current.load_full()
    }

    pub(crate) fn registry(&self) -> &crate::status::Registry {
        &self.registry
    }

    pub(crate) fn register(&self, s: std::sync::Weak<dyn crate::status::StatusSource>) {
        self.registry.register(s);
    }

    /// Version notifications.
    pub(crate) fn subscribe(&self) -> watch::Receiver<(u64, bool)> {
        self.version_tx.subscribe()
    }

    /// True once any configuration has been applied.
    pub(crate) fn has_config(&self) -> bool {
        self.version_tx.borrow().1
    }

    pub(crate) fn set_error(&self, e: String) {
        *self.last_error.lock() = Some(e);
    }

    pub(crate) fn clear_error(&self) {
        *self.last_error.lock() = None;
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    pub(crate) fn cache(&self) -> Option<&SnapshotCache> {
        self.cache.as_ref()
    }

    /// Validates and swaps in `state`. Never moves to an older version. Returns whether it
    /// was applied.
    pub(crate) fn apply(&self, state: State, source: Source) -> Result<bool, String> {
        let (cur, has) = *self.version_tx.borrow();
        if has && state.version < cur {
            tracing::warn!(
                have = cur,
                offered = state.version,
                "ignoring an older configuration version"
            );
            return Ok(false);
        }
        if has && state.version == cur {
            return Ok(false);
        }
        validate::check_state(&state).map_err(|e| {
            format!(
                "configuration version {} failed validation and was not applied: {e}",
                state.version
            )
        })?;
        let state = Arc::new(state);
        let prev = self.current.load_full();
        // Limiters of unchanged quotas carry over from the version in use.
        let md = Metadata::compile_next(&prev, state.clone(), &self.app, &self.app_props);
        let moved: Vec<String> = if has {
            md.routes()
                .filter(|r| {
                    prev.route(&r.logical).is_some_and(|p| {
                        p.cluster.name != r.cluster.name || p.physical != r.physical
                    })
                })
                .map(|r| r.logical.clone())
                .collect()
        } else {
            Vec::new()
        };
        let any_quota = !md.quotas().is_empty();
        self.current.store(Arc::new(md));
        self.any_quota
            .store(any_quota, std::sync::atomic::Ordering::Release);
        self.metrics
            .config_applied(state.version, moved.iter().map(String::as_str));
        self.version_tx.send_replace((state.version, true));
        tracing::debug!(version = state.version, ?source, "applied configuration");
        Ok(true)
    }
}

/// How to reach the config service.
#[derive(Debug, Clone)]
pub(crate) struct WatchConfig {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    pub tls: switchyard_proto::client::TlsOptions,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A watch whose server stops answering (HTTP/2 pings unanswered) is abandoned within
    /// about this long, and the next endpoint is tried.
    pub stall_timeout: Duration,
}

/// Runs until `shutdown` turns true.
pub(crate) async fn run(
    shared: Arc<Shared>,
    cfg: WatchConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let token = match BearerToken::new(cfg.token.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            shared.set_error(e.to_string());
            return;
        }
    };
    let mut backoff = cfg.backoff_min;
    let mut idx = 0usize;
    loop {
        let ep = &cfg.endpoints[idx % cfg.endpoints.len()];
        let mut progressed = false;
        tokio::select! {
            r = watch_once(&shared, ep, &cfg, &token, &mut progressed) => {
                if let Err(e) = r {
                    tracing::warn!(endpoint = %ep, error = %e, "config watch interrupted; will reconnect");
                    shared.set_error(e);
                    shared.metrics.watch_reconnect();
                }
            }
            _ = shutdown.wait_for(|v| *v) => return,
        }
        if progressed {
            backoff = cfg.backoff_min;
        }
        // Fail over: the endpoint that just failed (refused, stalled, closed the stream) goes to
        // the back of the line. The version in use never goes back whatever the next one has
        // (see `Shared::apply`).
        idx = idx.wrapping_add(1);
        // Full jitter: sleep a random duration up to the current backoff.
        let sleep = rand::rng().random_range(backoff / 2..=backoff);
        backoff = (backoff * 2).min(cfg.backoff_max);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}

/// A call's failure as text: its message and code, then what a transport failure under it
/// usually means (a TLS or scheme mismatch).
/// With `hint` (a call that failed before the service answered), what a transport failure
/// usually means is added.
fn status_text(endpoint: &str, s: &tonic::Status, hint: bool) -> String {
    let mut out = format!("{} ({:?})", s.message(), s.code());
    if let Some(e) = std::error::Error::source(s) {
        out.push_str(": ");
        out.push_str(&if hint {
            client::describe(endpoint, e)
        } else {
            client::chain(e)
        });
    }
    out
}

async fn watch_once(
    shared: &Arc<Shared>,
    endpoint: &str,
    cfg: &WatchConfig,
    token: &BearerToken,
    progressed: &mut bool,
) -> Result<(), String> {
    let channel = client::connect_with_keepalive(
        endpoint,
        &cfg.tls,
        Duration::from_secs(3),
        (cfg.stall_timeout / 2).max(Duration::from_millis(50)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut meta = client::metadata(channel, token.clone());
    let known = if shared.has_config() {
        shared.load().version
    } else {
        0
    };
    let mut stream = meta
        .watch(WatchRequest {
            known_version: known,
            client_id: shared.client_id.clone(),
            app: shared.app.clone(),
        })
        .await
        .map_err(|s| format!("watch refused: {}", status_text(endpoint, &s, true)))?
        .into_inner();
    // This endpoint serves the watch: whatever failed before is not what is wrong now.
    shared.clear_error();
    loop {
        let ev = match stream.message().await {
            Ok(Some(ev)) => ev,
            Ok(None) => return Err("the config service closed the watch stream".into()),
            Err(s) => {
                return Err(format!(
                    "watch failed: {}",
                    status_text(endpoint, &s, false)
                ));
            }
        };
        *progressed = true;
        let next = match ev.event {
            Some(Event::Snapshot(s)) => State::from_snapshot(s),
            Some(Event::Delta(d)) => {
                let cur = shared.load_full();
                if shared.has_config() && d.to_version <= cur.version {
                    continue;
                }
                if !shared.has_config() || d.from_version != cur.version {
                    // A gap: reconnect and let the server bring us up to date.
                    return Err(format!(
                        "delta {}→{} does not follow version {}; resynchronizing",
                        d.from_version, d.to_version, cur.version
                    ));
                }
                cur.state.apply_delta(&d).map_err(|e| e.to_string())?
            }
            None => continue,
        };
        match shared.apply(next, Source::Service) {
            Ok(true) => persist(shared).await,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "rejected configuration from the service");
                shared.set_error(e);
            }
        }
    }
}

/// Writes the current version to the last-known-good cache.
pub(crate) async fn persist(shared: &Arc<Shared>) {
    let Some(cache) = shared.cache().cloned() else {
        return;
    };
    let md = shared.load_full();
    let r = tokio::task::spawn_blocking(move || cache.store(&md.state)).await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not write the snapshot cache"),
        Err(e) => tracing::warn!(error = %e, "snapshot cache task failed"),
    }
}
