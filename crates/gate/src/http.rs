//! The HTTP adapter of the API-token check: a tower layer for the sidecar's HTTP API (axum 0.8).
//!
//! Owned here: the only exemption (`GET /v1.0/healthz` and `GET /v1.0/healthz/outbound`, matched exactly; the
//! query string and every other method are ignored for that purpose: CVE-2023-37918), the 401 answer, removing
//! the token header before the request goes further, and recording the rejection reason in the response
//! extensions for the API logger. The check itself is [`ApiTokens::check_headers`], shared with gRPC.
//!
//! Not owned here: routing, API allow/deny lists, ACLs.
//!
//! The 401 body is Dapr's JSON error shape (`{"errorCode":"ERR_UNAUTHORIZED","message":"invalid api token"}`)
//! rather than daprd's `text/plain` `invalid api token`: every other ward error is JSON, and Dapr SDKs only look at
//! the status code.

use std::task::{Context, Poll};

use ::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use axum::body::Body;
use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::tokens::{ApiTokens, TokenRejection, strip_token};

/// The exact 401 body.
pub const UNAUTHORIZED_BODY: &str = r#"{"errorCode":"ERR_UNAUTHORIZED","message":"invalid api token"}"#;

/// Whether a request is exempt from the API token: only `GET` on exactly `/v1.0/healthz` or
/// `/v1.0/healthz/outbound`, after trimming leading and trailing `/` (as daprd does). `path` is the raw URI path
/// (no query); no decoding, no dot-segment resolution: anything not literally equal is checked.
pub fn is_exempt(method: &Method, path: &str) -> bool {
    method == Method::GET && is_health_path(path)
}

pub(crate) fn is_health_path(path: &str) -> bool {
    matches!(path.trim_matches('/'), "v1.0/healthz" | "v1.0/healthz/outbound")
}

/// The 401 answer, with the reason attached as a response extension (never in the body).
pub fn unauthorized_response(rejection: TokenRejection) -> Response<Body> {
    let mut response = Response::new(Body::from(UNAUTHORIZED_BODY));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.extensions_mut().insert(rejection);
    response
}

/// Builds [`ApiToken`] services.
#[derive(Debug, Clone)]
pub struct ApiTokenLayer {
    tokens: ApiTokens,
}

impl ApiTokenLayer {
    /// Checks every request against `tokens` (which may be reloaded while running).
    pub fn new(tokens: ApiTokens) -> Self {
        if tokens.is_enabled() {
            // daprd's wording, so existing log searches keep working.
            tracing::info!("Enabled token authentication on HTTP server");
        }
        Self { tokens }
    }
}

impl<S> Layer<S> for ApiTokenLayer {
    type Service = ApiToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiToken { inner, tokens: self.tokens.clone() }
    }
}

/// Refuses HTTP API requests without a valid `dapr-api-token` (401), strips the header from the rest.
#[derive(Debug, Clone)]
pub struct ApiToken<S> {
    inner: S,
    tokens: ApiTokens,
}

impl<S, B> Service<Request<B>> for ApiToken<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let verdict = if is_exempt(request.method(), request.uri().path()) {
            Ok(())
        } else {
            self.tokens.check_headers(request.headers())
        };
        match verdict {
            Ok(()) => {
                // Also on exempt routes: the token never travels past this layer.
                strip_token(request.headers_mut());
                Either::Right(self.inner.call(request))
            }
            // The inner service was polled ready and is not called: fine for the services axum and tonic stack
            // here (readiness reserves nothing that outlives the next call).
            Err(rejection) => Either::Left(ready(Ok(unauthorized_response(rejection)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemption_table() {
        let cases = [
            (Method::GET, "/v1.0/healthz", true),
            (Method::GET, "/v1.0/healthz/", true),
            (Method::GET, "/v1.0/healthz/outbound", true),
            (Method::GET, "//v1.0/healthz//", true),
            (Method::HEAD, "/v1.0/healthz", false),
            (Method::POST, "/v1.0/healthz", false),
            (Method::GET, "/v1.0/healthzz", false),
            (Method::GET, "/v1.0/healthz/../state/x", false),
            (Method::GET, "/v1.0/healthz%2F..", false),
            (Method::GET, "/v1.0/healthz/outbound/x", false),
            (Method::GET, "/v1.0/state/x/healthz", false),
            (Method::GET, "/V1.0/healthz", false),
            (Method::GET, "/v1.0/metadata", false),
            (Method::GET, "/healthz", false),
        ];
        for (method, path, expected) in cases {
            assert_eq!(is_exempt(&method, path), expected, "{method} {path}");
        }
    }
}
