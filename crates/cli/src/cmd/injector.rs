//! `ward injector`: the sidecar injector (Dapr's `injector` process), a mutating admission webhook. Flags and
//! environment variables are Dapr's where Dapr has them; the work is in `ward-injector`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ward_injector::{CaBundleSync, Injector, InjectorConfig, ServeOptions, ServingCert};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The webhook's HTTPS port (`POST /mutate`).
    #[arg(long, default_value_t = 4000)]
    port: u16,
    #[arg(long, default_value = "0.0.0.0")]
    listen_address: IpAddr,
    /// Plain-HTTP `GET /healthz`.
    #[arg(long, default_value_t = 8080)]
    healthz_port: u16,
    #[arg(long, default_value = "0.0.0.0")]
    healthz_listen_address: IpAddr,
    /// Serving certificate chain (PEM), watched and reloaded. It must chain to the trust anchors and name
    /// `dapr-sidecar-injector.<namespace>.svc`. Without it (and --tls-key-file) the certificate comes from sentry.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM), watched and reloaded with the certificate.
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// The trust anchors (the mounted `dapr-root-ca.crt` ConfigMap): the `caBundle` of the webhook configuration
    /// is kept equal to this file, and sentry is verified with it. Without it the `caBundle` is left as installed.
    #[arg(long, env = "DAPR_TRUST_ANCHORS_FILE")]
    trust_anchors_file: Option<PathBuf>,
    /// Sentry (`host:port`), when the certificate comes from sentry. Default:
    /// `dapr-sentry.<namespace>.svc.<cluster domain>:443`.
    #[arg(long)]
    sentry_address: Option<String>,
    /// The token proving the injector's identity to sentry (the projected service-account token).
    #[arg(long, env = "DAPR_SENTRY_TOKEN_FILE", default_value = "/var/run/secrets/dapr.io/sentrytoken/token")]
    sentry_token_file: PathBuf,
    /// The `MutatingWebhookConfiguration` whose `caBundle` is kept in sync.
    #[arg(long, default_value = "dapr-sidecar-injector")]
    webhook_name: String,
    /// Kubeconfig for the `caBundle` sync; default: in-cluster service account, else KUBECONFIG.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The control plane's namespace (sentry's address and SPIFFE ID; pods there get no sidecar).
    #[arg(long, env = "NAMESPACE", default_value = ward_injector::DEFAULT_CONTROL_PLANE_NAMESPACE)]
    namespace: String,
    #[arg(long, env = "SIDECAR_IMAGE", default_value = ward_injector::DEFAULT_SIDECAR_IMAGE)]
    sidecar_image: String,
    #[arg(long, env = "DAPR_CONTROLPLANE_TRUST_DOMAIN", default_value = ward_injector::DEFAULT_CONTROL_PLANE_TRUST_DOMAIN)]
    control_plane_trust_domain: String,
    #[arg(long, env = "KUBE_CLUSTER_DOMAIN", default_value = ward_injector::DEFAULT_KUBE_CLUSTER_DOMAIN)]
    kube_cluster_domain: String,
    /// Inject `--production` into every sidecar (refuse development shortcuts and settings ward does not apply).
    #[arg(long, env = "WARD_SIDECAR_PRODUCTION")]
    sidecar_production: bool,
    #[command(flatten)]
    listeners: super::ListenerArgs,
    #[command(flatten)]
    log: super::LogArgs,
}

