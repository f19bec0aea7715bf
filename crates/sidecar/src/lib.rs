//! The ward sidecar runtime: the public Dapr HTTP API an app talks to on 127.0.0.1, the internal mTLS port other
//! sidecars call, the app channel, and the enforcement points on the way (identity from the verified certificate,
//! path normalisation, access control, audit).
//!
//! It does not parse CLI flags (the `ward` binary does), define policy semantics (`ward-policy`), or implement
//! storage backends (`ward-components`).

pub mod app_callback;
pub mod audit;
pub mod components;
pub mod error;
pub mod grpc_api;
pub mod headers;
pub mod internal;
pub mod public;
pub mod runtime;
pub mod secrets_api;
pub mod state;
pub mod state_api;
pub mod transport;

pub use runtime::{MtlsOptions, Sidecar, SidecarOptions, StartError};
