//! Fan-out of new versions to watchers.
//!
//! Each version's delta is encoded once and the bytes are shared by every watcher; the full
//! snapshot of the latest version is likewise encoded at most once. Watchers read from a bounded
//! broadcast ring: one that falls behind the ring is not waited for — it skips ahead to a full
//! snapshot of the latest version.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::Stream;
use parking_lot::Mutex;
use switchyard_proto::EncodedWatchEvent;
use switchyard_proto::v1::{Delta, WatchEvent, watch_event::Event};
use tokio::sync::{broadcast, watch};
use tonic::Status;

use crate::metrics::HubMetrics;
use crate::store::Store;

/// Versions kept encoded for watchers that resume.
const RECENT: usize = 256;
/// Broadcast ring size per hub: how far a watcher may fall behind before it skips ahead.
const RING: usize = 128;

/// One published version.
#[derive(Debug)]
pub struct Published {
    /// The version before.
    pub from: u64,
    /// The version.
    pub version: u64,
    /// Its delta, encoded.
    pub event: EncodedWatchEvent,
    /// When the store acknowledged the commit.
    pub acked: Instant,
}

/// Publishes versions to watch streams.
#[derive(Debug)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Published>>,
    recent: Mutex<VecDeque<Arc<Published>>>,
    full: Mutex<Option<(u64, EncodedWatchEvent)>>,
    watchers: Arc<AtomicUsize>,
    shutdown: watch::Receiver<bool>,
    metrics: Option<HubMetrics>,
}

impl Hub {
    /// A hub whose streams end when `shutdown` turns true.
    pub fn new(shutdown: watch::Receiver<bool>) -> Self {
        let (tx, _) = broadcast::channel(RING);
        Self {
            tx,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            full: Mutex::new(None),
            watchers: Arc::new(AtomicUsize::new(0)),
            shutdown,
            metrics: None,
        }
    }

    /// The same hub, counting published versions and measuring push latency into `m`.
    pub fn with_metrics(mut self, m: HubMetrics) -> Self {
        self.metrics = Some(m);
        self
    }

    /// Publishes a committed version. Callers publish in version order.
    pub fn publish(&self, delta: Delta) {
        self.publish_acked(delta, Instant::now());
    }

    /// Publishes a version the store acknowledged at `acked` (push latency is measured from
    /// there). Callers publish in version order.
    pub fn publish_acked(&self, delta: Delta, acked: Instant) {
        let p = Arc::new(Published {
            from: delta.from_version,
            version: delta.to_version,
            event: EncodedWatchEvent::new(&WatchEvent {
                event: Some(Event::Delta(delta)),
            }),
            acked,
        });
        if let Some(m) = &self.metrics {
            m.version_published();
        }
        {
            let mut r = self.recent.lock();
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(p.clone());
        }
        let _ = self.tx.send(p);
    }

    /// Published versions as they come (for observers other than watch streams, such as the
    /// dashboard). A receiver that lags gets `Lagged` and should re-read the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// Connected watchers.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// The encoded full snapshot of the store's latest version.
    pub fn full(&self, store: &dyn Store) -> (u64, EncodedWatchEvent) {
        let latest = store.latest();
        let mut cache = self.full.lock();
        if let Some((v, ev)) = cache.as_ref()
            && *v == latest.version
        {
            return (*v, ev.clone());
        }
        // Encoding a large snapshot takes milliseconds: keep it off the async worker's
        // cooperative path when the runtime allows.
        let encode = || {
            EncodedWatchEvent::new(&WatchEvent {
                event: Some(Event::Snapshot(latest.to_snapshot())),
            })
        };
        let multi_thread = tokio::runtime::Handle::try_current()
            .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .unwrap_or(false);
        let ev = if multi_thread {
            tokio::task::block_in_place(encode)
        } else {
            encode()
        };
        *cache = Some((latest.version, ev.clone()));
        (latest.version, ev)
    }

    fn recent_since(&self, known: u64, latest: u64) -> Option<VecDeque<EncodedWatchEvent>> {
        let r = self.recent.lock();
        let first = r.iter().position(|p| p.from == known)?;
        let evs: VecDeque<_> = r.iter().skip(first).cloned().collect();
        // Contiguous up to `latest`?
        let mut v = known;
        for p in &evs {
            if p.from != v {
                return None;
            }
            v = p.version;
        }
        (v == latest).then(|| evs.into_iter().map(|p| p.event.clone()).collect())
    }

    /// A watch stream for a client that has `known` (0 = nothing: it always gets a snapshot).
    pub fn stream(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        known: u64,
    ) -> impl Stream<Item = Result<EncodedWatchEvent, Status>> + Send + 'static {
        // Subscribe before reading the latest version so nothing published in between is missed.
        let rx = self.tx.subscribe();
        let latest = store.latest().version;
        let (initial, sent) = if known == latest && known != 0 {
            (VecDeque::new(), latest)
        } else if let Some(evs) = (known > 0 && known < latest)
            .then(|| self.recent_since(known, latest))
            .flatten()
        {
            (evs, latest)
        } else {
            let (v, ev) = self.full(&*store);
            (VecDeque::from([ev]), v)
        };
        self.watchers.fetch_add(1, Ordering::Relaxed);
        let st = WatchState {
            hub: self.clone(),
            store,
            rx,
            initial,
            sent,
            shutdown: self.shutdown.clone(),
            _guard: WatcherGuard(self.watchers.clone()),
        };
        futures::stream::unfold(st, |mut st| async move {
            if let Some(ev) = st.initial.pop_front() {
                return Some((Ok(ev), st));
            }
            loop {
                if *st.shutdown.borrow() {
                    return None;
                }
                tokio::select! {
                    biased;
                    r = st.shutdown.changed() => {
                        if r.is_err() || *st.shutdown.borrow() {
                            return None;
                        }
                    }
                    r = st.rx.recv() => match r {
                        Ok(p) => {
                            if p.version <= st.sent {
                                continue;
                            }
                            if let Some(m) = &st.hub.metrics {
                                m.pushed(p.acked);
                            }
                            if p.from == st.sent {
                                st.sent = p.version;
                                return Some((Ok(p.event.clone()), st));
                            }
                            let (v, ev) = st.hub.full(&*st.store);
                            st.sent = v;
                            return Some((Ok(ev), st));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let (v, ev) = st.hub.full(&*st.store);
                            if v > st.sent {
                                st.sent = v;
                                return Some((Ok(ev), st));
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
    }
}

struct WatchState {
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    rx: broadcast::Receiver<Arc<Published>>,
    initial: VecDeque<EncodedWatchEvent>,
    sent: u64,
    shutdown: watch::Receiver<bool>,
    _guard: WatcherGuard,
}

struct WatcherGuard(Arc<AtomicUsize>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
