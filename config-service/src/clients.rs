//! The inventory of SDK clients, fed by `ReportStatus`, with leases.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchyard_proto::v1::{ClientEndpoint, ClientInfo, ClientStatus};
use switchyard_proto::validate::{self, Errors, ValidationError, show};
use tokio::sync::watch;

/// Most endpoints one client may report per direction.
const MAX_ENDPOINTS: usize = 10_000;
/// Most clients tracked at once; beyond it new clients are refused until leases expire.
const MAX_CLIENTS: usize = 1_000_000;

#[derive(Debug)]
struct Entry {
    status: ClientStatus,
    seen: Instant,
    seen_unix_ms: i64,
}

/// An inventory entry's key: the client id and the SDK instance (see
/// `ClientStatus.instance_id`), so two instances sharing a client id stay two entries.
type Key = (String, String);

fn key(s: &ClientStatus) -> Key {
    (s.client_id.clone(), s.instance_id.clone())
}

/// Clients that reported within their lease.
#[derive(Debug)]
pub struct Clients {
    lease: Duration,
    map: Mutex<HashMap<Key, Entry>>,
    /// Bumped whenever the listed clients or their shown fields change.
    changes: watch::Sender<u64>,
}

/// Whether replacing `old` with `new` changes what a listing shows (rates aside).
fn shown_change(old: &ClientStatus, new: &ClientStatus) -> bool {
    fn ends(e: &[ClientEndpoint]) -> Vec<(&str, &str, &str, &str)> {
        e.iter()
            .map(|e| {
                (
                    e.logical_topic.as_str(),
                    e.cluster.as_str(),
                    e.physical_topic.as_str(),
                    e.group.as_str(),
                )
            })
            .collect()
    }
    old.app != new.app
        || old.language != new.language
        || old.sdk_version != new.sdk_version
        || old.applied_version != new.applied_version
        || old.hostname != new.hostname
        || old.pid != new.pid
        || ends(&old.producing) != ends(&new.producing)
        || ends(&old.consuming) != ends(&new.consuming)
}

