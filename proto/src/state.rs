//! The configuration at one version as indexed maps, and the pure operations on it: apply a
//! batch of changes, compute and apply deltas, diff two versions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::secrets;
use crate::v1::{
    Change, ClientProfile, Cluster, ClusterState, Delta, DiffAction, DiffEntry, FieldChange, Quota,
    QuotaKey, QuotaPolicy, Snapshot, Topic, change::Op,
};
use crate::validate::{self, Errors, ValidationError, show};

/// Quotas are keyed by (app or `*`, logical topic or `*`).
pub type QuotaId = (String, String);

/// One version of the configuration, indexed by name. Entities are stored normalized
/// (a topic's `physical` is filled in, enum defaults resolved), so equal content compares equal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Monotonic version; 0 is the empty initial configuration.
    pub version: u64,
    /// When this version was created.
    pub created_unix_ms: i64,
    /// Who made it.
    pub author: String,
    /// Why.
    pub comment: String,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// Logical topics by name.
    pub topics: BTreeMap<String, Topic>,
    /// Quotas by (app, topic).
    pub quotas: BTreeMap<QuotaId, Quota>,
    /// Client profiles by app.
    pub profiles: BTreeMap<String, ClientProfile>,
}

/// Fills in defaults so that equal configurations have equal encodings.
pub fn normalize_cluster(mut c: Cluster) -> Cluster {
    if c.state == ClusterState::Unspecified as i32 {
        c.state = ClusterState::Active as i32;
    }
    c
}

/// Fills in defaults: `physical` defaults to the logical name.
pub fn normalize_topic(mut t: Topic) -> Topic {
    if t.physical.is_empty() {
        t.physical = t.name.clone();
    }
    t
}

/// Fills in defaults: policy defaults to BLOCK.
pub fn normalize_quota(mut q: Quota) -> Quota {
    if q.policy == QuotaPolicy::Unspecified as i32 {
        q.policy = QuotaPolicy::Block as i32;
    }
    q
}

impl State {
    /// Indexes a snapshot. Later duplicates of a name replace earlier ones.
    pub fn from_snapshot(s: Snapshot) -> Self {
        Self {
            version: s.version,
            created_unix_ms: s.created_unix_ms,
            author: s.author,
            comment: s.comment,
            clusters: s
                .clusters
                .into_iter()
                .map(|c| (c.name.clone(), normalize_cluster(c)))
                .collect(),
            topics: s
                .topics
                .into_iter()
                .map(|t| (t.name.clone(), normalize_topic(t)))
                .collect(),
            quotas: s
                .quotas
                .into_iter()
                .map(|q| ((q.app.clone(), q.topic.clone()), normalize_quota(q)))
                .collect(),
            profiles: s.profiles.into_iter().map(|p| (p.app.clone(), p)).collect(),
        }
    }

