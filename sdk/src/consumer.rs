//! The routed consumer: one consumer group over logical topics that may live on different
//! clusters, following route changes without a restart.
//!
//! For every (cluster, property set) in use there is one member consumer in the group on that
//! cluster. When a topic moves away from a cluster, the member there keeps reading it — it
//! *drains* — until it has handed the application every record up to the partitions' end, the
//! application has committed them (or auto-commit stored them), and a grace period has passed
//! for producers that learn of the change late; only then does it unsubscribe. Meanwhile the
//! member on the new cluster already reads the topic there (from committed offsets, or from
//! `auto.offset.reset`, by default `earliest`).
//!
//! A `consume_msgs_per_sec` quota (see [`crate::throttle`]) paces `recv`: it waits before
//! handing over each record. librdkafka keeps fetching (up to its queue limits) and
//! heartbeating in the background meanwhile, so the member stays in its group.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use parking_lot::Mutex;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use switchyard_proto::v1::ClientEndpoint;

use crate::error::Error;
use crate::metadata::{ClusterTarget, Metadata};
use crate::metrics::{Direction, Metrics, RecvHandles};
use crate::record::Message;
use crate::status::{Counted, StatusSource};
use crate::throttle::{self, ThrottleCounters, ThrottleStats};
use crate::watch::Shared;

/// Settings for a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Extra consumer properties from the application's code (below enforced ones).
    pub properties: BTreeMap<String, String>,
    /// Commit automatically (offsets of records returned by `recv` are stored and committed
    /// in the background). When false, call [`Consumer::commit`].
    pub auto_commit: bool,
    /// After a topic moves, keep reading its old location at least this long.
    pub drain_grace: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            properties: BTreeMap::new(),
            auto_commit: false,
            drain_grace: Duration::from_secs(10),
        }
    }
}

const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("enable.partition.eof", "false"),
];

/// A consumer group member over logical topics. Use it from one task at a time.
pub struct Consumer {
    inner: Arc<ConsumerInner>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.inner.group)
            .field("topics", &self.inner.topics)
            .finish()
    }
}

pub(crate) struct ConsumerInner {
    shared: Arc<Shared>,
    group: String,
    topics: Vec<String>,
    opts: ConsumerOptions,
    recv_mu: tokio::sync::Mutex<RecvState>,
    /// A drain check is running (in its own task: its broker queries can take longer than a
    /// caller's `recv` timeout, and a cancelled check would never conclude).
    drain_checking: std::sync::atomic::AtomicBool,
    /// What the last drain check concluded: members and the physical topics they finished.
    drained: Mutex<Vec<(Arc<Member>, BTreeSet<String>)>>,
    members: Mutex<HashMap<u64, Arc<Member>>>,
    /// (member, physical topic, partition) → (next offset handed out, next offset committed).
    offsets: Mutex<HashMap<PartitionKey, (i64, i64)>>,
    /// (cluster, physical topic, migration id) of migration sources this consumer finished
    /// draining: not joined again while the migration runs.
    sources_done: Mutex<HashSet<(String, String, String)>>,
    next_id: AtomicU64,
    throttle: ThrottleCounters,
}

/// (member, physical topic, partition).
type PartitionKey = (u64, String, i32);

/// A member's Kafka consumer.
type StreamConsumer = rdkafka::consumer::StreamConsumer<MemberContext>;

