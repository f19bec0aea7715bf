//! OpenTelemetry traces and audit log records (issue 17).
//!
//! Owns: which exporters `spec.tracing` and the `OTEL_EXPORTER_OTLP_*` variables ask for ([`TracingSettings`]);
//! the tracer, its parent-based sampler and the OTLP / stdout exporters ([`Tracing`]); the span helpers the request
//! paths call; the audit events mirrored as OTLP log records when `spec.ward.audit.otlp` is set. Does not: decide
//! anything, or put a token, a secret or a body into a span (attributes are verbs, paths without their query, status
//! codes, component and topic names, app ids).
//!
//! How a trace flows: an entry point (the public HTTP / gRPC API, the internal port, a pub/sub delivery) starts a
//! span whose parent is the trace context the request carries ([`propagation`]), and runs the rest of the request
//! inside an `opentelemetry::Context` holding that span and the tracer. Every inner step (the invocation client
//! span, the app channel, state and secret operations, a publish) opens a child with [`child`], which reads that
//! context: with tracing off no context is ever attached, so the whole cost is one empty lookup and a branch.
//! Outgoing requests carry the child's `traceparent` (replacing whatever the caller sent).

pub(crate) mod export;
pub(crate) mod propagation;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use ward_config::{Configuration, OtlpProtocol};

/// Dapr's sampling rate when `samplingRate` is absent (`pkg/diagnostics/utils` `defaultSamplingRate`).
pub const DEFAULT_SAMPLING_RATE: f64 = 0.0001;

/// Where spans go. `Debug` leaves header values out (they may be credentials).
#[derive(Clone, PartialEq, Eq)]
pub enum Exporter {
    /// OTLP to `endpoint` (a URL with scheme; for HTTP the base, `/v1/traces` and `/v1/logs` are appended).
    Otlp { endpoint: String, protocol: OtlpProtocol, headers: Vec<(String, String)>, timeout: Option<Duration> },
    /// `spec.tracing.stdout`: one JSON line per span on standard output.
    Stdout,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exporter::Stdout => f.write_str("Stdout"),
            Exporter::Otlp { endpoint, protocol, headers, timeout } => f
                .debug_struct("Otlp")
                .field("endpoint", endpoint)
                .field("protocol", protocol)
                .field("headers", &headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
                .field("timeout", timeout)
                .finish(),
        }
    }
}

/// What `spec.tracing`, `spec.ward.audit.otlp` and the environment ask for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// For new traces; an incoming sampled flag decides for continued ones.
    pub sampling_rate: f64,
    pub exporters: Vec<Exporter>,
    /// `spec.ward.audit.otlp`: audit events also go to the OTLP exporter as log records.
    pub audit_otlp: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("{variable}: {value:?} is not one of grpc, http/protobuf")]
    EnvProtocol { variable: &'static str, value: String },
    #[error("{field}: {endpoint:?}: {why}")]
    Endpoint { field: &'static str, endpoint: String, why: &'static str },
    #[error("building the OTLP exporter for {endpoint:?}: {source}")]
    Build {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("spec.tracing.otel.headers: {0:?} is not a valid header name or value")]
    Header(String),
    #[error(
        "spec.ward.audit.otlp: audit events go to the OTLP endpoint of spec.tracing.otel (or \
         OTEL_EXPORTER_OTLP_ENDPOINT), and none is configured"
    )]
    AuditWithoutEndpoint,
}

const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const ENV_INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";
const ENV_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";

