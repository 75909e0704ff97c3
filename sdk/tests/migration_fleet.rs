//! Live migrations as a fleet sees them, on two real Kafka clusters: a consumer group that is
//! offline through the switch and restarts afterwards with an empty cache (a deploy, a batch
//! job), a group on `auto.offset.reset=latest`, a source partition whose records all expired,
//! a move to another topic on the same cluster, and a producer cut off from the service that
//! writes to the source after the seal.
//!
//! What each checks: the group receives every record written to the topic after it last
//! committed — the source backlog first, then the destination — exactly once and per key in
//! order; the coordinator waits for the offline group (found from its committed offsets on the
//! source cluster, not from status reports) before it completes the move.

mod common;
mod migrating;
mod workload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::*;
use rdkafka::admin::{AdminClient as KafkaAdmin, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchyard::{ConsumerOptions, Record, Switchyard};
use switchyard_proto::v1::{Migration, MigrationPhase, StartMigrationRequest};
use workload::*;

const PARTITIONS: i32 = 4;
const KEYS: usize = 12;
/// Records per key the offline group has to drain from the source.
const BACKLOG: u64 = 100;

fn phase(m: &Migration) -> MigrationPhase {
    MigrationPhase::try_from(m.phase).unwrap_or(MigrationPhase::Unspecified)
}

/// Sends seq `seqs` of every key, one key's records in order; returns the (key, seq) sent and
/// the cluster each went to.
async fn send_batch(
    sy: &Switchyard,
    topic: &str,
    seqs: std::ops::Range<u64>,
) -> Vec<((String, u64), String)> {
    let p = sy.producer();
    let mut out = Vec::new();
    for seq in seqs {
        let sends = (0..KEYS).map(|k| {
            let key = key_name(k);
            let rec = Record::new(topic)
                .key(key.clone())
                .payload(payload(&key, seq));
            let p = p.clone();
            async move {
                let d = p.send(rec).await.expect("send");
                ((key, seq), d.cluster)
            }
        });
        out.extend(futures::future::join_all(sends).await);
    }
    out
}

/// Per key, where a record's first delivery to the group (whichever member) comes after a
/// later record's (a repeated delivery is counted as a duplicate, not here).
fn order_breaks(got: &[migrating::Received]) -> Vec<String> {
    let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut first: HashSet<(&str, u64)> = HashSet::new();
    for (_, k, seq, _) in got {
        if first.insert((k.as_str(), *seq)) {
            per_key.entry(k).or_default().push(*seq);
        }
    }
    let mut out = Vec::new();
    for (k, v) in per_key {
        for w in v.windows(2) {
            if w[0] >= w[1] {
                out.push(format!("key {k}: seq {} then {}", w[0], w[1]));
            }
        }
    }
    out
}

struct Setup {
    svc: switchyard_config::RunningServer,
    endpoint: String,
    adm: switchyard_config::client::AdminClient,
    east: String,
    west: String,
    topic: String,
}

async fn setup(prefix: &str) -> Setup {
    init_tracing();
    let (east, west) = kafka();
    let svc = migrating::service(Duration::from_secs(3)).await;
    let addr = svc.local_addr();
    let endpoint = format!("http://{addr}");
    let mut adm = admin(addr).await;
    let topic = fresh(prefix);
    create_topic(&east, &topic, PARTITIONS).await;
    apply(
        &mut adm,
        vec![
            cluster("east", &east),
            cluster("west", &west),
            topic_change(&topic),
        ],
    )
    .await;
    Setup {
        svc,
        endpoint,
        adm,
        east,
        west,
        topic,
    }
}

fn topic_change(t: &str) -> switchyard_proto::v1::Change {
    topic(t, "east", "", PARTITIONS)
}

/// Limits app `app` to `per_sec` received records of `topic` per second (a slow reader).
async fn consume_quota(
    adm: &mut switchyard_config::client::AdminClient,
    app: &str,
    topic: &str,
    per_sec: u64,
) {
    apply(
        adm,
        vec![switchyard_proto::v1::Change {
            op: Some(switchyard_proto::v1::change::Op::UpsertQuota(
                switchyard_proto::v1::Quota {
                    app: app.into(),
                    topic: topic.into(),
                    consume_msgs_per_sec: per_sec,
                    ..Default::default()
                },
            )),
        }],
    )
    .await;
}

fn consumer_opts(latest: bool) -> ConsumerOptions {
    let mut properties = BTreeMap::new();
    if latest {
        properties.insert("auto.offset.reset".to_string(), "latest".to_string());
    }
    ConsumerOptions {
        properties,
        auto_commit: false,
        drain_grace: Duration::from_secs(1),
    }
}

/// A group that read the topic, went offline (every member stopped), stayed offline through
/// the switch and the seal, and restarts with an empty cache.
///
/// - `latest`: the group's consumers use `auto.offset.reset=latest`;
/// - `to_topic`: the move goes to this physical topic on the source cluster (a rename) instead
///   of to the other cluster.
async fn offline_group(prefix: &str, latest: bool, to_topic: Option<&str>) {
    let Setup {
        svc,
        endpoint,
        mut adm,
        east,
        west,
        topic: t,
    } = setup(prefix).await;
    let g = fresh("offline");
    let producer = migrating::connect(&endpoint, &format!("{prefix}-writer")).await;

    // 1. The group reads the topic and commits every partition: batches are sent until one
    //    whole batch (every key, so every partition the keys use) was received.
    let mut group = migrating::Group::start_with(
        &endpoint,
        &format!("{prefix}-reader"),
        &g,
        &t,
        1,
        consumer_opts(latest),
    )
    .await;
    let mut seq = 0u64;
    'warm: loop {
        assert!(seq < 30, "the group received no whole batch");
        send_batch(&producer, &t, seq..seq + 1).await;
        let mut keys: HashSet<String> = HashSet::new();
        while let Ok(Some((_, k, s, _))) =
            tokio::time::timeout(Duration::from_secs(3), group.rx.recv()).await
        {
            if s == seq {
                keys.insert(k);
            }
            if keys.len() == KEYS {
                seq += 1;
                break 'warm;
            }
        }
        seq += 1;
    }
    for r in group.stop().await {
        r.expect("consumer task");
    }
    drop(group);

    // 2. A backlog the offline group has not read, on the source (large enough that draining
    //    it, one synchronous commit per record, takes longer than a drain check's period).
    let backlog = send_batch(&producer, &t, seq..seq + BACKLOG).await;
    seq += BACKLOG;
    assert!(backlog.iter().all(|(_, c)| c == "east"));

    // 3. The move, while the group is offline.
    let (to_cluster, expect_cluster) = match to_topic {
        Some(_) => ("east", "east"),
        None => ("west", "west"),
    };
    let m = adm
        .start_migration(StartMigrationRequest {
            topic: t.clone(),
            to_cluster: to_cluster.into(),
            to_topic: to_topic.map(|x| format!("{t}-{x}")).unwrap_or_default(),
            author: "fleet-test".into(),
            ..Default::default()
        })
        .await
        .expect("the migration starts")
        .into_inner();
    let sealed = migrating::migration_until(
        &adm,
        &m.id,
        Duration::from_secs(60),
        "the migration is sealed",
        |m| !m.sealed_offsets.is_empty(),
    )
    .await;
    println!(
        "sealed: {:?} phase {:?}",
        sealed.sealed_offsets,
        phase(&sealed)
    );

    // 4. Records on the destination, and records a producer cut off from the service writes to
    //    the source after the seal (acknowledged by Kafka: late writes).
    let after = send_batch(&producer, &t, seq..seq + 10).await;
    seq += 10;
    assert!(after.iter().all(|(_, c)| c == expect_cluster), "{after:?}");
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &east)
        .create()
        .unwrap();
    let mut late = Vec::new();
    for s in 0..5u64 {
        let key = "late".to_string();
        raw.send(
            FutureRecord::to(&t).key(&key).payload(&payload(&key, s)),
            Duration::from_secs(10),
        )
        .await
        .expect("a late write is acknowledged by the source");
        late.push((key, s));
    }

    // 5. The coordinator knows the offline group from its committed offsets on the source and
    //    does not complete the move without it.
    let waiting = migrating::migration_until(
        &adm,
        &m.id,
        Duration::from_secs(30),
        "the migration waits for the offline group",
        |m| m.groups_draining.contains(&g) || phase(m) == MigrationPhase::Complete,
    )
    .await;
    assert_eq!(
        phase(&waiting),
        MigrationPhase::Drain,
        "the move must not complete while a group with committed offsets on the source is \
         offline: {}",
        switchyard_config::migration::progress_line(&waiting)
    );

    // 6. The group restarts (new process, empty cache): it reads the backlog on the source,
    //    then the destination, each record once, per key in order.
    let mut group = migrating::Group::start_with(
        &endpoint,
        &format!("{prefix}-reader-again"),
        &g,
        &t,
        1,
        consumer_opts(latest),
    )
    .await;
    let expected: HashSet<(String, u64)> = backlog
        .iter()
        .chain(&after)
        .map(|(k, _)| k.clone())
        .chain(late.iter().cloned())
        .collect();
    let got = group.receive_all(&expected, Duration::from_secs(90)).await;
    let mut count: HashMap<(String, u64), usize> = HashMap::new();
    for (_, k, s, _) in &got {
        *count.entry((k.clone(), *s)).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "received twice: {dups:?}");
    let breaks = order_breaks(&got);
    assert!(breaks.is_empty(), "out of order: {breaks:?}");
    // Nothing older than what the group had committed comes again.
    assert!(
        got.iter()
            .all(|(_, k, s, _)| expected.contains(&(k.clone(), *s))),
        "records from before the group's commit were delivered again"
    );

    // 7. The move completes once the group drained.
    let done = migrating::migration_until(
        &adm,
        &m.id,
        Duration::from_secs(60),
        "the migration completes",
        |m| phase(m) == MigrationPhase::Complete,
    )
    .await;
    assert!(!done.forced);
    assert_eq!(done.late_writes, 5);
    for r in group.stop().await {
        r.expect("consumer task");
    }
    let _ = (seq, west);
    drop(producer);
    svc.shutdown().await.unwrap();
}

