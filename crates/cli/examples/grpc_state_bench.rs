//! SaveState/GetState through ward's gRPC API (a Rust tonic client, the `dapr` crate's generated types) next to
//! the same operations through the HTTP API, on one sidecar, for `state.in-memory` and `state.sqlite`.
//!
//! Run: `cargo build --release -p ward && cargo run --release -p ward --example grpc_state_bench -- [seconds] [clients]`
//! Starts one `ward sidecar` (target/release/ward; mTLS off: the state API does not cross sidecars), kills it at
//! the end, and prints ops/s and p50/p99 per operation and protocol, and the CPU time per operation of the sidecar
//! and of this process (the clients).

#[path = "common/mod.rs"]
mod bench;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::{KillOnDrop, cpu_ticks, stats, ward_binary};
use bytes::Bytes;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as rt;
use http_body_util::{BodyExt, Full};

#[derive(Default)]
struct Samples {
    save: Vec<Duration>,
    get: Vec<Duration>,
}

fn report(label: &str, latencies: Vec<Duration>, elapsed: Duration) {
    let s = stats(latencies, elapsed);
    println!(
        "{label:<28} {:>8.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
        s.ops_per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

async fn grpc_worker(
    mut client: rt::dapr_client::DaprClient<tonic::transport::Channel>,
    store: String,
    id: usize,
    deadline: Instant,
) -> Samples {
    let mut samples = Samples::default();
    let key = format!("grpc-{id}");
    while Instant::now() < deadline {
        let t = Instant::now();
        let item = common::StateItem { key: key.clone(), value: b"{\"n\":1}".to_vec(), ..Default::default() };
        client.save_state(rt::SaveStateRequest { store_name: store.clone(), states: vec![item] }).await.expect("save");
        samples.save.push(t.elapsed());
        let t = Instant::now();
        let request = rt::GetStateRequest { store_name: store.clone(), key: key.clone(), ..Default::default() };
        client.get_state(request).await.expect("get");
        samples.get.push(t.elapsed());
    }
    samples
}

type HttpClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn http_worker(client: HttpClient, base: String, store: String, id: usize, deadline: Instant) -> Samples {
    let mut samples = Samples::default();
    let key = format!("http-{id}");
    while Instant::now() < deadline {
        let body = format!("[{{\"key\":\"{key}\",\"value\":{{\"n\":1}}}}]");
        let t = Instant::now();
        let request =
            hyper::Request::post(format!("{base}/v1.0/state/{store}")).body(Full::new(Bytes::from(body))).expect("req");
        let response = client.request(request).await.expect("save");
        assert_eq!(response.status(), 204);
        response.into_body().collect().await.expect("body");
        samples.save.push(t.elapsed());
        let t = Instant::now();
        let request =
            hyper::Request::get(format!("{base}/v1.0/state/{store}/{key}")).body(Full::new(Bytes::new())).expect("req");
        let response = client.request(request).await.expect("get");
        response.into_body().collect().await.expect("body");
        samples.get.push(t.elapsed());
    }
    samples
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let ward = ward_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("stores.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: memory\nspec:\n  type: state.in-memory\n  version: v1\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: sqlite\nspec:\n  type: state.sqlite\n  version: v1\n",
    )
    .expect("write");
    let mut child = Command::new(&ward)
        .args([
            "sidecar",
            "--app-id",
            "bench",
            "--dapr-http-port",
            "0",
            "--dapr-grpc-port",
            "0",
            "--dapr-internal-grpc-port",
            "0",
            "--log-level",
            "error",
        ])
        .arg("--resources-path")
        .arg(dir.path())
        .env("WARD_HOME", dir.path().join("home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let sidecar_pid = child.id();
    let _sidecar = KillOnDrop(child);
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("ward sidecar ready:"))
        .expect("ready");
    let field =
        |k: &str| ready.split_whitespace().find_map(|p| p.strip_prefix(&format!("{k}="))).expect("field").to_owned();
    let (http, grpc) = (field("http"), field("grpc"));

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    runtime.block_on(async {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let http_client: HttpClient =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        println!("{clients} clients, {seconds} s per run, save then get on each client's own key");
        for store in ["memory", "sqlite"] {
            for protocol in ["grpc", "http"] {
                let deadline = Instant::now() + Duration::from_secs(seconds);
                let started = Instant::now();
                let (sidecar_before, own_before) = (cpu_ticks(sidecar_pid), cpu_ticks(std::process::id()));
                let mut tasks = Vec::new();
                for id in 0..clients {
                    let store = store.to_owned();
                    if protocol == "grpc" {
                        // One connection per client, as each SDK client opens its own channel.
                        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
                            .expect("endpoint")
                            .tcp_nodelay(true)
                            .connect()
                            .await
                            .expect("connect");
                        let client = rt::dapr_client::DaprClient::new(channel);
                        tasks.push(tokio::spawn(grpc_worker(client, store, id, deadline)));
                    } else {
                        tasks.push(tokio::spawn(http_worker(
                            http_client.clone(),
                            format!("http://{http}"),
                            store,
                            id,
                            deadline,
                        )));
                    }
                }
                let mut all = Samples::default();
                for task in tasks {
                    let s = task.await.expect("worker");
                    all.save.extend(s.save);
                    all.get.extend(s.get);
                }
                let elapsed = started.elapsed();
                // CPU per operation (a save or a get): the sidecar's, and this process's (the clients') beside it,
                // since both share the machine's cores.
                let operations = (all.save.len() + all.get.len()).max(1) as f64;
                let per_op = |ticks: u64| ticks as f64 * 10_000.0 / operations;
                let sidecar_us = per_op(cpu_ticks(sidecar_pid).saturating_sub(sidecar_before));
                let clients_us = per_op(cpu_ticks(std::process::id()).saturating_sub(own_before));
                report(&format!("{store} {protocol} SaveState"), all.save, elapsed);
                report(&format!("{store} {protocol} GetState"), all.get, elapsed);
                println!(
                    "{:<28} sidecar {sidecar_us:.1} µs / op, clients {clients_us:.1} µs / op",
                    format!("{store} {protocol} CPU")
                );
            }
        }
    });
}
