//! Request classification on both sides of the hop (issue 26): the caller's sidecar classifies the app's public
//! request (method, path, `dapr-app-id` header) and writes the internal path `/v1.0/internal/invoke/<raw method>`;
//! the callee's sidecar parses that path back and judges it. Invariants: whatever the caller forwards is either
//! refused by the URI parser or reaches the callee as exactly the same raw method (nothing cut at `?` or `#`,
//! nothing re-encoded), and both sides then reach the same decision (the same normalised operation and verb, or
//! the same refusal) — so the operation the callee's ACL judges is the one the caller meant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_policy::routing::INTERNAL_INVOKE_PREFIX;
use ward_policy::{AppProtocol, InvocationMethod, PublicRequest, classify_public, prepare_invocation};

fn decide(raw: &str, verb: &str) -> String {
    match prepare_invocation(&InvocationMethod::Http { raw, verb }, AppProtocol::Http) {
        Ok(prepared) => format!("ok {} {:?}", prepared.operation.as_str(), prepared.verb),
        Err(refusal) => format!("refused {refusal:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let verb = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let header = parts.next();
    // The public API sees what hyper parsed: the path of a valid request target.
    let Ok(uri) = target.parse::<http::Uri>() else { return };
    let path = uri.path();
    let PublicRequest::Invoke { raw_method, .. } = classify_public(verb, path, header) else { return };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    // The caller's sidecar forwards this target; an unparsable one is refused there (never sent).
    let Ok(internal) = format!("{INTERNAL_INVOKE_PREFIX}{raw_method}{query}").parse::<http::Uri>() else { return };
    let received = internal.path().strip_prefix(INTERNAL_INVOKE_PREFIX).expect("the prefix survives");
    assert_eq!(received, raw_method, "the callee parsed another method than the caller sent");
    assert_eq!(internal.query(), uri.query(), "the query changed on the way");
    assert_eq!(decide(received, verb), decide(raw_method, verb));
});
