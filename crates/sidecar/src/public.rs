//! The public Dapr HTTP API an app calls on 127.0.0.1: a thin front end over the protocol-neutral cores (health,
//! metadata, service invocation, state in `state_api`, secrets in `secrets_api`). Each handler takes only the
//! core it uses ([`ApiState`] hands them out through `FromRef`).
//!
//! Layers, outermost first: API log (sees every call, including refused ones) → API token (401, then strips the
//! header) → API allow/deny list (a denied API is not routed: 404) → routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{FromRef, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use ward_policy::ApiAllowList;

use crate::components::Components;
use crate::error::ApiError;
use crate::headers;
use crate::invoke::Invoker;
use crate::metadata::MetadataCore;
use crate::state::StateCore;

/// Whether the sidecar is ready (set once everything started, cleared at shutdown).
#[derive(Clone, Default)]
pub(crate) struct Readiness(pub(crate) Arc<AtomicBool>);

impl Readiness {
    pub(crate) fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    pub(crate) fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release)
    }
}

/// The public API's state: one handle per core; each handler extracts only its own.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) invoker: Arc<Invoker>,
    pub(crate) state: Arc<StateCore>,
    pub(crate) components: Arc<Components>,
    pub(crate) metadata: Arc<MetadataCore>,
    pub(crate) readiness: Readiness,
    pub(crate) api_list: Arc<ArcSwap<ApiAllowList>>,
}

impl FromRef<ApiState> for Arc<Invoker> {
    fn from_ref(s: &ApiState) -> Self {
        s.invoker.clone()
    }
}
impl FromRef<ApiState> for Arc<StateCore> {
    fn from_ref(s: &ApiState) -> Self {
        s.state.clone()
    }
}
impl FromRef<ApiState> for Arc<Components> {
    fn from_ref(s: &ApiState) -> Self {
        s.components.clone()
    }
}
impl FromRef<ApiState> for Arc<MetadataCore> {
    fn from_ref(s: &ApiState) -> Self {
        s.metadata.clone()
    }
}
impl FromRef<ApiState> for Readiness {
    fn from_ref(s: &ApiState) -> Self {
        s.readiness.clone()
    }
}

/// The public router with its layers.
pub(crate) fn router(state: ApiState, tokens: ward_gate::ApiTokens, api_log: ward_gate::ApiLogOptions) -> Router {
    let api_list = state.api_list.clone();
    Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz))
        .route("/v1.0/metadata", get(metadata))
        .merge(crate::state_api::router())
        .merge(crate::secrets_api::router())
        .fallback(invoke)
        .layer(axum::middleware::from_fn_with_state(api_list, api_allowlist))
        .with_state(state)
        .layer(
            tower::ServiceBuilder::new()
                .layer(ward_gate::ApiLogLayer::new(api_log))
                .layer(ward_gate::ApiTokenLayer::new(tokens)),
        )
}

/// How a request that no route matched would be served: invocation (by path or by `dapr-app-id`), or nothing.
#[derive(Debug, PartialEq, Eq)]
enum Fallback<'a> {
    /// Invoke `raw_method` on `target`.
    Invoke {
        target: String,
        raw_method: &'a str,
    },
    /// `/v1.0/invoke/...` without an app id.
    NoAppId,
    NotFound,
}

/// Decides what the fallback does. Nothing under `/v1.0/healthz` (in any spelling) is ever an invocation: those
/// paths are where the API token exemption lives (CVE-2023-37918's class).
fn classify_fallback<'a>(path: &'a str, app_id_header: Option<&'a str>) -> Fallback<'a> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.get(.."v1.0/healthz".len()).is_some_and(|p| p.eq_ignore_ascii_case("v1.0/healthz")) {
        return Fallback::NotFound;
    }
    if let Some(rest) = path.strip_prefix("/v1.0/invoke/") {
        let Some((target, raw_method)) = rest.split_once("/method/") else { return Fallback::NoAppId };
        let target = percent_encoding::percent_decode_str(target).decode_utf8_lossy().into_owned();
        return Fallback::Invoke { target, raw_method };
    }
    if let Some(target) = app_id_header {
        return Fallback::Invoke { target: target.to_owned(), raw_method: trimmed };
    }
    if path.starts_with("/v1.0/invoke") { Fallback::NoAppId } else { Fallback::NotFound }
}

