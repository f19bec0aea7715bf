//! Pub/sub throughput and latency (issue 14): publish on one sidecar → broker → delivery by another sidecar to an
//! in-process subscriber app, per broker (`pubsub.in-memory` inside one sidecar, `pubsub.redis`,
//! `pubsub.jetstream`), with publisher verification on and off; next to the broker's own client on the same
//! server (`redis-benchmark` XADD; a direct `async-nats` JetStream publisher); and the cost of signing and
//! verifying one event on its own.
//!
//! Run: `cargo build --release -p ward && cargo run --release -p ward --example pubsub_bench -- [seconds]`
//! (`WARD_BENCH_BROKERS=memory,redis,jetstream` picks brokers). Needs `redis-server`, `redis-benchmark` and
//! `nats-server` for the Redis and JetStream rows. End-to-end latency is the subscriber's receive time minus the
//! publisher's send time, both read from one clock in this process.

#[path = "common/mod.rs"]
mod bench;

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bench::{KillOnDrop, WardProc, bench_sentry, bench_sidecar_args, stats, ward_binary};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn clock() -> &'static Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now)
}

/// What the subscriber app saw: end-to-end latencies and a count.
#[derive(Default)]
struct Received {
    latencies: Mutex<Vec<Duration>>,
    count: AtomicU64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The subscriber app: every POST is an event whose data is `{"t": <nanos on the shared clock>, ...}`.
async fn subscriber_app(received: Arc<Received>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let received = received.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let is_event = req.method() == hyper::Method::POST;
                        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        if is_event
                            && let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body)
                            && let Some(sent) = event["data"]["t"].as_u64()
                        {
                            let now = clock().elapsed().as_nanos() as u64;
                            received
                                .latencies
                                .lock()
                                .expect("latencies")
                                .push(Duration::from_nanos(now.saturating_sub(sent)));
                            received.count.fetch_add(1, Ordering::Relaxed);
                        }
                        let answer = if is_event { Bytes::new() } else { Bytes::from_static(b"[]") };
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(answer)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    port
}

async fn publish(client: &Client, url: &str, pad: &str) -> Duration {
    let t0 = Instant::now();
    let body = format!("{{\"t\":{},\"pad\":\"{pad}\"}}", clock().elapsed().as_nanos());
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = client.request(request).await.expect("publish");
    assert_eq!(response.status(), 204, "publish status");
    response.into_body().collect().await.expect("body");
    t0.elapsed()
}

struct Run {
    publish_per_sec: f64,
    delivered_per_sec: f64,
    publish_p50: Duration,
    e2e_p50: Duration,
    e2e_p99: Duration,
}

/// Publishes at `rate`/s (open loop) or, with `rate == 0`, with 32 closed-loop publishers, for `seconds`; waits
/// (bounded) until every event was delivered.
async fn run(client: &Client, url: &str, received: &Received, rate: u64, seconds: u64) -> Run {
    received.latencies.lock().expect("latencies").clear();
    let before = received.count.load(Ordering::Relaxed);
    let pad = "x".repeat(900);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut publish_latencies = Vec::new();
    if let Some(period) = 1_000_000_000u64.checked_div(rate) {
        let mut interval = tokio::time::interval(Duration::from_nanos(period));
        let mut tasks = Vec::new();
        for _ in 0..rate * seconds {
            interval.tick().await;
            let (client, url, pad) = (client.clone(), url.to_owned(), pad.clone());
            tasks.push(tokio::spawn(async move { publish(&client, &url, &pad).await }));
        }
        for task in tasks {
            publish_latencies.push(task.await.expect("task"));
        }
    } else {
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (client, url, pad) = (client.clone(), url.to_owned(), pad.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    latencies.push(publish(&client, &url, &pad).await);
                }
                latencies
            }));
        }
        for task in tasks {
            publish_latencies.extend(task.await.expect("task"));
        }
    }
    let published = publish_latencies.len() as u64;
    let publish_elapsed = started.elapsed();
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while received.count.load(Ordering::Relaxed) - before < published && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered = received.count.load(Ordering::Relaxed) - before;
    let all = started.elapsed();
    let e2e = stats(received.latencies.lock().expect("latencies").clone(), all);
    let p = stats(publish_latencies, publish_elapsed);
    Run {
        publish_per_sec: p.ops_per_sec,
        delivered_per_sec: delivered as f64 / all.as_secs_f64(),
        publish_p50: p.p50,
        e2e_p50: e2e.p50,
        e2e_p99: e2e.p99,
    }
}