    /// The snapshot message, entities sorted by name.
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            clusters: self.clusters.values().cloned().collect(),
            topics: self.topics.values().cloned().collect(),
            quotas: self.quotas.values().cloned().collect(),
            profiles: self.profiles.values().cloned().collect(),
            created_unix_ms: self.created_unix_ms,
            author: self.author.clone(),
            comment: self.comment.clone(),
        }
    }

    /// True when both hold the same entities (versions and metadata aside).
    pub fn same_content(&self, other: &State) -> bool {
        self.clusters == other.clusters
            && self.topics == other.topics
            && self.quotas == other.quotas
            && self.profiles == other.profiles
    }

    /// Applies a batch of changes, producing the next content (version and metadata are the
    /// caller's). Rejects malformed changes, deletes of things that do not exist, two changes
    /// to one entity, and a resulting configuration that is inconsistent.
    pub fn apply_changes(&self, changes: &[Change]) -> Result<State, ValidationError> {
        self.apply_changes_touched(changes).map(|(s, _)| s)
    }

    /// [`State::apply_changes`], also returning which entities the batch touched. Validation
    /// is incremental: the touched entities' shapes, and every reference into or out of them
    /// (the rest was valid already), so a one-topic change to a large configuration is cheap.
    pub fn apply_changes_touched(
        &self,
        changes: &[Change],
    ) -> Result<(State, Touched), ValidationError> {
        if changes.is_empty() {
            return Err(ValidationError::one(
                "changes",
                "must contain at least one change",
            ));
        }
        if changes.len() > validate::MAX_CHANGES {
            return Err(ValidationError::one(
                "changes",
                format!(
                    "{} changes in one batch; at most {} allowed",
                    changes.len(),
                    validate::MAX_CHANGES
                ),
            ));
        }
        let mut next = self.clone();
        let mut errs = Errors::default();
        // Checked against the batch's result, so the order of changes within it does not matter.
        let mut deleted_clusters: Vec<(String, String)> = Vec::new();
        let mut touched: HashMap<(u8, String), usize> = HashMap::new();
        let mut touch = |errs: &mut Errors, field: &str, kind: u8, key: String, i: usize| {
            if let Some(prev) = touched.insert((kind, key.clone()), i) {
                errs.push(
                    field,
                    format!(
                        "{} is also changed by changes[{prev}]; change each entity once per batch",
                        show(&key)
                    ),
                );
            }
        };
        for (i, ch) in changes.iter().enumerate() {
            let base = format!("changes[{i}]");
            match &ch.op {
                None => errs.push(&base, "empty change: set one of upsert_cluster, delete_cluster, upsert_topic, delete_topic, upsert_quota, delete_quota, upsert_profile, delete_profile"),
                Some(Op::UpsertCluster(c)) => {
                    let f = format!("{base}.upsert_cluster[{}]", show(&c.name));
                    validate::check_cluster(&mut errs, &f, c);
                    touch(&mut errs, &f, 0, c.name.clone(), i);
                    next.clusters.insert(c.name.clone(), normalize_cluster(c.clone()));
                }
                Some(Op::DeleteCluster(name)) => {
                    let f = format!("{base}.delete_cluster");
                    touch(&mut errs, &f, 0, name.clone(), i);
                    if next.clusters.remove(name).is_none() {
                        errs.push(f, format!("cluster {} does not exist", show(name)));
                    } else {
                        deleted_clusters.push((f, name.clone()));
                    }
                }
                Some(Op::UpsertTopic(t)) => {
                    let f = format!("{base}.upsert_topic[{}]", show(&t.name));
                    validate::check_topic(&mut errs, &f, t);
                    touch(&mut errs, &f, 1, t.name.clone(), i);
                    next.topics.insert(t.name.clone(), normalize_topic(t.clone()));
                }
                Some(Op::DeleteTopic(name)) => {
                    let f = format!("{base}.delete_topic");
                    touch(&mut errs, &f, 1, name.clone(), i);
                    if next.topics.remove(name).is_none() {
                        errs.push(f, format!("logical topic {} does not exist", show(name)));
                    }
                }
                Some(Op::UpsertQuota(q)) => {
                    let f = format!("{base}.upsert_quota[{}, {}]", show(&q.app), show(&q.topic));
                    validate::check_quota(&mut errs, &f, q);
                    touch(&mut errs, &f, 2, format!("{}/{}", q.app, q.topic), i);
                    next.quotas
                        .insert((q.app.clone(), q.topic.clone()), normalize_quota(q.clone()));
                }
                Some(Op::DeleteQuota(k)) => {
                    let f = format!("{base}.delete_quota");
                    touch(&mut errs, &f, 2, format!("{}/{}", k.app, k.topic), i);
                    if next.quotas.remove(&(k.app.clone(), k.topic.clone())).is_none() {
                        errs.push(
                            f,
                            format!("quota for app {} and topic {} does not exist", show(&k.app), show(&k.topic)),
                        );
                    }
                }
                Some(Op::UpsertProfile(p)) => {
                    let f = format!("{base}.upsert_profile[{}]", show(&p.app));
                    validate::check_profile(&mut errs, &f, p);
                    touch(&mut errs, &f, 3, p.app.clone(), i);
                    next.profiles.insert(p.app.clone(), p.clone());
                }
                Some(Op::DeleteProfile(app)) => {
                    let f = format!("{base}.delete_profile");
                    touch(&mut errs, &f, 3, app.clone(), i);
                    if next.profiles.remove(app).is_none() {
                        errs.push(f, format!("profile for app {} does not exist", show(app)));
                    }
                }
            }
        }
        for (f, name) in deleted_clusters {
            let users: Vec<&str> = next
                .topics
                .values()
                .filter(|t| t.cluster == name)
                .map(|t| t.name.as_str())
                .take(11)
                .collect();
            if !users.is_empty() {
                let more = if users.len() > 10 { ", …" } else { "" };
                errs.push(
                    f.clone(),
                    format!(
                        "cluster {} is still referenced by topics: {}{more}; move or delete them first",
                        show(&name),
                        users[..users.len().min(10)].join(", ")
                    ),
                );
            }
            let apps: Vec<&str> = next
                .profiles
                .values()
                .filter(|p| p.credentials.contains_key(&name))
                .map(|p| p.app.as_str())
                .take(10)
                .collect();
            if !apps.is_empty() {
                errs.push(
                    f,
                    format!(
                        "cluster {} still has credentials in the profiles of: {}; remove them first",
                        show(&name),
                        apps.join(", ")
                    ),
                );
            }
        }
        errs.finish()?;
        let touched = Touched::of(changes);
        validate::check_references(&next, &touched)?;
        Ok((next, touched))
    }

    /// [`State::delta_to`] restricted to the touched entities (the others are unchanged).
    pub fn delta_touched(&self, next: &State, t: &Touched) -> Delta {
        self.restrict(t).delta_to(&next.restrict(t))
    }

    /// [`State::diff`] restricted to the touched entities.
    pub fn diff_touched(&self, next: &State, t: &Touched) -> Vec<DiffEntry> {
        self.restrict(t).diff(&next.restrict(t))
    }

    /// This state with only the touched entities (version and metadata kept).
    fn restrict(&self, t: &Touched) -> State {
        fn sub<K: Ord + Clone, V: Clone>(m: &BTreeMap<K, V>, keys: &BTreeSet<K>) -> BTreeMap<K, V> {
            keys.iter()
                .filter_map(|k| m.get(k).map(|v| (k.clone(), v.clone())))
                .collect()
        }
        State {
            version: self.version,
            created_unix_ms: self.created_unix_ms,
            author: self.author.clone(),
            comment: self.comment.clone(),
            clusters: sub(&self.clusters, &t.clusters),
            topics: sub(&self.topics, &t.topics),
            quotas: sub(&self.quotas, &t.quotas),
            profiles: sub(&self.profiles, &t.profiles),
        }
    }

    /// The changes that turn `self` into `target`'s content.
    pub fn changes_to(&self, target: &State) -> Vec<Change> {
        let mut out = Vec::new();
        let op = |op| Change { op: Some(op) };
        for (k, v) in &target.clusters {
            if self.clusters.get(k) != Some(v) {
                out.push(op(Op::UpsertCluster(v.clone())));
            }
        }
        for (k, v) in &target.topics {
            // A topic's `migrating_from` belongs to the migration coordinator: a target that
            // leaves it unset keeps the current one while the route stays the same.
            let mut v = v.clone();
            if let Some(cur) = self.topics.get(k)
                && v.migrating_from.is_none()
                && cur.cluster == v.cluster
                && cur.physical == v.physical
            {
                v.migrating_from.clone_from(&cur.migrating_from);
            }
            if self.topics.get(k) != Some(&v) {
                out.push(op(Op::UpsertTopic(v)));
            }
        }
        for (k, v) in &target.quotas {
            if self.quotas.get(k) != Some(v) {
                out.push(op(Op::UpsertQuota(v.clone())));
            }
        }
        for (k, v) in &target.profiles {
            if self.profiles.get(k) != Some(v) {
                out.push(op(Op::UpsertProfile(v.clone())));
            }
        }
        for k in self
            .profiles
            .keys()
            .filter(|k| !target.profiles.contains_key(*k))
        {
            out.push(op(Op::DeleteProfile(k.clone())));
        }
        for (a, t) in self
            .quotas
            .keys()
            .filter(|k| !target.quotas.contains_key(*k))
        {
            out.push(op(Op::DeleteQuota(QuotaKey {
                app: a.clone(),
                topic: t.clone(),
            })));
        }
        for k in self
            .topics
            .keys()
            .filter(|k| !target.topics.contains_key(*k))
        {
            out.push(op(Op::DeleteTopic(k.clone())));
        }
        for k in self
            .clusters
            .keys()
            .filter(|k| !target.clusters.contains_key(*k))
        {
            out.push(op(Op::DeleteCluster(k.clone())));
        }
        out
    }

    /// The delta from `self` to `next` (which carries the new version and metadata).
    pub fn delta_to(&self, next: &State) -> Delta {
        fn split<K: Ord + Clone, V: PartialEq + Clone>(
            old: &BTreeMap<K, V>,
            new: &BTreeMap<K, V>,
        ) -> (Vec<V>, Vec<K>) {
            let up = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(_, v)| v.clone())
                .collect();
            let rm = old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .cloned()
                .collect();
            (up, rm)
        }
        let (upsert_clusters, remove_clusters) = split(&self.clusters, &next.clusters);
        let (upsert_topics, remove_topics) = split(&self.topics, &next.topics);
        let (upsert_quotas, rq) = split(&self.quotas, &next.quotas);
        let (upsert_profiles, remove_profiles) = split(&self.profiles, &next.profiles);
        Delta {
            from_version: self.version,
            to_version: next.version,
            upsert_clusters,
            remove_clusters,
            upsert_topics,
            remove_topics,
            upsert_quotas,
            remove_quotas: rq
                .into_iter()
                .map(|(app, topic)| QuotaKey { app, topic })
                .collect(),
            upsert_profiles,
            remove_profiles,
            created_unix_ms: next.created_unix_ms,
            author: next.author.clone(),
            comment: next.comment.clone(),
        }
    }

    /// Applies a delta computed by [`State::delta_to`]. Fails if the delta does not start at
    /// this version.
    pub fn apply_delta(&self, d: &Delta) -> Result<State, DeltaMismatch> {
        let mut s = self.clone();
        s.apply_delta_mut(d)?;
        Ok(s)
    }

    /// [`State::apply_delta`] in place; on error `self` is unchanged.
    pub fn apply_delta_mut(&mut self, d: &Delta) -> Result<(), DeltaMismatch> {
        if d.from_version != self.version || d.to_version <= d.from_version {
            return Err(DeltaMismatch {
                have: self.version,
                from: d.from_version,
                to: d.to_version,
            });
        }
        let s = self;
        s.version = d.to_version;
        s.created_unix_ms = d.created_unix_ms;
        s.author = d.author.clone();
        s.comment = d.comment.clone();
        for c in &d.upsert_clusters {
            s.clusters
                .insert(c.name.clone(), normalize_cluster(c.clone()));
        }
        for k in &d.remove_clusters {
            s.clusters.remove(k);
        }
        for t in &d.upsert_topics {
            s.topics.insert(t.name.clone(), normalize_topic(t.clone()));
        }
        for k in &d.remove_topics {
            s.topics.remove(k);
        }
        for q in &d.upsert_quotas {
            s.quotas
                .insert((q.app.clone(), q.topic.clone()), normalize_quota(q.clone()));
        }
        for k in &d.remove_quotas {
            s.quotas.remove(&(k.app.clone(), k.topic.clone()));
        }
        for p in &d.upsert_profiles {
            s.profiles.insert(p.app.clone(), p.clone());
        }
        for k in &d.remove_profiles {
            s.profiles.remove(k);
        }
        Ok(())
    }

    /// The field-level diff that `d` makes to `self`, without copying the whole state. Secret
    /// property values are redacted (see [`crate::secrets`]).
    pub fn diff_delta(&self, d: &Delta) -> Vec<DiffEntry> {
        let mut out = self.diff_delta_revealing(d);
        secrets::redact_diff(&mut out);
        out
    }

    /// [`State::diff_delta`] with secret values shown (for an admin who asked for them).
    pub fn diff_delta_revealing(&self, d: &Delta) -> Vec<DiffEntry> {
        fn sub<K: Ord + Clone, V: Clone>(
            m: &BTreeMap<K, V>,
            keys: impl Iterator<Item = K>,
        ) -> BTreeMap<K, V> {
            keys.filter_map(|k| m.get(&k).map(|v| (k, v.clone())))
                .collect()
        }
        let mut old = State::default();
        let mut new = State::default();
        old.clusters = sub(
            &self.clusters,
            d.upsert_clusters
                .iter()
                .map(|c| c.name.clone())
                .chain(d.remove_clusters.iter().cloned()),
        );
        old.topics = sub(
            &self.topics,
            d.upsert_topics
                .iter()
                .map(|t| t.name.clone())
                .chain(d.remove_topics.iter().cloned()),
        );
        old.quotas = sub(
            &self.quotas,
            d.upsert_quotas
                .iter()
                .map(|q| (q.app.clone(), q.topic.clone()))
                .chain(
                    d.remove_quotas
                        .iter()
                        .map(|k| (k.app.clone(), k.topic.clone())),
                ),
        );
        old.profiles = sub(
            &self.profiles,
            d.upsert_profiles
                .iter()
                .map(|p| p.app.clone())
                .chain(d.remove_profiles.iter().cloned()),
        );
        new.clusters = d
            .upsert_clusters
            .iter()
            .map(|c| (c.name.clone(), normalize_cluster(c.clone())))
            .collect();
        new.topics = d
            .upsert_topics
            .iter()
            .map(|t| (t.name.clone(), normalize_topic(t.clone())))
            .collect();
        new.quotas = d
            .upsert_quotas
            .iter()
            .map(|q| ((q.app.clone(), q.topic.clone()), normalize_quota(q.clone())))
            .collect();
        new.profiles = d
            .upsert_profiles
            .iter()
            .map(|p| (p.app.clone(), p.clone()))
            .collect();
        old.diff_revealing(&new)
    }

    /// A human-readable, field-level diff from `self` to `next`. Secret property values are
    /// redacted (see [`crate::secrets`]): a changed secret shows as changed, without its value.
    pub fn diff(&self, next: &State) -> Vec<DiffEntry> {
        let mut out = self.diff_revealing(next);
        secrets::redact_diff(&mut out);
        out
    }

    /// [`State::diff`] with secret values shown.
    fn diff_revealing(&self, next: &State) -> Vec<DiffEntry> {
        let mut out = Vec::new();
        diff_maps(
            &mut out,
            "cluster",
            &self.clusters,
            &next.clusters,
            |k| k.clone(),
            flat_cluster,
        );
        diff_maps(
            &mut out,
            "topic",
            &self.topics,
            &next.topics,
            |k| k.clone(),
            flat_topic,
        );
        diff_maps(
            &mut out,
            "quota",
            &self.quotas,
            &next.quotas,
            |(a, t)| format!("{a}/{t}"),
            flat_quota,
        );
        diff_maps(
            &mut out,
            "profile",
            &self.profiles,
            &next.profiles,
            |k| k.clone(),
            flat_profile,
        );
        out
    }
}

