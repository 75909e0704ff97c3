//! A live topic migration under load, end to end, on two real Kafka clusters (started by
//! `scripts/kafka.sh`): N keyed records through a move of their logical topic from one cluster
//! to the other.
//!
//! Setup: an in-process config service (in-memory store), a fresh topic (`--partitions`, default
//! 6) on the first cluster ("east"), `--producers` SDK clients (default 4) each with one
//! producer, and a consumer group of `--consumers` SDK clients (default 3, auto-commit). The
//! producers send `--messages` records (default 1,000,000) over `--keys` keys (default 1,000;
//! each key belongs to one producer and carries sequence numbers 0, 1, 2, ...) as fast as the
//! sends complete, one send in flight per key (so the keys bound the sends in flight). When
//! `--move-at` of the records (default 0.4) are acknowledged, [`migrate`] moves the topic to
//! "west"; production goes on through the move.
//!
//! Checks (the process exits 1 when any is non-zero): every acknowledged record received by
//! the group exactly once and per key in order across the group's members (`lost`, `duplicated`,
//! `out_of_order`), and, with an independent raw rdkafka reader of both physical topics, every
//! acknowledged record in the logs exactly once where its delivery said, per key in one
//! partition, in order, and all of a key's east records before its west records.
//!
//! Timing, observed through the SDK clients (each polled every millisecond, so ±1-2 ms):
//! - *route change applied*: the first instant at which a producer client's configuration
//!   routes the topic to west;
//! - *producer switched*: the instant at which that producer's lane targets west (its in-flight
//!   sends to east delivered — the flush — and the target swapped; the sends held meanwhile are
//!   then started on west);
//! - *cutover window*: from the first producer's "route change applied" to the last producer's
//!   "switched". The cutover send latencies are those of the sends in flight at any moment of
//!   the window (started before its end, acknowledged after its start): the flushed ones, the
//!   held ones and those sent normally while a client warmed its new cluster connection;
//! - *held sends* (per producer): sends acknowledged by west that were started before that
//!   producer switched; they waited in the lane during the flush;
//! - *group drained*: the first instant at which no consumer reads the topic on east any more;
//! - *migration time*: from calling [`migrate`] until it returns (the config service's migration
//!   coordinator reports COMPLETE: it saw every producer switched and every group drained through
//!   the clients' status reports, which the bench's clients send every 200 ms).
//!
//! ```sh
//! eval "$(scripts/kafka.sh start 2)"
//! cargo bench -p switchyard-sdk --bench migration                        # 1,000,000 records
//! cargo bench -p switchyard-sdk --bench migration -- --messages 20000    # smoke run
//! ```
//!
//! Options (after `--`): `--messages N`, `--keys N`, `--producers N`, `--consumers N`,
//! `--partitions N`, `--move-at FRACTION`, `--drain-grace-ms MS` (the consumers' drain grace,
//! default 1000; the SDK's default is 10 s), `--commit-interval-ms MS` (the consumers'
//! `auto.commit.interval.ms`, default 1000), `--timeout-s S` (bound on each wait, default 900),
//! `--client-lease-s S` (the config service's client lease, default 30 as the service's: how
//! long the coordinator waits for a client that stopped reporting, e.g. the cut-off producer of
//! `--faults`), `--property KEY=VALUE` (a client property
//! for every SDK client, repeatable; e.g. `--property debug=eos,topic` with
//! `RUST_LOG=librdkafka=debug` shows the clients' producer-id and topic events), `--dump-sends FILE`
//! (every acknowledged send as CSV: producer, key, seq, cluster, partition, offset, and start and
//! acknowledgement in microseconds from the start of the move).
//! `--faults` adds the fleet's ordinary consumer faults: a second group (`offline`, one
//! member) stops before the move and restarts, as a new process with an empty cache, once the
//! move is in DRAIN; a third group (`latest`, one member, `auto.offset.reset=latest`) reads
//! through the move; and the main group's last member is restarted (a new process) in DRAIN.
//! Each group is checked on its own: every acknowledged record exactly once and per key in order
//! across its members (for `latest`, "every" means every record acknowledged after the move
//! started: before it, `latest` skipping what was written before the group joined is Kafka's).
//! `--faults` also adds a producer cut off from the config service through the move: one more
//! SDK client (application `migbench-cut-writer`) reaches the service through a TCP proxy that
//! can be frozen (connections stay up and forward nothing; its watch stall timeout is 1 s),
//! while Kafka stays reachable. Once the others have acknowledged half of `--move-at`, its
//! producer starts sending to the same logical topic over keys of its own (numbered after the
//! others' keys; one send in flight per key) at 1/20 of the others' rate so far, at least
//! 50 records/s. The proxy is frozen just before the move starts (once the service has listed
//! the client as a producer of the topic) and thawed when the move is COMPLETE, so this
//! producer never learns of the move while it runs: it keeps writing to east; the seal waits
//! for its lease (`--client-lease-s`) to end; its records past the seal are late writes, which
//! the coordinator copies to west (also after COMPLETE, from its watch of the source every
//! 2 s). After the thaw it switches to west; it stops once the others have finished and it has
//! written to west for 1 s. Its acknowledged sends count for every group like the others'.
//! Printed: its acknowledged sends by where they landed (east before the seal, east after the
//! seal, west), and the migration's `late_writes` and `mirrored` (copied) counts, once they have
//! settled (bounded wait). The run fails if one of its records is lost or duplicated by a
//! group or in the logs (each late write on east once and copied to west once, every other
//! record once where its delivery said), if a send fails, if none of its sends landed past the
//! seal (the fault did not happen), or if the settled counts disagree with each other or with
//! its acknowledged sends past the seal. Per key, a late write copied
//! to west *after* the same producer's first direct west writes (it switched after COMPLETE,
//! before the watch's next copy) arrives after records of its key with higher sequence numbers;
//! those arrivals are counted apart (`late_behind`), as the README's "Order of late writes"
//! describes, and do not fail the run; every other out-of-order arrival does. The move
//! completes only once every late write is copied, so while this producer writes to the source
//! COMPLETE waits for a copy round that catches up with it (seconds; more on a busy machine).
//! For records a group lost, the bench prints where they were acknowledged (cluster,
//! partition, offsets, time from the move's start) and the lowest offset the group received
//! there.
//! Exit status: 0 when every check passes, 1 when one fails, 2 for bad arguments or a setup
//! failure. `RUST_LOG=switchyard=info` logs the SDK's switches and drains to stderr.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/workload/mod.rs"]
mod workload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchyard::{Consumer, ConsumerOptions, Producer, Switchyard};
use switchyard_config::client::{self, BearerToken};
use switchyard_config::migration::{self, MigrationConfig};
use switchyard_config::{ServerConfig, StoreConfig};
use switchyard_proto::v1::{
    ListClientsRequest, ListMigrationsRequest, Migration, MigrationPhase, StartMigrationRequest,
};
use tokio::sync::watch;
use workload::{Load, Report, Sent};

const FROM: &str = "east";
const TO: &str = "west";
/// How often the clients report their status to the config service.
const STATUS_INTERVAL: Duration = Duration::from_millis(200);
/// How often the monitors look at the SDK clients.
const POLL: Duration = Duration::from_millis(1);
/// Send tasks per producer client (the runtime has 2 worker threads).
const TASKS_PER_PRODUCER: usize = 2;
/// `--faults`: the cut-off producer's client (application) name, its least rate (records/s),
/// its rate per key (one send in flight per key), how long it writes to the destination after
/// it switched, and the bound on waiting for the coordinator's late-write counts to settle.
const CUT_APP: &str = "migbench-cut-writer";
const CUT_MIN_RATE: f64 = 50.0;
const CUT_RATE_PER_KEY: f64 = 20.0;
const CUT_TAIL: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: migration [--messages N] [--keys N] [--producers N] [--consumers N] \
[--partitions N] [--move-at FRACTION] [--drain-grace-ms MS] [--commit-interval-ms MS] \
[--timeout-s S] [--client-lease-s S] [--property KEY=VALUE]... [--dump-sends FILE] [--faults]
  --faults: a group offline through the switch, a group on auto.offset.reset=latest, the main
  group's last member restarted in DRAIN, and a producer cut off from the config service from
  just before the move until COMPLETE (its late writes must be copied and received once)";

