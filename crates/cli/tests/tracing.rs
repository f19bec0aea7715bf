//! OpenTelemetry traces end to end with real processes (issue 17): an OTLP collector inside the test (a tonic
//! server with the collector's `TraceService` / `LogsService`, and the OTLP/HTTP paths on a hyper server, all on
//! 127.0.0.1) receives the spans of two mTLS sidecars. Checked: one trace across the hop with the right parent/child
//! links, the caller app's `traceparent` continued (a malformed one replaced), the callee app receiving a
//! `traceparent` that continues the trace, `samplingRate: "0"` sending nothing, a publish → delivery pair sharing the
//! trace, audit events arriving as OTLP log records with `spec.ward.audit.otlp`, `trace_id` on `--log-as-json`
//! lines, the gRPC API continuing `grpc-trace-bin` with state operations as child spans, TLS exports that verify the
//! collector, Zipkin refused in production, and no token or secret in any attribute.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::json;
use support::eventually;
use support::mesh::{Http, Mesh, SidecarSpec, TestApp};
use support::pubsub_app::SubscriberApp;

const API_TOKEN: &str = "caller-api-token-must-not-leak";
const APP_TOKEN: &str = "callee-app-token-must-not-leak";
const QUERY_SECRET: &str = "query-secret-must-not-leak";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_PARENT: &str = "00f067aa0ba902b7";

/// One span as the collector got it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    namespace: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Vec<(String, String)>,
}

/// One log record as the collector got it.
#[derive(Debug, Clone)]
struct Log {
    service: String,
    body: String,
    attributes: Vec<(String, String)>,
}

#[derive(Default, Clone)]
struct Store {
    spans: Arc<Mutex<Vec<Span>>>,
    logs: Arc<Mutex<Vec<Log>>>,
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

fn find(attributes: &[(String, String)], key: &str) -> String {
    attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
}

impl Store {
    fn add_traces(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.resource_spans {
            let resource_attributes = pairs(&resource.resource.map(|r| r.attributes).unwrap_or_default());
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Span {
                        service: find(&resource_attributes, "service.name"),
                        namespace: find(&resource_attributes, "service.namespace"),
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        attributes: pairs(&span.attributes),
                    });
                }
            }
        }
    }

    fn add_logs(&self, request: ExportLogsServiceRequest) {
        let mut logs = self.logs.lock().unwrap();
        for resource in request.resource_logs {
            let resource_attributes = pairs(&resource.resource.map(|r| r.attributes).unwrap_or_default());
            for scope in resource.scope_logs {
                for record in scope.log_records {
                    logs.push(Log {
                        service: find(&resource_attributes, "service.name"),
                        body: text(&record.body),
                        attributes: pairs(&record.attributes),
                    });
                }
            }
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    fn logs(&self) -> Vec<Log> {
        self.logs.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl LogsService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.add_logs(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse { partial_success: None }))
    }
}

/// The collector: OTLP/gRPC on `grpc`, OTLP/HTTP (protobuf) on `http`, and both over TLS on `grpcs` / `https`
/// with a certificate for 127.0.0.1 from the test CA `ca_pem`. Stops with the test (its runtime drops).
struct Collector {
    grpc: SocketAddr,
    http: SocketAddr,
    grpcs: SocketAddr,
    https: SocketAddr,
    ca_pem: String,
    store: Store,
    _runtime: tokio::runtime::Runtime,
}

/// Serves OTLP/HTTP on one connection.
async fn serve_otlp_http<IO>(io: IO, sink: Store)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let sink = sink.clone();
        async move {
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let status = match path.as_str() {
                "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        sink.add_traces(request);
                        200
                    }
                    Err(_) => 400,
                },
                "/v1/logs" => match ExportLogsServiceRequest::decode(body) {
                    Ok(request) => {
                        sink.add_logs(request);
                        200
                    }
                    Err(_) => 400,
                },
                _ => 404,
            };
            Ok::<_, Infallible>(hyper::Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
        }
    });
    let _ =
        hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(io), service).await;
}

