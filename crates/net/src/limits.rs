//! The limits one listener enforces, with ward's defaults and their validation. No I/O here.

use std::time::Duration;

/// Hard limits for one listener. [`Default`] gives ward's defaults (10 s, 10 s, 30 s, 4096).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// A TLS handshake must complete within this time after accept, else the connection is dropped.
    pub handshake_timeout: Duration,
    /// The first request (HTTP/1.1 headers, or HTTP/2 preface + first HEADERS) must arrive within this time after
    /// accept (plaintext) or after the handshake (TLS); for HTTP/1.1 a later request's headers must complete
    /// within this time of their first byte. Else the connection is dropped.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 gracefully, with GOAWAY).
    pub idle_timeout: Duration,
    /// At most this many connections are open at once; a connection beyond is closed at accept and counted.
    pub max_connections: usize,
}

impl ListenerLimits {
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// The largest connection cap accepted (tokio's semaphore bound).
    pub const MAX_CONNECTIONS_LIMIT: usize = tokio::sync::Semaphore::MAX_PERMITS;

    /// Refuses limits that would switch a protection off: a zero timeout (which would drop every connection, or
    /// be read by someone as "no timeout") and a zero or unrepresentable connection cap.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (limit, value) in [
            ("handshake timeout", self.handshake_timeout),
            ("header read timeout", self.header_read_timeout),
            ("idle timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(LimitsError::ZeroTimeout { limit });
            }
        }
        if self.max_connections == 0 || self.max_connections > Self::MAX_CONNECTIONS_LIMIT {
            return Err(LimitsError::MaxConnections { value: self.max_connections, max: Self::MAX_CONNECTIONS_LIMIT });
        }
        Ok(())
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Why a [`ListenerLimits`] value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("the listener {limit} must be greater than zero")]
    ZeroTimeout { limit: &'static str },
    #[error("the listener connection cap must be between 1 and {max}, got {value}")]
    MaxConnections { value: usize, max: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_wards_and_valid() {
        let limits = ListenerLimits::default();
        assert_eq!(limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_connections, 4096);
        assert_eq!(limits.validate(), Ok(()));
    }

    #[test]
    fn switching_a_protection_off_is_refused() {
        struct Case {
            name: &'static str,
            limits: ListenerLimits,
            expected: LimitsError,
        }
        let base = ListenerLimits::default();
        let max = ListenerLimits::MAX_CONNECTIONS_LIMIT;
        let cases = [
            Case {
                name: "zero handshake timeout",
                limits: ListenerLimits { handshake_timeout: Duration::ZERO, ..base },
                expected: LimitsError::ZeroTimeout { limit: "handshake timeout" },
            },
            Case {
                name: "zero header read timeout",
                limits: ListenerLimits { header_read_timeout: Duration::ZERO, ..base },
                expected: LimitsError::ZeroTimeout { limit: "header read timeout" },
            },
            Case {
                name: "zero idle timeout",
                limits: ListenerLimits { idle_timeout: Duration::ZERO, ..base },
                expected: LimitsError::ZeroTimeout { limit: "idle timeout" },
            },
            Case {
                name: "zero connections",
                limits: ListenerLimits { max_connections: 0, ..base },
                expected: LimitsError::MaxConnections { value: 0, max },
            },
            Case {
                name: "more connections than a semaphore holds",
                limits: ListenerLimits { max_connections: max + 1, ..base },
                expected: LimitsError::MaxConnections { value: max + 1, max },
            },
        ];
        for case in cases {
            assert_eq!(case.limits.validate(), Err(case.expected), "{}", case.name);
        }
    }
}
