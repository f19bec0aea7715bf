//! `--app-max-concurrency`: at most N calls in flight to the app. A call beyond the bound is refused at once
//! (`AppBusy`: 429 for the caller's app) rather than queued, so a slow app sheds load instead of piling up
//! requests in the sidecar. The permit is held until the app's answer head arrives.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::Semaphore;

use super::{InboundRequest, InboundResponse};
use crate::error::InboundError;

#[derive(Clone)]
pub(crate) struct ConcurrencyLimitLayer(pub(crate) Option<Arc<Semaphore>>);

impl<S> tower::Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit { inner, permits: self.0.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct ConcurrencyLimit<S> {
    inner: S,
    permits: Option<Arc<Semaphore>>,
}

impl<S> tower::Service<InboundRequest> for ConcurrencyLimit<S>
where
    S: tower::Service<InboundRequest, Response = InboundResponse, Error = InboundError>,
    S::Future: Send + 'static,
{
    type Response = InboundResponse;
    type Error = InboundError;
    type Future = futures_util::future::Either<S::Future, BoxFuture<'static, Result<InboundResponse, InboundError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: InboundRequest) -> Self::Future {
        let Some(permits) = &self.permits else {
            return futures_util::future::Either::Left(self.inner.call(request));
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let call = self.inner.call(request);
                futures_util::future::Either::Right(
                    async move {
                        let answer = call.await;
                        drop(permit);
                        answer
                    }
                    .boxed(),
                )
            }
            Err(_) => {
                futures_util::future::Either::Right(futures_util::future::ready(Err(InboundError::AppBusy)).boxed())
            }
        }
    }
}
