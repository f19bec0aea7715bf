//! The public Dapr HTTP API an app calls on 127.0.0.1: health, metadata, service invocation (caller side), and the
//! state and secrets routes (`state_api`, `secrets_api`).
//!
//! Invocation reads the method from the *raw* request path (still percent-encoded) and sends it on unchanged;
//! the callee's sidecar normalises it once and judges it (the edge that decides is the edge that normalises).
//! Bodies stream in both directions, bounded by `--max-body-size`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode};
use ward_identity::SpiffeId;

use crate::error::{ApiError, PEER_ERROR_HEADER, PeerError};
use crate::headers;
use crate::internal::{INTERNAL_INVOKE_PREFIX, error_chain};
use crate::runtime::Shared;

/// The public router with its layers. Order, outermost first: API log (sees every call, including refused ones)
/// → API token (401, then strips the header) → API allow/deny list (a denied API is not routed: 404) → routes.
pub fn router(shared: Arc<Shared>) -> Router {
    let api_log = ward_gate::ApiLogLayer::new(shared.api_log_options());
    let token = ward_gate::ApiTokenLayer::new(shared.api_tokens().clone());
    Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz))
        .route("/v1.0/metadata", get(metadata))
        .merge(crate::state_api::router())
        .merge(crate::secrets_api::router())
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), api_allowlist))
        .with_state(shared)
        .layer(tower::ServiceBuilder::new().layer(api_log).layer(token))
}

/// `spec.api`: an API the Configuration does not allow is not routed at all (Dapr answers a plain 404).
async fn api_allowlist(State(shared): State<Arc<Shared>>, request: Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path();
    if ward_policy::is_always_allowed(request.method().as_str(), path) || shared.api_allowlist().is_http_allowed(path) {
        return next.run(request).await;
    }
    StatusCode::NOT_FOUND.into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_ready() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::NotReady { detail: "the sidecar is starting".to_owned() }.into_response()
    }
}

async fn metadata(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.metadata_json()).into_response()
}

/// Invocation routes: `/v1.0/invoke/{app-id}/method/{method…}` with any verb, or any path with a `dapr-app-id`
/// header (the method is then the whole path).
async fn fallback(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/v1.0/invoke/") {
        let Some((target, method)) = rest.split_once("/method/") else {
            return ApiError::InvokeNoAppId.into_response();
        };
        let target = percent_encoding::percent_decode_str(target).decode_utf8_lossy().into_owned();
        return invoke(shared, target, method.to_owned(), request).await;
    }
    if let Some(target) = request.headers().get(headers::APP_ID).and_then(|v| v.to_str().ok()).map(str::to_owned) {
        let method = path.trim_start_matches('/').to_owned();
        return invoke(shared, target, method, request).await;
    }
    if path.starts_with("/v1.0/invoke") {
        return ApiError::InvokeNoAppId.into_response();
    }
    ApiError::NotFound.into_response()
}

/// Why a call could not be handed to the callee's sidecar, or what that sidecar refused.
#[derive(Debug)]
pub(crate) enum PeerFailure {
    /// Bad target or method: (gRPC code name, detail).
    Invalid(String),
    /// No instance of the app is registered.
    NotFound,
    /// Name resolution or the connection failed.
    Unavailable(String),
    BodyTooLarge(u64),
    /// The callee's sidecar answered with a refusal (`PeerError`).
    Refused(PeerError),
}

/// `app-id` or `app-id.namespace`.
pub(crate) fn split_target(shared: &Shared, target: &str) -> (String, String) {
    match target.split_once('.') {
        Some((app_id, namespace)) => (app_id.to_owned(), namespace.to_owned()),
        None => (target.to_owned(), shared.namespace().to_owned()),
    }
}

