//! Counts sends started through a producer whose callback has not returned yet, so C threads
//! can wait for "all done" (flush) or for room under the in-flight cap.
//!
//! Completing a send is one atomic decrement. The mutex and condition variable are touched
//! only when some thread waits *and* the count reaches a level a waiter waits for: zero (flush)
//! or the low mark below the cap (room). A sender that found the cap reached waits for the low
//! mark rather than for one free slot, so it is woken once per batch of completions, not once
//! per completion.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// In-flight counter with blocking waits.
#[derive(Debug)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    waiters: AtomicUsize,
    cap: usize,
    low: usize,
    mu: Mutex<()>,
    cv: Condvar,
}

/// Longest single sleep of a waiter: a safety net, the wake-ups above are what end waits.
const MAX_SLEEP: Duration = Duration::from_millis(100);

impl InFlight {
    /// A counter whose senders wait at `cap` until the count is below `cap - cap / 8`.
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            count: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            cap,
            low: (cap - cap / 8).max(1),
            mu: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// A send started.
    pub(crate) fn start(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// A send's callback returned (or its completion was given up).
    pub(crate) fn finish(&self) {
        let now = self.count.fetch_sub(1, Ordering::SeqCst) - 1;
        // SeqCst pairs with `wait_below`: a waiter either sees the new count or is counted
        // here, and then the lock makes sure it is already waiting when notified.
        if (now == 0 || now + 1 == self.low) && self.waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.mu.lock();
            self.cv.notify_all();
        }
    }

    /// Sends in flight now.
    pub(crate) fn current(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// The cap senders wait at.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// True when a new send must wait for room.
    pub(crate) fn full(&self) -> bool {
        self.current() >= self.cap
    }

    /// Waits until nothing is in flight, or until `deadline` (`None`: no limit). True when
    /// nothing is in flight.
    pub(crate) fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        self.wait_below(1, deadline)
    }

    /// Waits until the count is below the low mark, or until `deadline`. True when it is.
    pub(crate) fn wait_room(&self, deadline: Option<Instant>) -> bool {
        self.wait_below(self.low, deadline)
    }

    fn wait_below(&self, limit: usize, deadline: Option<Instant>) -> bool {
        if self.current() < limit {
            return true;
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = self.mu.lock();
        let ok = loop {
            if self.current() < limit {
                break true;
            }
            let now = Instant::now();
            let wake = match deadline {
                Some(d) if d <= now => break false,
                Some(d) => d.min(now + MAX_SLEEP),
                None => now + MAX_SLEEP,
            };
            self.cv.wait_until(&mut g, wake);
        };
        drop(g);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waiters_wake_when_the_count_drops() {
        let f = Arc::new(InFlight::new(8));
        for _ in 0..8 {
            f.start();
        }
        assert!(f.full());
        assert!(!f.wait_idle(Some(Instant::now() + Duration::from_millis(20))));
        let (f2, f3) = (f.clone(), f.clone());
        let idle = std::thread::spawn(move || f2.wait_idle(None));
        let room = std::thread::spawn(move || f3.wait_room(None));
        // The low mark of 8 is 7: room once the count is below 7, two completions.
        f.finish();
        f.finish();
        assert!(room.join().unwrap());
        assert!(!f.full());
        for _ in 0..6 {
            f.finish();
        }
        assert!(idle.join().unwrap());
        assert_eq!(f.current(), 0);
    }
}
