//! `pubsub.jetstream` (v1): NATS JetStream, as Dapr's `pubsub/jetstream` component, so ward and daprd apps can
//! share a server.
//!
//! Wire format: a topic is a subject; [`PubSub::publish`] publishes the bytes unchanged on it, with the CloudEvent
//! `id` (when the bytes are a JSON object with a string `id`) as `Nats-Msg-Id` for JetStream de-duplication, and
//! returns once JetStream acknowledged the message. A subscription is a push consumer on the stream that captures
//! the topic (`streamName`, or the stream whose subjects include the topic), filtered on the topic, durable when
//! `durableName` is set, delivered to a queue group when `queueGroupName` is set. Handler `Ok` acknowledges the
//! message; `Err` naks it (with a delay of `ackWait` when that is set, as Dapr), so JetStream delivers it again.
//!
//! **The stream must already exist**: ward never creates or changes a stream (retention, limits and replicas are
//! the operator's decision). Publishing or subscribing to a subject no stream captures is a [`PubSubError`] whose
//! cause, [`StreamMissing`], names the subject.
//!
//! Beyond Dapr: a durable consumer that already exists keeps its delivery subject, so a second member of its queue
//! group or a restarted sidecar binds to it (asking for a fresh delivery subject, as Dapr does on every subscribe,
//! is a changed consumer that the server refuses: "consumer name already in use"); and a durable consumer without
//! a queue group that another subscriber is bound to is refused rather than delivered twice.
//!
//! Owns: the metadata parser ([`JetStreamOptions`]), the connection, the consumer and the dispatch loop.
//! Does not: create streams, build or check CloudEvents, or retry with backoff (the sidecar does).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, push};
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Handler, Message, PubSub, PubSubError, PublishRequest, SubscribeRequest, Subscription};
use crate::metadata::{ComponentError, ComponentMetadata};

/// Dapr's default client name.
const DEFAULT_NAME: &str = "dapr.io - pubsub.jetstream";
/// Handler calls at once with `concurrency: parallel` (Dapr starts one goroutine per message; JetStream's
/// `maxAckPending` bounds what is in flight, this bounds it in ward too).
const PARALLEL_LIMIT: usize = 1024;

/// How the component authenticates (Dapr applies the first that is set: `jwt`+`seedKey`, client certificate,
/// `token`; ward refuses a combination instead of ignoring part of it).
#[derive(Clone, PartialEq, Eq)]
pub enum JetStreamAuth {
    None,
    Token(String),
    /// A user JWT and the nkey seed that signs the server's nonce.
    Jwt {
        jwt: String,
        seed: String,
    },
    /// TLS client certificate and key files (`tls_client_cert`, `tls_client_key`).
    ClientCert {
        cert: PathBuf,
        key: PathBuf,
    },
}

/// `concurrency`: Dapr's `single` (one handler call at a time, the default) or `parallel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JetStreamConcurrency {
    Single,
    Parallel,
}

/// Options of a JetStream broker, read from Dapr's metadata names.
#[derive(Clone, PartialEq)]
pub struct JetStreamOptions {
    /// `natsURL` (may carry credentials: never printed).
    pub nats_url: String,
    pub auth: JetStreamAuth,
    /// Client name (`name`).
    pub name: String,
    pub stream_name: Option<String>,
    pub durable_name: Option<String>,
    pub queue_group_name: Option<String>,
    pub deliver_policy: DeliverPolicy,
    pub ack_policy: AckPolicy,
    pub flow_control: bool,
    pub ack_wait: Option<Duration>,
    pub max_deliver: Option<i64>,
    pub back_off: Vec<Duration>,
    pub max_ack_pending: Option<i64>,
    pub replicas: Option<usize>,
    pub memory_storage: bool,
    pub rate_limit: Option<u64>,
    pub heartbeat: Option<Duration>,
    pub domain: Option<String>,
    pub api_prefix: Option<String>,
    pub concurrency: JetStreamConcurrency,
}

impl fmt::Debug for JetStreamOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            JetStreamAuth::None => "none",
            JetStreamAuth::Token(_) => "token",
            JetStreamAuth::Jwt { .. } => "jwt",
            JetStreamAuth::ClientCert { .. } => "client certificate",
        };
        f.debug_struct("JetStreamOptions")
            .field("auth", &auth)
            .field("name", &self.name)
            .field("stream_name", &self.stream_name)
            .field("durable_name", &self.durable_name)
            .field("queue_group_name", &self.queue_group_name)
            .field("deliver_policy", &self.deliver_policy)
            .field("ack_policy", &self.ack_policy)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

