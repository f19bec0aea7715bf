//! Regression tests for the security review's findings (issue "Hardening: thirteen findings"), one per row, named
//! after the finding, on real processes: `ward sentry`, `ward sidecar`s with mTLS, recording apps. Each test also
//! asserts the app was never reached where the finding was a bypass.

mod support;

use std::time::Duration;

use support::mesh::{Http, Mesh, SidecarProcess, SidecarSpec, TestApp};
use support::{eventually, path_str, ward_output};

/// The review's callee: global deny; `checkout` may do anything except `/admin` (any verb).
const ORDERS_ACL: &str = r#"
apiVersion: dapr.io/v1alpha1
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
      defaultAction: allow
      operations:
      - name: /admin
        httpVerb: ['*']
        action: deny
"#;

struct Review {
    mesh: Mesh,
    orders_app: TestApp,
    orders: SidecarProcess,
    checkout: SidecarProcess,
    orders_config: std::path::PathBuf,
}

fn review(orders_config: &str, orders_extra: &[&str], checkout_config: Option<&str>) -> Review {
    let mesh = Mesh::start(&[]);
    let orders_app = TestApp::start();
    let orders_config_path = mesh.write("orders.yaml", orders_config);
    let mut spec = SidecarSpec::new("orders", Some(orders_app.addr.port()));
    spec.config = Some(&orders_config_path);
    spec.extra = orders_extra.iter().map(|s| s.to_string()).collect();
    spec.env = vec![("APP_API_TOKEN".into(), "orders-app-token".into())];
    let orders = mesh.sidecar(spec);
    let checkout_config_path = checkout_config.map(|c| mesh.write("checkout.yaml", c));
    let mut spec = SidecarSpec::new("checkout", None);
    spec.config = checkout_config_path.as_deref();
    spec.env = vec![("DAPR_API_TOKEN".into(), "checkout-api-token".into())];
    let checkout = mesh.sidecar(spec);
    Review { mesh, orders_app, orders, checkout, orders_config: orders_config_path }
}

const TOKEN: (&str, &str) = ("dapr-api-token", "checkout-api-token");

/// Runs a development-mode sidecar (no mTLS) with `config` to completion: for configurations it must refuse.
fn plaintext_sidecar_once(app_id: &str, config: &std::path::Path, home: &std::path::Path) -> (i32, String, String) {
    let args = [
        "sidecar",
        "--app-id",
        app_id,
        "--dapr-http-port",
        "0",
        "--dapr-grpc-port",
        "0",
        "--dapr-internal-grpc-port",
        "0",
        "--config",
        path_str(config),
    ];
    ward_output(&args, &[("WARD_HOME", path_str(home))])
}

#[test]
fn finding_01_production_mode_in_the_configuration_requires_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prod.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: prod\nspec:\n  ward:\n    productionMode: true\n",
    )
    .unwrap();
    let (code, _, stderr) = plaintext_sidecar_once("transfer", &config, dir.path());
    assert_ne!(code, 0, "a production sidecar without mTLS must not start; stderr:\n{stderr}");
    let error = stderr.lines().find(|l| l.contains("requires mTLS")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(error.contains("prod.yaml: spec.ward.productionMode"), "names the file and field: {error}");
}

