//! Fan-out of new versions to watchers.
//!
//! Each version's delta is encoded once and the bytes are shared by every watcher; the full
//! snapshot of the latest version is likewise encoded at most once. Watchers read from a bounded
//! broadcast ring: one that falls behind the ring is not waited for — it skips ahead to a full
//! snapshot of the latest version.
//!
//! Watchers see one of three [`View`]s of each version (see [`crate::auth::Caller`]): the full
//! configuration (admin token), the full configuration without secret properties (no token, a
//! server without client tokens), or one app's scoped configuration (a client token, see
//! [`switchyard_proto::scope`]). Version numbers are the global ones in every view. A view's
//! event for a version turns that view's previous version into its next one exactly (it may be
//! empty: the version still advances) and is computed and encoded once per (view, version),
//! shared by every watcher of that view.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures::Stream;
use parking_lot::Mutex;
use switchyard_proto::EncodedWatchEvent;
use switchyard_proto::state::State;
use switchyard_proto::v1::{Delta, WatchEvent, watch_event::Event};
use switchyard_proto::{scope, secrets};
use tokio::sync::{broadcast, watch};
use tonic::Status;

use crate::metrics::HubMetrics;
use crate::store::Store;

/// Versions kept encoded for watchers that resume.
const RECENT: usize = 256;
/// Broadcast ring size per hub: how far a watcher may fall behind before it skips ahead.
const RING: usize = 128;
/// Versions of each view kept computed (a watcher needs its previous and its next version).
const VIEW_KEEP: usize = 3;
/// Whole configurations of the latest versions kept to compute the views' deltas.
const STATES_KEEP: usize = 4;

/// Which part of the configuration a watcher sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum View {
    /// Everything, secrets included (references resolved).
    Full,
    /// Everything but secret properties.
    Open,
    /// One app's scoped view, with its clusters' secrets.
    App(String),
}

impl From<&crate::auth::Caller> for View {
    fn from(c: &crate::auth::Caller) -> Self {
        match c {
            crate::auth::Caller::Admin => View::Full,
            crate::auth::Caller::Anonymous => View::Open,
            crate::auth::Caller::App(a) => View::App(a.clone()),
        }
    }
}

impl View {
    /// This view of `s`.
    pub fn of(&self, s: &State) -> State {
        match self {
            View::Full => {
                let mut out = s.clone();
                crate::properties::resolve_state(&mut out);
                out
            }
            View::Open => secrets::strip_state(s),
            View::App(app) => {
                let mut out = scope::scoped(s, app);
                crate::properties::resolve_state(&mut out);
                out
            }
        }
    }
}

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
    delta: Delta,
    /// `event` without secret properties, encoded on first use.
    open: OnceLock<EncodedWatchEvent>,
    /// `event` with its references resolved, encoded on first use.
    resolved: OnceLock<EncodedWatchEvent>,
}

impl Published {
    /// The delta event without secret properties ([`View::Open`]).
    fn open_event(&self) -> EncodedWatchEvent {
        self.open
            .get_or_init(|| {
                if !self.delta.upsert_clusters.iter().any(secrets::has_secrets)
                    && self
                        .delta
                        .upsert_profiles
                        .iter()
                        .all(|p| p.credentials.is_empty())
                {
                    return self.event.clone();
                }
                let mut d = self.delta.clone();
                for c in &mut d.upsert_clusters {
                    secrets::strip_cluster(c);
                }
                for p in &mut d.upsert_profiles {
                    secrets::strip_profile(p);
                }
                EncodedWatchEvent::new(&WatchEvent {
                    event: Some(Event::Delta(d)),
                })
            })
            .clone()
    }
}

impl Published {
    /// The delta event with its references resolved ([`View::Full`]).
    fn full_event(&self) -> EncodedWatchEvent {
        self.resolved
            .get_or_init(|| {
                let refs = |props: &std::collections::HashMap<String, String>| {
                    props.values().any(|v| secrets::has_reference(v))
                };
                if !self
                    .delta
                    .upsert_clusters
                    .iter()
                    .any(|c| refs(&c.properties))
                    && !self
                        .delta
                        .upsert_profiles
                        .iter()
                        .any(|p| p.credentials.values().any(|c| refs(&c.properties)))
                {
                    return self.event.clone();
                }
                let mut d = self.delta.clone();
                d.upsert_clusters
                    .iter_mut()
                    .for_each(crate::properties::resolve_cluster);
                d.upsert_profiles
                    .iter_mut()
                    .for_each(crate::properties::resolve_profile);
                EncodedWatchEvent::new(&WatchEvent {
                    event: Some(Event::Delta(d)),
                })
            })
            .clone()
    }
}

