//! `state.sqlite` (v1): a durable single-machine store in one SQLite file, table-compatible with Dapr's
//! `state.sqlite` (same `state` and `metadata` tables, same columns, UUID ETags), so daprd and ward can read each
//! other's data.
//!
//! Owns: the schema and its migration, ETag-checked writes, TTL (expired rows are invisible at once and deleted by
//! a periodic sweep that processes sharing the file coordinate through the metadata table), atomic transactions
//! (one `BEGIN IMMEDIATE` transaction), and durability (WAL + `synchronous=FULL`: a write that returned `Ok`
//! survives a process kill).
//!
//! Does not: run SQLite on an async thread (everything goes through `spawn_blocking`), or pool connections: one
//! connection per store serialises access, which is what SQLite does for writers anyway.
//!
//! Metadata (Dapr's keys): `connectionString` (alias `url`; a path, a `file:` URI or `:memory:`; empty → a file
//! under `$WARD_HOME/state/`), `tableName` (default `state`), `metadataTableName` (default `metadata`), `timeout`
//! (alias `timeoutInSeconds`; per operation, default 20s, at least 1s), `busyTimeout` (default 2s),
//! `cleanupInterval` (alias `cleanupIntervalInSeconds`; default 1h; `0` or negative disables), `disableWAL`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::memory::new_uuid_etag;
use super::{
    Concurrency, DeleteRequest, OperationTimedOut, SetRequest, StateError, StateItem, StateStore, TransactionOp,
};
use crate::metadata::{ComponentError, ComponentMetadata};
use crate::sqlite_conn::{self, ConnOptions, OpenError};

/// SQLite's clock with milliseconds, comparable as text with Dapr's `YYYY-MM-DD HH:MM:SS` timestamps. Seconds
/// alone would let a 1s TTL expire anywhere between 0 and 1s after the write.
const NOW: &str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

/// Options of a SQLite state store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteStateOptions {
    /// Path, `file:` URI or `:memory:`.
    pub connection_string: String,
    /// State table name (`[A-Za-z0-9_]+`).
    pub table_name: String,
    /// Metadata table name (`[A-Za-z0-9_]+`).
    pub metadata_table_name: String,
    /// Upper bound for one operation.
    pub timeout: Duration,
    /// How long SQLite waits for a lock held by another connection or process.
    pub busy_timeout: Duration,
    /// How often expired rows are deleted; `None` disables the sweep (expired rows stay invisible).
    pub cleanup_interval: Option<Duration>,
    /// Use the rollback journal instead of WAL (for network file systems).
    pub disable_wal: bool,
    /// Create the parent directory (mode 0700) if missing; set for the default path under `$WARD_HOME`.
    pub create_parent_dir: bool,
}

impl SqliteStateOptions {
    /// Defaults for a database at `connection_string`.
    pub fn new(connection_string: impl Into<String>) -> Self {
        Self {
            connection_string: connection_string.into(),
            table_name: "state".into(),
            metadata_table_name: "metadata".into(),
            timeout: Duration::from_secs(20),
            busy_timeout: Duration::from_secs(2),
            cleanup_interval: Some(Duration::from_secs(3600)),
            disable_wal: false,
            create_parent_dir: false,
        }
    }

