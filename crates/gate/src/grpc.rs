//! The gRPC adapter of the API-token check: a tower layer for tonic servers (or anything serving gRPC over
//! `http` types), using the same [`ApiTokens::check_grpc_metadata`] as everything else.
//!
//! Owned here: the `Unauthenticated` answer (a trailers-only response built by hand, so this crate does not depend
//! on tonic) with Dapr's `google.rpc.ErrorInfo` detail (`grpc-status-details-bin`: reason `Unauthorized`, domain
//! `dapr.io`, `http.code` and `http.error_message`), and removing the token from the metadata before the service
//! sees it. There are no exempt methods. The three protobuf messages of the detail are declared here with prost
//! (a handful of fields; no generated code or extra crate needed).
//!
//! Not owned here: the check itself (`tokens`), gRPC routing. The precise reason stays in ward's own log (response
//! extension [`TokenRejection`]); the client gets only Dapr's two texts.

use std::task::{Context, Poll};

use ::http::{HeaderValue, Request, Response, header};
use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::tokens::{ApiTokens, TokenRejection, strip_token};

/// The gRPC status code `Unauthenticated`.
pub const GRPC_UNAUTHENTICATED: &str = "16";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.ErrorInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(btree_map = "string, string", tag = "3")]
    metadata: std::collections::BTreeMap<String, String>,
}

/// Dapr's `http.error_message` for a refusal: whether a token was presented, never why a presented one failed.
fn error_message(rejection: &TokenRejection) -> &'static str {
    match rejection {
        TokenRejection::Missing => "missing api token in request metadata",
        _ => "authentication error: api token mismatch",
    }
}

/// The `grpc-status-details-bin` value for `detail` (base64 of a `google.rpc.Status` with one `ErrorInfo`).
fn status_details(detail: &str) -> HeaderValue {
    use base64::Engine as _;
    use prost::Message as _;
    let info = ErrorInfo {
        reason: "Unauthorized".to_owned(),
        domain: "dapr.io".to_owned(),
        metadata: [("http.code".to_owned(), "401".to_owned()), ("http.error_message".to_owned(), detail.to_owned())]
            .into_iter()
            .collect(),
    };
    let status = RpcStatus {
        code: 16,
        message: "Unauthorized".to_owned(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_owned(),
            value: info.encode_to_vec(),
        }],
    };
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A trailers-only gRPC answer: HTTP 200, `grpc-status: 16`, `grpc-message: Unauthorized` and Dapr's `ErrorInfo`
/// detail, the reason in the response extensions. `B::default()` must be an empty body (true of tonic's and axum's
/// bodies).
pub fn unauthenticated_response<B: Default>(rejection: TokenRejection) -> Response<B> {
    let mut response = Response::new(B::default());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static(GRPC_UNAUTHENTICATED));
    headers.insert("grpc-message", HeaderValue::from_static("Unauthorized"));
    headers.insert("grpc-status-details-bin", status_details(error_message(&rejection)));
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
        use base64::Engine as _;
        use prost::Message as _;
        assert_eq!(headers.get("grpc-status").unwrap(), "16");
        assert_eq!(headers.get("grpc-message").unwrap(), "Unauthorized");
        assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "application/grpc");
        let details = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(headers.get("grpc-status-details-bin").expect("Dapr's ErrorInfo detail"))
            .unwrap();
        let status = RpcStatus::decode(details.as_slice()).unwrap();
        assert_eq!((status.code, status.message.as_str()), (16, "Unauthorized"));
        assert_eq!(status.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
        let info = ErrorInfo::decode(status.details[0].value.as_slice()).unwrap();
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("Unauthorized", "dapr.io"));
        assert_eq!(info.metadata["http.code"], "401");
        let message = info.metadata["http.error_message"].as_str();
        assert!(
            ["missing api token in request metadata", "authentication error: api token mismatch"].contains(&message),
            "{message}"
        );
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
