//! `state.redis` (v1): state in a real Redis server, stored like Dapr's Redis store so daprd and ward can share
//! data: one hash per key with fields `data` (the value) and `version` (an integer, which is the ETag).
//!
//! Owns: the connection (a [`ConnectionManager`], which reconnects on its own: while Redis is down calls fail with
//! [`StateError::Backend`], and once it is back they succeed again without rebuilding the store), and one Lua
//! script that checks every ETag first and only then writes. Single sets and deletes are one-operation
//! transactions, so there is exactly one code path for the ETag rules, and a transaction is atomic (Dapr's store
//! queues per-operation scripts in MULTI/EXEC, where a failing ETag does not undo the others).
//!
//! Does not: speak TLS (`enableTLS: true` is refused at build time rather than silently connecting in plaintext),
//! Redis Cluster or Sentinel (refused the same way), or the RedisJSON / query features.
//!
//! Metadata: `redisHost` (`host:port`, required), `redisUsername`, `redisPassword`, `redisDB` (default 0),
//! `enableTLS`, `redisType` (`node` only), `failover` (false only), `dialTimeout` (default 5s), `readTimeout`
//! (default 3s), `ttlInSeconds` (default TTL for sets without one; ≤ 0 means none). `keyPrefix` is the sidecar's.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    Concurrency, DeleteRequest, OperationTimedOut, SetRequest, StateError, StateItem, StateStore, TransactionOp,
};
use crate::metadata::{ComponentError, ComponentMetadata};

/// Checks all operations against the stored versions (and the effect of earlier operations on the same key),
/// then applies them. Returns 0 on success, `i` when operation `i` (1-based) fails its ETag / first-write check,
/// `-i` when key `i` holds a non-hash value. Nothing is written unless every check passes.
///
/// KEYS[i] is the key of operation i; ARGV holds five entries per operation: kind (`s`et / `d`elete), ETag (`""`
/// for none), first-write (`1`/`0`), TTL in ms (`0` for none), value.
const TRANSACTION_LUA: &str = r#"
local n = #KEYS
local versions = {}
for i = 1, n do
  local key = KEYS[i]
  local base = (i - 1) * 5
  local kind = ARGV[base + 1]
  local etag = ARGV[base + 2]
  local cur = versions[key]
  if cur == nil then
    local t = redis.call('TYPE', key)['ok']
    if t ~= 'none' and t ~= 'hash' then return -i end
    cur = redis.call('HGET', key, 'version')
    versions[key] = cur
  end
  if etag ~= '' then
    if cur == false or cur ~= etag then return i end
  elseif kind == 's' and ARGV[base + 3] == '1' and cur ~= false then
    return i
  end
  if kind == 's' then
    versions[key] = tostring((tonumber(cur) or 0) + 1)
  else
    versions[key] = false
  end
end
for i = 1, n do
  local key = KEYS[i]
  local base = (i - 1) * 5
  if ARGV[base + 1] == 's' then
    redis.call('HSET', key, 'data', ARGV[base + 5])
    redis.call('HINCRBY', key, 'version', 1)
    local ttl = tonumber(ARGV[base + 4])
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
    else
      redis.call('PERSIST', key)
    end
  else
    redis.call('DEL', key)
  end
end
return 0
"#;

static TRANSACTION_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TRANSACTION_LUA));

/// Options of a Redis state store.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStateOptions {
    /// Server host name or IP.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (never printed).
    pub password: Option<String>,
    /// Database number.
    pub db: i64,
    /// Connect timeout.
    pub dial_timeout: Duration,
    /// Response timeout for one command.
    pub read_timeout: Duration,
    /// TTL for sets that have none.
    pub default_ttl: Option<Duration>,
}

impl fmt::Debug for RedisStateOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStateOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("dial_timeout", &self.dial_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("default_ttl", &self.default_ttl)
            .finish()
    }
}

