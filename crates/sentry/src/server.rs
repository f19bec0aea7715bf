//! The `ward sentry` process: serves `dapr.proto.sentry.v1.CA/SignCertificate` over TLS with its own SVID
//! (`spiffe://<td>/ns/<namespace>/dapr-sentry`), a `/healthz` endpoint, and reloads its issuer credentials when
//! the files change.
//!
//! Authentication of a request: a caller that presents a client certificate (optional, TLS 1.3) chaining to
//! sentry's current trust bundle is *renewing*: the SPIFFE ID of that certificate must equal the identity it asks
//! for, and no bootstrap credential is needed. A caller without one is *bootstrapping* and must satisfy the
//! validator (a one-time join token, or a JWT). A join token is marked used only once the certificate is signed.
//!
//! Request handling (`Ca::handle`) is separated from transport so the rules can be tested without sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::body::Bytes;
use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use ward_identity::{Authorizer, SpiffeId, SvidResolver, TrustBundle, TrustBundleHandle, TrustDomain, X509Svid};

use crate::material::{self, CaFiles, CaMaterial, MaterialError};
use crate::proto::ca_server::{Ca as CaService, CaServer};
use crate::proto::sign_certificate_request::TokenValidator as WireValidator;
use crate::proto::{SignCertificateRequest, SignCertificateResponse};
use crate::signer::{self, CheckedCsr};
use crate::validator::{Approval, Validator, ValidatorKind};

/// The app-id of sentry's own identity, as Dapr's.
pub const SENTRY_APP_ID: &str = "dapr-sentry";
/// How often credential files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// Sentry warns when a root expires within this window.
const ROOT_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct SentryConfig {
    pub issuer_dir: PathBuf,
    pub trust_domain: TrustDomain,
    /// Sentry's own namespace (env `NAMESPACE`, default `default`), part of its SPIFFE ID.
    pub namespace: String,
    pub listen: SocketAddr,
    pub healthz_listen: SocketAddr,
    pub workload_ttl: Duration,
    pub allowed_clock_skew: Duration,
    /// Lifetime of generated CA material when the directory is empty.
    pub generated_ca_ttl: Duration,
    pub production: bool,
    /// Limits of the listeners (gRPC, healthz, metrics).
    pub limits: ward_net::ListenerLimits,
    /// `/metrics` (`--metrics-port`, `--metrics-listen-address`); `None`: not served.
    pub metrics: Option<ward_net::MetricsListen>,
}

#[derive(Debug, thiserror::Error)]
pub enum SentryError {
    #[error(transparent)]
    Material(#[from] MaterialError),
    #[error("{dir}: CA material is incomplete (need ca.crt, issuer.crt and issuer.key, or an empty directory)")]
    IncompleteMaterial { dir: PathBuf },
    #[error(
        "the insecure token validator signs any identity and is refused in production mode; use join-token or jwks"
    )]
    InsecureInProduction,
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("building sentry's own certificate: {0}")]
    OwnSvid(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{dir}: the roots in ca.crt do not form a trust bundle: {source}")]
    Bundle {
        dir: PathBuf,
        #[source]
        source: ward_identity::BundleError,
    },
    #[error("listener limits: {0}")]
    Limits(#[from] ward_net::LimitsError),
}

/// Signing state that is swapped as a whole when credentials are reloaded.
struct Signing {
    material: CaMaterial,
    roots_pem: Vec<Vec<u8>>,
    /// The roots as a bundle, to verify the certificate a renewing caller presents.
    bundle: TrustBundle,
}

impl Signing {
    fn new(material: CaMaterial, trust_domain: &TrustDomain, dir: &std::path::Path) -> Result<Self, SentryError> {
        let roots_pem =
            material.roots.iter().map(|der| ward_identity::pem_encode("CERTIFICATE", der).into_bytes()).collect();
        let bundle = TrustBundle::new(trust_domain.clone(), material.roots.clone())
            .map_err(|source| SentryError::Bundle { dir: dir.to_owned(), source })?;
        Ok(Self { material, roots_pem, bundle })
    }
}

/// The CA: validates requests and signs.
pub struct Ca {
    config: SentryConfig,
    validator: Validator,
    signing: ArcSwap<Signing>,
    own_id: SpiffeId,
    metrics: crate::metrics::SentryMetrics,
    /// `--audit-log`: every certificate decision, hash-chained; `None`: decisions are only logged.
    audit: Option<crate::audit::SentryAudit>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("own_id", &self.own_id).field("validator", &self.validator.kind()).finish()
    }
}

