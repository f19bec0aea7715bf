//! `state.in-memory` (v1): a process-local store for development and tests.
//!
//! Owns: a map from key to value, ETag (a random UUID, so an ETag from before a delete never matches the
//! re-created key) and expiry instant. Expired items are invisible at once and swept every few hundred writes.
//!
//! Does not: persist anything, or share data between processes (each sidecar has its own).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Concurrency, DeleteRequest, SetRequest, StateError, StateItem, StateStore, TransactionOp};

/// How many writes between two sweeps of expired items.
const SWEEP_EVERY: u32 = 256;

#[derive(Clone)]
struct Entry {
    value: Bytes,
    etag: String,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

#[derive(Default)]
struct Inner {
    items: HashMap<String, Entry>,
    writes_since_sweep: u32,
}

/// The in-memory state store.
#[derive(Default)]
pub struct InMemoryStateStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for InMemoryStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStateStore").finish_non_exhaustive()
    }
}

pub(crate) fn new_uuid_etag() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl InMemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated (commits are single inserts/removes
        // after all checks), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn apply(inner: &mut Inner, staged: Vec<(String, Option<Entry>)>, now: Instant) {
    for (key, entry) in staged {
        match entry {
            Some(e) => {
                inner.items.insert(key, e);
            }
            None => {
                inner.items.remove(&key);
            }
        }
    }
    inner.writes_since_sweep = inner.writes_since_sweep.saturating_add(1);
    if inner.writes_since_sweep >= SWEEP_EVERY {
        inner.items.retain(|_, e| e.live(now));
        inner.writes_since_sweep = 0;
    }
}

/// Checks every operation against the current map plus the effects of earlier operations in the same batch,
/// and returns the changes to apply. Nothing is applied if any check fails.
fn stage(
    items: &HashMap<String, Entry>,
    ops: &[TransactionOp],
    now: Instant,
) -> Result<Vec<(String, Option<Entry>)>, StateError> {
    let mut overlay: HashMap<&str, Option<Entry>> = HashMap::new();
    let mut staged = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op.key();
        let current: Option<&Entry> = match overlay.get(key) {
            Some(e) => e.as_ref(),
            None => items.get(key).filter(|e| e.live(now)),
        };
        let etag_ok = match op.etag() {
            Some(want) => current.is_some_and(|e| e.etag == want),
            None => true,
        };
        let mismatch = || StateError::EtagMismatch { key: key.to_owned() };
        if !etag_ok {
            return Err(mismatch());
        }
        let next = match op {
            TransactionOp::Set(req) => {
                if req.etag().is_none() && req.concurrency == Concurrency::FirstWrite && current.is_some() {
                    return Err(mismatch());
                }
                Some(Entry {
                    value: req.value.clone(),
                    etag: new_uuid_etag(),
                    expires_at: req.ttl().and_then(|t| now.checked_add(t)),
                })
            }
            TransactionOp::Delete(_) => None,
        };
        overlay.insert(key, next.clone());
        staged.push((key.to_owned(), next));
    }
    Ok(staged)
}

#[async_trait]
impl StateStore for InMemoryStateStore {
    async fn get(&self, key: &str) -> Result<Option<StateItem>, StateError> {
        let now = Instant::now();
        let inner = self.lock();
        Ok(inner
            .items
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| StateItem { value: e.value.clone(), etag: e.etag.clone() }))
    }

    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<(String, Option<StateItem>)>, StateError> {
        let now = Instant::now();
        let inner = self.lock();
        Ok(keys
            .iter()
            .map(|k| {
                let item = inner
                    .items
                    .get(k)
                    .filter(|e| e.live(now))
                    .map(|e| StateItem { value: e.value.clone(), etag: e.etag.clone() });
                (k.clone(), item)
            })
            .collect())
    }

    async fn set(&self, req: SetRequest) -> Result<(), StateError> {
        self.transact(vec![TransactionOp::Set(req)]).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StateError> {
        self.transact(vec![TransactionOp::Delete(req)]).await
    }

    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), StateError> {
        // Check and apply under one lock so no other writer can slip in between.
        let now = Instant::now();
        let mut inner = self.lock();
        let staged = stage(&inner.items, &ops, now)?;
        apply(&mut inner, staged, now);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }
}