impl Clients {
    /// Entries expire `lease` after their last report.
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            map: Mutex::new(HashMap::new()),
            changes: watch::channel(0).0,
        }
    }

    /// Notified (with a generation number) whenever a client appears, expires, or changes
    /// what a listing shows; status reports that only refresh the lease or rates do not notify.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// Drops clients whose lease ran out (notifying subscribers if any did).
    pub fn sweep(&self) {
        let now = Instant::now();
        let removed = {
            let mut map = self.map.lock();
            let before = map.len();
            map.retain(|_, e| now.duration_since(e.seen) < self.lease);
            before != map.len()
        };
        if removed {
            self.changed();
        }
    }

    /// Live clients counted by (app, whether behind `current_version`).
    pub fn counts(&self, current_version: u64) -> BTreeMap<(String, bool), u64> {
        let now = Instant::now();
        let map = self.map.lock();
        let mut out = BTreeMap::new();
        for e in map.values() {
            if now.duration_since(e.seen) < self.lease {
                let behind = e.status.applied_version < current_version;
                *out.entry((e.status.app.clone(), behind)).or_default() += 1;
            }
        }
        out
    }

    /// The lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Records a report after validating it.
    pub fn report(&self, status: ClientStatus) -> Result<(), ValidationError> {
        check_status(&status)?;
        let now = Instant::now();
        let mut map = self.map.lock();
        let k = key(&status);
        if map.len() >= MAX_CLIENTS && !map.contains_key(&k) {
            map.retain(|_, e| now.duration_since(e.seen) < self.lease);
            if map.len() >= MAX_CLIENTS {
                return Err(ValidationError::one(
                    "status.client_id",
                    "too many clients registered",
                ));
            }
        }
        let old = map.insert(
            k.clone(),
            Entry {
                status,
                seen: now,
                seen_unix_ms: unix_ms(),
            },
        );
        let changed = match &old {
            None => true,
            Some(o) => {
                now.duration_since(o.seen) >= self.lease
                    || map
                        .get(&k)
                        .is_some_and(|n| shown_change(&o.status, &n.status))
            }
        };
        drop(map);
        if changed {
            self.changed();
        }
        Ok(())
    }

    /// The keys (client id, instance id) of the clients that reported within their lease.
    pub fn keys(&self) -> std::collections::BTreeSet<(String, String)> {
        let now = Instant::now();
        self.map
            .lock()
            .iter()
            .filter(|(_, e)| now.duration_since(e.seen) < self.lease)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Live clients (of `app`, if not empty), sorted by app then id.
    pub fn list(&self, app: &str, current_version: u64) -> Vec<ClientInfo> {
        let now = Instant::now();
        let mut map = self.map.lock();
        let before = map.len();
        map.retain(|_, e| now.duration_since(e.seen) < self.lease);
        if before != map.len() {
            self.changed();
        }
        let mut out: Vec<ClientInfo> = map
            .values()
            .filter(|e| app.is_empty() || e.status.app == app)
            .map(|e| ClientInfo {
                status: Some(e.status.clone()),
                last_seen_unix_ms: e.seen_unix_ms,
                versions_behind: current_version.saturating_sub(e.status.applied_version),
            })
            .collect();
        out.sort_by(|a, b| {
            let (a, b) = (a.status.as_ref(), b.status.as_ref());
            (a.map(|s| (&s.app, &s.client_id, &s.instance_id)))
                .cmp(&b.map(|s| (&s.app, &s.client_id, &s.instance_id)))
        });
        out
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn check_text(errs: &mut Errors, field: &str, v: &str, max: usize, required: bool) {
    if required && v.is_empty() {
        errs.push(field, "must not be empty");
    } else if v.len() > max {
        errs.push(
            field,
            format!("is {} bytes long; at most {max} allowed", v.len()),
        );
    } else if v.chars().any(|c| c.is_control()) {
        errs.push(field, format!("{} contains a control character", show(v)));
    }
}

fn check_endpoints(errs: &mut Errors, field: &str, eps: &[ClientEndpoint]) {
    if eps.len() > MAX_ENDPOINTS {
        errs.push(
            field,
            format!("has {} entries; at most {MAX_ENDPOINTS} allowed", eps.len()),
        );
        return;
    }
    for (i, e) in eps.iter().enumerate() {
        let f = format!("{field}[{i}]");
        errs.check(validate::check_topic_name(
            &format!("{f}.logical_topic"),
            &e.logical_topic,
        ));
        if !e.cluster.is_empty() {
            errs.check(validate::check_name(&format!("{f}.cluster"), &e.cluster));
        }
        if !e.physical_topic.is_empty() {
            errs.check(validate::check_topic_name(
                &format!("{f}.physical_topic"),
                &e.physical_topic,
            ));
        }
        check_text(errs, &format!("{f}.group"), &e.group, 255, false);
        for (n, v) in [
            ("msgs_per_sec", e.msgs_per_sec),
            ("bytes_per_sec", e.bytes_per_sec),
        ] {
            if !v.is_finite() || v < 0.0 {
                errs.push(
                    format!("{f}.{n}"),
                    format!("must be a non-negative number, got {v}"),
                );
            }
        }
    }
}

fn check_status(s: &ClientStatus) -> Result<(), ValidationError> {
    let mut errs = Errors::default();
    check_text(&mut errs, "status.client_id", &s.client_id, 256, true);
    errs.check(validate::check_name("status.app", &s.app));
    check_text(&mut errs, "status.language", &s.language, 32, false);
    check_text(&mut errs, "status.sdk_version", &s.sdk_version, 64, false);
    check_text(&mut errs, "status.hostname", &s.hostname, 255, false);
    check_text(&mut errs, "status.instance_id", &s.instance_id, 64, false);
    check_endpoints(&mut errs, "status.producing", &s.producing);
    check_endpoints(&mut errs, "status.consuming", &s.consuming);
    errs.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two SDK instances that share a client id (the application set it) are two entries: one
    /// still producing to a migration's source cannot hide behind the other.
    #[test]
    fn instances_sharing_a_client_id_are_kept_apart() {
        let c = Clients::new(Duration::from_secs(60));
        let ep = |cluster: &str| ClientEndpoint {
            logical_topic: "orders".into(),
            cluster: cluster.into(),
            physical_topic: "orders".into(),
            ..Default::default()
        };
        for (instance, cluster) in [("i1", "east"), ("i2", "west")] {
            c.report(ClientStatus {
                client_id: "billing-1".into(),
                app: "billing".into(),
                instance_id: instance.into(),
                applied_version: 2,
                producing: vec![ep(cluster)],
                ..Default::default()
            })
            .unwrap();
        }
        let listed = c.list("", 2);
        assert_eq!(listed.len(), 2);
        let m = switchyard_proto::v1::Migration {
            topic: "orders".into(),
            from_cluster: "east".into(),
            from_physical: "orders".into(),
            to_cluster: "west".into(),
            to_physical: "orders".into(),
            switch_version: 2,
            ..Default::default()
        };
        let p = crate::movetopic::summarise(listed.iter().filter_map(|i| i.status.as_ref()), &m);
        assert_eq!((p.producers, p.producers_switched), (2, 1));
        // A too long instance id is refused.
        let err = c
            .report(ClientStatus {
                client_id: "x".into(),
                app: "billing".into(),
                instance_id: "i".repeat(65),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("status.instance_id"), "{err}");
    }

    #[test]
    fn entries_expire_after_the_lease() {
        let c = Clients::new(Duration::from_millis(0));
        c.report(ClientStatus {
            client_id: "a".into(),
            app: "billing".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(c.list("", 1).is_empty());
        let c = Clients::new(Duration::from_secs(60));
        c.report(ClientStatus {
            client_id: "a".into(),
            app: "billing".into(),
            applied_version: 3,
            ..Default::default()
        })
        .unwrap();
        let l = c.list("", 5);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].versions_behind, 2);
        assert!(c.list("other", 5).is_empty());
        assert!(
            c.report(ClientStatus {
                client_id: "".into(),
                app: "x y".into(),
                ..Default::default()
            })
            .unwrap_err()
            .to_string()
            .contains("status.client_id: must not be empty")
        );
    }
}
