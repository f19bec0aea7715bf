//! Token sources and the one protocol-neutral check.
//!
//! [`ApiTokens`] holds what an app may present to its sidecar (`DAPR_API_TOKEN`): static tokens from the
//! environment or from a watched file (several lines = several accepted tokens, for rotation without restart),
//! optionally a JWT verifier. [`AppToken`] holds the one value the sidecar presents to its app (`APP_API_TOKEN`,
//! the first line of its file).
//!
//! Owned here: parsing token files, the constant-time comparison, the rejection reasons, header extraction and
//! stripping. Not owned here: which routes are exempt (the HTTP adapter), what a rejection looks like on the wire
//! (the HTTP and gRPC adapters), JWT cryptography (`jwt`).
//!
//! Token values never appear in `Debug`, `Display`, errors or logs. Accepted API tokens are not even kept: only
//! their SHA-256 digests are, which is also what makes the comparison independent of the presented length.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::http::{HeaderMap, HeaderName, HeaderValue};
use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::jwt::{JwtReason, JwtVerifier};
use crate::{API_TOKEN_HEADER, GateError, watch};

/// A token file is a handful of lines; anything bigger is a mistake (or an attack on memory).
const TOKEN_FILE_LIMIT: u64 = 64 * 1024;

/// Why a presented token was refused. Clients only ever see the generic 401 / `Unauthenticated`; this value goes
/// to the API log (`rejected` field) via the response extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    /// No token (or an empty one) was presented.
    #[error("missing api token")]
    Missing,
    /// A token was presented and matches no accepted token.
    #[error("api token mismatch")]
    Mismatch,
    /// The token header appeared more than once: ambiguous, so refused instead of guessing which one counts.
    #[error("malformed api token header")]
    Malformed,
    /// JWT mode: the token is not a JWT this sidecar accepts.
    #[error("invalid JWT api token: {0}")]
    JwtInvalid(JwtReason),
}

impl TokenRejection {
    /// A stable short reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Mismatch => "mismatch",
            Self::Malformed => "malformed",
            Self::JwtInvalid(reason) => reason.as_str(),
        }
    }
}

/// Where a token source came from (shown by `Debug` instead of the value).
#[derive(Clone, PartialEq, Eq)]
enum Origin {
    Disabled,
    Env,
    File(PathBuf),
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled => f.write_str("disabled"),
            Self::Env => f.write_str("env"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// The accepted static tokens, kept as SHA-256 digests only.
struct TokenSet {
    digests: Vec<[u8; 32]>,
}

impl TokenSet {
    /// Compares `presented` with every accepted token in constant time.
    ///
    /// Both sides are 32-byte digests, so neither the presented length nor a shared prefix changes the work done;
    /// every digest is compared (no early exit), so timing does not say which token matched. What timing can
    /// reveal is the number of accepted tokens and the presented length, neither of which is secret.
    fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        let mut found = Choice::from(0u8);
        for digest in &self.digests {
            found |= digest[..].ct_eq(&presented[..]);
        }
        bool::from(found)
    }
}

/// The tokens an app may present to its sidecar (`DAPR_API_TOKEN`), read lock-free on every request.
///
/// Cheap to clone (shared state); clones see reloads of the file.
#[derive(Clone)]
pub struct ApiTokens {
    current: Arc<ArcSwap<TokenSet>>,
    origin: Origin,
    jwt: Option<JwtVerifier>,
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokens")
            .field("origin", &self.origin)
            .field("count", &self.current.load().digests.len())
            .field("jwt", &self.jwt)
            .finish()
    }
}

