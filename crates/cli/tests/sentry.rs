//! `ward sentry` as a real process on 127.0.0.1: issuance, refusals, renewal, credential reload, and the
//! `ward mtls` commands that prepare its material.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair};
use support::{Sentry, path_str, ward_output};
use ward_identity::{SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_sentry::proto::SignCertificateRequest;
use ward_sentry::{SentryClient, SentryClientConfig};
use x509_parser::extensions::{GeneralName, ParsedExtension};

fn td() -> TrustDomain {
    TrustDomain::new("public").unwrap()
}

fn client_for(sentry: &Sentry, app_id: &str, token_file: Option<&Path>) -> SentryClient {
    let bundle = TrustBundle::from_pem(td(), &sentry.roots_pem()).unwrap();
    SentryClient::new(SentryClientConfig {
        address: sentry.grpc.clone(),
        sentry_id: SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").unwrap(),
        bundle: TrustBundleHandle::new(bundle),
        app_id: app_id.to_owned(),
        namespace: "default".to_owned(),
        trust_domain: td(),
        token_file: token_file.map(Path::to_owned),
        skew: Duration::from_secs(60),
        kubernetes: false,
        sentry_trust: None,
    })
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn csr_pem() -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap().into_bytes()
}

fn request(app_id: &str, token: &str, csr: Vec<u8>) -> SignCertificateRequest {
    SignCertificateRequest {
        id: app_id.to_owned(),
        token: token.to_owned(),
        namespace: "default".to_owned(),
        certificate_signing_request: csr,
        ..Default::default()
    }
}

#[test]
fn issues_a_spiffe_certificate_with_the_right_san_ttl_chain_and_eku() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = Sentry::start(dir.path(), &["--workload-cert-ttl", "1h", "--allowed-clock-skew", "1m"]);
    let rt = runtime();
    let _guard = rt.enter();
    let (svid, bundle) = rt.block_on(client_for(&sentry, "orders", None).fetch()).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), "spiffe://public/ns/default/orders");
    assert_eq!(bundle.unwrap().roots().len(), 1);

    let chain = svid.chain();
    assert_eq!(chain.len(), 2, "leaf + issuer");
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(lifetime, 3600 + 60, "TTL plus the backdated skew");
    assert!(!leaf.basic_constraints().unwrap().is_some_and(|bc| bc.value.ca));
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let mut uris = Vec::new();
    for ext in leaf.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push(uri.to_string()),
                    other => panic!("unexpected SAN {other:?}"),
                }
            }
        }
    }
    assert_eq!(uris, ["spiffe://public/ns/default/orders"]);
    assert!(leaf.subject().iter_attributes().next().is_none(), "no subject");
    let (_, issuer) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
    assert!(leaf.verify_signature(Some(issuer.public_key())).is_ok());

    // healthz answers 200 while the CA can sign.
    let status = rt.block_on(http_status(&sentry.healthz, "/healthz"));
    assert_eq!(status, 200);
}

async fn http_status(addr: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn refuses_bad_csrs_and_bad_identities() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = Sentry::start(dir.path(), &[]);
    let rt = runtime();
    let _guard = rt.enter();
    let client = client_for(&sentry, "orders", None);
    let call = |req: SignCertificateRequest| rt.block_on(client.grpc().sign_certificate(req)).unwrap_err();

    let err = call(request("orders", "", b"not a csr".to_vec()));
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "invalid certificate signing request");

    // A CSR whose signature does not match its key: flip a byte of the signature.
    let pem = String::from_utf8(csr_pem()).unwrap();
    let der = rustls_pem_to_der(&pem);
    let mut tampered = der.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 0xff;
    let tampered_pem = ward_identity::pem_encode("CERTIFICATE REQUEST", &tampered);
    let err = call(request("orders", "", tampered_pem.into_bytes()));
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    for (app_id, why) in [("", "empty"), ("a.b", "dot"), (&"x".repeat(65), "too long"), ("dapr-sentry", "sentry")] {
        let err = call(request(app_id, "", csr_pem()));
        assert!(matches!(err.code(), tonic::Code::InvalidArgument | tonic::Code::PermissionDenied), "{why}: {err:?}");
    }
    let mut other_td = request("orders", "", csr_pem());
    other_td.trust_domain = "evil".to_owned();
    let err = call(other_td);
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not served by this sentry"), "{}", err.message());

    let mut missing_ns = request("orders", "", csr_pem());
    missing_ns.namespace.clear();
    assert_eq!(call(missing_ns).code(), tonic::Code::InvalidArgument);
}

