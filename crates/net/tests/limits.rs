//! Listener limits against real sockets on 127.0.0.1: slow and idle clients, the connection cap, TLS, both HTTP
//! versions, draining, and the three kinds of service ward plugs in (hyper `service_fn`, axum `Router`, tonic
//! `Routes`). Timeouts are a few hundred milliseconds; every test is bounded by `bounded`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use ward_net::{
    BodyReadTimeout, ConnectionInfo, Drain, LimitsError, ListenerLimits, ListenerStats, ReadTimeoutBody, Server,
    TowerToHyperService,
};

/// Every test finishes within this, whatever the server does.
const TEST_BOUND: Duration = Duration::from_secs(20);
/// The short timeout the tests use (header read, handshake, idle unless a test needs them apart).
const SHORT: Duration = Duration::from_millis(300);
/// A timeout long enough that it never fires during a test.
const LONG: Duration = Duration::from_secs(60);
/// How late a close may come on a loaded 2-core machine and still count as "at the timeout".
const SLACK: Duration = Duration::from_secs(4);
/// Timers never fire early, but the client's clock starts a little after the server's.
const EARLY: Duration = Duration::from_millis(60);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_BOUND, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: did not finish within {TEST_BOUND:?}"),
    }
}

fn limits(handshake: Duration, header: Duration, idle: Duration, max_connections: usize) -> ListenerLimits {
    ListenerLimits {
        handshake_timeout: handshake,
        header_read_timeout: header,
        idle_timeout: idle,
        max_connections,
        ..ListenerLimits::default()
    }
}

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into()).boxed_unsync()
}

/// The hand-written service every test but the framework one uses:
/// `/` → `hello`; `/info` → what the connection told the factory; `/count` → the request body's length after
/// reading all of it; `/strict-count` → the same with a body read timeout of `SHORT`; `/slow` → ten one-byte chunks 100 ms apart; `/hang` → never answers.
fn test_service(info: &ConnectionInfo) -> TestService {
    let description = format!(
        "alpn={} certs={}",
        info.alpn_protocol.as_deref().map(String::from_utf8_lossy).unwrap_or_default(),
        info.peer_certificates.as_ref().map_or(0, Vec::len)
    );
    TestService { description: Arc::from(description) }
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

struct TestService {
    description: Arc<str>,
}

impl hyper::service::Service<Request<Incoming>> for TestService {
    type Response = Response<TestBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<TestBody>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let description = self.description.clone();
        Box::pin(async move {
            let body = match request.uri().path() {
                "/" => full("hello"),
                "/info" => full(description.to_string()),
                "/count" => match request.into_body().collect().await {
                    Ok(collected) => full(collected.to_bytes().len().to_string()),
                    Err(err) => full(format!("body error: {err}")),
                },
                "/strict-count" => match ReadTimeoutBody::new(request.into_body(), SHORT).collect().await {
                    Ok(collected) => full(collected.to_bytes().len().to_string()),
                    Err(err) if err.downcast_ref::<BodyReadTimeout>().is_some() => {
                        let mut response = Response::new(full("body read timeout"));
                        *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
                        return Ok(response);
                    }
                    Err(err) => full(format!("body error: {err}")),
                },
                "/slow" => StreamBody::new(futures_util::stream::unfold(0u8, |sent| async move {
                    if sent == 10 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x"))), sent + 1))
                }))
                .boxed_unsync(),
                "/hang" => std::future::pending().await,
                _ => {
                    let mut response = Response::new(full("not found"));
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    return Ok(response);
                }
            };
            Ok(Response::new(body))
        })
    }
}

/// A listener serving in the background; dropping it aborts the serve task (which closes its connections).
struct Running {
    addr: SocketAddr,
    stats: ListenerStats,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Drain>>,
}

impl Running {
    async fn start(limits: ListenerLimits, tls: Option<TlsAcceptor>) -> Self {
        Self::start_with(limits, tls, test_service).await
    }

