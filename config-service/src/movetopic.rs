//! `switchyard move-topic`: moves a logical topic to another cluster under live traffic.
//!
//! Driven from the CLI against a running config service and the two Kafka clusters:
//!
//! 1. **Prepare** — read the source topic (partition count, replication, topic configs set on
//!    it); on the destination create the physical topic with the same partition count and those
//!    configs when it is missing, or check an existing one: same partition count (per-key order
//!    needs it) and empty (consumers start there from the beginning).
//! 2. **Switch** — one compare-and-set write re-routes the topic. Every SDK producer holds new
//!    sends, flushes what is in flight to the source, switches and releases the held sends in
//!    order; every consumer group drains the source (all partitions handed out and committed
//!    by the group) before it reads the destination.
//! 3. **Wait** (`--wait`) — follows the clients' status reports until every producer reports
//!    the destination ("switched") and no consumer group still reads the source ("drained");
//!    records the source's end offsets once producers have switched (the seal) and reports
//!    records written to the source after it.
//!
//! What this is not (yet): a coordinator inside the service that persists the migration's
//! phase, survives a restart and can be aborted — the plan in DESIGN.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use switchyard_proto::client::{AdminClient as Admin, MetadataClient as Meta};
use switchyard_proto::state::{State, normalize_topic};
use switchyard_proto::v1::change::Op;
use switchyard_proto::v1::{
    ApplyRequest, Change, ClientStatus, Cluster, ClusterState, GetSnapshotRequest,
    ListClientsRequest,
};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);

/// Default for how long [`wait`] keeps counting a client that no longer appears in the
/// inventory: longer than the SDK's 10 s report interval, so a service restart (which empties
/// the inventory) cannot make a move look complete before its clients reported again.
pub const MISSING_CLIENT_GRACE: Duration = Duration::from_secs(15);

/// What to move where.
#[derive(Debug, Clone, Default)]
pub struct MoveRequest {
    /// Logical topic.
    pub topic: String,
    /// Destination cluster.
    pub to_cluster: String,
    /// Destination physical topic (default: the current physical name).
    pub to_topic: Option<String>,
    /// Accept a destination with a different partition count (per-key order is then lost).
    pub allow_partition_mismatch: bool,
    /// Accept a destination that already holds records (consumers will read them too).
    pub allow_nonempty_destination: bool,
    /// Check and print the plan; change nothing.
    pub dry_run: bool,
    /// History author and comment.
    pub author: String,
    pub comment: String,
}

/// What [`prepare_and_switch`] did.
#[derive(Debug, Clone)]
pub struct MovePlan {
    pub topic: String,
    pub from_cluster: String,
    pub from_physical: String,
    pub to_cluster: String,
    pub to_physical: String,
    pub partitions: i32,
    /// The destination topic was created (false: it existed).
    pub created: bool,
    /// Topic configs copied from the source.
    pub configs: BTreeMap<String, String>,
    /// The version that re-routes the topic (0 on a dry run).
    pub version: u64,
}

/// One observation of the clients while a move completes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Producer clients of the topic, and those reporting the destination.
    pub producers: usize,
    pub producers_switched: usize,
    /// Consumer groups of the topic, and those no longer reading the source.
    pub groups: BTreeSet<String>,
    pub groups_draining: BTreeSet<String>,
    /// Clients that use the topic but have not applied the move's version yet.
    pub clients_behind: usize,
}

impl Progress {
    /// Every producer switched and every group drained.
    pub fn done(&self) -> bool {
        self.producers_switched == self.producers
            && self.groups_draining.is_empty()
            && self.clients_behind == 0
    }

    /// One status line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "producers switched {}/{} · consumer groups drained {}/{}",
            self.producers_switched,
            self.producers,
            self.groups.len() - self.groups_draining.len(),
            self.groups.len()
        );
        if !self.groups_draining.is_empty() {
            let names: Vec<&str> = self.groups_draining.iter().map(String::as_str).collect();
            s.push_str(&format!(" (draining: {})", names.join(", ")));
        }
        if self.clients_behind > 0 {
            s.push_str(&format!(
                " · {} client(s) not on the new version yet",
                self.clients_behind
            ));
        }
        s
    }
}

type Kafka = Arc<AdminClient<DefaultClientContext>>;

