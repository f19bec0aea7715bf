//! Start-up and shutdown of one sidecar: wiring only. Settings are resolved once (`settings.rs`); each listener,
//! layer and core is handed exactly the handles it uses.
//!
//! Order matters and is fail-closed: the configuration is validated and every setting resolved (or refused), the
//! components built, the SVID obtained, and only then does anything listen. Shutdown stops accepting, drains
//! in-flight requests within a bound, and deregisters from name resolution.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use ward_components::nameresolution::{
    KubernetesDns, KubernetesOptions, OVERRIDES_ENV, RegistryOptions, SqliteRegistry,
};
use ward_identity::{SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};

use crate::audit::{AuditSink, AuditTarget};
use crate::components::{Components, RegistryOptions as ComponentOptions};
use crate::inbound::InboundHandles;
use crate::inbound::accept::AcceptMode;
use crate::inbound::app_channel::{AppChannel, AppChannelOptions};
use crate::invoke::Invoker;
use crate::listeners::ListenerControl;
use crate::metadata::{AppConnection, MetadataCore};
use crate::public::{ApiHandles, ApiState, Readiness};
use crate::settings::Settings;
use crate::state::StateCore;
use crate::transport::{Mtls, Outbound, Transport};
use crate::watcher::{Reloadable, Watcher};

/// Everything a sidecar needs to start, already parsed and validated by the caller (the CLI).
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    pub app_id: String,
    pub namespace: String,
    pub app_port: Option<u16>,
    pub app_channel_address: String,
    /// `--app-protocol grpc`: invocations reach the app as `AppCallback/OnInvoke`, proxied gRPC calls as gRPC.
    pub app_protocol_grpc: bool,
    pub http_port: u16,
    /// The public gRPC API port (`--dapr-grpc-port`).
    pub grpc_port: u16,
    pub internal_port: u16,
    pub internal_listen_address: IpAddr,
    pub listen_addresses: Vec<IpAddr>,
    pub config_path: Option<PathBuf>,
    pub mtls: Option<MtlsOptions>,
    pub production: bool,
    /// `--max-body-size` when given (else `spec.ward.maxBodySize`, else 4Mi: see `Settings`).
    pub max_body_size: Option<u64>,
    pub ward_home: PathBuf,
    pub audit: AuditTarget,
    /// `DAPR_API_TOKEN` (static, file-rotated or JWT): what the app must present on the public API.
    pub api_tokens: ward_gate::ApiTokens,
    /// `APP_API_TOKEN`: sent to the app as `dapr-api-token` on every request the sidecar makes to it.
    pub app_token: ward_gate::AppToken,
    /// `--enable-api-logging` (tri-state: `None` lets the Configuration decide).
    pub enable_api_logging: Option<bool>,
    /// daprd flags given on the command line that ward accepts but does not implement (the settings rule applies).
    pub unsupported_flags: Vec<crate::settings::UnsupportedFlag>,
    /// `--app-max-concurrency`: at most this many calls in flight to the app; beyond, 429.
    pub app_max_concurrency: Option<usize>,
    /// Handshake, header-read and idle timeouts and the connection cap of every listener.
    pub listener_limits: ward_net::ListenerLimits,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// `--resources-path` directories (components).
    pub resources_paths: Vec<PathBuf>,
    /// Kubernetes mode without `--disable-builtin-k8s-secret-store`: the built-in `kubernetes` secret store.
    pub builtin_kubernetes_secret_store: bool,
    /// Whether env `NAMESPACE` was set: as daprd, components are filtered by namespace only then.
    pub filter_namespace: bool,
    /// `/metrics` (`--enable-metrics`, `--metrics-port`, `--metrics-listen-address`); `None` when disabled.
    pub metrics: Option<ward_net::MetricsListen>,
    /// `--dapr-public-port` (with `--dapr-public-listen-address`): health only (`/v1.0/healthz`,
    /// `/v1.0/healthz/outbound`), no API token, for probes from outside the pod (the injector points the kubelet's
    /// probes at it); the API itself stays on its loopback listeners.
    pub public_health: Option<SocketAddr>,
    /// `--enable-app-health-check` and its probe flags; `None` when off.
    pub app_health: Option<crate::app_health::AppHealthCheck>,
    /// `--unix-domain-socket DIR`: the HTTP and gRPC APIs listen on `DIR/dapr-http-<app-id>.socket` and
    /// `DIR/dapr-grpc-<app-id>.socket` (mode 0600) instead of TCP, as daprd.
    pub unix_domain_socket: Option<PathBuf>,
    /// `--control-plane-address` (Kubernetes mode): the Configuration named by `--config`, the components and the
    /// subscriptions come from the operator instead of files.
    pub control_plane: Option<crate::control_plane::ControlPlaneOptions>,
}