impl Collector {
    fn start() -> Collector {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let store = Store::default();
        let bind = || runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();

        // A test CA and a server certificate for 127.0.0.1.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let server_cert = params.signed_by(&server_key, &issuer).unwrap();

        let grpc_listener = bind();
        let grpc = grpc_listener.local_addr().unwrap();
        let service = store.clone();
        runtime.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service.clone()))
                .add_service(LogsServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener))
                .await;
        });
        let grpcs_listener = bind();
        let grpcs = grpcs_listener.local_addr().unwrap();
        let service = store.clone();
        let identity = tonic::transport::Identity::from_pem(server_cert.pem(), server_key.serialize_pem());
        runtime.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .unwrap()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpcs_listener))
                .await;
        });

        let http_listener = bind();
        let http = http_listener.local_addr().unwrap();
        let sink = store.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = http_listener.accept().await else { continue };
                tokio::spawn(serve_otlp_http(tcp, sink.clone()));
            }
        });
        let https_listener = bind();
        let https = https_listener.local_addr().unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let sink = store.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = https_listener.accept().await else { continue };
                let (acceptor, sink) = (acceptor.clone(), sink.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve_otlp_http(tls, sink).await;
                    }
                });
            }
        });
        Collector { grpc, http, grpcs, https, ca_pem, store, _runtime: runtime }
    }
}

/// A Configuration with tracing to `endpoint` over `protocol`, plus `extra` spec lines.
fn config(rate: &str, endpoint: SocketAddr, protocol: &str, extra: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: traced\nspec:\n  tracing:\n    \
         samplingRate: \"{rate}\"\n    otel:\n      endpointAddress: \"{endpoint}\"\n      protocol: {protocol}\n      \
         isSecure: false\n      headers:\n      - \"x-collector-key=collector-secret-must-not-leak\"\n{extra}"
    )
}

/// Spans are exported in batches; a short delay keeps the test quick.
fn traced_env() -> Vec<(String, String)> {
    vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()), ("OTEL_BLRP_SCHEDULE_DELAY".into(), "100".into())]
}

fn assert_no_secret(spans: &[Span], logs: &[Log]) {
    for secret in [API_TOKEN, APP_TOKEN, QUERY_SECRET, "collector-secret-must-not-leak"] {
        for span in spans {
            assert!(!span.name.contains(secret), "{secret} in span name {span:?}");
            for (k, v) in &span.attributes {
                assert!(!k.contains(secret) && !v.contains(secret), "{secret} in a span attribute: {span:?}");
            }
        }
        for log in logs {
            assert!(!log.body.contains(secret), "{secret} in a log body");
            for (k, v) in &log.attributes {
                assert!(!k.contains(secret) && !v.contains(secret), "{secret} in a log attribute: {log:?}");
            }
        }
    }
}

fn one<'a>(spans: &'a [Span], what: &str, pick: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}\nall spans: {spans:#?}");
    found[0]
}

/// Span kinds as OTLP numbers them.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

