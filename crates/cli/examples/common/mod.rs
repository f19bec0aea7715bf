//! Helpers shared by the benchmark examples (included with `#[path]`; not an example itself): locating the
//! release `ward` binary next to the example, killing spawned processes on drop, and latency statistics.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

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
