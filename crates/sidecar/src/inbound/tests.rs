//! Each layer on its own and the whole stack, without ports or SQLite: requests are values, the app channel is
//! `None` (its refusal is itself a check that nothing reached an app), audit goes to a temporary file.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use tower::ServiceExt;
use ward_identity::SpiffeId;
use ward_policy::AccessControl;
use ward_policy::spec::AccessControlSpec;

use super::accept::{AcceptMode, CallerIdentity};
use super::check::Check;
use super::identity::IdentityHeaders;
use super::*;
use crate::audit::{AuditSink, AuditTarget};
use crate::error::{PeerRefusal, RefusalKind};
use crate::headers;

fn acl(yaml: &str) -> AccessControl {
    let spec: AccessControlSpec = serde_saphyr::from_str(yaml).expect("spec");
    AccessControl::compile(&spec).expect("compiles")
}

/// Deny by default; `checkout` may POST `/orders`, nothing else.
fn orders_acl() -> AccessControl {
    acl("defaultAction: deny\ntrustDomain: public\npolicies:\n- appId: checkout\n  defaultAction: deny\n  \
         trustDomain: public\n  namespace: default\n  operations:\n  - name: /orders\n    httpVerb: [POST]\n    \
         action: allow\n")
}

struct Harness {
    handles: InboundHandles,
    audit_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn harness(acl: AccessControl) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit_path = dir.path().join("audit.log");
    let audit = AuditSink::open(&AuditTarget::File(audit_path.clone())).expect("audit");
    let handles = InboundHandles {
        app_id: Arc::from("orders"),
        accept: AcceptMode::Mtls,
        acl: Arc::new(ArcSwap::from_pointee(acl)),
        capabilities: Arc::new(ArcSwap::from_pointee(ward_policy::Capabilities::none())),
        provenance: None,
        audit,
        max_body_size: 1024,
        app_token: ward_gate::AppToken::from_env_value(Some("app-secret")).expect("token"),
        app_channel: AppChannel::None,
        app_permits: None,
        app_pipeline: Default::default(),
        subscription_routes: Default::default(),
        mcp: Default::default(),
        metrics: crate::metrics::Metrics::new("orders"),
        tracing: None,
    };
    Harness { handles, audit_path, _dir: dir }
}

impl Harness {
    async fn call(&self, caller: Option<&str>, method: &str, path: &str) -> http::Response<Body> {
        let mut request = http::Request::builder()
            .method(http::Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let peer = caller.map(|c| Arc::new(SpiffeId::parse(c).expect("id")));
        accept::identify(&self.handles.accept, peer.as_ref(), &mut request);
        stack(&self.handles).oneshot(request).await.expect("infallible")
    }

    /// The audit lines once the writer thread has written `n` of them (bounded wait).
    async fn audit_lines(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let text = std::fs::read_to_string(&self.audit_path).unwrap_or_default();
            let lines: Vec<_> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} audit lines in {}", self.audit_path.display());
    }
}

fn refusal(response: &mut http::Response<Body>) -> Option<RefusalKind> {
    PeerRefusal::take_from(response.headers_mut()).map(|r| r.kind)
}

const CHECKOUT: &str = "spiffe://public/ns/default/checkout";

#[tokio::test]
async fn acl_layer_denies_and_audits() {
    let h = harness(orders_acl());
    let mut denied = h.call(Some(CHECKOUT), "GET", "/v1.0/internal/invoke/admin").await;
    assert_eq!(refusal(&mut denied), Some(RefusalKind::AclDenied));
    let lines = h.audit_lines(1).await;
    assert_eq!(lines[0]["decision"], "deny");
    assert_eq!(lines[0]["operation"], "admin");
    assert_eq!(lines[0]["caller"], CHECKOUT);
}

#[tokio::test]
async fn an_allowed_call_is_audited_and_reaches_the_app_channel() {
    let h = harness(orders_acl());
    let mut allowed = h.call(Some(CHECKOUT), "POST", "/v1.0/internal/invoke/orders").await;
    // The channel is `None` here, so "reached the app channel" shows as its own refusal, after an ALLOW.
    assert_eq!(refusal(&mut allowed), Some(RefusalKind::AppUnavailable));
    assert_eq!(h.audit_lines(1).await[0]["decision"], "allow");
}

