//! API logging: one structured `tracing` event per HTTP API call (target `ward::api`, level INFO, message
//! `HTTP API Called`), the counterpart of daprd's `--enable-api-logging`.
//!
//! Fields: `method`, `path` (the raw path, or with `obfuscate_urls` the axum route template / a path whose
//! segments after the third are `{…}`), `status`, `duration_ms`, `user_agent`, and `rejected` (the token
//! rejection reason, only when the token check refused the call). Unlike daprd, ward logs refused calls: a
//! flood of 401s is exactly what an operator needs to see.
//!
//! Never logged: the query string (it may carry secrets), any header other than `User-Agent`, any token.
//!
//! Order matters: this layer must sit OUTSIDE the token layer, or it never sees the 401s:
//!
//! ```ignore
//! let app = axum::Router::new()
//!     .route("/v1.0/state/{store}", post(save))
//!     .layer(
//!         tower::ServiceBuilder::new()
//!             .layer(ApiLogLayer::new(log_options)) // outermost: sees every answer, including 401
//!             .layer(ApiTokenLayer::new(tokens)),   // then the token check, which strips the header
//!     );
//! ```
//!
//! With `Router::layer` (as above) axum has already routed, so `MatchedPath` is available for `obfuscate_urls`;
//! wrapped around a whole `Router` from outside, the fallback obfuscation applies.
//!
//! Not owned here: the gRPC API log (its own interceptor, later), audit events for authorization decisions.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use ::http::{Method, Request, Response, header};
use axum::extract::MatchedPath;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::http::is_exempt;
use crate::tokens::TokenRejection;

/// The `tracing` target of API log events.
pub const API_LOG_TARGET: &str = "ward::api";

/// User agents are attacker-chosen; a bounded length keeps a log line a line.
const MAX_USER_AGENT_CHARS: usize = 256;

/// What the API log records (Configuration `spec.logging.apiLogging`, `--enable-api-logging`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiLogOptions {
    /// Log API calls at all.
    pub enabled: bool,
    /// Log the route template instead of the concrete path (ids, keys and names stay out of the log).
    pub obfuscate_urls: bool,
    /// Do not log `GET` health checks (`/v1.0/healthz`, `/v1.0/healthz/outbound`).
    pub omit_health_checks: bool,
}

/// The options an [`ApiLog`] reads on every call: swapped by a configuration reload, read without a lock.
pub type ApiLogHandle = std::sync::Arc<arc_swap::ArcSwap<ApiLogOptions>>;

/// Builds [`ApiLog`] services.
#[derive(Debug, Clone)]
pub struct ApiLogLayer {
    options: ApiLogHandle,
}

impl ApiLogLayer {
    /// Logs according to `options` (a disabled logger costs one branch per request).
    pub fn new(options: ApiLogOptions) -> Self {
        Self::reloadable(std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(options)))
    }

    /// Logs according to whatever `options` holds when each call arrives.
    pub fn reloadable(options: ApiLogHandle) -> Self {
        Self { options }
    }
}

impl<S> Layer<S> for ApiLogLayer {
    type Service = ApiLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiLog { inner, options: self.options.clone() }
    }
}

/// Writes one `HTTP API Called` event per call once the answer is known.
#[derive(Debug, Clone)]
pub struct ApiLog<S> {
    inner: S,
    options: ApiLogHandle,
}

/// What is known about a call before it runs.
#[derive(Debug)]
struct Record {
    method: Method,
    path: String,
    user_agent: String,
    start: Instant,
}

impl<S, B, ResBody> Service<Request<B>> for ApiLog<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ApiLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let record = self.record(&request);
        ApiLogFuture { inner: self.inner.call(request), record }
    }
}

impl<S> ApiLog<S> {
    fn record<B>(&self, request: &Request<B>) -> Option<Record> {
        let options = **self.options.load();
        // `uri().path()` never includes the query string.
        let raw_path = request.uri().path();
        if !options.enabled || (options.omit_health_checks && is_exempt(request.method(), raw_path)) {
            return None;
        }
        let path = if options.obfuscate_urls {
            match request.extensions().get::<MatchedPath>() {
                Some(matched) => matched.as_str().to_owned(),
                None => obfuscate_path(raw_path),
            }
        } else {
            raw_path.to_owned()
        };
        let user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(MAX_USER_AGENT_CHARS).collect())
            .unwrap_or_default();
        Some(Record { method: request.method().clone(), path, user_agent, start: Instant::now() })
    }
}

/// Keeps the first three segments (`/v1.0/state/{store}` style APIs put the API name there) and hides the rest.
pub fn obfuscate_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (index, segment) in path.trim_start_matches('/').split('/').enumerate() {
        out.push('/');
        out.push_str(if index < 3 || segment.is_empty() { segment } else { "{…}" });
    }
    out
}

pin_project! {
    /// The future of [`ApiLog`]: the inner future, then one log event.
    pub struct ApiLogFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
    }
}

impl<F, ResBody, E> Future for ApiLogFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(record) = this.record.take() {
            let (status, rejected) = match &result {
                Ok(response) => (
                    Some(response.status().as_u16()),
                    response.extensions().get::<TokenRejection>().map(TokenRejection::reason),
                ),
                // The service failed without an answer (the connection will be dropped): no status to log.
                Err(_) => (None, None),
            };
            tracing::info!(
                target: API_LOG_TARGET,
                method = %record.method,
                path = %record.path,
                status,
                duration_ms = record.start.elapsed().as_secs_f64() * 1000.0,
                user_agent = %record.user_agent,
                rejected,
                "HTTP API Called"
            );
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obfuscation() {
        let cases = [
            ("/v1.0/state/store", "/v1.0/state/store"),
            ("/v1.0/state/store/key", "/v1.0/state/store/{…}"),
            ("/v1.0/invoke/app/method/a/b", "/v1.0/invoke/app/{…}/{…}/{…}"),
            ("/v1.0/healthz", "/v1.0/healthz"),
            ("/", "/"),
        ];
        for (input, expected) in cases {
            assert_eq!(obfuscate_path(input), expected, "{input}");
        }
    }
}
