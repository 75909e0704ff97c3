//! Topic migrations (`switchyard move-topic`, the service's coordinator) against a real config
//! service and two real Kafka clusters (`SWITCHYARD_KAFKA_CLUSTERS="host:port;host:port"`,
//! started by scripts/test.sh): the destination is created like the source, the route changes
//! in one version, the coordinator follows the clients' reports (a client reporting over the
//! real gRPC API) through SWITCH, SEALED and DRAIN to COMPLETE, resumes after a restart, can be
//! aborted before the seal and forced by an operator, and bad moves are refused with a precise
//! message and change nothing.

use std::process::Stdio;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use switchyard_config::client::{self, BearerToken};
use switchyard_config::migration::{self, MigrationConfig};
use switchyard_config::{ServerConfig, StoreConfig};
use switchyard_proto::v1::change::Op;
use switchyard_proto::v1::{
    ApplyRequest, Change, ClientEndpoint, ClientStatus, Cluster, GetSnapshotRequest,
    ListMigrationsRequest, Migration, MigrationPhase, ReportStatusRequest, RollbackRequest,
    StartMigrationRequest, Topic,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const LIMIT: Duration = Duration::from_secs(60);

fn kafka() -> (String, String) {
    let v = std::env::var("SWITCHYARD_KAFKA_CLUSTERS").expect(
        "SWITCHYARD_KAFKA_CLUSTERS must name two Kafka clusters (scripts/test.sh starts them)",
    );
    let mut it = v.split(';').map(str::to_string);
    let east = it.next().expect("first cluster");
    let west = it.next().expect("second cluster");
    (east, west)
}

fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>())
}

fn kadmin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap()
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32, retention: Option<&str>) {
    let a = kadmin(bootstrap);
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    if let Some(r) = retention {
        t = t.set("retention.ms", r);
    }
    let res = a
        .create_topics(&[t], &AdminOptions::new())
        .await
        .expect("create topic");
    for r in res {
        r.expect("topic created");
    }
    // Ready when a record can be written.
    produce(bootstrap, name, None).await;
}

