//! The provenance token (issue 15, layer four): right after the identity headers (which removed every
//! `ward-provenance` the caller sent), this sidecar signs one token for this request and sets it as the
//! `ward-provenance` header, which is also the gRPC metadata of the proxied call (HTTP/2 headers) and is copied into
//! the `OnInvoke` metadata by the app channel. The app verifies it against its sidecar's JWKS; a request sent
//! straight to the app's port has none.
//!
//! Claims come only from what earlier layers established: `sub` from the caller identity (`dev:<app-id>` for a
//! development marker), `htm`/`htu` from the normalised method the ACL judged, `cap` from the capability check. A
//! token that cannot be signed refuses the request (fail closed): the app is not called without one.

use std::sync::Arc;

use http::HeaderValue;
use ward_policy::{Operation, PreparedInvocation};

use super::InboundRequest;
use super::accept::CallerIdentity;
use super::capability::UsedCapabilities;
use super::check::Check;
use crate::error::InboundError;
use crate::headers;
use crate::provenance::{ProvenanceIssuer, TokenRequest};

#[derive(Clone)]
pub(crate) struct ProvenanceToken {
    /// `None`: provenance is off (`spec.ward.provenance.enabled: false`, or development without opting in).
    pub(crate) issuer: Option<Arc<ProvenanceIssuer>>,
}

impl Check for ProvenanceToken {
    fn check(&self, request: &mut InboundRequest) -> Result<(), InboundError> {
        let Some(issuer) = &self.issuer else { return Ok(()) };
        let extensions = request.extensions();
        let call = extensions.get::<PreparedInvocation>().ok_or(InboundError::UnknownEndpoint)?;
        let caller = extensions.get::<CallerIdentity>().ok_or(InboundError::Unverified)?;
        let subject = if issuer.is_development() {
            // Development: whatever the marker named is unverified, and the token says so.
            let app_id = caller.0.as_ref().and_then(|id| id.dapr_identity().ok()).map(|d| d.app_id.to_owned());
            format!("dev:{}", app_id.unwrap_or_default())
        } else {
            // A production token vouches only for a caller this sidecar verified.
            caller.for_policy(extensions).ok_or(InboundError::Unverified)?.to_string()
        };
        let (method, path) = match &call.operation {
            Operation::Http(m) => (call.verb.map_or("POST", |v| v.as_str()), format!("/{}", m.as_str())),
            Operation::Grpc(m) => ("POST", m.as_str().to_owned()),
        };
        let capabilities = extensions.get::<UsedCapabilities>().map(|u| u.0.clone()).unwrap_or_default();
        let token = issuer.mint(TokenRequest { subject, capabilities, method, path }).map_err(|err| {
            tracing::error!(error = %err, "provenance token not signed; request refused");
            InboundError::ProvenanceUnavailable
        })?;
        let value = HeaderValue::from_str(&token).map_err(|_| InboundError::ProvenanceUnavailable)?;
        // `insert` replaces every copy: only this sidecar's token reaches the app.
        request.headers_mut().insert(headers::name::PROVENANCE, value);
        Ok(())
    }
}
