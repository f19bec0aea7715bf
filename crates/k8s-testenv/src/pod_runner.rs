//! A test-only pod runner: it plays the kubelet (and the cluster network) for a real API server, so the pods the
//! injector mutated run as local processes on 127.0.0.1.
//!
//! For every pod stored in the watched namespaces (listed every 500 ms) that is not being deleted:
//!
//! - **Volumes** are directories under `<root>/<namespace>/<pod>/volumes/<volume>/`:
//!   projected `serviceAccountToken` sources get a TokenRequest for the pod's service account **bound to the pod**
//!   (`boundObjectRef` kind Pod with its name and uid), with the source's audience and `expirationSeconds`, renewed
//!   at 80 % of its life as the kubelet does; `configMap` and `secret` volumes (and projected sources of those
//!   kinds) are written from the real objects and rewritten within a second when they change; `emptyDir` is an
//!   empty directory; `downwardAPI` items (volume or projected source) with a `fieldRef` are written once (as the
//!   env fieldRefs below). The `kube-api-access-*` volume the service-account admission plugin adds names
//!   ConfigMap `kube-root-ca.crt`, which only the controller manager's root-ca publisher writes (the test
//!   clusters do not run it): that one source is optional here. Every file is written to a temporary name and renamed over, so a reader sees the old or the
//!   new content, never half. A missing ConfigMap or Secret that is not `optional` keeps the pod waiting (reason
//!   recorded) until it appears, as the kubelet does. Other volume types keep the pod waiting for good.
//! - **Mount paths**: each container's `volumeMounts[].mountPath` (with `subPath`) stands for its volume's
//!   directory; env values and args that start with a mount path are rewritten to the directory
//!   (`DAPR_TRUST_ANCHORS_FILE=/var/run/secrets/dapr.io/tls/ca.crt` → `<…>/volumes/dapr-trust-anchors/ca.crt`).
//! - **Env**: `value`, `valueFrom.fieldRef` (`metadata.name`, `metadata.namespace`, `metadata.uid`,
//!   `metadata.labels['…']`, `metadata.annotations['…']`, `spec.serviceAccountName`, `spec.nodeName`,
//!   `status.podIP` and `status.hostIP` = 127.0.0.1), `secretKeyRef` and `configMapKeyRef` from the real objects,
//!   `envFrom`. A reference that is missing and not `optional` keeps the pod from starting, with the reason in
//!   [`RunningPod::waiting`]. `$(VAR)` expansion and `resourceFieldRef` are not implemented (refused, recorded).
//! - **The API server from a pod**: a container that mounts the service-account volume at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` gets env `KUBECONFIG=<…>/kubeconfig` (unless it sets one):
//!   the runner's API server and CA, user = the token file of that volume (so the container acts as the pod's
//!   service account, RBAC applies). `KUBERNETES_SERVICE_HOST` is not set, so in-cluster inference falls through
//!   to that kubeconfig.
//! - **Network**: each pod gets fresh loopback ports ([`PodPorts`]). The sidecar container (command `/ward`) gets
//!   its port flags (`--dapr-http-port`, `--dapr-grpc-port`, `--dapr-internal-grpc-port`, `--dapr-public-port`,
//!   `--metrics-port`, `--app-port`) set to the pod's ports, its listen addresses (`--dapr-listen-addresses`,
//!   `--dapr-internal-grpc-listen-address`, `--metrics-listen-address`, `--dapr-public-listen-address`) and
//!   `--app-channel-address` set to 127.0.0.1 (added when absent), and its service addresses (`--sentry-address`,
//!   `--control-plane-address`, any flag whose value is a key of [`RunnerConfig::service_address`]) mapped to
//!   loopback. **The app's port**: every app container gets env `APP_PORT=<ports.app>` and must listen there;
//!   `--app-port` in the sidecar is rewritten to the same port; `DAPR_HTTP_PORT` / `DAPR_GRPC_PORT` (which the
//!   injector sets in app containers) are rewritten to the pod's sidecar ports.
//! - **Cluster DNS for sidecars**: the runner keeps `<root>/name-resolution-overrides` with one line
//!   `<app-id>-dapr.<namespace>.svc.<cluster domain> 127.0.0.1:<internal gRPC port>` per started pod with a
//!   `dapr.io/app-id` annotation, and sets `WARD_NAME_RESOLUTION_OVERRIDES` to it on every sidecar (the test hook
//!   of ward's `nameresolution.kubernetes`).
//! - **Processes**: the sidecar runs as [`RunnerConfig::ward_binary`] with the rewritten args and only the pod's
//!   env (plus `PATH` and `RUST_LOG`/`RUST_BACKTRACE` when set). **When the runner's own UID is 0** (tests run as
//!   root here) it sets `DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK=true`, because ward refuses UID 0 in Kubernetes
//!   mode as Dapr does. App containers run the command [`RunnerConfig::app_command`] returns for them, with the
//!   pod's env added; `None` means the test serves the app in process on [`PodPorts::app`]. Each process runs
//!   under the crate's `sh` guard (killed when the runner's pipe closes, however the test process ends: panic or
//!   SIGKILL included); stdout and stderr go to `<…>/logs/<container>.stdout|.stderr`
//!   ([`PodRunner::output`]). A pod that is deleted (or gets a `deletionTimestamp`) has its processes stopped
//!   (TERM, KILL after 2 s); dropping the runner stops every process and waits for them. Exited containers are
//!   not restarted (their exit status is recorded). Only a container's own process is signalled, not processes it
//!   forks: an app command run through a shell should `exec` its server.
//! - **Status**: once its containers are started the pod's status is patched (`phase: Running`, `podIP`
//!   127.0.0.1, conditions `Ready`/`ContainersReady`) through the status subresource.
//!
//! What it does not do: scheduling, image pulls, probes, restarts, init containers, resource limits,
//! `hostPath` or other volume types, Services/Endpoints (the override file stands in for cluster DNS).
//!
//! The runner runs on its own thread with its own runtime and kube client (from a kubeconfig), so it serves
//! synchronous and asynchronous tests alike; its query methods block (poll with a bounded wait).
//!
//! ```ignore
//! let config = RunnerConfig::new(cluster.kubeconfig_path(), &["ward-demo"], dir.path(), Path::new(WARD))
//!     .service_address("dapr-sentry.dapr-system.svc.cluster.local:443", &sentry_grpc)
//!     .service_address("dapr-api.dapr-system.svc.cluster.local:443", &operator_grpc)
//!     .app_command(|app| None); // in-process apps, served by the test on `app.ports.app`
//! let runner = PodRunner::start(config)?;
//! let pod = runner.wait_running("ward-demo", "orders", Duration::from_secs(60))?;
//! runner.wait_stdout(&pod, "daprd", "ward sidecar ready:", Duration::from_secs(30))?;
//! ```
//!
//! A failed wait returns [`RunnerError::Timeout`] with [`PodRunner::dump`] (every pod, its events and the tail of
//! each container's output). [`PodRunner::renew_tokens_now`] forces the 80 % renewal; `drop_sidecar_flag` lets a
//! test run sidecars without a control-plane piece (e.g. no operator).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};

