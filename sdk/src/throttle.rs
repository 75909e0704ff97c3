//! Quotas: rate limits from the configuration, enforced inside the client.
//!
//! A quota is keyed by (app or `*`, logical topic or `*`). For this application and one logical
//! topic the most specific entry wins: (app, topic) > (app, `*`) > (`*`, topic) > (`*`, `*`).
//! A quota whose topic is `*` is a template: every logical topic it applies to gets limiters
//! of its own. Limits hold per client process (per [`crate::Switchyard`]; every producer and
//! consumer made from it shares them): ten instances of an app may together send ten times the
//! quota.
//!
//! Each axis — produce messages/s, produce bytes/s, consume messages/s — is one `governor` GCRA
//! limiter: one atomic compare-and-swap per check, no lock around it. The limiters are compiled
//! into every configuration version's [`crate::Metadata`] and so are swapped atomically with the
//! routes. A version that leaves a topic's limits unchanged hands the *same* limiters
//! (`Arc`-shared) to the new version, so an unrelated configuration change resets nothing. A
//! changed limit gets a fresh limiter that starts empty: the new rate applies from the moment
//! the version is applied, with no burst granted by the change itself. A topic that had no
//! limit on that axis before starts with its full burst.
//!
//! Burst: [`Quota::burst`] messages (for both message limiters), or one second's worth when 0.
//! The byte limiter's burst is the same number of seconds' worth of bytes
//! (`produce_bytes_per_sec × burst / produce_msgs_per_sec`), or one second's worth when the burst
//! or the message rate is 0. A record counts its key, payload and header names and values; a
//! record larger than the byte burst can never pass and fails with
//! [`crate::ErrorKind::InvalidArgument`].
//!
//! Policy (produce only): BLOCK makes the send wait for capacity — blocked sends to one topic
//! wait in FIFO order, so sends issued in order are still enqueued in order — and REJECT fails
//! the send at once with [`crate::ErrorKind::QuotaExceeded`] (retriable), returning the record.
//! A record rejected by the byte limit after passing the message limit has used its message
//! cell. Consumption is always paced (a fetched record cannot be rejected): `recv` waits before
//! handing over a record while librdkafka keeps the group membership alive in the background.
//!
//! Precision: a limiter's replenish interval is a whole number of nanoseconds. Message rates up
//! to 10 M/s are exact to 1%; a message rate above 2 G/s is not enforced (no process sends
//! that). Byte limiters count in cells of `ceil(rate / 10^7)` bytes (1 byte up to 10 MB/s); a
//! record pays for the cell boundaries its bytes cross, so the charge is exact on average.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::RateLimiter;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use rustc_hash::FxHashMap;
use switchyard_proto::state::State;
use switchyard_proto::v1::{Quota, QuotaPolicy};
use tokio::sync::{Semaphore, watch};

use crate::error::Error;

/// Byte limiters keep their replenish interval at 100 ns or more (rounding error below 0.5%).
const MAX_BYTE_CELLS_PER_SEC: u64 = 10_000_000;

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One limit of a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// `produce_msgs_per_sec`.
    ProduceMsgs,
    /// `produce_bytes_per_sec`.
    ProduceBytes,
    /// `consume_msgs_per_sec`.
    ConsumeMsgs,
}

impl Limit {
    /// The quota field that sets this limit.
    pub fn field(self) -> &'static str {
        match self {
            Limit::ProduceMsgs => "produce_msgs_per_sec",
            Limit::ProduceBytes => "produce_bytes_per_sec",
            Limit::ConsumeMsgs => "consume_msgs_per_sec",
        }
    }
}

/// Why a record may not pass now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Over `limit` (`rate` per second): capacity again after `wait`.
    Wait {
        /// The limit.
        limit: Limit,
        /// Its rate per second.
        rate: u64,
        /// Time until the record could pass (if nothing else takes the capacity first).
        wait: Duration,
    },
    /// The record (`bytes` long) is larger than the byte limiter's burst: it can never pass
    /// under this quota.
    TooLarge {
        /// Size of the record.
        bytes: u64,
        /// The byte burst.
        burst: u64,
    },
}

/// One limiter: one axis of one topic's quota.
struct Rate<C: Clock> {
    limiter: Limiter<C>,
    limit: Limit,
    per_sec: u64,
    /// In messages or bytes.
    burst: u64,
    /// Messages or bytes per governor cell.
    unit: u64,
    burst_cells: u32,
    /// The largest `n` that fits the burst (`burst_cells × unit`).
    max_take: u64,
    /// Bytes charged so far (when `unit` > 1): a record pays for the cell boundaries its bytes
    /// cross, so records smaller than a cell are charged exactly on average.
    carry: AtomicU64,
}

impl<C: Clock> fmt::Debug for Rate<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rate")
            .field("limit", &self.limit)
            .field("per_sec", &self.per_sec)
            .field("burst", &self.burst)
            .field("unit", &self.unit)
            .finish()
    }
}

