//! ward's certificate authority (Dapr Sentry's role): CA material on disk, CSR checks and signing, the
//! bootstrap-credential validators, the wire-compatible `dapr.proto.sentry.v1.CA` gRPC service, and the client a
//! sidecar uses to obtain and renew its SVID.
//!
//! What it does not do: decide what an identity may access (`ward-policy`), or verify peers (`ward-identity`).

pub mod audit;
pub mod client;
pub mod material;
pub mod metrics;
pub mod server;
pub mod signer;
pub mod validator;

/// The generated `dapr.proto.sentry.v1` types (from `proto/sentry.proto`; see that file to regenerate).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!("proto/dapr.proto.sentry.v1.rs");
}

pub use client::{ClientError, ControlPlaneSetupError, SentryClient, SentryClientConfig, control_plane_client_config};
pub use client::{PinError, SvidSupervisor, check_pinned};
pub use server::{BoundAddrs, Ca, PeerCertificates, RequestSpan, RequestTracer, SentryConfig, SentryError, run};
pub use validator::{
    Approval, BootstrapRequest, CredentialError, Grant, JoinTokens, JwksValidator, JwtRules, NetworkValidator,
    ValidationFuture, Validator, ValidatorError, ValidatorKind,
};
