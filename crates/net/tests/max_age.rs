//! A connection's maximum age ([`ward_net::MaxConnectionAge`], issue 24 defect 4) against real sockets on
//! 127.0.0.1: at the earlier of the two bounds the connection is drained (HTTP/2 GOAWAY), a request in flight then
//! finishes, and a new request on the old connection is not served. Every test is bounded.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use ward_net::{ConnectionInfo, Drain, ListenerLimits, MaxConnectionAge, Server};

const TEST_BOUND: Duration = Duration::from_secs(20);
/// How late a drain may come on a loaded 2-core machine and still count as "at the maximum age".
const SLACK: Duration = Duration::from_secs(3);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_BOUND, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: did not finish within {TEST_BOUND:?}"),
    }
}

/// Fixed bounds, relative to when the listener starts.
struct Bounds {
    own: Option<SystemTime>,
    peer: Option<SystemTime>,
}

impl MaxConnectionAge for Bounds {
    fn at_accept(&self) -> Option<SystemTime> {
        self.own
    }

    fn after_handshake(&self, _info: &ConnectionInfo) -> Option<SystemTime> {
        self.peer
    }
}

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

/// `/` answers `hello`; `/slow` streams ten bytes over a second.
async fn handle(request: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let body = if request.uri().path() == "/slow" {
        StreamBody::new(futures_util::stream::unfold(0u8, |sent| async move {
            if sent == 10 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x"))), sent + 1))
        }))
        .boxed_unsync()
    } else {
        Full::new(Bytes::from_static(b"hello")).boxed_unsync()
    };
    Ok(Response::new(body))
}

/// A listener with `bounds`, and what stops it.
async fn start(
    bounds: Bounds,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Drain>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(listener, ListenerLimits::default()).unwrap().with_max_age(Arc::new(bounds));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(|_: &ConnectionInfo| hyper::service::service_fn(handle), async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h2(addr: std::net::SocketAddr) -> (Sender, tokio::task::JoinHandle<hyper::Result<()>>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    (sender, tokio::spawn(conn))
}

/// Not served: the request failed, or was answered 421 (retry on another connection).
fn not_served(answer: &Result<(StatusCode, String), String>) -> bool {
    matches!(answer, Err(_) | Ok((StatusCode::MISDIRECTED_REQUEST, _)))
}

async fn get(sender: &mut Sender, path: &str) -> Result<(StatusCode, String), String> {
    let request = Request::get(format!("http://test{path}")).body(Empty::new()).unwrap();
    let response = sender.send_request(request).await.map_err(|err| err.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|err| err.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn a_connection_is_drained_at_its_maximum_age_and_a_request_in_flight_finishes() {
    bounded("test", async {
        let age = Duration::from_millis(800);
        let started = Instant::now();
        // The peer's bound is the earlier one: it decides.
        let now = SystemTime::now();
        let (addr, _stop, _task) =
            start(Bounds { own: Some(now + Duration::from_secs(3600)), peer: Some(now + age) }).await;
        let (mut sender, conn) = h2(addr).await;
        assert_eq!(get(&mut sender, "/").await, Ok((StatusCode::OK, "hello".to_owned())));
        // A one-second response that is still streaming when the maximum age passes.
        let mut in_flight = sender.clone();
        let slow = tokio::spawn(async move { get(&mut in_flight, "/slow").await });
        // The connection ends cleanly (GOAWAY, then close once the stream is done), not with an error.
        let result = conn.await.unwrap();
        let elapsed = started.elapsed();
        assert!(result.is_ok(), "{result:?}");
        assert!(elapsed >= age && elapsed < age + Duration::from_secs(1) + SLACK, "closed after {elapsed:?}");
        assert_eq!(slow.await.unwrap(), Ok((StatusCode::OK, "x".repeat(10))), "the request in flight finished");
        let late = get(&mut sender, "/").await;
        assert!(not_served(&late), "a new request on the drained connection: {late:?}");
    })
    .await;
}

#[tokio::test]
async fn a_connection_whose_bound_has_passed_serves_nothing() {
    bounded("test", async {
        let past = SystemTime::now() - Duration::from_secs(1);
        let (addr, _stop, _task) = start(Bounds { own: Some(past), peer: None }).await;
        let (mut sender, conn) = h2(addr).await;
        let answer = get(&mut sender, "/").await;
        assert!(not_served(&answer), "served over a connection past its maximum age: {answer:?}");
        let _ = conn.await;
    })
    .await;
}

#[tokio::test]
async fn without_bounds_a_connection_lives_on() {
    bounded("test", async {
        let (addr, _stop, _task) = start(Bounds { own: None, peer: None }).await;
        let (mut sender, conn) = h2(addr).await;
        for _ in 0..3 {
            assert_eq!(get(&mut sender, "/").await, Ok((StatusCode::OK, "hello".to_owned())));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(!conn.is_finished());
    })
    .await;
}
