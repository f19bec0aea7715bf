//! `ward sentry`: the CA process (Dapr Sentry's role), flags named as Dapr's where Dapr has them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ward_identity::{SpiffeId, TrustDomain};
use ward_sentry::{Ca, JoinTokens, JwksValidator, JwtRules, SentryConfig, Validator, ValidatorKind};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory with ca.crt, issuer.crt and issuer.key; generated there when empty. Default: $WARD_HOME/ca.
    #[arg(long)]
    issuer_credentials: Option<PathBuf>,
    /// The one trust domain this CA signs for (its own identity and every workload's).
    #[arg(long, default_value = "public", value_parser = TrustDomain::new)]
    trust_domain: TrustDomain,
    #[arg(long, default_value_t = 50001)]
    port: u16,
    #[arg(long, default_value_t = 8080)]
    healthz_port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    listen_address: IpAddr,
    #[arg(long, default_value = "127.0.0.1")]
    healthz_listen_address: IpAddr,
    /// Prometheus `/metrics` port (daprd's default 9090; 0 picks a free port). With the default, a port in use
    /// only costs the metrics (a warning); a port given here must be free.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Where `/metrics` listens: loopback by default.
    #[arg(long, default_value = "127.0.0.1")]
    metrics_listen_address: IpAddr,
    /// `--enable-metrics=false` serves no `/metrics`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    enable_metrics: bool,
    /// Lifetime of workload certificates (default: the Configuration's spec.mtls.workloadCertTTL, else 24h).
    #[arg(long, value_parser = super::parse_duration)]
    workload_cert_ttl: Option<Duration>,
    /// How far `not_before` is backdated (default: the Configuration's spec.mtls.allowedClockSkew, else 15m).
    #[arg(long, value_parser = super::parse_duration)]
    allowed_clock_skew: Option<Duration>,
    /// A Dapr Configuration for the control plane (Dapr's `daprsystem`): sentry applies spec.mtls.workloadCertTTL and
    /// spec.mtls.allowedClockSkew; anything else it sets is refused with --production and warned about otherwise.
    #[arg(long)]
    config: Option<PathBuf>,
    /// How callers prove they may have the identity they ask for: insecure, join-token or jwks.
    #[arg(long, default_value = "insecure")]
    token_validator: ValidatorKind,
    /// join-token validator: file of "<namespace>/<app-id> <token>" lines ("<namespace>/*" for a namespace).
    /// Each token buys one certificate; used tokens are recorded in "<file>.used" and stay used after a restart.
    #[arg(long)]
    join_tokens: Option<PathBuf>,
    /// jwks validator: a JWKS JSON file, or an https:// URL (fetched at start, refreshed every 5 minutes).
    #[arg(long)]
    jwks: Option<String>,
    /// jwks validator: the one accepted `iss` claim (required with --token-validator jwks).
    #[arg(long)]
    jwks_issuer: Option<String>,
    /// jwks validator: the `aud` a token must carry. Default: sentry's own SPIFFE ID.
    #[arg(long)]
    jwks_audience: Option<String>,
    /// jwks validator: the longest accepted token lifetime, `exp` minus `iat` (`iat` is then required).
    #[arg(long, default_value = "1h", value_parser = super::parse_duration)]
    jwks_max_token_lifetime: Duration,
    /// Lifetime of root and issuer when they are generated.
    #[arg(long, default_value = "8760h", value_parser = super::parse_duration)]
    ca_valid_for: Duration,
    /// Refuse insecure settings (the insecure validator).
    #[arg(long)]
    production: bool,
    /// Every certificate decision on a credential (issued, or refused with the reason) as a hash-chained audit line
    /// (`ward audit verify FILE`). An issuance that cannot be recorded is withheld.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Both listeners (gRPC and healthz): a TLS handshake must complete within this after accept.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    handshake_timeout: Duration,
    /// Both listeners: the first request (HTTP/1.1 headers, or the HTTP/2 preface and first HEADERS) must arrive
    /// within this after accept or handshake; later HTTP/1.1 headers within this of their first byte.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    header_read_timeout: Duration,
    /// Both listeners: a connection with no request in flight for this long is closed.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    idle_timeout: Duration,
    /// Both listeners: open connections per listener; one beyond is closed at accept.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Sentry's own namespace (part of its SPIFFE ID).
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    namespace: String,
    /// `standalone` (files, the validator of --token-validator) or `kubernetes`: CA material in Secret
    /// `dapr-trust-bundle` of --namespace (generated when absent), roots published to ConfigMaps
    /// `dapr-root-ca.crt`, callers proven by pod-bound service-account tokens (TokenReview), --config naming the
    /// control-plane Configuration resource (default `daprsystem`) in --namespace.
    #[arg(long, default_value = "standalone", value_parser = ["standalone", "kubernetes"])]
    mode: String,
    /// Kubernetes mode: a kubeconfig file (default: in-cluster service account, else KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes mode: the cluster's DNS domain (the injector's certificate names its Service in it).
    #[arg(long, env = "KUBE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Kubernetes mode: how long a successful TokenReview is reused for the same token (the API server caches its
    /// answers for 10 s itself; the token's pod is fetched on every request regardless). 0 asks every time.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    token_review_cache: Duration,
    /// Kubernetes mode: start a root rotation when the newest root has lived this fraction of its life (0 < f < 1;
    /// `0` turns automatic rotation off — `ward mtls renew-certificate -k` still starts one). The new root lives
    /// --ca-valid-for.
    #[arg(long, default_value_t = 0.8)]
    root_rotation_at: f64,
    /// Kubernetes mode: during a rotation, how long the new root is published before the issuer switches to it
    /// (kubelets refresh mounted ConfigMaps within about a minute; sidecars then reload the file).
    #[arg(long, default_value = "2m", value_parser = super::parse_duration)]
    root_rotation_propagation: Duration,
    #[command(flatten)]
    log: super::LogArgs,
}

