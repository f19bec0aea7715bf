//! Capabilities per route (issue 15, layer three), after access control: when a `spec.ward.capabilities` route
//! applies to the normalised operation, the verified caller must hold every capability it requires. One audit event
//! per decision (`AUTH_INTERNAL_ALLOW` with the capabilities used, `AUTH_INTERNAL_DENY` with `missing capability
//! <name>` and the route); a request no route applies to is left to the ACL's decision and adds no event.
//!
//! Does not own: the matching rules (`ward_policy::capabilities`), the provenance token (which carries the
//! capabilities used, read from [`UsedCapabilities`]), or what a denial looks like on the wire (`error.rs`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use ward_policy::{AuditEvent, Caller, Capabilities, CapabilityDecision, CapabilityRequest, PreparedInvocation};

use super::InboundRequest;
use super::accept::CallerIdentity;
use super::audit_barrier::PendingAudit;
use super::check::Check;
use crate::audit::AuditSink;
use crate::error::InboundError;

/// The capabilities the applying routes required and the caller holds, for the provenance token's `cap` claim.
/// Absent when no route applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UsedCapabilities(pub Vec<String>);

#[derive(Clone)]
pub(crate) struct CapabilityCheck {
    /// The compiled routes and grants; the configuration watcher swaps them like the ACL.
    pub(crate) capabilities: Arc<ArcSwap<Capabilities>>,
    pub(crate) audit: AuditSink,
    pub(crate) app_id: Arc<str>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl Check for CapabilityCheck {
    fn check(&self, request: &mut InboundRequest) -> Result<(), InboundError> {
        let capabilities = self.capabilities.load();
        if !capabilities.is_configured() {
            return Ok(());
        }
        let extensions = request.extensions();
        let caller = extensions.get::<CallerIdentity>().ok_or(InboundError::Unverified)?;
        let call = extensions.get::<PreparedInvocation>().ok_or(InboundError::UnknownEndpoint)?;
        // Only a verified caller holds grants (a development marker holds nothing: invariant 9).
        let dapr_caller = caller.for_policy(extensions).and_then(|id| id.dapr_identity().ok());
        let caller_ref =
            dapr_caller.map(|d| Caller { trust_domain: d.trust_domain, namespace: d.namespace, app_id: d.app_id });
        let req = CapabilityRequest {
            caller: caller_ref,
            operation: call.operation.as_str(),
            verb: call.verb,
            app_protocol: call.app_protocol,
        };
        let decision = capabilities.decide(&req);
        let Some(event) = AuditEvent::for_capability(crate::runtime::now_rfc3339(), &self.app_id, &req, &decision)
        else {
            return Ok(());
        };
        match decision {
            CapabilityDecision::NoRoute => Ok(()),
            CapabilityDecision::Allowed { used, .. } => {
                self.metrics.authz("capability", true, "capabilities held");
                let used = UsedCapabilities(used.iter().map(|c| (*c).to_owned()).collect());
                // Audit, then forward: the barrier before the app waits for this line as well as the ACL's.
                let written = self.audit.record_written(event).map_err(|_| InboundError::AuditUnavailable)?;
                let pending = request.extensions().get::<PendingAudit>().ok_or(InboundError::AuditUnavailable)?;
                if !pending.add(written) {
                    return Err(InboundError::AuditUnavailable);
                }
                request.extensions_mut().insert(used);
                Ok(())
            }
            CapabilityDecision::Missing { capability, .. } => {
                self.metrics.authz("capability", false, "missing capability");
                self.audit.record(event).map_err(|_| InboundError::AuditUnavailable)?;
                Err(InboundError::CapabilityMissing { capability: capability.to_owned() })
            }
        }
    }
}
