//! Route lookup + send-path bookkeeping per message, without Kafka I/O (criterion).
//! Target: < 100 ns per message.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desired.yaml");
    // 1,000 topics over 10 clusters; clients point at a closed port (never contacted here).
    let mut yaml = String::from("clusters:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - {{name: c{i}, bootstrap: [\"127.0.0.1:9\"]}}\n"
        ));
    }
    yaml.push_str("topics:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "  - {{name: topic-{i}, cluster: c{}, partitions: 6}}\n",
            i % 10
        ));
    }
    std::fs::write(&path, yaml).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sy = switchyard::Switchyard::from_file(&path, "bench").unwrap();
    let p = rt.block_on(async { sy.producer() });
    // Create the lanes first (one client per cluster), as a running producer would have.
    rt.block_on(async {
        for i in 0..1000 {
            assert!(p.route_bookkeeping(&format!("topic-{i}")).await);
        }
    });
    let topics: Vec<String> = (0..1000).map(|i| format!("topic-{i}")).collect();
    c.bench_function("route_lookup_and_bookkeeping", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let t = &topics[(i as usize * 7919) % topics.len()];
                    black_box(p.route_bookkeeping(black_box(t)).await);
                }
                start.elapsed()
            })
        })
    });
    let m = sy.metadata();
    c.bench_function("metadata_route_only", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(7919);
            black_box(m.route(&topics[i % topics.len()]).is_some())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
