//! `pubsub.redis` (v1): Redis Streams with consumer groups, on the wire exactly as Dapr's component, so ward and
//! daprd apps can share a broker.
//!
//! Wire format (Dapr's `pubsub/redis`): the stream key is the topic; [`PubSub::publish`] is
//! `XADD <topic> [MAXLEN ~ n | MINID ~ <ms>-1] * data <bytes> metadata <json of the request metadata>`. A
//! subscription is the consumer group `consumerID` (default: the app id) with the consumer name `consumerID` too,
//! created with `XGROUP CREATE <topic> <group> 0 MKSTREAM`. A message is acknowledged (`XACK`) only when the
//! handler returns `Ok`; otherwise it stays in the group's pending list and is claimed again (`XPENDING` +
//! `XCLAIM`) once it has been idle for `processingTimeout`, checked every `redeliverInterval`.
//!
//! Beyond Dapr: a subscription first reads its consumer's own pending entries (`XREADGROUP … 0`) before new ones
//! (`>`), so after a sidecar restart a message whose delivery was cut off is delivered again at once instead of
//! after `processingTimeout`; and an entry this process is still handling is never claimed back to itself.
//!
//! Owns: the metadata parser ([`RedisPubSubOptions`]), the connections (one reconnecting multiplexed connection
//! for publish/ack/claim, and one per subscription for its blocking reads so they never stall the others), the
//! read, dispatch (`concurrency` handler calls at once) and reclaim loops.
//!
//! Does not: speak TLS, Redis Cluster, Sentinel, Entra ID or OIDC (each refused at build time, never ignored),
//! build or check CloudEvents, or retry with backoff (the sidecar does).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Handler, Message, PubSub, PubSubError, PublishRequest, SubscribeRequest, Subscription};
use crate::metadata::{ComponentError, ComponentMetadata, parse_duration};

/// Dapr's defaults for a Redis pub/sub (`common/component/redis`: `ParseClientFromProperties`).
const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_REDELIVER_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_QUEUE_DEPTH: usize = 100;
const DEFAULT_CONCURRENCY: usize = 10;
const DEFAULT_PORT: u16 = 6379;

/// Options of a Redis Streams broker, read from Dapr's metadata names.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPubSubOptions {
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
    /// Consumer group, and consumer name within it (`consumerID`; default: the app id).
    pub consumer_id: String,
    /// How long a delivered entry stays unacknowledged before it is claimed again (`Duration::ZERO` disables
    /// redelivery, as in Dapr).
    pub processing_timeout: Duration,
    /// How often the pending list is checked (`Duration::ZERO` disables redelivery).
    pub redeliver_interval: Duration,
    /// Entries read (and claimed) per call.
    pub queue_depth: usize,
    /// Handler calls at once per subscription.
    pub concurrency: usize,
    /// `MAXLEN ~` on publish.
    pub max_len_approx: Option<u64>,
    /// `MINID ~ now - ttl` on publish.
    pub stream_ttl: Option<Duration>,
    /// Connect timeout.
    pub dial_timeout: Duration,
    /// Bound of one read command; also how long a blocking read waits for new entries.
    pub read_timeout: Duration,
    /// Bound of one write command (publish, ack).
    pub write_timeout: Duration,
    /// Reconnect attempts per command before it fails.
    pub max_retries: usize,
    /// Reconnect backoff bounds.
    pub min_retry_interval: Duration,
    pub max_retry_interval: Duration,
}

