//! Scaling benchmark (issue 25): a ward sidecar pair (sentry, mTLS, accessControl, audit) on loopback, one
//! dimension at a time raised from small to large, printing one Markdown table per dimension:
//!
//! - policies (1 → 10,000 policies of 3 operations; the caller's policy last) and operations (one policy with
//!   1 → 10,000 operations; the matching one last): callee start time and RSS, added p50/p99 at a fixed rate,
//!   max req/s, CPU per request (caller + callee);
//! - registered apps (2 → 10,000 rows in the name-resolution registry): the same figures;
//! - client connections (16 → 1,024 keep-alive connections to the caller's API, the fixed rate spread over
//!   them): added p50/p99 and the caller's anonymous RSS per connection;
//! - body sizes (1 KiB → 8 MiB POSTs, closed loop): p50/p99, req/s and MB/s, direct and through the pair;
//! - sentry: `SignCertificate` per second and p50/p99 with 1 → 128 concurrent clients.
//!
//! "Added" is the pair's latency minus the same app called directly at the same rate. Read the cost of one
//! dimension against its first row: where the work per request does not change, the rows should be flat.
//!
//! Run (release numbers are the ones to publish; a debug build shows the shape only):
//! `cargo build --release -p ward --examples && target/release/examples/scale_bench [--seconds 3] [--rate 500]
//!  [--quick] [--only policies,operations,apps,connections,bodies,sentry] [--ward path/to/ward]`
//! Bounded: every phase runs `--seconds`, every process it starts is killed when it ends, loopback only. Not part
//! of `cargo test`.

#[path = "common/mod.rs"]
mod bench;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bench::{Stats, WardProc, bench_sidecar_args, stats};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

struct Options {
    ward: PathBuf,
    seconds: u64,
    rate: u64,
    quick: bool,
    only: Option<Vec<String>>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options { ward: PathBuf::new(), seconds: 3, rate: 500, quick: false, only: None };
        let mut ward = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--seconds" => options.seconds = args.next().and_then(|v| v.parse().ok()).expect("--seconds N"),
                "--rate" => options.rate = args.next().and_then(|v| v.parse().ok()).expect("--rate N"),
                "--quick" => options.quick = true,
                "--only" => {
                    options.only = Some(args.next().expect("--only a,b").split(',').map(str::to_owned).collect())
                }
                "--ward" => ward = Some(PathBuf::from(args.next().expect("--ward PATH"))),
                other => panic!("unknown argument {other:?}"),
            }
        }
        options.ward = ward.unwrap_or_else(bench::ward_binary);
        options
    }

    fn wants(&self, dimension: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|d| d == dimension))
    }

    fn steps(&self, full: &[usize]) -> Vec<usize> {
        match (self.quick, full) {
            (true, [first, .., last]) => vec![*first, *last],
            _ => full.to_vec(),
        }
    }
}

impl WardProc {
    fn rss_kib(&self) -> u64 {
        proc_status(self.child.id(), "VmRSS:")
    }

    /// Anonymous resident memory: what connections and requests hold. Code pages come and go with what runs (the
    /// sidecar drops them after start), so a per-connection cost is measured on this.
    fn anonymous_kib(&self) -> u64 {
        proc_status(self.child.id(), "RssAnon:")
    }

    /// User + system CPU time so far, in clock ticks (1/100 s on Linux).
    fn cpu_ticks(&self) -> u64 {
        bench::cpu_ticks(self.child.id())
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client(max_idle: usize) -> Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

async fn one(client: &Client, url: &str, body: &Bytes) -> Duration {
    let started = Instant::now();
    let request = hyper::Request::post(url).body(Full::new(body.clone())).expect("request");
    let response = client.request(request).await.expect("response");
    assert!(response.status().is_success(), "{url}: status {}", response.status());
    response.into_body().collect().await.expect("body");
    started.elapsed()
}

/// Open loop: `rate` requests/s for `seconds`.
async fn fixed_rate(client: &Client, url: &str, body: &Bytes, rate: u64, seconds: u64) -> Stats {
    let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..rate * seconds {
        interval.tick().await;
        let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move { one(&client, &url, &body).await }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.expect("task"));
    }
    stats(latencies, started.elapsed())
}

/// Closed loop: `workers` requests in flight for `seconds`.
async fn closed_loop(client: &Client, url: &str, body: &Bytes, workers: usize, seconds: u64) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    latencies.push(one(&client, &url, &body).await);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    stats(latencies, started.elapsed())
}