fn rustls_pem_to_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap().as_ref().to_vec()
}

#[test]
fn join_tokens_bind_identities() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "default/orders orders-token-0123456789\ndefault/billing billing-token-0123456789\n")
        .unwrap();
    let ca_dir = dir.path().join("ca");
    let sentry = Sentry::start(&ca_dir, &["--token-validator", "join-token", "--join-tokens", path_str(&tokens)]);
    let rt = runtime();
    let _guard = rt.enter();

    let own = dir.path().join("orders.token");
    std::fs::write(&own, "orders-token-0123456789\n").unwrap();
    let (svid, _) = rt.block_on(client_for(&sentry, "orders", Some(&own)).fetch()).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), "spiffe://public/ns/default/orders");

    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-right-token-000000").unwrap();
    let err = rt.block_on(client_for(&sentry, "orders", Some(&wrong)).fetch()).unwrap_err();
    assert!(matches!(&err, ward_sentry::ClientError::Refused(s) if s.code() == tonic::Code::PermissionDenied), "{err}");

    // billing's token does not buy the orders identity.
    let billing = dir.path().join("billing.token");
    std::fs::write(&billing, "billing-token-0123456789").unwrap();
    let err = rt.block_on(client_for(&sentry, "orders", Some(&billing)).fetch()).unwrap_err();
    assert!(matches!(&err, ward_sentry::ClientError::Refused(s) if s.code() == tonic::Code::PermissionDenied), "{err}");

    let err = rt.block_on(client_for(&sentry, "orders", None).fetch()).unwrap_err();
    assert!(err.to_string().contains("no token"), "{err}");
    // Refusals are logged without the token.
    assert!(!sentry.process.stderr_text().contains("billing-token-0123456789"));
}

