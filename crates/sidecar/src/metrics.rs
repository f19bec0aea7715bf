//! The sidecar's Prometheus metrics, served on `--metrics-port` at `/metrics` (loopback by default).
//!
//! Owns: the registry, every metric's name, help and labels — Dapr's names spelled exactly as daprd exports them
//! (`dapr_http_server_request_count`, `dapr_runtime_service_invocation_req_sent_total`, …; dashboards and alerts
//! match on them) for what ward implements, plus ward's own (`ward_authz_decisions_total`,
//! `ward_mcp_tool_decisions_total`, audit, certificate and reload metrics) — and the exposition.
//!
//! Cardinality is bounded by construction: a `path` label is an API family of the public API or `_other`, an
//! `operation` label names the matched rule of the configuration, never a raw path; app ids, tool names and
//! reasons come from the configuration or are verified identities. No token, secret or argument is ever a label.
//!
//! The crate is `prometheus` (tikv), which writes counter names as given; `prometheus-client` would append
//! `_total` to Dapr's `…_count` counters.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::audit::AuditSink;

/// Dapr's latency buckets in milliseconds.
const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0, 80.0, 100.0, 130.0, 160.0,
    200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0, 100000.0,
];

/// Reads at scrape time what other parts keep as plain numbers.
pub(crate) struct Sources {
    pub(crate) audit: AuditSink,
    /// The current workload certificate's `not_after`, when mTLS is on.
    pub(crate) svid_not_after: Option<Box<dyn Fn() -> Option<SystemTime> + Send + Sync>>,
    pub(crate) trust_roots: Option<Box<dyn Fn() -> usize + Send + Sync>>,
    /// Certificate renewals so far (mTLS only).
    pub(crate) renewals: Option<Arc<ward_sentry::client::RenewalCounters>>,
}

pub(crate) struct Metrics {
    /// False with `--enable-metrics=false`: nothing is recorded (one branch per call site), nothing is served.
    recording: bool,
    registry: Registry,
    app_id: String,
    http_server_request_count: IntCounterVec,
    http_server_latency: HistogramVec,
    invocation_req_sent: IntCounterVec,
    invocation_res_recv: IntCounterVec,
    invocation_res_recv_latency: HistogramVec,
    invocation_req_recv: IntCounterVec,
    invocation_res_sent: IntCounterVec,
    acl_app_allowed: IntCounterVec,
    acl_app_blocked: IntCounterVec,
    acl_global_allowed: IntCounterVec,
    acl_global_blocked: IntCounterVec,
    authz: IntCounterVec,
    mcp_tools: IntCounterVec,
    http_server_request_bytes: HistogramVec,
    http_server_response_bytes: HistogramVec,
    http_client_completed: IntCounterVec,
    http_client_latency: HistogramVec,
    http_client_sent_bytes: HistogramVec,
    http_client_received_bytes: HistogramVec,
    grpc_server_completed: IntCounterVec,
    grpc_server_latency: HistogramVec,
    mtls_init: IntCounterVec,
    mtls_rotated: IntCounterVec,
    mtls_rotate_failed: IntCounterVec,
    pubsub_egress: IntCounterVec,
    pubsub_ingress: IntCounterVec,
    pubsub_ingress_latency: HistogramVec,
    config_reload: IntCounterVec,
    audit_events: IntCounter,
    audit_dropped: IntCounter,
    svid_expiry: Gauge,
    trust_roots: IntGauge,
    sources: std::sync::Mutex<Option<Sources>>,
}

/// Which policy of `accessControl` decided (Dapr splits its ACL counters this way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AclScope {
    /// An app policy (`policies[i]`) decided.
    App,
    /// The global `defaultAction` (or no access control) decided.
    Global,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry.register(Box::new(metric.clone())).expect("each metric is registered once");
    metric
}

/// Dapr's size buckets in bytes.
const SIZE_BUCKETS: &[f64] = &[
    1024.0,
    2048.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

fn size_histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(SIZE_BUCKETS.to_vec());
    let metric = HistogramVec::new(opts, labels).expect("valid metric definition");
    registry.register(Box::new(metric.clone())).expect("each metric is registered once");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_MS.to_vec());
    let metric = HistogramVec::new(opts, labels).expect("valid metric definition");
    registry.register(Box::new(metric.clone())).expect("each metric is registered once");
    metric
}

