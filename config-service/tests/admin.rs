//! AdminService over a real gRPC server on loopback: compare-and-set, validation, dry runs,
//! rollback and history, auth, TLS, health and reflection, the client inventory.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use switchyard_config::client::{self, BearerToken};
use switchyard_config::{ServerConfig, StoreConfig};
use switchyard_proto::v1::{
    ApplyRequest, Change, ClientEndpoint, ClientStatus, ClusterState, DiffAction,
    GetHistoryRequest, GetSnapshotRequest, GetVersionRequest, ListClientsRequest,
    ReportStatusRequest, RollbackRequest, Snapshot,
};
use tonic::Code;

/// Base configuration for the validation table: clusters east and west, topics orders and
/// a.b on east, a quota and a profile.
async fn seeded() -> TestServer {
    let t = TestServer::memory().await;
    t.apply(vec![
        up_cluster(cluster("east")),
        up_cluster(cluster("west")),
        up_topic(topic("orders", "east", 3)),
        up_topic(topic("a.b", "east", 1)),
        up_quota(quota("*", "orders", 100)),
        up_profile(profile("billing")),
    ])
    .await;
    t
}

#[tokio::test]
async fn cas_conflict_rejects_the_loser_and_stores_nothing_of_it() {
    let t = seeded().await;
    let v = t.version().await;
    let before = t.snapshot().await;

    // Two writers race with the same expected version.
    let (a, b) = tokio::join!(
        t.try_apply(v, vec![up_topic(topic("from-a", "east", 1))]),
        t.try_apply(v, vec![up_topic(topic("from-b", "west", 1))]),
    );
    let (winner, loser, loser_topic) = match (a, b) {
        (Ok(w), Err(l)) => (w, l, "from-b"),
        (Err(l), Ok(w)) => (w, l, "from-a"),
        (a, b) => panic!("exactly one writer must win: {a:?} / {b:?}"),
    };
    assert!(winner.applied);
    assert_eq!(winner.version, v + 1);
    assert_eq!(loser.code(), Code::FailedPrecondition, "{loser:?}");
    let msg = loser.message();
    assert!(
        msg.contains(&format!("expected version {v}")) && msg.contains(&(v + 1).to_string()),
        "message must name both versions: {msg}"
    );

    let after = t.snapshot().await;
    assert_eq!(after.version, v + 1);
    assert!(after.topics.iter().all(|x| x.name != loser_topic));
    assert_eq!(after.topics.len(), before.topics.len() + 1);

    // A stale writer, sequentially, is rejected the same way.
    let e = t
        .try_apply(v, vec![up_topic(topic("late", "east", 1))])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(t.snapshot().await, after);
}

struct Bad {
    what: &'static str,
    changes: Vec<Change>,
    author: String,
    /// Substrings the error message must contain.
    expect: Vec<String>,
}

fn bad(what: &'static str, changes: Vec<Change>, expect: &[&str]) -> Bad {
    Bad {
        what,
        changes,
        author: "tester".into(),
        expect: expect.iter().map(|s| s.to_string()).collect(),
    }
}

fn with_prop(mut c: switchyard_proto::v1::Cluster, k: &str, v: &str) -> Change {
    c.properties.insert(k.into(), v.into());
    up_cluster(c)
}

