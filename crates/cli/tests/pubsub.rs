//! Pub/sub end to end with real `ward sidecar` processes (issue 14), on the embedded `pubsub.in-memory` broker:
//! publish → a delivered CloudEvent with the subscriber's app token and the verified publisher; RETRY, DROP, 404,
//! dead letters and `maxDeliveryAttempts`; CEL routing; declarative (v1alpha1, v2alpha1) and programmatic
//! subscriptions; topic and component scopes; subscription routes closed to invocation. Brokers shared between
//! sidecars (Redis, JetStream) are tested in `pubsub_brokers.rs`.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use support::eventually;
use support::mesh::{Http, Mesh, SidecarSpec};

/// One request the subscriber app received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

/// A subscriber app: `GET /dapr/subscribe` answers `subscriptions`; every other request is recorded and answered
/// by the first matching rule of `answers` (path → list of (status, body) used in turn, the last one repeating).
pub struct SubscriberApp {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Delivery>>>,
    _runtime: tokio::runtime::Runtime,
}

impl SubscriberApp {
    pub fn start(subscriptions: Value, answers: HashMap<&'static str, Vec<(u16, &'static str)>>) -> SubscriberApp {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Delivery>::new()));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = seen.clone();
        let subscriptions = Arc::new(subscriptions.to_string());
        let answers = Arc::new(answers);
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (sink, subscriptions, answers) = (sink.clone(), subscriptions.clone(), answers.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let (sink, subscriptions, answers) = (sink.clone(), subscriptions.clone(), answers.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let headers: HashMap<String, String> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            if path == "/dapr/subscribe" {
                                let body = Full::new(Bytes::from(subscriptions.to_string()));
                                return Ok::<_, Infallible>(hyper::Response::new(body));
                            }
                            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let mut seen = sink.lock().unwrap();
                            let count = seen.iter().filter(|d| d.path == path).count();
                            seen.push(Delivery { path: path.clone(), headers, body });
                            let (status, text) = answers
                                .get(path.as_str())
                                .map(|list| list[count.min(list.len() - 1)])
                                .unwrap_or((200, ""));
                            let response =
                                hyper::Response::builder().status(status).body(Full::new(Bytes::from(text))).unwrap();
                            Ok(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        SubscriberApp { addr, seen, _runtime: runtime }
    }

    pub fn at(&self, path: &str) -> Vec<Delivery> {
        self.seen.lock().unwrap().iter().filter(|d| d.path == path).cloned().collect()
    }
}

const APP_TOKEN: &str = "sidecar-to-app-secret";

fn resources(mesh: &Mesh, name: &str, files: &[(&str, String)]) -> std::path::PathBuf {
    let dir = mesh.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn pubsub(name: &str, metadata: &[(&str, &str)], scopes: &str) -> String {
    let mut text = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: pubsub.in-memory\n  \
         version: v1\n  metadata:{}\n",
        if metadata.is_empty() { " []" } else { "" }
    );
    for (k, v) in metadata {
        text.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    text.push_str(scopes);
    text
}

fn sidecar_spec<'a>(app_id: &'a str, app: &SubscriberApp, dir: &Path, audit: &Path) -> SidecarSpec<'a> {
    let mut spec = SidecarSpec::new(app_id, Some(app.addr.port()));
    spec.extra = vec![
        "--resources-path".into(),
        dir.to_str().unwrap().into(),
        "--audit-log".into(),
        audit.to_str().unwrap().into(),
    ];
    spec.env = vec![("APP_API_TOKEN".into(), APP_TOKEN.into())];
    spec
}

fn publish(http: &Http, addr: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let reply = http.send("POST", addr, path, &[("content-type", content_type)], body.as_bytes().to_vec());
    (reply.status, reply.text())
}

fn wait_deliveries(app: &SubscriberApp, path: &str, n: usize) -> Vec<Delivery> {
    eventually(Duration::from_secs(15), &format!("{n} deliveries at {path}"), || {
        let seen = app.at(path);
        (seen.len() >= n).then_some(seen)
    })
}

