//! Pub/sub across sidecars on NATS JetStream (issue 14): the stream exists (the operator creates it; ward never
//! does), a verified publisher on one sidecar reaches the subscriber on another, and a subscriber sidecar killed
//! mid-delivery gets the message again from its durable consumer after a restart. Needs `nats-server` (Debian's
//! package); every process is killed on drop and every wait is bounded.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::mesh::{Http, Mesh, SidecarProcess};
use support::pubsub_app::{SubscriberApp, subscriber_sidecar, wait_all_delivered, wait_healthy};
use support::{eventually, free_port};

/// A `nats-server -js` on a free loopback port with a temporary store, killed on drop.
struct Nats {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        Self::start_in(free_port(), tempfile::tempdir().unwrap(), true)
    }

    /// A server on `port` with the JetStream store in `store` (kept across restarts); creates the stream if asked.
    fn start_in(port: u16, store: tempfile::TempDir, create_stream: bool) -> Nats {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (apt-get install nats-server)");
        let nats = Nats { child, port, _store: store };
        if !create_stream {
            eventually(Duration::from_secs(10), "nats-server to listen", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            });
            return nats;
        }
        // JetStream answers once it runs: create the stream the operator would.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let url = nats.url();
        eventually(Duration::from_secs(10), "the JetStream stream", || {
            runtime.block_on(async {
                let client =
                    tokio::time::timeout(Duration::from_secs(1), async_nats::connect(&url)).await.ok()?.ok()?;
                let js = async_nats::jetstream::new(client);
                let config = async_nats::jetstream::stream::Config {
                    name: "ORDERS".into(),
                    subjects: vec!["orders".into()],
                    ..Default::default()
                };
                tokio::time::timeout(Duration::from_secs(2), js.create_stream(config)).await.ok()?.ok().map(|_| ())
            })
        });
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Nats {
    /// SIGKILL; the store stays for the next server.
    fn kill(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let store = std::mem::replace(&mut self._store, tempfile::tempdir().unwrap());
        (self.port, store)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resources(mesh: &Mesh, nats: &Nats) -> PathBuf {
    let dir = mesh.dir.path().join("resources");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bus.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: bus\nspec:\n  type: pubsub.jetstream\n  \
             version: v1\n  metadata:\n  - name: natsURL\n    value: \"{}\"\n  - name: durableName\n    value: \
             orders\n  - name: ackWait\n    value: 2s\n",
            nats.url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("subscription.yaml"),
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: orders\nspec:\n  pubsubname: bus\n  \
         topic: orders\n  routes:\n    default: /orders\nscopes: [orders]\n",
    )
    .unwrap();
    dir
}

fn sidecar(mesh: &Mesh, app_id: &str, app: &SubscriberApp, dir: &Path) -> SidecarProcess {
    subscriber_sidecar(mesh, app_id, app, dir, "orders-app-token")
}

#[test]
fn jetstream_delivers_verified_events_and_redelivers_after_a_subscriber_crash() {
    let nats = Nats::start();
    let mesh = Mesh::start(&[]);
    let dir = resources(&mesh, &nats);
    let subscriber =
        SubscriberApp::start(json!([]), HashMap::from([("/orders", vec![(200, r#"{"status":"RETRY"}"#)])]));
    let publisher_app = SubscriberApp::start(json!([]), HashMap::new());
    let mut orders = sidecar(&mesh, "orders", &subscriber, &dir);
    let checkout = sidecar(&mesh, "checkout", &publisher_app, &dir);
    let http = Http::new();
    wait_healthy(&http, &orders);
    wait_healthy(&http, &checkout);

    let reply = http.send(
        "POST",
        &checkout.http,
        "/v1.0/publish/bus/orders",
        &[("content-type", "application/json")],
        br#"{"id": 9}"#.to_vec(),
    );
    assert_eq!(reply.status, 204, "{}", reply.text());
    let first = eventually(Duration::from_secs(15), "a first delivery", || subscriber.at("/orders").first().cloned());
    assert_eq!(first.headers.get("ward-publisher").map(String::as_str), Some("spiffe://public/ns/default/checkout"));
    assert_eq!(first.headers.get("dapr-api-token").map(String::as_str), Some("orders-app-token"));
    assert_eq!(first.body["data"], json!({"id": 9}));

    // Killed while the app keeps asking for a retry: never acknowledged, so the durable consumer has it again.
    orders.process.kill9();
    let before = subscriber.at("/orders").len();
    subscriber.answer("/orders", 200, r#"{"status":"SUCCESS"}"#);
    let orders = sidecar(&mesh, "orders", &subscriber, &dir);
    wait_healthy(&http, &orders);
    let again = eventually(Duration::from_secs(20), "redelivery after restart", || {
        let seen = subscriber.at("/orders");
        (seen.len() > before).then_some(seen)
    });
    assert_eq!(again.last().unwrap().body["id"], first.body["id"], "the same event");
}

/// Issue 24 fault suite: nats-server is killed and restarted on the same port with the same JetStream store. Both
/// sidecars reconnect, the durable consumer carries on, and every acknowledged publish is delivered at least once.
#[test]
fn every_acknowledged_message_is_delivered_across_a_jetstream_restart() {
    let nats = Nats::start();
    let mesh = Mesh::start(&[]);
    let dir = resources(&mesh, &nats);
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
    let (port, store) = nats.kill();
    let _nats = Nats::start_in(port, store, false);
    for n in 5..10 {
        eventually(Duration::from_secs(20), "a publish after the restart", || (publish(n).status == 204).then_some(()));
        acknowledged.push(format!("m{n}"));
    }
    wait_all_delivered(&subscriber, "/orders", &acknowledged);
}
