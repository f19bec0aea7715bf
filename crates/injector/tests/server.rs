//! The HTTPS server on its own (no API server): bad bodies get a 400 and the server keeps serving, bodies are
//! bounded, the serving certificate is reloaded from its files, `/healthz` answers on its own port.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ward_injector::InjectorConfig;

fn annotated_pod() -> Value {
    json!({"metadata": {"name": "orders-0", "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
}

#[tokio::test]
async fn malformed_reviews_get_400_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new("server");
    let injector = common::start_injector(InjectorConfig::default(), &pki, dir.path(), None).await;
    let (mut conn, _) = common::connect(injector.addr, &pki.ca_pem).await;

    for bad in
        [&b"not json"[..], b"{}", b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", b"[1,2"]
    {
        let (status, body) = common::post(&mut conn, "/mutate", bad.to_vec()).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(!body.is_empty());
    }
    // The same connection, then a new one, still get real answers.
    let (status, body) = common::post(&mut conn, "/mutate", common::review_body("shop", &annotated_pod())).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert_eq!(answer["response"]["uid"], "7d2f0c2e-1111-4222-8333-444455556666");

    let (mut conn, _) = common::connect(injector.addr, &pki.ca_pem).await;
    let (status, _) = common::post(&mut conn, "/other", b"{}".to_vec()).await;
    assert_eq!(status, 404);
    let too_big = vec![b' '; ward_injector::MAX_REVIEW_BYTES + 1];
    let (status, _) = common::post(&mut conn, "/mutate", too_big).await;
    assert_eq!(status, 413);
    let (mut conn, _) = common::connect(injector.addr, &pki.ca_pem).await;
    let (status, _) = common::post(&mut conn, "/mutate", common::review_body("shop", &annotated_pod())).await;
    assert_eq!(status, 200);

    // Health on its own plain-HTTP port.
    let mut health = tokio::net::TcpStream::connect(injector.healthz_addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    health.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), health.read_to_string(&mut text)).await.unwrap().unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    injector.shutdown().await;
}

#[tokio::test]
async fn a_renewed_serving_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new("reload");
    let injector = common::start_injector(InjectorConfig::default(), &pki, dir.path(), None).await;
    let (_, first) = common::connect(injector.addr, &pki.ca_pem).await;
    let (cert, key) = pki.reissue();
    // Key first, then certificate: the half-written state (new key, old cert) must not be served.
    std::fs::write(dir.path().join("tls.key"), &key).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, leaf) = common::connect(injector.addr, &pki.ca_pem).await;
        if leaf != first {
            let expected = rustls_pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
                .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
                .unwrap();
            assert_eq!(leaf, expected);
            break;
        }
        assert!(Instant::now() < deadline, "new certificate not served within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken pair keeps the last good one.
    std::fs::write(dir.path().join("tls.crt"), "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, leaf) = common::connect(injector.addr, &pki.ca_pem).await;
    assert_ne!(leaf, first);
    injector.shutdown().await;
}
