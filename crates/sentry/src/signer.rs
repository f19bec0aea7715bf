//! Sans-IO certificate signing: checks a CSR (PEM, signature, key type) and issues a workload SVID for an
//! identity that the caller has already authenticated. No network, no files, no clock of its own: `now` is an
//! argument, so every rule here is a plain unit test.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SubjectPublicKeyInfo};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use ward_identity::SpiffeId;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::material::CaMaterial;

/// Why a CSR was refused. Messages follow Dapr Sentry's where Dapr has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("invalid certificate signing request")]
    NotPem,
    #[error("failed to parse certificate signing request: {0}")]
    Parse(String),
    #[error("invalid signature")]
    BadSignature,
    #[error("unsupported key type {0}: use ECDSA P-256, Ed25519 or RSA of at least 2048 bits")]
    UnsupportedKey(String),
    #[error("RSA key of {bits} bits is too small: at least 2048 bits are required")]
    RsaTooSmall { bits: usize },
}

/// A CSR whose signature and key type have been checked; only its public key is ever used.
#[derive(Debug)]
pub struct CheckedCsr {
    public_key: SubjectPublicKeyInfo,
}

impl CheckedCsr {
    /// For keys generated in-process (sentry's own certificate), where there is no CSR to check.
    pub fn from_key_pair(key: &rcgen::KeyPair) -> Result<Self, CsrError> {
        let public_key = SubjectPublicKeyInfo::from_der(&rcgen::PublicKeyData::subject_public_key_info(key))
            .map_err(|err| CsrError::Parse(err.to_string()))?;
        Ok(Self { public_key })
    }
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ED25519: &str = "1.3.101.112";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// Parses and checks a PEM CSR. Subject, SANs and extensions the CSR asks for are ignored on purpose: the
/// identity comes from the authenticated request, never from the CSR.
pub fn check_csr(pem: &[u8]) -> Result<CheckedCsr, CsrError> {
    let der = CertificateSigningRequestDer::from_pem_slice(pem).map_err(|_| CsrError::NotPem)?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
        .map_err(|err| CsrError::Parse(err.to_string()))?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            if curve != OID_P256 {
                return Err(CsrError::UnsupportedKey(format!("ECDSA on curve {curve}")));
            }
        }
        OID_ED25519 => {}
        OID_RSA => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => {}
            Ok(PublicKey::RSA(rsa)) => return Err(CsrError::RsaTooSmall { bits: rsa.key_size() }),
            _ => return Err(CsrError::Parse("RSA public key does not parse".to_owned())),
        },
        other => return Err(CsrError::UnsupportedKey(other.to_owned())),
    }
    let public_key = SubjectPublicKeyInfo::from_der(spki.raw).map_err(|err| CsrError::Parse(err.to_string()))?;
    Ok(CheckedCsr { public_key })
}

/// A workload certificate issued by `sign`.
#[derive(Debug, Clone)]
pub struct IssuedSvid {
    /// Leaf, then the issuer chain, as PEM.
    pub chain_pem: String,
    pub not_after: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the issuer certificate has expired; renew the CA material")]
    IssuerExpired,
    #[error("failed to sign certificate")]
    Rcgen(#[from] rcgen::Error),
}

/// Issues an SVID for `id`: one URI SAN (plus `dns_names`, for control-plane services a Kubernetes API server
/// calls by Service name), no subject, not a CA, EKU serverAuth + clientAuth, valid from
/// `now - skew` until `now + ttl` but never after the issuer (Dapr lets leaves outlive the issuer, #8557).
pub fn sign(
    material: &CaMaterial,
    csr: &CheckedCsr,
    id: &SpiffeId,
    dns_names: &[String],
    now: SystemTime,
    ttl: Duration,
    skew: Duration,
) -> Result<IssuedSvid, SignError> {
    if now >= material.issuer_not_after {
        return Err(SignError::IssuerExpired);
    }
    let not_after = (now + ttl).min(material.issuer_not_after);
    let mut params = CertificateParams::default();
    // No subject: the identity is the URI SAN alone, as Dapr's SVIDs.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
    for name in dns_names {
        params.subject_alt_names.push(SanType::DnsName(name.as_str().try_into()?));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = (now - skew).into();
    params.not_after = not_after.into();
    params.use_authority_key_identifier_extension = true;
    let leaf = params.signed_by(&csr.public_key, &material.issuer)?;
    let mut chain_pem = leaf.pem();
    chain_pem.push_str(&material.issuer_chain_pem());
    // X.509 stores whole seconds; report what the certificate says.
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(not_after.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs());
    Ok(IssuedSvid { chain_pem, not_after })
}
