//! Validation rules for configuration entities: what a snapshot may contain.
//!
//! Every rule reports the field path and the offending value, so an operator who fat-fingers a
//! change reads exactly what to fix.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::state::{State, Touched};
use crate::v1::{ClientProfile, Cluster, ClusterState, Quota, QuotaPolicy, Topic};

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Longest cluster or application name.
pub const MAX_NAME_LEN: usize = 128;
/// Most partitions a topic may declare.
pub const MAX_PARTITIONS: i32 = 100_000;
/// Most properties or labels in one map.
pub const MAX_MAP_ENTRIES: usize = 256;
/// Longest property key.
pub const MAX_PROPERTY_KEY_LEN: usize = 128;
/// Longest property or label value.
pub const MAX_VALUE_LEN: usize = 8192;
/// Most bootstrap servers per cluster.
pub const MAX_BOOTSTRAP: usize = 64;
/// Largest rate or burst a quota may name.
pub const MAX_RATE: u64 = 1_000_000_000_000;
/// Most changes in one batch.
pub const MAX_CHANGES: usize = 200_000;
/// Longest author or comment.
pub const MAX_COMMENT_LEN: usize = 4096;

/// Properties that name where a client connects; a cluster's `bootstrap` field owns them.
const CLUSTER_FORBIDDEN: &[&str] = &["bootstrap.servers", "metadata.broker.list", "group.id"];
/// Prefixes and keys an application profile may not set: connection and security settings are
/// the cluster's.
const PROFILE_FORBIDDEN_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "security.protocol",
];
const PROFILE_FORBIDDEN_PREFIXES: &[&str] = &["sasl.", "ssl."];

/// One validation failure: the field path and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `topics["orders"].partitions`.
    pub field: String,
    /// What is wrong, quoting the value.
    pub message: String,
}

impl FieldError {
    /// A failure of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All failures found in one request or snapshot (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError(pub Vec<FieldError>);

impl ValidationError {
    /// A single failure.
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![FieldError::new(field, message)])
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 10;
        for (i, e) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "; and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Collects failures while walking a structure.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records `r`'s failure, if any.
    pub fn check(&mut self, r: Result<(), FieldError>) {
        if let Err(e) = r {
            self.0.push(e);
        }
    }
    /// Records a failure.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }
    /// `Ok` when nothing failed.
    pub fn finish(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError(self.0))
        }
    }
    /// True when nothing failed so far.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Shows a user value in a message, truncated and escaped.
pub fn show(v: &str) -> String {
    const MAX: usize = 80;
    let mut s: String = v.chars().take(MAX).collect();
    if v.chars().count() > MAX {
        s.push('…');
    }
    format!("{s:?}")
}

fn legal_name_chars(name: &str) -> Option<char> {
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
}

/// Kafka's topic-name rules: 1..=249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn check_topic_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "{} is {} characters long; Kafka topic names are at most {MAX_TOPIC_NAME_LEN}",
                show(name),
                name.len()
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(FieldError::new(
            field,
            format!("{} is not a legal Kafka topic name", show(name)),
        ));
    }
    if let Some(c) = legal_name_chars(name) {
        return Err(FieldError::new(
            field,
            format!(
                "{} contains {c:?}; Kafka topic names allow only ASCII letters, digits, '.', '_' and '-'",
                show(name)
            ),
        ));
    }
    Ok(())
}

/// Cluster and application names: 1..=128 of `[a-zA-Z0-9._-]`.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "{} is {} characters long; at most {MAX_NAME_LEN} allowed",
                show(name),
                name.len()
            ),
        ));
    }
    if let Some(c) = legal_name_chars(name) {
        return Err(FieldError::new(
            field,
            format!(
                "{} contains {c:?}; allowed are ASCII letters, digits, '.', '_' and '-'",
                show(name)
            ),
        ));
    }
    Ok(())
}