#[test]
fn insecure_validator_is_refused_in_production() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = ward_output(
        &["sentry", "--issuer-credentials", path_str(dir.path()), "--port", "0", "--healthz-port", "0", "--production"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("insecure token validator"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one readable line: {stderr}");
}

#[test]
fn client_renews_a_ten_second_certificate_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = Sentry::start(dir.path(), &["--workload-cert-ttl", "10s", "--allowed-clock-skew", "0s"]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let supervisor = client_for(&sentry, "orders", None).start().await.unwrap();
        let resolver = supervisor.resolver();
        let first = resolver.current().unwrap();
        let first_expiry = first.not_after();
        let renewed = tokio::time::timeout(Duration::from_secs(9), async {
            loop {
                let current = resolver.current().unwrap();
                if current.not_after() > first_expiry {
                    return current;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("renewed within the certificate's lifetime");
        assert!(SystemTime::now() < first_expiry, "renewal happened before expiry");
        assert_eq!(renewed.spiffe_id(), first.spiffe_id());
    });
}

#[test]
fn sentry_reloads_renewed_credentials_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (code, out, err) = ward_output(&["mtls", "init", "--dir", path_str(&ca), "--valid-for", "48h"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let sentry = Sentry::start(&ca, &[]);
    let rt = runtime();
    let _guard = rt.enter();
    let old_bundle = sentry.roots_pem();
    let old_client = client_for(&sentry, "orders", None);
    let (before, _) = rt.block_on(old_client.fetch()).unwrap();

    // Same root key: a client holding only the old root still verifies sentry and the new leaves.
    let (code, out, err) = ward_output(
        &["mtls", "renew-certificate", "--dir", path_str(&ca), "--keep-root-key", "--valid-until", "30"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    sentry.process.wait_stderr("issuer credentials changed; reloaded", Duration::from_secs(10));
    let (after, _) = rt.block_on(old_client.fetch()).unwrap();
    assert_ne!(before.chain()[1], after.chain()[1], "signed by the new issuer");
    let old_roots = TrustBundle::from_pem(td(), &old_bundle).unwrap();
    let verified = ward_identity::verify_svid(
        &old_roots,
        &after.chain()[0],
        &after.chain()[1..],
        rustls_pki_types::UnixTime::now(),
        Duration::ZERO,
        ward_identity::Usage::Client,
    );
    assert!(verified.is_ok(), "old root trusts the new issuer: {verified:?}");
    drop(sentry);

    // A restart on the same directory serves the renewed material.
    let sentry = Sentry::start(&ca, &[]);
    let (again, _) = rt.block_on(client_for(&sentry, "orders", None).fetch()).unwrap();
    assert_eq!(again.chain()[1], after.chain()[1]);
}

#[test]
fn mtls_commands() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (code, _, _) = ward_output(&["mtls", "init", "--dir", path_str(&ca), "--valid-for", "240h"], &[]);
    assert_eq!(code, 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca.join("issuer.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The issuer is an intermediate with pathlen 0, signed by the root.
    let issuer_pem = std::fs::read(ca.join("issuer.crt")).unwrap();
    let issuer_der = ward_identity::parse_certificates(&issuer_pem).unwrap().remove(0);
    let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der).unwrap();
    let bc = issuer.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));

    let (code, _, stderr) = ward_output(&["mtls", "init", "--dir", path_str(&ca)], &[]);
    assert_ne!(code, 0, "refuses to overwrite");
    assert!(stderr.contains("--force"), "{stderr}");
    let (code, _, _) = ward_output(&["mtls", "init", "--dir", path_str(&ca), "--force", "--valid-for", "240h"], &[]);
    assert_eq!(code, 0);

    // 10 days left: fine with --warn-days 5, exit 2 with --warn-days 30.
    let (code, out, _) = ward_output(&["mtls", "expiry", "--dir", path_str(&ca), "--warn-days", "5"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("days until expiry"), "{out}");
    let (code, out, _) = ward_output(&["mtls", "expiry", "--dir", path_str(&ca)], &[]);
    assert_eq!(code, 2, "{out}");

    let out_dir = dir.path().join("exported");
    let (code, _, _) = ward_output(&["mtls", "export", "--dir", path_str(&ca), "--out", path_str(&out_dir)], &[]);
    assert_eq!(code, 0);
    for file in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert_eq!(std::fs::read(ca.join(file)).unwrap(), std::fs::read(out_dir.join(file)).unwrap());
    }
    assert!(!out_dir.join("ca.key").exists(), "the root key is not exported");

    // A new root key: the bundle holds the new root and the old one.
    let (code, _, _) =
        ward_output(&["mtls", "renew-certificate", "--dir", path_str(&ca), "--valid-until", "720h"], &[]);
    assert_eq!(code, 0);
    let roots = ward_identity::parse_certificates(&std::fs::read(ca.join("ca.crt")).unwrap()).unwrap();
    assert_eq!(roots.len(), 2);
    let (code, out, _) = ward_output(&["mtls", "expiry", "--dir", path_str(&ca), "--warn-days", "5"], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("root (").count(), 2, "{out}");
}

fn refused(err: &ward_sentry::ClientError) -> bool {
    matches!(err, ward_sentry::ClientError::Refused(s) if s.code() == tonic::Code::PermissionDenied)
}

/// Row 12: a join token buys exactly one certificate, also across a sentry restart.
#[test]
fn a_join_token_is_consumed_by_its_first_csr_also_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "default/orders orders-token-0123456789\n").unwrap();
    let ca_dir = dir.path().join("ca");
    let args = ["--token-validator", "join-token", "--join-tokens", path_str(&tokens)];
    let sentry = Sentry::start(&ca_dir, &args);
    let rt = runtime();
    let _guard = rt.enter();
    let token_file = dir.path().join("orders.token");
    std::fs::write(&token_file, "orders-token-0123456789").unwrap();
    let (svid, _) = rt.block_on(client_for(&sentry, "orders", Some(&token_file)).fetch()).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), "spiffe://public/ns/default/orders");

    // Someone who copied the token before it was used tries it again.
    std::fs::write(&token_file, "orders-token-0123456789").unwrap();
    let err = rt.block_on(client_for(&sentry, "orders", Some(&token_file)).fetch()).unwrap_err();
    assert!(refused(&err), "a used token is refused: {err}");
    drop(sentry);

    let sentry = Sentry::start(&ca_dir, &args);
    std::fs::write(&token_file, "orders-token-0123456789").unwrap();
    let err = rt.block_on(client_for(&sentry, "orders", Some(&token_file)).fetch()).unwrap_err();
    assert!(refused(&err), "still refused after a restart: {err}");
    assert!(!sentry.process.stderr_text().contains("orders-token-0123456789"), "the token is never logged");
}

/// Row 12: the token file is removed once used, and renewals authenticate with the current SVID instead.
#[test]
fn renewal_authenticates_with_the_svid_after_the_token_file_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "default/orders orders-token-0123456789\n").unwrap();
    let sentry = Sentry::start(
        &dir.path().join("ca"),
        &[
            "--token-validator",
            "join-token",
            "--join-tokens",
            path_str(&tokens),
            "--workload-cert-ttl",
            "6s",
            "--allowed-clock-skew",
            "0s",
        ],
    );
    let token_file = dir.path().join("orders.token");
    std::fs::write(&token_file, "orders-token-0123456789").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let supervisor = client_for(&sentry, "orders", Some(&token_file)).start().await.unwrap();
        assert!(!token_file.exists(), "the join token file is removed once used");
        let resolver = supervisor.resolver();
        let first = resolver.current().unwrap();
        let renewed = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                let current = resolver.current().unwrap();
                if current.not_after() > first.not_after() {
                    return current;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("renewed with the SVID, without a token");
        assert_eq!(renewed.spiffe_id(), first.spiffe_id());
    });
}