impl<C: Clock + Clone> Rate<C> {
    /// `None` when the rate is 0 (no limit) or too high to enforce.
    fn new(limit: Limit, per_sec: u64, burst: u64, clock: &C) -> Option<Self> {
        if per_sec == 0 {
            return None;
        }
        let unit = match limit {
            Limit::ProduceBytes => per_sec.div_ceil(MAX_BYTE_CELLS_PER_SEC),
            _ => 1,
        };
        let period_ns = (1_000_000_000u128 * unit as u128 + per_sec as u128 / 2) / per_sec as u128;
        if period_ns == 0 {
            return None;
        }
        let burst = burst.max(1);
        let burst_cells = burst.div_ceil(unit).clamp(1, u32::MAX as u64) as u32;
        let quota = governor::Quota::with_period(Duration::from_nanos(
            period_ns.min(u64::MAX as u128) as u64,
        ))?
        .allow_burst(NonZeroU32::new(burst_cells)?);
        Some(Self {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            limit,
            per_sec,
            burst,
            unit,
            burst_cells,
            max_take: burst_cells as u64 * unit,
            carry: AtomicU64::new(0),
        })
    }
}

impl<C: Clock> Rate<C> {
    /// The cells `n` units cost now: the cell boundaries they cross after what was charged
    /// before. (Two concurrent records may both, or neither, pay for the same boundary: an
    /// error of one cell, either way.)
    fn cost(&self, n: u64) -> u64 {
        if self.unit == 1 {
            return n;
        }
        (self.carry.load(Ordering::Relaxed) % self.unit + n) / self.unit
    }

    /// Takes the whole burst, so the limiter starts empty.
    fn drain(&self) {
        if let Some(n) = NonZeroU32::new(self.burst_cells) {
            let _ = self.limiter.check_n(n);
        }
    }

    /// Takes `n` messages or bytes (`n` must fit the burst; see [`Rate::fits`]).
    fn take(&self, n: u64) -> Result<(), Throttled> {
        let cells = self.cost(n).min(self.burst_cells as u64) as u32;
        let r = match cells {
            0 => Ok(()),
            1 => self.limiter.check(),
            c => match self.limiter.check_n(NonZeroU32::new(c).expect("c > 1")) {
                Ok(r) => r,
                Err(_) => {
                    return Err(Throttled::TooLarge {
                        bytes: n,
                        burst: self.burst,
                    });
                }
            },
        };
        match r {
            Ok(()) => {
                if self.unit > 1 {
                    self.carry.fetch_add(n, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(not_until) => Err(Throttled::Wait {
                limit: self.limit,
                rate: self.per_sec,
                wait: not_until.wait_time_from(self.limiter.clock().now()),
            }),
        }
    }

    #[inline]
    fn fits(&self, n: u64) -> bool {
        n <= self.max_take
    }
}

/// The quota in force for one logical topic, with its limiters.
pub struct TopicQuota<C: Clock = DefaultClock> {
    quota: Quota,
    produce_msgs: Option<Arc<Rate<C>>>,
    produce_bytes: Option<Arc<Rate<C>>>,
    consume_msgs: Option<Arc<Rate<C>>>,
}

impl<C: Clock> fmt::Debug for TopicQuota<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicQuota")
            .field("quota", &self.quota)
            .field("produce_msgs", &self.produce_msgs)
            .field("produce_bytes", &self.produce_bytes)
            .field("consume_msgs", &self.consume_msgs)
            .finish()
    }
}

impl<C: Clock> TopicQuota<C> {
    /// The configured quota entry that applies (its `app` and `topic` say which one matched).
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// True when a produce over the limit fails at once instead of waiting.
    pub fn rejects(&self) -> bool {
        self.quota.policy == QuotaPolicy::Reject as i32
    }

    /// The effective burst of a limit, in messages or bytes; `None` when that axis is not
    /// limited.
    pub fn burst(&self, limit: Limit) -> Option<u64> {
        let r = match limit {
            Limit::ProduceMsgs => &self.produce_msgs,
            Limit::ProduceBytes => &self.produce_bytes,
            Limit::ConsumeMsgs => &self.consume_msgs,
        };
        r.as_ref().map(|r| r.burst)
    }

    /// Takes one message and `bytes` bytes of produce capacity, or says why not. Nothing is
    /// taken from a limit that refuses; a record refused by the byte limit has used its message
    /// cell.
    pub fn check_produce(&self, bytes: u64) -> Result<(), Throttled> {
        let mut msg_taken = false;
        self.try_produce(bytes, &mut msg_taken)
    }

    /// As [`TopicQuota::check_produce`], remembering across retries whether the message cell
    /// was already taken.
    pub(crate) fn try_produce(&self, bytes: u64, msg_taken: &mut bool) -> Result<(), Throttled> {
        if let Some(b) = &self.produce_bytes
            && !b.fits(bytes)
        {
            return Err(Throttled::TooLarge {
                bytes,
                burst: b.burst,
            });
        }
        if !*msg_taken {
            if let Some(m) = &self.produce_msgs {
                m.take(1)?;
            }
            *msg_taken = true;
        }
        if let Some(b) = &self.produce_bytes {
            b.take(bytes)?;
        }
        Ok(())
    }

    /// Takes one message of consume capacity, or says how long to wait.
    pub fn check_consume(&self) -> Result<(), Throttled> {
        match &self.consume_msgs {
            Some(c) => c.take(1),
            None => Ok(()),
        }
    }
}

/// The quotas of one configuration version for one application: the limiters per logical
/// topic. Cheap to clone (shares the limiters).
pub struct Quotas<C: Clock = DefaultClock> {
    by_topic: FxHashMap<String, Arc<TopicQuota<C>>>,
}

impl<C: Clock> Default for Quotas<C> {
    fn default() -> Self {
        Self {
            by_topic: FxHashMap::default(),
        }
    }
}

impl<C: Clock> Clone for Quotas<C> {
    fn clone(&self) -> Self {
        Self {
            by_topic: self.by_topic.clone(),
        }
    }
}

impl<C: Clock> fmt::Debug for Quotas<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quotas")
            .field("topics", &self.by_topic.len())
            .finish()
    }
}

