//! The token layer and the API log through a real axum Router (`tower::ServiceExt::oneshot`).

mod common;

use axum::body::Body;
use common::{Captured, get_with, router, send};
use http::{Method, Request, StatusCode};
use ward_gate::{ApiLogOptions, ApiTokens};

const TOKEN: &str = "s3cret-api-token";
const UNAUTHORIZED: &str = r#"{"errorCode":"ERR_UNAUTHORIZED","message":"invalid api token"}"#;

struct Case {
    name: &'static str,
    method: Method,
    uri: &'static str,
    tokens: &'static [&'static str],
    expected: StatusCode,
}

fn cases() -> Vec<Case> {
    let case = |name, method, uri, tokens, expected| Case { name, method, uri, tokens, expected };
    vec![
        case("no token", Method::GET, "/v1.0/state/s", &[], StatusCode::UNAUTHORIZED),
        case("wrong token", Method::GET, "/v1.0/state/s", &["nope"], StatusCode::UNAUTHORIZED),
        case("prefix of token", Method::GET, "/v1.0/state/s", &["s3cret"], StatusCode::UNAUTHORIZED),
        case("empty token", Method::GET, "/v1.0/state/s", &[""], StatusCode::UNAUTHORIZED),
        case("right token", Method::GET, "/v1.0/state/s", &[TOKEN], StatusCode::OK),
        case("right token POST", Method::POST, "/v1.0/state/s", &[TOKEN], StatusCode::OK),
        case(
            "token only in the query",
            Method::GET,
            "/v1.0/state/s?dapr-api-token=s3cret-api-token",
            &[],
            StatusCode::UNAUTHORIZED,
        ),
        // CVE-2023-37918: `/healthz` anywhere else in the URL used to skip the check.
        case("healthz in the query", Method::GET, "/v1.0/state/s?x=/healthz", &[], StatusCode::UNAUTHORIZED),
        case(
            "healthz in the query of healthz-like path",
            Method::GET,
            "/v1.0/state/x?x=/v1.0/healthz",
            &[],
            StatusCode::UNAUTHORIZED,
        ),
        case("POST healthz", Method::POST, "/v1.0/healthz", &[], StatusCode::UNAUTHORIZED),
        case("HEAD healthz", Method::HEAD, "/v1.0/healthz", &[], StatusCode::UNAUTHORIZED),
        case("GET healthz exempt", Method::GET, "/v1.0/healthz", &[], StatusCode::OK),
        case("GET healthz with query exempt", Method::GET, "/v1.0/healthz?ready=1", &[], StatusCode::OK),
        case("GET healthz/outbound exempt", Method::GET, "/v1.0/healthz/outbound", &[], StatusCode::OK),
        case("GET healthz with a wrong token still exempt", Method::GET, "/v1.0/healthz", &["nope"], StatusCode::OK),
        case("dot segments after healthz", Method::GET, "/v1.0/healthz/../state/x", &[], StatusCode::UNAUTHORIZED),
        case("encoded slash after healthz", Method::GET, "/v1.0/healthz%2F..", &[], StatusCode::UNAUTHORIZED),
        case("healthzz", Method::GET, "/v1.0/healthzz", &[], StatusCode::UNAUTHORIZED),
        case("healthz below another API", Method::GET, "/v1.0/state/healthz", &[], StatusCode::UNAUTHORIZED),
        case("two header values, both right", Method::GET, "/v1.0/state/s", &[TOKEN, TOKEN], StatusCode::UNAUTHORIZED),
        case("two header values, one right", Method::GET, "/v1.0/state/s", &["nope", TOKEN], StatusCode::UNAUTHORIZED),
    ]
}

#[tokio::test]
async fn token_layer_table() {
    let router = router(ApiTokens::from_env_value(Some(TOKEN)).unwrap(), ApiLogOptions::default());
    for case in cases() {
        let mut builder = Request::builder().method(case.method.clone()).uri(case.uri);
        for token in case.tokens {
            builder = builder.header("dapr-api-token", *token);
        }
        let (response, body) = send(&router, builder.body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), case.expected, "case {}", case.name);
        if case.expected == StatusCode::UNAUTHORIZED {
            assert_eq!(response.headers()["content-type"], "application/json", "case {}", case.name);
            if case.method != Method::HEAD {
                assert_eq!(body, UNAUTHORIZED, "case {}", case.name);
            }
        } else {
            assert_eq!(body, "seen-token=false", "case {}: the inner handler must never see the token", case.name);
        }
    }
}

#[tokio::test]
async fn header_name_is_case_insensitive_and_stripped() {
    let router = router(ApiTokens::from_env_value(Some(TOKEN)).unwrap(), ApiLogOptions::default());
    let request = Request::get("/v1.0/state/s").header("DAPR-Api-Token", TOKEN).body(Body::empty()).unwrap();
    let (response, body) = send(&router, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "seen-token=false");
}

