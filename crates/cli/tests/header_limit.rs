//! One oversized header must not abort other calls (issue 26, defect 2): while five slow, allowed calls from the
//! caller's app to the callee are in flight on the HTTP/2 connection the two sidecars share, a call with a 150 KB
//! header is answered 431 with a Dapr error body, and none of the five fails. Likewise in the other direction: an
//! app answer with a 150 KB header is refused by the callee's sidecar instead of being relayed.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::mesh::{Http, Mesh, SidecarSpec};

/// How long the app holds each `/slow` call: long enough that the big call is sent while all five are in flight.
const SLOW: Duration = Duration::from_millis(1500);

/// An app whose every answer takes [`SLOW`]; counts the requests it received.
struct SlowApp {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl SlowApp {
    fn start() -> SlowApp {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let big_answer = req.uri().path() == "/big-answer";
                        async move {
                            if big_answer {
                                let response = hyper::Response::builder()
                                    .header("x-big", "b".repeat(150 * 1024))
                                    .body(Full::new(Bytes::from_static(b"big")))
                                    .unwrap();
                                return Ok::<_, Infallible>(response);
                            }
                            tokio::time::sleep(SLOW).await;
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"slow done"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        SlowApp { addr, received, _runtime: runtime }
    }
}

#[test]
fn an_oversized_header_is_431_and_aborts_no_other_call() {
    let mesh = Mesh::start(&[]);
    let app = SlowApp::start();
    let _callee = mesh.sidecar(SidecarSpec::new("callee", Some(app.addr.port())));
    let caller = Arc::new(mesh.sidecar(SidecarSpec::new("caller", None)));

    // Warm the shared connection so the five calls and the big one share it.
    let http = Http::new();
    assert_eq!(http.get(&caller.http, "/v1.0/invoke/callee/method/slow").status, 200);

    for round in 0..2 {
        let slow: Vec<_> = (0..5)
            .map(|_| {
                let caller = caller.clone();
                std::thread::spawn(move || {
                    let reply = Http::new().get(&caller.http, "/v1.0/invoke/callee/method/slow");
                    (reply.status, reply.text())
                })
            })
            .collect();
        // Let the five reach the callee's app (bounded poll on what the app has seen).
        let expected = 1 + 5 * (round + 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while app.received.load(Ordering::SeqCst) < expected {
            assert!(std::time::Instant::now() < deadline, "the slow calls did not reach the app");
            std::thread::sleep(Duration::from_millis(10));
        }

        let big = "a".repeat(150 * 1024);
        let reply = http.send("GET", &caller.http, "/v1.0/invoke/callee/method/slow", &[("x-big", &big)], Vec::new());
        assert_eq!(reply.status, 431, "round {round}: {}", reply.text());
        let body = reply.json();
        assert!(body["errorCode"].as_str().is_some_and(|c| !c.is_empty()), "a Dapr error body: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("header")), "{body}");

        let failed: Vec<_> = slow
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|(status, text)| *status != 200 || text != "slow done")
            .collect();
        assert!(failed.is_empty(), "round {round}: collateral failures: {failed:?}");
    }
    assert_eq!(app.received.load(Ordering::SeqCst), 11, "the oversized call never reached the app");
}

#[test]
fn an_app_answer_with_an_oversized_header_aborts_no_other_call() {
    let mesh = Mesh::start(&[]);
    let app = SlowApp::start();
    let _callee = mesh.sidecar(SidecarSpec::new("callee", Some(app.addr.port())));
    let caller = Arc::new(mesh.sidecar(SidecarSpec::new("caller", None)));
    let http = Http::new();
    assert_eq!(http.get(&caller.http, "/v1.0/invoke/callee/method/slow").status, 200);

    let slow: Vec<_> = (0..5)
        .map(|_| {
            let caller = caller.clone();
            std::thread::spawn(move || {
                let reply = Http::new().get(&caller.http, "/v1.0/invoke/callee/method/slow");
                (reply.status, reply.text())
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.received.load(Ordering::SeqCst) < 6 {
        assert!(std::time::Instant::now() < deadline, "the slow calls did not reach the app");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The app answers at once with 150 KB of headers: the callee's sidecar must not relay that to the caller's.
    let reply = http.get(&caller.http, "/v1.0/invoke/callee/method/big-answer");
    assert_ne!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["errorCode"].as_str().is_some(), "a Dapr error body: {}", reply.text());

    let failed: Vec<_> = slow
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|(status, text)| *status != 200 || text != "slow done")
        .collect();
    assert!(failed.is_empty(), "collateral failures: {failed:?}");
}
