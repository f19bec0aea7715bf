//! Bootstrap-credential validators: how sentry decides that a caller may have the identity it asks for.
//!
//! - `insecure` signs any identity (Dapr's self-hosted default). It exists for local development; sentry logs a
//!   loud warning when it is on and refuses it in production mode.
//! - `join-token`: per-app (or per-namespace) secrets from a file, compared in constant time, so an app cannot
//!   obtain another app's identity.
//! - `jwks`: a JWT whose `sub` is the requested SPIFFE ID and whose `aud` is sentry's own SPIFFE ID, signed by a
//!   key of a JWKS (Dapr's `jwks` validator).
//!
//! This module does not sign anything and does no network I/O.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use subtle::ConstantTimeEq;
use ward_identity::SpiffeId;

/// Which validator a sentry runs with (`--token-validator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidatorKind {
    Insecure,
    JoinToken,
    Jwks,
}

impl std::str::FromStr for ValidatorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "insecure" => Ok(Self::Insecure),
            "join-token" => Ok(Self::JoinToken),
            "jwks" => Ok(Self::Jwks),
            other => Err(format!("unknown token validator {other:?} (expected insecure, join-token or jwks)")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    JoinTokenFile { path: PathBuf, line: usize, message: String },
    #[error("{path}: not a JWKS document: {message}")]
    JwksFile { path: PathBuf, message: String },
}

/// Why a request's credential was refused. Deliberately short: the caller learns nothing about other tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no token was presented")]
    MissingToken,
    #[error("the join token is not valid for {id}")]
    JoinTokenRejected { id: String },
    #[error("the JWT is not valid: {0}")]
    JwtInvalid(String),
    #[error("the JWT subject {sub:?} does not match the requested identity {id}")]
    JwtSubjectMismatch { sub: String, id: String },
}

/// Join tokens, one per line: `<namespace>/<app-id> <token>` or `<namespace>/* <token>` for a whole namespace.
/// Blank lines and lines starting with `#` are ignored. Tokens shorter than 16 characters are refused.
#[derive(Clone, Default)]
pub struct JoinTokens {
    by_app: BTreeMap<(String, String), Vec<Vec<u8>>>,
    by_namespace: BTreeMap<String, Vec<Vec<u8>>>,
}

impl std::fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTokens")
            .field("apps", &self.by_app.len())
            .field("namespaces", &self.by_namespace.len())
            .finish()
    }
}

const MIN_JOIN_TOKEN_LEN: usize = 16;

impl JoinTokens {
    pub fn load(path: &Path) -> Result<Self, ValidatorError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ValidatorError::Io { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|(line, message)| ValidatorError::JoinTokenFile {
            path: path.to_owned(),
            line,
            message,
        })
    }

    /// Parses the file format; errors carry the 1-based line number and never the token.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut tokens = Self::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: &str| (index + 1, message.to_owned());
            let mut fields = line.split_whitespace();
            let (Some(who), Some(token), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(err("expected \"<namespace>/<app-id> <token>\""));
            };
            let Some((namespace, app_id)) = who.split_once('/') else {
                return Err(err("expected \"<namespace>/<app-id>\" before the token"));
            };
            if namespace.is_empty() || app_id.is_empty() {
                return Err(err("namespace and app-id must not be empty"));
            }
            if token.len() < MIN_JOIN_TOKEN_LEN {
                return Err(err("token is shorter than 16 characters"));
            }
            let token = token.as_bytes().to_vec();
            if app_id == "*" {
                tokens.by_namespace.entry(namespace.to_owned()).or_default().push(token);
            } else {
                tokens.by_app.entry((namespace.to_owned(), app_id.to_owned())).or_default().push(token);
            }
        }
        Ok(tokens)
    }

    fn accepts(&self, namespace: &str, app_id: &str, presented: &[u8]) -> bool {
        let app = self.by_app.get(&(namespace.to_owned(), app_id.to_owned()));
        let ns = self.by_namespace.get(namespace);
        // Compare against every candidate (no early exit) so timing does not reveal which entry matched.
        let mut matched = subtle::Choice::from(0);
        for candidate in app.into_iter().flatten().chain(ns.into_iter().flatten()) {
            matched |= candidate.as_slice().ct_eq(presented);
        }
        matched.into()
    }
}

type Keys = Vec<(Option<String>, DecodingKey, Vec<Algorithm>)>;

/// A JWKS validator: keys from a JWKS document (a file, or a URL refreshed in the background), audience =
/// sentry's SPIFFE ID.
#[derive(Clone)]
pub struct JwksValidator {
    keys: std::sync::Arc<arc_swap::ArcSwap<Keys>>,
    audience: String,
}

impl std::fmt::Debug for JwksValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksValidator")
            .field("keys", &self.keys.load().len())
            .field("audience", &self.audience)
            .finish()
    }
}

/// Allowed clock skew for JWT `exp`/`nbf`, as Dapr's jwks validator (5 minutes).
const JWT_LEEWAY_SECS: u64 = 300;

