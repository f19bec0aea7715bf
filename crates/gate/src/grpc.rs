//! The gRPC adapter of the API-token check: a tower layer for tonic servers (or anything serving gRPC over
//! `http` types), using the same [`ApiTokens::check_grpc_metadata`] as everything else.
//!
//! Owned here: the `Unauthenticated` answer (a trailers-only response built by hand, so this crate does not depend
//! on tonic) and removing the token from the metadata before the service sees it. There are no exempt methods.
//!
//! Not owned here: the check itself (`tokens`), gRPC routing, error details. Dapr also attaches a
//! `google.rpc.ErrorInfo` detail (`grpc-status-details-bin`); ward sends only code and message, which is what
//! clients act on, and keeps the reason for its own log (response extension [`TokenRejection`]).

use std::task::{Context, Poll};

use ::http::{HeaderValue, Request, Response, header};
use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::tokens::{ApiTokens, TokenRejection, strip_token};

/// The gRPC status code `Unauthenticated`.
pub const GRPC_UNAUTHENTICATED: &str = "16";

/// A trailers-only gRPC answer: HTTP 200, `grpc-status: 16`, `grpc-message: Unauthorized` (Dapr's message), the
/// reason in the response extensions. `B::default()` must be an empty body (true of tonic's and axum's bodies).
pub fn unauthenticated_response<B: Default>(rejection: TokenRejection) -> Response<B> {
    let mut response = Response::new(B::default());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static(GRPC_UNAUTHENTICATED));
    headers.insert("grpc-message", HeaderValue::from_static("Unauthorized"));
    response.extensions_mut().insert(rejection);
    response
}

/// Builds [`GrpcApiToken`] services.
#[derive(Debug, Clone)]
pub struct GrpcApiTokenLayer {
    tokens: ApiTokens,
}

impl GrpcApiTokenLayer {
    /// Checks every call against `tokens`.
    pub fn new(tokens: ApiTokens) -> Self {
        if tokens.is_enabled() {
            tracing::info!("Enabled token authentication on gRPC server");
        }
        Self { tokens }
    }
}

impl<S> Layer<S> for GrpcApiTokenLayer {
    type Service = GrpcApiToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcApiToken { inner, tokens: self.tokens.clone() }
    }
}

/// Refuses gRPC calls without a valid `dapr-api-token` metadata entry; strips it from the rest.
#[derive(Debug, Clone)]
pub struct GrpcApiToken<S> {
    inner: S,
    tokens: ApiTokens,
}

impl<S, B, ResBody> Service<Request<B>> for GrpcApiToken<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<ResBody>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.tokens.check_grpc_metadata(request.headers()) {
            Ok(()) => {
                strip_token(request.headers_mut());
                Either::Right(self.inner.call(request))
            }
            Err(rejection) => Either::Left(ready(Ok(unauthenticated_response(rejection)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ::http::HeaderMap;
    use tower::ServiceExt;

    use super::*;
    use crate::API_TOKEN_HEADER;

    fn service(
        calls: Arc<AtomicUsize>,
    ) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future: Send> + Clone {
        let inner = tower::service_fn(move |req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let seen = req.headers().contains_key(API_TOKEN_HEADER);
            async move { Ok::<_, Infallible>(Response::new(format!("seen-token={seen}"))) }
        });
        GrpcApiTokenLayer::new(ApiTokens::from_env_value(Some("grpc-secret")).unwrap()).layer(inner)
    }

    fn call_with(headers: &[(&'static str, &str)]) -> Request<()> {
        let mut request = Request::post("/dapr.proto.runtime.v1.Dapr/GetState").body(()).unwrap();
        for (name, value) in headers {
            request.headers_mut().append(*name, HeaderValue::from_str(value).unwrap());
        }
        request
    }

    fn assert_unauthenticated(headers: &HeaderMap) {
        assert_eq!(headers.get("grpc-status").unwrap(), "16");
        assert_eq!(headers.get("grpc-message").unwrap(), "Unauthorized");
        assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "application/grpc");
    }

    #[tokio::test]
    async fn grpc_layer_table() {
        type Case = (&'static str, Vec<(&'static str, &'static str)>, Option<TokenRejection>);
        let cases: [Case; 5] = [
            ("no token", vec![], Some(TokenRejection::Missing)),
            ("wrong token", vec![("dapr-api-token", "nope")], Some(TokenRejection::Mismatch)),
            (
                "two values",
                vec![("dapr-api-token", "grpc-secret"), ("dapr-api-token", "grpc-secret")],
                Some(TokenRejection::Malformed),
            ),
            ("right token", vec![("dapr-api-token", "grpc-secret")], None),
            ("right token, mixed-case name", vec![("Dapr-Api-Token", "grpc-secret")], None),
        ];
        for (name, headers, expected) in cases {
            let calls = Arc::new(AtomicUsize::new(0));
            let response = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                service(calls.clone()).oneshot(call_with(&headers)),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(response.status(), 200, "{name}");
            match expected {
                Some(rejection) => {
                    assert_unauthenticated(response.headers());
                    assert_eq!(response.extensions().get::<TokenRejection>(), Some(&rejection), "{name}");
                    assert_eq!(calls.load(Ordering::SeqCst), 0, "{name}: inner service must not run");
                }
                None => {
                    assert_eq!(response.body(), "seen-token=false", "{name}: token must be stripped");
                    assert_eq!(calls.load(Ordering::SeqCst), 1, "{name}");
                }
            }
        }
    }
}
