//! Fault tests with real `ward` processes on 127.0.0.1 (issue 24): certificate renewal with a short lifetime, a
//! sentry outage across the renewal time, an audit log torn by a crash, `ward audit verify` on damaged logs,
//! connections that must not outlive their certificates, a callee app and a callee sidecar restarted, and a clean
//! shutdown leaving the registry. Pub/sub faults (subscriber crash, broker restart) are in `pubsub_redis.rs` and
//! `pubsub_jetstream.rs`. Every wait is bounded and every process is killed when its handle drops.

mod support;

use support::free_port;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use support::mesh::{Mesh, SidecarSpec};
use support::{Ward, path_str, ward_output};
use ward_identity::{SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_policy::{AuditChain, AuditEvent, Decision};
use ward_sentry::{SentryClient, SentryClientConfig};

/// Sentry's log line for every certificate it signs, first issue and renewals alike.
const ISSUED: &str = "issued certificate";

fn count_issued(mesh: &Mesh) -> usize {
    mesh.sentry.process.stderr_text().matches(ISSUED).count()
}

/// Issue 24 defect 1: with `--workload-cert-ttl 60s` and the default 15-minute clock skew, sentry backdates
/// `not_before` by 15 minutes, so "half the certificate's life" lies in the past and a sidecar that schedules from
/// `not_before` renews without pause. Over three seconds after start a sidecar may renew at most once.
#[test]
fn a_short_certificate_lifetime_does_not_make_the_sidecar_renew_in_a_loop() {
    let mesh = Mesh::start(&["--workload-cert-ttl", "60s"]);
    let sidecar = mesh.sidecar(SidecarSpec::new("orders", None));
    let at_ready = count_issued(&mesh);
    assert!(at_ready >= 1, "the sidecar got its first certificate: {}", mesh.sentry.process.stderr_text());
    std::thread::sleep(Duration::from_secs(3));
    let renewals = count_issued(&mesh) - at_ready;
    assert!(
        renewals <= 1,
        "{renewals} renewals in 3 s with a 60 s certificate; sidecar log tail:\n{}",
        tail(&sidecar.process.stderr_text(), 5)
    );
    assert!(
        !sidecar.process.stderr_text().contains("renewed workload certificate"),
        "renewals are logged at debug level, not info"
    );
}

fn sentry_on(ca: &Path, port: u16, extra: &[&str]) -> Ward {
    let port = port.to_string();
    let mut args = vec!["sentry", "--issuer-credentials", path_str(ca), "--port", &port, "--healthz-port", "0"];
    args.extend_from_slice(extra);
    let mut process = Ward::spawn("sentry", &args, &[]);
    process.wait_stdout("ward sentry ready:", Duration::from_secs(20));
    process
}

/// Issue 24 defect 5 (first half): sentry is down until well after the certificate expired. The renewer keeps
/// retrying, at most 2 s apart while the certificate is expired, so the workload holds a valid certificate again
/// within 3 s of sentry's return (today's backoff had grown to 8 s by then).
#[test]
fn after_expiry_a_certificate_is_back_within_three_seconds_of_sentrys_return() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let port = free_port();
    let lifetime = ["--workload-cert-ttl", "4s", "--allowed-clock-skew", "0s"];
    let sentry = sentry_on(&ca, port, &lifetime);
    let td = TrustDomain::new("public").unwrap();
    let bundle = TrustBundle::from_pem(td.clone(), &std::fs::read(ca.join("ca.crt")).unwrap()).unwrap();
    let client = SentryClient::new(SentryClientConfig {
        address: format!("127.0.0.1:{port}"),
        sentry_id: SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").unwrap(),
        bundle: TrustBundleHandle::new(bundle),
        app_id: "orders".to_owned(),
        namespace: "default".to_owned(),
        trust_domain: td,
        token_file: None,
        skew: Duration::ZERO,
        kubernetes: false,
        sentry_trust: None,
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let supervisor = rt.block_on(client.start()).unwrap();
    let resolver = supervisor.resolver();
    let first_expiry = resolver.current().unwrap().not_after();
    drop(sentry);

    // Down for 9 s past the expiry: long enough for an uncapped backoff to grow to its maximum.
    let back_at = first_expiry + Duration::from_secs(9);
    std::thread::sleep(back_at.duration_since(SystemTime::now()).unwrap_or_default());
    assert!(resolver.current().is_some_and(|svid| svid.is_expired_at(SystemTime::now())), "expired while down");
    let _sentry = sentry_on(&ca, port, &lifetime);
    let returned = Instant::now();
    let deadline = returned + Duration::from_secs(15);
    while resolver.current().is_none_or(|svid| svid.is_expired_at(SystemTime::now())) {
        assert!(Instant::now() < deadline, "no valid certificate 15 s after sentry returned");
        std::thread::sleep(Duration::from_millis(20));
    }
    let recovery = returned.elapsed();
    assert!(recovery <= Duration::from_secs(3), "a valid certificate only {recovery:?} after sentry returned");
    drop(supervisor);
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        time: format!("2026-05-01T10:00:{:02}Z", n % 60),
        event: "AUTH_INTERNAL_ALLOW".into(),
        caller: Some("spiffe://public/ns/default/caller".into()),
        callee: "orders".into(),
        operation: format!("orders/{n}"),
        verb: Some("GET".into()),
        decision: Decision::Allow,
        rule: "no accessControl".into(),
        reason: "test".into(),
        tool: None,
        jsonrpc_id: None,
    }
}

/// `n` sealed lines of one chain, without newlines.
fn sealed_lines(n: usize) -> Vec<String> {
    let mut chain = AuditChain::new();
    (0..n).map(|i| chain.seal_and_commit(&event(i))).collect()
}

fn verify(file: &Path) -> (i32, String) {
    let (code, out, err) = ward_output(&["audit", "verify", path_str(file)], &[]);
    (code, format!("{out}{err}"))
}

fn torn_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.torn-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .collect();
    found.sort();
    found
}

