//! Service invocation, caller side, protocol-neutral: the HTTP API (`/v1.0/invoke/...`, `dapr-app-id`), gRPC
//! `InvokeService` and the gRPC proxy are thin front ends over [`Invoker`], which answers with the callee's
//! response or a typed [`InvokeError`]. Nothing here builds an error body; `error.rs` maps errors to answers.
//!
//! The method travels still percent-encoded: the callee's sidecar normalises it once and judges it (the edge that
//! decides is the edge that normalises).

use std::sync::Arc;

use axum::body::Body;
use http::HeaderValue;
use ward_identity::{SpiffeId, TrustDomain};

use crate::error::{InvokeError, PeerRefusal};
use crate::headers;
use crate::inbound::method::{INTERNAL_GRPC_PREFIX, INTERNAL_INVOKE_PREFIX};
use crate::replay::Replayable;
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
        let query = parts.uri.query();
        let mut path =
            String::with_capacity(INTERNAL_INVOKE_PREFIX.len() + raw_method.len() + query.map_or(0, |q| q.len() + 1));
        path.push_str(INTERNAL_INVOKE_PREFIX);
        path.push_str(raw_method);
        if let Some(query) = query {
            path.push('?');
            path.push_str(query);
        }
        self.send(target, path, parts, body).await
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
        let answered = result.as_ref().ok().map(http::Response::status);
        let (dst, status) = match &result {
            Ok(_) => (self.split_target(target).0, answered.as_ref().map_or("error", http::StatusCode::as_str)),
            Err(InvokeError::InvalidTarget(_) | InvokeError::CalleeNotFound(_)) => ("_unknown", "error"),
            Err(InvokeError::Refused(refusal)) => (self.split_target(target).0, refusal.kind.as_str()),
            Err(_) => (self.split_target(target).0, "error"),
        };
        self.metrics.invocation_sent(dst, kind, status, started.elapsed().as_secs_f64() * 1000.0);
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
        parts.uri =
            internal_uri(&address, &internal_path).ok_or_else(|| InvokeError::Refused(invalid_method_refusal()))?;
        parts.version = http::Version::HTTP_2;
        headers::strip_untrusted(&mut parts.headers);
        parts.headers.remove(headers::APP_ID);
        if let Ok(v) = HeaderValue::from_str(app_id) {
            parts.headers.insert(headers::name::CALLEE_APP_ID, v);
        }
        // Measured as the callee's listener measures (and with what this sidecar added), against the same limit:
        // the caller's limit is never larger than the callee's (what the transport still adds is counted too).
        let size = ward_net::request_header_size(&parts.method, &parts.uri, &parts.headers)
            .saturating_add(self.outbound.added_header_bytes());
        if size > self.max_header_bytes {
            return Err(InvokeError::HeadersTooLarge { size, limit: self.max_header_bytes });
        }
        // Streams through, failing the upload if it grows past the limit; kept replayable (see `replay`) for the one
        // retry a call gets when its first attempt never reached the callee's app.
        let body = Body::new(http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)));
        let (replayable, body) = Replayable::new(body);
        let (method, headers) = (parts.method.clone(), parts.headers.clone());
        let request = http::Request::from_parts(parts, body);
        let mut address = address;
        let mut sent = self.outbound.send(&callee, &self.own_id, request).await;
        if let Err(err) = &sent
            && let Some((retry, why)) = self.retry_address(err, app_id, namespace, &address).await
            && let Some(uri) = internal_uri(&retry, &internal_path)
            && let Some(body) = replayable.again()
        {
            tracing::debug!(callee = %callee, from = %address, to = %retry, why, "sending the call once more");
            let mut request = http::Request::new(body);
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.version_mut() = http::Version::HTTP_2;
            *request.headers_mut() = headers;
            address = retry;
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

    /// Where a call whose first attempt failed with `err` may be sent once more, and why; `None` when it may not
    /// (it may have reached the callee's app). A refused connection sent nothing: the app is looked up again (a
    /// sidecar restarted on other ports leaves its old address registered, and cached, for a while). A stream the
    /// callee's sidecar did not process goes to the same address, on a new connection (the pool does not reuse one
    /// that is going away).
    async fn retry_address(
        &self,
        err: &SendError,
        app_id: &str,
        namespace: &str,
        address: &str,
    ) -> Option<(String, &'static str)> {
        if is_connection_refused(err) {
            let next = self.resolver.re_resolve(app_id, namespace, address).await.ok()??;
            return Some((next, "connection refused; the app's current address"));
        }
        is_unprocessed(err).then(|| (address.to_owned(), "the callee did not process the stream"))
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

/// Whether the callee's sidecar said `err`'s stream was not processed, so sending it again cannot run anything twice
/// (RFC 9113 §8.7): it refused the stream (`REFUSED_STREAM`), or closed the connection with a `GOAWAY` whose last
/// processed stream is below this one (h2 fails only those streams with the `GOAWAY`'s error; a connection that
/// breaks with streams in progress fails them with an I/O error instead, and those are not retried).
fn is_unprocessed(err: &SendError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            return h2.is_remote() && (refused || h2.is_go_away());
        }
        current = e.source();
    }
    false
}

/// `http://{address}{internal_path}`: the callee sidecar's internal address and the path it routes on. Built into
/// one buffer the URI then owns (no formatting machinery and no second copy on every call).
fn internal_uri(address: &str, internal_path: &str) -> Option<http::Uri> {
    let mut uri = String::with_capacity("http://".len() + address.len() + internal_path.len());
    uri.push_str("http://");
    uri.push_str(address);
    uri.push_str(internal_path);
    http::Uri::try_from(uri).ok()
}