/// A member consumer's context: records a failure to connect that retrying does not fix (wrong
/// credentials, an untrusted certificate, a refused client certificate), which librdkafka only
/// reports as an error event while it keeps retrying — `recv` would otherwise wait for records
/// forever. `recv` returns it as [`Error::Connect`], once per failure event.
#[derive(Default)]
struct MemberContext {
    failure: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for MemberContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if crate::producer::is_connect_failure(&error, reason) {
            tracing::error!(%reason, "consumer cannot connect to the cluster");
            *self.failure.lock() = Some(reason.to_string());
        } else {
            tracing::warn!(%error, %reason, "librdkafka consumer error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for MemberContext {}
/// Per cluster client: its target, physical → logical topics, and those of them that are a
/// running migration's source this group has to drain here (see [`ConsumerInner::source_to_drain`]).
type Desired = HashMap<
    (String, u64),
    (
        Arc<ClusterTarget>,
        BTreeMap<String, String>,
        HashSet<String>,
    ),
>;

struct Member {
    id: u64,
    cluster: String,
    fingerprint: u64,
    consumer: Arc<StreamConsumer>,
    /// physical → logical, for every subscribed topic (active or draining).
    topics: Mutex<BTreeMap<String, String>>,
    /// physical → when draining started.
    draining: Mutex<BTreeMap<String, Instant>>,
    /// (physical, partition) → end offset last queried for a draining partition. The end only
    /// grows, so while fewer records than that were handed out the partition is surely not
    /// drained, and the (slow, blocking) end-offset query need not be repeated.
    drain_ends: Mutex<HashMap<(String, i32), i64>>,
    /// physical → the seal of a draining topic that a coordinated migration moves away:
    /// `None` until the coordinator publishes it (the drain cannot end before), then the
    /// source's end offsets per partition, which the drain reads up to and never beyond
    /// (later records are copied to the destination by the coordinator). Absent for a plain
    /// route change: the drain then reads to the partitions' current end.
    seals: Mutex<HashMap<String, Option<Vec<i64>>>>,
    /// Partitions paused because their topic is held here (see [`held_new_locations`]).
    paused: Mutex<HashSet<(String, i32)>>,
    /// physical → where a migration's destination started (read here): records before are
    /// skipped while the migration runs (see `MigratingFrom.destination_start_offsets`).
    starts: Mutex<HashMap<String, Vec<i64>>>,
    /// (physical, partition) whose destination start this member committed.
    start_committed: Mutex<HashSet<(String, i32)>>,
    /// (physical, partition) of a migration's destination (see `starts`) whose position this
    /// member checked: the group's committed offset, or else the recorded start (whatever
    /// `auto.offset.reset` says). No record of an unchecked partition is handed out.
    positioned: Mutex<HashSet<(String, i32)>>,
    /// (physical, partition) → the last offset handed out seen by a drain check, to find a
    /// draining partition that makes no progress (its records expired, or a tail of
    /// transaction markers) and then look at its low-water mark and position.
    drain_progress: Mutex<HashMap<(String, i32), i64>>,
    received: AtomicU64,
    bytes: AtomicU64,
    /// Metric handles per logical topic read through this member.
    metrics: MemberMetrics,
}

/// The received-records metrics of one member: handles per logical topic, made on first use.
struct MemberMetrics {
    metrics: Metrics,
    cluster: String,
    group: String,
    by_topic: Mutex<FxHashMap<String, RecvHandles>>,
}

impl MemberMetrics {
    fn count(&self, logical: &str, bytes: u64) {
        let mut by_topic = self.by_topic.lock();
        let h = match by_topic.get(logical) {
            Some(h) => h,
            None => by_topic.entry(logical.to_string()).or_insert_with(|| {
                self.metrics
                    .recv_handles(logical, &self.cluster, &self.group)
            }),
        };
        h.received.inc();
        h.bytes.inc_by(bytes);
    }
}

struct RecvState {
    version: Option<u64>,
    last_drain_check: Instant,
    /// Rotates which member is polled first, so a backlog on one cluster does not starve
    /// another.
    turn: usize,
    /// A record read but not yet handed over: it waits for consume quota capacity (kept here
    /// so that a cancelled `recv` loses nothing).
    pending: Option<(u64, Message)>,
}

impl Consumer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        group: &str,
        topics: &[&str],
        opts: ConsumerOptions,
    ) -> Result<Self, Error> {
        if group.is_empty() || group.len() > 255 || group.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "group id {group:?} must be 1-255 printable characters"
            )));
        }
        if topics.is_empty() {
            return Err(Error::InvalidArgument(
                "subscribe to at least one logical topic".into(),
            ));
        }
        for t in topics {
            switchyard_proto::validate::check_topic_name("topic", t)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        }
        let inner = Arc::new(ConsumerInner {
            shared: shared.clone(),
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            opts,
            recv_mu: tokio::sync::Mutex::new(RecvState {
                version: None,
                last_drain_check: Instant::now(),
                turn: 0,
                pending: None,
            }),
            drain_checking: std::sync::atomic::AtomicBool::new(false),
            drained: Mutex::new(Vec::new()),
            members: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            sources_done: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(1),
            throttle: ThrottleCounters::with_metrics(shared.metrics.clone(), Direction::Consume),
        });
        let src: Weak<dyn StatusSource> = Arc::downgrade(&inner) as Weak<dyn StatusSource>;
        shared.register(src);
        Ok(Self { inner })
    }

    /// The next record from any subscribed logical topic.
    ///
    /// Cancel-safe: dropping the future loses no record. Under a `consume_msgs_per_sec` quota
    /// it waits before handing over each record.
    pub async fn recv(&self) -> Result<Message, Error> {
        let inner = &self.inner;
        let mut st = inner.recv_mu.lock().await;
        let mut versions = inner.shared.subscribe();
        loop {
            if let Some((_, msg)) = st.pending.as_ref() {
                throttle::admit_consume(&*inner.shared, &msg.topic, &inner.throttle, &mut versions)
                    .await;
                let (id, msg) = st.pending.take().expect("a pending record");
                inner.delivered(id, &msg);
                return Ok(msg);
            }
            let md = inner.shared.load_full();
            if st.version != Some(md.version) {
                inner.reconcile(&md)?;
                st.version = Some(md.version);
            }
            inner.apply_drained();
            if st.last_drain_check.elapsed() >= Duration::from_millis(250) {
                inner.start_drain_check();
                st.last_drain_check = Instant::now();
            }
            let mut members: Vec<Arc<Member>> = inner.members.lock().values().cloned().collect();
            if members.len() > 1 {
                st.turn = st.turn.wrapping_add(1);
                let k = st.turn % members.len();
                members.rotate_left(k);
            }
            let held = held_new_locations(&members);
            for m in &members {
                m.resume_released(held.get(&m.id));
            }
            if members.is_empty() {
                tokio::select! {
                    r = versions.changed() => if r.is_err() { return Err(Error::Closed) },
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                continue;
            }
            let futs = members.iter().map(|m| {
                let m2 = m.clone();
                let held_here = held.get(&m.id).cloned();
                async move {
                    let r = m2.consumer.recv().await;
                    r.map(|bm| {
                        if held_here.as_ref().is_some_and(|h| h.contains(bm.topic())) {
                            // Records from before the move are dropped, the rest put back.
                            if !m2.before_start(&bm) {
                                m2.put_back(&bm);
                            }
                            return (m2.id, None);
                        }
                        if m2.needs_position(bm.topic(), bm.partition()) {
                            // Fetched from wherever `auto.offset.reset` put it: paused until the
                            // partition is positioned (see `Member::position_starts`). Not
                            // rewound to this record: positioning runs on another thread, and
                            // a rewind landing after its seek would move the partition back to
                            // where `latest` had put it, skipping everything before.
                            m2.pause_unpositioned(&bm);
                            return (m2.id, None);
                        }
                        (m2.id, convert(&m2, &bm))
                    })
                }
                .boxed()
            });
            tokio::select! {
                (r, _, _) = futures::future::select_all(futs) => {
                    match r {
                        Ok((id, Some(msg))) => {
                            // A record this member already handed out, fetched again because a
                            // rebalance gave the partition back before its commit landed
                            // (the commit failed with a stale generation): the application has
                            // it, so it is not handed out twice.
                            let handed = inner
                                .offsets
                                .lock()
                                .get(&(id, msg.physical_topic.clone(), msg.partition))
                                .map_or(0, |o| o.0);
                            if msg.offset < handed {
                                tracing::debug!(topic = %msg.topic, partition = msg.partition, offset = msg.offset, "skipping a record this member handed out already");
                                continue;
                            }
                            // Handed over at the top of the loop, once the quota allows.
                            st.pending = Some((id, msg));
                        }
                        Ok((_, None)) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, group = %inner.group, "consumer error");
                            // Transient broker errors surface here; the member keeps running.
                            if is_fatal(&e) {
                                return Err(Error::Kafka { cluster: String::new(), source: e });
                            }
                        }
                    }
                }
                r = versions.changed() => if r.is_err() { return Err(Error::Closed) },
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            if st.pending.is_none() {
                for m in &members {
                    if let Some(reason) = m.consumer.context().failure.lock().take() {
                        return Err(Error::Connect {
                            cluster: m.cluster.clone(),
                            reason,
                        });
                    }
                }
            }
        }
    }

    /// Commits `msg` and every earlier record of its partition, synchronously.
    pub async fn commit(&self, msg: &Message) -> Result<(), Error> {
        let member = self
            .inner
            .members
            .lock()
            .get(&msg.member)
            .cloned()
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "the record's consumer member is gone (its topic moved and drained)".into(),
                )
            })?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &msg.physical_topic,
            msg.partition,
            Offset::Offset(msg.offset + 1),
        )
        .map_err(|source| Error::Kafka {
            cluster: member.cluster.clone(),
            source,
        })?;
        let c = member.consumer.clone();
        tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|_| Error::Closed)?
            .map_err(|source| Error::Kafka {
                cluster: member.cluster.clone(),
                source,
            })?;
        let mut off = self.inner.offsets.lock();
        let e = off
            .entry((member.id, msg.physical_topic.clone(), msg.partition))
            .or_insert((msg.offset + 1, msg.offset + 1));
        e.1 = e.1.max(msg.offset + 1);
        Ok(())
    }

    /// Records whose delivery a consume quota delayed so far, and for how long in total.
    pub fn throttled(&self) -> ThrottleStats {
        self.inner.throttle.stats()
    }

    /// The group id.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// Clusters this consumer currently reads, with the physical topics (active and draining).
    pub fn assignment_summary(&self) -> Vec<(String, Vec<String>)> {
        let members = self.inner.members.lock();
        let mut v: Vec<(String, Vec<String>)> = members
            .values()
            .map(|m| (m.cluster.clone(), m.topics.lock().keys().cloned().collect()))
            .collect();
        v.sort();
        v
    }
}

