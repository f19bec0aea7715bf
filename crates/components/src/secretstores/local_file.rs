//! `secretstores.local.file` (v1): secrets from a JSON file, read once when the component is built
//! (components-contrib `secretstores/local/file`).
//!
//! Owns: Dapr's flattening rules.
//! - `multiValued: false` (default): every leaf becomes its own secret, named by its path joined with
//!   `nestedSeparator` (default `:`), array items by index: `{"db": {"users": ["a"]}}` → secret `db:users:0` =
//!   `{"db:users:0": "a"}`.
//! - `multiValued: true`: each top-level entry is one secret; a string is `{name: value}`, an object is flattened
//!   *below* the name into that secret's keys (`{"db": {"a": {"b": "x"}}}` → secret `db` = `{"a:b": "x"}`).
//!   Other top-level values (numbers, arrays…) are skipped, as in Dapr.
//!
//! Ward differences (all at build time, none visible to a well-formed file): leaves that are numbers, booleans or
//! null become their JSON text (`1`, `true`, empty for null) where Dapr prints Go's `%!s(float64=1)`; two entries
//! that flatten to the same name are a load error where Dapr silently keeps a partial result.
//!
//! Does not: watch the file for changes, or write it.
//!
//! A relative `secretsFile` is opened relative to the sidecar's working directory, as daprd does (`os.Open`), so
//! Dapr's files work unchanged. Earlier ward releases resolved it against the component file's folder
//! ([`crate::BuildContext::base_dir`]); when the file does not exist relative to the working directory but does
//! there, that one is used, with a warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::{Secret, SecretStore, SecretStoreError};
use crate::metadata::{ComponentError, ComponentMetadata};

/// Options of the file secret store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFileOptions {
    /// The JSON file (already resolved against the base directory).
    pub secrets_file: PathBuf,
    /// Joins nested names; `:` by default.
    pub nested_separator: String,
    /// One secret per top-level entry instead of one per leaf.
    pub multi_valued: bool,
}

impl LocalFileOptions {
    /// Reads `secretsFile` (required), `nestedSeparator`, `multiValued`. A relative `secretsFile` is taken from
    /// `working_dir` (daprd's rule), else from `component_dir` if it exists only there.
    pub fn from_metadata(
        md: &ComponentMetadata,
        working_dir: &Path,
        component_dir: &Path,
    ) -> Result<Self, ComponentError> {
        let file = PathBuf::from(md.require("secretsFile")?.trim());
        let secrets_file = if file.is_absolute() {
            file
        } else {
            let from_cwd = working_dir.join(&file);
            let beside_component = component_dir.join(&file);
            if !from_cwd.exists() && beside_component.exists() {
                tracing::warn!(
                    secrets_file = %file.display(),
                    used = %beside_component.display(),
                    "secretsFile is not found relative to the working directory (where daprd looks); using the one \
                     beside the component file"
                );
                beside_component
            } else {
                from_cwd
            }
        };
        Ok(Self {
            secrets_file,
            nested_separator: md.get_or("nestedSeparator", ":").to_owned(),
            multi_valued: md.get_bool("multiValued")?.unwrap_or(false),
        })
    }
}

/// The file secret store.
#[derive(Clone)]
pub struct LocalFileSecretStore {
    secrets: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for LocalFileSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFileSecretStore").field("secrets", &self.secrets.len()).finish()
    }
}

#[derive(Debug)]
struct DuplicateName;

fn leaf_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// Flattens `value` found at `path` into `out` (serde_json's recursion limit bounds the depth).
fn flatten(path: &str, value: &Value, sep: &str, out: &mut BTreeMap<String, String>) -> Result<(), DuplicateName> {
    let join = |child: &str| {
        if path.is_empty() { child.to_owned() } else { format!("{path}{sep}{child}") }
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&join(k), v, sep, out)?;
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&join(&i.to_string()), v, sep, out)?;
            }
        }
        leaf => {
            let text = leaf_text(leaf).unwrap_or_default();
            if out.insert(path.to_owned(), text).is_some() {
                return Err(DuplicateName);
            }
        }
    }
    Ok(())
}

impl LocalFileSecretStore {
    /// Reads and flattens the file.
    pub async fn load(opts: &LocalFileOptions) -> Result<Self, ComponentError> {
        let bytes = tokio::fs::read(&opts.secrets_file)
            .await
            .map_err(|e| ComponentError::new("secretsFile", "cannot read the secrets file").with_source(e))?;
        Self::from_json(&bytes, &opts.nested_separator, opts.multi_valued)
    }

    /// Builds the store from the file's content.
    pub fn from_json(bytes: &[u8], nested_separator: &str, multi_valued: bool) -> Result<Self, ComponentError> {
        let sep = if nested_separator.is_empty() { ":" } else { nested_separator };
        // The serde_json message could quote part of the file; report the position only.
        let root: Value = serde_json::from_slice(bytes).map_err(|e| {
            ComponentError::new(
                "secretsFile",
                format!("the secrets file is not valid JSON (line {}, column {})", e.line(), e.column()),
            )
        })?;
        let Value::Object(root) = root else {
            return Err(ComponentError::new("secretsFile", "the secrets file must contain a JSON object"));
        };
        let duplicate =
            |_| ComponentError::new("secretsFile", "two entries of the secrets file flatten to the same secret name");
        let mut secrets = BTreeMap::new();
        if multi_valued {
            for (name, value) in &root {
                match value {
                    Value::String(s) => {
                        secrets.insert(name.clone(), BTreeMap::from([(name.clone(), s.clone())]));
                    }
                    Value::Object(_) => {
                        let mut keys = BTreeMap::new();
                        flatten("", value, sep, &mut keys).map_err(duplicate)?;
                        secrets.insert(name.clone(), keys);
                    }
                    _ => {
                        tracing::warn!(
                            secret = %name,
                            "multiValued secrets file: top-level entry is neither a string nor an object; skipped"
                        );
                    }
                }
            }
        } else {
            let mut flat = BTreeMap::new();
            flatten("", &Value::Object(root), sep, &mut flat).map_err(duplicate)?;
            for (name, value) in flat {
                secrets.insert(name.clone(), BTreeMap::from([(name, value)]));
            }
        }
        Ok(Self { secrets })
    }
}

#[async_trait]
impl SecretStore for LocalFileSecretStore {
    async fn get_secret(
        &self,
        name: &str,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<Option<Secret>, SecretStoreError> {
        Ok(self.secrets.get(name).cloned())
    }

    async fn bulk_get_secret(
        &self,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, SecretStoreError> {
        Ok(self.secrets.clone())
    }
}
