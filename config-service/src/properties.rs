//! Client properties checked with librdkafka's own configuration parser at apply time, so a
//! typo in a key or a bad value is refused with the field and the reason instead of breaking
//! every client of a cluster when it next builds a Kafka client.
//!
//! Also resolves the `${file:PATH}` / `${env:NAME}` references property values may hold (see
//! [`switchyard_proto::secrets`]): checked at apply time (each must resolve on this replica),
//! and resolved each time a configuration version is served to a client that may see it.

use std::collections::HashMap;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use switchyard_proto::secrets;
use switchyard_proto::state::State;
use switchyard_proto::validate::Errors;

/// Checks the client properties of every cluster and profile of `next` whose properties differ
/// from `cur`'s (unchanged ones were checked when they were applied).
pub fn check_changed(cur: &State, next: &State, errs: &mut Errors) {
    for (name, c) in &next.clusters {
        if cur.clusters.get(name).map(|o| &o.properties) != Some(&c.properties) {
            check(
                &format!("clusters[{name:?}].properties"),
                &c.properties,
                errs,
            );
        }
    }
    for (app, p) in &next.profiles {
        let old = cur.profiles.get(app);
        for (cluster, c) in &p.credentials {
            let before = old.and_then(|o| o.credentials.get(cluster));
            if before.map(|b| &b.properties) != Some(&c.properties) {
                check(
                    &format!("profiles[{app:?}].credentials[{cluster:?}]"),
                    &c.properties,
                    errs,
                );
            }
        }
        if old.map(|o| &o.properties) != Some(&p.properties) {
            check(
                &format!("profiles[{app:?}].properties"),
                &p.properties,
                errs,
            );
        }
        if old.map(|o| &o.enforced) != Some(&p.enforced) {
            check(&format!("profiles[{app:?}].enforced"), &p.enforced, errs);
        }
    }
}

/// Sets each property on a fresh librdkafka configuration, one at a time, and records the
/// ones it refuses (an unknown key, a value out of range or of the wrong type, a feature this
/// build lacks). A secret's value is never echoed.
fn check(field: &str, props: &HashMap<String, String>, errs: &mut Errors) {
    let mut keys: Vec<&String> = props.keys().collect();
    keys.sort();
    for k in keys {
        let raw = &props[k];
        let v = match resolve_value(raw) {
            Ok(v) => v,
            Err(e) => {
                errs.push(format!("{field}[{k:?}]"), e);
                continue;
            }
        };
        let mut cfg = ClientConfig::new();
        cfg.set(k, &v);
        let Err(e) = cfg.create_native_config() else {
            continue;
        };
        let why = match &e {
            KafkaError::ClientConfig(_, desc, _, _) => desc.clone(),
            other => other.to_string(),
        };
        let why = if (secrets::is_secret_key(k) || v != *raw) && !v.is_empty() {
            why.replace(v.as_str(), secrets::REDACTED)
        } else {
            why
        };
        errs.push(
            format!("{field}[{k:?}]"),
            format!("librdkafka refuses it: {why}"),
        );
    }
}

/// Keys the store's home cluster properties may not set: the store sets them itself.
const STORE_FORBIDDEN: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.idempotence",
    "acks",
    "enable.auto.commit",
    "transactional.id",
];

/// The Kafka-log store's home cluster properties, checked (keys the store owns are refused,
/// librdkafka parses each value) and with their references resolved. The error lists every
/// refused property; a secret value is never echoed.
pub fn store_properties(
    raw: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut errs = Errors::default();
    for k in raw.keys() {
        if STORE_FORBIDDEN.contains(&k.as_str()) {
            errs.push(
                format!("store property {k:?}"),
                "is set by the store itself (the bootstrap servers come from --store)",
            );
        }
    }
    let map: HashMap<String, String> = raw.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    check("store properties", &map, &mut errs);
    errs.finish()
        .map_err(|e| anyhow::anyhow!("invalid store properties: {e}"))?;
    raw.iter()
        .map(|(k, v)| {
            resolve_value(v)
                .map(|v| (k.clone(), v))
                .map_err(|e| anyhow::anyhow!("store property {k}: {e}"))
        })
        .collect()
}

/// Largest file a `${file:}` reference may name (a PEM chain is a few KiB).
const MAX_REFERENCED_FILE: u64 = 1 << 20;