/// A `host:port` bootstrap address (`[v6addr]:port` for IPv6).
pub fn check_host_port(field: &str, addr: &str) -> Result<(), FieldError> {
    let bad = |why: &str| {
        Err(FieldError::new(
            field,
            format!("{} is not host:port ({why})", show(addr)),
        ))
    };
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) => {
                if h.parse::<std::net::Ipv6Addr>().is_err() {
                    return bad("bracketed host is not an IPv6 address");
                }
                (h, p)
            }
            None => return bad("missing \"]:port\""),
        }
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => return bad("missing \":port\""),
        }
    };
    if host.is_empty() {
        return bad("empty host");
    }
    if !addr.starts_with('[') {
        if host.contains(':') {
            return bad("IPv6 addresses must be bracketed");
        }
        if host.len() > 253
            || host.starts_with('-')
            || host.starts_with('.')
            || host.ends_with('-')
            || host.contains("..")
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        {
            return bad("invalid host name");
        }
    }
    match port.parse::<u16>() {
        Ok(0) => bad("port 0"),
        Ok(_) => Ok(()),
        Err(_) => bad("port must be a number 1-65535"),
    }
}

/// Property keys look like Kafka's: lower-case words joined by '.', '_' or '-'.
pub fn check_property_key(field: &str, key: &str) -> Result<(), FieldError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_PROPERTY_KEY_LEN
        && key.split(['.', '_', '-']).all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "property key {} is malformed; expected lower-case words joined by '.', '_' or '-' (like \"compression.type\"), at most {MAX_PROPERTY_KEY_LEN} characters",
                show(key)
            ),
        ))
    }
}

fn check_value(field: &str, value: &str) -> Result<(), FieldError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "value is {} bytes long; at most {MAX_VALUE_LEN} allowed",
                value.len()
            ),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            format!("value {} contains a control character", show(value)),
        ));
    }
    Ok(())
}

fn check_properties(
    errs: &mut Errors,
    field: &str,
    props: &HashMap<String, String>,
    forbidden_keys: &[&str],
    forbidden_prefixes: &[&str],
    why: &str,
) {
    if props.len() > MAX_MAP_ENTRIES {
        errs.push(
            field,
            format!(
                "has {} entries; at most {MAX_MAP_ENTRIES} allowed",
                props.len()
            ),
        );
        return;
    }
    let sorted: BTreeMap<_, _> = props.iter().collect();
    for (k, v) in sorted {
        let f = format!("{field}[{k:?}]");
        errs.check(check_property_key(&f, k));
        if crate::secrets::is_secret_key(k) {
            // Never echo a secret value in an error message.
            if check_value(&f, v).is_err() {
                errs.push(
                    &f,
                    format!(
                        "secret value is longer than {MAX_VALUE_LEN} bytes or contains a control character"
                    ),
                );
            } else if v == crate::secrets::REDACTED {
                errs.push(
                    &f,
                    format!(
                        "is the placeholder {} from redacted output, not the secret; export with `switchyard get --show-secrets` or set the real value",
                        crate::secrets::REDACTED
                    ),
                );
            }
        } else {
            errs.check(check_value(&f, v));
        }
        if forbidden_keys.contains(&k.as_str())
            || forbidden_prefixes.iter().any(|p| k.starts_with(p))
        {
            errs.push(&f, format!("{} may not be set here: {why}", show(k)));
        }
        if crate::secrets::has_reference(v)
            && let Err(e) = crate::secrets::references(v)
        {
            errs.push(&f, format!("malformed reference: {e}"));
        }
    }
}

/// What a profile's per-cluster credentials may set: the principal's security settings.
fn is_credential_key(k: &str) -> bool {
    k == "security.protocol" || k.starts_with("sasl.") || k.starts_with("ssl.")
}

fn check_labels(errs: &mut Errors, field: &str, labels: &HashMap<String, String>) {
    if labels.len() > MAX_MAP_ENTRIES {
        errs.push(
            field,
            format!(
                "has {} entries; at most {MAX_MAP_ENTRIES} allowed",
                labels.len()
            ),
        );
        return;
    }
    let sorted: BTreeMap<_, _> = labels.iter().collect();
    for (k, v) in sorted {
        let f = format!("{field}[{k:?}]");
        if k.is_empty()
            || k.len() > 63
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        {
            errs.push(
                &f,
                format!(
                    "label key {} must be 1-63 of ASCII letters, digits, '.', '_', '-', '/'",
                    show(k)
                ),
            );
        }
        errs.check(check_value(&f, v));
    }
}

