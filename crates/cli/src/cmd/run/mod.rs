//! `ward run`: local development with security on from the first command. It starts an embedded CA (material
//! under `$WARD_HOME/ca`, created on first use) that only signs the identities of this run (a fresh join token
//! per app, never the insecure validator), one `ward sidecar` per app with mTLS on, then the apps with
//! `DAPR_HTTP_PORT`, `DAPR_GRPC_PORT` and `APP_ID` set. Logs are prefixed per process.
//!
//! Shutdown order on Ctrl-C / SIGTERM / `ward stop`: apps, then sidecars, then the CA, each within a bound.

mod runfile;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use ward_identity::TrustDomain;
use ward_sentry::{Ca, JoinTokens, SentryConfig, Validator};

use runfile::AppSpec;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Multi-App Run file, or a directory holding dapr.yaml (or ward.yaml).
    #[arg(short = 'f', long = "run-file")]
    run_file: Option<PathBuf>,
    #[arg(long, conflicts_with = "run_file")]
    app_id: Option<String>,
    #[arg(long)]
    app_port: Option<u16>,
    #[arg(long = "resources-path", alias = "components-path")]
    resources_path: Vec<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    dapr_http_port: Option<u16>,
    #[arg(long)]
    dapr_grpc_port: Option<u16>,
    #[arg(long)]
    dapr_internal_grpc_port: Option<u16>,
    /// Log level of the sidecars.
    #[arg(long)]
    log_level: Option<String>,
    /// The app's command, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    #[arg(short = 'f', long = "run-file")]
    run_file: Option<PathBuf>,
    #[arg(long, conflicts_with = "run_file")]
    app_id: Option<String>,
}

/// Where `ward run` records its pid so `ward stop` can find it.
fn pid_file(key: &str) -> PathBuf {
    super::ward_home().join("run").join(format!("{key}.pid"))
}

fn run_key(run_file: Option<&Path>, app_id: Option<&str>) -> anyhow::Result<String> {
    match (run_file, app_id) {
        (Some(file), _) => {
            let path = runfile::locate(file)?;
            let canonical = path.canonicalize().with_context(|| format!("{}", path.display()))?;
            let digest = canonical
                .to_string_lossy()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
            Ok(format!("file-{digest:016x}"))
        }
        (None, Some(app_id)) => Ok(format!("app-{app_id}")),
        (None, None) => bail!("give -f FILE or --app-id"),
    }
}

pub fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let key = run_key(args.run_file.as_deref(), args.app_id.as_deref())?;
    let path = pid_file(&key);
    let pid = std::fs::read_to_string(&path)
        .with_context(|| format!("no running `ward run` found ({} is missing)", path.display()))?;
    let pid = pid.trim().to_owned();
    signal(&pid, "TERM");
    for _ in 0..300 {
        if !process_alive(&pid) {
            println!("stopped ward run (pid {pid})");
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("ward run (pid {pid}) did not stop within 15s")
}

/// True while the process exists and is not a zombie (a zombie has exited; only its parent has not reaped it).
fn process_alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces or parentheses.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

fn signal(pid: &str, name: &str) {
    // std has no portable signal API and the workspace forbids unsafe; `kill` is everywhere ward runs.
    let _ = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid).stderr(Stdio::null()).status();
}

