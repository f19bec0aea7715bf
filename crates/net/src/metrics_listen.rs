//! Where a `/metrics` endpoint listens, shared by the sidecar and sentry (both default to daprd's 9090).
//!
//! Several sidecars on one host cannot all have the default port. A port the operator *gave* must be free (the
//! start fails otherwise); the default being taken costs only the metrics, with one loud warning, as the process
//! still does its job.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// `--metrics-port` / `--metrics-listen-address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen {
    pub address: SocketAddr,
    /// The port was given on the command line (not the default).
    pub explicit: bool,
}

impl MetricsListen {
    /// Binds the listener: `Ok(None)` when the default port is taken (warned), `Err` when a given one is.
    pub async fn bind(self) -> std::io::Result<Option<TcpListener>> {
        match TcpListener::bind(self.address).await {
            Ok(listener) => Ok(Some(listener)),
            Err(err) if self.explicit => Err(err),
            Err(err) => {
                tracing::warn!(
                    address = %self.address,
                    error = %err,
                    "METRICS NOT SERVED: the default metrics port is taken (another process on this host?); give \
                     --metrics-port (0 picks a free one)"
                );
                Ok(None)
            }
        }
    }
}
