//! Re-routing a logical topic from one real Kafka cluster to another while records flow:
//! no loss, no duplicates, per-key order kept across the switch — checked by an independent
//! raw rdkafka reader, and by an SDK consumer group that follows the move.

mod common;
mod workload;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use switchyard::{ConsumerOptions, ProducerOptions};
use switchyard_config::StoreConfig;
use workload::*;

/// The tests in this file each put a few thousand records per second through two clusters on a
/// small machine: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PARTITIONS: i32 = 6;

struct Setup {
    east: String,
    west: String,
    svc: switchyard_config::RunningServer,
    adm: switchyard_config::client::AdminClient,
    topic: String,
}

/// From the delivery reports: per key, the records on each cluster were written in send order,
/// and every record on east was sent before every record on west.
fn check_delivery_order(report: &workload::Report) {
    let mut per_key: HashMap<&str, Vec<&workload::Sent>> = HashMap::new();
    for x in &report.sent {
        per_key.entry(&x.key).or_default().push(x);
    }
    for (k, mut v) in per_key {
        v.sort_by_key(|x| x.seq);
        let first_west = v
            .iter()
            .position(|x| x.cluster == "west")
            .unwrap_or(v.len());
        assert!(
            v[first_west..].iter().all(|x| x.cluster == "west"),
            "key {k}: a send after the first one delivered to west went to east"
        );
        for w in v.windows(2) {
            if w[0].cluster == w[1].cluster {
                assert!(
                    w[0].partition == w[1].partition && w[0].offset < w[1].offset,
                    "key {k} on {}: seq {} written at {}/{} after seq {} at {}/{}",
                    w[1].cluster,
                    w[1].seq,
                    w[1].partition,
                    w[1].offset,
                    w[0].seq,
                    w[0].partition,
                    w[0].offset
                );
            }
        }
    }
}

/// A config service, topic `T` on east and an empty `T` with the same partition count on west.
async fn setup(prefix: &str) -> Setup {
    let (east, west) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let name = fresh(prefix);
    create_topic(&east, &name, PARTITIONS).await;
    create_topic(&west, &name, PARTITIONS).await;
    apply(
        &mut adm,
        vec![
            cluster("east", &east),
            cluster("west", &west),
            topic(&name, "east", "", PARTITIONS),
        ],
    )
    .await;
    Setup {
        east,
        west,
        svc,
        adm,
        topic: name,
    }
}

/// Moves the topic to west; returns (new version, when the apply returned).
async fn move_to_west(s: &mut Setup) -> (u64, Instant) {
    let v = apply(
        &mut s.adm,
        vec![topic(&s.topic, "west", &s.topic, PARTITIONS)],
    )
    .await;
    (v, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_reroute_under_load_loses_duplicates_and_reorders_nothing() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let mut s = setup("reroute").await;
    let sy = connect(&s.svc, "reroute").await;
    // One record in flight per key and 32 keys: 5,000/s needs sends faster than 6.4 ms, so
    // linger less than the SDK's default 5 ms.
    let producer = sy.producer_with(ProducerOptions {
        properties: [("linger.ms".to_string(), "1".to_string())].into(),
        ..Default::default()
    });

    let load = Load::start(
        producer.clone(),
        &s.topic,
        8,
        32,
        5_000.0,
        Duration::from_secs(4),
    );
    tokio::time::sleep_until((load.started() + Duration::from_millis(1500)).into()).await;
    let sent_before_apply = load.ok.load(std::sync::atomic::Ordering::Relaxed);
    let (v2, applied_at) = move_to_west(&mut s).await;
    sy.wait_for_version(v2, Duration::from_secs(10))
        .await
        .expect("the SDK applies the move");
    let p = producer.clone();
    let t = s.topic.clone();
    eventually(
        Duration::from_secs(10),
        "the producer switches to west",
        || {
            let (p, t) = (p.clone(), t.clone());
            async move {
                (p.current_route(&t).await.map(|r| r.0).as_deref() == Some("west")).then_some(())
            }
        },
    )
    .await;
    let switched_at = Instant::now();
    let report_start = load.started();
    let report = load.join().await;

    let (on_east, on_west) = (report.count_on("east"), report.count_on("west"));
    println!(
        "reroute: sent {} records in {:.2?} ({:.0}/s): {} to east, {} to west; {} before the apply; {} errors",
        report.sent.len(),
        report.elapsed,
        report.rate(),
        on_east,
        on_west,
        sent_before_apply,
        report.errors.len()
    );
    println!(
        "reroute: steady rate after the first second {:.0}/s",
        report.rate_between(
            report_start + Duration::from_secs(1),
            report_start + Duration::from_secs(4)
        )
    );
    println!(
        "reroute: send latency p50 {:.2?}, p99 {:.2?}, max {:.2?}; max around the switch (started between apply and switch observed) {:.2?}; apply→switch observed {:.2?}; route changes {}",
        report.percentile_latency(0.5),
        report.percentile_latency(0.99),
        report.max_latency(),
        report.max_latency_started_between(
            applied_at - Duration::from_millis(100),
            switched_at + Duration::from_millis(100)
        ),
        switched_at - applied_at,
        producer.route_changes(),
    );

    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)]
    );
    // Sanity floors only (the rate depends on the machine; correctness is judged above and
    // below, not by speed): the move must have happened in the middle of real traffic.
    assert!(
        report.sent.len() > 500,
        "the workload barely ran: {} sends",
        report.sent.len()
    );
    assert!(
        on_east > 50,
        "only {on_east} records went to east before the move"
    );
    assert!(
        on_west > 50,
        "only {on_west} records went to west after the move"
    );
    assert_eq!(producer.route_changes(), 1);

    // Deliveries: every send begun after the switch was observed went to west, and per key the
    // deliveries go east…east, west…west.
    let late_east: Vec<_> = report
        .sent
        .iter()
        .filter(|x| x.started > switched_at && x.cluster != "west")
        .collect();
    assert!(
        late_east.is_empty(),
        "{} sends begun after the switch were delivered to east, e.g. {:?}",
        late_east.len(),
        late_east.first()
    );
    let mut per_key: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for x in &report.sent {
        per_key.entry(&x.key).or_default().push((x.seq, &x.cluster));
    }
    for (k, mut v) in per_key {
        v.sort();
        let first_west = v.iter().position(|x| x.1 == "west").unwrap_or(v.len());
        assert!(
            v[first_west..].iter().all(|x| x.1 == "west"),
            "key {k}: deliveries went back to east after going to west"
        );
    }

    // The independent reader sees every record exactly once, in order.
    let found = read_everywhere(&[("east", &s.east), ("west", &s.west)], &s.topic);
    check_exactly_once(&report, &found);
    check_order_across_switch(&found, "east", "west");
    drop(sy);
    s.svc.shutdown().await.unwrap();
}

