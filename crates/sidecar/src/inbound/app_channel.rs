//! The app channel: the last service of the inbound stack, chosen once at start from `--app-port` and
//! `--app-protocol`. Authorization has already happened; this module only delivers, with the operation the ACL
//! judged, and relays the app's answer (hop-by-hop headers and any forged refusal headers removed).
//!
//! Three ways to reach an app: an HTTP request (HTTP apps); `dapr.proto.runtime.v1.AppCallback/OnInvoke` (service
//! invocation of a gRPC app); a proxied gRPC call streamed over HTTP/2 (gRPC apps, Dapr's proxy mode).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderValue, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use ward_policy::{Operation, PreparedInvocation};

use super::{InboundRequest, InboundResponse};
use crate::error::{InboundError, PeerRefusal};
use crate::grpc_api::pb::common::v1 as common;
use crate::grpc_api::pb::runtime::app_callback_client::AppCallbackClient;
use crate::headers;

/// How this sidecar reaches its app.
#[derive(Clone)]
pub(crate) enum AppChannel {
    /// No `--app-port`: nothing can be delivered.
    None,
    /// An HTTP app: invocations arrive as HTTP/1.1 requests.
    Http(Arc<HttpApp>),
    /// A gRPC app: invocations arrive as `AppCallback/OnInvoke`, proxied calls as themselves.
    Grpc(Arc<GrpcApp>),
}

pub(crate) struct HttpApp {
    client: Client<HttpConnector, Body>,
    /// `http://host:port`
    base: String,
    /// Dapr's `dapr_http_client_*` for the calls to the app.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

pub(crate) struct GrpcApp {
    callback: AppCallbackClient<tonic::transport::Channel>,
    h2: Client<HttpConnector, Body>,
    base: String,
    max_body_size: u64,
}

/// What the app channel needs to know, from the settings.
pub(crate) struct AppChannelOptions<'a> {
    pub(crate) address: &'a str,
    pub(crate) port: Option<u16>,
    pub(crate) grpc: bool,
    pub(crate) max_body_size: u64,
    pub(crate) metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl AppChannel {
    pub(crate) fn new(options: AppChannelOptions<'_>) -> Result<AppChannel, String> {
        let Some(port) = options.port else { return Ok(AppChannel::None) };
        let base = format!("http://{}:{port}", options.address);
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        if !options.grpc {
            let client = Client::builder(TokioExecutor::new()).build(http);
            return Ok(AppChannel::Http(Arc::new(HttpApp { client, base, metrics: options.metrics })));
        }
        let endpoint =
            tonic::transport::Endpoint::from_shared(base.clone()).map_err(|err| err.to_string())?.tcp_nodelay(true);
        let callback = AppCallbackClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::try_from(options.max_body_size).unwrap_or(usize::MAX));
        let h2 = Client::builder(TokioExecutor::new()).http2_only(true).build(http);
        Ok(AppChannel::Grpc(Arc::new(GrpcApp { callback, h2, base, max_body_size: options.max_body_size })))
    }

    pub(crate) fn speaks_grpc(&self) -> bool {
        matches!(self, AppChannel::Grpc(_))
    }

    /// `host:port` of the app, when it has a port.
    pub(crate) fn authority(&self) -> Option<&str> {
        let base = match self {
            AppChannel::None => return None,
            AppChannel::Http(app) => &app.base,
            AppChannel::Grpc(app) => &app.base,
        };
        base.strip_prefix("http://")
    }

    /// A `GET` to an HTTP app with `headers` (the sidecar's own; e.g. its app token): status and body, at most
    /// `limit` bytes. `None` for a gRPC app or no app.
    pub(crate) async fn http_get(
        &self,
        path: &str,
        headers: http::HeaderMap,
        limit: u64,
    ) -> Option<Result<(StatusCode, bytes::Bytes), String>> {
        let AppChannel::Http(app) = self else { return None };
        let mut request = http::Request::new(Body::empty());
        *request.headers_mut() = headers;
        let uri = format!("{}{path}", app.base);
        Some(
            async {
                *request.uri_mut() = uri.parse().map_err(|_| "not a valid request target".to_owned())?;
                let response = app.client.request(request).await.map_err(|err| crate::error::error_chain(&err))?;
                let status = response.status();
                let body = crate::body::read_limited(Body::new(response.into_body()), limit)
                    .await
                    .map_err(|_| format!("the answer is larger than {limit} bytes"))?;
                Ok((status, body))
            }
            .await,
        )
    }

