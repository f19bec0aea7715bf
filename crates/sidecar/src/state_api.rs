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
use ward_components::state::{
    Concurrency, DeleteRequest, KeyPrefix, SetRequest, StateError, StateStore, TransactionOp,
};

use crate::components::{Missing, Registry, StateEntry};
use crate::error::{ApiError, StateFailure};
use crate::internal::error_chain;
use crate::runtime::Shared;

/// The state routes; merged into the public router.
pub fn router() -> Router<Arc<Shared>> {
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

/// The registry entry for `store`, or Dapr's answer for a missing one (also for an out-of-scope one: it is not
/// in the registry).
fn lookup<'a>(registry: &'a Registry, store: &str) -> Result<&'a StateEntry, ApiError> {
    registry.state_store(store).map_err(|missing| match missing {
        Missing::NotConfigured => ApiError::StateStoreNotConfigured,
        Missing::NotFound => ApiError::StateStoreNotFound { name: store.to_owned() },
    })
}

/// Refuses `||` in a key, then applies the store's prefix.
fn stored_key(shared: &Shared, prefix: &KeyPrefix, store: &str, key: &str) -> Result<String, ApiError> {
    KeyPrefix::check_key(key).map_err(|err| ApiError::Malformed { detail: err.to_string() })?;
    Ok(prefix.apply(shared.app_id(), store, shared.namespace(), key))
}

/// Reads the body, bounded by `--max-body-size`.
pub(crate) async fn read_body(shared: &Shared, body: Body) -> Result<Bytes, ApiError> {
    let limit = shared.max_body_size();
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge { limit }),
        Err(err) => Err(ApiError::Malformed { detail: format!("failed reading the request body: {err}") }),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::Malformed { detail: format!("failed deserializing HTTP body: {err}") })
}

fn path_error(err: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::Malformed { detail: format!("invalid request path: {}", err.body_text()) }
}

/// What a [`StateError`] means for the status of a write.
fn failure(err: &StateError) -> StateFailure {
    match err {
        StateError::EtagMismatch { .. } => StateFailure::EtagMismatch,
        StateError::InvalidEtag { .. } => StateFailure::InvalidEtag,
        StateError::Backend { .. } | StateError::NotSupported { .. } => StateFailure::Backend,
    }
}

fn concurrency(options: Option<&StateOptions>) -> Result<Concurrency, String> {
    match options.and_then(|o| o.concurrency.as_deref()).unwrap_or("") {
        "" | "last-write" => Ok(Concurrency::LastWrite),
        "first-write" => Ok(Concurrency::FirstWrite),
        other => Err(format!("unrecognized concurrency model {other:?} (first-write or last-write)")),
    }
}

/// `metadata.ttlInSeconds`: positive = expire after that many seconds; zero or negative (Dapr's `-1`) = never.
fn ttl(metadata: &HashMap<String, serde_json::Value>) -> Result<Option<Duration>, String> {
    let Some(raw) = metadata.get("ttlInSeconds") else { return Ok(None) };
    let seconds = match raw {
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| "metadata.ttlInSeconds: expected an integer".to_owned())?;
    Ok(u64::try_from(seconds).ok().filter(|s| *s > 0).map(Duration::from_secs))
}

/// Turns one save item into a store request (key checked and prefixed, value as JSON bytes).
fn set_request(
    shared: &Shared,
    entry: &StateEntry,
    store: &str,
    item: SaveItem,
) -> Result<SetRequest, Result<ApiError, String>> {
    let key = stored_key(shared, &entry.prefix, store, &item.key).map_err(Ok)?;
    let concurrency = concurrency(item.options.as_ref()).map_err(Err)?;
    let ttl = ttl(&item.metadata).map_err(Err)?;
    let value = serde_json::to_vec(&item.value).map_err(|err| Err(format!("value: {err}")))?;
    Ok(SetRequest { key, value: value.into(), etag: item.etag, concurrency, ttl })
}