/// Keeps per-key order across a move: while a logical topic still drains from its old
/// location on one member, its new location is held on every member (the same one too, for a
/// move within one cluster) — no record of it is handed out before the old ones. A draining
/// location whose migration seal is not published yet is held as well: the drain must not hand
/// out a record at or past the seal (the coordinator copies those to the destination). Returns,
/// per member, the physical topics held there. Held members are still polled (so they take
/// part in group rebalances: an unpolled member stalls its group's rebalance, and the other
/// members' commits then fail with a stale generation); a record of a held topic is put back
/// (see [`Member::put_back`]). A draining location is otherwise never held, so topics moving
/// in opposite directions cannot hold each other up.
fn held_new_locations(members: &[Arc<Member>]) -> HashMap<u64, Arc<HashSet<String>>> {
    let mut draining: HashSet<String> = HashSet::new();
    for m in members {
        let topics = m.topics.lock();
        for phys in m.draining.lock().keys() {
            if let Some(logical) = topics.get(phys) {
                draining.insert(logical.clone());
            }
        }
    }
    let mut out = HashMap::new();
    if draining.is_empty() {
        return out;
    }
    for m in members {
        let topics = m.topics.lock();
        let here = m.draining.lock();
        let seals = m.seals.lock();
        let held: HashSet<String> = topics
            .iter()
            .filter(|(p, l)| match here.contains_key(*p) {
                true => matches!(seals.get(*p), Some(None)),
                false => draining.contains(*l),
            })
            .map(|(p, _)| p.clone())
            .collect();
        if !held.is_empty() {
            out.insert(m.id, Arc::new(held));
        }
    }
    out
}

impl Member {
    /// Whether `bm` was in a migration's destination before the move (see `starts`); if so,
    /// moves its partition to the start (without reading what lies before) and commits the
    /// start for the group (once per partition), so that a member given the partition later —
    /// also after the migration — starts there too rather than at `auto.offset.reset`. (It
    /// owns the partition now, so nobody else committed it further.)
    fn before_start(&self, bm: &rdkafka::message::BorrowedMessage<'_>) -> bool {
        let start = {
            let starts = self.starts.lock();
            let Some(start) = starts.get(bm.topic()) else {
                return false;
            };
            match usize::try_from(bm.partition())
                .ok()
                .and_then(|p| start.get(p))
            {
                Some(s) if bm.offset() < *s => *s,
                _ => return false,
            }
        };
        let (topic, partition) = (bm.topic(), bm.partition());
        if let Err(e) = self
            .consumer
            .seek(topic, partition, Offset::Offset(start), Duration::ZERO)
        {
            tracing::debug!(error = %e, topic, partition, "cannot skip to the migration's start");
        }
        if self
            .start_committed
            .lock()
            .insert((topic.to_string(), partition))
        {
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(topic, partition, Offset::Offset(start))
                .is_ok()
                && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
            {
                tracing::debug!(error = %e, topic, partition, "cannot commit the migration's start");
            }
        }
        true
    }

