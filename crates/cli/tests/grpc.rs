//! The Dapr gRPC API and gRPC proxying on real sidecars: token and allow list on gRPC, metadata, proxied calls to
//! a gRPC app judged by the callee's ACL on the full method name, and `--app-protocol grpc` (AppCallback/OnInvoke)
//! receiving the callee's own app token and the verified caller.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as rt;
use rt::app_callback_server::{AppCallback, AppCallbackServer};
use support::mesh::{Http, Mesh, SidecarSpec};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Callback {
    seen: Arc<Mutex<Vec<HashMap<String, String>>>>,
    /// Programmatic subscriptions this app announces (`ListTopicSubscriptions`): (pubsub, topic).
    topics: Vec<(String, String)>,
    /// Topic events received, with their metadata.
    events: Arc<Mutex<Vec<ReceivedEvent>>>,
}

/// A topic event and the metadata it came with.
type ReceivedEvent = (HashMap<String, String>, rt::TopicEventRequest);

fn ascii_metadata(metadata: &tonic::metadata::MetadataMap) -> HashMap<String, String> {
    metadata
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.to_string(), v.to_str().unwrap_or("").to_owned())),
            _ => None,
        })
        .collect()
}

#[tonic::async_trait]
impl AppCallback for Callback {
    async fn on_invoke(
        &self,
        request: Request<common::InvokeRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        let metadata = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.to_string(), v.to_str().unwrap_or("").to_owned()))
                }
                _ => None,
            })
            .collect();
        let mut metadata: std::collections::HashMap<String, String> = metadata;
        let r = request.into_inner();
        let (type_url, value) = r.data.map(|d| (d.type_url, d.value)).unwrap_or_default();
        metadata.insert("x-received-type-url".into(), type_url);
        self.seen.lock().unwrap().push(metadata);
        if r.method == "typed" {
            // A typed protobuf answer without a content type (what SDKs' `resp.unpack()` relies on).
            return Ok(Response::new(common::InvokeResponse {
                data: Some(prost_types::Any {
                    type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
                    value: b"\n\x02ok".to_vec(),
                }),
                content_type: String::new(),
            }));
        }
        let body = format!("hi:{}:{}", r.method, String::from_utf8_lossy(&value));
        Ok(Response::new(common::InvokeResponse {
            data: Some(prost_types::Any { type_url: String::new(), value: body.into_bytes() }),
            content_type: "text/plain".into(),
        }))
    }
    async fn list_topic_subscriptions(
        &self,
        request: Request<()>,
    ) -> Result<Response<rt::ListTopicSubscriptionsResponse>, Status> {
        // Only the app's own sidecar may ask (it presents APP_API_TOKEN).
        if !self.topics.is_empty()
            && ascii_metadata(request.metadata()).get("dapr-api-token").map(String::as_str) != Some("callee-own-token")
        {
            return Err(Status::unauthenticated("not my sidecar"));
        }
        let subscriptions = self
            .topics
            .iter()
            .map(|(pubsub, topic)| rt::TopicSubscription {
                pubsub_name: pubsub.clone(),
                topic: topic.clone(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(rt::ListTopicSubscriptionsResponse { subscriptions }))
    }
    async fn on_topic_event(
        &self,
        request: Request<rt::TopicEventRequest>,
    ) -> Result<Response<rt::TopicEventResponse>, Status> {
        let metadata = ascii_metadata(request.metadata());
        self.events.lock().unwrap().push((metadata, request.into_inner()));
        Ok(Response::new(rt::TopicEventResponse { status: 0 }))
    }
    async fn list_input_bindings(&self, _: Request<()>) -> Result<Response<rt::ListInputBindingsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    async fn on_binding_event(
        &self,
        _: Request<rt::BindingEventRequest>,
    ) -> Result<Response<rt::BindingEventResponse>, Status> {
        Err(Status::unimplemented("no bindings"))
    }
    async fn on_bulk_topic_event(
        &self,
        _: Request<rt::TopicEventBulkRequest>,
    ) -> Result<Response<rt::TopicEventBulkResponse>, Status> {
        Err(Status::unimplemented("no pub/sub"))
    }
    async fn on_job_event(&self, _: Request<rt::JobEventRequest>) -> Result<Response<rt::JobEventResponse>, Status> {
        Err(Status::unimplemented("no jobs"))
    }
}

/// A gRPC app serving AppCallback and grpc.health.v1.Health on one port.
fn grpc_app(runtime: &tokio::runtime::Runtime, callback: Callback) -> u16 {
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        tonic::transport::Server::builder()
            .add_service(AppCallbackServer::new(callback))
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    port
}

const ACL: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: grpc-callee
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
      - name: /grpc.health.v1.Health/Check
        action: allow
      - name: hello
        action: allow
      - name: typed
        action: allow
"#;

async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

#[test]
fn grpc_proxy_and_app_callback_are_judged_by_the_callee_acl() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let callback = Callback::default();
    let port = grpc_app(&runtime, callback.clone());
    let mesh = Mesh::start(&[]);
    let config = mesh.write("grpc-callee.yaml", ACL);
    let mut callee = SidecarSpec::new("callee", Some(port));
    callee.config = Some(&config);
    callee.extra = vec!["--app-protocol".into(), "grpc".into()];
    callee.env = vec![("APP_API_TOKEN".into(), "callee-own-token".into())];
    let _callee = mesh.sidecar(callee);
    let mut caller_spec = SidecarSpec::new("caller", None);
    caller_spec.env = vec![("APP_API_TOKEN".into(), "caller-token-must-not-leak".into())];
    let caller = mesh.sidecar(caller_spec);
    let grpc_addr = support::field(&caller.process.stdout_text(), "grpc");

    runtime.block_on(async {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&grpc_addr).await);
        // Proxied and allowed.
        let mut request = Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
        request.metadata_mut().insert("dapr-app-id", "callee".parse().unwrap());
        let answer = health.check(request).await.expect("proxied Check is allowed");
        assert_eq!(answer.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        // Proxied and denied by the callee's ACL: PermissionDenied, Dapr's message.
        let mut request = Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
        request.metadata_mut().insert("dapr-app-id", "callee".parse().unwrap());
        let err = health.watch(request).await.expect_err("Watch is not allowed");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("operation: /grpc.health.v1.Health/Watch"), "{}", err.message());
        // No dapr-app-id: not a Dapr method and nothing to proxy to.
        let err = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);

        // The Dapr gRPC API itself.
        let mut dapr = rt::dapr_client::DaprClient::new(channel(&grpc_addr).await);
        let metadata = dapr.get_metadata(rt::GetMetadataRequest {}).await.unwrap().into_inner();
        assert_eq!(metadata.id, "caller");
        // InvokeService to a gRPC app: delivered as OnInvoke with the callee's own token and the verified caller.
        let invoke = rt::InvokeServiceRequest {
            id: "callee".into(),
            message: Some(common::InvokeRequest {
                method: "hello".into(),
                data: Some(prost_types::Any { type_url: String::new(), value: b"ping".to_vec() }),
                content_type: "text/plain".into(),
                http_extension: Some(common::HttpExtension {
                    verb: common::http_extension::Verb::Post as i32,
                    querystring: String::new(),
                }),
            }),
        };
        let mut request = Request::new(invoke);
        request.metadata_mut().insert("dapr-caller-app-id", "admin".parse().unwrap());
        let answer = dapr.invoke_service(request).await.expect("invoke").into_inner();
        assert_eq!(answer.data.unwrap().value, b"hi:hello:ping");

        // Issue 19 row 7: the protobuf type crosses the hop both ways.
        let typed = rt::InvokeServiceRequest {
            id: "callee".into(),
            message: Some(common::InvokeRequest {
                method: "typed".into(),
                data: Some(prost_types::Any {
                    type_url: "type.googleapis.com/google.protobuf.Int32Value".into(),
                    value: vec![8, 7],
                }),
                content_type: String::new(),
                http_extension: None,
            }),
        };
        let answer = dapr.invoke_service(Request::new(typed)).await.expect("typed invoke").into_inner();
        let data = answer.data.expect("data");
        assert_eq!(data.type_url, "type.googleapis.com/google.protobuf.StringValue");
        assert_eq!(data.value, b"\n\x02ok");
    });
    let typed_seen = callback
        .seen
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m.get("x-received-type-url").is_some_and(|t| t.ends_with("Int32Value")))
        .cloned();
    assert!(typed_seen.is_some(), "the app got the request's type_url");
    let seen = callback.seen.lock().unwrap().clone();
    let last = seen.last().expect("OnInvoke was called");
    assert_eq!(last.get("dapr-api-token").map(String::as_str), Some("callee-own-token"));
    assert_eq!(last.get("dapr-caller-app-id").map(String::as_str), Some("caller"));

    // HTTP invocation to the gRPC app, and a method its ACL denies.
    let http = Http::new();
    let reply = http.send("POST", &caller.http, "/v1.0/invoke/callee/method/hello", &[], b"x".to_vec());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hi:hello:x");
    let reply = http.send("POST", &caller.http, "/v1.0/invoke/callee/method/typed", &[], vec![]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/x-protobuf", "typed protobuf over HTTP");
    let before = callback.seen.lock().unwrap().len();
    let reply = http.send("POST", &caller.http, "/v1.0/invoke/callee/method/admin", &[], vec![]);
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(callback.seen.lock().unwrap().len(), before, "a denied call never reaches the app");
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn grpc_api_requires_the_token_and_honours_the_allow_list() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mesh = Mesh::start(&[]);
    let config = mesh.write(
        "api.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  api:\n    allowed:\n      - name: metadata\n        version: v1\n        protocol: grpc\n",
    );
    let mut spec = SidecarSpec::new("guarded", None);
    spec.config = Some(&config);
    spec.env = vec![("DAPR_API_TOKEN".into(), "grpc-token-123".into())];
    let sidecar = mesh.sidecar(spec);
    let grpc_addr = support::field(&sidecar.process.stdout_text(), "grpc");
    runtime.block_on(async {
        let mut dapr = rt::dapr_client::DaprClient::new(channel(&grpc_addr).await);
        let err = dapr.get_metadata(rt::GetMetadataRequest {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "no token");
        let with = |token: &str| {
            let mut r = Request::new(rt::GetMetadataRequest {});
            r.metadata_mut().insert("dapr-api-token", token.parse().unwrap());
            r
        };
        assert_eq!(dapr.get_metadata(with("wrong")).await.unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(dapr.get_metadata(with("grpc-token-123")).await.unwrap().into_inner().id, "guarded");
        // State is not in the allow list: Unimplemented, "requested endpoint is not available".
        let mut r = Request::new(rt::GetStateRequest { store_name: "s".into(), key: "k".into(), ..Default::default() });
        r.metadata_mut().insert("dapr-api-token", "grpc-token-123".parse().unwrap());
        let err = dapr.get_state(r).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        assert!(err.message().contains("not available"), "{}", err.message());
    });
}

/// Hardening finding 5: `dapr.proto.*` services are never proxied (the app would dispatch `OnInvoke` on an inner
/// method the ACL never saw), at the caller's sidecar and again at the callee's.
#[test]
fn finding_05_the_grpc_proxy_refuses_dapr_services() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let callback = Callback::default();
    let port = grpc_app(&runtime, callback.clone());
    let mesh = Mesh::start(&[]);
    // The callee allows everything to `caller` but `admin`: the forged OnInvoke would carry method `admin`.
    let config = mesh.write(
        "grpc-callee.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: caller\n      namespace: default\n      trustDomain: public\n      defaultAction: allow\n      operations:\n      - name: admin\n        action: deny\n",
    );
    let mut callee = SidecarSpec::new("callee", Some(port));
    callee.config = Some(&config);
    callee.extra = vec!["--app-protocol".into(), "grpc".into()];
    let _callee = mesh.sidecar(callee);
    let caller = mesh.sidecar(SidecarSpec::new("caller", None));
    let grpc_addr = support::field(&caller.process.stdout_text(), "grpc");
    runtime.block_on(async {
        let mut app = rt::app_callback_client::AppCallbackClient::new(channel(&grpc_addr).await);
        let forged = common::InvokeRequest { method: "admin".into(), ..Default::default() };
        let mut request = Request::new(forged);
        request.metadata_mut().insert("dapr-app-id", "callee".parse().unwrap());
        let err = app.on_invoke(request).await.expect_err("never proxied");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        let mut request = Request::new(rt::TopicEventRequest::default());
        request.metadata_mut().insert("dapr-app-id", "callee".parse().unwrap());
        assert_eq!(app.on_topic_event(request).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    });
    assert!(callback.seen.lock().unwrap().is_empty(), "the app never received a forged OnInvoke");
}

/// Hardening finding 2 (gRPC side): an `HTTPExtension.verb` outside Dapr's enum is `InvalidArgument`, not POST.
#[test]
fn finding_02_invoke_service_refuses_an_out_of_range_verb() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mesh = Mesh::start(&[]);
    let caller = mesh.sidecar(SidecarSpec::new("caller", None));
    let grpc_addr = support::field(&caller.process.stdout_text(), "grpc");
    runtime.block_on(async {
        let mut dapr = rt::dapr_client::DaprClient::new(channel(&grpc_addr).await);
        let invoke = rt::InvokeServiceRequest {
            id: "anyone".into(),
            message: Some(common::InvokeRequest {
                method: "x".into(),
                http_extension: Some(common::HttpExtension { verb: 42, querystring: String::new() }),
                ..Default::default()
            }),
        };
        let err = dapr.invoke_service(invoke).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    });
}

/// Hardening finding 6: gRPC `InvokeService` buffers the callee's answer only up to `--max-body-size`.
#[test]
fn finding_06_invoke_service_bounds_the_answer_it_buffers() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // An HTTP app that answers 8 MiB.
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(vec![b'x'; 8 * 1024 * 1024]),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let mesh = Mesh::start(&[]);
    let _big = mesh.sidecar(SidecarSpec::new("big", Some(port)));
    let mut caller_spec = SidecarSpec::new("caller", None);
    caller_spec.extra = vec!["--max-body-size".into(), "1Mi".into()];
    let caller = mesh.sidecar(caller_spec);
    let grpc_addr = support::field(&caller.process.stdout_text(), "grpc");
    runtime.block_on(async {
        let mut dapr = rt::dapr_client::DaprClient::new(channel(&grpc_addr).await);
        let invoke = rt::InvokeServiceRequest {
            id: "big".into(),
            message: Some(common::InvokeRequest { method: "x".into(), ..Default::default() }),
        };
        let err = dapr.invoke_service(invoke).await.unwrap_err();
        assert!(err.message().contains("larger than the limit of 1048576 bytes"), "{err:?}");
    });
    // The HTTP API streams the same answer through unbuffered.
    let reply = Http::new().send("GET", &caller.http, "/v1.0/invoke/big/method/x", &[], vec![]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 8 * 1024 * 1024);
}

