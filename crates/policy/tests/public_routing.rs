//! Issue 12 "Tests": the public routing decision as a property. "No input reaches invocation without passing the
//! token check when a token is configured": whatever the method, raw path and `dapr-app-id` header, a request
//! classified as an invocation is never exempt from the API token, and an exempt request is never an invocation.
//! The same invariant runs as a cargo-fuzz target (`fuzz/fuzz_targets/public_routing.rs`) where nightly is
//! available; this proptest is the check that runs with `cargo test`.

use proptest::prelude::*;
use ward_policy::spec::{ApiRuleSpec, ApiSpec};
use ward_policy::{ApiAllowList, PublicRequest, classify_public, is_always_allowed, is_token_exempt};

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "get", "Get", "FOO", "OPTIONS", ""])
            .prop_map(String::from),
        "[A-Za-z]{1,8}",
    ]
}

/// Paths built from the pieces that matter to healthz and invocation routing, or arbitrary printable text.
fn raw_path() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/",
        "/",
        "//",
        "v1.0",
        "V1.0",
        "v1",
        "healthz",
        "HEALTHZ",
        "Healthz",
        "outbound",
        "health%7A",
        "%2F",
        "%2f",
        ".",
        "..",
        "%2e",
        "%2E%2E",
        "\\",
        ";x",
        "?q=1",
        "invoke",
        "method",
        "state",
        "secrets",
        "metadata",
        "orders",
        "x",
        "%",
    ]);
    prop_oneof![
        prop::collection::vec(piece, 0..10).prop_map(|p| format!("/{}", p.concat())),
        "/[ -~]{0,40}",
        Just("/v1.0/invokeGET".to_owned()),
    ]
}

fn header() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["orders", "", "orders.ns", "a/b"]).prop_map(String::from))
}

fn deny_invoke() -> ApiAllowList {
    let rule = ApiRuleSpec { name: "invoke".into(), version: "v1.0".into(), protocol: "http".into() };
    ApiAllowList::compile(&ApiSpec { allowed: None, denied: Some(vec![rule]) }).unwrap_or_else(|e| panic!("{e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn invocation_is_never_token_exempt(method in method(), path in raw_path(), app_id in header()) {
        // The router sees the path without the query, as `http::Uri::path` gives it.
        let path = path.split('?').next().unwrap_or_default();
        let class = classify_public(&method, path, app_id.as_deref());
        let exempt = is_token_exempt(&method, path);
        prop_assert_eq!(
            exempt,
            method == "GET" && matches!(classify_public(&method, path, None), PublicRequest::Healthz | PublicRequest::HealthzOutbound),
            "the exemption is what routing calls health, for {} {:?}", method, path
        );
        if class.is_invocation() {
            prop_assert!(!exempt, "{method} {path:?} with {app_id:?} is an invocation but token-exempt");
        }
        if exempt {
            prop_assert!(matches!(class, PublicRequest::Healthz | PublicRequest::HealthzOutbound), "{class:?}");
            prop_assert!(method == "GET" && (path == "/v1.0/healthz" || path == "/v1.0/healthz/outbound"), "{path:?}");
            prop_assert!(is_always_allowed(&method, path));
        }
        // The header can only turn "nothing" into an invocation, never move a routed request.
        let without = classify_public(&method, path, None);
        if without != class {
            prop_assert!(
                matches!(without, PublicRequest::NotFound | PublicRequest::InvokeMissingAppId),
                "{without:?} -> {class:?}"
            );
            prop_assert!(matches!(class, PublicRequest::Invoke { .. } | PublicRequest::InvokeMissingAppId), "{class:?}");
        }
        // Invocation in either form is the invoke API.
        if class.is_invocation() {
            prop_assert!(!deny_invoke().allows_http(&class), "{class:?}");
        }
        // Nothing that looks like healthz under any normalisation reaches invocation.
        let folded = path.to_ascii_lowercase().replace("%2f", "/").replace("%2e", ".");
        if folded.split('/').any(|s| s.starts_with("healthz")) && folded.contains("v1") && class.is_invocation() {
            let under = folded.split('/').filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>();
            let seg = |i: usize| under.get(i).map(|s| s.split(';').next().unwrap_or_default());
            prop_assert!(
                !(seg(0).is_some_and(|v| v.starts_with("v1")) && seg(1) == Some("healthz")),
                "{path:?} looks like healthz but is an invocation: {class:?}"
            );
        }
    }
}
