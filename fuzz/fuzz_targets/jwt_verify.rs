//! Fuzzes JWT verification against a JWKS (`ward_gate::jwks`, used by the API token's JWT mode and the bearer
//! middleware). The input edits a valid ES256 token: byte pairs (position, value) overwrite bytes, the rest is
//! appended. Invariant: a token is accepted only if its signed part (header and claims) is exactly the valid
//! token's — no edit of the header (`alg: none`, HS256, another `kid`) or of the claims ever verifies; never panics.
#![no_main]

use std::sync::OnceLock;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use libfuzzer_sys::fuzz_target;
use ward_gate::jwks::KeySet;

struct Fixture {
    keys: KeySet,
    validation: Validation,
    token: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = EncodingKey::from_ec_pem(include_bytes!("../fixtures/es256-fuzz-key.pem")).expect("key");
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk");
        jwk.common.key_id = Some("k1".into());
        let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
        let keys = KeySet::parse("fuzz", jwks.as_bytes()).expect("jwks");
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let claims = serde_json::json!({"iss": "https://idp", "aud": "ward", "exp": 4_102_444_800u64});
        let token = jsonwebtoken::encode(&header, &claims, &key).expect("token");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&["https://idp"]);
        validation.set_audience(&["ward"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        assert_eq!(keys.verify(token.as_bytes(), &validation), Ok(()), "the fixture token verifies");
        Fixture { keys, validation, token }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut token = f.token.clone().into_bytes();
    let (edits, tail) = data.split_at(data.len() - data.len() % 2);
    for pair in edits.chunks(2) {
        let at = usize::from(pair[0]) * token.len() / 256;
        token[at] = pair[1];
    }
    token.extend_from_slice(tail);
    if f.keys.verify(&token, &f.validation).is_ok() {
        let signed = |t: &[u8]| t.iter().rposition(|b| *b == b'.').map(|dot| t[..dot].to_vec());
        assert_eq!(signed(&token), signed(f.token.as_bytes()), "an edited header or claims verified");
    }
});
