//! The sentry client a sidecar uses: generates a fresh key per request, sends a CSR, verifies that it is really
//! talking to `spiffe://<td>/ns/<control-plane-namespace>/dapr-sentry`, and keeps the SVID fresh — renewing half
//! way through the validity left when it arrived ([`renewal_delay`]: never more often than every few seconds, with
//! jitter) and, on failure, retrying with backoff ([`retry_backoff`]: at most 2 s apart once the SVID has expired or
//! is about to). The SVID is
//! published through an `SvidResolver`, so renewals reach rustls without a restart or a dropped connection.
//!
//! Credentials: the first request carries the bootstrap token from `token_file` (a one-time join token, which is
//! deleted once it bought a certificate, or a JWT, which is kept and re-read each time so it can be rotated).
//! Renewals present the current, still-valid SVID as the TLS client certificate instead, on a fresh connection,
//! and send no token; only if sentry refuses that and a token file exists is the token tried.
//!
//! Trust is pinned: the anchors the client was configured with (`DAPR_TRUST_ANCHORS`) are the only source of
//! trust. A bundle sentry returns is adopted only if every root in it is one of those anchors or signed by one;
//! otherwise it is refused and logged and the current bundle stays. The issued SVID must chain to the bundle in
//! effect. So a compromised sentry cannot widen whom this workload trusts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::UnixTime;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};
use ward_identity::{Authorizer, SpiffeId, SvidResolver, TrustBundle, TrustBundleHandle, TrustDomain, X509Svid};

use crate::proto::SignCertificateRequest;
use crate::proto::ca_client::CaClient;
use crate::proto::sign_certificate_request::TokenValidator as WireValidator;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid sentry address {0:?}")]
    Address(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("generating a key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("reading the sentry token from {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the sentry token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("sentry refused the request: {0}")]
    Refused(#[from] tonic::Status),
    #[error("sentry's answer is unusable: {0}")]
    BadResponse(String),
    #[error("sentry issued {got}, but {expected} was requested")]
    WrongIdentity { got: String, expected: String },
    #[error("the certificate sentry issued does not chain to the trusted roots: {0}")]
    UntrustedSvid(#[source] ward_identity::VerifyError),
}

/// Why a trust bundle offered by sentry was not adopted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("the offered bundle is for trust domain {offered}, the configured anchors are for {configured}")]
    TrustDomain { offered: String, configured: String },
    #[error("root {index} of the offered bundle ({subject}) is neither a configured trust anchor nor signed by one")]
    Unpinned { index: usize, subject: String },
}

/// Accepts `offered` only if each of its roots is byte-equal to a configured anchor, or is a currently valid CA
/// certificate whose signature verifies with a configured anchor's key (a cross-signed successor root). Anything
/// else would let whoever controls sentry add roots.
pub fn check_pinned(configured: &TrustBundle, offered: &TrustBundle) -> Result<(), PinError> {
    if offered.trust_domain() != configured.trust_domain() {
        return Err(PinError::TrustDomain {
            offered: offered.trust_domain().to_string(),
            configured: configured.trust_domain().to_string(),
        });
    }
    let anchors: Vec<_> = configured
        .roots()
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok().map(|(_, cert)| cert))
        .collect();
    for (index, root) in offered.roots().iter().enumerate() {
        if configured.roots().contains(root) {
            continue;
        }
        let parsed = x509_parser::parse_x509_certificate(root).ok().map(|(_, cert)| cert);
        let signed_by_anchor = parsed.as_ref().is_some_and(|cert| {
            cert.validity().is_valid()
                && cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca)
                && anchors.iter().any(|anchor| cert.verify_signature(Some(anchor.public_key())).is_ok())
        });
        if !signed_by_anchor {
            let subject = parsed.map(|cert| cert.subject().to_string()).unwrap_or_else(|| "unparsable".to_owned());
            return Err(PinError::Unpinned { index, subject });
        }
    }
    Ok(())
}

