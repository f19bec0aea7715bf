//! MCP tool rules (`spec.ward.mcp`) end to end with real processes: the official MCP Python SDK (a `Client` over
//! streamable HTTP, a server built with `MCPServer`) through their sidecars over mTLS, and a raw JSON-RPC server for
//! what the SDK's server refuses (batches) or where the answer's shape matters (SSE, 200-tool lists).
//!
//! Needs a Python with `mcp` 2.x: `$WARD_TEST_PYTHON`, else `~/.cache/ward/sdk-venv/bin/python`
//! (`scripts/test-venv.sh` creates it; `.ci/run` runs that first).

mod support;

use support::free_port;

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::mesh::{Http, Mesh, SidecarSpec};
use support::{eventually, path_str};

fn python() -> PathBuf {
    let python = std::env::var_os("WARD_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ward/sdk-venv/bin/python")
    });
    let ok = Command::new(&python)
        .args(["-c", "import mcp.server, mcp.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{} with the MCP Python SDK is required: run scripts/test-venv.sh", python.display());
    python
}

fn script(name: &str) -> String {
    format!("{}/tests/mcp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CONFIG: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: mcp-server
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: research-agent
      namespace: default
      trustDomain: public
      operations:
      - {name: /mcp, httpVerb: ['*'], action: allow}
    - appId: ops-agent
      namespace: default
      trustDomain: public
      operations:
      - {name: /mcp, httpVerb: ['*'], action: allow}
  ward:
    auditLog: AUDIT
    mcp:
      endpoint: /mcp
      defaultAction: deny
      rules:
      - callers: [research-agent]
        allow: [search_docs]
      - callers: [ops-agent]
        allow: ["*"]
        deny: [delete_*]
"#;

/// Runs the SDK client through `sidecar` and returns its JSON lines (or its stderr when it failed).
fn client(python: &PathBuf, sidecar_http: &str, tools: &[&str]) -> Result<Vec<Value>, String> {
    let url = format!("http://{sidecar_http}/v1.0/invoke/mcp-server/method/mcp");
    let mut child = Command::new(python)
        .arg(script("client.py"))
        .arg(&url)
        .args(tools)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the MCP client did not finish within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

#[test]
fn official_sdk_client_and_server_through_their_sidecars() {
    let python = python();
    let mesh = Mesh::start(&[]);
    let record = mesh.dir.path().join("ran.txt");
    std::fs::write(&record, "").unwrap();
    let port = free_port();
    let _server = Proc(
        Command::new(&python)
            .arg(script("server.py"))
            .arg(port.to_string())
            .arg(&record)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(30), "the MCP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
    let audit = mesh.dir.path().join("audit.log");
    let config = mesh.write("mcp.yaml", &CONFIG.replace("AUDIT", path_str(&audit)));
    let mut spec = SidecarSpec::new("mcp-server", Some(port));
    spec.config = Some(&config);
    let _server_sidecar = mesh.sidecar(spec);
    let research = mesh.sidecar(SidecarSpec::new("research-agent", None));
    let ops = mesh.sidecar(SidecarSpec::new("ops-agent", None));
    let intruder = mesh.sidecar(SidecarSpec::new("intruder", None));
    let ran = || std::fs::read_to_string(&record).unwrap().lines().map(str::to_owned).collect::<Vec<_>>();

    // research-agent: sees and runs search_docs only; delete_repo is a JSON-RPC error and never runs.
    let lines = client(&python, &research.http, &["search_docs", "delete_repo"]).expect("research client");
    assert_eq!(lines[0], json!({"tools": ["search_docs"]}));
    assert_eq!(lines[1]["call"], "search_docs");
    assert_eq!(lines[1]["is_error"], false, "{lines:?}");
    assert_eq!(lines[2]["call"], "delete_repo");
    assert_eq!(lines[2]["code"], -32001, "{lines:?}");
    assert!(lines[2]["error"].as_str().unwrap().contains("spiffe://public/ns/default/research-agent"), "{lines:?}");
    assert_eq!(ran(), ["search_docs"]);

    // ops-agent: everything but delete_*.
    let lines = client(&python, &ops.http, &["read_file", "delete_repo"]).expect("ops client");
    assert_eq!(lines[0], json!({"tools": ["read_file", "search_docs"]}));
    assert_eq!(lines[1]["is_error"], false, "{lines:?}");
    assert_eq!(lines[2]["code"], -32001, "{lines:?}");
    assert_eq!(ran(), ["search_docs", "read_file"]);

    // A caller accessControl refuses never reaches the JSON-RPC layer.
    assert!(client(&python, &intruder.http, &["search_docs"]).is_err());
    assert_eq!(ran(), ["search_docs", "read_file"]);

    let log = std::fs::read_to_string(&audit).unwrap();
    let mcp_lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"].as_str().unwrap().starts_with("MCP_"))
        .collect();
    let deny =
        mcp_lines.iter().find(|e| e["event"] == "MCP_TOOL_DENY" && e["tool"] == "delete_repo").expect("deny line");
    assert_eq!(deny["caller"], "spiffe://public/ns/default/research-agent");
    assert_eq!(deny["callee"], "mcp-server");
    assert_eq!(deny["rule"], "spec.ward.mcp.defaultAction");
    assert!(deny["jsonrpc_id"].is_string(), "{deny}");
    assert!(mcp_lines.iter().any(|e| e["event"] == "MCP_TOOL_ALLOW"
        && e["tool"] == "read_file"
        && e["rule"] == "spec.ward.mcp.rules[1].allow[0]"));
    assert!(!log.contains("sidecars\""), "tool arguments never reach the audit log");
    assert!(mcp_lines.iter().all(|e| !e["caller"].as_str().unwrap_or("").contains("intruder")));
}

// --- a raw JSON-RPC server --------------------------------------------------------------------------------------

/// Answers every request message with `{"ran": <method or tool>}`; `tools/list` with 200 tools. Answers as SSE when
/// the request has `x-answer: sse`. Records what it ran.
struct RawServer {
    addr: std::net::SocketAddr,
    ran: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

fn answer(message: &Value) -> Option<Value> {
    let id = message.get("id")?;
    let method = message["method"].as_str().unwrap_or("");
    let result = if method == "tools/list" {
        let tools: Vec<Value> =
            (0..200).map(|i| json!({"name": format!("tool_{i:03}"), "inputSchema": {"type": "object"}})).collect();
        json!({"tools": tools, "nextCursor": "page-2"})
    } else {
        json!({"ran": message["params"]["name"].as_str().unwrap_or(method)})
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

impl RawServer {
    fn start() -> RawServer {
        use http_body_util::BodyExt;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let ran = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = ran.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let sse = req.headers().get("x-answer").is_some_and(|v| v == "sse");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let messages = match &parsed {
                                Value::Array(items) => items.clone(),
                                other => vec![other.clone()],
                            };
                            for m in &messages {
                                let what = m["params"]["name"].as_str().or(m["method"].as_str()).unwrap_or("?");
                                sink.lock().unwrap().push(what.to_owned());
                            }
                            let answers: Vec<Value> = messages.iter().filter_map(answer).collect();
                            let (content_type, text) = if sse {
                                let events: String =
                                    answers.iter().map(|a| format!("event: message\ndata: {a}\n\n")).collect();
                                ("text/event-stream", events)
                            } else if parsed.is_array() {
                                ("application/json", Value::Array(answers).to_string())
                            } else {
                                ("application/json", answers.first().cloned().unwrap_or(Value::Null).to_string())
                            };
                            let response = hyper::Response::builder()
                                .header("content-type", content_type)
                                .body(http_body_util::Full::new(bytes::Bytes::from(text)))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        RawServer { addr, ran, _runtime: runtime }
    }

    fn ran(&self) -> Vec<String> {
        std::mem::take(&mut *self.ran.lock().unwrap())
    }
}

#[test]
fn batches_sse_lists_and_malformed_messages() {
    let mesh = Mesh::start(&[]);
    let server = RawServer::start();
    let audit = mesh.dir.path().join("audit.log");
    let config = CONFIG
        .replace("AUDIT", path_str(&audit))
        .replace("allow: [search_docs]", "allow: [search_docs, \"tool_00*\", \"検索\"]");
    let config = mesh.write("mcp.yaml", &config);
    let mut spec = SidecarSpec::new("mcp-server", Some(server.addr.port()));
    spec.config = Some(&config);
    let _callee = mesh.sidecar(spec);
    let agent = mesh.sidecar(SidecarSpec::new("research-agent", None));
    let http = Http::new();
    let post = |body: &Value, headers: &[(&str, &str)]| {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        http.send("POST", &agent.http, "/v1.0/invoke/mcp-server/method/mcp", &all, body.to_string().into_bytes())
    };
    let call =
        |id: i64, tool: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool}});

    // A batch: allowed calls forwarded as a smaller batch, denied ones answered by the sidecar, order kept.
    let batch = json!([call(1, "search_docs"), call(2, "delete_repo"), {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}, call(3, "検索")]);
    let reply = post(&batch, &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answers = reply.json();
    let ids: Vec<i64> = answers.as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(answers[1]["error"]["code"], -32001);
    assert_eq!(server.ran(), ["search_docs", "notifications/progress", "検索"]);

    // tools/list answered as JSON and as SSE: only permitted tools (tool_000..tool_009), the cursor untouched.
    let list = json!({"jsonrpc": "2.0", "id": "l1", "method": "tools/list"});
    for headers in [vec![], vec![("x-answer", "sse")]] {
        let reply = post(&list, &headers);
        assert_eq!(reply.status, 200);
        let message: Value = if headers.is_empty() {
            reply.json()
        } else {
            assert!(reply.headers["content-type"].starts_with("text/event-stream"));
            let text = reply.text();
            let data = text.lines().find_map(|l| l.strip_prefix("data: ")).expect("an SSE data line");
            serde_json::from_str(data).unwrap()
        };
        let names: Vec<&str> =
            message["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names.len(), 10, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("tool_00")));
        assert_eq!(message["result"]["nextCursor"], "page-2");
    }
    server.ran();

    // A denied single call as SSE-capable request: the sidecar's JSON answer, HTTP 200.
    let reply = post(&call(9, "tool_100"), &[]);
    assert_eq!((reply.status, reply.json()["error"]["code"].clone()), (200, json!(-32001)));

    // Malformed or ambiguous messages are refused with 400 and never reach the server.
    let raw = |text: &str, headers: &[(&str, &str)]| {
        http.send("POST", &agent.http, "/v1.0/invoke/mcp-server/method/mcp", headers, text.as_bytes().to_vec())
    };
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, i64);
    let cases: Vec<Case<'_>> = vec![
        ("{not json", vec![], -32700),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_docs","name":"delete_repo"}}"#,
            vec![],
            -32700,
        ),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_repo"]}}"#, vec![], -32602),
        (r#"{"jsonrpc":"2.0","id":1,"method":"admin/exec"}"#, vec![], -32601),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_docs"}}"#,
            vec![("mcp-name", "delete_repo")],
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_docs"}}"#,
            vec![("mcp-method", "tools/list")],
            -32600,
        ),
    ];
    for (body, headers, code) in cases {
        let reply = raw(body, &headers);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.json()["error"]["code"], code, "{body}");
    }
    let huge: Vec<Value> = (0..1001).map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping"})).collect();
    assert_eq!(post(&Value::Array(huge), &[]).status, 400);
    assert!(server.ran().is_empty(), "a refused message reached the server");

    // GET (the session stream) passes under the ACL alone.
    assert_eq!(http.get(&agent.http, "/v1.0/invoke/mcp-server/method/mcp").status, 200);

    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(log.contains("\"event\":\"MCP_MESSAGE_REFUSED\""), "{log}");
    // Non-ASCII is percent-encoded in audit lines (nothing can forge a line or hide in look-alike characters).
    assert!(log.contains("\"tool\":\"%E6%A4%9C%E7%B4%A2\""), "{log}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `examples/mcp-agent` under `ward run -f`, as the docs tell users to run it: the identity provider first, then the
/// run file (with the test's Python and free ports in place of `python3`, 6101 and 6199).
#[test]
fn the_mcp_agent_example_runs_under_ward_run() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let example = dir.path().join("mcp-agent");
    copy_dir(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/mcp-agent")), &example);
    let (app_port, idp_port) = (free_port().to_string(), free_port().to_string());
    for file in ["dapr.yaml", "components/bearer.yaml", "agent/agent.py", "idp.py"] {
        let path = example.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("[\"python3\"", &format!("[\"{}\"", python.display()))
            .replace("6101", &app_port)
            .replace("6199", &idp_port);
        std::fs::write(&path, text).unwrap();
    }
    let _idp = Proc(
        Command::new(&python).arg(example.join("idp.py")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let idp_port: u16 = idp_port.parse().unwrap();
    eventually(Duration::from_secs(30), "the identity provider", || {
        std::net::TcpStream::connect(("127.0.0.1", idp_port)).ok().map(|_| ())
    });
    let home = dir.path().join("home");
    let mut run =
        support::Ward::spawn("mcp-agent", &["run", "-f", path_str(&example)], &[("WARD_HOME", path_str(&home))]);
    run.wait_stdout("== APP - research-agent == research-agent done", Duration::from_secs(90));
    let out = run.stdout_text();
    for expected in [
        "tools I can see: ['read_file', 'search_docs']",
        "search_docs: 3 pages mention sidecars",
        "delete_repo refused: tool delete_repo is not permitted for spiffe://public/ns/default/research-agent",
        "search_docs ran for 'sidecars'",
        "without a token: 401 Unauthorized",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("delete_repo RAN"), "{out}");
    run.terminate();
    assert!(run.wait_exit(Duration::from_secs(30)).success());
}
