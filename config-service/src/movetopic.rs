//! The Kafka side of moving a logical topic to another cluster, used by the migration
//! coordinator ([`crate::migration`]): read the source topic (partition count, replication,
//! topic configs set on it); create the destination with the same partition count and configs
//! when it is missing, or check an existing one (same partition count — per-key order needs it —
//! and empty, so consumer groups new to it read only what the move brings); read end offsets
//! (the destination's start, the source's seal); and summarise what the clients report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use switchyard_proto::state::{State, normalize_topic};
use switchyard_proto::v1::{ClientStatus, Cluster, ClusterState, Migration, Topic};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);

/// The two ends of a move, as the configuration names them.
#[derive(Debug, Clone)]
pub struct Ends {
    /// The logical topic as configured now (on the source).
    pub topic: Topic,
    pub from: Cluster,
    pub to: Cluster,
    pub to_physical: String,
}

/// Why a move cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The request names something that is not configured, or is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The clusters or topics are not in a state that allows the move.
    #[error("{0}")]
    Refused(String),
    /// A cluster could not be reached or answered with an error.
    #[error("{0:#}")]
    Kafka(anyhow::Error),
}

/// Resolves the ends of moving `topic` to `to_cluster` (and `to_topic`, default the current
/// physical name) in `state`.
pub fn ends(
    state: &State,
    topic: &str,
    to_cluster: &str,
    to_topic: &str,
) -> Result<Ends, MoveError> {
    let Some(t) = state.topics.get(topic).cloned().map(normalize_topic) else {
        return Err(MoveError::Invalid(format!(
            "topic {topic:?} is not in the configuration (version {})",
            state.version
        )));
    };
    let from = state.clusters.get(&t.cluster).cloned().ok_or_else(|| {
        MoveError::Invalid(format!(
            "the topic's cluster {:?} is not configured",
            t.cluster
        ))
    })?;
    let Some(to) = state.clusters.get(to_cluster).cloned() else {
        let known: Vec<&str> = state.clusters.keys().map(String::as_str).collect();
        return Err(MoveError::Invalid(format!(
            "cluster {to_cluster:?} is not configured (known: {})",
            known.join(", ")
        )));
    };
    if to.state == ClusterState::Disabled as i32 {
        return Err(MoveError::Refused(format!(
            "cluster {:?} is disabled",
            to.name
        )));
    }
    let to_physical = if to_topic.is_empty() {
        t.physical.clone()
    } else {
        to_topic.to_string()
    };
    switchyard_proto::validate::check_topic_name("to_topic", &to_physical)
        .map_err(|e| MoveError::Invalid(e.to_string()))?;
    if to.name == from.name && to_physical == t.physical {
        return Err(MoveError::Refused(format!(
            "topic {:?} already lives on {}/{}",
            t.name, from.name, t.physical
        )));
    }
    Ok(Ends {
        topic: t,
        from,
        to,
        to_physical,
    })
}

/// What [`prepare`] found or did on the clusters.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub partitions: i32,
    /// The destination topic was created (false: it existed).
    pub created: bool,
    /// Topic configs copied from the source (to a destination this move creates).
    pub configs: BTreeMap<String, String>,
    /// End offsets of the destination now (where groups new to it start).
    pub destination_start: Vec<i64>,
}

