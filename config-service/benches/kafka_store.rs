//! Kafka-log store versus the embedded file store, in the same run (issue 9).
//!
//! In this process, on loopback: one config service on the file store (a fresh temporary
//! directory, fsync per commit) and three replicas on a fresh Kafka-log topic on the first
//! cluster of `SWITCHYARD_KAFKA_CLUSTERS` (as `scripts/kafka.sh` prints).
//!
//! 1. **Write latency**: W sequential Apply calls (one cluster added each) through one server /
//!    one replica; the latency of each Apply RPC (for the Kafka store: produce with acks=all,
//!    then read the record back and apply it).
//! 2. **Propagation**: N watchers (default 1,000) on the file-store server, and N watchers
//!    spread round-robin over the three replicas; C paced changes written through one server
//!    (the next starts when every watcher has the previous); latency = when a watcher receives
//!    the version − just before the Apply call. Reported per watcher (p50/p99) and for the
//!    last of the N watchers.
//!
//! ```text
//! source /tmp/kafka.env   # SWITCHYARD_KAFKA_CLUSTERS from scripts/kafka.sh
//! cargo bench -p switchyard-config --bench kafka_store               # full run
//! cargo bench -p switchyard-config --bench kafka_store -- --quick    # smoke run
//! ```
//!
//! 3. **Failover from a hung replica**: two `switchyard serve` processes on another fresh log
//!    topic and an SDK client given both endpoints (default watch stall timeout, 10 s). The
//!    replica the client watches is stopped with SIGSTOP (it keeps its sockets but answers
//!    nothing), a change is applied through the other one, and the time from that Apply's
//!    acknowledgement to the client using the new version is measured; then the stopped
//!    replica gets SIGCONT and the next round stops the other one, at a random point (0–5 s)
//!    of the watch's keepalive period.
//!
//! Options (after `--`): `--quick`, `--writes N` (default 200), `--watchers N` (default 1000),
//! `--changes N` (default 20), `--per-channel N` (watchers per HTTP/2 connection; default 10),
//! `--failovers N` (rounds of 3.; default 5, 1 with `--quick`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use switchyard_config::client::{self, AdminClient, BearerToken};
use switchyard_config::{RunningServer, ServerConfig, StoreConfig};
use switchyard_proto::v1::change::Op;
use switchyard_proto::v1::watch_event::Event;
use switchyard_proto::v1::{ApplyRequest, Change, Cluster, WatchRequest};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone)]
struct Opts {
    writes: usize,
    watchers: usize,
    changes: usize,
    per_channel: usize,
    failovers: usize,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        writes: 200,
        watchers: 1000,
        changes: 20,
        per_channel: 10,
        failovers: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<usize> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            let n: usize = v
                .parse()
                .with_context(|| format!("{name} {v:?} is not a number"))?;
            ensure!(n > 0, "{name} must be at least 1");
            Ok(n)
        };
        match a.as_str() {
            "--quick" => {
                o.writes = 30;
                o.watchers = 150;
                o.changes = 5;
                o.failovers = 1;
            }
            "--writes" => o.writes = num("--writes")?,
            "--watchers" => o.watchers = num("--watchers")?,
            "--changes" => o.changes = num("--changes")?,
            "--per-channel" => o.per_channel = num("--per-channel")?,
            "--failovers" => o.failovers = num("--failovers")?,
            // Cargo passes --bench to harness=false benches.
            "--bench" => {}
            other => bail!("unknown option {other:?}"),
        }
    }
    Ok(o)
}

fn add_cluster(name: &str) -> Vec<Change> {
    vec![Change {
        op: Some(Op::UpsertCluster(Cluster {
            name: name.into(),
            bootstrap: vec!["127.0.0.1:9092".into()],
            ..Default::default()
        })),
    }]
}

async fn start(store: StoreConfig) -> anyhow::Result<RunningServer> {
    switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        store,
        ..Default::default()
    })
    .await
}

async fn admin(s: &RunningServer) -> anyhow::Result<AdminClient> {
    let ch = client::connect(&format!("http://{}", s.local_addr()), None).await?;
    Ok(client::admin(ch, BearerToken::default()))
}

/// Applies one change at `expected`; returns the new version.
async fn apply(a: &mut AdminClient, expected: u64, name: &str) -> anyhow::Result<u64> {
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        a.apply(ApplyRequest {
            expected_version: expected,
            changes: add_cluster(name),
            dry_run: false,
            author: "bench".into(),
            comment: String::new(),
        }),
    )
    .await
    .context("Apply timed out")??
    .into_inner();
    ensure!(r.applied && r.version == expected + 1, "Apply: {r:?}");
    Ok(r.version)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Sequential writes through `s`, starting at `version`; latency of each Apply in µs.
