//! The injector behind a real kube-apiserver (`ward_k8s_testenv`): a `MutatingWebhookConfiguration` by
//! `url: https://127.0.0.1:<port>/mutate` with `failurePolicy: Fail` and a namespace selector excluding
//! `kube-system` and the control plane; pods created through the API server and read back as stored.
//!
//! Each test has its own namespace and its own webhook configuration, selected by a label on that namespace only,
//! so tests running side by side never call each other's injector.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use ward_injector::annotations as a;
use ward_injector::{CaBundleSync, Injector, InjectorConfig};

const TEST_LABEL: &str = "ward-test-webhook";

struct Env {
    client: kube::Client,
    ns: String,
    webhook: String,
    injector: Option<Injector>,
    pki: common::Pki,
    _dir: tempfile::TempDir,
}

/// A fresh namespace, an injector, and a webhook configuration pointing at it for that namespace only.
/// `control_plane` is the injector's control-plane namespace; `exclude_control_plane` puts it in the selector's
/// `NotIn` (as the install does).
async fn setup(
    cluster: &ward_k8s_testenv::TestCluster,
    prefix: &str,
    control_plane: Option<&str>,
    exclude_control_plane: bool,
    also_selected: &[&str],
) -> Env {
    let client = cluster.client().await;
    let ns = cluster.fresh_namespace(&client, prefix).await;
    label_namespace(&client, &ns, &ns).await;
    // Labelled before the configuration exists, so by the time it serves the test namespace these are selected
    // too.
    for other in also_selected {
        label_namespace(&client, other, &ns).await;
    }
    let pki = common::Pki::new(prefix);
    let dir = tempfile::tempdir().unwrap();
    let mut config = InjectorConfig::default();
    if let Some(cp) = control_plane {
        config.control_plane_namespace = cp.to_owned();
    }
    let cp = config.control_plane_namespace.clone();
    let injector = common::start_injector(config, &pki, dir.path(), None).await;
    let webhook = format!("ward-injector-{ns}");
    let excluded =
        if exclude_control_plane { vec!["kube-system".to_owned(), cp] } else { vec!["kube-system".to_owned()] };
    register(&client, &webhook, injector.addr.port(), Some(pki.ca_pem.as_bytes()), &ns, &excluded).await;
    let env = Env { client, ns, webhook, injector: Some(injector), pki, _dir: dir };
    env.wait_until_webhook_serves().await;
    env
}

/// Labels the namespace for a test's webhook, and creates its `default` service account (there is no controller
/// manager to do it, and pods need one to be admitted).
async fn label_namespace(client: &kube::Client, ns: &str, value: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("service account in {ns}: {err}"),
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let patch = json!({"metadata": {"labels": {TEST_LABEL: value}}});
    namespaces.patch(ns, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Registers (creates) a webhook configuration like the install's: pods, CREATE, `failurePolicy: Fail`,
/// admissionReviewVersions v1, no side effects, `kube-system` and the control plane excluded.
async fn register(
    client: &kube::Client,
    name: &str,
    port: u16,
    ca_bundle: Option<&[u8]>,
    test_ns: &str,
    excluded: &[String],
) {
    let mut configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "sidecar-injector.dapr.io",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 10,
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded},
                {"key": TEST_LABEL, "operator": "In", "values": [test_ns]}
            ]}
        }]
    }))
    .unwrap();
    if let Some(ca) = ca_bundle {
        for webhook in configuration.webhooks.iter_mut().flatten() {
            webhook.client_config.ca_bundle = Some(ByteString(ca.to_vec()));
        }
    }
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    api.create(&PostParams::default(), &configuration).await.unwrap();
}

fn pod(name: &str, annotations: &[(&str, &str)]) -> Pod {
    let annotations: serde_json::Map<String, Value> =
        annotations.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}
    }))
    .unwrap()
}

fn daprd(pod: &Pod) -> Option<Container> {
    pod.spec.as_ref()?.containers.iter().find(|c| c.name == "daprd").cloned()
}

