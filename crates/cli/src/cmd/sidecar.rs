//! `ward sidecar`: the data plane, a drop-in for `daprd` (same flag names). Flags are checked before anything
//! listens; a wrong flag or value exits non-zero with one line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use ward_identity::TrustDomain;
use ward_sidecar::audit::AuditTarget;
use ward_sidecar::{MetricsListen, MtlsOptions, Sidecar, SidecarOptions, UnsupportedFlag};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    app_id: String,
    #[arg(long)]
    app_port: Option<u16>,
    /// The protocol the app speaks: http, or grpc (invocations arrive as AppCallback/OnInvoke).
    #[arg(long, default_value = "http")]
    app_protocol: String,
    #[arg(long, default_value = "127.0.0.1")]
    app_channel_address: String,
    #[arg(long, default_value_t = 3500)]
    dapr_http_port: u16,
    /// The Dapr gRPC API (dapr.proto.runtime.v1.Dapr), on the same listen addresses as HTTP.
    #[arg(long, default_value_t = 50001)]
    dapr_grpc_port: u16,
    /// The mTLS port other sidecars call.
    #[arg(long, default_value_t = 50002)]
    dapr_internal_grpc_port: u16,
    /// ward's default is loopback; use 0.0.0.0 when sidecars on other hosts must reach this one.
    #[arg(long, default_value = "127.0.0.1")]
    dapr_internal_grpc_listen_address: IpAddr,
    /// Prometheus `/metrics` port (daprd's default 9090; 0 picks a free port). With the default, a port another
    /// sidecar on this host holds only costs the metrics (a warning); a port given here must be free.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Where `/metrics` listens: loopback by default, like the API.
    #[arg(long, default_value = "127.0.0.1")]
    metrics_listen_address: IpAddr,
    /// Comma-separated IPs for the public API. ward's default is loopback only (daprd's is all interfaces).
    #[arg(long, default_value = "127.0.0.1")]
    dapr_listen_addresses: String,
    #[arg(long = "resources-path", alias = "components-path")]
    resources_path: Vec<PathBuf>,
    /// A Dapr Configuration file (accessControl, nameResolution, ...); with `--control-plane-address`
    /// (Kubernetes mode) the name of a Configuration resource in the sidecar's namespace, as daprd.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kubernetes mode: the operator (`dapr-api.<namespace>.svc.cluster.local:443`), the source of the
    /// Configuration, components and subscriptions; its identity must be `.../ns/<cp-namespace>/dapr-operator`.
    #[arg(long)]
    control_plane_address: Option<String>,
    #[arg(long)]
    enable_mtls: bool,
    #[arg(long)]
    sentry_address: Option<String>,
    /// Trust domain of sentry's identity; default: this app's trust domain (accessControl.trustDomain).
    #[arg(long, env = "DAPR_CONTROLPLANE_TRUST_DOMAIN", value_parser = TrustDomain::new)]
    control_plane_trust_domain: Option<TrustDomain>,
    #[arg(long, env = "DAPR_CONTROLPLANE_NAMESPACE", default_value = "default")]
    control_plane_namespace: String,
    /// PEM file with the trust anchors (alternative to env DAPR_TRUST_ANCHORS).
    #[arg(long)]
    trust_anchors_file: Option<PathBuf>,
    /// Log one line per API call (tri-state as daprd: absent = the Configuration decides).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_api_logging: Option<bool>,
    /// standalone, or kubernetes (identity from the projected token, resources from the operator).
    #[arg(long, default_value = "standalone")]
    mode: String,
    /// Largest request body accepted, e.g. 4Mi. Default: the Configuration's spec.ward.maxBodySize, else 4Mi
    /// (daprd's default).
    #[arg(long)]
    max_body_size: Option<String>,
    /// Refuse development shortcuts: require mTLS, reject plaintext peers and dev identity markers, refuse
    /// configuration ward does not honour. `spec.ward.productionMode: true` in the Configuration does the same.
    #[arg(long)]
    production: bool,
    /// Append audit events to FILE (hash-chained JSON lines) instead of stderr.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Kubernetes mode: no built-in `kubernetes` secret store (Dapr's flag; the injector sets it for
    /// `dapr.io/disable-builtin-k8s-secret-store: "true"`).
    #[arg(long)]
    disable_builtin_k8s_secret_store: bool,
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    namespace: String,
    /// A file of accepted API tokens, one per line (watched: rotate without a restart). Overrides DAPR_API_TOKEN.
    #[arg(long, env = "DAPR_API_TOKEN_FILE")]
    dapr_api_token_file: Option<PathBuf>,
    /// A file whose first line is the token sent to the app (watched). Overrides APP_API_TOKEN.
    #[arg(long, env = "APP_API_TOKEN_FILE")]
    app_api_token_file: Option<PathBuf>,
    /// JWT mode: the API token must be a JWT signed by a key of this JWKS (a file, watched; or an https:// URL,
    /// refreshed every 5 minutes).
    #[arg(long, requires_all = ["dapr_api_token_issuer", "dapr_api_token_audience"])]
    dapr_api_token_jwks: Option<String>,
    #[arg(long)]
    dapr_api_token_issuer: Option<String>,
    #[arg(long)]
    dapr_api_token_audience: Option<String>,
    /// How long shutdown waits for in-flight requests (default 5s, or `--dapr-graceful-shutdown-seconds`).
    #[arg(long, value_parser = super::parse_duration)]
    drain_timeout: Option<Duration>,
    /// Threads that serve requests. One by default, as linkerd2-proxy does: a sidecar shares its machine with its
    /// app, and on a busy machine a second worker costs more in wake-ups than it adds (measured in
    /// `docs/benchmarks.md`). `0`: one per CPU this process may use (cgroup CPU quotas included).
    #[arg(long, env = "WARD_WORKER_THREADS", default_value_t = 1)]
    worker_threads: usize,
    #[command(flatten)]
    daprd: DaprdFlags,
    #[command(flatten)]
    listeners: super::ListenerArgs,
    #[command(flatten)]
    log: super::LogArgs,
}

