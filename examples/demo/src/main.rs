//! `switchyard-demo`: the zero-install Switchyard demo.
//!
//! Everything runs in this one process: a config service (in-memory store), two Kafka clusters
//! "east" and "west" (librdkafka's in-process mock clusters, or real clusters with `--east` and
//! `--west`), keyed producers and a consumer group using the SDK. Part-way through, logical
//! topic `orders` is migrated from east to west by the config service's coordinator
//! (`StartMigration`; the phases SWITCH → SEALED → DRAIN → COMPLETE are printed as they happen);
//! producers and consumers follow the move live. At the end every record is accounted for: what the consumers received
//! and, independently, what the two clusters hold.

mod kafka;
mod workload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use switchyard::{Consumer, ConsumerOptions, Producer, Switchyard};
use switchyard_config::client::{self, AdminClient, BearerToken};
use switchyard_config::migration;
use switchyard_config::{ServerConfig, StoreConfig};
use switchyard_proto::v1::{
    ApplyRequest, Change, Cluster, GetVersionRequest, Migration, MigrationPhase,
    StartMigrationRequest, Topic, change::Op,
};

use kafka::Cluster as KafkaCluster;
use workload::{Ledger, Sent, TOPIC};

/// Zero-install Switchyard demo: moves a live logical topic between two Kafka clusters
/// under load, and checks that no record is lost, duplicated or reordered.
///
/// Starts, in this process, a Switchyard config service and two Kafka clusters, "east" and
/// "west" (librdkafka's in-process mock clusters unless --east/--west name real ones).
/// Producers send keyed records to the logical topic `orders` (6 partitions) through the SDK
/// while a consumer group of SDK consumers reads them; after --move-after seconds `orders` is
/// migrated to west (StartMigration), and the migration's phases are printed as it advances. It prints live progress, then one summary line:
///
/// summary: produced=N consumed=N lost=N duplicated=N out_of_order=N moved=orders east->west migration=complete switch_pause_p99_ms=X
///
/// lost: produced records never consumed; duplicated: records consumed more than once;
/// out_of_order: per key, the group (any of its members) received a lower sequence number after a higher one;
/// switch_pause_p99_ms: p99 send latency of the sends started between the Apply and the first
/// delivery on west (the sends the switch can hold). A raw rdkafka reader also checks that
/// every produced record is on east or west exactly once (the `check:` line).
///
/// Exit status: 0 when lost, duplicated and out_of_order are 0 and the check finds every
/// record exactly once; 1 otherwise; 2 for bad arguments or a setup failure.
///
/// Progress goes to stdout; logs to stderr (RUST_LOG=switchyard=info shows the SDK's route
/// switches and drains).
#[derive(Parser, Debug)]
#[command(name = "switchyard-demo", version, verbatim_doc_comment)]
struct Args {
    /// Records per second to produce, in total over all producer tasks.
    #[arg(long, default_value_t = 2000.0, value_name = "MSGS_PER_SEC", value_parser = positive_f64)]
    rate: f64,

    /// Seconds to produce for.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", value_parser = positive_f64)]
    duration: f64,

    /// Seconds after the start at which `orders` is moved from east to west.
    #[arg(long, default_value_t = 3.0, value_name = "SECS", value_parser = positive_f64)]
    move_after: f64,

    /// Bootstrap address of a real Kafka cluster to use as "east" (with --west) instead of an
    /// in-process mock cluster.
    #[arg(long, value_name = "HOST:PORT", requires = "west")]
    east: Option<String>,

    /// Bootstrap address of a real Kafka cluster to use as "west" (with --east).
    #[arg(long, value_name = "HOST:PORT", requires = "east")]
    west: Option<String>,

    /// Producer tasks.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    producers: u32,

    /// Distinct keys (customer-0 ... customer-<N-1>), each owned by one producer task.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    keys: u32,

    /// SDK consumers in the consumer group.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    consumers: u32,

    /// Partitions of `orders` (on both clusters).
    #[arg(long, default_value_t = 6, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1000))]
    partitions: i32,

