//! gRPC proxying (Dapr's "proxy mode" service invocation): a call to this sidecar's gRPC port for a service other
//! than Dapr's own, carrying `dapr-app-id` metadata, is streamed to that app's sidecar over mTLS and on to the app.
//! The callee's sidecar judges the full method name `/pkg.Service/Method` with its ACL; a refusal comes back as
//! the gRPC status Dapr uses (PermissionDenied for the ACL), without reaching the app.
//!
//! `dapr.proto.*` services are never proxied (here, and again at the callee): a gRPC app dispatches
//! `AppCallback/OnInvoke` on the inner `InvokeRequest.method`, which the ACL never sees.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;

use crate::headers;
use crate::invoke::Invoker;

fn status(code: tonic::Code, message: impl Into<String>) -> Response {
    tonic::Status::new(code, message).into_http::<Body>()
}

pub(super) async fn forward(invoker: &Invoker, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(target) = request.headers().get(headers::APP_ID).and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return status(
            tonic::Code::Unimplemented,
            format!("unknown method {path} (no dapr-app-id metadata to proxy it)"),
        );
    };
    if ward_policy::is_reserved_grpc_service(&path) {
        tracing::warn!(method = %path, target = %target, "refused to proxy a Dapr service");
        return status(
            tonic::Code::PermissionDenied,
            format!("the Dapr service {path} cannot be called through the gRPC proxy"),
        );
    }
    let (parts, body) = request.into_parts();
    match invoker.proxy_grpc(&target, &path, parts, body).await {
        // Body and trailers (grpc-status) stream through unchanged.
        Ok(response) => response,
        Err(error) => error.to_proxy_status().into_http::<Body>(),
    }
}
