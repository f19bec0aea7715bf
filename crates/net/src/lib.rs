//! `ward-net`: the one way a ward listener serves HTTP, with hard limits (ARCHITECTURE.md invariant 10).
//!
//! Every ward listener (public HTTP and gRPC APIs, the internal mTLS port, sentry's gRPC and healthz ports,
//! metrics) accepts connections through [`Server`] / [`serve`], so each gets the same protection against slow
//! and idle clients:
//!
//! - `TCP_NODELAY` on every accepted socket;
//! - the TLS handshake within [`ListenerLimits::handshake_timeout`];
//! - the first request (HTTP/1.1 headers, or the HTTP/2 preface and first HEADERS) within
//!   [`ListenerLimits::header_read_timeout`]; for HTTP/1.1 each later request's headers too, counted from their
//!   first byte;
//! - a connection with no request in flight closed after [`ListenerLimits::idle_timeout`] (HTTP/2: GOAWAY); a
//!   request in flight, however slow its body, is never cut by this timer;
//! - at most [`ListenerLimits::max_connections`] open connections; beyond that a new connection is closed at
//!   accept and counted in [`ListenerStats`];
//! - a request whose headers are over [`ListenerLimits::max_header_bytes`] (measured as HTTP/2 measures a header
//!   list, on both protocols: [`request_header_size`]) is answered by the listener's [`HeaderRefusal`] (431)
//!   before any service sees it; hyper itself accepts up to [`ListenerLimits::header_ceiling`];
//! - graceful shutdown: [`Drain`] stops the listener and drains connections within a caller-chosen bound;
//! - optionally a maximum age per connection ([`MaxConnectionAge`], e.g. the earlier expiry of the two certificates
//!   an mTLS connection was opened with): drained then like at shutdown, even with requests in flight (they
//!   finish), and a request that still arrives on it is answered 421 Misdirected Request.
//!
//! HTTP/1.1 and HTTP/2 are detected per connection (hyper-util's `auto` builder). Services are hyper services;
//! tower services (an axum `Router`, a tonic `Routes`) fit through [`TowerToHyperService`].
//!
//! # Wiring a listener
//!
//! ```no_run
//! # async fn run(router: axum::Router, stop: tokio::sync::watch::Receiver<bool>)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use ward_net::{ConnectionInfo, ListenerLimits, Server, TowerToHyperService};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3500").await?;
//! // Limits come from the command line; `Server::new` refuses ones that switch a protection off.
//! let server = Server::new(listener, ListenerLimits::default())?.with_name("public-http");
//! let stats = server.stats(); // read by the metrics exporter
//! let mut stop = stop.clone();
//! let drain = server
//!     .serve(
//!         move |_: &ConnectionInfo| TowerToHyperService::new(router.clone()),
//!         async move {
//!             let _ = stop.changed().await;
//!         },
//!     )
//!     .await;
//! let clean = drain.drain(Duration::from_secs(5)).await;
//! # let _ = (stats, clean);
//! # Ok(())
//! # }
//! ```
//!
//! A factory that is a `fn` returning `impl Service` must say it does not borrow the `ConnectionInfo`
//! (`-> impl Service<..> + use<>`), else it is not general over the argument's lifetime. Services that need the
//! peer's identity take it from the `ConnectionInfo` when built and put it into each request's extensions.
//! HTTP/1.1 upgrades (WebSocket, CONNECT) are not served.
//!
//! This crate does not decide anything about identity or authorization: for TLS it passes the peer's certificate
//! chain (as verified by the caller's `rustls` configuration) in [`ConnectionInfo`]; the caller's service decides.
//! It does not bound request body sizes (that is the body-limit layer's job in each service); for bodies that
//! must keep flowing it offers [`ReadTimeoutBody`], which that layer can apply.

mod body;
mod conn;
mod headers;
mod limits;
mod metrics_listen;
mod server;
mod stats;

pub use body::{BodyReadTimeout, ReadTimeoutBody};
pub use conn::{ConnectionService, ResponseBody};
pub use headers::{FIELD_OVERHEAD, HeaderRefusal, HeadersTooLarge, request_header_size, response_header_size};
pub use hyper_util::service::TowerToHyperService;
pub use limits::{LimitsError, ListenerLimits};
pub use metrics_listen::MetricsListen;
pub use server::{ConnectionInfo, Drain, Listener, MaxConnectionAge, Server, serve};
pub use stats::ListenerStats;
