//! Sentry's CA material on Kubernetes, where Dapr keeps it:
//!
//! - Secret `dapr-trust-bundle` in the control-plane namespace (keys `ca.crt`, `issuer.crt`, `issuer.key`),
//!   generated on first start when absent. Sentry signs from files; this module mirrors the Secret into sentry's
//!   credentials directory (and keeps mirroring it, so a rotated Secret is picked up by sentry's file reload).
//! - ConfigMap `dapr-root-ca.crt` (key `ca.crt`: the PEM roots) in every namespace that has pods annotated
//!   `dapr.io/enabled: "true"` (and the control-plane namespace), kept equal to the roots sentry serves. Sidecars
//!   mount it as their trust anchors.
//!
//! Two sentries starting at once cannot both generate: creating the Secret is the lock (the loser reads the
//! winner's). A Secret with only some of the keys is refused, never overwritten: it may be someone's material.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use ward_identity::TrustDomain;

pub const TRUST_BUNDLE_SECRET: &str = "dapr-trust-bundle";
pub const ROOTS_CONFIGMAP: &str = "dapr-root-ca.crt";
pub const ROOTS_KEY: &str = "ca.crt";
pub const ISSUER_CERT_KEY: &str = "issuer.crt";
pub const ISSUER_KEY_KEY: &str = "issuer.key";
/// The annotation that asks for a sidecar.
pub const ENABLED_ANNOTATION: &str = "dapr.io/enabled";
const FIELD_MANAGER: &str = "ward-sentry";

#[derive(Debug, thiserror::Error)]
pub enum TrustBundleError {
    #[error("Secret {namespace}/{TRUST_BUNDLE_SECRET}: {source}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{TRUST_BUNDLE_SECRET} lacks {missing:?} (it needs ca.crt, issuer.crt and issuer.key): \
         refusing to replace what may be someone's CA material; complete it or delete the Secret"
    )]
    Incomplete { namespace: String, missing: Vec<&'static str> },
    #[error("generating CA material: {0}")]
    Generate(#[from] ward_sentry::material::MaterialError),
    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: ward_sentry::material::MaterialError,
    },
}

/// The three PEM texts sentry signs with.
#[derive(Clone, PartialEq, Eq)]
pub struct BundleContents {
    pub roots_pem: String,
    pub issuer_cert_pem: String,
    pub issuer_key_pem: String,
}

impl std::fmt::Debug for BundleContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleContents").finish_non_exhaustive()
    }
}

fn contents_of(namespace: &str, secret: &Secret) -> Result<BundleContents, TrustBundleError> {
    let data = secret.data.clone().unwrap_or_default();
    let text =
        |key: &str| data.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned()).filter(|t| !t.trim().is_empty());
    let (roots, cert, key) = (text(ROOTS_KEY), text(ISSUER_CERT_KEY), text(ISSUER_KEY_KEY));
    let missing: Vec<&'static str> = [(ROOTS_KEY, &roots), (ISSUER_CERT_KEY, &cert), (ISSUER_KEY_KEY, &key)]
        .into_iter()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name)
        .collect();
    match (roots, cert, key) {
        (Some(roots_pem), Some(issuer_cert_pem), Some(issuer_key_pem)) => {
            Ok(BundleContents { roots_pem, issuer_cert_pem, issuer_key_pem })
        }
        _ => Err(TrustBundleError::Incomplete { namespace: namespace.to_owned(), missing }),
    }
}

/// Reads Secret `dapr-trust-bundle` from `namespace`, creating it with fresh material (root and issuer valid for
/// `valid_for`, trust domain `trust_domain`) when it does not exist.
pub async fn ensure_secret(
    client: &kube::Client,
    namespace: &str,
    trust_domain: &TrustDomain,
    valid_for: Duration,
) -> Result<BundleContents, TrustBundleError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api = |source| TrustBundleError::Api { namespace: namespace.to_owned(), source };
    if let Some(secret) = secrets.get_opt(TRUST_BUNDLE_SECRET).await.map_err(api)? {
        return contents_of(namespace, &secret);
    }
    let material = ward_sentry::material::generate(trust_domain, valid_for)?;
    let contents = BundleContents {
        roots_pem: material.root_cert_pem,
        issuer_cert_pem: material.issuer_cert_pem,
        issuer_key_pem: material.issuer_key_pem,
    };
    // The root key is not kept: Dapr's Secret has none, and a root key in the cluster is a standing risk. A
    // rotation makes a new root (see `ward mtls renew-certificate -k`).
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(TRUST_BUNDLE_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "ward".to_owned())])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (ROOTS_KEY.to_owned(), ByteString(contents.roots_pem.clone().into_bytes())),
            (ISSUER_CERT_KEY.to_owned(), ByteString(contents.issuer_cert_pem.clone().into_bytes())),
            (ISSUER_KEY_KEY.to_owned(), ByteString(contents.issuer_key_pem.clone().into_bytes())),
        ])),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!("generated CA material into Secret {namespace}/{TRUST_BUNDLE_SECRET}");
            Ok(contents)
        }
        // Another sentry won the race: use its material.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = secrets.get(TRUST_BUNDLE_SECRET).await.map_err(api)?;
            contents_of(namespace, &secret)
        }
        Err(err) => Err(api(err)),
    }
}