/// The value of one reference, read now on this host: the file's content without its trailing
/// newline, or the environment variable. The error names the reference, never a value.
pub fn resolve_reference(r: secrets::Reference<'_>) -> Result<String, String> {
    match r {
        secrets::Reference::File(path) => {
            let meta = std::fs::metadata(path).map_err(|e| format!("{r} cannot be read: {e}"))?;
            if !meta.is_file() {
                return Err(format!("{r} is not a regular file"));
            }
            if meta.len() > MAX_REFERENCED_FILE {
                return Err(format!(
                    "{r} is {} bytes; at most {MAX_REFERENCED_FILE} allowed",
                    meta.len()
                ));
            }
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{r} cannot be read: {e}"))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
        }
        secrets::Reference::Env(name) => match std::env::var(name) {
            Ok(v) => Ok(v),
            Err(std::env::VarError::NotPresent) => Err(format!(
                "{r} is not set in the config service's environment"
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{r} is not valid UTF-8")),
        },
    }
}

/// `value` with its references resolved (see [`resolve_reference`]).
pub fn resolve_value(value: &str) -> Result<String, String> {
    if !secrets::has_reference(value) {
        return Ok(value.to_string());
    }
    secrets::substitute(value, resolve_reference)
}

/// Resolves every reference in `props`; a property whose reference no longer resolves (a file
/// removed since the apply) is dropped and logged, so a client never gets the reference text
/// as, say, a password.
fn resolve_map(what: &str, props: &mut HashMap<String, String>) {
    props.retain(|k, v| {
        if !secrets::has_reference(v) {
            return true;
        }
        match resolve_value(v) {
            Ok(r) => {
                *v = r;
                true
            }
            Err(e) => {
                tracing::error!(%what, property = %k, error = %e, "dropping a property whose reference does not resolve");
                false
            }
        }
    });
}

/// `c` with the references of its properties resolved.
pub fn resolve_cluster(c: &mut switchyard_proto::v1::Cluster) {
    resolve_map(&format!("cluster {}", c.name), &mut c.properties);
}

/// `p` with the references of its credentials resolved.
pub fn resolve_profile(p: &mut switchyard_proto::v1::ClientProfile) {
    for (cluster, c) in p.credentials.iter_mut() {
        resolve_map(
            &format!("credentials of app {} for cluster {cluster}", p.app),
            &mut c.properties,
        );
    }
}

/// `s` with the references of its cluster properties and profile credentials resolved: what
/// is served to clients that may see secrets.
pub fn resolve_state(s: &mut State) {
    s.clusters.values_mut().for_each(resolve_cluster);
    s.profiles.values_mut().for_each(resolve_profile);
}

/// True when some cluster property or profile credential of `s` holds a reference.
pub fn has_references(s: &State) -> bool {
    s.clusters
        .values()
        .any(|c| c.properties.values().any(|v| secrets::has_reference(v)))
        || s.profiles.values().any(|p| {
            p.credentials
                .values()
                .any(|c| c.properties.values().any(|v| secrets::has_reference(v)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(props: &[(&str, &str)]) -> Vec<String> {
        let props = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut errs = Errors::default();
        check("clusters[\"east\"].properties", &props, &mut errs);
        match errs.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn librdkafka_refuses_unknown_keys_and_bad_values_naming_the_field() {
        assert!(errors(&[("linger.ms", "5"), ("compression.type", "lz4")]).is_empty());
        let e = errors(&[("linger.msec", "5")]).join("\n");
        assert!(
            e.contains("linger.msec") && e.contains("No such configuration property"),
            "{e}"
        );
        let e = errors(&[("linger.ms", "-3")]).join("\n");
        assert!(e.contains("linger.ms") && e.contains("-3"), "{e}");
        let e = errors(&[("acks", "most")]).join("\n");
        assert!(e.contains("acks"), "{e}");
    }

    #[test]
    fn a_refused_secret_is_never_echoed() {
        let e = errors(&[("sasl.mechanism", "PLAIN"), ("sasl.password", "")]).join("\n");
        assert!(!e.contains("hunter2"), "{e}");
        let e = errors(&[("ssl.key.password.typo", "hunter2")]).join("\n");
        assert!(e.contains("ssl.key.password.typo"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
