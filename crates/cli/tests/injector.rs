//! `ward injector` as a real process behind a real kube-apiserver (`ward_k8s_testenv`): Dapr's environment
//! variables reach the injected sidecar, the process keeps its webhook configuration's `caBundle` equal to the
//! trust anchors file (through `--kubeconfig`), and it stops cleanly on SIGTERM.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::k8s::start_injector;
use support::{Ward, path_str};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ward_injector_process_injects_with_daprs_env_and_keeps_its_ca_bundle() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("ward_injector_process") else { return };
    let client = cluster.client().await;
    let ns = cluster.fresh_namespace(&client, "injproc").await;
    let label = json!({"metadata": {"labels": {"ward-test-webhook": ns}}});
    Api::<Namespace>::all(client.clone()).patch(&ns, &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns).create(&PostParams::default(), &sa).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let webhook_name = format!("ward-injector-{ns}");
    let (mut injector, url, ca) = start_injector(
        dir.path(),
        cluster.kubeconfig_path(),
        "ward-cp",
        &webhook_name,
        &[
            ("SIDECAR_IMAGE", "registry.local/ward:test"),
            ("DAPR_CONTROLPLANE_TRUST_DOMAIN", "example.org"),
            ("KUBE_CLUSTER_DOMAIN", "cluster.test"),
        ],
    );

    // Installed without a caBundle: the process fills it in.
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": webhook_name},
        "webhooks": [{
            "name": "sidecar-injector.dapr.io",
            "clientConfig": {"url": url},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "ward-cp"]},
                {"key": "ward-test-webhook", "operator": "In", "values": [ns]}
            ]}
        }]
    }))
    .unwrap();
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    webhooks.create(&PostParams::default(), &configuration).await.unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orders-0", "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let stored = loop {
        match pods.create(&dry_run, &pod).await {
            Ok(created) if created.spec.as_ref().unwrap().containers.iter().any(|c| c.name == "daprd") => {
                break pods.create(&PostParams::default(), &pod).await.unwrap();
            }
            other => assert!(
                Instant::now() < deadline,
                "pod not injected within 30 s: {:?}\ninjector stderr:\n{}",
                other.err(),
                injector.stderr_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let bundle = webhooks.get(&webhook_name).await.unwrap().webhooks.unwrap()[0].client_config.ca_bundle.clone();
    assert_eq!(bundle.map(|b| b.0), Some(ca.into_bytes()));

    let spec = stored.spec.unwrap();
    let daprd = spec.containers.iter().find(|c| c.name == "daprd").unwrap();
    assert_eq!(daprd.image.as_deref(), Some("registry.local/ward:test"));
    let args = daprd.args.clone().unwrap();
    let i = args.iter().position(|a| a == "--sentry-address").unwrap();
    assert_eq!(args[i + 1], "dapr-sentry.ward-cp.svc.cluster.test:443");
    let env = |name: &str| daprd.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(env("DAPR_CONTROLPLANE_NAMESPACE").as_deref(), Some("ward-cp"));
    assert_eq!(env("DAPR_CONTROLPLANE_TRUST_DOMAIN").as_deref(), Some("example.org"));
    let token = spec.volumes.iter().flatten().find(|v| v.name == "dapr-identity-token").unwrap();
    let projection = token.projected.clone().unwrap().sources.unwrap()[0].service_account_token.clone().unwrap();
    assert_eq!(projection.audience.as_deref(), Some("spiffe://example.org/ns/ward-cp/dapr-sentry"));

    injector.terminate();
    assert!(injector.wait_exit(Duration::from_secs(15)).success(), "{}", injector.stderr_text());
    let _ = webhooks.delete(&webhook_name, &DeleteParams::default()).await;
}

#[test]
fn bad_settings_are_refused_before_listening() {
    let (code, _, stderr) = support::ward_output(
        &[
            "injector",
            "--tls-cert-file",
            "/nonexistent",
            "--tls-key-file",
            "/nonexistent",
            "--port",
            "0",
            "--healthz-port",
            "0",
        ],
        &[("DAPR_CONTROLPLANE_TRUST_DOMAIN", "not a domain")],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("trust domain"), "{stderr}");
    let (code, _, stderr) = support::ward_output(
        &[
            "injector",
            "--tls-cert-file",
            "/nonexistent",
            "--tls-key-file",
            "/nonexistent",
            "--port",
            "0",
            "--healthz-port",
            "0",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    // Neither files nor the anchors to verify sentry with.
    let (code, _, stderr) = support::ward_output(&["injector", "--port", "0", "--healthz-port", "0"], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--trust-anchors-file"), "{stderr}");
    // One of the pair alone.
    let (code, _, stderr) =
        support::ward_output(&["injector", "--tls-cert-file", "/x", "--port", "0", "--healthz-port", "0"], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--tls-key-file"), "{stderr}");
}

/// Without certificate files, `ward injector` gets `dapr-injector`'s certificate from `ward sentry --mode
/// kubernetes` with a pod-bound token of its own pod, and serves it under the names the API server checks for the
/// `dapr-sidecar-injector` Service: a client that trusts only the roots and verifies the host name as the API
/// server does gets reviews answered. (The URL-registered webhooks of the other tests need an IP SAN, which a
/// sentry certificate rightly lacks, so the API server itself cannot be the client here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_files_the_certificate_comes_from_the_kubernetes_sentry() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("without_files_the_certificate_comes_from_sentry") else {
        return;
    };
    let client = cluster.client().await;
    ward_k8s_testenv::install_configuration_crd(&client).await;
    let cp = cluster.fresh_namespace(&client, "injcp").await;
    let kubeconfig = path_str(cluster.kubeconfig_path()).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let sentry_args =
        ["--mode", "kubernetes", "--kubeconfig", &kubeconfig, "--namespace", &cp, "--trust-domain", "cluster.local"];
    let sentry = tokio::task::block_in_place(|| support::Sentry::start(&dir.path().join("credentials"), &sentry_args));

    // The injector's own pod and service account, and the token a kubelet would project into it.
    let post = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &cp);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "dapr-sidecar-injector"}})).unwrap();
    accounts.create(&post, &account).await.unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "dapr-sidecar-injector-0", "labels": {"app": "dapr-sidecar-injector"}},
        "spec": {"serviceAccountName": "dapr-sidecar-injector", "containers": [{"name": "injector", "image": "ward:1"}]}
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(client.clone(), &cp).create(&post, &pod).await.unwrap();
    let request: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": [format!("spiffe://cluster.local/ns/{cp}/dapr-sentry")], "expirationSeconds": 7200,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "dapr-sidecar-injector-0", "uid": pod.metadata.uid}
    }}))
    .unwrap();
    let token = accounts.create_token_request("dapr-sidecar-injector", &post, &request).await.unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token.status.unwrap().token).unwrap();
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, sentry.roots_pem()).unwrap();

    let mut injector = Ward::spawn(
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
            "--trust-anchors-file",
            path_str(&anchors),
            "--sentry-address",
            &sentry.grpc,
            "--sentry-token-file",
            path_str(&token_file),
            "--kubeconfig",
            &kubeconfig,
            // The caBundle sync is exercised elsewhere; this configuration does not exist (the sync says so and
            // retries).
            "--webhook-name",
            "ward-injector-sentry-test-absent",
        ],
        &[("NAMESPACE", &cp)],
    );
    let ready = tokio::task::block_in_place(|| injector.wait_stdout("ward injector ready:", Duration::from_secs(30)));
    let addr: std::net::SocketAddr = support::field(&ready, "webhook").parse().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&sentry.roots_pem()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    for host in [format!("dapr-sidecar-injector.{cp}.svc"), format!("dapr-sidecar-injector.{cp}.svc.cluster.local")] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(host.clone()).unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}\ninjector stderr:\n{}", injector.stderr_text()));
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "name": "orders-0", "namespace": "shop",
                "operation": "CREATE", "userInfo": {},
                "object": {"metadata": {"name": "orders-0", "annotations": {"dapr.io/enabled": "true"}},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
        });
        let request = hyper::Request::post("/mutate")
            .header(hyper::header::HOST, host.as_str())
            .body(http_body_util::Full::new(bytes::Bytes::from(review.to_string())))
            .unwrap();
        let response =
            tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await.unwrap().unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
    // Not a name of the injector's.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("dapr-sentry.dapr-system.svc").unwrap();
    assert!(tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.is_err());
    assert!(
        injector.stderr_text().contains(&format!("spiffe://cluster.local/ns/{cp}/dapr-injector")),
        "{}",
        injector.stderr_text()
    );
}