fn non_empty<'a>(md: &'a ComponentMetadata, key: &str) -> Option<&'a str> {
    md.get(key).map(str::trim).filter(|v| !v.is_empty())
}

/// A positive integer that fits `T`; `0` means "server default" in Dapr, so it is `None`.
fn count<T: TryFrom<u64>>(md: &ComponentMetadata, key: &str) -> Result<Option<T>, ComponentError> {
    match md.get_u64(key)? {
        None | Some(0) => Ok(None),
        Some(n) => T::try_from(n).map(Some).map_err(|_| ComponentError::new(key, "number out of range")),
    }
}

impl JetStreamOptions {
    /// Reads Dapr's `pubsub.jetstream` metadata. `consumerID` is accepted and unused, as in Dapr (JetStream
    /// groups are `durableName` / `queueGroupName`).
    pub fn from_metadata(md: &ComponentMetadata) -> Result<Self, ComponentError> {
        let nats_url = md.require("natsURL")?.trim().to_owned();
        let jwt = non_empty(md, "jwt");
        let seed = non_empty(md, "seedKey");
        let token = non_empty(md, "token");
        let cert = non_empty(md, "tls_client_cert");
        let key = non_empty(md, "tls_client_key");
        let auth = match (jwt, seed, cert, key, token) {
            (Some(_), None, ..) => return Err(ComponentError::new("seedKey", "required with jwt")),
            (None, Some(_), ..) => return Err(ComponentError::new("jwt", "required with seedKey")),
            (_, _, Some(_), None, _) => {
                return Err(ComponentError::new("tls_client_key", "required with tls_client_cert"));
            }
            (_, _, None, Some(_), _) => {
                return Err(ComponentError::new("tls_client_cert", "required with tls_client_key"));
            }
            (Some(_), Some(_), Some(_), ..) => {
                return Err(ComponentError::new("tls_client_cert", "Dapr ignores it when jwt is set: set only one"));
            }
            (Some(_), Some(_), _, _, Some(_)) | (None, None, Some(_), Some(_), Some(_)) => {
                return Err(ComponentError::new("token", "Dapr ignores it when jwt or a client certificate is set"));
            }
            (Some(jwt), Some(seed), None, None, None) => {
                // Checked now so a bad seed fails the component, not every reconnect; the cause is not kept
                // (it could quote the seed).
                if async_nats::ConnectOptions::new().credentials(&creds(jwt, seed)).is_err() {
                    return Err(ComponentError::new("seedKey", "not a valid user nkey seed (or jwt malformed)"));
                }
                JetStreamAuth::Jwt { jwt: jwt.to_owned(), seed: seed.to_owned() }
            }
            (None, None, Some(cert), Some(key), None) => {
                JetStreamAuth::ClientCert { cert: PathBuf::from(cert), key: PathBuf::from(key) }
            }
            (None, None, None, None, Some(token)) => JetStreamAuth::Token(token.to_owned()),
            (None, None, None, None, None) => JetStreamAuth::None,
        };

        let start_sequence = count::<u64>(md, "startSequence")?;
        let start_time = md.get_u64("startTime")?;
        let deliver_policy = match non_empty(md, "deliverPolicy").unwrap_or("all") {
            "all" => DeliverPolicy::All,
            "last" => DeliverPolicy::Last,
            "new" => DeliverPolicy::New,
            "sequence" => DeliverPolicy::ByStartSequence {
                start_sequence: start_sequence
                    .ok_or_else(|| ComponentError::new("startSequence", "required with deliverPolicy \"sequence\""))?,
            },
            "time" => {
                let secs = start_time
                    .ok_or_else(|| ComponentError::new("startTime", "required with deliverPolicy \"time\""))?;
                let start = i64::try_from(secs)
                    .ok()
                    .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                    .ok_or_else(|| ComponentError::new("startTime", "out of range (Unix seconds)"))?;
                DeliverPolicy::ByStartTime { start_time: start }
            }
            _ => {
                return Err(ComponentError::new("deliverPolicy", "expected one of: all, last, new, sequence, time"));
            }
        };
        // The server refuses a start sequence/time with another policy; say which key is wrong up front.
        if start_sequence.is_some() && !matches!(deliver_policy, DeliverPolicy::ByStartSequence { .. }) {
            return Err(ComponentError::new("startSequence", "only applies with deliverPolicy \"sequence\""));
        }
        if start_time.is_some() && !matches!(deliver_policy, DeliverPolicy::ByStartTime { .. }) {
            return Err(ComponentError::new("startTime", "only applies with deliverPolicy \"time\""));
        }
        // `deliverAll` is an older Dapr key: true means deliverPolicy all (the default), false changes nothing.
        if md.get_bool("deliverAll")? == Some(true) && !matches!(deliver_policy, DeliverPolicy::All) {
            return Err(ComponentError::new("deliverAll", "contradicts deliverPolicy"));
        }
        // Dapr falls back to explicit for an unknown value; a typo here is refused instead.
        let ack_policy = match non_empty(md, "ackPolicy").unwrap_or("explicit") {
            "explicit" => AckPolicy::Explicit,
            "all" => AckPolicy::All,
            "none" => AckPolicy::None,
            _ => return Err(ComponentError::new("ackPolicy", "expected one of: explicit, all, none")),
        };
        let concurrency = match non_empty(md, "concurrency").map(str::to_ascii_lowercase).as_deref() {
            None | Some("single") => JetStreamConcurrency::Single,
            Some("parallel") => JetStreamConcurrency::Parallel,
            Some(_) => return Err(ComponentError::new("concurrency", "expected single or parallel")),
        };
        let back_off = match non_empty(md, "backOff") {
            None => Vec::new(),
            Some(raw) => raw
                .split(',')
                .map(|d| crate::metadata::parse_duration(d.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ComponentError::new("backOff", format!("a comma-separated list of durations: {e}")))?,
        };
        let opts = JetStreamOptions {
            nats_url,
            auth,
            name: non_empty(md, "name").unwrap_or(DEFAULT_NAME).to_owned(),
            stream_name: non_empty(md, "streamName").map(str::to_owned),
            durable_name: non_empty(md, "durableName").map(str::to_owned),
            queue_group_name: non_empty(md, "queueGroupName").map(str::to_owned),
            deliver_policy,
            ack_policy,
            flow_control: md.get_bool("flowControl")?.unwrap_or(false),
            ack_wait: md.get_duration("ackWait")?.filter(|d| !d.is_zero()),
            max_deliver: non_negative_or_unlimited(md, "maxDeliver")?,
            back_off,
            max_ack_pending: non_negative_or_unlimited(md, "maxAckPending")?,
            replicas: count::<usize>(md, "replicas")?,
            memory_storage: md.get_bool("memoryStorage")?.unwrap_or(false),
            rate_limit: count::<u64>(md, "rateLimit")?,
            heartbeat: md.get_duration("heartbeat")?.filter(|d| !d.is_zero()),
            domain: non_empty(md, "domain").map(str::to_owned),
            api_prefix: non_empty(md, "apiPrefix").map(str::to_owned),
            concurrency,
        };
        if opts.domain.is_some() && opts.api_prefix.is_some() {
            return Err(ComponentError::new(
                "apiPrefix",
                "cannot be combined with domain (the domain sets the prefix)",
            ));
        }
        if opts.flow_control && opts.heartbeat.is_none() {
            return Err(ComponentError::new("flowControl", "JetStream requires heartbeat with flowControl"));
        }
        Ok(opts)
    }
}

/// An integer where `-1` means unlimited (as JetStream), `0` the server default.
fn non_negative_or_unlimited(md: &ComponentMetadata, key: &str) -> Result<Option<i64>, ComponentError> {
    let Some(raw) = non_empty(md, key) else { return Ok(None) };
    match raw.parse::<i64>() {
        Ok(0) => Ok(None),
        Ok(n) if n >= -1 => Ok(Some(n)),
        _ => Err(ComponentError::new(key, "expected a positive integer, or -1 for unlimited")),
    }
}

/// The credentials-file text async-nats reads a user JWT and its seed from.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

/// No stream captures the subject, and ward does not create streams.
#[derive(Debug, thiserror::Error)]
#[error(
    "no JetStream stream captures subject {subject:?}{}; ward does not create streams: create one whose subjects include the topic",
    .stream.as_ref().map(|s| format!(" (streamName {s:?} does not exist)")).unwrap_or_default()
)]
pub struct StreamMissing {
    pub subject: String,
    pub stream: Option<String>,
}