/// The algorithms a key may be used with. Symmetric keys are never accepted: a JWKS is public, and an HMAC key
/// published in it would let anyone mint tokens.
fn algorithms_for(jwk: &Jwk) -> Vec<Algorithm> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            jsonwebtoken::jwk::EllipticCurve::P256 => vec![Algorithm::ES256],
            jsonwebtoken::jwk::EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        _ => Vec::new(),
    }
}

impl JwksValidator {
    pub fn load(path: &Path, audience: &SpiffeId) -> Result<Self, ValidatorError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ValidatorError::Io { path: path.to_owned(), source })?;
        Self::from_json(&text, audience).map_err(|message| ValidatorError::JwksFile { path: path.to_owned(), message })
    }

    /// Fetches the JWKS from an `https://` URL (or `http://` to loopback); refresh with [`Self::refresh_every`].
    pub async fn from_url(url: &str, audience: &SpiffeId) -> Result<Self, ValidatorError> {
        let bytes = ward_fetch::fetch(url, JWKS_LIMIT, std::time::Duration::from_secs(10))
            .await
            .map_err(|err| ValidatorError::JwksFile { path: PathBuf::from(url), message: err.to_string() })?;
        let text = String::from_utf8_lossy(&bytes);
        Self::from_json(&text, audience)
            .map_err(|message| ValidatorError::JwksFile { path: PathBuf::from(url), message })
    }

    /// Re-fetches `url` every `period` while the validator lives; a failure keeps the last good keys.
    pub fn refresh_every(&self, url: String, period: std::time::Duration) {
        let keys = std::sync::Arc::downgrade(&self.keys);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(target) = keys.upgrade() else { return };
                let fetched = ward_fetch::fetch(&url, JWKS_LIMIT, std::time::Duration::from_secs(10)).await;
                match fetched.map_err(|e| e.to_string()).and_then(|b| parse_keys(&String::from_utf8_lossy(&b))) {
                    Ok(fresh) => target.store(std::sync::Arc::new(fresh)),
                    Err(err) => {
                        tracing::error!(url = %url, error = %err, "refreshing the JWKS failed; keeping the old keys")
                    }
                }
            }
        });
    }

    pub fn from_json(json: &str, audience: &SpiffeId) -> Result<Self, String> {
        let keys = parse_keys(json)?;
        Ok(Self { keys: std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(keys)), audience: audience.to_string() })
    }
}

impl JwksValidator {
    fn validate(&self, token: &str, id: &SpiffeId) -> Result<(), CredentialError> {
        #[derive(serde::Deserialize)]
        struct Claims {
            sub: String,
        }
        let header = jsonwebtoken::decode_header(token).map_err(|err| CredentialError::JwtInvalid(err.to_string()))?;
        let keys = self.keys.load();
        let candidates = keys.iter().filter(|(kid, _, algs)| {
            algs.contains(&header.alg) && (header.kid.is_none() || kid.is_none() || *kid == header.kid)
        });
        let mut last_error = "no key in the JWKS matches the token's kid and algorithm".to_owned();
        for (_, key, _) in candidates {
            let mut validation = Validation::new(header.alg);
            validation.leeway = JWT_LEEWAY_SECS;
            validation.validate_nbf = true;
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "sub", "aud"]);
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) if data.claims.sub == id.as_str() => return Ok(()),
                Ok(data) => {
                    return Err(CredentialError::JwtSubjectMismatch { sub: data.claims.sub, id: id.to_string() });
                }
                Err(err) => last_error = err.to_string(),
            }
        }
        Err(CredentialError::JwtInvalid(last_error))
    }
}

const JWKS_LIMIT: usize = 1024 * 1024;

fn parse_keys(json: &str) -> Result<Keys, String> {
    let set: JwkSet = serde_json::from_str(json).map_err(|err| err.to_string())?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algs = algorithms_for(jwk);
        if algs.is_empty() {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|err| err.to_string())?;
        keys.push((jwk.common.key_id.clone(), key, algs));
    }
    if keys.is_empty() {
        return Err("no usable public key (RSA, EC P-256/P-384 or Ed25519)".to_owned());
    }
    Ok(keys)
}

/// The validator a sentry runs with.
#[derive(Debug, Clone)]
pub enum Validator {
    Insecure,
    JoinToken(JoinTokens),
    Jwks(JwksValidator),
}

impl Validator {
    pub fn kind(&self) -> ValidatorKind {
        match self {
            Self::Insecure => ValidatorKind::Insecure,
            Self::JoinToken(_) => ValidatorKind::JoinToken,
            Self::Jwks(_) => ValidatorKind::Jwks,
        }
    }

