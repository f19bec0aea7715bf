//! A request body that can be sent a second time, for the one retry an invocation gets when its first attempt never
//! reached the callee's app: the connection was refused (nothing sent), or the callee's sidecar said the stream was
//! not processed (`REFUSED_STREAM`, or a `GOAWAY` whose last processed stream is below it; RFC 9113 §8.7).
//!
//! The transport reads the first attempt's body as usual; what it read is kept (up to [`REPLAY_LIMIT`]) so that
//! [`Replayable::again`] can hand out the same bytes from the start, followed by whatever was not read yet. A body
//! larger than the limit that was already partly read cannot be replayed: that call fails as before.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// How much of a body already read is kept for a second attempt. Invocation bodies are mostly small; a larger one
/// streams through without being kept (and without a retry once part of it was read).
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// The caller's handle on a body being sent.
pub(crate) struct Replayable {
    shared: Arc<Mutex<State>>,
}

struct State {
    /// The frames the transport read, in order, while they total at most [`REPLAY_LIMIT`] bytes of data.
    read: Vec<Frame<Bytes>>,
    read_bytes: usize,
    /// More than the limit was read: the frames are gone.
    over_limit: bool,
    /// What the transport has not read yet; `None` once taken for the second attempt.
    rest: Option<Body>,
}

impl Replayable {
    /// Wraps `body`; the returned body is the first attempt's.
    pub(crate) fn new(body: Body) -> (Self, Body) {
        let shared =
            Arc::new(Mutex::new(State { read: Vec::new(), read_bytes: 0, over_limit: false, rest: Some(body) }));
        (Self { shared: shared.clone() }, Body::new(FirstAttempt { shared }))
    }

    /// The body again, from its first byte, once; `None` when it cannot be (more than the limit was read, or it was
    /// taken already). The first attempt's body ends where it is.
    pub(crate) fn again(&self) -> Option<Body> {
        let mut state = lock(&self.shared);
        if state.over_limit {
            return None;
        }
        let rest = state.rest.take()?;
        let read = std::mem::take(&mut state.read).into();
        Some(Body::new(Replay { read, rest }))
    }
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A copy of a frame (`Frame` itself is not `Clone`): data shares its bytes, trailers are copied.
fn copy(frame: &Frame<Bytes>) -> Option<Frame<Bytes>> {
    if let Some(data) = frame.data_ref() {
        return Some(Frame::data(data.clone()));
    }
    frame.trailers_ref().map(|trailers| Frame::trailers(trailers.clone()))
}

/// The body the transport reads on the first attempt: the rest of the body, each frame noted on its way.
struct FirstAttempt {
    shared: Arc<Mutex<State>>,
}

impl http_body::Body for FirstAttempt {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut state = lock(&self.shared);
        let Some(rest) = state.rest.as_mut() else {
            // Taken back for a second attempt: this one sends nothing more.
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && !state.over_limit
        {
            state.read_bytes = state.read_bytes.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if state.read_bytes > REPLAY_LIMIT {
                state.over_limit = true;
                state.read = Vec::new();
            } else if let Some(copy) = copy(frame) {
                state.read.push(copy);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.shared).rest.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.shared).rest.as_ref().map(http_body::Body::size_hint).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// The second attempt's body: what the first attempt read, then the rest.
struct Replay {
    read: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let read: usize = self.read.iter().filter_map(Frame::data_ref).map(Bytes::len).sum();
        let rest = self.rest.size_hint();
        let read = u64::try_from(read).unwrap_or(u64::MAX);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(read));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(read));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn chunked(chunks: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c)))).collect();
        Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn never_read_the_whole_body_comes_back() {
        let (replayable, first) = Replayable::new(Body::from("payload"));
        assert_eq!(http_body::Body::size_hint(&first).exact(), Some(7), "the hint is the body's");
        drop(first);
        let again = replayable.again().expect("replayable");
        assert_eq!(again.collect().await.unwrap().to_bytes(), "payload");
        assert!(replayable.again().is_none(), "once");
    }

    #[tokio::test]
    async fn partly_read_the_same_bytes_come_back_from_the_start() {
        let (replayable, mut first) = Replayable::new(chunked(&[b"one,", b"two,", b"three"]));
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "one,");
        let again = replayable.again().expect("replayable");
        assert!(first.frame().await.is_none(), "the first attempt sends nothing more");
        assert_eq!(again.collect().await.unwrap().to_bytes(), "one,two,three");
    }

    #[tokio::test]
    async fn a_body_read_past_the_limit_is_not_replayed() {
        let big = vec![b'x'; REPLAY_LIMIT + 1];
        let (replayable, first) = Replayable::new(Body::from(big));
        assert_eq!(first.collect().await.unwrap().to_bytes().len(), REPLAY_LIMIT + 1);
        assert!(replayable.again().is_none());

        let exact = vec![b'x'; REPLAY_LIMIT];
        let (replayable, first) = Replayable::new(Body::from(exact));
        assert_eq!(first.collect().await.unwrap().to_bytes().len(), REPLAY_LIMIT);
        let again = replayable.again().expect("at the limit: kept");
        assert_eq!(again.collect().await.unwrap().to_bytes().len(), REPLAY_LIMIT);
    }
}