    /// Reads Dapr's `state.sqlite` metadata; `default_path` is used when `connectionString` is empty.
    pub fn from_metadata(md: &ComponentMetadata, default_path: PathBuf) -> Result<Self, ComponentError> {
        let mut opts = match md.get_any(&["connectionString", "url"]) {
            Some(cs) => Self::new(cs.trim()),
            None => {
                let mut o = Self::new(default_path.to_string_lossy().into_owned());
                o.create_parent_dir = true;
                o
            }
        };
        opts.table_name = md.get_or("tableName", "state").to_owned();
        if !sqlite_conn::valid_identifier(&opts.table_name) {
            return Err(ComponentError::new(
                "tableName",
                "invalid identifier: only letters, digits and '_' are allowed",
            ));
        }
        opts.metadata_table_name = md.get_or("metadataTableName", "metadata").to_owned();
        if !sqlite_conn::valid_identifier(&opts.metadata_table_name) {
            return Err(ComponentError::new(
                "metadataTableName",
                "invalid identifier: only letters, digits and '_' are allowed",
            ));
        }
        for key in ["timeout", "timeoutInSeconds"] {
            if let Some(t) = md.get_duration(key)? {
                if t < Duration::from_secs(1) {
                    return Err(ComponentError::new(key, "must be at least 1s"));
                }
                opts.timeout = t;
                break;
            }
        }
        if let Some(t) = md.get_duration("busyTimeout")? {
            opts.busy_timeout = t;
        }
        for key in ["cleanupInterval", "cleanupIntervalInSeconds"] {
            let Some(raw) = md.get(key).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            // Dapr documents -1 (any negative) as "disabled".
            opts.cleanup_interval =
                if raw.trim().starts_with('-') { None } else { md.get_duration(key)?.filter(|d| !d.is_zero()) };
            break;
        }
        opts.disable_wal = md.get_bool("disableWAL")?.unwrap_or(false);
        Ok(opts)
    }
}

struct Shared {
    conn: Mutex<Connection>,
    table: String,
    metadata_table: String,
    timeout: Duration,
    /// Extra time the async side waits past `timeout` for a blocking call that already started.
    grace: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // rusqlite rolls back an unfinished transaction when it is dropped during a panic, so the connection is
        // usable after poisoning.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The SQLite state store.
pub struct SqliteStateStore {
    shared: Arc<Shared>,
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for SqliteStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStateStore").field("table", &self.shared.table).finish_non_exhaustive()
    }
}

impl Drop for SqliteStateStore {
    fn drop(&mut self) {
        if let Some(h) = self.sweeper.take() {
            h.abort();
        }
    }
}

fn sqlite_err(source: rusqlite::Error) -> ComponentError {
    ComponentError::general("cannot initialise the SQLite state store").with_source(source)
}

fn migrate(conn: &mut Connection, table: &str, metadata_table: &str) -> rusqlite::Result<()> {
    // IMMEDIATE: two sidecars starting at once on the same file serialise here instead of failing to upgrade a
    // read lock.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {metadata_table} (key text NOT NULL PRIMARY KEY, value text NOT NULL)"
    ))?;
    let level: Option<String> = tx
        .query_row(&format!("SELECT value FROM {metadata_table} WHERE key = 'migrations'"), [], |r| r.get(0))
        .optional()?;
    let level: u32 = level.and_then(|l| l.parse().ok()).unwrap_or(0);
    if level < 1 {
        // Dapr's migration 0. IF NOT EXISTS: a table from before the metadata table existed is kept.
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                key TEXT NOT NULL PRIMARY KEY,
                value TEXT NOT NULL,
                is_binary BOOLEAN NOT NULL,
                etag TEXT NOT NULL,
                expiration_time TIMESTAMP DEFAULT NULL,
                update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
            )"
        ))?;
        tx.execute(&format!("REPLACE INTO {metadata_table} (key, value) VALUES ('migrations', '1')"), [])?;
    }
    tx.commit()
}

