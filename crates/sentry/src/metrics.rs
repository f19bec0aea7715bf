//! Sentry's Prometheus metrics, with Dapr's names: `dapr_sentry_cert_sign_request_received_total`,
//! `dapr_sentry_cert_sign_success_total`, `dapr_sentry_cert_sign_failure_total{reason}` (the gRPC code, a bounded
//! set) and `dapr_sentry_issuercert_expiry_timestamp` (Unix seconds), served at `/metrics` on `--metrics-port`.

use prometheus::{Encoder, Gauge, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

pub struct SentryMetrics {
    registry: Registry,
    received: IntCounter,
    success: IntCounter,
    failure: IntCounterVec,
    issuer_expiry: Gauge,
}

impl Default for SentryMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let received = IntCounter::new("dapr_sentry_cert_sign_request_received_total", "The number of CSRs received.")
            .expect("valid metric definition");
        let success = IntCounter::new("dapr_sentry_cert_sign_success_total", "The number of certificates issued.")
            .expect("valid metric definition");
        let failure = IntCounterVec::new(
            Opts::new("dapr_sentry_cert_sign_failure_total", "The number of refused or failed CSRs."),
            &["reason"],
        )
        .expect("valid metric definition");
        let issuer_expiry = Gauge::new(
            "dapr_sentry_issuercert_expiry_timestamp",
            "When the issuer certificate expires (Unix seconds).",
        )
        .expect("valid metric definition");
        registry.register(Box::new(received.clone())).expect("registered once");
        registry.register(Box::new(success.clone())).expect("registered once");
        registry.register(Box::new(failure.clone())).expect("registered once");
        registry.register(Box::new(issuer_expiry.clone())).expect("registered once");
        SentryMetrics { registry, received, success, failure, issuer_expiry }
    }
}

impl SentryMetrics {
    /// One signing request and how it ended (`Err` carries the gRPC code).
    pub fn signed(&self, outcome: Result<(), tonic::Code>) {
        self.received.inc();
        match outcome {
            Ok(()) => self.success.inc(),
            Err(code) => self.failure.with_label_values(&[&format!("{code:?}")]).inc(),
        }
    }

    pub fn set_issuer_expiry(&self, not_after: std::time::SystemTime) {
        let secs = not_after.duration_since(std::time::SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.issuer_expiry.set(secs);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
