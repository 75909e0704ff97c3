//! A replicated store on a Kafka log: the model Schema Registry and Kafka Connect use.
//!
//! Every config-service replica pointed at the same topic (`--store kafka://HOST:PORT/TOPIC`)
//! consumes it and applies its records in offset order; nothing else is shared between
//! replicas and there is no leader election of our own.
//!
//! **The log.** One partition, `cleanup.policy=compact`, created on first start if missing with
//! replication factor `min(3, brokers)` and `min.insync.replicas = max(1, rf - 1)`. An existing
//! topic must have exactly one partition and `cleanup.policy=compact` alone (a topic that also
//! deletes by retention would one day lose proposals a new replica must replay); a replica whose
//! starting point (its snapshot's `next_offset`, or offset 0 without a snapshot) lies below the
//! log's first offset refuses to start, and a running replica whose next record was deleted
//! before it read it accepts no more writes — records deleted from the head of the log never
//! make a replica serve a different history. Every record's value is a protobuf `LogEntry`:
//! - a *proposal* `{expected_version, delta, writer, request}` under the key
//!   `p/WRITER/REQUEST` — distinct for every proposal, so compaction never removes one;
//! - a *snapshot* `{state at version V, next_offset, earlier}` under the key `snapshot/V`.
//!   `next_offset` is the offset after the proposal that made V: state V plus every record from
//!   `next_offset` on is the whole configuration. `earlier` lists the snapshot records still in
//!   the log; the writer of a snapshot deletes (tombstones) those older than the window of
//!   history plus two snapshot intervals, which no starting replica needs any more. (Logs
//!   written by earlier versions hold snapshots under the fixed key `snapshot`; they are read
//!   the same way.)
//!
//! Why these keys: if proposals shared a key, compaction could remove a proposal that a replica
//! starting from an older snapshot still needs, and the replicas' histories would differ. With
//! distinct keys the log grows by one small record per proposal (configuration changes are
//! operator actions: thousands, not billions), every replica can always replay from the
//! beginning, and the fixed snapshot key bounds the snapshots kept to about one.
//!
//! **Deciding compare-and-set.** A proposal whose `expected_version` equals the replica's
//! current version, and whose delta goes from that version to the next, is applied and becomes
//! version `current + 1`; any other proposal is rejected. The decision depends only on the
//! records before it, so every replica decides every proposal the same way and all replicas go
//! through the same version sequence. Replicas read only records at or below the high
//! watermark, i.e. records every in-sync replica has: a version applied by one config-service
//! replica survives the loss of a Kafka broker (within `min.insync.replicas`).
//!
//! **Writing.** The writer first checks its own latest version (a stale `expected` fails
//! fast), then produces the proposal (`acks=all`, idempotent) and waits until its own
//! consumer has read that record back; it returns `Ok` or `Conflict` according to what happened
//! to *its* record. If the home cluster does not acknowledge the record within the write
//! timeout, or the replica does not read it back within the write timeout after that, the write
//! fails with [`StoreError::Unavailable`] (so within twice the write timeout). Its outcome is
//! then unknown — a record whose acknowledgement was lost may still be in the log and take
//! effect in log order — so the caller must re-read before retrying (a blind retry at the same
//! `expected_version` is rejected as a conflict if the first one went through).
//!
//! **Reads.** A replica acknowledges a version only after applying it, so its [`Store::latest`]
//! is never older than a version it acknowledged (read-your-writes through one replica). Another
//! replica may still be behind by the time it takes to consume the record (milliseconds on a
//! healthy cluster): a client that writes through replica A and reads through replica B can see
//! the previous version briefly, never a different history. Every replica publishes the
//! versions it applies on [`Store::applied_versions`], so watchers of every replica see every
//! version. While the home cluster is unreachable, reads keep being served from the last
//! applied state and writes fail with `Unavailable` after the write timeout.
//!
//! **Snapshots and the window of history.** The replica whose proposal made a version
//! divisible by the snapshot interval also writes a snapshot record of that version (not waited
//! for). Every replica serves the same window of history: the last `retain` versions
//! (`--retain-versions`, which every replica must be given alike) — `get --version`, `history`
//! and `rollback` answer the same on each, whenever it started. A starting replica finds the
//! newest snapshot by scanning backwards from the end of the log in growing windows, then starts
//! from the newest snapshot it lists at or before that snapshot's version minus `retain` (so
//! it holds the whole window) and replays only what follows; without one it replays the log
//! from its beginning.
//!
//! **Migrations.** The migration coordinator keeps its record in a second compacted topic on the
//! same cluster, `TOPIC-migrations` ([`KeyedRecords`]), so losing the coordinator's host loses no
//! move; it runs only on the replica started with `--data-dir` (see
//! [`crate::server::StoreConfig`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_proto::state::State;
use switchyard_proto::v1::Delta;
use tokio::sync::watch;

use super::{History, HistoryItem, Store, StoreError};

/// Key of the snapshot records of earlier versions (compaction kept only the newest).
const LEGACY_SNAPSHOT_KEY: &str = "snapshot";
/// Snapshot records are keyed `snapshot/VERSION`, so compaction keeps every one until its
/// writer deletes it with a tombstone (see [`KafkaStore::write_snapshot`]).
const SNAPSHOT_PREFIX: &str = "snapshot/";
/// Longest topic name Kafka accepts.
const MAX_TOPIC: usize = 249;

