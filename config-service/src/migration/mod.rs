//! The migration coordinator: moves a logical topic to another cluster under live traffic.
//!
//! A migration goes PREPARE → SWITCH → SEALED → DRAIN → COMPLETE (or, aborted before the seal,
//! ABORTING → ABORTED):
//!
//! 1. **PREPARE** — [`Coordinator::start`] checks the move, creates the destination topic with
//!    the source's partition count and topic configs (or checks an existing one: same partition
//!    count, empty), records the destination's end offsets, and persists the migration.
//! 2. **SWITCH** — one compare-and-set write re-routes the topic. Every SDK producer holds new
//!    sends to it, flushes what is in flight to the source, switches and releases the held sends
//!    in order; it acknowledges by reporting the destination in its status.
//! 3. **SEALED** — once every live producer of the topic reports the destination (or an
//!    operator forces it with [`Coordinator::advance`]), the source's end offsets are recorded.
//! 4. **DRAIN** — every SDK consumer group reads the source until the group has committed it to
//!    the end before it reads the destination; it acknowledges by no longer reporting the source.
//! 5. **COMPLETE** — every group drained (or the operator forced it). Records that reached the
//!    source after the seal (a producer cut off from the service) are counted as late writes.
//!
//! **Abort** (PREPARE or SWITCH only): one write routes the topic back to the source with a
//! marker (`migrating_from.aborted`, `hold_sends`) naming the abandoned destination. SDK
//! producers flush what is in flight to the destination, switch back and hold new sends; SDK
//! consumer groups — which have not read the destination yet, since before the seal they
//! drain the source first — leave it without reading it. Once every live producer reports the
//! source at the abort's version, the coordinator copies what was written to the destination
//! back to the same partitions of the source (after every record written there before), then
//! releases the producers (`hold_sends` cleared). Per key, records then stay in write order on
//! the source and each is read once. Once no group reports the destination, the marker is
//! cleared: ABORTED. An operator can force the release (without the copy when the destination
//! cannot be read) and the end. Routing the topic back directly would let a group read the
//! destination's records before the source's older ones it had not read yet.
//!
//! The service drives each migration from the clients' status reports: a background task
//! re-evaluates every active migration on each report and on a short tick. Every phase change
//! is persisted before it is acted on (a file next to the version log for the file store), so a
//! restarted service resumes where it stopped. After a (re)start the client inventory is empty
//! until clients report again; no migration advances during the first `client_grace` of the
//! service's life, so an empty inventory never looks like "every producer switched".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message as _;
use switchyard_proto::v1::change::Op;
use switchyard_proto::v1::{
    ApplyRequest, Change, ClientStatus, Cluster, ListMigrationsRequest, MigratingFrom, Migration,
    MigrationLog, MigrationPhase, MigrationRef, StartMigrationRequest, Topic,
};
use switchyard_proto::validate::{Errors, ValidationError};
use tokio::sync::{Notify, watch};

#[cfg(test)]
mod model;
pub mod step;

use step::{AbortAction, Action, Marker, Observed};

use crate::clients::unix_ms;
use crate::error::ServiceError;
use crate::movetopic::{self, Kafka, MoveError, SourceGroup};
use crate::service::ConfigService;

/// Terminal migrations kept in the list (and the file) besides the active ones.
const KEEP_FINISHED: usize = 200;

/// How often DRAIN lists every consumer group of the source cluster (a group that starts
/// reading the source late is found within this), and re-checks the groups still draining.
const GROUP_SCAN: Duration = Duration::from_secs(30);
const GROUP_RECHECK: Duration = Duration::from_secs(2);

/// A client of the inventory: (client id, instance id).
type ClientKey = (String, String);

/// How often the set of live clients is written down (when it changed), for a restart.
const KNOWN_CLIENTS_EVERY: Duration = Duration::from_secs(1);

/// How often a COMPLETE migration's source is looked at for late writes.
const SOURCE_WATCH_EVERY: Duration = Duration::from_secs(2);

/// Most COMPLETE sources looked at in one round of the coordinator (the longest-unwatched
/// first), so that many watched sources never delay the steps of running migrations.
const SOURCE_WATCH_PER_ROUND: usize = 4;

