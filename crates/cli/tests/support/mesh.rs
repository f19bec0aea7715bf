//! A small mesh for end-to-end tests: one `ward sentry`, sidecars as real `ward sidecar` processes, and apps as
//! in-process HTTP servers on 127.0.0.1 that record every request they receive (so a test can assert that a
//! refused call never reached the app).

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::{Sentry, Ward, field, path_str};

/// What an app saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HashMap<String, String>,
    pub body_len: usize,
}

/// An HTTP app that answers `200 echo:<path>` and records requests.
pub struct TestApp {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl TestApp {
    pub fn start() -> TestApp {
        Self::start_on(0)
    }

    /// On a given port (0: any), e.g. to restart an app where it was.
    pub fn start_on(port: u16) -> TestApp {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port))).unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let method = req.method().to_string();
                            let path_and_query = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            sink.lock().unwrap().push(Seen {
                                method,
                                path_and_query: path_and_query.clone(),
                                headers,
                                body_len: body.len(),
                            });
                            let response = hyper::Response::builder()
                                .status(200)
                                .header("x-app", "test")
                                .body(Full::new(Bytes::from(format!("echo:{path_and_query} len={}", body.len()))))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        TestApp { addr, seen, _runtime: runtime }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// A running `ward sidecar`.
pub struct SidecarProcess {
    pub process: Ward,
    pub http: String,
    pub internal: String,
    pub metrics: String,
}

pub struct SidecarSpec<'a> {
    pub app_id: &'a str,
    pub app_port: Option<u16>,
    pub config: Option<&'a Path>,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl<'a> SidecarSpec<'a> {
    pub fn new(app_id: &'a str, app_port: Option<u16>) -> Self {
        Self { app_id, app_port, config: None, extra: Vec::new(), env: Vec::new() }
    }
}

/// Shared parts of a test mesh.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub sentry: Sentry,
    pub ward_home: PathBuf,
}

impl Mesh {
    pub fn start(sentry_args: &[&str]) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let ward_home = dir.path().join("home");
        std::fs::create_dir_all(&ward_home).unwrap();
        let sentry = Sentry::start(&dir.path().join("ca"), sentry_args);
        Mesh { dir, sentry, ward_home }
    }

    pub fn trust_anchors(&self) -> String {
        String::from_utf8(self.sentry.roots_pem()).unwrap()
    }

    /// The command line and environment of a `ward sidecar` with mTLS against this mesh's sentry.
    fn sidecar_command(&self, spec: &SidecarSpec<'_>) -> (Vec<String>, Vec<(String, String)>) {
        let mut args: Vec<String> = vec![
            "sidecar".into(),
            "--app-id".into(),
            spec.app_id.into(),
            "--dapr-http-port".into(),
            "0".into(),
            "--dapr-internal-grpc-port".into(),
            "0".into(),
            "--dapr-grpc-port".into(),
            "0".into(),
            "--metrics-port".into(),
            "0".into(),
            "--enable-mtls".into(),
            "--sentry-address".into(),
            self.sentry.grpc.clone(),
        ];
        if let Some(port) = spec.app_port {
            args.extend(["--app-port".into(), port.to_string()]);
        }
        if let Some(config) = spec.config {
            args.extend(["--config".into(), path_str(config).into()]);
        }
        args.extend(spec.extra.iter().cloned());
        let mut env = vec![
            ("DAPR_TRUST_ANCHORS".to_owned(), self.trust_anchors()),
            ("WARD_HOME".to_owned(), path_str(&self.ward_home).to_owned()),
        ];
        env.extend(spec.env.iter().cloned());
        (args, env)
    }

    pub fn sidecar(&self, spec: SidecarSpec<'_>) -> SidecarProcess {
        let (args, env) = self.sidecar_command(&spec);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut process = Ward::spawn(spec.app_id, &args, &env);
        let line = process.wait_stdout("ward sidecar ready:", Duration::from_secs(20));
        SidecarProcess {
            http: field(&line, "http"),
            internal: field(&line, "internal"),
            metrics: field(&line, "metrics"),
            process,
        }
    }

    /// Runs a sidecar that must refuse to start; (exit code, stdout, stderr), bounded like every `ward_output`.
    pub fn sidecar_exit(&self, spec: SidecarSpec<'_>) -> (i32, String, String) {
        let (args, env) = self.sidecar_command(&spec);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        super::ward_output(&args, &env)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// A minimal HTTP/1 client for the public API.
pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
}

impl Http {
    pub fn new() -> Http {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        Http { runtime, client }
    }

    /// Sends a request; `path` is sent verbatim (no re-encoding).
    pub fn send(&self, method: &str, addr: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut builder = hyper::Request::builder().method(method).uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Full::new(Bytes::from(body))).unwrap();
        self.runtime.block_on(async {
            let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
                .await
                .expect("request timed out")
                .expect("request failed");
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            // An answer whose body breaks off (its sidecar was killed mid-stream) is status 0: callers that
            // provoke that (fault tests) count it as failed, every other test sees an unexpected status.
            match response.into_body().collect().await {
                Ok(body) => Reply { status, headers, body: body.to_bytes() },
                Err(_) => Reply { status: 0, headers, body: Bytes::new() },
            }
        })
    }

    pub fn get(&self, addr: &str, path: &str) -> Reply {
        self.send("GET", addr, path, &[], Vec::new())
    }
}
