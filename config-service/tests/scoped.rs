//! Scoped credentials over a real gRPC server on loopback: per-app client tokens see only their
//! app's profile, topics, clusters and secrets (GetSnapshot and Watch across versions), cannot
//! act as another app nor call the AdminService; the admin token sees everything; secrets are
//! redacted in admin output unless asked for with the admin token; bad tokens and bad token
//! files are refused with precise messages.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use switchyard_config::client::{self, BearerToken, MetadataClient};
use switchyard_config::tokens::{self, Minted};
use switchyard_config::{ServerConfig, StoreConfig};
use switchyard_proto::scope;
use switchyard_proto::secrets::REDACTED;
use switchyard_proto::state::State;
use switchyard_proto::v1::{
    ApplyRequest, ClientStatus, Cluster, GetHistoryRequest, GetSnapshotRequest, GetVersionRequest,
    ListClientsRequest, ListMigrationsRequest, MigrationRef, ReportStatusRequest, RollbackRequest,
    Snapshot, StartMigrationRequest, WatchEvent, WatchRequest, watch_event::Event,
};
use tonic::{Code, Status, Streaming};

const ADMIN: &str = "admin-token-0123456789abcdef";

fn secret_cluster(name: &str) -> Cluster {
    Cluster {
        properties: HashMap::from([
            ("sasl.username".into(), format!("user-{name}")),
            ("sasl.password".into(), format!("pw-{name}")),
            ("security.protocol".into(), "SASL_PLAINTEXT".into()),
            ("sasl.mechanism".into(), "PLAIN".into()),
        ]),
        ..cluster(name)
    }
}

/// A server with an admin token and client tokens for apps `a` and `b`.
struct Env {
    t: TestServer,
    a: Minted,
    b: Minted,
    tokens_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn write_tokens(path: &Path, lines: &[&str]) {
    std::fs::write(path, format!("# app sha256\n{}\n", lines.join("\n"))).unwrap();
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let a = tokens::mint("a").unwrap();
    let b = tokens::mint("b").unwrap();
    let tokens_file = dir.path().join("client-tokens");
    write_tokens(&tokens_file, &[&a.line, &b.line]);
    let cfg = ServerConfig {
        admin_token: Some(ADMIN.into()),
        client_tokens: Some(tokens_file.clone()),
        ..memory_config()
    };
    let t = TestServer::start(cfg, None).await;
    // east serves a, north serves b, west is spare.
    t.apply(vec![
        up_cluster(secret_cluster("east")),
        up_cluster(secret_cluster("west")),
        up_cluster(secret_cluster("north")),
        up_topic(topic("a-orders", "east", 3)),
        up_topic(topic("b-pay", "north", 2)),
        up_quota(quota("a", "a-orders", 100)),
        up_quota(quota("b", "b-pay", 50)),
        up_quota(quota("*", "*", 1000)),
        up_profile(switchyard_proto::v1::ClientProfile {
            allowed_topics: vec!["a-orders".into()],
            ..profile("a")
        }),
        up_profile(switchyard_proto::v1::ClientProfile {
            allowed_topics: vec!["b-pay".into()],
            ..profile("b")
        }),
    ])
    .await;
    Env {
        t,
        a,
        b,
        tokens_file,
        _dir: dir,
    }
}

impl Env {
    fn meta(&self, token: Option<&str>) -> MetadataClient {
        client::metadata(
            self.t.channel.clone(),
            BearerToken::new(token).expect("token"),
        )
    }

    fn admin_as(&self, token: Option<&str>) -> client::AdminClient {
        client::admin(
            self.t.channel.clone(),
            BearerToken::new(token).expect("token"),
        )
    }

