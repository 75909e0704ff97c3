//! A live migration of a topic between two real Kafka clusters, coordinated by the config
//! service (StartMigration, followed through ListMigrations), with 4 producer processes' worth of SDK clients
//! and a consumer group of 3 SDK clients under keyed load: the destination is created, every
//! producer switches, the group drains the source, and an independent reader and the consumers
//! find every record exactly once, per key in order.

mod common;
mod migrating;
mod workload;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use switchyard_config::migration;
use switchyard_proto::v1::MigrationPhase;
use workload::*;

const PARTITIONS: i32 = 6;
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_topic_under_keyed_load_with_four_producers_and_a_group_of_three() {
    scenario(false, false).await;
}

/// The destination exists and already holds records of its own (allowed by the operator):
/// the group skips them — it reads the destination from where it stood when the route
/// changed — and the move is otherwise the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_empty_destination_s_earlier_records_are_not_read_as_the_topic_s() {
    scenario(false, true).await;
}

/// One of the three consumers is killed (its client dropped: it leaves the group, which
/// rebalances) while the group drains the source. Nothing is lost; the records it had received
/// but not committed are redelivered to the others (Kafka's at-least-once after a crash,
/// counted separately); no record is received twice otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_during_the_drain_loses_nothing() {
    scenario(true, false).await;
}

/// Keys of the records a non-empty destination holds before the move.
const FOREIGN: &str = "foreign";