async fn write_latency(
    s: &RunningServer,
    mut version: u64,
    n: usize,
    tag: &str,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut a = admin(s).await?;
    let mut h = hist();
    for i in 0..n {
        let t0 = Instant::now();
        version = apply(&mut a, version, &format!("{tag}-w{i}")).await?;
        h.record(t0.elapsed().as_micros().max(1) as u64)?;
    }
    Ok((h, version))
}

/// Opens `n` watchers spread round-robin over `servers` and waits for their first snapshot;
/// returns the receiver of (version, received at) events.
async fn watchers(
    servers: &[&RunningServer],
    n: usize,
    per_channel: usize,
) -> anyhow::Result<mpsc::UnboundedReceiver<(u64, Instant)>> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut channels = Vec::new();
    for i in 0..n {
        let s = servers[i % servers.len()];
        let slot = i / servers.len() / per_channel;
        let key = (i % servers.len(), slot);
        let ch = match channels.iter().find(|(k, _)| *k == key) {
            Some((_, c)) => tonic::transport::Channel::clone(c),
            None => {
                let c = client::connect(&format!("http://{}", s.local_addr()), None).await?;
                channels.push((key, c.clone()));
                c
            }
        };
        let mut meta = client::metadata(ch, BearerToken::default());
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(r) = meta
                .watch(WatchRequest {
                    known_version: 0,
                    client_id: format!("bench-{i}"),
                    app: "bench".into(),
                })
                .await
            else {
                return;
            };
            let mut st = r.into_inner();
            while let Ok(Some(ev)) = st.message().await {
                let v = match ev.event {
                    Some(Event::Delta(d)) => d.to_version,
                    Some(Event::Snapshot(s)) => s.version,
                    None => continue,
                };
                if tx.send((v, Instant::now())).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .context("watchers did not all connect")?
            .context("a watcher ended")?;
    }
    Ok(rx)
}

