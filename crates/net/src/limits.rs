//! The limits one listener enforces, with ward's defaults and their validation. No I/O here.

use std::time::Duration;

/// Hard limits for one listener. [`Default`] gives ward's defaults (10 s, 10 s, 30 s, 4096, 64 KiB).
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
    /// The largest total size of one request's headers, counted as HTTP/2 counts a header list (RFC 9113
    /// §6.5.2: name + value + 32 per field, the pseudo-headers `:method` and `:path` included) whatever the
    /// protocol. A request over it is answered by the listener's [`crate::HeaderRefusal`] (431) before any service
    /// sees it. See [`ListenerLimits::header_ceiling`] for what the protocol layers themselves accept.
    pub max_header_bytes: usize,
}

impl ListenerLimits {
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// 64 KiB: room for large bearer tokens and cookies, far below what hurts a shared HTTP/2 connection.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
    /// The smallest header limit accepted: below it ordinary requests would be refused.
    pub const MIN_HEADER_BYTES: usize = 4 * 1024;
    /// The largest header limit accepted (its [`ListenerLimits::header_ceiling`] must fit HTTP/2's 32-bit
    /// setting with room to spare).
    pub const MAX_HEADER_BYTES_LIMIT: usize = 16 * 1024 * 1024;
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
        if !(Self::MIN_HEADER_BYTES..=Self::MAX_HEADER_BYTES_LIMIT).contains(&self.max_header_bytes) {
            return Err(LimitsError::MaxHeaderBytes {
                value: self.max_header_bytes,
                min: Self::MIN_HEADER_BYTES,
                max: Self::MAX_HEADER_BYTES_LIMIT,
            });
        }
        Ok(())
    }

    /// What hyper itself accepts before a request reaches ward's exact check: 4 × [`Self::max_header_bytes`], as
    /// HTTP/1.1's read buffer and as HTTP/2's `SETTINGS_MAX_HEADER_LIST_SIZE`.
    ///
    /// Why a margin, and why 4: a request between the limit and the ceiling gets ward's 431 with a body (and on
    /// HTTP/2 only its own stream ends); past the ceiling hyper answers a bare 431, and h2 ends the whole
    /// connection (GOAWAY) once a header block needs more CONTINUATION frames than the ceiling implies. HPACK
    /// always Huffman-codes, which can grow a value to 3.75× its size (bytes 0x80–0xFF), so a client that keeps
    /// its requests within the limit (ward's own sidecars check before sending) never comes near that.
    pub fn header_ceiling(&self) -> usize {
        self.max_header_bytes.saturating_mul(4)
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
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
    #[error("the listener header limit must be between {min} and {max} bytes, got {value}")]
    MaxHeaderBytes { value: usize, min: usize, max: usize },
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
        assert_eq!(limits.max_header_bytes, 64 * 1024);
        assert_eq!(limits.header_ceiling(), 256 * 1024);
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
            Case {
                name: "a header limit too small for ordinary requests",
                limits: ListenerLimits { max_header_bytes: 1024, ..base },
                expected: LimitsError::MaxHeaderBytes { value: 1024, min: 4096, max: 16 * 1024 * 1024 },
            },
            Case {
                name: "a header limit whose ceiling would not fit HTTP/2's setting",
                limits: ListenerLimits { max_header_bytes: usize::MAX, ..base },
                expected: LimitsError::MaxHeaderBytes { value: usize::MAX, min: 4096, max: 16 * 1024 * 1024 },
            },
        ];
        for case in cases {
            assert_eq!(case.limits.validate(), Err(case.expected), "{}", case.name);
        }
    }
}
