//! Dapr's operator API (`dapr.proto.operator.v1.Operator`), wire-compatible with dapr/dapr: the generated
//! messages, client and server trait that `ward operator` serves and `ward sidecar --mode kubernetes` calls. Each
//! resource travels as the JSON of its Kubernetes object, as in Dapr.
//!
//! What it does not do: decide who may see what (the operator, `ward-kube`), or turn the JSON into ward's
//! resources (`ward-config`).

/// The generated `dapr.proto.operator.v1` types (from `proto/operator.proto`; see that file to regenerate).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!("proto/dapr.proto.operator.v1.rs");
}

pub use proto::ResourceEventType;
pub use proto::operator_client::OperatorClient;
pub use proto::operator_server::{Operator, OperatorServer};

/// Dapr's operator listens here in the pod (Service `dapr-api` port 443 forwards to it).
pub const DEFAULT_PORT: u16 = 6500;
/// The operator's app id in the control-plane namespace (its SPIFFE ID ends `/ns/<cp-ns>/dapr-operator`).
pub const OPERATOR_APP_ID: &str = "dapr-operator";