    /// The `AppCallback` client of a gRPC app (`OnTopicEvent`, `ListTopicSubscriptions`).
    pub(crate) fn callback(&self) -> Option<AppCallbackClient<tonic::transport::Channel>> {
        match self {
            AppChannel::Grpc(app) => Some(app.callback.clone()),
            _ => None,
        }
    }
}

type ChannelFuture = Pin<Box<dyn Future<Output = Result<InboundResponse, InboundError>> + Send>>;

impl tower::Service<InboundRequest> for AppChannel {
    type Response = InboundResponse;
    type Error = InboundError;
    type Future = ChannelFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: InboundRequest) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move {
            let Some(call) = request.extensions().get::<PreparedInvocation>().map(|c| c.operation.clone()) else {
                return Err(InboundError::UnknownEndpoint);
            };
            // The app channel's span (tracing on), child of the inbound or delivery span; the app receives its
            // `traceparent` (and, over gRPC, `grpc-trace-bin`), continuing the caller's trace.
            let mut request = request;
            let span = crate::otel::child(
                || "app-channel".into(),
                opentelemetry::trace::SpanKind::Client,
                || {
                    let (protocol, method) = match &call {
                        Operation::Http(method) => ("http", method.as_str().to_owned()),
                        Operation::Grpc(method) => ("grpc", method.as_str().to_owned()),
                    };
                    vec![
                        opentelemetry::KeyValue::new("rpc.system", protocol),
                        opentelemetry::KeyValue::new("rpc.method", crate::otel::span_path(&method)),
                        opentelemetry::KeyValue::new("http.request.method", request.method().as_str().to_owned()),
                    ]
                },
            );
            if let Some(cx) = &span {
                crate::otel::inject(cx, request.headers_mut(), channel.speaks_grpc());
            }
            let result = deliver(channel, call, request).await;
            if let Some(cx) = &span {
                match &result {
                    Ok(response) => crate::otel::end_with_status(cx, response.status().as_u16()),
                    Err(_) => crate::otel::end_failed(cx, "not delivered to the app"),
                }
            }
            result
        })
    }
}

/// Delivers `request` to the app by `call`'s protocol.
async fn deliver(
    channel: AppChannel,
    call: Operation,
    request: InboundRequest,
) -> Result<InboundResponse, InboundError> {
    {
        {
            match (channel, call) {
                (AppChannel::None, _) => Err(InboundError::AppUnavailable("the app has no port configured".to_owned())),
                (AppChannel::Http(app), Operation::Http(method)) => {
                    let path = method.to_uri_path();
                    let query = request.uri().query();
                    let mut uri = String::with_capacity(app.base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
                    uri.push_str(&app.base);
                    uri.push_str(&path);
                    if let Some(query) = query {
                        uri.push('?');
                        uri.push_str(query);
                    }
                    let started = std::time::Instant::now();
                    let verb = request.method().clone();
                    let sent = crate::metrics::content_length(request.headers());
                    let answer = forward(&app.client, request, uri, http::Version::HTTP_11).await;
                    if let Some(metrics) = &app.metrics {
                        let (status, received) = match &answer {
                            Ok(response) => {
                                (response.status().as_u16(), crate::metrics::content_length(response.headers()))
                            }
                            Err(_) => (0, 0),
                        };
                        let millis = started.elapsed().as_secs_f64() * 1000.0;
                        metrics.http_client(verb.as_str(), status, millis, sent, received);
                    }
                    answer
                }
                (AppChannel::Http(_), Operation::Grpc(_)) => {
                    Err(InboundError::AppUnavailable("the app does not speak gRPC (--app-protocol http)".to_owned()))
                }
                (AppChannel::Grpc(app), Operation::Http(method)) => on_invoke(&app, method.as_str(), request).await,
                (AppChannel::Grpc(app), Operation::Grpc(method)) => {
                    let mut request = request;
                    // gRPC servers built on the C core refuse a request without `te: trailers`.
                    request.headers_mut().insert(http::header::TE, HeaderValue::from_static("trailers"));
                    let uri = format!("{}{}", app.base, method.as_str());
                    forward(&app.h2, request, uri, http::Version::HTTP_2).await
                }
            }
        }
    }
}

/// Sends the request to the app at `uri` and relays the answer, streaming both ways.
async fn forward(
    client: &Client<HttpConnector, Body>,
    mut request: InboundRequest,
    uri: String,
    version: http::Version,
) -> Result<InboundResponse, InboundError> {
    // From the `String` itself: parsing a `&str` would copy it once more.
    *request.uri_mut() =
        http::Uri::try_from(uri).map_err(|_| InboundError::InvalidMethod("not a valid request target".to_owned()))?;
    *request.version_mut() = version;
    match client.request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            PeerRefusal::strip(&mut parts.headers);
            Ok(http::Response::from_parts(parts, Body::new(body)))
        }
        Err(err) => {
            tracing::warn!(error = %crate::error::error_chain(&err), "the app did not answer");
            Err(InboundError::AppUnavailable(format!("the app is not reachable: {}", crate::error::error_chain(&err))))
        }
    }
}