/// The sidecar's command in the injected `daprd` container.
pub const SIDECAR_COMMAND: &str = "/ward";
/// The env variable of ward's name-resolution test hook.
pub const NAME_RESOLUTION_OVERRIDES_ENV: &str = "WARD_NAME_RESOLUTION_OVERRIDES";
/// Where a pod's containers find their service account's token (in-cluster configuration).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How often pods are listed and ConfigMap/Secret volumes refreshed.
const TICK: Duration = Duration::from_millis(500);

/// What the runner could not do.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("pod runner: the runner's thread could not start: {0}")]
    Start(#[source] std::io::Error),
    #[error("pod runner: timed out after {timeout:?} waiting for {what}; runner state:\n{state}")]
    Timeout { what: String, timeout: Duration, state: String },
}

/// Builds the command of an app container (see the module doc); `None`: the test serves the app in process.
pub type AppCommand = dyn Fn(&AppContainer<'_>) -> Option<Command> + Send + Sync;

/// An app container about to start, as given to [`RunnerConfig::app_command`].
pub struct AppContainer<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub ports: PodPorts,
    /// The container's env as resolved (already set on the returned command by the runner).
    pub env: &'a [(String, String)],
    /// The pod's directory (volumes, logs).
    pub dir: &'a Path,
}

/// The runner's settings.
pub struct RunnerConfig {
    /// A kubeconfig with rights to read pods, ConfigMaps and Secrets, request tokens and patch pod status.
    pub kubeconfig: PathBuf,
    pub namespaces: Vec<String>,
    /// Where pods' volumes and logs are written (a test's temporary directory).
    pub root: PathBuf,
    /// The `ward` binary run for `/ward` containers (`env!("CARGO_BIN_EXE_ward")` in the `ward` crate's tests).
    pub ward_binary: PathBuf,
    /// Exact `host:port` values of sidecar flags mapped to loopback addresses.
    pub service_addresses: BTreeMap<String, String>,
    /// For the name-resolution overrides (default `cluster.local`).
    pub cluster_domain: String,
    /// Sidecar flags removed (with their value) before the sidecar starts: for a test of one part without the
    /// control-plane piece a flag needs (e.g. `--control-plane-address` without an operator).
    pub dropped_sidecar_flags: Vec<String>,
    pub app_command: Arc<AppCommand>,
}

impl RunnerConfig {
    pub fn new(kubeconfig: &Path, namespaces: &[&str], root: &Path, ward_binary: &Path) -> RunnerConfig {
        RunnerConfig {
            kubeconfig: kubeconfig.to_owned(),
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            root: root.to_owned(),
            ward_binary: ward_binary.to_owned(),
            service_addresses: BTreeMap::new(),
            cluster_domain: "cluster.local".to_owned(),
            dropped_sidecar_flags: Vec::new(),
            app_command: Arc::new(|_: &AppContainer<'_>| None),
        }
    }

    /// Maps `from` (e.g. `dapr-sentry.dapr-system.svc.cluster.local:443`) to `to` (`127.0.0.1:<port>`).
    pub fn service_address(mut self, from: &str, to: &str) -> RunnerConfig {
        self.service_addresses.insert(from.to_owned(), to.to_owned());
        self
    }

    /// Removes `flag` (and its value) from every sidecar's args (see [`RunnerConfig::dropped_sidecar_flags`]).
    pub fn drop_sidecar_flag(mut self, flag: &str) -> RunnerConfig {
        self.dropped_sidecar_flags.push(flag.to_owned());
        self
    }

    pub fn app_command(mut self, f: impl Fn(&AppContainer<'_>) -> Option<Command> + Send + Sync + 'static) -> Self {
        self.app_command = Arc::new(f);
        self
    }
}

/// The loopback ports of one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodPorts {
    pub http: u16,
    pub grpc: u16,
    pub internal: u16,
    pub public: u16,
    pub metrics: u16,
    /// Where the app listens (env `APP_PORT`) and where the sidecar calls it (`--app-port`).
    pub app: u16,
}

/// A container's state as the runner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not started (the pod is waiting) or not started by the runner (an in-process app).
    Waiting(String),
    Running,
    Exited(String),
}

/// A snapshot of one pod.
#[derive(Debug, Clone)]
pub struct RunningPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub app_id: Option<String>,
    pub ports: PodPorts,
    pub dir: PathBuf,
    /// Why the pod has not started (`None` once started).
    pub waiting: Option<String>,
    pub containers: Vec<(String, ContainerState)>,
    /// What the runner did and saw for this pod (token renewals, file updates, exits), oldest first.
    pub events: Vec<String>,
}

impl RunningPod {
    pub fn started(&self) -> bool {
        self.waiting.is_none()
    }
}

/// The runner. Dropping it stops every process it started and waits for them.
pub struct PodRunner {
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    pods: BTreeMap<(String, String), PodEntry>,
    /// Guards of deleted pods' processes, reaped as they exit.
    stopping: Vec<Child>,
    last_error: Option<String>,
}

struct PodEntry {
    pod: Pod,
    uid: String,
    app_id: Option<String>,
    ports: PodPorts,
    dir: PathBuf,
    waiting: Option<String>,
    containers: Vec<ContainerRun>,
    tokens: Vec<TokenFile>,
    sourced: Vec<SourcedVolume>,
    events: Vec<String>,
}

struct ContainerRun {
    name: String,
    state: ContainerState,
    process: Option<(Child, ChildStdin)>,
}

struct TokenFile {
    path: PathBuf,
    audience: Option<String>,
    expiration_seconds: i64,
    renew_at: Instant,
}

/// A ConfigMap or Secret projected into a directory.
#[derive(Debug, Clone)]
struct SourcedVolume {
    dir: PathBuf,
    kind: SourceKind,
    name: String,
    items: Option<Vec<KeyToPath>>,
    optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    ConfigMap,
    Secret,
}

