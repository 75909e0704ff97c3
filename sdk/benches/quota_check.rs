//! Cost of a quota check per message, without Kafka I/O (criterion).
//!
//! - `governor_check`: one `governor` direct limiter check (the floor).
//! - `metadata_quota_lookup_only`: the quota lookup for a logical topic (1,000 topics,
//!   visited in a scattered order).
//! - `topic_quota_check_msgs_one_topic`: the produce messages/s check of one topic's quota,
//!   no lookup.
//! - `metadata_quota_check_msgs`: quota lookup for a logical topic in the current
//!   configuration + the produce messages/s check.
//! - `metadata_quota_check_msgs_bytes`: the same with a bytes/s limit too.
//! - `send_admission_no_quota` / `send_admission_quota`: the producer's admission step as a
//!   send runs it (lane lookup, configuration load, quota lookup, limiter checks) with no quota
//!   configured and with a non-binding quota on every topic: the difference is what a quota
//!   adds to a send. Over 1,000 topics in a scattered order (every send touches cold cache
//!   lines) and, `_one_topic`, always the same topic.
//!
//! 1,000 topics over 10 clusters; the quotas are `*`/`*` and never bind (10^9 msgs/s,
//! 10^11 B/s), so every check passes, as for a service running under its quota.
//!
//! `cargo bench -p switchyard-sdk --bench quota_check`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};

const TOPICS: usize = 1_000;

fn write_config(path: &Path, quota: Option<&str>) {
    let mut yaml = String::from("clusters:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - {{name: c{i}, bootstrap: [\"127.0.0.1:9\"]}}\n"
        ));
    }
    yaml.push_str("topics:\n");
    for i in 0..TOPICS {
        yaml.push_str(&format!(
            "  - {{name: topic-{i}, cluster: c{}, partitions: 6}}\n",
            i % 10
        ));
    }
    if let Some(q) = quota {
        yaml.push_str("quotas:\n");
        yaml.push_str(q);
    }
    std::fs::write(path, yaml).unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("topic-{i}")).collect();

    let lim = RateLimiter::direct(
        Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
            .allow_burst(NonZeroU32::new(1_000_000_000).unwrap()),
    );
    c.bench_function("governor_check", |b| {
        b.iter(|| black_box(lim.check().is_ok()))
    });

    let plain = dir.path().join("plain.yaml");
    write_config(&plain, None);
    let msgs = dir.path().join("msgs.yaml");
    write_config(
        &msgs,
        Some("  - {app: \"*\", topic: \"*\", produce_msgs_per_sec: 1000000000}\n"),
    );
    let both = dir.path().join("both.yaml");
    write_config(
        &both,
        Some(
            "  - {app: \"*\", topic: \"*\", produce_msgs_per_sec: 1000000000, produce_bytes_per_sec: 100000000000}\n",
        ),
    );

    {
        let sy = switchyard::Switchyard::from_file(&msgs, "bench").unwrap();
        let m = sy.metadata();
        c.bench_function("metadata_quota_lookup_only", |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(7919);
                black_box(m.quota(black_box(&topics[i % TOPICS])).is_some())
            })
        });
        let one = m.quota(&topics[0]).unwrap().clone();
        c.bench_function("topic_quota_check_msgs_one_topic", |b| {
            b.iter(|| black_box(one.check_produce(black_box(100)).is_ok()))
        });
    }

    for (name, path) in [
        ("metadata_quota_check_msgs", &msgs),
        ("metadata_quota_check_msgs_bytes", &both),
    ] {
        let sy = switchyard::Switchyard::from_file(path, "bench").unwrap();
        let m = sy.metadata();
        assert_eq!(m.quotas().len(), TOPICS);
        c.bench_function(name, |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(7919);
                let t = &topics[i % TOPICS];
                black_box(m.quota(black_box(t)).unwrap().check_produce(100).is_ok())
            })
        });
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, path) in [
        ("send_admission_no_quota", &plain),
        ("send_admission_quota", &both),
    ] {
        let sy = switchyard::Switchyard::from_file(path, "bench").unwrap();
        let p = rt.block_on(async { sy.producer() });
        // Create the lanes first, as a running producer would have.
        rt.block_on(async {
            for t in &topics {
                p.quota_admission(t, 100).await.unwrap();
            }
        });
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        let t = &topics[(i as usize * 7919) % TOPICS];
                        black_box(p.quota_admission(black_box(t), 100).await.is_ok());
                    }
                    start.elapsed()
                })
            })
        });
        c.bench_function(&format!("{name}_one_topic"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(p.quota_admission(black_box(&topics[0]), 100).await.is_ok());
                    }
                    start.elapsed()
                })
            })
        });
        assert_eq!(p.throttled().delayed, 0, "the quota must not bind");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