#[derive(Clone, PartialEq, prost::Message)]
struct LogEntry {
    #[prost(oneof = "log_entry::Body", tags = "1, 2")]
    body: Option<log_entry::Body>,
}

mod log_entry {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Body {
        #[prost(message, tag = "1")]
        Proposal(super::Proposal),
        #[prost(message, tag = "2")]
        Snapshot(super::SnapshotRecord),
    }
}

/// A proposed next version.
#[derive(Clone, PartialEq, prost::Message)]
struct Proposal {
    /// The version the writer built the delta on.
    #[prost(uint64, tag = "1")]
    expected_version: u64,
    /// The change to `expected_version + 1`.
    #[prost(message, optional, tag = "2")]
    delta: Option<Delta>,
    /// The writing replica (random per process).
    #[prost(string, tag = "3")]
    writer: String,
    /// The writer's request number.
    #[prost(uint64, tag = "4")]
    request: u64,
}

/// The whole state at one version, and where the log continues after it.
#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotRecord {
    #[prost(message, optional, tag = "1")]
    state: Option<switchyard_proto::v1::Snapshot>,
    /// Offset of the first record not reflected in `state`.
    #[prost(int64, tag = "2")]
    next_offset: i64,
    /// The earlier snapshot records still in the log, oldest first: a starting replica reads
    /// the one that lets it hold the same window of history as every other replica.
    #[prost(message, repeated, tag = "3")]
    earlier: Vec<SnapshotRef>,
}

/// Where a snapshot record is.
#[derive(Clone, Copy, PartialEq, prost::Message)]
struct SnapshotRef {
    /// Its version.
    #[prost(uint64, tag = "1")]
    version: u64,
    /// Its offset in the log.
    #[prost(int64, tag = "2")]
    offset: i64,
}

/// Where the log lives and how long to wait for it.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers of the home cluster (`host:port[,host:port…]`).
    pub bootstrap: String,
    /// The single-partition log topic.
    pub topic: String,
    /// Versions of history kept in memory at least.
    pub retain: usize,
    /// How long a write waits for the home cluster before it fails with `Unavailable`.
    pub write_timeout: Duration,
    /// How long opening waits to reach the cluster and catch up with the log.
    pub open_timeout: Duration,
    /// A snapshot record is written every this many versions.
    pub snapshot_every: u64,
    /// Client properties for the home cluster (security settings: `security.protocol`,
    /// `sasl.*`, `ssl.*`…), references already resolved.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl KafkaConfig {
    /// A Kafka client configuration for the home cluster: its bootstrap servers and
    /// properties.
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }
}

impl KafkaConfig {
    /// Parses `kafka://HOST:PORT[,HOST:PORT…]/TOPIC` with default timeouts.
    pub fn from_url(url: &str, retain: usize) -> Result<Self, String> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| format!("store URL {url:?} must start with kafka://"))?;
        let (hosts, topic) = rest.split_once('/').ok_or_else(|| {
            format!("store URL {url:?} must name a topic: kafka://HOST:PORT/TOPIC")
        })?;
        if hosts.is_empty() {
            return Err(format!("store URL {url:?} names no bootstrap server"));
        }
        for h in hosts.split(',') {
            let port = h.rsplit_once(':').map(|(host, p)| (host, p.parse::<u16>()));
            match port {
                Some((host, Ok(p))) if !host.is_empty() && p != 0 => {}
                _ => {
                    return Err(format!(
                        "bootstrap server {h:?} in store URL {url:?} is not HOST:PORT"
                    ));
                }
            }
        }
        check_topic(topic).map_err(|e| format!("store URL {url:?}: {e}"))?;
        Ok(Self {
            bootstrap: hosts.to_string(),
            topic: topic.to_string(),
            retain: retain.max(1),
            write_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(30),
            snapshot_every: 100,
            properties: Default::default(),
        })
    }
}

fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("the topic name is empty".into());
    }
    if t.len() > MAX_TOPIC {
        return Err(format!(
            "the topic name is longer than {MAX_TOPIC} characters"
        ));
    }
    if t == "." || t == ".." {
        return Err(format!("{t:?} is not a valid topic name"));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "the topic name {t:?} contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// What happened to one of this replica's proposals.
#[derive(Debug, Clone)]
enum Outcome {
    Applied { state: Arc<State>, offset: i64 },
    Conflict { current: u64 },
    Invalid(String),
}

#[derive(Debug)]
struct Applied {
    history: History,
    /// The next offset to read.
    next_offset: i64,
    /// Outcomes of this replica's proposals, by request number, until the writer takes them.
    outcomes: HashMap<u64, Outcome>,
    /// The snapshot records seen in the log and not deleted since, oldest first.
    snapshots: Vec<SnapshotRef>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<Applied>,
    cond: Condvar,
    applied_tx: watch::Sender<u64>,
    writer: String,
    retain: usize,
    /// Set when records this replica had not read yet were deleted from the log: it can no
    /// longer follow the history, so it accepts no more writes.
    broken: Mutex<Option<String>>,
}

impl Shared {
    /// Applies one record at `offset` (offset order); returns the new version, if any.
    fn apply(&self, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let mut st = self.state.lock();
        if offset < st.next_offset {
            return;
        }
        st.next_offset = offset + 1;
        let entry = match payload.map(LogEntry::decode) {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                tracing::warn!(offset, error = %e, "skipping an undecodable record in the config log");
                return;
            }
            None => {
                // A tombstone: a snapshot record deleted by its writer.
                if let Some(v) = key.and_then(snapshot_key_version) {
                    st.snapshots.retain(|s| s.version != v);
                }
                return;
            }
        };
        let p = match entry.body {
            Some(log_entry::Body::Proposal(p)) => p,
            Some(log_entry::Body::Snapshot(snap)) => {
                // Kept track of for the next snapshot record's `earlier`; read at start only.
                if let Some(v) = snap.state.as_ref().map(|s| s.version) {
                    st.snapshots.retain(|s| s.version != v);
                    st.snapshots.push(SnapshotRef { version: v, offset });
                    st.snapshots.sort_by_key(|s| s.version);
                }
                return;
            }
            None => return,
        };
        let outcome = match decide(st.history.latest(), &p) {
            Ok((delta, next)) => {
                let next = Arc::new(next);
                st.history.push(Arc::new(delta), next.clone());
                if st.history.len() > self.retain.saturating_mul(2)
                    && let Err(e) = st.history.compact(self.retain)
                {
                    tracing::warn!(error = %e, "could not compact the in-memory history");
                }
                self.applied_tx.send_replace(next.version);
                Outcome::Applied {
                    state: next,
                    offset,
                }
            }
            Err(o) => o,
        };
        if p.writer == self.writer {
            st.outcomes.insert(p.request, outcome);
        }
        drop(st);
        self.cond.notify_all();
    }
}

/// The deterministic compare-and-set decision for a proposal on top of `cur`.
fn decide(cur: &State, p: &Proposal) -> Result<(Delta, State), Outcome> {
    if p.expected_version != cur.version {
        return Err(Outcome::Conflict {
            current: cur.version,
        });
    }
    let Some(d) = &p.delta else {
        return Err(Outcome::Invalid("the proposal carries no delta".into()));
    };
    if d.to_version != cur.version + 1 {
        return Err(Outcome::Invalid(format!(
            "the proposal's delta goes from {} to {}, not to {}",
            d.from_version,
            d.to_version,
            cur.version + 1
        )));
    }
    match cur.apply_delta(d) {
        Ok(next) => Ok((d.clone(), next)),
        Err(e) => Err(Outcome::Invalid(e.to_string())),
    }
}

/// A [`Store`] replicated through a single-partition Kafka topic (see the module doc).
pub struct KafkaStore {
    cfg: KafkaConfig,
    shared: Arc<Shared>,
    producer: FutureProducer,
    request: AtomicU64,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStore")
            .field("bootstrap", &self.cfg.bootstrap)
            .field("topic", &self.cfg.topic)
            .field("writer", &self.shared.writer)
            .finish()
    }
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOpen {
    /// The topic was created by this start.
    pub created: bool,
    /// The version of the snapshot record the replica started from (0 = the log's beginning).
    pub snapshot_version: u64,
    /// Records read to catch up.
    pub replayed: u64,
}

fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(what.to_string())
}

