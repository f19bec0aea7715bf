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
    // The calls to the app (HTTP client side), sizes, mTLS and the gRPC API, with Dapr's names.
    let to_app = "dapr_http_client_completed_count{app_id=\"orders\",method=\"GET\",path=\"_other\",status=\"200\"}";
    assert_eq!(sample(&callee, to_app), Some(3.0), "{callee}");
    assert!(callee.contains("dapr_http_client_roundtrip_latency_bucket{app_id=\"orders\""), "{callee}");
    assert!(callee.contains("dapr_http_client_received_bytes_count{app_id=\"orders\""), "{callee}");
    assert!(caller.contains("dapr_http_server_response_bytes_count{app_id=\"checkout\""), "{caller}");
    assert_eq!(sample(&callee, "dapr_runtime_mtls_init_total{app_id=\"orders\"}"), Some(1.0), "{callee}");
    assert!(callee.contains("dapr_runtime_mtls_workload_cert_rotated_total{app_id=\"orders\"}"), "{callee}");
    let grpc = support::field(&checkout.process.stdout_text(), "grpc");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
        let mut client = dapr::dapr::proto::runtime::v1::dapr_client::DaprClient::new(channel);
        client.get_metadata(dapr::dapr::proto::runtime::v1::GetMetadataRequest {}).await.unwrap();
        let err = client
            .get_state(dapr::dapr::proto::runtime::v1::GetStateRequest {
                store_name: "none".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_ne!(err.code(), tonic::Code::Ok);
    });
    let caller = http.get(&checkout.metrics, "/metrics").text();
    let ok = "dapr_grpc_io_server_completed_rpcs{app_id=\"checkout\",grpc_server_method=\"dapr.proto.runtime.v1.Dapr/GetMetadata\",grpc_server_status=\"OK\"}";
    assert_eq!(sample(&caller, ok), Some(1.0), "{caller}");
    assert!(
        caller.contains(
            "grpc_server_method=\"dapr.proto.runtime.v1.Dapr/GetState\",grpc_server_status=\"FAILED_PRECONDITION\""
        ),
        "{caller}"
    );

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
        // Dapr's own names (`dapr_http_server_request_count`, `dapr_http_client_completed_count`) break two naming
        // lints; they are kept because dashboards match on them.
        let dapr_suffix_lint = line.starts_with("dapr_")
            && (line.contains("counter metrics should have \"_total\" suffix")
                || line.contains("should not have \"_count\" suffix"));
        assert!(dapr_suffix_lint, "promtool: {line}\n{report}");
    }
    let _ = path_str(&file);

    // Sentry: Dapr's signing counters (two sidecars signed) and the issuer's expiry.
    let sentry = http.get(&mesh.sentry.metrics, "/metrics").text();
    assert!(sample(&sentry, "dapr_sentry_cert_sign_request_received_total").is_some_and(|n| n >= 2.0), "{sentry}");
    assert!(sample(&sentry, "dapr_sentry_cert_sign_success_total").is_some_and(|n| n >= 2.0), "{sentry}");
    assert!(sample(&sentry, "dapr_sentry_issuercert_expiry_timestamp").is_some_and(|t| t > 1.7e9), "{sentry}");
    assert_eq!(http.get(&mesh.sentry.healthz, "/metrics").status, 404, "metrics only on the metrics listener");
}

