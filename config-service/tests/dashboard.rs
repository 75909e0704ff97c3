//! The admin HTTP port of a real server: `/metrics` parsed strictly as the Prometheus text
//! format with counters that move under gRPC traffic, the JSON endpoints and server-sent events
//! behind the dashboard (`migrations` events follow a topic moved between the two real Kafka
//! clusters of `SWITCHYARD_KAFKA_CLUSTERS`, started by scripts/test.sh), and the admin token
//! guarding them.

mod common;
#[path = "common/promtext.rs"]
mod promtext;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use promtext::{Family, parse_exposition, sample};
use serde_json::Value;
use switchyard_config::ServerConfig;
use switchyard_config::client::{self, BearerToken};
use switchyard_proto::v1::{ClientStatus, ReportStatusRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "dashboard-token-0123456789";

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.0 client (the server closes the connection after each response).

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn request_text(
    method: &str,
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> String {
    let mut req = format!("{method} {path} HTTP/1.0\r\n");
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers)
}

async fn http(
    method: &str,
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Resp {
    within(STEP, &format!("{method} {path}"), async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request_text(method, addr, path, extra, body).as_bytes())
            .await
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).expect("UTF-8 response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
        let (status, headers) = parse_head(head);
        Resp {
            status,
            headers,
            body: body.to_string(),
        }
    })
    .await
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    http("GET", addr, path, &[], "").await
}

/// An open `/events` stream.
struct Events {
    s: TcpStream,
    buf: String,
}