/// Everything needed to ask sentry for this workload's SVID.
#[derive(Debug, Clone)]
pub struct SentryClientConfig {
    /// `host:port` of sentry.
    pub address: String,
    /// The identity sentry must present (`spiffe://<cptd>/ns/<cpns>/dapr-sentry`).
    pub sentry_id: SpiffeId,
    /// Roots used to verify sentry and, later, peers. Replaced by the bundle sentry returns on each renewal.
    pub bundle: TrustBundleHandle,
    pub app_id: String,
    pub namespace: String,
    /// The workload trust domain; sent only when it differs from sentry's (Dapr leaves it empty for apps).
    pub trust_domain: TrustDomain,
    /// A file holding a join token or JWT (`DAPR_SENTRY_TOKEN_FILE`); re-read on every request so it can be
    /// rotated.
    pub token_file: Option<PathBuf>,
    pub skew: Duration,
    /// Kubernetes mode (Dapr's `KUBERNETES` validator): every request, renewals included, carries the projected
    /// service-account token from `token_file` (sentry re-checks the pod each time), and the trust anchors come
    /// only from the mounted bundle file, so a bundle sentry returns is not adopted.
    pub kubernetes: bool,
    /// The roots sentry is verified with when its trust domain is not the workload's (Kubernetes: sentry is in
    /// the control-plane trust domain, apps usually in `public`); the same anchors under sentry's trust domain.
    /// `None`: `bundle`.
    pub sentry_trust: Option<TrustBundleHandle>,
}

/// Why a control-plane component's sentry client settings cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneSetupError {
    #[error("control-plane trust domain {value:?}: {source}")]
    TrustDomain {
        value: String,
        #[source]
        source: ward_identity::SpiffeIdError,
    },
    #[error("trust anchors: {0}")]
    Anchors(#[source] ward_identity::BundleError),
}

/// The sentry client settings of a control-plane component (the injector's `dapr-injector`, the operator's
/// `dapr-operator`): its identity `app_id` in the control-plane namespace and trust domain, sentry's expected
/// identity (`dapr-sentry` there), the trust anchors (PEM) that verify sentry, and the projected token file.
/// `kubernetes`: Dapr's `KUBERNETES` validator (the projected token on every request, anchors only from the
/// file) — what the control plane uses in a cluster; `false` only against a sentry that validates otherwise.
pub fn control_plane_client_config(
    control_plane_trust_domain: &str,
    control_plane_namespace: &str,
    app_id: &str,
    address: String,
    trust_anchors_pem: &[u8],
    token_file: PathBuf,
    kubernetes: bool,
) -> Result<SentryClientConfig, ControlPlaneSetupError> {
    let wrap = |source| ControlPlaneSetupError::TrustDomain { value: control_plane_trust_domain.to_owned(), source };
    let trust_domain = TrustDomain::new(control_plane_trust_domain).map_err(wrap)?;
    let sentry_id = SpiffeId::dapr(&trust_domain, control_plane_namespace, "dapr-sentry").map_err(wrap)?;
    let bundle =
        TrustBundle::from_pem(trust_domain.clone(), trust_anchors_pem).map_err(ControlPlaneSetupError::Anchors)?;
    Ok(SentryClientConfig {
        address,
        sentry_id,
        bundle: TrustBundleHandle::new(bundle),
        app_id: app_id.to_owned(),
        namespace: control_plane_namespace.to_owned(),
        trust_domain,
        token_file: Some(token_file),
        skew: ward_identity::DEFAULT_CLOCK_SKEW,
        kubernetes,
        // Control-plane components are in the control-plane trust domain, sentry's own.
        sentry_trust: None,
    })
}

/// A sentry client. Cheap to clone.
#[derive(Clone)]
pub struct SentryClient {
    config: Arc<SentryClientConfig>,
    /// This workload's SVID: presented to sentry on renewals, and what [`SvidSupervisor::resolver`] returns.
    svid: Arc<SvidResolver>,
    /// The anchors configured at construction; never replaced (see the module comment).
    pinned: Arc<TrustBundle>,
    connector: tokio_rustls::TlsConnector,
    endpoint: Endpoint,
}