/// `connections` keep-alive HTTP/1.1 connections, each its own task sending at `rate / connections` per second.
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Returns the statistics and the still-open connections (dropping them closes them).
async fn over_connections(addr: &str, path: &str, connections: usize, rate: u64, seconds: u64) -> (Stats, Vec<Sender>) {
    let per_connection = Duration::from_secs_f64(connections as f64 / rate.max(1) as f64);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let ready = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|n| {
            let (addr, path, ready) = (addr.to_owned(), path.to_owned(), ready.clone());
            tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
                let _ = tcp.set_nodelay(true);
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.expect("handshake");
                tokio::spawn(conn);
                ready.fetch_add(1, Ordering::SeqCst);
                // Spread the connections over the first period so the rate is even.
                tokio::time::sleep(per_connection.mul_f64(n as f64 / connections as f64)).await;
                let mut latencies = Vec::new();
                let mut next = Instant::now();
                while next < deadline {
                    tokio::time::sleep_until(next.into()).await;
                    let request = hyper::Request::post(format!("http://{addr}{path}"))
                        .header("host", &addr)
                        .body(Full::new(Bytes::from_static(b"{\"order\":1}")))
                        .expect("request");
                    let t = Instant::now();
                    let response = sender.send_request(request).await.expect("response");
                    response.into_body().collect().await.expect("body");
                    latencies.push(t.elapsed());
                    next += per_connection;
                }
                (latencies, sender)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut senders = Vec::new();
    for task in tasks {
        let (l, sender) = task.await.expect("task");
        latencies.extend(l);
        senders.push(sender);
    }
    (stats(latencies, started.elapsed()), senders)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Env {
    opts: Options,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    app: std::net::SocketAddr,
    sentry: WardProc,
    anchors: String,
}

/// Callee configuration for a dimension point.
enum CalleeConfig {
    /// `n` policies of 3 operations; the caller's is the last.
    Policies(usize),
    /// One policy for the caller with `n` operations; the one called is the last.
    Operations(usize),
}

impl Env {
    fn start(opts: Options) -> Env {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let app = runtime.block_on(echo_app());
        let ca = dir.path().join("ca");
        let sentry = WardProc::spawn(
            &opts.ward,
            &[
                "sentry".into(),
                "--issuer-credentials".into(),
                ca.to_string_lossy().into_owned(),
                "--port".into(),
                "0".into(),
                "--healthz-port".into(),
                "0".into(),
                "--log-level".into(),
                "warn".into(),
            ],
            &[],
            "ward sentry ready:",
        );
        let anchors = std::fs::read_to_string(ca.join("ca.crt")).expect("anchors");
        Env { opts, dir, runtime, app, sentry, anchors }
    }

    fn home(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        std::fs::create_dir_all(&home).expect("home");
        home
    }

    fn sidecar(&self, app_id: &str, home: &Path, app_port: Option<u16>, config: Option<&Path>) -> WardProc {
        self.try_sidecar(app_id, home, app_port, config).unwrap_or_else(|err| panic!("{app_id}: {err}"))
    }

    fn try_sidecar(
        &self,
        app_id: &str,
        home: &Path,
        app_port: Option<u16>,
        config: Option<&Path>,
    ) -> Result<WardProc, String> {
        let extra = ["--max-body-size", "16Mi", "--max-connections", "8192"].map(String::from);
        let mut args = bench_sidecar_args(app_id, &self.sentry, &extra);
        let audit = self.dir.path().join(format!("{app_id}-{}.audit", home.file_name().unwrap_or_default().display()));
        args.extend(["--audit-log".into(), audit.to_string_lossy().into_owned()]);
        if let Some(port) = app_port {
            args.extend(["--app-port".into(), port.to_string()]);
        }
        if let Some(config) = config {
            args.extend(["--config".into(), config.to_string_lossy().into_owned()]);
        }
        let home = home.to_string_lossy().into_owned();
        WardProc::try_spawn(
            &self.opts.ward,
            &args,
            &[("DAPR_TRUST_ANCHORS", &self.anchors), ("WARD_HOME", &home), ("WARD_MAX_CONFIG_FILE_BYTES", "64Mi")],
            "ward sidecar ready:",
        )
    }

    fn write_config(&self, name: &str, config: &CalleeConfig) -> PathBuf {
        let mut yaml = String::from(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: callee\nspec:\n  accessControl:\n    \
             defaultAction: deny\n    trustDomain: public\n    policies:\n",
        );
        let policy = |yaml: &mut String, app_id: &str| {
            yaml.push_str(&format!(
                "    - appId: {app_id}\n      namespace: default\n      trustDomain: public\n      defaultAction: deny\n      \
                 operations:\n"
            ));
        };
        match *config {
            CalleeConfig::Policies(n) => {
                for i in 0..n {
                    policy(&mut yaml, &if i + 1 == n { "caller".to_owned() } else { format!("app-{i}") });
                    yaml.push_str(
                        "      - {name: /admin/**, httpVerb: ['*'], action: deny}\n      \
                         - {name: /stock/*, httpVerb: [GET, POST], action: allow}\n      \
                         - {name: /orders, httpVerb: [POST], action: allow}\n",
                    );
                }
            }
            CalleeConfig::Operations(n) => {
                policy(&mut yaml, "caller");
                for i in 0..n.saturating_sub(1) {
                    yaml.push_str(&format!("      - {{name: /op{i}/x, httpVerb: [POST], action: allow}}\n"));
                }
                yaml.push_str("      - {name: /orders, httpVerb: [POST], action: allow}\n");
            }
        }
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("config");
        path
    }
}

async fn echo_app() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    // Read the whole body, answer a small one: the cost measured is the request's way in.
                    let body = req.into_body().collect().await.map(|c| c.to_bytes().len()).unwrap_or_default();
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body.to_string()))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// One row of the policies / operations / registered-apps tables.
fn pair_row(env: &Env, label: &str, config: Option<&CalleeConfig>, registered: usize, direct: &Stats) -> String {
    let home = env.home(&format!("home-{label}"));
    let _rows = (registered > 2).then(|| env.runtime.block_on(register_fake_apps(&home, registered - 2)));
    let config = config.map(|c| env.write_config(label, c));
    let callee = match env.try_sidecar("callee", &home, Some(env.app.port()), config.as_deref()) {
        Ok(callee) => callee,
        Err(err) => return format!("| {label} | does not start: {err} | | | | |"),
    };
    let caller = env.sidecar("caller", &home, None, None);
    let url = format!("http://{}/v1.0/invoke/callee/method/orders", caller.field("http"));
    let body = Bytes::from_static(b"{\"order\":1}");
    let (fixed, max, cpu_us) = env.runtime.block_on(async {
        let client = client(64);
        for _ in 0..100 {
            one(&client, &url, &body).await;
        }
        let fixed = fixed_rate(&client, &url, &body, env.opts.rate, env.opts.seconds).await;
        let ticks = caller.cpu_ticks() + callee.cpu_ticks();
        let max = closed_loop(&client, &url, &body, 16, env.opts.seconds).await;
        let requests = max.ops_per_sec * env.opts.seconds as f64;
        let cpu_us = (caller.cpu_ticks() + callee.cpu_ticks() - ticks) as f64 * 10_000.0 / requests.max(1.0);
        (fixed, max, cpu_us)
    });
    format!(
        "| {label} | {} ms | {:.1} MB | +{:.3} / +{:.3} ms | {:.0} | {cpu_us:.0} µs |",
        callee.field("elapsed-ms"),
        callee.rss_kib() as f64 / 1024.0,
        ms(fixed.p50) - ms(direct.p50),
        ms(fixed.p99) - ms(direct.p99),
        max.ops_per_sec,
    )
}

