//! Client metrics in the Prometheus text format.
//!
//! Every [`crate::Switchyard`] has one [`Metrics`] registry, shared by all its producers and
//! consumers; [`crate::Switchyard::metrics`] returns it. [`Metrics::encode`] renders it in the
//! Prometheus text exposition format (serve that on the application's `/metrics`), and
//! [`Metrics::register_into`] adds the same metrics to the application's own
//! [`prometheus::Registry`] (the crate is re-exported as [`crate::prometheus`], so the versions
//! match).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `switchyard_client_messages_sent_total` | counter | `topic`, `cluster` |
//! | `switchyard_client_bytes_sent_total` | counter | `topic`, `cluster` |
//! | `switchyard_client_send_errors_total` | counter | `topic`, `cluster`, `kind` |
//! | `switchyard_client_send_latency_seconds` | histogram | `topic`, `cluster` |
//! | `switchyard_client_messages_received_total` | counter | `topic`, `cluster`, `group` |
//! | `switchyard_client_bytes_received_total` | counter | `topic`, `cluster`, `group` |
//! | `switchyard_client_throttled_total` | counter | `topic`, `direction`, `policy` |
//! | `switchyard_client_throttled_seconds_total` | counter | `topic`, `direction` |
//! | `switchyard_client_route_changes_total` | counter | `topic` |
//! | `switchyard_client_config_version` | gauge | |
//! | `switchyard_client_config_age_seconds` | gauge | |
//! | `switchyard_client_watch_reconnects_total` | counter | |
//!
//! Every metric also carries the constant label `app`. `topic` is the logical topic; `cluster`
//! is the cluster a record actually went to or came from, so when a route changes, the
//! counters of the new cluster's series move from then on. Bytes are payload bytes. `kind` is
//! the [`crate::ErrorKind`] in snake case; `cluster` is empty on an error that happened before
//! the send reached a cluster. `direction` is `produce` or `consume`, `policy` `block` (the
//! record waited) or `reject` (the send was refused).
//!
//! Cost: the producer keeps the counter and histogram handles of each (topic, cluster) with
//! the lane's current target, so a send updates its metrics with two atomic additions and one
//! histogram observation, without a label lookup. Gauges that describe state (version, age) are
//! computed when the metrics are gathered.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::error::{Error, ErrorKind};

/// Content type of [`Metrics::encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the send-latency buckets, in seconds (0.5 ms … 10 s).
pub(crate) const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The metrics of one [`crate::Switchyard`]: cheap to clone (all clones share the counters).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

struct Inner {
    registry: Registry,
    set: MetricSet,
}

/// Every metric, as one collector (so an application registers them in one call).
#[derive(Clone)]
struct MetricSet {
    sent: IntCounterVec,
    bytes_sent: IntCounterVec,
    send_errors: IntCounterVec,
    latency: HistogramVec,
    received: IntCounterVec,
    bytes_received: IntCounterVec,
    throttled: IntCounterVec,
    throttled_seconds: CounterVec,
    route_changes: IntCounterVec,
    version: IntGauge,
    age: Gauge,
    watch_reconnects: IntCounter,
    /// When a configuration version was last applied.
    applied_at: Arc<Mutex<Option<Instant>>>,
}

/// The producer's handles for one (logical topic, cluster).
#[derive(Clone)]
pub(crate) struct SendHandles {
    pub(crate) sent: IntCounter,
    pub(crate) bytes: IntCounter,
    pub(crate) latency: Histogram,
}

/// The consumer's handles for one (logical topic, cluster, group).
#[derive(Clone)]
pub(crate) struct RecvHandles {
    pub(crate) received: IntCounter,
    pub(crate) bytes: IntCounter,
}

/// Whether a throttled record was produced or consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Produce,
    Consume,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Produce => "produce",
            Direction::Consume => "consume",
        }
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Names, labels and buckets are constants checked by the unit test below; the only
    // variable part, the app name, is validated as a name before a client exists.
    r.expect("metric definitions are valid")
}

/// The `kind` label of an error kind.
fn kind_label(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::InvalidArgument => "invalid_argument",
        ErrorKind::UnknownTopic => "unknown_topic",
        ErrorKind::NoConfig => "no_config",
        ErrorKind::ConfigService => "config_service",
        ErrorKind::Cache => "cache",
        ErrorKind::Kafka => "kafka",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Closed => "closed",
        ErrorKind::QuotaExceeded => "quota_exceeded",
    }
}