impl Ca {
    /// Loads (or, for an empty directory, generates) the CA material and prepares to sign.
    pub fn new(config: SentryConfig, validator: Validator) -> Result<Self, SentryError> {
        if config.production && validator.kind() == ValidatorKind::Insecure {
            return Err(SentryError::InsecureInProduction);
        }
        let files = CaFiles::in_dir(&config.issuer_dir);
        if !files.complete() {
            if files.any_exist() {
                return Err(SentryError::IncompleteMaterial { dir: config.issuer_dir.clone() });
            }
            let generated = material::generate(&config.trust_domain, config.generated_ca_ttl)?;
            material::write(&config.issuer_dir, &generated, false)?;
            tracing::info!(dir = %config.issuer_dir.display(), "generated new root and issuer credentials");
        }
        let loaded = CaMaterial::load(&files)?;
        let own_id = SpiffeId::dapr(&config.trust_domain, &config.namespace, SENTRY_APP_ID)
            .map_err(|err| SentryError::OwnSvid(err.to_string()))?;
        let signing = Signing::new(loaded, &config.trust_domain, &config.issuer_dir)?;
        let metrics = crate::metrics::SentryMetrics::default();
        metrics.set_issuer_expiry(signing.material.issuer_not_after);
        Ok(Self { config, validator, signing: ArcSwap::from_pointee(signing), own_id, metrics, audit: None })
    }

    pub fn own_id(&self) -> &SpiffeId {
        &self.own_id
    }

    /// The current trust bundle as PEM.
    pub fn roots_pem(&self) -> String {
        self.signing.load().material.roots_pem()
    }

    /// True while the issuer can sign.
    pub fn healthy(&self) -> bool {
        SystemTime::now() < self.signing.load().material.issuer_not_after
    }

    /// The current roots as a trust bundle.
    pub fn bundle(&self) -> TrustBundle {
        self.signing.load().bundle.clone()
    }

    /// Reloads credentials from disk; on error the old ones stay in use.
    pub fn reload(&self) -> Result<(), SentryError> {
        let loaded = CaMaterial::load(&CaFiles::in_dir(&self.config.issuer_dir))?;
        let signing = Signing::new(loaded, &self.config.trust_domain, &self.config.issuer_dir)?;
        self.metrics.set_issuer_expiry(signing.material.issuer_not_after);
        self.signing.store(Arc::new(signing));
        Ok(())
    }

