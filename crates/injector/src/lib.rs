//! `ward injector`: Dapr's sidecar injector, safer. A mutating admission webhook that adds the `daprd` container
//! (running `ward sidecar --mode kubernetes`) to pods annotated `dapr.io/enabled: "true"`.
//!
//! - [`admission`]: the decision as pure functions — an `AdmissionReview<Pod>` in, an `AdmissionReview` out,
//!   allowed with an RFC 6902 patch, allowed unchanged, or denied with a message naming the annotation. No I/O.
//! - [`annotations`]: every annotation of Dapr's injector and what ward does with it (honoured, or refused
//!   because ward has no such feature: never silently ignored), with the value parsers.
//! - [`sidecar`]: what an annotated pod gets (container, volumes, env, labels) and the patch that adds it.
//! - [`server`]: the HTTPS server (`POST /mutate`, `/healthz` on its own port), with a serving certificate
//!   reloaded from files ([`tls`]) and the `caBundle` of its own `MutatingWebhookConfiguration` kept equal to
//!   the trust anchors file ([`ca_bundle`]).
//!
//! What it does not do: create Services, read anything from the API server to decide (the review carries the
//! pod), or validate anything about pods that are not annotated.

#![forbid(unsafe_code)]

pub mod admission;
pub mod annotations;
pub mod ca_bundle;
mod quantity;
pub mod server;
pub mod sidecar;
pub mod tls;

pub use admission::{MAX_REVIEW_BYTES, ReviewError, admit, review};
pub use ca_bundle::{CaBundleSync, sync_ca_bundle};
pub use server::{Injector, InjectorError, ServeOptions, ServingCert, sentry_client_config};

/// The image injected when neither `SIDECAR_IMAGE` nor `dapr.io/sidecar-image` says otherwise.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!("ghcr.io/ward-mesh/ward:", env!("CARGO_PKG_VERSION"));
/// The control plane's namespace unless `NAMESPACE` says otherwise.
pub const DEFAULT_CONTROL_PLANE_NAMESPACE: &str = "dapr-system";
/// The control plane's trust domain unless `DAPR_CONTROLPLANE_TRUST_DOMAIN` says otherwise.
pub const DEFAULT_CONTROL_PLANE_TRUST_DOMAIN: &str = "cluster.local";
/// The cluster's DNS domain unless `KUBE_CLUSTER_DOMAIN` says otherwise.
pub const DEFAULT_KUBE_CLUSTER_DOMAIN: &str = "cluster.local";
/// The uid (and gid) the sidecar runs as: distroless' `nonroot`, the user of ward's image.
pub const SIDECAR_UID: i64 = 65532;

/// App ids of Dapr's control-plane services: a workload claiming one could pass for the control plane.
pub const CONTROL_PLANE_APP_IDS: &[&str] =
    &["dapr-operator", "dapr-sentry", "dapr-injector", "dapr-placement", "dapr-scheduler", "dapr-sidecar-injector"];

/// What the injector knows besides the pod: where the control plane is and which image to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorConfig {
    /// The sidecar image (a pod's `dapr.io/sidecar-image` overrides it).
    pub sidecar_image: String,
    pub control_plane_namespace: String,
    pub control_plane_trust_domain: String,
    pub kube_cluster_domain: String,
    /// Inject `--production` into every sidecar (refuse development shortcuts and unsupported settings).
    pub sidecar_production: bool,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        Self {
            sidecar_image: DEFAULT_SIDECAR_IMAGE.to_owned(),
            control_plane_namespace: DEFAULT_CONTROL_PLANE_NAMESPACE.to_owned(),
            control_plane_trust_domain: DEFAULT_CONTROL_PLANE_TRUST_DOMAIN.to_owned(),
            kube_cluster_domain: DEFAULT_KUBE_CLUSTER_DOMAIN.to_owned(),
            sidecar_production: false,
        }
    }
}

/// A setting of [`InjectorConfig`] that cannot be right.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("control-plane trust domain {value:?}: {source}")]
    TrustDomain {
        value: String,
        #[source]
        source: ward_identity::SpiffeIdError,
    },
    #[error("control-plane namespace {value:?}: {source}")]
    Namespace {
        value: String,
        #[source]
        source: ward_identity::DaprNameError,
    },
    #[error("cluster domain {value:?}: not a DNS name")]
    ClusterDomain { value: String },
    #[error("sidecar image {value:?}: empty or contains whitespace")]
    Image { value: String },
}

impl InjectorConfig {
    /// Checks every field once at start, so a review never meets a bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ward_identity::TrustDomain::new(&self.control_plane_trust_domain)
            .map_err(|source| ConfigError::TrustDomain { value: self.control_plane_trust_domain.clone(), source })?;
        ward_identity::validate_kubernetes_namespace(&self.control_plane_namespace)
            .map_err(|source| ConfigError::Namespace { value: self.control_plane_namespace.clone(), source })?;
        if annotations::parse_host("--kube-cluster-domain", &self.kube_cluster_domain).is_err() {
            return Err(ConfigError::ClusterDomain { value: self.kube_cluster_domain.clone() });
        }
        if !sidecar::is_image_reference(&self.sidecar_image) {
            return Err(ConfigError::Image { value: self.sidecar_image.clone() });
        }
        Ok(())
    }

    /// Sentry's SPIFFE ID: the audience of the projected token the sidecar presents to sentry.
    pub fn sentry_spiffe_id(&self) -> String {
        format!("spiffe://{}/ns/{}/dapr-sentry", self.control_plane_trust_domain, self.control_plane_namespace)
    }

    /// Where sidecars reach sentry (Dapr's `dapr-sentry` Service, port 443).
    pub fn sentry_address(&self) -> String {
        format!("dapr-sentry.{}.svc.{}:443", self.control_plane_namespace, self.kube_cluster_domain)
    }

    /// Where sidecars reach the operator (Dapr's `dapr-api` Service, port 443).
    pub fn operator_address(&self) -> String {
        format!("dapr-api.{}.svc.{}:443", self.control_plane_namespace, self.kube_cluster_domain)
    }
}

/// Why a pod is refused. Every variant names the annotation (or the namespace) and the value's problem, so the
/// API server's error tells the user what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("annotation {annotation}: invalid value {value:?}: {problem}")]
    InvalidValue { annotation: &'static str, value: String, problem: String },
    #[error("annotation {annotation}: value {value:?} refused: ward has no such feature ({reason})")]
    Unsupported { annotation: &'static str, value: String, reason: &'static str },
    #[error(
        "annotation {annotation}: not an annotation of Dapr's sidecar injector (refused rather than ignored; check \
         its spelling)"
    )]
    UnknownAnnotation { annotation: String },
    #[error("annotation dapr.io/app-id: {app_id:?} is reserved for the Dapr control plane")]
    ControlPlaneAppId { app_id: String },
    #[error(
        "annotation dapr.io/enabled: pods in the control-plane namespace {namespace:?} get no sidecar (the control \
         plane must not depend on itself)"
    )]
    ControlPlaneNamespace { namespace: String },
    #[error(
        "annotation dapr.io/app-id: absent, so the app id is the pod name {pod_name:?} (Dapr's rule), which is not a \
         valid app id: {problem}; set dapr.io/app-id"
    )]
    AppIdFromPodName { pod_name: String, problem: String },
    #[error("annotation {annotation}: {problem}")]
    Conflict { annotation: &'static str, problem: String },
    #[error("{problem}")]
    NotAPod { problem: String },
}