    async fn start_with<M, S, B>(limits: ListenerLimits, tls: Option<TlsAcceptor>, make_service: M) -> Self
    where
        M: Fn(&ConnectionInfo) -> S + Send + Sync + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send + From<bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Self::start_configured(limits, tls, false, make_service).await
    }

    async fn start_configured<M, S, B>(
        limits: ListenerLimits,
        tls: Option<TlsAcceptor>,
        http2_only: bool,
        make_service: M,
    ) -> Self
    where
        M: Fn(&ConnectionInfo) -> S + Send + Sync + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send + From<bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = Server::new(listener, limits).unwrap().with_name("test");
        if let Some(tls) = tls {
            server = server.with_tls(tls);
        }
        if http2_only {
            server = server.with_http2_only();
        }
        let stats = server.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(make_service, async move {
            let _ = stopped.await;
        }));
        Self { addr, stats, stop: Some(stop), task: Some(task) }
    }

    /// Stops accepting and hands back the drain handle.
    async fn stop(&mut self) -> Drain {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("stopped twice");
        bounded("serve returns after shutdown", task).await.unwrap()
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Reads until the server closes the connection (EOF or reset); returns what it sent and when it closed.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), started: Instant) -> (Vec<u8>, Duration) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (received, started.elapsed()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response with a `content-length` body; returns the head and the body.
async fn read_http1_response(stream: &mut (impl AsyncRead + Unpin)) -> (String, String) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .map(|v| v.parse().unwrap())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]).to_string();
                return (head, body);
            }
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed mid-response: {:?}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
}

async fn http1_get(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), path: &str) -> (String, String) {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes()).await.unwrap();
    read_http1_response(stream).await
}

async fn h2_client<T>(io: T) -> (hyper::client::conn::http2::SendRequest<Empty<Bytes>>, JoinHandle<hyper::Result<()>>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    (sender, tokio::spawn(conn))
}

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (StatusCode, String) {
    let request = Request::get(format!("http://test{path}")).body(Empty::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// The types of the HTTP/2 frames in `bytes` (a server's side of a connection, which starts with a frame).
fn h2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

/// Polls `condition` every 10 ms, for at most `TEST_BOUND`.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    bounded(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------------
// Certificates (generated per test, never committed)

struct Pki {
    ca: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().der().clone();
        Self { ca, issuer: Issuer::new(params, key) }
    }

    fn leaf(&self, dns: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![dns.to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        (cert, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }

    /// A server that requires a client certificate from this CA and offers h2 and http/1.1.
    fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()), provider.clone())
                .build()
                .unwrap();
        let (cert, key) = self.leaf("localhost");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }

    fn connector(&self, alpn: &[u8]) -> TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert, key) = self.leaf("client");
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_client_auth_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Slow clients

#[tokio::test]
async fn half_sent_http1_request_is_closed_at_the_header_timeout() {
    bounded("test", async {
        let server = Running::start(limits(LONG, SHORT, LONG, 16), None).await;
        let mut stream = server.connect().await;
        let started = Instant::now();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nx-slow: ").await.unwrap();
        let (received, elapsed) = read_until_closed(&mut stream, started).await;
        assert!(received.is_empty() || received.starts_with(b"HTTP/1.1 408"), "{received:?}");
        assert!(elapsed + EARLY >= SHORT && elapsed < SHORT + SLACK, "closed after {elapsed:?}");
        eventually("counted", || server.stats.header_read_timeouts() == 1).await;
    })
    .await;
}

#[tokio::test]
async fn client_that_sends_nothing_is_closed_at_the_header_timeout() {
    bounded("test", async {
        let server = Running::start(limits(LONG, SHORT, LONG, 16), None).await;
        let mut stream = server.connect().await;
        let (received, elapsed) = read_until_closed(&mut stream, Instant::now()).await;
        assert!(received.is_empty());
        assert!(elapsed + EARLY >= SHORT && elapsed < SHORT + SLACK, "closed after {elapsed:?}");
    })
    .await;
}

#[tokio::test]
async fn h2c_client_without_a_complete_preface_or_first_headers_is_closed() {
    bounded("test", async {
        let server = Running::start(limits(LONG, SHORT, LONG, 16), None).await;
        // Half a preface: the server cannot even tell which HTTP version this is.
        let mut half = server.connect().await;
        half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        // The whole preface and an empty SETTINGS frame, then no HEADERS.
        let mut no_headers = server.connect().await;
        no_headers.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
        let started = Instant::now();
        let ((_, half_elapsed), (_, no_headers_elapsed)) =
            tokio::join!(read_until_closed(&mut half, started), read_until_closed(&mut no_headers, started));
        for elapsed in [half_elapsed, no_headers_elapsed] {
            assert!(elapsed + EARLY >= SHORT && elapsed < SHORT + SLACK, "closed after {elapsed:?}");
        }
        eventually("counted", || server.stats.header_read_timeouts() == 2).await;
    })
    .await;
}