#[test]
fn finding_02_nonstandard_http_methods_are_refused_before_the_acl() {
    let r = review(ORDERS_ACL, &[], None);
    let http = Http::new();
    for verb in ["FOO", "PROPFIND"] {
        let reply = http.send(verb, &r.checkout.http, "/v1.0/invoke/orders/method/admin", &[TOKEN], vec![]);
        assert_eq!(reply.status, 405, "{verb}: {}", reply.text());
        assert_eq!(reply.json()["errorCode"], "ERR_MALFORMED_REQUEST");
        assert!(reply.json()["message"].as_str().unwrap().contains(verb), "names the method: {}", reply.text());
        let reply = http.send(verb, &r.checkout.http, "/v1.0/invoke/orders/method/ok", &[TOKEN], vec![]);
        assert_eq!(reply.status, 405, "also where the app default would allow: {}", reply.text());
    }
    assert!(r.orders_app.seen().is_empty(), "the app never saw a non-standard method");
    // The standard methods, in any ASCII case, work as before.
    let reply = http.send("get", &r.checkout.http, "/v1.0/invoke/orders/method/ok", &[TOKEN], vec![]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = http.send("get", &r.checkout.http, "/v1.0/invoke/orders/method/admin", &[TOKEN], vec![]);
    assert_eq!(reply.status, 403, "{}", reply.text());
}

#[test]
fn finding_03_healthz_spellings_never_skip_the_token_into_invocation() {
    let r = review(ORDERS_ACL, &[], None);
    let http = Http::new();
    for path in ["/v1.0/healthz/?q=x", "//v1.0/healthz", "/v1.0/healthz/", "/v1.0/healthz/outbound/", "/V1.0/HEALTHZ"] {
        let reply = http.send("GET", &r.checkout.http, path, &[("dapr-app-id", "orders")], vec![]);
        assert_ne!(reply.status, 200, "{path}: {}", reply.text());
        let reply = http.send("GET", &r.checkout.http, path, &[("dapr-app-id", "orders"), TOKEN], vec![]);
        assert_ne!(reply.status, 200, "{path} is never an invocation, even with the token: {}", reply.text());
    }
    assert!(r.orders_app.seen().is_empty(), "nothing reached the app: {:?}", r.orders_app.seen());
    assert_eq!(http.get(&r.checkout.http, "/v1.0/healthz").status, 204, "the real health check stays open");
}

#[test]
fn finding_04_api_lists_gate_invocation_by_header() {
    let denied = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  api:\n    denied:\n    - name: invoke\n      version: v1.0\n";
    let r = review(ORDERS_ACL, &[], Some(denied));
    let http = Http::new();
    let reply = http.send("POST", &r.checkout.http, "/orders", &[("dapr-app-id", "orders"), TOKEN], vec![]);
    assert_eq!(reply.status, 404, "{}", reply.text());
    let reply = http.send("POST", &r.checkout.http, "/v1.0/invoke/orders/method/orders", &[TOKEN], vec![]);
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(r.orders_app.seen().is_empty());

    let allowed_state = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  api:\n    allowed:\n    - name: state\n      version: v1.0\n";
    let r = review(ORDERS_ACL, &[], Some(allowed_state));
    let reply = http.send("GET", &r.checkout.http, "/v1.0/stateful/x", &[("dapr-app-id", "orders"), TOKEN], vec![]);
    assert_eq!(reply.status, 404, "{}", reply.text());
    let reply = http.send("POST", &r.checkout.http, "/orders", &[("dapr-app-id", "orders"), TOKEN], vec![]);
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(r.orders_app.seen().is_empty());
}

#[test]
fn finding_10_a_reload_that_drops_access_control_keeps_the_policy_in_production() {
    let r = review(ORDERS_ACL, &["--production"], None);
    let http = Http::new();
    let denied = || http.send("GET", &r.checkout.http, "/v1.0/invoke/orders/method/admin", &[TOKEN], vec![]).status;
    assert_eq!(denied(), 403);
    // A half-written file: the header and no accessControl. Written by rename, so the watcher sees it whole.
    let next = r.mesh.dir.path().join("orders.yaml.new");
    std::fs::write(&next, "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: orders\nspec: {}\n")
        .unwrap();
    std::fs::rename(&next, &r.orders_config).unwrap();
    // The watcher polls every 500 ms: for three seconds the denied call must stay denied (on the old code it
    // flipped to allowed within one poll).
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        assert_eq!(denied(), 403, "the old policy stays");
        std::thread::sleep(Duration::from_millis(100));
    }
    eventually(Duration::from_secs(10), "the refused reload to be logged", || {
        r.orders
            .process
            .stderr_text()
            .contains("spec.accessControl was removed; a production sidecar keeps")
            .then_some(())
    });
    assert!(r.orders_app.seen().is_empty());
}

