//! Components end to end with real processes: `ward sentry`, `ward sidecar`s with `--resources-path`, and a real
//! `redis-server`. One behavioural suite runs against `state.in-memory`, `state.sqlite` and `state.redis` (whose
//! password comes from a `secretstores.local.file` through `secretKeyRef`); then component scopes and the
//! deny list (an out-of-scope store answers exactly like a missing one), secret scopes, start-up errors, secrets
//! never logged, durability across `kill -9`, and hot reload.
//!
//! Needs `redis-server` on PATH; every process is killed on drop and every wait is bounded.

mod support;

use support::free_port;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::mesh::{Http, Mesh, SidecarProcess, SidecarSpec};
use support::{Ward, eventually, path_str};

const REDIS_PASSWORD: &str = "redis-pw-7f3a9c1e-never-log-me";
const API_KEY: &str = "api-key-value-5b2d-never-log-me";
const DB_PASSWORD: &str = "db-password-value-9e8f-never-log-me";

/// A `redis-server` on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(password: Option<&str>) -> RedisServer {
        let port = free_port();
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|err| {
            panic!("cannot start redis-server ({err}); these tests need redis-server on PATH (apt-get install redis-server)")
        });
        let server = RedisServer { child, port };
        eventually(Duration::from_secs(10), "redis-server to listen", || TcpStream::connect(("127.0.0.1", port)).ok());
        server
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn component(name: &str, type_: &str, metadata: &[(&str, &str)], extra: &str) -> String {
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_}\n  version: v1\n  metadata:\n"
    );
    for (k, v) in metadata {
        yaml.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    if metadata.is_empty() {
        yaml = yaml.replace("  metadata:\n", "  metadata: []\n");
    }
    yaml.push_str(extra);
    yaml
}

fn secrets_file(dir: &Path) {
    let secrets =
        json!({"redis-password": REDIS_PASSWORD, "api-key": API_KEY, "db-password": DB_PASSWORD, "other": "o"});
    std::fs::write(dir.join("secrets.json"), secrets.to_string()).unwrap();
}

fn resources(mesh: &Mesh, name: &str, files: &[(&str, String)]) -> PathBuf {
    let dir = mesh.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn sidecar(mesh: &Mesh, app_id: &str, dir: Option<&Path>, config: Option<&Path>) -> SidecarProcess {
    let mut spec = SidecarSpec::new(app_id, None);
    spec.config = config;
    if let Some(dir) = dir {
        spec.extra = vec!["--resources-path".into(), path_str(dir).into()];
    }
    spec.extra.extend(["--log-level".into(), "debug".into()]);
    mesh.sidecar(spec)
}

/// Runs a sidecar that must refuse to start; returns its stderr. No sentry needed: components load before the
/// certificate is requested.
fn refused_start(home: &Path, dir: &Path, config: Option<&Path>) -> String {
    let mut args = vec![
        "sidecar",
        "--app-id",
        "app1",
        "--dapr-http-port",
        "0",
        "--dapr-internal-grpc-port",
        "0",
        "--dapr-grpc-port",
        "0",
    ];
    args.extend(["--resources-path", path_str(dir)]);
    if let Some(config) = config {
        args.extend(["--config", path_str(config)]);
    }
    let mut ward = Ward::spawn("refused", &args, &[("WARD_HOME", path_str(home))]);
    let status = ward.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "the sidecar should have refused to start; stdout:\n{}", ward.stdout_text());
    assert!(!ward.stdout_text().contains("ready"), "nothing may listen: {}", ward.stdout_text());
    ward.stderr_text()
}

/// The single `ward: error:` line of a refused start.
fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("ward: error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    lines[0].to_owned()
}

fn post_json(http: &Http, addr: &str, path: &str, body: &Value) -> support::mesh::Reply {
    http.send("POST", addr, path, &[("content-type", "application/json")], body.to_string().into_bytes())
}

