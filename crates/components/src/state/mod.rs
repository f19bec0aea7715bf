//! The state building block: the [`StateStore`] trait, its request/response types and errors, Dapr's key-prefix
//! rules ([`KeyPrefix`]) and the factory that builds a store from a component's type, version and metadata.
//!
//! Owns the store *semantics* every backend must implement identically (checked by one behavioural suite in
//! `tests/state_suite.rs`):
//! - an ETag given on set or delete must match the stored one, whatever the concurrency mode; ETags are opaque
//!   strings, and one that cannot have come from this store is [`StateError::InvalidEtag`];
//! - first-write without an ETag succeeds only if the key does not exist; last-write without an ETag always writes;
//! - delete without an ETag always succeeds, also when the key is absent;
//! - an item past its TTL is invisible at once (and is removed later, lazily or by a periodic sweep); a set without
//!   a TTL clears any earlier expiry;
//! - a transaction is all or nothing.
//!
//! Does not: apply the key prefix (the sidecar calls [`KeyPrefix::apply`]; stores see final keys), decide whether
//! the caller may use the store (scopes are the sidecar's), or speak HTTP/gRPC.

mod key_prefix;
mod memory;
mod redis;
mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::metadata::{BoxError, ComponentError, ComponentMetadata};
use crate::{BuildContext, check_version, normalize_type};

pub use key_prefix::{IllegalKey, KeyPrefix, SEPARATOR};
pub use memory::InMemoryStateStore;
pub use redis::{RedisStateOptions, RedisStateStore};
pub use sqlite::{SqliteStateOptions, SqliteStateStore};

/// One stored value and its ETag.
#[derive(Clone, PartialEq, Eq)]
pub struct StateItem {
    /// The value exactly as it was set.
    pub value: Bytes,
    /// Opaque version tag; pass it back on set/delete for optimistic concurrency.
    pub etag: String,
}

impl fmt::Debug for StateItem {
    // The value is application data and may be sensitive; show its size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateItem").field("value_len", &self.value.len()).field("etag", &self.etag).finish()
    }
}

/// Dapr's concurrency option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Without an ETag, a set succeeds only if the key does not exist yet.
    FirstWrite,
    /// Without an ETag, a set always writes (Dapr's default).
    #[default]
    LastWrite,
}

/// Save one key.
#[derive(Clone, PartialEq, Eq)]
pub struct SetRequest {
    /// The final (already prefixed) key.
    pub key: String,
    /// The value to store.
    pub value: Bytes,
    /// Expected current ETag; `None` (or an empty string) means "no ETag".
    pub etag: Option<String>,
    /// What to do when no ETag is given.
    pub concurrency: Concurrency,
    /// Time to live (`ttlInSeconds`); `None` or zero means no expiry.
    pub ttl: Option<Duration>,
}

impl SetRequest {
    /// A last-write set without ETag or TTL.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self { key: key.into(), value: value.into(), etag: None, concurrency: Concurrency::LastWrite, ttl: None }
    }

    /// Sets the expected ETag.
    pub fn with_etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(etag.into());
        self
    }

    /// Sets the concurrency mode.
    pub fn with_concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets the time to live.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The ETag if one was really given (Dapr treats an empty ETag as none).
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref().filter(|e| !e.is_empty())
    }

    /// The TTL if it really expires.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl.filter(|t| !t.is_zero())
    }
}

impl fmt::Debug for SetRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetRequest")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("etag", &self.etag)
            .field("concurrency", &self.concurrency)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Delete one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The final (already prefixed) key.
    pub key: String,
    /// Expected current ETag; `None` (or an empty string) means "no ETag".
    pub etag: Option<String>,
    /// Kept for API parity with Dapr; a delete without ETag succeeds in both modes.
    pub concurrency: Concurrency,
}

impl DeleteRequest {
    /// A delete without ETag.
    pub fn new(key: impl Into<String>) -> Self {
        Self { key: key.into(), etag: None, concurrency: Concurrency::LastWrite }
    }