impl SqliteStateStore {
    /// Opens (creating if needed) the database, migrates the schema and starts the expiry sweep.
    pub async fn open(opts: SqliteStateOptions) -> Result<Self, ComponentError> {
        let conn_opts = ConnOptions {
            connection_string: opts.connection_string.clone(),
            busy_timeout: opts.busy_timeout,
            disable_wal: opts.disable_wal,
        };
        let table = opts.table_name.clone();
        let metadata_table = opts.metadata_table_name.clone();
        let create_parent = opts.create_parent_dir;
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, ComponentError> {
            if create_parent {
                create_private_parent(&conn_opts.connection_string)?;
            }
            let mut conn = sqlite_conn::open(&conn_opts).map_err(|e| match e {
                OpenError::Sqlite(s) => {
                    ComponentError::new("connectionString", "cannot open the SQLite database").with_source(s)
                }
                other => ComponentError::new("connectionString", other.to_string()),
            })?;
            migrate(&mut conn, &table, &metadata_table).map_err(sqlite_err)?;
            Ok(conn)
        })
        .await
        .map_err(|e| ComponentError::general("SQLite initialisation task failed").with_source(e))??;

        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            table: opts.table_name,
            metadata_table: opts.metadata_table_name,
            timeout: opts.timeout,
            grace: opts.busy_timeout + Duration::from_secs(1),
        });
        let sweeper = opts.cleanup_interval.map(|every| tokio::spawn(sweep_loop(Arc::downgrade(&shared), every)));
        Ok(Self { shared, sweeper })
    }

    /// Runs `f` with the connection on the blocking pool. `f` is skipped if the deadline passed while it waited
    /// for the connection, so an operation reported as timed out before it started is never applied.
    async fn run<T, F>(&self, operation: &'static str, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Shared) -> Result<T, StateError> + Send + 'static,
    {
        run_blocking(self.shared.clone(), operation, f).await
    }

    /// Deletes expired rows now (the periodic sweep does this on its own); returns how many were deleted.
    pub async fn cleanup_expired(&self) -> Result<u64, StateError> {
        self.run("cleanup", |conn, shared| {
            delete_expired(conn, &shared.table).map_err(|e| StateError::backend("cleanup", e))
        })
        .await
    }
}

async fn run_blocking<T, F>(shared: Arc<Shared>, operation: &'static str, f: F) -> Result<T, StateError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection, &Shared) -> Result<T, StateError> + Send + 'static,
{
    let timeout = shared.timeout;
    let outer = timeout + shared.grace;
    let deadline = Instant::now() + timeout;
    let task = tokio::task::spawn_blocking(move || {
        let mut conn = shared.lock();
        if Instant::now() > deadline {
            return Err(StateError::backend(operation, OperationTimedOut { after: timeout }));
        }
        f(&mut conn, &shared)
    });
    match tokio::time::timeout(outer, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(StateError::backend(operation, join)),
        Err(_) => Err(StateError::backend(operation, OperationTimedOut { after: outer })),
    }
}

fn create_private_parent(path: &str) -> Result<(), ComponentError> {
    let Some(parent) = std::path::Path::new(path).parent() else {
        return Ok(());
    };
    if parent.as_os_str().is_empty() || parent.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // State may be sensitive; other local users have no business reading it.
        builder.mode(0o700);
    }
    builder.create(parent).map_err(|e| {
        ComponentError::general("cannot create the directory for the default SQLite state file").with_source(e)
    })
}

async fn sweep_loop(shared: std::sync::Weak<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; sweeping right after start is fine and cheap.
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        let result = run_blocking(shared, "cleanup", move |conn, shared| {
            sweep_if_due(conn, &shared.table, &shared.metadata_table, every_ms)
                .map_err(|e| StateError::backend("cleanup", e))
        })
        .await;
        match result {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "expired state rows deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "state cleanup failed"),
        }
    }
}

/// Dapr's garbage-collector protocol: only the process that manages to bump `last-cleanup` (because the last
/// cleanup is older than the interval) deletes, so N sidecars sharing a file do not all sweep.
fn sweep_if_due(conn: &mut Connection, table: &str, metadata_table: &str, every_ms: i64) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let claimed = tx.execute(
        &format!(
            "INSERT INTO {metadata_table} (key, value) VALUES ('last-cleanup', CURRENT_TIMESTAMP)
             ON CONFLICT (key) DO UPDATE SET value = CURRENT_TIMESTAMP
             WHERE (unixepoch(CURRENT_TIMESTAMP) - unixepoch(value)) * 1000 > ?1"
        ),
        // A little slack so a sweep that is due is not skipped for being a few ms early.
        params![every_ms.saturating_sub(500)],
    )?;
    let deleted = if claimed > 0 { delete_expired(&tx, table)? } else { 0 };
    tx.commit()?;
    Ok(deleted)
}