/// Keys of the entities a batch of changes touched (upserted or deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Cluster names.
    pub clusters: BTreeSet<String>,
    /// Logical topic names.
    pub topics: BTreeSet<String>,
    /// Quota keys.
    pub quotas: BTreeSet<QuotaId>,
    /// Profile apps.
    pub profiles: BTreeSet<String>,
}

impl Touched {
    /// The keys `changes` touch.
    pub fn of(changes: &[Change]) -> Self {
        let mut t = Touched::default();
        for c in changes {
            match &c.op {
                Some(Op::UpsertCluster(x)) => {
                    t.clusters.insert(x.name.clone());
                }
                Some(Op::DeleteCluster(n)) => {
                    t.clusters.insert(n.clone());
                }
                Some(Op::UpsertTopic(x)) => {
                    t.topics.insert(x.name.clone());
                }
                Some(Op::DeleteTopic(n)) => {
                    t.topics.insert(n.clone());
                }
                Some(Op::UpsertQuota(q)) => {
                    t.quotas.insert((q.app.clone(), q.topic.clone()));
                }
                Some(Op::DeleteQuota(k)) => {
                    t.quotas.insert((k.app.clone(), k.topic.clone()));
                }
                Some(Op::UpsertProfile(p)) => {
                    t.profiles.insert(p.app.clone());
                }
                Some(Op::DeleteProfile(a)) => {
                    t.profiles.insert(a.clone());
                }
                None => {}
            }
        }
        t
    }
}

