//! The config service goes away in the middle of a producer workload and comes back on the same
//! address with the same data directory: sends never fail, and the SDK picks up the version
//! applied after the restart.

mod common;
mod workload;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use switchyard::Switchyard;
use switchyard_config::StoreConfig;
use workload::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_keeps_sending_while_the_config_service_is_down_and_follows_it_after() {
    init_tracing();
    let (east, west) = kafka();
    let data = tempfile::tempdir().unwrap();
    let store = StoreConfig::File {
        dir: data.path().to_path_buf(),
    };
    let svc = config_service(store.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = svc.local_addr();
    let mut adm = admin(addr).await;
    let t = fresh("outage");
    create_topic(&east, &t, 3).await;
    create_topic(&west, &t, 3).await;
    let v1 = apply(
        &mut adm,
        vec![
            cluster("east", &east),
            cluster("west", &west),
            topic(&t, "east", "", 3),
        ],
    )
    .await;
    drop(adm);

    let cache = tempfile::tempdir().unwrap();
    let sy = Switchyard::builder("outage")
        .endpoint(format!("http://{addr}"))
        .cache_path(cache.path().join("outage.snapshot"))
        .connect()
        .await
        .expect("connect");
    assert_eq!(sy.version(), v1);
    let producer = sy.producer();
    let load = Load::start(
        producer.clone(),
        &t,
        4,
        16,
        1_000.0,
        Duration::from_secs(60),
    );
    load.wait_for_ok(500, Duration::from_secs(20)).await;

    // Stop the service mid-load.
    tokio::time::timeout(Duration::from_secs(20), svc.shutdown())
        .await
        .expect("the config service shuts down promptly")
        .expect("clean shutdown");
    let down_at = Instant::now();
    let ok_at_down = load.ok.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(10),
        "the SDK notices the watch is gone",
        || async { sy.last_watch_error() },
    )
    .await;
    // Stay down a while; sends keep succeeding meanwhile.
    tokio::time::sleep_until((down_at + Duration::from_millis(1500)).into()).await;
    let ok_while_down = load.ok.load(Ordering::Relaxed) - ok_at_down;
    assert_eq!(
        load.failed.load(Ordering::Relaxed),
        0,
        "sends failed while the service was down"
    );
    assert!(
        ok_while_down >= 500,
        "only {ok_while_down} sends succeeded in the 1.5 s the service was down"
    );

    // Back on the same address, from the same data directory.
    let svc = config_service(store, addr).await;
    let up_at = Instant::now();
    assert_eq!(svc.local_addr(), addr);
    let mut adm = admin(addr).await;
    assert_eq!(
        current_version(&mut adm).await,
        v1,
        "the restarted service kept its versions"
    );
    let v2 = apply(&mut adm, vec![topic(&t, "west", "", 3)]).await;
    assert!(v2 > v1);
    let applied_at = Instant::now();
    let got = sy
        .wait_for_version(v2, Duration::from_secs(30))
        .await
        .expect("the SDK reconnects and applies the new version");
    assert_eq!(got, v2);
    let picked_at = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the producer switches to west",
        || {
            let (p, t) = (producer.clone(), t.clone());
            async move {
                (p.current_route(&t).await.map(|r| r.0).as_deref() == Some("west")).then_some(())
            }
        },
    )
    .await;
    let switched_at = Instant::now();
    let ok_at_switch = load.ok.load(Ordering::Relaxed);
    load.wait_for_ok(ok_at_switch + 500, Duration::from_secs(20))
        .await;
    let report = load.finish().await;

    println!(
        "outage: {} sends ({} east, {} west), {} errors; {} succeeded during the {:.2?} outage; new version picked up {:.2?} after the apply ({:.2?} after the restart)",
        report.sent.len(),
        report.count_on("east"),
        report.count_on("west"),
        report.errors.len(),
        ok_while_down,
        up_at - down_at,
        picked_at - applied_at,
        picked_at - up_at
    );
    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        report.errors.first()
    );
    // Sends completed while the service was down went to the cluster of the version in use.
    let during: Vec<_> = report
        .sent
        .iter()
        .filter(|s| s.done > down_at && s.done < up_at)
        .collect();
    assert!(!during.is_empty());
    assert!(during.iter().all(|s| s.cluster == "east"));
    // After the switch everything goes where version v2 says.
    let late: Vec<_> = report
        .sent
        .iter()
        .filter(|s| s.started > switched_at)
        .collect();
    assert!(
        late.len() >= 400,
        "only {} sends after the switch",
        late.len()
    );
    assert!(
        late.iter().all(|s| s.cluster == "west"),
        "a send begun after the switch went to east"
    );
    let found = read_everywhere(&[("east", &east), ("west", &west)], &t);
    check_exactly_once(&report, &found);
    check_order_across_switch(&found, "east", "west");
    drop(sy);
    svc.shutdown().await.unwrap();
}