/// Scenario 1 of the fleet issue: a group offline through the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_offline_through_the_switch_reads_its_source_backlog_then_the_destination() {
    offline_group("offline", false, None).await;
}

/// Scenario 2: the same group on `auto.offset.reset=latest` starts the destination at the
/// move's recorded start, not at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_on_latest_reads_what_was_written_to_the_destination_before_it_joined() {
    offline_group("latest", true, None).await;
}

/// Scenario 4: a move to another topic on the same cluster keeps the order too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_within_one_cluster_keeps_per_key_order() {
    offline_group("rename", false, Some("renamed")).await;
}

/// Scenario 3: a source partition whose records all expired before the group read them
/// (log start = end > 0, nothing committed) does not hold the group on the source forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_partition_whose_records_expired_does_not_stall_the_drain() {
    let Setup {
        svc,
        endpoint,
        adm,
        east,
        west: _,
        topic: t,
    } = setup("expired").await;
    // Records on every partition, then deleted (what retention does to an idle group's data).
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &east)
        .create()
        .unwrap();
    for p in 0..PARTITIONS {
        for s in 0..5u64 {
            let key = format!("gone{p}");
            raw.send(
                FutureRecord::to(&t)
                    .partition(p)
                    .key(&key)
                    .payload(&payload(&key, s)),
                Duration::from_secs(10),
            )
            .await
            .expect("write");
        }
    }
    let ka: KafkaAdmin<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &east)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&t, p, Offset::Offset(5)).unwrap();
    }
    let res = ka
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .expect("delete records");
    for e in res.elements() {
        e.error().expect("records deleted");
    }

    // A live group that has nothing to read on the source.
    let g = fresh("expired-g");
    let mut group =
        migrating::Group::start_with(&endpoint, "expired-reader", &g, &t, 1, consumer_opts(false))
            .await;
    let producer = migrating::connect(&endpoint, "expired-writer").await;
    // The group is in before the move: the service lists it as reading the topic.
    eventually(Duration::from_secs(30), "the group reports", || {
        let mut adm = adm.clone();
        let g = g.clone();
        async move {
            let clients = adm
                .list_clients(switchyard_proto::v1::ListClientsRequest::default())
                .await
                .ok()?
                .into_inner()
                .clients;
            clients
                .iter()
                .filter_map(|c| c.status.as_ref())
                .any(|s| s.consuming.iter().any(|e| e.group == g))
                .then_some(())
        }
    })
    .await;

    let mut adm2 = adm.clone();
    let m = migrating::start_move(&mut adm2, &t, "fleet-test", false).await;
    migrating::migration_until(
        &adm,
        &m.id,
        Duration::from_secs(60),
        "the migration is sealed",
        |m| !m.sealed_offsets.is_empty(),
    )
    .await;
    let after = send_batch(&producer, &t, 1..6).await;
    assert!(after.iter().all(|(_, c)| c == "west"));
    let expected: HashSet<(String, u64)> = after.into_iter().map(|(k, _)| k).collect();
    let got = group.receive_all(&expected, Duration::from_secs(60)).await;
    assert!(order_breaks(&got).is_empty());
    migrating::migration_until(
        &adm,
        &m.id,
        Duration::from_secs(60),
        "the migration completes",
        |m| phase(m) == MigrationPhase::Complete,
    )
    .await;
    for r in group.stop().await {
        r.expect("consumer task");
    }
    drop(producer);
    svc.shutdown().await.unwrap();
}

