//! `ward policy check` / `lint` and the sidecar's refusal to start in production mode without mTLS.

mod support;

use support::ward_output;

const CONFIG: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: c
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
      - name: /orders/*
        httpVerb: ['POST']
        action: allow
"#;

#[test]
fn policy_check_explains_and_exits_by_decision() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let c = config.to_str().unwrap();
    let check = |caller: &str, verb: &str, path: &str| {
        ward_output(&["policy", "check", "--config", c, "--caller", caller, "--verb", verb, "--path", path], &[])
    };
    let (code, out, _) = check("spiffe://public/ns/default/checkout", "POST", "/orders/1");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("allow") && out.contains("policies[0].operations[0].httpVerb[0]"), "{out}");
    let (code, out, _) = check("spiffe://public/ns/default/checkout", "DELETE", "/orders/1");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("policies[0].defaultAction"), "{out}");
    let (code, out, _) = check("spiffe://public/ns/other/checkout", "POST", "/orders/1");
    assert_eq!(code, 1, "wrong namespace: {out}");
    assert!(out.contains("global defaultAction"), "{out}");
    let (code, out, _) = check("spiffe://evil/ns/default/checkout", "POST", "/orders/1");
    assert_eq!(code, 1, "wrong trust domain: {out}");
    let (code, out, _) = check("spiffe://public/ns/default/checkout", "POST", "/orders%2F..%2Fadmin");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused before any policy"), "{out}");
    // Issue 11 item 7 / issue 12 rows 2 and 8: the sidecar's decision function, refusals included.
    let (code, out, _) = check("spiffe://public/ns/default/checkout", "FOO", "/orders/1");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused before any policy") && out.contains("unsupported HTTP method \"FOO\""), "{out}");
    let (code, out, _) = check("spiffe://public/ns/default/checkout", "post", "/ORDERS/1");
    assert_eq!(code, 0, "verbs and ASCII letters fold: {out}");
    assert!(out.contains("verb POST"), "{out}");
    let (code, out, _) = check("spiffe://public/ns/default/checkout", "POST", "/orders/%C4%B1");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("could be read as ASCII"), "{out}");
    let grpc = ["policy", "check", "--config", c, "--caller", "spiffe://public/ns/default/checkout", "--grpc"];
    let (code, out, _) =
        ward_output(&[&grpc[..], &["--path", "/dapr.proto.runtime.v1.AppCallback/OnInvoke"]].concat(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("reserved"), "{out}");

    let (code, out, _) = ward_output(&["policy", "lint", "--config", c], &[]);
    assert_eq!(code, 0, "{out}");
    let risky = dir.path().join("risky.yaml");
    std::fs::write(
        &risky,
        CONFIG.replace("defaultAction: deny\n    trustDomain", "defaultAction: allow\n    trustDomain"),
    )
    .unwrap();
    let (code, out, _) = ward_output(&["policy", "lint", "--config", risky.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("defaultAction is allow"), "{out}");
    let confusable = dir.path().join("confusable.yaml");
    std::fs::write(&confusable, CONFIG.replace("/orders/*", "/ſecret/*")).unwrap();
    let (code, out, _) = ward_output(&["policy", "lint", "--config", confusable.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("never matches"), "{out}");
}

#[test]
fn production_mode_refuses_to_start_without_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let (code, _, err) =
        ward_output(&["sidecar", "--app-id", "x", "--dapr-http-port", "0", "--production"], &[("WARD_HOME", home)]);
    assert_ne!(code, 0);
    assert!(err.contains("production mode (from --production) requires mTLS"), "{err}");
    let (code, _, err) = ward_output(&["sidecar", "--app-id", "x", "--app-protocol", "grpcs"], &[("WARD_HOME", home)]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Issue 26 defect 3: a 300-character `accessControl.trustDomain` is refused by `ward policy check` and by the
/// sidecar alike, with one line naming file, resource and field and a value cut to about 100 characters.
#[test]
fn an_over_long_trust_domain_is_refused_by_policy_check_and_sidecar_alike() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let config = dir.path().join("long-td.yaml");
    std::fs::write(
        &config,
        CONFIG.replace(
            "    trustDomain: public\n    policies",
            &format!("    trustDomain: {}\n    policies", "a".repeat(300)),
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let check_line = |who: &str, code: i32, err: &str| {
        assert_ne!(code, 0, "{who} accepted the file: {err}");
        // Start-up logging may precede it; the error itself is exactly one line.
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("ward: error:")).collect();
        assert_eq!(errors.len(), 1, "{who}: one error line: {err}");
        let line = errors[0];
        assert!(err.trim_end().ends_with(line), "{who}: nothing after the error line: {err}");
        assert!(line.contains(c), "{who}: names the file: {line}");
        assert!(line.contains("Configuration \"c\""), "{who}: names the resource: {line}");
        assert!(line.contains("spec.accessControl.trustDomain"), "{who}: names the field: {line}");
        assert!(line.contains(&format!("\"{}\"…", "a".repeat(100))), "{who}: value cut at 100: {line}");
        assert!(!line.contains(&"a".repeat(101)), "{who}: value cut at 100: {line}");
        assert!(line.len() < 300 + c.len(), "{who}: {} bytes: {line}", line.len());
    };
    let (code, _, err) = ward_output(
        &["policy", "check", "--config", c, "--caller", "spiffe://public/ns/default/checkout", "--path", "/orders/1"],
        &[],
    );
    check_line("policy check", code, &err);
    let (code, _, err) = ward_output(&["policy", "lint", "--config", c], &[]);
    check_line("policy lint", code, &err);
    let (code, _, err) = ward_output(
        &["sidecar", "--app-id", "x", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--config", c],
        &[("WARD_HOME", home)],
    );
    check_line("sidecar", code, &err);
}

const CAPABILITIES: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: tables
spec:
  accessControl:
    defaultAction: allow
  ward:
    capabilities:
      grants:
      - appId: workflow-runtime
        namespace: default
        capabilities: ["managed-table:agent-create", "secrets:internal"]
      - appId: analytics
        namespace: default
        capabilities: ["managed-table:read", "managed-table:export"]
      routes:
      - name: /tables/agent/**
        httpVerb: [POST]
        requires: ["managed-table:agent-create"]
      - name: /tables/*/rows
        httpVerb: [GET]
        requires: ["managed-table:read"]
      - name: /vault/**
        requires: ["vault:open"]
"#;

#[test]
fn policy_check_explains_capabilities_and_lint_finds_unused_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tables.yaml");
    std::fs::write(&config, CAPABILITIES).unwrap();
    let c = config.to_str().unwrap();
    let check = |caller: &str, verb: &str, path: &str| {
        ward_output(&["policy", "check", "--config", c, "--caller", caller, "--verb", verb, "--path", path], &[])
    };
    let (code, out, _) = check("spiffe://public/ns/default/analytics", "POST", "/tables/agent/new");
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("accessControl: allow"), "{out}");
    assert!(out.contains("routes[0] (/tables/agent/**) requires [managed-table:agent-create]"), "{out}");
    assert!(out.contains("caller holds [managed-table:read, managed-table:export]"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("deny: missing capability managed-table:agent-create (spec.ward.capabilities.routes[0])"),
        "{out}"
    );

    let (code, out, _) = check("spiffe://public/ns/default/analytics", "GET", "/tables/t1/rows");
    assert_eq!(code, 0, "{out}");
    assert!(out.trim_end().ends_with("allow"), "{out}");

    let (code, out, _) = check("spiffe://public/ns/default/analytics", "GET", "/health");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no route applies"), "{out}");

    let (code, out, _) = ward_output(&["policy", "lint", "--config", c], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("routes[2] (/vault/**): requires \"vault:open\", which no grant holds"), "{out}");
    assert!(
        out.contains("(spiffe://public/ns/default/analytics): capability \"managed-table:export\" is never required"),
        "{out}"
    );
    assert!(
        out.contains(
            "(spiffe://public/ns/default/workflow-runtime): capability \"secrets:internal\" is never required"
        ),
        "{out}"
    );

    // A bad capability name is a load error naming the field, for the CLI as for a sidecar.
    std::fs::write(&config, CAPABILITIES.replace("vault:open", "Vault:Open")).unwrap();
    let (code, _, err) = ward_output(&["policy", "lint", "--config", c], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("spec.ward.capabilities: routes[2].requires[0]: invalid capability name"), "{err}");
}

#[test]
fn policy_check_explains_mcp_tool_decisions_and_lint_warns_about_unbounded_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcp.yaml");
    let mcp = "  ward:\n    mcp:\n      endpoint: /mcp\n      rules:\n      - callers: [checkout]\n        allow: [search, \"read_*\"]\n      - callers: [ops]\n        allow: [\"*\"]\n";
    std::fs::write(&config, format!("{CONFIG}{mcp}")).unwrap();
    let c = config.to_str().unwrap();
    let check = |caller: &str, tool: &str| {
        ward_output(&["policy", "check", "--config", c, "--mcp", "--caller", caller, "--tool", tool], &[])
    };
    let (code, out, _) = check("spiffe://public/ns/default/checkout", "read_file");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("allow") && out.contains("spec.ward.mcp.rules[0].allow[1]"), "{out}");
    let (code, out, _) = check("spiffe://public/ns/default/checkout", "delete_repo");
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("deny") && out.contains("spec.ward.mcp.defaultAction"), "{out}");
    let (code, out, _) = check("spiffe://public/ns/prod/checkout", "search");
    assert_eq!(code, 1, "an app id matches only in the server's namespace: {out}");
    let (code, out, _) = ward_output(&["policy", "lint", "--config", c], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("spec.ward.mcp.rules[1]: allows every tool"), "{out}");
    assert!(!out.contains("rules[0]"), "{out}");
}