#[tokio::test]
async fn tls_client_that_never_finishes_the_handshake_is_closed() {
    bounded("test", async {
        let pki = Pki::new();
        let server = Running::start(limits(SHORT, LONG, LONG, 16), Some(pki.acceptor())).await;
        let mut stream = server.connect().await;
        let started = Instant::now();
        // The first bytes of a TLS record header (handshake, TLS 1.0 record version), then silence.
        stream.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01]).await.unwrap();
        let (received, elapsed) = read_until_closed(&mut stream, started).await;
        assert!(received.is_empty(), "{received:?}");
        assert!(elapsed + EARLY >= SHORT && elapsed < SHORT + SLACK, "closed after {elapsed:?}");
        eventually("counted", || server.stats.handshake_timeouts() == 1).await;
    })
    .await;
}

#[tokio::test]
async fn tls_header_timeout_counts_from_the_end_of_the_handshake() {
    bounded("test", async {
        let pki = Pki::new();
        let server = Running::start(limits(SHORT, SHORT, LONG, 16), Some(pki.acceptor())).await;
        let tcp = server.connect().await;
        let mut tls =
            pki.connector(b"http/1.1").connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        let started = Instant::now();
        let (received, elapsed) = read_until_closed(&mut tls, started).await;
        assert!(received.is_empty(), "{received:?}");
        assert!(elapsed + EARLY >= SHORT && elapsed < SHORT + SLACK, "closed after {elapsed:?}");
        assert_eq!(server.stats.handshake_timeouts(), 0);
        eventually("counted", || server.stats.header_read_timeouts() == 1).await;
    })
    .await;
}

