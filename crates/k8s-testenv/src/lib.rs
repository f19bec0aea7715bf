//! A real Kubernetes API server for ward's tests: `etcd` and `kube-apiserver` from the folder named by
//! `KUBEBUILDER_ASSETS` (the envtest convention; `scripts/k8s-assets.sh` builds them from Debian's sources and
//! prints the folder), listening on 127.0.0.1 only, with:
//!
//! - its own throwaway PKI (rcgen): a CA, the serving certificate (IP SAN 127.0.0.1), an admin client certificate
//!   in `system:masters`;
//! - service-account token issuing (TokenRequest, TokenReview, bound tokens) signed by an EC P-256 key the test
//!   can read ([`TestCluster::sa_signing_key_pem`]) to mint edge-case tokens the API server then judges itself;
//! - RBAC authorization, so impersonating clients ([`TestCluster::client_as`]) test least privilege;
//! - optionally `kube-controller-manager` (namespace deletion, default service accounts, garbage collection).
//!
//! There is no kubelet: pods are admitted (webhooks included) and stored, never run.
//!
//! Processes are tied to the test process through a pipe: each runs under a tiny `sh` guard that kills it when
//! its standard input reaches end of file, which the kernel delivers however the test process ends (success,
//! panic, SIGKILL). So a cluster shared by every test of a binary ([`TestCluster::shared`]) never outlives it,
//! although Rust runs no destructor for statics.

#![forbid(unsafe_code)]

pub mod pod_runner;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// How to get the binaries, printed when a test is skipped.
pub const HOW_TO_PROVIDE: &str =
    "bash scripts/k8s-assets.sh && export KUBEBUILDER_ASSETS=\"$HOME/.cache/ward-k8s/bin\"";

/// Set (to anything but `0`) to turn a missing `KUBEBUILDER_ASSETS` into a failure instead of a skip: `.ci/run`
/// sets it so CI cannot pass by skipping the cluster tests.
pub const REQUIRE_ENV: &str = "WARD_REQUIRE_K8S";

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also run `kube-controller-manager` (namespace deletion, `default` service accounts, GC, Deployments).
    pub controller_manager: bool,
}

/// A running test cluster. Dropping it stops its processes and removes its state directory.
pub struct TestCluster {
    api_url: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    ca_pem: String,
    sa_signing_key_pem: String,
    sa_issuer: String,
    guards: Vec<Guard>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster").field("api_url", &self.api_url).field("dir", &self.dir).finish()
    }
}

/// One process under its `sh` guard. Dropping the pipe's write end is what stops it.
struct Guard {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // The guard sends SIGTERM, waits up to two seconds, then SIGKILL; wait for it so the ports are free.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("[k8s-testenv] {} guard did not exit in time; killed", self.name);
    }
}

/// The folder with `etcd` and `kube-apiserver`, if `KUBEBUILDER_ASSETS` names one that has both.
pub fn assets() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?);
    (dir.join("etcd").is_file() && dir.join("kube-apiserver").is_file()).then_some(dir)
}

/// For a test that needs the cluster: `None` (after printing why the test is skipped) when no binaries are
/// provided, unless [`REQUIRE_ENV`] is set, in which case it panics.
pub fn shared_or_skip(test: &str) -> Option<&'static TestCluster> {
    if assets().is_none() {
        let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "{test}: {REQUIRE_ENV} is set but KUBEBUILDER_ASSETS has no etcd/kube-apiserver; run: {HOW_TO_PROVIDE}"
        );
        eprintln!("SKIPPED {test}: needs a Kubernetes API server; run: {HOW_TO_PROVIDE}");
        return None;
    }
    Some(TestCluster::shared())
}