#[test]
fn one_trace_across_the_mtls_hop_with_audit_logs() {
    let collector = Collector::start();
    let mesh = Mesh::start(&[]);
    let app = TestApp::start();
    let callee_config =
        mesh.write("orders.yaml", &config("1", collector.grpc, "grpc", "  ward:\n    audit:\n      otlp: true\n"));
    let caller_config = mesh.write("checkout.yaml", &config("1", collector.grpc, "grpc", ""));
    let mut spec = SidecarSpec::new("orders", Some(app.addr.port()));
    spec.config = Some(&callee_config);
    spec.env = traced_env();
    spec.env.push(("APP_API_TOKEN".into(), APP_TOKEN.into()));
    let _orders = mesh.sidecar(spec);
    let mut spec = SidecarSpec::new("checkout", None);
    spec.config = Some(&caller_config);
    spec.env = traced_env();
    spec.env.push(("DAPR_API_TOKEN".into(), API_TOKEN.into()));
    spec.extra = vec!["--log-as-json".into(), "--enable-api-logging".into()];
    let checkout = mesh.sidecar(spec);
    let http = Http::new();

    // 1. The caller app's trace is continued on both sidecars and reaches the callee app.
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_PARENT}-01");
    let reply = http.send(
        "GET",
        &checkout.http,
        &format!("/v1.0/invoke/orders/method/orders/1?token={QUERY_SECRET}"),
        &[("dapr-api-token", API_TOKEN), ("traceparent", &traceparent), ("tracestate", "vendor=abc")],
        vec![],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = app.seen();
    let call = seen.iter().find(|s| s.path_and_query.starts_with("/orders/1")).expect("the app was called");
    let received = call.headers["traceparent"].clone();
    let parts: Vec<&str> = received.split('-').collect();
    assert_eq!(parts.len(), 4, "{received}");
    assert_eq!(parts[1], CALLER_TRACE, "the callee app's traceparent continues the caller app's trace");
    assert_eq!(parts[3], "01");
    assert_ne!(parts[2], CALLER_PARENT, "its parent is the app channel's span, not the caller app's");

    let spans = eventually(Duration::from_secs(15), "four spans of the caller's trace", || {
        let spans: Vec<Span> = collector.store.spans().into_iter().filter(|s| s.trace_id == CALLER_TRACE).collect();
        (spans.len() >= 4).then_some(spans)
    });
    let api = one(&spans, "the caller's API span", |s| s.service == "checkout" && s.kind == SERVER);
    assert_eq!(api.parent, CALLER_PARENT, "the caller app's span is the parent");
    assert_eq!(api.namespace, "default");
    assert_eq!(api.name, "/v1.0/invoke/orders/method/orders/1");
    let client = one(&spans, "the invocation client span", |s| s.service == "checkout" && s.kind == CLIENT);
    assert_eq!(client.parent, api.span_id);
    assert_eq!(client.name, "CallRemote/orders");
    let server = one(&spans, "the callee's server span", |s| s.service == "orders" && s.kind == SERVER);
    assert_eq!(server.parent, client.span_id, "linked by traceparent over the mTLS connection");
    assert_eq!(find(&server.attributes, "ward.caller"), "spiffe://public/ns/default/checkout");
    assert_eq!(find(&server.attributes, "http.response.status_code"), "200");
    let channel = one(&spans, "the app channel span", |s| s.service == "orders" && s.kind == CLIENT);
    assert_eq!(channel.parent, server.span_id);
    assert_eq!(parts[2], channel.span_id, "the app got the app channel span's context");

    // 2. A malformed traceparent is replaced by a new trace; the app never sees the malformed value.
    app.clear();
    let reply = http.send(
        "GET",
        &checkout.http,
        "/v1.0/invoke/orders/method/orders/2",
        &[("dapr-api-token", API_TOKEN), ("traceparent", "00-not-a-valid-traceparent-01")],
        vec![],
    );
    assert_eq!(reply.status, 200);
    let received =
        app.seen().iter().find(|s| s.path_and_query == "/orders/2").expect("called").headers["traceparent"].clone();
    let new_trace = received.split('-').nth(1).unwrap_or_default().to_owned();
    assert_eq!(new_trace.len(), 32, "{received}");
    assert_ne!(new_trace, CALLER_TRACE);
    let started = eventually(Duration::from_secs(15), "the new trace's spans", || {
        let spans: Vec<Span> = collector.store.spans().into_iter().filter(|s| s.trace_id == new_trace).collect();
        (spans.len() >= 4).then_some(spans)
    });
    let root = one(&started, "the new trace's root", |s| s.service == "checkout" && s.kind == SERVER);
    assert_eq!(root.parent, "", "a malformed parent is not a parent: the trace starts at the sidecar");

    // 3. Audit events as OTLP log records, from the callee (spec.ward.audit.otlp), and none from the caller.
    let logs = eventually(Duration::from_secs(15), "audit log records", || {
        let logs: Vec<Log> = collector.store.logs().into_iter().filter(|l| l.body == "audit").collect();
        (logs.len() >= 2).then_some(logs)
    });
    assert!(logs.iter().all(|l| l.service == "orders"), "{logs:?}");
    assert!(logs.iter().any(|l| find(&l.attributes, "caller") == "spiffe://public/ns/default/checkout"), "{logs:?}");
    assert!(logs.iter().all(|l| find(&l.attributes, "decision") == "allow"), "{logs:?}");

    // 4. `--log-as-json` lines written inside the request carry its trace and span ids.
    support::eventually(Duration::from_secs(5), "an API log line with trace_id", || {
        checkout
            .process
            .stderr_text()
            .lines()
            .any(|l| l.contains(&format!("\"trace_id\":\"{CALLER_TRACE}\"")))
            .then_some(())
    });

    assert_no_secret(&collector.store.spans(), &collector.store.logs());
}

