//! The metadata building block, protocol-neutral: one typed [`Metadata`] value that the HTTP front end renders as
//! JSON and the gRPC front end as `GetMetadataResponse` (neither re-parses the other's output).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::components::Components;

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
}

/// What `GET /v1.0/metadata` and gRPC `GetMetadata` answer.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub(crate) id: String,
    pub(crate) components: Vec<ComponentMetadata>,
    pub(crate) app_connection: AppConnection,
    /// Dapr's `extended` map: string values only.
    pub(crate) extended: BTreeMap<String, String>,
}

/// What the metadata building block uses.
pub(crate) struct MetadataCore {
    pub(crate) app_id: String,
    pub(crate) components: Arc<Components>,
    pub(crate) app_connection: AppConnection,
    pub(crate) spiffe_id: String,
    pub(crate) mtls: bool,
}

impl MetadataCore {
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
            })
            .collect();
        let extended = BTreeMap::from([
            ("appCommand".to_owned(), String::new()),
            ("daprRuntimeVersion".to_owned(), RUNTIME_VERSION.to_owned()),
            ("spiffeId".to_owned(), self.spiffe_id.clone()),
            ("mtls".to_owned(), self.mtls.to_string()),
        ]);
        Metadata { id: self.app_id.clone(), components, app_connection: self.app_connection.clone(), extended }
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
                "capabilities": [],
            })).collect::<Vec<_>>(),
            "subscriptions": [],
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