impl fmt::Debug for RedisPubSubOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPubSubOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("consumer_id", &self.consumer_id)
            .field("processing_timeout", &self.processing_timeout)
            .field("redeliver_interval", &self.redeliver_interval)
            .field("queue_depth", &self.queue_depth)
            .field("concurrency", &self.concurrency)
            .field("max_len_approx", &self.max_len_approx)
            .field("stream_ttl", &self.stream_ttl)
            .field("dial_timeout", &self.dial_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisPubSubOptions {
    /// Reads Dapr's `pubsub.redis` metadata; `app_id` is the default `consumerID`.
    ///
    /// Every key Dapr defines is either applied, accepted because it cannot change delivery here (connection-pool
    /// tuning, TLS client material without `enableTLS`, state-store-only keys), or refused naming the key. Keys
    /// the sidecar reads from the same map (`publishingScopes`, `subscriptionScopes`, `allowedTopics`,
    /// `protectedTopics`, `verifyPublishers`, `maxDeliveryAttempts`) are left alone.
    pub fn from_metadata(md: &ComponentMetadata, app_id: &str) -> Result<Self, ComponentError> {
        refuse_true(
            md,
            "enableTLS",
            "TLS to Redis is not compiled into this build of ward; refusing to connect in plaintext",
        )?;
        refuse_true(md, "failover", "Redis Sentinel failover is not supported")?;
        refuse_true(md, "useEntraID", "Entra ID authentication is not supported")?;
        refuse_true(md, "useAzureAD", "Entra ID authentication is not supported")?;
        refuse_true(md, "useOIDC", "OIDC authentication is not supported")?;
        if !md.get_or("redisType", "node").trim().eq_ignore_ascii_case("node") {
            return Err(ComponentError::new("redisType", "only redisType \"node\" is supported"));
        }
        // Validated only: they tune TLS, which is off (refused above when on).
        md.get_bool("insecureSkipTLSVerify")?;

        let port_override = match md.get("redisPort").map(str::trim).filter(|v| !v.is_empty()) {
            None => None,
            Some(raw) => Some(
                raw.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| ComponentError::new("redisPort", "expected a port number"))?,
            ),
        };
        let (host, port) = parse_host(md.require("redisHost")?, port_override)?;

        let consumer_id = match md.get("consumerID").map(str::trim).filter(|v| !v.is_empty()) {
            Some(c) => c.to_owned(),
            None => app_id.trim().to_owned(),
        };
        if consumer_id.is_empty() {
            return Err(ComponentError::new("consumerID", "required when the sidecar has no app id"));
        }
        if consumer_id.contains(['{', '}']) {
            return Err(ComponentError::new(
                "consumerID",
                "template placeholders ({uuid}, {podName}, …) are not substituted by this broker",
            ));
        }

        let mut opts = RedisPubSubOptions {
            host,
            port,
            username: md.get("redisUsername").filter(|v| !v.is_empty()).map(str::to_owned),
            password: md.get("redisPassword").filter(|v| !v.is_empty()).map(str::to_owned),
            db: 0,
            consumer_id,
            processing_timeout: legacy_ms_duration(md, "processingTimeout")?.unwrap_or(DEFAULT_PROCESSING_TIMEOUT),
            redeliver_interval: legacy_ms_duration(md, "redeliverInterval")?.unwrap_or(DEFAULT_REDELIVER_INTERVAL),
            queue_depth: positive(md, "queueDepth")?.unwrap_or(DEFAULT_QUEUE_DEPTH),
            concurrency: positive(md, "concurrency")?.unwrap_or(DEFAULT_CONCURRENCY),
            max_len_approx: md.get_u64("maxLenApprox")?.filter(|n| *n > 0),
            stream_ttl: md.get_duration("streamTTL")?.filter(|d| !d.is_zero()),
            dial_timeout: client_duration(md, "dialTimeout")?.unwrap_or(Duration::from_secs(5)),
            read_timeout: client_duration(md, "readTimeout")?.unwrap_or(Duration::from_secs(3)),
            write_timeout: Duration::ZERO,
            max_retries: 3,
            min_retry_interval: Duration::from_millis(8),
            max_retry_interval: Duration::from_millis(512),
        };
        opts.write_timeout = client_duration(md, "writeTimeout")?.unwrap_or(opts.read_timeout);
        if opts.max_len_approx.is_some() && opts.stream_ttl.is_some() {
            // Dapr warns and lets MAXLEN win; one of the two would be silently ignored.
            return Err(ComponentError::new("streamTTL", "cannot be combined with maxLenApprox; set only one"));
        }
        if let Some(db) = md.get_u64("redisDB")? {
            opts.db = i64::try_from(db).map_err(|_| ComponentError::new("redisDB", "database number out of range"))?;
        }
        if let Some(raw) = md.get("redisMaxRetries").map(str::trim).filter(|v| !v.is_empty()) {
            let n: i64 = raw.parse().map_err(|_| ComponentError::new("redisMaxRetries", "expected an integer"))?;
            // -1 disables retries (Dapr / go-redis).
            opts.max_retries = usize::try_from(n.max(0)).unwrap_or(0);
        }
        if let Some(d) = retry_interval(md, "redisMinRetryInterval")? {
            opts.min_retry_interval = d;
        }
        if let Some(d) = retry_interval(md, "redisMaxRetryInterval")? {
            opts.max_retry_interval = d;
        }
        // Connection-pool tuning: ward multiplexes one connection instead of pooling, so these cannot change
        // delivery; still refuse a malformed value, as daprd would.
        for key in ["poolSize", "minIdleConns"] {
            md.get_u64(key)?;
        }
        for key in ["poolTimeout", "maxConnAge", "idleTimeout", "idleCheckFrequency"] {
            client_duration_allow_negative(md, key)?;
        }
        Ok(opts)
    }
}