/// API logging is one layer for both APIs: a gRPC call is logged like an HTTP one (issue 11, item 2).
#[test]
fn api_logging_covers_grpc_calls() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mesh = Mesh::start(&[]);
    let mut spec = SidecarSpec::new("logged", None);
    spec.extra = vec!["--enable-api-logging".into()];
    let sidecar = mesh.sidecar(spec);
    let grpc_addr = support::field(&sidecar.process.stdout_text(), "grpc");
    runtime.block_on(async {
        let mut dapr = rt::dapr_client::DaprClient::new(channel(&grpc_addr).await);
        dapr.get_metadata(rt::GetMetadataRequest {}).await.unwrap();
    });
    support::eventually(Duration::from_secs(5), "the gRPC call in the API log", || {
        let log = sidecar.process.stderr_text();
        log.lines().any(|l| l.contains("/dapr.proto.runtime.v1.Dapr/GetMetadata")).then_some(())
    });
}

/// Metadata set (issue 19 row 6): `PUT /v1.0/metadata/{key}` and gRPC `SetMetadata` store a value shown under
/// `extended`; ward's own keys cannot be overwritten (an app must not make its metadata claim another identity).
#[test]
fn apps_set_their_extended_metadata_over_http_and_grpc() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mesh = Mesh::start(&[]);
    let sidecar = mesh.sidecar(SidecarSpec::new("meta", None));
    let grpc_addr = support::field(&sidecar.process.stdout_text(), "grpc");
    let http = Http::new();
    assert_eq!(http.send("PUT", &sidecar.http, "/v1.0/metadata/team", &[], b"payments".to_vec()).status, 204);
    let refused = http.send("PUT", &sidecar.http, "/v1.0/metadata/spiffeId", &[], b"spiffe://x/ns/y/admin".to_vec());
    assert_eq!(refused.status, 400, "{}", refused.text());
    runtime.block_on(async {
        let mut dapr = rt::dapr_client::DaprClient::new(channel(&grpc_addr).await);
        dapr.set_metadata(rt::SetMetadataRequest { key: "tier".into(), value: "gold".into() }).await.unwrap();
        let extended = dapr.get_metadata(rt::GetMetadataRequest {}).await.unwrap().into_inner().extended_metadata;
        assert_eq!(extended.get("team").map(String::as_str), Some("payments"));
        assert_eq!(extended.get("tier").map(String::as_str), Some("gold"));
        assert_eq!(extended.get("spiffeId").map(String::as_str), Some("spiffe://public/ns/default/meta"));
    });
    let json = http.get(&sidecar.http, "/v1.0/metadata").json();
    assert_eq!(json["extended"]["tier"], "gold");
}

