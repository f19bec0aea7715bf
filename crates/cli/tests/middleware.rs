//! Middleware pipelines end to end with real processes: `spec.appHttpPipeline` (bearer JWT + OPA) on a callee
//! reached through a caller's sidecar over mTLS, `spec.httpPipeline` (rate limit + bearer with OIDC discovery) on
//! the public API, and start-up refusals. Keys come from a loopback HTTPS server whose certificate is trusted
//! through the test's own root (`SSL_CERT_FILE` for the sidecar process).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::mesh::{Http, Mesh, SidecarSpec, TestApp};
use support::{eventually, path_str};

const AUDIENCE: &str = "mcp-server";

// --- a loopback HTTPS identity provider -----------------------------------------------------------------------

/// Serves `/jwks` and `/.well-known/openid-configuration` over HTTPS on 127.0.0.1.
struct Idp {
    url: String,
    jwks: Arc<Mutex<String>>,
    hits: Arc<Mutex<usize>>,
    ca_pem: String,
    _runtime: tokio::runtime::Runtime,
}

impl Idp {
    fn start() -> Idp {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let server_cert = params.signed_by(&server_key, &issuer).unwrap();

        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let jwks = Arc::new(Mutex::new(String::from(r#"{"keys":[]}"#)));
        let hits = Arc::new(Mutex::new(0));
        let (served, counted, issuer_url) = (jwks.clone(), hits.clone(), url.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, served, counted, issuer_url) =
                    (acceptor.clone(), served.clone(), counted.clone(), issuer_url.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = match req.uri().path() {
                            "/jwks" => {
                                *counted.lock().unwrap() += 1;
                                served.lock().unwrap().clone()
                            }
                            "/.well-known/openid-configuration" => {
                                json!({"issuer": issuer_url, "jwks_uri": format!("{issuer_url}/jwks")}).to_string()
                            }
                            _ => String::new(),
                        };
                        let status = if body.is_empty() { 404 } else { 200 };
                        let response = hyper::Response::builder()
                            .status(status)
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                            .unwrap();
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Idp { url, jwks, hits, ca_pem: ca_cert.pem(), _runtime: runtime }
    }

    fn publish(&self, keys: &[&Key]) {
        let keys: Vec<_> = keys.iter().map(|k| k.public.clone()).collect();
        *self.jwks.lock().unwrap() = json!({ "keys": keys }).to_string();
    }

    fn hits(&self) -> usize {
        *self.hits.lock().unwrap()
    }
}

/// A signing key and its public JWK.
struct Key {
    alg: Algorithm,
    kid: String,
    private: EncodingKey,
    public: serde_json::Value,
}

impl Key {
    fn ec(kid: &str) -> Key {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Key::new(Algorithm::ES256, kid, EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap())
    }

    fn rsa(kid: &str) -> Key {
        let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bearer-rsa1.pem")).unwrap();
        Key::new(Algorithm::RS256, kid, EncodingKey::from_rsa_pem(&pem).unwrap())
    }

    fn new(alg: Algorithm, kid: &str, private: EncodingKey) -> Key {
        let mut jwk = Jwk::from_encoding_key(&private, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Key { alg, kid: kid.to_owned(), private, public: serde_json::to_value(jwk).unwrap() }
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.private).unwrap()
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(iss: &str, aud: &str, exp_in: i64, nbf_in: i64) -> serde_json::Value {
    json!({ "iss": iss, "aud": aud, "sub": "agent-user", "exp": now() + exp_in, "nbf": now() + nbf_in })
}

fn unsigned(header: serde_json::Value, claims: &serde_json::Value) -> String {
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

// --- resources ------------------------------------------------------------------------------------------------

const TOOLS_POLICY: &str = r#"
package http

allow = true {
    input.request.method == "GET"
    input.request.path == "/hello"
}

allow = { "allow": false, "status_code": 418, "additional_headers": { "x-why": "teapot" } } {
    input.request.path == "/teapot"
}

allow = { "allow": true, "additional_headers": { "x-tool": "search_docs" } } {
    input.request.path == "/mcp"
    input.request.headers["Dapr-Caller-App-Id"] == "agent"
    body := json.unmarshal(input.request.body)
    body.method == "tools/call"
    body.params.name == "search_docs"
}

allow = false {
    input.request.path == "/mcp"
    body := json.unmarshal(input.request.body)
    body.params.name != "search_docs"
}
"#;

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{}{l}\n", " ".repeat(by))).collect()
}

fn opa_component(name: &str, policy: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: middleware.http.opa\n  \
         version: v1\n  metadata:\n  - name: includedHeaders\n    value: dapr-caller-app-id\n  - name: readBody\n    \
         value: \"true\"\n  - name: rego\n    value: |\n{}",
        indent(policy, 6)
    )
}

fn bearer_component(name: &str, idp: &Idp, jwks_url: bool) -> String {
    // With a JWKS URL, a second issuer (no discovery is needed for it); with discovery, one issuer.
    let (jwks, other) = if jwks_url {
        (format!("  - name: jwksURL\n    value: {}/jwks\n", idp.url), ", https://other-issuer.test")
    } else {
        (String::new(), "")
    };
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: middleware.http.bearer\n  \
         version: v1\n  metadata:\n  - name: issuer\n    value: {}{other}\n  - name: audience\n    \
         value: {AUDIENCE}\n{jwks}",
        idp.url
    )
}

/// The callee's Configuration: bearer then OPA on the app pipeline, an audit log.
fn app_pipeline_config(audit: &std::path::Path) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: mcp-server\nspec:\n  appHttpPipeline:\n    \
         handlers:\n    - name: bearer\n      type: middleware.http.bearer\n    - name: tools\n      type: \
         middleware.http.opa\n  ward:\n    auditLog: {}\n",
        path_str(audit)
    )
}

fn resources(mesh: &Mesh, dir: &str, files: &[(&str, String)]) -> std::path::PathBuf {
    let path = mesh.dir.path().join(dir);
    std::fs::create_dir_all(&path).unwrap();
    for (name, text) in files {
        std::fs::write(path.join(name), text).unwrap();
    }
    path
}

// --- tests ----------------------------------------------------------------------------------------------------

/// Bearer then OPA on the callee's `appHttpPipeline`: only valid tokens reach OPA, only allowed tools reach the
/// app, refusals reach the caller unchanged and are audited; keys rotate; a reload swaps the policy and a bad
/// reload keeps it.
#[test]
fn app_pipeline_bearer_then_opa() {
    let idp = Idp::start();
    let (es, rsa) = (Key::ec("ec-1"), Key::rsa("rsa-1"));
    idp.publish(&[&es, &rsa]);
    let mesh = Mesh::start(&[]);
    let ca = mesh.write("idp-ca.pem", &idp.ca_pem);
    let app = TestApp::start();
    let audit = mesh.dir.path().join("audit.log");
    let config = mesh.write("mcp.yaml", &app_pipeline_config(&audit));
    let dir = resources(
        &mesh,
        "mcp-resources",
        &[
            ("bearer.yaml", bearer_component("bearer", &idp, true)),
            ("tools.yaml", opa_component("tools", TOOLS_POLICY)),
        ],
    );
    let mut spec = SidecarSpec::new("mcp", Some(app.addr.port()));
    spec.config = Some(&config);
    spec.extra = vec!["--resources-path".into(), path_str(&dir).into()];
    spec.env = vec![("SSL_CERT_FILE".into(), path_str(&ca).into())];
    let _callee = mesh.sidecar(spec);
    let caller = mesh.sidecar(SidecarSpec::new("agent", None));
    let http = Http::new();
    let call = |path: &str, token: Option<&str>, body: &str| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let method = if body.is_empty() { "GET" } else { "POST" };
        http.send(method, &caller.http, &format!("/v1.0/invoke/mcp/method{path}"), &headers, body.as_bytes().to_vec())
    };
    let good = claims(&idp.url, AUDIENCE, 300, -10);

    // Valid RS256 and ES256 tokens pass both middleware; the app sees the call and the Authorization header.
    for key in [&es, &rsa] {
        app.clear();
        let reply = call("/hello", Some(&key.sign(&good)), "");
        assert_eq!(reply.status, 200, "{:?}: {}", key.alg, reply.text());
        let seen = app.seen();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].headers.get("authorization").is_some_and(|a| a.starts_with("Bearer ")));
    }

    // Every bad token: 401 text/plain "Unauthorized", exactly Dapr's answer, and the app is never called.
    let stranger = Key::ec("ec-1");
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(es.public.to_string().as_bytes()),
    )
    .unwrap();
    let bad: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("expired", Some(es.sign(&claims(&idp.url, AUDIENCE, -600, -900)))),
        ("nbf in the future", Some(es.sign(&claims(&idp.url, AUDIENCE, 3600, 1200)))),
        ("wrong aud", Some(es.sign(&claims(&idp.url, "someone-else", 300, -10)))),
        ("wrong iss", Some(es.sign(&claims("https://evil.test", AUDIENCE, 300, -10)))),
        ("no exp", Some(es.sign(&json!({"iss": idp.url, "aud": AUDIENCE})))),
        ("wrong key", Some(stranger.sign(&good))),
        ("alg none", Some(unsigned(json!({"alg": "none", "kid": "ec-1"}), &good))),
        ("HS256 with the public key as secret", Some(hs256)),
        ("garbage", Some("not.a.jwt-at-all".into())),
    ];
    app.clear();
    for (case, token) in &bad {
        let reply = call("/hello", token.as_deref(), "");
        assert_eq!(reply.status, 401, "{case}: {}", reply.text());
        assert_eq!(reply.text(), "Unauthorized", "{case}");
        assert_eq!(reply.headers["content-type"], "text/plain; charset=utf-8", "{case}");
    }
    let wrong_scheme = format!("Basic {}", es.sign(&good));
    let reply =
        http.send("GET", &caller.http, "/v1.0/invoke/mcp/method/hello", &[("authorization", &wrong_scheme)], vec![]);
    assert_eq!(reply.status, 401, "wrong scheme");
    assert!(app.seen().is_empty(), "a refused call reached the app: {:?}", app.seen());

    // OPA after the bearer: deny with the policy's status and headers, a JSON-RPC tool rule, evaluation errors.
    let token = es.sign(&good);
    let teapot = call("/teapot", Some(&token), "");
    assert_eq!((teapot.status, teapot.headers.get("x-why").map(String::as_str)), (418, Some("teapot")));
    let search = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_docs","arguments":{}}}"#;
    let reply = call("/mcp", Some(&token), search);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = app.seen();
    assert_eq!(seen.last().map(|s| s.headers.get("x-tool").cloned()), Some(Some("search_docs".into())));
    assert_eq!(seen.last().map(|s| s.body_len), Some(search.len()), "the body the policy read reaches the app");
    app.clear();
    let delete = search.replace("search_docs", "delete_repo");
    assert_eq!(call("/mcp", Some(&token), &delete).status, 403);
    let undefined = call("/elsewhere", Some(&token), "");
    assert_eq!(undefined.status, 403);
    assert_eq!(undefined.headers.get("x-dapr-opa-error").map(String::as_str), Some("true"));
    assert!(app.seen().is_empty(), "a refused call reached the app: {:?}", app.seen());

    // Each refusal is audited with the middleware's name and no token.
    let log = std::fs::read_to_string(&audit).unwrap();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("MIDDLEWARE_DENY")).collect();
    assert!(refusals.len() >= bad.len() + 4, "{log}");
    assert!(refusals.iter().any(|l| l.contains("appHttpPipeline.handlers[0] bearer") && l.contains("jwt_expired")));
    assert!(refusals.iter().any(|l| l.contains("appHttpPipeline.handlers[1] tools")));
    assert!(refusals.iter().all(|l| l.contains("spiffe://public/ns/default/agent")), "{log}");
    assert!(!log.contains(&token[..40]), "a token reached the audit log");

    // Key rotation at the identity provider: an unknown kid triggers one refresh.
    let rotated = Key::ec("ec-2");
    idp.publish(&[&rotated]);
    let hits = idp.hits();
    assert_eq!(call("/hello", Some(&rotated.sign(&good)), "").status, 200, "the rotated key is picked up");
    assert_eq!(idp.hits(), hits + 1);
    // A second unknown kid within 30 s does not make the sidecar fetch again.
    let again = Key::ec("ec-3");
    idp.publish(&[&again]);
    assert_eq!(call("/hello", Some(&again.sign(&good)), "").status, 401);
    assert_eq!(idp.hits(), hits + 1, "unknown kids are rate-limited");

    // Hot reload swaps the pipeline; a policy that does not compile keeps the previous one.
    let token = rotated.sign(&good);
    std::fs::write(dir.join("tools.yaml"), opa_component("tools", "package http\ndefault allow = false\n")).unwrap();
    eventually(Duration::from_secs(10), "the new policy", || {
        (call("/hello", Some(&token), "").status == 403).then_some(())
    });
    std::fs::write(dir.join("tools.yaml"), opa_component("tools", "package http\nallow = {")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(call("/hello", Some(&token), "").status, 403, "a bad reload keeps the old pipeline");
}