fn bad_inputs() -> Vec<Bad> {
    let long = "t".repeat(250);
    let bootstrap = |addrs: &[&str]| {
        let mut c = cluster("north");
        c.bootstrap = addrs.iter().map(|s| s.to_string()).collect();
        up_cluster(c)
    };
    let mut sasl = profile("billing");
    sasl.properties
        .insert("sasl.password".into(), "hunter2".into());
    let mut state9 = cluster("east");
    state9.state = 9;
    let mut phys = topic("orders", "east", 3);
    phys.physical = "or/ders".into();
    let mut cases = vec![
        bad(
            "topic name with a space",
            vec![up_topic(topic("bad name", "east", 1))],
            &[r#"upsert_topic["bad name"].name"#, r#""bad name""#, "' '"],
        ),
        bad(
            "topic name ..",
            vec![up_topic(topic("..", "east", 1))],
            &[r#"upsert_topic[".."].name"#, "not a legal Kafka topic name"],
        ),
        bad(
            "topic name of 250 characters",
            vec![up_topic(topic(&long, "east", 1))],
            &[".name", "is 250 characters long", "at most 249"],
        ),
        bad(
            "physical topic with /",
            vec![up_topic(phys)],
            &[r#"upsert_topic["orders"].physical"#, r#""or/ders""#, "'/'"],
        ),
        bad(
            "bootstrap without port",
            vec![bootstrap(&["nohost"])],
            &[
                r#"upsert_cluster["north"].bootstrap[0]"#,
                r#""nohost""#,
                "port",
            ],
        ),
        bad(
            "bootstrap port 0",
            vec![bootstrap(&["127.0.0.1:9092", "h:0"])],
            &[".bootstrap[1]", r#""h:0""#, "port 0"],
        ),
        bad(
            "bootstrap port out of range",
            vec![bootstrap(&["h:99999"])],
            &[".bootstrap[0]", r#""h:99999""#, "1-65535"],
        ),
        bad(
            "empty bootstrap list",
            vec![bootstrap(&[])],
            &[r#"upsert_cluster["north"].bootstrap"#, "at least one"],
        ),
        bad(
            "topic on a missing cluster",
            vec![up_topic(topic("t1", "nope", 1))],
            &[
                r#"topics["t1"].cluster"#,
                r#"cluster "nope" does not exist"#,
            ],
        ),
        bad(
            "delete a cluster still referenced",
            vec![del_cluster("east")],
            &["changes[0].delete_cluster", "still referenced", "orders"],
        ),
        bad(
            "partitions 0",
            vec![up_topic(topic("t1", "east", 0))],
            &[r#"upsert_topic["t1"].partitions"#, "got 0"],
        ),
        bad(
            "partitions -3",
            vec![up_topic(topic("t1", "east", -3))],
            &[r#"upsert_topic["t1"].partitions"#, "got -3"],
        ),
        bad(
            "quota with all rates 0",
            vec![up_quota(quota("*", "orders", 0))],
            &[r#"upsert_quota["*", "orders"]"#, "sets no limit"],
        ),
        bad(
            "quota for a missing topic",
            vec![up_quota(quota("billing", "ghost", 10))],
            &[
                r#"quotas["billing", "ghost"].topic"#,
                r#""ghost" does not exist"#,
            ],
        ),
        bad(
            "property key with capitals",
            vec![with_prop(cluster("east"), "Compression.Type", "lz4")],
            &[
                r#"upsert_cluster["east"].properties["Compression.Type"]"#,
                "malformed",
            ],
        ),
        bad(
            "property key with an empty word",
            vec![with_prop(cluster("east"), "a..b", "1")],
            &[r#"properties["a..b"]"#, r#""a..b""#, "malformed"],
        ),
        bad(
            "forbidden cluster property",
            vec![with_prop(cluster("east"), "bootstrap.servers", "h:1")],
            &[r#"properties["bootstrap.servers"]"#, "may not be set here"],
        ),
        bad(
            "forbidden profile property",
            vec![up_profile(sasl)],
            &[
                r#"upsert_profile["billing"].properties["sasl.password"]"#,
                "may not be set here",
            ],
        ),
        bad("empty batch", vec![], &["changes", "at least one change"]),
        bad(
            "change without an op",
            vec![Change { op: None }],
            &["changes[0]", "empty change"],
        ),
        bad(
            "same topic twice",
            vec![
                up_topic(topic("orders", "east", 4)),
                up_topic(topic("orders", "east", 5)),
            ],
            &["changes[1]", r#""orders""#, "also changed by changes[0]"],
        ),
        bad(
            "delete a missing topic",
            vec![del_topic("ghost")],
            &["changes[0].delete_topic", r#""ghost""#, "does not exist"],
        ),
        bad(
            "unknown cluster state",
            vec![up_cluster(state9)],
            &[r#"upsert_cluster["east"].state"#, "unknown cluster state 9"],
        ),
        bad(
            "physical topic collision a.b vs a_b",
            vec![up_topic(topic("a_b", "east", 1))],
            &[
                r#"topics["a_b"].physical"#,
                r#""a_b""#,
                r#"already used by logical topic "a.b""#,
            ],
        ),
        bad(
            "delete a missing quota",
            vec![del_quota("nobody", "orders")],
            &["changes[0].delete_quota", r#""nobody""#, "does not exist"],
        ),
    ];
    // Checked with librdkafka's own parser: an unknown key, a value out of range.
    cases.push(bad(
        "unknown librdkafka property",
        vec![with_prop(cluster("north"), "linger.msec", "5")],
        &[
            r#"clusters["north"].properties["linger.msec"]"#,
            "No such configuration property",
        ],
    ));
    cases.push(bad(
        "librdkafka property out of range",
        vec![with_prop(cluster("north"), "linger.ms", "-3")],
        &[r#"clusters["north"].properties["linger.ms"]"#, "-3"],
    ));
    let mut long_author = bad(
        "author longer than 4096 bytes",
        vec![up_topic(topic("fine", "east", 1))],
        &["author", "4097 bytes", "4096"],
    );
    long_author.author = "x".repeat(4097);
    cases.push(long_author);
    cases
}

#[tokio::test]
async fn invalid_changes_are_rejected_with_field_and_value_and_store_nothing() {
    let t = seeded().await;
    let before = t.snapshot().await;
    let cases = bad_inputs();
    assert!(cases.len() >= 18);
    let mut admin = t.admin.clone();
    for case in cases {
        let r = within(
            STEP,
            case.what,
            admin.apply(ApplyRequest {
                expected_version: before.version,
                changes: case.changes,
                dry_run: false,
                author: case.author,
                comment: String::new(),
            }),
        )
        .await;
        let e = match r {
            Ok(resp) => panic!("{}: accepted: {:?}", case.what, resp.into_inner()),
            Err(e) => e,
        };
        assert_eq!(
            e.code(),
            Code::InvalidArgument,
            "{}: wrong code: {e:?}",
            case.what
        );
        for s in &case.expect {
            assert!(
                e.message().contains(s.as_str()),
                "{}: message lacks {s:?}: {}",
                case.what,
                e.message()
            );
        }
        assert_eq!(
            t.snapshot().await,
            before,
            "{}: the configuration changed",
            case.what
        );
    }
    // Dry runs validate the same way.
    let e = admin
        .apply(ApplyRequest {
            expected_version: before.version,
            changes: vec![up_topic(topic("t1", "east", 0))],
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn dry_run_returns_the_diff_and_identical_reapply_is_a_noop() {
    let t = seeded().await;
    let before = t.snapshot().await;
    let mut admin = t.admin.clone();

    let r = admin
        .apply(ApplyRequest {
            expected_version: before.version,
            changes: vec![
                up_topic(topic("orders", "east", 6)),
                up_topic(topic("payments", "west", 2)),
            ],
            dry_run: true,
            author: "tester".into(),
            comment: "try".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.applied);
    assert_eq!(r.version, before.version);
    let kinds: Vec<(&str, &str, i32)> = r
        .diff
        .iter()
        .map(|d| (d.kind.as_str(), d.name.as_str(), d.action))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("topic", "orders", DiffAction::Changed as i32),
            ("topic", "payments", DiffAction::Added as i32),
        ]
    );
    let f = &r.diff[0].fields;
    assert_eq!(f.len(), 1);
    assert_eq!(
        (
            f[0].field.as_str(),
            f[0].old_value.as_str(),
            f[0].new_value.as_str()
        ),
        ("partitions", "3", "6")
    );
    assert_eq!(t.snapshot().await, before, "a dry run stored something");
    let h = admin
        .get_history(GetHistoryRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.entries.len(), 1);

    // Re-applying what is already there is a no-op: no new version, empty diff.
    let r = t
        .try_apply(
            before.version,
            vec![
                up_topic(topic("orders", "east", 3)),
                up_cluster(cluster("west")),
            ],
        )
        .await
        .unwrap();
    assert!(!r.applied);
    assert!(r.diff.is_empty(), "{:?}", r.diff);
    assert_eq!(r.version, before.version);
    assert_eq!(t.snapshot().await, before);
    let h = admin
        .get_history(GetHistoryRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.entries.len(), 1);
    assert_eq!(h.current_version, before.version);
}

async fn get_version(t: &TestServer, v: u64) -> Snapshot {
    t.admin
        .clone()
        .get_version(GetVersionRequest {
            version: v,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn rollback_and_history() {
    let t = TestServer::memory().await;
    let mut admin = t.admin.clone();
    let apply = |changes: Vec<Change>, v: u64, comment: &str| ApplyRequest {
        expected_version: v,
        changes,
        dry_run: false,
        author: "alice".into(),
        comment: comment.into(),
    };
    // v1: cluster + topic.
    let r = admin
        .apply(apply(
            vec![
                up_cluster(cluster("east")),
                up_topic(topic("orders", "east", 3)),
            ],
            0,
            "first",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.version, r.applied), (1, true));
    // v2: one changed, one added.
    let r = admin
        .apply(apply(
            vec![
                up_topic(topic("orders", "east", 6)),
                up_topic(topic("payments", "east", 2)),
            ],
            1,
            "second",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.version, r.applied), (2, true));

    // Rolling back to a version that does not exist yet is invalid.
    let e = admin
        .rollback(RollbackRequest {
            to_version: 3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("to_version"), "{}", e.message());
    // A stale compare-and-set is a conflict.
    let e = admin
        .rollback(RollbackRequest {
            to_version: 1,
            expected_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // A dry run shows the diff and stores nothing.
    let r = admin
        .rollback(RollbackRequest {
            to_version: 1,
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.applied);
    assert_eq!(r.version, 2);
    assert_eq!(r.diff.len(), 2);
    assert_eq!(t.version().await, 2);

    let r = admin
        .rollback(RollbackRequest {
            to_version: 1,
            expected_version: Some(2),
            dry_run: false,
            author: "bob".into(),
            comment: "undo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.version, r.applied), (3, true));
    let v1 = get_version(&t, 1).await;
    let v3 = t.snapshot().await;
    assert_eq!(v3.version, 3);
    assert!(same_content(&v1, &v3), "v3 {v3:?} != v1 {v1:?}");
    assert_eq!(get_version(&t, 0).await, v3);
    assert!(!same_content(&get_version(&t, 2).await, &v3));

    // Rolling back to the content already current is a no-op.
    let r = admin
        .rollback(RollbackRequest {
            to_version: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.applied);
    assert_eq!(r.version, 3);

    let h = admin
        .get_history(GetHistoryRequest {
            before_version: 0,
            limit: 0,
            include_diff: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.current_version, 3);
    assert_eq!(h.oldest_version, 0);
    let rows: Vec<_> = h
        .entries
        .iter()
        .map(|e| {
            (
                e.version,
                e.author.as_str(),
                e.comment.as_str(),
                e.added,
                e.changed,
                e.removed,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (3, "bob", "rollback to version 1: undo", 0, 1, 1),
            (2, "alice", "second", 1, 1, 0),
            (1, "alice", "first", 2, 0, 0),
        ]
    );
    assert!(h.entries.iter().all(|e| e.diff.is_empty()));
    assert!(h.entries.iter().all(|e| e.created_unix_ms > 0));
    assert!(h.entries[0].created_unix_ms >= h.entries[2].created_unix_ms);

    // Paging and field-level diffs.
    let h = admin
        .get_history(GetHistoryRequest {
            before_version: 3,
            limit: 1,
            include_diff: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.entries.len(), 1);
    let e = &h.entries[0];
    assert_eq!(e.version, 2);
    let orders = e
        .diff
        .iter()
        .find(|d| d.kind == "topic" && d.name == "orders")
        .expect("orders in the v2 diff");
    assert_eq!(orders.action, DiffAction::Changed as i32);
    assert!(
        orders
            .fields
            .iter()
            .any(|f| f.field == "partitions" && f.old_value == "3" && f.new_value == "6"),
        "{orders:?}"
    );
    let payments = e
        .diff
        .iter()
        .find(|d| d.name == "payments")
        .expect("payments in the v2 diff");
    assert_eq!(payments.action, DiffAction::Added as i32);
    assert!(
        payments
            .fields
            .iter()
            .any(|f| f.field == "cluster" && f.new_value == "east")
    );
}

const TOKEN: &str = "s3cret-token-0123456789";

#[tokio::test]
async fn admin_api_requires_the_token_but_metadata_does_not() {
    let cfg = ServerConfig {
        admin_token: Some(TOKEN.into()),
        ..memory_config()
    };
    let t = TestServer::start(cfg, None).await;
    let req = || ListClientsRequest::default();

    let mut none = client::admin(t.channel.clone(), BearerToken::default());
    let e = none.list_clients(req()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = none
        .apply(ApplyRequest {
            expected_version: 0,
            changes: vec![up_cluster(cluster("east"))],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let mut wrong = client::admin(
        t.channel.clone(),
        BearerToken::new(Some("s3cret-token-0123456780")).unwrap(),
    );
    let e = wrong.list_clients(req()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(!e.message().contains(TOKEN));

    let mut right = client::admin(t.channel.clone(), BearerToken::new(Some(TOKEN)).unwrap());
    right.list_clients(req()).await.unwrap();
    let r = right
        .apply(ApplyRequest {
            expected_version: 0,
            changes: vec![up_cluster(cluster("east"))],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.applied);

    // Nothing from the rejected writers was stored; readers need no token.
    let mut meta = client::metadata(t.channel.clone(), BearerToken::default());
    let s = meta
        .get_snapshot(GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.version, 1);
    let mut w = watch(&mut meta, 0).await;
    assert_eq!(expect_snapshot(&mut w).await.version, 1);
}

#[tokio::test]
async fn non_loopback_listen_requires_a_token() {
    let cfg = ServerConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..memory_config()
    };
    let e = within(STEP, "start", switchyard_config::start(cfg.clone()))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("non-loopback"), "{e:#}");

    let cfg = ServerConfig {
        admin_token: Some(TOKEN.into()),
        ..cfg
    };
    // The admin token is not enough: the metadata API would be open to the network.
    let e = within(STEP, "start", switchyard_config::start(cfg.clone()))
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("metadata API on non-loopback address")
            && format!("{e:#}").contains("--client-tokens"),
        "{e:#}"
    );

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("client-tokens");
    let minted = switchyard_config::tokens::mint("checkout").unwrap();
    std::fs::write(&tokens, format!("{}\n", minted.line)).unwrap();
    let cfg = ServerConfig {
        client_tokens: Some(tokens),
        ..cfg
    };
    let s = within(STEP, "start", switchyard_config::start(cfg))
        .await
        .unwrap();
    assert!(s.local_addr().ip().is_unspecified());
    within(STEP, "shutdown", s.shutdown()).await.unwrap();
}

#[tokio::test]
async fn tls_serves_grpc_and_refuses_plaintext() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();

    let server = within(
        STEP,
        "start",
        switchyard_config::start(ServerConfig {
            tls: Some((cert, key)),
            ..memory_config()
        }),
    )
    .await
    .unwrap();
    let port = server.local_addr().port();

    let ch = within(
        STEP,
        "connect over TLS",
        client::connect(
            &format!("https://localhost:{port}"),
            Some(cert_pem.into_bytes()),
        ),
    )
    .await
    .unwrap();
    let mut admin = client::admin(ch.clone(), BearerToken::default());
    let r = within(
        STEP,
        "apply over TLS",
        admin.apply(ApplyRequest {
            expected_version: 0,
            changes: vec![up_cluster(cluster("east"))],
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert!(r.into_inner().applied);
    let mut meta = client::metadata(ch, BearerToken::default());
    let s = within(
        STEP,
        "snapshot over TLS",
        meta.get_snapshot(GetSnapshotRequest {}),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(s.version, 1);

    // Plain HTTP/2 to the TLS port fails, at connect or at the first call.
    let plain = within(STEP, "plaintext attempt", async {
        let ch = client::connect(&format!("http://127.0.0.1:{port}"), None).await?;
        client::metadata(ch, BearerToken::default())
            .get_snapshot(GetSnapshotRequest {})
            .await
            .map_err(anyhow::Error::from)
    })
    .await;
    assert!(plain.is_err(), "plaintext request succeeded on a TLS port");

    // A client that does not trust the certificate is refused too.
    let untrusted = within(STEP, "untrusted TLS attempt", async {
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let ch = client::connect(
            &format!("https://localhost:{port}"),
            Some(other.cert.pem().into_bytes()),
        )
        .await?;
        client::metadata(ch, BearerToken::default())
            .get_snapshot(GetSnapshotRequest {})
            .await
            .map_err(anyhow::Error::from)
    })
    .await;
    assert!(untrusted.is_err(), "a client with the wrong CA was served");

    within(STEP, "shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let cfg = ServerConfig {
        admin_token: Some(TOKEN.into()),
        ..memory_config()
    };
    let t = TestServer::start(cfg, None).await;
    let mut h = HealthClient::new(t.channel.clone());
    for svc in [
        "switchyard.v1.AdminService",
        "switchyard.v1.MetadataService",
    ] {
        let r = within(
            STEP,
            "health check",
            h.check(HealthCheckRequest {
                service: svc.into(),
            }),
        )
        .await
        .unwrap()
        .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{svc}");
    }
    let e = h
        .check(HealthCheckRequest {
            service: "switchyard.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(t.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = within(
        STEP,
        "reflection",
        refl.server_reflection_info(tokio_stream::iter(vec![req])),
    )
    .await
    .unwrap()
    .into_inner();
    let msg = within(STEP, "reflection response", resp.message())
        .await
        .unwrap()
        .expect("one reflection response");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection response {msg:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "switchyard.v1.AdminService",
        "switchyard.v1.MetadataService",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }

    // The same through reflection v1alpha, which older grpcurl and grpcio-reflection speak.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut refl = ServerReflectionClient::new(t.channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut resp = within(
            STEP,
            "reflection v1alpha",
            refl.server_reflection_info(tokio_stream::iter(vec![req])),
        )
        .await
        .unwrap()
        .into_inner();
        let msg = within(STEP, "reflection v1alpha response", resp.message())
            .await
            .unwrap()
            .expect("one reflection response");
        let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
            panic!("unexpected reflection v1alpha response {msg:?}");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "switchyard.v1.AdminService",
            "switchyard.v1.MetadataService",
        ] {
            assert!(names.contains(&want), "v1alpha: {names:?}");
        }
    }
}

fn status(id: &str, app: &str, applied_version: u64) -> ClientStatus {
    ClientStatus {
        client_id: id.into(),
        app: app.into(),
        language: "rust".into(),
        sdk_version: "0.1.0".into(),
        applied_version,
        producing: vec![ClientEndpoint {
            logical_topic: "orders".into(),
            cluster: "east".into(),
            physical_topic: "orders".into(),
            group: String::new(),
            msgs_per_sec: 12.5,
            bytes_per_sec: 1024.0,
        }],
        consuming: vec![],
        hostname: "host-1".into(),
        pid: 4242,
        instance_id: String::new(),
    }
}

#[tokio::test]
async fn report_status_shows_up_in_list_clients() {
    let t = seeded().await;
    t.apply(vec![up_topic(topic("orders", "east", 4))]).await;
    t.apply(vec![up_topic(topic("orders", "east", 5))]).await;
    let current = t.version().await;
    assert_eq!(current, 3);
    let mut meta = t.meta.clone();
    let mut admin = t.admin.clone();

    let r = meta
        .report_status(ReportStatusRequest {
            status: Some(status("c-1", "billing", 1)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.current_version, current);
    assert_eq!(r.lease_seconds, 30);
    meta.report_status(ReportStatusRequest {
        status: Some(status("c-2", "checkout", current)),
    })
    .await
    .unwrap();

    let l = admin
        .list_clients(ListClientsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.current_version, current);
    let got: HashMap<String, u64> = l
        .clients
        .iter()
        .map(|c| {
            (
                c.status.as_ref().unwrap().client_id.clone(),
                c.versions_behind,
            )
        })
        .collect();
    assert_eq!(
        got,
        HashMap::from([("c-1".to_string(), 2), ("c-2".to_string(), 0)])
    );
    let c1 = l
        .clients
        .iter()
        .find(|c| c.status.as_ref().unwrap().client_id == "c-1")
        .unwrap();
    assert_eq!(c1.status.as_ref().unwrap(), &status("c-1", "billing", 1));
    assert!(c1.last_seen_unix_ms > 0);

    // Filter by app; a re-report replaces the entry.
    meta.report_status(ReportStatusRequest {
        status: Some(status("c-1", "billing", current)),
    })
    .await
    .unwrap();
    let l = admin
        .list_clients(ListClientsRequest {
            app: "billing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.clients.len(), 1);
    assert_eq!(l.clients[0].versions_behind, 0);

    // Invalid reports.
    let mut empty_id = status("", "billing", 1);
    empty_id.client_id.clear();
    let e = meta
        .report_status(ReportStatusRequest {
            status: Some(empty_id),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("status.client_id"), "{}", e.message());
    let e = meta
        .report_status(ReportStatusRequest { status: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut neg = status("c-3", "billing", 1);
    neg.producing[0].msgs_per_sec = -1.0;
    let e = meta
        .report_status(ReportStatusRequest { status: Some(neg) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("status.producing[0].msgs_per_sec"),
        "{}",
        e.message()
    );
    let l = admin
        .list_clients(ListClientsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.clients.len(), 2);
}

#[tokio::test]
async fn client_entries_expire_after_the_lease() {
    let cfg = ServerConfig {
        client_lease: Duration::from_millis(200),
        ..memory_config()
    };
    let t = TestServer::start(cfg, None).await;
    let mut meta = t.meta.clone();
    let r = meta
        .report_status(ReportStatusRequest {
            status: Some(status("c-1", "billing", 0)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.lease_seconds, 0);
    // Poll with a deadline until the entry is gone.
    let mut admin = t.admin.clone();
    within(Duration::from_secs(10), "lease expiry", async {
        loop {
            let l = admin
                .list_clients(ListClientsRequest::default())
                .await
                .unwrap()
                .into_inner();
            if l.clients.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn file_store_keeps_versions_across_restart() {
    let t = TestServer::file().await;
    t.apply(vec![
        up_cluster(cluster("east")),
        up_topic(topic("orders", "east", 3)),
    ])
    .await;
    t.apply(vec![up_topic(topic("orders", "east", 6))]).await;
    let last = t.snapshot().await;
    let TestServer { server, dir, .. } = t;
    let dir = dir.unwrap();

    // A second server on the same directory is refused while the first runs.
    let cfg = ServerConfig {
        store: StoreConfig::File {
            dir: dir.path().to_path_buf(),
        },
        ..memory_config()
    };
    let e = within(STEP, "second start", switchyard_config::start(cfg.clone()))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("in use"), "{e:#}");

    within(STEP, "shutdown", server.shutdown()).await.unwrap();
    let t = TestServer::start(cfg, Some(dir)).await;
    assert_eq!(t.snapshot().await, last);
    assert_eq!(get_version(&t, 1).await.topics[0].partitions, 3);
    assert_eq!(
        ClusterState::try_from(t.snapshot().await.clusters[0].state),
        Ok(ClusterState::Active)
    );
}

/// Requests on an established connection answer in well under a delayed-ACK period: the server
/// must set TCP_NODELAY on accepted sockets (with Nagle's algorithm on, every response that
/// takes more than one write waited ~40 ms for the client's delayed ACK).
#[tokio::test]
async fn round_trips_are_not_delayed_by_nagle() {
    let t = seeded().await;
    let mut c = cluster("big");
    c.labels.insert("blob".into(), "x".repeat(8000));
    t.apply(vec![up_cluster(c)]).await;
    let mut meta = t.meta.clone();
    let mut rtts = Vec::new();
    within(Duration::from_secs(30), "round trips", async {
        for _ in 0..31 {
            let began = std::time::Instant::now();
            meta.get_snapshot(GetSnapshotRequest {}).await.unwrap();
            rtts.push(began.elapsed());
        }
    })
    .await;
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    assert!(
        median < Duration::from_millis(25),
        "median round trip {median:?}: {rtts:?}"
    );
}

#[tokio::test]
async fn history_and_rollback_respect_retention() {
    let t = TestServer::start(
        ServerConfig {
            retain_versions: 5,
            ..memory_config()
        },
        None,
    )
    .await;
    t.apply(vec![
        up_cluster(cluster("east")),
        up_topic(topic("orders", "east", 1)),
    ])
    .await;
    for p in 2..=12 {
        t.apply(vec![up_topic(topic("orders", "east", p))]).await;
    }
    let mut admin = t.admin.clone();
    let h = admin
        .get_history(GetHistoryRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.current_version, 12);
    assert_eq!(h.oldest_version, 7);
    let versions: Vec<u64> = h.entries.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![12, 11, 10, 9, 8]);
    assert!(h.entries.iter().all(|e| e.changed == 1));

    for v in [3, 13] {
        let e = admin
            .get_version(GetVersionRequest {
                version: v,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "version {v}: {e:?}");
        assert!(e.message().contains(&v.to_string()), "{}", e.message());
    }
    let e = admin
        .rollback(RollbackRequest {
            to_version: 3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(t.version().await, 12);

    let r = admin
        .rollback(RollbackRequest {
            to_version: 7,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.version, r.applied), (13, true));
    assert_eq!(t.snapshot().await.topics[0].partitions, 7);
}
