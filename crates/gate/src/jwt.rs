//! JWT mode for the app → sidecar API token (`--dapr-api-token-jwks`, `--dapr-api-token-issuer`,
//! `--dapr-api-token-audience`): the app presents a short-lived JWT instead of a shared static secret.
//!
//! Owned here: loading a JWKS file (watched and reloaded like a token file) or URL (refreshed), and the
//! validation settings: `exp`/`nbf` (60 s leeway), `iss` and `aud`. Which keys and algorithms verify a token is
//! `jwks.rs`'s. Not owned here: static tokens and what a failure looks like on the wire (`tokens`, adapters).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, Validation};

pub use crate::jwks::JwtReason;
use crate::jwks::{JwksError, KeySet};
use crate::{GateError, watch};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// A JWKS is a few keys; a megabyte is generous.
const JWKS_FILE_LIMIT: u64 = 1024 * 1024;

/// The three settings of JWT mode, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// A JWKS file path (an `http(s)://` URL is refused for now).
    pub jwks: String,
    /// The exact `iss` required.
    pub issuer: String,
    /// The `aud` value required (the token's `aud` may be a string or contain it in an array).
    pub audience: String,
}

/// Verifies JWT API tokens against a watched JWKS file. Cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Arc<ArcSwap<KeySet>>,
    /// One validation per algorithm would differ only in `algorithms`; this template holds the rest.
    template: Arc<Validation>,
    path: PathBuf,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks", &self.path)
            .field("keys", &self.keys.load().len())
            .field("issuer", &self.template.iss)
            .field("audience", &self.template.aud)
            .finish()
    }
}

impl JwtVerifier {
    /// Loads the JWKS and starts watching it. Must be called inside a tokio runtime. Fails (refusing to start)
    /// if a setting is empty, the JWKS is a URL, unreadable, not a JWKS, or holds no usable key.
    pub fn new(config: &JwtConfig) -> Result<Self, GateError> {
        check_config(config)?;
        let jwks = config.jwks.trim();
        let lower = jwks.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Err(GateError::JwksUrlUnsupported { url: jwks.to_owned() });
        }
        let path = PathBuf::from(jwks);
        let keys = watch::load_and_watch(path.clone(), "JWKS", JWKS_FILE_LIMIT, parse_jwks)?;
        Ok(Self { keys, template: Arc::new(template(config)), path })
    }

    /// Like [`JwtVerifier::new`], and also accepts an `https://` JWKS URL (or `http://` to a loopback address):
    /// fetched now (a failure refuses to start), then refreshed every [`JWKS_REFRESH`]; a failed refresh keeps the
    /// last good keys and logs why.
    pub async fn from_config(config: &JwtConfig) -> Result<Self, GateError> {
        let jwks = config.jwks.trim();
        if !ward_fetch::is_url(jwks) {
            return Self::new(config);
        }
        check_config(config)?;
        let url = jwks.to_owned();
        let path = PathBuf::from(&url);
        let bytes =
            ward_fetch::fetch(&url, JWKS_FILE_LIMIT as usize, FETCH_TIMEOUT).await.map_err(GateError::JwksFetch)?;
        let (keys, _) = parse_jwks(&path, &bytes)?;
        let keys = Arc::new(ArcSwap::from_pointee(keys));
        tokio::spawn(refresh(url, Arc::downgrade(&keys)));
        Ok(Self { keys, template: Arc::new(template(config)), path })
    }

    /// Verifies one presented token.
    pub fn verify(&self, token: &[u8]) -> Result<(), JwtReason> {
        self.keys.load().verify(token, &self.template)
    }
}

/// How often a JWKS fetched from a URL is fetched again (key rotation at the identity provider).
pub const JWKS_REFRESH: Duration = Duration::from_secs(300);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

