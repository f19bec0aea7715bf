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

/// A CA (PEM) and a serving certificate and key it signed for the injector, with IP SAN 127.0.0.1: the API server
/// calls a webhook registered by URL only if its certificate names that IP and chains to `caBundle`.
pub fn webhook_pki() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "webhook test root");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["dapr-sidecar-injector.dapr-system.svc".to_owned()]).unwrap();
    leaf.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// What `ward operator` needs to run as the control plane in `namespace` would.
pub struct OperatorSetup<'a> {
    pub namespace: &'a str,
    pub kubeconfig: &'a str,
    /// The trust anchors file (in a pod: the mounted `dapr-root-ca.crt`).
    pub anchors: &'a std::path::Path,
    pub sentry: &'a str,
    /// A token bound to a `dapr-operator` pod (its projected volume's).
    pub token_file: &'a std::path::Path,
}

/// `ward operator` on 127.0.0.1 (`port` 0: any); the process and its gRPC address.
pub fn k8s_operator(setup: &OperatorSetup<'_>, port: &str) -> (super::Ward, String) {
    let args = [
        "operator",
        "--kubeconfig",
        setup.kubeconfig,
        "--port",
        port,
        "--listen-address",
        "127.0.0.1",
        "--healthz-port",
        "0",
        "--healthz-listen-address",
        "127.0.0.1",
        "--trust-anchors-file",
        super::path_str(setup.anchors),
        "--sentry-address",
        setup.sentry,
        "--sentry-token-file",
        super::path_str(setup.token_file),
    ];
    let mut operator = super::Ward::spawn("operator", &args, &[("NAMESPACE", setup.namespace)]);
    let line = operator.wait_stdout("ward operator ready:", Duration::from_secs(60));
    let grpc = super::field(&line, "grpc");
    (operator, grpc)
}

/// `ward injector` as a process for the control plane in `control_plane`, serving a [`webhook_pki`] certificate
/// (IP SAN 127.0.0.1) and keeping `webhook_name`'s caBundle; `env` adds to its environment. Returns the process,
/// its webhook URL and the CA (PEM) its certificate chains to.
pub fn start_injector(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    control_plane: &str,
    webhook_name: &str,
    env: &[(&str, &str)],
) -> (super::Ward, String, String) {
    let (ca, cert, key) = webhook_pki();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert_file, key_file, anchors) =
        (write("webhook.crt", &cert), write("webhook.key", &key), write("webhook-ca.crt", &ca));
    let mut environment = vec![("NAMESPACE", control_plane)];
    environment.extend_from_slice(env);
    let mut injector = super::Ward::spawn(
        "injector",
        &[
            "injector",
            "--port",
            "0",
            "--listen-address",
            "127.0.0.1",
            "--healthz-port",
            "0",
            "--healthz-listen-address",
            "127.0.0.1",
            "--tls-cert-file",
            super::path_str(&cert_file),
            "--tls-key-file",
            super::path_str(&key_file),
            "--trust-anchors-file",
            super::path_str(&anchors),
            "--webhook-name",
            webhook_name,
            "--kubeconfig",
            super::path_str(kubeconfig),
        ],
        &environment,
    );
    let ready = injector.wait_stdout("ward injector ready:", Duration::from_secs(30));
    let port = super::field(&ready, "webhook").rsplit(':').next().unwrap().to_owned();
    (injector, format!("https://127.0.0.1:{port}/mutate"), ca)
}
