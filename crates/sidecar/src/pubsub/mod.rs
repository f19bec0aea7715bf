//! The pub/sub building block (issue 14), protocol-neutral: publishing (topic scopes, the CloudEvent envelope, the
//! publisher signature, the broker) and subscribing (declarative, programmatic and streaming subscriptions,
//! delivery to the app through the same app channel and `appHttpPipeline` as invocations, with retries and dead
//! letters). The HTTP (`api.rs`) and gRPC (`grpc_api`) front ends only translate wire shapes.
//!
//! Every decision is audited: a publish allowed or refused by the topic scopes, a subscription refused by them, a
//! delivery allowed or refused by the publisher check.
//!
//! Does not implement brokers (`ward-components::pubsub`), or decide topic-scope semantics (`ward-policy::topics`).

pub(crate) mod api;
pub(crate) mod delivery;
pub(crate) mod grpc;
pub(crate) mod routing;
pub(crate) mod subscriptions;

pub(crate) use ward_cloudevent::{envelope, signature};

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ward_components::pubsub::PublishRequest;
use ward_policy::{AuditEvent, Decision, TopicOperation};

use self::envelope::{EVENT_TYPE, PublishInput};
use self::signature::{EventSigner, EventVerifier};
use crate::audit::AuditSink;
use crate::components::{Components, Missing, PubSubEntry, Registry};
use crate::error::ApiError;

/// What publishing and subscribing use.
pub(crate) struct PubSubCore {
    pub(crate) components: Arc<Components>,
    pub(crate) app_id: Arc<str>,
    /// Signs published events with the SVID (mTLS on); `None` in development without mTLS.
    pub(crate) signer: Option<EventSigner>,
    /// Verifies publishers on delivery (mTLS on); `None` without mTLS.
    pub(crate) verifier: Option<EventVerifier>,
    pub(crate) audit: AuditSink,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// One publish, already read off the wire.
pub(crate) struct Publish {
    pub(crate) pubsub: String,
    pub(crate) topic: String,
    pub(crate) data: Bytes,
    pub(crate) content_type: Option<String>,
    /// `metadata.*` without the prefix.
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
}

/// One entry of a bulk publish.
pub(crate) struct BulkEntry {
    pub(crate) entry_id: String,
    pub(crate) data: Bytes,
    pub(crate) content_type: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
}

/// The registry entry for `name`, or Dapr's answer for a missing (or out-of-scope: the same) one.
pub(crate) fn lookup<'a>(registry: &'a Registry, name: &str) -> Result<&'a PubSubEntry, ApiError> {
    registry.pubsub(name).map_err(|missing| match missing {
        Missing::NotConfigured => ApiError::PubSubNotConfigured,
        Missing::NotFound => ApiError::PubSubNotFound { name: name.to_owned() },
    })
}

impl PubSubCore {
    /// Checks names, the component and the topic scopes for a publish; audits the scope decision.
    fn admit(&self, registry: &Registry, pubsub: &str, topic: &str) -> Result<(), ApiError> {
        if pubsub.is_empty() {
            return Err(ApiError::PubSubEmpty);
        }
        if topic.is_empty() {
            return Err(ApiError::TopicEmpty { pubsub: pubsub.to_owned() });
        }
        let entry = lookup(registry, pubsub)?;
        let allowed = entry.scopes.is_allowed(&self.app_id, topic, TopicOperation::Publish);
        let (event, decision, reason) = if allowed {
            (ward_policy::audit::PUBSUB_PUBLISH_ALLOW, Decision::Allow, "allowed by the topic scopes")
        } else {
            (ward_policy::audit::PUBSUB_PUBLISH_DENY, Decision::Deny, "denied by the topic scopes")
        };
        self.metrics.authz("pubsub_publish", allowed, if allowed { "topic_scopes" } else { "topic_scopes_deny" });
        let record = AuditEvent::for_pubsub(
            crate::runtime::now_rfc3339(),
            event,
            Some(&self.app_id),
            &self.app_id,
            &format!("{pubsub}/{topic}"),
            decision,
            "publishingScopes/allowedTopics/protectedTopics",
            reason,
        );
        if self.audit.record(record).is_err() && allowed {
            // Fail closed: a publish whose decision cannot be recorded does not happen.
            return Err(ApiError::PubSubPublish {
                pubsub: pubsub.to_owned(),
                topic: topic.to_owned(),
                detail: "the audit log is unavailable".to_owned(),
            });
        }
        if !allowed {
            return Err(ApiError::PubSubForbidden { topic: topic.to_owned(), app_id: self.app_id.to_string() });
        }
        Ok(())
    }

