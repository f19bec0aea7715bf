//! Sentry's Kubernetes validator against a real API server: real pod-bound tokens from TokenRequest (what a
//! kubelet puts in a projected volume), real TokenReview, real pods. Each refusal names its reason.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use ward_identity::TrustDomain;
use ward_kube::sentry::{AppIdBindings, PodValidator, PodValidatorConfig};
use ward_sentry::{BootstrapRequest, CredentialError};

const CONTROL_PLANE: &str = "dapr-system";
const AUDIENCE: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";

struct Fixture {
    client: kube::Client,
    ns: String,
    bindings: Arc<ArcSwap<AppIdBindings>>,
    validator: PodValidator,
}

async fn fixture(test: &str, review_cache: Duration) -> Option<Fixture> {
    let cluster = ward_k8s_testenv::shared_or_skip(test)?;
    let client = cluster.client().await;
    ward_k8s_testenv::install_configuration_crd(&client).await;
    ward_k8s_testenv::create_namespace(&client, CONTROL_PLANE).await;
    let ns = cluster.fresh_namespace(&client, "sentry").await;
    let bindings = Arc::new(ArcSwap::from_pointee(AppIdBindings::default()));
    let validator = PodValidator::new(
        client.clone(),
        PodValidatorConfig {
            audience: AUDIENCE.to_owned(),
            control_plane_namespace: CONTROL_PLANE.to_owned(),
            control_plane_trust_domain: TrustDomain::new("cluster.local").unwrap(),
            cluster_domain: "cluster.local".to_owned(),
            production: true,
            review_cache,
        },
        bindings.clone(),
    );
    Some(Fixture { client, ns, bindings, validator })
}

impl Fixture {
    async fn account(&self, ns: &str, name: &str) {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let account = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => panic!("{err}"),
        }
    }

    /// Creates pod `name` in `ns` running as `account` with `annotations`.
    async fn pod(&self, ns: &str, name: &str, account: &str, annotations: serde_json::Value) -> Pod {
        ward_k8s_testenv::annotated_pod(&self.client, ns, name, account, annotations).await
    }

    /// A token for `account`, bound to `pod` when given, for `audience` — what a kubelet mounts.
    async fn token(&self, ns: &str, account: &str, pod: Option<&Pod>, audience: &str) -> String {
        ward_k8s_testenv::bound_token(&self.client, ns, account, pod, audience).await
    }

    async fn configuration(&self, ns: &str, name: &str, trust_domain: &str) {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ward_kube::dapr::configuration());
        let object = json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": name},
            "spec": {"accessControl": {"defaultAction": "deny", "trustDomain": trust_domain}}
        });
        api.patch(name, &PatchParams::apply("ward-test").force(), &Patch::Apply(&object)).await.unwrap();
    }

    async fn check(&self, ns: &str, app_id: &str, token: &str) -> Result<ward_sentry::Grant, CredentialError> {
        self.validator.check(BootstrapRequest { namespace: ns, app_id, token }).await
    }
}

