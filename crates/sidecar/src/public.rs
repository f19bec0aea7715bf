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
use ward_policy::{ApiAllowList, PublicRequest};

use crate::api_list::ApiListLayer;
use crate::components::Components;
use crate::error::ApiError;
use crate::headers;
use crate::invoke::Invoker;
use crate::metadata::MetadataCore;
use crate::state::StateCore;

/// Whether the sidecar is ready (set once everything started, cleared at shutdown), and whether its app has been
/// seen listening. As daprd, `/v1.0/healthz` is ready only once the app is; `/v1.0/healthz/outbound` (what the SDKs
/// wait for before calling out) is ready as soon as the sidecar is.
#[derive(Clone, Default)]
pub(crate) struct Readiness {
    sidecar: Arc<AtomicBool>,
    app_seen: Arc<AtomicBool>,
    /// Cleared while `--enable-app-health-check` finds the app failing (`app_health.rs`).
    app_unhealthy: Arc<AtomicBool>,
    /// Set until every declarative and programmatic subscription is active (`pubsub::subscriptions`).
    subscriptions_pending: Arc<AtomicBool>,
    /// `host:port` of the app, when it has one.
    app: Option<Arc<str>>,
}

impl Readiness {
    pub(crate) fn new(app: Option<String>) -> Self {
        Self { app: app.map(Arc::from), ..Self::default() }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.sidecar.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self, ready: bool) {
        self.sidecar.store(ready, Ordering::Release)
    }

    pub(crate) fn set_subscriptions_pending(&self, pending: bool) {
        self.subscriptions_pending.store(pending, Ordering::Release)
    }

    pub(crate) fn app_healthy(&self) -> bool {
        !self.app_unhealthy.load(Ordering::Acquire)
    }

    pub(crate) fn set_app_healthy(&self, healthy: bool) {
        self.app_unhealthy.store(!healthy, Ordering::Release)
    }

    /// Whether the app accepts connections; checked on demand until it has once (a health check costs one
    /// loopback connect while the app is starting, nothing after).
    async fn app_is_up(&self) -> bool {
        let Some(app) = &self.app else { return true };
        if self.app_seen.load(Ordering::Acquire) {
            return true;
        }
        let connect = tokio::net::TcpStream::connect(app.as_ref());
        let up = matches!(tokio::time::timeout(std::time::Duration::from_millis(250), connect).await, Ok(Ok(_)));
        if up {
            self.app_seen.store(true, Ordering::Release);
        }
        up
    }
}

/// The public API's state: one handle per core; each handler extracts only its own. Behind one `Arc`, because
/// axum clones the router's state for every request (one reference count instead of one per core).
#[derive(Clone)]
pub(crate) struct ApiState(Arc<ApiHandles>);