fn assert_error(reply: &support::mesh::Reply, status: u16, code: &str) -> String {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["errorCode"], code, "{body}");
    body["message"].as_str().unwrap_or_default().to_owned()
}

fn etag_of(http: &Http, addr: &str, store: &str, key: &str) -> String {
    let reply = http.get(addr, &format!("/v1.0/state/{store}/{key}"));
    assert_eq!(reply.status, 200, "{store}/{key}: {}", reply.text());
    reply.headers.get("etag").cloned().unwrap_or_else(|| panic!("no ETag header for {store}/{key}"))
}

/// The behavioural suite, run against one store.
fn state_suite(http: &Http, addr: &str, store: &str) {
    let base = format!("/v1.0/state/{store}");
    // Save and get: any JSON value, returned as its JSON bytes.
    let reply = post_json(
        http,
        addr,
        &base,
        &json!([{"key": "k1", "value": {"b": [1, 2], "a": "x"}}, {"key": "s", "value": "hello"}]),
    );
    assert_eq!(reply.status, 204, "{store}: {}", reply.text());
    let reply = http.get(addr, &format!("{base}/k1?metadata.partitionKey=p"));
    assert_eq!(reply.status, 200, "{store}");
    assert_eq!(reply.json(), json!({"a": "x", "b": [1, 2]}), "{store}");
    assert!(reply.headers.contains_key("etag"), "{store}: ETag header");
    assert_eq!(http.get(addr, &format!("{base}/s")).text(), "\"hello\"", "{store}");
    assert_eq!(http.get(addr, &format!("{base}/missing")).status, 204, "{store}");

    // ETags: match, mismatch (409), malformed (400).
    let e1 = etag_of(http, addr, store, "k1");
    let reply = post_json(http, addr, &base, &json!([{"key": "k1", "value": 2, "etag": e1}]));
    assert_eq!(reply.status, 204, "{store}: matching etag: {}", reply.text());
    let stale = e1;
    let msg = assert_error(
        &post_json(http, addr, &base, &json!([{"key": "k1", "value": 3, "etag": stale}])),
        409,
        "ERR_STATE_SAVE",
    );
    assert!(msg.starts_with(&format!("failed saving state in state store {store}: ")), "{msg}");
    // Dapr's rule: a store that parses its ETags (Redis: versions) calls an unparsable one invalid (400); stores
    // comparing ETags as strings (in-memory, SQLite) call it a mismatch (409), as daprd does (issue 19 row 8).
    let (bad_status, bad_delete_status) = if store.starts_with("redis") { (400, 400) } else { (409, 409) };
    assert_error(
        &post_json(http, addr, &base, &json!([{"key": "k1", "value": 3, "etag": "not an etag!"}])),
        bad_status,
        "ERR_STATE_SAVE",
    );
    assert_error(
        &post_json(http, addr, &base, &json!([{"key": "k1", "value": 3, "etag": "9999"}])),
        409,
        "ERR_STATE_SAVE",
    );
    assert_eq!(http.get(addr, &format!("{base}/k1")).text(), "2", "{store}: failed saves changed nothing");

    // Delete with If-Match.
    let reply = http.send("DELETE", addr, &format!("{base}/k1"), &[("if-match", &stale)], vec![]);
    assert_error(&reply, 409, "ERR_STATE_DELETE");
    let reply = http.send("DELETE", addr, &format!("{base}/k1"), &[("if-match", "not an etag!")], vec![]);
    assert_error(&reply, bad_delete_status, "ERR_STATE_DELETE");
    let current = etag_of(http, addr, store, "k1");
    let reply = http.send("DELETE", addr, &format!("{base}/k1"), &[("if-match", &current)], vec![]);
    assert_eq!(reply.status, 204, "{store}: {}", reply.text());
    assert_eq!(http.get(addr, &format!("{base}/k1")).status, 204, "{store}: deleted");
    assert_eq!(http.send("DELETE", addr, &format!("{base}/never"), &[], vec![]).status, 204, "{store}");

    // First-write: only when absent.
    let first = json!([{"key": "fw", "value": 1, "options": {"concurrency": "first-write", "consistency": "strong"}}]);
    assert_eq!(post_json(http, addr, &base, &first).status, 204, "{store}");
    assert_error(&post_json(http, addr, &base, &first), 409, "ERR_STATE_SAVE");

    // Bulk: missing keys come back without data.
    let reply = post_json(http, addr, &format!("{base}/bulk"), &json!({"keys": ["fw", "s", "nope"], "parallelism": 2}));
    assert_eq!(reply.status, 200, "{store}: {}", reply.text());
    let items = reply.json();
    assert_eq!(items[0]["key"], "fw");
    assert_eq!(items[0]["data"], 1);
    assert!(items[0]["etag"].is_string(), "{items}");
    assert_eq!(items[1]["data"], "hello");
    assert_eq!(items[2], json!({"key": "nope"}), "{store}");

    // Transactions are all or nothing: a stale ETag in the 2nd operation leaves the 1st unapplied.
    let fw_etag = etag_of(http, addr, store, "fw");
    post_json(http, addr, &base, &json!([{"key": "fw", "value": 2}]));
    let tx = json!({"operations": [
        {"operation": "upsert", "request": {"key": "t1", "value": "one"}},
        {"operation": "upsert", "request": {"key": "fw", "value": 3, "etag": fw_etag}},
    ], "metadata": {}});
    let msg = assert_error(&post_json(http, addr, &format!("{base}/transaction"), &tx), 409, "ERR_STATE_TRANSACTION");
    assert!(msg.starts_with("error while executing state transaction: "), "{msg}");
    assert_eq!(http.get(addr, &format!("{base}/t1")).status, 204, "{store}: the 1st operation was not applied");
    assert_eq!(http.get(addr, &format!("{base}/fw")).text(), "2", "{store}");
    let tx = json!({"operations": [
        {"operation": "upsert", "request": {"key": "t1", "value": "one"}},
        {"operation": "delete", "request": {"key": "fw"}},
    ]});
    assert_eq!(post_json(http, addr, &format!("{base}/transaction"), &tx).status, 204, "{store}");
    assert_eq!(http.get(addr, &format!("{base}/t1")).text(), "\"one\"", "{store}");
    assert_eq!(http.get(addr, &format!("{base}/fw")).status, 204, "{store}");
    let tx = json!({"operations": [{"operation": "merge", "request": {"key": "t1"}}]});
    assert_error(&post_json(http, addr, &format!("{base}/transaction"), &tx), 400, "ERR_NOT_SUPPORTED_STATE_OPERATION");
    // Issue 19 row 9: an outbox projection is refused, never stored as the value.
    let tx = json!({"operations": [
        {"operation": "upsert", "request": {"key": "t1", "value": "stored"}},
        {"operation": "upsert", "request": {"key": "t1", "value": "projection", "metadata": {"outbox.projection": "true"}}}
    ]});
    let msg = assert_error(&post_json(http, addr, &format!("{base}/transaction"), &tx), 400, "ERR_STATE_TRANSACTION");
    assert!(msg.contains("outbox"), "{msg}");
    assert_eq!(http.get(addr, &format!("{base}/t1")).text(), "\"one\"", "{store}: nothing written");

    // TTL.
    let reply = post_json(http, addr, &base, &json!([{"key": "ttl", "value": 1, "metadata": {"ttlInSeconds": "1"}}]));
    assert_eq!(reply.status, 204, "{store}: {}", reply.text());
    assert_eq!(http.get(addr, &format!("{base}/ttl")).status, 200, "{store}: visible before expiry");
    eventually(Duration::from_secs(5), "the TTL to expire", || {
        (http.get(addr, &format!("{base}/ttl")).status == 204).then_some(())
    });

    // Bad requests.
    let reply = http.send("POST", addr, &base, &[], b"{not json".to_vec());
    let msg = assert_error(&reply, 400, "ERR_MALFORMED_REQUEST");
    assert!(msg.starts_with("failed deserializing HTTP body: "), "{msg}");
    let reply = http.send("POST", addr, &format!("{base}/bulk"), &[], b"[".to_vec());
    assert_error(&reply, 400, "ERR_MALFORMED_REQUEST");
    assert_error(&post_json(http, addr, &base, &json!([{"key": "a||b", "value": 1}])), 400, "ERR_MALFORMED_REQUEST");
    assert_error(&http.get(addr, &format!("{base}/a||b")), 400, "ERR_MALFORMED_REQUEST");
    let reply = post_json(http, addr, &base, &json!([{"key": "c", "value": 1, "options": {"concurrency": "maybe"}}]));
    assert_error(&reply, 400, "ERR_STATE_SAVE");
}

