//! End-to-end producer benchmarks on a real Kafka broker (started by `scripts/kafka.sh`):
//!
//! 1. Throughput: the SDK producer vs a raw rdkafka `FutureProducer` with the same properties,
//!    same broker, same run: N × 100-byte keyed messages, `acks=all`. Prints both and the ratio.
//! 2. Route-change propagation: admin write → first record delivered on the new cluster,
//!    over repeated changes while a producer sends continuously. Prints p50/p99/max.
//!
//! `cargo bench -p switchyard-sdk --bench producer [-- --messages N --changes N --quick]`
//! needs `SWITCHYARD_KAFKA_CLUSTERS="h:p;h:p"` (`eval "$(scripts/kafka.sh start 2)"`).
//!
//! `--sasl-ssl` also runs the throughput pair over the first cluster's SASL_SSL listener
//! (SCRAM-SHA-512, `eval "$(scripts/kafka.sh start 2 --secure)"`), alternating with the
//! plaintext pair round by round, and prints the SDK/raw ratio over SASL_SSL and the cost of
//! SASL_SSL against plaintext for each side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard::{Record, Switchyard};
use switchyard_config::client::{self, BearerToken};
use switchyard_config::{ServerConfig, StoreConfig};
use switchyard_proto::v1::{ApplyRequest, Change, Cluster, GetVersionRequest, Topic, change::Op};

const PAYLOAD: usize = 100;
const PARTITIONS: i32 = 6;
/// Same properties on both sides (these are also the SDK's producer defaults).
const PROPS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("linger.ms", "5"),
];

/// A listener to measure on: its name, bootstrap and security properties.
type Listener = (&'static str, String, Vec<(String, String)>);

struct Args {
    sasl_ssl: bool,
    messages: usize,
    changes: usize,
    window: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        sasl_ssl: false,
        messages: 1_000_000,
        changes: 50,
        window: 2_000,
        rounds: 2,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        match v[i].as_str() {
            "--quick" => {
                a.messages = 20_000;
                a.changes = 5;
                a.rounds = 1;
            }
            "--sasl-ssl" => a.sasl_ssl = true,
            "--messages" => {
                i += 1;
                a.messages = v[i].parse().expect("--messages N");
            }
            "--changes" => {
                i += 1;
                a.changes = v[i].parse().expect("--changes N");
            }
            "--window" => {
                i += 1;
                a.window = v[i].parse().expect("--window N");
            }
            "--rounds" => {
                i += 1;
                a.rounds = v[i].parse().expect("--rounds N");
            }
            _ => {}
        }
        i += 1;
    }
    a
}

fn fresh(p: &str) -> String {
    format!("{p}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    for r in admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topics")
    {
        r.expect("topic created");
    }
}

async fn delete_topic(bootstrap: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let deleted = admin
        .delete_topics(
            &[name],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await;
    if let Err(e) = deleted.map(|rs| rs.into_iter().collect::<Result<Vec<_>, _>>()) {
        eprintln!("could not delete topic {name}: {e:?}");
    }
}

fn payload() -> Vec<u8> {
    vec![b'x'; PAYLOAD]
}

async fn raw_run(
    bootstrap: &str,
    security: &[(String, String)],
    topic: &str,
    n: usize,
    window: usize,
) -> f64 {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap);
    for (k, v) in PROPS {
        cfg.set(*k, *v);
    }
    for (k, v) in security {
        cfg.set(k, v);
    }
    let p: FutureProducer = cfg.create().expect("raw producer");
    let p = Arc::new(p);
    let body = Arc::new(payload());
    // Warm up exactly as the SDK run does (one send awaited before the clock starts): a new
    // idempotent producer's first send waits for its producer id (~0.5 s), which would
    // otherwise count against the raw side only.
    p.send(
        FutureRecord::<str, [u8]>::to(topic).payload(&body[..]),
        Duration::from_secs(30),
    )
    .await
    .expect("raw warm-up");
    let start = Instant::now();
    let errors = futures::stream::iter(0..n)
        .map(|i| {
            let p = p.clone();
            let body = body.clone();
            let topic = topic.to_string();
            async move {
                let key = format!("k{}", i % 1000);
                let rec = FutureRecord::to(&topic).key(&key).payload(&body[..]);
                match p.send_result(rec) {
                    Ok(f) => matches!(f.await, Ok(Ok(_))),
                    Err(_) => {
                        // Queue full: fall back to the waiting send.
                        let rec = FutureRecord::to(&topic).key(&key).payload(&body[..]);
                        p.send(rec, Duration::from_secs(30)).await.is_ok()
                    }
                }
            }
        })
        .buffer_unordered(window)
        .filter(|ok| futures::future::ready(!ok))
        .count()
        .await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(errors, 0, "raw producer had send errors");
    n as f64 / secs
}