    /// Sets the expected ETag.
    pub fn with_etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(etag.into());
        self
    }

    /// The ETag if one was really given.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref().filter(|e| !e.is_empty())
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionOp {
    /// Upsert.
    Set(SetRequest),
    /// Delete.
    Delete(DeleteRequest),
}

impl TransactionOp {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            TransactionOp::Set(r) => &r.key,
            TransactionOp::Delete(r) => &r.key,
        }
    }

    /// The ETag the operation expects, if any.
    pub fn etag(&self) -> Option<&str> {
        match self {
            TransactionOp::Set(r) => r.etag(),
            TransactionOp::Delete(r) => r.etag(),
        }
    }
}

/// A state operation failed.
///
/// The API layer maps these once: `EtagMismatch` → 409 (`ERR_STATE_SAVE`/`ERR_STATE_DELETE`), `InvalidEtag` → 400,
/// `NotSupported` → 400 `ERR_NOT_SUPPORTED_STATE_OPERATION`, `Backend` → 500. No variant carries a value.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The ETag given does not match the stored one (or the key does not exist, or first-write found the key).
    #[error("possible etag mismatch: the etag given for key {key:?} does not match the stored one")]
    EtagMismatch {
        /// The final key.
        key: String,
    },
    /// The ETag given cannot have been issued by this store (e.g. not a number for a store whose ETags are versions).
    #[error("invalid etag for key {key:?}")]
    InvalidEtag {
        /// The final key.
        key: String,
    },
    /// The backend failed (down, timed out, I/O…); the cause is kept.
    #[error("state store {operation} failed: {source}")]
    Backend {
        /// What we were doing (`get`, `set`, `transaction`…).
        operation: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The store does not implement this operation.
    #[error("operation {operation} is not supported by this state store")]
    NotSupported {
        /// The operation asked for.
        operation: &'static str,
    },
}

impl StateError {
    pub(crate) fn backend(operation: &'static str, source: impl Into<BoxError>) -> Self {
        StateError::Backend { operation, source: source.into() }
    }
}

/// A backend operation did not finish within the configured timeout.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("timed out after {after:?}")]
pub struct OperationTimedOut {
    /// The timeout that elapsed.
    pub after: Duration,
}

/// A key-value state store.
///
/// All methods take final keys (the sidecar already applied the [`KeyPrefix`]). Implementations never block the
/// async thread: blocking drivers run on `spawn_blocking`.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Reads one key; an absent or expired key is `None`.
    async fn get(&self, key: &str) -> Result<Option<StateItem>, StateError>;

    /// Reads many keys; the result has one entry per requested key, in request order.
    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<(String, Option<StateItem>)>, StateError>;

    /// Writes one key (see the module docs for the ETag and concurrency rules).
    async fn set(&self, req: SetRequest) -> Result<(), StateError>;

    /// Deletes one key.
    async fn delete(&self, req: DeleteRequest) -> Result<(), StateError>;

    /// Applies all operations atomically, in order: either every one is applied or none is.
    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), StateError>;

    /// Checks that the backend is reachable.
    async fn ping(&self) -> Result<(), StateError>;
}

/// The state store types this build can create, as `(type, version)`.
pub fn state_store_types() -> &'static [(&'static str, &'static str)] {
    &[("state.in-memory", "v1"), ("state.sqlite", "v1"), ("state.redis", "v1")]
}