impl Metrics {
    #[cfg(test)]
    pub(crate) fn new(app_id: &str) -> Arc<Metrics> {
        Self::with_recording(app_id, true)
    }

    /// `recording: false` for `--enable-metrics=false`: the registry exists (so every caller keeps one handle)
    /// but no call records anything.
    pub(crate) fn with_recording(app_id: &str, recording: bool) -> Arc<Metrics> {
        let registry = Registry::new();
        let r = &registry;
        let audit_events = IntCounter::new("ward_audit_events_total", "Audit events accepted for the log.")
            .expect("valid metric definition");
        let audit_dropped = IntCounter::new(
            "ward_audit_dropped_total",
            "Audit events that could not be recorded (the decision they record was refused).",
        )
        .expect("valid metric definition");
        let svid_expiry = Gauge::new(
            "ward_svid_expiry_timestamp_seconds",
            "When the sidecar's workload certificate expires (Unix seconds; 0 without mTLS).",
        )
        .expect("valid metric definition");
        let trust_roots =
            IntGauge::new("ward_trust_bundle_roots", "Roots in the trust bundle.").expect("valid metric definition");
        let build_info = IntGaugeVec::new(Opts::new("ward_build_info", "ward's version (always 1)."), &["version"])
            .expect("valid metric definition");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for metric in [&audit_events, &audit_dropped] {
            r.register(Box::new(metric.clone())).expect("each metric is registered once");
        }
        r.register(Box::new(svid_expiry.clone())).expect("each metric is registered once");
        r.register(Box::new(trust_roots.clone())).expect("each metric is registered once");
        r.register(Box::new(build_info)).expect("each metric is registered once");
        let acl_labels = ["app_id", "trust_domain", "namespace", "operation", "httpverb", "policy_action"];
        Arc::new(Metrics {
            recording,
            app_id: app_id.to_owned(),
            http_server_request_count: counter(
                r,
                "dapr_http_server_request_count",
                "Number of HTTP requests started in server.",
                &["app_id", "method", "path", "status"],
            ),
            http_server_latency: histogram(
                r,
                "dapr_http_server_latency",
                "HTTP request end-to-end latency in server (ms).",
                &["app_id", "method", "path", "status"],
            ),
            invocation_req_sent: counter(
                r,
                "dapr_runtime_service_invocation_req_sent_total",
                "Number of requests sent to a remote app.",
                &["app_id", "dst_app_id", "type"],
            ),
            invocation_res_recv: counter(
                r,
                "dapr_runtime_service_invocation_res_recv_total",
                "Number of responses received from a remote app.",
                &["app_id", "dst_app_id", "status", "type"],
            ),
            invocation_res_recv_latency: histogram(
                r,
                "dapr_runtime_service_invocation_res_recv_latency_ms",
                "Duration from sending a request to receiving the response (ms).",
                &["app_id", "dst_app_id", "status"],
            ),
            invocation_req_recv: counter(
                r,
                "dapr_runtime_service_invocation_req_recv_total",
                "Number of requests received from a remote app.",
                &["app_id", "src_app_id"],
            ),
            invocation_res_sent: counter(
                r,
                "dapr_runtime_service_invocation_res_sent_total",
                "Number of responses sent to a remote app.",
                &["app_id", "src_app_id", "status"],
            ),
            acl_app_allowed: counter(
                r,
                "dapr_runtime_acl_app_policy_action_allowed_total",
                "Requests allowed by an app policy.",
                &acl_labels,
            ),
            acl_app_blocked: counter(
                r,
                "dapr_runtime_acl_app_policy_action_blocked_total",
                "Requests blocked by an app policy.",
                &acl_labels,
            ),
            acl_global_allowed: counter(
                r,
                "dapr_runtime_acl_global_policy_action_allowed_total",
                "Requests allowed by the global default action.",
                &acl_labels,
            ),
            acl_global_blocked: counter(
                r,
                "dapr_runtime_acl_global_policy_action_blocked_total",
                "Requests blocked by the global default action.",
                &acl_labels,
            ),
            authz: counter(
                r,
                "ward_authz_decisions_total",
                "Authorization decisions by layer (acl, middleware, mcp, ...), decision and reason.",
                &["layer", "decision", "reason"],
            ),
            mcp_tools: counter(
                r,
                "ward_mcp_tool_decisions_total",
                "MCP tools/call decisions by verified caller, tool and decision.",
                &["caller", "tool", "decision"],
            ),
            http_server_request_bytes: size_histogram(
                r,
                "dapr_http_server_request_bytes",
                "HTTP request size (Content-Length) in server.",
                &["app_id", "method", "path"],
            ),
            http_server_response_bytes: size_histogram(
                r,
                "dapr_http_server_response_bytes",
                "HTTP response size (Content-Length) in server.",
                &["app_id", "method", "path", "status"],
            ),
            http_client_completed: counter(
                r,
                "dapr_http_client_completed_count",
                "Count of completed HTTP requests the sidecar sent to its app.",
                &["app_id", "method", "path", "status"],
            ),
            http_client_latency: histogram(
                r,
                "dapr_http_client_roundtrip_latency",
                "Time from sending a request to the app until its response headers arrived (ms).",
                &["app_id", "method", "path", "status"],
            ),
            http_client_sent_bytes: size_histogram(
                r,
                "dapr_http_client_sent_bytes",
                "Request size (Content-Length) the sidecar sent to its app.",
                &["app_id", "method", "path"],
            ),
            http_client_received_bytes: size_histogram(
                r,
                "dapr_http_client_received_bytes",
                "Response size (Content-Length) the sidecar received from its app.",
                &["app_id", "method", "path", "status"],
            ),
            grpc_server_completed: counter(
                r,
                "dapr_grpc_io_server_completed_rpcs",
                "Count of RPCs the gRPC API completed, by method and status.",
                &["app_id", "grpc_server_method", "grpc_server_status"],
            ),
            grpc_server_latency: histogram(
                r,
                "dapr_grpc_io_server_server_latency",
                "Time the gRPC API took until the response headers (ms).",
                &["app_id", "grpc_server_method", "grpc_server_status"],
            ),
            mtls_init: counter(r, "dapr_runtime_mtls_init_total", "Successful mTLS initialisations.", &["app_id"]),
            mtls_rotated: counter(
                r,
                "dapr_runtime_mtls_workload_cert_rotated_total",
                "Workload certificates renewed.",
                &["app_id"],
            ),
            mtls_rotate_failed: counter(
                r,
                "dapr_runtime_mtls_workload_cert_rotated_fail_total",
                "Failed workload certificate renewals.",
                &["app_id"],
            ),
            pubsub_egress: counter(
                r,
                "dapr_component_pubsub_egress_count",
                "Messages published by the app, by component, topic and result.",
                &["app_id", "component", "namespace", "success", "topic"],
            ),
            pubsub_ingress: counter(
                r,
                "dapr_component_pubsub_ingress_count",
                "Messages delivered to the app, by component, topic and outcome (success, retry, drop).",
                &["app_id", "component", "namespace", "process_status", "topic"],
            ),
            pubsub_ingress_latency: histogram(
                r,
                "dapr_component_pubsub_ingress_latencies",
                "Time the app took to process a delivered message (ms).",
                &["app_id", "component", "namespace", "process_status", "topic"],
            ),
            config_reload: counter(
                r,
                "ward_config_reload_total",
                "Configuration and resource reloads by result (applied, refused).",
                &["result"],
            ),
            audit_events,
            audit_dropped,
            svid_expiry,
            trust_roots,
            sources: std::sync::Mutex::new(None),
            registry,
        })
    }