/// Reads the source topic and creates (unless `dry_run`) or checks the destination.
pub async fn prepare(
    e: &Ends,
    allow_partition_mismatch: bool,
    allow_nonempty_destination: bool,
    dry_run: bool,
) -> Result<Prepared, MoveError> {
    let src = kafka_admin(&e.from).map_err(MoveError::Kafka)?;
    let dst = kafka_admin(&e.to).map_err(MoveError::Kafka)?;
    let from_physical = &e.topic.physical;
    let to_physical = &e.to_physical;
    let Some((partitions, rf)) = describe(&src, &e.from.name, from_physical)
        .await
        .map_err(MoveError::Kafka)?
    else {
        return Err(MoveError::Refused(format!(
            "the source topic {from_physical} does not exist on cluster {}",
            e.from.name
        )));
    };
    let existing = describe(&dst, &e.to.name, to_physical)
        .await
        .map_err(MoveError::Kafka)?;
    if let Some((n, _)) = existing {
        if n != partitions && !allow_partition_mismatch {
            return Err(MoveError::Refused(format!(
                "{}/{to_physical} has {n} partitions and the source {}/{from_physical} has \
                 {partitions}: per-key order would not survive the move (use a destination \
                 with {partitions} partitions, or allow a partition mismatch to accept that)",
                e.to.name, e.from.name
            )));
        }
        let marks = watermarks(&dst, to_physical, n)
            .await
            .map_err(MoveError::Kafka)?;
        // Records still retained (an aborted migration's leftovers are truncated away).
        let held: i64 = marks.iter().map(|(low, high)| high - low).sum();
        let ends: Vec<i64> = marks.iter().map(|(_, high)| *high).collect();
        if held > 0 && !allow_nonempty_destination {
            return Err(MoveError::Refused(format!(
                "{}/{to_physical} already holds {held} record(s) (end offsets {ends:?}); \
                 consumer groups new to it would read them as part of {:?} (use an empty \
                 topic, or allow a non-empty destination)",
                e.to.name, e.topic.name
            )));
        }
        return Ok(Prepared {
            partitions,
            created: false,
            configs: BTreeMap::new(),
            destination_start: ends,
        });
    }
    // Only a destination this move creates takes the source's topic configs.
    let configs = topic_configs(&src, from_physical)
        .await
        .map_err(MoveError::Kafka)?;
    if dry_run {
        return Ok(Prepared {
            partitions,
            created: false,
            configs,
            destination_start: vec![0; partitions.max(0) as usize],
        });
    }
    create(&dst, &e.to.name, to_physical, partitions, rf, &configs)
        .await
        .map_err(MoveError::Kafka)?;
    let destination_start = end_offsets(&dst, to_physical, partitions)
        .await
        .map_err(MoveError::Kafka)?;
    Ok(Prepared {
        partitions,
        created: true,
        configs,
        destination_start,
    })
}

/// Creates `topic` on `dst` and waits until its partitions have leaders.
async fn create(
    dst: &Kafka,
    cluster: &str,
    topic: &str,
    partitions: i32,
    rf: i32,
    configs: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let brokers = {
        let c = dst.clone();
        tokio::task::spawn_blocking(move || {
            c.inner()
                .fetch_metadata(None, KAFKA_TIMEOUT)
                .map(|m| m.brokers().len() as i32)
        })
        .await?
        .with_context(|| format!("cannot read the brokers of cluster {cluster}"))?
    };
    let mut nt = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(rf.min(brokers.max(1))),
    );
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let res = dst
        .create_topics(
            &[nt],
            &AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT)),
        )
        .await
        .with_context(|| format!("cannot create {topic} on {cluster}"))?;
    for r in res {
        if let Err((name, code)) = r
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            bail!("cannot create {name} on {cluster}: {code}");
        }
    }
    let deadline = Instant::now() + KAFKA_TIMEOUT;
    loop {
        if let Some((n, _)) = describe(dst, cluster, topic).await?
            && n == partitions
            && end_offsets(dst, topic, n).await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{topic} on {cluster} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the clients of a moving topic report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Producer clients of the topic, and those reporting the destination.
    pub producers: usize,
    pub producers_switched: usize,
    /// Producer clients still reporting the source.
    pub producers_waiting: BTreeSet<String>,
    /// Consumer groups of the topic, and those still reading the source.
    pub groups: BTreeSet<String>,
    pub groups_draining: BTreeSet<String>,
    /// Clients that use the topic but have not applied the move's version yet.
    pub clients_behind: usize,
}

