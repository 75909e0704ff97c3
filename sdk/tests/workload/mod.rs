//! A keyed producer workload for SDK tests, and checks of what it wrote against an
//! independent reader.
//!
//! Each key is sent by exactly one async loop, which awaits every send before sending the next
//! record of that key, so the per-key sequence numbers a key's deliveries carry are the order in
//! which the application handed them over. Keys run concurrently.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard::{Producer, Record};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One successful send.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: String,
    pub seq: u64,
    pub cluster: String,
    pub physical: String,
    pub partition: i32,
    pub offset: i64,
    pub started: Instant,
    pub done: Instant,
}

impl Sent {
    pub fn latency(&self) -> Duration {
        self.done - self.started
    }
}

/// What a workload did.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: Vec<Sent>,
    /// (key, seq, error) of failed sends.
    pub errors: Vec<(String, u64, String)>,
    pub elapsed: Duration,
}

impl Report {
    pub fn rate(&self) -> f64 {
        self.sent.len() as f64 / self.elapsed.as_secs_f64().max(0.001)
    }
    /// Successful sends per second among those started within `[from, to]`.
    pub fn rate_between(&self, from: Instant, to: Instant) -> f64 {
        let n = self
            .sent
            .iter()
            .filter(|s| s.started >= from && s.started <= to)
            .count();
        n as f64 / (to - from).as_secs_f64().max(0.001)
    }
    pub fn max_latency(&self) -> Duration {
        self.sent
            .iter()
            .map(Sent::latency)
            .max()
            .unwrap_or_default()
    }
    /// Highest latency of sends started within `[from, to]`.
    pub fn max_latency_started_between(&self, from: Instant, to: Instant) -> Duration {
        self.sent
            .iter()
            .filter(|s| s.started >= from && s.started <= to)
            .map(Sent::latency)
            .max()
            .unwrap_or_default()
    }
    pub fn percentile_latency(&self, p: f64) -> Duration {
        let mut v: Vec<Duration> = self.sent.iter().map(Sent::latency).collect();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i]
    }
    pub fn count_on(&self, cluster: &str) -> usize {
        self.sent.iter().filter(|s| s.cluster == cluster).count()
    }
}

/// A running workload.
pub struct Load {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Report>>,
    started: Instant,
    /// Successful sends so far.
    pub ok: Arc<AtomicU64>,
    /// Failed sends so far.
    pub failed: Arc<AtomicU64>,
}

/// The key of index `i`.
pub fn key_name(i: usize) -> String {
    format!("k{i}")
}

/// The payload of (key, seq): parseable by [`parse_payload`], padded to about 100 bytes.
pub fn payload(key: &str, seq: u64) -> String {
    format!("{key}:{seq}:{}", "x".repeat(80))
}

/// (key, seq) from a payload written by [`payload`].
pub fn parse_payload(p: &[u8]) -> (String, u64) {
    let s = std::str::from_utf8(p).expect("payload is UTF-8");
    let mut it = s.split(':');
    let key = it.next().expect("key").to_string();
    let seq = it.next().expect("seq").parse().expect("seq is a number");
    (key, seq)
}

impl Load {
    /// Starts `tasks` tasks sending to `topic` over `keys` keys (key `i` belongs to task
    /// `i % tasks`) at about `rate` records per second in total, until [`Load::finish`] or
    /// `max_duration`.
    pub fn start(
        producer: Producer,
        topic: &str,
        tasks: usize,
        keys: usize,
        rate: f64,
        max_duration: Duration,
    ) -> Self {
        Self::start_keys(
            producer,
            topic,
            tasks,
            (0..keys).collect(),
            rate,
            max_duration,
        )
    }

    /// Like [`Load::start`] over the keys of the given indices (so that several workloads
    /// can share a topic with disjoint keys).
    pub fn start_keys(
        producer: Producer,
        topic: &str,
        tasks: usize,
        key_ids: Vec<usize>,
        rate: f64,
        max_duration: Duration,
    ) -> Self {
        let per_key_interval = Duration::from_secs_f64(key_ids.len() as f64 / rate);
        let keys = key_ids.into_iter().map(|k| (k, u64::MAX)).collect();
        Self::start_inner(
            producer,
            topic,
            tasks,
            keys,
            Some(per_key_interval),
            max_duration,
        )
    }

    /// Starts `tasks` tasks sending to `topic` without pacing: each `(key index, count)` sends
    /// `count` records of its key, one at a time (so the keys bound the sends in flight), until
    /// done, [`Load::finish`] or `max_duration`.
    pub fn start_counted(
        producer: Producer,
        topic: &str,
        tasks: usize,
        keys: Vec<(usize, u64)>,
        max_duration: Duration,
    ) -> Self {
        Self::start_inner(producer, topic, tasks, keys, None, max_duration)
    }