fn delete_expired(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    let n = conn
        .execute(&format!("DELETE FROM {table} WHERE expiration_time IS NOT NULL AND expiration_time <= {NOW}"), [])?;
    Ok(n as u64)
}

/// Dapr stores text as is and bytes as base64 with `is_binary = 1`.
fn encode_value(value: &[u8]) -> (String, bool) {
    match std::str::from_utf8(value) {
        Ok(s) => (s.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(value), true),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("stored value of a binary row is not valid base64")]
struct CorruptValue;

fn read_item(conn: &Connection, table: &str, key: &str) -> Result<Option<StateItem>, StateError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT value, is_binary, etag FROM {table}
             WHERE key = ?1 AND (expiration_time IS NULL OR expiration_time > {NOW})"
        ))
        .map_err(|e| StateError::backend("get", e))?;
    let row = stmt
        .query_row(params![key], |r| {
            let value = match r.get_ref(0)? {
                ValueRef::Text(t) | ValueRef::Blob(t) => t.to_vec(),
                ValueRef::Null => Vec::new(),
                ValueRef::Integer(i) => i.to_string().into_bytes(),
                ValueRef::Real(f) => f.to_string().into_bytes(),
            };
            let is_binary: bool = r.get(1)?;
            let etag: String = r.get(2)?;
            Ok((value, is_binary, etag))
        })
        .optional()
        .map_err(|e| StateError::backend("get", e))?;
    let Some((value, is_binary, etag)) = row else {
        return Ok(None);
    };
    let value = if is_binary {
        base64::engine::general_purpose::STANDARD
            .decode(&value)
            .map_err(|_| StateError::backend("get", CorruptValue))?
    } else {
        value
    };
    Ok(Some(StateItem { value: Bytes::from(value), etag }))
}

/// `+1.500 seconds`, the modifier SQLite's date functions take.
fn ttl_modifier(req: &SetRequest) -> Option<String> {
    req.ttl().map(|t| format!("+{}.{:03} seconds", t.as_secs(), t.subsec_millis()))
}

fn apply_op(conn: &Connection, table: &str, op: &TransactionOp) -> Result<(), StateError> {
    let db = |e| StateError::backend("write", e);
    let mismatch = || StateError::EtagMismatch { key: op.key().to_owned() };
    let alive = format!("(expiration_time IS NULL OR expiration_time > {NOW})");
    let expiry = "CASE WHEN ?5 IS NULL THEN NULL ELSE strftime('%Y-%m-%d %H:%M:%f', 'now', ?5) END";
    match op {
        TransactionOp::Set(req) => {
            let (value, is_binary) = encode_value(&req.value);
            let new_etag = new_uuid_etag();
            let ttl = ttl_modifier(req);
            let changed = match (req.etag(), req.concurrency) {
                (Some(etag), _) => conn
                    .prepare_cached(&format!(
                        "UPDATE {table} SET value = ?2, is_binary = ?3, etag = ?4, expiration_time = {expiry},
                            update_time = CURRENT_TIMESTAMP
                         WHERE key = ?1 AND etag = ?6 AND {alive}"
                    ))
                    .and_then(|mut s| s.execute(params![req.key, value, is_binary, new_etag, ttl, etag]))
                    .map_err(db)?,
                (None, concurrency) => {
                    // First-write: an existing, unexpired row blocks the insert (the upsert's WHERE is false, so
                    // nothing changes); an expired one is replaced as if it were gone.
                    let only_if_expired = if concurrency == Concurrency::FirstWrite {
                        format!("WHERE {table}.expiration_time IS NOT NULL AND {table}.expiration_time <= {NOW}")
                    } else {
                        String::new()
                    };
                    conn.prepare_cached(&format!(
                        "INSERT INTO {table} (key, value, is_binary, etag, expiration_time, update_time)
                         VALUES (?1, ?2, ?3, ?4, {expiry}, CURRENT_TIMESTAMP)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, is_binary = excluded.is_binary,
                            etag = excluded.etag, expiration_time = excluded.expiration_time,
                            update_time = excluded.update_time
                         {only_if_expired}"
                    ))
                    .and_then(|mut s| s.execute(params![req.key, value, is_binary, new_etag, ttl]))
                    .map_err(db)?
                }
            };
            if changed == 0 {
                return Err(mismatch());
            }
        }
        TransactionOp::Delete(req) => match req.etag() {
            Some(etag) => {
                let changed = conn
                    .prepare_cached(&format!("DELETE FROM {table} WHERE key = ?1 AND etag = ?2 AND {alive}"))
                    .and_then(|mut s| s.execute(params![req.key, etag]))
                    .map_err(db)?;
                if changed == 0 {
                    return Err(mismatch());
                }
            }
            None => {
                conn.prepare_cached(&format!("DELETE FROM {table} WHERE key = ?1"))
                    .and_then(|mut s| s.execute(params![req.key]))
                    .map_err(db)?;
            }
        },
    }
    Ok(())
}