#[derive(Debug, Clone)]
struct Args {
    messages: u64,
    keys: usize,
    producers: usize,
    consumers: usize,
    partitions: i32,
    move_at: f64,
    drain_grace: Duration,
    commit_interval_ms: u64,
    timeout: Duration,
    /// The config service's client lease.
    client_lease: Duration,
    /// Extra client properties for every SDK client (e.g. `debug=eos,topic`).
    properties: Vec<(String, String)>,
    /// Write every acknowledged send here as CSV.
    dump: Option<std::path::PathBuf>,
    /// Add the consumer faults and the cut-off producer (see the module docs).
    faults: bool,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        messages: 1_000_000,
        keys: 1_000,
        producers: 4,
        consumers: 3,
        partitions: 6,
        move_at: 0.4,
        drain_grace: Duration::from_secs(1),
        commit_interval_ms: 1_000,
        timeout: Duration::from_secs(900),
        client_lease: Duration::from_secs(30),
        properties: Vec::new(),
        dump: None,
        faults: false,
    };
    fn num<T>(flag: &str, v: Option<String>, lo: T, hi: T) -> Result<T, String>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        let n: T = v
            .parse()
            .map_err(|_| format!("{flag} {v:?}: not a whole number"))?;
        if n < lo || n > hi {
            return Err(format!("{flag} {v}: must be between {lo} and {hi}"));
        }
        Ok(n)
    }
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            // Cargo passes `--bench` to every bench binary.
            "--bench" => {}
            "--faults" => a.faults = true,
            "--messages" => a.messages = num(&flag, it.next(), 1, 100_000_000)?,
            "--keys" => a.keys = num(&flag, it.next(), 1, 100_000)?,
            "--producers" => a.producers = num(&flag, it.next(), 1, 64)?,
            "--consumers" => a.consumers = num(&flag, it.next(), 1, 64)?,
            "--partitions" => a.partitions = num(&flag, it.next(), 1, 1_000)?,
            "--drain-grace-ms" => {
                a.drain_grace = Duration::from_millis(num(&flag, it.next(), 0, 600_000)?)
            }
            "--commit-interval-ms" => a.commit_interval_ms = num(&flag, it.next(), 1, 600_000)?,
            "--timeout-s" => a.timeout = Duration::from_secs(num(&flag, it.next(), 1, 86_400)?),
            "--client-lease-s" => {
                a.client_lease = Duration::from_secs(num(&flag, it.next(), 1, 3_600)?)
            }
            "--dump-sends" => {
                let v = it.next().ok_or("--dump-sends needs a file name")?;
                a.dump = Some(v.into());
            }
            "--property" => {
                let v = it.next().ok_or("--property needs KEY=VALUE")?;
                match v.split_once('=') {
                    Some((k, val)) if !k.trim().is_empty() => {
                        a.properties.push((k.trim().to_string(), val.to_string()))
                    }
                    _ => return Err(format!("--property {v:?}: expected KEY=VALUE")),
                }
            }
            "--move-at" => {
                let v = it.next().ok_or("--move-at needs a value")?;
                let f: f64 = v
                    .parse()
                    .map_err(|_| format!("--move-at {v:?}: not a number"))?;
                if !(f > 0.0 && f < 1.0) {
                    return Err(format!(
                        "--move-at {v}: must be a fraction of the messages between 0 and 1 (exclusive)"
                    ));
                }
                a.move_at = f;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if (a.messages as f64 * a.move_at) < 1.0 {
        return Err(format!(
            "--move-at {} of --messages {} is less than one record",
            a.move_at, a.messages
        ));
    }
    Ok(a)
}

