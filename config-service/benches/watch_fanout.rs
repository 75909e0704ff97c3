//! Watch fan-out benchmark for the config service (issue 4).
//!
//! Runs the real `switchyard serve --listen 127.0.0.1:0 --in-memory` binary as a separate process
//! (a fresh one per scenario) and drives it over loopback from this process:
//!
//! 1. **Write-to-delivery latency**: N watchers (default 1,000) each receive W single-topic Apply
//!    writes (default 100), first *paced* (the next write starts once every watcher has the
//!    previous one), then as a *burst* (back to back). Latency = the instant a watcher receives
//!    the event for a version − the instant just before that version's Apply call.
//! 2. **Idle watchers**: server RSS before and with 10,000 watch streams, multiplexed over
//!    500 connections and with one connection per stream, plus the fan-out of one write to all.
//! 3. **Large configuration**: 100 clusters / 20,000 topics in one Apply, then one-topic
//!    changes; bytes a watcher receives for a one-topic change versus the full snapshot.
//!
//! ```text
//! cargo bench -p switchyard-config --bench watch_fanout               # full run
//! cargo bench -p switchyard-config --bench watch_fanout -- --quick    # CI smoke run
//! ```
//!
//! Options (after `--`): `--quick` (also `WATCH_FANOUT_QUICK=1`), `--watchers N`, `--writes N`,
//! `--per-channel N` (watchers per connection in scenario 1; default 1), `--idle N`,
//! `--idle-per-channel N` (default 20), `--no-idle-own-connections`, `--idle-topics N` (size of
//! the configuration idle watchers hold; default 200), `--idle-cycles N` (connect/close cycles
//! on one server, to see whether memory is reused; default 2, 1 with --quick), `--topics N`,
//! `--clusters N`, `--large-changes N`, `--only fanout|idle|large` (repeatable).
//! The server binary is `SWITCHYARD_BIN`, else the one Cargo built for this bench, else
//! `target/release/switchyard` (built with `cargo build --release` when missing).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use hdrhistogram::Histogram;
use prost::Message;
use switchyard_config::client::{self, AdminClient, BearerToken, MetadataClient};
use switchyard_proto::v1::change::Op;
use switchyard_proto::v1::watch_event::Event;
use switchyard_proto::v1::{
    ApplyRequest, Change, Cluster, ClusterState, GetSnapshotRequest, Topic, WatchEvent,
    WatchRequest,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    watchers: usize,
    writes: usize,
    per_channel: usize,
    idle: usize,
    idle_per_channel: usize,
    idle_own_connections: bool,
    idle_topics: usize,
    idle_cycles: usize,
    topics: usize,
    clusters: usize,
    large_changes: usize,
    only: Vec<String>,
}

impl Opts {
    fn full() -> Self {
        Self {
            quick: false,
            watchers: 1_000,
            writes: 100,
            per_channel: 1,
            idle: 10_000,
            idle_per_channel: 20,
            idle_own_connections: true,
            idle_topics: BASE_TOPICS,
            idle_cycles: 2,
            topics: 20_000,
            clusters: 100,
            large_changes: 10,
            only: Vec::new(),
        }
    }

    fn quick() -> Self {
        Self {
            quick: true,
            watchers: 50,
            writes: 10,
            per_channel: 1,
            idle: 500,
            idle_per_channel: 20,
            idle_own_connections: true,
            idle_topics: BASE_TOPICS,
            idle_cycles: 1,
            topics: 2_000,
            clusters: 10,
            large_changes: 3,
            only: Vec::new(),
        }
    }

    fn parse() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick")
            || std::env::var("WATCH_FANOUT_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut o = if quick { Self::quick() } else { Self::full() };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (key, inline) = match a.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (a.as_str(), None),
            };
            if key == "--no-idle-own-connections" {
                o.idle_own_connections = false;
                continue;
            }
            if key == "--only" {
                let v = inline
                    .or_else(|| it.next().cloned())
                    .context("--only needs a value")?;
                ensure!(
                    ["fanout", "idle", "large"].contains(&v.as_str()),
                    "--only takes fanout, idle or large, not {v:?}"
                );
                o.only.push(v);
                continue;
            }
            let target = match key {
                "--watchers" => &mut o.watchers,
                "--writes" => &mut o.writes,
                "--per-channel" => &mut o.per_channel,
                "--idle" => &mut o.idle,
                "--idle-per-channel" => &mut o.idle_per_channel,
                "--idle-topics" => &mut o.idle_topics,
                "--idle-cycles" => &mut o.idle_cycles,
                "--topics" => &mut o.topics,
                "--clusters" => &mut o.clusters,
                "--large-changes" => &mut o.large_changes,
                // `cargo bench` passes `--bench`; ignore it and anything else unknown.
                _ => continue,
            };
            let v = inline
                .or_else(|| it.next().cloned())
                .with_context(|| format!("{key} needs a value"))?;
            *target = v
                .parse()
                .with_context(|| format!("{key} takes a positive integer, not {v:?}"))?;
        }
        ensure!(
            o.watchers > 0
                && o.writes > 0
                && o.per_channel > 0
                && o.idle > 0
                && o.idle_per_channel > 0
                && o.idle_topics > 0
                && o.idle_cycles > 0
                && o.topics > 0
                && o.clusters > 0
                && o.large_changes > 0,
            "counts must be positive"
        );
        Ok(o)
    }

    fn runs(&self, what: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == what)
    }
}