impl KafkaStore {
    /// Connects to the home cluster, creates the topic if missing, starts from the newest
    /// snapshot record and catches up with the end of the log before returning.
    pub fn open(cfg: KafkaConfig) -> Result<(Self, KafkaOpen), StoreError> {
        check_topic(&cfg.topic).map_err(StoreError::Corrupt)?;
        let deadline = Instant::now() + cfg.open_timeout;
        let writer = format!(
            "{:016x}",
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        );
        let created = ensure_topic(&cfg, deadline)?;
        let consumer: BaseConsumer = cfg
            .client()
            .set("group.id", format!("switchyard-store-{writer}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Never skip: a position deleted from under the consumer is an error, not a jump.
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "10")
            .set("socket.nagle.disable", "true")
            .create()
            .map_err(|e| unavailable(format!("could not create the log consumer: {e}")))?;
        let (low, high) = consumer
            .fetch_watermarks(&cfg.topic, 0, remaining(deadline))
            .map_err(|e| {
                unavailable(format!(
                    "could not read the end of the config log {} on {}: {e}",
                    cfg.topic, cfg.bootstrap
                ))
            })?;
        let (base, start, snapshots) = starting_point(&consumer, &cfg, low, high, deadline)?;
        let history = History::new(base);
        // Records this replica needs were deleted (retention, DeleteRecords): starting from
        // what is left would fork the history. Refuse to serve instead.
        if start < low {
            return Err(StoreError::Corrupt(format!(
                "the config log {} starts at offset {low}, but {} needs the records from offset {start}: they were deleted (by retention or DeleteRecords); this replica would serve a history that differs from the other replicas', so it refuses to start. Restore the log from a backup or start a new log from `switchyard get snapshot` output",
                cfg.topic,
                if start == 0 {
                    "with no snapshot record left, replaying the log".to_string()
                } else {
                    format!("its newest snapshot (version {})", history.latest().version)
                }
            )));
        }
        let snapshot_version = history.latest().version;
        let (applied_tx, _) = watch::channel(snapshot_version);
        let shared = Arc::new(Shared {
            state: Mutex::new(Applied {
                history,
                next_offset: start,
                outcomes: HashMap::new(),
                snapshots,
            }),
            cond: Condvar::new(),
            applied_tx,
            writer,
            retain: cfg.retain.max(1),
            broken: Mutex::new(None),
        });
        assign(&consumer, &cfg.topic, start)?;
        // Catch up before serving: a replica never starts with a state older than the log's
        // end at the time it started.
        let mut replayed = 0u64;
        while shared.state.lock().next_offset < high {
            if Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "could not read the config log {} up to offset {high} within {:?}",
                    cfg.topic, cfg.open_timeout
                )));
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    shared.apply(m.offset(), m.key(), m.payload());
                    replayed += 1;
                }
                Some(Err(e)) => tracing::debug!(error = %e, "config log consumer"),
                None => {}
            }
        }
        let producer: FutureProducer = cfg
            .client()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("socket.nagle.disable", "true")
            .set(
                "message.timeout.ms",
                cfg.write_timeout.as_millis().max(1).to_string(),
            )
            .create()
            .map_err(|e| unavailable(format!("could not create the log producer: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("switchyard-kafka-store".into())
                .spawn(move || consume(consumer, shared, stop))?
        };
        let open = KafkaOpen {
            created,
            snapshot_version,
            replayed,
        };
        Ok((
            Self {
                cfg,
                shared,
                producer,
                request: AtomicU64::new(1),
                stop,
                thread: Mutex::new(Some(thread)),
            },
            open,
        ))
    }

    /// The oldest version served: the last `retain` versions back from the latest (the same
    /// window on every replica, whenever it started and however much it holds in memory), or
    /// the oldest this replica has when it holds less.
    fn window_start(&self, h: &History) -> u64 {
        h.latest()
            .version
            .saturating_sub(self.shared.retain as u64)
            .max(h.base().version)
    }

    /// This replica's writer id (in the key and value of its proposals).
    pub fn writer_id(&self) -> &str {
        &self.shared.writer
    }

    fn produce(&self, key: &str, entry: &LogEntry) -> Result<i64, StoreError> {
        let bytes = entry.encode_to_vec();
        let rec = FutureRecord::to(&self.cfg.topic)
            .partition(0)
            .key(key)
            .payload(&bytes);
        let delivery = self.producer.send_result(rec).map_err(|(e, _)| {
            unavailable(format!(
                "could not send the change to the config log {}: {e}",
                self.cfg.topic
            ))
        })?;
        match futures::executor::block_on(delivery) {
            Ok(Ok(d)) => Ok(d.offset),
            Ok(Err((e, _))) => Err(unavailable(format!(
                "the home cluster {} did not acknowledge the change within {:?}: {e}; it was most likely not written — re-read the configuration before retrying",
                self.cfg.bootstrap, self.cfg.write_timeout
            ))),
            Err(_) => Err(unavailable("the log producer shut down")),
        }
    }

    /// Writes a snapshot record of `state` (made by the proposal at `offset`), listing the
    /// earlier snapshot records a starting replica may need, and deletes (tombstones) the ones
    /// no replica needs any more: older than the window plus two snapshot intervals.
    fn write_snapshot(&self, state: &State, offset: i64) {
        let keep_after = state.version.saturating_sub(
            (self.cfg.retain as u64).saturating_add(self.cfg.snapshot_every.saturating_mul(2)),
        );
        let (earlier, expired): (Vec<SnapshotRef>, Vec<SnapshotRef>) = self
            .shared
            .state
            .lock()
            .snapshots
            .iter()
            .filter(|s| s.version < state.version)
            .partition(|s| s.version >= keep_after);
        let entry = LogEntry {
            body: Some(log_entry::Body::Snapshot(SnapshotRecord {
                state: Some(state.to_snapshot()),
                next_offset: offset + 1,
                earlier,
            })),
        };
        let bytes = entry.encode_to_vec();
        let key = format!("{SNAPSHOT_PREFIX}{}", state.version);
        let rec = FutureRecord::to(&self.cfg.topic)
            .partition(0)
            .key(&key)
            .payload(&bytes);
        // Not waited for: a lost snapshot only means a longer replay for a new replica.
        match self.producer.send_result(rec) {
            Ok(_) => tracing::info!(version = state.version, "wrote a snapshot record"),
            Err((e, _)) => tracing::warn!(error = %e, "could not write a snapshot record"),
        }
        for old in expired {
            let key = format!("{SNAPSHOT_PREFIX}{}", old.version);
            let tomb = FutureRecord::<str, [u8]>::to(&self.cfg.topic)
                .partition(0)
                .key(&key);
            if let Err((e, _)) = self.producer.send_result(tomb) {
                tracing::warn!(error = %e, version = old.version, "could not delete an old snapshot record");
            }
        }
    }
}

impl Drop for KafkaStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn assign(consumer: &BaseConsumer, topic: &str, offset: i64) -> Result<(), StoreError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .map_err(|e| unavailable(format!("could not position the log consumer: {e}")))?;
    consumer
        .assign(&tpl)
        .map_err(|e| unavailable(format!("could not position the log consumer: {e}")))
}

