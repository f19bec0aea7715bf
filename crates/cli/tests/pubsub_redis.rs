//! Pub/sub across sidecars on a real broker (issue 14): two sidecars share a `redis-server` through `pubsub.redis`
//! (Dapr's wire format). A verified publisher is delivered; an event written straight into the Redis stream with a
//! forged `source`, or a signed event whose data was changed, never reaches the app and goes unchanged to the
//! dead-letter topic; a subscriber sidecar killed mid-delivery gets the message again after its restart.
//! Needs `redis-server` and `redis-cli` on PATH; every process is killed on drop and every wait is bounded.

mod support;

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::mesh::{Http, Mesh, SidecarProcess};
use support::pubsub_app::{SubscriberApp, audit_events, subscriber_sidecar, wait_all_delivered, wait_healthy};
use support::{eventually, free_port};

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        Self::start_with(free_port(), &["--save", "", "--appendonly", "no"])
    }

    /// Every write on disk before it is acknowledged (AOF, `appendfsync always`), in `dir`.
    fn start_durable(port: u16, dir: &Path) -> Redis {
        let dir = dir.to_str().unwrap();
        Self::start_with(port, &["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", dir])
    }

    fn start_with(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        let redis = Redis { child, port };
        eventually(Duration::from_secs(10), "redis-server to listen", || TcpStream::connect(("127.0.0.1", port)).ok());
        redis
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `redis-cli` with these arguments; its output.
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli on PATH");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The `data` fields of a stream's entries, in order.
    fn stream_data(&self, stream: &str) -> Vec<String> {
        let raw = self.cli(&["XRANGE", stream, "-", "+"]);
        let lines: Vec<&str> = raw.lines().collect();
        lines.windows(2).filter(|w| w[0] == "data").map(|w| w[1].to_owned()).collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const APP_TOKEN: &str = "orders-app-token";

fn resources(mesh: &Mesh, redis: &Redis) -> PathBuf {
    let dir = mesh.dir.path().join("resources");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bus.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: bus\nspec:\n  type: pubsub.redis\n  \
             version: v1\n  metadata:\n  - name: redisHost\n    value: \"127.0.0.1:{}\"\n  - name: \
             maxDeliveryAttempts\n    value: \"10\"\n",
            redis.port
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("subscription.yaml"),
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: orders\nspec:\n  pubsubname: bus\n  \
         topic: orders\n  routes:\n    default: /orders\n  deadLetterTopic: poison\nscopes: [orders]\n---\n\
         apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: payouts\nspec:\n  pubsubname: bus\n  \
         topic: payouts\n  routes:\n    default: /payouts\n  metadata:\n    allowedPublishers: billing\nscopes: \
         [orders]\n",
    )
    .unwrap();
    dir
}

fn sidecar(mesh: &Mesh, app_id: &str, app: &SubscriberApp, dir: &Path) -> SidecarProcess {
    subscriber_sidecar(mesh, app_id, app, dir, APP_TOKEN)
}

#[test]
fn forged_and_tampered_events_on_a_shared_broker_never_reach_the_app() {
    let redis = Redis::start();
    let mesh = Mesh::start(&[]);
    let dir = resources(&mesh, &redis);
    let subscriber = SubscriberApp::start(json!([]), HashMap::new());
    let publisher_app = SubscriberApp::start(json!([]), HashMap::new());
    let orders = sidecar(&mesh, "orders", &subscriber, &dir);
    let checkout = sidecar(&mesh, "checkout", &publisher_app, &dir);
    let http = Http::new();
    wait_healthy(&http, &orders);
    wait_healthy(&http, &checkout);

    // A real publisher on another sidecar: delivered, verified.
    let reply = http.send(
        "POST",
        &checkout.http,
        "/v1.0/publish/bus/orders",
        &[("content-type", "application/json")],
        br#"{"id": 1}"#.to_vec(),
    );
    assert_eq!(reply.status, 204, "{}", reply.text());
    let delivered = eventually(Duration::from_secs(15), "the event", || {
        let seen = subscriber.at("/orders");
        (!seen.is_empty()).then_some(seen)
    });
    assert_eq!(
        delivered[0].headers.get("ward-publisher").map(String::as_str),
        Some("spiffe://public/ns/default/checkout")
    );
    assert_eq!(delivered[0].headers.get("dapr-api-token").map(String::as_str), Some(APP_TOKEN));
    assert_eq!(delivered[0].body["source"], "checkout");
    assert_eq!(delivered[0].body["data"], json!({"id": 1}));
    assert!(publisher_app.at("/orders").is_empty(), "the subscription is scoped to orders");

    // The broker holds Dapr's wire format: the CloudEvent in field `data`, signed.
    let signed = redis.stream_data("orders");
    assert_eq!(signed.len(), 1, "{signed:?}");
    let mut event: Value = serde_json::from_str(&signed[0]).unwrap();
    assert!(event["wardsig"].as_str().is_some_and(|s| s.contains("..")), "{event}");

    // Someone with broker credentials writes events straight into the stream.
    let forged = json!({"id": "f1", "specversion": "1.0", "source": "checkout", "type": "com.dapr.event.sent",
        "topic": "orders", "pubsubname": "bus", "datacontenttype": "application/json", "data": {"id": 666}});
    redis.cli(&["XADD", "orders", "*", "data", &forged.to_string()]);
    event["data"] = json!({"id": 2});
    let tampered = event.to_string();
    redis.cli(&["XADD", "orders", "*", "data", &tampered]);

    // Both go to the dead-letter topic exactly as written, never to the app.
    let poison = eventually(Duration::from_secs(15), "two dead letters", || {
        let poison = redis.stream_data("poison");
        (poison.len() >= 2).then_some(poison)
    });
    assert_eq!(poison, vec![forged.to_string(), tampered], "dead letters are the messages unchanged");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(subscriber.at("/orders").len(), 1, "neither reached the app");
    // A verified publisher that the subscription's allowedPublishers does not list is refused too.
    let reply = http.send("POST", &checkout.http, "/v1.0/publish/bus/payouts", &[], b"pay me".to_vec());
    assert_eq!(reply.status, 204, "{}", reply.text());
    let refusals = eventually(Duration::from_secs(15), "three refusals", || {
        let refusals: Vec<Value> =
            audit_events(&mesh, "orders").into_iter().filter(|e| e["event"] == "PUBSUB_DELIVER_DENY").collect();
        (refusals.len() >= 3).then_some(refusals)
    });
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert_eq!(refusals[2]["rule"], "allowedPublishers", "{}", refusals[2]);
    assert_eq!(refusals[2]["caller"], "spiffe://public/ns/default/checkout", "{}", refusals[2]);
    assert!(subscriber.at("/payouts").is_empty());
    assert!(refusals[0]["reason"].as_str().unwrap_or_default().contains("no wardsig"), "{}", refusals[0]);
    assert!(refusals[1]["reason"].as_str().unwrap_or_default().contains("signature does not match"), "{}", refusals[1]);
}

#[test]
fn a_subscriber_killed_mid_delivery_gets_the_message_again_after_restart() {
    let redis = Redis::start();
    let mesh = Mesh::start(&[]);
    let dir = resources(&mesh, &redis);
    // The app keeps asking for a retry until the sidecar is gone.
    let subscriber =
        SubscriberApp::start(json!([]), HashMap::from([("/orders", vec![(200, r#"{"status":"RETRY"}"#)])]));
    let mut orders = sidecar(&mesh, "orders", &subscriber, &dir);
    let publisher_app = SubscriberApp::start(json!([]), HashMap::new());
    let checkout = sidecar(&mesh, "checkout", &publisher_app, &dir);
    let http = Http::new();
    wait_healthy(&http, &orders);
    let reply = http.send("POST", &checkout.http, "/v1.0/publish/bus/orders", &[], b"important".to_vec());
    assert_eq!(reply.status, 204, "{}", reply.text());
    eventually(Duration::from_secs(15), "a first delivery", || (!subscriber.at("/orders").is_empty()).then_some(()));
    orders.process.kill9();
    let before = subscriber.at("/orders").len();

    // Back up (same app id, same consumer group): the unacknowledged message comes again, and this time succeeds.
    subscriber.answer("/orders", 200, r#"{"status":"SUCCESS"}"#);
    let orders = sidecar(&mesh, "orders", &subscriber, &dir);
    wait_healthy(&http, &orders);
    let again = eventually(Duration::from_secs(15), "redelivery after restart", || {
        let seen = subscriber.at("/orders");
        (seen.len() > before).then_some(seen)
    });
    let last = again.last().unwrap();
    assert_eq!(last.body["data"], "important");
    assert_eq!(last.body["id"], again[0].body["id"], "the same event");
    // Acknowledged now: nothing pending for the group.
    eventually(Duration::from_secs(10), "no pending entries", || {
        let pending = redis.cli(&["XPENDING", "orders", "orders"]);
        pending.lines().next().is_some_and(|n| n.trim() == "0").then_some(())
    });
}

/// Issue 24 fault suite: Redis is killed (SIGKILL) and restarted with its append-only file between two publishes.
/// Both sidecars reconnect on their own, and every publish that was acknowledged (204) is delivered at least once.
#[test]
fn every_acknowledged_message_is_delivered_across_a_broker_restart() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = Redis::start_durable(port, data.path());
    let mesh = Mesh::start(&[]);
    let dir = resources(&mesh, &redis);
    let subscriber = SubscriberApp::start(json!([]), HashMap::new());
    let publisher_app = SubscriberApp::start(json!([]), HashMap::new());
    let orders = sidecar(&mesh, "orders", &subscriber, &dir);
    let checkout = sidecar(&mesh, "checkout", &publisher_app, &dir);
    let http = Http::new();
    wait_healthy(&http, &orders);
    let publish =
        |n: u32| http.send("POST", &checkout.http, "/v1.0/publish/bus/orders", &[], format!("m{n}").into_bytes());
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        if publish(n).status == 204 {
            acknowledged.push(format!("m{n}"));
        }
    }
    redis.kill();
    // While Redis is down a publish is refused (never acknowledged), so it may be lost: that is the contract.
    for n in 5..8 {
        if publish(n).status == 204 {
            acknowledged.push(format!("m{n}"));
        }
    }
    let _redis = Redis::start_durable(port, data.path());
    for n in 8..13 {
        let reply = eventually(Duration::from_secs(15), "a publish after the restart", || {
            let reply = publish(n);
            (reply.status == 204).then_some(reply)
        });
        assert_eq!(reply.status, 204);
        acknowledged.push(format!("m{n}"));
    }
    wait_all_delivered(&subscriber, "/orders", &acknowledged);
}
