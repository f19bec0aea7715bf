//! The callee side of service invocation: the internal port where other sidecars call in.
//!
//! Per connection the accept path reads the peer's SPIFFE ID from the verified TLS session (never from a header)
//! and puts it into each request's extensions. Per request: normalise the method once, decide with the compiled
//! ACL, write an audit event, and only then forward to the app — with the exact string the ACL judged, this
//! sidecar's own app token, and identity headers set from the verified identity.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use ward_identity::SpiffeId;
use ward_policy::{
    AclRequest, AppProtocol, Caller, HttpVerb, MethodPath, normalize_grpc_method, normalize_http_method,
};

use crate::error::{PEER_ERROR_HEADER, PeerError};
use crate::headers;
use crate::runtime::Shared;
use crate::transport::{DEV_IDENTITY_HEADER, Transport, parse_dev_marker};

/// The path prefix of invocations between sidecars.
pub const INTERNAL_INVOKE_PREFIX: &str = "/v1.0/internal/invoke/";
/// The path prefix of proxied gRPC calls between sidecars (followed by `pkg.Service/Method`).
pub const INTERNAL_GRPC_PREFIX: &str = "/v1.0/internal/grpc/";

/// The caller identity proven on this connection.
#[derive(Debug, Clone)]
pub struct PeerIdentity(pub Option<SpiffeId>);

/// Accepts connections until the task is dropped; `graceful` tracks them for draining at shutdown.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = match shared.transport() {
        Transport::Mtls(mtls) => {
            let config = ward_identity::server_config(
                mtls.svid.clone(),
                Some((mtls.bundle.clone(), ward_identity::Authorizer::MemberOf(mtls.trust_domain.clone()), mtls.skew)),
                &[b"h2"],
            );
            match config {
                Ok(config) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                Err(err) => {
                    tracing::error!(error = %err, "internal TLS configuration failed; refusing all internal traffic");
                    return;
                }
            }
        }
        Transport::Plaintext => None,
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((tcp, remote)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let graceful = graceful.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => {
                            tracing::warn!(%remote, error = %err, "refused an internal connection: TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let peer = ward_identity::peer_spiffe_id(tls.get_ref().1.peer_certificates());
                    let service = service(shared, PeerIdentity(peer));
                    let conn = builder.serve_connection(TokioIo::new(tls), service).into_owned();
                    let _ = graceful.watch(conn).await;
                }
                None => {
                    let service = service(shared, PeerIdentity(None));
                    let conn = builder.serve_connection(TokioIo::new(tcp), service).into_owned();
                    let _ = graceful.watch(conn).await;
                }
            }
        });
    }
}

fn service(
    shared: Arc<Shared>,
    peer: PeerIdentity,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response, Infallible>> + Send,
> + Clone
+ Send {
    hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handle(shared, peer, request.map(Body::new)).await) }
    })
}