/// Issue 15, layer four on gRPC app channels: the callee's sidecar sets `ward-provenance` as gRPC metadata on a
/// proxied call and on `AppCallback/OnInvoke`, and it verifies against the callee's JWKS with the full method path
/// (proxy) or the invoked method (OnInvoke) and `POST`.
#[test]
fn the_provenance_token_reaches_grpc_apps_as_metadata() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let callback = Callback::default();
    let proxied: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (record, app_callback) = (proxied.clone(), callback.clone());
    runtime.spawn(async move {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        let health = tonic::service::interceptor::InterceptedService::new(health, move |request: Request<()>| {
            let token = request.metadata().get("ward-provenance").and_then(|v| v.to_str().ok()).map(str::to_owned);
            record.lock().unwrap().push(token);
            Ok(request)
        });
        tonic::transport::Server::builder()
            .add_service(AppCallbackServer::new(app_callback))
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let mesh = Mesh::start(&[]);
    let mut callee = SidecarSpec::new("callee", Some(port));
    callee.extra = vec!["--app-protocol".into(), "grpc".into()];
    let callee = mesh.sidecar(callee);
    let caller = mesh.sidecar(SidecarSpec::new("caller", None));
    let grpc_addr = support::field(&caller.process.stdout_text(), "grpc");
    let reply = Http::new().get(&callee.http, "/v1.0-alpha1/ward/provenance/jwks");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let jwks: ward_provenance::Jwks = serde_json::from_slice(&reply.body).unwrap();

    runtime.block_on(async {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&grpc_addr).await);
        let mut request = Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
        request.metadata_mut().insert("dapr-app-id", "callee".parse().unwrap());
        request.metadata_mut().insert("ward-provenance", "forged.by.caller".parse().unwrap());
        health.check(request).await.expect("proxied");
        let mut dapr = rt::dapr_client::DaprClient::new(channel(&grpc_addr).await);
        let invoke = rt::InvokeServiceRequest {
            id: "callee".into(),
            message: Some(common::InvokeRequest {
                method: "hello".into(),
                data: None,
                content_type: String::new(),
                http_extension: Some(common::HttpExtension {
                    verb: common::http_extension::Verb::Post as i32,
                    querystring: String::new(),
                }),
            }),
        };
        dapr.invoke_service(Request::new(invoke)).await.expect("invoke");
    });
    let token = proxied.lock().unwrap().last().cloned().flatten().expect("the proxied call carries a token");
    let v = ward_provenance::verify(Some(&token), "POST", "/grpc.health.v1.Health/Check", "callee", &jwks, true)
        .expect("the proxy-path token verifies");
    assert_eq!(v.caller, "spiffe://public/ns/default/caller");
    let seen = callback.seen.lock().unwrap().clone();
    let token = seen.last().and_then(|m| m.get("ward-provenance").cloned()).expect("OnInvoke carries a token");
    let v = ward_provenance::verify(Some(&token), "POST", "/hello", "callee", &jwks, true).expect("verifies");
    assert_eq!(v.caller, "spiffe://public/ns/default/caller");
    assert!(v.capabilities.is_empty());
}

