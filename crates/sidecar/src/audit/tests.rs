//! The audit sink under failure: a writer that fails on demand (in memory) and a real file under a small
//! `RLIMIT_FSIZE` in a child process. Each test is bounded by polling deadlines.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ward_policy::{AuditEvent, Decision};

use super::*;

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        time: format!("2026-05-01T10:00:{:02}Z", n % 60),
        event: "AUTH_INTERNAL_ALLOW".into(),
        caller: Some("spiffe://public/ns/default/caller".into()),
        callee: "callee".into(),
        operation: format!("orders/{n}"),
        verb: Some("GET".into()),
        decision: Decision::Allow,
        rule: "no accessControl".into(),
        reason: "padding so that one line is a few hundred bytes long ......................................".into(),
        tool: None,
        jsonrpc_id: None,
    }
}

/// Polls `done` every 5 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn complete_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty()).collect()
}

/// Issue 12 row 9 with an injected writer: a failed write does not advance the chain, leaves no fragment, makes
/// `record` fail closed until a write succeeds again, and the event accepted before the failure is written after it.
#[test]
fn failing_writer_keeps_the_chain_and_fails_closed() {
    let writer = MemoryWriter::default();
    let sink = AuditSink::from_writer(writer.clone(), AuditChain::new(), 16).unwrap_or_else(|e| panic!("{e}"));
    for n in 0..3 {
        assert_eq!(sink.record(event(n)), Ok(()));
    }
    wait_until(Duration::from_secs(10), "three lines", || complete_lines(&writer.contents()).len() == 3);

    writer.set_failing(true);
    assert_eq!(sink.record(event(3)), Ok(()), "accepted before the failure is known");
    wait_until(Duration::from_secs(10), "the writer to report failure", || sink.is_failing());
    assert_eq!(sink.record(event(4)), Err(AuditUnavailable::WriteFailing));
    assert_eq!(sink.refused_count(), 1);
    assert!(sink.write_failure_count() >= 1);

    writer.set_failing(false);
    wait_until(Duration::from_secs(10), "recovery", || !sink.is_failing());
    assert_eq!(sink.record(event(5)), Ok(()));
    wait_until(Duration::from_secs(10), "five lines", || complete_lines(&writer.contents()).len() == 5);

    let text = writer.contents();
    assert!(text.ends_with('\n'), "no fragment left: {text}");
    let lines = complete_lines(&text);
    assert_eq!(ward_policy::verify_chain(lines.iter().copied()).ok(), Some(5), "{text}");
    let operations: Vec<String> =
        lines.iter().filter_map(|l| ward_policy::audit::parse_line(l).ok()).map(|e| e.operation).collect();
    assert_eq!(operations, ["orders/0", "orders/1", "orders/2", "orders/3", "orders/5"]);
}

/// The queue is bounded: a writer that cannot keep up makes `record` refuse instead of growing memory.
#[test]
fn full_queue_refuses() {
    let writer = MemoryWriter::default();
    writer.set_failing(true);
    let sink = AuditSink::from_writer(writer.clone(), AuditChain::new(), 2).unwrap_or_else(|e| panic!("{e}"));
    // The writer takes the first event and keeps retrying it; two more fill the queue.
    let mut outcomes = Vec::new();
    for n in 0..4 {
        outcomes.push(sink.record(event(n)));
    }
    let refused = outcomes.iter().filter(|o| o.is_err()).count();
    assert!(refused >= 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            Ok(()) | Err(AuditUnavailable::QueueFull { capacity: 2 } | AuditUnavailable::WriteFailing)
        )),
        "{outcomes:?}"
    );
    assert_eq!(sink.refused_count(), refused as u64);
}