    /// Issues sentry's own serving certificate from the current issuer.
    pub fn own_svid(&self) -> Result<X509Svid, SentryError> {
        let key = KeyPair::generate().map_err(|err| SentryError::OwnSvid(err.to_string()))?;
        let csr = CheckedCsr::from_key_pair(&key).map_err(|err| SentryError::OwnSvid(err.to_string()))?;
        let signing = self.signing.load();
        let issued = signer::sign(
            &signing.material,
            &csr,
            &self.own_id,
            &[],
            SystemTime::now(),
            self.config.workload_ttl,
            self.config.allowed_clock_skew,
        )
        .map_err(|err| SentryError::OwnSvid(err.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| SentryError::OwnSvid(err.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
            .map_err(|err| SentryError::OwnSvid(err.to_string()))?;
        X509Svid::from_der(chain, key).map_err(|err| SentryError::OwnSvid(err.to_string()))
    }

    /// Records every certificate decision in `audit` (fail closed: an issuance that cannot be recorded is withheld).
    pub fn with_audit(mut self, audit: crate::audit::SentryAudit) -> Self {
        self.audit = Some(audit);
        self
    }

    fn audit_refusal(&self, identity: &str, rule: &str, reason: &str) {
        if let Some(audit) = &self.audit
            && let Err(err) = audit.record(identity, false, rule, reason)
        {
            // The request is refused either way; the missing line is what an operator must learn about.
            tracing::error!(error = %err, "could not record a refused certificate request in the audit log");
        }
    }

    fn validator_name(&self) -> &'static str {
        match self.validator.kind() {
            ValidatorKind::Insecure => "insecure",
            ValidatorKind::JoinToken => "join-token",
            ValidatorKind::Jwks => "jwks",
            ValidatorKind::Kubernetes => "kubernetes",
        }
    }

    /// Handles one SignCertificate request: validator selection, identity checks, credential, CSR, signing.
    ///
    /// `peer` is the certificate chain the caller presented on the TLS connection (leaf first), if any. It is
    /// verified again here against the current roots at the current time (a long-lived connection must not
    /// outlive the certificate that opened it); when present it replaces the bootstrap credential.
    pub fn handle(
        &self,
        request: &SignCertificateRequest,
        peer: Option<&[CertificateDer<'static>]>,
    ) -> Result<SignCertificateResponse, Status> {
        self.check_request(request)?;
        self.sign_checked(request, peer, None)
    }

    /// The checks every request passes before any credential is looked at: a validator this sentry runs, and
    /// names that are one Dapr segment each.
    fn check_request(&self, request: &SignCertificateRequest) -> Result<(), Status> {
        let requested = WireValidator::try_from(request.token_validator).unwrap_or(WireValidator::Unknown);
        let compatible = match requested {
            WireValidator::Unknown => true,
            WireValidator::Insecure => self.validator.kind() == ValidatorKind::Insecure,
            WireValidator::Jwks => self.validator.kind() == ValidatorKind::Jwks,
            WireValidator::Kubernetes => self.validator.kind() == ValidatorKind::Kubernetes,
        };
        if !compatible {
            return Err(Status::invalid_argument("the requested validator is not enabled"));
        }
        // Each name must be one Dapr name segment before anything formats or looks it up: the message names the
        // request field and never echoes the (caller-sized) value.
        ward_identity::validate_app_id(&request.id)
            .map_err(|err| Status::invalid_argument(format!("invalid {}: {err}", err.field())))?;
        ward_identity::validate_namespace(&request.namespace)
            .map_err(|err| Status::invalid_argument(format!("invalid {}: {err}", err.field())))?;
        if request.id == SENTRY_APP_ID {
            // Nobody but sentry itself may hold sentry's identity: clients pin it to trust this CA.
            return Err(Status::permission_denied("the dapr-sentry identity cannot be requested"));
        }
        Ok(())
    }

    /// Handles one request under a [`NetworkValidator`] (the Kubernetes one): the credential is judged
    /// asynchronously (the API server is asked), then the CPU part runs on the blocking pool. Every request
    /// carries its token: a pod's identity is re-checked against the cluster on each renewal (a deleted pod
    /// renews nothing), so a presented client certificate is not a credential here.
    pub async fn handle_networked(
        self: Arc<Self>,
        request: SignCertificateRequest,
    ) -> Result<SignCertificateResponse, Status> {
        self.check_request(&request)?;
        let Validator::Kubernetes(validator) = &self.validator else {
            return Err(Status::internal("no network validator"));
        };
        let grant = validator
            .validate(crate::validator::BootstrapRequest {
                namespace: &request.namespace,
                app_id: &request.id,
                token: request.token.trim(),
            })
            .await
            .map_err(|err| {
                tracing::warn!(
                    app_id = %request.id, namespace = %request.namespace, reason = %err,
                    "refused certificate request"
                );
                self.audit_refusal(&format!("{}/{}", request.namespace, request.id), "kubernetes", &err.to_string());
                Status::permission_denied(err.to_string())
            })?;
        let ca = self.clone();
        tokio::task::spawn_blocking(move || ca.sign_checked(&request, None, Some(grant)))
            .await
            .map_err(|_| Status::internal("failed to sign certificate"))?
    }

    fn sign_checked(
        &self,
        request: &SignCertificateRequest,
        peer: Option<&[CertificateDer<'static>]>,
        grant: Option<crate::validator::Grant>,
    ) -> Result<SignCertificateResponse, Status> {
        let app_id = request.id.as_str();
        let trust_domain = grant.as_ref().map_or(&self.config.trust_domain, |grant| &grant.trust_domain);
        if !request.trust_domain.is_empty() && request.trust_domain != trust_domain.as_str() {
            return Err(Status::invalid_argument(if grant.is_some() {
                format!(
                    "trust domain {} is not the one this caller is entitled to ({:?})",
                    quote_truncated(&request.trust_domain),
                    trust_domain.as_str()
                )
            } else {
                format!(
                    "trust domain {} is not served by this sentry (it signs only for {:?})",
                    quote_truncated(&request.trust_domain),
                    trust_domain.as_str()
                )
            }));
        }
        let id = SpiffeId::dapr(trust_domain, &request.namespace, app_id)
            .map_err(|err| Status::invalid_argument(format!("invalid identity: {err}")))?;
        let dns_names = grant.as_ref().map(|grant| grant.dns_names.as_slice()).unwrap_or_default();
        let signing = self.signing.load();
        let renewal = grant.is_none() && peer.is_some_and(|chain| !chain.is_empty());
        let rule = if renewal { "renewal" } else { self.validator_name() };
        let approval = match peer.filter(|chain| !chain.is_empty()) {
            _ if grant.is_some() => Approval::Granted,
            Some(chain) => {
                if let Err(status) = self.authenticate_renewal(&signing.bundle, chain, &id) {
                    self.audit_refusal(id.as_str(), rule, status.message());
                    return Err(status);
                }
                Approval::Granted
            }
            None => match self.validator.validate(&id, &request.namespace, app_id, &request.token) {
                Ok(approval) => approval,
                Err(err) => {
                    tracing::warn!(%id, reason = %err, "refused certificate request");
                    self.audit_refusal(id.as_str(), self.validator_name(), &err.to_string());
                    return Err(Status::permission_denied(err.to_string()));
                }
            },
        };
        let csr = signer::check_csr(&request.certificate_signing_request)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let issued = signer::sign(
            &signing.material,
            &csr,
            &id,
            dns_names,
            SystemTime::now(),
            self.config.workload_ttl,
            self.config.allowed_clock_skew,
        )
        .map_err(|err| {
            tracing::error!(%id, error = %err, "signing failed");
            Status::internal("failed to sign certificate")
        })?;
        // The certificate exists only in memory until now: it leaves only once the audit log holds it.
        if let Some(audit) = &self.audit {
            let what = format!("valid until {}", humantime_rfc3339(issued.not_after));
            if let Err(err) = audit.record(id.as_str(), true, rule, &what) {
                tracing::error!(%id, error = %err, "recording the certificate in the audit log failed; certificate withheld");
                return Err(Status::internal("failed to record the certificate in the audit log"));
            }
        }
        // Spend the credential before the certificate leaves, and hand nothing out if that cannot be recorded (the
        // token would otherwise stay usable).
        if let Err(err) = approval.commit() {
            self.audit_refusal(id.as_str(), rule, "recording the join token as used failed; certificate withheld");
            tracing::error!(%id, error = %err, "recording the join token as used failed; certificate withheld");
            return Err(Status::internal(crate::validator::CredentialError::LedgerWrite.to_string()));
        }
        tracing::info!(%id, valid_until = %humantime_rfc3339(issued.not_after), "issued certificate");
        Ok(SignCertificateResponse {
            workload_certificate: issued.chain_pem.into_bytes(),
            trust_chain_certificates: signing.roots_pem.clone(),
            valid_until: Some(prost_types::Timestamp::from(issued.not_after)),
            jwt: None,
        })
    }

    /// A renewal: the presented chain must verify against the current roots now (no skew: an expired
    /// certificate renews nothing) and name exactly the requested identity.
    fn authenticate_renewal(
        &self,
        bundle: &TrustBundle,
        chain: &[CertificateDer<'static>],
        requested: &SpiffeId,
    ) -> Result<(), Status> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(Status::unauthenticated("no client certificate"));
        };
        let now = rustls_pki_types::UnixTime::now();
        let presented = ward_identity::verify_svid(
            bundle,
            leaf,
            intermediates,
            now,
            Duration::ZERO,
            ward_identity::Usage::Client,
        )
        .map_err(|err| {
            tracing::warn!(%requested, reason = %err, "refused renewal: the client certificate does not verify");
            Status::unauthenticated(format!("the client certificate is not valid: {err}"))
        })?;
        if &presented != requested {
            tracing::warn!(%requested, %presented, "refused renewal for another identity");
            return Err(Status::permission_denied(format!(
                "the client certificate is for {presented}, which cannot renew {requested}"
            )));
        }
        Ok(())
    }

    /// Fingerprint of the credential files, to notice changes.
    fn credentials_fingerprint(&self) -> Option<[u8; 32]> {
        let files = CaFiles::in_dir(&self.config.issuer_dir);
        let mut hasher = Sha256::new();
        for path in [&files.root_cert, &files.issuer_cert, &files.issuer_key] {
            hasher.update(std::fs::read(path).ok()?);
            hasher.update([0u8]);
        }
        Some(hasher.finalize().into())
    }

    fn warn_if_root_expires_soon(&self) {
        let signing = self.signing.load();
        for der in &signing.material.roots {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { continue };
            let not_after = material::not_after(&cert);
            if let Ok(left) = not_after.duration_since(SystemTime::now())
                && left < ROOT_EXPIRY_WARNING
            {
                tracing::warn!(
                    days = left.as_secs() / 86400,
                    "root certificate expiration warning: certificate expires in {} days; run `ward mtls renew-certificate`",
                    left.as_secs() / 86400
                );
            }
        }
    }
}

/// A caller-supplied value quoted for an error message, cut to 100 characters so a request cannot make sentry
/// echo megabytes back (or into its log).
fn quote_truncated(value: &str) -> String {
    const MAX: usize = 100;
    match value.char_indices().nth(MAX) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
    }
}

pub(crate) fn humantime_rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".to_owned())
}

struct GrpcCa(Arc<Ca>);

#[tonic::async_trait]
impl CaService for GrpcCa {
    async fn sign_certificate(
        &self,
        request: Request<SignCertificateRequest>,
    ) -> Result<Response<SignCertificateResponse>, Status> {
        let ca = self.0.clone();
        let peer = peer_certificates(&request);
        let request = request.into_inner();
        let counted = ca.clone();
        let result = if ca.validator.kind() == ValidatorKind::Kubernetes {
            ca.handle_networked(request).await
        } else {
            // Key generation and signing are CPU work; keep them off the reactor threads.
            tokio::task::spawn_blocking(move || ca.handle(&request, peer.as_deref().map(Vec::as_slice)))
                .await
                .map_err(|_| Status::internal("failed to sign certificate"))
                .and_then(|r| r)
        };
        counted.metrics.signed(result.as_ref().map(|_| ()).map_err(Status::code));
        result.map(Response::new)
    }
}

/// The client certificate chain of the connection a request arrived on (empty if none), as the TLS layer verified
/// it. Put into request extensions by the accept path only; nothing a caller sends can set it.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

fn peer_certificates<T>(request: &Request<T>) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    request.extensions().get::<PeerCertificates>().map(|PeerCertificates(chain)| chain.clone())
}

