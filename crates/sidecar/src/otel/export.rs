//! Exporters ward writes itself: OTLP over HTTP (protobuf; `spec.tracing.otel.protocol: http`) on the hyper client
//! the sidecar already has, for spans and audit log records (over TLS with the system's roots, `SSL_CERT_FILE`
//! honoured, when the endpoint is `https://`), and `spec.tracing.stdout`. OTLP over gRPC is the
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
    /// `https://` endpoints: one TLS connection per export (a batch every few seconds), checked against the
    /// system's roots. `None`: plaintext through the pooled client.
    tls: Option<Tls>,
    traces: http::Uri,
    logs: http::Uri,
    headers: http::HeaderMap,
    timeout: Duration,
    /// The SDK exports from its own thread, outside the runtime: requests are spawned on this one.
    runtime: tokio::runtime::Handle,
    resource: std::sync::Arc<ResourceAttributesWithSchema>,
}

#[derive(Clone)]
struct Tls {
    config: std::sync::Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
    /// `host:port` to connect to.
    address: String,
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
        let traces: http::Uri = format!("{endpoint}/v1/traces").parse().map_err(|_| "not a URL")?;
        let logs = format!("{endpoint}/v1/logs").parse().map_err(|_| "not a URL")?;
        let tls = match traces.scheme_str() {
            Some("https") => Some(tls(&traces)?),
            _ => None,
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| "no tokio runtime")?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        Ok(OtlpHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
            tls,
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
        let tls = self.tls.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let sent = async move {
                match tls {
                    None => client.request(request).await.map_err(|err| err.to_string()),
                    Some(tls) => send_tls(&tls, request).await,
                }
            };
            match tokio::time::timeout(timeout, sent).await {
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

/// The TLS client for an `https://` endpoint: the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured), the
/// endpoint's host as the name to verify.
fn tls(uri: &http::Uri) -> Result<Tls, &'static str> {
    let host = uri.host().ok_or("no host")?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no trusted root certificates found for the https:// endpoint");
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|_| "TLS configuration")?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|_| "not a valid TLS server name")?;
    Ok(Tls { config: std::sync::Arc::new(config), name, address: format!("{host}:{port}") })
}

/// One request over a new TLS connection.
async fn send_tls(
    tls: &Tls,
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let tcp = tokio::net::TcpStream::connect(&tls.address).await.map_err(|err| err.to_string())?;
    tcp.set_nodelay(true).map_err(|err| err.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(tls.name.clone(), tcp)
        .await
        .map_err(|err| err.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    // http1 over a raw connection: the request target is the path, the authority goes in `host`.
    let (mut parts, body) = request.into_parts();
    if let Some(authority) = parts.uri.authority().cloned()
        && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(http::header::HOST, host);
    }
    parts.uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").parse().map_err(|_| "path".to_owned())?;
    sender.send_request(http::Request::from_parts(parts, body)).await.map_err(|err| err.to_string())
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
