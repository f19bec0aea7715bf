//! The ward sidecar runtime: the public Dapr HTTP and gRPC APIs an app talks to on 127.0.0.1, the internal mTLS
//! port other sidecars call, the app channel, and the enforcement points on the way.
//!
//! Layout: `settings` resolves flags + Configuration once; `inbound/` is the callee stack (one tower layer per
//! check, in order); `invoke`, `state`, `secrets_api`, `metadata` are protocol-neutral cores behind the HTTP
//! (`public`, `state_api`) and gRPC (`grpc_api`) front ends; `error` is the one place errors become answers;
//! `watcher` reloads configuration atomically; `runtime` wires it all.
//!
//! It does not parse CLI flags (the `ward` binary does), define policy semantics (`ward-policy`), or implement
//! storage backends (`ward-components`).

pub(crate) mod api_list;
pub mod app_health;
pub mod audit;
mod body;
pub(crate) mod components;
pub mod control_plane;
pub(crate) mod error;
pub(crate) mod grpc_api;
pub(crate) mod headers;
pub(crate) mod inbound;
pub(crate) mod invoke;
pub(crate) mod listeners;
pub(crate) mod metadata;
pub(crate) mod metrics;
pub(crate) mod middleware;
pub mod otel;
pub(crate) mod provenance;
pub(crate) mod public;
pub(crate) mod pubsub;
pub(crate) mod replay;
pub mod resolver;
pub mod runtime;
pub(crate) mod secrets_api;
pub mod settings;
pub(crate) mod state;
pub(crate) mod state_api;
pub(crate) mod transport;
pub(crate) mod watcher;

pub use app_health::AppHealthCheck;
pub use control_plane::ControlPlaneOptions;
pub use runtime::{MtlsOptions, Sidecar, SidecarOptions, StartError};
pub use settings::{Policies, Settings, SettingsError, Unhonoured, UnsupportedFlag, compile_policies};
pub use ward_net::MetricsListen;

/// For benchmarks only (`crates/cli/examples/pubsub_bench.rs`): the publisher signature on its own, so its cost
/// per event can be measured apart from brokers and HTTP. Not an API.
#[doc(hidden)]
pub mod bench_support {
    use std::sync::Arc;
    use std::time::Duration;

    use ward_identity::{SvidResolver, TrustBundleHandle};

    /// Adds `wardsig` to `event` with the SVID `svid` holds.
    pub fn sign_event(svid: Arc<SvidResolver>, event: &mut serde_json::Map<String, serde_json::Value>) -> bool {
        crate::pubsub::signature::EventSigner { svid }.sign(event).is_ok()
    }

    /// A verifier as a subscribing sidecar holds one (it remembers chains that verified).
    pub fn verifier(bundle: TrustBundleHandle) -> crate::pubsub::signature::EventVerifier {
        crate::pubsub::signature::EventVerifier::new(bundle, Duration::from_secs(60))
    }

    /// Verifies `event`'s `wardsig` with `verifier`; the publisher's app id.
    pub fn verify_event(
        verifier: &crate::pubsub::signature::EventVerifier,
        event: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, String> {
        verifier.verify(event).map(|p| p.app_id).map_err(|e| e.to_string())
    }
}
