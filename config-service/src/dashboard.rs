//! The admin HTTP port: Prometheus `/metrics`, a read-only web dashboard at `/`, the JSON
//! endpoints behind it (`/api/…`) and live updates as server-sent events (`/events`).
//!
//! Access: with an admin token configured, everything except the static page assets and
//! `/healthz` needs the token, as `Authorization: Bearer <token>` or the cookie set by
//! `POST /login`. Without a token the port may only listen on loopback, and requests must name
//! a loopback host (so a web page on another origin cannot read it through DNS rebinding).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use switchyard_proto::v1::{ClusterState, GetHistoryRequest, ListClientsResponse};
use switchyard_proto::validate;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::time::Instant;

use crate::metrics::{self, Metrics};
use crate::output;
use crate::service::ConfigService;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// Name of the session cookie holding the admin token.
const COOKIE: &str = "switchyard_admin";
/// Most event streams open at once.
const MAX_EVENT_STREAMS: usize = 256;
/// Least time between two `clients` events on one stream (status reports come in bursts).
const CLIENTS_EVENT_GAP: Duration = Duration::from_millis(250);
/// Least time between two `migrations` events on one stream (a phase change, and the progress
/// that every client report may move, come in bursts).
const MIGRATIONS_EVENT_GAP: Duration = Duration::from_millis(200);
/// How often expired client leases are swept (so the dashboard sees clients go away).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

const STATE_LIMIT_DEFAULT: usize = 2_000;
const STATE_LIMIT_MAX: usize = 20_000;
const CLIENTS_LIMIT_DEFAULT: usize = 1_000;
const CLIENTS_LIMIT_MAX: usize = 10_000;
const HISTORY_LIMIT_DEFAULT: u32 = 20;
const HISTORY_LIMIT_MAX: u32 = 200;
const FILTER_MAX_BYTES: usize = 200;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Shared state of the admin HTTP handlers.
#[derive(Clone)]
pub struct AdminHttp {
    svc: ConfigService,
    metrics: Arc<Metrics>,
    token: Option<Arc<[u8]>>,
    shutdown: watch::Receiver<bool>,
    streams: Arc<Semaphore>,
}

impl std::fmt::Debug for AdminHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHttp")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl AdminHttp {
    /// Handlers over `svc`; streams end when `shutdown` turns true.
    pub fn new(
        svc: ConfigService,
        metrics: Arc<Metrics>,
        token: Option<&str>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            svc,
            metrics,
            token: token.map(|t| Arc::from(t.as_bytes())),
            shutdown,
            streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        }
    }

    /// The routes of the admin port.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(index))
            .route("/app.js", get(app_js))
            .route("/app.css", get(app_css))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/metrics", get(metrics_text))
            .route("/api/state", get(api_state))
            .route("/api/clients", get(api_clients))
            .route("/api/history", get(api_history))
            .route("/api/migrations", get(api_migrations))
            .route("/events", get(events))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page") })
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self)
    }

    /// Expires client leases every second until shutdown, so that clients going away reach
    /// the dashboard's event streams.
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let clients = self.svc.clients().clone();
        let mut stop = self.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => clients.sweep(),
                    r = stop.wait_for(|v| *v) => { let _ = r; return; }
                }
            }
        })
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), HttpError> {
        let Some(want) = &self.token else {
            return Ok(());
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let got = bearer.or_else(|| cookie(headers, COOKIE));
        match got {
            None => Err(HttpError::Unauthenticated),
            Some(t) if bool::from(t.as_bytes().ct_eq(want)) => Ok(()),
            Some(_) => Err(HttpError::Forbidden),
        }
    }
}

/// The value of cookie `name`, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a `Host` header names this machine's loopback interface.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:port
        rest.split_once(']').map(|(h, _)| h).unwrap_or(rest)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Host check (open ports only), then security headers on every response.
