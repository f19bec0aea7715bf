//! Keeps the `caBundle` of the injector's own `MutatingWebhookConfiguration` equal to the trust anchors it is
//! given (`--trust-anchors-file`, the mounted `dapr-root-ca.crt` ConfigMap), so the API server trusts the
//! serving certificate sentry issued — before and after a root rotation, without a restart (Dapr's injector
//! reads its bundle once: dapr/dapr#7161).
//!
//! Owns: reading and checking the anchors file, the compare-and-patch of every webhook's `caBundle` in the one
//! configuration named, and the loop that re-does it when the file changes and every `resync` (so a stale bundle
//! written by someone else is repaired). Least privilege: it needs `get` and `patch` on that one object and
//! nothing else (no list or watch), which is why it re-reads on a timer rather than watching. Does not own the
//! configuration's rules or selectors (the install manifests do) and never creates or deletes it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// A trust-anchors file is a few roots; anything larger is not one.
const MAX_ANCHORS_BYTES: u64 = 1024 * 1024;
/// How often a replace that lost a race is retried before the next trigger.
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("trust anchors {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("trust anchors {path}: larger than {MAX_ANCHORS_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("trust anchors {path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("MutatingWebhookConfiguration {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("MutatingWebhookConfiguration {name}: still conflicting after {CONFLICT_RETRIES} attempts")]
    Conflicts { name: String },
}

/// Reads the anchors file and checks it holds at least one certificate (an empty or half-written file must
/// not become a `caBundle` that trusts nothing, which would stop every pod creation).
pub fn read_anchors(path: &Path) -> Result<Vec<u8>, CaBundleError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| CaBundleError::Read { path: path.to_owned(), source })?;
    let mut bytes = Vec::new();
    file.take(MAX_ANCHORS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| CaBundleError::Read { path: path.to_owned(), source })?;
    if bytes.len() as u64 > MAX_ANCHORS_BYTES {
        return Err(CaBundleError::TooLarge { path: path.to_owned() });
    }
    match ward_identity::parse_certificates(&bytes) {
        Ok(certs) if !certs.is_empty() => Ok(bytes),
        _ => Err(CaBundleError::NoCertificate { path: path.to_owned() }),
    }
}

/// Sets `caBundle` of every webhook in configuration `name` to `pem`, if any differs. Returns whether it
/// changed anything. A strategic merge patch (webhooks merge by name) carrying the resourceVersion read, so the
/// write is conditional: a conflict is retried on a fresh read.
pub async fn sync_ca_bundle(client: &kube::Client, name: &str, pem: &[u8]) -> Result<bool, CaBundleError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let wrap = |source| CaBundleError::Api { name: name.to_owned(), source };
    let bundle = serde_json::to_value(ByteString(pem.to_vec())).unwrap_or_default();
    for _ in 0..CONFLICT_RETRIES {
        let configuration = api.get(name).await.map_err(wrap)?;
        let stale: Vec<serde_json::Value> = configuration
            .webhooks
            .iter()
            .flatten()
            .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(pem))
            .map(|w| json!({"name": w.name, "clientConfig": {"caBundle": bundle}}))
            .collect();
        if stale.is_empty() {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"resourceVersion": configuration.metadata.resource_version},
            "webhooks": stale,
        });
        match api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(wrap(err)),
        }
    }
    Err(CaBundleError::Conflicts { name: name.to_owned() })
}

/// The running sync: what to keep equal to what.
#[derive(Clone)]
pub struct CaBundleSync {
    pub client: kube::Client,
    /// The `MutatingWebhookConfiguration` (Dapr's name: `dapr-sidecar-injector`).
    pub webhook_name: String,
    pub trust_anchors_file: PathBuf,
    /// How often the file is read for changes.
    pub poll: Duration,
    /// How often the configuration is re-read even when the file did not change (repairs a bundle someone else
    /// overwrote).
    pub resync: Duration,
}

impl std::fmt::Debug for CaBundleSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundleSync")
            .field("webhook_name", &self.webhook_name)
            .field("trust_anchors_file", &self.trust_anchors_file)
            .field("poll", &self.poll)
            .field("resync", &self.resync)
            .finish()
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

impl CaBundleSync {
    /// Checks the file now (a missing or empty anchors file is a start-up error), then runs the loop on the
    /// current tokio runtime until the returned handle is aborted.
    pub fn spawn(self) -> Result<tokio::task::JoinHandle<()>, CaBundleError> {
        let anchors = read_anchors(&self.trust_anchors_file)?;
        Ok(tokio::spawn(self.run(anchors)))
    }

    async fn run(self, mut anchors: Vec<u8>) {
        let mut ticker = tokio::time::interval(self.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resync = tokio::time::interval(self.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_file = hash(&anchors);
        // Needs a sync at start, after each file change, and at each resync. A failed sync is retried at the next
        // tick.
        let mut pending = true;
        let mut failing = false;
        let mut unreadable = false;
        loop {
            if pending {
                match sync_ca_bundle(&self.client, &self.webhook_name, &anchors).await {
                    Ok(changed) => {
                        pending = false;
                        failing = false;
                        if changed {
                            tracing::info!(webhook = %self.webhook_name, "caBundle set to the trust anchors");
                        }
                    }
                    Err(err) => {
                        if !failing {
                            tracing::error!(error = %err, "keeping caBundle in sync failed; retrying");
                        }
                        failing = true;
                    }
                }
            }
            tokio::select! {
                _ = resync.tick() => pending = true,
                _ = ticker.tick() => {
                    match read_anchors(&self.trust_anchors_file) {
                        Ok(bytes) if hash(&bytes) != last_file => {
                            tracing::info!(path = %self.trust_anchors_file.display(), "trust anchors changed");
                            last_file = hash(&bytes);
                            anchors = bytes;
                            pending = true;
                            unreadable = false;
                        }
                        Ok(_) => unreadable = false,
                        // Mid-rotation writes can be seen half-done: keep the last good anchors (and say so once,
                        // not at every tick).
                        Err(err) => {
                            if !unreadable {
                                tracing::warn!(error = %err, "trust anchors unusable; keeping the last good ones");
                            }
                            unreadable = true;
                        }
                    }
                }
            }
        }
    }
}
