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
    // --- Components (state and secrets APIs). Missing and out-of-scope stores share these variants: the APIs
    // cannot tell them apart (invariant 3).
    /// No state store with this name is loaded for the app, while others are.
    StateStoreNotFound { name: String },
    /// No state store is loaded for the app at all.
    StateStoreNotConfigured,
    /// Reading one key failed (`detail` is the cause, never a value).
    StateGet { key: String, store: String, detail: String },
    /// A bulk read failed.
    StateBulkGet { store: String, detail: String },
    /// Saving failed; `failure` decides the status.
    StateSave { store: String, failure: StateFailure, detail: String },
    /// Deleting failed; `failure` decides the status.
    StateDelete { key: String, failure: StateFailure, detail: String },
    /// A transaction failed (nothing was applied); `failure` decides the status.
    StateTransaction { failure: StateFailure, detail: String },
    /// The store does not implement the operation.
    StateNotSupported { detail: String },
    /// No secret store with this name is loaded for the app, while others are (Dapr answers 401 here).
    SecretStoreNotFound { name: String },
    /// No secret store is loaded for the app at all.
    SecretStoresNotConfigured,
    /// `spec.secrets.scopes` denies this secret.
    SecretDenied { key: String, store: String },
    /// Reading a secret failed or it does not exist (`detail` never holds a value).
    SecretGet { key: String, store: String, detail: String },
    /// Reading all secrets failed.
    SecretBulkGet { store: String, detail: String },
}

/// Why a state write failed, for the status: a stale ETag is a conflict, a malformed one or a bad option the
/// caller's mistake, anything else the backend's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFailure {
    EtagMismatch,
    InvalidEtag,
    BadRequest,
    Backend,
}

impl StateFailure {
    fn status(self) -> StatusCode {
        match self {
            StateFailure::EtagMismatch => StatusCode::CONFLICT,
            StateFailure::InvalidEtag | StateFailure::BadRequest => StatusCode::BAD_REQUEST,
            StateFailure::Backend => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
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
            // Messages are Dapr's templates (pkg/messages/predefined.go), see DAPR-FACTS §8.
            Self::StateStoreNotFound { name } => {
                (StatusCode::BAD_REQUEST, "ERR_STATE_STORE_NOT_FOUND", format!("state store {name} is not found"))
            }
            Self::StateStoreNotConfigured => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_STATE_STORE_NOT_CONFIGURED",
                "state store is not configured".to_owned(),
            ),
            Self::StateGet { key, store, detail } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_STATE_GET",
                format!("fail to get {key} from state store {store}: {detail}"),
            ),
            Self::StateBulkGet { store, detail } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_STATE_BULK_GET",
                format!("failed getting state in bulk from state store {store}: {detail}"),
            ),
            Self::StateSave { store, failure, detail } => {
                (failure.status(), "ERR_STATE_SAVE", format!("failed saving state in state store {store}: {detail}"))
            }
            Self::StateDelete { key, failure, detail } => {
                (failure.status(), "ERR_STATE_DELETE", format!("failed deleting state with key {key}: {detail}"))
            }
            Self::StateTransaction { failure, detail } => (
                failure.status(),
                "ERR_STATE_TRANSACTION",
                format!("error while executing state transaction: {detail}"),
            ),
            Self::StateNotSupported { detail } => {
                (StatusCode::BAD_REQUEST, "ERR_NOT_SUPPORTED_STATE_OPERATION", detail.clone())
            }
            Self::SecretStoreNotFound { name } => (
                StatusCode::UNAUTHORIZED,
                "ERR_SECRET_STORE_NOT_FOUND",
                format!("failed finding secret store with key {name}"),
            ),
            Self::SecretStoresNotConfigured => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_SECRET_STORES_NOT_CONFIGURED",
                "secret store is not configured".to_owned(),
            ),
            Self::SecretDenied { key, store } => (
                StatusCode::FORBIDDEN,
                "ERR_PERMISSION_DENIED",
                format!("access denied by policy to get {key:?} from {store:?}"),
            ),
            Self::SecretGet { key, store, detail } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_SECRET_GET",
                format!("failed getting secret with key {key} from secret store {store}: {detail}"),
            ),
            Self::SecretBulkGet { store, detail } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_SECRET_GET",
                format!("failed getting secrets from secret store {store}: {detail}"),
            ),
        };
        (status, ErrorBody { error_code: code.to_owned(), message })
    }
}

