//! The per-request decisions of the callee's sidecar, each timed alone, so a regression in one shows before it is
//! lost in the noise of a whole sidecar pair (issue 18): path normalisation, the `accessControl` decision (one
//! policy; 10,000 policies; one policy of 10,000 operations with the match last) and sealing the call's audit line.
//! The provenance token has its own: `cargo run --release -p ward-provenance --example mint_verify_bench`.
//!
//! `cargo run --release -p ward-policy --example hot_path_bench [iterations]` prints nanoseconds per operation.

use std::hint::black_box;
use std::time::Instant;

use ward_policy::spec::AccessControlSpec;
use ward_policy::{
    AccessControl, AclRequest, AppProtocol, AuditChain, AuditEvent, Caller, HttpVerb, InvocationMethod,
    prepare_invocation,
};

fn main() {
    let iterations: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let raw = "orders/12345/items/%7Bsku%7D";
    println!("{:<58} {:>10}", "operation", "ns/op");

    time("normalise an HTTP method (prepare_invocation)", iterations, || {
        black_box(prepare_invocation(&InvocationMethod::Http { raw, verb: "GET" }, AppProtocol::Http).is_ok());
    });

    let caller = Caller { trust_domain: "public", namespace: "default", app_id: "checkout" };
    let prepared = prepare_invocation(&InvocationMethod::Http { raw, verb: "GET" }, AppProtocol::Http)
        .unwrap_or_else(|err| panic!("{err:?}"));
    let request = AclRequest {
        caller: Some(caller),
        operation: prepared.operation.as_str(),
        verb: Some(HttpVerb::Get),
        app_protocol: AppProtocol::Http,
    };
    let operation = |name: &str| serde_json::json!({"name": name, "httpVerb": ["GET"], "action": "allow"});
    let policy = |app: &str, operations: Vec<serde_json::Value>| {
        serde_json::json!({"appId": app, "defaultAction": "deny", "trustDomain": "public", "namespace": "default",
                           "operations": operations})
    };
    let acl = |policies: Vec<serde_json::Value>| {
        let spec: AccessControlSpec = serde_json::from_value(
            serde_json::json!({"defaultAction": "deny", "trustDomain": "public", "policies": policies}),
        )
        .unwrap_or_else(|err| panic!("{err}"));
        AccessControl::compile(&spec).unwrap_or_else(|err| panic!("{err:?}"))
    };

    let one = acl(vec![policy("checkout", vec![operation("/orders/**")])]);
    time("accessControl decision, 1 policy", iterations, || {
        black_box(one.decide(&request).allowed);
    });

    let mut many: Vec<_> = (0..9_999).map(|n| policy(&format!("app-{n}"), vec![operation("/x")])).collect();
    many.push(policy("checkout", vec![operation("/orders/**")]));
    let many = acl(many);
    time("accessControl decision, 10,000 policies", iterations, || {
        black_box(many.decide(&request).allowed);
    });

    let mut operations: Vec<_> = (0..9_999).map(|n| operation(&format!("/other-{n}/*"))).collect();
    operations.push(operation("/orders/**"));
    let long = acl(vec![policy("checkout", operations)]);
    time("accessControl decision, 10,000 operations (match last)", iterations, || {
        black_box(long.decide(&request).allowed);
    });

    let decision = one.decide(&request);
    let chain = AuditChain::new();
    time("build and seal the audit line of an allowed call", iterations, || {
        let event = AuditEvent::for_acl("2026-12-05T22:00:00.000000Z", "orders", &request, &decision);
        black_box(chain.seal(&event));
    });
}

/// Runs `op` `iterations` times after a tenth as many to warm up, and prints the mean.
fn time(name: &str, iterations: u32, mut op: impl FnMut()) {
    for _ in 0..iterations / 10 {
        op();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        op();
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("{name:<58} {ns:>10.0}");
}
