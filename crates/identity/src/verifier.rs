//! The SPIFFE step of certificate verification, as rustls verifiers for both ends of a connection.
//!
//! Chain building, signatures, validity and key usage are webpki's job; this module adds only what SPIFFE needs:
//! the leaf is not a CA, carries exactly one URI SAN, that SAN is a SPIFFE ID of the bundle's trust domain, and an
//! explicit `Authorizer` accepts it. An `Authorizer` that was never configured accepts nobody.
//!
//! Clock skew: a certificate that webpki finds expired (or not yet valid) is checked once more at `now - skew`
//! (or `now + skew`), so peers whose clocks disagree by less than the configured skew still connect.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::bundle::TrustBundleHandle;
use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
use crate::svid::SvidResolver;

/// Why a peer certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("certificate does not parse")]
    Malformed,
    #[error("certificate expired at unix time {not_after} (now {now}, allowed skew {skew_secs}s)")]
    Expired { now: u64, not_after: u64, skew_secs: u64 },
    #[error("certificate is not valid yet (now {now}, allowed skew {skew_secs}s)")]
    NotValidYet { now: u64, skew_secs: u64 },
    #[error("certificate was not issued by a trusted root of trust domain {trust_domain}")]
    UnknownIssuer { trust_domain: String },
    #[error("certificate is not valid for {usage}")]
    WrongUsage { usage: &'static str },
    #[error("a CA certificate cannot be used as a workload certificate")]
    CaAsLeaf,
    #[error("certificate must carry exactly one URI SAN, found {count}")]
    UriSanCount { count: usize },
    #[error("URI SAN {uri:?} is not a SPIFFE ID: {reason}")]
    NotSpiffe { uri: String, reason: SpiffeIdError },
    #[error("SPIFFE ID {id} is not in trust domain {expected}")]
    WrongTrustDomain { id: String, expected: String },
    #[error("SPIFFE ID {id} is not authorized here")]
    NotAuthorized { id: String },
    #[error("certificate path is invalid: {0}")]
    Chain(String),
}

/// Which peer identities a verifier accepts after the chain and SPIFFE checks passed.
#[derive(Clone, Default)]
pub enum Authorizer {
    /// Accepts nobody. The default, so a verifier nobody configured fails closed.
    #[default]
    Nobody,
    /// Exactly this ID (e.g. the callee a sidecar meant to reach, or `dapr-sentry`).
    Exact(SpiffeId),
    /// Any of these IDs.
    OneOf(Vec<SpiffeId>),
    /// Any ID in this trust domain (the internal port: the ACL decides per request afterwards).
    MemberOf(TrustDomain),
    /// A rule of the caller's own.
    Custom(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nobody => f.write_str("Nobody"),
            Self::Exact(id) => write!(f, "Exact({id})"),
            Self::OneOf(ids) => f.debug_tuple("OneOf").field(ids).finish(),
            Self::MemberOf(td) => write!(f, "MemberOf({td})"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Authorizer {
    pub fn authorizes(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Nobody => false,
            Self::Exact(expected) => expected == id,
            Self::OneOf(ids) => ids.contains(id),
            Self::MemberOf(td) => id.is_member_of(td),
            Self::Custom(rule) => rule(id),
        }
    }
}

/// Which end of a TLS connection a certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// The peer is a server (we are the client).
    Server,
    /// The peer is a client (we are the server).
    Client,
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Verifies a peer's chain against `bundle` and returns the SPIFFE ID it proves. Authorization is separate.
pub fn verify_svid(
    bundle: &crate::TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    skew: Duration,
    usage: Usage,
) -> Result<SpiffeId, VerifyError> {
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| VerifyError::Malformed)?;
    let key_usage = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    let algs = algorithms();
    let check = |at: UnixTime| {
        cert.verify_for_usage(algs.all, bundle.anchors(), intermediates, at, key_usage, None, None).map(|_| ())
    };
    let skew_secs = skew.as_secs();
    let shifted = |forward: bool| {
        let secs =
            if forward { now.as_secs().saturating_add(skew_secs) } else { now.as_secs().saturating_sub(skew_secs) };
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    };
    let result = match check(now) {
        Err(webpki::Error::CertExpired { .. }) if skew_secs > 0 => check(shifted(false)),
        Err(webpki::Error::CertNotValidYet { .. }) if skew_secs > 0 => check(shifted(true)),
        other => other,
    };
    result.map_err(|err| match err {
        webpki::Error::CertExpired { not_after, .. } => {
            VerifyError::Expired { now: now.as_secs(), not_after: not_after.as_secs(), skew_secs }
        }
        webpki::Error::CertNotValidYet { .. } => VerifyError::NotValidYet { now: now.as_secs(), skew_secs },
        webpki::Error::UnknownIssuer => VerifyError::UnknownIssuer { trust_domain: bundle.trust_domain().to_string() },
        webpki::Error::CaUsedAsEndEntity => VerifyError::CaAsLeaf,
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            VerifyError::WrongUsage { usage: if usage == Usage::Server { "serverAuth" } else { "clientAuth" } }
        }
        other => VerifyError::Chain(format!("{other:?}")),
    })?;