fn refuse_true(md: &ComponentMetadata, key: &str, why: &str) -> Result<(), ComponentError> {
    if md.get_bool(key)?.unwrap_or(false) { Err(ComponentError::new(key, why)) } else { Ok(()) }
}

/// `processingTimeout` / `redeliverInterval`: a plain number is milliseconds (Dapr's legacy rule for these two),
/// anything else a Go duration. `0` disables redelivery.
fn legacy_ms_duration(md: &ComponentMetadata, key: &str) -> Result<Option<Duration>, ComponentError> {
    let Some(raw) = md.get(key).map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = raw.parse().map_err(|_| ComponentError::new(key, "number out of range"))?;
        return Ok(Some(Duration::from_millis(ms)));
    }
    parse_duration(raw).map(Some).map_err(|e| ComponentError::new(key, e.to_string()))
}

/// Dapr's Redis client durations: a plain integer is milliseconds, else a Go duration. Negative values mean "no
/// timeout" in go-redis; ward always bounds a call, so they are refused rather than ignored.
fn client_duration(md: &ComponentMetadata, key: &str) -> Result<Option<Duration>, ComponentError> {
    let Some(raw) = md.get(key).map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    if raw.starts_with('-') {
        return Err(ComponentError::new(key, "ward always bounds Redis calls: give a positive duration"));
    }
    client_duration_allow_negative(md, key).map(|d| d.filter(|d| !d.is_zero()))
}

/// As [`client_duration`], with `-1` (disable) accepted; for keys that only tune the connection pool.
fn client_duration_allow_negative(md: &ComponentMetadata, key: &str) -> Result<Option<Duration>, ComponentError> {
    let Some(raw) = md.get(key).map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    if let Ok(n) = raw.parse::<i64>() {
        return Ok(u64::try_from(n).ok().map(Duration::from_millis));
    }
    parse_duration(raw).map(Some).map_err(|e| ComponentError::new(key, e.to_string()))
}

/// Reconnect backoff bounds: `-1` disables backoff.
fn retry_interval(md: &ComponentMetadata, key: &str) -> Result<Option<Duration>, ComponentError> {
    let given = md.get(key).is_some_and(|v| !v.trim().is_empty());
    Ok(client_duration_allow_negative(md, key)?.or(given.then_some(Duration::ZERO)))
}

fn positive(md: &ComponentMetadata, key: &str) -> Result<Option<usize>, ComponentError> {
    match md.get_u64(key)? {
        None => Ok(None),
        Some(0) => Err(ComponentError::new(key, "must be at least 1")),
        Some(n) => usize::try_from(n).map(Some).map_err(|_| ComponentError::new(key, "number out of range")),
    }
}

/// `redisHost` as Dapr reads it: `host`, `host:port`, `[v6]:port`; `redisPort` fills in a missing port and must
/// agree with one that is present; the default port is 6379.
fn parse_host(raw: &str, port_override: Option<u16>) -> Result<(String, u16), ComponentError> {
    let raw = raw.trim();
    if raw.contains(',') {
        return Err(ComponentError::new("redisHost", "several hosts (cluster) are not supported"));
    }
    let bad = || ComponentError::new("redisHost", "expected host or host:port");
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).ok_or_else(bad)?)),
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
            Some(_) => (raw, None), // a bare IPv6 address
            None => (raw, None),
        }
    };
    if host.is_empty() || host.contains(['[', ']', '/', ' ']) {
        return Err(bad());
    }
    let port = match (port, port_override) {
        (Some(p), Some(o)) if p != o => {
            return Err(ComponentError::new("redisPort", "redisHost already contains a different port"));
        }
        (Some(p), _) => p,
        (None, Some(o)) => o,
        (None, None) => DEFAULT_PORT,
    };
    Ok((host.to_owned(), port))
}

/// Entries being handled in this process, by `(topic, entry id)`: the reclaim loop and a second subscription of
/// the same group never hand them out again while they are in flight.
type InFlight = Arc<Mutex<HashSet<(String, String)>>>;

/// The Redis Streams broker.
pub struct RedisPubSub {
    client: redis::Client,
    conn: ConnectionManager,
    opts: Arc<RedisPubSubOptions>,
    in_flight: InFlight,
}

impl fmt::Debug for RedisPubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPubSub").field("opts", &self.opts).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("Redis did not answer within {after:?}")]
struct RedisTimedOut {
    after: Duration,
}