/// Issue 14 / Dapr #8353: a pub/sub subscription route is not an open invocation endpoint. Without any
/// accessControl, or when only a default allows the call, invoking it is refused (audited); an explicit operation
/// lets it through. Other paths are unaffected.
#[tokio::test]
async fn subscription_routes_are_invocable_only_through_an_explicit_acl_operation() {
    let h = harness(AccessControl::allow_all());
    h.handles.subscription_routes.store(Arc::new(["/orders".to_owned()].into()));
    for path in ["/v1.0/internal/invoke/orders", "/v1.0/internal/invoke/./orders"] {
        let mut refused = h.call(Some(CHECKOUT), "POST", path).await;
        assert_eq!(refusal(&mut refused), Some(RefusalKind::AclDenied), "{path}");
    }
    let lines = h.audit_lines(1).await;
    assert_eq!(lines[0]["decision"], "deny");
    assert!(lines[0]["reason"].as_str().unwrap_or_default().contains("subscription route"), "{}", lines[0]);
    let mut other = h.call(Some(CHECKOUT), "POST", "/v1.0/internal/invoke/other").await;
    assert_eq!(refusal(&mut other), Some(RefusalKind::AppUnavailable), "other paths still reach the app");

    let explicit = harness(orders_acl());
    explicit.handles.subscription_routes.store(Arc::new(["/orders".to_owned()].into()));
    let mut allowed = explicit.call(Some(CHECKOUT), "POST", "/v1.0/internal/invoke/orders").await;
    assert_eq!(refusal(&mut allowed), Some(RefusalKind::AppUnavailable), "an explicit operation allows it");
}