/// Sends issued without waiting for each other (a window of futures polled in order, as a
/// pipelining application or the C binding's dispatcher does) keep their order per key across
/// the switch: sends held while the route switches are not overtaken by sends made after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_same_key_sends_keep_their_order_across_a_reroute() {
    use futures::StreamExt;
    use futures::stream::FuturesOrdered;
    use switchyard::Record;

    let _serial = SERIAL.lock().await;
    init_tracing();
    let mut s = setup("pipelined").await;
    let sy = connect(&s.svc, "pipelined").await;
    let producer = sy.producer();
    const KEYS: usize = 8;
    const WINDOW: usize = 1_000;
    let mut seqs = [0u64; KEYS];
    let mut window = FuturesOrdered::new();
    let mut report = workload::Report::default();
    let mut issued = 0usize;
    let mut moved: Option<u64> = None;
    let mut west_after_move = 0usize;
    let started = Instant::now();
    // Keep the window full until well after the switch.
    while west_after_move < 5_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the workload did not finish in 60 s ({issued} sends issued)"
        );
        while window.len() < WINDOW {
            let k = issued % KEYS;
            let key = key_name(k);
            let seq = seqs[k];
            seqs[k] += 1;
            issued += 1;
            let p = producer.clone();
            let rec = Record::new(&s.topic)
                .key(key.clone())
                .payload(payload(&key, seq));
            let t0 = Instant::now();
            window.push_back(async move { (key, seq, t0, p.send(rec).await) });
        }
        let (key, seq, t0, res) = window.next().await.expect("window is not empty");
        match res {
            Ok(d) => {
                if d.cluster == "west" {
                    west_after_move += 1;
                }
                report.sent.push(workload::Sent {
                    key,
                    seq,
                    cluster: d.cluster,
                    physical: d.physical_topic,
                    partition: d.partition,
                    offset: d.offset,
                    started: t0,
                    done: Instant::now(),
                });
            }
            Err(e) => report.errors.push((key, seq, e.to_string())),
        }
        if moved.is_none() && report.sent.len() >= 20_000 {
            let (v, _) = move_to_west(&mut s).await;
            moved = Some(v);
        }
    }
    while let Some((key, seq, t0, res)) = window.next().await {
        match res {
            Ok(d) => report.sent.push(workload::Sent {
                key,
                seq,
                cluster: d.cluster,
                physical: d.physical_topic,
                partition: d.partition,
                offset: d.offset,
                started: t0,
                done: Instant::now(),
            }),
            Err(e) => report.errors.push((key, seq, e.to_string())),
        }
    }
    report.elapsed = started.elapsed();
    println!(
        "pipelined: {} sends in {:.2?}, {} to east, {} to west, {} errors",
        report.sent.len(),
        report.elapsed,
        report.count_on("east"),
        report.count_on("west"),
        report.errors.len()
    );
    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)]
    );
    assert_eq!(producer.route_changes(), 1);
    check_delivery_order(&report);
    // And the independent reader agrees.
    let found = read_everywhere(&[("east", &s.east), ("west", &s.west)], &s.topic);
    check_exactly_once(&report, &found);
    check_order_across_switch(&found, "east", "west");
    drop(sy);
    s.svc.shutdown().await.unwrap();
}

