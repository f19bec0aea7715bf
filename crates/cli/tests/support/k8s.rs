//! Kubernetes-mode control-plane pieces shared by the Kubernetes test binaries: a `ward sentry --mode kubernetes`
//! launcher, sentry clients that trust a given bundle, and an async `eventually`. The API server itself comes from
//! `ward-k8s-testenv`.

use std::time::Duration;

use ward_identity::{SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_sentry::{SentryClient, SentryClientConfig};

use super::Sentry;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub async fn eventually_async<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ward sentry --mode kubernetes` for the control plane in `control_plane` (trust domain `cluster.local`), with
/// its credentials mirrored into `credentials`, plus `extra` flags.
pub fn k8s_sentry(credentials: &std::path::Path, kubeconfig: &str, control_plane: &str, extra: &[&str]) -> Sentry {
    let mut args = vec![
        "--mode",
        "kubernetes",
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        control_plane,
        "--trust-domain",
        "cluster.local",
    ];
    args.extend_from_slice(extra);
    Sentry::start(credentials, &args)
}

pub fn ca_client(sentry: &Sentry, control_plane: &str) -> SentryClient {
    ca_client_trusting(sentry, control_plane, &sentry.roots_pem())
}

/// A client that trusts `roots` (in a pod: the mounted `dapr-root-ca.crt`).
pub fn ca_client_trusting(sentry: &Sentry, control_plane: &str, roots: &[u8]) -> SentryClient {
    let td = TrustDomain::new("cluster.local").unwrap();
    let bundle = TrustBundle::from_pem(td.clone(), roots).unwrap();
    SentryClient::new(SentryClientConfig {
        address: sentry.grpc.clone(),
        sentry_id: SpiffeId::parse(&format!("spiffe://cluster.local/ns/{control_plane}/dapr-sentry")).unwrap(),
        bundle: TrustBundleHandle::new(bundle),
        app_id: "unused".to_owned(),
        namespace: "unused".to_owned(),
        trust_domain: td,
        token_file: None,
        skew: Duration::from_secs(60),
        kubernetes: false,
        sentry_trust: None,
    })
    .unwrap()
}