impl RedisStateOptions {
    /// Defaults for a server at `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            username: None,
            password: None,
            db: 0,
            dial_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(3),
            default_ttl: None,
        }
    }

    /// Reads Dapr's `state.redis` metadata.
    pub fn from_metadata(md: &ComponentMetadata) -> Result<Self, ComponentError> {
        let (host, port) = parse_host_port(md.require("redisHost")?)
            .ok_or_else(|| ComponentError::new("redisHost", "expected host:port"))?;
        let mut opts = Self::new(host, port);
        if md.get_bool("enableTLS")?.unwrap_or(false) {
            return Err(ComponentError::new(
                "enableTLS",
                "TLS to Redis is not compiled into this build of ward; refusing to connect in plaintext",
            ));
        }
        let redis_type = md.get_or("redisType", "node");
        if !redis_type.eq_ignore_ascii_case("node") {
            return Err(ComponentError::new("redisType", "only redisType \"node\" is supported"));
        }
        if md.get_bool("failover")?.unwrap_or(false) {
            return Err(ComponentError::new("failover", "Redis Sentinel failover is not supported"));
        }
        opts.username = md.get("redisUsername").filter(|v| !v.is_empty()).map(str::to_owned);
        opts.password = md.get("redisPassword").filter(|v| !v.is_empty()).map(str::to_owned);
        if let Some(db) = md.get_u64("redisDB")? {
            opts.db = i64::try_from(db).map_err(|_| ComponentError::new("redisDB", "database number out of range"))?;
        }
        if let Some(d) = md.get_duration("dialTimeout")? {
            opts.dial_timeout = d;
        }
        if let Some(d) = md.get_duration("readTimeout")? {
            opts.read_timeout = d;
        }
        if let Some(raw) = md.get("ttlInSeconds").filter(|v| !v.trim().is_empty()) {
            let secs: i64 =
                raw.trim().parse().map_err(|_| ComponentError::new("ttlInSeconds", "expected an integer"))?;
            opts.default_ttl = u64::try_from(secs).ok().filter(|s| *s > 0).map(Duration::from_secs);
        }
        Ok(opts)
    }
}

/// `host:port`, `[v6]:port`.
fn parse_host_port(raw: &str) -> Option<(String, u16)> {
    let (host, port) = raw.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.contains(['[', ']', '/', ' ']) {
        return None;
    }
    Some((host.to_owned(), port))
}

/// The Redis state store.
#[derive(Clone)]
pub struct RedisStateStore {
    conn: ConnectionManager,
    /// Bound for one call including a reconnect attempt, so a dead server never hangs a request.
    op_timeout: Duration,
    default_ttl: Option<Duration>,
}

impl fmt::Debug for RedisStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStateStore").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("key holds a value that is not a Dapr state hash")]
struct WrongType;

#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from Redis")]
struct UnexpectedReply;

#[derive(Debug, thiserror::Error)]
#[error("stored hash has data but no version field")]
struct MissingVersion;

impl RedisStateStore {
    /// Connects (and pings) the server; fails if it cannot be reached, as Dapr's `Init` does.
    pub async fn connect(opts: RedisStateOptions) -> Result<Self, ComponentError> {
        let client = crate::redis_conn::client(&crate::redis_conn::Endpoint {
            host: &opts.host,
            port: opts.port,
            username: opts.username.as_deref(),
            password: opts.password.as_deref(),
            db: opts.db,
        })?;
        // Few, short retries: a request should fail fast while Redis is down; the next request starts a new
        // reconnect attempt anyway.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.dial_timeout))
            .set_response_timeout(Some(opts.read_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let op_timeout = opts.dial_timeout * 2 + opts.read_timeout + Duration::from_secs(1);
        let conn = crate::redis_conn::manager(&client, config, op_timeout).await?;
        let store = Self { conn, op_timeout, default_ttl: opts.default_ttl };
        store.ping().await.map_err(|e| ComponentError::new("redisHost", "cannot connect to Redis").with_source(e))?;
        Ok(store)
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StateError::backend(operation, e)),
            Err(_) => Err(StateError::backend(operation, OperationTimedOut { after: self.op_timeout })),
        }
    }

    fn item_from_reply(reply: (Option<Vec<u8>>, Option<String>)) -> Result<Option<StateItem>, StateError> {
        match reply {
            (None, _) => Ok(None),
            (Some(data), Some(version)) => Ok(Some(StateItem { value: Bytes::from(data), etag: version })),
            (Some(_), None) => Err(StateError::backend("get", MissingVersion)),
        }
    }
}

/// Redis ETags are versions: a decimal integer. Normalise (`007` → `7`) so the script can compare strings.
fn canonical_etag(key: &str, etag: Option<&str>) -> Result<String, StateError> {
    match etag {
        None => Ok(String::new()),
        Some(e) => {
            e.trim().parse::<u64>().map(|v| v.to_string()).map_err(|_| StateError::InvalidEtag { key: key.to_owned() })
        }
    }
}

