//! daprd command lines start ward unchanged: every daprd flag is accepted, and each is applied or follows the
//! settings rule (refused in production, one warning naming the flag in development).

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::mesh::{Http, Mesh, SidecarSpec};

const NOT_IMPLEMENTED: &[&str] = &[
    // Without --enable-app-health-check a probe setting does nothing: named, as every setting not applied.
    "--app-health-check-path=/healthz",
    "--placement-host-address=localhost:50005",
    "--scheduler-host-address=localhost:50006",
    "--dapr-http-read-buffer-size=4",
    "--dapr-block-shutdown-duration=5s",
    "--enable-profiling",
];

#[test]
fn a_daprd_command_line_starts_and_every_unimplemented_flag_is_named() {
    let mesh = Mesh::start(&[]);
    let mut spec = SidecarSpec::new("daprd-style", None);
    spec.extra = NOT_IMPLEMENTED.iter().map(|s| s.to_string()).collect();
    spec.extra.extend(
        [
            "--app-max-concurrency=-1",
            "--dapr-http-max-request-size=8",
            "--dapr-graceful-shutdown-seconds=2",
            "--enable-metrics",
            "--dapr-public-port=0",
            "--dapr-public-listen-address=127.0.0.1",
        ]
        .map(String::from),
    );
    let mut sidecar = mesh.sidecar(spec);
    // The public port answers health without a token, and nothing else.
    let line = sidecar.process.wait_stdout("ward sidecar ready:", Duration::from_secs(1));
    let public = support::field(&line, "public");
    let http = Http::new();
    support::eventually(Duration::from_secs(10), "healthy on the public port", || {
        (http.get(&public, "/v1.0/healthz").status == 204).then_some(())
    });
    assert_eq!(http.get(&public, "/v1.0/healthz/outbound").status, 204);
    assert_eq!(http.get(&public, "/v1.0/metadata").status, 404, "only health on the public port");
    let stderr = sidecar.process.stderr_text();
    for flag in NOT_IMPLEMENTED {
        let name = flag.split('=').next().unwrap_or(flag);
        assert!(stderr.contains(&format!("{name}: NOT APPLIED")), "{name} not named:\n{stderr}");
    }
    for applied in [
        "--app-max-concurrency",
        "--dapr-http-max-request-size",
        "--dapr-graceful-shutdown-seconds",
        "--enable-metrics",
        "--metrics-port",
        "--dapr-public-port",
    ] {
        assert!(!stderr.contains(&format!("{applied}: NOT APPLIED")), "{applied} is applied:\n{stderr}");
    }

    // Production refuses the first one, naming it.
    let mut spec = SidecarSpec::new("prod", None);
    spec.extra = vec!["--production".into(), "--placement-host-address=localhost:50005".into()];
    let (code, _, stderr) = mesh.sidecar_exit(spec);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("--placement-host-address: ward has no actors or workflows"), "{stderr}");
}

/// `--app-max-concurrency 1`: while one call is in the app, a second is refused with 429 instead of queued.
#[test]
fn app_max_concurrency_bounds_calls_in_flight() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"slow"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let mesh = Mesh::start(&[]);
    let mut callee = SidecarSpec::new("slow", Some(port));
    callee.extra = vec!["--app-max-concurrency".into(), "1".into()];
    let _callee = mesh.sidecar(callee);
    let caller = Arc::new(mesh.sidecar(SidecarSpec::new("caller", None)));
    let first = {
        let caller = caller.clone();
        std::thread::spawn(move || Http::new().get(&caller.http, "/v1.0/invoke/slow/method/a").status)
    };
    std::thread::sleep(Duration::from_millis(300));
    let second = Http::new().get(&caller.http, "/v1.0/invoke/slow/method/b");
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(second.json()["errorCode"], "ERR_DIRECT_INVOKE");
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(Http::new().get(&caller.http, "/v1.0/invoke/slow/method/c").status, 200, "the permit came back");
}