/// Scenario 1 (a partial restart): one process of a group drains a backlog from the source
/// (slowly, under a consume quota) when another process of the same group restarts with an
/// empty cache. The restarted member must not read the destination while its group still has
/// source records to hand out: per key, the group receives everything in order across both
/// processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_mid_drain_keeps_its_group_s_order() {
    let Setup {
        svc,
        endpoint,
        mut adm,
        east: _,
        west: _,
        topic: t,
    } = setup("partial").await;
    let g = fresh("partial-g");
    let slow_app = "partial-slow-reader";
    // The slow process (its app is `{slow_app}-0`) reads at most 100 records/s.
    consume_quota(&mut adm, &format!("{slow_app}-0"), &t, 100).await;
    let producer = migrating::connect(&endpoint, "partial-writer").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut slow = migrating::Group::start_into(
        &endpoint,
        slow_app,
        &g,
        &t,
        1,
        consumer_opts(false),
        tx.clone(),
    )
    .await;
    // Everything before the move is read once the group is up.
    let warm = send_batch(&producer, &t, 0..1).await;
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < warm.len() {
            let (_, k, s, _) = rx.recv().await.expect("receiving");
            seen.insert((k, s));
        }
    })
    .await
    .expect("the warm-up batch is received");

    // A backlog the slow process has to drain after the switch (about 12 s at its quota).
    let backlog = send_batch(&producer, &t, 1..101).await;
    let m = migrating::start_move(&mut adm, &t, "fleet-test", false).await;
    migrating::migration_until(
        &adm,
        &m.id,
        Duration::from_secs(60),
        "the migration is sealed",
        |m| !m.sealed_offsets.is_empty(),
    )
    .await;
    let after = send_batch(&producer, &t, 101..111).await;
    assert!(after.iter().all(|(_, c)| c == "west"));
    // Another process of the group starts (a deploy, a crash loop), with an empty cache and no
    // quota, while the slow one still drains.
    let mut fresh_member = migrating::Group::start_into(
        &endpoint,
        "partial-fresh-reader",
        &g,
        &t,
        1,
        consumer_opts(false),
        tx.clone(),
    )
    .await;
    drop(tx);
    let expected: HashSet<(String, u64)> = backlog
        .iter()
        .chain(&after)
        .map(|(k, _)| k.clone())
        .collect();
    let mut got: Vec<migrating::Received> = Vec::new();
    let mut have: HashSet<(String, u64)> = HashSet::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while !expected.iter().all(|k| have.contains(k)) {
            let r = rx.recv().await.expect("receiving");
            have.insert((r.1.clone(), r.2));
            got.push(r);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "received {} of {} records",
            expected.iter().filter(|k| have.contains(*k)).count(),
            expected.len()
        )
    });
    let breaks = order_breaks(&got);
    assert!(
        breaks.is_empty(),
        "{} records out of order across the group's processes, e.g. {:?}",
        breaks.len(),
        &breaks[..breaks.len().min(5)]
    );
    let mut count: HashMap<(String, u64), usize> = HashMap::new();
    for (_, k, s, _) in &got {
        *count.entry((k.clone(), *s)).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "received twice: {dups:?}");
    for r in slow
        .stop()
        .await
        .into_iter()
        .chain(fresh_member.stop().await)
    {
        r.expect("consumer task");
    }
    drop(producer);
    svc.shutdown().await.unwrap();
}