/// Records a failure to connect that retrying does not fix: an authentication failure, a TLS
/// failure on this side, or a TLS alert from the broker (the SDK's producers classify their
/// clients' error events the same way).
#[derive(Default)]
struct ProbeContext {
    failure: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for ProbeContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let fatal = match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL,
            ) => true,
            Some(RDKafkaErrorCode::BrokerTransportFailure) => reason.contains("SSL alert number"),
            _ => false,
        };
        if fatal {
            *self.failure.lock() = Some(reason.to_string());
        } else {
            tracing::debug!(%error, %reason, "home cluster client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ProbeContext {}

/// Creates the topic if missing; checks it has exactly one partition. Returns whether it
/// created it.
fn ensure_topic(cfg: &KafkaConfig, deadline: Instant) -> Result<bool, StoreError> {
    let probe: BaseConsumer<ProbeContext> = cfg
        .client()
        .create_with_context(ProbeContext::default())
        .map_err(|e| unavailable(format!("could not create a Kafka client: {e}")))?;
    // In short slices, so a failure that retrying does not fix (a wrong password, an
    // untrusted certificate) ends the wait at once with librdkafka's reason.
    let md = loop {
        let slice = remaining(deadline).min(Duration::from_millis(500));
        match probe.fetch_metadata(Some(&cfg.topic), slice) {
            Ok(md) => break md,
            Err(e) => {
                // Error events reach the context when the client is polled.
                let _ = probe.poll(Duration::ZERO);
                if let Some(why) = probe.context().failure.lock().clone() {
                    return Err(unavailable(format!(
                        "cannot connect to the home cluster {}: {why}",
                        cfg.bootstrap
                    )));
                }
                if Instant::now() >= deadline {
                    return Err(unavailable(format!(
                        "could not reach the home cluster {}: {e}",
                        cfg.bootstrap
                    )));
                }
            }
        }
    };
    let brokers = md.brokers().len().max(1);
    if let Some(t) = md.topics().iter().find(|t| t.name() == cfg.topic)
        && t.error().is_none()
    {
        check_partitions(cfg, t.partitions().len())?;
        check_cleanup_policy(cfg, deadline)?;
        return Ok(false);
    }
    let rf = brokers.min(3) as i32;
    let min_isr = (rf - 1).max(1).to_string();
    let admin: AdminClient<DefaultClientContext> = cfg
        .client()
        .create()
        .map_err(|e| unavailable(format!("could not create a Kafka admin client: {e}")))?;
    let topic = NewTopic::new(&cfg.topic, 1, TopicReplication::Fixed(rf))
        .set("cleanup.policy", "compact")
        .set("min.insync.replicas", &min_isr);
    let opts = AdminOptions::new().operation_timeout(Some(remaining(deadline)));
    let res = futures::executor::block_on(admin.create_topics([&topic], &opts)).map_err(|e| {
        unavailable(format!(
            "could not create the config log {}: {e}",
            cfg.topic
        ))
    })?;
    let mut created = true;
    for r in res {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => created = false,
            Err((t, e)) => {
                return Err(unavailable(format!(
                    "could not create the config log {t}: {e}"
                )));
            }
        }
    }
    if created {
        tracing::info!(topic = %cfg.topic, replication = rf, min_insync = %min_isr, "created the config log topic");
    }
    // Wait until the partition has a leader (a fresh topic takes a moment).
    loop {
        if let Ok(md) = probe.fetch_metadata(Some(&cfg.topic), remaining(deadline))
            && let Some(t) = md.topics().iter().find(|t| t.name() == cfg.topic)
            && t.error().is_none()
            && !t.partitions().is_empty()
            && t.partitions().iter().all(|p| p.leader() >= 0)
        {
            check_partitions(cfg, t.partitions().len())?;
            return Ok(created);
        }
        if Instant::now() >= deadline {
            return Err(unavailable(format!(
                "the config log {} has no leader yet",
                cfg.topic
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks that an existing log topic only compacts: a topic that deletes records (by retention,
/// `cleanup.policy=delete`, or both, `compact,delete`) would one day remove proposals a new
/// replica needs to replay, and that replica would start from a different history.
fn check_cleanup_policy(cfg: &KafkaConfig, deadline: Instant) -> Result<(), StoreError> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = cfg
        .client()
        .create()
        .map_err(|e| unavailable(format!("could not create a Kafka admin client: {e}")))?;
    let opts = AdminOptions::new().request_timeout(Some(remaining(deadline)));
    let res = futures::executor::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(&cfg.topic)], &opts),
    )
    .map_err(|e| {
        unavailable(format!(
            "could not read the configuration of the config log topic {}: {e}",
            cfg.topic
        ))
    })?;
    let resource = match res.into_iter().next() {
        Some(Ok(r)) => r,
        Some(Err(code)) => {
            return Err(unavailable(format!(
                "could not read the configuration of the config log topic {} ({code}); the store's principal needs DescribeConfigs on it",
                cfg.topic
            )));
        }
        None => {
            return Err(unavailable(format!(
                "no configuration returned for the config log topic {}",
                cfg.topic
            )));
        }
    };
    let policy = resource
        .get("cleanup.policy")
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    let mut parts: Vec<&str> = policy.split(',').map(str::trim).collect();
    parts.sort_unstable();
    parts.dedup();
    if parts == ["compact"] {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "the config log topic {} has cleanup.policy={policy}; the store needs cleanup.policy=compact alone (records deleted by retention would give new replicas a different history). Set it with `kafka-configs --alter --entity-type topics --entity-name {} --add-config cleanup.policy=compact`, or name a new topic in --store",
            cfg.topic, cfg.topic
        )))
    }
}

fn check_partitions(cfg: &KafkaConfig, n: usize) -> Result<(), StoreError> {
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "the config log topic {} has {n} partitions; the store needs exactly one (log order decides every version)",
            cfg.topic
        )))
    }
}

