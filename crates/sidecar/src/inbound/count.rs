//! Counts every call another sidecar makes to this one, and the status it got (Dapr's
//! `dapr_runtime_service_invocation_req_recv_total` / `res_sent_total`). Outermost, so refusals count too. The
//! caller label is the verified app id, or `_unverified`: a caller cannot choose label values.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};

use super::accept::CallerIdentity;
use super::{InboundRequest, InboundResponse};
use crate::metrics::Metrics;

#[derive(Clone)]
pub(crate) struct CountLayer(pub(crate) Arc<Metrics>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Count<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Count { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct Count<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<InboundRequest> for Count<S>
where
    S: tower::Service<InboundRequest, Response = InboundResponse, Error = Infallible> + Send,
    S::Future: Send + 'static,
{
    type Response = InboundResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<InboundResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: InboundRequest) -> Self::Future {
        if !self.metrics.recording() {
            return self.inner.call(request).boxed();
        }
        let caller = request
            .extensions()
            .get::<CallerIdentity>()
            .and_then(|c| c.0.as_ref().and_then(|id| id.dapr_identity().ok().map(|d| d.app_id.to_owned())))
            .unwrap_or_else(|| "_unverified".to_owned());
        let metrics = self.metrics.clone();
        let future = self.inner.call(request);
        async move {
            let response = future.await?;
            metrics.invocation_received(&caller, response.status().as_u16());
            Ok(response)
        }
        .boxed()
    }
}