/// What DRAIN knows of the consumer groups on a migration's source cluster.
#[derive(Debug, Default)]
struct GroupScan {
    running: bool,
    /// When the last full scan (every group of the cluster) finished.
    full: Option<Instant>,
    /// When the last re-check of the draining groups finished.
    recheck: Option<Instant>,
    groups: BTreeMap<String, SourceGroup>,
    error: Option<String>,
    /// The source cluster cannot list its groups (librdkafka's mock cluster): only the groups
    /// that report are waited for.
    unsupported: bool,
}

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct MigrationConfig {
    /// No migration advances until the service has been up this long, so every live client
    /// has reported at least once (longer than the SDK's status interval, 10 s by default).
    pub client_grace: Duration,
    /// How often active migrations are re-evaluated without a client report.
    pub tick: Duration,
    /// How long after COMPLETE the source stays watched: records written to it (a producer
    /// cut off from the service) are copied to the destination until then, or until an
    /// operator retires the source (`move-topic --retire-source ID`).
    pub source_watch: Duration,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        Self {
            client_grace: Duration::from_secs(15),
            tick: Duration::from_millis(250),
            source_watch: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where migrations are persisted.
#[derive(Debug, Clone)]
pub enum Persist {
    /// Nowhere (memory store).
    Memory,
    /// This file (replaced atomically on every change).
    File(PathBuf),
    /// Records of a compacted topic of the replicated store (key [`MIGRATIONS_KEY`], and the
    /// live clients under [`KNOWN_CLIENTS_KEY`]), replaced whole on every change; so losing the
    /// coordinator's host loses no move: a coordinator started on another replica takes them
    /// up. With what the topic held when opened.
    Kafka {
        /// The topic.
        records: Arc<crate::store::KeyedRecords>,
        /// The newest [`MIGRATIONS_KEY`] record when opened.
        migrations: Option<Vec<u8>>,
        /// The newest [`KNOWN_CLIENTS_KEY`] record when opened.
        known_clients: Option<Vec<u8>>,
        /// A migrations file of an earlier run (`--data-dir`), taken up when the topic has no
        /// record yet.
        legacy_file: Option<PathBuf>,
    },
}

/// Key of the migrations record with [`Persist::Kafka`].
pub const MIGRATIONS_KEY: &str = "migrations";
/// Key of the live clients record with [`Persist::Kafka`].
pub const KNOWN_CLIENTS_KEY: &str = "known-clients";

/// The coordinator of one config service.
pub struct Coordinator {
    svc: ConfigService,
    persist: Persist,
    cfg: MigrationConfig,
    started: Instant,
    list: Mutex<BTreeMap<String, Migration>>,
    /// Serialises phase changes (start, advance, abort, the background steps).
    step: tokio::sync::Mutex<()>,
    kafka: Mutex<BTreeMap<String, (Cluster, Kafka)>>,
    /// Per migration in DRAIN (by id): the groups with committed offsets on its source.
    scans: Arc<Mutex<HashMap<String, GroupScan>>>,
    /// Migrations whose copies (late writes, copy-back) were checked against the destination
    /// since this coordinator started (see `movetopic::mirror`'s `scan_from`), by id and kind.
    copies_checked: Mutex<BTreeSet<(String, &'static str)>>,
    /// COMPLETE migrations whose source is still watched: when it was last looked at.
    watched: Mutex<HashMap<String, Instant>>,
    /// The clients live when the previous run of the service last wrote them down: once each
    /// has reported again, the start-up grace ends early.
    known_before: BTreeSet<ClientKey>,
    /// What was last written down, and when.
    known_written: Mutex<(BTreeSet<ClientKey>, Option<Instant>)>,
    /// Serialises writes of the migrations record, each taken from the list inside it, so a
    /// slower write never overwrites a newer one.
    save_mu: tokio::sync::Mutex<()>,
    wake: Notify,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("migrations", &self.list.lock().len())
            .finish()
    }
}

fn phase(m: &Migration) -> MigrationPhase {
    MigrationPhase::try_from(m.phase).unwrap_or(MigrationPhase::Unspecified)
}

/// The phase's lower-case name (`switch`, `drain`…).
pub fn phase_name(p: MigrationPhase) -> &'static str {
    match p {
        MigrationPhase::Unspecified => "unspecified",
        MigrationPhase::Prepare => "prepare",
        MigrationPhase::Switch => "switch",
        MigrationPhase::Sealed => "sealed",
        MigrationPhase::Drain => "drain",
        MigrationPhase::Complete => "complete",
        MigrationPhase::Aborted => "aborted",
        MigrationPhase::Aborting => "aborting",
    }
}

/// Whether a migration in phase `p` still needs the coordinator.
pub fn is_active(p: MigrationPhase) -> bool {
    !matches!(
        p,
        MigrationPhase::Complete | MigrationPhase::Aborted | MigrationPhase::Unspecified
    )
}

/// One line describing how far `m` has got.
pub fn progress_line(m: &Migration) -> String {
    let p = phase(m);
    if p == MigrationPhase::Aborting
        || (p == MigrationPhase::Aborted && m.copied_back_offsets.len() as i32 == m.partitions)
    {
        return abort_line(m);
    }
    let mut s = format!(
        "{}: producers switched {}/{} · consumer groups drained {}/{}",
        phase_name(p).to_uppercase(),
        m.producers_switched,
        m.producers,
        m.groups.len() - m.groups_draining.len(),
        m.groups.len()
    );
    if !m.groups_draining.is_empty() {
        let named: Vec<String> = m
            .groups_draining
            .iter()
            .map(|g| match m.groups_behind.get(g) {
                Some(n) if *n > 0 => format!("{g} ({n} behind)"),
                _ => g.clone(),
            })
            .collect();
        s.push_str(&format!(" (draining: {})", named.join(", ")));
    }
    if !m.ignored_groups.is_empty() {
        s.push_str(&format!(" · released: {}", m.ignored_groups.join(", ")));
    }
    if m.clients_behind > 0 {
        s.push_str(&format!(
            " · {} client(s) not on the new version yet",
            m.clients_behind
        ));
    }
    if m.late_writes > 0 {
        s.push_str(&format!(
            " · {} late write(s) to the source, {} copied",
            m.late_writes, m.mirrored
        ));
    }
    if p == MigrationPhase::Complete {
        s.push_str(if m.source_retired {
            " · source retired"
        } else {
            " · source watched for late writes"
        });
    }
    if !m.note.is_empty() {
        s.push_str(&format!(" · {}", m.note));
    }
    s
}

/// The progress of an abort: producers back on the source (holding sends), records copied
/// back, consumer groups still subscribed to the abandoned destination.
fn abort_line(m: &Migration) -> String {
    let mut s = format!(
        "{}: producers back on the source {}/{} · copied back {}{} · consumer groups off the \
         destination {}/{}",
        phase_name(phase(m)).to_uppercase(),
        m.producers_switched,
        m.producers,
        m.copied_back,
        if m.release_version > 0 {
            " · sends released"
        } else {
            " · sends held"
        },
        m.groups.len() - m.groups_draining.len(),
        m.groups.len()
    );
    if !m.groups_draining.is_empty() {
        s.push_str(&format!(" (on it: {})", m.groups_draining.join(", ")));
    }
    if m.clients_behind > 0 {
        s.push_str(&format!(
            " · {} client(s) not on the abort's version yet",
            m.clients_behind
        ));
    }
    if !m.note.is_empty() {
        s.push_str(&format!(" · {}", m.note));
    }
    s
}

impl Coordinator {
    /// A coordinator for `svc`, with the migrations persisted at `persist` loaded.
    pub fn open(
        svc: ConfigService,
        persist: Persist,
        cfg: MigrationConfig,
    ) -> anyhow::Result<Arc<Self>> {
        let mut list = BTreeMap::new();
        let read_file =
            |path: &Path, list: &mut BTreeMap<String, Migration>| match std::fs::read(path) {
                Ok(bytes) => {
                    let log = MigrationLog::decode(bytes.as_slice()).map_err(|e| {
                        anyhow::anyhow!("{} is not a migrations file: {e}", path.display())
                    })?;
                    for m in log.migrations {
                        list.insert(m.id.clone(), m);
                    }
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
            };
        let known_before = match &persist {
            Persist::File(path) => {
                read_file(path, &mut list)?;
                parse_known_clients(
                    &std::fs::read_to_string(known_clients_path(path)).unwrap_or_default(),
                )
            }
            Persist::Memory => BTreeSet::new(),
            Persist::Kafka {
                records,
                migrations,
                known_clients,
                legacy_file,
            } => {
                match migrations {
                    Some(bytes) => {
                        let log = MigrationLog::decode(bytes.as_slice()).map_err(|e| {
                            anyhow::anyhow!(
                                "the {MIGRATIONS_KEY:?} record of {} is not a migrations record: {e}",
                                records.topic()
                            )
                        })?;
                        for m in log.migrations {
                            list.insert(m.id.clone(), m);
                        }
                    }
                    None => {
                        if let Some(path) = legacy_file {
                            read_file(path, &mut list)?;
                            if !list.is_empty() {
                                tracing::info!(file = %path.display(), topic = records.topic(), migrations = list.len(), "taking up the migrations file of an earlier run");
                            }
                        }
                    }
                }
                parse_known_clients(&String::from_utf8_lossy(
                    known_clients.as_deref().unwrap_or_default(),
                ))
            }
        };
        let active = list.values().filter(|m| is_active(phase(m))).count();
        if active > 0 {
            tracing::info!(active, "resuming migrations");
        }
        Ok(Arc::new(Self {
            svc,
            persist,
            cfg,
            started: Instant::now(),
            list: Mutex::new(list),
            step: tokio::sync::Mutex::new(()),
            kafka: Mutex::new(BTreeMap::new()),
            scans: Arc::default(),
            copies_checked: Mutex::new(BTreeSet::new()),
            watched: Mutex::new(HashMap::new()),
            known_before,
            known_written: Mutex::new((BTreeSet::new(), None)),
            save_mu: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            changes: watch::channel(0).0,
        }))
    }

    /// Bumped on every change of any migration (phase or progress).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Migrations per phase name.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for m in self.list.lock().values() {
            *out.entry(phase_name(phase(m))).or_default() += 1;
        }
        out
    }

    /// Migrations, newest first.
    pub fn list(&self, req: &ListMigrationsRequest) -> Result<Vec<Migration>, ServiceError> {
        let l = self.list.lock();
        if !req.id.is_empty() {
            return match l.get(&req.id) {
                Some(m) => Ok(vec![m.clone()]),
                None => Err(ServiceError::NotFound(format!(
                    "no migration with id {:?}",
                    req.id
                ))),
            };
        }
        let mut v: Vec<Migration> = l
            .values()
            .filter(|m| !req.active_only || is_active(phase(m)))
            .cloned()
            .collect();
        v.sort_by(|a, b| (b.created_unix_ms, &b.id).cmp(&(a.created_unix_ms, &a.id)));
        Ok(v)
    }

    /// Runs until `shutdown`: re-evaluates active migrations on every client report, every
    /// wake-up and every tick.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut reports = self.svc.clients().subscribe();
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                r = reports.changed() => if r.is_err() { break },
                _ = shutdown.wait_for(|v| *v) => break,
            }
            self.step_all().await;
            self.write_known_clients().await;
        }
        self.svc.set_coordinator(None);
    }

    /// Writes down the live clients (at most every [`KNOWN_CLIENTS_EVERY`], when they changed),
    /// so that after a restart the grace can end as soon as each has reported again.
    async fn write_known_clients(&self) {
        if matches!(self.persist, Persist::Memory) {
            return;
        }
        let keys = self.svc.clients().keys();
        {
            let mut w = self.known_written.lock();
            if w.0 == keys || w.1.is_some_and(|t| t.elapsed() < KNOWN_CLIENTS_EVERY) {
                return;
            }
            *w = (keys.clone(), Some(Instant::now()));
        }
        let text: String = keys.iter().map(|(c, i)| format!("{c}\t{i}\n")).collect();
        let ok = match &self.persist {
            Persist::Memory => true,
            Persist::File(path) => {
                let path = known_clients_path(path);
                let r =
                    tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
                        .await;
                matches!(r, Ok(Ok(())))
            }
            Persist::Kafka { records, .. } => records
                .write(KNOWN_CLIENTS_KEY, text.into_bytes())
                .await
                .is_ok(),
        };
        if !ok {
            tracing::warn!("could not write down the live clients");
        }
    }

    async fn step_all(&self) {
        let _g = self.step.lock().await;
        self.adopt_from_config().await;
        let ids: Vec<String> = self
            .list
            .lock()
            .values()
            .filter(|m| is_active(phase(m)))
            .map(|m| m.id.clone())
            .collect();
        for id in ids {
            let Some(mut m) = self.list.lock().get(&id).cloned() else {
                continue;
            };
            let before = m.clone();
            let persist = self.step_one(&mut m).await;
            if !is_active(phase(&m)) {
                self.scans.lock().remove(&m.id);
            }
            if m != before {
                self.store(m, persist).await;
            }
        }
        self.watch_sources().await;
    }

    /// After COMPLETE: copies what still reaches a source (a producer cut off from the service
    /// writes there) to the destination, until the source is retired by an operator or after
    /// [`MigrationConfig::source_watch`].
    async fn watch_sources(&self) {
        let due: Vec<Migration> = {
            let l = self.list.lock();
            let mut watched = self.watched.lock();
            let mut due: Vec<(Option<Instant>, &Migration)> = l
                .values()
                .filter(|m| phase(m) == MigrationPhase::Complete && !m.source_retired)
                .map(|m| (watched.get(&m.id).copied(), m))
                .filter(|(t, _)| t.is_none_or(|t| t.elapsed() >= SOURCE_WATCH_EVERY))
                .collect();
            due.sort_by_key(|(t, _)| *t);
            due.truncate(SOURCE_WATCH_PER_ROUND);
            let now = Instant::now();
            due.into_iter()
                .map(|(_, m)| {
                    watched.insert(m.id.clone(), now);
                    m.clone()
                })
                .collect()
        };
        for mut m in due {
            let before = m.clone();
            let over = unix_ms() - m.finished_unix_ms
                >= i64::try_from(self.cfg.source_watch.as_millis()).unwrap_or(i64::MAX);
            if self.mirror_late_writes(&mut m).await && over {
                m.source_retired = true;
                m.source_retired_unix_ms = unix_ms();
                tracing::info!(id = %m.id, topic = %m.topic, late_writes = m.late_writes, "source watch window over; source retired");
            }
            if m != before {
                self.store(m, true).await;
            }
        }
    }

    /// Totals over the migrations kept: records that reached a source after its seal, those
    /// copied to the destination, and COMPLETE migrations whose source is still watched.
    pub fn late_write_totals(&self) -> (i64, i64, usize) {
        let l = self.list.lock();
        (
            l.values().map(|m| m.late_writes).sum(),
            l.values().map(|m| m.mirrored).sum(),
            l.values()
                .filter(|m| phase(m) == MigrationPhase::Complete && !m.source_retired)
                .count(),
        )
    }

    /// The configuration is the source of truth of where a move stands: a topic that carries
    /// `migrating_from` is mid-move whatever the migration records say. A record that is
    /// missing (the coordinator's host lost its file) is rebuilt from the topic's marker, and a
    /// finished one (a crash or an error between a configuration write and the record's) is
    /// resumed: SWITCH before the seal, DRAIN after it, ABORTING for an abort's marker. So a
    /// crash or a lost acknowledgement between two steps never wedges a move.
    async fn adopt_from_config(&self) {
        let state = self.svc.store().latest();
        let mut adopted = Vec::new();
        for t in state.topics.values() {
            let Some(f) = &t.migrating_from else {
                continue;
            };
            let t = switchyard_proto::state::normalize_topic(t.clone());
            let existing = self.list.lock().get(&f.migration_id).cloned();
            if existing.as_ref().is_some_and(|m| is_active(phase(m))) {
                continue;
            }
            let resumed = existing.is_some();
            let mut m = existing.unwrap_or_else(|| Migration {
                id: f.migration_id.clone(),
                topic: t.name.clone(),
                partitions: t.partitions.max(
                    f.destination_start_offsets
                        .len()
                        .max(f.sealed_offsets.len()) as i32,
                ),
                destination_start_offsets: f.destination_start_offsets.clone(),
                author: "coordinator".into(),
                comment: "rebuilt from the configuration (the migration record was lost)".into(),
                created_unix_ms: unix_ms(),
                ..Default::default()
            });
            let (here, there) = (
                (t.cluster.clone(), t.physical.clone()),
                (f.cluster.clone(), f.physical.clone()),
            );
            // An abort's marker names the abandoned destination; a move's names the source.
            let ((fc, fp), (tc, tp)) = if f.aborted {
                (here, there)
            } else {
                (there, here)
            };
            (m.from_cluster, m.from_physical, m.to_cluster, m.to_physical) = (fc, fp, tc, tp);
            m.finished_unix_ms = 0;
            let marker = if f.aborted {
                Marker::Aborting { held: f.hold_sends }
            } else {
                Marker::Moving {
                    sealed: (!f.sealed_offsets.is_empty()).then(|| f.sealed_offsets.clone()),
                }
            };
            let Some(resume) = step::resume_phase(&marker) else {
                continue;
            };
            m.phase = resume as i32;
            if resume == MigrationPhase::Aborting {
                if m.abort_version == 0 {
                    m.abort_version = state.version;
                }
                if !f.hold_sends && m.release_version == 0 {
                    m.release_version = state.version;
                }
            } else if resume == MigrationPhase::Drain {
                m.sealed_offsets.clone_from(&f.sealed_offsets);
                if m.mirrored_offsets.len() != f.sealed_offsets.len() {
                    m.mirrored_offsets.clone_from(&f.sealed_offsets);
                }
            } else {
                m.sealed_offsets.clear();
            }
            if m.switch_version == 0 {
                m.switch_version = state.version;
            }
            m.note = if resumed {
                "resumed: the topic still carries this migration".into()
            } else {
                "rebuilt from the topic's migration marker".into()
            };
            tracing::warn!(id = %m.id, topic = %m.topic, phase = phase_name(phase(&m)), resumed, "migration taken up again from the configuration");
            adopted.push(m);
        }
        for m in adopted {
            self.store(m, true).await;
        }
    }

    /// Stores `m`; writes the migrations record when `persist` (phase changes), and tells
    /// listeners.
    async fn store(&self, m: Migration, persist: bool) {
        {
            let mut l = self.list.lock();
            l.insert(m.id.clone(), m);
            // Keep every active migration and the newest finished ones.
            let mut finished: Vec<(i64, String)> = l
                .values()
                .filter(|m| !is_active(phase(m)))
                .map(|m| (m.created_unix_ms, m.id.clone()))
                .collect();
            if finished.len() > KEEP_FINISHED {
                finished.sort();
                for (_, id) in &finished[..finished.len() - KEEP_FINISHED] {
                    l.remove(id);
                }
            }
        }
        if persist {
            self.save().await;
        }
        self.changes.send_modify(|v| *v += 1);
    }

    /// Writes the migrations record (the file, or the replicated store's topic) from the list
    /// as it is now.
    pub async fn save(&self) {
        let _w = self.save_mu.lock().await;
        let bytes = MigrationLog {
            migrations: self.list.lock().values().cloned().collect(),
        }
        .encode_to_vec();
        let r = match &self.persist {
            Persist::Memory => Ok(()),
            Persist::File(path) => {
                let path = path.clone();
                match tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Persist::Kafka { records, .. } => records
                .write(MIGRATIONS_KEY, bytes)
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "could not persist migrations");
        }
    }

    /// Validates and starts a migration: prepares the destination and re-routes the topic
    /// before it returns (a dry run only checks and returns the plan).
    pub async fn start(&self, req: StartMigrationRequest) -> Result<Migration, ServiceError> {
        let mut errs = Errors::default();
        if req.topic.is_empty() {
            errs.push("topic", "is required");
        }
        if req.to_cluster.is_empty() {
            errs.push("to_cluster", "is required");
        }
        switchyard_proto::validate::check_meta(&mut errs, &req.author, &req.comment);
        errs.finish()?;
        let _g = self.step.lock().await;
        if let Some(m) = self
            .list
            .lock()
            .values()
            .find(|m| m.topic == req.topic && is_active(phase(m)))
        {
            return Err(ServiceError::Precondition(format!(
                "migration {} of topic {:?} is in phase {}; let it finish or abort it first",
                m.id,
                m.topic,
                phase_name(phase(m)).to_uppercase()
            )));
        }
        let state = self.svc.store().latest();
        let ends = movetopic::ends(&state, &req.topic, &req.to_cluster, &req.to_topic)
            .map_err(move_error)?;
        let prep = movetopic::prepare(
            &ends,
            req.allow_partition_mismatch,
            req.allow_nonempty_destination,
            req.dry_run,
        )
        .await
        .map_err(move_error)?;
        let now = unix_ms();
        let mut m = Migration {
            id: if req.dry_run {
                String::new()
            } else {
                self.new_id(now)
            },
            topic: ends.topic.name.clone(),
            from_cluster: ends.from.name.clone(),
            from_physical: ends.topic.physical.clone(),
            to_cluster: ends.to.name.clone(),
            to_physical: ends.to_physical.clone(),
            partitions: prep.partitions,
            phase: MigrationPhase::Prepare as i32,
            created_destination: prep.created,
            configs: prep.configs.into_iter().collect(),
            destination_start_offsets: prep.destination_start,
            author: req.author.clone(),
            comment: req.comment.clone(),
            created_unix_ms: now,
            allow_partition_mismatch: req.allow_partition_mismatch,
            allow_nonempty_destination: req.allow_nonempty_destination,
            ..Default::default()
        };
        if req.dry_run {
            return Ok(m);
        }
        // Persist the intent first: a restart between here and the route change resumes it.
        self.store(m.clone(), true).await;
        match self.switch_route(&mut m).await {
            Ok(()) => {
                tracing::info!(id = %m.id, topic = %m.topic, to = %m.to_cluster, version = m.switch_version, "migration switched");
                self.store(m.clone(), true).await;
                self.wake.notify_one();
                Ok(m)
            }
            Err(e) if !is_definite(&e) => {
                // The write may have taken effect: the migration stays in PREPARE, and the
                // background step finds the route changed (or changes it).
                m.note = format!("the route change did not complete ({e}); retrying");
                self.store(m.clone(), true).await;
                self.wake.notify_one();
                Err(ServiceError::Unavailable(format!(
                    "migration {}: the route change did not complete ({e}); it stays in PREPARE \
                     and is retried (switchyard move-topic --abort {} abandons it)",
                    m.id, m.id
                )))
            }
            Err(e) => {
                m.phase = MigrationPhase::Aborted as i32;
                m.note = format!("the route change failed: {e}");
                m.finished_unix_ms = unix_ms();
                self.store(m, true).await;
                Err(e)
            }
        }
    }

    fn new_id(&self, now: i64) -> String {
        let l = self.list.lock();
        let mut n = now;
        loop {
            let id = format!("mig-{n:x}");
            if !l.contains_key(&id) {
                return id;
            }
            n += 1;
        }
    }

    /// Rewrites logical topic `topic` with one compare-and-set write, retried (at most five
    /// times) when another write got in between. `decide` sees the current version and the
    /// topic as configured in it (normalised; `None` when deleted) and returns the topic to
    /// write, `None` when nothing needs writing, or an error. Returns the version written, or
    /// `None` when nothing was.
    async fn write_topic(
        &self,
        topic: &str,
        author: &str,
        comment: &str,
        mut decide: impl FnMut(u64, Option<Topic>) -> Result<Option<Topic>, ServiceError>,
    ) -> Result<Option<u64>, ServiceError> {
        for _ in 0..5 {
            let state = self.svc.store().latest();
            let current = state
                .topics
                .get(topic)
                .cloned()
                .map(switchyard_proto::state::normalize_topic);
            let Some(next) = decide(state.version, current)? else {
                return Ok(None);
            };
            match self
                .svc
                .apply_as_coordinator(ApplyRequest {
                    expected_version: state.version,
                    changes: vec![Change {
                        op: Some(Op::UpsertTopic(next)),
                    }],
                    dry_run: false,
                    author: author.to_string(),
                    comment: comment.to_string(),
                })
                .await
            {
                Ok(r) => return Ok(Some(r.version)),
                Err(ServiceError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ServiceError::Precondition(format!(
            "the configuration kept changing; five compare-and-set writes of topic {topic:?} \
             lost"
        )))
    }

    /// Routes the topic to the destination with one compare-and-set write (PREPARE → SWITCH),
    /// as long as the topic is still where the migration found it.
    async fn switch_route(&self, m: &mut Migration) -> Result<(), ServiceError> {
        let comment = if m.comment.is_empty() {
            format!(
                "migration {}: {} {}/{} -> {}/{}",
                m.id, m.topic, m.from_cluster, m.from_physical, m.to_cluster, m.to_physical
            )
        } else {
            m.comment.clone()
        };
        let mut already = None;
        let written = self
            .write_topic(&m.topic, &m.author, &comment, |version, t| {
                let Some(t) = t else {
                    return Err(ServiceError::Precondition(format!(
                        "topic {:?} was deleted (version {version})",
                        m.topic
                    )));
                };
                if t.cluster == m.to_cluster && t.physical == m.to_physical {
                    // Already switched (a restart after the write, before it was recorded).
                    already = Some(version);
                    return Ok(None);
                }
                if t.cluster != m.from_cluster || t.physical != m.from_physical {
                    return Err(ServiceError::Precondition(format!(
                        "topic {:?} moved to {}/{} outside this migration (version {version})",
                        m.topic, t.cluster, t.physical
                    )));
                }
                Ok(Some(Topic {
                    cluster: m.to_cluster.clone(),
                    physical: m.to_physical.clone(),
                    migrating_from: Some(MigratingFrom {
                        migration_id: m.id.clone(),
                        cluster: m.from_cluster.clone(),
                        physical: m.from_physical.clone(),
                        sealed_offsets: Vec::new(),
                        aborted: false,
                        hold_sends: false,
                        destination_start_offsets: m.destination_start_offsets.clone(),
                    }),
                    ..t
                }))
            })
            .await?;
        m.switch_version = written.or(already).unwrap_or_default();
        m.phase = MigrationPhase::Switch as i32;
        m.switched_unix_ms = unix_ms();
        m.note.clear();
        Ok(())
    }

    /// The client reports that count now.
    fn reports(&self) -> Vec<ClientStatus> {
        let v = self.svc.store().latest().version;
        self.svc
            .clients()
            .list("", v)
            .into_iter()
            .filter_map(|c| c.status)
            .collect()
    }

    fn refresh(&self, m: &mut Migration) {
        let aborting = phase(m) == MigrationPhase::Aborting;
        // An abort moves the producers back and the groups off the destination: the same
        // summary with the two ends swapped, counted from the abort's version.
        let view = if aborting {
            Migration {
                topic: m.topic.clone(),
                from_cluster: m.to_cluster.clone(),
                from_physical: m.to_physical.clone(),
                to_cluster: m.from_cluster.clone(),
                to_physical: m.from_physical.clone(),
                switch_version: m.abort_version,
                ..Default::default()
            }
        } else {
            m.clone()
        };
        let p = movetopic::summarise(self.reports().iter(), &view);
        m.producers = p.producers as u32;
        m.producers_switched = p.producers_switched as u32;
        m.groups = p.groups.into_iter().collect();
        m.groups_draining = p.groups_draining.into_iter().collect();
        m.clients_behind = p.clients_behind as u32;
        let waiting: Vec<String> = p.producers_waiting.into_iter().collect();
        m.note = match phase(m) {
            MigrationPhase::Switch if !waiting.is_empty() => {
                format!("waiting for producer(s) {} to switch", abbreviate(&waiting))
            }
            MigrationPhase::Aborting if !waiting.is_empty() && m.release_version == 0 => {
                format!(
                    "waiting for producer(s) {} to switch back",
                    abbreviate(&waiting)
                )
            }
            _ => String::new(),
        };
    }

    /// Whether every live client has reported since the service started: the start-up grace
    /// passed, or every client live before the restart (written down) has reported again.
    fn settled(&self) -> bool {
        if self.started.elapsed() >= self.cfg.client_grace {
            return true;
        }
        if self.known_before.is_empty() {
            return false;
        }
        let now = self.svc.clients().keys();
        self.known_before.iter().all(|k| now.contains(k))
    }

    /// Source end offsets of `m`.
    async fn source_ends(&self, m: &Migration) -> Result<Vec<i64>, String> {
        self.end_offsets(&m.from_cluster, &m.from_physical, m.partitions)
            .await
    }

    /// End offsets of `physical` (with `partitions` partitions) on cluster `cluster`.
    async fn end_offsets(
        &self,
        cluster: &str,
        physical: &str,
        partitions: i32,
    ) -> Result<Vec<i64>, String> {
        let state = self.svc.store().latest();
        let Some(c) = state.clusters.get(cluster).cloned() else {
            return Err(format!("cluster {cluster} is no longer configured"));
        };
        let admin = {
            let mut k = self.kafka.lock();
            match k.get(&c.name) {
                Some((seen, a)) if *seen == c => a.clone(),
                _ => {
                    let a = movetopic::kafka_admin(&c).map_err(|e| format!("{e:#}"))?;
                    k.insert(c.name.clone(), (c.clone(), a.clone()));
                    a
                }
            }
        };
        movetopic::end_offsets(&admin, physical, partitions)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// One step of an active migration. Returns whether the change must be persisted.
    async fn step_one(&self, m: &mut Migration) -> bool {
        match phase(m) {
            MigrationPhase::Prepare => {
                // Resumed after a restart between the intent and the route change.
                let state = self.svc.store().latest();
                let ends = movetopic::ends(&state, &m.topic, &m.to_cluster, &m.to_physical);
                let prep = match &ends {
                    Ok(e) if e.topic.cluster == m.from_cluster => Some(
                        movetopic::prepare(
                            e,
                            m.allow_partition_mismatch,
                            // An existing destination this migration created is expected.
                            m.allow_nonempty_destination,
                            false,
                        )
                        .await,
                    ),
                    _ => None,
                };
                if let Some(Err(e)) = prep {
                    m.note = format!("preparing the destination: {e}");
                    return false;
                }
                match self.switch_route(m).await {
                    Ok(()) => true,
                    Err(e) if !is_definite(&e) => {
                        m.note = format!("the route change did not complete ({e}); retrying");
                        false
                    }
                    Err(e) => {
                        m.phase = MigrationPhase::Aborted as i32;
                        m.note = format!("the route change failed: {e}");
                        m.finished_unix_ms = unix_ms();
                        true
                    }
                }
            }
            p @ (MigrationPhase::Switch | MigrationPhase::Sealed | MigrationPhase::Drain) => {
                let o = self.observe(m, false).await;
                let a = step::step(p, &o);
                self.act(m, a, false).await
            }
            MigrationPhase::Aborting => self.step_abort(m, false).await,
            MigrationPhase::Complete | MigrationPhase::Aborted | MigrationPhase::Unspecified => {
                false
            }
        }
    }

    /// Starts reading the consumer groups on `m`'s source cluster in the background, unless a
    /// read is running or was done recently: every group (a full scan) every [`GROUP_SCAN`],
    /// the groups still draining every [`GROUP_RECHECK`].
    fn scan_source_groups(&self, m: &Migration) {
        let mut scans = self.scans.lock();
        let s = scans.entry(m.id.clone()).or_default();
        if s.running {
            return;
        }
        let full = s.full.is_none_or(|t| t.elapsed() >= GROUP_SCAN);
        let pending: BTreeSet<String> = s
            .groups
            .iter()
            .filter(|(g, x)| !x.drained && !m.ignored_groups.contains(g))
            .map(|(g, _)| g.clone())
            .collect();
        let recheck = !pending.is_empty() && s.recheck.is_none_or(|t| t.elapsed() >= GROUP_RECHECK);
        if !full && !recheck {
            return;
        }
        let Some(cluster) = self
            .svc
            .store()
            .latest()
            .clusters
            .get(&m.from_cluster)
            .cloned()
        else {
            s.error = Some(format!(
                "cluster {} is no longer configured",
                m.from_cluster
            ));
            return;
        };
        s.running = true;
        let (scans, id) = (self.scans.clone(), m.id.clone());
        let (topic, sealed) = (m.from_physical.clone(), m.sealed_offsets.clone());
        tokio::task::spawn_blocking(move || {
            let only = (!full).then_some(&pending);
            let r = movetopic::source_groups(&cluster, &topic, &sealed, only);
            let mut scans = scans.lock();
            let Some(s) = scans.get_mut(&id) else {
                return;
            };
            s.running = false;
            match r {
                Ok(None) => {
                    s.unsupported = true;
                    s.full = Some(Instant::now());
                    s.error = None;
                }
                Ok(Some(found)) if full => {
                    s.groups = found;
                    s.full = Some(Instant::now());
                    s.error = None;
                }
                Ok(Some(mut found)) => {
                    for g in pending {
                        match found.remove(&g) {
                            Some(x) => s.groups.insert(g, x),
                            None => s.groups.remove(&g),
                        };
                    }
                    s.recheck = Some(Instant::now());
                    s.error = None;
                }
                Err(e) => {
                    tracing::warn!(id, error = %format!("{e:#}"), "cannot read the consumer groups of a migration's source");
                    s.error = Some(format!("{e:#}"));
                }
            }
        });
    }

    /// Adds the groups found on the source cluster to `m`'s groups (and those not drained yet
    /// to its draining ones), with how far each is behind; leaves out the groups an operator
    /// released. Returns whether a full scan has been done since DRAIN began.
    fn merge_source_groups(&self, m: &mut Migration) -> bool {
        let scans = self.scans.lock();
        let Some(s) = scans.get(&m.id) else {
            return false;
        };
        let mut groups: BTreeSet<String> = m.groups.drain(..).collect();
        let mut draining: BTreeSet<String> = m.groups_draining.drain(..).collect();
        m.groups_behind.clear();
        for (g, x) in &s.groups {
            groups.insert(g.clone());
            m.groups_behind.insert(g.clone(), x.behind);
            if !x.drained {
                draining.insert(g.clone());
            }
        }
        for g in &m.ignored_groups {
            draining.remove(g);
        }
        m.groups = groups.into_iter().collect();
        m.groups_draining = draining.into_iter().collect();
        if let Some(e) = &s.error {
            m.note = format!("reading the consumer groups on the source: {e}");
        } else if s.unsupported && m.note.is_empty() {
            m.note = "the source cluster cannot list its consumer groups: only groups that \
                      report are waited for"
                .into();
        }
        s.full.is_some()
    }

    /// What [`step::step`] decides on for `m` (SWITCH, SEALED or DRAIN): the topic's marker,
    /// the clients' reports and, in DRAIN, the source cluster's groups and late writes (which
    /// it copies on the way).
    async fn observe(&self, m: &mut Migration, forced: bool) -> Observed {
        self.refresh(m);
        let (mut groups_drained, mut late_writes_copied) = (None, true);
        if matches!(phase(m), MigrationPhase::Sealed | MigrationPhase::Drain) {
            late_writes_copied = self.mirror_late_writes(m).await;
            self.scan_source_groups(m);
            if self.merge_source_groups(m) {
                groups_drained = Some(m.groups_draining.is_empty());
            }
        }
        Observed {
            marker: self.marker(m),
            settled: self.settled(),
            producers_switched: m.producers_switched == m.producers,
            clients_behind: m.clients_behind > 0,
            groups_drained,
            late_writes_copied,
            forced,
        }
    }

    /// The topic as the configuration has it now, seen from `m`.
    fn marker(&self, m: &Migration) -> Marker {
        let state = self.svc.store().latest();
        let Some(t) = state.topics.get(&m.topic) else {
            return Marker::Elsewhere;
        };
        let t = switchyard_proto::state::normalize_topic(t.clone());
        let at_destination = t.cluster == m.to_cluster && t.physical == m.to_physical;
        let at_source = t.cluster == m.from_cluster && t.physical == m.from_physical;
        match t.migrating_from.as_ref() {
            Some(f) if f.migration_id == m.id && f.aborted && at_source => {
                Marker::Aborting { held: f.hold_sends }
            }
            Some(f) if f.migration_id == m.id && !f.aborted && at_destination => Marker::Moving {
                sealed: (!f.sealed_offsets.is_empty()).then(|| f.sealed_offsets.clone()),
            },
            None if at_destination => Marker::Done,
            None if at_source => Marker::Back,
            _ => Marker::Elsewhere,
        }
    }

    /// Carries out what [`step::step`] decided. Returns whether `m` must be persisted.
    async fn act(&self, m: &mut Migration, a: Action, forced: bool) -> bool {
        match a {
            Action::Wait(why) => {
                if m.note.is_empty() && !why.is_empty() {
                    m.note = why.into();
                }
                false
            }
            Action::Seal { reuse } => self.seal(m, forced, reuse).await,
            Action::Record(p) => {
                m.phase = p as i32;
                if p == MigrationPhase::Complete {
                    m.finished_unix_ms = unix_ms();
                    m.forced |= forced;
                    tracing::info!(id = %m.id, topic = %m.topic, "migration complete (its completion was written before)");
                }
                true
            }
            Action::Complete => self.complete(m, forced).await,
            Action::Abandon(why) => {
                m.phase = MigrationPhase::Aborted as i32;
                m.note = why.into();
                m.finished_unix_ms = unix_ms();
                true
            }
        }
    }

    /// One step of an abort (ABORTING). Until the release: once every live producer is back on
    /// the source (so none writes to the destination any more, and all hold their sends), copy
    /// what was written to the destination back to the source and release the producers. Then
    /// wait until no consumer group reads the destination, and clear the topic's marker.
    /// `forced` (an operator): release without waiting for producers, and without the copy
    /// when the destination cannot be read; finish without waiting for groups.
    async fn step_abort(&self, m: &mut Migration, forced: bool) -> bool {
        self.refresh(m);
        let state = self.svc.store().latest();
        let o = step::AbortObserved {
            marker: self.marker(m),
            released: m.release_version != 0,
            settled: self.settled(),
            producers_back: m.producers_switched >= m.producers && m.clients_behind == 0,
            groups_left: m.groups_draining.is_empty() && m.clients_behind == 0,
            forced,
        };
        match step::step_abort(&o) {
            AbortAction::Wait(why) => {
                if !why.is_empty() {
                    m.note = why.into();
                }
                false
            }
            AbortAction::Abandon(why) => {
                m.phase = MigrationPhase::Aborted as i32;
                m.note = why.into();
                m.finished_unix_ms = unix_ms();
                true
            }
            AbortAction::RecordReleased => {
                m.release_version = state.version;
                true
            }
            AbortAction::CopyBackAndRelease => {
                match self.copy_back(m).await {
                    Ok(()) => self.truncate_destination(m, &state).await,
                    Err(e) => {
                        m.note =
                            format!("copying the destination's records back to the source: {e}");
                        if !forced {
                            return false;
                        }
                        tracing::error!(id = %m.id, topic = %m.topic, error = %m.note, "abort forced without copying back the destination's records");
                        m.forced = true;
                    }
                }
                let released = self
                    .update_topic(m, "release", |t| {
                        if let Some(f) = t.migrating_from.as_mut() {
                            f.hold_sends = false;
                        }
                    })
                    .await;
                match released {
                    Ok(v) => {
                        m.release_version = v.unwrap_or(state.version);
                        tracing::info!(id = %m.id, topic = %m.topic, copied_back = m.copied_back, "abort: records copied back; producers released");
                        true
                    }
                    Err(e) => {
                        m.note = format!("cannot release the producers: {e}");
                        false
                    }
                }
            }
            a @ (AbortAction::Clear | AbortAction::RecordAborted) => {
                if a == AbortAction::Clear
                    && let Err(e) = self
                        .update_topic(m, "aborted", |t| t.migrating_from = None)
                        .await
                {
                    m.note = format!("cannot clear the migration from the topic: {e}");
                    return false;
                }
                m.phase = MigrationPhase::Aborted as i32;
                m.forced |= forced;
                m.finished_unix_ms = unix_ms();
                tracing::warn!(id = %m.id, topic = %m.topic, copied_back = m.copied_back, "migration aborted");
                true
            }
        }
    }

    /// Deletes the records copied back from the abandoned destination, when everything in it is
    /// this migration's (it created the destination, or found it empty): a retried move then
    /// finds it empty, and nobody reads those records there as well. Best effort: a failure
    /// is logged and noted, and the abort goes on.
    async fn truncate_destination(
        &self,
        m: &mut Migration,
        state: &switchyard_proto::state::State,
    ) {
        // Everything in it is ours when we created it or it was checked empty.
        let ours = m.created_destination || !m.allow_nonempty_destination;
        if !ours || m.copied_back == 0 {
            return;
        }
        let Some(dest) = state.clusters.get(&m.to_cluster) else {
            return;
        };
        if let Err(e) = movetopic::truncate(dest, &m.to_physical, &m.copied_back_offsets).await {
            tracing::warn!(id = %m.id, error = %format!("{e:#}"), "could not delete the copied records from the abandoned destination");
            m.note = format!(
                "the copied records are still in {}/{} (deleting them failed: {e:#})",
                m.to_cluster, m.to_physical
            );
        }
    }

    /// Copies every record written to the destination since the route change to the same
    /// partition of the source, in order; records progress in `m` (persisted).
    async fn copy_back(&self, m: &mut Migration) -> Result<(), String> {
        let ends = self
            .end_offsets(&m.to_cluster, &m.to_physical, m.partitions)
            .await?;
        if m.copied_back_offsets.len() != ends.len() {
            m.copied_back_offsets = if m.destination_start_offsets.len() == ends.len() {
                m.destination_start_offsets.clone()
            } else {
                vec![0; ends.len()]
            };
        }
        let state = self.svc.store().latest();
        let (Some(dest), Some(source)) = (
            state.clusters.get(&m.to_cluster).cloned(),
            state.clusters.get(&m.from_cluster).cloned(),
        ) else {
            return Err("a cluster of the migration is no longer configured".into());
        };
        if m.copy_back_scan_from.len() != ends.len() {
            // Where the first copy will land on the source (recorded before it, so a crash
            // during it is found again).
            m.copy_back_scan_from = self
                .end_offsets(&m.from_cluster, &m.from_physical, m.partitions)
                .await?;
            self.store(m.clone(), true).await;
        }
        let key = (m.id.clone(), "back");
        // `mirror` does a bounded amount of work per call.
        while ends.iter().zip(&m.copied_back_offsets).any(|(e, c)| e > c) {
            let scan = self
                .copies_checked
                .lock()
                .insert(key.clone())
                .then(|| m.copy_back_scan_from.clone());
            let r = match movetopic::mirror(
                &dest,
                &m.to_physical,
                &source,
                &m.from_physical,
                &m.copied_back_offsets,
                &ends,
                &m.id,
                scan.as_deref(),
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    if scan.is_some() {
                        self.copies_checked.lock().remove(&key);
                    }
                    return Err(format!("{e:#}"));
                }
            };
            let n: i64 = r
                .copied
                .iter()
                .zip(&m.copied_back_offsets)
                .map(|(a, b)| a - b)
                .sum();
            m.copied_back += n;
            m.copied_back_offsets = r.copied;
            m.copy_back_scan_from = r.destination_ends;
            self.store(m.clone(), true).await;
            if let Some(e) = r.error {
                return Err(format!("{e:#}"));
            }
            if n == 0 {
                return Err("the copy made no progress".into());
            }
        }
        Ok(())
    }

    /// SWITCH → SEALED: records the source's end offsets and publishes them on the topic, so
    /// consumer groups drain the source up to them (and no further).
    ///
    /// A published seal never moves: when the topic already carries this migration's seal (a
    /// crash or a lost acknowledgement after the write), that seal is taken, not re-read.
    async fn seal(&self, m: &mut Migration, forced: bool, reuse: Option<Vec<i64>>) -> bool {
        let ends = match reuse {
            Some(s) => s,
            None => match self.source_ends(m).await {
                Ok(e) => e,
                Err(e) => {
                    m.note = format!("cannot read the source's end offsets: {e}");
                    return false;
                }
            },
        };
        let published = self
            .update_topic(m, "seal", |t| {
                if let Some(f) = t.migrating_from.as_mut()
                    && f.sealed_offsets.is_empty()
                {
                    f.sealed_offsets.clone_from(&ends);
                }
            })
            .await;
        if let Err(e) = published {
            m.note = format!("cannot publish the seal: {e}");
            return false;
        }
        // Whatever the topic carries now is the seal (another write may have got in first).
        let ends = match self.marker(m) {
            Marker::Moving { sealed: Some(s) } => s,
            _ => ends,
        };
        m.sealed_offsets = ends.clone();
        m.mirrored_offsets = ends;
        m.phase = MigrationPhase::Sealed as i32;
        m.sealed_unix_ms = unix_ms();
        m.forced |= forced;
        m.note.clear();
        tracing::info!(id = %m.id, topic = %m.topic, forced, "migration sealed");
        true
    }

    /// Rewrites the migrating topic with `f` (one compare-and-set write), as long as it is
    /// still routed to the destination and carries this migration's `migrating_from`. A no-op
    /// when `f` changes nothing.
    async fn update_topic(
        &self,
        m: &Migration,
        what: &str,
        f: impl Fn(&mut Topic),
    ) -> Result<Option<u64>, ServiceError> {
        let comment = format!("migration {} {what}: {}", m.id, m.topic);
        // Routed to the destination, or (an abort) back to the source.
        let (cluster, physical) = if phase(m) == MigrationPhase::Aborting {
            (&m.from_cluster, &m.from_physical)
        } else {
            (&m.to_cluster, &m.to_physical)
        };
        self.write_topic(&m.topic, &m.author, &comment, |_, t| {
            let Some(t) = t else {
                return Err(ServiceError::Precondition(format!(
                    "topic {:?} was deleted",
                    m.topic
                )));
            };
            if &t.cluster != cluster
                || &t.physical != physical
                || t.migrating_from.as_ref().map(|x| x.migration_id.as_str()) != Some(&m.id)
            {
                return Err(ServiceError::Precondition(format!(
                    "topic {:?} was changed outside migration {}",
                    m.topic, m.id
                )));
            }
            let mut next = t.clone();
            f(&mut next);
            Ok((next != t).then_some(next))
        })
        .await
    }

    /// Copies records that reached the source after the seal to the same partition of the
    /// destination (consumer groups stop reading the source at the seal), exactly once (see
    /// `movetopic::mirror`), recording progress as it goes. Returns whether every record the
    /// source holds past the seal is copied.
    async fn mirror_late_writes(&self, m: &mut Migration) -> bool {
        let now = match self.source_ends(m).await {
            Ok(n) => n,
            Err(e) => {
                m.note = format!("cannot read the source's end offsets: {e}");
                return false;
            }
        };
        m.late_writes = late_writes(&now, &m.sealed_offsets);
        if m.mirrored_offsets.len() != now.len() {
            m.mirrored_offsets = m.sealed_offsets.clone();
        }
        if now.iter().zip(&m.mirrored_offsets).all(|(n, c)| n <= c) {
            return true;
        }
        let state = self.svc.store().latest();
        let (Some(from), Some(to)) = (
            state.clusters.get(&m.from_cluster).cloned(),
            state.clusters.get(&m.to_cluster).cloned(),
        ) else {
            m.note = "a cluster of the migration is no longer configured".into();
            return false;
        };
        if m.mirror_scan_from.len() != now.len() {
            // Where the first copy will land (recorded before it, so a crash during it is
            // found again).
            match self
                .end_offsets(&m.to_cluster, &m.to_physical, m.partitions)
                .await
            {
                Ok(e) => {
                    m.mirror_scan_from = e;
                    self.store(m.clone(), true).await;
                }
                Err(e) => {
                    m.note = format!("cannot read the destination's end offsets: {e}");
                    return false;
                }
            }
        }
        let key = (m.id.clone(), "late");
        let scan = self
            .copies_checked
            .lock()
            .insert(key.clone())
            .then(|| m.mirror_scan_from.clone());
        match movetopic::mirror(
            &from,
            &m.from_physical,
            &to,
            &m.to_physical,
            &m.mirrored_offsets,
            &now,
            &m.id,
            scan.as_deref(),
        )
        .await
        {
            Ok(r) => {
                let n: i64 = r
                    .copied
                    .iter()
                    .zip(&m.mirrored_offsets)
                    .map(|(a, b)| a - b)
                    .sum();
                m.mirrored += n;
                m.mirrored_offsets = r.copied;
                m.mirror_scan_from = r.destination_ends;
                if n > 0 {
                    tracing::warn!(id = %m.id, topic = %m.topic, copied = n, "late writes copied from the source to the destination");
                }
                // Persist how far it got, so a restart does not copy the same records again.
                self.store(m.clone(), true).await;
                if let Some(e) = r.error {
                    m.note = format!("copying late writes: {e:#}");
                    return false;
                }
                now.iter().zip(&m.mirrored_offsets).all(|(n, c)| n <= c)
            }
            Err(e) => {
                if scan.is_some() {
                    self.copies_checked.lock().remove(&key);
                }
                m.note = format!("copying late writes: {e:#}");
                false
            }
        }
    }

    /// DRAIN → COMPLETE: clears the topic's `migrating_from` (the caller has just copied the
    /// late writes).
    ///
    /// Idempotent: a topic already on the destination without a marker was completed by this
    /// step's earlier write (only the coordinator clears the marker).
    async fn complete(&self, m: &mut Migration, forced: bool) -> bool {
        if self.marker(m) != Marker::Done
            && let Err(e) = self
                .update_topic(m, "complete", |t| t.migrating_from = None)
                .await
        {
            m.note = format!("cannot clear the migration from the topic: {e}");
            return false;
        }
        m.phase = MigrationPhase::Complete as i32;
        m.forced |= forced;
        m.finished_unix_ms = unix_ms();
        tracing::info!(id = %m.id, topic = %m.topic, late_writes = m.late_writes, mirrored = m.mirrored, "migration complete");
        true
    }

    fn get(&self, id: &str) -> Result<Migration, ServiceError> {
        if id.is_empty() {
            return Err(ValidationError::one("id", "is required").into());
        }
        self.list
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(format!("no migration with id {id:?}")))
    }

    /// Operator override: SWITCH → seal now; DRAIN → complete now.
    pub async fn advance(&self, r: MigrationRef) -> Result<Migration, ServiceError> {
        let _g = self.step.lock().await;
        let mut m = self.get(&r.id)?;
        if !r.ignore_group.is_empty() {
            return self.ignore_group(m, &r).await;
        }
        if r.retire_source {
            if phase(&m) != MigrationPhase::Complete {
                return Err(ServiceError::Precondition(format!(
                    "migration {} is in phase {}; a source is retired after COMPLETE",
                    m.id,
                    phase_name(phase(&m)).to_uppercase()
                )));
            }
            // What reached the source until now is copied first.
            if !self.mirror_late_writes(&mut m).await {
                self.store(m.clone(), true).await;
                return Err(ServiceError::Unavailable(format!(
                    "migration {}: the source's last late writes are not copied yet ({}); \
                     retry",
                    m.id, m.note
                )));
            }
            if !m.source_retired {
                m.source_retired = true;
                m.source_retired_unix_ms = unix_ms();
            }
            tracing::warn!(id = %m.id, author = %r.author, late_writes = m.late_writes, "migration source retired by an operator");
            self.store(m.clone(), true).await;
            return Ok(m);
        }
        match phase(&m) {
            p @ (MigrationPhase::Switch | MigrationPhase::Sealed | MigrationPhase::Drain) => {
                // SWITCH: seal now; SEALED or DRAIN: complete now.
                let p = if p == MigrationPhase::Switch {
                    p
                } else {
                    MigrationPhase::Drain
                };
                let o = self.observe(&mut m, true).await;
                let a = step::step(p, &o);
                let advanced = matches!(
                    a,
                    Action::Seal { .. } | Action::Complete | Action::Record(_)
                );
                let stored = self.act(&mut m, a, true).await;
                if !(advanced && stored) {
                    return Err(ServiceError::Unavailable(if m.note.is_empty() {
                        format!(
                            "migration {} cannot be advanced: the topic was changed outside it",
                            m.id
                        )
                    } else {
                        m.note.clone()
                    }));
                }
            }
            MigrationPhase::Aborting => {
                // Before the release: release now; after it: finish now.
                if !self.step_abort(&mut m, true).await {
                    return Err(ServiceError::Unavailable(m.note));
                }
            }
            p => {
                return Err(ServiceError::Precondition(format!(
                    "migration {} is in phase {}; only SWITCH (seal now), DRAIN (complete \
                     now) and ABORTING (release the producers and finish now) can be advanced",
                    m.id,
                    phase_name(p).to_uppercase()
                )));
            }
        }
        tracing::warn!(id = %m.id, author = %r.author, phase = phase_name(phase(&m)), "migration advanced by an operator");
        self.store(m.clone(), true).await;
        self.wake.notify_one();
        Ok(m)
    }

    /// Operator release of consumer group `r.ignore_group`: the migration stops waiting for it
    /// to drain the source (an abandoned group that still has committed offsets there).
    /// Recorded in the migration; what the group had not read on the source stays there.
    async fn ignore_group(
        &self,
        mut m: Migration,
        r: &MigrationRef,
    ) -> Result<Migration, ServiceError> {
        let g = &r.ignore_group;
        if g.len() > 255 || g.chars().any(char::is_control) {
            return Err(ValidationError::one(
                "ignore_group",
                "must be a consumer group id of 1-255 printable characters",
            )
            .into());
        }
        if !is_active(phase(&m)) || phase(&m) == MigrationPhase::Aborting {
            return Err(ServiceError::Precondition(format!(
                "migration {} is in phase {}; a group can be released until it completes",
                m.id,
                phase_name(phase(&m)).to_uppercase()
            )));
        }
        if !m.ignored_groups.contains(g) {
            m.ignored_groups.push(g.clone());
        }
        m.groups_draining.retain(|x| x != g);
        tracing::warn!(id = %m.id, group = %g, author = %r.author, "consumer group released from the migration by an operator");
        self.store(m.clone(), true).await;
        self.wake.notify_one();
        Ok(m)
    }

    /// Routes the topic back to its source (allowed until the seal).
    pub async fn abort(&self, r: MigrationRef) -> Result<Migration, ServiceError> {
        let _g = self.step.lock().await;
        let mut m = self.get(&r.id)?;
        if let Err(why) = step::abort_allowed(phase(&m), &self.marker(&m)) {
            return Err(ServiceError::Precondition(format!(
                "migration {} is in phase {}; {why} — move the topic back with a new migration \
                 instead",
                m.id,
                phase_name(phase(&m)).to_uppercase()
            )));
        }
        if let Marker::Aborting { .. } = self.marker(&m) {
            // This abort's route-back was written before (its record lost in a crash, or its
            // acknowledgement): take it up instead of writing again.
            m.phase = MigrationPhase::Aborting as i32;
            if m.abort_version == 0 {
                m.abort_version = self.svc.store().latest().version;
            }
            m.note = "abort taken up: the topic already carries it".into();
            self.store(m.clone(), true).await;
            self.wake.notify_one();
            return Ok(m);
        }
        let comment = if r.comment.is_empty() {
            format!(
                "abort migration {}: {} back to {}/{}",
                m.id, m.topic, m.from_cluster, m.from_physical
            )
        } else {
            r.comment.clone()
        };
        // Routed back with a marker naming the abandoned destination: producers flush what is
        // in flight there, switch back and hold their sends until what they wrote there is
        // copied back to the source (then the coordinator releases them), and consumer groups
        // leave the destination without reading it — so per-key order holds and each record
        // is read once.
        let written = self
            .write_topic(&m.topic, &r.author, &comment, |_, t| {
                // Nothing to route back when the topic is gone or already on the source.
                Ok(
                    t.filter(|t| t.cluster != m.from_cluster || t.physical != m.from_physical)
                        .map(|t| Topic {
                            cluster: m.from_cluster.clone(),
                            physical: m.from_physical.clone(),
                            migrating_from: Some(MigratingFrom {
                                migration_id: m.id.clone(),
                                cluster: m.to_cluster.clone(),
                                physical: m.to_physical.clone(),
                                sealed_offsets: Vec::new(),
                                aborted: true,
                                hold_sends: true,
                                destination_start_offsets: Vec::new(),
                            }),
                            ..t
                        }),
                )
            })
            .await?;
        let by = if r.author.is_empty() {
            "an operator"
        } else {
            &r.author
        };
        if let Some(v) = written {
            m.abort_version = v;
            m.phase = MigrationPhase::Aborting as i32;
            m.note = format!("abort requested by {by}");
        } else {
            m.phase = MigrationPhase::Aborted as i32;
            m.finished_unix_ms = unix_ms();
            m.note = format!("aborted by {by}");
        }
        tracing::warn!(id = %m.id, topic = %m.topic, phase = phase_name(phase(&m)), "migration abort");
        self.store(m.clone(), true).await;
        self.wake.notify_one();
        Ok(m)
    }
}

