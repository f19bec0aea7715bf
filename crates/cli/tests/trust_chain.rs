//! The four-layer trust chain end to end (issue 15), with real processes: `ward sentry`, sidecars with mTLS (and,
//! for development mode, without), recording apps. Layer three: capabilities per route after the ACL (allowed,
//! missing → 403 naming it with the app never called and an audit line, no route, grants by SPIFFE ID, hot
//! reload). Layer four: the `ward-provenance` token the app gets (claims, the caller's forged copy removed, JWKS
//! behind the API token), checked by the Rust verifier and by the Python one (`clients/python`, run with
//! `python3`): a real token accepted; forged, expired, replayed, other-path tokens and a call straight to the app
//! port refused. Development mode: a marker matches no app policy; a production verifier refuses a dev token.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::mesh::{Http, Mesh, SidecarProcess, SidecarSpec, TestApp};
use support::{Ward, eventually, field, path_str};

const CALLEE: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: tables
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: workflow-runtime
      namespace: default
      trustDomain: public
      defaultAction: allow
    - appId: analytics
      namespace: default
      trustDomain: public
      defaultAction: allow
  ward:
    capabilities:
      grants:
      - appId: workflow-runtime
        namespace: default
        capabilities: ["managed-table:agent-create", "secrets:internal"]
      - spiffeId: spiffe://public/ns/default/analytics
        capabilities: ["managed-table:read"]
      routes:
      - name: /tables/agent/**
        httpVerb: [POST]
        requires: ["managed-table:agent-create"]
      - name: /tables/*/rows
        httpVerb: [GET]
        requires: ["managed-table:read"]
"#;

const API_TOKEN: &str = "callee-api-token-0123456789";

struct Chain {
    mesh: Mesh,
    app: TestApp,
    callee: SidecarProcess,
    workflow: SidecarProcess,
    analytics: SidecarProcess,
    config: PathBuf,
    audit: PathBuf,
}

fn chain() -> Chain {
    let mesh = Mesh::start(&[]);
    let app = TestApp::start();
    let config = mesh.write("tables.yaml", CALLEE);
    let audit = mesh.dir.path().join("audit.log");
    let mut spec = SidecarSpec::new("callee", Some(app.addr.port()));
    spec.config = Some(&config);
    spec.extra = vec!["--audit-log".into(), path_str(&audit).into()];
    spec.env = vec![("DAPR_API_TOKEN".into(), API_TOKEN.into())];
    let callee = mesh.sidecar(spec);
    let workflow = mesh.sidecar(SidecarSpec::new("workflow-runtime", None));
    let analytics = mesh.sidecar(SidecarSpec::new("analytics", None));
    Chain { mesh, app, callee, workflow, analytics, config, audit }
}

