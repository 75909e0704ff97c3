//! Which client properties are secrets, and how they are kept out of places that are not meant
//! to hold them (CLI output, diffs, logs, the dashboard, clients that may not have them).
//!
//! A cluster property is a secret when its key (compared in lower case)
//! - is one of [`SECRET_KEYS`] (SASL passwords and JAAS configs, OAuth client secrets, TLS key
//!   and store passwords, inline private keys), or
//! - contains `password`, `secret` or `jaas` anywhere.
//!
//! Client profiles cannot carry `sasl.*`/`ssl.*` keys in their properties (see
//! [`crate::validate`]), so secrets live on clusters and in a profile's per-cluster
//! `credentials` (an app's own principal); profile properties are still redacted by the same
//! rule for safety.
//!
//! A property value may hold references to values kept outside the configuration, resolved by
//! the config service when it serves a client: `${file:/ABSOLUTE/PATH}` (the file's content,
//! without a trailing newline) and `${env:NAME}` (an environment variable of the service). The
//! configuration, `get`, `history` and diffs hold the reference, never the value; a property
//! whose value holds a reference is treated as a secret wherever values are served.

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

/// True when any property of `c` is a secret or holds a reference.
pub fn has_secrets(c: &Cluster) -> bool {
    c.properties
        .iter()
        .any(|(k, v)| is_secret_key(k) || has_reference(v))
}

/// True when any profile of `s` carries per-cluster credentials.
pub fn has_credentials(s: &State) -> bool {
    s.profiles.values().any(|p| !p.credentials.is_empty())
}

/// A value kept outside the configuration, named by a property value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    /// `${file:PATH}`: the content of the file at this absolute path.
    File(&'a str),
    /// `${env:NAME}`: the service's environment variable.
    Env(&'a str),
}

impl std::fmt::Display for Reference<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::File(p) => write!(f, "${{file:{p}}}"),
            Reference::Env(n) => write!(f, "${{env:{n}}}"),
        }
    }
}

const REF_PREFIXES: &[&str] = &["${file:", "${env:"];

/// True when `value` holds (or starts to hold) a `${file:…}` or `${env:…}` reference.
pub fn has_reference(value: &str) -> bool {
    REF_PREFIXES.iter().any(|p| value.contains(p))
}

/// True when `value` is exactly one reference (nothing else to hide).
fn is_pure_reference(value: &str) -> bool {
    matches!(references(value), Ok(r) if r.len() == 1 && r[0].0 == (0..value.len()))
}

/// The references in `value`, with their byte ranges, or what is malformed about one.
pub fn references(value: &str) -> Result<Vec<(std::ops::Range<usize>, Reference<'_>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((start, prefix)) = REF_PREFIXES
        .iter()
        .filter_map(|p| value[at..].find(p).map(|i| (at + i, *p)))
        .min_by_key(|(i, _)| *i)
    {
        let body_start = start + prefix.len();
        let Some(len) = value[body_start..].find('}') else {
            return Err(format!("the reference at byte {start} has no closing '}}'"));
        };
        let body = &value[body_start..body_start + len];
        let r = if prefix == "${file:" {
            if !body.starts_with('/') {
                return Err(format!(
                    "${{file:{body}}} must name an absolute path (starting with '/')"
                ));
            }
            Reference::File(body)
        } else {
            let ok = !body.is_empty()
                && body.len() <= 255
                && !body.starts_with(|c: char| c.is_ascii_digit())
                && body.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(format!(
                    "${{env:{body}}} must name an environment variable (ASCII letters, digits and '_', not starting with a digit)"
                ));
            }
            Reference::Env(body)
        };
        let end = body_start + len + 1;
        out.push((start..end, r));
        at = end;
    }
    Ok(out)
}