    // webpki refuses CA leaves already; we check again from the parsed extension because this rule is the whole
    // difference between "a workload" and "something that can mint workloads".
    let (_, parsed) = x509_parser::parse_x509_certificate(end_entity).map_err(|_| VerifyError::Malformed)?;
    if parsed.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca) {
        return Err(VerifyError::CaAsLeaf);
    }
    let uris = uri_sans(&parsed).map_err(|_| VerifyError::Malformed)?;
    let [uri] = uris.as_slice() else {
        return Err(VerifyError::UriSanCount { count: uris.len() });
    };
    let id = SpiffeId::parse(uri).map_err(|reason| VerifyError::NotSpiffe { uri: (*uri).to_owned(), reason })?;
    if !id.is_member_of(bundle.trust_domain()) {
        return Err(VerifyError::WrongTrustDomain { id: id.to_string(), expected: bundle.trust_domain().to_string() });
    }
    Ok(id)
}

/// All URI SANs of a certificate. Several SAN extensions are an error (RFC 5280 allows one).
pub(crate) fn uri_sans<'a>(cert: &'a x509_parser::certificate::X509Certificate<'_>) -> Result<Vec<&'a str>, String> {
    let mut uris = Vec::new();
    let mut san_extensions = 0;
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            san_extensions += 1;
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push(*uri);
                }
            }
        }
    }
    if san_extensions > 1 {
        return Err("more than one subjectAltName extension".to_owned());
    }
    Ok(uris)
}

/// The SPIFFE ID in an already verified peer chain (from `peer_certificates()` after the handshake).
pub fn peer_spiffe_id(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = peer_certificates?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
    match uri_sans(&parsed).ok()?.as_slice() {
        [uri] => SpiffeId::parse(uri).ok(),
        _ => None,
    }
}