/// A self-signed CA certificate nobody configured (a rogue root a compromised sentry might hand out).
fn rogue_root_pem() -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "rogue root");
    params.self_signed(&key).unwrap().pem()
}

/// "Also close": a sentry that hands out a bundle with a root nobody configured does not widen the client's trust.
#[test]
fn a_bundle_that_widens_trust_is_refused_by_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (code, out, err) = ward_output(&["mtls", "init", "--dir", path_str(&ca), "--valid-for", "48h"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let configured = std::fs::read(ca.join("ca.crt")).unwrap();
    let mut widened = configured.clone();
    widened.extend_from_slice(rogue_root_pem().as_bytes());
    std::fs::write(ca.join("ca.crt"), &widened).unwrap();
    let sentry = Sentry::start(&ca, &[]);
    let rt = runtime();
    let _guard = rt.enter();
    let bundle = TrustBundleHandle::new(TrustBundle::from_pem(td(), &configured).unwrap());
    let client = SentryClient::new(SentryClientConfig {
        address: sentry.grpc.clone(),
        sentry_id: SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").unwrap(),
        bundle: bundle.clone(),
        app_id: "orders".to_owned(),
        namespace: "default".to_owned(),
        trust_domain: td(),
        token_file: None,
        skew: Duration::from_secs(60),
        kubernetes: false,
        sentry_trust: None,
    })
    .unwrap();
    let supervisor = rt.block_on(client.start()).unwrap();
    assert!(supervisor.resolver().current().is_some(), "the SVID itself chains to the configured root");
    assert_eq!(bundle.load().roots().len(), 1, "the rogue root was not adopted");
    assert_eq!(bundle.load().to_pem().as_bytes(), configured.as_slice());
}

/// Row 13: the jwks validator does not start without an issuer to check.
#[test]
fn jwks_without_an_issuer_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let base = ["sentry", "--issuer-credentials", path_str(dir.path()), "--port", "0", "--healthz-port", "0"];
    let mut args = base.to_vec();
    args.extend(["--token-validator", "jwks", "--jwks", path_str(&jwks)]);
    let (code, _, stderr) = ward_output(&args, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--jwks-issuer"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one readable line: {stderr}");

    let mut args = base.to_vec();
    args.extend(["--jwks-issuer", "https://idp.example"]);
    let (code, _, stderr) = ward_output(&args, &[]);
    assert_ne!(code, 0, "a jwks flag without the jwks validator is refused, not ignored");
    assert!(stderr.contains("--token-validator jwks"), "{stderr}");
}

