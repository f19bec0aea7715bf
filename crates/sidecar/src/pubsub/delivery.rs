//! Subscribing and delivering: the subscriber task starts every subscription (declarative and programmatic, and
//! again after a reload), and each message a broker hands over goes through the same steps, in this order:
//!
//! ```text
//! parse        the CloudEvent (or, with rawPayload, the bytes wrapped in one)
//! publisher    verify `wardsig` against the trust bundle (verifyPublishers, default on with mTLS), then the
//!              subscription's allowedPublishers; a failure is audited, counted and the message goes unchanged to
//!              the dead-letter topic (if any), never to the app
//! expiry       an event past its `expiration` is dropped (audited)
//! route        CEL rules, else the default path; no route → dropped
//! audit        one PUBSUB_DELIVER_ALLOW line, on disk before the app sees the event (audit, then forward)
//! deliver      HTTP: POST <path> through appHttpPipeline and --app-max-concurrency to the app channel, with the
//!              sidecar's APP_API_TOKEN, the provenance token and `ward-publisher`; gRPC: AppCallback/OnTopicEvent
//! outcome      SUCCESS → ack; DROP → dead letter (if any), ack; RETRY or failure → again after a backoff
//!              (100 ms doubling to 10 s), at most maxDeliveryAttempts (default 10) times, then dead letter, ack
//! ```
//!
//! A message is acknowledged only once its outcome is settled, so a sidecar killed mid-delivery gets it again from
//! the broker (at least once). A sidecar that is stopping leaves the message unacknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use base64::Engine;
use futures_util::FutureExt;
use http::HeaderValue;
use serde_json::{Map, Value};
use tower::{ServiceBuilder, ServiceExt};
use ward_components::pubsub::{Handler, Message, NotHandled, PubSub, PublishRequest, SubscribeRequest, Subscription};
use ward_policy::{AuditEvent, Decision, TopicOperation};

use super::PubSubCore;
use super::envelope::{self, CLOUDEVENTS_JSON, WARDSIG};
use super::signature::{Publisher, Unverified};
use super::subscriptions::{self, SubscriptionInfo, SubscriptionSpec};
use crate::grpc_api::pb::runtime as rt;
use crate::headers;
use crate::inbound::app_channel::AppChannel;
use crate::public::Readiness;

/// The header that names the verified publisher's SPIFFE ID on a delivery.
pub(crate) const PUBLISHER_HEADER: &str = "ward-publisher";
/// Dapr's default retry count for deliveries, overridden by component metadata `maxDeliveryAttempts`.
pub(crate) const DEFAULT_DELIVERY_ATTEMPTS: u32 = 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The most of an app's answer body read to find its `status`.
const ANSWER_LIMIT: u64 = 64 * 1024;

/// What delivering uses.
pub(crate) struct DeliveryHandles {
    pub(crate) core: Arc<PubSubCore>,
    pub(crate) app_channel: AppChannel,
    pub(crate) app_token: ward_gate::AppToken,
    pub(crate) provenance: Option<Arc<crate::provenance::ProvenanceIssuer>>,
    pub(crate) app_pipeline: Arc<ArcSwap<ward_middleware::Pipeline>>,
    pub(crate) audit_app_id: Arc<str>,
    pub(crate) app_permits: Option<Arc<tokio::sync::Semaphore>>,
    pub(crate) readiness: Readiness,
    /// What `/v1.0/metadata` lists.
    pub(crate) listing: Arc<ArcSwap<Vec<SubscriptionInfo>>>,
    /// The routes subscriptions deliver to, for the invocation guard in the ACL layer.
    pub(crate) routes: Arc<ArcSwap<std::collections::HashSet<String>>>,
    /// Set when the sidecar stops: deliveries in retry give the message back to the broker.
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
    /// Set when tracing makes spans: each attempt is a consumer span whose parent is the event's `traceparent`.
    pub(crate) tracing: Option<Arc<crate::otel::Tracing>>,
}

/// The broker side of one started subscription.
struct Target {
    pubsub: Arc<dyn PubSub>,
    verify: bool,
    attempts: u32,
}

