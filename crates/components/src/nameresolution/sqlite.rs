//! The SQLite registry: schema (Dapr's `hosts` table and `metadata` table), registration with background
//! refresh, random resolution among fresh rows, and the coordinated sweep of stale rows.
//!
//! A row is fresh while `now - last_update < updateInterval` (whole seconds, as Dapr stores them). Each
//! registration refreshes its row every `(updateInterval - timeout) / 2` (Dapr refreshes every
//! `updateInterval - timeout`; twice as often keeps a row from looking stale for a moment when a refresh is a
//! little late, and is harmless to daprd reading the same file). If a refresh finds its row gone (swept while the
//! process was suspended), it registers again instead of exiting as daprd does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::metadata::{BoxError, ComponentError, ComponentMetadata};
use crate::sqlite_conn::{self, ConnOptions, OpenError};
use crate::state::OperationTimedOut;

/// Options of the registry: Dapr's `nameResolution.configuration` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// `connectionString` (required): a path or `file:` URI.
    pub connection_string: String,
    /// `tableName`, default `hosts`.
    pub table_name: String,
    /// `metadataTableName`, default `metadata`.
    pub metadata_table_name: String,
    /// `updateInterval`, default 5s: the freshness window; whole seconds, at least `timeout + 1s`.
    pub update_interval: Duration,
    /// `timeout`, default 1s, at least 1s: upper bound for one database operation.
    pub timeout: Duration,
    /// `cleanupInterval`, default 1h; `None` (`0` or negative) disables the sweep.
    pub cleanup_interval: Option<Duration>,
    /// `busyTimeout`, default 800ms (truncated to milliseconds).
    pub busy_timeout: Duration,
    /// `disableWAL`, default false.
    pub disable_wal: bool,
}

impl RegistryOptions {
    /// Dapr's defaults for a database at `connection_string`.
    pub fn new(connection_string: impl Into<String>) -> Self {
        Self {
            connection_string: connection_string.into(),
            table_name: "hosts".into(),
            metadata_table_name: "metadata".into(),
            update_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            cleanup_interval: Some(Duration::from_secs(3600)),
            busy_timeout: Duration::from_millis(800),
            disable_wal: false,
        }
    }

    /// Parses `nameResolution.configuration` (keys case-insensitive) and validates it. A [`ComponentError`]'s
    /// `field` is the configuration key at fault.
    pub fn from_configuration(cfg: &BTreeMap<String, String>) -> Result<Self, ComponentError> {
        let md = ComponentMetadata::from(cfg.clone());
        let mut o = Self::new(md.require("connectionString")?.trim());
        o.table_name = md.get_or("tableName", "hosts").to_owned();
        o.metadata_table_name = md.get_or("metadataTableName", "metadata").to_owned();
        if let Some(d) = md.get_duration("updateInterval")? {
            o.update_interval = d;
        }
        if let Some(d) = md.get_duration("timeout")? {
            o.timeout = d;
        }
        if let Some(d) = md.get_duration("busyTimeout")? {
            o.busy_timeout = d;
        }
        for key in ["cleanupInterval", "cleanupIntervalInSeconds"] {
            let Some(raw) = md.get(key).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            o.cleanup_interval =
                if raw.trim().starts_with('-') { None } else { md.get_duration(key)?.filter(|d| !d.is_zero()) };
            break;
        }
        o.disable_wal = md.get_bool("disableWAL")?.unwrap_or(false);
        o.validate()?;
        Ok(o)
    }

    /// Dapr's rules, checked again by [`SqliteRegistry::open`].
    pub fn validate(&self) -> Result<(), ComponentError> {
        if self.connection_string.trim().is_empty() {
            return Err(ComponentError::new("connectionString", "required metadata is missing or empty"));
        }
        if !sqlite_conn::valid_identifier(&self.table_name) {
            return Err(ComponentError::new("tableName", "invalid identifier"));
        }
        if !sqlite_conn::valid_identifier(&self.metadata_table_name) {
            return Err(ComponentError::new("metadataTableName", "invalid identifier"));
        }
        if self.timeout < Duration::from_secs(1) {
            return Err(ComponentError::new("timeout", "must be at least 1s"));
        }
        if self.update_interval.subsec_nanos() != 0 {
            return Err(ComponentError::new("updateInterval", "must not contain fractions of seconds"));
        }
        if self.update_interval < self.timeout + Duration::from_secs(1) {
            return Err(ComponentError::new("updateInterval", "must be at least 1s greater than timeout"));
        }
        Ok(())
    }

