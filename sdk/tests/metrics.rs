//! The SDK's Prometheus metrics on real Kafka: the encoded text parses with the strict parser
//! the config service's `/metrics` test uses, and the counters hold exactly the traffic that
//! flowed, under the cluster each record really went to or came from — also across a route
//! change.

mod common;
#[path = "../../config-service/tests/common/promtext.rs"]
mod promtext;
mod workload;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use promtext::{Family, parse_exposition, sample};
use switchyard::{ConsumerOptions, ErrorKind, Record, Switchyard};
use switchyard_config::StoreConfig;
use switchyard_proto::v1::{Change, Quota, QuotaPolicy, change::Op};
use workload::*;

const APP: &str = "metrics-app";
const GROUP: &str = "metrics-group";
const PARTITIONS: i32 = 3;
const PAYLOAD: &str = "0123456789";

fn parse(text: &str) -> BTreeMap<String, Family> {
    parse_exposition(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The value of sample `name` with exactly `labels` and this test's `app` label.
fn value(f: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut l = vec![("app", APP)];
    l.extend_from_slice(labels);
    sample(f, name, &l)
}

fn reject_quota(topic: &str) -> Change {
    Change {
        op: Some(Op::UpsertQuota(Quota {
            app: "*".into(),
            topic: topic.into(),
            produce_msgs_per_sec: 1,
            burst: 1,
            policy: QuotaPolicy::Reject as i32,
            ..Default::default()
        })),
    }
}

/// Receives `n` records of `topic` within a bounded time; returns the clusters they came from.
async fn receive(c: &switchyard::Consumer, n: usize) -> Vec<String> {
    let mut from = Vec::new();
    while from.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records arrived", from.len()))
            .expect("recv");
        from.push(m.cluster);
    }
    from
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_traffic_and_route_changes_and_the_text_parses() {
    init_tracing();
    let (east, west) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("metrics");
    let limited = fresh("metrics-quota");
    create_topic(&east, &t, PARTITIONS).await;
    create_topic(&west, &t, PARTITIONS).await;
    create_topic(&east, &limited, 1).await;
    apply(
        &mut adm,
        vec![
            cluster("east", &east),
            cluster("west", &west),
            topic(&t, "east", "", PARTITIONS),
            topic(&limited, "east", "", 1),
            reject_quota(&limited),
        ],
    )
    .await;
    let sy = Switchyard::builder(APP)
        .endpoint(format!("http://{}", svc.local_addr()))
        .without_cache()
        .connect()
        .await
        .expect("connect to the config service");
    let metrics = sy.metrics();

    // Before any traffic: the text parses, the version gauge is the one in use, no sends.
    let f = parse(&metrics.encode());
    assert_eq!(
        value(&f, "switchyard_client_config_version", &[]),
        Some(sy.version() as f64)
    );
    let age = value(&f, "switchyard_client_config_age_seconds", &[]).expect("config age");
    assert!(age.is_finite() && age >= 0.0, "age {age}");
    assert_eq!(
        value(
            &f,
            "switchyard_client_messages_sent_total",
            &[("topic", &t), ("cluster", "east")]
        ),
        None
    );

    // N records to east, read back by a consumer group.
    const N: usize = 40;
    let producer = sy.producer();
    let sends =
        (0..N).map(|i| producer.send(Record::new(&t).key(format!("k{}", i % 7)).payload(PAYLOAD)));
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.expect("send").cluster, "east");
    }
    let consumer = sy
        .consumer_with(
            GROUP,
            &[&t],
            ConsumerOptions {
                auto_commit: true,
                drain_grace: Duration::from_millis(200),
                ..Default::default()
            },
        )
        .expect("consumer");
    assert!(receive(&consumer, N).await.iter().all(|c| c == "east"));

    let f = parse(&metrics.encode());
    let east_labels = [("topic", t.as_str()), ("cluster", "east")];
    let n = N as f64;
    let bytes = (N * PAYLOAD.len()) as f64;
    assert_eq!(
        value(&f, "switchyard_client_messages_sent_total", &east_labels),
        Some(n)
    );
    assert_eq!(
        value(&f, "switchyard_client_bytes_sent_total", &east_labels),
        Some(bytes)
    );
    assert_eq!(
        value(
            &f,
            "switchyard_client_send_latency_seconds_count",
            &east_labels
        ),
        Some(n)
    );
    assert_eq!(
        value(
            &f,
            "switchyard_client_send_latency_seconds_bucket",
            &[("topic", &t), ("cluster", "east"), ("le", "+Inf")]
        ),
        Some(n)
    );
    let recv_east = [("topic", t.as_str()), ("cluster", "east"), ("group", GROUP)];
    assert_eq!(
        value(&f, "switchyard_client_messages_received_total", &recv_east),
        Some(n)
    );
    assert_eq!(
        value(&f, "switchyard_client_bytes_received_total", &recv_east),
        Some(bytes)
    );
    assert_eq!(
        f["switchyard_client_send_latency_seconds"].kind,
        "histogram"
    );
    assert_eq!(f["switchyard_client_messages_sent_total"].kind, "counter");
    assert_eq!(f["switchyard_client_config_age_seconds"].kind, "gauge");

    // Failures: an unknown topic, and a REJECT quota (1 msg/s, burst 1) refusing two of three
    // sends issued at once.
    let e = producer
        .send(Record::new("no-such-topic").payload(PAYLOAD))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownTopic);
    let results = futures::future::join_all(
        (0..3).map(|_| producer.send(Record::new(&limited).payload(PAYLOAD))),
    )
    .await;
    let refused = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::QuotaExceeded)
        })
        .count();
    assert_eq!(refused, 2, "{results:?}");
    let f = parse(&metrics.encode());
    assert_eq!(
        value(
            &f,
            "switchyard_client_send_errors_total",
            &[
                ("topic", "no-such-topic"),
                ("cluster", ""),
                ("kind", "unknown_topic")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &f,
            "switchyard_client_send_errors_total",
            &[
                ("topic", &limited),
                ("cluster", ""),
                ("kind", "quota_exceeded")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &f,
            "switchyard_client_throttled_total",
            &[
                ("topic", &limited),
                ("direction", "produce"),
                ("policy", "reject")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &f,
            "switchyard_client_messages_sent_total",
            &[("topic", &limited), ("cluster", "east")]
        ),
        Some(1.0)
    );

    // Move the topic to west: new sends count under west, east keeps its total, and the
    // change is counted once.
    let v2 = apply(&mut adm, vec![topic(&t, "west", &t, PARTITIONS)]).await;
    sy.wait_for_version(v2, Duration::from_secs(10))
        .await
        .expect("the SDK applies the move");
    let p = producer.clone();
    let t2 = t.clone();
    eventually(
        Duration::from_secs(10),
        "the producer switches to west",
        || {
            let (p, t) = (p.clone(), t2.clone());
            async move {
                (p.current_route(&t).await.map(|r| r.0).as_deref() == Some("west")).then_some(())
            }
        },
    )
    .await;
    const M: usize = 15;
    for i in 0..M {
        let d = producer
            .send(Record::new(&t).key(format!("k{i}")).payload(PAYLOAD))
            .await
            .expect("send after the move");
        assert_eq!(d.cluster, "west");
    }
    assert!(receive(&consumer, M).await.iter().all(|c| c == "west"));

    let f = parse(&metrics.encode());
    let west_labels = [("topic", t.as_str()), ("cluster", "west")];
    let m = M as f64;
    assert_eq!(
        value(&f, "switchyard_client_messages_sent_total", &east_labels),
        Some(n)
    );
    assert_eq!(
        value(&f, "switchyard_client_messages_sent_total", &west_labels),
        Some(m)
    );
    assert_eq!(
        value(
            &f,
            "switchyard_client_send_latency_seconds_count",
            &west_labels
        ),
        Some(m)
    );
    assert_eq!(
        value(
            &f,
            "switchyard_client_messages_received_total",
            &[("topic", &t), ("cluster", "west"), ("group", GROUP)]
        ),
        Some(m)
    );
    assert_eq!(
        value(&f, "switchyard_client_messages_received_total", &recv_east),
        Some(n)
    );
    assert_eq!(
        value(
            &f,
            "switchyard_client_route_changes_total",
            &[("topic", &t)]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &f,
            "switchyard_client_route_changes_total",
            &[("topic", &limited)]
        ),
        None
    );
    assert_eq!(sy.version(), v2);
    assert_eq!(
        value(&f, "switchyard_client_config_version", &[]),
        Some(v2 as f64)
    );

    // Merged into an application's own registry: the same series, in the application's scrape.
    let app_registry = switchyard::prometheus::Registry::new();
    metrics
        .register_into(&app_registry)
        .expect("register the SDK's metrics");
    let text = switchyard::prometheus::TextEncoder::new()
        .encode_to_string(&app_registry.gather())
        .expect("encode");
    let f = parse(&text);
    assert_eq!(
        value(&f, "switchyard_client_messages_sent_total", &west_labels),
        Some(m)
    );
    assert!(metrics.register_into(&app_registry).is_err());
}
