//! The declarative desired-state file (`switchyard apply -f`), in YAML or JSON.
//!
//! ```yaml
//! clusters:
//!   - name: east
//!     bootstrap: ["127.0.0.1:9092"]
//!     properties: { compression.type: lz4 }
//!     labels: { region: eu-west-1 }
//!     state: active            # active | draining | disabled
//! topics:
//!   - name: orders
//!     cluster: east
//!     physical: orders         # defaults to name
//!     partitions: 6
//!     owner: billing
//! quotas:
//!   - app: "*"                 # or an app name
//!     topic: orders            # or "*"
//!     produce_msgs_per_sec: 5000
//!     produce_bytes_per_sec: 5000000
//!     consume_msgs_per_sec: 0  # 0 = unlimited
//!     burst: 500
//!     policy: block            # block | reject
//! profiles:
//!   - app: billing
//!     properties: { linger.ms: 5 }
//!     enforced: { acks: all }
//!     allowed_topics: [orders]
//!     credentials:             # this app's own principal, per cluster
//!       east:
//!         sasl.username: billing
//!         sasl.password: ${file:/etc/switchyard/billing-east.password}
//! ```
//! Property values may hold `${file:/ABSOLUTE/PATH}` and `${env:NAME}` references, resolved by
//! the config service when it serves a client (see [`crate::secrets`]).
//! Unknown keys are errors, so a typo never silently drops a setting.

use std::collections::{BTreeMap, HashMap};

use crate::state::{QuotaId, State, normalize_cluster, normalize_quota, normalize_topic};
use crate::v1::{ClientProfile, Cluster, ClusterState, Quota, QuotaPolicy, Topic};
use serde::{Deserialize, Deserializer, Serialize};

/// The whole desired configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "FileForm")]
pub struct DesiredState {
    /// Clusters.
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
    /// Logical topics.
    #[serde(default)]
    pub topics: Vec<TopicSpec>,
    /// Quotas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaSpec>,
    /// Per-app client profiles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<ProfileSpec>,
}

/// The file as read: the desired state, plus the metadata that `switchyard get snapshot` prints
/// next to it (accepted and ignored, so that output can be applied as is). Any other key is an
/// error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    clusters: Vec<ClusterSpec>,
    #[serde(default)]
    topics: Vec<TopicSpec>,
    #[serde(default)]
    quotas: Vec<QuotaSpec>,
    #[serde(default)]
    profiles: Vec<ProfileSpec>,
    #[serde(default, rename = "version")]
    _version: Option<u64>,
    #[serde(default, rename = "author")]
    _author: Option<String>,
    #[serde(default, rename = "comment")]
    _comment: Option<String>,
    #[serde(default, rename = "created_unix_ms")]
    _created_unix_ms: Option<i64>,
}

impl From<FileForm> for DesiredState {
    fn from(f: FileForm) -> Self {
        Self {
            clusters: f.clusters,
            topics: f.topics,
            quotas: f.quotas,
            profiles: f.profiles,
        }
    }
}

/// Cluster lifecycle in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateSpec {
    /// Serving.
    #[default]
    Active,
    /// Being emptied.
    Draining,
    /// No topic may route here.
    Disabled,
}

/// A cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Name.
    pub name: String,
    /// `host:port` list.
    pub bootstrap: Vec<String>,
    /// Client properties.
    #[serde(
        default,
        deserialize_with = "props",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub properties: BTreeMap<String, String>,
    /// Labels.
    #[serde(
        default,
        deserialize_with = "props",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Lifecycle.
    #[serde(default)]
    pub state: StateSpec,
}

/// A logical topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Logical name.
    pub name: String,
    /// Cluster it lives on.
    pub cluster: String,
    /// Physical name; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<String>,
    /// Partition count.
    pub partitions: i32,
    /// Owning app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Quota policy in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySpec {
    /// Wait for capacity.
    #[default]
    Block,
    /// Fail fast.
    Reject,
}