    /// Puts back a record of a held topic: pauses its partition and rewinds it to the record,
    /// so it is fetched again once the hold ends. (Pausing and seeking discard what librdkafka
    /// had fetched beyond it.)
    fn put_back(&self, bm: &rdkafka::message::BorrowedMessage<'_>) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(bm.topic(), bm.partition());
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(error = %e, topic = bm.topic(), partition = bm.partition(), "cannot pause a held partition");
        }
        if let Err(e) = self.consumer.seek(
            bm.topic(),
            bm.partition(),
            Offset::Offset(bm.offset()),
            Duration::ZERO,
        ) {
            tracing::warn!(error = %e, topic = bm.topic(), partition = bm.partition(), "cannot rewind a held partition");
        }
        self.paused
            .lock()
            .insert((bm.topic().to_string(), bm.partition()));
    }

    /// Pauses the partition of a record fetched before its partition was positioned, without
    /// rewinding it (the positioning seeks it; a record fetched from before that seek is
    /// discarded by librdkafka and fetched again from the new position).
    fn pause_unpositioned(&self, bm: &rdkafka::message::BorrowedMessage<'_>) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(bm.topic(), bm.partition());
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(error = %e, topic = bm.topic(), partition = bm.partition(), "cannot pause a partition to position it");
        }
        self.paused
            .lock()
            .insert((bm.topic().to_string(), bm.partition()));
    }

    /// Resumes the partitions put back whose topic is no longer held here (and that are
    /// positioned, see [`Member::needs_position`]).
    fn resume_released(&self, held: Option<&Arc<HashSet<String>>>) {
        let mut paused = self.paused.lock();
        if paused.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        paused.retain(|(t, p)| {
            if held.is_some_and(|h| h.contains(t)) || self.needs_position(t, *p) {
                return true;
            }
            tpl.add_partition(t, *p);
            false
        });
        if tpl.count() > 0 {
            // A partition revoked meanwhile is not resumed (and need not be).
            let _ = self.consumer.resume(&tpl);
        }
    }

    /// Whether partition `partition` of `topic` is a running migration's destination that this
    /// member has not positioned yet (see [`Member::position_starts`]).
    fn needs_position(&self, topic: &str, partition: i32) -> bool {
        self.starts.lock().contains_key(topic)
            && !self
                .positioned
                .lock()
                .contains(&(topic.to_string(), partition))
    }

    /// Positions the assigned partitions of a running migration's destination that are not
    /// positioned yet: each is paused, then moved to the group's committed offset, or — when the
    /// group has none there, or one from before the move — to the start the coordinator
    /// recorded, which is then committed for the group. So a group reads the destination from
    /// where the move began whatever its `auto.offset.reset` (with `latest` it would otherwise
    /// skip what was written there before it joined), and a member given the partition later
    /// starts from the commit. Blocking (broker round trips); a failure leaves the partition
    /// paused and unpositioned, to be tried again.
    fn position_starts(&self) {
        let starts = self.starts.lock().clone();
        if starts.is_empty() {
            return;
        }
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        let mut query = TopicPartitionList::new();
        {
            let positioned = self.positioned.lock();
            for e in assigned.elements() {
                if starts.contains_key(e.topic())
                    && !positioned.contains(&(e.topic().to_string(), e.partition()))
                {
                    query.add_partition(e.topic(), e.partition());
                }
            }
        }
        if query.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.pause(&query) {
            tracing::debug!(error = %e, "cannot pause a destination partition to position it");
            return;
        }
        self.paused.lock().extend(
            query
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition())),
        );
        let committed = match self
            .consumer
            .committed_offsets(query, Duration::from_secs(5))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the group's offsets on a destination");
                return;
            }
        };
        let mut commit = TopicPartitionList::new();
        let mut placed = Vec::new();
        for e in committed.elements() {
            let (topic, partition) = (e.topic(), e.partition());
            let start = usize::try_from(partition)
                .ok()
                .and_then(|p| starts.get(topic)?.get(p).copied());
            if let Some(start) = start {
                let target = match e.offset() {
                    Offset::Offset(c) if c >= start => c,
                    _ => {
                        let _ =
                            commit.add_partition_offset(topic, partition, Offset::Offset(start));
                        start
                    }
                };
                if let Err(err) = self.consumer.seek(
                    topic,
                    partition,
                    Offset::Offset(target),
                    Duration::from_secs(5),
                ) {
                    tracing::debug!(error = %err, topic, partition, "cannot position a destination partition");
                    continue;
                }
                tracing::debug!(topic, partition, target, "destination partition positioned");
            }
            placed.push((topic.to_string(), partition));
        }
        if commit.count() > 0
            && let Err(e) = self.consumer.commit(&commit, CommitMode::Sync)
        {
            tracing::debug!(error = %e, "cannot commit a migration's destination start");
            return;
        }
        self.start_committed.lock().extend(
            commit
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition())),
        );
        self.positioned.lock().extend(placed);
    }
}

/// physical → destination start offsets, for the topics of `topics` (physical → logical) that
/// a running migration moves to (`cluster`, physical).
fn destination_starts(
    md: &Metadata,
    cluster: &str,
    topics: &BTreeMap<String, String>,
) -> HashMap<String, Vec<i64>> {
    topics
        .iter()
        .filter_map(|(phys, logical)| {
            let t = md.state.topics.get(logical)?;
            let f = t.migrating_from.as_ref()?;
            let r = md.route(logical)?;
            (!f.aborted
                && !f.destination_start_offsets.is_empty()
                && r.cluster.name == cluster
                && &r.physical == phys)
                .then(|| (phys.clone(), f.destination_start_offsets.clone()))
        })
        .collect()
}

fn is_fatal(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::Fatal | C::GroupAuthorizationFailed | C::TopicAuthorizationFailed)
    )
}

