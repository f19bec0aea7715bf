//! The secrets building block: the [`SecretStore`] trait, the local stores (`secretstores.local.file`,
//! `secretstores.local.env`) and `secretstores.kubernetes`, plus the factory that builds one from a component's type, version and metadata.
//!
//! Owns: reading secrets from the backend and Dapr's shape of the answer (a secret is a map of key → value).
//!
//! Does not: apply secret scopes (`spec.secrets.scopes` is enforced by the sidecar before it calls a store), or
//! resolve `secretKeyRef`s in other components. Secret values never appear in errors or `Debug` output; an unknown
//! secret is `Ok(None)` so the sidecar can answer exactly as for an out-of-scope one.

mod kubernetes;
mod local_env;
mod local_file;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::metadata::{BoxError, ComponentError, ComponentMetadata};
use crate::{BuildContext, check_version, normalize_type};

pub use kubernetes::KubernetesSecretStore;
pub use local_env::{EnvSource, LocalEnvSecretStore};
pub use local_file::{LocalFileOptions, LocalFileSecretStore};

/// One secret: its key → value pairs.
pub type Secret = BTreeMap<String, String>;

/// A secret store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    /// The backend failed; the cause is kept (it never contains a secret value).
    #[error("secret store {operation} failed: {source}")]
    Backend {
        /// What we were doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The store does not implement this operation.
    #[error("operation {operation} is not supported by this secret store")]
    NotSupported {
        /// The operation asked for.
        operation: &'static str,
    },
}

/// A read-only secret store.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// One secret by name; `None` when there is no such secret (or it is hidden by the store).
    /// `metadata` is the request's metadata (unused by the local stores).
    async fn get_secret(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<Secret>, SecretStoreError>;

    /// Every secret, by name.
    async fn bulk_get_secret(
        &self,
        metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, SecretStoreError>;
}

/// The secret store types this build can create, as `(type, version)`.
pub fn secret_store_types() -> &'static [(&'static str, &'static str)] {
    &[("secretstores.local.file", "v1"), ("secretstores.local.env", "v1"), ("secretstores.kubernetes", "v1")]
}

/// Builds a secret store from a component's `spec.type`, `spec.version`, name and resolved metadata.
pub async fn build_secret_store(
    component_type: &str,
    version: &str,
    _name: &str,
    metadata: &ComponentMetadata,
    ctx: &BuildContext,
) -> Result<Arc<dyn SecretStore>, ComponentError> {
    let ty = normalize_type(component_type);
    check_version(secret_store_types(), &ty, version, "secret store")?;
    match ty.as_str() {
        "secretstores.local.file" => {
            let opts = LocalFileOptions::from_metadata(metadata, &ctx.working_dir, &ctx.base_dir)?;
            Ok(Arc::new(LocalFileSecretStore::load(&opts).await?))
        }
        "secretstores.local.env" => Ok(Arc::new(LocalEnvSecretStore::from_metadata(metadata))),
        "secretstores.kubernetes" => Ok(Arc::new(KubernetesSecretStore::from_metadata(metadata, ctx).await?)),
        _ => Err(ComponentError::new("spec.type", format!("unknown secret store type {component_type:?}"))),
    }
}