fn component(broker: &str, verify: bool, redis_port: u16, nats_port: u16) -> String {
    let (ty, metadata) = match broker {
        "memory" => ("pubsub.in-memory", String::new()),
        "redis" => ("pubsub.redis", format!("  - {{name: redisHost, value: \"127.0.0.1:{redis_port}\"}}\n")),
        _ => (
            "pubsub.jetstream",
            format!(
                "  - {{name: natsURL, value: \"nats://127.0.0.1:{nats_port}\"}}\n  - {{name: durableName, value: bench}}\n"
            ),
        ),
    };
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: bus}}\nspec:\n  type: {ty}\n  version: v1\n  \
         metadata:\n  - {{name: verifyPublishers, value: \"{verify}\"}}\n{metadata}---\napiVersion: dapr.io/v2alpha1\n\
         kind: Subscription\nmetadata: {{name: bench}}\nspec:\n  pubsubname: bus\n  topic: bench\n  routes: {{default: \
         /events}}\nscopes: [sub, solo]\n"
    )
}

/// The cost of `wardsig` alone: sign and verify one ~1 KiB event with a CA-issued P-256 leaf.
fn signature_cost() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.subject_alt_names = vec![SanType::URI("spiffe://public/ns/default/pub".try_into().expect("uri"))];
    leaf.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    let svid = ward_identity::X509Svid::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).expect("svid");
    let resolver = Arc::new(ward_identity::SvidResolver::with_svid(svid));
    let td = ward_identity::TrustDomain::new("public").expect("td");
    let bundle = ward_identity::TrustBundleHandle::new(
        ward_identity::TrustBundle::from_pem(td, ca_cert.pem().as_bytes()).expect("bundle"),
    );
    let event: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "id": "5b7c", "specversion": "1.0", "source": "pub", "type": "com.dapr.event.sent", "topic": "bench",
        "pubsubname": "bus", "datacontenttype": "application/json", "time": "2026-12-05T12:00:00Z",
        "data": {"t": 1, "pad": "x".repeat(900)}
    }))
    .expect("event");
    let n = 2000;
    let mut signed = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..n {
        let mut e = event.clone();
        assert!(ward_sidecar::bench_support::sign_event(resolver.clone(), &mut e));
        signed.push(e);
    }
    let sign = t.elapsed() / n as u32;
    let t = Instant::now();
    for e in &signed {
        let fresh = ward_sidecar::bench_support::verifier(bundle.clone());
        ward_sidecar::bench_support::verify_event(&fresh, e).expect("verifies");
    }
    let cold = t.elapsed() / n as u32;
    // A subscribing sidecar keeps one verifier: the publisher's chain is checked once, each signature always.
    let verifier = ward_sidecar::bench_support::verifier(bundle.clone());
    let t = Instant::now();
    for e in &signed {
        ward_sidecar::bench_support::verify_event(&verifier, e).expect("verifies");
    }
    let warm = t.elapsed() / n as u32;
    println!(
        "wardsig alone (1 KiB event, P-256): sign {:.1} µs, verify {:.1} µs with the publisher's chain known \
         ({:.1} µs when the chain is verified too)",
        sign.as_secs_f64() * 1e6,
        warm.as_secs_f64() * 1e6,
        cold.as_secs_f64() * 1e6
    );
}

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let brokers = std::env::var("WARD_BENCH_BROKERS").unwrap_or_else(|_| "memory,redis,jetstream".into());
    clock();
    signature_cost();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let home_s = home.to_string_lossy().into_owned();
    let received = Arc::new(Received::default());
    let app_port = runtime.block_on(subscriber_app(received.clone()));

    let redis_port = free_port();
    let _redis = brokers.contains("redis").then(|| {
        KillOnDrop(
            Command::new("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server"),
        )
    });
    let nats_port = free_port();
    let nats_store = tempfile::tempdir().expect("store");
    let _nats = brokers.contains("jetstream").then(|| {
        KillOnDrop(
            Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &nats_port.to_string(), "-js", "-sd"])
                .arg(nats_store.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server"),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    if brokers.contains("jetstream") {
        runtime.block_on(async {
            let js = async_nats::jetstream::new(
                async_nats::connect(format!("nats://127.0.0.1:{nats_port}")).await.expect("nats"),
            );
            js.create_stream(async_nats::jetstream::stream::Config {
                name: "BENCH".into(),
                subjects: vec!["bench".into(), "direct".into()],
                ..Default::default()
            })
            .await
            .expect("stream");
        });
    }

    let (sentry, anchors) = bench_sentry(&ward_binary(), dir.path());
    let client: Client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build({
            let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
            c.set_nodelay(true);
            c
        });

    println!(
        "| broker | verifyPublishers | fixed 500/s: e2e p50 / p99 | saturation (32 publishers): publish/s, delivered/s, publish p50, e2e p50 / p99 |"
    );
    println!("|---|---|---|---|");
    for broker in brokers.split(',') {
        for verify in [true, false] {
            let resources = dir.path().join(format!("res-{broker}-{verify}"));
            std::fs::create_dir_all(&resources).expect("resources");
            std::fs::write(resources.join("bus.yaml"), component(broker, verify, redis_port, nats_port))
                .expect("write");
            let sidecar = |app_id: &str, app: Option<u16>| {
                let mut extra = vec![
                    "--resources-path".to_owned(),
                    resources.to_string_lossy().into_owned(),
                    "--audit-log".into(),
                    dir.path().join(format!("{app_id}-{broker}-{verify}.log")).to_string_lossy().into_owned(),
                ];
                if let Some(port) = app {
                    extra.extend(["--app-port".into(), port.to_string()]);
                }
                let args = bench_sidecar_args(app_id, &sentry, &extra);
                WardProc::spawn(
                    &ward_binary(),
                    &args,
                    &[("DAPR_TRUST_ANCHORS", &anchors), ("WARD_HOME", &home_s)],
                    "ward sidecar ready:",
                )
            };
            // In-memory lives inside one sidecar: it publishes to itself. Otherwise two sidecars share the broker.
            let (publisher, _subscriber) = if broker == "memory" {
                (sidecar("solo", Some(app_port)), None)
            } else {
                let sub = sidecar("sub", Some(app_port));
                (sidecar("pub", None), Some(sub))
            };
            std::thread::sleep(Duration::from_millis(1500));
            let url = format!("http://{}/v1.0/publish/bus/bench", publisher.field("http"));
            let (fixed, sat) = runtime.block_on(async {
                run(&client, &url, &received, 100, 1).await;
                let fixed = run(&client, &url, &received, 500, seconds).await;
                let sat = run(&client, &url, &received, 0, seconds).await;
                (fixed, sat)
            });
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "| {broker} | {verify} | {:.2} / {:.2} ms | {:.0}, {:.0}, {:.2} ms, {:.1} / {:.1} ms |",
                ms(fixed.e2e_p50),
                ms(fixed.e2e_p99),
                sat.publish_per_sec,
                sat.delivered_per_sec,
                ms(sat.publish_p50),
                ms(sat.e2e_p50),
                ms(sat.e2e_p99)
            );
        }
    }
    if brokers.contains("redis") {
        let payload = "x".repeat(1000);
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &redis_port.to_string(),
                "-q",
                "-n",
                "100000",
                "-c",
                "32",
                "XADD",
                "direct",
                "*",
                "data",
                &payload,
            ])
            .output()
            .expect("redis-benchmark");
        println!(
            "redis-benchmark XADD (1 KB, 32 clients): {}",
            String::from_utf8_lossy(&out.stdout).trim().replace('\r', " ")
        );
    }
    if brokers.contains("jetstream") {
        runtime.block_on(async {
            let js = async_nats::jetstream::new(
                async_nats::connect(format!("nats://127.0.0.1:{nats_port}")).await.expect("nats"),
            );
            let payload = Bytes::from("x".repeat(1000));
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let (js, payload) = (js.clone(), payload.clone());
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        js.publish("direct", payload.clone()).await.expect("publish").await.expect("ack");
                        latencies.push(t.elapsed());
                    }
                    latencies
                }));
            }
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.expect("task"));
            }
            let s = stats(latencies, started.elapsed());
            println!(
                "async-nats JetStream publish with ack (1 KB, 32 publishers): {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms",
                s.ops_per_sec,
                s.p50.as_secs_f64() * 1e3,
                s.p99.as_secs_f64() * 1e3
            );
        });
    }
}