/// Shape of one cluster, independent of the rest of the snapshot.
pub fn check_cluster(errs: &mut Errors, field: &str, c: &Cluster) {
    errs.check(check_name(&format!("{field}.name"), &c.name));
    if c.bootstrap.is_empty() {
        errs.push(
            format!("{field}.bootstrap"),
            "must list at least one host:port",
        );
    } else if c.bootstrap.len() > MAX_BOOTSTRAP {
        errs.push(
            format!("{field}.bootstrap"),
            format!(
                "has {} entries; at most {MAX_BOOTSTRAP} allowed",
                c.bootstrap.len()
            ),
        );
    }
    for (i, b) in c.bootstrap.iter().enumerate() {
        errs.check(check_host_port(&format!("{field}.bootstrap[{i}]"), b));
    }
    check_properties(
        errs,
        &format!("{field}.properties"),
        &c.properties,
        CLUSTER_FORBIDDEN,
        &[],
        "connection addresses go in `bootstrap`, group ids belong to consumers",
    );
    check_labels(errs, &format!("{field}.labels"), &c.labels);
    if ClusterState::try_from(c.state).is_err() {
        errs.push(
            format!("{field}.state"),
            format!("unknown cluster state {}", c.state),
        );
    }
}

/// Shape of one topic, independent of the rest of the snapshot.
pub fn check_topic(errs: &mut Errors, field: &str, t: &Topic) {
    errs.check(check_topic_name(&format!("{field}.name"), &t.name));
    errs.check(check_name(&format!("{field}.cluster"), &t.cluster));
    if !t.physical.is_empty() {
        errs.check(check_topic_name(&format!("{field}.physical"), &t.physical));
    }
    if t.partitions <= 0 || t.partitions > MAX_PARTITIONS {
        errs.push(
            format!("{field}.partitions"),
            format!(
                "must be between 1 and {MAX_PARTITIONS}, got {}",
                t.partitions
            ),
        );
    }
    if !t.owner.is_empty() {
        errs.check(check_name(&format!("{field}.owner"), &t.owner));
    }
    if t.quota_refs.len() > MAX_MAP_ENTRIES {
        errs.push(format!("{field}.quota_refs"), "too many entries");
    }
    if let Some(m) = &t.migrating_from {
        errs.check(check_name(
            &format!("{field}.migrating_from.cluster"),
            &m.cluster,
        ));
        errs.check(check_topic_name(
            &format!("{field}.migrating_from.physical"),
            &m.physical,
        ));
        if m.destination_start_offsets.iter().any(|o| *o < 0) {
            errs.push(
                format!("{field}.migrating_from.destination_start_offsets"),
                "offsets must not be negative",
            );
        }
        if m.sealed_offsets.iter().any(|o| *o < 0) {
            errs.push(
                format!("{field}.migrating_from.sealed_offsets"),
                "offsets must not be negative",
            );
        }
    }
}

/// Shape of one quota key.
pub fn check_quota_key(errs: &mut Errors, field: &str, app: &str, topic: &str) {
    if app != "*" {
        errs.check(check_name(&format!("{field}.app"), app).map_err(|mut e| {
            e.message.push_str(" (or \"*\" for every app)");
            e
        }));
    }
    if topic != "*" {
        errs.check(
            check_topic_name(&format!("{field}.topic"), topic).map_err(|mut e| {
                e.message.push_str(" (or \"*\" for every topic)");
                e
            }),
        );
    }
}

/// Shape of one quota.
pub fn check_quota(errs: &mut Errors, field: &str, q: &Quota) {
    check_quota_key(errs, field, &q.app, &q.topic);
    let rates = [
        ("produce_msgs_per_sec", q.produce_msgs_per_sec),
        ("produce_bytes_per_sec", q.produce_bytes_per_sec),
        ("consume_msgs_per_sec", q.consume_msgs_per_sec),
        ("burst", q.burst),
    ];
    for (name, v) in rates {
        if v > MAX_RATE {
            errs.push(
                format!("{field}.{name}"),
                format!("{v} is larger than {MAX_RATE}"),
            );
        }
    }
    if q.produce_msgs_per_sec == 0 && q.produce_bytes_per_sec == 0 && q.consume_msgs_per_sec == 0 {
        errs.push(
            field,
            "sets no limit; give produce_msgs_per_sec, produce_bytes_per_sec or consume_msgs_per_sec a positive value",
        );
    }
    if QuotaPolicy::try_from(q.policy).is_err() {
        errs.push(
            format!("{field}.policy"),
            format!("unknown quota policy {}", q.policy),
        );
    }
}