/// True for the key of a snapshot record (either form).
fn is_snapshot_key(k: &[u8]) -> bool {
    k == LEGACY_SNAPSHOT_KEY.as_bytes() || k.starts_with(SNAPSHOT_PREFIX.as_bytes())
}

/// The version in a `snapshot/VERSION` key.
fn snapshot_key_version(k: &[u8]) -> Option<u64> {
    std::str::from_utf8(k)
        .ok()?
        .strip_prefix(SNAPSHOT_PREFIX)?
        .parse()
        .ok()
}

/// The snapshot record at `offset`, if it is still there.
fn read_snapshot_at(
    consumer: &BaseConsumer,
    cfg: &KafkaConfig,
    offset: i64,
    deadline: Instant,
) -> Result<Option<SnapshotRecord>, StoreError> {
    assign(consumer, &cfg.topic, offset)?;
    loop {
        if Instant::now() >= deadline {
            return Err(unavailable(format!(
                "could not read the config log {} within {:?}",
                cfg.topic, cfg.open_timeout
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if m.offset() != offset {
                    // Deleted (compacted after a tombstone): the next record came instead.
                    return Ok(None);
                }
                return Ok(match m.payload().map(LogEntry::decode) {
                    Some(Ok(LogEntry {
                        body: Some(log_entry::Body::Snapshot(s)),
                    })) if s.state.is_some() => Some(s),
                    _ => None,
                });
            }
            Some(Err(e)) => tracing::debug!(error = %e, "config log consumer"),
            None => {}
        }
    }
}

/// Where a starting replica begins: the state it starts from, the offset after it, and the
/// snapshot records known to be in the log.
///
/// Every replica serves the same window of history, the last `retain` versions (see
/// [`KafkaStore::window_start`]); to hold it, a replica must start at or before the window.
/// The newest snapshot `S` lists the earlier ones still in the log, so it starts from the
/// newest of those at or below `S - retain` (the window of any version from `S` on starts
/// there or later); without one it replays the log from its beginning.
fn starting_point(
    consumer: &BaseConsumer,
    cfg: &KafkaConfig,
    low: i64,
    high: i64,
    deadline: Instant,
) -> Result<(State, i64, Vec<SnapshotRef>), StoreError> {
    let Some((newest, at)) = find_snapshot(consumer, cfg, low, high, deadline)? else {
        return Ok((State::default(), 0, Vec::new()));
    };
    let version = newest.state.as_ref().map_or(0, |s| s.version);
    let mut known = newest.earlier.clone();
    known.push(SnapshotRef {
        version,
        offset: at,
    });
    let target = version.saturating_sub(cfg.retain as u64);
    let mut pick = None;
    if let Some(r) = newest
        .earlier
        .iter()
        .filter(|e| e.version <= target && e.version > 0)
        .max_by_key(|e| e.version)
    {
        pick = read_snapshot_at(consumer, cfg, r.offset, deadline)?;
    }
    let chosen = match pick {
        Some(p) => Some(p),
        // No snapshot old enough: replay the whole log when it is all there.
        None if low == 0 => None,
        None => {
            tracing::warn!(
                version,
                retain = cfg.retain,
                "no snapshot record old enough for the whole window of history; this replica retains less history than the others until the window moves past its start"
            );
            Some(newest)
        }
    };
    Ok(match chosen {
        Some(s) => {
            let state = State::from_snapshot(s.state.unwrap_or_default());
            tracing::info!(
                version = state.version,
                next_offset = s.next_offset,
                "starting from a snapshot record"
            );
            (state, s.next_offset, known)
        }
        None => (State::default(), 0, known),
    })
}

/// The newest snapshot record in `[low, high)`: scans backwards from `high` in growing windows.
fn find_snapshot(
    consumer: &BaseConsumer,
    cfg: &KafkaConfig,
    low: i64,
    high: i64,
    deadline: Instant,
) -> Result<Option<(SnapshotRecord, i64)>, StoreError> {
    let mut end = high;
    let mut window = (cfg.snapshot_every.max(1) as i64).saturating_mul(4);
    while end > low {
        let start = low.max(end - window);
        assign(consumer, &cfg.topic, start)?;
        let mut found: Option<(SnapshotRecord, i64)> = None;
        loop {
            if Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "could not read the config log {} within {:?}",
                    cfg.topic, cfg.open_timeout
                )));
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if m.offset() >= end {
                        break;
                    }
                    if m.key().is_some_and(is_snapshot_key)
                        && let Some(Ok(LogEntry {
                            body: Some(log_entry::Body::Snapshot(s)),
                        })) = m.payload().map(LogEntry::decode)
                        && s.state.is_some()
                    {
                        found = Some((s, m.offset()));
                    }
                    if m.offset() >= end - 1 {
                        break;
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "config log consumer"),
                None => {}
            }
        }
        if found.is_some() {
            return Ok(found);
        }
        end = start;
        window = window.saturating_mul(4);
    }
    Ok(None)
}