fn flag(c: &Container, name: &str) -> Option<String> {
    let args = c.args.clone().unwrap_or_default();
    if let Some(eq) = args.iter().find_map(|a| a.strip_prefix(&format!("{name}="))) {
        return Some(eq.to_owned());
    }
    args.iter().position(|a| a == name).map(|i| args.get(i + 1).cloned().unwrap_or_default())
}

impl Env {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates the pod and reads back what the API server stored.
    async fn create(&self, pod: &Pod) -> Result<Pod, kube::Error> {
        let created = self.pods().create(&PostParams::default(), pod).await?;
        let name = created.metadata.name.clone().unwrap_or_default();
        Ok(self.pods().get(&name).await.expect("read back"))
    }

    /// The API server picks up a new webhook configuration a moment after it is written: dry-run an annotated
    /// pod until it comes back injected (bounded).
    async fn wait_until_webhook_serves(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = pod("webhook-probe", &[(a::ENABLED, "true"), (a::APP_ID, "probe")]);
        let dry_run = PostParams { dry_run: true, ..Default::default() };
        loop {
            let last = match self.pods().create(&dry_run, &probe).await {
                Ok(created) if daprd(&created).is_some() => return,
                Ok(_) => "created without a sidecar".to_owned(),
                Err(err) => err.to_string(),
            };
            assert!(Instant::now() < deadline, "webhook {} not called within 20 s: {last}", self.webhook);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn teardown(mut self) {
        if let Some(injector) = self.injector.take() {
            injector.shutdown().await;
        }
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let _ = api.delete(&self.webhook, &DeleteParams::default()).await;
    }
}

fn denial_message(result: Result<Pod, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert!((400..500).contains(&status.code), "{status:?}");
            status.message
        }
        Err(other) => panic!("expected an API refusal, got {other}"),
        Ok(pod) => panic!("pod {:?} was admitted", pod.metadata.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_pods_get_the_sidecar_and_other_pods_do_not() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("annotated_pods_get_the_sidecar") else { return };
    let env = setup(cluster, "inject", None, true, &[]).await;

    let plain = env.create(&pod("plain", &[])).await.unwrap();
    assert!(daprd(&plain).is_none());
    assert!(plain.metadata.labels.is_none_or(|l| !l.contains_key("dapr.io/sidecar-injected")));
    let off = env.create(&pod("off", &[(a::ENABLED, "false")])).await.unwrap();
    assert!(daprd(&off).is_none());

    let stored = env
        .create(&pod("orders-0", &[(a::ENABLED, "true"), (a::APP_ID, "orders"), (a::APP_PORT, "8080")]))
        .await
        .unwrap();
    let c = daprd(&stored).expect("daprd stored");
    assert_eq!(c.command, Some(vec!["/ward".to_owned()]));
    assert_eq!(c.args.as_ref().unwrap()[..3], ["sidecar", "--mode", "kubernetes"]);
    assert_eq!(flag(&c, "--app-id").as_deref(), Some("orders"));
    assert_eq!(flag(&c, "--app-port").as_deref(), Some("8080"));
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert!(sc.run_as_user.unwrap() > 0);
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let spec = stored.spec.clone().unwrap();
    let volume = |name: &str| spec.volumes.iter().flatten().find(|v| v.name == name).cloned().unwrap();
    let token =
        volume("dapr-identity-token").projected.unwrap().sources.unwrap()[0].service_account_token.clone().unwrap();
    assert_eq!(token.audience.as_deref(), Some("spiffe://cluster.local/ns/dapr-system/dapr-sentry"));
    assert_eq!(token.expiration_seconds, Some(7200));
    assert_eq!(token.path, "token");
    assert_eq!(volume("dapr-trust-anchors").config_map.unwrap().name, "dapr-root-ca.crt");
    let app = spec.containers.iter().find(|c| c.name == "app").unwrap();
    let app_env: Vec<(String, Option<String>)> =
        app.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone())).collect();
    assert_eq!(
        app_env,
        [
            ("DAPR_HTTP_PORT".to_owned(), Some("3500".to_owned())),
            ("DAPR_GRPC_PORT".to_owned(), Some("50001".to_owned())),
            ("APP_PROTOCOL".to_owned(), Some("http".to_owned())),
        ]
    );
    let labels = stored.metadata.labels.unwrap();
    assert_eq!(labels["dapr.io/sidecar-injected"], "true");
    assert_eq!(labels["dapr.io/app-id"], "orders");
    assert_eq!(labels["dapr.io/metrics-enabled"], "true");
    env.teardown().await;
}

