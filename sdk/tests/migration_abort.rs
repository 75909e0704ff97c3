//! A live migration aborted before the seal, under keyed load from 4 SDK producers with a
//! consumer group of 3 SDK clients reading.
//!
//! One more producer (a client reporting over gRPC that never switches) keeps the migration in
//! SWITCH, so the 4 SDK producers are writing to the destination when the operator aborts.
//! The abort routes the topic back; the producers flush to the destination, switch back and
//! hold their sends while the coordinator copies what they wrote to the destination back to
//! the source, then go on writing to the source. The group, which had not read the
//! destination (it drains the source first), leaves it unread. Then: nothing lost, nothing
//! duplicated, per key in order at the consumers, and the source's log holds every record
//! exactly once, per key in write order.

mod common;
mod migrating;
mod workload;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use switchyard_config::migration;
use switchyard_proto::v1::{MigrationPhase, MigrationRef};
use workload::*;

const PARTITIONS: i32 = 6;
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_under_load_copies_the_destination_back_and_keeps_every_record_once_in_order() {
    init_tracing();
    let (east, west) = kafka();
    let svc = migrating::service(Duration::from_secs(3)).await;
    let addr = svc.local_addr();
    let endpoint = format!("http://{addr}");
    let mut adm = admin(addr).await;
    let t = fresh("abort");
    create_topic(&east, &t, PARTITIONS).await;
    apply(
        &mut adm,
        vec![
            cluster("east", &east),
            cluster("west", &west),
            topic(&t, "east", "", PARTITIONS),
        ],
    )
    .await;
    let stuck = migrating::stuck_producer(endpoint.clone(), t.clone(), "east");

    let mut group = migrating::Group::start(
        &endpoint,
        "abort-reader",
        &fresh("g"),
        &t,
        CONSUMERS,
        Duration::from_secs(1),
    )
    .await;
    let mut producers = Vec::new();
    let mut loads = Vec::new();
    for i in 0..PRODUCERS {
        let sy = migrating::connect(&endpoint, &format!("abort-writer-{i}")).await;
        loads.push(Load::start_keys(
            sy.producer(),
            &t,
            4,
            (i * 8..i * 8 + 8).collect(),
            150.0,
            Duration::from_secs(60),
        ));
        producers.push(sy);
    }
    loads[0].wait_for_ok(300, Duration::from_secs(30)).await;

    let m = migrating::start_move(&mut adm, &t, "abort-test", false).await;
    // Every SDK producer switches; the stuck one keeps the migration in SWITCH.
    let switched = migrating::migration_until(
        &adm,
        &m.id,
        Duration::from_secs(30),
        "the SDK producers switch",
        |m| m.producers_switched as usize == PRODUCERS,
    )
    .await;
    assert_eq!(
        MigrationPhase::try_from(switched.phase),
        Ok(MigrationPhase::Switch),
        "{switched:?}"
    );
    // Records flow to west for a moment; then the operator aborts.
    let before = loads[0].ok.load(Ordering::Relaxed);
    loads[0]
        .wait_for_ok(before + 100, Duration::from_secs(30))
        .await;
    let aborted_at = Instant::now();
    let m = adm
        .abort_migration(MigrationRef {
            id: m.id.clone(),
            author: "abort-test".into(),
            comment: String::new(),
            ..Default::default()
        })
        .await
        .expect("abort")
        .into_inner();
    assert_eq!(
        MigrationPhase::try_from(m.phase),
        Ok(MigrationPhase::Aborting),
        "{m:?}"
    );
    let mut lines = Vec::new();
    let done = migration::wait(&mut adm, &m.id, Duration::from_secs(60), |m| {
        lines.push(format!(
            "[{:.1?}] {}",
            aborted_at.elapsed(),
            migration::progress_line(m)
        ))
    })
    .await
    .unwrap_or_else(|e| panic!("the abort did not finish: {e:#}; progress: {lines:#?}"));
    println!("abort progress:\n  {}", lines.join("\n  "));
    assert_eq!(
        MigrationPhase::try_from(done.phase),
        Ok(MigrationPhase::Aborted),
        "{lines:#?}"
    );
    assert!(!done.forced, "{done:?}");

    // The producers go on writing to east for a moment, then stop.
    let after = loads[0].ok.load(Ordering::Relaxed);
    loads[0]
        .wait_for_ok(after + 100, Duration::from_secs(30))
        .await;
    let mut report = Report::default();
    for l in loads {
        let r = l.finish().await;
        report.sent.extend(r.sent);
        report.errors.extend(r.errors);
    }
    stuck.abort();
    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        report.errors.first()
    );
    let on_west = report.count_on("west");
    println!(
        "abort: produced {} records ({on_west} written to west during the switch, {} copied back)",
        report.sent.len(),
        done.copied_back
    );
    assert!(
        on_west > 0,
        "the SDK producers wrote to west before the abort"
    );
    assert_eq!(done.copied_back as usize, on_west, "{done:?}");

    // The group: every record once, per key in order, none read from west.
    let expected: HashSet<(String, u64)> =
        report.sent.iter().map(|x| (x.key.clone(), x.seq)).collect();
    let mut got: HashMap<(String, u64), usize> = HashMap::new();
    let mut per_key: HashMap<(usize, String), Vec<u64>> = HashMap::new();
    let mut from_west = 0;
    for (i, k, seq, cluster) in group.receive_all(&expected, Duration::from_secs(90)).await {
        *got.entry((k.clone(), seq)).or_default() += 1;
        per_key.entry((i, k)).or_default().push(seq);
        from_west += usize::from(cluster == "west");
    }
    for r in group.stop().await {
        r.expect("consumer task did not panic");
    }
    let lost = expected.iter().filter(|k| !got.contains_key(*k)).count();
    let duplicated = got.values().filter(|n| **n > 1).count();
    let out_of_order: usize = per_key
        .values()
        .map(|v| v.windows(2).filter(|w| w[0] >= w[1]).count())
        .sum();
    println!(
        "abort: consumed {} lost={lost} duplicated={duplicated} out_of_order={out_of_order} read_from_west={from_west}",
        got.values().sum::<usize>()
    );
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));
    assert_eq!(
        from_west, 0,
        "the group never read the abandoned destination"
    );

    // The source's log: every record exactly once, per key in write order.
    let found = read_everywhere(&[("east", &east)], &t);
    let missing = expected.iter().filter(|k| !found.contains_key(*k)).count();
    let twice = found.values().filter(|v| v.len() > 1).count();
    assert_eq!((missing, twice), (0, 0), "in the source's log");
    let violations = order_violations(&found, "east", "-");
    assert!(
        violations.is_empty(),
        "{} order violations in the source's log, e.g.\n{}",
        violations.len(),
        violations[..violations.len().min(10)].join("\n")
    );
    drop(group);
    drop(producers);
    svc.shutdown().await.unwrap();
}