    /// After producing stops, how long to wait at most for the consumers to catch up.
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = positive_f64)]
    catch_up_timeout: f64,

    /// Consumer group protocol: `classic` (JoinGroup/SyncGroup), `consumer` (KIP-848,
    /// broker-side assignment; Kafka 4.0+ on real clusters), or `auto`: `consumer` on the mock
    /// clusters, `classic` on real ones. (The mock broker's classic groups have a race: a member
    /// whose SyncGroup arrives after the leader's is refused and rejoins, and commits are refused
    /// during the rebalance that follows, so records get delivered twice.)
    #[arg(long, default_value = "auto", value_name = "PROTOCOL", value_parser = ["auto", "classic", "consumer"])]
    group_protocol: String,

    /// Extra client property for the SDK consumers, e.g. `debug=cgrp` (repeatable).
    #[arg(long = "consumer-property", value_name = "KEY=VALUE", value_parser = key_value)]
    consumer_properties: Vec<(String, String)>,

    /// How often to print a progress line, milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS", value_parser = clap::value_parser!(u64).range(50..=60_000))]
    progress_ms: u64,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{s} must be a positive number"))
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn main() {
    let args = Args::parse();
    if args.move_after >= args.duration {
        Args::command_error(format!(
            "--move-after ({}) must be less than --duration ({})",
            args.move_after, args.duration
        ));
    }
    if args.keys < args.producers {
        Args::command_error(format!(
            "--keys ({}) must be at least --producers ({}): each task owns at least one key",
            args.keys, args.producers
        ));
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match rt.block_on(run(args)) {
        Ok(ok) => i32::from(!ok),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {e:#}");
            2
        }
    };
    let _ = std::io::stdout().flush();
    // Exit without tearing down the Kafka clients and mock clusters one by one: everything
    // was checked and printed already.
    std::process::exit(code);
}

impl Args {
    fn command_error(msg: String) -> ! {
        use clap::CommandFactory;
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit()
    }
}

/// Prints a line prefixed with the time since the start.
macro_rules! say {
    ($t0:expr, $($arg:tt)*) => {{
        println!("[{:>6.2}s] {}", $t0.elapsed().as_secs_f64(), format!($($arg)*));
    }};
}

/// Runs the demo; returns whether every check passed.
async fn run(args: Args) -> Result<bool> {
    let ledger = Arc::new(Ledger::new());
    let t0 = ledger.t0;
    let mock = args.east.is_none();
    println!(
        "switchyard-demo: {} producer tasks x {} keys at {} msgs/s for {} s, {} consumers; moving `{TOPIC}` east -> west after {} s",
        args.producers, args.keys, args.rate, args.duration, args.consumers, args.move_after
    );

    // 1. The config service, in this process.
    let svc = switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse().context("listen address")?,
        store: StoreConfig::Memory,
        // Every client here reports when it connects (and every 2 s), before the move.
        migrations: switchyard_config::migration::MigrationConfig {
            client_grace: Duration::ZERO,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .context("starting the config service")?;
    let endpoint = format!("http://{}", svc.local_addr());
    say!(
        t0,
        "config service listening on {endpoint} (in-memory store)"
    );

    // 2. Two Kafka clusters.
    let (east, west) = match (&args.east, &args.west) {
        (Some(e), Some(w)) => (
            KafkaCluster::real("east", e.clone()),
            KafkaCluster::real("west", w.clone()),
        ),
        _ => (KafkaCluster::mock("east")?, KafkaCluster::mock("west")?),
    };
    for c in [&east, &west] {
        say!(
            t0,
            "kafka cluster {:<4} at {} ({})",
            c.name,
            c.bootstrap,
            if c.is_mock() {
                "in-process librdkafka mock cluster"
            } else {
                "real cluster"
            }
        );
    }
    // A fresh physical topic per run on real clusters; the mock clusters are new anyway.
    let physical = if mock {
        TOPIC.to_string()
    } else {
        format!("switchyard-demo-{TOPIC}-{:08x}", rand::random::<u32>())
    };
    for c in [&east, &west] {
        c.create_topic(&physical, args.partitions).await?;
    }
    say!(
        t0,
        "created physical topic {physical} ({} partitions) on east and west",
        args.partitions
    );

    // 3. Register the clusters and the logical topic, on east.
    let mut adm = admin(&endpoint).await?;
    let v0 = current_version(&mut adm).await?;
    let v1 = apply(
        &mut adm,
        v0,
        vec![
            upsert_cluster("east", &east.bootstrap),
            upsert_cluster("west", &west.bootstrap),
            upsert_topic("east", &physical, args.partitions),
        ],
        "register clusters east, west and topic orders on east",
    )
    .await?;
    say!(
        t0,
        "config v{v1}: clusters east, west; logical topic `{TOPIC}` -> east/{physical}"
    );

    // 4. The applications: one for the producers, one for the consumer group.
    let sy_p = connect(&endpoint, "demo-producers").await?;
    let sy_c = connect(&endpoint, "demo-consumers").await?;
    let producer = sy_p.producer();
    let group = format!("switchyard-demo-{:08x}", rand::random::<u32>());
    let protocol = match args.group_protocol.as_str() {
        "auto" if mock => "consumer",
        "auto" => "classic",
        p => p,
    };
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        let mut props: BTreeMap<String, String> = BTreeMap::new();
        // Answer fetches within 100 ms when there is little to read (default 500 ms): lower
        // end-to-end latency, and a shorter wait for other requests queued behind a fetch on
        // the same broker connection.
        props.insert("fetch.wait.max.ms".into(), "100".into());
        if protocol == "classic" {
            // Notice a lost member fast, and rebalance without waiting long.
            props.insert("session.timeout.ms".into(), "6000".into());
            props.insert("heartbeat.interval.ms".into(), "500".into());
        } else {
            // Session timeout and heartbeat interval are broker settings with this protocol
            // (on the mock clusters: 6 s and 250 ms).
            props.insert("group.protocol".into(), protocol.into());
        }
        props.extend(args.consumer_properties.iter().cloned());
        consumers.push(Arc::new(
            sy_c.consumer_with(
                &group,
                &[TOPIC],
                ConsumerOptions {
                    auto_commit: false,
                    drain_grace: Duration::from_secs(2),
                    properties: props,
                },
            )
            .context("creating a consumer")?,
        ));
    }
    let setup_time = t0.elapsed();
    say!(
        t0,
        "start: group {group} ({} consumers, {protocol} protocol, commit after each record, drain grace 2 s), {} producer tasks",
        args.consumers,
        args.producers
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consumer_tasks: Vec<_> = consumers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(workload::consumer_task(
                c.clone(),
                ledger.clone(),
                i,
                stop_rx.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    let stop_at = started + Duration::from_secs_f64(args.duration);
    let producer_tasks: Vec<_> = (0..args.producers)
        .map(|task| {
            tokio::spawn(workload::producer_task(
                producer.clone(),
                ledger.clone(),
                task,
                args.producers,
                args.keys,
                args.rate,
                stop_at,
            ))
        })
        .collect();

    // 5. Live progress; the move.
    let move_at = started + Duration::from_secs_f64(args.move_after);
    let mut tick = tokio::time::interval(Duration::from_millis(args.progress_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progress = Progress::new(&ledger);
    let mut moved: Option<Move> = None;
    let mut move_task = None;
    let mut phase_task: Option<tokio::task::JoinHandle<Result<Migration>>> = None;
    let mut switch_reported = false;
    while Instant::now() < stop_at {
        tokio::select! {
            _ = tick.tick() => {
                progress.print(&ledger, &producer, &consumers, None);
            }
            _ = tokio::time::sleep_until(move_at.into()), if move_task.is_none() && moved.is_none() => {
                let mut adm = adm.clone();
                say!(t0, "MOVE: starting the migration of `{TOPIC}` to west (config v{v1})");
                move_task = Some(tokio::spawn(async move {
                    let started = Instant::now();
                    let m = adm
                        .start_migration(StartMigrationRequest {
                            topic: TOPIC.into(),
                            to_cluster: "west".into(),
                            author: "switchyard-demo".into(),
                            comment: "move orders to west".into(),
                            ..Default::default()
                        })
                        .await
                        .map_err(|s| anyhow!("start migration: {} ({:?})", s.message(), s.code()))?
                        .into_inner();
                    Ok::<_, anyhow::Error>(Move { version: m.switch_version, id: m.id, started, applied: Instant::now() })
                }));
            }
            r = async { move_task.as_mut().expect("guarded").await }, if move_task.is_some() => {
                move_task = None;
                let m = r.context("move task")??;
                say!(t0, "MOVE: migration {} switched the route in config v{} ({:.1} ms); producers and consumers follow it live", m.id, m.version, (m.applied - m.started).as_secs_f64() * 1000.0);
                let mut adm = adm.clone();
                let id = m.id.clone();
                phase_task = Some(tokio::spawn(async move {
                    migration::wait(&mut adm, &id, Duration::from_secs(120), |m| {
                        say!(t0, "MIGRATION {}", migration::progress_line(m));
                    })
                    .await
                }));
                moved = Some(m);
            }
        }
        if let Some(m) = &moved
            && !switch_reported
            && let Some(fw) = ledger.first_west()
            && fw.elapsed() > Duration::from_millis(300)
        {
            switch_reported = true;
            print_switch(t0, m, fw, &ledger.sent());
        }
    }
    for t in producer_tasks {
        t.await.context("producer task")?;
    }
    let Some(mv) = moved else {
        bail!("the move was not applied before the end of the run");
    };
    // The move's progress report, if the run ended before it was printed.
    if !switch_reported && let Some(fw) = ledger.first_west() {
        print_switch(t0, &mv, fw, &ledger.sent());
    }
    let produced = ledger.produced_set();
    let sent_all = ledger.sent();
    say!(
        t0,
        "producers stopped: {} records acknowledged ({} east, {} west), {} send errors; waiting up to {} s for the consumers",
        produced.len(),
        ledger.sent_east.load(Ordering::Relaxed),
        ledger.sent_west.load(Ordering::Relaxed),
        ledger.send_errors.load(Ordering::Relaxed),
        args.catch_up_timeout
    );

    // 6. Wait (bounded) for the consumers to receive everything, and to release east.
    let deadline = Instant::now() + Duration::from_secs_f64(args.catch_up_timeout);
    let mut all_in: Option<Instant> = None;
    loop {
        tick.tick().await;
        let got = ledger.received_of(&produced);
        progress.print(&ledger, &producer, &consumers, Some((got, produced.len())));
        let now = Instant::now();
        if got == produced.len() && all_in.is_none() {
            all_in = Some(now);
            say!(t0, "consumers received every produced record");
        }
        let east_released = consumers
            .iter()
            .all(|c| c.assignment_summary().iter().all(|(cl, _)| cl != "east"));
        match all_in {
            // Keep reading a little longer (and until east is released, bounded) so that
            // records delivered twice, e.g. around a rebalance, are seen.
            Some(at) if east_released && now - at >= Duration::from_secs(1) => break,
            Some(at) if now - at >= Duration::from_secs(5) => {
                say!(
                    t0,
                    "note: the consumers have not released east 5 s after receiving everything"
                );
                break;
            }
            _ => {}
        }
        if now >= deadline {
            say!(
                t0,
                "gave up waiting for the consumers after {} s",
                args.catch_up_timeout
            );
            break;
        }
    }
    // The migration completes once the consumer group has drained east.
    let migration_phase = match phase_task.take() {
        Some(t) => match tokio::time::timeout(Duration::from_secs(30), t).await {
            Ok(Ok(Ok(m))) => {
                let p = MigrationPhase::try_from(m.phase).unwrap_or_default();
                say!(
                    t0,
                    "MIGRATION {} ended {} {:.1} s after it started",
                    m.id,
                    migration::phase_name(p).to_uppercase(),
                    (m.finished_unix_ms - m.created_unix_ms) as f64 / 1000.0
                );
                migration::phase_name(p)
            }
            Ok(Ok(Err(e))) => {
                say!(t0, "MIGRATION did not finish: {e:#}");
                "unfinished"
            }
            _ => {
                say!(
                    t0,
                    "MIGRATION still running 30 s after the consumers caught up"
                );
                "unfinished"
            }
        },
        None => "unfinished",
    };
    let _ = stop_tx.send(true);
    let mut closing = Vec::new();
    for t in consumer_tasks {
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(5), t).await {
            closing.push(c);
        }
    }
    drop(consumers);
    // Leave the groups off the runtime, bounded: the result does not depend on it.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || drop(closing)),
    )
    .await;

    // The independent check: what do the clusters hold?
    let (eb, wb, ph) = (
        east.bootstrap.clone(),
        west.bootstrap.clone(),
        physical.clone(),
    );
    let raw = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((kafka::read_all(&eb, &ph)?, kafka::read_all(&wb, &ph)?))
    })
    .await
    .context("checker task")??;
    let (on_east, on_west) = raw;
    let mut found: HashMap<(u32, u64), u32> = HashMap::new();
    let mut foreign = 0u64;
    for p in on_east.iter().chain(on_west.iter()) {
        match workload::parse_payload(p) {
            Some(k) => *found.entry(k).or_default() += 1,
            None => foreign += 1,
        }
    }
    let missing = produced.iter().filter(|k| !found.contains_key(k)).count();
    let duplicate = found.values().filter(|n| **n > 1).count();
    let not_acked = found.keys().filter(|k| !produced.contains(k)).count() as u64 + foreign;

    let (lost, duplicated, out_of_order, unexpected) = ledger.verdict(&produced);
    let regressions = ledger.regressions();
    for r in &regressions {
        println!(
            "  out-of-order example: consumer {} key customer-{} got seq {} ({}/p{} @{}) after seq {} ({}/p{} @{}) at {:.2}s",
            r.consumer,
            r.key,
            r.now.0,
            r.now.1,
            r.now.2,
            r.now.3,
            r.prev.0,
            r.prev.1,
            r.prev.2,
            r.prev.3,
            r.at.as_secs_f64()
        );
    }
    let failed = ledger.send_failed.load(Ordering::Relaxed);
    let back = ledger.back_to_east.load(Ordering::Relaxed);
    let (recv_err, commit_err) = (
        ledger.recv_errors.load(Ordering::Relaxed),
        ledger.commit_errors.load(Ordering::Relaxed),
    );
    if failed + back + unexpected + not_acked + recv_err + commit_err > 0 {
        println!(
            "notes: failed_sends={failed} keys_back_to_east={back} consumed_not_produced={unexpected} stored_not_acknowledged={not_acked} recv_errors={recv_err} commit_errors={commit_err}"
        );
    }
    let pause_p99 = switch_window(&sent_all, &mv, ledger.first_west())
        .map(|w| percentile(&w, 0.99))
        .unwrap_or_default();
    say!(
        t0,
        "done: setup {:.2} s, produced for {} s at {:.0} msgs/s on average",
        setup_time.as_secs_f64(),
        args.duration,
        produced.len() as f64 / args.duration
    );
    println!(
        "check: east={} west={} missing={missing} duplicate={duplicate}",
        on_east.len(),
        on_west.len()
    );
    let consumed = ledger.received();
    println!(
        "summary: produced={} consumed={consumed} lost={lost} duplicated={duplicated} out_of_order={out_of_order} moved={TOPIC} east->west migration={migration_phase} switch_pause_p99_ms={:.1}",
        produced.len(),
        pause_p99.as_secs_f64() * 1000.0
    );
    let ok = lost == 0
        && migration_phase == "complete"
        && duplicated == 0
        && out_of_order == 0
        && missing == 0
        && duplicate == 0
        && !produced.is_empty();
    drop(sy_c);
    drop(sy_p);
    drop(svc);
    Ok(ok)
}

/// The move: the version it made and when.
#[derive(Debug)]
struct Move {
    version: u64,
    id: String,
    started: Instant,
    applied: Instant,
}

/// Latencies of the sends started between the StartMigration call and the first delivery on west.
fn switch_window(sent: &[Sent], mv: &Move, first_west: Option<Instant>) -> Option<Vec<Duration>> {
    let fw = first_west?;
    let mut v: Vec<Duration> = sent
        .iter()
        .filter(|s| s.started >= mv.started && s.started <= fw)
        .map(|s| s.latency)
        .collect();
    if v.is_empty() {
        // No send started inside the window (a very low rate): the first west delivery's.
        v = sent
            .iter()
            .filter(|s| s.west)
            .min_by_key(|s| s.started + s.latency)
            .map(|s| vec![s.latency])
            .unwrap_or_default();
    }
    v.sort();
    Some(v)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn print_switch(t0: Instant, mv: &Move, first_west: Instant, sent: &[Sent]) {
    let window = switch_window(sent, mv, Some(first_west)).unwrap_or_default();
    let mut all: Vec<Duration> = sent.iter().map(|s| s.latency).collect();
    all.sort();
    say!(
        t0,
        "SWITCH: v{} -> producers' deliveries show west {:.1} ms after StartMigration was called; sends around the switch: {} (p99 {:.1} ms, max {:.1} ms); all sends so far p50 {:.1} ms p99 {:.1} ms",
        mv.version,
        (first_west - mv.started).as_secs_f64() * 1000.0,
        window.len(),
        percentile(&window, 0.99).as_secs_f64() * 1000.0,
        window.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        percentile(&all, 0.5).as_secs_f64() * 1000.0,
        percentile(&all, 0.99).as_secs_f64() * 1000.0,
    );
}

/// The live progress display: one line per tick.
struct Progress {
    last: Instant,
    last_sent: u64,
    last_recv: u64,
}

impl Progress {
    fn new(ledger: &Ledger) -> Self {
        Self {
            last: ledger.t0,
            last_sent: 0,
            last_recv: 0,
        }
    }

    fn print(
        &mut self,
        ledger: &Ledger,
        producer: &Producer,
        consumers: &[Arc<Consumer>],
        catch_up: Option<(usize, usize)>,
    ) {
        let now = Instant::now();
        let dt = (now - self.last).as_secs_f64().max(1e-3);
        let (sent, recv) = (ledger.produced(), ledger.received());
        let send_rate = (sent - self.last_sent) as f64 / dt;
        let recv_rate = (recv - self.last_recv) as f64 / dt;
        (self.last, self.last_sent, self.last_recv) = (now, sent, recv);
        let max_lat = ledger.interval_max_latency_us.swap(0, Ordering::Relaxed);
        // Where the producer sends now, and which clusters the consumers read.
        let route = producer.route_current().unwrap_or_else(|| "-".to_string());
        let mut reading: Vec<String> = consumers
            .iter()
            .flat_map(|c| c.assignment_summary().into_iter().map(|(cl, _)| cl))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        reading.sort();
        let tail = match catch_up {
            Some((got, of)) => format!(" | caught up {got}/{of}"),
            None => String::new(),
        };
        say!(
            ledger.t0,
            "sent {sent:>6} ({send_rate:>5.0}/s, east {} west {}, max latency {:>5.1} ms) -> {route:<4} | received {recv:>6} ({recv_rate:>5.0}/s, east {} west {}) lag {:>5} reading {}{tail}",
            ledger.sent_east.load(Ordering::Relaxed),
            ledger.sent_west.load(Ordering::Relaxed),
            max_lat as f64 / 1000.0,
            ledger.recv_east.load(Ordering::Relaxed),
            ledger.recv_west.load(Ordering::Relaxed),
            sent.saturating_sub(recv),
            if reading.is_empty() {
                "-".to_string()
            } else {
                reading.join("+")
            },
        );
    }
}

/// The cluster the producer's `orders` lane points at now, without awaiting.
trait RouteNow {
    fn route_current(&self) -> Option<String>;
}

impl RouteNow for Producer {
    fn route_current(&self) -> Option<String> {
        futures::FutureExt::now_or_never(self.current_route(TOPIC))
            .flatten()
            .map(|r| r.0)
    }
}

async fn connect(endpoint: &str, app: &str) -> Result<Switchyard> {
    Switchyard::builder(app)
        .endpoint(endpoint)
        .without_cache()
        .status_interval(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("connecting app {app} to the config service"))
}

async fn admin(endpoint: &str) -> Result<AdminClient> {
    let ch = client::connect(endpoint, None)
        .await
        .context("admin connection")?;
    Ok(client::admin(ch, BearerToken::default()))
}

async fn current_version(adm: &mut AdminClient) -> Result<u64> {
    Ok(adm
        .get_version(GetVersionRequest {
            version: 0,
            include_secrets: false,
        })
        .await
        .map_err(|s| anyhow!("get version: {}", s.message()))?
        .into_inner()
        .version)
}

async fn apply(
    adm: &mut AdminClient,
    expected_version: u64,
    changes: Vec<Change>,
    comment: &str,
) -> Result<u64> {
    let r = adm
        .apply(ApplyRequest {
            expected_version,
            changes,
            dry_run: false,
            author: "switchyard-demo".into(),
            comment: comment.into(),
        })
        .await
        .map_err(|s| anyhow!("apply ({comment}): {} ({:?})", s.message(), s.code()))?
        .into_inner();
    if !r.applied {
        bail!("apply ({comment}) changed nothing");
    }
    Ok(r.version)
}

fn upsert_cluster(name: &str, bootstrap: &str) -> Change {
    Change {
        op: Some(Op::UpsertCluster(Cluster {
            name: name.into(),
            bootstrap: vec![bootstrap.into()],
            ..Default::default()
        })),
    }
}

fn upsert_topic(cluster: &str, physical: &str, partitions: i32) -> Change {
    Change {
        op: Some(Op::UpsertTopic(Topic {
            name: TOPIC.into(),
            cluster: cluster.into(),
            physical: physical.into(),
            partitions,
            owner: "switchyard-demo".into(),
            ..Default::default()
        })),
    }
}
