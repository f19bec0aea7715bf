//! Fuzzes sentry's whole signing decision, `Ca::handle` (names, CSR checks, signing) with the insecure validator,
//! which signs for anyone: so every invariant here is the CA's own, not a credential's.
//!
//! Input: `selector | ns_len | namespace | app_len | app_id | csr`. Bit 0 of the selector swaps the fuzzed CSR for
//! a valid one that *asks* for a CA certificate, a foreign SAN (`spiffe://public/ns/prod/admin`) and a subject;
//! bit 1 wraps the fuzzed bytes as PEM so the DER parser is reached. Invariants: never panics; a certificate is
//! issued only for a namespace and app id that pass `validate_namespace` / `validate_app_id`; it is never a CA and
//! carries exactly one SAN, the URI `spiffe://public/ns/<namespace>/<app-id>` that was requested; invalid names are
//! `InvalidArgument` naming the field (app_id is checked first).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rcgen::{CertificateParams, IsCa, KeyPair, SanType};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use ward_identity::{TrustDomain, validate_app_id, validate_namespace};
use ward_sentry::proto::SignCertificateRequest;
use ward_sentry::validator::Validator;
use ward_sentry::{Ca, SentryConfig};
use x509_parser::extensions::{GeneralName, ParsedExtension};

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        // One fixed directory, so runs do not pile up temp directories: the first run generates the CA material
        // and later ones (or parallel jobs) load it; a job that races a writer retries once the files are complete.
        let dir = std::env::temp_dir().join("ward-fuzz-csr-sign");
        let config = SentryConfig {
            issuer_dir: dir,
            trust_domain: TrustDomain::new("public").expect("valid"),
            namespace: "default".into(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            healthz_listen: "127.0.0.1:0".parse().expect("addr"),
            workload_ttl: Duration::from_secs(3600),
            allowed_clock_skew: Duration::from_secs(60),
            generated_ca_ttl: Duration::from_secs(86400),
            production: false,
            limits: ward_net::ListenerLimits::default(),
            metrics: None,
        };
        let mut attempts = 0;
        loop {
            match Ca::new(config.clone(), Validator::Insecure) {
                Ok(ca) => break ca,
                Err(err) if attempts < 20 => {
                    attempts += 1;
                    eprintln!("CA not ready ({err}); retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("CA: {err}"),
            }
        }
    })
}

/// A well-formed CSR that asks for everything a CSR must not obtain.
fn greedy_csr() -> &'static Vec<u8> {
    static CSR: OnceLock<Vec<u8>> = OnceLock::new();
    CSR.get_or_init(|| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.subject_alt_names = vec![
            SanType::URI("spiffe://public/ns/prod/admin".try_into().expect("uri")),
            SanType::DnsName("admin.example".try_into().expect("dns")),
        ];
        params.distinguished_name.push(rcgen::DnType::CommonName, "admin");
        params.serialize_request(&key).expect("csr").pem().expect("pem").into_bytes()
    })
}

fn take<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((&len, rest)) = data.split_first() else { return &[] };
    let len = usize::from(len).min(rest.len());
    let (head, tail) = rest.split_at(len);
    *data = tail;
    head
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let Some((&selector, rest)) = data.split_first() else { return };
    data = rest;
    let namespace = String::from_utf8_lossy(take(&mut data)).into_owned();
    let app_id = String::from_utf8_lossy(take(&mut data)).into_owned();
    let csr = if selector & 1 == 1 {
        greedy_csr().clone()
    } else if selector & 2 == 2 {
        ward_identity::pem_encode("CERTIFICATE REQUEST", data).into_bytes()
    } else {
        data.to_vec()
    };
    let request = SignCertificateRequest {
        id: app_id.clone(),
        namespace: namespace.clone(),
        certificate_signing_request: csr,
        ..Default::default()
    };
    let names_ok = validate_app_id(&app_id).is_ok() && validate_namespace(&namespace).is_ok();
    match ca().handle(&request, None) {
        Err(status) => {
            if validate_app_id(&app_id).is_err() {
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
                assert!(status.message().starts_with("invalid app_id"), "{}", status.message());
            } else if validate_namespace(&namespace).is_err() {
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
                assert!(status.message().starts_with("invalid namespace"), "{}", status.message());
            }
        }
        Ok(response) => {
            assert!(names_ok, "signed for {namespace:?}/{app_id:?}");
            assert_ne!(app_id, "dapr-sentry");
            let chain = CertificateDer::pem_slice_iter(&response.workload_certificate)
                .collect::<Result<Vec<_>, _>>()
                .expect("issued chain is PEM");
            let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).expect("issued leaf parses");
            assert!(!leaf.basic_constraints().expect("one basicConstraints").is_some_and(|bc| bc.value.ca));
            let mut sans = Vec::new();
            for ext in leaf.extensions() {
                if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(uri) => sans.push(uri.to_string()),
                            other => panic!("unexpected SAN {other:?}"),
                        }
                    }
                }
            }
            assert_eq!(sans, vec![format!("spiffe://public/ns/{namespace}/{app_id}")]);
        }
    }
});
