//! One measure of header size for every listener and for ward's own outbound calls, and what a listener answers
//! when a request is over [`crate::ListenerLimits::max_header_bytes`].
//!
//! Owns: the measure ([`request_header_size`], [`response_header_size`]: HTTP/2's header-list size, RFC 9113
//! §6.5.2, applied to HTTP/1.1 too so that a request measures the same on both protocols), and the
//! [`HeaderRefusal`] hook. Does not own what the refusal says: the caller of [`crate::Server::with_header_refusal`]
//! builds the answer (the sidecar's error map does, with a Dapr error body).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, Uri};

/// What HTTP/2 adds per header field for its bookkeeping (RFC 9113 §6.5.2, from RFC 7541 §4.1).
pub const FIELD_OVERHEAD: usize = 32;

/// The size of a request's header list: every field's name + value + 32, plus `:method` and `:path` (the
/// pseudo-headers a request always carries; `:scheme`/`:authority` are left out because HTTP/1.1 carries the
/// authority as the `host` field, which is counted).
pub fn request_header_size(method: &Method, uri: &Uri, headers: &HeaderMap) -> usize {
    let path = uri.path_and_query().map_or(1, |p| p.as_str().len());
    let pseudo = (":method".len() + method.as_str().len() + FIELD_OVERHEAD) + (":path".len() + path + FIELD_OVERHEAD);
    pseudo.saturating_add(fields_size(headers))
}

/// The size of a response's header list: every field plus `:status`.
pub fn response_header_size(headers: &HeaderMap) -> usize {
    (":status".len() + 3 + FIELD_OVERHEAD).saturating_add(fields_size(headers))
}

fn fields_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .fold(0usize, |sum, (name, value)| sum.saturating_add(name.as_str().len() + value.len() + FIELD_OVERHEAD))
}

/// A request whose headers are over the listener's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeadersTooLarge {
    /// The request's header size, as [`request_header_size`] measures it.
    pub size: usize,
    /// The listener's [`crate::ListenerLimits::max_header_bytes`].
    pub limit: usize,
}

impl HeadersTooLarge {
    /// For tests of a [`HeaderRefusal`] outside this crate (the type is `non_exhaustive`).
    pub fn new(size: usize, limit: usize) -> Self {
        Self { size, limit }
    }
}

/// Builds the answer to a request over the header limit. The request's service is never called; the answer
/// should be complete (status, headers, a small body).
pub type HeaderRefusal = Arc<dyn Fn(HeadersTooLarge) -> Response<Bytes> + Send + Sync>;

/// The answer when the listener was given no [`HeaderRefusal`]: a bare 431.
pub(crate) fn bare_431(_: HeadersTooLarge) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_as_http2_does() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "a:1".parse().unwrap());
        headers.insert("x-big", "v".repeat(100).parse().unwrap());
        let uri: Uri = "/v1.0/invoke/b/method/m?q=1".parse().unwrap();
        let expected = (7 + 3 + 32) + (5 + 27 + 32) + (4 + 3 + 32) + (5 + 100 + 32);
        assert_eq!(request_header_size(&Method::GET, &uri, &headers), expected);
        // An absolute-form URI (a proxy request) counts its path, not the authority twice.
        let absolute: Uri = "http://a:1/v1.0/invoke/b/method/m?q=1".parse().unwrap();
        assert_eq!(request_header_size(&Method::GET, &absolute, &headers), expected);
        assert_eq!(response_header_size(&HeaderMap::new()), 7 + 3 + 32);
    }
}