/// A durable consumer without a queue group already has a subscriber.
#[derive(Debug, thiserror::Error)]
#[error(
    "durable consumer {durable:?} already has an active subscriber; set queueGroupName to share it between subscribers"
)]
pub struct ConsumerBound {
    pub durable: String,
}

/// The JetStream broker.
pub struct JetStreamPubSub {
    context: jetstream::Context,
    opts: Arc<JetStreamOptions>,
}

impl fmt::Debug for JetStreamPubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamPubSub").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl JetStreamPubSub {
    /// Connects to the server; fails when it cannot be reached, as Dapr's `Init` does.
    pub async fn connect(opts: JetStreamOptions) -> Result<Self, ComponentError> {
        let mut connect = async_nats::ConnectOptions::new().name(&opts.name).connection_timeout(Duration::from_secs(5));
        connect = match &opts.auth {
            JetStreamAuth::None => connect,
            JetStreamAuth::Token(t) => connect.token(t.clone()),
            JetStreamAuth::Jwt { jwt, seed } => connect
                .credentials(&creds(jwt, seed))
                .map_err(|_| ComponentError::new("seedKey", "not a valid user nkey seed"))?,
            JetStreamAuth::ClientCert { cert, key } => connect.add_client_certificate(cert.clone(), key.clone()),
        };
        let client = tokio::time::timeout(Duration::from_secs(10), connect.connect(opts.nats_url.as_str()))
            .await
            .map_err(|_| ComponentError::new("natsURL", "cannot connect to NATS: timed out"))?
            .map_err(|e| ComponentError::new("natsURL", "cannot connect to NATS").with_source(e))?;
        let context = match (&opts.domain, &opts.api_prefix) {
            (Some(domain), _) => jetstream::with_domain(client, domain),
            (None, Some(prefix)) => jetstream::with_prefix(client, prefix),
            (None, None) => jetstream::new(client),
        };
        Ok(JetStreamPubSub { context, opts: Arc::new(opts) })
    }

    /// The stream the topic is consumed from: `streamName`, or the one whose subjects capture the topic.
    async fn stream_for(&self, topic: &str) -> Result<jetstream::stream::Stream, crate::BoxError> {
        let missing = |stream: Option<&String>| {
            Box::new(StreamMissing { subject: topic.to_owned(), stream: stream.cloned() }) as crate::BoxError
        };
        let name = match &self.opts.stream_name {
            Some(name) => name.clone(),
            None => match self.context.stream_by_subject(topic).await {
                Ok(name) => name,
                Err(e) if e.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => {
                    return Err(missing(None));
                }
                Err(e) => return Err(Box::new(e)),
            },
        };
        match self.context.get_stream(&name).await {
            Ok(stream) => Ok(stream),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Err(missing(self.opts.stream_name.as_ref()))
                }
                _ => Err(Box::new(e)),
            },
        }
    }

    /// The push consumer configuration, as Dapr builds it.
    fn consumer_config(&self, topic: &str, deliver_subject: String) -> push::Config {
        let o = &self.opts;
        let mut config = push::Config {
            deliver_subject,
            durable_name: o.durable_name.clone(),
            deliver_group: o.queue_group_name.clone(),
            deliver_policy: o.deliver_policy,
            ack_policy: o.ack_policy,
            filter_subject: topic.to_owned(),
            flow_control: o.flow_control,
            memory_storage: o.memory_storage,
            backoff: o.back_off.clone(),
            ..Default::default()
        };
        if let Some(d) = o.ack_wait {
            config.ack_wait = d;
        }
        if let Some(n) = o.max_deliver {
            config.max_deliver = n;
        }
        if let Some(n) = o.max_ack_pending {
            config.max_ack_pending = n;
        }
        if let Some(n) = o.replicas {
            config.num_replicas = n;
        }
        if let Some(n) = o.rate_limit {
            config.rate_limit = n;
        }
        if let Some(d) = o.heartbeat {
            config.idle_heartbeat = d;
        }
        config
    }
}