/// Shape of one client profile.
pub fn check_profile(errs: &mut Errors, field: &str, p: &ClientProfile) {
    errs.check(check_name(&format!("{field}.app"), &p.app));
    let why = "connection and security settings come from the cluster";
    check_properties(
        errs,
        &format!("{field}.properties"),
        &p.properties,
        PROFILE_FORBIDDEN_KEYS,
        PROFILE_FORBIDDEN_PREFIXES,
        why,
    );
    check_properties(
        errs,
        &format!("{field}.enforced"),
        &p.enforced,
        PROFILE_FORBIDDEN_KEYS,
        PROFILE_FORBIDDEN_PREFIXES,
        why,
    );
    if p.credentials.len() > MAX_MAP_ENTRIES {
        errs.push(
            format!("{field}.credentials"),
            format!(
                "has {} clusters; at most {MAX_MAP_ENTRIES} allowed",
                p.credentials.len()
            ),
        );
    }
    let creds: BTreeMap<_, _> = p.credentials.iter().collect();
    for (cluster, c) in creds {
        let f = format!("{field}.credentials[{cluster:?}]");
        errs.check(check_name(&f, cluster));
        check_properties(errs, &f, &c.properties, &[], &[], "");
        let mut keys: Vec<_> = c.properties.keys().collect();
        keys.sort();
        for k in keys {
            if !is_credential_key(k) {
                errs.push(
                    format!("{f}[{k:?}]"),
                    format!(
                        "{} may not be set here: an app's credentials hold only security.protocol, sasl.* and ssl.* properties (other settings go in the profile's properties)",
                        show(k)
                    ),
                );
            }
        }
    }
    if p.allowed_topics.len() > MAX_CHANGES {
        errs.push(format!("{field}.allowed_topics"), "too many entries");
    }
    for (i, t) in p.allowed_topics.iter().enumerate() {
        if t != "*" {
            errs.check(check_topic_name(&format!("{field}.allowed_topics[{i}]"), t));
        }
    }
}

/// Author and comment of a change.
pub fn check_meta(errs: &mut Errors, author: &str, comment: &str) {
    for (f, v) in [("author", author), ("comment", comment)] {
        if v.len() > MAX_COMMENT_LEN {
            errs.push(
                f,
                format!(
                    "is {} bytes long; at most {MAX_COMMENT_LEN} allowed",
                    v.len()
                ),
            );
        }
    }
}

/// A whole snapshot: every entity's shape plus references between them.
pub fn check_state(state: &State) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    for (name, c) in &state.clusters {
        check_cluster(&mut errs, &format!("clusters[{name:?}]"), c);
    }
    let mut physical: HashMap<(&str, String), &str> = HashMap::new();
    let mut by_cluster: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, t) in &state.topics {
        let field = format!("topics[{name:?}]");
        check_topic(&mut errs, &field, t);
        match state.clusters.get(&t.cluster) {
            None => errs.push(
                format!("{field}.cluster"),
                format!("cluster {} does not exist", show(&t.cluster)),
            ),
            Some(c) => {
                if c.state == ClusterState::Disabled as i32 {
                    by_cluster.entry(&c.name).or_default().push(name);
                }
            }
        }
        // Kafka treats '.' and '_' as colliding in topic names.
        let phys = if t.physical.is_empty() {
            &t.name
        } else {
            &t.physical
        };
        let norm = phys.replace('.', "_");
        if let Some(other) = physical.insert((t.cluster.as_str(), norm), name) {
            errs.push(
                format!("{field}.physical"),
                format!(
                    "physical topic {} on cluster {} is already used by logical topic {} (Kafka treats '.' and '_' alike)",
                    show(phys),
                    show(&t.cluster),
                    show(other)
                ),
            );
        }
    }
    for (cluster, topics) in by_cluster {
        errs.push(
            format!("clusters[{cluster:?}].state"),
            format!(
                "cluster is DISABLED but topics route to it: {}",
                topics.join(", ")
            ),
        );
    }
    for ((app, topic), q) in &state.quotas {
        let field = format!("quotas[{app:?}, {topic:?}]");
        check_quota(&mut errs, &field, q);
        if topic != "*" && !state.topics.contains_key(topic) {
            errs.push(
                format!("{field}.topic"),
                format!("logical topic {} does not exist", show(topic)),
            );
        }
    }
    for (app, p) in &state.profiles {
        let field = format!("profiles[{app:?}]");
        check_profile(&mut errs, &field, p);
        for (i, t) in p.allowed_topics.iter().enumerate() {
            if t != "*" && !state.topics.contains_key(t) {
                errs.push(
                    format!("{field}.allowed_topics[{i}]"),
                    format!("logical topic {} does not exist", show(t)),
                );
            }
        }
        check_credential_clusters(&mut errs, state, app, p);
    }
    errs.finish()
}