#[test]
fn sampling_rate_zero_sends_nothing_and_passes_the_context_through() {
    let collector = Collector::start();
    let mesh = Mesh::start(&[]);
    let app = TestApp::start();
    let config = mesh.write("zero.yaml", &config("0", collector.grpc, "grpc", ""));
    let mut spec = SidecarSpec::new("orders", Some(app.addr.port()));
    spec.config = Some(&config);
    spec.env = traced_env();
    let _orders = mesh.sidecar(spec);
    let mut spec = SidecarSpec::new("checkout", None);
    spec.config = Some(&config);
    spec.env = traced_env();
    let checkout = mesh.sidecar(spec);
    let http = Http::new();
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_PARENT}-01");
    for _ in 0..5 {
        let reply =
            http.send("GET", &checkout.http, "/v1.0/invoke/orders/method/x", &[("traceparent", &traceparent)], vec![]);
        assert_eq!(reply.status, 200);
    }
    let calls: Vec<_> = app.seen().into_iter().filter(|s| s.path_and_query == "/x").collect();
    assert_eq!(calls.len(), 5);
    assert!(
        calls.iter().all(|c| c.headers.get("traceparent") == Some(&traceparent)),
        "tracing off: the app's context passes unchanged"
    );
    // Several export periods (100 ms each) pass: nothing may arrive.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(collector.store.spans().is_empty(), "{:?}", collector.store.spans());
    assert!(collector.store.logs().is_empty());
}

#[test]
fn publish_and_delivery_share_the_trace_over_otlp_http() {
    let collector = Collector::start();
    let mesh = Mesh::start(&[]);
    let dir = mesh.dir.path().join("res");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bus.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: bus\nspec:\n  type: pubsub.in-memory\n  \
         version: v1\n  metadata: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sub.yaml"),
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: orders\nspec:\n  pubsubname: bus\n  \
         topic: orders\n  routes:\n    default: /orders\n",
    )
    .unwrap();
    let app = SubscriberApp::start(json!([]), HashMap::new());
    let config = mesh.write("pubsub.yaml", &config("1", collector.http, "http", ""));
    let mut spec = SidecarSpec::new("shop", Some(app.addr.port()));
    spec.config = Some(&config);
    spec.env = traced_env();
    spec.extra = vec!["--resources-path".into(), dir.to_str().unwrap().into()];
    let shop = mesh.sidecar(spec);
    let http = Http::new();
    eventually(Duration::from_secs(15), "the subscription is active", || {
        (http.get(&shop.http, "/v1.0/healthz").status == 204).then_some(())
    });
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_PARENT}-01");
    let reply = http.send(
        "POST",
        &shop.http,
        "/v1.0/publish/bus/orders",
        &[("content-type", "application/json"), ("traceparent", &traceparent)],
        br#"{"order": 1}"#.to_vec(),
    );
    assert_eq!(reply.status, 204, "{}", reply.text());
    let delivery = eventually(Duration::from_secs(15), "the delivery", || app.at("/orders").into_iter().next());

    let spans = eventually(Duration::from_secs(15), "publish, delivery and app channel spans", || {
        let spans: Vec<Span> = collector.store.spans().into_iter().filter(|s| s.trace_id == CALLER_TRACE).collect();
        (spans.len() >= 4).then_some(spans)
    });
    let api = one(&spans, "the publish API span", |s| s.kind == SERVER);
    assert_eq!(api.parent, CALLER_PARENT);
    let producer = one(&spans, "the publish span", |s| s.kind == PRODUCER);
    assert_eq!(producer.parent, api.span_id);
    assert_eq!(producer.name, "pubsub/orders");
    let consumer = one(&spans, "the delivery span", |s| s.kind == CONSUMER);
    assert_eq!(consumer.parent, producer.span_id, "the delivery's parent is the traceparent in the CloudEvent");
    let channel = one(&spans, "the app channel span", |s| s.kind == CLIENT && s.name == "app-channel");
    assert_eq!(channel.parent, consumer.span_id);
    assert_eq!(
        delivery.body["traceparent"],
        format!("00-{CALLER_TRACE}-{}-01", producer.span_id),
        "the CloudEvent carries the publish span"
    );
    assert_eq!(
        delivery.headers["traceparent"],
        format!("00-{CALLER_TRACE}-{}-01", channel.span_id),
        "the subscriber app continues the trace"
    );
    assert!(spans.iter().all(|s| s.service == "shop"));
    assert_no_secret(&collector.store.spans(), &[]);
}