impl Events {
    async fn open(addr: SocketAddr, extra: &[(&str, &str)]) -> (u16, Option<Self>) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request_text("GET", addr, "/events", extra, "").as_bytes())
            .await
            .unwrap();
        let mut e = Events {
            s,
            buf: String::new(),
        };
        let head = within(STEP, "event stream head", async {
            loop {
                if let Some((h, rest)) = e.buf.split_once("\r\n\r\n") {
                    let h = h.to_string();
                    e.buf = rest.to_string();
                    break h;
                }
                e.fill().await;
            }
        })
        .await;
        let (status, headers) = parse_head(&head);
        if status == 200 {
            let ct = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.clone());
            assert_eq!(ct.as_deref(), Some("text/event-stream"));
            (status, Some(e))
        } else {
            (status, None)
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "event stream closed; buffered: {:?}", self.buf);
        self.buf.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
    }

    /// The next event (skipping keep-alive comments): (name, data as JSON).
    async fn next(&mut self) -> (String, Value) {
        within(STEP, "next server-sent event", async {
            loop {
                if let Some((block, rest)) = self.buf.split_once("\n\n") {
                    let block = block.to_string();
                    self.buf = rest.to_string();
                    let mut name = String::new();
                    let mut data = String::new();
                    for l in block.lines() {
                        if let Some(v) = l.strip_prefix("event:") {
                            name = v.trim().to_string();
                        } else if let Some(v) = l.strip_prefix("data:") {
                            data.push_str(v.trim());
                        }
                    }
                    if name.is_empty() {
                        continue;
                    }
                    return (name, serde_json::from_str(&data).unwrap());
                }
                self.fill().await;
            }
        })
        .await
    }

    /// Skips events until one named `name` satisfies `pred`.
    async fn until(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (n, d) = self.next().await;
            if n == name && pred(&d) {
                return d;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn admin_config(token: Option<&str>) -> ServerConfig {
    ServerConfig {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_token: token.map(String::from),
        ..memory_config()
    }
}

async fn scrape(addr: SocketAddr, extra: &[(&str, &str)]) -> BTreeMap<String, Family> {
    let r = http("GET", addr, "/metrics", extra, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_exposition(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body))
}

/// Scrapes until `pred` holds (the last call's status may be recorded just after its reply).
async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    pred: impl Fn(&BTreeMap<String, Family>) -> bool,
) -> BTreeMap<String, Family> {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let f = scrape(addr, &[]).await;
        if pred(&f) {
            return f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(client_id: &str, app: &str, applied_version: u64) -> ReportStatusRequest {
    ReportStatusRequest {
        status: Some(ClientStatus {
            client_id: client_id.into(),
            app: app.into(),
            language: "rust".into(),
            sdk_version: "0.1.0".into(),
            applied_version,
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn metrics_parse_strictly_and_counters_move_with_traffic() {
    let t = TestServer::start(admin_config(None), None).await;
    let addr = t.server.admin_addr().expect("admin port");

    let f = scrape(addr, &[]).await;
    assert_eq!(
        sample(&f, "switchyard_config_versions_applied_total", &[]),
        Some(0.0)
    );
    assert_eq!(sample(&f, "switchyard_config_version", &[]), Some(0.0));
    assert_eq!(sample(&f, "switchyard_watchers_connected", &[]), Some(0.0));
    assert_eq!(
        sample(&f, "switchyard_push_latency_seconds_count", &[]),
        Some(0.0)
    );
    for phase in switchyard_config::metrics::MIGRATION_PHASES {
        assert_eq!(
            sample(&f, "switchyard_migrations", &[("phase", phase)]),
            Some(0.0),
            "{phase}"
        );
    }
    assert_eq!(f["switchyard_push_latency_seconds"].kind, "histogram");
    assert_eq!(
        f["switchyard_config_versions_applied_total"].kind,
        "counter"
    );
    for (name, fam) in &f {
        assert!(name.starts_with("switchyard_"), "{name}");
        assert!(
            fam.help.as_deref().is_some_and(|h| !h.is_empty()),
            "{name} has no HELP"
        );
        assert_eq!(fam.kind == "counter", name.ends_with("_total"), "{name}");
    }

    // Traffic: a watcher, two versions, a stale write, a status report of a lagging client.
    let mut w = t.watch(0).await;
    expect_snapshot(&mut w).await;
    t.apply(vec![up_cluster(cluster("east"))]).await;
    expect_delta(&mut w, 0).await;
    t.apply(vec![up_topic(topic("orders", "east", 3))]).await;
    expect_delta(&mut w, 1).await;
    let e = t
        .try_apply(0, vec![up_cluster(cluster("west"))])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let mut meta = t.meta.clone();
    meta.report_status(report("c1", "billing", 1))
        .await
        .unwrap();

    let ok = [
        ("grpc_service", "switchyard.v1.AdminService"),
        ("grpc_method", "Apply"),
    ];
    let f = scrape_until(addr, "the Apply calls", |f| {
        sample(
            f,
            "switchyard_grpc_requests_total",
            &[ok[0], ok[1], ("grpc_code", "OK")],
        ) == Some(2.0)
            && sample(
                f,
                "switchyard_grpc_requests_total",
                &[ok[0], ok[1], ("grpc_code", "FailedPrecondition")],
            ) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(&f, "switchyard_config_versions_applied_total", &[]),
        Some(2.0)
    );
    assert_eq!(sample(&f, "switchyard_config_version", &[]), Some(2.0));
    assert_eq!(sample(&f, "switchyard_watchers_connected", &[]), Some(1.0));
    assert!(sample(&f, "switchyard_push_latency_seconds_count", &[]).unwrap() >= 2.0);
    assert_eq!(
        sample(
            &f,
            "switchyard_clients",
            &[("app", "billing"), ("behind", "true")]
        ),
        Some(1.0)
    );
    let meta_ok = |m: &str| {
        sample(
            &f,
            "switchyard_grpc_requests_total",
            &[
                ("grpc_service", "switchyard.v1.MetadataService"),
                ("grpc_method", m),
                ("grpc_code", "OK"),
            ],
        )
        .unwrap_or(0.0)
    };
    assert!(meta_ok("GetSnapshot") >= 2.0, "{}", meta_ok("GetSnapshot"));
    assert_eq!(meta_ok("ReportStatus"), 1.0);

    // The watcher goes away: the gauge follows, and the stream is counted once it ends.
    drop(w);
    scrape_until(addr, "the watcher leaving", |f| {
        sample(f, "switchyard_watchers_connected", &[]) == Some(0.0)
    })
    .await;
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dashboard_endpoints_and_events_follow_changes() {
    let t = TestServer::start(admin_config(None), None).await;
    let addr = t.server.admin_addr().unwrap();

    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.header("content-security-policy").is_some());
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    for asset in ["/app.js", "/app.css"] {
        assert_eq!(get(addr, asset).await.status, 200, "{asset}");
    }

    let (status, ev) = Events::open(addr, &[]).await;
    assert_eq!(status, 200);
    let mut ev = ev.unwrap();
    assert_eq!(
        ev.next().await,
        ("hello".to_string(), serde_json::json!({"version": 0}))
    );

    // A new version reaches the event stream, and the endpoints show it.
    let mut a = t.admin.clone();
    a.apply(switchyard_proto::v1::ApplyRequest {
        expected_version: 0,
        changes: vec![
            up_cluster(cluster("east")),
            up_topic(topic("orders", "east", 3)),
        ],
        author: "alice".into(),
        comment: "add orders".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    ev.until("version", |d| d["version"] == 1).await;
    let s = get(addr, "/api/state").await.json();
    assert_eq!(s["version"], 1);
    assert_eq!(s["clusters"][0]["name"], "east");
    assert_eq!(s["clusters"][0]["topics"], 1);
    assert_eq!(s["topics"][0]["name"], "orders");
    assert_eq!(s["topics"][0]["cluster"], "east");
    let h = get(addr, "/api/history").await.json();
    let e = &h["entries"][0];
    assert_eq!(
        (
            e["version"].as_u64(),
            e["author"].as_str(),
            e["comment"].as_str()
        ),
        (Some(1), Some("alice"), Some("add orders"))
    );
    assert!(
        e["diff"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "orders" && d["action"] == "added")
    );

    // A client reporting reaches the event stream and the inventory.
    let mut meta = t.meta.clone();
    meta.report_status(report("c1", "billing", 0))
        .await
        .unwrap();
    ev.until("clients", |_| true).await;
    let c = get(addr, "/api/clients").await.json();
    assert_eq!(c["total"], 1);
    assert_eq!(c["clients"][0]["app"], "billing");
    assert_eq!(c["clients"][0]["versions_behind"], 1);
    assert_eq!(
        get(addr, "/api/migrations").await.json()["migrations"],
        serde_json::json!([])
    );

    // Queries are validated.
    for bad in [
        "/api/history?limit=0",
        "/api/history?limit=100000",
        "/api/state?bogus=1",
        "/api/state?limit=x",
        "/api/clients?app=no%20spaces",
    ] {
        let r = get(addr, bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{bad}");
    }
    assert_eq!(get(addr, "/nope").await.status, 404);

    // Without a token, a request naming a foreign host (DNS rebinding) is refused.
    let r = http(
        "GET",
        addr,
        "/api/state",
        &[("Host", "attacker.example")],
        "",
    )
    .await;
    assert_eq!(r.status, 421, "{}", r.body);

    // Shutdown ends the event stream.
    within(STEP, "shutdown", t.server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn with_a_token_the_admin_port_refuses_unauthorised_access() {
    let t = TestServer::start(admin_config(Some(TOKEN)), None).await;
    let addr = t.server.admin_addr().unwrap();
    let bearer = format!("Bearer {TOKEN}");

    for path in [
        "/metrics",
        "/api/state",
        "/api/clients",
        "/api/history",
        "/api/migrations",
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
        assert!(!r.body.contains(TOKEN));
        let r = http(
            "GET",
            addr,
            path,
            &[("Authorization", "Bearer dashboard-token-0123456780")],
            "",
        )
        .await;
        assert_eq!(r.status, 403, "{path}");
        let r = http("GET", addr, path, &[("Authorization", &bearer)], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    assert_eq!(Events::open(addr, &[]).await.0, 401);
    assert_eq!(
        Events::open(addr, &[("Authorization", &bearer)]).await.0,
        200
    );
    // The page itself and the health check are open: the page asks for the token.
    assert_eq!(get(addr, "/").await.status, 200);
    assert_eq!(get(addr, "/healthz").await.status, 200);

    // Signing in sets a cookie that the page's requests (and its event stream) carry.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = http("POST", addr, "/login", &form, "token=wrong-token-000000000").await;
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
    let r = http("POST", addr, "/login", &form, &format!("token={TOKEN}")).await;
    assert_eq!(r.status, 204);
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(r.header("set-cookie").unwrap().contains("HttpOnly"));
    let r = http("GET", addr, "/api/state", &[("Cookie", &cookie)], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(Events::open(addr, &[("Cookie", &cookie)]).await.0, 200);

    // The gRPC admin API keeps requiring the token too, and the refusal is counted.
    let mut none = client::admin(t.channel.clone(), BearerToken::default());
    none.list_clients(switchyard_proto::v1::ListClientsRequest::default())
        .await
        .unwrap_err();
    let f = scrape(addr, &[("Authorization", &bearer)]).await;
    assert_eq!(
        sample(
            &f,
            "switchyard_grpc_requests_total",
            &[
                ("grpc_service", "switchyard.v1.AdminService"),
                ("grpc_method", "ListClients"),
                ("grpc_code", "Unauthenticated")
            ]
        ),
        Some(1.0)
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_non_loopback_admin_port_requires_a_token() {
    let cfg = ServerConfig {
        admin_listen: Some("0.0.0.0:0".parse().unwrap()),
        ..memory_config()
    };
    let e = within(STEP, "start", switchyard_config::start(cfg))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("admin HTTP port"), "{e:#}");
}

/// `switchyard serve --admin-listen`: the admin line follows the unchanged gRPC line, the port
/// answers, and SIGTERM stops the process promptly even with a dashboard event stream open.
#[tokio::test]
async fn the_binary_prints_the_admin_address_and_drains_event_streams_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve",
            "--in-memory",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchyard serve");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (first, second) = within(STEP, "the two address lines", async {
        let a = lines.next_line().await.unwrap().expect("first line");
        let b = lines.next_line().await.unwrap().expect("second line");
        (a, b)
    })
    .await;
    assert!(first.starts_with("listening on 127.0.0.1:"), "{first}");
    let admin: SocketAddr = second
        .strip_prefix("admin http://")
        .and_then(|r| r.split_once('/'))
        .map(|(a, _)| a.parse().unwrap())
        .unwrap_or_else(|| panic!("unexpected admin line {second:?}"));
    assert_eq!(get(admin, "/healthz").await.status, 200);
    scrape(admin, &[]).await;
    let (status, ev) = Events::open(admin, &[]).await;
    assert_eq!(status, 200);
    let mut ev = ev.unwrap();
    assert_eq!(ev.next().await.0, "hello");

    let pid = child.id().unwrap().to_string();
    let st = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(st.success());
    let exit = within(STEP, "exit after SIGTERM", child.wait())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// The two Kafka clusters of the test command (`SWITCHYARD_KAFKA_CLUSTERS="h:p;h:p"`).
fn kafka_clusters() -> (String, String) {
    let v = std::env::var("SWITCHYARD_KAFKA_CLUSTERS").expect(
        "SWITCHYARD_KAFKA_CLUSTERS must name two Kafka clusters (scripts/test.sh starts them)",
    );
    let mut it = v.split(';').map(str::to_string);
    (
        it.next().expect("first cluster"),
        it.next()
            .expect("second cluster in SWITCHYARD_KAFKA_CLUSTERS"),
    )
}

/// Creates `name` on the cluster at `bootstrap` and waits until it has partition leaders.
async fn create_kafka_topic(bootstrap: &str, name: &str, partitions: i32) {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let a: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let res = within(
        Duration::from_secs(60),
        "create the Kafka topic",
        a.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ),
    )
    .await
    .expect("create topic");
    for r in res {
        r.expect("topic created");
    }
    within(Duration::from_secs(60), "the topic's leaders", async {
        loop {
            let md = a.inner().fetch_metadata(Some(name), Duration::from_secs(5));
            if let Ok(md) = md
                && md.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Awaits `migrations` events until /api/migrations shows migration `id` in `phase`; returns
/// the generation of each event seen.
async fn until_phase(ev: &mut Events, addr: SocketAddr, id: &str, phase: &str) -> Vec<u64> {
    let mut generations = Vec::new();
    within(STEP, &format!("migration {id} in phase {phase}"), async {
        loop {
            let d = ev.until("migrations", |_| true).await;
            generations.push(d["generation"].as_u64().expect("a generation"));
            let l = get(addr, "/api/migrations").await.json();
            let m = l["migrations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == id)
                .cloned();
            if m.as_ref().is_some_and(|m| m["phase"] == phase) {
                return;
            }
        }
    })
    .await;
    generations
}

/// Every change of a migration reaches the dashboard's event stream as a `migrations` event
/// (the last change of a burst included), so the page follows a migration through its phases.
/// Needs two real Kafka clusters: the coordinator creates the destination topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_changes_reach_the_event_stream() {
    use switchyard_config::migration::MigrationConfig;
    use switchyard_proto::v1::{MigrationRef, StartMigrationRequest};

    let (first, second) = kafka_clusters();
    let name = format!("dash-move-{}-{}", std::process::id(), rand::random::<u32>());
    create_kafka_topic(&first, &name, 2).await;
    // Nothing advances by itself: the operator's --advance drives the phases.
    let cfg = ServerConfig {
        migrations: MigrationConfig {
            client_grace: Duration::from_secs(3600),
            ..Default::default()
        },
        ..admin_config(None)
    };
    let t = TestServer::start(cfg, None).await;
    let addr = t.server.admin_addr().unwrap();
    let real = |n: &str, b: &str| switchyard_proto::v1::Cluster {
        bootstrap: vec![b.into()],
        ..cluster(n)
    };
    t.apply(vec![
        up_cluster(real("first", &first)),
        up_cluster(real("second", &second)),
        up_topic(topic(&name, "first", 2)),
    ])
    .await;

    let (status, ev) = Events::open(addr, &[]).await;
    assert_eq!(status, 200);
    let mut ev = ev.unwrap();
    assert_eq!(ev.next().await.0, "hello");

    let mut a = t.admin.clone();
    let m = within(
        Duration::from_secs(60),
        "StartMigration",
        a.start_migration(StartMigrationRequest {
            topic: name.clone(),
            to_cluster: "second".into(),
            author: "tester".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("the migration starts")
    .into_inner();
    let mut generations = until_phase(&mut ev, addr, &m.id, "switch").await;
    let advance = |id: String| {
        let mut a = t.admin.clone();
        async move {
            within(
                Duration::from_secs(60),
                "AdvanceMigration",
                a.advance_migration(MigrationRef {
                    id,
                    author: "tester".into(),
                    ..Default::default()
                }),
            )
            .await
            .expect("the migration advances")
        }
    };
    // SWITCH → SEALED by the operator, then SEALED → DRAIN by the coordinator.
    advance(m.id.clone()).await;
    generations.extend(until_phase(&mut ev, addr, &m.id, "drain").await);
    advance(m.id.clone()).await;
    generations.extend(until_phase(&mut ev, addr, &m.id, "complete").await);
    assert!(
        generations.windows(2).all(|w| w[0] < w[1]),
        "each event carries a newer change counter: {generations:?}"
    );
    let l = get(addr, "/api/migrations").await.json();
    let done = &l["migrations"][0];
    assert_eq!(done["id"], m.id.as_str());
    assert_eq!(done["forced"], true);
    assert_eq!(done["from"]["cluster"], "first");
    assert_eq!(done["to"]["cluster"], "second");
    within(STEP, "shutdown", t.server.shutdown()).await.unwrap();
}
