//! The demo's traffic: keyed producer tasks sending through the SDK, a consumer group of SDK
//! consumers, and the ledger both write to, from which loss, duplication and reordering are
//! judged.
//!
//! Each key belongs to one producer task, which awaits every send of that key before sending
//! the key's next record, so per key the sequence numbers are the order the application handed
//! the records over; keys run concurrently.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchyard::{Consumer, Producer, Record};
use tokio::sync::watch;

/// The logical topic the demo uses.
pub const TOPIC: &str = "orders";

/// The key of key index `k`.
pub fn key_name(k: u32) -> String {
    format!("customer-{k}")
}

/// The payload of record `seq` of key `k`: `customer-<k>:<seq>:<padding>`.
fn payload(k: u32, seq: u64) -> String {
    format!("customer-{k}:{seq}:{}", "x".repeat(64))
}

/// (key index, seq) from a payload written by [`payload`].
pub fn parse_payload(p: &[u8]) -> Option<(u32, u64)> {
    let s = std::str::from_utf8(p).ok()?;
    let mut it = s.split(':');
    let k = it.next()?.strip_prefix("customer-")?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    Some((k, seq))
}

/// One acknowledged send.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: u32,
    pub seq: u64,
    pub west: bool,
    pub started: Instant,
    pub latency: Duration,
}

/// One record handed to the application by a consumer.
#[derive(Debug, Clone)]
struct Seen {
    seq: u64,
    cluster: String,
    partition: i32,
    offset: i64,
}

/// A per-key sequence regression seen by one consumer member: evidence for the report.
#[derive(Debug, Clone)]
pub struct Regression {
    pub consumer: usize,
    pub key: u32,
    pub prev: (u64, String, i32, i64),
    pub now: (u64, String, i32, i64),
    pub at: Duration,
}

#[derive(Debug, Default)]
struct Consumed {
    /// (key, seq) → times received.
    count: HashMap<(u32, u64), u32>,
    /// key → the last record of that key any member of the group received (order is judged
    /// per key across the whole group, as a move must keep it).
    last: HashMap<u32, Seen>,
    out_of_order: u64,
    regressions: Vec<Regression>,
    /// Records whose payload the demo did not write.
    foreign: u64,
}

/// What both sides record; shared by all tasks.
#[derive(Debug)]
pub struct Ledger {
    pub t0: Instant,
    sent: Mutex<Vec<Sent>>,
    consumed: Mutex<Consumed>,
    pub sent_east: AtomicU64,
    pub sent_west: AtomicU64,
    pub send_errors: AtomicU64,
    pub send_failed: AtomicU64,
    pub recv_east: AtomicU64,
    pub recv_west: AtomicU64,
    pub recv_errors: AtomicU64,
    pub commit_errors: AtomicU64,
    /// Highest send latency since the progress display last looked, µs.
    pub interval_max_latency_us: AtomicU64,
    /// When the first delivery on west completed, µs after `t0` (0 = not yet).
    pub first_west_us: AtomicU64,
    /// Keys whose deliveries went back to east after one went to west.
    pub back_to_east: AtomicU64,
}

impl Ledger {
    pub fn new() -> Self {
        Self {
            t0: Instant::now(),
            sent: Mutex::new(Vec::new()),
            consumed: Mutex::new(Consumed::default()),
            sent_east: AtomicU64::new(0),
            sent_west: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            send_failed: AtomicU64::new(0),
            recv_east: AtomicU64::new(0),
            recv_west: AtomicU64::new(0),
            recv_errors: AtomicU64::new(0),
            commit_errors: AtomicU64::new(0),
            interval_max_latency_us: AtomicU64::new(0),
            first_west_us: AtomicU64::new(0),
            back_to_east: AtomicU64::new(0),
        }
    }

    pub fn produced(&self) -> u64 {
        self.sent_east.load(Ordering::Relaxed) + self.sent_west.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.recv_east.load(Ordering::Relaxed) + self.recv_west.load(Ordering::Relaxed)
    }

