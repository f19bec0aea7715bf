//! The HTTP adapter of the API-token check: a tower layer for the sidecar's HTTP API (axum 0.8).
//!
//! Owned here: applying the only exemption (`GET /v1.0/healthz` and `GET /v1.0/healthz/outbound`, matched exactly
//! as routed, decided by `ward_policy::is_token_exempt`: CVE-2023-37918, issue 12 row 3), the 401 answer, removing
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
/// `/v1.0/healthz/outbound` as the router matches them (`path` is the raw URI path, no query). No trimming, no
/// decoding, no dot-segment resolution: `/v1.0/healthz/`, `//v1.0/healthz` and the like need the token (issue 12
/// row 3). Computed from [`ward_policy::classify_public`], the same classification that decides routing and the
/// API allow list, so the exemption cannot cover a path that routes anywhere else.
pub fn is_exempt(method: &Method, path: &str) -> bool {
    ward_policy::is_token_exempt(method.as_str(), path)
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

    /// Issue 12 row 3: only the routed spellings are exempt; every other spelling needs the token.
    #[test]
    fn exemption_table() {
        let cases = [
            (Method::GET, "/v1.0/healthz", true),
            (Method::GET, "/v1.0/healthz/outbound", true),
            (Method::GET, "/v1.0/healthz/", false),
            (Method::GET, "//v1.0/healthz", false),
            (Method::GET, "//v1.0/healthz//", false),
            (Method::GET, "/v1.0//healthz", false),
            (Method::GET, "/v1.0/./healthz", false),
            (Method::GET, "/v1.0/healthz/outbound/", false),
            (Method::GET, "/v1.0/healthz%2F", false),
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

    /// The exemption and the policy classification agree with a real axum router shaped like the sidecar's public
    /// API (same route templates, a fallback for everything else): what axum routes to a health handler is exactly
    /// what `classify_public` calls health, what axum routes to state/secrets/metadata is classified so, and
    /// everything classified as an invocation reached the fallback.
    #[tokio::test]
    async fn classification_matches_the_router() {
        use axum::routing::{any, get, post};
        use tower::ServiceExt;
        use ward_policy::{PublicRequest, classify_public};

        let label = |l: &'static str| move || async move { ([("x-route", l)], l) };
        let router = axum::Router::new()
            .route("/v1.0/healthz", get(label("healthz")))
            .route("/v1.0/healthz/outbound", get(label("outbound")))
            .route("/v1.0/metadata", get(label("metadata")))
            .route("/v1.0/metadata/{key}", axum::routing::put(label("metadata")))
            .route("/v1.0/state/{store}", post(label("state")))
            .route("/v1.0/state/{store}/bulk", post(label("state")))
            .route("/v1.0/state/{store}/transaction", post(label("state")))
            .route("/v1.0/state/{store}/{key}", get(label("state")).delete(label("state")))
            .route("/v1.0/secrets/{store}/bulk", get(label("secrets")))
            .route("/v1.0/secrets/{store}/{name}", get(label("secrets")))
            .route("/v1.0-alpha1/ward/provenance/jwks", get(label("jwks")))
            .route("/unused/{*rest}", any(label("unused")))
            .fallback(label("fallback"));
        let paths = [
            "/v1.0/healthz",
            "/v1.0/healthz/",
            "//v1.0/healthz",
            "/v1.0//healthz",
            "/v1.0/./healthz",
            "/v1.0/healthz%2F",
            "/v1.0%2Fhealthz",
            "/V1.0/HEALTHZ",
            "/v1.0/Healthz",
            "/v1.0/healthz?x=1",
            "/v1.0/healthz/outbound",
            "/v1.0/healthz/outbound/",
            "/v1.0/healthz/x",
            "/v1.0/healthzz",
            "/v1.0/metadata",
            "/v1.0/metadata/",
            "/v1.0/metadata/k",
            "/v1.0/metadata/k/x",
            "/v1.0/state/s",
            "/v1.0/state/s/",
            "/v1.0/state/",
            "/v1.0/state/s/k",
            "/v1.0/state/s/k/",
            "/v1.0/state/s/k/x",
            "/v1.0/state/s/bulk",
            "/v1.0/state/s/transaction",
            "/v1.0/state/./k",
            "/v1.0/state/%2F/k",
            "/v1.0/secrets/v/n",
            "/v1.0/secrets/v/bulk",
            "/v1.0/secrets/v",
            "/v1.0/secrets//n",
            "/v1.0/secrets//bulk",
            "/v1.0/state//k",
            "/v1.0/state//bulk",
            "/v1.0/state//",
            "/v1.0/state//transaction/",
            "/v1.0/invoke/a/method/b",
            "/v1.0-alpha1/ward/provenance/jwks",
            "/v1.0-alpha1/ward/provenance/jwks/",
            "/v1.0-alpha1/ward/provenance",
            "/orders",
            "/",
        ];
        let methods = [Method::GET, Method::HEAD, Method::POST, Method::DELETE, Method::PUT];
        for path in paths {
            for method in &methods {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .header("dapr-app-id", "orders")
                    .body(Body::empty())
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                let uri_path = request.uri().path().to_owned();
                let response = router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
                // The label travels in a header so HEAD answers (no body) still say which handler ran.
                let routed = if response.status() == StatusCode::METHOD_NOT_ALLOWED {
                    "405".to_owned()
                } else {
                    response.headers().get("x-route").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned()
                };
                let routed = routed.as_str();
                let class = classify_public(method.as_str(), &uri_path, Some("orders"));
                let agrees = matches!(
                    (&class, routed),
                    (PublicRequest::Healthz, "healthz")
                        | (PublicRequest::HealthzOutbound, "outbound")
                        | (PublicRequest::Metadata | PublicRequest::MetadataSet { .. }, "metadata")
                        | (PublicRequest::State(_), "state")
                        | (PublicRequest::Secrets(_), "secrets")
                        | (PublicRequest::ProvenanceJwks, "jwks")
                        | (PublicRequest::MethodNotAllowed { .. }, "405")
                        | (
                            PublicRequest::Invoke { .. } | PublicRequest::InvokeMissingAppId | PublicRequest::NotFound,
                            "fallback"
                        )
                );
                assert!(agrees, "{method} {path}: axum routed {routed:?}, classified {class:?}");
                if class.is_invocation() {
                    assert!(!is_exempt(method, &uri_path), "{method} {path}");
                }
                let exempt = is_exempt(method, &uri_path);
                assert_eq!(
                    exempt,
                    *method == Method::GET && matches!(routed, "healthz" | "outbound"),
                    "{method} {path}"
                );
            }
        }
    }
}
