//! Verified publishers (issue 14, beyond Dapr): the publishing sidecar signs each CloudEvent with its SVID key, and
//! the subscribing sidecar verifies the signature against its trust bundle before anything is delivered.
//!
//! `wardsig` is a detached JWS (RFC 7515 appendix F) in compact form, `<header>..<signature>`:
//! - header (base64url JSON): `{"alg":"ES256","typ":"ward-cloudevent+jws","x5c":[<leaf>, <intermediates>…]}` with
//!   the certificates in standard base64 DER, as RFC 7515 §4.1.6;
//! - payload (detached, not carried): the event's canonical bytes (`envelope::signed_bytes`: every attribute but
//!   `wardsig`, and the data);
//! - signature: over `<header>.<base64url(payload)>`.
//!
//! Verification: the chain must lead to the trust bundle (at the time of delivery, with the sidecar's clock skew),
//! the leaf must be a Dapr SPIFFE identity of the bundle's trust domain, and the signature must hold over the
//! event as received. Any failure is one [`Unverified`] reason; nothing from the event is trusted before that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Map, Value};
use ward_identity::{SpiffeId, SvidResolver, TrustBundleHandle};

use crate::envelope::{WARDSIG, signed_bytes};

/// The JWS `typ` of a signed event.
const TYP: &str = "ward-cloudevent+jws";

/// Signs events with the current SVID.
#[derive(Clone)]
pub struct EventSigner {
    pub svid: Arc<SvidResolver>,
}

/// The event could not be signed (no certificate yet, or the key refused): the publish fails closed.
#[derive(Debug, thiserror::Error)]
#[error("the event could not be signed: {0}")]
pub struct SignError(String);

impl EventSigner {
    /// Adds `wardsig` to `event`.
    pub fn sign(&self, event: &mut Map<String, Value>) -> Result<(), SignError> {
        let svid = self.svid.current().ok_or_else(|| SignError("no workload certificate yet".to_owned()))?;
        let (alg, x5c) = {
            let x5c: Vec<Value> = svid.chain().iter().map(|c| Value::String(STANDARD.encode(c.as_ref()))).collect();
            // The algorithm is known only after signing; ES256 is what ward's CA issues keys for.
            ("ES256", x5c)
        };
        let mut header = serde_json::json!({"alg": alg, "typ": TYP, "x5c": x5c});
        let payload = URL_SAFE_NO_PAD.encode(signed_bytes(event));
        let mut encoded_header = URL_SAFE_NO_PAD.encode(header.to_string());
        let mut input = format!("{encoded_header}.{payload}");
        let (used, mut signature) = svid.sign_jose(input.as_bytes()).map_err(|e| SignError(e.to_string()))?;
        if used != alg {
            header["alg"] = used.into();
            encoded_header = URL_SAFE_NO_PAD.encode(header.to_string());
            input = format!("{encoded_header}.{payload}");
            signature = svid.sign_jose(input.as_bytes()).map_err(|e| SignError(e.to_string()))?.1;
        }
        event.insert(WARDSIG.into(), format!("{encoded_header}..{}", URL_SAFE_NO_PAD.encode(signature)).into());
        Ok(())
    }
}

/// Verifies events against the trust bundle.
#[derive(Clone)]
pub struct EventVerifier {
    bundle: TrustBundleHandle,
    skew: Duration,
    /// Chains that verified, by their `wardsig` header: a publisher's chain is checked once per certificate, not
    /// once per event (the event's own signature is always checked).
    chains: Arc<Mutex<HashMap<String, VerifiedChain>>>,
}

/// A chain that verified, and for how long that answer holds.
#[derive(Clone)]
struct VerifiedChain {
    id: SpiffeId,
    app_id: String,
    /// The leaf's `not_after` plus the clock skew the verification allowed.
    valid_until: SystemTime,
    /// The trust bundle it was verified against (a new bundle verifies again).
    bundle: Arc<ward_identity::TrustBundle>,
}

/// At most this many publisher chains are remembered (each is one certificate of one publisher).
const MAX_CACHED_CHAINS: usize = 1024;