/// Issue 24 defect 2: a file left with an unterminated last line (a crash mid-write) is not appended to and not cut
/// away: the torn bytes go to `<file>.torn-<timestamp>`, an `AUDIT_TORN_TAIL` event naming that file continues the
/// chain from the last whole line, and writing resumes after it.
#[test]
fn open_moves_a_torn_tail_aside_and_records_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("audit.log");
    let mut chain = AuditChain::new();
    let first = chain.seal_and_commit(&event(0));
    let partial = chain.seal(&event(1));
    let half = partial.line().get(..40).unwrap_or_default();
    std::fs::write(&path, format!("{first}\n\n{half}")).unwrap_or_else(|e| panic!("{e}"));

    let sink = AuditSink::open(&AuditTarget::File(path.clone())).unwrap_or_else(|e| panic!("{e}"));
    let moved: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit.log.torn-")))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(std::fs::read(&moved[0]).unwrap_or_default(), half.as_bytes(), "the torn bytes, unchanged");

    assert_eq!(sink.record(event(2)), Ok(()));
    wait_until(Duration::from_secs(10), "three lines", || {
        std::fs::read_to_string(&path).is_ok_and(|t| complete_lines(&t).len() == 3 && t.ends_with('\n'))
    });
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let report = ward_policy::audit::verify_log(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!((report.lines, report.torn_tail), (3, None), "{text}");
    let recorded = report.moved_tails.first().cloned().unwrap_or_else(|| panic!("no torn-tail event: {text}"));
    let name = moved[0].file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert_eq!((recorded.operation.as_str(), recorded.callee.as_str()), (name, "callee"));
    assert!(recorded.reason.contains("40 bytes") && recorded.reason.contains("after line 2"), "{recorded:?}");
    let digest = ward_policy::audit::digest_hex(half.as_bytes());
    assert!(recorded.reason.contains(&digest), "the event binds the moved bytes: {recorded:?}");
    let operations: Vec<String> = complete_lines(&text)
        .iter()
        .filter_map(|l| ward_policy::audit::parse_line(l).ok())
        .map(|e| e.operation)
        .collect();
    assert_eq!(operations, ["orders/0", name, "orders/2"]);

    // A second crash leaves another torn tail: a second file, never overwriting the first.
    drop(sink);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    bytes.extend_from_slice(b"{\"time\":");
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let _sink = AuditSink::open(&AuditTarget::File(path.clone())).unwrap_or_else(|e| panic!("{e}"));
    let torn_files = std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0) - 1;
    assert_eq!(torn_files, 2);
    assert_eq!(std::fs::read(&moved[0]).unwrap_or_default(), half.as_bytes(), "the first is untouched");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let report = ward_policy::audit::verify_log(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!((report.lines, report.moved_tails.len()), (4, 2));
}

/// A last complete line that is not a sealed line is refused with its real line number, and the file is left as
/// it was (no torn file, no cut).
#[test]
fn open_refuses_a_broken_last_line_naming_its_number() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("audit.log");
    let mut chain = AuditChain::new();
    let lines: Vec<String> = (0..3).map(|n| chain.seal_and_commit(&event(n))).collect();
    let contents = format!("{}\n{}\n\n{}\nnot a sealed line\n{{\"torn", lines[0], lines[1], lines[2]);
    std::fs::write(&path, &contents).unwrap_or_else(|e| panic!("{e}"));
    let err = AuditSink::open(&AuditTarget::File(path.clone())).err();
    let Some(AuditError::BrokenTail { source, .. }) = &err else { panic!("{err:?}") };
    assert_eq!(source.line, 5, "{err:?}");
    assert!(err.as_ref().is_some_and(|e| e.to_string().contains("line 5")), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), contents, "untouched");
    assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0), 1, "nothing moved aside");
}

/// A file whose "line" is longer than any sealed line (a wrong `--audit-log` path) is refused, not moved aside.
#[test]
fn open_refuses_an_overlong_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("not-an-audit.log");
    let mut chain = AuditChain::new();
    let first = chain.seal_and_commit(&event(0));
    let contents = format!("{first}\n{}", "x".repeat(1 << 21));
    std::fs::write(&path, &contents).unwrap_or_else(|e| panic!("{e}"));
    let err = AuditSink::open(&AuditTarget::File(path.clone())).err();
    assert!(matches!(err, Some(AuditError::LineTooLong { line: 2, .. })), "{err:?}");
    assert_eq!(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0), contents.len() as u64, "untouched");
    assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0), 1, "nothing moved aside");
}

