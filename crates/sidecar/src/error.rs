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
    /// A service invocation failed (`app_id` is the target as the caller named it).
    Invoke { app_id: String, error: InvokeError },
    /// An HTTP method outside the nine standard ones (a hardening over Dapr, which maps them to POST).
    UnsupportedVerb { verb: String },
    /// `/v1.0/invoke/...` without an app-id, and no `dapr-app-id` header.
    InvokeNoAppId,
    /// A request body over `--max-body-size`.
    BodyTooLarge { limit: u64 },
    /// A request whose headers are over the listener's limit (`ward_net::ListenerLimits::max_header_bytes`),
    /// refused by the listener before anything else ran.
    HeadersTooLarge { size: usize, limit: usize },
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
    /// Reading a secret failed, or it does not exist or is out of the app's secret scopes (the same answer:
    /// invariant 3). `detail` never holds a value.
    SecretGet { key: String, store: String, detail: String },
    /// Reading all secrets failed.
    SecretBulkGet { store: String, detail: String },
    /// Publish without a pubsub name.
    PubSubEmpty,
    /// Publish without a topic.
    TopicEmpty { pubsub: String },
    /// No pubsub component is loaded for this app.
    PubSubNotConfigured,
    /// This pubsub is not loaded for this app (missing or out of scope: the same answer).
    PubSubNotFound { name: String },
    /// The topic scopes deny this app the topic.
    PubSubForbidden { topic: String, app_id: String },
    /// The body could not become a CloudEvent.
    PubSubCloudEvent { detail: String },
    /// The broker refused the message, or it could not be signed.
    PubSubPublish { pubsub: String, topic: String, detail: String },
    /// Bulk publish: some entries failed (Dapr answers 500 with the failed entries).
    PubSubBulkFailed { failed: Vec<(String, String)> },
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
            Self::Invoke { error: InvokeError::BodyTooLarge { limit }, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "ERR_BODY_READ",
                format!("request body is larger than the limit of {limit} bytes"),
            ),
            Self::Invoke { error: InvokeError::Refused(refusal), .. } if refusal.kind == RefusalKind::BodyTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "ERR_BODY_READ", refusal.message.clone())
            }
            Self::HeadersTooLarge { size, limit }
            | Self::Invoke { error: InvokeError::HeadersTooLarge { size, limit }, .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                HEADERS_TOO_LARGE_CODE,
                headers_too_large_message(*size, *limit),
            ),
            Self::Invoke { error: InvokeError::Refused(refusal), .. }
                if refusal.kind == RefusalKind::HeadersTooLarge =>
            {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, HEADERS_TOO_LARGE_CODE, refusal.message.clone())
            }
            Self::Invoke { error: InvokeError::UnsupportedVerb(verb), .. }
            | Self::Invoke {
                error: InvokeError::Refused(PeerRefusal { kind: RefusalKind::UnsupportedVerb, message: verb }),
                ..
            }
            | Self::UnsupportedVerb { verb } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "ERR_MALFORMED_REQUEST",
                format!(
                    "unsupported HTTP method {verb:?}: only GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE and PATCH are accepted"
                ),
            ),
            // The app is at its concurrency bound: retryable, as daprd's 429.
            Self::Invoke { app_id, error: InvokeError::Refused(refusal) } if refusal.kind == RefusalKind::AppBusy => (
                StatusCode::TOO_MANY_REQUESTS,
                "ERR_DIRECT_INVOKE",
                format!(
                    "failed to invoke, id: {app_id}, err: rpc error: code = ResourceExhausted desc = {}",
                    refusal.message
                ),
            ),
            // The callee could not record its decision and refused (fail closed): retryable, so not a 500.
            Self::Invoke { app_id, error: InvokeError::Refused(refusal) }
                if refusal.kind == RefusalKind::AuditUnavailable =>
            {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ERR_AUDIT_UNAVAILABLE",
                    format!("failed to invoke, id: {app_id}: {}", refusal.message),
                )
            }
            Self::Invoke { app_id, error } => {
                let (grpc_code, detail) = error.grpc_code_and_detail();
                let status = if grpc_code == tonic::Code::PermissionDenied {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                (
                    status,
                    "ERR_DIRECT_INVOKE",
                    format!(
                        "failed to invoke, id: {app_id}, err: rpc error: code = {} desc = {detail}",
                        code_name(grpc_code)
                    ),
                )
            }
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
            Self::PubSubEmpty => (StatusCode::NOT_FOUND, "ERR_PUBSUB_EMPTY", "pubsub name is empty".to_owned()),
            Self::TopicEmpty { pubsub } => {
                (StatusCode::NOT_FOUND, "ERR_TOPIC_NAME_EMPTY", format!("topic is empty in pubsub {pubsub}"))
            }
            Self::PubSubNotConfigured => {
                (StatusCode::BAD_REQUEST, "ERR_PUBSUB_NOT_CONFIGURED", "no pubsub is configured".to_owned())
            }
            Self::PubSubNotFound { name } => {
                (StatusCode::NOT_FOUND, "ERR_PUBSUB_NOT_FOUND", format!("pubsub {name} is not found"))
            }
            Self::PubSubForbidden { topic, app_id } => (
                StatusCode::FORBIDDEN,
                "ERR_PUBSUB_FORBIDDEN",
                format!("topic {topic} is not allowed for app id {app_id}"),
            ),
            Self::PubSubCloudEvent { detail } => (
                StatusCode::BAD_REQUEST,
                "ERR_PUBSUB_CLOUD_EVENTS_SER",
                format!("error when unmarshalling the cloud event: {detail}"),
            ),
            Self::PubSubPublish { pubsub, topic, detail } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_PUBSUB_PUBLISH_MESSAGE",
                format!("error when publish to topic {topic} in pubsub {pubsub}: {detail}"),
            ),
            Self::PubSubBulkFailed { failed } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_PUBSUB_PUBLISH_MESSAGE",
                format!("{} of the entries could not be published", failed.len()),
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
            Self::SecretGet { .. } | Self::SecretBulkGet { .. } => (Code::Internal, "DAPR_SECRET_GET"),
            Self::Malformed { .. } => (Code::InvalidArgument, "DAPR_MALFORMED_REQUEST"),
            Self::BodyTooLarge { .. } => (Code::ResourceExhausted, "DAPR_BODY_TOO_LARGE"),
            Self::HeadersTooLarge { .. } | Self::Invoke { error: InvokeError::HeadersTooLarge { .. }, .. } => {
                (Code::ResourceExhausted, "DAPR_HEADERS_TOO_LARGE")
            }
            Self::Invoke { error: InvokeError::Refused(refusal), .. }
                if refusal.kind == RefusalKind::HeadersTooLarge =>
            {
                (Code::ResourceExhausted, "DAPR_HEADERS_TOO_LARGE")
            }
            Self::Invoke { error: InvokeError::BodyTooLarge { .. }, .. } => {
                (Code::ResourceExhausted, "DAPR_BODY_TOO_LARGE")
            }
            Self::Invoke { error: InvokeError::Refused(refusal), .. } if refusal.kind == RefusalKind::BodyTooLarge => {
                (Code::ResourceExhausted, "DAPR_BODY_TOO_LARGE")
            }
            Self::Invoke { error: InvokeError::UnsupportedVerb(_), .. } | Self::UnsupportedVerb { .. } => {
                (Code::InvalidArgument, "DAPR_MALFORMED_REQUEST")
            }
            Self::Invoke { error: InvokeError::Refused(refusal), .. }
                if refusal.kind == RefusalKind::UnsupportedVerb =>
            {
                (Code::InvalidArgument, "DAPR_MALFORMED_REQUEST")
            }
            Self::Invoke { error: InvokeError::Refused(refusal), .. }
                if refusal.kind == RefusalKind::AuditUnavailable =>
            {
                (Code::Unavailable, "DAPR_AUDIT_UNAVAILABLE")
            }
            // Dapr wraps every other invocation failure of the unary gRPC API as ERR_DIRECT_INVOKE → Internal.
            Self::Invoke { .. } => (Code::Internal, "DAPR_DIRECT_INVOKE"),
            Self::InvokeNoAppId => (Code::InvalidArgument, "DAPR_DIRECT_INVOKE"),
            Self::NotFound => (Code::Unimplemented, "DAPR_NOT_FOUND"),
            Self::PubSubEmpty => (Code::InvalidArgument, "DAPR_PUBSUB_NAME_EMPTY"),
            Self::TopicEmpty { .. } => (Code::InvalidArgument, "DAPR_PUBSUB_TOPIC_NAME_EMPTY"),
            Self::PubSubNotConfigured => (Code::FailedPrecondition, "DAPR_PUBSUB_NOT_CONFIGURED"),
            Self::PubSubNotFound { .. } => (Code::InvalidArgument, "DAPR_PUBSUB_NOT_FOUND"),
            Self::PubSubForbidden { .. } => (Code::PermissionDenied, "DAPR_PUBSUB_FORBIDDEN"),
            Self::PubSubCloudEvent { .. } => (Code::InvalidArgument, "DAPR_PUBSUB_CLOUD_EVENTS_SER"),
            Self::PubSubPublish { .. } | Self::PubSubBulkFailed { .. } => {
                (Code::Internal, "DAPR_PUBSUB_PUBLISH_MESSAGE")
            }
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
        if let Self::PubSubBulkFailed { failed } = &self {
            // Dapr's bulk publish answer names each failed entry.
            let entries: Vec<_> =
                failed.iter().map(|(id, error)| serde_json::json!({"entryId": id, "error": error})).collect();
            let body = serde_json::json!({"failedEntries": entries, "errorCode": body.error_code});
            return (status, axum::Json(body)).into_response();
        }
        (status, axum::Json(body)).into_response()
    }
}

