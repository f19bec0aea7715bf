//! Accept: who is calling, decided once per connection (mTLS) or per request (development markers), and put into
//! the request extensions as [`CallerIdentity`]. Nothing after this layer reads identity from anywhere else, and
//! whatever a request carried in its own extensions is overwritten here.
//!
//! Does not decide anything: an unverified caller travels on as `None` and later layers refuse it.

use std::sync::Arc;
use std::time::SystemTime;

use ward_identity::SpiffeId;

use crate::transport::{DEV_IDENTITY_HEADER, parse_dev_marker};

/// The caller's identity as this sidecar verified it: from the peer certificate of the mTLS session, or in
/// development mode from a fresh, unsigned marker. `None`: not verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallerIdentity(pub Option<Arc<SpiffeId>>);

/// Whether [`CallerIdentity`] was verified (an mTLS peer certificate). A development marker names a caller nobody
/// verified: it is shown to the app (`dapr-caller-app-id`, a `dev:` provenance subject) but never matches an
/// `accessControl` app policy or a capability grant (invariant 9); the global `defaultAction` decides instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verified(pub bool);

impl CallerIdentity {
    /// The caller policies may match: the identity only if it was verified.
    pub(crate) fn for_policy<'a>(&'a self, extensions: &http::Extensions) -> Option<&'a Arc<SpiffeId>> {
        match extensions.get::<Verified>() {
            Some(Verified(true)) => self.0.as_ref(),
            _ => None,
        }
    }
}

/// How callers prove who they are on this sidecar's internal port.
#[derive(Debug, Clone)]
pub(crate) enum AcceptMode {
    /// The identity is the verified peer certificate's SPIFFE ID (the connection's, fixed at handshake).
    Mtls,
    /// Development: an unsigned, short-lived `ward-dev-identity` marker is believed. Never in production.
    DevelopmentMarkers,
    /// Plaintext peers whose identity cannot be verified (a production sidecar without mTLS never starts; this is
    /// the defensive answer if one ever did).
    Unverified,
}

/// Sets [`CallerIdentity`] on a request from the connection's verified peer (if any) and the accept mode, and
/// removes any development marker so it never reaches the app.
pub(crate) fn identify(mode: &AcceptMode, peer: Option<&Arc<SpiffeId>>, request: &mut http::Request<axum::body::Body>) {
    let marker = request.headers_mut().remove(DEV_IDENTITY_HEADER);
    let caller = match mode {
        AcceptMode::Mtls => peer.cloned(),
        AcceptMode::DevelopmentMarkers => marker
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_dev_marker(v, SystemTime::now()))
            .map(Arc::new),
        AcceptMode::Unverified => None,
    };
    request.extensions_mut().insert(Verified(matches!(mode, AcceptMode::Mtls) && caller.is_some()));
    request.extensions_mut().insert(CallerIdentity(caller));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with_marker(id: &str) -> http::Request<axum::body::Body> {
        let exp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 10;
        let mut request = http::Request::new(axum::body::Body::empty());
        request.headers_mut().insert(DEV_IDENTITY_HEADER, format!("{id};exp={exp}").parse().unwrap());
        request
    }

    #[test]
    fn mtls_ignores_markers_and_uses_the_certificate() {
        let cert = Arc::new(SpiffeId::parse("spiffe://public/ns/default/checkout").unwrap());
        let mut request = request_with_marker("spiffe://public/ns/default/admin");
        request.extensions_mut().insert(CallerIdentity(Some(Arc::new(SpiffeId::parse("spiffe://x/ns/y/z").unwrap()))));
        identify(&AcceptMode::Mtls, Some(&cert), &mut request);
        assert_eq!(request.extensions().get::<CallerIdentity>(), Some(&CallerIdentity(Some(cert))));
        assert!(request.headers().get(DEV_IDENTITY_HEADER).is_none(), "the marker never reaches the app");
    }

    #[test]
    fn markers_count_only_in_development() {
        let mut request = request_with_marker("spiffe://public/ns/default/checkout");
        identify(&AcceptMode::Unverified, None, &mut request);
        assert_eq!(request.extensions().get::<CallerIdentity>(), Some(&CallerIdentity(None)));

        let mut request = request_with_marker("spiffe://public/ns/default/checkout");
        identify(&AcceptMode::DevelopmentMarkers, None, &mut request);
        let caller = request.extensions().get::<CallerIdentity>().and_then(|c| c.0.clone());
        assert_eq!(caller.map(|c| c.to_string()).as_deref(), Some("spiffe://public/ns/default/checkout"));
    }
}
