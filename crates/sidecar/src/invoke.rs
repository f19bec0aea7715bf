//! Service invocation, caller side, protocol-neutral: the HTTP API (`/v1.0/invoke/...`, `dapr-app-id`), gRPC
//! `InvokeService` and the gRPC proxy are thin front ends over [`Invoker`], which answers with the callee's
//! response or a typed [`InvokeError`]. Nothing here builds an error body; `error.rs` maps errors to answers.
//!
//! The method travels still percent-encoded: the callee's sidecar normalises it once and judges it (the edge that
//! decides is the edge that normalises).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::HeaderValue;
use ward_identity::{SpiffeId, TrustDomain};

use crate::error::{InvokeError, PeerRefusal};
use crate::headers;
use crate::inbound::method::{INTERNAL_GRPC_PREFIX, INTERNAL_INVOKE_PREFIX};
use crate::resolver::NameResolver;
use crate::transport::{Outbound, SendError};

/// Everything invocation uses.
pub(crate) struct Invoker {
    pub(crate) resolver: Arc<dyn NameResolver>,
    pub(crate) outbound: Outbound,
    pub(crate) own_id: SpiffeId,
    pub(crate) trust_domain: TrustDomain,
    /// This app's namespace: the default for a target without `.namespace`.
    pub(crate) namespace: String,
    pub(crate) max_body_size: u64,
    /// The header limit of every ward listener (`ward_net::ListenerLimits::max_header_bytes`): a request to the
    /// callee's sidecar over it is refused here, never sent, so it cannot cost the connection shared with other calls.
    pub(crate) max_header_bytes: usize,
    /// Wakes the certificate renewer when a call fails (it acts only while this sidecar's certificate is missing or
    /// expiring), so recovery after an expiry does not wait out a retry pause.
    pub(crate) renewal: Option<ward_sentry::client::RenewalWaker>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// A response from the callee (its app's answer, streaming).
pub(crate) type CalleeResponse = http::Response<Body>;

impl Invoker {
    /// `app-id` or `app-id.namespace`.
    fn split_target<'a>(&'a self, target: &'a str) -> (&'a str, &'a str) {
        target.split_once('.').unwrap_or((target, &self.namespace))
    }

    /// Invokes `raw_method` (still percent-encoded, may carry `?query` in `parts.uri`) on `target`.
    pub(crate) async fn invoke(
        &self,
        target: &str,
        raw_method: &str,
        parts: http::request::Parts,
        body: Body,
    ) -> Result<CalleeResponse, InvokeError> {
        if raw_method.is_empty() {
            return Err(InvokeError::EmptyMethod);
        }
        // Only the nine standard methods leave this sidecar (the callee refuses others too: defence in depth).
        if parts.method.as_str().parse::<ward_policy::HttpVerb>().is_err() {
            return Err(InvokeError::UnsupportedVerb(parts.method.as_str().to_owned()));
        }
        let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        self.send(target, format!("{INTERNAL_INVOKE_PREFIX}{raw_method}{query}"), parts, body).await
    }

    /// Proxies a gRPC call for `full_method` (`/pkg.Service/Method`) to `target`; trailers stream through.
    pub(crate) async fn proxy_grpc(
        &self,
        target: &str,
        full_method: &str,
        parts: http::request::Parts,
        body: Body,
    ) -> Result<CalleeResponse, InvokeError> {
        self.send(target, format!("{INTERNAL_GRPC_PREFIX}{}", full_method.trim_start_matches('/')), parts, body).await
    }