impl TracingSettings {
    /// Resolves the configuration and the environment (`env` looks a variable up). `Ok(None)`: tracing is off (no
    /// exporter, or `samplingRate: "0"`, which Dapr reads as "tracing disabled"), and no request pays for it.
    /// `spec.tracing.otel` wins over the environment, as in Dapr.
    pub fn resolve(
        configuration: Option<&Configuration>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<TracingSettings>, TracingError> {
        let spec = configuration.and_then(|c| c.tracing.as_ref());
        let audit_otlp = configuration.is_some_and(|c| c.ward.audit_otlp);
        let sampling_rate = spec.and_then(|s| s.sampling_rate).unwrap_or(DEFAULT_SAMPLING_RATE);
        let mut exporters = Vec::new();
        if spec.is_some_and(|s| s.stdout) {
            exporters.push(Exporter::Stdout);
        }
        let otlp = match spec.and_then(|s| s.otel.as_ref()) {
            Some(otel) => Some(Exporter::Otlp {
                endpoint: endpoint_url(&otel.endpoint_address, otel.is_secure, "spec.tracing.otel.endpointAddress")?,
                protocol: otel.protocol,
                headers: otel.headers.clone(),
                timeout: otel.timeout,
            }),
            None => match env(ENV_ENDPOINT).filter(|e| !e.trim().is_empty()) {
                None => None,
                Some(endpoint) => {
                    let protocol = match env(ENV_PROTOCOL).as_deref().map(str::trim) {
                        None | Some("") | Some("http/protobuf") | Some("http") => OtlpProtocol::Http,
                        Some("grpc") => OtlpProtocol::Grpc,
                        Some(other) => {
                            return Err(TracingError::EnvProtocol { variable: ENV_PROTOCOL, value: other.to_owned() });
                        }
                    };
                    let insecure = env(ENV_INSECURE).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
                    Some(Exporter::Otlp {
                        endpoint: endpoint_url(endpoint.trim(), !insecure, ENV_ENDPOINT)?,
                        protocol,
                        headers: Vec::new(),
                        timeout: None,
                    })
                }
            },
        };
        let has_otlp = otlp.is_some();
        exporters.extend(otlp);
        if audit_otlp && !has_otlp {
            return Err(TracingError::AuditWithoutEndpoint);
        }
        if sampling_rate == 0.0 && !audit_otlp {
            return Ok(None);
        }
        if exporters.is_empty() {
            return Ok(None);
        }
        Ok(Some(TracingSettings { sampling_rate, exporters, audit_otlp }))
    }
}

/// `host:port` (Dapr's form; the scheme follows `secure`) or a URL (its scheme wins) → a URL without a trailing
/// `/`.
fn endpoint_url(address: &str, secure: bool, field: &'static str) -> Result<String, TracingError> {
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("{}://{address}", if secure { "https" } else { "http" })
    };
    let uri: http::Uri = url.parse().map_err(|_| TracingError::Endpoint {
        field,
        endpoint: address.to_owned(),
        why: "not host:port or a URL",
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(TracingError::Endpoint { field, endpoint: address.to_owned(), why: "needs http:// or https://" });
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The running tracer (and audit logger) of one sidecar. Shut down with [`Tracing::shutdown`] to flush.
pub struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    /// `samplingRate` above 0: spans are made. Off when only audit logs are exported.
    spans: bool,
    logs: Option<(opentelemetry_sdk::logs::SdkLoggerProvider, opentelemetry_sdk::logs::SdkLogger)>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").field("audit_logs", &self.logs.is_some()).finish_non_exhaustive()
    }
}

/// Marks a context as "tracing on" and hands children the tracer.
#[derive(Clone)]
struct Active(Arc<Tracing>);

impl Tracing {
    /// Builds the exporters (inside the tokio runtime: the OTLP clients spawn their connection tasks on it).
    /// `service_name`: the app id.
    pub fn start(
        settings: &TracingSettings,
        service_name: &str,
        namespace: &str,
    ) -> Result<Arc<Tracing>, TracingError> {
        let resource = Resource::builder_empty()
            .with_service_name(service_name.to_owned())
            .with_attribute(KeyValue::new("service.namespace", namespace.to_owned()))
            .build();
        let mut provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sampling_rate))));
        let mut logs = None;
        for exporter in &settings.exporters {
            match exporter {
                Exporter::Stdout => provider = provider.with_batch_exporter(export::StdoutSpans),
                Exporter::Otlp { endpoint, protocol, headers, timeout } => {
                    let timeout = timeout.unwrap_or(Duration::from_secs(10));
                    let header_map = header_map(headers)?;
                    match protocol {
                        OtlpProtocol::Http => {
                            let http = export::OtlpHttp::new(endpoint, header_map, timeout).map_err(|why| {
                                TracingError::Endpoint { field: "spec.tracing.otel", endpoint: endpoint.clone(), why }
                            })?;
                            provider = provider.with_batch_exporter(http.clone());
                            if settings.audit_otlp {
                                logs = Some(
                                    opentelemetry_sdk::logs::SdkLoggerProvider::builder()
                                        .with_resource(resource.clone())
                                        .with_batch_exporter(http)
                                        .build(),
                                );
                            }
                        }
                        OtlpProtocol::Grpc => {
                            let build = |source| TracingError::Build { endpoint: endpoint.clone(), source };
                            let spans = opentelemetry_otlp::SpanExporter::builder()
                                .with_tonic()
                                .with_endpoint(endpoint.clone())
                                .with_timeout(timeout)
                                .with_metadata(metadata(&header_map))
                                .with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                                .build()
                                .map_err(build)?;
                            provider = provider.with_batch_exporter(spans);
                            if settings.audit_otlp {
                                let exporter = opentelemetry_otlp::LogExporter::builder()
                                    .with_tonic()
                                    .with_endpoint(endpoint.clone())
                                    .with_timeout(timeout)
                                    .with_metadata(metadata(&header_map))
                                    .with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                                    .build()
                                    .map_err(build)?;
                                logs = Some(
                                    opentelemetry_sdk::logs::SdkLoggerProvider::builder()
                                        .with_resource(resource.clone())
                                        .with_batch_exporter(exporter)
                                        .build(),
                                );
                            }
                        }
                    }
                }
            }
        }
        let provider = provider.build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "ward");
        let logs = logs.map(|provider| {
            let logger = opentelemetry::logs::LoggerProvider::logger(&provider, "ward.audit");
            (provider, logger)
        });
        Ok(Arc::new(Tracing { tracer, provider, spans: settings.sampling_rate > 0.0, logs }))
    }

    /// Whether spans are made at all (`samplingRate` above 0); with only audit logs exported they are not, and the
    /// request paths get no handle.
    pub fn spans(&self) -> bool {
        self.spans
    }

    /// Starts a span whose parent is `parent` (a remote context from the wire; `None` starts a trace) and returns
    /// the context to run the request in.
    pub(crate) fn start_remote(
        self: &Arc<Self>,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: Option<SpanContext>,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let base = match parent {
            Some(remote) => Context::new().with_remote_span_context(remote),
            None => Context::new(),
        };
        let span = self
            .tracer
            .build_with_context(SpanBuilder::from_name(name).with_kind(kind).with_attributes(attributes), &base);
        base.with_span(span).with_value(Active(self.clone()))
    }

    /// Whether audit events are exported as log records.
    pub(crate) fn exports_audit(&self) -> bool {
        self.logs.is_some()
    }

    /// One audit event as an OTLP log record (body `audit`, the event's fields as attributes). The audit event
    /// carries no secret by construction (invariant 5), so its fields are safe here.
    pub(crate) fn emit_audit(&self, event: &ward_policy::AuditEvent) {
        use opentelemetry::logs::{LogRecord as _, Logger as _, Severity};
        let Some((_, logger)) = &self.logs else { return };
        let mut record = logger.create_log_record();
        record.set_timestamp(std::time::SystemTime::now());
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        record.set_event_name("audit");
        record.set_body("audit".into());
        let mut attributes: Vec<(&'static str, opentelemetry::logs::AnyValue)> = vec![
            ("time", event.time.clone().into()),
            ("event", event.event.clone().into()),
            ("callee", event.callee.clone().into()),
            ("operation", event.operation.clone().into()),
            ("decision", format!("{:?}", event.decision).to_ascii_lowercase().into()),
            ("rule", event.rule.clone().into()),
            ("reason", event.reason.clone().into()),
        ];
        if let Some(caller) = &event.caller {
            attributes.push(("caller", caller.clone().into()));
        }
        if let Some(verb) = &event.verb {
            attributes.push(("verb", verb.clone().into()));
        }
        if let Some(tool) = &event.tool {
            attributes.push(("tool", tool.clone().into()));
        }
        record.add_attributes(attributes);
        logger.emit(record);
    }

    /// Flushes and stops the exporters (bounded by the SDK's own timeouts). Blocking: call from a blocking thread.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
        if let Some((provider, _)) = &self.logs {
            let _ = provider.shutdown();
        }
    }
}