impl Metrics {
    /// The metrics of a client of application `app` (a constant label on every metric).
    pub(crate) fn new(app: &str) -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("app", app);
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            must(IntCounterVec::new(opts(name, help), labels))
        };
        let sent = counter_vec(
            "switchyard_client_messages_sent_total",
            "Records acknowledged by Kafka, by logical topic and the cluster they were written to.",
            &["topic", "cluster"],
        );
        let bytes_sent = counter_vec(
            "switchyard_client_bytes_sent_total",
            "Payload bytes of the records in switchyard_client_messages_sent_total.",
            &["topic", "cluster"],
        );
        let send_errors = counter_vec(
            "switchyard_client_send_errors_total",
            "Sends that failed, by logical topic, cluster (empty when the send failed before reaching one) and error kind.",
            &["topic", "cluster", "kind"],
        );
        let latency = must(HistogramVec::new(
            HistogramOpts {
                common_opts: opts(
                    "switchyard_client_send_latency_seconds",
                    "Time from a send entering its topic's lane (after any quota wait; including a hold during a route switch) to its successful delivery report.",
                ),
                buckets: LATENCY_BUCKETS.to_vec(),
            },
            &["topic", "cluster"],
        ));
        let received = counter_vec(
            "switchyard_client_messages_received_total",
            "Records read, by logical topic, the cluster they came from and consumer group.",
            &["topic", "cluster", "group"],
        );
        let bytes_received = counter_vec(
            "switchyard_client_bytes_received_total",
            "Payload bytes of the records in switchyard_client_messages_received_total.",
            &["topic", "cluster", "group"],
        );
        let throttled = counter_vec(
            "switchyard_client_throttled_total",
            "Records a quota held back (policy block) or refused (policy reject), by logical topic and direction (produce, consume).",
            &["topic", "direction", "policy"],
        );
        let throttled_seconds = must(CounterVec::new(
            opts(
                "switchyard_client_throttled_seconds_total",
                "Total time records waited for quota capacity, by logical topic and direction.",
            ),
            &["topic", "direction"],
        ));
        let route_changes = counter_vec(
            "switchyard_client_route_changes_total",
            "Configuration versions applied by this client that moved a logical topic to another cluster or physical topic.",
            &["topic"],
        );
        let version = must(IntGauge::with_opts(opts(
            "switchyard_client_config_version",
            "The configuration version in use.",
        )));
        let age = must(Gauge::with_opts(opts(
            "switchyard_client_config_age_seconds",
            "Seconds since this client last applied a configuration version (from the service, its cache or a file).",
        )));
        let watch_reconnects = must(IntCounter::with_opts(opts(
            "switchyard_client_watch_reconnects_total",
            "Times the configuration watch ended or could not be opened and was retried.",
        )));
        let set = MetricSet {
            sent,
            bytes_sent,
            send_errors,
            latency,
            received,
            bytes_received,
            throttled,
            throttled_seconds,
            route_changes,
            version,
            age,
            watch_reconnects,
            applied_at: Arc::new(Mutex::new(None)),
        };
        let registry = Registry::new();
        must(registry.register(Box::new(set.clone())));
        Self {
            inner: Arc::new(Inner { registry, set }),
        }
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4; see
    /// [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.inner.registry.gather())
            .unwrap_or_else(|e| {
                // The encoder fails only on inconsistent families, which this registry never
                // builds.
                tracing::error!(error = %e, "could not encode metrics");
                String::new()
            })
    }

    /// Every metric as Prometheus metric families, for an application that encodes them
    /// itself.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.inner.registry.gather()
    }

    /// Adds these metrics to `registry`, so that the application's own scrape includes them.
    ///
    /// Fails with [`prometheus::Error::AlreadyReg`] when `registry` already has them, or the
    /// metrics of another client of the same app (their series would collide).
    pub fn register_into(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.inner.set.clone()))
    }

    /// Removes these metrics from a registry they were added to with
    /// [`Metrics::register_into`].
    pub fn unregister_from(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.unregister(Box::new(self.inner.set.clone()))
    }

    // --- Hooks for the producer, consumer and watch. ---

    /// Handles for records sent to logical `topic` on `cluster`.
    pub(crate) fn send_handles(&self, topic: &str, cluster: &str) -> SendHandles {
        let s = &self.inner.set;
        SendHandles {
            sent: s.sent.with_label_values(&[topic, cluster]),
            bytes: s.bytes_sent.with_label_values(&[topic, cluster]),
            latency: s.latency.with_label_values(&[topic, cluster]),
        }
    }

    /// Handles for records of logical `topic` read from `cluster` in `group`.
    pub(crate) fn recv_handles(&self, topic: &str, cluster: &str, group: &str) -> RecvHandles {
        let s = &self.inner.set;
        RecvHandles {
            received: s.received.with_label_values(&[topic, cluster, group]),
            bytes: s.bytes_received.with_label_values(&[topic, cluster, group]),
        }
    }

    /// A send to logical `topic` failed with `error` on `cluster` (empty if it reached none).
    pub(crate) fn send_error(&self, topic: &str, cluster: &str, error: &Error) {
        self.inner
            .set
            .send_errors
            .with_label_values(&[topic, cluster, kind_label(error.kind())])
            .inc();
    }

    /// A record to logical `topic` waited `waited_secs` for quota capacity.
    pub(crate) fn throttle_waited(&self, topic: &str, direction: Direction, waited_secs: f64) {
        let s = &self.inner.set;
        s.throttled
            .with_label_values(&[topic, direction.label(), "block"])
            .inc();
        s.throttled_seconds
            .with_label_values(&[topic, direction.label()])
            .inc_by(waited_secs.max(0.0));
    }

    /// A quota with policy REJECT refused a send to logical `topic`.
    pub(crate) fn throttle_rejected(&self, topic: &str) {
        self.inner
            .set
            .throttled
            .with_label_values(&[topic, Direction::Produce.label(), "reject"])
            .inc();
    }

    /// Configuration `version` was applied now; `moved` are the logical topics whose route it
    /// changed.
    pub(crate) fn config_applied<'a>(
        &self,
        version: u64,
        moved: impl IntoIterator<Item = &'a str>,
    ) {
        let s = &self.inner.set;
        *s.applied_at.lock() = Some(Instant::now());
        s.version.set(i64::try_from(version).unwrap_or(i64::MAX));
        for t in moved {
            s.route_changes.with_label_values(&[t]).inc();
        }
    }

    /// The configuration watch was interrupted (or could not be opened) and will be retried.
    pub(crate) fn watch_reconnect(&self) {
        self.inner.set.watch_reconnects.inc();
    }
}

