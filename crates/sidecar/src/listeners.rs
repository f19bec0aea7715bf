//! The sidecar's listeners, all served through `ward-net` with the same limits (handshake, header-read and idle
//! timeouts, a connection cap): the internal mTLS port (the peer identity is read from the verified TLS session
//! when the connection is accepted, then the inbound stack), the public HTTP API and the public gRPC API.
//!
//! Each listener task stops accepting when `stop` flips, then drains its own connections within `drain`. A connection
//! on the internal port is also drained when the earlier of the two certificates it was opened with expires
//! ([`CertificateAge`]).
//!
//! One header limit (`ListenerLimits::max_header_bytes`) applies on all three, before anything else runs; each
//! listener answers a request over it in its own protocol (`error::header_refusals`). The internal port also
//! refuses to relay an app answer whose headers are over the limit, so neither direction of the connection the
//! sidecars share ever carries a header block the other side would end the connection for.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use ward_net::{ConnectionInfo, ListenerLimits, Server, TowerToHyperService};

use crate::error::{InboundError, header_refusals};
use crate::inbound::{self, InboundHandles};
use crate::runtime::StartError;
use crate::transport::Mtls;

/// The internal port's TLS: the acceptor, and the SVID it presents (which bounds each connection's age).
pub(crate) struct InternalTls {
    acceptor: tokio_rustls::TlsAcceptor,
    svid: Arc<ward_identity::SvidResolver>,
}

/// The internal port's TLS acceptor: any peer must present a certificate chaining to the trust bundle with a SPIFFE
/// ID in this trust domain; HTTP/2 only.
pub(crate) fn internal_acceptor(mtls: &Mtls) -> Result<InternalTls, StartError> {
    let config = ward_identity::server_config(
        mtls.svid.clone(),
        Some((mtls.bundle.clone(), ward_identity::Authorizer::MemberOf(mtls.trust_domain.clone()), mtls.skew)),
        &[b"h2"],
    )
    .map_err(StartError::InternalTls)?;
    Ok(InternalTls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), svid: mtls.svid.clone() })
}

/// A connection on the internal port lives no longer than the two leaves it was opened with (issue 24, defect 4):
/// this sidecar's own SVID as it was when the connection was accepted, and the caller's verified leaf. At the
/// earlier `not_after` the connection is drained (GOAWAY; calls in flight finish), so a caller must handshake
/// again, which needs a valid certificate on both sides.
pub(crate) struct CertificateAge {
    pub(crate) svid: Arc<ward_identity::SvidResolver>,
}

impl ward_net::MaxConnectionAge for CertificateAge {
    fn at_accept(&self) -> Option<std::time::SystemTime> {
        self.svid.current().map(|svid| svid.not_after())
    }

    fn after_handshake(&self, info: &ConnectionInfo) -> Option<std::time::SystemTime> {
        ward_identity::peer_not_after(info.peer_certificates.as_deref())
    }
}

/// What every listener task needs besides its service.
#[derive(Clone)]
pub(crate) struct ListenerControl {
    pub(crate) limits: ListenerLimits,
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
    pub(crate) drain: Duration,
}

impl ListenerControl {
    fn server(
        &self,
        listener: impl Into<ward_net::Listener>,
        name: &'static str,
        refusal: ward_net::HeaderRefusal,
    ) -> Option<Server> {
        match Server::new(listener, self.limits) {
            Ok(server) => Some(server.with_name(name).with_header_refusal(refusal)),
            // Limits are validated at start (`StartError::Limits`), so this is a wiring bug; refuse to serve.
            Err(err) => {
                tracing::error!(listener = name, error = %err, "invalid listener limits; not serving");
                None
            }
        }
    }