// ---------------------------------------------------------------------------------------------
// The server process

#[derive(Debug, Default)]
struct ServerLog {
    lines: usize,
    problems: Vec<String>,
}

#[derive(Debug)]
struct ServerProc {
    child: Child,
    pid: u32,
    addr: String,
    log: Arc<Mutex<ServerLog>>,
}

impl ServerProc {
    async fn start(bin: &Path) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--in-memory"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("could not start {}", bin.display()))?;
        let pid = child.id().context("the server has no pid")?;
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let stderr = child.stderr.take().context("no stderr pipe")?;
        {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut g = log.lock().unwrap();
                    g.lines += 1;
                    if l.contains("WARN") || l.contains("ERROR") || l.contains("panicked") {
                        g.problems.push(l);
                    }
                }
            });
        }
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(l) = lines.next_line().await? {
                if let Some(a) = l.strip_prefix("listening on ") {
                    return Ok(a.trim().to_string());
                }
            }
            bail!("the server exited before printing \"listening on ADDR\"")
        })
        .await
        .context("the server did not print its address within 30 s")??;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            addr,
            log,
        })
    }

    fn rss_kib(&self) -> u64 {
        proc_status_kib(&self.pid.to_string(), "VmRSS").unwrap_or(0)
    }

    fn hwm_kib(&self) -> u64 {
        proc_status_kib(&self.pid.to_string(), "VmHWM").unwrap_or(0)
    }

    fn cpu_ms(&self) -> u64 {
        proc_cpu_ms(&self.pid.to_string()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for a clean exit; returns a note when it was not clean.
    async fn stop(mut self) -> Vec<String> {
        let mut notes = Vec::new();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(st)) if st.success() => {}
            Ok(Ok(st)) => notes.push(format!("server exited with {st} after SIGTERM")),
            Ok(Err(e)) => notes.push(format!("waiting for the server failed: {e}")),
            Err(_) => {
                notes.push("server did not exit within 15 s of SIGTERM; killed".into());
                let _ = self.child.kill().await;
            }
        }
        // Let the stderr reader catch the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let g = self.log.lock().unwrap();
        notes.extend(g.problems.iter().cloned());
        notes
    }
}

fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clk_tck() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// User + system CPU time of a process, ms.
fn proc_cpu_ms(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state(3) ... utime(14) stime(15) → indexes 11, 12 here.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1000 / clk_tck())
}

fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SWITCHYARD_BIN") {
        return Ok(PathBuf::from(p));
    }
    // Cargo builds the package's binaries for benches and tells us where.
    if let Some(p) = option_env!("CARGO_BIN_EXE_switchyard")
        && Path::new(p).exists()
    {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("release/switchyard");
    if !bin.exists() {
        eprintln!("building {} ...", bin.display());
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "switchyard-config",
                "--bin",
                "switchyard",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .context("could not run cargo build")?;
        ensure!(st.success(), "cargo build of the switchyard binary failed");
    }
    Ok(bin)
}

// ---------------------------------------------------------------------------------------------
// Workload

const REGIONS: [&str; 4] = ["eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"];

fn cluster(i: usize) -> Cluster {
    Cluster {
        name: format!("cluster-{i:03}"),
        bootstrap: (1..=3)
            .map(|b| format!("broker-{b}.cluster-{i:03}.kafka.internal:9092"))
            .collect(),
        properties: [
            ("compression.type".to_string(), "lz4".to_string()),
            ("acks".to_string(), "all".to_string()),
        ]
        .into(),
        labels: [
            ("region".to_string(), REGIONS[i % REGIONS.len()].to_string()),
            ("tier".to_string(), "standard".to_string()),
        ]
        .into(),
        state: ClusterState::Active as i32,
    }
}

fn topic(i: usize, clusters: usize, partitions: i32) -> Topic {
    Topic {
        name: format!("team-{:03}.events-{i:05}", i % 200),
        cluster: format!("cluster-{:03}", i % clusters),
        physical: String::new(),
        partitions,
        owner: format!("team-{:03}", i % 200),
        quota_refs: Vec::new(),
        migrating_from: None,
    }
}

fn upsert_cluster(c: Cluster) -> Change {
    Change {
        op: Some(Op::UpsertCluster(c)),
    }
}

fn upsert_topic(t: Topic) -> Change {
    Change {
        op: Some(Op::UpsertTopic(t)),
    }
}

/// A configuration of `clusters` clusters and `topics` topics.
fn config_changes(clusters: usize, topics: usize) -> Vec<Change> {
    (0..clusters)
        .map(|i| upsert_cluster(cluster(i)))
        .chain((0..topics).map(|i| upsert_topic(topic(i, clusters, 12))))
        .collect()
}

/// The size of the configuration scenarios 1 and 2 start from.
const BASE_CLUSTERS: usize = 4;
const BASE_TOPICS: usize = 200;

fn apply_request(expected: u64, changes: Vec<Change>, comment: String) -> ApplyRequest {
    ApplyRequest {
        expected_version: expected,
        changes,
        dry_run: false,
        author: "watch-fanout-bench".into(),
        comment,
    }
}