    /// Where the scrape-time numbers come from (set once the parts exist).
    pub(crate) fn recording(&self) -> bool {
        self.recording
    }

    pub(crate) fn set_sources(&self, sources: Sources) {
        if let Ok(mut slot) = self.sources.lock() {
            *slot = Some(sources);
        }
    }

    /// One answer of the public HTTP API.
    pub(crate) fn http_server(&self, method: &str, path: &str, status: u16, millis: f64) {
        if !self.recording {
            return;
        }
        let status = status.to_string();
        let labels = [self.app_id.as_str(), method, path, status.as_str()];
        self.http_server_request_count.with_label_values(&labels).inc();
        self.http_server_latency.with_label_values(&labels).observe(millis);
    }

    /// Request and response sizes of one public HTTP API answer, as declared by `Content-Length` (streamed bodies
    /// without one count as 0).
    pub(crate) fn http_server_sizes(&self, method: &str, path: &str, status: u16, request: u64, response: u64) {
        if !self.recording {
            return;
        }
        let status = status.to_string();
        self.http_server_request_bytes.with_label_values(&[self.app_id.as_str(), method, path]).observe(request as f64);
        self.http_server_response_bytes
            .with_label_values(&[self.app_id.as_str(), method, path, status.as_str()])
            .observe(response as f64);
    }