fn jwks(http: &Http, callee: &SidecarProcess) -> ward_provenance::Jwks {
    let reply =
        http.send("GET", &callee.http, "/v1.0-alpha1/ward/provenance/jwks", &[("dapr-api-token", API_TOKEN)], vec![]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_slice(&reply.body).expect("a JWKS document")
}

fn last_token(app: &TestApp) -> Option<String> {
    app.seen().last().and_then(|s| s.headers.get("ward-provenance").cloned())
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn capabilities_decide_after_the_acl_and_the_app_gets_a_verifiable_token() {
    let c = chain();
    let http = Http::new();
    let keys = jwks(&http, &c.callee);
    assert_eq!(keys.keys.len(), 1);
    let verify = |token: Option<&str>, method: &str, path: &str| {
        ward_provenance::verify(token, method, path, "callee", &keys, true)
    };

    // Allowed route with the capability; the caller's forged token never reaches the app.
    let reply = http.send(
        "POST",
        &c.workflow.http,
        "/v1.0/invoke/callee/method/tables/agent/new?x=1",
        &[("ward-provenance", "forged.by.the.caller")],
        b"{}".to_vec(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = c.app.seen();
    assert_eq!(seen.len(), 1);
    let token = last_token(&c.app).expect("a provenance token");
    assert_ne!(token, "forged.by.the.caller");
    let v = verify(Some(&token), "POST", "/tables/agent/new?x=1").expect("the token verifies");
    assert_eq!(v.caller, "spiffe://public/ns/default/workflow-runtime");
    assert_eq!(v.capabilities, ["managed-table:agent-create"]);
    assert!(!v.dev);
    let claims = &v.claims;
    assert_eq!(claims.iss, "spiffe://public/ns/default/callee");
    assert_eq!(claims.aud, "callee");
    assert_eq!((claims.htm.as_str(), claims.htu.as_str()), ("POST", "/tables/agent/new"));
    assert!(claims.exp > claims.iat && claims.exp - claims.iat <= 60);
    assert_eq!(claims.dev, None);

    // ACL allows, capability missing: 403 naming it (and nothing the caller holds), the app never called, audited.
    let reply = http.send("POST", &c.analytics.http, "/v1.0/invoke/callee/method/tables/agent/x", &[], vec![]);
    assert_eq!(reply.status, 403, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("PermissionDenied"), "{message}");
    assert!(message.contains("missing capability managed-table:agent-create"), "{message}");
    assert!(!message.contains("managed-table:read"), "the caller's grants are not echoed: {message}");
    assert_eq!(c.app.seen().len(), 1, "a refused call never reaches the app");
    let deny = eventually(Duration::from_secs(5), "the capability audit line", || {
        audit_lines(&c.audit).into_iter().find(|l| l["reason"] == "missing capability managed-table:agent-create")
    });
    assert_eq!(deny["event"], "AUTH_INTERNAL_DENY");
    assert_eq!(deny["caller"], "spiffe://public/ns/default/analytics");
    assert_eq!(deny["rule"], "spec.ward.capabilities.routes[0] (/tables/agent/**)");
    let allow = audit_lines(&c.audit)
        .into_iter()
        .find(|l| l["reason"] == "capabilities used: managed-table:agent-create")
        .expect("the allow is audited with the capabilities used");
    assert_eq!(allow["event"], "AUTH_INTERNAL_ALLOW");

    // Grant by SPIFFE ID.
    let reply = http.get(&c.analytics.http, "/v1.0/invoke/callee/method/tables/t1/rows");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = verify(last_token(&c.app).as_deref(), "GET", "/tables/t1/rows").expect("verifies");
    assert_eq!(v.capabilities, ["managed-table:read"]);

    // No route: the ACL alone; the token is still set, with no capability.
    let reply = http.get(&c.analytics.http, "/v1.0/invoke/callee/method/health");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = verify(last_token(&c.app).as_deref(), "GET", "/health").expect("verifies");
    assert!(v.capabilities.is_empty());
    assert_eq!(v.caller, "spiffe://public/ns/default/analytics");

    // The JWKS is behind the API token like every API.
    assert_eq!(http.get(&c.callee.http, "/v1.0-alpha1/ward/provenance/jwks").status, 401);

    // A request sent straight to the app's port carries no token: refused by the verifier.
    let direct = http.get(&c.app.addr.to_string(), "/tables/t1/rows");
    assert_eq!(direct.status, 200, "the test app answers anything");
    assert!(last_token(&c.app).is_none());
    assert_eq!(verify(None, "GET", "/tables/t1/rows").unwrap_err(), ward_provenance::ProvenanceError::Missing);
}

#[test]
fn grants_and_routes_are_hot_reloaded() {
    let c = chain();
    let http = Http::new();
    let path = "/v1.0/invoke/callee/method/tables/agent/x";
    assert_eq!(http.send("POST", &c.analytics.http, path, &[], vec![]).status, 403);
    // Grant analytics the capability (write a new file and rename it over the old one, as docs/sidecar.md says).
    let granted = CALLEE.replace(
        r#"capabilities: ["managed-table:read"]"#,
        r#"capabilities: ["managed-table:read", "managed-table:agent-create"]"#,
    );
    let tmp = c.mesh.write("tables.yaml.tmp", &granted);
    std::fs::rename(&tmp, &c.config).unwrap();
    eventually(Duration::from_secs(10), "the new grant", || {
        (http.send("POST", &c.analytics.http, path, &[], vec![]).status == 200).then_some(())
    });
    // And a new route takes effect the same way.
    let routed = granted
        .replace("      routes:\n", "      routes:\n      - name: /health\n        requires: [\"ops:health\"]\n");
    let tmp = c.mesh.write("tables.yaml.tmp", &routed);
    std::fs::rename(&tmp, &c.config).unwrap();
    eventually(Duration::from_secs(10), "the new route", || {
        let reply = http.get(&c.analytics.http, "/v1.0/invoke/callee/method/health");
        (reply.status == 403 && reply.text().contains("missing capability ops:health")).then_some(())
    });
}

/// The interpreter for the Python verifier: `$WARD_TEST_PYTHON`, else the venv `scripts/test-venv.sh` prepares
/// (it installs `cryptography`; `.ci/run` runs it first), else `python3`, whichever can import `cryptography`.
fn python() -> String {
    let venv = std::env::var("WARD_SDK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ward/sdk-venv"));
    let mut candidates: Vec<String> = std::env::var("WARD_TEST_PYTHON").into_iter().collect();
    candidates.push(venv.join("bin/python").to_string_lossy().into_owned());
    candidates.push("python3".to_owned());
    for candidate in candidates {
        let ok = std::process::Command::new(&candidate)
            .args(["-c", "import cryptography"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate;
        }
    }
    panic!("no Python with the `cryptography` package: run scripts/test-venv.sh");
}

const PY_CHECKS: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import ward_provenance as wp
d = json.load(sys.stdin)
out = {}
cache = wp.ReplayCache()
def run(name, token, **kw):
    args = dict(method="POST", path=d["path"], audience="callee", jwks=d["jwks"], production=True, replay_cache=cache)
    args.update(kw)
    try:
        v = wp.verify(token, **args)
        out[name] = "ok " + v.caller + " " + ",".join(v.capabilities)
    except wp.ProvenanceError as e:
        out[name] = type(e).__name__
h, p, s = d["token"].split(".")
other_sig = d["other"].split(".")[2]
run("real", d["token"])
run("forged", h + "." + d["other"].split(".")[1] + "." + s)
run("foreign signature", h + "." + p + "." + other_sig)
run("expired", d["token"], now=d["iat"] + 120)
run("replayed", d["token"])
run("other path", d["token"], path="/tables/agent/other")
run("direct", d["direct"])
print(json.dumps(out, sort_keys=True))
"#;

#[test]
fn the_python_verifier_accepts_a_real_token_and_refuses_the_rest() {
    let c = chain();
    let http = Http::new();
    let path = "/tables/agent/py";
    let send = || http.send("POST", &c.workflow.http, &format!("/v1.0/invoke/callee/method{path}"), &[], vec![]);
    assert_eq!(send().status, 200);
    let token = last_token(&c.app).expect("token");
    assert_eq!(send().status, 200);
    let other = last_token(&c.app).expect("token");
    // Straight to the app port.
    http.send("POST", &c.app.addr.to_string(), path, &[], vec![]);
    let direct = last_token(&c.app);
    assert!(direct.is_none());
    let iat = ward_provenance::verify(Some(&other), "POST", path, "callee", &jwks(&http, &c.callee), true)
        .expect("verifies")
        .claims
        .iat;
    let input = serde_json::json!({
        "token": token, "other": other, "direct": direct, "path": path, "iat": iat,
        "jwks": serde_json::to_value(jwks(&http, &c.callee)).unwrap(),
    });
    let script = c.mesh.write("checks.py", PY_CHECKS);
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python");
    let mut child = std::process::Command::new(python())
        .args([path_str(&script), path_str(&clients)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the Python verifier did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let results: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON results");
    let expected = serde_json::json!({
        "real": "ok spiffe://public/ns/default/workflow-runtime managed-table:agent-create",
        "forged": "BadSignature",
        "foreign signature": "BadSignature",
        "expired": "Expired",
        "replayed": "Replayed",
        "other path": "PathMismatch",
        "direct": "MissingToken",
    });
    assert_eq!(results, expected);
}

/// Development mode (no mTLS): the caller's sidecar sends a development marker. It matches no app policy (the
/// global `defaultAction` applies), and the token the app gets says `dev: true`, which a production verifier
/// refuses.
#[test]
fn development_markers_match_no_app_policy_and_dev_tokens_are_refused_in_production() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let app = TestApp::start();
    // Globally allowed; the caller's own policy would deny it everything, if it matched.
    let config = dir.path().join("dev.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: dev\nspec:\n  accessControl:\n    \
         defaultAction: allow\n    trustDomain: public\n    policies:\n    - appId: caller\n      namespace: default\n      \
         trustDomain: public\n      defaultAction: deny\n  ward:\n    provenance:\n      enabled: true\n    capabilities:\n      \
         grants:\n      - appId: caller\n        namespace: default\n        capabilities: [orders:write]\n      routes:\n      \
         - name: /orders/**\n        requires: [orders:write]\n",
    )
    .unwrap();
    let port = app.addr.port().to_string();
    let spawn = |app_id: &str, extra: &[&str]| {
        let mut args = vec![
            "sidecar",
            "--app-id",
            app_id,
            "--dapr-http-port",
            "0",
            "--dapr-internal-grpc-port",
            "0",
            "--dapr-grpc-port",
            "0",
        ];
        args.extend_from_slice(extra);
        let mut process = Ward::spawn(app_id, &args, &[("WARD_HOME", path_str(&home))]);
        let line = process.wait_stdout("ward sidecar ready:", Duration::from_secs(20));
        (field(&line, "http"), process)
    };
    let (callee_http, _callee) = spawn("callee", &["--app-port", &port, "--config", path_str(&config)]);
    let (caller_http, _caller) = spawn("caller", &[]);
    let http = Http::new();

    let reply = http.send("POST", &caller_http, "/v1.0/invoke/callee/method/checkout", &[], vec![]);
    assert_eq!(reply.status, 200, "the caller's deny-all policy must not apply to a marker: {}", reply.text());
    let token = last_token(&app).expect("a development token");
    // A marker holds no grant either.
    let reply = http.send("POST", &caller_http, "/v1.0/invoke/callee/method/orders/1", &[], vec![]);
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("missing capability orders:write"), "{}", reply.text());

    let reply = http.get(&callee_http, "/v1.0-alpha1/ward/provenance/jwks");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let keys: ward_provenance::Jwks = serde_json::from_slice(&reply.body).unwrap();
    let err = ward_provenance::verify(Some(&token), "POST", "/checkout", "callee", &keys, true).unwrap_err();
    assert_eq!(err, ward_provenance::ProvenanceError::DevTokenInProduction);
    let v = ward_provenance::verify(Some(&token), "POST", "/checkout", "callee", &keys, false).expect("dev app");
    assert!(v.dev);
    assert_eq!(v.caller, "dev:caller");
}
