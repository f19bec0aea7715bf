//! The callee's server span for a call from another sidecar: its parent is the `traceparent` the caller's sidecar
//! sent over the mTLS connection (the caller's client span), so both sidecars' spans share one trace. Outermost in
//! the inbound stack, so refused calls are spans too; the rest of the stack (and the app channel's span) runs
//! inside it. Present only when tracing is on. The trace context decides nothing (no check reads it).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt as _};
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt as _;

use super::accept::CallerIdentity;
use super::method::{INTERNAL_GRPC_PREFIX, INTERNAL_INVOKE_PREFIX};
use super::{InboundRequest, InboundResponse};
use crate::otel::{Tracing, propagation};

#[derive(Clone)]
pub(crate) struct TraceLayer {
    pub(crate) tracing: Arc<Tracing>,
    pub(crate) app_id: Arc<str>,
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct Trace<S> {
    inner: S,
    layer: TraceLayer,
}

impl<S> tower::Service<InboundRequest> for Trace<S>
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
        let path = request.uri().path();
        let (kind, method) = match (path.strip_prefix(INTERNAL_INVOKE_PREFIX), path.strip_prefix(INTERNAL_GRPC_PREFIX))
        {
            (Some(method), _) => ("http", method),
            (None, Some(method)) => ("grpc", method),
            (None, None) => ("other", path),
        };
        let mut attributes = vec![
            KeyValue::new("rpc.system", kind),
            KeyValue::new("rpc.method", crate::otel::span_path(method)),
            KeyValue::new("http.request.method", request.method().as_str().to_owned()),
        ];
        // The verified caller (a SPIFFE ID, public by design), never anything the caller merely claims.
        if let Some(caller) = request.extensions().get::<CallerIdentity>().and_then(|c| c.0.as_ref()) {
            attributes.push(KeyValue::new("ward.caller", caller.to_string()));
        }
        let cx = self.layer.tracing.start_remote(
            format!("CallLocal/{}", self.layer.app_id),
            opentelemetry::trace::SpanKind::Server,
            propagation::extract(request.headers()),
            attributes,
        );
        let future = {
            let _guard = cx.clone().attach();
            self.inner.call(request)
        };
        async move {
            let response = future.with_context(cx.clone()).await?;
            crate::otel::end_with_status(&cx, response.status().as_u16());
            Ok(response)
        }
        .boxed()
    }
}