/// Paced changes through `writer`; per-watcher and last-watcher latency in µs.
async fn propagation(
    writer: &RunningServer,
    mut version: u64,
    rx: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    n: usize,
    changes: usize,
    tag: &str,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut a = admin(writer).await?;
    let (mut each, mut last) = (hist(), hist());
    for c in 0..changes {
        let t0 = Instant::now();
        version = apply(&mut a, version, &format!("{tag}-p{c}")).await?;
        let mut got = 0;
        let mut worst = Duration::ZERO;
        while got < n {
            let (v, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .context("a watcher did not receive the change")?
                .context("watchers ended")?;
            if v != version {
                continue;
            }
            got += 1;
            let d = at.saturating_duration_since(t0);
            worst = worst.max(d);
            each.record(d.as_micros().max(1) as u64)?;
        }
        last.record(worst.as_micros().max(1) as u64)?;
    }
    Ok((each, last))
}

fn line(name: &str, h: &Histogram<u64>) -> String {
    format!(
        "{name:<44} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms   (n={})",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len()
    )
}

fn ratio(name: &str, kafka: &Histogram<u64>, file: &Histogram<u64>) -> String {
    let r = |q: f64| kafka.value_at_quantile(q) as f64 / file.value_at_quantile(q).max(1) as f64;
    format!(
        "{name:<44} kafka/file  p50 x{:.2}   p99 x{:.2}",
        r(0.5),
        r(0.99)
    )
}

async fn run(o: Opts) -> anyhow::Result<()> {
    let home = std::env::var("SWITCHYARD_KAFKA_CLUSTERS")
        .ok()
        .and_then(|v| v.split(';').next().map(str::to_string))
        .filter(|s| !s.is_empty())
        .context(
            "SWITCHYARD_KAFKA_CLUSTERS must name the Kafka cluster (start one with scripts/kafka.sh)",
        )?;
    let topic = format!(
        "bench-kstore-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let url = format!("kafka://{home}/{topic}");
    println!(
        "kafka_store bench: {} writes, {} watchers ({} per connection), {} paced changes; log {url}",
        o.writes, o.watchers, o.per_channel, o.changes
    );
    let dir = tempfile::tempdir()?;
    let file = start(StoreConfig::File {
        dir: dir.path().to_path_buf(),
    })
    .await?;
    let mut reps = Vec::new();
    for _ in 0..3 {
        reps.push(
            start(StoreConfig::Kafka {
                url: url.clone(),
                coordinator_dir: None,
            })
            .await?,
        );
    }

    // 1. Write latency, warmed up by 5 writes each.
    let (_, fv) = write_latency(&file, 0, 5, "warm").await?;
    let (_, kv) = write_latency(&reps[0], 0, 5, "warm").await?;
    let (fw, fv) = write_latency(&file, fv, o.writes, "f").await?;
    let (kw, kv) = write_latency(&reps[0], kv, o.writes, "k").await?;
    // Every replica has every version before watchers connect.
    for r in &reps[1..] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while r.service().store().latest().version < kv {
            ensure!(Instant::now() < deadline, "a replica did not catch up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // 2. Propagation to N watchers.
    let mut frx = watchers(&[&file], o.watchers, o.per_channel).await?;
    let (fe, fl) = propagation(&file, fv, &mut frx, o.watchers, o.changes, "f").await?;
    drop(frx);
    let refs: Vec<&RunningServer> = reps.iter().collect();
    let mut krx = watchers(&refs, o.watchers, o.per_channel).await?;
    let (ke, kl) = propagation(&reps[0], kv, &mut krx, o.watchers, o.changes, "k").await?;
    drop(krx);

    println!();
    println!("write latency (sequential Apply through one server)");
    println!("{}", line("  file store (fsync)", &fw));
    println!("{}", line("  kafka store (acks=all + read back)", &kw));
    println!("{}", ratio("  ratio", &kw, &fw));
    println!();
    println!(
        "propagation of one change to {} watchers (paced changes)",
        o.watchers
    );
    println!("{}", line("  file store, 1 server: per watcher", &fe));
    println!("{}", line("  file store, 1 server: last watcher", &fl));
    println!("{}", line("  kafka store, 3 replicas: per watcher", &ke));
    println!("{}", line("  kafka store, 3 replicas: last watcher", &kl));
    println!("{}", ratio("  ratio per watcher", &ke, &fe));
    println!("{}", ratio("  ratio last watcher", &kl, &fl));

    file.shutdown().await?;
    for r in reps {
        r.shutdown().await?;
    }

    // 3. Failover from a hung replica.
    let url = format!("{url}-failover");
    let mut lat = hist();
    failover(&url, o.failovers, &mut lat).await?;
    println!();
    println!(
        "failover from a replica stopped with SIGSTOP ({} rounds; SDK default watch stall timeout 10 s): Apply acknowledged by the other replica -> the client uses the version",
        o.failovers
    );
    println!("{}", line("  time to the new version", &lat));
    Ok(())
}

/// A `switchyard serve` process on the Kafka-log store `url`.
struct Replica {
    child: tokio::process::Child,
    addr: String,
}

impl Replica {
    async fn start(url: &str) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store", url])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn switchyard serve")?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(l) = lines.next_line().await? {
                if let Some(a) = l.strip_prefix("listening on ") {
                    return Ok(a.trim().to_string());
                }
            }
            bail!("switchyard serve exited before listening")
        })
        .await
        .context("switchyard serve did not start within 60 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr })
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("the replica exited")?;
        let st = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?;
        ensure!(st.success(), "kill {sig} {pid} failed");
        Ok(())
    }
}

/// Section 3: `rounds` failovers, alternating which replica hangs.
async fn failover(url: &str, rounds: usize, lat: &mut Histogram<u64>) -> anyhow::Result<()> {
    let reps = [Replica::start(url).await?, Replica::start(url).await?];
    let mut admins = Vec::new();
    for r in &reps {
        let ch = client::connect(&format!("http://{}", r.addr), None).await?;
        admins.push(client::admin(ch, BearerToken::default()));
    }
    let mut version = apply(&mut admins[0], 0, "failover-0").await?;
    // The client watches the first endpoint first.
    let sdk = switchyard::Switchyard::builder("failover-bench")
        .endpoint(format!("http://{}", reps[0].addr))
        .endpoint(format!("http://{}", reps[1].addr))
        .without_cache()
        .connect()
        .await?;
    sdk.wait_for_version(version, Duration::from_secs(30))
        .await
        .context("the client did not get the first version")?;
    let mut watched = 0;
    for round in 0..rounds {
        let other = 1 - watched;
        // A replica hangs at any moment: at a random point of the watch's 5 s keepalive
        // period (stopping it right after the client connected would always measure the
        // longest case).
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..5000))).await;
        reps[watched].signal("-STOP")?;
        // The other replica must have the current version before it takes the change.
        let deadline = Instant::now() + Duration::from_secs(30);
        let next = loop {
            match apply(
                &mut admins[other],
                version,
                &format!("failover-{}", round + 1),
            )
            .await
            {
                Ok(v) => break v,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let acked = Instant::now();
        let got = sdk.wait_for_version(next, Duration::from_secs(60)).await;
        let took = acked.elapsed();
        reps[watched].signal("-CONT")?;
        got.context("the client did not fail over within 60 s")?;
        println!("  round {round}: {:.1} s", took.as_secs_f64());
        lat.record(took.as_micros() as u64)?;
        version = next;
        watched = other;
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
