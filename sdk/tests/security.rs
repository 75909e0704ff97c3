//! The SDK on secured Kafka: SASL_SSL with SCRAM and SSL with client certificates (mTLS), the
//! listeners `scripts/kafka.sh start N --secure` adds to the first test cluster. The cluster's
//! connection and security properties come from the config service, per cluster.

mod common;
mod migrating;
mod workload;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use switchyard::{Record, Switchyard};
use switchyard_config::client::{self, AdminClient as Admin, BearerToken};
use switchyard_config::{RunningServer, ServerConfig, StoreConfig};
use switchyard_proto::v1::{ApplyRequest, Change, Cluster, change::Op};

const ADMIN: &str = "security-admin-token-0123456789";

/// A config service that requires client tokens (secret properties such as `sasl.password`
/// reach only clients with their app's token), the admin API, and `app`'s client token.
async fn service_with_token(app: &str) -> (RunningServer, Admin, String, tempfile::TempDir) {
    let (svc, adm, mut tokens, dir) = service_with_tokens(&[app]).await;
    (svc, adm, tokens.remove(0), dir)
}

/// Applies `changes` on the empty configuration.
async fn apply_first(adm: &mut Admin, changes: Vec<Change>) {
    adm.apply(ApplyRequest {
        expected_version: 0,
        changes,
        author: "test".into(),
        ..Default::default()
    })
    .await
    .expect("apply");
}

/// The secured listeners of the first test cluster: (plaintext, SASL_SSL, mTLS, TLS dir).
/// Missing ones fail the test: run the suite through `scripts/test.sh`, which starts them.
fn secured() -> (String, String, String, String) {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run ./scripts/test.sh (it starts Kafka with --secure)")
        })
    };
    (
        var("KAFKA_BOOTSTRAP_1"),
        var("KAFKA_SASL_SSL_BOOTSTRAP_1"),
        var("KAFKA_MTLS_BOOTSTRAP_1"),
        var("SWITCHYARD_KAFKA_TLS_DIR"),
    )
}

fn secure_cluster(name: &str, bootstrap: &str, props: &[(&str, String)]) -> Change {
    Change {
        op: Some(Op::UpsertCluster(Cluster {
            name: name.into(),
            bootstrap: vec![bootstrap.into()],
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            ..Default::default()
        })),
    }
}

fn scram(tls: &str, user: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SASL_SSL".into()),
        ("sasl.mechanism", "SCRAM-SHA-512".into()),
        ("sasl.username", user.into()),
        ("sasl.password", password.into()),
        ("ssl.ca.location", format!("{tls}/ca.pem")),
    ]
}

fn mtls(tls: &str, client: &str) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SSL".into()),
        ("ssl.ca.location", format!("{tls}/ca.pem")),
        ("ssl.certificate.location", format!("{tls}/{client}.pem")),
        ("ssl.key.location", format!("{tls}/{client}.key")),
    ]
}

/// Produces through the SDK over SASL_SSL (SCRAM-SHA-512) and over mTLS, consumes over
/// SASL_SSL, and checks the log through the plaintext listener of the same cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_and_consumes_over_sasl_ssl_and_mtls() {
    let (plain, sasl, mtls_at, tls) = secured();
    let (svc, mut adm, token, _dir) = service_with_token("secure-app").await;
    let (t1, t2) = (fresh("scram"), fresh("mtls"));
    create_topic(&plain, &t1, 3).await;
    create_topic(&plain, &t2, 3).await;
    apply_first(
        &mut adm,
        vec![
            secure_cluster("secure", &sasl, &scram(&tls, "alice", "alice-secret")),
            secure_cluster("certs", &mtls_at, &mtls(&tls, "client")),
            topic(&t1, "secure", "", 3),
            topic(&t2, "certs", "", 3),
        ],
    )
    .await;
    let sy = Switchyard::builder("secure-app")
        .endpoint(format!("http://{}", svc.local_addr()))
        .token(&token)
        .without_cache()
        .connect()
        .await
        .unwrap();
    let p = sy.producer();
    for i in 0..50 {
        for (t, cluster) in [(&t1, "secure"), (&t2, "certs")] {
            let d = tokio::time::timeout(
                Duration::from_secs(60),
                p.send(Record::new(t).key(format!("k{i}")).payload(format!("v{i}"))),
            )
            .await
            .expect("a send over a secured listener completes")
            .unwrap_or_else(|e| panic!("send to {cluster}: {e}"));
            assert_eq!(d.cluster, cluster);
        }
    }
    assert_eq!(read_all(&plain, &t1).len(), 50);
    assert_eq!(read_all(&plain, &t2).len(), 50);

    let c = sy.consumer(&fresh("g"), &[&t1]).unwrap();
    let mut seen = HashSet::new();
    while seen.len() < 50 {
        let m = tokio::time::timeout(Duration::from_secs(60), c.recv())
            .await
            .expect("records arrive over SASL_SSL")
            .unwrap();
        assert_eq!(m.cluster, "secure");
        c.commit(&m).await.unwrap();
        seen.insert(m.payload.clone());
    }
    drop(c);
    drop(p);
    drop(sy);
    svc.shutdown().await.unwrap();
}