fn refusal(result: Result<ward_sentry::Grant, CredentialError>) -> String {
    match result {
        Err(CredentialError::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_bound_token_buys_its_pods_app_id_in_its_configurations_trust_domain() {
    let Some(f) = fixture("a_pod_bound_token_buys_its_pods_app_id", Duration::ZERO).await else { return };
    let ns = f.ns.clone();
    f.configuration(&ns, "appconfig", "shop.example").await;
    let pod =
        f.pod(&ns, "orders-0", "orders", json!({"dapr.io/app-id": "orders", "dapr.io/config": "appconfig"})).await;
    let token = f.token(&ns, "orders", Some(&pod), AUDIENCE).await;
    let grant = f.check(&ns, "orders", &token).await.unwrap();
    assert_eq!(grant.trust_domain.as_str(), "shop.example");
    assert!(grant.dns_names.is_empty());

    // No dapr.io/config: Dapr's default trust domain; no dapr.io/app-id: the pod's name is the app id.
    let plain = f.pod(&ns, "plain", "orders", json!({})).await;
    let token = f.token(&ns, "orders", Some(&plain), AUDIENCE).await;
    assert_eq!(f.check(&ns, "plain", &token).await.unwrap().trust_domain.as_str(), "public");

    // A Configuration the pod names that does not exist: refused, not defaulted.
    let dangling =
        f.pod(&ns, "dangling", "orders", json!({"dapr.io/app-id": "dangling", "dapr.io/config": "nope"})).await;
    let token = f.token(&ns, "orders", Some(&dangling), AUDIENCE).await;
    assert!(refusal(f.check(&ns, "dangling", &token).await).contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_are_not_this_pods_are_refused_with_their_reason() {
    let Some(f) = fixture("tokens_that_are_not_this_pods_are_refused", Duration::ZERO).await else { return };
    let ns = f.ns.clone();
    let pod = f.pod(&ns, "orders-0", "orders", json!({"dapr.io/app-id": "orders"})).await;

    // Another audience.
    let token = f.token(&ns, "orders", Some(&pod), "https://somebody-else").await;
    assert!(refusal(f.check(&ns, "orders", &token).await).contains("audience"));

    // Not bound to a pod (a plain TokenRequest, like a long-lived service-account token).
    let token = f.token(&ns, "orders", None, AUDIENCE).await;
    assert!(refusal(f.check(&ns, "orders", &token).await).contains("not bound to a pod"));

    // The pod's annotation names another app id.
    let token = f.token(&ns, "orders", Some(&pod), AUDIENCE).await;
    assert!(refusal(f.check(&ns, "billing", &token).await).contains("app id is \"orders\""));

    // The request names another namespace than the token's.
    let other_ns = format!("{ns}-x");
    ward_k8s_testenv::create_namespace(&f.client, &other_ns).await;
    assert!(refusal(f.check(&other_ns, "orders", &token).await).contains("belongs to namespace"));

    // Garbage and expired tokens: the API server's own verdict.
    assert!(refusal(f.check(&ns, "orders", "not-a-jwt").await).contains("not valid"));
    let expired = forged_token(&f, &ns, "orders", &pod, -3600).await;
    assert!(refusal(f.check(&ns, "orders", &expired).await).contains("not valid"));
    // The same forged token, still valid: the API server accepts it (so the expired refusal above is the expiry).
    let fresh = forged_token(&f, &ns, "orders", &pod, 600).await;
    f.check(&ns, "orders", &fresh).await.unwrap();

    // The pod was deleted and recreated under the same name: the old token's uid is not the pod's.
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), &ns);
    pods.delete("orders-0", &DeleteParams::default().grace_period(0)).await.unwrap();
    wait_gone(&pods, "orders-0").await;
    f.pod(&ns, "orders-0", "orders", json!({"dapr.io/app-id": "orders"})).await;
    assert!(refusal(f.check(&ns, "orders", &token).await).contains("uid differs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_being_deleted_or_running_as_another_account_is_refused() {
    let Some(f) = fixture("a_pod_being_deleted_or_running_as_another_account", Duration::ZERO).await else { return };
    let ns = f.ns.clone();
    // A finalizer keeps the pod in Terminating after the delete.
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), &ns);
    let pod = f.pod(&ns, "orders-0", "orders", json!({"dapr.io/app-id": "orders"})).await;
    let token = f.token(&ns, "orders", Some(&pod), AUDIENCE).await;
    let finalizer = json!({"metadata": {"finalizers": ["ward.test/hold"]}});
    pods.patch("orders-0", &PatchParams::default(), &Patch::Merge(&finalizer)).await.unwrap();
    pods.delete("orders-0", &DeleteParams::default()).await.unwrap();
    assert!(refusal(f.check(&ns, "orders", &token).await).contains("being deleted"));
    let release = json!({"metadata": {"finalizers": null}});
    pods.patch("orders-0", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();

    // A token of service account "intruder" naming a pod that runs as "orders" (the API server does not issue
    // one, so it is minted with the cluster's key: only the pod check stands in its way).
    let victim = f.pod(&ns, "victim", "orders", json!({"dapr.io/app-id": "victim"})).await;
    f.account(&ns, "intruder").await;
    let forged = forged_token(&f, &ns, "intruder", &victim, 600).await;
    assert!(refusal(f.check(&ns, "victim", &forged).await).contains("runs as service account"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_app_id_is_issued_only_to_its_service_accounts() {
    let Some(f) = fixture("a_bound_app_id_is_issued_only_to_its_service_accounts", Duration::ZERO).await else {
        return;
    };
    let ns = f.ns.clone();
    f.bindings.store(Arc::new(AppIdBindings::from_config(&[ward_config::AppIdBinding {
        namespace: ns.clone(),
        app_id: "payments".to_owned(),
        service_accounts: vec!["payments".to_owned()],
    }])));
    // Any pod of the namespace can set the annotation; only the bound account gets the identity.
    let rogue = f.pod(&ns, "rogue", "default-ish", json!({"dapr.io/app-id": "payments"})).await;
    let token = f.token(&ns, "default-ish", Some(&rogue), AUDIENCE).await;
    assert!(refusal(f.check(&ns, "payments", &token).await).contains("bound to service accounts"));
    let real = f.pod(&ns, "payments-0", "payments", json!({"dapr.io/app-id": "payments"})).await;
    let token = f.token(&ns, "payments", Some(&real), AUDIENCE).await;
    f.check(&ns, "payments", &token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_identities_only_for_control_plane_accounts() {
    let Some(f) = fixture("control_plane_identities_only_for_control_plane_accounts", Duration::ZERO).await else {
        return;
    };
    let name = format!("injector-{}", f.ns);
    let injector = f.pod(CONTROL_PLANE, &name, "dapr-sidecar-injector", json!({})).await;
    let token = f.token(CONTROL_PLANE, "dapr-sidecar-injector", Some(&injector), AUDIENCE).await;
    let grant = f.check(CONTROL_PLANE, "dapr-injector", &token).await.unwrap();
    assert_eq!(grant.trust_domain.as_str(), "cluster.local");
    assert!(grant.dns_names.contains(&"dapr-sidecar-injector.dapr-system.svc".to_owned()), "{grant:?}");
    assert!(refusal(f.check(CONTROL_PLANE, "dapr-operator", &token).await).contains("only to service account"));

    // An app pod in an app namespace cannot claim a control-plane id, whatever its annotation says.
    let ns = f.ns.clone();
    let pod = f.pod(&ns, "sneaky", "sneaky", json!({"dapr.io/app-id": "dapr-operator"})).await;
    let token = f.token(&ns, "sneaky", Some(&pod), AUDIENCE).await;
    assert!(refusal(f.check(&ns, "dapr-operator", &token).await).contains("control-plane identity"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_review_still_sees_the_pod_gone() {
    let Some(f) = fixture("a_cached_review_still_sees_the_pod_gone", Duration::from_secs(60)).await else { return };
    let ns = f.ns.clone();
    let pod = f.pod(&ns, "orders-0", "orders", json!({"dapr.io/app-id": "orders"})).await;
    let token = f.token(&ns, "orders", Some(&pod), AUDIENCE).await;
    f.check(&ns, "orders", &token).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), &ns);
    pods.delete("orders-0", &DeleteParams::default().grace_period(0)).await.unwrap();
    wait_gone(&pods, "orders-0").await;
    assert!(refusal(f.check(&ns, "orders", &token).await).contains("does not exist"));
}

async fn wait_gone(pods: &Api<Pod>, name: &str) {
    for _ in 0..100 {
        if pods.get_opt(name).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pod {name} was not deleted");
}

/// A pod-bound token signed with the cluster's service-account key, `exp` `lifetime_secs` from now (negative:
/// already expired). The API server judges it like one it issued itself.
async fn forged_token(f: &Fixture, ns: &str, account: &str, pod: &Pod, lifetime_secs: i64) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(f.client.clone(), ns);
    let account_uid = accounts.get(account).await.unwrap().metadata.uid.unwrap();
    let cluster = ward_k8s_testenv::TestCluster::shared();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({
        "iss": cluster.sa_issuer(),
        "aud": [AUDIENCE],
        "sub": format!("system:serviceaccount:{ns}:{account}"),
        "iat": now - 7200, "nbf": now - 7200, "exp": now + lifetime_secs,
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": pod.metadata.name, "uid": pod.metadata.uid},
            "serviceaccount": {"name": account, "uid": account_uid},
        },
    });
    let key = jsonwebtoken::EncodingKey::from_ec_pem(cluster.sa_signing_key_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_names_unbound_and_misbound_app_ids() {
    let Some(f) = fixture("lint_names_unbound_and_misbound_app_ids", Duration::ZERO).await else { return };
    let ns = f.ns.clone();
    // A control-plane namespace of its own, with its daprsystem Configuration binding one app id.
    let cp = format!("{ns}-cp");
    ward_k8s_testenv::create_namespace(&f.client, &cp).await;
    let api: Api<DynamicObject> = Api::namespaced_with(f.client.clone(), &cp, &ward_kube::dapr::configuration());
    let daprsystem = json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "daprsystem"},
        "spec": {"ward": {"appIdBindings": [{"namespace": ns, "appId": "payments", "serviceAccounts": ["payments"]}]}}
    });
    api.patch("daprsystem", &PatchParams::apply("ward-test").force(), &Patch::Apply(&daprsystem)).await.unwrap();
    f.pod(&ns, "payments-0", "payments", json!({"dapr.io/enabled": "true", "dapr.io/app-id": "payments"})).await;
    f.pod(&ns, "payments-1", "intruder", json!({"dapr.io/enabled": "true", "dapr.io/app-id": "payments"})).await;
    f.pod(&ns, "orders-0", "orders", json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders"})).await;
    f.pod(&ns, "batch", "orders", json!({})).await;
    let findings = ward_kube::sentry::lint_app_id_bindings(&f.client, &cp, "daprsystem").await.unwrap();
    let mine: Vec<&String> = findings.iter().filter(|l| l.contains(&format!("{ns}/"))).collect();
    assert_eq!(mine.len(), 2, "{mine:#?}");
    assert!(
        mine.iter().any(|l| l.contains(&format!("app id {ns}/orders (pod orders-0) has no spec.ward.appIdBindings")))
    );
    assert!(
        mine.iter()
            .any(|l| l.contains(&format!("pod {ns}/payments-1 runs as \"intruder\"")) && l.contains("will refuse"))
    );
}
