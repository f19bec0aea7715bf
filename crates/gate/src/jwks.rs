//! JSON Web Key Sets and JWT signature verification, shared by the API token's JWT mode (`jwt.rs`) and the
//! bearer middleware (`ward-middleware`).
//!
//! Owned here: which keys of a JWKS may verify a token, the algorithms each allows (from the key, never from the
//! token: RSA → RS256/384/512 and PS256/384/512, EC P-256 → ES256, EC P-384 → ES384, OKP Ed25519 → EdDSA), and
//! verifying one token against a set with a caller-supplied [`Validation`] (issuers, audiences, leeway, required
//! claims). `none` and HMAC are never accepted: a JWKS is public, so an HMAC "secret" taken from it would let
//! anyone mint tokens (the classic key-confusion attack); `oct` keys are skipped.
//! Not owned here: where a JWKS comes from (a watched file, a URL), refreshing it, and what a failure looks like on
//! the wire.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// RSA keys below this size are ignored (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

const RSA_ALGS: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

/// Why a JWT was refused; stable short strings for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtReason {
    /// Not three base64url parts with a JSON header, or claims that are not JSON.
    Malformed,
    /// `alg` is `none`, HMAC, unknown, or not allowed for the selected key.
    AlgNotAllowed,
    /// The header names a `kid` the JWKS does not hold.
    UnknownKid,
    /// The signature does not verify with any candidate key.
    BadSignature,
    /// `exp` is more than the leeway in the past.
    Expired,
    /// `nbf` is more than the leeway in the future.
    NotYetValid,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    WrongAudience,
    /// `exp`, `iss` or `aud` is absent, or has the wrong type.
    MissingClaim,
}

impl JwtReason {
    /// A stable short string for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed => "jwt_malformed",
            Self::AlgNotAllowed => "jwt_alg_not_allowed",
            Self::UnknownKid => "jwt_unknown_kid",
            Self::BadSignature => "jwt_bad_signature",
            Self::Expired => "jwt_expired",
            Self::NotYetValid => "jwt_not_yet_valid",
            Self::WrongIssuer => "jwt_wrong_issuer",
            Self::WrongAudience => "jwt_wrong_audience",
            Self::MissingClaim => "jwt_missing_claim",
        }
    }

    /// Which failure says most: one past the signature check beats a signature failure (it proves the key).
    fn rank(&self) -> u8 {
        match self {
            Self::BadSignature | Self::AlgNotAllowed => 0,
            _ => 1,
        }
    }
}

impl fmt::Display for JwtReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One usable public key.
struct VerifyKey {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

/// The keys of one JWKS that may verify a token, and the tokens they verified recently.
///
/// A signature check costs tens of microseconds (ECDSA and RSA verification), and clients send the same token on
/// every call for its whole lifetime, so a verified token is remembered (at most [`VERIFIED_CACHE_MAX`]) with its
/// `exp`/`nbf`, which are checked again on every later use. The memory belongs to this key set: a refresh that
/// replaces the set (key rotation, a key withdrawn) forgets every token at once. A key set serves one verifier, so
/// every check it remembers was made with the same [`Validation`].
pub struct KeySet {
    keys: Vec<VerifyKey>,
    verified: std::sync::Mutex<std::collections::HashMap<Box<[u8]>, TimeBounds>>,
}

/// How many verified tokens a key set remembers; when full it starts over.
pub const VERIFIED_CACHE_MAX: usize = 4096;

/// The time claims of a verified token.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct TimeBounds {
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
}

impl TimeBounds {
    fn check(&self, leeway: u64) -> Result<(), JwtReason> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let leeway = leeway as f64;
        if self.exp.is_some_and(|exp| now > exp + leeway) {
            return Err(JwtReason::Expired);
        }
        if self.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(JwtReason::NotYetValid);
        }
        Ok(())
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("kids", &self.keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>()).finish()
    }
}

/// Why a JWKS document is not usable.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("the JWKS holds no key usable for verifying signatures (RSA >= 2048 bits, EC P-256/P-384, Ed25519)")]
    NoUsableKey,
}