/// Client certificates are requested but optional: a bootstrapping caller has none. One that is presented must
/// verify (chain to sentry's roots, one SPIFFE URI SAN in sentry's trust domain, clientAuth) or the handshake
/// fails; which identity it may renew is decided per request in `Ca::handle`.
#[derive(Debug)]
struct OptionalSvid(ward_identity::SpiffeClientVerifier);

impl rustls::server::danger::ClientCertVerifier for OptionalSvid {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Sentry's TLS 1.3 server configuration: its own SVID, optional client SVIDs verified against `bundle`.
fn server_tls(
    resolver: Arc<SvidResolver>,
    bundle: TrustBundleHandle,
    trust_domain: &TrustDomain,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let verifier = ward_identity::SpiffeClientVerifier::new(
        bundle,
        Authorizer::MemberOf(trust_domain.clone()),
        ward_identity::DEFAULT_CLOCK_SKEW,
    );
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(OptionalSvid(verifier)))
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A connection to sentry lives no longer than sentry's own serving certificate as it was when the connection was
/// accepted, nor than the client's certificate if it presented one (issue 24, defect 4): at the earlier `not_after`
/// it is drained (GOAWAY, calls in flight finish) and the client handshakes again.
struct CertificateAge(Arc<SvidResolver>);

impl ward_net::MaxConnectionAge for CertificateAge {
    fn at_accept(&self) -> Option<SystemTime> {
        self.0.current().map(|svid| svid.not_after())
    }

