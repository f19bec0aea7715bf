//! The metadata building block, protocol-neutral: one typed [`Metadata`] value that the HTTP front end renders as
//! JSON and the gRPC front end as `GetMetadataResponse` (neither re-parses the other's output).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::components::Components;

/// `extended` keys ward sets itself.
const RESERVED_KEYS: &[&str] = &["appCommand", "daprRuntimeVersion", "spiffeId", "mtls"];

/// ward's runtime version as Dapr's metadata shows it.
pub(crate) const RUNTIME_VERSION: &str = concat!("ward-", env!("CARGO_PKG_VERSION"));

/// How the sidecar reaches its app.
#[derive(Debug, Clone)]
pub(crate) struct AppConnection {
    pub(crate) port: u16,
    pub(crate) protocol: &'static str,
    pub(crate) channel_address: String,
}

/// One loaded component.
#[derive(Debug, Clone)]
pub(crate) struct ComponentMetadata {
    pub(crate) name: String,
    pub(crate) component_type: String,
    pub(crate) version: String,
    pub(crate) capabilities: Vec<&'static str>,
}

/// What `GET /v1.0/metadata` and gRPC `GetMetadata` answer.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub(crate) id: String,
    pub(crate) components: Vec<ComponentMetadata>,
    pub(crate) app_connection: AppConnection,
    /// Dapr's `extended` map: string values only.
    pub(crate) extended: BTreeMap<String, String>,
    pub(crate) subscriptions: Arc<Vec<crate::pubsub::subscriptions::SubscriptionInfo>>,
}

/// At most this many keys an app may set in its extended metadata (memory stays bounded).
pub(crate) const MAX_CUSTOM_KEYS: usize = 256;
/// Longest key or value an app may set, in bytes.
pub(crate) const MAX_CUSTOM_BYTES: usize = 4096;

/// Why an app's metadata could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SetMetadataError {
    #[error("metadata keys and values are at most {MAX_CUSTOM_BYTES} bytes")]
    TooLong,
    #[error("at most {MAX_CUSTOM_KEYS} metadata keys can be set")]
    TooMany,
    #[error("metadata key {0:?} is ward's own and cannot be set")]
    Reserved(String),
}

/// What the metadata building block uses.
pub(crate) struct MetadataCore {
    pub(crate) app_id: String,
    pub(crate) components: Arc<Components>,
    pub(crate) app_connection: AppConnection,
    pub(crate) spiffe_id: String,
    pub(crate) mtls: bool,
    /// What the app set with `PUT /v1.0/metadata/{key}` / `SetMetadata` (Dapr shows it under `extended`).
    pub(crate) custom: std::sync::RwLock<BTreeMap<String, String>>,
    /// The active pub/sub subscriptions (set by the subscriber task).
    pub(crate) subscriptions: Arc<arc_swap::ArcSwap<Vec<crate::pubsub::subscriptions::SubscriptionInfo>>>,
}

impl MetadataCore {
    /// Stores one key of the app's extended metadata. ward's own keys (`spiffeId`, `mtls`, …) cannot be set: an app
    /// must not be able to make its metadata claim another identity.
    pub(crate) fn set(&self, key: String, value: String) -> Result<(), SetMetadataError> {
        if key.len() > MAX_CUSTOM_BYTES || value.len() > MAX_CUSTOM_BYTES {
            return Err(SetMetadataError::TooLong);
        }
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(SetMetadataError::Reserved(key));
        }
        let mut custom = self.custom.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if custom.len() >= MAX_CUSTOM_KEYS && !custom.contains_key(&key) {
            return Err(SetMetadataError::TooMany);
        }
        custom.insert(key, value);
        Ok(())
    }

    pub(crate) fn metadata(&self) -> Metadata {
        let components = self
            .components
            .load()
            .components()
            .iter()
            .map(|c| ComponentMetadata {
                name: c.name.clone(),
                component_type: c.component_type.clone(),
                version: c.version.clone(),
                capabilities: c.capabilities.clone(),
            })
            .collect();
        let mut extended = self.custom.read().map(|c| c.clone()).unwrap_or_default();
        extended.extend([
            ("appCommand".to_owned(), String::new()),
            ("daprRuntimeVersion".to_owned(), RUNTIME_VERSION.to_owned()),
            ("spiffeId".to_owned(), self.spiffe_id.clone()),
            ("mtls".to_owned(), self.mtls.to_string()),
        ]);
        Metadata {
            id: self.app_id.clone(),
            components,
            app_connection: self.app_connection.clone(),
            extended,
            subscriptions: self.subscriptions.load_full(),
        }
    }
}

impl Metadata {
    /// Dapr's JSON shape.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "runtimeVersion": RUNTIME_VERSION,
            "enabledFeatures": [],
            "actors": [],
            "components": self.components.iter().map(|c| serde_json::json!({
                "name": c.name,
                "type": c.component_type,
                "version": c.version,
                "capabilities": c.capabilities,
            })).collect::<Vec<_>>(),
            "subscriptions": self.subscriptions.as_ref(),
            "httpEndpoints": [],
            "appConnectionProperties": {
                "port": self.app_connection.port,
                "protocol": self.app_connection.protocol,
                "channelAddress": self.app_connection.channel_address,
                "maxConcurrency": 0,
            },
            "extended": self.extended,
        })
    }
}
