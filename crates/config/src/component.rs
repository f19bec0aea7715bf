//! `kind: Component`: the raw YAML shape, the checked [`Component`], its scopes, and resolving its metadata
//! (plain values, `secretKeyRef`, `envRef`) into a [`ResolvedMetadata`] map whose `Debug` hides the values.
//!
//! Owns: the rules any component must satisfy (name, `type`, `version` (absent or empty means `v1`), metadata
//! items, secret/env references). Does not know which component types exist or which metadata a type needs (the components crate checks that and
//! reports it with [`ConfigError::invalid_component`]), and does not talk to secret stores: resolution takes a
//! callback.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{BoxError, ConfigError, MetadataItemRef, ResolveError, ResourceId, ResourceKind};
use crate::meta::{Header, RawObjectMeta, check_resource_name};
use crate::yaml::{Document, check_key_case, child, elements, scalar_string};

/// The only apiVersion Dapr defines for components.
pub const COMPONENT_API_VERSION: &str = "dapr.io/v1alpha1";

/// The version of a component whose `spec.version` is absent or empty, as in Dapr.
pub const DEFAULT_COMPONENT_VERSION: &str = "v1";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawComponent {
    #[serde(default)]
    metadata: RawObjectMeta,
    #[serde(default)]
    spec: RawComponentSpec,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawComponentSpec {
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    ignore_errors: Option<bool>,
    #[serde(default)]
    init_timeout: Option<String>,
    #[serde(default)]
    metadata: Option<Vec<RawMetadataItem>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuth {
    /// Dapr's docs spell it `secretstore`; Go's JSON decoder accepts either.
    #[serde(default, alias = "secretstore")]
    secret_store: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadataItem {
    #[serde(default)]
    name: Option<String>,
    /// Any YAML value; kept in its string form.
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    secret_key_ref: Option<RawSecretKeyRef>,
    #[serde(default)]
    env_ref: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSecretKeyRef {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// A checked `kind: Component`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    name: String,
    namespace: Option<String>,
    type_: String,
    version: String,
    ignore_errors: bool,
    init_timeout: Option<Duration>,
    metadata: Vec<MetadataItem>,
    secret_store: Option<String>,
    scopes: Vec<String>,
    source: PathBuf,
    document: usize,
}

/// One `spec.metadata` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataItem {
    pub name: String,
    pub value: MetadataValue,
}

/// Where a metadata item's value comes from. `Debug` never shows a literal value.
#[derive(Clone, PartialEq, Eq)]
pub enum MetadataValue {
    /// `value:` written in the file (string form of the scalar; empty when absent).
    Value(String),
    /// `secretKeyRef: {name, key}`, read from the component's `auth.secretStore`. `key` defaults to `name`.
    SecretKeyRef { name: String, key: String },
    /// `envRef: VAR`, read from the sidecar's environment.
    EnvRef(String),
}

impl fmt::Debug for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The file may hold a plain-text password; a `{:?}` of a component must not print it.
            MetadataValue::Value(_) => f.write_str("Value(<redacted>)"),
            MetadataValue::SecretKeyRef { name, key } => {
                f.debug_struct("SecretKeyRef").field("name", name).field("key", key).finish()
            }
            MetadataValue::EnvRef(var) => f.debug_tuple("EnvRef").field(var).finish(),
        }
    }
}

/// What the resolver callback of [`Component::resolve_metadata`] is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretRef<'a> {
    /// The secret store component (`auth.secretStore`).
    pub store: &'a str,
    /// The secret's name (`secretKeyRef.name`).
    pub name: &'a str,
    /// The key inside the secret (`secretKeyRef.key`, defaulting to the name).
    pub key: &'a str,
}

