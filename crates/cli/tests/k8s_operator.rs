//! `ward operator` as a real process against a real API server, with its certificate from a real
//! `ward sentry --mode kubernetes`, called by test clients that hold SVIDs the sentry issued for pod-bound tokens
//! (as sidecars would): scopes enforced on the server in lists and update streams, callers without a certificate
//! or from another namespace refused, changes reaching an open stream within seconds, an invalid update keeping
//! the last good version with a Warning Event, `secretKeyRef`s resolved from the component's own namespace only,
//! configurations by name, the `<app-id>-dapr` Services, and a restart.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use support::k8s::{OperatorSetup, eventually_async, k8s_operator, k8s_sentry, runtime};
use support::{Ward, path_str};
use tonic::transport::Channel;
use ward_identity::{Authorizer, SpiffeId, SvidResolver, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_operator_api::OperatorClient;
use ward_operator_api::proto::{
    ComponentUpdateEvent, ComponentUpdateRequest, GetConfigurationRequest, GetResiliencyRequest, ListComponentsRequest,
    ListHttpEndpointsRequest, ListMcpServersRequest, ListResiliencyRequest, ListSubscriptionsRequest,
};

const STEP: Duration = Duration::from_secs(20);

/// Applies every CRD of `deploy/kubernetes/10-crds.yaml` and waits until each is Established.
async fn install_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let objects = ward_kube::install::render(&ward_kube::install::InstallOptions::default()).unwrap();
    let params = PatchParams::apply("ward-test").force();
    let mut names = Vec::new();
    for object in objects.iter().filter(|o| o.kind == "CustomResourceDefinition") {
        crds.patch(&object.name, &params, &Patch::Apply(&object.value)).await.unwrap();
        names.push(object.name.clone());
    }
    for name in names {
        eventually_async(STEP, &format!("{name} Established"), || async {
            let crd = crds.get(&name).await.ok()?;
            let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        })
        .await;
    }
}

fn dapr_api(client: &kube::Client, ns: &str, kind: ward_kube::operator::Kind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kind.api_resource())
}

async fn apply(client: &kube::Client, ns: &str, kind: ward_kube::operator::Kind, object: Value) {
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let params = PatchParams::apply("ward-test").force();
    dapr_api(client, ns, kind).patch(&name, &params, &Patch::Apply(&object)).await.unwrap();
}

fn component(name: &str, scopes: &[&str], metadata: Value) -> Value {
    json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": name},
        "spec": {"type": "state.redis", "version": "v1", "metadata": metadata}, "scopes": scopes})
}

fn host(value: &str) -> Value {
    json!([{"name": "redisHost", "value": value}])
}

/// A process-wide control plane for the test: sentry and operator, both Kubernetes-mode.
struct ControlPlane {
    namespace: String,
    sentry: support::Sentry,
    roots: Vec<u8>,
    kubeconfig: String,
    operator_token: std::path::PathBuf,
    anchors: std::path::PathBuf,
}

impl ControlPlane {
    fn sentry_id(&self) -> String {
        format!("spiffe://cluster.local/ns/{}/dapr-sentry", self.namespace)
    }

    fn start_operator(&self) -> (Ward, String) {
        let setup = OperatorSetup {
            namespace: &self.namespace,
            kubeconfig: &self.kubeconfig,
            anchors: &self.anchors,
            sentry: &self.sentry.grpc,
            token_file: &self.operator_token,
        };
        k8s_operator(&setup, "0")
    }
}

/// A test "sidecar": a pod, its bound token, an SVID from sentry for it, and an operator client presenting it.
struct App {
    svid: Arc<SvidResolver>,
}

