//! `state.redis` beyond the shared suite: recovery when the server goes away and comes back on the same port,
//! Dapr's data layout, and refusals at build time.
//!
//! Run: `cargo test -p ward-components --test redis_store` (starts its own `redis-server` on 127.0.0.1).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RedisServer, bounded, eventually};
use ward_components::state::{SetRequest, StateError, build_state_store};
use ward_components::{BuildContext, ComponentMetadata};

fn ctx() -> BuildContext {
    BuildContext {
        data_dir: std::env::temp_dir(),
        base_dir: std::env::temp_dir(),
        working_dir: std::env::temp_dir(),
        app_id: "app1".into(),
        namespace: String::new(),
    }
}

fn md(server: &RedisServer, extra: &[(&str, &str)]) -> ComponentMetadata {
    let mut m: ComponentMetadata = [("redisHost", server.addr())].into_iter().collect();
    for (k, v) in extra {
        m.insert(*k, *v);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_redis_comes_back() {
    bounded(Duration::from_secs(90), async {
        let mut server = RedisServer::start().await;
        let store = build_state_store(
            "state.redis",
            "v1",
            "s",
            &md(&server, &[("dialTimeout", "1s"), ("readTimeout", "1s")]),
            &ctx(),
        )
        .await
        .expect("build");
        store.set(SetRequest::new("k", "before")).await.unwrap();

        server.stop();
        let err = store.get("k").await.expect_err("redis is down");
        assert!(matches!(err, StateError::Backend { .. }), "{err:?}");
        let err = store.set(SetRequest::new("k", "x")).await.expect_err("redis is down");
        assert!(matches!(err, StateError::Backend { .. }), "{err:?}");
        assert!(store.ping().await.is_err());

        server.restart().await;
        // The same store object works again once the connection manager has reconnected.
        eventually(Duration::from_secs(30), "store usable again", || {
            let store = store.clone();
            async move { store.ping().await.ok() }
        })
        .await;
        // The server kept nothing (no persistence): the old value is gone, new writes work.
        assert_eq!(store.get("k").await.unwrap(), None);
        store.set(SetRequest::new("k", "after")).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().map(|i| i.value), Some(Bytes::from_static(b"after")));
    })
    .await;
}

#[tokio::test]
async fn stores_like_dapr() {
    bounded(Duration::from_secs(30), async {
        let server = RedisServer::start().await;
        let store = build_state_store("state.redis", "v1", "s", &md(&server, &[]), &ctx()).await.unwrap();
        store.set(SetRequest::new("app1||k", "hello")).await.unwrap();
        store.set(SetRequest::new("app1||k", "hello2")).await.unwrap();
        let item = store.get("app1||k").await.unwrap().unwrap();
        assert_eq!(item.etag, "2", "the etag is the hash's version");
        // Read the raw hash with a plain client.
        let client = redis::Client::open(format!("redis://{}/", server.addr())).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let (data, version): (String, String) =
            redis::cmd("HMGET").arg("app1||k").arg("data").arg("version").query_async(&mut conn).await.unwrap();
        assert_eq!((data.as_str(), version.as_str()), ("hello2", "2"));
        // TTLs are Redis expiries.
        store.set(SetRequest::new("t", "v").with_ttl(Duration::from_secs(100))).await.unwrap();
        let ttl: i64 = redis::cmd("TTL").arg("t").query_async(&mut conn).await.unwrap();
        assert!((95..=100).contains(&ttl), "ttl {ttl}");
        // A key that is not a state hash is a backend error, and nothing is written.
        let _: () = redis::cmd("SET").arg("plain").arg("x").query_async(&mut conn).await.unwrap();
        let err = store.set(SetRequest::new("plain", "y")).await.unwrap_err();
        assert!(matches!(err, StateError::Backend { .. }));
        let raw: String = redis::cmd("GET").arg("plain").query_async(&mut conn).await.unwrap();
        assert_eq!(raw, "x");
        // The default TTL from metadata applies to sets without one.
        let store =
            build_state_store("state.redis", "v1", "s", &md(&server, &[("ttlInSeconds", "50")]), &ctx()).await.unwrap();
        store.set(SetRequest::new("d", "v")).await.unwrap();
        let ttl: i64 = redis::cmd("TTL").arg("d").query_async(&mut conn).await.unwrap();
        assert!((45..=50).contains(&ttl), "ttl {ttl}");
    })
    .await;
}

#[tokio::test]
async fn build_refusals() {
    bounded(Duration::from_secs(30), async {
        let server = RedisServer::start().await;
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("tls without tls support", &[("enableTLS", "true")], "enableTLS"),
            ("cluster", &[("redisType", "cluster")], "redisType"),
            ("wrong password", &[("redisPassword", "s3cret-value")], "redisHost"),
        ];
        for (name, extra, field) in cases {
            let e = build_state_store("state.redis", "v1", "s", &md(&server, extra), &ctx())
                .await
                .err()
                .unwrap_or_else(|| panic!("{name}: expected an error"));
            assert_eq!(e.field.as_deref(), Some(*field), "{name}");
            assert!(!e.to_string().contains("s3cret-value"), "{name}: {e}");
        }
        // Nobody listening: a connect error, bounded by the dial timeout.
        let port = common::free_port();
        let md: ComponentMetadata =
            [("redisHost", format!("127.0.0.1:{port}")), ("dialTimeout", "1s".to_owned())].into_iter().collect();
        let e = build_state_store("state.redis", "v1", "s", &md, &ctx()).await.err().unwrap();
        assert_eq!(e.field.as_deref(), Some("redisHost"));
    })
    .await;
}
