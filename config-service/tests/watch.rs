//! MetadataService.Watch over a real gRPC server on loopback: initial snapshot, ordered deltas,
//! resume, slow watchers, shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchyard_config::ServerConfig;
use switchyard_proto::state::State;
use switchyard_proto::v1::watch_event::Event;
use switchyard_proto::v1::{Change, Cluster, WatchEvent};
use tonic::Streaming;

/// The change made by version step `i`: alternately adds topics and resizes one.
fn step(i: u64) -> Vec<Change> {
    if i % 3 == 2 {
        vec![up_topic(topic("orders", "east", 1 + i as i32))]
    } else {
        vec![up_topic(topic(&format!("t{i}"), "east", 1))]
    }
}

async fn seeded() -> TestServer {
    let t = TestServer::memory().await;
    t.apply(vec![
        up_cluster(cluster("east")),
        up_topic(topic("orders", "east", 1)),
    ])
    .await;
    t
}

/// Applies one event to the state a watcher holds, checking order.
fn follow(held: &mut Option<State>, ev: Event) {
    match ev {
        Event::Snapshot(s) => {
            if let Some(h) = held {
                assert!(
                    s.version >= h.version,
                    "snapshot {} after version {}",
                    s.version,
                    h.version
                );
            }
            *held = Some(State::from_snapshot(s));
        }
        Event::Delta(d) => {
            let h = held.as_mut().expect("a delta before any snapshot");
            assert_eq!(
                d.from_version, h.version,
                "out-of-order delta {}→{} at version {}",
                d.from_version, d.to_version, h.version
            );
            assert_eq!(d.to_version, d.from_version + 1);
            h.apply_delta_mut(&d).unwrap();
        }
    }
}

#[tokio::test]
async fn new_watcher_gets_a_snapshot_then_every_version_in_order() {
    let t = seeded().await;
    t.apply(step(100)).await;
    let start = t.version().await;
    assert_eq!(start, 2);

    let mut w = t.watch(0).await;
    let first = expect_snapshot(&mut w).await;
    assert_eq!(first, t.snapshot().await);
    let mut state = State::from_snapshot(first);

    for i in 0..20 {
        let v = t.apply(step(i)).await;
        let d = expect_delta(&mut w, v - 1).await;
        assert_eq!(d.author, "tester");
        state.apply_delta_mut(&d).unwrap();
    }
    let end = t.snapshot().await;
    assert_eq!(end.version, start + 20);
    assert_eq!(state, State::from_snapshot(end));
}

#[tokio::test]
async fn watcher_on_an_empty_service_gets_version_0_then_deltas() {
    let t = TestServer::memory().await;
    let mut w = t.watch(0).await;
    let s = expect_snapshot(&mut w).await;
    assert_eq!(s.version, 0);
    assert!(s.clusters.is_empty() && s.topics.is_empty());
    t.apply(vec![up_cluster(cluster("east"))]).await;
    expect_delta(&mut w, 0).await;
}

#[tokio::test]
async fn resume_sends_exactly_the_missed_deltas() {
    let t = seeded().await;
    let mut w = t.watch(0).await;
    let mut held = None;
    follow(&mut held, next_event(&mut w).await);
    for i in 0..3 {
        t.apply(step(i)).await;
        follow(&mut held, next_event(&mut w).await);
    }
    let k = held.as_ref().unwrap().version;
    assert_eq!(k, t.version().await);
    drop(w);

    for i in 3..10 {
        t.apply(step(i)).await;
    }
    let current = t.version().await;
    assert_eq!(current, k + 7);

    let mut w = t.watch(k).await;
    for from in k..current {
        let d = expect_delta(&mut w, from).await;
        follow(&mut held, Event::Delta(d));
    }
    assert_eq!(
        held.as_ref().unwrap(),
        &State::from_snapshot(t.snapshot().await)
    );
    // Nothing else is queued: the next event is the next version's delta.
    let next = t.apply(step(10)).await;
    let d = expect_delta(&mut w, next - 1).await;
    follow(&mut held, Event::Delta(d));

    // A watcher that is already current receives nothing until the next version.
    let mut w2 = t.watch(next).await;
    let after = t.apply(step(11)).await;
    expect_delta(&mut w2, next).await;
    let d = expect_delta(&mut w, next).await;
    follow(&mut held, Event::Delta(d));
    assert_eq!(held.unwrap(), State::from_snapshot(t.snapshot().await));
    assert_eq!(after, next + 1);
}