impl std::fmt::Debug for SentryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryClient").field("config", &self.config).finish_non_exhaustive()
    }
}

const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Which trust domain a returned SVID must be in: the configured one, or (Kubernetes bootstrap) the one sentry
/// assigned; app id and namespace are checked either way.
#[derive(Clone, Copy)]
enum TrustDomainCheck {
    Configured,
    AsAssigned,
}

impl SentryClient {
    /// Prepares the client; nothing is sent until the first request. The current content of `config.bundle`
    /// becomes the pinned set of trust anchors.
    pub fn new(config: SentryClientConfig) -> Result<Self, ClientError> {
        let svid = Arc::new(SvidResolver::new());
        // In Kubernetes every request is authenticated by the pod-bound token; the SVID is not presented (it is in
        // the workload's trust domain, which sentry's listener does not serve, and a renewal by certificate would
        // skip the pod checks).
        let presented = if config.kubernetes { Arc::new(SvidResolver::new()) } else { svid.clone() };
        let mut tls = ward_identity::client_config(
            presented,
            config.sentry_trust.clone().unwrap_or_else(|| config.bundle.clone()),
            Authorizer::Exact(config.sentry_id.clone()),
            config.skew,
            &[b"h2"],
        )?;
        // A resumed TLS 1.3 session carries the client identity of the session it resumes (none, at bootstrap),
        // and renewals must present the current SVID: every connection to sentry is a full handshake.
        tls.resumption = rustls::client::Resumption::disabled();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let address = config.address.clone();
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| ClientError::Address(address.clone()))?
            .connect_timeout(RPC_TIMEOUT)
            .timeout(RPC_TIMEOUT);
        let pinned = config.bundle.load();
        Ok(Self { config: Arc::new(config), svid, pinned, connector, endpoint })
    }

    /// A fresh, lazily connecting channel. Each request gets its own connection so that the TLS handshake
    /// presents the SVID held *now* (none while bootstrapping, the current one when renewing). Must be called
    /// within a Tokio runtime (the channel spawns its worker).
    fn channel(&self) -> Channel {
        let connector = self.connector.clone();
        let address = self.config.address.clone();
        self.endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            let address = address.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                tcp.set_nodelay(true)?;
                // The name is not checked (the SPIFFE verifier is); it only has to be syntactically valid.
                let name = ServerName::try_from("dapr-sentry").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
    }

    /// The raw gRPC client over a verified channel (for tools and tests that craft their own requests). Must be
    /// called within a Tokio runtime.
    pub fn grpc(&self) -> CaClient<Channel> {
        CaClient::new(self.channel())
    }

    fn token(&self) -> Result<String, ClientError> {
        let Some(path) = &self.config.token_file else { return Ok(String::new()) };
        let token =
            std::fs::read_to_string(path).map_err(|source| ClientError::Token { path: path.clone(), source })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(ClientError::EmptyToken(path.clone()));
        }
        Ok(token.to_owned())
    }

    /// Requests a new SVID (fresh key each time) and returns it with the trust bundle sentry sent, if that
    /// bundle passed [`check_pinned`] (a refused bundle is logged and returned as `None`).
    ///
    /// While this client holds a valid SVID (after [`Self::start`]) the request authenticates with it and sends
    /// no token; otherwise the token file is read, and a join token file is deleted once it bought a certificate.
    pub async fn fetch(&self) -> Result<(X509Svid, Option<TrustBundle>), ClientError> {
        if self.config.kubernetes {
            let token = self.token()?;
            let (svid, _ignored) = self.request(token).await?;
            return Ok((svid, None));
        }
        let renewing = self.svid.current().is_some_and(|svid| !svid.is_expired_at(SystemTime::now()));
        if renewing {
            match self.request(String::new()).await {
                Err(ClientError::Refused(status))
                    if self.config.token_file.as_ref().is_some_and(|path| path.exists()) =>
                {
                    tracing::warn!(reason = %status.message(), "sentry refused a renewal with the current certificate; trying the token file");
                }
                other => return other,
            }
        }
        let token = self.token()?;
        let result = self.request(token.clone()).await?;
        if let Some(path) = &self.config.token_file
            && !looks_like_jwt(&token)
        {
            // A join token buys one certificate; keeping the spent secret on disk helps nobody.
            match std::fs::remove_file(path) {
                Ok(()) => tracing::info!(file = %path.display(), "removed the used join token file"),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "could not remove the used join token file")
                }
            }
        }
        Ok(result)
    }

    /// Kubernetes bootstrap: one SVID for this pod's app id and namespace in whatever trust domain sentry assigns
    /// (sentry reads it from the pod's Configuration, which the sidecar can fetch from the operator only once it
    /// has an identity). Used once, to fetch that Configuration; the sidecar then starts its renewing client with
    /// the trust domain the Configuration names, and [`Self::start`] checks the two agree.
    pub async fn fetch_kubernetes_bootstrap(&self) -> Result<X509Svid, ClientError> {
        let token = self.token()?;
        let (svid, _ignored) = self.request_for(token, TrustDomainCheck::AsAssigned).await?;
        Ok(svid)
    }

    async fn request(&self, token: String) -> Result<(X509Svid, Option<TrustBundle>), ClientError> {
        self.request_for(token, TrustDomainCheck::Configured).await
    }

    async fn request_for(
        &self,
        token: String,
        check: TrustDomainCheck,
    ) -> Result<(X509Svid, Option<TrustBundle>), ClientError> {
        let key = KeyPair::generate()?;
        let csr = CertificateParams::default().serialize_request(&key)?.pem()?;
        let looks_like_jwt = looks_like_jwt(&token);
        let request = SignCertificateRequest {
            id: self.config.app_id.clone(),
            token,
            trust_domain: String::new(),
            namespace: self.config.namespace.clone(),
            certificate_signing_request: csr.into_bytes(),
            token_validator: if self.config.kubernetes {
                WireValidator::Kubernetes as i32
            } else if looks_like_jwt {
                WireValidator::Jwks as i32
            } else {
                WireValidator::Unknown as i32
            },
            jwt_audiences: Vec::new(),
        };
        let response = CaClient::new(self.channel()).sign_certificate(request).await?.into_inner();
        let chain = CertificateDer::pem_slice_iter(&response.workload_certificate)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| ClientError::BadResponse(format!("workload certificate: {err}")))?;
        let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
            .map_err(|err| ClientError::BadResponse(err.to_string()))?;
        let svid = X509Svid::from_der(chain, key_der).map_err(|err| ClientError::BadResponse(err.to_string()))?;
        let trust_domain = match check {
            TrustDomainCheck::Configured => self.config.trust_domain.clone(),
            TrustDomainCheck::AsAssigned => svid.spiffe_id().trust_domain(),
        };
        let expected = SpiffeId::dapr(&trust_domain, &self.config.namespace, &self.config.app_id)
            .map_err(|err| ClientError::BadResponse(err.to_string()))?;
        if svid.spiffe_id() != &expected {
            return Err(ClientError::WrongIdentity {
                got: svid.spiffe_id().to_string(),
                expected: expected.to_string(),
            });
        }
        let roots: Vec<u8> = response.trust_chain_certificates.concat();
        let offered = if roots.is_empty() {
            None
        } else {
            Some(
                TrustBundle::from_pem(self.config.trust_domain.clone(), &roots)
                    .map_err(|err| ClientError::BadResponse(format!("trust bundle: {err}")))?,
            )
        };
        // Kubernetes: the mounted anchors file is the only source of trust; what sentry sends is not adopted.
        let offered = offered.filter(|_| !self.config.kubernetes);
        let bundle = offered.and_then(|offered| match check_pinned(&self.pinned, &offered) {
            Ok(()) => Some(offered),
            Err(err) => {
                tracing::error!(sentry = %self.config.address, reason = %err, "refused the trust bundle sentry returned; keeping the configured trust anchors");
                None
            }
        });
        let in_effect = bundle.clone().map(Arc::new).unwrap_or_else(|| self.config.bundle.load());
        // The bootstrap's chain is checked against the same anchors, filed under the trust domain sentry assigned
        // (a bundle only vouches for members of its own trust domain).
        let in_effect = match check {
            TrustDomainCheck::Configured => in_effect,
            TrustDomainCheck::AsAssigned => Arc::new(
                TrustBundle::new(trust_domain.clone(), in_effect.roots().to_vec())
                    .map_err(|err| ClientError::BadResponse(format!("trust bundle: {err}")))?,
            ),
        };
        let chain = svid.chain();
        let (leaf, intermediates) =
            chain.split_first().ok_or_else(|| ClientError::BadResponse("empty chain".into()))?;
        ward_identity::verify_svid(
            &in_effect,
            leaf,
            intermediates,
            UnixTime::now(),
            self.config.skew,
            ward_identity::Usage::Client,
        )
        .map_err(ClientError::UntrustedSvid)?;
        Ok((svid, bundle))
    }

    /// Fetches the first SVID and then keeps it fresh in a background task until the returned handle is dropped.
    pub async fn start(self) -> Result<SvidSupervisor, ClientError> {
        let resolver = self.svid.clone();
        let (svid, bundle) = self.fetch().await?;
        tracing::info!(id = %svid.spiffe_id(), valid_until = %crate::server::humantime_rfc3339(svid.not_after()), "received workload certificate");
        resolver.replace(svid);
        if let Some(bundle) = bundle {
            self.config.bundle.store(bundle);
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        let counters = Arc::new(RenewalCounters::default());
        let task = tokio::spawn(renew_forever(self, resolver.clone(), wake.clone(), counters.clone()));
        Ok(SvidSupervisor { resolver, waker: RenewalWaker { notify: wake }, counters, task })
    }
}