fn check_config(config: &JwtConfig) -> Result<(), GateError> {
    if config.jwks.trim().is_empty() {
        return Err(GateError::JwtConfigMissing { field: "JWKS (--dapr-api-token-jwks)" });
    }
    if config.issuer.trim().is_empty() {
        return Err(GateError::JwtConfigMissing { field: "issuer (--dapr-api-token-issuer)" });
    }
    if config.audience.trim().is_empty() {
        return Err(GateError::JwtConfigMissing { field: "audience (--dapr-api-token-audience)" });
    }
    Ok(())
}

fn template(config: &JwtConfig) -> Validation {
    let mut template = Validation::new(Algorithm::ES256);
    template.leeway = LEEWAY.as_secs();
    template.validate_exp = true;
    template.validate_nbf = true;
    template.set_issuer(&[config.issuer.trim()]);
    template.set_audience(&[config.audience.trim()]);
    template.set_required_spec_claims(&["exp", "iss", "aud"]);
    template
}

/// Re-fetches a URL JWKS until every verifier holding the keys is gone.
async fn refresh(url: String, target: std::sync::Weak<ArcSwap<KeySet>>) {
    loop {
        tokio::time::sleep(JWKS_REFRESH).await;
        let Some(keys) = target.upgrade() else { return };
        match ward_fetch::fetch(&url, JWKS_FILE_LIMIT as usize, FETCH_TIMEOUT).await {
            Ok(bytes) => match parse_jwks(Path::new(&url), &bytes) {
                Ok((fresh, count)) => {
                    keys.store(Arc::new(fresh));
                    tracing::debug!(url = %url, keys = count, "JWKS refreshed");
                }
                Err(err) => {
                    tracing::error!(url = %url, error = %err, "refreshed JWKS does not parse; keeping the old keys")
                }
            },
            Err(err) => tracing::error!(url = %url, error = %err, "refreshing the JWKS failed; keeping the old keys"),
        }
    }
}