    /// `interval`: each key's send schedule (None: send as fast as the sends complete).
    fn start_inner(
        producer: Producer,
        topic: &str,
        tasks: usize,
        key_ids: Vec<(usize, u64)>,
        interval: Option<Duration>,
        max_duration: Duration,
    ) -> Self {
        let keys = key_ids.len();
        let (stop, stop_rx) = watch::channel(false);
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let my_keys: Vec<(String, u64)> = key_ids
                .iter()
                .enumerate()
                .filter(|(i, _)| i % tasks == t)
                .map(|(_, (k, n))| (key_name(*k), *n))
                .collect();
            let producer = producer.clone();
            let topic = topic.to_string();
            let stop_rx = stop_rx.clone();
            let (ok, failed) = (ok.clone(), failed.clone());
            handles.push(tokio::spawn(async move {
                let loops = my_keys.into_iter().enumerate().map(|(i, (key, limit))| {
                    let producer = producer.clone();
                    let topic = topic.clone();
                    let stop_rx = stop_rx.clone();
                    let (ok, failed) = (ok.clone(), failed.clone());
                    // Spread the keys' schedules over one interval.
                    let offset = interval.map_or(Duration::ZERO, |iv| {
                        iv.mul_f64((t + i * tasks) as f64 / keys as f64)
                    });
                    async move {
                        key_loop(
                            producer,
                            topic,
                            key,
                            KeySchedule {
                                interval,
                                first: started + offset,
                                end: started + max_duration,
                                limit,
                            },
                            stop_rx,
                            ok,
                            failed,
                        )
                        .await
                    }
                });
                let mut report = Report::default();
                for r in futures::future::join_all(loops).await {
                    report.sent.extend(r.sent);
                    report.errors.extend(r.errors);
                }
                report
            }));
        }
        Self {
            stop,
            tasks: handles,
            started,
            ok,
            failed,
        }
    }

    /// When the workload started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits (bounded) until the workload ran for its whole duration.
    pub async fn join(self) -> Report {
        self.collect().await
    }

    /// Stops sending and waits (bounded) for the sends in flight.
    pub async fn finish(self) -> Report {
        let _ = self.stop.send(true);
        self.collect().await
    }

    async fn collect(self) -> Report {
        let mut report = Report::default();
        for h in self.tasks {
            let r = tokio::time::timeout(Duration::from_secs(60), h)
                .await
                .expect("workload tasks finish within 60 s")
                .expect("workload task panicked");
            report.sent.extend(r.sent);
            report.errors.extend(r.errors);
        }
        report.elapsed = self.started.elapsed();
        report
    }

    /// Waits until `n` sends succeeded, or panics after `timeout`.
    pub async fn wait_for_ok(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.ok.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "only {} sends succeeded within {timeout:?} (wanted {n})",
                self.ok.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// When one key's loop sends.
struct KeySchedule {
    /// Between two sends (None: no pacing).
    interval: Option<Duration>,
    first: Instant,
    end: Instant,
    /// Records to send at most.
    limit: u64,
}

async fn key_loop(
    producer: Producer,
    topic: String,
    key: String,
    schedule: KeySchedule,
    stop: watch::Receiver<bool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Report {
    let mut report = Report::default();
    let mut due = tokio::time::Instant::from_std(schedule.first);
    let mut seq = 0u64;
    while seq < schedule.limit {
        if schedule.interval.is_some() {
            // Pacing to the target rate (not a wait for an event).
            tokio::time::sleep_until(due).await;
        }
        if *stop.borrow() || Instant::now() >= schedule.end {
            break;
        }
        let started = Instant::now();
        let rec = Record::new(&topic)
            .key(key.clone())
            .payload(payload(&key, seq));
        match producer.send(rec).await {
            Ok(d) => {
                ok.fetch_add(1, Ordering::Relaxed);
                report.sent.push(Sent {
                    key: key.clone(),
                    seq,
                    cluster: d.cluster,
                    physical: d.physical_topic,
                    partition: d.partition,
                    offset: d.offset,
                    started,
                    done: Instant::now(),
                });
            }
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                report.errors.push((key.clone(), seq, e.to_string()));
            }
        }
        seq += 1;
        if let Some(interval) = schedule.interval {
            // Keep the schedule, but never build up a burst after a slow send.
            due = (due + interval).max(tokio::time::Instant::now());
        }
    }
    report
}

/// A record found by the independent reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub cluster: String,
    pub partition: i32,
    pub offset: i64,
}

/// Reads `physical` on every (cluster name, bootstrap) with raw rdkafka and indexes the records
/// by (key, seq). Also checks each record's Kafka key matches the key in its payload.
pub fn read_everywhere(
    clusters: &[(&str, &str)],
    physical: &str,
) -> HashMap<(String, u64), Vec<Found>> {
    let mut out: HashMap<(String, u64), Vec<Found>> = HashMap::new();
    for (name, bootstrap) in clusters {
        for (partition, offset, key, payload) in crate::common::read_all(bootstrap, physical) {
            let (k, seq) = parse_payload(&payload);
            assert_eq!(
                key,
                k.as_bytes(),
                "record key and payload disagree on {name}"
            );
            out.entry((k, seq)).or_default().push(Found {
                cluster: name.to_string(),
                partition,
                offset,
            });
        }
    }
    out
}

