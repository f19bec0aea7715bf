//! Kubernetes end to end with `ward_k8s_testenv::pod_runner` playing the kubelet: pods the real injector mutated
//! run as local processes (the injected `daprd` as the real `ward sidecar --mode kubernetes`) with pod-bound
//! tokens, the mounted trust anchors and env from the real Secrets, against the real `ward sentry --mode
//! kubernetes`.
//!
//! - `pod_runner_runs_injected_pods_against_the_kubernetes_sentry`: the runner itself, on the shared cluster (no
//!   operator needed): identity, files, env, API token, status, deletion, a pod that cannot start.
//! - `walkthrough_examples_kubernetes_end_to_end`: `examples/kubernetes/` as docs/kubernetes-walkthrough.md
//!   describes it (private cluster with the controller manager, `ward init -k`, server-side apply).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::json;
use support::k8s::{eventually_async, k8s_sentry, runtime};
use support::mesh::{Http, TestApp};
use support::{WARD, Ward, path_str};
use ward_k8s_testenv::pod_runner::{ContainerState, PodRunner, RunnerConfig, RunningPod};

/// A CA (PEM) and a serving certificate and key it signed, with IP SAN 127.0.0.1 (for a webhook by URL).
fn webhook_pki() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "walkthrough webhook root");
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

/// `ward injector` as a process serving a certificate with IP SAN 127.0.0.1; returns it, its URL and its CA.
fn start_injector(dir: &Path, kubeconfig: &Path, control_plane: &str, webhook_name: &str) -> (Ward, String, String) {
    let (ca, cert, key) = webhook_pki();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert_file, key_file, anchors) =
        (write("webhook.crt", &cert), write("webhook.key", &key), write("webhook-ca.crt", &ca));
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
            "--tls-cert-file",
            path_str(&cert_file),
            "--tls-key-file",
            path_str(&key_file),
            "--trust-anchors-file",
            path_str(&anchors),
            "--webhook-name",
            webhook_name,
            "--kubeconfig",
            path_str(kubeconfig),
        ],
        &[("NAMESPACE", control_plane)],
    );
    let ready = injector.wait_stdout("ward injector ready:", Duration::from_secs(30));
    let port = support::field(&ready, "webhook").rsplit(':').next().unwrap().to_owned();
    (injector, format!("https://127.0.0.1:{port}/mutate"), ca)
}

