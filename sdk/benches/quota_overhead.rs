//! What a configured but non-binding quota costs the producer, on a real Kafka broker (started
//! by `scripts/kafka.sh`): the same SDK producer workload against the same topic, alternately
//! with no quota and with a quota on the topic of 10,000,000 msgs/s and 10 GB/s (so every send
//! runs both limiter checks and none waits), in the same run. N × 100-byte keyed messages,
//! `acks=all`, idempotent, `linger.ms=5`, a window of W sends in flight.
//!
//! Reports per round the throughput and the bench process's CPU time per message (SDK +
//! librdkafka threads; the broker is another process), then the medians and the overhead.
//! Rounds alternate which configuration goes first.
//!
//! `cargo bench -p switchyard-sdk --bench quota_overhead [-- --messages N --rounds R --window W --quick]`
//! needs `SWITCHYARD_KAFKA_CLUSTERS="h:p;h:p"` (`eval "$(scripts/kafka.sh start 2)"`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use switchyard::{Record, Switchyard};

const PAYLOAD: usize = 100;
const PARTITIONS: i32 = 6;

struct Args {
    messages: usize,
    rounds: usize,
    window: usize,
}

fn args() -> Args {
    let mut a = Args {
        messages: 300_000,
        rounds: 6,
        window: 20_000,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        match v[i].as_str() {
            "--quick" => {
                a.messages = 20_000;
                a.rounds = 2;
            }
            "--messages" => {
                i += 1;
                a.messages = v[i].parse().expect("--messages N");
            }
            "--rounds" => {
                i += 1;
                a.rounds = v[i].parse().expect("--rounds N");
            }
            "--window" => {
                i += 1;
                a.window = v[i].parse().expect("--window N");
            }
            _ => {}
        }
        i += 1;
    }
    a
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

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses): utime and stime are the 12th
    // and 13th, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Sends `n` records; returns (msgs/s, CPU µs per message, sends delayed by a quota).
async fn run(sy: &Switchyard, topic: &str, n: usize, window: usize) -> (f64, f64, u64) {
    let p = sy.producer();
    // Warm the lane (creates the cluster client), as a running service would have.
    p.send(Record::new(topic).payload(vec![b'x'; PAYLOAD]))
        .await
        .expect("warm-up");
    let body = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let cpu0 = cpu_time();
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
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    assert_eq!(errors, 0, "SDK producer had send errors");
    (n as f64 / secs, cpu * 1e6 / n as f64, p.throttled().delayed)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let clusters = std::env::var("SWITCHYARD_KAFKA_CLUSTERS")
        .expect("set SWITCHYARD_KAFKA_CLUSTERS: eval \"$(scripts/kafka.sh start 2)\"");
    let east = clusters.split(';').next().expect("cluster 1").to_string();
    let topic = format!(
        "bench-quota-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    create_topic(&east, &topic, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "clusters:\n  - {{name: east, bootstrap: [\"{east}\"]}}\ntopics:\n  - {{name: {topic}, cluster: east, partitions: {PARTITIONS}}}\n"
    );
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, &base).unwrap();
    let quota = dir.path().join("quota.yaml");
    std::fs::write(
        &quota,
        format!(
            "{base}quotas:\n  - {{app: \"*\", topic: {topic}, produce_msgs_per_sec: 10000000, produce_bytes_per_sec: 10000000000, policy: block}}\n"
        ),
    )
    .unwrap();
    let sy_plain = Switchyard::from_file(&plain, "bench").unwrap();
    let sy_quota = Switchyard::from_file(&quota, "bench").unwrap();
    assert!(sy_plain.metadata().quota(&topic).is_none());
    assert!(sy_quota.metadata().quota(&topic).is_some());
    println!(
        "quota overhead: {} x {PAYLOAD}-byte keyed messages per run, acks=all, idempotent, linger.ms=5, window {}, {PARTITIONS} partitions, {} round(s) of (no quota, quota) alternating order; quota = 10,000,000 msgs/s + 10 GB/s BLOCK on the topic",
        a.messages, a.window, a.rounds
    );
    let (mut tp_plain, mut tp_quota, mut cpu_plain, mut cpu_quota, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..a.rounds {
        let order: [(bool, &Switchyard); 2] = if r % 2 == 0 {
            [(false, &sy_plain), (true, &sy_quota)]
        } else {
            [(true, &sy_quota), (false, &sy_plain)]
        };
        let mut pair = [0.0; 2];
        for (with_quota, sy) in order {
            let (tp, cpu, delayed) = run(sy, &topic, a.messages, a.window).await;
            let label = if with_quota { "quota   " } else { "no quota" };
            println!(
                "  round {r}: {label} {tp:>9.0} msg/s  {cpu:>5.2} µs CPU/msg  delayed {delayed}"
            );
            assert_eq!(delayed, 0, "the quota must not bind");
            if with_quota {
                tp_quota.push(tp);
                cpu_quota.push(cpu);
                pair[1] = tp;
            } else {
                tp_plain.push(tp);
                cpu_plain.push(cpu);
                pair[0] = tp;
            }
        }
        ratios.push(pair[1] / pair[0]);
    }
    let (mp, mq) = (median(&tp_plain), median(&tp_quota));
    let (cp, cq) = (median(&cpu_plain), median(&cpu_quota));
    println!(
        "RESULT quota overhead: median throughput no quota={mp:.0} msg/s quota={mq:.0} msg/s overhead={:.2}% (median paired ratio {:.3}); median CPU/msg no quota={cp:.2} µs quota={cq:.2} µs (+{:.2}%); target overhead < 2%",
        (1.0 - mq / mp) * 100.0,
        median(&ratios),
        (cq / cp - 1.0) * 100.0
    );
}