/// The quota entry of `state` that applies to `app` on logical `topic`, most specific first:
/// (app, topic), (app, `*`), (`*`, topic), (`*`, `*`).
pub fn resolve<'s>(state: &'s State, app: &str, topic: &str) -> Option<&'s Quota> {
    if state.quotas.is_empty() {
        return None;
    }
    [(app, topic), (app, "*"), ("*", topic), ("*", "*")]
        .into_iter()
        .find_map(|(a, t)| state.quotas.get(&(a.to_string(), t.to_string())))
}

fn msg_params(rate: u64, q: &Quota) -> (u64, u64) {
    (rate, if q.burst > 0 { q.burst } else { rate })
}

fn byte_params(q: &Quota) -> (u64, u64) {
    let rate = q.produce_bytes_per_sec;
    let burst = if q.burst > 0 && q.produce_msgs_per_sec > 0 {
        let b = rate as u128 * q.burst as u128 / q.produce_msgs_per_sec as u128;
        b.clamp(1, u64::MAX as u128) as u64
    } else {
        rate
    };
    (rate, burst)
}

impl<C: Clock + Clone> Quotas<C> {
    /// Compiles the quotas of `state` for `app` over the logical `topics` it may use, reusing
    /// `prev`'s limiters where a topic's limit is unchanged. `clock` times new limiters.
    pub fn compile<'a>(
        state: &State,
        app: &str,
        topics: impl IntoIterator<Item = &'a str>,
        prev: Option<&Quotas<C>>,
        clock: &C,
    ) -> Self {
        let mut specific: FxHashMap<&str, &Quota> = FxHashMap::default();
        let mut generic: FxHashMap<&str, &Quota> = FxHashMap::default();
        let (mut app_any, mut any_any) = (None, None);
        for ((a, t), q) in &state.quotas {
            match (a == app, a == "*", t == "*") {
                (true, _, true) => app_any = Some(q),
                (true, _, false) => {
                    specific.insert(t, q);
                }
                (false, true, true) => any_any = Some(q),
                (false, true, false) => {
                    generic.insert(t, q);
                }
                (false, false, _) => {}
            }
        }
        let mut by_topic = FxHashMap::default();
        if specific.is_empty() && generic.is_empty() && app_any.is_none() && any_any.is_none() {
            return Self { by_topic };
        }
        for t in topics {
            let Some(q) = specific
                .get(t)
                .copied()
                .or(app_any)
                .or_else(|| generic.get(t).copied())
                .or(any_any)
            else {
                continue;
            };
            let before = prev.and_then(|p| p.by_topic.get(t));
            if let Some(b) = before
                && b.quota == *q
            {
                by_topic.insert(t.to_string(), b.clone());
                continue;
            }
            let axis = |limit: Limit,
                        (rate, burst): (u64, u64),
                        old: Option<&Arc<Rate<C>>>|
             -> Option<Arc<Rate<C>>> {
                if let Some(o) = old
                    && o.per_sec == rate
                    && o.burst == burst.max(1)
                {
                    return Some(o.clone());
                }
                let r = Rate::new(limit, rate, burst, clock)?;
                if old.is_some() {
                    r.drain();
                }
                Some(Arc::new(r))
            };
            let tq = TopicQuota {
                quota: q.clone(),
                produce_msgs: axis(
                    Limit::ProduceMsgs,
                    msg_params(q.produce_msgs_per_sec, q),
                    before.and_then(|b| b.produce_msgs.as_ref()),
                ),
                produce_bytes: axis(
                    Limit::ProduceBytes,
                    byte_params(q),
                    before.and_then(|b| b.produce_bytes.as_ref()),
                ),
                consume_msgs: axis(
                    Limit::ConsumeMsgs,
                    msg_params(q.consume_msgs_per_sec, q),
                    before.and_then(|b| b.consume_msgs.as_ref()),
                ),
            };
            by_topic.insert(t.to_string(), Arc::new(tq));
        }
        Self { by_topic }
    }
}

impl<C: Clock> Quotas<C> {
    /// The quota in force for a logical topic.
    #[inline]
    pub fn get(&self, topic: &str) -> Option<&Arc<TopicQuota<C>>> {
        if self.by_topic.is_empty() {
            return None;
        }
        self.by_topic.get(topic)
    }

    /// Number of logical topics with a quota.
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// True when no topic has a quota.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }
}

/// Counts of records a quota held back or refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleStats {
    /// Records that had to wait for capacity (BLOCK, or any paced consumption).
    pub delayed: u64,
    /// Sends refused at once (REJECT).
    pub rejected: u64,
    /// Total time records waited.
    pub waited: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct ThrottleCounters {
    delayed: AtomicU64,
    rejected: AtomicU64,
    waited_ns: AtomicU64,
    /// The client's metrics, which count the same events per topic.
    metrics: Option<(crate::metrics::Metrics, crate::metrics::Direction)>,
}

impl ThrottleCounters {
    /// Counters that also count into `metrics` (as `direction`).
    pub(crate) fn with_metrics(
        metrics: crate::metrics::Metrics,
        direction: crate::metrics::Direction,
    ) -> Self {
        Self {
            metrics: Some((metrics, direction)),
            ..Self::default()
        }
    }

    fn count_rejected(&self, topic: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        if let Some((m, _)) = &self.metrics {
            m.throttle_rejected(topic);
        }
    }

