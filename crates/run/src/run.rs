//! The run itself: embedded CA, sidecars, apps, supervision and ordered shutdown; and `ward stop`, which finds a
//! run by its pid file and signals it.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use ward_identity::TrustDomain;
use ward_sentry::{Ca, JoinTokens, SentryConfig, Validator};

use crate::RunError;
use crate::process::{Proc, process_alive, pump, signal};
use crate::runfile::{self, AppSpec};
use crate::token::{self, DAPR_API_TOKEN};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub apps: Vec<AppSpec>,
    /// Names this run for `ward stop` (see [`run_key`]).
    pub key: String,
    /// `$WARD_HOME`: CA material, audit logs, pid files, the per-run directory.
    pub home: PathBuf,
    /// The `ward` binary the sidecars are started from.
    pub ward_exe: PathBuf,
}

/// Where a run records its pid so `ward stop` can find it.
pub fn pid_file(home: &Path, key: &str) -> PathBuf {
    home.join("run").join(format!("{key}.pid"))
}

/// The name of a run: a hash of the run file's canonical path, or the app-id of a single-app run.
pub fn run_key(run_file: Option<&Path>, app_id: Option<&str>) -> Result<String, RunError> {
    match (run_file, app_id) {
        (Some(file), _) => {
            let path = runfile::locate(file)?;
            let canonical =
                path.canonicalize().map_err(|source| RunError::Io { what: path.display().to_string(), source })?;
            // FNV-1a: a stable name, not a secret.
            let digest = canonical
                .to_string_lossy()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
            Ok(format!("file-{digest:016x}"))
        }
        (None, Some(app_id)) => Ok(format!("app-{app_id}")),
        (None, None) => Err(RunError::NoTarget),
    }
}