/// How to obtain an SVID.
#[derive(Debug, Clone)]
pub struct MtlsOptions {
    pub sentry_address: String,
    pub trust_anchors_pem: Vec<u8>,
    pub control_plane_trust_domain: Option<TrustDomain>,
    pub control_plane_namespace: String,
    pub sentry_token_file: Option<PathBuf>,
    /// Kubernetes mode: the projected token goes with every certificate request (Dapr's `KUBERNETES` validator).
    pub kubernetes: bool,
    /// A trust-anchor file that is the only source of anchors and is re-read when it changes (in a pod: the
    /// mounted `dapr-root-ca.crt`, which the kubelet refreshes during a root rotation). `trust_anchors_pem` is its
    /// content at start.
    pub trust_anchors_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ward_config::ConfigError),
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("invalid app id {0:?}: {1}")]
    AppId(String, ward_identity::SpiffeIdError),
    #[error("trust anchors: {0}")]
    TrustAnchors(#[from] ward_identity::BundleError),
    #[error("trust domain {0:?}: {1}")]
    TrustDomain(String, ward_identity::SpiffeIdError),
    #[error("obtaining a certificate from sentry at {address}: {source}")]
    Sentry {
        address: String,
        #[source]
        source: ward_sentry::ClientError,
    },
    #[error("name resolution: {0}")]
    NameResolution(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("--app-channel-address: {0}")]
    AppChannel(String),
    /// The provenance signing key could not be made.
    #[error("provenance key: {0}")]
    Provenance(String),
    #[error("--dapr-listen-addresses: {0}")]
    Exposure(#[from] ward_gate::ListenError),
    #[error(transparent)]
    Components(#[from] crate::components::RegistryError),
    #[error("internal port TLS configuration: {0}")]
    InternalTls(#[source] rustls::Error),
    #[error("listener limits: {0}")]
    Limits(#[from] ward_net::LimitsError),
    #[error("tracing: {0}")]
    Tracing(#[from] crate::otel::TracingError),
    #[error(transparent)]
    ControlPlane(#[from] crate::control_plane::ControlPlaneError),
    #[error("--control-plane-address needs mTLS (Kubernetes mode): the operator answers only an SVID")]
    ControlPlaneWithoutMtls,
    #[error("--unix-domain-socket {path}: {source}")]
    UnixSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A started sidecar. Drop or call `shutdown` to stop it.
pub struct Sidecar {
    pub http_addrs: Vec<SocketAddr>,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the health-only public port listens, when it does.
    pub public_addr: Option<SocketAddr>,
    pub grpc_addrs: Vec<SocketAddr>,
    /// The API's Unix domain sockets (HTTP, gRPC) with `--unix-domain-socket`; the TCP address lists are empty then.
    pub api_sockets: Option<(PathBuf, PathBuf)>,
    pub internal_addr: SocketAddr,
    readiness: Readiness,
    drain_timeout: Duration,
    stop_tx: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    registration: Option<ward_components::nameresolution::Registration>,
    _svid: Option<ward_sentry::client::SvidSupervisor>,
    /// Flushed at shutdown.
    tracing: Option<Arc<crate::otel::Tracing>>,
    started: Instant,
}

/// Binds `port` on every address (with port 0, every address gets the port the first one was given).
async fn bind_all(addresses: &[IpAddr], mut port: u16) -> Result<Vec<TcpListener>, StartError> {
    let mut listeners = Vec::new();
    for ip in addresses {
        let addr = SocketAddr::new(*ip, port);
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        listeners.push(listener);
    }
    Ok(listeners)
}

/// A Unix domain socket at `path`, readable and writable by this user only (a stale socket from an earlier run is
/// replaced; anything else at that path is refused).
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, StartError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let error = |source| StartError::UnixSocket { path: path.to_path_buf(), source };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(error(std::io::Error::other("exists and is not a socket")));
        }
        std::fs::remove_file(path).map_err(error)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    Ok(listener)
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), source })
}

impl Sidecar {
    pub async fn start(options: SidecarOptions) -> Result<Sidecar, StartError> {
        let started = Instant::now();
        // 0. Kubernetes: the Configuration and resources come from the operator, which answers only an SVID.
        let feed = match (&options.control_plane, &options.mtls) {
            (Some(control_plane), Some(mtls)) => Some(bootstrap_operator(&options, control_plane, mtls).await?),
            (Some(_), None) => return Err(StartError::ControlPlaneWithoutMtls),
            (None, _) => None,
        };
        // 1. Configuration and settings, resolved once: every field applied, refused, or (development) warned.
        let configuration = match (&feed, &options.config_path) {
            (Some(feed), _) => feed.configuration()?,
            (None, Some(path)) => Some(ward_config::load_configuration(path)?),
            (None, None) => None,
        };
        let configuration_source =
            feed.as_ref().map(|feed| feed.configuration_source()).or_else(|| options.config_path.clone());
        let settings = Settings::resolve(&options, configuration.as_ref())?;
        options.listener_limits.validate()?;
        Settings::warn_unsupported_flags(&options);
        if let Some(path) = &configuration_source {
            settings.warn_unhonoured(path);
        }
        if let Some(warning) =
            ward_gate::exposure_check(&options.listen_addresses, options.api_tokens.is_enabled(), settings.production)?
        {
            tracing::warn!("{warning}");
        }
        let own_id = SpiffeId::dapr(&settings.trust_domain, &options.namespace, &options.app_id)
            .map_err(|err| StartError::AppId(options.app_id.clone(), err))?;

        // 2. Components: secret stores, then secretKeyRefs (under the app's secret scopes), then state stores.
        let components = Arc::new(
            Components::start(
                ComponentOptions {
                    dirs: options.resources_paths.clone(),
                    namespace_filter: options.filter_namespace.then(|| options.namespace.clone()),
                    app_id: options.app_id.clone(),
                    namespace: options.namespace.clone(),
                    data_dir: options.ward_home.clone(),
                    production: settings.production,
                    max_body_size: settings.max_body_size,
                    builtin_kubernetes_secret_store: options.builtin_kubernetes_secret_store,
                    operator: feed.clone(),
                },
                configuration.as_ref(),
            )
            .await?,
        );

        // 3. Identity.
        let (transport, supervisor) = match &options.mtls {
            Some(mtls) => {
                let trust_domain = settings.trust_domain.clone();
                let bundle =
                    TrustBundleHandle::new(TrustBundle::from_pem(trust_domain.clone(), &mtls.trust_anchors_pem)?);
                let cp_td = mtls.control_plane_trust_domain.clone().unwrap_or_else(|| trust_domain.clone());
                let sentry_id = SpiffeId::dapr(&cp_td, &mtls.control_plane_namespace, "dapr-sentry")
                    .map_err(|err| StartError::TrustDomain(cp_td.to_string(), err))?;
                let sentry_error = |source| StartError::Sentry { address: mtls.sentry_address.clone(), source };
                // Sentry may live in another trust domain (Kubernetes: the control plane's): the same anchors,
                // under its trust domain, verify it.
                let sentry_trust = (cp_td != trust_domain)
                    .then(|| TrustBundle::from_pem(cp_td.clone(), &mtls.trust_anchors_pem).map(TrustBundleHandle::new))
                    .transpose()?;
                let client = ward_sentry::SentryClient::new(ward_sentry::SentryClientConfig {
                    address: mtls.sentry_address.clone(),
                    sentry_id,
                    bundle: bundle.clone(),
                    app_id: options.app_id.clone(),
                    namespace: options.namespace.clone(),
                    trust_domain: trust_domain.clone(),
                    token_file: mtls.sentry_token_file.clone(),
                    skew: settings.clock_skew,
                    kubernetes: mtls.kubernetes,
                    sentry_trust: sentry_trust.clone(),
                })
                .map_err(sentry_error)?;
                let supervisor = client.start().await.map_err(sentry_error)?;
                if let Some(feed) = &feed {
                    // From now on the operator sees the renewing SVID.
                    feed.set_connection(operator_connection(
                        &options,
                        mtls,
                        supervisor.resolver(),
                        settings.clock_skew,
                    )?);
                }
                if let Some(path) = &mtls.trust_anchors_file {
                    let mut follow = vec![(trust_domain.clone(), bundle.clone())];
                    follow.extend(sentry_trust.map(|handle| (cp_td.clone(), handle)));
                    tokio::spawn(follow_trust_anchors(path.clone(), follow));
                }
                let transport = Transport::Mtls(Mtls {
                    svid: supervisor.resolver(),
                    bundle,
                    trust_domain,
                    skew: settings.clock_skew,
                });
                (transport, Some(supervisor))
            }
            None => {
                tracing::warn!(
                    "mTLS is OFF (development mode): sidecar-to-sidecar traffic is plaintext and caller identities \
                     are unverified markers. Use --enable-mtls (ward run does) outside development."
                );
                (Transport::Plaintext, None)
            }
        };
        let accept = match (&transport, settings.production) {
            (Transport::Mtls(_), _) => AcceptMode::Mtls,
            (Transport::Plaintext, false) => AcceptMode::DevelopmentMarkers,
            (Transport::Plaintext, true) => AcceptMode::Unverified,
        };

        // 4. Name resolution.
        let overrides = std::env::var_os(OVERRIDES_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
        let (resolver, sqlite) =
            name_resolution(&options, configuration.as_ref(), settings.production, overrides).await?;

        // 5. Audit, tracing, app channel, the handles each part uses.
        let audit = AuditSink::open_with(&settings.audit, crate::audit::DEFAULT_QUEUE_CAPACITY, settings.audit_fsync)?;
        let tracing = start_tracing(configuration.as_ref(), &options, settings.production)?;
        if let Some(t) = tracing.as_ref().filter(|t| t.exports_audit()) {
            let t = t.clone();
            audit.set_mirror(Arc::new(move |event: &ward_policy::AuditEvent| t.emit_audit(event)));
        }
        // Only the request paths of a sidecar that makes spans get a handle; without one they pay a branch.
        let spans = tracing.clone().filter(|t| t.spans());
        let metrics = crate::metrics::Metrics::with_recording(&options.app_id, options.metrics.is_some());
        metrics.set_sources(crate::metrics::Sources {
            audit: audit.clone(),
            svid_not_after: match &transport {
                Transport::Mtls(mtls) => {
                    let svid = mtls.svid.clone();
                    Some(Box::new(move || svid.current().map(|s| s.not_after())))
                }
                Transport::Plaintext => None,
            },
            trust_roots: match &transport {
                Transport::Mtls(mtls) => {
                    let bundle = mtls.bundle.clone();
                    Some(Box::new(move || bundle.load().roots().len()))
                }
                Transport::Plaintext => None,
            },
            renewals: supervisor.as_ref().map(|s| s.counters()),
        });
        if supervisor.is_some() {
            metrics.mtls_initialised();
        }
        let app_channel = AppChannel::new(AppChannelOptions {
            address: &options.app_channel_address,
            port: options.app_port,
            grpc: options.app_protocol_grpc,
            max_body_size: settings.max_body_size,
            metrics: Some(metrics.clone()),
        })
        .map_err(StartError::AppChannel)?;
        let acl = Arc::new(ArcSwap::from_pointee(settings.acl));
        let capabilities = Arc::new(ArcSwap::from_pointee(settings.capabilities));
        // Layer four: a signing key that exists only in this process, rotated with the SVID.
        let provenance = if settings.provenance {
            let svid = supervisor.as_ref().map(|s| s.resolver());
            let issuer = crate::provenance::ProvenanceIssuer::new(
                own_id.to_string(),
                options.app_id.clone(),
                !matches!(transport, Transport::Mtls(_)),
                svid,
            )
            .map_err(|err| StartError::Provenance(err.to_string()))?;
            Some(Arc::new(issuer))
        } else {
            if matches!(transport, Transport::Mtls(_)) {
                tracing::warn!(
                    "spec.ward.provenance.enabled is false: the app gets no ward-provenance token and cannot tell a \
                     request from its sidecar from one sent straight to its port"
                );
            }
            None
        };
        let mcp = Arc::new(arc_swap::ArcSwapOption::from(settings.mcp.map(Arc::new)));
        let api_list = Arc::new(ArcSwap::from_pointee(settings.api_list));
        let api_log: ward_gate::ApiLogHandle = Arc::new(ArcSwap::from_pointee(settings.api_log));
        let mtls_on = matches!(transport, Transport::Mtls(_));
        // Pub/sub: events are signed with the SVID and publishers verified against the trust bundle (mTLS only).
        let (signer, verifier) = match &transport {
            Transport::Mtls(mtls) => (
                Some(crate::pubsub::signature::EventSigner { svid: mtls.svid.clone() }),
                Some(crate::pubsub::signature::EventVerifier::new(mtls.bundle.clone(), mtls.skew)),
            ),
            Transport::Plaintext => (None, None),
        };
        let internal_tls = match &transport {
            Transport::Mtls(mtls) => Some(crate::listeners::internal_acceptor(mtls)?),
            Transport::Plaintext => None,
        };
        let invoker = Arc::new(Invoker {
            resolver,
            outbound: Outbound::new(transport, options.listener_limits.header_ceiling()),
            own_id: own_id.clone(),
            trust_domain: settings.trust_domain.clone(),
            namespace: options.namespace.clone(),
            max_body_size: settings.max_body_size,
            max_header_bytes: options.listener_limits.max_header_bytes,
            renewal: supervisor.as_ref().map(|s| s.waker()),
            metrics: metrics.clone(),
        });
        let state_core = Arc::new(StateCore {
            components: components.clone(),
            app_id: options.app_id.clone(),
            namespace: options.namespace.clone(),
            max_body_size: settings.max_body_size,
        });
        let metadata = Arc::new(MetadataCore {
            app_id: options.app_id.clone(),
            components: components.clone(),
            app_connection: AppConnection {
                port: options.app_port.unwrap_or(0),
                protocol: if options.app_protocol_grpc { "grpc" } else { "http" },
                channel_address: options.app_channel_address.clone(),
            },
            spiffe_id: own_id.to_string(),
            mtls: mtls_on,
            custom: Default::default(),
            subscriptions: Default::default(),
        });
        let readiness = Readiness::new(options.app_port.map(|port| format!("{}:{port}", options.app_channel_address)));
        let pubsub = Arc::new(crate::pubsub::PubSubCore {
            components: components.clone(),
            app_id: Arc::from(options.app_id.as_str()),
            signer,
            verifier,
            audit: audit.clone(),
            metrics: metrics.clone(),
        });
        // `/v1.0/healthz` waits for the subscriptions.
        readiness.set_subscriptions_pending(true);
        let inbound_audit = audit.clone();
        let subscription_routes: Arc<ArcSwap<std::collections::HashSet<String>>> = Default::default();
        // Invocations and pub/sub deliveries share the app channel and its concurrency bound.
        let inbound_channel = app_channel;
        let app_permits = options.app_max_concurrency.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
        let inbound = InboundHandles {
            app_id: Arc::from(options.app_id.as_str()),
            accept,
            acl: acl.clone(),
            capabilities: capabilities.clone(),
            provenance: provenance.clone(),
            audit,
            max_body_size: settings.max_body_size,
            app_token: options.app_token.clone(),
            app_channel: inbound_channel.clone(),
            app_permits: app_permits.clone(),
            app_pipeline: components.pipelines().app.clone(),
            subscription_routes: subscription_routes.clone(),
            mcp: mcp.clone(),
            metrics: metrics.clone(),
            tracing: spans.clone(),
        };

        // 6. Listeners (only now: everything above was valid).
        let internal_bind = SocketAddr::new(options.internal_listen_address, options.internal_port);
        let internal = TcpListener::bind(internal_bind)
            .await
            .map_err(|source| StartError::Bind { addr: internal_bind, source })?;
        let internal_addr = local_addr(&internal)?;
        // The APIs listen on TCP, or with `--unix-domain-socket` on two sockets only (no TCP API at all then).
        let (public_listeners, grpc_listeners, api_sockets): (Vec<ward_net::Listener>, Vec<ward_net::Listener>, _) =
            match &options.unix_domain_socket {
                Some(dir) => {
                    let http = dir.join(format!("dapr-http-{}.socket", options.app_id));
                    let grpc = dir.join(format!("dapr-grpc-{}.socket", options.app_id));
                    (vec![bind_unix(&http)?.into()], vec![bind_unix(&grpc)?.into()], Some((http, grpc)))
                }
                None => (
                    bind_all(&options.listen_addresses, options.http_port).await?.into_iter().map(Into::into).collect(),
                    bind_all(&options.listen_addresses, options.grpc_port).await?.into_iter().map(Into::into).collect(),
                    None,
                ),
            };
        let metrics_listener = match options.metrics {
            None => None,
            Some(listen) => listen.bind().await.map_err(|source| StartError::Bind { addr: listen.address, source })?,
        };
        let metrics_addr = metrics_listener.as_ref().map(local_addr).transpose()?;
        let public_listener = match options.public_health {
            None => None,
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|source| StartError::Bind { addr: address, source })?,
            ),
        };
        let public_addr = public_listener.as_ref().map(local_addr).transpose()?;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let control =
            ListenerControl { limits: options.listener_limits, stop: stop_rx.clone(), drain: options.drain_timeout };
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(crate::listeners::serve_internal(internal, internal_tls, inbound, control.clone())));
        let api_state = ApiState::new(ApiHandles {
            invoker: invoker.clone(),
            state: state_core.clone(),
            components: components.clone(),
            metadata: metadata.clone(),
            readiness: readiness.clone(),
            api_list: api_list.clone(),
            provenance: provenance.clone(),
            pubsub: pubsub.clone(),
        });
        let delivery = Arc::new(crate::pubsub::delivery::DeliveryHandles {
            core: pubsub.clone(),
            app_channel: inbound_channel.clone(),
            app_token: options.app_token.clone(),
            provenance: provenance.clone(),
            app_pipeline: components.pipelines().app.clone(),
            audit_app_id: Arc::from(options.app_id.as_str()),
            app_permits: app_permits.clone(),
            readiness: readiness.clone(),
            listing: metadata.subscriptions.clone(),
            routes: subscription_routes.clone(),
            stop: stop_rx.clone(),
            tracing: spans.clone(),
        });
        let mut http_addrs = Vec::new();
        for listener in public_listeners {
            if let ward_net::Listener::Tcp(tcp) = &listener {
                http_addrs.push(local_addr(tcp)?);
            }
            let pipeline = crate::middleware::ApiPipeline {
                pipeline: components.pipelines().api.clone(),
                audit: inbound_audit.clone(),
                app_id: Arc::from(options.app_id.as_str()),
                metrics: metrics.clone(),
            };
            let router =
                crate::public::router(api_state.clone(), options.api_tokens.clone(), api_log.clone(), pipeline);
            // Around the whole router rather than each route (they need no routing): outermost, every call to the
            // API is a span, refused ones included; then every answer is counted.
            let api = tower::ServiceBuilder::new()
                .option_layer(spans.clone().map(|t| axum::middleware::from_fn_with_state(t, crate::otel::public_api)))
                .layer(crate::metrics::RecordPublicLayer(metrics.clone()))
                .service(router);
            tasks.push(tokio::spawn(crate::listeners::serve_public(
                listener,
                api,
                settings.max_body_size,
                control.clone(),
            )));
        }
        let mut grpc_addrs = Vec::new();
        for listener in grpc_listeners {
            if let ward_net::Listener::Tcp(tcp) = &listener {
                grpc_addrs.push(local_addr(tcp)?);
            }
            let api = crate::grpc_api::GrpcApi {
                delivery: delivery.clone(),
                state: state_core.clone(),
                components: components.clone(),
                metadata: metadata.clone(),
                invoker: invoker.clone(),
            };
            let service = crate::grpc_api::service(
                api,
                options.api_tokens.clone(),
                api_list.clone(),
                api_log.clone(),
                spans.clone(),
            );
            let service = tower::Layer::layer(&crate::metrics::GrpcServerMetricsLayer(metrics.clone()), service);
            tasks.push(tokio::spawn(crate::listeners::serve_grpc(listener, service, control.clone())));
        }
        if let (Some(check), Some(port)) = (options.app_health.clone(), options.app_port) {
            let host = &options.app_channel_address;
            let probe = if options.app_protocol_grpc {
                crate::app_health::Probe::Grpc { endpoint: format!("http://{host}:{port}") }
            } else {
                let url = format!("http://{host}:{port}{}", check.path);
                crate::app_health::Probe::Http {
                    url: url.parse().map_err(|_| StartError::AppChannel(format!("--app-health-check-path: {url}")))?,
                }
            };
            tasks.push(tokio::spawn(crate::app_health::run(check, probe, readiness.clone(), stop_rx.clone())));
        }
        tasks.push(tokio::spawn(crate::pubsub::delivery::run(delivery.clone())));
        if let Some(listener) = public_listener {
            tasks.push(tokio::spawn(crate::listeners::serve_public(
                listener,
                crate::public::health_router(readiness.clone()),
                0,
                control.clone(),
            )));
        }
        if let Some(listener) = metrics_listener {
            tasks.push(tokio::spawn(crate::listeners::serve_public(
                listener,
                crate::metrics::router(metrics.clone()),
                0,
                control.clone(),
            )));
        }
        if let Some(feed) = &feed {
            tasks.push(tokio::spawn(feed.clone().run(stop_rx.clone())));
        }
        if options.config_path.is_some() || !options.resources_paths.is_empty() || feed.is_some() {
            let watcher = Watcher {
                feed: feed.clone(),
                options: options.clone(),
                production: settings.production,
                current: configuration.as_ref().map(crate::watcher::Applied::of),
                targets: Reloadable {
                    acl,
                    capabilities,
                    api_list,
                    api_log,
                    mcp,
                    components,
                    provenance: settings.provenance,
                },
                metrics: metrics.clone(),
            };
            tasks.push(tokio::spawn(watcher.run(stop_rx.clone())));
        }

        // 7. Register, then report ready.
        let advertised_ip =
            if internal_addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { internal_addr.ip() };
        let advertised = SocketAddr::new(advertised_ip, internal_addr.port()).to_string();
        // Kubernetes DNS needs no registration: the operator's `<app-id>-dapr` Service is the record.
        let registration = match &sqlite {
            Some(sqlite) => Some(
                sqlite
                    .source()
                    .register(&options.app_id, &options.namespace, &advertised)
                    .await
                    .map_err(|err| StartError::NameResolution(err.to_string()))?,
            ),
            None => None,
        };
        readiness.set(true);
        // Everything the Configuration was needed for is built: drop it, and since parsing a large one peaks far
        // above what stays live (issue 25), hand the freed pages back. Likewise the code that only ran to start
        // (issue 18: it was most of the sidecar's resident memory); the request path maps its own code back.
        drop(configuration);
        ward_memory::release_freed();
        ward_memory::release_startup_code();
        tracing::info!(
            app_id = %options.app_id,
            id = %own_id,
            internal = %internal_addr,
            production = settings.production,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sidecar ready"
        );
        Ok(Sidecar {
            http_addrs,
            metrics_addr,
            public_addr,
            grpc_addrs,
            api_sockets,
            internal_addr,
            readiness,
            drain_timeout: options.drain_timeout,
            stop_tx,
            tasks,
            registration,
            _svid: supervisor,
            tracing,
            started,
        })
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops accepting, drains in-flight internal requests for up to `drain_timeout`, deregisters.
    pub async fn shutdown(mut self) {
        self.readiness.set(false);
        if let Some(registration) = self.registration.take()
            && let Err(err) = registration.deregister().await
        {
            tracing::warn!(error = %err, "deregistering from name resolution failed");
        }
        // Each listener stops accepting and drains its own connections within `drain_timeout`.
        let _ = self.stop_tx.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let bound = self.drain_timeout + Duration::from_secs(1);
        let finished = tokio::time::timeout(bound, async move {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(timeout = ?bound, "listeners did not stop in time");
        }
        if let Some((http, grpc)) = &self.api_sockets {
            let _ = std::fs::remove_file(http);
            let _ = std::fs::remove_file(grpc);
        }
        // The last spans and audit records go out before the process ends (bounded by the exporters' timeouts).
        if let Some(t) = self.tracing.take() {
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        }
        tracing::info!("sidecar stopped");
    }
}

/// `spec.tracing` / `OTEL_EXPORTER_OTLP_*` → the running tracer, or `None` when tracing is off. In production a
/// request for audit records without an OTLP endpoint is refused; in development it is one warning.
fn start_tracing(
    configuration: Option<&ward_config::Configuration>,
    options: &SidecarOptions,
    production: bool,
) -> Result<Option<Arc<crate::otel::Tracing>>, StartError> {
    let settings = match crate::otel::TracingSettings::resolve(configuration, &|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(err @ crate::otel::TracingError::AuditWithoutEndpoint) if !production => {
            tracing::warn!("{err}: NOT APPLIED (development mode only; a production sidecar refuses to start)");
            None
        }
        Err(err) => return Err(err.into()),
    };
    let Some(settings) = settings else { return Ok(None) };
    let tracing = crate::otel::Tracing::start(&settings, &options.app_id, &options.namespace)?;
    tracing::info!(
        sampling_rate = settings.sampling_rate,
        exporters = settings.exporters.len(),
        audit_otlp = settings.audit_otlp,
        "tracing on"
    );
    Ok(Some(tracing))
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Keeps each bundle (one per trust domain that is verified with these anchors) equal to the anchors in `path` (polled every two seconds; a mounted ConfigMap changes by a
/// symlink swap, which a poll sees as well as any watcher would). A file that does not parse keeps the current
/// anchors (logged): a half-written or emptied file must not leave the sidecar trusting nothing, or anything.
async fn follow_trust_anchors(path: PathBuf, bundles: Vec<(ward_identity::TrustDomain, TrustBundleHandle)>) {
    let mut current = std::fs::read(&path).unwrap_or_default();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let Ok(bytes) = std::fs::read(&path) else { continue };
        if bytes == current {
            continue;
        }
        let parsed: Result<Vec<TrustBundle>, _> =
            bundles.iter().map(|(trust_domain, _)| TrustBundle::from_pem(trust_domain.clone(), &bytes)).collect();
        match parsed {
            Ok(next) => {
                let roots = next.first().map_or(0, |b| b.roots().len());
                for ((_, handle), bundle) in bundles.iter().zip(next) {
                    handle.store(bundle);
                }
                tracing::info!(file = %path.display(), roots, "trust anchors changed; reloaded");
                current = bytes;
            }
            Err(err) => {
                tracing::error!(file = %path.display(), error = %err, "trust anchors file does not parse; keeping the current anchors");
                current = bytes;
            }
        }
    }
}

/// The operator's connection settings: its identity in the control plane's trust domain, verified with the same
/// anchors under that trust domain, and `svid` presented as client certificate.
fn operator_connection(
    options: &SidecarOptions,
    mtls: &MtlsOptions,
    svid: Arc<ward_identity::SvidResolver>,
    skew: Duration,
) -> Result<crate::control_plane::Connection, StartError> {
    let control_plane = options.control_plane.as_ref().ok_or(StartError::ControlPlaneWithoutMtls)?;
    let current = svid.current();
    let cp_td = match (&mtls.control_plane_trust_domain, current.as_ref()) {
        (Some(td), _) => td.clone(),
        (None, Some(svid)) => svid.spiffe_id().trust_domain(),
        (None, None) => {
            TrustDomain::new("cluster.local").map_err(|err| StartError::TrustDomain("cluster.local".into(), err))?
        }
    };
    let operator_id = SpiffeId::dapr(&cp_td, &mtls.control_plane_namespace, ward_operator_api::OPERATOR_APP_ID)
        .map_err(|err| StartError::TrustDomain(cp_td.to_string(), err))?;
    let anchors = TrustBundleHandle::new(TrustBundle::from_pem(cp_td, &mtls.trust_anchors_pem)?);
    Ok(crate::control_plane::Connection { address: control_plane.address.clone(), operator_id, anchors, svid, skew })
}

/// Kubernetes start: one SVID in the trust domain sentry assigns (from the pod's Configuration), then everything
/// from the operator with it. The renewing client started later must get the same trust domain from that
/// Configuration, or the start fails there.
async fn bootstrap_operator(
    options: &SidecarOptions,
    control_plane: &crate::control_plane::ControlPlaneOptions,
    mtls: &MtlsOptions,
) -> Result<Arc<crate::control_plane::OperatorFeed>, StartError> {
    let placeholder = TrustDomain::new("public").map_err(|err| StartError::TrustDomain("public".into(), err))?;
    let cp_td = mtls.control_plane_trust_domain.clone().unwrap_or_else(|| placeholder.clone());
    let sentry_id = SpiffeId::dapr(&cp_td, &mtls.control_plane_namespace, "dapr-sentry")
        .map_err(|err| StartError::TrustDomain(cp_td.to_string(), err))?;
    let sentry_error = |source| StartError::Sentry { address: mtls.sentry_address.clone(), source };
    let client = ward_sentry::SentryClient::new(ward_sentry::SentryClientConfig {
        address: mtls.sentry_address.clone(),
        sentry_id,
        bundle: TrustBundleHandle::new(TrustBundle::from_pem(placeholder, &mtls.trust_anchors_pem)?),
        app_id: options.app_id.clone(),
        namespace: options.namespace.clone(),
        trust_domain: TrustDomain::new("public").map_err(|err| StartError::TrustDomain("public".into(), err))?,
        token_file: mtls.sentry_token_file.clone(),
        skew: Duration::from_secs(60),
        kubernetes: true,
        sentry_trust: Some(TrustBundleHandle::new(TrustBundle::from_pem(cp_td, &mtls.trust_anchors_pem)?)),
    })
    .map_err(sentry_error)?;
    let svid = client.fetch_kubernetes_bootstrap().await.map_err(sentry_error)?;
    let resolver = Arc::new(ward_identity::SvidResolver::new());
    resolver.replace(svid);
    let connection = operator_connection(options, mtls, resolver, Duration::from_secs(60))?;
    Ok(crate::control_plane::OperatorFeed::fetch(
        connection,
        options.namespace.clone(),
        control_plane.config_name.clone(),
    )
    .await?)
}

/// The resolver `spec.nameResolution` names: `sqlite` (the self-hosted default, with its registry, returned too so
/// the sidecar registers itself) or `kubernetes` (the default in Kubernetes mode). Anything else refuses the start.
pub(crate) async fn name_resolution(
    options: &SidecarOptions,
    configuration: Option<&ward_config::Configuration>,
    production: bool,
    overrides: Option<PathBuf>,
) -> Result<(Arc<dyn crate::resolver::NameResolver>, Option<Arc<crate::resolver::Cached<SqliteRegistry>>>), StartError>
{
    let kubernetes_mode = options.mtls.as_ref().is_some_and(|mtls| mtls.kubernetes);
    let configured = configuration.and_then(|c| c.name_resolution.as_ref());
    let component = configured.map(|nr| nr.component.to_ascii_lowercase());
    let kubernetes = match component.as_deref() {
        Some("kubernetes") => true,
        Some("sqlite") => false,
        Some(other) => {
            return Err(StartError::NameResolution(format!(
                "spec.nameResolution.component {other:?} is not supported (ward supports sqlite and kubernetes)"
            )));
        }
        None => kubernetes_mode,
    };
    let empty = std::collections::BTreeMap::new();
    let settings = configured.map_or(&empty, |nr| &nr.configuration);
    if kubernetes {
        let mut dns = KubernetesOptions::from_configuration(settings, options.internal_port)
            .map_err(|err| StartError::NameResolution(format!("spec.nameResolution.configuration: {err}")))?;
        if let Some(file) = overrides {
            if production {
                return Err(StartError::NameResolution(format!(
                    "{OVERRIDES_ENV} is a test override of cluster DNS; a production sidecar refuses it"
                )));
            }
            tracing::warn!(file = %file.display(), "{OVERRIDES_ENV}: cluster names are answered from a test file (development only)");
            dns.overrides = Some(file);
        }
        return Ok((Arc::new(crate::resolver::Cached::new(KubernetesDns::new(dns))), None));
    }
    let registry_options = match configured {
        Some(nr) => RegistryOptions::from_configuration(&nr.configuration)
            .map_err(|err| StartError::NameResolution(err.to_string()))?,
        None => RegistryOptions::new(options.ward_home.join("nameresolution.db").to_string_lossy().into_owned()),
    };
    if let Some(parent) = std::path::Path::new(&registry_options.connection_string).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let sqlite = Arc::new(crate::resolver::Cached::new(
        SqliteRegistry::open(registry_options).await.map_err(|err| StartError::NameResolution(err.to_string()))?,
    ));
    Ok((sqlite.clone(), Some(sqlite)))
}