impl Component {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `metadata.namespace`, when set and non-empty.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
    /// `spec.type`, e.g. `state.redis`.
    pub fn component_type(&self) -> &str {
        &self.type_
    }
    /// The building block, i.e. the part of `spec.type` before the first dot (`state`, `pubsub`, `secretstores`).
    pub fn building_block(&self) -> &str {
        self.type_.split_once('.').map_or(self.type_.as_str(), |(block, _)| block)
    }
    /// `spec.version`, e.g. `v1`.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// `spec.ignoreErrors` (default false).
    pub fn ignore_errors(&self) -> bool {
        self.ignore_errors
    }
    /// `spec.initTimeout`, when set.
    pub fn init_timeout(&self) -> Option<Duration> {
        self.init_timeout
    }
    /// `spec.metadata`, in file order, unresolved.
    pub fn metadata(&self) -> &[MetadataItem] {
        &self.metadata
    }
    /// `auth.secretStore`, when set.
    pub fn secret_store(&self) -> Option<&str> {
        self.secret_store.as_deref()
    }
    /// Top-level `scopes` (empty = every app).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
    /// The file the component was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Whether the app `app_id` may use this component: listed in `scopes`, or `scopes` empty/absent (DAPR-FACTS
    /// §4.1). Exact, case-sensitive match, as Dapr.
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }

    pub(crate) fn resource_id(&self) -> ResourceId {
        ResourceId { kind: ResourceKind::Component, name: Some(self.name.clone()), document: self.document }
    }

    /// Resolve every metadata item to its value: literal values as they are, `secretKeyRef` through `resolver`
    /// (asked for store/name/key; `Ok(None)` means "no such secret or key"), `envRef` through `env`.
    ///
    /// Errors name the component, the item and the store/secret/key or variable, never a value; a resolver error is
    /// kept as the `source`. The first failure stops resolution.
    pub fn resolve_metadata<E>(
        &self,
        mut resolver: impl FnMut(SecretRef<'_>) -> Result<Option<String>, E>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ResolvedMetadata, ResolveError>
    where
        E: Into<BoxError>,
    {
        let mut values = BTreeMap::new();
        for item in &self.metadata {
            let at = || {
                Box::new(MetadataItemRef {
                    path: self.source.clone(),
                    component: self.name.clone(),
                    item: item.name.clone(),
                })
            };
            let value = match &item.value {
                MetadataValue::Value(v) => v.clone(),
                MetadataValue::SecretKeyRef { name, key } => {
                    let Some(store) = self.secret_store.as_deref() else {
                        return Err(ResolveError::NoSecretStore { at: at() });
                    };
                    match resolver(SecretRef { store, name, key }) {
                        Ok(Some(v)) => v,
                        Ok(None) => {
                            return Err(ResolveError::SecretNotFound {
                                at: at(),
                                store: store.to_string(),
                                secret: name.clone(),
                                key: key.clone(),
                            });
                        }
                        Err(e) => {
                            return Err(ResolveError::SecretStore {
                                at: at(),
                                store: store.to_string(),
                                secret: name.clone(),
                                key: key.clone(),
                                source: e.into(),
                            });
                        }
                    }
                }
                MetadataValue::EnvRef(var) => {
                    // Checked at load too; repeated here because this is where the variable is actually read.
                    if env_ref_denied(var).is_some() {
                        return Err(ResolveError::EnvDenied { at: at(), variable: var.clone() });
                    }
                    env(var).ok_or_else(|| ResolveError::EnvNotSet { at: at(), variable: var.clone() })?
                }
            };
            values.insert(item.name.clone(), value);
        }
        Ok(ResolvedMetadata(values))
    }

    /// Parse and check one `kind: Component` document.
    pub(crate) fn from_document(path: &Path, doc: Document, header: &Header) -> Result<Component, ConfigError> {
        let resource = header.resource_id(ResourceKind::Component, doc.index);
        header.check_api_version(path, &resource, &[COMPONENT_API_VERSION])?;
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            resource: resource.clone(),
            field: field.to_string(),
            message,
        };
        check_case(&doc.value).map_err(|(f, m)| invalid(&f, m))?;
        let raw: RawComponent = crate::yaml::deserialize(doc.value, path, &resource)?;

        let name = check_resource_name(raw.metadata.name.as_deref()).map_err(|m| invalid("metadata.name", m))?;
        let type_ = raw.spec.type_.as_deref().unwrap_or_default().trim();
        check_component_type(type_).map_err(|m| invalid("spec.type", m))?;
        // Dapr treats an absent or empty version as `v1` (issue 19: `dapr init`-style components omit it).
        let version = match raw.spec.version.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_COMPONENT_VERSION,
            Some(v) => v,
        };
        if version.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(invalid("spec.version", format!("{} is not a valid version", crate::error::quoted(version))));
        }
        let init_timeout = match raw.spec.init_timeout.as_deref() {
            None | Some("") => None,
            Some(t) => Some(crate::units::parse_go_duration(t).map_err(|m| invalid("spec.initTimeout", m))?),
        };
        let secret_store = raw.auth.and_then(|a| a.secret_store).filter(|s| !s.is_empty());

        let mut metadata = Vec::new();
        // Component metadata is decoded case-insensitively by components-contrib, so `redisHost` and `redishost`
        // would set the same field: treat them as duplicates.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, item) in raw.spec.metadata.unwrap_or_default().into_iter().enumerate() {
            let at = format!("spec.metadata[{i}]");
            let item_name = item.name.unwrap_or_default();
            if item_name.trim().is_empty() {
                return Err(invalid(&format!("{at}.name"), "is required".to_string()));
            }
            if let Some(first) = seen.insert(item_name.to_ascii_lowercase(), i) {
                return Err(invalid(
                    &format!("{at}.name"),
                    format!(
                        "duplicate metadata item {} (also spec.metadata[{first}])",
                        crate::error::quoted(&item_name)
                    ),
                ));
            }
            let quoted_item = crate::error::quoted(&item_name);
            let sources = [item.value.is_some(), item.secret_key_ref.is_some(), item.env_ref.is_some()];
            if sources.iter().filter(|s| **s).count() > 1 {
                return Err(invalid(
                    &at,
                    format!("item {quoted_item} sets more than one of value, secretKeyRef and envRef"),
                ));
            }
            let value = if let Some(r) = item.secret_key_ref {
                let secret = r.name.unwrap_or_default();
                if secret.is_empty() {
                    return Err(invalid(&format!("{at}.secretKeyRef.name"), "is required".to_string()));
                }
                if secret_store.is_none() {
                    return Err(invalid(
                        &format!("{at}.secretKeyRef"),
                        format!(
                            "item {quoted_item} references a secret but auth.secretStore is not set (self-hosted mode has no default secret store)"
                        ),
                    ));
                }
                let key = r.key.filter(|k| !k.is_empty()).unwrap_or_else(|| secret.clone());
                MetadataValue::SecretKeyRef { name: secret, key }
            } else if let Some(var) = item.env_ref {
                if let Some(why) = env_ref_denied(&var) {
                    return Err(invalid(&format!("{at}.envRef"), format!("item {quoted_item}: {why}")));
                }
                MetadataValue::EnvRef(var)
            } else {
                MetadataValue::Value(item.value.as_ref().map(scalar_string).unwrap_or_default())
            };
            metadata.push(MetadataItem { name: item_name, value });
        }

        let scopes = raw.scopes.unwrap_or_default();
        for (i, scope) in scopes.iter().enumerate() {
            if scope.trim().is_empty() {
                return Err(invalid(&format!("scopes[{i}]"), "an app-id must not be empty".to_string()));
            }
        }

        Ok(Component {
            name: name.to_string(),
            namespace: raw.metadata.namespace.filter(|ns| !ns.is_empty()),
            type_: type_.to_string(),
            version: version.to_string(),
            ignore_errors: raw.spec.ignore_errors.unwrap_or(false),
            init_timeout,
            metadata,
            secret_store,
            scopes,
            source: path.to_path_buf(),
            document: doc.index,
        })
    }
}