/// Each cluster a profile has credentials for exists.
fn check_credential_clusters(errs: &mut Errors, state: &State, app: &str, p: &ClientProfile) {
    let mut names: Vec<&String> = p.credentials.keys().collect();
    names.sort();
    for c in names {
        if !state.clusters.contains_key(c) {
            errs.push(
                format!("profiles[{app:?}].credentials[{c:?}]"),
                format!("cluster {} does not exist", show(c)),
            );
        }
    }
}

fn same_physical(a: &str, b: &str) -> bool {
    let norm = |c: char| if c == '.' { '_' } else { c };
    a.len() == b.len() && a.chars().map(norm).eq(b.chars().map(norm))
}

/// References into and out of the entities a batch touched, assuming everything else was
/// already valid (shapes of touched entities are checked where the changes are applied).
/// Together they give the same verdict as [`check_state`] on the whole result.
pub fn check_references(state: &State, touched: &Touched) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    // A few touched topics: scan for physical-name clashes. Many: index every topic once.
    type Index<'a> = HashMap<(&'a str, String), Vec<&'a str>>;
    let index: Option<Index<'_>> = (touched.topics.len() > 8).then(|| {
        let mut ix: Index<'_> = HashMap::new();
        for o in state.topics.values() {
            let p = if o.physical.is_empty() {
                &o.name
            } else {
                &o.physical
            };
            ix.entry((o.cluster.as_str(), p.replace('.', "_")))
                .or_default()
                .push(o.name.as_str());
        }
        ix
    });
    for name in &touched.topics {
        let field = format!("topics[{name:?}]");
        let Some(t) = state.topics.get(name) else {
            // Deleted: nothing may refer to it.
            for ((app, topic), _) in state.quotas.iter().filter(|((_, t), _)| t == name) {
                errs.push(
                    format!("quotas[{app:?}, {topic:?}].topic"),
                    format!(
                        "logical topic {} is deleted but this quota refers to it",
                        show(name)
                    ),
                );
            }
            for (app, p) in &state.profiles {
                if p.allowed_topics.iter().any(|a| a == name) {
                    errs.push(
                        format!("profiles[{app:?}].allowed_topics"),
                        format!(
                            "logical topic {} is deleted but this profile allows it",
                            show(name)
                        ),
                    );
                }
            }
            continue;
        };
        match state.clusters.get(&t.cluster) {
            None => errs.push(
                format!("{field}.cluster"),
                format!("cluster {} does not exist", show(&t.cluster)),
            ),
            Some(c) if c.state == ClusterState::Disabled as i32 => errs.push(
                format!("{field}.cluster"),
                format!("cluster {} is DISABLED", show(&t.cluster)),
            ),
            Some(_) => {}
        }
        let phys = if t.physical.is_empty() {
            &t.name
        } else {
            &t.physical
        };
        let clash = match &index {
            Some(ix) => ix
                .get(&(t.cluster.as_str(), phys.replace('.', "_")))
                .and_then(|names| names.iter().find(|n| **n != t.name.as_str()))
                .copied(),
            None => state
                .topics
                .values()
                .find(|o| {
                    let op = if o.physical.is_empty() {
                        &o.name
                    } else {
                        &o.physical
                    };
                    o.name != t.name && o.cluster == t.cluster && same_physical(phys, op)
                })
                .map(|o| o.name.as_str()),
        };
        if let Some(other) = clash {
            errs.push(
                format!("{field}.physical"),
                format!(
                    "physical topic {} on cluster {} is already used by logical topic {} (Kafka treats '.' and '_' alike)",
                    show(phys),
                    show(&t.cluster),
                    show(other)
                ),
            );
        }
    }
    for name in &touched.clusters {
        // Deleted clusters are checked where the batch is applied, naming the change.
        let Some(c) = state.clusters.get(name) else {
            continue;
        };
        if c.state == ClusterState::Disabled as i32 {
            let users: Vec<&str> = state
                .topics
                .values()
                .filter(|t| &t.cluster == name && !touched.topics.contains(&t.name))
                .map(|t| t.name.as_str())
                .take(10)
                .collect();
            if !users.is_empty() {
                errs.push(
                    format!("clusters[{name:?}].state"),
                    format!(
                        "cluster is DISABLED but topics route to it: {}",
                        users.join(", ")
                    ),
                );
            }
        }
    }
    for key @ (app, topic) in &touched.quotas {
        if state.quotas.contains_key(key) && topic != "*" && !state.topics.contains_key(topic) {
            errs.push(
                format!("quotas[{app:?}, {topic:?}].topic"),
                format!("logical topic {} does not exist", show(topic)),
            );
        }
    }
    for app in &touched.profiles {
        if let Some(p) = state.profiles.get(app) {
            for (i, t) in p.allowed_topics.iter().enumerate() {
                if t != "*" && !state.topics.contains_key(t) {
                    errs.push(
                        format!("profiles[{app:?}].allowed_topics[{i}]"),
                        format!("logical topic {} does not exist", show(t)),
                    );
                }
            }
            check_credential_clusters(&mut errs, state, app, p);
        }
    }
    errs.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        assert!(check_topic_name("f", "orders.v1_x-2").is_ok());
        assert!(check_topic_name("f", "").is_err());
        assert!(check_topic_name("f", ".").is_err());
        assert!(check_topic_name("f", "..").is_err());
        assert!(check_topic_name("f", "a b").is_err());
        assert!(check_topic_name("f", &"a".repeat(249)).is_ok());
        assert!(check_topic_name("f", &"a".repeat(250)).is_err());
        let e = check_topic_name("topics[0].name", "or/ders").unwrap_err();
        assert_eq!(e.field, "topics[0].name");
        assert!(e.message.contains("\"or/ders\""), "{e}");
    }

    #[test]
    fn host_port() {
        for ok in [
            "127.0.0.1:9092",
            "kafka-1.example.com:9093",
            "[::1]:9092",
            "k_1:1",
        ] {
            assert!(check_host_port("f", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "host",
            "host:",
            ":9092",
            "host:0",
            "host:65536",
            "host:abc",
            "::1:9092",
            "[::1]9092",
            "[zz]:1",
            "a..b:1",
            "-a:1",
            "h st:1",
        ] {
            assert!(check_host_port("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn property_keys() {
        for ok in [
            "compression.type",
            "linger.ms",
            "queue.buffering.max-kbytes",
            "a1",
        ] {
            assert!(check_property_key("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Compression.type", "a..b", ".a", "a.", "a b", "a=b"] {
            assert!(check_property_key("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_hold_security_settings_of_existing_clusters_only() {
        use crate::v1::ClusterCredentials;
        let mut st = State::default();
        st.clusters.insert(
            "east".into(),
            Cluster {
                name: "east".into(),
                bootstrap: vec!["127.0.0.1:9092".into()],
                ..Default::default()
            },
        );
        let creds = |c: &str, k: &str, v: &str| {
            HashMap::from([(
                c.to_string(),
                ClusterCredentials {
                    properties: HashMap::from([(k.to_string(), v.to_string())]),
                },
            )])
        };
        let with = |credentials| {
            let mut s = st.clone();
            s.profiles.insert(
                "a".into(),
                ClientProfile {
                    app: "a".into(),
                    credentials,
                    ..Default::default()
                },
            );
            check_state(&s)
        };
        assert!(with(creds("east", "sasl.password", "${env:PW}")).is_ok());
        let e = with(creds("west", "sasl.username", "a"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("credentials[\"west\"]") && e.contains("does not exist"),
            "{e}"
        );
        let e = with(creds("east", "linger.ms", "5"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("only security.protocol, sasl.* and ssl.*"),
            "{e}"
        );
        let e = with(creds("east", "sasl.password", "${file:relative/pw}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("malformed reference") && e.contains("absolute path"),
            "{e}"
        );
    }
}
