//! Issue 26: request classification on both sides of the hop, as a property (the cargo-fuzz target
//! `fuzz/fuzz_targets/invoke_both_sides.rs` runs the same invariant where nightly is available). Whatever the
//! method, request target and `dapr-app-id` header: what the caller's sidecar forwards as
//! `/v1.0/internal/invoke/<raw method>` is refused by the URI parser or reaches the callee as exactly that method,
//! with the same query, and both sides decide the same.

use proptest::prelude::*;
use ward_policy::routing::INTERNAL_INVOKE_PREFIX;
use ward_policy::{AppProtocol, InvocationMethod, PublicRequest, classify_public, prepare_invocation};

fn decide(raw: &str, verb: &str) -> String {
    match prepare_invocation(&InvocationMethod::Http { raw, verb }, AppProtocol::Http) {
        Ok(prepared) => format!("ok {} {:?}", prepared.operation.as_str(), prepared.verb),
        Err(refusal) => format!("refused {refusal:?}"),
    }
}

fn target() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/", "v1.0", "invoke", "orders", "method", "a", "..", ".", "%2F", "%2e%2e", "%3F", "%23", "?", "#", "q=1", "&",
        "%25", "%", ";", "\\", "é", " ", "//",
    ]);
    (prop::bool::ANY, prop::collection::vec(piece, 0..12)).prop_map(|(invoke_form, parts)| {
        let rest: String = parts.concat();
        if invoke_form { format!("/v1.0/invoke/orders/method/{rest}") } else { format!("/{rest}") }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_callee_judges_the_method_the_caller_forwarded(
        verb in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "FOO"]),
        target in target(),
        header in prop::option::of(prop::sample::select(vec!["orders", "", "a/b"])),
    ) {
        let Ok(uri) = target.parse::<http::Uri>() else { return Ok(()) };
        let PublicRequest::Invoke { raw_method, .. } = classify_public(verb, uri.path(), header) else { return Ok(()) };
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let Ok(internal) = format!("{INTERNAL_INVOKE_PREFIX}{raw_method}{query}").parse::<http::Uri>() else {
            return Ok(());
        };
        let received = internal.path().strip_prefix(INTERNAL_INVOKE_PREFIX).expect("the prefix survives");
        prop_assert_eq!(received, raw_method);
        prop_assert_eq!(internal.query(), uri.query());
        prop_assert_eq!(decide(received, verb), decide(raw_method, verb));
    }
}
