//! Dapr's HTTP middleware for ward's two pipelines (`spec.httpPipeline` around the app's calls to its sidecar,
//! `spec.appHttpPipeline` around the sidecar's calls to its app): `middleware.http.bearer` ([`bearer`]),
//! `middleware.http.opa` ([`opa`]) and `middleware.http.ratelimit` ([`ratelimit`]).
//!
//! Owns: building one middleware from a component's type, version and resolved metadata ([`build`]), a pipeline
//! of named handlers run in order ([`Pipeline`]), and what a refusal answers ([`Refusal`]: status, headers, body,
//! exactly as Dapr's middleware answers) plus a reason for the audit log that never contains a token.
//!
//! Does not own: which component a handler names or whether it may be loaded (the sidecar resolves handlers
//! against its component registry and refuses a missing one), auditing, or where a pipeline sits in a request
//! path. The three middleware here act on the request only; a pipeline runs handlers in the listed order, so
//! the first handler is the outermost (Dapr's `buildChain`).
//!
//! Failing closed: a middleware that cannot decide (an OPA evaluation error, an unreachable JWKS with nothing
//! cached) refuses the request. Dapr skips middleware that failed to load; ward's sidecar refuses to start.

pub mod bearer;
pub mod opa;
pub mod ratelimit;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use ward_components::{ComponentError, ComponentMetadata};

/// A request as the pipelines see it.
pub type Request = http::Request<axum::body::Body>;

pub use ward_components::MIDDLEWARE_TYPES;

/// One HTTP middleware: passes the request on (possibly changed) or refuses it.
pub trait Middleware: Send + Sync + 'static {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Request, Refusal>>;
}

/// What a refusing middleware answers, and why.
#[derive(Debug)]
pub struct Refusal {
    /// The answer the client gets, unchanged (status, headers, body), as Dapr's middleware writes it.
    pub response: http::Response<Bytes>,
    /// Why, for the audit log and the sidecar's log. Never a token or a claim value.
    pub reason: Cow<'static, str>,
}

impl Refusal {
    /// A `text/plain` answer whose body is the status's reason phrase (Go's `http.StatusText`), Dapr's shape for
    /// bearer and OPA refusals.
    pub fn status_text(status: http::StatusCode, reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::text(status, status.canonical_reason().unwrap_or(""), reason)
    }

    /// A `text/plain; charset=utf-8` answer with `body`.
    pub fn text(status: http::StatusCode, body: &str, reason: impl Into<Cow<'static, str>>) -> Refusal {
        let mut response = http::Response::new(Bytes::copy_from_slice(body.as_bytes()));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
        Refusal { response, reason: reason.into() }
    }
}

/// What building a middleware needs from the sidecar.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The largest body the OPA middleware buffers with `readBody: "true"` (the sidecar's `--max-body-size`).
    pub max_body_bytes: usize,
}

/// Builds the middleware of type `component_type` (matched case-insensitively, as Dapr) from resolved metadata.
/// Async because `middleware.http.bearer` fetches its keys (and the issuer's discovery document) now: a failure
/// is an error naming the metadata field, and the sidecar refuses to start.
pub async fn build(
    component_type: &str,
    metadata: &ComponentMetadata,
    options: &BuildOptions,
) -> Result<Arc<dyn Middleware>, ComponentError> {
    match component_type.trim().to_ascii_lowercase().as_str() {
        "middleware.http.bearer" => Ok(Arc::new(bearer::Bearer::new(metadata).await?)),
        "middleware.http.opa" => Ok(Arc::new(opa::Opa::new(metadata, options)?)),
        "middleware.http.ratelimit" => Ok(Arc::new(ratelimit::RateLimit::new(metadata)?)),
        other => Err(ComponentError::new(
            "spec.type",
            format!(
                "unknown middleware type {other:?} (this build supports: {})",
                MIDDLEWARE_TYPES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// One entry of a pipeline: the component it runs and where the Configuration named it.
pub struct Handler {
    /// The component's `metadata.name`.
    pub name: String,
    /// The component's type, e.g. `middleware.http.bearer`.
    pub component_type: String,
    /// Where the handler is listed, e.g. `spec.appHttpPipeline.handlers[0]`.
    pub field: String,
    middleware: Arc<dyn Middleware>,
    refused: AtomicU64,
}

impl Handler {
    pub fn new(name: String, component_type: String, field: String, middleware: Arc<dyn Middleware>) -> Handler {
        Handler { name, component_type, field, middleware, refused: AtomicU64::new(0) }
    }

    /// How many requests this handler refused since it was built.
    pub fn refused_count(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").field("name", &self.name).field("type", &self.component_type).finish()
    }
}

/// A refusal by one handler of a pipeline.
#[derive(Debug)]
pub struct PipelineRefusal {
    /// The refusing component's name.
    pub handler: String,
    /// Its type.
    pub component_type: String,
    /// Where the Configuration lists it.
    pub field: String,
    pub refusal: Refusal,
}

/// Handlers run in the listed order; the first refusal ends the request.
#[derive(Debug, Default)]
pub struct Pipeline {
    handlers: Vec<Handler>,
}

impl Pipeline {
    pub fn new(handlers: Vec<Handler>) -> Pipeline {
        Pipeline { handlers }
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    pub fn handlers(&self) -> &[Handler] {
        &self.handlers
    }

    /// Runs `request` through every handler.
    pub async fn run(&self, mut request: Request) -> Result<Request, PipelineRefusal> {
        for handler in &self.handlers {
            match handler.middleware.handle(request).await {
                Ok(next) => request = next,
                Err(refusal) => {
                    handler.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(PipelineRefusal {
                        handler: handler.name.clone(),
                        component_type: handler.component_type.clone(),
                        field: handler.field.clone(),
                        refusal,
                    });
                }
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tag(&'static str);

    impl Middleware for Tag {
        fn handle(&self, mut request: Request) -> BoxFuture<'_, Result<Request, Refusal>> {
            Box::pin(async move {
                if request.headers().contains_key("stop") {
                    return Err(Refusal::status_text(http::StatusCode::FORBIDDEN, self.0));
                }
                let seen = request.headers().get("order").map(|v| v.to_str().unwrap_or("").to_owned());
                let order = format!("{}{}", seen.unwrap_or_default(), self.0);
                request.headers_mut().insert("order", order.parse().expect("header"));
                Ok(request)
            })
        }
    }

    fn pipeline() -> Pipeline {
        let handler =
            |name: &'static str| Handler::new(name.into(), "test".into(), format!("h[{name}]"), Arc::new(Tag(name)));
        Pipeline::new(vec![handler("a"), handler("b")])
    }

    #[tokio::test]
    async fn handlers_run_in_listed_order_and_the_first_refusal_ends_the_request() {
        let passed = pipeline().run(Request::new(axum::body::Body::empty())).await.expect("passes");
        assert_eq!(passed.headers()["order"], "ab");

        let p = pipeline();
        let mut stopped = Request::new(axum::body::Body::empty());
        stopped.headers_mut().insert("stop", "1".parse().expect("header"));
        let refused = p.run(stopped).await.expect_err("refused");
        assert_eq!(refused.handler, "a");
        assert_eq!(refused.refusal.response.status(), 403);
        assert_eq!(refused.refusal.response.body().as_ref(), b"Forbidden");
        assert_eq!(p.handlers()[0].refused_count(), 1);
        assert_eq!(p.handlers()[1].refused_count(), 0);
    }
}
