//! `secretstores.local.env` (v1): secrets from the sidecar's environment variables (components-contrib
//! `secretstores/local/env`).
//!
//! Owns: the name mapping and the deny rules. With `prefix` set, secret `x` is variable `<prefix>x`, and a bulk
//! read returns only variables starting with the prefix, with the prefix stripped (case-sensitive, as on Linux).
//! Each secret is `{name: value}`.
//!
//! Never exposed (checked on the full variable name, case-insensitively): `APP_API_TOKEN`, anything starting with
//! `DAPR_` (which covers `DAPR_API_TOKEN`), as in Dapr, and additionally anything starting with `WARD_`, ward's
//! own configuration and credentials. A hidden variable looks exactly like a missing one.
//!
//! Does not: read a `.env` file, or cache: the environment is read on every call.

use std::collections::BTreeMap;
use std::ffi::OsString;

use async_trait::async_trait;

use super::{Secret, SecretStore, SecretStoreError};
use crate::metadata::ComponentMetadata;

/// Where variables come from: the process environment, or a fixed set (tests, embedding).
#[derive(Clone, Default)]
pub enum EnvSource {
    /// `std::env` at call time.
    #[default]
    Process,
    /// A fixed set of variables.
    Fixed(BTreeMap<String, String>),
}

impl std::fmt::Debug for EnvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvSource::Process => f.write_str("Process"),
            EnvSource::Fixed(m) => write!(f, "Fixed({} variables)", m.len()),
        }
    }
}

/// The environment-variable secret store.
#[derive(Debug, Clone, Default)]
pub struct LocalEnvSecretStore {
    prefix: String,
    source: EnvSource,
}

/// Dapr's `isKeyAllowed` plus ward's own variables.
fn is_exposable(var: &str) -> bool {
    let upper = var.to_ascii_uppercase();
    !(upper == "APP_API_TOKEN" || upper.starts_with("DAPR_") || upper.starts_with("WARD_"))
}

impl LocalEnvSecretStore {
    /// A store over the process environment with an optional `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), source: EnvSource::Process }
    }

    /// Reads metadata `prefix` (optional).
    pub fn from_metadata(md: &ComponentMetadata) -> Self {
        Self::new(md.get("prefix").unwrap_or(""))
    }

    /// Reads variables from `source` instead of the process environment.
    pub fn with_source(mut self, source: EnvSource) -> Self {
        self.source = source;
        self
    }

    fn lookup(&self, var: &str) -> Option<String> {
        match &self.source {
            EnvSource::Fixed(m) => m.get(var).cloned(),
            // var_os returns None for names the OS cannot hold; non-UTF-8 values are skipped like missing ones.
            EnvSource::Process => std::env::var_os(var).and_then(|v| v.into_string().ok()),
        }
    }

    fn all(&self) -> Vec<(String, String)> {
        match &self.source {
            EnvSource::Fixed(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            EnvSource::Process => std::env::vars_os()
                .filter_map(|(k, v): (OsString, OsString)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }
}

#[async_trait]
impl SecretStore for LocalEnvSecretStore {
    async fn get_secret(
        &self,
        name: &str,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<Option<Secret>, SecretStoreError> {
        // Names the environment cannot hold are simply not there (and must not reach getenv).
        if name.is_empty() || name.contains(['=', '\0']) {
            return Ok(None);
        }
        let var = format!("{}{name}", self.prefix);
        if !is_exposable(&var) {
            tracing::warn!(secret = name, "access to a reserved environment variable refused");
            return Ok(None);
        }
        Ok(self.lookup(&var).map(|v| BTreeMap::from([(name.to_owned(), v)])))
    }

    async fn bulk_get_secret(
        &self,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, SecretStoreError> {
        let mut out = BTreeMap::new();
        for (var, value) in self.all() {
            if !is_exposable(&var) {
                continue;
            }
            let Some(name) = var.strip_prefix(self.prefix.as_str()) else {
                continue;
            };
            // Dapr skips a variable that is exactly the prefix (nothing left as a name).
            if name.is_empty() {
                continue;
            }
            out.insert(name.to_owned(), BTreeMap::from([(name.to_owned(), value)]));
        }
        Ok(out)
    }
}