/// A small compacted topic on the store's home cluster holding a few keyed records, each
/// replaced whole on every write (the migration coordinator's record lives in one, so losing
/// the coordinator's host loses no move). Created like the config log (one partition,
/// `cleanup.policy=compact`, replication `min(3, brokers)`); writes are idempotent with
/// `acks=all` and are waited for.
pub struct KeyedRecords {
    cfg: KafkaConfig,
    producer: FutureProducer,
}

impl std::fmt::Debug for KeyedRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRecords")
            .field("bootstrap", &self.cfg.bootstrap)
            .field("topic", &self.cfg.topic)
            .finish()
    }
}

impl KeyedRecords {
    /// Opens (creating if missing) `topic` on `store`'s home cluster and reads the newest
    /// record of each of `keys` (blocking, bounded by the store's open timeout).
    pub fn open(
        store: &KafkaConfig,
        topic: &str,
        keys: &[&str],
    ) -> Result<(Self, HashMap<String, Vec<u8>>), StoreError> {
        check_topic(topic).map_err(StoreError::Corrupt)?;
        let cfg = KafkaConfig {
            topic: topic.to_string(),
            ..store.clone()
        };
        let deadline = Instant::now() + cfg.open_timeout;
        ensure_topic(&cfg, deadline)?;
        let producer: FutureProducer = cfg
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set(
                "message.timeout.ms",
                cfg.write_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(|e| unavailable(format!("could not create a Kafka producer: {e}")))?;
        let newest = read_newest(&cfg, keys, deadline)?;
        Ok((Self { cfg, producer }, newest))
    }

    /// Replaces the record of `key`; returns once the cluster acknowledged it (bounded by the
    /// store's write timeout).
    pub async fn write(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let rec = FutureRecord::to(&self.cfg.topic).key(key).payload(&value);
        self.producer
            .send(rec, self.cfg.write_timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| {
                unavailable(format!(
                    "could not write {key:?} to {} on {}: {e}",
                    self.cfg.topic, self.cfg.bootstrap
                ))
            })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.cfg.topic
    }
}

/// The newest record of each of `keys` in `cfg.topic`'s only partition: scans backwards from
/// the end in growing windows until every key is found or the beginning is reached.
fn read_newest(
    cfg: &KafkaConfig,
    keys: &[&str],
    deadline: Instant,
) -> Result<HashMap<String, Vec<u8>>, StoreError> {
    let consumer: BaseConsumer = cfg
        .client()
        .set("group.id", "switchyard-keyed-records")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|e| unavailable(format!("could not create a Kafka consumer: {e}")))?;
    let (low, high) = consumer
        .fetch_watermarks(&cfg.topic, 0, remaining(deadline))
        .map_err(|e| {
            unavailable(format!(
                "could not read the end of {} on {}: {e}",
                cfg.topic, cfg.bootstrap
            ))
        })?;
    let mut found: HashMap<String, Vec<u8>> = HashMap::new();
    let mut end = high;
    let mut window = 64i64;
    while end > low && found.len() < keys.len() {
        let start = low.max(end - window);
        assign(&consumer, &cfg.topic, start)?;
        // The newest of each key within [start, end) (later offsets overwrite earlier ones).
        let mut here: HashMap<String, Vec<u8>> = HashMap::new();
        loop {
            if Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "could not read {} within {:?}",
                    cfg.topic, cfg.open_timeout
                )));
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if m.offset() >= end {
                        break;
                    }
                    if let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok())
                        && keys.contains(&k)
                    {
                        here.insert(k.to_string(), m.payload().unwrap_or_default().to_vec());
                    }
                    if m.offset() >= end - 1 {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, topic = %cfg.topic, "keyed records consumer")
                }
                // Compaction leaves gaps: the window is read once the position passed its end.
                None => {
                    let pos = consumer.position().ok().and_then(|tpl| {
                        match tpl.find_partition(&cfg.topic, 0)?.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        }
                    });
                    if pos.is_some_and(|o| o >= end) {
                        break;
                    }
                }
            }
        }
        for (k, v) in here {
            found.entry(k).or_insert(v);
        }
        end = start;
        window = window.saturating_mul(4);
    }
    Ok(found)
}

/// The applier: reads the log in offset order until stopped.
fn consume(consumer: BaseConsumer, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let mut last_warn: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => shared.apply(m.offset(), m.key(), m.payload()),
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
            ))) => {
                let next = shared.state.lock().next_offset;
                let why = format!(
                    "records of the config log from offset {next} on were deleted before this replica read them (retention or DeleteRecords): it can no longer follow the history and accepts no more changes; restart it once the log is repaired"
                );
                tracing::error!("{why}");
                *shared.broken.lock() = Some(why);
                return;
            }
            // Warn at most every 10 s while the home cluster is unreachable.
            Some(Err(e)) if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) => {
                tracing::warn!(error = %e, "config log consumer; serving the last applied version");
                last_warn = Some(Instant::now());
            }
            Some(Err(_)) | None => {}
        }
    }
}