fn kafka_admin(c: &Cluster) -> anyhow::Result<Kafka> {
    let mut cfg = ClientConfig::new();
    for (k, v) in &c.properties {
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", c.bootstrap.join(","));
    cfg.create()
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
async fn end_offsets(a: &Kafka, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let a = a.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        (0..partitions)
            .map(|p| {
                a.inner()
                    .fetch_watermarks(&topic, p, KAFKA_TIMEOUT)
                    .map(|(_, high)| high)
                    .with_context(|| format!("cannot read the end offset of {topic}/{p}"))
            })
            .collect()
    })
    .await?
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

/// Checks the move, creates or checks the destination topic and re-routes the topic with one
/// compare-and-set write.
pub async fn prepare_and_switch(
    admin: &mut Admin,
    meta: &mut Meta,
    req: &MoveRequest,
) -> anyhow::Result<MovePlan> {
    let snap = meta
        .get_snapshot(GetSnapshotRequest {})
        .await
        .context("cannot read the configuration")?
        .into_inner();
    let state = State::from_snapshot(snap);
    let Some(t) = state.topics.get(&req.topic).cloned().map(normalize_topic) else {
        bail!(
            "topic {:?} is not in the configuration (version {})",
            req.topic,
            state.version
        );
    };
    let from = state
        .clusters
        .get(&t.cluster)
        .with_context(|| format!("the topic's cluster {:?} is not configured", t.cluster))?
        .clone();
    let Some(to) = state.clusters.get(&req.to_cluster).cloned() else {
        let known: Vec<&str> = state.clusters.keys().map(String::as_str).collect();
        bail!(
            "cluster {:?} is not configured (known: {})",
            req.to_cluster,
            known.join(", ")
        );
    };
    if to.state == ClusterState::Disabled as i32 {
        bail!("cluster {:?} is disabled", to.name);
    }
    let to_physical = req.to_topic.clone().unwrap_or_else(|| t.physical.clone());
    switchyard_proto::validate::check_topic_name("--to-topic", &to_physical)
        .map_err(|e| anyhow!("{e}"))?;
    if to.name == from.name && to_physical == t.physical {
        bail!(
            "topic {:?} already lives on {}/{}",
            t.name,
            from.name,
            t.physical
        );
    }

    let src = kafka_admin(&from)?;
    let dst = kafka_admin(&to)?;
    let Some((partitions, rf)) = describe(&src, &from.name, &t.physical).await? else {
        bail!(
            "the source topic {} does not exist on cluster {}",
            t.physical,
            from.name
        );
    };
    let configs = topic_configs(&src, &t.physical).await?;
    let existing = describe(&dst, &to.name, &to_physical).await?;
    let mut created = false;
    match existing {
        Some((n, _)) => {
            if n != partitions && !req.allow_partition_mismatch {
                bail!(
                    "{}/{} has {n} partitions and the source {}/{} has {partitions}: per-key order \
                     would not survive the move (use a destination with {partitions} partitions, \
                     or --allow-partition-mismatch to accept that)",
                    to.name,
                    to_physical,
                    from.name,
                    t.physical
                );
            }
            let ends = end_offsets(&dst, &to_physical, n).await?;
            let held: i64 = ends.iter().sum();
            if held > 0 && !req.allow_nonempty_destination {
                bail!(
                    "{}/{} already holds records (end offsets {ends:?}); consumer groups new to it \
                     would read them as part of {:?} (use an empty topic, or \
                     --allow-nonempty-destination)",
                    to.name,
                    to_physical,
                    t.name
                );
            }
        }
        None if req.dry_run => {}
        None => {
            let brokers = {
                let c = dst.clone();
                tokio::task::spawn_blocking(move || {
                    c.inner()
                        .fetch_metadata(None, KAFKA_TIMEOUT)
                        .map(|m| m.brokers().len() as i32)
                })
                .await?
                .with_context(|| format!("cannot read the brokers of cluster {}", to.name))?
            };
            let mut nt = NewTopic::new(
                &to_physical,
                partitions,
                TopicReplication::Fixed(rf.min(brokers.max(1))),
            );
            for (k, v) in &configs {
                nt = nt.set(k, v);
            }
            let res = dst
                .create_topics(
                    &[nt],
                    &AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT)),
                )
                .await
                .with_context(|| format!("cannot create {to_physical} on {}", to.name))?;
            for r in res {
                if let Err((name, code)) = r
                    && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
                {
                    bail!("cannot create {name} on {}: {code}", to.name);
                }
            }
            created = true;
            // Wait until the new topic's partitions are visible with leaders.
            let deadline = Instant::now() + KAFKA_TIMEOUT;
            loop {
                if let Some((n, _)) = describe(&dst, &to.name, &to_physical).await?
                    && n == partitions
                    && end_offsets(&dst, &to_physical, n).await.is_ok()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{to_physical} on {} did not become ready", to.name);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let mut plan = MovePlan {
        topic: t.name.clone(),
        from_cluster: from.name.clone(),
        from_physical: t.physical.clone(),
        to_cluster: to.name.clone(),
        to_physical: to_physical.clone(),
        partitions,
        created,
        configs,
        version: 0,
    };
    let moved = switchyard_proto::v1::Topic {
        cluster: to.name.clone(),
        physical: to_physical,
        ..t.clone()
    };
    let comment = if req.comment.is_empty() {
        format!(
            "move-topic {}: {}/{} -> {}/{}",
            t.name, plan.from_cluster, plan.from_physical, plan.to_cluster, plan.to_physical
        )
    } else {
        req.comment.clone()
    };
    let resp = admin
        .apply(ApplyRequest {
            expected_version: state.version,
            changes: vec![Change {
                op: Some(Op::UpsertTopic(moved)),
            }],
            dry_run: req.dry_run,
            author: req.author.clone(),
            comment,
        })
        .await
        .context("the route change was refused")?
        .into_inner();
    if resp.applied {
        plan.version = resp.version;
    }
    Ok(plan)
}

/// The clients' current reports.
async fn list_clients(admin: &mut Admin) -> anyhow::Result<Vec<ClientStatus>> {
    let l = admin
        .list_clients(ListClientsRequest { app: String::new() })
        .await
        .context("cannot list clients")?
        .into_inner();
    Ok(l.clients.into_iter().filter_map(|c| c.status).collect())
}

/// How far the move of `plan` has got according to these client reports.
pub fn summarise<'a>(clients: impl Iterator<Item = &'a ClientStatus>, plan: &MovePlan) -> Progress {
    let mut p = Progress::default();
    for s in clients {
        let produces: Vec<_> = s
            .producing
            .iter()
            .filter(|e| e.logical_topic == plan.topic)
            .collect();
        let consumes: Vec<_> = s
            .consuming
            .iter()
            .filter(|e| e.logical_topic == plan.topic)
            .collect();
        if produces.is_empty() && consumes.is_empty() {
            continue;
        }
        if s.applied_version < plan.version {
            p.clients_behind += 1;
        }
        if !produces.is_empty() {
            p.producers += 1;
            if produces
                .iter()
                .all(|e| e.cluster == plan.to_cluster && e.physical_topic == plan.to_physical)
            {
                p.producers_switched += 1;
            }
        }
        for e in consumes {
            p.groups.insert(e.group.clone());
            if e.cluster == plan.from_cluster && e.physical_topic == plan.from_physical {
                p.groups_draining.insert(e.group.clone());
            }
        }
    }
    p
}

