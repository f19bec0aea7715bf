//! The accept loop: connection cap, `TCP_NODELAY`, TLS handshake deadline, one task per connection, and the
//! [`Drain`] handle that ends them at shutdown. Per-connection timers live in [`crate::conn`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::conn::{self, ConnState, ConnectionService, Ended, Expiry, ResponseBody};
use crate::headers::{HeaderRefusal, bare_431};
use crate::stats::Throttle;
use crate::{LimitsError, ListenerLimits, ListenerStats};

/// How often a listener may log that it refuses connections over its cap (or fails to accept).
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Pause after an accept error such as EMFILE, which would otherwise repeat in a busy loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What the service factory knows about a connection when it builds that connection's service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The client's certificate chain (leaf first) as verified by the TLS configuration's client verifier;
    /// `None` without TLS or when the client sent none.
    pub peer_certificates: Option<Vec<CertificateDer<'static>>>,
    /// The ALPN protocol agreed in the TLS handshake (`h2`, `http/1.1`), if any.
    pub alpn_protocol: Option<Vec<u8>>,
}

/// The latest moment a connection may carry requests, decided per connection by the listener's owner: an mTLS
/// listener answers with the earliest `not_after` of the two certificates the connection was opened with, so a
/// connection never outlives them (issue 24, defect 4). At that moment the connection is drained as at shutdown
/// (HTTP/2: GOAWAY; requests in flight finish, new ones go to a new connection and a new handshake).
pub trait MaxConnectionAge: Send + Sync + 'static {
    /// Asked when a connection is accepted, before its TLS handshake: the bound set by what the listener itself
    /// presents (its own certificate now; a renewal during the handshake can only give a later one).
    fn at_accept(&self) -> Option<SystemTime>;

    /// Asked after the handshake: the bound set by the peer (its verified leaf in `info.peer_certificates`).
    fn after_handshake(&self, info: &ConnectionInfo) -> Option<SystemTime>;
}

/// Where a [`Server`] accepts connections: a TCP socket, or a Unix domain socket (daprd's
/// `--unix-domain-socket`: the API reachable only through a file the OS guards by its permissions). A Unix
/// connection has no TLS and no addresses: its [`ConnectionInfo`] shows `0.0.0.0:0` for both.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener::Tcp(listener)
    }
}

impl From<tokio::net::UnixListener> for Listener {
    fn from(listener: tokio::net::UnixListener) -> Self {
        Listener::Unix(listener)
    }
}

/// An accepted connection.
enum Stream {
    Tcp(TcpStream),
    Unix(tokio::net::UnixStream),
}

/// What a Unix domain socket connection shows as its addresses.
const NO_ADDRESS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl Listener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr(),
            Listener::Unix(_) => Ok(NO_ADDRESS),
        }
    }

    async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tcp(listener) => listener.accept().await.map(|(tcp, remote)| (Stream::Tcp(tcp), remote)),
            Listener::Unix(listener) => listener.accept().await.map(|(unix, _)| (Stream::Unix(unix), NO_ADDRESS)),
        }
    }
}