/// `spec.api`: an API the Configuration does not allow is not routed at all (Dapr answers a plain 404). The
/// invocation API is judged as such whichever form the request uses.
async fn api_allowlist(
    State(list): State<Arc<ArcSwap<ApiAllowList>>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if ward_policy::is_always_allowed(request.method().as_str(), path) {
        return next.run(request).await;
    }
    let list = list.load();
    let header = request.headers().get(headers::APP_ID).and_then(|v| v.to_str().ok());
    let judged = match classify_fallback(path, header) {
        // Only a request no route claims becomes an invocation; routed ones are judged by their own path.
        Fallback::Invoke { .. } if !is_routed(path) => "/v1.0/invoke",
        _ => path,
    };
    if list.is_http_allowed(judged) && list.is_http_allowed(path) {
        return next.run(request).await;
    }
    StatusCode::NOT_FOUND.into_response()
}

/// Whether one of the router's own routes serves `path` (so it is not an invocation by header).
fn is_routed(path: &str) -> bool {
    ["/v1.0/healthz", "/v1.0/metadata", "/v1.0/state/", "/v1.0/secrets/"]
        .iter()
        .any(|prefix| path == prefix.trim_end_matches('/') || (prefix.ends_with('/') && path.starts_with(prefix)))
        || path == "/v1.0/healthz/outbound"
}

async fn healthz(State(readiness): State<Readiness>) -> Response {
    if readiness.is_ready() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::NotReady { detail: "the sidecar is starting".to_owned() }.into_response()
    }
}

async fn metadata(State(core): State<Arc<MetadataCore>>) -> Response {
    axum::Json(core.metadata().to_json()).into_response()
}

/// Invocation routes: `/v1.0/invoke/{app-id}/method/{method…}` with any verb, or any path with a `dapr-app-id`
/// header (the method is then the whole path).
async fn invoke(State(invoker): State<Arc<Invoker>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let header = request.headers().get(headers::APP_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (target, raw_method) = match classify_fallback(&path, header.as_deref()) {
        Fallback::Invoke { target, raw_method } => (target, raw_method.to_owned()),
        Fallback::NoAppId => return ApiError::InvokeNoAppId.into_response(),
        Fallback::NotFound => return ApiError::NotFound.into_response(),
    };
    let (parts, body) = request.into_parts();
    match invoker.invoke(&target, &raw_method, parts, body).await {
        Ok(response) => response,
        Err(crate::error::InvokeError::UnsupportedVerb(verb)) => ApiError::UnsupportedVerb { verb }.into_response(),
        Err(error) => ApiError::Invoke { app_id: target, error }.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_spellings_never_invoke() {
        for path in [
            "/v1.0/healthz/",
            "//v1.0/healthz",
            "/v1.0/healthz//",
            "/v1.0/healthz/outbound/",
            "/V1.0/HEALTHZ/",
            "/v1.0/healthz/x",
            "/v1.0/healthzz",
        ] {
            assert_eq!(classify_fallback(path, Some("orders")), Fallback::NotFound, "{path}");
        }
        assert_eq!(
            classify_fallback("/orders", Some("orders")),
            Fallback::Invoke { target: "orders".into(), raw_method: "orders" }
        );
        assert_eq!(
            classify_fallback("/v1.0/invoke/orders/method/a/b", None),
            Fallback::Invoke { target: "orders".into(), raw_method: "a/b" }
        );
        assert_eq!(classify_fallback("/v1.0/invoke/orders", None), Fallback::NoAppId);
        assert_eq!(classify_fallback("/nothing", None), Fallback::NotFound);
    }
}
