//! Bootstrap-credential validators: how sentry decides that a caller may have the identity it asks for on its
//! *first* certificate (renewals authenticate with the current certificate instead; see `server`).
//!
//! - `insecure` signs any identity (Dapr's self-hosted default). It exists for local development; sentry logs a
//!   loud warning when it is on and refuses it in production mode.
//! - `join-token`: per-app (or per-namespace) one-time secrets from a file, compared in constant time, so an app
//!   cannot obtain another app's identity. A token is consumed by the first certificate it buys: the SHA-256 of a
//!   used token is appended (and synced) to a ledger file next to the token file before the certificate leaves
//!   sentry, so a restart does not revive it.
//! - `jwks`: a JWT signed by a key of a JWKS (Dapr's `jwks` validator) whose `sub` is the requested SPIFFE ID,
//!   `iss` the configured issuer, `aud` the configured audience (default: sentry's own SPIFFE ID), with `iat`
//!   required, not in the future, and at most a configured lifetime before `exp`.
//!
//! - `kubernetes`: a pod-bound service-account token, judged by the cluster (`ward-kube` implements
//!   [`NetworkValidator`] for it; it needs the network, so it runs before the blocking part of a request).
//!
//! This module does not sign anything. Its only network I/O is fetching a JWKS from a URL.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use ward_identity::SpiffeId;

/// Which validator a sentry runs with (`--token-validator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidatorKind {
    Insecure,
    JoinToken,
    Jwks,
    /// Dapr's `KUBERNETES` validator (implemented by `ward-kube`; selected by `ward sentry --mode kubernetes`).
    Kubernetes,
}

impl std::str::FromStr for ValidatorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "insecure" => Ok(Self::Insecure),
            "join-token" => Ok(Self::JoinToken),
            "jwks" => Ok(Self::Jwks),
            // Dapr's rule: the built-in kubernetes validator comes with the mode, it is not configured by name.
            "kubernetes" => {
                Err("the kubernetes validator is not chosen by name: run sentry with --mode kubernetes".to_owned())
            }
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
    #[error("{path}:{line}: not a used-token record (expected a SHA-256 in hex)")]
    LedgerFile { path: PathBuf, line: usize },
    #[error("{path}: not a JWKS document: {message}")]
    JwksFile { path: PathBuf, message: String },
    #[error("the jwks validator needs an issuer (--jwks-issuer): without one any issuer's tokens would be accepted")]
    MissingIssuer,
    #[error("the jwks validator needs an audience")]
    MissingAudience,
    #[error("the maximum JWT lifetime must be more than zero")]
    ZeroLifetime,
}

/// Why a request's credential was refused. Deliberately short: the caller learns nothing about other tokens, and
/// a token never appears in a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no token was presented")]
    MissingToken,
    #[error("the join token is not valid for {id}")]
    JoinTokenRejected { id: String },
    #[error(
        "the join token for {id} has already been used; renew with the certificate it bought, or issue a new token"
    )]
    JoinTokenUsed { id: String },
    #[error("recording the join token as used failed; refusing so it cannot be used twice")]
    LedgerWrite,
    #[error("the JWT is not valid: {0}")]
    JwtInvalid(String),
    #[error("the JWT has expired")]
    JwtExpired,
    #[error("the JWT is not valid yet (nbf is in the future)")]
    JwtNotYetValid,
    #[error("the JWT was issued in the future (iat)")]
    JwtIssuedInFuture,
    #[error("the JWT issuer is not the configured one")]
    JwtIssuerMismatch,
    #[error("the JWT audience does not include {expected}")]
    JwtAudienceMismatch { expected: String },
    #[error("the JWT lacks the required claim {0:?}")]
    JwtMissingClaim(String),
    #[error("the JWT lives {lifetime_secs}s from iat to exp; at most {max_secs}s is accepted")]
    JwtLifetimeTooLong { lifetime_secs: u64, max_secs: u64 },
    #[error("the JWT subject {sub:?} does not match the requested identity {id}")]
    JwtSubjectMismatch { sub: String, id: String },
    /// A refusal by a [`NetworkValidator`] (its own words: which check failed, never the token).
    #[error("{0}")]
    Refused(String),
    /// The validator could not reach what it needs (the Kubernetes API): refused, and worth retrying.
    #[error("the credential could not be checked: {0}")]
    Unavailable(String),
}