async fn save(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Body,
) -> Response {
    let result = async {
        let Path(store) = path.map_err(path_error)?;
        let registry = shared.components();
        let entry = lookup(&registry, &store)?;
        let items: Vec<SaveItem> = parse_json(&read_body(&shared, body).await?)?;
        // Check every item before writing any, so a bad key in item 3 does not leave items 1-2 written.
        let mut requests = Vec::with_capacity(items.len());
        for item in items {
            let request = set_request(&shared, entry, &store, item).map_err(|err| match err {
                Ok(api) => api,
                Err(detail) => ApiError::StateSave { store: store.clone(), failure: StateFailure::BadRequest, detail },
            })?;
            requests.push(request);
        }
        for request in requests {
            entry.store.set(request).await.map_err(|err| match err {
                StateError::NotSupported { .. } => ApiError::StateNotSupported { detail: err.to_string() },
                _ => ApiError::StateSave { store: store.clone(), failure: failure(&err), detail: error_chain(&err) },
            })?;
        }
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn get_state(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Response {
    let result = async {
        let Path((store, key)) = path.map_err(path_error)?;
        let registry = shared.components();
        let entry = lookup(&registry, &store)?;
        let stored = stored_key(&shared, &entry.prefix, &store, &key)?;
        let item = entry.store.get(&stored).await.map_err(|err| ApiError::StateGet {
            key: key.clone(),
            store: store.clone(),
            detail: error_chain(&err),
        })?;
        let Some(item) = item else {
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
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let Path((store, key)) = path.map_err(path_error)?;
        let registry = shared.components();
        let entry = lookup(&registry, &store)?;
        let stored = stored_key(&shared, &entry.prefix, &store, &key)?;
        let bad =
            |detail: String| ApiError::StateDelete { key: key.clone(), failure: StateFailure::BadRequest, detail };
        let etag = match headers.get(header::IF_MATCH) {
            Some(value) => Some(value.to_str().map_err(|_| bad("If-Match is not a valid ETag".to_owned()))?.to_owned()),
            None => None,
        };
        let query = query.map(|Query(q)| q).unwrap_or_default();
        let options = StateOptions { concurrency: query.get("concurrency").cloned(), consistency: None };
        let concurrency = concurrency(Some(&options)).map_err(bad)?;
        let request = DeleteRequest { key: stored, etag, concurrency };
        entry.store.delete(request).await.map_err(|err| match err {
            StateError::NotSupported { .. } => ApiError::StateNotSupported { detail: err.to_string() },
            _ => ApiError::StateDelete { key: key.clone(), failure: failure(&err), detail: error_chain(&err) },
        })?;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn bulk_get(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Body,
) -> Response {
    let result = async {
        let Path(store) = path.map_err(path_error)?;
        let registry = shared.components();
        let entry = lookup(&registry, &store)?;
        let request: BulkRequest = parse_json(&read_body(&shared, body).await?)?;
        let stored = request
            .keys
            .iter()
            .map(|key| stored_key(&shared, &entry.prefix, &store, key))
            .collect::<Result<Vec<_>, _>>()?;
        let found = entry
            .store
            .bulk_get(&stored)
            .await
            .map_err(|err| ApiError::StateBulkGet { store: store.clone(), detail: error_chain(&err) })?;
        // The store answers in request order; pair by position so the app gets back the keys it sent.
        let items: Vec<BulkItem> = request
            .keys
            .into_iter()
            .zip(found)
            .map(|(key, (_, item))| match item {
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
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Body,
) -> Response {
    let result = async {
        let Path(store) = path.map_err(path_error)?;
        let registry = shared.components();
        let entry = lookup(&registry, &store)?;
        let request: TransactionRequest = parse_json(&read_body(&shared, body).await?)?;
        let bad = |detail: String| ApiError::StateTransaction { failure: StateFailure::BadRequest, detail };
        let mut ops = Vec::with_capacity(request.operations.len());
        for op in request.operations {
            match op.operation.as_str() {
                "upsert" => {
                    let set = set_request(&shared, entry, &store, op.request).map_err(|err| match err {
                        Ok(api) => api,
                        Err(detail) => bad(detail),
                    })?;
                    ops.push(TransactionOp::Set(set));
                }
                "delete" => {
                    let item = op.request;
                    let key = stored_key(&shared, &entry.prefix, &store, &item.key)?;
                    let concurrency = concurrency(item.options.as_ref()).map_err(bad)?;
                    ops.push(TransactionOp::Delete(DeleteRequest { key, etag: item.etag, concurrency }));
                }
                other => {
                    return Err(ApiError::StateNotSupported {
                        detail: format!("operation type {other} not supported"),
                    });
                }
            }
        }
        execute(entry.store.as_ref(), ops).await?;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn execute(store: &dyn StateStore, ops: Vec<TransactionOp>) -> Result<(), ApiError> {
    store.transact(ops).await.map_err(|err| match err {
        StateError::NotSupported { .. } => ApiError::StateNotSupported { detail: err.to_string() },
        _ => ApiError::StateTransaction { failure: failure(&err), detail: error_chain(&err) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
