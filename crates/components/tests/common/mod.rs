//! Test helpers shared by the integration suites: a real `redis-server` on a free 127.0.0.1 port (killed on drop),
//! a time bound for every test, and re-running this test binary as a child process (to kill it mid-flight or to
//! give it a chosen environment).

#![allow(dead_code, reason = "each test crate uses a different subset of the helpers")]

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fails the test if `fut` takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// Polls `check` every 50ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("{what}: not reached within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; callers retry if someone takes it first).
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

/// A `redis-server` child process on 127.0.0.1, without persistence, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

fn redis_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WARD_TEST_REDIS_SERVER") {
        return PathBuf::from(p);
    }
    let default = PathBuf::from("/usr/bin/redis-server");
    if default.exists() {
        return default;
    }
    PathBuf::from("redis-server")
}

fn spawn_redis(port: u16) -> Child {
    let bin = redis_binary();
    match Command::new(&bin)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot start {} ({e}): the Redis state-store tests need a real redis-server \
             (apt-get install redis-server, or set WARD_TEST_REDIS_SERVER); they do not skip",
            bin.display()
        ),
    }
}

async fn answers_ping(port: u16) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(("127.0.0.1", port))).await
    else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"+PONG\r\n"
    )
}

impl RedisServer {
    /// Starts a server on a free port and waits (bounded) until it answers PING.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer { child: Some(spawn_redis(port)), port };
            if server.wait_ready().await {
                return server;
            }
            server.stop();
        }
        panic!("redis-server did not become ready on any of 5 ports");
    }

    async fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false; // exited: port taken, most likely
            }
            if answers_ping(self.port).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `host:port` for `redisHost`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        for _ in 0..20 {
            self.child = Some(spawn_redis(self.port));
            if self.wait_ready().await {
                return;
            }
            self.stop();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("redis-server could not be restarted on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child process running one test of the current test binary, killed on drop.
pub struct ChildTest {
    pub child: Child,
}

impl ChildTest {
    /// Runs test `name` of this binary in a child with extra `env`, stdout piped.
    pub fn spawn(name: &str, env: &[(&str, &str)]) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = Command::new(exe);
        cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        ChildTest { child: cmd.spawn().expect("spawn child test") }
    }
}

impl Drop for ChildTest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `nats-server -js` child process on 127.0.0.1 with its JetStream store in a temp dir, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn nats_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WARD_TEST_NATS_SERVER") {
        return PathBuf::from(p);
    }
    for default in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(default).exists() {
            return PathBuf::from(default);
        }
    }
    PathBuf::from("nats-server")
}

fn spawn_nats(port: u16, store: &std::path::Path) -> Child {
    let bin = nats_binary();
    match Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot start {} ({e}): the JetStream tests need a real nats-server \
             (apt-get install nats-server, or set WARD_TEST_NATS_SERVER); they do not skip",
            bin.display()
        ),
    }
}

impl NatsServer {
    /// Starts a server on a free port and waits (bounded) until JetStream answers.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temp dir for the JetStream store");
            let mut server = NatsServer { child: Some(spawn_nats(port, dir.path())), port, dir };
            if server.wait_ready().await {
                return server;
            }
            server.stop();
        }
        panic!("nats-server did not become ready on any of 5 ports");
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    async fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false; // exited: port taken, most likely
            }
            let attempt = async {
                let client = async_nats::connect(self.url()).await.ok()?;
                // JetStream answers a lookup (found or not) once it runs. (Account info does not parse from
                // Debian's 2.9 server with this client; stream calls do.)
                match async_nats::jetstream::new(client).stream_by_subject("ward.ready.probe").await {
                    Ok(_) => Some(()),
                    Err(e) if e.kind() == async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound => {
                        Some(())
                    }
                    Err(_) => None,
                }
            };
            if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `nats://127.0.0.1:<port>` for `natsURL`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