/// Configurations ward cannot honour are refused in production: Zipkin, and audit log records without an endpoint.
#[test]
fn zipkin_and_audit_without_endpoint_are_refused_in_production() {
    let mesh = Mesh::start(&[]);
    let zipkin = mesh.write(
        "zipkin.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: z\nspec:\n  tracing:\n    \
         samplingRate: \"1\"\n    zipkin:\n      endpointAddress: http://127.0.0.1:9411/api/v2/spans\n  ward:\n    \
         productionMode: true\n",
    );
    let mut spec = SidecarSpec::new("zip", None);
    spec.config = Some(&zipkin);
    let (code, _, stderr) = mesh.sidecar_exit(spec);
    assert_ne!(code, 0);
    assert!(stderr.contains("spec.tracing.zipkin"), "{stderr}");

    let audit = mesh.write(
        "audit.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: a\nspec:\n  ward:\n    \
         productionMode: true\n    audit:\n      otlp: true\n",
    );
    let mut spec = SidecarSpec::new("aud", None);
    spec.config = Some(&audit);
    let (code, _, stderr) = mesh.sidecar_exit(spec);
    assert_ne!(code, 0);
    assert!(stderr.contains("spec.ward.audit.otlp"), "{stderr}");
}

/// `isSecure: true`: OTLP over TLS (HTTP and gRPC), the collector's certificate checked against the system's roots
/// (`SSL_CERT_FILE` names the test CA here); without that trust, nothing is exported.
#[test]
fn secure_exports_verify_the_collector_certificate() {
    let collector = Collector::start();
    let mesh = Mesh::start(&[]);
    let ca = mesh.write("collector-ca.pem", &collector.ca_pem);
    let secure = |name: &str, endpoint: SocketAddr, protocol: &str| {
        mesh.write(
            name,
            &format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: tls\nspec:\n  tracing:\n    \
                 samplingRate: \"1\"\n    otel:\n      endpointAddress: \"{endpoint}\"\n      protocol: {protocol}\n      \
                 isSecure: true\n"
            ),
        )
    };
    let http_config = secure("https.yaml", collector.https, "http");
    let grpc_config = secure("grpcs.yaml", collector.grpcs, "grpc");
    let trusting = |app_id, config| {
        let mut spec = SidecarSpec::new(app_id, None);
        spec.config = Some(config);
        spec.env = traced_env();
        spec.env.push(("SSL_CERT_FILE".into(), ca.to_str().unwrap().into()));
        spec
    };
    let over_https = mesh.sidecar(trusting("over-https", &http_config));
    let over_grpcs = mesh.sidecar(trusting("over-grpcs", &grpc_config));
    // Trusting another CA (the mesh's own root), not the collector's: the exports fail the TLS check.
    let mut spec = SidecarSpec::new("untrusting", None);
    spec.config = Some(&http_config);
    spec.env = traced_env();
    let other_ca = mesh.write("other-roots.pem", &mesh.trust_anchors());
    spec.env.push(("SSL_CERT_FILE".into(), other_ca.to_str().unwrap().into()));
    let untrusting = mesh.sidecar(spec);
    let http = Http::new();
    for sidecar in [&over_https, &over_grpcs, &untrusting] {
        assert_eq!(http.get(&sidecar.http, "/v1.0/metadata").status, 200);
    }
    for service in ["over-https", "over-grpcs"] {
        eventually(Duration::from_secs(15), &format!("a span from {service} over TLS"), || {
            collector.store.spans().iter().any(|s| s.service == service).then_some(())
        });
    }
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!collector.store.spans().iter().any(|s| s.service == "untrusting"), "exported without a trusted root");
}

