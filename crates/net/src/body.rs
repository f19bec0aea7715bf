//! An opt-in bound on a stalled request body: [`ReadTimeoutBody`] fails a body whose reader has waited longer than
//! a timeout for the next frame.
//!
//! The listener's idle timer never cuts a request in flight, so a client that sends headers and then trickles
//! (or never sends) the body holds its connection for as long as the handler waits. Where a body is expected to
//! flow (an HTTP upload, a unary gRPC call), wrap it with this; the handler's read then fails with
//! [`BodyReadTimeout`] and the request ends. Do not wrap bodies that may legitimately pause (client- or
//! bidirectional-streaming gRPC calls, long-poll uploads): the timer measures the client's silence, not its
//! speed. Time spent by the handler elsewhere (not polling the body) is never counted.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::conn::BoxError;

/// The body's reader waited `timeout` for the next frame and none came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no request body data arrived for {timeout:?}")]
pub struct BodyReadTimeout {
    pub timeout: Duration,
}

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyReadTimeout`] when a read waits longer than `timeout` for the next frame.
    pub struct ReadTimeoutBody<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        // Armed while a read waits; disarmed by every frame.
        #[pin]
        wait: Option<Sleep>,
    }
}

impl<B> ReadTimeoutBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self { inner, timeout, wait: None }
    }
}

impl<B> Body for ReadTimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            this.wait.set(None);
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if this.wait.is_none() {
            this.wait.set(Some(tokio::time::sleep(*this.timeout)));
        }
        match this.wait.as_mut().as_pin_mut().map(|wait| wait.poll(cx)) {
            Some(Poll::Ready(())) => {
                this.wait.set(None);
                Poll::Ready(Some(Err(Box::new(BodyReadTimeout { timeout: *this.timeout }))))
            }
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A body that yields the scripted frames, each after its delay.
    struct Scripted {
        frames: std::collections::VecDeque<(Duration, &'static [u8])>,
        wait: Option<Pin<Box<Sleep>>>,
    }

    impl Body for Scripted {
        type Data = &'static [u8];
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
            let Some(&(delay, data)) = self.frames.front() else { return Poll::Ready(None) };
            let wait = self.wait.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
            self.frames.pop_front();
            Poll::Ready(Some(Ok(Frame::data(data))))
        }
    }

    async fn read_all(body: impl Body<Data = &'static [u8], Error = BoxError>) -> Result<usize, BoxError> {
        let mut body = std::pin::pin!(body);
        let mut total = 0;
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            total += frame?.into_data().map_or(0, <[u8]>::len);
        }
        Ok(total)
    }

    fn scripted(delays_ms: &[u64]) -> Scripted {
        Scripted { frames: delays_ms.iter().map(|ms| (Duration::from_millis(*ms), &b"ab"[..])).collect(), wait: None }
    }

    const BOUND: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_body_that_keeps_flowing_is_not_cut_however_long_it_lasts() {
        // 1.2 s of body, six timeouts long, a frame every 60 ms.
        let body = ReadTimeoutBody::new(scripted(&[60; 20]), Duration::from_millis(200));
        let total = tokio::time::timeout(BOUND, read_all(body)).await.unwrap();
        assert_eq!(total.unwrap(), 40);
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_with_the_timeout() {
        let timeout = Duration::from_millis(200);
        let body = ReadTimeoutBody::new(scripted(&[20, 20, 2_000, 20]), timeout);
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(BOUND, read_all(body)).await.unwrap().unwrap_err();
        assert_eq!(err.downcast_ref::<BodyReadTimeout>(), Some(&BodyReadTimeout { timeout }));
        assert!(started.elapsed() < Duration::from_millis(1_500), "failed only after {:?}", started.elapsed());
    }
}