/// Creates `pod` once the webhook injects it (the API server may need a moment to call a new webhook).
async fn create_injected(pods: &Api<Pod>, pod: &Pod, injector: &Ward) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(30);
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    loop {
        match pods.create(&dry_run, pod).await {
            Ok(created) if created.spec.as_ref().unwrap().containers.iter().any(|c| c.name == "daprd") => {
                return pods.create(&PostParams::default(), pod).await.unwrap();
            }
            other => assert!(
                Instant::now() < deadline,
                "pod not injected within 30 s: {:?}\ninjector stderr:\n{}",
                other.err(),
                injector.stderr_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The claims of a JWT (not verified: the API server and the sentry do that).
fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn ok_or_dump<T>(result: Result<T, ward_k8s_testenv::pod_runner::RunnerError>) -> T {
    result.unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn pod_runner_runs_injected_pods_against_the_kubernetes_sentry() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("pod_runner_runs_injected_pods") else { return };
    let started = Instant::now();
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(ward_k8s_testenv::install_configuration_crd(&client));
    let control_plane = rt.block_on(cluster.fresh_namespace(&client, "cp"));
    let ns = rt.block_on(cluster.fresh_namespace(&client, "runner"));
    let label = json!({"metadata": {"labels": {"ward-test-webhook": ns}}});
    rt.block_on(Api::<Namespace>::all(client.clone()).patch(&ns, &PatchParams::default(), &Patch::Merge(&label)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster.kubeconfig_path();
    let audit_log = dir.path().join("sentry-audit.log");
    let sentry = k8s_sentry(
        &dir.path().join("credentials"),
        path_str(kubeconfig),
        &control_plane,
        &["--audit-log", path_str(&audit_log)],
    );

    let webhook_name = format!("ward-walkthrough-{ns}");
    let (injector, url, ca) = start_injector(dir.path(), kubeconfig, &control_plane, &webhook_name);
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": webhook_name},
        "webhooks": [{
            "name": "sidecar-injector.dapr.io",
            "clientConfig": {"url": url, "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca)},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchLabels": {"ward-test-webhook": ns}}
        }]
    }))
    .unwrap();
    rt.block_on(webhooks.create(&PostParams::default(), &configuration)).unwrap();

    let post = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = |name: &str, token: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"token": token}})).unwrap()
    };
    rt.block_on(secrets.create(&post, &secret("api-token", "runner-test-token"))).unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let settings: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"mode": "first"}})).unwrap();
    rt.block_on(configmaps.create(&post, &settings)).unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    for name in ["orders", "billing"] {
        let account = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        rt.block_on(accounts.create(&post, &account)).unwrap();
    }

    let sentry_service = format!("dapr-sentry.{control_plane}.svc.cluster.local:443");
    let config = RunnerConfig::new(kubeconfig, &[ns.as_str()], &dir.path().join("pods"), Path::new(WARD))
        .service_address(&sentry_service, &sentry.grpc)
        .app_command(|app| {
            // The probe container records its env and files, then idles (the runner stops it).
            (app.container.name == "probe").then(|| {
                let mut command = Command::new("sh");
                command.arg("-c").arg("env | sort > env.txt; exec sleep 600").current_dir(app.dir);
                command
            })
        });
    let runner = PodRunner::start(config).unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orders-0", "annotations": {
            "dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/app-port": "8080",
            "dapr.io/api-token-secret": "api-token"}},
        "spec": {
            "serviceAccountName": "orders",
            "volumes": [{"name": "settings", "configMap": {"name": "settings"}}],
            "containers": [
                {"name": "app", "image": "app:1"},
                {"name": "probe", "image": "probe:1",
                 "volumeMounts": [{"name": "settings", "mountPath": "/etc/settings"}],
                 "env": [
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}}},
                    {"name": "MY_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "SETTINGS_FILE", "value": "/etc/settings/mode"}]}]}
    }))
    .unwrap();
    let stored = rt.block_on(create_injected(&pods, &pod, &injector));
    let uid = stored.metadata.uid.clone().unwrap();

    let running = ok_or_dump(runner.wait_running(&ns, "orders", Duration::from_secs(30)));
    assert_eq!(running.uid, uid);
    let app = TestApp::start_on(running.ports.app);
    let ready = runner
        .wait_stdout(&running, "daprd", "ward sidecar ready:", Duration::from_secs(30))
        .unwrap_or_else(|err| panic!("{err}\nsentry stderr:\n{}", sentry.process.stderr_text()));
    assert!(ready.contains(&format!("http=127.0.0.1:{}", running.ports.http)), "{ready}");
    assert!(ready.contains(&format!("internal=127.0.0.1:{}", running.ports.internal)), "{ready}");

    // The projected token: a TokenRequest bound to this pod, for the sentry's audience, two hours.
    let token_file = running.dir.join("volumes/dapr-identity-token/token");
    let claims = jwt_claims(std::fs::read_to_string(&token_file).unwrap().trim());
    let sentry_id = format!("spiffe://cluster.local/ns/{control_plane}/dapr-sentry");
    assert_eq!(claims["aud"], json!([sentry_id]));
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "orders-0");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], uid.as_str());
    assert_eq!(claims["sub"], format!("system:serviceaccount:{ns}:orders"));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 7200);
    // The trust anchors: the ConfigMap the sentry publishes, mounted where DAPR_TRUST_ANCHORS_FILE points.
    let anchors = std::fs::read(running.dir.join("volumes/dapr-trust-anchors/ca.crt")).unwrap();
    assert_eq!(anchors, sentry.roots_pem());
    // The sentry issued the pod's identity for that token.
    let audit = std::fs::read_to_string(&audit_log).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("SENTRY_CERTIFICATE_ISSUED") && l.contains(&format!("spiffe://public/ns/{ns}/orders"))),
        "{audit}"
    );

    // The API token from the Secret guards the sidecar's API.
    let http = Http::new();
    let api = format!("127.0.0.1:{}", running.ports.http);
    assert_eq!(http.get(&api, "/v1.0/metadata").status, 401);
    let metadata = http.send("GET", &api, "/v1.0/metadata", &[("dapr-api-token", "runner-test-token")], Vec::new());
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    assert_eq!(metadata.json()["id"], "orders");
    // The sidecar reaches the app on the pod's app port.
    let invoked = http.send(
        "POST",
        &api,
        "/v1.0/invoke/orders/method/ping",
        &[("dapr-api-token", "runner-test-token")],
        Vec::new(),
    );
    assert_eq!(invoked.status, 200, "{}", invoked.text());
    assert!(app.seen().iter().any(|s| s.path_and_query == "/ping"), "{:?}", app.seen());

    // The probe container's env: Secret, fieldRefs, mount path rewritten, the sidecar's ports.
    let env_file = running.dir.join("env.txt");
    let env = support::eventually(Duration::from_secs(10), "probe env", || std::fs::read_to_string(&env_file).ok());
    let var = |name: &str| {
        env.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).map(str::to_owned).unwrap_or_default()
    };
    assert_eq!(var("FROM_SECRET"), "runner-test-token");
    assert_eq!(var("MY_UID"), uid);
    assert_eq!(var("MY_IP"), "127.0.0.1");
    assert_eq!(var("DAPR_HTTP_PORT"), running.ports.http.to_string());
    assert_eq!(var("APP_PORT"), running.ports.app.to_string());
    let settings_file = PathBuf::from(var("SETTINGS_FILE"));
    assert!(settings_file.starts_with(&running.dir), "{}", settings_file.display());
    assert_eq!(std::fs::read_to_string(&settings_file).unwrap(), "first");
    // A ConfigMap change reaches the mounted file.
    let change = json!({"data": {"mode": "second"}});
    rt.block_on(configmaps.patch("settings", &PatchParams::default(), &Patch::Merge(&change))).unwrap();
    support::eventually(Duration::from_secs(10), "the ConfigMap change in the volume", || {
        (std::fs::read_to_string(&settings_file).ok()? == "second").then_some(())
    });

    // Cluster DNS for sidecars, and the pod's status.
    let overrides = std::fs::read_to_string(dir.path().join("pods/name-resolution-overrides")).unwrap();
    assert!(
        overrides.contains(&format!("orders-dapr.{ns}.svc.cluster.local 127.0.0.1:{}", running.ports.internal)),
        "{overrides}"
    );
    let status = rt.block_on(eventually_async(Duration::from_secs(10), "pod status Running", || async {
        let status = pods.get("orders-0").await.ok()?.status?;
        (status.phase.as_deref() == Some("Running")).then_some(status)
    }));
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));

    // A pod whose API token Secret does not exist never starts, and says why.
    let broken: Pod = serde_json::from_value(json!({
        "metadata": {"name": "billing-0", "annotations": {
            "dapr.io/enabled": "true", "dapr.io/app-id": "billing", "dapr.io/api-token-secret": "missing"}},
        "spec": {"serviceAccountName": "billing", "containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    rt.block_on(create_injected(&pods, &broken, &injector));
    let waiting = ok_or_dump(runner.wait(Duration::from_secs(15), "billing-0 waiting on its Secret", |pods| {
        pods.iter()
            .find(|p| p.name == "billing-0" && p.waiting.as_deref().is_some_and(|w| w.contains("Secret")))
            .cloned()
    }));
    assert!(waiting.waiting.as_deref().unwrap().contains(&format!("Secret {ns}/missing not found")), "{waiting:?}");
    assert!(waiting.containers.iter().all(|(_, state)| state != &ContainerState::Running), "{waiting:?}");

    // Deleting the pod stops its processes: the sidecar's API goes away.
    rt.block_on(pods.delete("orders-0", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }))
        .unwrap();
    support::eventually(Duration::from_secs(15), "the deleted pod's sidecar stopped", || {
        std::net::TcpStream::connect(&api).is_err().then_some(())
    });
    assert!(!runner.pods().iter().any(|p: &RunningPod| p.name == "orders-0"));

    drop(runner);
    let _ = rt.block_on(webhooks.delete(&webhook_name, &DeleteParams::default()));
    eprintln!("pod runner test took {:.1}s", started.elapsed().as_secs_f64());
}