/// Runs until the sidecar stops: waits for the app, reads its programmatic subscriptions, starts every
/// subscription, reports them ready, and restarts them whenever the component registry is reloaded.
pub(crate) async fn run(handles: Arc<DeliveryHandles>) {
    let mut stop = handles.stop.clone();
    let mut generation = handles.core.components.watch();
    // Read once the first pubsub is loaded (as daprd, an app without pub/sub is never asked).
    let mut programmatic: Option<Vec<Arc<SubscriptionSpec>>> = None;
    loop {
        let registry = handles.core.components.load();
        if programmatic.is_none() && registry.pubsubs().next().is_some() {
            if !wait_for_app(&handles.app_channel, &mut stop).await {
                return;
            }
            programmatic = Some(read_programmatic(&handles).await.into_iter().map(Arc::new).collect());
        }
        let mut specs: Vec<Arc<SubscriptionSpec>> = Vec::new();
        for spec in subscriptions::declarative(registry.subscriptions()) {
            match spec {
                Ok(spec) => specs.push(Arc::new(spec)),
                Err(err) => tracing::warn!("subscription not started: {err}"),
            }
        }
        specs.extend(programmatic.iter().flatten().cloned());
        let mut running: Vec<Subscription> = Vec::new();
        let mut listing = Vec::new();
        for spec in specs {
            if let Some(subscription) = start(&handles, spec.clone()).await {
                running.push(subscription);
                listing.push(SubscriptionInfo::of(&spec));
            }
        }
        handles.routes.store(Arc::new(route_paths(&listing)));
        handles.listing.store(Arc::new(listing));
        handles.readiness.set_subscriptions_pending(false);
        tokio::select! {
            changed = generation.changed() => {
                for subscription in running {
                    subscription.close().await;
                }
                if changed.is_err() {
                    return;
                }
            }
            _ = stop.changed() => {
                for subscription in running {
                    subscription.close().await;
                }
                return;
            }
        }
    }
}

/// Every path an active subscription may deliver to, normalised like an invocation's method path.
fn route_paths(listing: &[SubscriptionInfo]) -> std::collections::HashSet<String> {
    listing
        .iter()
        .flat_map(|s| s.rules.iter().map(|r| r.path.as_str()))
        .filter_map(|path| ward_policy::normalize_http_method(path.trim_start_matches('/')).ok())
        .map(|method| method.to_uri_path())
        .collect()
}

/// Waits until the app accepts connections (no app port: at once). `false` if the sidecar stopped first.
async fn wait_for_app(channel: &AppChannel, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    let Some(authority) = channel.authority().map(str::to_owned) else { return true };
    loop {
        if *stop.borrow() {
            return false;
        }
        let connect = tokio::net::TcpStream::connect(authority.as_str());
        if matches!(tokio::time::timeout(Duration::from_millis(250), connect).await, Ok(Ok(_))) {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return false,
        }
    }
}

