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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded() {
        let body = http_body_util::Full::new(Bytes::from(vec![0u8; 10]));
        assert_eq!(read_limited(body.clone(), 10).await.unwrap().len(), 10);
        assert!(matches!(read_limited(body, 9).await, Err(ReadBodyError::TooLarge { limit: 9 })));
    }
}