fn header_map(headers: &[(String, String)]) -> Result<http::HeaderMap, TracingError> {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| TracingError::Header(name.clone()))?;
        // The value may be a credential: the error names the header only.
        let value = http::HeaderValue::from_str(value).map_err(|_| TracingError::Header(name.to_string()))?;
        map.append(name, value);
    }
    Ok(map)
}

fn metadata(headers: &http::HeaderMap) -> tonic::metadata::MetadataMap {
    tonic::metadata::MetadataMap::from_headers(headers.clone())
}

/// A child of the current context's span, when tracing is on; `None` otherwise (the only cost then is this lookup).
/// `name` and `attributes` are evaluated only when a span is made.
pub(crate) fn child(
    name: impl FnOnce() -> Cow<'static, str>,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Option<Context> {
    Context::map_current(|cx| {
        let active = cx.get::<Active>()?;
        let span = active
            .0
            .tracer
            .build_with_context(SpanBuilder::from_name(name()).with_kind(kind).with_attributes(attributes()), cx);
        Some(cx.with_span(span))
    })
}

/// Runs `future` in a child span (see [`child`]) that ends when it does; an `Err` marks the span failed.
pub(crate) async fn in_child<T, E>(
    name: impl FnOnce() -> Cow<'static, str>,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match child(name, kind, attributes) {
        None => future.await,
        Some(cx) => {
            let result = future.with_context(cx.clone()).await;
            if result.is_err() {
                cx.span().set_status(Status::error("failed"));
            }
            cx.span().end();
            result
        }
    }
}