/// Issue 24 defect 2: a crash mid-write leaves a last line without its newline. The sidecar starts anyway, moves the
/// torn bytes aside to `<file>.torn-<timestamp>` (kept, never deleted), records that in a new event continuing the
/// chain from the last whole line, and `ward audit verify` is green.
#[test]
fn a_torn_audit_tail_is_moved_aside_recorded_and_the_sidecar_starts() {
    let mesh = Mesh::start(&[]);
    let audit_dir = mesh.dir.path().join("audit");
    std::fs::create_dir_all(&audit_dir).unwrap();
    let log = audit_dir.join("audit.log");
    let lines = sealed_lines(3);
    let torn = &lines[2][..lines[2].len() / 2];
    std::fs::write(&log, format!("{}\n{}\n{torn}", lines[0], lines[1])).unwrap();

    let (code, report) = verify(&log);
    assert!(report.contains("torn tail") && !report.contains("BROKEN"), "before the restart: {report}");
    assert_eq!(code, 3, "a torn tail has its own exit code: {report}");

    let mut spec = SidecarSpec::new("orders", None);
    spec.extra = vec!["--audit-log".into(), path_str(&log).into()];
    let sidecar = mesh.sidecar(spec);

    let moved = torn_files(&audit_dir, "audit.log");
    assert_eq!(moved.len(), 1, "one torn file: {moved:?}");
    assert_eq!(std::fs::read(&moved[0]).unwrap(), torn.as_bytes(), "the torn bytes, kept as they were");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    let kept: Vec<&str> = text.lines().collect();
    assert_eq!(kept.len(), 3, "two whole lines and the torn-tail event: {text}");
    assert_eq!(&kept[..2], &[lines[0].as_str(), lines[1].as_str()]);
    let recorded = ward_policy::audit::parse_line(kept[2]).unwrap();
    assert_eq!(recorded.event, ward_policy::audit::AUDIT_TORN_TAIL);
    let moved_name = moved[0].file_name().unwrap().to_str().unwrap();
    assert!(recorded.operation == moved_name, "{recorded:?}");
    assert!(recorded.reason.contains(&format!("{} bytes", torn.len())), "{recorded:?}");
    assert!(sidecar.process.stderr_text().contains("torn"), "the move is logged");

    let (code, report) = verify(&log);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("3 lines") && report.contains("intact"), "{report}");
    assert!(report.contains("torn tail recorded") && report.contains("file present"), "{report}");
}

