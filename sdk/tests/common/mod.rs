//! Shared helpers for SDK tests on real Kafka: the clusters started by `scripts/kafka.sh`, an
//! in-process config service, topic creation and an independent reader.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use switchyard_config::client::{self, AdminClient as Admin, BearerToken};
use switchyard_config::{RunningServer, ServerConfig, StoreConfig};
use switchyard_proto::v1::{ApplyRequest, Change, Cluster, GetSnapshotRequest, Topic, change::Op};

/// The bootstrap addresses of the two real Kafka clusters. Missing clusters fail the test:
/// run the suite through `scripts/test.sh`, which starts them.
pub fn kafka() -> (String, String) {
    let v = std::env::var("SWITCHYARD_KAFKA_CLUSTERS").expect(
        "SWITCHYARD_KAFKA_CLUSTERS is not set: run ./scripts/test.sh (it starts two real Kafka clusters)",
    );
    let mut it = v.split(';').map(str::to_string);
    let a = it.next().expect("first cluster");
    let b = it
        .next()
        .expect("SWITCHYARD_KAFKA_CLUSTERS must name two clusters");
    (a, b)
}

/// A name unique to this test run.
pub fn fresh(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Creates a topic on a real cluster and waits until its metadata is visible.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    create_topic_with(bootstrap, name, partitions, &[]).await;
}

/// [`create_topic`] with topic configuration entries.
#[allow(dead_code)]
pub async fn create_topic_with(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    config: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topic = config.iter().fold(
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)),
        |t, (k, v)| t.set(k, v),
    );
    let res = admin
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics");
    for r in res {
        r.expect("topic created");
    }
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = c
            .fetch_metadata(Some(name), Duration::from_secs(5))
            .map(|m| {
                m.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                })
            })
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "topic {name} did not appear"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record of a topic on a cluster, read independently of the SDK with raw rdkafka:
/// (partition, offset, key, payload).
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", fresh("checker"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("checker consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        let (lo, hi) = c
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .expect("watermarks");
        if hi > lo {
            ends.insert(*p, hi);
            tpl.add_partition_offset(topic, *p, Offset::Offset(lo))
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    c.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut done: HashMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} timed out"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("checker read");
            out.push((
                m.partition(),
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
            if m.offset() + 1 >= ends[&m.partition()] {
                done.insert(m.partition(), true);
            }
        }
    }
    out
}

/// A config service in this process.
pub async fn config_service(store: StoreConfig, listen: SocketAddr) -> RunningServer {
    switchyard_config::start(ServerConfig {
        listen,
        store,
        client_lease: Duration::from_secs(30),
        ..Default::default()
    })
    .await
    .expect("config service starts")
}

/// An SDK client of application `app` for the config service `svc`, without a cache.
pub async fn connect(svc: &RunningServer, app: &str) -> switchyard::Switchyard {
    switchyard::Switchyard::builder(app)
        .endpoint(format!("http://{}", svc.local_addr()))
        .without_cache()
        .connect()
        .await
        .expect("connect to the config service")
}

pub async fn admin(addr: SocketAddr) -> Admin {
    let ch = client::connect(&format!("http://{addr}"), None)
        .await
        .expect("connect admin");
    client::admin(ch, BearerToken::default())
}

pub fn cluster(name: &str, bootstrap: &str) -> Change {
    Change {
        op: Some(Op::UpsertCluster(Cluster {
            name: name.into(),
            bootstrap: vec![bootstrap.into()],
            ..Default::default()
        })),
    }
}

pub fn topic(name: &str, cluster: &str, physical: &str, partitions: i32) -> Change {
    Change {
        op: Some(Op::UpsertTopic(Topic {
            name: name.into(),
            cluster: cluster.into(),
            physical: physical.into(),
            partitions,
            ..Default::default()
        })),
    }
}

/// Applies changes on top of the current version; returns the new version.
pub async fn apply(admin: &mut Admin, changes: Vec<Change>) -> u64 {
    let mut meta = admin.clone();
    let _ = &mut meta;
    let cur = current_version(admin).await;
    let r = admin
        .apply(ApplyRequest {
            expected_version: cur,
            changes,
            dry_run: false,
            author: "test".into(),
            comment: String::new(),
        })
        .await
        .expect("apply")
        .into_inner();
    assert!(r.applied);
    r.version
}

pub async fn current_version(admin: &mut Admin) -> u64 {
    admin
        .get_version(switchyard_proto::v1::GetVersionRequest {
            version: 0,
            include_secrets: false,
        })
        .await
        .expect("get version")
        .into_inner()
        .version
}

#[allow(unused)]
fn _unused(_: GetSnapshotRequest) {}

/// Copies bytes until `frozen`; then holds both sockets open and forwards nothing more.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(std::sync::atomic::Ordering::SeqCst) {
            // A hung server: the connection is up, nothing is answered.
            let _keep = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP proxy to `target` that can be frozen (every connection, open or new, then forwards
/// nothing more) and thawed again (new connections forward again).
pub async fn freezable_proxy(
    target: SocketAddr,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, f.clone()));
            tokio::spawn(pump(sr, cw, f.clone()));
        }
    });
    (addr, frozen)
}