    fn window_secs(&self) -> i64 {
        i64::try_from(self.update_interval.as_secs()).unwrap_or(i64::MAX)
    }

    fn refresh_every(&self) -> Duration {
        ((self.update_interval.saturating_sub(self.timeout)) / 2).max(Duration::from_millis(500))
    }
}

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The options break one of Dapr's rules.
    #[error("invalid name resolution configuration: {0}")]
    InvalidOptions(#[from] ComponentError),
    /// The database could not be opened or migrated.
    #[error("cannot open the name resolution registry: {source}")]
    Open {
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A query failed.
    #[error("name resolution registry {operation} failed: {source}")]
    Database {
        /// What we were doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// An operation took longer than the configured timeout.
    #[error("name resolution registry {operation} failed: {source}")]
    Timeout {
        /// What we were doing.
        operation: &'static str,
        /// How long we waited.
        #[source]
        source: OperationTimedOut,
    },
    /// The blocking task running the query panicked or was cancelled.
    #[error("name resolution registry {operation} failed: {source}")]
    Task {
        /// What we were doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// `register` was called with an empty app id or address.
    #[error("cannot register: {what} is empty")]
    InvalidRegistration {
        /// `app id` or `address`.
        what: &'static str,
    },
}

struct Inner {
    conn: Mutex<Connection>,
    opts: RegistryOptions,
    sweeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-query leaves no open transaction behind (rusqlite rolls back on drop).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let handle = self.sweeper.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            h.abort();
        }
    }
}

/// The SQLite name-resolution registry. Cheap to clone.
#[derive(Clone)]
pub struct SqliteRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRegistry").field("table", &self.inner.opts.table_name).finish_non_exhaustive()
    }
}

fn migrate(conn: &mut Connection, hosts: &str, metadata: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {metadata} (key text NOT NULL PRIMARY KEY, value text NOT NULL)"
    ))?;
    let level: Option<String> = tx
        .query_row(&format!("SELECT value FROM {metadata} WHERE key = 'nr-migrations'"), [], |r| r.get(0))
        .optional()?;
    if level.and_then(|l| l.parse::<u32>().ok()).unwrap_or(0) < 1 {
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {hosts} (
                registration_id TEXT NOT NULL PRIMARY KEY,
                address TEXT NOT NULL,
                app_id TEXT NOT NULL,
                namespace TEXT NOT NULL,
                last_update INTEGER NOT NULL
            );
            CREATE UNIQUE INDEX IF NOT EXISTS {hosts}_address_idx ON {hosts} (address);
            CREATE INDEX IF NOT EXISTS {hosts}_last_update_idx ON {hosts} (last_update);"
        ))?;
        tx.execute(&format!("REPLACE INTO {metadata} (key, value) VALUES ('nr-migrations', '1')"), [])?;
    }
    // Look-ups by app: without this index every resolution scans the whole table (cost grew with every registered
    // app). Created outside the numbered migrations so a registry shared with daprd keeps its migration level.
    tx.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS {hosts}_app_id_namespace_idx ON {hosts} (app_id, namespace, last_update)"
    ))?;
    tx.commit()
}

/// REPLACE: the address is unique, so a new registration takes over a leftover row of a crashed predecessor.
fn upsert_row(
    conn: &Connection,
    hosts: &str,
    id: &str,
    address: &str,
    app_id: &str,
    namespace: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        &format!(
            "REPLACE INTO {hosts} (registration_id, address, app_id, namespace, last_update)
             VALUES (?1, ?2, ?3, ?4, unixepoch('now'))"
        ),
        params![id, address, app_id, namespace],
    )
}

fn delete_row(conn: &Connection, hosts: &str, id: &str, address: &str) -> rusqlite::Result<usize> {
    conn.execute(&format!("DELETE FROM {hosts} WHERE registration_id = ?1 AND address = ?2"), params![id, address])
}

async fn run<T, F>(inner: Arc<Inner>, operation: &'static str, f: F) -> Result<T, RegistryError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection, &RegistryOptions) -> rusqlite::Result<T> + Send + 'static,
{
    let timeout = inner.opts.timeout;
    let outer = timeout + inner.opts.busy_timeout + Duration::from_secs(1);
    let deadline = Instant::now() + timeout;
    let task = tokio::task::spawn_blocking(move || {
        let mut conn = inner.lock();
        if Instant::now() > deadline {
            return Err(RegistryError::Timeout { operation, source: OperationTimedOut { after: timeout } });
        }
        f(&mut conn, &inner.opts).map_err(|source| RegistryError::Database { operation, source })
    });
    match tokio::time::timeout(outer, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(source)) => Err(RegistryError::Task { operation, source }),
        Err(_) => Err(RegistryError::Timeout { operation, source: OperationTimedOut { after: outer } }),
    }
}

