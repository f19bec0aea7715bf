//! Service-invocation overhead: app → sidecar → (HTTP/2 over mTLS) → sidecar → app, against the same app called
//! directly, on loopback. Reports p50/p99 latency and throughput at a fixed rate and at saturation, each
//! sidecar's RSS, and start-to-ready time.
//!
//! Run: `cargo build --release -p ward && cargo run --release -p ward --example invoke_bench -- [seconds]`
//! It starts `ward sentry` and two `ward sidecar` processes (from target/release/ward), and an in-process echo app.
//! `WARD_BENCH_METRICS=off` runs both sidecars with `--enable-metrics=false` (nothing recorded), to price metrics;
//! `WARD_BENCH_CALLEE_CONFIG=<file>` gives the callee sidecar a Configuration (`--config`) and
//! `WARD_BENCH_CALLEE_RESOURCES=<dir>` its resources (`--resources-path`, e.g. middleware components);
//! `WARD_BENCH_PATH` (default `orders`), `WARD_BENCH_BODY` (default `{"order":1}`) and `WARD_BENCH_HEADER`
//! (`name: value`, e.g. an `authorization` bearer token) shape the request, and `WARD_BENCH_APP_REPLY=<file>` makes
//! the app answer that file (JSON) instead of echoing, so pipelines (middleware, MCP rules) can be compared.
//! `WARD_BENCH_CALLER_CONFIG=<file>` gives the caller sidecar a Configuration too. `WARD_BENCH_TRACING=<rate>`
//! (e.g. `1`, `0.0001`) starts an OTLP/HTTP sink in this process and gives both sidecars a Configuration with
//! `spec.tracing` at that sampling rate exporting to it (it replaces the two config variables); the number of
//! spans the sink received is printed.

#[path = "common/mod.rs"]
mod bench;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bench::{Stats, WardProc, bench_sentry, bench_sidecar_args, stats, ward_binary};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// The request body (`WARD_BENCH_BODY`).
fn body() -> &'static Bytes {
    static BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BODY.get_or_init(|| Bytes::from(std::env::var("WARD_BENCH_BODY").unwrap_or_else(|_| "{\"order\":1}".into())))
}

/// One extra request header (`WARD_BENCH_HEADER=name: value`).
fn extra_header() -> Option<&'static (String, String)> {
    static HEADER: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
    HEADER
        .get_or_init(|| {
            let raw = std::env::var("WARD_BENCH_HEADER").ok()?;
            let (name, value) = raw.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .as_ref()
}

async fn one(client: &Client, url: &str) -> Duration {
    let t = Instant::now();
    let mut builder = hyper::Request::post(url).header("content-type", "application/json");
    if let Some((name, value)) = extra_header() {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder.body(Full::new(body().clone())).expect("request");
    let response = client.request(request).await.expect("response");
    assert!(response.status().is_success(), "status {}", response.status());
    response.into_body().collect().await.expect("body");
    t.elapsed()
}

/// Open-loop load at `rate` requests/s for `seconds`.
async fn fixed_rate(client: &Client, url: &str, rate: u64, seconds: u64) -> Stats {
    let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..rate * seconds {
        interval.tick().await;
        let client = client.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move { one(&client, &url).await }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await.expect("task"));
    }
    stats(latencies, started.elapsed())
}

/// Closed-loop load with `concurrency` workers for `seconds`.
async fn saturation(client: &Client, url: &str, concurrency: usize, seconds: u64) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                latencies.push(one(&client, &url).await);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    stats(latencies, started.elapsed())
}

