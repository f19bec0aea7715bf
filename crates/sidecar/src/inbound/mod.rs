//! The callee side of service invocation: the internal port other sidecars call. Each step is one layer, in this
//! order (outermost first); each either passes the request on or refuses it with a typed
//! [`crate::error::InboundError`]:
//!
//! ```text
//! accept           the verified peer identity (mTLS certificate; development marker only in development)
//!                  goes into the request extensions; nothing else may set it            (accept.rs, per connection)
//! trace            (tracing on) the server span, child of the caller sidecar's `traceparent`         (trace.rs)
//! respond          the one place an error becomes an answer; refusals before the ACL are audited here (respond.rs)
//! normalise        the method, once: `PreparedInvocation` into the extensions; bad paths, unknown verbs and
//!                  `dapr.proto.*` services on the proxy path are refused                              (method.rs)
//! body limit       `--max-body-size`, declared or streamed                                         (body_limit.rs)
//! access control   `accessControl` on the verified caller + normalised operation; one audit event      (acl.rs)
//! capabilities     `spec.ward.capabilities`: an applying route's requirements must be held; one audit event
//!                  when a route applies                                                        (capability.rs)
//! MCP tool rules   `spec.ward.mcp`: each JSON-RPC message at the endpoint judged for the caller; denied calls
//!                  answered by the sidecar, `tools/list` answers filtered                                (mcp.rs)
//! identity headers strip the caller's `dapr-caller-*` / token / `ward-provenance`; set them from the verified
//!                  identity                                                                      (identity.rs)
//! app pipeline     `spec.appHttpPipeline` middleware on HTTP calls; a refusal is its own answer  (middleware.rs)
//! provenance       sign this request's `ward-provenance` token (when enabled), once every check passed
//!                                                                                              (provenance.rs)
//! audit barrier    wait until the ACL's audit line is handed to the OS (group commit)        (audit_barrier.rs)
//! concurrency      `--app-max-concurrency` calls in flight to the app; beyond, refused (429)  (concurrency.rs)
//! app channel      HTTP | AppCallback/OnInvoke | gRPC proxy, chosen once at start                  (app_channel.rs)
//! ```

pub(crate) mod accept;
pub(crate) mod acl;
pub(crate) mod app_channel;
pub(crate) mod audit_barrier;
pub(crate) mod body_limit;
pub(crate) mod capability;
pub(crate) mod check;
pub(crate) mod concurrency;
pub(crate) mod count;
pub(crate) mod identity;
pub(crate) mod mcp;
pub(crate) mod method;
pub(crate) mod middleware;
pub(crate) mod provenance;
pub(crate) mod respond;
pub(crate) mod trace;

use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use tower::{Service, ServiceBuilder};
use ward_identity::SpiffeId;
use ward_policy::{AccessControl, Capabilities};

use self::accept::AcceptMode;
use self::acl::AccessControlCheck;
use self::app_channel::AppChannel;
use self::body_limit::BodyLimit;
use self::check::CheckLayer;
use self::identity::IdentityHeaders;
use self::method::NormaliseMethod;
use self::respond::RespondLayer;
use crate::audit::AuditSink;

pub(crate) type InboundRequest = http::Request<Body>;
pub(crate) type InboundResponse = http::Response<Body>;

/// Exactly what the inbound stack uses, and nothing more.
#[derive(Clone)]
pub(crate) struct InboundHandles {
    pub(crate) app_id: Arc<str>,
    pub(crate) accept: AcceptMode,
    pub(crate) acl: Arc<ArcSwap<AccessControl>>,
    /// `spec.ward.capabilities`, swapped by the watcher like the ACL.
    pub(crate) capabilities: Arc<ArcSwap<Capabilities>>,
    /// Signs the provenance token; `None` when `spec.ward.provenance.enabled` is off.
    pub(crate) provenance: Option<Arc<crate::provenance::ProvenanceIssuer>>,
    pub(crate) audit: AuditSink,
    pub(crate) max_body_size: u64,
    pub(crate) app_token: ward_gate::AppToken,
    pub(crate) app_channel: AppChannel,
    /// `--app-max-concurrency`.
    pub(crate) app_permits: Option<Arc<tokio::sync::Semaphore>>,
    /// `spec.ward.mcp`, swapped on reload.
    pub(crate) mcp: Arc<arc_swap::ArcSwapOption<ward_policy::mcp::McpPolicy>>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// `spec.appHttpPipeline`, swapped on reload.
    pub(crate) app_pipeline: Arc<ArcSwap<ward_middleware::Pipeline>>,
    /// The app's subscription routes, which invocation reaches only through an explicit ACL operation.
    pub(crate) subscription_routes: Arc<ArcSwap<std::collections::HashSet<String>>>,
    /// Set when tracing makes spans.
    pub(crate) tracing: Option<Arc<crate::otel::Tracing>>,
}

