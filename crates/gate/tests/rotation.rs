//! Token and JWKS files: rotation without restart, fail-closed on bad content, JWT mode through the router.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Captured, eventually, get_with, router, send};
use http::{HeaderMap, HeaderValue, StatusCode};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use ward_gate::{ApiLogOptions, ApiTokens, AppToken, GateError, JwtConfig, JwtVerifier, TokenRejection};

/// The promise: a change takes effect within 2 s.
const TAKES_EFFECT: Duration = Duration::from_secs(2);
/// Long enough for several polls to have seen a bad file.
const SEVERAL_POLLS: Duration = Duration::from_millis(1500);

fn app_header(app: &AppToken) -> Option<HeaderValue> {
    let mut headers = HeaderMap::new();
    headers.insert("dapr-api-token", HeaderValue::from_static("caller"));
    app.apply(&mut headers);
    headers.get("dapr-api-token").cloned()
}

#[tokio::test]
async fn token_file_rotation() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let captured = Captured::default();
        let _guard = captured.install();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write_atomically(&path, "token-A\n").unwrap();
        let api = ApiTokens::from_file(&path).unwrap();
        let app = AppToken::from_file(&path).unwrap();
        let router = router(api.clone(), ApiLogOptions::default());

        assert_eq!(send(&router, get_with("/v1.0/state/s", Some("token-A"))).await.0.status(), StatusCode::OK);
        assert_eq!(send(&router, get_with("/v1.0/state/s", Some("token-B"))).await.0.status(), 401);
        assert_eq!(app_header(&app).unwrap(), "token-A");

        // Rotation step 1: new token on top, old one still accepted.
        write_atomically(&path, "token-B\ntoken-A\n").unwrap();
        assert!(eventually(TAKES_EFFECT, || api.check(Some(b"token-B")).is_ok()).await, "B not accepted in time");
        assert!(eventually(TAKES_EFFECT, || app_header(&app).is_some_and(|v| v == "token-B")).await);
        assert_eq!(send(&router, get_with("/v1.0/state/s", Some("token-A"))).await.0.status(), StatusCode::OK);
        assert_eq!(send(&router, get_with("/v1.0/state/s", Some("token-B"))).await.0.status(), StatusCode::OK);

        // Rotation step 2: the old token is gone.
        write_atomically(&path, "token-B").unwrap();
        assert!(eventually(TAKES_EFFECT, || api.check(Some(b"token-A")) == Err(TokenRejection::Mismatch)).await);
        assert_eq!(send(&router, get_with("/v1.0/state/s", Some("token-A"))).await.0.status(), 401);
        assert_eq!(send(&router, get_with("/v1.0/state/s", Some("token-B"))).await.0.status(), StatusCode::OK);

        // An empty file keeps the last good tokens (it must not disable the check).
        write_atomically(&path, "\n  \n").unwrap();
        tokio::time::sleep(SEVERAL_POLLS).await;
        assert_eq!(api.check(None), Err(TokenRejection::Missing));
        assert_eq!(api.check(Some(b"token-B")), Ok(()));
        assert_eq!(app_header(&app).unwrap(), "token-B");

        // So does an unreadable (here: missing) file.
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(SEVERAL_POLLS).await;
        assert_eq!(api.check(Some(b"token-B")), Ok(()));
        assert_eq!(api.check(Some(b"token-A")), Err(TokenRejection::Mismatch));
        assert_eq!(app_header(&app).unwrap(), "token-B");

        // And it recovers when the file comes back.
        write_atomically(&path, "token-C\n").unwrap();
        assert!(eventually(TAKES_EFFECT, || api.check(Some(b"token-C")).is_ok()).await);
        assert_eq!(api.check(Some(b"token-B")), Err(TokenRejection::Mismatch));

        let text = captured.text();
        assert!(text.contains("changed; reloaded") && text.contains("\"count\":2"), "{text}");
        assert!(text.contains("keeping the last good value"), "{text}");
        assert!(!text.contains("token-A") && !text.contains("token-B") && !text.contains("token-C"), "{text}");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn token_file_fails_closed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(matches!(ApiTokens::from_file(&missing), Err(GateError::FileRead { .. })));
    assert!(matches!(AppToken::from_file(&missing), Err(GateError::FileRead { .. })));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n\n").unwrap();
    assert!(matches!(ApiTokens::from_file(&empty), Err(GateError::TokenFileEmpty { .. })));
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'a'; 70 * 1024]).unwrap();
    assert!(matches!(ApiTokens::from_file(&big), Err(GateError::FileTooLarge { .. })));
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "good\nbad\u{1b}[31m\n").unwrap();
    let err = ApiTokens::from_file(&bad).unwrap_err();
    assert!(matches!(err, GateError::TokenInvalid { line: 2, .. }));
    assert!(!err.to_string().contains("bad\u{1b}"), "errors never echo a token: {err}");
}

