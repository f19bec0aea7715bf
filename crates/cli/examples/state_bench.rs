//! State API throughput and latency through a real `ward sidecar`, for `state.in-memory`, `state.sqlite` and
//! `state.redis`, with a fixed number of concurrent clients each doing save-then-get on its own keys. For Redis,
//! also runs `redis-benchmark -t set,get -n 20000 -q` against the same server, to show what the sidecar adds.
//!
//! Run: `cargo build --release -p ward && cargo run --release -p ward --example state_bench -- [seconds] [clients]`
//! It starts `redis-server` (must be on PATH) and one `ward sidecar` (from target/release/ward, mTLS off: the state
//! API does not cross sidecars), and kills both at the end.

#[path = "common/mod.rs"]
mod bench;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{KillOnDrop, Stats, stats, ward_binary};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn timed(client: &Client, request: hyper::Request<Full<Bytes>>, want: u16) -> Duration {
    let t = Instant::now();
    let response = client.request(request).await.expect("request");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    assert_eq!(status, want, "unexpected status");
    t.elapsed()
}

/// `clients` tasks, each alternating save and get on its own 100 keys, for `seconds`.
async fn run(client: &Client, base: &str, store: &str, clients: usize, seconds: u64) -> (Stats, Stats) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let save_url = format!("{base}/v1.0/state/{store}");
        let get_base = format!("{base}/v1.0/state/{store}");
        tasks.push(tokio::spawn(async move {
            let (mut saves, mut gets) = (Vec::new(), Vec::new());
            let mut i = 0u64;
            while Instant::now() < deadline {
                let key = format!("c{c}-k{}", i % 100);
                let body = format!("[{{\"key\":\"{key}\",\"value\":{{\"order\":{i},\"item\":\"widget\"}}}}]");
                let save = hyper::Request::post(&save_url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("request");
                saves.push(timed(&client, save, 204).await);
                let get = hyper::Request::get(format!("{get_base}/{key}")).body(Full::default()).expect("request");
                gets.push(timed(&client, get, 200).await);
                i += 1;
            }
            (saves, gets)
        }));
    }
    let (mut saves, mut gets) = (Vec::new(), Vec::new());
    for task in tasks {
        let (s, g) = task.await.expect("client task");
        saves.extend(s);
        gets.extend(g);
    }
    let elapsed = started.elapsed();
    (stats(saves, elapsed), stats(gets, elapsed))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let clients: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(16);
    let dir = tempfile::tempdir().expect("tempdir");

    let redis_port = free_port();
    let _redis = KillOnDrop(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let res = dir.path().join("res");
    std::fs::create_dir_all(&res).expect("mkdir");
    let component = |name: &str, ty: &str, md: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\nspec:\n  type: {ty}\n  \
             version: v1\n  metadata: [{md}]\n"
        )
    };
    std::fs::write(res.join("a.yaml"), component("memory", "state.in-memory", "")).expect("write");
    std::fs::write(res.join("b.yaml"), component("sqlite", "state.sqlite", "")).expect("write");
    let redis_md = format!("{{name: redisHost, value: \"127.0.0.1:{redis_port}\"}}");
    std::fs::write(res.join("c.yaml"), component("redis", "state.redis", &redis_md)).expect("write");

    let home = dir.path().join("home");
    let res_arg = res.to_str().expect("utf-8 path");
    let mut child = Command::new(ward_binary())
        .args([
            "sidecar",
            "--app-id",
            "bench",
            "--dapr-http-port",
            "0",
            "--dapr-internal-grpc-port",
            "0",
            "--dapr-grpc-port",
            "0",
        ])
        .args(["--resources-path", res_arg, "--log-level", "warn"])
        .env("WARD_HOME", &home)
        .env_remove("DAPR_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ward");
    let stdout = child.stdout.take().expect("stdout");
    let sidecar = KillOnDrop(child);
    let mut lines = BufReader::new(stdout).lines();
    let ready = loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("ward sidecar ready:") => break line,
            Some(_) => continue,
            None => panic!("ward sidecar exited before it was ready"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let http = ready
        .split_whitespace()
        .find_map(|p| p.strip_prefix("http="))
        .and_then(|h| h.split(',').next())
        .expect("http address")
        .to_owned();
    let base = format!("http://{http}");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let client: Arc<Client> = Arc::new({
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(clients)
            .build(connector)
    });
    println!("state API through ward sidecar ({clients} concurrent clients, {seconds}s per store, save+get loop)");
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "store", "save op/s", "save p50", "save p99", "get op/s", "get p50", "get p99"
    );
    for store in ["memory", "sqlite", "redis"] {
        let (save, get) = runtime.block_on(run(&client, &base, store, clients, seconds));
        println!(
            "{store:<8} {:>10.0} {:>10.2?} {:>10.2?} {:>10.0} {:>10.2?} {:>10.2?}",
            save.ops_per_sec, save.p50, save.p99, get.ops_per_sec, get.p50, get.p99
        );
    }
    drop(runtime);
    drop(sidecar);

    println!("\nredis-benchmark -t set,get -n 20000 -q (same server, direct, 50 clients by default):");
    match Command::new("redis-benchmark")
        .args(["-p", &redis_port.to_string(), "-t", "set,get", "-n", "20000", "-q"])
        .output()
    {
        Ok(out) => {
            for line in
                String::from_utf8_lossy(&out.stdout).split(['\r', '\n']).filter(|l| l.contains("requests per second"))
            {
                println!("  {}", line.trim());
            }
        }
        Err(err) => println!("  redis-benchmark not available: {err}"),
    }
}