async fn produce(bootstrap: &str, topic: &str, n: Option<usize>) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    if n.is_none() {
        // Only wait for leaders: metadata with partitions.
        tokio::time::timeout(LIMIT, async {
            loop {
                let md = p
                    .client()
                    .fetch_metadata(Some(topic), Duration::from_secs(5));
                if let Ok(md) = md
                    && md.topics().iter().any(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("topic ready");
        return;
    }
    for i in 0..n.unwrap() {
        p.send(
            FutureRecord::<str, str>::to(topic).payload(&format!("r{i}")),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// Reads the CLI's output until a line contains `want`.
async fn next(lines: &mut Lines, seen: &mut Vec<String>, want: &str) {
    let fut = async {
        while let Some(l) = lines.next_line().await.unwrap() {
            seen.push(l.clone());
            if l.contains(want) {
                return;
            }
        }
        panic!("the CLI ended before printing {want:?}: {seen:?}");
    };
    if tokio::time::timeout(LIMIT, fut).await.is_err() {
        panic!("no line with {want:?} within {LIMIT:?}: {seen:?}");
    }
}

async fn topic_config(bootstrap: &str, topic: &str, key: &str) -> Option<String> {
    let a = kadmin(bootstrap);
    let r = a
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let r = r.into_iter().next().unwrap().unwrap();
    r.get(key).and_then(|e| e.value.clone())
}

struct Env {
    /// None only while restarting.
    svc: Option<switchyard_config::RunningServer>,
    cfg: ServerConfig,
    admin: client::AdminClient,
    meta: client::MetadataClient,
    east: String,
    west: String,
}

async fn env() -> Env {
    env_with(StoreConfig::Memory, Duration::ZERO).await
}

/// [`env_with`] on a file store in a fresh directory (kept while the directory lives), so the
/// service can be restarted with what it persisted.
async fn file_env(grace: Duration) -> (tempfile::TempDir, Env) {
    let dir = tempfile::tempdir().unwrap();
    let e = env_with(
        StoreConfig::File {
            dir: dir.path().to_path_buf(),
        },
        grace,
    )
    .await;
    (dir, e)
}

/// Edits migration `id` in the coordinator's file `file` (the service stopped), as a crash
/// between a configuration write and the record's would have left it.
fn edit_record(file: &std::path::Path, id: &str, f: impl Fn(&mut Migration)) {
    use prost::Message as _;
    let mut log =
        switchyard_proto::v1::MigrationLog::decode(std::fs::read(file).unwrap().as_slice())
            .unwrap();
    for x in log.migrations.iter_mut().filter(|x| x.id == id) {
        f(x);
    }
    std::fs::write(file, log.encode_to_vec()).unwrap();
}

/// A service whose coordinator advances nothing during its first `grace`.
async fn env_with(store: StoreConfig, grace: Duration) -> Env {
    let (east, west) = kafka();
    let mut cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store,
        migrations: MigrationConfig {
            client_grace: grace,
            ..Default::default()
        },
        ..Default::default()
    };
    let svc = switchyard_config::start(cfg.clone()).await.unwrap();
    cfg.listen = svc.local_addr();
    let ch = client::connect(&format!("http://{}", svc.local_addr()), None)
        .await
        .unwrap();
    let mut admin = client::admin(ch.clone(), BearerToken::default());
    let meta = client::metadata(ch, BearerToken::default());
    let cl = |name: &str, b: &str| Change {
        op: Some(Op::UpsertCluster(Cluster {
            name: name.into(),
            bootstrap: vec![b.into()],
            ..Default::default()
        })),
    };
    admin
        .apply(ApplyRequest {
            expected_version: 0,
            changes: vec![cl("east", &east), cl("west", &west)],
            ..Default::default()
        })
        .await
        .unwrap();
    Env {
        svc: Some(svc),
        cfg,
        admin,
        meta,
        east,
        west,
    }
}

impl Env {
    /// Stops the service and starts it again on the same address and store.
    async fn restart(&mut self) {
        self.stop().await;
        let cfg = self.cfg.clone();
        let svc = tokio::time::timeout(LIMIT, async {
            loop {
                match switchyard_config::start(cfg.clone()).await {
                    Ok(s) => return s,
                    // The old listener's address may take a moment to be free again.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .expect("the service starts again on its address");
        self.svc = Some(svc);
    }

    async fn stop(&mut self) {
        if let Some(svc) = self.svc.take() {
            svc.shutdown().await.unwrap();
        }
    }

    /// Starts `move-topic T --to west --wait` with its output piped.
    fn spawn_move_and_wait(&self, t: &str) -> (tokio::process::Child, Lines) {
        let mut child = self
            .cli(&[
                "move-topic",
                t,
                "--to",
                "west",
                "--wait",
                "--timeout-secs",
                "60",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    }

    async fn version(&mut self) -> u64 {
        self.meta
            .get_snapshot(GetSnapshotRequest {})
            .await
            .unwrap()
            .into_inner()
            .version
    }

    async fn add_topic(&mut self, name: &str, partitions: i32) -> u64 {
        let v = self.version().await;
        self.admin
            .apply(ApplyRequest {
                expected_version: v,
                changes: vec![Change {
                    op: Some(Op::UpsertTopic(Topic {
                        name: name.into(),
                        cluster: "east".into(),
                        partitions,
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .version
    }

    /// Logical topic `name` as the current snapshot has it.
    async fn topic(&mut self, name: &str) -> Topic {
        let s = self
            .meta
            .get_snapshot(GetSnapshotRequest {})
            .await
            .unwrap()
            .into_inner();
        s.topics.into_iter().find(|t| t.name == name).unwrap()
    }

    async fn route(&mut self, name: &str) -> (String, String) {
        let t = self.topic(name).await;
        (t.cluster, t.physical)
    }

    async fn report(&mut self, applied: u64, topic: &str, produce_on: &str, consume_on: &str) {
        let ep = |cluster: &str, group: &str| ClientEndpoint {
            logical_topic: topic.into(),
            cluster: cluster.into(),
            physical_topic: topic.into(),
            group: group.into(),
            ..Default::default()
        };
        self.meta
            .report_status(ReportStatusRequest {
                status: Some(ClientStatus {
                    client_id: "fake-1".into(),
                    app: "orders".into(),
                    language: "test".into(),
                    sdk_version: "0".into(),
                    applied_version: applied,
                    producing: vec![ep(produce_on, "")],
                    consuming: vec![ep(consume_on, "orders-readers")],
                    hostname: "test".into(),
                    pid: 1,
                    instance_id: String::new(),
                }),
            })
            .await
            .unwrap();
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("SWITCHYARD_TOKEN")
            .env("SWITCHYARD_AUTHOR", "move-test")
            .arg("--endpoint")
            .arg(format!("http://{}", self.cfg.listen))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    async fn refused(&mut self, args: &[&str], expect: &str) {
        let before = self.version().await;
        let out = tokio::time::timeout(LIMIT, self.cli(args).output())
            .await
            .expect("the CLI answers in time")
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} should fail; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in the error, got: {err}"
        );
        assert_eq!(
            self.version().await,
            before,
            "{args:?} changed the configuration"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_topic_creates_the_destination_switches_and_follows_the_clients() {
    let mut e = env().await;
    let t = fresh("move");
    create_topic(&e.east, &t, 3, Some("3600000")).await;
    produce(&e.east, &t, Some(5)).await;
    let v1 = e.add_topic(&t, 3).await;
    // A client that produces and consumes the topic on east.
    e.report(v1, &t, "east", "east").await;

    let (mut child, mut lines) = e.spawn_move_and_wait(&t);
    let mut seen = Vec::new();
    // The route changes first.
    let v2 = tokio::time::timeout(LIMIT, async {
        while let Some(l) = lines.next_line().await.unwrap() {
            seen.push(l.clone());
            if let Some(v) = l.strip_prefix("switched: version ") {
                return v.parse::<u64>().unwrap();
            }
        }
        panic!("the CLI ended without switching: {seen:?}");
    })
    .await
    .expect("switched in time");
    assert_eq!(v2, v1 + 1);
    assert_eq!(e.route(&t).await, ("west".to_string(), t.clone()));
    assert!(
        seen[0].contains("destination created") && seen[0].contains("retention.ms=3600000"),
        "{seen:?}"
    );
    // Created like the source: 3 partitions, the source's topic config.
    assert_eq!(
        topic_config(&e.west, &t, "retention.ms").await.as_deref(),
        Some("3600000")
    );
    let md_parts = {
        let a = kadmin(&e.west);
        let md = a
            .inner()
            .fetch_metadata(Some(&t), Duration::from_secs(10))
            .unwrap();
        md.topics()[0].partitions().len()
    };
    assert_eq!(md_parts, 3);

    // The CLI waits for the client: first it reports the new version with its producer
    // switched and its group still draining east, then the group on west.
    next(&mut lines, &mut seen, "producers switched 0/1").await;
    e.report(v2, &t, "west", "east").await;
    next(
        &mut lines,
        &mut seen,
        "DRAIN: producers switched 1/1 · consumer groups drained 0/1 (draining: orders-readers)",
    )
    .await;
    // A write that reaches the source after the seal is reported.
    produce(&e.east, &t, Some(2)).await;
    e.report(v2, &t, "west", "west").await;
    next(&mut lines, &mut seen, "complete in").await;
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    while let Some(l) = lines.next_line().await.unwrap() {
        seen.push(l);
    }
    assert!(status.success(), "{seen:?}");
    let all = seen.join("\n");
    assert!(all.contains("consumer groups drained 1/1"), "{all}");
    assert!(
        all.contains("2 record(s) reached east/"),
        "late writes are reported: {all}"
    );
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_moves_are_refused_and_change_nothing() {
    let mut e = env().await;
    let t = fresh("refuse");
    create_topic(&e.east, &t, 3, None).await;
    e.add_topic(&t, 3).await;
    e.refused(
        &["move-topic", "no-such-topic", "--to", "west"],
        "is not in the configuration",
    )
    .await;
    e.refused(
        &["move-topic", &t, "--to", "north"],
        "cluster \"north\" is not configured",
    )
    .await;
    e.refused(
        &["move-topic", &t, "--to", "east"],
        "already lives on east/",
    )
    .await;
    e.refused(
        &["move-topic", &t, "--to", "west", "--to-topic", "bad name!"],
        "to_topic",
    )
    .await;
    // A destination with another partition count.
    let two = fresh("two");
    create_topic(&e.west, &two, 2, None).await;
    e.refused(
        &["move-topic", &t, "--to", "west", "--to-topic", &two],
        "has 2 partitions and the source",
    )
    .await;
    // A destination that already holds records.
    let full = fresh("full");
    create_topic(&e.west, &full, 3, None).await;
    produce(&e.west, &full, Some(1)).await;
    e.refused(
        &["move-topic", &t, "--to", "west", "--to-topic", &full],
        "already holds 1 record(s)",
    )
    .await;
    // A dry run checks and changes nothing, creates nothing.
    let before = e.version().await;
    let out = e
        .cli(&["move-topic", &t, "--to", "west", "--dry-run"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run"));
    assert_eq!(e.version().await, before);
    let a = kadmin(&e.west);
    let md = a
        .inner()
        .fetch_metadata(Some(&t), Duration::from_secs(10))
        .unwrap();
    assert!(
        md.topics()
            .iter()
            .all(|x| x.name() != t || x.error().is_some()),
        "a dry run created the destination"
    );
    // With the overrides, an existing non-empty destination is accepted.
    let out = e
        .cli(&[
            "move-topic",
            &t,
            "--to",
            "west",
            "--to-topic",
            &full,
            "--allow-nonempty-destination",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(e.route(&t).await, ("west".to_string(), full.clone()));
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_completes_across_a_config_service_restart() {
    let grace = Duration::from_secs(2);
    let (_dir, mut e) = file_env(grace).await;
    let t = fresh("restart");
    create_topic(&e.east, &t, 3, None).await;
    let v1 = e.add_topic(&t, 3).await;
    e.report(v1, &t, "east", "east").await;
    let (mut child, mut lines) = e.spawn_move_and_wait(&t);
    let mut seen = Vec::new();
    next(&mut lines, &mut seen, "producers switched 0/1").await;
    let v2 = e.version().await;
    assert_eq!(e.route(&t).await.0, "west");
    e.report(v2, &t, "west", "east").await;
    next(&mut lines, &mut seen, "DRAIN: producers switched 1/1").await;
    // Restart the service: its client inventory starts empty. The move must not look complete
    // until the client reports again, now with its group on west.
    e.restart().await;
    // The route change and the seal (published in the next version) survived the restart.
    assert_eq!(e.version().await, v2 + 1);
    assert_eq!(e.route(&t).await.0, "west");
    e.report(v2, &t, "west", "west").await;
    next(&mut lines, &mut seen, "complete in").await;
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{seen:?}");
    let all = seen.join("\n");
    // Completed on the client's new report, not on the empty inventory after the restart.
    assert!(!all.contains("0/0"), "{all}");
    assert!(
        all.contains("producers switched 1/1 · consumer groups drained 1/1"),
        "{all}"
    );
    e.stop().await;
}

impl Env {
    async fn start_migration(&mut self, t: &str) -> Migration {
        self.admin
            .start_migration(StartMigrationRequest {
                topic: t.into(),
                to_cluster: "west".into(),
                author: "move-test".into(),
                ..Default::default()
            })
            .await
            .expect("the migration starts")
            .into_inner()
    }

    async fn migration(&mut self, id: &str) -> Migration {
        self.admin
            .list_migrations(ListMigrationsRequest {
                id: id.into(),
                active_only: false,
            })
            .await
            .unwrap()
            .into_inner()
            .migrations
            .remove(0)
    }

    /// Polls migration `id` until `pred` holds.
    async fn until(
        &mut self,
        id: &str,
        what: &str,
        pred: impl Fn(&Migration) -> bool,
    ) -> Migration {
        let r = tokio::time::timeout(LIMIT, async {
            loop {
                let m = self.migration(id).await;
                if pred(&m) {
                    return m;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match r {
            Ok(m) => m,
            Err(_) => panic!(
                "{what}: not within {LIMIT:?}: {:?}",
                self.migration(id).await
            ),
        }
    }

    async fn cli_ok(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(LIMIT, self.cli(args).output())
            .await
            .expect("the CLI answers in time")
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn phase(m: &Migration) -> MigrationPhase {
    MigrationPhase::try_from(m.phase).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_aborted_before_the_seal_routes_the_topic_back() {
    let mut e = env().await;
    let t = fresh("abort");
    create_topic(&e.east, &t, 3, None).await;
    let v1 = e.add_topic(&t, 3).await;
    // A producer that has not switched keeps the migration in SWITCH.
    e.report(v1, &t, "east", "east").await;
    let m = e.start_migration(&t).await;
    assert_eq!(phase(&m), MigrationPhase::Switch);
    assert_eq!(e.route(&t).await.0, "west");
    let m = e
        .until(&m.id, "the coordinator sees the producer", |m| {
            m.producers == 1
        })
        .await;
    assert_eq!(phase(&m), MigrationPhase::Switch, "{m:?}");
    assert!(
        m.note.contains("fake-1"),
        "the note names the producer: {m:?}"
    );

    // One migration per topic at a time.
    let err = e
        .admin
        .start_migration(StartMigrationRequest {
            topic: t.clone(),
            to_cluster: "west".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains(&m.id), "{}", err.message());

    // A producer that switched wrote 5 records to the destination meanwhile.
    produce(&e.west, &t, Some(5)).await;
    let out = e.cli_ok(&["move-topic", "--abort", &m.id]).await;
    assert!(out.contains("aborting"), "{out}");
    assert_eq!(e.route(&t).await, ("east".to_string(), t.clone()));
    let m = e.migration(&m.id).await;
    assert_eq!(phase(&m), MigrationPhase::Aborting);
    let abort_version = m.abort_version;
    assert_eq!(abort_version, e.version().await);
    // Routed back with the marker: producers hold their sends, groups leave the destination.
    let from = e
        .topic(&t)
        .await
        .migrating_from
        .expect("the abort's marker");
    assert!(from.aborted && from.hold_sends, "{from:?}");
    assert_eq!(
        (from.cluster.as_str(), from.migration_id.as_str()),
        ("west", m.id.as_str())
    );
    // Nothing is copied back while a producer has not applied the abort (it may still write
    // to the destination).
    let m = e
        .until(&m.id, "the coordinator waits for the producer", |m| {
            m.note.contains("fake-1") || m.clients_behind == 1
        })
        .await;
    assert_eq!(
        (phase(&m), m.copied_back),
        (MigrationPhase::Aborting, 0),
        "{m:?}"
    );
    // It applies the abort and is back on the source; its group reads the source only.
    e.report(abort_version, &t, "east", "east").await;
    let m = e
        .until(&m.id, "aborted", |m| phase(m) == MigrationPhase::Aborted)
        .await;
    assert_eq!(m.copied_back, 5, "{m:?}");
    assert!(m.release_version > abort_version, "{m:?}");
    assert!(!m.forced);
    let a = kadmin(&e.east);
    let on_east: i64 = (0..3)
        .map(|p| {
            a.inner()
                .fetch_watermarks(&t, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    assert_eq!(
        on_east, 5,
        "the destination's records are copied back to the source"
    );
    assert!(
        e.topic(&t).await.migrating_from.is_none(),
        "the marker is cleared"
    );
    assert!(
        migration::progress_line(&m).contains("copied back 5"),
        "{}",
        migration::progress_line(&m)
    );
    // Nothing to abort or advance any more.
    e.refused(
        &["move-topic", "--abort", &m.id],
        "abort is allowed until the seal",
    )
    .await;
    e.refused(&["move-topic", "--advance", &m.id], "can be advanced")
        .await;
    e.refused(
        &["move-topic", "--abort", "mig-nope"],
        "no migration with id",
    )
    .await;
    let listed = e.cli_ok(&["migrations", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let row = v["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == m.id.as_str())
        .expect("listed");
    assert_eq!(row["phase"], "aborted");
    // The copied records are deleted from the abandoned destination (it was created by the
    // migration), so the move can be retried as it is.
    let w = kadmin(&e.west);
    let left: i64 = (0..3)
        .map(|p| {
            let (low, high) = w
                .inner()
                .fetch_watermarks(&t, p, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum();
    assert_eq!(left, 0, "the abandoned destination holds no record");
    let again = e.start_migration(&t).await;
    assert_eq!(phase(&again), MigrationPhase::Switch);
    assert_eq!(again.destination_start_offsets.iter().sum::<i64>(), 5);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_forces_the_seal_and_late_writes_are_counted() {
    let mut e = env().await;
    let t = fresh("force");
    create_topic(&e.east, &t, 3, None).await;
    produce(&e.east, &t, Some(4)).await;
    let v1 = e.add_topic(&t, 3).await;
    // A producer cut off from the service: it never applies the new route.
    e.report(v1, &t, "east", "east").await;
    let m = e.start_migration(&t).await;
    e.until(&m.id, "the coordinator sees the producer", |m| {
        m.producers == 1
    })
    .await;
    let out = e.cli_ok(&["move-topic", "--advance", &m.id]).await;
    assert!(out.contains("SEALED") || out.contains("DRAIN"), "{out}");
    let m = e
        .until(&m.id, "drain", |m| phase(m) == MigrationPhase::Drain)
        .await;
    assert!(m.forced);
    // The seal is published on the topic for the consumers.
    let topic = e.topic(&t).await;
    let from = topic
        .migrating_from
        .as_ref()
        .expect("migrating_from while draining");
    assert_eq!(from.migration_id, m.id);
    assert_eq!(from.cluster, "east");
    assert_eq!(from.sealed_offsets, m.sealed_offsets);
    assert_eq!(m.sealed_offsets.iter().sum::<i64>(), 4, "{m:?}");
    // The cut-off producer keeps writing to the source: counted as late writes.
    produce(&e.east, &t, Some(3)).await;
    let m = e
        .until(&m.id, "late writes counted", |m| m.late_writes == 3)
        .await;
    assert_eq!(
        phase(&m),
        MigrationPhase::Drain,
        "its group still reads the source"
    );
    let out = e
        .cli_ok(&["move-topic", "--advance", &m.id, "--wait"])
        .await;
    assert!(out.contains("complete in"), "{out}");
    assert!(out.contains("3 record(s) reached east/"), "{out}");
    let m = e.migration(&m.id).await;
    assert_eq!(phase(&m), MigrationPhase::Complete);
    assert_eq!(m.late_writes, 3);
    // Copied to the destination (the groups drain the source only up to the seal).
    assert_eq!(m.mirrored, 3, "{m:?}");
    assert_eq!(
        m.mirrored_offsets.iter().sum::<i64>(),
        m.sealed_offsets.iter().sum::<i64>() + 3
    );
    assert!(out.contains("3 copied to west/"), "{out}");
    let a = kadmin(&e.west);
    let held: i64 = (0..3)
        .map(|p| {
            a.inner()
                .fetch_watermarks(&t, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    assert_eq!(held, 3, "the late writes are in the destination");
    // The topic no longer carries the migration.
    let topic = e.topic(&t).await;
    assert!(topic.migrating_from.is_none(), "{topic:?}");
    e.stop().await;
}

/// Commits `offsets` (one per partition) for consumer group `group` on `topic`, as a group
/// whose members are all gone would have left them.
fn commit_group(bootstrap: &str, group: &str, topic: &str, offsets: &[i64]) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Offset(*o))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// A group that is offline through the whole move (nothing reports it) but has committed
/// offsets on the source below the seal: the coordinator finds it on the source cluster, shows
/// how far behind it is, and does not complete until an operator releases it
/// (`move-topic --ignore-group GROUP ID`). A group that had committed everything does not hold
/// the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_group_found_on_the_source_holds_the_move_until_released() {
    let mut e = env().await;
    let t = fresh("offline");
    create_topic(&e.east, &t, 2, None).await;
    produce(&e.east, &t, Some(6)).await;
    let a = kadmin(&e.east);
    let ends: Vec<i64> = (0..2)
        .map(|p| {
            a.inner()
                .fetch_watermarks(&t, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect();
    assert_eq!(ends.iter().sum::<i64>(), 6);
    let behind = fresh("behind");
    let done = fresh("caught-up");
    commit_group(&e.east, &behind, &t, &[0, 0]);
    commit_group(&e.east, &done, &t, &ends);
    e.add_topic(&t, 2).await;
    let m = e.start_migration(&t).await;
    let m = e
        .until(&m.id, "the offline group is found on the source", |m| {
            m.groups_draining.contains(&behind)
        })
        .await;
    assert_eq!(phase(&m), MigrationPhase::Drain);
    assert_eq!(m.groups_behind.get(&behind), Some(&6), "{m:?}");
    assert!(m.groups.contains(&done), "{m:?}");
    assert!(!m.groups_draining.contains(&done), "{m:?}");
    let table = e.cli_ok(&["migrations", "--id", &m.id]).await;
    assert!(table.contains(&format!("{behind}:6")), "{table}");
    let line = migration::progress_line(&m);
    assert!(line.contains(&format!("{behind} (6 behind)")), "{line}");

    // It stays in DRAIN while the group is offline.
    let again = e.migration(&m.id).await;
    assert_eq!(phase(&again), MigrationPhase::Drain);

    // Bad input is refused precisely.
    e.refused(
        &["move-topic", "--ignore-group", &behind, "mig-nope"],
        "no migration with id",
    )
    .await;
    let out = e
        .cli_ok(&["move-topic", "--ignore-group", &behind, &m.id, "--wait"])
        .await;
    assert!(out.contains("released"), "{out}");
    let m = e.migration(&m.id).await;
    assert_eq!(phase(&m), MigrationPhase::Complete, "{m:?}");
    assert_eq!(m.ignored_groups, vec![behind.clone()]);
    assert!(!m.forced);
    let json = e.cli_ok(&["migrations", "--id", &m.id, "-o", "json"]).await;
    assert!(json.contains("\"ignored_groups\""), "{json}");
    e.stop().await;
}

/// A plain apply (or rollback) that would re-route, delete or re-mark a topic while a migration
/// moves it is refused with a message naming the migration, and changes nothing; the move goes
/// on and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_that_re_routes_a_migrating_topic_is_refused() {
    let mut e = env().await;
    let t = fresh("guard");
    create_topic(&e.east, &t, 2, None).await;
    let v1 = e.add_topic(&t, 2).await;
    // A producer that has not switched holds the move in SWITCH.
    e.report(v1, &t, "east", "east").await;
    let m = e.start_migration(&t).await;
    let m = e
        .until(&m.id, "the coordinator sees the producer", |m| {
            m.producers == 1
        })
        .await;
    assert_eq!(phase(&m), MigrationPhase::Switch);
    let before = e.version().await;
    let upsert = |cluster: &str| Change {
        op: Some(Op::UpsertTopic(Topic {
            name: t.clone(),
            cluster: cluster.into(),
            partitions: 2,
            ..Default::default()
        })),
    };
    for (changes, what) in [
        (vec![upsert("east")], "re-route it"),
        (
            vec![Change {
                op: Some(Op::DeleteTopic(t.clone())),
            }],
            "delete it",
        ),
        // Same route, but without the coordinator's marker.
        (vec![upsert("west")], "change its migrating_from"),
    ] {
        let err = e
            .admin
            .apply(ApplyRequest {
                expected_version: before,
                changes,
                author: "fat-finger".into(),
                ..Default::default()
            })
            .await
            .expect_err("a change to a migrating topic is refused");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains(&m.id), "{}", err.message());
        assert!(err.message().contains(what), "{}", err.message());
    }
    let err = e
        .admin
        .rollback(RollbackRequest {
            to_version: v1,
            author: "fat-finger".into(),
            ..Default::default()
        })
        .await
        .expect_err("a rollback across the switch is refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(e.version().await, before, "nothing was written");
    let topic = e.topic(&t).await;
    assert_eq!(topic.cluster, "west");
    assert_eq!(
        topic
            .migrating_from
            .as_ref()
            .map(|f| f.migration_id.as_str()),
        Some(m.id.as_str())
    );
    // The operator forces it on; it completes.
    e.cli_ok(&["move-topic", "--advance", &m.id]).await;
    e.until(&m.id, "drain", |m| phase(m) == MigrationPhase::Drain)
        .await;
    let out = e
        .cli_ok(&["move-topic", "--advance", &m.id, "--wait"])
        .await;
    assert!(out.contains("complete in"), "{out}");
    e.stop().await;
}

/// Where the coordinator "crashed": the migration record on disk is edited (or deleted)
/// between a stop and a restart of the service, as a crash between a configuration write and
/// the record's would have left it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Crash {
    /// `complete` cleared the topic's marker, the record still says DRAIN.
    AfterCompleteWrite,
    /// The seal was published on the topic, the record still says SWITCH (and more records
    /// reached the source meanwhile).
    AfterSealWrite,
    /// The route change took effect but the record says ABORTED (an error after the write).
    SwitchRecordedAborted,
    /// The record is gone (the coordinator's host lost its disk); the configuration remains.
    RecordLost,
}

async fn crash_scenario(crash: Crash) {
    let (dir, mut e) = file_env(Duration::ZERO).await;
    let file = dir.path().join("migrations.pb");
    let t = fresh("crash");
    create_topic(&e.east, &t, 2, None).await;
    produce(&e.east, &t, Some(4)).await;
    let v1 = e.add_topic(&t, 2).await;
    e.report(v1, &t, "east", "east").await;
    let m = e.start_migration(&t).await;
    let m = e
        .until(&m.id, "the coordinator sees the producer", |m| {
            m.producers == 1
        })
        .await;
    let v2 = m.switch_version;
    let edit = |f: &dyn Fn(&mut Migration)| edit_record(&file, &m.id, f);
    let mut seal = Vec::new();
    match crash {
        Crash::SwitchRecordedAborted | Crash::RecordLost => {
            e.stop().await;
            if crash == Crash::RecordLost {
                std::fs::remove_file(&file).unwrap();
            } else {
                edit(&|x| x.phase = MigrationPhase::Aborted as i32);
            }
            e.restart().await;
        }
        Crash::AfterCompleteWrite | Crash::AfterSealWrite => {
            e.report(v2, &t, "west", "east").await;
            let d = e
                .until(&m.id, "drain", |m| phase(m) == MigrationPhase::Drain)
                .await;
            seal = d.sealed_offsets.clone();
            assert_eq!(seal.iter().sum::<i64>(), 4);
            if crash == Crash::AfterCompleteWrite {
                e.report(v2 + 1, &t, "west", "west").await;
                e.until(&m.id, "complete", |m| phase(m) == MigrationPhase::Complete)
                    .await;
            }
            e.stop().await;
            if crash == Crash::AfterSealWrite {
                edit(&|x| {
                    x.phase = MigrationPhase::Switch as i32;
                    x.sealed_offsets.clear();
                    x.mirrored_offsets.clear();
                    x.sealed_unix_ms = 0;
                });
                // A producer cut off from the service writes to the source meanwhile.
                produce(&e.east, &t, Some(3)).await;
            } else {
                edit(&|x| {
                    x.phase = MigrationPhase::Drain as i32;
                    x.finished_unix_ms = 0;
                });
            }
            e.restart().await;
        }
    }
    // The clients report again after the restart; the move resumes and completes, and a
    // published seal never moves.
    let v = e.version().await;
    e.report(v, &t, "west", "east").await;
    let d = e
        .until(&m.id, "the move resumes past the seal", |m| {
            matches!(phase(m), MigrationPhase::Drain | MigrationPhase::Complete)
        })
        .await;
    if !seal.is_empty() {
        assert_eq!(d.sealed_offsets, seal, "a published seal never moves");
        let topic = e.topic(&t).await;
        if let Some(f) = &topic.migrating_from {
            assert_eq!(f.sealed_offsets, seal, "a published seal never moves");
        }
    }
    if crash == Crash::AfterSealWrite {
        e.until(&m.id, "late writes counted", |m| m.late_writes == 3)
            .await;
    }
    e.report(v, &t, "west", "west").await;
    let done = e
        .until(&m.id, "complete", |m| phase(m) == MigrationPhase::Complete)
        .await;
    assert!(!done.forced, "{done:?}");
    let topic = e.topic(&t).await;
    assert_eq!(topic.cluster, "west");
    assert!(topic.migrating_from.is_none(), "{topic:?}");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_completion_write_still_completes() {
    crash_scenario(Crash::AfterCompleteWrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_seal_write_keeps_the_published_seal() {
    crash_scenario(Crash::AfterSealWrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_recorded_as_aborted_while_the_topic_moved_resumes() {
    crash_scenario(Crash::SwitchRecordedAborted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_migration_record_is_rebuilt_from_the_configuration() {
    crash_scenario(Crash::RecordLost).await;
}

/// Every record of `topic` on `bootstrap`: (partition, offset, CreateTime, payload, the
/// `switchyard-copied-from` header).
fn read_records(bootstrap: &str, topic: &str) -> Vec<(i32, i64, i64, String, Option<String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::{Headers as _, Message as _};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", fresh("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..parts {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        ends.push(high);
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(low))
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut next: Vec<i64> = vec![0; parts as usize];
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + LIMIT;
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        assert!(std::time::Instant::now() < deadline, "reading {topic}");
        let Some(r) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = r.unwrap();
        next[m.partition() as usize] = m.offset() + 1;
        let origin = m.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == "switchyard-copied-from")
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        out.push((
            m.partition(),
            m.offset(),
            m.timestamp().to_millis().unwrap_or(-1),
            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            origin,
        ));
    }
    out
}

/// A producer cut off from the service keeps writing to the source after COMPLETE: the source
/// stays watched, each late write is copied to the same partition of the destination exactly
/// once — also across a coordinator crash between the copy and the record of its progress —
/// with its CreateTime, until an operator retires the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_writes_after_complete_are_copied_once_until_the_source_is_retired() {
    let (dir, mut e) = file_env(Duration::ZERO).await;
    let file = dir.path().join("migrations.pb");
    let t = fresh("afterdone");
    create_topic(&e.east, &t, 2, None).await;
    produce(&e.east, &t, Some(4)).await;
    let v1 = e.add_topic(&t, 2).await;
    e.report(v1, &t, "east", "east").await;
    let m = e.start_migration(&t).await;
    e.until(&m.id, "the coordinator sees the producer", |m| {
        m.producers == 1
    })
    .await;
    let v = e.version().await;
    e.report(v, &t, "west", "east").await;
    e.until(&m.id, "drain", |m| phase(m) == MigrationPhase::Drain)
        .await;
    let v = e.version().await;
    e.report(v, &t, "west", "west").await;
    let done = e
        .until(&m.id, "complete", |m| phase(m) == MigrationPhase::Complete)
        .await;
    assert!(!done.source_retired);
    assert!(
        migration::progress_line(&done).contains("source watched"),
        "{}",
        migration::progress_line(&done)
    );

    // The cut-off producer writes 3 records (an hour-old CreateTime) after COMPLETE.
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &e.east)
        .create()
        .unwrap();
    let ts0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    for i in 0..3i64 {
        raw.send(
            FutureRecord::<str, str>::to(&t)
                .partition((i % 2) as i32)
                .payload(&format!("late{i}"))
                .timestamp(ts0 + i),
            Duration::from_secs(10),
        )
        .await
        .expect("a late write is acknowledged by the source");
    }
    let m = e
        .until(&m.id, "the late writes are copied", |m| {
            m.late_writes == 3 && m.mirrored == 3
        })
        .await;
    let check_destination = |e: &Env| {
        let dest = read_records(&e.west, &t);
        assert_eq!(dest.len(), 3, "each late write once: {dest:?}");
        for (p, _, ts, payload, origin) in &dest {
            let i: i64 = payload.strip_prefix("late").unwrap().parse().unwrap();
            assert_eq!(*p, (i % 2) as i32, "same partition");
            assert_eq!(*ts, ts0 + i, "CreateTime kept");
            assert!(
                origin
                    .as_deref()
                    .is_some_and(|o| o.starts_with(&format!("east/{t}/{p}/"))),
                "{origin:?}"
            );
        }
    };
    check_destination(&e);

    // A crash after the copy, before its progress was recorded: the restarted coordinator finds
    // the copies on the destination and does not copy them again.
    e.stop().await;
    edit_record(&file, &m.id, |x| {
        x.mirrored_offsets = x.sealed_offsets.clone();
        x.mirrored = 0;
        x.mirror_scan_from = vec![0, 0];
    });
    e.restart().await;
    e.until(&m.id, "progress recovered from the destination", |m| {
        m.mirrored == 3 && m.mirrored_offsets != m.sealed_offsets
    })
    .await;
    check_destination(&e);

    // The operator retires the source.
    let out = e.cli_ok(&["move-topic", "--retire-source", &m.id]).await;
    assert!(out.contains("retired"), "{out}");
    let m = e.migration(&m.id).await;
    assert!(m.source_retired, "{m:?}");
    let json = e.cli_ok(&["migrations", "--id", &m.id, "-o", "json"]).await;
    assert!(json.contains("\"source_retired\": true"), "{json}");
    e.refused(
        &["move-topic", "--retire-source", "mig-nope"],
        "no migration with id",
    )
    .await;
    e.stop().await;
}

/// After a restart the coordinator does not wait its whole start-up grace when every client it
/// knew before the restart has reported again: it advances at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_advances_once_every_known_client_reported_again() {
    // Longer than any wait here: only the clients' reports can end it.
    let grace = Duration::from_secs(3600);
    let (dir, mut e) = file_env(grace).await;
    let t = fresh("quickstart");
    create_topic(&e.east, &t, 2, None).await;
    let v1 = e.add_topic(&t, 2).await;
    e.report(v1, &t, "east", "east").await;
    // The service writes its live clients down.
    let known = dir.path().join("clients.known");
    tokio::time::timeout(LIMIT, async {
        while !std::fs::read_to_string(&known).is_ok_and(|s| s.contains("fake-1")) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the live clients are written down");
    let m = e.start_migration(&t).await;
    assert_eq!(phase(&m), MigrationPhase::Switch);
    e.restart().await;
    // The only client reports again, switched: the seal need not wait for the grace.
    e.report(m.switch_version, &t, "west", "east").await;
    let m = e
        .until(&m.id, "sealed without waiting for the grace", |m| {
            phase(m) == MigrationPhase::Drain
        })
        .await;
    assert!(!m.forced);
    e.stop().await;
}

/// With the replicated (Kafka-log) store the coordinator's record lives in the store's cluster:
/// its host lost (directory and all), a coordinator started on another host takes up every
/// move — here a COMPLETE one whose source is still watched, so a late write after the
/// takeover is still copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_replicated_store_a_coordinator_on_a_new_host_takes_up_every_move() {
    let (east, _) = kafka();
    let url = format!("kafka://{east}/{}", fresh("mstore"));
    let host_a = tempfile::tempdir().unwrap();
    let mut e = env_with(
        StoreConfig::Kafka {
            url: url.clone(),
            coordinator_dir: Some(host_a.path().to_path_buf()),
        },
        Duration::ZERO,
    )
    .await;
    let t = fresh("takeover");
    create_topic(&e.east, &t, 2, None).await;
    produce(&e.east, &t, Some(4)).await;
    let v1 = e.add_topic(&t, 2).await;
    e.report(v1, &t, "east", "east").await;
    let m = e.start_migration(&t).await;
    e.until(&m.id, "the coordinator sees the producer", |m| {
        m.producers == 1
    })
    .await;
    let v = e.version().await;
    e.report(v, &t, "west", "east").await;
    e.until(&m.id, "drain", |m| phase(m) == MigrationPhase::Drain)
        .await;
    let v = e.version().await;
    e.report(v, &t, "west", "west").await;
    e.until(&m.id, "complete", |m| phase(m) == MigrationPhase::Complete)
        .await;

    // Host A is lost with its directory; the coordinator starts on host B.
    e.stop().await;
    drop(host_a);
    let host_b = tempfile::tempdir().unwrap();
    e.cfg.store = StoreConfig::Kafka {
        url,
        coordinator_dir: Some(host_b.path().to_path_buf()),
    };
    e.restart().await;
    let took = e
        .until(&m.id, "host B knows the move", |m| {
            phase(m) == MigrationPhase::Complete
        })
        .await;
    assert!(!took.source_retired, "{took:?}");

    // A late write after the takeover is copied: the source is still watched.
    produce(&e.east, &t, Some(1)).await;
    e.until(&m.id, "the late write is copied", |m| {
        m.late_writes == 1 && m.mirrored == 1
    })
    .await;
    assert_eq!(read_records(&e.west, &t).len(), 1);
    e.stop().await;
}