    pub(crate) fn stats(&self) -> ThrottleStats {
        ThrottleStats {
            delayed: self.delayed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            waited: Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed)),
        }
    }

    fn waited(&self, since: Instant, topic: &str) {
        let waited = since.elapsed();
        self.delayed.fetch_add(1, Ordering::Relaxed);
        self.waited_ns
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        if let Some((m, direction)) = &self.metrics {
            m.throttle_waited(topic, *direction, waited.as_secs_f64());
        }
    }
}

/// Orders the sends to one topic that wait for quota capacity: one waiter at a time polls the
/// limiter (no thundering herd), in arrival order, and a new send does not overtake waiting
/// ones. The limiter itself is never behind this queue: with nobody waiting, a send checks it
/// directly.
#[derive(Debug)]
pub(crate) struct WaitQueue {
    sem: Semaphore,
    waiting: AtomicUsize,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self {
            sem: Semaphore::new(1),
            waiting: AtomicUsize::new(0),
        }
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the current quotas come from: the SDK's configuration (or a test's).
pub(crate) trait QuotaSource<C: Clock> {
    /// Calls `f` with the current quota of `topic`.
    fn with_quota<R>(&self, topic: &str, f: impl FnOnce(Option<&Arc<TopicQuota<C>>>) -> R) -> R;
    /// Notifications of new configuration versions.
    fn changes(&self) -> watch::Receiver<(u64, bool)>;
}

impl QuotaSource<DefaultClock> for crate::watch::Shared {
    #[inline]
    fn with_quota<R>(
        &self,
        topic: &str,
        f: impl FnOnce(Option<&Arc<TopicQuota<DefaultClock>>>) -> R,
    ) -> R {
        if !self.any_quota() {
            return f(None);
        }
        let md = self.load();
        f(md.quotas().get(topic))
    }

    fn changes(&self) -> watch::Receiver<(u64, bool)> {
        self.subscribe()
    }
}

enum Step {
    Pass,
    Wait(Duration),
    Fail(Error),
}

fn produce_step<C: Clock>(
    q: &TopicQuota<C>,
    topic: &str,
    bytes: u64,
    msg_taken: &mut bool,
    counters: &ThrottleCounters,
) -> Step {
    match q.try_produce(bytes, msg_taken) {
        Ok(()) => Step::Pass,
        Err(Throttled::TooLarge { bytes, burst }) => Step::Fail(Error::InvalidArgument(format!(
            "a record of {bytes} bytes (key, payload and headers) to logical topic {topic:?} is larger than the {burst}-byte burst of its produce_bytes_per_sec quota (app {:?}, topic {:?}); it can never be sent under this quota",
            q.quota.app, q.quota.topic
        ))),
        Err(Throttled::Wait { limit, rate, wait }) if q.rejects() => {
            counters.count_rejected(topic);
            Step::Fail(Error::QuotaExceeded {
                topic: topic.to_string(),
                quota_app: q.quota.app.clone(),
                quota_topic: q.quota.topic.clone(),
                limit: limit.field(),
                rate,
                retry_after: wait,
            })
        }
        Err(Throttled::Wait { wait, .. }) => Step::Wait(wait),
    }
}

/// Waits `d` or until a new configuration version arrives.
async fn pause(d: Duration, versions: &mut watch::Receiver<(u64, bool)>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        r = versions.changed() => if r.is_err() { tokio::time::sleep(d).await },
    }
}

/// Takes the produce capacity for one record of `bytes` bytes to logical `topic` under its
/// current quota: at once when there is capacity, else waiting (BLOCK) or failing (REJECT).
/// The quota is looked up again after every wait, so a changed quota applies to waiting sends
/// too. Cancel-safe: capacity is taken only when the future completes.
pub(crate) async fn admit_produce<C: Clock, S: QuotaSource<C>>(
    src: &S,
    queue: &WaitQueue,
    topic: &str,
    bytes: u64,
    counters: &ThrottleCounters,
) -> Result<(), Error> {
    match admit_produce_now(src, queue, topic, bytes, counters) {
        Admit::Done(r) => r,
        // The waiting path lives in its own (boxed) future: it holds a semaphore permit, a
        // version receiver and timers, which would otherwise make every send's future larger.
        Admit::Wait { msg_taken } => {
            Box::pin(admit_produce_waiting(
                src, queue, topic, bytes, counters, msg_taken,
            ))
            .await
        }
    }
}

/// What [`admit_produce_now`] decided.
pub(crate) enum Admit {
    /// Admitted or refused at once.
    Done(Result<(), Error>),
    /// The send must wait: continue with [`admit_produce_waiting`].
    Wait {
        /// The message limiter's capacity is already taken.
        msg_taken: bool,
    },
}

/// The part of [`admit_produce`] that never waits (no runtime needed).
pub(crate) fn admit_produce_now<C: Clock, S: QuotaSource<C>>(
    src: &S,
    queue: &WaitQueue,
    topic: &str,
    bytes: u64,
    counters: &ThrottleCounters,
) -> Admit {
    let mut msg_taken = false;
    let first = src.with_quota(topic, |q| match q {
        None => Step::Pass,
        // Do not overtake sends already waiting.
        Some(q) if !q.rejects() && queue.waiting.load(Ordering::Acquire) > 0 => {
            Step::Wait(Duration::ZERO)
        }
        Some(q) => produce_step(q, topic, bytes, &mut msg_taken, counters),
    });
    match first {
        Step::Pass => Admit::Done(Ok(())),
        Step::Fail(e) => Admit::Done(Err(e)),
        Step::Wait(_) => Admit::Wait { msg_taken },
    }
}

