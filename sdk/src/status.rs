//! Periodic `ReportStatus` to the config service: applied version, what this process
//! produces and consumes where, and rates.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use switchyard_proto::client::{self, BearerToken};
use switchyard_proto::v1::{ClientEndpoint, ClientStatus, ReportStatusRequest};
use tokio::sync::watch;

use crate::watch::{Shared, WatchConfig};

/// An endpoint with cumulative (messages, bytes) counters.
pub(crate) type Counted = (ClientEndpoint, u64, u64);

/// Something that produces or consumes.
pub(crate) trait StatusSource: Send + Sync {
    /// Producing and consuming endpoints with cumulative counters.
    fn endpoints(&self) -> (Vec<Counted>, Vec<Counted>);
}

/// Registered producers and consumers.
#[derive(Default)]
pub(crate) struct Registry {
    sources: parking_lot::Mutex<Vec<Weak<dyn StatusSource>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.sources.lock().len())
            .finish()
    }
}

impl Registry {
    pub(crate) fn register(&self, s: Weak<dyn StatusSource>) {
        let mut v = self.sources.lock();
        v.retain(|w| w.strong_count() > 0);
        v.push(s);
    }

    fn collect(&self) -> (Vec<Counted>, Vec<Counted>) {
        let sources: Vec<_> = self
            .sources
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let (mut p, mut c) = (Vec::new(), Vec::new());
        for s in sources {
            let (a, b) = s.endpoints();
            p.extend(a);
            c.extend(b);
        }
        (p, c)
    }
}

type Key = (bool, String, String, String, String);

/// Builds the status with rates computed from the counters' change since the last report.
pub(crate) struct RateTracker {
    last: HashMap<Key, (u64, u64)>,
    /// Producing counters of the last report summed per logical topic. A producer lane keeps
    /// its cumulative counters across a route change, so an endpoint first seen on a new
    /// cluster is measured from its topic's previous total, not from zero (which would report
    /// everything sent to the old cluster as sent to the new one within one interval).
    last_by_topic: HashMap<String, (u64, u64)>,
    at: Instant,
}

impl RateTracker {
    pub(crate) fn new() -> Self {
        Self {
            last: HashMap::new(),
            last_by_topic: HashMap::new(),
            at: Instant::now(),
        }
    }