async fn guard(State(s): State<AdminHttp>, req: Request, next: Next) -> Response {
    if s.token.is_none() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        if !loopback_host(host) {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                "without an admin token this port answers only requests for a loopback host (127.0.0.1, ::1, localhost)",
            );
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// A JSON error body `{"error": message}`.
fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

/// Why an admin HTTP request was refused.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error(
        "the admin token is required: send `Authorization: Bearer <token>` or sign in on the dashboard"
    )]
    Unauthenticated,
    #[error("the admin token is not valid")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let code = match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
        };
        let mut r = error(code, &self.to_string());
        if let Self::Unauthenticated = self {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Sets the session cookie when the token is right.
async fn login(
    State(s): State<AdminHttp>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a form with a `token` field",
        );
    };
    let Some(want) = &s.token else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let t = f.token.trim();
    if t.len() > 4096
        || !t.bytes().all(|b| b.is_ascii_graphic())
        || !bool::from(t.as_bytes().ct_eq(want))
    {
        return error(StatusCode::FORBIDDEN, "the admin token is not valid");
    }
    let c = format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
    match HeaderValue::from_str(&c) {
        Ok(v) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, v)]).into_response(),
        Err(_) => error(StatusCode::FORBIDDEN, "the admin token is not valid"),
    }
}

async fn logout() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
    )
        .into_response()
}

async fn metrics_text(
    State(s): State<AdminHttp>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    s.check_token(&headers)?;
    let body = s.metrics.render(&s.svc);
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response())
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, HttpError> {
    q.map(|Query(q)| q)
        .map_err(|e| HttpError::BadRequest(e.body_text()))
}

