//! Signatures with an SVID's key in JOSE form, for documents a workload signs with its identity (ward's verified
//! publishers, `wardsig`): sign with the SVID's private key, verify with a leaf certificate's public key.
//!
//! JOSE (RFC 7518 §3.4) wants ECDSA signatures as the fixed-size `r || s`; rustls and webpki use ASN.1 DER. The
//! conversion is hand-written here (two integers in a SEQUENCE) because no crate in the dependency set exposes it.
//! Owns only that and the algorithm choice; chain verification is [`crate::verify_svid`]'s.

use rustls::SignatureScheme;
use rustls_pki_types::CertificateDer;

use crate::X509Svid;

/// Why a JOSE signature could not be made or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("the SVID key cannot sign with ES256 or EdDSA")]
    NoScheme,
    #[error("signing failed")]
    Sign,
    #[error("unsupported JOSE algorithm {0:?}")]
    Algorithm(String),
    #[error("the leaf certificate does not parse")]
    Leaf,
    #[error("the signature does not verify")]
    BadSignature,
}

impl X509Svid {
    /// Signs `message` with this SVID's private key: the JOSE `alg` (`ES256` or `EdDSA`) and the signature in JOSE
    /// form.
    pub fn sign_jose(&self, message: &[u8]) -> Result<(&'static str, Vec<u8>), JoseError> {
        let key = &self.certified_key().key;
        let signer = key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::ED25519])
            .ok_or(JoseError::NoScheme)?;
        let scheme = signer.scheme();
        let signature = signer.sign(message).map_err(|_| JoseError::Sign)?;
        match scheme {
            SignatureScheme::ECDSA_NISTP256_SHA256 => Ok(("ES256", der_to_fixed(&signature, 32)?)),
            SignatureScheme::ED25519 => Ok(("EdDSA", signature)),
            _ => Err(JoseError::NoScheme),
        }
    }
}

/// Checks a JOSE signature over `message` with the public key of `leaf` (whose chain the caller verified).
pub fn verify_jose(leaf: &CertificateDer<'_>, alg: &str, message: &[u8], signature: &[u8]) -> Result<(), JoseError> {
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|_| JoseError::Leaf)?;
    let (algorithm, signature) = match alg {
        "ES256" => (webpki::ring::ECDSA_P256_SHA256, fixed_to_der(signature, 32)?),
        "EdDSA" => (webpki::ring::ED25519, signature.to_vec()),
        other => return Err(JoseError::Algorithm(other.to_owned())),
    };
    cert.verify_signature(algorithm, message, &signature).map_err(|_| JoseError::BadSignature)
}

/// `SEQUENCE { INTEGER r, INTEGER s }` → `r || s`, each left-padded to `size` bytes.
fn der_to_fixed(der: &[u8], size: usize) -> Result<Vec<u8>, JoseError> {
    let body = der_element(der, 0x30).ok_or(JoseError::Sign)?.0;
    let (r, rest) = der_element(body, 0x02).ok_or(JoseError::Sign)?;
    let (s, rest) = der_element(rest, 0x02).ok_or(JoseError::Sign)?;
    if !rest.is_empty() {
        return Err(JoseError::Sign);
    }
    let mut out = vec![0u8; 2 * size];
    for (i, int) in [r, s].into_iter().enumerate() {
        let int = strip_zeros(int);
        if int.len() > size {
            return Err(JoseError::Sign);
        }
        out[i * size + size - int.len()..(i + 1) * size].copy_from_slice(int);
    }
    Ok(out)
}

/// `r || s` → `SEQUENCE { INTEGER r, INTEGER s }` (minimal encoding, as verifiers require).
fn fixed_to_der(fixed: &[u8], size: usize) -> Result<Vec<u8>, JoseError> {
    if fixed.len() != 2 * size {
        return Err(JoseError::BadSignature);
    }
    let mut body = Vec::with_capacity(2 * size + 6);
    for half in fixed.chunks(size) {
        let int = strip_zeros(half);
        let pad = int.first().is_none_or(|b| b & 0x80 != 0);
        body.push(0x02);
        body.push((int.len() + usize::from(pad)) as u8);
        if pad {
            body.push(0);
        }
        body.extend_from_slice(int);
    }
    let mut der = vec![0x30];
    push_len(&mut der, body.len());
    der.extend_from_slice(&body);
    Ok(der)
}

fn strip_zeros(int: &[u8]) -> &[u8] {
    let start = int.iter().position(|b| *b != 0).unwrap_or(int.len());
    &int[start..]
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.push(0x81);
        out.push(len as u8);
    }
}

/// One DER element with tag `tag` at the start of `input`: its content and the bytes after it. Short lengths and
/// the one-byte long form only (ECDSA signatures up to P-521 fit).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = match len {
        0..=0x7f => (usize::from(len), rest),
        0x81 => {
            let (&len, rest) = rest.split_first()?;
            (usize::from(len), rest)
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn make_svid() -> (X509Svid, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI("spiffe://public/ns/default/orders".try_into().unwrap())];
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().clone();
        (X509Svid::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap(), der)
    }

    #[test]
    fn es256_round_trip_and_tampering() {
        let (svid, leaf) = make_svid();
        for _ in 0..50 {
            let (alg, sig) = svid.sign_jose(b"hello").unwrap();
            assert_eq!((alg, sig.len()), ("ES256", 64));
            verify_jose(&leaf, alg, b"hello", &sig).unwrap();
            assert_eq!(verify_jose(&leaf, alg, b"hellO", &sig), Err(JoseError::BadSignature));
            let mut flipped = sig.clone();
            flipped[10] ^= 1;
            assert_eq!(verify_jose(&leaf, alg, b"hello", &flipped), Err(JoseError::BadSignature));
        }
        let (other, _) = make_svid();
        let (alg, sig) = other.sign_jose(b"hello").unwrap();
        assert_eq!(verify_jose(&leaf, alg, b"hello", &sig), Err(JoseError::BadSignature), "another key");
        assert!(matches!(verify_jose(&leaf, "HS256", b"hello", &sig), Err(JoseError::Algorithm(_))));
        assert_eq!(verify_jose(&leaf, "ES256", b"hello", &sig[..63]), Err(JoseError::BadSignature));
    }

    #[test]
    fn der_conversion_handles_short_and_high_bit_integers() {
        let mut fixed = vec![0u8; 64];
        fixed[31] = 1; // r = 1
        fixed[32] = 0x80; // s has its high bit set: needs a 0x00 pad in DER
        let der = fixed_to_der(&fixed, 32).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x01, 0x01]);
        assert_eq!(der_to_fixed(&der, 32).unwrap(), fixed);
    }
}
