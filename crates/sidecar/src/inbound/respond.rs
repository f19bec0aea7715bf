//! The one place where a callee-side error becomes an answer (linkerd2-proxy's `errors/respond.rs`): a typed
//! [`InboundError`] travels back to the caller's sidecar as a [`crate::error::PeerRefusal`] in headers. Refusals
//! that happened before access control are audited here, so every outcome leaves one audit event (the ACL layer
//! records its own decisions).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};
use ward_policy::{AuditEvent, PreAclRefusal};

use super::accept::CallerIdentity;
use super::{InboundRequest, InboundResponse};
use crate::audit::AuditSink;
use crate::error::InboundError;

#[derive(Clone)]
pub(crate) struct RespondLayer {
    pub(crate) audit: AuditSink,
    pub(crate) app_id: Arc<str>,
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Respond { inner, audit: self.audit.clone(), app_id: self.app_id.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct Respond<S> {
    inner: S,
    audit: AuditSink,
    app_id: Arc<str>,
}

/// What the audit event of an early refusal needs, taken before the request moves on. Reference-counted clones
/// only: the common case (no refusal) must not pay for formatting.
struct Seen {
    caller: Option<Arc<ward_identity::SpiffeId>>,
    uri: http::Uri,
    method: http::Method,
}

impl<S> Service<InboundRequest> for Respond<S>
where
    S: Service<InboundRequest, Response = InboundResponse, Error = InboundError> + Send,
    S::Future: Send + 'static,
{
    type Response = InboundResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<InboundResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: InboundRequest) -> Self::Future {
        let seen = Seen {
            caller: request.extensions().get::<CallerIdentity>().and_then(|c| c.0.clone()),
            uri: request.uri().clone(),
            method: request.method().clone(),
        };
        let audit = self.audit.clone();
        let app_id = self.app_id.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => Ok(response),
                Err(err) => {
                    if let Some(kind) = err.before_acl() {
                        record_refusal(&audit, &app_id, seen, kind, &err);
                    }
                    Ok(err.to_refusal().into_response())
                }
            }
        })
    }
}

fn record_refusal(audit: &AuditSink, app_id: &str, seen: Seen, kind: PreAclRefusal, err: &InboundError) {
    let caller = seen.caller.map(|c| c.to_string());
    let event = AuditEvent::for_refusal(
        crate::runtime::now_rfc3339(),
        caller.as_deref(),
        app_id,
        seen.uri.path(),
        Some(seen.method.as_str()),
        kind,
        &err.to_refusal().message,
    );
    // The request is refused either way; a lost refusal event is counted and logged by the sink.
    let _ = audit.record(event);
}
