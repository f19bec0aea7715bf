//! The admission decision: an `AdmissionReview` (bytes, or a parsed `AdmissionRequest<Pod>`) in, the
//! `AdmissionReview` answer out. Pure functions, no I/O: the server calls [`review`], tests call [`admit`].
//!
//! The answer for a well-formed review is always a well-formed review: allowed unchanged, allowed with a JSON
//! patch, or denied with a message that names the annotation. Only a body that is not an `AdmissionReview` at all
//! is an error ([`ReviewError`], answered 400 by the server).

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::sidecar::{self, Settings};
use crate::{Denial, InjectorConfig};

/// The largest review body read. A pod is at most ~1.5 MiB in etcd; a review carries it once on CREATE (twice
/// on UPDATE) plus a little envelope.
pub const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// Prefix of every denial message, so the API server's error says who refused.
const WHO: &str = "ward sidecar injector";

/// A body that cannot be answered with an `AdmissionReview`.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Where and what kind of problem, but not serde's message: that can quote a value from the body (an env
    /// value of the pod, say), and this error is logged and sent back.
    #[error("request body is not an AdmissionReview: {category} error at line {line}, column {column}")]
    NotAReview { category: &'static str, line: usize, column: usize },
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview apiVersion {api_version:?} is not admission.k8s.io/v1")]
    ApiVersion { api_version: String },
    #[error("answer does not serialize: {source}")]
    Serialize {
        #[source]
        source: serde_json::Error,
    },
}

/// Answers one review body: the JSON of the `AdmissionReview` to send back.
pub fn review(config: &InjectorConfig, body: &[u8]) -> Result<Vec<u8>, ReviewError> {
    let review: AdmissionReview<Pod> = serde_json::from_slice(body).map_err(|err| ReviewError::NotAReview {
        category: match err.classify() {
            serde_json::error::Category::Io => "read",
            serde_json::error::Category::Syntax => "JSON syntax",
            serde_json::error::Category::Data => "content",
            serde_json::error::Category::Eof => "truncated JSON",
        },
        line: err.line(),
        column: err.column(),
    })?;
    // v1beta1 reviews need a v1beta1 answer; ward registers its webhook with admissionReviewVersions [v1] only.
    if review.types.api_version != "admission.k8s.io/v1" {
        return Err(ReviewError::ApiVersion { api_version: review.types.api_version });
    }
    let request: AdmissionRequest<Pod> = review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let answer = admit(config, &request).into_review();
    serde_json::to_vec(&answer).map_err(|source| ReviewError::Serialize { source })
}

/// What happens to the pod of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed as it is, for this reason (not annotated, already injected, not a create).
    Unchanged(&'static str),
    /// Allowed with the sidecar.
    Inject {
        app_id: String,
        patch: json_patch::Patch,
        warnings: Vec<String>,
    },
    Denied(Denial),
}

/// Decides one request. `namespace` and `name` come from the request (a pod being created may not carry them
/// itself yet).
pub fn decide(config: &InjectorConfig, request: &AdmissionRequest<Pod>) -> Decision {
    let is_pod = request.kind.group.is_empty() && request.kind.version == "v1" && request.kind.kind == "Pod";
    if !is_pod || request.sub_resource.is_some() {
        return Decision::Denied(Denial::NotAPod {
            problem: format!(
                "this webhook handles pods only, not {}/{} {}{}",
                request.kind.group,
                request.kind.version,
                request.kind.kind,
                request.sub_resource.as_deref().map(|s| format!(" subresource {s}")).unwrap_or_default()
            ),
        });
    }
    if request.operation != Operation::Create {
        return Decision::Unchanged("not a create");
    }
    let Some(pod) = &request.object else {
        return Decision::Denied(Denial::NotAPod { problem: "the review carries no pod".into() });
    };
    match sidecar::enabled(pod) {
        Ok(false) => return Decision::Unchanged("not annotated dapr.io/enabled"),
        Ok(true) => {}
        Err(denial) => return Decision::Denied(denial),
    }
    if sidecar::already_injected(pod) {
        return Decision::Unchanged("already has its sidecar");
    }
    let namespace = request.namespace.as_deref().or(pod.metadata.namespace.as_deref()).unwrap_or_default();
    if namespace == config.control_plane_namespace {
        return Decision::Denied(Denial::ControlPlaneNamespace { namespace: namespace.to_owned() });
    }
    let name = if request.name.is_empty() { pod.metadata.name.as_deref().unwrap_or_default() } else { &request.name };
    let settings = match Settings::from_pod(config, name, pod) {
        Ok(settings) => settings,
        Err(denial) => return Decision::Denied(denial),
    };
    match sidecar::patch(config, &settings, pod) {
        Ok(patch) => Decision::Inject { app_id: settings.app_id, patch, warnings: settings.warnings },
        Err(denial) => Decision::Denied(denial),
    }
}

/// The response to one request (logged: the decision, never annotation values beyond the app id).
pub fn admit(config: &InjectorConfig, request: &AdmissionRequest<Pod>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let namespace = request.namespace.as_deref().unwrap_or_default();
    match decide(config, request) {
        Decision::Unchanged(reason) => {
            tracing::debug!(uid = %request.uid, namespace, name = %request.name, reason, "pod allowed unchanged");
            response
        }
        Decision::Inject { app_id, patch, warnings } => {
            tracing::info!(uid = %request.uid, namespace, name = %request.name, app_id, "sidecar injected");
            match response.with_patch(patch) {
                Ok(mut response) => {
                    if !warnings.is_empty() {
                        response.warnings = Some(warnings);
                    }
                    response
                }
                // Unreachable in practice (a patch of JSON values); fail closed all the same.
                Err(err) => AdmissionResponse::from(request).deny(format!("{WHO}: {err}")),
            }
        }
        Decision::Denied(denial) => {
            tracing::info!(uid = %request.uid, namespace, name = %request.name, reason = %denial, "pod denied");
            response.deny(format!("{WHO}: {denial}"))
        }
    }
}