/// How far the move `m` has got according to these client reports.
pub fn summarise<'a>(clients: impl Iterator<Item = &'a ClientStatus>, m: &Migration) -> Progress {
    let mut p = Progress::default();
    for s in clients {
        let produces: Vec<_> = s
            .producing
            .iter()
            .filter(|e| e.logical_topic == m.topic)
            .collect();
        let consumes: Vec<_> = s
            .consuming
            .iter()
            .filter(|e| e.logical_topic == m.topic)
            .collect();
        if produces.is_empty() && consumes.is_empty() {
            continue;
        }
        if s.applied_version < m.switch_version {
            p.clients_behind += 1;
        }
        if !produces.is_empty() {
            p.producers += 1;
            if produces
                .iter()
                .all(|e| e.cluster == m.to_cluster && e.physical_topic == m.to_physical)
            {
                p.producers_switched += 1;
            } else {
                p.producers_waiting.insert(s.client_id.clone());
            }
        }
        for e in consumes {
            p.groups.insert(e.group.clone());
            if e.cluster == m.from_cluster && e.physical_topic == m.from_physical {
                p.groups_draining.insert(e.group.clone());
            }
        }
    }
    p
}

/// A Kafka admin client of one cluster.
pub type Kafka = Arc<AdminClient<DefaultClientContext>>;

/// A Kafka client configuration for cluster `c`: its bootstrap and client properties, with
/// `${file:}`/`${env:}` references resolved on this host.
pub fn cluster_config(c: &Cluster) -> anyhow::Result<ClientConfig> {
    let mut cfg = ClientConfig::new();
    for (k, v) in &c.properties {
        let v = crate::properties::resolve_value(v)
            .map_err(|e| anyhow::anyhow!("cluster {} property {k}: {e}", c.name))?;
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", c.bootstrap.join(","));
    Ok(cfg)
}

/// An admin client for cluster `c` (its bootstrap and client properties).
pub fn kafka_admin(c: &Cluster) -> anyhow::Result<Kafka> {
    cluster_config(c)?
        .create()
        .map(Arc::new)
        .with_context(|| format!("cannot create a Kafka admin client for cluster {}", c.name))
}

/// Partition count and replication factor of `topic`, or None when it does not exist.
async fn describe(a: &Kafka, cluster: &str, topic: &str) -> anyhow::Result<Option<(i32, i32)>> {
    let a = a.clone();
    let (topic2, cluster2) = (topic.to_string(), cluster.to_string());
    tokio::task::spawn_blocking(move || {
        let md = a
            .inner()
            .fetch_metadata(Some(&topic2), KAFKA_TIMEOUT)
            .with_context(|| format!("cannot read metadata of {topic2} on cluster {cluster2}"))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic2) else {
            return Ok(None);
        };
        match t.error() {
            None => {}
            Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                return Ok(None);
            }
            Some(e) => bail!("cannot read topic {topic2} on cluster {cluster2}: {e:?}"),
        }
        let rf = t
            .partitions()
            .first()
            .map_or(1, |p| p.replicas().len() as i32);
        Ok(Some((t.partitions().len() as i32, rf.max(1))))
    })
    .await?
}

/// High watermark of every partition of `topic`.
pub async fn end_offsets(a: &Kafka, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    Ok(watermarks(a, topic, partitions)
        .await?
        .into_iter()
        .map(|(_, high)| high)
        .collect())
}

/// (low, high) watermarks of every partition of `topic`.
async fn watermarks(a: &Kafka, topic: &str, partitions: i32) -> anyhow::Result<Vec<(i64, i64)>> {
    let a = a.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        (0..partitions)
            .map(|p| {
                a.inner()
                    .fetch_watermarks(&topic, p, KAFKA_TIMEOUT)
                    .with_context(|| format!("cannot read the offsets of {topic}/{p}"))
            })
            .collect()
    })
    .await?
}

/// Deletes the records of `topic` on cluster `c` before `ends` (per partition): an aborted
/// migration's destination, once its records are copied back, so that the move can be retried
/// and nobody reads them there twice.
pub async fn truncate(c: &Cluster, topic: &str, ends: &[i64]) -> anyhow::Result<()> {
    let a = kafka_admin(c)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, end) in ends.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Offset(*end))
            .with_context(|| format!("bad offset {end} for {topic}/{p}"))?;
    }
    let res = a
        .delete_records(
            &tpl,
            &AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT)),
        )
        .await
        .with_context(|| format!("cannot delete the records of {topic} on {}", c.name))?;
    for e in res.elements() {
        if let Err(err) = e.error() {
            bail!(
                "cannot delete the records of {}/{} on {}: {err}",
                e.topic(),
                e.partition(),
                c.name
            );
        }
    }
    Ok(())
}