/// One listener with its limits. Build it, read [`Server::stats`] for metrics, then [`Server::serve`].
pub struct Server {
    listener: Listener,
    limits: ListenerLimits,
    tls: Option<TlsAcceptor>,
    stats: ListenerStats,
    name: Arc<str>,
    http2_only: bool,
    refusal: HeaderRefusal,
    max_age: Option<Arc<dyn MaxConnectionAge>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("local_addr", &self.listener.local_addr().ok())
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .field("http2_only", &self.http2_only)
            .field("max_age", &self.max_age.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Refuses limits that would switch a protection off (see [`ListenerLimits::validate`]).
    pub fn new(listener: impl Into<Listener>, limits: ListenerLimits) -> Result<Self, LimitsError> {
        limits.validate()?;
        Ok(Self {
            listener: listener.into(),
            limits,
            tls: None,
            stats: ListenerStats::default(),
            name: Arc::from("listener"),
            http2_only: false,
            refusal: Arc::new(bare_431),
            max_age: None,
        })
    }

    /// Serves over TLS: the handshake (and with it any client-certificate verification the acceptor's rustls
    /// configuration does) must complete within the handshake timeout.
    pub fn with_tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Names the listener in log lines (`public-http`, `internal`, `sentry-grpc`, ...).
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Serves HTTP/2 only (gRPC listeners): an HTTP/1.1 client gets no answer and is dropped, so gRPC handlers
    /// are never reached over a protocol they were not written for.
    pub fn with_http2_only(mut self) -> Self {
        self.http2_only = true;
        self
    }

    /// What this listener answers to a request whose headers are over [`ListenerLimits::max_header_bytes`]
    /// (default: a bare 431). The request's service is never called.
    pub fn with_header_refusal(mut self, refusal: HeaderRefusal) -> Self {
        self.refusal = refusal;
        self
    }

    /// Drains each connection at the moment `max_age` sets for it (see [`MaxConnectionAge`]).
    pub fn with_max_age(mut self, max_age: Arc<dyn MaxConnectionAge>) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The listener's counters; clones stay live while and after it serves.
    pub fn stats(&self) -> ListenerStats {
        self.stats.clone()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` resolves, then closes the listening socket and returns the [`Drain`]
    /// of the connections still open. `make_service` builds one service per connection (after the TLS
    /// handshake, so it can read the peer's certificates).
    ///
    /// Dropping this future, or the returned [`Drain`], closes every connection of this listener at once.
    pub async fn serve<M, S, B, F>(self, make_service: M, shutdown: F) -> Drain
    where
        M: Fn(&ConnectionInfo) -> S + Send + Sync + 'static,
        S: ConnectionService<B>,
        B: ResponseBody,
        F: Future<Output = ()> + Send,
    {
        let Server { listener, limits, tls, stats, name, http2_only, refusal, max_age } = self;
        let listen_addr = listener.local_addr().ok();
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        // Every connection task holds a sender; the receiver sees the channel close when the last task ends.
        let (alive, connections) = mpsc::channel::<()>(1);
        let graceful = CancellationToken::new();
        // Armed from the start: if this future is dropped mid-serve, its connections end with it.
        let force_token = CancellationToken::new();
        let force = force_token.clone().drop_guard();
        let shared = Arc::new(Shared {
            limits,
            tls,
            stats: stats.clone(),
            name: name.clone(),
            builders: conn::Builders::new(http2_only, &limits),
            refusal,
            max_age,
            make_service,
            graceful: graceful.clone(),
            force: force_token,
            handshake_log: Throttle::new(WARN_EVERY),
        });
        let refusal_log = Throttle::new(WARN_EVERY);
        let accept_error_log = Throttle::new(WARN_EVERY);
        let mut shutdown = std::pin::pin!(shutdown);

        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Per-connection errors (the client reset before we accepted) are not the listener's
                    // problem; running out of file descriptors is, and would spin without a pause.
                    let transient = matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
                    );
                    if !transient {
                        if accept_error_log.allow() {
                            tracing::warn!(listener = %name, error = %err, "accepting a connection failed");
                        }
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // Over the cap: close at once, before any read or handshake work is spent on it.
                drop(tcp);
                let total = stats.count_refused();
                if refusal_log.allow() {
                    tracing::warn!(
                        listener = %name,
                        max_connections = limits.max_connections,
                        refused_total = total,
                        %remote,
                        "refusing connections: the listener is at its connection cap"
                    );
                }
                continue;
            };
            stats.count_accepted();
            let local = match &tcp {
                Stream::Tcp(tcp) => tcp.local_addr().ok().or(listen_addr).unwrap_or(remote),
                Stream::Unix(_) => NO_ADDRESS,
            };
            tokio::spawn(connection(shared.clone(), tcp, remote, local, permit, alive.clone()));
        }
        drop(listener);
        drop(alive);
        Drain { graceful, force, connections, stats }
    }
}

/// Serves `listener` with `limits` (optionally over TLS) until `shutdown` resolves; see [`Server::serve`].
/// Use [`Server`] to name the listener or to read its [`ListenerStats`] while it serves.
pub async fn serve<M, S, B, F>(
    listener: TcpListener,
    limits: ListenerLimits,
    tls: Option<TlsAcceptor>,
    make_service: M,
    shutdown: F,
) -> Result<Drain, LimitsError>
where
    M: Fn(&ConnectionInfo) -> S + Send + Sync + 'static,
    S: ConnectionService<B>,
    B: ResponseBody,
    F: Future<Output = ()> + Send,
{
    let mut server = Server::new(listener, limits)?;
    if let Some(tls) = tls {
        server = server.with_tls(tls);
    }
    Ok(server.serve(make_service, shutdown).await)
}

/// The connections a stopped listener still has open.
#[derive(Debug)]
#[must_use = "dropping a Drain closes its connections at once; call `drain` to let them finish"]
pub struct Drain {
    graceful: CancellationToken,
    force: DropGuard,
    connections: mpsc::Receiver<()>,
    stats: ListenerStats,
}

impl Drain {
    /// Connections still open (including ones in their TLS handshake).
    pub fn open_connections(&self) -> usize {
        self.stats.open_connections()
    }

    /// Asks every connection to finish (HTTP/1.1: close after the response in flight; HTTP/2: GOAWAY, then
    /// close when its streams are done) and waits up to `timeout`; what is still open then is closed.
    /// Returns `true` if every connection finished by itself. Several listeners drain concurrently by joining
    /// their `drain` futures.
    pub async fn drain(self, timeout: Duration) -> bool {
        let Drain { graceful, force, mut connections, stats: _ } = self;
        graceful.cancel();
        // Nothing is ever sent: `recv` returns `None` once every connection task has dropped its sender.
        let clean = tokio::time::timeout(timeout, connections.recv()).await.is_ok();
        // Dropping the guard cancels the force token: every connection task returns at its next poll.
        drop(force);
        let _ = connections.recv().await;
        clean
    }
}

/// What every connection task of one listener shares.
struct Shared<M> {
    limits: ListenerLimits,
    tls: Option<TlsAcceptor>,
    stats: ListenerStats,
    name: Arc<str>,
    builders: conn::Builders,
    refusal: HeaderRefusal,
    max_age: Option<Arc<dyn MaxConnectionAge>>,
    make_service: M,
    graceful: CancellationToken,
    force: CancellationToken,
    handshake_log: Throttle,
}

async fn connection<M, S, B>(
    shared: Arc<Shared<M>>,
    stream: Stream,
    remote: SocketAddr,
    local: SocketAddr,
    permit: OwnedSemaphorePermit,
    alive: mpsc::Sender<()>,
) where
    M: Fn(&ConnectionInfo) -> S + Send + Sync + 'static,
    S: ConnectionService<B>,
    B: ResponseBody,
{
    let _alive = alive;
    let _permit = permit;
    let _open = shared.stats.open_guard();
    let tcp = match stream {
        Stream::Tcp(tcp) => tcp,
        Stream::Unix(unix) => {
            // No TLS and no certificates on a local socket: the file's permissions are the access control.
            let info = ConnectionInfo { remote, local, peer_certificates: None, alpn_protocol: None };
            let ended = Box::pin(serve_io(&shared, unix, &info, None)).await;
            if let Ended::Finished(Err(err)) = ended {
                tracing::debug!(listener = %shared.name, error = %err, "connection ended with an error");
            }
            return;
        }
    };
    // Without NODELAY, small responses wait for the client's delayed ACK: a ~40 ms p99 cliff.
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(listener = %shared.name, %remote, error = %err, "setting TCP_NODELAY failed");
    }
    // Read before the handshake: the certificate the handshake presents is this one or a later renewal.
    let own_bound = shared.max_age.as_ref().and_then(|max_age| max_age.at_accept());
    let ended = match &shared.tls {
        None => {
            let info = ConnectionInfo { remote, local, peer_certificates: None, alpn_protocol: None };
            let deadline = max_age_deadline(&shared, own_bound, &info);
            // Boxed, like the TLS branch below: the task then holds only the state of the branch it runs (a
            // plaintext connection does not carry room for a TLS session), which is most of an idle connection's
            // memory (issue 25, defect 4).
            Box::pin(serve_io(&shared, tcp, &info, deadline)).await
        }
        // Boxed as a whole, handshake included: a plaintext connection's task then has no room for TLS state.
        Some(acceptor) => match Box::pin(serve_tls(&shared, acceptor, tcp, remote, local, own_bound)).await {
            Some(ended) => ended,
            None => return,
        },
    };
    match ended {
        Ended::Finished(Ok(())) | Ended::Forced => {}
        Ended::Finished(Err(err)) => {
            tracing::debug!(listener = %shared.name, %remote, error = %err, "connection ended with an error");
        }
        Ended::TimedOut(expiry @ (Expiry::FirstRequest | Expiry::HeaderRead)) => {
            shared.stats.count_header_read_timeout();
            tracing::debug!(listener = %shared.name, %remote, ?expiry, "closed a connection: request headers timed out");
        }
        Ended::TimedOut(expiry) => {
            tracing::debug!(listener = %shared.name, %remote, ?expiry, "closed a connection that did not close in time");
        }
    }
}

/// The TLS handshake (bounded by the handshake timeout, a graceful or forced close), then the connection served.
/// `None`: the handshake did not complete (counted and logged here).
async fn serve_tls<M, S, B>(
    shared: &Shared<M>,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    own_bound: Option<SystemTime>,
) -> Option<Ended>
where
    M: Fn(&ConnectionInfo) -> S,
    S: ConnectionService<B>,
    B: ResponseBody,
{
    let handshake = tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        result = handshake => result,
        () = shared.graceful.cancelled() => return None,
        () = shared.force.cancelled() => return None,
    };
    let tls = match tls {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            let total = shared.stats.count_handshake_failure();
            if shared.handshake_log.allow() {
                tracing::warn!(
                    listener = %shared.name, %remote, error = %err, failures_total = total,
                    "refused a connection: TLS handshake failed"
                );
            }
            return None;
        }
        Err(_) => {
            shared.stats.count_handshake_timeout();
            tracing::debug!(listener = %shared.name, %remote, "closed a connection: TLS handshake timed out");
            return None;
        }
    };
    let session = tls.get_ref().1;
    let info = ConnectionInfo {
        remote,
        local,
        peer_certificates: session
            .peer_certificates()
            .map(|chain| chain.iter().map(|cert| cert.clone().into_owned()).collect()),
        alpn_protocol: session.alpn_protocol().map(<[u8]>::to_vec),
    };
    let deadline = max_age_deadline(shared, own_bound, &info);
    Some(serve_io(shared, tls, &info, deadline).await)
}

/// The connection's drain moment on tokio's clock: the earlier of the two bounds of [`MaxConnectionAge`], `None`
/// when the listener has no such hook or neither bound is known.
fn max_age_deadline<M>(shared: &Shared<M>, own_bound: Option<SystemTime>, info: &ConnectionInfo) -> Option<Instant> {
    let peer_bound = shared.max_age.as_ref().and_then(|max_age| max_age.after_handshake(info));
    let bound = match (own_bound, peer_bound) {
        (Some(own), Some(peer)) => own.min(peer),
        (bound, None) | (None, bound) => bound?,
    };
    // A bound already past gives a deadline of now: the connection is drained before it serves anything. A bound
    // too far away for the clock (year 9999) is no bound.
    let left = bound.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Instant::now().checked_add(left)
}

async fn serve_io<M, S, B, T>(shared: &Shared<M>, io: T, info: &ConnectionInfo, max_age: Option<Instant>) -> Ended
where
    M: Fn(&ConnectionInfo) -> S,
    S: ConnectionService<B>,
    B: ResponseBody,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The header deadline counts from here: after accept for plaintext, after the handshake for TLS.
    let state = ConnState::new(max_age);
    let service = (shared.make_service)(info);
    conn::drive(
        io,
        state,
        service,
        &shared.builders,
        &shared.limits,
        &shared.graceful,
        &shared.force,
        &shared.refusal,
        || shared.stats.count_idle_close(),
    )
    .await
}