/// The callee stack, top to bottom. Order matters: identity before anything judges; normalisation before the ACL
/// (the string judged is the string delivered); the ACL before any header reaches the app.
pub(crate) fn stack(
    handles: &InboundHandles,
) -> impl Service<InboundRequest, Response = http::Response<Body>, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    let protocol = NormaliseMethod {
        app_protocol: if handles.app_channel.speaks_grpc() {
            ward_policy::AppProtocol::Grpc
        } else {
            ward_policy::AppProtocol::Http
        },
    };
    ServiceBuilder::new()
        // The server span (tracing on only): outermost, so it times and sees every outcome.
        .option_layer(
            handles.tracing.clone().map(|tracing| self::trace::TraceLayer { tracing, app_id: handles.app_id.clone() }),
        )
        // Dapr's received/sent counters, for every outcome.
        .layer(self::count::CountLayer(handles.metrics.clone()))
        // Errors → answers (and audit of early refusals): outermost, so it sees every refusal below.
        .layer(RespondLayer { audit: handles.audit.clone(), app_id: handles.app_id.clone() })
        // Normalise the method once.
        .layer(CheckLayer(protocol))
        // Bounded bodies.
        .layer(CheckLayer(BodyLimit { limit: handles.max_body_size }))
        // accessControl, audited.
        .layer(CheckLayer(AccessControlCheck {
            acl: handles.acl.clone(),
            audit: handles.audit.clone(),
            app_id: handles.app_id.clone(),
            metrics: handles.metrics.clone(),
            subscription_routes: handles.subscription_routes.clone(),
        }))
        // Capabilities per route, audited (after the ACL allowed the call).
        .layer(CheckLayer(self::capability::CapabilityCheck {
            capabilities: handles.capabilities.clone(),
            audit: handles.audit.clone(),
            app_id: handles.app_id.clone(),
            metrics: handles.metrics.clone(),
        }))
        // MCP tool rules, per JSON-RPC message at the server's endpoint.
        .layer(self::mcp::McpLayer {
            policy: handles.mcp.clone(),
            audit: handles.audit.clone(),
            app_id: handles.app_id.clone(),
            max_body_size: handles.max_body_size,
            metrics: handles.metrics.clone(),
        })
        // Identity headers and this sidecar's own app token; the caller's copies are removed.
        .layer(CheckLayer(IdentityHeaders { app_id: handles.app_id.clone(), app_token: handles.app_token.clone() }))
        // appHttpPipeline: sees what the app will see; refusals are its own answers.
        .layer(self::middleware::AppPipelineLayer {
            pipeline: handles.app_pipeline.clone(),
            audit: handles.audit.clone(),
            app_id: handles.app_id.clone(),
            metrics: handles.metrics.clone(),
        })
        // This request's provenance token, once every check passed (the caller's copy was stripped above).
        .layer(CheckLayer(self::provenance::ProvenanceToken { issuer: handles.provenance.clone() }))
        // Audit, then forward: wait until the ACL's line for this call is written.
        .layer(self::audit_barrier::AuditBarrierLayer)
        // `--app-max-concurrency`: calls beyond the bound are refused (429), not queued.
        .layer(self::concurrency::ConcurrencyLimitLayer(handles.app_permits.clone()))
        .service(handles.app_channel.clone())
}

/// The per-connection entry: sets the caller identity (accept), then runs the stack.
pub(crate) fn connection_service<S>(
    stack: S,
    mode: AcceptMode,
    peer: Option<Arc<SpiffeId>>,
    drain_budget: u64,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send
where
    S: Service<InboundRequest, Response = http::Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static,
{
    hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        // A refused request's unread body is drained, not reset (see `DrainOnDrop`).
        let mut request = request.map(|body| Body::new(crate::body::DrainOnDrop::new(body, drain_budget)));
        accept::identify(&mode, peer.as_ref(), &mut request);
        let mut stack = stack.clone();
        stack.call(request)
    })
}

#[cfg(test)]
mod tests;
