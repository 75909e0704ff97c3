//! Three config-service replicas on one Kafka-log store (`--store kafka://…`, the home cluster
//! is the first of `SWITCHYARD_KAFKA_CLUSTERS`): concurrent writers through different replicas
//! never fork history; a replica killed with SIGKILL under write and watch load loses no
//! acknowledged version, an SDK client with all three endpoints keeps producing and follows the
//! next route change from another replica, and the restarted replica catches up.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use switchyard::{Record, Switchyard};
use switchyard_config::client::{self, AdminClient as Admin, BearerToken};
use switchyard_config::store::{KafkaConfig, KafkaStore, Store, StoreError};
use switchyard_config::{ServerConfig, StoreConfig};
use switchyard_proto::state::State;
use switchyard_proto::v1::{
    ApplyRequest, Change, GetHistoryRequest, GetVersionRequest, HistoryEntry,
    StartMigrationRequest, Topic, change::Op, watch_event::Event,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Bound for waits that involve Kafka and several processes.
const LONG: Duration = Duration::from_secs(60);

fn kafka() -> (String, String) {
    let v = std::env::var("SWITCHYARD_KAFKA_CLUSTERS").expect(
        "SWITCHYARD_KAFKA_CLUSTERS must name two Kafka clusters (scripts/test.sh starts them)",
    );
    let mut it = v.split(';').map(str::to_string);
    let home = it.next().expect("first cluster");
    let other = it.next().expect("second cluster");
    (home, other)
}

fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>())
}

fn store_url(topic: &str) -> String {
    format!("kafka://{}/{topic}", kafka().0)
}