/// Reads from `stream` until the server closes it; returns how long that took. Panics after `max`.
fn time_until_closed(stream: &mut std::net::TcpStream, max: Duration) -> Duration {
    use std::io::Read;
    let start = std::time::Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return start.elapsed(),
        }
        assert!(start.elapsed() < max, "the server kept the connection open for {max:?}");
    }
}

/// Row 7, sentry's listeners: a half-sent request, a silent TLS client and an idle keep-alive connection are
/// closed within the configured limits, on both ports.
#[test]
fn sentry_listeners_close_slow_silent_and_idle_clients() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let sentry = Sentry::start(
        dir.path(),
        &["--handshake-timeout", "1s", "--header-read-timeout", "1s", "--idle-timeout", "2s"],
    );
    let max = Duration::from_secs(6);

    // healthz: request headers that never end.
    let mut slow = std::net::TcpStream::connect(&sentry.healthz).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let took = time_until_closed(&mut slow, max);
    assert!(took >= Duration::from_millis(800), "closed by the header-read timeout, not before: {took:?}");

    // healthz: a keep-alive connection that answered one request and then goes quiet.
    let mut idle = std::net::TcpStream::connect(&sentry.healthz).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(idle.read(&mut byte).unwrap(), 1, "response ended early");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    let took = time_until_closed(&mut idle, max);
    assert!(took >= Duration::from_millis(1500), "closed by the idle timeout: {took:?}");

    // gRPC: a TCP connection that never starts the TLS handshake.
    let mut silent = std::net::TcpStream::connect(&sentry.grpc).unwrap();
    let took = time_until_closed(&mut silent, max);
    assert!(took >= Duration::from_millis(800), "{took:?}");

    // gRPC: a finished TLS handshake and then no HTTP/2 preface.
    let rt = runtime();
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let bundle = TrustBundleHandle::new(TrustBundle::from_pem(td(), &sentry.roots_pem()).unwrap());
        let tls = ward_identity::client_config(
            std::sync::Arc::new(ward_identity::SvidResolver::new()),
            bundle,
            ward_identity::Authorizer::Exact(SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").unwrap()),
            Duration::from_secs(60),
            &[b"h2"],
        )
        .unwrap();
        let tcp = tokio::net::TcpStream::connect(&sentry.grpc).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("dapr-sentry").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)).connect(name, tcp).await.unwrap();
        let start = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(max, async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a TLS client that sends no request was kept open for {max:?}");
        assert!(start.elapsed() >= Duration::from_millis(800), "{:?}", start.elapsed());
    });

    // The CA still serves after all that.
    let _guard = rt.enter();
    rt.block_on(client_for(&sentry, "orders", None).fetch()).unwrap();
}

/// Row 7, sentry's listeners: beyond --max-connections a connection is closed at accept; the open ones work.
#[test]
fn sentry_listeners_cap_connections() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let sentry = Sentry::start(dir.path(), &["--max-connections", "1"]);
    let mut first = std::net::TcpStream::connect(&sentry.healthz).unwrap();
    // Make sure the first connection is accepted before the second arrives.
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let mut second = std::net::TcpStream::connect(&sentry.healthz).unwrap();
    let _ = second.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let took = time_until_closed(&mut second, Duration::from_secs(3));
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (code, _, stderr) = ward_output(
        &[
            "sentry",
            "--issuer-credentials",
            path_str(dir.path()),
            "--port",
            "0",
            "--healthz-port",
            "0",
            "--idle-timeout",
            "0s",
        ],
        &[],
    );
    assert_ne!(code, 0, "a zero timeout switches a protection off and is refused");
    assert!(stderr.contains("idle timeout"), "{stderr}");
}