async fn app(client: &kube::Client, cp: &ControlPlane, dir: &std::path::Path, ns: &str, app_id: &str) -> App {
    let annotations = json!({"dapr.io/enabled": "true", "dapr.io/app-id": app_id});
    let pod = ward_k8s_testenv::annotated_pod(client, ns, &format!("{app_id}-0"), app_id, annotations).await;
    let token = ward_k8s_testenv::bound_token(client, ns, app_id, Some(&pod), &cp.sentry_id()).await;
    let token_file = dir.join(format!("{ns}-{app_id}.token"));
    std::fs::write(&token_file, token).unwrap();
    let public = TrustDomain::new("public").unwrap();
    let control = TrustDomain::new("cluster.local").unwrap();
    let sentry = ward_sentry::SentryClient::new(ward_sentry::SentryClientConfig {
        address: cp.sentry.grpc.clone(),
        sentry_id: SpiffeId::parse(&cp.sentry_id()).unwrap(),
        bundle: TrustBundleHandle::new(TrustBundle::from_pem(public.clone(), &cp.roots).unwrap()),
        app_id: app_id.to_owned(),
        namespace: ns.to_owned(),
        trust_domain: public,
        token_file: Some(token_file),
        skew: Duration::from_secs(60),
        kubernetes: true,
        sentry_trust: Some(TrustBundleHandle::new(TrustBundle::from_pem(control, &cp.roots).unwrap())),
    })
    .unwrap();
    let (svid, _) = sentry.fetch().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://public/ns/{ns}/{app_id}"));
    App { svid: Arc::new(SvidResolver::with_svid(svid)) }
}

/// An operator client over mTLS: the operator must prove `dapr-operator` of the control plane; the client
/// presents `svid` (an empty resolver presents no certificate).
async fn connect(cp: &ControlPlane, grpc: &str, svid: Arc<SvidResolver>) -> Result<OperatorClient<Channel>, String> {
    let control = TrustDomain::new("cluster.local").unwrap();
    let bundle = TrustBundleHandle::new(TrustBundle::from_pem(control.clone(), &cp.roots).unwrap());
    let operator_id = SpiffeId::dapr(&control, &cp.namespace, "dapr-operator").unwrap();
    let tls =
        ward_identity::client_config(svid, bundle, Authorizer::Exact(operator_id), Duration::from_secs(60), &[b"h2"])
            .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let address = grpc.to_owned();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            let address = address.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                let name = rustls_pki_types::ServerName::try_from("dapr-api").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(OperatorClient::new(channel))
}

async fn list_components(client: &mut OperatorClient<Channel>, ns: &str) -> Vec<Value> {
    let response = client.list_components(ListComponentsRequest { namespace: ns.to_owned() }).await.unwrap();
    response.into_inner().components.iter().map(|b| serde_json::from_slice(b).unwrap()).collect()
}

fn names(components: &[Value]) -> Vec<String> {
    let mut names: Vec<String> =
        components.iter().map(|c| c["metadata"]["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

/// The next event of a stream, decoded, within `limit`.
async fn next_event(
    stream: &mut tonic::Streaming<ComponentUpdateEvent>,
    limit: Duration,
) -> Option<(ward_operator_api::ResourceEventType, Value)> {
    let event = tokio::time::timeout(limit, stream.message()).await.ok()?.unwrap()?;
    let kind = ward_operator_api::ResourceEventType::try_from(event.r#type).unwrap();
    Some((kind, serde_json::from_slice(&event.component).unwrap()))
}

/// Events until one about `name` arrives; returns it, with everything seen before it.
async fn event_about(
    stream: &mut tonic::Streaming<ComponentUpdateEvent>,
    name: &str,
) -> ((ward_operator_api::ResourceEventType, Value), Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some((kind, object)) = next_event(stream, left).await else {
            panic!("no event about {name} within 5 s; saw {before:?}");
        };
        if object["metadata"]["name"] == name {
            return ((kind, object), before);
        }
        before.push(object);
    }
}

async fn warning_event(client: &kube::Client, ns: &str, object: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually_async(STEP, &format!("{reason} Event on {object}"), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some(object)
                && e.reason.as_deref() == Some(reason)
                && e.type_.as_deref() == Some("Warning")
        })
    })
    .await
}