/// daprd flags a daprd command line carries. Each is applied, or listed by [`DaprdFlags::unsupported`] (the
/// settings rule: refused in production, one warning in development). None is ever silently ignored.
#[derive(Debug, clap::Args)]
struct DaprdFlags {
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_app_health_check: Option<bool>,
    /// The path probed on an HTTP app (default `/healthz`).
    #[arg(long)]
    app_health_check_path: Option<String>,
    /// Seconds between probes (default 5).
    #[arg(long)]
    app_health_probe_interval: Option<u64>,
    /// Milliseconds a probe may take (default 500).
    #[arg(long)]
    app_health_probe_timeout: Option<u64>,
    /// Failed probes in a row before the app is unhealthy (default 3).
    #[arg(long)]
    app_health_threshold: Option<u32>,
    #[arg(long)]
    placement_host_address: Option<String>,
    #[arg(long)]
    scheduler_host_address: Option<String>,
    /// Calls in flight to the app at most (-1 or 0: unlimited, daprd's default); beyond, 429.
    #[arg(long, allow_negative_numbers = true)]
    app_max_concurrency: Option<i64>,
    /// daprd's older body limit in MB; `--max-body-size` wins when both are given.
    #[arg(long)]
    dapr_http_max_request_size: Option<u64>,
    #[arg(long)]
    dapr_http_read_buffer_size: Option<u64>,
    /// Shutdown drain in seconds; `--drain-timeout` wins when both are given.
    #[arg(long)]
    dapr_graceful_shutdown_seconds: Option<u64>,
    #[arg(long)]
    dapr_block_shutdown_duration: Option<String>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_metrics: Option<bool>,
    /// Health only (`/v1.0/healthz`), no token, on all interfaces by default: for the kubelet's probes (Dapr's
    /// public port, 3501 in Kubernetes). Not opened unless given.
    #[arg(long)]
    dapr_public_port: Option<u16>,
    #[arg(long, default_value = "0.0.0.0")]
    dapr_public_listen_address: std::net::IpAddr,
    #[arg(long)]
    unix_domain_socket: Option<PathBuf>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_profiling: Option<bool>,
}