/// The `not_after` of the leaf of an already verified peer chain: a connection opened with it must not outlive it.
pub fn peer_not_after(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<std::time::SystemTime> {
    let leaf = peer_certificates?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let secs = u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0);
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

fn to_rustls_error(err: VerifyError) -> rustls::Error {
    let cert_error = match err {
        VerifyError::Expired { .. } => CertificateError::Expired,
        VerifyError::NotValidYet { .. } => CertificateError::NotValidYet,
        VerifyError::UnknownIssuer { .. } => CertificateError::UnknownIssuer,
        VerifyError::Malformed => CertificateError::BadEncoding,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}

#[derive(Debug)]
struct SpiffeVerifierCore {
    bundle: TrustBundleHandle,
    authorizer: Authorizer,
    skew: Duration,
    algorithms: WebPkiSupportedAlgorithms,
    /// The anchors vouch for every trust domain, not only the bundle's own (see
    /// [`SpiffeClientVerifier::for_any_trust_domain`]).
    any_trust_domain: bool,
}

impl SpiffeVerifierCore {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<SpiffeId, rustls::Error> {
        let mut bundle = self.bundle.load();
        if self.any_trust_domain {
            // The same roots, filed under the trust domain the leaf claims: the chain must still verify against
            // exactly these roots, so claiming another trust domain buys nothing.
            let claimed = peer_spiffe_id(Some(std::slice::from_ref(end_entity)))
                .ok_or_else(|| to_rustls_error(VerifyError::UriSanCount { count: 0 }))?;
            bundle = Arc::new(
                crate::TrustBundle::new(claimed.trust_domain(), bundle.roots().to_vec())
                    .map_err(|err| to_rustls_error(VerifyError::Chain(err.to_string())))?,
            );
        }
        let id = verify_svid(&bundle, end_entity, intermediates, now, self.skew, usage).map_err(to_rustls_error)?;
        if !self.authorizer.authorizes(&id) {
            return Err(to_rustls_error(VerifyError::NotAuthorized { id: id.to_string() }));
        }
        Ok(id)
    }
}

/// Verifies a *server's* certificate; used by clients (e.g. a sidecar calling another, or calling sentry).
#[derive(Debug)]
pub struct SpiffeServerVerifier(SpiffeVerifierCore);

impl SpiffeServerVerifier {
    pub fn new(bundle: TrustBundleHandle, authorizer: Authorizer, skew: Duration) -> Self {
        Self(SpiffeVerifierCore { bundle, authorizer, skew, algorithms: algorithms(), any_trust_domain: false })
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The server name is not an identity in SPIFFE: the URI SAN is, and the authorizer judges it.
        self.0.verify(end_entity, intermediates, now, Usage::Server).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

/// Verifies a *client's* certificate; used by servers (the sidecar's internal port). Client auth is mandatory.
#[derive(Debug)]
pub struct SpiffeClientVerifier(SpiffeVerifierCore);

impl SpiffeClientVerifier {
    pub fn new(bundle: TrustBundleHandle, authorizer: Authorizer, skew: Duration) -> Self {
        Self(SpiffeVerifierCore { bundle, authorizer, skew, algorithms: algorithms(), any_trust_domain: false })
    }

    /// Clients of any trust domain whose chain verifies against `bundle`'s roots (whatever trust domain the bundle
    /// is filed under); `authorizer` still judges each ID. For a control-plane server that every app of a cluster
    /// calls, each in the trust domain of its own Configuration (Dapr's operator accepts any).
    pub fn for_any_trust_domain(bundle: TrustBundleHandle, authorizer: Authorizer, skew: Duration) -> Self {
        Self(SpiffeVerifierCore { bundle, authorizer, skew, algorithms: algorithms(), any_trust_domain: true })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verify(end_entity, intermediates, now, Usage::Client).map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS 1.3 client config that presents `svid` and accepts only servers the authorizer names.
pub fn client_config(
    svid: Arc<SvidResolver>,
    bundle: TrustBundleHandle,
    authorizer: Authorizer,
    skew: Duration,
    alpn: &[&[u8]],
) -> ClientConfigResult {
    let verifier = Arc::new(SpiffeServerVerifier::new(bundle, authorizer, skew));
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(svid);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A TLS 1.3 server config that presents `svid`, requires a client certificate, and accepts only clients the
/// authorizer names. With `authorizer = None` no client certificate is requested (sentry's bootstrap port, where
/// callers do not have an identity yet).
pub fn server_config(
    svid: Arc<SvidResolver>,
    client_auth: Option<(TrustBundleHandle, Authorizer, Duration)>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, rustls::Error> {
    let builder =
        rustls::ServerConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = match client_auth {
        Some((bundle, authorizer, skew)) => builder
            .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(bundle, authorizer, skew)))
            .with_cert_resolver(svid),
        None => builder.with_no_client_auth().with_cert_resolver(svid),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// What `client_config` returns.
pub type ClientConfigResult = Result<rustls::ClientConfig, rustls::Error>;