impl SqliteRegistry {
    /// Opens (creating if needed) the registry database, migrates it and starts the stale-row sweep.
    pub async fn open(opts: RegistryOptions) -> Result<Self, RegistryError> {
        opts.validate()?;
        if sqlite_conn::is_memory(&opts.connection_string) {
            tracing::warn!(
                "name resolution uses an in-memory SQLite database: other sidecars cannot see this registry"
            );
        }
        let conn_opts = ConnOptions {
            connection_string: opts.connection_string.clone(),
            busy_timeout: opts.busy_timeout,
            disable_wal: opts.disable_wal,
        };
        let (hosts, metadata) = (opts.table_name.clone(), opts.metadata_table_name.clone());
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, RegistryError> {
            let mut conn = sqlite_conn::open(&conn_opts).map_err(|e| RegistryError::Open {
                source: match e {
                    OpenError::Sqlite(s) => Box::new(s),
                    other => Box::new(other),
                },
            })?;
            migrate(&mut conn, &hosts, &metadata).map_err(|e| RegistryError::Open { source: Box::new(e) })?;
            Ok(conn)
        })
        .await
        .map_err(|source| RegistryError::Task { operation: "open", source })??;
        let inner = Arc::new(Inner { conn: Mutex::new(conn), opts, sweeper: Mutex::new(None) });
        if let Some(every) = inner.opts.cleanup_interval {
            let handle = tokio::spawn(sweep_loop(Arc::downgrade(&inner), every));
            *inner.sweeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        }
        Ok(Self { inner })
    }

    /// The options in force.
    pub fn options(&self) -> &RegistryOptions {
        &self.inner.opts
    }

    /// Registers `address` (`host:port` of this sidecar's internal endpoint) for `app_id` in `namespace` and
    /// keeps it fresh until the returned [`Registration`] is deregistered or dropped.
    pub async fn register(&self, app_id: &str, namespace: &str, address: &str) -> Result<Registration, RegistryError> {
        if app_id.is_empty() {
            return Err(RegistryError::InvalidRegistration { what: "app id" });
        }
        if address.is_empty() {
            return Err(RegistryError::InvalidRegistration { what: "address" });
        }
        let row = Arc::new(RowIdentity {
            id: uuid::Uuid::new_v4().to_string(),
            address: address.to_owned(),
            app_id: app_id.to_owned(),
            namespace: namespace.to_owned(),
            withdrawn: AtomicBool::new(false),
        });
        let r = row.clone();
        run(self.inner.clone(), "register", move |conn, o| {
            upsert_row(conn, &o.table_name, &r.id, &r.address, &r.app_id, &r.namespace)
        })
        .await?;
        let refresher = tokio::spawn(refresh_loop(self.inner.clone(), row.clone()));
        Ok(Registration { registry: self.clone(), row, refresher: Some(refresher) })
    }

    /// A random fresh address registered for `app_id` in `namespace`, or `None`.
    /// Every fresh address of `app_id` in `namespace` (empty when none), for resolvers that cache and pick one
    /// per call.
    pub async fn resolve_all(&self, app_id: &str, namespace: &str) -> Result<Vec<String>, RegistryError> {
        let (app_id, namespace) = (app_id.to_owned(), namespace.to_owned());
        run(self.inner.clone(), "resolve", move |conn, o| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT address FROM {} WHERE app_id = ?1 AND namespace = ?2
                   AND unixepoch('now') - last_update < ?3",
                o.table_name
            ))?;
            let rows = statement.query_map(params![app_id, namespace, o.window_secs()], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Option<String>, RegistryError> {
        let (app_id, namespace) = (app_id.to_owned(), namespace.to_owned());
        run(self.inner.clone(), "resolve", move |conn, o| {
            conn.prepare_cached(&format!(
                "SELECT address FROM {} WHERE app_id = ?1 AND namespace = ?2
                   AND unixepoch('now') - last_update < ?3
                 ORDER BY RANDOM() LIMIT 1",
                o.table_name
            ))?
            .query_row(params![app_id, namespace, o.window_secs()], |r| r.get(0))
            .optional()
        })
        .await
    }

    /// Deletes every stale row now, whoever registered it; returns how many. The periodic sweep does this on
    /// its own, at most once per `cleanupInterval` across all processes sharing the file.
    pub async fn cleanup_stale(&self) -> Result<u64, RegistryError> {
        run(self.inner.clone(), "cleanup", |conn, o| delete_stale(conn, o)).await
    }
}