/// What a bootstrapping caller asks for, as a [`NetworkValidator`] sees it (already checked to be one Dapr name
/// segment each).
#[derive(Debug, Clone, Copy)]
pub struct BootstrapRequest<'a> {
    pub namespace: &'a str,
    pub app_id: &'a str,
    pub token: &'a str,
}

/// What a [`NetworkValidator`] grants: the identity is `spiffe://<trust_domain>/ns/<namespace>/<app-id>`, with
/// `dns_names` as extra DNS SANs (Dapr gives those only to control-plane services that serve TLS to the API server,
/// such as the injector's webhook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub trust_domain: ward_identity::TrustDomain,
    pub dns_names: Vec<String>,
}

pub type ValidationFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Grant, CredentialError>> + Send + 'a>>;

/// A validator that asks someone else (the Kubernetes API) and therefore runs asynchronously, before signing.
/// It also decides the trust domain (Dapr: from the pod's Configuration), which the other validators take from
/// sentry's own configuration.
pub trait NetworkValidator: Send + Sync + std::fmt::Debug {
    fn validate<'a>(&'a self, request: BootstrapRequest<'a>) -> ValidationFuture<'a>;
}

/// One join-token entry. Its SHA-256 is what the ledger records once it is used.
#[derive(Clone)]
struct TokenEntry {
    secret: Vec<u8>,
}

#[derive(Default)]
struct TokenState {
    by_app: BTreeMap<(String, String), Vec<TokenEntry>>,
    by_namespace: BTreeMap<String, Vec<TokenEntry>>,
    used: BTreeSet<[u8; 32]>,
    /// Where used tokens are recorded; `None` for tokens that live only in memory (`ward run`'s, which are
    /// generated afresh by each run).
    ledger: Option<PathBuf>,
}

/// Join tokens, one per line: `<namespace>/<app-id> <token>` or `<namespace>/* <token>` for a whole namespace
/// (any one app of it: every token is single-use). Blank lines and lines starting with `#` are ignored. Tokens
/// shorter than 16 characters are refused. Cheap to clone; clones share the used-token state.
#[derive(Clone, Default)]
pub struct JoinTokens {
    state: Arc<Mutex<TokenState>>,
}

impl std::fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("JoinTokens")
            .field("apps", &state.by_app.len())
            .field("namespaces", &state.by_namespace.len())
            .field("used", &state.used.len())
            .finish()
    }
}

const MIN_JOIN_TOKEN_LEN: usize = 16;

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// The ledger of a token file: `<file>.used` next to it.
pub fn ledger_path(tokens: &Path) -> PathBuf {
    let mut name = tokens.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".used");
    tokens.with_file_name(name)
}

/// A join token that matched and is reserved: other requests wait until it is committed (used) or dropped
/// (released, e.g. because the CSR was bad), so two concurrent requests cannot both spend it.
pub struct Redemption<'a> {
    state: MutexGuard<'a, TokenState>,
    digest: [u8; 32],
}

impl std::fmt::Debug for Redemption<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redemption").finish_non_exhaustive()
    }
}

impl Redemption<'_> {
    /// Marks the token used: first on disk (appended and synced), then in memory. Call it only once the
    /// certificate is signed and just before it is returned.
    pub fn commit(mut self) -> Result<(), ValidatorError> {
        if let Some(path) = &self.state.ledger {
            append_ledger(path, &self.digest)?;
        }
        let digest = self.digest;
        self.state.used.insert(digest);
        Ok(())
    }
}