impl ApiState {
    pub(crate) fn new(handles: ApiHandles) -> Self {
        Self(Arc::new(handles))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiHandles;

    fn deref(&self) -> &ApiHandles {
        &self.0
    }
}

/// The cores behind [`ApiState`].
pub(crate) struct ApiHandles {
    pub(crate) invoker: Arc<Invoker>,
    pub(crate) state: Arc<StateCore>,
    pub(crate) components: Arc<Components>,
    pub(crate) metadata: Arc<MetadataCore>,
    pub(crate) readiness: Readiness,
    pub(crate) api_list: Arc<ArcSwap<ApiAllowList>>,
    /// The provenance issuer, for its JWKS; `None` when provenance is off.
    pub(crate) provenance: Option<Arc<crate::provenance::ProvenanceIssuer>>,
    pub(crate) pubsub: Arc<crate::pubsub::PubSubCore>,
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
impl FromRef<ApiState> for Arc<crate::pubsub::PubSubCore> {
    fn from_ref(s: &ApiState) -> Self {
        s.pubsub.clone()
    }
}
impl FromRef<ApiState> for Readiness {
    fn from_ref(s: &ApiState) -> Self {
        s.readiness.clone()
    }
}

/// The public router with its layers.
pub(crate) fn router(
    state: ApiState,
    tokens: ward_gate::ApiTokens,
    api_log: ward_gate::ApiLogHandle,
    pipeline: crate::middleware::ApiPipeline,
) -> Router {
    let api_list = state.api_list.clone();
    Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
        .route("/v1.0/metadata", get(metadata))
        .route("/v1.0/metadata/{key}", axum::routing::put(set_metadata))
        .route(ward_policy::routing::PROVENANCE_JWKS_PATH, get(provenance_jwks))
        .merge(crate::state_api::router())
        .merge(crate::secrets_api::router())
        .merge(crate::pubsub::api::router())
        .fallback(invoke)
        .with_state(state)
        // One `Router::layer` for the whole stack: axum wraps every route in each one it is given and clones that
        // wrapping per request, so separate calls cost a boxed clone and a future apiece on every call. Outermost
        // the API log (inside the router, where the matched route is known for `obfuscateURLs`), then the API
        // token, then `httpPipeline` (after the token), then the `spec.api` lists.
        .layer(
            tower::ServiceBuilder::new()
                .layer(ward_gate::ApiLogLayer::reloadable(api_log))
                .layer(ward_gate::ApiTokenLayer::new(tokens))
                .layer(pipeline)
                .layer(ApiListLayer::<crate::api_list::Http>::new(api_list)),
        )
}

/// The health-only router of `--dapr-public-port` (Dapr's public port): no API token, nothing but health.
pub(crate) fn health_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
        .with_state(readiness)
}

async fn healthz(State(readiness): State<Readiness>) -> Response {
    if !readiness.is_ready() {
        return ApiError::NotReady { detail: "the sidecar is starting".to_owned() }.into_response();
    }
    if !readiness.app_is_up().await {
        return ApiError::NotReady { detail: "the app is not listening yet".to_owned() }.into_response();
    }
    if !readiness.app_healthy() {
        return ApiError::NotReady { detail: "the app is failing its health checks".to_owned() }.into_response();
    }
    if readiness.subscriptions_pending.load(Ordering::Acquire) {
        return ApiError::NotReady { detail: "pub/sub subscriptions are not active yet".to_owned() }.into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn healthz_outbound(State(readiness): State<Readiness>) -> Response {
    if readiness.is_ready() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::NotReady { detail: "the sidecar is starting".to_owned() }.into_response()
    }
}

async fn metadata(State(core): State<Arc<MetadataCore>>) -> Response {
    axum::Json(core.metadata().to_json()).into_response()
}

/// `PUT /v1.0/metadata/{key}`: the body is the value (Dapr's API); shown under `extended`.
async fn set_metadata(
    State(core): State<Arc<MetadataCore>>,
    axum::extract::Path(key): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let value = String::from_utf8_lossy(&body).into_owned();
    match core.set(key, value) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => ApiError::Malformed { detail: err.to_string() }.into_response(),
    }
}

/// `GET /v1.0-alpha1/ward/provenance/jwks`: the public keys the app verifies its `ward-provenance` tokens with
/// (issue 15). Behind the API token like every route; 404 when provenance is off.
async fn provenance_jwks(State(state): State<ApiState>) -> Response {
    let Some(issuer) = &state.provenance else { return ApiError::NotFound.into_response() };
    match issuer.jwks() {
        Ok(jwks) => axum::Json(jwks).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "provenance JWKS unavailable");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Invocation routes: `/v1.0/invoke/{app-id}/method/{method…}` with any verb, or any path with a `dapr-app-id`
/// header (the method is then the whole path). Nothing under `/v1.0/healthz` is ever an invocation (the
/// classification refuses it: that is where the token exemption lives, CVE-2023-37918's class).
async fn invoke(State(invoker): State<Arc<Invoker>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let header = request.headers().get(headers::APP_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (target, raw_method) = match ward_policy::classify_public(request.method().as_str(), &path, header.as_deref()) {
        PublicRequest::Invoke { target, raw_method, .. } => (target.into_owned(), raw_method.to_owned()),
        PublicRequest::InvokeMissingAppId => return ApiError::InvokeNoAppId.into_response(),
        _ => return ApiError::NotFound.into_response(),
    };
    let (parts, body) = request.into_parts();
    match invoker.invoke(&target, &raw_method, parts, body).await {
        Ok(response) => response,
        Err(crate::error::InvokeError::UnsupportedVerb(verb)) => ApiError::UnsupportedVerb { verb }.into_response(),
        Err(error) => ApiError::Invoke { app_id: target, error }.into_response(),
    }
}