/// Why an event's publisher is not verified. The text goes into audit events and logs; it never contains data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("the message is not a CloudEvent JSON object, so it cannot carry a publisher signature")]
    NotAnEvent,
    #[error("the event has no wardsig (unsigned publisher)")]
    Missing,
    #[error("wardsig is malformed: {0}")]
    Malformed(&'static str),
    #[error("the publisher's certificate chain does not verify: {0}")]
    Chain(String),
    #[error("the signature does not match the event (an attribute or the data changed, or another key signed)")]
    Signature,
    #[error("publisher {0} is not in the subscription's allowedPublishers")]
    NotAllowed(String),
}

/// A publisher whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    pub id: SpiffeId,
    pub app_id: String,
}

impl EventVerifier {
    pub fn new(bundle: TrustBundleHandle, skew: Duration) -> EventVerifier {
        EventVerifier { bundle, skew, chains: Default::default() }
    }

    /// The publisher the chain in `header_b64` proves, from the cache when the same chain verified before against
    /// the same bundle and its leaf has not expired since.
    fn chain(&self, header_b64: &str, chain: &[CertificateDer<'static>]) -> Result<(SpiffeId, String), Unverified> {
        let bundle = self.bundle.load();
        let now = SystemTime::now();
        if let Ok(cache) = self.chains.lock()
            && let Some(hit) = cache.get(header_b64)
            && Arc::ptr_eq(&hit.bundle, &bundle)
            && now < hit.valid_until
        {
            return Ok((hit.id.clone(), hit.app_id.clone()));
        }
        let (leaf, intermediates) = chain.split_first().ok_or(Unverified::Malformed("x5c is empty"))?;
        let id = ward_identity::verify_svid(
            &bundle,
            leaf,
            intermediates,
            UnixTime::now(),
            self.skew,
            ward_identity::Usage::Client,
        )
        .map_err(|err| Unverified::Chain(err.to_string()))?;
        let app_id =
            id.dapr_identity().map_err(|_| Unverified::Chain("not a Dapr identity".to_owned()))?.app_id.to_owned();
        if let (Some(not_after), Ok(mut cache)) = (ward_identity::certificate_not_after(leaf), self.chains.lock()) {
            if cache.len() >= MAX_CACHED_CHAINS {
                cache.clear();
            }
            let entry =
                VerifiedChain { id: id.clone(), app_id: app_id.clone(), valid_until: not_after + self.skew, bundle };
            cache.insert(header_b64.to_owned(), entry);
        }
        Ok((id, app_id))
    }

    pub fn verify(&self, event: &Map<String, Value>) -> Result<Publisher, Unverified> {
        let sig =
            event.get(WARDSIG).ok_or(Unverified::Missing)?.as_str().ok_or(Unverified::Malformed("not a string"))?;
        let (header_b64, rest) = sig.split_once('.').ok_or(Unverified::Malformed("not a compact JWS"))?;
        let signature_b64 =
            rest.strip_prefix('.').ok_or(Unverified::Malformed("the payload must be detached (empty)"))?;
        let header: Value = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Unverified::Malformed("header"))?;
        if header.get("typ").and_then(Value::as_str) != Some(TYP) {
            return Err(Unverified::Malformed("typ"));
        }
        let alg = header.get("alg").and_then(Value::as_str).ok_or(Unverified::Malformed("alg"))?;
        let chain: Vec<CertificateDer<'static>> = header
            .get("x5c")
            .and_then(Value::as_array)
            .ok_or(Unverified::Malformed("x5c"))?
            .iter()
            .map(|c| c.as_str().and_then(|s| STANDARD.decode(s).ok()).map(CertificateDer::from))
            .collect::<Option<_>>()
            .ok_or(Unverified::Malformed("x5c"))?;
        let leaf = chain.first().ok_or(Unverified::Malformed("x5c is empty"))?;
        let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| Unverified::Malformed("signature"))?;
        let (id, app_id) = self.chain(header_b64, &chain)?;

