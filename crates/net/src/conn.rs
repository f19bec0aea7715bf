//! One connection's life after accept (and TLS): the timers that bound it and the bookkeeping they read.
//!
//! Three pieces share one [`ConnState`]:
//! - [`TrackedIo`] wraps the socket and notes when request bytes start arriving on an idle connection, and whether
//!   the client opened with the HTTP/2 preface (which picks the hyper builder that serves the connection);
//! - [`InFlight`] wraps the caller's service and counts requests in flight; the count drops when the response
//!   body finishes or is dropped ([`GuardedBody`]), so a long streaming body keeps its connection;
//! - [`drive`] polls hyper's connection and one timer, and closes the connection when a deadline passes.
//!
//! It owns no policy about *which* limits apply (see [`crate::ListenerLimits`]) and never looks at request
//! contents beyond the first 24 bytes (the HTTP/2 preface).

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ListenerLimits;
use crate::headers::{HeaderRefusal, HeadersTooLarge, request_header_size};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a listener serves each connection with: a hyper service whose futures move to the connection's task and
/// whose errors become the connection's. Named once for every function on the way from accept to hyper.
pub trait ConnectionService<B>:
    hyper::service::Service<Request<Incoming>, Response = Response<B>, Future: Send + 'static, Error: Into<BoxError>>
    + Send
    + 'static
{
}

impl<S, B> ConnectionService<B> for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<B>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Send
        + 'static
{
}

/// A response body a connection can send: its chunks convert from [`Bytes`] (ward-net's own answers, such as a
/// 431) and move between tasks.
pub trait ResponseBody: Body<Data: Send + From<Bytes>, Error: Into<BoxError>> + Send + 'static {}

impl<B> ResponseBody for B where B: Body<Data: Send + From<Bytes>, Error: Into<BoxError>> + Send + 'static {}

/// The client's first bytes when it speaks HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PROTOCOL_UNKNOWN: u8 = 0;
const PROTOCOL_HTTP1: u8 = 1;
const PROTOCOL_HTTP2: u8 = 2;
/// `pending_since` when no request bytes are waiting.
const NONE: u64 = u64::MAX;

/// What one connection's timers read. Times are microseconds since `epoch` so they fit in atomics.
pub(crate) struct ConnState {
    epoch: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When `in_flight` last dropped to zero.
    idle_since: AtomicU64,
    /// When bytes first arrived while no request was in flight (a request's headers on their way), or [`NONE`].
    pending_since: AtomicU64,
    protocol: AtomicU8,
    /// The connection's maximum age (see `ward_net::MaxConnectionAge`): from then on it is drained, and a request
    /// that still arrives on it (sent before the client saw the GOAWAY) is answered 421 instead of being served
    /// over certificates that have expired.
    max_age: Option<Instant>,
    /// The driver's waker: a response finishing on another task (HTTP/2 streams run on their own tasks) must
    /// wake the driver so it arms the idle timer.
    driver: AtomicWaker,
}

impl ConnState {
    pub(crate) fn new(max_age: Option<Instant>) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            pending_since: AtomicU64::new(NONE),
            protocol: AtomicU8::new(PROTOCOL_UNKNOWN),
            max_age,
            driver: AtomicWaker::new(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(NONE - 1)
    }

    fn at(&self, micros: u64) -> Instant {
        self.epoch + std::time::Duration::from_micros(micros)
    }

    /// Called with the bytes of every successful read (after TLS, so plaintext HTTP).
    fn on_read(&self, bytes: &[u8], preface_matched: &mut usize) {
        if self.protocol.load(Ordering::Relaxed) == PROTOCOL_UNKNOWN {
            let rest = H2_PREFACE.get(*preface_matched..).unwrap_or_default();
            let compared = rest.len().min(bytes.len());
            if rest.iter().zip(bytes).all(|(a, b)| a == b) {
                *preface_matched += compared;
                if *preface_matched == H2_PREFACE.len() {
                    self.protocol.store(PROTOCOL_HTTP2, Ordering::Relaxed);
                }
            } else {
                self.protocol.store(PROTOCOL_HTTP1, Ordering::Relaxed);
            }
        }
        // Bytes on a connection with nothing in flight are the start of the next request: its headers now have
        // `header_read_timeout` to complete. Bytes while a request is in flight are its body (or pipelined
        // requests, which the idle timer still bounds).
        if self.in_flight.load(Ordering::Acquire) == 0 && self.pending_since.load(Ordering::Relaxed) == NONE {
            self.pending_since.store(self.now(), Ordering::Relaxed);
        }
    }

    fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.pending_since.store(NONE, Ordering::Relaxed);
        RequestGuard { state: self.clone() }
    }

    /// The next moment something must happen to this connection, and what; `None` while a request is in flight.
    fn next_deadline(&self, limits: &ListenerLimits, closing_since: Option<Instant>) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = self.at(self.idle_since.load(Ordering::Acquire));
        if let Some(since) = closing_since {
            // A client that ignores our close (never acks HTTP/2's GOAWAY ping, never reads) is cut; measured from
            // the last response too, so a response that just finished still gets flushed.
            return Some((since.max(idle_since) + limits.header_read_timeout, Expiry::Closing));
        }
        if self.requests.load(Ordering::Acquire) == 0 {
            return Some((self.epoch + limits.header_read_timeout, Expiry::FirstRequest));
        }
        let idle = (idle_since + limits.idle_timeout, Expiry::Idle);
        // Only HTTP/1.1 has "the next request's headers": on HTTP/2 an idle connection carries PINGs, SETTINGS and
        // WINDOW_UPDATEs, which are not the start of a request.
        let pending = self.pending_since.load(Ordering::Relaxed);
        if self.protocol.load(Ordering::Relaxed) == PROTOCOL_HTTP1 && pending != NONE {
            let header = self.at(pending) + limits.header_read_timeout;
            if header < idle.0 {
                return Some((header, Expiry::HeaderRead));
            }
        }
        Some(idle)
    }
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No first request (HTTP/1.1 headers, HTTP/2 preface + HEADERS) within the header timeout.
    FirstRequest,
    /// An HTTP/1.1 request's headers did not complete within the header timeout of their first byte.
    HeaderRead,
    /// No request in flight for the idle timeout: the connection is asked to close gracefully.
    Idle,
    /// A graceful close (idle or shutdown) did not finish in time: the connection is dropped.
    Closing,
}

/// One request in flight; dropping it (body finished or dropped, or the service failed) ends it.
pub(crate) struct RequestGuard {
    state: Arc<ConnState>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // Store the time before the count drops, so whoever sees zero also sees when it became zero.
        self.state.idle_since.store(self.state.now(), Ordering::Release);
        if self.state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state.driver.wake();
        }
    }
}

/// The socket, observed (see [`ConnState::on_read`]).
pub(crate) struct TrackedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    preface_matched: usize,
    /// Bytes already read (and observed) to choose the protocol, handed to hyper before anything new.
    replay: Bytes,
}

impl<T> TrackedIo<T> {
    pub(crate) fn new(inner: T, state: Arc<ConnState>) -> Self {
        Self { inner, state, preface_matched: 0, replay: Bytes::new() }
    }
}