    /// One HTTP request the sidecar sent to its app (`path` is bounded: `_other`, as the server side without a
    /// matched operation), its status (0: no answer) and sizes.
    pub(crate) fn http_client(&self, method: &str, status: u16, millis: f64, sent: u64, received: u64) {
        if !self.recording {
            return;
        }
        let status = status.to_string();
        let labels = [self.app_id.as_str(), method, "_other", status.as_str()];
        self.http_client_completed.with_label_values(&labels).inc();
        self.http_client_latency.with_label_values(&labels).observe(millis);
        self.http_client_sent_bytes.with_label_values(&[self.app_id.as_str(), method, "_other"]).observe(sent as f64);
        self.http_client_received_bytes.with_label_values(&labels).observe(received as f64);
    }

    /// One RPC of the public gRPC API (`method` is a Dapr API method or `_proxy`).
    pub(crate) fn grpc_server(&self, method: &str, status: &str, millis: f64) {
        if !self.recording {
            return;
        }
        let labels = [self.app_id.as_str(), method, status];
        self.grpc_server_completed.with_label_values(&labels).inc();
        self.grpc_server_latency.with_label_values(&labels).observe(millis);
    }

    /// mTLS is set up (the first certificate arrived).
    pub(crate) fn mtls_initialised(&self) {
        if !self.recording {
            return;
        }
        self.mtls_init.with_label_values(&[self.app_id.as_str()]).inc();
    }

    /// One invocation this sidecar sent to `dst` (caller side), and its answer's status.
    pub(crate) fn invocation_sent(&self, dst: &str, kind: &str, status: &str, millis: f64) {
        if !self.recording {
            return;
        }
        self.invocation_req_sent.with_label_values(&[self.app_id.as_str(), dst, kind]).inc();
        self.invocation_res_recv.with_label_values(&[self.app_id.as_str(), dst, status, kind]).inc();
        self.invocation_res_recv_latency.with_label_values(&[self.app_id.as_str(), dst, status]).observe(millis);
    }

    /// One invocation received from `src` (callee side), answered with `status`.
    pub(crate) fn invocation_received(&self, src: &str, status: u16) {
        if !self.recording {
            return;
        }
        self.invocation_req_recv.with_label_values(&[self.app_id.as_str(), src]).inc();
        // `StatusCode::as_str` for every valid code: no formatting on each call.
        let code = http::StatusCode::from_u16(status).ok();
        let unusual;
        let label = match &code {
            Some(code) => code.as_str(),
            None => {
                unusual = status.to_string();
                &unusual
            }
        };
        self.invocation_res_sent.with_label_values(&[self.app_id.as_str(), src, label]).inc();
    }