/// Topic configs set on `topic` itself (not broker or default values).
async fn topic_configs(a: &Kafka, topic: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let res = a
        .describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(KAFKA_TIMEOUT)),
        )
        .await
        .context("describe configs")?;
    let mut out = BTreeMap::new();
    for r in res {
        let r = r.map_err(|e| anyhow!("cannot read the configs of {topic}: {e:?}"))?;
        for e in r.entries {
            if matches!(e.source, ConfigSource::DynamicTopic)
                && !e.is_sensitive
                && let Some(v) = e.value
            {
                out.insert(e.name, v);
            }
        }
    }
    Ok(out)
}

/// What one [`mirror`] call did.
#[derive(Debug)]
pub struct Mirrored {
    /// Per partition, the source offset copied up to (a failure keeps what was copied before
    /// it, in order).
    pub copied: Vec<i64>,
    /// Per partition, the destination's end after this call: where a restarted copy looks for
    /// records it copied but had not recorded (see `scan_from`).
    pub destination_ends: Vec<i64>,
    /// Why the call stopped short, if it did.
    pub error: Option<anyhow::Error>,
}

/// The source record a copy names in its `switchyard-copied-from` header.
fn origin(cluster: &str, topic: &str, partition: i32, offset: i64) -> String {
    format!("{cluster}/{topic}/{partition}/{offset}")
}