#[tokio::test]
async fn watch_rejects_an_invalid_app_name() {
    let t = seeded().await;
    let e = t
        .meta
        .clone()
        .watch(switchyard_proto::v1::WatchRequest {
            known_version: 0,
            client_id: "c".into(),
            app: "bad app".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains(r#""bad app""#), "{}", e.message());
}

#[tokio::test]
async fn unknown_or_future_known_version_gets_a_snapshot() {
    let t = seeded().await;
    for i in 0..3 {
        t.apply(step(i)).await;
    }
    let current = t.snapshot().await;
    let mut w = t.watch(10_000).await;
    assert_eq!(expect_snapshot(&mut w).await, current);
    t.apply(step(3)).await;
    expect_delta(&mut w, current.version).await;
}

#[tokio::test]
async fn resume_from_a_version_older_than_the_recent_window_gets_a_snapshot() {
    let t = TestServer::start(
        ServerConfig {
            retain_versions: 10,
            ..memory_config()
        },
        None,
    )
    .await;
    t.apply(vec![up_cluster(cluster("east"))]).await;
    for i in 0..300 {
        t.apply(step(i)).await;
    }
    let current = t.snapshot().await;
    let mut w = t.watch(1).await;
    assert_eq!(expect_snapshot(&mut w).await, current);
}

/// A cluster whose labels make every delta ~24 KiB, so an unread stream fills the HTTP/2
/// flow-control windows and socket buffers long before 300 versions have been published.
fn big_cluster(i: u64) -> Cluster {
    let mut c = cluster("big");
    for l in 0..3 {
        c.labels.insert(
            format!("blob{l}"),
            format!("{i:08}{}", "x".repeat(8000 - 8)),
        );
    }
    c
}

#[tokio::test]
async fn slow_watcher_does_not_hold_back_others_and_catches_up_in_order() {
    const N: u64 = 300;
    let t = seeded().await;
    let start = t.version().await;

    // Separate connections, as separate client processes would have.
    let mut slow_meta = t.new_meta().await;
    let mut slow = watch(&mut slow_meta, 0).await;
    let mut active_meta = t.new_meta().await;
    let mut active = watch(&mut active_meta, 0).await;
    let first = expect_snapshot(&mut active).await;
    assert_eq!(first.version, start);

    let reader = tokio::spawn(async move {
        let mut held = Some(State::from_snapshot(first));
        for _ in 0..N {
            match next_event(&mut active).await {
                Event::Delta(d) => follow(&mut held, Event::Delta(d)),
                Event::Snapshot(s) => panic!(
                    "the active watcher was sent a snapshot at {} instead of a delta",
                    s.version
                ),
            }
        }
        (held.unwrap(), active)
    });

    let began = Instant::now();
    within(Duration::from_secs(60), "300 applies", async {
        for i in 0..N {
            t.apply(vec![up_cluster(big_cluster(i))]).await;
        }
    })
    .await;
    let (active_state, _active) = within(Duration::from_secs(30), "active watcher", reader)
        .await
        .unwrap();
    let latest = t.snapshot().await;
    assert_eq!(latest.version, start + N);
    assert_eq!(active_state, State::from_snapshot(latest.clone()));
    eprintln!(
        "applied {N} versions and delivered them to the active watcher in {:?}",
        began.elapsed()
    );

    // Now the slow watcher reads: it reaches the latest version without going backwards or
    // seeing a delta out of order.
    let mut held = None;
    let mut snapshots = 0;
    let mut deltas = 0;
    within(Duration::from_secs(30), "slow watcher catch-up", async {
        while held
            .as_ref()
            .is_none_or(|h: &State| h.version < latest.version)
        {
            let ev = next_event(&mut slow).await;
            match &ev {
                Event::Snapshot(_) => snapshots += 1,
                Event::Delta(_) => deltas += 1,
            }
            follow(&mut held, ev);
        }
    })
    .await;
    eprintln!("slow watcher caught up with {snapshots} snapshots and {deltas} deltas");
    assert!(snapshots >= 1);
    assert!(
        deltas < N as usize,
        "the slow watcher was never skipped ahead"
    );
    assert_eq!(held.unwrap(), State::from_snapshot(latest.clone()));

    // And it keeps following afterwards.
    let v = t.apply(vec![up_cluster(cluster("after"))]).await;
    expect_delta(&mut slow, v - 1).await;
    assert_eq!(t.server.service().hub().watchers(), 2);
}

async fn expect_end(s: &mut Streaming<WatchEvent>) {
    loop {
        match within(STEP, "watch stream end", s.message()).await {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        }
    }
}

#[tokio::test]
async fn shutdown_ends_open_watch_streams_promptly() {
    let t = TestServer::start(
        ServerConfig {
            // Far longer than the bound below: shutdown must not depend on the grace period.
            shutdown_grace: Duration::from_secs(120),
            ..memory_config()
        },
        None,
    )
    .await;
    t.apply(vec![up_cluster(cluster("east"))]).await;
    let mut a = t.watch(0).await;
    expect_snapshot(&mut a).await;
    let mut b = t.watch(1).await;
    // One that never reads its initial snapshot, on its own connection.
    let mut idle_meta = t.new_meta().await;
    let mut idle = watch(&mut idle_meta, 0).await;
    within(STEP, "watchers registered", async {
        while t.server.service().hub().watchers() < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let TestServer { server, .. } = t;
    let began = Instant::now();
    within(Duration::from_secs(5), "shutdown", server.shutdown())
        .await
        .unwrap();
    eprintln!("shutdown took {:?}", began.elapsed());
    expect_end(&mut a).await;
    expect_end(&mut b).await;
    expect_end(&mut idle).await;
}

/// A watcher that stopped reading with its flow-control window full cannot be ended gracefully
/// (the server may not send it anything): shutdown then waits out the grace period, and no
/// longer.
#[tokio::test]
async fn shutdown_with_a_stalled_watcher_is_bounded_by_the_grace_period() {
    let grace = Duration::from_secs(1);
    let t = TestServer::start(
        ServerConfig {
            shutdown_grace: grace,
            ..memory_config()
        },
        None,
    )
    .await;
    let mut stalled_meta = t.new_meta().await;
    let mut stalled = watch(&mut stalled_meta, 0).await;
    within(Duration::from_secs(60), "300 applies", async {
        for i in 0..300 {
            t.apply(vec![up_cluster(big_cluster(i))]).await;
        }
    })
    .await;

    let TestServer { server, .. } = t;
    let began = Instant::now();
    within(
        grace + Duration::from_secs(5),
        "shutdown",
        server.shutdown(),
    )
    .await
    .unwrap();
    eprintln!("shutdown with a stalled watcher took {:?}", began.elapsed());
    // What was already in flight can still be read, then the stream ends.
    within(
        Duration::from_secs(10),
        "stalled stream end",
        expect_end(&mut stalled),
    )
    .await;
}
