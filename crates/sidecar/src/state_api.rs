//! The Dapr state HTTP API (`/v1.0/state/...`): save, get, delete, bulk get and transactions, with Dapr's request
//! shapes and answers.
//!
//! Owns: parsing requests (bodies bounded by `--max-body-size`), refusing keys with `||`, applying the store's
//! `keyPrefix`, and turning [`StateError`]s into [`ApiError`]s (which `error.rs` maps to status and `errorCode`).
//! A value is any JSON and is stored as its compact JSON bytes (as daprd, which re-marshals it), so a GET returns
//! exactly those bytes.
//!
//! Does not: decide which stores exist or are in scope (the registry answers; an out-of-scope store is simply not
//! in it), implement ETag/TTL/transaction semantics (the stores do), or check API tokens (a layer on the whole
//! public router). No error built here contains a state value.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use ward_components::state::Concurrency;

use crate::error::{ApiError, StateFailure};
use crate::state;

/// The state routes; merged into the public router.
pub fn router() -> Router<crate::public::ApiState> {
    Router::new()
        .route("/v1.0/state/{store}", post(save))
        .route("/v1.0/state/{store}/bulk", post(bulk_get))
        .route("/v1.0/state/{store}/transaction", post(transaction))
        .route("/v1.0/state/{store}/{key}", get(get_state).delete(delete_state))
}

/// `options` of a save or transaction item.
#[derive(Debug, Default, Deserialize)]
struct StateOptions {
    #[serde(default)]
    concurrency: Option<String>,
    /// Accepted and ignored: every ward store is strongly consistent.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted for Dapr compatibility; every ward store is strongly consistent")]
    consistency: Option<String>,
}