    /// One `accessControl` decision: Dapr's counters (labels of the caller) and ward's.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn acl(
        &self,
        scope: AclScope,
        allowed: bool,
        caller: (&str, &str, &str),
        operation: &str,
        verb: &str,
        reason: &str,
    ) {
        if !self.recording {
            return;
        }
        let (app_id, trust_domain, namespace) = caller;
        let action = if allowed { "allow" } else { "deny" };
        let labels = [app_id, trust_domain, namespace, operation, verb, action];
        let family = match (scope, allowed) {
            (AclScope::App, true) => &self.acl_app_allowed,
            (AclScope::App, false) => &self.acl_app_blocked,
            (AclScope::Global, true) => &self.acl_global_allowed,
            (AclScope::Global, false) => &self.acl_global_blocked,
        };
        family.with_label_values(&labels).inc();
        self.authz("acl", allowed, reason);
    }

    /// One decision of any layer (`acl`, `middleware`, `mcp`, …).
    pub(crate) fn authz(&self, layer: &str, allowed: bool, reason: &str) {
        if !self.recording {
            return;
        }
        let decision = if allowed { "allow" } else { "deny" };
        self.authz.with_label_values(&[layer, decision, reason]).inc();
    }

    /// One MCP `tools/call` decision.
    pub(crate) fn mcp_tool(&self, caller: &str, tool: &str, allowed: bool, rule: &str) {
        if !self.recording {
            return;
        }
        let decision = if allowed { "allow" } else { "deny" };
        self.mcp_tools.with_label_values(&[caller, tool, decision]).inc();
        self.authz("mcp", allowed, rule);
    }

    /// One publish to `component`/`topic`.
    pub(crate) fn pubsub_published(&self, component: &str, topic: &str, success: bool) {
        if !self.recording {
            return;
        }
        let success = if success { "true" } else { "false" };
        self.pubsub_egress.with_label_values(&[self.app_id.as_str(), component, "", success, topic]).inc();
    }

    /// One delivery attempt's outcome (`success`, `retry`, `drop`) and how long the app took.
    pub(crate) fn pubsub_delivered(&self, component: &str, topic: &str, status: &str, millis: f64) {
        if !self.recording {
            return;
        }
        let labels = [self.app_id.as_str(), component, "", status, topic];
        self.pubsub_ingress.with_label_values(&labels).inc();
        self.pubsub_ingress_latency.with_label_values(&labels).observe(millis);
    }

    /// One reload attempt.
    pub(crate) fn reload(&self, applied: bool) {
        if !self.recording {
            return;
        }
        self.config_reload.with_label_values(&[if applied { "applied" } else { "refused" }]).inc();
    }

    /// The text exposition (Prometheus text format 0.0.4).
    pub(crate) fn render(&self) -> String {
        if let Ok(slot) = self.sources.lock()
            && let Some(sources) = slot.as_ref()
        {
            let catch_up = |counter: &IntCounter, now: u64| counter.inc_by(now.saturating_sub(counter.get()));
            catch_up(&self.audit_events, sources.audit.accepted_count());
            catch_up(&self.audit_dropped, sources.audit.refused_count());
            if let Some(not_after) = sources.svid_not_after.as_ref().and_then(|f| f()) {
                let secs = not_after.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                self.svid_expiry.set(secs);
            }
            if let Some(roots) = sources.trust_roots.as_ref() {
                self.trust_roots.set(i64::try_from(roots()).unwrap_or(i64::MAX));
            }
            if let Some(renewals) = &sources.renewals {
                use std::sync::atomic::Ordering::Relaxed;
                let app = [self.app_id.as_str()];
                catch_up(&self.mtls_rotated.with_label_values(&app), renewals.rotated.load(Relaxed));
                catch_up(&self.mtls_rotate_failed.with_label_values(&app), renewals.failed.load(Relaxed));
            }
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A message's declared size (`Content-Length`), 0 when it streams without one.
pub(crate) fn content_length(headers: &http::HeaderMap) -> u64 {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The gRPC API's RPCs, counted with Dapr's `dapr_grpc_io_server_*` names: the method label is a Dapr API method or
/// `_proxy` (a proxied call's method is the app's and unbounded), the status the `grpc-status` of a trailers-only
/// answer (errors) or `OK`.
#[derive(Clone)]
pub(crate) struct GrpcServerMetricsLayer(pub(crate) Arc<Metrics>);

impl<S> tower::Layer<S> for GrpcServerMetricsLayer {
    type Service = GrpcServerMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerMetrics { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct GrpcServerMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcServerMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !self.metrics.recording {
            return Box::pin(self.inner.call(request));
        }
        let started = std::time::Instant::now();
        let path = request.uri().path();
        let method: Arc<str> = match path.strip_prefix("/dapr.proto.runtime.v1.Dapr/") {
            Some(name) if !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Arc::from(&path[1..])
            }
            _ => Arc::from("_proxy"),
        };
        let metrics = self.metrics.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            if let Ok(response) = &result {
                let status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", |code| grpc_code_label(tonic::Code::from(code)));
                metrics.grpc_server(&method, status, started.elapsed().as_secs_f64() * 1000.0);
            }
            result
        })
    }
}

/// Dapr's (OpenCensus) status labels.
fn grpc_code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `path` label of a public API request: the API family, never the raw path.
pub(crate) fn public_path_label(path: &str) -> &'static str {
    const FAMILIES: &[&str] = &[
        "/v1.0/healthz/outbound",
        "/v1.0/healthz",
        "/v1.0/invoke",
        "/v1.0/state",
        "/v1.0/secrets",
        "/v1.0/metadata",
        "/v1.0/publish",
        "/v1.0-alpha1/ward",
    ];
    FAMILIES
        .iter()
        .find(|family| path == **family || path.strip_prefix(**family).is_some_and(|rest| rest.starts_with('/')))
        .copied()
        .unwrap_or("_other")
}

/// `spec.metrics` / `--metrics-port` router: `GET /metrics` only.
pub(crate) fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.render(),
                )
            }
        }),
    )
}