    /// The bytes to hand the broker for one message: the signed envelope, or the raw payload. `input.app_id` is
    /// replaced by this sidecar's.
    fn message_bytes(&self, input: PublishInput<'_>) -> Result<Bytes, ApiError> {
        if envelope::is_raw_payload(input.metadata) {
            return Ok(Bytes::copy_from_slice(input.data));
        }
        let (pubsub, topic) = (input.pubsub, input.topic);
        let input = PublishInput { app_id: &self.app_id, ..input };
        let mut event = envelope::build(&input).map_err(|err| match err {
            envelope::EnvelopeError::NotACloudEvent => ApiError::PubSubCloudEvent { detail: err.to_string() },
            envelope::EnvelopeError::Ttl(_) => ApiError::Malformed { detail: err.to_string() },
        })?;
        if let Some(signer) = &self.signer {
            signer.sign(&mut event).map_err(|err| ApiError::PubSubPublish {
                pubsub: pubsub.to_owned(),
                topic: topic.to_owned(),
                detail: err.to_string(),
            })?;
        }
        Ok(Bytes::from(serde_json::to_vec(&event).unwrap_or_default()))
    }

    /// Publishes one message.
    pub(crate) async fn publish(&self, mut publish: Publish) -> Result<(), ApiError> {
        // The producer span (tracing on): the CloudEvent carries its `traceparent`, so the delivery span on the
        // subscriber's sidecar is its child.
        let span = crate::otel::child(
            || format!("pubsub/{}", publish.topic).into(),
            opentelemetry::trace::SpanKind::Producer,
            || {
                vec![
                    opentelemetry::KeyValue::new("messaging.system", "dapr"),
                    opentelemetry::KeyValue::new("messaging.destination.name", publish.topic.clone()),
                    opentelemetry::KeyValue::new("ward.pubsub", publish.pubsub.clone()),
                ]
            },
        );
        let Some(cx) = span else { return self.publish_untraced(publish).await };
        publish.traceparent = Some(crate::otel::traceparent(&cx));
        let state = opentelemetry::trace::TraceContextExt::span(&cx).span_context().trace_state().header();
        publish.tracestate = (!state.is_empty()).then_some(state);
        let result = self.publish_untraced(publish).await;
        match &result {
            Ok(()) => crate::otel::end_with_status(&cx, 204),
            Err(_) => crate::otel::end_failed(&cx, "publish failed"),
        }
        result
    }

    async fn publish_untraced(&self, publish: Publish) -> Result<(), ApiError> {
        let registry = self.components.load();
        self.admit(&registry, &publish.pubsub, &publish.topic)?;
        let entry = lookup(&registry, &publish.pubsub)?;
        let data = self.message_bytes(PublishInput {
            pubsub: &publish.pubsub,
            topic: &publish.topic,
            app_id: &self.app_id,
            data: &publish.data,
            content_type: publish.content_type.as_deref(),
            metadata: &publish.metadata,
            traceparent: publish.traceparent.as_deref(),
            tracestate: publish.tracestate.as_deref(),
            event_type: EVENT_TYPE,
        })?;
        let request = PublishRequest { topic: publish.topic.clone(), data, metadata: publish.metadata };
        let result = entry.pubsub.publish(request).await;
        self.metrics.pubsub_published(&publish.pubsub, &publish.topic, result.is_ok());
        result.map_err(|err| ApiError::PubSubPublish {
            pubsub: publish.pubsub,
            topic: publish.topic,
            detail: crate::error::error_chain(&err),
        })
    }

    /// Publishes several messages to one topic; answers which entries failed (Dapr's bulk semantics: the others
    /// are published).
    pub(crate) async fn publish_bulk(
        &self,
        pubsub: &str,
        topic: &str,
        entries: Vec<BulkEntry>,
        request_metadata: &BTreeMap<String, String>,
        trace: (Option<&str>, Option<&str>),
    ) -> Result<Vec<(String, String)>, ApiError> {
        let registry = self.components.load();
        self.admit(&registry, pubsub, topic)?;
        let entry = lookup(&registry, pubsub)?;
        let mut failed = Vec::new();
        for bulk in entries {
            let mut metadata = request_metadata.clone();
            metadata.extend(bulk.metadata);
            let data = match self.message_bytes(PublishInput {
                pubsub,
                topic,
                app_id: &self.app_id,
                data: &bulk.data,
                content_type: bulk.content_type.as_deref(),
                metadata: &metadata,
                traceparent: trace.0,
                tracestate: trace.1,
                event_type: "com.dapr.event.sent.bulk",
            }) {
                Ok(data) => data,
                Err(err) => {
                    failed.push((bulk.entry_id, err.status_and_body().1.message));
                    continue;
                }
            };
            let request = PublishRequest { topic: topic.to_owned(), data, metadata };
            let result = entry.pubsub.publish(request).await;
            self.metrics.pubsub_published(pubsub, topic, result.is_ok());
            if let Err(err) = result {
                failed.push((bulk.entry_id, crate::error::error_chain(&err)));
            }
        }
        Ok(failed)
    }
}