fn ec_key() -> (EncodingKey, serde_json::Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    (key, jwk)
}

fn jwt(key: &EncodingKey) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({ "sub": "app", "iss": "iss", "aud": "aud", "exp": now + 300, "iat": now });
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, key).unwrap()
}

#[tokio::test]
async fn jwt_mode_through_router_and_jwks_reload() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (old_key, old_jwk) = ec_key();
        let (new_key, new_jwk) = ec_key();
        write_atomically(&path, json!({ "keys": [old_jwk] }).to_string()).unwrap();
        let config = JwtConfig { jwks: path.display().to_string(), issuer: "iss".into(), audience: "aud".into() };
        let tokens = ApiTokens::disabled().with_jwt(JwtVerifier::new(&config).unwrap());
        assert!(tokens.is_enabled());
        let router = router(tokens.clone(), ApiLogOptions::default());

        let (response, _) = send(&router, get_with("/v1.0/state/s", Some(&jwt(&old_key)))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let (response, _) = send(&router, get_with("/v1.0/state/s", Some("static-looking"))).await;
        assert_eq!(response.status(), 401);
        assert_eq!(response.extensions().get::<TokenRejection>().map(TokenRejection::reason), Some("jwt_malformed"));
        let (response, _) = send(&router, get_with("/v1.0/state/s", Some(&jwt(&new_key)))).await;
        assert_eq!(response.status(), 401);

        // Key rotation: the new JWKS replaces the old key.
        write_atomically(&path, json!({ "keys": [new_jwk] }).to_string()).unwrap();
        let new_token = jwt(&new_key);
        assert!(eventually(TAKES_EFFECT, || tokens.check(Some(new_token.as_bytes())).is_ok()).await);
        assert!(tokens.check(Some(jwt(&old_key).as_bytes())).is_err());

        // A JWKS with no usable key is ignored on reload: the last good keys stay.
        write_atomically(&path, json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] }).to_string()).unwrap();
        tokio::time::sleep(SEVERAL_POLLS).await;
        assert_eq!(tokens.check(Some(new_token.as_bytes())), Ok(()));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn static_and_jwt_together_accept_either() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let (key, jwk) = ec_key();
    write_atomically(&path, json!({ "keys": [jwk] }).to_string()).unwrap();
    let config = JwtConfig { jwks: path.display().to_string(), issuer: "iss".into(), audience: "aud".into() };
    let tokens = ApiTokens::from_env_value(Some("static")).unwrap().with_jwt(JwtVerifier::new(&config).unwrap());
    assert_eq!(tokens.check(Some(b"static")), Ok(()));
    assert_eq!(tokens.check(Some(jwt(&key).as_bytes())), Ok(()));
    assert!(matches!(tokens.check(Some(b"other")), Err(TokenRejection::JwtInvalid(_))));
    assert_eq!(tokens.check(None), Err(TokenRejection::Missing));
}

/// Writes a whole new file and renames it into place, as operators are told to (a plain `write` truncates first, so a
/// poll can read a half-written token list).
fn write_atomically(path: &std::path::Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    let next = path.with_extension("next");
    std::fs::write(&next, contents)?;
    std::fs::rename(&next, path)
}