/// `--log-as-json`: every log line is one JSON object with daprd's keys; API log lines too; no token in any line.
#[test]
fn log_as_json_lines_carry_daprds_keys() {
    let mesh = Mesh::start(&[]);
    let resources = mesh.dir.path().join("jsonlogs-resources");
    std::fs::create_dir_all(&resources).unwrap();
    std::fs::write(
        resources.join("bus.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: bus\nspec:\n  type: pubsub.in-memory\n  \
         version: v1\n  metadata: []\n",
    )
    .unwrap();
    let mut spec = SidecarSpec::new("jsonlogs", None);
    spec.extra = vec![
        "--log-as-json".into(),
        "--enable-api-logging".into(),
        "--resources-path".into(),
        resources.to_str().unwrap().into(),
    ];
    spec.env = vec![("DAPR_API_TOKEN".into(), "json-log-secret-token".into())];
    let sidecar = mesh.sidecar(spec);
    let http = Http::new();
    let reply =
        http.send("GET", &sidecar.http, "/v1.0/metadata", &[("dapr-api-token", "json-log-secret-token")], vec![]);
    assert_eq!(reply.status, 200);
    support::eventually(std::time::Duration::from_secs(5), "an API log line", || {
        sidecar.process.stderr_text().contains("/v1.0/metadata").then_some(())
    });
    // An audited decision (a publish the topic scopes allow): on stderr it is a log object like every other line.
    let token = [("dapr-api-token", "json-log-secret-token")];
    assert_eq!(http.send("POST", &sidecar.http, "/v1.0/publish/bus/t", &token, b"x".to_vec()).status, 204);
    let audit_line = support::eventually(std::time::Duration::from_secs(5), "an audit log line", || {
        sidecar.process.stderr_text().lines().find(|l| l.contains("\"msg\":\"audit\"")).map(str::to_owned)
    });
    let audit: serde_json::Value = serde_json::from_str(&audit_line).unwrap();
    assert_eq!(audit["event"], "PUBSUB_PUBLISH_ALLOW", "{audit_line}");
    assert_eq!(audit["scope"], "ward.audit", "{audit_line}");
    assert!(audit.get("decision").is_some() && audit.get("operation").is_some(), "{audit_line}");
    let stderr = sidecar.process.stderr_text();
    assert!(!stderr.contains("json-log-secret-token"), "a token reached the log");
    // A refused token counts as an authorization decision of the token layer, without the token.
    assert_eq!(http.send("GET", &sidecar.http, "/v1.0/metadata", &[("dapr-api-token", "wrong")], vec![]).status, 401);
    let metrics = http.get(&sidecar.metrics, "/metrics").text();
    assert!(
        metrics.contains("ward_authz_decisions_total{decision=\"deny\",layer=\"token\",reason=\"mismatch\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("wrong") && !metrics.contains("json-log-secret-token"));
    let mut lines = 0;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["time", "level", "msg", "scope", "type", "app_id", "instance", "ver"] {
            assert!(value.get(key).is_some(), "no {key} in {line}");
        }
        assert_eq!(value["type"], "log");
        assert_eq!(value["app_id"], "jsonlogs");
        lines += 1;
    }
    assert!(lines >= 2, "{stderr}");
}

/// The alert rules in `docs/grafana/alerts.yaml` load in Prometheus, and every metric the dashboard and the rules
/// query is one ward exports.
#[test]
fn documented_alerts_and_dashboard_use_real_metrics() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana");
    let out = Command::new("promtool")
        .args(["check", "rules", path_str(&docs.join("alerts.yaml"))])
        .output()
        .expect("promtool (apt-get install prometheus; .ci/run does) is needed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let dashboard = std::fs::read_to_string(docs.join("ward-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let rules = std::fs::read_to_string(docs.join("alerts.yaml")).unwrap();
    let exported = [
        "dapr_runtime_service_invocation_req_sent_total",
        "dapr_runtime_service_invocation_res_recv_latency_ms_bucket",
        "dapr_runtime_acl_app_policy_action_blocked_total",
        "dapr_runtime_acl_global_policy_action_blocked_total",
        "dapr_http_server_request_count",
        "ward_authz_decisions_total",
        "ward_mcp_tool_decisions_total",
        "ward_svid_expiry_timestamp_seconds",
        "ward_audit_dropped_total",
        "ward_config_reload_total",
        "dapr_sentry_cert_sign_success_total",
        "dapr_sentry_cert_sign_failure_total",
        "dapr_sentry_issuercert_expiry_timestamp",
    ];
    for text in [&dashboard, &rules] {
        for name in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("dapr_") || w.starts_with("ward_"))
        {
            assert!(exported.contains(&name), "{name} is queried but not exported");
        }
    }
}
