//! The HTTP front end of publishing: `POST /v1.0/publish/{pubsub}/{topic}` (204) and
//! `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}` (204, or 500 naming the failed entries), with `metadata.*`
//! query parameters. A thin adapter over [`PubSubCore`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::{BulkEntry, PubSubCore, Publish};
use crate::error::ApiError;

pub(crate) fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<PubSubCore>: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/v1.0/publish/{pubsub}/{*topic}", post(publish))
        .route("/v1.0/publish/{pubsub}", post(publish_without_topic))
        .route("/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}", post(publish_bulk))
        .route("/v1.0-alpha1/publish/bulk/{pubsub}", post(publish_without_topic))
}

/// `metadata.<key>=<value>` query parameters, without the prefix.
fn request_metadata(query: &[(String, String)]) -> BTreeMap<String, String> {
    query.iter().filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k.to_owned(), v.clone()))).collect()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn publish(
    State(core): State<Arc<PubSubCore>>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let publish = Publish {
        pubsub,
        topic,
        data: body,
        content_type: header(&headers, "content-type"),
        metadata: request_metadata(&query),
        traceparent: header(&headers, "traceparent"),
        tracestate: header(&headers, "tracestate"),
    };
    match core.publish(publish).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => err.into_response(),
    }
}

async fn publish_without_topic(Path(pubsub): Path<String>) -> Response {
    ApiError::TopicEmpty { pubsub }.into_response()
}

/// One entry of Dapr's bulk publish body.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBulkEntry {
    entry_id: String,
    event: serde_json::Value,
    content_type: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

async fn publish_bulk(
    State(core): State<Arc<PubSubCore>>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let entries: Vec<RawBulkEntry> = match serde_json::from_slice(&body) {
        Ok(entries) => entries,
        Err(err) => {
            return ApiError::Malformed { detail: format!("error when unmarshalling the request: {err}") }
                .into_response();
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut bulk = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.entry_id.is_empty() || !seen.insert(entry.entry_id.clone()) {
            return ApiError::Malformed { detail: "every entryId must be set and unique".to_owned() }.into_response();
        }
        // A string event is the data itself; anything else is JSON.
        let data = match entry.event {
            serde_json::Value::String(text) => Bytes::from(text),
            other => Bytes::from(other.to_string()),
        };
        bulk.push(BulkEntry {
            entry_id: entry.entry_id,
            data,
            content_type: entry.content_type,
            metadata: entry.metadata,
        });
    }
    let traceparent = header(&headers, "traceparent");
    let tracestate = header(&headers, "tracestate");
    let metadata = request_metadata(&query);
    match core.publish_bulk(&pubsub, &topic, bulk, &metadata, (traceparent.as_deref(), tracestate.as_deref())).await {
        Ok(failed) if failed.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(failed) => ApiError::PubSubBulkFailed { failed }.into_response(),
        Err(err) => err.into_response(),
    }
}
