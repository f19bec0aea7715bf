//! Issue 26: CloudEvents from a broker as a property (the cargo-fuzz target `fuzz/fuzz_targets/cloudevent_verify.rs`
//! runs the same invariants where nightly is available): a signed event with any one byte of its JSON changed is
//! refused, or parses to exactly the event that was signed; arbitrary bytes never verify.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
use serde_json::{Map, Value};
use ward_cloudevent::signature::{EventSigner, EventVerifier};
use ward_identity::{SvidResolver, TrustBundle, TrustBundleHandle, TrustDomain, X509Svid};

struct Fixture {
    verifier: EventVerifier,
    signed: Map<String, Value>,
    bytes: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![SanType::URI("spiffe://public/ns/default/pub".try_into().unwrap())];
        leaf.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let svid = X509Svid::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        let td = TrustDomain::new("public").unwrap();
        let bundle = TrustBundleHandle::new(TrustBundle::from_pem(td, ca_cert.pem().as_bytes()).unwrap());
        let mut signed: Map<String, Value> = serde_json::from_str(
            r#"{"id":"1","source":"pub","type":"com.dapr.event.sent","specversion":"1.0","topic":"t",
                "pubsubname":"bus","datacontenttype":"application/json","data":{"n":1,"s":"é"}}"#,
        )
        .unwrap();
        EventSigner { svid: Arc::new(SvidResolver::with_svid(svid)) }.sign(&mut signed).unwrap();
        let bytes = serde_json::to_vec(&signed).unwrap();
        Fixture { verifier: EventVerifier::new(bundle, Duration::from_secs(60)), signed, bytes }
    })
}

fn verified(bytes: &[u8]) -> Option<Map<String, Value>> {
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(bytes) else { return None };
    fixture().verifier.verify(&event).ok().map(|_| event)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn a_changed_byte_never_verifies_as_another_event(at in any::<prop::sample::Index>(), value in any::<u8>()) {
        let f = fixture();
        prop_assert!(verified(&f.bytes).is_some(), "the untouched event verifies");
        let mut bytes = f.bytes.clone();
        let i = at.index(bytes.len());
        bytes[i] = value;
        if let Some(event) = verified(&bytes) {
            prop_assert_eq!(event, f.signed.clone());
        }
    }

    #[test]
    fn arbitrary_bytes_never_verify(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(verified(&bytes).is_none());
    }
}
