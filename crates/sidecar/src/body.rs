//! Buffering a body, always bounded: the one helper every place that must hold a whole body uses (state and
//! secrets requests, `OnInvoke` data, gRPC `InvokeService` answers).

use bytes::Bytes;
use http_body::Body;

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadBodyError {
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the body failed: {0}")]
    Read(String),
}

/// Collects `body`, failing as soon as it grows past `limit` bytes (nothing more is buffered).
pub(crate) async fn read_limited<B>(body: B, limit: u64) -> Result<Bytes, ReadBodyError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if is_length_limit(err.as_ref()) => Err(ReadBodyError::TooLarge { limit }),
        Err(err) => Err(ReadBodyError::Read(crate::error::error_chain(err.as_ref()))),
    }
}

/// Whether `err` or any of its causes is a body length limit (a typed check through the source chain, so a limit
/// hit deep inside a client's error is still recognised).
pub(crate) fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A request body that, if dropped before its end (a refusal, an app that answered early), keeps reading and
/// discarding what the client still sends, up to `budget` bytes and [`DRAIN_DEADLINE`], on a task of its own.
///
/// Why: a refusal is a complete response, but if the unread body is dropped, HTTP/2 resets the stream while the
/// peer is still sending, and frames for reset streams count against h2's rapid-reset guard: after ~1000 refused
/// uploads the whole connection, shared with other calls, was closed ("too_many_internal_resets"). Draining lets the
/// stream end the way RFC 9113 §8.1 describes for an early response; past the budget the stream is reset with
/// `NO_ERROR` (the response is already sent), and real reset floods still trip the guard.
pub(crate) struct DrainOnDrop<B: Body + Send + Unpin + 'static> {
    inner: Option<B>,
    budget: u64,
}

/// How long a dropped body is drained at most.
pub(crate) const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

impl<B: Body + Send + Unpin + 'static> DrainOnDrop<B> {
    pub(crate) fn new(inner: B, budget: u64) -> Self {
        Self { inner: Some(inner), budget }
    }
}

impl<B: Body + Send + Unpin + 'static> Body for DrainOnDrop<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => std::pin::Pin::new(inner).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl<B: Body + Send + Unpin + 'static> Drop for DrainOnDrop<B> {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else { return };
        if inner.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let budget = self.budget;
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut inner).await {
                    if let Some(data) = frame.data_ref() {
                        read += bytes::Buf::remaining(data) as u64;
                        if read > budget {
                            break;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_DEADLINE, drain).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Item = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
    type ChannelBody = http_body_util::StreamBody<tokio_stream::wrappers::ReceiverStream<Item>>;

    fn channel_body() -> (tokio::sync::mpsc::Sender<Item>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        (tx, http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// A dropped, unfinished body keeps being read (so the client's stream can end normally), up to the budget.
    #[tokio::test]
    async fn a_dropped_body_is_drained_up_to_its_budget() {
        let (tx, body) = channel_body();
        drop(DrainOnDrop::new(body, 1000));
        for i in 0..10 {
            let sent = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                tx.send(Ok(http_body::Frame::data(Bytes::from(vec![0u8; 100])))),
            )
            .await;
            assert!(matches!(sent, Ok(Ok(()))), "frame {i} was not drained");
        }
        // Past the budget the drain stops and drops the body: the sender sees the stream gone.
        let mut closed = false;
        for _ in 0..5 {
            let sent = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                tx.send(Ok(http_body::Frame::data(Bytes::from(vec![0u8; 100])))),
            )
            .await;
            if matches!(sent, Ok(Err(_))) {
                closed = true;
                break;
            }
        }
        assert!(closed, "the drain must stop past its budget");
    }

    #[tokio::test]
    async fn bounded() {
        let body = http_body_util::Full::new(Bytes::from(vec![0u8; 10]));
        assert_eq!(read_limited(body.clone(), 10).await.unwrap().len(), 10);
        assert!(matches!(read_limited(body, 9).await, Err(ReadBodyError::TooLarge { limit: 9 })));
    }
}