    /// When producers' deliveries first showed west.
    pub fn first_west(&self) -> Option<Instant> {
        match self.first_west_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.t0 + Duration::from_micros(us)),
        }
    }

    /// A copy of every acknowledged send so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().clone()
    }

    /// The (key, seq) pairs acknowledged so far.
    pub fn produced_set(&self) -> HashSet<(u32, u64)> {
        self.sent.lock().iter().map(|s| (s.key, s.seq)).collect()
    }

    /// How many of `expected` have been received at least once.
    pub fn received_of(&self, expected: &HashSet<(u32, u64)>) -> usize {
        let c = self.consumed.lock();
        expected.iter().filter(|k| c.count.contains_key(k)).count()
    }

    fn record_sent(&self, s: Sent) {
        let us = s.latency.as_micros() as u64;
        self.interval_max_latency_us
            .fetch_max(us, Ordering::Relaxed);
        if s.west {
            self.sent_west.fetch_add(1, Ordering::Relaxed);
            let done = (s.started + s.latency - self.t0).as_micros().max(1) as u64;
            let _ = self
                .first_west_us
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    (v == 0 || done < v).then_some(done)
                });
        } else {
            self.sent_east.fetch_add(1, Ordering::Relaxed);
        }
        self.sent.lock().push(s);
    }

    fn record_received(&self, consumer: usize, m: &switchyard::Message) {
        if m.cluster == "west" {
            self.recv_west.fetch_add(1, Ordering::Relaxed);
        } else {
            self.recv_east.fetch_add(1, Ordering::Relaxed);
        }
        let mut c = self.consumed.lock();
        let Some((key, seq)) = parse_payload(m.payload.as_deref().unwrap_or_default()) else {
            c.foreign += 1;
            return;
        };
        let n = c.count.entry((key, seq)).or_default();
        *n += 1;
        if *n > 1 {
            // A redelivery (at-least-once, e.g. after a rebalance): counted as a duplicate,
            // not as reordering. Order is judged on first deliveries.
            return;
        }
        let now = Seen {
            seq,
            cluster: m.cluster.clone(),
            partition: m.partition,
            offset: m.offset,
        };
        if let Some(prev) = c.last.get(&key).cloned()
            && seq < prev.seq
        {
            c.out_of_order += 1;
            if c.regressions.len() < 10 {
                let at = self.t0.elapsed();
                c.regressions.push(Regression {
                    consumer,
                    key,
                    prev: (prev.seq, prev.cluster, prev.partition, prev.offset),
                    now: (seq, m.cluster.clone(), m.partition, m.offset),
                    at,
                });
            }
        }
        if c.last.get(&key).is_none_or(|p| p.seq < seq) {
            c.last.insert(key, now);
        }
    }

    /// (lost, duplicated, out_of_order, unexpected) against `produced`.
    pub fn verdict(&self, produced: &HashSet<(u32, u64)>) -> (u64, u64, u64, u64) {
        let c = self.consumed.lock();
        let lost = produced.iter().filter(|k| !c.count.contains_key(k)).count() as u64;
        let dup = c.count.values().filter(|n| **n > 1).count() as u64;
        let unexpected =
            c.count.keys().filter(|k| !produced.contains(k)).count() as u64 + c.foreign;
        (lost, dup, c.out_of_order, unexpected)
    }

    /// Up to 10 example regressions.
    pub fn regressions(&self) -> Vec<Regression> {
        self.consumed.lock().regressions.clone()
    }
}

/// Runs one producer task: keys `k` with `k % tasks == task` out of `keys`, each sending one
/// record every `keys / rate` seconds, awaiting each send before the key's next. Ends at
/// `stop_at`.
pub async fn producer_task(
    producer: Producer,
    ledger: Arc<Ledger>,
    task: u32,
    tasks: u32,
    keys: u32,
    rate: f64,
    stop_at: Instant,
) {
    let period = Duration::from_secs_f64(f64::from(keys) / rate);
    let loops = (0..keys).filter(|k| k % tasks == task).map(|k| {
        let producer = producer.clone();
        let ledger = ledger.clone();
        async move {
            // Stagger the keys evenly over one period.
            let first =
                tokio::time::Instant::now() + period.mul_f64(f64::from(k) / f64::from(keys));
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut went_west = false;
            let mut seq = 0u64;
            loop {
                tick.tick().await;
                if Instant::now() >= stop_at {
                    return;
                }
                let mut record = Record::new(TOPIC).key(key_name(k)).payload(payload(k, seq));
                let started = Instant::now();
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match producer.send(record).await {
                        Ok(d) => {
                            let west = d.cluster == "west";
                            if went_west && !west {
                                ledger.back_to_east.fetch_add(1, Ordering::Relaxed);
                            }
                            went_west |= west;
                            ledger.record_sent(Sent {
                                key: k,
                                seq,
                                west,
                                started,
                                latency: started.elapsed(),
                            });
                            break;
                        }
                        Err(e) => {
                            ledger.send_errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!(
                                "[{:>6.2}s] send of {} seq {seq} failed (attempt {attempts}): {}",
                                ledger.t0.elapsed().as_secs_f64(),
                                key_name(k),
                                e.error
                            );
                            if !e.is_retriable() || attempts >= 5 {
                                ledger.send_failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            // The SDK hands the record back unsent: retry the same one.
                            record = e.record;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                seq += 1;
            }
        }
    });
    futures::future::join_all(loops).await;
}

/// Runs consumer member `idx` until `stop` turns true: receive, record, commit each record.
/// Returns the consumer so that it is closed off the async runtime.
pub async fn consumer_task(
    consumer: Arc<Consumer>,
    ledger: Arc<Ledger>,
    idx: usize,
    mut stop: watch::Receiver<bool>,
) -> Arc<Consumer> {
    loop {
        let r = tokio::select! {
            r = consumer.recv() => r,
            _ = stop.wait_for(|v| *v) => return consumer,
        };
        match r {
            Ok(m) => {
                ledger.record_received(idx, &m);
                if let Err(e) = consumer.commit(&m).await {
                    let n = ledger.commit_errors.fetch_add(1, Ordering::Relaxed);
                    if n < 5 {
                        eprintln!(
                            "[{:>6.2}s] consumer {idx}: commit failed: {e}",
                            ledger.t0.elapsed().as_secs_f64()
                        );
                    }
                }
            }
            Err(e) => {
                let n = ledger.recv_errors.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    eprintln!(
                        "[{:>6.2}s] consumer {idx}: receive failed: {e}",
                        ledger.t0.elapsed().as_secs_f64()
                    );
                }
                if matches!(e.kind(), switchyard::ErrorKind::Closed) {
                    return consumer;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
