//! Sentry signing latency on Kubernetes: `ward sentry --mode kubernetes` against a real API server
//! (`KUBEBUILDER_ASSETS`), one pod-bound token, sequential SignCertificate calls over mTLS-less gRPC as daprd sends
//! them (fresh key and CSR each time, generated before the clock starts). Twice: every request reviewed by the API
//! server (`--token-review-cache 0s`), and with successful reviews reused for 10 s (the default). The pod is
//! fetched on every request in both.
//!
//! Run: `cargo build --release -p ward --example k8s_sentry_bench --bin ward &&
//!       KUBEBUILDER_ASSETS=$(scripts/k8s-assets.sh) target/release/examples/k8s_sentry_bench [requests]`

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{WardProc, stats, ward_binary};
use serde_json::json;
use ward_identity::{SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_sentry::proto::SignCertificateRequest;
use ward_sentry::proto::sign_certificate_request::TokenValidator;
use ward_sentry::{SentryClient, SentryClientConfig};

fn main() {
    let requests: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let assets = ward_k8s_testenv::assets().expect("KUBEBUILDER_ASSETS (scripts/k8s-assets.sh prints it)");
    let cluster = ward_k8s_testenv::TestCluster::start(&assets, Default::default()).expect("test cluster");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(ward_k8s_testenv::install_configuration_crd(&client));
    let ns = "shop";
    rt.block_on(ward_k8s_testenv::create_namespace(&client, ns));
    rt.block_on(ward_k8s_testenv::create_namespace(&client, "dapr-system"));
    let annotations = json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders"});
    let pod = rt.block_on(ward_k8s_testenv::annotated_pod(&client, ns, "orders-0", "orders", annotations));
    let audience = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";
    let token = rt.block_on(ward_k8s_testenv::bound_token(&client, ns, "orders", Some(&pod), audience));
    let kubeconfig = cluster.kubeconfig_path().display().to_string();

    println!("sentry --mode kubernetes, {requests} sequential SignCertificate calls (one pod-bound token)");
    for cache in ["0s", "10s"] {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials").display().to_string();
        let sentry = WardProc::spawn(
            &ward_binary(),
            &[
                "sentry",
                "--mode",
                "kubernetes",
                "--kubeconfig",
                &kubeconfig,
                "--namespace",
                "dapr-system",
                "--trust-domain",
                "cluster.local",
                "--issuer-credentials",
                &credentials,
                "--port",
                "0",
                "--healthz-port",
                "0",
                "--enable-metrics=false",
                "--token-review-cache",
                cache,
            ],
            &[],
            "ward sentry ready:",
        );
        let td = TrustDomain::new("cluster.local").unwrap();
        let roots = std::fs::read(dir.path().join("credentials/ca.crt")).unwrap();
        let ca = SentryClient::new(SentryClientConfig {
            address: sentry.field("grpc"),
            sentry_id: SpiffeId::parse("spiffe://cluster.local/ns/dapr-system/dapr-sentry").unwrap(),
            bundle: TrustBundleHandle::new(TrustBundle::from_pem(td.clone(), &roots).unwrap()),
            app_id: "orders".to_owned(),
            namespace: ns.to_owned(),
            trust_domain: td,
            token_file: None,
            skew: Duration::from_secs(60),
            kubernetes: false,
            sentry_trust: None,
        })
        .unwrap();
        let csrs: Vec<Vec<u8>> = (0..requests + 20)
            .map(|_| {
                let key = rcgen::KeyPair::generate().unwrap();
                rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap().into_bytes()
            })
            .collect();
        let mut grpc = ca.grpc();
        let mut latencies = Vec::with_capacity(requests);
        let started = Instant::now();
        for (i, csr) in csrs.into_iter().enumerate() {
            let request = SignCertificateRequest {
                id: "orders".to_owned(),
                token: token.clone(),
                namespace: ns.to_owned(),
                certificate_signing_request: csr,
                token_validator: TokenValidator::Kubernetes as i32,
                ..Default::default()
            };
            let t = Instant::now();
            rt.block_on(grpc.sign_certificate(request)).expect("signed");
            // The first 20 warm the connection and caches.
            if i >= 20 {
                latencies.push(t.elapsed());
            }
        }
        let s = stats(latencies, started.elapsed());
        println!(
            "  token review cache {cache:>3}: p50 {:.2} ms, p99 {:.2} ms ({:.0} certificates/s)",
            s.p50.as_secs_f64() * 1000.0,
            s.p99.as_secs_f64() * 1000.0,
            s.ops_per_sec
        );
        if cache == "10s" {
            // From a pod-bound token on disk to a ready `ward sidecar --mode kubernetes` (process start, token
            // review, pod checks, key generation, signing, listeners up), five times.
            let token_file = dir.path().join("token");
            std::fs::write(&token_file, &token).unwrap();
            let anchors = dir.path().join("credentials/ca.crt");
            let home = dir.path().join("home");
            std::fs::create_dir_all(&home).unwrap();
            let mut ready = Vec::new();
            for _ in 0..5 {
                let sidecar = WardProc::spawn(
                    &ward_binary(),
                    &[
                        "sidecar",
                        "--mode",
                        "kubernetes",
                        "--app-id",
                        "orders",
                        "--dapr-http-port",
                        "0",
                        "--dapr-grpc-port",
                        "0",
                        "--dapr-internal-grpc-port",
                        "0",
                        "--metrics-port",
                        "0",
                        "--sentry-address",
                        &sentry.field("grpc"),
                        "--control-plane-namespace",
                        "dapr-system",
                        "--control-plane-trust-domain",
                        "cluster.local",
                    ],
                    &[
                        ("NAMESPACE", ns),
                        ("DAPR_SENTRY_TOKEN_FILE", &token_file.display().to_string()),
                        // The built-in secret store's API client (in a pod: the service account).
                        ("KUBECONFIG", &kubeconfig),
                        ("DAPR_TRUST_ANCHORS_FILE", &anchors.display().to_string()),
                        ("WARD_HOME", &home.display().to_string()),
                        ("DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK", "true"),
                    ],
                    "ward sidecar ready:",
                );
                ready.push(sidecar.spawn_to_ready);
            }
            ready.sort();
            println!(
                "  pod-bound token to a ready sidecar: median {:.0} ms (min {:.0}, max {:.0}, 5 starts)",
                ready[2].as_secs_f64() * 1000.0,
                ready[0].as_secs_f64() * 1000.0,
                ready[4].as_secs_f64() * 1000.0
            );
        }
    }
}