#[test]
fn state_suite_over_in_memory_sqlite_and_redis_with_a_secret_key_ref_password() {
    let redis = RedisServer::start(Some(REDIS_PASSWORD));
    let mesh = Mesh::start(&[]);
    let dir = resources(&mesh, "res", &[
        ("memory.yaml", component("memstore", "state.in-memory", &[], "")),
        ("sqlite.yaml", component("sqlitestore", "state.sqlite", &[], "")),
        (
            "redis.yaml",
            component(
                "redisstore",
                "state.redis",
                &[("redisHost", &redis.address())],
                "  - name: redisPassword\n    secretKeyRef:\n      name: redis-password\n      key: redis-password\nauth:\n  secretStore: vault\n",
            )
            .replace("  metadata: []\n", "  metadata:\n"),
        ),
        ("vault.yaml", component("vault", "secretstores.local.file", &[("secretsFile", "secrets.json")], "")),
    ]);
    secrets_file(&dir);
    let sc = sidecar(&mesh, "app1", Some(&dir), None);
    let http = Http::new();
    for store in ["memstore", "sqlitestore", "redisstore"] {
        state_suite(&http, &sc.http, store);
    }

    // Keys are stored with the app-id prefix (Dapr's default keyPrefix), so daprd and ward share data.
    let reply = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--no-auth-warning", "-a", REDIS_PASSWORD, "exists", "app1||s"])
        .output();
    if let Ok(out) = reply {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "redis key app1||s");
    }

    // Metadata lists the loaded components.
    let metadata = http.get(&sc.http, "/v1.0/metadata").json();
    let mut names: Vec<String> =
        metadata["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["memstore", "redisstore", "sqlitestore", "vault"]);
    let redis_entry = metadata["components"].as_array().unwrap().iter().find(|c| c["name"] == "redisstore").unwrap();
    // Capabilities in Dapr's names, for what ward implements (issue 19 row 10): never actors or the query API.
    let capabilities = json!(["ETAG", "TRANSACTIONAL", "TTL"]);
    assert_eq!(
        redis_entry,
        &json!({"name": "redisstore", "type": "state.redis", "version": "v1", "capabilities": capabilities})
    );
    let vault = metadata["components"].as_array().unwrap().iter().find(|c| c["name"] == "vault").unwrap();
    assert_eq!(vault["capabilities"], json!([]), "not multiValued");
    assert!(metadata["extended"].as_object().unwrap().values().all(|v| v.is_string()), "{metadata}");
    assert!(!metadata.to_string().contains(REDIS_PASSWORD));

    // Backend down: 500 with the cause, never a value.
    drop(redis);
    let reply = http.get(&sc.http, "/v1.0/state/redisstore/s");
    let msg = assert_error(&reply, 500, "ERR_STATE_GET");
    assert!(msg.starts_with("fail to get s from state store redisstore: "), "{msg}");
    let reply = post_json(&http, &sc.http, "/v1.0/state/redisstore", &json!([{"key": "x", "value": "v"}]));
    assert_error(&reply, 500, "ERR_STATE_SAVE");
    let reply = post_json(
        &http,
        &sc.http,
        "/v1.0/state/redisstore/transaction",
        &json!({"operations": [{"operation": "delete", "request": {"key": "x"}}]}),
    );
    assert_error(&reply, 500, "ERR_STATE_TRANSACTION");
    let reply = http.send("DELETE", &sc.http, "/v1.0/state/redisstore/x", &[], vec![]);
    assert_error(&reply, 500, "ERR_STATE_DELETE");
    // The secret read from the store for the component never reaches a log.
    assert!(!sc.process.stderr_text().contains(REDIS_PASSWORD), "the redis password was logged");
}