    fn after_handshake(&self, info: &ward_net::ConnectionInfo) -> Option<SystemTime> {
        ward_identity::peer_not_after(info.peer_certificates.as_deref())
    }
}

/// Addresses a running sentry actually bound (useful when ports were 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub healthz: SocketAddr,
    /// Where `/metrics` is served, when it is.
    pub metrics: Option<SocketAddr>,
}

/// Runs sentry until `shutdown` resolves. `on_ready` receives the bound addresses once both ports listen.
///
/// Both listeners are served through `ward-net` with `config.limits` (TLS handshake and first request within
/// their timeouts, idle connections closed, a connection cap). On shutdown they stop accepting and in-flight
/// requests get up to 5 s to finish.
pub async fn run(
    ca: Arc<Ca>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(BoundAddrs) + Send,
) -> Result<(), SentryError> {
    if ca.validator.kind() == ValidatorKind::Insecure {
        tracing::warn!(
            "INSECURE token validator: this sentry signs ANY identity for ANY caller. Use it only for local \
             development; use --token-validator join-token or jwks (and --production) elsewhere."
        );
    }
    let resolver = Arc::new(SvidResolver::with_svid(ca.own_svid()?));
    let bundle = TrustBundleHandle::new(ca.bundle());
    let tls = Arc::new(server_tls(resolver.clone(), bundle.clone(), &ca.config.trust_domain)?);
    let listener = TcpListener::bind(ca.config.listen)
        .await
        .map_err(|source| SentryError::Bind { addr: ca.config.listen, source })?;
    let healthz = TcpListener::bind(ca.config.healthz_listen)
        .await
        .map_err(|source| SentryError::Bind { addr: ca.config.healthz_listen, source })?;
    let metrics = match ca.config.metrics {
        None => None,
        Some(listen) => listen.bind().await.map_err(|source| SentryError::Bind { addr: listen.address, source })?,
    };
    let addrs = BoundAddrs {
        grpc: listener.local_addr().map_err(|source| SentryError::Bind { addr: ca.config.listen, source })?,
        healthz: healthz.local_addr().map_err(|source| SentryError::Bind { addr: ca.config.healthz_listen, source })?,
        metrics: metrics.as_ref().and_then(|l| l.local_addr().ok()),
    };
    let limits = ca.config.limits;
    let grpc_server = ward_net::Server::new(listener, limits)?
        .with_tls(tokio_rustls::TlsAcceptor::from(tls))
        .with_max_age(Arc::new(CertificateAge(resolver.clone())))
        .with_name("sentry-grpc");
    let health_server = ward_net::Server::new(healthz, limits)?.with_name("sentry-healthz");
    let metrics_server = match metrics {
        Some(listener) => Some(ward_net::Server::new(listener, limits)?.with_name("sentry-metrics")),
        None => None,
    };
    tracing::info!(grpc = %addrs.grpc, healthz = %addrs.healthz, id = %ca.own_id, ?limits, "sentry listening");

    let maintenance_task = tokio::spawn(maintain(ca.clone(), resolver, bundle));
    // One shutdown signal, two listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let routes = tonic::service::Routes::new(CaServer::new(GrpcCa(ca.clone())));
    let grpc = grpc_server.serve(
        move |info: &ward_net::ConnectionInfo| {
            // The verified client chain of this connection goes into every request on it; nothing a caller
            // sends can put it there.
            let peer = PeerCertificates(Arc::new(info.peer_certificates.clone().unwrap_or_default()));
            let service = tower::ServiceBuilder::new()
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    request
                })
                .service(routes.clone());
            ward_net::TowerToHyperService::new(service)
        },
        stopped(stop_rx.clone()),
    );
    let health_ca = ca.clone();
    let health = health_server
        .serve(move |_: &ward_net::ConnectionInfo| healthz_service(health_ca.clone(), false), stopped(stop_rx.clone()));
    let metrics_ca = ca.clone();
    let metrics = async move {
        match metrics_server {
            Some(server) => Some(
                server
                    .serve(
                        move |_: &ward_net::ConnectionInfo| healthz_service(metrics_ca.clone(), true),
                        stopped(stop_rx),
                    )
                    .await,
            ),
            None => None,
        }
    };
    on_ready(addrs);
    let serving = async { tokio::join!(grpc, health, metrics) };
    let mut serving = std::pin::pin!(serving);
    let (grpc_drain, health_drain, metrics_drain) = tokio::select! {
        drains = &mut serving => drains,
        () = shutdown => {
            let _ = stop_tx.send(true);
            serving.await
        }
    };
    let metrics_drain = async move {
        if let Some(drain) = metrics_drain {
            drain.drain(DRAIN_TIMEOUT).await;
        }
    };
    tokio::join!(grpc_drain.drain(DRAIN_TIMEOUT), health_drain.drain(DRAIN_TIMEOUT), metrics_drain);
    maintenance_task.abort();
    Ok(())
}