type Check = fn(&Pod, &Container);
/// A case name, the annotations beyond `enabled` and `app-id`, and what the stored pod must show.
type EffectCase = (&'static str, &'static [(&'static str, &'static str)], Check);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_annotation_takes_effect_in_the_stored_pod() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("each_annotation_takes_effect") else { return };
    let env = setup(cluster, "effects", None, true, &[]).await;
    let cases: &[EffectCase] = &[
        ("config", &[(a::CONFIG, "appconfig")], |_, c| assert_eq!(flag(c, "--config").as_deref(), Some("appconfig"))),
        ("app-protocol", &[(a::APP_PROTOCOL, "grpc")], |p, c| {
            assert_eq!(flag(c, "--app-protocol").as_deref(), Some("grpc"));
            let app = &p.spec.as_ref().unwrap().containers[0];
            assert!(app.env.iter().flatten().any(|e| e.name == "APP_PROTOCOL" && e.value.as_deref() == Some("grpc")));
        }),
        ("log-level", &[(a::LOG_LEVEL, "debug")], |_, c| assert_eq!(flag(c, "--log-level").as_deref(), Some("debug"))),
        ("log-as-json", &[(a::LOG_AS_JSON, "true")], |_, c| {
            assert!(c.args.as_ref().unwrap().contains(&"--log-as-json".to_owned()))
        }),
        ("tokens", &[(a::API_TOKEN_SECRET, "api-token"), (a::APP_TOKEN_SECRET, "app-token")], |_, c| {
            let secret = |name: &str| {
                let e = c.env.iter().flatten().find(|e| e.name == name).unwrap();
                let r = e.value_from.clone().unwrap().secret_key_ref.unwrap();
                (r.name, r.key)
            };
            assert_eq!(secret("DAPR_API_TOKEN"), ("api-token".to_owned(), "token".to_owned()));
            assert_eq!(secret("APP_API_TOKEN"), ("app-token".to_owned(), "token".to_owned()));
        }),
        ("metrics off", &[(a::ENABLE_METRICS, "false")], |p, c| {
            assert_eq!(flag(c, "--enable-metrics").as_deref(), Some("false"));
            assert_eq!(p.metadata.labels.as_ref().unwrap()["dapr.io/metrics-enabled"], "false");
        }),
        ("ports", &[(a::GRPC_PORT, "50011"), (a::INTERNAL_GRPC_PORT, "50012"), (a::METRICS_PORT, "9191")], |p, c| {
            assert_eq!(flag(c, "--dapr-grpc-port").as_deref(), Some("50011"));
            assert_eq!(flag(c, "--dapr-internal-grpc-port").as_deref(), Some("50012"));
            assert_eq!(flag(c, "--metrics-port").as_deref(), Some("9191"));
            let app = &p.spec.as_ref().unwrap().containers[0];
            assert!(
                app.env.iter().flatten().any(|e| e.name == "DAPR_GRPC_PORT" && e.value.as_deref() == Some("50011"))
            );
        }),
        (
            "resources",
            &[(a::CPU_REQUEST, "100m"), (a::CPU_LIMIT, "1"), (a::MEMORY_REQUEST, "64Mi"), (a::MEMORY_LIMIT, "256Mi")],
            |_, c| {
                let r = c.resources.clone().unwrap();
                assert_eq!(r.requests.unwrap()["cpu"].0, "100m");
                assert_eq!(r.limits.unwrap()["memory"].0, "256Mi");
            },
        ),
        ("probes", &[(a::LIVENESS_DELAY, "5"), (a::READINESS_THRESHOLD, "2")], |_, c| {
            assert_eq!(c.liveness_probe.as_ref().unwrap().initial_delay_seconds, Some(5));
            assert_eq!(c.readiness_probe.as_ref().unwrap().failure_threshold, Some(2));
        }),
        ("image", &[(a::SIDECAR_IMAGE, "registry.local/ward:dev")], |_, c| {
            assert_eq!(c.image.as_deref(), Some("registry.local/ward:dev"))
        }),
        ("seccomp", &[(a::SECCOMP_PROFILE_TYPE, "Unconfined")], |_, c| {
            assert_eq!(c.security_context.as_ref().unwrap().seccomp_profile.as_ref().unwrap().type_, "Unconfined")
        }),
        (
            "body and shutdown",
            &[(a::MAX_BODY_SIZE, "8Mi"), (a::GRACEFUL_SHUTDOWN_SECONDS, "15"), (a::ENABLE_API_LOGGING, "true")],
            |_, c| {
                assert_eq!(flag(c, "--max-body-size").as_deref(), Some("8Mi"));
                assert_eq!(flag(c, "--dapr-graceful-shutdown-seconds").as_deref(), Some("15"));
                assert_eq!(flag(c, "--enable-api-logging").as_deref(), Some("true"));
            },
        ),
        ("env", &[(a::ENV, "A=1,B=two"), (a::ENV_FROM_SECRET, "PASS=db:password")], |_, c| {
            let e = |n: &str| c.env.iter().flatten().find(|e| e.name == n).cloned().unwrap();
            assert_eq!(e("A").value.as_deref(), Some("1"));
            assert_eq!(e("B").value.as_deref(), Some("two"));
            assert_eq!(e("PASS").value_from.unwrap().secret_key_ref.unwrap().key, "password");
        }),
        ("uds", &[(a::UNIX_DOMAIN_SOCKET_PATH, "/tmp/dapr")], |p, c| {
            assert_eq!(flag(c, "--unix-domain-socket").as_deref(), Some("/var/run/dapr-sockets"));
            let app = &p.spec.as_ref().unwrap().containers[0];
            assert!(app.volume_mounts.iter().flatten().any(|m| m.mount_path == "/tmp/dapr"));
        }),
        ("app health", &[(a::ENABLE_APP_HEALTH_CHECK, "true"), (a::APP_HEALTH_CHECK_PATH, "/ready")], |_, c| {
            assert_eq!(flag(c, "--enable-app-health-check").as_deref(), Some("true"));
            assert_eq!(flag(c, "--app-health-check-path").as_deref(), Some("/ready"));
        }),
        (
            "listen and channel",
            &[
                (a::LISTEN_ADDRESSES, "127.0.0.1"),
                (a::APP_CHANNEL_ADDRESS, "127.0.0.1"),
                (a::APP_MAX_CONCURRENCY, "10"),
            ],
            |_, c| {
                assert_eq!(flag(c, "--dapr-listen-addresses").as_deref(), Some("127.0.0.1"));
                assert_eq!(flag(c, "--app-channel-address").as_deref(), Some("127.0.0.1"));
                assert_eq!(flag(c, "--app-max-concurrency").as_deref(), Some("10"));
            },
        ),
        ("legacy body size", &[(a::HTTP_MAX_REQUEST_SIZE, "8")], |_, c| {
            assert_eq!(flag(c, "--dapr-http-max-request-size").as_deref(), Some("8"))
        }),
        (
            "features ward lacks, switched off",
            &[
                (a::PLACEMENT_HOST_ADDRESS, ""),
                (a::SCHEDULER_HOST_ADDRESS, ""),
                (a::ENABLE_PROFILING, "false"),
                (a::ENABLE_NATIVE_SIDECAR, "false"),
                (a::DISABLE_BUILTIN_K8S_SECRET_STORE, "true"),
            ],
            |_, c| {
                let args = c.args.clone().unwrap();
                assert!(
                    !args.iter().any(|a| a.contains("placement") || a.contains("scheduler") || a.contains("profiling"))
                );
            },
        ),
    ];
    for (i, (name, annotations, check)) in cases.iter().enumerate() {
        let mut all = vec![(a::ENABLED, "true"), (a::APP_ID, "effects")];
        all.extend_from_slice(annotations);
        let stored = env.create(&pod(&format!("effect-{i}"), &all)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = daprd(&stored).unwrap_or_else(|| panic!("{name}: no daprd"));
        check(&stored, &c);
    }
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_unsupported_annotations_are_denied_by_name() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("invalid_annotations_are_denied") else { return };
    let env = setup(cluster, "deny", None, true, &[]).await;
    let cases: &[(&str, &str, &str)] = &[
        (a::APP_PORT, "eighty", "not a port number"),
        (a::GRPC_PORT, "70000", "not a port number"),
        (a::APP_ID, "Bad_Id!", "dapr.io/app-id"),
        (a::APP_ID, "dapr-sentry", "reserved for the Dapr control plane"),
        (a::CPU_LIMIT, "lots", "not a Kubernetes quantity"),
        (a::MEMORY_REQUEST, "12MB", "not a Kubernetes quantity"),
        (a::GRACEFUL_SHUTDOWN_SECONDS, "5s", "not an integer"),
        (a::ENABLE_API_LOGGING, "sometimes", "not a boolean"),
        (a::ENABLED, "ture", "not a boolean"),
        (a::ENABLE_PROFILING, "true", "ward has no such feature"),
        (a::PLACEMENT_HOST_ADDRESS, "dapr-placement-server:50005", "ward has no such feature"),
        (a::READ_BUFFER_SIZE, "4", "ward has no such feature"),
        (a::APP_PROTOCOL, "https", "ward has no such feature"),
        ("dapr.io/app-prot", "8080", "check its spelling"),
    ];
    for (i, (annotation, value, problem)) in cases.iter().enumerate() {
        let mut annotations = vec![(a::ENABLED, "true"), (*annotation, *value)];
        if *annotation != a::APP_ID {
            annotations.push((a::APP_ID, "deny"));
        }
        let message = denial_message(env.create(&pod(&format!("deny-{i}"), &annotations)).await);
        assert!(message.contains(annotation), "{annotation}: {message}");
        assert!(message.contains(problem), "{annotation}: {message}");
        assert!(message.contains("ward sidecar injector"), "{message}");
    }
    // Nothing was stored.
    assert!(env.pods().list(&Default::default()).await.unwrap().items.is_empty());
    // An app id defaulting from a pod name that is not one.
    let message = denial_message(env.create(&pod("orders.v2", &[(a::ENABLED, "true")])).await);
    assert!(message.contains("dapr.io/app-id") && message.contains("pod name"), "{message}");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_its_own_daprd_is_stored_as_it_is() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("a_pod_with_its_own_daprd") else { return };
    let env = setup(cluster, "idem", None, true, &[]).await;
    let mut own = pod("own", &[(a::ENABLED, "true"), (a::APP_ID, "own")]);
    own.spec
        .as_mut()
        .unwrap()
        .containers
        .push(serde_json::from_value(json!({"name": "daprd", "image": "mine:1"})).unwrap());
    let stored = env.create(&own).await.unwrap();
    let spec = stored.spec.unwrap();
    assert_eq!(spec.containers.len(), 2);
    assert_eq!(daprd_image(&spec.containers), Some("mine:1".to_owned()));
    assert!(spec.volumes.iter().flatten().all(|v| !v.name.starts_with("dapr-")));
    assert!(stored.metadata.labels.is_none_or(|l| !l.contains_key("dapr.io/sidecar-injected")));
    env.teardown().await;
}