    /// [`Self::send_once`], counted in Dapr's service-invocation metrics. The destination label is the target only
    /// when it resolved (an app cannot mint label values by invoking made-up names).
    async fn send(
        &self,
        target: &str,
        internal_path: String,
        mut parts: http::request::Parts,
        body: Body,
    ) -> Result<CalleeResponse, InvokeError> {
        let started = std::time::Instant::now();
        let grpc = internal_path.starts_with(INTERNAL_GRPC_PREFIX);
        let kind = if grpc { "streaming" } else { "unary" };
        // The client span (tracing on): its `traceparent` goes to the callee's sidecar over the mTLS connection,
        // replacing whatever the app sent, so the callee's server span is its child.
        let span = crate::otel::child(
            || format!("CallRemote/{}", self.split_target(target).0).into(),
            opentelemetry::trace::SpanKind::Client,
            || {
                let method = internal_path
                    .strip_prefix(INTERNAL_INVOKE_PREFIX)
                    .or_else(|| internal_path.strip_prefix(INTERNAL_GRPC_PREFIX))
                    .unwrap_or(&internal_path);
                vec![
                    opentelemetry::KeyValue::new("rpc.system", if grpc { "grpc" } else { "http" }),
                    opentelemetry::KeyValue::new("rpc.method", crate::otel::span_path(method)),
                    opentelemetry::KeyValue::new("http.request.method", parts.method.as_str().to_owned()),
                ]
            },
        );
        if let Some(cx) = &span {
            crate::otel::inject(cx, &mut parts.headers, grpc);
        }
        let result = self.send_once(target, internal_path, parts, body).await;
        if let Some(cx) = &span {
            match &result {
                Ok(response) => crate::otel::end_with_status(cx, response.status().as_u16()),
                Err(InvokeError::Refused(_)) => crate::otel::end_failed(cx, "refused by the callee's sidecar"),
                Err(_) => crate::otel::end_failed(cx, "invocation failed"),
            }
        }
        let (dst, status) = match &result {
            Ok(response) => (self.split_target(target).0, response.status().as_str().to_owned()),
            Err(InvokeError::InvalidTarget(_) | InvokeError::CalleeNotFound(_)) => ("_unknown", "error".to_owned()),
            Err(InvokeError::Refused(refusal)) => (self.split_target(target).0, refusal.kind.as_str().to_owned()),
            Err(_) => (self.split_target(target).0, "error".to_owned()),
        };
        self.metrics.invocation_sent(dst, kind, &status, started.elapsed().as_secs_f64() * 1000.0);
        result
    }

    /// Resolves an instance, strips identity claims and tokens, streams the body (bounded by `--max-body-size`),
    /// and returns the callee sidecar's answer or its typed refusal.
    async fn send_once(
        &self,
        target: &str,
        internal_path: String,
        mut parts: http::request::Parts,
        body: Body,
    ) -> Result<CalleeResponse, InvokeError> {
        let (app_id, namespace) = self.split_target(target);
        let callee = SpiffeId::dapr(&self.trust_domain, namespace, app_id)
            .map_err(|_| InvokeError::InvalidTarget(target.to_owned()))?;
        let limit = self.max_body_size;
        if let Some(length) = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok())
            && length.parse::<u64>().is_ok_and(|n| n > limit)
        {
            return Err(InvokeError::BodyTooLarge { limit });
        }
        let address = match self.resolver.resolve(app_id, namespace).await {
            Ok(Some(address)) => address,
            Ok(None) => return Err(InvokeError::CalleeNotFound(target.to_owned())),
            Err(err) => return Err(InvokeError::CalleeUnavailable(crate::error::error_chain(&err))),
        };
        parts.uri = format!("http://{address}{internal_path}")
            .parse::<http::Uri>()
            .map_err(|_| InvokeError::Refused(invalid_method_refusal()))?;
        parts.version = http::Version::HTTP_2;
        headers::strip_untrusted(&mut parts.headers);
        parts.headers.remove(headers::APP_ID);
        if let Ok(v) = HeaderValue::from_str(app_id) {
            parts.headers.insert(headers::CALLEE_APP_ID, v);
        }
        // Measured as the callee's listener measures (and with what this sidecar added), against the same limit:
        // the caller's limit is never larger than the callee's (what the transport still adds is counted too).
        let size = ward_net::request_header_size(&parts.method, &parts.uri, &parts.headers)
            .saturating_add(self.outbound.added_header_bytes());
        if size > self.max_header_bytes {
            return Err(InvokeError::HeadersTooLarge { size, limit: self.max_header_bytes });
        }
        // Streams through, failing the upload if it grows past the limit; kept recoverable until first read, so a
        // request whose connection is refused (nothing sent) can go to the app's current address instead.
        let body = Body::new(http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)));
        let unread = Arc::new(Mutex::new(Some(body)));
        let (method, headers) = (parts.method.clone(), parts.headers.clone());
        let request = http::Request::from_parts(parts, Body::new(Unread::new(unread.clone())));
        let mut address = address;
        let mut sent = self.outbound.send(&callee, &self.own_id, request).await;
        if let Err(err) = &sent
            && is_connection_refused(err)
            && let Some(body) = take_unread(&unread)
            && let Ok(Some(next)) = self.resolver.re_resolve(app_id, namespace, &address).await
            && let Ok(uri) = format!("http://{next}{internal_path}").parse::<http::Uri>()
        {
            // A sidecar restarted on other ports leaves its old address registered (and cached) for a while.
            tracing::debug!(callee = %callee, refused = %address, retry = %next, "connection refused; sending to the app's current address");
            let mut request = http::Request::new(body);
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.version_mut() = http::Version::HTTP_2;
            *request.headers_mut() = headers;
            address = next;
            sent = self.outbound.send(&callee, &self.own_id, request).await;
        }
        let response = match sent {
            Ok(response) => response,
            Err(err) if crate::body::is_length_limit(&err) => return Err(InvokeError::BodyTooLarge { limit }),
            Err(err) => {
                let chain = crate::error::error_chain(&err);
                tracing::warn!(callee = %callee, error = %chain, "invocation failed");
                // The next call looks the app up again instead of retrying a cached dead address.
                self.resolver.evict(app_id, namespace, &address);
                if let Some(renewal) = &self.renewal {
                    renewal.wake();
                }
                return Err(InvokeError::CalleeUnavailable(chain));
            }
        };
        let (mut parts, body) = response.into_parts();
        if let Some(refusal) = PeerRefusal::take_from(&mut parts.headers) {
            return Err(InvokeError::Refused(refusal));
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(http::Response::from_parts(parts, Body::new(body)))
    }
}

