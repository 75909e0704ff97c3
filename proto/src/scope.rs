//! The part of a configuration one application may see.
//!
//! For app `A`, [`scoped`] keeps, at the same version:
//! - the profile of `A` only (none if `A` has no profile);
//! - the logical topics `A` may use: its profile's `allowed_topics` (`*` or empty = all, the
//!   meaning the SDK gives them);
//! - the clusters those topics route to, including a migrating topic's source
//!   (`migrating_from.cluster`, which the SDK reads during a migration), with their secret
//!   properties and `A`'s own credentials for each laid over them (the profile's
//!   `credentials`, which the scoped profile then no longer lists) — and no other cluster;
//! - the quotas whose app is `A` or `*` and whose topic is `*` or one of those topics.
//!
//! A scoped state passes [`crate::validate::check_state`] whenever the full one does.

use std::collections::BTreeSet;

use crate::state::State;

/// True when `app`'s profile (if any) lets it use logical topic `topic`.
pub fn allows(s: &State, app: &str, topic: &str) -> bool {
    match s.profiles.get(app) {
        Some(p) if !p.allowed_topics.is_empty() => {
            p.allowed_topics.iter().any(|a| a == "*" || a == topic)
        }
        _ => true,
    }
}

/// The part of `s` that `app` may see (see the module docs).
pub fn scoped(s: &State, app: &str) -> State {
    let topics: std::collections::BTreeMap<_, _> = s
        .topics
        .iter()
        .filter(|(name, _)| allows(s, app, name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    for t in topics.values() {
        wanted.insert(&t.cluster);
        if let Some(m) = &t.migrating_from {
            wanted.insert(&m.cluster);
        }
    }
    let profile = s.profiles.get(app);
    let clusters = s
        .clusters
        .iter()
        .filter(|(name, _)| wanted.contains(name.as_str()))
        .map(|(k, v)| (k.clone(), crate::secrets::with_credentials(v, profile)))
        .collect();
    let quotas = s
        .quotas
        .iter()
        .filter(|((qa, qt), _)| (qa == app || qa == "*") && (qt == "*" || topics.contains_key(qt)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let profiles = profile
        .map(|p| {
            let mut p = p.clone();
            p.credentials.clear();
            (app.to_string(), p)
        })
        .into_iter()
        .collect();
    State {
        version: s.version,
        created_unix_ms: s.created_unix_ms,
        author: s.author.clone(),
        comment: s.comment.clone(),
        clusters,
        topics,
        quotas,
        profiles,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::v1::{ClientProfile, Cluster, MigratingFrom, Quota, Topic};
    use crate::validate::check_state;

    fn cluster(name: &str, secret: &str) -> Cluster {
        Cluster {
            name: name.into(),
            bootstrap: vec!["127.0.0.1:9092".into()],
            properties: HashMap::from([("sasl.password".into(), secret.into())]),
            state: 1,
            ..Default::default()
        }
    }

    fn topic(name: &str, cluster: &str) -> Topic {
        Topic {
            name: name.into(),
            cluster: cluster.into(),
            physical: name.into(),
            partitions: 1,
            ..Default::default()
        }
    }

    fn quota(app: &str, topic: &str) -> Quota {
        Quota {
            app: app.into(),
            topic: topic.into(),
            produce_msgs_per_sec: 10,
            policy: 1,
            ..Default::default()
        }
    }

    fn state() -> State {
        let mut s = State {
            version: 7,
            ..Default::default()
        };
        for (c, p) in [("east", "e"), ("west", "w"), ("north", "n")] {
            s.clusters.insert(c.into(), cluster(c, p));
        }
        let mut orders = topic("orders", "west");
        orders.migrating_from = Some(MigratingFrom {
            migration_id: "m1".into(),
            cluster: "east".into(),
            physical: "orders".into(),
            ..Default::default()
        });
        s.topics.insert("orders".into(), orders);
        s.topics
            .insert("payments".into(), topic("payments", "north"));
        for (a, t) in [("a", "orders"), ("a", "payments"), ("*", "*"), ("b", "*")] {
            s.quotas.insert((a.into(), t.into()), quota(a, t));
        }
        for (app, allowed) in [("a", vec!["orders"]), ("b", vec![])] {
            s.profiles.insert(
                app.into(),
                ClientProfile {
                    app: app.into(),
                    allowed_topics: allowed.into_iter().map(String::from).collect(),
                    ..Default::default()
                },
            );
        }
        s
    }

    #[test]
    fn keeps_only_what_the_app_uses() {
        let s = state();
        check_state(&s).unwrap();
        let a = scoped(&s, "a");
        assert_eq!(a.version, 7);
        assert_eq!(a.profiles.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(a.topics.keys().collect::<Vec<_>>(), ["orders"]);
        // The migration source stays visible.
        assert_eq!(a.clusters.keys().collect::<Vec<_>>(), ["east", "west"]);
        assert_eq!(a.clusters["west"].properties["sasl.password"], "w");
        assert_eq!(
            a.quotas.keys().cloned().collect::<Vec<_>>(),
            [
                ("*".to_string(), "*".to_string()),
                ("a".to_string(), "orders".to_string())
            ]
        );
        check_state(&a).unwrap();

        // Empty allowed_topics = all topics; no profile = all topics.
        for app in ["b", "nobody"] {
            let v = scoped(&s, app);
            assert_eq!(v.topics.len(), 2, "{app}");
            assert_eq!(v.clusters.len(), 3, "{app}");
            check_state(&v).unwrap();
        }
        assert!(scoped(&s, "nobody").profiles.is_empty());
        assert_eq!(scoped(&s, "b").quotas.len(), 2);
    }
}
