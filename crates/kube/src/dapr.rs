//! Dapr's custom resources (group `dapr.io`), addressed dynamically: ward reads their `spec` with its own
//! parsers (`ward-config`), the same ones that read the YAML files in self-hosted mode.

use kube::api::{ApiResource, GroupVersionKind};

pub const GROUP: &str = "dapr.io";

fn resource(version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, version, kind), plural)
}

/// `configurations.dapr.io/v1alpha1`.
pub fn configuration() -> ApiResource {
    resource("v1alpha1", "Configuration", "configurations")
}

/// `components.dapr.io/v1alpha1`.
pub fn component() -> ApiResource {
    resource("v1alpha1", "Component", "components")
}