/// How long in-flight requests may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Reloads changed credentials, renews sentry's own certificate, and warns about expiring roots.
async fn maintain(ca: Arc<Ca>, resolver: Arc<SvidResolver>, bundle: TrustBundleHandle) {
    let mut fingerprint = ca.credentials_fingerprint();
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(RELOAD_POLL).await;
        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(24 * 3600)) {
            ca.warn_if_root_expires_soon();
            last_warning = Some(tokio::time::Instant::now());
        }
        let current = ca.credentials_fingerprint();
        let mut renew_own = resolver.current().is_none_or(|svid| SystemTime::now() >= svid.renewal_time());
        if current.is_some() && current != fingerprint {
            match ca.reload() {
                Ok(()) => {
                    tracing::info!("issuer credentials changed; reloaded");
                    bundle.store(ca.bundle());
                    fingerprint = current;
                    renew_own = true;
                }
                // Files are often written one after another; a half-written set fails to load and is retried
                // at the next poll, while the old credentials keep serving.
                Err(err) => {
                    tracing::error!(error = %err, "issuer credentials changed but do not load; keeping the old ones")
                }
            }
        }
        if renew_own {
            match ca.own_svid() {
                Ok(svid) => resolver.replace(svid),
                Err(err) => tracing::error!(error = %err, "renewing sentry's own certificate failed"),
            }
        }
    }
}