fn convert(m: &Member, bm: &rdkafka::message::BorrowedMessage<'_>) -> Option<Message> {
    let physical = bm.topic().to_string();
    let logical = m.topics.lock().get(&physical).cloned()?;
    if let Some(Some(sealed)) = m.seals.lock().get(&physical)
        && let Some(end) = sealed.get(usize::try_from(bm.partition()).ok()?)
        && bm.offset() >= *end
    {
        // Written to the source after the seal: the coordinator copies it to the destination,
        // where this group reads it once.
        return None;
    }
    if m.before_start(bm) {
        // In the destination before the move: not part of the topic's stream.
        return None;
    }
    let headers = bm
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        Bytes::copy_from_slice(x.value.unwrap_or_default()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let bytes = bm.payload().map_or(0, |p| p.len()) as u64;
    m.received.fetch_add(1, Ordering::Relaxed);
    m.bytes.fetch_add(bytes, Ordering::Relaxed);
    m.metrics.count(&logical, bytes);
    Some(Message {
        topic: logical,
        cluster: m.cluster.clone(),
        physical_topic: physical,
        partition: bm.partition(),
        offset: bm.offset(),
        key: bm.key().map(Bytes::copy_from_slice),
        payload: bm.payload().map(Bytes::copy_from_slice),
        headers,
        timestamp_ms: bm.timestamp().to_millis(),
        member: m.id,
    })
}

impl ConsumerInner {
    fn delivered(&self, member: u64, msg: &Message) {
        if self.opts.auto_commit
            && let Some(m) = self.members.lock().get(&member)
        {
            let _ = m
                .consumer
                .store_offset(&msg.physical_topic, msg.partition, msg.offset);
        }
        let mut off = self.offsets.lock();
        let e = off
            .entry((member, msg.physical_topic.clone(), msg.partition))
            .or_insert((0, -1));
        e.0 = e.0.max(msg.offset + 1);
    }

    /// The source location (cluster target, physical topic) of logical topic `logical` that
    /// this group must drain before it reads the topic's new location: a running migration
    /// (not aborted) moves the topic away from it, and this consumer has not finished draining
    /// it. So a member that joins late — a restart, a deploy, a group offline through the
    /// switch, an empty cache — reads the source up to the seal first; the drain check ends at
    /// once when the group's committed offsets there already reach the seal.
    fn source_to_drain(
        &self,
        md: &Metadata,
        logical: &str,
    ) -> Option<(Arc<ClusterTarget>, String)> {
        let f = md.state.topics.get(logical)?.migrating_from.as_ref()?;
        let r = md.route(logical)?;
        if f.aborted || (f.cluster == r.cluster.name && f.physical == r.physical) {
            return None;
        }
        let done = self.sources_done.lock().contains(&(
            f.cluster.clone(),
            f.physical.clone(),
            f.migration_id.clone(),
        ));
        if done {
            return None;
        }
        Some((md.cluster(&f.cluster)?.clone(), f.physical.clone()))
    }

    /// Brings members in line with the routes of `md`.
    fn reconcile(&self, md: &Metadata) -> Result<(), Error> {
        // cluster key → (target, physical → logical, sources to drain)
        let mut desired: Desired = HashMap::new();
        for t in &self.topics {
            if let Some(r) = md.route(t) {
                desired
                    .entry((r.cluster.name.clone(), r.cluster.fingerprint))
                    .or_insert_with(|| (r.cluster.clone(), BTreeMap::new(), HashSet::new()))
                    .1
                    .insert(r.physical.clone(), t.clone());
            }
            if let Some((target, phys)) = self.source_to_drain(md, t) {
                let d = desired
                    .entry((target.name.clone(), target.fingerprint))
                    .or_insert_with(|| (target.clone(), BTreeMap::new(), HashSet::new()));
                d.1.insert(phys.clone(), t.clone());
                d.2.insert(phys);
            }
        }
        let mut members = self.members.lock();
        let now = Instant::now();
        let mut emptied = Vec::new();
        // Existing members: start draining what moved away, take on what arrived.
        for m in members.values() {
            let key = (m.cluster.clone(), m.fingerprint);
            let (want, to_drain) = desired.remove(&key).map(|d| (d.1, d.2)).unwrap_or_default();
            let mut topics = m.topics.lock();
            let mut draining = m.draining.lock();
            let mut changed = false;
            // The destination of an aborted migration is left at once, unread: the
            // coordinator copies its records back to the source, where the group reads them.
            // (Before the seal the group had not read it: it drains the source first.)
            let abandoned: Vec<String> = topics
                .iter()
                .filter(|(phys, logical)| {
                    !want.contains_key(*phys)
                        && md
                            .state
                            .topics
                            .get(*logical)
                            .and_then(|t| t.migrating_from.as_ref())
                            .is_some_and(|f| {
                                f.aborted && f.cluster == m.cluster && &f.physical == *phys
                            })
                })
                .map(|(phys, _)| phys.clone())
                .collect();
            for phys in &abandoned {
                tracing::info!(cluster = %m.cluster, physical = %phys, "migration aborted; leaving its destination unread");
                topics.remove(phys);
                draining.remove(phys);
                m.drain_ends.lock().retain(|(p, _), _| p != phys);
                self.offsets
                    .lock()
                    .retain(|(id, p, _), _| *id != m.id || p != phys);
                changed = true;
            }
            if topics.is_empty() && want.is_empty() {
                emptied.push(m.id);
                continue;
            }
            for (phys, logical) in topics.iter() {
                let moved = !want.contains_key(phys) || to_drain.contains(phys);
                if moved && !draining.contains_key(phys) {
                    tracing::info!(cluster = %m.cluster, topic = %logical, "topic moved away; draining");
                    draining.insert(phys.clone(), now);
                }
            }
            for (phys, logical) in &want {
                if to_drain.contains(phys) {
                    if !topics.contains_key(phys) {
                        tracing::info!(cluster = %m.cluster, topic = %logical, "joining a migration's source to drain it");
                        topics.insert(phys.clone(), logical.clone());
                        draining.insert(phys.clone(), now);
                        changed = true;
                    }
                    continue;
                }
                draining.remove(phys);
                if topics.insert(phys.clone(), logical.clone()).is_none() {
                    changed = true;
                }
            }
            update_seals(md, &m.cluster, &topics, &draining, &mut m.seals.lock());
            let mut starts = m.starts.lock();
            starts.retain(|p, _| topics.contains_key(p));
            starts.extend(destination_starts(md, &m.cluster, &topics));
            drop(starts);
            if changed {
                subscribe(&m.consumer, &topics).map_err(|source| Error::Kafka {
                    cluster: m.cluster.clone(),
                    source,
                })?;
            }
        }
        for id in emptied {
            if let Some(m) = members.remove(&id) {
                let c = m.consumer.clone();
                tokio::task::spawn_blocking(move || {
                    c.unsubscribe();
                    drop(c);
                });
            }
        }
        // New members.
        for ((cluster, fingerprint), (target, topics, to_drain)) in desired {
            let consumer = self.create(&target)?;
            subscribe(&consumer, &topics).map_err(|source| Error::Kafka {
                cluster: cluster.clone(),
                source,
            })?;
            tracing::info!(cluster = %cluster, group = %self.group, topics = ?topics.values().collect::<Vec<_>>(), draining = ?to_drain, "joined group on cluster");
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let starts = destination_starts(md, &cluster, &topics);
            let draining: BTreeMap<String, Instant> =
                to_drain.into_iter().map(|p| (p, now)).collect();
            let mut seals = HashMap::new();
            update_seals(md, &cluster, &topics, &draining, &mut seals);
            members.insert(
                id,
                Arc::new(Member {
                    id,
                    metrics: MemberMetrics {
                        metrics: self.shared.metrics.clone(),
                        cluster: cluster.clone(),
                        group: self.group.clone(),
                        by_topic: Mutex::new(FxHashMap::default()),
                    },
                    cluster,
                    fingerprint,
                    consumer: Arc::new(consumer),
                    topics: Mutex::new(topics),
                    draining: Mutex::new(draining),
                    drain_ends: Mutex::new(HashMap::new()),
                    seals: Mutex::new(seals),
                    paused: Mutex::new(HashSet::new()),
                    starts: Mutex::new(starts),
                    start_committed: Mutex::new(HashSet::new()),
                    positioned: Mutex::new(HashSet::new()),
                    drain_progress: Mutex::new(HashMap::new()),
                    received: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                }),
            );
        }
        Ok(())
    }

    fn create(&self, target: &ClusterTarget) -> Result<StreamConsumer, Error> {
        let mut cfg = ClientConfig::new();
        for (k, v) in CONSUMER_DEFAULTS {
            cfg.set(*k, *v);
        }
        cfg.set("client.id", format!("{}-consumer", self.shared.client_id));
        for (k, v) in &target.properties {
            cfg.set(k, v);
        }
        let md = self.shared.load();
        let enforced = md
            .state
            .profiles
            .get(&self.shared.app)
            .map(|p| p.enforced.clone());
        drop(md);
        for (k, v) in &self.opts.properties {
            if k != "bootstrap.servers" {
                cfg.set(k, v);
            }
        }
        if let Some(enforced) = enforced {
            for (k, v) in enforced {
                cfg.set(k, v);
            }
        }
        cfg.set("group.id", &self.group);
        if self.opts.auto_commit {
            cfg.set("enable.auto.commit", "true");
            cfg.set("enable.auto.offset.store", "false");
        } else {
            cfg.set("enable.auto.commit", "false");
        }
        cfg.create_with_context(MemberContext::default())
            .map_err(|source| Error::Kafka {
                cluster: target.name.clone(),
                source,
            })
    }

    /// Starts a drain check in its own task unless one is running.
    fn start_drain_check(self: &Arc<Self>) {
        if self.drain_checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let destinations: Vec<Arc<Member>> = inner
                .members
                .lock()
                .values()
                .filter(|m| !m.starts.lock().is_empty())
                .cloned()
                .collect();
            if !destinations.is_empty() {
                let _ = tokio::task::spawn_blocking(move || {
                    for m in destinations {
                        m.position_starts();
                    }
                })
                .await;
            }
            let done = inner.check_drains().await;
            inner.drained.lock().extend(done);
            inner.drain_checking.store(false, Ordering::Release);
        });
    }

    /// Finds the members' draining topics whose partitions are all handed out and committed
    /// (here, or by the group).
    async fn check_drains(&self) -> Vec<(Arc<Member>, BTreeSet<String>)> {
        let mut finished = Vec::new();
        let members: Vec<Arc<Member>> = self.members.lock().values().cloned().collect();
        for m in members {
            // A migration's source drains up to its seal, so not before the seal is known, and
            // then without a grace period (the seal is where its records end); a plain route
            // change's old location after the grace (for producers that learn of it late).
            let seals = m.seals.lock().clone();
            let due: Vec<String> = m
                .draining
                .lock()
                .iter()
                .filter(|(p, since)| {
                    matches!(seals.get(*p), Some(Some(_)))
                        || since.elapsed() >= self.opts.drain_grace
                })
                .map(|(p, _)| p.clone())
                .collect();
            let due: Vec<String> = due
                .into_iter()
                .filter(|p| !matches!(seals.get(p), Some(None)))
                .collect();
            if due.is_empty() {
                continue;
            }
            let m2 = m.clone();
            let due2 = due.clone();
            let offsets = self.offsets.lock().clone();
            let offsets2 = offsets.clone();
            let auto_commit = self.opts.auto_commit;
            // End offsets, read off the async runtime. Each query is a broker round trip made
            // while `recv` waits, so a partition is queried again only once everything up to its
            // last known end has been handed out.
            // Every partition of a draining topic counts, not only those assigned to this
            // member now: during a rebalance the assignment is empty or partial, and a
            // partition another member holds (or will get) is drained only when the group has
            // committed it to its end. So a member never declares a topic drained while its
            // records still wait on the old cluster, and members that finish first stay until
            // the group is done instead of leaving (which would rebalance the rest mid-drain).
            let t0 = Instant::now();
            tracing::debug!(?due, "drain check starts");
            let (parts, undecided) = tokio::task::spawn_blocking(move || {
                // (physical, partition, end, group committed, assigned to this member)
                let mut out: Vec<(String, i32, i64, Option<i64>, bool)> = Vec::new();
                let Ok(assign) = m2.consumer.assignment() else {
                    return (out, due2);
                };
                let end_of = |topic: &str, partition: i32, handed: i64| -> i64 {
                    if let Some(Some(sealed)) = seals.get(topic) {
                        return usize::try_from(partition)
                            .ok()
                            .and_then(|p| sealed.get(p))
                            .copied()
                            .unwrap_or(0);
                    }
                    let pk = (topic.to_string(), partition);
                    let known = m2.drain_ends.lock().get(&pk).copied();
                    match known {
                        Some(h) if handed < h => h,
                        _ => {
                            let h = m2
                                .consumer
                                .fetch_watermarks(topic, partition, Duration::from_secs(2))
                                .map(|(_, h)| h)
                                .unwrap_or(i64::MAX);
                            if h != i64::MAX {
                                m2.drain_ends.lock().insert(pk, h);
                            }
                            h
                        }
                    }
                };
                for e in assign.elements() {
                    if !due2.iter().any(|d| d == e.topic()) {
                        continue;
                    }
                    let handed = offsets2
                        .get(&(m2.id, e.topic().to_string(), e.partition()))
                        .map_or(-1, |o| o.0);
                    let high = end_of(e.topic(), e.partition(), handed);
                    out.push((e.topic().to_string(), e.partition(), high, None, true));
                }
                let mut undecided = Vec::new();
                let mut query = TopicPartitionList::new();
                // Partitions this member handed nothing from (assigned after their records
                // were consumed elsewhere, or empty): their committed offset tells whether
                // anything is left.
                for (t, p, high, _, _) in &out {
                    let handed = offsets2.get(&(m2.id, t.clone(), *p)).map_or(-1, |o| o.0);
                    if handed < 0 && *high > 0 {
                        query.add_partition(t, *p);
                    }
                }
                // Partitions not assigned to this member: the group's committed offset. Asked
                // only once this member is through its own partitions of the topic (until then
                // the topic is not drained anyway, and each query makes `recv` wait).
                let mut unassigned = Vec::new();
                for t in &due2 {
                    let mine_done = out.iter().filter(|x| &x.0 == t).all(|x| {
                        let (handed, committed) = offsets2
                            .get(&(m2.id, t.clone(), x.1))
                            .copied()
                            .unwrap_or((-1, -1));
                        handed < 0 || (handed >= x.2 && (auto_commit || committed >= handed))
                    });
                    if !mine_done {
                        continue;
                    }
                    // The partition count, cached under partition -1 with the ends.
                    let count_key = (t.clone(), -1);
                    let cached = m2.drain_ends.lock().get(&count_key).copied();
                    let count = match cached {
                        Some(n) => n as i32,
                        None => {
                            let n = m2
                                .consumer
                                .fetch_metadata(Some(t), Duration::from_secs(2))
                                .ok()
                                .and_then(|md| {
                                    md.topics()
                                        .iter()
                                        .find(|x| x.name() == t && x.error().is_none())
                                        .map(|x| x.partitions().len() as i32)
                                });
                            let Some(n) = n.filter(|n| *n > 0) else {
                                undecided.push(t.clone());
                                continue;
                            };
                            m2.drain_ends.lock().insert(count_key, i64::from(n));
                            n
                        }
                    };
                    for p in 0..count {
                        if !out.iter().any(|x| &x.0 == t && x.1 == p) {
                            unassigned.push((t.clone(), p));
                            query.add_partition(t, p);
                        }
                    }
                }
                let committed: HashMap<(String, i32), i64> = if query.count() > 0 {
                    match m2.consumer.committed_offsets(query, Duration::from_secs(2)) {
                        Ok(c) => c
                            .elements()
                            .iter()
                            .filter_map(|e| match e.offset() {
                                Offset::Offset(o) => {
                                    Some(((e.topic().to_string(), e.partition()), o))
                                }
                                _ => None,
                            })
                            .collect(),
                        Err(_) => HashMap::new(),
                    }
                } else {
                    HashMap::new()
                };
                for x in out.iter_mut() {
                    x.3 = committed.get(&(x.0.clone(), x.1)).copied();
                }
                // Assigned partitions that made no progress since the last check: when nothing
                // deliverable is left below the end (the position is past it, or the records
                // expired: the low-water mark is past it — or a tail of transaction markers was
                // skipped), the end is committed for the group, and the partition is drained.
                let positions = m2.consumer.position().ok();
                for x in out.iter_mut() {
                    let (handed, committed) = offsets2
                        .get(&(m2.id, x.0.clone(), x.1))
                        .copied()
                        .unwrap_or((-1, -1));
                    if x.2 <= 0 || handed >= x.2 || x.3.is_some_and(|c| c >= x.2) {
                        continue;
                    }
                    let last = m2
                        .drain_progress
                        .lock()
                        .insert((x.0.clone(), x.1), handed);
                    if last != Some(handed) || !(auto_commit || committed >= handed) {
                        continue;
                    }
                    let position = positions.as_ref().and_then(|tpl| {
                        match tpl.find_partition(&x.0, x.1)?.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        }
                    });
                    if !(position.is_some_and(|p| p >= x.2) || low_past(&m2, &x.0, x.1, x.2)) {
                        continue;
                    }
                    let mut tpl = TopicPartitionList::new();
                    if tpl
                        .add_partition_offset(&x.0, x.1, Offset::Offset(x.2))
                        .is_ok()
                        && m2.consumer.commit(&tpl, CommitMode::Sync).is_ok()
                    {
                        tracing::info!(topic = %x.0, partition = x.1, end = x.2, ?position, "nothing left to deliver below the drain's end; committed it");
                        x.3 = Some(x.2);
                    }
                }
                for (t, p) in unassigned {
                    let mut c = committed.get(&(t.clone(), p)).copied();
                    // The end is needed only once the group's commit might have reached it.
                    let high = end_of(&t, p, c.unwrap_or(-1));
                    // Records expired below the end: nothing is left to read there.
                    if high > 0 && c.is_none_or(|c| c < high) && low_past(&m2, &t, p, high) {
                        c = Some(high);
                    }
                    out.push((t, p, high, c, false));
                }
                (out, undecided)
            })
            .await
            .unwrap_or_else(|_| (Vec::new(), due.clone()));
            tracing::debug!(elapsed = ?t0.elapsed(), n = parts.len(), ?undecided, "drain check queried");
            let mut done: BTreeSet<String> = due.into_iter().collect();
            for t in &undecided {
                done.remove(t);
            }
            for (topic, partition, high, group_committed, assigned) in parts {
                tracing::debug!(%topic, partition, high, ?group_committed, assigned, handed = ?offsets.get(&(m.id, topic.clone(), partition)), "drain check");
                let group_done = high == 0 || group_committed.is_some_and(|c| c >= high);
                if !assigned {
                    if !group_done {
                        done.remove(&topic);
                    }
                    continue;
                }
                let (handed, committed) = offsets
                    .get(&(m.id, topic.clone(), partition))
                    .copied()
                    .unwrap_or((-1, -1));
                let committed_ok = self.opts.auto_commit || committed >= handed;
                // Everything up to the end handed out by this member, or (when it handed out
                // nothing) committed by the group already.
                let read_all = handed >= high || group_done;
                if !(read_all && committed_ok) {
                    done.remove(&topic);
                }
            }
            if !done.is_empty() {
                finished.push((m, done));
            }
        }
        finished
    }

    /// Ends draining for what the last drain check found finished: unsubscribes those topics
    /// (with auto-commit, after a final synchronous commit of what was handed out), and drops
    /// members left without topics. Synchronous, so a cancelled `recv` cannot cut it short.
    fn apply_drained(&self) {
        let finished = std::mem::take(&mut *self.drained.lock());
        if !finished.is_empty() {
            // The migration coordinator completes on the report that the source is left.
            self.shared.report_soon();
        }
        for (m, done) in finished {
            if !self.members.lock().contains_key(&m.id) {
                continue;
            }
            let final_commit = self.opts.auto_commit;
            let remaining = {
                let mut topics = m.topics.lock();
                let mut draining = m.draining.lock();
                let md = self.shared.load();
                for t in &done {
                    let logical = topics.remove(t).unwrap_or_default();
                    draining.remove(t);
                    m.drain_ends.lock().retain(|(p, _), _| p != t);
                    m.drain_progress.lock().retain(|(p, _), _| p != t);
                    // A migration's source is not joined again while the migration runs.
                    if let Some(f) = md
                        .state
                        .topics
                        .get(&logical)
                        .and_then(|x| x.migrating_from.as_ref())
                        .filter(|f| f.cluster == m.cluster && &f.physical == t)
                    {
                        self.sources_done.lock().insert((
                            f.cluster.clone(),
                            f.physical.clone(),
                            f.migration_id.clone(),
                        ));
                    }
                    tracing::info!(cluster = %m.cluster, physical = %t, "drained; unsubscribing");
                }
                topics.clone()
            };
            if remaining.is_empty() {
                self.members.lock().remove(&m.id);
                let c = m.consumer.clone();
                drop(m);
                tokio::task::spawn_blocking(move || {
                    if final_commit {
                        let _ = c.commit_consumer_state(CommitMode::Sync);
                    }
                    c.unsubscribe();
                    drop(c);
                });
            } else if final_commit {
                // Commit before the resubscription revokes the drained topic's partitions.
                let c = m.consumer.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = c.commit_consumer_state(CommitMode::Sync);
                    if let Err(e) = subscribe(&c, &remaining) {
                        tracing::warn!(error = %e, "resubscribe failed");
                    }
                });
            } else if let Err(e) = subscribe(&m.consumer, &remaining) {
                tracing::warn!(error = %e, "resubscribe failed");
            }
        }
    }
}

