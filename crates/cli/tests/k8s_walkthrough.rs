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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::k8s::{OperatorSetup, eventually_async, k8s_operator, k8s_sentry, runtime, start_injector};
use support::mesh::{Http, TestApp};
use support::{WARD, Ward, path_str};
use ward_k8s_testenv::pod_runner::{ContainerState, PodRunner, RunnerConfig, RunningPod};
use ward_k8s_testenv::{Options, TestCluster};

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
    let (injector, url, ca) = start_injector(dir.path(), kubeconfig, &control_plane, &webhook_name, &[]);
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
        // The runner's own test needs only the sentry: the sidecar takes its configuration from files then (the
        // walk-through below runs the operator).
        .drop_sidecar_flag("--control-plane-address")
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
    // Renewal (as at 80 % of the token's life): a new token, still bound to the pod, renamed over the old one.
    let first_token = std::fs::read_to_string(&token_file).unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // a different `iat`, so a different token
    runner.renew_tokens_now();
    let renewed = support::eventually(Duration::from_secs(10), "the renewed token", || {
        std::fs::read_to_string(&token_file).ok().filter(|t| !t.is_empty() && *t != first_token)
    });
    assert_eq!(jwt_claims(renewed.trim())["kubernetes.io"]["pod"]["uid"], uid.as_str());
    assert!(runner.pods().iter().any(|p| p.events.iter().any(|e| e.contains("renewed"))));
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

/// Applies every document of `yaml` with server-side apply (field manager `ward-walkthrough`), as
/// `kubectl apply --server-side -f` would.
async fn apply_yaml(client: &kube::Client, yaml: &str) {
    use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).unwrap();
    let params = PatchParams::apply("ward-walkthrough").force();
    for document in documents.into_iter().filter(|d| !d.is_null()) {
        let text = |pointer: &str| document.pointer(pointer).and_then(|v| v.as_str()).unwrap().to_owned();
        let (api_version, kind, name) = (text("/apiVersion"), text("/kind"), text("/metadata/name"));
        let plural = match kind.as_str() {
            "Namespace" => "namespaces",
            "Secret" => "secrets",
            "ServiceAccount" => "serviceaccounts",
            "Deployment" => "deployments",
            "Component" => "components",
            "Configuration" => "configurations",
            "Subscription" => "subscriptions",
            other => panic!("the walk-through has no {other}"),
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, &kind), plural);
        let api: Api<DynamicObject> = match document.pointer("/metadata/namespace").and_then(|v| v.as_str()) {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(&name, &params, &Patch::Apply(&document))
            .await
            .unwrap_or_else(|err| panic!("applying {kind} {name}: {err}"));
    }
}

/// The example's files, in order.
fn example_manifests() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.iter().map(|f| format!("---\n{}\n", std::fs::read_to_string(f).unwrap())).collect()
}