impl TestCluster {
    /// The cluster shared by every test of this test binary (started on first use, about 5 s). Tests isolate
    /// themselves with a fresh namespace each ([`TestCluster::fresh_namespace`]).
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<TestCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let assets = assets().unwrap_or_else(|| panic!("KUBEBUILDER_ASSETS is not set; run: {HOW_TO_PROVIDE}"));
            TestCluster::start(&assets, Options::default()).unwrap_or_else(|err| panic!("test cluster: {err}"))
        })
    }

    /// Starts a cluster of its own (for tests that change cluster-wide state). Blocks until `/readyz` answers.
    pub fn start(assets: &Path, options: Options) -> Result<TestCluster, String> {
        let started = Instant::now();
        let dir = std::env::temp_dir().join(format!("ward-k8s-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(dir.join("etcd")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let pki = Pki::generate().map_err(|e| format!("test PKI: {e}"))?;
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok::<_, String>(path)
        };
        let ca = write("ca.crt", &pki.ca_pem)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert_pem)?;
        let serving_key = write("apiserver.key", &pki.serving_key_pem)?;
        let admin_cert = write("admin.crt", &pki.admin_cert_pem)?;
        let admin_key = write("admin.key", &pki.admin_key_pem)?;
        let sa_key = write("sa.key", &pki.sa_key_pem)?;
        let sa_public = write("sa.pub", &pki.sa_public_pem)?;

        let [api_port, etcd_port, peer_port] = free_ports::<3>()?;
        let api_url = format!("https://127.0.0.1:{api_port}");
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let kubeconfig = write(
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: ward-test\n  cluster:\n    server: {api_url}\n    \
                 certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    \
                 client-key: {key}\ncontexts:\n- name: ward-test\n  context: {{cluster: ward-test, user: admin, \
                 namespace: default}}\ncurrent-context: ward-test\n",
                ca = ca.display(),
                cert = admin_cert.display(),
                key = admin_key.display(),
            ),
        )?;

        let mut cluster = TestCluster {
            api_url: api_url.clone(),
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
            ca_pem: pki.ca_pem.clone(),
            sa_signing_key_pem: pki.sa_key_pem.clone(),
            sa_issuer: api_url.clone(),
            guards: Vec::new(),
        };
        // etcd's guard also removes the state directory once etcd is gone (it is the last one dropped).
        cluster.guards.push(spawn_guarded(
            "etcd",
            &assets.join("etcd"),
            &[
                "--name=ward-test".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=ward-test={peer_url}"),
                "--initial-cluster-state=new".into(),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
                "--unsafe-no-fsync=true".into(),
            ],
            &dir,
            Some(&dir),
        )?);
        let version = api_server_minor(&assets.join("kube-apiserver"));
        let mut args = vec![
            "--advertise-address=127.0.0.1".to_owned(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--etcd-servers={etcd_url}"),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", ca.display()),
            format!("--service-account-issuer={api_url}"),
            format!("--service-account-key-file={}", sa_public.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            format!("--api-audiences={api_url}"),
            "--authorization-mode=RBAC".into(),
            "--anonymous-auth=true".into(),
            "--allow-privileged=true".into(),
            // Allocation bookkeeping only: nothing is ever sent to these addresses.
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            // The `kubernetes` Endpoints cannot hold 127.0.0.1.
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
            "--logtostderr=true".into(),
            "--v=1".into(),
        ];
        if version.is_some_and(|minor| minor <= 23) {
            args.push("--insecure-port=0".into());
        }
        if version.is_some_and(|minor| minor <= 20) {
            args.push("--feature-gates=ServiceAccountIssuerDiscovery=true,BoundServiceAccountTokenVolume=true".into());
        }
        cluster.guards.push(spawn_guarded("kube-apiserver", &assets.join("kube-apiserver"), &args, &dir, None)?);
        cluster.wait_ready(Duration::from_secs(90))?;
        if options.controller_manager {
            let kcm = assets.join("kube-controller-manager");
            if !kcm.is_file() {
                return Err(format!("{} is missing (needed for Options::controller_manager)", kcm.display()));
            }
            cluster.guards.push(spawn_guarded(
                "kube-controller-manager",
                &kcm,
                &[
                    format!("--kubeconfig={}", kubeconfig.display()),
                    "--controllers=serviceaccount,namespace,garbagecollector,deployment,replicaset".into(),
                    format!("--root-ca-file={}", ca.display()),
                    format!("--service-account-private-key-file={}", sa_key.display()),
                    "--use-service-account-credentials=false".into(),
                    "--leader-elect=false".into(),
                    "--port=0".into(),
                    "--secure-port=0".into(),
                    "--logtostderr=true".into(),
                ],
                &dir,
                None,
            )?);
        }
        eprintln!(
            "[k8s-testenv] cluster {api_url} ready in {:.1}s ({})",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        Ok(cluster)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let kubeconfig = self.kubeconfig.clone();
        let deadline = Instant::now() + limit;
        // Its own runtime on its own thread: callers may already be inside a runtime.
        let ready = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let client = admin_client(&kubeconfig, None, &[]).await?;
                let mut last = String::new();
                while Instant::now() < deadline {
                    let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
                    match client.request_text(request).await {
                        Ok(body) if body.trim() == "ok" => return Ok(()),
                        Ok(body) => last = body,
                        Err(err) => last = err.to_string(),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(format!("kube-apiserver not ready in {limit:?}: {last}"))
            })
        })
        .join()
        .map_err(|_| "readiness thread panicked".to_owned())?;
        if let Err(err) = ready {
            let exited = self.guards.iter_mut().find_map(|guard| match guard.child.try_wait() {
                Ok(Some(status)) => Some((guard.name, status)),
                _ => None,
            });
            if let Some((name, status)) = exited {
                return Err(format!("{name} exited ({status}); log: {}", self.log_tail(name)));
            }
            return Err(format!("{err}; kube-apiserver log: {}", self.log_tail("kube-apiserver")));
        }
        Ok(())
    }

    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// A kubeconfig file for the admin user (give it to `ward … -k` processes as `KUBECONFIG`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster CA (PEM): what the API server's serving certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The service-account token signing key (EC P-256 PKCS#8 PEM, so ES256).
    pub fn sa_signing_key_pem(&self) -> &str {
        &self.sa_signing_key_pem
    }

    /// The `iss` of the cluster's service-account tokens.
    pub fn sa_issuer(&self) -> &str {
        &self.sa_issuer
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> kube::Client {
        admin_client(&self.kubeconfig, None, &[]).await.expect("admin client")
    }

    /// A client impersonating `user` (and `groups`), e.g. `system:serviceaccount:dapr-system:dapr-operator` with
    /// `system:serviceaccounts` and `system:serviceaccounts:dapr-system`: RBAC then answers as for that user.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        admin_client(&self.kubeconfig, Some(user), groups).await.expect("impersonating client")
    }

    /// A client acting as service account `namespace/name`, with the groups Kubernetes gives service accounts.
    pub async fn client_as_service_account(&self, namespace: &str, name: &str) -> kube::Client {
        let groups = ["system:serviceaccounts".to_owned(), format!("system:serviceaccounts:{namespace}")];
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        self.client_as(&format!("system:serviceaccount:{namespace}:{name}"), &groups).await
    }

    /// Creates a namespace named `<prefix>-<unique>` (with the `kubernetes.io/metadata.name` label that 1.21+
    /// servers add by themselves) and returns its name.
    pub async fn fresh_namespace(&self, client: &kube::Client, prefix: &str) -> String {
        let name = format!("{prefix}-{}", unique());
        create_namespace(client, &name).await;
        name
    }
}

