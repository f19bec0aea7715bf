//! The sentry client a sidecar uses: generates a fresh key per request, sends a CSR, verifies that it is really
//! talking to `spiffe://<td>/ns/<control-plane-namespace>/dapr-sentry`, and keeps the SVID fresh — renewing at
//! half its lifetime and, on failure, retrying with backoff while the current SVID is still valid. The SVID is
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

impl SentryClient {
    /// Prepares the client; nothing is sent until the first request. The current content of `config.bundle`
    /// becomes the pinned set of trust anchors.
    pub fn new(config: SentryClientConfig) -> Result<Self, ClientError> {
        let svid = Arc::new(SvidResolver::new());
        let mut tls = ward_identity::client_config(
            svid.clone(),
            config.bundle.clone(),
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

    async fn request(&self, token: String) -> Result<(X509Svid, Option<TrustBundle>), ClientError> {
        let key = KeyPair::generate()?;
        let csr = CertificateParams::default().serialize_request(&key)?.pem()?;
        let looks_like_jwt = looks_like_jwt(&token);
        let request = SignCertificateRequest {
            id: self.config.app_id.clone(),
            token,
            trust_domain: String::new(),
            namespace: self.config.namespace.clone(),
            certificate_signing_request: csr.into_bytes(),
            token_validator: if looks_like_jwt { WireValidator::Jwks as i32 } else { WireValidator::Unknown as i32 },
            jwt_audiences: Vec::new(),
        };
        let response = CaClient::new(self.channel()).sign_certificate(request).await?.into_inner();
        let chain = CertificateDer::pem_slice_iter(&response.workload_certificate)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| ClientError::BadResponse(format!("workload certificate: {err}")))?;
        let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
            .map_err(|err| ClientError::BadResponse(err.to_string()))?;
        let svid = X509Svid::from_der(chain, key_der).map_err(|err| ClientError::BadResponse(err.to_string()))?;
        let expected = SpiffeId::dapr(&self.config.trust_domain, &self.config.namespace, &self.config.app_id)
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
        let bundle = offered.and_then(|offered| match check_pinned(&self.pinned, &offered) {
            Ok(()) => Some(offered),
            Err(err) => {
                tracing::error!(sentry = %self.config.address, reason = %err, "refused the trust bundle sentry returned; keeping the configured trust anchors");
                None
            }
        });
        let in_effect = bundle.clone().map(Arc::new).unwrap_or_else(|| self.config.bundle.load());
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
        let task = tokio::spawn(renew_forever(self, resolver.clone()));
        Ok(SvidSupervisor { resolver, task })
    }
}

/// Owns the renewal task; dropping it stops renewals.
#[derive(Debug)]
pub struct SvidSupervisor {
    resolver: Arc<SvidResolver>,
    task: tokio::task::JoinHandle<()>,
}

impl SvidSupervisor {
    pub fn resolver(&self) -> Arc<SvidResolver> {
        self.resolver.clone()
    }
}

impl Drop for SvidSupervisor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A JWT has exactly three dot-separated parts; join tokens (whitespace-free, at least 16 characters) are
/// expected not to.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

async fn renew_forever(client: SentryClient, resolver: Arc<SvidResolver>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let due = resolver.current().map(|svid| svid.renewal_time()).unwrap_or_else(SystemTime::now);
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        match client.fetch().await {
            Ok((svid, bundle)) => {
                tracing::info!(id = %svid.spiffe_id(), valid_until = %crate::server::humantime_rfc3339(svid.not_after()), "renewed workload certificate");
                resolver.replace(svid);
                if let Some(bundle) = bundle {
                    client.config.bundle.store(bundle);
                }
                backoff = Duration::from_millis(250);
            }
            Err(err) => {
                let still_valid = resolver.current().is_some_and(|svid| !svid.is_expired_at(SystemTime::now()));
                if still_valid {
                    tracing::warn!(error = %err, retry_in = ?backoff, "certificate renewal failed; the current certificate is still valid");
                } else {
                    tracing::error!(error = %err, retry_in = ?backoff, "certificate renewal failed and the certificate has expired: no mTLS traffic until renewal succeeds");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
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