/// `value` with each reference replaced by what `resolve` gives for it.
pub fn substitute(
    value: &str,
    mut resolve: impl FnMut(Reference<'_>) -> Result<String, String>,
) -> Result<String, String> {
    let refs = references(value)?;
    if refs.is_empty() {
        return Ok(value.to_string());
    }
    let mut out = String::with_capacity(value.len());
    let mut at = 0;
    for (range, r) in refs {
        out.push_str(&value[at..range.start]);
        out.push_str(&resolve(r)?);
        at = range.end;
    }
    out.push_str(&value[at..]);
    Ok(out)
}

fn redact_map(m: &mut HashMap<String, String>) {
    for (k, v) in m.iter_mut() {
        // A value that is just a reference names where the secret is, not the secret: keep it,
        // so `get` output applies back unchanged.
        if is_secret_key(k) && !is_pure_reference(v) {
            *v = REDACTED.to_string();
        }
    }
}

/// The properties `app`'s clients use on cluster `c`: the cluster's, with the app's own
/// credentials for it laid over them.
pub fn with_credentials(c: &Cluster, profile: Option<&crate::v1::ClientProfile>) -> Cluster {
    let mut out = c.clone();
    if let Some(creds) = profile.and_then(|p| p.credentials.get(&c.name)) {
        for (k, v) in &creds.properties {
            out.properties.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Replaces every secret property value of `c` with [`REDACTED`].
pub fn redact_cluster(c: &mut Cluster) {
    redact_map(&mut c.properties);
}

/// Removes every secret property of `c`, and every property that holds a reference (what a
/// client that may not have it receives: no placeholder a Kafka client would try as a
/// password).
pub fn strip_cluster(c: &mut Cluster) {
    c.properties
        .retain(|k, v| !is_secret_key(k) && !has_reference(v));
}

/// Removes every profile's per-cluster credentials (they are served to their own app only).
pub fn strip_profile(p: &mut crate::v1::ClientProfile) {
    p.credentials.clear();
}

/// `s` with every secret value of clusters and profiles replaced by [`REDACTED`].
pub fn redact_snapshot(mut s: Snapshot) -> Snapshot {
    for c in &mut s.clusters {
        redact_cluster(c);
    }
    for p in &mut s.profiles {
        redact_map(&mut p.properties);
        redact_map(&mut p.enforced);
        for c in p.credentials.values_mut() {
            redact_map(&mut c.properties);
        }
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
    for p in out.profiles.values_mut() {
        strip_profile(p);
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
                .or_else(|| f.field.strip_prefix("enforced."))
                .or_else(|| {
                    f.field
                        .strip_prefix("credentials[")
                        .and_then(|r| r.split_once("].").map(|(_, k)| k))
                });
            if key.is_some_and(is_secret_key) {
                for v in [&mut f.old_value, &mut f.new_value] {
                    if !v.is_empty() && !is_pure_reference(v) {
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

    #[test]
    fn finds_and_substitutes_references() {
        let v = "user=\"a\" password=\"${env:PW}\" ca=${file:/etc/ca.pem}";
        let refs = references(v).unwrap();
        assert_eq!(
            refs.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
            vec![Reference::Env("PW"), Reference::File("/etc/ca.pem")]
        );
        let out = substitute(v, |r| {
            Ok(match r {
                Reference::Env(_) => "s3cr3t".into(),
                Reference::File(_) => "PEM".into(),
            })
        })
        .unwrap();
        assert_eq!(out, "user=\"a\" password=\"s3cr3t\" ca=PEM");
        assert_eq!(
            substitute("plain ${x}", |_| unreachable!()).unwrap(),
            "plain ${x}"
        );
        for bad in [
            "${file:relative}",
            "${env:1X}",
            "${env:}",
            "${env:A-B}",
            "${file:/x",
        ] {
            assert!(references(bad).is_err(), "{bad}");
            assert!(has_reference(bad), "{bad}");
        }
        let e = substitute("${env:GONE}", |r| Err(format!("{r} is not set"))).unwrap_err();
        assert_eq!(e, "${env:GONE} is not set");
    }

    #[test]
    fn references_are_shown_and_their_values_are_not_served_openly() {
        let c = Cluster {
            name: "east".into(),
            properties: HashMap::from([
                ("sasl.password".into(), "${file:/run/pw}".into()),
                ("sasl.jaas.config".into(), "x password=${env:PW} y".into()),
                ("sasl.username".into(), "${env:USER_NAME}".into()),
            ]),
            ..Default::default()
        };
        assert!(has_secrets(&c));
        let mut r = c.clone();
        redact_cluster(&mut r);
        // A bare reference names where the secret is: `get` shows it (and applies back).
        assert_eq!(r.properties["sasl.password"], "${file:/run/pw}");
        // A value that mixes text and a reference is redacted like any secret.
        assert_eq!(r.properties["sasl.jaas.config"], REDACTED);
        let mut s = c;
        strip_cluster(&mut s);
        assert!(s.properties.is_empty(), "{:?}", s.properties);
    }

    #[test]
    fn credentials_reach_their_app_only() {
        use crate::v1::{ClientProfile, ClusterCredentials, Topic};
        let mut st = State::default();
        st.clusters.insert(
            "east".into(),
            Cluster {
                name: "east".into(),
                bootstrap: vec!["127.0.0.1:9092".into()],
                properties: HashMap::from([("security.protocol".into(), "SASL_SSL".into())]),
                ..Default::default()
            },
        );
        st.topics.insert(
            "orders".into(),
            Topic {
                name: "orders".into(),
                cluster: "east".into(),
                partitions: 1,
                ..Default::default()
            },
        );
        for (app, user) in [("a", "alice"), ("b", "bob")] {
            st.profiles.insert(
                app.into(),
                ClientProfile {
                    app: app.into(),
                    credentials: HashMap::from([(
                        "east".into(),
                        ClusterCredentials {
                            properties: HashMap::from([
                                ("sasl.username".into(), user.into()),
                                ("sasl.password".into(), format!("{user}-secret")),
                            ]),
                        },
                    )]),
                    ..Default::default()
                },
            );
        }
        crate::validate::check_state(&st).unwrap();
        let a = crate::scope::scoped(&st, "a");
        let east = &a.clusters["east"].properties;
        assert_eq!(east["sasl.username"], "alice");
        assert_eq!(east["sasl.password"], "alice-secret");
        assert_eq!(east["security.protocol"], "SASL_SSL");
        assert!(a.profiles["a"].credentials.is_empty());
        assert!(!a.profiles.contains_key("b"));
        let text = format!("{a:?}");
        assert!(!text.contains("bob"), "{text}");
        // Anonymous watchers get no credentials at all.
        let open = strip_state(&st);
        assert!(format!("{open:?}").find("secret").is_none());
        // `get` output keeps the user names and hides the passwords.
        let snap = redact_snapshot(st.to_snapshot());
        let text = format!("{snap:?}");
        assert!(
            text.contains("alice") && !text.contains("alice-secret"),
            "{text}"
        );
    }
}
