//! Quotas on real Kafka: a BLOCK quota holds the produce rate (and a change applies within a
//! second), a REJECT quota fails fast and returns the record, a consume quota paces delivery
//! without costing the group membership.
//!
//! `block_quota_holds_the_rate_and_a_change_applies_within_a_second` is the one SDK test that
//! asserts on wall-clock rates, because the acceptance asks for it: the measured produce
//! rate within ±10% of the quota, measured over ~2.5 s windows after the initial burst, and the
//! new rate visible within 1 s of the apply. The limiter is precise (it cannot let more through
//! than the quota); the lower bound needs the machine to sustain 1,000 sends/s, ~1/70 of what
//! the SDK does on the 2-core test machine.

mod common;
mod workload;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use switchyard::{ConsumerOptions, ErrorKind, Record};
use switchyard_config::StoreConfig;
use switchyard_proto::v1::{Change, Quota, QuotaPolicy, change::Op};
use workload::*;

fn quota(topic: &str, produce: u64, bytes: u64, consume: u64, burst: u64, reject: bool) -> Change {
    Change {
        op: Some(Op::UpsertQuota(Quota {
            app: "*".into(),
            topic: topic.into(),
            produce_msgs_per_sec: produce,
            produce_bytes_per_sec: bytes,
            consume_msgs_per_sec: consume,
            burst,
            policy: if reject {
                QuotaPolicy::Reject
            } else {
                QuotaPolicy::Block
            } as i32,
        })),
    }
}