/// Copies the records of `from_topic` at `[start[p], end[p])` on cluster `from` to partition `p`
/// of `to_topic` on cluster `to` (same key, value, headers and timestamp, plus a
/// `switchyard-copied-from` header naming the source record), in order per partition. At most
/// ~10 s of work per call: the rest is left for the next.
///
/// Exactly once across crashes: `scan_from` (given on the first call after the coordinator
/// started, from the destination ends recorded with the last progress) makes it first read the
/// destination from there and skip every source record already copied, which a crash between
/// the copy and the record of its progress would otherwise copy again.
#[allow(clippy::too_many_arguments)]
pub async fn mirror(
    from: &Cluster,
    from_topic: &str,
    to: &Cluster,
    to_topic: &str,
    start: &[i64],
    end: &[i64],
    migration_id: &str,
    scan_from: Option<&[i64]>,
) -> anyhow::Result<Mirrored> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    type Copied = (
        i32,
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Vec<u8>)>,
        Option<i64>,
    );
    let client = |c: &Cluster| -> anyhow::Result<ClientConfig> {
        let mut cfg = cluster_config(c)?;
        cfg.set("group.id", format!("switchyard-copier-{migration_id}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        Ok(cfg)
    };
    let mut start = start.to_vec();
    if let Some(scan) = scan_from {
        let dest: BaseConsumer = client(to)?
            .create()
            .with_context(|| format!("cannot create a consumer for cluster {}", to.name))?;
        let (to_topic2, from_name, from_topic2) = (
            to_topic.to_string(),
            from.name.clone(),
            from_topic.to_string(),
        );
        let (scan, end2) = (scan.to_vec(), end.to_vec());
        let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<i64>> {
            let mut found = vec![-1i64; end2.len()];
            let mut tpl = rdkafka::TopicPartitionList::new();
            let mut until = vec![0i64; end2.len()];
            for (p, from_offset) in scan.iter().enumerate().take(end2.len()) {
                let (_, high) = dest
                    .fetch_watermarks(&to_topic2, p as i32, KAFKA_TIMEOUT)
                    .with_context(|| format!("cannot read the offsets of {to_topic2}/{p}"))?;
                if *from_offset < high {
                    tpl.add_partition_offset(
                        &to_topic2,
                        p as i32,
                        rdkafka::Offset::Offset(*from_offset),
                    )?;
                    until[p] = high;
                }
            }
            if tpl.count() == 0 {
                return Ok(found);
            }
            dest.assign(&tpl)?;
            let mut next: Vec<i64> = scan.clone();
            let deadline = Instant::now() + KAFKA_TIMEOUT * 4;
            while next.iter().zip(&until).any(|(n, u)| n < u) {
                if Instant::now() > deadline {
                    bail!("reading back what was copied to {to_topic2} took too long");
                }
                let Some(r) = dest.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let m = r.with_context(|| format!("reading {to_topic2}"))?;
                let p = m.partition() as usize;
                if p >= next.len() {
                    continue;
                }
                next[p] = m.offset() + 1;
                let prefix = origin(&from_name, &from_topic2, m.partition(), 0);
                let prefix = &prefix[..prefix.len() - 1];
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        if x.key == "switchyard-copied-from"
                            && let Some(o) = x
                                .value
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .and_then(|v| v.strip_prefix(prefix))
                                .and_then(|v| v.parse::<i64>().ok())
                        {
                            found[p] = found[p].max(o);
                        }
                    }
                }
            }
            Ok(found)
        })
        .await??;
        for (s, f) in start.iter_mut().zip(found) {
            *s = (*s).max(f + 1);
        }
    }
    let consumer: BaseConsumer = client(from)?
        .create()
        .with_context(|| format!("cannot create a consumer for cluster {}", from.name))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, (s, e)) in start.iter().zip(end).enumerate() {
        if s < e {
            tpl.add_partition_offset(from_topic, p as i32, rdkafka::Offset::Offset(*s))?;
        }
    }
    let (start2, end2, topic2) = (start.clone(), end.to_vec(), from_topic.to_string());
    let records: Vec<Copied> = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        if tpl.count() == 0 {
            return Ok(Vec::new());
        }
        consumer.assign(&tpl)?;
        let mut next = start2.clone();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while next.iter().zip(&end2).any(|(n, e)| n < e) && Instant::now() < deadline {
            let Some(r) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = r.with_context(|| format!("reading {topic2}"))?;
            let p = m.partition() as usize;
            if p >= end2.len() || m.offset() < next[p] || m.offset() >= end2[p] {
                continue;
            }
            next[p] = m.offset() + 1;
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.partition(),
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                headers,
                m.timestamp().to_millis(),
            ));
        }
        Ok(out)
    })
    .await??;

    let producer: FutureProducer = cluster_config(to)?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .with_context(|| format!("cannot create a producer for cluster {}", to.name))?;
    let mut copied = start.clone();
    // Per partition: no copy of it failed so far (a later one then does not count: order).
    let mut intact = vec![true; start.len()];
    let mut error = None;
    let mut pending = Vec::new();
    for (p, offset, key, payload, headers, ts) in &records {
        let origin = origin(&from.name, from_topic, *p, *offset);
        let mut hs = OwnedHeaders::new_with_capacity(headers.len() + 1);
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        hs = hs.insert(Header {
            key: "switchyard-copied-from",
            value: Some(&origin),
        });
        let mut rec = FutureRecord::<[u8], [u8]>::to(to_topic)
            .partition(*p)
            .headers(hs);
        if let Some(t) = ts {
            rec = rec.timestamp(*t);
        }
        if let Some(k) = key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = payload {
            rec = rec.payload(v.as_slice());
        }
        match producer.send_result(rec) {
            Ok(f) => pending.push((*p, *offset, f)),
            Err((e, _)) => {
                error = Some(anyhow!("cannot copy {origin}: {e}"));
                break;
            }
        }
    }
    for (p, offset, f) in pending {
        let i = p as usize;
        match f.await {
            Ok(Ok(_)) if intact[i] => copied[i] = copied[i].max(offset + 1),
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                intact[i] = false;
                error.get_or_insert(anyhow!("copying {from_topic}/{p}@{offset} failed: {e}"));
            }
            Err(_) => {
                intact[i] = false;
                error.get_or_insert(anyhow!(
                    "copying {from_topic}/{p}@{offset}: the producer went away"
                ));
            }
        }
    }
    let destination_ends = {
        let dest: BaseConsumer = client(to)?
            .create()
            .with_context(|| format!("cannot create a consumer for cluster {}", to.name))?;
        let (to_topic2, n) = (to_topic.to_string(), start.len());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<i64>> {
            (0..n)
                .map(|p| {
                    dest.fetch_watermarks(&to_topic2, p as i32, KAFKA_TIMEOUT)
                        .map(|(_, h)| h)
                        .with_context(|| format!("cannot read the offsets of {to_topic2}/{p}"))
                })
                .collect()
        })
        .await??
    };
    Ok(Mirrored {
        copied,
        destination_ends,
        error,
    })
}

