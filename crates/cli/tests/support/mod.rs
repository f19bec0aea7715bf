//! Test harness: runs the real `ward` binary on 127.0.0.1, reads the "ready" line it prints to learn the ports it
//! bound, keeps its stderr for assertions, and kills it on drop. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const WARD: &str = env!("CARGO_BIN_EXE_ward");

/// A running `ward` process.
pub struct Ward {
    pub child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub name: String,
    /// `ward run` owns child processes (apps, sidecars, a CA): it is stopped with SIGTERM first so it stops them,
    /// even when a test fails before stopping it (SIGKILL would orphan them).
    owns_children: bool,
}

impl Ward {
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Ward {
        let mut command = Command::new(WARD);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.env_remove("DAPR_API_TOKEN").env_remove("APP_API_TOKEN").env_remove("DAPR_TRUST_ANCHORS");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn ward");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        pump(out, stdout.clone(), None);
        pump(err, stderr.clone(), std::env::var_os("WARD_TEST_VERBOSE").map(|_| name.to_owned()));
        Ward { child, stdout, stderr, name: name.to_owned(), owns_children: args.first() == Some(&"run") }
    }

    /// Waits for a stdout line starting with `prefix` and returns it.
    pub fn wait_stdout(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stdout.lock().unwrap().iter().find(|l| l.starts_with(prefix)) {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the pumps a moment to collect the last lines, then show both streams.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} exited with {status} before printing {prefix:?}; stdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout_text(),
                    self.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {prefix:?} in time; stdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout_text(),
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr_text().contains(needle) {
            assert!(Instant::now() < deadline, "{} did not log {needle:?}; stderr:\n{}", self.name, self.stderr_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Give the pump threads a moment to drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit in time", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    /// Sends SIGKILL.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Ward {
    fn drop(&mut self) {
        if self.owns_children && matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(reader: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>, echo: Option<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if let Some(name) = &echo {
                eprintln!("[{name}] {line}");
            }
            sink.lock().unwrap().push(line);
        }
    });
}

/// Runs `ward` to completion (killed after 60 s: every test is bounded) and returns (exit code, stdout, stderr).
pub fn ward_output(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(WARD);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("run ward");
    let (out, err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
    let read_all = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let (out, err) = (read_all(Box::new(out)), read_all(Box::new(err)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ward {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code().unwrap_or(-1), out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// Parses `key=value` fields out of a ready line.
pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .to_owned()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A running sentry with its credentials directory.
pub struct Sentry {
    pub process: Ward,
    pub dir: PathBuf,
    pub grpc: String,
    pub healthz: String,
    pub metrics: String,
}

impl Sentry {
    pub fn start(dir: &Path, extra: &[&str]) -> Sentry {
        let mut args = vec![
            "sentry",
            "--issuer-credentials",
            path_str(dir),
            "--port",
            "0",
            "--healthz-port",
            "0",
            "--metrics-port",
            "0",
        ];
        args.extend_from_slice(extra);
        let mut process = Ward::spawn("sentry", &args, &[]);
        let line = process.wait_stdout("ward sentry ready:", Duration::from_secs(20));
        Sentry {
            grpc: field(&line, "grpc"),
            healthz: field(&line, "healthz"),
            metrics: field(&line, "metrics"),
            process,
            dir: dir.to_owned(),
        }
    }

    pub fn roots_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.crt")).expect("ca.crt")
    }
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
pub mod k8s;
pub mod mesh;
pub mod pubsub_app;

/// A port that is free now and that no listener binding port 0 will be given meanwhile: chosen below the kernel's
/// ephemeral range (32768 and up on Linux), so a sidecar or sentry binding `:0` cannot take it before the process
/// the test hands it to (an app, a redis-server) binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()),
    );
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}