/// The callback send path ([`switchyard::Producer::send_with_callback`]) from a plain thread,
/// as the C and Python bindings use it: sends issued without waiting for each other (a window
/// of 1,000 in flight) keep their order per key across a route change, nothing is lost or
/// duplicated, and the independent reader agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_sends_keep_their_order_across_a_reroute() {
    use std::sync::mpsc;
    use switchyard::{Delivery, Record, SendError};

    let _serial = SERIAL.lock().await;
    init_tracing();
    let mut s = setup("callback").await;
    let sy = connect(&s.svc, "callback").await;
    let producer = sy.producer();
    const KEYS: usize = 8;
    const WINDOW: usize = 1_000;
    const BEFORE_MOVE: usize = 10_000;
    const ON_WEST: usize = 3_000;
    type Outcome = (String, u64, Instant, Result<Delivery, SendError>);
    let (move_tx, move_rx) = tokio::sync::oneshot::channel::<()>();
    let topic = s.topic.clone();
    let p = producer.clone();
    // Every other send goes through a topic handle: the same lane, so the same order.
    let handle = producer
        .topic(&s.topic)
        .expect("a handle to a routed topic");
    assert_eq!(handle.topic(), s.topic);
    let sender = std::thread::spawn(move || {
        let (tx, rx) = mpsc::channel::<Outcome>();
        let mut seqs = [0u64; KEYS];
        let mut report = workload::Report::default();
        let (mut issued, mut in_flight, mut on_west) = (0usize, 0usize, 0usize);
        let mut move_tx = Some(move_tx);
        let started = Instant::now();
        let record = |report: &mut workload::Report, o: Outcome| match o {
            (key, seq, t0, Ok(d)) => report.sent.push(workload::Sent {
                key,
                seq,
                cluster: d.cluster,
                physical: d.physical_topic,
                partition: d.partition,
                offset: d.offset,
                started: t0,
                done: Instant::now(),
            }),
            (key, seq, _, Err(e)) => report.errors.push((key, seq, e.to_string())),
        };
        while on_west < ON_WEST {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the workload did not finish in 60 s ({issued} sends issued)"
            );
            while in_flight < WINDOW {
                let k = issued % KEYS;
                let key = key_name(k);
                let seq = seqs[k];
                seqs[k] += 1;
                issued += 1;
                let tx = tx.clone();
                let t0 = Instant::now();
                let k2 = key.clone();
                let sent = if issued % 2 == 0 {
                    let rec = Record::new(&topic)
                        .key(key.clone())
                        .payload(payload(&key, seq));
                    p.send_with_callback(rec, move |r| {
                        let _ = tx.send((k2, seq, t0, r));
                    })
                    .map_err(|(e, _callback)| e.to_string())
                } else {
                    handle
                        .send_with_callback_ref(
                            Some(key.as_bytes()),
                            Some(payload(&key, seq).as_bytes()),
                            &[],
                            move |r| {
                                let _ = tx.send((k2, seq, t0, r.map(|d| d.to_delivery())));
                            },
                        )
                        .map_err(|(e, _callback)| e.to_string())
                };
                match sent {
                    Ok(()) => in_flight += 1,
                    Err(e) => report.errors.push((key, seq, e)),
                }
            }
            let o = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a delivery report within 30 s");
            in_flight -= 1;
            if matches!(&o.3, Ok(d) if d.cluster == "west") {
                on_west += 1;
            }
            record(&mut report, o);
            if report.sent.len() >= BEFORE_MOVE
                && let Some(m) = move_tx.take()
            {
                let _ = m.send(());
            }
        }
        while in_flight > 0 {
            let o = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a delivery report within 30 s");
            in_flight -= 1;
            record(&mut report, o);
        }
        report.elapsed = started.elapsed();
        report
    });
    tokio::time::timeout(Duration::from_secs(60), move_rx)
        .await
        .expect("the sender reaches the move point within 60 s")
        .expect("the sender thread is alive");
    move_to_west(&mut s).await;
    let report = tokio::task::spawn_blocking(move || sender.join())
        .await
        .unwrap()
        .expect("the sender thread did not panic");
    println!(
        "callback: {} sends in {:.2?}, {} to east, {} to west, {} errors",
        report.sent.len(),
        report.elapsed,
        report.count_on("east"),
        report.count_on("west"),
        report.errors.len()
    );
    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)]
    );
    assert_eq!(producer.route_changes(), 1);
    assert!(report.count_on("east") >= BEFORE_MOVE);
    assert!(report.count_on("west") >= ON_WEST);
    check_delivery_order(&report);
    let found = read_everywhere(&[("east", &s.east), ("west", &s.west)], &s.topic);
    check_exactly_once(&report, &found);
    check_order_across_switch(&found, "east", "west");
    drop(sy);
    s.svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_follows_reroute_and_receives_every_record_once() {
    let _serial = SERIAL.lock().await;
    init_tracing();
    let mut s = setup("reroute-c").await;
    let sy = connect(&s.svc, "reroute-consumer").await;
    let group = fresh("g");
    let consumer = Arc::new(
        sy.consumer_with(
            &group,
            &[&s.topic],
            ConsumerOptions {
                auto_commit: false,
                drain_grace: Duration::from_secs(2),
                ..Default::default()
            },
        )
        .expect("consumer"),
    );

    // The consumer: receive, commit each record, report (key, seq, cluster).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let c = consumer.clone();
    let logical = s.topic.clone();
    let consumer_task = tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = c.recv() => m.expect("recv"),
                _ = stop_rx.wait_for(|v| *v) => return,
            };
            c.commit(&m).await.expect("commit");
            let (k, seq) = parse_payload(m.payload.as_deref().unwrap_or_default());
            assert_eq!(m.topic, logical, "the logical topic name");
            if tx.send((k, seq, m.cluster.clone())).is_err() {
                return;
            }
        }
    });

    // The producer side of the same kind of re-route, at a rate a consumer that commits every
    // record synchronously keeps up with.
    let producer = sy.producer();
    let load = Load::start(
        producer.clone(),
        &s.topic,
        8,
        32,
        1_000.0,
        Duration::from_secs(4),
    );
    tokio::time::sleep_until((load.started() + Duration::from_millis(1500)).into()).await;
    let (v2, _) = move_to_west(&mut s).await;
    sy.wait_for_version(v2, Duration::from_secs(10))
        .await
        .expect("the SDK applies the move");
    let report = load.join().await;
    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        report.errors.first()
    );
    let expected: HashMap<(String, u64), String> = report
        .sent
        .iter()
        .map(|x| ((x.key.clone(), x.seq), x.cluster.clone()))
        .collect();
    println!(
        "reroute consumer: produced {} records ({} east, {} west)",
        expected.len(),
        report.count_on("east"),
        report.count_on("west")
    );
    assert!(report.count_on("east") > 0 && report.count_on("west") > 0);

    // Every record arrives, within a bounded time after the producer stopped.
    let mut got: HashMap<(String, u64), Vec<String>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let received_all =
        |got: &HashMap<(String, u64), Vec<String>>| expected.keys().all(|k| got.contains_key(k));
    while !received_all(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((k, seq, cluster))) => got.entry((k, seq)).or_default().push(cluster),
            Ok(None) => panic!("the consumer task ended early"),
            Err(_) => panic!(
                "received {} of {} records within 90 s after the producer stopped",
                expected.keys().filter(|k| got.contains_key(*k)).count(),
                expected.len()
            ),
        }
    }
    let all_in = Instant::now();
    // Keep consuming until the old cluster is drained and released: any record delivered again
    // meanwhile is a duplicate.
    let summary = loop {
        let summary = consumer.assignment_summary();
        if summary.len() == 1 && summary[0].0 == "west" {
            break summary;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer still reads {summary:?}: east was never released"
        );
        if let Ok(Some((k, seq, cluster))) =
            tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
        {
            got.entry((k, seq)).or_default().push(cluster);
        }
    };
    // Anything left in flight.
    while let Ok(Some((k, seq, cluster))) =
        tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
    {
        got.entry((k, seq)).or_default().push(cluster);
    }
    println!(
        "reroute consumer: received {} records; east released {:.2?} after the last record arrived; now reading {summary:?}",
        got.values().map(Vec::len).sum::<usize>(),
        all_in.elapsed()
    );
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), consumer_task)
        .await
        .expect("consumer task stops")
        .expect("consumer task did not panic");

    let dups: Vec<_> = got.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        dups.is_empty(),
        "{} records were received more than once, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(extra.is_empty(), "unexpected records {extra:?}");
    for (k, clusters) in &got {
        assert_eq!(
            &clusters[0], &expected[k],
            "record {k:?} came from a different cluster than it was delivered to"
        );
    }
    drop(consumer);
    drop(sy);
    s.svc.shutdown().await.unwrap();
}