pub(crate) fn peer_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::to_vec(&PeerError { code: code.to_owned(), message }).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(PEER_ERROR_HEADER, HeaderValue::from_static("1"));
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Decides and forwards one internal request.
pub async fn handle(shared: Arc<Shared>, peer: PeerIdentity, mut request: http::Request<Body>) -> Response {
    let path = request.uri().path().to_owned();
    let (raw_method, grpc) = if let Some(raw) = path.strip_prefix(INTERNAL_INVOKE_PREFIX) {
        (raw.to_owned(), false)
    } else if let Some(raw) = path.strip_prefix(INTERNAL_GRPC_PREFIX) {
        (format!("/{raw}"), true)
    } else {
        return peer_error(StatusCode::NOT_FOUND, "NotFound", "unknown internal endpoint".to_owned());
    };

    // Identity: the verified certificate; in development mode, a fresh marker. Never a dapr-caller-* header.
    let caller: Option<SpiffeId> = match shared.transport() {
        Transport::Mtls(_) => peer.0,
        Transport::Plaintext if shared.production() => None,
        Transport::Plaintext => request
            .headers()
            .get(DEV_IDENTITY_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_dev_marker(v, SystemTime::now())),
    };
    request.headers_mut().remove(DEV_IDENTITY_HEADER);
    if shared.production() && caller.is_none() {
        return peer_error(
            StatusCode::FORBIDDEN,
            "PermissionDenied",
            "caller identity could not be verified".to_owned(),
        );
    }

    // Normalise once; the string judged here is the string the app receives.
    let mut method_path: Option<MethodPath> = None;
    let (operation, verb, app_protocol) = if grpc {
        match normalize_grpc_method(&raw_method) {
            Ok(method) => (method.as_str().to_owned(), None, AppProtocol::Grpc),
            Err(err) => {
                return peer_error(StatusCode::BAD_REQUEST, "InvalidArgument", format!("invalid method: {err}"));
            }
        }
    } else {
        match normalize_http_method(&raw_method) {
            Ok(method) => {
                let protocol = if shared.app_speaks_grpc() { AppProtocol::Grpc } else { AppProtocol::Http };
                let operation = method.as_str().to_owned();
                method_path = Some(method);
                (operation, request.method().as_str().parse::<HttpVerb>().ok(), protocol)
            }
            Err(err) => {
                return peer_error(StatusCode::BAD_REQUEST, "InvalidArgument", format!("invalid method: {err}"));
            }
        }
    };
    let dapr_caller = caller.as_ref().and_then(|id| id.dapr_identity().ok());
    let acl = shared.acl();
    let acl_request = AclRequest {
        caller: dapr_caller.map(|d| Caller { trust_domain: d.trust_domain, namespace: d.namespace, app_id: d.app_id }),
        operation: &operation,
        verb,
        app_protocol,
    };
    let decision = acl.decide(&acl_request);
    let audited = shared.audit().record(ward_policy::AuditEvent::for_acl(
        crate::runtime::now_rfc3339(),
        shared.app_id(),
        &acl_request,
        &decision,
    ));
    if let Err(err) = audited {
        // Fail closed: no decision takes effect without its audit record (issue 12 row 9).
        tracing::error!(error = %err, "audit unavailable; refusing the call");
        return peer_error(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "audit log unavailable".to_owned());
    }
    if !decision.allowed {
        let who = caller.as_ref().map(ToString::to_string).unwrap_or_default();
        let verb = if grpc { "NONE".to_owned() } else { request.method().to_string() };
        return peer_error(
            StatusCode::FORBIDDEN,
            "PermissionDenied",
            format!("access control policy has denied access to id: {who} operation: {operation} verb: {verb}"),
        );
    }

    let Some(app_port) = shared.app_port() else {
        return peer_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unavailable",
            "the app has no port configured".to_owned(),
        );
    };
    // Identity headers for the app come from the verified identity only; the token is this sidecar's own.
    let headers = request.headers_mut();
    headers::strip_untrusted(headers);
    if let Some(d) = dapr_caller {
        if let Ok(v) = HeaderValue::from_str(d.app_id) {
            headers.insert(headers::CALLER_APP_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(d.namespace) {
            headers.insert(headers::CALLER_NAMESPACE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(shared.app_id()) {
        headers.insert(headers::CALLEE_APP_ID, v);
    }
    shared.apply_app_token(headers);

    if grpc {
        return forward_grpc(&shared, app_port, &operation, request).await;
    }
    if shared.app_speaks_grpc() {
        return crate::app_callback::on_invoke(&shared, &operation, request).await;
    }

    // Forward to the app with the path the ACL judged.
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let uri = match &method_path {
        Some(method) => format!("http://{}:{app_port}{}{query}", shared.app_channel_address(), method.to_uri_path()),
        None => return peer_error(StatusCode::BAD_REQUEST, "InvalidArgument", "invalid method".to_owned()),
    };
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return peer_error(StatusCode::BAD_REQUEST, "InvalidArgument", "invalid method".to_owned());
    };
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_11;
    relay_app_answer(&shared, shared.app_client().request(request).await)
}

/// Forwards a proxied gRPC call to a gRPC app (HTTP/2 without TLS on loopback), streaming both ways.
async fn forward_grpc(shared: &Shared, app_port: u16, method: &str, mut request: http::Request<Body>) -> Response {
    if !shared.app_speaks_grpc() {
        return peer_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unavailable",
            format!("the app {} does not speak gRPC (--app-protocol)", shared.app_id()),
        );
    }
    let Ok(uri) = format!("http://{}:{app_port}{method}", shared.app_channel_address()).parse::<http::Uri>() else {
        return peer_error(StatusCode::BAD_REQUEST, "InvalidArgument", "invalid method".to_owned());
    };
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    relay_app_answer(shared, shared.app_h2_client().request(request).await)
}

fn relay_app_answer(
    shared: &Shared,
    answer: Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
) -> Response {
    match answer {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            // An app must not be able to pass its answer off as its sidecar's.
            parts.headers.remove(PEER_ERROR_HEADER);
            Response::from_parts(parts, Body::new(body))
        }
        Err(err) => {
            tracing::warn!(error = %err, "the app did not answer");
            peer_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Unavailable",
                format!("the app {} is not reachable: {}", shared.app_id(), error_chain(&err)),
            )
        }
    }
}

pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