/// Deliveries per second whose acknowledgement came within `[from, to]`.
fn ack_rate(report: &Report, from: Instant, to: Instant) -> f64 {
    let n = report
        .sent
        .iter()
        .filter(|s| s.done >= from && s.done <= to)
        .count();
    n as f64 / (to - from).as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_quota_holds_the_rate_and_a_change_applies_within_a_second() {
    init_tracing();
    let (east, _) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("quota-block");
    create_topic(&east, &t, 6).await;
    apply(
        &mut adm,
        vec![
            cluster("east", &east),
            topic(&t, "east", "", 6),
            quota(&t, 500, 0, 0, 0, false),
        ],
    )
    .await;
    let sy = connect(&svc, "quota-block").await;
    let producer = sy.producer();
    // 256 keys with one send in flight each, as fast as the quota lets them: 4x headroom over
    // 1,000/s even if a loaded machine makes a send take 60 ms (sends waiting for the quota
    // cost nothing but a queue slot; one waiter at a time polls the limiter).
    let load = Load::start(
        producer.clone(),
        &t,
        8,
        256,
        1_000_000.0,
        Duration::from_secs(7),
    );
    let t0 = load.started();
    tokio::time::sleep_until((t0 + Duration::from_secs(4)).into()).await;
    let applying = Instant::now();
    let v = apply(&mut adm, vec![quota(&t, 1_000, 0, 0, 0, false)]).await;
    let applied = Instant::now();
    sy.wait_for_version(v, Duration::from_secs(5))
        .await
        .unwrap();
    let seen = Instant::now();
    let report = load.join().await;
    let end = t0 + report.elapsed;

    // Steady windows: after the initial one-second burst, and 1 s after the change.
    let before = ack_rate(&report, t0 + Duration::from_millis(1_500), applying);
    let after = ack_rate(&report, applied + Duration::from_secs(1), end);
    // When the rate changed: the first moment a 100 ms sliding window of acknowledgements
    // holds 75 (750/s, halfway between the rates). The window itself lags ~50 ms.
    let mut done: Vec<Instant> = report
        .sent
        .iter()
        .map(|s| s.done)
        .filter(|d| *d >= applying)
        .collect();
    done.sort();
    let window = Duration::from_millis(100);
    let crossed = done
        .iter()
        .enumerate()
        .find(|(i, d)| {
            let first = done.partition_point(|x| *x + window < **d);
            i + 1 - first >= 75
        })
        .map(|(_, d)| *d);
    let stats = producer.throttled();
    println!(
        "quota rate: {} sends in {:.2?}, {} errors; steady rate {before:.0}/s under 500/s, {after:.0}/s under 1000/s; apply RPC {:.1?}, version seen by the SDK {:.1?} after the apply began, 750/s crossed {:.0?} after it; throttled: {stats:?}",
        report.sent.len(),
        report.elapsed,
        report.errors.len(),
        applied - applying,
        seen - applying,
        crossed.map(|c| c - applying),
    );
    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        report.errors.first()
    );
    assert!(
        (450.0..=550.0).contains(&before),
        "rate {before:.0}/s under a 500/s quota"
    );
    assert!(
        (900.0..=1_100.0).contains(&after),
        "rate {after:.0}/s under a 1000/s quota"
    );
    let crossed = crossed.expect("the rate never reached 750/s after the change");
    assert!(
        crossed - applying <= Duration::from_secs(1),
        "the new quota took {:?} to apply",
        crossed - applying
    );
    assert!(stats.delayed > 1_000, "{stats:?}");
    assert_eq!(stats.rejected, 0);
    let found = read_everywhere(&[("east", &east)], &t);
    check_exactly_once(&report, &found);
    drop(sy);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_quota_fails_fast_and_returns_the_record() {
    init_tracing();
    let (east, _) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("quota-reject");
    create_topic(&east, &t, 3).await;
    // 1 msg/s with a burst of 5; 1,000 B/s, so a byte burst of 5,000 bytes.
    apply(
        &mut adm,
        vec![
            cluster("east", &east),
            topic(&t, "east", "", 3),
            quota(&t, 1, 1_000, 0, 5, true),
        ],
    )
    .await;
    let sy = connect(&svc, "quota-reject").await;
    let producer = sy.producer();

    // A record larger than the byte burst can never pass: a clear, non-retriable error.
    let big = Record::new(&t).key("big").payload(vec![b'x'; 6_000]);
    let e = producer.send(big.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(!e.is_retriable());
    assert!(e.to_string().contains("5000-byte burst"), "{e}");
    assert_eq!(e.record, big);

    // 20 sends at once: the burst (5) passes, the other 15 fail at once with their record.
    let records: Vec<Record> = (0..20)
        .map(|i| {
            Record::new(&t)
                .key(format!("k{i}"))
                .payload(format!("v{i}"))
                .header("h", "x")
        })
        .collect();
    let started = Instant::now();
    let results =
        futures::future::join_all(records.iter().cloned().map(|r| producer.send(r))).await;
    let elapsed = started.elapsed();
    let mut ok = 0;
    for (r, sent) in results.into_iter().zip(&records) {
        match r {
            Ok(d) => {
                assert_eq!(d.cluster, "east");
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
                assert!(e.is_retriable());
                assert_eq!(&e.record, sent, "the record comes back unchanged");
                match &e.error {
                    switchyard::Error::QuotaExceeded {
                        topic,
                        quota_app,
                        limit,
                        rate,
                        retry_after,
                        ..
                    } => {
                        assert_eq!(topic, &t);
                        assert_eq!(quota_app, "*");
                        assert_eq!((*limit, *rate), ("produce_msgs_per_sec", 1));
                        assert!(*retry_after <= Duration::from_secs(1));
                    }
                    other => panic!("unexpected error {other:?}"),
                }
            }
        }
    }
    println!("reject: {ok} of 20 sent, the rest rejected, in {elapsed:.1?}");
    assert_eq!(ok, 5);
    let stats = producer.throttled();
    assert_eq!(stats.rejected, 15);
    assert_eq!(stats.delayed, 0);
    // Only the 5 admitted records reached Kafka.
    let found = read_all(&east, &t);
    let keys: BTreeSet<Vec<u8>> = found.iter().map(|r| r.2.clone()).collect();
    assert_eq!(found.len(), 5, "{keys:?}");
    drop(sy);
    svc.shutdown().await.unwrap();
}

/// The member id of the only member of `group`, with the group's state.
fn group_member(bootstrap: &str, group: &str) -> (String, String) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let list = c
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .unwrap();
    let g = &list.groups()[0];
    assert_eq!(g.members().len(), 1, "group {group} in state {}", g.state());
    (g.members()[0].id().to_string(), g.state().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_quota_paces_delivery_and_keeps_the_group_membership() {
    init_tracing();
    let (east, _) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("quota-consume");
    create_topic(&east, &t, 3).await;
    apply(
        &mut adm,
        vec![cluster("east", &east), topic(&t, "east", "", 3)],
    )
    .await;
    let sy = connect(&svc, "quota-consume").await;
    let producer = sy.producer();
    let sends = (0..400).map(|i| {
        producer.send(
            Record::new(&t)
                .key(format!("k{}", i % 16))
                .payload(format!("v{i}")),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    // 25 msgs/s, burst 1; the SDK's consumer after it is paced.
    let v = apply(&mut adm, vec![quota(&t, 0, 0, 25, 1, false)]).await;
    sy.wait_for_version(v, Duration::from_secs(5))
        .await
        .unwrap();
    let group = fresh("quota-group");
    let mut opts = ConsumerOptions::default();
    // Throttled for longer than both timeouts: neither may expire.
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
        ("max.poll.interval.ms", "7000"),
    ] {
        opts.properties.insert(k.into(), v.into());
    }
    let consumer = sy.consumer_with(&group, &[&t], opts).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("first record within 30 s")
        .unwrap();
    let started = Instant::now();
    let (member, state) = group_member(&east, &group);
    assert_eq!(state, "Stable");
    let mut seen = BTreeSet::new();
    seen.insert((first.partition, first.offset));
    let mut dups = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let m = consumer.recv().await.unwrap();
        if !seen.insert((m.partition, m.offset)) {
            dups += 1;
        }
    }
    let elapsed = started.elapsed();
    let (member_after, state_after) = group_member(&east, &group);
    let stats = consumer.throttled();
    let rate = (seen.len() - 1) as f64 / elapsed.as_secs_f64();
    println!(
        "consume quota: {} records in {elapsed:.2?} ({rate:.1}/s under 25/s), {dups} redelivered, member {member} → {member_after} ({state_after}), throttled {stats:?}",
        seen.len()
    );
    assert_eq!(
        dups, 0,
        "records were handed over twice: the group rebalanced"
    );
    assert_eq!(
        member, member_after,
        "the member left and rejoined the group"
    );
    assert_eq!(state_after, "Stable");
    // The limiter lets at most one burst plus 25/s through (not a timing-dependent bound).
    assert!(
        (seen.len() as f64) <= 2.0 + 25.0 * (elapsed.as_secs_f64() + 0.1),
        "{} records in {elapsed:?}",
        seen.len()
    );
    assert!(seen.len() > 50, "delivery stalled: {} records", seen.len());
    assert!(stats.delayed as usize >= seen.len() - 2, "{stats:?}");
    // Records arrived in offset order per partition, from the start: no rewind.
    for p in 0..3 {
        let offs: Vec<i64> = seen.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
        if let (Some(first), Some(last)) = (offs.first(), offs.last()) {
            assert_eq!(*first, 0);
            assert_eq!(*last as usize + 1, offs.len(), "partition {p} has gaps");
        }
    }
    drop(consumer);
    drop(sy);
    svc.shutdown().await.unwrap();
}