fn apps_from_args(args: &Args) -> anyhow::Result<(Vec<AppSpec>, Option<PathBuf>)> {
    if let Some(file) = &args.run_file {
        let path = runfile::locate(file)?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        let run = runfile::parse(&path, &text)?;
        println!(
            "== ward run: {} ({} apps)",
            run.name.as_deref().unwrap_or(&path.display().to_string()),
            run.apps.len()
        );
        return Ok((run.apps, Some(path)));
    }
    let app_id = args.app_id.clone().context("give --app-id (or -f FILE)")?;
    let cwd = std::env::current_dir().context("current directory")?;
    Ok((
        vec![AppSpec {
            app_id,
            app_dir: cwd,
            app_port: args.app_port,
            command: args.command.clone(),
            dapr_http_port: args.dapr_http_port,
            dapr_grpc_port: args.dapr_grpc_port,
            dapr_internal_grpc_port: args.dapr_internal_grpc_port,
            metrics_port: None,
            resources_paths: args.resources_path.clone(),
            config: args.config.clone(),
            app_protocol: None,
            api_listen_addresses: None,
            log_level: args.log_level.clone(),
            enable_api_logging: None,
            max_body_size: None,
            app_channel_address: None,
            env: BTreeMap::new(),
        }],
        None,
    ))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// A child process with prefixed output.
struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> Option<String> {
        self.child.id().map(|id| id.to_string())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if let Some(pid) = self.pid() {
            signal(&pid, "TERM");
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.kill().await;
                self.child.wait().await.ok()
            }
        }
    }
}

fn pump(
    name: String,
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ready: Option<tokio::sync::mpsc::Sender<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(tx) = &ready
                && line.starts_with("ward sidecar ready:")
            {
                // ward run prints its own, friendlier line for this.
                let _ = tx.send(line.clone()).await;
                continue;
            }
            println!("{name} {line}");
        }
    });
}