/// The gRPC code name Dapr prints inside `rpc error: code = … desc = …`.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The `errorCode` of a request whose headers are over the limit (Dapr has none of its own: daprd's Go server
/// answers a bare 431).
const HEADERS_TOO_LARGE_CODE: &str = "ERR_HEADERS_TOO_LARGE";

fn headers_too_large_message(size: usize, limit: usize) -> String {
    format!(
        "request headers are {size} bytes, over the limit of {limit} bytes (each field counts its name, value and 32)"
    )
}

/// The answers each listener gives a request over its header limit (`ward_net::Server::with_header_refusal`),
/// all built from the variants above.
pub(crate) mod header_refusals {
    use bytes::Bytes;
    use ward_net::{HeaderRefusal, HeadersTooLarge};

    use super::{ApiError, InboundError};

    /// Public HTTP API: 431 with Dapr's JSON error body.
    pub(crate) fn public_http() -> HeaderRefusal {
        std::sync::Arc::new(|too_large: HeadersTooLarge| {
            let (status, body) =
                ApiError::HeadersTooLarge { size: too_large.size, limit: too_large.limit }.status_and_body();
            let json = serde_json::to_vec(&body).unwrap_or_default();
            let mut response = http::Response::new(Bytes::from(json));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            response
        })
    }

