//! The gRPC front end of pub/sub: `PublishEvent`, `BulkPublishEvent(Alpha1)` and the streaming subscription
//! `SubscribeTopicEventsAlpha1` (what the Python SDK's `subscribe` / `subscribe_with_handler` use). Thin adapters
//! over [`super::PubSubCore`] and the delivery steps of `delivery.rs`, which every subscription form shares.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use ward_policy::TopicOperation;

use super::delivery::{self, StreamSink};
use super::subscriptions::{Origin, SubscriptionSpec};
use super::{BulkEntry, Publish};
use crate::error::ApiError;
use crate::grpc_api::GrpcApi;
use crate::grpc_api::pb::runtime as rt;

type EventStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<rt::SubscribeTopicEventsResponseAlpha1, Status>> + Send>>;

fn header(request: &tonic::metadata::MetadataMap, name: &str) -> Option<String> {
    request.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl GrpcApi {
    pub(crate) async fn handle_publish_event(
        &self,
        request: Request<rt::PublishEventRequest>,
    ) -> Result<Response<()>, Status> {
        let traceparent = header(request.metadata(), "traceparent");
        let tracestate = header(request.metadata(), "tracestate");
        let r = request.into_inner();
        let publish = Publish {
            pubsub: r.pubsub_name,
            topic: r.topic,
            data: Bytes::from(r.data),
            content_type: non_empty(r.data_content_type),
            metadata: r.metadata.into_iter().collect(),
            traceparent,
            tracestate,
        };
        self.delivery.core.publish(publish).await.map_err(|err| err.to_status())?;
        Ok(Response::new(()))
    }

    pub(crate) async fn handle_bulk_publish_event(
        &self,
        request: Request<rt::BulkPublishRequest>,
    ) -> Result<Response<rt::BulkPublishResponse>, Status> {
        let traceparent = header(request.metadata(), "traceparent");
        let tracestate = header(request.metadata(), "tracestate");
        let r = request.into_inner();
        let entries = r
            .entries
            .into_iter()
            .map(|e| BulkEntry {
                entry_id: e.entry_id,
                data: Bytes::from(e.event),
                content_type: non_empty(e.content_type),
                metadata: e.metadata.into_iter().collect(),
            })
            .collect();
        let metadata: BTreeMap<String, String> = r.metadata.into_iter().collect();
        let failed = self
            .delivery
            .core
            .publish_bulk(&r.pubsub_name, &r.topic, entries, &metadata, (traceparent.as_deref(), tracestate.as_deref()))
            .await
            .map_err(|err| err.to_status())?;
        Ok(Response::new(rt::BulkPublishResponse {
            failed_entries: failed
                .into_iter()
                .map(|(entry_id, error)| rt::BulkPublishResponseFailedEntry { entry_id, error })
                .collect(),
        }))
    }

    /// A streaming subscription: the first message names pubsub and topic (judged like every subscription: the
    /// component must be loaded for this app and the topic scopes must allow it); events then flow to the client
    /// and its `event_processed` answers settle them. The subscription ends with the stream.
    pub(crate) async fn handle_subscribe_topic_events(
        &self,
        request: Request<tonic::Streaming<rt::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<EventStream>, Status> {
        use rt::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as Type;
        let mut incoming = request.into_inner();
        let initial = match incoming.next().await {
            Some(Ok(rt::SubscribeTopicEventsRequestAlpha1 {
                subscribe_topic_events_request_type: Some(Type::InitialRequest(initial)),
            })) => initial,
            Some(Err(status)) => return Err(status),
            _ => return Err(Status::invalid_argument("the first message must be the initial subscription request")),
        };
        let core = &self.delivery.core;
        if initial.pubsub_name.is_empty() {
            return Err(ApiError::PubSubEmpty.to_status());
        }
        if initial.topic.is_empty() {
            return Err(ApiError::TopicEmpty { pubsub: initial.pubsub_name }.to_status());
        }
        {
            let registry = core.components.load();
            let entry = super::lookup(&registry, &initial.pubsub_name).map_err(|err| err.to_status())?;
            if !entry.scopes.is_allowed(&core.app_id, &initial.topic, TopicOperation::Subscribe) {
                // Audited by `delivery::start`, which judges it again.
                let _ = delivery::start(&self.delivery, Arc::new(self.streaming_spec(&initial, None)?)).await;
                return Err(
                    ApiError::PubSubForbidden { topic: initial.topic, app_id: core.app_id.to_string() }.to_status()
                );
            }
        }
        let (events_tx, events_rx) = tokio::sync::mpsc::channel(16);
        let sink = Arc::new(StreamSink::new(events_tx.clone()));
        let spec = Arc::new(self.streaming_spec(&initial, Some(sink.clone()))?);
        let Some(subscription) = delivery::start(&self.delivery, spec).await else {
            return Err(Status::internal("the broker did not start the subscription"));
        };
        let initial_response = rt::SubscribeTopicEventsResponseAlpha1 {
            subscribe_topic_events_response_type: Some(
                rt::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType::InitialResponse(
                    rt::SubscribeTopicEventsResponseInitialAlpha1 {},
                ),
            ),
        };
        let _ = events_tx.send(Ok(initial_response)).await;
        // The client's answers; when its stream ends, so does the subscription.
        tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                if let Some(Type::EventProcessed(done)) = message.subscribe_topic_events_request_type {
                    sink.answered(&done.id, done.status.map_or(1, |s| s.status));
                }
            }
            subscription.close().await;
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(events_rx))))
    }

    fn streaming_spec(
        &self,
        initial: &rt::SubscribeTopicEventsRequestInitialAlpha1,
        stream: Option<Arc<StreamSink>>,
    ) -> Result<SubscriptionSpec, Status> {
        let mut spec = SubscriptionSpec::new(
            initial.pubsub_name.clone(),
            initial.topic.clone(),
            Vec::new(),
            Some("/".to_owned()),
            initial.dead_letter_topic.clone(),
            initial.metadata.clone().into_iter().collect(),
            Origin::Streaming,
        )
        .map_err(Status::invalid_argument)?;
        spec.stream = stream;
        Ok(spec)
    }
}