impl PodRunner {
    /// Starts the runner's thread; it lists pods at once.
    pub fn start(config: RunnerConfig) -> Result<PodRunner, RunnerError> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("pod-runner".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        lock(&state).last_error = Some(format!("runtime: {err}"));
                        return;
                    }
                };
                runtime.block_on(run(config, state.clone(), stopped));
                stop_all(&mut lock(&state));
            })
            .map_err(RunnerError::Start)?;
        Ok(PodRunner { shared, stop: Some(stop), thread: Some(thread) })
    }

    /// Every pod the runner knows.
    pub fn pods(&self) -> Vec<RunningPod> {
        lock(&self.shared).pods.iter().map(|((ns, name), entry)| entry.snapshot(ns, name)).collect()
    }

    /// Blocks until a pod of `namespace` with app id `app_id` (annotation `dapr.io/app-id`) has started.
    pub fn wait_running(&self, namespace: &str, app_id: &str, timeout: Duration) -> Result<RunningPod, RunnerError> {
        self.wait(timeout, &format!("a started pod of app {app_id:?} in {namespace}"), |pods| {
            pods.iter()
                .find(|p| p.namespace == namespace && p.app_id.as_deref() == Some(app_id) && p.started())
                .cloned()
        })
    }

    /// Makes every projected token due for renewal now (what the kubelet does at 80 % of its life, which a test
    /// cannot wait for: TokenRequest's shortest lifetime is ten minutes). The next tick writes new tokens.
    pub fn renew_tokens_now(&self) {
        let now = Instant::now();
        for entry in lock(&self.shared).pods.values_mut() {
            for token in &mut entry.tokens {
                token.renew_at = now;
            }
        }
    }

    /// Blocks until `container` of the pod has written a stdout line starting with `prefix`; returns the line.
    pub fn wait_stdout(
        &self,
        pod: &RunningPod,
        container: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<String, RunnerError> {
        let path = log_path(&pod.dir, container, "stdout");
        self.wait(timeout, &format!("{prefix:?} on {}/{} {container}'s stdout", pod.namespace, pod.name), |_| {
            let text = std::fs::read_to_string(&path).ok()?;
            text.lines().find(|l| l.starts_with(prefix)).map(str::to_owned)
        })
    }

    /// Polls `check` with the current pods every 100 ms until it answers, or times out with the runner's state.
    pub fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&[RunningPod]) -> Option<T>,
    ) -> Result<T, RunnerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check(&self.pods()) {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(RunnerError::Timeout { what: what.to_owned(), timeout, state: self.dump() });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A container's (stdout, stderr) so far.
    pub fn output(&self, pod: &RunningPod, container: &str) -> (String, String) {
        let read = |stream| std::fs::read_to_string(log_path(&pod.dir, container, stream)).unwrap_or_default();
        (read("stdout"), read("stderr"))
    }

    /// Every pod with its state, events and the last 40 lines of each container's output: for a failed test.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        if let Some(err) = &lock(&self.shared).last_error {
            let _ = writeln!(out, "last error: {err}");
        }
        for pod in self.pods() {
            let _ = writeln!(
                out,
                "pod {}/{} app-id={:?} ports={:?} waiting={:?}",
                pod.namespace, pod.name, pod.app_id, pod.ports, pod.waiting
            );
            for event in &pod.events {
                let _ = writeln!(out, "  event: {event}");
            }
            for (name, state) in &pod.containers {
                let _ = writeln!(out, "  container {name}: {state:?}");
                let (stdout, stderr) = self.output(&pod, name);
                for (stream, text) in [("stdout", stdout), ("stderr", stderr)] {
                    let lines: Vec<&str> = text.lines().collect();
                    for line in &lines[lines.len().saturating_sub(40)..] {
                        let _ = writeln!(out, "    {stream}| {line}");
                    }
                }
            }
        }
        out
    }
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // In case the thread ended early (or panicked): nothing may outlive the runner.
        stop_all(&mut lock(&self.shared));
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn log_path(pod_dir: &Path, container: &str, stream: &str) -> PathBuf {
    pod_dir.join("logs").join(format!("{container}.{stream}"))
}

/// Closes every guard's pipe first (so they all stop at once), then waits for each.
fn stop_all(shared: &mut Shared) {
    let mut children: Vec<Child> = std::mem::take(&mut shared.stopping);
    for entry in shared.pods.values_mut() {
        for container in &mut entry.containers {
            if let Some((child, stdin)) = container.process.take() {
                drop(stdin);
                children.push(child);
            }
        }
    }
    wait_children(children);
}