/// The app's programmatic subscriptions; a failure is retried a few times, then logged loudly (the app's
/// declarative subscriptions still start).
async fn read_programmatic(handles: &DeliveryHandles) -> Vec<SubscriptionSpec> {
    let mut last = String::new();
    for attempt in 0..5u32 {
        match subscriptions::programmatic(&handles.app_channel, &handles.app_token).await {
            Ok(list) => {
                return list
                    .into_iter()
                    .filter_map(|spec| {
                        spec.map_err(|err| tracing::warn!("programmatic subscription not started: {err}")).ok()
                    })
                    .collect();
            }
            // An answer that is not a subscription list will not become one on a second try.
            Err(err @ subscriptions::ProgrammaticError::Json(_)) => {
                tracing::error!("the app's programmatic subscriptions could not be read; none started: {err}");
                return Vec::new();
            }
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
    }
    tracing::error!("the app's programmatic subscriptions could not be read; none started: {last}");
    Vec::new()
}

/// Judges one subscription (component loaded, topic scopes) and starts consuming. `None` when refused or when
/// the broker did not start it (logged).
pub(crate) async fn start(handles: &Arc<DeliveryHandles>, spec: Arc<SubscriptionSpec>) -> Option<Subscription> {
    let core = &handles.core;
    let registry = core.components.load();
    let Ok(entry) = registry.pubsub(&spec.pubsub) else {
        tracing::warn!(
            pubsub = %spec.pubsub,
            topic = %spec.topic,
            "subscription not started: pubsub {:?} is not loaded for this app",
            spec.pubsub
        );
        return None;
    };
    if !entry.scopes.is_allowed(&core.app_id, &spec.topic, TopicOperation::Subscribe) {
        core.metrics.authz("pubsub_subscribe", false, "topic_scopes_deny");
        let _ = core.audit.record(AuditEvent::for_pubsub(
            crate::runtime::now_rfc3339(),
            ward_policy::audit::PUBSUB_SUBSCRIBE_DENY,
            Some(&core.app_id),
            &core.app_id,
            &format!("{}/{}", spec.pubsub, spec.topic),
            Decision::Deny,
            "subscriptionScopes/allowedTopics/protectedTopics",
            "denied by the topic scopes",
        ));
        tracing::warn!(
            pubsub = %spec.pubsub,
            topic = %spec.topic,
            "subscription not started: the topic scopes of pubsub {:?} do not allow app {:?} to subscribe to {:?}",
            spec.pubsub,
            core.app_id,
            spec.topic
        );
        return None;
    }
    let verify = entry.verify_publishers.unwrap_or(true) && core.verifier.is_some();
    if entry.verify_publishers == Some(true) && core.verifier.is_none() {
        tracing::warn!(
            pubsub = %spec.pubsub,
            "NOT APPLIED: verifyPublishers needs mTLS; events on this pubsub are delivered unverified"
        );
    }
    let target = Arc::new(Target {
        pubsub: entry.pubsub.clone(),
        verify,
        attempts: entry.max_delivery_attempts.unwrap_or(DEFAULT_DELIVERY_ATTEMPTS),
    });
    let handler: Handler = {
        let handles = handles.clone();
        let spec = spec.clone();
        Arc::new(move |message: Message| deliver(handles.clone(), spec.clone(), target.clone(), message).boxed())
    };
    let request = SubscribeRequest { topic: spec.topic.clone(), metadata: spec.metadata.clone() };
    match entry.pubsub.subscribe(request, handler).await {
        Ok(subscription) => {
            tracing::info!(pubsub = %spec.pubsub, topic = %spec.topic, kind = spec.origin.kind(), "subscribed");
            Some(subscription)
        }
        Err(err) => {
            tracing::error!(
                pubsub = %spec.pubsub,
                topic = %spec.topic,
                error = %crate::error::error_chain(&err),
                "subscription not started: the broker refused"
            );
            None
        }
    }
}

/// What the app made of one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Retry(String),
    Drop(String),
    /// The receiver went away (a streaming client disconnected): the broker keeps the message.
    GiveBack(String),
}

/// How long a streaming client has to answer one event before the attempt counts as failed.
const STREAM_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

type StreamItem = Result<rt::SubscribeTopicEventsResponseAlpha1, tonic::Status>;

/// The client end of a streaming subscription (`SubscribeTopicEventsAlpha1`): events are sent on `events`, and the
/// client's `event_processed` answers complete the matching pending attempt.
pub(crate) struct StreamSink {
    pub(crate) events: tokio::sync::mpsc::Sender<StreamItem>,
    pending: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<i32>>>,
}

impl std::fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSink").finish_non_exhaustive()
    }
}

impl StreamSink {
    pub(crate) fn new(events: tokio::sync::mpsc::Sender<StreamItem>) -> StreamSink {
        StreamSink { events, pending: Default::default() }
    }