    /// Public gRPC API: a trailers-only gRPC answer (`ResourceExhausted` with `ErrorInfo`), as for any API error.
    pub(crate) fn public_grpc() -> HeaderRefusal {
        std::sync::Arc::new(|too_large: HeadersTooLarge| {
            ApiError::HeadersTooLarge { size: too_large.size, limit: too_large.limit }.to_status().into_http::<Bytes>()
        })
    }

    /// Internal port: the typed refusal the caller's sidecar turns into its own 431.
    pub(crate) fn internal() -> HeaderRefusal {
        std::sync::Arc::new(|too_large: HeadersTooLarge| {
            let refusal = InboundError::HeadersTooLarge { size: too_large.size, limit: too_large.limit }.to_refusal();
            let (parts, _) = refusal.into_response().into_parts();
            http::Response::from_parts(parts, Bytes::new())
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Service invocation, caller side.

/// Why the caller's sidecar could not complete an invocation. Leaves are typed; nothing is classified by text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    /// The target is not a valid `app-id` or `app-id.namespace`.
    InvalidTarget(String),
    /// No method after `/method/`.
    EmptyMethod,
    /// The caller's app used a method outside the nine standard HTTP methods (refused before leaving).
    UnsupportedVerb(String),
    /// No instance of the callee (as named by the caller) is registered.
    CalleeNotFound(String),
    /// Name resolution failed or the callee's sidecar could not be reached (detail for the message).
    CalleeUnavailable(String),
    /// The request body is over `--max-body-size`.
    BodyTooLarge { limit: u64 },
    /// The request to the callee's sidecar, with the headers this sidecar adds, would be over the header limit
    /// every ward listener applies: refused here, so the shared connection never carries it.
    HeadersTooLarge { size: usize, limit: usize },
    /// The callee's answer is over `--max-body-size` (only where ward must buffer it: gRPC `InvokeService`).
    ResponseTooLarge { limit: u64 },
    /// The callee's sidecar refused the call.
    Refused(PeerRefusal),
}

impl InvokeError {
    /// The gRPC code and text Dapr puts inside `ERR_DIRECT_INVOKE`, and that the gRPC proxy answers with.
    pub fn grpc_code_and_detail(&self) -> (tonic::Code, String) {
        use tonic::Code;
        match self {
            Self::InvalidTarget(target) => (Code::InvalidArgument, format!("invalid app id {target:?}")),
            Self::EmptyMethod => (Code::InvalidArgument, "invalid method: empty method".to_owned()),
            Self::UnsupportedVerb(verb) => (Code::InvalidArgument, format!("unsupported HTTP method {verb:?}")),
            Self::CalleeNotFound(target) => (Code::Unavailable, format!("couldn't find service: {target}")),
            Self::CalleeUnavailable(detail) => (Code::Unavailable, detail.clone()),
            Self::BodyTooLarge { limit } => {
                (Code::ResourceExhausted, format!("request body is larger than the limit of {limit} bytes"))
            }
            Self::HeadersTooLarge { size, limit } => {
                (Code::ResourceExhausted, headers_too_large_message(*size, *limit))
            }
            Self::ResponseTooLarge { limit } => {
                (Code::ResourceExhausted, format!("the answer is larger than the limit of {limit} bytes"))
            }
            Self::Refused(refusal) => (refusal.kind.grpc_code(), refusal.message.clone()),
        }
    }

    /// The answer on the gRPC proxy path, where Dapr passes the callee's code through unchanged.
    pub fn to_proxy_status(&self) -> tonic::Status {
        let (code, detail) = self.grpc_code_and_detail();
        tonic::Status::new(code, detail)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Service invocation, callee side, and the wire between the two sidecars.

/// What the callee's sidecar refused, as it travels back to the caller's sidecar: a closed set, so the caller never
/// parses free text to learn what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// accessControl denied the call.
    AclDenied,
    /// The caller lacks a capability a matching `spec.ward.capabilities` route requires.
    CapabilityMissing,
    /// The method path is invalid or ambiguous (encoded `/`, escaping `..`, look-alike Unicode, …).
    InvalidMethod,
    /// An HTTP method outside the nine standard ones.
    UnsupportedVerb,
    /// The caller's identity could not be verified.
    Unverified,
    /// The request body is over the callee's `--max-body-size`.
    BodyTooLarge,
    /// The request's headers are over the callee's header limit (refused by its listener).
    HeadersTooLarge,
    /// A `dapr.proto.*` service on the gRPC proxy path (never proxied: the app would trust its inner fields).
    ReservedService,
    /// The app has no port, does not answer, or speaks the wrong protocol.
    AppUnavailable,
    /// The app already has `--app-max-concurrency` calls in flight.
    AppBusy,
    /// The callee could not record its decision (fail closed).
    AuditUnavailable,
    /// Not an internal endpoint.
    UnknownEndpoint,
}

impl RefusalKind {
    const ALL: [RefusalKind; 12] = [
        Self::AclDenied,
        Self::CapabilityMissing,
        Self::InvalidMethod,
        Self::UnsupportedVerb,
        Self::Unverified,
        Self::BodyTooLarge,
        Self::HeadersTooLarge,
        Self::ReservedService,
        Self::AppUnavailable,
        Self::AppBusy,
        Self::AuditUnavailable,
        Self::UnknownEndpoint,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::AclDenied => "acl-denied",
            Self::CapabilityMissing => "capability-missing",
            Self::InvalidMethod => "invalid-method",
            Self::UnsupportedVerb => "unsupported-verb",
            Self::Unverified => "unverified",
            Self::BodyTooLarge => "body-too-large",
            Self::HeadersTooLarge => "headers-too-large",
            Self::ReservedService => "reserved-service",
            Self::AppUnavailable => "app-unavailable",
            Self::AppBusy => "app-busy",
            Self::AuditUnavailable => "audit-unavailable",
            Self::UnknownEndpoint => "unknown-endpoint",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The gRPC code Dapr's callee would answer with.
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::AclDenied | Self::CapabilityMissing | Self::Unverified | Self::ReservedService => {
                Code::PermissionDenied
            }
            Self::InvalidMethod | Self::UnsupportedVerb => Code::InvalidArgument,
            Self::BodyTooLarge | Self::HeadersTooLarge | Self::AppBusy => Code::ResourceExhausted,
            Self::AppUnavailable | Self::AuditUnavailable => Code::Unavailable,
            Self::UnknownEndpoint => Code::NotFound,
        }
    }

    fn http_status(self) -> StatusCode {
        match self {
            Self::AclDenied | Self::CapabilityMissing | Self::Unverified | Self::ReservedService => {
                StatusCode::FORBIDDEN
            }
            Self::InvalidMethod => StatusCode::BAD_REQUEST,
            Self::UnsupportedVerb => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::AppUnavailable => StatusCode::BAD_GATEWAY,
            Self::AppBusy => StatusCode::TOO_MANY_REQUESTS,
            Self::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnknownEndpoint => StatusCode::NOT_FOUND,
        }
    }
}

/// A refusal by the callee's sidecar. It travels in response headers (never the body), so a body-less answer
/// (`HEAD`) carries it as well as any other, and an app cannot forge one (the callee strips the headers from app
/// answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRefusal {
    pub kind: RefusalKind,
    /// Dapr's sentence for the caller's app (e.g. `access control policy has denied access to id: …`).
    pub message: String,
}

/// Response header naming the [`RefusalKind`].
pub const REFUSAL_HEADER: &str = "ward-refusal";
/// Response header with the refusal's message, percent-encoded.
pub const REFUSAL_MESSAGE_HEADER: &str = "ward-refusal-message";

/// Everything but unreserved URL characters and the space is escaped, so any message fits a header value.
const MESSAGE_ESCAPES: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b' ').remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b':');

