//! The provenance token (issue 15, layer four of the trust chain): proof, for an app, that a request passed through
//! its own sidecar. The sidecar signs one short-lived compact JWS per request it hands the app (header
//! `ward-provenance`, gRPC metadata of the same name) with a key that exists only in that sidecar's memory; the app
//! fetches the public half from its sidecar (`GET /v1.0-alpha1/ward/provenance/jwks`) and calls [`verify`].
//!
//! Owns: the token format ([`Claims`], ES256, `kid` = RFC 7638 thumbprint, `typ` = [`TOKEN_TYPE`]), key generation
//! and signing ([`SigningKey`], used by the sidecar), the JWKS document ([`Jwks`]), and verification with its typed
//! refusals ([`ProvenanceError`]), including replay detection within a token's lifetime ([`ReplayCache`]).
//!
//! Does not own: when a token is minted or what goes in it (the sidecar's inbound stack decides), key rotation (the
//! sidecar rotates with its SVID), fetching the JWKS (an app does that over loopback with its API token), clocks
//! (callers of [`verify_at`] pass the time; [`verify`] reads the system clock).
//!
//! A verifier that is handed no token (a request sent straight to the app's port) refuses it:
//! [`ProvenanceError::Missing`]. The Python verifier in `clients/python` (`ward_provenance.verify`) implements the
//! same checks in the same order; keep them in step.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// The header (and gRPC metadata key) that carries the token to the app.
pub const HEADER: &str = "ward-provenance";
/// The JWS `typ`: a provenance token is not any other kind of JWT.
pub const TOKEN_TYPE: &str = "ward-provenance+jwt";
/// The only signature algorithm.
pub const ALGORITHM: &str = "ES256";
/// The longest lifetime a token may claim (`exp - iat`), in seconds.
pub const MAX_LIFETIME_SECS: u64 = 60;
/// The lifetime the sidecar gives its tokens, in seconds.
pub const LIFETIME_SECS: u64 = 30;
/// Clock difference tolerated between the sidecar and the app (they share a host), in seconds.
pub const LEEWAY_SECS: u64 = 2;
/// Most `jti`s one [`ReplayCache`] remembers; beyond, verification fails closed ([`ProvenanceError::ReplayCacheFull`]).
pub const REPLAY_CACHE_CAPACITY: usize = 1 << 20;
/// Longest token accepted, in bytes (a token is a few hundred bytes; this bounds the work an attacker can cause).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The claims of a provenance token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The sidecar's SPIFFE ID.
    pub iss: String,
    /// The verified caller's SPIFFE ID, or `dev:<app-id>` in development mode.
    pub sub: String,
    /// The callee app id.
    pub aud: String,
    /// The capabilities the applying routes required and the caller holds (always present, possibly empty).
    pub cap: Vec<String>,
    /// The HTTP method (`POST` for gRPC).
    pub htm: String,
    /// The normalised path the ACL judged, with a leading `/` and without the query (gRPC: the full method path).
    pub htu: String,
    pub iat: u64,
    pub exp: u64,
    /// Unique per request.
    pub jti: String,
    /// `true` in development mode; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// One public key of a [`Jwks`] (RFC 7517, EC P-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub kid: String,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
}

