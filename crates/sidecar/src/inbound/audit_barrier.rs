//! Audit, then forward: the access-control layer queues an allowed call's audit line and this barrier, the last step
//! before the app, waits until that line has been handed to the operating system (written by the request itself to a
//! regular file, else by the writer thread in groups; see `audit.rs`). A line that cannot be written refuses the
//! call (fail closed), so the app never receives a request
//! whose decision is not on record, even if the sidecar is killed right after forwarding.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};

use super::{InboundRequest, InboundResponse};
use crate::audit::Written;
use crate::error::InboundError;

/// The allowed call's pending audit lines (the ACL's, and the capability check's when a route applied), in the
/// request extensions (extensions must be `Clone`; taken once).
#[derive(Clone)]
pub(crate) struct PendingAudit(Arc<Mutex<Vec<Written>>>);

impl PendingAudit {
    pub(crate) fn new(written: Written) -> Self {
        Self(Arc::new(Mutex::new(vec![written])))
    }

    /// Adds another line to wait for; `false` if that is impossible (the caller refuses the call).
    pub(crate) fn add(&self, written: Written) -> bool {
        match self.0.lock() {
            Ok(mut pending) => {
                pending.push(written);
                true
            }
            Err(_) => false,
        }
    }

    fn take(&self) -> Option<Vec<Written>> {
        let pending = std::mem::take(&mut *self.0.lock().ok()?);
        (!pending.is_empty()).then_some(pending)
    }
}

#[derive(Clone)]
pub(crate) struct AuditBarrierLayer;

impl<S> tower::Layer<S> for AuditBarrierLayer {
    type Service = AuditBarrier<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuditBarrier { inner }
    }
}

#[derive(Clone)]
pub(crate) struct AuditBarrier<S> {
    inner: S,
}

impl<S> tower::Service<InboundRequest> for AuditBarrier<S>
where
    S: tower::Service<InboundRequest, Response = InboundResponse, Error = InboundError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = InboundResponse;
    type Error = InboundError;
    type Future = BoxFuture<'static, Result<InboundResponse, InboundError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: InboundRequest) -> Self::Future {
        // Without a pending line the call never passed access control: a wiring error, refused.
        let Some(pending) = request.extensions().get::<PendingAudit>().and_then(PendingAudit::take) else {
            return futures_util::future::ready(Err(InboundError::AuditUnavailable)).boxed();
        };
        let mut inner = self.inner.clone();
        async move {
            for written in pending {
                written.await.map_err(|_| InboundError::AuditUnavailable)?;
            }
            inner.call(request).await
        }
        .boxed()
    }
}