impl PeerRefusal {
    /// The internal-port answer carrying this refusal.
    pub fn into_response(self) -> Response {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = self.kind.http_status();
        let headers = response.headers_mut();
        headers.insert(REFUSAL_HEADER, http::HeaderValue::from_static(self.kind.as_str()));
        let message = percent_encoding::utf8_percent_encode(&self.message, MESSAGE_ESCAPES).to_string();
        if let Ok(value) = http::HeaderValue::from_str(&message) {
            headers.insert(REFUSAL_MESSAGE_HEADER, value);
        }
        response
    }

    /// Reads a refusal from the callee sidecar's answer headers (and removes them); `None` for an app's answer.
    /// An unknown kind is a refusal too (fail closed), reported as an unavailable app.
    pub fn take_from(headers: &mut http::HeaderMap) -> Option<PeerRefusal> {
        let kind = headers.remove(REFUSAL_HEADER)?;
        let message = headers
            .remove(REFUSAL_MESSAGE_HEADER)
            .and_then(|v| {
                v.to_str().ok().map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
            })
            .unwrap_or_default();
        let kind = kind.to_str().ok().and_then(RefusalKind::parse).unwrap_or(RefusalKind::AppUnavailable);
        Some(PeerRefusal { kind, message })
    }

    /// Removes refusal headers from an app's answer, so an app cannot pass its answer off as its sidecar's.
    pub fn strip(headers: &mut http::HeaderMap) {
        crate::headers::remove_where(headers, |name| name == REFUSAL_HEADER || name == REFUSAL_MESSAGE_HEADER);
    }
}