/// `spec.httpPipeline` on the public API: a rate limit and a bearer found through OIDC discovery; the health
/// routes stay open for probes.
#[test]
fn http_pipeline_rate_limit_and_discovered_bearer() {
    let idp = Idp::start();
    let key = Key::ec("k1");
    idp.publish(&[&key]);
    let mesh = Mesh::start(&[]);
    let ca = mesh.write("idp-ca.pem", &idp.ca_pem);
    let app = TestApp::start();
    let config = mesh.write(
        "api.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: api\nspec:\n  httpPipeline:\n    \
         handlers:\n    - name: limit\n      type: middleware.http.ratelimit\n    - name: oidc\n      type: \
         middleware.http.bearer\n",
    );
    let limit = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: limit\nspec:\n  type: \
                 middleware.http.ratelimit\n  version: v1\n  metadata:\n  - name: maxRequestsPerSecond\n    value: 5\n";
    let dir = resources(
        &mesh,
        "api-resources",
        &[("limit.yaml", limit.into()), ("oidc.yaml", bearer_component("oidc", &idp, false))],
    );
    let mut spec = SidecarSpec::new("front", Some(app.addr.port()));
    spec.config = Some(&config);
    spec.extra = vec!["--resources-path".into(), path_str(&dir).into()];
    spec.env = vec![("SSL_CERT_FILE".into(), path_str(&ca).into())];
    let front = mesh.sidecar(spec);
    let http = Http::new();
    let auth = format!("Bearer {}", key.sign(&claims(&idp.url, AUDIENCE, 300, -10)));

    // Health probes are exempt from the whole pipeline.
    for _ in 0..20 {
        assert_eq!(http.get(&front.http, "/v1.0/healthz/outbound").status, 204);
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(http.get(&front.http, "/v1.0/metadata").status, 401, "no token");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(http.send("GET", &front.http, "/v1.0/metadata", &[("authorization", &auth)], vec![]).status, 200);
    std::thread::sleep(Duration::from_millis(1100));
    let statuses: Vec<u16> = (0..12)
        .map(|_| http.send("GET", &front.http, "/v1.0/metadata", &[("authorization", &auth)], vec![]).status)
        .collect();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 5, "a burst of 12 against 5/s: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    let reply = http.get(&front.http, "/v1.0/metadata");
    assert_eq!((reply.status, reply.text().as_str()), (429, "You have reached maximum request limit."));
}

/// Fail closed at start: an unknown middleware type, a policy that does not compile, a handler naming no loaded
/// component, and an issuer whose discovery fails each stop the sidecar with one line naming file and field.
#[test]
fn misconfigured_middleware_refuses_to_start() {
    let mesh = Mesh::start(&[]);
    let config = |handler_name: &str, handler_type: &str| {
        mesh.write(
            &format!("{handler_name}.yaml"),
            &format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  appHttpPipeline:\n    \
                 handlers:\n    - name: {handler_name}\n      type: {handler_type}\n"
            ),
        )
    };
    let component = |name: &str, ty: &str, meta: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {ty}\n  version: \
             v1\n  metadata:{meta}"
        )
    };
    let cases = [
        (
            "uppercase",
            "middleware.http.uppercase",
            component("uppercase", "middleware.http.uppercase", " []\n"),
            "spec.type",
        ),
        (
            "badrego",
            "middleware.http.opa",
            component("badrego", "middleware.http.opa", "\n  - name: rego\n    value: \"package http\\nallow = {\"\n"),
            "spec.metadata[rego]",
        ),
        (
            "ghost",
            "middleware.http.bearer",
            component("other", "middleware.http.ratelimit", " []\n"),
            "spec.appHttpPipeline.handlers[0].name",
        ),
        (
            "nodiscovery",
            "middleware.http.bearer",
            component(
                "nodiscovery",
                "middleware.http.bearer",
                "\n  - name: issuer\n    value: http://127.0.0.1:1\n  - name: audience\n    value: a\n",
            ),
            "issuer",
        ),
    ];
    for (name, ty, resource, field) in cases {
        let cfg = config(name, ty);
        let dir = resources(&mesh, &format!("res-{name}"), &[("c.yaml", resource)]);
        let mut spec = SidecarSpec::new("app", None);
        spec.config = Some(&cfg);
        spec.extra = vec!["--resources-path".into(), path_str(&dir).into()];
        let (code, _, stderr) = mesh.sidecar_exit(spec);
        assert_ne!(code, 0, "{name} started");
        assert!(stderr.contains(field), "{name}: expected {field:?} in:\n{stderr}");
    }
}