const SCOPED_CONFIG: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: app1-config
spec:
  components:
    deny: [state.sqlite, secretstores.local.env/v1]
  secrets:
    scopes:
    - storeName: vault
      deniedSecrets: [db-password]
    - storeName: allowlisted
      defaultAccess: allow
      allowedSecrets: [api-key]
    - storeName: closed
      defaultAccess: deny
"#;

/// Status, errorCode and message of a reply, with `from` replaced by `to` in the message.
fn shape(reply: &support::mesh::Reply, from: &str, to: &str) -> (u16, Option<String>, Value) {
    let mut body = reply.json();
    if let Some(message) = body["message"].as_str() {
        body["message"] = Value::String(message.replace(from, to));
    }
    (reply.status, reply.headers.get("content-type").cloned(), body)
}

#[test]
fn out_of_scope_and_denied_components_are_indistinguishable_from_missing_ones() {
    let mesh = Mesh::start(&[]);
    let config = mesh.write("app1-config.yaml", SCOPED_CONFIG);
    let scoped = "scopes: [app2]\n";
    let dir = resources(
        &mesh,
        "scoped",
        &[
            ("mine.yaml", component("mine", "state.in-memory", &[], "")),
            ("theirs.yaml", component("theirs", "state.in-memory", &[], scoped)),
            ("denied.yaml", component("deniedstore", "state.sqlite", &[], "")),
            ("vault.yaml", component("vault", "secretstores.local.file", &[("secretsFile", "secrets.json")], "")),
            ("allow.yaml", component("allowlisted", "secretstores.local.file", &[("secretsFile", "secrets.json")], "")),
            ("closed.yaml", component("closed", "secretstores.local.file", &[("secretsFile", "secrets.json")], "")),
            ("hidden.yaml", component("hidden", "secretstores.local.file", &[("secretsFile", "secrets.json")], scoped)),
            ("envstore.yaml", component("envstore", "secretstores.local.env", &[], "")),
            ("bindings.yaml", component("bus", "bindings.http", &[("url", "http://127.0.0.1:1")], "")),
        ],
    );
    secrets_file(&dir);
    // Every store of this directory is out of scope for app1.
    let all_scoped = resources(
        &mesh,
        "all-scoped",
        &[
            ("theirs.yaml", component("theirs", "state.in-memory", &[], scoped)),
            ("hidden.yaml", component("hidden", "secretstores.local.file", &[("secretsFile", "secrets.json")], scoped)),
        ],
    );
    secrets_file(&all_scoped);
    let empty = resources(&mesh, "empty", &[]);

    let main = sidecar(&mesh, "app1", Some(&dir), Some(&config));
    let only_scoped = sidecar(&mesh, "app1", Some(&all_scoped), None);
    let nothing = sidecar(&mesh, "app1", Some(&empty), None);
    let http = Http::new();
    main.process.wait_stderr(
        "component 'deniedstore' cannot be loaded because components of type 'state.sqlite/v1' are not allowed",
        Duration::from_secs(5),
    );

    // Some stores loaded: out of scope, denied and missing all answer NOT_FOUND, byte for byte the same.
    for (method, path, body) in [
        ("GET", "/v1.0/state/{}/k", None),
        ("DELETE", "/v1.0/state/{}/k", None),
        ("POST", "/v1.0/state/{}", Some(json!([{"key": "k", "value": 1}]))),
        ("POST", "/v1.0/state/{}/bulk", Some(json!({"keys": ["k"]}))),
        ("POST", "/v1.0/state/{}/transaction", Some(json!({"operations": []}))),
        ("GET", "/v1.0/secrets/{}/api-key", None),
        ("GET", "/v1.0/secrets/{}/bulk", None),
    ] {
        let send = |name: &str, sc: &SidecarProcess| {
            let body = body.as_ref().map(|b| b.to_string().into_bytes()).unwrap_or_default();
            http.send(method, &sc.http, &path.replace("{}", name), &[], body)
        };
        let missing = send("nonexistent", &main);
        let secrets = path.starts_with("/v1.0/secrets");
        if secrets {
            assert_error(&missing, 401, "ERR_SECRET_STORE_NOT_FOUND");
            assert_eq!(missing.json()["message"], "failed finding secret store with key nonexistent");
        } else {
            assert_error(&missing, 400, "ERR_STATE_STORE_NOT_FOUND");
            assert_eq!(missing.json()["message"], "state store nonexistent is not found");
        }
        let hidden_names: &[&str] = if secrets { &["hidden", "envstore"] } else { &["theirs", "deniedstore"] };
        for hidden in hidden_names {
            let reply = send(hidden, &main);
            assert_eq!(shape(&reply, hidden, "nonexistent"), shape(&missing, "", ""), "{method} {path} {hidden}");
        }
        // No store of the kind loaded (only out-of-scope ones) answers exactly as no store configured at all.
        let hidden = if secrets { "hidden" } else { "theirs" };
        let reply = send(hidden, &only_scoped);
        let none = send(hidden, &nothing);
        assert_eq!(shape(&reply, "", ""), shape(&none, "", ""), "{method} {path}");
        if secrets {
            assert_error(&none, 500, "ERR_SECRET_STORES_NOT_CONFIGURED");
            assert_eq!(none.json()["message"], "secret store is not configured");
        } else {
            assert_error(&none, 500, "ERR_STATE_STORE_NOT_CONFIGURED");
            assert_eq!(none.json()["message"], "state store is not configured");
        }
    }

    // Metadata lists only what the app can use.
    for (sc, want) in
        [(&main, vec!["allowlisted", "closed", "mine", "vault"]), (&only_scoped, vec![]), (&nothing, vec![])]
    {
        let metadata = http.get(&sc.http, "/v1.0/metadata").json();
        let mut names: Vec<&str> =
            metadata["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(names, want);
    }

    // Secret scopes.
    struct Case {
        store: &'static str,
        secret: &'static str,
        allowed: bool,
    }
    let cases = [
        Case { store: "vault", secret: "api-key", allowed: true },
        Case { store: "vault", secret: "db-password", allowed: false },
        Case { store: "allowlisted", secret: "api-key", allowed: true },
        Case { store: "allowlisted", secret: "db-password", allowed: false },
        Case { store: "allowlisted", secret: "other", allowed: false },
        Case { store: "closed", secret: "api-key", allowed: false },
        Case { store: "closed", secret: "other", allowed: false },
    ];
    for case in &cases {
        let reply = http.get(&main.http, &format!("/v1.0/secrets/{}/{}?metadata.version=1", case.store, case.secret));
        if case.allowed {
            assert_eq!(reply.status, 200, "{}/{}: {}", case.store, case.secret, reply.text());
            assert_eq!(reply.json(), json!({case.secret: API_KEY}));
        } else {
            // Invariant 3: a secret out of scope answers exactly as a missing one (status, code and message), so an
            // app cannot learn that it exists.
            let missing = http.get(&main.http, &format!("/v1.0/secrets/{}/no-such-secret", case.store));
            assert_eq!(reply.status, missing.status, "{}/{}: {}", case.store, case.secret, reply.text());
            assert_eq!(reply.text().replace(case.secret, "X"), missing.text().replace("no-such-secret", "X"));
            let msg = assert_error(&reply, 500, "ERR_SECRET_GET");
            assert_eq!(
                msg,
                format!(
                    "failed getting secret with key {0} from secret store {1}: secret {0} not found",
                    case.secret, case.store
                )
            );
        }
    }
    let bulk = |store: &str| {
        let reply = http.get(&main.http, &format!("/v1.0/secrets/{store}/bulk"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        let mut names: Vec<String> = reply.json().as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    };
    assert_eq!(bulk("vault"), ["api-key", "other", "redis-password"]);
    assert_eq!(bulk("allowlisted"), ["api-key"]);
    assert!(bulk("closed").is_empty());
    // A missing secret is Dapr's 500.
    let msg = assert_error(&http.get(&main.http, "/v1.0/secrets/vault/nope"), 500, "ERR_SECRET_GET");
    assert_eq!(msg, "failed getting secret with key nope from secret store vault: secret nope not found");

    // The invocation fallback still answers.
    let reply = http.get(&main.http, "/v1.0/invoke/");
    assert_error(&reply, 404, "ERR_DIRECT_INVOKE");

    // No secret value reached any log.
    for sc in [&main, &only_scoped, &nothing] {
        let stderr = sc.process.stderr_text();
        for value in [API_KEY, DB_PASSWORD, REDIS_PASSWORD] {
            assert!(!stderr.contains(value), "a secret value was logged:\n{stderr}");
        }
    }
}

#[test]
fn a_secret_key_ref_the_app_may_not_read_refuses_start() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("res");
    std::fs::create_dir_all(&dir).unwrap();
    secrets_file(&dir);
    std::fs::write(
        dir.join("vault.yaml"),
        component("vault", "secretstores.local.file", &[("secretsFile", "secrets.json")], ""),
    )
    .unwrap();
    std::fs::write(
        dir.join("redis.yaml"),
        component(
            "cache",
            "state.redis",
            &[("redisHost", "127.0.0.1:1")],
            "  - name: redisPassword\n    secretKeyRef:\n      name: redis-password\nauth:\n  secretStore: vault\n",
        )
        .replace("  metadata: []\n", "  metadata:\n"),
    )
    .unwrap();
    let config = home.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  secrets:\n    scopes:\n    - {storeName: vault, defaultAccess: deny, allowedSecrets: [api-key]}\n",
    )
    .unwrap();
    let stderr = refused_start(home.path(), &dir, Some(&config));
    let line = error_line(&stderr);
    for needle in
        ["redis.yaml", "Component \"cache\"", "redisPassword", "\"redis-password\"", "\"vault\"", "spec.secrets.scopes"]
    {
        assert!(line.contains(needle), "{needle:?} missing from {line:?}");
    }
    assert!(!stderr.contains(REDIS_PASSWORD));
}

#[test]
fn configuration_errors_exit_with_one_line_naming_file_and_field() {
    let home = tempfile::tempdir().unwrap();
    struct Case {
        name: &'static str,
        file: &'static str,
        yaml: String,
        needles: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "bad YAML",
            file: "broken.yaml",
            yaml: "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: x\n".into(),
            needles: &["broken.yaml", "invalid YAML"],
        },
        Case {
            name: "unknown type",
            file: "nope.yaml",
            yaml: component("s", "state.nope", &[], ""),
            needles: &["nope.yaml", "Component \"s\"", "spec.type"],
        },
        Case {
            name: "unknown version",
            file: "v9.yaml",
            yaml: component("s", "state.in-memory", &[], "").replace("version: v1", "version: v9"),
            needles: &["v9.yaml", "Component \"s\"", "spec.version"],
        },
        Case {
            name: "missing redisHost",
            file: "redis.yaml",
            yaml: component("cache", "state.redis", &[("redisPassword", "pw-in-file-never-log")], ""),
            needles: &["redis.yaml", "Component \"cache\"", "spec.metadata[redisHost]"],
        },
        Case {
            name: "unreadable secrets file",
            file: "vault.yaml",
            yaml: component("vault", "secretstores.local.file", &[("secretsFile", "does-not-exist.json")], ""),
            needles: &["vault.yaml", "Component \"vault\"", "secretsFile"],
        },
    ];
    for case in cases {
        let dir = home.path().join(case.name.replace(' ', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(case.file), &case.yaml).unwrap();
        let stderr = refused_start(home.path(), &dir, None);
        let line = error_line(&stderr);
        for needle in case.needles {
            assert!(line.contains(needle), "{}: {needle:?} missing from {line:?}", case.name);
        }
        assert!(!stderr.contains("pw-in-file-never-log"), "{}: a metadata value was printed", case.name);
    }
}

#[test]
fn an_acknowledged_sqlite_write_survives_kill_9() {
    let mesh = Mesh::start(&[]);
    let dir = resources(&mesh, "res", &[("sqlite.yaml", component("durable", "state.sqlite", &[], ""))]);
    let http = Http::new();
    let mut first = sidecar(&mesh, "app1", Some(&dir), None);
    let reply = post_json(&http, &first.http, "/v1.0/state/durable", &json!([{"key": "k", "value": {"n": 42}}]));
    assert_eq!(reply.status, 204, "{}", reply.text());
    first.process.kill9();
    let second = sidecar(&mesh, "app1", Some(&dir), None);
    let reply = http.get(&second.http, "/v1.0/state/durable/k");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"n": 42}));
}