/// Rows in the registry next to the two real sidecars, fresh for the whole row (dropping them deletes them).
async fn register_fake_apps(home: &Path, count: usize) -> Vec<ward_components::nameresolution::Registration> {
    let mut options = ward_components::nameresolution::RegistryOptions::new(
        home.join("nameresolution.db").to_string_lossy().into_owned(),
    );
    options.update_interval = Duration::from_secs(3600);
    options.cleanup_interval = None;
    let registry = ward_components::nameresolution::SqliteRegistry::open(options).await.expect("registry");
    let mut rows = Vec::with_capacity(count);
    for n in 0..count {
        rows.push(
            registry
                .register(&format!("app-{n}"), "default", &format!("127.0.0.1:{}", 20000 + n % 1000))
                .await
                .expect("register"),
        );
    }
    rows
}

fn main() {
    let opts = Options::parse();
    // Named by its path: a debug build shows the shape of each table, only a release build the numbers to publish.
    let build = if opts.ward.to_string_lossy().contains("debug") { "a DEBUG build: shape only" } else { "release" };
    println!(
        "# ward scale benchmark: {} ({build}), {} s per phase, fixed rate {} req/s\n",
        opts.ward.display(),
        opts.seconds,
        opts.rate
    );
    let env = Env::start(opts);
    let direct_url = format!("http://{}/orders", env.app);
    let small = Bytes::from_static(b"{\"order\":1}");
    let direct = env.runtime.block_on(async {
        let client = client(64);
        for _ in 0..100 {
            one(&client, &direct_url, &small).await;
        }
        fixed_rate(&client, &direct_url, &small, env.opts.rate, env.opts.seconds).await
    });
    println!("Direct call at {} req/s: p50 {:.3} ms, p99 {:.3} ms\n", env.opts.rate, ms(direct.p50), ms(direct.p99));
    let header = "| callee start | callee RSS | added p50 / p99 | max req/s (16 workers) | CPU per request (both sidecars) |\n|---|---|---|---|---|---|";

    if env.opts.wants("policies") {
        println!("## Policies (3 operations each; the caller's last)\n\n| policies {header}");
        for n in env.opts.steps(&[1, 100, 1_000, 10_000]) {
            println!("{}", pair_row(&env, &n.to_string(), Some(&CalleeConfig::Policies(n)), 2, &direct));
        }
        println!();
    }
    if env.opts.wants("operations") {
        println!("## Operations (one policy; the operation called is the last)\n\n| operations {header}");
        for n in env.opts.steps(&[1, 100, 1_000, 10_000]) {
            println!("{}", pair_row(&env, &format!("ops{n}"), Some(&CalleeConfig::Operations(n)), 2, &direct));
        }
        println!();
    }
    if env.opts.wants("apps") {
        println!("## Registered apps (rows in the name-resolution registry)\n\n| registered apps {header}");
        for n in env.opts.steps(&[2, 100, 1_000, 10_000]) {
            println!("{}", pair_row(&env, &format!("apps{n}"), None, n, &direct));
        }
        println!();
    }
    if env.opts.wants("connections") {
        connections(&env, &direct);
    }
    if env.opts.wants("bodies") {
        bodies(&env);
    }
    if env.opts.wants("sentry") {
        sentry(&env);
    }
}