fn check_limit<T: PartialOrd + Copy + std::fmt::Display + Default>(
    v: Option<T>,
    default: T,
    max: T,
) -> Result<T, HttpError> {
    match v {
        None => Ok(default),
        Some(n) if n > T::default() && n <= max => Ok(n),
        Some(n) => Err(HttpError::BadRequest(format!(
            "limit {n} is out of range: 1 to {max}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    /// Only topics whose name, cluster or physical name contains this.
    q: Option<String>,
    limit: Option<usize>,
}

fn cluster_state(s: i32) -> &'static str {
    match ClusterState::try_from(s) {
        Ok(ClusterState::Draining) => "draining",
        Ok(ClusterState::Disabled) => "disabled",
        _ => "active",
    }
}

/// Clusters (with topic counts) and the topics on them, filtered and capped.
async fn api_state(
    State(s): State<AdminHttp>,
    headers: HeaderMap,
    q: Result<Query<StateQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    s.check_token(&headers)?;
    let q = query(q)?;
    let limit = check_limit(q.limit, STATE_LIMIT_DEFAULT, STATE_LIMIT_MAX)?;
    let filter = q.q.unwrap_or_default();
    if filter.len() > FILTER_MAX_BYTES || filter.chars().any(char::is_control) {
        return Err(HttpError::BadRequest(format!(
            "q must be at most {FILTER_MAX_BYTES} bytes without control characters"
        )));
    }
    let st = s.svc.store().latest();
    let mut per_cluster: BTreeMap<&str, usize> = BTreeMap::new();
    for t in st.topics.values() {
        *per_cluster.entry(t.cluster.as_str()).or_default() += 1;
    }
    let mut matched: Vec<_> = st
        .topics
        .values()
        .filter(|t| {
            filter.is_empty()
                || t.name.contains(&filter)
                || t.cluster.contains(&filter)
                || t.physical.contains(&filter)
        })
        .collect();
    matched.sort_by(|a, b| (&a.cluster, &a.name).cmp(&(&b.cluster, &b.name)));
    let topics_matched = matched.len();
    matched.truncate(limit);
    Ok(Json(json!({
        "version": st.version,
        "created_unix_ms": st.created_unix_ms,
        "author": st.author,
        "comment": st.comment,
        "clusters": st.clusters.values().map(|c| json!({
            "name": c.name,
            "state": cluster_state(c.state),
            "bootstrap": c.bootstrap,
            "labels": c.labels,
            "topics": per_cluster.get(c.name.as_str()).copied().unwrap_or(0),
        })).collect::<Vec<_>>(),
        "topics": matched.iter().map(|t| json!({
            "name": t.name,
            "cluster": t.cluster,
            "physical": if t.physical.is_empty() { &t.name } else { &t.physical },
            "partitions": t.partitions,
            "owner": t.owner,
        })).collect::<Vec<_>>(),
        "topics_total": st.topics.len(),
        "topics_matched": topics_matched,
        "truncated": topics_matched > limit,
        "quotas": st.quotas.len(),
        "profiles": st.profiles.len(),
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsQuery {
    app: Option<String>,
    limit: Option<usize>,
}

/// The client inventory (as `switchyard clients -o json`), capped.
async fn api_clients(
    State(s): State<AdminHttp>,
    headers: HeaderMap,
    q: Result<Query<ClientsQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    s.check_token(&headers)?;
    let q = query(q)?;
    let limit = check_limit(q.limit, CLIENTS_LIMIT_DEFAULT, CLIENTS_LIMIT_MAX)?;
    let app = q.app.unwrap_or_default();
    if !app.is_empty()
        && let Err(e) = validate::check_name("app", &app)
    {
        return Err(HttpError::BadRequest(e.to_string()));
    }
    let current_version = s.svc.store().latest().version;
    let mut clients = s.svc.clients().list(&app, current_version);
    let total = clients.len();
    let behind = clients.iter().filter(|c| c.versions_behind > 0).count();
    clients.truncate(limit);
    let mut v = output::clients_json(&ListClientsResponse {
        clients,
        current_version,
    });
    if let Value::Object(m) = &mut v {
        m.insert("total".into(), json!(total));
        m.insert("behind".into(), json!(behind));
        m.insert("truncated".into(), json!(total > limit));
    }
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Versions strictly older than this (0 or absent = from the latest).
    before: Option<u64>,
    limit: Option<u32>,
}

/// History with diffs, newest first (as `switchyard history --diff -o json`).
async fn api_history(
    State(s): State<AdminHttp>,
    headers: HeaderMap,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    s.check_token(&headers)?;
    let q = query(q)?;
    let limit = check_limit(q.limit, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)?;
    Ok(
        match s
            .svc
            .history(GetHistoryRequest {
                before_version: q.before.unwrap_or(0),
                limit,
                include_diff: true,
                include_secrets: false,
            })
            .await
        {
            Ok(h) => Json(output::history_json(&h)).into_response(),
            Err(e) => {
                let status = tonic::Status::from(e);
                let code = match status.code() {
                    tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                error(code, status.message())
            }
        },
    )
}

/// Migrations, newest first, with their phase and progress.
async fn api_migrations(
    State(s): State<AdminHttp>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    s.check_token(&headers)?;
    let list = match s.svc.coordinator() {
        Some(c) => c
            .list(&switchyard_proto::v1::ListMigrationsRequest::default())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut v = crate::output::migrations_json(&list);
    v["supported"] = json!(true);
    Ok(Json(v).into_response())
}

struct StreamState {
    versions: broadcast::Receiver<Arc<crate::hub::Published>>,
    clients: Debounced,
    /// Without a counter when no migration coordinator runs (or once it stopped).
    migrations: Debounced,
    shutdown: watch::Receiver<bool>,
    svc: ConfigService,
    hello: Option<Event>,
    _permit: OwnedSemaphorePermit,
    _open: OpenGuard,
}

/// A change counter turned into events named `name`, at most one per `gap`: the first change
/// after a quiet `gap` goes out at once, later ones when the gap since the last event ends.
/// The event carries the counter as it is when it goes out, so the last change is never lost.
struct Debounced {
    name: &'static str,
    gap: Duration,
    rx: Option<watch::Receiver<u64>>,
    due: Option<Instant>,
    last: Option<Instant>,
}

impl Debounced {
    fn new(name: &'static str, gap: Duration, rx: Option<watch::Receiver<u64>>) -> Self {
        let rx = rx.map(|mut rx| {
            rx.borrow_and_update();
            rx
        });
        Self {
            name,
            gap,
            rx,
            due: None,
            last: None,
        }
    }

    /// Waits for what comes next: the due event goes out (`Some(counter)`), or a change
    /// schedules one (`None`). Never resolves without a counter; Err when the counter's sender
    /// is gone. Cancel-safe: nothing changes until it resolves.
    async fn next(&mut self) -> Result<Option<u64>, watch::error::RecvError> {
        match (self.due, &mut self.rx) {
            (Some(t), _) => {
                tokio::time::sleep_until(t).await;
                Ok(Some(self.fire()))
            }
            (None, Some(rx)) => {
                rx.changed().await?;
                self.schedule();
                Ok(None)
            }
            (None, None) => std::future::pending().await,
        }
    }

    /// Schedules the event for a change just seen.
    fn schedule(&mut self) {
        let now = Instant::now();
        self.due = Some(match self.last {
            Some(l) if now < l + self.gap => l + self.gap,
            _ => now,
        });
    }

    /// Sends the due event: the counter as it is now.
    fn fire(&mut self) -> u64 {
        self.due = None;
        self.last = Some(Instant::now());
        self.rx.as_mut().map_or(0, |rx| *rx.borrow_and_update())
    }

    fn event(&self, generation: u64) -> Event {
        Event::default()
            .event(self.name)
            .data(json!({ "generation": generation }).to_string())
    }
}

struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn version_event(v: u64) -> Event {
    Event::default()
        .event("version")
        .data(json!({ "version": v }).to_string())
}

/// Server-sent events: `hello` first, then `version` on each new version, `clients` when the
/// client inventory changes and `migrations` when a migration changes phase or progress. The
/// page re-reads the JSON endpoints on each.
async fn events(State(s): State<AdminHttp>, headers: HeaderMap) -> Result<Response, HttpError> {
    s.check_token(&headers)?;
    let Ok(permit) = s.streams.clone().try_acquire_owned() else {
        return Ok(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many dashboard event streams are open",
        ));
    };
    s.metrics.event_streams().inc();
    // Subscribe before reading the current version, so nothing published in between is missed.
    let versions = s.svc.hub().subscribe();
    let clients = Debounced::new(
        "clients",
        CLIENTS_EVENT_GAP,
        Some(s.svc.clients().subscribe()),
    );
    let migrations = Debounced::new(
        "migrations",
        MIGRATIONS_EVENT_GAP,
        s.svc.coordinator().map(|c| c.subscribe()),
    );
    let v = s.svc.store().latest().version;
    let st = StreamState {
        versions,
        clients,
        migrations,
        shutdown: s.shutdown.clone(),
        svc: s.svc.clone(),
        hello: Some(
            Event::default()
                .event("hello")
                .data(json!({ "version": v }).to_string()),
        ),
        _permit: permit,
        _open: OpenGuard(s.metrics.event_streams().clone()),
    };
    Ok(Sse::new(event_stream(st))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn event_stream(st: StreamState) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    futures::stream::unfold(st, |mut st| async move {
        if let Some(h) = st.hello.take() {
            return Some((Ok(h), st));
        }
        loop {
            if *st.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                biased;
                r = st.shutdown.changed() => {
                    if r.is_err() || *st.shutdown.borrow() {
                        return None;
                    }
                }
                r = st.versions.recv() => match r {
                    Ok(p) => return Some((Ok(version_event(p.version)), st)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let v = st.svc.store().latest().version;
                        return Some((Ok(version_event(v)), st));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                r = st.clients.next() => match r {
                    Ok(Some(g)) => return Some((Ok(st.clients.event(g)), st)),
                    Ok(None) => {}
                    Err(_) => return None,
                },
                r = st.migrations.next() => match r {
                    Ok(Some(g)) => return Some((Ok(st.migrations.event(g)), st)),
                    Ok(None) => {}
                    // The coordinator stopped (shutdown): nothing more to tell.
                    Err(_) => st.migrations.rx = None,
                },
            }
        }
    })
}

/// Whether `addr` may serve the admin port without a token.
pub fn open_allowed(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_cookies() {
        for h in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9",
            "127.1.2.3",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "",
            "example.com",
            "10.0.0.1:80",
            "evil.localhost.example:80",
            "[::2]:1",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; switchyard_admin=tok; c=d"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "x"), None);
    }

    /// A burst of changes gives one event at once and one when the gap ends, which carries the
    /// last change (also one made while that event was already due).
    #[tokio::test]
    async fn debounced_events_keep_the_last_change() {
        let (tx, rx) = watch::channel(0u64);
        let mut d = Debounced::new("migrations", Duration::from_millis(50), Some(rx));
        async fn next(d: &mut Debounced) -> Option<u64> {
            tokio::time::timeout(Duration::from_secs(10), d.next())
                .await
                .expect("bounded wait")
                .expect("sender alive")
        }
        tx.send_modify(|v| *v += 1);
        assert_eq!(next(&mut d).await, None, "the change schedules an event");
        assert_eq!(
            next(&mut d).await,
            Some(1),
            "the first event goes out at once"
        );
        tx.send_modify(|v| *v += 1);
        assert_eq!(next(&mut d).await, None);
        // While the event waits out the gap, more changes come in.
        tx.send_modify(|v| *v += 1);
        tx.send_modify(|v| *v += 1);
        assert_eq!(
            next(&mut d).await,
            Some(4),
            "the delayed event carries the last change"
        );
        drop(tx);
        let end = tokio::time::timeout(Duration::from_secs(10), d.next())
            .await
            .expect("bounded wait");
        assert!(end.is_err(), "a closed counter ends the wait");
    }
}