/// A quota.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// App or `*`.
    pub app: String,
    /// Logical topic or `*`.
    pub topic: String,
    /// Messages per second produced; 0 = unlimited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub produce_msgs_per_sec: u64,
    /// Bytes per second produced; 0 = unlimited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub produce_bytes_per_sec: u64,
    /// Messages per second consumed; 0 = unlimited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consume_msgs_per_sec: u64,
    /// Burst in messages; 0 = one second's worth.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub burst: u64,
    /// What a send over the limit does.
    #[serde(default)]
    pub policy: PolicySpec,
}

/// A client profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// App name.
    pub app: String,
    /// Defaults the app may override.
    #[serde(
        default,
        deserialize_with = "props",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub properties: BTreeMap<String, String>,
    /// Settings the app cannot override.
    #[serde(
        default,
        deserialize_with = "props",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub enforced: BTreeMap<String, String>,
    /// Topics the app may use; empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_topics: Vec<String>,
    /// The app's own security properties per cluster (its principal).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, CredentialsSpec>,
}

/// One app's security properties for one cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CredentialsSpec(#[serde(deserialize_with = "props")] pub BTreeMap<String, String>);

/// A desired-state file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DesiredError(pub String);

macro_rules! bail {
    ($($t:tt)*) => { return Err(DesiredError(format!($($t)*))) };
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Property maps accept scalar values (`linger.ms: 5`, `enable.idempotence: true`) as strings.
fn props<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    let m = Option::<BTreeMap<String, Scalar>>::deserialize(d)?.unwrap_or_default();
    Ok(m.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::U(u) => u.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

impl DesiredState {
    /// Parses YAML (JSON is valid YAML), naming the location of any error.
    pub fn parse(text: &str) -> Result<Self, DesiredError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| DesiredError(e.to_string()))
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<Self, DesiredError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DesiredError(format!("could not read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| {
            DesiredError(format!(
                "{} is not a valid desired-state file: {e}",
                path.display()
            ))
        })
    }

    /// The configuration content this file describes (version 0; the server validates it).
    /// Rejects a name given twice.
    pub fn to_state(&self) -> Result<State, DesiredError> {
        let mut s = State::default();
        for (i, c) in self.clusters.iter().enumerate() {
            let cluster = normalize_cluster(Cluster {
                name: c.name.clone(),
                bootstrap: c.bootstrap.clone(),
                properties: to_hash(&c.properties),
                labels: to_hash(&c.labels),
                state: match c.state {
                    StateSpec::Active => ClusterState::Active,
                    StateSpec::Draining => ClusterState::Draining,
                    StateSpec::Disabled => ClusterState::Disabled,
                } as i32,
            });
            if s.clusters.insert(c.name.clone(), cluster).is_some() {
                bail!("clusters[{i}]: cluster {:?} is listed twice", c.name);
            }
        }
        for (i, t) in self.topics.iter().enumerate() {
            let topic = normalize_topic(Topic {
                name: t.name.clone(),
                cluster: t.cluster.clone(),
                physical: t.physical.clone().unwrap_or_default(),
                partitions: t.partitions,
                owner: t.owner.clone().unwrap_or_default(),
                quota_refs: Vec::new(),
                migrating_from: None,
            });
            if s.topics.insert(t.name.clone(), topic).is_some() {
                bail!("topics[{i}]: topic {:?} is listed twice", t.name);
            }
        }
        for (i, q) in self.quotas.iter().enumerate() {
            let key: QuotaId = (q.app.clone(), q.topic.clone());
            let quota = normalize_quota(Quota {
                app: q.app.clone(),
                topic: q.topic.clone(),
                produce_msgs_per_sec: q.produce_msgs_per_sec,
                produce_bytes_per_sec: q.produce_bytes_per_sec,
                consume_msgs_per_sec: q.consume_msgs_per_sec,
                burst: q.burst,
                policy: match q.policy {
                    PolicySpec::Block => QuotaPolicy::Block,
                    PolicySpec::Reject => QuotaPolicy::Reject,
                } as i32,
            });
            if s.quotas.insert(key, quota).is_some() {
                bail!(
                    "quotas[{i}]: quota for app {:?} and topic {:?} is listed twice",
                    q.app,
                    q.topic
                );
            }
        }
        for (i, p) in self.profiles.iter().enumerate() {
            let profile = ClientProfile {
                app: p.app.clone(),
                properties: to_hash(&p.properties),
                enforced: to_hash(&p.enforced),
                allowed_topics: p.allowed_topics.clone(),
                credentials: p
                    .credentials
                    .iter()
                    .map(|(c, v)| {
                        (
                            c.clone(),
                            crate::v1::ClusterCredentials {
                                properties: to_hash(&v.0),
                            },
                        )
                    })
                    .collect(),
            };
            if s.profiles.insert(p.app.clone(), profile).is_some() {
                bail!("profiles[{i}]: profile for app {:?} is listed twice", p.app);
            }
        }
        Ok(s)
    }

    /// The desired-state form of a configuration (round-trips through [`DesiredState::to_state`]).
    pub fn from_state(s: &State) -> Self {
        Self {
            clusters: s
                .clusters
                .values()
                .map(|c| ClusterSpec {
                    name: c.name.clone(),
                    bootstrap: c.bootstrap.clone(),
                    properties: c.properties.clone().into_iter().collect(),
                    labels: c.labels.clone().into_iter().collect(),
                    state: match ClusterState::try_from(c.state) {
                        Ok(ClusterState::Draining) => StateSpec::Draining,
                        Ok(ClusterState::Disabled) => StateSpec::Disabled,
                        _ => StateSpec::Active,
                    },
                })
                .collect(),
            topics: s
                .topics
                .values()
                .map(|t| TopicSpec {
                    name: t.name.clone(),
                    cluster: t.cluster.clone(),
                    physical: (t.physical != t.name).then(|| t.physical.clone()),
                    partitions: t.partitions,
                    owner: (!t.owner.is_empty()).then(|| t.owner.clone()),
                })
                .collect(),
            quotas: s
                .quotas
                .values()
                .map(|q| QuotaSpec {
                    app: q.app.clone(),
                    topic: q.topic.clone(),
                    produce_msgs_per_sec: q.produce_msgs_per_sec,
                    produce_bytes_per_sec: q.produce_bytes_per_sec,
                    consume_msgs_per_sec: q.consume_msgs_per_sec,
                    burst: q.burst,
                    policy: if q.policy == QuotaPolicy::Reject as i32 {
                        PolicySpec::Reject
                    } else {
                        PolicySpec::Block
                    },
                })
                .collect(),
            profiles: s
                .profiles
                .values()
                .map(|p| ProfileSpec {
                    app: p.app.clone(),
                    properties: p.properties.clone().into_iter().collect(),
                    enforced: p.enforced.clone().into_iter().collect(),
                    allowed_topics: p.allowed_topics.clone(),
                    credentials: p
                        .credentials
                        .iter()
                        .map(|(c, v)| {
                            (
                                c.clone(),
                                CredentialsSpec(v.properties.clone().into_iter().collect()),
                            )
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

fn to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_round_trips() {
        let text = r#"
clusters:
  - name: east
    bootstrap: ["127.0.0.1:9092"]
    properties: { compression.type: lz4, linger.ms: 5, enable.idempotence: true }
topics:
  - name: orders
    cluster: east
    physical: orders
    partitions: 6
quotas:
  - { app: "*", topic: orders, produce_msgs_per_sec: 100, policy: reject }
"#;
        let d = DesiredState::parse(text).unwrap();
        let s = d.to_state().unwrap();
        assert_eq!(s.clusters["east"].properties["linger.ms"], "5");
        assert_eq!(s.clusters["east"].properties["enable.idempotence"], "true");
        assert_eq!(s.topics["orders"].partitions, 6);
        let back = DesiredState::from_state(&s).to_state().unwrap();
        assert!(back.same_content(&s));
    }

    #[test]
    fn typos_and_duplicates_are_errors() {
        let e = DesiredState::parse("topics:\n  - name: a\n    cluster: x\n    partitons: 3\n")
            .unwrap_err();
        assert!(e.to_string().contains("partitons"), "{e}");
        let d = DesiredState::parse(
            "clusters:\n  - {name: a, bootstrap: [\"h:1\"]}\n  - {name: a, bootstrap: [\"h:1\"]}\n",
        )
        .unwrap();
        assert!(
            d.to_state()
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
    }
}