#[async_trait]
impl PubSub for JetStreamPubSub {
    async fn publish(&self, request: PublishRequest) -> Result<(), PubSubError> {
        let publish_err = |source| PubSubError::Publish { topic: request.topic.clone(), source };
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = cloud_event_id(&request.data) {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        let ack = self
            .context
            .publish_with_headers(request.topic.clone(), headers, request.data.clone())
            .await
            .map_err(|e| publish_err(Box::new(e)))?;
        match ack.await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                Err(publish_err(Box::new(StreamMissing { subject: request.topic.clone(), stream: None })))
            }
            Err(e) => Err(publish_err(Box::new(e))),
        }
    }

    async fn subscribe(&self, request: SubscribeRequest, handler: Handler) -> Result<Subscription, PubSubError> {
        let topic = request.topic;
        let sub_err = |source| PubSubError::Subscribe { topic: topic.clone(), source };
        let stream = self.stream_for(&topic).await.map_err(sub_err)?;
        let mut deliver_subject = self.context.client().new_inbox();
        if let Some(durable) = &self.opts.durable_name {
            match stream.consumer_info(durable).await {
                Ok(info) => {
                    if info.push_bound && self.opts.queue_group_name.is_none() {
                        return Err(sub_err(Box::new(ConsumerBound { durable: durable.clone() })));
                    }
                    // Keep the existing delivery subject: the other members of a queue group, and messages
                    // waiting for redelivery, are on it.
                    if let Some(existing) = info.config.deliver_subject {
                        deliver_subject = existing;
                    }
                }
                Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {}
                Err(e) => return Err(sub_err(Box::new(e))),
            }
        }
        let consumer = stream
            .create_consumer(self.consumer_config(&topic, deliver_subject))
            .await
            .map_err(|e| sub_err(Box::new(e)))?;
        let messages = consumer.messages().await.map_err(|e| sub_err(Box::new(e)))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(consume(topic.clone(), self.opts.clone(), messages, handler, stop_rx));
        Ok(Subscription::new(stop_tx, task))
    }
}