async fn scenario(kill_one: bool, nonempty_destination: bool) {
    init_tracing();
    let (east, west) = kafka();
    // A short client lease: a killed client leaves the inventory soon.
    let svc = migrating::service(Duration::from_secs(3)).await;
    let addr = svc.local_addr();
    let endpoint = format!("http://{addr}");
    let mut adm = admin(addr).await;
    let t = fresh("migrate");
    // Only the source exists: the move creates the destination (unless it is to be non-empty).
    create_topic(&east, &t, PARTITIONS).await;
    if nonempty_destination {
        create_topic(&west, &t, PARTITIONS).await;
        let p: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &west)
            .create()
            .unwrap();
        for seq in 0..20u64 {
            let key = format!("{FOREIGN}-{}", seq % 4);
            p.send(
                rdkafka::producer::FutureRecord::to(&t)
                    .key(&key)
                    .payload(&payload(&key, seq)),
                Duration::from_secs(10),
            )
            .await
            .expect("a record written to the destination before the move");
        }
    }
    apply(
        &mut adm,
        vec![
            cluster("east", &east),
            cluster("west", &west),
            topic(&t, "east", "", PARTITIONS),
        ],
    )
    .await;

    // The consumer group: 3 clients, each receiving and committing every record.
    let mut group = migrating::Group::start(
        &endpoint,
        "migrate-reader",
        &fresh("g"),
        &t,
        CONSUMERS,
        Duration::from_secs(1),
    )
    .await;

    // 4 producer clients, 8 keys each, ~150 records/s each (the consumers commit every record
    // synchronously; the group must keep up for its drain to end while the load runs).
    let mut producers = Vec::new();
    let mut loads = Vec::new();
    for i in 0..PRODUCERS {
        let sy = migrating::connect(&endpoint, &format!("migrate-writer-{i}")).await;
        let p = sy.producer();
        loads.push(Load::start_keys(
            p,
            &t,
            4,
            (i * 8..i * 8 + 8).collect(),
            150.0,
            Duration::from_secs(60),
        ));
        producers.push(sy);
    }
    // Let the group settle and records flow on east, then move.
    loads[0].wait_for_ok(300, Duration::from_secs(30)).await;
    let moved_at = Instant::now();
    let plan = migrating::start_move(&mut adm, &t, "migration-test", nonempty_destination).await;
    assert_eq!(
        plan.created_destination, !nonempty_destination,
        "the destination is created unless it existed"
    );
    const KILLED: usize = CONSUMERS - 1;
    if kill_one {
        // While the group drains east.
        group.tasks[KILLED].abort();
        let (sy, c) = group.members.remove(KILLED);
        drop(c);
        drop(sy);
    }
    assert_eq!(plan.partitions, PARTITIONS);
    let mut lines = Vec::new();
    let done = migration::wait(&mut adm, &plan.id, Duration::from_secs(90), |m| {
        lines.push(format!(
            "[{:.1?}] {}",
            moved_at.elapsed(),
            migration::progress_line(m)
        ))
    })
    .await
    .unwrap_or_else(|e| panic!("the migration did not finish: {e:#}; progress: {lines:#?}"));
    println!("migration progress:\n  {}", lines.join("\n  "));
    assert_eq!(
        MigrationPhase::try_from(done.phase),
        Ok(MigrationPhase::Complete),
        "{lines:#?}"
    );
    assert!(!done.forced);
    assert_eq!(done.producers as usize, PRODUCERS);
    assert_eq!(done.producers_switched as usize, PRODUCERS);
    assert_eq!(done.groups.len(), 1);
    assert!(
        !lines.iter().any(|l| l.contains("switched 0/0")),
        "the progress never lost sight of the clients: {lines:#?}"
    );
    assert_eq!(
        done.late_writes, 0,
        "no producer wrote to the source after the seal"
    );

    // Producers keep sending on west for a moment, then stop.
    loads[0]
        .wait_for_ok(
            loads[0].ok.load(std::sync::atomic::Ordering::Relaxed) + 100,
            Duration::from_secs(30),
        )
        .await;
    let mut report = Report::default();
    for l in loads {
        let r = l.finish().await;
        report.sent.extend(r.sent);
        report.errors.extend(r.errors);
    }
    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        report.errors.first()
    );
    let (on_east, on_west) = (report.count_on("east"), report.count_on("west"));
    println!(
        "migration: produced {} records ({on_east} east, {on_west} west)",
        report.sent.len()
    );
    assert!(on_east > 0 && on_west > 0, "the move happened mid-stream");

    // The consumers receive every record exactly once, per key in order.
    let expected: std::collections::HashSet<(String, u64)> =
        report.sent.iter().map(|x| (x.key.clone(), x.seq)).collect();
    // (key, seq) -> the consumers that received it; (consumer, key) -> seqs in arrival order.
    let mut got: HashMap<(String, u64), Vec<usize>> = HashMap::new();
    let mut per_key: HashMap<(usize, String), Vec<u64>> = HashMap::new();
    // Anything arriving after the last expected record is a duplicate.
    let mut foreign = 0;
    for (i, k, seq, _) in group.receive_all(&expected, Duration::from_secs(90)).await {
        if k.starts_with(FOREIGN) {
            foreign += 1;
            continue;
        }
        got.entry((k.clone(), seq)).or_default().push(i);
        per_key.entry((i, k)).or_default().push(seq);
    }
    for (i, r) in group.stop().await.into_iter().enumerate() {
        if !(kill_one && i == KILLED) {
            r.expect("consumer task did not panic");
        }
    }
    let lost = expected.iter().filter(|k| !got.contains_key(*k)).count();
    // Received twice with the killed consumer as one of the receivers: redelivery after its
    // crash (it had not committed them). Any other repeat is a duplicate.
    let redelivered = got
        .values()
        .filter(|v| v.len() == 2 && kill_one && v.contains(&KILLED))
        .count();
    let duplicated = got.values().filter(|v| v.len() > 1).count() - redelivered;
    // Per consumer and key, records arrive in order (the killed consumer's are cut short, and
    // a survivor taking over a partition continues after the last committed record).
    let out_of_order: usize = per_key
        .values()
        .map(|v| v.windows(2).filter(|w| w[0] >= w[1]).count())
        .sum();
    println!(
        "migration: consumed {} lost={lost} duplicated={duplicated} out_of_order={out_of_order} redelivered_after_crash={redelivered}",
        got.values().map(Vec::len).sum::<usize>()
    );
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));
    assert_eq!(foreign, 0, "the destination's earlier records are not read");

    // And the logs hold every record exactly once, per key in order across the move.
    let mut found = read_everywhere(&[("east", &east), ("west", &west)], &t);
    let before = found.len();
    found.retain(|(k, _), _| !k.starts_with(FOREIGN));
    assert_eq!(
        before - found.len(),
        if nonempty_destination { 20 } else { 0 }
    );
    check_exactly_once(&report, &found);
    check_order_across_switch(&found, "east", "west");
    drop(group);
    drop(producers);
    svc.shutdown().await.unwrap();
}