/// Refuse keys that Dapr would accept only because Go matches JSON keys case-insensitively.
fn check_case(root: &Value) -> Result<(), (String, String)> {
    let spec = child(Some(root), "spec");
    check_key_case(child(Some(root), "metadata"), "metadata", &["name", "namespace"])?;
    check_key_case(spec, "spec", &["type", "version", "ignoreErrors", "initTimeout", "metadata"])?;
    check_key_case(child(Some(root), "auth"), "auth", &["secretStore", "secretstore"])?;
    for (i, item) in elements(child(spec, "metadata")) {
        let at = format!("spec.metadata[{i}]");
        check_key_case(Some(item), &at, &["name", "value", "secretKeyRef", "envRef"])?;
        check_key_case(child(Some(item), "secretKeyRef"), &format!("{at}.secretKeyRef"), &["name", "key"])?;
    }
    Ok(())
}

/// `<building-block>.<name>`, e.g. `state.redis`, `secretstores.local.file`.
fn check_component_type(type_: &str) -> Result<(), String> {
    if type_.is_empty() {
        return Err("is required (e.g. \"state.redis\")".to_string());
    }
    let valid = match type_.split_once('.') {
        Some((block, rest)) => {
            !block.is_empty()
                && !rest.is_empty()
                && !type_.contains(|c: char| c.is_whitespace() || c == '/' || c.is_control())
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{} is not a component type; expected <building-block>.<name>, e.g. \"state.redis\"",
            crate::error::quoted(type_)
        ))
    }
}