/// The two clusters' bootstrap addresses from `SWITCHYARD_KAFKA_CLUSTERS` ("h:p;h:p").
fn clusters_from_env() -> Result<(String, String), String> {
    let v = std::env::var("SWITCHYARD_KAFKA_CLUSTERS").map_err(|_| {
        "SWITCHYARD_KAFKA_CLUSTERS is not set: start two clusters with \
         eval \"$(scripts/kafka.sh start 2)\""
            .to_string()
    })?;
    let parts: Vec<&str> = v.split(';').map(str::trim).collect();
    match parts.as_slice() {
        [a, b, ..] if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(format!(
            "SWITCHYARD_KAFKA_CLUSTERS={v:?}: expected two bootstrap addresses \"host:port;host:port\""
        )),
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("migration bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (east, west) = match clusters_from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("migration bench: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("migration bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args, east, west)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("migration bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What [`migrate`] reports.
struct Migrated {
    /// Progress lines, as the operator would see them.
    log: Vec<String>,
    /// The migration as the coordinator reported it at COMPLETE (`late_writes`: records that
    /// reached the source after the seal; `mirrored`: those copied to the destination;
    /// `sealed_offsets`: the source's end offsets at the seal).
    done: Migration,
}

/// Moves logical `topic` to cluster `to` through the config service at `addr` and returns once
/// the move is complete: the service's migration coordinator (StartMigration, followed through
/// ListMigrations) saw every producer of the topic switch and every consumer group drain the
/// source. The only code here that drives the move; everything else observes it through the
/// SDK clients.
async fn migrate(
    addr: SocketAddr,
    topic: String,
    to: String,
    timeout: Duration,
) -> anyhow::Result<Migrated> {
    let t0 = Instant::now();
    let ch = client::connect(&format!("http://{addr}"), None)
        .await
        .context("connect to the config service")?;
    let mut a = client::admin(ch, BearerToken::default());
    let plan = a
        .start_migration(StartMigrationRequest {
            topic,
            to_cluster: to,
            author: "migration-bench".into(),
            ..Default::default()
        })
        .await
        .context("StartMigration")?
        .into_inner();
    let mut log = vec![format!(
        "[{:>7.1?}] migration {} started: {}/{} -> {}/{} ({} partitions, destination {})",
        t0.elapsed(),
        plan.id,
        plan.from_cluster,
        plan.from_physical,
        plan.to_cluster,
        plan.to_physical,
        plan.partitions,
        if plan.created_destination {
            "created"
        } else {
            "existed"
        }
    )];
    let done = migration::wait(&mut a, &plan.id, timeout, |m| {
        log.push(format!(
            "[{:>7.1?}] {}",
            t0.elapsed(),
            migration::progress_line(m)
        ))
    })
    .await
    .context("wait for the migration")?;
    if MigrationPhase::try_from(done.phase) != Ok(MigrationPhase::Complete) || done.forced {
        bail!(
            "the migration ended {} (forced: {})",
            migration::progress_line(&done),
            done.forced
        );
    }
    Ok(Migrated { log, done })
}

async fn connect(
    addr: SocketAddr,
    app: &str,
    properties: &[(String, String)],
) -> anyhow::Result<Switchyard> {
    let mut b = Switchyard::builder(app)
        .endpoint(format!("http://{addr}"))
        .without_cache()
        .status_interval(STATUS_INTERVAL);
    for (k, v) in properties {
        b = b.property(k, v);
    }
    b.connect()
        .await
        .with_context(|| format!("connect {app} to the config service"))
}

/// What one consumer received: (arrival stamp across the whole group, key, seq) in arrival
/// order.
#[derive(Default)]
struct Received {
    got: Vec<(u64, String, u64)>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Why `recv` stopped early, if it did.
    error: Option<String>,
}

fn spawn_consumer(
    c: Arc<Consumer>,
    count: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Received> {
    tokio::spawn(async move {
        let mut r = Received::default();
        loop {
            let m = tokio::select! {
                m = c.recv() => m,
                _ = stop.wait_for(|v| *v) => return r,
            };
            match m {
                Ok(m) => {
                    let now = Instant::now();
                    r.first.get_or_insert(now);
                    r.last = Some(now);
                    let (k, seq) =
                        workload::parse_payload(m.payload.as_deref().unwrap_or_default());
                    r.got.push((count.fetch_add(1, Ordering::Relaxed), k, seq));
                }
                Err(e) => {
                    r.error = Some(e.to_string());
                    return r;
                }
            }
        }
    })
}

/// The producer cut off from the config service through the move (`--faults`).
struct CutOff {
    /// Its client, kept until the end.
    _client: Arc<Switchyard>,
    producer: Producer,
    /// The proxy between its client and the config service forwards nothing while set.
    frozen: Arc<AtomicBool>,
    monitor: tokio::task::JoinHandle<ProducerSwitch>,
    /// Its sends, once started.
    load: Option<Load>,
    /// Its key indices (after the other producers' keys), and its rate (records/s).
    keys: Vec<usize>,
    rate: f64,
    frozen_at: Option<Instant>,
}

/// When a producer client applied the route change, and when its lane switched.
#[derive(Default, Clone, Copy)]
struct ProducerSwitch {
    applied: Option<Instant>,
    switched: Option<Instant>,
}

fn spawn_producer_monitor(
    sy: Arc<Switchyard>,
    p: Producer,
    topic: String,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<ProducerSwitch> {
    tokio::spawn(async move {
        let mut s = ProducerSwitch::default();
        while s.switched.is_none() {
            if s.applied.is_none()
                && sy
                    .metadata()
                    .route(&topic)
                    .is_some_and(|r| r.cluster.name == TO)
            {
                s.applied = Some(Instant::now());
            }
            if p.current_route(&topic).await.is_some_and(|(c, _)| c == TO) {
                let now = Instant::now();
                s.applied.get_or_insert(now);
                s.switched = Some(now);
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|v| *v) => break,
            }
        }
        s
    })
}

/// When every consumer client had applied the route change, and when none read the topic on
/// the source any more.
#[derive(Default, Clone, Copy)]
struct GroupDrain {
    applied: Option<Instant>,
    drained: Option<Instant>,
}

/// Watches the members it is given while they live (a member stopped by the fault mode is
/// left out from then on; its replacement is not watched).
fn spawn_group_monitor(
    members: Vec<(Weak<Switchyard>, Weak<Consumer>)>,
    topic: String,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<GroupDrain> {
    tokio::spawn(async move {
        let mut g = GroupDrain::default();
        while g.drained.is_none() {
            let live: Vec<(Arc<Switchyard>, Arc<Consumer>)> = members
                .iter()
                .filter_map(|(sy, c)| Some((sy.upgrade()?, c.upgrade()?)))
                .collect();
            let applied = live.iter().all(|(sy, _)| {
                sy.metadata()
                    .route(&topic)
                    .is_some_and(|r| r.cluster.name == TO)
            });
            if applied {
                let now = Instant::now();
                g.applied.get_or_insert(now);
                let on_source = live.iter().any(|(_, c)| {
                    c.assignment_summary()
                        .iter()
                        .any(|(cluster, topics)| cluster == FROM && topics.contains(&topic))
                });
                if !on_source {
                    g.drained = Some(now);
                }
            }
            drop(live);
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|v| *v) => break,
            }
        }
        g
    })
}

/// One consumer group of the bench: its live members (each with its own stop signal) and what
/// the stopped ones received.
struct BenchGroup {
    name: &'static str,
    id: String,
    topic: String,
    opts: ConsumerOptions,
    members: Vec<(Arc<Switchyard>, Arc<Consumer>, watch::Sender<bool>)>,
    tasks: Vec<tokio::task::JoinHandle<Received>>,
    /// Records received by the group (also the arrival stamp of the next one).
    count: Arc<AtomicU64>,
    stopped: Vec<Received>,
    started_members: usize,
}

impl BenchGroup {
    async fn start(
        name: &'static str,
        addr: SocketAddr,
        a: &Args,
        topic: &str,
        opts: ConsumerOptions,
        n: usize,
    ) -> anyhow::Result<Self> {
        let mut g = Self {
            name,
            id: common::fresh(&format!("migbench-{name}")),
            topic: topic.to_string(),
            opts,
            members: Vec::new(),
            tasks: Vec::new(),
            count: Arc::new(AtomicU64::new(0)),
            stopped: Vec::new(),
            started_members: 0,
        };
        for _ in 0..n {
            g.add_member(addr, a).await?;
        }
        Ok(g)
    }

    /// Starts a member in a new SDK client (a new process, as far as the service and the
    /// group know: its own client id, no cache).
    async fn add_member(&mut self, addr: SocketAddr, a: &Args) -> anyhow::Result<()> {
        let app = if self.name == "main" {
            format!("migbench-reader-{}", self.started_members)
        } else {
            format!("migbench-{}-reader-{}", self.name, self.started_members)
        };
        self.started_members += 1;
        let sy = Arc::new(connect(addr, &app, &a.properties).await?);
        let c = Arc::new(
            sy.consumer_with(&self.id, &[&self.topic], self.opts.clone())
                .context("consumer")?,
        );
        let (stop, stop_rx) = watch::channel(false);
        self.tasks
            .push(spawn_consumer(c.clone(), self.count.clone(), stop_rx));
        self.members.push((sy, c, stop));
        Ok(())
    }

    /// Stops member `i` (its client closes, as a process would on a deploy).
    async fn stop_member(&mut self, i: usize) -> anyhow::Result<()> {
        let (sy, c, stop) = self.members.remove(i);
        let task = self.tasks.remove(i);
        let _ = stop.send(true);
        self.stopped.push(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .context("a consumer task did not stop within 30 s")?
                .context("a consumer task panicked")?,
        );
        drop(c);
        drop(sy);
        Ok(())
    }

    /// Stops every member; returns what every member, stopped before or now, received.
    async fn stop_all(&mut self) -> anyhow::Result<Vec<Received>> {
        while !self.members.is_empty() {
            self.stop_member(0).await?;
        }
        Ok(std::mem::take(&mut self.stopped))
    }

    fn received(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// How one group did.
#[derive(Debug, Default)]
struct Verdict {
    consumed: usize,
    lost: usize,
    duplicated: usize,
    /// Out-of-order arrivals, except `late_behind`.
    out_of_order: usize,
    unexpected: usize,
    /// Of `lost`, `duplicated` and `out_of_order`: those of the cut-off producer's keys.
    cut_lost: usize,
    cut_duplicated: usize,
    cut_out_of_order: usize,
    /// Late writes (copied from the source) that arrived after a record of their key with a
    /// higher sequence number that the destination acknowledged directly: their producer
    /// switched before the coordinator copied them (see the module docs). Not in
    /// `out_of_order`.
    late_behind: usize,
    /// Where the lost records were acknowledged (empty when none were lost).
    lost_detail: Vec<String>,
    errors: Vec<String>,
}

impl Verdict {
    fn clean(&self) -> bool {
        self.errors.is_empty()
            && (
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.unexpected,
            ) == (0, 0, 0, 0)
    }
}

/// Judges what a group's members received against what was sent: `lost` counts the sent
/// records `expected` selects that no member received; `duplicated` the records received more
/// than once; `out_of_order` per key across all members, in arrival order (apart: a `late`
/// record arriving after a record of its key with a higher sequence number acknowledged by
/// the destination, `late_behind`); `unexpected` what nobody sent. The `cut_*` counts are those
/// of the keys in `cut`.
fn judge<'a>(
    received: &[Received],
    sent: impl IntoIterator<Item = &'a Sent>,
    expected: impl Fn(&Sent) -> bool,
    cut: &HashSet<String>,
    late: impl Fn(&Sent) -> bool,
    t0: Instant,
) -> Verdict {
    let mut v = Verdict::default();
    // (key, seq) -> (times received, expected, the send)
    let mut times: HashMap<(&str, u64), (u32, bool, &Sent)> = HashMap::new();
    for s in sent {
        times.insert((s.key.as_str(), s.seq), (0, expected(s), s));
    }
    let mut arrivals: Vec<&(u64, String, u64)> = Vec::new();
    for (i, r) in received.iter().enumerate() {
        v.consumed += r.got.len();
        if let Some(e) = &r.error {
            v.errors.push(format!("member {i}: {e}"));
        }
        arrivals.extend(&r.got);
    }
    arrivals.sort_by_key(|x| x.0);
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    // (cluster, partition) -> the lowest offset received there
    let mut lowest_received: HashMap<(&str, i32), i64> = HashMap::new();
    for (_, k, seq) in arrivals {
        let this = match times.get_mut(&(k.as_str(), *seq)) {
            Some(n) => {
                n.0 += 1;
                let low = lowest_received
                    .entry((n.2.cluster.as_str(), n.2.partition))
                    .or_insert(n.2.offset);
                *low = (*low).min(n.2.offset);
                Some(n.2)
            }
            None => {
                v.unexpected += 1;
                None
            }
        };
        if let Some(prev) = last_seq.insert(k.as_str(), *seq)
            && prev >= *seq
        {
            let before = times.get(&(k.as_str(), prev)).map(|n| n.2);
            if this.is_some_and(&late) && before.is_some_and(|b| b.cluster == TO) {
                v.late_behind += 1;
            } else {
                v.out_of_order += 1;
                if cut.contains(k) {
                    v.cut_out_of_order += 1;
                }
            }
        }
    }
    // (cluster, partition) -> (lost, lowest and highest offset, earliest and latest ack)
    type Span = (usize, i64, i64, Instant, Instant);
    let mut lost_at: BTreeMap<(&str, i32), Span> = BTreeMap::new();
    for (n, exp, s) in times.values() {
        let is_cut = cut.contains(&s.key);
        if *n == 0 && *exp {
            v.lost += 1;
            v.cut_lost += usize::from(is_cut);
            let e = lost_at
                .entry((s.cluster.as_str(), s.partition))
                .or_insert((0, s.offset, s.offset, s.done, s.done));
            e.0 += 1;
            e.1 = e.1.min(s.offset);
            e.2 = e.2.max(s.offset);
            e.3 = e.3.min(s.done);
            e.4 = e.4.max(s.done);
        }
        if *n > 1 {
            v.duplicated += 1;
            v.cut_duplicated += usize::from(is_cut);
        }
    }
    v.lost_detail = lost_at
        .into_iter()
        .map(|((c, p), (n, lo, hi, first, last))| {
            format!(
                "lost on {c} partition {p}: {n} records, offsets {lo}..={hi}, acknowledged {:+.1} ms ..= {:+.1} ms from the move's start; lowest offset received there: {}",
                rel(t0, first),
                rel(t0, last),
                lowest_received
                    .get(&(c, p))
                    .map_or("-".into(), i64::to_string)
            )
        })
        .collect();
    v
}

/// What the independent reader found of the cut-off producer's records.
#[derive(Debug, Default)]
struct CutInLogs {
    /// Records of its keys in both logs (late writes: the original and the copy).
    found: usize,
    /// Acknowledged records not found where their delivery said.
    missing: usize,
    /// Late writes (acknowledged by the source past the seal) found copied to the destination,
    /// in the same partition, exactly once.
    copied: usize,
    /// Late writes not found on the destination.
    uncopied: usize,
    /// Records found more often than they should be (once; a late write twice, copy included),
    /// or a late write's copy in another partition.
    duplicated: usize,
    /// Records of its keys that no acknowledged send reported.
    unexpected: usize,
    /// Per key: spread over partitions on a cluster, a record followed in a log by one with a
    /// lower or equal sequence number (except `late_behind`), or a record before the seal with
    /// a sequence number not below every destination record's.
    out_of_order: usize,
    /// On the destination: copies of late writes behind a record of their key with a higher
    /// sequence number that the destination acknowledged directly.
    late_behind: usize,
    examples: Vec<String>,
}

impl CutInLogs {
    fn clean(&self) -> bool {
        (
            self.missing,
            self.uncopied,
            self.duplicated,
            self.unexpected,
            self.out_of_order,
        ) == (0, 0, 0, 0, 0)
    }

    fn note(&mut self, what: String) {
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }
}

/// Checks the cut-off producer's records (`found`: the reader's records of its keys) against
/// its acknowledged sends: each where its delivery said; each late write (`late`) also once on
/// the destination, in the same partition; nothing else; per key, increasing sequence numbers
/// in each log (see [`CutInLogs::late_behind`]) and every record before the seal below every
/// destination record.
fn check_cut_in_logs(
    found: &HashMap<(String, u64), Vec<workload::Found>>,
    sent: &[Sent],
    late: impl Fn(&Sent) -> bool,
) -> CutInLogs {
    let mut r = CutInLogs {
        found: found.values().map(Vec::len).sum(),
        ..Default::default()
    };
    let by_id: HashMap<(&str, u64), &Sent> =
        sent.iter().map(|s| ((s.key.as_str(), s.seq), s)).collect();
    for s in sent {
        let v = found
            .get(&(s.key.clone(), s.seq))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (here, others): (Vec<_>, Vec<_>) = v.iter().partition(|f| {
            f.cluster == s.cluster && f.partition == s.partition && f.offset == s.offset
        });
        if here.is_empty() {
            r.missing += 1;
            r.note(format!(
                "{}:{} acknowledged by {} {}@{} is not there (found: {v:?})",
                s.key, s.seq, s.cluster, s.partition, s.offset
            ));
        }
        if late(s) {
            match others.as_slice() {
                [] => {
                    r.uncopied += 1;
                    r.note(format!("late write {}:{} is not copied", s.key, s.seq));
                }
                [c] if c.cluster == TO && c.partition == s.partition => r.copied += 1,
                _ => {
                    r.duplicated += 1;
                    r.note(format!(
                        "late write {}:{} is copied as {others:?}",
                        s.key, s.seq
                    ));
                }
            }
        } else if !others.is_empty() || here.len() > 1 {
            r.duplicated += 1;
            r.note(format!("{}:{} is in the logs as {v:?}", s.key, s.seq));
        }
    }
    // key -> cluster -> [(partition, offset, seq, a copy of a late write)]
    type PerCluster = BTreeMap<String, Vec<(i32, i64, u64, bool)>>;
    let mut by_key: BTreeMap<&str, PerCluster> = BTreeMap::new();
    for ((k, seq), v) in found {
        let s = by_id.get(&(k.as_str(), *seq)).copied();
        if s.is_none() {
            r.unexpected += 1;
            r.note(format!("{k}:{seq} was not acknowledged (found: {v:?})"));
        }
        for f in v {
            let copy = f.cluster == TO && s.is_some_and(|s| s.cluster == FROM);
            by_key
                .entry(k.as_str())
                .or_default()
                .entry(f.cluster.clone())
                .or_default()
                .push((f.partition, f.offset, *seq, copy));
        }
    }
    for (k, clusters) in &mut by_key {
        for (c, recs) in clusters.iter_mut() {
            let parts: HashSet<i32> = recs.iter().map(|x| x.0).collect();
            if parts.len() != 1 {
                r.out_of_order += 1;
                r.note(format!(
                    "key {k} is spread over partitions {parts:?} on {c}"
                ));
            }
            recs.sort_unstable();
            for w in recs.windows(2) {
                if w[0].2 < w[1].2 {
                    continue;
                }
                if w[1].3 && !w[0].3 {
                    r.late_behind += 1;
                } else {
                    r.out_of_order += 1;
                    r.note(format!(
                        "key {k} on {c}: seq {} at offset {} is followed by seq {} at offset {}",
                        w[0].2, w[0].1, w[1].2, w[1].1
                    ));
                }
            }
        }
        let before_seal = clusters.get(FROM).and_then(|recs| {
            recs.iter()
                .filter(|x| {
                    by_id
                        .get(&(*k, x.2))
                        .is_some_and(|s| s.cluster == FROM && !late(s))
                })
                .map(|x| x.2)
                .max()
        });
        let first_to = clusters
            .get(TO)
            .and_then(|recs| recs.iter().map(|x| x.2).min());
        if let (Some(a), Some(b)) = (before_seal, first_to)
            && a >= b
        {
            r.out_of_order += 1;
            r.note(format!(
                "key {k}: seq {a} on {FROM} before the seal, seq {b} on {TO}"
            ));
        }
    }
    r
}

/// Whether `s` reached the source past the seal (`sealed`: the source's end offsets at the
/// seal, per partition; empty when unknown): a late write.
fn past_seal(s: &Sent, sealed: &[i64]) -> bool {
    s.cluster == FROM
        && usize::try_from(s.partition)
            .ok()
            .and_then(|p| sealed.get(p))
            .is_some_and(|&end| s.offset >= end)
}

/// Latency percentiles of a set of sends, in ms.
struct Lat {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Lat {
    fn of<'a>(sends: impl Iterator<Item = &'a Sent>) -> Lat {
        let mut v: Vec<Duration> = sends.map(Sent::latency).collect();
        v.sort_unstable();
        let pick = |p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            ms(v[((v.len() as f64 - 1.0) * p).round() as usize])
        };
        Lat {
            n: v.len(),
            p50: pick(0.5),
            p99: pick(0.99),
            max: v.last().map_or(0.0, |d| ms(*d)),
        }
    }

    fn line(&self) -> String {
        format!(
            "n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
            self.n, self.p50, self.p99, self.max
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Milliseconds from `t0` to `t` (negative before it).
fn rel(t0: Instant, t: Instant) -> f64 {
    if t >= t0 { ms(t - t0) } else { -ms(t0 - t) }
}

/// Sends per second among those acknowledged within `[from, to]`.
fn rate_done_between(sent: &[Sent], from: Instant, to: Instant) -> f64 {
    let n = sent
        .iter()
        .filter(|s| s.done >= from && s.done <= to)
        .count();
    n as f64 / (to - from).as_secs_f64().max(0.001)
}

/// Waits until `f` holds, polling every 10 ms, for at most `timeout`; prints a progress line
/// from `progress` every 5 s. Returns whether it held.
async fn wait_until(
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    mut progress: impl FnMut() -> String,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut next_line = Instant::now() + Duration::from_secs(5);
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        if Instant::now() >= next_line {
            eprintln!("  {}", progress());
            next_line += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn run(a: Args, east: String, west: String) -> anyhow::Result<bool> {
    let run_started = Instant::now();
    let svc = switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        store: StoreConfig::Memory,
        client_lease: a.client_lease,
        // The coordinator waits this long after the service starts before a migration advances
        // (so every client has reported once); 5 of the clients' report intervals here, where
        // every client connects before the move.
        migrations: MigrationConfig {
            client_grace: STATUS_INTERVAL * 5,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .context("start the config service")?;
    let addr = svc.local_addr();
    let mut adm = common::admin(addr).await;
    let topic = common::fresh("migbench");
    // Only the source exists: the move creates the destination.
    common::create_topic(&east, &topic, a.partitions).await;
    common::apply(
        &mut adm,
        vec![
            common::cluster(FROM, &east),
            common::cluster(TO, &west),
            common::topic(&topic, FROM, "", a.partitions),
        ],
    )
    .await;
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "migration: {} x ~100-byte records, {} keys, {} producer clients ({} tasks each, one send in flight per key), \
         consumer group of {} (auto-commit every {} ms, drain grace {:?}), {} partitions, move at {:.0} %, {FROM} {east} -> {TO} {west}; load average {}",
        a.messages,
        a.keys,
        a.producers,
        TASKS_PER_PRODUCER,
        a.consumers,
        a.commit_interval_ms,
        a.drain_grace,
        a.partitions,
        a.move_at * 100.0,
        load_avg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // The consumer group (and with --faults, two more).
    let (stop, stop_rx) = watch::channel(false);
    let opts = ConsumerOptions {
        auto_commit: true,
        drain_grace: a.drain_grace,
        properties: BTreeMap::from([(
            "auto.commit.interval.ms".to_string(),
            a.commit_interval_ms.to_string(),
        )]),
    };
    let mut group = BenchGroup::start("main", addr, &a, &topic, opts.clone(), a.consumers).await?;
    let consumed = group.count.clone();
    let mut extra_groups = Vec::new();
    if a.faults {
        extra_groups.push(BenchGroup::start("offline", addr, &a, &topic, opts.clone(), 1).await?);
        let mut latest = opts.clone();
        latest
            .properties
            .insert("auto.offset.reset".into(), "latest".into());
        extra_groups.push(BenchGroup::start("latest", addr, &a, &topic, latest, 1).await?);
    }

    // With --faults, the producer cut off from the config service through the move: its
    // client connects now (a known client before the move), through a proxy that can be frozen.
    let mut cut = if a.faults {
        let (proxy, frozen) = common::freezable_proxy(addr).await;
        let mut b = Switchyard::builder(CUT_APP)
            .endpoint(format!("http://{proxy}"))
            .without_cache()
            .status_interval(STATUS_INTERVAL)
            .watch_stall_timeout(Duration::from_secs(1));
        for (k, v) in &a.properties {
            b = b.property(k, v);
        }
        let sy = Arc::new(
            b.connect()
                .await
                .context("connect the cut-off producer's client through the proxy")?,
        );
        let producer = sy.producer();
        let monitor =
            spawn_producer_monitor(sy.clone(), producer.clone(), topic.clone(), stop_rx.clone());
        Some(CutOff {
            _client: sy,
            producer,
            frozen,
            monitor,
            load: None,
            keys: Vec::new(),
            rate: 0.0,
            frozen_at: None,
        })
    } else {
        None
    };

    // The producers: key k belongs to producer k % producers and sends `per_key` records (the
    // first `messages % keys` keys one more).
    let (base, extra) = (a.messages / a.keys as u64, a.messages % a.keys as u64);
    let mut producers = Vec::new();
    let mut loads = Vec::new();
    let mut monitors = Vec::new();
    for i in 0..a.producers {
        let sy = Arc::new(connect(addr, &format!("migbench-writer-{i}"), &a.properties).await?);
        let p = sy.producer();
        let keys: Vec<(usize, u64)> = (i..a.keys)
            .step_by(a.producers)
            .map(|k| (k, base + u64::from((k as u64) < extra)))
            .collect();
        monitors.push(spawn_producer_monitor(
            sy.clone(),
            p.clone(),
            topic.clone(),
            stop_rx.clone(),
        ));
        loads.push(Load::start_counted(
            p,
            &topic,
            TASKS_PER_PRODUCER,
            keys,
            a.timeout,
        ));
        producers.push(sy);
    }
    let group_monitor = spawn_group_monitor(
        group
            .members
            .iter()
            .map(|(sy, c, _)| (Arc::downgrade(sy), Arc::downgrade(c)))
            .collect(),
        topic.clone(),
        stop_rx.clone(),
    );
    let load_started = loads.iter().map(Load::started).min().expect("a producer");
    let counters: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)> = loads
        .iter()
        .map(|l| (l.ok.clone(), l.failed.clone()))
        .collect();
    let acked = || {
        counters
            .iter()
            .map(|(ok, _)| ok.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let finished = || {
        counters
            .iter()
            .map(|(ok, failed)| ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let progress = || {
        format!(
            "[{:>6.1} s] acknowledged {} of {}, consumed {}",
            load_started.elapsed().as_secs_f64(),
            acked(),
            a.messages,
            consumed.load(Ordering::Relaxed)
        )
    };

    // The move, once `move_at` of the records are acknowledged.
    let trigger = (a.messages as f64 * a.move_at).round() as u64;
    if let Some(c) = cut.as_mut() {
        // The cut-off producer starts at half of that, at 1/20 of the others' rate so far.
        if !wait_until(
            a.timeout,
            || acked() >= trigger / 2 || finished() >= a.messages,
            progress,
        )
        .await
        {
            bail!(
                "only {} records acknowledged within {:?}",
                acked(),
                a.timeout
            );
        }
        c.rate = (acked() as f64 / load_started.elapsed().as_secs_f64().max(0.001) / 20.0)
            .max(CUT_MIN_RATE);
        let n = ((c.rate / CUT_RATE_PER_KEY).ceil() as usize).max(4);
        c.keys = (a.keys..a.keys + n).collect();
        c.load = Some(Load::start_keys(
            c.producer.clone(),
            &topic,
            TASKS_PER_PRODUCER,
            c.keys.clone(),
            c.rate,
            a.timeout,
        ));
        eprintln!(
            "  [{:>6.1} s] faults: the cut-off producer starts: {n} keys ({}..{}), {:.0} records/s",
            load_started.elapsed().as_secs_f64(),
            workload::key_name(a.keys),
            workload::key_name(a.keys + n - 1),
            c.rate
        );
    }
    if !wait_until(
        a.timeout,
        || acked() >= trigger || finished() >= a.messages,
        progress,
    )
    .await
    {
        bail!(
            "only {} records acknowledged within {:?}",
            acked(),
            a.timeout
        );
    }
    if a.faults {
        // The offline group goes away before the move (its process stops).
        eprintln!("  faults: group offline stops before the move");
        extra_groups[0].stop_member(0).await?;
    }
    if let Some(c) = cut.as_mut() {
        // The service knows the cut-off producer as a producer of the topic (its reports list
        // it), then loses it: the proxy forwards nothing from now until COMPLETE.
        let deadline = Instant::now() + a.timeout;
        loop {
            let ok = c.load.as_ref().map_or(0, |l| l.ok.load(Ordering::Relaxed));
            let listed = adm
                .list_clients(ListClientsRequest {
                    app: CUT_APP.into(),
                })
                .await
                .context("ListClients")?
                .into_inner()
                .clients
                .iter()
                .any(|ci| {
                    ci.status
                        .as_ref()
                        .is_some_and(|st| st.producing.iter().any(|e| e.logical_topic == topic))
                });
            if ok > 0 && listed {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the cut-off producer was not listed as a producer of {topic} within {:?} ({ok} acknowledged)",
                    a.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.frozen.store(true, Ordering::SeqCst);
        c.frozen_at = Some(Instant::now());
        eprintln!(
            "  [{:>6.1} s] faults: the cut-off producer ({} acknowledged) is cut off from the config service",
            load_started.elapsed().as_secs_f64(),
            c.load.as_ref().map_or(0, |l| l.ok.load(Ordering::Relaxed))
        );
    }
    let move_started = Instant::now();
    let acked_at_move = acked();
    eprintln!(
        "  [{:>6.1} s] {acked_at_move} records acknowledged: moving {topic} to {TO}",
        load_started.elapsed().as_secs_f64()
    );
    // The instant the move completed is taken in the task: it may complete before or after the
    // producers finish.
    let migration = {
        let (topic, timeout) = (topic.clone(), a.timeout);
        let thaw = cut.as_ref().map(|c| c.frozen.clone());
        tokio::spawn(async move {
            let r = migrate(addr, topic, TO.into(), timeout).await;
            let at = Instant::now();
            // The move is over (or failed): the cut-off producer reaches the service again.
            if let Some(frozen) = thaw {
                frozen.store(false, Ordering::SeqCst);
            }
            (r, at)
        })
    };

    if a.faults {
        // In DRAIN: the main group's last member restarts (a new process), and the offline
        // group comes back (a new process, empty cache).
        let mut adm = common::admin(addr).await;
        let in_drain = {
            let deadline = Instant::now() + a.timeout;
            loop {
                let l = adm
                    .list_migrations(switchyard_proto::v1::ListMigrationsRequest {
                        id: String::new(),
                        active_only: false,
                    })
                    .await
                    .context("ListMigrations")?
                    .into_inner()
                    .migrations;
                let p = l
                    .iter()
                    .find(|m| m.topic == topic)
                    .map(|m| MigrationPhase::try_from(m.phase).unwrap_or_default());
                if matches!(p, Some(MigrationPhase::Drain | MigrationPhase::Complete)) {
                    break p;
                }
                if Instant::now() > deadline {
                    bail!("the migration did not reach DRAIN within {:?}", a.timeout);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        eprintln!(
            "  [{:>6.1} s] faults: migration in {:?}; restarting main group member {} and group offline",
            load_started.elapsed().as_secs_f64(),
            in_drain,
            a.consumers - 1
        );
        group.stop_member(a.consumers - 1).await?;
        group.add_member(addr, &a).await?;
        extra_groups[0].add_member(addr, &a).await?;
    }

    // Production ends.
    let all_sent = wait_until(a.timeout, || finished() >= a.messages, progress).await;
    // One report over all producers; producer i's sends are `report.sent[ranges[i]]`.
    let mut report = Report::default();
    let mut ranges = Vec::new();
    for l in loads {
        let r = if all_sent {
            l.join().await
        } else {
            l.finish().await
        };
        let from = report.sent.len();
        report.sent.extend(r.sent);
        ranges.push(from..report.sent.len());
        report.errors.extend(r.errors);
    }
    let produced_at = Instant::now();
    let produced = report.sent.len() as u64;

    // The move completes.
    let mut migration_done = Instant::now();
    let migration = match tokio::time::timeout(a.timeout, migration).await {
        Ok(Ok((Ok(m), at))) => {
            migration_done = at;
            Ok(m)
        }
        Ok(Ok((Err(e), _))) => Err(format!("{e:#}")),
        Ok(Err(e)) => Err(format!("the migration task failed: {e}")),
        Err(_) => Err(format!("not complete within {:?}", a.timeout)),
    };

    // The cut-off producer, reaching the service again since COMPLETE, switches to west; it
    // writes there for a second more, then stops.
    let mut cut_report = Report::default();
    let mut cut_keys: HashSet<String> = HashSet::new();
    if let Some(c) = cut.as_mut() {
        cut_keys = c.keys.iter().map(|k| workload::key_name(*k)).collect();
        if migration.is_ok() {
            let deadline = Instant::now() + a.timeout;
            loop {
                if c.producer
                    .current_route(&topic)
                    .await
                    .is_some_and(|(cl, _)| cl == TO)
                {
                    tokio::time::sleep(CUT_TAIL).await;
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!(
                        "  the cut-off producer did not switch to {TO} within {:?} of the end of the load",
                        a.timeout
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(l) = c.load.take() {
            cut_report = l.finish().await;
        }
    }
    let cut_acked = cut_report.sent.len() as u64;

    // Every group receives everything it should; anything arriving after that within a quiet
    // second is a duplicate.
    let after_move = report
        .sent
        .iter()
        .chain(&cut_report.sent)
        .filter(|s| s.done >= move_started)
        .count() as u64;
    let expected_all = produced + cut_acked;
    let want = |g: &BenchGroup| {
        if g.name == "latest" {
            after_move
        } else {
            expected_all
        }
    };
    let all_consumed = wait_until(
        a.timeout,
        || group.received() >= expected_all && extra_groups.iter().all(|g| g.received() >= want(g)),
        progress,
    )
    .await;
    // The cut-off producer's sends acknowledged by the source past the seal are the late
    // writes; the coordinator's counts settle on them once its watch has looked at the source
    // after the producer switched (bounded).
    // The migration record is read by topic, so that its seal is known also when `migrate`
    // failed (e.g. not COMPLETE in time).
    let mut settled: Option<Migration> = None;
    if cut.is_some() {
        let deadline = Instant::now() + SETTLE;
        loop {
            let now = adm
                .list_migrations(ListMigrationsRequest {
                    id: String::new(),
                    active_only: false,
                })
                .await
                .context("ListMigrations")?
                .into_inner()
                .migrations
                .into_iter()
                .find(|x| x.topic == topic);
            let done = now.as_ref().is_some_and(|x| {
                let late = cut_report
                    .sent
                    .iter()
                    .filter(|s| past_seal(s, &x.sealed_offsets))
                    .count() as i64;
                x.late_writes == x.mirrored && x.late_writes == late
            });
            settled = now.or(settled);
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let sealed: Vec<i64> = match (&settled, &migration) {
        (Some(x), _) => x.sealed_offsets.clone(),
        (None, Ok(m)) => m.done.sealed_offsets.clone(),
        (None, Err(_)) => Vec::new(),
    };
    let is_late = |s: &Sent| past_seal(s, &sealed);
    let cut_late = cut_report.sent.iter().filter(|s| is_late(s)).count() as i64;
    let total = || group.received() + extra_groups.iter().map(BenchGroup::received).sum::<u64>();
    let mut last = total();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = total();
        if now == last {
            break;
        }
        last = now;
    }
    let _ = stop.send(true);
    let received = group.stop_all().await?;
    let mut extra_verdicts = Vec::new();
    for g in &mut extra_groups {
        let r = g.stop_all().await?;
        let sent = report.sent.iter().chain(&cut_report.sent);
        let v = if g.name == "latest" {
            judge(
                &r,
                sent,
                |s| s.done >= move_started,
                &cut_keys,
                is_late,
                move_started,
            )
        } else {
            judge(&r, sent, |_| true, &cut_keys, is_late, move_started)
        };
        extra_verdicts.push((g.name, v));
    }
    let mut switches = Vec::new();
    for m in monitors {
        switches.push(m.await.context("a producer monitor panicked")?);
    }
    let drain = group_monitor.await.context("the group monitor panicked")?;
    let cut_switch = match cut.as_mut() {
        Some(c) => Some(
            (&mut c.monitor)
                .await
                .context("the cut-off producer's monitor panicked")?,
        ),
        None => None,
    };

    // The independent reader.
    let (e2, w2, t2) = (east.clone(), west.clone(), topic.clone());
    let mut found = tokio::task::spawn_blocking(move || {
        workload::read_everywhere(&[(FROM, &e2), (TO, &w2)], &t2)
    })
    .await
    .context("the independent reader failed")?;
    // The cut-off producer's records are checked on their own: its late writes are on both
    // clusters (the original and the copy).
    let found_cut: HashMap<(String, u64), Vec<workload::Found>> =
        found.extract_if(|(k, _), _| cut_keys.contains(k)).collect();
    let exact = workload::exactness(&report, &found);
    let order = workload::order_violations(&found, FROM, TO);
    let cut_logs = check_cut_in_logs(&found_cut, &cut_report.sent, is_late);

    // Consumer-side accounting: order is judged per key across the whole group (every
    // member), in arrival order.
    let main_verdict = judge(
        &received,
        report.sent.iter().chain(&cut_report.sent),
        |_| true,
        &cut_keys,
        is_late,
        move_started,
    );
    let Verdict {
        consumed: consumed_total,
        lost,
        duplicated,
        out_of_order,
        unexpected: unexpected_consumed,
        errors: ref consumer_errors,
        ..
    } = main_verdict;

    // Timing.
    let applied = switches.iter().filter_map(|s| s.applied).min();
    let switched = if switches.iter().all(|s| s.switched.is_some()) {
        switches.iter().filter_map(|s| s.switched).max()
    } else {
        None
    };
    let t0 = move_started;
    let all = Lat::of(report.sent.iter());
    println!(
        "produced {produced} acknowledged ({} on {FROM}, {} on {TO}), {} send errors, in {:.1} s",
        report.count_on(FROM),
        report.count_on(TO),
        report.errors.len(),
        (produced_at - load_started).as_secs_f64()
    );
    if let Some((k, seq, e)) = report.errors.first() {
        println!("  first send error: {k}:{seq}: {e}");
    }
    let cut_part = |v: &Verdict| {
        if cut.is_some() {
            format!(
                "; of the cut-off producer's keys lost={} duplicated={} out_of_order={}; late_behind={}",
                v.cut_lost, v.cut_duplicated, v.cut_out_of_order, v.late_behind
            )
        } else {
            String::new()
        }
    };
    println!(
        "consumed {consumed_total}: lost={lost} duplicated={duplicated} out_of_order={out_of_order} unexpected={unexpected_consumed}{}",
        cut_part(&main_verdict)
    );
    for e in consumer_errors.iter().chain(&main_verdict.lost_detail) {
        println!("  {e}");
    }
    for (name, v) in &extra_verdicts {
        println!(
            "group {name}: consumed {}: lost={} duplicated={} out_of_order={} unexpected={}{}{}",
            v.consumed,
            v.lost,
            v.duplicated,
            v.out_of_order,
            v.unexpected,
            cut_part(v),
            if *name == "latest" {
                format!(" (of the {after_move} records acknowledged after the move started)")
            } else {
                String::new()
            }
        );
        for e in v.errors.iter().chain(&v.lost_detail) {
            println!("  {e}");
        }
    }
    println!(
        "independent reader ({FROM} + {TO}, {} records): lost={} duplicated={} out_of_order={} misplaced={} unexpected={}",
        found.values().map(Vec::len).sum::<usize>(),
        exact.missing.len(),
        exact.duplicated.len(),
        order.len(),
        exact.misplaced.len(),
        exact.unexpected.len()
    );
    for v in order.iter().take(5) {
        println!("  {v}");
    }
    if cut.is_some() {
        println!(
            "independent reader, the cut-off producer's keys ({} records): missing={} late writes copied={} uncopied={} duplicated={} unexpected={} out_of_order={} late_behind={}",
            cut_logs.found,
            cut_logs.missing,
            cut_logs.copied,
            cut_logs.uncopied,
            cut_logs.duplicated,
            cut_logs.unexpected,
            cut_logs.out_of_order,
            cut_logs.late_behind
        );
        for e in &cut_logs.examples {
            println!("  {e}");
        }
    }
    println!(
        "move started at {acked_at_move} acknowledged records ({:.1} s into the run)",
        (move_started - load_started).as_secs_f64()
    );
    match &migration {
        Ok(m) => {
            for l in &m.log {
                println!("  migrate: {l}");
            }
            println!(
                "  late writes to the source after the seal: {} (copied at COMPLETE: {})",
                m.done.late_writes, m.done.mirrored
            );
        }
        Err(e) => println!("  migrate FAILED: {e}"),
    }
    for (i, s) in switches.iter().enumerate() {
        let own = &report.sent[ranges[i].clone()];
        let line = match (s.applied, s.switched) {
            (Some(ap), Some(sw)) => {
                let held: Vec<&Sent> = own
                    .iter()
                    .filter(|x| x.cluster == TO && x.started < sw)
                    .collect();
                let first_held = held.iter().map(|x| x.started).min();
                let last_source = own
                    .iter()
                    .filter(|x| x.cluster == FROM)
                    .map(|x| x.done)
                    .max();
                let first_dest = own.iter().filter(|x| x.cluster == TO).map(|x| x.done).min();
                let h = Lat::of(held.iter().copied());
                format!(
                    "applied +{:.1} ms, first held send started +{}, last {FROM} ack +{}, switched +{:.1} ms, first {TO} ack +{}; held sends {}",
                    rel(t0, ap),
                    opt_ms(t0, first_held),
                    opt_ms(t0, last_source),
                    rel(t0, sw),
                    opt_ms(t0, first_dest),
                    h.line()
                )
            }
            _ => "did not switch".to_string(),
        };
        println!("  producer {i}: {line}");
    }
    if let Some(c) = &cut {
        let after_complete = match &migration {
            Ok(_) => cut_report
                .sent
                .iter()
                .filter(|x| x.cluster == FROM && x.done >= migration_done)
                .count()
                .to_string(),
            Err(_) => "-".into(),
        };
        let switched_line = match cut_switch.and_then(|s| s.switched) {
            Some(sw) => format!(
                "switched to {TO} +{:.1} ms{}",
                rel(t0, sw),
                match &migration {
                    Ok(_) => format!(" ({:.1} ms after COMPLETE)", rel(migration_done, sw)),
                    Err(_) => String::new(),
                }
            ),
            None => format!("did not switch to {TO}"),
        };
        println!(
            "  cut-off producer ({} keys, {:.0} records/s; cut off from the config service {} before the move, until COMPLETE): acknowledged {cut_acked}: {} by {FROM} before the seal, {cut_late} by {FROM} after the seal ({after_complete} of them after COMPLETE), {} by {TO}; {} send errors; {switched_line}",
            c.keys.len(),
            c.rate,
            c.frozen_at
                .map_or("-".into(), |f| format!("{:.2} ms", ms(t0 - f))),
            cut_report.count_on(FROM) as i64 - cut_late,
            cut_report.count_on(TO),
            cut_report.errors.len(),
        );
        if let Some((k, seq, e)) = cut_report.errors.first() {
            println!("    first send error: {k}:{seq}: {e}");
        }
        println!(
            "  late writes, the coordinator's counts once settled: late_writes={} mirrored={} (the cut-off producer's sends acknowledged by {FROM} past the seal: {cut_late})",
            settled
                .as_ref()
                .map_or("-".into(), |x| x.late_writes.to_string()),
            settled
                .as_ref()
                .map_or("-".into(), |x| x.mirrored.to_string()),
        );
    }
    println!(
        "  consumers: route change applied by all +{}, group drained (no consumer on {FROM}) +{}",
        opt_ms(t0, drain.applied),
        opt_ms(t0, drain.drained)
    );

    println!("RESULT send latency, whole run: {}", all.line());
    let cutover = match (applied, switched) {
        (Some(ap), Some(sw)) => {
            let w = Lat::of(
                report
                    .sent
                    .iter()
                    .filter(|s| s.started <= sw && s.done >= ap),
            );
            println!(
                "RESULT cutover window {:.1} ms (route change applied by the first producer +{:.1} ms -> last producer switched +{:.1} ms after the move started); sends in flight during it: {}",
                ms(sw - ap),
                rel(t0, ap),
                rel(t0, sw),
                w.line()
            );
            Some(w)
        }
        _ => {
            println!("RESULT cutover window: not every producer switched");
            None
        }
    };
    let done_at = migration.as_ref().ok().map(|_| migration_done);
    println!(
        "RESULT migration time {} (move started -> move complete); every producer switched +{}, group drained +{}",
        done_at.map_or("FAILED".to_string(), |d| format!(
            "{:.2} s",
            (d - t0).as_secs_f64()
        )),
        opt_ms(t0, switched),
        opt_ms(t0, drain.drained),
    );
    let consumer_first = received.iter().filter_map(|r| r.first).min();
    let consumer_last = received.iter().filter_map(|r| r.last).max();
    let before = rate_done_between(&report.sent, load_started, move_started);
    let after = switched.map(|sw| {
        let end = report.sent.iter().map(|s| s.done).max().unwrap_or(sw);
        if end > sw {
            rate_done_between(&report.sent, sw, end)
        } else {
            0.0
        }
    });
    println!(
        "RESULT throughput produce: before the move {before:.0} msg/s, after every producer switched {}, whole run {:.0} msg/s; consume: {}",
        after.map_or("-".to_string(), |r| format!("{r:.0} msg/s")),
        produced as f64 / (produced_at - load_started).as_secs_f64().max(0.001),
        match (consumer_first, consumer_last) {
            (Some(f), Some(l)) if l > f =>
                format!("{:.0} msg/s", consumed_total as f64 / (l - f).as_secs_f64()),
            _ => "-".to_string(),
        }
    );

    if let Some(path) = &a.dump {
        let mut out =
            String::from("producer,key,seq,cluster,partition,offset,started_us,done_us\n");
        // The cut-off producer's sends (--faults) as producer "cut".
        let cut_range = [("cut".to_string(), &cut_report.sent[..])];
        let per_producer = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| (i.to_string(), &report.sent[r.clone()]))
            .chain(cut_range);
        for (i, sends) in per_producer {
            for x in sends {
                out.push_str(&format!(
                    "{i},{},{},{},{},{},{:.0},{:.0}\n",
                    x.key,
                    x.seq,
                    x.cluster,
                    x.partition,
                    x.offset,
                    rel(t0, x.started) * 1e3,
                    rel(t0, x.done) * 1e3
                ));
            }
        }
        std::fs::write(path, out).with_context(|| format!("write {}", path.display()))?;
        println!("sends written to {}", path.display());
    }
    // The cut-off producer: every send acknowledged, some of them past the seal (else the
    // fault did not happen), its records in the logs as they should be, and the coordinator's
    // counts settled on its late writes.
    let cut_clean = cut.is_none()
        || (cut_report.errors.is_empty()
            && cut_acked > 0
            && cut_late > 0
            && cut_logs.clean()
            && settled
                .as_ref()
                .is_some_and(|x| x.late_writes == x.mirrored && x.late_writes == cut_late));
    if cut.is_some() && cut_late == 0 {
        println!(
            "  the cut-off producer wrote nothing to {FROM} past the seal: the fault did not happen"
        );
    }
    let clean = report.errors.is_empty()
        && produced == a.messages
        && all_consumed
        && consumer_errors.is_empty()
        && (lost, duplicated, out_of_order, unexpected_consumed) == (0, 0, 0, 0)
        && exact.missing.is_empty()
        && exact.duplicated.is_empty()
        && exact.misplaced.is_empty()
        && exact.unexpected.is_empty()
        && order.is_empty()
        && extra_verdicts.iter().all(|(_, v)| v.clean())
        && migration
            .as_ref()
            .is_ok_and(|m| cut.is_some() || m.done.late_writes == 0)
        && cut_clean
        && cutover.is_some();
    println!(
        "RESULT total time {:.1} s (setup, load, move, waits and checks)",
        run_started.elapsed().as_secs_f64()
    );
    println!(
        "summary: produced={produced} consumed={consumed_total} lost={lost} duplicated={duplicated} out_of_order={out_of_order} \
         reader_lost={} reader_duplicated={} reader_out_of_order={} cutover_window_ms={} cutover_p99_ms={} migration_s={}{} result={}",
        exact.missing.len(),
        exact.duplicated.len(),
        order.len(),
        match (applied, switched) {
            (Some(ap), Some(sw)) => format!("{:.1}", ms(sw - ap)),
            _ => "-".into(),
        },
        cutover.map_or("-".into(), |c| format!("{:.1}", c.p99)),
        done_at.map_or("-".into(), |d| format!("{:.2}", (d - t0).as_secs_f64())),
        if cut.is_some() {
            format!(
                " cut_acknowledged={cut_acked} cut_late={cut_late} late_writes={} mirrored={} late_behind={}",
                settled
                    .as_ref()
                    .map_or("-".into(), |x| x.late_writes.to_string()),
                settled
                    .as_ref()
                    .map_or("-".into(), |x| x.mirrored.to_string()),
                main_verdict.late_behind,
            )
        } else {
            String::new()
        },
        if clean { "ok" } else { "FAILED" }
    );
    drop(group);
    drop(extra_groups);
    drop(producers);
    drop(cut);
    svc.shutdown().await.context("stop the config service")?;
    Ok(clean)
}

fn opt_ms(t0: Instant, t: Option<Instant>) -> String {
    t.map_or("-".to_string(), |t| format!("{:.1} ms", rel(t0, t)))
}
