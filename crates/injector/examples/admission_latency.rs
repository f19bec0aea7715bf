//! Admission latency of `ward injector`: p50/p99 over 1000 reviews, measured two ways.
//!
//! 1. Directly against `POST /mutate` (in-process injector on 127.0.0.1, one kept-alive TLS connection, as the
//!    API server pools them): the injector's own cost, review parse + decision + patch + answer.
//! 2. End to end: 1000 pod creates through a real kube-apiserver (`ward_k8s_testenv`) whose webhook calls the
//!    injector, against 1000 creates in a namespace the webhook does not select (same server, same pods): the
//!    difference is what injection adds to a user's `kubectl apply`.
//!
//! Run (debug build, as everything on the shared machine; the numbers in docs/kubernetes-injector.md came from it):
//!
//! ```sh
//! KUBEBUILDER_ASSETS=$HOME/.cache/ward-k8s/bin cargo run -p ward-injector --example admission_latency
//! ```
//!
//! Without `KUBEBUILDER_ASSETS` only part 1 runs. `REVIEWS=200` changes the count.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use ward_injector::InjectorConfig;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), samples[samples.len() - 1])
}

fn show(label: &str, samples: Vec<Duration>) -> (Duration, Duration) {
    let n = samples.len();
    let (p50, p99, max) = percentiles(samples);
    println!("{label:<58} n={n:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms", ms(p50), ms(p99), ms(max));
    (p50, p99)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn annotated_pod(name: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "annotations": {
            "dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/app-port": "8080",
            "dapr.io/api-token-secret": "api-token", "dapr.io/sidecar-cpu-request": "100m",
            "dapr.io/enable-api-logging": "true"
        }},
        "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}
    })
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("REVIEWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new("bench");
    let injector = common::start_injector(InjectorConfig::default(), &pki, dir.path(), None).await;

    // 1. Directly against /mutate.
    let (mut conn, _) = common::connect(injector.addr, &pki.ca_pem).await;
    let body = common::review_body("shop", &annotated_pod("orders-0"));
    for _ in 0..50 {
        common::post(&mut conn, "/mutate", body.clone()).await;
    }
    let mut direct = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let (status, _) = common::post(&mut conn, "/mutate", body.clone()).await;
        direct.push(started.elapsed());
        assert_eq!(status, 200);
    }
    show("POST /mutate, annotated pod, kept-alive TLS connection", direct);

    // 2. End to end through the API server.
    let Some(assets) = ward_k8s_testenv::assets() else {
        println!("(end to end skipped: {})", ward_k8s_testenv::HOW_TO_PROVIDE);
        return;
    };
    let cluster = ward_k8s_testenv::TestCluster::start(&assets, Default::default()).expect("test cluster");
    let client = cluster.client().await;
    let mut namespaces = Vec::new();
    for prefix in ["bench-injected", "bench-plain"] {
        let ns = cluster.fresh_namespace(&client, prefix).await;
        let patch = json!({"metadata": {"labels": {"ward-bench": prefix}}});
        Api::<Namespace>::all(client.clone()).patch(&ns, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), &ns).create(&PostParams::default(), &sa).await.unwrap();
        namespaces.push(ns);
    }
    let mut webhook: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "dapr-sidecar-injector"},
        "webhooks": [{
            "name": "sidecar-injector.dapr.io",
            "clientConfig": {"url": format!("https://127.0.0.1:{}/mutate", injector.addr.port())},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchLabels": {"ward-bench": "bench-injected"}}
        }]
    }))
    .unwrap();
    webhook.webhooks.as_mut().unwrap()[0].client_config.ca_bundle = Some(ByteString(pki.ca_pem.clone().into_bytes()));
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    webhooks.create(&PostParams::default(), &webhook).await.unwrap();

    let injected: Api<Pod> = Api::namespaced(client.clone(), &namespaces[0]);
    let plain: Api<Pod> = Api::namespaced(client.clone(), &namespaces[1]);
    // Wait until the API server calls the webhook (it picks up configurations asynchronously).
    let deadline = Instant::now() + Duration::from_secs(20);
    let dry = PostParams { dry_run: true, ..Default::default() };
    loop {
        let pod: Pod = serde_json::from_value(annotated_pod("probe")).unwrap();
        if let Ok(p) = injected.create(&dry, &pod).await
            && p.spec.unwrap().containers.iter().any(|c| c.name == "daprd")
        {
            break;
        }
        assert!(Instant::now() < deadline, "webhook never called");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let measure = async |api: &Api<Pod>, prefix: &str| {
        let mut samples = Vec::with_capacity(count);
        for i in 0..count + 20 {
            let pod: Pod = serde_json::from_value(annotated_pod(&format!("{prefix}-{i}"))).unwrap();
            let started = Instant::now();
            let created = api.create(&PostParams::default(), &pod).await.expect("create");
            let elapsed = started.elapsed();
            // The first 20 warm up connections and caches.
            if i >= 20 {
                samples.push(elapsed);
            }
            let has_sidecar = created.spec.unwrap().containers.iter().any(|c| c.name == "daprd");
            assert_eq!(has_sidecar, prefix == "injected");
        }
        samples
    };
    let with = measure(&injected, "injected").await;
    let without = measure(&plain, "plain").await;
    let (p50_with, p99_with) = show("pod create through kube-apiserver, webhook injects", with);
    let (p50_without, p99_without) = show("pod create through kube-apiserver, no webhook (baseline)", without);
    println!(
        "{:<58} p50={:>+8.3} ms  p99={:>+8.3} ms",
        "added by injection",
        ms(p50_with) - ms(p50_without),
        ms(p99_with) - ms(p99_without)
    );
    let _ = webhooks.delete("dapr-sidecar-injector", &DeleteParams::default()).await;
    injector.shutdown().await;
}