/// Bad credentials fail each send within a bounded time with an error that names the cluster
/// and the cause — never a hang until librdkafka's `message.timeout.ms` (300 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_sends_with_an_error_naming_the_cluster() {
    let (plain, sasl, mtls_at, tls) = secured();
    let (svc, mut adm, token, _dir) = service_with_token("bad-creds").await;
    let mut untrusted_ca = scram(&tls, "alice", "alice-secret");
    untrusted_ca[4].1 = format!("{tls}/other-ca.pem");
    // (cluster name, listener, properties, what the error says)
    type Case<'a> = (&'a str, &'a str, Vec<(&'static str, String)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "wrong-password",
            &sasl,
            scram(&tls, "alice", "not-her-password"),
            "uthentication",
        ),
        ("untrusted-ca", &sasl, untrusted_ca, "certificate"),
        (
            "untrusted-client-cert",
            &mtls_at,
            mtls(&tls, "untrusted-client"),
            "SSL",
        ),
    ];
    let mut changes = Vec::new();
    let mut topics = Vec::new();
    for (name, at, props, _) in &cases {
        let t = fresh(name);
        create_topic(&plain, &t, 1).await;
        changes.push(secure_cluster(name, at, props));
        changes.push(topic(&t, name, "", 1));
        topics.push(t);
    }
    apply_first(&mut adm, changes).await;
    let sy = Switchyard::builder("bad-creds")
        .endpoint(format!("http://{}", svc.local_addr()))
        .token(&token)
        .without_cache()
        .connect()
        .await
        .unwrap();
    let p = sy.producer();
    for ((name, _, _, cause), t) in cases.iter().zip(&topics) {
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(
            Duration::from_secs(90),
            p.send(Record::new(t).key("k").payload("v")),
        )
        .await;
        let Ok(sent) = sent else {
            panic!("{name}: the send did not fail within 90 s");
        };
        let e = sent.expect_err("a send with bad credentials fails");
        let msg = e.to_string();
        println!("{name}: failed after {:?}: {msg}", started.elapsed());
        assert!(
            msg.contains(name),
            "{name}: the error names the cluster: {msg}"
        );
        assert!(msg.contains(cause), "{name}: the error says why: {msg}");
        assert_eq!(e.kind(), switchyard::ErrorKind::Kafka, "{msg}");
    }
    drop(p);
    drop(sy);
    svc.shutdown().await.unwrap();
}

/// [`service_with_token`] with one client token per app in `apps`, in that order.
async fn service_with_tokens(
    apps: &[&str],
) -> (RunningServer, Admin, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let minted: Vec<_> = apps
        .iter()
        .map(|a| switchyard_config::tokens::mint(a).unwrap())
        .collect();
    let tokens = dir.path().join("client-tokens");
    let lines: String = minted.iter().map(|t| format!("{}\n", t.line)).collect();
    std::fs::write(&tokens, lines).unwrap();
    let svc = switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreConfig::Memory,
        admin_token: Some(ADMIN.into()),
        client_tokens: Some(tokens),
        ..Default::default()
    })
    .await
    .expect("config service starts");
    let ch = client::connect(&format!("http://{}", svc.local_addr()), None)
        .await
        .unwrap();
    let adm = client::admin(ch, BearerToken::new(Some(ADMIN)).unwrap());
    (svc, adm, minted.into_iter().map(|t| t.token).collect(), dir)
}

