//! Start-up, shared state and shutdown of one sidecar.
//!
//! Order matters and is fail-closed: the configuration is validated and compiled, the SVID obtained, and only
//! then does anything listen. Shutdown stops accepting, drains in-flight requests within a bound, and
//! deregisters from name resolution.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use ward_components::nameresolution::{RegistryOptions, SqliteRegistry};
use ward_config::Configuration;
use ward_identity::{SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_policy::AccessControl;

use crate::audit::{AuditSink, AuditTarget};
use crate::components::{Components, Registry, RegistryOptions as ComponentOptions};
use crate::grpc_api::pb::runtime::app_callback_client::AppCallbackClient;
use crate::transport::{Mtls, Outbound, Transport};

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
    pub max_body_size: u64,
    pub ward_home: PathBuf,
    pub audit: AuditTarget,
    /// `DAPR_API_TOKEN` (static, file-rotated or JWT): what the app must present on the public API.
    pub api_tokens: ward_gate::ApiTokens,
    /// `APP_API_TOKEN`: sent to the app as `dapr-api-token` on every request the sidecar makes to it.
    pub app_token: ward_gate::AppToken,
    /// `--enable-api-logging` (tri-state: `None` lets the Configuration decide).
    pub enable_api_logging: Option<bool>,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// `--resources-path` directories (components).
    pub resources_paths: Vec<PathBuf>,
    /// Whether env `NAMESPACE` was set: as daprd, components are filtered by namespace only then.
    pub filter_namespace: bool,
}

/// How to obtain an SVID.
#[derive(Debug, Clone)]
pub struct MtlsOptions {
    pub sentry_address: String,
    pub trust_anchors_pem: Vec<u8>,
    pub control_plane_trust_domain: Option<TrustDomain>,
    pub control_plane_namespace: String,
    pub sentry_token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ward_config::ConfigError),
    #[error("{path}: spec.accessControl: {source}")]
    Acl {
        path: PathBuf,
        #[source]
        source: ward_policy::acl::AclError,
    },
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
    #[error("production mode requires mTLS (--enable-mtls with --sentry-address)")]
    ProductionWithoutMtls,
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
    #[error("{path}: spec.api: {source}")]
    ApiList {
        path: PathBuf,
        #[source]
        source: ward_policy::ApiListError,
    },
    #[error("--app-channel-address: {0}")]
    AppChannel(String),
    #[error("--dapr-listen-addresses: {0}")]
    Exposure(#[from] ward_gate::ListenError),
    #[error(transparent)]
    Components(#[from] crate::components::RegistryError),
}

/// State shared by every request handler.
pub struct Shared {
    options: SidecarOptions,
    own_id: SpiffeId,
    trust_domain: TrustDomain,
    acl: ArcSwap<AccessControl>,
    audit: AuditSink,
    registry: SqliteRegistry,
    outbound: Outbound,
    app_client: Client<HttpConnector, Body>,
    /// HTTP/2 (prior knowledge) to a gRPC app, for proxied calls.
    app_h2_client: Client<HttpConnector, Body>,
    /// `AppCallback` client for a gRPC app (lazy connection).
    app_callback: Option<AppCallbackClient<tonic::transport::Channel>>,
    ready: AtomicBool,
    api_allowlist: ward_policy::ApiAllowList,
    api_log: ward_gate::ApiLogOptions,
    components: Arc<Components>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("own_id", &self.own_id).finish_non_exhaustive()
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl Shared {
    pub fn transport(&self) -> &Transport {
        self.outbound.transport()
    }
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }
    pub fn production(&self) -> bool {
        self.options.production
    }
    pub fn acl(&self) -> Arc<AccessControl> {
        self.acl.load_full()
    }
    pub fn audit(&self) -> &AuditSink {
        &self.audit
    }
    pub fn app_id(&self) -> &str {
        &self.options.app_id
    }
    pub fn namespace(&self) -> &str {
        &self.options.namespace
    }
    pub fn own_id(&self) -> &SpiffeId {
        &self.own_id
    }
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }
    pub fn app_port(&self) -> Option<u16> {
        self.options.app_port
    }
    pub fn app_channel_address(&self) -> &str {
        &self.options.app_channel_address
    }
    pub fn max_body_size(&self) -> u64 {
        self.options.max_body_size
    }
    pub fn app_client(&self) -> &Client<HttpConnector, Body> {
        &self.app_client
    }
    pub fn app_h2_client(&self) -> &Client<HttpConnector, Body> {
        &self.app_h2_client
    }
    pub fn app_speaks_grpc(&self) -> bool {
        self.options.app_protocol_grpc
    }
    pub fn app_callback(&self) -> Option<AppCallbackClient<tonic::transport::Channel>> {
        self.app_callback.clone()
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
    /// The component registry requests use now (a reload swaps it; a request keeps the one it started with).
    pub fn components(&self) -> Arc<Registry> {
        self.components.load()
    }

    /// Sets this sidecar's own app token, replacing any value that came from elsewhere (CVE-2024-35223).
    pub fn apply_app_token(&self, headers: &mut http::HeaderMap) {
        self.options.app_token.apply(headers);
    }

    pub fn api_tokens(&self) -> &ward_gate::ApiTokens {
        &self.options.api_tokens
    }

    pub fn api_allowlist(&self) -> &ward_policy::ApiAllowList {
        &self.api_allowlist
    }

    pub fn api_log_options(&self) -> ward_gate::ApiLogOptions {
        self.api_log
    }

    pub async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Option<String>, String> {
        self.registry.resolve(app_id, namespace).await.map_err(|err| err.to_string())
    }

    pub fn metadata_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.options.app_id,
            "runtimeVersion": concat!("ward-", env!("CARGO_PKG_VERSION")),
            "enabledFeatures": [],
            "actors": [],
            "components": self.components.load().components().iter().map(|c| serde_json::json!({
                "name": c.name,
                "type": c.component_type,
                "version": c.version,
                "capabilities": [],
            })).collect::<Vec<_>>(),
            "subscriptions": [],
            "httpEndpoints": [],
            "appConnectionProperties": {
                "port": self.options.app_port.unwrap_or(0),
                "protocol": if self.options.app_protocol_grpc { "grpc" } else { "http" },
                "channelAddress": self.options.app_channel_address,
                "maxConcurrency": 0,
            },
            "extended": {
                "appCommand": "",
                "daprRuntimeVersion": concat!("ward-", env!("CARGO_PKG_VERSION")),
                "spiffeId": self.own_id.to_string(),
                "mtls": matches!(self.transport(), Transport::Mtls(_)),
            },
        })
    }
}

