//! Accept loops: the internal mTLS port (peer identity read from the verified TLS session, then the inbound stack)
//! and the public HTTP API.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::inbound::{self, InboundHandles};
use crate::runtime::StartError;
use crate::transport::Mtls;

/// The internal port's TLS acceptor: any peer must present a certificate chaining to the trust bundle with a SPIFFE
/// ID in this trust domain; HTTP/2 only.
pub(crate) fn internal_acceptor(mtls: &Mtls) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    let config = ward_identity::server_config(
        mtls.svid.clone(),
        Some((mtls.bundle.clone(), ward_identity::Authorizer::MemberOf(mtls.trust_domain.clone()), mtls.skew)),
        &[b"h2"],
    )
    .map_err(|err| StartError::AppChannel(format!("internal TLS configuration: {err}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves the internal port until `stop` flips; `graceful` tracks connections for draining at shutdown.
pub(crate) async fn serve_internal(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handles: InboundHandles,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stack = inbound::stack(&handles);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((tcp, remote)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let stack = stack.clone();
        let mode = handles.accept.clone();
        let tls = tls.clone();
        let graceful = graceful.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => {
                            tracing::warn!(%remote, error = %err, "refused an internal connection: TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let peer = ward_identity::peer_spiffe_id(tls.get_ref().1.peer_certificates()).map(Arc::new);
                    let service = inbound::connection_service(stack, mode, peer);
                    let conn = builder.serve_connection(TokioIo::new(tls), service).into_owned();
                    let _ = graceful.watch(conn).await;
                }
                None => {
                    let service = inbound::connection_service(stack, mode, None);
                    let conn = builder.serve_connection(TokioIo::new(tcp), service).into_owned();
                    let _ = graceful.watch(conn).await;
                }
            }
        });
    }
}

/// Serves the public HTTP API until `stop` flips.
pub(crate) async fn serve_public(
    listener: TcpListener,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use axum::serve::ListenerExt;
    // Without NODELAY, small responses wait for delayed ACKs (a ~40 ms p99 cliff).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}
