//! A cluster's client properties change while records flow: the SDK recreates its Kafka client
//! without failing, losing or duplicating a send.

mod common;
mod workload;

use std::time::{Duration, Instant};

use common::*;
use switchyard::Switchyard;
use switchyard_config::StoreConfig;
use switchyard_proto::v1::{Change, Cluster, change::Op};
use workload::*;

fn cluster_with(name: &str, bootstrap: &str, props: &[(&str, &str)]) -> Change {
    Change {
        op: Some(Op::UpsertCluster(Cluster {
            name: name.into(),
            bootstrap: vec![bootstrap.into()],
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_property_change_swaps_the_client_under_load() {
    init_tracing();
    let (east, _) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("props");
    create_topic(&east, &t, 6).await;
    apply(
        &mut adm,
        vec![
            cluster_with(
                "east",
                &east,
                &[("linger.ms", "0"), ("compression.type", "none")],
            ),
            topic(&t, "east", "", 6),
        ],
    )
    .await;
    let sy = Switchyard::builder("props")
        .endpoint(format!("http://{}", svc.local_addr()))
        .without_cache()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        sy.metadata().route(&t).unwrap().cluster.properties["linger.ms"],
        "0"
    );
    // Close the replaced client 2 s after it goes idle (default 30 s) to keep the test short.
    let producer = sy.producer_with(switchyard::ProducerOptions {
        idle_client_close: Duration::from_secs(2),
        ..Default::default()
    });
    // 64 keys with one send in flight each: still ~2,000/s once linger.ms is 20.
    let load = Load::start(producer.clone(), &t, 8, 64, 2_000.0, Duration::from_secs(4));
    tokio::time::sleep_until((load.started() + Duration::from_millis(1500)).into()).await;
    let v2 = apply(
        &mut adm,
        vec![cluster_with(
            "east",
            &east,
            &[("linger.ms", "20"), ("compression.type", "lz4")],
        )],
    )
    .await;
    let applied_at = Instant::now();
    sy.wait_for_version(v2, Duration::from_secs(10))
        .await
        .unwrap();
    let props = sy.metadata().route(&t).unwrap().cluster.properties.clone();
    assert_eq!(props["linger.ms"], "20");
    assert_eq!(props["compression.type"], "lz4");
    let p = producer.clone();
    eventually(
        Duration::from_secs(10),
        "the producer recreates its client",
        || {
            let p = p.clone();
            async move { (p.route_changes() >= 1).then_some(()) }
        },
    )
    .await;
    let swapped_at = Instant::now();
    let report = load.join().await;
    // The replaced client is kept a while (a route flipping back reuses it), then closed.
    eventually(
        Duration::from_secs(60),
        "the replaced client is closed",
        || {
            let p = p.clone();
            async move { (p.open_clients() == 1).then_some(()) }
        },
    )
    .await;
    let closed_after = swapped_at.elapsed();

    println!(
        "properties: {} sends in {:.2?} ({:.0}/s), {} errors; client swapped {:.2?} after the apply, old one closed {:.2?} after the swap; max send latency around the swap {:.2?}, overall p99 {:.2?}; route changes {}, open clients {}",
        report.sent.len(),
        report.elapsed,
        report.rate(),
        report.errors.len(),
        swapped_at - applied_at,
        closed_after,
        report.max_latency_started_between(
            applied_at - Duration::from_millis(100),
            swapped_at + Duration::from_millis(100)
        ),
        report.percentile_latency(0.99),
        producer.route_changes(),
        producer.open_clients()
    );
    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        report.errors.first()
    );
    // A sanity floor, not a speed requirement: the swap happened under real traffic.
    assert!(report.sent.len() > 300, "{} sends", report.sent.len());
    assert_eq!(producer.route_changes(), 1);
    assert_eq!(producer.open_clients(), 1);
    // Records sent after the swap went through the new client: still to east.
    assert!(
        report
            .sent
            .iter()
            .filter(|s| s.started > swapped_at)
            .count()
            > 500
    );
    assert_eq!(report.count_on("east"), report.sent.len());
    let found = read_everywhere(&[("east", &east)], &t);
    check_exactly_once(&report, &found);
    check_order_across_switch(&found, "east", "west");
    drop(sy);
    svc.shutdown().await.unwrap();
}