/// The gRPC API: `grpc-trace-bin` from the app is continued (binary metadata, as gRPC clients send it), and a state
/// operation is a child span; the key and the value never appear in a span.
#[test]
fn grpc_calls_continue_grpc_trace_bin_and_state_operations_are_spans() {
    use dapr::dapr::proto::common::v1 as common;
    use dapr::dapr::proto::runtime::v1 as rt;
    let collector = Collector::start();
    let mesh = Mesh::start(&[]);
    let dir = mesh.dir.path().join("res");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("store.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: store\nspec:\n  type: state.in-memory\n  \
         version: v1\n  metadata: []\n",
    )
    .unwrap();
    let config = mesh.write("grpc.yaml", &config("1", collector.grpc, "grpc", ""));
    let mut spec = SidecarSpec::new("grpcapp", None);
    spec.config = Some(&config);
    spec.env = traced_env();
    spec.extra = vec!["--resources-path".into(), dir.to_str().unwrap().into()];
    let sidecar = mesh.sidecar(spec);
    let grpc_addr = support::field(&sidecar.process.stdout_text(), "grpc");
    // grpc-trace-bin: version 0, trace id, span id, sampled.
    let mut bin = vec![0u8, 0];
    bin.extend((0..16).map(|i| u8::from_str_radix(&CALLER_TRACE[2 * i..2 * i + 2], 16).unwrap()));
    bin.push(1);
    bin.extend((0..8).map(|i| u8::from_str_radix(&CALLER_PARENT[2 * i..2 * i + 2], 16).unwrap()));
    bin.extend([2, 1]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}")).unwrap().connect().await.unwrap();
        let mut dapr = rt::dapr_client::DaprClient::new(channel);
        let mut request = tonic::Request::new(rt::SaveStateRequest {
            store_name: "store".into(),
            states: vec![common::StateItem {
                key: "secret-key-must-not-leak".into(),
                value: b"secret-value-must-not-leak".to_vec(),
                ..Default::default()
            }],
        });
        request.metadata_mut().insert_bin("grpc-trace-bin", tonic::metadata::MetadataValue::from_bytes(&bin));
        dapr.save_state(request).await.expect("saved");
    });
    // The same key over HTTP: the path names it, the span does not.
    let reply = Http::new().get(&sidecar.http, "/v1.0/state/store/secret-key-must-not-leak");
    assert_eq!(reply.status, 200, "{}", reply.text());
    eventually(Duration::from_secs(15), "the HTTP state span", || {
        collector.store.spans().iter().any(|s| s.name == "/v1.0/state/store").then_some(())
    });
    let spans = eventually(Duration::from_secs(15), "the gRPC API span and the state span", || {
        let spans: Vec<Span> = collector.store.spans().into_iter().filter(|s| s.trace_id == CALLER_TRACE).collect();
        (spans.len() >= 2).then_some(spans)
    });
    let api = one(&spans, "the gRPC API span", |s| s.kind == SERVER);
    assert_eq!(api.name, "/dapr.proto.runtime.v1.Dapr/SaveState");
    assert_eq!(api.parent, CALLER_PARENT, "grpc-trace-bin is the parent");
    let state = one(&spans, "the state span", |s| s.name == "state/save");
    assert_eq!(state.parent, api.span_id);
    assert_eq!(find(&state.attributes, "ward.component"), "store");
    for span in collector.store.spans() {
        assert!(!span.name.contains("must-not-leak"), "{span:?}");
        for (_, value) in &span.attributes {
            assert!(!value.contains("must-not-leak"), "{span:?}");
        }
    }
}

/// Sentry with `spec.tracing` in its Configuration: a server span per SignCertificate, service `dapr-sentry`.
#[test]
fn sentry_makes_a_span_per_certificate_request() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let sentry_config = dir.path().join("daprsystem.yaml");
    std::fs::write(&sentry_config, config("1", collector.grpc, "grpc", "")).unwrap();
    let mesh = Mesh::start(&["--config", support::path_str(&sentry_config)]);
    let _orders = mesh.sidecar(SidecarSpec::new("orders", None));
    // The sentry's batch exporter runs on its default schedule (5 s).
    let span = eventually(Duration::from_secs(20), "sentry's span", || {
        collector.store.spans().into_iter().find(|s| s.service == "dapr-sentry" && s.name == "SignCertificate")
    });
    assert_eq!(span.kind, SERVER);
    assert_eq!(find(&span.attributes, "rpc.service"), "dapr.proto.sentry.v1.CA");
    assert_no_secret(&collector.store.spans(), &[]);
}