/// `ward stop`: SIGTERM to the run named `key`, then waits up to 15 s for it to exit. Returns its pid.
pub fn stop(home: &Path, key: &str) -> Result<String, RunError> {
    let path = pid_file(home, key);
    let pid = std::fs::read_to_string(&path).map_err(|_| RunError::NotRunning { path: path.clone() })?;
    let pid = pid.trim().to_owned();
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RunError::NotRunning { path });
    }
    signal(&pid, "TERM");
    for _ in 0..300 {
        if !process_alive(&pid) {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(RunError::StopTimeout { pid })
}

fn free_port() -> Result<u16, RunError> {
    let io = |source| RunError::Io { what: "finding a free port".to_owned(), source };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    Ok(listener.local_addr().map_err(io)?.port())
}

/// One app of a running run.
pub(crate) struct Running {
    pub(crate) app_id: String,
    /// True when the app has a command (otherwise the sidecar runs on its own until stopped).
    pub(crate) has_command: bool,
    pub(crate) sidecar: Proc,
    pub(crate) process: Option<Proc>,
}

/// The secrets of one app for this run.
struct AppSecrets {
    join_token_file: PathBuf,
    api_token: String,
}

/// Runs the apps until they all exit or `shutdown` resolves. `Ok(true)` when every app exited successfully (or
/// was stopped), `Ok(false)` when one failed or a sidecar died.
pub async fn run(options: RunOptions, shutdown: impl Future<Output = ()>) -> Result<bool, RunError> {
    let RunOptions { apps, key, home, ward_exe } = options;
    let run_dir = home.join("run").join(&key);
    // A directory left by a run that was killed holds only spent or dead secrets; start clean.
    if run_dir.exists() {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    ward_sentry::material::create_private_dir(&run_dir)?;

    // One single-use join token per app: the CA signs exactly these identities, each once; renewals use the
    // certificate. The token files are removed by the sidecar once used.
    let mut tokens_text = String::new();
    let mut secrets = BTreeMap::new();
    for app in &apps {
        let join_token = token::random_token()?;
        tokens_text.push_str(&format!("default/{} {join_token}\n", app.app_id));
        let join_token_file = run_dir.join(format!("{}.token", app.app_id));
        token::write_secret_file(&join_token_file, &join_token)?;
        secrets.insert(app.app_id.clone(), AppSecrets { join_token_file, api_token: token::api_token_for(app)? });
    }
    let tokens = JoinTokens::parse(&tokens_text)
        .map_err(|(line, message)| RunError::JoinTokens(format!("line {line}: {message}")))?;

    let ca = Arc::new(Ca::new(
        SentryConfig {
            issuer_dir: home.join("ca"),
            trust_domain: TrustDomain::new("public").map_err(|err| RunError::JoinTokens(err.to_string()))?,
            namespace: "default".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            healthz_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workload_ttl: Duration::from_secs(24 * 3600),
            allowed_clock_skew: Duration::from_secs(15 * 60),
            generated_ca_ttl: Duration::from_secs(365 * 24 * 3600),
            production: false,
            limits: ward_net::ListenerLimits::default(),
            metrics: None,
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
    let ca_addrs = match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
        Ok(Ok(addrs)) => addrs,
        _ => {
            ca_task.abort();
            return match ca_task.await {
                Ok(Err(err)) => Err(RunError::Sentry(err)),
                _ => Err(RunError::CaNotReady),
            };
        }
    };
    println!(
        "== ward run: CA for trust domain \"public\" at {} (material in {})",
        ca_addrs.grpc,
        home.join("ca").display()
    );

    let mut running: Vec<Running> = Vec::new();
    let start_result: Result<(), RunError> = async {
        for app in &apps {
            let Some(secret) = secrets.get(&app.app_id) else { continue };
            let sidecar = SidecarLaunch {
                exe: &ward_exe,
                sentry: &ca_addrs.grpc.to_string(),
                anchors: &anchors,
                token_file: &secret.join_token_file,
                api_token: &secret.api_token,
                home: &home,
            };
            let (sidecar, ports) = sidecar.start(app).await?;
            running.push(Running {
                app_id: app.app_id.clone(),
                has_command: !app.command.is_empty(),
                sidecar,
                process: None,
            });
            if app.command.is_empty() && !app.env.contains_key(DAPR_API_TOKEN) {
                // The generated token is printed nowhere, so only a token the operator chose can reach this one.
                println!(
                    "== {}: no app command: its sidecar demands a generated API token; set env.DAPR_API_TOKEN in \
                     the run file to call it yourself",
                    app.app_id
                );
            }
            if !app.command.is_empty() {
                let process = start_app(app, &ports, &secret.api_token)?;
                if let Some(last) = running.last_mut() {
                    last.process = Some(process);
                }
            }
        }
        Ok(())
    }
    .await;

    let pid_path = pid_file(&home, &key);
    let _ = std::fs::write(&pid_path, std::process::id().to_string());
    let mut failed = false;
    if let Err(err) = &start_result {
        eprintln!("ward run: {err}");
        failed = true;
    } else {
        failed |= supervise(&mut running, shutdown).await;
    }

    for line in shutdown_in_order(&mut running).await {
        println!("{line}");
    }
    let _ = ca_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), ca_task).await;
    let _ = std::fs::remove_file(&pid_path);
    let _ = std::fs::remove_dir_all(&run_dir);
    println!("== ward run: stopped");
    Ok(!failed)
}

/// Stops the apps first (so none of them sees its sidecar vanish mid-request), then the sidecars. Returns what
/// happened, in order, for the console. The CA is stopped by the caller afterwards.
pub(crate) async fn shutdown_in_order(running: &mut [Running]) -> Vec<String> {
    let mut events = Vec::new();
    for r in running.iter_mut() {
        if let Some(process) = r.process.as_mut()
            && let Some(status) = process.stop(Duration::from_secs(5)).await
        {
            events.push(format!("== {}: app stopped ({status})", r.app_id));
        }
    }
    for r in running.iter_mut() {
        if let Some(status) = r.sidecar.stop(Duration::from_secs(10)).await {
            events.push(format!("== {}: sidecar stopped ({status})", r.app_id));
        }
    }
    events
}

struct Ports {
    http: u16,
    grpc: u16,
}

/// How to start one sidecar of this run.
struct SidecarLaunch<'a> {
    exe: &'a Path,
    sentry: &'a str,
    anchors: &'a str,
    token_file: &'a Path,
    api_token: &'a str,
    home: &'a Path,
}

impl SidecarLaunch<'_> {
    async fn start(&self, app: &AppSpec) -> Result<(Proc, Ports), RunError> {
        let port = |fixed: Option<u16>| fixed.map(Ok).unwrap_or_else(free_port);
        let (http, grpc, internal) =
            (port(app.dapr_http_port)?, port(app.dapr_grpc_port)?, port(app.dapr_internal_grpc_port)?);
        let mut command = Command::new(self.exe);
        command
            .arg("sidecar")
            .args(["--app-id", &app.app_id])
            .args(["--dapr-http-port", &http.to_string()])
            .args(["--dapr-grpc-port", &grpc.to_string()])
            .args(["--dapr-internal-grpc-port", &internal.to_string()])
            .args(["--enable-mtls", "--sentry-address", self.sentry]);
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
        let audit_dir = self.home.join("audit");
        std::fs::create_dir_all(&audit_dir)
            .map_err(|source| RunError::Io { what: audit_dir.display().to_string(), source })?;
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
        // Without a port in the run file, a free one: several sidecars on one host cannot all have daprd's 9090.
        let metrics = app.metrics_port.unwrap_or(0);
        command.args(["--metrics-port", &metrics.to_string()]);
        if let Some(enabled) = app.enable_api_logging {
            command.arg(format!("--enable-api-logging={enabled}"));
        }
        command
            .env("DAPR_TRUST_ANCHORS", self.anchors)
            .env("DAPR_SENTRY_TOKEN_FILE", self.token_file)
            .env("NAMESPACE", "default")
            .env("WARD_HOME", self.home)
            .env_remove("APP_API_TOKEN")
            // The app's API token is its sidecar's too: the sidecar enforces what the app sends. By environment
            // only: a command line is readable by every local user.
            .env(DAPR_API_TOKEN, self.api_token);
        if let Some(value) = app.env.get("APP_API_TOKEN") {
            command.env("APP_API_TOKEN", value);
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|source| RunError::Io { what: format!("starting the sidecar of {}", app.app_id), source })?;
        let name = format!("[{} sidecar]", app.app_id);
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        if let Some(out) = child.stdout.take() {
            pump(name.clone(), out, Some(("ward sidecar ready:", tx)));
        }
        if let Some(err) = child.stderr.take() {
            pump(name.clone(), err, None);
        }
        let mut proc = Proc { child };
        let ready = tokio::select! {
            line = rx.recv() => line,
            _ = tokio::time::sleep(Duration::from_secs(30)) => None,
            status = proc.child.wait() => {
                return Err(RunError::SidecarExited {
                    app_id: app.app_id.clone(),
                    status: status.map(|s| s.to_string()).unwrap_or_default(),
                });
            }
        };
        if ready.is_none() {
            proc.stop(Duration::from_secs(1)).await;
            return Err(RunError::SidecarNotReady { app_id: app.app_id.clone() });
        }
        println!(
            "== {}: sidecar ready: HTTP API http://127.0.0.1:{http}, internal mTLS 127.0.0.1:{internal}, identity spiffe://public/ns/default/{}{}, audit {}",
            app.app_id,
            app.app_id,
            app.app_port.map(|p| format!(", app on 127.0.0.1:{p}")).unwrap_or_default(),
            audit_dir.join(format!("{}.log", app.app_id)).display()
        );
        Ok((proc, Ports { http, grpc }))
    }
}

