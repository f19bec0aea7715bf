//! The verifier table: every way a peer certificate can be wrong, checked through `verify_svid` (exact error
//! variants) and through a real rustls handshake in memory (the verifier is actually wired in).

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use time::OffsetDateTime;
use ward_identity::{
    Authorizer, SpiffeId, SvidResolver, TrustBundle, TrustBundleHandle, TrustDomain, Usage, VerifyError, X509Svid,
    client_config, server_config, verify_svid,
};

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(365);
    let cert = params.self_signed(&key).unwrap();
    Ca { cert: cert.der().clone(), issuer: Issuer::new(params, key) }
}

struct Leaf {
    sans: Vec<SanType>,
    ca: bool,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    ekus: Vec<ExtendedKeyUsagePurpose>,
}

impl Leaf {
    fn spiffe(id: &str) -> Self {
        Self {
            sans: vec![SanType::URI(id.try_into().unwrap())],
            ca: false,
            not_before: OffsetDateTime::now_utc() - time::Duration::minutes(5),
            not_after: OffsetDateTime::now_utc() + time::Duration::hours(1),
            ekus: vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        }
    }

    fn issue(self, ca: &Ca) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = self.sans;
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.extended_key_usages = self.ekus;
        params.is_ca = if self.ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.der().clone(), key)
    }
}

fn td() -> TrustDomain {
    TrustDomain::new("public").unwrap()
}

fn bundle(ca: &Ca) -> TrustBundle {
    TrustBundle::new(td(), vec![ca.cert.clone()]).unwrap()
}

const ID: &str = "spiffe://public/ns/default/orders";

fn check(trusted: &Ca, signer: &Ca, leaf: Leaf, skew: Duration) -> Result<SpiffeId, VerifyError> {
    let (cert, _) = leaf.issue(signer);
    verify_svid(&bundle(trusted), &cert, &[], UnixTime::now(), skew, Usage::Client)
}

#[test]
fn verifier_table() {
    let root = ca("root");
    let other = ca("other");
    let now = OffsetDateTime::now_utc();
    let uri = |s: &str| SanType::URI(s.try_into().unwrap());

    struct Case {
        name: &'static str,
        leaf: Leaf,
        signer: &'static str,
        skew: Duration,
        expect: Result<&'static str, fn(&VerifyError) -> bool>,
    }
    let cases = vec![
        Case { name: "good", leaf: Leaf::spiffe(ID), signer: "root", skew: Duration::ZERO, expect: Ok(ID) },
        Case {
            name: "expired",
            leaf: Leaf {
                not_before: now - time::Duration::hours(3),
                not_after: now - time::Duration::hours(1),
                ..Leaf::spiffe(ID)
            },
            signer: "root",
            skew: Duration::from_secs(60),
            expect: Err(|e| matches!(e, VerifyError::Expired { .. })),
        },
        Case {
            name: "expired within skew",
            leaf: Leaf {
                not_before: now - time::Duration::hours(3),
                not_after: now - time::Duration::minutes(2),
                ..Leaf::spiffe(ID)
            },
            signer: "root",
            skew: Duration::from_secs(15 * 60),
            expect: Ok(ID),
        },
        Case {
            name: "not yet valid",
            leaf: Leaf {
                not_before: now + time::Duration::hours(1),
                not_after: now + time::Duration::hours(3),
                ..Leaf::spiffe(ID)
            },
            signer: "root",
            skew: Duration::from_secs(60),
            expect: Err(|e| matches!(e, VerifyError::NotValidYet { .. })),
        },
        Case {
            name: "not yet valid within skew",
            leaf: Leaf {
                not_before: now + time::Duration::minutes(2),
                not_after: now + time::Duration::hours(3),
                ..Leaf::spiffe(ID)
            },
            signer: "root",
            skew: Duration::from_secs(15 * 60),
            expect: Ok(ID),
        },
        Case {
            name: "other CA",
            leaf: Leaf::spiffe(ID),
            signer: "other",
            skew: Duration::ZERO,
            expect: Err(|e| matches!(e, VerifyError::UnknownIssuer { .. })),
        },
        Case {
            name: "CA as leaf",
            leaf: Leaf { ca: true, ..Leaf::spiffe(ID) },
            signer: "root",
            skew: Duration::ZERO,
            expect: Err(|e| matches!(e, VerifyError::CaAsLeaf)),
        },
        Case {
            name: "zero URI SANs",
            leaf: Leaf { sans: vec![SanType::DnsName("orders".try_into().unwrap())], ..Leaf::spiffe(ID) },
            signer: "root",
            skew: Duration::ZERO,
            expect: Err(|e| matches!(e, VerifyError::UriSanCount { count: 0 })),
        },
        Case {
            name: "two URI SANs",
            leaf: Leaf { sans: vec![uri(ID), uri("spiffe://public/ns/default/admin")], ..Leaf::spiffe(ID) },
            signer: "root",
            skew: Duration::ZERO,
            expect: Err(|e| matches!(e, VerifyError::UriSanCount { count: 2 })),
        },
        Case {
            name: "non-SPIFFE URI",
            leaf: Leaf { sans: vec![uri("https://public/ns/default/orders")], ..Leaf::spiffe(ID) },
            signer: "root",
            skew: Duration::ZERO,
            expect: Err(|e| matches!(e, VerifyError::NotSpiffe { .. })),
        },
        Case {
            name: "wrong trust domain",
            leaf: Leaf::spiffe("spiffe://evil/ns/default/orders"),
            signer: "root",
            skew: Duration::ZERO,
            expect: Err(|e| matches!(e, VerifyError::WrongTrustDomain { .. })),
        },
        Case {
            name: "server-only EKU used as client",
            leaf: Leaf { ekus: vec![ExtendedKeyUsagePurpose::ServerAuth], ..Leaf::spiffe(ID) },
            signer: "root",
            skew: Duration::ZERO,
            expect: Err(|e| matches!(e, VerifyError::WrongUsage { .. })),
        },
    ];
    for case in cases {
        let signer = if case.signer == "root" { &root } else { &other };
        let got = check(&root, signer, case.leaf, case.skew);
        match (case.expect, got) {
            (Ok(want), Ok(id)) => assert_eq!(id.as_str(), want, "{}", case.name),
            (Err(pred), Err(err)) => assert!(pred(&err), "{}: unexpected error {err:?}", case.name),
            (want, got) => panic!("{}: expected {:?}, got {got:?}", case.name, want.map_err(|_| "an error")),
        }
    }
}