/// Creates namespace `name` (labelled like 1.21+ servers do) unless it exists.
pub async fn create_namespace(client: &kube::Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}
    }))
    .expect("namespace");
    match namespaces.create(&kube::api::PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("creating namespace {name}: {err}"),
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Reverse order: controller manager and API server before etcd, whose guard removes the directory.
        while let Some(guard) = self.guards.pop() {
            drop(guard);
        }
    }
}

pub(crate) async fn admin_client(
    kubeconfig: &Path,
    impersonate: Option<&str>,
    groups: &[&str],
) -> Result<kube::Client, String> {
    let file = Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let mut config =
        kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await.map_err(|e| e.to_string())?;
    if let Some(user) = impersonate {
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    }
    config.read_timeout = Some(Duration::from_secs(30));
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// The `sh` guard: `sh -c GUARD_SCRIPT name CLEANUP PROGRAM ARGS…` runs PROGRAM, kills it (TERM, then KILL after
/// 2 s) when the guard's standard input reaches end of file, then removes CLEANUP if not empty.
// An asynchronous list's stdin is /dev/null in a non-interactive shell, so the pipe is kept on fd 3 for the
// watcher. The guard exits with the program, so a program that dies is seen as an exited child.
pub(crate) const GUARD_SCRIPT: &str = r#"
cleanup=$1; shift
exec 3<&0
"$@" </dev/null 3<&- &
child=$!
{ cat <&3 >/dev/null; kill -TERM "$child" 2>/dev/null; sleep 2; kill -KILL "$child" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$child"; status=$?
kill "$watcher" 2>/dev/null
[ -n "$cleanup" ] && rm -rf "$cleanup"
exit $status
"#;

/// Starts `program args…` under `sh`, which kills it (TERM, then KILL after 2 s) when its own standard input
/// closes, then removes `cleanup` if given. Output goes to `<dir>/<name>.log`.
fn spawn_guarded(
    name: &'static str,
    program: &Path,
    args: &[String],
    dir: &Path,
    cleanup: Option<&Path>,
) -> Result<Guard, String> {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(GUARD_SCRIPT)
        .arg("ward-k8s-guard")
        .arg(cleanup.map(|p| p.display().to_string()).unwrap_or_default())
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", program.display()))?;
    let stdin = child.stdin.take();
    Ok(Guard { name, child, stdin })
}

fn api_server_minor(binary: &Path) -> Option<u32> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    // "Kubernetes v1.20.2"
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split_whitespace().nth(1)?;
    version.trim_start_matches('v').split('.').nth(1)?.parse().ok()
}

fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    // Bound together so they differ; released just before the servers bind them.
    let listeners: Vec<TcpListener> =
        (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(|e| e.to_string())?.port();
    }
    Ok(ports)
}

