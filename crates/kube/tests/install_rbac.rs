//! The installed control plane against a real API server (one per test binary): each control-plane service
//! account can do what it needs and is refused what it was not granted (RBAC through impersonation, with real
//! API calls); Dapr resources round-trip through the CRDs without pruning; the webhook refuses pods while the
//! injector is down; the trust bundle Secret is read for `ward mtls expiry -k` / `export -k`.
//!
//! ward is installed once per binary (cluster-scoped objects such as the ClusterRoles and the webhook would
//! otherwise be rewritten by concurrent tests), into a control-plane namespace that existed before (so install
//! also leaves a foreign namespace alone), with one app namespace holding a pod created before the webhook.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret, Service};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use ward_k8s_testenv::TestCluster;
use ward_kube::install::{self, InstallError, InstallOptions};

struct Setup {
    control_plane: String,
    app: String,
}

/// Installs ward once (on a thread with its own runtime: each test has its own runtime, and a client is bound to
/// the runtime that made it).
fn setup(cluster: &'static TestCluster) -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let client = cluster.client().await;
                let control_plane = cluster.fresh_namespace(&client, "wardcp").await;
                let app = cluster.fresh_namespace(&client, "app").await;
                // No controller manager here, so no `default` service account: the pod names its own.
                let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &app);
                accounts
                    .create(&PostParams::default(), &from_json(json!({"metadata": {"name": "app"}})))
                    .await
                    .unwrap();
                let pods: Api<Pod> = Api::namespaced(client.clone(), &app);
                let pod = json!({"metadata": {"name": "app-0"},
                    "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app:1"}]}});
                pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
                let options = InstallOptions { namespace: control_plane.clone(), ..InstallOptions::default() };
                let report = tokio::time::timeout(Duration::from_secs(90), install::install(&client, &options))
                    .await
                    .expect("install timed out")
                    .unwrap();
                assert_eq!(
                    report.skipped,
                    vec![format!("Namespace {control_plane}")],
                    "a foreign namespace is not ward's"
                );
                Setup { control_plane, app }
            })
        })
        .join()
        .expect("install thread")
    })
}

/// `Ok` → allowed; `Err(403)` → forbidden; anything else is a test failure.
fn allowed<T>(what: &str, result: Result<T, kube::Error>) {
    if let Err(err) = result {
        panic!("{what}: expected allowed, got {err}");
    }
}

fn forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

