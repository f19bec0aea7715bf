//! `ward operator` under load, against a real API server (KUBEBUILDER_ASSETS) with a real Kubernetes-mode sentry:
//!
//! 1. latency from a server-side apply of a component to a connected ComponentUpdate stream seeing it (p50/p99
//!    over 100 updates), with 200 streams open;
//! 2. the operator's RSS idle, with 1000 components, and with 200 connected stream clients;
//! 3. latency from a server-side apply of a new component to a real `ward sidecar --mode kubernetes` (connected to
//!    this operator) answering a state call on it (p50/p99 over 100 new components).
//!
//! Run (debug build; the numbers in docs/kubernetes-operator.md were taken so):
//!
//! ```text
//! export KUBEBUILDER_ASSETS=$HOME/.cache/ward-k8s/bin
//! cargo build -p ward --bin ward && cargo run -p ward --example operator_bench
//! ```
//!
//! Options (env): `BENCH_COMPONENTS` (1000), `BENCH_CLIENTS` (200), `BENCH_UPDATES` (100).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::json;
use tonic::transport::Channel;
use ward_identity::{Authorizer, SpiffeId, SvidResolver, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_operator_api::OperatorClient;
use ward_operator_api::proto::{ComponentUpdateRequest, ListComponentsRequest};

/// A child process killed on drop, with its stdout lines collected.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(ward: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(ward);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn ward");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.starts_with(prefix)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no {prefix:?} line");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace().find_map(|p| p.strip_prefix(&format!("{key}="))).expect("field").to_owned()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ward_binary() -> PathBuf {
    // target/<profile>/examples/operator_bench -> target/<profile>/ward
    let exe = std::env::current_exe().expect("current exe");
    let ward = exe.parent().and_then(Path::parent).expect("target dir").join("ward");
    assert!(ward.exists(), "{} missing: cargo build -p ward --bin ward first", ward.display());
    ward
}

async fn connect(grpc: &str, roots: &[u8], cp: &str, svid: Arc<SvidResolver>) -> OperatorClient<Channel> {
    let control = TrustDomain::new("cluster.local").unwrap();
    let bundle = TrustBundleHandle::new(TrustBundle::from_pem(control.clone(), roots).unwrap());
    let id = SpiffeId::dapr(&control, cp, "dapr-operator").unwrap();
    let tls =
        ward_identity::client_config(svid, bundle, Authorizer::Exact(id), Duration::from_secs(60), &[b"h2"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let address = grpc.to_owned();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            let address = address.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                let name = rustls_pki_types::ServerName::try_from("dapr-api").map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connector.connect(name, tcp).await?))
            }
        }))
        .await
        .unwrap();
    OperatorClient::new(channel)
}