/// `ward audit verify` names the physical line that breaks the chain (blank lines count), and a damaged last
/// complete line makes the sidecar refuse to start with that line's real number (not "line 1").
#[test]
fn damaged_logs_are_reported_at_their_real_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let lines = sealed_lines(5);
    // Line 1, a blank line 2, then lines 3.. ; the event on physical line 5 is edited, so line 6 breaks.
    let mut physical: Vec<String> = vec![lines[0].clone(), String::new()];
    physical.extend(lines[1..].iter().cloned());
    physical[4] = physical[4].replace("orders/3", "orders/X");
    let edited = dir.path().join("edited.log");
    std::fs::write(&edited, physical.join("\n") + "\n").unwrap();
    let (code, report) = verify(&edited);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("BROKEN at line 6"), "{report}");

    // Garbage in the middle: named at its own line.
    let mut garbage = lines.clone();
    garbage.insert(3, "{\"half\": ".into());
    let garbled = dir.path().join("garbled.log");
    std::fs::write(&garbled, garbage.join("\n") + "\n").unwrap();
    let (code, report) = verify(&garbled);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("BROKEN at line 4"), "{report}");

    // A last complete line that is not a sealed line: the sidecar refuses to append, naming line 4.
    let mut bad_tail = lines[..3].to_vec();
    bad_tail.push("not a sealed line".into());
    let bad = dir.path().join("bad-tail.log");
    std::fs::write(&bad, bad_tail.join("\n") + "\n").unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (code, _, stderr) = ward_output(
        &[
            "sidecar",
            "--app-id",
            "orders",
            "--dapr-http-port",
            "0",
            "--dapr-internal-grpc-port",
            "0",
            "--dapr-grpc-port",
            "0",
            "--audit-log",
            path_str(&bad),
        ],
        &[("WARD_HOME", path_str(&home))],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
}