/// Owns the renewal task; dropping it stops renewals.
#[derive(Debug)]
pub struct SvidSupervisor {
    resolver: Arc<SvidResolver>,
    waker: RenewalWaker,
    counters: Arc<RenewalCounters>,
    task: tokio::task::JoinHandle<()>,
}

/// How renewals went (Dapr's `dapr_runtime_mtls_workload_cert_rotated_total` and `..._fail_total`).
#[derive(Debug, Default)]
pub struct RenewalCounters {
    pub rotated: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
}

impl SvidSupervisor {
    pub fn resolver(&self) -> Arc<SvidResolver> {
        self.resolver.clone()
    }

    /// A handle that makes the renewer retry at once while the certificate is missing or expiring; give it to the
    /// code that sees handshakes fail for lack of a certificate.
    pub fn waker(&self) -> RenewalWaker {
        self.waker.clone()
    }

    /// Renewals so far, for metrics.
    pub fn counters(&self) -> Arc<RenewalCounters> {
        self.counters.clone()
    }
}

impl Drop for SvidSupervisor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Never renew more often than this, whatever the certificate says: a certificate that is already half spent when it
/// arrives (short lifetime, backdated `not_before`, a slow clock) must not turn into a renewal per handshake.
pub const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(3);

/// At most this fraction of the wait is taken off at random, so sidecars started together do not renew together.
/// Jitter only ever makes the renewal earlier.
const RENEWAL_JITTER: f64 = 0.1;

