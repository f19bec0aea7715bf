//! The injector's listeners: HTTPS `POST /mutate` (the admission webhook) and plain-HTTP `GET /healthz` on a
//! port of its own, both through `ward-net` (handshake, header-read and idle timeouts, a connection cap).
//!
//! Owns: binding, the request handling around [`crate::review`] (method and path, the bounded body, 400 for a
//! body that is not a review — the server keeps serving), start and shutdown, choosing the serving certificate's
//! source ([`ServingCert`]: files, or an SVID from sentry renewed by `ward-sentry`'s client), and starting the
//! `caBundle` sync. Does not own the decision ([`crate::admission`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::ca_bundle::{CaBundleError, CaBundleSync};
use crate::tls::{CertResolver, TlsError};
use crate::{ConfigError, InjectorConfig, MAX_REVIEW_BYTES};

/// How long a review body may take to arrive once its headers have (the API server sends it at once).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight reviews get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the certificate files are checked for changes.
pub const CERT_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum InjectorError {
    #[error("injector settings: {0}")]
    Config(#[from] ConfigError),
    #[error("serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listener limits: {0}")]
    Limits(#[from] ward_net::LimitsError),
    #[error("caBundle sync: {0}")]
    CaBundle(#[from] CaBundleError),
    #[error("serving certificate from sentry: {0}")]
    Sentry(#[from] ward_sentry::ClientError),
}

/// Where the webhook's serving certificate comes from.
#[derive(Debug)]
pub enum ServingCert {
    /// PEM files (e.g. a Secret volume), polled every second and swapped in when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// An X.509 SVID for `spiffe://<cp-td>/ns/<cp-ns>/dapr-injector` from sentry, proven with the projected
    /// token and renewed before it expires (see [`sentry_client_config`]). Sentry decides the DNS SANs the API
    /// server checks (`dapr-sidecar-injector.<ns>.svc`).
    Sentry(ward_sentry::SentryClientConfig),
}

/// The injector's identity at sentry (Dapr's `dapr-injector`).
pub const INJECTOR_APP_ID: &str = "dapr-injector";

/// Why a sentry client configuration cannot be built (shared with `ward operator`).
pub use ward_sentry::ControlPlaneSetupError as SentrySetupError;

/// The sentry client settings of the injector: its own identity (`dapr-injector` in the control-plane namespace),
/// sentry's expected identity, the trust anchors (PEM) that verify sentry, and the projected token file.
/// `kubernetes`: Dapr's `KUBERNETES` validator (the projected token on every request, anchors only from the
/// file) — what `ward injector` uses; `false` only against a sentry that validates otherwise (tests). The
/// settings are `ward_sentry::control_plane_client_config`'s, which `ward operator` uses too.
pub fn sentry_client_config(
    config: &InjectorConfig,
    address: String,
    trust_anchors_pem: &[u8],
    token_file: PathBuf,
    kubernetes: bool,
) -> Result<ward_sentry::SentryClientConfig, SentrySetupError> {
    ward_sentry::control_plane_client_config(
        &config.control_plane_trust_domain,
        &config.control_plane_namespace,
        INJECTOR_APP_ID,
        address,
        trust_anchors_pem,
        token_file,
        kubernetes,
    )
}

/// Keeps the certificate source alive as long as the server: the file watcher, or sentry's renewal task.
enum CertSource {
    Files(
        #[expect(dead_code, reason = "held for its watcher, which stops when the last handle is dropped")]
        Arc<CertResolver>,
    ),
    Sentry(#[expect(dead_code, reason = "held: dropping the supervisor stops renewals")] ward_sentry::SvidSupervisor),
}

/// Everything `ward injector` needs to serve.
#[derive(Debug)]
pub struct ServeOptions {
    pub config: InjectorConfig,
    /// `--port` (Dapr's 4000), all interfaces: the API server calls it through the Service.
    pub listen: SocketAddr,
    /// `--healthz-port` (Dapr's 8080).
    pub healthz_listen: SocketAddr,
    pub serving: ServingCert,
    pub limits: ward_net::ListenerLimits,
    /// Keep the webhook configuration's `caBundle` equal to the trust anchors (off in tests that register their
    /// own configuration by hand).
    pub ca_bundle: Option<CaBundleSync>,
}

/// A running injector. Dropping it stops it (without waiting); [`Injector::shutdown`] drains first.
pub struct Injector {
    /// Where `/mutate` listens.
    pub addr: SocketAddr,
    pub healthz_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    serving: Option<tokio::task::JoinHandle<()>>,
    sync: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").field("addr", &self.addr).field("healthz_addr", &self.healthz_addr).finish()
    }
}

impl Injector {
    /// Checks the settings, loads the certificate, binds both ports and serves on the current tokio runtime.
    pub async fn start(options: ServeOptions) -> Result<Injector, InjectorError> {
        options.config.validate()?;
        options.limits.validate()?;
        let (resolver, source): (Arc<dyn rustls::server::ResolvesServerCert>, CertSource) = match options.serving {
            ServingCert::Files { cert, key } => {
                let files = CertResolver::load_and_watch(cert, key, CERT_POLL)?;
                (files.clone(), CertSource::Files(files))
            }
            // The first SVID is fetched before anything listens: a sentry that refuses is a start-up error.
            ServingCert::Sentry(client) => {
                let supervisor = ward_sentry::SentryClient::new(client)?.start().await?;
                (supervisor.resolver(), CertSource::Sentry(supervisor))
            }
        };
        let tls = Arc::new(crate::tls::server_config(resolver)?);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| InjectorError::Bind { addr, source })
        };
        let listener = bind(options.listen).await?;
        let healthz = bind(options.healthz_listen).await?;
        let local = |l: &TcpListener, addr| l.local_addr().map_err(|source| InjectorError::Bind { addr, source });
        let addr = local(&listener, options.listen)?;
        let healthz_addr = local(&healthz, options.healthz_listen)?;
        let sync = match options.ca_bundle {
            Some(sync) => Some(sync.spawn()?),
            None => None,
        };

        let webhook = ward_net::Server::new(listener, options.limits)?
            .with_tls(tokio_rustls::TlsAcceptor::from(tls))
            .with_name("injector-webhook");
        let health = ward_net::Server::new(healthz, options.limits)?.with_name("injector-healthz");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let config = Arc::new(options.config);
        tracing::info!(%addr, %healthz_addr, image = %config.sidecar_image, "sidecar injector listening");
        let webhook_stop = stopped(stop_rx.clone());
        let health_stop = stopped(stop_rx);
        // The certificate source lives as long as the serving task.
        let serving = tokio::spawn(async move {
            let _source = source;
            let webhook = webhook.serve(
                move |_: &ward_net::ConnectionInfo| {
                    let config = config.clone();
                    hyper::service::service_fn(move |request| handle(config.clone(), request))
                },
                webhook_stop,
            );
            let health = health
                .serve(move |_: &ward_net::ConnectionInfo| hyper::service::service_fn(healthz_answer), health_stop);
            let (webhook, health) = tokio::join!(webhook, health);
            tokio::join!(webhook.drain(DRAIN_TIMEOUT), health.drain(DRAIN_TIMEOUT));
        });
        Ok(Injector { addr, healthz_addr, stop, serving: Some(serving), sync })
    }

    /// Stops accepting, lets in-flight reviews finish (up to 5 s), stops the `caBundle` sync.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
        if let Some(sync) = self.sync.take() {
            sync.abort();
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(sync) = self.sync.take() {
            sync.abort();
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// `POST /mutate`: one review. Anything that is not a review is answered 400 with the reason; the connection
/// and the server carry on.
async fn handle(config: Arc<InjectorConfig>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/mutate" {
        return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
    }
    if request.method() != Method::POST {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview to /mutate\n"));
    }
    let body = Limited::new(ward_net::ReadTimeoutBody::new(request.into_body(), BODY_TIMEOUT), MAX_REVIEW_BYTES);
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, format!("review body over {MAX_REVIEW_BYTES} bytes\n")));
        }
        Err(err) => return Ok(text(StatusCode::BAD_REQUEST, format!("reading the review body: {err}\n"))),
    };
    match crate::review(&config, &bytes) {
        Ok(answer) => {
            let mut response = Response::new(Full::new(Bytes::from(answer)));
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            Ok(response)
        }
        Err(err) => {
            tracing::warn!(error = %err, "malformed admission review");
            Ok(text(StatusCode::BAD_REQUEST, format!("{err}\n")))
        }
    }
}

/// `GET /healthz`: 200 while the process serves (both listeners run in the same task).
async fn healthz_answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}
