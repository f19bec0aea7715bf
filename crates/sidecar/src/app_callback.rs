//! The app channel for `--app-protocol grpc`: a service invocation is delivered to the app as
//! `dapr.proto.runtime.v1.AppCallback/OnInvoke` (HTTP/2 without TLS on loopback), with this sidecar's
//! `APP_API_TOKEN` and the verified caller identity in the metadata, and the answer comes back as HTTP.
//!
//! Authorization has already happened (internal.rs); this module only translates.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

use crate::grpc_api::pb::common::v1 as common;
use crate::headers;
use crate::internal::peer_error;
use crate::runtime::Shared;

fn verb(method: &http::Method) -> i32 {
    use common::http_extension::Verb;
    (match *method {
        http::Method::GET => Verb::Get,
        http::Method::HEAD => Verb::Head,
        http::Method::POST => Verb::Post,
        http::Method::PUT => Verb::Put,
        http::Method::DELETE => Verb::Delete,
        http::Method::CONNECT => Verb::Connect,
        http::Method::OPTIONS => Verb::Options,
        http::Method::TRACE => Verb::Trace,
        http::Method::PATCH => Verb::Patch,
        _ => Verb::None,
    }) as i32
}

/// gRPC status → the HTTP status Dapr answers with (`pkg/messaging/v1/util.go`, inverted).
fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::AlreadyExists | tonic::Code::Aborted => StatusCode::CONFLICT,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Delivers one invocation (already authorized; headers already hold this sidecar's token and the verified
/// identity) to the app's `OnInvoke`.
pub async fn on_invoke(shared: &Shared, method: &str, request: http::Request<Body>) -> Response {
    let Some(mut client) = shared.app_callback() else {
        return peer_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unavailable",
            "the app has no port configured".to_owned(),
        );
    };
    let (parts, body) = request.into_parts();
    let data = match crate::state_api::read_body(shared, body).await {
        Ok(bytes) => bytes,
        Err(err) => return err.into_response(),
    };
    let content_type =
        parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut call = tonic::Request::new(common::InvokeRequest {
        method: method.to_owned(),
        data: Some(prost_types::Any { type_url: String::new(), value: data.to_vec() }),
        content_type,
        http_extension: Some(common::HttpExtension {
            verb: verb(&parts.method),
            querystring: parts.uri.query().unwrap_or_default().to_owned(),
        }),
    });
    for name in [headers::API_TOKEN, headers::CALLER_APP_ID, headers::CALLER_NAMESPACE, headers::CALLEE_APP_ID] {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok())
            && let Ok(value) = value.parse()
        {
            call.metadata_mut().insert(name, value);
        }
    }
    match client.on_invoke(call).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            let mut response = Response::new(Body::from(answer.data.map(|any| any.value).unwrap_or_default()));
            if let Ok(value) = HeaderValue::from_str(&answer.content_type)
                && !answer.content_type.is_empty()
            {
                response.headers_mut().insert(http::header::CONTENT_TYPE, value);
            }
            response
        }
        Err(status) if status.code() == tonic::Code::Unavailable => peer_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unavailable",
            format!("the app {} is not reachable: {}", shared.app_id(), status.message()),
        ),
        // The app's own error is the app's answer, as with an HTTP app's error status.
        Err(status) => (http_status(status.code()), status.message().to_owned()).into_response(),
    }
}
