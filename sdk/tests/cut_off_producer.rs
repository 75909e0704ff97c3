//! A producer cut off from the config service in the middle of a move (it has switched to the
//! destination; the move is not sealed yet) while the operator aborts the move.
//!
//! The coordinator forgets the producer when its lease ends, copies what reached the abandoned
//! destination back to the source and releases the topic. A producer that went on writing to
//! the destination after that would write records no group ever reads: the group has left the
//! abandoned destination. So the SDK holds sends to a topic that is being moved (switched, not
//! sealed) once the service has not heard from it for half its lease, and fails each held send
//! with a typed error when it has waited too long — the record was written nowhere. When the
//! service is reachable again and the client has the newest version, the held sends go on to
//! where the topic is now.

mod common;
mod migrating;
mod workload;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use switchyard::{ProducerOptions, Switchyard};
use switchyard_proto::v1::{MigrationPhase, MigrationRef};
use workload::*;

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_cut_off_during_an_aborted_move_never_writes_to_the_abandoned_destination() {
    init_tracing();
    let (east, west) = kafka();
    // Leases of 3 s: the coordinator forgets a silent client 3 s after its last report.
    let svc = migrating::service(Duration::from_secs(3)).await;
    let addr = svc.local_addr();
    let endpoint = format!("http://{addr}");
    let mut adm = admin(addr).await;
    let t = fresh("cutoff");
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
    let mut group = migrating::Group::start(
        &endpoint,
        "cutoff-reader",
        &fresh("g"),
        &t,
        1,
        Duration::from_secs(3),
    )
    .await;
    // A producer that never switches keeps the move in SWITCH (not sealed), so it can be
    // aborted while the SDK producer writes to the destination.
    let stuck = migrating::stuck_producer(endpoint.clone(), t.clone(), "east");

    // The SDK producer reaches the service through a proxy that can be frozen.
    let (proxy, frozen) = freezable_proxy(addr).await;
    let writer = Switchyard::builder("cutoff-writer")
        .endpoint(format!("http://{proxy}"))
        .without_cache()
        .status_interval(Duration::from_millis(200))
        .watch_stall_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("the writer connects");
    let producer = writer.producer_with(ProducerOptions {
        max_cut_off_hold: Duration::from_secs(2),
        ..Default::default()
    });
    let load = Load::start(producer.clone(), &t, 2, 8, 200.0, Duration::from_secs(150));
    load.wait_for_ok(100, Duration::from_secs(60)).await;

    let m = migrating::start_move(&mut adm, &t, "cutoff-test", false).await;
    eventually(Duration::from_secs(30), "the writer sends to west", || {
        let p = producer.clone();
        let t = t.clone();
        async move { (p.current_route(&t).await?.0 == "west").then_some(()) }
    })
    .await;
    let ok = load.ok.load(Ordering::Relaxed);
    load.wait_for_ok(ok + 50, Duration::from_secs(30)).await;

    // Cut off: the writer's reports and watch stop getting through; Kafka still does.
    frozen.store(true, Ordering::SeqCst);
    adm.abort_migration(MigrationRef {
        id: m.id.clone(),
        ..Default::default()
    })
    .await
    .expect("the abort is accepted");
    migrating::migration_until(
        &adm,
        &m.id,
        Duration::from_secs(60),
        "the abort finishes (the coordinator forgets the silent writer after its lease)",
        |x| MigrationPhase::try_from(x.phase) == Ok(MigrationPhase::Aborted),
    )
    .await;
    // The writer goes on trying for a while after the copy-back: every key sends at least
    // twice more.
    let tried = load.ok.load(Ordering::Relaxed) + load.failed.load(Ordering::Relaxed);
    eventually(Duration::from_secs(60), "the writer keeps trying", || {
        let n = load.ok.load(Ordering::Relaxed) + load.failed.load(Ordering::Relaxed);
        async move { (n >= tried + 16).then_some(()) }
    })
    .await;

    // Reachable again: the writer learns of the abort and goes on at east.
    frozen.store(false, Ordering::SeqCst);
    eventually(
        Duration::from_secs(60),
        "the writer sends to east again",
        || {
            let p = producer.clone();
            let t = t.clone();
            async move { (p.current_route(&t).await?.0 == "east").then_some(()) }
        },
    )
    .await;
    let ok = load.ok.load(Ordering::Relaxed);
    load.wait_for_ok(ok + 100, Duration::from_secs(60)).await;
    let report = load.finish().await;
    stuck.abort();

    // Every acknowledged record reaches the group exactly once.
    let expected: HashSet<(String, u64)> =
        report.sent.iter().map(|s| (s.key.clone(), s.seq)).collect();
    let mut got: HashMap<(String, u64), usize> = HashMap::new();
    for (_, k, seq, _) in group.receive_all(&expected, Duration::from_secs(90)).await {
        *got.entry((k, seq)).or_default() += 1;
    }
    for r in group.stop().await {
        r.expect("consumer task did not panic");
    }
    let lost = expected.iter().filter(|k| !got.contains_key(*k)).count();
    let duplicated = got.values().filter(|n| **n > 1).count();
    // A send that failed was written nowhere, and failed only for being cut off.
    let failed: HashSet<(String, u64)> = report
        .errors
        .iter()
        .map(|(k, s, _)| (k.clone(), *s))
        .collect();
    let written_anyway = got.keys().filter(|k| failed.contains(*k)).count();
    let other_errors: Vec<_> = report
        .errors
        .iter()
        .filter(|(_, _, e)| !e.contains("has not reached the config service"))
        .collect();
    println!(
        "cut-off writer: acknowledged={} failed_while_cut_off={} lost={lost} duplicated={duplicated} failed_but_written={written_anyway}",
        report.sent.len(),
        report.errors.len()
    );
    assert!(other_errors.is_empty(), "{:?}", other_errors.first());
    assert_eq!((lost, duplicated, written_anyway), (0, 0, 0));
    drop(writer);
    svc.shutdown().await.unwrap();
}