impl DaprdFlags {
    /// The flags given that ward does not implement, each with the reason.
    fn unsupported(&self) -> Vec<UnsupportedFlag> {
        let health = "has no effect without --enable-app-health-check";
        let probing = self.enable_app_health_check == Some(true);
        let mut out = Vec::new();
        let mut push = |given: bool, flag: &'static str, why: &'static str| {
            if given {
                out.push(UnsupportedFlag { flag, why });
            }
        };
        push(!probing && self.app_health_check_path.is_some(), "--app-health-check-path", health);
        push(!probing && self.app_health_probe_interval.is_some(), "--app-health-probe-interval", health);
        push(!probing && self.app_health_probe_timeout.is_some(), "--app-health-probe-timeout", health);
        push(!probing && self.app_health_threshold.is_some(), "--app-health-threshold", health);
        push(self.placement_host_address.is_some(), "--placement-host-address", "ward has no actors or workflows");
        push(
            self.scheduler_host_address.is_some(),
            "--scheduler-host-address",
            "ward has no jobs, actors or workflows",
        );
        push(
            self.dapr_http_read_buffer_size.is_some(),
            "--dapr-http-read-buffer-size",
            "ward's header limits are fixed",
        );
        push(
            self.dapr_block_shutdown_duration.is_some(),
            "--dapr-block-shutdown-duration",
            "ward does not block shutdown waiting for the app",
        );
        push(self.enable_profiling == Some(true), "--enable-profiling", "ward has no profiling endpoint");
        out
    }
}

impl Args {
    /// The daprd flags given that ward does not implement (for the injector's test of its command line).
    #[cfg(test)]
    pub(crate) fn unsupported_flag_names(&self) -> Vec<&'static str> {
        self.daprd.unsupported().iter().map(|u| u.flag).collect()
    }
}

/// Where the sentry token is in a pod: `DAPR_SENTRY_TOKEN_FILE`, else the projected volume the injector mounts,
/// else (with a warning; refused in production) the service account's default token, which is not bound to the
/// pod and which sentry therefore refuses anyway (Dapr's fallback path).
fn kubernetes_token_file(production: bool) -> anyhow::Result<PathBuf> {
    const PROJECTED: &str = "/var/run/secrets/dapr.io/sentrytoken/token";
    const FALLBACK: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    if let Some(path) = std::env::var_os("DAPR_SENTRY_TOKEN_FILE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if std::path::Path::new(PROJECTED).exists() {
        return Ok(PathBuf::from(PROJECTED));
    }
    if production {
        bail!(
            "no sentry token at {PROJECTED} (the injector's dapr-identity-token volume) and DAPR_SENTRY_TOKEN_FILE is unset; the service account's own token is refused in production"
        );
    }
    tracing::warn!(
        "no sentry token at {PROJECTED}: falling back to {FALLBACK}, which is not bound to the pod (sentry will refuse it)"
    );
    Ok(PathBuf::from(FALLBACK))
}

/// Dapr's rule for `--mode kubernetes`: the sidecar must not run as UID 0 unless
/// `DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK=true`.
fn refuse_root_in_kubernetes() -> anyhow::Result<()> {
    if std::env::var("DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(());
    }
    // The real and effective UIDs, from the kernel's own account of this process (no libc call needed).
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status for the UID check")?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).context("no Uid line in /proc/self/status")?;
    if uids.split_whitespace().take(2).any(|uid| uid == "0") {
        bail!(
            "--mode kubernetes refuses to run as UID 0 (set a non-root runAsUser, or DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK=true)"
        );
    }
    Ok(())
}

/// `--control-plane-address`: Kubernetes mode only; `--config` is then a resource name, and resource directories
/// would be a second, conflicting source.
fn control_plane(args: &Args, kubernetes: bool) -> anyhow::Result<Option<ward_sidecar::ControlPlaneOptions>> {
    let Some(address) = args.control_plane_address.clone().filter(|a| !a.is_empty()) else {
        if kubernetes {
            tracing::warn!(
                "--mode kubernetes without --control-plane-address: the Configuration and components come from \
                 --config / --resources-path files, not from the operator"
            );
        }
        return Ok(None);
    };
    if !kubernetes {
        bail!("--control-plane-address is used in --mode kubernetes only (as daprd)");
    }
    if !args.resources_path.is_empty() {
        bail!("--resources-path and --control-plane-address are two sources of components; use one");
    }
    let config_name = match &args.config {
        None => None,
        Some(name) => {
            let name = name.to_str().unwrap_or_default();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid {
                bail!(
                    "--config {name:?}: with --control-plane-address it names a Configuration resource in the \
                     sidecar's namespace (lowercase letters, digits, '-' and '.'), not a file"
                );
            }
            Some(name.to_owned())
        }
    };
    Ok(Some(ward_sidecar::ControlPlaneOptions { address, config_name }))
}