#[tokio::test]
async fn later_http1_request_headers_are_bounded_by_the_header_timeout() {
    bounded("test", async {
        let server = Running::start(limits(LONG, SHORT, LONG, 16), None).await;
        let mut stream = server.connect().await;
        assert_eq!(http1_get(&mut stream, "/").await.1, "hello");
        // Idle for longer than the header timeout: allowed (the idle timeout is long).
        tokio::time::sleep(SHORT * 2).await;
        let started = Instant::now();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: te").await.unwrap();
        let (received, elapsed) = read_until_closed(&mut stream, started).await;
        assert!(received.is_empty() || received.starts_with(b"HTTP/1.1 408"), "{received:?}");
        assert!(elapsed + EARLY >= SHORT && elapsed < SHORT + SLACK, "closed after {elapsed:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------------
// Idle connections and long requests

#[tokio::test]
async fn idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    bounded("test", async {
        let idle = SHORT * 4;
        let server = Running::start(limits(LONG, SHORT, idle, 16), None).await;
        let mut stream = server.connect().await;
        let (head, body) = http1_get(&mut stream, "/").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "hello");
        let started = Instant::now();
        let (received, elapsed) = read_until_closed(&mut stream, started).await;
        assert!(received.is_empty(), "{received:?}");
        // At the idle timeout, not the (shorter) header timeout: nothing was sent after the response.
        assert!(elapsed + EARLY >= idle && elapsed < idle + SLACK, "closed after {elapsed:?}");
        assert_eq!(server.stats.idle_closes(), 1);
        assert_eq!(server.stats.header_read_timeouts(), 0);
    })
    .await;
}

#[tokio::test]
async fn idle_http2_connection_is_sent_goaway_after_the_idle_timeout() {
    bounded("test", async {
        let idle = SHORT * 3;
        let server = Running::start(limits(LONG, SHORT, idle, 16), None).await;
        let (mut sender, conn) = h2_client(server.connect().await).await;
        assert_eq!(h2_get(&mut sender, "/").await, (StatusCode::OK, "hello".to_owned()));
        let started = Instant::now();
        // The client's connection ends cleanly (GOAWAY, then close), not with an error.
        let result = conn.await.unwrap();
        let elapsed = started.elapsed();
        assert!(result.is_ok(), "{result:?}");
        assert!(elapsed + EARLY >= idle && elapsed < idle + SLACK, "closed after {elapsed:?}");
        assert_eq!(server.stats.idle_closes(), 1);
    })
    .await;
}

#[tokio::test]
async fn idle_http2_client_that_ignores_goaway_is_dropped() {
    bounded("test", async {
        let idle = SHORT * 2;
        let server = Running::start(limits(LONG, SHORT, idle, 16), None).await;
        let mut stream = server.connect().await;
        // A hand-written client: preface, empty SETTINGS, one GET / (HPACK static-table entries :method GET,
        // :scheme http, :path /) on stream 1, and from then on it reads but never answers anything: no SETTINGS
        // ack, and above all no ack for the PING that follows GOAWAY, so hyper's graceful close alone would
        // never finish.
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        stream.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).await.unwrap();
        stream.write_all(&[0, 0, 3, 0x1, 0x5, 0, 0, 0, 1, 0x82, 0x86, 0x84]).await.unwrap();
        let started = Instant::now();
        let (received, elapsed) = read_until_closed(&mut stream, started).await;
        // It got the response (HEADERS, type 0x1) and a GOAWAY (type 0x7) before the close.
        let types = h2_frame_types(&received);
        assert!(types.contains(&0x1) && types.contains(&0x7), "frames: {types:?}");
        assert!(elapsed + EARLY >= idle + SHORT && elapsed < idle + SHORT + SLACK, "closed after {elapsed:?}");
        assert_eq!(server.stats.idle_closes(), 1);
    })
    .await;
}

#[tokio::test]
async fn slow_streaming_http1_request_body_is_not_cut_by_the_idle_timer() {
    bounded("test", async {
        let server = Running::start(limits(LONG, SHORT, SHORT, 16), None).await;
        let mut stream = server.connect().await;
        stream.write_all(b"POST /count HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
        // 1.2 s of body, four idle timeouts (and header timeouts) long, one byte every 100 ms.
        for _ in 0..12 {
            stream.write_all(b"1\r\na\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        let (head, body) = read_http1_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "12");
        assert_eq!(server.stats.idle_closes(), 0);
        assert_eq!(server.stats.header_read_timeouts(), 0);
    })
    .await;
}

#[tokio::test]
async fn stalled_request_body_fails_where_the_service_bounds_body_reads() {
    bounded("test", async {
        // The listener never cuts a request in flight; the service opted into ReadTimeoutBody for this route.
        let server = Running::start(limits(LONG, LONG, LONG, 16), None).await;
        let mut stream = server.connect().await;
        let started = Instant::now();
        stream.write_all(b"POST /strict-count HTTP/1.1\r\nhost: test\r\ncontent-length: 10\r\n\r\nab").await.unwrap();
        let (head, body) = read_http1_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        assert_eq!(body, "body read timeout");
        let elapsed = started.elapsed();
        assert!(elapsed + EARLY >= SHORT && elapsed < SHORT + SLACK, "answered after {elapsed:?}");
        // A body that keeps flowing on the same route is read whole.
        let mut stream = server.connect().await;
        stream
            .write_all(b"POST /strict-count HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..8 {
            stream.write_all(b"1\r\na\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        assert_eq!(read_http1_response(&mut stream).await.1, "8");
    })
    .await;
}

#[tokio::test]
async fn slow_streaming_http2_response_body_is_not_cut_by_the_idle_timer() {
    bounded("test", async {
        let server = Running::start(limits(LONG, SHORT, SHORT, 16), None).await;
        let (mut sender, conn) = h2_client(server.connect().await).await;
        // Ten bytes over a second: three idle timeouts.
        assert_eq!(h2_get(&mut sender, "/slow").await, (StatusCode::OK, "x".repeat(10)));
        assert!(!conn.is_finished(), "the connection was closed while a response streamed");
        assert_eq!(server.stats.idle_closes(), 0);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------------
// Connection cap

#[tokio::test]
async fn connection_over_the_cap_is_refused_and_counted_then_accepted_after_one_closes() {
    bounded("test", async {
        let server = Running::start(limits(LONG, LONG, LONG, 2), None).await;
        let mut first = server.connect().await;
        let mut second = server.connect().await;
        assert_eq!(http1_get(&mut first, "/").await.1, "hello");
        assert_eq!(http1_get(&mut second, "/").await.1, "hello");
        assert_eq!(server.stats.open_connections(), 2);

        let mut third = server.connect().await;
        let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await;
        let (received, _) = read_until_closed(&mut third, Instant::now()).await;
        assert!(received.is_empty(), "the connection over the cap was served: {received:?}");
        eventually("refusal counted", || server.stats.refused_over_limit() == 1).await;
        assert_eq!(server.stats.accepted(), 2);

        drop(first);
        eventually("first connection closed", || server.stats.open_connections() == 1).await;
        let mut fourth = server.connect().await;
        assert_eq!(http1_get(&mut fourth, "/").await.1, "hello");
        assert_eq!(http1_get(&mut second, "/").await.1, "hello");
        assert_eq!(server.stats.refused_over_limit(), 1);
        assert_eq!(server.stats.accepted(), 3);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------------
// Normal traffic

#[tokio::test]
async fn requests_work_over_http1_h2c_and_tls() {
    bounded("test", async {
        let server = Running::start(ListenerLimits::default(), None).await;
        let mut stream = server.connect().await;
        assert_eq!(http1_get(&mut stream, "/").await.1, "hello");
        assert_eq!(http1_get(&mut stream, "/info").await.1, "alpn= certs=0");
        let (mut sender, _conn) = h2_client(server.connect().await).await;
        assert_eq!(h2_get(&mut sender, "/").await, (StatusCode::OK, "hello".to_owned()));
        assert_eq!(h2_get(&mut sender, "/info").await, (StatusCode::OK, "alpn= certs=0".to_owned()));

        let pki = Pki::new();
        let tls_server = Running::start(ListenerLimits::default(), Some(pki.acceptor())).await;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = pki.connector(b"h2").connect(name.clone(), tls_server.connect().await).await.unwrap();
        let (mut sender, _conn) = h2_client(tls).await;
        assert_eq!(h2_get(&mut sender, "/").await, (StatusCode::OK, "hello".to_owned()));
        // The factory saw the verified client certificate and the agreed protocol.
        assert_eq!(h2_get(&mut sender, "/info").await, (StatusCode::OK, "alpn=h2 certs=1".to_owned()));
        let mut tls = pki.connector(b"http/1.1").connect(name, tls_server.connect().await).await.unwrap();
        assert_eq!(http1_get(&mut tls, "/info").await.1, "alpn=http/1.1 certs=1");
    })
    .await;
}

#[tokio::test]
async fn tls_client_without_a_certificate_is_refused_and_counted() {
    bounded("test", async {
        let pki = Pki::new();
        let server = Running::start(ListenerLimits::default(), Some(pki.acceptor())).await;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("localhost").unwrap();
        // TLS 1.3: the client may finish its side before the server refuses; the refusal shows on first use.
        if let Ok(mut tls) = connector.connect(name, server.connect().await).await {
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await;
            let (received, _) = read_until_closed(&mut tls, Instant::now()).await;
            assert!(received.is_empty(), "{received:?}");
        }
        eventually("counted", || server.stats.handshake_failures() == 1).await;
    })
    .await;
}

#[tokio::test]
async fn axum_router_tonic_routes_and_service_fn_all_fit() {
    bounded("test", async {
        // service_fn: every other test. axum Router, through the tower adapter:
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "axum" }));
        let server = Running::start_with(ListenerLimits::default(), None, move |_: &ConnectionInfo| {
            TowerToHyperService::new(router.clone())
        })
        .await;
        let mut stream = server.connect().await;
        assert_eq!(http1_get(&mut stream, "/").await.1, "axum");

        // tonic Routes (no services: every method is Unimplemented), over h2c as gRPC clients speak it.
        let routes = tonic::service::Routes::default();
        let server = Running::start_with(ListenerLimits::default(), None, move |_: &ConnectionInfo| {
            TowerToHyperService::new(routes.clone())
        })
        .await;
        let (mut sender, _conn) = h2_client(server.connect().await).await;
        let request = Request::post("http://test/ward.Test/Call")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get("grpc-status").map(|v| v.as_bytes()), Some(&b"12"[..]));
    })
    .await;
}

#[tokio::test]
async fn http2_only_listener_serves_h2_and_drops_http1() {
    bounded("test", async {
        let server = Running::start_configured(ListenerLimits::default(), None, true, test_service).await;
        let (mut sender, _conn) = h2_client(server.connect().await).await;
        assert_eq!(h2_get(&mut sender, "/").await, (StatusCode::OK, "hello".to_owned()));
        let mut stream = server.connect().await;
        stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let (received, _) = read_until_closed(&mut stream, Instant::now()).await;
        assert!(!received.starts_with(b"HTTP/1.1"), "an HTTP/1.1 answer: {:?}", String::from_utf8_lossy(&received));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------------
// Shutdown

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_requests_in_flight() {
    bounded("test", async {
        let mut server = Running::start(ListenerLimits::default(), None).await;
        let mut idle = server.connect().await;
        assert_eq!(http1_get(&mut idle, "/").await.1, "hello");
        let mut busy = server.connect().await;
        busy.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut first = [0u8; 12];
        busy.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");

        let drain = server.stop().await;
        assert!(TcpStream::connect(server.addr).await.is_err(), "still accepting after shutdown");
        assert_eq!(drain.open_connections(), 2);
        let draining = tokio::spawn(drain.drain(Duration::from_secs(10)));
        // The idle connection closes at once; the busy one gets its whole response, then closes.
        let (received, _) = read_until_closed(&mut idle, Instant::now()).await;
        assert!(received.is_empty(), "{received:?}");
        let (rest, _) = read_until_closed(&mut busy, Instant::now()).await;
        assert!(rest.ends_with(b"0\r\n\r\n"), "response cut: {:?}", String::from_utf8_lossy(&rest));
        assert!(draining.await.unwrap(), "drain needed to force connections closed");
    })
    .await;
}

#[tokio::test]
async fn drain_closes_what_does_not_finish_in_time() {
    bounded("test", async {
        let mut server = Running::start(ListenerLimits::default(), None).await;
        let (mut sender, conn) = h2_client(server.connect().await).await;
        let hanging = tokio::spawn(async move {
            sender.send_request(Request::get("http://test/hang").body(Empty::new()).unwrap()).await
        });
        eventually("request in flight", || server.stats.accepted() == 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let drain = server.stop().await;
        let started = Instant::now();
        assert!(!drain.drain(SHORT).await, "a request that never ends drained cleanly");
        assert!(started.elapsed() < SHORT + SLACK);
        assert!(hanging.await.unwrap().is_err());
        let _ = conn.await;
        assert_eq!(server.stats.open_connections(), 0);
    })
    .await;
}

#[tokio::test]
async fn limits_that_switch_a_protection_off_are_refused() {
    bounded("test", async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let result = ward_net::serve(
            listener,
            ListenerLimits { max_connections: 0, ..ListenerLimits::default() },
            None,
            test_service,
            async {},
        )
        .await;
        assert!(matches!(result, Err(LimitsError::MaxConnections { value: 0, .. })), "{result:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------------
// Header limit (issue 26, defect 2)

/// Serves `test_service` with a header refusal that says who answered.
async fn start_with_header_refusal(limits: ListenerLimits) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refusal: ward_net::HeaderRefusal = Arc::new(|too_large: ward_net::HeadersTooLarge| {
        let mut response = Response::new(Bytes::from(format!("too large: {} > {}", too_large.size, too_large.limit)));
        *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        response
    });
    let server = Server::new(listener, limits).unwrap().with_header_refusal(refusal);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(test_service, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test]
async fn an_oversized_header_on_http2_ends_only_its_own_stream() {
    bounded("test", async {
        let (addr, _stop) = start_with_header_refusal(ListenerLimits::default()).await;
        let (sender, conn) = h2_client(TcpStream::connect(addr).await.unwrap()).await;
        // Five slow streams in flight on the connection (a second each)...
        let slow: Vec<_> = (0..5)
            .map(|_| {
                let mut sender = sender.clone();
                tokio::spawn(async move { h2_get(&mut sender, "/slow").await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...while one request carries 150 KB of headers: ten HEADERS/CONTINUATION frames, which hyper's defaults
        // answered with a GOAWAY that failed the five.
        let request = Request::get("http://test/").header("x-big", "a".repeat(150 * 1024)).body(Empty::new()).unwrap();
        let response = sender.clone().send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).starts_with("too large: "), "{body:?}");
        for stream in slow {
            assert_eq!(stream.await.unwrap(), (StatusCode::OK, "x".repeat(10)));
        }
        assert!(!conn.is_finished(), "the connection survived");
        assert_eq!(h2_get(&mut sender.clone(), "/").await, (StatusCode::OK, "hello".to_owned()));
    })
    .await;
}

#[tokio::test]
async fn http1_headers_are_limited_by_the_same_measure() {
    bounded("test", async {
        let limits = ListenerLimits { max_header_bytes: 8 * 1024, ..ListenerLimits::default() };
        let (addr, _stop) = start_with_header_refusal(limits).await;
        let send = |value: String| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head = format!("GET / HTTP/1.1\r\nhost: test\r\nx-big: {value}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            read_http1_response(&mut stream).await
        };
        // Just under: the header list is `:method` (42) + `:path` (38) + host (40) + x-big (37 + n).
        let under = 8 * 1024 - (42 + 38 + 40 + 37);
        let (head, body) = send("v".repeat(under)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "hello");
        let (head, body) = send("v".repeat(under + 1)).await;
        assert!(head.starts_with("HTTP/1.1 431"), "{head}");
        assert_eq!(body, format!("too large: {} > {}", 8 * 1024 + 1, 8 * 1024));
        // Past the ceiling (4 × the limit), still 431: hyper's own refusal when its buffer reaches the ceiling
        // before the head is complete, or ours when its last read brought the whole head (hyper checks its limit
        // between reads, so one read may take it past).
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("GET / HTTP/1.1\r\nhost: test\r\nx-big: {}\r\n\r\n", "v".repeat(40 * 1024));
        let _ = stream.write_all(head.as_bytes()).await;
        let (head, _) = read_http1_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    })
    .await;
}

/// The other half of "a refusal never breaks a shared connection" (issue 25, defect 1): refusals are answered with
/// complete responses so that h2's reset limits never count them, and those limits stay on for real abuse. A raw
/// HTTP/2 client that opens streams and cancels each at once (CVE-2023-44487's pattern) is cut off, on the plaintext
/// listener (HTTP/2 chosen from the opening) and on an HTTP/2-only one, while other connections to the same
/// listener keep being served. (Seen failing with the limits switched off: the flood ran to the end.)
#[tokio::test]
async fn a_rapid_reset_flood_is_still_cut_off() {
    bounded("test", async {
        for http2_only in [false, true] {
            let running = Running::start_configured(limits(LONG, LONG, LONG, 64), None, http2_only, test_service).await;
            let (mut client, connection) = h2::client::handshake(running.connect().await).await.unwrap();
            let connection = tokio::spawn(connection);
            let mut sent = 0;
            for _ in 0..10_000 {
                client = match client.ready().await {
                    Ok(client) => client,
                    Err(_) => break,
                };
                let request = Request::post(format!("http://{}/hang", running.addr)).body(()).unwrap();
                let Ok((response, stream)) = client.send_request(request, false) else { break };
                // Dropping both ends of a stream that is still open resets it (RST_STREAM, CANCEL).
                drop((response, stream));
                sent += 1;
                // Let the connection task write the pair and read what the server says.
                tokio::task::yield_now().await;
                if connection.is_finished() {
                    break;
                }
            }
            assert!(sent < 5_000, "http2_only={http2_only}: {sent} streams reset and the connection still open");
            let ended = bounded("the flooding connection is closed", connection).await.unwrap();
            // The server's GOAWAY (`ENHANCE_YOUR_CALM`) or, when it closed while this client was still writing
            // resets, a broken pipe: either way the server ended it, after about h2's limit of 1,024 resets.
            assert!(ended.is_err(), "http2_only={http2_only}: the connection ended on its own after {sent} resets");
            let (mut sender, _conn) = h2_client(running.connect().await).await;
            assert_eq!(h2_get(&mut sender, "/").await.0, StatusCode::OK, "http2_only={http2_only}: others served");
        }
    })
    .await;
}
