//! The raw shapes of the Dapr Configuration sections that policy decisions are made from, exactly as they appear
//! in YAML (`rename_all = "camelCase"`). Nothing here is validated: the `compile` functions of the sibling modules
//! turn these into checked, ready-to-evaluate values and refuse what is wrong, naming the offending entry.
//!
//! These types are shared with `ward-config`, which embeds them in its `ConfigurationSpec`.

use serde::Deserialize;

/// `spec.accessControl` (DAPR-FACTS §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessControlSpec {
    #[serde(default)]
    pub default_action: Option<String>,
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// `None` (key absent) and `Some(vec![])` (explicitly empty) differ in Dapr's fallback rules.
    #[serde(default)]
    pub policies: Option<Vec<AppPolicySpec>>,
}

/// One entry of `spec.accessControl.policies`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPolicySpec {
    #[serde(default)]
    pub app_id: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub trust_domain: String,
    #[serde(default)]
    pub default_action: Option<String>,
    #[serde(default)]
    pub operations: Vec<OperationSpec>,
}

/// One entry of `policies[].operations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSpec {
    pub name: String,
    #[serde(default)]
    pub http_verb: Vec<String>,
    #[serde(default)]
    pub action: Option<String>,
}

/// `spec.secrets` (DAPR-FACTS §4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretsSpec {
    #[serde(default)]
    pub scopes: Vec<SecretScopeSpec>,
}

/// One entry of `spec.secrets.scopes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretScopeSpec {
    pub store_name: String,
    #[serde(default)]
    pub default_access: Option<String>,
    #[serde(default)]
    pub allowed_secrets: Vec<String>,
    #[serde(default)]
    pub denied_secrets: Vec<String>,
}

/// `spec.api` (DAPR-FACTS §5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    #[serde(default)]
    pub allowed: Option<Vec<ApiRuleSpec>>,
    #[serde(default)]
    pub denied: Option<Vec<ApiRuleSpec>>,
}

/// One entry of `spec.api.allowed` / `spec.api.denied`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiRuleSpec {
    pub name: String,
    #[serde(default)]
    pub version: String,
    /// `http` or `grpc`; Dapr treats an empty protocol as `http`.
    #[serde(default)]
    pub protocol: String,
}
