//! gRPC proxying (Dapr's "proxy mode" service invocation): a call to this sidecar's gRPC port for a service other
//! than Dapr's own, carrying `dapr-app-id` metadata, is streamed to that app's sidecar over mTLS and on to the app.
//! The callee's sidecar judges the full method name `/pkg.Service/Method` with its ACL; a refusal comes back as
//! the gRPC status Dapr uses (PermissionDenied for the ACL), without reaching the app.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;

use crate::headers;
use crate::internal::INTERNAL_GRPC_PREFIX;
use crate::public::{PeerFailure, send_to_peer};
use crate::runtime::Shared;

fn status(code: tonic::Code, message: impl Into<String>) -> Response {
    tonic::Status::new(code, message).into_http::<Body>()
}

fn code_named(name: &str) -> tonic::Code {
    match name {
        "PermissionDenied" => tonic::Code::PermissionDenied,
        "InvalidArgument" => tonic::Code::InvalidArgument,
        "NotFound" => tonic::Code::NotFound,
        "Unavailable" => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

pub(super) async fn forward(shared: Arc<Shared>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(target) = request.headers().get(headers::APP_ID).and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return status(
            tonic::Code::Unimplemented,
            format!("unknown method {path} (no dapr-app-id metadata to proxy it)"),
        );
    };
    let internal = format!("{INTERNAL_GRPC_PREFIX}{}", path.trim_start_matches('/'));
    let (parts, body) = request.into_parts();
    match send_to_peer(&shared, &target, internal, parts, body).await {
        // Body and trailers (grpc-status) stream through unchanged.
        Ok(response) => response.map(Body::new),
        Err(PeerFailure::Refused(peer)) => status(code_named(&peer.code), peer.message),
        Err(PeerFailure::NotFound) => status(tonic::Code::Unavailable, format!("couldn't find service: {target}")),
        Err(PeerFailure::Unavailable(detail)) => status(tonic::Code::Unavailable, detail),
        Err(PeerFailure::Invalid(detail)) => status(tonic::Code::InvalidArgument, detail),
        Err(PeerFailure::BodyTooLarge(limit)) => {
            status(tonic::Code::ResourceExhausted, format!("request larger than {limit} bytes"))
        }
    }
}