/// What the independent reader found, compared with what was sent.
#[derive(Debug, Default)]
pub struct Exactness {
    /// Sent (key, seq) the reader did not find.
    pub missing: Vec<(String, u64)>,
    /// Sent (key, seq) found more than once, with where.
    pub duplicated: Vec<((String, u64), Vec<Found>)>,
    /// Sent (key, seq) found once, but not at the cluster, partition and offset its delivery
    /// named: (record, cluster of the delivery, where found).
    pub misplaced: Vec<((String, u64), String, Found)>,
    /// Found (key, seq) that no successful send reported.
    pub unexpected: Vec<(String, u64)>,
}

/// Compares what the reader found with what was sent: every sent (key, seq) should be found
/// exactly once, at the cluster, partition and offset its delivery named, and nothing else.
pub fn exactness(report: &Report, found: &HashMap<(String, u64), Vec<Found>>) -> Exactness {
    let mut e = Exactness::default();
    for s in &report.sent {
        match found.get(&(s.key.clone(), s.seq)) {
            None => e.missing.push((s.key.clone(), s.seq)),
            Some(v) if v.len() > 1 => e.duplicated.push(((s.key.clone(), s.seq), v.clone())),
            Some(v) => {
                let f = &v[0];
                if f.cluster != s.cluster || f.partition != s.partition || f.offset != s.offset {
                    e.misplaced
                        .push(((s.key.clone(), s.seq), s.cluster.clone(), f.clone()));
                }
            }
        }
    }
    let sent: std::collections::HashSet<(String, u64)> =
        report.sent.iter().map(|s| (s.key.clone(), s.seq)).collect();
    e.unexpected = found
        .keys()
        .filter(|k| !sent.contains(*k))
        .cloned()
        .collect();
    e
}

/// Checks what the reader found against what was sent: every sent (key, seq) exactly once, at
/// the cluster, partition and offset its delivery named, and nothing else.
pub fn check_exactly_once(report: &Report, found: &HashMap<(String, u64), Vec<Found>>) {
    let Exactness {
        missing,
        duplicated: dups,
        misplaced,
        unexpected,
    } = exactness(report, found);
    assert!(
        missing.is_empty(),
        "{} sent records are missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        dups.is_empty(),
        "{} records are duplicated, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(5)]
    );
    assert!(
        misplaced.is_empty(),
        "{} records are not where their delivery said, e.g. {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(5)]
    );
    assert!(
        unexpected.is_empty(),
        "{} records were found that no successful send reported, e.g. {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(10)]
    );
}

/// Per key: the order violations in what the reader found. On each cluster a key's records
/// must sit in one partition with sequence numbers increasing in log (offset) order, and every
/// record on `from` must precede (lower seq) every record on `to`. One description per
/// violation, in key order.
pub fn order_violations(
    found: &HashMap<(String, u64), Vec<Found>>,
    from: &str,
    to: &str,
) -> Vec<String> {
    // key → cluster → [(partition, offset, seq)]
    type PerCluster = BTreeMap<String, Vec<(i32, i64, u64)>>;
    let mut by_key: BTreeMap<String, PerCluster> = BTreeMap::new();
    for ((k, seq), v) in found {
        for f in v {
            by_key
                .entry(k.clone())
                .or_default()
                .entry(f.cluster.clone())
                .or_default()
                .push((f.partition, f.offset, *seq));
        }
    }
    let mut out = Vec::new();
    for (k, clusters) in &mut by_key {
        for (c, recs) in clusters.iter_mut() {
            let parts: std::collections::BTreeSet<i32> = recs.iter().map(|r| r.0).collect();
            if parts.len() != 1 {
                out.push(format!(
                    "key {k} is spread over partitions {parts:?} on {c}"
                ));
            }
            recs.sort();
            for w in recs.windows(2) {
                if w[0].2 >= w[1].2 {
                    out.push(format!(
                        "key {k} on {c}: seq {} at offset {} is followed by seq {} at offset {}",
                        w[0].2, w[0].1, w[1].2, w[1].1
                    ));
                }
            }
        }
        let max_from = clusters.get(from).and_then(|r| r.iter().map(|x| x.2).max());
        let min_to = clusters.get(to).and_then(|r| r.iter().map(|x| x.2).min());
        if let (Some(a), Some(b)) = (max_from, min_to)
            && a >= b
        {
            out.push(format!(
                "key {k}: seq {a} on {from} was written after seq {b} on {to} (order broken across the switch)"
            ));
        }
    }
    out
}

/// Per key: the sequence numbers on each cluster, in log (offset) order, must be increasing, and
/// every record on `from` must precede (lower seq) every record on `to`.
pub fn check_order_across_switch(found: &HashMap<(String, u64), Vec<Found>>, from: &str, to: &str) {
    let v = order_violations(found, from, to);
    assert!(
        v.is_empty(),
        "{} order violations, e.g.\n{}",
        v.len(),
        v[..v.len().min(10)].join("\n")
    );
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs SDK events to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=switchyard=info`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
