//! A barrier on the decision ring buffer: a caller waits until the event pump has
//! drained and recorded everything the kernel had committed when it asked. The denial
//! report of `leash run` reads a task's refusals after it, instead of guessing from two
//! reads that agree (which a daemon slowed by load can pass with records still queued).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::sync::{Notify, watch};

/// Requests to drain, and how far the pump has drained.
pub struct EventSync {
    /// The number of the newest request.
    requested: AtomicU64,
    /// Wakes the pump (a permit is kept when it is busy).
    wake: Notify,
    /// The newest request whose drain has finished.
    drained: watch::Sender<u64>,
}

impl Default for EventSync {
    fn default() -> Self {
        Self {
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            drained: watch::Sender::new(0),
        }
    }
}

impl EventSync {
    /// Waits until a drain that began after this call has finished; false when none
    /// did within `limit` (the pump has stopped, or is stuck).
    pub async fn wait(&self, limit: Duration) -> bool {
        let mut drained = self.drained.subscribe();
        let want = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_one();
        tokio::time::timeout(limit, drained.wait_for(|&done| done >= want))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Resolves when a request is waiting.
    pub async fn requested(&self) {
        self.wake.notified().await;
    }

    /// Called by the pump before it drains: the requests this drain answers.
    pub fn begin(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }

    /// Called by the pump once the records drained since [`Self::begin`] are recorded.
    pub fn done(&self, upto: u64) {
        self.drained.send_if_modified(|d| {
            let newer = upto > *d;
            if newer {
                *d = upto;
            }
            newer
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_wait_ends_only_after_a_drain_that_began_after_it() {
        let sync = Arc::new(EventSync::default());
        // A drain that began before the request does not answer it.
        let early = sync.begin();
        let waiter = tokio::spawn({
            let sync = Arc::clone(&sync);
            async move { sync.wait(Duration::from_secs(5)).await }
        });
        sync.requested().await;
        sync.done(early);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        let upto = sync.begin();
        sync.done(upto);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn with_no_pump_a_wait_gives_up() {
        let sync = EventSync::default();
        assert!(!sync.wait(Duration::from_millis(50)).await);
    }
}