/// Lines reach the writer whole: each `append` is one or more complete lines (JSON and newline together; a group
/// commit writes every queued line at once), so a crash can only leave a torn tail, never a line without its
/// newline followed by the next line's bytes.
#[test]
fn appends_are_whole_lines() {
    #[derive(Clone, Default)]
    struct Recording(Arc<Mutex<Vec<Vec<u8>>>>);
    impl AuditWriter for Recording {
        fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.push(line.to_vec());
            Ok(())
        }
        fn discard_partial(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let writer = Recording::default();
    let sink = AuditSink::from_writer(writer.clone(), AuditChain::new(), 16).unwrap_or_else(|e| panic!("{e}"));
    for n in 0..5 {
        assert_eq!(sink.record(event(n)), Ok(()));
    }
    let lines = |w: &Vec<Vec<u8>>| w.iter().flatten().filter(|b| **b == b'\n').count();
    wait_until(Duration::from_secs(10), "five lines", || writer.0.lock().map(|w| lines(&w) == 5).unwrap_or(false));
    let appends = writer.0.lock().map(|w| w.clone()).unwrap_or_default();
    for append in &appends {
        assert_eq!(append.last(), Some(&b'\n'), "an append ends with a whole line");
        for line in append.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            assert!(serde_json::from_slice::<serde_json::Value>(line).is_ok(), "each line is whole JSON");
        }
    }
}

/// The environment variable that turns [`fsize_child`] from a no-op into the child half of [`disk_full_episode`].
const CHILD_ENV: &str = "WARD_AUDIT_FSIZE_CHILD_FILE";

/// Issue 12 row 9 with a real file: a child process (this test binary, re-run on one test) writes the audit log
/// under `RLIMIT_FSIZE` = 4 KiB with `SIGXFSZ` ignored, so writes past the limit fail with `EFBIG` after writing
/// part of a line. The parent lifts the limit with `prlimit --pid` once the child reports the failure; the child
/// then writes more; the file must verify as one chain holding every accepted event.
#[test]
fn disk_full_episode_keeps_the_file_verifiable() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("audit.log");
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    // `trap '' XFSZ` sets SIG_IGN, which survives both execs, so the write fails with EFBIG instead of killing.
    let child = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec prlimit --fsize=4096:unlimited -- \"$0\" \"$@\"")
        .arg(&exe)
        .args(["--exact", "audit::tests::fsize_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let expect = |marker: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                // libtest prints "test … ... " without a newline before the test's own output.
                Ok(line) if line.contains(marker) => return line,
                Ok(_) => {}
                Err(_) => panic!("child never printed {marker:?}"),
            }
        }
    };
    expect("CHILD FAILING");
    assert!(std::fs::metadata(&path).is_ok_and(|m| m.len() <= 4096));
    let status = Command::new("prlimit")
        .args([format!("--pid={}", child.0.id()), "--fsize=unlimited:unlimited".to_owned()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "prlimit --pid failed");
    let done = expect("CHILD DONE");
    let accepted: usize = done.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let exit = wait_with_timeout(&mut child.0, Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "child failed: {exit:?}");

    let text = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(text.ends_with('\n'), "the file ends with a complete line");
    let lines = complete_lines(&text);
    assert_eq!(ward_policy::verify_chain(lines.iter().copied()).ok(), Some(accepted), "{} lines", lines.len());
    assert!(accepted > 10 && text.len() > 4096, "the episode happened: {accepted} events, {} bytes", text.len());
    // `ward audit verify` runs exactly `verify_chain` over the file's lines (crates/cli/src/cmd/audit.rs).
}