fn append_ledger(path: &Path, digest: &[u8; 32]) -> Result<(), ValidatorError> {
    let io = |source| ValidatorError::Io { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    let mut line = hex_encode(digest);
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl JoinTokens {
    /// Loads a token file and its ledger (`<file>.used`, see [`ledger_path`]); tokens recorded there stay used.
    pub fn load(path: &Path) -> Result<Self, ValidatorError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ValidatorError::Io { path: path.to_owned(), source })?;
        let tokens = Self::parse(&text).map_err(|(line, message)| ValidatorError::JoinTokenFile {
            path: path.to_owned(),
            line,
            message,
        })?;
        let ledger = ledger_path(path);
        let used = match std::fs::read_to_string(&ledger) {
            Ok(text) => text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim().is_empty())
                .map(|(index, line)| {
                    hex_decode_32(line.trim())
                        .ok_or(ValidatorError::LedgerFile { path: ledger.clone(), line: index + 1 })
                })
                .collect::<Result<BTreeSet<_>, _>>()?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => return Err(ValidatorError::Io { path: ledger, source }),
        };
        {
            let mut state = tokens.lock();
            state.used = used;
            state.ledger = Some(ledger);
        }
        Ok(tokens)
    }

    /// Parses the file format; errors carry the 1-based line number and never the token. The tokens live only in
    /// memory: consumption is not recorded on disk (use [`Self::load`] for that).
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut state = TokenState::default();
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
            let entry = TokenEntry { secret: token.as_bytes().to_vec() };
            if app_id == "*" {
                state.by_namespace.entry(namespace.to_owned()).or_default().push(entry);
            } else {
                state.by_app.entry((namespace.to_owned(), app_id.to_owned())).or_default().push(entry);
            }
        }
        Ok(Self { state: Arc::new(Mutex::new(state)) })
    }

    fn lock(&self) -> MutexGuard<'_, TokenState> {
        // A panic while holding the lock cannot leave the state half-updated (each update is one insert).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Number of tokens recorded as used.
    pub fn used_count(&self) -> usize {
        self.lock().used.len()
    }

    /// Reserves the token if it is valid and unused for `namespace/app_id`.
    pub fn redeem(
        &self,
        id: &SpiffeId,
        namespace: &str,
        app_id: &str,
        presented: &[u8],
    ) -> Result<Redemption<'_>, CredentialError> {
        let state = self.lock();
        let app = state.by_app.get(&(namespace.to_owned(), app_id.to_owned()));
        let ns = state.by_namespace.get(namespace);
        // Compare against every candidate (no early exit) so timing does not reveal which entry matched.
        let mut matched = subtle::Choice::from(0);
        for candidate in app.into_iter().flatten().chain(ns.into_iter().flatten()) {
            matched |= candidate.secret.as_slice().ct_eq(presented);
        }
        if !bool::from(matched) {
            return Err(CredentialError::JoinTokenRejected { id: id.to_string() });
        }
        let digest = digest(presented);
        if state.used.contains(&digest) {
            return Err(CredentialError::JoinTokenUsed { id: id.to_string() });
        }
        Ok(Redemption { state, digest })
    }
}

type Keys = Vec<(Option<String>, DecodingKey, Vec<Algorithm>)>;

/// What a JWT must satisfy besides its signature and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtRules {
    /// The one accepted `iss`.
    pub issuer: String,
    /// The `aud` that must be present (sentry's own SPIFFE ID unless configured).
    pub audience: String,
    /// Longest accepted `exp - iat`.
    pub max_lifetime: Duration,
    /// Tolerance for clocks that disagree, applied to `exp`, `nbf` and `iat`.
    pub skew: Duration,
}

impl JwtRules {
    /// `--jwks-max-token-lifetime`'s default.
    pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (bounded, unlike Dapr's five minutes).
    pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);

    /// Rules with the default lifetime and skew. An empty issuer or audience is refused: either would accept
    /// tokens minted for someone else.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Result<Self, ValidatorError> {
        let (issuer, audience) = (issuer.into(), audience.into());
        if issuer.trim().is_empty() {
            return Err(ValidatorError::MissingIssuer);
        }
        if audience.trim().is_empty() {
            return Err(ValidatorError::MissingAudience);
        }
        Ok(Self { issuer, audience, max_lifetime: Self::DEFAULT_MAX_LIFETIME, skew: Self::DEFAULT_SKEW })
    }

    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Result<Self, ValidatorError> {
        if max_lifetime.is_zero() {
            return Err(ValidatorError::ZeroLifetime);
        }
        self.max_lifetime = max_lifetime;
        Ok(self)
    }
}