/// Sends a request to the sidecar of `target` on its internal port at `internal_path` (e.g.
/// `/v1.0/internal/invoke/<raw method>?<query>`): resolves an instance, strips identity claims and tokens, streams
/// the body (bounded by `--max-body-size`), and returns the callee sidecar's answer. Shared by HTTP invocation,
/// gRPC `InvokeService` and the gRPC proxy.
pub(crate) async fn send_to_peer(
    shared: &Shared,
    target: &str,
    internal_path: String,
    mut parts: http::request::Parts,
    body: Body,
) -> Result<http::Response<hyper::body::Incoming>, PeerFailure> {
    let (app_id, namespace) = split_target(shared, target);
    let Ok(callee) = SpiffeId::dapr(shared.trust_domain(), &namespace, &app_id) else {
        return Err(PeerFailure::Invalid(format!("invalid app id {target:?}")));
    };
    let limit = shared.max_body_size();
    if let Some(length) = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok())
        && length.parse::<u64>().is_ok_and(|n| n > limit)
    {
        return Err(PeerFailure::BodyTooLarge(limit));
    }
    let address = match shared.resolve(&app_id, &namespace).await {
        Ok(Some(address)) => address,
        Ok(None) => return Err(PeerFailure::NotFound),
        Err(err) => return Err(PeerFailure::Unavailable(format!("name resolution failed: {err}"))),
    };
    let Ok(uri) = format!("http://{address}{internal_path}").parse::<http::Uri>() else {
        return Err(PeerFailure::Invalid("invalid method".to_owned()));
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_2;
    headers::strip_untrusted(&mut parts.headers);
    parts.headers.remove(headers::APP_ID);
    if let Ok(v) = HeaderValue::from_str(&app_id) {
        parts.headers.insert(headers::CALLEE_APP_ID, v);
    }
    // Streams through, failing the upload if it grows past the limit.
    let body = Body::new(http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)));
    let outgoing = http::Request::from_parts(parts, body);
    let response = match shared.outbound().send(&callee, shared.own_id(), outgoing).await {
        Ok(response) => response,
        Err(err) => {
            let chain = error_chain(&err);
            tracing::warn!(callee = %callee, error = %chain, "invocation failed");
            if chain.contains("length limit exceeded") {
                return Err(PeerFailure::BodyTooLarge(limit));
            }
            return Err(PeerFailure::Unavailable(chain));
        }
    };
    let (mut parts, body) = response.into_parts();
    if parts.headers.remove(PEER_ERROR_HEADER).is_some() {
        let bytes = http_body_util::BodyExt::collect(body).await.map(|c| c.to_bytes()).unwrap_or_default();
        let peer: PeerError = serde_json::from_slice(&bytes)
            .unwrap_or(PeerError { code: "Unknown".to_owned(), message: "the callee's sidecar refused".to_owned() });
        return Err(PeerFailure::Refused(peer));
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    Ok(http::Response::from_parts(parts, body))
}

/// Invokes `raw_method` (still percent-encoded) on `target` (`app-id` or `app-id.namespace`); shared with the
/// gRPC `InvokeService` adapter.
pub(crate) async fn invoke(shared: Arc<Shared>, target: String, raw_method: String, request: Request) -> Response {
    let failed = |grpc_code: &'static str, detail: String| {
        ApiError::InvokeFailed { app_id: target.clone(), grpc_code, detail }.into_response()
    };
    if raw_method.is_empty() {
        return failed("InvalidArgument", "invalid method: empty method".to_owned());
    }
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let path = format!("{INTERNAL_INVOKE_PREFIX}{raw_method}{query}");
    match send_to_peer(&shared, &target, path, parts, body).await {
        Ok(response) => response.map(Body::new),
        Err(PeerFailure::Invalid(detail)) => failed("InvalidArgument", detail),
        Err(PeerFailure::NotFound) => failed("Unavailable", format!("couldn't find service: {target}")),
        Err(PeerFailure::Unavailable(detail)) => failed("Unavailable", detail),
        Err(PeerFailure::BodyTooLarge(limit)) => ApiError::BodyTooLarge { limit }.into_response(),
        // The callee's sidecar refused: wrap its answer as Dapr does.
        Err(PeerFailure::Refused(peer)) if peer.code == "PermissionDenied" => {
            ApiError::InvokeDenied { app_id: target, message: peer.message }.into_response()
        }
        Err(PeerFailure::Refused(peer)) => {
            let code: &'static str = match peer.code.as_str() {
                "InvalidArgument" => "InvalidArgument",
                "Unavailable" => "Unavailable",
                "NotFound" => "NotFound",
                _ => "Internal",
            };
            failed(code, peer.message)
        }
    }
}
