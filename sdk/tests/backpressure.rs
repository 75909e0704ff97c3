//! Callback sends (`Producer::send_with_callback`) under backpressure, on real Kafka: a BLOCK
//! quota makes the sending thread wait for capacity, a full local queue
//! (`queue.buffering.max.messages`) makes it wait for room — and in both cases every send gets
//! exactly one callback, in send order, with nothing lost. Inside a delivery callback, where
//! waiting for room would stall the reports that make room, a send to a full queue fails at
//! once with Kafka's `QueueFull` and hands the record back.
//!
//! The sends run on a plain thread (as from C or Python): a callback send never blocks a Tokio
//! runtime thread. Every wait is bounded.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use switchyard::{Delivery, Error, ErrorKind, Producer, ProducerOptions, Record, SendError};
use switchyard_config::StoreConfig;
use switchyard_proto::v1::{Change, Quota, QuotaPolicy, change::Op};

/// Upper bound for any single callback to arrive.
const CALLBACK_WAIT: Duration = Duration::from_secs(60);

fn block_quota(topic: &str, msgs_per_sec: u64, burst: u64) -> Change {
    Change {
        op: Some(Op::UpsertQuota(Quota {
            app: "*".into(),
            topic: topic.into(),
            produce_msgs_per_sec: msgs_per_sec,
            burst,
            policy: QuotaPolicy::Block as i32,
            ..Default::default()
        })),
    }
}

/// Sends `n` records with one key (so one partition) from a plain thread, each with a callback
/// that reports `(seq, result)`; every `send_with_callback` must accept its record. Returns the
/// callbacks' results in arrival order.
async fn send_from_thread(
    producer: &Producer,
    topic: &str,
    n: usize,
) -> Vec<(usize, Result<Delivery, SendError>)> {
    let (tx, rx) = mpsc::channel();
    let p = producer.clone();
    let t = topic.to_string();
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            let tx = tx.clone();
            let r = Record::new(&t).key("one-key").payload(format!("v{i}"));
            if let Err((e, _)) = p.send_with_callback(r, move |res| {
                let _ = tx.send((i, res));
            }) {
                return Err(format!("send {i} refused: {e}"));
            }
        }
        Ok(())
    });
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match rx.recv_timeout(CALLBACK_WAIT) {
                Ok(x) => out.push(x),
                Err(e) => panic!("{} of {n} callbacks after a wait: {e}", out.len()),
            }
        }
        sender
            .join()
            .expect("sending thread")
            .expect("every send accepted");
        out
    })
    .await
    .expect("collector")
}