/// `--enable-app-health-check`: the sidecar probes the app and `/v1.0/healthz` follows it (500 while it fails its
/// probes, 204 again once it passes); while the app is unhealthy no pub/sub event is delivered (as daprd), and the
/// events published meanwhile arrive once it is healthy again.
#[test]
fn app_health_checks_follow_the_app() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let healthy = Arc::new(AtomicBool::new(true));
    let events = Arc::new(AtomicUsize::new(0));
    let events_seen = events.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let flag = healthy.clone();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let flag = flag.clone();
            let events = events_seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_owned();
                    let ok = path == "/status" && flag.load(Ordering::SeqCst);
                    let events = events.clone();
                    async move {
                        if path == "/dapr/subscribe" {
                            let list = r#"[{"pubsubname":"bus","topic":"t","route":"/events"}]"#;
                            return Ok(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(list))));
                        }
                        if path == "/events" {
                            events.fetch_add(1, Ordering::SeqCst);
                            return Ok(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new())));
                        }
                        let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        *response.status_mut() =
                            if ok { hyper::StatusCode::OK } else { hyper::StatusCode::SERVICE_UNAVAILABLE };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let mesh = Mesh::start(&[]);
    let resources = mesh.dir.path().join("probed-resources");
    std::fs::create_dir_all(&resources).unwrap();
    std::fs::write(
        resources.join("bus.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: bus\nspec:\n  type: pubsub.in-memory\n  \
         version: v1\n  metadata: []\n",
    )
    .unwrap();
    let mut spec = SidecarSpec::new("probed", Some(port));
    spec.extra = [
        "--resources-path",
        resources.to_str().unwrap(),
        "--enable-app-health-check",
        "--app-health-check-path=/status",
        "--app-health-probe-interval=1",
        "--app-health-probe-timeout=200",
        "--app-health-threshold=2",
    ]
    .map(String::from)
    .to_vec();
    let sidecar = mesh.sidecar(spec);
    let http = Http::new();
    support::eventually(Duration::from_secs(10), "healthy", || {
        (http.get(&sidecar.http, "/v1.0/healthz").status == 204).then_some(())
    });
    healthy.store(false, Ordering::SeqCst);
    support::eventually(Duration::from_secs(10), "unhealthy after two failed probes", || {
        (http.get(&sidecar.http, "/v1.0/healthz").status == 500).then_some(())
    });
    assert_eq!(http.get(&sidecar.http, "/v1.0/healthz/outbound").status, 204, "the sidecar itself is fine");
    let published = http.send("POST", &sidecar.http, "/v1.0/publish/bus/t", &[], b"held".to_vec());
    assert_eq!(published.status, 204, "{}", published.text());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(events.load(Ordering::SeqCst), 0, "no delivery while the app is unhealthy");
    healthy.store(true, Ordering::SeqCst);
    support::eventually(Duration::from_secs(10), "healthy again", || {
        (http.get(&sidecar.http, "/v1.0/healthz").status == 204).then_some(())
    });
    support::eventually(Duration::from_secs(10), "the held event", || {
        (events.load(Ordering::SeqCst) == 1).then_some(())
    });
    assert!(!sidecar.process.stderr_text().contains("NOT APPLIED"), "{}", sidecar.process.stderr_text());
}

/// `--unix-domain-socket DIR` (daprd's flag): the HTTP and gRPC APIs listen on `DIR/dapr-http-<app-id>.socket` and
/// `DIR/dapr-grpc-<app-id>.socket`, readable and writable by the sidecar's user only, and on no TCP port; the API
/// answers over the socket as over TCP (token checks included); a clean shutdown removes the sockets.
#[test]
fn unix_domain_socket_serves_the_api_with_owner_only_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let mesh = Mesh::start(&[]);
    let dir = mesh.dir.path().join("sockets");
    std::fs::create_dir_all(&dir).unwrap();
    let mut spec = SidecarSpec::new("uds", None);
    spec.extra = vec!["--unix-domain-socket".into(), dir.to_str().unwrap().into()];
    spec.env = vec![("DAPR_API_TOKEN".into(), "uds-token-0123456789abcdef".into())];
    let sidecar = mesh.sidecar(spec);
    let http_socket = dir.join("dapr-http-uds.socket");
    let grpc_socket = dir.join("dapr-grpc-uds.socket");
    assert_eq!(sidecar.http, format!("unix:{}", http_socket.display()), "the ready line names the socket");
    let grpc = support::field(&sidecar.process.stdout_text(), "grpc");
    assert_eq!(grpc, format!("unix:{}", grpc_socket.display()), "no TCP API port");
    for socket in [&http_socket, &grpc_socket] {
        let mode = std::fs::metadata(socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", socket.display());
    }
    let get = |path: &str, token: Option<&str>| -> (u16, String) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let stream = tokio::net::UnixStream::connect(&http_socket).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            let mut request = hyper::Request::get(path).header("host", "localhost");
            if let Some(token) = token {
                request = request.header("dapr-api-token", token);
            }
            let request = request.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
            let response =
                tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await.unwrap().unwrap();
            let status = response.status().as_u16();
            let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    };
    assert_eq!(get("/v1.0/healthz", None).0, 204);
    assert_eq!(get("/v1.0/metadata", None).0, 401, "the API token still applies on the socket");
    let (status, body) = get("/v1.0/metadata", Some("uds-token-0123456789abcdef"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"id\":\"uds\""), "{body}");
    let stderr = sidecar.process.stderr_text();
    assert!(!stderr.contains("--unix-domain-socket"), "the flag is applied, not warned about: {stderr}");
    sidecar.process.terminate();
    support::eventually(Duration::from_secs(10), "the sockets removed at shutdown", || {
        (!http_socket.exists() && !grpc_socket.exists()).then_some(())
    });
}

/// `--worker-threads` (env `WARD_WORKER_THREADS`) is the number of request-serving threads: one by default, as many
/// as asked otherwise. The sidecar logs the count its runtime reports.
#[test]
fn worker_threads_sets_the_request_serving_threads() {
    let mesh = Mesh::start(&[]);
    let workers = |process: &support::Ward| {
        let stderr = process.stderr_text();
        let line = stderr.lines().find(|l| l.contains("request-serving threads")).map(str::to_owned);
        line.unwrap_or_else(|| panic!("no worker count logged:\n{stderr}"))
    };
    let default = mesh.sidecar(SidecarSpec::new("workers-default", None));
    assert!(workers(&default.process).contains("workers=1"), "one worker by default");

    let mut spec = SidecarSpec::new("workers-flag", None);
    spec.extra.push("--worker-threads=3".into());
    let flag = mesh.sidecar(spec);
    assert!(workers(&flag.process).contains("workers=3"));

    let mut spec = SidecarSpec::new("workers-env", None);
    spec.env.push(("WARD_WORKER_THREADS".into(), "2".into()));
    let env = mesh.sidecar(spec);
    assert!(workers(&env.process).contains("workers=2"));
}