    /// The client's answer for event `id`.
    pub(crate) fn answered(&self, id: &str, status: i32) {
        let waiter = self.pending.lock().ok().and_then(|mut pending| pending.remove(id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(status);
        }
    }

    async fn send(&self, event: rt::TopicEventRequest) -> Outcome {
        let id = event.id.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id.clone(), tx);
        }
        let message = rt::SubscribeTopicEventsResponseAlpha1 {
            subscribe_topic_events_response_type: Some(
                rt::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType::EventMessage(event),
            ),
        };
        if self.events.send(Ok(message)).await.is_err() {
            return Outcome::GiveBack("the streaming client is gone".to_owned());
        }
        use rt::topic_event_response::TopicEventResponseStatus as Status;
        match tokio::time::timeout(STREAM_ANSWER_TIMEOUT, rx).await {
            Ok(Ok(status)) => match Status::try_from(status) {
                Ok(Status::Success) => Outcome::Success,
                Ok(Status::Drop) => Outcome::Drop("the client answered DROP".to_owned()),
                Ok(Status::Retry) | Err(_) => Outcome::Retry("the client answered RETRY".to_owned()),
            },
            Ok(Err(_)) => Outcome::GiveBack("the streaming client is gone".to_owned()),
            Err(_) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.remove(&id);
                }
                Outcome::Retry("the streaming client did not answer in time".to_owned())
            }
        }
    }
}

/// One message, from broker to app.
async fn deliver(
    handles: Arc<DeliveryHandles>,
    spec: Arc<SubscriptionSpec>,
    target: Arc<Target>,
    message: Message,
) -> Result<(), NotHandled> {
    let core = &handles.core;
    let operation = format!("{}/{}", spec.pubsub, spec.topic);
    let parsed = if spec.raw_payload() {
        None
    } else {
        serde_json::from_slice::<Value>(&message.data).ok().and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
    };
    let mut event = match parsed {
        Some(event) => event,
        None if target.verify => {
            return refuse(&handles, &spec, &target, &message, &operation, None, Unverified::NotAnEvent).await;
        }
        None => wrap_raw(&spec, &message),
    };
    let publisher = if target.verify {
        match core.verifier.as_ref().map(|v| v.verify(&event)) {
            Some(Ok(publisher)) => Some(publisher),
            Some(Err(why)) => return refuse(&handles, &spec, &target, &message, &operation, None, why).await,
            None => None,
        }
    } else {
        None
    };
    if let (Some(allowed), Some(p)) = (&spec.allowed_publishers, &publisher)
        && !allowed.contains(&p.app_id)
    {
        let why = Unverified::NotAllowed(p.app_id.clone());
        return refuse(&handles, &spec, &target, &message, &operation, publisher.as_ref(), why).await;
    }
    if envelope::is_expired(&event) {
        record(
            &handles,
            &operation,
            publisher.as_ref(),
            Decision::Deny,
            "expired",
            "the event's expiration has passed",
        );
        core.metrics.pubsub_delivered(&spec.pubsub, &spec.topic, "drop", 0.0);
        return Ok(());
    }
    let Some(path) = spec.routes.route(&event).map(str::to_owned) else {
        tracing::warn!(pubsub = %spec.pubsub, topic = %spec.topic, "no route matched the event; dropped");
        core.metrics.pubsub_delivered(&spec.pubsub, &spec.topic, "drop", 0.0);
        return Ok(());
    };
    // What the app receives: the verified publisher as `source`, no signature (its sidecar checked it).
    event.remove(WARDSIG);
    if let Some(p) = &publisher {
        event.insert("source".into(), p.app_id.clone().into());
    }
    let written = core
        .audit
        .record_written(AuditEvent::for_pubsub(
            crate::runtime::now_rfc3339(),
            ward_policy::audit::PUBSUB_DELIVER_ALLOW,
            publisher.as_ref().map(|p| p.id.to_string()).as_deref(),
            &handles.audit_app_id,
            &operation,
            Decision::Allow,
            if target.verify { "verifyPublishers" } else { "verifyPublishers: off" },
            if publisher.is_some() { "publisher verified" } else { "publisher not verified (verification off)" },
        ))
        .map_err(|_| NotHandled("the audit log is unavailable".to_owned()))?;
    // Audit, then forward: the line is on disk before the app sees the event.
    if written.await.is_err() {
        return Err(NotHandled("the audit log is unavailable".to_owned()));
    }
    core.metrics.authz("pubsub_deliver", true, if publisher.is_some() { "verified" } else { "unverified" });

    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=target.attempts {
        // `--enable-app-health-check`: while the app fails its probes nothing is delivered (as daprd); waiting
        // does not use up attempts.
        wait_while_unhealthy(&handles).await?;
        let started = Instant::now();
        let outcome = match &handles.tracing {
            None => attempt_once(&handles, &spec, &event, &path, publisher.as_ref()).await,
            Some(tracing) => {
                traced_attempt(tracing, attempt_once(&handles, &spec, &event, &path, publisher.as_ref()), &spec, &event)
                    .await
            }
        };
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Outcome::Success => {
                core.metrics.pubsub_delivered(&spec.pubsub, &spec.topic, "success", millis);
                return Ok(());
            }
            Outcome::Drop(why) => {
                core.metrics.pubsub_delivered(&spec.pubsub, &spec.topic, "drop", millis);
                tracing::warn!(pubsub = %spec.pubsub, topic = %spec.topic, "the app dropped the event: {why}");
                return dead_letter(&target, &spec, &message).await;
            }
            Outcome::GiveBack(why) => return Err(NotHandled(why)),
            Outcome::Retry(why) => {
                core.metrics.pubsub_delivered(&spec.pubsub, &spec.topic, "retry", millis);
                tracing::debug!(pubsub = %spec.pubsub, topic = %spec.topic, attempt, "delivery will be retried: {why}");
                last = why;
            }
        }
        if attempt == target.attempts {
            break;
        }
        let mut stop = handles.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|stopping| *stopping) => {
                return Err(NotHandled("the sidecar is stopping".to_owned()));
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    tracing::error!(
        pubsub = %spec.pubsub,
        topic = %spec.topic,
        attempts = target.attempts,
        "delivery failed after every attempt: {last}"
    );
    dead_letter(&target, &spec, &message).await
}

