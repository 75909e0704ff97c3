//! Client properties checked with librdkafka's own configuration parser at apply time, so a
//! typo in a key or a bad value is refused with the field and the reason instead of breaking
//! every client of a cluster when it next builds a Kafka client.

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
        let v = &props[k];
        let mut cfg = ClientConfig::new();
        cfg.set(k, v);
        let Err(e) = cfg.create_native_config() else {
            continue;
        };
        let why = match &e {
            KafkaError::ClientConfig(_, desc, _, _) => desc.clone(),
            other => other.to_string(),
        };
        let why = if secrets::is_secret_key(k) {
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