/// One version of one view, computed once.
#[derive(Debug, Default)]
struct ViewVersion {
    version: u64,
    state: OnceLock<Arc<State>>,
    snapshot: OnceLock<EncodedWatchEvent>,
    /// The delta event from the previous published version (`None`: that version is gone).
    delta: OnceLock<Option<EncodedWatchEvent>>,
}

/// Publishes versions to watch streams.
#[derive(Debug)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Published>>,
    recent: Mutex<VecDeque<Arc<Published>>>,
    full: Mutex<Option<(u64, EncodedWatchEvent)>>,
    views: Mutex<HashMap<View, VecDeque<Arc<ViewVersion>>>>,
    /// The whole configuration of the latest few published versions.
    states: Mutex<VecDeque<Arc<State>>>,
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
            views: Mutex::new(HashMap::new()),
            states: Mutex::new(VecDeque::with_capacity(STATES_KEEP)),
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

    /// Publishes the version `delta` leads to. `state` is the whole configuration at that
    /// version when the caller has it at hand (scoped views need it; without it the hub reads
    /// it from the store). Callers publish in version order.
    pub fn publish(&self, delta: Delta, state: Option<Arc<State>>) {
        self.publish_acked(delta, state, Instant::now());
    }

    /// Publishes a version the store acknowledged at `acked` (push latency is measured from
    /// there). Callers publish in version order.
    pub fn publish_acked(&self, delta: Delta, state: Option<Arc<State>>, acked: Instant) {
        let p = Arc::new(Published {
            from: delta.from_version,
            version: delta.to_version,
            event: EncodedWatchEvent::new(&WatchEvent {
                event: Some(Event::Delta(delta.clone())),
            }),
            acked,
            delta,
            open: OnceLock::new(),
            resolved: OnceLock::new(),
        });
        if let Some(state) = state {
            let mut st = self.states.lock();
            if st.len() == STATES_KEEP {
                st.pop_front();
            }
            st.push_back(state);
        }
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

    /// The cached entry for (`view`, `version`), created empty if missing.
    fn view_version(&self, view: &View, version: u64) -> Arc<ViewVersion> {
        let mut views = self.views.lock();
        let q = views.entry(view.clone()).or_default();
        if let Some(v) = q.iter().find(|v| v.version == version) {
            return v.clone();
        }
        let v = Arc::new(ViewVersion {
            version,
            ..Default::default()
        });
        q.push_back(v.clone());
        if q.len() > VIEW_KEEP
            && let Some(oldest) = q
                .iter()
                .enumerate()
                .min_by_key(|(_, v)| v.version)
                .map(|(i, _)| i)
        {
            q.remove(oldest);
        }
        v
    }

    /// `view` of the whole configuration `s`, computed once per (view, version).
    pub fn view_state(&self, view: &View, s: &Arc<State>) -> Arc<State> {
        if as_stored(view, s) {
            return s.clone();
        }
        let vv = self.view_version(view, s.version);
        vv.state
            .get_or_init(|| Arc::new(off_async(|| view.of(s))))
            .clone()
    }

    /// The encoded snapshot of `view` at the store's latest version.
    pub fn view_full(&self, view: &View, store: &dyn Store) -> (u64, EncodedWatchEvent) {
        let latest = store.latest();
        if as_stored(view, &latest) {
            return self.full(store);
        }
        let st = self.view_state(view, &latest);
        let vv = self.view_version(view, latest.version);
        let ev = vv
            .snapshot
            .get_or_init(|| {
                off_async(|| {
                    EncodedWatchEvent::new(&WatchEvent {
                        event: Some(Event::Snapshot(st.to_snapshot())),
                    })
                })
            })
            .clone();
        (latest.version, ev)
    }

    /// The whole configuration at `version`: kept from publishing, else from the store.
    fn global_state(&self, version: u64, store: &dyn Store) -> Option<Arc<State>> {
        let recent = self
            .states
            .lock()
            .iter()
            .find(|s| s.version == version)
            .cloned();
        recent.or_else(|| match store.get(version) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(version, error = %e, "previous version gone; sending a snapshot");
                None
            }
        })
    }

    /// The event that takes a watcher of `view` from `p.from` to `p.version`; `None` when
    /// the previous version is no longer available (send a snapshot instead).
    fn view_event(
        &self,
        view: &View,
        p: &Published,
        store: &dyn Store,
    ) -> Option<EncodedWatchEvent> {
        match view {
            View::Full => Some(p.full_event()),
            View::Open => Some(p.open_event()),
            View::App(_) => {
                let vv = self.view_version(view, p.version);
                vv.delta
                    .get_or_init(|| {
                        let prev = self.global_state(p.from, store)?;
                        let next = self.global_state(p.version, store)?;
                        let a = self.view_state(view, &prev);
                        let b = self.view_state(view, &next);
                        Some(off_async(|| {
                            EncodedWatchEvent::new(&WatchEvent {
                                event: Some(Event::Delta(a.delta_to(&b))),
                            })
                        }))
                    })
                    .clone()
            }
        }
    }

    fn recent_since(
        &self,
        known: u64,
        latest: u64,
        view: &View,
    ) -> Option<VecDeque<EncodedWatchEvent>> {
        let r = self.recent.lock();
        let first = r.iter().position(|p| p.from == known)?;
        let evs: VecDeque<_> = r.iter().skip(first).cloned().collect();
        drop(r);
        // Contiguous up to `latest`?
        let mut v = known;
        for p in &evs {
            if p.from != v {
                return None;
            }
            v = p.version;
        }
        if v != latest {
            return None;
        }
        match view {
            View::Full => Some(evs.into_iter().map(|p| p.full_event()).collect()),
            View::Open => Some(evs.into_iter().map(|p| p.open_event()).collect()),
            // A scoped watcher that resumes gets a scoped snapshot: what it holds may predate
            // its current scope.
            View::App(_) => None,
        }
    }

    /// A watch stream of `view` for a client that has `known` (0 = nothing: it always gets a
    /// snapshot). With `revocable`, the stream ends with `PERMISSION_DENIED` once a reload of
    /// the client tokens no longer maps the caller's token to its app.
    pub fn stream(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        known: u64,
        view: View,
        revocable: Option<crate::auth::Revocable>,
    ) -> impl Stream<Item = Result<EncodedWatchEvent, Status>> + Send + 'static {
        // Subscribe before reading the latest version so nothing published in between is missed.
        let rx = self.tx.subscribe();
        let latest = store.latest().version;
        let (initial, sent) = if known == latest && known != 0 {
            (VecDeque::new(), latest)
        } else if let Some(evs) = (known > 0 && known < latest)
            .then(|| self.recent_since(known, latest, &view))
            .flatten()
        {
            (evs, latest)
        } else {
            let (v, ev) = self.view_full(&view, &*store);
            (VecDeque::from([ev]), v)
        };
        self.watchers.fetch_add(1, Ordering::Relaxed);
        let reloads = revocable.as_ref().map(|r| r.reloads());
        let st = WatchState {
            hub: self.clone(),
            store,
            view,
            revocable,
            reloads,
            ended: false,
            rx,
            initial,
            sent,
            shutdown: self.shutdown.clone(),
            _guard: WatcherGuard(self.watchers.clone()),
        };
        futures::stream::unfold(st, |mut st| async move {
            if st.ended {
                return None;
            }
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
                    _ = reloaded(&mut st.reloads) => {
                        if st.revocable.as_ref().is_some_and(|r| !r.still_valid()) {
                            st.ended = true;
                            return Some((
                                Err(Status::permission_denied(
                                    "the client token was revoked (the client tokens were reloaded)",
                                )),
                                st,
                            ));
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
                            if p.from == st.sent
                                && let Some(ev) = st.hub.view_event(&st.view, &p, &*st.store)
                            {
                                st.sent = p.version;
                                return Some((Ok(ev), st));
                            }
                            let (v, ev) = st.hub.view_full(&st.view, &*st.store);
                            st.sent = v;
                            return Some((Ok(ev), st));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let (v, ev) = st.hub.view_full(&st.view, &*st.store);
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

/// True when `view` of `s` is `s` itself: the whole configuration holds no reference to
/// resolve, or nothing an anonymous watcher may not see.
fn as_stored(view: &View, s: &State) -> bool {
    match view {
        View::Full => !crate::properties::has_references(s),
        View::Open => !any_secrets(s),
        View::App(_) => false,
    }
}

/// True when some cluster of `s` has a secret property (or a reference), or some profile has
/// credentials.
fn any_secrets(s: &State) -> bool {
    secrets::has_credentials(s) || s.clusters.values().any(secrets::has_secrets)
}

/// Resolves when the client tokens are reloaded; never without a receiver (or once the
/// tokens are gone).
async fn reloaded(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Runs CPU-heavy `f` (scoping or encoding a large configuration) off the async worker's
/// cooperative path when the runtime allows.
fn off_async<T>(f: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        .unwrap_or(false);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

struct WatchState {
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    view: View,
    revocable: Option<crate::auth::Revocable>,
    reloads: Option<watch::Receiver<u64>>,
    ended: bool,
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

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use switchyard_proto::v1::{ClientProfile, Cluster, Topic};

    use super::*;
    use crate::store::MemoryStore;

    fn cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            bootstrap: vec!["127.0.0.1:9092".into()],
            properties: [("sasl.password".to_string(), format!("pw-{name}"))].into(),
            state: 1,
            ..Default::default()
        }
    }

    fn topic(name: &str, cluster: &str) -> Topic {
        Topic {
            name: name.into(),
            cluster: cluster.into(),
            physical: name.into(),
            partitions: 1,
            ..Default::default()
        }
    }

    /// Commits `next` (content only) as the next version and publishes it.
    fn commit(hub: &Hub, store: &MemoryStore, next: &State) {
        let cur = store.latest();
        let mut next = next.clone();
        next.version = cur.version + 1;
        let d = cur.delta_to(&next);
        let stored = store.commit(cur.version, next, d.clone()).unwrap();
        hub.publish(d, Some(stored));
    }

    #[tokio::test]
    async fn watchers_of_one_app_share_each_scoped_event() {
        let (_tx, rx) = watch::channel(false);
        let hub = Arc::new(Hub::new(rx));
        let store = Arc::new(MemoryStore::default());
        let mut s = State::default();
        for c in ["east", "west"] {
            s.clusters.insert(c.into(), cluster(c));
        }
        s.topics.insert("a1".into(), topic("a1", "east"));
        s.topics.insert("b1".into(), topic("b1", "west"));
        s.profiles.insert(
            "a".into(),
            ClientProfile {
                app: "a".into(),
                allowed_topics: vec!["a1".into()],
                ..Default::default()
            },
        );
        commit(&hub, &store, &s);

        let view = View::App("a".into());
        let mut streams: Vec<_> = (0..50)
            .map(|_| Box::pin(hub.stream(store.clone(), 0, view.clone(), None)))
            .collect();
        let mut first = Vec::new();
        for st in &mut streams {
            first.push(st.next().await.unwrap().unwrap());
        }
        // One encoding shared by every watcher (the same bytes, not equal copies).
        assert!(
            first
                .iter()
                .all(|e| e.bytes().as_ptr() == first[0].bytes().as_ptr())
        );

        // Re-route a1 to west: one scoped delta, exact, shared.
        s.topics.insert("a1".into(), topic("a1", "west"));
        commit(&hub, &store, &s);
        let mut second = Vec::new();
        for st in &mut streams {
            second.push(st.next().await.unwrap().unwrap());
        }
        assert!(
            second
                .iter()
                .all(|e| e.bytes().as_ptr() == second[0].bytes().as_ptr())
        );
        let Some(Event::Snapshot(snap)) = first[0].decode_event().unwrap().event else {
            panic!("first event is a snapshot");
        };
        let Some(Event::Delta(d)) = second[0].decode_event().unwrap().event else {
            panic!("second event is a delta");
        };
        let held = State::from_snapshot(snap).apply_delta(&d).unwrap();
        assert_eq!(held, scope::scoped(&store.latest(), "a"));
        assert_eq!(
            held.clusters.keys().collect::<Vec<_>>(),
            ["west"],
            "east left a's view, west entered it"
        );
    }
}