/// The first retry after a failed renewal.
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// The longest pause between renewal attempts while the current certificate has time left.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The longest pause between attempts once the certificate has expired or is about to (issue 24 defect 5): with no
/// usable certificate every second without one is an outage, so sentry's return must be noticed quickly.
pub const MAX_BACKOFF_WHEN_EXPIRING: Duration = Duration::from_secs(2);

/// "About to expire": less time left than this. Twice [`MAX_BACKOFF`], so that a normal pause can never sleep
/// through the expiry.
const EXPIRING_WINDOW: Duration = Duration::from_secs(20);

/// How long to wait before renewing a certificate valid until `not_after` that arrived at `received`:
/// half of the validity left at reception, less up to [`RENEWAL_JITTER`] of it (`jitter` in `0.0..=1.0` scales
/// that), and never less than [`MIN_RENEWAL_INTERVAL`].
///
/// Measured from reception, not from `not_before`: sentry backdates `not_before` by its allowed clock skew (15
/// minutes by default), so with a short lifetime "half way from `not_before`" is already past when the certificate
/// arrives, and scheduling from it renews in a loop (issue 24 defect 1).
pub fn renewal_delay(received: SystemTime, not_after: SystemTime, jitter: f64) -> Duration {
    let left = not_after.duration_since(received).unwrap_or(Duration::ZERO);
    let half = left / 2;
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    let delay = half.saturating_sub(half.mul_f64(RENEWAL_JITTER * jitter));
    delay.max(MIN_RENEWAL_INTERVAL)
}

