//! Which client properties are secrets, and how they are kept out of places that are not meant
//! to hold them (CLI output, diffs, logs, the dashboard, clients that may not have them).
//!
//! A cluster property is a secret when its key (compared in lower case)
//! - is one of [`SECRET_KEYS`] (SASL passwords and JAAS configs, OAuth client secrets, TLS key
//!   and store passwords, inline private keys), or
//! - contains `password`, `secret` or `jaas` anywhere.
//!
//! Client profiles cannot carry `sasl.*`/`ssl.*` keys (see [`crate::validate`]), so secrets live
//! on clusters; profile properties are still redacted by the same rule for safety.

use std::collections::HashMap;

use crate::state::State;
use crate::v1::{Cluster, DiffEntry, Snapshot};

/// What a redacted secret value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Property keys that are secrets by name.
pub const SECRET_KEYS: &[&str] = &[
    "sasl.password",
    "sasl.jaas.config",
    "sasl.oauthbearer.client.secret",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.truststore.password",
    "ssl.key.pem",
    "ssl.keystore.key",
    "ssl.keystore.key.pem",
];

/// Substrings that make any property key a secret.
pub const SECRET_SUBSTRINGS: &[&str] = &["password", "secret", "jaas"];

/// True when a property with this key holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEYS.contains(&k.as_str()) || SECRET_SUBSTRINGS.iter().any(|s| k.contains(s))
}

/// True when any property of `c` is a secret.
pub fn has_secrets(c: &Cluster) -> bool {
    c.properties.keys().any(|k| is_secret_key(k))
}

fn redact_map(m: &mut HashMap<String, String>) {
    for (k, v) in m.iter_mut() {
        if is_secret_key(k) {
            *v = REDACTED.to_string();
        }
    }
}

/// Replaces every secret property value of `c` with [`REDACTED`].
pub fn redact_cluster(c: &mut Cluster) {
    redact_map(&mut c.properties);
}

/// Removes every secret property of `c` (what a client that may not have it receives: no
/// placeholder a Kafka client would try as a password).
pub fn strip_cluster(c: &mut Cluster) {
    c.properties.retain(|k, _| !is_secret_key(k));
}

/// `s` with every secret value of clusters and profiles replaced by [`REDACTED`].
pub fn redact_snapshot(mut s: Snapshot) -> Snapshot {
    for c in &mut s.clusters {
        redact_cluster(c);
    }
    for p in &mut s.profiles {
        redact_map(&mut p.properties);
        redact_map(&mut p.enforced);
    }
    s
}

/// `s` with every secret cluster property removed (profiles cannot hold secrets).
pub fn strip_state(s: &State) -> State {
    let mut out = s.clone();
    for c in out.clusters.values_mut() {
        if has_secrets(c) {
            strip_cluster(c);
        }
    }
    out
}

/// Replaces the old and new values of every secret field in a diff with [`REDACTED`] (or
/// leaves them empty where the property was absent), so a changed secret shows as changed
/// without its value.
pub fn redact_diff(diff: &mut [DiffEntry]) {
    for e in diff {
        for f in &mut e.fields {
            let key = f
                .field
                .strip_prefix("properties.")
                .or_else(|| f.field.strip_prefix("enforced."));
            if key.is_some_and(is_secret_key) {
                for v in [&mut f.old_value, &mut f.new_value] {
                    if !v.is_empty() {
                        *v = REDACTED.to_string();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_keys() {
        for k in [
            "sasl.password",
            "SASL.JAAS.CONFIG",
            "sasl.oauthbearer.client.secret",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.truststore.password",
            "ssl.key.pem",
            "ssl.keystore.key",
            "my.db.password.file",
            "x.secret",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "sasl.username",
            "sasl.mechanism",
            "security.protocol",
            "compression.type",
            "ssl.ca.location",
            "ssl.certificate.pem",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn redacts_and_strips() {
        let c = Cluster {
            name: "east".into(),
            properties: HashMap::from([
                ("sasl.password".into(), "hunter2".into()),
                ("sasl.username".into(), "svc".into()),
            ]),
            ..Default::default()
        };
        let mut r = c.clone();
        redact_cluster(&mut r);
        assert_eq!(r.properties["sasl.password"], REDACTED);
        assert_eq!(r.properties["sasl.username"], "svc");
        let mut s = c;
        strip_cluster(&mut s);
        assert!(!s.properties.contains_key("sasl.password"));
        assert_eq!(s.properties["sasl.username"], "svc");
    }
}