/// Whether the low-water mark of `topic`/`partition` is at or past `end` (its records below
/// `end` expired or were deleted). Blocking; false when the cluster does not answer.
fn low_past(m: &Member, topic: &str, partition: i32, end: i64) -> bool {
    m.consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(2))
        .is_ok_and(|(low, _)| low >= end)
}

/// Brings `seals` (physical → seal, see `Member::seals`) in line with the draining topics of a
/// member on `cluster`. A published seal never moves, so one already known is kept when `md`
/// no longer carries it (the migration completed meanwhile).
fn update_seals(
    md: &Metadata,
    cluster: &str,
    topics: &BTreeMap<String, String>,
    draining: &BTreeMap<String, Instant>,
    seals: &mut HashMap<String, Option<Vec<i64>>>,
) {
    seals.retain(|p, _| draining.contains_key(p));
    for phys in draining.keys() {
        let Some(logical) = topics.get(phys) else {
            continue;
        };
        if let Some(f) = md
            .state
            .topics
            .get(logical)
            .and_then(|t| t.migrating_from.as_ref())
            && !f.aborted
            && f.cluster == cluster
            && &f.physical == phys
        {
            let sealed = (!f.sealed_offsets.is_empty()).then(|| f.sealed_offsets.clone());
            if sealed.is_some() || !matches!(seals.get(phys), Some(Some(_))) {
                seals.insert(phys.clone(), sealed);
            }
        }
    }
}

fn subscribe(
    c: &StreamConsumer,
    topics: &BTreeMap<String, String>,
) -> Result<(), rdkafka::error::KafkaError> {
    let names: Vec<&str> = topics.keys().map(String::as_str).collect();
    c.subscribe(&names)
}

impl StatusSource for ConsumerInner {
    fn endpoints(&self) -> (Vec<Counted>, Vec<Counted>) {
        let mut out = Vec::new();
        for m in self.members.lock().values() {
            let topics = m.topics.lock();
            let n = topics.len().max(1) as u64;
            for (phys, logical) in topics.iter() {
                out.push((
                    ClientEndpoint {
                        logical_topic: logical.clone(),
                        cluster: m.cluster.clone(),
                        physical_topic: phys.clone(),
                        group: self.group.clone(),
                        ..Default::default()
                    },
                    // Counters are per member; spread evenly when it reads several topics.
                    m.received.load(Ordering::Relaxed) / n,
                    m.bytes.load(Ordering::Relaxed) / n,
                ));
            }
        }
        (Vec::new(), out)
    }
}
