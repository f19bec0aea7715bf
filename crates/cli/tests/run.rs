//! `ward run` end to end: a single app calling itself, a Multi-App Run file whose apps call each other over mTLS,
//! an app that fails, shutdown that leaves no process behind, `ward stop`, a malformed run file, and the generated
//! per-app API token and one-time join token.

mod support;

use support::free_port;

use std::path::Path;
use std::time::Duration;

use support::{Ward, path_str, ward_output};

/// A Python app: serves GET /hello on APP_PORT, calls TARGET's /hello through its sidecar, prints the result,
/// then exits with EXIT_CODE (or keeps serving when STAY is set).
const APP: &str = r#"
import json, os, sys, threading, time, urllib.request, urllib.error
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = ("hello from " + os.environ["APP_ID"] + " to " + self.headers.get("dapr-caller-app-id", "?")).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
port = int(os.environ.get("APP_PORT", "0") or 0)
if port:
    srv = HTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
token = os.environ.get("DAPR_API_TOKEN", "")
headers = {"dapr-api-token": token} if token else {}
if os.environ.get("TOKEN_OUT"):
    with open(os.environ["TOKEN_OUT"], "w") as f: f.write(token)
    print("HAS-TOKEN %s" % ("yes" if len(token) >= 32 else "no"), flush=True)
    url = "http://127.0.0.1:%s/v1.0/metadata" % os.environ["DAPR_HTTP_PORT"]
    for attempt in range(150):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                print("NO-TOKEN-STATUS %s" % r.status, flush=True)
                break
        except urllib.error.HTTPError as e:
            print("NO-TOKEN-STATUS %s" % e.code, flush=True)
            break
        except Exception:
            time.sleep(0.1)
target = os.environ.get("TARGET")
if target:
    url = "http://127.0.0.1:%s/v1.0/invoke/%s/method/hello" % (os.environ["DAPR_HTTP_PORT"], target)
    for attempt in range(150):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
                print("CALL-RESULT %s %s" % (r.status, r.read().decode()), flush=True)
                break
        except Exception as e:
            time.sleep(0.1)
    else:
        print("CALL-FAILED", flush=True)
        sys.exit(1)
if os.environ.get("STAY"):
    print("STAYING", flush=True)
    while True: time.sleep(1)
time.sleep(float(os.environ.get("LINGER", "0")))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"#;

fn write_app(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("app.py"), APP).unwrap();
}

fn home_env(dir: &Path) -> String {
    path_str(&dir.join("home")).to_owned()
}

#[test]
fn single_app_reaches_its_sidecar_and_calls_itself() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "solo");
    let port = free_port().to_string();
    let app = dir.path().join("solo").join("app.py");
    let home = home_env(dir.path());
    let mut run = Ward::spawn(
        "run",
        &["run", "--app-id", "solo", "--app-port", &port, "--", "python3", path_str(&app)],
        &[("WARD_HOME", &home), ("TARGET", "solo"), ("LINGER", "1")],
    );
    let status = run.wait_exit(Duration::from_secs(60));
    let out = run.stdout_text();
    assert!(status.success(), "{out}\n{}", run.stderr_text());
    assert!(out.contains("CALL-RESULT 200 hello from solo to solo"), "{out}");
    assert!(out.contains("== solo: sidecar ready:"), "{out}");
    assert!(out.contains("identity spiffe://public/ns/default/solo"), "{out}");
    assert!(out.contains("== APP - solo =="), "app output is prefixed: {out}");
    assert!(Path::new(&home).join("ca").join("ca.crt").exists(), "CA material created on first use");
}

#[test]
fn run_file_apps_call_each_other_over_mtls_and_a_failing_app_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "alpha");
    write_app(dir.path(), "beta");
    let (pa, pb) = (free_port(), free_port());
    let file = dir.path().join("dapr.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nname: pair\napps:\n  - appID: alpha\n    appDirPath: ./alpha\n    appPort: {pa}\n    command: [\"python3\", \"app.py\"]\n    env:\n      TARGET: beta\n      LINGER: \"2\"\n  - appID: beta\n    appDirPath: ./beta\n    appPort: {pb}\n    command: [\"python3\", \"app.py\"]\n    env:\n      TARGET: alpha\n      LINGER: \"2\"\n      EXIT_CODE: \"3\"\n"
        ),
    )
    .unwrap();
    let home = home_env(dir.path());
    let mut run = Ward::spawn("run", &["run", "-f", path_str(dir.path())], &[("WARD_HOME", &home)]);
    let status = run.wait_exit(Duration::from_secs(60));
    let out = run.stdout_text();
    assert!(out.contains("CALL-RESULT 200 hello from beta to alpha"), "{out}");
    assert!(out.contains("CALL-RESULT 200 hello from alpha to beta"), "{out}");
    assert!(out.contains("beta exited with exit status: 3"), "the exit code is reported: {out}");
    assert!(!status.success(), "ward run fails when an app failed");
    // Both identities were issued by the embedded CA, and the audit logs chain.
    let (code, verify, _) = ward_output(&["audit", "verify", &format!("{home}/audit/alpha.log")], &[]);
    assert_eq!(code, 0, "{verify}");
}

