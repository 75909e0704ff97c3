//! Consumer throughput on a real Kafka broker (started by `scripts/kafka.sh`): the SDK consumer
//! vs rust-rdkafka's `BaseConsumer`, same topic, same broker, same run, alternating rounds.
//!
//! N × 100-byte keyed records are written once to a fresh 6-partition topic; each round, each
//! side reads all of them in a fresh consumer group (auto-commit, `auto.offset.reset=earliest`,
//! one record per call: `recv().await` / `poll()`), touching every payload. The clock runs from
//! the first record received to the N-th, so the group join is not counted on either side.
//!
//! `cargo bench -p switchyard-sdk --bench consumer [-- --messages N --rounds R --quick]`
//! needs `SWITCHYARD_KAFKA_CLUSTERS="h:p;…"` (`eval "$(scripts/kafka.sh start 2)"`).

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use switchyard::{ConsumerOptions, Switchyard};

const PAYLOAD: usize = 100;
const PARTITIONS: i32 = 6;

struct Args {
    messages: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        messages: 1_000_000,
        rounds: 2,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        match v[i].as_str() {
            "--quick" => {
                a.messages = 50_000;
                a.rounds = 1;
            }
            "--messages" => {
                i += 1;
                a.messages = v[i].parse().expect("--messages N");
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

async fn create_topic(bootstrap: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    for r in admin
        .create_topics(
            &[NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1))],
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
    let _ = admin
        .delete_topics(
            &[name],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await;
}

/// Writes `n` keyed 100-byte records.
fn fill(bootstrap: &str, topic: &str, n: usize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let body = [b'x'; PAYLOAD];
    for i in 0..n {
        let key = format!("k{}", i % 1000);
        let mut rec = BaseRecord::<String, [u8]>::to(topic)
            .key(&key)
            .payload(&body[..]);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
}

/// Reads `n` records with a raw `BaseConsumer`; records per second.
fn raw_run(bootstrap: &str, topic: &str, n: usize) -> f64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", fresh("bench-raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.partition.eof", "false")
        .create()
        .expect("raw consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut got = 0usize;
    let mut bytes = 0usize;
    let mut start = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while got < n {
        assert!(
            Instant::now() < deadline,
            "raw consumer: {got} of {n} in 600 s"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                start.get_or_insert_with(Instant::now);
                bytes += m.payload().map_or(0, <[u8]>::len);
                got += 1;
            }
            Some(Err(e)) => panic!("raw consumer: {e}"),
            None => {}
        }
    }
    assert_eq!(bytes, n * PAYLOAD);
    n as f64 / start.expect("records").elapsed().as_secs_f64()
}

/// Reads `n` records with the SDK consumer; records per second.
async fn sdk_run(sy: &Switchyard, topic: &str, n: usize) -> f64 {
    let c = sy
        .consumer_with(
            &fresh("bench-sdk"),
            &[topic],
            ConsumerOptions {
                auto_commit: true,
                ..Default::default()
            },
        )
        .expect("SDK consumer");
    let mut got = 0usize;
    let mut bytes = 0usize;
    let mut start = None;
    while got < n {
        let m = tokio::time::timeout(Duration::from_secs(600), c.recv())
            .await
            .expect("a record within 600 s")
            .expect("recv");
        start.get_or_insert_with(Instant::now);
        bytes += m.payload.as_ref().map_or(0, |p| p.len());
        got += 1;
    }
    assert_eq!(bytes, n * PAYLOAD);
    n as f64 / start.expect("records").elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let clusters = std::env::var("SWITCHYARD_KAFKA_CLUSTERS")
        .expect("set SWITCHYARD_KAFKA_CLUSTERS: eval \"$(scripts/kafka.sh start 2)\"");
    let east = clusters.split(';').next().expect("cluster 1").to_string();
    let topic = fresh("bench-consume");
    create_topic(&east, &topic).await;
    let (b, t, n) = (east.clone(), topic.clone(), a.messages);
    tokio::task::spawn_blocking(move || fill(&b, &t, n))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("desired.yaml");
    std::fs::write(
        &yaml,
        format!(
            "clusters:\n  - {{name: east, bootstrap: [\"{east}\"]}}\ntopics:\n  - {{name: {topic}, cluster: east, partitions: {PARTITIONS}}}\n"
        ),
    )
    .unwrap();
    let sy = Switchyard::from_file(&yaml, "bench").unwrap();
    println!(
        "consumer throughput: {} x {PAYLOAD}-byte keyed records, {PARTITIONS} partitions, auto-commit, one record per call, {} round(s) each, alternating",
        a.messages, a.rounds
    );
    let (mut raw, mut sdk) = (Vec::new(), Vec::new());
    for r in 0..a.rounds {
        let (b, t, n) = (east.clone(), topic.clone(), a.messages);
        let x = tokio::task::spawn_blocking(move || raw_run(&b, &t, n))
            .await
            .unwrap();
        println!("  round {r}: rust-rdkafka BaseConsumer {x:>10.0} msg/s");
        raw.push(x);
        let y = sdk_run(&sy, &topic, a.messages).await;
        println!("  round {r}: switchyard Consumer      {y:>10.0} msg/s");
        sdk.push(y);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "RESULT consumer throughput raw={:.0} msg/s sdk={:.0} msg/s ratio={:.3} (best of {} rounds; target >= 0.97); mean ratio={:.3}",
        best(&raw),
        best(&sdk),
        best(&sdk) / best(&raw),
        a.rounds,
        mean(&sdk) / mean(&raw)
    );
    drop(sy);
    delete_topic(&east, &topic).await;
}