#[test]
fn a_reload_with_a_syntax_error_keeps_the_old_acl() {
    let r = review(ORDERS_ACL, &[], None);
    let http = Http::new();
    let denied = || http.send("GET", &r.checkout.http, "/v1.0/invoke/orders/method/admin", &[TOKEN], vec![]).status;
    assert_eq!(denied(), 403);
    std::fs::write(&r.orders_config, "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec: [unclosed\n").unwrap();
    eventually(Duration::from_secs(10), "the refused reload to be logged", || {
        r.orders.process.stderr_text().contains("reload refused").then_some(())
    });
    assert_eq!(denied(), 403, "a denied call stays denied");
    assert!(r.orders_app.seen().is_empty());
}

#[test]
fn finding_11_a_denied_head_is_403_like_get() {
    let r = review(ORDERS_ACL, &[], None);
    let http = Http::new();
    let reply = http.send("HEAD", &r.checkout.http, "/v1.0/invoke/orders/method/admin", &[TOKEN], vec![]);
    assert_eq!(reply.status, 403);
    let reply = http.send("GET", &r.checkout.http, "/v1.0/invoke/orders/method/admin", &[TOKEN], vec![]);
    assert_eq!(reply.status, 403);
    assert!(r.orders_app.seen().is_empty());
    let reply = http.send("HEAD", &r.checkout.http, "/v1.0/invoke/orders/method/ok", &[TOKEN], vec![]);
    assert_eq!(reply.status, 200);
}

#[test]
fn a_pipeline_handler_naming_no_loaded_middleware_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: p\nspec:\n  appHttpPipeline:\n    handlers:\n    - name: bearer\n      type: middleware.http.bearer\n",
    )
    .unwrap();
    let (code, _, stderr) = plaintext_sidecar_once("a", &config, dir.path());
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("pipeline.yaml") && stderr.contains("spec.appHttpPipeline.handlers[0].name"), "{stderr}");
    assert!(stderr.contains("no middleware component named \"bearer\""), "{stderr}");
}

#[test]
fn production_from_the_configuration_with_mtls_refuses_plaintext_peers_and_dev_markers() {
    let prod = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: orders\nspec:\n  ward:\n    productionMode: true\n  accessControl:\n    defaultAction: allow\n";
    let r = review(prod, &[], None);
    // A local process speaking plaintext HTTP/2 to the internal port, claiming checkout with a dev marker.
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 20;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let internal = r.orders.internal.clone();
    let outcome = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(&internal).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = hyper::Request::builder()
            .method("POST")
            .uri(format!("http://{internal}/v1.0/internal/invoke/transfer"))
            .header("ward-dev-identity", format!("spiffe://public/ns/default/checkout;exp={exp}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok::<u16, String>(response.status().as_u16())
    });
    assert!(outcome.is_err(), "a plaintext peer got an answer: {outcome:?}");
    assert!(r.orders_app.seen().is_empty(), "nothing reached the app");
    // The mTLS path still works for a real peer.
    let reply = Http::new().send("POST", &r.checkout.http, "/v1.0/invoke/orders/method/transfer", &[TOKEN], vec![]);
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn unimplemented_settings_are_refused_in_production_and_warned_in_development() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("features.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: f\nspec:\n  features:\n  - name: Actors\n    enabled: true\n",
    )
    .unwrap();
    let mesh = Mesh::start(&[]);
    let mut spec = SidecarSpec::new("dev", None);
    spec.config = Some(&config);
    let dev = mesh.sidecar(spec);
    let stderr = dev.process.stderr_text();
    assert!(stderr.contains("features.yaml: spec.features[0]: NOT APPLIED"), "{stderr}");

    let mut spec = SidecarSpec::new("prod", None);
    spec.config = Some(&config);
    spec.extra = vec!["--production".into()];
    let (code, _, stderr) = mesh.sidecar_exit(spec);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("features.yaml: spec.features[0]"), "{stderr}");
}

/// Sends a raw request head; the status line, or `None` if the connection failed.
fn raw_status(addr: &str, head: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(head.as_bytes()).ok()?;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n]).lines().next().map(str::to_owned)
}

