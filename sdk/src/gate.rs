//! A gate that counts in-flight operations and can be closed to drain them.
//!
//! `enter` is one atomic add on the fast path. `close_and_drain` makes new entries wait and
//! returns when the in-flight count reaches zero; `open` releases the waiters.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

const CLOSED: u64 = 1 << 63;

/// In-flight counter with a closable entrance.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: AtomicU64,
    zero: Notify,
    opened: Notify,
}

/// Held while an operation is in flight.
#[derive(Debug)]
pub(crate) struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Gate {
    /// Enters, waiting while the gate is closed.
    pub(crate) async fn enter(&self) -> Pass<'_> {
        loop {
            let prev = self.state.fetch_add(1, Ordering::AcqRel);
            if prev & CLOSED == 0 {
                return Pass(self);
            }
            self.leave();
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.state.load(Ordering::Acquire) & CLOSED == 0 {
                continue;
            }
            opened.await;
        }
    }

    fn leave(&self) {
        let prev = self.state.fetch_sub(1, Ordering::AcqRel);
        if prev == CLOSED | 1 {
            self.zero.notify_one();
        }
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

    /// Reopens and releases everything waiting to enter.
    pub(crate) fn open(&self) {
        self.state.fetch_and(!CLOSED, Ordering::AcqRel);
        self.opened.notify_waiters();
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
    async fn close_waits_for_in_flight_and_holds_new_entries() {
        let g = Arc::new(Gate::default());
        let p = g.enter().await;
        assert_eq!(g.in_flight(), 1);
        let g2 = g.clone();
        let closer = tokio::spawn(async move {
            g2.close_and_drain().await;
            g2
        });
        // The closer cannot finish while `p` is held.
        tokio::task::yield_now().await;
        assert!(!closer.is_finished());
        // A new entry is held while closed.
        let g3 = g.clone();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            // Wait until the closer has closed the gate before trying to enter.
            while g3.state.load(Ordering::Acquire) & CLOSED == 0 {
                tokio::task::yield_now().await;
            }
            let _p = g3.enter().await;
            let _ = tx.send(());
        });
        drop(p);
        let g = tokio::time::timeout(Duration::from_secs(5), closer)
            .await
            .unwrap()
            .unwrap();
        assert!(rx.try_recv().is_err(), "entry must wait while closed");
        g.open();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.in_flight(), 0);
    }
}