impl ApiTokens {
    /// No token configured: every request passes (Dapr's default). Prefer an explicit choice in production; see
    /// [`crate::listen::exposure_check`].
    pub fn disabled() -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(TokenSet { digests: Vec::new() })),
            origin: Origin::Disabled,
            jwt: None,
        }
    }

    /// From the value of `DAPR_API_TOKEN`: non-empty (after trimming whitespace) enables the check with that one
    /// token; unset or empty disables it.
    pub fn from_env_value(value: Option<&str>) -> Result<Self, GateError> {
        let Some(token) = env_token(value)? else { return Ok(Self::disabled()) };
        let digests = vec![Sha256::digest(token.as_bytes()).into()];
        Ok(Self { current: Arc::new(ArcSwap::from_pointee(TokenSet { digests })), origin: Origin::Env, jwt: None })
    }

    /// From a token file (`--dapr-api-token-file`, `DAPR_API_TOKEN_FILE`): one token per line, blank lines
    /// skipped, all accepted. The file is watched; changes apply within about a second.
    ///
    /// Must be called inside a tokio runtime. Fails if the file is unreadable, empty or holds a value that cannot
    /// be a header: refusing to start is the fail-closed answer.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, GateError> {
        let path = path.into();
        let current =
            watch::load_and_watch(path.clone(), "API token", TOKEN_FILE_LIMIT, |path: &Path, bytes: &[u8]| {
                let tokens = parse_token_lines(path, bytes)?;
                let digests: Vec<[u8; 32]> = tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect();
                let count = digests.len();
                Ok((TokenSet { digests }, count))
            })?;
        Ok(Self { current, origin: Origin::File(path), jwt: None })
    }

    /// Also accept JWTs that `verifier` validates. A presented token passes if it equals a static token or is a
    /// valid JWT; with no static token configured, only JWTs pass.
    pub fn with_jwt(mut self, verifier: JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        self
    }

    /// Whether any check is active (a static token or JWT mode).
    pub fn is_enabled(&self) -> bool {
        self.jwt.is_some() || !self.current.load().digests.is_empty()
    }

    /// The number of static tokens accepted right now (never their values).
    pub fn static_count(&self) -> usize {
        self.current.load().digests.len()
    }

    /// Judges one presented token. When nothing is configured, everything passes.
    pub fn check(&self, presented: Option<&[u8]>) -> Result<(), TokenRejection> {
        let set = self.current.load();
        if set.digests.is_empty() && self.jwt.is_none() {
            return Ok(());
        }
        let presented = match presented {
            Some(p) if !p.is_empty() => p,
            _ => return Err(TokenRejection::Missing),
        };
        if set.matches(presented) {
            return Ok(());
        }
        match &self.jwt {
            Some(jwt) => jwt.verify(presented).map_err(TokenRejection::JwtInvalid),
            None => Err(TokenRejection::Mismatch),
        }
    }

    /// Judges the `dapr-api-token` header of a request (HTTP headers or gRPC metadata: the same map). A header
    /// present more than once is [`TokenRejection::Malformed`].
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), TokenRejection> {
        self.check(presented_token(headers)?)
    }

    /// The gRPC entry point: gRPC metadata is HTTP/2 headers, and no gRPC method is exempt. Usable from a tonic
    /// interceptor as `tokens.check_grpc_metadata(request.metadata().as_ref())`, followed by
    /// [`strip_token`]`(request.metadata_mut().as_mut())`.
    pub fn check_grpc_metadata(&self, metadata: &HeaderMap) -> Result<(), TokenRejection> {
        self.check_headers(metadata)
    }
}

/// The value the sidecar presents to its app (`APP_API_TOKEN`), read lock-free.
///
/// Cheap to clone (shared state); clones see reloads of the file.
#[derive(Clone)]
pub struct AppToken {
    current: Arc<ArcSwap<Option<HeaderValue>>>,
    origin: Origin,
}

impl fmt::Debug for AppToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppToken").field("origin", &self.origin).field("configured", &self.is_configured()).finish()
    }
}

impl AppToken {
    /// No app token: requests to the app carry no `dapr-api-token` at all.
    pub fn disabled() -> Self {
        Self { current: Arc::new(ArcSwap::from_pointee(None)), origin: Origin::Disabled }
    }

    /// From the value of `APP_API_TOKEN`: non-empty (after trimming) enables it; unset or empty disables it.
    pub fn from_env_value(value: Option<&str>) -> Result<Self, GateError> {
        let Some(token) = env_token(value)? else { return Ok(Self::disabled()) };
        Ok(Self { current: Arc::new(ArcSwap::from_pointee(Some(token))), origin: Origin::Env })
    }