/// Where a consumer group stands on a migration's source, from its committed offsets there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceGroup {
    /// Every partition is drained: the group's committed offset reaches the seal, or nothing
    /// below the seal is left to read (the low-water mark is past it).
    pub drained: bool,
    /// Records below the seal the group has not committed yet, summed over partitions.
    pub behind: i64,
}

/// The consumer groups with committed offsets on `topic` (with the seal `sealed`, one end
/// offset per partition) on cluster `c`, read from the cluster itself (ListGroups, then each
/// group's OffsetFetch), so a group that is offline — no member running, nothing reported to
/// the config service — is found too. `only`: query just these groups (a re-check of the ones
/// still draining) instead of listing them all. Blocking: run it off the async runtime.
/// `Ok(None)`: the cluster cannot list its groups at all (librdkafka's mock cluster, in the
/// zero-install demo); real Kafka always can.
pub fn source_groups(
    c: &Cluster,
    topic: &str,
    sealed: &[i64],
    only: Option<&BTreeSet<String>>,
) -> anyhow::Result<Option<BTreeMap<String, SourceGroup>>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let cfg = cluster_config(c)?;
    let lister: BaseConsumer = cfg
        .create()
        .with_context(|| format!("cannot create a Kafka client for cluster {}", c.name))?;
    let low: Vec<i64> = (0..sealed.len())
        .map(|p| {
            lister
                .fetch_watermarks(topic, p as i32, KAFKA_TIMEOUT)
                .map(|(l, _)| l)
                .with_context(|| format!("cannot read the offsets of {topic}/{p} on {}", c.name))
        })
        .collect::<anyhow::Result<_>>()?;
    let names: Vec<String> = match only {
        Some(g) => g.iter().cloned().collect(),
        None => match lister.fetch_group_list(None, KAFKA_TIMEOUT) {
            Ok(l) => l
                .groups()
                .iter()
                .filter(|g| g.state() != "Dead")
                .map(|g| g.name().to_string())
                .collect(),
            Err(rdkafka::error::KafkaError::GroupListFetch(
                rdkafka::types::RDKafkaErrorCode::UnsupportedFeature,
            )) => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot list the consumer groups of cluster {}", c.name)
                });
            }
        },
    };
    drop(lister);
    let mut tpl = TopicPartitionList::new();
    for p in 0..sealed.len() {
        tpl.add_partition(topic, p as i32);
    }
    let mut out = BTreeMap::new();
    for g in names {
        // A client that names the group but never joins it: OffsetFetch only.
        let reader: BaseConsumer = cfg
            .clone()
            .set("group.id", &g)
            .set("enable.auto.commit", "false")
            .create()
            .with_context(|| format!("cannot create a Kafka client for cluster {}", c.name))?;
        let committed = reader
            .committed_offsets(tpl.clone(), KAFKA_TIMEOUT)
            .with_context(|| format!("cannot read the offsets of group {g} on {}", c.name))?;
        let mut any = false;
        let mut behind = 0;
        for (p, (seal, low)) in sealed.iter().zip(&low).enumerate() {
            let at = match committed
                .find_partition(topic, p as i32)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => {
                    any = true;
                    o
                }
                _ => -1,
            };
            behind += (seal - at.max(*low)).max(0);
        }
        if any {
            out.insert(
                g,
                SourceGroup {
                    drained: behind == 0,
                    behind,
                },
            );
        }
    }
    Ok(Some(out))
}