#[tokio::test]
async fn refusals_before_the_acl_are_audited() {
    let h = harness(AccessControl::allow_all());
    let cases = [
        (Some(CHECKOUT), "FOO", "/v1.0/internal/invoke/admin", RefusalKind::UnsupportedVerb),
        (Some(CHECKOUT), "GET", "/v1.0/internal/invoke/a%2Fb", RefusalKind::InvalidMethod),
        (
            Some(CHECKOUT),
            "POST",
            "/v1.0/internal/grpc/dapr.proto.runtime.v1.AppCallback/OnInvoke",
            RefusalKind::ReservedService,
        ),
        (Some(CHECKOUT), "GET", "/v1.0/elsewhere", RefusalKind::UnknownEndpoint),
    ];
    for (i, (caller, verb, path, expected)) in cases.into_iter().enumerate() {
        let mut response = h.call(caller, verb, path).await;
        assert_eq!(refusal(&mut response), Some(expected), "{verb} {path}");
        let lines = h.audit_lines(i + 1).await;
        assert_eq!(lines[i]["decision"], "deny", "{verb} {path}");
        // Raw operations are escaped in audit lines (percent-encoded), so they cannot forge a field or a line.
        let recorded = lines[i]["operation"].as_str().unwrap_or_default();
        assert_eq!(percent_encoding::percent_decode_str(recorded).decode_utf8_lossy(), path);
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_audited() {
    let h = harness(AccessControl::allow_all());
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/v1.0/internal/invoke/orders")
        .header(http::header::CONTENT_LENGTH, "4096")
        .body(Body::from(vec![0u8; 4096]))
        .expect("request");
    let peer = Arc::new(SpiffeId::parse(CHECKOUT).expect("id"));
    accept::identify(&AcceptMode::Mtls, Some(&peer), &mut request);
    let mut response = stack(&h.handles).oneshot(request).await.expect("infallible");
    assert_eq!(refusal(&mut response), Some(RefusalKind::BodyTooLarge));
    assert_eq!(h.audit_lines(1).await[0]["decision"], "deny");
}

#[tokio::test]
async fn a_deny_all_policy_refuses_unverified_callers() {
    let h = harness(orders_acl());
    let mut response = h.call(None, "POST", "/v1.0/internal/invoke/orders").await;
    assert_eq!(refusal(&mut response), Some(RefusalKind::AclDenied));
}

#[test]
fn identity_layer_strips_forged_headers_and_sets_verified_ones() {
    let check = IdentityHeaders {
        app_id: Arc::from("orders"),
        app_token: ward_gate::AppToken::from_env_value(Some("app-secret")).expect("token"),
    };
    let mut request = http::Request::new(Body::empty());
    for (name, value) in [
        (headers::CALLER_APP_ID, "admin"),
        ("Dapr-Caller-App-Id", "admin2"),
        (headers::CALLER_NAMESPACE, "kube-system"),
        (headers::CALLEE_APP_ID, "other"),
        (headers::API_TOKEN, "stolen"),
    ] {
        request.headers_mut().append(name, value.parse().expect("value"));
    }
    request.extensions_mut().insert(CallerIdentity(Some(Arc::new(SpiffeId::parse(CHECKOUT).expect("id")))));
    check.check(&mut request).expect("passes");
    let h = request.headers();
    assert_eq!(h.get_all(headers::CALLER_APP_ID).iter().collect::<Vec<_>>(), ["checkout"]);
    assert_eq!(h.get_all(headers::CALLER_NAMESPACE).iter().collect::<Vec<_>>(), ["default"]);
    assert_eq!(h.get_all(headers::CALLEE_APP_ID).iter().collect::<Vec<_>>(), ["orders"]);
    assert_eq!(h.get_all(headers::API_TOKEN).iter().collect::<Vec<_>>(), ["app-secret"]);

    // An unverified caller gets no caller headers at all, whatever it sent.
    let mut request = http::Request::new(Body::empty());
    request.headers_mut().insert(headers::CALLER_APP_ID, "admin".parse().expect("value"));
    request.extensions_mut().insert(CallerIdentity(None));
    check.check(&mut request).expect("passes");
    assert!(request.headers().get(headers::CALLER_APP_ID).is_none());
}

fn harness_with_writer(writer: crate::audit::MemoryWriter) -> InboundHandles {
    let mut h = harness(orders_acl()).handles;
    h.audit = AuditSink::from_writer(writer, ward_policy::AuditChain::new(), 16).expect("sink");
    h
}

async fn call_with(handles: &InboundHandles, caller: &str, method: &str, path: &str) -> http::Response<Body> {
    let mut request = http::Request::builder().method(method).uri(path).body(Body::empty()).expect("request");
    let peer = Arc::new(SpiffeId::parse(caller).expect("id"));
    accept::identify(&handles.accept, Some(&peer), &mut request);
    stack(handles).oneshot(request).await.expect("infallible")
}

/// Audit, then forward: when an allowed call reaches the app channel, its line is already written (no waiting on
/// the writer thread afterwards).
#[tokio::test]
async fn an_allowed_call_reaches_the_app_only_after_its_line_is_written() {
    let writer = crate::audit::MemoryWriter::default();
    let handles = harness_with_writer(writer.clone());
    let mut response = call_with(&handles, CHECKOUT, "POST", "/v1.0/internal/invoke/orders").await;
    // `AppChannel::None` answers AppUnavailable: the call got past the barrier to the channel.
    assert_eq!(refusal(&mut response), Some(RefusalKind::AppUnavailable));
    let written = writer.contents();
    assert_eq!(written.lines().count(), 1, "the line was on record before the app channel ran: {written}");
    assert!(written.contains("\"decision\":\"allow\""), "{written}");
}

/// A line that cannot be written refuses the call: the app channel is never reached.
#[tokio::test]
async fn an_allowed_call_whose_line_cannot_be_written_is_refused() {
    let writer = crate::audit::MemoryWriter::default();
    writer.set_failing(true);
    let handles = harness_with_writer(writer);
    let mut response = call_with(&handles, CHECKOUT, "POST", "/v1.0/internal/invoke/orders").await;
    assert_eq!(refusal(&mut response), Some(RefusalKind::AuditUnavailable));
}

/// Invariant 9 (issue 15): a development marker names a caller nobody verified, so it never matches an app policy;
/// the global `defaultAction` decides, as in Dapr without mTLS.
#[tokio::test]
async fn a_development_marker_never_matches_an_app_policy() {
    let mut h = harness(orders_acl());
    h.handles.accept = AcceptMode::DevelopmentMarkers;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 10;
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/v1.0/internal/invoke/orders")
        .header(crate::transport::DEV_IDENTITY_HEADER, format!("{CHECKOUT};exp={exp}"))
        .body(Body::empty())
        .expect("request");
    accept::identify(&h.handles.accept, None, &mut request);
    let mut response = stack(&h.handles).oneshot(request).await.expect("infallible");
    assert_eq!(refusal(&mut response), Some(RefusalKind::AclDenied), "the checkout policy must not apply");
    let lines = h.audit_lines(1).await;
    assert_eq!(lines[0]["rule"], "global defaultAction");
}

fn capabilities(yaml: &str) -> ward_policy::Capabilities {
    let spec: ward_policy::spec::CapabilitiesSpec = serde_saphyr::from_str(yaml).expect("spec");
    ward_policy::Capabilities::compile(&spec, "public").expect("compiles")
}

const ORDERS_CAPABILITIES: &str = "grants:\n- appId: checkout\n  namespace: default\n  capabilities: [orders:write]\n\
routes:\n- name: /orders/**\n  httpVerb: [POST]\n  requires: [orders:write]\n- name: /admin\n  requires: [orders:admin]\n";

/// Layer three: the ACL allows everything here; the capability routes still decide, each decision audited.
#[tokio::test]
async fn capability_layer_denies_a_missing_capability_after_the_acl_and_audits_it() {
    let h = harness(AccessControl::allow_all());
    h.handles.capabilities.store(Arc::new(capabilities(ORDERS_CAPABILITIES)));
    // Held: passes on to the app channel, with the ACL's and the capability check's allow lines.
    let mut allowed = h.call(Some(CHECKOUT), "POST", "/v1.0/internal/invoke/orders/1").await;
    assert_eq!(refusal(&mut allowed), Some(RefusalKind::AppUnavailable));
    // Not held: refused, naming only the missing capability.
    let mut denied = h.call(Some(CHECKOUT), "GET", "/v1.0/internal/invoke/admin").await;
    let refused = PeerRefusal::take_from(denied.headers_mut()).expect("refusal");
    assert_eq!(refused.kind, RefusalKind::CapabilityMissing);
    assert_eq!(refused.message, "access denied: missing capability orders:admin");
    assert_eq!(denied.status(), http::StatusCode::FORBIDDEN);
    // No route: the ACL alone.
    let mut free = h.call(Some(CHECKOUT), "GET", "/v1.0/internal/invoke/orders/1").await;
    assert_eq!(refusal(&mut free), Some(RefusalKind::AppUnavailable));

    let lines = h.audit_lines(5).await;
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap_or("").to_owned(),
                l["rule"].as_str().unwrap_or("").to_owned(),
                l["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary[1],
        (
            "AUTH_INTERNAL_ALLOW".into(),
            "spec.ward.capabilities.routes[0]".into(),
            "capabilities used: orders:write".into()
        )
    );
    assert_eq!(
        summary[3],
        (
            "AUTH_INTERNAL_DENY".into(),
            "spec.ward.capabilities.routes[1] (/admin)".into(),
            "missing capability orders:admin".into()
        )
    );
    assert_eq!(lines.len(), 5, "the call no route applies to adds only the ACL's line: {summary:?}");
}

/// A development marker holds no grant (invariant 9).
#[tokio::test]
async fn a_development_marker_holds_no_capability() {
    let mut h = harness(AccessControl::allow_all());
    h.handles.accept = AcceptMode::DevelopmentMarkers;
    h.handles.capabilities.store(Arc::new(capabilities(ORDERS_CAPABILITIES)));
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 10;
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/v1.0/internal/invoke/orders/1")
        .header(crate::transport::DEV_IDENTITY_HEADER, format!("{CHECKOUT};exp={exp}"))
        .body(Body::empty())
        .expect("request");
    accept::identify(&h.handles.accept, None, &mut request);
    let mut response = stack(&h.handles).oneshot(request).await.expect("infallible");
    assert_eq!(refusal(&mut response), Some(RefusalKind::CapabilityMissing));
}

/// Layer four: the token the app gets says who called, for what, with which capabilities, and verifies against the
/// sidecar's JWKS; a caller's own `ward-provenance` is gone.
#[tokio::test]
async fn the_provenance_token_carries_the_judged_request() {
    let issuer = Arc::new(
        crate::provenance::ProvenanceIssuer::new(
            "spiffe://public/ns/default/orders".into(),
            "orders".into(),
            false,
            None,
        )
        .expect("issuer"),
    );
    let check = super::provenance::ProvenanceToken { issuer: Some(issuer.clone()) };
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/v1.0/internal/invoke/orders/1")
        .header(headers::PROVENANCE, "forged.by.caller")
        .body(Body::empty())
        .expect("request");
    accept::identify(&AcceptMode::Mtls, Some(&Arc::new(SpiffeId::parse(CHECKOUT).expect("id"))), &mut request);
    let prepared = ward_policy::prepare_invocation(
        &ward_policy::InvocationMethod::Http { raw: "orders/1", verb: "POST" },
        ward_policy::AppProtocol::Http,
    )
    .expect("prepared");
    request.extensions_mut().insert(prepared);
    request.extensions_mut().insert(super::capability::UsedCapabilities(vec!["orders:write".into()]));
    IdentityHeaders { app_id: Arc::from("orders"), app_token: ward_gate::AppToken::from_env_value(None).expect("t") }
        .check(&mut request)
        .expect("identity headers");
    check.check(&mut request).expect("minted");
    let tokens: Vec<_> = request.headers().get_all(headers::PROVENANCE).iter().collect();
    assert_eq!(tokens.len(), 1);
    let token = tokens[0].to_str().expect("ascii");
    assert_ne!(token, "forged.by.caller");
    let jwks = issuer.jwks().expect("jwks");
    let verified = ward_provenance::verify(Some(token), "POST", "/orders/1", "orders", &jwks, true).expect("verifies");
    assert_eq!(verified.caller, CHECKOUT);
    assert_eq!(verified.capabilities, ["orders:write"]);
    assert!(!verified.dev);
    assert_eq!(verified.claims.iss, "spiffe://public/ns/default/orders");
    assert!(verified.claims.exp - verified.claims.iat <= 60);
}

/// Invariant 9 for MCP tool rules: a development marker names no verified caller, so no `spec.ward.mcp` rule
/// matches it; the default decides (here deny, answered by the sidecar).
#[tokio::test]
async fn a_development_marker_matches_no_mcp_rule() {
    let mut h = harness(AccessControl::allow_all());
    h.handles.accept = AcceptMode::DevelopmentMarkers;
    let spec: ward_policy::spec::McpSpec = serde_saphyr::from_str(
        "endpoint: /mcp\ndefaultAction: deny\nrules:\n- callers: [checkout]\n  allow: [search]\n",
    )
    .expect("spec");
    let policy = ward_policy::mcp::McpPolicy::compile(&spec, "public", "default").expect("compiles");
    h.handles.mcp.store(Some(Arc::new(policy)));
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 10;
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/v1.0/internal/invoke/mcp")
        .header("content-type", "application/json")
        .header(crate::transport::DEV_IDENTITY_HEADER, format!("{CHECKOUT};exp={exp}"))
        .body(Body::from(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#))
        .expect("request");
    accept::identify(&h.handles.accept, None, &mut request);
    let mut response = stack(&h.handles).oneshot(request).await.expect("infallible");
    assert_eq!(refusal(&mut response), None, "answered by the sidecar, not forwarded to the (absent) app");
    let body = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("-32001"), "the tool call is denied for an unverified caller: {text}");
}