fn profile(app: &str, cluster: &str, creds: &[(&str, String)], topics: &[&str]) -> Change {
    use switchyard_proto::v1::{ClientProfile, ClusterCredentials};
    Change {
        op: Some(Op::UpsertProfile(ClientProfile {
            app: app.into(),
            allowed_topics: topics.iter().map(|t| t.to_string()).collect(),
            credentials: [(
                cluster.to_string(),
                ClusterCredentials {
                    properties: creds
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        })),
    }
}

/// One principal per app (Kafka's ACL model): each app's SASL credentials live in its
/// profile as `${file:}` references, the service resolves them and serves them to that app's
/// client token only; the admin's `get` and `history` show the references, never the
/// passwords; and the broker's ACLs (set by `scripts/kafka.sh --secure`: `alice-*` topics for
/// User:alice only, `bob-*` for User:bob) refuse app A on app B's topic, and the error says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_app_gets_its_own_principal_and_the_broker_enforces_it() {
    use switchyard_proto::v1::{GetHistoryRequest, GetSnapshotRequest, GetVersionRequest};
    let (plain, sasl, _, tls) = secured();
    let (svc, mut adm, tokens, dir) = service_with_tokens(&["app-a", "app-b"]).await;
    let secret_file = |user: &str| {
        let p = dir.path().join(format!("{user}.password"));
        std::fs::write(&p, format!("{user}-secret\n")).unwrap();
        p.display().to_string()
    };
    let (alice_pw, bob_pw) = (secret_file("alice"), secret_file("bob"));
    let (ta, tb) = (fresh("alice-orders"), fresh("bob-orders"));
    create_topic(&plain, &ta, 1).await;
    create_topic(&plain, &tb, 1).await;
    let cluster_props = vec![
        ("security.protocol", "SASL_SSL".to_string()),
        ("sasl.mechanism", "SCRAM-SHA-512".into()),
        ("ssl.ca.location", format!("{tls}/ca.pem")),
    ];
    let creds = |user: &str, file: &str| {
        vec![
            ("sasl.username", user.to_string()),
            ("sasl.password", format!("${{file:{file}}}")),
        ]
    };
    // A reference that does not resolve is refused at apply, naming the field.
    let missing = dir.path().join("nobody.password").display().to_string();
    let e = adm
        .apply(ApplyRequest {
            expected_version: 0,
            changes: vec![
                secure_cluster("acl", &sasl, &cluster_props),
                profile("app-a", "acl", &creds("alice", &missing), &[]),
            ],
            author: "test".into(),
            ..Default::default()
        })
        .await
        .expect_err("a ${file:} that does not exist is refused");
    assert!(
        e.message()
            .contains("profiles[\"app-a\"].credentials[\"acl\"]")
            && e.message().contains("nobody.password")
            && e.message().contains("cannot be read"),
        "{e:?}"
    );
    apply_first(
        &mut adm,
        vec![
            secure_cluster("acl", &sasl, &cluster_props),
            topic(&ta, "acl", "", 1),
            topic(&tb, "acl", "", 1),
            // App A may route to B's topic (the config allows it), so the broker must refuse.
            profile("app-a", "acl", &creds("alice", &alice_pw), &[&ta, &tb]),
            profile("app-b", "acl", &creds("bob", &bob_pw), &[&tb]),
        ],
    )
    .await;

    // What each client token is served.
    let served = |token: &str| {
        let url = format!("http://{}", svc.local_addr());
        let token = token.to_string();
        async move {
            let ch = client::connect(&url, None).await.unwrap();
            let mut meta = client::metadata(ch, BearerToken::new(Some(&token)).unwrap());
            let s = meta
                .get_snapshot(GetSnapshotRequest {})
                .await
                .unwrap()
                .into_inner();
            let c = s.clusters.iter().find(|c| c.name == "acl").unwrap().clone();
            (c.properties, format!("{s:?}"))
        }
    };
    let (a_props, a_all) = served(&tokens[0]).await;
    assert_eq!(a_props["sasl.username"], "alice");
    assert_eq!(
        a_props["sasl.password"], "alice-secret",
        "the reference is resolved"
    );
    assert!(
        !a_all.contains("bob-secret") && !a_all.contains("\"bob\""),
        "{a_all}"
    );
    let (b_props, b_all) = served(&tokens[1]).await;
    assert_eq!(b_props["sasl.username"], "bob");
    assert_eq!(b_props["sasl.password"], "bob-secret");
    assert!(!b_all.contains("alice-secret"), "{b_all}");

    // The admin's view holds the references, never the values.
    for include_secrets in [false, true] {
        let got = adm
            .get_version(GetVersionRequest {
                version: 1,
                include_secrets,
            })
            .await
            .unwrap()
            .into_inner();
        let got = format!("{got:?}");
        assert!(
            got.contains("${file:") && !got.contains("alice-secret"),
            "{got}"
        );
    }
    let hist = adm
        .get_history(GetHistoryRequest {
            limit: 10,
            include_diff: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let hist = format!("{hist:?}");
    assert!(
        !hist.contains("alice-secret") && !hist.contains("bob-secret"),
        "{hist}"
    );

    // App A writes its own topic as alice; B's topic is refused by the broker's ACL.
    let sy = Switchyard::builder("app-a")
        .endpoint(format!("http://{}", svc.local_addr()))
        .token(&tokens[0])
        .without_cache()
        .connect()
        .await
        .unwrap();
    let p = sy.producer();
    let d = tokio::time::timeout(
        Duration::from_secs(60),
        p.send(Record::new(&ta).key("k").payload("mine")),
    )
    .await
    .expect("a send as alice completes")
    .expect("alice may write alice-* topics");
    assert_eq!(d.cluster, "acl");
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        p.send(Record::new(&tb).key("k").payload("not mine")),
    )
    .await
    .expect("a refused send completes within 60 s")
    .expect_err("the broker refuses alice on a bob-* topic");
    let msg = e.to_string();
    println!("refused after {:?}: {msg}", started.elapsed());
    assert!(
        msg.to_ascii_lowercase().contains("authorization") && msg.contains("acl"),
        "the error says the broker refused the principal, naming the cluster: {msg}"
    );
    assert_eq!(read_all(&plain, &ta).len(), 1);
    assert!(read_all(&plain, &tb).is_empty());
    drop(p);
    drop(sy);
    svc.shutdown().await.unwrap();
}

/// A live move from a plaintext cluster to a SASL_SSL one (SCRAM, its password a `${file:}`
/// reference the coordinator resolves too) and back, under keyed load from two producers and
/// a consumer group of two: nothing lost, duplicated or out of order, in the group and in the
/// logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_moves_from_plaintext_to_sasl_ssl_and_back_under_load() {
    use switchyard_config::migration::{self, MigrationConfig};
    use switchyard_proto::v1::{MigrationPhase, StartMigrationRequest};
    use workload::*;
    const PARTITIONS: i32 = 3;
    init_tracing();
    let (plain_1, sasl, _, tls) = secured();
    let (_, plain) = kafka();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("alice.password");
    std::fs::write(&pw, "alice-secret\n").unwrap();
    // SDK clients present the admin token: the whole configuration with its secrets.
    let svc = switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreConfig::Memory,
        admin_token: Some(ADMIN.into()),
        client_lease: Duration::from_secs(3),
        migrations: MigrationConfig {
            client_grace: Duration::ZERO,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("config service starts");
    let endpoint = format!("http://{}", svc.local_addr());
    let ch = client::connect(&endpoint, None).await.unwrap();
    let mut adm = client::admin(ch, BearerToken::new(Some(ADMIN)).unwrap());
    let t = fresh("sasl-move");
    let back = format!("{t}-back");
    create_topic(&plain, &t, PARTITIONS).await;
    let mut props = scram(&tls, "alice", "");
    props[3].1 = format!("${{file:{}}}", pw.display());
    apply_first(
        &mut adm,
        vec![
            cluster("plain", &plain),
            secure_cluster("secure", &sasl, &props),
            topic(&t, "plain", "", PARTITIONS),
        ],
    )
    .await;
    let mut group = migrating::Group::start_as(
        &endpoint,
        ADMIN,
        "sasl-move-reader",
        &fresh("g"),
        &t,
        2,
        switchyard::ConsumerOptions {
            auto_commit: false,
            drain_grace: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let mut loads = Vec::new();
    let mut producers = Vec::new();
    for i in 0..2 {
        let sy =
            migrating::connect_as(&endpoint, &format!("sasl-move-writer-{i}"), Some(ADMIN)).await;
        loads.push(Load::start_keys(
            sy.producer(),
            &t,
            4,
            (i * 8..i * 8 + 8).collect(),
            150.0,
            Duration::from_secs(120),
        ));
        producers.push(sy);
    }
    loads[0].wait_for_ok(200, Duration::from_secs(30)).await;
    for (to, to_topic) in [("secure", String::new()), ("plain", back.clone())] {
        let started = std::time::Instant::now();
        let plan = adm
            .start_migration(StartMigrationRequest {
                topic: t.clone(),
                to_cluster: to.into(),
                to_topic,
                author: "sasl-move-test".into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("the move to {to} starts: {e:?}"))
            .into_inner();
        let mut lines = Vec::new();
        let done = migration::wait(&mut adm, &plan.id, Duration::from_secs(120), |m| {
            lines.push(format!(
                "[{:.1?}] {}",
                started.elapsed(),
                migration::progress_line(m)
            ))
        })
        .await
        .unwrap_or_else(|e| panic!("the move to {to} did not finish: {e:#}; {lines:#?}"));
        println!("move to {to}:\n  {}", lines.join("\n  "));
        assert_eq!(
            MigrationPhase::try_from(done.phase),
            Ok(MigrationPhase::Complete),
            "{lines:#?}"
        );
        assert_eq!(done.late_writes, 0, "{lines:#?}");
        let n = loads[0].ok.load(std::sync::atomic::Ordering::Relaxed);
        loads[0].wait_for_ok(n + 200, Duration::from_secs(30)).await;
    }
    let mut report = Report::default();
    for l in loads {
        let r = l.finish().await;
        report.sent.extend(r.sent);
        report.errors.extend(r.errors);
    }
    assert!(
        report.errors.is_empty(),
        "{} sends failed, e.g. {:?}",
        report.errors.len(),
        report.errors.first()
    );
    let counts = (report.count_on("plain"), report.count_on("secure"));
    println!(
        "produced {} records (plain {}, secure {})",
        report.sent.len(),
        counts.0,
        counts.1
    );
    assert!(counts.0 > 0 && counts.1 > 0, "records went both ways");

    let expected: HashSet<(String, u64)> =
        report.sent.iter().map(|x| (x.key.clone(), x.seq)).collect();
    let mut got: std::collections::HashMap<(String, u64), usize> = Default::default();
    let mut per_key: std::collections::HashMap<(usize, String), Vec<u64>> = Default::default();
    for (i, k, seq, _) in group.receive_all(&expected, Duration::from_secs(120)).await {
        *got.entry((k.clone(), seq)).or_default() += 1;
        per_key.entry((i, k)).or_default().push(seq);
    }
    for r in group.stop().await {
        r.expect("consumer task did not panic");
    }
    let lost = expected.iter().filter(|k| !got.contains_key(*k)).count();
    let duplicated = got.values().filter(|n| **n > 1).count();
    let out_of_order: usize = per_key
        .values()
        .map(|v| v.windows(2).filter(|w| w[0] >= w[1]).count())
        .sum();
    println!(
        "consumed {} lost={lost} duplicated={duplicated} out_of_order={out_of_order}",
        got.values().sum::<usize>()
    );
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));

    // The logs (read through the plaintext listeners) hold each record once, per key in order
    // across both switches.
    let there = read_everywhere(&[("plain", &plain), ("secure", &plain_1)], &t);
    let returned = read_everywhere(&[("plain", &plain)], &back);
    let mut all = there.clone();
    for (k, v) in returned.clone() {
        all.entry(k).or_default().extend(v);
    }
    check_exactly_once(&report, &all);
    check_order_across_switch(&there, "plain", "secure");
    let mut second = read_everywhere(&[("secure", &plain_1)], &t);
    for (k, v) in read_everywhere(&[("back", &plain)], &back) {
        second.entry(k).or_default().extend(v);
    }
    check_order_across_switch(&second, "secure", "back");
    drop(group);
    drop(producers);
    svc.shutdown().await.unwrap();
}

/// Test PKI for the config service's TLS: a CA, and certificates it signs.
struct Pki {
    ca: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "switchyard test service CA");
        let ca = p.self_signed(&key).unwrap();
        Self {
            ca,
            issuer: rcgen::Issuer::new(p, key),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn ca_pem(&self) -> Vec<u8> {
        self.ca.pem().into_bytes()
    }

    /// A certificate for `names` (expired when `expired`), written as `<file>.pem`/`.key`;
    /// returns the two paths.
    fn issue(
        &self,
        file: &str,
        names: &[&str],
        expired: bool,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{file}.pem")),
            self.dir.path().join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// A TLS config service (with `client_ca`: one that requires client certificates) holding a
/// configuration, at its port.
async fn tls_service(
    cert: (std::path::PathBuf, std::path::PathBuf),
    client_ca: Option<std::path::PathBuf>,
) -> RunningServer {
    switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreConfig::Memory,
        tls: Some(cert),
        tls_client_ca: client_ca,
        ..Default::default()
    })
    .await
    .expect("TLS config service starts")
}

/// What connecting the SDK gives within a 3 s initial timeout: the error text, or "ok".
async fn sdk_connect(
    url: &str,
    tls: impl FnOnce(switchyard::SwitchyardBuilder) -> switchyard::SwitchyardBuilder,
) -> String {
    let b = Switchyard::builder("https-app")
        .endpoint(url)
        .without_cache()
        .initial_timeout(Duration::from_secs(3));
    match tokio::time::timeout(Duration::from_secs(20), tls(b).connect()).await {
        Err(_) => panic!("connecting to {url} hung"),
        Ok(Ok(_)) => "ok".into(),
        Ok(Err(e)) => e.to_string(),
    }
}

/// HTTPS to the config service: the SDK trusts a given CA, presents a client certificate to
/// a service that requires one, and every mismatch — plaintext to TLS, TLS to plaintext, an
/// untrusted CA, a certificate for another host, an expired one, a missing or refused client
/// certificate, a CA file that is not PEM — fails within the initial timeout with an error
/// that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_the_config_service_with_a_ca_and_client_certificates() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = pki.issue("server", &["localhost", "127.0.0.1"], false);
    let plain_svc = switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreConfig::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let ca_file = pki.dir.path().join("service-ca.pem");
    std::fs::write(&ca_file, pki.ca_pem()).unwrap();
    let svc = tls_service(server.clone(), None).await;
    let mtls_svc = tls_service(server.clone(), Some(ca_file.clone())).await;
    let wrong_host = tls_service(pki.issue("elsewhere", &["elsewhere.example"], false), None).await;
    let expired = tls_service(
        pki.issue("expired", &["localhost", "127.0.0.1"], true),
        None,
    )
    .await;
    let https = |s: &RunningServer| format!("https://localhost:{}", s.local_addr().port());
    let client = pki.issue("client", &["https-app"], false);
    let foreign_client = other.issue("client", &["https-app"], false);
    let read = |p: &std::path::PathBuf| std::fs::read(p).unwrap();

    // The configuration is empty (version 0) everywhere, so a successful TLS session still
    // ends in "no configuration": what matters is the reason.
    let no_config_but_reached =
        |msg: &str| !msg.contains("could not connect") && !msg.contains("(");
    let _ = no_config_but_reached;
    let ok_ca = sdk_connect(&https(&svc), |b| b.ca_certificate(pki.ca_pem())).await;
    let untrusted = sdk_connect(&https(&svc), |b| b.ca_certificate(other.ca_pem())).await;
    let system_roots = sdk_connect(&https(&svc), |b| b).await;
    let http_to_tls = sdk_connect(
        &format!("http://127.0.0.1:{}", svc.local_addr().port()),
        |b| b,
    )
    .await;
    let tls_to_plain = sdk_connect(
        &format!("https://localhost:{}", plain_svc.local_addr().port()),
        |b| b.ca_certificate(pki.ca_pem()),
    )
    .await;
    let host = sdk_connect(&https(&wrong_host), |b| b.ca_certificate(pki.ca_pem())).await;
    let old = sdk_connect(&https(&expired), |b| b.ca_certificate(pki.ca_pem())).await;
    let no_client_cert = sdk_connect(&https(&mtls_svc), |b| b.ca_certificate(pki.ca_pem())).await;
    let with_client_cert = sdk_connect(&https(&mtls_svc), |b| {
        b.ca_certificate(pki.ca_pem())
            .client_certificate(read(&client.0), read(&client.1))
    })
    .await;
    let refused_client_cert = sdk_connect(&https(&mtls_svc), |b| {
        b.ca_certificate(pki.ca_pem())
            .client_certificate(read(&foreign_client.0), read(&foreign_client.1))
    })
    .await;
    let not_pem = sdk_connect(&https(&svc), |b| {
        b.ca_certificate(b"not a certificate".to_vec())
    })
    .await;
    let key_as_cert = sdk_connect(&https(&mtls_svc), |b| {
        b.ca_certificate(pki.ca_pem())
            .client_certificate(read(&client.1), read(&client.1))
    })
    .await;
    for (what, msg) in [
        ("ca", &ok_ca),
        ("untrusted", &untrusted),
        ("system roots", &system_roots),
        ("http to tls", &http_to_tls),
        ("tls to plain", &tls_to_plain),
        ("wrong host", &host),
        ("expired", &old),
        ("no client cert", &no_client_cert),
        ("client cert", &with_client_cert),
        ("refused client cert", &refused_client_cert),
        ("not pem", &not_pem),
        ("key as cert", &key_as_cert),
    ] {
        println!("{what}: {msg}");
    }
    // Reached (the TLS session is up; the service just has no configuration yet).
    assert_eq!(ok_ca, "ok");
    assert_eq!(with_client_cert, "ok");
    let says = |msg: &str, hint: &str| {
        assert!(
            msg.contains("could not connect") && msg.contains(hint),
            "expected {hint:?}: {msg}"
        )
    };
    says(&untrusted, "not signed by a trusted CA");
    says(&system_roots, "not signed by a trusted CA");
    says(&tls_to_plain, "use an http:// endpoint");
    says(&host, "does not name this host");
    says(&old, "expired");
    assert!(
        http_to_tls.contains("use an https:// endpoint"),
        "{http_to_tls}"
    );
    assert!(
        no_client_cert.contains("client certificate"),
        "{no_client_cert}"
    );
    assert!(
        refused_client_cert.contains("client certificate"),
        "{refused_client_cert}"
    );
    assert!(
        not_pem.contains("the CA certificate holds no PEM block"),
        "{not_pem}"
    );
    assert!(
        key_as_cert.contains("the client certificate holds no PEM block"),
        "{key_as_cert}"
    );
    for s in [svc, mtls_svc, wrong_host, expired, plain_svc] {
        s.shutdown().await.unwrap();
    }
}

/// A consumer whose cluster refuses its credentials fails `recv` within a bounded time with an
/// error naming the cluster and the cause, instead of waiting for records forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_bad_credentials_fails_naming_the_cluster() {
    let (plain, sasl, _, tls) = secured();
    let (svc, mut adm, token, _dir) = service_with_token("bad-reader").await;
    let t = fresh("bad-reader");
    create_topic(&plain, &t, 1).await;
    apply_first(
        &mut adm,
        vec![
            secure_cluster(
                "wrong-password",
                &sasl,
                &scram(&tls, "alice", "not-her-password"),
            ),
            topic(&t, "wrong-password", "", 1),
        ],
    )
    .await;
    let sy = Switchyard::builder("bad-reader")
        .endpoint(format!("http://{}", svc.local_addr()))
        .token(&token)
        .without_cache()
        .connect()
        .await
        .unwrap();
    let c = sy.consumer(&fresh("g"), &[&t]).unwrap();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(60), c.recv())
        .await
        .expect("recv with bad credentials ends within 60 s");
    let e = r.expect_err("no record arrives with bad credentials");
    let msg = e.to_string();
    println!("consumer failed after {:?}: {msg}", started.elapsed());
    assert!(
        msg.contains("wrong-password") && msg.contains("uthentication"),
        "{msg}"
    );
    assert_eq!(e.kind(), switchyard::ErrorKind::Kafka);
    drop(c);
    drop(sy);
    svc.shutdown().await.unwrap();
}