impl RedisPubSub {
    /// Connects and pings the server; fails when it cannot be reached, as Dapr's `Init` does.
    pub async fn connect(opts: RedisPubSubOptions) -> Result<Self, ComponentError> {
        let client = crate::redis_conn::client(&crate::redis_conn::Endpoint {
            host: &opts.host,
            port: opts.port,
            username: opts.username.as_deref(),
            password: opts.password.as_deref(),
            db: opts.db,
        })?;
        let conn = manager(&client, &opts, opts.read_timeout.max(opts.write_timeout)).await?;
        let broker = RedisPubSub { client, conn, opts: Arc::new(opts), in_flight: Default::default() };
        let mut conn = broker.conn.clone();
        match bounded::<String>(&mut conn, &redis::cmd("PING"), broker.opts.read_timeout).await {
            Ok(_) => Ok(broker),
            Err(e) => Err(ComponentError::new("redisHost", "cannot connect to Redis").with_source(e)),
        }
    }
}

/// A reconnecting multiplexed connection whose replies may take up to `response`.
async fn manager(
    client: &redis::Client,
    opts: &RedisPubSubOptions,
    response: Duration,
) -> Result<ConnectionManager, ComponentError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.dial_timeout))
        .set_response_timeout(Some(response))
        .set_number_of_retries(opts.max_retries)
        .set_min_delay(opts.min_retry_interval)
        .set_max_delay(opts.max_retry_interval.max(opts.min_retry_interval));
    crate::redis_conn::manager(client, config, opts.dial_timeout * 2 + Duration::from_secs(1)).await
}

/// Runs one command with a time bound.
async fn bounded<T: redis::FromRedisValue>(
    conn: &mut ConnectionManager,
    cmd: &redis::Cmd,
    after: Duration,
) -> Result<T, crate::BoxError> {
    match tokio::time::timeout(after, cmd.query_async::<T>(conn)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Box::new(e)),
        Err(_) => Err(Box::new(RedisTimedOut { after })),
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    async fn publish(&self, request: PublishRequest) -> Result<(), PubSubError> {
        let publish_err = |source| PubSubError::Publish { topic: request.topic.clone(), source };
        // Dapr writes the request metadata as JSON beside the data (its HTTP API always passes a map, so
        // `{}` when there is none); a daprd subscriber reads it back.
        let metadata = serde_json::to_vec(&request.metadata).map_err(|e| publish_err(Box::new(e)))?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&request.topic);
        if let Some(n) = self.opts.max_len_approx {
            cmd.arg("MAXLEN").arg("~").arg(n);
        } else if let Some(ttl) = self.opts.stream_ttl {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let min = now.saturating_sub(ttl).as_millis();
            cmd.arg("MINID").arg("~").arg(format!("{min}-1"));
        }
        cmd.arg("*").arg("data").arg(request.data.as_ref()).arg("metadata").arg(metadata);
        let mut conn = self.conn.clone();
        bounded::<String>(&mut conn, &cmd, self.opts.write_timeout).await.map(|_| ()).map_err(publish_err)
    }

    async fn subscribe(&self, request: SubscribeRequest, handler: Handler) -> Result<Subscription, PubSubError> {
        let topic = request.topic;
        let mut conn = self.conn.clone();
        create_group(&mut conn, &topic, &self.opts)
            .await
            .map_err(|source| PubSubError::Subscribe { topic: topic.clone(), source })?;
        // Blocking reads get their own connection: on the shared one they would hold up acks and publishes.
        let read_conn = manager(&self.client, &self.opts, self.opts.read_timeout * 2 + Duration::from_secs(1))
            .await
            .map_err(|e| PubSubError::Subscribe { topic: topic.clone(), source: Box::new(e) })?;
        let consumer = Consumer {
            topic,
            opts: self.opts.clone(),
            conn: self.conn.clone(),
            handler,
            in_flight: self.in_flight.clone(),
            permits: Arc::new(Semaphore::new(self.opts.concurrency)),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Arc::new(consumer).run(read_conn, stop_rx));
        Ok(Subscription::new(stop_tx, task))
    }
}

/// `XGROUP CREATE <topic> <group> 0 MKSTREAM`; an existing group is fine.
async fn create_group(
    conn: &mut ConnectionManager,
    topic: &str,
    opts: &RedisPubSubOptions,
) -> Result<(), crate::BoxError> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE").arg(topic).arg(&opts.consumer_id).arg("0").arg("MKSTREAM");
    match tokio::time::timeout(opts.write_timeout, cmd.query_async::<Value>(conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.code() == Some("BUSYGROUP") => Ok(()),
        Ok(Err(e)) => Err(Box::new(e)),
        Err(_) => Err(Box::new(RedisTimedOut { after: opts.write_timeout })),
    }
}

/// One stream entry: its id and, unless it was deleted meanwhile, its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// One subscription's loops.
struct Consumer {
    topic: String,
    opts: Arc<RedisPubSubOptions>,
    conn: ConnectionManager,
    handler: Handler,
    in_flight: InFlight,
    permits: Arc<Semaphore>,
}

