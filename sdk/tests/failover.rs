//! Watch failover between config-service endpoints: a replica that stops answering (its
//! connection stays open but nothing comes back) is abandoned for the next endpoint, and a
//! replica that is behind never moves the client to an older version.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use switchyard::Switchyard;
use switchyard_config::StoreConfig;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_watch_fails_over_and_never_goes_back_a_version() {
    // Replica A is at version 5; replica B is behind, at version 3.
    let a = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let b = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm_a = admin(a.local_addr()).await;
    let mut adm_b = admin(b.local_addr()).await;
    for i in 1..=5 {
        apply(
            &mut adm_a,
            vec![cluster(&format!("a{i}"), "127.0.0.1:9092")],
        )
        .await;
    }
    for i in 1..=3 {
        apply(
            &mut adm_b,
            vec![cluster(&format!("b{i}"), "127.0.0.1:9092")],
        )
        .await;
    }
    let (proxy, frozen) = freezable_proxy(a.local_addr()).await;
    let sdk = tokio::time::timeout(
        LIMIT,
        Switchyard::builder("failover-app")
            .endpoint(format!("http://{proxy}"))
            .endpoint(format!("http://{}", b.local_addr()))
            .without_cache()
            .watch_stall_timeout(Duration::from_millis(600))
            .connect(),
    )
    .await
    .expect("connect in time")
    .expect("SDK connects");
    assert_eq!(sdk.version(), 5);
    assert!(sdk.last_watch_error().is_none());

    // Record the lowest version the client uses from now on.
    let lowest = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let sdk = Arc::new(sdk);
    let sampler = {
        let (lowest, done, sdk) = (lowest.clone(), done.clone(), sdk.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                lowest.fetch_min(sdk.version(), Ordering::Relaxed);
            }
        })
    };

    // A hangs: the watch notices within the stall timeout and moves to B, which is behind.
    frozen.store(true, Ordering::SeqCst);
    tokio::time::timeout(LIMIT, async {
        while sdk.last_watch_error().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stalled watch is abandoned");
    // B catches up and passes A's version: the client follows B from there.
    for i in 4..=6 {
        apply(
            &mut adm_b,
            vec![cluster(&format!("b{i}"), "127.0.0.1:9092")],
        )
        .await;
    }
    sdk.wait_for_version(6, LIMIT)
        .await
        .expect("the client picks up B's next version");
    let md = sdk.metadata();
    assert!(
        md.state.clusters.contains_key("b6"),
        "version 6 came from B"
    );
    // The watch error says what is wrong now: nothing, once B serves the watch.
    assert_eq!(sdk.last_watch_error(), None);
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(
        lowest.load(Ordering::Relaxed),
        5,
        "the client went back to an older version while B was behind"
    );
}