struct Running {
    app: AppSpec,
    sidecar: Proc,
    process: Option<Proc>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (apps, run_file) = apps_from_args(&args)?;
    let key = run_key(run_file.as_deref(), apps.first().map(|a| a.app_id.as_str()).filter(|_| run_file.is_none()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_apps(apps, key))
}

async fn run_apps(apps: Vec<AppSpec>, key: String) -> anyhow::Result<ExitCode> {
    let home = super::ward_home();
    let run_dir = home.join("run").join(&key);
    ward_sentry::material::create_private_dir(&run_dir)?;

    // One join token per app: the CA signs exactly these identities and nothing else.
    let mut tokens_text = String::new();
    let mut token_files = BTreeMap::new();
    for app in &apps {
        let token = random_token();
        tokens_text.push_str(&format!("default/{} {token}\n", app.app_id));
        let file = run_dir.join(format!("{}.token", app.app_id));
        ward_sentry::material::write_private(&file, token.as_bytes())?;
        token_files.insert(app.app_id.clone(), file);
    }
    let tokens = JoinTokens::parse(&tokens_text)
        .map_err(|(line, message)| anyhow::anyhow!("join tokens line {line}: {message}"))?;

    let ca = Arc::new(Ca::new(
        SentryConfig {
            issuer_dir: home.join("ca"),
            trust_domain: TrustDomain::new("public")?,
            namespace: "default".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            healthz_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workload_ttl: Duration::from_secs(24 * 3600),
            allowed_clock_skew: Duration::from_secs(15 * 60),
            generated_ca_ttl: Duration::from_secs(365 * 24 * 3600),
            production: false,
        },
        Validator::JoinToken(tokens),
    )?);
    let anchors = ca.roots_pem();
    let (ca_stop_tx, ca_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let ca_task = tokio::spawn(ward_sentry::run(
        ca,
        async move {
            let _ = ca_stop_rx.await;
        },
        move |addrs| {
            let _ = ready_tx.send(addrs);
        },
    ));
    let ca_addrs = tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .context("the embedded CA did not start")?
        .context("the embedded CA did not start")?;
    println!(
        "== ward run: CA for trust domain \"public\" at {} (material in {})",
        ca_addrs.grpc,
        home.join("ca").display()
    );

    let exe = std::env::current_exe().context("locating the ward binary")?;
    let mut running: Vec<Running> = Vec::new();
    let start_result: anyhow::Result<()> = async {
        for app in &apps {
            let sidecar =
                start_sidecar(&exe, app, &ca_addrs.grpc.to_string(), &anchors, &token_files[&app.app_id], &home)
                    .await?;
            let (sidecar, ports) = sidecar;
            running.push(Running { app: app.clone(), sidecar, process: None });
            if !app.command.is_empty() {
                let process = start_app(app, &ports)?;
                if let Some(last) = running.last_mut() {
                    last.process = Some(process);
                }
            }
        }
        Ok(())
    }
    .await;

    let pid_path = pid_file(&key);
    let _ = std::fs::write(&pid_path, std::process::id().to_string());
    let mut failed = false;
    if let Err(err) = &start_result {
        eprintln!("ward run: {err:#}");
        failed = true;
    } else {
        failed |= supervise(&mut running).await;
    }

    // Shutdown: apps, then sidecars, then the CA.
    for r in running.iter_mut() {
        if let Some(process) = r.process.as_mut()
            && let Some(status) = process.stop(Duration::from_secs(5)).await
        {
            println!("== {}: app stopped ({status})", r.app.app_id);
        }
    }
    for r in running.iter_mut() {
        r.sidecar.stop(Duration::from_secs(10)).await;
    }
    let _ = ca_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), ca_task).await;
    let _ = std::fs::remove_file(&pid_path);
    let _ = std::fs::remove_dir_all(&run_dir);
    println!("== ward run: stopped");
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

struct Ports {
    http: u16,
    grpc: u16,
}

async fn start_sidecar(
    exe: &Path,
    app: &AppSpec,
    sentry: &str,
    anchors: &str,
    token_file: &Path,
    home: &Path,
) -> anyhow::Result<(Proc, Ports)> {
    let http = match app.dapr_http_port {
        Some(p) => p,
        None => free_port()?,
    };
    let grpc = match app.dapr_grpc_port {
        Some(p) => p,
        None => free_port()?,
    };
    let internal = match app.dapr_internal_grpc_port {
        Some(p) => p,
        None => free_port()?,
    };
    let mut command = Command::new(exe);
    command
        .arg("sidecar")
        .args(["--app-id", &app.app_id])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .args(["--enable-mtls", "--sentry-address", sentry]);
    if let Some(port) = app.app_port {
        command.args(["--app-port", &port.to_string()]);
    }
    for path in &app.resources_paths {
        command.arg("--resources-path").arg(path);
    }
    if let Some(config) = &app.config {
        command.arg("--config").arg(config);
    }
    // Audit events go to a file per app (hash-chained; check with `ward audit verify`), not into the console.
    let audit_dir = home.join("audit");
    std::fs::create_dir_all(&audit_dir).with_context(|| format!("{}", audit_dir.display()))?;
    command.arg("--audit-log").arg(audit_dir.join(format!("{}.log", app.app_id)));
    // The console shows the apps; sidecars speak up for warnings and errors unless logLevel says otherwise.
    if app.log_level.is_none() {
        command.args(["--log-level", "warn"]);
    }
    for (flag, value) in [
        ("--app-protocol", &app.app_protocol),
        ("--dapr-listen-addresses", &app.api_listen_addresses),
        ("--log-level", &app.log_level),
        ("--max-body-size", &app.max_body_size),
        ("--app-channel-address", &app.app_channel_address),
    ] {
        if let Some(value) = value {
            command.args([flag, value]);
        }
    }
    if let Some(metrics) = app.metrics_port {
        command.args(["--metrics-port", &metrics.to_string()]);
    }
    if let Some(enabled) = app.enable_api_logging {
        command.arg(format!("--enable-api-logging={enabled}"));
    }
    command
        .env("DAPR_TRUST_ANCHORS", anchors)
        .env("DAPR_SENTRY_TOKEN_FILE", token_file)
        .env("NAMESPACE", "default")
        .env("WARD_HOME", home)
        .env_remove("DAPR_API_TOKEN")
        .env_remove("APP_API_TOKEN");
    // The API tokens of an app are its sidecar's too: the sidecar enforces what the app sends.
    for key in ["DAPR_API_TOKEN", "APP_API_TOKEN"] {
        if let Some(value) = app.env.get(key) {
            command.env(key, value);
        }
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().with_context(|| format!("starting the sidecar of {}", app.app_id))?;
    let name = format!("[{} sidecar]", app.app_id);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    if let Some(out) = child.stdout.take() {
        pump(name.clone(), out, Some(tx));
    }
    if let Some(err) = child.stderr.take() {
        pump(name.clone(), err, None);
    }
    let mut proc = Proc { child };
    let ready = tokio::select! {
        line = rx.recv() => line,
        _ = tokio::time::sleep(Duration::from_secs(30)) => None,
        status = proc.child.wait() => {
            bail!("the sidecar of {} exited during start-up ({})", app.app_id, status.map(|s| s.to_string()).unwrap_or_default())
        }
    };
    if ready.is_none() {
        proc.stop(Duration::from_secs(1)).await;
        bail!("the sidecar of {} did not become ready within 30s", app.app_id);
    }
    println!(
        "== {}: sidecar ready: HTTP API http://127.0.0.1:{http}, internal mTLS 127.0.0.1:{internal}, identity spiffe://public/ns/default/{}{}, audit {}",
        app.app_id,
        app.app_id,
        app.app_port.map(|p| format!(", app on 127.0.0.1:{p}")).unwrap_or_default(),
        home.join("audit").join(format!("{}.log", app.app_id)).display()
    );
    Ok((proc, Ports { http, grpc }))
}

fn start_app(app: &AppSpec, ports: &Ports) -> anyhow::Result<Proc> {
    let Some((program, rest)) = app.command.split_first() else { bail!("{}: empty command", app.app_id) };
    let mut command = Command::new(program);
    command
        .args(rest)
        .current_dir(&app.app_dir)
        .envs(&app.env)
        .env("DAPR_HTTP_PORT", ports.http.to_string())
        .env("DAPR_GRPC_PORT", ports.grpc.to_string())
        .env("DAPR_HTTP_ENDPOINT", format!("http://127.0.0.1:{}", ports.http))
        .env("APP_ID", &app.app_id)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(port) = app.app_port {
        command.env("APP_PORT", port.to_string());
    }
    let mut child = command.spawn().with_context(|| format!("starting {}: {}", app.app_id, app.command.join(" ")))?;
    let name = format!("== APP - {} ==", app.app_id);
    if let Some(out) = child.stdout.take() {
        pump(name.clone(), out, None);
    }
    if let Some(err) = child.stderr.take() {
        pump(name.clone(), err, None);
    }
    println!("== {}: started `{}` in {}", app.app_id, app.command.join(" "), app.app_dir.display());
    Ok(Proc { child })
}

/// Waits for a signal, or for apps to exit. Returns true if an app failed.
async fn supervise(running: &mut [Running]) -> bool {
    let mut failed = false;
    let mut shutdown = std::pin::pin!(super::sentry::shutdown_signal());
    loop {
        let mut any_alive = false;
        for r in running.iter_mut() {
            if let Some(process) = r.process.as_mut() {
                match process.child.try_wait() {
                    Ok(Some(status)) => {
                        println!("== {} exited with {status}; stopping its sidecar", r.app.app_id);
                        failed |= !status.success();
                        r.process = None;
                        r.sidecar.stop(Duration::from_secs(10)).await;
                    }
                    Ok(None) => any_alive = true,
                    Err(_) => {}
                }
            } else if r.app.command.is_empty() {
                // A sidecar without an app runs until it is stopped.
                match r.sidecar.child.try_wait() {
                    Ok(Some(status)) => {
                        println!("== the sidecar of {} exited with {status}", r.app.app_id);
                        failed |= !status.success();
                    }
                    _ => any_alive = true,
                }
            }
            if let Ok(Some(status)) = r.sidecar.child.try_wait()
                && r.process.is_some()
            {
                println!("== the sidecar of {} exited with {status}; stopping the app", r.app.app_id);
                failed = true;
                if let Some(mut process) = r.process.take() {
                    process.stop(Duration::from_secs(5)).await;
                }
            }
        }
        if !any_alive {
            return failed;
        }
        tokio::select! {
            _ = &mut shutdown => {
                println!("== ward run: stopping (apps, then sidecars, then the CA)");
                return failed;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