fn pids_matching(pattern: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep").args(["-f", pattern]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn ctrl_c_and_ward_stop_leave_no_process_behind() {
    for how in ["SIGINT", "ward stop"] {
        let dir = tempfile::tempdir().unwrap();
        write_app(dir.path(), "stay");
        let file = dir.path().join("ward.yaml");
        std::fs::write(
            &file,
            format!(
                "version: 1\napps:\n  - appID: stay\n    appDirPath: ./stay\n    appPort: {}\n    command: [\"python3\", \"{}\"]\n    env:\n      STAY: \"1\"\n",
                free_port(),
                path_str(&dir.path().join("stay").join("app.py"))
            ),
        )
        .unwrap();
        let home = home_env(dir.path());
        let marker = path_str(dir.path()).to_owned();
        let mut run = Ward::spawn("run", &["run", "-f", path_str(&file)], &[("WARD_HOME", &home)]);
        run.wait_stdout("== APP - stay == STAYING", Duration::from_secs(30));
        assert!(pids_matching(&marker).len() >= 2, "app and sidecar are running");
        if how == "SIGINT" {
            std::process::Command::new("kill").args(["-INT", &run.child.id().to_string()]).status().unwrap();
        } else {
            let (code, out, err) = ward_output(&["stop", "-f", path_str(&file)], &[("WARD_HOME", &home)]);
            assert_eq!(code, 0, "{out}{err}");
        }
        let status = run.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "{how}: {}", run.stdout_text());
        let out = run.stdout_text();
        let app_stop = out.find("stay: app stopped").expect("app stopped");
        let done = out.find("ward run: stopped").expect("run stopped");
        assert!(app_stop < done, "{out}");
        let left = pids_matching(&marker);
        assert!(left.is_empty(), "{how}: processes left behind: {left:?}");
    }
}

#[test]
fn malformed_run_file_gets_one_line_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "a");
    let file = dir.path().join("dapr.yaml");
    std::fs::write(&file, "version: 1\napps:\n  - appDirPath: ./a\n    appPrt: 3000\n").unwrap();
    let (code, _, err) = ward_output(&["run", "-f", path_str(&file)], &[("WARD_HOME", &home_env(dir.path()))]);
    assert_ne!(code, 0);
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "{err}");
    assert!(line.contains(&format!("{}:4:", file.display())), "{line}");
    assert!(line.contains("appPrt"), "{line}");
}

#[test]
fn the_quickstart_shows_allowed_and_refused_calls() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_env(dir.path());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/secure-mesh");
    let mut run = Ward::spawn("quickstart", &["run", "-f", example], &[("WARD_HOME", &home)]);
    run.wait_stdout("== APP - checkout == checkout done", Duration::from_secs(60));
    // Events are delivered asynchronously: wait for the last one.
    run.wait_stdout("== APP - orders == event order-placed for order 3", Duration::from_secs(20));
    let out = run.stdout_text();
    for expected in [
        "== APP - orders == received order 1 from checkout (verified identity), saved to orders-store",
        "== APP - checkout == order 3: 200 {\"saved\": 3}",
        "GET orders/admin (not allowed by orders' ACL): 403",
        "operation: admin verb: GET",
        "POST orders/refund (ACL allows, capability orders:refund not granted): 403",
        "desc = access denied: missing capability orders:refund",
        "(store scoped to orders): 500 {\"errorCode\":\"ERR_STATE_STORE_NOT_CONFIGURED\"",
        "wrong API token: 401 {\"errorCode\":\"ERR_UNAUTHORIZED\"",
        "== APP - orders == event order-placed for order 1 from orders (publisher verified: \
         spiffe://public/ns/default/orders)",
        "checkout may publish nothing): 403 {\"errorCode\":\"ERR_PUBSUB_FORBIDDEN\"",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("admin page served"), "the ACL let the admin call through:\n{out}");
    assert!(!out.contains("refund served"), "the capability check let the refund through:\n{out}");
    run.terminate();
    assert!(run.wait_exit(Duration::from_secs(30)).success());
    let (code, verify, _) = ward_output(&["audit", "verify", &format!("{home}/audit/orders.log")], &[]);
    assert_eq!(code, 0, "{verify}");
}

/// Row 12: each app gets a generated DAPR_API_TOKEN (printed nowhere) that its sidecar enforces, and the join
/// token file the sidecar used is gone once the sidecar has its certificate.
#[test]
fn each_app_gets_a_generated_api_token_and_join_tokens_are_gone_after_use() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "solo");
    let port = free_port().to_string();
    let app = dir.path().join("solo").join("app.py");
    let home = home_env(dir.path());
    let token_out = dir.path().join("token-seen-by-app");
    let mut run = Ward::spawn(
        "run",
        &["run", "--app-id", "solo", "--app-port", &port, "--", "python3", path_str(&app)],
        &[("WARD_HOME", &home), ("TARGET", "solo"), ("STAY", "1"), ("TOKEN_OUT", path_str(&token_out))],
    );
    run.wait_stdout("== APP - solo == STAYING", Duration::from_secs(60));
    let out = run.stdout_text();
    assert!(out.contains("HAS-TOKEN yes"), "{out}");
    assert!(out.contains("NO-TOKEN-STATUS 401"), "the sidecar refuses a call without the token: {out}");
    assert!(out.contains("CALL-RESULT 200 hello from solo to solo"), "and serves one with it: {out}");
    let token = std::fs::read_to_string(&token_out).unwrap();
    assert!(token.len() >= 32, "{token:?}");
    // Printed nowhere, and passed by environment, never on a command line.
    assert!(!out.contains(&token) && !run.stderr_text().contains(&token), "the token was printed");
    let marker = path_str(dir.path()).to_owned();
    for pid in pids_matching(&marker) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains(&token), "token on the command line of {pid}");
    }
    // The one-time join token file of the sidecar is gone once used.
    let leftovers: Vec<_> = walk(&Path::new(&home).join("run"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "token"))
        .collect();
    assert!(leftovers.is_empty(), "join token files left on disk: {leftovers:?}");
    run.terminate();
    assert!(run.wait_exit(Duration::from_secs(30)).success());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