/// A callee sidecar SIGKILLed in the middle of a burst of audited calls, then restarted on the same audit log with a
/// torn line appended (what a kill in the middle of a write leaves; a kill rarely lands inside one `write`, so the
/// test adds it): the restarted sidecar moves the torn line aside and the whole log verifies as one chain.
/// (That every request that reached the app was audited before the kill is issue 24 defect 3, not checked here.)
#[test]
fn sigkill_during_a_burst_leaves_a_log_that_verifies_after_restart() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use support::mesh::{Http, TestApp};

    let mesh = Mesh::start(&[]);
    let app = TestApp::start();
    let log = mesh.dir.path().join("callee-audit.log");
    let callee_spec = || {
        let mut spec = SidecarSpec::new("callee", Some(app.addr.port()));
        spec.extra = vec!["--audit-log".into(), path_str(&log).into()];
        spec
    };
    let mut callee = mesh.sidecar(callee_spec());
    let caller = mesh.sidecar(SidecarSpec::new("caller", None));

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let burst = {
        let (stop, answered, addr) = (stop.clone(), answered.clone(), caller.http.clone());
        std::thread::spawn(move || {
            let http = Http::new();
            while !stop.load(Ordering::Relaxed) {
                let reply = http.send("POST", &addr, "/v1.0/invoke/callee/method/orders/1", &[], b"x".to_vec());
                if reply.status == 200 {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < deadline, "the burst never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    callee.process.kill9();
    stop.store(true, Ordering::Relaxed);
    burst.join().unwrap();

    let (code, report) = verify(&log);
    assert!(code == 0 || code == 3, "the killed sidecar's log is a chain, maybe with a torn tail: {report}");
    let mut bytes = std::fs::read(&log).unwrap();
    let whole_before = bytes.iter().filter(|b| **b == b'\n').count();
    assert!(whole_before > 0, "the burst was audited: {report}");
    if code == 0 {
        bytes.extend_from_slice(b"{\"time\":\"2026-");
        std::fs::write(&log, &bytes).unwrap();
    }

    let _callee = mesh.sidecar(callee_spec());
    assert_eq!(torn_files(mesh.dir.path(), "callee-audit.log").len(), 1);
    let (code, report) = verify(&log);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains(&format!("{} lines", whole_before + 1)), "{report}");
}

/// Issue 24 defect 4: a connection between two sidecars opened while their certificates were valid must not carry
/// calls once both leaves have expired (and sentry, gone, cannot renew them). Certificates live 4 s; the first call
/// opens the pooled mTLS connection, sentry is killed, and once every certificate either sidecar could hold has
/// expired a call over the still-open connection must be refused with nothing reaching the app. Before that, while
/// sentry is up, calls across two certificate lifetimes all succeed: draining a connection at its certificates'
/// expiry drops no call (invariant 7), the next one goes over a new connection with the renewed certificates.
#[test]
fn a_connection_does_not_outlive_the_certificates_it_was_opened_with() {
    use support::mesh::{Http, TestApp};

    let mut mesh = Mesh::start(&["--workload-cert-ttl", "6s", "--allowed-clock-skew", "0s"]);
    let app = TestApp::start();
    let _callee = mesh.sidecar(SidecarSpec::new("callee", Some(app.addr.port())));
    let caller = mesh.sidecar(SidecarSpec::new("caller", None));
    let http = Http::new();
    let call = || http.send("POST", &caller.http, "/v1.0/invoke/callee/method/orders/1", &[], b"x".to_vec());

    let across = Instant::now();
    let mut calls = 0;
    while across.elapsed() < Duration::from_secs(10) {
        let reply = call();
        assert_eq!(
            reply.status,
            200,
            "call {calls} failed while sentry was up: {}\n{}",
            reply.text(),
            tail(&_callee.process.stderr_text(), 8)
        );
        calls += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(app.seen().len(), calls);
    mesh.sentry.process.kill9();
    let killed = Instant::now();
    // The last certificate either sidecar got before the kill expires at most 6 s later.
    std::thread::sleep(Duration::from_secs(7));
    assert!(killed.elapsed() < Duration::from_secs(20), "bounded");

    let late = call();
    assert_ne!(late.status, 200, "a call went through after both certificates expired: {}", late.text());
    assert_eq!(app.seen().len(), calls, "a request reached the app over a connection whose certificates expired");
}

/// Every fresh address the SQLite name-resolution registry in `ward_home` holds for `app_id` (namespace `default`).
fn registered(ward_home: &Path, app_id: &str) -> Vec<String> {
    use ward_components::nameresolution::{RegistryOptions, SqliteRegistry};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let path = ward_home.join("nameresolution.db").to_string_lossy().into_owned();
    rt.block_on(async {
        let registry = SqliteRegistry::open(RegistryOptions::new(path)).await.unwrap();
        registry.resolve_all(app_id, "default").await.unwrap()
    })
}

/// Issue 24 defect 5 (second half): a callee sidecar SIGKILLed and restarted on different ports leaves its old
/// address in the registry (fresh for a few seconds) and in the caller's cache. A refused connection to it makes the
/// caller look the app up again (bypassing its cache, without the refused address) and retry once, so every call
/// after the restart succeeds, each reaching the app exactly once.
#[test]
fn a_callee_sidecar_restarted_on_new_ports_is_reached_by_the_next_call() {
    use support::mesh::{Http, TestApp};

    let mesh = Mesh::start(&[]);
    let app = TestApp::start();
    let mut callee = mesh.sidecar(SidecarSpec::new("callee", Some(app.addr.port())));
    let caller = mesh.sidecar(SidecarSpec::new("caller", None));
    let http = Http::new();
    let call = || http.send("POST", &caller.http, "/v1.0/invoke/callee/method/orders/1", &[], b"x".to_vec());
    assert_eq!(call().status, 200, "before the restart");
    let old = callee.internal.clone();

    callee.process.kill9();
    let restarted = mesh.sidecar(SidecarSpec::new("callee", Some(app.addr.port())));
    assert_ne!(restarted.internal, old, "the restarted sidecar listens elsewhere");
    assert!(registered(&mesh.ward_home, "callee").len() >= 2, "the killed sidecar's row is still fresh");
    app.clear();
    for i in 0..10 {
        let reply = call();
        assert_eq!(reply.status, 200, "call {i} after the restart: {}", reply.text());
    }
    assert_eq!(app.seen().len(), 10, "each call reached the app exactly once");
}

/// A sidecar stopped cleanly (SIGTERM) removes its own row from the registry, so no caller is sent to it.
#[test]
fn a_clean_shutdown_removes_the_sidecars_own_registry_entry() {
    let mesh = Mesh::start(&[]);
    let mut callee = mesh.sidecar(SidecarSpec::new("callee", None));
    let address = callee.internal.clone();
    assert!(registered(&mesh.ward_home, "callee").iter().any(|a| *a == address || address.ends_with(a.as_str())));
    callee.process.terminate();
    let status = callee.process.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {}", tail(&callee.process.stderr_text(), 5));
    assert_eq!(registered(&mesh.ward_home, "callee"), Vec::<String>::new(), "its row is gone");
}

/// Issue 24 fault suite: sentry is down across the moment both sidecars want to renew (certificates live 30 s,
/// renewal is due after 15 s; sentry is away from 3 s to 16 s). No call fails meanwhile, and once sentry is back
/// both sidecars renew without a restart.
#[test]
fn a_sentry_outage_across_the_renewal_time_fails_no_call() {
    use support::mesh::{Http, TestApp};

    let lifetime = ["--workload-cert-ttl", "30s", "--allowed-clock-skew", "0s"];
    let mut mesh = Mesh::start(&lifetime);
    let port: u16 = mesh.sentry.grpc.rsplit(':').next().unwrap().parse().unwrap();
    let app = TestApp::start();
    let _callee = mesh.sidecar(SidecarSpec::new("callee", Some(app.addr.port())));
    let caller = mesh.sidecar(SidecarSpec::new("caller", None));
    let http = Http::new();
    let started = Instant::now();
    let mut sentry_back: Option<Ward> = None;
    let mut calls = 0;
    loop {
        let at = started.elapsed();
        if at > Duration::from_secs(3) && at < Duration::from_secs(16) && sentry_back.is_none() {
            mesh.sentry.process.kill9();
        }
        if at >= Duration::from_secs(16) && sentry_back.is_none() {
            sentry_back = Some(sentry_on(&mesh.dir.path().join("ca"), port, &lifetime));
        }
        let reply = http.send("POST", &caller.http, "/v1.0/invoke/callee/method/orders/1", &[], b"x".to_vec());
        assert_eq!(reply.status, 200, "call {calls} at {at:?} failed: {}", reply.text());
        calls += 1;
        let renewed = sentry_back.as_ref().map_or(0, |s| s.stderr_text().matches(ISSUED).count());
        if renewed >= 2 {
            break;
        }
        assert!(at < Duration::from_secs(28), "the sidecars did not renew within 12 s of sentry's return");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(app.seen().iter().filter(|s| s.path_and_query == "/orders/1").count(), calls);
}

/// Issue 24 fault suite: the callee's app is killed and started again on the same port. Calls meanwhile fail
/// fast with Dapr's answer (nothing hangs), and the first call after the app is back succeeds, without restarting
/// either sidecar.
#[test]
fn a_callee_app_killed_and_restarted_is_reached_again() {
    use support::mesh::{Http, TestApp};

    let mesh = Mesh::start(&[]);
    let app = TestApp::start();
    let port = app.addr.port();
    let _callee = mesh.sidecar(SidecarSpec::new("callee", Some(port)));
    let caller = mesh.sidecar(SidecarSpec::new("caller", None));
    let http = Http::new();
    let call = || http.send("POST", &caller.http, "/v1.0/invoke/callee/method/orders", &[], b"x".to_vec());
    assert_eq!(call().status, 200);
    drop(app);
    let down = Instant::now();
    let reply = call();
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.text().contains("ERR_DIRECT_INVOKE"), "{}", reply.text());
    assert!(down.elapsed() < Duration::from_secs(5), "a call to a dead app fails fast: {:?}", down.elapsed());

    // The app comes back on the same port.
    let back = support::eventually(Duration::from_secs(10), "the port free again", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()
    });
    drop(back);
    let app = TestApp::start_on(port);
    let reply = support::eventually(Duration::from_secs(10), "a call reaching the restarted app", || {
        let reply = call();
        (reply.status == 200).then_some(reply)
    });
    assert!(reply.text().starts_with("echo:/orders"), "{}", reply.text());
    assert_eq!(app.seen().len(), 1, "the restarted app got exactly the call that succeeded");
}