fn wait_children(mut children: Vec<Child>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !children.is_empty() && Instant::now() < deadline {
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        std::thread::sleep(Duration::from_millis(20));
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl PodEntry {
    fn snapshot(&self, namespace: &str, name: &str) -> RunningPod {
        RunningPod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: self.uid.clone(),
            app_id: self.app_id.clone(),
            ports: self.ports,
            dir: self.dir.clone(),
            waiting: self.waiting.clone(),
            containers: self.containers.iter().map(|c| (c.name.clone(), c.state.clone())).collect(),
            events: self.events.clone(),
        }
    }

    fn event(&mut self, text: String) {
        // Bounded: a long test with a flapping volume must not grow this without end.
        if self.events.len() >= 200 {
            self.events.remove(0);
        }
        self.events.push(text);
    }
}

struct Runner {
    config: RunnerConfig,
    /// The API server's URL and the kubeconfig lines that make a client trust it.
    api: (String, String),
    client: kube::Client,
    shared: Arc<Mutex<Shared>>,
    root_uid: bool,
    overrides_file: PathBuf,
    overrides: String,
}

async fn run(config: RunnerConfig, shared: Arc<Mutex<Shared>>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let client = match crate::admin_client(&config.kubeconfig, None, &[]).await {
        Ok(client) => client,
        Err(err) => {
            lock(&shared).last_error = Some(format!("kube client from {}: {err}", config.kubeconfig.display()));
            return;
        }
    };
    let api = match api_of(&config.kubeconfig) {
        Ok(api) => api,
        Err(err) => {
            lock(&shared).last_error = Some(err);
            return;
        }
    };
    let overrides_file = config.root.join("name-resolution-overrides");
    let mut runner =
        Runner { config, api, client, shared, root_uid: running_as_root(), overrides_file, overrides: String::new() };
    if let Err(err) = runner.write_overrides() {
        lock(&runner.shared).last_error = Some(err);
    }
    loop {
        // A stop request cancels a tick too (an API server already gone must not hold up the drop). Cancelling is
        // safe: a tick spawns processes only between awaits and records them before its next await.
        tokio::select! {
            result = runner.tick() => {
                if let Err(err) = result {
                    lock(&runner.shared).last_error = Some(err);
                }
            }
            _ = stopped.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// The server and CA of the runner's kubeconfig (its first cluster).
fn api_of(kubeconfig: &Path) -> Result<(String, String), String> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let cluster = file
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| format!("{}: no cluster", kubeconfig.display()))?;
    let server = cluster.server.ok_or_else(|| format!("{}: no server", kubeconfig.display()))?;
    let ca = match (cluster.certificate_authority, cluster.certificate_authority_data) {
        (Some(path), _) => format!("certificate-authority: {path}"),
        (None, Some(data)) => format!("certificate-authority-data: {data}"),
        (None, None) => String::new(),
    };
    Ok((server, ca))
}

/// The real UID from `/proc/self/status` (no libc call needed).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|u| u.split_whitespace().next() == Some("0")))
        .unwrap_or(false)
}

impl Runner {
    async fn tick(&mut self) -> Result<(), String> {
        let mut seen = Vec::new();
        for namespace in self.config.namespaces.clone() {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            let list =
                pods.list(&ListParams::default()).await.map_err(|e| format!("listing pods in {namespace}: {e}"))?;
            for pod in list.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if pod.metadata.deletion_timestamp.is_none() {
                    seen.push((namespace.clone(), name, pod));
                }
            }
        }
        // Gone or being deleted: stop.
        {
            let mut shared = lock(&self.shared);
            let gone: Vec<(String, String)> = shared
                .pods
                .iter()
                .filter(|(key, entry)| {
                    !seen.iter().any(|(ns, name, pod)| {
                        (ns, name) == (&key.0, &key.1) && pod.metadata.uid.as_deref() == Some(entry.uid.as_str())
                    })
                })
                .map(|(key, _)| key.clone())
                .collect();
            for key in gone {
                if let Some(mut entry) = shared.pods.remove(&key) {
                    for container in &mut entry.containers {
                        if let Some((child, stdin)) = container.process.take() {
                            drop(stdin);
                            shared.stopping.push(child);
                        }
                    }
                }
            }
            shared.stopping.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        }
        for (namespace, name, pod) in seen {
            let key = (namespace.clone(), name.clone());
            let known = lock(&self.shared).pods.contains_key(&key);
            if !known {
                let entry = self.new_entry(&namespace, &name, pod)?;
                lock(&self.shared).pods.insert(key.clone(), entry);
            }
            self.step(&key).await;
        }
        self.write_overrides()
    }

    fn new_entry(&self, namespace: &str, name: &str, pod: Pod) -> Result<PodEntry, String> {
        let dir = self.config.root.join(namespace).join(name);
        std::fs::create_dir_all(dir.join("logs")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let [http, grpc, internal, public, metrics, app] = free_ports::<6>()?;
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| ContainerRun {
                name: c.name.clone(),
                state: ContainerState::Waiting("pod not started".into()),
                process: None,
            })
            .collect();
        Ok(PodEntry {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            app_id: pod.metadata.annotations.as_ref().and_then(|a| a.get("dapr.io/app-id")).cloned(),
            pod,
            ports: PodPorts { http, grpc, internal, public, metrics, app },
            dir,
            waiting: Some("not prepared yet".into()),
            containers,
            tokens: Vec::new(),
            sourced: Vec::new(),
            events: Vec::new(),
        })
    }

    /// Prepares and starts a waiting pod, or refreshes a started one.
    async fn step(&mut self, key: &(String, String)) {
        let (pod, started, dir) = {
            let shared = lock(&self.shared);
            let Some(entry) = shared.pods.get(key) else { return };
            (entry.pod.clone(), entry.waiting.is_none(), entry.dir.clone())
        };
        if started {
            self.refresh(key).await;
            return;
        }
        match self.prepare(&pod, &dir).await {
            Ok(prepared) => self.start_pod(key, &pod, prepared).await,
            Err(why) => {
                let mut shared = lock(&self.shared);
                if let Some(entry) = shared.pods.get_mut(key) {
                    if entry.waiting.as_deref() != Some(why.as_str()) {
                        entry.event(format!("waiting: {why}"));
                    }
                    entry.waiting = Some(why);
                }
            }
        }
    }

    /// Writes the pod's volumes and resolves every container's env; an error is why the pod waits.
    async fn prepare(&self, pod: &Pod, dir: &Path) -> Result<Prepared, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().ok_or("the pod has no spec")?;
        let mut volumes = HashMap::new();
        let mut tokens = Vec::new();
        let mut sourced = Vec::new();
        for volume in spec.volumes.iter().flatten() {
            let volume_dir = dir.join("volumes").join(&volume.name);
            std::fs::create_dir_all(&volume_dir).map_err(|e| format!("{}: {e}", volume_dir.display()))?;
            for source in volume_sources(volume, &volume_dir)? {
                match source {
                    VolumeSource::Token { path, audience, expiration_seconds } => {
                        let token = self.request_token(pod, audience.as_deref(), expiration_seconds).await?;
                        write_atomic(&path, token.as_bytes())?;
                        let renew_at = Instant::now() + Duration::from_secs(renewal_after(expiration_seconds));
                        tokens.push(TokenFile { path, audience, expiration_seconds, renew_at });
                    }
                    VolumeSource::Sourced(source) => {
                        self.write_sourced(&namespace, &source).await?;
                        sourced.push(source);
                    }
                    VolumeSource::Downward(files) => {
                        for (path, field) in files {
                            if !path.starts_with(&volume_dir) || path.components().any(|c| c.as_os_str() == "..") {
                                return Err(format!("volume {}: {} leaves the volume", volume.name, path.display()));
                            }
                            write_atomic(&path, field_value(pod, &field)?.as_bytes())?;
                        }
                    }
                    VolumeSource::Empty => {}
                }
            }
            volumes.insert(volume.name.clone(), volume_dir);
        }
        let mut envs = Vec::new();
        for container in &spec.containers {
            let mut mounts = Vec::new();
            for mount in container.volume_mounts.iter().flatten() {
                let base = volumes.get(&mount.name).ok_or_else(|| {
                    format!("container {}: volumeMount of unknown volume {:?}", container.name, mount.name)
                })?;
                let target = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    Some(sub) => base.join(sub),
                    None => base.clone(),
                };
                mounts.push((mount.mount_path.clone(), target));
            }
            // Longest first, so a nested mount wins over its parent.
            mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
            let env =
                self.resolve_env(pod, container).await.map_err(|e| format!("container {}: {e}", container.name))?;
            let mut env: Vec<(String, String)> =
                env.into_iter().map(|(k, v)| (k, rewrite_mount_paths(&v, &mounts))).collect();
            if let Some((_, account_dir)) =
                mounts.iter().find(|(path, _)| path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR)
                && !env.iter().any(|(k, _)| k == "KUBECONFIG")
            {
                let kubeconfig = self.pod_kubeconfig(dir, &namespace, &account_dir.join("token"))?;
                env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
            }
            envs.push((env, mounts));
        }
        Ok(Prepared { envs, tokens, sourced })
    }

    /// A kubeconfig that authenticates as the pod's service account with the token of its mounted
    /// service-account volume (re-read by clients when renewed): what in-cluster configuration gives a pod.
    fn pod_kubeconfig(&self, pod_dir: &Path, namespace: &str, token: &Path) -> Result<PathBuf, String> {
        let path = pod_dir.join("kubeconfig");
        let (server, ca) = &self.api;
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster\n  cluster:\n    server: {server}\n    {ca}\n\
             users:\n- name: pod\n  user:\n    tokenFile: {token}\ncontexts:\n- name: pod\n  context:\n    \
             cluster: cluster\n    user: pod\n    namespace: {namespace}\ncurrent-context: pod\n",
            token = token.display()
        );
        write_atomic(&path, text.as_bytes())?;
        Ok(path)
    }

    async fn request_token(
        &self,
        pod: &Pod,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let account =
            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        // No audience in the projection means the API server's own (as the kubelet does).
        let mut spec = serde_json::json!({
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": pod.metadata.uid},
        });
        if let Some(audience) = audience {
            spec["audiences"] = serde_json::json!([audience]);
        }
        let request: TokenRequest =
            serde_json::from_value(serde_json::json!({ "spec": spec })).map_err(|e| format!("token request: {e}"))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let answer = accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("TokenRequest for {namespace}/{account}: {e}"))?;
        answer.status.map(|s| s.token).ok_or_else(|| format!("TokenRequest for {namespace}/{account}: no status"))
    }

    /// The files of a ConfigMap/Secret source (`None`: missing and optional).
    async fn sourced_files(&self, namespace: &str, source: &SourcedVolume) -> Result<Vec<(String, Vec<u8>)>, String> {
        let data: Option<BTreeMap<String, Vec<u8>>> = match source.kind {
            SourceKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
                let map = api.get_opt(&source.name).await.map_err(|e| format!("ConfigMap {}: {e}", source.name))?;
                map.map(|m| {
                    let mut data: BTreeMap<String, Vec<u8>> =
                        m.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                    data.extend(m.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                    data
                })
            }
            SourceKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                let secret = api.get_opt(&source.name).await.map_err(|e| format!("Secret {}: {e}", source.name))?;
                secret.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
            }
        };
        let kind = match source.kind {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        };
        let Some(data) = data else {
            return if source.optional {
                Ok(Vec::new())
            } else {
                Err(format!("{kind} {namespace}/{} not found", source.name))
            };
        };
        match &source.items {
            None => Ok(data.into_iter().collect()),
            Some(items) => {
                let mut files = Vec::new();
                for item in items {
                    match data.get(&item.key) {
                        Some(value) => files.push((item.path.clone(), value.clone())),
                        None if source.optional => {}
                        None => return Err(format!("{kind} {namespace}/{} has no key {:?}", source.name, item.key)),
                    }
                }
                Ok(files)
            }
        }
    }

    /// Writes a source's files where they differ; returns whether anything changed.
    async fn write_sourced(&self, namespace: &str, source: &SourcedVolume) -> Result<bool, String> {
        let files = self.sourced_files(namespace, source).await?;
        let mut changed = false;
        for (path, content) in files {
            // Keys and item paths come from the API server: refuse any that would leave the volume.
            if path.split('/').any(|part| part == ".." || part.is_empty()) || path.starts_with('/') {
                return Err(format!("{:?}: a file path outside the volume", path));
            }
            let target = source.dir.join(&path);
            if std::fs::read(&target).ok().as_deref() != Some(content.as_slice()) {
                write_atomic(&target, &content)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    async fn resolve_env(&self, pod: &Pod, container: &Container) -> Result<Vec<(String, String)>, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        };
        for from in container.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let (kind, name, optional) = if let Some(r) = &from.config_map_ref {
                (SourceKind::ConfigMap, r.name.clone(), r.optional.unwrap_or(false))
            } else if let Some(r) = &from.secret_ref {
                (SourceKind::Secret, r.name.clone(), r.optional.unwrap_or(false))
            } else {
                continue;
            };
            let source = SourcedVolume { dir: PathBuf::new(), kind, name, items: None, optional };
            for (key, value) in self.sourced_files(&namespace, &source).await? {
                set(&mut env, format!("{prefix}{key}"), String::from_utf8_lossy(&value).into_owned());
            }
        }
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (_, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        Some(field_value(pod, &field.field_path)?)
                    } else if let Some(r) = &from.secret_key_ref {
                        self.key_ref(&namespace, SourceKind::Secret, &r.name, &r.key, r.optional.unwrap_or(false))
                            .await
                            .map_err(|e| format!("env {}: {e}", var.name))?
                    } else if let Some(r) = &from.config_map_key_ref {
                        self.key_ref(&namespace, SourceKind::ConfigMap, &r.name, &r.key, r.optional.unwrap_or(false))
                            .await
                            .map_err(|e| format!("env {}: {e}", var.name))?
                    } else {
                        return Err(format!("env {}: this valueFrom is not supported by the pod runner", var.name));
                    }
                }
                (Some(value), None) => {
                    if value.contains("$(") {
                        return Err(format!("env {}: $(VAR) expansion is not supported by the pod runner", var.name));
                    }
                    Some(value.clone())
                }
                (None, None) => Some(String::new()),
            };
            if let Some(value) = value {
                set(&mut env, var.name.clone(), value);
            }
        }
        Ok(env)
    }

    /// One key of a Secret/ConfigMap; `None` when missing and optional.
    async fn key_ref(
        &self,
        namespace: &str,
        kind: SourceKind,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>, String> {
        let source = SourcedVolume {
            dir: PathBuf::new(),
            kind,
            name: name.to_owned(),
            items: Some(vec![KeyToPath { key: key.to_owned(), path: key.to_owned(), mode: None }]),
            optional,
        };
        let files = self.sourced_files(namespace, &source).await?;
        Ok(files.into_iter().next().map(|(_, v)| String::from_utf8_lossy(&v).into_owned()))
    }

    async fn start_pod(&mut self, key: &(String, String), pod: &Pod, prepared: Prepared) {
        let containers: Vec<Container> = pod.spec.iter().flat_map(|s| s.containers.clone()).collect();
        let (ports, dir) = {
            let shared = lock(&self.shared);
            let Some(entry) = shared.pods.get(key) else { return };
            (entry.ports, entry.dir.clone())
        };
        let mut runs = Vec::new();
        let mut events = Vec::new();
        for (container, (env, mounts)) in containers.iter().zip(prepared.envs) {
            let is_sidecar =
                container.command.as_ref().and_then(|c| c.first()).map(String::as_str) == Some(SIDECAR_COMMAND);
            let command = if is_sidecar {
                Some((self.sidecar_command(container, &env, &mounts, ports), true))
            } else {
                let mut env = env;
                for (name, value) in &mut env {
                    match name.as_str() {
                        "DAPR_HTTP_PORT" => *value = ports.http.to_string(),
                        "DAPR_GRPC_PORT" => *value = ports.grpc.to_string(),
                        _ => {}
                    }
                }
                env.push(("APP_PORT".into(), ports.app.to_string()));
                let app = AppContainer { pod, container, ports, env: &env, dir: &dir };
                (self.config.app_command)(&app).map(|mut command| {
                    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    (command, false)
                })
            };
            let state = match command {
                None => ContainerState::Waiting("not started by the runner (the test serves it in process)".into()),
                Some((command, clear_env)) => match spawn_guarded(&command, clear_env, &dir, &container.name) {
                    Ok(process) => {
                        runs.push((container.name.clone(), process));
                        ContainerState::Running
                    }
                    Err(err) => {
                        events.push(format!("container {}: {err}", container.name));
                        ContainerState::Waiting(err)
                    }
                },
            };
            events.push(format!("container {}: {state:?}", container.name));
            let mut shared = lock(&self.shared);
            if let Some(entry) = shared.pods.get_mut(key)
                && let Some(run) = entry.containers.iter_mut().find(|c| c.name == container.name)
            {
                run.state = state;
            }
        }
        {
            let mut shared = lock(&self.shared);
            let Some(entry) = shared.pods.get_mut(key) else {
                // Deleted meanwhile: nothing may be left running.
                let children = runs.into_iter().map(|(_, (child, stdin))| {
                    drop(stdin);
                    child
                });
                shared.stopping.extend(children);
                return;
            };
            for (name, process) in runs {
                if let Some(run) = entry.containers.iter_mut().find(|c| c.name == name) {
                    run.process = Some(process);
                }
            }
            entry.tokens = prepared.tokens;
            entry.sourced = prepared.sourced;
            entry.waiting = None;
            for event in events {
                entry.event(event);
            }
        }
        self.patch_status(key).await;
    }

    fn sidecar_command(
        &self,
        container: &Container,
        env: &[(String, String)],
        mounts: &[(String, PathBuf)],
        ports: PodPorts,
    ) -> Command {
        let args = drop_flags(container.args.as_deref().unwrap_or_default(), &self.config.dropped_sidecar_flags);
        let args = rewrite_sidecar_args(&args, ports, &self.config.service_addresses, mounts);
        let mut command = Command::new(&self.config.ward_binary);
        command.args(args);
        for name in ["PATH", "RUST_LOG", "RUST_BACKTRACE"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command.env(NAME_RESOLUTION_OVERRIDES_ENV, &self.overrides_file);
        if self.root_uid {
            command.env("DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK", "true");
        }
        command
    }

    async fn patch_status(&self, key: &(String, String)) {
        let status = serde_json::json!({"status": {
            "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "hostIP": "127.0.0.1",
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
            ],
        }});
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        let result = pods.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&status)).await;
        let mut shared = lock(&self.shared);
        if let Some(entry) = shared.pods.get_mut(key) {
            match result {
                Ok(_) => entry.event("status patched: Running, podIP 127.0.0.1".into()),
                Err(err) => entry.event(format!("status patch failed: {err}")),
            }
        }
    }

    /// A started pod: exits, token renewals, ConfigMap/Secret changes.
    async fn refresh(&mut self, key: &(String, String)) {
        let (pod, due, sourced) = {
            let mut shared = lock(&self.shared);
            let Some(entry) = shared.pods.get_mut(key) else { return };
            let mut exits = Vec::new();
            for container in &mut entry.containers {
                if let Some((child, _)) = &mut container.process
                    && let Ok(Some(status)) = child.try_wait()
                {
                    container.state = ContainerState::Exited(status.to_string());
                    container.process = None;
                    exits.push(format!("container {} exited: {status}", container.name));
                }
            }
            for exit in exits {
                entry.event(exit);
            }
            let now = Instant::now();
            let due: Vec<(usize, Option<String>, i64)> = entry
                .tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| t.renew_at <= now)
                .map(|(i, t)| (i, t.audience.clone(), t.expiration_seconds))
                .collect();
            (entry.pod.clone(), due, entry.sourced.clone())
        };
        let namespace = key.0.clone();
        let mut events = Vec::new();
        let mut renewed = Vec::new();
        for (i, audience, expiration) in due {
            match self.request_token(&pod, audience.as_deref(), expiration).await {
                Ok(token) => renewed.push((i, token)),
                Err(err) => events.push(format!("token renewal failed: {err}")),
            }
        }
        for source in &sourced {
            match self.write_sourced(&namespace, source).await {
                Ok(true) => {
                    events.push(format!("{:?} {} rewritten in {}", source.kind, source.name, source.dir.display()))
                }
                Ok(false) => {}
                Err(err) => events.push(format!("refreshing {:?} {}: {err}", source.kind, source.name)),
            }
        }
        let mut shared = lock(&self.shared);
        let Some(entry) = shared.pods.get_mut(key) else { return };
        for (i, token) in renewed {
            if let Some(file) = entry.tokens.get_mut(i) {
                match write_atomic(&file.path, token.as_bytes()) {
                    Ok(()) => {
                        file.renew_at = Instant::now() + Duration::from_secs(renewal_after(file.expiration_seconds));
                        events.push(format!("token {} renewed", file.path.display()));
                    }
                    Err(err) => events.push(format!("token write failed: {err}")),
                }
            }
        }
        for event in events {
            // A failing refresh repeats every tick: record it once in a row.
            if entry.events.last() != Some(&event) {
                entry.event(event);
            }
        }
    }

    fn write_overrides(&mut self) -> Result<(), String> {
        let mut text = String::from("# <dns-name> <ip>:<port>, written by ward-k8s-testenv's pod runner\n");
        {
            let shared = lock(&self.shared);
            let mut lines: Vec<String> = shared
                .pods
                .iter()
                .filter(|(_, e)| e.waiting.is_none())
                .filter_map(|((ns, _), e)| {
                    let app_id = e.app_id.as_ref()?;
                    Some(format!(
                        "{app_id}-dapr.{ns}.svc.{} 127.0.0.1:{}\n",
                        self.config.cluster_domain, e.ports.internal
                    ))
                })
                .collect();
            lines.sort();
            lines.dedup_by(|a, b| a.split(' ').next() == b.split(' ').next());
            text.extend(lines);
        }
        if text != self.overrides {
            write_atomic(&self.overrides_file, text.as_bytes())?;
            self.overrides = text;
        }
        Ok(())
    }
}

