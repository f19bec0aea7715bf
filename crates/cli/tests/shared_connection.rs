//! Refusing one request must not affect other requests sharing the HTTP/2 connection between two sidecars (the
//! scale issue, defect 1): uploads the callee's ACL denies, in a loop, while allowed GETs run beside them.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::mesh::{Http, Mesh, SidecarSpec, TestApp};

const ACL: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: callee
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: caller
      namespace: default
      trustDomain: public
      defaultAction: deny
      operations:
      - name: /allowed
        httpVerb: ['GET']
        action: allow
"#;

#[test]
fn refused_uploads_do_not_break_allowed_calls_on_the_same_connection() {
    let mesh = Mesh::start(&[]);
    let app = TestApp::start();
    let config = mesh.write("callee.yaml", ACL);
    let mut callee = SidecarSpec::new("callee", Some(app.addr.port()));
    callee.config = Some(&config);
    callee.extra = vec!["--max-body-size".into(), "16Mi".into()];
    let _callee = mesh.sidecar(callee);
    let mut caller = SidecarSpec::new("caller", None);
    caller.extra = vec!["--max-body-size".into(), "16Mi".into()];
    let caller = Arc::new(mesh.sidecar(caller));

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    // Each uploader is its own app connection; the caller sidecar may answer 403 before the upload is done, which an
    // HTTP/1.1 client can see as a cut connection: those count as refused too (the body never reached the callee's
    // app either way), and the uploader carries on.
    let uploaders: Vec<_> = (0..3)
        .map(|_| {
            let (caller, stop, refused) = (caller.clone(), stop.clone(), refused.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(hyper_util::client::legacy::connect::HttpConnector::new());
                let body = bytes::Bytes::from(vec![b'x'; 512 * 1024]);
                while !stop.load(Ordering::Relaxed) {
                    let request =
                        hyper::Request::post(format!("http://{}/v1.0/invoke/callee/method/denied", caller.http))
                            .body(http_body_util::Full::new(body.clone()))
                            .unwrap();
                    let status = runtime.block_on(async {
                        tokio::time::timeout(Duration::from_secs(10), client.request(request)).await.ok()?.ok()
                    });
                    if status.is_none_or(|r| r.status() == 403) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let http = Http::new();
    let until = Instant::now() + Duration::from_secs(5);
    let (mut ok, mut failed) = (0, Vec::new());
    while Instant::now() < until {
        let reply = http.get(&caller.http, "/v1.0/invoke/callee/method/allowed");
        if reply.status == 200 {
            ok += 1;
        } else {
            failed.push(format!("{} {}", reply.status, reply.text()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for uploader in uploaders {
        let _ = uploader.join();
    }
    // Hundreds of refusals mid-upload: enough that per-refusal stream resets would trip h2's rapid-reset guard
    // (1024 locally reset streams) within a few runs' worth, as they did before the pipeline answered refusals with
    // a complete response.
    assert!(refused.load(Ordering::Relaxed) > 100, "too few refused uploads to mean anything");
    assert!(ok > 0);
    assert!(
        failed.is_empty(),
        "{} of {} allowed calls failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(app.seen().iter().all(|s| s.path_and_query == "/allowed"), "no refused upload reached the app");
}
