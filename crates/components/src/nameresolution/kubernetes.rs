//! `nameresolution.kubernetes`, the default in Kubernetes mode (components-contrib `nameresolution/kubernetes`):
//! app id + namespace → `<app-id>-dapr.<namespace>.svc.<clusterDomain>:<port>`, the headless Service the operator
//! keeps for every Dapr workload, resolved by cluster DNS when the connection is made. `port` is the caller's own
//! internal gRPC port (Dapr's rule: every sidecar of a cluster uses the same one, 50002 by default).
//!
//! Owns: forming the name (only from app ids and namespaces that are DNS labels, so no input can name another
//! host), the one setting Dapr's resolver has that ward implements (`clusterDomain`), and the test override.
//!
//! **Test override** (`WARD_NAME_RESOLUTION_OVERRIDES=<file>`): a text file of lines `<dns-name> <host:port>` (`#`
//! starts a comment) that answers for the names it lists, re-read when it changes. It exists so tests (the pod
//! runner, which plays the kubelet on loopback) can point cluster names at 127.0.0.1 ports; a production sidecar
//! refuses to start with it (the runtime checks). It cannot be used to impersonate an app: the mTLS client still
//! requires the callee's SPIFFE ID.
//!
//! Does not: resolve DNS itself (the connection does, so a Service's changing endpoints are followed), register
//! anything (the Service does), or implement Dapr's `template` (refused, never ignored).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::metadata::ComponentError;

/// Dapr's default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// The env variable naming the test override file.
pub const OVERRIDES_ENV: &str = "WARD_NAME_RESOLUTION_OVERRIDES";

/// Settings of the resolver.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    pub cluster_domain: String,
    /// The internal gRPC port every sidecar listens on.
    pub port: u16,
    /// The test override file, if any.
    pub overrides: Option<PathBuf>,
}

impl KubernetesOptions {
    /// From `spec.nameResolution.configuration` (`clusterDomain`; anything else is refused).
    pub fn from_configuration(
        configuration: &std::collections::BTreeMap<String, String>,
        port: u16,
    ) -> Result<Self, ComponentError> {
        let mut options =
            KubernetesOptions { cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(), port, overrides: None };
        for (key, value) in configuration {
            if key.eq_ignore_ascii_case("clusterDomain") {
                let domain = value.trim().trim_end_matches('.');
                if !domain.is_empty() {
                    if !domain.split('.').all(is_dns_label) {
                        return Err(ComponentError::new(key.clone(), "is not a DNS domain"));
                    }
                    options.cluster_domain = domain.to_owned();
                }
            } else {
                return Err(ComponentError::new(
                    key.clone(),
                    "is not supported by ward's nameresolution.kubernetes (it supports clusterDomain)",
                ));
            }
        }
        Ok(options)
    }
}

/// The resolver.
#[derive(Debug)]
pub struct KubernetesDns {
    options: KubernetesOptions,
    /// The override file's modification time and content, re-read when the time changes.
    overrides: Mutex<Option<(SystemTime, HashMap<String, String>)>>,
}

impl KubernetesDns {
    pub fn new(options: KubernetesOptions) -> Self {
        Self { options, overrides: Mutex::new(None) }
    }

    /// `<app-id>-dapr.<namespace>.svc.<clusterDomain>`, or `None` when either part is not a DNS label.
    pub fn service_name(&self, app_id: &str, namespace: &str) -> Option<String> {
        let service = format!("{app_id}-dapr");
        (is_dns_label(&service) && is_dns_label(namespace))
            .then(|| format!("{service}.{namespace}.svc.{}", self.options.cluster_domain))
    }

    /// The address to dial for `app_id` in `namespace`; empty when the name cannot be formed.
    pub fn resolve_all(&self, app_id: &str, namespace: &str) -> Result<Vec<String>, ComponentError> {
        let Some(name) = self.service_name(app_id, namespace) else { return Ok(Vec::new()) };
        if let Some(file) = &self.options.overrides
            && let Some(address) = self.overridden(file, &name)?
        {
            return Ok(vec![address]);
        }
        Ok(vec![format!("{name}:{}", self.options.port)])
    }