    /// The whole configuration with secrets (the admin's view).
    async fn full(&self) -> State {
        let mut a = self.t.admin.clone();
        let s = within(
            STEP,
            "GetVersion",
            a.get_version(GetVersionRequest {
                version: 0,
                include_secrets: true,
            }),
        )
        .await
        .unwrap()
        .into_inner();
        State::from_snapshot(s)
    }
}

async fn watch_as(
    meta: &mut MetadataClient,
    app: &str,
    known: u64,
) -> Result<Streaming<WatchEvent>, Status> {
    within(
        STEP,
        "Watch",
        meta.watch(WatchRequest {
            known_version: known,
            client_id: format!("{app}-1"),
            app: app.into(),
        }),
    )
    .await
    .map(|r| r.into_inner())
}

/// Applies the next watch event to `held` and returns the event's text (for secret checks).
async fn follow(w: &mut Streaming<WatchEvent>, held: &mut State) -> String {
    let ev = next_event(w).await;
    let text = format!("{ev:?}");
    match ev {
        Event::Snapshot(s) => *held = State::from_snapshot(s),
        Event::Delta(d) => held.apply_delta_mut(&d).expect("delta follows"),
    }
    text
}

fn keys<V>(m: &std::collections::BTreeMap<String, V>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn an_app_token_sees_only_its_scope_in_get_snapshot_and_watch() {
    let e = env().await;
    let mut ma = e.meta(Some(&e.a.token));

    let snap: Snapshot = ma
        .get_snapshot(GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let s = State::from_snapshot(snap);
    assert_eq!(s.version, 1);
    assert_eq!(keys(&s.profiles), ["a"]);
    assert_eq!(keys(&s.topics), ["a-orders"]);
    assert_eq!(keys(&s.clusters), ["east"]);
    assert_eq!(s.clusters["east"].properties["sasl.password"], "pw-east");
    assert_eq!(
        s.quotas.keys().cloned().collect::<Vec<_>>(),
        [("*".into(), "*".into()), ("a".into(), "a-orders".into())]
    );
    switchyard_proto::validate::check_state(&s).unwrap();

    // Watch from scratch, and keep checking the held state against the scope of the whole
    // configuration at every version.
    let mut w = watch_as(&mut ma, "a", 0).await.unwrap();
    let mut held = State::default();
    follow(&mut w, &mut held).await;
    assert_eq!(held, scope::scoped(&e.full().await, "a"));

    // 2: only b's topic changes — a's version still advances, with nothing of b's.
    e.t.apply(vec![up_topic(topic("b-pay", "north", 4))]).await;
    let text = follow(&mut w, &mut held).await;
    assert_eq!(held.version, 2);
    assert!(
        !text.contains("b-pay") && !text.contains("pw-north"),
        "{text}"
    );
    assert_eq!(held, scope::scoped(&e.full().await, "a"));

    // 3: a's topic is re-routed to west: west (and its secret) appear, east disappears.
    e.t.apply(vec![up_topic(topic("a-orders", "west", 3))])
        .await;
    let text = follow(&mut w, &mut held).await;
    assert!(text.contains("pw-west"), "{text}");
    assert_eq!(keys(&held.clusters), ["west"]);
    assert_eq!(held.clusters["west"].properties["sasl.password"], "pw-west");
    assert_eq!(held, scope::scoped(&e.full().await, "a"));

    // 4: east's secret changes; a no longer uses east and must not learn it.
    let mut east = secret_cluster("east");
    east.properties
        .insert("sasl.password".into(), "pw-east-rotated".into());
    e.t.apply(vec![up_cluster(east)]).await;
    let text = follow(&mut w, &mut held).await;
    assert!(!text.contains("pw-east"), "{text}");
    assert_eq!(held.version, 4);
    assert_eq!(held, scope::scoped(&e.full().await, "a"));

    // 5: west's secret rotates: a receives it.
    let mut west = secret_cluster("west");
    west.properties
        .insert("sasl.password".into(), "pw-west-rotated".into());
    e.t.apply(vec![up_cluster(west)]).await;
    follow(&mut w, &mut held).await;
    assert_eq!(
        held.clusters["west"].properties["sasl.password"],
        "pw-west-rotated"
    );
    assert_eq!(held, scope::scoped(&e.full().await, "a"));

    // A second watcher of a, resuming from an older version, gets a's scope at the latest.
    let mut w2 = watch_as(&mut e.meta(Some(&e.a.token)), "a", 2)
        .await
        .unwrap();
    let mut held2 = State::default();
    follow(&mut w2, &mut held2).await;
    assert_eq!(held2, held);

    // b sees its own view, none of a's.
    let sb = State::from_snapshot(
        e.meta(Some(&e.b.token))
            .get_snapshot(GetSnapshotRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(keys(&sb.profiles), ["b"]);
    assert_eq!(keys(&sb.topics), ["b-pay"]);
    assert_eq!(keys(&sb.clusters), ["north"]);
    assert!(!format!("{sb:?}").contains("pw-west"));

    // The admin token sees everything, secrets included.
    let all = State::from_snapshot(
        e.meta(Some(ADMIN))
            .get_snapshot(GetSnapshotRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(all, e.full().await);
    assert_eq!(keys(&all.clusters), ["east", "north", "west"]);
    assert_eq!(
        all.clusters["east"].properties["sasl.password"],
        "pw-east-rotated"
    );
}

fn assert_status(r: Result<impl std::fmt::Debug, Status>, code: Code, needle: &str) {
    let s = r.expect_err("must be refused");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().contains(needle),
        "{:?} lacks {needle:?}",
        s.message()
    );
}

#[tokio::test]
async fn an_app_token_cannot_act_as_another_app_nor_call_the_admin_api() {
    let e = env().await;
    let mut ma = e.meta(Some(&e.a.token));

    // Watching or reporting as b with a's token.
    assert_status(
        watch_as(&mut ma, "b", 0).await,
        Code::PermissionDenied,
        "the client token is for app \"a\"; it cannot watch as app \"b\"",
    );
    let report = |app: &str| ReportStatusRequest {
        status: Some(ClientStatus {
            client_id: "c-1".into(),
            app: app.into(),
            language: "rust".into(),
            sdk_version: "0.1.0".into(),
            ..Default::default()
        }),
    };
    assert_status(
        ma.report_status(report("b")).await,
        Code::PermissionDenied,
        "cannot report status as app \"b\"",
    );
    ma.report_status(report("a")).await.unwrap();

    // Every AdminService RPC refuses a client token, saying so.
    let mut adm = e.admin_as(Some(&e.a.token));
    let msg = "this is a client token (app \"a\"); the admin API needs the admin token";
    assert_status(
        adm.apply(ApplyRequest {
            expected_version: 1,
            changes: vec![del_topic("b-pay")],
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        msg,
    );
    assert_status(
        adm.get_version(GetVersionRequest {
            version: 0,
            include_secrets: true,
        })
        .await,
        Code::PermissionDenied,
        msg,
    );
    assert_status(
        adm.get_history(GetHistoryRequest::default()).await,
        Code::PermissionDenied,
        msg,
    );
    assert_status(
        adm.rollback(RollbackRequest::default()).await,
        Code::PermissionDenied,
        msg,
    );
    assert_status(
        adm.list_clients(ListClientsRequest::default()).await,
        Code::PermissionDenied,
        msg,
    );
    assert_status(
        adm.start_migration(StartMigrationRequest::default()).await,
        Code::PermissionDenied,
        msg,
    );
    assert_status(
        adm.advance_migration(MigrationRef::default()).await,
        Code::PermissionDenied,
        msg,
    );
    assert_status(
        adm.abort_migration(MigrationRef::default()).await,
        Code::PermissionDenied,
        msg,
    );
    assert_status(
        adm.list_migrations(ListMigrationsRequest::default()).await,
        Code::PermissionDenied,
        msg,
    );
    assert_eq!(e.t.version().await, 1, "nothing was applied");

    // No token, a wrong token.
    assert_status(
        e.meta(None).get_snapshot(GetSnapshotRequest {}).await,
        Code::Unauthenticated,
        "the metadata API needs a client token",
    );
    assert_status(
        watch_as(&mut e.meta(None), "a", 0).await,
        Code::Unauthenticated,
        "needs a client token",
    );
    assert_status(
        e.meta(Some("syc_not-a-real-token"))
            .get_snapshot(GetSnapshotRequest {})
            .await,
        Code::PermissionDenied,
        "the token is neither a client token nor the admin token",
    );
}

#[tokio::test]
async fn admin_output_redacts_secrets_unless_asked_with_the_admin_token() {
    let e = env().await;
    let mut adm = e.t.admin.clone();

    let redacted = adm
        .get_version(GetVersionRequest {
            version: 0,
            include_secrets: false,
        })
        .await
        .unwrap()
        .into_inner();
    let s = State::from_snapshot(redacted);
    assert_eq!(s.clusters["east"].properties["sasl.password"], REDACTED);
    assert_eq!(s.clusters["east"].properties["sasl.username"], "user-east");

    // Apply's diff shows a changed secret as changed, without either value.
    let mut east = secret_cluster("east");
    east.properties
        .insert("sasl.password".into(), "pw-east-2".into());
    let r = e.t.try_apply(1, vec![up_cluster(east)]).await.unwrap();
    let text = format!("{:?}", r.diff);
    assert!(r.applied);
    assert!(
        text.contains("properties.sasl.password") && text.contains(REDACTED),
        "{text}"
    );
    assert!(!text.contains("pw-east"), "{text}");

    // History diffs: redacted by default, shown on request with the admin token.
    let h = |include_secrets| GetHistoryRequest {
        include_diff: true,
        include_secrets,
        ..Default::default()
    };
    let plain = format!(
        "{:?}",
        adm.get_history(h(false)).await.unwrap().into_inner()
    );
    assert!(!plain.contains("pw-east"), "{plain}");
    let shown = format!("{:?}", adm.get_history(h(true)).await.unwrap().into_inner());
    assert!(shown.contains("pw-east-2"), "{shown}");

    // A redacted placeholder applied back is refused, not stored as the password.
    let mut back = secret_cluster("east");
    back.properties
        .insert("sasl.password".into(), REDACTED.into());
    let err = e.t.try_apply(2, vec![up_cluster(back)]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("is the placeholder <redacted>"),
        "{err:?}"
    );
}

#[tokio::test]
async fn open_mode_serves_no_secrets_and_refuses_to_reveal_them() {
    // No client tokens, no admin token: loopback only, anyone may read — but no secret.
    let t = TestServer::memory().await;
    t.apply(vec![
        up_cluster(secret_cluster("east")),
        up_topic(topic("orders", "east", 1)),
    ])
    .await;
    let s = t.snapshot().await;
    let east = &s.clusters[0];
    assert_eq!(east.properties.get("sasl.username").unwrap(), "user-east");
    assert!(!east.properties.contains_key("sasl.password"), "{east:?}");

    let mut w = t.watch(1).await;
    let mut rotated = secret_cluster("east");
    rotated
        .properties
        .insert("sasl.password".into(), "pw-east-2".into());
    t.apply(vec![up_cluster(rotated)]).await;
    let d = expect_delta(&mut w, 1).await;
    assert!(!format!("{d:?}").contains("pw-east"), "{d:?}");

    let mut adm = t.admin.clone();
    assert_status(
        adm.get_version(GetVersionRequest {
            version: 0,
            include_secrets: true,
        })
        .await,
        Code::PermissionDenied,
        "secret values are returned only by a server with an admin token",
    );
    // A token on a server without client tokens is refused, not ignored.
    assert_status(
        client::metadata(t.channel.clone(), BearerToken::new(Some("syc_x")).unwrap())
            .get_snapshot(GetSnapshotRequest {})
            .await,
        Code::PermissionDenied,
        "this server has no client tokens",
    );
}

#[tokio::test]
async fn bad_client_token_files_are_refused_and_reload_swaps_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let start = |path: PathBuf| {
        switchyard_config::start(ServerConfig {
            client_tokens: Some(path),
            store: StoreConfig::Memory,
            ..memory_config()
        })
    };
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "a 1234\n").unwrap();
    let err = within(STEP, "start", start(bad.clone())).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "{}:1: app \"a\": the SHA-256 must be 64 hex digits, got 4 characters",
            bad.display()
        )),
        "{text}"
    );
    let missing = dir.path().join("missing");
    let err = within(STEP, "start", start(missing.clone()))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!(
            "could not read client tokens file {}",
            missing.display()
        )),
        "{err:#}"
    );

    // The admin token may not double as a client token.
    let same = dir.path().join("same");
    std::fs::write(
        &same,
        format!("ops {}\n", tokens::hex(&tokens::hash_token(ADMIN))),
    )
    .unwrap();
    let err = within(
        STEP,
        "start",
        switchyard_config::start(ServerConfig {
            admin_token: Some(ADMIN.into()),
            client_tokens: Some(same),
            ..memory_config()
        }),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("gives app \"ops\" the admin token"),
        "{err:#}"
    );

    // Reload: a new token for a replaces the old one; a broken file keeps the tokens in force.
    let e = env().await;
    let mut wa = watch_as(&mut e.meta(Some(&e.a.token)), "a", 0)
        .await
        .unwrap();
    let mut wb = watch_as(&mut e.meta(Some(&e.b.token)), "b", 0)
        .await
        .unwrap();
    let (mut ha, mut hb) = (State::default(), State::default());
    follow(&mut wa, &mut ha).await;
    follow(&mut wb, &mut hb).await;
    let a2 = tokens::mint("a").unwrap();
    write_tokens(&e.tokens_file, &[&a2.line, &e.b.line]);
    let tokens = e.t.server.client_tokens().unwrap();
    assert_eq!(tokens.reload().unwrap(), 2);
    // a's open stream ends: its token is revoked. b's token is unchanged: b keeps watching.
    let end = within(STEP, "revoked stream ends", wa.message()).await;
    assert_status(end, Code::PermissionDenied, "the client token was revoked");
    e.t.apply(vec![up_topic(topic("b-pay", "north", 5))]).await;
    follow(&mut wb, &mut hb).await;
    assert_eq!(hb.topics["b-pay"].partitions, 5);
    assert_status(
        e.meta(Some(&e.a.token))
            .get_snapshot(GetSnapshotRequest {})
            .await,
        Code::PermissionDenied,
        "neither a client token",
    );
    e.meta(Some(&a2.token))
        .get_snapshot(GetSnapshotRequest {})
        .await
        .unwrap();
    std::fs::write(&e.tokens_file, format!("{}\n{}\n", a2.line, a2.line)).unwrap();
    let err = tokens.reload().unwrap_err().to_string();
    assert!(
        err.contains(":2: app \"a\" already has a token on line 1"),
        "{err}"
    );
    e.meta(Some(&a2.token))
        .get_snapshot(GetSnapshotRequest {})
        .await
        .unwrap();
}

async fn cli(endpoint: &str, token: &str, args: &[&str]) -> std::process::Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_ENDPOINT", endpoint)
        .env("SWITCHYARD_TOKEN", token)
        .env_remove("SWITCHYARD_CA_CERT")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    within(STEP, "switchyard CLI", out).await.unwrap()
}

