//! The state building block, protocol-neutral: store lookup (an out-of-scope store is simply absent), key checks
//! and `keyPrefix`, and the mapping of store errors to [`ApiError`]s. The HTTP (`state_api`) and gRPC
//! (`grpc_api`) front ends only translate their request shapes into these calls and the answers back.
//!
//! Does not parse wire formats, and never puts a state value into an error.

use std::time::Duration;

use bytes::Bytes;
use ward_components::state::{Concurrency, DeleteRequest, KeyPrefix, SetRequest, StateError, StateItem, TransactionOp};

use crate::components::Components;
use crate::components::{Missing, Registry, StateEntry};
use crate::error::error_chain;
use crate::error::{ApiError, StateFailure};

/// What the state building block uses: the live component registry and the names keys are prefixed with.
pub(crate) struct StateCore {
    pub(crate) components: std::sync::Arc<Components>,
    pub(crate) app_id: String,
    pub(crate) namespace: String,
    /// `--max-body-size`, for the front ends that buffer request bodies.
    pub(crate) max_body_size: u64,
}

/// One write, already parsed from the wire.
#[derive(Debug)]
pub struct SaveItem {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    pub ttl: Option<Duration>,
}

/// One operation of a transaction.
#[derive(Debug)]
pub enum TxItem {
    Upsert(SaveItem),
    Delete { key: String, etag: Option<String>, concurrency: Concurrency },
}

/// The registry entry for `store`, or Dapr's answer for a missing one.
pub(crate) fn lookup<'a>(registry: &'a Registry, store: &str) -> Result<&'a StateEntry, ApiError> {
    registry.state_store(store).map_err(|missing| match missing {
        Missing::NotConfigured => ApiError::StateStoreNotConfigured,
        Missing::NotFound => ApiError::StateStoreNotFound { name: store.to_owned() },
    })
}

/// Refuses `||` in a key, then applies the store's prefix.
pub(crate) fn stored_key(core: &StateCore, prefix: &KeyPrefix, store: &str, key: &str) -> Result<String, ApiError> {
    KeyPrefix::check_key(key).map_err(|err| ApiError::Malformed { detail: err.to_string() })?;
    Ok(prefix.apply(&core.app_id, store, &core.namespace, key))
}

/// What a [`StateError`] means for the status of a write.
pub(crate) fn failure(err: &StateError) -> StateFailure {
    match err {
        StateError::EtagMismatch { .. } => StateFailure::EtagMismatch,
        StateError::InvalidEtag { .. } => StateFailure::InvalidEtag,
        StateError::Backend { .. } | StateError::NotSupported { .. } => StateFailure::Backend,
    }
}

/// Dapr's concurrency names; empty means last-write.
pub fn parse_concurrency(value: &str) -> Result<Concurrency, String> {
    match value {
        "" | "last-write" => Ok(Concurrency::LastWrite),
        "first-write" => Ok(Concurrency::FirstWrite),
        other => Err(format!("unrecognized concurrency model {other:?} (first-write or last-write)")),
    }
}

/// Request metadata ward refuses rather than ignores: Dapr's transactional outbox (`outbox.projection` and the
/// other `outbox.*` keys) publishes to pub/sub, and ward does not implement the outbox yet; storing the projection as the value
/// (what ignoring the key would do) would silently write what the app meant to publish.
pub fn refuse_unapplied_metadata<'a>(mut keys: impl Iterator<Item = &'a str>) -> Result<(), String> {
    match keys.find(|key| key.to_ascii_lowercase().starts_with("outbox.")) {
        Some(key) => Err(format!(
            "metadata.{key}: the transactional outbox is not implemented by ward yet; refused \
             rather than storing the projection"
        )),
        None => Ok(()),
    }
}

/// `ttlInSeconds`: positive = expire after that many seconds; zero or negative (Dapr's `-1`) = never.
pub fn parse_ttl(value: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(raw) = value else { return Ok(None) };
    let seconds = raw.trim().parse::<i64>().map_err(|_| "metadata.ttlInSeconds: expected an integer".to_owned())?;
    Ok(u64::try_from(seconds).ok().filter(|s| *s > 0).map(Duration::from_secs))
}

fn set_request(core: &StateCore, entry: &StateEntry, store: &str, item: SaveItem) -> Result<SetRequest, ApiError> {
    let key = stored_key(core, &entry.prefix, store, &item.key)?;
    Ok(SetRequest { key, value: item.value, etag: item.etag, concurrency: item.concurrency, ttl: item.ttl })
}