#[test]
fn hot_reload_adds_components_and_a_broken_file_keeps_the_old_ones() {
    let mesh = Mesh::start(&[]);
    let dir = resources(&mesh, "res", &[("memory.yaml", component("memstore", "state.in-memory", &[], ""))]);
    let http = Http::new();
    let sc = sidecar(&mesh, "app1", Some(&dir), None);
    assert_eq!(post_json(&http, &sc.http, "/v1.0/state/memstore", &json!([{"key": "k", "value": 1}])).status, 204);
    assert_error(&http.get(&sc.http, "/v1.0/state/newstore/k"), 400, "ERR_STATE_STORE_NOT_FOUND");

    std::fs::write(dir.join("new.yaml"), component("newstore", "state.in-memory", &[], "")).unwrap();
    let added = Instant::now();
    eventually(Duration::from_secs(3), "the new component to be usable", || {
        (http.get(&sc.http, "/v1.0/state/newstore/k").status == 204).then_some(())
    });
    let elapsed = added.elapsed();
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    // An unchanged component was kept, data and all.
    assert_eq!(http.get(&sc.http, "/v1.0/state/memstore/k").text(), "1");

    std::fs::write(dir.join("broken.yaml"), "kind: Component\nmetadata: {name: [\n").unwrap();
    sc.process.wait_stderr("reload refused, keeping the previous configuration", Duration::from_secs(5));
    assert_eq!(http.get(&sc.http, "/v1.0/state/memstore/k").text(), "1");
    assert_eq!(http.get(&sc.http, "/v1.0/state/newstore/k").status, 204);

    // Fixing the file reloads again; removing a component makes it missing.
    std::fs::remove_file(dir.join("broken.yaml")).unwrap();
    std::fs::remove_file(dir.join("new.yaml")).unwrap();
    eventually(Duration::from_secs(5), "the removed component to disappear", || {
        (http.get(&sc.http, "/v1.0/state/newstore/k").status == 400).then_some(())
    });
    assert_eq!(http.get(&sc.http, "/v1.0/state/memstore/k").text(), "1");
}