/// A JWKS validator: keys from a JWKS document (a file, or a URL refreshed in the background) and the claim
/// rules of [`JwtRules`].
#[derive(Clone)]
pub struct JwksValidator {
    keys: Arc<arc_swap::ArcSwap<Keys>>,
    rules: JwtRules,
}

impl std::fmt::Debug for JwksValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksValidator").field("keys", &self.keys.load().len()).field("rules", &self.rules).finish()
    }
}

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
    pub fn load(path: &Path, rules: JwtRules) -> Result<Self, ValidatorError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ValidatorError::Io { path: path.to_owned(), source })?;
        Self::from_json(&text, rules).map_err(|message| ValidatorError::JwksFile { path: path.to_owned(), message })
    }

    /// Fetches the JWKS from an `https://` URL (or `http://` to loopback); refresh with [`Self::refresh_every`].
    pub async fn from_url(url: &str, rules: JwtRules) -> Result<Self, ValidatorError> {
        let bytes = ward_fetch::fetch(url, JWKS_LIMIT, Duration::from_secs(10))
            .await
            .map_err(|err| ValidatorError::JwksFile { path: PathBuf::from(url), message: err.to_string() })?;
        let text = String::from_utf8_lossy(&bytes);
        Self::from_json(&text, rules).map_err(|message| ValidatorError::JwksFile { path: PathBuf::from(url), message })
    }

    /// Re-fetches `url` every `period` while the validator lives; a failure keeps the last good keys.
    pub fn refresh_every(&self, url: String, period: Duration) {
        let keys = Arc::downgrade(&self.keys);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(target) = keys.upgrade() else { return };
                let fetched = ward_fetch::fetch(&url, JWKS_LIMIT, Duration::from_secs(10)).await;
                match fetched.map_err(|e| e.to_string()).and_then(|b| parse_keys(&String::from_utf8_lossy(&b))) {
                    Ok(fresh) => target.store(Arc::new(fresh)),
                    Err(err) => {
                        tracing::error!(url = %url, error = %err, "refreshing the JWKS failed; keeping the old keys")
                    }
                }
            }
        });
    }

    pub fn from_json(json: &str, rules: JwtRules) -> Result<Self, String> {
        let keys = parse_keys(json)?;
        Ok(Self { keys: Arc::new(arc_swap::ArcSwap::from_pointee(keys)), rules })
    }

    pub fn rules(&self) -> &JwtRules {
        &self.rules
    }

    fn validate(&self, token: &str, id: &SpiffeId) -> Result<(), CredentialError> {
        self.validate_at(token, id, SystemTime::now())
    }

    /// The checks, with the clock as an argument for `iat` (jsonwebtoken reads the clock itself for `exp`/`nbf`).
    fn validate_at(&self, token: &str, id: &SpiffeId, now: SystemTime) -> Result<(), CredentialError> {
        #[derive(serde::Deserialize)]
        // Optional here so that a missing claim is reported by name (jsonwebtoken checks the required ones).
        struct Claims {
            sub: Option<String>,
            exp: Option<u64>,
            iat: Option<u64>,
        }
        let header = jsonwebtoken::decode_header(token).map_err(|err| CredentialError::JwtInvalid(err.to_string()))?;
        let keys = self.keys.load();
        let candidates = keys.iter().filter(|(kid, _, algs)| {
            algs.contains(&header.alg) && (header.kid.is_none() || kid.is_none() || *kid == header.kid)
        });
        let rules = &self.rules;
        let mut last_error =
            CredentialError::JwtInvalid("no key in the JWKS matches the token's kid and algorithm".to_owned());
        for (_, key, _) in candidates {
            let mut validation = Validation::new(header.alg);
            validation.leeway = rules.skew.as_secs();
            validation.validate_nbf = true;
            validation.set_audience(&[&rules.audience]);
            validation.set_issuer(&[&rules.issuer]);
            validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
            let claims = match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => data.claims,
                // Another key of the set may have signed it.
                Err(err) if matches!(err.kind(), ErrorKind::InvalidSignature) => {
                    last_error = CredentialError::JwtInvalid(err.to_string());
                    continue;
                }
                Err(err) => return Err(self.claim_error(err)),
            };
            let (Some(sub), Some(exp)) = (claims.sub, claims.exp) else {
                let missing = if claims.exp.is_none() { "exp" } else { "sub" };
                return Err(CredentialError::JwtMissingClaim(missing.to_owned()));
            };
            let Some(iat) = claims.iat else {
                return Err(CredentialError::JwtMissingClaim("iat".to_owned()));
            };
            let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            if iat > now_secs.saturating_add(rules.skew.as_secs()) {
                return Err(CredentialError::JwtIssuedInFuture);
            }
            let lifetime = exp.saturating_sub(iat);
            if lifetime > rules.max_lifetime.as_secs() {
                return Err(CredentialError::JwtLifetimeTooLong {
                    lifetime_secs: lifetime,
                    max_secs: rules.max_lifetime.as_secs(),
                });
            }
            if sub != id.as_str() {
                return Err(CredentialError::JwtSubjectMismatch { sub, id: id.to_string() });
            }
            return Ok(());
        }
        Err(last_error)
    }

    fn claim_error(&self, err: jsonwebtoken::errors::Error) -> CredentialError {
        match err.kind() {
            ErrorKind::ExpiredSignature => CredentialError::JwtExpired,
            ErrorKind::ImmatureSignature => CredentialError::JwtNotYetValid,
            ErrorKind::InvalidIssuer => CredentialError::JwtIssuerMismatch,
            ErrorKind::InvalidAudience => {
                CredentialError::JwtAudienceMismatch { expected: self.rules.audience.clone() }
            }
            ErrorKind::MissingRequiredClaim(claim) => CredentialError::JwtMissingClaim(claim.clone()),
            _ => CredentialError::JwtInvalid(err.to_string()),
        }
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
    Kubernetes(Arc<dyn NetworkValidator>),
}