async fn wait_while_unhealthy(handles: &DeliveryHandles) -> Result<(), NotHandled> {
    let mut stop = handles.stop.clone();
    while !handles.readiness.app_healthy() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|stopping| *stopping) => return Err(NotHandled("the sidecar is stopping".to_owned())),
        }
    }
    Ok(())
}

/// With `rawPayload` (and verification off), the bytes become the data of a CloudEvent, as Dapr does.
fn wrap_raw(spec: &SubscriptionSpec, message: &Message) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
    event.insert("specversion".into(), "1.0".into());
    event.insert("source".into(), "pubsub".into());
    event.insert("type".into(), envelope::EVENT_TYPE.into());
    event.insert("topic".into(), spec.topic.clone().into());
    event.insert("pubsubname".into(), spec.pubsub.clone().into());
    event.insert("datacontenttype".into(), "application/octet-stream".into());
    event.insert("data_base64".into(), base64::engine::general_purpose::STANDARD.encode(&message.data).into());
    event
}

fn record(
    handles: &DeliveryHandles,
    operation: &str,
    publisher: Option<&Publisher>,
    decision: Decision,
    rule: &str,
    reason: &str,
) {
    let core = &handles.core;
    let event = if decision == Decision::Allow {
        ward_policy::audit::PUBSUB_DELIVER_ALLOW
    } else {
        ward_policy::audit::PUBSUB_DELIVER_DENY
    };
    let _ = core.audit.record(AuditEvent::for_pubsub(
        crate::runtime::now_rfc3339(),
        event,
        publisher.map(|p| p.id.to_string()).as_deref(),
        &handles.audit_app_id,
        operation,
        decision,
        rule,
        reason,
    ));
}

