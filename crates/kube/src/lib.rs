//! ward on Kubernetes. kube-rs (client, watchers) with k8s-openapi's types; nothing here shells out to `kubectl`.
//!
//! - [`client`]: one way to reach the API server (in-cluster service account, or a kubeconfig).
//! - [`dapr`]: Dapr's CRDs (group `dapr.io`) as dynamic resources, so users' YAML applies unchanged.
//! - [`operator`]: `ward operator`, Dapr's operator API over the cluster's CRDs, and the `<app-id>-dapr` Services.
//! - [`install`]: the control plane's manifests (`deploy/kubernetes/`), applied, removed and inspected.
//! - [`sentry`]: sentry's Kubernetes validator (TokenReview, pod checks, app-id bindings).
//! - [`rotation`]: root rotation without downtime (append, switch the issuer, retire the old root).
//! - [`trust_bundle`]: CA material in Secret `dapr-trust-bundle`, roots in ConfigMaps `dapr-root-ca.crt`.

#![forbid(unsafe_code)]

pub mod client;
pub mod dapr;
pub mod install;
pub mod operator;
pub mod rotation;
pub mod sentry;
pub mod trust_bundle;

pub use client::{KubeError, connect};