/// Saves items one after another; every key is checked before the first write, so a bad key in item 3 does not
/// leave items 1–2 written.
pub async fn save(core: &StateCore, store: &str, items: Vec<SaveItem>) -> Result<(), ApiError> {
    let registry = core.components.load();
    let entry = lookup(&registry, store)?;
    let requests =
        items.into_iter().map(|item| set_request(core, entry, store, item)).collect::<Result<Vec<_>, _>>()?;
    for request in requests {
        entry.store.set(request).await.map_err(|err| match err {
            StateError::NotSupported { .. } => ApiError::StateNotSupported { detail: err.to_string() },
            _ => ApiError::StateSave { store: store.to_owned(), failure: failure(&err), detail: error_chain(&err) },
        })?;
    }
    Ok(())
}

pub async fn get(core: &StateCore, store: &str, key: &str) -> Result<Option<StateItem>, ApiError> {
    let registry = core.components.load();
    let entry = lookup(&registry, store)?;
    let stored = stored_key(core, &entry.prefix, store, key)?;
    entry.store.get(&stored).await.map_err(|err| ApiError::StateGet {
        key: key.to_owned(),
        store: store.to_owned(),
        detail: error_chain(&err),
    })
}

/// Reads several keys; the answer pairs each requested key (as the app sent it) with its item.
pub async fn bulk_get(
    core: &StateCore,
    store: &str,
    keys: Vec<String>,
) -> Result<Vec<(String, Option<StateItem>)>, ApiError> {
    let registry = core.components.load();
    let entry = lookup(&registry, store)?;
    let stored = keys.iter().map(|key| stored_key(core, &entry.prefix, store, key)).collect::<Result<Vec<_>, _>>()?;
    let found = entry
        .store
        .bulk_get(&stored)
        .await
        .map_err(|err| ApiError::StateBulkGet { store: store.to_owned(), detail: error_chain(&err) })?;
    // The store answers in request order; pair by position so the app gets back the keys it sent.
    Ok(keys.into_iter().zip(found).map(|(key, (_, item))| (key, item)).collect())
}

pub async fn delete(
    core: &StateCore,
    store: &str,
    key: &str,
    etag: Option<String>,
    concurrency: Concurrency,
) -> Result<(), ApiError> {
    let registry = core.components.load();
    let entry = lookup(&registry, store)?;
    let stored = stored_key(core, &entry.prefix, store, key)?;
    entry.store.delete(DeleteRequest { key: stored, etag, concurrency }).await.map_err(|err| match err {
        StateError::NotSupported { .. } => ApiError::StateNotSupported { detail: err.to_string() },
        _ => ApiError::StateDelete { key: key.to_owned(), failure: failure(&err), detail: error_chain(&err) },
    })
}

/// Applies all operations atomically, or none.
pub async fn transact(core: &StateCore, store: &str, items: Vec<TxItem>) -> Result<(), ApiError> {
    let registry = core.components.load();
    let entry = lookup(&registry, store)?;
    let mut ops = Vec::with_capacity(items.len());
    for item in items {
        ops.push(match item {
            TxItem::Upsert(save) => TransactionOp::Set(set_request(core, entry, store, save)?),
            TxItem::Delete { key, etag, concurrency } => {
                let key = stored_key(core, &entry.prefix, store, &key)?;
                TransactionOp::Delete(DeleteRequest { key, etag, concurrency })
            }
        });
    }
    entry.store.transact(ops).await.map_err(|err| match err {
        StateError::NotSupported { .. } => ApiError::StateNotSupported { detail: err.to_string() },
        _ => ApiError::StateTransaction { failure: failure(&err), detail: error_chain(&err) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_request_metadata_is_refused() {
        assert!(refuse_unapplied_metadata(["ttlInSeconds", "contentType"].into_iter()).is_ok());
        let err = refuse_unapplied_metadata(["outbox.projection"].into_iter()).unwrap_err();
        assert!(err.contains("metadata.outbox.projection"), "{err}");
    }

    #[test]
    fn concurrency_and_ttl_parse_as_dapr() {
        assert_eq!(parse_concurrency(""), Ok(Concurrency::LastWrite));
        assert_eq!(parse_concurrency("first-write"), Ok(Concurrency::FirstWrite));
        assert!(parse_concurrency("first").is_err());
        assert_eq!(parse_ttl(None), Ok(None));
        assert_eq!(parse_ttl(Some("10")), Ok(Some(Duration::from_secs(10))));
        assert_eq!(parse_ttl(Some("-1")), Ok(None));
        assert!(parse_ttl(Some("ten")).is_err());
    }
}