/// The rest of [`admit_produce`] when the send has to wait.
pub(crate) async fn admit_produce_waiting<C: Clock, S: QuotaSource<C>>(
    src: &S,
    queue: &WaitQueue,
    topic: &str,
    bytes: u64,
    counters: &ThrottleCounters,
    mut msg_taken: bool,
) -> Result<(), Error> {
    let since = Instant::now();
    queue.waiting.fetch_add(1, Ordering::AcqRel);
    let _waiting = Waiting(&queue.waiting);
    let _turn = queue.sem.acquire().await.map_err(|_| Error::Closed)?;
    let mut versions = src.changes();
    loop {
        let step = src.with_quota(topic, |q| match q {
            None => Step::Pass,
            Some(q) => produce_step(q, topic, bytes, &mut msg_taken, counters),
        });
        match step {
            Step::Pass => {
                counters.waited(since, topic);
                return Ok(());
            }
            Step::Fail(e) => return Err(e),
            Step::Wait(wait) => pause(wait, &mut versions).await,
        }
    }
}

/// Takes one message of consume capacity on logical `topic`, waiting as long as needed (a
/// new configuration version ends a wait early and is looked at). Cancel-safe: capacity is
/// taken only when the future completes. Returns whether it had to wait.
pub(crate) async fn admit_consume<C: Clock, S: QuotaSource<C>>(
    src: &S,
    topic: &str,
    counters: &ThrottleCounters,
    versions: &mut watch::Receiver<(u64, bool)>,
) -> bool {
    let mut since = None;
    loop {
        let r = src.with_quota(topic, |q| match q {
            None => Ok(()),
            Some(q) => q.check_consume(),
        });
        match r {
            Ok(()) => {
                if let Some(s) = since {
                    counters.waited(s, topic);
                }
                return since.is_some();
            }
            Err(Throttled::Wait { wait, .. }) => {
                since.get_or_insert_with(Instant::now);
                pause(wait, versions).await;
            }
            Err(Throttled::TooLarge { .. }) => return since.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use governor::nanos::Nanos;
    use switchyard_proto::v1::QuotaPolicy;

    fn quota(app: &str, topic: &str, msgs: u64, bytes: u64, consume: u64, burst: u64) -> Quota {
        Quota {
            app: app.into(),
            topic: topic.into(),
            produce_msgs_per_sec: msgs,
            produce_bytes_per_sec: bytes,
            consume_msgs_per_sec: consume,
            burst,
            policy: QuotaPolicy::Block as i32,
        }
    }

    fn reject(mut q: Quota) -> Quota {
        q.policy = QuotaPolicy::Reject as i32;
        q
    }

    fn state(quotas: &[Quota]) -> State {
        let mut s = State::default();
        for q in quotas {
            s.quotas.insert((q.app.clone(), q.topic.clone()), q.clone());
        }
        s
    }

    const TOPICS: &[&str] = &["orders", "payments", "audit", "logs"];

    fn compile(
        s: &State,
        app: &str,
        prev: Option<&Quotas<FakeRelativeClock>>,
        clock: &FakeRelativeClock,
    ) -> Quotas<FakeRelativeClock> {
        Quotas::compile(s, app, TOPICS.iter().copied(), prev, clock)
    }

    fn wait(limit: Limit, rate: u64, ms: u64) -> Result<(), Throttled> {
        Err(Throttled::Wait {
            limit,
            rate,
            wait: Duration::from_millis(ms),
        })
    }

    #[test]
    fn most_specific_quota_wins() {
        let s = state(&[
            quota("billing", "orders", 1, 0, 0, 0),
            quota("billing", "*", 2, 0, 0, 0),
            quota("*", "orders", 3, 0, 0, 0),
            quota("*", "payments", 4, 0, 0, 0),
            quota("*", "*", 5, 0, 0, 0),
        ]);
        let rate = |app: &str, topic: &str| resolve(&s, app, topic).map(|q| q.produce_msgs_per_sec);
        assert_eq!(rate("billing", "orders"), Some(1), "(app, topic)");
        assert_eq!(
            rate("billing", "payments"),
            Some(2),
            "(app, *) beats (*, topic)"
        );
        assert_eq!(rate("billing", "audit"), Some(2), "(app, *)");
        assert_eq!(rate("shop", "orders"), Some(3), "(*, topic)");
        assert_eq!(rate("shop", "payments"), Some(4), "(*, topic)");
        assert_eq!(rate("shop", "audit"), Some(5), "(*, *)");

        let clock = FakeRelativeClock::default();
        for app in ["billing", "shop"] {
            let q = compile(&s, app, None, &clock);
            assert_eq!(q.len(), TOPICS.len());
            for t in TOPICS {
                assert_eq!(
                    q.get(t).unwrap().quota(),
                    resolve(&s, app, t).unwrap(),
                    "compiled quota of {app} on {t}"
                );
            }
        }
        // Only entries naming the app or "*" apply.
        let s = state(&[
            quota("billing", "orders", 1, 0, 0, 0),
            quota("*", "audit", 3, 0, 0, 0),
        ]);
        let q = compile(&s, "shop", None, &clock);
        assert!(q.get("orders").is_none());
        assert_eq!(q.get("audit").unwrap().quota().produce_msgs_per_sec, 3);
        assert!(compile(&State::default(), "shop", None, &clock).is_empty());
    }

    #[test]
    fn block_waits_exactly_the_gcra_interval() {
        let clock = FakeRelativeClock::default();
        // 10 msgs/s, burst 0 = one second's worth (10).
        let q = compile(&state(&[quota("*", "*", 10, 0, 0, 0)]), "a", None, &clock);
        let o = q.get("orders").unwrap();
        assert!(!o.rejects());
        assert_eq!(o.burst(Limit::ProduceMsgs), Some(10));
        for i in 0..10 {
            assert_eq!(o.check_produce(100), Ok(()), "burst cell {i}");
        }
        assert_eq!(o.check_produce(100), wait(Limit::ProduceMsgs, 10, 100));
        clock.advance(Duration::from_millis(40));
        assert_eq!(o.check_produce(100), wait(Limit::ProduceMsgs, 10, 60));
        clock.advance(Duration::from_millis(60));
        assert_eq!(o.check_produce(100), Ok(()));
        assert_eq!(o.check_produce(100), wait(Limit::ProduceMsgs, 10, 100));
        // Over 10 simulated seconds in 1 ms steps, exactly 100 more pass.
        let mut passed = 0;
        for _ in 0..10_000 {
            clock.advance(Duration::from_millis(1));
            while o.check_produce(100).is_ok() {
                passed += 1;
            }
        }
        assert_eq!(passed, 100);
        // Each topic has its own limiters under a wildcard quota.
        assert_eq!(q.get("payments").unwrap().check_produce(1), Ok(()));
    }

    #[test]
    fn burst_setting_and_byte_limits() {
        let clock = FakeRelativeClock::default();
        // 100 msgs/s, 10,000 B/s, burst 5 messages = 0.05 s = 500 bytes.
        let q = compile(
            &state(&[quota("*", "orders", 100, 10_000, 0, 5)]),
            "a",
            None,
            &clock,
        );
        let o = q.get("orders").unwrap();
        assert_eq!(o.burst(Limit::ProduceMsgs), Some(5));
        assert_eq!(o.burst(Limit::ProduceBytes), Some(500));
        assert_eq!(o.burst(Limit::ConsumeMsgs), None);
        assert_eq!(o.check_consume(), Ok(()), "consumption not limited");
        for _ in 0..5 {
            assert_eq!(o.check_produce(10), Ok(()));
        }
        assert_eq!(o.check_produce(10), wait(Limit::ProduceMsgs, 100, 10));
        clock.advance(Duration::from_secs(1));
        // Bytes bind: 500 bytes of burst, then 10 bytes per ms.
        assert_eq!(o.check_produce(400), Ok(()));
        assert_eq!(o.check_produce(200), wait(Limit::ProduceBytes, 10_000, 10));
        // The message cell of the refused record was used; the next one passes the message
        // limit, and waits only for bytes.
        clock.advance(Duration::from_millis(10));
        assert_eq!(o.check_produce(200), Ok(()));
        // A record larger than the byte burst can never pass.
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            o.check_produce(501),
            Err(Throttled::TooLarge {
                bytes: 501,
                burst: 500
            })
        );
        assert_eq!(o.check_produce(500), Ok(()));
        // Without a message rate, the byte burst is one second's worth.
        let q = compile(
            &state(&[quota("*", "*", 0, 1_000, 0, 5)]),
            "a",
            None,
            &clock,
        );
        assert_eq!(
            q.get("logs").unwrap().burst(Limit::ProduceBytes),
            Some(1_000)
        );
        assert_eq!(q.get("logs").unwrap().burst(Limit::ProduceMsgs), None);
    }

    #[test]
    fn consume_limit_paces_one_message_at_a_time() {
        let clock = FakeRelativeClock::default();
        let q = compile(&state(&[quota("a", "*", 0, 0, 4, 1)]), "a", None, &clock);
        let o = q.get("audit").unwrap();
        assert_eq!(o.check_produce(1_000_000), Ok(()), "produce not limited");
        assert_eq!(o.check_consume(), Ok(()));
        assert_eq!(o.check_consume(), wait(Limit::ConsumeMsgs, 4, 250));
        clock.advance(Duration::from_millis(250));
        assert_eq!(o.check_consume(), Ok(()));
    }

    #[test]
    fn reject_policy_is_reported_and_takes_nothing() {
        let clock = FakeRelativeClock::default();
        let q = compile(
            &state(&[reject(quota("a", "orders", 2, 0, 0, 0))]),
            "a",
            None,
            &clock,
        );
        let o = q.get("orders").unwrap();
        assert!(o.rejects());
        assert_eq!(o.check_produce(1), Ok(()));
        assert_eq!(o.check_produce(1), Ok(()));
        // Refused attempts do not use capacity: after 500 ms exactly one passes.
        for _ in 0..100 {
            assert!(o.check_produce(1).is_err());
        }
        clock.advance(Duration::from_millis(500));
        assert_eq!(o.check_produce(1), Ok(()));
        assert_eq!(o.check_produce(1), wait(Limit::ProduceMsgs, 2, 500));
    }

    #[test]
    fn limiters_survive_unrelated_changes_and_restart_empty_when_changed() {
        let clock = FakeRelativeClock::default();
        let s1 = state(&[
            quota("*", "orders", 10, 0, 0, 0),
            quota("*", "audit", 10, 0, 0, 0),
        ]);
        let v1 = compile(&s1, "a", None, &clock);
        let o1 = v1.get("orders").unwrap().clone();
        for _ in 0..10 {
            o1.check_produce(1).unwrap();
        }
        assert!(o1.check_produce(1).is_err());
        // A new version with the same quota for orders (audit changed): same limiter, still
        // exhausted.
        let s2 = state(&[
            quota("*", "orders", 10, 0, 0, 0),
            quota("*", "audit", 20, 0, 0, 0),
        ]);
        let v2 = compile(&s2, "a", Some(&v1), &clock);
        assert!(Arc::ptr_eq(&o1, v2.get("orders").unwrap()));
        assert!(v2.get("orders").unwrap().check_produce(1).is_err());
        // The changed audit limiter starts empty: the next cell after 1/20 s.
        let a2 = v2.get("audit").unwrap();
        assert_eq!(a2.check_produce(1), wait(Limit::ProduceMsgs, 20, 50));
        clock.advance(Duration::from_millis(50));
        assert_eq!(a2.check_produce(1), Ok(()));
        // A policy change alone keeps the limiter state (a new TopicQuota, same limiter).
        let s3 = state(&[
            reject(quota("*", "orders", 10, 0, 0, 0)),
            quota("*", "audit", 20, 0, 0, 0),
        ]);
        let v3 = compile(&s3, "a", Some(&v2), &clock);
        let o3 = v3.get("orders").unwrap();
        assert!(!Arc::ptr_eq(&o1, o3) && o3.rejects());
        assert!(Arc::ptr_eq(
            o1.produce_msgs.as_ref().unwrap(),
            o3.produce_msgs.as_ref().unwrap()
        ));
        // An axis added by a change starts full; the same quota now matched by a more specific
        // entry keeps its limiter.
        let s4 = state(&[
            reject(quota("*", "orders", 10, 0, 0, 0)),
            quota("a", "audit", 20, 0, 5, 0),
        ]);
        let v4 = compile(&s4, "a", Some(&v3), &clock);
        let a4 = v4.get("audit").unwrap();
        assert!(Arc::ptr_eq(
            a2.produce_msgs.as_ref().unwrap(),
            a4.produce_msgs.as_ref().unwrap()
        ));
        for _ in 0..5 {
            assert_eq!(a4.check_consume(), Ok(()));
        }
        // Removing a quota removes the limiters.
        let v5 = compile(&State::default(), "a", Some(&v4), &clock);
        assert!(v5.get("orders").is_none());
    }

    #[test]
    fn high_rates() {
        let clock = FakeRelativeClock::default();
        // 1 GB/s: cells of 100 bytes, so the replenish interval is 100 ns.
        let q = compile(
            &state(&[quota("*", "*", 10_000_000, 1_000_000_000, 0, 0)]),
            "a",
            None,
            &clock,
        );
        let o = q.get("orders").unwrap();
        let b = o.produce_bytes.as_ref().unwrap();
        assert_eq!((b.unit, b.burst_cells), (100, 10_000_000));
        let m = o.produce_msgs.as_ref().unwrap();
        assert_eq!(m.limiter.check(), Ok(()));
        // 1 GB/s sustained over 1 simulated second, in 1 KB records, after the burst is gone.
        while o.check_produce(1_000).is_ok() {}
        let mut bytes = 0u64;
        for _ in 0..1_000 {
            clock.advance(Duration::from_millis(1));
            while o.check_produce(1_000).is_ok() {
                bytes += 1_000;
            }
        }
        assert!((999_000_000..=1_001_000_000).contains(&bytes), "{bytes}");
        // Records that are not a whole number of cells are charged exactly on average:
        // 150-byte records at 1 GB/s (burst 1,000 messages = 100,000 bytes).
        let q = compile(
            &state(&[quota("*", "*", 10_000_000, 1_000_000_000, 0, 1_000)]),
            "a",
            None,
            &clock,
        );
        let o = q.get("orders").unwrap();
        assert_eq!(o.burst(Limit::ProduceBytes), Some(100_000));
        while o.check_produce(150).is_ok() {}
        let mut bytes = 0u64;
        // Steps shorter than the burst (100 µs).
        for _ in 0..5_000 {
            clock.advance(Duration::from_micros(10));
            while o.check_produce(150).is_ok() {
                bytes += 150;
            }
        }
        assert!((49_900_000..=50_100_000).contains(&bytes), "{bytes}");
        // Rates no process reaches are not enforced.
        let q = compile(
            &state(&[quota("*", "*", 1_000_000_000_000, 0, 1, 0)]),
            "a",
            None,
            &clock,
        );
        assert!(q.get("orders").unwrap().produce_msgs.is_none());
    }

    /// A governor clock on tokio's (pausable) time, to test the async waits deterministically.
    #[derive(Debug, Clone)]
    struct TokioClock(tokio::time::Instant);

    impl Clock for TokioClock {
        type Instant = Nanos;
        fn now(&self) -> Nanos {
            Nanos::from(self.0.elapsed())
        }
    }

    struct Source {
        quotas: arc_swap::ArcSwap<Quotas<TokioClock>>,
        clock: TokioClock,
        tx: watch::Sender<(u64, bool)>,
    }

    impl Source {
        fn new(quotas: &[Quota]) -> Arc<Self> {
            let clock = TokioClock(tokio::time::Instant::now());
            let q = Quotas::compile(&state(quotas), "a", TOPICS.iter().copied(), None, &clock);
            Arc::new(Self {
                quotas: arc_swap::ArcSwap::from_pointee(q),
                clock,
                tx: watch::channel((1, true)).0,
            })
        }
        fn publish(&self, quotas: &[Quota]) {
            let prev = self.quotas.load_full();
            let q = Quotas::compile(
                &state(quotas),
                "a",
                TOPICS.iter().copied(),
                Some(&prev),
                &self.clock,
            );
            self.quotas.store(Arc::new(q));
            self.tx.send_modify(|v| v.0 += 1);
        }
    }

    impl QuotaSource<TokioClock> for Source {
        fn with_quota<R>(
            &self,
            topic: &str,
            f: impl FnOnce(Option<&Arc<TopicQuota<TokioClock>>>) -> R,
        ) -> R {
            f(self.quotas.load().get(topic))
        }
        fn changes(&self) -> watch::Receiver<(u64, bool)> {
            self.tx.subscribe()
        }
    }

    /// Starts `n` senders, each sending `each` records one after the other; returns the
    /// (sender, record, admitted at) of every admission in order.
    async fn senders(
        src: &Arc<Source>,
        queue: &Arc<WaitQueue>,
        counters: &Arc<ThrottleCounters>,
        n: usize,
        each: usize,
    ) -> Vec<tokio::task::JoinHandle<Vec<Result<Duration, Error>>>> {
        (0..n)
            .map(|_| {
                let (src, queue, counters) = (src.clone(), queue.clone(), counters.clone());
                tokio::spawn(async move {
                    let start = tokio::time::Instant::now();
                    let mut out = Vec::new();
                    for _ in 0..each {
                        let r = admit_produce(&*src, &queue, "orders", 10, &counters).await;
                        out.push(r.map(|_| start.elapsed()));
                    }
                    out
                })
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn block_admits_at_the_quota_rate_in_order() {
        let src = Source::new(&[quota("*", "orders", 100, 0, 0, 10)]);
        let queue = Arc::new(WaitQueue::default());
        let counters = Arc::new(ThrottleCounters::default());
        let hs = senders(&src, &queue, &counters, 20, 10).await;
        let mut times = Vec::new();
        for h in hs {
            for r in h.await.unwrap() {
                times.push(r.unwrap());
            }
        }
        times.sort();
        // 200 records: 10 at once (burst), then one per 10 ms: the last at 1.90 s.
        assert_eq!(times.len(), 200);
        assert_eq!(times[9], Duration::ZERO);
        assert_eq!(times[199], Duration::from_millis(1_900));
        for w in times[10..].windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_millis(10));
        }
        let st = counters.stats();
        assert_eq!(st.rejected, 0);
        assert_eq!(st.delayed, 190);
        assert_eq!(queue.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_sends_keep_their_order() {
        let src = Source::new(&[quota("*", "orders", 10, 0, 0, 1)]);
        let queue = WaitQueue::default();
        let counters = ThrottleCounters::default();
        // Issued in order from one task (as join_all polls them), admitted in the same order.
        let order = parking_lot::Mutex::new(Vec::new());
        let futs = (0..20).map(|i| {
            let (src, queue, counters, order) = (&src, &queue, &counters, &order);
            async move {
                admit_produce(&**src, queue, "orders", 1, counters)
                    .await
                    .unwrap();
                order.lock().push(i);
            }
        });
        futures::future::join_all(futs).await;
        assert_eq!(*order.lock(), (0..20).collect::<Vec<_>>());
        assert_eq!(
            tokio::time::Instant::now() - src.clock.0,
            Duration::from_millis(1_900)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reject_fails_fast_and_a_change_reaches_waiting_sends() {
        let src = Source::new(&[reject(quota("*", "orders", 1, 0, 0, 2))]);
        let queue = WaitQueue::default();
        let counters = ThrottleCounters::default();
        for _ in 0..2 {
            admit_produce(&*src, &queue, "orders", 1, &counters)
                .await
                .unwrap();
        }
        let e = admit_produce(&*src, &queue, "orders", 1, &counters)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::QuotaExceeded);
        assert!(e.is_retriable());
        match &e {
            Error::QuotaExceeded {
                limit,
                rate,
                retry_after,
                quota_app,
                quota_topic,
                ..
            } => {
                assert_eq!((*limit, *rate), ("produce_msgs_per_sec", 1));
                assert_eq!(*retry_after, Duration::from_secs(1));
                assert_eq!((quota_app.as_str(), quota_topic.as_str()), ("*", "orders"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(counters.stats().rejected, 1);
        assert_eq!(
            tokio::time::Instant::now() - src.clock.0,
            Duration::ZERO,
            "no waiting"
        );
        // BLOCK at 1 msg/s: a send waits ~1 s; a change to 1,000/s 100 ms in releases it then.
        src.publish(&[quota("*", "orders", 1, 0, 0, 1)]);
        let t0 = tokio::time::Instant::now();
        let s2 = src.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s2.publish(&[quota("*", "orders", 1_000, 0, 0, 1)]);
        });
        admit_produce(&*src, &queue, "orders", 1, &counters)
            .await
            .unwrap();
        // The changed limiter starts empty: one cell later (1 ms).
        assert_eq!(t0.elapsed(), Duration::from_millis(101));
        assert_eq!(counters.stats().delayed, 1);
        // Consumption is paced too.
        src.publish(&[quota("*", "orders", 0, 0, 5, 1)]);
        let mut versions = src.changes();
        let t0 = tokio::time::Instant::now();
        for _ in 0..6 {
            admit_consume(&*src, "orders", &counters, &mut versions).await;
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
    }
}