/// Whether a failed write surely did not take effect (a refusal), rather than maybe (the store
/// was unavailable or answered late).
fn is_definite(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::Precondition(_)
            | ServiceError::Invalid(_)
            | ServiceError::NotFound(_)
            | ServiceError::Conflict { .. }
    )
}

fn late_writes(now: &[i64], sealed: &[i64]) -> i64 {
    now.iter().zip(sealed).map(|(n, s)| (n - s).max(0)).sum()
}

fn abbreviate(ids: &[String]) -> String {
    if ids.len() <= 3 {
        ids.join(", ")
    } else {
        format!("{} and {} more", ids[..3].join(", "), ids.len() - 3)
    }
}

fn move_error(e: MoveError) -> ServiceError {
    match e {
        MoveError::Invalid(m) => ServiceError::Invalid(ValidationError::one("request", m)),
        MoveError::Refused(m) => ServiceError::Precondition(m),
        MoveError::Kafka(e) => ServiceError::Unavailable(format!("{e:#}")),
    }
}

/// Where the live clients are written down, next to the migrations file.
fn known_clients_path(migrations: &Path) -> PathBuf {
    migrations.with_file_name("clients.known")
}

/// The clients written down by [`Coordinator::write_known_clients`] (none when missing or
/// unreadable).
fn parse_known_clients(text: &str) -> BTreeSet<ClientKey> {
    text.lines()
        .filter_map(|l| {
            let (c, i) = l.split_once('\t')?;
            Some((c.to_string(), i.to_string()))
        })
        .collect()
}