/// An event whose publisher is not verified: audited, counted, and moved unchanged to the dead-letter topic.
async fn refuse(
    handles: &DeliveryHandles,
    spec: &SubscriptionSpec,
    target: &Target,
    message: &Message,
    operation: &str,
    publisher: Option<&Publisher>,
    why: Unverified,
) -> Result<(), NotHandled> {
    let reason = why.to_string();
    tracing::warn!(pubsub = %spec.pubsub, topic = %spec.topic, "event not delivered: {reason}");
    let rule = if matches!(why, Unverified::NotAllowed(_)) { "allowedPublishers" } else { "verifyPublishers" };
    record(handles, operation, publisher, Decision::Deny, rule, &reason);
    let label = match why {
        Unverified::NotAnEvent => "not_an_event",
        Unverified::Missing => "unsigned",
        Unverified::Malformed(_) => "malformed_signature",
        Unverified::Chain(_) => "untrusted_chain",
        Unverified::Signature => "bad_signature",
        Unverified::NotAllowed(_) => "publisher_not_allowed",
    };
    handles.core.metrics.authz("pubsub_deliver", false, label);
    dead_letter(target, spec, message).await
}

/// Publishes the message exactly as received to the subscription's dead-letter topic (never re-signed), then
/// acknowledges it. Without a dead-letter topic the message is dropped (logged by the caller).
async fn dead_letter(target: &Target, spec: &SubscriptionSpec, message: &Message) -> Result<(), NotHandled> {
    let Some(topic) = &spec.dead_letter_topic else { return Ok(()) };
    let request = PublishRequest { topic: topic.clone(), data: message.data.clone(), metadata: BTreeMap::new() };
    target.pubsub.publish(request).await.map_err(|err| {
        tracing::error!(
            pubsub = %spec.pubsub,
            topic = %topic,
            error = %crate::error::error_chain(&err),
            "the dead-letter topic refused the message; it stays with the broker"
        );
        NotHandled("dead-letter publish failed".to_owned())
    })
}

/// `attempt` inside a consumer span `pubsub/<topic>`, child of the publisher's span (the event's `traceparent`;
/// a new trace when it has none or a malformed one). The app channel's span, and the app's `traceparent`, follow.
async fn traced_attempt(
    tracing: &Arc<crate::otel::Tracing>,
    attempt: impl std::future::Future<Output = Outcome>,
    spec: &SubscriptionSpec,
    event: &Map<String, Value>,
) -> Outcome {
    use opentelemetry::context::FutureExt as _;
    let parent = crate::otel::propagation::from_values(
        event.get("traceparent").and_then(Value::as_str),
        event.get("tracestate").and_then(Value::as_str),
    );
    let cx = tracing.start_remote(
        format!("pubsub/{}", spec.topic),
        opentelemetry::trace::SpanKind::Consumer,
        parent,
        vec![
            opentelemetry::KeyValue::new("messaging.system", "dapr"),
            opentelemetry::KeyValue::new("messaging.destination.name", spec.topic.clone()),
            opentelemetry::KeyValue::new("ward.pubsub", spec.pubsub.clone()),
        ],
    );
    let outcome = attempt.with_context(cx.clone()).await;
    match &outcome {
        Outcome::Success => crate::otel::end_with_status(&cx, 200),
        Outcome::Drop(_) => crate::otel::end_failed(&cx, "dropped by the app"),
        Outcome::Retry(_) | Outcome::GiveBack(_) => crate::otel::end_failed(&cx, "not handled; retried later"),
    }
    outcome
}