fn connections(env: &Env, direct: &Stats) {
    println!("## Client connections (keep-alive, to the caller's API; the fixed rate spread over them)\n");
    println!(
        "| connections | added p50 / p99 | caller RSS before → with the connections | per connection (anonymous) |\n|---|---|---|---|"
    );
    for n in env.opts.steps(&[16, 64, 256, 1_024]) {
        let home = env.home(&format!("home-conn{n}"));
        let callee = env.sidecar("callee", &home, Some(env.app.port()), None);
        let caller = env.sidecar("caller", &home, None, None);
        let addr = caller.field("http");
        let (before, anonymous_before) = env.runtime.block_on(async {
            let client = client(4);
            let url = format!("http://{addr}/v1.0/invoke/callee/method/orders");
            for _ in 0..100 {
                one(&client, &url, &Bytes::from_static(b"{}")).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            (caller.rss_kib(), caller.anonymous_kib())
        });
        let (stats, open) = env.runtime.block_on(over_connections(
            &addr,
            "/v1.0/invoke/callee/method/orders",
            n,
            env.opts.rate,
            env.opts.seconds,
        ));
        std::thread::sleep(Duration::from_millis(300));
        let with = caller.rss_kib();
        let anonymous_with = caller.anonymous_kib();
        println!(
            "| {n} | +{:.3} / +{:.3} ms | {:.1} → {:.1} MB | {:.1} KiB |",
            ms(stats.p50) - ms(direct.p50),
            ms(stats.p99) - ms(direct.p99),
            before as f64 / 1024.0,
            with as f64 / 1024.0,
            (anonymous_with.saturating_sub(anonymous_before)) as f64 / n as f64
        );
        drop(open);
        drop((caller, callee));
    }
    println!();
}

fn bodies(env: &Env) {
    println!("## Body sizes (POST, 4 requests in flight)\n");
    println!(
        "| body | direct p50 / p99 | via the pair p50 / p99 | via the pair req/s | MB/s | ratio to direct |\n|---|---|---|---|---|---|"
    );
    let home = env.home("home-bodies");
    let callee = env.sidecar("callee", &home, Some(env.app.port()), None);
    let caller = env.sidecar("caller", &home, None, None);
    let direct_url = format!("http://{}/orders", env.app);
    let url = format!("http://{}/v1.0/invoke/callee/method/orders", caller.field("http"));
    for (label, size) in [("1 KiB", 1024), ("64 KiB", 64 * 1024), ("1 MiB", 1 << 20), ("8 MiB", 8 << 20)] {
        if env.opts.quick && (size == 64 * 1024 || size == 1 << 20) {
            continue;
        }
        let body = Bytes::from(vec![b'x'; size]);
        let (d, m) = env.runtime.block_on(async {
            let client = client(8);
            one(&client, &url, &body).await;
            let d = closed_loop(&client, &direct_url, &body, 4, env.opts.seconds).await;
            let m = closed_loop(&client, &url, &body, 4, env.opts.seconds).await;
            (d, m)
        });
        println!(
            "| {label} | {:.3} / {:.3} ms | {:.3} / {:.3} ms | {:.0} | {:.1} | {:.2} |",
            ms(d.p50),
            ms(d.p99),
            ms(m.p50),
            ms(m.p99),
            m.ops_per_sec,
            m.ops_per_sec * size as f64 / 1e6,
            m.ops_per_sec / d.ops_per_sec
        );
    }
    drop((caller, callee));
    println!();
}

fn sentry(env: &Env) {
    use rcgen::{CertificateParams, KeyPair};
    use ward_identity::{SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};
    use ward_sentry::proto::SignCertificateRequest;
    use ward_sentry::{SentryClient, SentryClientConfig};

    println!("## Sentry signing (`SignCertificate` over TLS gRPC, CSRs generated beforehand)\n");
    println!("| concurrent clients | CSRs/s | p50 / p99 | sentry RSS after |\n|---|---|---|---|");
    let td = TrustDomain::new("public").expect("td");
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..64)
            .map(|_| {
                let key = KeyPair::generate().expect("key");
                CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem").into_bytes()
            })
            .collect(),
    );
    for concurrency in env.opts.steps(&[1, 8, 32, 128]) {
        let stats = env.runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(env.opts.seconds);
            let started = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|worker| {
                    // One client (one connection) per worker, as separate sidecars would have.
                    let client = SentryClient::new(SentryClientConfig {
                        address: env.sentry.field("grpc"),
                        sentry_id: SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").expect("id"),
                        bundle: TrustBundleHandle::new(
                            TrustBundle::from_pem(td.clone(), env.anchors.as_bytes()).expect("bundle"),
                        ),
                        app_id: format!("bench-{worker}"),
                        namespace: "default".into(),
                        trust_domain: td.clone(),
                        token_file: None,
                        skew: Duration::from_secs(60),
                        kubernetes: false,
                        sentry_trust: None,
                    })
                    .expect("client");
                    let csrs = csrs.clone();
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut n = worker;
                        while Instant::now() < deadline {
                            let request = SignCertificateRequest {
                                id: format!("bench-{worker}"),
                                namespace: "default".into(),
                                certificate_signing_request: csrs[n % csrs.len()].clone(),
                                ..Default::default()
                            };
                            let t = Instant::now();
                            client.grpc().sign_certificate(request).await.expect("signed");
                            latencies.push(t.elapsed());
                            n += 1;
                        }
                        latencies
                    })
                })
                .collect();
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.expect("worker"));
            }
            stats(latencies, started.elapsed())
        });
        println!(
            "| {concurrency} | {:.0} | {:.2} / {:.2} ms | {:.1} MB |",
            stats.ops_per_sec,
            ms(stats.p50),
            ms(stats.p99),
            env.sentry.rss_kib() as f64 / 1024.0
        );
    }
    println!();
}
