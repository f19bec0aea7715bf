//! Root rotation without downtime (what Dapr users ask for in dapr/dapr#5958; Dapr needs restarts of everything).
//!
//! The rotation lives in Secret `dapr-trust-bundle` itself, so it survives sentry restarts and any sentry replica
//! can drive it (every write carries the Secret's `resourceVersion`: two drivers cannot both advance a phase):
//!
//! 1. **distributing** (`ward mtls renew-certificate -k`, or automatically at a fraction of the root's life): a new
//!    root R2 and an issuer under it are generated; R2 is *appended* to `ca.crt` (so everyone trusts R1 and R2) and
//!    the new issuer waits in `next-issuer.crt`/`next-issuer.key`. Sentry publishes R1+R2 to every
//!    `dapr-root-ca.crt` ConfigMap.
//! 2. **switch**: once every ConfigMap sentry publishes carries R2 and the propagation delay has passed (the
//!    kubelet refreshes mounted ConfigMaps within about a minute; sidecars reload the file), the new issuer becomes
//!    the issuer. New certificates chain to R2; old ones, to R1, are still trusted.
//! 3. **retiring**: R1 is removed from `ca.crt` only after the longest workload certificate signed under it has
//!    expired (switch time + workload certificate lifetime + clock skew).
//!
//! The phase is an annotation on the Secret; the pending issuer is data, like the active one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use ward_identity::TrustDomain;

use crate::trust_bundle::{ISSUER_CERT_KEY, ISSUER_KEY_KEY, ROOTS_CONFIGMAP, ROOTS_KEY, TRUST_BUNDLE_SECRET};

pub const NEXT_ISSUER_CERT_KEY: &str = "next-issuer.crt";
pub const NEXT_ISSUER_KEY_KEY: &str = "next-issuer.key";
/// `distributing;since=<unix>` or `retiring;after=<unix>`.
pub const PHASE_ANNOTATION: &str = "ward.dev/root-rotation";

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("Secret {namespace}/{TRUST_BUNDLE_SECRET}: {source}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{TRUST_BUNDLE_SECRET} does not exist: start sentry first (it generates the CA)")]
    NoBundle { namespace: String },
    #[error("a root rotation is already in progress ({phase}); `ward status -k` shows it")]
    InProgress { phase: String },
    #[error("Secret {namespace}/{TRUST_BUNDLE_SECRET}: {message}")]
    Malformed { namespace: String, message: String },
    #[error("generating the new root: {0}")]
    Generate(#[from] ward_sentry::material::MaterialError),
}

/// Where a rotation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Idle,
    /// R1+R2 published since `since`; the new issuer waits.
    Distributing {
        since: SystemTime,
    },
    /// The new issuer signs; R1 leaves after `after`.
    Retiring {
        after: SystemTime,
    },
}

impl Phase {
    fn parse(annotation: Option<&String>) -> Result<Phase, String> {
        let Some(value) = annotation else { return Ok(Phase::Idle) };
        let unix = |s: &str| s.parse::<u64>().map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        match value.split_once(';') {
            Some(("distributing", rest)) => rest
                .strip_prefix("since=")
                .and_then(|s| unix(s).ok())
                .map(|since| Phase::Distributing { since })
                .ok_or_else(|| format!("{PHASE_ANNOTATION}: {value:?}")),
            Some(("retiring", rest)) => rest
                .strip_prefix("after=")
                .and_then(|s| unix(s).ok())
                .map(|after| Phase::Retiring { after })
                .ok_or_else(|| format!("{PHASE_ANNOTATION}: {value:?}")),
            _ => Err(format!("{PHASE_ANNOTATION}: unknown phase {value:?}")),
        }
    }