/// A P-256 key as (JWKS JSON, encoding key), generated in the test.
fn ec_jwks() -> (String, jsonwebtoken::EncodingKey) {
    use base64::Engine;
    let key = KeyPair::generate().unwrap();
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let point = &spki[spki.len() - 65..];
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..65])}]});
    (jwks.to_string(), encoding)
}

/// Row 13 end to end: a sentry with the jwks validator issues for a JWT from the configured issuer and refuses
/// one from another issuer or with too long a lifetime; the client keeps a JWT file (it is not single-use).
#[test]
fn jwks_validator_checks_issuer_and_lifetime_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (jwks, key) = ec_jwks();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let sentry = Sentry::start(
        &dir.path().join("ca"),
        &[
            "--token-validator",
            "jwks",
            "--jwks",
            path_str(&jwks_file),
            "--jwks-issuer",
            "https://idp.example",
            "--jwks-max-token-lifetime",
            "10m",
        ],
    );
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let jwt = |iss: &str, lifetime: u64| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".to_owned());
        let claims = serde_json::json!({"iss": iss, "sub": "spiffe://public/ns/default/orders",
            "aud": "spiffe://public/ns/default/dapr-sentry", "iat": now, "exp": now + lifetime});
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let rt = runtime();
    let _guard = rt.enter();
    let token_file = dir.path().join("orders.jwt");

    std::fs::write(&token_file, jwt("https://idp.example", 300)).unwrap();
    let (svid, _) = rt.block_on(client_for(&sentry, "orders", Some(&token_file)).fetch()).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), "spiffe://public/ns/default/orders");
    assert!(token_file.exists(), "a JWT file is kept (it is re-read, and rotated by its issuer)");

    for (token, why) in
        [(jwt("https://evil.example", 300), "another issuer"), (jwt("https://idp.example", 3600), "1h > 10m")]
    {
        std::fs::write(&token_file, token).unwrap();
        let err = rt.block_on(client_for(&sentry, "orders", Some(&token_file)).fetch()).unwrap_err();
        assert!(refused(&err), "{why}: {err}");
    }
}

/// Issue 26 defect 1, on a real `ward sentry`: a namespace-wildcard join token for `default` does not buy
/// `spiffe://public/ns/default/x/ns/prod/admin`, and the insecure validator does not sign namespace `a/b`; both are
/// `InvalidArgument` naming the field, and the join token stays unspent.
#[test]
fn identities_with_a_slash_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "default/* default-ns-token-0123456789\n").unwrap();
    let join = Sentry::start(
        &dir.path().join("join"),
        &["--token-validator", "join-token", "--join-tokens", path_str(&tokens)],
    );
    let rt = runtime();
    let _guard = rt.enter();
    let client = client_for(&join, "orders", None);
    let err = rt
        .block_on(client.grpc().sign_certificate(request("x/ns/prod/admin", "default-ns-token-0123456789", csr_pem())))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("invalid app_id"), "{}", err.message());
    // The token was not spent by the refused request.
    let ok = rt.block_on(client.grpc().sign_certificate(request("orders", "default-ns-token-0123456789", csr_pem())));
    assert!(ok.is_ok(), "{ok:?}");

    let insecure = Sentry::start(&dir.path().join("insecure"), &[]);
    let client = client_for(&insecure, "orders", None);
    let mut req = request("allowed-app", "", csr_pem());
    req.namespace = "a/b".to_owned();
    let err = rt.block_on(client.grpc().sign_certificate(req)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("invalid namespace"), "{}", err.message());
}
