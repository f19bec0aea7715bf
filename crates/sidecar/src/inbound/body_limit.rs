//! Bounded bodies: a declared length over `--max-body-size` is refused before anything else reads the body; a body
//! without a declared length streams through a counting limit, so the app never receives more than the limit.

use axum::body::Body;

use super::InboundRequest;
use super::check::Check;
use crate::error::InboundError;

#[derive(Clone)]
pub(crate) struct BodyLimit {
    pub(crate) limit: u64,
}

impl Check for BodyLimit {
    fn check(&self, request: &mut InboundRequest) -> Result<(), InboundError> {
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limit) {
            return Err(InboundError::BodyTooLarge { limit: self.limit });
        }
        let body = std::mem::replace(request.body_mut(), Body::empty());
        *request.body_mut() =
            Body::new(http_body_util::Limited::new(body, usize::try_from(self.limit).unwrap_or(usize::MAX)));
        Ok(())
    }
}