/// Issue 14: a gRPC app announces its subscriptions with `ListTopicSubscriptions` (asked with its own app token)
/// and receives events on `OnTopicEvent` with its own `APP_API_TOKEN`, the verified publisher and the data.
#[test]
fn a_grpc_app_subscribes_and_receives_topic_events_with_its_own_token() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let callback = Callback { topics: vec![("bus".into(), "orders".into())], ..Callback::default() };
    let port = grpc_app(&runtime, callback.clone());
    let mesh = Mesh::start(&[]);
    let resources = mesh.dir.path().join("resources");
    std::fs::create_dir_all(&resources).unwrap();
    std::fs::write(
        resources.join("bus.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: bus\nspec:\n  type: pubsub.in-memory\n  \
         version: v1\n  metadata: []\n",
    )
    .unwrap();
    // Tracing on (spans to stdout): the delivery's app-channel span reaches the app as `traceparent` metadata.
    let traced = mesh.write(
        "traced.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: traced\nspec:\n  tracing:\n    \
         samplingRate: \"1\"\n    stdout: true\n",
    );
    let mut spec = SidecarSpec::new("callee", Some(port));
    spec.config = Some(&traced);
    spec.extra =
        vec!["--app-protocol".into(), "grpc".into(), "--resources-path".into(), resources.to_str().unwrap().into()];
    spec.env = vec![("APP_API_TOKEN".into(), "callee-own-token".into())];
    let sidecar = mesh.sidecar(spec);
    let http = Http::new();
    support::eventually(Duration::from_secs(10), "healthz", || {
        (http.get(&sidecar.http, "/v1.0/healthz").status == 204).then_some(())
    });
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = http.send(
        "POST",
        &sidecar.http,
        "/v1.0/publish/bus/orders",
        &[("content-type", "application/json"), ("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
        br#"{"id": 5}"#.to_vec(),
    );
    assert_eq!(reply.status, 204, "{}", reply.text());
    let (metadata, event) = support::eventually(Duration::from_secs(10), "a topic event", || {
        callback.events.lock().unwrap().first().cloned()
    });
    assert_eq!(metadata.get("dapr-api-token").map(String::as_str), Some("callee-own-token"));
    assert_eq!(metadata.get("ward-publisher").map(String::as_str), Some("spiffe://public/ns/default/callee"));
    assert!(metadata.contains_key("ward-provenance"));
    let traceparent = metadata.get("traceparent").expect("the app channel's traceparent");
    assert!(traceparent.starts_with(&format!("00-{trace}-")), "{traceparent}");
    assert!(!traceparent.contains("00f067aa0ba902b7"), "a child span of its own: {traceparent}");
    assert_eq!((event.topic.as_str(), event.pubsub_name.as_str(), event.source.as_str()), ("orders", "bus", "callee"));
    assert_eq!(event.data_content_type, "application/json");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&event.data).unwrap(), serde_json::json!({"id": 5}));
}