/// Every send delivered once, in send order, offsets increasing within the one partition.
fn assert_all_delivered_in_order(out: &[(usize, Result<Delivery, SendError>)], n: usize) {
    assert_eq!(out.len(), n);
    let mut by_seq = BTreeMap::new();
    for (i, r) in out {
        let d = r
            .as_ref()
            .unwrap_or_else(|e| panic!("send {i} failed: {e}"));
        assert!(
            by_seq.insert(*i, (d.partition, d.offset)).is_none(),
            "send {i} reported twice"
        );
    }
    assert_eq!(by_seq.len(), n, "a callback is missing");
    let seqs: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "callbacks out of send order: {seqs:?}"
    );
    let offsets: Vec<(i32, i64)> = by_seq.values().copied().collect();
    assert!(
        offsets
            .windows(2)
            .all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
        "records out of order in their partition: {offsets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_sends_wait_for_block_quota_capacity_in_order() {
    let (east, _) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("cb-quota");
    create_topic(&east, &t, 3).await;
    // 200 msgs/s with a burst of 20: 150 sends must wait for capacity most of the time.
    apply(
        &mut adm,
        vec![
            cluster("east", &east),
            topic(&t, "east", "", 3),
            block_quota(&t, 200, 20),
        ],
    )
    .await;
    let sy = connect(&svc, "cb-quota").await;
    let producer = sy.producer();

    let n = 150;
    let out = send_from_thread(&producer, &t, n).await;
    assert_all_delivered_in_order(&out, n);
    let stats = producer.throttled();
    assert!(
        stats.delayed >= (n - 20) as u64 / 2,
        "the sends did not wait for the quota: {stats:?}"
    );
    assert_eq!(stats.rejected, 0);
    // Exactly the n records reached Kafka.
    assert_eq!(read_all(&east, &t).len(), n);

    // On a runtime thread a send that would have to wait is refused with a precise error,
    // its record handed back (blocking there could stall the runtime).
    let mut refused = None;
    for i in 0..1_000 {
        let r = Record::new(&t).key("one-key").payload(format!("rt{i}"));
        if let Err((e, _cb)) = producer.send_with_callback(r.clone(), |_| {}) {
            refused = Some((e, r));
            break;
        }
    }
    let (e, r) = refused.expect("the quota stops a burst of 1,000 sends");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.to_string()
            .contains("cannot block a Tokio runtime thread"),
        "{e}"
    );
    assert_eq!(e.record, r, "the record comes back unchanged");
    drop(producer);
    drop(sy);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_sends_wait_for_room_in_a_full_local_queue() {
    let (east, _) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("cb-queue");
    create_topic(&east, &t, 3).await;
    apply(
        &mut adm,
        vec![cluster("east", &east), topic(&t, "east", "", 3)],
    )
    .await;
    let sy = connect(&svc, "cb-queue").await;
    // Room for one record until its delivery report has been served.
    let producer = sy.producer_with(ProducerOptions {
        properties: [("queue.buffering.max.messages".to_string(), "1".to_string())].into(),
        ..Default::default()
    });

    // From a plain thread each send waits for the previous one's report: all delivered.
    let n = 40;
    let out = send_from_thread(&producer, &t, n).await;
    assert_all_delivered_in_order(&out, n);

    // Inside a delivery callback the record being reported still fills the queue, and the
    // queue would only drain once this callback returned: the send fails at once with
    // QueueFull and gets its record back (its callback is handed back unrun).
    let (tx, rx) = mpsc::channel();
    let p = producer.clone();
    let t2 = t.clone();
    let outer = Record::new(&t).key("one-key").payload("outer");
    let sent = std::thread::spawn(move || {
        p.clone()
            .send_with_callback(outer, move |res| {
                let inner = Record::new(&t2).key("one-key").payload("inner");
                let nested = p.send_with_callback(inner.clone(), |_| {}).err();
                let _ = tx.send((res.map(|d| d.offset), nested.map(|(e, _)| e), inner));
            })
            .map_err(|(e, _)| e.to_string())
    })
    .join()
    .expect("sending thread");
    assert!(sent.is_ok(), "outer send refused: {sent:?}");
    let (outer_res, nested, inner) = tokio::task::spawn_blocking(move || {
        rx.recv_timeout(CALLBACK_WAIT).expect("outer callback")
    })
    .await
    .unwrap();
    assert!(outer_res.is_ok(), "outer send failed: {outer_res:?}");
    let e = nested.expect("a send inside a callback to a full queue fails at once");
    assert_eq!(e.kind(), ErrorKind::Kafka, "{e}");
    assert!(e.is_retriable(), "QueueFull is retriable: {e}");
    match &e.error {
        Error::Kafka { cluster, source } => {
            assert_eq!(cluster, "east");
            assert_eq!(
                source,
                &KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(e.record, inner, "the record comes back unchanged");
    producer.flush(Duration::from_secs(30)).await.unwrap();
    // The n records and the outer one, not the refused one.
    assert_eq!(read_all(&east, &t).len(), n + 1);
    drop(producer);
    drop(sy);
    svc.shutdown().await.unwrap();
}

/// `Producer::poll` serves delivery reports on the calling thread: the callbacks run inside it
/// (as many as it returns), each once, in send order. Once the thread stops polling, the
/// client's report thread runs the callbacks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_runs_callbacks_on_the_calling_thread() {
    let (east, _) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("cb-poll");
    create_topic(&east, &t, 3).await;
    apply(
        &mut adm,
        vec![cluster("east", &east), topic(&t, "east", "", 3)],
    )
    .await;
    let sy = connect(&svc, "cb-poll").await;
    let producer = sy.producer();
    let p = producer.clone();
    let t2 = t.clone();
    let (here, elsewhere, later, served) = tokio::task::spawn_blocking(move || {
        let me = std::thread::current().id();
        let (tx, rx) = mpsc::channel();
        let send = |i: usize, tx: &mpsc::Sender<_>| {
            let tx = tx.clone();
            let r = Record::new(&t2).key("one-key").payload(format!("v{i}"));
            p.send_with_callback(r, move |res| {
                let _ = tx.send((i, std::thread::current().id() == me, res));
            })
            .map_err(|(e, _)| e)
            .expect("send accepted");
        };
        let n = 300;
        let mut served = 0;
        for i in 0..n {
            send(i, &tx);
            served += p.poll(Duration::ZERO);
        }
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + CALLBACK_WAIT;
        while out.len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} callbacks",
                out.len()
            );
            served += p.poll(Duration::from_millis(100));
            out.extend(rx.try_iter());
        }
        // No polls from here on: the report thread serves.
        let m = 50;
        for i in n..n + m {
            send(i, &tx);
        }
        let mut later = Vec::new();
        while later.len() < m {
            later.push(
                rx.recv_timeout(CALLBACK_WAIT)
                    .expect("callback without polls"),
            );
        }
        let here: Vec<_> = out
            .iter()
            .filter(|(_, h, _)| *h)
            .map(|(i, _, _)| *i)
            .collect();
        let elsewhere = out.len() - here.len();
        let seqs: Vec<usize> = out.iter().map(|(i, _, _)| *i).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "callbacks out of send order: {seqs:?}"
        );
        assert!(out.iter().all(|(_, _, r)| r.is_ok()), "a send failed");
        (here.len(), elsewhere, later, served)
    })
    .await
    .expect("polling thread");
    assert_eq!(served, here, "poll's count is the callbacks it ran");
    assert!(here > 0, "no callback ran in poll ({elsewhere} elsewhere)");
    assert!(
        later.iter().all(|(_, h, r)| !*h && r.is_ok()),
        "after the polls stopped, callbacks ran on the report thread"
    );
    assert_eq!(read_all(&east, &t).len(), 350);
    drop(producer);
    drop(sy);
    svc.shutdown().await.unwrap();
}
