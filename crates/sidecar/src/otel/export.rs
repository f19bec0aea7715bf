//! Exporters ward writes itself: OTLP over HTTP (protobuf; `spec.tracing.otel.protocol: http`) on the hyper client
//! the sidecar already has, for spans and audit log records, and `spec.tracing.stdout`. OTLP over gRPC is the
//! `opentelemetry-otlp` crate's. Does not retry: a failed batch is reported to the SDK and dropped (tracing must
//! never hold requests back).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::LogBatch;
use opentelemetry_sdk::trace::SpanData;
use prost::Message as _;

/// OTLP/HTTP with protobuf bodies to `<endpoint>/v1/traces` and `<endpoint>/v1/logs`.
#[derive(Clone)]
pub(crate) struct OtlpHttp {
    client: Client<HttpConnector, Full<Bytes>>,
    traces: http::Uri,
    logs: http::Uri,
    headers: http::HeaderMap,
    timeout: Duration,
    /// The SDK exports from its own thread, outside the runtime: requests are spawned on this one.
    runtime: tokio::runtime::Handle,
    resource: std::sync::Arc<ResourceAttributesWithSchema>,
}

impl std::fmt::Debug for OtlpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers may hold credentials: never printed.
        f.debug_struct("OtlpHttp").field("traces", &self.traces).finish_non_exhaustive()
    }
}

impl OtlpHttp {
    /// Must be called inside the tokio runtime. `Err` names what is wrong with `endpoint`.
    pub(crate) fn new(endpoint: &str, headers: http::HeaderMap, timeout: Duration) -> Result<OtlpHttp, &'static str> {
        if endpoint.starts_with("https://") {
            return Err("OTLP over HTTPS is not implemented: use protocol grpc (TLS) or isSecure: false");
        }
        let traces = format!("{endpoint}/v1/traces").parse().map_err(|_| "not a URL")?;
        let logs = format!("{endpoint}/v1/logs").parse().map_err(|_| "not a URL")?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| "no tokio runtime")?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        Ok(OtlpHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
            traces,
            logs,
            headers,
            timeout,
            runtime,
            resource: Default::default(),
        })
    }

    async fn post(&self, uri: http::Uri, body: Vec<u8>) -> OTelSdkResult {
        let mut request = http::Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = self.headers.clone();
        request
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-protobuf"));
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            match tokio::time::timeout(timeout, client.request(request)).await {
                Err(_) => Err(OTelSdkError::Timeout(timeout)),
                Ok(Err(err)) => Err(OTelSdkError::InternalFailure(format!("OTLP/HTTP export failed: {err}"))),
                Ok(Ok(response)) if !response.status().is_success() => {
                    Err(OTelSdkError::InternalFailure(format!("OTLP/HTTP export answered {}", response.status())))
                }
                Ok(Ok(_)) => Ok(()),
            }
        });
        task.await.map_err(|_| OTelSdkError::InternalFailure("OTLP/HTTP export task failed".to_owned()))?
    }
}

impl opentelemetry_sdk::trace::SpanExporter for OtlpHttp {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        let resource_spans =
            opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope(batch, &self.resource);
        self.post(self.traces.clone(), ExportTraceServiceRequest { resource_spans }.encode_to_vec()).await
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = std::sync::Arc::new(resource.into());
    }
}

impl opentelemetry_sdk::logs::LogExporter for OtlpHttp {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        let resource_logs =
            opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope(&batch, &self.resource);
        self.post(self.logs.clone(), ExportLogsServiceRequest { resource_logs }.encode_to_vec()).await
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = std::sync::Arc::new(resource.into());
    }
}

/// `spec.tracing.stdout`: one JSON object per span on standard output (Dapr writes its spans there too when
/// asked). Names, ids, kind, times, status and attributes; never more than the span holds.
#[derive(Debug)]
pub(crate) struct StdoutSpans;

impl opentelemetry_sdk::trace::SpanExporter for StdoutSpans {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        use std::io::Write as _;
        let mut out = Vec::new();
        for span in batch {
            let micros = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default()
            };
            let attributes: serde_json::Map<String, serde_json::Value> =
                span.attributes.iter().map(|kv| (kv.key.to_string(), kv.value.to_string().into())).collect();
            let line = serde_json::json!({
                "type": "span",
                "name": span.name,
                "trace_id": span.span_context.trace_id().to_string(),
                "span_id": span.span_context.span_id().to_string(),
                "parent_span_id": span.parent_span_id.to_string(),
                "kind": format!("{:?}", span.span_kind),
                "start_us": micros(span.start_time),
                "end_us": micros(span.end_time),
                "status": format!("{:?}", span.status),
                "attributes": attributes,
            });
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
        std::io::stdout().lock().write_all(&out).map_err(|err| OTelSdkError::InternalFailure(err.to_string()))
    }
}