    fn annotation(&self) -> Option<String> {
        let secs = |t: &SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        match self {
            Phase::Idle => None,
            Phase::Distributing { since } => Some(format!("distributing;since={}", secs(since))),
            Phase::Retiring { after } => Some(format!("retiring;after={}", secs(after))),
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.annotation() {
            None => f.write_str("idle"),
            Some(text) => f.write_str(&text),
        }
    }
}

/// What the driver needs to know to advance a rotation.
#[derive(Debug, Clone)]
pub struct RotationTiming {
    /// Minimum time between publishing R2 and switching the issuer (mounted ConfigMaps take time to refresh).
    pub propagation: Duration,
    /// The longest workload certificate lifetime sentry issues (its `workloadCertTTL`).
    pub workload_ttl: Duration,
    pub allowed_clock_skew: Duration,
}

fn data_text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

fn set_data(secret: &mut Secret, key: &str, value: Option<String>) {
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    match value {
        Some(value) => {
            data.insert(key.to_owned(), ByteString(value.into_bytes()));
        }
        None => {
            data.remove(key);
        }
    }
}

fn set_phase(secret: &mut Secret, phase: &Phase) {
    let annotations = secret.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match phase.annotation() {
        Some(value) => {
            annotations.insert(PHASE_ANNOTATION.to_owned(), value);
        }
        None => {
            annotations.remove(PHASE_ANNOTATION);
        }
    }
}

/// The current phase recorded on the Secret.
pub fn phase_of(secret: &Secret) -> Result<Phase, String> {
    Phase::parse(secret.metadata.annotations.as_ref().and_then(|a| a.get(PHASE_ANNOTATION)))
}

/// The PEM blocks of a bundle, each ending in a newline.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END ") {
            blocks.push(std::mem::take(&mut current));
        }
    }
    blocks
}

/// Starts a rotation: a new root valid for `valid_for` and an issuer under it; the root is appended to the
/// bundle. Refused while another rotation is in progress.
pub async fn start(
    client: &kube::Client,
    namespace: &str,
    trust_domain: &TrustDomain,
    valid_for: Duration,
) -> Result<Phase, RotationError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api = |source| RotationError::Api { namespace: namespace.to_owned(), source };
    let mut secret = secrets
        .get_opt(TRUST_BUNDLE_SECRET)
        .await
        .map_err(api)?
        .ok_or_else(|| RotationError::NoBundle { namespace: namespace.to_owned() })?;
    let phase =
        phase_of(&secret).map_err(|message| RotationError::Malformed { namespace: namespace.to_owned(), message })?;
    if phase != Phase::Idle {
        return Err(RotationError::InProgress { phase: phase.to_string() });
    }
    let roots = data_text(&secret, ROOTS_KEY).unwrap_or_default();
    let material = ward_sentry::material::generate(trust_domain, valid_for)?;
    let mut bundle: String = pem_blocks(&roots).concat();
    bundle.push_str(&material.root_cert_pem);
    set_data(&mut secret, ROOTS_KEY, Some(bundle));
    set_data(&mut secret, NEXT_ISSUER_CERT_KEY, Some(material.issuer_cert_pem));
    set_data(&mut secret, NEXT_ISSUER_KEY_KEY, Some(material.issuer_key_pem));
    let phase = Phase::Distributing { since: SystemTime::now() };
    set_phase(&mut secret, &phase);
    // `replace` carries the resourceVersion we read: a concurrent change makes this fail, not interleave.
    secrets.replace(TRUST_BUNDLE_SECRET, &PostParams::default(), &secret).await.map_err(api)?;
    tracing::info!("root rotation started: new root appended to {namespace}/{TRUST_BUNDLE_SECRET}");
    Ok(phase)
}

