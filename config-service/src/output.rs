//! Human and machine output for the CLI.

use std::fmt::Write as _;

use serde_json::{Value, json};
use switchyard_proto::state::State;
use switchyard_proto::v1::{
    ClusterState, DiffAction, DiffEntry, GetHistoryResponse, ListClientsResponse, Migration,
    MigrationPhase, QuotaPolicy,
};

use crate::desired::DesiredState;

/// One line for an error chain; gRPC statuses show their code and message only.
pub fn one_line(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        let code = format!("{:?}", s.code());
        return format!("{} ({code})", s.message().replace('\n', " "));
    }
    format!("{e:#}").replace('\n', " ")
}

/// Column-aligned text table.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<width$}  ", width = w[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, header.to_vec());
    for r in rows {
        line(&mut out, r.iter().map(String::as_str).collect());
    }
    out
}

fn kv(m: &std::collections::HashMap<String, String>) -> String {
    let mut v: Vec<_> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

/// A table of one kind of entity ("snapshot" shows all).
pub fn table(s: &State, what: &str) -> String {
    let mut out = String::new();
    if what == "snapshot" {
        let _ = writeln!(
            out,
            "version {}  by {}  at {}  {}\n",
            s.version,
            s.author,
            local_time(s.created_unix_ms),
            s.comment
        );
    }
    if what == "clusters" || what == "snapshot" {
        let rows: Vec<Vec<String>> = s
            .clusters
            .values()
            .map(|c| {
                let topics = s.topics.values().filter(|t| t.cluster == c.name).count();
                vec![
                    c.name.clone(),
                    ClusterState::try_from(c.state)
                        .map(|x| {
                            x.as_str_name()
                                .trim_start_matches("CLUSTER_STATE_")
                                .to_string()
                        })
                        .unwrap_or_default(),
                    c.bootstrap.join(","),
                    topics.to_string(),
                    kv(&c.properties),
                ]
            })
            .collect();
        out.push_str(&render(
            &["CLUSTER", "STATE", "BOOTSTRAP", "TOPICS", "PROPERTIES"],
            &rows,
        ));
    }
    if what == "topics" || what == "snapshot" {
        if what == "snapshot" {
            out.push('\n');
        }
        let rows: Vec<Vec<String>> = s
            .topics
            .values()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.cluster.clone(),
                    t.physical.clone(),
                    t.partitions.to_string(),
                    t.owner.clone(),
                ]
            })
            .collect();
        out.push_str(&render(
            &["TOPIC", "CLUSTER", "PHYSICAL", "PARTITIONS", "OWNER"],
            &rows,
        ));
    }
    if what == "quotas" || what == "snapshot" {
        if what == "snapshot" {
            out.push('\n');
        }
        let n = |v: u64| {
            if v == 0 {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        let rows: Vec<Vec<String>> = s
            .quotas
            .values()
            .map(|q| {
                vec![
                    q.app.clone(),
                    q.topic.clone(),
                    n(q.produce_msgs_per_sec),
                    n(q.produce_bytes_per_sec),
                    n(q.consume_msgs_per_sec),
                    n(q.burst),
                    QuotaPolicy::try_from(q.policy)
                        .map(|x| {
                            x.as_str_name()
                                .trim_start_matches("QUOTA_POLICY_")
                                .to_string()
                        })
                        .unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&render(
            &[
                "APP",
                "TOPIC",
                "PRODUCE_MSG/S",
                "PRODUCE_B/S",
                "CONSUME_MSG/S",
                "BURST",
                "POLICY",
            ],
            &rows,
        ));
    }
    if what == "profiles" || what == "snapshot" {
        if what == "snapshot" {
            out.push('\n');
        }
        let rows: Vec<Vec<String>> = s
            .profiles
            .values()
            .map(|p| {
                vec![
                    p.app.clone(),
                    kv(&p.properties),
                    kv(&p.enforced),
                    p.allowed_topics.join(","),
                ]
            })
            .collect();
        out.push_str(&render(&["APP", "PROPERTIES", "ENFORCED", "TOPICS"], &rows));
    }
    out
}

/// JSON/YAML value for `get`: the desired-state form, so `get snapshot -o yaml` can be applied.
pub fn select_json(s: &State, d: &DesiredState, what: &str) -> anyhow::Result<Value> {
    let v = serde_json::to_value(d)?;
    Ok(match what {
        "snapshot" => {
            let mut v = v;
            if let Value::Object(m) = &mut v {
                m.insert("version".into(), json!(s.version));
                m.insert("author".into(), json!(s.author));
                m.insert("comment".into(), json!(s.comment));
                m.insert("created_unix_ms".into(), json!(s.created_unix_ms));
            }
            v
        }
        other => v.get(other).cloned().unwrap_or(Value::Array(Vec::new())),
    })
}

fn sign(a: i32) -> char {
    match DiffAction::try_from(a) {
        Ok(DiffAction::Added) => '+',
        Ok(DiffAction::Removed) => '-',
        _ => '~',
    }
}

/// A diff as `+`/`~`/`-` lines with indented field changes.
pub fn diff(d: &[DiffEntry]) -> String {
    let mut out = String::new();
    for e in d {
        let _ = writeln!(out, "{} {} {}", sign(e.action), e.kind, e.name);
        for f in &e.fields {
            let _ = match DiffAction::try_from(e.action) {
                Ok(DiffAction::Added) => writeln!(out, "    {}: {}", f.field, f.new_value),
                Ok(DiffAction::Removed) => writeln!(out, "    {}: {}", f.field, f.old_value),
                _ => writeln!(
                    out,
                    "    {}: {} -> {}",
                    f.field,
                    if f.old_value.is_empty() {
                        "(unset)"
                    } else {
                        &f.old_value
                    },
                    if f.new_value.is_empty() {
                        "(unset)"
                    } else {
                        &f.new_value
                    }
                ),
            };
        }
    }
    out
}

/// `unix_ms` as a date and time in the local time zone (`-o json` keeps the milliseconds);
/// `-` for 0 (not set).
pub fn local_time(unix_ms: i64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    match jiff::Timestamp::from_millisecond(unix_ms) {
        Ok(t) => t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => unix_ms.to_string(),
    }
}

/// History table.
pub fn history(h: &GetHistoryResponse, with_diff: bool) -> String {
    let rows: Vec<Vec<String>> = h
        .entries
        .iter()
        .map(|e| {
            vec![
                e.version.to_string(),
                local_time(e.created_unix_ms),
                e.author.clone(),
                format!("+{} ~{} -{}", e.added, e.changed, e.removed),
                e.comment.clone(),
            ]
        })
        .collect();
    let mut out = String::new();
    if with_diff {
        for (e, r) in h.entries.iter().zip(&rows) {
            out.push_str(&render(
                &["VERSION", "CREATED", "AUTHOR", "CHANGES", "COMMENT"],
                std::slice::from_ref(r),
            ));
            out.push_str(&diff(&e.diff));
            out.push('\n');
        }
    } else {
        out.push_str(&render(
            &["VERSION", "CREATED", "AUTHOR", "CHANGES", "COMMENT"],
            &rows,
        ));
    }
    let _ = writeln!(
        out,
        "current version {}, oldest retained {}",
        h.current_version, h.oldest_version
    );
    out
}

fn diff_json(d: &[DiffEntry]) -> Value {
    Value::Array(
        d.iter()
            .map(|e| {
                json!({
                    "kind": e.kind,
                    "name": e.name,
                    "action": DiffAction::try_from(e.action).map(|a| a.as_str_name().trim_start_matches("DIFF_ACTION_").to_lowercase()).unwrap_or_default(),
                    "fields": e.fields.iter().map(|f| json!({"field": f.field, "old": f.old_value, "new": f.new_value})).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// History as JSON.
pub fn history_json(h: &GetHistoryResponse) -> Value {
    json!({
        "current_version": h.current_version,
        "oldest_version": h.oldest_version,
        "entries": h.entries.iter().map(|e| json!({
            "version": e.version,
            "created_unix_ms": e.created_unix_ms,
            "author": e.author,
            "comment": e.comment,
            "added": e.added,
            "changed": e.changed,
            "removed": e.removed,
            "diff": diff_json(&e.diff),
        })).collect::<Vec<_>>(),
    })
}

/// Clients table.
pub fn clients(l: &ListClientsResponse) -> String {
    let rows: Vec<Vec<String>> = l
        .clients
        .iter()
        .filter_map(|c| {
            let s = c.status.as_ref()?;
            let ends = |eps: &[switchyard_proto::v1::ClientEndpoint]| {
                eps.iter()
                    .map(|e| format!("{}@{}", e.logical_topic, e.cluster))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            Some(vec![
                s.client_id.clone(),
                s.app.clone(),
                s.language.clone(),
                s.sdk_version.clone(),
                format!(
                    "{}{}",
                    s.applied_version,
                    if c.versions_behind > 0 {
                        format!(" ({} behind)", c.versions_behind)
                    } else {
                        String::new()
                    }
                ),
                ends(&s.producing),
                ends(&s.consuming),
            ])
        })
        .collect();
    let mut out = render(
        &[
            "CLIENT", "APP", "LANGUAGE", "SDK", "APPLIED", "PRODUCES", "CONSUMES",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "{} clients; current version {}",
        rows.len(),
        l.current_version
    );
    out
}

/// Clients as JSON.
pub fn clients_json(l: &ListClientsResponse) -> Value {
    let ep = |eps: &[switchyard_proto::v1::ClientEndpoint]| {
        eps.iter()
            .map(|e| json!({"logical_topic": e.logical_topic, "cluster": e.cluster, "physical_topic": e.physical_topic, "group": e.group, "msgs_per_sec": e.msgs_per_sec, "bytes_per_sec": e.bytes_per_sec}))
            .collect::<Vec<_>>()
    };
    json!({
        "current_version": l.current_version,
        "clients": l.clients.iter().filter_map(|c| {
            let s = c.status.as_ref()?;
            Some(json!({
                "client_id": s.client_id, "app": s.app, "language": s.language,
                "sdk_version": s.sdk_version, "applied_version": s.applied_version,
                "versions_behind": c.versions_behind, "last_seen_unix_ms": c.last_seen_unix_ms,
                "hostname": s.hostname, "pid": s.pid, "instance_id": s.instance_id,
                "producing": ep(&s.producing), "consuming": ep(&s.consuming),
            }))
        }).collect::<Vec<_>>(),
    })
}

/// One line describing a migration's plan (what moves where, what was created).
pub fn migration_plan(m: &Migration, dry_run: bool) -> String {
    let mut configs: Vec<String> = m.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    configs.sort();
    format!(
        "{}{}: {}/{} -> {}/{} ({} partitions{}{})",
        if m.id.is_empty() {
            String::new()
        } else {
            format!("{} ", m.id)
        },
        m.topic,
        m.from_cluster,
        m.from_physical,
        m.to_cluster,
        m.to_physical,
        m.partitions,
        if m.created_destination {
            ", destination created"
        } else if dry_run {
            ""
        } else {
            ", destination existed"
        },
        if configs.is_empty() {
            String::new()
        } else {
            format!(", configs {}", configs.join(","))
        }
    )
}

fn phase_of(m: &Migration) -> &'static str {
    crate::migration::phase_name(MigrationPhase::try_from(m.phase).unwrap_or_default())
}

/// Migrations table.
pub fn migrations(l: &[Migration]) -> String {
    let rows: Vec<Vec<String>> = l
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.topic.clone(),
                format!("{}/{}", m.from_cluster, m.from_physical),
                format!("{}/{}", m.to_cluster, m.to_physical),
                phase_of(m).to_uppercase(),
                format!("{}/{}", m.producers_switched, m.producers),
                format!(
                    "{}/{}",
                    m.groups.len() - m.groups_draining.len(),
                    m.groups.len()
                ),
                if m.late_writes > 0 {
                    format!("{}/{}", m.mirrored, m.late_writes)
                } else {
                    "0".into()
                },
                draining_groups(m),
                m.note.clone(),
            ]
        })
        .collect();
    let mut out = render(
        &[
            "ID", "TOPIC", "FROM", "TO", "PHASE", "SWITCHED", "DRAINED", "LATE", "DRAINING", "NOTE",
        ],
        &rows,
    );
    let _ = writeln!(out, "{} migrations", rows.len());
    out
}

/// The groups a migration waits for, each with the records below the seal it has not committed
/// yet (when the coordinator read them from the source cluster), and the released ones.
fn draining_groups(m: &Migration) -> String {
    let mut parts: Vec<String> = m
        .groups_draining
        .iter()
        .map(|g| match m.groups_behind.get(g) {
            Some(n) => format!("{g}:{n}"),
            None => g.clone(),
        })
        .collect();
    parts.extend(m.ignored_groups.iter().map(|g| format!("{g}:released")));
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// Migrations as JSON.
pub fn migrations_json(l: &[Migration]) -> Value {
    json!({
        "migrations": l.iter().map(|m| json!({
            "id": m.id, "topic": m.topic, "phase": phase_of(m),
            "from": {"cluster": m.from_cluster, "topic": m.from_physical},
            "to": {"cluster": m.to_cluster, "topic": m.to_physical},
            "partitions": m.partitions, "created_destination": m.created_destination,
            "destination_start_offsets": m.destination_start_offsets,
            "sealed_offsets": m.sealed_offsets, "switch_version": m.switch_version,
            "abort_version": m.abort_version, "late_writes": m.late_writes,
            "producers": m.producers, "producers_switched": m.producers_switched,
            "groups": m.groups, "groups_draining": m.groups_draining,
            "groups_behind": m.groups_behind, "ignored_groups": m.ignored_groups,
            "late_writes_copied": m.mirrored, "source_retired": m.source_retired,
            "source_retired_unix_ms": m.source_retired_unix_ms,
            "clients_behind": m.clients_behind, "forced": m.forced, "note": m.note,
            "author": m.author, "comment": m.comment,
            "created_unix_ms": m.created_unix_ms, "switched_unix_ms": m.switched_unix_ms,
            "sealed_unix_ms": m.sealed_unix_ms, "finished_unix_ms": m.finished_unix_ms,
        })).collect::<Vec<_>>(),
    })
}