/// Why the callee's inbound stack refused a call or could not complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundError {
    UnknownEndpoint,
    /// No verified identity (production, or a plaintext peer without a valid development marker where required).
    Unverified,
    InvalidMethod(String),
    UnsupportedVerb(String),
    ReservedService(String),
    BodyTooLarge {
        limit: u64,
    },
    /// Refused by the listener itself (`header_refusals::internal`), so never seen by the stack or audited: like a
    /// refused connection, it is transport, not an authorization decision.
    HeadersTooLarge {
        size: usize,
        limit: usize,
    },
    /// The app's answer carries more header bytes than any ward listener accepts; relaying it could end the
    /// connection the caller shares with other calls.
    AppAnswerHeadersTooLarge {
        size: usize,
        limit: usize,
    },
    AclDenied {
        caller: String,
        operation: String,
        verb: String,
    },
    /// A `spec.ward.capabilities` route applies and the caller lacks `capability` (the audit event names the route;
    /// the answer names only the capability, never what the caller holds).
    CapabilityMissing {
        capability: String,
    },
    /// The provenance token could not be signed: the app is not called without one.
    ProvenanceUnavailable,
    AuditUnavailable,
    AppUnavailable(String),
    AppBusy,
}

impl InboundError {
    /// The one mapping from a callee-side error to what travels back to the caller's sidecar.
    pub fn to_refusal(&self) -> PeerRefusal {
        let (kind, message) = match self {
            Self::UnknownEndpoint => (RefusalKind::UnknownEndpoint, "unknown internal endpoint".to_owned()),
            Self::Unverified => (RefusalKind::Unverified, "caller identity could not be verified".to_owned()),
            Self::InvalidMethod(detail) => (RefusalKind::InvalidMethod, format!("invalid method: {detail}")),
            Self::UnsupportedVerb(verb) => (RefusalKind::UnsupportedVerb, verb.clone()),
            Self::ReservedService(method) => (
                RefusalKind::ReservedService,
                format!("the Dapr service {method} cannot be called through the gRPC proxy"),
            ),
            Self::BodyTooLarge { limit } => {
                (RefusalKind::BodyTooLarge, format!("request body is larger than the limit of {limit} bytes"))
            }
            Self::HeadersTooLarge { size, limit } => {
                (RefusalKind::HeadersTooLarge, headers_too_large_message(*size, *limit))
            }
            Self::AppAnswerHeadersTooLarge { size, limit } => (
                RefusalKind::AppUnavailable,
                format!("the app's answer headers are {size} bytes, over the limit of {limit} bytes"),
            ),
            Self::AclDenied { caller, operation, verb } => (
                RefusalKind::AclDenied,
                format!("access control policy has denied access to id: {caller} operation: {operation} verb: {verb}"),
            ),
            Self::CapabilityMissing { capability } => {
                (RefusalKind::CapabilityMissing, format!("access denied: missing capability {capability}"))
            }
            Self::ProvenanceUnavailable => {
                (RefusalKind::AppUnavailable, "the callee could not sign a provenance token".to_owned())
            }
            Self::AuditUnavailable => {
                (RefusalKind::AuditUnavailable, "the callee could not record its decision".to_owned())
            }
            Self::AppUnavailable(detail) => (RefusalKind::AppUnavailable, detail.clone()),
            Self::AppBusy => {
                (RefusalKind::AppBusy, "the app has --app-max-concurrency calls in flight already".to_owned())
            }
        };
        PeerRefusal { kind, message }
    }