    fn overridden(&self, file: &Path, name: &str) -> Result<Option<String>, ComponentError> {
        let read_error = |err: std::io::Error| ComponentError::new(OVERRIDES_ENV, format!("{}: {err}", file.display()));
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).map_err(read_error)?;
        let mut cached = self.overrides.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cached.as_ref().is_none_or(|(at, _)| *at != modified) {
            let text = std::fs::read_to_string(file).map_err(read_error)?;
            *cached = Some((modified, parse_overrides(&text)));
        }
        Ok(cached.as_ref().and_then(|(_, map)| map.get(name).cloned()))
    }
}

/// Lines `<dns-name> <host:port>`; blank lines and `#` comments skipped; a malformed line is skipped with a
/// warning (the file is test machinery, rewritten while sidecars run).
fn parse_overrides(text: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(address), None) if address.rsplit_once(':').is_some() => {
                map.insert(name.trim_end_matches('.').to_owned(), address.to_owned());
            }
            _ => tracing::warn!(line = n + 1, "{OVERRIDES_ENV}: expected `<dns-name> <host:port>`; line skipped"),
        }
    }
    map
}

/// RFC 1123 label: 1–63 of lowercase letters, digits and '-', not starting or ending with '-'.
fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(overrides: Option<PathBuf>) -> KubernetesDns {
        KubernetesDns::new(KubernetesOptions { cluster_domain: "cluster.local".into(), port: 50002, overrides })
    }

    #[test]
    fn names_are_formed_as_dapr_does() {
        assert_eq!(
            dns(None).resolve_all("checkout", "shop").unwrap(),
            vec!["checkout-dapr.shop.svc.cluster.local:50002".to_owned()]
        );
    }

    #[test]
    fn app_ids_that_are_not_dns_labels_resolve_to_nothing() {
        for (app, ns) in [("a.b", "shop"), ("Upper", "shop"), ("x", "ns.evil.com"), ("x", ""), ("-x", "shop")] {
            assert!(dns(None).resolve_all(app, ns).unwrap().is_empty(), "{app} {ns}");
        }
    }

    #[test]
    fn cluster_domain_is_the_one_setting_and_others_are_refused() {
        let mut configuration = std::collections::BTreeMap::new();
        configuration.insert("clusterDomain".to_owned(), "corp.internal".to_owned());
        let options = KubernetesOptions::from_configuration(&configuration, 50002).unwrap();
        assert_eq!(KubernetesDns::new(options).service_name("a", "b").unwrap(), "a-dapr.b.svc.corp.internal");
        configuration.insert("template".to_owned(), "{{.ID}}".to_owned());
        let err = KubernetesOptions::from_configuration(&configuration, 50002).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("template"));
    }

    #[test]
    fn the_override_file_answers_for_its_names_and_is_reread() {
        let dir = std::env::temp_dir().join(format!("ward-k8s-nr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hosts");
        std::fs::write(&file, "# pods\nb-dapr.shop.svc.cluster.local 127.0.0.1:4100\n").unwrap();
        let resolver = dns(Some(file.clone()));
        assert_eq!(resolver.resolve_all("b", "shop").unwrap(), vec!["127.0.0.1:4100".to_owned()]);
        assert_eq!(resolver.resolve_all("c", "shop").unwrap(), vec!["c-dapr.shop.svc.cluster.local:50002".to_owned()]);
        // A rewrite with a new modification time is picked up.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, "b-dapr.shop.svc.cluster.local 127.0.0.1:4200\nbroken line here\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(later).unwrap();
        assert_eq!(resolver.resolve_all("b", "shop").unwrap(), vec!["127.0.0.1:4200".to_owned()]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
