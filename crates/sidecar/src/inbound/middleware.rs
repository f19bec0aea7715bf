//! `spec.appHttpPipeline` on the callee side: after access control and the identity headers, so a middleware
//! sees the request exactly as the app will (normalised path, `dapr-caller-app-id` from the verified identity, this
//! sidecar's own app token) and can never let through what the ACL refused. A refusal is the middleware's own
//! answer, returned like an app's answer (the caller's sidecar relays it unchanged), and audited here.
//!
//! HTTP calls to an HTTP app only, as in Dapr: gRPC proxying and `AppCallback/OnInvoke` are not wrapped (a
//! production sidecar refuses an `appHttpPipeline` with a gRPC app, `settings.rs`).

use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, FutureExt};
use ward_middleware::Pipeline;
use ward_policy::{Operation, PreparedInvocation};

use super::accept::CallerIdentity;
use super::{InboundRequest, InboundResponse};
use crate::audit::AuditSink;
use crate::error::InboundError;

#[derive(Clone)]
pub(crate) struct AppPipelineLayer {
    pub(crate) pipeline: Arc<ArcSwap<Pipeline>>,
    pub(crate) audit: AuditSink,
    pub(crate) app_id: Arc<str>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl<S> tower::Layer<S> for AppPipelineLayer {
    type Service = AppPipeline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AppPipeline { inner, step: self.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct AppPipeline<S> {
    inner: S,
    step: AppPipelineLayer,
}

impl<S> tower::Service<InboundRequest> for AppPipeline<S>
where
    S: tower::Service<InboundRequest, Response = InboundResponse, Error = InboundError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = InboundResponse;
    type Error = InboundError;
    type Future = BoxFuture<'static, Result<InboundResponse, InboundError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: InboundRequest) -> Self::Future {
        let pipeline = self.step.pipeline.load_full();
        let method = match request.extensions().get::<PreparedInvocation>().map(|p| &p.operation) {
            Some(Operation::Http(method)) if !pipeline.is_empty() => method.clone(),
            // Nothing configured, or a gRPC call: straight on.
            _ => return self.inner.call(request).boxed(),
        };
        // The middleware judges the path the app will be sent, not the invoke envelope.
        let target = match request.uri().query() {
            Some(query) => format!("{}?{query}", method.to_uri_path()),
            None => method.to_uri_path(),
        };
        if let Ok(uri) = target.parse::<http::Uri>() {
            *request.uri_mut() = uri;
        }
        let caller = request.extensions().get::<CallerIdentity>().and_then(|c| c.0.clone());
        let verb = request.method().clone();
        let path = request.uri().path().to_owned();
        let step = self.step.clone();
        let mut inner = self.inner.clone();
        async move {
            match pipeline.run(request).await {
                Ok(request) => inner.call(request).await,
                Err(refusal) => {
                    let caller = caller.map(|c| c.to_string());
                    let response = crate::middleware::refused(
                        &step.metrics,
                        &step.audit,
                        &step.app_id,
                        caller.as_deref(),
                        &verb,
                        &path,
                        refusal,
                    );
                    Ok(response)
                }
            }
        }
        .boxed()
    }
}
