//! Fuzzes the public HTTP routing decision (issue 12 "Tests"). The input is split on newlines: line 0 is the
//! request method, line 1 the raw path (the part before any `?`, as `http::Uri::path` gives it), and line 2, if
//! present, the `dapr-app-id` header. Invariants: never panics; "no input reaches invocation without passing the
//! token check": a request classified as an invocation is never token-exempt, and an exempt request is exactly
//! `GET` on one of the two healthz paths; the header only turns an unrouted request (or a `/v1.0/invoke…` path
//! without a target) into an invocation; an invocation in either form is the `invoke` API for `spec.api`;
//! classification is deterministic. Run: `cargo +nightly fuzz run public_routing -- -max_total_time=60`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_policy::spec::{ApiRuleSpec, ApiSpec};
use ward_policy::{ApiAllowList, PublicRequest, classify_public, is_token_exempt};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let app_id = lines.next();

    let class = classify_public(method, path, app_id);
    assert_eq!(class, classify_public(method, path, app_id), "deterministic");
    let exempt = is_token_exempt(method, path);
    if class.is_invocation() {
        assert!(!exempt, "{method} {path:?} with {app_id:?}: invocation without the token check");
    }
    if exempt {
        assert!(method == "GET" && (path == "/v1.0/healthz" || path == "/v1.0/healthz/outbound"), "{path:?}");
        assert!(matches!(class, PublicRequest::Healthz | PublicRequest::HealthzOutbound), "{class:?}");
    }
    let without = classify_public(method, path, None);
    if without != class {
        assert!(matches!(without, PublicRequest::NotFound | PublicRequest::InvokeMissingAppId), "{without:?} -> {class:?}");
        assert!(matches!(class, PublicRequest::Invoke { .. } | PublicRequest::InvokeMissingAppId), "{class:?}");
    }
    if class.is_invocation() {
        let rule = ApiRuleSpec { name: "invoke".into(), version: "v1".into(), protocol: String::new() };
        let deny = ApiAllowList::compile(&ApiSpec { allowed: None, denied: Some(vec![rule]) });
        assert!(deny.is_ok_and(|lists| !lists.allows_http(&class)), "{class:?} escapes a denied invoke API");
    }
});