/// The child half of [`disk_full_episode_keeps_the_file_verifiable`]; does nothing unless [`CHILD_ENV`] is set.
#[test]
#[ignore = "run by disk_full_episode_keeps_the_file_verifiable in a child process"]
fn fsize_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let sink = AuditSink::open(&AuditTarget::File(PathBuf::from(path))).unwrap_or_else(|e| panic!("{e}"));
    let mut accepted = 0usize;
    let mut n = 0usize;
    // Phase 1: write until the size limit makes the writer fail (about ten lines fit in 4 KiB).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sink.is_failing() {
        assert!(Instant::now() < deadline, "the file-size limit never made a write fail");
        if sink.record(event(n)).is_ok() {
            accepted += 1;
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(sink.record(event(n)), Err(AuditUnavailable::WriteFailing), "fails closed while failing");
    n += 1;
    println!("CHILD FAILING");
    // Phase 2: the parent lifts the limit; the retried line goes through and events are accepted again.
    wait_until(Duration::from_secs(30), "recovery after the limit is lifted", || !sink.is_failing());
    for _ in 0..10 {
        assert_eq!(sink.record(event(n)), Ok(()));
        accepted += 1;
        n += 1;
    }
    drop(sink);
    // The writer drains the queue after the last handle is gone; wait for every accepted line on disk.
    let path = std::env::var_os(CHILD_ENV).map(PathBuf::from).unwrap_or_default();
    wait_until(Duration::from_secs(30), "every accepted line written", || {
        std::fs::read_to_string(&path).is_ok_and(|t| complete_lines(&t).len() == accepted)
    });
    println!("CHILD DONE {accepted}");
}

/// Kills and reaps the child however the test ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // The child may have exited already; a failed kill is then expected.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `spec.ward.audit.fsync: always`: a waiting request goes on only after its batch was synced; `never` never syncs.
#[test]
fn always_syncs_each_batch_before_its_waiters_go_on_and_never_does_not() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let writer = MemoryWriter::default();
    let sink = AuditSink::from_writer_with(writer.clone(), AuditChain::new(), 64, AuditFsync::Always).unwrap();
    for n in 0..5 {
        let written = sink.record_written(event(n)).unwrap();
        let outcome = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), written).await }).unwrap();
        assert_eq!(outcome, Ok(()));
        let (syncs, synced) = writer.synced();
        assert!(syncs > n, "line {n} was released before a sync");
        assert_eq!(synced, writer.contents().len(), "the sync covered everything written, line {n} included");
    }

    let writer = MemoryWriter::default();
    let sink = AuditSink::from_writer(writer.clone(), AuditChain::new(), 64).unwrap();
    let written = sink.record_written(event(0)).unwrap();
    assert_eq!(rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), written).await }).unwrap(), Ok(()));
    drop(sink);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(writer.synced().0, 0, "never: the OS write only");
}

/// A failed sync fails closed like a failed write: the waiting request is refused, new events are refused until a
/// sync works again, and the line (already in the file) is not written a second time.
#[test]
fn a_failed_sync_refuses_the_waiting_request_and_new_events_until_it_works() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let writer = MemoryWriter::default();
    let sink = AuditSink::from_writer_with(writer.clone(), AuditChain::new(), 64, AuditFsync::Always).unwrap();
    writer.set_sync_failing(true);
    let written = sink.record_written(event(0)).unwrap();
    let outcome = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), written).await }).unwrap();
    assert_eq!(outcome, Err(AuditUnavailable::WriteFailing));
    assert!(sink.is_failing());
    assert_eq!(sink.record(event(1)).err(), Some(AuditUnavailable::WriteFailing));

    writer.set_sync_failing(false);
    wait_until(Duration::from_secs(10), "recovery", || !sink.is_failing());
    let written = sink.record_written(event(2)).unwrap();
    let outcome = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), written).await }).unwrap();
    assert_eq!(outcome, Ok(()));
    let text = writer.contents();
    let lines = complete_lines(&text);
    assert_eq!(ward_policy::verify_chain(lines.iter().copied()).ok(), Some(2), "{text}");
    let operations: Vec<String> =
        lines.iter().filter_map(|l| ward_policy::audit::parse_line(l).ok()).map(|e| e.operation).collect();
    assert_eq!(operations, ["orders/0", "orders/2"], "the refused request's line kept once; the refused event absent");
}