#[async_trait]
impl StateStore for SqliteStateStore {
    async fn get(&self, key: &str) -> Result<Option<StateItem>, StateError> {
        let key = key.to_owned();
        self.run("get", move |conn, shared| read_item(conn, &shared.table, &key)).await
    }

    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<(String, Option<StateItem>)>, StateError> {
        let keys = keys.to_vec();
        self.run("bulk get", move |conn, shared| {
            keys.into_iter().map(|k| read_item(conn, &shared.table, &k).map(|item| (k, item))).collect()
        })
        .await
    }

    async fn set(&self, req: SetRequest) -> Result<(), StateError> {
        self.transact(vec![TransactionOp::Set(req)]).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StateError> {
        self.transact(vec![TransactionOp::Delete(req)]).await
    }

    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), StateError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.run("transaction", move |conn, shared| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| StateError::backend("transaction", e))?;
            for op in &ops {
                // An error drops `tx`, which rolls back everything done so far.
                apply_op(&tx, &shared.table, op)?;
            }
            tx.commit().map_err(|e| StateError::backend("transaction", e))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StateError> {
        self.run("ping", |conn, _| {
            conn.query_row("SELECT 1", [], |_| Ok(())).map_err(|e| StateError::backend("ping", e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parsing() {
        let md: ComponentMetadata = [
            ("connectionString", "/tmp/x.db"),
            ("tableName", "t1"),
            ("timeout", "5"),
            ("busyTimeout", "800ms"),
            ("cleanupInterval", "-1"),
            ("disableWAL", "true"),
        ]
        .into_iter()
        .collect();
        let o = SqliteStateOptions::from_metadata(&md, "/d/x.db".into()).unwrap();
        assert_eq!(o.connection_string, "/tmp/x.db");
        assert_eq!(o.table_name, "t1");
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(o.busy_timeout, Duration::from_millis(800));
        assert_eq!(o.cleanup_interval, None);
        assert!(o.disable_wal);
        assert!(!o.create_parent_dir);

        let o = SqliteStateOptions::from_metadata(&ComponentMetadata::new(), "/d/x.db".into()).unwrap();
        assert_eq!(o.connection_string, "/d/x.db");
        assert!(o.create_parent_dir);
        assert_eq!(o.cleanup_interval, Some(Duration::from_secs(3600)));

        let bad: &[(&str, &str, &str)] = &[
            ("tableName", "x; drop", "tableName"),
            ("timeout", "500ms", "timeout"),
            ("disableWAL", "perhaps", "disableWAL"),
            ("busyTimeout", "soon", "busyTimeout"),
        ];
        for (k, v, field) in bad {
            let md: ComponentMetadata = [(*k, *v)].into_iter().collect();
            let e = SqliteStateOptions::from_metadata(&md, "/d".into()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(*field), "{k}");
        }
    }

    #[test]
    fn values_round_trip_through_dapr_encoding() {
        assert_eq!(encode_value(b"{\"a\":1}"), ("{\"a\":1}".to_owned(), false));
        let (enc, bin) = encode_value(&[0xff, 0x00]);
        assert!(bin);
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(enc).unwrap(), vec![0xff, 0x00]);
    }
}