/// One delivery attempt through the app channel.
async fn attempt_once(
    handles: &DeliveryHandles,
    spec: &SubscriptionSpec,
    event: &Map<String, Value>,
    path: &str,
    publisher: Option<&Publisher>,
) -> Outcome {
    let token = match mint(handles, spec, path, publisher) {
        Ok(token) => token,
        Err(why) => return Outcome::Retry(why),
    };
    if let Some(stream) = &spec.stream {
        return stream.send(topic_event(spec, event, path)).await;
    }
    if let Some(callback) = handles.app_channel.callback() {
        return on_topic_event(handles, callback, spec, event, path, publisher, token).await;
    }
    let body = serde_json::to_vec(event).unwrap_or_default();
    let mut request = http::Request::new(Body::from(body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return Outcome::Drop(format!("route {path:?} is not a valid path")),
    };
    let raw = path.trim_start_matches('/');
    let prepared = match ward_policy::prepare_invocation(
        &ward_policy::InvocationMethod::Http { raw, verb: "POST" },
        ward_policy::AppProtocol::Http,
    ) {
        Ok(prepared) => prepared,
        Err(_) => return Outcome::Drop(format!("route {path:?} is not a valid path")),
    };
    request.extensions_mut().insert(prepared);
    let headers = request.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(CLOUDEVENTS_JSON));
    handles.app_token.apply(headers);
    if let Some(token) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert(headers::PROVENANCE, token);
    }
    if let Some(value) = publisher.and_then(|p| HeaderValue::from_str(&p.id.to_string()).ok()) {
        headers.insert(PUBLISHER_HEADER, value);
    }
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = event.get(name).and_then(Value::as_str).and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    }
    let stack = ServiceBuilder::new()
        .layer(crate::inbound::middleware::AppPipelineLayer {
            pipeline: handles.app_pipeline.clone(),
            audit: handles.core.audit.clone(),
            app_id: handles.audit_app_id.clone(),
            metrics: handles.core.metrics.clone(),
        })
        .layer(crate::inbound::concurrency::ConcurrencyLimitLayer(handles.app_permits.clone()))
        .service(handles.app_channel.clone());
    match stack.oneshot(request).await {
        Ok(response) => http_outcome(response).await,
        Err(err) => Outcome::Retry(err.to_refusal().message),
    }
}

/// The provenance token for a delivery: `sub` is the verified publisher, or `pubsub:<component>` when publishers
/// are not verified.
fn mint(
    handles: &DeliveryHandles,
    spec: &SubscriptionSpec,
    path: &str,
    publisher: Option<&Publisher>,
) -> Result<Option<String>, String> {
    let Some(issuer) = &handles.provenance else { return Ok(None) };
    let subject = match publisher {
        Some(p) => p.id.to_string(),
        None => format!("pubsub:{}", spec.pubsub),
    };
    let request =
        crate::provenance::TokenRequest { subject, capabilities: Vec::new(), method: "POST", path: path.to_owned() };
    issuer.mint(request).map(Some).map_err(|err| format!("provenance token not signed: {err}"))
}

/// Dapr's reading of an HTTP app's answer.
async fn http_outcome(response: http::Response<Body>) -> Outcome {
    let status = response.status();
    if status == http::StatusCode::NOT_FOUND {
        return Outcome::Drop("the app answered 404 for the route".to_owned());
    }
    if !status.is_success() {
        return Outcome::Retry(format!("the app answered {status}"));
    }
    let body = crate::body::read_limited(response.into_body(), ANSWER_LIMIT).await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Answer {
        status: Option<String>,
    }
    match serde_json::from_slice::<Answer>(&body).ok().and_then(|a| a.status) {
        None => Outcome::Success,
        Some(s) if s.eq_ignore_ascii_case("SUCCESS") || s.is_empty() => Outcome::Success,
        Some(s) if s.eq_ignore_ascii_case("DROP") => Outcome::Drop("the app answered DROP".to_owned()),
        Some(s) if s.eq_ignore_ascii_case("RETRY") => Outcome::Retry("the app answered RETRY".to_owned()),
        Some(s) => Outcome::Retry(format!("unknown status {s:?}")),
    }
}

/// The event as gRPC delivers it (`OnTopicEvent`, streaming subscriptions).
fn topic_event(spec: &SubscriptionSpec, event: &Map<String, Value>, path: &str) -> rt::TopicEventRequest {
    let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    rt::TopicEventRequest {
        id: text("id"),
        source: text("source"),
        r#type: text("type"),
        spec_version: text("specversion"),
        data_content_type: text("datacontenttype"),
        data: envelope::data_bytes(event),
        topic: spec.topic.clone(),
        pubsub_name: spec.pubsub.clone(),
        path: if path == "/" { String::new() } else { path.to_owned() },
        extensions: None,
    }
}

