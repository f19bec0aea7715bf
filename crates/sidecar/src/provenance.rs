//! The sidecar's provenance issuer (issue 15, layer four): the in-memory signing key, its rotation with the SVID,
//! minting one token per request handed to the app, and the JWKS the app verifies with.
//!
//! Owns: the key set (current key and, after a rotation, the previous one, so that a token minted a moment before
//! still verifies until it expires), and the claims' values this sidecar vouches for (`iss`, `aud`, `dev`).
//!
//! Does not own: the token format or verification (`ward-provenance`), where in the inbound stack the token is
//! set (`inbound/provenance.rs`), or serving the JWKS (`public.rs`).
//!
//! Rotation is lazy: each mint and each JWKS read compares the SVID the key was made for with the current one
//! (one atomic load) and, when the certificate was renewed, makes a new key first. The key never leaves memory
//! and is never logged.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ward_identity::{SvidResolver, X509Svid};
use ward_provenance::{Claims, Jwks, ProvenanceError, SigningKey};

/// What one request's token says, besides what the issuer fills in.
pub(crate) struct TokenRequest<'a> {
    /// `sub`: the verified caller's SPIFFE ID, or `dev:<app-id>`.
    pub(crate) subject: String,
    pub(crate) capabilities: Vec<String>,
    pub(crate) method: &'a str,
    pub(crate) path: String,
}

struct KeySet {
    current: Arc<SigningKey>,
    previous: Option<Arc<SigningKey>>,
    /// The SVID `current` was made for (`None` without mTLS).
    for_svid: Option<Arc<X509Svid>>,
}

/// One per sidecar.
pub(crate) struct ProvenanceIssuer {
    issuer: String,
    audience: String,
    development: bool,
    svid: Option<Arc<SvidResolver>>,
    keys: ArcSwap<KeySet>,
    rotating: Mutex<()>,
}

impl std::fmt::Debug for ProvenanceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvenanceIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.keys.load().current.kid())
            .finish()
    }
}

impl ProvenanceIssuer {
    /// A fresh key for `issuer` (this sidecar's SPIFFE ID) vouching to `audience` (its app id). `development`: tokens
    /// carry `dev: true`. `svid`: the resolver whose renewals rotate the key (`None` without mTLS).
    pub(crate) fn new(
        issuer: String,
        audience: String,
        development: bool,
        svid: Option<Arc<SvidResolver>>,
    ) -> Result<Self, ProvenanceError> {
        let for_svid = svid.as_ref().and_then(|s| s.current());
        let keys = KeySet { current: Arc::new(SigningKey::generate()?), previous: None, for_svid };
        Ok(Self { issuer, audience, development, svid, keys: ArcSwap::from_pointee(keys), rotating: Mutex::new(()) })
    }

    pub(crate) fn is_development(&self) -> bool {
        self.development
    }

    /// The key set for now, rotated first if the SVID was renewed since the current key was made.
    fn keys(&self) -> Result<Arc<KeySet>, ProvenanceError> {
        let keys = self.keys.load_full();
        let Some(resolver) = &self.svid else { return Ok(keys) };
        let svid = resolver.current();
        if same_svid(&svid, &keys.for_svid) {
            return Ok(keys);
        }
        // One rotation per renewal, even with many requests noticing it at once.
        let _guard = self.rotating.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let keys = self.keys.load_full();
        if same_svid(&svid, &keys.for_svid) {
            return Ok(keys);
        }
        let rotated = Arc::new(KeySet {
            current: Arc::new(SigningKey::generate()?),
            previous: Some(keys.current.clone()),
            for_svid: svid,
        });
        tracing::info!(kid = rotated.current.kid(), "provenance key rotated with the workload certificate");
        self.keys.store(rotated.clone());
        Ok(rotated)
    }

    /// Signs one token for the app.
    pub(crate) fn mint(&self, request: TokenRequest<'_>) -> Result<String, ProvenanceError> {
        let keys = self.keys()?;
        let iat = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: request.subject,
            aud: self.audience.clone(),
            cap: request.capabilities,
            htm: request.method.to_owned(),
            htu: request.path,
            iat,
            exp: iat + ward_provenance::LIFETIME_SECS,
            jti: ward_provenance::new_jti()?,
            dev: self.development.then_some(true),
        };
        keys.current.mint(&claims)
    }

    /// The public keys: current first, then the previous one (if a rotation happened).
    pub(crate) fn jwks(&self) -> Result<Jwks, ProvenanceError> {
        let keys = self.keys()?;
        let mut jwks = Jwks { keys: vec![keys.current.jwk().clone()] };
        if let Some(previous) = &keys.previous {
            jwks.keys.push(previous.jwk().clone());
        }
        Ok(jwks)
    }
}

fn same_svid(a: &Option<Arc<X509Svid>>, b: &Option<Arc<X509Svid>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svid() -> X509Svid {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://public/ns/default/orders").expect("uri"),
        )];
        let cert = params.self_signed(&key).expect("cert");
        X509Svid::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).expect("svid")
    }

    fn request() -> TokenRequest<'static> {
        TokenRequest {
            subject: "spiffe://public/ns/default/checkout".into(),
            capabilities: vec![],
            method: "GET",
            path: "/orders".into(),
        }
    }

    #[test]
    fn the_key_rotates_when_the_svid_is_renewed_and_the_old_one_stays_published() {
        let resolver = Arc::new(SvidResolver::with_svid(svid()));
        let issuer = ProvenanceIssuer::new(
            "spiffe://public/ns/default/orders".into(),
            "orders".into(),
            false,
            Some(resolver.clone()),
        )
        .expect("issuer");
        let first = issuer.jwks().expect("jwks");
        assert_eq!(first.keys.len(), 1);
        let before = issuer.mint(request()).expect("mint");
        assert_eq!(issuer.jwks().expect("jwks"), first, "no renewal, no rotation");

        resolver.replace(svid());
        let after = issuer.mint(request()).expect("mint");
        let second = issuer.jwks().expect("jwks");
        assert_eq!(second.keys.len(), 2);
        assert_ne!(second.keys[0].kid, first.keys[0].kid, "a new key after the renewal");
        assert_eq!(second.keys[1], first.keys[0], "the previous key is still published");
        // Both tokens verify against the published set.
        let expected =
            ward_provenance::Expected { method: "GET", path: "/orders", audience: "orders", production: true };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let cache = ward_provenance::ReplayCache::default();
        for token in [before, after] {
            ward_provenance::verify_at(Some(&token), &expected, &second, now, &cache).expect("verifies");
        }
    }

    #[test]
    fn development_tokens_say_so() {
        let issuer = ProvenanceIssuer::new("spiffe://public/ns/default/orders".into(), "orders".into(), true, None)
            .expect("issuer");
        let token = issuer.mint(request()).expect("mint");
        let jwks = issuer.jwks().expect("jwks");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let expected =
            ward_provenance::Expected { method: "GET", path: "/orders", audience: "orders", production: true };
        let err = ward_provenance::verify_at(Some(&token), &expected, &jwks, now, &Default::default()).unwrap_err();
        assert_eq!(err, ProvenanceError::DevTokenInProduction);
        let expected = ward_provenance::Expected { production: false, ..expected };
        assert!(ward_provenance::verify_at(Some(&token), &expected, &jwks, now, &Default::default()).expect("ok").dev);
    }
}