#[test]
fn the_operator_serves_each_sidecar_its_namespace_within_its_scopes() {
    use ward_kube::operator::Kind;
    use ward_operator_api::ResourceEventType::{Created, Deleted, Updated};
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("the_operator_serves_each_sidecar_its_namespace") else {
        return;
    };
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(install_crds(&client));
    let cp_ns = rt.block_on(cluster.fresh_namespace(&client, "cp"));
    let ns = rt.block_on(cluster.fresh_namespace(&client, "shop"));
    let other = rt.block_on(cluster.fresh_namespace(&client, "bank"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = path_str(cluster.kubeconfig_path()).to_owned();
    let sentry = k8s_sentry(&dir.path().join("credentials"), &kubeconfig, &cp_ns, &[]);
    let roots = sentry.roots_pem();
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, &roots).unwrap();
    // The operator's pod and projected token, as the Deployment in 40-operator.yaml gets them.
    let operator_pod =
        rt.block_on(ward_k8s_testenv::annotated_pod(&client, &cp_ns, "dapr-operator-0", "dapr-operator", json!({})));
    let sentry_id = format!("spiffe://cluster.local/ns/{cp_ns}/dapr-sentry");
    let token =
        rt.block_on(ward_k8s_testenv::bound_token(&client, &cp_ns, "dapr-operator", Some(&operator_pod), &sentry_id));
    let operator_token = dir.path().join("operator.token");
    std::fs::write(&operator_token, token).unwrap();
    let cp = ControlPlane { namespace: cp_ns.clone(), sentry, roots, kubeconfig, operator_token, anchors };
    let (mut operator, grpc) = cp.start_operator();
    assert!(operator.stderr_text().contains(&format!("spiffe://cluster.local/ns/{cp_ns}/dapr-operator")));

    let orders = rt.block_on(app(&client, &cp, dir.path(), &ns, "orders"));
    let billing = rt.block_on(app(&client, &cp, dir.path(), &ns, "billing"));
    let teller = rt.block_on(app(&client, &cp, dir.path(), &other, "teller"));
    let mut a = rt.block_on(connect(&cp, &grpc, orders.svid.clone())).unwrap();
    let mut b = rt.block_on(connect(&cp, &grpc, billing.svid.clone())).unwrap();
    let mut x = rt.block_on(connect(&cp, &grpc, teller.svid.clone())).unwrap();

    // 1. A component scoped to `orders`: `billing` hears nothing of it, in lists or on its stream.
    let request = || ComponentUpdateRequest { namespace: ns.clone() };
    let mut a_stream = rt.block_on(a.component_update(request())).unwrap().into_inner();
    let mut b_stream = rt.block_on(b.component_update(request())).unwrap().into_inner();
    rt.block_on(apply(&client, &ns, Kind::Component, component("scoped", &["orders"], host("secret-host:6379"))));
    rt.block_on(apply(&client, &ns, Kind::Component, component("shared", &[], host("shared:6379"))));
    let ((kind, _), _) = rt.block_on(event_about(&mut a_stream, "scoped"));
    assert_eq!(kind, Created);
    rt.block_on(event_about(&mut a_stream, "shared"));
    // Streams are ordered: by the time `shared` (applied second) arrives, `scoped` would have.
    let ((kind, _), before) = rt.block_on(event_about(&mut b_stream, "shared"));
    assert_eq!(kind, Created);
    assert!(before.is_empty(), "billing heard of {before:?}");
    assert_eq!(names(&rt.block_on(list_components(&mut a, &ns))), ["scoped", "shared"]);
    let b_list = rt.block_on(list_components(&mut b, &ns));
    assert_eq!(names(&b_list), ["shared"]);
    assert!(!serde_json::to_string(&b_list).unwrap().contains("secret-host"));
    // Scopes change: `orders` falls out (DELETED), `billing` comes in (CREATED).
    rt.block_on(apply(&client, &ns, Kind::Component, component("scoped", &["billing"], host("secret-host:6379"))));
    assert_eq!(rt.block_on(event_about(&mut a_stream, "scoped")).0.0, Deleted);
    assert_eq!(rt.block_on(event_about(&mut b_stream, "scoped")).0.0, Created);
    assert_eq!(names(&rt.block_on(list_components(&mut a, &ns))), ["shared"]);

    // 2. No client certificate: refused (TLS 1.3 fails the handshake after the client's flight, so the first
    // call fails); an SVID of another namespace asking for this one: PermissionDenied, as Dapr's authz.go.
    let anonymous = rt.block_on(async {
        match connect(&cp, &grpc, Arc::new(SvidResolver::new())).await {
            Err(err) => Err(err),
            Ok(mut c) => c
                .list_components(ListComponentsRequest { namespace: ns.clone() })
                .await
                .map(|_| ())
                .map_err(|s| format!("{s:?}")),
        }
    });
    assert!(anonymous.is_err(), "a caller without a certificate was answered");
    let denied = rt.block_on(x.list_components(ListComponentsRequest { namespace: ns.clone() })).unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let denied = rt.block_on(x.component_update(ComponentUpdateRequest { namespace: ns.clone() })).unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let denied = rt.block_on(a.list_components(ListComponentsRequest { namespace: String::new() })).unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(rt.block_on(list_components(&mut x, &other)).is_empty());
    operator.wait_stderr("decision=\"refused\"", STEP);
    // Kinds ward does not serve: refused, not an empty list.
    let unimplemented = rt.block_on(a.list_mcp_servers(ListMcpServersRequest { namespace: ns.clone() })).unwrap_err();
    assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);
    // Workflow access policies: refused the same way, never "no policy".
    let policies = ward_operator_api::proto::ListWorkflowAccessPolicyRequest { namespace: ns.clone() };
    let unimplemented = rt.block_on(a.list_workflow_access_policy(policies)).unwrap_err();
    assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);
    let subscriptions =
        rt.block_on(a.list_subscriptions_v2(ListSubscriptionsRequest { namespace: ns.clone() })).unwrap();
    assert!(subscriptions.into_inner().subscriptions.is_empty());

    // 3. Create, update, delete reach the open stream within seconds.
    let mut timings = Vec::new();
    let started = Instant::now();
    rt.block_on(apply(&client, &ns, Kind::Component, component("timed", &[], host("one:6379"))));
    let ((kind, object), _) = rt.block_on(event_about(&mut a_stream, "timed"));
    timings.push(("create", started.elapsed()));
    assert_eq!((kind, object["spec"]["metadata"][0]["value"].clone()), (Created, json!("one:6379")));
    let started = Instant::now();
    rt.block_on(apply(&client, &ns, Kind::Component, component("timed", &[], host("two:6379"))));
    let ((kind, object), _) = rt.block_on(event_about(&mut a_stream, "timed"));
    timings.push(("update", started.elapsed()));
    assert_eq!((kind, object["spec"]["metadata"][0]["value"].clone()), (Updated, json!("two:6379")));
    let started = Instant::now();
    rt.block_on(dapr_api(&client, &ns, Kind::Component).delete("timed", &DeleteParams::default())).unwrap();
    let ((kind, _), _) = rt.block_on(event_about(&mut a_stream, "timed"));
    timings.push(("delete", started.elapsed()));
    assert_eq!(kind, Deleted);
    eprintln!("apply -> stream event: {timings:?}");
    for (what, took) in &timings {
        assert!(*took <= Duration::from_secs(5), "{what} took {took:?}");
    }

    // 4. An invalid update: the last good version stays served, a Warning Event says why.
    rt.block_on(apply(&client, &ns, Kind::Component, component("guarded", &[], host("good:6379"))));
    rt.block_on(event_about(&mut a_stream, "guarded"));
    let mut invalid = component("guarded", &[], host("bad:6379"));
    invalid["spec"]["type"] = json!("");
    rt.block_on(apply(&client, &ns, Kind::Component, invalid));
    let event = rt.block_on(warning_event(&client, &ns, "guarded", "InvalidResource"));
    let message = event.message.unwrap_or_default();
    assert!(message.contains(&format!("Component {ns}/guarded")) && message.contains("spec.type"), "{message}");
    assert_eq!(event.involved_object.kind.as_deref(), Some("Component"));
    let served = rt.block_on(list_components(&mut a, &ns));
    let guarded = served.iter().find(|c| c["metadata"]["name"] == "guarded").unwrap();
    assert_eq!(guarded["spec"]["metadata"][0]["value"], "good:6379");
    assert!(operator.stderr_text().contains("invalid resource refused"));

    // 5. secretKeyRef: resolved from a Secret of the component's namespace (base64, the reference kept); a
    // reference to a Secret that exists only in another namespace is never resolved from there.
    let secret = |namespace: &str, name: &str, value: &str| {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let object: Secret = serde_json::from_value(json!({"metadata": {"name": name},
            "stringData": {"password": value}}))
        .unwrap();
        rt.block_on(secrets.create(&Default::default(), &object)).unwrap();
    };
    secret(&ns, "redis-auth", "s3cret");
    secret(&other, "bank-vault", "bank-only-secret");
    let with_ref = |name: &str, secret: &str| {
        component(name, &[], json!([{"name": "redisPassword", "secretKeyRef": {"name": secret, "key": "password"}}]))
    };
    rt.block_on(apply(&client, &ns, Kind::Component, with_ref("with-secret", "redis-auth")));
    rt.block_on(apply(&client, &ns, Kind::Component, with_ref("cross-namespace", "bank-vault")));
    let ((_, streamed), _) = rt.block_on(event_about(&mut a_stream, "with-secret"));
    assert_eq!(streamed["spec"]["metadata"][0]["value"], "czNjcmV0", "{streamed}");
    let served = rt.block_on(list_components(&mut a, &ns));
    let resolved = served.iter().find(|c| c["metadata"]["name"] == "with-secret").unwrap();
    assert_eq!(resolved["spec"]["metadata"][0]["value"], "czNjcmV0"); // base64("s3cret")
    assert_eq!(resolved["spec"]["metadata"][0]["secretKeyRef"]["name"], "redis-auth");
    assert!(!served.iter().any(|c| c["metadata"]["name"] == "cross-namespace"), "{served:?}");
    let all = serde_json::to_string(&served).unwrap();
    assert!(!all.contains("YmFuay1vbmx5LXNlY3JldA") && !all.contains("bank-only-secret"));
    rt.block_on(warning_event(&client, &ns, "cross-namespace", "SecretNotResolved"));
    // HTTPEndpoints' header references, the same way.
    let endpoint = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "HTTPEndpoint", "metadata": {"name": "payments"},
        "spec": {"baseUrl": "https://payments.example", "headers": [
            {"name": "Authorization", "secretKeyRef": {"name": "redis-auth", "key": "password"}}]}});
    rt.block_on(apply(&client, &ns, Kind::HttpEndpoint, endpoint));
    let endpoints = support::eventually(STEP, "the HTTPEndpoint served", || {
        let request = ListHttpEndpointsRequest { namespace: ns.clone() };
        let listed = rt.block_on(a.list_http_endpoints(request)).unwrap().into_inner().http_endpoints;
        (!listed.is_empty()).then_some(listed)
    });
    let endpoint: Value = serde_json::from_slice(&endpoints[0]).unwrap();
    assert_eq!(endpoint["spec"]["headers"][0]["value"], "czNjcmV0", "{endpoint}");
    // Out of scope: the Secret is not even read for that caller (no Event for billing's request).
    rt.block_on(apply(&client, &ns, Kind::Component, {
        let mut c = with_ref("orders-only", "missing-secret");
        c["scopes"] = json!(["orders"]);
        c
    }));
    rt.block_on(event_about(&mut b_stream, "with-secret"));
    let b_list = rt.block_on(list_components(&mut b, &ns));
    assert!(!b_list.iter().any(|c| c["metadata"]["name"] == "orders-only"));

    // 6. Configurations by name, in the caller's namespace only.
    let configuration = |name: &str| {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": name},
            "spec": {"accessControl": {"defaultAction": "deny", "trustDomain": "public"}}})
    };
    rt.block_on(apply(&client, &ns, Kind::Configuration, configuration("appconfig")));
    rt.block_on(apply(&client, &other, Kind::Configuration, configuration("bankconfig")));
    let get = |c: &mut OperatorClient<Channel>, name: &str, namespace: &str| {
        rt.block_on(c.get_configuration(GetConfigurationRequest { name: name.into(), namespace: namespace.into() }))
    };
    let found =
        rt.block_on(eventually_async(STEP, "appconfig served", || {
            let mut a = a.clone();
            let ns = ns.clone();
            async move {
                a.get_configuration(GetConfigurationRequest { name: "appconfig".into(), namespace: ns }).await.ok()
            }
        }));
    let found: Value = serde_json::from_slice(&found.into_inner().configuration).unwrap();
    assert_eq!(found["spec"]["accessControl"]["defaultAction"], "deny");
    assert_eq!(get(&mut a, "missing", &ns).unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(get(&mut a, "bankconfig", &ns).unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(get(&mut a, "bankconfig", &other).unwrap_err().code(), tonic::Code::PermissionDenied);

    // 7. The `<app-id>-dapr` Service of an annotated Deployment, removed when the annotation goes.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = |enabled: bool| {
        let mut annotations = json!({"dapr.io/app-id": "orders"});
        if enabled {
            annotations["dapr.io/enabled"] = json!("true");
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "orders"},
            "spec": {"selector": {"matchLabels": {"app": "orders"}},
                "template": {"metadata": {"labels": {"app": "orders"}, "annotations": annotations},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}})
    };
    let params = PatchParams::apply("ward-test").force();
    let applied = rt.block_on(deployments.patch("orders", &params, &Patch::Apply(deployment(true)))).unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service = rt.block_on(eventually_async(STEP, "orders-dapr Service", || async {
        services.get_opt("orders-dapr").await.ok().flatten()
    }));
    let owner = &service.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), Some(&owner.uid)), ("Deployment", applied.metadata.uid.as_ref()));
    let spec = service.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.selector.unwrap().get("app").map(String::as_str), Some("orders"));
    let ports: Vec<(String, i32)> =
        spec.ports.unwrap().into_iter().map(|p| (p.name.unwrap_or_default(), p.port)).collect();
    assert_eq!(
        ports,
        [
            ("dapr-http".into(), 80),
            ("dapr-grpc".into(), 50001),
            ("dapr-internal".into(), 50002),
            ("dapr-metrics".into(), 9090)
        ]
    );
    rt.block_on(deployments.patch("orders", &params, &Patch::Apply(deployment(false)))).unwrap();
    rt.block_on(eventually_async(STEP, "orders-dapr Service deleted", || async {
        services.get_opt("orders-dapr").await.ok().and_then(|s| s.is_none().then_some(()))
    }));

    // Subscriptions and resiliencies: the same scope rule.
    let subscription = json!({"apiVersion": "dapr.io/v2alpha1", "kind": "Subscription", "metadata": {"name": "orders-sub"},
        "spec": {"pubsubname": "pubsub", "topic": "orders", "routes": {"default": "/orders"}}, "scopes": ["orders"]});
    rt.block_on(apply(&client, &ns, Kind::Subscription, subscription));
    let resiliency = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Resiliency", "metadata": {"name": "retries"},
        "spec": {"policies": {"retries": {"three": {"policy": "constant", "duration": "1s", "maxRetries": 3}}}},
        "scopes": ["orders"]});
    rt.block_on(apply(&client, &ns, Kind::Resiliency, resiliency));
    let subscriptions = |c: &mut OperatorClient<Channel>| {
        let request = ListSubscriptionsRequest { namespace: ns.clone() };
        rt.block_on(c.list_subscriptions_v2(request)).unwrap().into_inner().subscriptions.len()
    };
    let resiliencies = |c: &mut OperatorClient<Channel>| {
        let request = ListResiliencyRequest { namespace: ns.clone() };
        rt.block_on(c.list_resiliency(request)).unwrap().into_inner().resiliencies.len()
    };
    support::eventually(STEP, "the subscription and resiliency served", || {
        (subscriptions(&mut a) == 1 && resiliencies(&mut a) == 1).then_some(())
    });
    assert_eq!((subscriptions(&mut b), resiliencies(&mut b)), (0, 0));
    let hidden = rt
        .block_on(b.get_resiliency(GetResiliencyRequest { name: "retries".into(), namespace: ns.clone() }))
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);

    // The trust anchors are re-read: with another root in the file, the same SVID no longer connects; with the
    // real one back, it does again.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let foreign = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem();
    std::fs::write(&cp.anchors, foreign).unwrap();
    support::eventually(STEP, "a foreign anchor refuses the sidecar", || {
        let refused = rt.block_on(async {
            match connect(&cp, &grpc, orders.svid.clone()).await {
                Err(_) => true,
                Ok(mut c) => c.list_components(ListComponentsRequest { namespace: ns.clone() }).await.is_err(),
            }
        });
        refused.then_some(())
    });
    std::fs::write(&cp.anchors, &cp.roots).unwrap();
    support::eventually(STEP, "the real anchors accept it again", || {
        rt.block_on(async {
            let mut c = connect(&cp, &grpc, orders.svid.clone()).await.ok()?;
            c.list_components(ListComponentsRequest { namespace: ns.clone() }).await.ok()
        })
    });

    // 8. A restarted operator: a client reconnects and lists the same components — except `guarded`, whose
    // stored version is the invalid one: the last good version lived only in the old process's memory, so the
    // new one serves nothing for it (and the sidecars keep what they had).
    let mut before = names(&rt.block_on(list_components(&mut a, &ns)));
    before.retain(|n| n != "guarded");
    operator.kill9();
    drop(a_stream);
    let (_operator, grpc) = cp.start_operator();
    let mut again = rt.block_on(connect(&cp, &grpc, orders.svid.clone())).unwrap();
    assert_eq!(names(&rt.block_on(list_components(&mut again, &ns))), before);
    let _ = (b, x, billing, teller);
}