async fn admin_setup() -> Option<(&'static TestCluster, &'static Setup, Client)> {
    let cluster = ward_k8s_testenv::shared_or_skip("install_rbac")?;
    let setup = setup(cluster);
    Some((cluster, setup, cluster.client().await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_can_do_its_job_and_nothing_else() {
    let Some((cluster, setup, admin)) = admin_setup().await else { return };
    let (cp, app) = (setup.control_plane.as_str(), setup.app.as_str());
    let post = PostParams::default();
    // Objects the sentry must not touch, made by the admin.
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), cp);
    let _ =
        admin_secrets.create(&post, &from_json(json!({"metadata": {"name": "other"}, "stringData": {"k": "v"}}))).await;
    let admin_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), app);
    let _ = admin_maps.create(&post, &from_json(json!({"metadata": {"name": "other"}, "data": {"k": "v"}}))).await;

    let sentry = cluster.client_as_service_account(cp, "dapr-sentry").await;
    // What it needs.
    let reviews: Api<TokenReview> = Api::all(sentry.clone());
    let review = from_json(json!({"spec": {"token": "not-a-token", "audiences": ["x"]}}));
    allowed("create TokenReview", reviews.create(&post, &review).await);
    allowed("get pod in an app namespace", Api::<Pod>::namespaced(sentry.clone(), app).get("app-0").await);
    allowed("list pods (all namespaces)", Api::<Pod>::all(sentry.clone()).list(&ListParams::default()).await);
    allowed("list namespaces", Api::<Namespace>::all(sentry.clone()).list(&ListParams::default()).await);
    let configurations: Api<DynamicObject> =
        Api::namespaced_with(sentry.clone(), cp, &ward_kube::dapr::configuration());
    allowed("get daprsystem", configurations.get("daprsystem").await);
    let secrets: Api<Secret> = Api::namespaced(sentry.clone(), cp);
    let bundle: Secret = from_json(json!({"metadata": {"name": "dapr-trust-bundle"}, "stringData": {"ca.crt": "x"}}));
    match secrets.create(&post, &bundle).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("create dapr-trust-bundle: {err}"),
    }
    let mut current = secrets.get("dapr-trust-bundle").await.expect("get dapr-trust-bundle");
    current.string_data = Some([("issuer.crt".to_owned(), "y".to_owned())].into());
    allowed("update dapr-trust-bundle", secrets.replace("dapr-trust-bundle", &post, &current).await);
    let maps: Api<ConfigMap> = Api::namespaced(sentry.clone(), app);
    let roots: ConfigMap = from_json(json!({"metadata": {"name": "dapr-root-ca.crt"}, "data": {"ca.crt": "pem"}}));
    match maps.create(&post, &roots).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("create dapr-root-ca.crt: {err}"),
    }
    let mut current = maps.get("dapr-root-ca.crt").await.expect("get dapr-root-ca.crt");
    current.data = Some([("ca.crt".to_owned(), "pem2".to_owned())].into());
    allowed("update dapr-root-ca.crt", maps.replace("dapr-root-ca.crt", &post, &current).await);
    let apply = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dapr-root-ca.crt"},
        "data": {"ca.crt": "pem3"}});
    allowed(
        "server-side apply dapr-root-ca.crt",
        maps.patch("dapr-root-ca.crt", &PatchParams::apply("ward-sentry").force(), &Patch::Apply(&apply)).await,
    );

    // What it was not granted.
    forbidden("get another Secret in its namespace", secrets.get("other").await);
    forbidden("list Secrets in its namespace", secrets.list(&ListParams::default()).await);
    forbidden("delete dapr-trust-bundle", secrets.delete("dapr-trust-bundle", &DeleteParams::default()).await);
    let app_secrets: Api<Secret> = Api::namespaced(sentry.clone(), app);
    forbidden("create a Secret in an app namespace", app_secrets.create(&post, &bundle).await);
    forbidden("get another ConfigMap", maps.get("other").await);
    let mut other: ConfigMap = from_json(json!({"metadata": {"name": "other"}, "data": {"k": "changed"}}));
    other.metadata.resource_version = admin_maps.get("other").await.unwrap().metadata.resource_version;
    forbidden("update another ConfigMap", maps.replace("other", &post, &other).await);
    forbidden("delete dapr-root-ca.crt", maps.delete("dapr-root-ca.crt", &DeleteParams::default()).await);
    forbidden("delete a namespace", Api::<Namespace>::all(sentry.clone()).delete(app, &DeleteParams::default()).await);
    let pod: Pod =
        from_json(json!({"metadata": {"name": "evil"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}));
    forbidden("create a pod", Api::<Pod>::namespaced(sentry.clone(), cp).create(&post, &pod).await);
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(sentry.clone());
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    forbidden(
        "patch the injector's webhook",
        webhooks.patch("dapr-sidecar-injector", &PatchParams::default(), &Patch::Merge(&label)).await,
    );
    let components: Api<DynamicObject> = Api::all_with(sentry.clone(), &ward_kube::dapr::component());
    forbidden("list components", components.list(&ListParams::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injector_can_patch_its_webhook_only() {
    let Some((cluster, setup, admin)) = admin_setup().await else { return };
    let (cp, app) = (setup.control_plane.as_str(), setup.app.as_str());
    let admin_webhooks: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let other_name = format!("other-{cp}");
    let other: MutatingWebhookConfiguration = from_json(json!({"metadata": {"name": other_name}}));
    let _ = admin_webhooks.create(&PostParams::default(), &other).await;

    let injector = cluster.client_as_service_account(cp, "dapr-sidecar-injector").await;
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(injector.clone());
    allowed("get its webhook", webhooks.get("dapr-sidecar-injector").await);
    // What the injector does: keep caBundle equal to its trust anchors (JSON merge patch of the one webhook).
    let ca_bundle = json!({"webhooks": [{"name": "sidecar-injector.dapr.io", "clientConfig": {"caBundle": "Zm9v"}}]});
    let patched = webhooks
        .patch("dapr-sidecar-injector", &PatchParams::default(), &Patch::Strategic(&ca_bundle))
        .await
        .expect("patch its webhook's caBundle");
    let stored = patched.webhooks.unwrap()[0].client_config.ca_bundle.clone().unwrap();
    assert_eq!(stored.0, b"foo");

    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    forbidden(
        "patch another webhook",
        webhooks.patch(&other_name, &PatchParams::default(), &Patch::Merge(&label)).await,
    );
    forbidden("list webhooks", webhooks.list(&ListParams::default()).await);
    forbidden("delete its webhook", webhooks.delete("dapr-sidecar-injector", &DeleteParams::default()).await);
    forbidden("get a Secret", Api::<Secret>::namespaced(injector.clone(), cp).get("dapr-trust-bundle").await);
    forbidden("get a pod", Api::<Pod>::namespaced(injector.clone(), app).get("app-0").await);
    let pod: Pod =
        from_json(json!({"metadata": {"name": "evil"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}));
    forbidden("create a pod", Api::<Pod>::namespaced(injector.clone(), cp).create(&PostParams::default(), &pod).await);
    forbidden("delete a namespace", Api::<Namespace>::all(injector).delete(app, &DeleteParams::default()).await);

    // A later `ward init -k` keeps the injector's caBundle: server-side apply leaves fields other managers own.
    let options = InstallOptions { namespace: cp.to_owned(), ..InstallOptions::default() };
    install::install(&admin, &options).await.unwrap();
    let after = admin_webhooks.get("dapr-sidecar-injector").await.unwrap();
    assert_eq!(after.webhooks.unwrap()[0].client_config.ca_bundle.clone().unwrap().0, b"foo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reads_dapr_resources_and_secrets_and_writes_services() {
    let Some((cluster, setup, _admin)) = admin_setup().await else { return };
    let (cp, app) = (setup.control_plane.as_str(), setup.app.as_str());
    let post = PostParams::default();
    let operator = cluster.client_as_service_account(cp, "dapr-operator").await;
    for resource in ["components", "configurations", "subscriptions", "resiliencies", "httpendpoints", "mcpservers"] {
        let kind = resource.trim_end_matches('s');
        let ar = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("dapr.io", "v1alpha1", kind),
            resource,
        );
        let api: Api<DynamicObject> = Api::all_with(operator.clone(), &ar);
        allowed(&format!("list {resource}"), api.list(&ListParams::default()).await);
    }
    // Secrets: read one by one (a component's secretKeyRef), never listed or watched cluster-wide.
    allowed("get a Secret", Api::<Secret>::namespaced(operator.clone(), app).get_opt("redis").await);
    forbidden("list Secrets", Api::<Secret>::all(operator.clone()).list(&ListParams::default()).await);
    // The `<app-id>-dapr` Services follow annotated Deployments and StatefulSets.
    let deployments = Api::<Deployment>::all(operator.clone());
    allowed("list Deployments", deployments.list(&ListParams::default()).await);
    let stateful_sets = Api::<k8s_openapi::api::apps::v1::StatefulSet>::all(operator.clone());
    allowed("list StatefulSets", stateful_sets.list(&ListParams::default()).await);
    let services: Api<Service> = Api::namespaced(operator.clone(), app);
    let service: Service = from_json(json!({"metadata": {"name": "orders-dapr"},
        "spec": {"selector": {"app": "orders"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}));
    allowed("create a Service", services.create(&post, &service).await);
    let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders-dapr"},
        "spec": {"selector": {"app": "orders"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}});
    let apply = PatchParams::apply("dapr-operator").force();
    allowed("apply a Service", services.patch("orders-dapr", &apply, &Patch::Apply(&applied)).await);
    allowed("delete a Service", services.delete("orders-dapr", &DeleteParams::default()).await);
    let event: Event = from_json(json!({"metadata": {"name": "orders.1"},
        "involvedObject": {"kind": "Pod", "name": "app-0", "namespace": app}, "reason": "Test", "message": "m"}));
    allowed("create an Event", Api::<Event>::namespaced(operator.clone(), app).create(&post, &event).await);

    let components: Api<DynamicObject> = Api::namespaced_with(operator.clone(), app, &ward_kube::dapr::component());
    let component: DynamicObject = from_json(json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": "evil"}, "spec": {"type": "state.in-memory", "version": "v1"}}));
    forbidden("create a Component", components.create(&post, &component).await);
    let mut secret = Api::<Secret>::namespaced(cluster.client().await, cp).get("dapr-trust-bundle").await.ok();
    if let Some(secret) = secret.as_mut() {
        secret.string_data = Some([("ca.crt".to_owned(), "evil".to_owned())].into());
        let secrets: Api<Secret> = Api::namespaced(operator.clone(), cp);
        forbidden("update the trust bundle", secrets.replace("dapr-trust-bundle", &post, secret).await);
    }
    forbidden("get a ConfigMap", Api::<ConfigMap>::namespaced(operator.clone(), app).get("dapr-root-ca.crt").await);
    let pod: Pod =
        from_json(json!({"metadata": {"name": "evil"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}));
    forbidden("create a pod", Api::<Pod>::namespaced(operator.clone(), cp).create(&post, &pod).await);
    forbidden(
        "delete a namespace",
        Api::<Namespace>::all(operator.clone()).delete(app, &DeleteParams::default()).await,
    );
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(operator);
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    forbidden(
        "patch the injector's webhook",
        webhooks.patch("dapr-sidecar-injector", &PatchParams::default(), &Patch::Merge(&label)).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_resources_round_trip_through_the_crds_unpruned() {
    let Some((_cluster, setup, admin)) = admin_setup().await else { return };
    let app = setup.app.as_str();
    let documents = [
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": "statestore"},
            "spec": {"type": "state.redis", "version": "v1", "ignoreErrors": false, "initTimeout": "5s",
                "metadata": [
                    {"name": "redisHost", "value": "redis-master:6379"},
                    {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "redis-password"}},
                    {"name": "actorStateStore", "value": "true"},
                    {"name": "nested", "value": {"list": [1, "two", {"three": 3.5}]}, "envRef": "X"}]},
            "auth": {"secretStore": "vault"},
            "scopes": ["orders", "checkout"]}),
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "appconfig"},
            "spec": {"accessControl": {"defaultAction": "deny", "trustDomain": "public",
                "policies": [{"appId": "checkout", "defaultAction": "deny", "namespace": "default",
                    "operations": [{"name": "/orders/*", "httpVerb": ["POST"], "action": "allow"}]}]},
                "mtls": {"enabled": true}, "ward": {"appIdBindings": [{"namespace": "x", "appId": "a",
                    "serviceAccounts": ["sa"]}]}}}),
        json!({"apiVersion": "dapr.io/v2alpha1", "kind": "Subscription", "metadata": {"name": "orders-v2"},
            "spec": {"pubsubname": "pubsub", "topic": "orders", "routes": {"rules": [{"match": "event.type == \"x\"",
                "path": "/x"}], "default": "/orders"}, "deadLetterTopic": "dead", "bulkSubscribe": {"enabled": true}},
            "scopes": ["checkout"]}),
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Subscription", "metadata": {"name": "orders-v1"},
            "spec": {"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}, "scopes": ["checkout"]}),
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Resiliency", "metadata": {"name": "res"},
            "spec": {"policies": {"timeouts": {"general": "5s"}, "retries": {"r": {"policy": "constant",
                "duration": "1s", "maxRetries": 3}}}, "targets": {"apps": {"orders": {"timeout": "general"}}}},
            "scopes": ["checkout"]}),
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "HTTPEndpoint", "metadata": {"name": "github"},
            "spec": {"baseUrl": "https://api.github.com", "headers": [{"name": "Authorization",
                "secretKeyRef": {"name": "gh", "key": "token"}}], "clientTLS": {"certificate": {"value": "x"}}},
            "auth": {"secretStore": "kubernetes"}, "scopes": ["checkout"]}),
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "tools"},
            "spec": {"endpoint": {"streamableHTTP": {"url": "https://mcp.example/mcp", "auth": {"spiffe":
                {"jwt": {"header": "Authorization", "audience": "mcp"}}}}}, "middleware": {"beforeCallTool":
                [{"workflow": {"workflowName": "check"}}]}, "ignoreErrors": false},
            "scopes": ["agent"]}),
    ];
    for document in documents {
        let api_version = document["apiVersion"].as_str().unwrap();
        let kind = document["kind"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap();
        let plural = format!("{}s", kind.to_lowercase()).replace("resiliencys", "resiliencies");
        let ar = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, version, kind),
            &plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), app, &ar);
        let object: DynamicObject = from_json(document.clone());
        let created = api.create(&PostParams::default(), &object).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        let name = created.metadata.name.clone().unwrap();
        let read = serde_json::to_value(api.get(&name).await.unwrap()).unwrap();
        for field in ["spec", "auth", "scopes"] {
            assert_eq!(read.get(field), document.get(field), "{api_version} {kind}: {field} changed on the way");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_refuses_pods_while_the_injector_is_down() {
    let Some((_cluster, setup, admin)) = admin_setup().await else { return };
    let post = PostParams::default();
    let pod = |name: &str, account: &str| -> Pod {
        from_json(json!({"metadata": {"name": name, "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "x"}},
            "spec": {"serviceAccountName": account, "containers": [{"name": "app", "image": "app:1"}]}}))
    };
    // An app namespace: failurePolicy Fail, so no pod starts without the injector having seen it.
    let err =
        Api::<Pod>::namespaced(admin.clone(), &setup.app).create(&post, &pod("refused", "app")).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(status) if status.message.contains("sidecar-injector.dapr.io")),
        "expected the webhook's failure, got {err}"
    );
    // The control plane's own namespace is excluded, so ward can always start.
    allowed(
        "create a pod in the control-plane namespace",
        Api::<Pod>::namespaced(admin.clone(), &setup.control_plane).create(&post, &pod("allowed", "dapr-sentry")).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_bundle_secret_gives_expiry_and_export() {
    let Some((cluster, _setup, admin)) = admin_setup().await else { return };
    // Its own namespace, so the sentry test's writes to dapr-trust-bundle do not race this one.
    let ns = cluster.fresh_namespace(&admin, "bundle").await;
    let missing = install::trust_bundle(&admin, &ns).await.unwrap_err();
    assert!(matches!(missing, InstallError::NotInstalled { name: "dapr-trust-bundle", .. }), "{missing}");

    let td = ward_identity::TrustDomain::new("cluster.local").unwrap();
    let material = ward_sentry::material::generate(&td, Duration::from_secs(30 * 86_400)).unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let secret: Secret = from_json(json!({"metadata": {"name": "dapr-trust-bundle"}, "stringData": {
        "ca.crt": material.root_cert_pem, "issuer.crt": material.issuer_cert_pem, "issuer.key": "",
    }}));
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let empty_key = install::trust_bundle(&admin, &ns).await.unwrap_err();
    assert!(matches!(empty_key, InstallError::BundleMissingKey { key: "issuer.key", .. }), "{empty_key}");

    let patch = json!({"stringData": {"issuer.key": material.issuer_key_pem}});
    secrets.patch("dapr-trust-bundle", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let bundle = install::trust_bundle(&admin, &ns).await.unwrap();
    assert_eq!(bundle.ca_crt, material.root_cert_pem.as_bytes());
    assert_eq!(bundle.issuer_key, material.issuer_key_pem.as_bytes());
    assert!(!format!("{bundle:?}").contains("PRIVATE"), "Debug must not print the key");
    let expiry = bundle.expiry().unwrap();
    assert_eq!(expiry.roots.len(), 1);
    assert!(expiry.roots[0].0.contains("cluster.local"), "{}", expiry.roots[0].0);
    let days = |t: SystemTime| t.duration_since(SystemTime::now()).unwrap().as_secs() / 86_400;
    assert!((28..=30).contains(&days(expiry.roots[0].1)), "{}", days(expiry.roots[0].1));
    assert!((28..=30).contains(&days(expiry.issuer.1)));

    let garbage = json!({"stringData": {"ca.crt": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}});
    secrets.patch("dapr-trust-bundle", &PatchParams::default(), &Patch::Merge(&garbage)).await.unwrap();
    let bad = install::trust_bundle(&admin, &ns).await.unwrap().expiry().unwrap_err();
    assert!(matches!(bad, InstallError::BundleBadCertificate { key: "ca.crt", .. }), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_out_without_ready_pods_and_status_shows_ready_deployments() {
    let Some((_cluster, setup, admin)) = admin_setup().await else { return };
    let cp = setup.control_plane.as_str();
    // --wait: no kubelet here, so no pod ever becomes ready and the wait times out, naming what is pending.
    let err = install::wait_ready(&admin, cp, Duration::from_secs(2)).await.unwrap_err();
    match &err {
        InstallError::NotReady { pending, .. } => {
            assert!(pending.iter().any(|p| p.starts_with("dapr-sentry (0/1")), "{pending:?}");
            assert!(pending.iter().any(|p| p.starts_with("dapr-sidecar-injector (0/1")), "{pending:?}");
            assert!(pending.iter().any(|p| p.starts_with("dapr-operator (0/1")), "{pending:?}");
        }
        other => panic!("expected NotReady, got {other}"),
    }
    let status = install::deployments(&admin, cp).await.unwrap();
    assert!(status.iter().all(|d| !d.healthy()), "{status:?}");
    // What a kubelet and the Deployment controller would report once the pods run.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), cp);
    for name in ["dapr-sentry", "dapr-sidecar-injector", "dapr-operator"] {
        let generation = deployments.get(name).await.unwrap().metadata.generation;
        let status = json!({"status": {"observedGeneration": generation, "replicas": 1, "readyReplicas": 1,
            "availableReplicas": 1, "updatedReplicas": 1}});
        deployments.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }
    install::wait_ready(&admin, cp, Duration::from_secs(10)).await.expect("ready after status");
    let status = install::deployments(&admin, cp).await.unwrap();
    let shown: Vec<(&str, i32, i32, bool)> =
        status.iter().map(|d| (d.name.as_str(), d.ready, d.desired, d.healthy())).collect();
    assert_eq!(
        shown,
        [("dapr-operator", 1, 1, true), ("dapr-sentry", 1, 1, true), ("dapr-sidecar-injector", 1, 1, true)]
    );
    assert_eq!(status[1].version, env!("CARGO_PKG_VERSION"));
    // A status from an older generation does not count: a changed spec is not ready until observed.
    let bump = json!({"spec": {"template": {"metadata": {"annotations": {"bump": "1"}}}}});
    deployments.patch("dapr-sentry", &PatchParams::default(), &Patch::Merge(&bump)).await.unwrap();
    let status = install::deployments(&admin, cp).await.unwrap();
    let sentry = status.iter().find(|d| d.name == "dapr-sentry").unwrap();
    assert!(!sentry.healthy(), "{sentry:?}");
    let err = install::wait_ready(&admin, cp, Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(err, InstallError::NotReady { ref pending, .. } if pending.len() == 1), "{err}");
}
