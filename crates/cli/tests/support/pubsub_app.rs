//! A subscriber app for pub/sub tests: answers `GET /dapr/subscribe` with the subscriptions it was given and records
//! every delivery (path, headers, JSON body), answering each path with scripted statuses.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

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
    answers: Answers,
    _runtime: tokio::runtime::Runtime,
}

type Answers = Arc<Mutex<HashMap<String, Vec<(u16, String)>>>>;

impl SubscriberApp {
    pub fn start(subscriptions: Value, answers: HashMap<&'static str, Vec<(u16, &'static str)>>) -> SubscriberApp {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Delivery>::new()));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = seen.clone();
        let subscriptions = Arc::new(subscriptions.to_string());
        let answers: Answers = Arc::new(Mutex::new(
            answers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_iter().map(|(s, t)| (s, t.to_owned())).collect()))
                .collect(),
        ));
        let app_answers = answers.clone();
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
                                .lock()
                                .unwrap()
                                .get(path.as_str())
                                .map(|list| list[count.min(list.len() - 1)].clone())
                                .unwrap_or((200, String::new()));
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
        SubscriberApp { addr, seen, answers: app_answers, _runtime: runtime }
    }

    /// From now on, every request to `path` gets `status` and `body`.
    pub fn answer(&self, path: &str, status: u16, body: &str) {
        self.answers.lock().unwrap().insert(path.to_owned(), vec![(status, body.to_owned())]);
    }

    pub fn at(&self, path: &str) -> Vec<Delivery> {
        self.seen.lock().unwrap().iter().filter(|d| d.path == path).cloned().collect()
    }
}

/// A sidecar for `app` with `resources` as its resources path, `APP_API_TOKEN` = `app_token`, and its audit log at
/// `<mesh dir>/<app id>.audit` (read it with [`audit_events`]).
pub fn subscriber_sidecar(
    mesh: &super::mesh::Mesh,
    app_id: &str,
    app: &SubscriberApp,
    resources: &std::path::Path,
    app_token: &str,
) -> super::mesh::SidecarProcess {
    let mut spec = super::mesh::SidecarSpec::new(app_id, Some(app.addr.port()));
    spec.extra = vec![
        "--resources-path".into(),
        resources.to_str().unwrap().into(),
        "--audit-log".into(),
        audit_path(mesh, app_id).to_str().unwrap().into(),
    ];
    spec.env = vec![("APP_API_TOKEN".into(), app_token.into())];
    mesh.sidecar(spec)
}

pub fn audit_path(mesh: &super::mesh::Mesh, app_id: &str) -> std::path::PathBuf {
    mesh.dir.path().join(format!("{app_id}.audit"))
}

/// The audit events written so far by `app_id`'s sidecar (started with [`subscriber_sidecar`]).
pub fn audit_events(mesh: &super::mesh::Mesh, app_id: &str) -> Vec<Value> {
    std::fs::read_to_string(audit_path(mesh, app_id))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits (bounded) until the sidecar reports ready, which includes every subscription being active.
pub fn wait_healthy(http: &super::mesh::Http, sidecar: &super::mesh::SidecarProcess) {
    super::eventually(std::time::Duration::from_secs(15), "healthz", || {
        (http.get(&sidecar.http, "/v1.0/healthz").status == 204).then_some(())
    });
}

/// Waits (bounded) until every one of `messages` was delivered to `path` at least once (as the event's data).
pub fn wait_all_delivered(app: &SubscriberApp, path: &str, messages: &[String]) {
    super::eventually(std::time::Duration::from_secs(30), "every acknowledged message delivered", || {
        let seen: Vec<String> =
            app.at(path).iter().filter_map(|d| d.body["data"].as_str().map(str::to_owned)).collect();
        messages.iter().all(|m| seen.contains(m)).then_some(())
    });
}
