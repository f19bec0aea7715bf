//! Identity headers for the app: every copy the caller sent of `dapr-caller-*`, `dapr-callee-app-id` and
//! `dapr-api-token` is removed, then the sidecar sets them from the verified identity and its own `APP_API_TOKEN`
//! (CVE-2024-35223: the app must never see a token that came from elsewhere).

use std::sync::Arc;

use http::HeaderValue;

use super::InboundRequest;
use super::accept::CallerIdentity;
use super::check::Check;
use crate::error::InboundError;
use crate::headers;

#[derive(Clone)]
pub(crate) struct IdentityHeaders {
    pub(crate) app_id: Arc<str>,
    pub(crate) app_token: ward_gate::AppToken,
}

impl Check for IdentityHeaders {
    fn check(&self, request: &mut InboundRequest) -> Result<(), InboundError> {
        let caller = request.extensions().get::<CallerIdentity>().and_then(|c| c.0.clone());
        let headers = request.headers_mut();
        headers::strip_untrusted(headers);
        if let Some(d) = caller.as_ref().and_then(|id| id.dapr_identity().ok()) {
            if let Ok(v) = HeaderValue::from_str(d.app_id) {
                headers.insert(headers::name::CALLER_APP_ID, v);
            }
            if let Ok(v) = HeaderValue::from_str(d.namespace) {
                headers.insert(headers::name::CALLER_NAMESPACE, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&self.app_id) {
            headers.insert(headers::name::CALLEE_APP_ID, v);
        }
        self.app_token.apply(headers);
        Ok(())
    }
}