/// Why components may not read `var` through `envRef`, if they may not: `APP_API_TOKEN` and every `DAPR_*`
/// variable hold the sidecar's own credentials (DAPR-FACTS §2.2). Compared case-insensitively, as Dapr does.
fn env_ref_denied(var: &str) -> Option<String> {
    let upper = var.to_ascii_uppercase();
    if var.trim().is_empty() {
        Some("envRef must name an environment variable".to_string())
    } else if var.contains(|c: char| c.is_whitespace() || c == '=' || c == '\0') {
        Some(format!("{} is not an environment variable name", crate::error::quoted(var)))
    } else if upper == "APP_API_TOKEN" || upper.starts_with("DAPR_") {
        Some(format!(
            "components may not read {} (APP_API_TOKEN and DAPR_* are reserved for the sidecar)",
            crate::error::quoted(var)
        ))
    } else {
        None
    }
}

/// Resolved component metadata: item name → value. The values are credentials as often as not, so `Debug` prints
/// the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedMetadata(BTreeMap<String, String>);

impl ResolvedMetadata {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
    /// Look a name up ignoring ASCII case, as components-contrib's metadata decoder does.
    pub fn get_ignore_case(&self, name: &str) -> Option<&str> {
        self.get(name).or_else(|| self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()))
    }
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The plain map, for handing to a component's constructor.
    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl From<BTreeMap<String, String>> for ResolvedMetadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        ResolvedMetadata(map)
    }
}

impl fmt::Debug for ResolvedMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted;
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }
        f.debug_map().entries(self.0.keys().map(|k| (k, Redacted))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_ref_denylist() {
        for denied in ["APP_API_TOKEN", "app_api_token", "DAPR_API_TOKEN", "DAPR_", "dapr_grpc_port", "", "A B", "A=B"]
        {
            assert!(env_ref_denied(denied).is_some(), "{denied:?}");
        }
        for allowed in ["REDIS_PASSWORD", "MY_DAPR_THING", "APP_API_TOKEN2", "HOME"] {
            assert!(env_ref_denied(allowed).is_none(), "{allowed:?}");
        }
    }

    #[test]
    fn component_types() {
        for ok in ["state.redis", "secretstores.local.file", "middleware.http.bearer"] {
            assert!(check_component_type(ok).is_ok(), "{ok}");
        }
        for bad in ["", "redis", ".redis", "state.", "state.re dis", "state/redis"] {
            assert!(check_component_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolved_metadata_debug_hides_values() {
        let m = ResolvedMetadata::from(BTreeMap::from([("redisPassword".to_string(), "hunter2".to_string())]));
        let shown = format!("{m:?}");
        assert!(shown.contains("redisPassword"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(m.get_ignore_case("REDISPASSWORD"), Some("hunter2"));
    }
}