/// The CloudEvent `id`, when the data is a JSON object that has a string one (Dapr uses it as `Nats-Msg-Id`).
fn cloud_event_id(data: &[u8]) -> Option<String> {
    let serde_json::Value::Object(event) = serde_json::from_slice(data).ok()? else { return None };
    match event.get("id")? {
        serde_json::Value::String(s) if !s.is_empty() && !s.contains(['\r', '\n']) => Some(s.clone()),
        _ => None,
    }
}

async fn consume(
    topic: String,
    opts: Arc<JetStreamOptions>,
    mut messages: push::Messages,
    handler: Handler,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let limit = match opts.concurrency {
        JetStreamConcurrency::Single => 1,
        JetStreamConcurrency::Parallel => PARALLEL_LIMIT,
    };
    let permits = Arc::new(Semaphore::new(limit));
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        let next = tokio::select! {
            _ = &mut stop => break,
            next = messages.next() => next,
        };
        let message = match next {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // A missed heartbeat or a transient error: the subscription itself is still there.
                tracing::warn!(topic = %topic, error = %e, "jetstream pubsub: receiving failed");
                continue;
            }
        };
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let handler = handler.clone();
        let opts = opts.clone();
        let topic = topic.clone();
        running.spawn(async move {
            let _permit = permit;
            let delivered = Message {
                topic: topic.clone(),
                data: message.payload.clone(),
                // As Dapr: the subject the message was published on.
                metadata: BTreeMap::from([("Topic".to_owned(), message.subject.to_string())]),
            };
            let result = handler(delivered).await;
            if opts.ack_policy == AckPolicy::None {
                return;
            }
            let reply = match result {
                Ok(()) => message.ack().await,
                Err(_) => message.ack_with(AckKind::Nak(opts.ack_wait)).await,
            };
            if let Err(e) = reply {
                // No ack reaches the server: JetStream delivers the message again after ackWait.
                tracing::warn!(topic = %topic, error = %e, "jetstream pubsub: acknowledging failed");
            }
        });
    }
    // In-flight messages are neither acked nor naked: JetStream redelivers them after ackWait.
    running.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> ComponentMetadata {
        pairs.iter().copied().collect()
    }

    #[test]
    fn defaults_are_daprs() {
        let o = JetStreamOptions::from_metadata(&md(&[("natsURL", "nats://127.0.0.1:4222")])).unwrap();
        assert_eq!(o.name, DEFAULT_NAME);
        assert_eq!(o.deliver_policy, DeliverPolicy::All);
        assert_eq!(o.ack_policy, AckPolicy::Explicit);
        assert_eq!(o.concurrency, JetStreamConcurrency::Single);
        assert!(o.auth == JetStreamAuth::None);
        assert_eq!((o.ack_wait, o.max_deliver, o.durable_name.as_deref()), (None, None, None));
    }

    #[test]
    fn values() {
        let o = JetStreamOptions::from_metadata(&md(&[
            ("natsURL", "nats://127.0.0.1:4222"),
            ("token", "s3cret"),
            ("name", "me"),
            ("streamName", "ORDERS"),
            ("durableName", "d"),
            ("queueGroupName", "q"),
            ("deliverPolicy", "sequence"),
            ("startSequence", "5"),
            ("ackWait", "2s"),
            ("maxDeliver", "4"),
            ("backOff", "1s, 2s"),
            ("maxAckPending", "-1"),
            ("replicas", "1"),
            ("memoryStorage", "true"),
            ("rateLimit", "1000"),
            ("flowControl", "true"),
            ("heartbeat", "5s"),
            ("ackPolicy", "all"),
            ("domain", "hub"),
            ("concurrency", "parallel"),
            ("consumerID", "ignored-as-in-dapr"),
            ("publishingScopes", "a=t"),
            ("verifyPublishers", "false"),
            ("maxDeliveryAttempts", "3"),
        ]))
        .unwrap();
        assert!(o.auth == JetStreamAuth::Token("s3cret".into()));
        assert!(!format!("{o:?}").contains("s3cret"));
        assert_eq!(o.deliver_policy, DeliverPolicy::ByStartSequence { start_sequence: 5 });
        assert_eq!(o.ack_wait, Some(Duration::from_secs(2)));
        assert_eq!(o.back_off, vec![Duration::from_secs(1), Duration::from_secs(2)]);
        assert_eq!((o.max_deliver, o.max_ack_pending), (Some(4), Some(-1)));
        assert_eq!(o.concurrency, JetStreamConcurrency::Parallel);
        assert_eq!(o.ack_policy, AckPolicy::All);
        let o = JetStreamOptions::from_metadata(&md(&[
            ("natsURL", "n"),
            ("deliverPolicy", "time"),
            ("startTime", "1700000000"),
        ]))
        .unwrap();
        assert!(matches!(o.deliver_policy, DeliverPolicy::ByStartTime { .. }));
    }

    #[test]
    fn refusals_name_the_key_never_the_value() {
        let refused: &[(&[(&str, &str)], &str)] = &[
            (&[], "natsURL"),
            (&[("jwt", "hunter2")], "seedKey"),
            (&[("seedKey", "hunter2")], "jwt"),
            (&[("jwt", "hunter2"), ("seedKey", "hunter2")], "seedKey"),
            (&[("tls_client_cert", "/c")], "tls_client_key"),
            (&[("tls_client_cert", "/c"), ("tls_client_key", "/k"), ("token", "hunter2")], "token"),
            (&[("deliverPolicy", "hunter2")], "deliverPolicy"),
            (&[("deliverPolicy", "sequence")], "startSequence"),
            (&[("startSequence", "3")], "startSequence"),
            (&[("startTime", "hunter2")], "startTime"),
            (&[("deliverPolicy", "time")], "startTime"),
            (&[("deliverPolicy", "new"), ("deliverAll", "true")], "deliverAll"),
            (&[("ackPolicy", "hunter2")], "ackPolicy"),
            (&[("concurrency", "hunter2")], "concurrency"),
            (&[("ackWait", "hunter2")], "ackWait"),
            (&[("backOff", "1s,hunter2")], "backOff"),
            (&[("maxDeliver", "hunter2")], "maxDeliver"),
            (&[("maxDeliver", "-2")], "maxDeliver"),
            (&[("flowControl", "hunter2")], "flowControl"),
            (&[("flowControl", "true")], "flowControl"),
            (&[("memoryStorage", "hunter2")], "memoryStorage"),
            (&[("replicas", "hunter2")], "replicas"),
            (&[("domain", "a"), ("apiPrefix", "b")], "apiPrefix"),
        ];
        for (pairs, key) in refused {
            let mut m = md(pairs);
            if *key != "natsURL" {
                m.insert("natsURL", "nats://hunter2@127.0.0.1:4222");
            }
            let e = JetStreamOptions::from_metadata(&m).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(*key), "{pairs:?}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn cloud_event_ids() {
        assert_eq!(cloud_event_id(br#"{"id":"abc","data":1}"#).as_deref(), Some("abc"));
        assert_eq!(cloud_event_id(br#"{"id":7}"#), None);
        assert_eq!(cloud_event_id(br#"{"id":"a\nb"}"#), None);
        assert_eq!(cloud_event_id(b"raw bytes"), None);
        assert_eq!(cloud_event_id(br#"["id"]"#), None);
    }
}