/// A gRPC app: `AppCallback/OnTopicEvent`, with the same token and headers as metadata.
async fn on_topic_event(
    handles: &DeliveryHandles,
    mut callback: rt::app_callback_client::AppCallbackClient<tonic::transport::Channel>,
    spec: &SubscriptionSpec,
    event: &Map<String, Value>,
    path: &str,
    publisher: Option<&Publisher>,
    token: Option<String>,
) -> Outcome {
    let mut request = tonic::Request::new(topic_event(spec, event, path));
    let mut headers = http::HeaderMap::new();
    handles.app_token.apply(&mut headers);
    // The app channel's span (tracing on), child of the delivery span, as for an HTTP app; the app receives its
    // `traceparent` (and `tracestate`) as metadata.
    let span = crate::otel::child(
        || "app-channel".into(),
        opentelemetry::trace::SpanKind::Client,
        || {
            vec![
                opentelemetry::KeyValue::new("rpc.system", "grpc"),
                opentelemetry::KeyValue::new("rpc.method", "/dapr.proto.runtime.v1.AppCallback/OnTopicEvent"),
            ]
        },
    );
    if let Some(cx) = &span {
        crate::otel::inject(cx, &mut headers, false);
    }
    let metadata = request.metadata_mut();
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            metadata.insert(name, value);
        }
    }
    if let Some(value) = headers.get(headers::API_TOKEN).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
        metadata.insert(headers::API_TOKEN, value);
    }
    if let Some(value) = token.and_then(|t| t.parse().ok()) {
        metadata.insert(headers::PROVENANCE, value);
    }
    if let Some(value) = publisher.and_then(|p| p.id.to_string().parse().ok()) {
        metadata.insert(PUBLISHER_HEADER, value);
    }
    let _permit = match &handles.app_permits {
        Some(permits) => match permits.clone().acquire_owned().await {
            Ok(permit) => Some(permit),
            Err(_) => return Outcome::Retry("the app channel is closed".to_owned()),
        },
        None => None,
    };
    use rt::topic_event_response::TopicEventResponseStatus as Status;
    let answer = callback.on_topic_event(request).await;
    if let Some(cx) = &span {
        match &answer {
            Ok(_) => opentelemetry::trace::TraceContextExt::span(cx).end(),
            Err(_) => crate::otel::end_failed(cx, "not delivered to the app"),
        }
    }
    match answer {
        Ok(answer) => match Status::try_from(answer.into_inner().status) {
            Ok(Status::Success) => Outcome::Success,
            Ok(Status::Drop) => Outcome::Drop("the app answered DROP".to_owned()),
            Ok(Status::Retry) | Err(_) => Outcome::Retry("the app answered RETRY".to_owned()),
        },
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            Outcome::Drop("the app does not implement OnTopicEvent".to_owned())
        }
        Err(status) => Outcome::Retry(format!("OnTopicEvent failed: {}", status.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn outcome(status: u16, body: &'static str) -> Outcome {
        let mut response = http::Response::new(Body::from(body));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        http_outcome(response).await
    }

    #[tokio::test]
    async fn app_answers_read_as_dapr() {
        assert_eq!(outcome(200, "").await, Outcome::Success);
        assert_eq!(outcome(204, "").await, Outcome::Success);
        assert_eq!(outcome(200, "not json").await, Outcome::Success);
        assert_eq!(outcome(200, r#"{"status":"SUCCESS"}"#).await, Outcome::Success);
        assert!(matches!(outcome(200, r#"{"status":"RETRY"}"#).await, Outcome::Retry(_)));
        assert!(matches!(outcome(200, r#"{"status":"DROP"}"#).await, Outcome::Drop(_)));
        assert!(matches!(outcome(200, r#"{"status":"MAYBE"}"#).await, Outcome::Retry(_)));
        assert!(matches!(outcome(404, "").await, Outcome::Drop(_)));
        assert!(matches!(outcome(500, "").await, Outcome::Retry(_)));
        assert!(matches!(outcome(401, "").await, Outcome::Retry(_)));
    }
}