/// The walk-through of docs/kubernetes-walkthrough.md: `ward init -k`, the control plane as local processes, the
/// example applied with server-side apply, the pod runner as the kubelet; then what the document says holds.
#[test]
fn walkthrough_examples_kubernetes_end_to_end() {
    let Some(assets) = ward_k8s_testenv::assets() else {
        ward_k8s_testenv::shared_or_skip("walkthrough_examples_kubernetes_end_to_end");
        return;
    };
    let started = Instant::now();
    let cluster = TestCluster::start(&assets, Options { controller_manager: true }).expect("test cluster");
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    let kubeconfig = cluster.kubeconfig_path();
    let dir = tempfile::tempdir().unwrap();
    let cp = "dapr-system";

    // 1. `ward init -k`: CRDs, RBAC, the control plane's Deployments and the webhook configuration.
    let (code, out, err) = support::ward_output(&["init", "-k", "--kubeconfig", path_str(kubeconfig)], &[]);
    assert_eq!(code, 0, "{out}{err}");

    // 2. The control plane as local processes. The sentry keeps its CA in the cluster as in a pod.
    let sentry = k8s_sentry(&dir.path().join("credentials"), path_str(kubeconfig), cp, &[]);
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, sentry.roots_pem()).unwrap();
    // The injector, behind the installed webhook configuration re-pointed at it by URL (no Service can reach a
    // loopback process); the process keeps the caBundle.
    let (injector, url, ca) = start_injector(dir.path(), kubeconfig, cp, "dapr-sidecar-injector", &[]);
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    rt.block_on(eventually_async(Duration::from_secs(10), "the webhook re-pointed", || async {
        // The injector writes the caBundle meanwhile: a conflict is retried on the new version.
        let mut webhook = webhooks.get("dapr-sidecar-injector").await.unwrap();
        for hook in webhook.webhooks.iter_mut().flatten() {
            hook.client_config.service = None;
            hook.client_config.url = Some(url.clone());
            hook.client_config.ca_bundle = Some(k8s_openapi::ByteString(ca.clone().into_bytes()));
        }
        webhooks.replace("dapr-sidecar-injector", &PostParams::default(), &webhook).await.ok()
    }));
    // The operator proves its identity to the sentry with a token bound to its (never running) pod, as its
    // projected volume would hold.
    let cp_pods: Api<Pod> = Api::namespaced(client.clone(), cp);
    let operator_pod = rt.block_on(eventually_async(Duration::from_secs(30), "the dapr-operator pod", || async {
        let list = cp_pods.list(&kube::api::ListParams::default().labels("app=dapr-operator")).await.ok()?;
        list.items.into_iter().next()
    }));
    let sentry_id = format!("spiffe://cluster.local/ns/{cp}/dapr-sentry");
    let operator_token =
        rt.block_on(ward_k8s_testenv::bound_token(&client, cp, "dapr-operator", Some(&operator_pod), &sentry_id));
    let operator_token_file = dir.path().join("operator-token");
    std::fs::write(&operator_token_file, operator_token).unwrap();
    let operator_setup = OperatorSetup {
        namespace: cp,
        kubeconfig: path_str(kubeconfig),
        anchors: &anchors,
        sentry: &sentry.grpc,
        token_file: &operator_token_file,
    };
    let (operator, operator_grpc) = k8s_operator(&operator_setup, "0");

    // 3. The pod runner plays the kubelet for the example's namespace; the apps are in-process echo servers
    //    (what the manifests' http-echo image does).
    let config = RunnerConfig::new(kubeconfig, &["ward-demo"], &dir.path().join("pods"), Path::new(WARD))
        .service_address(&format!("dapr-sentry.{cp}.svc.cluster.local:443"), &sentry.grpc)
        .service_address(&format!("dapr-api.{cp}.svc.cluster.local:443"), &operator_grpc);
    let runner = PodRunner::start(config).unwrap();

    // 4. `kubectl apply -f examples/kubernetes/` (server-side apply through the client).
    let applied = Instant::now();
    rt.block_on(apply_yaml(&client, &example_manifests()));

    // A runner timeout carries the runner's state; the control plane's logs are added.
    let dump = |what: &str| {
        format!(
            "{what}\nsentry:\n{}\ninjector:\n{}\noperator:\n{}",
            sentry.process.stderr_text(),
            injector.stderr_text(),
            operator.stderr_text()
        )
    };
    let mut apps = BTreeMap::new();
    let mut sidecars = BTreeMap::new();
    for app_id in ["orders", "checkout"] {
        let pod = runner
            .wait_running("ward-demo", app_id, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{}", dump(&e.to_string())));
        apps.insert(app_id, TestApp::start_on(pod.ports.app));
        runner
            .wait_stdout(&pod, "daprd", "ward sidecar ready:", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{}", dump(&e.to_string())));
        sidecars.insert(app_id, format!("127.0.0.1:{}", pod.ports.http));
    }
    let to_ready = applied.elapsed();

    let http = Http::new();
    let token = [("dapr-api-token", "walkthrough-demo-token-change-me")];
    let (orders, checkout) = (&sidecars["orders"], &sidecars["checkout"]);

    // The API token from the Secret is required on both sidecars' API.
    for api in [orders, checkout] {
        assert_eq!(http.get(api, "/v1.0/metadata").status, 401);
        let wrong = http.send("GET", api, "/v1.0/metadata", &[("dapr-api-token", "wrong")], Vec::new());
        assert_eq!(wrong.status, 401);
    }

    // checkout → orders through both sidecars (mTLS, orders found by the name the resolver forms): the one
    // allowed operation passes, everything else is refused by orders' accessControl and never reaches the app.
    let invoke = |from: &str, method: &str, path: &str| http.send(method, from, path, &token, b"{}".to_vec());
    let allowed = support::eventually(Duration::from_secs(20), "checkout → orders POST /neworder", || {
        let reply = invoke(checkout, "POST", "/v1.0/invoke/orders/method/neworder");
        (reply.status == 200).then_some(reply)
    });
    assert!(allowed.text().starts_with("echo:/neworder"), "{}", allowed.text());
    // The app token from orders' Secret reaches the orders app (the caller's API token does not).
    let delivered = apps["orders"].seen();
    let neworder = delivered.iter().find(|s| s.path_and_query == "/neworder").unwrap();
    assert_eq!(neworder.headers.get("dapr-api-token").map(String::as_str), Some("walkthrough-app-token-change-me"));
    let seen_before = apps["orders"].seen().len();
    let other_op = invoke(checkout, "POST", "/v1.0/invoke/orders/method/refund");
    assert_eq!(other_op.status, 403, "{}", other_op.text());
    let other_verb = invoke(checkout, "GET", "/v1.0/invoke/orders/method/neworder");
    assert_eq!(other_verb.status, 403, "{}", other_verb.text());
    // orders may not call checkout at all (no policy for orders in checkout's Configuration).
    let reverse = invoke(orders, "POST", "/v1.0/invoke/checkout/method/neworder");
    assert_eq!(reverse.status, 403, "{}", reverse.text());
    assert_eq!(apps["orders"].seen().len(), seen_before, "a refused call reached orders");
    assert!(apps["checkout"].seen().is_empty(), "a refused call reached checkout: {:?}", apps["checkout"].seen());

    // The scoped state store: orders has it, checkout does not even see it.
    let state = br#"[{"key":"order-1","value":{"item":"book"}}]"#.to_vec();
    let saved = http.send("POST", orders, "/v1.0/state/statestore", &token, state.clone());
    assert_eq!(saved.status, 204, "{}", saved.text());
    let read = http.send("GET", orders, "/v1.0/state/statestore/order-1", &token, Vec::new());
    assert_eq!((read.status, read.json()), (200, json!({"item": "book"})));
    // checkout's sidecar has no state store at all (Dapr's answer for that: 500 ERR_STATE_STORE_NOT_CONFIGURED).
    let refused = http.send("POST", checkout, "/v1.0/state/statestore", &token, state);
    assert_eq!(refused.status, 500, "{}", refused.text());
    assert_eq!(refused.json()["errorCode"], "ERR_STATE_STORE_NOT_CONFIGURED");
    let components = |api: &str| {
        let metadata = http.send("GET", api, "/v1.0/metadata", &token, Vec::new()).json();
        metadata["components"].as_array().cloned().unwrap_or_default()
    };
    assert!(components(orders).iter().any(|c| c["name"] == "statestore"), "{:?}", components(orders));
    assert!(!components(checkout).iter().any(|c| c["name"] == "statestore"), "{:?}", components(checkout));

    // 5. Day two: components change under running sidecars, through the operator's update streams.
    let has = |api: &str, name: &str| components(api).iter().any(|c| c["name"] == name);
    let save = |api: &str, store: &str| {
        let body = br#"[{"key":"k","value":"v"}]"#.to_vec();
        http.send("POST", api, &format!("/v1.0/state/{store}"), &token, body)
    };
    // A new store for checkout, whose connection string comes from a Kubernetes Secret the operator resolves.
    let database = dir.path().join("checkout-cache.db");
    let cache = |store_type: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: cache-db, namespace: ward-demo}}\nstringData:\n  \
             connection: {}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: cache, \
             namespace: ward-demo}}\nspec:\n  type: {store_type}\n  version: v1\n  metadata:\n  - name: \
             connectionString\n    secretKeyRef: {{name: cache-db, key: connection}}\nscopes: [checkout]\n",
            database.display()
        )
    };
    let changed = Instant::now();
    rt.block_on(apply_yaml(&client, &cache("state.sqlite")));
    support::eventually(Duration::from_secs(5), "the new component in checkout's sidecar", || {
        (save(checkout, "cache").status == 204).then_some(())
    });
    let create_latency = changed.elapsed();
    assert!(database.exists(), "the connection string from the Secret was not used");
    assert!(!has(orders, "cache"), "cache is scoped to checkout");
    // An update that widens the scopes reaches orders' sidecar, which never had the component.
    rt.block_on(apply_yaml(
        &client,
        &cache("state.sqlite").replace("scopes: [checkout]", "scopes: [checkout, orders]"),
    ));
    support::eventually(Duration::from_secs(5), "the widened scopes in orders' sidecar", || {
        (save(orders, "cache").status == 204).then_some(())
    });
    // An update the sidecar cannot build (an unknown type) is refused there and the running store stays.
    rt.block_on(apply_yaml(&client, &cache("state.does-not-exist")));
    support::eventually(Duration::from_secs(10), "checkout's sidecar refusing the update", || {
        let pod = runner.pods().into_iter().find(|p| p.app_id.as_deref() == Some("checkout"))?;
        let (_, stderr) = runner.output(&pod, "daprd");
        stderr.contains("reload refused").then_some(())
    });
    assert_eq!(save(checkout, "cache").status, 204, "the refused update replaced the working store");
    // Back to the good version, then deleted: gone from the sidecar within seconds, answered as a missing store.
    rt.block_on(apply_yaml(&client, &cache("state.sqlite")));
    let components_api: Api<kube::core::DynamicObject> =
        Api::namespaced_with(client.clone(), "ward-demo", &ward_kube::operator::Kind::Component.api_resource());
    let changed = Instant::now();
    rt.block_on(components_api.delete("cache", &Default::default())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while has(checkout, "cache") {
        if Instant::now() > deadline {
            let pod = runner.pods().into_iter().find(|p| p.app_id.as_deref() == Some("checkout")).unwrap();
            panic!("the deleted component is still in checkout's sidecar:\n{}", runner.output(&pod, "daprd").1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let delete_latency = changed.elapsed();
    let gone = save(checkout, "cache");
    assert_eq!(gone.status, 500, "{}", gone.text());

    // 6. The operator restarts: the sidecars keep serving with what they have, reconnect, and see what changed
    //    while it was away.
    let operator_port = operator_grpc.rsplit(':').next().unwrap().to_owned();
    drop(operator);
    let during = invoke(checkout, "POST", "/v1.0/invoke/orders/method/neworder");
    assert_eq!(during.status, 200, "without the operator: {}", during.text());
    assert_eq!(save(orders, "statestore").status, 204);
    rt.block_on(apply_yaml(&client, &cache("state.in-memory")));
    let (operator, _) = k8s_operator(&operator_setup, &operator_port);
    support::eventually(Duration::from_secs(20), "checkout's sidecar back on the restarted operator", || {
        (save(checkout, "cache").status == 204).then_some(())
    });
    drop(operator);

    eprintln!(
        "walk-through: apply → both sidecars ready in {:.1}s; component create → used {} ms, delete → gone {} ms; \
         whole test {:.1}s",
        to_ready.as_secs_f64(),
        create_latency.as_millis(),
        delete_latency.as_millis(),
        started.elapsed().as_secs_f64()
    );
    drop(runner);
}
