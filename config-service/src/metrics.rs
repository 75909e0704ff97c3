//! Prometheus metrics of the config service, rendered in the text exposition format on the
//! admin HTTP port's `/metrics`.
//!
//! Counters and the push-latency histogram are updated as things happen; gauges that describe
//! current state (version, watchers, clients) are read from the service at scrape time, so they
//! are never stale.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::service::ConfigService;

/// Content type of [`Metrics::render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Migration phases reported by `switchyard_migrations` (migrations the coordinator keeps, by
/// phase).
pub const MIGRATION_PHASES: [&str; 6] = [
    "prepare", "switch", "sealed", "drain", "complete", "aborted",
];

/// Most distinct `app` label values on `switchyard_clients`; the rest are summed under `_other`.
const MAX_APP_LABELS: usize = 200;

/// Upper bounds of the push-latency buckets, in seconds (100 µs … ~3.3 s).
fn push_buckets() -> Vec<f64> {
    (0..16).map(|i| 0.0001 * 2f64.powi(i)).collect()
}

/// Every metric of one config service.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    versions_applied: IntCounter,
    version: IntGauge,
    watchers: IntGauge,
    push_latency: Histogram,
    grpc_requests: IntCounterVec,
    clients: IntGaugeVec,
    migrations: IntGaugeVec,
    late_writes: IntGauge,
    late_writes_copied: IntGauge,
    sources_watched: IntGauge,
    event_streams: IntGauge,
    /// Serializes scrapes: each refreshes the state gauges, then gathers.
    scrape: Mutex<()>,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Names, labels and buckets are constants checked by the unit test below.
    r.expect("metric definitions are valid")
}