impl KeySet {
    /// Parses a JWKS, keeping only keys that may verify a token. One odd key is skipped with a warning naming
    /// `source` rather than failing the set (JWKS endpoints often carry encryption keys too); a set with no usable
    /// key is an error.
    pub fn parse(source: &str, bytes: &[u8]) -> Result<KeySet, JwksError> {
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet = serde_json::from_slice(bytes).map_err(JwksError::Parse)?;
        let mut keys = Vec::new();
        for (index, raw_key) in raw.keys.into_iter().enumerate() {
            match usable_key(raw_key) {
                Ok(key) => keys.push(key),
                Err(why) => tracing::warn!(jwks = %source, index, why, "ignoring JWKS key"),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(KeySet { keys, verified: Default::default() })
    }

    /// Limits every key to the algorithms in `allowed` (an operator's allow-list); keys left with none are
    /// dropped. An empty set afterwards is [`JwksError::NoUsableKey`].
    pub fn restrict(mut self, allowed: &[Algorithm]) -> Result<KeySet, JwksError> {
        for key in &mut self.keys {
            key.algs.retain(|alg| allowed.contains(alg));
        }
        self.keys.retain(|key| !key.algs.is_empty());
        if self.keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(self)
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a parsed set; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `token` against this set. `template` holds everything but the algorithm (issuers, audiences,
    /// leeway, required claims); the algorithm is the token's, if the selected key allows it. A token with a `kid`
    /// is checked only against the key with that `kid`; one without against every key.
    pub fn verify(&self, token: &[u8], template: &Validation) -> Result<(), JwtReason> {
        let remembered = self.verified.lock().ok().and_then(|cache| cache.get(token).copied());
        if let Some(bounds) = remembered {
            return bounds.check(template.leeway);
        }
        let (alg, kid) = read_header(token)?;
        let candidates = self.keys.iter().filter(|k| match (&kid, &k.kid) {
            (Some(wanted), Some(have)) => wanted == have,
            (Some(_), None) => false,
            (None, _) => true,
        });
        let mut best: Option<JwtReason> = None;
        let mut any_kid_match = false;
        for key in candidates {
            any_kid_match = true;
            if !key.algs.contains(&alg) {
                best = Some(best.unwrap_or(JwtReason::AlgNotAllowed));
                continue;
            }
            let mut validation = template.clone();
            validation.algorithms = vec![alg];
            match jsonwebtoken::decode::<TimeBounds>(token, &key.key, &validation) {
                Ok(data) => {
                    if let Ok(mut cache) = self.verified.lock() {
                        if cache.len() >= VERIFIED_CACHE_MAX {
                            cache.clear();
                        }
                        cache.insert(token.into(), data.claims);
                    }
                    return Ok(());
                }
                Err(err) => {
                    let reason = map_error(err.kind());
                    if best.is_none_or(|b| reason.rank() >= b.rank()) {
                        best = Some(reason);
                    }
                }
            }
        }
        if kid.is_some() && !any_kid_match {
            return Err(JwtReason::UnknownKid);
        }
        Err(best.unwrap_or(JwtReason::AlgNotAllowed))
    }
}

/// Parses an algorithm name of an operator's allow-list (`RS256`, `ES256`, …). `none` and HMAC are refused.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") {
        return None;
    }
    Algorithm::from_str(name).ok()
}

/// Reads `alg` and `kid` from the header ourselves, so `none`, HMAC and unknown algorithms are refused by name
/// before any library decides what they mean.
fn read_header(token: &[u8]) -> Result<(Algorithm, Option<String>), JwtReason> {
    let mut parts = token.split(|b| *b == b'.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtReason::Malformed);
    };
    let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| JwtReason::Malformed)?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| JwtReason::Malformed)?;
    let alg = header.get("alg").and_then(serde_json::Value::as_str).ok_or(JwtReason::Malformed)?;
    if alg.eq_ignore_ascii_case("none") || alg.starts_with("HS") {
        return Err(JwtReason::AlgNotAllowed);
    }
    let alg = Algorithm::from_str(alg).map_err(|_| JwtReason::AlgNotAllowed)?;
    let kid = match header.get("kid") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtReason::Malformed),
    };
    Ok((alg, kid))
}

fn map_error(kind: &ErrorKind) -> JwtReason {
    match kind {
        ErrorKind::ExpiredSignature => JwtReason::Expired,
        ErrorKind::ImmatureSignature => JwtReason::NotYetValid,
        ErrorKind::InvalidIssuer => JwtReason::WrongIssuer,
        ErrorKind::InvalidAudience => JwtReason::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => JwtReason::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => JwtReason::AlgNotAllowed,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => JwtReason::BadSignature,
        _ => JwtReason::Malformed,
    }
}

/// Parses a JWKS, keeping only keys that may verify a token. One odd key is skipped with a warning rather than
/// failing the set (JWKS endpoints often carry encryption keys too); a set with no usable key is an error.
fn usable_key(raw: serde_json::Value) -> Result<VerifyKey, &'static str> {
    let jwk: Jwk = serde_json::from_value(raw).map_err(|_| "not a JWK")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("use is enc");
    }
    let family_algs: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = URL_SAFE_NO_PAD.decode(&rsa.n).map_err(|_| "bad RSA modulus")?;
            let bits = n.iter().position(|b| *b != 0).map_or(0, |first| {
                let rest = n.len() - first - 1;
                rest * 8 + (8 - n[first].leading_zeros() as usize)
            });
            if bits < MIN_RSA_BITS {
                return Err("RSA key shorter than 2048 bits");
            }
            RSA_ALGS.to_vec()
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let x = URL_SAFE_NO_PAD.decode(&ec.x).map_err(|_| "bad EC x")?;
            let y = URL_SAFE_NO_PAD.decode(&ec.y).map_err(|_| "bad EC y")?;
            match (&ec.curve, x.len(), y.len()) {
                (EllipticCurve::P256, 32, 32) => vec![Algorithm::ES256],
                (EllipticCurve::P384, 48, 48) => vec![Algorithm::ES384],
                _ => return Err("unsupported EC curve or bad coordinates"),
            }
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            let x = URL_SAFE_NO_PAD.decode(&okp.x).map_err(|_| "bad OKP x")?;
            match (&okp.curve, x.len()) {
                (EllipticCurve::Ed25519, 32) => vec![Algorithm::EdDSA],
                _ => return Err("unsupported OKP curve"),
            }
        }
        AlgorithmParameters::OctetKey(_) => return Err("oct (HMAC) key: a public JWKS cannot hold a shared secret"),
        _ => return Err("unsupported key type"),
    };
    // A key that names its algorithm is limited to it (RFC 7517 §4.4), if that fits the key type.
    let algs = match jwk.common.key_algorithm {
        None => family_algs,
        Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => return Err("unknown alg"),
        Some(named) => {
            let named = Algorithm::try_from(named).map_err(|_| "alg not usable for signatures")?;
            if !family_algs.contains(&named) {
                return Err("alg does not fit the key type");
            }
            vec![named]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "key material rejected")?;
    Ok(VerifyKey { kid: jwk.common.key_id, algs, key })
}
