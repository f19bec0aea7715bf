//! How sidecars reach each other: HTTP/2 over mutual TLS with the SVID from sentry (production and the default
//! of `ward run`), or plaintext h2c in development mode with a short-lived identity marker.
//!
//! The outbound side keeps one pooled HTTP/2 client per callee identity. Each client's TLS config accepts only
//! that callee's SPIFFE ID, so a server presenting any other identity fails the handshake; connections are reused,
//! so there is no handshake per request. This module does not decide access (the callee's ACL does).
//!
//! A pooled connection lives no longer than the two leaves it was opened with (issue 24, defect 4): every handshake
//! lowers its client's drain moment to the earlier `not_after` of this sidecar's SVID and the callee's leaf, and
//! from [`DRAIN_MARGIN`] before that moment the next call gets a fresh client (a new pool), so new calls handshake
//! again with the renewed certificates while calls in flight finish on the old connection, which closes when its
//! last stream ends. The callee drains its side at the same moment (`listeners::CertificateAge`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use ward_identity::{Authorizer, SpiffeId, SvidResolver, TrustBundleHandle, TrustDomain};

/// Header carrying the caller's claimed identity in development mode (plaintext). Accepted only by sidecars that
/// are themselves in development mode; production mode rejects it.
pub const DEV_IDENTITY_HEADER: &str = "ward-dev-identity";
/// The most the development marker adds to a request's headers (`ward-dev-identity` + a SPIFFE ID of at most 2048
/// bytes + `;exp=` and a number + 32).
const DEV_MARKER_HEADER_BYTES: usize = DEV_IDENTITY_HEADER.len() + 2048 + 32 + 32;
/// How long a development marker stays valid.
const DEV_MARKER_TTL_SECS: u64 = 30;
/// How long before a pooled connection's certificates expire new calls stop using it: the callee refuses requests
/// that arrive after that moment (421), so the caller moves on a little earlier than the callee's clock says.
pub(crate) const DRAIN_MARGIN: Duration = Duration::from_millis(500);
/// `drain_at` of a client none of whose connections has a known bound.
const NO_BOUND: u64 = u64::MAX;

/// The mTLS material a sidecar uses.
#[derive(Clone, Debug)]
pub struct Mtls {
    pub svid: Arc<SvidResolver>,
    pub bundle: TrustBundleHandle,
    pub trust_domain: TrustDomain,
    pub skew: Duration,
}

/// Transport between sidecars.
#[derive(Clone, Debug)]
pub enum Transport {
    Mtls(Mtls),
    /// Development mode: no certificates; outbound calls carry a dev identity marker.
    Plaintext,
}

type PooledClient = Client<MtlsConnector, Body>;

/// One callee's pooled client and the moment its connections must stop taking new calls.
struct CalleeClient {
    client: PooledClient,
    /// Milliseconds since the Unix epoch: the earliest certificate expiry of the connections this client opened
    /// ([`NO_BOUND`] before the first handshake). Lowered by [`MtlsConnector`] after each handshake.
    drain_at: Arc<AtomicU64>,
}

