//! The serving certificate from sentry (`ServingCert::Sentry`): the injector asks a real in-process sentry for
//! `spiffe://<cp-td>/ns/<cp-ns>/dapr-injector` with its token file, serves that SVID, and a client that trusts only
//! sentry's roots and accepts only that SPIFFE ID gets reviews answered over it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use ward_identity::{Authorizer, SpiffeId, SvidResolver, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_injector::{Injector, InjectorConfig, ServeOptions, ServingCert};
use ward_sentry::{Ca, SentryConfig, Validator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injector_serves_the_svid_sentry_issued_it() {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::new("cluster.local").unwrap();
    let ca = Ca::new(
        SentryConfig {
            issuer_dir: dir.path().join("ca"),
            trust_domain: td.clone(),
            namespace: "dapr-system".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            healthz_listen: "127.0.0.1:0".parse().unwrap(),
            workload_ttl: Duration::from_secs(3600),
            allowed_clock_skew: Duration::from_secs(60),
            generated_ca_ttl: Duration::from_secs(86_400),
            production: false,
            limits: ward_net::ListenerLimits::default(),
            metrics: None,
        },
        // Which caller may have `dapr-injector` is the Kubernetes validator's business (issue 22, the lead's
        // part); this test is about the injector's side of the exchange.
        Validator::Insecure,
    )
    .unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sentry = tokio::spawn(ward_sentry::run(
        Arc::new(ca),
        async move {
            let _ = stop_rx.await;
        },
        move |addrs| {
            let _ = ready_tx.send(addrs);
        },
    ));
    let addrs = tokio::time::timeout(Duration::from_secs(10), ready_rx).await.unwrap().unwrap();
    let anchors = std::fs::read(dir.path().join("ca").join("ca.crt")).unwrap();
    let token = dir.path().join("token");
    // Against this insecure sentry the client runs in its non-Kubernetes mode (`false` below) with a token that is
    // not JWT-shaped (a JWT would be sent to the JWKS validator, which this sentry does not run). The Kubernetes
    // validator with a real pod-bound token: `ward`'s tests/injector.rs.
    std::fs::write(&token, "test-token").unwrap();

    let config = InjectorConfig::default();
    let client =
        ward_injector::sentry_client_config(&config, addrs.grpc.to_string(), &anchors, token.clone(), false).unwrap();
    let injector = Injector::start(ServeOptions {
        config,
        listen: "127.0.0.1:0".parse().unwrap(),
        healthz_listen: "127.0.0.1:0".parse().unwrap(),
        serving: ServingCert::Sentry(client),
        limits: ward_net::ListenerLimits::default(),
        ca_bundle: None,
    })
    .await
    .expect("injector starts with a certificate from sentry");

    // A client that accepts exactly the injector's SPIFFE ID, chained to sentry's roots.
    let expected = SpiffeId::dapr(&td, "dapr-system", "dapr-injector").unwrap();
    let bundle = TrustBundleHandle::new(TrustBundle::from_pem(td.clone(), &anchors).unwrap());
    let tls = ward_identity::client_config(
        Arc::new(SvidResolver::new()),
        bundle,
        Authorizer::Exact(expected),
        Duration::from_secs(60),
        &[b"http/1.1"],
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(injector.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("dapr-sidecar-injector.dapr-system.svc").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.expect("SPIFFE-verified TLS");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let pod = serde_json::json!({"metadata": {"name": "orders-0", "annotations": {"dapr.io/enabled": "true"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
    let request = http::Request::post("/mutate")
        .header(http::header::HOST, "dapr-sidecar-injector.dapr-system.svc")
        .body(Full::new(Bytes::from(common::review_body("shop", &pod))))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true);

    // A client expecting another identity refuses this server.
    let other = SpiffeId::dapr(&td, "dapr-system", "dapr-sentry").unwrap();
    let bundle = TrustBundleHandle::new(TrustBundle::from_pem(td, &anchors).unwrap());
    let tls = ward_identity::client_config(
        Arc::new(SvidResolver::new()),
        bundle,
        Authorizer::Exact(other),
        Duration::from_secs(60),
        &[b"http/1.1"],
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(injector.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("dapr-sidecar-injector.dapr-system.svc").unwrap();
    assert!(tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.is_err());

    injector.shutdown().await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), sentry).await;
}