/// Records every public API answer: a layer around the whole public router (outermost but for the span). A plain
/// tower service rather than `axum::middleware::from_fn`, which boxes its future and a clone of the inner service on
/// every request.
#[derive(Clone)]
pub(crate) struct RecordPublicLayer(pub(crate) Arc<Metrics>);

impl<S> tower::Layer<S> for RecordPublicLayer {
    type Service = RecordPublic<S>;

    fn layer(&self, inner: S) -> RecordPublic<S> {
        RecordPublic { metrics: self.0.clone(), inner }
    }
}

#[derive(Clone)]
pub(crate) struct RecordPublic<S> {
    metrics: Arc<Metrics>,
    inner: S,
}

/// What a request's answer is recorded with, taken before the request moves on.
struct PublicCall {
    started: std::time::Instant,
    method: http::Method,
    path: &'static str,
    request_bytes: u64,
}

impl<S> tower::Service<axum::extract::Request> for RecordPublic<S>
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response>,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = RecordPublicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        let call = self.metrics.recording.then(|| PublicCall {
            started: std::time::Instant::now(),
            method: request.method().clone(),
            path: public_path_label(request.uri().path()),
            request_bytes: content_length(request.headers()),
        });
        RecordPublicFuture { inner: self.inner.call(request), call, metrics: self.metrics.clone() }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct RecordPublicFuture<F> {
        #[pin]
        inner: F,
        call: Option<PublicCall>,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> std::future::Future for RecordPublicFuture<F>
where
    F: std::future::Future<Output = Result<axum::response::Response, E>>,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(call) = this.call.take() {
            let (metrics, method) = (this.metrics, call.method.as_str());
            let status = response.status().as_u16();
            metrics.http_server(method, call.path, status, call.started.elapsed().as_secs_f64() * 1000.0);
            metrics.http_server_sizes(
                method,
                call.path,
                status,
                call.request_bytes,
                content_length(response.headers()),
            );
            // The API token layer marks its refusals (the reason never includes the token).
            if let Some(rejection) = response.extensions().get::<ward_gate::TokenRejection>() {
                metrics.authz("token", false, rejection.reason());
            } else if response.extensions().get::<crate::api_list::ApiListRefusal>().is_some() {
                metrics.authz("api", false, "spec.api");
            }
        }
        std::task::Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_off_records_nothing() {
        let m = Metrics::with_recording("orders", false);
        m.http_server("GET", "/v1.0/state", 200, 1.5);
        m.invocation_sent("payments", "unary", "200", 2.0);
        m.acl(AclScope::App, false, ("checkout", "public", "default"), "policies[0]", "GET", "x");
        let text = m.render();
        assert!(!text.contains("dapr_http_server_request_count{"), "{text}");
        assert!(!text.contains("dapr_runtime_service_invocation_req_sent_total{"), "{text}");
        assert!(!text.contains("dapr_runtime_acl_app_policy_action_blocked_total{"), "{text}");
    }

    #[test]
    fn names_are_dapr_spelled_and_paths_bounded() {
        let m = Metrics::new("orders");
        m.http_server("GET", public_path_label("/v1.0/state/store/key-with-customer-id-123"), 200, 1.5);
        m.http_server("GET", public_path_label("/anything/else"), 404, 1.0);
        m.invocation_sent("payments", "unary", "200", 2.0);
        m.acl(AclScope::App, false, ("checkout", "public", "default"), "policies[0].operations[1]", "GET", "x");
        m.mcp_tool("spiffe://public/ns/default/agent", "delete_repo", false, "spec.ward.mcp.defaultAction");
        let text = m.render();
        assert!(
            text.contains(
                "dapr_http_server_request_count{app_id=\"orders\",method=\"GET\",path=\"/v1.0/state\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("dapr_http_server_request_count_total"), "no _total appended");
        assert!(text.contains("path=\"_other\""));
        assert!(!text.contains("customer-id"), "raw paths never become labels");
        assert!(text.contains(
            "dapr_runtime_service_invocation_req_sent_total{app_id=\"orders\",dst_app_id=\"payments\",type=\"unary\"} 1"
        ));
        assert!(text.contains("dapr_runtime_acl_app_policy_action_blocked_total{app_id=\"checkout\""));
        assert!(text.contains("ward_mcp_tool_decisions_total{caller=\"spiffe://public/ns/default/agent\",decision=\"deny\",tool=\"delete_repo\"} 1"), "{text}");
        assert!(text.contains("ward_build_info{version="));
    }
}
