//! Which connections a listener takes: at most `max` at once, and at most `per_peer`
//! from one peer (a uid on the API socket, an address on the metrics port), so that
//! one caller holding connections open cannot starve the others. A connection over
//! either limit is closed as soon as it is accepted: its descriptor lives for
//! microseconds.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The limits of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max: u32,
    pub per_peer: u32,
    /// How long a client may take to send a request's headers, and how long an idle
    /// kept-alive connection stays open.
    pub header_timeout: Duration,
    /// How long a request may take, its body included, until its response starts.
    pub request_timeout: Duration,
}

/// What a listener refused, and what it holds: read by the metrics.
#[derive(Debug, Default)]
pub struct Overload {
    pub open: AtomicU64,
    pub refused_max: AtomicU64,
    pub refused_per_peer: AtomicU64,
    pub timed_out: AtomicU64,
    logged: Mutex<Option<Instant>>,
}

/// At most one overload warning per this long, with the counts so far.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Overload {
    /// Open, refused at the maximum, refused per peer, timed out.
    #[must_use]
    pub fn counts(&self) -> [u64; 4] {
        [
            self.open.load(Ordering::Relaxed),
            self.refused_max.load(Ordering::Relaxed),
            self.refused_per_peer.load(Ordering::Relaxed),
            self.timed_out.load(Ordering::Relaxed),
        ]
    }

    /// Logs the refusals, at most once per [`LOG_EVERY`].
    pub(super) fn warn(&self, listener: &str, why: &str) {
        let Ok(mut last) = self.logged.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            listener,
            open = self.open.load(Ordering::Relaxed),
            refused_max = self.refused_max.load(Ordering::Relaxed),
            refused_per_peer = self.refused_per_peer.load(Ordering::Relaxed),
            "connections refused: {why}"
        );
    }
}

/// Counts the open connections, in total and per peer.
pub struct Admission<K> {
    limits: Limits,
    per_peer: Mutex<HashMap<K, u32>>,
    pub overload: Arc<Overload>,
}

/// One admitted connection; dropping it frees its place.
pub struct Permit<K: Eq + std::hash::Hash + Clone> {
    admission: Arc<Admission<K>>,
    key: K,
}

impl<K: Eq + std::hash::Hash + Clone> Admission<K> {
    #[must_use]
    pub fn new(limits: Limits, overload: Arc<Overload>) -> Arc<Self> {
        Arc::new(Self {
            limits,
            per_peer: Mutex::new(HashMap::new()),
            overload,
        })
    }

    #[must_use]
    pub const fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A place for a connection from `key`, or why there is none.
    pub fn admit(self: &Arc<Self>, key: K) -> Result<Permit<K>, &'static str> {
        let mut peers = self
            .per_peer
            .lock()
            .map_err(|_| "the admission lock is poisoned")?;
        let o = &self.overload;
        if o.open.load(Ordering::Relaxed) >= u64::from(self.limits.max) {
            o.refused_max.fetch_add(1, Ordering::Relaxed);
            return Err("the listener holds its maximum of connections");
        }
        let n = peers.entry(key.clone()).or_insert(0);
        if *n >= self.limits.per_peer {
            o.refused_per_peer.fetch_add(1, Ordering::Relaxed);
            return Err("one peer holds its maximum of connections");
        }
        *n += 1;
        o.open.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            admission: Arc::clone(self),
            key,
        })
    }
}

impl<K: Eq + std::hash::Hash + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        let a = &self.admission;
        if let Ok(mut peers) = a.per_peer.lock()
            && let Some(n) = peers.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.key);
            }
        }
        a.overload.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_peer_and_in_total_and_free_on_drop() {
        let limits = Limits {
            max: 3,
            per_peer: 2,
            header_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        let a = Admission::new(limits, Arc::default());
        let p1 = a.admit(1).unwrap();
        let _p2 = a.admit(1).unwrap();
        assert!(a.admit(1).is_err(), "a third from one peer");
        let _p3 = a.admit(2).unwrap();
        assert!(a.admit(3).is_err(), "a fourth in total");
        let o = &a.overload;
        assert_eq!(o.refused_per_peer.load(Ordering::Relaxed), 1);
        assert_eq!(o.refused_max.load(Ordering::Relaxed), 1);
        drop(p1);
        assert_eq!(o.open.load(Ordering::Relaxed), 2);
        let _p4 = a.admit(3).unwrap();
        assert!(a.per_peer.lock().unwrap().len() <= 3);
    }
}
