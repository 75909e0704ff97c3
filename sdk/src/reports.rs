//! Who serves a cluster client's delivery reports (and statistics): the application, on its
//! own thread, while it calls [`crate::Producer::poll`] — as a librdkafka program calls
//! `rd_kafka_poll` after its sends — and otherwise one report thread per client.
//!
//! Serving reports on the sending thread is what a C or Python program that polls does, and it
//! is much cheaper than handing each report to another thread: the record's memory is freed
//! where it was allocated, still in cache, and no thread is woken per batch of reports. So
//! a client's report thread stays out of the way while the application polls: it checks every
//! [`GRACE`] whether the application polled since its last check, and serves reports itself
//! only when it did not (an application that never polls, such as an async Rust service, is
//! served exactly as by rdkafka's `ThreadedProducer`), or when a thread waits for reports it
//! cannot serve itself ([`ReportDuty::want`]: a flush, a send waiting for room).
//!
//! A client's reports are served by one thread at a time (the `serving` lock), so callbacks of
//! one client run one after another, in the order librdkafka reports them.
//!
//! Each rdkafka poll there serves one event, a batch of reports ([`serve_batch`]): the
//! delivered records are counted per send context into a thread-local [`Tally`] and added to
//! the shared counters and metrics once per batch, and their callbacks run after that, in
//! order. So a callback never sees counters that miss its own record, and a record costs no
//! atomic counter or histogram update of its own.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::producer::BaseProducer;

use crate::enqueue::MainQueue;
use crate::producer::{Reports, Settled, Tally};

/// How often a report thread checks whether the application still polls; also the longest
/// one poll of a report thread blocks. An application that stops polling has its reports
/// served by the report threads within about this long.
pub(crate) const GRACE: Duration = Duration::from_millis(10);

/// Most events (batches of reports) one application poll serves after the first.
const MAX_EVENTS_PER_POLL: usize = 1_000;

