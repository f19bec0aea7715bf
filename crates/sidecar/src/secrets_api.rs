//! The Dapr secrets HTTP API (`/v1.0/secrets/...`): one secret, or all of a store's secrets, filtered by the
//! Configuration's `spec.secrets.scopes`.
//!
//! Owns: request parsing (`metadata.*` query parameters go to the store), the scope check before a single read
//! (answered exactly as a missing secret: invariant 3, where Dapr answers 403), and leaving denied names out of a bulk answer. Does not: decide which stores are loaded or in
//! scope (the registry), or what a scope allows (`ward-policy`). Secret values appear only in a 200 body: never in
//! an error or a log line.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::components::Components;
use crate::components::{Missing, Registry, SecretEntry};
use crate::error::ApiError;
use crate::error::error_chain;

/// The secrets routes; merged into the public router.
pub fn router() -> Router<crate::public::ApiState> {
    Router::new()
        .route("/v1.0/secrets/{store}/bulk", get(bulk_get))
        .route("/v1.0/secrets/{store}/{name}", get(get_secret))
}

/// The registry entry for `store`, or Dapr's answer for a missing one (also for an out-of-scope one: it is not in
/// the registry).
fn lookup<'a>(registry: &'a Registry, store: &str) -> Result<&'a SecretEntry, ApiError> {
    registry.secret_store(store).map_err(|missing| match missing {
        Missing::NotConfigured => ApiError::SecretStoresNotConfigured,
        Missing::NotFound => ApiError::SecretStoreNotFound { name: store.to_owned() },
    })
}

/// `?metadata.k=v` → `{k: v}` (Dapr's convention); other parameters are ignored.
fn request_metadata(
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> BTreeMap<String, String> {
    query
        .map(|Query(q)| q)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k.to_owned(), v)))
        .collect()
}

fn path_error(err: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::Malformed { detail: format!("invalid request path: {}", err.body_text()) }
}

/// One secret, after the store lookup and the secret scopes (protocol-neutral; the gRPC API uses it too).
/// A secret-store call in its own client span (tracing on): the operation and the store name only; a secret's
/// name and value never go into a span.
async fn traced<T, E>(
    operation: &'static str,
    store: &str,
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    crate::otel::in_child(
        || format!("secrets/{operation}").into(),
        opentelemetry::trace::SpanKind::Client,
        || {
            vec![
                opentelemetry::KeyValue::new("ward.operation", operation),
                opentelemetry::KeyValue::new("ward.component", store.to_owned()),
            ]
        },
        future,
    )
    .await
}

pub(crate) async fn secret(
    components: &Components,
    store: &str,
    name: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let registry = components.load();
    let entry = lookup(&registry, store)?;
    // Dapr's local stores answer a missing secret with an error, which becomes a 500.
    let missing = || ApiError::SecretGet {
        detail: format!("secret {name} not found"),
        key: name.to_owned(),
        store: store.to_owned(),
    };
    // Invariant 3 (stricter than Dapr's 403): a secret out of scope answers exactly as a missing one, and the store
    // is never asked, so neither the answer nor its timing says whether it exists.
    if !registry.secret_allowed(store, name) {
        return Err(missing());
    }
    match traced("get", store, entry.store.get_secret(name, metadata)).await {
        Ok(Some(secret)) => Ok(secret),
        Ok(None) => Err(missing()),
        Err(err) => {
            tracing::warn!(store = %store, secret = %name, error = %error_chain(&err), "secret store failed");
            Err(ApiError::SecretGet { key: name.to_owned(), store: store.to_owned(), detail: error_chain(&err) })
        }
    }
}

/// Every secret of a store the app may read; denied names are left out silently, as Dapr does.
pub(crate) async fn all_secrets(
    components: &Components,
    store: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, ApiError> {
    let registry = components.load();
    let entry = lookup(&registry, store)?;
    let all = traced("bulk_get", store, entry.store.bulk_get_secret(metadata)).await.map_err(|err| {
        tracing::warn!(store = %store, error = %error_chain(&err), "secret store failed");
        ApiError::SecretBulkGet { store: store.to_owned(), detail: error_chain(&err) }
    })?;
    Ok(all.into_iter().filter(|(name, _)| registry.secret_allowed(store, name)).collect())
}

async fn get_secret(
    State(components): State<Arc<Components>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Path((store, name)) = path.map_err(path_error)?;
        let secret = secret(&components, &store, &name, &request_metadata(query)).await?;
        Ok::<_, ApiError>(axum::Json(secret).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn bulk_get(
    State(components): State<Arc<Components>>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Path(store) = path.map_err(path_error)?;
        let allowed = all_secrets(&components, &store, &request_metadata(query)).await?;
        Ok::<_, ApiError>(axum::Json(allowed).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
