//! Helpers shared by the integration tests: a router with the gate in front, a log capture, bounded waits.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};
use ward_gate::{ApiLogLayer, ApiLogOptions, ApiTokenLayer, ApiTokens};

/// Every request in the tests is bounded by this.
pub const STEP: Duration = Duration::from_secs(5);

/// The handler: reports whether it saw a token header, which it never should.
async fn echo(headers: HeaderMap) -> String {
    format!("seen-token={}", headers.contains_key("dapr-api-token"))
}

/// The order the sidecar uses: API log outside, token check inside, then the routes.
pub fn router(tokens: ApiTokens, log: ApiLogOptions) -> Router {
    Router::new()
        .route("/v1.0/healthz", get(echo))
        .route("/v1.0/healthz/outbound", get(echo))
        .route("/v1.0/state/{store}", get(echo).post(echo))
        .route("/v1.0/state/{store}/{key}", get(echo))
        .fallback(echo)
        .layer(ServiceBuilder::new().layer(ApiLogLayer::new(log)).layer(ApiTokenLayer::new(tokens)))
}

pub async fn send(router: &Router, request: Request<Body>) -> (Response<()>, String) {
    let response =
        tokio::time::timeout(STEP, router.clone().oneshot(request)).await.expect("bounded").expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = tokio::time::timeout(STEP, body.collect()).await.expect("bounded").expect("body").to_bytes();
    (Response::from_parts(parts, ()), String::from_utf8_lossy(&bytes).into_owned())
}

pub fn get_with(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(uri);
    if let Some(token) = token {
        builder = builder.header("dapr-api-token", token);
    }
    builder.body(Body::empty()).expect("request")
}

/// Polls `condition` every 50 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `tracing` subscriber writing JSON lines into memory, installed for the current thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }

    /// Parsed JSON events whose target is `target`.
    pub fn events(&self, target: &str) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["target"] == target)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
