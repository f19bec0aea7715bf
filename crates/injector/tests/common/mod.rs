//! Shared by the injector's integration tests: a throwaway PKI (rcgen), an in-process injector on 127.0.0.1:0,
//! and a small HTTPS client that trusts only the test CA.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use ward_injector::{CaBundleSync, Injector, InjectorConfig, ServeOptions};

/// A CA and a serving certificate it signed (IP SAN 127.0.0.1, so the API server accepts it for a URL webhook).
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, format!("{name} test root"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let (cert_pem, key_pem) = leaf(&issuer);
        Pki { ca_pem: ca_cert.pem(), cert_pem, key_pem, issuer }
    }

    /// Another serving certificate from the same CA.
    pub fn reissue(&self) -> (String, String) {
        leaf(&self.issuer)
    }

    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

fn leaf(issuer: &rcgen::Issuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![
        "dapr-sidecar-injector.dapr-system.svc".to_owned(),
        "dapr-sidecar-injector.dapr-system.svc.cluster.local".to_owned(),
    ])
    .unwrap();
    params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name.push(DnType::CommonName, "dapr-sidecar-injector");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Starts an injector in this process, serving `pki`'s certificate from files in `dir`.
pub async fn start_injector(
    config: InjectorConfig,
    pki: &Pki,
    dir: &Path,
    ca_bundle: Option<CaBundleSync>,
) -> Injector {
    let (cert, key) = pki.write(dir);
    Injector::start(ServeOptions {
        config,
        listen: "127.0.0.1:0".parse().unwrap(),
        healthz_listen: "127.0.0.1:0".parse().unwrap(),
        serving: ward_injector::ServingCert::Files { cert, key },
        limits: ward_net::ListenerLimits::default(),
        ca_bundle,
    })
    .await
    .expect("injector starts")
}

/// An HTTPS connection to `addr` trusting only `ca_pem`, HTTP/1.1. Returns the sender and the leaf the server
/// presented.
pub async fn connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> (hyper::client::conn::http1::SendRequest<Full<Bytes>>, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.expect("TLS handshake");
    let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    (sender, leaf)
}

/// One POST on an open connection; the status and body.
pub async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    // HTTP/1.1: the previous exchange must be finished before the next request goes out.
    sender.ready().await.expect("connection ready");
    let request = http::Request::post(path)
        .header(http::header::HOST, "127.0.0.1")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("answer in time")
        .expect("answer");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

/// A v1 AdmissionReview for creating `pod` in `namespace`.
pub fn review_body(namespace: &str, pod: &serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "7d2f0c2e-1111-4222-8333-444455556666",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"], "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "bench"}, "object": pod, "oldObject": null, "dryRun": false
        }
    })
    .to_string()
    .into_bytes()
}