impl Store for KafkaStore {
    fn latest(&self) -> Arc<State> {
        self.shared.state.lock().history.latest().clone()
    }

    fn commit(&self, expected: u64, _next: State, delta: Delta) -> Result<Arc<State>, StoreError> {
        if let Some(why) = self.shared.broken.lock().clone() {
            return Err(StoreError::Corrupt(why));
        }
        let current = self.latest().version;
        if current != expected {
            return Err(StoreError::Conflict { expected, current });
        }
        let request = self.request.fetch_add(1, Ordering::Relaxed);
        let entry = LogEntry {
            body: Some(log_entry::Body::Proposal(Proposal {
                expected_version: expected,
                delta: Some(delta),
                writer: self.shared.writer.clone(),
                request,
            })),
        };
        let key = format!("p/{}/{request}", self.shared.writer);
        let offset = self.produce(&key, &entry)?;
        let deadline = Instant::now() + self.cfg.write_timeout;
        let mut st = self.shared.state.lock();
        let outcome = loop {
            if let Some(o) = st.outcomes.remove(&request) {
                break o;
            }
            if self.shared.cond.wait_until(&mut st, deadline).timed_out() {
                st.outcomes.remove(&request);
                return Err(unavailable(format!(
                    "the change was written to the config log at offset {offset} but this replica did not read it back within {:?}; its outcome is unknown — re-read the configuration before retrying",
                    self.cfg.write_timeout
                )));
            }
        };
        drop(st);
        match outcome {
            Outcome::Applied { state, offset } => {
                if state.version % self.cfg.snapshot_every.max(1) == 0 {
                    self.write_snapshot(&state, offset);
                }
                Ok(state)
            }
            Outcome::Conflict { current } => Err(StoreError::Conflict { expected, current }),
            Outcome::Invalid(m) => Err(StoreError::Corrupt(format!(
                "the config log rejected this replica's proposal: {m}"
            ))),
        }
    }

    fn get(&self, version: u64) -> Result<Arc<State>, StoreError> {
        let st = self.shared.state.lock();
        let start = self.window_start(&st.history);
        if version < start {
            return Err(StoreError::NotRetained {
                version,
                oldest: start,
                newest: st.history.latest().version,
            });
        }
        st.history.get(version)
    }

    fn history(&self, before: u64, limit: usize) -> Vec<HistoryItem> {
        let st = self.shared.state.lock();
        let start = self.window_start(&st.history);
        let mut h = st.history.history(before, limit);
        h.retain(|i| i.version > start);
        h
    }

    fn deltas_since(&self, known: u64) -> Option<Vec<Arc<Delta>>> {
        self.shared.state.lock().history.since(known)
    }

    fn oldest(&self) -> u64 {
        let st = self.shared.state.lock();
        self.window_start(&st.history)
    }

    fn applied_versions(&self) -> Option<watch::Receiver<u64>> {
        Some(self.shared.applied_tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::v1::{Change, Cluster, change::Op};

    fn proposal(cur: &State, expected: u64, name: &str) -> Proposal {
        let mut n = cur
            .apply_changes(&[Change {
                op: Some(Op::UpsertCluster(Cluster {
                    name: name.into(),
                    bootstrap: vec!["127.0.0.1:9092".into()],
                    ..Default::default()
                })),
            }])
            .unwrap();
        n.version = cur.version + 1;
        Proposal {
            expected_version: expected,
            delta: Some(cur.delta_to(&n)),
            writer: "w".into(),
            request: 1,
        }
    }

    #[test]
    fn decides_compare_and_set_in_log_order() {
        let s0 = State::default();
        // Two writers both built on version 0: the first in the log wins, the second loses.
        let a = proposal(&s0, 0, "a");
        let b = proposal(&s0, 0, "b");
        let (_, s1) = decide(&s0, &a).unwrap();
        assert_eq!(s1.version, 1);
        assert!(s1.clusters.contains_key("a"));
        assert!(matches!(
            decide(&s1, &b),
            Err(Outcome::Conflict { current: 1 })
        ));
        // A proposal claiming the right version but carrying a delta to the wrong one is
        // rejected, not applied.
        let mut bad = proposal(&s1, 1, "c");
        bad.delta.as_mut().unwrap().to_version = 5;
        assert!(matches!(decide(&s1, &bad), Err(Outcome::Invalid(_))));
        bad.delta = None;
        assert!(matches!(decide(&s1, &bad), Err(Outcome::Invalid(_))));
    }

    #[test]
    fn parses_store_urls_with_precise_errors() {
        let c =
            KafkaConfig::from_url("kafka://127.0.0.1:9092,h2:9093/switchyard.config", 10).unwrap();
        assert_eq!(c.bootstrap, "127.0.0.1:9092,h2:9093");
        assert_eq!(c.topic, "switchyard.config");
        for (url, want) in [
            ("http://h:1/t", "must start with kafka://"),
            ("kafka://h:1", "must name a topic"),
            ("kafka:///t", "no bootstrap server"),
            ("kafka://h/t", "is not HOST:PORT"),
            ("kafka://h:0/t", "is not HOST:PORT"),
            ("kafka://h:1/", "topic name is empty"),
            ("kafka://h:1/a b", "contains ' '"),
        ] {
            let e = KafkaConfig::from_url(url, 10).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