/// Resolved env, in order.
type Env = Vec<(String, String)>;
/// Mount path → directory, longest path first.
type Mounts = Vec<(String, PathBuf)>;

struct Prepared {
    /// Per container in spec order: resolved env and mounts (mount path → directory).
    envs: Vec<(Env, Mounts)>,
    tokens: Vec<TokenFile>,
    sourced: Vec<SourcedVolume>,
}

enum VolumeSource {
    Token {
        path: PathBuf,
        audience: Option<String>,
        expiration_seconds: i64,
    },
    Sourced(SourcedVolume),
    /// Files and the `fieldRef` paths they hold.
    Downward(Vec<(PathBuf, String)>),
    Empty,
}

/// What fills a volume's directory; an unsupported volume type is why the pod waits.
fn volume_sources(volume: &Volume, dir: &Path) -> Result<Vec<VolumeSource>, String> {
    let sourced = |kind, name: &str, items: &Option<Vec<KeyToPath>>, optional: Option<bool>| {
        VolumeSource::Sourced(SourcedVolume {
            dir: dir.to_owned(),
            kind,
            name: name.to_owned(),
            items: items.clone(),
            optional: optional.unwrap_or(false),
        })
    };
    if volume.empty_dir.is_some() {
        return Ok(vec![VolumeSource::Empty]);
    }
    if let Some(map) = &volume.config_map {
        return Ok(vec![sourced(SourceKind::ConfigMap, &map.name, &map.items, map.optional)]);
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        return Ok(vec![sourced(SourceKind::Secret, &name, &secret.items, secret.optional)]);
    }
    let downward = |items: &[DownwardAPIVolumeFile]| -> Result<VolumeSource, String> {
        let mut files = Vec::new();
        for item in items {
            let field = item.field_ref.as_ref().ok_or_else(|| {
                format!(
                    "volume {}: downwardAPI item {:?}: only fieldRef is supported by the pod runner",
                    volume.name, item.path
                )
            })?;
            files.push((dir.join(&item.path), field.field_path.clone()));
        }
        Ok(VolumeSource::Downward(files))
    };
    if let Some(api) = &volume.downward_api {
        return Ok(vec![downward(api.items.as_deref().unwrap_or_default())?]);
    }
    if let Some(projected) = &volume.projected {
        let mut out = Vec::new();
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                if token.path.split('/').any(|p| p == "..") || token.path.starts_with('/') {
                    return Err(format!("volume {}: token path {:?} leaves the volume", volume.name, token.path));
                }
                out.push(VolumeSource::Token {
                    path: dir.join(&token.path),
                    audience: token.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: token.expiration_seconds.unwrap_or(3600),
                });
            } else if let Some(map) = &source.config_map {
                // The service-account admission plugin's volume names `kube-root-ca.crt`, which only the
                // controller manager's root-ca publisher (not run by the test clusters) writes.
                let optional = map.optional.or(volume.name.starts_with("kube-api-access-").then_some(true));
                out.push(sourced(SourceKind::ConfigMap, &map.name, &map.items, optional));
            } else if let Some(api) = &source.downward_api {
                out.push(downward(api.items.as_deref().unwrap_or_default())?);
            } else if let Some(secret) = &source.secret {
                out.push(sourced(SourceKind::Secret, &secret.name, &secret.items, secret.optional));
            } else {
                return Err(format!("volume {}: a projected source the pod runner does not support", volume.name));
            }
        }
        return Ok(out);
    }
    Err(format!("volume {}: a volume type the pod runner does not support", volume.name))
}