async fn options(args: &Args) -> anyhow::Result<SidecarOptions> {
    let kubernetes = match args.mode.as_str() {
        "standalone" => false,
        "kubernetes" => true,
        other => bail!("--mode {other:?} is not supported (standalone or kubernetes)"),
    };
    if kubernetes {
        refuse_root_in_kubernetes()?;
    }
    let control_plane = control_plane(args, kubernetes)?;
    let app_protocol_grpc = match args.app_protocol.as_str() {
        "http" => false,
        "grpc" => true,
        other => bail!("--app-protocol {other:?} is not supported (http or grpc)"),
    };
    let listen_addresses = ward_gate::parse_listen_addresses(&args.dapr_listen_addresses)
        .map_err(|err| anyhow::anyhow!("--dapr-listen-addresses: {err}"))?;
    let max_body_size = args
        .max_body_size
        .as_deref()
        .map(ward_config::parse_byte_quantity)
        .transpose()
        .map_err(|err| anyhow::anyhow!("--max-body-size: {err}"))?
        .or(args.daprd.dapr_http_max_request_size.map(|mb| mb.saturating_mul(1024 * 1024)));
    let drain_timeout = args
        .drain_timeout
        .or(args.daprd.dapr_graceful_shutdown_seconds.map(Duration::from_secs))
        .unwrap_or(Duration::from_secs(5));
    let app_max_concurrency = match args.daprd.app_max_concurrency {
        None | Some(-1) | Some(0) => None,
        Some(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => bail!("--app-max-concurrency {n}: must be positive, or -1 for unlimited"),
    };
    // In Kubernetes the anchors are the mounted `dapr-root-ca.crt` (DAPR_TRUST_ANCHORS_FILE, set by the injector),
    // followed through root rotations.
    let trust_anchors_file = args.trust_anchors_file.clone().or_else(|| {
        kubernetes.then(|| std::env::var_os("DAPR_TRUST_ANCHORS_FILE").filter(|v| !v.is_empty()).map(PathBuf::from))?
    });
    let mtls = if args.enable_mtls || kubernetes {
        let sentry_address = args.sentry_address.clone().context(if kubernetes {
            "--mode kubernetes needs --sentry-address (the injector passes dapr-sentry.<namespace>.svc:443)"
        } else {
            "--enable-mtls needs --sentry-address"
        })?;
        let trust_anchors_pem = match (&trust_anchors_file, std::env::var("DAPR_TRUST_ANCHORS")) {
            (Some(path), _) => {
                std::fs::read(path).with_context(|| format!("--trust-anchors-file {}", path.display()))?
            }
            (None, Ok(pem)) if !pem.trim().is_empty() => pem.into_bytes(),
            _ => {
                bail!("trust anchors are required with --enable-mtls (env DAPR_TRUST_ANCHORS or --trust-anchors-file)")
            }
        };
        Some(MtlsOptions {
            sentry_address,
            trust_anchors_pem,
            control_plane_trust_domain: args.control_plane_trust_domain.clone(),
            control_plane_namespace: args.control_plane_namespace.clone(),
            sentry_token_file: if kubernetes {
                Some(kubernetes_token_file(args.production)?)
            } else {
                std::env::var_os("DAPR_SENTRY_TOKEN_FILE").filter(|v| !v.is_empty()).map(PathBuf::from)
            },
            kubernetes,
            trust_anchors_file: trust_anchors_file.filter(|_| kubernetes),
        })
    } else {
        None
    };
    // Token sources: a watched file wins over the static env value; JWT mode adds signed tokens.
    let mut api_tokens = match &args.dapr_api_token_file {
        Some(path) => ward_gate::ApiTokens::from_file(path.clone())?,
        None => ward_gate::ApiTokens::from_env_value(std::env::var(ward_gate::DAPR_API_TOKEN_ENV).ok().as_deref())?,
    };
    if let Some(jwks) = &args.dapr_api_token_jwks {
        let verifier = ward_gate::JwtVerifier::from_config(&ward_gate::JwtConfig {
            jwks: jwks.clone(),
            issuer: args.dapr_api_token_issuer.clone().unwrap_or_default(),
            audience: args.dapr_api_token_audience.clone().unwrap_or_default(),
        })
        .await?;
        api_tokens = api_tokens.with_jwt(verifier);
    }
    let app_token = match &args.app_api_token_file {
        Some(path) => ward_gate::AppToken::from_file(path.clone())?,
        None => ward_gate::AppToken::from_env_value(std::env::var(ward_gate::APP_API_TOKEN_ENV).ok().as_deref())?,
    };
    Ok(SidecarOptions {
        app_id: args.app_id.clone(),
        namespace: args.namespace.clone(),
        app_port: args.app_port,
        app_channel_address: args.app_channel_address.clone(),
        app_protocol_grpc,
        http_port: args.dapr_http_port,
        grpc_port: args.dapr_grpc_port,
        internal_port: args.dapr_internal_grpc_port,
        internal_listen_address: args.dapr_internal_grpc_listen_address,
        listen_addresses,
        config_path: if control_plane.is_some() { None } else { args.config.clone() },
        mtls,
        production: args.production,
        max_body_size,
        ward_home: super::ward_home(),
        audit: match (&args.audit_log, args.log.log_as_json) {
            (Some(file), _) => AuditTarget::File(file.clone()),
            // With --log-as-json the audit events on stderr are log objects like every other line.
            (None, true) => AuditTarget::StderrLog {
                app_id: args.app_id.clone(),
                instance: super::logjson::DaprJson::new(&args.app_id).instance,
            },
            (None, false) => AuditTarget::Stderr,
        },
        api_tokens,
        app_token,
        enable_api_logging: args.enable_api_logging,
        drain_timeout,
        unsupported_flags: args.daprd.unsupported(),
        app_max_concurrency,
        listener_limits: args.listeners.limits()?,
        resources_paths: args.resources_path.clone(),
        builtin_kubernetes_secret_store: kubernetes && !args.disable_builtin_k8s_secret_store,
        control_plane,
        // daprd filters components by namespace only when NAMESPACE is set (DAPR-FACTS §4.1).
        filter_namespace: std::env::var_os("NAMESPACE").is_some_and(|v| !v.is_empty()),
        app_health: (args.daprd.enable_app_health_check == Some(true)).then(|| {
            let defaults = ward_sidecar::AppHealthCheck::default();
            ward_sidecar::AppHealthCheck {
                path: args.daprd.app_health_check_path.clone().unwrap_or(defaults.path),
                interval: args
                    .daprd
                    .app_health_probe_interval
                    .map_or(defaults.interval, Duration::from_secs)
                    .max(Duration::from_secs(1)),
                timeout: args
                    .daprd
                    .app_health_probe_timeout
                    .map_or(defaults.timeout, Duration::from_millis)
                    .max(Duration::from_millis(1)),
                threshold: args.daprd.app_health_threshold.unwrap_or(defaults.threshold).max(1),
            }
        }),
        // daprd serves metrics unless --enable-metrics=false.
        metrics: (args.daprd.enable_metrics != Some(false)).then(|| MetricsListen {
            address: std::net::SocketAddr::new(args.metrics_listen_address, args.metrics_port.unwrap_or(9090)),
            explicit: args.metrics_port.is_some(),
        }),
        unix_domain_socket: args.daprd.unix_domain_socket.clone(),
        public_health: args
            .daprd
            .dapr_public_port
            .map(|port| std::net::SocketAddr::new(args.daprd.dapr_public_listen_address, port)),
    })
}

/// The request-serving runtime: `workers` threads, or one per usable CPU for `0`. A multi-thread runtime even with
/// one worker, so that the blocking pool (SQLite, file reads) and `block_in_place` stay available.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.log.init(&args.app_id)?;
    let runtime = runtime(args.worker_threads).context("starting the async runtime")?;
    runtime.block_on(async move {
        // Token files are watched by tasks, so options are built inside the runtime.
        let options = options(&args).await?;
        let sidecar = Sidecar::start(options).await?;
        // Read back from the runtime, not echoed from the flag: this is what serves requests. Logged once started,
        // so that a refused start stays one line.
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(workers, "request-serving threads");
        // With --unix-domain-socket the APIs are the two socket files (`unix:<path>`), as the SDKs address them.
        let (http, grpc) = match &sidecar.api_sockets {
            Some((http, grpc)) => (format!("unix:{}", http.display()), format!("unix:{}", grpc.display())),
            None => (
                sidecar.http_addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                sidecar.grpc_addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            ),
        };
        let metrics = sidecar.metrics_addr.map(|a| format!(" metrics={a}")).unwrap_or_default();
        let metrics = format!("{metrics}{}", sidecar.public_addr.map(|a| format!(" public={a}")).unwrap_or_default());
        println!(
            "ward sidecar ready: app-id={} http={http} grpc={grpc} internal={}{metrics} elapsed-ms={}",
            args.app_id,
            sidecar.internal_addr,
            sidecar.started().elapsed().as_millis()
        );
        super::sentry::shutdown_signal().await;
        tracing::info!("shutting down");
        sidecar.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