/// A credential that passed. A join token stays reserved until [`Approval::commit`] (or is released when the
/// approval is dropped), so "consumed by the first successful CSR" holds under concurrent requests.
#[derive(Debug)]
pub enum Approval<'a> {
    /// Nothing to record (insecure validator, JWT, or an SVID renewal).
    Granted,
    JoinToken(Redemption<'a>),
}

impl Approval<'_> {
    /// Records the approval as spent. For a join token, a failure means the certificate must not be handed out.
    pub fn commit(self) -> Result<(), ValidatorError> {
        match self {
            Self::Granted => Ok(()),
            Self::JoinToken(redemption) => redemption.commit(),
        }
    }
}

impl Validator {
    pub fn kind(&self) -> ValidatorKind {
        match self {
            Self::Insecure => ValidatorKind::Insecure,
            Self::JoinToken(_) => ValidatorKind::JoinToken,
            Self::Jwks(_) => ValidatorKind::Jwks,
            Self::Kubernetes(_) => ValidatorKind::Kubernetes,
        }
    }

    /// Checks that `token` entitles its bearer to `id` (namespace and app-id taken from the request).
    pub fn validate(
        &self,
        id: &SpiffeId,
        namespace: &str,
        app_id: &str,
        token: &str,
    ) -> Result<Approval<'_>, CredentialError> {
        match self {
            Self::Insecure => Ok(Approval::Granted),
            Self::JoinToken(tokens) => {
                if token.is_empty() {
                    return Err(CredentialError::MissingToken);
                }
                tokens.redeem(id, namespace, app_id, token.trim().as_bytes()).map(Approval::JoinToken)
            }
            Self::Jwks(jwks) => {
                if token.is_empty() {
                    return Err(CredentialError::MissingToken);
                }
                jwks.validate(token.trim(), id).map(|()| Approval::Granted)
            }
            // Judged asynchronously before this point (`Ca::handle` is given its grant); reaching here without
            // one is a programming error, refused rather than signed.
            Self::Kubernetes(_) => Err(CredentialError::Refused("the kubernetes validator did not run".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(app: &str) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://public/ns/default/{app}")).unwrap()
    }

    #[test]
    fn join_token_file_rules() {
        let tokens =
            JoinTokens::parse("# comment\n\ndefault/orders 0123456789abcdef-orders\nprod/* 0123456789abcdef-prod-ns\n")
                .unwrap();
        let accepts = |ns: &str, app: &str, token: &[u8]| tokens.redeem(&id(app), ns, app, token).is_ok();
        assert!(accepts("default", "orders", b"0123456789abcdef-orders"));
        assert!(!accepts("default", "billing", b"0123456789abcdef-orders"), "another app's token");
        assert!(!accepts("other", "orders", b"0123456789abcdef-orders"), "another namespace");
        assert!(accepts("prod", "anything", b"0123456789abcdef-prod-ns"));
        assert!(!accepts("default", "orders", b"0123456789abcdef-order"), "prefix of a token");
        assert!(!accepts("default", "orders", b""));

        assert_eq!(JoinTokens::parse("default/orders short").err().map(|e| e.0), Some(1));
        assert_eq!(JoinTokens::parse("\norders 0123456789abcdef0").err().map(|e| e.0), Some(2));
        assert!(JoinTokens::parse("default/orders a b").is_err());
        assert!(JoinTokens::parse("/orders 0123456789abcdef0").is_err());
    }

    #[test]
    fn a_join_token_is_single_use_and_a_released_reservation_is_not_a_use() {
        let tokens = JoinTokens::parse("default/orders 0123456789abcdef-orders\n").unwrap();
        let validator = Validator::JoinToken(tokens.clone());
        let token = "0123456789abcdef-orders";
        // A request that fails after the token check (bad CSR) drops its approval: the token stays usable.
        drop(validator.validate(&id("orders"), "default", "orders", token).unwrap());
        validator.validate(&id("orders"), "default", "orders", token).unwrap().commit().unwrap();
        assert_eq!(
            validator.validate(&id("orders"), "default", "orders", token).unwrap_err(),
            CredentialError::JoinTokenUsed { id: id("orders").to_string() }
        );
        assert_eq!(tokens.used_count(), 1);
        assert_eq!(
            validator.validate(&id("orders"), "default", "orders", "").unwrap_err(),
            CredentialError::MissingToken
        );
    }

    #[test]
    fn used_join_tokens_are_recorded_on_disk_and_stay_used_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "default/orders 0123456789abcdef-orders\ndefault/billing 0123456789abcdef-billing\n")
            .unwrap();
        let tokens = JoinTokens::load(&file).unwrap();
        tokens.redeem(&id("orders"), "default", "orders", b"0123456789abcdef-orders").unwrap().commit().unwrap();
        let ledger = std::fs::read_to_string(ledger_path(&file)).unwrap();
        assert!(!ledger.contains("0123456789abcdef"), "the ledger holds digests, never tokens");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ledger_path(&file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let reloaded = JoinTokens::load(&file).unwrap();
        assert!(matches!(
            reloaded.redeem(&id("orders"), "default", "orders", b"0123456789abcdef-orders"),
            Err(CredentialError::JoinTokenUsed { .. })
        ));
        assert!(reloaded.redeem(&id("billing"), "default", "billing", b"0123456789abcdef-billing").is_ok());

        std::fs::write(ledger_path(&file), "not-a-digest\n").unwrap();
        assert!(matches!(JoinTokens::load(&file), Err(ValidatorError::LedgerFile { line: 1, .. })));
    }

    #[test]
    fn a_ledger_that_cannot_be_written_refuses_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "default/orders 0123456789abcdef-orders\n").unwrap();
        let tokens = JoinTokens::load(&file).unwrap();
        // A directory where the ledger file should be: the append fails.
        std::fs::create_dir(ledger_path(&file)).unwrap();
        let approval = tokens.redeem(&id("orders"), "default", "orders", b"0123456789abcdef-orders").unwrap();
        assert!(approval.commit().is_err());
        assert_eq!(tokens.used_count(), 0, "not recorded in memory either: the caller got no certificate");
    }

    #[test]
    fn symmetric_keys_in_a_jwks_are_ignored() {
        let only_hmac = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#;
        assert!(JwksValidator::from_json(only_hmac, rules()).is_err());
    }

    #[test]
    fn jwt_rules_refuse_an_empty_issuer_audience_or_lifetime() {
        assert!(matches!(JwtRules::new("", "aud"), Err(ValidatorError::MissingIssuer)));
        assert!(matches!(JwtRules::new(" ", "aud"), Err(ValidatorError::MissingIssuer)));
        assert!(matches!(JwtRules::new("iss", ""), Err(ValidatorError::MissingAudience)));
        assert!(matches!(
            JwtRules::new("iss", "aud").unwrap().with_max_lifetime(Duration::ZERO),
            Err(ValidatorError::ZeroLifetime)
        ));
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

    const ISSUER: &str = "https://idp.example";
    const SENTRY: &str = "spiffe://public/ns/default/dapr-sentry";

    fn rules() -> JwtRules {
        JwtRules::new(ISSUER, SENTRY).unwrap()
    }

    fn now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn sign(key: &jsonwebtoken::EncodingKey, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".to_owned());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn token(key: &jsonwebtoken::EncodingKey, sub: &str, aud: &str, exp_offset: i64) -> String {
        let now = now();
        sign(key, &serde_json::json!({"iss": ISSUER, "sub": sub, "aud": aud, "exp": now + exp_offset, "iat": now}))
    }

    /// Row 13: every claim rule, one case each, compared by exact error.
    #[test]
    fn jwks_claims_table() {
        struct Case {
            name: &'static str,
            claims: serde_json::Value,
            expected: Result<(), CredentialError>,
        }
        let orders = id("orders");
        let (jwks, key) = ec_jwks("k1");
        let validator = Validator::Jwks(JwksValidator::from_json(&jwks, rules()).unwrap());
        let now = now();
        let sub = orders.as_str();
        let cases = [
            Case {
                name: "good token",
                claims: serde_json::json!({"iss": ISSUER, "sub": sub, "aud": SENTRY, "iat": now, "exp": now + 600}),
                expected: Ok(()),
            },
            Case {
                name: "good token, iat within the skew",
                claims: serde_json::json!({"iss": ISSUER, "sub": sub, "aud": SENTRY, "iat": now + 30, "exp": now + 600}),
                expected: Ok(()),
            },
            Case {
                name: "missing iss",
                claims: serde_json::json!({"sub": sub, "aud": SENTRY, "iat": now, "exp": now + 600}),
                expected: Err(CredentialError::JwtMissingClaim("iss".to_owned())),
            },
            Case {
                name: "wrong iss",
                claims: serde_json::json!({"iss": "https://evil.example", "sub": sub, "aud": SENTRY, "iat": now, "exp": now + 600}),
                expected: Err(CredentialError::JwtIssuerMismatch),
            },
            Case {
                name: "wrong aud",
                claims: serde_json::json!({"iss": ISSUER, "sub": sub, "aud": "spiffe://public/ns/default/other", "iat": now, "exp": now + 600}),
                expected: Err(CredentialError::JwtAudienceMismatch { expected: SENTRY.to_owned() }),
            },
            Case {
                name: "lifetime too long",
                claims: serde_json::json!({"iss": ISSUER, "sub": sub, "aud": SENTRY, "iat": now, "exp": now + 3601}),
                expected: Err(CredentialError::JwtLifetimeTooLong { lifetime_secs: 3601, max_secs: 3600 }),
            },
            Case {
                name: "missing iat",
                claims: serde_json::json!({"iss": ISSUER, "sub": sub, "aud": SENTRY, "exp": now + 600}),
                expected: Err(CredentialError::JwtMissingClaim("iat".to_owned())),
            },
            Case {
                name: "iat in the future beyond the skew",
                claims: serde_json::json!({"iss": ISSUER, "sub": sub, "aud": SENTRY, "iat": now + 120, "exp": now + 600}),
                expected: Err(CredentialError::JwtIssuedInFuture),
            },
            Case {
                name: "nbf in the future",
                claims: serde_json::json!({"iss": ISSUER, "sub": sub, "aud": SENTRY, "iat": now, "nbf": now + 300, "exp": now + 600}),
                expected: Err(CredentialError::JwtNotYetValid),
            },
            Case {
                name: "expired",
                claims: serde_json::json!({"iss": ISSUER, "sub": sub, "aud": SENTRY, "iat": now - 900, "exp": now - 300}),
                expected: Err(CredentialError::JwtExpired),
            },
            Case {
                name: "missing exp",
                claims: serde_json::json!({"iss": ISSUER, "sub": sub, "aud": SENTRY, "iat": now}),
                expected: Err(CredentialError::JwtMissingClaim("exp".to_owned())),
            },
            Case {
                name: "another subject",
                claims: serde_json::json!({"iss": ISSUER, "sub": id("billing").as_str(), "aud": SENTRY, "iat": now, "exp": now + 600}),
                expected: Err(CredentialError::JwtSubjectMismatch {
                    sub: id("billing").to_string(),
                    id: orders.to_string(),
                }),
            },
        ];
        for case in cases {
            let token = sign(&key, &case.claims);
            let got = validator.validate(&orders, "default", "orders", &token).map(|_| ());
            assert_eq!(got, case.expected, "{}", case.name);
        }
    }

    #[test]
    fn jwks_lifetime_and_audience_are_configurable() {
        let (jwks, key) = ec_jwks("k1");
        let custom =
            JwtRules::new(ISSUER, "ward-sentry").unwrap().with_max_lifetime(Duration::from_secs(86400)).unwrap();
        let validator = Validator::Jwks(JwksValidator::from_json(&jwks, custom).unwrap());
        let day = token(&key, id("orders").as_str(), "ward-sentry", 86000);
        assert!(validator.validate(&id("orders"), "default", "orders", &day).is_ok());
        let default_aud = token(&key, id("orders").as_str(), SENTRY, 600);
        assert!(matches!(
            validator.validate(&id("orders"), "default", "orders", &default_aud),
            Err(CredentialError::JwtAudienceMismatch { .. })
        ));
    }

    #[test]
    fn jwks_validator_binds_subject_audience_and_signature() {
        let orders = id("orders");
        let (jwks, key) = ec_jwks("k1");
        let validator = Validator::Jwks(JwksValidator::from_json(&jwks, rules()).unwrap());
        let ok = token(&key, orders.as_str(), SENTRY, 600);
        assert!(validator.validate(&orders, "default", "orders", &ok).is_ok());
        // A JWT is not single-use: it is bounded by its (short) lifetime instead.
        assert!(validator.validate(&orders, "default", "orders", &ok).is_ok());
        assert!(matches!(
            validator.validate(&id("billing"), "default", "billing", &ok),
            Err(CredentialError::JwtSubjectMismatch { .. })
        ));
        let (_, other_key) = ec_jwks("k1");
        let forged = token(&other_key, orders.as_str(), SENTRY, 600);
        assert!(matches!(
            validator.validate(&orders, "default", "orders", &forged),
            Err(CredentialError::JwtInvalid(_))
        ));
        assert_eq!(
            validator.validate(&orders, "default", "orders", "").map(|_| ()),
            Err(CredentialError::MissingToken)
        );
    }

    #[tokio::test]
    async fn jwks_from_a_url_is_fetched_and_used() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let orders = id("orders");
        let (jwks, key) = ec_jwks("k1");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else { return };
                let mut buf = [0u8; 2048];
                let _ = tcp.read(&mut buf).await;
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{jwks}", jwks.len());
                let _ = tcp.write_all(reply.as_bytes()).await;
            }
        });
        let validator =
            Validator::Jwks(JwksValidator::from_url(&format!("http://{addr}/jwks.json"), rules()).await.unwrap());
        let ok = token(&key, orders.as_str(), SENTRY, 600);
        assert!(validator.validate(&orders, "default", "orders", &ok).is_ok());
        assert!(
            JwksValidator::from_url("http://idp.example/jwks.json", rules()).await.is_err(),
            "plain http off loopback"
        );
    }

    #[test]
    fn validator_kind_parses() {
        assert_eq!("join-token".parse::<ValidatorKind>(), Ok(ValidatorKind::JoinToken));
        assert!("kubernetes".parse::<ValidatorKind>().is_err());
    }
}