    /// Checks that `token` entitles its bearer to `id` (namespace and app-id taken from the request).
    pub fn validate(&self, id: &SpiffeId, namespace: &str, app_id: &str, token: &str) -> Result<(), CredentialError> {
        match self {
            Self::Insecure => Ok(()),
            Self::JoinToken(tokens) => {
                if token.is_empty() {
                    return Err(CredentialError::MissingToken);
                }
                if tokens.accepts(namespace, app_id, token.trim().as_bytes()) {
                    Ok(())
                } else {
                    Err(CredentialError::JoinTokenRejected { id: id.to_string() })
                }
            }
            Self::Jwks(jwks) => {
                if token.is_empty() {
                    return Err(CredentialError::MissingToken);
                }
                jwks.validate(token.trim(), id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_token_file_rules() {
        let tokens =
            JoinTokens::parse("# comment\n\ndefault/orders 0123456789abcdef-orders\nprod/* 0123456789abcdef-prod-ns\n")
                .unwrap();
        assert!(tokens.accepts("default", "orders", b"0123456789abcdef-orders"));
        assert!(!tokens.accepts("default", "billing", b"0123456789abcdef-orders"), "another app's token");
        assert!(!tokens.accepts("other", "orders", b"0123456789abcdef-orders"), "another namespace");
        assert!(tokens.accepts("prod", "anything", b"0123456789abcdef-prod-ns"));
        assert!(!tokens.accepts("default", "orders", b"0123456789abcdef-order"), "prefix of a token");
        assert!(!tokens.accepts("default", "orders", b""));

        assert_eq!(JoinTokens::parse("default/orders short").err().map(|e| e.0), Some(1));
        assert_eq!(JoinTokens::parse("\norders 0123456789abcdef0").err().map(|e| e.0), Some(2));
        assert!(JoinTokens::parse("default/orders a b").is_err());
        assert!(JoinTokens::parse("/orders 0123456789abcdef0").is_err());
    }

    #[test]
    fn symmetric_keys_in_a_jwks_are_ignored() {
        let aud = SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").unwrap();
        let only_hmac = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#;
        assert!(JwksValidator::from_json(only_hmac, &aud).is_err());
    }

    /// A P-256 key pair as (JWKS JSON, encoding key), built at test time.
    fn ec_jwks(kid: &str) -> (String, jsonwebtoken::EncodingKey) {
        let key = rcgen::KeyPair::generate().unwrap();
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        // The uncompressed point 0x04 || X || Y is the last 65 bytes of the SPKI.
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let point = &spki[spki.len() - 65..];
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65])}]});
        (jwks.to_string(), encoding)
    }

    fn token(key: &jsonwebtoken::EncodingKey, kid: &str, sub: &str, aud: &str, exp_offset: i64) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let claims = serde_json::json!({"sub": sub, "aud": aud, "exp": now + exp_offset, "iat": now});
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    #[test]
    fn jwks_validator_binds_subject_audience_and_expiry() {
        let sentry = SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").unwrap();
        let orders = SpiffeId::parse("spiffe://public/ns/default/orders").unwrap();
        let (jwks, key) = ec_jwks("k1");
        let validator = Validator::Jwks(JwksValidator::from_json(&jwks, &sentry).unwrap());
        let ok = token(&key, "k1", orders.as_str(), sentry.as_str(), 600);
        assert_eq!(validator.validate(&orders, "default", "orders", &ok), Ok(()));
        let billing = SpiffeId::parse("spiffe://public/ns/default/billing").unwrap();
        assert!(matches!(
            validator.validate(&billing, "default", "billing", &ok),
            Err(CredentialError::JwtSubjectMismatch { .. })
        ));
        let wrong_aud = token(&key, "k1", orders.as_str(), "spiffe://public/ns/default/other", 600);
        assert!(validator.validate(&orders, "default", "orders", &wrong_aud).is_err());
        let expired = token(&key, "k1", orders.as_str(), sentry.as_str(), -3600);
        assert!(validator.validate(&orders, "default", "orders", &expired).is_err());
        let (_, other_key) = ec_jwks("k1");
        let forged = token(&other_key, "k1", orders.as_str(), sentry.as_str(), 600);
        assert!(validator.validate(&orders, "default", "orders", &forged).is_err());
        assert_eq!(validator.validate(&orders, "default", "orders", ""), Err(CredentialError::MissingToken));
    }

    #[tokio::test]
    async fn jwks_from_a_url_is_fetched_and_used() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sentry = SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").unwrap();
        let orders = SpiffeId::parse("spiffe://public/ns/default/orders").unwrap();
        let (jwks, key) = ec_jwks("k1");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 2048];
                let _ = tcp.read(&mut buf).await;
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{jwks}", jwks.len());
                let _ = tcp.write_all(reply.as_bytes()).await;
            }
        });
        let validator =
            Validator::Jwks(JwksValidator::from_url(&format!("http://{addr}/jwks.json"), &sentry).await.unwrap());
        let ok = token(&key, "k1", orders.as_str(), sentry.as_str(), 600);
        assert_eq!(validator.validate(&orders, "default", "orders", &ok), Ok(()));
        assert!(
            JwksValidator::from_url("http://idp.example/jwks.json", &sentry).await.is_err(),
            "plain http off loopback"
        );
    }

    #[test]
    fn validator_kind_parses() {
        assert_eq!("join-token".parse::<ValidatorKind>(), Ok(ValidatorKind::JoinToken));
        assert!("kubernetes".parse::<ValidatorKind>().is_err());
    }
}
