//! Service invocation end to end with real processes: `ward sentry`, two `ward sidecar`s with mTLS, and two
//! recording apps. Covers identity (forged headers ignored), the internal port's TLS checks, the caller's check of
//! the callee's identity, app failures, large bodies, renewal under load, access control with path tricks,
//! audit, and hot reload.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::mesh::{Http, Mesh, SidecarSpec, TestApp};
use support::{eventually, path_str, ward_output};

const ACL: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: callee-config
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
      - name: /orders/**
        httpVerb: ['GET', 'POST']
        action: allow
      - name: /public
        httpVerb: ['*']
        action: allow
"#;

struct Pair {
    mesh: Mesh,
    callee_app: TestApp,
    caller: support::mesh::SidecarProcess,
    callee: support::mesh::SidecarProcess,
    config: std::path::PathBuf,
    audit: std::path::PathBuf,
}

fn pair(sentry_args: &[&str], callee_extra: &[&str]) -> Pair {
    let mesh = Mesh::start(sentry_args);
    let callee_app = TestApp::start();
    let config = mesh.write("callee.yaml", ACL);
    let audit = mesh.dir.path().join("audit.log");
    let mut spec = SidecarSpec::new("callee", Some(callee_app.addr.port()));
    spec.config = Some(&config);
    spec.extra = vec!["--audit-log".into(), path_str(&audit).into()];
    spec.extra.extend(callee_extra.iter().map(|s| s.to_string()));
    spec.env = vec![("APP_API_TOKEN".into(), "callee-own-app-token".into())];
    let callee = mesh.sidecar(spec);
    let mut caller_spec = SidecarSpec::new("caller", None);
    caller_spec.env = vec![("APP_API_TOKEN".into(), "caller-app-token-must-not-leak".into())];
    let caller = mesh.sidecar(caller_spec);
    Pair { mesh, callee_app, caller, callee, config, audit }
}

#[test]
fn call_reaches_callee_with_the_verified_identity_and_its_own_app_token() {
    let p = pair(&[], &[]);
    let http = Http::new();
    let reply = http.send(
        "POST",
        &p.caller.http,
        "/v1.0/invoke/callee/method/orders/42?x=1",
        &[
            ("dapr-caller-app-id", "admin"),
            ("dapr-caller-namespace", "kube-system"),
            ("dapr-api-token", "caller-supplied-token"),
            ("x-custom", "kept"),
        ],
        b"hello".to_vec(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "echo:/orders/42?x=1 len=5");
    assert_eq!(reply.headers.get("x-app").map(String::as_str), Some("test"));
    let seen = p.callee_app.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(h["dapr-caller-app-id"], "caller", "identity comes from the certificate, not the forged header");
    assert_eq!(h["dapr-caller-namespace"], "default");
    assert_eq!(h["dapr-callee-app-id"], "callee");
    assert_eq!(h["dapr-api-token"], "callee-own-app-token", "the callee app gets its own sidecar's token only");
    assert_eq!(h["x-custom"], "kept");

    // The header form of invocation.
    let reply = http.send("GET", &p.caller.http, "/orders/7", &[("dapr-app-id", "callee")], Vec::new());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "echo:/orders/7 len=0");

    // Metadata and health.
    assert_eq!(http.get(&p.caller.http, "/v1.0/healthz").status, 204);
    assert_eq!(http.get(&p.caller.http, "/v1.0/healthz/outbound").status, 204);
    let metadata = http.get(&p.callee.http, "/v1.0/metadata").json();
    assert_eq!(metadata["id"], "callee");
    assert_eq!(metadata["extended"]["spiffeId"], "spiffe://public/ns/default/callee");
}

#[test]
fn access_control_denies_before_the_app_and_audits_every_decision() {
    let p = pair(&[], &[]);
    let http = Http::new();
    // Allowed.
    assert_eq!(http.send("GET", &p.caller.http, "/v1.0/invoke/callee/method/orders/1", &[], vec![]).status, 200);
    // Denied verb.
    let reply = http.send("DELETE", &p.caller.http, "/v1.0/invoke/callee/method/orders/1", &[], vec![]);
    assert_eq!(reply.status, 403, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
    assert_eq!(
        body["message"],
        "failed to invoke, id: callee, err: rpc error: code = PermissionDenied desc = access control policy has \
         denied access to id: spiffe://public/ns/default/caller operation: orders/1 verb: DELETE"
    );
    // Denied operation.
    assert_eq!(http.send("GET", &p.caller.http, "/v1.0/invoke/callee/method/admin/users", &[], vec![]).status, 403);
    // Denied caller: a valid identity with no policy gets the global default (deny).
    let stranger = p.mesh.sidecar(SidecarSpec::new("stranger", None));
    let reply = http.send("GET", &stranger.http, "/v1.0/invoke/callee/method/orders/1", &[], vec![]);
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("spiffe://public/ns/default/stranger"), "{}", reply.text());

    // Path tricks: none may reach /admin, each is refused or lands on an allowed, normalised path.
    let tricks = [
        "orders/../admin/users",
        "orders/%2e%2e/admin/users",
        "orders%2F..%2Fadmin",
        "orders%252F..%252Fadmin",
        "admin%23/orders/1",
        "admin%3F/orders/1",
        "orders/%",
        "orders\\..\\admin",
        "orders//..//admin",
        "%2e%2e/admin",
        "orders/1/../../admin",
        "orders%00/1",
    ];
    p.callee_app.clear();
    for trick in tricks {
        let reply = http.send("GET", &p.caller.http, &format!("/v1.0/invoke/callee/method/{trick}"), &[], vec![]);
        assert!(matches!(reply.status, 400 | 403 | 500), "{trick}: {} {}", reply.status, reply.text());
    }
    for seen in p.callee_app.seen() {
        assert!(!seen.path_and_query.contains("admin"), "a trick reached the app: {seen:?}");
    }
    assert!(p.callee_app.seen().is_empty(), "no trick reached the app: {:?}", p.callee_app.seen());
    // A harmless dot segment inside the allowed tree is normalised, and the app sees exactly what was judged.
    let reply = http.send("GET", &p.caller.http, "/v1.0/invoke/callee/method/orders/./a/../b", &[], vec![]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(p.callee_app.seen().last().unwrap().path_and_query, "/orders/b");

    // Audit: one line per decision, chained; editing a line breaks `ward audit verify`.
    let audit = eventually(Duration::from_secs(5), "audit lines", || {
        let text = std::fs::read_to_string(&p.audit).ok()?;
        (text.lines().count() >= 4).then_some(text)
    });
    assert!(audit.contains("AUTH_INTERNAL_ALLOW") && audit.contains("AUTH_INTERNAL_DENY"), "{audit}");
    assert!(audit.contains("spiffe://public/ns/default/caller"), "{audit}");
    assert!(audit.contains("policies[0].operations[0]"), "{audit}");
    let (code, out, _) = ward_output(&["audit", "verify", path_str(&p.audit)], &[]);
    assert_eq!(code, 0, "{out}");
    let edited = p.mesh.dir.path().join("edited.log");
    std::fs::write(&edited, audit.replacen("AUTH_INTERNAL_DENY", "AUTH_INTERNAL_ALLOW", 1)).unwrap();
    let (code, out, _) = ward_output(&["audit", "verify", path_str(&edited)], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("BROKEN"), "{out}");

    // Hot reload: allow DELETE; the running sidecar applies it without a restart.
    std::fs::write(&p.config, ACL.replace("['GET', 'POST']", "['GET', 'POST', 'DELETE']")).unwrap();
    eventually(Duration::from_secs(5), "reloaded policy", || {
        let reply = http.send("DELETE", &p.caller.http, "/v1.0/invoke/callee/method/orders/1", &[], vec![]);
        (reply.status == 200).then_some(())
    });
    // A broken file keeps the last good policy.
    std::fs::write(&p.config, "spec: [not: valid").unwrap();
    p.callee.process.wait_stderr("keeping the previous configuration", Duration::from_secs(5));
    assert_eq!(http.send("GET", &p.caller.http, "/v1.0/invoke/callee/method/admin/x", &[], vec![]).status, 403);
    assert_eq!(http.send("DELETE", &p.caller.http, "/v1.0/invoke/callee/method/orders/1", &[], vec![]).status, 200);
}

#[test]
fn app_down_and_unknown_app_answer_err_direct_invoke_and_the_sidecar_keeps_serving() {
    let mesh = Mesh::start(&[]);
    // The callee's app port has nothing listening.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _callee = mesh.sidecar(SidecarSpec::new("callee", Some(unused)));
    let caller = mesh.sidecar(SidecarSpec::new("caller", None));
    let http = Http::new();
    let reply = http.get(&caller.http, "/v1.0/invoke/callee/method/anything");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.json()["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(reply.json()["message"].as_str().unwrap().contains("callee"));
    let reply = http.get(&caller.http, "/v1.0/invoke/nobody/method/anything");
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("couldn't find service: nobody"), "{}", reply.text());
    assert_eq!(http.get(&caller.http, "/v1.0/healthz").status, 204);
    let reply = http.get(&caller.http, "/v1.0/invoke/");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["errorCode"], "ERR_DIRECT_INVOKE");
}

#[test]
fn a_ten_mebibyte_body_streams_through_and_the_limit_holds() {
    let p = pair(&[], &[]);
    let http = Http::new();
    // Default limit (4 MiB) on the caller: refused from the declared length, before any body is read.
    let big = vec![b'x'; 10 * 1024 * 1024];
    let head = raw_head(
        &p.caller.http,
        "POST /v1.0/invoke/callee/method/orders/big HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(p.callee_app.seen().is_empty());
    drop(p);

    let mesh = Mesh::start(&[]);
    let app = TestApp::start();
    let mut callee = SidecarSpec::new("callee", Some(app.addr.port()));
    callee.extra = vec!["--max-body-size".into(), "16Mi".into()];
    let _callee = mesh.sidecar(callee);
    let _small_callee = mesh.sidecar(SidecarSpec::new("small", Some(app.addr.port())));
    let mut spec = SidecarSpec::new("caller", None);
    spec.extra = vec!["--max-body-size".into(), "16Mi".into()];
    let caller = mesh.sidecar(spec);
    // The callee's own limit holds too (4 MiB by default), whatever the caller's is: it refuses from the declared
    // length, before the body is read (a raw request: an HTTP/1.1 client still writing a body it will never be
    // asked for may see a broken pipe instead of the early answer).
    let head = raw_head(
        &caller.http,
        "POST /v1.0/invoke/small/method/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(app.seen().is_empty());
    let reply = http.send("POST", &caller.http, "/v1.0/invoke/callee/method/upload", &[], big);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), format!("echo:/upload len={}", 10 * 1024 * 1024));
}

/// Writes a raw request head and returns the response head.
fn raw_head(addr: &str, head: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn internal_port_refuses_clients_without_a_valid_certificate() {
    let p = pair(&[], &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let internal: std::net::SocketAddr = p.callee.internal.parse().unwrap();
    let anchors = p.mesh.sentry.roots_pem();

    // A client that presents no certificate.
    let no_cert = tls_client(&anchors, None);
    assert!(rt.block_on(try_request(no_cert, internal)).is_err());
    // A certificate from another CA, with a perfectly good SPIFFE ID.
    let other = rcgen_ca();
    let other_leaf = leaf(&other, "spiffe://public/ns/default/caller", false);
    assert!(rt.block_on(try_request(tls_client(&anchors, Some(other_leaf)), internal)).is_err());
    // A self-signed leaf (not a CA) naming a perfectly good identity: it vouches only for itself.
    let self_signed = {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI("spiffe://public/ns/default/caller".try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.self_signed(&key).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    };
    assert!(rt.block_on(try_request(tls_client(&anchors, Some(self_signed)), internal)).is_err());
    // An expired certificate from the right CA (sentry's issuer).
    let (issuer, issuer_der) = issuer_from_dir(&p.mesh.dir.path().join("ca"));
    let mut expired = leaf(&issuer, "spiffe://public/ns/default/caller", true);
    expired.0.push(issuer_der.clone());
    assert!(rt.block_on(try_request(tls_client(&anchors, Some(expired)), internal)).is_err());
    // The same CA and a current certificate: reaches the sidecar (and its ACL), proving the negatives are
    // about the certificate.
    let mut good = leaf(&issuer, "spiffe://public/ns/default/caller", false);
    good.0.push(issuer_der);
    let status = rt.block_on(try_request(tls_client(&anchors, Some(good)), internal)).expect("valid client connects");
    assert_eq!(status, 200);
    assert_eq!(p.callee_app.seen().len(), 1);
}

#[test]
fn caller_refuses_a_callee_presenting_the_wrong_identity() {
    let p = pair(&[], &[]);
    // Register "victim" at the address of the callee sidecar, which proves spiffe://.../callee instead.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let registry = ward_components::nameresolution::SqliteRegistry::open(
            ward_components::nameresolution::RegistryOptions::new(
                p.mesh.ward_home.join("nameresolution.db").to_string_lossy().into_owned(),
            ),
        )
        .await
        .unwrap();
        let registration = registry.register("victim", "default", &p.callee.internal).await.unwrap();
        let http = Http::new();
        let reply =
            tokio::task::spawn_blocking(move || http.get(&p.caller.http, "/v1.0/invoke/victim/method/orders/1"))
                .await
                .unwrap();
        assert_eq!(reply.status, 500, "{}", reply.text());
        assert_eq!(reply.json()["errorCode"], "ERR_DIRECT_INVOKE");
        assert!(p.callee_app.seen().is_empty(), "the impostor's app was never reached");
        drop(registration);
    });
}

#[test]
fn certificate_renewal_during_a_stream_of_requests_drops_none() {
    // 6-second certificates: renewed every ~3 s while requests flow for 8 s.
    let p = pair(&["--workload-cert-ttl", "6s", "--allowed-clock-skew", "0s"], &[]);
    let http = Http::new();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let reply = http.send("POST", &p.caller.http, "/v1.0/invoke/callee/method/orders/1", &[], b"x".to_vec());
        assert_eq!(reply.status, 200, "request {sent} failed after {:?}: {}", started.elapsed(), reply.text());
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sent > 100);
    // The sidecar logs renewals at debug level (issue 24); sentry logs every certificate it issues.
    let issued =
        p.mesh.sentry.process.stderr_text().matches("issued certificate id=spiffe://public/ns/default/caller ").count();
    let renewals = issued.saturating_sub(1);
    assert!(renewals >= 2, "expected renewals during the stream, saw {renewals}");
}

// --- raw TLS helpers -----------------------------------------------------------------------------------------

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn rcgen_ca() -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Issuer::new(params, key)
}

fn issuer_from_dir(dir: &std::path::Path) -> (Issuer<'static, KeyPair>, CertificateDer<'static>) {
    let cert = std::fs::read_to_string(dir.join("issuer.crt")).unwrap();
    let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("issuer.key")).unwrap()).unwrap();
    let der = ward_identity::parse_certificates(cert.as_bytes()).unwrap().remove(0);
    (Issuer::from_ca_cert_pem(&cert, key).unwrap(), der)
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    id: &str,
    expired: bool,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::hours(3);
        params.not_after = now - time::Duration::hours(1);
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
}

/// A client that trusts the mesh's roots but accepts any server identity (we test the *server's* checks).
fn tls_client(
    anchors: &[u8],
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<rustls::ClientConfig> {
    let td = ward_identity::TrustDomain::new("public").unwrap();
    let bundle =
        ward_identity::TrustBundleHandle::new(ward_identity::TrustBundle::from_pem(td.clone(), anchors).unwrap());
    let resolver = Arc::new(ward_identity::SvidResolver::new());
    if let Some((chain, key)) = cert {
        // from_der refuses nothing about validity, so an expired leaf is still presented by a raw client.
        if let Ok(svid) = ward_identity::X509Svid::from_der(chain.clone(), key.clone_key()) {
            resolver.replace(svid);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(ward_identity::SpiffeServerVerifier::new(
            bundle,
            ward_identity::Authorizer::MemberOf(td),
            Duration::ZERO,
        ));
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        return Arc::new(config);
    }
    let config = ward_identity::client_config(
        resolver,
        bundle,
        ward_identity::Authorizer::MemberOf(td),
        Duration::ZERO,
        &[b"h2"],
    )
    .unwrap();
    Arc::new(config)
}

async fn try_request(config: Arc<rustls::ClientConfig>, addr: std::net::SocketAddr) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(rustls_pki_types::ServerName::try_from("x").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .uri(format!("https://{addr}/v1.0/internal/invoke/orders/1"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

/// Issue 19 row 11: as daprd, `/v1.0/healthz` is ready only once the app listens; `/v1.0/healthz/outbound` (what the
/// SDKs wait for before calling out) is ready as soon as the sidecar is.
#[test]
fn healthz_waits_for_the_app_and_outbound_does_not() {
    let mesh = Mesh::start(&[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sidecar = mesh.sidecar(SidecarSpec::new("late", Some(port)));
    let http = Http::new();
    let reply = http.get(&sidecar.http, "/v1.0/healthz");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.json()["errorCode"], "ERR_HEALTH_NOT_READY");
    assert_eq!(http.get(&sidecar.http, "/v1.0/healthz/outbound").status, 204);
    // The app starts listening: the next health check sees it.
    let _app = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    eventually(Duration::from_secs(5), "healthz once the app listens", || {
        (http.get(&sidecar.http, "/v1.0/healthz").status == 204).then_some(())
    });
}