        let input = format!("{header_b64}.{}", URL_SAFE_NO_PAD.encode(signed_bytes(event)));
        ward_identity::verify_jose(leaf, alg, input.as_bytes(), &signature).map_err(|_| Unverified::Signature)?;
        Ok(Publisher { id, app_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
    use ward_identity::{TrustBundle, TrustDomain, X509Svid};

    struct Ca {
        cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, issuer: rcgen::Issuer::new(params, key) }
    }

    fn leaf(ca: &Ca, uri: &str) -> X509Svid {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        X509Svid::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    fn verifier(ca: &Ca) -> EventVerifier {
        let td = TrustDomain::new("public").unwrap();
        let bundle = TrustBundle::from_pem(td, ca.cert.pem().as_bytes()).unwrap();
        EventVerifier::new(TrustBundleHandle::new(bundle), Duration::from_secs(60))
    }

    fn event() -> Map<String, Value> {
        serde_json::from_str(
            r#"{"id":"1","source":"orders","type":"com.dapr.event.sent","specversion":"1.0","topic":"t",
                "pubsubname":"bus","datacontenttype":"application/json","data":{"n":1}}"#,
        )
        .unwrap()
    }

    fn signer(svid: X509Svid) -> EventSigner {
        EventSigner { svid: Arc::new(SvidResolver::with_svid(svid)) }
    }

    #[test]
    fn signed_events_verify_and_every_change_breaks_them() {
        let ca = ca();
        let v = verifier(&ca);
        let mut e = event();
        signer(leaf(&ca, "spiffe://public/ns/default/orders")).sign(&mut e).unwrap();
        let publisher = v.verify(&e).unwrap();
        assert_eq!(
            (publisher.app_id.as_str(), publisher.id.to_string().as_str()),
            ("orders", "spiffe://public/ns/default/orders")
        );

        let changes: [(&str, Value); 4] = [
            ("source", "checkout".into()),
            ("data", serde_json::json!({"n": 2})),
            ("topic", "other".into()),
            ("extra", "added".into()),
        ];
        for (key, value) in changes {
            let mut changed = e.clone();
            changed.insert(key.into(), value);
            assert_eq!(v.verify(&changed), Err(Unverified::Signature), "{key}");
        }
        let mut removed = e.clone();
        removed.remove("type");
        assert_eq!(v.verify(&removed), Err(Unverified::Signature));
        let mut unsigned = e.clone();
        unsigned.remove(WARDSIG);
        assert_eq!(v.verify(&unsigned), Err(Unverified::Missing));
        let mut garbage = e.clone();
        garbage.insert(WARDSIG.into(), "a.b.c".into());
        assert!(matches!(v.verify(&garbage), Err(Unverified::Malformed(_))));
    }

    /// The chain cache never skips the event's own signature, and a new trust bundle verifies the chain again.
    #[test]
    fn cached_chains_still_check_each_signature_and_follow_the_bundle() {
        let ours = ca();
        let td = TrustDomain::new("public").unwrap();
        let handle = TrustBundleHandle::new(TrustBundle::from_pem(td.clone(), ours.cert.pem().as_bytes()).unwrap());
        let v = EventVerifier::new(handle.clone(), Duration::from_secs(60));
        let mut e = event();
        signer(leaf(&ours, "spiffe://public/ns/default/orders")).sign(&mut e).unwrap();
        v.verify(&e).unwrap();
        v.verify(&e).unwrap();
        let mut changed = e.clone();
        changed.insert("data".into(), serde_json::json!({"n": 99}));
        assert_eq!(v.verify(&changed), Err(Unverified::Signature), "same header, cached chain, bad signature");
        // The root is rotated away: the same chain no longer verifies.
        let other = ca();
        handle.store(TrustBundle::from_pem(td, other.cert.pem().as_bytes()).unwrap());
        assert!(matches!(v.verify(&e), Err(Unverified::Chain(_))));
    }

    #[test]
    fn a_signer_outside_the_trust_bundle_is_refused() {
        let ours = ca();
        let theirs = ca();
        let mut e = event();
        signer(leaf(&theirs, "spiffe://public/ns/default/orders")).sign(&mut e).unwrap();
        assert!(matches!(verifier(&ours).verify(&e), Err(Unverified::Chain(_))));
        // Another trust domain under our own CA is refused too.
        let mut e = event();
        signer(leaf(&ours, "spiffe://other/ns/default/orders")).sign(&mut e).unwrap();
        assert!(matches!(verifier(&ours).verify(&e), Err(Unverified::Chain(_))));
    }
}