#[async_trait]
impl StateStore for RedisStateStore {
    async fn get(&self, key: &str) -> Result<Option<StateItem>, StateError> {
        let mut conn = self.conn.clone();
        let reply: (Option<Vec<u8>>, Option<String>) =
            self.bounded("get", redis::cmd("HMGET").arg(key).arg("data").arg("version").query_async(&mut conn)).await?;
        Self::item_from_reply(reply)
    }

    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<(String, Option<StateItem>)>, StateError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HMGET").arg(k).arg("data").arg("version");
        }
        let mut conn = self.conn.clone();
        let replies: Vec<(Option<Vec<u8>>, Option<String>)> =
            self.bounded("bulk get", pipe.query_async(&mut conn)).await?;
        if replies.len() != keys.len() {
            return Err(StateError::backend("bulk get", UnexpectedReply));
        }
        keys.iter().zip(replies).map(|(k, r)| Ok((k.clone(), Self::item_from_reply(r)?))).collect()
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
        let mut invocation = TRANSACTION_SCRIPT.prepare_invoke();
        for op in &ops {
            let etag = canonical_etag(op.key(), op.etag())?;
            invocation.key(op.key());
            match op {
                TransactionOp::Set(req) => {
                    let ttl = match req.ttl {
                        None => self.default_ttl,
                        Some(t) if t.is_zero() => None,
                        Some(t) => Some(t),
                    };
                    // PEXPIRE takes whole milliseconds; never round a sub-millisecond TTL down to "no expiry".
                    let ttl_ms = ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
                    let first_write = req.concurrency == Concurrency::FirstWrite;
                    invocation
                        .arg("s")
                        .arg(etag)
                        .arg(if first_write { "1" } else { "0" })
                        .arg(ttl_ms)
                        .arg(req.value.as_ref());
                }
                TransactionOp::Delete(_) => {
                    invocation.arg("d").arg(etag).arg("0").arg(0u64).arg("");
                }
            }
        }
        let mut conn = self.conn.clone();
        let code: i64 = self.bounded("transaction", invocation.invoke_async(&mut conn)).await?;
        let op_at = |code: i64| {
            usize::try_from(code.unsigned_abs()).ok().and_then(|i| i.checked_sub(1)).and_then(|i| ops.get(i))
        };
        match code {
            0 => Ok(()),
            c if c > 0 => match op_at(c) {
                Some(op) => Err(StateError::EtagMismatch { key: op.key().to_owned() }),
                None => Err(StateError::backend("transaction", UnexpectedReply)),
            },
            c => Err(StateError::backend(
                "transaction",
                match op_at(c) {
                    Some(_) => Box::new(WrongType) as crate::BoxError,
                    None => Box::new(UnexpectedReply),
                },
            )),
        }
    }

    async fn ping(&self) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let pong: String = self.bounded("ping", redis::cmd("PING").query_async(&mut conn)).await?;
        if pong == "PONG" { Ok(()) } else { Err(StateError::backend("ping", UnexpectedReply)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(parse_host_port("localhost:6379"), Some(("localhost".into(), 6379)));
        assert_eq!(parse_host_port("[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(parse_host_port("localhost"), None);
        assert_eq!(parse_host_port(":6379"), None);
        assert_eq!(parse_host_port("h:99999"), None);
    }

    #[test]
    fn metadata() {
        let md: ComponentMetadata =
            [("redisHost", "127.0.0.1:6380"), ("redisPassword", "hunter2"), ("redisDB", "3"), ("ttlInSeconds", "-1")]
                .into_iter()
                .collect();
        let o = RedisStateOptions::from_metadata(&md).unwrap();
        assert_eq!((o.host.as_str(), o.port, o.db), ("127.0.0.1", 6380, 3));
        assert_eq!(o.default_ttl, None);
        assert!(!format!("{o:?}").contains("hunter2"));

        let refused: &[(&str, &str)] =
            &[("enableTLS", "true"), ("redisType", "cluster"), ("failover", "true"), ("redisDB", "x")];
        for (k, v) in refused {
            let mut md = md.clone();
            md.insert(*k, *v);
            let e = RedisStateOptions::from_metadata(&md).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(*k));
            assert!(!e.to_string().contains("hunter2"));
        }
        let md: ComponentMetadata = [("redisHost", "secret-host")].into_iter().collect();
        let e = RedisStateOptions::from_metadata(&md).unwrap_err();
        assert!(!e.to_string().contains("secret-host"));
    }

    #[test]
    fn etags_are_versions() {
        assert_eq!(canonical_etag("k", Some("007")).unwrap(), "7");
        assert_eq!(canonical_etag("k", None).unwrap(), "");
        assert!(matches!(canonical_etag("k", Some("abc")), Err(StateError::InvalidEtag { .. })));
    }
}
