//! `ward operator`: Dapr's operator for ward. It watches Dapr's CRDs (kube-rs watchers folded into an in-memory
//! [`store::Index`]) and serves Dapr's operator gRPC API to sidecars over mTLS, wire-compatible with daprd; it
//! keeps the `<app-id>-dapr` Services of annotated workloads ([`services`]).
//!
//! - [`store`]: the index, validation with `ward-config`, the change feed, the CRD watchers.
//! - [`authz`]: client certificates against the trust anchors, the caller's namespace rule.
//! - [`secrets`]: `secretKeyRef`s of the Kubernetes secret store, read in the resource's namespace.
//! - [`server`]: the gRPC service (scopes enforced on the server, bounded update streams).
//! - [`events`]: Warning Events on objects that are not served as written.
//! - [`services`]: the `<app-id>-dapr` Services.
//!
//! This module wires them together ([`Operator::start`]). It does not own the sidecar's side (the client).

pub mod authz;
pub mod events;
pub mod secrets;
pub mod server;
pub mod services;
pub mod store;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

pub use authz::{Caller, TrustAnchors};
pub use store::{Index, Kind};

/// The operator's app id at sentry (its SPIFFE ID is `spiffe://<cp-td>/ns/<cp-ns>/dapr-operator`).
pub const OPERATOR_APP_ID: &str = ward_operator_api::OPERATOR_APP_ID;
/// Dapr's operator API port.
pub const DEFAULT_PORT: u16 = ward_operator_api::DEFAULT_PORT;
/// Default bound of each update stream's queue.
pub const DEFAULT_STREAM_QUEUE: usize = 256;
/// Default capacity of the shared change feed (how far a stream may lag before it is disconnected).
pub const DEFAULT_FEED_CAPACITY: usize = 4096;
/// How long the first listing of every kind may take before start-up fails.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const ANCHORS_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("trust anchors: {0}")]
    Anchors(#[from] authz::AnchorsError),
    #[error("serving certificate from sentry: {0}")]
    Sentry(#[from] ward_sentry::ClientError),
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listener limits: {0}")]
    Limits(#[from] ward_net::LimitsError),
    #[error("the first listing of {kinds} did not complete within {SYNC_TIMEOUT:?} (are Dapr's CRDs installed?)")]
    NotSynced { kinds: String },
}

/// Everything the operator needs to serve.
pub struct OperatorOptions {
    pub client: kube::Client,
    /// `--port` (Dapr's 6500).
    pub listen: SocketAddr,
    /// `--healthz-port` (Dapr's 8080).
    pub healthz_listen: SocketAddr,
    /// The operator's SVID (`dapr-operator`), from sentry with the projected token, renewed.
    pub sentry: ward_sentry::SentryClientConfig,
    /// The trust anchors clients are verified with (the mounted `dapr-root-ca.crt`), reloaded on change.
    pub trust_anchors_file: PathBuf,
    pub limits: ward_net::ListenerLimits,
    /// Keep the `<app-id>-dapr` Services.
    pub manage_services: bool,
    pub stream_queue: usize,
    pub feed_capacity: usize,
    /// Clock skew tolerated on client certificates.
    pub skew: Duration,
}

/// A running operator. Dropping it stops it; [`Operator::shutdown`] drains first.
pub struct Operator {
    pub addr: SocketAddr,
    pub healthz_addr: SocketAddr,
    pub index: Arc<Index>,
    stop: tokio::sync::watch::Sender<bool>,
    serving: Option<tokio::task::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator").field("addr", &self.addr).field("healthz_addr", &self.healthz_addr).finish()
    }
}

/// Puts the verified caller into every request of a connection (and nothing else can).
fn with_caller(info: &ward_net::ConnectionInfo) -> Option<Caller> {
    Caller::from_verified_chain(info.peer_certificates.as_deref())
}

/// A connection lives no longer than the certificates it was opened with.
struct CertificateAge(Arc<ward_identity::SvidResolver>);

impl ward_net::MaxConnectionAge for CertificateAge {
    fn at_accept(&self) -> Option<std::time::SystemTime> {
        self.0.current().map(|svid| svid.not_after())
    }

    fn after_handshake(&self, info: &ward_net::ConnectionInfo) -> Option<std::time::SystemTime> {
        ward_identity::peer_not_after(info.peer_certificates.as_deref())
    }
}

impl Operator {
    /// Loads the anchors, gets the SVID, lists every kind once (so the first answers are complete), then binds
    /// and serves on the current tokio runtime.
    pub async fn start(options: OperatorOptions) -> Result<Operator, OperatorError> {
        options.limits.validate()?;
        let anchors = TrustAnchors::from_file(&options.trust_anchors_file)?;
        let mut tasks = vec![anchors.watch_file(options.trust_anchors_file.clone(), ANCHORS_POLL)];
        // The first SVID is fetched before anything listens: a sentry that refuses is a start-up error.
        let supervisor = ward_sentry::SentryClient::new(options.sentry)?.start().await?;
        let resolver = supervisor.resolver();

        let index = Arc::new(Index::new(options.feed_capacity));
        let events = Arc::new(events::EventRecorder::new(options.client.clone()));
        let (refusals_tx, mut refusals) = tokio::sync::mpsc::unbounded_channel::<store::Refusal>();
        let (synced_tx, mut synced) = tokio::sync::mpsc::unbounded_channel();
        for kind in Kind::ALL {
            tasks.push(tokio::spawn(store::watch(
                options.client.clone(),
                kind,
                index.clone(),
                refusals_tx.clone(),
                synced_tx.clone(),
            )));
        }
        drop(synced_tx);
        let recorder = events.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(refusal) = refusals.recv().await {
                let object = events::ObjectRef {
                    api_version: refusal.api_version.clone(),
                    kind: refusal.kind.as_str().to_owned(),
                    namespace: refusal.namespace.clone(),
                    name: refusal.name.clone(),
                    uid: refusal.uid.clone(),
                    resource_version: refusal.resource_version.clone(),
                };
                let kept = if refusal.kept_previous { "the last valid version stays in use" } else { "not served" };
                recorder.warn(&object, "InvalidResource", &format!("{}; {kept}", refusal.reason)).await;
            }
        }));
        let mut pending: std::collections::BTreeSet<Kind> = Kind::ALL.into_iter().collect();
        let wait = async {
            while let Some(kind) = synced.recv().await {
                pending.remove(&kind);
                if pending.is_empty() {
                    break;
                }
            }
        };
        if tokio::time::timeout(SYNC_TIMEOUT, wait).await.is_err() {
            for task in &tasks {
                task.abort();
            }
            let kinds = pending.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
            return Err(OperatorError::NotSynced { kinds });
        }
        if options.manage_services {
            tasks.push(tokio::spawn(services::run(options.client.clone())));
        }

        let tls = authz::server_config(resolver.clone(), anchors, options.skew).map_err(OperatorError::Tls)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| OperatorError::Bind { addr, source })
        };
        let listener = bind(options.listen).await?;
        let healthz = bind(options.healthz_listen).await?;
        let local = |l: &TcpListener, addr| l.local_addr().map_err(|source| OperatorError::Bind { addr, source });
        let addr = local(&listener, options.listen)?;
        let healthz_addr = local(&healthz, options.healthz_listen)?;
        let grpc_server = ward_net::Server::new(listener, options.limits)?
            .with_tls(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
            .with_max_age(Arc::new(CertificateAge(resolver)))
            .with_name("operator-grpc");
        let health = ward_net::Server::new(healthz, options.limits)?.with_name("operator-healthz");
        let service = server::OperatorService {
            index: index.clone(),
            client: options.client.clone(),
            events,
            queue: options.stream_queue,
        };
        let routes = tonic::service::Routes::new(ward_operator_api::OperatorServer::new(service));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        tracing::info!(%addr, %healthz_addr, served = index.len(), "operator listening");
        let grpc_stop = stopped(stop_rx.clone());
        let health_stop = stopped(stop_rx);
        let serving = tokio::spawn(async move {
            // The renewals live as long as the server.
            let _supervisor = supervisor;
            let grpc = grpc_server.serve(
                move |info: &ward_net::ConnectionInfo| {
                    let caller = with_caller(info);
                    let service = tower::ServiceBuilder::new()
                        .map_request(move |mut request: http::Request<Incoming>| {
                            if let Some(caller) = &caller {
                                request.extensions_mut().insert(caller.clone());
                            }
                            request
                        })
                        .service(routes.clone());
                    ward_net::TowerToHyperService::new(service)
                },
                grpc_stop,
            );
            let health = health
                .serve(move |_: &ward_net::ConnectionInfo| hyper::service::service_fn(healthz_answer), health_stop);
            let (grpc, health) = tokio::join!(grpc, health);
            tokio::join!(grpc.drain(DRAIN_TIMEOUT), health.drain(DRAIN_TIMEOUT));
        });
        Ok(Operator { addr, healthz_addr, index, stop, serving: Some(serving), tasks })
    }

    /// Stops accepting, gives in-flight requests up to 5 s, stops the watchers.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// `GET /healthz`: 200 while the process serves (it listens only once the first listing is indexed).
async fn healthz_answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "ok\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    Ok(response)
}
