//! A gate that counts in-flight operations and can be closed to drain them.
//!
//! `try_enter` is one atomic add on the fast path. `close_and_drain` makes `try_enter` fail
//! and returns when the in-flight count reaches zero; `open` lets entries in again. What the
//! callers do while the gate is closed (the producer queues sends, in order, for the closer to
//! hand to the new target itself) is up to them.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

const CLOSED: u64 = 1 << 63;

/// In-flight counter with a closable entrance.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: AtomicU64,
    zero: Notify,
}

impl Gate {
    /// Counts one operation in flight and returns true, or returns false (counting nothing)
    /// while the gate is closed. Every `true` must be matched by one [`Gate::leave`].
    pub(crate) fn try_enter(&self) -> bool {
        let prev = self.state.fetch_add(1, Ordering::AcqRel);
        if prev & CLOSED == 0 {
            return true;
        }
        self.leave();
        false
    }

    /// Counts one operation in flight even though the gate is closed: for the closer, which
    /// starts held operations itself before it opens. Match with one [`Gate::leave`].
    pub(crate) fn enter_closed(&self) {
        self.state.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends one counted operation.
    pub(crate) fn leave(&self) {
        let prev = self.state.fetch_sub(1, Ordering::AcqRel);
        if prev == CLOSED | 1 {
            self.zero.notify_one();
        }
    }

    /// Whether the entrance is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Closes the entrance and waits until nothing is in flight. One closer at a time.
    pub(crate) async fn close_and_drain(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
        loop {
            let zero = self.zero.notified();
            tokio::pin!(zero);
            zero.as_mut().enable();
            if self.state.load(Ordering::Acquire) == CLOSED {
                return;
            }
            zero.await;
        }
    }

    /// Closes the entrance of a gate nothing has entered yet (a new lane that starts held).
    pub(crate) fn close_unused(&self) {
        debug_assert_eq!(self.state.load(Ordering::Acquire) & !CLOSED, 0);
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Reopens the entrance.
    pub(crate) fn open(&self) {
        self.state.fetch_and(!CLOSED, Ordering::AcqRel);
    }

    /// Operations in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !CLOSED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_waits_for_in_flight_and_refuses_new_entries() {
        let g = Arc::new(Gate::default());
        assert!(g.try_enter());
        assert_eq!(g.in_flight(), 1);
        let g2 = g.clone();
        let closer = tokio::spawn(async move {
            g2.close_and_drain().await;
            g2
        });
        // The closer cannot finish while one operation is in flight.
        tokio::time::timeout(Duration::from_secs(5), async {
            while !g.is_closed() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert!(!closer.is_finished());
        // New entries are refused while closed and count nothing.
        assert!(!g.try_enter());
        assert_eq!(g.in_flight(), 1);
        g.leave();
        let g = tokio::time::timeout(Duration::from_secs(5), closer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.in_flight(), 0);
        // The closer may start operations itself before opening.
        g.enter_closed();
        assert_eq!(g.in_flight(), 1);
        g.open();
        assert!(!g.is_closed());
        assert!(g.try_enter());
        g.leave();
        g.leave();
        assert_eq!(g.in_flight(), 0);
    }
}
