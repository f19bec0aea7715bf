//! The one place where failures become answers (linkerd2-proxy's `errors/respond.rs` idea): every error the
//! request path can produce is an `ApiError` variant, and `ApiError::status_and_body` maps it to exactly one HTTP
//! status and Dapr `errorCode`. Clients get a stable short message; details go to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Dapr's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "errorCode")]
    pub error_code: String,
    pub message: String,
}

/// A request that could not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The callee's access-control policy refused the call (`message` is Dapr's sentence from the callee).
    InvokeDenied { app_id: String, message: String },
    /// The invocation failed for another reason (app down, unknown app-id, bad method, transport).
    InvokeFailed { app_id: String, grpc_code: &'static str, detail: String },
    /// `/v1.0/invoke/...` without an app-id, and no `dapr-app-id` header.
    InvokeNoAppId,
    /// A request body over `--max-body-size`.
    BodyTooLarge { limit: u64 },
    /// A request that does not parse.
    Malformed { detail: String },
    /// No such route (or an API denied by `spec.api`).
    NotFound,
    /// The sidecar is not ready yet.
    NotReady { detail: String },
}

impl ApiError {
    pub fn status_and_body(&self) -> (StatusCode, ErrorBody) {
        let (status, code, message) = match self {
            Self::InvokeDenied { app_id, message } => (
                StatusCode::FORBIDDEN,
                "ERR_DIRECT_INVOKE",
                format!("failed to invoke, id: {app_id}, err: rpc error: code = PermissionDenied desc = {message}"),
            ),
            Self::InvokeFailed { app_id, grpc_code, detail } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_DIRECT_INVOKE",
                format!("failed to invoke, id: {app_id}, err: rpc error: code = {grpc_code} desc = {detail}"),
            ),
            Self::InvokeNoAppId => (
                StatusCode::NOT_FOUND,
                "ERR_DIRECT_INVOKE",
                "failed getting app id either from the URL path or the header dapr-app-id".to_owned(),
            ),
            Self::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "ERR_BODY_READ",
                format!("request body is larger than the limit of {limit} bytes"),
            ),
            Self::Malformed { detail } => (StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", detail.clone()),
            Self::NotFound => {
                (StatusCode::NOT_FOUND, "ERR_NOT_FOUND", "the requested endpoint is not available".to_owned())
            }
            Self::NotReady { detail } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "ERR_HEALTH_NOT_READY", format!("dapr is not ready: {detail}"))
            }
        };
        (status, ErrorBody { error_code: code.to_owned(), message })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        (status, axum::Json(body)).into_response()
    }
}

/// The JSON the callee's sidecar sends back to the caller's sidecar when *it* (not the app) refuses a call.
/// Marked by the `ward-sidecar-error` response header, which the callee strips from app responses so an app
/// cannot impersonate its sidecar.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerError {
    /// gRPC-style code name: `PermissionDenied`, `InvalidArgument`, `Unavailable`, `Internal`.
    pub code: String,
    pub message: String,
}

pub const PEER_ERROR_HEADER: &str = "ward-sidecar-error";