/// The JWKS file or URL `path` as a key set; errors name it.
fn parse_jwks(path: &Path, bytes: &[u8]) -> Result<(KeySet, usize), GateError> {
    match KeySet::parse(&path.display().to_string(), bytes) {
        Ok(keys) => {
            let count = keys.len();
            Ok((keys, count))
        }
        Err(JwksError::Parse(source)) => Err(GateError::JwksParse { path: path.to_path_buf(), source }),
        Err(JwksError::NoUsableKey) => Err(GateError::JwksNoUsableKey { path: path.to_path_buf() }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const ISS: &str = "https://issuer.test";
    const AUD: &str = "ward-sidecar";

    struct Fixture {
        _dir: tempfile::TempDir,
        signing: EncodingKey,
        other: EncodingKey,
        verifier: JwtVerifier,
    }

    fn ec_key() -> EncodingKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap()
    }

    fn public_jwk(key: &EncodingKey, kid: &str) -> serde_json::Value {
        let mut jwk = Jwk::from_encoding_key(key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).unwrap()
    }

    fn fixture(extra_keys: Vec<serde_json::Value>) -> Fixture {
        let signing = ec_key();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let mut keys = vec![public_jwk(&signing, "k1")];
        keys.extend(extra_keys);
        std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
        let config = JwtConfig { jwks: path.display().to_string(), issuer: ISS.into(), audience: AUD.into() };
        let verifier = JwtVerifier::new(&config).unwrap();
        Fixture { _dir: dir, signing, other: ec_key(), verifier }
    }

    fn now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn claims(exp: i64, nbf: i64, iss: &str, aud: &str) -> serde_json::Value {
        json!({ "sub": "app", "exp": exp, "nbf": nbf, "iss": iss, "aud": aud })
    }

    fn es256(key: &EncodingKey, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn unsigned(header: serde_json::Value, claims: &serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{h}.{c}.")
    }

    /// The JWKS served over HTTP on loopback: fetched at start, tokens verified against it; an unreachable URL
    /// refuses to start.
    #[tokio::test]
    async fn jwks_from_a_url() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let signing = ec_key();
        let body = json!({ "keys": [public_jwk(&signing, "k1")] }).to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 2048];
                let _ = tcp.read(&mut buf).await;
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                let _ = tcp.write_all(reply.as_bytes()).await;
            }
        });
        let config = JwtConfig { jwks: format!("http://{addr}/jwks.json"), issuer: ISS.into(), audience: AUD.into() };
        let verifier = JwtVerifier::from_config(&config).await.unwrap();
        let t = now();
        assert_eq!(verifier.verify(es256(&signing, Some("k1"), &claims(t + 300, t - 10, ISS, AUD)).as_bytes()), Ok(()));
        assert!(verifier.verify(es256(&ec_key(), Some("k1"), &claims(t + 300, t - 10, ISS, AUD)).as_bytes()).is_err());
        let gone = JwtConfig { jwks: "http://127.0.0.1:1/jwks.json".into(), issuer: ISS.into(), audience: AUD.into() };
        assert!(matches!(JwtVerifier::from_config(&gone).await, Err(GateError::JwksFetch(_))));
        let insecure =
            JwtConfig { jwks: "http://idp.example/jwks.json".into(), issuer: ISS.into(), audience: AUD.into() };
        assert!(matches!(JwtVerifier::from_config(&insecure).await, Err(GateError::JwksFetch(_))));
    }

    #[tokio::test]
    async fn jwt_cases() {
        let f = fixture(vec![json!({ "kty": "oct", "k": URL_SAFE_NO_PAD.encode("guessable"), "kid": "hmac" })]);
        let t = now();
        let good = claims(t + 300, t - 10, ISS, AUD);
        let hs = |secret: &[u8]| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &good, &EncodingKey::from_secret(secret)).unwrap()
        };
        let cases: Vec<(&str, String, Result<(), JwtReason>)> = vec![
            ("valid with kid", es256(&f.signing, Some("k1"), &good), Ok(())),
            ("valid without kid", es256(&f.signing, None, &good), Ok(())),
            ("array aud", es256(&f.signing, None, &json!({"exp": t + 300, "iss": ISS, "aud": ["x", AUD]})), Ok(())),
            ("expired within leeway", es256(&f.signing, None, &claims(t - 30, t - 100, ISS, AUD)), Ok(())),
            ("expired", es256(&f.signing, None, &claims(t - 120, t - 300, ISS, AUD)), Err(JwtReason::Expired)),
            (
                "not yet valid",
                es256(&f.signing, None, &claims(t + 600, t + 120, ISS, AUD)),
                Err(JwtReason::NotYetValid),
            ),
            ("wrong aud", es256(&f.signing, None, &claims(t + 300, t, ISS, "other")), Err(JwtReason::WrongAudience)),
            (
                "wrong iss",
                es256(&f.signing, None, &claims(t + 300, t, "https://evil", AUD)),
                Err(JwtReason::WrongIssuer),
            ),
            ("no exp", es256(&f.signing, None, &json!({"iss": ISS, "aud": AUD})), Err(JwtReason::MissingClaim)),
            ("bad signature", es256(&f.other, Some("k1"), &good), Err(JwtReason::BadSignature)),
            ("bad signature no kid", es256(&f.other, None, &good), Err(JwtReason::BadSignature)),
            ("alg none", unsigned(json!({"alg": "none", "typ": "JWT"}), &good), Err(JwtReason::AlgNotAllowed)),
            ("alg None", unsigned(json!({"alg": "None"}), &good), Err(JwtReason::AlgNotAllowed)),
            ("HS256 guessed secret", hs(b"secret"), Err(JwtReason::AlgNotAllowed)),
            ("HS256 with the oct key from the JWKS", hs(b"guessable"), Err(JwtReason::AlgNotAllowed)),
            ("unknown kid", es256(&f.signing, Some("nope"), &good), Err(JwtReason::UnknownKid)),
            ("kid of the ignored oct key", es256(&f.signing, Some("hmac"), &good), Err(JwtReason::UnknownKid)),
            (
                "ES384 header on a P-256 key",
                {
                    let mut tok = es256(&f.signing, Some("k1"), &good);
                    let rest = tok.split_off(tok.find('.').unwrap());
                    URL_SAFE_NO_PAD.encode(json!({"alg": "ES384", "kid": "k1"}).to_string()) + &rest
                },
                Err(JwtReason::AlgNotAllowed),
            ),
            ("not a jwt", "plain-static-token".into(), Err(JwtReason::Malformed)),
            ("five parts (JWE)", "a.b.c.d.e".into(), Err(JwtReason::Malformed)),
            ("garbage header", "!!!.e30.x".into(), Err(JwtReason::Malformed)),
        ];
        for (name, token, expected) in cases {
            assert_eq!(f.verifier.verify(token.as_bytes()), expected, "case {name}");
        }
    }

    #[tokio::test]
    async fn startup_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |jwks: &str| JwtConfig { jwks: jwks.into(), issuer: ISS.into(), audience: AUD.into() };
        assert!(matches!(JwtVerifier::new(&cfg("https://idp/jwks")), Err(GateError::JwksUrlUnsupported { .. })));
        assert!(matches!(JwtVerifier::new(&cfg("HTTP://idp/jwks")), Err(GateError::JwksUrlUnsupported { .. })));
        let missing = dir.path().join("missing.json");
        assert!(matches!(JwtVerifier::new(&cfg(&missing.display().to_string())), Err(GateError::FileRead { .. })));
        let only_oct = dir.path().join("oct.json");
        std::fs::write(&only_oct, json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string()).unwrap();
        assert!(matches!(
            JwtVerifier::new(&cfg(&only_oct.display().to_string())),
            Err(GateError::JwksNoUsableKey { .. })
        ));
        let not_json = dir.path().join("bad.json");
        std::fs::write(&not_json, "{").unwrap();
        assert!(matches!(JwtVerifier::new(&cfg(&not_json.display().to_string())), Err(GateError::JwksParse { .. })));
        let mut no_iss = cfg(&only_oct.display().to_string());
        no_iss.issuer = " ".into();
        assert!(matches!(JwtVerifier::new(&no_iss), Err(GateError::JwtConfigMissing { .. })));
    }

    /// A verified token is remembered, but its `exp` is checked again on every use.
    #[test]
    fn a_remembered_token_still_expires() {
        let key = ec_key();
        let jwks = json!({ "keys": [public_jwk(&key, "k1")] }).to_string();
        let keys = KeySet::parse("test", jwks.as_bytes()).unwrap();
        let mut strict = Validation::new(Algorithm::ES256);
        strict.leeway = 0;
        strict.set_issuer(&[ISS]);
        strict.set_audience(&[AUD]);
        let token = es256(&key, Some("k1"), &json!({"iss": ISS, "aud": AUD, "exp": now() + 2}));
        assert_eq!(keys.verify(token.as_bytes(), &strict), Ok(()));
        assert_eq!(keys.verify(token.as_bytes(), &strict), Ok(()), "remembered");
        std::thread::sleep(std::time::Duration::from_millis(3100));
        assert_eq!(keys.verify(token.as_bytes(), &strict), Err(JwtReason::Expired));
        // A forged token with the same claims is never taken for the remembered one.
        let forged = es256(&ec_key(), Some("k1"), &json!({"iss": ISS, "aud": AUD, "exp": now() + 600}));
        assert_eq!(keys.verify(forged.as_bytes(), &strict), Err(JwtReason::BadSignature));
    }

    #[test]
    fn reasons_are_stable() {
        assert_eq!(JwtReason::Expired.to_string(), "jwt_expired");
        assert_eq!(JwtReason::AlgNotAllowed.as_str(), "jwt_alg_not_allowed");
    }
}