/// Unique enough for names in one machine's test runs: time-based plus a process-wide counter.
fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    format!("{:x}{:x}", nanos % 0xfffff, COUNTER.fetch_add(1, Ordering::Relaxed))
}

struct Pki {
    ca_pem: String,
    serving_cert_pem: String,
    serving_key_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    sa_key_pem: String,
    sa_public_pem: String,
}

impl Pki {
    fn generate() -> Result<Pki, rcgen::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
            SanType,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "ward-test-cluster-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
        ])?;
        serving.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
        admin.distinguished_name.push(DnType::CommonName, "ward-test-admin");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa_key = KeyPair::generate()?;
        Ok(Pki {
            ca_pem: ca_cert.pem(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            sa_key_pem: sa_key.serialize_pem(),
            sa_public_pem: sa_key.public_key_pem(),
        })
    }
}

/// Dapr's `configurations.dapr.io` CRD (v1alpha1, `spec` kept as written), applied and waited for until
/// Established. The full set of CRDs is in `deploy/kubernetes/`; tests of sentry and sidecars need only this one.
pub async fn install_configuration_crd(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "configurations.dapr.io"},
        "spec": {"group": "dapr.io", "scope": "Namespaced",
            "names": {"kind": "Configuration", "plural": "configurations", "singular": "configuration",
                "listKind": "ConfigurationList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}
    }))
    .expect("CRD");
    let params = kube::api::PatchParams::apply("ward-test").force();
    crds.patch("configurations.dapr.io", &params, &kube::api::Patch::Apply(&crd)).await.expect("apply CRD");
    for _ in 0..100 {
        let established = crds
            .get("configurations.dapr.io")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("configurations.dapr.io never became Established");
}

/// Creates service account `account` in `namespace` (unless it exists) and pod `name` running as it with
/// `annotations`; returns the stored pod (with its uid).
pub async fn annotated_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    account: &str,
    annotations: serde_json::Value,
) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    let post = kube::api::PostParams::default();
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
    let object = serde_json::from_value(serde_json::json!({"metadata": {"name": account}})).expect("account");
    match accounts.create(&post, &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("creating service account {namespace}/{account}: {err}"),
    }
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
    let pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"serviceAccountName": account, "containers": [{"name": "app", "image": "app:1"}]}
    }))
    .expect("pod");
    pods.create(&post, &pod).await.unwrap_or_else(|err| panic!("creating pod {namespace}/{name}: {err}"))
}

/// A token of service account `account` for `audience`, bound to `pod` when given (what a kubelet mounts from a
/// projected volume), valid two hours.
pub async fn bound_token(
    client: &kube::Client,
    namespace: &str,
    account: &str,
    pod: Option<&k8s_openapi::api::core::v1::Pod>,
    audience: &str,
) -> String {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let mut spec = serde_json::json!({"audiences": [audience], "expirationSeconds": 7200});
    if let Some(pod) = pod {
        spec["boundObjectRef"] = serde_json::json!({
            "kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": pod.metadata.uid
        });
    }
    let request: TokenRequest = serde_json::from_value(serde_json::json!({ "spec": spec })).expect("request");
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
    accounts
        .create_token_request(account, &kube::api::PostParams::default(), &request)
        .await
        .unwrap_or_else(|err| panic!("token for {namespace}/{account}: {err}"))
        .status
        .expect("token status")
        .token
}