/// The kubelet renews a projected token once 80 % of its life has passed.
fn renewal_after(expiration_seconds: i64) -> u64 {
    u64::try_from(expiration_seconds.max(1)).unwrap_or(1).saturating_mul(4) / 5
}

fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let selected = |map: &Option<BTreeMap<String, String>>, prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.serviceAccountName" => {
            Some(pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into()))
        }
        "spec.nodeName" => Some(pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()),
        "status.podIP" | "status.hostIP" => Some("127.0.0.1".into()),
        _ => selected(&meta.labels, "metadata.labels['")
            .or_else(|| selected(&meta.annotations, "metadata.annotations['")),
    };
    value.ok_or_else(|| format!("fieldRef {path:?} is not supported by the pod runner"))
}

/// Replaces a leading mount path (whole path components only) by its directory.
fn rewrite_mount_paths(value: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount, dir) in mounts {
        let mount = mount.trim_end_matches('/');
        if let Some(rest) = value.strip_prefix(mount)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", dir.display());
        }
    }
    value.to_owned()
}

const PORT_FLAGS: &[&str] = &[
    "--dapr-http-port",
    "--dapr-grpc-port",
    "--dapr-internal-grpc-port",
    "--dapr-public-port",
    "--metrics-port",
    "--app-port",
];
const LOOPBACK_FLAGS: &[&str] = &[
    "--dapr-listen-addresses",
    "--dapr-internal-grpc-listen-address",
    "--metrics-listen-address",
    "--dapr-public-listen-address",
    "--app-channel-address",
];
const SERVICE_FLAGS: &[&str] = &["--sentry-address", "--control-plane-address"];

