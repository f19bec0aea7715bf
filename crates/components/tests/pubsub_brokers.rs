//! `pubsub.redis` and `pubsub.jetstream` against real servers: delivery of the exact bytes, acknowledge on `Ok`
//! and redeliver on `Err`, consumer groups, redelivery after a broker is dropped mid-delivery (a simulated sidecar
//! crash), Dapr's wire format both ways, and refusals at build time.
//!
//! Run: `cargo test -p ward-components --test pubsub_brokers` (starts its own `redis-server` and
//! `nats-server -js` on 127.0.0.1; neither is optional).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{NatsServer, RedisServer, bounded, eventually};
use futures_util::FutureExt;
use tokio::sync::mpsc;
use ward_components::pubsub::{
    Handler, Message, NotHandled, PubSub, PubSubError, PublishRequest, SubscribeRequest, Subscription, build_pubsub,
};
use ward_components::{BuildContext, ComponentError, ComponentMetadata};

const LIMIT: Duration = Duration::from_secs(20);

fn ctx(app_id: &str) -> BuildContext {
    BuildContext {
        data_dir: std::env::temp_dir(),
        base_dir: std::env::temp_dir(),
        working_dir: std::env::temp_dir(),
        app_id: app_id.into(),
        namespace: String::new(),
    }
}

fn metadata(pairs: &[(&str, &str)]) -> ComponentMetadata {
    pairs.iter().copied().collect()
}

async fn broker(ty: &str, md: &ComponentMetadata, app_id: &str) -> Arc<dyn PubSub> {
    match build_pubsub(ty, "v1", "pubsub", md, &ctx(app_id)).await {
        Ok(b) => b,
        Err(e) => panic!("building {ty}: {e}"),
    }
}

async fn build_err(ty: &str, md: &ComponentMetadata) -> ComponentError {
    match build_pubsub(ty, "v1", "pubsub", md, &ctx("app")).await {
        Ok(_) => panic!("{ty} built with bad metadata"),
        Err(e) => e,
    }
}

fn publish(topic: &str, data: &[u8]) -> PublishRequest {
    PublishRequest { topic: topic.into(), data: Bytes::copy_from_slice(data), metadata: BTreeMap::new() }
}

/// A handler that reports every message on a channel and then answers as `answer` says.
fn recording(
    tag: u8,
    answer: impl Fn(&Message) -> Result<(), NotHandled> + Send + Sync + 'static,
) -> (Handler, mpsc::UnboundedReceiver<(u8, Message)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let answer = Arc::new(answer);
    let handler: Handler = Arc::new(move |m: Message| {
        let tx = tx.clone();
        let answer = answer.clone();
        async move {
            let result = answer(&m);
            let _ = tx.send((tag, m));
            result
        }
        .boxed()
    });
    (handler, rx)
}

/// A handler that reports the message and then never returns (a sidecar that dies mid-delivery).
fn hanging() -> (Handler, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |m: Message| {
        let _ = tx.send(m);
        futures_util::future::pending().boxed()
    });
    (handler, rx)
}

async fn subscribe(broker: &Arc<dyn PubSub>, topic: &str, handler: Handler) -> Subscription {
    let request = SubscribeRequest { topic: topic.into(), metadata: BTreeMap::new() };
    match broker.subscribe(request, handler).await {
        Ok(s) => s,
        Err(e) => panic!("subscribe {topic}: {e:?}"),
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, within: Duration, what: &str) -> T {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("{what}: channel closed"),
        Err(_) => panic!("{what}: nothing within {within:?}"),
    }
}

async fn nothing_more<T: std::fmt::Debug>(rx: &mut mpsc::UnboundedReceiver<T>, during: Duration, what: &str) {
    if let Ok(Some(v)) = tokio::time::timeout(during, rx.recv()).await {
        panic!("{what}: unexpected delivery {v:?}");
    }
}

