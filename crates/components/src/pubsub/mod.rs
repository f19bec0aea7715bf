//! The pub/sub building block: the [`PubSub`] trait every broker implements, its request and message types, and
//! the factory that builds a broker from a component's type, version and metadata.
//!
//! The contract every broker implements identically:
//! - [`PubSub::publish`] returns only once the broker has accepted the message (Redis: `XADD` answered; JetStream:
//!   the publish acknowledgement received). The bytes are carried unchanged: the sidecar builds the CloudEvent
//!   envelope, so a ward app and a daprd app can share a broker.
//! - [`PubSub::subscribe`] starts consuming one topic and calls the [`Handler`] for every message. `Ok(())` from the
//!   handler acknowledges the message (it is never delivered to this consumer group again); `Err` leaves it
//!   unacknowledged, and the broker delivers it again later (at least once). A message whose handler never
//!   finished (the sidecar was killed) is delivered again after a restart.
//! - Dropping the returned [`Subscription`] (or [`Subscription::close`]) stops consuming; messages in flight are not
//!   acknowledged.
//!
//! Does not: build or parse CloudEvents, apply topic scopes, route, retry with backoff or dead-letter (all the
//! sidecar's, the same for every broker), or speak HTTP/gRPC. No error carries message data or a metadata value.

mod jetstream;
mod memory;
mod redis;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::metadata::{BoxError, ComponentError, ComponentMetadata};
use crate::{BuildContext, check_version, normalize_type};

pub use jetstream::{JetStreamOptions, JetStreamPubSub};
pub use memory::InMemoryPubSub;
pub use redis::{RedisPubSub, RedisPubSubOptions};

/// Publish one message.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishRequest {
    pub topic: String,
    /// The bytes to carry (a CloudEvent JSON document, or the raw payload with `rawPayload`).
    pub data: Bytes,
    /// Request metadata (`metadata.*` query parameters of the publish API), for brokers that use some of it.
    pub metadata: BTreeMap<String, String>,
}

impl fmt::Debug for PublishRequest {
    // Data is application data: its size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishRequest")
            .field("topic", &self.topic)
            .field("data_len", &self.data.len())
            .field("metadata_keys", &self.metadata.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Start consuming one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub topic: String,
    /// The subscription's own `metadata` (declarative `spec.metadata`, programmatic `metadata`).
    pub metadata: BTreeMap<String, String>,
}

/// One message as the broker delivered it.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    /// Exactly the bytes published.
    pub data: Bytes,
    /// What the broker knows about the message (e.g. the Redis entry id), never used for authorization.
    pub metadata: BTreeMap<String, String>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("data_len", &self.data.len())
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// The subscriber did not finish with a message: the broker must deliver it again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotHandled(pub String);

/// What the sidecar does with each message: `Ok` acknowledges it, `Err` leaves it for redelivery.
pub type Handler = Arc<dyn Fn(Message) -> BoxFuture<'static, Result<(), NotHandled>> + Send + Sync>;

/// A pub/sub operation failed. The API layer maps these once (publish: 500 `ERR_PUBSUB_PUBLISH_MESSAGE`).
#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    /// The broker did not accept the message.
    #[error("publishing to topic {topic:?} failed")]
    Publish {
        topic: String,
        #[source]
        source: BoxError,
    },
    /// Consuming the topic could not start.
    #[error("subscribing to topic {topic:?} failed")]
    Subscribe {
        topic: String,
        #[source]
        source: BoxError,
    },
}

/// A broker.
#[async_trait]
pub trait PubSub: Send + Sync {
    /// Hands one message to the broker; returns once the broker accepted it.
    async fn publish(&self, request: PublishRequest) -> Result<(), PubSubError>;

    /// Starts consuming `request.topic` as this component's consumer group, calling `handler` for each message
    /// (possibly several at once, up to the component's concurrency). Consuming stops when the returned handle is
    /// dropped.
    async fn subscribe(&self, request: SubscribeRequest, handler: Handler) -> Result<Subscription, PubSubError>;
}

/// A running subscription. Dropping it stops consuming; unacknowledged messages stay with the broker.
pub struct Subscription {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// Wraps a consuming task. The task must end soon after `stop` fires (or its sender is dropped).
    pub fn new(stop: tokio::sync::oneshot::Sender<()>, task: tokio::task::JoinHandle<()>) -> Subscription {
        Subscription { stop: Some(stop), task: Some(task) }
    }

    /// Stops consuming and waits (bounded) for the consuming task to end.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The `(type, version)` pairs the factory builds.
pub fn pubsub_types() -> &'static [(&'static str, &'static str)] {
    &[("pubsub.in-memory", "v1"), ("pubsub.redis", "v1"), ("pubsub.jetstream", "v1")]
}

/// Builds a broker. `name` is the component's name; `ctx.app_id` is the default consumer group (`consumerID`).
pub async fn build_pubsub(
    component_type: &str,
    version: &str,
    _name: &str,
    metadata: &ComponentMetadata,
    ctx: &BuildContext,
) -> Result<Arc<dyn PubSub>, ComponentError> {
    let ty = normalize_type(component_type);
    check_version(pubsub_types(), &ty, version, "pubsub")?;
    match ty.as_str() {
        "pubsub.in-memory" => Ok(Arc::new(InMemoryPubSub::new())),
        "pubsub.redis" => {
            let opts = RedisPubSubOptions::from_metadata(metadata, &ctx.app_id)?;
            Ok(Arc::new(RedisPubSub::connect(opts).await?))
        }
        "pubsub.jetstream" => {
            let opts = JetStreamOptions::from_metadata(metadata)?;
            Ok(Arc::new(JetStreamPubSub::connect(opts).await?))
        }
        // check_version already refused unknown types; keep the match total without panicking.
        _ => Err(ComponentError::new("spec.type", format!("unknown pubsub type {component_type:?}"))),
    }
}