fn daprd_image(containers: &[Container]) -> Option<String> {
    containers.iter().find(|c| c.name == "daprd").and_then(|c| c.image.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_pods_get_no_sidecar() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("control_plane_pods_get_no_sidecar") else { return };
    // This injector's control plane is a namespace of the test's. With the install's selector the webhook is not
    // even called there: the pod is stored without a sidecar (while the same configuration injects in the test
    // namespace, selected the same way).
    let client = cluster.client().await;
    let cp = cluster.fresh_namespace(&client, "cp").await;
    let env = setup(cluster, "cpsel", Some(&cp), true, &[&cp]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &cp);
    let annotated = pod("sentry-0", &[(a::ENABLED, "true"), (a::APP_ID, "app")]);
    let stored = pods.create(&PostParams::default(), &annotated).await.unwrap();
    assert!(daprd(&stored).is_none());
    env.teardown().await;

    // If a selector lets such a pod through anyway, the injector itself refuses it. (The namespace's label
    // changes to the new configuration's: the API server sees that a moment later, hence the bounded retry.)
    let env = setup(cluster, "cpdeny", Some(&cp), false, &[&cp]).await;
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        match pods.create(&dry_run, &pod("sentry-1", &[(a::ENABLED, "true"), (a::APP_ID, "app")])).await {
            Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => break status.message,
            other => assert!(Instant::now() < deadline, "not refused: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(message.contains("control-plane namespace") && message.contains(&cp), "{message}");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_webhook_down_pods_are_refused() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("with_the_webhook_down_pods_are_refused") else { return };
    let mut env = setup(cluster, "down", None, true, &[]).await;
    env.injector.take().unwrap().shutdown().await;
    let result = env.create(&pod("orders-0", &[(a::ENABLED, "true"), (a::APP_ID, "orders")])).await;
    let message = match result {
        Err(kube::Error::Api(status)) => status.message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(message.contains("failed calling webhook"), "{message}");
    assert!(env.pods().list(&Default::default()).await.unwrap().items.is_empty(), "a pod started without its sidecar");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_bundle_follows_the_trust_anchors_file() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("the_ca_bundle_follows_the_trust_anchors_file") else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.fresh_namespace(&client, "cabundle").await;
    label_namespace(&client, &ns, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new("anchors");
    let other = common::Pki::new("other-root");
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, &pki.ca_pem).unwrap();
    let webhook = format!("ward-injector-{ns}");
    // Installed with a bundle that does not verify the injector: pods are refused until the sync fixes it.
    let injector = common::start_injector(InjectorConfig::default(), &pki, dir.path(), None).await;
    register(&client, &webhook, injector.addr.port(), Some(other.ca_pem.as_bytes()), &ns, &["kube-system".to_owned()])
        .await;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let bundle = |c: &MutatingWebhookConfiguration| {
        c.webhooks.as_ref().unwrap()[0].client_config.ca_bundle.clone().map(|b| b.0).unwrap_or_default()
    };
    let wait_for_bundle = |expected: Vec<u8>| {
        let api = api.clone();
        let webhook = webhook.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let current = api.get(&webhook).await.unwrap();
                if bundle(&current) == expected {
                    return;
                }
                assert!(Instant::now() < deadline, "caBundle not synced within 15 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let sync = CaBundleSync {
        client: client.clone(),
        webhook_name: webhook.clone(),
        trust_anchors_file: anchors.clone(),
        poll: Duration::from_millis(200),
        resync: Duration::from_millis(500),
    };
    let handle = sync.spawn().unwrap();
    wait_for_bundle(pki.ca_pem.clone().into_bytes()).await;
    let env = Env {
        client: client.clone(),
        ns: ns.clone(),
        webhook: webhook.clone(),
        injector: Some(injector),
        pki,
        _dir: dir,
    };
    env.wait_until_webhook_serves().await;

    // A rotation appends a root: the file changes, the bundle follows.
    let rotated = format!("{}{}", env.pki.ca_pem, other.ca_pem);
    std::fs::write(&anchors, &rotated).unwrap();
    wait_for_bundle(rotated.clone().into_bytes()).await;
    // Someone re-applies the configuration with a stale bundle: repaired at the next resync.
    let mut stale = api.get(&webhook).await.unwrap();
    stale.webhooks.as_mut().unwrap()[0].client_config.ca_bundle = Some(ByteString(other.ca_pem.clone().into_bytes()));
    api.replace(&webhook, &PostParams::default(), &stale).await.unwrap();
    wait_for_bundle(rotated.clone().into_bytes()).await;
    // A broken file keeps the last good bundle.
    std::fs::write(&anchors, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(bundle(&api.get(&webhook).await.unwrap()), rotated.into_bytes());
    let stored = env.create(&pod("orders-0", &[(a::ENABLED, "true"), (a::APP_ID, "orders")])).await.unwrap();
    assert!(daprd(&stored).is_some());
    handle.abort();
    env.teardown().await;
}

/// The rights the `caBundle` sync needs, and no more: get and patch of its one `MutatingWebhookConfiguration`
/// (by `resourceNames`). The install's RBAC for the injector is this rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_bundle_sync_runs_with_rights_on_its_one_configuration_only() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("the_ca_bundle_sync_runs_with_least_rights") else { return };
    let admin = cluster.client().await;
    let ns = cluster.fresh_namespace(&admin, "carbac").await;
    label_namespace(&admin, &ns, &ns).await;
    let webhook = format!("ward-injector-{ns}");
    let role_name = format!("ward-injector-{ns}");
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": role_name},
        "rules": [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                   "resourceNames": [webhook], "verbs": ["get", "patch"]}]
    }))
    .unwrap();
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "dapr-sidecar-injector", "namespace": ns}]
    }))
    .unwrap();
    let post = PostParams::default();
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin.clone()).create(&post, &role).await.unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone()).create(&post, &binding).await.unwrap();
    register(&admin, &webhook, 1, None, &ns, &["kube-system".to_owned()]).await;

    let injector_sa = cluster.client_as_service_account(&ns, "dapr-sidecar-injector").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new("rbac");
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, &pki.ca_pem).unwrap();
    let handle = CaBundleSync {
        client: injector_sa.clone(),
        webhook_name: webhook.clone(),
        trust_anchors_file: anchors,
        poll: Duration::from_millis(200),
        resync: Duration::from_millis(500),
    }
    .spawn()
    .unwrap();
    let api: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let bundle = api.get(&webhook).await.unwrap().webhooks.unwrap()[0].client_config.ca_bundle.clone();
        if bundle.map(|b| b.0) == Some(pki.ca_pem.clone().into_bytes()) {
            break;
        }
        assert!(Instant::now() < deadline, "caBundle not synced with the injector's own rights");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The resync works with these rights too: a stale bundle written by someone else is repaired.
    let mut stale = api.get(&webhook).await.unwrap();
    stale.webhooks.as_mut().unwrap()[0].client_config.ca_bundle = Some(ByteString(b"stale".to_vec()));
    api.replace(&webhook, &post, &stale).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let bundle = api.get(&webhook).await.unwrap().webhooks.unwrap()[0].client_config.ca_bundle.clone();
        if bundle.map(|b| b.0) == Some(pki.ca_pem.clone().into_bytes()) {
            break;
        }
        assert!(Instant::now() < deadline, "stale caBundle not repaired by the resync");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing beyond its own configuration.
    let theirs: Api<MutatingWebhookConfiguration> = Api::all(injector_sa);
    let err = theirs.list(&Default::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 403), "{err}");
    handle.abort();
    let _ = api.delete(&webhook, &DeleteParams::default()).await;
}
