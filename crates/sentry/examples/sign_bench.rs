//! Signing throughput and latency of `SignCertificate` over the real TLS gRPC transport.
//!
//! Run: `cargo run --release -p ward-sentry --example sign_bench -- [requests] [concurrency]`
//! (defaults 2000 and 8). Starts an in-process sentry on 127.0.0.1 with a fresh CA, pre-generates the CSRs (so
//! client-side key generation is not measured), then fires the requests and prints CSRs/s and p50/p99 latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair};
use ward_identity::{SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_sentry::proto::SignCertificateRequest;
use ward_sentry::{Ca, SentryClient, SentryClientConfig, SentryConfig, Validator};

fn main() {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(bench(requests, concurrency));
}

async fn bench(requests: usize, concurrency: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let td = TrustDomain::new("public").expect("td");
    let ca = Arc::new(
        Ca::new(
            SentryConfig {
                issuer_dir: dir.path().join("ca"),
                trust_domain: td.clone(),
                namespace: "default".into(),
                listen: "127.0.0.1:0".parse().expect("addr"),
                healthz_listen: "127.0.0.1:0".parse().expect("addr"),
                workload_ttl: Duration::from_secs(3600),
                allowed_clock_skew: Duration::from_secs(60),
                generated_ca_ttl: Duration::from_secs(86400),
                production: false,
                limits: ward_net::ListenerLimits::default(),
                metrics: None,
            },
            Validator::Insecure,
        )
        .expect("ca"),
    );
    let roots = ca.roots_pem();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(ward_sentry::run(ca, std::future::pending(), move |addrs| {
        let _ = tx.send(addrs);
    }));
    let addrs = rx.await.expect("sentry started");
    let client = SentryClient::new(SentryClientConfig {
        address: addrs.grpc.to_string(),
        sentry_id: SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").expect("id"),
        bundle: TrustBundleHandle::new(TrustBundle::from_pem(td.clone(), roots.as_bytes()).expect("bundle")),
        app_id: "bench".into(),
        namespace: "default".into(),
        trust_domain: td,
        token_file: None,
        skew: Duration::from_secs(60),
        kubernetes: false,
        sentry_trust: None,
    })
    .expect("client");

    let csrs: Vec<Vec<u8>> = (0..requests)
        .map(|_| {
            let key = KeyPair::generate().expect("key");
            CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem").into_bytes()
        })
        .collect();
    // Warm up the connection.
    client.fetch().await.expect("warm-up");

    let queue = Arc::new(std::sync::Mutex::new(csrs));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(csr) = queue.lock().expect("queue").pop() else { break };
                let request = SignCertificateRequest {
                    id: format!("app-{worker}"),
                    namespace: "default".into(),
                    certificate_signing_request: csr,
                    ..Default::default()
                };
                let t = Instant::now();
                client.grpc().sign_certificate(request).await.expect("signed");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "SignCertificate: {requests} CSRs, concurrency {concurrency}: {:.0} CSRs/s, p50 {:.2} ms, p99 {:.2} ms",
        requests as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
}
