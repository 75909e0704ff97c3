//! Produce and consume through the SDK on two real Kafka clusters; check with raw rdkafka.

mod common;

use std::time::Duration;

use common::*;
use switchyard::{Record, Switchyard};
use switchyard_config::StoreConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_records_to_the_cluster_the_service_names() {
    let (east, west) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let (t1, t2) = (fresh("orders"), fresh("payments"));
    create_topic(&east, &t1, 3).await;
    create_topic(&west, &format!("{t2}.phys"), 2).await;
    apply(
        &mut adm,
        vec![
            cluster("east", &east),
            cluster("west", &west),
            topic(&t1, "east", "", 3),
            topic(&t2, "west", &format!("{t2}.phys"), 2),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sy = Switchyard::builder("smoke")
        .endpoint(format!("http://{}", svc.local_addr()))
        .cache_path(dir.path().join("c.snapshot"))
        .connect()
        .await
        .unwrap();
    let p = sy.producer();
    for i in 0..100 {
        let d = p
            .send(
                Record::new(&t1)
                    .key(format!("k{i}"))
                    .payload(format!("a{i}")),
            )
            .await
            .unwrap();
        assert_eq!(d.cluster, "east");
        let d = p
            .send(
                Record::new(&t2)
                    .key(format!("k{i}"))
                    .payload(format!("b{i}")),
            )
            .await
            .unwrap();
        assert_eq!(
            (d.cluster.as_str(), d.physical_topic.as_str()),
            ("west", &*format!("{t2}.phys"))
        );
    }
    assert_eq!(read_all(&east, &t1).len(), 100);
    assert_eq!(read_all(&west, &format!("{t2}.phys")).len(), 100);
    let err = p.send(Record::new("nope").payload("x")).await.unwrap_err();
    assert_eq!(err.kind(), switchyard::ErrorKind::UnknownTopic);
    assert_eq!(err.record.payload.as_deref(), Some(&b"x"[..]));

    let c = sy.consumer(&fresh("g"), &[&t1, &t2]).unwrap();
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 200 {
        let m = tokio::time::timeout(Duration::from_secs(60), c.recv())
            .await
            .expect("records arrive")
            .unwrap();
        c.commit(&m).await.unwrap();
        seen.insert((m.topic.clone(), m.payload.clone()), m.cluster.clone());
    }
    assert_eq!(seen.values().filter(|c| *c == "east").count(), 100);
    svc.shutdown().await.unwrap();
}