fn delete_stale(conn: &Connection, o: &RegistryOptions) -> rusqlite::Result<u64> {
    let n = conn.execute(
        &format!("DELETE FROM {} WHERE unixepoch('now') - last_update >= ?1", o.table_name),
        params![o.window_secs()],
    )?;
    Ok(n as u64)
}

async fn sweep_loop(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let every_s = i64::try_from(every.as_secs()).unwrap_or(i64::MAX);
        let result = run(inner, "cleanup", move |conn, o| {
            // Dapr's protocol: only the process that bumps `nr-last-cleanup` sweeps.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimed = tx.execute(
                &format!(
                    "INSERT INTO {} (key, value) VALUES ('nr-last-cleanup', CURRENT_TIMESTAMP)
                     ON CONFLICT (key) DO UPDATE SET value = CURRENT_TIMESTAMP
                     WHERE unixepoch(CURRENT_TIMESTAMP) - unixepoch(value) > ?1",
                    o.metadata_table_name
                ),
                params![every_s.saturating_sub(1)],
            )?;
            let n = if claimed > 0 { delete_stale(&tx, o)? } else { 0 };
            tx.commit()?;
            Ok(n)
        })
        .await;
        match result {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "stale name resolution rows deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "name resolution cleanup failed"),
        }
    }
}

struct RowIdentity {
    id: String,
    address: String,
    app_id: String,
    namespace: String,
    /// Set before the row is deleted; a refresh that runs afterwards must not bring the row back.
    withdrawn: AtomicBool,
}

async fn refresh_loop(inner: Arc<Inner>, row: Arc<RowIdentity>) {
    let mut tick = tokio::time::interval(inner.opts.refresh_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the row was just written
    loop {
        tick.tick().await;
        let r = row.clone();
        let result = run(inner.clone(), "refresh", move |conn, o| {
            // Checked under the connection lock, which deregistration also holds while deleting.
            if r.withdrawn.load(Ordering::SeqCst) {
                return Ok(true);
            }
            let updated = conn.execute(
                &format!(
                    "UPDATE {} SET last_update = unixepoch('now') WHERE registration_id = ?1 AND address = ?2",
                    o.table_name
                ),
                params![r.id, r.address],
            )?;
            if updated == 0 {
                upsert_row(conn, &o.table_name, &r.id, &r.address, &r.app_id, &r.namespace)?;
                return Ok(false);
            }
            Ok(true)
        })
        .await;
        match result {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                app_id = %row.app_id,
                "name resolution registration was lost (row swept or taken over); registered again"
            ),
            Err(e) => tracing::warn!(error = %e, "name resolution refresh failed"),
        }
    }
}

/// A live registration. Deregister with [`Registration::deregister`]; dropping it also stops the refresh and
/// deletes the row, best effort, in the background.
pub struct Registration {
    registry: SqliteRegistry,
    row: Arc<RowIdentity>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.row.id)
            .field("app_id", &self.row.app_id)
            .field("address", &self.row.address)
            .finish()
    }
}

impl Registration {
    /// The registration id (the row's primary key).
    pub fn id(&self) -> &str {
        &self.row.id
    }

    /// The registered address.
    pub fn address(&self) -> &str {
        &self.row.address
    }

    /// Stops refreshing and deletes the row.
    pub async fn deregister(mut self) -> Result<(), RegistryError> {
        if let Some(h) = self.refresher.take() {
            h.abort();
        }
        self.row.withdrawn.store(true, Ordering::SeqCst);
        let row = self.row.clone();
        run(self.registry.inner.clone(), "deregister", move |conn, o| {
            delete_row(conn, &o.table_name, &row.id, &row.address)
        })
        .await
        .map(|_| ())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(h) = self.refresher.take() else {
            return; // deregister() already ran
        };
        h.abort();
        self.row.withdrawn.store(true, Ordering::SeqCst);
        let inner = self.registry.inner.clone();
        let row = self.row.clone();
        let delete = move || {
            let conn = inner.lock();
            if let Err(e) = delete_row(&conn, &inner.opts.table_name, &row.id, &row.address) {
                tracing::warn!(error = %e, "could not delete the name resolution row on drop");
            }
        };
        // Never block an async thread: inside a runtime hand the delete to the blocking pool.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(delete);
            }
            Err(_) => delete(),
        }
    }
}
