//! The two middleware pipelines of a Configuration, resolved against the loaded middleware components, and the
//! public API's use of one of them.
//!
//! - `spec.httpPipeline` wraps the public HTTP API (every call the app makes to its sidecar over HTTP) except the
//!   exact health routes, which are exempt like they are from the API token, so a bearer middleware there cannot
//!   break health probes. It runs after the API token check ([`ApiPipelineService`]).
//! - `spec.appHttpPipeline` wraps every HTTP call this sidecar makes to its app: on the callee side of service
//!   invocation, after access control (`inbound/middleware.rs`).
//!
//! Both are HTTP only, as in Dapr: the gRPC API and a gRPC app channel are not wrapped. So that no configured
//! control goes unenforced, a production sidecar with an `appHttpPipeline` and `--app-protocol grpc` refuses to
//! start (`settings.rs`).
//!
//! Owns: resolving handlers (a handler naming a component that is not loaded for this app, or one of another
//! type, is a load error naming file, resource and field — Dapr skips it), and auditing a refusal. A refusal
//! answers exactly what the middleware wrote (status, headers, body); on the callee side it reaches the caller
//! unchanged, like the app's own answer. A reload builds new pipelines with the registry and swaps both at once;
//! a bad reload keeps the old ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use ward_config::{ConfigError, Configuration, HandlerSpec, ResourceId};
use ward_middleware::{Handler, Pipeline, PipelineRefusal};
use ward_policy::AuditEvent;

use crate::audit::AuditSink;
use crate::components::MiddlewareEntry;

/// Both pipelines as built for one registry.
#[derive(Clone, Default)]
pub(crate) struct Pipelines {
    pub(crate) api: Arc<Pipeline>,
    pub(crate) app: Arc<Pipeline>,
}

/// The live pipelines; a reload swaps both.
#[derive(Clone)]
pub(crate) struct PipelineHandles {
    pub(crate) api: Arc<ArcSwap<Pipeline>>,
    pub(crate) app: Arc<ArcSwap<Pipeline>>,
}

impl PipelineHandles {
    pub(crate) fn new(pipelines: &Pipelines) -> Self {
        PipelineHandles {
            api: Arc::new(ArcSwap::new(pipelines.api.clone())),
            app: Arc::new(ArcSwap::new(pipelines.app.clone())),
        }
    }

    pub(crate) fn install(&self, pipelines: &Pipelines) {
        self.api.store(pipelines.api.clone());
        self.app.store(pipelines.app.clone());
    }
}

/// Resolves both pipelines of `configuration` against the loaded middleware.
pub(crate) fn build_pipelines(
    configuration: Option<&Configuration>,
    loaded: &BTreeMap<String, MiddlewareEntry>,
) -> Result<Pipelines, ConfigError> {
    let Some(configuration) = configuration else { return Ok(Pipelines::default()) };
    Ok(Pipelines {
        api: Arc::new(pipeline(configuration, "spec.httpPipeline", &configuration.http_pipeline, loaded)?),
        app: Arc::new(pipeline(configuration, "spec.appHttpPipeline", &configuration.app_http_pipeline, loaded)?),
    })
}

fn pipeline(
    configuration: &Configuration,
    section: &str,
    specs: &[HandlerSpec],
    loaded: &BTreeMap<String, MiddlewareEntry>,
) -> Result<Pipeline, ConfigError> {
    let invalid = |field: String, message: String| ConfigError::Invalid {
        path: configuration.source.clone(),
        resource: ResourceId::configuration(&configuration.name),
        field,
        message,
    };
    let mut handlers = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let field = format!("{section}.handlers[{i}]");
        let Some(entry) = loaded.get(&spec.name) else {
            return Err(invalid(
                format!("{field}.name"),
                format!(
                    "no middleware component named {:?} is loaded for this app (missing, out of its scopes, denied, \
                     or not a middleware); a pipeline handler is never skipped",
                    spec.name
                ),
            ));
        };
        if !spec.type_.trim().eq_ignore_ascii_case(entry.component_type()) {
            return Err(invalid(
                format!("{field}.type"),
                format!(
                    "the handler's type {:?} is not the type of component {:?} ({})",
                    spec.type_,
                    spec.name,
                    entry.component_type()
                ),
            ));
        }
        if let Some(version) = spec.version.as_deref().map(str::trim).filter(|v| !v.is_empty())
            && !version.eq_ignore_ascii_case(entry.version())
        {
            return Err(invalid(
                format!("{field}.version"),
                format!("the handler's version {version:?} is not the component's ({})", entry.version()),
            ));
        }
        handlers.push(Handler::new(
            spec.name.clone(),
            entry.component_type().to_owned(),
            field,
            entry.middleware.clone(),
        ));
    }
    Ok(Pipeline::new(handlers))
}

/// Records a refusal's audit event and returns the middleware's answer.
pub(crate) fn refused(
    metrics: &crate::metrics::Metrics,
    audit: &AuditSink,
    app_id: &str,
    caller: Option<&str>,
    method: &http::Method,
    path: &str,
    refusal: PipelineRefusal,
) -> Response {
    let rule = format!("{} {} ({})", refusal.field, refusal.handler, refusal.component_type);
    metrics.authz("middleware", false, &refusal.component_type);
    tracing::debug!(rule = %rule, reason = %refusal.refusal.reason, path, "request refused by middleware");
    let event = AuditEvent::for_middleware(
        crate::runtime::now_rfc3339(),
        caller,
        app_id,
        path,
        Some(method.as_str()),
        &rule,
        &refusal.refusal.reason,
    );
    // Refused either way; a lost event is counted and logged by the sink.
    let _ = audit.record(event);
    refusal.refusal.response.map(Body::from)
}

/// What the public API's pipeline step uses.
#[derive(Clone)]
pub(crate) struct ApiPipeline {
    pub(crate) pipeline: Arc<ArcSwap<Pipeline>>,
    pub(crate) audit: AuditSink,
    pub(crate) app_id: Arc<str>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// `spec.httpPipeline` around the public HTTP API, inside the API token layer. A plain tower layer rather than
/// `axum::middleware::from_fn`, so the common case (no pipeline, or a health probe) passes the request straight to
/// the inner service: no boxed future and no boxed clone of the inner service per request.
impl<S> tower::Layer<S> for ApiPipeline {
    type Service = ApiPipelineService<S>;

    fn layer(&self, inner: S) -> ApiPipelineService<S> {
        ApiPipelineService { step: self.clone(), inner }
    }
}

#[derive(Clone)]
pub(crate) struct ApiPipelineService<S> {
    step: ApiPipeline,
    inner: S,
}

impl<S> tower::Service<Request> for ApiPipelineService<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        S::Future,
        futures_util::future::BoxFuture<'static, Result<Response, std::convert::Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let pipeline = self.step.pipeline.load_full();
        if pipeline.is_empty() || ward_policy::is_token_exempt(request.method().as_str(), request.uri().path()) {
            return futures_util::future::Either::Left(self.inner.call(request));
        }
        // The service made ready takes this request; its clone waits for the next one (tower's usual swap).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let step = self.step.clone();
        futures_util::future::Either::Right(Box::pin(async move {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            match pipeline.run(request).await {
                Ok(request) => inner.call(request).await,
                Err(refusal) => Ok(refused(&step.metrics, &step.audit, &step.app_id, None, &method, &path, refusal)),
            }
        }))
    }
}
