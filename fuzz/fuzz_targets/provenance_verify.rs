//! Provenance token verification (issue 15). Invariants: never panics on any token; arbitrary input never verifies
//! against a real key; a real token with any byte changed never verifies (unless the change is a no-op), and the
//! unchanged one verifies exactly once (the second time it is a replay).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ward_provenance::{Claims, Expected, Jwks, ProvenanceError, ReplayCache, SigningKey, verify_at};

const NOW: u64 = 1_800_000_000;

fn key() -> &'static (SigningKey, Jwks) {
    static KEY: OnceLock<(SigningKey, Jwks)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SigningKey::generate().expect("key");
        let jwks = Jwks { keys: vec![key.jwk().clone()] };
        (key, jwks)
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, jwks) = key();
    let expected = Expected { method: "POST", path: "/orders/1", audience: "orders", production: true };
    // Arbitrary input as a token.
    let text = String::from_utf8_lossy(data);
    assert!(verify_at(Some(&text), &expected, jwks, NOW, &ReplayCache::default()).is_err());

    // A real token, changed at one position.
    let claims = Claims {
        iss: "spiffe://public/ns/default/orders".into(),
        sub: "spiffe://public/ns/default/checkout".into(),
        aud: "orders".into(),
        cap: vec![],
        htm: "POST".into(),
        htu: "/orders/1".into(),
        iat: NOW,
        exp: NOW + 30,
        jti: "j".into(),
        dev: None,
    };
    let token = key.mint(&claims).expect("mint");
    let (Some(&at), Some(&with)) = (data.first(), data.get(1)) else { return };
    let mut bytes = token.clone().into_bytes();
    let index = usize::from(at) * bytes.len() / 256;
    if let Some(b) = bytes.get_mut(index) {
        *b ^= with;
    }
    let cache = ReplayCache::default();
    match String::from_utf8(bytes) {
        Ok(changed) if changed == token => {
            assert!(verify_at(Some(&changed), &expected, jwks, NOW, &cache).is_ok());
            let again = verify_at(Some(&changed), &expected, jwks, NOW, &cache);
            assert_eq!(again.unwrap_err(), ProvenanceError::Replayed { jti: "j".into() });
        }
        Ok(changed) => {
            // base64url without padding can encode the same bytes only one way, except in the unused low bits
            // of the last character of a part: such a change decodes to the same signature or claims.
            if let Ok(v) = verify_at(Some(&changed), &expected, jwks, NOW, &cache) {
                assert_eq!(v.claims, claims, "a changed token verified with different claims");
            }
        }
        Err(_) => {}
    }
});