/// Applies a change that must produce version `expected + 1`.
async fn apply(admin: &mut AdminClient, req: ApplyRequest) -> anyhow::Result<u64> {
    let expected = req.expected_version;
    let resp = admin.apply(req).await.context("Apply failed")?.into_inner();
    ensure!(
        resp.applied && resp.version == expected + 1,
        "Apply on version {expected} returned version {} applied={}",
        resp.version,
        resp.applied
    );
    Ok(resp.version)
}

/// One write of the fan-out scenarios: bump the partitions of one topic.
fn one_topic_write(expected: u64, k: usize, clusters: usize, topics: usize) -> ApplyRequest {
    let partitions = 12 + i32::try_from(k).unwrap_or(i32::MAX - 12).min(90_000);
    apply_request(
        expected,
        vec![upsert_topic(topic(k % topics, clusters, partitions))],
        format!("bench write {k}"),
    )
}

async fn connect_many(addr: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let addr = addr.to_string();
    let chans: Vec<anyhow::Result<Channel>> = futures::stream::iter(0..n)
        .map(|_| {
            let a = addr.clone();
            async move { Ok(client::connect(&a, None).await?) }
        })
        .buffered(64)
        .collect()
        .await;
    chans.into_iter().collect()
}

fn watch_request(id: usize) -> WatchRequest {
    WatchRequest {
        known_version: 0,
        client_id: format!("bench-{id}"),
        app: "bench".into(),
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn ms_d(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn kib(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!(
            "{bytes} B ({:.2} MiB)",
            bytes as f64 / f64::from(1u32 << 20)
        )
    } else if bytes >= 1 << 10 {
        format!("{bytes} B ({:.1} KiB)", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: write-to-delivery latency

/// Delivery counts per version, so the paced writer knows when every watcher has a version.
#[derive(Debug)]
struct Tracker {
    base: u64,
    delivered: Vec<AtomicUsize>,
    ready: AtomicUsize,
    failed: AtomicUsize,
}

impl Tracker {
    fn new(base: u64, versions: usize) -> Self {
        Self {
            base,
            delivered: (0..versions).map(|_| AtomicUsize::new(0)).collect(),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    fn mark(&self, version: u64) {
        if let Some(c) = version
            .checked_sub(self.base + 1)
            .and_then(|i| self.delivered.get(usize::try_from(i).ok()?))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self, version: u64) -> usize {
        self.delivered[usize::try_from(version - self.base - 1).unwrap()].load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct WatchOutcome {
    /// Version delivered by each event after the initial snapshot, with the receive instant.
    recv: Vec<(u64, Instant)>,
    initial_version: u64,
    /// Events whose `from_version` was not the version the watcher had.
    out_of_order: usize,
    /// Full snapshots received after the initial one (the server skipped the watcher ahead).
    resnapshots: usize,
    error: Option<String>,
}

async fn fanout_watcher(
    mut client: MetadataClient,
    id: usize,
    tracker: Arc<Tracker>,
    last: u64,
    deadline: Instant,
) -> WatchOutcome {
    let mut out = WatchOutcome::default();
    let fail = |out: &mut WatchOutcome, e: String| {
        out.error = Some(e);
        tracker.failed.fetch_add(1, Ordering::Relaxed);
    };
    let mut stream = match tokio::time::timeout_at(deadline, client.watch(watch_request(id))).await
    {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(e)) => {
            fail(&mut out, format!("Watch failed: {e}"));
            return out;
        }
        Err(_) => {
            fail(&mut out, "Watch timed out".into());
            return out;
        }
    };
    let mut have = match tokio::time::timeout_at(deadline, stream.message()).await {
        Ok(Ok(Some(WatchEvent {
            event: Some(Event::Snapshot(s)),
        }))) => s.version,
        other => {
            fail(
                &mut out,
                format!("expected an initial snapshot, got {other:?}"),
            );
            return out;
        }
    };
    out.initial_version = have;
    tracker.ready.fetch_add(1, Ordering::Relaxed);
    while have < last {
        let msg = tokio::time::timeout_at(deadline, stream.message()).await;
        let now = Instant::now();
        match msg {
            Err(_) => {
                fail(&mut out, format!("timed out at version {have}"));
                return out;
            }
            Ok(Err(e)) => {
                fail(&mut out, format!("stream error at version {have}: {e}"));
                return out;
            }
            Ok(Ok(None)) => {
                fail(&mut out, format!("stream ended at version {have}"));
                return out;
            }
            Ok(Ok(Some(ev))) => match ev.event {
                Some(Event::Delta(d)) => {
                    if d.from_version != have {
                        out.out_of_order += 1;
                    }
                    have = d.to_version;
                }
                Some(Event::Snapshot(s)) => {
                    out.resnapshots += 1;
                    have = s.version;
                }
                None => {
                    fail(&mut out, "empty WatchEvent".into());
                    return out;
                }
            },
        }
        out.recv.push((have, now));
        tracker.mark(have);
    }
    out
}

#[derive(Debug)]
struct PhaseStats {
    name: &'static str,
    writes: usize,
    deliveries: u64,
    latency: Histogram<u64>,
    /// Per write: when the last watcher had it.
    completion: Histogram<u64>,
    apply: Histogram<u64>,
    missing: u64,
    server_cpu_ms: u64,
    client_cpu_ms: u64,
    wall: Duration,
}

#[derive(Debug)]
struct FanoutReport {
    watchers: usize,
    channels: usize,
    connect: Duration,
    all_snapshots: Duration,
    rss_before_kib: u64,
    rss_with_kib: u64,
    rss_after_kib: u64,
    phases: Vec<PhaseStats>,
    failed_watchers: usize,
    out_of_order: usize,
    resnapshots: usize,
    errors: Vec<String>,
    server_notes: Vec<String>,
}

async fn bench_fanout(bin: &Path, o: &Opts) -> anyhow::Result<FanoutReport> {
    let srv = ServerProc::start(bin).await?;
    let mut admin = client::admin(
        client::connect(&srv.addr, None).await?,
        BearerToken::default(),
    );
    let mut cur = apply(
        &mut admin,
        apply_request(0, config_changes(BASE_CLUSTERS, BASE_TOPICS), "base".into()),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before_kib = srv.rss_kib();

    let n_channels = o.watchers.div_ceil(o.per_channel);
    let t = Instant::now();
    let channels = connect_many(&srv.addr, n_channels).await?;
    let connect = t.elapsed();

    let base = cur;
    let total_writes = 2 * o.writes;
    let last = base + total_writes as u64;
    let tracker = Arc::new(Tracker::new(base, total_writes));
    let deadline = Instant::now() + Duration::from_secs(600);
    let t = Instant::now();
    let handles: Vec<JoinHandle<WatchOutcome>> = (0..o.watchers)
        .map(|i| {
            let c = client::metadata(channels[i / o.per_channel].clone(), BearerToken::default());
            tokio::spawn(fanout_watcher(c, i, tracker.clone(), last, deadline))
        })
        .collect();
    let ok = wait_until(Duration::from_secs(300), || {
        tracker.ready.load(Ordering::Relaxed) + tracker.failed.load(Ordering::Relaxed) >= o.watchers
    })
    .await;
    ensure!(
        ok,
        "watchers did not all receive their snapshot within 300 s"
    );
    let all_snapshots = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_with_kib = srv.rss_kib();

    let mut sends: HashMap<u64, Instant> = HashMap::new();
    let mut phases = Vec::new();
    let mut errors = Vec::new();
    let mut k = 0usize;
    for (name, paced) in [("paced", true), ("burst", false)] {
        let first = cur + 1;
        let mut apply_h = hist();
        let cpu0 = (srv.cpu_ms(), proc_cpu_ms("self").unwrap_or(0));
        let t = Instant::now();
        for _ in 0..o.writes {
            k += 1;
            let req = one_topic_write(cur, k, BASE_CLUSTERS, BASE_TOPICS);
            let sent = Instant::now();
            sends.insert(cur + 1, sent);
            cur = apply(&mut admin, req).await?;
            apply_h.record(micros(sent.elapsed()))?;
            if paced {
                let v = cur;
                let all = wait_until(Duration::from_secs(30), || {
                    tracker.count(v) + tracker.failed.load(Ordering::Relaxed) >= o.watchers
                })
                .await;
                if !all {
                    errors.push(format!(
                        "version {v}: only {} of {} watchers had it after 30 s",
                        tracker.count(v),
                        o.watchers
                    ));
                }
                // A short quiet gap so each write starts against an idle server.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let last_v = cur;
        wait_until(Duration::from_secs(60), || {
            tracker.count(last_v) + tracker.failed.load(Ordering::Relaxed) >= o.watchers
        })
        .await;
        let wall = t.elapsed();
        let cpu1 = (srv.cpu_ms(), proc_cpu_ms("self").unwrap_or(0));
        phases.push((
            name,
            first..=cur,
            apply_h,
            cpu1.0 - cpu0.0,
            cpu1.1 - cpu0.1,
            wall,
        ));
    }

    let mut outcomes = Vec::with_capacity(handles.len());
    for h in handles {
        outcomes.push(h.await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after_kib = srv.rss_kib();
    drop(channels);

    let mut failed_watchers = 0;
    let mut out_of_order = 0;
    let mut resnapshots = 0;
    for w in &outcomes {
        if let Some(e) = &w.error {
            failed_watchers += 1;
            if errors.len() < 20 {
                errors.push(e.clone());
            }
        }
        out_of_order += w.out_of_order;
        resnapshots += w.resnapshots;
    }
    let mut stats = Vec::new();
    for (name, range, apply_h, scpu, ccpu, wall) in phases {
        let mut latency = hist();
        let mut per_version_max: HashMap<u64, u64> = HashMap::new();
        let mut missing = 0u64;
        let mut deliveries = 0u64;
        for w in &outcomes {
            let mut got: Vec<u64> = w
                .recv
                .iter()
                .map(|(v, _)| *v)
                .filter(|v| range.contains(v))
                .collect();
            got.dedup();
            missing += (range.end() - range.start() + 1).saturating_sub(got.len() as u64);
            for (v, at) in &w.recv {
                if !range.contains(v) {
                    continue;
                }
                let us = micros(at.saturating_duration_since(sends[v]));
                latency.record(us)?;
                deliveries += 1;
                let m = per_version_max.entry(*v).or_default();
                *m = (*m).max(us);
            }
        }
        let mut completion = hist();
        for us in per_version_max.values() {
            completion.record(*us)?;
        }
        stats.push(PhaseStats {
            name,
            writes: o.writes,
            deliveries,
            latency,
            completion,
            apply: apply_h,
            missing,
            server_cpu_ms: scpu,
            client_cpu_ms: ccpu,
            wall,
        });
    }
    let server_notes = srv.stop().await;
    Ok(FanoutReport {
        watchers: o.watchers,
        channels: n_channels,
        connect,
        all_snapshots,
        rss_before_kib,
        rss_with_kib,
        rss_after_kib,
        phases: stats,
        failed_watchers,
        out_of_order,
        resnapshots,
        errors,
        server_notes,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: idle watchers and memory

#[derive(Debug)]
struct IdleReport {
    watchers: usize,
    topics: usize,
    snapshot_bytes: usize,
    channels: usize,
    rss_before_kib: u64,
    hwm_kib: u64,
    /// The first cycle is the measurement; later ones show whether memory is reused.
    cycles: Vec<IdleCycle>,
    server_notes: Vec<String>,
}

async fn idle_watcher(
    mut client: MetadataClient,
    id: usize,
    tracker: Arc<Tracker>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Instant>, String> {
    let fail = |e: String| {
        tracker.failed.fetch_add(1, Ordering::Relaxed);
        Err(e)
    };
    let mut stream = match client.watch(watch_request(id)).await {
        Ok(r) => r.into_inner(),
        Err(e) => return fail(format!("Watch failed: {e}")),
    };
    match stream.message().await {
        Ok(Some(WatchEvent {
            event: Some(Event::Snapshot(_)),
        })) => {}
        other => return fail(format!("expected an initial snapshot, got {other:?}")),
    }
    tracker.ready.fetch_add(1, Ordering::Relaxed);
    let mut probe = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(probe),
            m = stream.message() => match m {
                Ok(Some(ev)) => {
                    if probe.is_none() {
                        probe = Some(Instant::now());
                        match ev.event {
                            Some(Event::Delta(d)) => tracker.mark(d.to_version),
                            Some(Event::Snapshot(s)) => tracker.mark(s.version),
                            None => {}
                        }
                    }
                }
                Ok(None) => return fail("stream ended".into()),
                Err(e) => return fail(format!("stream error: {e}")),
            }
        }
    }
}

/// One connect → watch → write → close cycle of the idle scenario.
#[derive(Debug)]
struct IdleCycle {
    connect: Duration,
    all_snapshots: Duration,
    rss_conns_kib: u64,
    rss_with_kib: u64,
    rss_after_write_kib: u64,
    rss_after_close_kib: u64,
    client_rss_kib: u64,
    probe_latency: Histogram<u64>,
    probe_missing: usize,
    failed: usize,
    errors: Vec<String>,
    version: u64,
}

async fn idle_cycle(
    srv: &ServerProc,
    admin: &mut AdminClient,
    o: &Opts,
    per_channel: usize,
    base: u64,
    k: usize,
) -> anyhow::Result<IdleCycle> {
    let n_channels = o.idle.div_ceil(per_channel);
    let t = Instant::now();
    let channels = connect_many(&srv.addr, n_channels).await?;
    let connect = t.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_conns_kib = srv.rss_kib();

    let tracker = Arc::new(Tracker::new(base, 1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let handles: Vec<_> = (0..o.idle)
        .map(|i| {
            let c = client::metadata(channels[i / per_channel].clone(), BearerToken::default());
            tokio::spawn(idle_watcher(c, i, tracker.clone(), stop_rx.clone()))
        })
        .collect();
    let ok = wait_until(Duration::from_secs(300), || {
        tracker.ready.load(Ordering::Relaxed) + tracker.failed.load(Ordering::Relaxed) >= o.idle
    })
    .await;
    ensure!(
        ok,
        "idle watchers did not all receive a snapshot within 300 s"
    );
    let all_snapshots = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with_kib = srv.rss_kib();
    let client_rss_kib = proc_status_kib("self", "VmRSS").unwrap_or(0);

    // One write fanned out to every idle watcher.
    let sent = Instant::now();
    let version = apply(
        admin,
        one_topic_write(base, k, BASE_CLUSTERS, o.idle_topics),
    )
    .await?;
    wait_until(Duration::from_secs(60), || {
        tracker.count(version) + tracker.failed.load(Ordering::Relaxed) >= o.idle
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_write_kib = srv.rss_kib();

    let _ = stop_tx.send(true);
    let mut probe_latency = hist();
    let mut probe_missing = 0;
    let mut failed = 0;
    let mut errors = Vec::new();
    for h in handles {
        match h.await? {
            Ok(Some(at)) => probe_latency.record(micros(at.saturating_duration_since(sent)))?,
            Ok(None) => probe_missing += 1,
            Err(e) => {
                failed += 1;
                if errors.len() < 20 {
                    errors.push(e);
                }
            }
        }
    }
    drop(channels);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_close_kib = srv.rss_kib();
    Ok(IdleCycle {
        connect,
        all_snapshots,
        rss_conns_kib,
        rss_with_kib,
        rss_after_write_kib,
        rss_after_close_kib,
        client_rss_kib,
        probe_latency,
        probe_missing,
        failed,
        errors,
        version,
    })
}

async fn bench_idle(bin: &Path, o: &Opts, per_channel: usize) -> anyhow::Result<IdleReport> {
    let srv = ServerProc::start(bin).await?;
    let ch = client::connect(&srv.addr, None).await?;
    let mut admin = client::admin(ch.clone(), BearerToken::default());
    let mut base = apply(
        &mut admin,
        apply_request(
            0,
            config_changes(BASE_CLUSTERS, o.idle_topics),
            "base".into(),
        ),
    )
    .await?;
    let snapshot = client::metadata(ch, BearerToken::default())
        .get_snapshot(GetSnapshotRequest {})
        .await?
        .into_inner();
    let snapshot_bytes = WatchEvent {
        event: Some(Event::Snapshot(snapshot)),
    }
    .encoded_len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = srv.rss_kib();

    let mut cycles = Vec::new();
    for k in 1..=o.idle_cycles {
        let c = idle_cycle(&srv, &mut admin, o, per_channel, base, k).await?;
        base = c.version;
        cycles.push(c);
    }
    let hwm_kib = srv.hwm_kib();
    let server_notes = srv.stop().await;
    Ok(IdleReport {
        watchers: o.idle,
        topics: o.idle_topics,
        snapshot_bytes,
        channels: o.idle.div_ceil(per_channel),
        rss_before_kib,
        hwm_kib,
        cycles,
        server_notes,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: a large configuration

#[derive(Debug)]
struct LargeReport {
    clusters: usize,
    topics: usize,
    request_bytes: usize,
    response_bytes: usize,
    apply_batch: Duration,
    rss_before_kib: u64,
    rss_after_kib: u64,
    snapshot_bytes: usize,
    cold_snapshot: Duration,
    warm_snapshot: Duration,
    change_apply: Histogram<u64>,
    change_delivery: Histogram<u64>,
    delta_bytes: Vec<usize>,
    resume_bytes: usize,
    snapshot_after_change: Duration,
    errors: Vec<String>,
    server_notes: Vec<String>,
}

/// Opens a watch stream and returns the first event with the time it took.
async fn first_event(
    client: &mut MetadataClient,
    known: u64,
) -> anyhow::Result<(WatchEvent, tonic::Streaming<WatchEvent>, Duration)> {
    let t = Instant::now();
    let mut s = client
        .watch(WatchRequest {
            known_version: known,
            client_id: "bench-large".into(),
            app: "bench".into(),
        })
        .await?
        .into_inner();
    let ev = tokio::time::timeout(Duration::from_secs(120), s.message())
        .await
        .context("no first event within 120 s")??
        .context("the stream ended before the first event")?;
    Ok((ev, s, t.elapsed()))
}

async fn bench_large(bin: &Path, o: &Opts) -> anyhow::Result<LargeReport> {
    let srv = ServerProc::start(bin).await?;
    let ch = client::connect(&srv.addr, None).await?;
    let mut admin = client::admin(ch.clone(), BearerToken::default());
    let mut meta = client::metadata(ch, BearerToken::default());
    let mut errors = Vec::new();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before_kib = srv.rss_kib();

    let req = apply_request(
        0,
        config_changes(o.clusters, o.topics),
        "large batch".into(),
    );
    let request_bytes = req.encoded_len();
    let t = Instant::now();
    let resp = admin.apply(req).await?.into_inner();
    let apply_batch = t.elapsed();
    let response_bytes = resp.encoded_len();
    ensure!(
        resp.applied && resp.version == 1,
        "the large batch was not applied"
    );
    let mut cur = resp.version;

    let (ev, mut w1, cold_snapshot) = first_event(&mut meta, 0).await?;
    let snapshot_bytes = ev.encoded_len();
    match &ev.event {
        Some(Event::Snapshot(s))
            if s.topics.len() == o.topics && s.clusters.len() == o.clusters => {}
        Some(Event::Snapshot(s)) => errors.push(format!(
            "snapshot has {} clusters and {} topics, expected {} and {}",
            s.clusters.len(),
            s.topics.len(),
            o.clusters,
            o.topics
        )),
        _ => errors.push("the first event was not a snapshot".into()),
    }
    let (_, _w2, warm_snapshot) = first_event(&mut meta, 0).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after_kib = srv.rss_kib();

    let mut change_apply = hist();
    let mut change_delivery = hist();
    let mut delta_bytes = Vec::new();
    for k in 1..=o.large_changes {
        let req = apply_request(
            cur,
            vec![upsert_topic(topic(
                k % o.topics,
                o.clusters,
                12 + i32::try_from(k).unwrap_or(0),
            ))],
            format!("one-topic change {k}"),
        );
        let t = Instant::now();
        cur = apply(&mut admin, req).await?;
        change_apply.record(micros(t.elapsed()))?;
        let ev = tokio::time::timeout(Duration::from_secs(60), w1.message())
            .await
            .context("no event for the one-topic change within 60 s")??
            .context("watch stream ended")?;
        change_delivery.record(micros(t.elapsed()))?;
        delta_bytes.push(ev.encoded_len());
        match &ev.event {
            Some(Event::Delta(d))
                if d.to_version == cur
                    && d.upsert_topics.len() == 1
                    && d.from_version == cur - 1 => {}
            other => errors.push(format!(
                "one-topic change {k}: unexpected event {}",
                match other {
                    Some(Event::Snapshot(s)) => format!("snapshot v{}", s.version),
                    Some(Event::Delta(d)) => format!(
                        "delta {}→{} with {} topics",
                        d.from_version,
                        d.to_version,
                        d.upsert_topics.len()
                    ),
                    None => "empty".into(),
                }
            )),
        }
    }
    // A watcher resuming from the version before the last change gets only the delta.
    let (ev, _w3, _) = first_event(&mut meta, cur - 1).await?;
    let resume_bytes = ev.encoded_len();
    if !matches!(ev.event, Some(Event::Delta(_))) {
        errors.push("resuming from the previous version did not yield a delta".into());
    }
    let (_, _w4, snapshot_after_change) = first_event(&mut meta, 0).await?;
    drop((w1, _w2, _w3, _w4));
    let server_notes = srv.stop().await;
    Ok(LargeReport {
        clusters: o.clusters,
        topics: o.topics,
        request_bytes,
        response_bytes,
        apply_batch,
        rss_before_kib,
        rss_after_kib,
        snapshot_bytes,
        cold_snapshot,
        warm_snapshot,
        change_apply,
        change_delivery,
        delta_bytes,
        resume_bytes,
        snapshot_after_change,
        errors,
        server_notes,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

fn pct(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        ms(h.value_at_quantile(q))
    }
}

fn print_fanout(r: &FanoutReport, out: &mut String) {
    let _ = writeln!(
        out,
        "\n### 1. Write-to-delivery latency ({} watchers over {} connections, {} writes per phase)\n",
        r.watchers,
        r.channels,
        r.phases.first().map_or(0, |p| p.writes)
    );
    let _ = writeln!(
        out,
        "| phase | deliveries | p50 ms | p90 ms | p99 ms | max ms | all-watchers p50 ms | all-watchers max ms | Apply p50 ms | Apply p99 ms | missing | server CPU ms/write | bench CPU ms/write | wall s |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in &r.phases {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} |",
            p.name,
            p.deliveries,
            pct(&p.latency, 0.5),
            pct(&p.latency, 0.9),
            pct(&p.latency, 0.99),
            pct(&p.latency, 1.0),
            pct(&p.completion, 0.5),
            pct(&p.completion, 1.0),
            pct(&p.apply, 0.5),
            pct(&p.apply, 0.99),
            p.missing,
            p.server_cpu_ms as f64 / p.writes as f64,
            p.client_cpu_ms as f64 / p.writes as f64,
            p.wall.as_secs_f64()
        );
    }
    let target = r
        .phases
        .first()
        .map(|p| p.latency.value_at_quantile(0.99) < 100_000)
        .unwrap_or(false);
    let _ = writeln!(
        out,
        "\n- target p99 < 100 ms (paced): {}",
        if target { "MET" } else { "MISSED" }
    );
    let _ = writeln!(
        out,
        "- connect {} connections: {} ms; all {} initial snapshots: {} ms",
        r.channels,
        ms_d(r.connect),
        r.watchers,
        ms_d(r.all_snapshots)
    );
    let _ = writeln!(
        out,
        "- server RSS: {} before watchers, {} with watchers, {} after the writes",
        mib(r.rss_before_kib),
        mib(r.rss_with_kib),
        mib(r.rss_after_kib)
    );
    let _ = writeln!(
        out,
        "- order check: {} failed watchers, {} out-of-order events, {} mid-stream snapshots (skip-ahead), {} missing deliveries in total",
        r.failed_watchers,
        r.out_of_order,
        r.resnapshots,
        r.phases.iter().map(|p| p.missing).sum::<u64>()
    );
    notes(out, "errors", &r.errors);
    notes(out, "server log warnings/errors", &r.server_notes);
}

fn print_idle(rs: &[IdleReport], out: &mut String) {
    let Some(first) = rs.first() else { return };
    let _ = writeln!(
        out,
        "\n### 2. {} idle watchers: server memory ({} clusters / {} topics, snapshot event {})\n",
        first.watchers,
        BASE_CLUSTERS,
        first.topics,
        kib(first.snapshot_bytes)
    );
    let _ = writeln!(
        out,
        "| connections | cycle | RSS before | RSS with connections only | RSS with watchers | per watcher | RSS after 1 write | RSS after close | connect s | all snapshots s | 1 write to all: p50 / p99 / max ms | missing | failed |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rs {
        for (i, c) in r.cycles.iter().enumerate() {
            let per = (c.rss_with_kib.saturating_sub(r.rss_before_kib)) as f64 / r.watchers as f64;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1} KiB | {} | {} | {:.2} | {:.2} | {} / {} / {} | {} | {} |",
                r.channels,
                i + 1,
                mib(r.rss_before_kib),
                mib(c.rss_conns_kib),
                mib(c.rss_with_kib),
                per,
                mib(c.rss_after_write_kib),
                mib(c.rss_after_close_kib),
                c.connect.as_secs_f64(),
                c.all_snapshots.as_secs_f64(),
                pct(&c.probe_latency, 0.5),
                pct(&c.probe_latency, 0.99),
                pct(&c.probe_latency, 1.0),
                c.probe_missing,
                c.failed
            );
        }
    }
    let _ = writeln!(out);
    for r in rs {
        let _ = writeln!(
            out,
            "- {} connections: server peak RSS (VmHWM) {}; bench (client) process RSS with all watchers {}",
            r.channels,
            mib(r.hwm_kib),
            mib(r.cycles.first().map_or(0, |c| c.client_rss_kib))
        );
        for c in &r.cycles {
            notes(out, "errors", &c.errors);
        }
        notes(out, "server log warnings/errors", &r.server_notes);
    }
}

fn print_large(r: &LargeReport, out: &mut String) {
    let _ = writeln!(
        out,
        "\n### 3. {} clusters / {} topics\n",
        r.clusters, r.topics
    );
    let _ = writeln!(out, "| measurement | value |");
    let _ = writeln!(out, "|---|---|");
    let rows = [
        ("Apply request size (one batch)", kib(r.request_bytes)),
        ("Apply response size (diff)", kib(r.response_bytes)),
        (
            "Apply latency, whole batch",
            format!("{} ms", ms_d(r.apply_batch)),
        ),
        (
            "server RSS before / after (2 watchers)",
            format!("{} / {}", mib(r.rss_before_kib), mib(r.rss_after_kib)),
        ),
        ("full snapshot event (encoded_len)", kib(r.snapshot_bytes)),
        (
            "new watcher → full snapshot, first (server encodes)",
            format!("{} ms", ms_d(r.cold_snapshot)),
        ),
        (
            "new watcher → full snapshot, second (cached encoding)",
            format!("{} ms", ms_d(r.warm_snapshot)),
        ),
        (
            "new watcher → full snapshot, after changes (re-encode)",
            format!("{} ms", ms_d(r.snapshot_after_change)),
        ),
        (
            "one-topic change: Apply latency p50 / max",
            format!(
                "{} / {} ms (n={})",
                pct(&r.change_apply, 0.5),
                pct(&r.change_apply, 1.0),
                r.change_apply.len()
            ),
        ),
        (
            "one-topic change: write-to-delivery p50 / max",
            format!(
                "{} / {} ms",
                pct(&r.change_delivery, 0.5),
                pct(&r.change_delivery, 1.0)
            ),
        ),
        (
            "one-topic change: bytes a watcher receives",
            format!(
                "{} (min {}, max {})",
                kib(r.delta_bytes.first().copied().unwrap_or(0)),
                r.delta_bytes.iter().min().copied().unwrap_or(0),
                r.delta_bytes.iter().max().copied().unwrap_or(0)
            ),
        ),
        (
            "delta / full snapshot",
            format!(
                "{:.5} % (1 : {:.0})",
                r.delta_bytes.first().copied().unwrap_or(0) as f64 * 100.0
                    / r.snapshot_bytes.max(1) as f64,
                r.snapshot_bytes as f64 / r.delta_bytes.first().copied().unwrap_or(1).max(1) as f64
            ),
        ),
        (
            "resuming watcher (known = previous version) receives",
            kib(r.resume_bytes),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    notes(out, "errors", &r.errors);
    notes(out, "server log warnings/errors", &r.server_notes);
}

fn notes(out: &mut String, what: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "- {what} ({}):", items.len());
    for i in items.iter().take(20) {
        let _ = writeln!(out, "  - {i}");
    }
}

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(opts)) {
        Ok(clean) if clean => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("watch_fanout: some deliveries were missing or watchers failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenarios; returns whether every delivery arrived.
async fn run(o: Opts) -> anyhow::Result<bool> {
    let bin = server_binary()?;
    let nofile = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## watch_fanout{} — server {} (separate process, --in-memory), {} CPUs, open-files limit {}",
        if o.quick { " (quick)" } else { "" },
        bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        nofile
    );
    let _ = writeln!(out, "load average at start: {}", loadavg());
    println!("{out}");
    let mut clean = true;

    if o.runs("fanout") {
        eprintln!(
            "[1/3] fan-out: {} watchers, {} per connection, 2 × {} writes ...",
            o.watchers, o.per_channel, o.writes
        );
        let r = bench_fanout(&bin, &o).await?;
        clean &= r.failed_watchers == 0 && r.phases.iter().all(|p| p.missing == 0);
        let mut s = String::new();
        print_fanout(&r, &mut s);
        println!("{s}");
    }
    if o.runs("idle") {
        let mut variants = vec![o.idle_per_channel];
        if o.idle_own_connections && o.idle_per_channel != 1 {
            variants.push(1);
        }
        let mut rs = Vec::new();
        for per in variants {
            eprintln!(
                "[2/3] idle: {} watchers, {} per connection ...",
                o.idle, per
            );
            let r = bench_idle(&bin, &o, per).await?;
            clean &= r
                .cycles
                .iter()
                .all(|c| c.failed == 0 && c.probe_missing == 0);
            rs.push(r);
        }
        let mut s = String::new();
        print_idle(&rs, &mut s);
        println!("{s}");
    }
    if o.runs("large") {
        eprintln!(
            "[3/3] large: {} clusters, {} topics ...",
            o.clusters, o.topics
        );
        let r = bench_large(&bin, &o).await?;
        clean &= r.errors.is_empty();
        let mut s = String::new();
        print_large(&r, &mut s);
        println!("{s}");
    }
    println!("load average at end: {}", loadavg());
    Ok(clean)
}

/// `/proc/loadavg`: the benchmark shares the machine with whatever else runs.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