/// Scenario 4: a move to another topic on the same cluster, while the group's one process
/// drains a backlog from the old topic slowly (a consume quota): the member that drains the
/// old topic holds the new one until the drain ends, so per key nothing is read out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_within_one_cluster_holds_the_new_topic_while_the_old_one_drains() {
    let Setup {
        svc,
        endpoint,
        mut adm,
        east: _,
        west: _,
        topic: t,
    } = setup("samecluster").await;
    let g = fresh("samecluster-g");
    let app = "samecluster-reader";
    // The reader (its app is `{app}-0`) reads at most 100 records/s.
    consume_quota(&mut adm, &format!("{app}-0"), &t, 100).await;
    let producer = migrating::connect(&endpoint, "samecluster-writer").await;
    // A small fetch queue: the consumer fetches from both topics as it goes, instead of having
    // the old topic's whole backlog queued ahead of the new one's records.
    let mut opts = consumer_opts(false);
    for (k, v) in [
        ("queued.min.messages", "1"),
        ("queued.max.messages.kbytes", "1"),
        ("message.max.bytes", "2000"),
        ("fetch.max.bytes", "2512"),
        ("max.partition.fetch.bytes", "1000"),
        ("fetch.wait.max.ms", "10"),
    ] {
        opts.properties.insert(k.into(), v.into());
    }
    let mut group = migrating::Group::start_with(&endpoint, app, &g, &t, 1, opts).await;
    let warm = send_batch(&producer, &t, 0..1).await;
    let warm: HashSet<(String, u64)> = warm.into_iter().map(|(k, _)| k).collect();
    let mut got = group.receive_all(&warm, Duration::from_secs(60)).await;
    // A backlog of about 4 s at the quota, then the move to another topic on the same cluster.
    let backlog = send_batch(&producer, &t, 1..36).await;
    let m = adm
        .start_migration(StartMigrationRequest {
            topic: t.clone(),
            to_cluster: "east".into(),
            to_topic: format!("{t}-renamed"),
            author: "fleet-test".into(),
            ..Default::default()
        })
        .await
        .expect("the migration starts")
        .into_inner();
    migrating::migration_until(
        &adm,
        &m.id,
        Duration::from_secs(60),
        "the migration is sealed",
        |m| !m.sealed_offsets.is_empty(),
    )
    .await;
    let after = send_batch(&producer, &t, 36..46).await;
    let expected: HashSet<(String, u64)> = backlog
        .iter()
        .chain(&after)
        .map(|(k, _)| k.clone())
        .collect();
    got.extend(group.receive_all(&expected, Duration::from_secs(120)).await);
    let breaks = order_breaks(&got);
    assert!(
        breaks.is_empty(),
        "{} records out of order, e.g. {:?}",
        breaks.len(),
        &breaks[..breaks.len().min(5)]
    );
    for r in group.stop().await {
        r.expect("consumer task");
    }
    drop(producer);
    svc.shutdown().await.unwrap();
}
