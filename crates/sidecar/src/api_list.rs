//! `spec.api` allow/deny lists as one tower layer with a responder per protocol: the HTTP API judges the classified
//! request (`ward_policy::classify_public`: invocation is the `invoke` API in either form) and answers a plain 404
//! as daprd; the gRPC API judges the full method and answers `Unimplemented` ("requested endpoint is not
//! available"). The list is read through the watcher's handle, so a reload applies to live connections.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use futures_util::future::{Either, Ready, ready};
use ward_policy::ApiAllowList;

use crate::headers;

/// How one protocol asks the list and what a refusal looks like.
pub(crate) trait ApiListProtocol: Send + Sync + 'static {
    fn allows<B>(list: &ApiAllowList, request: &http::Request<B>) -> bool;
    fn refusal<R: Default>() -> http::Response<R>;
}

/// The public HTTP API.
pub(crate) struct Http;
/// The public gRPC API.
pub(crate) struct Grpc;

/// Marks a response as `spec.api`'s refusal (for the metrics), invisible on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiListRefusal;

impl ApiListProtocol for Http {
    fn allows<B>(list: &ApiAllowList, request: &http::Request<B>) -> bool {
        if !list.restricts_http() {
            return true;
        }
        let header = request.headers().get(headers::APP_ID).and_then(|v| v.to_str().ok());
        list.allows_http(&ward_policy::classify_public(request.method().as_str(), request.uri().path(), header))
    }

    fn refusal<R: Default>() -> http::Response<R> {
        let mut response = http::Response::new(R::default());
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        response.extensions_mut().insert(ApiListRefusal);
        response
    }
}

impl ApiListProtocol for Grpc {
    fn allows<B>(list: &ApiAllowList, request: &http::Request<B>) -> bool {
        list.is_grpc_allowed(request.uri().path())
    }

    fn refusal<R: Default>() -> http::Response<R> {
        let mut response = http::Response::new(R::default());
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", http::HeaderValue::from_static("12"));
        headers.insert("grpc-message", http::HeaderValue::from_static("requested endpoint is not available"));
        response
    }
}

/// Builds [`ApiList`] services.
pub(crate) struct ApiListLayer<P> {
    list: Arc<ArcSwap<ApiAllowList>>,
    protocol: PhantomData<fn() -> P>,
}

impl<P> ApiListLayer<P> {
    pub(crate) fn new(list: Arc<ArcSwap<ApiAllowList>>) -> Self {
        Self { list, protocol: PhantomData }
    }
}

impl<P> Clone for ApiListLayer<P> {
    fn clone(&self) -> Self {
        Self::new(self.list.clone())
    }
}

impl<S, P> tower::Layer<S> for ApiListLayer<P> {
    type Service = ApiList<S, P>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiList { inner, list: self.list.clone(), protocol: PhantomData }
    }
}

/// Passes allowed requests on; answers the others with the protocol's refusal.
pub(crate) struct ApiList<S, P> {
    inner: S,
    list: Arc<ArcSwap<ApiAllowList>>,
    protocol: PhantomData<fn() -> P>,
}

impl<S: Clone, P> Clone for ApiList<S, P> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), list: self.list.clone(), protocol: PhantomData }
    }
}

impl<S, P, B, R> tower::Service<http::Request<B>> for ApiList<S, P>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>, Error = Infallible>,
    P: ApiListProtocol,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<http::Response<R>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if P::allows(&self.list.load(), &request) {
            Either::Left(self.inner.call(request))
        } else {
            Either::Right(ready(Ok(P::refusal())))
        }
    }
}