#[tokio::test]
async fn no_token_configured_lets_everything_through_but_still_strips() {
    let router = router(ApiTokens::disabled(), ApiLogOptions::default());
    for token in [None, Some("anything")] {
        let (response, body) = send(&router, get_with("/v1.0/state/s", token)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body, "seen-token=false");
    }
}

#[tokio::test]
async fn api_log_records_calls_and_refusals_without_secrets() {
    let captured = Captured::default();
    let _guard = captured.install();
    let options = ApiLogOptions { enabled: true, obfuscate_urls: false, omit_health_checks: false };
    let router = router(ApiTokens::from_env_value(Some(TOKEN)).unwrap(), options);

    let request = Request::get("/v1.0/state/s?apikey=query-secret")
        .header("dapr-api-token", TOKEN)
        .header("user-agent", "dapr-sdk-go/v1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, request).await.0.status(), StatusCode::OK);
    assert_eq!(send(&router, get_with("/v1.0/state/s?q=query-secret", Some("wrong-guess"))).await.0.status(), 401);
    assert_eq!(send(&router, get_with("/v1.0/state/s", None)).await.0.status(), 401);
    assert_eq!(send(&router, get_with("/v1.0/healthz", None)).await.0.status(), 200);

    let text = captured.text();
    for secret in [TOKEN, "query-secret", "wrong-guess", "?"] {
        assert!(!text.contains(secret), "log must not contain {secret:?}:\n{text}");
    }
    let events = captured.events("ward::api");
    assert_eq!(events.len(), 4, "{text}");
    let fields: Vec<&serde_json::Value> = events.iter().map(|e| &e["fields"]).collect();
    assert_eq!(fields[0]["message"], "HTTP API Called");
    assert_eq!(fields[0]["method"], "GET");
    assert_eq!(fields[0]["path"], "/v1.0/state/s");
    assert_eq!(fields[0]["status"], 200);
    assert_eq!(fields[0]["user_agent"], "dapr-sdk-go/v1");
    assert!(fields[0]["duration_ms"].is_number());
    assert!(fields[0].get("rejected").is_none());
    assert_eq!(events[0]["level"], "INFO");
    assert_eq!(fields[1]["status"], 401);
    assert_eq!(fields[1]["rejected"], "mismatch");
    assert_eq!(fields[2]["rejected"], "missing");
    assert_eq!(fields[3]["path"], "/v1.0/healthz");
}

#[tokio::test]
async fn api_log_obfuscates_and_omits_health_checks() {
    let captured = Captured::default();
    let _guard = captured.install();
    let options = ApiLogOptions { enabled: true, obfuscate_urls: true, omit_health_checks: true };
    let router = router(ApiTokens::from_env_value(Some(TOKEN)).unwrap(), options);

    assert_eq!(send(&router, get_with("/v1.0/state/orders/order-42", Some(TOKEN))).await.0.status(), 200);
    assert_eq!(send(&router, get_with("/v1.0/healthz", None)).await.0.status(), 200);
    assert_eq!(send(&router, get_with("/v1.0/healthz/outbound", None)).await.0.status(), 200);
    // A refused POST to the health path is not a health check: it is logged.
    let post = Request::post("/v1.0/healthz").body(Body::empty()).unwrap();
    assert_eq!(send(&router, post).await.0.status(), 401);
    // Unrouted: no MatchedPath, so the fallback obfuscation hides segments after the third.
    assert_eq!(send(&router, get_with("/v1.0/secrets/vault/db-password", Some(TOKEN))).await.0.status(), 200);

    let text = captured.text();
    assert!(!text.contains("order-42") && !text.contains("db-password"), "{text}");
    let events = captured.events("ward::api");
    let paths: Vec<&str> = events.iter().map(|e| e["fields"]["path"].as_str().unwrap_or("?")).collect();
    assert_eq!(paths, vec!["/v1.0/state/{store}/{key}", "/v1.0/healthz", "/v1.0/secrets/vault/{…}"], "{text}");
    assert_eq!(events[1]["fields"]["method"], "POST");
    assert_eq!(events[1]["fields"]["rejected"], "missing");
}

#[tokio::test]
async fn api_log_disabled_logs_nothing() {
    let captured = Captured::default();
    let _guard = captured.install();
    let router = router(ApiTokens::from_env_value(Some(TOKEN)).unwrap(), ApiLogOptions::default());
    assert_eq!(send(&router, get_with("/v1.0/state/s", None)).await.0.status(), 401);
    assert!(captured.events("ward::api").is_empty());
}