fn component(name: &str, value: &str) -> serde_json::Value {
    json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": name},
        "spec": {"type": "state.redis", "version": "v1", "metadata": [{"name": "redisHost", "value": value}]}})
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let components = env_usize("BENCH_COMPONENTS", 1000);
    let clients = env_usize("BENCH_CLIENTS", 200);
    let updates = env_usize("BENCH_UPDATES", 100);
    let ward = ward_binary();
    let assets = ward_k8s_testenv::assets().expect("set KUBEBUILDER_ASSETS");
    let cluster = ward_k8s_testenv::TestCluster::start(&assets, Default::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(async {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
        let objects = ward_kube::install::render(&Default::default()).unwrap();
        for o in objects.iter().filter(|o| o.kind == "CustomResourceDefinition") {
            crds.patch(&o.name, &PatchParams::apply("bench").force(), &Patch::Apply(&o.value)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let cp = "dapr-system";
    let ns = "bench";
    rt.block_on(ward_k8s_testenv::create_namespace(&client, cp));
    rt.block_on(ward_k8s_testenv::create_namespace(&client, ns));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster.kubeconfig_path().to_str().unwrap().to_owned();
    let credentials = dir.path().join("credentials");
    let credentials_arg = credentials.to_str().unwrap().to_owned();
    let sentry = Proc::spawn(
        &ward,
        &[
            "sentry",
            "--issuer-credentials",
            &credentials_arg,
            "--port",
            "0",
            "--healthz-port",
            "0",
            "--metrics-port",
            "0",
            "--mode",
            "kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            cp,
            "--trust-domain",
            "cluster.local",
        ],
        &[],
    );
    let sentry_grpc = field(&sentry.wait_line("ward sentry ready:"), "grpc");
    let roots = std::fs::read(credentials.join("ca.crt")).unwrap();
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, &roots).unwrap();
    let sentry_id = format!("spiffe://cluster.local/ns/{cp}/dapr-sentry");
    let token_for = |ns: &str, account: &str, annotations: serde_json::Value| {
        let pod =
            rt.block_on(ward_k8s_testenv::annotated_pod(&client, ns, &format!("{account}-0"), account, annotations));
        let token = rt.block_on(ward_k8s_testenv::bound_token(&client, ns, account, Some(&pod), &sentry_id));
        let path = dir.path().join(format!("{account}.token"));
        std::fs::write(&path, token).unwrap();
        path
    };
    let operator_token = token_for(cp, "dapr-operator", json!({}));
    let operator = Proc::spawn(
        &ward,
        &[
            "operator",
            "--kubeconfig",
            &kubeconfig,
            "--port",
            "0",
            "--listen-address",
            "127.0.0.1",
            "--healthz-port",
            "0",
            "--healthz-listen-address",
            "127.0.0.1",
            "--trust-anchors-file",
            anchors.to_str().unwrap(),
            "--sentry-address",
            &sentry_grpc,
            "--sentry-token-file",
            operator_token.to_str().unwrap(),
            "--disable-service-reconciler",
        ],
        &[("NAMESPACE", cp)],
    );
    let grpc = field(&operator.wait_line("ward operator ready:"), "grpc");
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = operator.rss_kib();

    // The SVID every simulated sidecar presents.
    let app_token = token_for(ns, "bench", json!({"dapr.io/enabled": "true", "dapr.io/app-id": "bench"}));
    let public = TrustDomain::new("public").unwrap();
    let sentry_client = ward_sentry::SentryClient::new(ward_sentry::SentryClientConfig {
        address: sentry_grpc.clone(),
        sentry_id: SpiffeId::parse(&sentry_id).unwrap(),
        bundle: TrustBundleHandle::new(TrustBundle::from_pem(public.clone(), &roots).unwrap()),
        app_id: "bench".into(),
        namespace: ns.into(),
        trust_domain: public,
        token_file: Some(app_token),
        skew: Duration::from_secs(60),
        kubernetes: true,
        sentry_trust: Some(TrustBundleHandle::new(
            TrustBundle::from_pem(TrustDomain::new("cluster.local").unwrap(), &roots).unwrap(),
        )),
    })
    .unwrap();
    let svid = Arc::new(SvidResolver::with_svid(rt.block_on(sentry_client.fetch()).unwrap().0));

    // 1000 components.
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client.clone(), ns, &ward_kube::operator::Kind::Component.api_resource());
    let params = PatchParams::apply("bench").force();
    let started = Instant::now();
    rt.block_on(async {
        for i in 0..components {
            let name = format!("c{i:04}");
            api.patch(&name, &params, &Patch::Apply(component(&name, "redis:6379"))).await.unwrap();
        }
    });
    let mut lister = rt.block_on(connect(&grpc, &roots, cp, svid.clone()));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = rt
            .block_on(lister.list_components(ListComponentsRequest { namespace: ns.into() }))
            .unwrap()
            .into_inner()
            .components
            .len();
        if listed >= components {
            break;
        }
        assert!(Instant::now() < deadline, "only {listed} components served");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("{components} components applied and served in {:?}", started.elapsed());
    let rss_components = operator.rss_kib();

    // 200 clients, each its own connection and ComponentUpdate stream; all but the first drain in the background.
    let received = Arc::new(AtomicU64::new(0));
    let mut first = None;
    for i in 0..clients {
        let mut c = rt.block_on(connect(&grpc, &roots, cp, svid.clone()));
        let stream =
            rt.block_on(c.component_update(ComponentUpdateRequest { namespace: ns.into() })).unwrap().into_inner();
        if i == 0 {
            first = Some(stream);
        } else {
            let received = received.clone();
            rt.spawn(async move {
                let _client = c;
                let mut stream = stream;
                while let Ok(Some(_)) = stream.message().await {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_clients = operator.rss_kib();

    // Latency: apply -> the first client's stream sees that version.
    let mut stream = first.expect("a client");
    let mut latencies = Vec::new();
    for i in 0..updates {
        let value = format!("redis-{i}:6379");
        let t0 = Instant::now();
        rt.block_on(api.patch("c0000", &params, &Patch::Apply(component("c0000", &value)))).unwrap();
        rt.block_on(async {
            loop {
                let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("event within 10 s")
                    .unwrap()
                    .expect("stream open");
                let object: serde_json::Value = serde_json::from_slice(&event.component).unwrap();
                if object["spec"]["metadata"][0]["value"] == value.as_str() {
                    break;
                }
            }
        });
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = operator.rss_kib();
    println!(
        "apply -> stream: p50 {:?}, p99 {:?}, max {:?} over {updates} updates ({clients} streams open; the others \
         received {} events)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        received.load(Ordering::Relaxed)
    );
    println!(
        "operator RSS: idle {} MiB, {components} components {} MiB, + {clients} stream clients {} MiB, after the \
         updates {} MiB",
        rss_idle / 1024,
        rss_components / 1024,
        rss_clients / 1024,
        rss_after / 1024
    );

    // 3. A real sidecar in its own namespace: apply a new component, time until a state call on it succeeds.
    let live = "live";
    rt.block_on(ward_k8s_testenv::create_namespace(&client, live));
    let live_token = token_for(live, "shop", json!({"dapr.io/enabled": "true", "dapr.io/app-id": "shop"}));
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let sidecar = Proc::spawn(
        &ward,
        &[
            "sidecar",
            "--mode",
            "kubernetes",
            "--app-id",
            "shop",
            "--control-plane-address",
            &grpc,
            "--sentry-address",
            &sentry_grpc,
            "--dapr-http-port",
            "0",
            "--dapr-grpc-port",
            "0",
            "--dapr-internal-grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--disable-builtin-k8s-secret-store",
        ],
        &[
            ("NAMESPACE", live),
            ("DAPR_SENTRY_TOKEN_FILE", live_token.to_str().unwrap()),
            ("DAPR_TRUST_ANCHORS_FILE", anchors.to_str().unwrap()),
            ("DAPR_CONTROLPLANE_NAMESPACE", cp),
            ("DAPR_CONTROLPLANE_TRUST_DOMAIN", "cluster.local"),
            ("WARD_HOME", home.to_str().unwrap()),
            ("DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK", "true"),
        ],
    );
    let http = field(&sidecar.wait_line("ward sidecar ready:"), "http");
    let live_api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client.clone(), live, &ward_kube::operator::Kind::Component.api_resource());
    let mut to_sidecar = Vec::new();
    for i in 0..updates {
        let name = format!("s{i:03}");
        let store = json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": name},
            "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
        });
        let t0 = Instant::now();
        rt.block_on(live_api.patch(&name, &params, &Patch::Apply(store))).unwrap();
        loop {
            if save_state(&http, &name) == 204 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "component {name} not usable within 10 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        to_sidecar.push(t0.elapsed());
    }
    to_sidecar.sort();
    println!(
        "apply -> sidecar answers on the new component: p50 {:?}, p99 {:?}, max {:?} over {updates} new components",
        percentile(&to_sidecar, 0.5),
        percentile(&to_sidecar, 0.99),
        to_sidecar.last().unwrap()
    );
}

/// `POST /v1.0/state/<store>` with one item on a fresh connection; the status code (0 when the call failed).
fn save_state(http: &str, store: &str) -> u16 {
    use std::io::{Read, Write};
    let body = r#"[{"key":"k","value":"v"}]"#;
    let request = format!(
        "POST /v1.0/state/{store} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut stream) = std::net::TcpStream::connect(http) else { return 0 };
    let mut reply = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut reply).is_err() {
        return 0;
    }
    reply.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}