/// Whether `err` is a refused TCP connect: nothing of the request was sent, so it may be sent elsewhere.
fn is_connection_refused(err: &SendError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        current = e.source();
    }
    false
}

/// The body if the transport never read it (the guard is dropped here, before any await).
fn take_unread(slot: &Mutex<Option<Body>>) -> Option<Body> {
    lock(slot).take()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A request body that stays in its shared slot until the transport first reads it: if the connection is refused
/// the body was never read, and the caller takes it back from the slot to send it elsewhere.
struct Unread {
    slot: Arc<Mutex<Option<Body>>>,
    taken: Option<Body>,
}

impl Unread {
    fn new(slot: Arc<Mutex<Option<Body>>>) -> Self {
        Self { slot, taken: None }
    }
}

impl http_body::Body for Unread {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            this.taken = lock(&this.slot).take();
        }
        match &mut this.taken {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            // Taken back by the caller: this request is not being sent.
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => lock(&self.slot).as_ref().is_none_or(http_body::Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => lock(&self.slot).as_ref().map(http_body::Body::size_hint).unwrap_or_default(),
        }
    }
}

/// A method that cannot even form a request target is refused the way the callee would refuse it.
fn invalid_method_refusal() -> PeerRefusal {
    PeerRefusal { kind: crate::error::RefusalKind::InvalidMethod, message: "invalid method".to_owned() }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn an_unread_body_can_be_taken_back_and_a_read_one_cannot() {
        let slot = Arc::new(Mutex::new(Some(Body::from("payload"))));
        let unread = Unread::new(slot.clone());
        assert_eq!(http_body::Body::size_hint(&unread).exact(), Some(7), "the hint is the body's before a read");
        drop(unread);
        assert!(take_unread(&slot).is_some(), "never read: recoverable");

        let slot = Arc::new(Mutex::new(Some(Body::from("payload"))));
        let read = Unread::new(slot.clone()).collect().await.unwrap().to_bytes();
        assert_eq!(read, "payload");
        assert!(take_unread(&slot).is_none(), "read by the transport: not sent twice");
    }

    /// Only a refused connect counts: a peer that accepts and then hangs up has been sent (part of) the request.
    #[tokio::test]
    async fn only_a_refused_connect_is_a_refusal() {
        let outbound = Outbound::new(crate::transport::Transport::Plaintext, 64 * 1024);
        let caller = SpiffeId::parse("spiffe://public/ns/default/caller").unwrap();
        let callee = SpiffeId::parse("spiffe://public/ns/default/callee").unwrap();
        let request =
            |port: u16| http::Request::post(format!("http://127.0.0.1:{port}/x")).body(Body::from("x")).unwrap();
        // A port nobody listens on: bind, learn the port, close.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bounded = std::time::Duration::from_secs(10);
        let refused = tokio::time::timeout(bounded, outbound.send(&callee, &caller, request(closed))).await.unwrap();
        assert!(refused.as_ref().is_err_and(is_connection_refused), "{refused:?}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                drop(tcp);
            }
        });
        let hung_up = tokio::time::timeout(bounded, outbound.send(&callee, &caller, request(port))).await.unwrap();
        assert!(hung_up.as_ref().is_err_and(|err| !is_connection_refused(err)), "{hung_up:?}");
    }
}