/// An OTLP/HTTP sink: answers every export 200 and counts the spans. Returns its address.
async fn otlp_sink(spans: std::sync::Arc<std::sync::atomic::AtomicU64>) -> std::net::SocketAddr {
    use prost::Message as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let spans = spans.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let spans = spans.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        if let Ok(export) =
                            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body)
                        {
                            let n: usize =
                                export.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
                            spans.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let dir = tempfile::tempdir().expect("tempdir");
    let spans_received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    // `WARD_BENCH_TRACING`: one Configuration with tracing for both sidecars, exporting to the sink above.
    let tracing_config = std::env::var("WARD_BENCH_TRACING").ok().map(|rate| {
        let sink = runtime.block_on(otlp_sink(spans_received.clone()));
        let file = dir.path().join("tracing.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: bench\nspec:\n  tracing:\n    \
                 samplingRate: \"{rate}\"\n    otel:\n      endpointAddress: \"{sink}\"\n      protocol: http\n      \
                 isSecure: false\n"
            ),
        )
        .expect("write the tracing configuration");
        file.to_string_lossy().into_owned()
    });
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let home_s = home.to_string_lossy().into_owned();

    // The echo app.
    let app_addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        // `WARD_BENCH_APP_REPLY`: a fixed JSON answer (e.g. a 200-tool MCP list) instead of the echo.
                        let reply = match std::env::var("WARD_BENCH_APP_REPLY") {
                            Ok(file) => Bytes::from(std::fs::read(file).unwrap_or_default()),
                            Err(_) => body,
                        };
                        let mut response = hyper::Response::new(Full::new(reply));
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        addr
    });

    let (sentry, anchors) = bench_sentry(&ward_binary(), dir.path());
    let sidecar = |app_id: &str, app_port: Option<u16>| {
        let mut args = vec![
            "--audit-log".to_owned(),
            dir.path().join(format!("{app_id}-audit.log")).to_string_lossy().into_owned(),
        ];
        if let Some(config) = &tracing_config {
            args.extend(["--config".into(), config.clone()]);
        } else if app_port.is_none()
            && let Ok(config) = std::env::var("WARD_BENCH_CALLER_CONFIG")
        {
            args.extend(["--config".into(), config]);
        }
        // `WARD_BENCH_METRICS=off`: both sidecars with `--enable-metrics=false`, to price the metrics.
        if std::env::var("WARD_BENCH_METRICS").is_ok_and(|v| v == "off") {
            args.push("--enable-metrics=false".into());
        }
        if let Some(port) = app_port {
            args.extend(["--app-port".into(), port.to_string()]);
            // The callee's Configuration, to compare pipelines (e.g. capability routes and provenance on / off).
            if let Ok(config) = std::env::var("WARD_BENCH_CALLEE_CONFIG")
                && tracing_config.is_none()
            {
                args.extend(["--config".into(), config]);
            }
            if let Ok(resources) = std::env::var("WARD_BENCH_CALLEE_RESOURCES") {
                args.extend(["--resources-path".into(), resources]);
            }
        }
        let args = bench_sidecar_args(app_id, &sentry, &args);
        WardProc::spawn(
            &ward_binary(),
            &args,
            &[("DAPR_TRUST_ANCHORS", &anchors), ("WARD_HOME", &home_s)],
            "ward sidecar ready:",
        )
    };
    let callee = sidecar("callee", Some(app_addr.port()));
    let caller = sidecar("caller", None);

    let client: Client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build({
            let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
            c.set_nodelay(true);
            c
        });
    let path = std::env::var("WARD_BENCH_PATH").unwrap_or_else(|_| "orders".into());
    let direct = format!("http://{app_addr}/{path}");
    let mesh = format!("http://{}/v1.0/invoke/callee/method/{path}", caller.field("http"));

    let report = |name: &str, d: &Stats, m: &Stats| {
        println!(
            "{name}: direct p50 {:.3} ms p99 {:.3} ms {:.0} req/s | via ward p50 {:.3} ms p99 {:.3} ms {:.0} req/s | added p50 {:.3} ms p99 {:.3} ms | throughput ratio {:.2}",
            d.p50.as_secs_f64() * 1e3,
            d.p99.as_secs_f64() * 1e3,
            d.ops_per_sec,
            m.p50.as_secs_f64() * 1e3,
            m.p99.as_secs_f64() * 1e3,
            m.ops_per_sec,
            (m.p50.as_secs_f64() - d.p50.as_secs_f64()) * 1e3,
            (m.p99.as_secs_f64() - d.p99.as_secs_f64()) * 1e3,
            m.ops_per_sec / d.ops_per_sec
        );
    };
    runtime.block_on(async {
        // Warm up pools and connections.
        for _ in 0..200 {
            one(&client, &direct).await;
            one(&client, &mesh).await;
        }
        let d = fixed_rate(&client, &direct, 1000, seconds).await;
        let m = fixed_rate(&client, &mesh, 1000, seconds).await;
        report("fixed 1000 req/s", &d, &m);
        let d = saturation(&client, &direct, 32, seconds).await;
        let m = saturation(&client, &mesh, 32, seconds).await;
        report("saturation (32 workers)", &d, &m);
    });
    if tracing_config.is_some() {
        // The batch exporter sends every 5 s: wait for the last batch.
        std::thread::sleep(Duration::from_secs(6));
        println!("spans received by the OTLP sink: {}", spans_received.load(std::sync::atomic::Ordering::Relaxed));
    }
    println!(
        "RSS after load: caller sidecar {} KiB, callee sidecar {} KiB, sentry {} KiB",
        rss_kib(caller.child.id()),
        rss_kib(callee.child.id()),
        rss_kib(sentry.child.id())
    );
    println!(
        "start to ready: caller {} (spawn to ready line {:.0} ms), callee {} (spawn to ready line {:.0} ms)",
        caller.field("elapsed-ms"),
        caller.spawn_to_ready.as_secs_f64() * 1e3,
        callee.field("elapsed-ms"),
        callee.spawn_to_ready.as_secs_f64() * 1e3
    );
}