/// `examples/mcp-layering` (what `docs/middleware.md` tells users to copy), loaded unchanged: mTLS, then
/// accessControl, then the bearer, then the per-tool OPA rule.
#[test]
fn the_mcp_layering_example_works_as_copied() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mcp-layering");
    let idp = Idp::start();
    let key = Key::rsa("rsa-1");
    idp.publish(&[&key]);
    let mesh = Mesh::start(&[]);
    let ca = mesh.write("idp-ca.pem", &idp.ca_pem);
    let server = TestApp::start();
    let config = example.join("config.yaml");
    let mut spec = SidecarSpec::new("mcp-server", Some(server.addr.port()));
    spec.config = Some(&config);
    spec.extra = vec!["--resources-path".into(), path_str(&example.join("components")).into()];
    spec.env = vec![("SSL_CERT_FILE".into(), path_str(&ca).into()), ("OIDC_ISSUER".into(), idp.url.clone())];
    let _server_sidecar = mesh.sidecar(spec);
    let agent = mesh.sidecar(SidecarSpec::new("research-agent", None));
    let intruder = mesh.sidecar(SidecarSpec::new("intruder", None));
    let http = Http::new();
    let auth = format!("Bearer {}", key.sign(&claims(&idp.url, "mcp-server", 300, -10)));
    let tool = |name: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{name}","arguments":{{}}}}}}"#)
    };
    let post = |from: &str, headers: &[(&str, &str)], body: String| {
        http.send("POST", from, "/v1.0/invoke/mcp-server/method/mcp", headers, body.into_bytes())
    };

    assert_eq!(post(&agent.http, &[("authorization", &auth)], tool("search_docs")).status, 200);
    assert_eq!(server.seen().len(), 1);
    server.clear();
    assert_eq!(post(&agent.http, &[("authorization", &auth)], tool("delete_repo")).status, 403, "tool rule");
    assert_eq!(post(&agent.http, &[], tool("search_docs")).status, 401, "bearer");
    let denied = post(&intruder.http, &[("authorization", &auth)], tool("search_docs"));
    assert_eq!(denied.status, 403, "accessControl");
    assert_eq!(denied.json()["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(server.seen().is_empty(), "{:?}", server.seen());
}