/// A delta that does not follow the version it is applied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delta {from}→{to} does not apply to version {have}")]
pub struct DeltaMismatch {
    /// The version held.
    pub have: u64,
    /// The delta's base.
    pub from: u64,
    /// The delta's result.
    pub to: u64,
}

fn diff_maps<K: Ord, V: PartialEq>(
    out: &mut Vec<DiffEntry>,
    kind: &str,
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    name: impl Fn(&K) -> String,
    flat: impl Fn(&V) -> BTreeMap<String, String>,
) {
    let keys: BTreeSet<&K> = old.keys().chain(new.keys()).collect();
    for k in keys {
        let (action, a, b) = match (old.get(k), new.get(k)) {
            (None, Some(b)) => (DiffAction::Added, BTreeMap::new(), flat(b)),
            (Some(a), None) => (DiffAction::Removed, flat(a), BTreeMap::new()),
            (Some(a), Some(b)) if a != b => (DiffAction::Changed, flat(a), flat(b)),
            _ => continue,
        };
        let fields: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let fields = fields
            .into_iter()
            .filter(|f| a.get(*f) != b.get(*f))
            .map(|f| FieldChange {
                field: f.clone(),
                old_value: a.get(f).cloned().unwrap_or_default(),
                new_value: b.get(f).cloned().unwrap_or_default(),
            })
            .collect();
        out.push(DiffEntry {
            kind: kind.to_string(),
            name: name(k),
            action: action as i32,
            fields,
        });
    }
}

