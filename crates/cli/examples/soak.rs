//! Soak benchmark (issue 24; not a test): a fixed rate through an mTLS sidecar pair with an accessControl policy
//! and audit logs on both sides, for ten minutes by default, printing one Markdown table row per window (a minute by
//! default): requests, errors, p50/p99 latency, and the resident memory of both sidecars at the window's end. At the
//! end it checks both audit chains with `ward audit verify`. Expected: 0 errors and flat RSS.
//!
//! Run: `cargo build --release -p ward --example soak && target/release/examples/soak [--minutes 10]
//! [--window-secs 60] [--rate 1000]`. It starts `ward sentry` and two `ward sidecar` processes from the `ward`
//! binary next to this example (killed when it ends) and an in-process echo app, all on 127.0.0.1. Requests time
//! out after 5 s (counted as errors). `WARD_SOAK_AUDIT_FSYNC=never|interval|always` sets the callee's
//! `spec.ward.audit.fsync`.

#[path = "common/mod.rs"]
mod bench;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench::{WardProc, bench_sentry, bench_sidecar_args, stats, ward_binary};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

struct Args {
    minutes: u64,
    window: Duration,
    rate: u64,
}

fn args() -> Args {
    let mut parsed = Args { minutes: 10, window: Duration::from_secs(60), rate: 1000 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--minutes" => parsed.minutes = value,
            "--window-secs" => parsed.window = Duration::from_secs(value.max(1)),
            "--rate" => parsed.rate = value.max(1),
            other => panic!("unknown flag {other}; use --minutes, --window-secs, --rate"),
        }
    }
    parsed
}

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

/// One call: its latency, or `None` for an error (transport error, non-2xx, or over [`REQUEST_TIMEOUT`]).
async fn one(client: &Client, url: &str) -> Option<Duration> {
    let started = Instant::now();
    let call = async {
        let request = hyper::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"order\":1}")))
            .ok()?;
        let response = client.request(request).await.ok()?;
        let ok = response.status().is_success();
        response.into_body().collect().await.ok()?;
        ok.then_some(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, call).await.ok().flatten().map(|()| started.elapsed())
}

/// The echo app on 127.0.0.1; counts requests.
async fn echo_app(received: Arc<AtomicU64>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let received = received.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        received.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(body)))
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
    let Args { minutes, window, rate } = args();
    let total = Duration::from_secs(minutes * 60);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let home_s = home.to_string_lossy().into_owned();
    let received = Arc::new(AtomicU64::new(0));
    let app_addr = runtime.block_on(echo_app(received.clone()));

    let fsync = std::env::var("WARD_SOAK_AUDIT_FSYNC").unwrap_or_else(|_| "never".into());
    let config = dir.path().join("callee.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: soak\nspec:\n  accessControl:\n    \
             defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: caller\n      namespace: default\n      \
             trustDomain: public\n      defaultAction: deny\n      operations:\n      - name: /orders/**\n        \
             httpVerb: [POST]\n        action: allow\n  ward:\n    audit:\n      fsync: {fsync}\n"
        ),
    )
    .expect("config");

    let ward = ward_binary();
    let (sentry, anchors) = bench_sentry(&ward, dir.path());
    let audit_log = |app_id: &str| dir.path().join(format!("{app_id}-audit.log"));
    let sidecar = |app_id: &str, app_port: Option<u16>| {
        let mut extra = vec!["--audit-log".to_owned(), audit_log(app_id).to_string_lossy().into_owned()];
        if let Some(port) = app_port {
            extra.extend(["--app-port".into(), port.to_string(), "--config".into(), config.to_string_lossy().into()]);
        }
        let args = bench_sidecar_args(app_id, &sentry, &extra);
        WardProc::spawn(
            &ward,
            &args,
            &[("DAPR_TRUST_ANCHORS", &anchors), ("WARD_HOME", &home_s)],
            "ward sidecar ready:",
        )
    };
    let callee = sidecar("callee", Some(app_addr.port()));
    let caller = sidecar("caller", None);
    let url = format!("http://{}/v1.0/invoke/callee/method/orders/1", caller.field("http"));
    let client: Client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build({
            let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
            c.set_nodelay(true);
            c
        });

    println!(
        "soak: {minutes} min at {rate} req/s, mTLS pair with accessControl and audit logs (callee fsync: {fsync}), \
         windows of {} s",
        window.as_secs()
    );
    println!("| window | requests | errors | p50 ms | p99 ms | caller RSS KiB | callee RSS KiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let (mut sent_total, mut errors_total) = (0u64, 0u64);
    runtime.block_on(async {
        for _ in 0..200 {
            let _ = one(&client, &url).await;
        }
        let started = Instant::now();
        let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut index = 0;
        while started.elapsed() < total {
            index += 1;
            let window_started = Instant::now();
            let window_end = (started + window * index).min(started + total);
            let mut tasks = Vec::new();
            while Instant::now() < window_end {
                interval.tick().await;
                let client = client.clone();
                let url = url.clone();
                tasks.push(tokio::spawn(async move { one(&client, &url).await }));
            }
            let sent = tasks.len() as u64;
            let mut latencies = Vec::with_capacity(tasks.len());
            for task in tasks {
                if let Ok(Some(latency)) = task.await {
                    latencies.push(latency);
                }
            }
            let errors = sent - latencies.len() as u64;
            let s = stats(latencies, window_started.elapsed());
            println!(
                "| {index} | {sent} | {errors} | {:.3} | {:.3} | {} | {} |",
                s.p50.as_secs_f64() * 1e3,
                s.p99.as_secs_f64() * 1e3,
                rss_kib(caller.child.id()),
                rss_kib(callee.child.id())
            );
            sent_total += sent;
            errors_total += errors;
        }
    });
    println!(
        "total: {sent_total} requests, {errors_total} errors; the app received {} (warm-up included: 200)",
        received.load(Ordering::Relaxed)
    );
    drop(caller);
    drop(callee);
    for app_id in ["caller", "callee"] {
        let output = std::process::Command::new(&ward).arg("audit").arg("verify").arg(audit_log(app_id)).output();
        let line = output
            .map(|o| format!("exit {} {}", o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).trim()))
            .unwrap_or_else(|err| err.to_string());
        println!("ward audit verify {app_id}-audit.log: {line}");
    }
    drop(sentry);
}