/// The pause after `failures` (at least 1) consecutive failed renewals: doubling from [`MIN_BACKOFF`], capped at
/// [`MAX_BACKOFF`] while the certificate has more than [`EXPIRING_WINDOW`] left, and at
/// [`MAX_BACKOFF_WHEN_EXPIRING`] when it has less, has expired, or there is none (`left` = `None`).
pub fn retry_backoff(failures: u32, left: Option<Duration>) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let grown = MIN_BACKOFF.saturating_mul(1u32 << doublings);
    let expiring = left.is_none_or(|left| left < EXPIRING_WINDOW);
    grown.min(if expiring { MAX_BACKOFF_WHEN_EXPIRING } else { MAX_BACKOFF })
}

/// A random number in `0.0..1.0` for jitter. `RandomState` is seeded from the OS once per process and differs per
/// instance, which is all jitter needs (no dependency on `rand` for it).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Time left on the current certificate (`None` if there is none or it has expired).
fn time_left(resolver: &SvidResolver) -> Option<Duration> {
    resolver.current().and_then(|svid| svid.not_after().duration_since(SystemTime::now()).ok())
}

/// Wakes the renewal task at once, for the code that sees a handshake fail for lack of a usable certificate
/// (issue 24 defect 5). Cheap to clone. A wake is acted on only while the current certificate is missing, expired
/// or about to expire: a peer that makes handshakes fail must not be able to make this sidecar renew in a loop.
#[derive(Debug, Clone)]
pub struct RenewalWaker {
    notify: Arc<tokio::sync::Notify>,
}

impl RenewalWaker {
    /// Asks the renewer to try now (if the certificate is expiring) instead of finishing its current pause.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// A JWT has exactly three dot-separated parts; join tokens (whitespace-free, at least 16 characters) are
/// expected not to.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Sleeps for `pause`, or less if woken while the certificate is missing or expiring. Wakes while it is healthy
/// are ignored (and so cannot shorten the schedule).
async fn pause(pause: Duration, resolver: &SvidResolver, wake: &tokio::sync::Notify) {
    let until = tokio::time::Instant::now() + pause;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            () = wake.notified() => {
                if time_left(resolver).is_none_or(|left| left < EXPIRING_WINDOW) {
                    tracing::debug!("renewal woken: the certificate is missing or about to expire");
                    return;
                }
            }
        }
    }
}