fn start_app(app: &AppSpec, ports: &Ports, api_token: &str) -> Result<Proc, RunError> {
    let Some((program, rest)) = app.command.split_first() else {
        return Err(RunError::EmptyCommand { app_id: app.app_id.clone() });
    };
    let mut command = Command::new(program);
    command
        .args(rest)
        .current_dir(&app.app_dir)
        .envs(&app.env)
        .env("DAPR_HTTP_PORT", ports.http.to_string())
        .env("DAPR_GRPC_PORT", ports.grpc.to_string())
        .env("DAPR_HTTP_ENDPOINT", format!("http://127.0.0.1:{}", ports.http))
        .env("APP_ID", &app.app_id)
        .env(DAPR_API_TOKEN, api_token)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(port) = app.app_port {
        command.env("APP_PORT", port.to_string());
    }
    let mut child = command.spawn().map_err(|source| RunError::AppStart {
        app_id: app.app_id.clone(),
        command: app.command.join(" "),
        source,
    })?;
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

/// Waits for `shutdown`, or for the apps to exit. Returns true if an app failed or a sidecar died.
async fn supervise(running: &mut [Running], shutdown: impl Future<Output = ()>) -> bool {
    let mut failed = false;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let mut any_alive = false;
        for r in running.iter_mut() {
            if let Some(process) = r.process.as_mut() {
                match process.child.try_wait() {
                    Ok(Some(status)) => {
                        println!("== {} exited with {status}; stopping its sidecar", r.app_id);
                        failed |= !status.success();
                        r.process = None;
                        r.sidecar.stop(Duration::from_secs(10)).await;
                    }
                    Ok(None) => any_alive = true,
                    Err(_) => {}
                }
            } else if !r.has_command {
                // A sidecar without an app runs until it is stopped.
                match r.sidecar.child.try_wait() {
                    Ok(Some(status)) => {
                        println!("== the sidecar of {} exited with {status}", r.app_id);
                        failed |= !status.success();
                    }
                    _ => any_alive = true,
                }
            }
            if let Ok(Some(status)) = r.sidecar.child.try_wait()
                && r.process.is_some()
            {
                println!("== the sidecar of {} exited with {status}; stopping the app", r.app_id);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> Proc {
        let child = Command::new("sleep").arg("30").kill_on_drop(true).spawn().expect("spawn sleep");
        Proc { child }
    }

    #[tokio::test]
    async fn shutdown_stops_every_app_before_any_sidecar_and_leaves_nothing_running() {
        let mut running: Vec<Running> = ["a", "b"]
            .into_iter()
            .map(|id| Running {
                app_id: id.to_owned(),
                has_command: true,
                sidecar: sleeper(),
                process: Some(sleeper()),
            })
            .collect();
        let pids: Vec<String> =
            running.iter().flat_map(|r| [r.sidecar.pid(), r.process.as_ref().and_then(Proc::pid)]).flatten().collect();
        assert_eq!(pids.len(), 4);
        let events = tokio::time::timeout(Duration::from_secs(20), shutdown_in_order(&mut running)).await.unwrap();
        let kinds: Vec<&str> =
            events.iter().map(|e| if e.contains("app stopped") { "app" } else { "sidecar" }).collect();
        assert_eq!(kinds, ["app", "app", "sidecar", "sidecar"], "{events:?}");
        assert!(events[0].starts_with("== a:") && events[1].starts_with("== b:"), "{events:?}");
        for pid in pids {
            assert!(!process_alive(&pid), "{pid} still running");
        }
    }

    #[test]
    fn run_keys_name_the_file_or_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dapr.yaml");
        std::fs::write(&file, "version: 1\n").unwrap();
        let by_file = run_key(Some(&file), None).unwrap();
        assert!(by_file.starts_with("file-"), "{by_file}");
        assert_eq!(run_key(Some(dir.path()), None).unwrap(), by_file, "a directory means its dapr.yaml");
        assert_eq!(run_key(None, Some("orders")).unwrap(), "app-orders");
        assert!(matches!(run_key(None, None), Err(RunError::NoTarget)));
    }

    #[test]
    fn stop_without_a_run_names_the_missing_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = stop(dir.path(), "app-nothing").unwrap_err();
        assert!(matches!(&err, RunError::NotRunning { path } if path.ends_with("run/app-nothing.pid")), "{err}");
    }
}