/// `interval`: waiters do not wait for a sync, and lines written before the writer falls idle are synced within
/// about a second anyway (not at the next event).
#[test]
fn interval_syncs_idle_lines_within_about_a_second_off_the_request_path() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let writer = MemoryWriter::default();
    let sink = AuditSink::from_writer_with(writer.clone(), AuditChain::new(), 64, AuditFsync::Interval).unwrap();
    let started = Instant::now();
    for n in 0..3 {
        let written = sink.record_written(event(n)).unwrap();
        assert_eq!(
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), written).await }).unwrap(),
            Ok(())
        );
    }
    assert!(started.elapsed() < SYNC_INTERVAL || writer.synced().0 <= 1, "at most once per interval");
    wait_until(Duration::from_secs(10), "the idle lines synced", || writer.synced().1 == writer.contents().len());
    let elapsed = started.elapsed();
    assert!(elapsed >= SYNC_INTERVAL - Duration::from_millis(50), "synced after {elapsed:?}: more than once a second");
    assert_eq!(writer.synced().0, 1, "one sync for the three lines");
}

/// A real file with `always`: `fdatasync` on the audit file works and the log verifies.
#[test]
fn a_file_sink_with_always_writes_a_verifiable_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let sink = AuditSink::open_with(&AuditTarget::File(path.clone()), 16, AuditFsync::Always).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for n in 0..3 {
        let written = sink.record_written(event(n)).unwrap();
        assert_eq!(
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), written).await }).unwrap(),
            Ok(())
        );
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(ward_policy::verify_chain(complete_lines(&text).iter().copied()).ok(), Some(3), "{text}");
}

/// A destination that never blocks is written on the request path: the line is in it when `record` returns, and
/// `record_written` is ready at once.
#[tokio::test]
async fn a_never_blocking_destination_is_written_before_record_returns() {
    let writer = MemoryWriter::never_blocking();
    let sink = AuditSink::from_writer(writer.clone(), AuditChain::new(), 16).unwrap();
    for n in 0..3 {
        assert_eq!(sink.record(event(n)), Ok(()));
        assert_eq!(complete_lines(&writer.contents()).len(), n + 1, "written before record returned");
    }
    let written = sink.record_written(event(3)).unwrap();
    assert_eq!(complete_lines(&writer.contents()).len(), 4);
    assert_eq!(tokio::time::timeout(Duration::from_secs(1), written).await, Ok(Ok(())));
    let text = writer.contents();
    assert_eq!(ward_policy::verify_chain(complete_lines(&text).into_iter()).ok(), Some(4), "{text}");
}

/// Written on the request path, a failed write fails closed exactly as on the thread: the waiting request is
/// refused, later events are refused until a write works, no fragment stays, and the failed event is retried (by
/// the thread) so the chain keeps every decision made.
#[tokio::test]
async fn a_failed_write_on_the_request_path_fails_closed_and_is_retried() {
    let writer = MemoryWriter::never_blocking();
    let sink = AuditSink::from_writer(writer.clone(), AuditChain::new(), 16).unwrap();
    assert_eq!(sink.record(event(0)), Ok(()));

    writer.set_failing(true);
    let refused = tokio::time::timeout(Duration::from_secs(1), sink.record_written(event(1)).unwrap()).await;
    assert_eq!(refused, Ok(Err(AuditUnavailable::WriteFailing)), "the waiting request is refused");
    assert!(sink.is_failing());
    assert_eq!(sink.record(event(2)), Err(AuditUnavailable::WriteFailing), "refused while failing");

    writer.set_failing(false);
    wait_until(Duration::from_secs(10), "the retry and recovery", || !sink.is_failing());
    wait_until(Duration::from_secs(10), "two lines", || complete_lines(&writer.contents()).len() == 2);
    assert_eq!(sink.record(event(3)), Ok(()));
    let text = writer.contents();
    assert!(text.ends_with('\n'), "no fragment left: {text}");
    let lines = complete_lines(&text);
    assert_eq!(ward_policy::verify_chain(lines.iter().copied()).ok(), Some(3), "{text}");
    let operations: Vec<String> =
        lines.iter().filter_map(|l| ward_policy::audit::parse_line(l).ok()).map(|e| e.operation).collect();
    assert_eq!(operations, ["orders/0", "orders/1", "orders/3"]);
}

/// Only a regular file is written on the request path; a FIFO (which blocks until read) goes through the thread.
#[test]
fn only_regular_files_are_written_inline() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = open_file(&dir.path().join("audit.log")).unwrap();
    assert!(file.never_blocks());
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Opened read-write so that the open itself does not wait for a reader.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    assert!(!is_regular_file(&file));
}