fn put_map(m: &mut BTreeMap<String, String>, prefix: &str, src: &HashMap<String, String>) {
    for (k, v) in src {
        m.insert(format!("{prefix}.{k}"), v.clone());
    }
}

fn flat_cluster(c: &Cluster) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("bootstrap".into(), c.bootstrap.join(","));
    m.insert(
        "state".into(),
        ClusterState::try_from(c.state)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("CLUSTER_STATE_")
                    .to_string()
            })
            .unwrap_or_else(|_| c.state.to_string()),
    );
    put_map(&mut m, "properties", &c.properties);
    put_map(&mut m, "labels", &c.labels);
    m
}

fn flat_topic(t: &Topic) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("cluster".into(), t.cluster.clone());
    m.insert("physical".into(), t.physical.clone());
    m.insert("partitions".into(), t.partitions.to_string());
    if !t.owner.is_empty() {
        m.insert("owner".into(), t.owner.clone());
    }
    if !t.quota_refs.is_empty() {
        m.insert("quota_refs".into(), t.quota_refs.join(","));
    }
    m
}

fn flat_quota(q: &Quota) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("produce_msgs_per_sec", q.produce_msgs_per_sec),
        ("produce_bytes_per_sec", q.produce_bytes_per_sec),
        ("consume_msgs_per_sec", q.consume_msgs_per_sec),
        ("burst", q.burst),
    ] {
        if v != 0 {
            m.insert(k.into(), v.to_string());
        }
    }
    m.insert(
        "policy".into(),
        QuotaPolicy::try_from(q.policy)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("QUOTA_POLICY_")
                    .to_string()
            })
            .unwrap_or_else(|_| q.policy.to_string()),
    );
    m
}