/// Applies `changes` through `admin` at the version it currently has, retrying on conflicts;
/// returns the acknowledged version, or the error that was not a conflict.
async fn apply_retrying(admin: &Admin, changes: Vec<Change>) -> Result<u64, tonic::Status> {
    let mut a = admin.clone();
    loop {
        let v = within(
            STEP,
            "GetVersion",
            a.get_version(GetVersionRequest {
                version: 0,
                ..Default::default()
            }),
        )
        .await?
        .into_inner()
        .version;
        let r = within(
            STEP,
            "Apply",
            a.apply(ApplyRequest {
                expected_version: v,
                changes: changes.clone(),
                dry_run: false,
                author: "kstore-test".into(),
                comment: String::new(),
            }),
        )
        .await;
        match r {
            Ok(r) => {
                let r = r.into_inner();
                assert!(r.applied, "apply at {v} stored nothing");
                assert_eq!(r.version, v + 1, "acknowledged version");
                return Ok(r.version);
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => continue,
            Err(s) => return Err(s),
        }
    }
}

async fn history(admin: &Admin) -> Vec<HistoryEntry> {
    let mut a = admin.clone();
    within(
        STEP,
        "GetHistory",
        a.get_history(GetHistoryRequest {
            before_version: 0,
            limit: 1000,
            include_diff: true,
            ..Default::default()
        }),
    )
    .await
    .expect("GetHistory")
    .into_inner()
    .entries
}

async fn version(admin: &Admin) -> u64 {
    let mut a = admin.clone();
    within(
        STEP,
        "GetVersion",
        a.get_version(GetVersionRequest {
            version: 0,
            ..Default::default()
        }),
    )
    .await
    .expect("GetVersion")
    .into_inner()
    .version
}

/// Waits until `admin`'s replica has applied `v`.
async fn until_version(admin: &Admin, v: u64, what: &str) {
    within(LONG, what, async {
        loop {
            if version(admin).await >= v {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn add_cluster(name: &str) -> Vec<Change> {
    vec![up_cluster(cluster(name))]
}

/// Every acknowledged (version, cluster added) is in the replica's history at that version.
async fn assert_acked_present(admin: &Admin, acked: &[(u64, String)]) {
    let mut a = admin.clone();
    for (v, name) in acked {
        let at = within(
            STEP,
            "GetVersion",
            a.get_version(GetVersionRequest {
                version: *v,
                ..Default::default()
            }),
        )
        .await
        .expect("acknowledged version is retained")
        .into_inner();
        // (GetVersion 0 means the latest: version 0 is the empty configuration.)
        let before_has = *v > 1
            && within(
                STEP,
                "GetVersion",
                a.get_version(GetVersionRequest {
                    version: *v - 1,
                    ..Default::default()
                }),
            )
            .await
            .expect("version before")
            .into_inner()
            .clusters
            .iter()
            .any(|c| &c.name == name);
        assert!(
            at.version == *v && at.clusters.iter().any(|c| &c.name == name) && !before_has,
            "acknowledged version {v} (adding cluster {name}) is not what the replica has at {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_through_three_replicas_never_fork_history() {
    let url = store_url(&fresh("kstore-agree"));
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let cfg = ServerConfig {
            store: StoreConfig::Kafka {
                url: url.clone(),
                coordinator_dir: None,
            },
            ..memory_config()
        };
        replicas.push(TestServer::start(cfg, None).await);
    }
    // A watcher on every replica, from the beginning.
    let mut watchers = Vec::new();
    for r in &replicas {
        watchers.push(r.watch(0).await);
    }
    const PER_WRITER: usize = 10;
    let mut tasks = Vec::new();
    for (w, r) in replicas.iter().enumerate() {
        let admin = r.admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..PER_WRITER {
                let name = format!("w{w}-{i}");
                let v = apply_retrying(&admin, add_cluster(&name))
                    .await
                    .unwrap_or_else(|e| panic!("writer {w}: {e}"));
                acked.push((v, name));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("writer task"));
    }
    let total = (3 * PER_WRITER) as u64;
    let versions: BTreeSet<u64> = acked.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        (1..=total).collect::<BTreeSet<_>>(),
        "every acknowledged version is distinct and none is skipped"
    );
    for r in &replicas {
        until_version(&r.admin, total, "replica applies every version").await;
    }
    let first = history(&replicas[0].admin).await;
    assert_eq!(first.len(), total as usize);
    for r in &replicas[1..] {
        assert_eq!(
            history(&r.admin).await,
            first,
            "replicas disagree on the version sequence"
        );
    }
    for r in &replicas {
        assert_acked_present(&r.admin, &acked).await;
    }
    // Every watcher, whichever replica it is on, saw every version in order.
    for (i, mut s) in watchers.into_iter().enumerate() {
        let mut have = expect_snapshot(&mut s).await.version;
        while have < total {
            match next_event(&mut s).await {
                Event::Delta(d) => {
                    assert_eq!(d.from_version, have, "watcher on replica {i}: gap");
                    have = d.to_version;
                }
                Event::Snapshot(sn) => {
                    assert!(sn.version > have, "watcher on replica {i} went back");
                    have = sn.version;
                }
            }
        }
    }
    // No coordinator on replicas without a data directory: a precise refusal.
    let mut a = replicas[1].admin.clone();
    let e = within(
        STEP,
        "StartMigration",
        a.start_migration(StartMigrationRequest {
            topic: "t".into(),
            to_cluster: "c".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("--data-dir"), "{}", e.message());
    for r in replicas {
        r.server.shutdown().await.unwrap();
    }
}

/// A `switchyard serve --store …` process, killed when dropped.
struct Replica {
    child: Child,
    admin: Admin,
    endpoint: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Replica {
    async fn start(url: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--store", url])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchyard serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let buf = stderr.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.lock().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = within(LONG, "\"listening on\" line", async {
            loop {
                match lines.next_line().await.unwrap() {
                    Some(l) => {
                        if let Some(a) = l.strip_prefix("listening on ") {
                            break a.trim().to_string();
                        }
                    }
                    None => panic!("serve exited before listening: {}", stderr.lock()),
                }
            }
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let endpoint = format!("http://{addr}");
        let ch = within(STEP, "connect", client::connect(&endpoint, None))
            .await
            .expect("connect");
        Self {
            child,
            admin: client::admin(ch, BearerToken::default()),
            endpoint,
        }
    }

    async fn kill(mut self) {
        within(STEP, "SIGKILL", self.child.kill()).await.unwrap();
    }
}

async fn create_topic(bootstrap: &str, name: &str) {
    let a: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let res = within(
        STEP,
        "create topic",
        a.create_topics(
            &[NewTopic::new(name, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ),
    )
    .await
    .expect("create topic");
    for r in res {
        r.expect("topic created");
    }
}

fn route(logical: &str, cluster: &str, physical: &str) -> Change {
    Change {
        op: Some(Op::UpsertTopic(Topic {
            name: logical.into(),
            cluster: cluster.into(),
            physical: physical.into(),
            partitions: 1,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_replica_loses_no_acknowledged_version_and_catches_up() {
    let (home, other) = kafka();
    let url = store_url(&fresh("kstore-kill"));
    let east_topic = fresh("kstore-orders-east");
    let west_topic = fresh("kstore-orders-west");
    create_topic(&home, &east_topic).await;
    create_topic(&other, &west_topic).await;
    let r0 = Replica::start(&url).await;
    let r1 = Replica::start(&url).await;
    let r2 = Replica::start(&url).await;
    let mut east = cluster("east");
    east.bootstrap = vec![home.clone()];
    let mut west = cluster("west");
    west.bootstrap = vec![other.clone()];
    let v0 = apply_retrying(
        &r0.admin,
        vec![
            up_cluster(east),
            up_cluster(west),
            route("orders", "east", &east_topic),
        ],
    )
    .await
    .expect("initial configuration");

    // The SDK watches r1 first (endpoints are tried in order), the replica that dies.
    let sdk = within(
        LONG,
        "SDK connect",
        Switchyard::builder("kstore-app")
            .endpoint(r1.endpoint.clone())
            .endpoint(r2.endpoint.clone())
            .endpoint(r0.endpoint.clone())
            .without_cache()
            .connect(),
    )
    .await
    .expect("SDK connects");
    sdk.wait_for_version(v0, LONG).await.expect("SDK has v0");

    // Watch load: 20 watch streams on every replica, each tracking the newest version it has.
    let mut watch_load = Vec::new();
    for r in [&r0, &r1, &r2] {
        let ch = within(STEP, "connect", client::connect(&r.endpoint, None))
            .await
            .expect("connect");
        for _ in 0..20 {
            let mut meta = client::metadata(ch.clone(), BearerToken::default());
            let mut s = watch(&mut meta, 0).await;
            let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let seen2 = seen.clone();
            tokio::spawn(async move {
                while let Ok(Some(ev)) = s.message().await {
                    let v = match ev.event {
                        Some(Event::Delta(d)) => d.to_version,
                        Some(Event::Snapshot(sn)) => sn.version,
                        None => continue,
                    };
                    seen2.fetch_max(v, Ordering::Relaxed);
                }
            });
            watch_load.push((r.endpoint.clone(), seen));
        }
    }
    // Produce continuously; remember where each record went.
    let stop = Arc::new(AtomicBool::new(false));
    let delivered: Arc<Mutex<Vec<String>>> = Arc::default();
    let producing = {
        let p = sdk.producer();
        let (stop, delivered) = (stop.clone(), delivered.clone());
        tokio::spawn(async move {
            let mut failed = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let rec = Record::new("orders")
                    .key(format!("k{}", i % 8))
                    .payload(format!("{i}"));
                match p.send(rec).await {
                    Ok(d) => delivered.lock().push(d.cluster),
                    Err(_) => failed += 1,
                }
            }
            failed
        })
    };
    // Write continuously through all three replicas; writes through the killed one fail.
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let writers = [r0.admin.clone(), r1.admin.clone(), r2.admin.clone()];
    let writing = {
        let (stop, acked) = (stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("load-{i}");
                if let Ok(v) = apply_retrying(&writers[i % 3], add_cluster(&name)).await {
                    acked.lock().push((v, name));
                }
                i += 1;
            }
        })
    };
    let acked_at_least = |n: usize| {
        let acked = acked.clone();
        async move {
            within(LONG, "acknowledged writes", async {
                while acked.lock().len() < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
        }
    };
    acked_at_least(10).await;
    within(LONG, "records delivered to east", async {
        while delivered.lock().len() < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let r1_endpoint = r1.endpoint.clone();
    r1.kill().await;
    let after_kill = acked.lock().len();
    acked_at_least(after_kill + 10).await;

    // The next route change, made through another replica, reaches the SDK.
    let vr = apply_retrying(&r2.admin, vec![route("orders", "west", &west_topic)])
        .await
        .expect("route change");
    sdk.wait_for_version(vr, LONG)
        .await
        .expect("the SDK picks up the route change from a surviving replica");
    let reconnects: f64 = sdk
        .metrics()
        .gather()
        .iter()
        .filter(|f| f.name() == "switchyard_client_watch_reconnects_total")
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum();
    assert!(
        reconnects >= 1.0,
        "the SDK's watch on the killed replica was interrupted"
    );
    // ... and the watch error says what is wrong now: nothing, on the surviving replica.
    assert_eq!(sdk.last_watch_error(), None);
    let mark = delivered.lock().len();
    within(LONG, "records delivered to west after the change", async {
        loop {
            if delivered.lock()[mark..].iter().any(|c| c == "west") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    within(LONG, "writer stops", writing).await.unwrap();
    within(LONG, "producer stops", producing).await.unwrap();
    let acked = acked.lock().clone();

    // No acknowledged version lost, on both survivors, and both have the same history.
    let last = acked.iter().map(|(v, _)| *v).max().unwrap().max(vr);
    until_version(&r0.admin, last, "r0 has every version").await;
    until_version(&r2.admin, last, "r2 has every version").await;
    let h0 = history(&r0.admin).await;
    assert_eq!(h0, history(&r2.admin).await, "survivors disagree");
    assert_acked_present(&r0.admin, &acked).await;
    assert_acked_present(&r2.admin, &acked).await;

    // Watchers on the survivors saw every version, also those written through other replicas.
    for (_, seen) in watch_load.iter().filter(|(ep, _)| *ep != r1_endpoint) {
        within(
            LONG,
            "watchers on survivors reach the last version",
            async {
                while seen.load(Ordering::Relaxed) < last {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        )
        .await;
    }

    // The killed replica restarts and catches up with the same history. It starts from the
    // newest snapshot record (one per 100 versions), so it retains the history from there on:
    // that part must be identical, and its latest state holds every acknowledged change.
    let r1 = Replica::start(&url).await;
    until_version(&r1.admin, last, "restarted r1 catches up").await;
    let h1 = history(&r1.admin).await;
    // When the last version is itself a snapshot's (a multiple of 100), the restarted replica
    // starts from it and has no history entry yet: its oldest retained version is then last + 1.
    let oldest = h1.last().map_or(last + 1, |e| e.version);
    assert!(
        oldest <= (last / 100) * 100 + 1,
        "the restarted replica retains the versions since the newest snapshot (oldest {oldest}, last {last})"
    );
    let h0_tail: Vec<HistoryEntry> = h0.iter().filter(|e| e.version >= oldest).cloned().collect();
    assert_eq!(h1, h0_tail, "restarted replica's history");
    let latest = within(
        STEP,
        "GetVersion",
        r1.admin.clone().get_version(GetVersionRequest {
            version: 0,
            ..Default::default()
        }),
    )
    .await
    .expect("the latest version")
    .into_inner();
    for (v, name) in &acked {
        assert!(
            latest.clusters.iter().any(|c| &c.name == name),
            "acknowledged version {v} ({name}) is in the restarted replica's state"
        );
    }
    drop(sdk);
}

/// Commits a version adding cluster `name` on top of what `st` has.
fn commit_cluster(st: &KafkaStore, name: &str) -> Result<u64, StoreError> {
    let cur = st.latest();
    let mut next = cur.apply_changes(&add_cluster(name)).unwrap();
    next.version = cur.version + 1;
    let delta = cur.delta_to(&next);
    st.commit(cur.version, next, delta).map(|s| s.version)
}

/// A new replica starts from a snapshot record — the newest one at or before the window of
/// history every replica serves (the last `retain` versions), found through the newest
/// snapshot's list of earlier ones — replays only what follows it, and then answers `get`,
/// `oldest` and `history` exactly as the replica that saw every version.
#[test]
fn a_new_replica_starts_from_a_snapshot_record_and_serves_the_same_window() {
    let mut cfg = KafkaConfig::from_url(&store_url(&fresh("kstore-snap")), 3).unwrap();
    cfg.snapshot_every = 5;
    let (a, open) = KafkaStore::open(cfg.clone()).expect("open");
    assert!(open.created);
    assert_eq!(open.snapshot_version, 0);
    for i in 1..=22 {
        assert_eq!(commit_cluster(&a, &format!("c{i}")).unwrap(), i);
    }
    // Snapshot records are written without waiting: a replica opened right away may find an
    // older newest snapshot; retry until the one of version 20 is there. Its window starts at
    // 20 - 3 = 17 at the earliest, so it starts from the snapshot of version 15.
    let deadline = std::time::Instant::now() + LONG;
    let (b, open) = loop {
        let (b, open) = KafkaStore::open(cfg.clone()).expect("open a second replica");
        if open.snapshot_version == 15 {
            break (b, open);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not start from the snapshot of version 15: {open:?}"
        );
        drop(b);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!open.created);
    // It replayed only what follows that snapshot (versions 16 to 22, and snapshot records).
    assert!(open.replayed < 12, "{open:?}");
    assert_eq!(b.latest().version, 22);
    // Both serve the same window: versions 19 to 22.
    assert_eq!((a.oldest(), b.oldest()), (19, 19));
    for v in 17..=22 {
        match (a.get(v), b.get(v)) {
            (Ok(x), Ok(y)) => assert!(x.same_content(&y), "version {v}"),
            (Err(StoreError::NotRetained { .. }), Err(StoreError::NotRetained { .. })) => {
                assert!(v < 19, "version {v} is in the window")
            }
            (x, y) => panic!("version {v}: the replicas disagree: {x:?} vs {y:?}"),
        }
    }
    let versions = |s: &KafkaStore| {
        s.history(0, 100)
            .iter()
            .map(|h| h.version)
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(&a), vec![22, 21, 20]);
    assert_eq!(versions(&b), versions(&a));
    // Writes through either replica continue one history.
    assert_eq!(commit_cluster(&b, "via-b").unwrap(), 23);
    let deadline = std::time::Instant::now() + LONG;
    while a.latest().version < 23 {
        assert!(
            std::time::Instant::now() < deadline,
            "a did not apply b's write"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(a.latest().clusters.contains_key("via-b"));
    // A stale writer loses, with the version it lost to.
    let stale = State::clone(&a.get(22).unwrap());
    let mut next = stale.apply_changes(&add_cluster("late")).unwrap();
    next.version = 23;
    let d = stale.delta_to(&next);
    assert!(matches!(
        a.commit(22, next, d),
        Err(StoreError::Conflict {
            expected: 22,
            current: 23
        })
    ));
}

#[test]
fn an_unreachable_home_cluster_fails_opening_with_a_clear_error() {
    // Nothing listens on port 1.
    let mut cfg = KafkaConfig::from_url("kafka://127.0.0.1:1/kstore-nowhere", 10).unwrap();
    cfg.open_timeout = Duration::from_secs(2);
    let e = KafkaStore::open(cfg).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("could not reach the home cluster 127.0.0.1:1"),
        "{e}"
    );
}

#[test]
fn writes_fail_unavailable_in_bounded_time_while_reads_keep_working() {
    // The log goes away under a running replica (its topic is deleted; the test cluster does
    // not auto-create topics): every produce is retried until the write timeout.
    let topic = fresh("kstore-gone");
    let mut cfg = KafkaConfig::from_url(&store_url(&topic), 10).unwrap();
    cfg.write_timeout = Duration::from_secs(2);
    let (st, _) = KafkaStore::open(cfg).expect("open");
    assert_eq!(commit_cluster(&st, "before").unwrap(), 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", kafka().0)
            .create()
            .unwrap();
        for r in within(
            STEP,
            "delete topic",
            a.delete_topics(&[topic.as_str()], &AdminOptions::new()),
        )
        .await
        .unwrap()
        {
            r.expect("topic deleted");
        }
    });
    let started = std::time::Instant::now();
    let e = commit_cluster(&st, "refused").unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("re-read the configuration"), "{e}");
    // Bounded: twice the write timeout plus slack for a loaded machine, not forever.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // Reads are served from the last applied state.
    assert_eq!(st.latest().version, 1);
    assert!(st.latest().clusters.contains_key("before"));
    assert_eq!(st.history(0, 10).len(), 1);
    let status = tonic::Status::from(switchyard_config::ServiceError::from(e));
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

/// The store's home cluster over SASL_SSL (SCRAM-SHA-512, the password a `${file:}`
/// reference): a replica opens the log and versions are written and read back; a wrong
/// password or an unknown property fails the start, within a bounded time, with an error that
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_cluster_may_be_sasl_ssl() {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run ./scripts/test.sh (it starts Kafka with --secure)")
        })
    };
    let (sasl, tls) = (
        var("KAFKA_SASL_SSL_BOOTSTRAP_1"),
        var("SWITCHYARD_KAFKA_TLS_DIR"),
    );
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("admin.password");
    std::fs::write(&pw, "admin-secret\n").unwrap();
    let props = |password: &str| {
        [
            ("security.protocol", "SASL_SSL".to_string()),
            ("sasl.mechanism", "SCRAM-SHA-512".into()),
            ("sasl.username", "admin".into()),
            ("sasl.password", password.to_string()),
            ("ssl.ca.location", format!("{tls}/ca.pem")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<std::collections::BTreeMap<_, _>>()
    };
    let url = format!("kafka://{sasl}/{}", fresh("kstore-sasl"));
    let cfg = |store_properties| ServerConfig {
        store: StoreConfig::Kafka {
            url: url.clone(),
            coordinator_dir: None,
        },
        store_properties,
        ..memory_config()
    };
    let s = TestServer::start(cfg(props(&format!("${{file:{}}}", pw.display()))), None).await;
    let v = apply_retrying(&s.admin, add_cluster("over-sasl"))
        .await
        .unwrap();
    assert_eq!(v, 1);
    let mut admin = s.admin.clone();
    let got = within(
        STEP,
        "get",
        admin.get_version(GetVersionRequest {
            version: 1,
            include_secrets: false,
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(got.clusters.iter().any(|c| c.name == "over-sasl"));
    s.server.shutdown().await.unwrap();

    // A second replica with the wrong password cannot open the log.
    let started = std::time::Instant::now();
    let Err(e) = within(
        LONG,
        "a start with a wrong password ends",
        switchyard_config::start(cfg(props("wrong"))),
    )
    .await
    else {
        panic!("a replica with a wrong password started");
    };
    let msg = format!("{e:#}");
    println!(
        "wrong password: failed after {:?}: {msg}",
        started.elapsed()
    );
    assert!(msg.to_lowercase().contains("authenticat"), "{msg}");
    assert!(!msg.contains("admin-secret"), "{msg}");

    // An unknown property, a key the store owns and a reference to a missing file are refused
    // before anything is contacted.
    let mut bad = props("x");
    bad.insert("sasl.passwrod".into(), "x".into());
    bad.insert("acks".into(), "1".into());
    bad.insert(
        "ssl.key.password".into(),
        format!("${{file:{}/missing}}", dir.path().display()),
    );
    let Err(e) = within(
        STEP,
        "a start with bad properties ends",
        switchyard_config::start(cfg(bad)),
    )
    .await
    else {
        panic!("a replica with bad store properties started");
    };
    let msg = format!("{e:#}");
    println!("bad properties: {msg}");
    for want in [
        "sasl.passwrod",
        "No such configuration property",
        "\"acks\"",
        "set by the store itself",
        "missing} cannot be read",
    ] {
        assert!(msg.contains(want), "{want:?} in {msg}");
    }
}

/// Creates the single-partition topic `name` with `cleanup.policy=policy`.
async fn create_log_topic(bootstrap: &str, name: &str, policy: &str) {
    let a: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let res = within(
        STEP,
        "create topic",
        a.create_topics(
            &[NewTopic::new(name, 1, TopicReplication::Fixed(1)).set("cleanup.policy", policy)],
            &AdminOptions::new(),
        ),
    )
    .await
    .expect("create topic");
    for r in res {
        r.expect("topic created");
    }
}

/// A log topic that can delete records (a broker's default `cleanup.policy=delete`, or
/// `compact,delete`) is refused, naming the topic and the setting: one day retention would
/// remove proposals a new replica must replay, and it would start from a different history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_topic_that_deletes_records_is_refused() {
    for policy in ["delete", "compact,delete"] {
        let topic = fresh("kstore-policy");
        create_log_topic(&kafka().0, &topic, policy).await;
        let cfg = ServerConfig {
            store: StoreConfig::Kafka {
                url: store_url(&topic),
                coordinator_dir: None,
            },
            ..memory_config()
        };
        let Err(e) = within(LONG, "start", switchyard_config::start(cfg)).await else {
            panic!("a replica started on a log topic with cleanup.policy={policy}");
        };
        let msg = format!("{e:#}");
        println!("{policy}: {msg}");
        assert!(
            msg.contains(&topic)
                && msg.contains(&format!("cleanup.policy={policy}"))
                && msg.contains("needs cleanup.policy=compact"),
            "{msg}"
        );
    }
}

/// Records deleted from the head of the log (DeleteRecords; retention would do the same): a
/// new replica that would need them refuses to start rather than serving a shorter history
/// — before, it started from what was left, served version 0 and handed out version 1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_a_log_whose_head_was_deleted() {
    let topic = fresh("kstore-gap");
    let url = store_url(&topic);
    let cfg = || ServerConfig {
        store: StoreConfig::Kafka {
            url: url.clone(),
            coordinator_dir: None,
        },
        ..memory_config()
    };
    let a = TestServer::start(cfg(), None).await;
    for i in 0..3 {
        apply_retrying(&a.admin, add_cluster(&format!("c{i}")))
            .await
            .unwrap();
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka().0)
        .create()
        .unwrap();
    // Kafka deletes records only from a topic with the delete policy: an operator switches it
    // there, deletes, and switches back (so the topic passes the policy check again).
    let set_policy = |policy: &'static str| {
        let admin = &admin;
        let topic = topic.clone();
        async move {
            let spec = rdkafka::admin::ResourceSpecifier::Topic(&topic);
            let alter = rdkafka::admin::AlterConfig::new(spec).set("cleanup.policy", policy);
            for r in within(
                STEP,
                "alter configs",
                admin.alter_configs([&alter], &AdminOptions::new()),
            )
            .await
            .expect("AlterConfigs")
            {
                r.expect("topic config altered");
            }
        }
    };
    set_policy("delete").await;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(2))
        .unwrap();
    within(
        STEP,
        "delete records",
        admin.delete_records(&tpl, &AdminOptions::new()),
    )
    .await
    .expect("DeleteRecords")
    .elements()
    .iter()
    .for_each(|e| assert!(e.error().is_ok(), "DeleteRecords: {:?}", e.error()));
    set_policy("compact").await;
    let probe: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka().0)
        .create()
        .unwrap();
    let marks = rdkafka::consumer::Consumer::fetch_watermarks(&probe, &topic, 0, STEP).unwrap();
    assert_eq!(marks, (2, 3), "DeleteRecords removed offsets 0 and 1");
    let Err(e) = within(LONG, "start", switchyard_config::start(cfg())).await else {
        panic!("a replica started on a log whose first records were deleted");
    };
    let msg = format!("{e:#}");
    println!("{msg}");
    assert!(
        msg.contains("starts at offset 2") && msg.contains("needs the records from offset 0"),
        "{msg}"
    );
    // The replica that had read them goes on serving the whole history.
    let mut adm = a.admin.clone();
    let got = within(
        STEP,
        "get version 1",
        adm.get_version(GetVersionRequest {
            version: 1,
            include_secrets: false,
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(got.version, 1);
    a.server.shutdown().await.unwrap();
}

/// Replicas serve the same window of history: one that saw every version and one started
/// after 230 versions (from a snapshot record) answer `get --version`, `history` and a
/// dry-run `rollback --to` the same way for every version around the window's start — before,
/// the late replica started at its newest snapshot and refused versions the other served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_answers_history_and_rollback_the_same_way() {
    use switchyard_proto::v1::RollbackRequest;
    const RETAIN: u64 = 20;
    let url = store_url(&fresh("kstore-window"));
    let cfg = || ServerConfig {
        store: StoreConfig::Kafka {
            url: url.clone(),
            coordinator_dir: None,
        },
        retain_versions: RETAIN as usize,
        ..memory_config()
    };
    let a = TestServer::start(cfg(), None).await;
    for i in 0..230 {
        apply_retrying(&a.admin, add_cluster(&format!("w{i}")))
            .await
            .unwrap();
    }
    // The snapshot record of version 200 is written without waiting: let it land.
    within(LONG, "the snapshot of version 200", async {
        loop {
            let probe = KafkaStore::open(KafkaConfig {
                retain: RETAIN as usize,
                ..KafkaConfig::from_url(&url, 1).unwrap()
            })
            .unwrap();
            if probe.1.snapshot_version > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let b = TestServer::start(cfg(), None).await;
    // What a replica answers for `version`: its content, or the gRPC code.
    async fn ask(s: &TestServer, version: u64) -> (String, String, String) {
        let mut adm = s.admin.clone();
        let get = match adm
            .get_version(GetVersionRequest {
                version,
                include_secrets: false,
            })
            .await
        {
            Ok(r) => format!("clusters={}", r.into_inner().clusters.len()),
            Err(e) => format!("{:?}", e.code()),
        };
        let rollback = match adm
            .rollback(RollbackRequest {
                to_version: version,
                dry_run: true,
                ..Default::default()
            })
            .await
        {
            Ok(r) => format!("changes={}", r.into_inner().diff.len()),
            Err(e) => format!("{:?}", e.code()),
        };
        let history = adm
            .get_history(GetHistoryRequest {
                before_version: version + 1,
                limit: 1,
                ..Default::default()
            })
            .await
            .map(|h| {
                format!(
                    "{:?}",
                    h.into_inner()
                        .entries
                        .iter()
                        .map(|e| e.version)
                        .collect::<Vec<_>>()
                )
            })
            .unwrap_or_else(|e| format!("{:?}", e.code()));
        (get, rollback, history)
    }
    let latest = 230;
    let mut served = 0;
    for v in (latest - RETAIN - 3)..=latest {
        let (x, y) = (ask(&a, v).await, ask(&b, v).await);
        assert_eq!(x, y, "version {v}: the replicas disagree");
        if !x.0.contains("NotFound") {
            served += 1;
        }
    }
    assert_eq!(
        served,
        RETAIN + 1,
        "versions {}..={latest} are served",
        latest - RETAIN
    );
    a.server.shutdown().await.unwrap();
    b.server.shutdown().await.unwrap();
}
