//! Access control: Dapr's `accessControl`, judged on the verified caller and the normalised operation, with one
//! audit event per decision. The audit record is part of the decision: if it cannot be recorded, the call is
//! refused (fail closed).

use std::sync::Arc;

use arc_swap::ArcSwap;
use ward_policy::{AccessControl, AclDecision, AclRequest, AuditEvent, Caller, PreparedInvocation};

use crate::metrics::AclScope;

use super::InboundRequest;
use super::accept::CallerIdentity;
use super::check::Check;

use crate::audit::AuditSink;
use crate::error::InboundError;

#[derive(Clone)]
pub(crate) struct AccessControlCheck {
    /// The compiled policy; the configuration watcher swaps it, a request reads the one current when it arrives.
    pub(crate) acl: Arc<ArcSwap<AccessControl>>,
    pub(crate) audit: AuditSink,
    /// This sidecar's app id (the callee in audit events).
    pub(crate) app_id: Arc<str>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// The paths the app's pub/sub subscriptions deliver to (set by the subscriber task).
    pub(crate) subscription_routes: Arc<ArcSwap<std::collections::HashSet<String>>>,
}

/// Why a call to a subscription route is refused when only a default allowed it.
const SUBSCRIPTION_ROUTE: &str = "the operation is a pub/sub subscription route: service invocation reaches it only \
                                  when an accessControl operation names it (Dapr issue 8353)";

impl AccessControlCheck {
    /// Dapr #8353: a route the sidecar delivers events to is the app's pub/sub input, and must not become an open
    /// invocation endpoint just because no policy (or a default) allows everything. Only an explicit
    /// `operations` entry lets an invocation reach it.
    fn guard_subscription_route(&self, call: &PreparedInvocation, decision: &mut AclDecision) {
        let ward_policy::Operation::Http(method) = &call.operation else { return };
        if !decision.allowed || matches!(decision.rule, ward_policy::MatchedRule::Operation { .. }) {
            return;
        }
        let routes = self.subscription_routes.load();
        if !routes.is_empty() && routes.contains(&method.to_uri_path()) {
            decision.allowed = false;
            decision.reason = SUBSCRIPTION_ROUTE;
        }
    }

    /// Dapr's ACL counters: the caller's labels, the matched operation (never the requested path), the verb.
    fn count(&self, decision: &AclDecision, caller: Option<Caller<'_>>, verb: Option<ward_policy::HttpVerb>) {
        use ward_policy::MatchedRule;
        let (scope, operation) = match decision.rule {
            MatchedRule::Operation { policy, operation, .. } => {
                (AclScope::App, format!("policies[{policy}].operations[{operation}]"))
            }
            MatchedRule::AppDefault { .. } => (AclScope::App, "_other".to_owned()),
            MatchedRule::NoPolicy | MatchedRule::GlobalDefault(_) => (AclScope::Global, "_other".to_owned()),
        };
        let who = caller.map_or(("_unverified", "", ""), |c| (c.app_id, c.trust_domain, c.namespace));
        let verb = verb.map_or("NONE", |v| v.as_str());
        self.metrics.acl(scope, decision.allowed, who, &operation, verb, decision.reason);
    }
}

impl Check for AccessControlCheck {
    fn check(&self, request: &mut InboundRequest) -> Result<(), InboundError> {
        let extensions = request.extensions();
        // Both are set by earlier layers of the same stack; their absence is a wiring bug, refused all the same.
        let caller = extensions.get::<CallerIdentity>().ok_or(InboundError::Unverified)?;
        let call = extensions.get::<PreparedInvocation>().ok_or(InboundError::UnknownEndpoint)?;
        // Only a verified caller can match an app policy (a development marker cannot: invariant 9).
        let dapr_caller = caller.for_policy(extensions).and_then(|id| id.dapr_identity().ok());
        let caller_ref =
            dapr_caller.map(|d| Caller { trust_domain: d.trust_domain, namespace: d.namespace, app_id: d.app_id });
        // The second half of `ward_policy::decide_invocation` (the first ran in the normalisation layer).
        let mut decision = call.decide(&self.acl.load(), caller_ref);
        self.guard_subscription_route(call, &mut decision);
        let acl_request = AclRequest {
            caller: caller_ref,
            operation: call.operation.as_str(),
            verb: call.verb,
            app_protocol: call.app_protocol,
        };
        let event = AuditEvent::for_acl(crate::runtime::now_rfc3339(), &self.app_id, &acl_request, &decision);
        self.count(&decision, caller_ref, call.verb);
        if decision.allowed {
            // Audit, then forward: the barrier before the app channel waits for this line to be written.
            let written = self.audit.record_written(event).map_err(|_| InboundError::AuditUnavailable)?;
            request.extensions_mut().insert(super::audit_barrier::PendingAudit::new(written));
            return Ok(());
        }
        // A denial goes no further, so nothing waits for its line; it is refused either way.
        self.audit.record(event).map_err(|_| InboundError::AuditUnavailable)?;
        Err(InboundError::AclDenied {
            caller: caller.0.as_ref().map(ToString::to_string).unwrap_or_default(),
            operation: call.operation.as_str().to_owned(),
            verb: call.verb.map(|v| v.as_str()).unwrap_or("NONE").to_owned(),
        })
    }
}