impl Collector for MetricSet {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = Vec::new();
        d.extend(self.sent.desc());
        d.extend(self.bytes_sent.desc());
        d.extend(self.send_errors.desc());
        d.extend(self.latency.desc());
        d.extend(self.received.desc());
        d.extend(self.bytes_received.desc());
        d.extend(self.throttled.desc());
        d.extend(self.throttled_seconds.desc());
        d.extend(self.route_changes.desc());
        d.extend(self.version.desc());
        d.extend(self.age.desc());
        d.extend(self.watch_reconnects.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // State read at scrape time: the age of the configuration in use.
        if let Some(at) = *self.applied_at.lock() {
            self.age.set(at.elapsed().as_secs_f64());
        }
        let mut m = Vec::new();
        m.extend(self.sent.collect());
        m.extend(self.bytes_sent.collect());
        m.extend(self.send_errors.collect());
        m.extend(self.latency.collect());
        m.extend(self.received.collect());
        m.extend(self.bytes_received.collect());
        m.extend(self.throttled.collect());
        m.extend(self.throttled_seconds.collect());
        m.extend(self.route_changes.collect());
        m.extend(self.version.collect());
        m.extend(self.age.collect());
        m.extend(self.watch_reconnects.collect());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_register_and_handles_share_series() {
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        let m = Metrics::new("shop");
        let h = m.send_handles("orders", "east");
        h.sent.inc();
        h.bytes.inc_by(10);
        h.latency.observe(0.002);
        // A second lookup of the same labels is the same series.
        m.send_handles("orders", "east").sent.inc();
        m.send_error("orders", "", &Error::Closed);
        m.config_applied(7, ["orders"]);
        let text = m.encode();
        assert!(
            text.contains(
                "switchyard_client_messages_sent_total{app=\"shop\",cluster=\"east\",topic=\"orders\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("switchyard_client_send_errors_total{app=\"shop\",cluster=\"\",kind=\"closed\",topic=\"orders\"} 1\n"), "{text}");
        assert!(text.contains("switchyard_client_config_version{app=\"shop\"} 7\n"));
        assert!(
            text.contains(
                "switchyard_client_route_changes_total{app=\"shop\",topic=\"orders\"} 1\n"
            )
        );
        assert!(text.contains("switchyard_client_send_latency_seconds_bucket{app=\"shop\",cluster=\"east\",topic=\"orders\",le=\"0.0025\"} 1\n"), "{text}");

        // Merging into an application's registry: once per registry.
        let app = Registry::new();
        m.register_into(&app).unwrap();
        assert!(matches!(
            m.register_into(&app),
            Err(prometheus::Error::AlreadyReg)
        ));
        let other = Metrics::new("billing");
        other.register_into(&app).unwrap();
        let names: Vec<String> = app.gather().iter().map(|f| f.name().to_string()).collect();
        assert!(names.contains(&"switchyard_client_config_age_seconds".to_string()));
        m.unregister_from(&app).unwrap();
    }
}
