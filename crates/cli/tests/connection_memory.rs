//! Memory per idle keep-alive client connection to the sidecar's HTTP API (issue 25, defect 4): at most 16 KiB of
//! the sidecar's resident memory, measured on a real sidecar with hundreds of connections each after one request.
//!
//! Measured as anonymous memory (`RssAnon`): what a connection holds is heap (buffers, its task, ward's state). The
//! code that serves connections is file-backed and mapped once per process; since the sidecar drops its code pages
//! after start (issue 18), the first connections map some of it back in, which is not a per-connection cost.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::mesh::{Mesh, SidecarSpec};

const CONNECTIONS: usize = 512;
/// The target for one idle keep-alive API connection.
const TARGET_KIB: f64 = 16.0;

fn resident_anonymous_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("RssAnon value")
}

/// One `GET /v1.0/healthz` on a kept-alive connection; the answer is `204` without a body.
fn health_check(stream: &mut TcpStream) {
    stream.write_all(b"GET /v1.0/healthz HTTP/1.1\r\nhost: ward\r\n\r\n").expect("write");
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 204"), "{}", String::from_utf8_lossy(&received));
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
}

#[test]
fn an_idle_keep_alive_api_connection_costs_at_most_16_kib() {
    let mesh = Mesh::start(&[]);
    let sidecar = mesh.sidecar(SidecarSpec::new("connection-memory", None));
    let pid = sidecar.process.child.id();
    // Warm up: what the first connections allocate once per process (the API router's state, the runtime's
    // buffers) is not per connection.
    for _ in 0..32 {
        health_check(&mut connect(&sidecar.http));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = resident_anonymous_kib(pid);

    let mut open: Vec<TcpStream> = (0..CONNECTIONS).map(|_| connect(&sidecar.http)).collect();
    for stream in &mut open {
        health_check(stream);
    }
    // Every connection is now back to waiting for its next request.
    std::thread::sleep(Duration::from_millis(500));
    let after = resident_anonymous_kib(pid);
    let per_connection = after.saturating_sub(before) as f64 / CONNECTIONS as f64;
    assert!(
        per_connection <= TARGET_KIB,
        "{CONNECTIONS} idle keep-alive connections: anonymous resident {before} → {after} KiB, {per_connection:.1} KiB each \
         (target {TARGET_KIB} KiB)"
    );
    // Still served: idle, not dropped.
    for stream in open.iter_mut().take(8) {
        health_check(stream);
    }
}