async fn sdk_run(sy: &Switchyard, topic: &str, n: usize, window: usize) -> f64 {
    let p = sy.producer();
    // Warm the lane (creates the cluster client), as a running service would have.
    p.send(Record::new(topic).payload(payload()))
        .await
        .expect("warm-up");
    let body = bytes::Bytes::from(payload());
    let start = Instant::now();
    let errors = futures::stream::iter(0..n)
        .map(|i| {
            let p = p.clone();
            let rec = Record {
                topic: topic.to_string(),
                key: Some(bytes::Bytes::from(format!("k{}", i % 1000))),
                payload: Some(body.clone()),
                headers: Vec::new(),
            };
            async move { p.send(rec).await.is_ok() }
        })
        .buffer_unordered(window)
        .filter(|ok| futures::future::ready(!ok))
        .count()
        .await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(errors, 0, "SDK producer had send errors");
    n as f64 / secs
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let clusters = std::env::var("SWITCHYARD_KAFKA_CLUSTERS")
        .expect("set SWITCHYARD_KAFKA_CLUSTERS: eval \"$(scripts/kafka.sh start 2)\"");
    let mut it = clusters.split(';');
    let east = it.next().expect("cluster 1").to_string();
    let west = it.next().expect("cluster 2").to_string();

    // 1. Throughput: plaintext, and with --sasl-ssl the same over SASL_SSL.
    let mut listeners: Vec<Listener> = vec![("plaintext", east.clone(), Vec::new())];
    if a.sasl_ssl {
        let var = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("--sasl-ssl needs {k}: eval \"$(scripts/kafka.sh start 2 --secure)\"")
            })
        };
        let tls = var("SWITCHYARD_KAFKA_TLS_DIR");
        listeners.push((
            "sasl_ssl",
            var("KAFKA_SASL_SSL_BOOTSTRAP_1"),
            [
                ("security.protocol", "SASL_SSL".to_string()),
                ("sasl.mechanism", "SCRAM-SHA-512".into()),
                ("sasl.username", "alice".into()),
                ("sasl.password", "alice-secret".into()),
                ("ssl.ca.location", format!("{tls}/ca.pem")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("desired.yaml");
    let mut clusters = String::new();
    let mut topics_yaml = String::new();
    let mut topics = Vec::new();
    for (name, bootstrap, security) in &listeners {
        let topic = fresh(&format!("bench-throughput-{name}"));
        create_topic(&east, &topic, PARTITIONS).await;
        let props: Vec<String> = security
            .iter()
            .map(|(k, v)| format!("{k}: \"{v}\""))
            .collect();
        clusters.push_str(&format!(
            "  - {{name: {name}, bootstrap: [\"{bootstrap}\"], properties: {{{}}}}}\n",
            props.join(", ")
        ));
        topics_yaml.push_str(&format!(
            "  - {{name: {topic}, cluster: {name}, partitions: {PARTITIONS}}}\n"
        ));
        topics.push(topic);
    }
    std::fs::write(
        &yaml,
        format!("clusters:\n{clusters}topics:\n{topics_yaml}"),
    )
    .unwrap();
    let sy = Switchyard::from_file(&yaml, "bench").unwrap();
    println!(
        "throughput: {} x {PAYLOAD}-byte keyed messages, acks=all, idempotent, linger.ms=5, window {}, {} partitions, {} round(s) each, alternating ({})",
        a.messages,
        a.window,
        PARTITIONS,
        a.rounds,
        listeners.iter().map(|l| l.0).collect::<Vec<_>>().join(", ")
    );
    // Per listener: raw and SDK rates of each round.
    let mut raw = vec![Vec::new(); listeners.len()];
    let mut sdk = vec![Vec::new(); listeners.len()];
    for r in 0..a.rounds {
        for (l, (name, bootstrap, security)) in listeners.iter().enumerate() {
            let x = raw_run(bootstrap, security, &topics[l], a.messages, a.window).await;
            println!("  round {r}: {name:>9} raw rdkafka {x:>10.0} msg/s");
            raw[l].push(x);
            let y = sdk_run(&sy, &topics[l], a.messages, a.window).await;
            println!("  round {r}: {name:>9} switchyard  {y:>10.0} msg/s");
            sdk[l].push(y);
        }
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    for (l, (name, ..)) in listeners.iter().enumerate() {
        // The plaintext pair keeps the line it always printed.
        let tag = if *name == "plaintext" {
            String::new()
        } else {
            format!(" {name}")
        };
        let (best_raw, best_sdk) = (best(&raw[l]), best(&sdk[l]));
        println!(
            "RESULT throughput{tag} raw={best_raw:.0} msg/s sdk={best_sdk:.0} msg/s ratio={:.3} (best of {} rounds; target >= 0.97)",
            best_sdk / best_raw,
            a.rounds
        );
        let mut per_round: Vec<f64> = raw[l].iter().zip(&sdk[l]).map(|(r, s)| s / r).collect();
        println!(
            "RESULT throughput{tag} mean over rounds raw={:.0} msg/s sdk={:.0} msg/s ratio={:.3}; per-round ratios median={:.3} min={:.3} max={:.3}",
            mean(&raw[l]),
            mean(&sdk[l]),
            mean(&sdk[l]) / mean(&raw[l]),
            pct(&mut per_round, 0.5),
            per_round.iter().cloned().fold(f64::MAX, f64::min),
            per_round.iter().cloned().fold(0.0, f64::max),
        );
    }
    if listeners.len() == 2 {
        println!(
            "RESULT sasl_ssl cost (mean sasl_ssl / mean plaintext): raw={:.3} sdk={:.3}",
            mean(&raw[1]) / mean(&raw[0]),
            mean(&sdk[1]) / mean(&sdk[0]),
        );
    }
    drop(sy);
    // Each round wrote about 150 MB per side to the broker.
    for t in &topics {
        delete_topic(&east, t).await;
    }

    // 2. Route-change propagation.
    let svc = switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreConfig::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = svc.local_addr();
    let ch = client::connect(&format!("http://{addr}"), None)
        .await
        .unwrap();
    let mut admin = client::admin(ch, BearerToken::default());
    let t = fresh("bench-route");
    create_topic(&east, &t, 3).await;
    create_topic(&west, &t, 3).await;
    let cl = |name: &str, b: &str| Change {
        op: Some(Op::UpsertCluster(Cluster {
            name: name.into(),
            bootstrap: vec![b.into()],
            ..Default::default()
        })),
    };
    let tp = |cluster: &str| Change {
        op: Some(Op::UpsertTopic(Topic {
            name: t.clone(),
            cluster: cluster.into(),
            partitions: 3,
            ..Default::default()
        })),
    };
    let mut version = admin
        .apply(ApplyRequest {
            expected_version: 0,
            changes: vec![cl("east", &east), cl("west", &west), tp("east")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .version;
    let sy = Switchyard::builder("bench-route")
        .endpoint(format!("http://{addr}"))
        .without_cache()
        .connect()
        .await
        .unwrap();
    let p = sy.producer();
    let (tx, rx) =
        tokio::sync::watch::channel::<(String, Instant)>((String::new(), Instant::now()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..4 {
        let p = p.clone();
        let t = t.clone();
        let tx = tx.clone();
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let d = p
                    .send(Record::new(&t).key(format!("s{s}")).payload(format!("{i}")))
                    .await
                    .expect("send during route changes");
                tx.send_replace((d.cluster, Instant::now()));
                i += 1;
            }
            i
        }));
    }
    let mut lat = Vec::new();
    for i in 0..a.changes {
        let target = if i % 2 == 0 { "west" } else { "east" };
        let mut rx = rx.clone();
        let t0 = Instant::now();
        version = admin
            .apply(ApplyRequest {
                expected_version: version,
                changes: vec![tp(target)],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .version;
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|(c, at)| c == target && *at > t0),
        )
        .await
        .expect("the new route is used within 30 s")
        .unwrap()
        .1;
        lat.push((got - t0).as_secs_f64() * 1e3);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for s in senders {
        sent += s.await.unwrap();
    }
    let slow: Vec<String> = lat
        .iter()
        .enumerate()
        .filter(|(_, ms)| **ms > 100.0)
        .map(|(i, ms)| format!("#{i}={ms:.0}ms"))
        .collect();
    if !slow.is_empty() {
        println!("  changes slower than 100 ms: {}", slow.join(" "));
    }
    let n = lat.len();
    let max = lat.iter().cloned().fold(0.0, f64::max);
    println!(
        "RESULT route-change propagation over {n} changes (admin write -> first delivery on the new cluster, 4 senders, {sent} records sent, 0 errors): p50={:.1} ms p99={:.1} ms max={max:.1} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    let _ = admin
        .get_version(GetVersionRequest {
            version: 0,
            include_secrets: false,
        })
        .await;
    drop(sy);
    svc.shutdown().await.unwrap();
}