/// Writes the material into sentry's credentials directory (`ca.crt`, `issuer.crt`, `issuer.key`, mode 0600),
/// issuer first and roots last, so a reader polling for changes sees a consistent set by the time the roots file
/// changes (sentry retries a set that does not load, keeping the old one).
pub fn write_dir(dir: &Path, contents: &BundleContents) -> Result<(), TrustBundleError> {
    use ward_sentry::material;
    let wrap = |path: &Path| {
        let path = path.display().to_string();
        move |source| TrustBundleError::Write { path, source }
    };
    material::create_private_dir(dir).map_err(wrap(dir))?;
    let files = material::CaFiles::in_dir(dir);
    for (path, text) in [
        (&files.issuer_key, &contents.issuer_key_pem),
        (&files.issuer_cert, &contents.issuer_cert_pem),
        (&files.root_cert, &contents.roots_pem),
    ] {
        if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
            material::write_private(path, text.as_bytes()).map_err(wrap(path))?;
        }
    }
    Ok(())
}

/// Keeps `dir` equal to the Secret (a rotation rewrites the Secret; sentry reloads the files). A Secret that
/// becomes incomplete or is deleted leaves the files as they are (logged): sentry keeps signing with what it has.
pub async fn mirror_secret(
    client: kube::Client,
    namespace: String,
    dir: std::path::PathBuf,
    roots: watch::Sender<String>,
) {
    use kube::runtime::watcher;
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={TRUST_BUNDLE_SECRET}"));
    let mut events = std::pin::pin!(watcher(secrets, config));
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                match contents_of(&namespace, &secret).and_then(|c| write_dir(&dir, &c).map(|()| c)) {
                    Ok(contents) => {
                        roots.send_if_modified(|current| {
                            let changed = *current != contents.roots_pem;
                            if changed {
                                current.clone_from(&contents.roots_pem);
                            }
                            changed
                        });
                    }
                    Err(err) => tracing::error!("{err}; sentry keeps its current credentials"),
                }
            }
            Ok(watcher::Event::Delete(_)) => tracing::error!(
                "Secret {namespace}/{TRUST_BUNDLE_SECRET} was deleted; sentry keeps its current credentials \
                 (restart sentry to generate new ones)"
            ),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!("watching Secret {namespace}/{TRUST_BUNDLE_SECRET}: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Writes ConfigMap `dapr-root-ca.crt` with `roots_pem` into `namespace` (server-side apply: idempotent, and the
/// field manager shows who owns it).
pub async fn apply_roots(client: &kube::Client, namespace: &str, roots_pem: &str) -> Result<(), kube::Error> {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let document = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ROOTS_CONFIGMAP,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "ward"},
        },
        "data": {ROOTS_KEY: roots_pem},
    });
    configmaps.patch(ROOTS_CONFIGMAP, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&document)).await?;
    Ok(())
}

/// Keeps `dapr-root-ca.crt` current in the control-plane namespace and every namespace with annotated pods:
/// namespaces are learnt from a pod watch; every one of them gets the roots again whenever they change.
pub async fn publish_roots(client: kube::Client, control_plane_namespace: String, mut roots: watch::Receiver<String>) {
    use kube::runtime::{WatchStreamExt, watcher};
    let pods: Api<Pod> = Api::all(client.clone());
    let wanted: Arc<std::sync::Mutex<BTreeSet<String>>> =
        Arc::new(std::sync::Mutex::new(BTreeSet::from([control_plane_namespace])));
    let (namespaces_changed, mut namespaces_rx) = watch::channel(());
    let learner = {
        let wanted = wanted.clone();
        tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher(pods, watcher::Config::default()).default_backoff().applied_objects());
            while let Some(event) = events.next().await {
                let Ok(pod) = event else { continue };
                let annotated = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ENABLED_ANNOTATION))
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                if let (true, Some(namespace)) = (annotated, pod.metadata.namespace) {
                    let added = wanted.lock().unwrap_or_else(|e| e.into_inner()).insert(namespace);
                    if added {
                        namespaces_changed.send_replace(());
                    }
                }
            }
        })
    };
    // What each namespace was last given, so an unchanged pair is not written again.
    let mut published: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let current = roots.borrow_and_update().clone();
        let targets: Vec<String> = wanted.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        let mut failed = false;
        if !current.is_empty() {
            for namespace in targets {
                if published.get(&namespace) == Some(&current) {
                    continue;
                }
                match apply_roots(&client, &namespace, &current).await {
                    Ok(()) => {
                        tracing::info!("published trust anchors to {namespace}/{ROOTS_CONFIGMAP}");
                        published.insert(namespace, current.clone());
                    }
                    Err(err) => {
                        tracing::warn!("publishing trust anchors to {namespace}/{ROOTS_CONFIGMAP}: {err}; retrying");
                        failed = true;
                    }
                }
            }
        }
        let retry = tokio::time::sleep(if failed { Duration::from_secs(2) } else { Duration::from_secs(300) });
        tokio::select! {
            changed = roots.changed() => if changed.is_err() { break },
            changed = namespaces_rx.changed() => if changed.is_err() { break },
            // Every five minutes everything is written again: repairs a ConfigMap someone edited or deleted.
            () = retry => if !failed { published.clear() },
        }
    }
    learner.abort();
}