/// How a completed wait ended.
#[derive(Debug, Clone)]
pub struct Completion {
    pub progress: Progress,
    /// The source's end offsets once every producer had switched.
    pub sealed: Vec<i64>,
    /// Records that reached the source after the seal (a producer cut off from the service).
    pub late_writes: i64,
}

/// Follows the clients until the move of `plan` is complete or `timeout` passes; calls
/// `on_progress` whenever the summary changes. A client missing from the inventory keeps its
/// last report for `missing_grace` (see [`MISSING_CLIENT_GRACE`]).
pub async fn wait(
    admin: &mut Admin,
    meta: &mut Meta,
    plan: &MovePlan,
    timeout: Duration,
    missing_grace: Duration,
    mut on_progress: impl FnMut(&Progress),
) -> anyhow::Result<Completion> {
    let snap = meta.get_snapshot(GetSnapshotRequest {}).await?.into_inner();
    let state = State::from_snapshot(snap);
    let from = state
        .clusters
        .get(&plan.from_cluster)
        .with_context(|| format!("cluster {} is gone", plan.from_cluster))?
        .clone();
    let src = kafka_admin(&from)?;
    let deadline = Instant::now() + timeout;
    let mut last: Option<Progress> = None;
    let mut sealed: Option<Vec<i64>> = None;
    let mut unreachable_since: Option<Instant> = None;
    let mut seen: std::collections::HashMap<String, (ClientStatus, Instant)> =
        std::collections::HashMap::new();
    loop {
        // The config service may restart while a move completes (the route change is already
        // stored): keep asking until the deadline instead of failing on the first refusal.
        let p = match list_clients(admin).await {
            Ok(now) => {
                unreachable_since = None;
                let at = Instant::now();
                for c in now {
                    seen.insert(c.client_id.clone(), (c, at));
                }
                // A client that stops appearing keeps its last report for a while: after a
                // config service restart the inventory is empty until clients report again,
                // and a move must not look complete meanwhile. (A client that died is listed by
                // the service until its lease ends, then for `missing_grace` more here.)
                seen.retain(|_, (_, t)| t.elapsed() < missing_grace);
                summarise(seen.values().map(|(c, _)| c), plan)
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if Instant::now() > deadline {
                    return Err(e.context(format!(
                        "the move did not complete within {timeout:?}; the config service has \
                         not answered for {:.1?}",
                        since.elapsed()
                    )));
                }
                tracing::warn!(error = %format!("{e:#}"), "config service unreachable; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        // The seal: taken before the progress that shows every producer switched is reported.
        if sealed.is_none() && p.producers_switched == p.producers && p.clients_behind == 0 {
            sealed = Some(end_offsets(&src, &plan.from_physical, plan.partitions).await?);
        }
        if last.as_ref() != Some(&p) {
            on_progress(&p);
            last = Some(p.clone());
        }
        if p.done() {
            let sealed = sealed.unwrap_or_default();
            let now = end_offsets(&src, &plan.from_physical, plan.partitions).await?;
            let late_writes = now.iter().zip(&sealed).map(|(n, s)| (n - s).max(0)).sum();
            return Ok(Completion {
                progress: p,
                sealed,
                late_writes,
            });
        }
        if Instant::now() > deadline {
            bail!("the move did not complete within {timeout:?}: {}", p.line());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