/// The sidecar's args for this pod's loopback ports (see the module doc).
pub fn rewrite_sidecar_args(
    args: &[String],
    ports: PodPorts,
    services: &BTreeMap<String, String>,
    mounts: &[(String, PathBuf)],
) -> Vec<String> {
    let port_for = |flag: &str| match flag {
        "--dapr-http-port" => ports.http,
        "--dapr-grpc-port" => ports.grpc,
        "--dapr-internal-grpc-port" => ports.internal,
        "--dapr-public-port" => ports.public,
        "--metrics-port" => ports.metrics,
        _ => ports.app,
    };
    let rewrite = |flag: &str, value: &str| -> String {
        if PORT_FLAGS.contains(&flag) {
            port_for(flag).to_string()
        } else if LOOPBACK_FLAGS.contains(&flag) {
            "127.0.0.1".to_owned()
        } else if let Some(to) = services.get(value) {
            to.clone()
        } else {
            rewrite_mount_paths(value, mounts)
        }
    };
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(flag_part) = arg.strip_prefix("--") else {
            out.push(rewrite_mount_paths(arg, mounts));
            continue;
        };
        let (flag, inline) = match flag_part.split_once('=') {
            Some((name, value)) => (format!("--{name}"), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        seen.push(flag.clone());
        let takes_value = PORT_FLAGS.contains(&flag.as_str())
            || LOOPBACK_FLAGS.contains(&flag.as_str())
            || SERVICE_FLAGS.contains(&flag.as_str());
        match inline {
            Some(value) => out.push(format!("{flag}={}", rewrite(&flag, &value))),
            None if takes_value && i < args.len() => {
                out.push(flag.clone());
                out.push(rewrite(&flag, &args[i]));
                i += 1;
            }
            None => out.push(arg.clone()),
        }
    }
    let has = |flag: &str| seen.iter().any(|f| f == flag);
    if has("--dapr-public-port") && !has("--dapr-public-listen-address") {
        // ward's default for the kubelet's probe port is all interfaces.
        out.push("--dapr-public-listen-address=127.0.0.1".into());
    }
    if !has("--metrics-port") && !out.iter().any(|a| a == "--enable-metrics=false") {
        out.push(format!("--metrics-port={}", ports.metrics));
    }
    if !has("--dapr-internal-grpc-listen-address") {
        out.push("--dapr-internal-grpc-listen-address=127.0.0.1".into());
    }
    out
}

/// `args` without `flags` (`--flag value` and `--flag=value`).
fn drop_flags(args: &[String], flags: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if flags.iter().any(|f| f == arg) {
            skip_value = true;
            continue;
        }
        if flags.iter().any(|f| arg.strip_prefix(f.as_str()).is_some_and(|rest| rest.starts_with('='))) {
            continue;
        }
        out.push(arg.clone());
    }
    out
}