    /// From a token file (`--app-api-token-file`, `APP_API_TOKEN_FILE`): same format as the API token file;
    /// the FIRST token is the one sent, so a rotation writes the new token on top (`new\nold`) once the app
    /// accepts both. Watched; must be called inside a tokio runtime; fails closed like [`ApiTokens::from_file`].
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, GateError> {
        let path = path.into();
        let current =
            watch::load_and_watch(path.clone(), "app token", TOKEN_FILE_LIMIT, |path: &Path, bytes: &[u8]| {
                let tokens = parse_token_lines(path, bytes)?;
                let count = tokens.len();
                Ok((tokens.into_iter().next(), count))
            })?;
        Ok(Self { current, origin: Origin::File(path) })
    }

    /// Whether a token is sent to the app.
    pub fn is_configured(&self) -> bool {
        self.current.load().is_some()
    }

    /// Prepares the headers of a request to the app: removes every `dapr-api-token` already there (a caller's
    /// token must never reach the callee: CVE-2024-35223), then sets this sidecar's own token if configured.
    pub fn apply(&self, headers: &mut HeaderMap) {
        strip_token(headers);
        if let Some(value) = self.current.load().as_ref() {
            headers.insert(HeaderName::from_static(API_TOKEN_HEADER), value.clone());
        }
    }
}

/// Removes every `dapr-api-token` header (all values), so a checked token travels no further.
pub fn strip_token(headers: &mut HeaderMap) {
    // `HeaderMap::remove` drops all values stored under the name, not just the first.
    headers.remove(API_TOKEN_HEADER);
}

/// The presented token: `None` if absent, an error if the header appears more than once.
pub(crate) fn presented_token(headers: &HeaderMap) -> Result<Option<&[u8]>, TokenRejection> {
    let mut values = headers.get_all(API_TOKEN_HEADER).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(TokenRejection::Malformed);
    }
    Ok(first.map(HeaderValue::as_bytes))
}

/// An env value as a header value: trimmed (a stray newline from `$(cat file)` must not make every request fail),
/// empty means "not configured".
fn env_token(value: Option<&str>) -> Result<Option<HeaderValue>, GateError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let mut header =
        HeaderValue::from_str(value).map_err(|_| GateError::TokenInvalid { origin: "environment".into(), line: 0 })?;
    header.set_sensitive(true);
    Ok(Some(header))
}