/// A method that cannot even form a request target is refused the way the callee would refuse it.
fn invalid_method_refusal() -> PeerRefusal {
    PeerRefusal { kind: crate::error::RefusalKind::InvalidMethod, message: "invalid method".to_owned() }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

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

    /// How the fake callee sidecar treats the first stream it receives (later ones are echoed).
    #[derive(Clone, Copy, PartialEq)]
    enum First {
        /// `RST_STREAM(REFUSED_STREAM)` after reading the body's first chunk: not processed.
        Refused,
        /// The first connection answers its first stream with `GOAWAY(last_stream_id = 0)`: not processed.
        GoAway,
        /// The connection is cut after the body's first chunk: the stream may have been processed.
        Cut,
    }

    /// A plaintext HTTP/2 peer standing in for a callee sidecar: answers each stream with its request body, except
    /// the first (see [`First`]). Returns its address and how many streams it received.
    async fn fake_callee(first: First) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let streams = Arc::new(AtomicUsize::new(0));
        let seen = streams.clone();
        tokio::spawn(async move {
            let mut connections = 0;
            while let Ok((mut tcp, _)) = listener.accept().await {
                connections += 1;
                if first == First::GoAway && connections == 1 {
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        // SETTINGS (empty), then GOAWAY: last stream 0, NO_ERROR. Read on until the client leaves.
                        let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
                        let goaway = [0u8, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                        let mut buf = [0u8; 4096];
                        let _ = tcp.read(&mut buf).await;
                        let _ = tcp.write_all(&settings).await;
                        let _ = tcp.write_all(&goaway).await;
                        while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                    });
                    continue;
                }
                let streams = streams.clone();
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(tcp).await else { return };
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        let n = streams.fetch_add(1, Ordering::SeqCst);
                        let mut body = request.into_body();
                        if n == 0 && first != First::GoAway {
                            let _ = body.data().await;
                            if first == First::Cut {
                                return; // drops the connection with the stream in progress
                            }
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        tokio::spawn(async move {
                            let mut echo = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                echo.extend_from_slice(&chunk);
                            }
                            let Ok(mut send) = respond.send_response(http::Response::new(()), false) else { return };
                            let _ = send.send_data(bytes::Bytes::from(echo), true);
                        });
                    }
                });
            }
        });
        (address, seen)
    }

    struct Fixed(String);

    impl NameResolver for Fixed {
        fn resolve<'a>(&'a self, _: &'a str, _: &'a str) -> crate::resolver::ResolveFuture<'a> {
            let address = self.0.clone();
            Box::pin(async move { Ok(Some(address)) })
        }
    }

    fn invoker(address: String) -> Invoker {
        Invoker {
            resolver: Arc::new(Fixed(address)),
            outbound: Outbound::new(crate::transport::Transport::Plaintext, 64 * 1024),
            own_id: SpiffeId::parse("spiffe://public/ns/default/caller").unwrap(),
            trust_domain: TrustDomain::new("public").unwrap(),
            namespace: "default".to_owned(),
            max_body_size: 4 << 20,
            max_header_bytes: 64 * 1024,
            renewal: None,
            metrics: crate::metrics::Metrics::new("caller"),
        }
    }

    /// A body in three chunks, so the first attempt has read part of it when the callee answers.
    fn three_chunks() -> Body {
        let chunks: Vec<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> = ["one,", "two,", "three"]
            .map(|c| Ok(http_body::Frame::data(bytes::Bytes::from_static(c.as_bytes()))))
            .into();
        Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(chunks)))
    }

    async fn invoke_once(first: First) -> (Result<String, String>, usize) {
        let (address, streams) = fake_callee(first).await;
        let invoker = invoker(address);
        let (parts, ()) = http::Request::post("/v1.0/invoke/callee/method/orders").body(()).unwrap().into_parts();
        let call = invoker.invoke("callee", "orders", parts, three_chunks());
        let answer = match tokio::time::timeout(std::time::Duration::from_secs(10), call).await.expect("bounded") {
            Ok(response) => {
                Ok(String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes()).into_owned())
            }
            Err(err) => Err(format!("{err:?}")),
        };
        (answer, streams.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Issue 25, defect 1: a call whose stream the callee's sidecar did not process is sent once more, whole.
    #[tokio::test]
    async fn a_refused_stream_is_sent_once_more_with_its_whole_body() {
        let (answer, streams) = invoke_once(First::Refused).await;
        assert_eq!(answer, Ok("one,two,three".to_owned()));
        assert_eq!(streams, 2);
    }

    #[tokio::test]
    async fn a_stream_above_the_goaway_is_sent_on_a_new_connection() {
        let (answer, streams) = invoke_once(First::GoAway).await;
        assert_eq!(answer, Ok("one,two,three".to_owned()));
        assert_eq!(streams, 1, "the first connection served no stream");
    }

    /// A connection cut with the stream in progress may have reached the app: never sent twice.
    #[tokio::test]
    async fn a_stream_cut_off_in_progress_is_not_sent_again() {
        let (answer, streams) = invoke_once(First::Cut).await;
        assert!(answer.as_ref().is_err_and(|e| e.contains("CalleeUnavailable")), "{answer:?}");
        assert_eq!(streams, 1);
    }
}
