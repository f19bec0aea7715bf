//! X.509 SVIDs (a certificate chain whose leaf carries one SPIFFE ID, plus its private key) and the resolver that
//! hands the current SVID to rustls. The resolver swaps atomically: a renewal applies to the next handshake
//! while connections already open keep their session, so nothing is dropped.
//!
//! Invariant 7: a resolver whose SVID has expired offers no certificate at all, so the process serves no mTLS
//! traffic until it has a fresh one (fail closed rather than present an expired identity).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::spiffe::{SpiffeId, SpiffeIdError};

#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    #[error("certificate chain is not valid PEM")]
    CertPem(#[source] rustls_pki_types::pem::Error),
    #[error("private key is not valid PEM")]
    KeyPem(#[source] rustls_pki_types::pem::Error),
    #[error("certificate chain is empty")]
    EmptyChain,
    #[error("leaf certificate does not parse: {0}")]
    BadLeaf(String),
    #[error("leaf certificate must carry exactly one URI SAN, found {count}")]
    UriSanCount { count: usize },
    #[error("leaf URI SAN is not a valid SPIFFE ID")]
    BadSpiffeId(#[source] SpiffeIdError),
    #[error("private key type is not supported")]
    UnsupportedKey(#[source] rustls::Error),
    #[error("private key does not match the leaf certificate")]
    KeyMismatch(#[source] rustls::Error),
}

/// Parses every `CERTIFICATE` block of a PEM text.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, SvidError> {
    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(SvidError::CertPem)
}

/// A workload's certificate chain (leaf first) and private key.
#[derive(Debug)]
pub struct X509Svid {
    spiffe_id: SpiffeId,
    certified_key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl X509Svid {
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, SvidError> {
        let chain = parse_certificates(chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(SvidError::KeyPem)?;
        Self::from_der(chain, key)
    }

    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or(SvidError::EmptyChain)?;
        let (spiffe_id, not_before, not_after) = leaf_facts(leaf)?;
        let provider = rustls::crypto::ring::default_provider();
        let certified_key = CertifiedKey::from_der(chain, key, &provider).map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => SvidError::KeyMismatch(err),
            other => SvidError::UnsupportedKey(other),
        })?;
        Ok(Self { spiffe_id, certified_key: Arc::new(certified_key), not_before, not_after })
    }

    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn certified_key(&self) -> &CertifiedKey {
        &self.certified_key
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified_key.cert
    }

    /// When a renewal is due: half way through the certificate's life, as Dapr does.
    pub fn renewal_time(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or(Duration::ZERO);
        self.not_before + lifetime / 2
    }

    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// A certificate's `not_after`, or `None` if it does not parse (for callers that cache a verified chain until it
/// expires).
pub fn certificate_not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let secs = parsed.validity().not_after.timestamp();
    (secs >= 0).then(|| UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()))
}

/// Reads the SPIFFE ID and validity window out of a leaf certificate.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(SpiffeId, SystemTime, SystemTime), SvidError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|err| SvidError::BadLeaf(err.to_string()))?;
    let uris = crate::verifier::uri_sans(&cert).map_err(SvidError::BadLeaf)?;
    if uris.len() != 1 {
        return Err(SvidError::UriSanCount { count: uris.len() });
    }
    let spiffe_id = SpiffeId::parse(uris[0]).map_err(SvidError::BadSpiffeId)?;
    let to_system = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 { UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()) } else { UNIX_EPOCH }
    };
    Ok((spiffe_id, to_system(cert.validity().not_before), to_system(cert.validity().not_after)))
}

/// Holds the current SVID and serves it to rustls as both client and server certificate.
#[derive(Debug, Default)]
pub struct SvidResolver {
    current: ArcSwapOption<X509Svid>,
}

impl SvidResolver {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_svid(svid: X509Svid) -> Self {
        let resolver = Self::new();
        resolver.replace(svid);
        resolver
    }

    /// Installs a new SVID for the next handshake.
    pub fn replace(&self, svid: X509Svid) {
        self.current.store(Some(Arc::new(svid)));
    }

    pub fn current(&self) -> Option<Arc<X509Svid>> {
        self.current.load_full()
    }

    /// The key to present now, or none if there is no SVID or it has expired.
    fn usable_key(&self) -> Option<Arc<CertifiedKey>> {
        let svid = self.current.load_full()?;
        if svid.is_expired_at(SystemTime::now()) {
            return None;
        }
        Some(svid.certified_key.clone())
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.usable_key()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.usable_key()
    }

    fn has_certs(&self) -> bool {
        self.usable_key().is_some()
    }
}
