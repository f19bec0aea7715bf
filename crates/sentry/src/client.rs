//! The sentry client a sidecar uses: generates a fresh key per request, sends a CSR, verifies that it is really
//! talking to `spiffe://<td>/ns/<control-plane-namespace>/dapr-sentry`, and keeps the SVID fresh — renewing at
//! half its lifetime and, on failure, retrying with backoff while the current SVID is still valid. The SVID is
//! published through an `SvidResolver`, so renewals reach rustls without a restart or a dropped connection.
//!
//! It does not decide whom to trust beyond sentry's identity: the trust bundle it starts from comes from the
//! operator (`DAPR_TRUST_ANCHORS`), and bundles sentry returns are adopted only over that verified channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair};
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

/// A connected client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SentryClient {
    config: Arc<SentryClientConfig>,
    channel: Channel,
}

const RPC_TIMEOUT: Duration = Duration::from_secs(5);

impl SentryClient {
    /// Prepares a lazily connecting channel; nothing is sent until the first request. Must be called within a
    /// Tokio runtime (the channel spawns its worker).
    pub fn new(config: SentryClientConfig) -> Result<Self, ClientError> {
        let tls = ward_identity::client_config(
            Arc::new(SvidResolver::new()),
            config.bundle.clone(),
            Authorizer::Exact(config.sentry_id.clone()),
            config.skew,
            &[b"h2"],
        )?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let address = config.address.clone();
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| ClientError::Address(address.clone()))?
            .connect_timeout(RPC_TIMEOUT)
            .timeout(RPC_TIMEOUT);
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri| {
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
        }));
        Ok(Self { config: Arc::new(config), channel })
    }

    /// The raw gRPC client over the verified channel (for tools and tests that craft their own requests).
    pub fn grpc(&self) -> CaClient<Channel> {
        CaClient::new(self.channel.clone())
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

    /// Requests a new SVID (fresh key each time) and returns it with the trust bundle sentry sent.
    pub async fn fetch(&self) -> Result<(X509Svid, Option<TrustBundle>), ClientError> {
        let key = KeyPair::generate()?;
        let csr = CertificateParams::default().serialize_request(&key)?.pem()?;
        let token = self.token()?;
        let looks_like_jwt = token.split('.').count() == 3;
        let request = SignCertificateRequest {
            id: self.config.app_id.clone(),
            token,
            trust_domain: String::new(),
            namespace: self.config.namespace.clone(),
            certificate_signing_request: csr.into_bytes(),
            token_validator: if looks_like_jwt { WireValidator::Jwks as i32 } else { WireValidator::Unknown as i32 },
            jwt_audiences: Vec::new(),
        };
        let response = CaClient::new(self.channel.clone()).sign_certificate(request).await?.into_inner();
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
        let bundle = if roots.is_empty() {
            None
        } else {
            Some(
                TrustBundle::from_pem(self.config.trust_domain.clone(), &roots)
                    .map_err(|err| ClientError::BadResponse(format!("trust bundle: {err}")))?,
            )
        };
        Ok((svid, bundle))
    }

    /// Fetches the first SVID and then keeps it fresh in a background task until the returned handle is dropped.
    pub async fn start(self) -> Result<SvidSupervisor, ClientError> {
        let resolver = Arc::new(SvidResolver::new());
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