/// Advances a rotation by at most one phase if its conditions hold; returns the phase after. Idempotent: run it
/// periodically (sentry does, every few seconds).
pub async fn advance(
    client: &kube::Client,
    namespace: &str,
    timing: &RotationTiming,
    now: SystemTime,
) -> Result<Phase, RotationError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api = |source| RotationError::Api { namespace: namespace.to_owned(), source };
    let malformed = |message: String| RotationError::Malformed { namespace: namespace.to_owned(), message };
    let Some(mut secret) = secrets.get_opt(TRUST_BUNDLE_SECRET).await.map_err(api)? else {
        return Ok(Phase::Idle);
    };
    let phase = phase_of(&secret).map_err(malformed)?;
    let roots = pem_blocks(&data_text(&secret, ROOTS_KEY).unwrap_or_default());
    let next = match &phase {
        Phase::Idle => return Ok(Phase::Idle),
        Phase::Distributing { since } => {
            let new_root = roots.last().cloned().ok_or_else(|| malformed("ca.crt holds no root".to_owned()))?;
            if now.duration_since(*since).unwrap_or_default() < timing.propagation
                || !published_everywhere(client, &new_root).await.map_err(api)?
            {
                return Ok(phase);
            }
            let (Some(cert), Some(key)) =
                (data_text(&secret, NEXT_ISSUER_CERT_KEY), data_text(&secret, NEXT_ISSUER_KEY_KEY))
            else {
                return Err(malformed("the rotation's next issuer is missing".to_owned()));
            };
            set_data(&mut secret, ISSUER_CERT_KEY, Some(cert));
            set_data(&mut secret, ISSUER_KEY_KEY, Some(key));
            set_data(&mut secret, NEXT_ISSUER_CERT_KEY, None);
            set_data(&mut secret, NEXT_ISSUER_KEY_KEY, None);
            Phase::Retiring { after: now + timing.workload_ttl + timing.allowed_clock_skew }
        }
        Phase::Retiring { after } => {
            if now < *after {
                return Ok(phase);
            }
            // Everything but the newest root leaves.
            let newest = roots.last().cloned().ok_or_else(|| malformed("ca.crt holds no root".to_owned()))?;
            set_data(&mut secret, ROOTS_KEY, Some(newest));
            Phase::Idle
        }
    };
    set_phase(&mut secret, &next);
    secrets.replace(TRUST_BUNDLE_SECRET, &PostParams::default(), &secret).await.map_err(api)?;
    tracing::info!("root rotation: {phase} -> {next}");
    Ok(next)
}

/// True when every `dapr-root-ca.crt` ConfigMap in the cluster carries `root`.
async fn published_everywhere(client: &kube::Client, root: &str) -> Result<bool, kube::Error> {
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    let list = configmaps.list(&ListParams::default().fields(&format!("metadata.name={ROOTS_CONFIGMAP}"))).await?;
    Ok(list.items.iter().all(|map| {
        map.data.as_ref().and_then(|d| d.get(ROOTS_KEY)).is_some_and(|text| pem_blocks(text).iter().any(|b| b == root))
    }))
}

/// When a root made at `not_before`, expiring at `not_after`, is due for rotation at `fraction` of its life.
pub fn due_at(not_before: SystemTime, not_after: SystemTime, fraction: f64) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life.mul_f64(fraction.clamp(0.0, 1.0))
}

/// Sentry's driver: every `every`, starts a rotation when the newest root has passed `fraction` of its life
/// (`None`: only on request), and advances one in progress.
pub async fn drive(
    client: kube::Client,
    namespace: String,
    trust_domain: TrustDomain,
    timing: RotationTiming,
    automatic: Option<(f64, Duration)>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        match advance(&client, &namespace, &timing, SystemTime::now()).await {
            Ok(Phase::Idle) => {
                if let Some((fraction, valid_for)) = automatic
                    && let Err(err) = start_if_due(&client, &namespace, &trust_domain, fraction, valid_for).await
                {
                    tracing::warn!("automatic root rotation: {err}");
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("root rotation: {err}; retrying"),
        }
    }
}

async fn start_if_due(
    client: &kube::Client,
    namespace: &str,
    trust_domain: &TrustDomain,
    fraction: f64,
    valid_for: Duration,
) -> Result<(), RotationError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api = |source| RotationError::Api { namespace: namespace.to_owned(), source };
    let Some(secret) = secrets.get_opt(TRUST_BUNDLE_SECRET).await.map_err(api)? else { return Ok(()) };
    let roots = data_text(&secret, ROOTS_KEY).unwrap_or_default();
    let Some(newest) = pem_blocks(&roots).last().cloned() else { return Ok(()) };
    let Some((not_before, not_after)) = validity(&newest) else { return Ok(()) };
    if SystemTime::now() >= due_at(not_before, not_after, fraction) {
        tracing::info!("the root has passed {:.0}% of its life: rotating", fraction * 100.0);
        start(client, namespace, trust_domain, valid_for).await?;
    }
    Ok(())
}

fn validity(pem: &str) -> Option<(SystemTime, SystemTime)> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or_default())
    };
    Some((at(cert.validity().not_before), at(cert.validity().not_after)))
}
