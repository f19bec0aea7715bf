//! Helpers shared by the benchmark examples (included with `#[path]`; not an example itself): locating the
//! release `ward` binary next to the example, starting `ward` processes and waiting for their ready line, killing
//! spawned processes on drop, and latency statistics.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `target/<profile>/ward`, next to `target/<profile>/examples/<bench>`.
pub fn ward_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let ward = exe.parent().and_then(|p| p.parent()).map(|p| p.join("ward")).expect("ward path");
    assert!(ward.exists(), "build the binary first: cargo build --release -p ward ({} missing)", ward.display());
    ward
}

/// A child process killed (and reaped) on drop, so a benchmark never leaves processes behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `ward` process that printed its ready line, killed (and reaped) on drop.
pub struct WardProc {
    pub child: Child,
    /// The ready line (`ward sidecar ready: … http=… elapsed-ms=…`).
    pub ready: String,
    /// From spawning the process to reading its ready line.
    pub spawn_to_ready: Duration,
}

impl Drop for WardProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WardProc {
    pub fn spawn<A: AsRef<OsStr> + std::fmt::Debug>(
        ward: &Path,
        args: &[A],
        env: &[(&str, &str)],
        ready_prefix: &str,
    ) -> WardProc {
        Self::try_spawn(ward, args, env, ready_prefix).unwrap_or_else(|err| panic!("{args:?}: {err}"))
    }

    /// `Err` with the process's last stderr line when it exits before its ready line (e.g. a configuration an
    /// older binary refuses).
    pub fn try_spawn<A: AsRef<OsStr>>(
        ward: &Path,
        args: &[A],
        env: &[(&str, &str)],
        ready_prefix: &str,
    ) -> Result<WardProc, String> {
        let started = Instant::now();
        let mut child = Command::new(ward)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ward");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let last_error = Arc::new(Mutex::new(String::new()));
        let sink = last_error.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                *sink.lock().expect("stderr") = line;
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let ready = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with(ready_prefix) => break line,
                Some(_) => continue,
                None => {
                    let _ = child.wait();
                    let message = last_error.lock().expect("stderr").clone();
                    return Err(message.chars().take(160).collect());
                }
            }
        };
        let spawn_to_ready = started.elapsed();
        std::thread::spawn(move || for _ in lines {});
        Ok(WardProc { child, ready, spawn_to_ready })
    }

    /// `key=value` of the ready line.
    pub fn field(&self, key: &str) -> String {
        self.ready.split_whitespace().find_map(|p| p.strip_prefix(&format!("{key}="))).expect("field").to_owned()
    }
}

/// User + system CPU time of process `pid` so far, in clock ticks (1/100 s on Linux); 0 when unreadable.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let at = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    at(11) + at(12)
}

pub struct Stats {
    pub ops_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

pub fn stats(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
    latencies.sort();
    let at =
        |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied();
    Stats {
        ops_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50).unwrap_or_default(),
        p99: at(0.99).unwrap_or_default(),
    }
}

/// A `ward sentry` for a benchmark, with its material under `dir/ca`: the process and the trust anchors (PEM).
pub fn bench_sentry(ward: &Path, dir: &Path) -> (WardProc, String) {
    let ca = dir.join("ca");
    let ca_s = ca.to_string_lossy().into_owned();
    let args = [
        "sentry",
        "--issuer-credentials",
        &ca_s,
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--metrics-port",
        "0",
        "--log-level",
        "warn",
    ];
    let sentry = WardProc::spawn(ward, &args, &[], "ward sentry ready:");
    let anchors = std::fs::read_to_string(ca.join("ca.crt")).expect("trust anchors");
    (sentry, anchors)
}

/// The command line of a benchmark's `ward sidecar` with mTLS against `sentry`, ports picked by the OS, logging at
/// warn, and `extra` arguments (app port, configuration, resources, audit log).
pub fn bench_sidecar_args(app_id: &str, sentry: &WardProc, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "sidecar",
        "--app-id",
        app_id,
        "--dapr-http-port",
        "0",
        "--dapr-internal-grpc-port",
        "0",
        "--dapr-grpc-port",
        "0",
        "--enable-mtls",
        "--metrics-port",
        "0",
        "--log-level",
        "warn",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--sentry-address".to_owned(), sentry.field("grpc")]);
    args.extend(extra.iter().cloned());
    args
}
