//! The routing view of one configuration version, as seen by one application: which cluster
//! and physical topic each logical topic means, with merged client properties, and the quota
//! limiters of each logical topic (see [`crate::throttle`]).
//!
//! Pure logic, no I/O: property precedence is
//! enforced (service profile) > application code > profile defaults > cluster properties.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use switchyard_proto::state::State;
use switchyard_proto::v1::ClusterState;

use crate::throttle::{Quotas, TopicQuota};

/// A cluster with the properties an application's clients get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    /// Cluster name.
    pub name: String,
    /// Merged client properties, including `bootstrap.servers`.
    pub properties: BTreeMap<String, String>,
    /// Hash of `properties`: equal fingerprints share one Kafka client.
    pub fingerprint: u64,
}

/// Where a logical topic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Logical topic.
    pub logical: String,
    /// Cluster and client properties.
    pub cluster: Arc<ClusterTarget>,
    /// Physical topic.
    pub physical: String,
    /// Declared partition count.
    pub partitions: i32,
}

/// A configuration version compiled for one application.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// Version.
    pub version: u64,
    /// The full configuration.
    pub state: Arc<State>,
    routes: FxHashMap<String, Arc<Route>>,
    by_physical: HashMap<(String, String), String>,
    clusters: HashMap<String, Arc<ClusterTarget>>,
    quotas: Quotas,
}

impl Metadata {
    /// Compiles `state` for `app`, with `app_props` set by the application's code. Quota
    /// limiters start fresh; see [`Metadata::compile_next`].
    pub fn compile(state: Arc<State>, app: &str, app_props: &BTreeMap<String, String>) -> Self {
        Self::compile_inner(state, app, app_props, None)
    }

    /// Compiles the version that follows `prev`: as [`Metadata::compile`], but a logical
    /// topic whose quota is unchanged keeps `prev`'s limiters (and their state).
    pub fn compile_next(
        prev: &Metadata,
        state: Arc<State>,
        app: &str,
        app_props: &BTreeMap<String, String>,
    ) -> Self {
        Self::compile_inner(state, app, app_props, Some(&prev.quotas))
    }

    fn compile_inner(
        state: Arc<State>,
        app: &str,
        app_props: &BTreeMap<String, String>,
        prev_quotas: Option<&Quotas>,
    ) -> Self {
        let profile = state.profiles.get(app);
        let allowed = |t: &str| match profile {
            Some(p) if !p.allowed_topics.is_empty() => {
                p.allowed_topics.iter().any(|a| a == "*" || a == t)
            }
            _ => true,
        };
        let mut clusters: HashMap<&str, Arc<ClusterTarget>> = HashMap::new();
        for c in state.clusters.values() {
            if c.state == ClusterState::Disabled as i32 {
                continue;
            }
            let mut props: BTreeMap<String, String> = c
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(p) = profile {
                props.extend(p.properties.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            props.extend(app_props.iter().map(|(k, v)| (k.clone(), v.clone())));
            if let Some(p) = profile {
                props.extend(p.enforced.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            props.insert("bootstrap.servers".into(), c.bootstrap.join(","));
            let mut h = std::collections::hash_map::DefaultHasher::new();
            c.name.hash(&mut h);
            props.hash(&mut h);
            clusters.insert(
                &c.name,
                Arc::new(ClusterTarget {
                    name: c.name.clone(),
                    properties: props,
                    fingerprint: h.finish(),
                }),
            );
        }
        let mut routes = FxHashMap::default();
        let mut by_physical = HashMap::new();
        for t in state.topics.values() {
            if !allowed(&t.name) {
                continue;
            }
            let Some(cluster) = clusters.get(t.cluster.as_str()) else {
                continue;
            };
            let physical = if t.physical.is_empty() {
                t.name.clone()
            } else {
                t.physical.clone()
            };
            by_physical.insert((t.cluster.clone(), physical.clone()), t.name.clone());
            routes.insert(
                t.name.clone(),
                Arc::new(Route {
                    logical: t.name.clone(),
                    cluster: cluster.clone(),
                    physical,
                    partitions: t.partitions,
                }),
            );
        }
        let quotas = Quotas::compile(
            &state,
            app,
            routes.keys().map(String::as_str),
            prev_quotas,
            &governor::clock::DefaultClock::default(),
        );
        let clusters = clusters
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Self {
            version: state.version,
            state,
            routes,
            by_physical,
            clusters,
            quotas,
        }
    }

    /// The quota in force for a logical topic (for this app), with its limiters.
    pub fn quota(&self, logical: &str) -> Option<&Arc<TopicQuota>> {
        self.quotas.get(logical)
    }

    /// Every quota of this version, by logical topic.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// The route of a logical topic.
    pub fn route(&self, logical: &str) -> Option<&Arc<Route>> {
        self.routes.get(logical)
    }

    /// A configured (not disabled) cluster, with this application's merged client properties.
    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterTarget>> {
        self.clusters.get(name)
    }

    /// Every routed logical topic.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    /// The logical topic a physical topic on a cluster stands for.
    pub fn logical_for(&self, cluster: &str, physical: &str) -> Option<&str> {
        self.by_physical
            .get(&(cluster.to_string(), physical.to_string()))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::v1::{Change, ClientProfile, Cluster, Topic, change::Op};

    #[test]
    fn precedence_enforced_over_app_over_defaults() {
        let mut c = Cluster {
            name: "east".into(),
            bootstrap: vec!["h:1".into()],
            ..Default::default()
        };
        c.properties.insert("linger.ms".into(), "1".into());
        c.properties.insert("acks".into(), "1".into());
        c.properties.insert("compression.type".into(), "lz4".into());
        let mut p = ClientProfile {
            app: "billing".into(),
            allowed_topics: vec!["orders".into()],
            ..Default::default()
        };
        p.properties.insert("linger.ms".into(), "5".into());
        p.enforced.insert("acks".into(), "all".into());
        let s = State::default()
            .apply_changes(&[
                Change {
                    op: Some(Op::UpsertCluster(c)),
                },
                Change {
                    op: Some(Op::UpsertTopic(Topic {
                        name: "orders".into(),
                        cluster: "east".into(),
                        partitions: 3,
                        ..Default::default()
                    })),
                },
                Change {
                    op: Some(Op::UpsertTopic(Topic {
                        name: "secret".into(),
                        cluster: "east".into(),
                        partitions: 3,
                        ..Default::default()
                    })),
                },
                Change {
                    op: Some(Op::UpsertProfile(p)),
                },
            ])
            .unwrap();
        let app: BTreeMap<String, String> = [
            ("acks".to_string(), "0".to_string()),
            ("compression.type".to_string(), "zstd".to_string()),
        ]
        .into();
        let m = Metadata::compile(Arc::new(s), "billing", &app);
        let r = m.route("orders").unwrap();
        assert_eq!(r.cluster.properties["acks"], "all", "enforced wins");
        assert_eq!(
            r.cluster.properties["compression.type"], "zstd",
            "app beats defaults"
        );
        assert_eq!(
            r.cluster.properties["linger.ms"], "5",
            "profile beats cluster"
        );
        assert_eq!(r.cluster.properties["bootstrap.servers"], "h:1");
        assert!(m.route("secret").is_none(), "not in allowed_topics");
        assert_eq!(m.logical_for("east", "orders"), Some("orders"));
    }
}