    /// What this refusal is for the audit log, when it happened before the access-control decision (which
    /// records its own event); `None` for the ACL's own denial and for failures after it.
    pub fn before_acl(&self) -> Option<ward_policy::PreAclRefusal> {
        use ward_policy::PreAclRefusal as P;
        match self {
            Self::UnknownEndpoint => Some(P::UnknownEndpoint),
            Self::Unverified => Some(P::UnverifiedCaller),
            Self::InvalidMethod(_) => Some(P::InvalidMethod),
            Self::UnsupportedVerb(_) => Some(P::UnsupportedVerb),
            Self::ReservedService(_) => Some(P::ReservedGrpcService),
            Self::BodyTooLarge { .. } => Some(P::BodyTooLarge),
            Self::AclDenied { .. }
            | Self::HeadersTooLarge { .. }
            | Self::AppAnswerHeadersTooLarge { .. }
            | Self::CapabilityMissing { .. }
            | Self::ProvenanceUnavailable
            | Self::AuditUnavailable
            | Self::AppUnavailable(_)
            | Self::AppBusy => None,
        }
    }
}

/// An error and its causes, `: `-separated, for logs and for the detail of an unavailable callee.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(kind: RefusalKind) -> InvokeError {
        InvokeError::Refused(PeerRefusal { kind, message: "m".to_owned() })
    }

    /// Every error variant, once, with its HTTP status, Dapr errorCode and gRPC code: the one table.
    #[test]
    fn error_map_table() {
        let invoke = |error| ApiError::Invoke { app_id: "orders".to_owned(), error };
        let cases: Vec<(ApiError, u16, &str, tonic::Code)> = vec![
            (invoke(refused(RefusalKind::AclDenied)), 403, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(refused(RefusalKind::CapabilityMissing)), 403, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(refused(RefusalKind::Unverified)), 403, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(refused(RefusalKind::ReservedService)), 403, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(refused(RefusalKind::InvalidMethod)), 500, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(refused(RefusalKind::UnsupportedVerb)), 405, "ERR_MALFORMED_REQUEST", tonic::Code::InvalidArgument),
            (invoke(refused(RefusalKind::BodyTooLarge)), 413, "ERR_BODY_READ", tonic::Code::ResourceExhausted),
            (
                invoke(refused(RefusalKind::HeadersTooLarge)),
                431,
                "ERR_HEADERS_TOO_LARGE",
                tonic::Code::ResourceExhausted,
            ),
            (
                invoke(InvokeError::HeadersTooLarge { size: 2, limit: 1 }),
                431,
                "ERR_HEADERS_TOO_LARGE",
                tonic::Code::ResourceExhausted,
            ),
            (
                ApiError::HeadersTooLarge { size: 2, limit: 1 },
                431,
                "ERR_HEADERS_TOO_LARGE",
                tonic::Code::ResourceExhausted,
            ),
            (invoke(refused(RefusalKind::AppUnavailable)), 500, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(refused(RefusalKind::AppBusy)), 429, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(refused(RefusalKind::AuditUnavailable)), 503, "ERR_AUDIT_UNAVAILABLE", tonic::Code::Unavailable),
            (invoke(refused(RefusalKind::UnknownEndpoint)), 500, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(InvokeError::InvalidTarget("x".into())), 500, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(InvokeError::EmptyMethod), 500, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (
                invoke(InvokeError::UnsupportedVerb("FOO".into())),
                405,
                "ERR_MALFORMED_REQUEST",
                tonic::Code::InvalidArgument,
            ),
            (invoke(InvokeError::CalleeNotFound("orders".into())), 500, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(InvokeError::CalleeUnavailable("down".into())), 500, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (invoke(InvokeError::BodyTooLarge { limit: 1 }), 413, "ERR_BODY_READ", tonic::Code::ResourceExhausted),
            (invoke(InvokeError::ResponseTooLarge { limit: 1 }), 500, "ERR_DIRECT_INVOKE", tonic::Code::Internal),
            (
                ApiError::UnsupportedVerb { verb: "FOO".into() },
                405,
                "ERR_MALFORMED_REQUEST",
                tonic::Code::InvalidArgument,
            ),
            (ApiError::InvokeNoAppId, 404, "ERR_DIRECT_INVOKE", tonic::Code::InvalidArgument),
            (ApiError::BodyTooLarge { limit: 1 }, 413, "ERR_BODY_READ", tonic::Code::ResourceExhausted),
            (ApiError::Malformed { detail: "x".into() }, 400, "ERR_MALFORMED_REQUEST", tonic::Code::InvalidArgument),
            (ApiError::NotFound, 404, "ERR_NOT_FOUND", tonic::Code::Unimplemented),
            (ApiError::NotReady { detail: "x".into() }, 500, "ERR_HEALTH_NOT_READY", tonic::Code::Unknown),
            (
                ApiError::StateStoreNotFound { name: "s".into() },
                400,
                "ERR_STATE_STORE_NOT_FOUND",
                tonic::Code::InvalidArgument,
            ),
            (ApiError::StateStoreNotConfigured, 500, "ERR_STATE_STORE_NOT_CONFIGURED", tonic::Code::FailedPrecondition),
            (
                ApiError::StateGet { key: "k".into(), store: "s".into(), detail: "d".into() },
                500,
                "ERR_STATE_GET",
                tonic::Code::Internal,
            ),
            (
                ApiError::StateBulkGet { store: "s".into(), detail: "d".into() },
                500,
                "ERR_STATE_BULK_GET",
                tonic::Code::Internal,
            ),
            (
                ApiError::StateSave { store: "s".into(), failure: StateFailure::EtagMismatch, detail: "d".into() },
                409,
                "ERR_STATE_SAVE",
                tonic::Code::Aborted,
            ),
            (
                ApiError::StateDelete { key: "k".into(), failure: StateFailure::InvalidEtag, detail: "d".into() },
                400,
                "ERR_STATE_DELETE",
                tonic::Code::InvalidArgument,
            ),
            (
                ApiError::StateTransaction { failure: StateFailure::Backend, detail: "d".into() },
                500,
                "ERR_STATE_TRANSACTION",
                tonic::Code::Internal,
            ),
            (
                ApiError::StateNotSupported { detail: "d".into() },
                400,
                "ERR_NOT_SUPPORTED_STATE_OPERATION",
                tonic::Code::InvalidArgument,
            ),
            (
                ApiError::SecretStoreNotFound { name: "s".into() },
                401,
                "ERR_SECRET_STORE_NOT_FOUND",
                tonic::Code::InvalidArgument,
            ),
            (
                ApiError::SecretStoresNotConfigured,
                500,
                "ERR_SECRET_STORES_NOT_CONFIGURED",
                tonic::Code::FailedPrecondition,
            ),
            (
                ApiError::SecretGet { key: "k".into(), store: "s".into(), detail: "d".into() },
                500,
                "ERR_SECRET_GET",
                tonic::Code::Internal,
            ),
            (
                ApiError::SecretBulkGet { store: "s".into(), detail: "d".into() },
                500,
                "ERR_SECRET_GET",
                tonic::Code::Internal,
            ),
        ];
        for (error, status, code, grpc) in cases {
            let (got_status, body) = error.status_and_body();
            assert_eq!(got_status.as_u16(), status, "{error:?}");
            assert_eq!(body.error_code, code, "{error:?}");
            assert_eq!(error.to_status().code(), grpc, "{error:?}");
        }
    }

    /// What each listener answers over the header limit comes from the variants above: Dapr's JSON body on the
    /// public API, a gRPC status on the gRPC API, a typed refusal on the internal port that the caller maps to 431.
    #[test]
    fn header_refusals_per_listener() {
        let too_large = ward_net::HeadersTooLarge::new(70_000, 65_536);
        let public = header_refusals::public_http()(too_large);
        assert_eq!(public.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let body: ErrorBody = serde_json::from_slice(public.body()).expect("a Dapr error body");
        assert_eq!(body.error_code, "ERR_HEADERS_TOO_LARGE");
        assert!(body.message.contains("70000") && body.message.contains("65536"), "{}", body.message);

        let grpc = header_refusals::public_grpc()(too_large);
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers().get("grpc-status").and_then(|v| v.to_str().ok()), Some("8"));

        let internal = header_refusals::internal()(too_large);
        let (mut parts, _) = internal.into_parts();
        let refusal = PeerRefusal::take_from(&mut parts.headers).expect("a refusal");
        assert_eq!(refusal.kind, RefusalKind::HeadersTooLarge);
        let error = ApiError::Invoke { app_id: "b".into(), error: InvokeError::Refused(refusal) };
        assert_eq!(error.status_and_body().0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn acl_denial_keeps_dapr_sentence() {
        let refusal = InboundError::AclDenied {
            caller: "spiffe://public/ns/default/checkout".into(),
            operation: "admin".into(),
            verb: "GET".into(),
        }
        .to_refusal();
        let error = ApiError::Invoke { app_id: "orders".into(), error: InvokeError::Refused(refusal) };
        assert_eq!(
            error.status_and_body().1.message,
            "failed to invoke, id: orders, err: rpc error: code = PermissionDenied desc = access control policy has \
             denied access to id: spiffe://public/ns/default/checkout operation: admin verb: GET"
        );
    }

    /// Every refusal survives the trip through headers (also with bytes a header cannot hold), and the proxy path
    /// passes the callee's code through.
    #[test]
    fn refusals_round_trip_through_headers() {
        for kind in RefusalKind::ALL {
            let sent = PeerRefusal { kind, message: "denied: /adm%C4%B1n ı \"q\"\n".to_owned() };
            let mut response = sent.clone().into_response();
            let received = PeerRefusal::take_from(response.headers_mut()).expect("a refusal");
            assert_eq!(received, sent);
            assert!(response.headers().get(REFUSAL_HEADER).is_none());
            assert_eq!(InvokeError::Refused(received).to_proxy_status().code(), kind.grpc_code());
        }
        let mut forged = http::HeaderMap::new();
        forged.insert(REFUSAL_HEADER, http::HeaderValue::from_static("made-up"));
        assert_eq!(PeerRefusal::take_from(&mut forged).map(|r| r.kind), Some(RefusalKind::AppUnavailable));
    }
}
