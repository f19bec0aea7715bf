//! ward on Kubernetes. kube-rs (client, watchers) with k8s-openapi's types; nothing here shells out to `kubectl`.
//!
//! - [`client`]: one way to reach the API server (in-cluster service account, or a kubeconfig).
//! - [`dapr`]: Dapr's CRDs (group `dapr.io`) as dynamic resources, so users' YAML applies unchanged.
//! - [`install`]: the control plane's manifests (`deploy/kubernetes/`), applied, removed and inspected.

#![forbid(unsafe_code)]

pub mod client;
pub mod dapr;
pub mod install;

pub use client::{KubeError, connect};
