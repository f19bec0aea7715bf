//! Connecting to Redis, shared by `state.redis` and `pubsub.redis`: the client for an address and credentials, and a
//! reconnecting connection whose first connect is bounded in time. Each component keeps its own metadata parsing
//! and retry policy (a state request should fail fast; a subscription may wait). No value of a credential appears
//! in an error.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::metadata::ComponentError;

/// Where and as whom to connect.
pub(crate) struct Endpoint<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) username: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    pub(crate) db: i64,
}

/// The first connect did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("Redis did not answer within {after:?}")]
pub(crate) struct ConnectTimedOut {
    pub(crate) after: Duration,
}

/// A client for `endpoint` (nothing is connected yet).
pub(crate) fn client(endpoint: &Endpoint<'_>) -> Result<redis::Client, ComponentError> {
    let mut settings = RedisConnectionInfo::default().set_db(endpoint.db);
    if let Some(username) = endpoint.username {
        settings = settings.set_username(username);
    }
    if let Some(password) = endpoint.password {
        settings = settings.set_password(password);
    }
    let info = ConnectionAddr::Tcp(endpoint.host.to_owned(), endpoint.port)
        .into_connection_info()
        .map_err(|e| ComponentError::new("redisHost", "invalid address").with_source(e))?
        .set_redis_settings(settings);
    redis::Client::open(info).map_err(|e| ComponentError::new("redisHost", "invalid address").with_source(e))
}

/// A reconnecting multiplexed connection with `config`; the first connect must finish within `bound`.
pub(crate) async fn manager(
    client: &redis::Client,
    config: ConnectionManagerConfig,
    bound: Duration,
) -> Result<ConnectionManager, ComponentError> {
    tokio::time::timeout(bound, ConnectionManager::new_with_config(client.clone(), config))
        .await
        .map_err(|_| {
            ComponentError::new("redisHost", "cannot connect to Redis").with_source(ConnectTimedOut { after: bound })
        })?
        .map_err(|e| ComponentError::new("redisHost", "cannot connect to Redis").with_source(e))
}
