//! The shape every synchronous inbound layer shares: look at (and possibly amend) the request, then either pass it
//! on or refuse with a typed [`InboundError`]. No boxing and no allocation per request: the future is the inner
//! service's own, or a ready refusal.

use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use super::{InboundRequest, InboundResponse};
use crate::error::InboundError;

/// One decision of the inbound stack.
pub(crate) trait Check: Clone + Send + Sync + 'static {
    fn check(&self, request: &mut InboundRequest) -> Result<(), InboundError>;
}

/// Builds [`Checked`] services around a [`Check`].
#[derive(Clone)]
pub(crate) struct CheckLayer<C>(pub C);

impl<C: Check, S> Layer<S> for CheckLayer<C> {
    type Service = Checked<C, S>;
    fn layer(&self, inner: S) -> Self::Service {
        Checked { check: self.0.clone(), inner }
    }
}

/// A service that runs its [`Check`] before the inner service.
#[derive(Clone)]
pub(crate) struct Checked<C, S> {
    check: C,
    inner: S,
}

impl<C, S> Service<InboundRequest> for Checked<C, S>
where
    C: Check,
    S: Service<InboundRequest, Response = InboundResponse, Error = InboundError>,
{
    type Response = InboundResponse;
    type Error = InboundError;
    type Future = Either<S::Future, Ready<Result<InboundResponse, InboundError>>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: InboundRequest) -> Self::Future {
        match self.check.check(&mut request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(err) => Either::Right(ready(Err(err))),
        }
    }
}