fn flat_profile(p: &ClientProfile) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    put_map(&mut m, "properties", &p.properties);
    put_map(&mut m, "enforced", &p.enforced);
    if !p.allowed_topics.is_empty() {
        m.insert("allowed_topics".into(), p.allowed_topics.join(","));
    }
    for (cluster, c) in &p.credentials {
        for (k, v) in &c.properties {
            m.insert(format!("credentials[{cluster}].{k}"), v.clone());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str) -> Change {
        Change {
            op: Some(Op::UpsertCluster(Cluster {
                name: name.into(),
                bootstrap: vec!["127.0.0.1:9092".into()],
                ..Default::default()
            })),
        }
    }
    fn topic(name: &str, cluster: &str) -> Change {
        Change {
            op: Some(Op::UpsertTopic(Topic {
                name: name.into(),
                cluster: cluster.into(),
                partitions: 3,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn apply_delta_and_diff_round_trip() {
        let s0 = State::default();
        let mut s1 = s0
            .apply_changes(&[cluster("east"), cluster("west"), topic("orders", "east")])
            .unwrap();
        s1.version = 1;
        let e = s1
            .apply_changes(&[Change {
                op: Some(Op::DeleteCluster("east".into())),
            }])
            .unwrap_err();
        assert!(e.to_string().contains("still referenced"), "{e}");
        let mut s2 = s1
            .apply_changes(&[topic("orders", "west"), topic("payments", "east")])
            .unwrap();
        s2.version = 2;
        assert_eq!(s2.topics["orders"].physical, "orders");
        let d = s1.delta_to(&s2);
        assert_eq!(d.upsert_topics.len(), 2);
        assert_eq!(s1.apply_delta(&d).unwrap(), s2);
        assert!(s0.apply_delta(&d).is_err());
        let diff = s1.diff(&s2);
        assert_eq!(diff.len(), 2);
        assert_eq!(s1.diff_delta(&d), diff);
        assert_eq!(diff[0].fields[0].field, "cluster");
        let back = s2.changes_to(&s1);
        let mut s3 = s2.apply_changes(&back).unwrap();
        s3.version = 1;
        assert!(s3.same_content(&s1));
    }

    /// Incremental validation gives the same verdict as validating the whole result.
    #[test]
    fn incremental_validation_matches_full_validation() {
        use crate::v1::{ClientProfile, Quota};
        let mut base = State::default()
            .apply_changes(&[
                cluster("east"),
                cluster("west"),
                topic("orders", "east"),
                topic("payments", "west"),
                Change {
                    op: Some(Op::UpsertQuota(Quota {
                        app: "*".into(),
                        topic: "orders".into(),
                        produce_msgs_per_sec: 10,
                        ..Default::default()
                    })),
                },
                Change {
                    op: Some(Op::UpsertProfile(ClientProfile {
                        app: "billing".into(),
                        allowed_topics: vec!["payments".into()],
                        ..Default::default()
                    })),
                },
            ])
            .unwrap();
        base.version = 1;
        let disabled = |name: &str| Change {
            op: Some(Op::UpsertCluster(Cluster {
                name: name.into(),
                bootstrap: vec!["127.0.0.1:9092".into()],
                state: ClusterState::Disabled as i32,
                ..Default::default()
            })),
        };
        let phys = |name: &str, physical: &str| Change {
            op: Some(Op::UpsertTopic(Topic {
                name: name.into(),
                cluster: "east".into(),
                physical: physical.into(),
                partitions: 1,
                ..Default::default()
            })),
        };
        let del = |op: Op| Change { op: Some(op) };
        let cases: Vec<Vec<Change>> = vec![
            vec![topic("new", "east")],
            vec![topic("new", "nowhere")],
            vec![phys("dup", "orders")],
            vec![phys("dup2", "ord_ers"), phys("dup3", "ord.ers")],
            vec![disabled("east")],
            vec![disabled("east"), topic("orders", "west")],
            vec![del(Op::DeleteTopic("orders".into()))],
            vec![
                del(Op::DeleteTopic("orders".into())),
                del(Op::DeleteQuota(QuotaKey {
                    app: "*".into(),
                    topic: "orders".into(),
                })),
            ],
            vec![del(Op::DeleteTopic("payments".into()))],
            vec![del(Op::DeleteCluster("west".into()))],
            vec![
                del(Op::DeleteCluster("west".into())),
                topic("payments", "east"),
            ],
            vec![topic("orders", "west"), topic("payments", "east")],
            // Large batches use the indexed clash check.
            (0..12)
                .map(|i| topic(&format!("bulk{i}"), "east"))
                .collect(),
            (0..12)
                .map(|i| topic(&format!("bulk{i}"), "east"))
                .chain([phys("clash", "bulk.3")])
                .collect(),
            (0..12)
                .map(|i| topic(&format!("bulk{i}"), "east"))
                .chain([phys("clash", "orders")])
                .collect(),
        ];
        for (i, c) in cases.iter().enumerate() {
            let incremental = base.apply_changes(c).is_ok();
            // Full validation of the same result, computed without the incremental checks.
            let mut next = base.clone();
            for ch in c {
                match ch.op.clone().unwrap() {
                    Op::UpsertCluster(x) => {
                        next.clusters.insert(x.name.clone(), normalize_cluster(x));
                    }
                    Op::DeleteCluster(n) => {
                        next.clusters.remove(&n);
                    }
                    Op::UpsertTopic(x) => {
                        next.topics.insert(x.name.clone(), normalize_topic(x));
                    }
                    Op::DeleteTopic(n) => {
                        next.topics.remove(&n);
                    }
                    Op::DeleteQuota(k) => {
                        next.quotas.remove(&(k.app, k.topic));
                    }
                    _ => unreachable!(),
                }
            }
            let full = validate::check_state(&next).is_ok();
            assert_eq!(incremental, full, "case {i}: {c:?}");
        }
    }

    #[test]
    fn rejects_double_change_and_missing_delete() {
        let e = State::default()
            .apply_changes(&[cluster("a"), cluster("a")])
            .unwrap_err();
        assert!(e.to_string().contains("changes[1]"), "{e}");
        let e = State::default()
            .apply_changes(&[Change {
                op: Some(Op::DeleteTopic("nope".into())),
            }])
            .unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