/// Non-UTF-8 bytes, so nothing along the way may treat the payload as text.
const PAYLOAD: &[u8] = b"{\"id\":\"e1\"}\x00\xff\xfe binary";

// ---------------------------------------------------------------------------------------------------------------
// Redis Streams

fn redis_md(server: &RedisServer, extra: &[(&str, &str)]) -> ComponentMetadata {
    let mut m = metadata(&[("redisHost", &server.addr())]);
    for (k, v) in extra {
        m.insert(*k, *v);
    }
    m
}

async fn redis_conn(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{}/", server.addr())).expect("redis client");
    client.get_multiplexed_async_connection().await.expect("redis connection")
}

type XEntries = Vec<(String, BTreeMap<String, Vec<u8>>)>;

#[tokio::test]
async fn redis_publish_delivers_exact_bytes_in_daprs_wire_format() {
    bounded(LIMIT, async {
        let server = RedisServer::start().await;
        let b = broker("pubsub.redis", &redis_md(&server, &[]), "checkout").await;
        let (handler, mut rx) = recording(0, |_| Ok(()));
        let _sub = subscribe(&b, "orders", handler).await;
        let mut request = publish("orders", PAYLOAD);
        request.metadata.insert("ttlInSeconds".into(), "30".into());
        b.publish(request).await.unwrap();
        let (_, m) = next(&mut rx, Duration::from_secs(5), "delivery").await;
        assert_eq!((m.topic.as_str(), &m.data[..]), ("orders", PAYLOAD));
        assert_eq!(m.metadata.get("ttlInSeconds").map(String::as_str), Some("30"));

        // Dapr's layout: the stream key is the topic, field `data` holds the bytes, field `metadata` the request
        // metadata as JSON; the group is the app id (consumerID's default).
        let mut conn = redis_conn(&server).await;
        let entries: XEntries =
            redis::cmd("XRANGE").arg("orders").arg("-").arg("+").query_async(&mut conn).await.unwrap();
        assert_eq!(entries.len(), 1);
        let fields = &entries[0].1;
        assert_eq!(fields.get("data").map(Vec::as_slice), Some(PAYLOAD));
        let md: BTreeMap<String, String> = serde_json::from_slice(fields.get("metadata").unwrap()).unwrap();
        assert_eq!(md.get("ttlInSeconds").map(String::as_str), Some("30"));
        let groups: Vec<BTreeMap<String, redis::Value>> =
            redis::cmd("XINFO").arg("GROUPS").arg("orders").query_async(&mut conn).await.unwrap();
        let names: Vec<String> = groups.iter().map(|g| redis::from_redis_value(g["name"].clone()).unwrap()).collect();
        assert_eq!(names, ["checkout"]);
        // Acknowledged: nothing pending.
        eventually(Duration::from_secs(3), "XACK", || async {
            let mut conn = redis_conn(&server).await;
            let p: (u64, redis::Value, redis::Value, redis::Value) =
                redis::cmd("XPENDING").arg("orders").arg("checkout").query_async(&mut conn).await.ok()?;
            (p.0 == 0).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn redis_entry_written_by_another_client_is_delivered() {
    bounded(LIMIT, async {
        let server = RedisServer::start().await;
        let b = broker("pubsub.redis", &redis_md(&server, &[("consumerID", "g")]), "app").await;
        let (handler, mut rx) = recording(0, |_| Ok(()));
        let _sub = subscribe(&b, "orders", handler).await;
        // What a daprd publisher (or anyone with the broker's credentials) writes.
        let mut conn = redis_conn(&server).await;
        let _: String =
            redis::cmd("XADD").arg("orders").arg("*").arg("data").arg(PAYLOAD).query_async(&mut conn).await.unwrap();
        let (_, m) = next(&mut rx, Duration::from_secs(5), "delivery").await;
        assert_eq!(&m.data[..], PAYLOAD);
        assert!(m.metadata.is_empty());
    })
    .await;
}

#[tokio::test]
async fn redis_err_is_delivered_again_and_ok_never_again() {
    bounded(LIMIT, async {
        let server = RedisServer::start().await;
        let md = redis_md(&server, &[("processingTimeout", "300ms"), ("redeliverInterval", "100ms")]);
        let b = broker("pubsub.redis", &md, "app").await;
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let (handler, mut rx) = recording(0, move |_| {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Err(NotHandled("app asked for a retry".into()))
            } else {
                Ok(())
            }
        });
        let _sub = subscribe(&b, "orders", handler).await;
        b.publish(publish("orders", PAYLOAD)).await.unwrap();
        let started = Instant::now();
        let (_, first) = next(&mut rx, Duration::from_secs(5), "first delivery").await;
        let (_, second) = next(&mut rx, Duration::from_secs(5), "redelivery").await;
        assert_eq!(first, second);
        assert!(started.elapsed() >= Duration::from_millis(250), "redelivered only after processingTimeout");
        nothing_more(&mut rx, Duration::from_millis(1200), "acknowledged message").await;
    })
    .await;
}

#[tokio::test]
async fn redis_one_group_shares_messages_and_each_group_gets_all() {
    bounded(LIMIT, async {
        let server = RedisServer::start().await;
        // Two replicas of app "a" (one consumer group) and one of app "b".
        let (tx, mut rx) = mpsc::unbounded_channel::<(u8, Message)>();
        let mut subs = Vec::new();
        let mut brokers = Vec::new();
        for (tag, app) in [(1u8, "a"), (2, "a"), (3, "b")] {
            let b = broker("pubsub.redis", &redis_md(&server, &[]), app).await;
            let tx = tx.clone();
            let handler: Handler = Arc::new(move |m: Message| {
                let _ = tx.send((tag, m));
                async { Ok(()) }.boxed()
            });
            subs.push(subscribe(&b, "orders", handler).await);
            brokers.push(b);
        }
        for i in 0..20 {
            brokers[0].publish(publish("orders", format!("m{i}").as_bytes())).await.unwrap();
        }
        let mut group_a = Vec::new();
        let mut group_b = Vec::new();
        while group_a.len() < 20 || group_b.len() < 20 {
            let (tag, m) = next(&mut rx, Duration::from_secs(5), "deliveries").await;
            let text = String::from_utf8(m.data.to_vec()).unwrap();
            if tag == 3 { group_b.push(text) } else { group_a.push(text) }
        }
        nothing_more(&mut rx, Duration::from_millis(300), "no duplicates").await;
        group_a.sort();
        group_b.sort();
        assert_eq!(group_a, group_b, "each group got every message once");
        let mut expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        expected.sort();
        assert_eq!(group_a, expected);
    })
    .await;
}

#[tokio::test]
async fn redis_message_cut_off_mid_delivery_comes_again_promptly_after_restart() {
    bounded(LIMIT, async {
        let server = RedisServer::start().await;
        // Default processingTimeout (60 s): the redelivery below must not wait for it.
        let md = redis_md(&server, &[]);
        let first = broker("pubsub.redis", &md, "app").await;
        let (handler, mut rx) = hanging();
        let sub = subscribe(&first, "orders", handler).await;
        first.publish(publish("orders", PAYLOAD)).await.unwrap();
        next(&mut rx, Duration::from_secs(5), "first delivery").await;
        // The sidecar dies: its subscription and broker are gone, the handler never finished.
        drop(sub);
        drop(first);

        let second = broker("pubsub.redis", &md, "app").await;
        let (handler, mut rx) = recording(0, |_| Ok(()));
        let restarted = Instant::now();
        let _sub = subscribe(&second, "orders", handler).await;
        let (_, m) = next(&mut rx, Duration::from_secs(2), "redelivery after restart").await;
        assert_eq!(&m.data[..], PAYLOAD);
        assert!(restarted.elapsed() < Duration::from_secs(2));
        nothing_more(&mut rx, Duration::from_millis(500), "acknowledged after restart").await;
    })
    .await;
}

#[tokio::test]
async fn redis_refuses_bad_metadata_naming_the_key_never_the_value() {
    bounded(LIMIT, async {
        let server = RedisServer::start().await;
        for (key, value) in [("concurrency", "hunter2"), ("enableTLS", "true"), ("processingTimeout", "hunter2")] {
            let e = build_err("pubsub.redis", &redis_md(&server, &[(key, value), ("redisPassword", "hunter2")])).await;
            assert_eq!(e.path().as_deref(), Some(format!("spec.metadata[{key}]").as_str()));
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        // Nobody listens there: a clear error naming redisHost.
        let port = common::free_port();
        let e = build_err("pubsub.redis", &metadata(&[("redisHost", &format!("127.0.0.1:{port}"))])).await;
        assert_eq!(e.field.as_deref(), Some("redisHost"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------------
// NATS JetStream

async fn nats_client(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url()).await.expect("nats connect")
}

/// Creates the stream the operator would (ward never does).
async fn create_stream(server: &NatsServer, name: &str, subjects: &[&str]) -> async_nats::jetstream::Context {
    let js = async_nats::jetstream::new(nats_client(server).await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .expect("create stream");
    js
}

fn js_md(server: &NatsServer, extra: &[(&str, &str)]) -> ComponentMetadata {
    let mut m = metadata(&[("natsURL", &server.url())]);
    for (k, v) in extra {
        m.insert(*k, *v);
    }
    m
}

#[tokio::test]
async fn jetstream_publish_delivers_exact_bytes_with_the_event_id_as_msg_id() {
    bounded(LIMIT, async {
        let server = NatsServer::start().await;
        let js = create_stream(&server, "ORDERS", &["orders"]).await;
        let b = broker("pubsub.jetstream", &js_md(&server, &[]), "app").await;
        let (handler, mut rx) = recording(0, |_| Ok(()));
        let _sub = subscribe(&b, "orders", handler).await;
        let event = br#"{"id":"evt-1","specversion":"1.0","data":"x"}"#;
        b.publish(publish("orders", event)).await.unwrap();
        b.publish(publish("orders", PAYLOAD)).await.unwrap();
        let (_, m) = next(&mut rx, Duration::from_secs(5), "delivery").await;
        assert_eq!((m.topic.as_str(), &m.data[..]), ("orders", &event[..]));
        assert_eq!(m.metadata.get("Topic").map(String::as_str), Some("orders"));
        let (_, m) = next(&mut rx, Duration::from_secs(5), "delivery").await;
        assert_eq!(&m.data[..], PAYLOAD);
        // As Dapr: the CloudEvent id is the Nats-Msg-Id, so a second publish of the same event is de-duplicated.
        b.publish(publish("orders", event)).await.unwrap();
        nothing_more(&mut rx, Duration::from_millis(500), "duplicate event id").await;
        let stream = js.get_stream("ORDERS").await.unwrap();
        let stored = stream.get_raw_message(1).await.unwrap();
        let id = stored.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned());
        assert_eq!(id.as_deref(), Some("evt-1"));
    })
    .await;
}

#[tokio::test]
async fn jetstream_message_from_a_plain_client_is_delivered() {
    bounded(LIMIT, async {
        let server = NatsServer::start().await;
        create_stream(&server, "ORDERS", &["orders"]).await;
        let b = broker("pubsub.jetstream", &js_md(&server, &[("durableName", "app")]), "app").await;
        let (handler, mut rx) = recording(0, |_| Ok(()));
        let _sub = subscribe(&b, "orders", handler).await;
        let client = nats_client(&server).await;
        client.publish("orders", Bytes::from_static(PAYLOAD)).await.unwrap();
        client.flush().await.unwrap();
        let (_, m) = next(&mut rx, Duration::from_secs(5), "delivery").await;
        assert_eq!(&m.data[..], PAYLOAD);
    })
    .await;
}

#[tokio::test]
async fn jetstream_err_is_delivered_again_and_ok_never_again() {
    bounded(LIMIT, async {
        let server = NatsServer::start().await;
        create_stream(&server, "ORDERS", &["orders"]).await;
        let md = js_md(&server, &[("durableName", "app"), ("ackWait", "500ms")]);
        let b = broker("pubsub.jetstream", &md, "app").await;
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let (handler, mut rx) = recording(0, move |_| {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Err(NotHandled("app asked for a retry".into()))
            } else {
                Ok(())
            }
        });
        let _sub = subscribe(&b, "orders", handler).await;
        b.publish(publish("orders", PAYLOAD)).await.unwrap();
        let (_, first) = next(&mut rx, Duration::from_secs(5), "first delivery").await;
        let (_, second) = next(&mut rx, Duration::from_secs(5), "redelivery after nak").await;
        assert_eq!(first, second);
        nothing_more(&mut rx, Duration::from_millis(1500), "acknowledged message").await;
    })
    .await;
}

#[tokio::test]
async fn jetstream_queue_group_shares_messages_and_each_durable_gets_all() {
    bounded(LIMIT, async {
        let server = NatsServer::start().await;
        create_stream(&server, "ORDERS", &["orders"]).await;
        let (tx, mut rx) = mpsc::unbounded_channel::<(u8, Message)>();
        let mut subs = Vec::new();
        let mut brokers = Vec::new();
        let group_a = [("durableName", "a"), ("queueGroupName", "a")];
        let group_b = [("durableName", "b"), ("queueGroupName", "b")];
        for (tag, extra) in [(1u8, &group_a), (2, &group_a), (3, &group_b)] {
            let b = broker("pubsub.jetstream", &js_md(&server, extra), "app").await;
            let tx = tx.clone();
            let handler: Handler = Arc::new(move |m: Message| {
                let _ = tx.send((tag, m));
                async { Ok(()) }.boxed()
            });
            subs.push(subscribe(&b, "orders", handler).await);
            brokers.push(b);
        }
        for i in 0..20 {
            brokers[0].publish(publish("orders", format!("m{i}").as_bytes())).await.unwrap();
        }
        let mut in_a = Vec::new();
        let mut in_b = Vec::new();
        let mut per_member = [0usize; 2];
        while in_a.len() < 20 || in_b.len() < 20 {
            let (tag, m) = next(&mut rx, Duration::from_secs(5), "deliveries").await;
            let text = String::from_utf8(m.data.to_vec()).unwrap();
            match tag {
                3 => in_b.push(text),
                t => {
                    per_member[usize::from(t - 1)] += 1;
                    in_a.push(text);
                }
            }
        }
        nothing_more(&mut rx, Duration::from_millis(300), "no duplicates").await;
        in_a.sort();
        in_b.sort();
        assert_eq!(in_a, in_b, "each group got every message once");
        assert_eq!(in_a.len(), 20);
        assert_eq!(per_member.iter().sum::<usize>(), 20, "the two members split group a's messages");
    })
    .await;
}

#[tokio::test]
async fn jetstream_message_cut_off_mid_delivery_comes_again_after_ack_wait() {
    bounded(LIMIT, async {
        let server = NatsServer::start().await;
        create_stream(&server, "ORDERS", &["orders"]).await;
        let md = js_md(&server, &[("durableName", "app"), ("ackWait", "1s")]);
        let first = broker("pubsub.jetstream", &md, "app").await;
        let (handler, mut rx) = hanging();
        let sub = subscribe(&first, "orders", handler).await;
        first.publish(publish("orders", PAYLOAD)).await.unwrap();
        next(&mut rx, Duration::from_secs(5), "first delivery").await;
        drop(sub);
        drop(first);

        let second = broker("pubsub.jetstream", &md, "app").await;
        let (handler, mut rx) = recording(0, |_| Ok(()));
        // The server notices the old subscriber is gone within moments (a killed process's connection closes).
        let request = SubscribeRequest { topic: "orders".into(), metadata: BTreeMap::new() };
        let _sub = eventually(Duration::from_secs(3), "resubscribe", || {
            let second = second.clone();
            let handler = handler.clone();
            let request = request.clone();
            async move { second.subscribe(request, handler).await.ok() }
        })
        .await;
        let (_, m) = next(&mut rx, Duration::from_secs(4), "redelivery after ackWait").await;
        assert_eq!(&m.data[..], PAYLOAD);
        nothing_more(&mut rx, Duration::from_millis(1500), "acknowledged after restart").await;
    })
    .await;
}

#[tokio::test]
async fn jetstream_durable_without_queue_group_is_not_bound_twice() {
    bounded(LIMIT, async {
        let server = NatsServer::start().await;
        create_stream(&server, "ORDERS", &["orders"]).await;
        let b = broker("pubsub.jetstream", &js_md(&server, &[("durableName", "solo")]), "app").await;
        let (handler, _rx) = recording(0, |_| Ok(()));
        let _sub = subscribe(&b, "orders", handler.clone()).await;
        let request = SubscribeRequest { topic: "orders".into(), metadata: BTreeMap::new() };
        match b.subscribe(request, handler).await {
            Err(PubSubError::Subscribe { source, .. }) => {
                assert!(source.to_string().contains("already has an active subscriber"), "{source}");
            }
            other => panic!("second binding of a durable consumer: {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn jetstream_without_the_stream_is_a_clear_error() {
    bounded(LIMIT, async {
        let server = NatsServer::start().await;
        create_stream(&server, "ORDERS", &["orders"]).await;
        let b = broker("pubsub.jetstream", &js_md(&server, &[]), "app").await;
        let (handler, _rx) = recording(0, |_| Ok(()));
        let request = SubscribeRequest { topic: "payments".into(), metadata: BTreeMap::new() };
        match b.subscribe(request, handler.clone()).await {
            Err(PubSubError::Subscribe { topic, source }) => {
                assert_eq!(topic, "payments");
                let text = source.to_string();
                assert!(text.contains("no JetStream stream captures subject \"payments\""), "{text}");
                assert!(text.contains("ward does not create streams"), "{text}");
            }
            other => panic!("subscribe without a stream: {other:?}"),
        }
        match b.publish(publish("payments", PAYLOAD)).await {
            Err(PubSubError::Publish { topic, source }) => {
                assert_eq!(topic, "payments");
                assert!(source.to_string().contains("no JetStream stream captures subject"), "{source}");
            }
            other => panic!("publish without a stream: {other:?}"),
        }
        // A named stream that does not exist.
        let b = broker("pubsub.jetstream", &js_md(&server, &[("streamName", "NOPE")]), "app").await;
        let request = SubscribeRequest { topic: "orders".into(), metadata: BTreeMap::new() };
        match b.subscribe(request, handler).await {
            Err(PubSubError::Subscribe { source, .. }) => {
                assert!(source.to_string().contains("streamName \"NOPE\" does not exist"), "{source}");
            }
            other => panic!("subscribe with a missing streamName: {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn jetstream_refuses_bad_metadata_naming_the_key_never_the_value() {
    bounded(LIMIT, async {
        let server = NatsServer::start().await;
        for (key, value) in [("ackPolicy", "hunter2"), ("deliverPolicy", "hunter2"), ("ackWait", "hunter2")] {
            let e = build_err("pubsub.jetstream", &js_md(&server, &[(key, value), ("token", "hunter2")])).await;
            assert_eq!(e.path().as_deref(), Some(format!("spec.metadata[{key}]").as_str()));
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let port = common::free_port();
        let e = build_err("pubsub.jetstream", &metadata(&[("natsURL", &format!("nats://127.0.0.1:{port}"))])).await;
        assert_eq!(e.field.as_deref(), Some("natsURL"));
    })
    .await;
}
