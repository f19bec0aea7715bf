//! Building-block backends for ward, each behind a trait: state stores ([`state`]), secret stores
//! ([`secretstores`]) and the self-hosted name-resolution registry ([`nameresolution`]).
//!
//! [`classify_component`] says, before anything is built, whether a `spec.type` is a state store, a secret store,
//! an HTTP middleware, a Dapr building block ward does not implement yet, or refused (unknown types).
//!
//! The sidecar hands each component its type, version, name and already-resolved metadata
//! ([`ComponentMetadata`]) plus a [`BuildContext`]; a factory returns a ready component or a [`ComponentError`]
//! that names the offending field.
//!
//! This crate does not parse YAML, resolve secret references, speak HTTP or gRPC, or decide authorization
//! (component scopes, secret scopes and ACLs are the sidecar's and `ward-policy`'s). It never logs or returns a
//! metadata value, a state value or a secret value in an error.

pub mod metadata;
pub mod nameresolution;
pub mod pubsub;
pub mod secretstores;
pub mod state;
pub mod support;

mod redis_conn;
mod sqlite_conn;

use std::path::PathBuf;

pub use metadata::{BoxError, ComponentError, ComponentMetadata};
pub use support::{
    ComponentSupport, MIDDLEWARE_TYPES, NOT_IMPLEMENTED_BUILDING_BLOCKS, classify_component, component_capabilities,
};

/// What a factory needs to know about the sidecar that is building a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContext {
    /// `$WARD_HOME`: where components keep local data by default (e.g. `state.sqlite` without a connection string).
    pub data_dir: PathBuf,
    /// Directory that relative paths in metadata are resolved against (e.g. `secretsFile`): the directory the
    /// sidecar runs from, or the resources directory, as the sidecar decides.
    pub base_dir: PathBuf,
    /// The sidecar's working directory: daprd opens relative file paths in metadata (`secretsFile`) from here.
    pub working_dir: PathBuf,
    /// This sidecar's app id.
    pub app_id: String,
    /// This sidecar's namespace (may be empty).
    pub namespace: String,
}

/// Dapr looks component types up case-insensitively.
pub(crate) fn normalize_type(component_type: &str) -> String {
    component_type.trim().to_ascii_lowercase()
}

/// Checks `(type, version)` against a factory's table; unknown type → `spec.type`, unknown version →
/// `spec.version`.
pub(crate) fn check_version(
    table: &[(&str, &str)],
    normalized_type: &str,
    version: &str,
    what: &str,
) -> Result<(), ComponentError> {
    let versions: Vec<&str> = table.iter().filter(|(t, _)| *t == normalized_type).map(|(_, v)| *v).collect();
    if versions.is_empty() {
        let known: Vec<&str> = table.iter().map(|(t, _)| *t).collect();
        return Err(ComponentError::new(
            "spec.type",
            format!("unknown {what} type {normalized_type:?} (this build supports: {})", known.join(", ")),
        ));
    }
    let v = version.trim();
    if !versions.iter().any(|known| known.eq_ignore_ascii_case(v)) {
        return Err(ComponentError::new(
            "spec.version",
            format!("unsupported version {v:?} for {normalized_type} (supported: {})", versions.join(", ")),
        ));
    }
    Ok(())
}