fn audit_events(audit: &Path) -> Vec<Value> {
    std::fs::read_to_string(audit).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn published_events_are_delivered_with_the_app_token_the_verified_publisher_and_cel_routes() {
    let mesh = Mesh::start(&[]);
    let dir = resources(
        &mesh,
        "res",
        &[
            ("bus.yaml", pubsub("bus", &[], "")),
            (
                "v2.yaml",
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: orders\nspec:\n  pubsubname: bus\n  \
                 topic: orders\n  routes:\n    rules:\n    - match: event.type == \"widget\"\n      path: /widgets\n    \
                 default: /orders\n"
                    .into(),
            ),
            (
                "v1.yaml",
                "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: audit-trail\nspec:\n  pubsubname: \
                 bus\n  topic: trail\n  route: /trail\n"
                    .into(),
            ),
            (
                "elsewhere.yaml",
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: theirs\nspec:\n  pubsubname: bus\n  \
                 topic: orders\n  routes:\n    default: /not-mine\nscopes: [someone-else]\n"
                    .into(),
            ),
        ],
    );
    let app = SubscriberApp::start(json!([]), HashMap::new());
    let audit = mesh.dir.path().join("audit.log");
    let sidecar = mesh.sidecar(sidecar_spec("orders", &app, &dir, &audit));
    let http = Http::new();
    eventually(Duration::from_secs(10), "healthz", || {
        (http.get(&sidecar.http, "/v1.0/healthz").status == 204).then_some(())
    });

    let (status, text) =
        publish(&http, &sidecar.http, "/v1.0/publish/bus/orders", "application/json", r#"{"orderId": 7}"#);
    assert_eq!(status, 204, "{text}");
    let delivered = wait_deliveries(&app, "/orders", 1);
    let d = &delivered[0];
    assert_eq!(d.headers.get("content-type").map(String::as_str), Some("application/cloudevents+json"));
    assert_eq!(d.headers.get("dapr-api-token").map(String::as_str), Some(APP_TOKEN), "the subscriber's own token");
    assert_eq!(
        d.headers.get("ward-publisher").map(String::as_str),
        Some("spiffe://public/ns/default/orders"),
        "the verified publisher"
    );
    assert!(d.headers.contains_key("ward-provenance"), "deliveries carry a provenance token too");
    assert_eq!(d.body["data"], json!({"orderId": 7}));
    assert_eq!((d.body["topic"].as_str(), d.body["pubsubname"].as_str()), (Some("orders"), Some("bus")));
    assert_eq!(d.body["source"], "orders");
    assert_eq!(d.body["type"], "com.dapr.event.sent");
    assert!(d.body.get("wardsig").is_none(), "the signature is checked by the sidecar, not passed on");

    // CEL: cloudevent.type=widget takes the rule's path; text payloads stay text; v1alpha1 routes work.
    let (status, _) =
        publish(&http, &sidecar.http, "/v1.0/publish/bus/orders?metadata.cloudevent.type=widget", "text/plain", "w");
    assert_eq!(status, 204);
    let widgets = wait_deliveries(&app, "/widgets", 1);
    assert_eq!((widgets[0].body["data"].as_str(), widgets[0].body["type"].as_str()), (Some("w"), Some("widget")));
    let (status, _) = publish(&http, &sidecar.http, "/v1.0/publish/bus/trail", "text/plain", "t");
    assert_eq!(status, 204);
    wait_deliveries(&app, "/trail", 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(app.at("/not-mine").is_empty(), "a subscription scoped to another app is not delivered here");
    assert_eq!(app.at("/orders").len(), 1, "delivered once");

    // Bulk publish.
    let bulk = json!([
        {"entryId": "1", "event": {"n": 1}, "contentType": "application/json"},
        {"entryId": "2", "event": "two", "contentType": "text/plain"}
    ]);
    let reply =
        http.send("POST", &sidecar.http, "/v1.0-alpha1/publish/bulk/bus/trail", &[], bulk.to_string().into_bytes());
    assert_eq!(reply.status, 204, "{}", reply.text());
    let trail = wait_deliveries(&app, "/trail", 3);
    assert!(trail.iter().any(|d| d.body["data"] == json!({"n": 1})) && trail.iter().any(|d| d.body["data"] == "two"));

    // Metadata lists the component and the active subscriptions (not the other app's).
    let metadata = http.get(&sidecar.http, "/v1.0/metadata").json();
    assert!(
        metadata["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "bus" && c["type"] == "pubsub.in-memory")
    );
    let topics: Vec<&str> =
        metadata["subscriptions"].as_array().unwrap().iter().filter_map(|s| s["topic"].as_str()).collect();
    assert_eq!(topics.len(), 2, "{metadata}");
    assert!(topics.contains(&"orders") && topics.contains(&"trail"));

    // Every delivery decision is audited.
    let events = audit_events(&audit);
    assert!(events.iter().any(|e| e["event"] == "PUBSUB_PUBLISH_ALLOW" && e["operation"] == "bus/orders"));
    assert!(events.iter().any(|e| e["event"] == "PUBSUB_DELIVER_ALLOW"
        && e["caller"] == "spiffe://public/ns/default/orders"
        && e["operation"] == "bus/orders"));
}

#[test]
fn retry_drop_not_found_dead_letters_and_bounded_attempts() {
    let mesh = Mesh::start(&[]);
    let dir = resources(&mesh, "res", &[("bus.yaml", pubsub("bus", &[("maxDeliveryAttempts", "3")], ""))]);
    let subscriptions = json!([
        {"pubsubname": "bus", "topic": "flaky", "route": "/flaky", "deadLetterTopic": "dead"},
        {"pubsubname": "bus", "topic": "dropme", "route": "/drop", "deadLetterTopic": "dead"},
        {"pubsubname": "bus", "topic": "gone", "route": "/missing"},
        {"pubsubname": "bus", "topic": "hopeless", "route": "/always-retry", "deadLetterTopic": "dead"},
        {"pubsubname": "bus", "topic": "dead", "route": "/dead"}
    ]);
    let answers = HashMap::from([
        ("/flaky", vec![(200, r#"{"status":"RETRY"}"#), (500, ""), (200, r#"{"status":"SUCCESS"}"#)]),
        ("/drop", vec![(200, r#"{"status":"DROP"}"#)]),
        ("/missing", vec![(404, "")]),
        ("/always-retry", vec![(200, r#"{"status":"RETRY"}"#)]),
    ]);
    let app = SubscriberApp::start(subscriptions, answers);
    let audit = mesh.dir.path().join("audit.log");
    let sidecar = mesh.sidecar(sidecar_spec("orders", &app, &dir, &audit));
    let http = Http::new();
    eventually(Duration::from_secs(10), "healthz", || {
        (http.get(&sidecar.http, "/v1.0/healthz").status == 204).then_some(())
    });
    for topic in ["flaky", "dropme", "gone", "hopeless"] {
        let (status, text) = publish(&http, &sidecar.http, &format!("/v1.0/publish/bus/{topic}"), "text/plain", topic);
        assert_eq!(status, 204, "{topic}: {text}");
    }
    // RETRY, then a 500, then SUCCESS: three deliveries, never dead-lettered.
    wait_deliveries(&app, "/flaky", 3);
    // DROP and exhausted retries go to the dead-letter topic, unchanged; a 404 is dropped without a retry.
    let dead = wait_deliveries(&app, "/dead", 2);
    let mut dead_data: Vec<&str> = dead.iter().filter_map(|d| d.body["data"].as_str()).collect();
    dead_data.sort();
    assert_eq!(dead_data, ["dropme", "hopeless"]);
    assert!(dead.iter().all(|d| d.body["topic"] != "dead"), "dead letters keep their original topic: {dead:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(app.at("/drop").len(), 1);
    assert_eq!(app.at("/missing").len(), 1, "404 is not retried");
    assert_eq!(app.at("/always-retry").len(), 3, "maxDeliveryAttempts bounds the attempts");
    assert_eq!(app.at("/flaky").len(), 3);
    assert_eq!(app.at("/dead").len(), 2);
}

#[test]
fn topic_scopes_component_scopes_and_routes_closed_to_invocation() {
    let mesh = Mesh::start(&[]);
    let scoped = pubsub("bus", &[("publishingScopes", "orders=allowed"), ("subscriptionScopes", "orders=allowed")], "");
    let dir = resources(
        &mesh,
        "res",
        &[
            ("bus.yaml", scoped),
            ("hidden.yaml", pubsub("hidden", &[], "scopes: [someone-else]\n")),
            (
                "subs.yaml",
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: ok\nspec:\n  pubsubname: bus\n  \
                 topic: allowed\n  routes:\n    default: /allowed\n---\napiVersion: dapr.io/v2alpha1\nkind: \
                 Subscription\nmetadata:\n  name: refused\nspec:\n  pubsubname: bus\n  topic: secret\n  routes:\n    \
                 default: /secret\n"
                    .into(),
            ),
        ],
    );
    let app = SubscriberApp::start(json!([]), HashMap::new());
    let audit = mesh.dir.path().join("audit.log");
    let sidecar = mesh.sidecar(sidecar_spec("orders", &app, &dir, &audit));
    let http = Http::new();
    eventually(Duration::from_secs(10), "healthz", || {
        (http.get(&sidecar.http, "/v1.0/healthz").status == 204).then_some(())
    });

    let (status, text) = publish(&http, &sidecar.http, "/v1.0/publish/bus/secret", "text/plain", "x");
    assert_eq!(status, 403, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["errorCode"], "ERR_PUBSUB_FORBIDDEN");
    assert_eq!(body["message"], "topic secret is not allowed for app id orders");

    // Out of scope answers exactly like missing.
    let hidden = publish(&http, &sidecar.http, "/v1.0/publish/hidden/t", "text/plain", "x");
    let missing = publish(&http, &sidecar.http, "/v1.0/publish/nosuch/t", "text/plain", "x");
    assert_eq!(hidden.0, 404);
    assert_eq!(hidden.1.replace("hidden", "NAME"), missing.1.replace("nosuch", "NAME"));
    assert!(hidden.1.contains("ERR_PUBSUB_NOT_FOUND"), "{}", hidden.1);
    let metadata = http.get(&sidecar.http, "/v1.0/metadata").json();
    assert!(!metadata.to_string().contains("hidden"), "an out-of-scope pubsub is not listed: {metadata}");

    // The subscription the scopes refuse never started (and the refusal is audited); the allowed one works.
    sidecar.process.wait_stderr("do not allow app \"orders\" to subscribe to \"secret\"", Duration::from_secs(5));
    assert_eq!(publish(&http, &sidecar.http, "/v1.0/publish/bus/allowed", "text/plain", "ok").0, 204);
    wait_deliveries(&app, "/allowed", 1);
    let events = audit_events(&audit);
    assert!(events.iter().any(|e| e["event"] == "PUBSUB_SUBSCRIBE_DENY" && e["operation"] == "bus/secret"));
    assert!(events.iter().any(|e| e["event"] == "PUBSUB_PUBLISH_DENY" && e["operation"] == "bus/secret"));

    // Another app's sidecar cannot invoke the subscription route (no accessControl at all: still refused), while
    // an ordinary route of the same app is reachable.
    let caller_app = SubscriberApp::start(json!([]), HashMap::new());
    let empty = resources(&mesh, "empty", &[]);
    let caller = mesh.sidecar(sidecar_spec("checkout", &caller_app, &empty, &mesh.dir.path().join("caller.log")));
    let refused = http.send("POST", &caller.http, "/v1.0/invoke/orders/method/allowed", &[], b"{}".to_vec());
    assert_eq!(refused.status, 403, "{}", refused.text());
    let ordinary = http.send("POST", &caller.http, "/v1.0/invoke/orders/method/other", &[], b"{}".to_vec());
    assert_eq!(ordinary.status, 200, "{}", ordinary.text());
    assert_eq!(app.at("/allowed").len(), 1, "the invocation never reached the subscription route");
}
