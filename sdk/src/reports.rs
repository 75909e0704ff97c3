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
//! Either way a client's events are taken one at a time from its main queue
//! ([`MainQueue::serve_one`]); a delivery-report event's reports are served as one batch
//! ([`Reports::serve_batch`]): counted first, once per batch, then completed in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::producer::{BaseProducer, Producer as _};

use crate::enqueue::MainQueue;
use crate::producer::Reports;

/// How often a report thread checks whether the application still polls; also the longest
/// one poll of a report thread blocks. An application that stops polling has its reports
/// served by the report threads within about this long.
pub(crate) const GRACE: Duration = Duration::from_millis(10);

/// Most events (batches of reports) one application poll serves after the first.
const MAX_EVENTS_PER_POLL: usize = 1_000;

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
    /// Its event queue (`None` only if librdkafka could not hand it out: then rdkafka's own
    /// poll serves it).
    queue: Option<Arc<MainQueue>>,
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
        let queue = MainQueue::new(producer.clone()).map(Arc::new);
        let serving = Arc::new(Mutex::new(()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (producer, queue, serving, stop, duty) = (
                producer.clone(),
                queue.clone(),
                serving.clone(),
                stop.clone(),
                duty.clone(),
            );
            std::thread::Builder::new()
                .name(format!("sy-reports-{name}"))
                .spawn(move || report_thread(&producer, queue.as_deref(), &serving, &stop, &duty))?
        };
        duty.threads.lock().push(thread.thread().clone());
        Ok(Self {
            queue,
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
        let Some(queue) = &self.queue else {
            // No queue handle: rdkafka's own poll (one event per call).
            let Some(_g) = self.serving.try_lock() else {
                return 0;
            };
            self.producer.poll(timeout);
            return 0;
        };
        if timeout.is_zero() && queue.is_empty() {
            return 0;
        }
        let Some(_g) = self.serving.try_lock() else {
            // Another thread serves them: wait as asked instead of spinning.
            if !timeout.is_zero() {
                std::thread::sleep(timeout);
            }
            return 0;
        };
        // One event at a time (a batch of reports); take in every event that is there
        // (bounded, so one call cannot run forever under a flood of reports).
        let mut served = serve_one(&self.producer, queue, timeout);
        for _ in 0..MAX_EVENTS_PER_POLL {
            if queue.is_empty() {
                break;
            }
            served += serve_one(&self.producer, queue, Duration::ZERO);
        }
        served
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
    queue: Option<&MainQueue>,
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
        match queue {
            Some(q) => {
                serve_one(producer, q, GRACE);
            }
            None => {
                producer.poll(GRACE);
                purge_after_failure(producer);
            }
        }
    }
}

/// Serves one event of a client's main queue on this thread ([`MainQueue::serve_one`]): a
/// batch of delivery reports goes to [`Reports::serve_batch`]. Returns how many reports.
fn serve_one(producer: &BaseProducer<Reports>, queue: &MainQueue, timeout: Duration) -> usize {
    let ctx = producer.context();
    let n = queue.serve_one(timeout, ctx, |drs| ctx.serve_batch(drs));
    purge_after_failure(producer);
    n
}

/// After a failure to connect that retrying does not fix by itself (see
/// [`crate::producer::ConnectFailure`]): purges the client's queue, so its records fail now,
/// naming the cause, instead of at `message.timeout.ms`.
fn purge_after_failure(producer: &BaseProducer<Reports>) {
    if producer.context().failure.take_purge() {
        producer.purge(rdkafka::producer::PurgeConfig::default().queue());
    }
}
