//! `middleware.http.bearer`: the request must carry `Authorization: Bearer <JWT>` signed by a key of the
//! issuer's JWKS, for one of the configured issuers and audiences. Any failure answers `401` `text/plain`
//! `Unauthorized` (Dapr's answer); the app never sees the request. Nothing about the claims is passed to the app,
//! and the `Authorization` header goes on unchanged (as Dapr).
//!
//! Metadata (Dapr's, plus hardening):
//! - `issuer` (alias `issuerURL`) and `audience` (alias `clientID`), required; each may be a comma-separated list
//!   (any one issuer, any one audience);
//! - `jwksURL`, optional: without it each issuer's `<issuer>/.well-known/openid-configuration` is fetched, its
//!   `issuer` must equal the configured one exactly, and its `jwks_uri` is used;
//! - `algorithms`, optional comma-separated allow-list (`RS256,ES256`); it narrows what the keys allow, never
//!   widens it: `none` and HMAC are refused whatever it says;
//! - `allowedClockSkew`, a Go duration, default `5m` (Dapr's fixed skew).
//!
//! Keys: fetched at start (HTTPS with the system roots, plain HTTP only to loopback — `ward-fetch`); a failure
//! stops the sidecar. Refreshed every 10 minutes in the background; a failed refresh keeps the cached keys. A
//! token whose `kid` is not in the cached set triggers one refresh, at most once per 30 s per JWKS (key rotation at
//! the identity provider is picked up without letting garbage `kid`s hammer it). `exp` is required. The token is
//! never logged; refusal reasons are short fixed strings.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use jsonwebtoken::{Algorithm, Validation};
use ward_components::{ComponentError, ComponentMetadata};
use ward_gate::jwks::{JwtReason, KeySet, parse_algorithm};

use crate::{Middleware, Refusal, Request};

/// Dapr's `allowedClockSkew`.
const DEFAULT_SKEW: Duration = Duration::from_secs(5 * 60);
/// Dapr's (jwx cache) minimum refresh interval, used as the background refresh period.
const REFRESH_EVERY: Duration = Duration::from_secs(10 * 60);
/// The least time between two refreshes caused by unknown `kid`s.
const UNKNOWN_KID_REFRESH_GAP: Duration = Duration::from_secs(30);
/// A JWKS or discovery document is a few kilobytes.
const DOCUMENT_LIMIT: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Dapr refuses shorter tokens before parsing them.
const MIN_TOKEN_LEN: usize = 10;

pub struct Bearer {
    /// One key source per configured issuer (discovery), or one shared by all (`jwksURL`).
    sources: Vec<(Option<String>, Arc<KeySource>)>,
    validation: Validation,
}

/// One JWKS URL and its cached keys.
struct KeySource {
    url: String,
    keys: ArcSwap<KeySet>,
    algorithms: Option<Vec<Algorithm>>,
    /// When an unknown `kid` last caused a refresh.
    last_kid_refresh: Mutex<Option<Instant>>,
}

impl KeySource {
    async fn fetch(url: &str, algorithms: Option<&[Algorithm]>) -> Result<KeySet, String> {
        let bytes = ward_fetch::fetch(url, DOCUMENT_LIMIT, FETCH_TIMEOUT).await.map_err(|e| e.to_string())?;
        let keys = KeySet::parse(url, &bytes).map_err(|e| format!("{url}: {e}"))?;
        match algorithms {
            Some(allowed) => keys
                .restrict(allowed)
                .map_err(|_| format!("{url}: no key of the JWKS allows any of the algorithms listed in `algorithms`")),
            None => Ok(keys),
        }
    }

    async fn start(url: String, algorithms: Option<Vec<Algorithm>>) -> Result<Arc<KeySource>, String> {
        let keys = Self::fetch(&url, algorithms.as_deref()).await?;
        let source = Arc::new(KeySource {
            url,
            keys: ArcSwap::from_pointee(keys),
            algorithms,
            last_kid_refresh: Mutex::new(None),
        });
        tokio::spawn(refresh_periodically(Arc::downgrade(&source)));
        Ok(source)
    }

