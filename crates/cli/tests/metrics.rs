//! `/metrics` end to end with real processes: Dapr's metric names and labels move with real calls through a mTLS
//! pair (allowed and denied), ward's own authorization counters, bounded labels, and the exposition passes
//! `promtool check metrics` (Debian's `prometheus` package; `.ci/run` installs it) apart from the suffix lints on
//! Dapr's own counter names.

mod support;

use std::process::{Command, Stdio};

use support::mesh::{Http, Mesh, SidecarSpec, TestApp};
use support::path_str;

const ACL: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: orders
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: checkout
      namespace: default
      trustDomain: public
      defaultAction: deny
      operations:
      - {name: /orders/*, httpVerb: [GET], action: allow}
"#;

/// The value of the first sample whose line starts with `series` (name plus labels as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[test]
fn dapr_and_ward_metrics_move_with_calls_and_pass_promtool() {
    let mesh = Mesh::start(&[]);
    let app = TestApp::start();
    let config = mesh.write("orders.yaml", ACL);
    let mut spec = SidecarSpec::new("orders", Some(app.addr.port()));
    spec.config = Some(&config);
    let orders = mesh.sidecar(spec);
    let checkout = mesh.sidecar(SidecarSpec::new("checkout", None));
    let http = Http::new();
    for i in 0..3 {
        let reply = http.get(&checkout.http, &format!("/v1.0/invoke/orders/method/orders/customer-{i}"));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(http.get(&checkout.http, "/v1.0/invoke/orders/method/admin").status, 403);
    assert_eq!(http.get(&checkout.http, "/v1.0/invoke/nobody-registered/method/x").status, 500);

    let callee = http.get(&orders.metrics, "/metrics");
    assert_eq!(callee.status, 200);
    assert!(callee.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let callee = callee.text();
    let caller = http.get(&checkout.metrics, "/metrics").text();

    assert_eq!(
        sample(&callee, "dapr_runtime_service_invocation_req_recv_total{app_id=\"orders\",src_app_id=\"checkout\"}"),
        Some(4.0),
        "{callee}"
    );
    assert_eq!(
        sample(
            &caller,
            "dapr_runtime_service_invocation_req_sent_total{app_id=\"checkout\",dst_app_id=\"orders\",type=\"unary\"}"
        ),
        Some(4.0),
        "{caller}"
    );
    assert!(caller.contains("dst_app_id=\"_unknown\""), "an unregistered target is not a label value: {caller}");
    assert!(!caller.contains("nobody-registered"));
    let allowed = "dapr_runtime_acl_app_policy_action_allowed_total{app_id=\"checkout\",httpverb=\"GET\",namespace=\"default\",operation=\"policies[0].operations[0]\",policy_action=\"allow\",trust_domain=\"public\"}";
    assert_eq!(sample(&callee, allowed), Some(3.0), "{callee}");
    assert!(callee.contains("dapr_runtime_acl_app_policy_action_blocked_total{app_id=\"checkout\""), "{callee}");
    assert!(callee.contains("ward_authz_decisions_total{decision=\"deny\",layer=\"acl\""), "{callee}");
    assert!(!callee.contains("customer-"), "raw paths never become labels");
    let api = "dapr_http_server_request_count{app_id=\"checkout\",method=\"GET\",path=\"/v1.0/invoke\",status=\"200\"}";
    assert_eq!(sample(&caller, api), Some(3.0), "{caller}");
    assert!(caller.contains("dapr_http_server_latency_bucket{app_id=\"checkout\""));
    assert!(sample(&callee, "ward_audit_events_total").is_some_and(|n| n >= 4.0), "{callee}");
    assert!(sample(&callee, "ward_svid_expiry_timestamp_seconds").is_some_and(|t| t > 1.7e9), "{callee}");
    assert_eq!(sample(&callee, "ward_trust_bundle_roots"), Some(1.0));
    assert!(callee.contains("ward_build_info{version=\""));

    // promtool: no problems except the suffix lints Dapr's own names trigger (kept: dashboards match on them).
    let file = mesh.write("callee.prom", &callee);
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("promtool (apt-get install prometheus; .ci/run does) is needed");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let dapr_suffix_lint =
            line.starts_with("dapr_") && line.contains("counter metrics should have \"_total\" suffix");
        assert!(dapr_suffix_lint, "promtool: {line}\n{report}");
    }
    let _ = path_str(&file);
}