/// Builds a state store from a component's `spec.type`, `spec.version`, name and resolved metadata.
///
/// Also validates `keyPrefix`, so a bad prefix fails at load time rather than on the first request.
pub async fn build_state_store(
    component_type: &str,
    version: &str,
    name: &str,
    metadata: &ComponentMetadata,
    ctx: &BuildContext,
) -> Result<Arc<dyn StateStore>, ComponentError> {
    let ty = normalize_type(component_type);
    check_version(state_store_types(), &ty, version, "state store")?;
    KeyPrefix::from_metadata(metadata)?;
    match ty.as_str() {
        "state.in-memory" => Ok(Arc::new(InMemoryStateStore::new())),
        "state.sqlite" => {
            let default_path = default_sqlite_path(ctx, name);
            let opts = SqliteStateOptions::from_metadata(metadata, default_path)?;
            Ok(Arc::new(SqliteStateStore::open(opts).await?))
        }
        "state.redis" => {
            let opts = RedisStateOptions::from_metadata(metadata)?;
            Ok(Arc::new(RedisStateStore::connect(opts).await?))
        }
        // check_version already refused unknown types; keep the match total without panicking.
        _ => Err(unknown_type(component_type)),
    }
}

fn unknown_type(component_type: &str) -> ComponentError {
    ComponentError::new("spec.type", format!("unknown state store type {component_type:?}"))
}

/// Where a `state.sqlite` component without `connectionString` keeps its data: one file per component name under
/// `$WARD_HOME/state/`, so two apps that declare the same store name share it (as they would share a Redis), and
/// the default `keyPrefix: appid` keeps their keys apart.
fn default_sqlite_path(ctx: &BuildContext, name: &str) -> PathBuf {
    // Component names are DNS-1123-ish, but never let one escape the directory.
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    let safe = if safe.is_empty() || safe.starts_with('.') { format!("_{safe}") } else { safe };
    ctx.data_dir.join("state").join(format!("{safe}.db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_cannot_escape() {
        let ctx = BuildContext {
            data_dir: PathBuf::from("/home/u/.ward"),
            base_dir: PathBuf::from("/"),
            working_dir: PathBuf::from("/"),
            app_id: "a".into(),
            namespace: String::new(),
        };
        assert_eq!(default_sqlite_path(&ctx, "statestore"), PathBuf::from("/home/u/.ward/state/statestore.db"));
        assert_eq!(
            default_sqlite_path(&ctx, "../../etc/passwd"),
            PathBuf::from("/home/u/.ward/state/_.._.._etc_passwd.db")
        );
    }

    #[test]
    fn set_request_debug_hides_value() {
        let r = SetRequest::new("k", "top-secret");
        assert!(!format!("{r:?}").contains("top-secret"));
        let item = StateItem { value: Bytes::from_static(b"top-secret"), etag: "1".into() };
        assert!(!format!("{item:?}").contains("top-secret"));
    }

    #[test]
    fn empty_etag_means_none() {
        assert_eq!(SetRequest::new("k", "v").with_etag("").etag(), None);
        assert_eq!(DeleteRequest::new("k").with_etag("").etag(), None);
        assert_eq!(SetRequest::new("k", "v").with_ttl(Duration::ZERO).ttl(), None);
    }

    #[tokio::test]
    async fn factory_refuses_unknown_type_and_version() {
        let ctx = BuildContext {
            data_dir: std::env::temp_dir(),
            base_dir: std::env::temp_dir(),
            working_dir: std::env::temp_dir(),
            app_id: "a".into(),
            namespace: String::new(),
        };
        let md = ComponentMetadata::new();
        let e = build_state_store("state.nope", "v1", "s", &md, &ctx).await.err().unwrap();
        assert_eq!(e.field.as_deref(), Some("spec.type"));
        let e = build_state_store("state.in-memory", "v2", "s", &md, &ctx).await.err().unwrap();
        assert_eq!(e.field.as_deref(), Some("spec.version"));
        assert!(build_state_store("State.In-Memory", "V1", "s", &md, &ctx).await.is_ok());
        let bad: ComponentMetadata = [("keyPrefix", "a||b")].into_iter().collect();
        let e = build_state_store("state.in-memory", "v1", "s", &bad, &ctx).await.err().unwrap();
        assert_eq!(e.field.as_deref(), Some("keyPrefix"));
        let e = build_state_store("state.redis", "v1", "s", &md, &ctx).await.err().unwrap();
        assert_eq!(e.field.as_deref(), Some("redisHost"));
    }
}