/// Outbound HTTP/2 clients, one per callee identity.
pub struct Outbound {
    transport: Transport,
    by_callee: Mutex<HashMap<SpiffeId, CalleeClient>>,
    plaintext: Client<HttpConnector, Body>,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` for answers (`ListenerLimits::header_ceiling`): the callee's
    /// sidecar never relays an answer with more than the limit, and an answer between the limit and this ceiling
    /// fails its own stream only, never the shared connection.
    max_answer_header_list: u32,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("transport", &self.transport).finish_non_exhaustive()
    }
}

/// What `Outbound::send` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Request(#[from] hyper_util::client::legacy::Error),
}

impl Outbound {
    /// `max_answer_header_bytes`: the largest answer header list accepted (see [`Outbound`]).
    pub fn new(transport: Transport, max_answer_header_bytes: usize) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let max_answer_header_list = u32::try_from(max_answer_header_bytes).unwrap_or(u32::MAX);
        let plaintext = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_max_header_list_size(max_answer_header_list)
            .build(http);
        Self { transport, by_callee: Mutex::new(HashMap::new()), plaintext, max_answer_header_list }
    }

    /// The most [`Self::send`] adds to a request's headers, so a check made before sending holds for what is sent.
    pub(crate) fn added_header_bytes(&self) -> usize {
        match self.transport {
            Transport::Plaintext => DEV_MARKER_HEADER_BYTES,
            Transport::Mtls(_) => 0,
        }
    }

    /// Sends `request` (whose URI names the callee sidecar's internal address) to the sidecar of `callee`.
    pub async fn send(
        &self,
        callee: &SpiffeId,
        caller: &SpiffeId,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        match &self.transport {
            Transport::Plaintext => {
                let expires =
                    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() + DEV_MARKER_TTL_SECS;
                if let Ok(value) = http::HeaderValue::from_str(&format!("{caller};exp={expires}")) {
                    request.headers_mut().insert(DEV_IDENTITY_HEADER, value);
                }
                Ok(self.plaintext.request(request).await?)
            }
            Transport::Mtls(mtls) => {
                let client = self.client_for(callee, mtls)?;
                Ok(client.request(request).await?)
            }
        }
    }

    fn client_for(&self, callee: &SpiffeId, mtls: &Mtls) -> Result<PooledClient, SendError> {
        let mut clients = self.by_callee.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = clients.get(callee) {
            if usable_at(entry.drain_at.load(Ordering::Acquire), SystemTime::now()) {
                return Ok(entry.client.clone());
            }
            // Replaced, not closed: calls in flight keep the old pool (and its connection) until they finish.
            tracing::debug!(%callee, "the pooled connection's certificates expire; new calls use a new connection");
        }
        let config = ward_identity::client_config(
            mtls.svid.clone(),
            mtls.bundle.clone(),
            Authorizer::Exact(callee.clone()),
            mtls.skew,
            &[b"h2"],
        )?;
        let drain_at = Arc::new(AtomicU64::new(NO_BOUND));
        let connector = MtlsConnector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            svid: mtls.svid.clone(),
            drain_at: drain_at.clone(),
        };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_max_header_list_size(self.max_answer_header_list)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        clients.insert(callee.clone(), CalleeClient { client: client.clone(), drain_at });
        Ok(client)
    }
}

/// Whether a client whose connections must stop taking calls at `drain_at` (ms since the epoch) may take one at
/// `now`: not within [`DRAIN_MARGIN`] of that moment.
fn usable_at(drain_at: u64, now: SystemTime) -> bool {
    drain_at == NO_BOUND || epoch_millis(now + DRAIN_MARGIN) < drain_at
}

fn epoch_millis(at: SystemTime) -> u64 {
    u64::try_from(at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(NO_BOUND - 1)
}

/// Parses and checks a development identity marker. `None` when missing, malformed or expired.
pub fn parse_dev_marker(value: &str, now: SystemTime) -> Option<SpiffeId> {
    let (id, exp) = value.split_once(";exp=")?;
    let exp: u64 = exp.parse().ok()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    if now > exp || exp > now + DEV_MARKER_TTL_SECS + 5 {
        return None;
    }
    SpiffeId::parse(id).ok()
}

/// Connects TCP, then TLS with a config that authorizes exactly one callee, and lowers its client's drain moment to
/// the certificates of the new connection.
#[derive(Clone)]
pub struct MtlsConnector {
    tls: tokio_rustls::TlsConnector,
    svid: Arc<SvidResolver>,
    drain_at: Arc<AtomicU64>,
}

impl tower::Service<http::Uri> for MtlsConnector {
    type Response = MtlsStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<MtlsStream, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        let (svid, drain_at) = (self.svid.clone(), self.drain_at.clone());
        Box::pin(async move {
            let authority = uri.authority().ok_or_else(|| std::io::Error::other("URI without authority"))?;
            let addr: SocketAddr = authority
                .as_str()
                .parse()
                .map_err(|_| std::io::Error::other(format!("not a socket address: {authority}")))?;
            let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
            tcp.set_nodelay(true)?;
            // SPIFFE identities are URIs, not DNS names; the verifier ignores this name.
            let name = ServerName::try_from("ward-sidecar").map_err(std::io::Error::other)?;
            // Read before the handshake: the handshake presents this SVID or a later renewal, never an earlier one.
            let own = svid.current().map(|svid| svid.not_after());
            let stream = tls.connect(name, tcp).await?;
            let peer = ward_identity::peer_not_after(stream.get_ref().1.peer_certificates());
            if let Some(bound) = own.into_iter().chain(peer).min() {
                drain_at.fetch_min(epoch_millis(bound), Ordering::AcqRel);
            }
            Ok(MtlsStream(TokioIo::new(stream)))
        })
    }
}

/// A client TLS stream that hyper's pool can use (it needs the `Connection` trait to learn that h2 was
/// negotiated).
pub struct MtlsStream(TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>);

impl Connection for MtlsStream {
    fn connected(&self) -> Connected {
        Connected::new().negotiated_h2()
    }
}

impl hyper::rt::Read for MtlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MtlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_takes_no_new_call_from_just_before_its_certificates_expire() {
        let now = SystemTime::now();
        assert!(usable_at(NO_BOUND, now), "no handshake yet: no bound");
        assert!(usable_at(epoch_millis(now + Duration::from_secs(60)), now));
        assert!(!usable_at(epoch_millis(now + DRAIN_MARGIN / 2), now), "within the margin");
        assert!(!usable_at(epoch_millis(now - Duration::from_secs(1)), now), "expired");
    }

    #[test]
    fn dev_markers_expire_and_must_parse() {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let id = "spiffe://public/ns/default/caller";
        assert!(parse_dev_marker(&format!("{id};exp={}", secs + 10), now).is_some());
        assert!(parse_dev_marker(&format!("{id};exp={}", secs - 1), now).is_none(), "expired");
        assert!(parse_dev_marker(&format!("{id};exp={}", secs + 3600), now).is_none(), "too long-lived");
        assert!(parse_dev_marker(id, now).is_none(), "no expiry");
        assert!(parse_dev_marker(&format!("not-an-id;exp={}", secs + 10), now).is_none());
    }
}