/// Writes `content` to a temporary file beside `path` and renames it over `path`.
fn write_atomic(path: &Path, content: &[u8]) -> Result<(), String> {
    let parent = path.parent().ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Starts `command` under the crate's `sh` guard with stdout/stderr to the container's log files; with
/// `clear_env` the process gets only the command's own env (and `PATH`).
fn spawn_guarded(
    command: &Command,
    clear_env: bool,
    pod_dir: &Path,
    container: &str,
) -> Result<(Child, ChildStdin), String> {
    let open = |stream| {
        let path = log_path(pod_dir, container, stream);
        std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut guard = Command::new("sh");
    guard
        .arg("-c")
        .arg(crate::GUARD_SCRIPT)
        .arg("ward-pod-guard")
        .arg("")
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::piped())
        .stdout(open("stdout")?)
        .stderr(open("stderr")?);
    if clear_env {
        guard.env_clear();
    }
    // The guard needs `cat` and `sleep` from PATH even when the command's env is the pod's only.
    if let Some(path) = std::env::var_os("PATH") {
        guard.env("PATH", path);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => guard.env(key, value),
            None => guard.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        guard.current_dir(dir);
    }
    let mut child = guard.spawn().map_err(|e| format!("starting {:?}: {e}", command.get_program()))?;
    let stdin = child.stdin.take().ok_or("the guard has no stdin pipe")?;
    Ok((child, stdin))
}

/// Ports that are free now and below the kernel's ephemeral range (32768 and up), so a process binding `:0`
/// meanwhile cannot take one before the pod's process binds it.
fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()),
    );
    let mut ports = [0u16; N];
    let mut found = 0;
    for _ in 0..5000 {
        if found == N {
            break;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        if !ports[..found].contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports[found] = port;
            found += 1;
        }
    }
    if found < N {
        return Err("no free ports between 20000 and 32000".into());
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> PodPorts {
        PodPorts { http: 1, grpc: 2, internal: 3, public: 4, metrics: 5, app: 6 }
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn injected_sidecar_args_get_the_pods_loopback_ports_and_mapped_services() {
        let args = strings(&[
            "sidecar",
            "--mode",
            "kubernetes",
            "--dapr-http-port",
            "3500",
            "--dapr-grpc-port",
            "50001",
            "--dapr-internal-grpc-port",
            "50002",
            "--dapr-internal-grpc-listen-address",
            "0.0.0.0",
            "--dapr-listen-addresses",
            "[::1],127.0.0.1",
            "--dapr-public-port",
            "3501",
            "--app-port=8080",
            "--sentry-address",
            "dapr-sentry.dapr-system.svc.cluster.local:443",
            "--metrics-port",
            "9090",
            "--metrics-listen-address",
            "0.0.0.0",
            "--unix-domain-socket",
            "/var/run/dapr-sockets",
            "--enable-mtls",
            "--enable-metrics=true",
        ]);
        let services =
            BTreeMap::from([("dapr-sentry.dapr-system.svc.cluster.local:443".to_owned(), "127.0.0.1:7".to_owned())]);
        let mounts = vec![("/var/run/dapr-sockets".to_owned(), PathBuf::from("/tmp/p/volumes/uds"))];
        let out = rewrite_sidecar_args(&args, ports(), &services, &mounts);
        assert_eq!(
            out,
            strings(&[
                "sidecar",
                "--mode",
                "kubernetes",
                "--dapr-http-port",
                "1",
                "--dapr-grpc-port",
                "2",
                "--dapr-internal-grpc-port",
                "3",
                "--dapr-internal-grpc-listen-address",
                "127.0.0.1",
                "--dapr-listen-addresses",
                "127.0.0.1",
                "--dapr-public-port",
                "4",
                "--app-port=6",
                "--sentry-address",
                "127.0.0.1:7",
                "--metrics-port",
                "5",
                "--metrics-listen-address",
                "127.0.0.1",
                "--unix-domain-socket",
                "/tmp/p/volumes/uds",
                "--enable-mtls",
                "--enable-metrics=true",
                "--dapr-public-listen-address=127.0.0.1",
            ])
        );
    }

    #[test]
    fn missing_listen_flags_are_added_and_unknown_services_kept() {
        let args = strings(&["sidecar", "--control-plane-address", "elsewhere:443"]);
        let out = rewrite_sidecar_args(&args, ports(), &BTreeMap::new(), &[]);
        assert_eq!(
            out,
            strings(&[
                "sidecar",
                "--control-plane-address",
                "elsewhere:443",
                "--metrics-port=5",
                "--dapr-internal-grpc-listen-address=127.0.0.1",
            ])
        );
        let out = rewrite_sidecar_args(&strings(&["--enable-metrics=false"]), ports(), &BTreeMap::new(), &[]);
        assert!(!out.iter().any(|a| a.starts_with("--metrics-port")), "{out:?}");
    }

    #[test]
    fn dropped_flags_go_with_their_values() {
        let args =
            strings(&["sidecar", "--control-plane-address", "x:443", "--app-id", "a", "--control-plane-address=y"]);
        assert_eq!(drop_flags(&args, &["--control-plane-address".to_owned()]), strings(&["sidecar", "--app-id", "a"]));
    }

    #[test]
    fn mount_paths_are_rewritten_by_whole_components_longest_first() {
        let mounts = vec![
            ("/var/run/secrets/dapr.io/tls".to_owned(), PathBuf::from("/r/tls")),
            ("/var/run".to_owned(), PathBuf::from("/r/home")),
        ];
        assert_eq!(rewrite_mount_paths("/var/run/secrets/dapr.io/tls/ca.crt", &mounts), "/r/tls/ca.crt");
        assert_eq!(rewrite_mount_paths("/var/run", &mounts), "/r/home");
        assert_eq!(rewrite_mount_paths("/var/runner/x", &mounts), "/var/runner/x");
        assert_eq!(rewrite_mount_paths("relative/var/run", &mounts), "relative/var/run");
    }

    #[test]
    fn field_refs_resolve_and_unknown_ones_are_refused() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "a"}},
            "spec": {"serviceAccountName": "sa", "containers": []}
        }))
        .unwrap();
        assert_eq!(field_value(&pod, "metadata.name").unwrap(), "p");
        assert_eq!(field_value(&pod, "metadata.namespace").unwrap(), "ns");
        assert_eq!(field_value(&pod, "metadata.uid").unwrap(), "u-1");
        assert_eq!(field_value(&pod, "spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(field_value(&pod, "status.podIP").unwrap(), "127.0.0.1");
        assert_eq!(field_value(&pod, "metadata.labels['app']").unwrap(), "a");
        assert!(field_value(&pod, "status.phase").unwrap_err().contains("not supported"));
    }

    #[test]
    fn tokens_renew_at_four_fifths_of_their_life() {
        assert_eq!(renewal_after(7200), 5760);
        assert_eq!(renewal_after(600), 480);
        assert_eq!(renewal_after(-5), 0);
    }
}