impl Args {
    fn config(&self) -> InjectorConfig {
        InjectorConfig {
            sidecar_image: self.sidecar_image.clone(),
            control_plane_namespace: self.namespace.clone(),
            control_plane_trust_domain: self.control_plane_trust_domain.clone(),
            kube_cluster_domain: self.kube_cluster_domain.clone(),
            sidecar_production: self.sidecar_production,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.log.init("dapr-sidecar-injector")?;
    let config = args.config();
    // Refused before anything listens.
    config.validate().context("--namespace/--sidecar-image/--control-plane-trust-domain/--kube-cluster-domain")?;
    let limits = args.listeners.limits()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let ca_bundle = match &args.trust_anchors_file {
            Some(path) => {
                let client = ward_kube::connect(args.kubeconfig.as_deref())
                    .await
                    .context("connecting to the API server for the caBundle sync")?;
                Some(CaBundleSync {
                    client,
                    webhook_name: args.webhook_name.clone(),
                    trust_anchors_file: path.clone(),
                    poll: Duration::from_secs(1),
                    resync: Duration::from_secs(10),
                })
            }
            None => {
                tracing::warn!("no --trust-anchors-file: the webhook configuration's caBundle is not kept in sync");
                None
            }
        };
        let serving = match (&args.tls_cert_file, &args.tls_key_file) {
            (Some(cert), Some(key)) => ServingCert::Files { cert: cert.clone(), key: key.clone() },
            _ => {
                // The certificate from sentry, for `dapr-injector`; sentry is verified with the trust anchors.
                let anchors_path = args
                    .trust_anchors_file
                    .as_ref()
                    .context("without --tls-cert-file/--tls-key-file the certificate comes from sentry, which needs --trust-anchors-file")?;
                let anchors = std::fs::read(anchors_path)
                    .with_context(|| format!("--trust-anchors-file {}", anchors_path.display()))?;
                let address = args.sentry_address.clone().unwrap_or_else(|| config.sentry_address());
                tracing::info!(sentry = %address, "serving certificate from sentry");
                ServingCert::Sentry(
                    ward_injector::sentry_client_config(&config, address, &anchors, args.sentry_token_file.clone(), true)
                        .with_context(|| format!("--trust-anchors-file {}", anchors_path.display()))?,
                )
            }
        };
        let injector = Injector::start(ServeOptions {
            config,
            listen: SocketAddr::new(args.listen_address, args.port),
            healthz_listen: SocketAddr::new(args.healthz_listen_address, args.healthz_port),
            serving,
            limits,
            ca_bundle,
        })
        .await?;
        // One machine-readable line on stdout, so scripts and tests can find ports chosen with 0.
        println!("ward injector ready: webhook={} healthz={}", injector.addr, injector.healthz_addr);
        super::sentry::shutdown_signal().await;
        tracing::info!("shutting down");
        injector.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    //! The injected command line must be one `ward sidecar` parses: the `args` of the injected container, put
    //! through the `ward` binary's own clap parser.

    use clap::Parser;
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::admission::{AdmissionRequest, AdmissionReview};
    use serde_json::{Value, json};
    use ward_injector::annotations as a;

    fn injected_args(annotations: Value) -> Vec<String> {
        let mut annotations = annotations;
        annotations[a::ENABLED] = json!("true");
        annotations[a::APP_ID] = json!("orders");
        let pod = json!({"metadata": {"name": "orders-0", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app:1"}], "volumes": [{"name": "v", "emptyDir": {}}]}});
        let review: AdmissionReview<Pod> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "name": "orders-0",
                "namespace": "shop", "operation": "CREATE", "userInfo": {}, "object": pod.clone()}
        }))
        .unwrap();
        let request: AdmissionRequest<Pod> = review.try_into().unwrap();
        let config = ward_injector::InjectorConfig { sidecar_production: true, ..Default::default() };
        let response = ward_injector::admit(&config, &request);
        assert!(response.allowed, "{}", response.result.message);
        let patch: json_patch::Patch = serde_json::from_slice(response.patch.as_deref().unwrap()).unwrap();
        let mut doc = pod;
        json_patch::patch(&mut doc, &patch).unwrap();
        let daprd = doc["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == "daprd").unwrap();
        assert_eq!(daprd["command"], json!(["/ward"]));
        daprd["args"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    }

    fn parse(args: &[String]) -> Box<crate::cmd::sidecar::Args> {
        let argv = std::iter::once("ward".to_owned()).chain(args.iter().cloned());
        match crate::Cli::try_parse_from(argv) {
            Ok(crate::Cli { command: crate::Command::Sidecar(args) }) => args,
            Ok(other) => panic!("not `ward sidecar`: {other:?}"),
            Err(err) => panic!("`ward sidecar` refuses the injected args {args:?}:\n{err}"),
        }
    }

    #[test]
    fn injected_args_parse_with_ward_sidecars_own_parser() {
        let cases = [
            json!({}),
            json!({a::APP_PORT: "8080", a::CONFIG: "appconfig", a::APP_PROTOCOL: "grpc", a::LOG_LEVEL: "debug",
                a::LOG_AS_JSON: "true", a::APP_MAX_CONCURRENCY: "-1", a::ENABLE_METRICS: "false",
                a::ENABLE_API_LOGGING: "false", a::GRACEFUL_SHUTDOWN_SECONDS: "0", a::MAX_BODY_SIZE: "8Mi",
                a::UNIX_DOMAIN_SOCKET_PATH: "/tmp/sock", a::APP_CHANNEL_ADDRESS: "127.0.0.1",
                a::LISTEN_ADDRESSES: "0.0.0.0", a::API_TOKEN_SECRET: "t"}),
            json!({a::ENABLE_APP_HEALTH_CHECK: "true", a::APP_HEALTH_CHECK_PATH: "/ready",
                a::APP_HEALTH_PROBE_INTERVAL: "2", a::APP_HEALTH_PROBE_TIMEOUT: "300", a::APP_HEALTH_THRESHOLD: "4",
                a::HTTP_MAX_REQUEST_SIZE: "8", a::METRICS_PORT: "9191", a::GRPC_PORT: "50011",
                a::INTERNAL_GRPC_PORT: "50012", a::APP_MAX_CONCURRENCY: "10", a::ENABLE_API_LOGGING: "true"}),
        ];
        for annotations in cases {
            let args = injected_args(annotations);
            let sidecar = parse(&args);
            // The flags the injector sets, as `ward sidecar` reads them.
            let unsupported = sidecar.unsupported_flag_names();
            // Everything the injector passes is applied by `ward sidecar` (`--dapr-public-port` included: the health
            // port the kubelet probes).
            assert!(unsupported.is_empty(), "{unsupported:?} in {args:?}");
            // The listen addresses pass the sidecar's own parser.
            let i = args.iter().position(|x| x == "--dapr-listen-addresses").unwrap();
            ward_gate::parse_listen_addresses(&args[i + 1]).unwrap();
        }
    }
}