/// Removes an entry from the in-flight set when its delivery ends, however it ends (also when aborted).
struct InFlightGuard {
    set: InFlight,
    key: (String, String),
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl Consumer {
    /// The dispatcher: takes entries from the read and reclaim loops (a queue of `queueDepth`, as Dapr's) and
    /// hands each to a handler task, at most `concurrency` at once.
    async fn run(self: Arc<Self>, read_conn: ConnectionManager, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(self.opts.queue_depth);
        let mut loops = JoinSet::new();
        loops.spawn(self.clone().read_loop(read_conn, tx.clone()));
        if !self.opts.processing_timeout.is_zero() && !self.opts.redeliver_interval.is_zero() {
            loops.spawn(self.clone().reclaim_loop(tx));
        } else {
            drop(tx);
        }
        let mut running = JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let entry = tokio::select! {
                _ = &mut stop => break,
                entry = rx.recv() => match entry { Some(e) => e, None => break },
            };
            if !self.dispatch(entry, &mut running, &mut stop).await {
                break;
            }
        }
        // Entries read but not handled, and those in flight, stay unacknowledged: they are pending for this
        // consumer and come again (at once after a restart, or after processingTimeout).
        loops.abort_all();
        running.abort_all();
    }

    /// Reads this consumer's own pending entries first (from id `0`, so a restart redelivers them at once), then
    /// new ones (`>`), blocking up to `readTimeout` per call.
    async fn read_loop(self: Arc<Self>, mut conn: ConnectionManager, tx: tokio::sync::mpsc::Sender<Entry>) {
        let mut cursor: Option<String> = Some("0".to_owned());
        let mut backoff = Duration::from_millis(100);
        loop {
            let start = cursor.clone().unwrap_or_else(|| ">".to_owned());
            match self.read(&mut conn, &start).await {
                Ok(entries) => {
                    backoff = Duration::from_millis(100);
                    if cursor.is_some() {
                        // The pending list is read to its end when a page comes back empty.
                        cursor = entries.last().map(|e| e.id.clone());
                    }
                    for entry in entries {
                        if tx.send(entry).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if let Some(re) = e.downcast_ref::<redis::RedisError>()
                        && re.code() == Some("NOGROUP")
                    {
                        // The stream or group vanished (deleted, or a server without persistence restarted).
                        tracing::warn!(topic = %self.topic, group = %self.opts.consumer_id, "redis pubsub: consumer group missing; recreating it");
                        let mut conn = self.conn.clone();
                        if let Err(e) = create_group(&mut conn, &self.topic, &self.opts).await {
                            tracing::warn!(topic = %self.topic, error = %e, "redis pubsub: recreating the consumer group failed");
                        }
                    } else {
                        tracing::warn!(topic = %self.topic, error = %e, "redis pubsub: reading the stream failed");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Every `redeliverInterval`, claims what has been pending for `processingTimeout`.
    async fn reclaim_loop(self: Arc<Self>, tx: tokio::sync::mpsc::Sender<Entry>) {
        let mut ticker = tokio::time::interval(self.opts.redeliver_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.reclaim().await {
                Ok(entries) => {
                    for entry in entries {
                        if tx.send(entry).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "redis pubsub: reclaiming pending entries failed")
                }
            }
        }
    }

    /// `XREADGROUP GROUP <g> <c> COUNT <queueDepth> [BLOCK <readTimeout>] STREAMS <topic> <start>`. Reading the
    /// pending list (`start` is an id) does not block.
    async fn read(&self, conn: &mut ConnectionManager, start: &str) -> Result<Vec<Entry>, crate::BoxError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.opts.consumer_id).arg(&self.opts.consumer_id);
        cmd.arg("COUNT").arg(self.opts.queue_depth);
        if start == ">" {
            cmd.arg("BLOCK").arg(u64::try_from(self.opts.read_timeout.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        cmd.arg("STREAMS").arg(&self.topic).arg(start);
        let reply: Value = bounded(conn, &cmd, self.opts.read_timeout * 2 + Duration::from_secs(1)).await?;
        parse_read_reply(reply, &self.topic).ok_or_else(|| Box::new(UnexpectedReply) as crate::BoxError)
    }

    /// Claims entries of the group idle for at least `processingTimeout` (any consumer's: a crashed replica's
    /// too), skipping those this process is handling.
    async fn reclaim(&self) -> Result<Vec<Entry>, crate::BoxError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut start = "-".to_owned();
        let min_idle = u64::try_from(self.opts.processing_timeout.as_millis()).unwrap_or(u64::MAX);
        // Bounded: at most a few pages per tick; the rest waits for the next tick.
        for _ in 0..8 {
            let mut cmd = redis::cmd("XPENDING");
            cmd.arg(&self.topic).arg(&self.opts.consumer_id).arg(&start).arg("+").arg(self.opts.queue_depth);
            let reply: Value = bounded(&mut conn, &cmd, self.opts.read_timeout).await?;
            let pending = parse_pending(reply).ok_or(UnexpectedReply)?;
            let Some(last) = pending.last() else { break };
            start = format!("({}", last.0);
            let page_full = pending.len() >= self.opts.queue_depth;
            let ids: Vec<String> = {
                let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                pending
                    .into_iter()
                    .filter(|(id, idle)| *idle >= min_idle && !in_flight.contains(&(self.topic.clone(), id.clone())))
                    .map(|(id, _)| id)
                    .collect()
            };
            if !ids.is_empty() {
                let mut cmd = redis::cmd("XCLAIM");
                cmd.arg(&self.topic).arg(&self.opts.consumer_id).arg(&self.opts.consumer_id).arg(min_idle);
                for id in &ids {
                    cmd.arg(id);
                }
                let reply: Value = bounded(&mut conn, &cmd, self.opts.read_timeout).await?;
                let claimed = parse_entries(reply).ok_or(UnexpectedReply)?;
                out.extend(claimed);
            }
            if !page_full {
                break;
            }
        }
        Ok(out)
    }

    /// Hands one entry to a handler task (waiting for a free slot). Returns false when the subscription stopped.
    async fn dispatch(
        &self,
        entry: Entry,
        running: &mut JoinSet<()>,
        stop: &mut tokio::sync::oneshot::Receiver<()>,
    ) -> bool {
        let key = (self.topic.clone(), entry.id.clone());
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if !in_flight.insert(key.clone()) {
                return true; // another subscription of this group in this process is handling it
            }
        }
        let guard = InFlightGuard { set: self.in_flight.clone(), key };
        let Some(fields) = entry.fields else {
            // Deleted from the stream (trimmed) while pending: nothing to deliver; take it off the pending list
            // as Dapr does.
            self.ack(&entry.id).await;
            return true;
        };
        let permit = tokio::select! {
            _ = &mut *stop => return false,
            p = self.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return false },
        };
        let message = to_message(&self.topic, &entry.id, fields);
        let handler = self.handler.clone();
        let conn = self.conn.clone();
        let opts = self.opts.clone();
        let topic = self.topic.clone();
        let id = entry.id;
        running.spawn(async move {
            let _guard = guard;
            let _permit = permit;
            match handler(message).await {
                Ok(()) => ack(conn, &opts, &topic, &id).await,
                // Left pending: the reclaim loop delivers it again after processingTimeout.
                Err(e) => tracing::debug!(topic = %topic, id = %id, error = %e, "redis pubsub: message not handled"),
            }
        });
        true
    }

    async fn ack(&self, id: &str) {
        ack(self.conn.clone(), &self.opts, &self.topic, id).await;
    }
}

async fn ack(mut conn: ConnectionManager, opts: &RedisPubSubOptions, topic: &str, id: &str) {
    let mut cmd = redis::cmd("XACK");
    cmd.arg(topic).arg(&opts.consumer_id).arg(id);
    if let Err(e) = bounded::<i64>(&mut conn, &cmd, opts.write_timeout).await {
        // Unacknowledged means delivered again later: at least once, never lost.
        tracing::warn!(topic = %topic, id = %id, error = %e, "redis pubsub: XACK failed; the message will come again");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from Redis")]
struct UnexpectedReply;

/// The message handed to the handler: field `data` as is (empty when absent, as Dapr), and the publisher's
/// `metadata` JSON object as a string map (dropped with a warning when it is not one, as Dapr).
fn to_message(topic: &str, id: &str, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Message {
    let mut data = Bytes::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in fields {
        match name.as_slice() {
            b"data" => data = Bytes::from(value),
            b"metadata" => match serde_json::from_slice::<BTreeMap<String, String>>(&value) {
                Ok(m) => metadata = m,
                Err(_) => {
                    tracing::warn!(topic = %topic, id = %id, "redis pubsub: entry metadata is not a JSON string map; ignored")
                }
            },
            _ => {}
        }
    }
    Message { topic: topic.to_owned(), data, metadata }
}

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn string_of(v: &Value) -> Option<String> {
    bytes_of(v).and_then(|b| String::from_utf8(b).ok())
}

fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// `[[id, [field, value, …] | nil], …]` (XREADGROUP's per-stream list, XCLAIM, XRANGE).
fn parse_entries(v: Value) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    for item in items(v)? {
        // Redis < 7 answers nil in place of an entry that was deleted.
        let Value::Array(mut parts) = item else {
            continue;
        };
        if parts.len() != 2 {
            return None;
        }
        let body = parts.pop()?;
        let id = string_of(&parts[0])?;
        let fields = match body {
            Value::Nil => None,
            Value::Array(flat) => {
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((bytes_of(k)?, bytes_of(v)?));
                }
                Some(pairs)
            }
            Value::Map(map) => {
                Some(map.iter().map(|(k, v)| Some((bytes_of(k)?, bytes_of(v)?))).collect::<Option<Vec<_>>>()?)
            }
            _ => return None,
        };
        out.push(Entry { id, fields });
    }
    Some(out)
}

/// XREADGROUP: nil (nothing before the block ended), `[[stream, entries]]` (RESP2) or `{stream: entries}` (RESP3).
fn parse_read_reply(v: Value, topic: &str) -> Option<Vec<Entry>> {
    let streams: Vec<(Value, Value)> = match v {
        Value::Nil => return Some(Vec::new()),
        Value::Map(m) => m,
        Value::Array(a) => a
            .into_iter()
            .map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop()?;
                    let key = kv.pop()?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    let mut out = Vec::new();
    for (key, entries) in streams {
        if string_of(&key).as_deref() == Some(topic) {
            out.extend(parse_entries(entries)?);
        }
    }
    Some(out)
}

/// XPENDING extended form: `[[id, consumer, idle ms, deliveries], …]` → `(id, idle ms)`.
fn parse_pending(v: Value) -> Option<Vec<(String, u64)>> {
    items(v)?
        .into_iter()
        .map(|row| {
            let row = items(row)?;
            let id = string_of(row.first()?)?;
            let idle = match row.get(2)? {
                Value::Int(i) => u64::try_from(*i).ok()?,
                other => string_of(other)?.parse().ok()?,
            };
            Some((id, idle))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> ComponentMetadata {
        pairs.iter().copied().collect()
    }

    #[test]
    fn defaults_are_daprs() {
        let o = RedisPubSubOptions::from_metadata(&md(&[("redisHost", "localhost:6379")]), "orders").unwrap();
        assert_eq!((o.host.as_str(), o.port, o.db), ("localhost", 6379, 0));
        assert_eq!(o.consumer_id, "orders");
        assert_eq!(o.processing_timeout, Duration::from_secs(60));
        assert_eq!(o.redeliver_interval, Duration::from_secs(15));
        assert_eq!((o.queue_depth, o.concurrency), (100, 10));
        assert_eq!((o.max_len_approx, o.stream_ttl), (None, None));
        assert_eq!(
            (o.dial_timeout, o.read_timeout, o.write_timeout),
            (Duration::from_secs(5), Duration::from_secs(3), Duration::from_secs(3))
        );
    }

    #[test]
    fn values_as_dapr_reads_them() {
        let m = md(&[
            ("redisHost", "redis"),
            ("redisPort", "6380"),
            ("consumerID", "group-a"),
            ("processingTimeout", "1500"), // legacy: milliseconds
            ("redeliverInterval", "2s"),
            ("queueDepth", "7"),
            ("concurrency", "3"),
            ("maxLenApprox", "1000"),
            ("readTimeout", "250"), // client durations: milliseconds
            ("writeTimeout", "1s"),
            ("redisDB", "2"),
            ("redisPassword", "hunter2"),
            ("redisMaxRetries", "-1"),
            ("poolSize", "20"),
            ("idleTimeout", "-1"),
            ("ttlInSeconds", "5"),
            // the sidecar's keys, in the same map
            ("publishingScopes", "a=t1"),
            ("subscriptionScopes", "a=t1"),
            ("allowedTopics", "t1"),
            ("protectedTopics", "t1"),
            ("verifyPublishers", "true"),
            ("maxDeliveryAttempts", "3"),
        ]);
        let o = RedisPubSubOptions::from_metadata(&m, "app").unwrap();
        assert_eq!((o.host.as_str(), o.port, o.db), ("redis", 6380, 2));
        assert_eq!(o.consumer_id, "group-a");
        assert_eq!(o.processing_timeout, Duration::from_millis(1500));
        assert_eq!(o.redeliver_interval, Duration::from_secs(2));
        assert_eq!((o.queue_depth, o.concurrency, o.max_len_approx), (7, 3, Some(1000)));
        assert_eq!((o.read_timeout, o.write_timeout), (Duration::from_millis(250), Duration::from_secs(1)));
        assert_eq!(o.max_retries, 0);
        assert!(!format!("{o:?}").contains("hunter2"));
        let o = RedisPubSubOptions::from_metadata(&md(&[("redisHost", "h"), ("streamTTL", "1h")]), "a").unwrap();
        assert_eq!(o.stream_ttl, Some(Duration::from_secs(3600)));
        let o = RedisPubSubOptions::from_metadata(&md(&[("redisHost", "h"), ("processingTimeout", "0")]), "a").unwrap();
        assert_eq!(o.processing_timeout, Duration::ZERO);
    }

    #[test]
    fn hosts() {
        type Case<'a> = (&'a str, Option<u16>, Option<(&'a str, u16)>);
        let cases: &[Case] = &[
            ("localhost:6379", None, Some(("localhost", 6379))),
            ("localhost", None, Some(("localhost", 6379))),
            ("localhost", Some(7000), Some(("localhost", 7000))),
            ("localhost:7000", Some(7000), Some(("localhost", 7000))),
            ("localhost:7000", Some(7001), None),
            ("[::1]:7000", None, Some(("::1", 7000))),
            ("[::1]", None, Some(("::1", 6379))),
            ("::1", None, Some(("::1", 6379))),
            ("h:99999", None, None),
            (":6379", None, None),
            ("a:1,b:2", None, None),
        ];
        for (raw, port, want) in cases {
            let got = parse_host(raw, *port).ok();
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), *want, "{raw:?} {port:?}");
        }
    }

    #[test]
    fn refusals_name_the_key_never_the_value() {
        let base = [("redisHost", "127.0.0.1:6379"), ("redisPassword", "hunter2")];
        let refused: &[(&str, &str)] = &[
            ("enableTLS", "true"),
            ("enableTLS", "hunter2"),
            ("failover", "true"),
            ("useEntraID", "true"),
            ("useOIDC", "true"),
            ("redisType", "cluster"),
            ("redisDB", "hunter2"),
            ("concurrency", "0"),
            ("concurrency", "hunter2"),
            ("queueDepth", "-1"),
            ("processingTimeout", "hunter2"),
            ("redeliverInterval", "-5s"),
            ("maxLenApprox", "-1"),
            ("streamTTL", "hunter2"),
            ("readTimeout", "-1"),
            ("dialTimeout", "hunter2"),
            ("redisPort", "hunter2"),
            ("redisMaxRetries", "hunter2"),
            ("poolSize", "hunter2"),
            ("idleTimeout", "hunter2"),
            ("consumerID", "{uuid}"),
        ];
        for (k, v) in refused {
            let mut m = md(&base);
            m.insert(*k, *v);
            let e = RedisPubSubOptions::from_metadata(&m, "app").unwrap_err();
            assert_eq!(e.field.as_deref(), Some(*k), "{k}={v}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let mut m = md(&base);
        m.insert("maxLenApprox", "10");
        m.insert("streamTTL", "1h");
        assert_eq!(RedisPubSubOptions::from_metadata(&m, "app").unwrap_err().field.as_deref(), Some("streamTTL"));
        let e = RedisPubSubOptions::from_metadata(&md(&[("redisHost", "hunter2:x")]), "app").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(RedisPubSubOptions::from_metadata(&md(&[]), "app").is_err());
        assert_eq!(
            RedisPubSubOptions::from_metadata(&md(&[("redisHost", "h")]), "").unwrap_err().field.as_deref(),
            Some("consumerID")
        );
    }

    #[test]
    fn replies_parse() {
        let bs = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, body: Value| Value::Array(vec![bs(id), body]);
        let reply = Value::Array(vec![Value::Array(vec![
            bs("t"),
            Value::Array(vec![
                entry("1-0", Value::Array(vec![bs("data"), bs("x"), bs("metadata"), bs("{\"k\":\"v\"}")])),
                entry("2-0", Value::Nil),
            ]),
        ])]);
        let entries = parse_read_reply(reply, "t").unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1], Entry { id: "2-0".into(), fields: None });
        let m = to_message("t", "1-0", entries[0].fields.clone().unwrap());
        assert_eq!(&m.data[..], b"x");
        assert_eq!(m.metadata.get("k").map(String::as_str), Some("v"));
        assert_eq!(parse_read_reply(Value::Nil, "t"), Some(vec![]));
        assert_eq!(parse_read_reply(Value::Okay, "t"), None);
        let m = to_message("t", "1-0", vec![(b"metadata".to_vec(), b"not json".to_vec())]);
        assert!(m.data.is_empty() && m.metadata.is_empty());
        let pending = Value::Array(vec![Value::Array(vec![bs("1-0"), bs("c"), Value::Int(1200), Value::Int(1)])]);
        assert_eq!(parse_pending(pending), Some(vec![("1-0".into(), 1200)]));
    }
}