async fn renew_forever(
    client: SentryClient,
    resolver: Arc<SvidResolver>,
    wake: Arc<tokio::sync::Notify>,
    counters: Arc<RenewalCounters>,
) {
    use std::sync::atomic::Ordering;
    // The certificate installed by `start` arrived just now.
    let mut next = resolver
        .current()
        .map(|svid| renewal_delay(SystemTime::now(), svid.not_after(), jitter()))
        .unwrap_or(Duration::ZERO);
    let mut failures = 0u32;
    loop {
        pause(next, &resolver, &wake).await;
        match client.fetch().await {
            Ok((svid, bundle)) => {
                next = renewal_delay(SystemTime::now(), svid.not_after(), jitter());
                tracing::debug!(id = %svid.spiffe_id(), valid_until = %crate::server::humantime_rfc3339(svid.not_after()), next_renewal_in = ?next, "renewed workload certificate");
                resolver.replace(svid);
                if let Some(bundle) = bundle {
                    client.config.bundle.store(bundle);
                }
                failures = 0;
                counters.rotated.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let left = time_left(&resolver);
                let backoff = retry_backoff(failures, left);
                // Jitter only shortens the pause, so the caps hold.
                next = backoff.saturating_sub(backoff.mul_f64(0.2 * jitter()));
                match left {
                    Some(left) => {
                        tracing::warn!(error = %err, retry_in = ?next, valid_for = ?left, "certificate renewal failed; the current certificate is still valid")
                    }
                    None => {
                        tracing::warn!(error = %err, retry_in = ?next, "certificate renewal failed and the certificate has expired: no new mTLS connections until renewal succeeds")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, DnType, IsCa, Issuer};

    fn td(name: &str) -> TrustDomain {
        TrustDomain::new(name).unwrap()
    }

    fn ca_params(name: &str, ca: bool) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = if ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
        params
    }

    /// (certificate DER, key) of a self-signed CA.
    fn root(name: &str) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params(name, true).self_signed(&key).unwrap();
        (cert.der().clone(), key)
    }

    fn bundle(td_name: &str, roots: &[&CertificateDer<'static>]) -> TrustBundle {
        TrustBundle::new(td(td_name), roots.iter().map(|r| (*r).clone()).collect()).unwrap()
    }

    /// Issue 24 defect 1: the schedule is measured from reception, so a backdated `not_before` (60 s lifetime,
    /// 15 minutes of skew) cannot put the renewal in the past; the floor and the jitter bound it on both sides.
    #[test]
    fn renewal_is_scheduled_from_reception_with_a_floor_and_jitter() {
        let now = SystemTime::now();
        let secs = Duration::from_secs;
        struct Case {
            name: &'static str,
            left: Duration,
            jitter: f64,
            expected: Duration,
        }
        let cases = [
            Case { name: "60 s certificate, no jitter", left: secs(60), jitter: 0.0, expected: secs(30) },
            Case { name: "60 s certificate, full jitter", left: secs(60), jitter: 1.0, expected: secs(27) },
            Case { name: "24 h certificate", left: secs(86_400), jitter: 0.0, expected: secs(43_200) },
            Case { name: "4 s left: the floor", left: secs(4), jitter: 0.0, expected: MIN_RENEWAL_INTERVAL },
            Case { name: "nothing left: the floor", left: Duration::ZERO, jitter: 0.5, expected: MIN_RENEWAL_INTERVAL },
            Case { name: "jitter out of range is clamped", left: secs(60), jitter: 7.0, expected: secs(27) },
            Case { name: "NaN jitter counts as none", left: secs(60), jitter: f64::NAN, expected: secs(30) },
        ];
        for case in cases {
            assert_eq!(renewal_delay(now, now + case.left, case.jitter), case.expected, "{}", case.name);
        }
        // Received after not_after (a clock jump): the floor, not an immediate loop.
        assert_eq!(renewal_delay(now + secs(5), now, 0.0), MIN_RENEWAL_INTERVAL);
        // The old schedule (`not_before + lifetime / 2`) for the defect's certificate lies 7 minutes in the past;
        // the new one is half a minute ahead.
        let not_before = now - secs(15 * 60);
        let not_after = now + secs(60);
        let old_due = not_before + not_after.duration_since(not_before).unwrap_or_default() / 2;
        assert!(old_due < now);
        assert!(renewal_delay(now, not_after, jitter()) >= secs(27));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    /// Issue 24 defect 5: the pause doubles from 250 ms to 10 s while the certificate has time left, but never
    /// exceeds 2 s once it has expired, is about to, or is missing.
    #[test]
    fn retry_backoff_is_capped_at_two_seconds_when_expiring() {
        let ms = Duration::from_millis;
        let healthy = Some(Duration::from_secs(3600));
        let grown: Vec<Duration> = (1..=8).map(|n| retry_backoff(n, healthy)).collect();
        assert_eq!(grown, [ms(250), ms(500), ms(1000), ms(2000), ms(4000), ms(8000), ms(10_000), ms(10_000)]);
        for left in [None, Some(Duration::ZERO), Some(Duration::from_secs(5)), Some(Duration::from_secs(19))] {
            let pauses: Vec<Duration> = (1..=8).map(|n| retry_backoff(n, left)).collect();
            assert_eq!(pauses[..4], [ms(250), ms(500), ms(1000), ms(2000)], "{left:?}");
            assert!(pauses.iter().all(|p| *p <= MAX_BACKOFF_WHEN_EXPIRING), "{left:?}: {pauses:?}");
        }
        assert_eq!(retry_backoff(0, None), ms(250), "0 failures is treated as the first");
        assert_eq!(retry_backoff(u32::MAX, healthy), MAX_BACKOFF, "no overflow");
        assert_eq!(retry_backoff(u32::MAX, Some(Duration::from_secs(20))), MAX_BACKOFF, "20 s left is not expiring");
    }

    /// A wake cuts the pause short only while the certificate is missing or expiring.
    #[tokio::test]
    async fn a_wake_shortens_the_pause_only_while_expiring() {
        let resolver = SvidResolver::new();
        let wake = tokio::sync::Notify::new();
        wake.notify_one();
        let woken =
            tokio::time::timeout(Duration::from_secs(5), pause(Duration::from_secs(60), &resolver, &wake)).await;
        assert!(woken.is_ok(), "no certificate: the wake ends the pause");

        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names =
            vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from("spiffe://public/ns/default/a").unwrap())];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let cert = params.self_signed(&key).unwrap();
        let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        resolver.replace(X509Svid::from_der(vec![cert.der().clone()], key_der).unwrap());
        wake.notify_one();
        let started = std::time::Instant::now();
        pause(Duration::from_millis(300), &resolver, &wake).await;
        assert!(started.elapsed() >= Duration::from_millis(290), "a healthy certificate ignores wakes");
    }

    #[test]
    fn only_configured_anchors_or_roots_they_signed_are_adopted() {
        let (pinned, pinned_key) = root("configured root");
        let (rogue, _) = root("rogue root");
        let configured = bundle("public", &[&pinned]);
        let pinned_issuer = Issuer::new(ca_params("configured root", true), &pinned_key);
        let successor_key = KeyPair::generate().unwrap();
        let successor = ca_params("successor root", true).signed_by(&successor_key, &pinned_issuer).unwrap();
        let successor = successor.der().clone();
        let leafish = ca_params("not a CA", false).signed_by(&KeyPair::generate().unwrap(), &pinned_issuer).unwrap();
        let leafish = leafish.der().clone();

        assert_eq!(check_pinned(&configured, &bundle("public", &[&pinned])), Ok(()), "equal");
        assert_eq!(check_pinned(&configured, &bundle("public", &[&successor, &pinned])), Ok(()), "cross-signed");
        assert!(
            matches!(
                check_pinned(&configured, &bundle("public", &[&rogue])),
                Err(PinError::Unpinned { index: 0, ref subject }) if subject.contains("rogue")
            ),
            "a root nobody configured"
        );
        assert!(
            matches!(
                check_pinned(&configured, &bundle("public", &[&pinned, &rogue])),
                Err(PinError::Unpinned { index: 1, .. })
            ),
            "a rogue root next to the configured one"
        );
        assert!(
            matches!(check_pinned(&configured, &bundle("public", &[&leafish])), Err(PinError::Unpinned { .. })),
            "signed by the anchor but not a CA"
        );
        assert!(matches!(check_pinned(&configured, &bundle("evil", &[&pinned])), Err(PinError::TrustDomain { .. })));
    }
}