#[tokio::test]
async fn cli_get_redacts_without_show_secrets_and_mints_tokens() {
    let e = env().await;
    let url = e.t.url();
    let out = cli(&url, ADMIN, &["get", "clusters", "-o", "json"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(REDACTED) && !stdout.contains("pw-east"),
        "{stdout}"
    );

    let out = cli(
        &url,
        ADMIN,
        &["get", "clusters", "-o", "json", "--show-secrets"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("pw-east"), "{stdout}");

    // A client token: its own scope, and no way to ask for secrets through the admin API.
    let out = cli(&url, &e.a.token, &["get", "topics", "-o", "json"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("a-orders") && !stdout.contains("b-pay"),
        "{stdout}"
    );
    let out = cli(&url, &e.a.token, &["get", "clusters", "--show-secrets"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("this is a client token"),
        "{out:?}"
    );

    // `token new` prints a token once and the line that admits it.
    let out = cli(&url, "", &["token", "new", "--app", "checkout"]).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line");
    let line = stdout.lines().last().unwrap();
    let table = tokens::TokenTable::parse(Path::new("f"), line).unwrap();
    assert_eq!(table.app_of(token), Some("checkout"));

    // `serve` refuses a bad client-tokens file with the file, line and reason.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tokens");
    std::fs::write(&bad, "checkout zz\n").unwrap();
    let out = cli(
        &url,
        "",
        &[
            "serve",
            "--in-memory",
            "--listen",
            "127.0.0.1:0",
            "--client-tokens",
            bad.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:1: app \"checkout\": the SHA-256 must be 64 hex digits",
            bad.display()
        )),
        "{stderr}"
    );
}