/// What a control-plane Configuration sets that sentry does not use (sentry reads only `spec.mtls`'s lifetimes).
fn unused_by_sentry(c: &ward_config::Configuration) -> Vec<String> {
    let mut unused: Vec<String> = c.unsupported.iter().map(|u| u.field.clone()).collect();
    let mut note = |set: bool, field: &str| {
        if set {
            unused.push(field.to_owned());
        }
    };
    note(c.access_control.is_some(), "spec.accessControl");
    note(c.secrets.is_some(), "spec.secrets");
    note(c.api.is_some(), "spec.api");
    note(c.name_resolution.is_some(), "spec.nameResolution");
    note(!c.components_deny.is_empty(), "spec.components.deny");
    note(!c.http_pipeline.is_empty(), "spec.httpPipeline");
    note(!c.app_http_pipeline.is_empty(), "spec.appHttpPipeline");
    note(c.api_logging != ward_config::ApiLogging::default(), "spec.logging");
    let ward_but_bindings = ward_config::WardSpec { app_id_bindings: Vec::new(), ..c.ward.clone() };
    note(ward_but_bindings != ward_config::WardSpec::default(), "spec.ward");
    unused
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.log.init("dapr-sentry")?;
    let kubernetes = args.mode == "kubernetes";
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let kube_client = if kubernetes {
        if args.token_validator != ValidatorKind::Insecure || args.join_tokens.is_some() || args.jwks.is_some() {
            // Dapr's rule: in Kubernetes the built-in validator is the one; ward runs no second one beside it.
            anyhow::bail!(
                "--mode kubernetes validates pod-bound service-account tokens; --token-validator, --join-tokens and --jwks do not apply"
            );
        }
        Some(runtime.block_on(ward_kube::connect(args.kubeconfig.as_deref())).context("--mode kubernetes")?)
    } else {
        if args.kubeconfig.is_some() {
            anyhow::bail!("--kubeconfig needs --mode kubernetes");
        }
        None
    };
    let configuration = match (&args.config, &kube_client) {
        (Some(path), None) => Some(ward_config::load_configuration(path)?),
        (None, None) => None,
        (name, Some(client)) => {
            // The control-plane Configuration is read only from sentry's own namespace (Dapr 1.12.1's fix).
            let name = name
                .as_ref()
                .map_or_else(|| ward_kube::sentry::CONTROL_PLANE_CONFIGURATION.to_owned(), |p| p.display().to_string());
            let found = runtime
                .block_on(ward_kube::sentry::read_control_plane_configuration(client, &args.namespace, &name))
                .map_err(|err| anyhow::anyhow!("Configuration {}/{name}: {err}", args.namespace))?;
            if found.is_none() {
                tracing::warn!(
                    "Configuration {}/{name} not found: default certificate lifetimes, no app-id bindings",
                    args.namespace
                );
            }
            found
        }
    };
    if let Some(c) = &configuration {
        for field in unused_by_sentry(c) {
            if args.production {
                anyhow::bail!("{}: {field}: not used by sentry (refused in production mode)", c.source.display());
            }
            tracing::warn!("{}: {field}: NOT APPLIED: sentry uses only spec.mtls lifetimes", c.source.display());
        }
    }
    let mtls = configuration.as_ref().map(|c| c.mtls.clone()).unwrap_or_default();
    let workload_cert_ttl = args.workload_cert_ttl.or(mtls.workload_cert_ttl).unwrap_or(Duration::from_secs(24 * 3600));
    let allowed_clock_skew =
        args.allowed_clock_skew.or(mtls.allowed_clock_skew).unwrap_or(Duration::from_secs(15 * 60));
    let issuer_dir = args.issuer_credentials.clone().unwrap_or_else(|| {
        if kubernetes { PathBuf::from("/var/run/secrets/dapr.io/credentials") } else { super::ward_home().join("ca") }
    });
    let own_id = SpiffeId::dapr(&args.trust_domain, &args.namespace, ward_sentry::server::SENTRY_APP_ID)
        .with_context(|| format!("--namespace {:?}", args.namespace))?;
    let mut background: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> = Vec::new();
    let validator = match (&kube_client, args.token_validator) {
        (Some(client), _) => {
            use ward_kube::{sentry, trust_bundle};
            let contents = runtime.block_on(trust_bundle::ensure_secret(
                client,
                &args.namespace,
                &args.trust_domain,
                args.ca_valid_for,
            ))?;
            trust_bundle::write_dir(&issuer_dir, &contents)?;
            let bindings = Arc::new(arc_swap::ArcSwap::from_pointee(sentry::AppIdBindings::from_config(
                configuration.as_ref().map(|c| c.ward.app_id_bindings.as_slice()).unwrap_or_default(),
            )));
            let config_name = args
                .config
                .as_ref()
                .map_or_else(|| sentry::CONTROL_PLANE_CONFIGURATION.to_owned(), |p| p.display().to_string());
            let (roots_tx, roots_rx) = tokio::sync::watch::channel(contents.roots_pem.clone());
            background.push(Box::pin(sentry::watch_bindings(
                client.clone(),
                args.namespace.clone(),
                config_name,
                bindings.clone(),
            )));
            background.push(Box::pin(trust_bundle::mirror_secret(
                client.clone(),
                args.namespace.clone(),
                issuer_dir.clone(),
                roots_tx,
            )));
            background.push(Box::pin(trust_bundle::publish_roots(client.clone(), args.namespace.clone(), roots_rx)));
            if !(0.0..1.0).contains(&args.root_rotation_at) {
                anyhow::bail!("--root-rotation-at must be at least 0 and below 1 (0 turns automatic rotation off)");
            }
            let timing = ward_kube::rotation::RotationTiming {
                propagation: args.root_rotation_propagation,
                workload_ttl: workload_cert_ttl,
                allowed_clock_skew,
            };
            let automatic = (args.root_rotation_at > 0.0).then_some((args.root_rotation_at, args.ca_valid_for));
            background.push(Box::pin(ward_kube::rotation::drive(
                client.clone(),
                args.namespace.clone(),
                args.trust_domain.clone(),
                timing,
                automatic,
                Duration::from_secs(2),
            )));
            let validator = sentry::PodValidator::new(
                client.clone(),
                sentry::PodValidatorConfig {
                    audience: own_id.to_string(),
                    control_plane_namespace: args.namespace.clone(),
                    control_plane_trust_domain: args.trust_domain.clone(),
                    cluster_domain: args.cluster_domain.clone(),
                    production: args.production,
                    review_cache: args.token_review_cache,
                },
                bindings,
            );
            Validator::Kubernetes(Arc::new(validator))
        }
        (None, ValidatorKind::Kubernetes) => anyhow::bail!("the kubernetes validator needs --mode kubernetes"),
        (None, ValidatorKind::Insecure) => Validator::Insecure,
        (None, ValidatorKind::JoinToken) => {
            let path = args.join_tokens.as_ref().context("--token-validator join-token needs --join-tokens FILE")?;
            Validator::JoinToken(JoinTokens::load(path)?)
        }
        (None, ValidatorKind::Jwks) => {
            let source = args.jwks.as_ref().context("--token-validator jwks needs --jwks FILE|URL")?;
            let issuer = args.jwks_issuer.as_ref().context("--token-validator jwks needs --jwks-issuer ISSUER")?;
            let audience = args.jwks_audience.clone().unwrap_or_else(|| own_id.to_string());
            let rules = JwtRules::new(issuer.as_str(), audience)
                .and_then(|rules| rules.with_max_lifetime(args.jwks_max_token_lifetime))?;
            if ward_fetch::is_url(source) {
                let validator = runtime.block_on(JwksValidator::from_url(source, rules))?;
                let _guard = runtime.enter();
                validator.refresh_every(source.clone(), Duration::from_secs(300));
                Validator::Jwks(validator)
            } else {
                Validator::Jwks(JwksValidator::load(std::path::Path::new(source), rules)?)
            }
        }
    };
    if args.token_validator != ValidatorKind::Jwks
        && (args.jwks.is_some() || args.jwks_issuer.is_some() || args.jwks_audience.is_some())
    {
        // Nothing configured is silently ignored.
        anyhow::bail!("--jwks, --jwks-issuer and --jwks-audience need --token-validator jwks");
    }
    let config = SentryConfig {
        issuer_dir,
        trust_domain: args.trust_domain,
        namespace: args.namespace,
        listen: SocketAddr::new(args.listen_address, args.port),
        healthz_listen: SocketAddr::new(args.healthz_listen_address, args.healthz_port),
        workload_ttl: workload_cert_ttl,
        allowed_clock_skew,
        generated_ca_ttl: args.ca_valid_for,
        production: args.production,
        limits: ward_net::ListenerLimits {
            handshake_timeout: args.handshake_timeout,
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
            ..ward_net::ListenerLimits::default()
        },
        metrics: args.enable_metrics.then(|| ward_net::MetricsListen {
            address: SocketAddr::new(args.metrics_listen_address, args.metrics_port.unwrap_or(9090)),
            explicit: args.metrics_port.is_some(),
        }),
    };
    // Refused before anything starts: a zero timeout or cap would switch a protection off.
    config.limits.validate().context("--handshake-timeout/--header-read-timeout/--idle-timeout/--max-connections")?;
    let mut ca = Ca::new(config, validator)?;
    if let Some(path) = &args.audit_log {
        ca = ca.with_audit(ward_sentry::audit::SentryAudit::open(path)?);
    }
    let ca = Arc::new(ca);
    for task in background {
        runtime.spawn(task);
    }
    runtime.block_on(async move {
        ward_sentry::run(ca, shutdown_signal(), |addrs| {
            // One machine-readable line on stdout, so scripts and tests can find ports chosen with 0.
            let metrics = addrs.metrics.map(|a| format!(" metrics={a}")).unwrap_or_default();
            println!("ward sentry ready: grpc={} healthz={}{metrics}", addrs.grpc, addrs.healthz);
        })
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