/// Reads until the peer closes the connection; `Some(elapsed)` if it did within `within`.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> Option<Duration> {
    use std::io::Read;
    let start = std::time::Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn finding_07_every_sidecar_listener_closes_slow_and_idle_clients_and_caps_connections() {
    use std::io::Write;
    let mesh = Mesh::start(&[]);
    let mut spec = SidecarSpec::new("slow", None);
    spec.extra = [
        "--header-read-timeout",
        "500ms",
        "--handshake-timeout",
        "500ms",
        "--idle-timeout",
        "1s",
        "--max-connections",
        "3",
    ]
    .map(String::from)
    .to_vec();
    let sidecar = mesh.sidecar(spec);
    let grpc = support::field(&sidecar.process.stdout_text(), "grpc");
    for (name, addr, first_bytes) in [
        ("public HTTP: half a request head", sidecar.http.as_str(), &b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n"[..]),
        ("public gRPC: half an HTTP/2 preface", grpc.as_str(), &b"PRI * HTTP/2.0\r\n"[..]),
        ("internal mTLS: no TLS handshake", sidecar.internal.as_str(), &b"\x16\x03\x01"[..]),
    ] {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(first_bytes).unwrap();
        let closed = closed_within(&mut stream, Duration::from_secs(5));
        assert!(closed.is_some_and(|t| t < Duration::from_secs(3)), "{name}: not closed in time ({closed:?})");
    }
    // An idle keep-alive connection on the public API is closed after --idle-timeout.
    let mut stream = std::net::TcpStream::connect(&sidecar.http).unwrap();
    stream.write_all(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(5));
    assert!(closed.is_some_and(|t| t >= Duration::from_millis(800)), "idle close too early or never: {closed:?}");
    // The cap: three connections held open, the fourth is closed at once; after one goes, a new one is served.
    let held: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(&sidecar.http).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut fourth = std::net::TcpStream::connect(&sidecar.http).unwrap();
    let _ = fourth.write_all(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let closed = closed_within(&mut fourth, Duration::from_millis(400));
    assert!(closed.is_some(), "a connection over the cap was served");
    drop(held);
    eventually(Duration::from_secs(5), "a connection to be served again after the others closed", || {
        raw_status(&sidecar.http, "GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .filter(|line| line.starts_with("HTTP/1.1 204"))
    });
}

/// A misspelt key inside `accessControl` is a load error in every mode: `defaultActon` must never fall back to the
/// global default (`allow` when absent).
#[test]
fn a_misspelt_access_control_key_is_refused_in_development_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("typo.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: typo\nspec:\n  accessControl:\n    defaultActon: deny\n",
    )
    .unwrap();
    let (code, _, stderr) = plaintext_sidecar_once("typo", &config, dir.path());
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("typo.yaml") && stderr.contains("spec.accessControl.defaultActon"), "{stderr}");
}

/// The one watcher reloads API logging with the rest of the snapshot (issue 11, item 5).
#[test]
fn a_reload_applies_api_logging() {
    let mesh = Mesh::start(&[]);
    let config = mesh
        .write("logging.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: l\nspec: {}\n");
    let mut spec = SidecarSpec::new("logged", None);
    spec.config = Some(&config);
    let sidecar = mesh.sidecar(spec);
    let http = Http::new();
    assert_eq!(http.get(&sidecar.http, "/v1.0/metadata?first").status, 200);
    let next = mesh.dir.path().join("logging.yaml.new");
    std::fs::write(
        &next,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: l\nspec:\n  logging:\n    apiLogging:\n      enabled: true\n",
    )
    .unwrap();
    std::fs::rename(&next, &config).unwrap();
    eventually(Duration::from_secs(10), "the reload", || {
        sidecar.process.stderr_text().contains("configuration or resources changed; reloaded").then_some(())
    });
    assert_eq!(http.get(&sidecar.http, "/v1.0/metadata").status, 200);
    eventually(Duration::from_secs(5), "the call in the API log", || {
        sidecar
            .process
            .stderr_text()
            .lines()
            .any(|l| l.contains("HTTP API Called") && l.contains("/v1.0/metadata"))
            .then_some(())
    });
}