thread_local! {
    /// Delivery reports this thread has served (read around a poll to count them).
    static SERVED: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread serves a batch of reports now ([`serve_batch`]).
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
    /// The batch's counts and the callbacks waiting for them (its vector is kept for reuse).
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

/// The reports of one batch: counted first, their callbacks run after.
#[derive(Default)]
struct Batch {
    tally: Tally,
    pending: Vec<Settled>,
}

/// Runs `poll` (one rdkafka poll: one event, a batch of reports) with this thread's callback
/// reports batched: counted into the tally while `poll` runs; then the tally is added to the
/// shared counters, and the callbacks run, in report order. Nested calls (a callback that
/// polls) serve their own batch.
fn serve_batch<R>(poll: impl FnOnce() -> R) -> R {
    if IN_BATCH.get() {
        return poll();
    }
    IN_BATCH.set(true);
    // Ends the batch also if `poll` panics, so no callback is left behind.
    let _end = EndBatch;
    poll()
}

struct EndBatch;

impl Drop for EndBatch {
    fn drop(&mut self) {
        IN_BATCH.set(false);
        let mut pending = BATCH.with_borrow_mut(|b| {
            b.tally.flush();
            std::mem::take(&mut b.pending)
        });
        if pending.is_empty() {
            return;
        }
        for s in pending.drain(..) {
            s.run();
        }
        // Keep the vector's room for the next batch (unless a callback started another).
        BATCH.with_borrow_mut(|b| {
            if b.pending.is_empty() {
                b.pending = pending;
            }
        });
    }
}

/// Runs `f` with this thread's tally when it serves a batch of reports now (`None` otherwise:
/// count right away).
pub(crate) fn with_batch<R>(f: impl FnOnce(Option<&mut Tally>) -> R) -> R {
    if !IN_BATCH.get() {
        return f(None);
    }
    BATCH.with_borrow_mut(|b| f(Some(&mut b.tally)))
}

/// Queues a settled callback send of the current batch, to run once the batch is counted.
pub(crate) fn defer(s: Settled) {
    BATCH.with_borrow_mut(|b| b.pending.push(s));
}

/// Counts one report served on this thread.
pub(crate) fn count_served() {
    SERVED.set(SERVED.get().wrapping_add(1));
}

/// Shared by a producer's clients: whether its application polls, and who waits.
#[derive(Debug, Default)]
pub(crate) struct ReportDuty {
    /// Bumped by every application poll.
    polls: AtomicU64,
    /// Threads waiting for reports they do not serve themselves.
    wanted: AtomicUsize,
    /// The clients' report threads, woken when a waiter arrives.
    threads: Mutex<Vec<Thread>>,
}

/// While alive, the report threads serve reports even though the application polls.
#[derive(Debug)]
pub struct WantReports(Arc<ReportDuty>);

impl Drop for WantReports {
    fn drop(&mut self) {
        self.0.wanted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ReportDuty {
    /// Notes an application poll.
    pub(crate) fn polled(&self) {
        // Only "it changed" matters to the report threads: a plain store, no atomic add per
        // poll (two threads polling at once may store the same value, which still changed).
        let n = self.polls.load(Ordering::Relaxed);
        self.polls.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Makes the report threads serve reports now, until the guard is dropped.
    pub(crate) fn want(self: &Arc<Self>) -> WantReports {
        self.wanted.fetch_add(1, Ordering::AcqRel);
        for t in self.threads.lock().iter() {
            t.unpark();
        }
        WantReports(self.clone())
    }
}

/// A cluster client's librdkafka producer and the thread that serves its reports when the
/// application does not.
pub(crate) struct Served {
    pub(crate) producer: Arc<BaseProducer<Reports>>,
    /// Its event queue (`None` only if librdkafka could not hand it out: then always poll).
    queue: Option<MainQueue>,
    /// Held while serving this client's reports.
    serving: Arc<Mutex<()>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    duty: Arc<ReportDuty>,
}

impl Served {
    pub(crate) fn start(
        producer: BaseProducer<Reports>,
        duty: Arc<ReportDuty>,
        name: &str,
    ) -> std::io::Result<Self> {
        let producer = Arc::new(producer);
        let serving = Arc::new(Mutex::new(()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (producer, serving, stop, duty) = (
                producer.clone(),
                serving.clone(),
                stop.clone(),
                duty.clone(),
            );
            std::thread::Builder::new()
                .name(format!("sy-reports-{name}"))
                .spawn(move || report_thread(&producer, &serving, &stop, &duty))?
        };
        duty.threads.lock().push(thread.thread().clone());
        Ok(Self {
            queue: MainQueue::new(producer.clone()),
            producer,
            serving,
            stop,
            thread: Some(thread),
            duty,
        })
    }

    /// Serves the reports that have arrived (all of them, like `rd_kafka_poll`; waiting up to
    /// `timeout` when there are none), on this thread, unless another thread is serving this
    /// client's reports right now (then it does nothing). Returns how many.
    pub(crate) fn poll_now(&self, timeout: Duration) -> usize {
        let empty = || self.queue.as_ref().is_some_and(MainQueue::is_empty);
        if timeout.is_zero() && empty() {
            return 0;
        }
        let Some(_g) = self.serving.try_lock() else {
            // Another thread serves them: wait as asked instead of spinning.
            if !timeout.is_zero() {
                std::thread::sleep(timeout);
            }
            return 0;
        };
        let before = SERVED.get();
        // One rdkafka poll serves one event (a batch of reports); take in every event that is
        // there (bounded, so one call cannot run forever under a flood of reports).
        serve_batch(|| self.producer.poll(timeout));
        for _ in 0..MAX_EVENTS_PER_POLL {
            if self.queue.is_none() || empty() {
                break;
            }
            serve_batch(|| self.producer.poll(Duration::ZERO));
        }
        SERVED.get().wrapping_sub(before)
    }

    /// Makes the report threads serve now (see [`ReportDuty::want`]).
    pub(crate) fn want(&self) -> WantReports {
        self.duty.want()
    }

    /// Stops and joins the report thread (not from the report thread itself).
    pub(crate) fn stop(&mut self) {
        let Some(t) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        let id = t.thread().id();
        t.thread().unpark();
        let _ = t.join();
        self.duty.threads.lock().retain(|t| t.id() != id);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

fn report_thread(
    producer: &BaseProducer<Reports>,
    serving: &Mutex<()>,
    stop: &AtomicBool,
    duty: &ReportDuty,
) {
    let mut seen = duty.polls.load(Ordering::Relaxed);
    while !stop.load(Ordering::Acquire) {
        let polls = duty.polls.load(Ordering::Relaxed);
        if polls != seen && duty.wanted.load(Ordering::Acquire) == 0 {
            // The application polled since the last look: it serves the reports.
            seen = polls;
            std::thread::park_timeout(GRACE);
            continue;
        }
        seen = polls;
        let _g = serving.lock();
        serve_batch(|| producer.poll(GRACE));
    }
}