/// Ends the span of `cx` with an HTTP status. A 5xx marks it failed; a 4xx does not (OTel's server convention: a
/// refusal the sidecar made on purpose is not a fault of the span).
pub(crate) fn end_with_status(cx: &Context, status: u16) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    span.end();
}

/// Ends the span of `cx` as failed with a short, fixed reason (never a body or an error text from a peer).
pub(crate) fn end_failed(cx: &Context, reason: &'static str) {
    cx.span().set_status(Status::error(reason));
    cx.span().end();
}

/// Writes the trace context of `cx`'s span into `headers` (`traceparent`, `tracestate`; `grpc-trace-bin` too when
/// `grpc`), replacing the caller's.
pub(crate) fn inject(cx: &Context, headers: &mut http::HeaderMap, grpc: bool) {
    propagation::inject(cx.span().span_context(), headers, grpc);
}

/// `traceparent` of `cx`'s span.
pub(crate) fn traceparent(cx: &Context) -> String {
    propagation::format_traceparent(cx.span().span_context())
}

/// The trace and span ids of the current span, for log lines (`--log-as-json`); `None` outside a span.
pub fn current_ids() -> Option<(String, String)> {
    Context::map_current(|cx| {
        cx.get::<Active>()?;
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| (context.trace_id().to_string(), context.span_id().to_string()))
    })
}

/// A path for a span: without its query (which may carry metadata values or tokens), bounded in length.
pub(crate) fn span_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

/// A public API path for a span: [`span_path`], with what follows the store in a state or secrets path (a state key,
/// a secret's name) cut, so neither reaches the collector: `/v1.0/state/orders/k1` → `/v1.0/state/orders`.
pub(crate) fn public_span_path(path: &str) -> String {
    let path = span_path(path);
    for prefix in ["/v1.0/state/", "/v1.0-alpha1/state/", "/v1.0/secrets/", "/v1.0-alpha1/secrets/"] {
        if let Some(rest) = path.strip_prefix(prefix)
            && let Some((store, _)) = rest.split_once('/')
        {
            return format!("{prefix}{store}");
        }
    }
    path
}

/// The public API's span (HTTP and gRPC): the app's `traceparent` (or `grpc-trace-bin`) continued, a missing one
/// started, a malformed one replaced; the request goes on with this span's context in its headers (so a publish
/// or an invocation continues it) and runs inside it.
pub(crate) async fn public_api(
    axum::extract::State(tracing): axum::extract::State<Arc<Tracing>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = public_span_path(request.uri().path());
    let attributes = vec![
        KeyValue::new("http.request.method", request.method().as_str().to_owned()),
        KeyValue::new("url.path", path.clone()),
        KeyValue::new("rpc.system", if grpc { "grpc" } else { "http" }),
    ];
    let cx = tracing.start_remote(path, SpanKind::Server, propagation::extract(request.headers()), attributes);
    inject(&cx, request.headers_mut(), grpc);
    let response = next.run(request).with_context(cx.clone()).await;
    end_with_status(&cx, response.status().as_u16());
    response
}

#[cfg(test)]
mod tests;

/// Sentry's spans (`ward sentry` with `spec.tracing` in its Configuration): one server span per request,
/// continuing the caller's `traceparent`.
pub struct SentryTracer(pub Arc<Tracing>);

struct SentrySpan(Context);

impl ward_sentry::RequestTracer for SentryTracer {
    fn start(&self, method: &'static str, traceparent: Option<&str>) -> Box<dyn ward_sentry::RequestSpan> {
        let parent = propagation::from_values(traceparent, None);
        let attributes = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", "dapr.proto.sentry.v1.CA"),
            KeyValue::new("rpc.method", method),
        ];
        Box::new(SentrySpan(self.0.start_remote(method, SpanKind::Server, parent, attributes)))
    }
}

impl ward_sentry::RequestSpan for SentrySpan {
    fn finish(self: Box<Self>, failure: Option<&'static str>) {
        match failure {
            Some(reason) => end_failed(&self.0, reason),
            None => self.0.span().end(),
        }
    }
}