/// The document `GET /v1.0-alpha1/ward/provenance/jwks` returns: the sidecar's current key and, after a rotation,
/// the previous one (so that tokens minted just before the rotation still verify until they expire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Why a token was refused, or could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvenanceError {
    /// No token: the request did not come through the sidecar.
    #[error("no provenance token: the request did not come through the sidecar")]
    Missing,
    /// Not a compact JWS of the expected shape.
    #[error("malformed provenance token: {reason}")]
    Malformed { reason: &'static str },
    /// The header names an algorithm or type other than ES256 / `ward-provenance+jwt`.
    #[error("provenance token has alg {alg:?} typ {typ:?} (expected ES256, {TOKEN_TYPE})")]
    UnsupportedAlgorithm { alg: String, typ: String },
    /// No key of the JWKS has the token's `kid` (fetch the JWKS again: the sidecar may have rotated its key).
    #[error("provenance token signed by unknown key {kid:?}")]
    UnknownKey { kid: String },
    /// The signature does not verify.
    #[error("provenance token signature is invalid")]
    BadSignature,
    #[error("provenance token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    /// Issued in the future, or claims a lifetime beyond [`MAX_LIFETIME_SECS`].
    #[error("provenance token times are invalid (iat {iat}, exp {exp}, now {now})")]
    InvalidTimes { iat: u64, exp: u64, now: u64 },
    #[error("provenance token is for app {got:?}, not {expected:?}")]
    WrongAudience { expected: String, got: String },
    #[error("provenance token is for method {got:?}, not {expected:?}")]
    MethodMismatch { expected: String, got: String },
    #[error("provenance token is for path {got:?}, not {expected:?}")]
    PathMismatch { expected: String, got: String },
    /// A development-mode token reached a verifier in production mode.
    #[error("development provenance token refused in production")]
    DevTokenInProduction,
    /// The token's `jti` was seen before within its lifetime.
    #[error("provenance token {jti:?} was already used")]
    Replayed { jti: String },
    /// The replay cache is full of live entries: fail closed rather than forget one.
    #[error("replay cache is full ({capacity} live tokens)")]
    ReplayCacheFull { capacity: usize },
    /// Key generation or signing failed (the sidecar refuses the request).
    #[error("provenance signing failed: {0}")]
    Signing(&'static str),
}

/// A signing key that exists only in memory. One per sidecar, replaced when its SVID renews.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    jwk: Jwk,
    /// `base64url(header) + "."`, computed once.
    header_prefix: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.jwk.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh P-256 key from the operating system's random source.
    pub fn generate() -> Result<Self, ProvenanceError> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| ProvenanceError::Signing("key generation"))?;
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|_| ProvenanceError::Signing("key generation"))?;
        let point = pair.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
        let (x, y) = match (point.first(), point.get(1..33), point.get(33..65)) {
            (Some(4), Some(x), Some(y)) => (B64.encode(x), B64.encode(y)),
            _ => return Err(ProvenanceError::Signing("unexpected public key encoding")),
        };
        let kid = thumbprint(&x, &y);
        let header = Header { alg: ALGORITHM.to_owned(), typ: TOKEN_TYPE.to_owned(), kid: kid.clone() };
        let header_json = serde_json::to_vec(&header).map_err(|_| ProvenanceError::Signing("header"))?;
        let header_prefix = format!("{}.", B64.encode(header_json));
        let jwk = Jwk {
            kty: "EC".to_owned(),
            crv: "P-256".to_owned(),
            x,
            y,
            kid,
            alg: Some(ALGORITHM.to_owned()),
            use_: Some("sig".to_owned()),
        };
        Ok(Self { pair, rng, jwk, header_prefix })
    }

    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The public key, for the JWKS.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Signs `claims` into a compact JWS.
    pub fn mint(&self, claims: &Claims) -> Result<String, ProvenanceError> {
        let payload = serde_json::to_vec(claims).map_err(|_| ProvenanceError::Signing("claims"))?;
        let mut token = String::with_capacity(self.header_prefix.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.header_prefix);
        B64.encode_string(payload, &mut token);
        let sig = self.pair.sign(&self.rng, token.as_bytes()).map_err(|_| ProvenanceError::Signing("sign"))?;
        token.push('.');
        B64.encode_string(sig.as_ref(), &mut token);
        Ok(token)
    }
}

/// A `jti` no other token of this process carries (128 bits, base64url): 64 random bits drawn once per process,
/// then a counter. A `jti` needs to be unique, not unpredictable (the signature is what cannot be forged), and a
/// `getrandom` call per token was a system call on every request; a restarted sidecar draws new bits (and has a
/// new key anyway).
pub fn new_jti() -> Result<String, ProvenanceError> {
    static PREFIX: std::sync::OnceLock<Option<[u8; 8]>> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes).ok().map(|()| bytes)
    });
    let Some(prefix) = prefix else { return Err(ProvenanceError::Signing("rng")) };
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(prefix);
    bytes[8..].copy_from_slice(&count.to_be_bytes());
    Ok(B64.encode(bytes))
}

/// RFC 7638 JWK thumbprint of an EC P-256 key.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    B64.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The verified caller (`sub`): a SPIFFE ID, or `dev:<app-id>` for a development token.
    pub caller: String,
    pub capabilities: Vec<String>,
    pub dev: bool,
    /// All claims, for logging or further checks.
    pub claims: Claims,
}

/// What the request the app received must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request's method (any case).
    pub method: &'a str,
    /// The request path as the app received it (a query string is ignored; percent-encoding is decoded once).
    pub path: &'a str,
    /// The app's own id.
    pub audience: &'a str,
    /// Refuse development tokens.
    pub production: bool,
}

/// `jti`s seen and still within their lifetime.
#[derive(Debug)]
pub struct ReplayCache {
    seen: Mutex<HashMap<String, u64>>,
    capacity: usize,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::with_capacity(REPLAY_CACHE_CAPACITY)
    }
}