impl<T: AsyncRead + Unpin> TrackedIo<T> {
    /// Reads the connection's opening until it shows which protocol the client speaks (HTTP/2 opens with a fixed
    /// preface), keeps those bytes for hyper's first read, and returns the protocol.
    ///
    /// Why not hyper-util's own detection: it reads 24 bytes and hands them to hyper alone, so hyper needs a second
    /// read for the rest of the first request head, and that read grows hyper's HTTP/1.1 buffer from 8 to 16 KiB,
    /// kept for the connection's life (issue 25: memory per idle keep-alive connection). Reading up to hyper's
    /// buffer size here gives hyper a head that arrived whole in one piece.
    async fn read_opening(&mut self) -> io::Result<Protocol> {
        use tokio::io::AsyncReadExt;
        let mut opening = Vec::with_capacity(HYPER_READ_BUFFER);
        let protocol = loop {
            if self.read_buf(&mut opening).await? == 0 {
                break Protocol::Http1; // closed early: hyper sees the same end of stream
            }
            match self.state.protocol.load(Ordering::Relaxed) {
                PROTOCOL_HTTP2 => break Protocol::Http2,
                PROTOCOL_HTTP1 => break Protocol::Http1,
                _ => {} // a beginning of the HTTP/2 preface so far: read on
            }
            if opening.len() == opening.capacity() {
                break Protocol::Http1; // cannot happen: the preface is shorter than the buffer
            }
        };
        self.replay = Bytes::from(opening);
        Ok(protocol)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(this.replay.split_to(n).as_ref());
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(read) = buf.filled().get(before..)
            && !read.is_empty()
        {
            this.state.on_read(read, &mut this.preface_matched);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The caller's service, counting requests in flight, behind the header limit: a request over it is answered by
/// the listener's [`HeaderRefusal`] and never reaches the service.
pub(crate) struct InFlight<S> {
    inner: S,
    state: Arc<ConnState>,
    max_header_bytes: usize,
    refusal: HeaderRefusal,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for InFlight<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    B: Body,
    B::Data: From<Bytes>,
{
    type Response = Response<GuardedBody<B>>;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future, B>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = self.state.start_request();
        if self.state.max_age.is_some_and(|at| Instant::now() >= at) {
            // 421 Misdirected Request: "may be retried over a different connection" (RFC 9110 §15.5.20), which is
            // what the client must do once this connection's certificates have expired.
            let mut response = Response::new(GuardedBody { inner: Answer::Refusal { data: None }, guard: Some(guard) });
            *response.status_mut() = http::StatusCode::MISDIRECTED_REQUEST;
            return InFlightFuture::Refused { response: Some(response) };
        }
        let size = request_header_size(request.method(), request.uri(), request.headers());
        if size > self.max_header_bytes {
            // The request (and its unread body) is dropped here: on HTTP/2 only its own stream ends; a client that
            // keeps within the limit (ward's sidecars check before sending) never gets here.
            let refusal = (self.refusal)(HeadersTooLarge { size, limit: self.max_header_bytes });
            let response = refusal.map(|bytes| GuardedBody {
                inner: Answer::Refusal { data: (!bytes.is_empty()).then_some(bytes) },
                guard: Some(guard),
            });
            return InFlightFuture::Refused { response: Some(response) };
        }
        InFlightFuture::Called { inner: self.inner.call(request), guard: Some(guard) }
    }
}

pin_project_lite::pin_project! {
    /// The service's future (handing the request guard to the response body), or a refusal ready at once.
    #[project = InFlightProj]
    pub(crate) enum InFlightFuture<F, B> {
        Called {
            #[pin]
            inner: F,
            guard: Option<RequestGuard>,
        },
        Refused {
            response: Option<Response<GuardedBody<B>>>,
        },
    }
}

impl<F, B, E> Future for InFlightFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GuardedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InFlightProj::Called { inner, guard } => {
                let result = ready!(inner.poll(cx));
                // On error the guard stays here and ends the request when this future drops.
                Poll::Ready(result.map(|response| {
                    let guard = guard.take();
                    response.map(|inner| GuardedBody { inner: Answer::Service { inner }, guard })
                }))
            }
            // Polled once; a second poll of a finished future is a caller bug, answered with a pending future.
            InFlightProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// What a response body is: the service's, or the header refusal's single frame.
    #[project = AnswerProj]
    pub(crate) enum Answer<B> {
        Service {
            #[pin]
            inner: B,
        },
        Refusal {
            data: Option<Bytes>,
        },
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request (for the idle timer) when it finishes, fails or drops.
    pub(crate) struct GuardedBody<B> {
        #[pin]
        inner: Answer<B>,
        guard: Option<RequestGuard>,
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = match this.inner.project() {
            AnswerProj::Service { inner } => ready!(inner.poll_frame(cx)),
            AnswerProj::Refusal { data } => data.take().map(|data| Ok(Frame::data(B::Data::from(data)))),
        };
        if !matches!(frame, Some(Ok(_))) {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Answer::Service { inner } => inner.is_end_stream(),
            Answer::Refusal { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Answer::Service { inner } => inner.size_hint(),
            Answer::Refusal { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// hyper finished the connection (client closed, graceful close done, or a protocol error).
    Finished(Result<(), BoxError>),
    /// A deadline passed and the connection was dropped.
    TimedOut(Expiry),
    /// The listener's drain ran out of time.
    Forced,
}

/// hyper's initial HTTP/1.1 read buffer (its `INIT_BUFFER_SIZE`): the most of a connection's opening read at once.
const HYPER_READ_BUFFER: usize = 8 * 1024;

/// Which protocol a connection's opening chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The hyper connection builders every connection of a listener uses, one per protocol: the listener reads each
/// connection's opening itself (see [`TrackedIo::read_opening`]) and hands it to the builder for that protocol.
pub(crate) struct Builders {
    /// `None` on a listener that serves HTTP/2 only.
    http1: Option<auto::Builder<TokioExecutor>>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    pub(crate) fn new(http2_only: bool, limits: &ListenerLimits) -> Self {
        Self { http1: (!http2_only).then(|| configured(limits).http1_only()), http2: configured(limits).http2_only() }
    }
}

/// One hyper builder with the listener's limits.
/// hyper's HTTP/2 defaults are relied on for the rest: 200 concurrent streams, reset-flood limits.
fn configured(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Both protocols accept headers up to the ceiling, so that a request over the limit but under the ceiling
    // reaches [`InFlight`] and gets the listener's own 431 (on HTTP/2 ending only its stream); see
    // `ListenerLimits::header_ceiling`. HTTP/1.1's read buffer cannot go below hyper's 8 KiB minimum.
    let ceiling = limits.header_ceiling();
    builder.http1().max_buf_size(ceiling.max(8192));
    builder.http2().max_header_list_size(u32::try_from(ceiling).unwrap_or(u32::MAX));
    // hyper's own HTTP/1.1 header timer starts as soon as the previous response is written, so it would close
    // an idle keep-alive connection at the header timeout instead of the idle timeout; [`drive`] enforces both
    // (header time counted from the first byte of a request, as Go's ReadHeaderTimeout does).
    builder.http1().header_read_timeout(None);
    builder
}

/// Serves one connection until it ends, enforcing the header, idle and closing deadlines, and its maximum age:
/// at `max_age` the connection is closed gracefully even with requests in flight (they finish; HTTP/2 sends
/// GOAWAY so the client opens a new connection for the next ones).
#[expect(clippy::too_many_arguments, reason = "one internal call site; a struct would only rename these")]
pub(crate) async fn drive<T, S, B>(
    io: T,
    state: Arc<ConnState>,
    service: S,
    builders: &Builders,
    limits: &ListenerLimits,
    graceful: &CancellationToken,
    force: &CancellationToken,
    refusal: &HeaderRefusal,
    on_idle: impl Fn(),
) -> Ended
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnectionService<B>,
    B: ResponseBody,
{
    let mut io = TrackedIo::new(io, state.clone());
    let builder = match &builders.http1 {
        None => &builders.http2,
        Some(http1) => {
            // Bounded like the first request it starts: by the first-request deadline, a forced or graceful close.
            let deadline = state.epoch + limits.header_read_timeout;
            let opening = tokio::select! {
                biased;
                () = force.cancelled() => return Ended::Forced,
                () = graceful.cancelled() => return Ended::Finished(Ok(())),
                () = tokio::time::sleep_until(deadline) => return Ended::TimedOut(Expiry::FirstRequest),
                opening = io.read_opening() => opening,
            };
            match opening {
                Ok(Protocol::Http1) => http1,
                Ok(Protocol::Http2) => &builders.http2,
                Err(err) => return Ended::Finished(Err(err.into())),
            }
        }
    };
    let io = TokioIo::new(io);
    let service = InFlight {
        inner: service,
        state: state.clone(),
        max_header_bytes: limits.max_header_bytes,
        refusal: refusal.clone(),
    };
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut graceful = pin!(graceful.cancelled());
    let mut force = pin!(force.cancelled());
    let mut timer = pin!(tokio::time::sleep_until(Instant::now() + limits.header_read_timeout));
    let max_age = state.max_age;
    let mut aged = pin!(async move {
        match max_age {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    });
    let mut closing_since: Option<Instant> = None;

    poll_fn(|cx| {
        state.driver.register(cx.waker());
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Ended::Finished(result));
            }
            if force.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ended::Forced);
            }
            if closing_since.is_none() && graceful.as_mut().poll(cx).is_ready() {
                closing_since = Some(Instant::now());
                conn.as_mut().graceful_shutdown();
                continue;
            }
            if closing_since.is_none() && aged.as_mut().poll(cx).is_ready() {
                // The certificates this connection was opened with expire now: no new request may use it.
                tracing::debug!("draining a connection at its maximum age");
                closing_since = Some(Instant::now());
                conn.as_mut().graceful_shutdown();
                continue;
            }
            let Some((deadline, expiry)) = state.next_deadline(limits, closing_since) else {
                return Poll::Pending;
            };
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match expiry {
                Expiry::Idle => {
                    // Graceful: HTTP/1.1 closes at once when idle, HTTP/2 sends GOAWAY so the client retries
                    // elsewhere instead of seeing a reset; `Closing` then bounds how long that may take.
                    on_idle();
                    closing_since = Some(Instant::now());
                    conn.as_mut().graceful_shutdown();
                }
                expiry => return Poll::Ready(Ended::TimedOut(expiry)),
            }
        }
    })
    .await
}