    /// Fetches the keys again for a token with an unknown `kid`, unless an unknown `kid` did so less than
    /// [`UNKNOWN_KID_REFRESH_GAP`] ago.
    async fn refresh_for_unknown_kid(&self) {
        {
            let mut last = self.last_kid_refresh.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFRESH_GAP) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.refresh().await;
    }

    /// Fetches the keys again. A failure keeps the cached keys.
    async fn refresh(&self) {
        match Self::fetch(&self.url, self.algorithms.as_deref()).await {
            Ok(keys) => {
                tracing::debug!(jwks = %self.url, keys = keys.len(), "bearer middleware: JWKS refreshed");
                self.keys.store(Arc::new(keys));
            }
            Err(err) => {
                tracing::warn!(error = %err, "bearer middleware: refreshing the JWKS failed; keeping the cached keys")
            }
        }
    }
}

/// Refreshes until the middleware holding the source is gone (a reload dropped it).
async fn refresh_periodically(source: Weak<KeySource>) {
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        let Some(source) = source.upgrade() else { return };
        source.refresh().await;
    }
}

fn list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

impl Bearer {
    pub async fn new(metadata: &ComponentMetadata) -> Result<Bearer, ComponentError> {
        let issuer_key = if metadata.get("issuer").is_some() { "issuer" } else { "issuerURL" };
        let issuers = list(metadata.get_any(&["issuer", "issuerURL"]).unwrap_or(""));
        if issuers.is_empty() {
            return Err(ComponentError::new("issuer", "required metadata is missing or empty (alias issuerURL)"));
        }
        let audiences = list(metadata.get_any(&["audience", "clientID"]).unwrap_or(""));
        if audiences.is_empty() {
            return Err(ComponentError::new("audience", "required metadata is missing or empty (alias clientID)"));
        }
        let algorithms = match metadata.get("algorithms").map(list).filter(|l| !l.is_empty()) {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|name| {
                        parse_algorithm(name).ok_or_else(|| {
                            ComponentError::new(
                                "algorithms",
                                format!(
                                    "{name:?} is not an allowed signature algorithm (RS256/384/512, PS256/384/512, \
                                     ES256, ES384, EdDSA; never none or HMAC)"
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let skew = metadata.get_duration("allowedClockSkew")?.unwrap_or(DEFAULT_SKEW);

        let mut sources = Vec::new();
        match metadata.get("jwksURL").map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => {
                let source = KeySource::start(url.to_owned(), algorithms)
                    .await
                    .map_err(|e| ComponentError::new("jwksURL", format!("fetching the JWKS failed: {e}")))?;
                sources.push((None, source));
            }
            None => {
                for issuer in &issuers {
                    let jwks_uri = discover(issuer).await.map_err(|e| ComponentError::new(issuer_key, e))?;
                    let source = KeySource::start(jwks_uri, algorithms.clone()).await.map_err(|e| {
                        ComponentError::new(issuer_key, format!("fetching the discovered JWKS failed: {e}"))
                    })?;
                    sources.push((Some(issuer.clone()), source));
                }
            }
        }

        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = skew.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&issuers);
        validation.set_audience(&audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        Ok(Bearer { sources, validation })
    }

    /// The key source for a token: the shared one, or the one of the issuer the (unverified) `iss` names — the
    /// signature check that follows proves it.
    fn source_for(&self, token: &str) -> Result<&Arc<KeySource>, JwtReason> {
        if let [(None, shared)] = self.sources.as_slice() {
            return Ok(shared);
        }
        let iss = unverified_issuer(token).ok_or(JwtReason::Malformed)?;
        self.sources
            .iter()
            .find(|(issuer, _)| issuer.as_deref() == Some(iss.as_str()))
            .map(|(_, source)| source)
            .ok_or(JwtReason::WrongIssuer)
    }

    async fn verify(&self, token: &str) -> Result<(), JwtReason> {
        let source = self.source_for(token)?;
        match source.keys.load().verify(token.as_bytes(), &self.validation) {
            Err(JwtReason::UnknownKid) => {}
            other => return other,
        }
        // Perhaps the identity provider rotated its keys.
        source.refresh_for_unknown_kid().await;
        source.keys.load().verify(token.as_bytes(), &self.validation)
    }
}

/// The `iss` claim of a token, read without verifying anything (only to pick the key set).
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// OIDC discovery: the `jwks_uri` of `issuer`, whose document must name exactly `issuer`.
async fn discover(issuer: &str) -> Result<String, String> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let bytes = ward_fetch::fetch(&url, DOCUMENT_LIMIT, FETCH_TIMEOUT)
        .await
        .map_err(|e| format!("OIDC discovery failed: {e}"))?;
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let doc: Discovery = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{url}: not an OpenID provider configuration (issuer, jwks_uri): {e}"))?;
    if doc.issuer != issuer {
        return Err(format!("{url}: the document's issuer {:?} is not the configured issuer {issuer:?}", doc.issuer));
    }
    Ok(doc.jwks_uri)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive); several `Authorization` headers are
/// refused rather than guessed between.
fn bearer_token(headers: &http::HeaderMap) -> Result<&str, &'static str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or("no Authorization header")?;
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    let value = value.to_str().map_err(|_| "Authorization header is not text")?;
    let (scheme, token) = value.split_at_checked(7).ok_or("not a bearer token")?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return Err("not a bearer token");
    }
    let token = token.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err("token too short");
    }
    Ok(token)
}

impl Middleware for Bearer {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Request, Refusal>> {
        Box::pin(async move {
            let unauthorized = |reason: &'static str| Refusal::status_text(http::StatusCode::UNAUTHORIZED, reason);
            let token = bearer_token(request.headers()).map_err(unauthorized)?;
            self.verify(token).await.map_err(|reason| unauthorized(reason.as_str()))?;
            Ok(request)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for v in values {
            map.append(http::header::AUTHORIZATION, v.parse().expect("header"));
        }
        map
    }

    #[test]
    fn authorization_header_forms() {
        assert_eq!(bearer_token(&headers(&["Bearer abcdefghijk"])), Ok("abcdefghijk"));
        assert_eq!(bearer_token(&headers(&["bEaReR abcdefghijk"])), Ok("abcdefghijk"));
        assert!(bearer_token(&headers(&[])).is_err());
        assert!(bearer_token(&headers(&["Basic abcdefghijk"])).is_err());
        assert!(bearer_token(&headers(&["Bearer short"])).is_err());
        assert!(bearer_token(&headers(&["Bearerabcdefghijk"])).is_err());
        assert!(bearer_token(&headers(&["Bearer abcdefghijk", "Bearer abcdefghijk"])).is_err());
    }

    #[tokio::test]
    async fn required_metadata_and_unreachable_keys_refuse_to_build() {
        let meta = |pairs: &[(&str, &str)]| {
            let mut m = ComponentMetadata::new();
            for (k, v) in pairs {
                m.insert(*k, *v);
            }
            m
        };
        let err = |m: ComponentMetadata| async move { Bearer::new(&m).await.err().expect("refused").to_string() };
        assert!(err(meta(&[("audience", "a")])).await.contains("issuer"));
        assert!(err(meta(&[("issuer", "https://i")])).await.contains("audience"));
        let bad_alg = meta(&[("issuer", "https://i"), ("audience", "a"), ("algorithms", "HS256")]);
        assert!(err(bad_alg).await.contains("algorithms"));
        let none_alg = meta(&[("issuer", "https://i"), ("audience", "a"), ("algorithms", "none")]);
        assert!(err(none_alg).await.contains("algorithms"));
        let gone = meta(&[("issuer", "https://i"), ("audience", "a"), ("jwksURL", "http://127.0.0.1:1/jwks")]);
        assert!(err(gone).await.contains("jwksURL"));
        let insecure = meta(&[("issuerURL", "http://idp.example"), ("clientID", "a")]);
        assert!(err(insecure).await.contains("issuerURL"));
    }
}
