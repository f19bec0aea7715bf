//! `secretstores.kubernetes` (v1): Secrets of the sidecar's own namespace, read through the Kubernetes API with the
//! pod's service account (components-contrib `secretstores/kubernetes`). In Kubernetes mode the sidecar adds one
//! named `kubernetes` by itself (Dapr's built-in store) unless `--disable-builtin-k8s-secret-store`.
//!
//! Stricter than Dapr: only the sidecar's own namespace (Dapr lets a request name another with metadata
//! `namespace`, and the component with `defaultNamespace`); a request for another namespace answers as a missing
//! secret does, and `defaultNamespace` other than the sidecar's is refused at start. Secret scopes
//! (`spec.secrets.scopes`) are applied by the sidecar as for every store.
//!
//! Each Secret's `data` values are returned as UTF-8 text (lossy), keyed as in the Secret.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::Api;

use super::{Secret, SecretStore, SecretStoreError};
use crate::BuildContext;
use crate::metadata::{ComponentError, ComponentMetadata};

/// The store over one namespace's Secrets.
#[derive(Clone)]
pub struct KubernetesSecretStore {
    secrets: Api<KubeSecret>,
    namespace: String,
}

impl std::fmt::Debug for KubernetesSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSecretStore").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

const KNOWN_METADATA: &[&str] = &["kubeconfigPath", "defaultNamespace"];

impl KubernetesSecretStore {
    /// Builds the store: the API client from `kubeconfigPath` if given, else the pod's service account (or
    /// `KUBECONFIG` outside a cluster); the namespace is the sidecar's.
    pub async fn from_metadata(metadata: &ComponentMetadata, ctx: &BuildContext) -> Result<Self, ComponentError> {
        if let Some(key) = metadata.keys().find(|k| !KNOWN_METADATA.iter().any(|known| known.eq_ignore_ascii_case(k))) {
            return Err(ComponentError::new(
                format!("spec.metadata[{key}]"),
                format!("not a secretstores.kubernetes setting (known: {})", KNOWN_METADATA.join(", ")),
            ));
        }
        let default_namespace = metadata.get("defaultNamespace").filter(|n| !n.is_empty());
        let namespace = match (ctx.namespace.as_str(), default_namespace) {
            ("", Some(namespace)) => namespace.to_owned(),
            ("", None) => {
                return Err(ComponentError::new(
                    "spec.metadata[defaultNamespace]",
                    "the sidecar has no namespace (env NAMESPACE) and none is given",
                ));
            }
            (own, Some(other)) if other != own => {
                return Err(ComponentError::new(
                    "spec.metadata[defaultNamespace]",
                    format!("ward reads Secrets of the sidecar's own namespace ({own:?}) only, not {other:?}"),
                ));
            }
            (own, _) => own.to_owned(),
        };
        let config = match metadata.get("kubeconfigPath").filter(|p| !p.is_empty()) {
            Some(path) => {
                let wrap = |err: kube::config::KubeconfigError| {
                    ComponentError::new("spec.metadata[kubeconfigPath]", format!("{path}: {err}"))
                };
                let file = kube::config::Kubeconfig::read_from(path).map_err(wrap)?;
                kube::Config::from_custom_kubeconfig(file, &Default::default()).await.map_err(wrap)?
            }
            None => kube::Config::infer()
                .await
                .map_err(|err| ComponentError::general(format!("no Kubernetes API configuration: {err}")))?,
        };
        let client = kube::Client::try_from(config)
            .map_err(|err| ComponentError::general(format!("Kubernetes client: {err}")))?;
        Ok(Self { secrets: Api::namespaced(client, &namespace), namespace })
    }

    /// A request may name a namespace (Dapr's metadata `namespace`); any but the store's own is not served.
    fn other_namespace(&self, metadata: &BTreeMap<String, String>) -> bool {
        metadata.get("namespace").is_some_and(|ns| !ns.is_empty() && *ns != self.namespace)
    }
}

fn values(secret: KubeSecret) -> Secret {
    secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect()
}

fn backend(operation: &'static str) -> impl FnOnce(kube::Error) -> SecretStoreError {
    move |err| SecretStoreError::Backend { operation, source: Box::new(err) }
}

#[async_trait]
impl SecretStore for KubernetesSecretStore {
    async fn get_secret(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<Secret>, SecretStoreError> {
        if self.other_namespace(metadata) {
            return Ok(None);
        }
        Ok(self.secrets.get_opt(name).await.map_err(backend("get"))?.map(values))
    }

    async fn bulk_get_secret(
        &self,
        metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, SecretStoreError> {
        if self.other_namespace(metadata) {
            return Ok(BTreeMap::new());
        }
        let list = self.secrets.list(&Default::default()).await.map_err(backend("bulk get"))?;
        Ok(list.items.into_iter().filter_map(|secret| Some((secret.metadata.name.clone()?, values(secret)))).collect())
    }
}
