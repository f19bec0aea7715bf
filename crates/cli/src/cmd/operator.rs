//! `ward operator`: Dapr's operator (the `operator` process): Dapr's CRDs served to sidecars over mTLS through
//! Dapr's operator gRPC API, and the `<app-id>-dapr` Services. Flags and environment variables are Dapr's where
//! Dapr has them; the work is in `ward_kube::operator`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ward_kube::operator::{Operator, OperatorOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The operator API's port (gRPC over mTLS; Service `dapr-api` port 443 forwards to it).
    #[arg(long, default_value_t = ward_kube::operator::DEFAULT_PORT)]
    port: u16,
    #[arg(long, default_value = "0.0.0.0")]
    listen_address: IpAddr,
    /// Plain-HTTP `GET /healthz`.
    #[arg(long, default_value_t = 8080)]
    healthz_port: u16,
    #[arg(long, default_value = "0.0.0.0")]
    healthz_listen_address: IpAddr,
    /// The trust anchors (the mounted `dapr-root-ca.crt` ConfigMap): sidecars' certificates must chain to them,
    /// and sentry is verified with them. Re-read when the file changes.
    #[arg(long, env = "DAPR_TRUST_ANCHORS_FILE", default_value = "/var/run/secrets/dapr.io/tls/ca.crt")]
    trust_anchors_file: PathBuf,
    /// Sentry (`host:port`). Default: `dapr-sentry.<namespace>.svc.<cluster domain>:443`.
    #[arg(long)]
    sentry_address: Option<String>,
    /// The token proving the operator's identity to sentry (the projected service-account token).
    #[arg(long, env = "DAPR_SENTRY_TOKEN_FILE", default_value = "/var/run/secrets/dapr.io/sentrytoken/token")]
    sentry_token_file: PathBuf,
    /// Kubeconfig; default: in-cluster service account, else KUBECONFIG.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The control plane's namespace (the operator's identity and sentry's).
    #[arg(long, env = "NAMESPACE", default_value = "dapr-system")]
    namespace: String,
    #[arg(long, env = "DAPR_CONTROLPLANE_TRUST_DOMAIN", default_value = "cluster.local")]
    control_plane_trust_domain: String,
    #[arg(long, env = "KUBE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    kube_cluster_domain: String,
    /// Do not keep `<app-id>-dapr` Services for annotated Deployments and StatefulSets (Dapr's flag).
    #[arg(long)]
    disable_service_reconciler: bool,
    /// Events an update stream may have queued for a slow client before it is disconnected.
    #[arg(long, default_value_t = ward_kube::operator::DEFAULT_STREAM_QUEUE)]
    stream_queue: usize,
    #[command(flatten)]
    listeners: super::ListenerArgs,
    #[command(flatten)]
    log: super::LogArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.log.init("dapr-operator")?;
    let limits = args.listeners.limits()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let anchors = std::fs::read(&args.trust_anchors_file)
            .with_context(|| format!("--trust-anchors-file {}", args.trust_anchors_file.display()))?;
        let address = args
            .sentry_address
            .clone()
            .unwrap_or_else(|| format!("dapr-sentry.{}.svc.{}:443", args.namespace, args.kube_cluster_domain));
        tracing::info!(sentry = %address, "serving certificate from sentry");
        let sentry = ward_sentry::control_plane_client_config(
            &args.control_plane_trust_domain,
            &args.namespace,
            ward_kube::operator::OPERATOR_APP_ID,
            address,
            &anchors,
            args.sentry_token_file.clone(),
            true,
        )
        .with_context(|| format!("--trust-anchors-file {}", args.trust_anchors_file.display()))?;
        let client = ward_kube::connect(args.kubeconfig.as_deref()).await.context("connecting to the API server")?;
        let operator = Operator::start(OperatorOptions {
            client,
            listen: SocketAddr::new(args.listen_address, args.port),
            healthz_listen: SocketAddr::new(args.healthz_listen_address, args.healthz_port),
            sentry,
            trust_anchors_file: args.trust_anchors_file.clone(),
            limits,
            manage_services: !args.disable_service_reconciler,
            stream_queue: args.stream_queue,
            feed_capacity: ward_kube::operator::DEFAULT_FEED_CAPACITY,
            skew: ward_identity::DEFAULT_CLOCK_SKEW,
        })
        .await?;
        // One machine-readable line on stdout, so scripts and tests can find ports chosen with 0.
        println!("ward operator ready: grpc={} healthz={}", operator.addr, operator.healthz_addr);
        super::sentry::shutdown_signal().await;
        tracing::info!("shutting down");
        operator.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