fn verb(method: &http::Method) -> i32 {
    use common::http_extension::Verb;
    (match *method {
        http::Method::GET => Verb::Get,
        http::Method::HEAD => Verb::Head,
        http::Method::POST => Verb::Post,
        http::Method::PUT => Verb::Put,
        http::Method::DELETE => Verb::Delete,
        http::Method::CONNECT => Verb::Connect,
        http::Method::OPTIONS => Verb::Options,
        http::Method::TRACE => Verb::Trace,
        http::Method::PATCH => Verb::Patch,
        _ => Verb::None,
    }) as i32
}

/// gRPC status of the app → the HTTP status Dapr answers with (`pkg/messaging/v1/util.go`, inverted).
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Delivers one invocation to a gRPC app's `OnInvoke` (the body is buffered: it becomes one protobuf field).
async fn on_invoke(app: &GrpcApp, method: &str, request: InboundRequest) -> Result<InboundResponse, InboundError> {
    let (parts, body) = request.into_parts();
    let data = crate::body::read_limited(body, app.max_body_size)
        .await
        .map_err(|_| InboundError::BodyTooLarge { limit: app.max_body_size })?;
    let content_type =
        parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let type_url =
        parts.headers.get(headers::ANY_TYPE_URL).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut call = tonic::Request::new(common::InvokeRequest {
        method: method.to_owned(),
        data: Some(prost_types::Any { type_url, value: data.to_vec() }),
        content_type,
        http_extension: Some(common::HttpExtension {
            verb: verb(&parts.method),
            querystring: parts.uri.query().unwrap_or_default().to_owned(),
        }),
    });
    for name in [
        headers::API_TOKEN,
        headers::CALLER_APP_ID,
        headers::CALLER_NAMESPACE,
        headers::CALLEE_APP_ID,
        headers::PROVENANCE,
    ] {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok())
            && let Ok(value) = value.parse()
        {
            call.metadata_mut().insert(name, value);
        }
    }
    // The trace context, as gRPC apps read it: `traceparent` / `tracestate`, and the binary `grpc-trace-bin`.
    for name in [crate::otel::propagation::TRACEPARENT, crate::otel::propagation::TRACESTATE] {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok())
            && let Ok(value) = value.parse()
        {
            call.metadata_mut().insert(name, value);
        }
    }
    if let Some(bytes) =
        parts.headers.get(crate::otel::propagation::GRPC_TRACE_BIN).and_then(crate::otel::propagation::decode_bin)
    {
        call.metadata_mut()
            .insert_bin(crate::otel::propagation::GRPC_TRACE_BIN, tonic::metadata::MetadataValue::from_bytes(&bytes));
    }
    let mut client = app.callback.clone();
    match client.on_invoke(call).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            let (type_url, value) = answer.data.map(|any| (any.type_url, any.value)).unwrap_or_default();
            let mut response = http::Response::new(Body::from(value));
            // Typed protobuf data is `application/x-protobuf` whatever content type the app named (daprd's
            // `InvokeMethodResponse.ContentType`): the SDKs' default answer says JSON, and an HTTP caller then could
            // not `unpack()` it.
            let content_type = if type_url.is_empty() {
                answer.content_type
            } else {
                if let Ok(value) = HeaderValue::from_str(&answer.content_type)
                    && !answer.content_type.is_empty()
                {
                    response.headers_mut().insert(headers::ANY_CONTENT_TYPE, value);
                }
                headers::PROTOBUF_CONTENT_TYPE.to_owned()
            };
            if let Ok(value) = HeaderValue::from_str(&content_type)
                && !content_type.is_empty()
            {
                response.headers_mut().insert(http::header::CONTENT_TYPE, value);
            }
            if let Ok(value) = HeaderValue::from_str(&type_url)
                && !type_url.is_empty()
            {
                response.headers_mut().insert(headers::ANY_TYPE_URL, value);
            }
            Ok(response)
        }
        Err(status) if status.code() == tonic::Code::Unavailable => {
            Err(InboundError::AppUnavailable(format!("the app is not reachable: {}", status.message())))
        }
        // The app's own error is the app's answer, as with an HTTP app's error status.
        Err(status) => {
            let mut response = http::Response::new(Body::from(status.message().to_owned()));
            *response.status_mut() = http_status(status.code());
            Ok(response)
        }
    }
}