    async fn run<M, S, B>(self, server: Server, make_service: M)
    where
        M: Fn(&ConnectionInfo) -> S + Send + Sync + 'static,
        S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send + From<bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut stop = self.stop;
        let drain = server
            .serve(make_service, async move {
                let _ = stop.changed().await;
            })
            .await;
        if !drain.drain(self.drain).await {
            tracing::warn!(timeout = ?self.drain, "in-flight requests did not finish in time; closed them");
        }
    }
}

/// Serves the internal port: the peer's SPIFFE ID comes from the verified certificate of each connection.
pub(crate) async fn serve_internal(
    listener: TcpListener,
    tls: Option<InternalTls>,
    handles: InboundHandles,
    control: ListenerControl,
) {
    let Some(mut server) = control.server(listener, "internal", header_refusals::internal()) else { return };
    if let Some(InternalTls { acceptor, svid }) = tls {
        server = server.with_tls(acceptor).with_http2_only().with_max_age(Arc::new(CertificateAge { svid }));
    }
    let stack = inbound::stack(&handles);
    let mode = handles.accept.clone();
    let drain_budget = handles.max_body_size;
    let max_header_bytes = control.limits.max_header_bytes;
    control
        .run(server, move |info: &ConnectionInfo| {
            let peer = ward_identity::peer_spiffe_id(info.peer_certificates.as_deref()).map(Arc::new);
            let service = inbound::connection_service(stack.clone(), mode.clone(), peer, drain_budget);
            hyper::service::service_fn(move |request| {
                let answer = hyper::service::Service::call(&service, request);
                async move { answer.await.map(|response| bounded_answer_headers(response, max_header_bytes)) }
            })
        })
        .await;
}

/// An app answer whose headers are over the limit is replaced by a refusal: relayed, it would cost the caller's
/// sidecar the connection it shares with other calls (or be refused there anyway).
fn bounded_answer_headers(
    response: http::Response<axum::body::Body>,
    limit: usize,
) -> http::Response<axum::body::Body> {
    let size = ward_net::response_header_size(response.headers());
    if size <= limit {
        return response;
    }
    tracing::warn!(size, limit, "refused to relay an app answer whose headers are over the limit");
    InboundError::AppAnswerHeadersTooLarge { size, limit }.to_refusal().into_response()
}

/// A public API with its layers, taking requests with bodies of type `B`: it answers every request (a refusal is an
/// answer, so the error type is `Infallible`) and is cloned for each connection.
pub(crate) trait ApiService<B>:
    tower::Service<http::Request<B>, Response = Answer, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

/// What every public API answers with.
type Answer = http::Response<axum::body::Body>;

impl<B, S> ApiService<B> for S where
    S: tower::Service<http::Request<B>, Response = Answer, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves the public HTTP API. A request body the API does not read to its end (a refusal) is drained up to
/// `drain_budget`, so the app's connection stays usable instead of being cut mid-upload.
pub(crate) async fn serve_public(
    listener: impl Into<ward_net::Listener>,
    router: impl ApiService<axum::body::Body>,
    drain_budget: u64,
    control: ListenerControl,
) {
    let Some(server) = control.server(listener, "public-http", header_refusals::public_http()) else { return };
    let service = tower::ServiceBuilder::new()
        .map_request(move |request: http::Request<hyper::body::Incoming>| {
            request.map(|body| axum::body::Body::new(crate::body::DrainOnDrop::new(body, drain_budget)))
        })
        .service(router);
    control.run(server, move |_: &ConnectionInfo| TowerToHyperService::new(service.clone())).await;
}

/// Serves the public gRPC API (HTTP/2 only): `service` is the Dapr API with its layers and the proxy fallback.
pub(crate) async fn serve_grpc(
    listener: impl Into<ward_net::Listener>,
    service: impl ApiService<hyper::body::Incoming>,
    control: ListenerControl,
) {
    let Some(server) = control.server(listener, "public-grpc", header_refusals::public_grpc()) else { return };
    let server = server.with_http2_only();
    control.run(server, move |_: &ConnectionInfo| TowerToHyperService::new(service.clone())).await;
}