/// One token per line, trimmed, blank lines skipped. Every token must be sendable as a header value; the error
/// names the line, never its content.
fn parse_token_lines(path: &Path, bytes: &[u8]) -> Result<Vec<HeaderValue>, GateError> {
    let mut tokens = Vec::new();
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let mut value = HeaderValue::from_bytes(line)
            .map_err(|_| GateError::TokenInvalid { origin: path.display().to_string(), line: index + 1 })?;
        value.set_sensitive(true);
        tokens.push(value);
    }
    if tokens.is_empty() {
        return Err(GateError::TokenFileEmpty { path: path.to_path_buf() });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(values: &[&str]) -> ApiTokens {
        let digests = values.iter().map(|v| Sha256::digest(v.as_bytes()).into()).collect();
        ApiTokens { current: Arc::new(ArcSwap::from_pointee(TokenSet { digests })), origin: Origin::Env, jwt: None }
    }

    #[test]
    fn constant_time_check_table() {
        struct Case {
            name: &'static str,
            accepted: &'static [&'static str],
            presented: Option<&'static [u8]>,
            expected: Result<(), TokenRejection>,
        }
        let cases = [
            Case { name: "equal", accepted: &["s3cret"], presented: Some(b"s3cret"), expected: Ok(()) },
            Case {
                name: "different",
                accepted: &["s3cret"],
                presented: Some(b"s3creX"),
                expected: Err(TokenRejection::Mismatch),
            },
            Case {
                name: "prefix",
                accepted: &["s3cret"],
                presented: Some(b"s3c"),
                expected: Err(TokenRejection::Mismatch),
            },
            Case {
                name: "longer",
                accepted: &["s3cret"],
                presented: Some(b"s3cret-and-more"),
                expected: Err(TokenRejection::Mismatch),
            },
            Case { name: "empty", accepted: &["s3cret"], presented: Some(b""), expected: Err(TokenRejection::Missing) },
            Case { name: "absent", accepted: &["s3cret"], presented: None, expected: Err(TokenRejection::Missing) },
            Case { name: "second of two", accepted: &["a", "b"], presented: Some(b"b"), expected: Ok(()) },
            Case {
                name: "neither of two",
                accepted: &["a", "b"],
                presented: Some(b"ab"),
                expected: Err(TokenRejection::Mismatch),
            },
            Case { name: "disabled passes absent", accepted: &[], presented: None, expected: Ok(()) },
            Case { name: "disabled passes anything", accepted: &[], presented: Some(b"x"), expected: Ok(()) },
        ];
        for case in cases {
            assert_eq!(tokens(case.accepted).check(case.presented), case.expected, "case {}", case.name);
        }
    }

    #[test]
    fn env_value_enables_or_disables() {
        assert!(!ApiTokens::from_env_value(None).unwrap().is_enabled());
        assert!(!ApiTokens::from_env_value(Some("")).unwrap().is_enabled());
        assert!(!ApiTokens::from_env_value(Some("  \n")).unwrap().is_enabled());
        let t = ApiTokens::from_env_value(Some("abc\n")).unwrap();
        assert!(t.is_enabled());
        assert_eq!(t.check(Some(b"abc")), Ok(()));
        assert!(matches!(ApiTokens::from_env_value(Some("a\u{7}b")), Err(GateError::TokenInvalid { line: 0, .. })));
        assert!(!AppToken::from_env_value(Some("")).unwrap().is_configured());
    }

    #[test]
    fn debug_never_prints_values() {
        let api = ApiTokens::from_env_value(Some("very-secret-value")).unwrap();
        let app = AppToken::from_env_value(Some("other-secret-value")).unwrap();
        let text = format!("{api:?} {app:?}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn parse_lines_trims_and_skips_blanks() {
        let parsed = parse_token_lines(Path::new("t"), b"\n  B \r\n\nA\n").unwrap();
        let values: Vec<&[u8]> = parsed.iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(values, vec![&b"B"[..], &b"A"[..]]);
        assert!(matches!(parse_token_lines(Path::new("t"), b" \n\n"), Err(GateError::TokenFileEmpty { .. })));
        assert!(matches!(
            parse_token_lines(Path::new("t"), b"ok\nbad\x01x\n"),
            Err(GateError::TokenInvalid { line: 2, .. })
        ));
    }

    #[test]
    fn several_header_values_are_malformed() {
        let t = tokens(&["a"]);
        let mut headers = HeaderMap::new();
        headers.append(API_TOKEN_HEADER, HeaderValue::from_static("a"));
        assert_eq!(t.check_grpc_metadata(&headers), Ok(()));
        headers.append(API_TOKEN_HEADER, HeaderValue::from_static("a"));
        assert_eq!(t.check_grpc_metadata(&headers), Err(TokenRejection::Malformed));
        assert_eq!(t.check_grpc_metadata(&HeaderMap::new()), Err(TokenRejection::Missing));
    }

    /// CVE-2024-35223: whatever token the caller put on the request, the app sees only this sidecar's own.
    #[test]
    fn app_token_replaces_caller_token() {
        let mut headers = HeaderMap::new();
        headers.append("Dapr-Api-Token", HeaderValue::from_static("caller-token"));
        headers.append(API_TOKEN_HEADER, HeaderValue::from_static("caller-token-2"));
        AppToken::from_env_value(Some("mine")).unwrap().apply(&mut headers);
        let values: Vec<_> = headers.get_all(API_TOKEN_HEADER).iter().collect();
        assert_eq!(values, vec![HeaderValue::from_static("mine")]);

        let mut headers = HeaderMap::new();
        headers.append(API_TOKEN_HEADER, HeaderValue::from_static("caller-token"));
        AppToken::disabled().apply(&mut headers);
        assert!(headers.get(API_TOKEN_HEADER).is_none(), "no app token configured must still strip the caller's");
    }

    #[test]
    fn file_source_needs_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "a\n").unwrap();
        assert!(matches!(ApiTokens::from_file(&path), Err(GateError::NoRuntime { .. })));
    }
}