#[test]
fn bundle_with_two_roots_trusts_both() {
    let old = ca("old");
    let new = ca("new");
    let both = TrustBundle::new(td(), vec![old.cert.clone(), new.cert.clone()]).unwrap();
    for signer in [&old, &new] {
        let (cert, _) = Leaf::spiffe(ID).issue(signer);
        assert!(verify_svid(&both, &cert, &[], UnixTime::now(), Duration::ZERO, Usage::Server).is_ok());
    }
    let pem = both.to_pem();
    assert_eq!(TrustBundle::from_pem(td(), pem.as_bytes()).unwrap().roots().len(), 2);
}

#[test]
fn chain_through_an_intermediate() {
    let root = ca("root");
    let inter_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let inter_cert = params.signed_by(&inter_key, &root.issuer).unwrap();
    let inter = Ca { cert: inter_cert.der().clone(), issuer: Issuer::new(params, inter_key) };
    let (leaf, _) = Leaf::spiffe(ID).issue(&inter);
    let b = bundle(&root);
    let id = verify_svid(&b, &leaf, std::slice::from_ref(&inter.cert), UnixTime::now(), Duration::ZERO, Usage::Server);
    assert_eq!(id.unwrap().as_str(), ID);
    // Without the intermediate the chain cannot be built.
    assert!(verify_svid(&b, &leaf, &[], UnixTime::now(), Duration::ZERO, Usage::Server).is_err());
}

fn svid(ca: &Ca, id: &str) -> Arc<SvidResolver> {
    let (cert, key) = Leaf::spiffe(id).issue(ca);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Arc::new(SvidResolver::with_svid(X509Svid::from_der(vec![cert], key).unwrap()))
}

/// Runs a full TLS handshake in memory and returns the error, if any.
fn handshake(client: rustls::ClientConfig, server: rustls::ServerConfig) -> Result<(), rustls::Error> {
    let mut c = rustls::ClientConnection::new(Arc::new(client), "ward.invalid".try_into().unwrap())?;
    let mut s = rustls::ServerConnection::new(Arc::new(server))?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            // The server only learns of a refused client certificate once it processes the client's last flight.
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).unwrap();
                s.process_new_packets()?;
            }
            let id = ward_identity::peer_spiffe_id(s.peer_certificates());
            assert!(id.is_some(), "server must see the client's SPIFFE ID");
            return Ok(());
        }
    }
    panic!("handshake did not finish")
}

