//! The single writer of the SDK's configuration: loads the last-known-good cache, watches the
//! config service (reconnecting with jittered exponential backoff, resuming from its version,
//! failing over to the next endpoint whenever a watch fails or stalls), validates every version
//! before it is swapped in, and persists each applied version to the cache. A replica that is
//! behind the version in use (its snapshot or deltas are older) is never applied from: the
//! client keeps its version until the replica passes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
    pub(crate) metrics: crate::metrics::Metrics,
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
        }
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
    pub ca_pem: Option<Vec<u8>>,
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

async fn watch_once(
    shared: &Arc<Shared>,
    endpoint: &str,
    cfg: &WatchConfig,
    token: &BearerToken,
    progressed: &mut bool,
) -> Result<(), String> {
    let channel = client::connect_with_keepalive(
        endpoint,
        cfg.ca_pem.clone(),
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
        .map_err(|s| format!("watch refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    loop {
        let ev = match stream.message().await {
            Ok(Some(ev)) => ev,
            Ok(None) => return Err("the config service closed the watch stream".into()),
            Err(s) => return Err(format!("watch failed: {} ({:?})", s.message(), s.code())),
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