fn load_acl(path: &std::path::Path) -> Result<AccessControl, StartError> {
    let configuration = ward_config::load_configuration(path)?;
    compile_acl(path, &configuration)
}

fn compile_acl(path: &std::path::Path, configuration: &Configuration) -> Result<AccessControl, StartError> {
    match &configuration.access_control {
        Some(spec) => AccessControl::compile(spec).map_err(|source| StartError::Acl { path: path.to_owned(), source }),
        None => Ok(AccessControl::allow_all()),
    }
}

/// A started sidecar. Drop or call `shutdown` to stop it.
pub struct Sidecar {
    shared: Arc<Shared>,
    pub http_addrs: Vec<SocketAddr>,
    pub grpc_addrs: Vec<SocketAddr>,
    pub internal_addr: SocketAddr,
    stop_tx: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    registration: Option<ward_components::nameresolution::Registration>,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    _svid: Option<ward_sentry::client::SvidSupervisor>,
    started: Instant,
}

impl Sidecar {
    pub async fn start(options: SidecarOptions) -> Result<Sidecar, StartError> {
        let started = Instant::now();
        // 1. Configuration, compiled once.
        let configuration = match &options.config_path {
            Some(path) => Some(ward_config::load_configuration(path)?),
            None => None,
        };
        let acl = match (&options.config_path, &configuration) {
            (Some(path), Some(configuration)) => compile_acl(path, configuration)?,
            _ => AccessControl::allow_all(),
        };
        let td_name = configuration
            .as_ref()
            .and_then(|c| c.access_control.as_ref())
            .and_then(|a| a.trust_domain.clone())
            .filter(|td| !td.is_empty())
            .unwrap_or_else(|| "public".to_owned());
        let trust_domain = TrustDomain::new(&td_name).map_err(|err| StartError::TrustDomain(td_name.clone(), err))?;
        let own_id = SpiffeId::dapr(&trust_domain, &options.namespace, &options.app_id)
            .map_err(|err| StartError::AppId(options.app_id.clone(), err))?;
        if options.production && options.mtls.is_none() {
            return Err(StartError::ProductionWithoutMtls);
        }

        let api_allowlist = match (&options.config_path, configuration.as_ref().and_then(|c| c.api.as_ref())) {
            (Some(path), Some(spec)) => ward_policy::ApiAllowList::compile(spec)
                .map_err(|source| StartError::ApiList { path: path.clone(), source })?,
            _ => ward_policy::ApiAllowList::allow_all(),
        };
        let config_logging = configuration.as_ref().map(|c| c.api_logging).unwrap_or_default();
        let api_log = ward_gate::ApiLogOptions {
            enabled: options.enable_api_logging.unwrap_or(config_logging.enabled),
            obfuscate_urls: config_logging.obfuscate_urls,
            omit_health_checks: config_logging.omit_health_checks,
        };
        let production = options.production || configuration.as_ref().is_some_and(|c| c.ward.production_mode);
        if let Some(warning) =
            ward_gate::exposure_check(&options.listen_addresses, options.api_tokens.is_enabled(), production)?
        {
            tracing::warn!("{warning}");
        }

        // 1b. Components: secret stores, then secretKeyRefs (under the app's secret scopes), then state stores.
        let components = Arc::new(
            Components::start(
                ComponentOptions {
                    dirs: options.resources_paths.clone(),
                    namespace_filter: options.filter_namespace.then(|| options.namespace.clone()),
                    app_id: options.app_id.clone(),
                    namespace: options.namespace.clone(),
                    data_dir: options.ward_home.clone(),
                },
                options.config_path.clone(),
                configuration.as_ref(),
            )
            .await?,
        );

        // 2. Identity.
        let (transport, supervisor) = match &options.mtls {
            Some(mtls) => {
                let bundle =
                    TrustBundleHandle::new(TrustBundle::from_pem(trust_domain.clone(), &mtls.trust_anchors_pem)?);
                let cp_td = mtls.control_plane_trust_domain.clone().unwrap_or_else(|| trust_domain.clone());
                let sentry_id = SpiffeId::dapr(&cp_td, &mtls.control_plane_namespace, "dapr-sentry")
                    .map_err(|err| StartError::TrustDomain(cp_td.to_string(), err))?;
                let sentry_error = |source| StartError::Sentry { address: mtls.sentry_address.clone(), source };
                let client = ward_sentry::SentryClient::new(ward_sentry::SentryClientConfig {
                    address: mtls.sentry_address.clone(),
                    sentry_id,
                    bundle: bundle.clone(),
                    app_id: options.app_id.clone(),
                    namespace: options.namespace.clone(),
                    trust_domain: trust_domain.clone(),
                    token_file: mtls.sentry_token_file.clone(),
                    skew: ward_identity::DEFAULT_CLOCK_SKEW,
                })
                .map_err(sentry_error)?;
                let supervisor = client.start().await.map_err(sentry_error)?;
                let transport = Transport::Mtls(Mtls {
                    svid: supervisor.resolver(),
                    bundle,
                    trust_domain: trust_domain.clone(),
                    skew: ward_identity::DEFAULT_CLOCK_SKEW,
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

        // 3. Name resolution.
        let registry_options = match configuration.as_ref().and_then(|c| c.name_resolution.as_ref()) {
            Some(nr) if nr.component.eq_ignore_ascii_case("sqlite") => {
                RegistryOptions::from_configuration(&nr.configuration)
                    .map_err(|err| StartError::NameResolution(err.to_string()))?
            }
            Some(nr) => {
                return Err(StartError::NameResolution(format!(
                    "spec.nameResolution.component {:?} is not supported (ward supports sqlite)",
                    nr.component
                )));
            }
            None => RegistryOptions::new(options.ward_home.join("nameresolution.db").to_string_lossy().into_owned()),
        };
        if let Some(parent) = std::path::Path::new(&registry_options.connection_string).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let registry =
            SqliteRegistry::open(registry_options).await.map_err(|err| StartError::NameResolution(err.to_string()))?;

        // `--audit-log` wins; otherwise the Configuration's `spec.ward.auditLog`; otherwise stderr.
        let audit_target = match (&options.audit, configuration.as_ref().and_then(|c| c.ward.audit_log.clone())) {
            (AuditTarget::Stderr, Some(path)) => AuditTarget::File(path),
            (target, _) => target.clone(),
        };
        let audit = AuditSink::open(&audit_target)?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let app_client = Client::builder(TokioExecutor::new()).build(http.clone());
        let app_h2_client = Client::builder(TokioExecutor::new()).http2_only(true).build(http);
        let app_callback = match (options.app_protocol_grpc, options.app_port) {
            (true, Some(port)) => {
                let endpoint =
                    tonic::transport::Endpoint::from_shared(format!("http://{}:{port}", options.app_channel_address))
                        .map_err(|err| StartError::AppChannel(err.to_string()))?
                        .tcp_nodelay(true);
                Some(AppCallbackClient::new(endpoint.connect_lazy()))
            }
            _ => None,
        };

        // 4. Listeners (only now: everything above was valid).
        let internal_bind = SocketAddr::new(options.internal_listen_address, options.internal_port);
        let internal = TcpListener::bind(internal_bind)
            .await
            .map_err(|source| StartError::Bind { addr: internal_bind, source })?;
        let internal_addr = internal.local_addr().map_err(|source| StartError::Bind { addr: internal_bind, source })?;
        let mut public_listeners = Vec::new();
        let mut http_port = options.http_port;
        for ip in &options.listen_addresses {
            let addr = SocketAddr::new(*ip, http_port);
            let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
            // With port 0, every address gets the port the first one was given.
            http_port = listener.local_addr().map(|a| a.port()).unwrap_or(http_port);
            public_listeners.push(listener);
        }
        let mut grpc_listeners = Vec::new();
        let mut grpc_port = options.grpc_port;
        for ip in &options.listen_addresses {
            let addr = SocketAddr::new(*ip, grpc_port);
            let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
            grpc_port = listener.local_addr().map(|a| a.port()).unwrap_or(grpc_port);
            grpc_listeners.push(listener);
        }

        let shared = Arc::new(Shared {
            options: options.clone(),
            own_id,
            trust_domain,
            acl: ArcSwap::from_pointee(acl),
            audit,
            registry,
            outbound: Outbound::new(transport),
            app_client,
            app_h2_client,
            app_callback,
            ready: AtomicBool::new(false),
            api_allowlist,
            api_log,
            components: components.clone(),
        });

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(crate::internal::serve(internal, shared.clone(), graceful.clone(), stop_rx.clone())));
        let mut http_addrs = Vec::new();
        for listener in public_listeners {
            http_addrs.push(listener.local_addr().map_err(|source| StartError::Bind { addr: internal_bind, source })?);
            let router = crate::public::router(shared.clone());
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                use axum::serve::ListenerExt;
                // Without NODELAY, small responses wait for delayed ACKs (a ~40 ms p99 cliff).
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await;
            }));
        }
        let mut grpc_addrs = Vec::new();
        for listener in grpc_listeners {
            grpc_addrs.push(listener.local_addr().map_err(|source| StartError::Bind { addr: internal_bind, source })?);
            tasks.push(tokio::spawn(crate::grpc_api::serve(listener, shared.clone(), stop_rx.clone())));
        }
        if let Some(path) = options.config_path.clone() {
            tasks.push(tokio::spawn(watch_configuration(path, shared.clone(), stop_rx.clone())));
        }
        if components.watched() {
            tasks.push(tokio::spawn(components.clone().watch(stop_rx.clone())));
        }

        // 5. Register, then report ready.
        let advertised_ip =
            if internal_addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { internal_addr.ip() };
        let advertised = SocketAddr::new(advertised_ip, internal_addr.port()).to_string();
        let registration = shared
            .registry
            .register(&options.app_id, &options.namespace, &advertised)
            .await
            .map_err(|err| StartError::NameResolution(err.to_string()))?;
        shared.ready.store(true, Ordering::Release);
        tracing::info!(
            app_id = %options.app_id,
            id = %shared.own_id,
            internal = %internal_addr,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sidecar ready"
        );
        Ok(Sidecar {
            shared,
            http_addrs,
            grpc_addrs,
            internal_addr,
            stop_tx,
            tasks,
            registration: Some(registration),
            graceful,
            _svid: supervisor,
            started,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops accepting, drains in-flight internal requests for up to `drain_timeout`, deregisters.
    pub async fn shutdown(mut self) {
        self.shared.ready.store(false, Ordering::Release);
        if let Some(registration) = self.registration.take()
            && let Err(err) = registration.deregister().await
        {
            tracing::warn!(error = %err, "deregistering from name resolution failed");
        }
        let _ = self.stop_tx.send(true);
        let drain = self.shared.options.drain_timeout;
        let graceful = Arc::try_unwrap(std::mem::replace(
            &mut self.graceful,
            Arc::new(hyper_util::server::graceful::GracefulShutdown::new()),
        ));
        let tasks = std::mem::take(&mut self.tasks);
        let drained = tokio::time::timeout(drain, async move {
            for task in tasks {
                let _ = task.await;
            }
            if let Ok(graceful) = graceful {
                graceful.shutdown().await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(timeout = ?drain, "in-flight requests did not finish in time; closing them");
        }
        tracing::info!("sidecar stopped");
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Re-reads the Configuration file when it changes and swaps in the new ACL. A file that does not load keeps
/// the old policy (never fails open) and says why.
async fn watch_configuration(path: PathBuf, shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let fingerprint = |path: &std::path::Path| std::fs::read(path).ok();
    let mut last = fingerprint(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
        let current = fingerprint(&path);
        if current == last {
            continue;
        }
        last = current;
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || load_acl(&path)).await
        };
        match loaded {
            Ok(Ok(acl)) => {
                shared.acl.store(Arc::new(acl));
                tracing::info!(path = %path.display(), "configuration changed; access control reloaded");
            }
            Ok(Err(err)) => {
                tracing::error!(error = %err, "configuration changed but does not load; keeping the previous policy")
            }
            Err(_) => tracing::error!("configuration reload task failed; keeping the previous policy"),
        }
    }
}