/// Writes `bytes` to `path` via a temporary file, fsync and rename (then fsyncs the directory).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The coordinator slot of a [`ConfigService`] (set by the server wiring, emptied when the
/// coordinator stops so the service and coordinator do not keep each other alive).
pub type Slot = Arc<parking_lot::RwLock<Option<Arc<Coordinator>>>>;

/// Follows migration `id` through the admin API until it is COMPLETE or ABORTED, or `timeout`
/// passes; calls `on_change` whenever what it shows changes. Keeps asking while the service is
/// unreachable (it may be restarting: the migration resumes there).
pub async fn wait(
    admin: &mut switchyard_proto::client::AdminClient,
    id: &str,
    timeout: Duration,
    mut on_change: impl FnMut(&Migration),
) -> anyhow::Result<Migration> {
    let deadline = Instant::now() + timeout;
    let mut last: Option<Migration> = None;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match admin
            .list_migrations(ListMigrationsRequest {
                id: id.to_string(),
                active_only: false,
            })
            .await
        {
            Ok(r) => {
                unreachable_since = None;
                let Some(m) = r.into_inner().migrations.into_iter().next() else {
                    anyhow::bail!("the service does not know migration {id}");
                };
                if last.as_ref() != Some(&m) {
                    on_change(&m);
                }
                if !is_active(phase(&m)) {
                    return Ok(m);
                }
                last = Some(m);
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                anyhow::bail!("{}", s.message());
            }
            Err(s) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                tracing::warn!(error = %s.message(), "config service unreachable; retrying");
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "migration {id} did not finish within {timeout:?}; the config service has \
                         not answered for {:.1?}: {}",
                        since.elapsed(),
                        s.message()
                    );
                }
            }
        }
        if Instant::now() > deadline {
            let line = last.as_ref().map(progress_line).unwrap_or_default();
            anyhow::bail!("migration {id} did not finish within {timeout:?}: {line}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