/// One item of a save request, or the `request` of a transaction operation.
#[derive(Deserialize)]
struct SaveItem {
    key: String,
    #[serde(default)]
    value: serde_json::Value,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    options: Option<StateOptions>,
    /// Dapr's metadata is `map[string]string`; a number for `ttlInSeconds` is accepted too.
    #[serde(default)]
    metadata: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct BulkRequest {
    #[serde(default)]
    keys: Vec<String>,
    /// Accepted and ignored: the store reads all keys in one round trip.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted for Dapr compatibility; stores read all keys in one round trip")]
    parallelism: Option<i64>,
}

#[derive(Serialize)]
struct BulkItem {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
}

#[derive(Deserialize)]
struct TransactionRequest {
    #[serde(default)]
    operations: Vec<TransactionOperation>,
}

#[derive(Deserialize)]
struct TransactionOperation {
    operation: String,
    request: SaveItem,
}

/// Reads the body, bounded by `--max-body-size`.
/// A state operation in its own client span (tracing on): the operation and the store name, never a key or value.
/// Used by the HTTP and gRPC front ends alike.
pub(crate) async fn traced<T>(
    operation: &'static str,
    store: &str,
    future: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    crate::otel::in_child(
        || format!("state/{operation}").into(),
        opentelemetry::trace::SpanKind::Client,
        || {
            vec![
                opentelemetry::KeyValue::new("db.operation.name", operation),
                opentelemetry::KeyValue::new("ward.component", store.to_owned()),
            ]
        },
        future,
    )
    .await
}

pub(crate) async fn read_body(limit: u64, body: Body) -> Result<Bytes, ApiError> {
    crate::body::read_limited(body, limit).await.map_err(|err| match err {
        crate::body::ReadBodyError::TooLarge { limit } => ApiError::BodyTooLarge { limit },
        crate::body::ReadBodyError::Read(detail) => {
            ApiError::Malformed { detail: format!("failed reading the request body: {detail}") }
        }
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::Malformed { detail: format!("failed deserializing HTTP body: {err}") })
}

fn path_error(err: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::Malformed { detail: format!("invalid request path: {}", err.body_text()) }
}

fn concurrency(options: Option<&StateOptions>) -> Result<Concurrency, String> {
    state::parse_concurrency(options.and_then(|o| o.concurrency.as_deref()).unwrap_or(""))
}

/// `metadata.ttlInSeconds` (Dapr's metadata is `map[string]string`; a JSON number is accepted too).
fn ttl(metadata: &HashMap<String, serde_json::Value>) -> Result<Option<Duration>, String> {
    match metadata.get("ttlInSeconds") {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => state::parse_ttl(Some(s)),
        Some(serde_json::Value::Number(n)) => state::parse_ttl(Some(&n.to_string())),
        Some(_) => Err("metadata.ttlInSeconds: expected an integer".to_owned()),
    }
}

/// A JSON save item as a core item; the value is stored as its compact JSON bytes.
fn save_item(item: SaveItem) -> Result<state::SaveItem, String> {
    state::refuse_unapplied_metadata(item.metadata.keys().map(String::as_str))?;
    let concurrency = concurrency(item.options.as_ref())?;
    let ttl = ttl(&item.metadata)?;
    let value = serde_json::to_vec(&item.value).map_err(|err| format!("value: {err}"))?;
    Ok(state::SaveItem { key: item.key, value: value.into(), etag: item.etag, concurrency, ttl })
}

async fn save(
    State(core): State<Arc<state::StateCore>>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Body,
) -> Response {
    let result = async {
        let Path(store) = path.map_err(path_error)?;
        // Look the store up before reading the body: a missing store answers the same whatever was sent.
        state::lookup(&core.components.load(), &store)?;
        let items: Vec<SaveItem> = parse_json(&read_body(core.max_body_size, body).await?)?;
        let items = items.into_iter().map(save_item).collect::<Result<Vec<_>, _>>().map_err(|detail| {
            ApiError::StateSave { store: store.clone(), failure: StateFailure::BadRequest, detail }
        })?;
        traced("save", &store, state::save(&core, &store, items)).await?;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn get_state(
    State(core): State<Arc<state::StateCore>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Response {
    let result = async {
        let Path((store, key)) = path.map_err(path_error)?;
        let Some(item) = traced("get", &store, state::get(&core, &store, &key)).await? else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        let mut response = Response::new(Body::from(item.value));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(etag) = HeaderValue::from_str(&item.etag) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        Ok::<_, ApiError>(response)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn delete_state(
    State(core): State<Arc<state::StateCore>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let Path((store, key)) = path.map_err(path_error)?;
        state::lookup(&core.components.load(), &store)?;
        let bad =
            |detail: String| ApiError::StateDelete { key: key.clone(), failure: StateFailure::BadRequest, detail };
        let etag = match headers.get(header::IF_MATCH) {
            Some(value) => Some(value.to_str().map_err(|_| bad("If-Match is not a valid ETag".to_owned()))?.to_owned()),
            None => None,
        };
        let query = query.map(|Query(q)| q).unwrap_or_default();
        let concurrency =
            state::parse_concurrency(query.get("concurrency").map(String::as_str).unwrap_or("")).map_err(bad)?;
        traced("delete", &store, state::delete(&core, &store, &key, etag, concurrency)).await?;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn bulk_get(
    State(core): State<Arc<state::StateCore>>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Body,
) -> Response {
    let result = async {
        let Path(store) = path.map_err(path_error)?;
        state::lookup(&core.components.load(), &store)?;
        let request: BulkRequest = parse_json(&read_body(core.max_body_size, body).await?)?;
        let found = traced("bulk_get", &store, state::bulk_get(&core, &store, request.keys)).await?;
        let items: Vec<BulkItem> = found
            .into_iter()
            .map(|(key, item)| match item {
                Some(item) => BulkItem { key, data: Some(as_json(&item.value)), etag: Some(item.etag) },
                None => BulkItem { key, data: None, etag: None },
            })
            .collect();
        Ok::<_, ApiError>(axum::Json(items).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// A stored value as JSON for a bulk answer. Values saved through this API are JSON; one written otherwise (e.g.
/// by another client of the same backend) is returned as a string rather than failing the whole answer.
fn as_json(value: &[u8]) -> serde_json::Value {
    serde_json::from_slice(value).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(value).into()))
}

async fn transaction(
    State(core): State<Arc<state::StateCore>>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Body,
) -> Response {
    let result = async {
        let Path(store) = path.map_err(path_error)?;
        state::lookup(&core.components.load(), &store)?;
        let request: TransactionRequest = parse_json(&read_body(core.max_body_size, body).await?)?;
        let bad = |detail: String| ApiError::StateTransaction { failure: StateFailure::BadRequest, detail };
        let mut items = Vec::with_capacity(request.operations.len());
        for op in request.operations {
            items.push(match op.operation.as_str() {
                "upsert" => state::TxItem::Upsert(save_item(op.request).map_err(bad)?),
                "delete" => {
                    state::refuse_unapplied_metadata(op.request.metadata.keys().map(String::as_str)).map_err(bad)?;
                    let concurrency = concurrency(op.request.options.as_ref()).map_err(bad)?;
                    state::TxItem::Delete { key: op.request.key, etag: op.request.etag, concurrency }
                }
                other => {
                    return Err(ApiError::StateNotSupported {
                        detail: format!("operation type {other} not supported"),
                    });
                }
            });
        }
        traced("transaction", &store, state::transact(&core, &store, items)).await?;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::error_chain;
    use crate::state::failure;
    use ward_components::state::StateError;

    #[test]
    fn ttl_cases() {
        let md = |v: serde_json::Value| HashMap::from([("ttlInSeconds".to_owned(), v)]);
        assert_eq!(ttl(&HashMap::new()), Ok(None));
        assert_eq!(ttl(&md(serde_json::json!("10"))), Ok(Some(Duration::from_secs(10))));
        assert_eq!(ttl(&md(serde_json::json!(10))), Ok(Some(Duration::from_secs(10))));
        assert_eq!(ttl(&md(serde_json::json!("-1"))), Ok(None), "-1 means never expire");
        assert_eq!(ttl(&md(serde_json::json!("0"))), Ok(None));
        assert!(ttl(&md(serde_json::json!("soon"))).is_err());
        assert!(ttl(&md(serde_json::json!(1.5))).is_err());
    }

    #[test]
    fn concurrency_cases() {
        let opts = |c: &str| StateOptions { concurrency: Some(c.to_owned()), consistency: None };
        assert_eq!(concurrency(None), Ok(Concurrency::LastWrite));
        assert_eq!(concurrency(Some(&opts(""))), Ok(Concurrency::LastWrite));
        assert_eq!(concurrency(Some(&opts("last-write"))), Ok(Concurrency::LastWrite));
        assert_eq!(concurrency(Some(&opts("first-write"))), Ok(Concurrency::FirstWrite));
        assert!(concurrency(Some(&opts("First-Write"))).is_err());
    }

    #[test]
    fn state_errors_map_to_dapr_statuses() {
        let cases = [
            (StateError::EtagMismatch { key: "k".into() }, StatusCode::CONFLICT),
            (StateError::InvalidEtag { key: "k".into() }, StatusCode::BAD_REQUEST),
            (StateError::Backend { operation: "set", source: "down".into() }, StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (err, want) in cases {
            let api = ApiError::StateSave { store: "s".into(), failure: failure(&err), detail: error_chain(&err) };
            let (status, body) = api.status_and_body();
            assert_eq!(status, want, "{err}");
            assert_eq!(body.error_code, "ERR_STATE_SAVE");
            assert!(body.message.starts_with("failed saving state in state store s: "), "{}", body.message);
        }
        let (status, body) = ApiError::StateStoreNotConfigured.status_and_body();
        assert_eq!(
            (status, body.message.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "state store is not configured")
        );
    }
}