/// `GET /healthz`: 200 while the issuer can sign, 503 after; on the metrics listener (`serve_metrics`) also
/// `GET /metrics`, the Prometheus exposition; anything else 404.
fn healthz_service(
    ca: Arc<Ca>,
    serve_metrics: bool,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<hyper::Response<Full<Bytes>>, Infallible>> + Send + 'static,
> + Send
+ 'static {
    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let healthy = ca.healthy();
        let ca = ca.clone();
        async move {
            if serve_metrics && req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
                let mut response = hyper::Response::new(Full::new(Bytes::from(ca.metrics.render())));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                return Ok::<_, Infallible>(response);
            }
            let status = match (req.method(), req.uri().path()) {
                (&hyper::Method::GET, "/healthz") if healthy => hyper::StatusCode::OK,
                (&hyper::Method::GET, "/healthz") => hyper::StatusCode::SERVICE_UNAVAILABLE,
                _ => hyper::StatusCode::NOT_FOUND,
            };
            let mut response = hyper::Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validator::JoinTokens;

    fn ca(dir: &std::path::Path, validator: Validator) -> Ca {
        Ca::new(
            SentryConfig {
                issuer_dir: dir.to_owned(),
                trust_domain: TrustDomain::new("public").unwrap(),
                namespace: "default".into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                healthz_listen: "127.0.0.1:0".parse().unwrap(),
                workload_ttl: Duration::from_secs(3600),
                allowed_clock_skew: Duration::from_secs(60),
                generated_ca_ttl: Duration::from_secs(86400),
                production: false,
                limits: ward_net::ListenerLimits::default(),
                metrics: None,
            },
            validator,
        )
        .unwrap()
    }

    #[test]
    fn a_certificate_that_cannot_be_audited_is_withheld_and_its_join_token_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JoinTokens::parse("default/orders 0123456789abcdef-orders\n").unwrap();
        // Every write to /dev/full fails (ENOSPC).
        let full = std::fs::OpenOptions::new().append(true).open("/dev/full").unwrap();
        let ca = ca(&dir.path().join("ca"), Validator::JoinToken(tokens.clone()))
            .with_audit(crate::audit::SentryAudit::on_file(std::path::Path::new("/dev/full"), full));
        let err = ca.handle(&request("orders", "0123456789abcdef-orders"), None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(err.message().contains("audit log"), "{}", err.message());
        assert_eq!(tokens.used_count(), 0, "the token bought nothing, so it is not spent");
    }

    fn request(app_id: &str, token: &str) -> SignCertificateRequest {
        let key = KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        SignCertificateRequest {
            id: app_id.to_owned(),
            token: token.to_owned(),
            namespace: "default".to_owned(),
            certificate_signing_request: csr.into_bytes(),
            ..Default::default()
        }
    }

    fn chain(response: &SignCertificateResponse) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(&response.workload_certificate).collect::<Result<_, _>>().unwrap()
    }

    const TOKEN: &str = "orders-token-0123456789";

    #[test]
    fn a_renewal_authenticates_with_the_current_svid_for_the_same_identity_only() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JoinTokens::parse(&format!("default/orders {TOKEN}\n")).unwrap();
        let ca = ca(&dir.path().join("ca"), Validator::JoinToken(tokens));
        let first = ca.handle(&request("orders", TOKEN), None).unwrap();
        let svid = chain(&first);

        let err = ca.handle(&request("orders", TOKEN), None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "the token is spent: {err:?}");
        assert!(!err.message().contains(TOKEN));

        let renewed = ca.handle(&request("orders", ""), Some(&svid)).expect("renewal without a token");
        assert_ne!(chain(&renewed)[0], svid[0]);

        let err = ca.handle(&request("billing", ""), Some(&svid)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "orders' certificate cannot renew billing: {err:?}");

        // A certificate from another CA (same trust domain name) renews nothing.
        let other = self::ca(&dir.path().join("other"), Validator::Insecure);
        let foreign = chain(&other.handle(&request("orders", ""), None).unwrap());
        let err = ca.handle(&request("orders", ""), Some(&foreign)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    }

    #[test]
    fn a_refused_csr_does_not_spend_the_join_token() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JoinTokens::parse(&format!("default/orders {TOKEN}\n")).unwrap();
        let ca = ca(&dir.path().join("ca"), Validator::JoinToken(tokens.clone()));
        let mut bad = request("orders", TOKEN);
        bad.certificate_signing_request = b"not a csr".to_vec();
        assert_eq!(ca.handle(&bad, None).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(tokens.used_count(), 0);
        ca.handle(&request("orders", TOKEN), None).expect("the token still works once");
        assert_eq!(tokens.used_count(), 1);
    }

    /// Issue 26 defect 1: an app id or namespace that is not one Dapr name segment is refused before any
    /// validator runs, with `InvalidArgument` naming the field, whatever the validator (a namespace-wildcard join
    /// token for `default` must not buy `spiffe://public/ns/default/x/ns/prod/admin`).
    #[test]
    fn identities_that_are_not_one_dapr_segment_are_refused_for_every_validator() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = crate::validator::JwksValidator::from_json(
            r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","use":"sig","alg":"ES256","kid":"k"}]}"#,
            crate::validator::JwtRules::new("https://issuer.example", "public").unwrap(),
        )
        .unwrap();
        let validators = [
            ("insecure", Validator::Insecure),
            ("join-token", Validator::JoinToken(JoinTokens::parse(&format!("default/* {TOKEN}\n")).unwrap())),
            ("jwks", Validator::Jwks(jwks)),
        ];
        let bad: &[(&str, &str, &str)] = &[
            ("x/ns/prod/admin", "default", "app_id"),
            ("allowed-app", "a/b", "namespace"),
            ("..", "default", "app_id"),
            ("orders", "..", "namespace"),
            ("orders", ".", "namespace"),
            ("a%2Fb", "default", "app_id"),
            ("orders", "a%2Fb", "namespace"),
            ("", "default", "app_id"),
            ("orders", "", "namespace"),
            ("a.b", "default", "app_id"),
            ("orders", &"n".repeat(65), "namespace"),
            ("o\u{e9}", "default", "app_id"),
            ("orders", "sp ace", "namespace"),
        ];
        for (name, validator) in validators {
            let ca = ca(&dir.path().join(name), validator);
            for (app_id, namespace, field) in bad {
                let mut req = request(app_id, TOKEN);
                req.namespace = (*namespace).to_owned();
                let err = ca.handle(&req, None).unwrap_err();
                assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {app_id:?} in {namespace:?}: {err:?}");
                assert!(
                    err.message().starts_with(&format!("invalid {field}")),
                    "{name}: {app_id:?} in {namespace:?}: {:?}",
                    err.message()
                );
            }
        }
    }
}
