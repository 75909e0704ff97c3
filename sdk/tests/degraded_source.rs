//! A route switch away from a degraded cluster is bounded in time: the flush of what is in
//! flight to the old location gives up after `max_switch_flush`, so new sends reach the new
//! location (and an abort could be applied) instead of waiting for librdkafka's
//! `message.timeout.ms`; the stuck send still completes there, failed back to its caller,
//! never re-sent elsewhere.

mod common;
mod workload;

use std::time::Duration;

use common::*;
use switchyard::{ProducerOptions, Record};
use workload::init_tracing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_away_from_a_degraded_cluster_is_bounded() {
    init_tracing();
    let (_, west) = kafka();
    let svc = config_service(
        switchyard_config::StoreConfig::Memory,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("degraded");
    create_topic(&west, &t, 1).await;
    // "east" answers nothing (nobody listens there): a degraded cluster.
    apply(
        &mut adm,
        vec![
            cluster("east", "127.0.0.1:1"),
            cluster("west", &west),
            topic(&t, "east", "", 1),
        ],
    )
    .await;
    let sy = connect(&svc, "degraded-writer").await;
    let p = sy.producer_with(ProducerOptions {
        properties: [("message.timeout.ms".to_string(), "40000".to_string())].into(),
        max_switch_flush: Duration::from_secs(2),
        ..Default::default()
    });
    // A send in flight to east that cannot complete.
    let (tx, stuck) = tokio::sync::oneshot::channel();
    {
        let (p, t) = (p.clone(), t.clone());
        tokio::task::spawn_blocking(move || {
            p.send_with_callback(Record::new(&t).payload("stuck"), move |r| {
                let _ = tx.send(r.map(|d| d.cluster));
            })
            .map_err(|(e, _)| e.error)
        })
        .await
        .unwrap()
        .expect("the send is enqueued");
    }
    // The operator moves the topic to a healthy cluster.
    apply(&mut adm, vec![topic(&t, "west", "", 1)]).await;
    // The producer switches within the bound (not after message.timeout.ms), and new sends
    // reach the new location.
    workload::eventually(
        Duration::from_secs(20),
        "the producer switches within 20 s, before the stuck send times out",
        || {
            let (p, t) = (p.clone(), t.clone());
            async move {
                p.current_route(&t)
                    .await
                    .filter(|(c, _)| c == "west")
                    .map(|_| ())
            }
        },
    )
    .await;
    let d = tokio::time::timeout(
        Duration::from_secs(20),
        p.send(Record::new(&t).payload("after")),
    )
    .await
    .expect("a send after the switch completes within 20 s, before the stuck one times out")
    .expect("delivered");
    assert_eq!(d.cluster, "west");
    // The stuck send completes where it was sent: failed back to its caller (east never
    // answered), never re-sent to west.
    let r = tokio::time::timeout(Duration::from_secs(90), stuck)
        .await
        .expect("the stuck send completes")
        .expect("its callback ran");
    assert!(r.is_err(), "{r:?}");
    let on_west = read_all(&west, &t);
    assert_eq!(
        on_west.len(),
        1,
        "only the send after the switch is on west"
    );
    drop(p);
    drop(sy);
    svc.shutdown().await.unwrap();
}