impl Metrics {
    /// Registers every metric; label sets that are known up front start at zero.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| must(registry.register(c));
        let versions_applied = must(IntCounter::with_opts(Opts::new(
            "switchyard_config_versions_applied_total",
            "Configuration versions committed and published to watchers (applies and rollbacks).",
        )));
        reg(Box::new(versions_applied.clone()));
        let version = must(IntGauge::with_opts(Opts::new(
            "switchyard_config_version",
            "The current configuration version.",
        )));
        reg(Box::new(version.clone()));
        let watchers = must(IntGauge::with_opts(Opts::new(
            "switchyard_watchers_connected",
            "Watch streams currently open.",
        )));
        reg(Box::new(watchers.clone()));
        let push_latency = must(Histogram::with_opts(
            HistogramOpts::new(
                "switchyard_push_latency_seconds",
                "Time from a version's durable commit to its event being handed to a watch stream, per watcher.",
            )
            .buckets(push_buckets()),
        ));
        reg(Box::new(push_latency.clone()));
        let grpc_requests = must(IntCounterVec::new(
            Opts::new(
                "switchyard_grpc_requests_total",
                "gRPC calls finished, by service, method and status code (grpc_code other than OK is an error).",
            ),
            &["grpc_service", "grpc_method", "grpc_code"],
        ));
        reg(Box::new(grpc_requests.clone()));
        let clients = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_clients",
                "SDK clients with a live status lease, by app and whether their applied version is behind the current one.",
            ),
            &["app", "behind"],
        ));
        reg(Box::new(clients.clone()));
        let migrations = must(IntGaugeVec::new(
            Opts::new("switchyard_migrations", "Topic migrations by phase."),
            &["phase"],
        ));
        reg(Box::new(migrations.clone()));
        for p in MIGRATION_PHASES {
            migrations.with_label_values(&[p]).set(0);
        }
        let late_writes = must(IntGauge::with_opts(Opts::new(
            "switchyard_migration_late_writes",
            "Records that reached a migration's source after its seal (a producer cut off from the service), over the migrations kept.",
        )));
        reg(Box::new(late_writes.clone()));
        let late_writes_copied = must(IntGauge::with_opts(Opts::new(
            "switchyard_migration_late_writes_copied",
            "Of those, records copied to the destination (each once).",
        )));
        reg(Box::new(late_writes_copied.clone()));
        let sources_watched = must(IntGauge::with_opts(Opts::new(
            "switchyard_migration_sources_watched",
            "Completed migrations whose source is still watched for late writes (not retired).",
        )));
        reg(Box::new(sources_watched.clone()));
        let event_streams = must(IntGauge::with_opts(Opts::new(
            "switchyard_dashboard_event_streams",
            "Dashboard server-sent-event streams currently open.",
        )));
        reg(Box::new(event_streams.clone()));
        let build = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_build_info",
                "Always 1; the label carries the config service's version.",
            ),
            &["version"],
        ));
        reg(Box::new(build.clone()));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Arc::new(Self {
            registry,
            versions_applied,
            version,
            watchers,
            push_latency,
            grpc_requests,
            clients,
            migrations,
            late_writes,
            late_writes_copied,
            sources_watched,
            event_streams,
            scrape: Mutex::new(()),
        })
    }

    /// The handles the watch hub updates.
    pub fn hub_metrics(&self) -> HubMetrics {
        HubMetrics {
            versions_applied: self.versions_applied.clone(),
            push_latency: self.push_latency.clone(),
        }
    }

    /// A tower layer counting every gRPC call by service, method and status code.
    pub fn grpc_layer(self: &Arc<Self>) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            requests: self.grpc_requests.clone(),
        }
    }

    /// The gauge of open dashboard event streams.
    pub fn event_streams(&self) -> &IntGauge {
        &self.event_streams
    }

    /// The migrations-by-phase gauge (for the migration coordinator to set).
    pub fn migrations(&self) -> &IntGaugeVec {
        &self.migrations
    }

    /// Every metric in the Prometheus text format, with state gauges read from `svc` now.
    pub fn render(&self, svc: &ConfigService) -> String {
        let _one = self.scrape.lock();
        let current = svc.store().latest().version;
        self.version.set(i64::try_from(current).unwrap_or(i64::MAX));
        self.watchers
            .set(i64::try_from(svc.hub().watchers()).unwrap_or(i64::MAX));
        let counts = svc.clients().counts(current);
        self.clients.reset();
        for ((app, behind), n) in cap_apps(counts, MAX_APP_LABELS) {
            self.clients
                .with_label_values(&[app.as_str(), if behind { "true" } else { "false" }])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(c) = svc.coordinator() {
            let (late, copied, watched) = c.late_write_totals();
            self.late_writes.set(late);
            self.late_writes_copied.set(copied);
            self.sources_watched
                .set(i64::try_from(watched).unwrap_or(i64::MAX));
            let counts = c.counts();
            for p in MIGRATION_PHASES {
                let n = counts.get(p).copied().unwrap_or(0);
                self.migrations
                    .with_label_values(&[p])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not encode metrics");
                String::new()
            })
    }
}

/// Keeps the `max` apps with the most clients and sums the rest under `_other`.
fn cap_apps(counts: BTreeMap<(String, bool), u64>, max: usize) -> BTreeMap<(String, bool), u64> {
    let mut per_app: BTreeMap<&str, u64> = BTreeMap::new();
    for ((app, _), n) in &counts {
        *per_app.entry(app).or_default() += n;
    }
    if per_app.len() <= max {
        return counts;
    }
    let mut ranked: Vec<(&str, u64)> = per_app.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let keep: std::collections::BTreeSet<String> = ranked
        .iter()
        .take(max)
        .map(|(a, _)| a.to_string())
        .collect();
    let mut out = BTreeMap::new();
    for ((app, behind), n) in counts {
        let key = if keep.contains(&app) {
            app
        } else {
            "_other".to_string()
        };
        *out.entry((key, behind)).or_default() += n;
    }
    out
}

/// The metrics the watch hub updates: versions published and push latency.
#[derive(Debug, Clone)]
pub struct HubMetrics {
    versions_applied: IntCounter,
    push_latency: Histogram,
}

impl HubMetrics {
    /// A version was published.
    pub fn version_published(&self) {
        self.versions_applied.inc();
    }

