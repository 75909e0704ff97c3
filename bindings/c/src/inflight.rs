//! Counts sends started through a producer whose callback has not returned yet, so C threads
//! can wait for "all done" (flush) or for room under the in-flight cap.
//!
//! Completing a send is one atomic decrement; the mutex and condition variable are touched
//! only while some thread waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// In-flight counter with blocking waits.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    waiters: AtomicUsize,
    mu: Mutex<()>,
    cv: Condvar,
}

impl InFlight {
    /// A send started.
    pub(crate) fn start(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// A send's callback returned (or its completion was given up).
    pub(crate) fn finish(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        // SeqCst pairs with `wait_below`: a waiter either sees the new count or is counted
        // here, and then the lock makes sure it is already waiting when notified.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.mu.lock();
            self.cv.notify_all();
        }
    }

    /// Sends in flight now.
    pub(crate) fn current(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until fewer than `limit` sends are in flight, or until `deadline` (`None`: no
    /// limit). True when the count went below `limit`.
    pub(crate) fn wait_below(&self, limit: usize, deadline: Option<Instant>) -> bool {
        if self.current() < limit {
            return true;
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = self.mu.lock();
        let ok = loop {
            if self.current() < limit {
                break true;
            }
            match deadline {
                Some(d) => {
                    if self.cv.wait_until(&mut g, d).timed_out() {
                        break self.current() < limit;
                    }
                }
                None => self.cv.wait(&mut g),
            }
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
    use std::time::Duration;

    #[test]
    fn waiters_wake_when_the_count_drops() {
        let f = Arc::new(InFlight::default());
        for _ in 0..3 {
            f.start();
        }
        assert!(!f.wait_below(1, Some(Instant::now() + Duration::from_millis(20))));
        assert!(f.wait_below(4, None));
        let f2 = f.clone();
        let t = std::thread::spawn(move || f2.wait_below(1, None));
        for _ in 0..3 {
            f.finish();
        }
        assert!(t.join().unwrap());
        assert_eq!(f.current(), 0);
    }
}
