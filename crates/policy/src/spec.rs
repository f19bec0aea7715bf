//! The raw shapes of the Dapr Configuration sections that policy decisions are made from, exactly as they appear
//! in YAML (`rename_all = "camelCase"`). Nothing here is validated: the `compile` functions of the sibling modules
//! turn these into checked, ready-to-evaluate values and refuse what is wrong, naming the offending entry.
//!
//! Unknown keys are refused (`deny_unknown_fields`): these are security controls, and a misspelt key such as
//! `defaultActon: deny` must be an error, never a rule that silently falls back to the default. (`ward-config`
//! also checks every key against Dapr's schema first, so its error names the field and lists the known keys.)
//!
//! These types are shared with `ward-config`, which embeds them in its `ConfigurationSpec`.

use serde::Deserialize;

/// `spec.accessControl` (DAPR-FACTS §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationSpec {
    pub name: String,
    #[serde(default)]
    pub http_verb: Vec<String>,
    #[serde(default)]
    pub action: Option<String>,
}

/// `spec.secrets` (DAPR-FACTS §4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretsSpec {
    #[serde(default)]
    pub scopes: Vec<SecretScopeSpec>,
}

/// One entry of `spec.secrets.scopes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiSpec {
    #[serde(default)]
    pub allowed: Option<Vec<ApiRuleSpec>>,
    #[serde(default)]
    pub denied: Option<Vec<ApiRuleSpec>>,
}

/// One entry of `spec.api.allowed` / `spec.api.denied`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiRuleSpec {
    pub name: String,
    #[serde(default)]
    pub version: String,
    /// `http` or `grpc`; Dapr treats an empty protocol as `http`.
    #[serde(default)]
    pub protocol: String,
}

/// `spec.ward.capabilities` (issue 15): who holds which capability, and what each route of this app requires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilitiesSpec {
    #[serde(default)]
    pub grants: Vec<GrantSpec>,
    #[serde(default)]
    pub routes: Vec<CapabilityRouteSpec>,
}

/// One entry of `spec.ward.capabilities.grants`: a caller (`appId` + `namespace`, or `spiffeId`) and what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantSpec {
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub spiffe_id: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// One entry of `spec.ward.capabilities.routes`: an operation name (accessControl syntax), optional verbs, and the
/// capabilities a caller must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilityRouteSpec {
    pub name: String,
    #[serde(default)]
    pub http_verb: Vec<String>,
    #[serde(default)]
    pub requires: Vec<String>,
}

/// `spec.ward.mcp`: tool-level rules for an MCP server behind this sidecar (ward's extension).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpSpec {
    /// The server's streamable-HTTP path, e.g. `/mcp`.
    #[serde(default)]
    pub endpoint: String,
    /// `allow` or `deny` for tools no rule names.
    #[serde(default)]
    pub default_action: Option<String>,
    #[serde(default)]
    pub rules: Vec<McpRuleSpec>,
    /// Forward JSON-RPC methods ward does not know instead of refusing them.
    #[serde(default)]
    pub passthrough_unknown_methods: Option<bool>,
}

/// One entry of `spec.ward.mcp.rules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpRuleSpec {
    /// App ids in the callee's namespace, or `spiffe://` IDs.
    #[serde(default)]
    pub callers: Vec<String>,
    /// Tool names: exact, or a trailing-`*` prefix; `*` alone is every tool.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Same syntax; a deny wins over any allow.
    #[serde(default)]
    pub deny: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each raw section refuses a key it does not know, at every level.
    #[test]
    fn misspelt_keys_are_refused() {
        let acl = |yaml: &str| serde_saphyr::from_str::<AccessControlSpec>(yaml).map(|_| ()).map_err(|e| e.to_string());
        assert!(acl("defaultAction: deny\npolicies:\n- appId: a\n  defaultAction: allow\n").is_ok());
        for bad in [
            "defaultActon: deny\n",
            "policies:\n- appId: a\n  defaultActon: deny\n",
            "policies:\n- appId: a\n  operations:\n  - name: /x\n    actoin: deny\n",
        ] {
            let err = acl(bad).expect_err(bad);
            assert!(err.contains("unknown field"), "{bad}: {err}");
        }
        assert!(serde_saphyr::from_str::<SecretsSpec>("scopes:\n- storeName: s\n  defaultAcess: deny\n").is_err());
        assert!(serde_saphyr::from_str::<SecretsSpec>("scope: []\n").is_err());
        assert!(serde_saphyr::from_str::<ApiSpec>("denyed:\n- name: invoke\n").is_err());
        assert!(serde_saphyr::from_str::<ApiSpec>("denied:\n- name: invoke\n  protocl: grpc\n").is_err());
        let caps = |yaml: &str| serde_saphyr::from_str::<CapabilitiesSpec>(yaml).map(|_| ());
        assert!(caps("grants:\n- appId: a\n  namespace: n\n  capabilities: [x]\n").is_ok());
        assert!(caps("grant: []\n").is_err());
        assert!(caps("grants:\n- appId: a\n  capabilites: [x]\n").is_err());
        assert!(caps("routes:\n- name: /x\n  require: [x]\n").is_err());
    }
}