    /// A version committed at `acked` was handed to a watch stream now.
    pub fn pushed(&self, acked: Instant) {
        self.push_latency.observe(acked.elapsed().as_secs_f64());
    }
}

/// Counts gRPC calls; see [`Metrics::grpc_layer`].
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    requests: IntCounterVec,
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            requests: self.requests.clone(),
        }
    }
}

/// The service made by [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    requests: IntCounterVec,
}

/// `(service, method)` of a gRPC path `/pkg.Service/Method`, if it has that shape.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (svc, method) = path.strip_prefix('/')?.split_once('/')?;
    let ok = |s: &str, dots: bool| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dots && b == b'.'))
    };
    (ok(svc, true) && ok(method, false)).then_some((svc, method))
}

/// gRPC code names as Prometheus label values (as in grpc-go's metrics).
fn code_name(code: i32) -> &'static str {
    use tonic::Code;
    match Code::from_i32(code) {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn grpc_status(h: &http::HeaderMap) -> Option<i32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Records one finished call; the label set stays bounded because unknown paths are answered
/// `Unimplemented` by the router and recorded as `unknown`.
#[derive(Debug)]
struct Recorder {
    requests: IntCounterVec,
    service: String,
    method: String,
}

impl Recorder {
    fn record(self, code: i32) {
        let name = code_name(code);
        let (svc, method) = if name == "Unimplemented" {
            ("unknown", "unknown")
        } else {
            (self.service.as_str(), self.method.as_str())
        };
        self.requests.with_label_values(&[svc, method, name]).inc();
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes>,
{
    type Response = http::Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(req.uri().path()).unwrap_or(("unknown", "unknown"));
        let rec = Recorder {
            requests: self.requests.clone(),
            service: service.to_string(),
            method: method.to_string(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let (parts, body) = resp.into_parts();
            // A trailers-only response (every error tonic returns before a body) carries the
            // status in its headers; otherwise it comes in the trailers.
            let rec = match grpc_status(&parts.headers) {
                Some(code) => {
                    rec.record(code);
                    None
                }
                None => Some(rec),
            };
            Ok(http::Response::from_parts(
                parts,
                MetricsBody {
                    inner: Box::pin(body),
                    rec,
                },
            ))
        })
    }
}

/// A response body that records the call's status when its trailers pass (or, if the stream
/// ends without them, as `Canceled` when dropped).
#[derive(Debug)]
pub struct MetricsBody<B> {
    inner: Pin<Box<B>>,
    rec: Option<Recorder>,
}

impl<B: Body<Data = Bytes>> Body for MetricsBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(t) = f.trailers_ref()
            && let Some(rec) = self.rec.take()
        {
            rec.record(grpc_status(t).unwrap_or(tonic::Code::Unknown as i32));
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MetricsBody<B> {
    fn drop(&mut self) {
        if let Some(rec) = self.rec.take() {
            rec.record(tonic::Code::Cancelled as i32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_register_and_paths_split() {
        let m = Metrics::new();
        assert_eq!(m.migrations().with_label_values(&["drain"]).get(), 0);
        assert_eq!(
            split_path("/switchyard.v1.AdminService/Apply"),
            Some(("switchyard.v1.AdminService", "Apply"))
        );
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("/x y/z"), None);
        assert_eq!(split_path("nope"), None);
        assert!(push_buckets().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn app_labels_are_capped() {
        let mut c = BTreeMap::new();
        for i in 0..5u64 {
            c.insert((format!("app{i}"), false), i + 1);
        }
        c.insert(("app0".into(), true), 1);
        let out = cap_apps(c.clone(), 10);
        assert_eq!(out, c);
        let out = cap_apps(c, 2);
        assert_eq!(out.get(&("app4".into(), false)), Some(&5));
        assert_eq!(out.get(&("app3".into(), false)), Some(&4));
        assert_eq!(out.get(&("_other".into(), false)), Some(&(1 + 2 + 3)));
        assert_eq!(out.get(&("_other".into(), true)), Some(&1));
        assert_eq!(out.len(), 4);
    }
}