#[test]
fn rustls_handshake_enforces_authorizers() {
    let root = ca("root");
    let bundle = TrustBundleHandle::new(bundle(&root));
    let server_id = "spiffe://public/ns/default/callee";
    let client_id = "spiffe://public/ns/default/caller";
    let skew = Duration::ZERO;
    let server =
        |auth: Authorizer| server_config(svid(&root, server_id), Some((bundle.clone(), auth, skew)), &[b"h2"]).unwrap();
    let client = |auth: Authorizer, resolver: Arc<SvidResolver>| {
        client_config(resolver, bundle.clone(), auth, skew, &[b"h2"]).unwrap()
    };
    let exact = |s: &str| Authorizer::Exact(SpiffeId::parse(s).unwrap());

    // Both sides authorize each other.
    handshake(client(exact(server_id), svid(&root, client_id)), server(Authorizer::MemberOf(td()))).unwrap();
    // Client expects another callee: refused by the client.
    let err = handshake(
        client(exact("spiffe://public/ns/default/other"), svid(&root, client_id)),
        server(Authorizer::MemberOf(td())),
    )
    .unwrap_err();
    assert!(format!("{err}").contains("NotAuthorized"), "{err}");
    // A verifier with no rule authorizes nobody.
    assert!(
        handshake(client(Authorizer::default(), svid(&root, client_id)), server(Authorizer::MemberOf(td()))).is_err()
    );
    assert!(handshake(client(exact(server_id), svid(&root, client_id)), server(Authorizer::default())).is_err());
    // A client with no certificate at all is refused by the server.
    assert!(
        handshake(client(exact(server_id), Arc::new(SvidResolver::new())), server(Authorizer::MemberOf(td()))).is_err()
    );
    // A client with a certificate from another CA is refused.
    let other = ca("other");
    assert!(handshake(client(exact(server_id), svid(&other, client_id)), server(Authorizer::MemberOf(td()))).is_err());
}

#[test]
fn expired_svid_is_not_presented() {
    let root = ca("root");
    let now = OffsetDateTime::now_utc();
    let (cert, key) = Leaf {
        not_before: now - time::Duration::hours(2),
        not_after: now - time::Duration::hours(1),
        ..Leaf::spiffe(ID)
    }
    .issue(&root);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let resolver = SvidResolver::with_svid(X509Svid::from_der(vec![cert], key).unwrap());
    use rustls::client::ResolvesClientCert;
    assert!(!resolver.has_certs(), "an expired SVID must not be offered");
}

#[test]
fn svid_from_pem_reads_identity_and_renewal_time() {
    let root = ca("root");
    let (cert, key) = Leaf::spiffe(ID).issue(&root);
    let chain_pem = ward_identity::pem_encode("CERTIFICATE", &cert);
    let svid = X509Svid::from_pem(chain_pem.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), ID);
    assert!(svid.renewal_time() > svid.not_before() && svid.renewal_time() < svid.not_after());
    let other_key = KeyPair::generate().unwrap();
    assert!(X509Svid::from_pem(chain_pem.as_bytes(), other_key.serialize_pem().as_bytes()).is_err());
}

/// A control-plane server every app calls (the operator) accepts clients of any trust domain the roots sign; the
/// ordinary verifier keeps refusing a trust domain other than the bundle's; roots still decide.
#[test]
fn a_verifier_for_any_trust_domain_still_requires_the_roots() {
    let root = ca("root");
    let bundle = TrustBundleHandle::new(bundle(&root));
    let server_id = "spiffe://public/ns/dapr-system/dapr-operator";
    let skew = Duration::ZERO;
    let server = |verifier: ward_identity::SpiffeClientVerifier| {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_client_cert_verifier(Arc::new(verifier))
                .with_cert_resolver(svid(&root, server_id));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config
    };
    let client = |resolver: Arc<SvidResolver>| {
        let exact = Authorizer::Exact(SpiffeId::parse(server_id).unwrap());
        client_config(resolver, bundle.clone(), exact, skew, &[b"h2"]).unwrap()
    };
    let any = || {
        ward_identity::SpiffeClientVerifier::for_any_trust_domain(
            bundle.clone(),
            Authorizer::Custom(Arc::new(|_: &SpiffeId| true)),
            skew,
        )
    };
    let acme = "spiffe://acme.example/ns/shop/orders";
    handshake(client(svid(&root, acme)), server(any())).unwrap();
    handshake(client(svid(&root, "spiffe://public/ns/shop/orders")), server(any())).unwrap();
    // Another CA: refused whatever trust domain it claims.
    assert!(handshake(client(svid(&ca("other"), acme)), server(any())).is_err());
    // The ordinary verifier: only the bundle's own trust domain.
    let own = ward_identity::SpiffeClientVerifier::new(
        bundle.clone(),
        Authorizer::Custom(Arc::new(|_: &SpiffeId| true)),
        skew,
    );
    assert!(handshake(client(svid(&root, acme)), server(own)).is_err());
}