    pub(crate) fn status(&mut self, shared: &Shared) -> ClientStatus {
        let (p, c) = shared.registry().collect();
        let secs = self.at.elapsed().as_secs_f64().max(0.001);
        self.at = Instant::now();
        let mut next = HashMap::new();
        let mut next_by_topic: HashMap<String, (u64, u64)> = HashMap::new();
        let mut conv = |producing: bool, v: Vec<Counted>| {
            // Several sources may report the same endpoint: sum them.
            let mut agg: HashMap<Key, (ClientEndpoint, u64, u64)> = HashMap::new();
            for (e, m, b) in v {
                let k = (
                    producing,
                    e.logical_topic.clone(),
                    e.cluster.clone(),
                    e.physical_topic.clone(),
                    e.group.clone(),
                );
                let ent = agg.entry(k).or_insert((e, 0, 0));
                ent.1 += m;
                ent.2 += b;
            }
            let mut out = Vec::new();
            for (k, (mut e, m, b)) in agg {
                let (pm, pb) = self
                    .last
                    .get(&k)
                    .or_else(|| producing.then(|| self.last_by_topic.get(&k.1)).flatten())
                    .copied()
                    .unwrap_or((0, 0));
                if producing {
                    let t = next_by_topic.entry(k.1.clone()).or_default();
                    t.0 += m;
                    t.1 += b;
                }
                e.msgs_per_sec = m.saturating_sub(pm) as f64 / secs;
                e.bytes_per_sec = b.saturating_sub(pb) as f64 / secs;
                next.insert(k, (m, b));
                out.push(e);
            }
            out.sort_by(|a, b| (&a.logical_topic, &a.cluster).cmp(&(&b.logical_topic, &b.cluster)));
            out
        };
        let producing = conv(true, p);
        let consuming = conv(false, c);
        self.last = next;
        self.last_by_topic = next_by_topic;
        let md = shared.load();
        ClientStatus {
            client_id: shared.client_id.clone(),
            app: shared.app.clone(),
            language: shared.language.clone(),
            sdk_version: env!("CARGO_PKG_VERSION").to_string(),
            applied_version: md.version,
            producing,
            consuming,
            hostname: hostname(),
            pid: std::process::id(),
            instance_id: shared.instance_id.clone(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// How often contact with the config service is judged (see `Shared::check_contact`).
const CONTACT_CHECK: Duration = Duration::from_millis(250);

/// Reports every `interval` (and right after a switch or a drain) until `shutdown`, to every
/// configured endpoint: each config-service replica keeps its own client inventory, and the
/// migration coordinator (on one of them) must see every client that lists it. One task per
/// endpoint sends the newest report, so a dead replica delays none of the others.
pub(crate) async fn run(
    shared: Arc<Shared>,
    cfg: WatchConfig,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(token) = BearerToken::new(cfg.token.as_deref()) else {
        return;
    };
    let (reports, _) = watch::channel::<Option<ClientStatus>>(None);
    shared.watch_contact();
    let mut senders = Vec::new();
    for ep in &cfg.endpoints {
        senders.push(tokio::spawn(send_to(
            shared.clone(),
            ep.clone(),
            cfg.tls.clone(),
            token.clone(),
            reports.subscribe(),
        )));
    }
    let mut tracker = RateTracker::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut contact = tokio::time::interval(CONTACT_CHECK);
    contact.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let requested = tokio::select! {
            _ = tick.tick() => false,
            _ = shared.report_requested() => true,
            _ = contact.tick() => {
                shared.check_contact();
                continue;
            }
            _ = shutdown.wait_for(|v| *v) => break,
        };
        if requested {
            // Let switches or drains finishing together go out in one report.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !shared.has_config() {
            continue;
        }
        reports.send_replace(Some(tracker.status(&shared)));
    }
    // Leaving: a last report without endpoints, so that a migration does not wait for this
    // client's lease to end (bounded: an unreachable service does not hold the close up).
    if shared.has_config() {
        let mut last = tracker.status(&shared);
        last.producing.clear();
        last.consuming.clear();
        reports.send_replace(Some(last));
        drop(reports);
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            futures::future::join_all(senders.iter_mut()),
        )
        .await;
    }
    for s in senders {
        s.abort();
    }
}

/// Sends each new report to `endpoint` (the newest one only, when it falls behind),
/// reconnecting after a failure.
async fn send_to(
    shared: Arc<Shared>,
    endpoint: String,
    tls: switchyard_proto::client::TlsOptions,
    token: BearerToken,
    mut reports: watch::Receiver<Option<ClientStatus>>,
) {
    let mut client = None;
    while reports.changed().await.is_ok() {
        let Some(status) = reports.borrow_and_update().clone() else {
            continue;
        };
        if client.is_none() {
            match client::connect_with_timeout(&endpoint, &tls, Duration::from_secs(3)).await {
                Ok(ch) => client = Some(client::metadata(ch, token.clone())),
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint, error = %e, "status report: cannot connect");
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let sent_at = Instant::now();
        match tokio::time::timeout(
            Duration::from_secs(5),
            c.report_status(ReportStatusRequest {
                status: Some(status),
            }),
        )
        .await
        {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                shared.report_acked(sent_at, r.lease_seconds, r.current_version);
            }
            Ok(Err(s)) => {
                tracing::debug!(endpoint = %endpoint, error = %s.message(), "status report refused");
                client = None;
            }
            Err(_) => client = None,
        }
    }
}
