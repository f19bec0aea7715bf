//! `middleware.http.ratelimit`: at most `maxRequestsPerSecond` requests per second through this sidecar's
//! pipeline; beyond that, `429` with the answer Dapr's middleware (tollbooth) gives.
//!
//! A token bucket holding one second's worth of requests, refilled continuously. One bucket per middleware
//! instance (per sidecar), not per client address: behind a sidecar every request comes from loopback or from
//! another sidecar, so Dapr's per-IP keying would count them all as one client anyway.

use std::sync::Mutex;
use std::time::Instant;

use futures_util::future::BoxFuture;
use ward_components::{ComponentError, ComponentMetadata};

use crate::{Middleware, Refusal, Request};

/// Dapr's default `maxRequestsPerSecond`.
const DEFAULT_RATE: u64 = 100;

/// tollbooth's default message.
const LIMIT_MESSAGE: &str = "You have reached maximum request limit.";

pub struct RateLimit {
    rate: f64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimit {
    pub fn new(metadata: &ComponentMetadata) -> Result<RateLimit, ComponentError> {
        let rate = match metadata.get("maxRequestsPerSecond").map(str::trim).filter(|v| !v.is_empty()) {
            None => DEFAULT_RATE as f64,
            Some(raw) => match raw.parse::<f64>() {
                Ok(rate) if rate.is_finite() && rate > 0.0 => rate,
                _ => {
                    return Err(ComponentError::new(
                        "maxRequestsPerSecond",
                        "expected a number of requests greater than 0",
                    ));
                }
            },
        };
        Ok(Self::with_rate(rate))
    }

    fn with_rate(rate: f64) -> RateLimit {
        RateLimit { rate, bucket: Mutex::new(Bucket { tokens: rate.max(1.0), refilled: Instant::now() }) }
    }

    /// Takes one token if there is one.
    fn admit(&self, now: Instant) -> bool {
        // A poisoned lock only means another request panicked mid-update; the numbers are still usable.
        let mut bucket = self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Middleware for RateLimit {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Request, Refusal>> {
        let admitted = self.admit(Instant::now());
        Box::pin(async move {
            if admitted {
                Ok(request)
            } else {
                Err(Refusal::text(http::StatusCode::TOO_MANY_REQUESTS, LIMIT_MESSAGE, "rate limit exceeded"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_second_of_requests_then_refill() {
        let limit = RateLimit::with_rate(5.0);
        let start = Instant::now();
        assert_eq!((0..8).filter(|_| limit.admit(start)).count(), 5);
        assert!(!limit.admit(start + Duration::from_millis(100)));
        assert!(limit.admit(start + Duration::from_millis(450)));
        // Never more than one second's worth saved up.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| limit.admit(later)).count(), 5);
    }

    #[test]
    fn metadata_is_checked() {
        let meta = |v: &str| {
            let mut m = ComponentMetadata::new();
            m.insert("maxRequestsPerSecond", v);
            m
        };
        assert!(RateLimit::new(&meta("10")).is_ok());
        assert!(RateLimit::new(&ComponentMetadata::new()).is_ok());
        for bad in ["0", "-1", "ten", "NaN"] {
            let err = RateLimit::new(&meta(bad)).err().expect(bad);
            assert!(err.to_string().contains("maxRequestsPerSecond"), "{err}");
        }
    }
}