impl ReplayCache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { seen: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// The process-wide cache [`verify`] uses.
    pub fn global() -> &'static ReplayCache {
        static GLOBAL: OnceLock<ReplayCache> = OnceLock::new();
        GLOBAL.get_or_init(ReplayCache::default)
    }

    /// Records `jti` (valid until `exp`); `Err` if it was seen before and has not expired.
    fn check_and_insert(&self, jti: &str, exp: u64, now: u64) -> Result<(), ProvenanceError> {
        // A poisoned lock means a panic elsewhere while holding it; the map itself is still consistent.
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&until) = seen.get(jti)
            && until.saturating_add(LEEWAY_SECS) >= now
        {
            return Err(ProvenanceError::Replayed { jti: jti.to_owned() });
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| until.saturating_add(LEEWAY_SECS) >= now);
            if seen.len() >= self.capacity {
                return Err(ProvenanceError::ReplayCacheFull { capacity: self.capacity });
            }
        }
        seen.insert(jti.to_owned(), exp);
        Ok(())
    }
}

/// Verifies `token` against the request the app received and the sidecar's `jwks`, with the system clock and the
/// process-wide [`ReplayCache::global`]. `None` or an empty token is [`ProvenanceError::Missing`].
pub fn verify(
    token: Option<&str>,
    method: &str,
    path: &str,
    audience: &str,
    jwks: &Jwks,
    production: bool,
) -> Result<Verified, ProvenanceError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    verify_at(token, &Expected { method, path, audience, production }, jwks, now, ReplayCache::global())
}

/// [`verify`] with an explicit time (Unix seconds) and replay cache. Checks, in order: present, shape, algorithm,
/// key, signature, times, audience, development mode, method, path, then replay (a token is remembered only once
/// every other check passed).
pub fn verify_at(
    token: Option<&str>,
    expected: &Expected<'_>,
    jwks: &Jwks,
    now: u64,
    replay: &ReplayCache,
) -> Result<Verified, ProvenanceError> {
    let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or(ProvenanceError::Missing)?;
    let malformed = |reason| ProvenanceError::Malformed { reason };
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("not three dot-separated parts"));
    };
    let header: Header = B64
        .decode(h64)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| malformed("header"))?;
    if header.alg != ALGORITHM || header.typ != TOKEN_TYPE {
        return Err(ProvenanceError::UnsupportedAlgorithm { alg: header.alg, typ: header.typ });
    }
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kid == header.kid)
        .ok_or_else(|| ProvenanceError::UnknownKey { kid: header.kid.clone() })?;
    let point = public_point(jwk).ok_or_else(|| malformed("JWKS key is not an EC P-256 key"))?;
    let sig = B64.decode(s64).map_err(|_| malformed("signature encoding"))?;
    let signed_len = h64.len() + 1 + p64.len();
    let signed = token.get(..signed_len).ok_or_else(|| malformed("signed part"))?;
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| ProvenanceError::BadSignature)?;
    let claims: Claims = B64
        .decode(p64)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| malformed("claims"))?;

    if claims.exp <= claims.iat
        || claims.exp - claims.iat > MAX_LIFETIME_SECS
        || claims.iat > now.saturating_add(LEEWAY_SECS)
    {
        return Err(ProvenanceError::InvalidTimes { iat: claims.iat, exp: claims.exp, now });
    }
    if now >= claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(ProvenanceError::Expired { exp: claims.exp, now });
    }
    if claims.aud != expected.audience {
        return Err(ProvenanceError::WrongAudience { expected: expected.audience.to_owned(), got: claims.aud });
    }
    let dev = claims.dev == Some(true);
    if dev && expected.production {
        return Err(ProvenanceError::DevTokenInProduction);
    }
    if !claims.htm.eq_ignore_ascii_case(expected.method) {
        return Err(ProvenanceError::MethodMismatch { expected: expected.method.to_owned(), got: claims.htm });
    }
    if !path_matches(&claims.htu, expected.path) {
        return Err(ProvenanceError::PathMismatch { expected: expected.path.to_owned(), got: claims.htu });
    }
    replay.check_and_insert(&claims.jti, claims.exp, now)?;
    Ok(Verified { caller: claims.sub.clone(), capabilities: claims.cap.clone(), dev, claims })
}

/// `0x04 || x || y` from a JWK, if it is an EC P-256 key with 32-byte coordinates.
fn public_point(jwk: &Jwk) -> Option<Vec<u8>> {
    if jwk.kty != "EC" || jwk.crv != "P-256" {
        return None;
    }
    let x = B64.decode(&jwk.x).ok().filter(|x| x.len() == 32)?;
    let y = B64.decode(&jwk.y).ok().filter(|y| y.len() == 32)?;
    let mut point = Vec::with_capacity(65);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Some(point)
}

/// The app's request path (query dropped) names the token's `htu`, as received or decoded once (the sidecar
/// percent-encodes what it forwards so that one decoding gives exactly the path it judged).
fn path_matches(htu: &str, received: &str) -> bool {
    let path = received.split(['?', '#']).next().unwrap_or_default();
    if path == htu {
        return true;
    }
    percent_decode(path).is_some_and(|decoded| decoded == htu)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