impl ApiError {
    /// The same error for the gRPC API: Dapr's gRPC code (DAPR-FACTS §8) and message, with a
    /// `google.rpc.ErrorInfo` detail (domain `dapr.io`, Dapr's reason) that the SDKs parse.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let (http, body) = self.status_and_body();
        let state_code = |failure: &StateFailure| match failure {
            StateFailure::EtagMismatch => (Code::Aborted, "DAPR_STATE_ETAG_MISMATCH"),
            StateFailure::InvalidEtag => (Code::InvalidArgument, "DAPR_STATE_ETAG_INVALID"),
            StateFailure::BadRequest => (Code::InvalidArgument, "DAPR_STATE_ILLEGAL_REQUEST"),
            StateFailure::Backend => (Code::Internal, "DAPR_STATE_BACKEND_ERROR"),
        };
        let (code, reason) = match self {
            Self::StateStoreNotFound { .. } => (Code::InvalidArgument, "DAPR_STATE_NOT_FOUND"),
            Self::StateStoreNotConfigured => (Code::FailedPrecondition, "DAPR_STATE_NOT_CONFIGURED"),
            Self::StateSave { failure, .. }
            | Self::StateDelete { failure, .. }
            | Self::StateTransaction { failure, .. } => state_code(failure),
            Self::StateGet { .. } | Self::StateBulkGet { .. } => (Code::Internal, "DAPR_STATE_GET"),
            Self::StateNotSupported { .. } => (Code::InvalidArgument, "DAPR_STATE_NOT_SUPPORTED"),
            Self::SecretStoreNotFound { .. } => (Code::InvalidArgument, "DAPR_SECRET_STORE_NOT_FOUND"),
            Self::SecretStoresNotConfigured => (Code::FailedPrecondition, "DAPR_SECRET_STORES_NOT_CONFIGURED"),
            Self::SecretDenied { .. } => (Code::PermissionDenied, "DAPR_SECRET_PERMISSION_DENIED"),
            Self::SecretGet { .. } | Self::SecretBulkGet { .. } => (Code::Internal, "DAPR_SECRET_GET"),
            Self::Malformed { .. } => (Code::InvalidArgument, "DAPR_MALFORMED_REQUEST"),
            Self::BodyTooLarge { .. } => (Code::ResourceExhausted, "DAPR_BODY_TOO_LARGE"),
            // Dapr wraps every invocation failure of the unary gRPC API as ERR_DIRECT_INVOKE → Internal.
            Self::InvokeDenied { .. } | Self::InvokeFailed { .. } => (Code::Internal, "DAPR_DIRECT_INVOKE"),
            Self::InvokeNoAppId => (Code::InvalidArgument, "DAPR_DIRECT_INVOKE"),
            Self::NotFound => (Code::Unimplemented, "DAPR_NOT_FOUND"),
            Self::NotReady { .. } => (grpc_code_for_http(http), "DAPR_HEALTH_NOT_READY"),
        };
        let metadata = std::collections::HashMap::from([
            ("http.code".to_owned(), http.as_u16().to_string()),
            ("errorCode".to_owned(), body.error_code.clone()),
        ]);
        let details = tonic_types::ErrorDetails::with_error_info(reason, "dapr.io", metadata);
        <tonic::Status as tonic_types::StatusExt>::with_error_details(code, body.message, details)
    }
}

/// Dapr's HTTP → gRPC code mapping (`pkg/messaging/v1/util.go`), for answers relayed from HTTP.
pub fn grpc_code_for_http(status: StatusCode) -> tonic::Code {
    use tonic::Code;
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::AlreadyExists,
        429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        _ => Code::Unknown,
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
