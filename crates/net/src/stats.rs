//! Counters one listener keeps for metrics and tests, and the throttle that keeps its warnings to one line per
//! interval however hard a client pushes. No I/O here beyond `tracing`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Live counters of one listener. Cheap to clone (all clones share the counters); read them for metrics.
#[derive(Debug, Clone, Default)]
pub struct ListenerStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused_over_limit: AtomicU64,
    open: AtomicUsize,
    handshake_timeouts: AtomicU64,
    handshake_failures: AtomicU64,
    header_read_timeouts: AtomicU64,
    idle_closes: AtomicU64,
}

impl ListenerStats {
    /// Connections accepted and served (refused ones not included).
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because `max_connections` were already open.
    pub fn refused_over_limit(&self) -> u64 {
        self.inner.refused_over_limit.load(Ordering::Relaxed)
    }

    /// Connections open right now (in the TLS handshake, or serving).
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// TLS handshakes that did not complete within the handshake timeout.
    pub fn handshake_timeouts(&self) -> u64 {
        self.inner.handshake_timeouts.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed (bad or missing client certificate, protocol error, client gone).
    pub fn handshake_failures(&self) -> u64 {
        self.inner.handshake_failures.load(Ordering::Relaxed)
    }

    /// Connections dropped because a request's headers (or the HTTP/2 preface) did not arrive in time.
    pub fn header_read_timeouts(&self) -> u64 {
        self.inner.header_read_timeouts.load(Ordering::Relaxed)
    }

    /// Connections closed because no request was in flight for the idle timeout.
    pub fn idle_closes(&self) -> u64 {
        self.inner.idle_closes.load(Ordering::Relaxed)
    }

    pub(crate) fn count_accepted(&self) {
        self.inner.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refusal and returns the new total.
    pub(crate) fn count_refused(&self) -> u64 {
        self.inner.refused_over_limit.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn count_handshake_timeout(&self) {
        self.inner.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_handshake_failure(&self) -> u64 {
        self.inner.handshake_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn count_header_read_timeout(&self) {
        self.inner.header_read_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_idle_close(&self) {
        self.inner.idle_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks one connection open until the returned guard drops.
    pub(crate) fn open_guard(&self) -> OpenGuard {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        OpenGuard { stats: self.clone() }
    }
}

/// Decrements the open-connection gauge when the connection's task ends, however it ends.
pub(crate) struct OpenGuard {
    stats: ListenerStats,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.stats.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Allows one event per interval: a flood of refused connections must not become a flood of log lines.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Self { every, last: Mutex::new(None) }
    }

    pub(crate) fn allow(&self) -> bool {
        // A poisoned lock only means another thread panicked mid-update of an Instant; the value is still usable.
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_allows_one_event_per_interval() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert!(throttle.allow());
        assert!(!throttle.allow());
        assert!(!throttle.allow());
        let throttle = Throttle::new(Duration::ZERO);
        assert!(throttle.allow());
        assert!(throttle.allow());
    }

    #[test]
    fn open_gauge_follows_guards() {
        let stats = ListenerStats::default();
        let a = stats.open_guard();
        let b = stats.open_guard();
        assert_eq!(stats.open_connections(), 2);
        drop(a);
        assert_eq!(stats.open_connections(), 1);
        drop(b);
        assert_eq!(stats.open_connections(), 0);
    }
}
