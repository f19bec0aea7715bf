//! CloudEvents from a broker (issue 14 / issue 26): whoever holds broker credentials controls these bytes. Invariants:
//! parsing and `wardsig` verification never panic on any input; arbitrary input never verifies as a publisher; a real
//! signed event verifies, and the same event with any byte of its JSON changed never verifies as a different event
//! (either it is refused, or it parses to exactly the event that was signed); the envelope builder never panics on
//! any body, content type or metadata.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use ward_cloudevent::envelope::{self, EVENT_TYPE, PublishInput};
use ward_cloudevent::signature::{EventSigner, EventVerifier};
use ward_identity::{SvidResolver, TrustBundle, TrustBundleHandle, TrustDomain, X509Svid};

struct Fixture {
    verifier: EventVerifier,
    signed: Map<String, Value>,
    signed_bytes: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
        leaf.subject_alt_names = vec![SanType::URI("spiffe://public/ns/default/pub".try_into().expect("uri"))];
        leaf.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&key, &issuer).expect("leaf");
        let svid = X509Svid::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).expect("svid");
        let td = TrustDomain::new("public").expect("td");
        let bundle = TrustBundleHandle::new(TrustBundle::from_pem(td, ca_cert.pem().as_bytes()).expect("bundle"));
        let mut signed: Map<String, Value> = serde_json::from_str(
            r#"{"id":"1","source":"pub","type":"com.dapr.event.sent","specversion":"1.0","topic":"t",
                "pubsubname":"bus","datacontenttype":"application/json","data":{"n":1,"s":"é"}}"#,
        )
        .expect("event");
        EventSigner { svid: Arc::new(SvidResolver::with_svid(svid)) }.sign(&mut signed).expect("sign");
        let signed_bytes = serde_json::to_vec(&signed).expect("json");
        Fixture { verifier: EventVerifier::new(bundle, Duration::from_secs(60)), signed, signed_bytes }
    })
}

fn verify_bytes(verifier: &EventVerifier, bytes: &[u8]) -> Option<Map<String, Value>> {
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(bytes) else { return None };
    verifier.verify(&event).ok().map(|_| event)
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    // Arbitrary bytes as a broker message: never a verified event.
    assert!(verify_bytes(&f.verifier, data).is_none() || data == f.signed_bytes.as_slice());

    // The real signed event with one byte changed: refused, or exactly the signed event (JSON-equivalent).
    if let Some((&pos, &value)) = data.first().zip(data.get(1)) {
        let mut bytes = f.signed_bytes.clone();
        let at = pos as usize % bytes.len();
        bytes[at] = value;
        if let Some(event) = verify_bytes(&f.verifier, &bytes) {
            assert_eq!(event, f.signed, "a changed event verified");
        }
    }

    // The envelope builder on arbitrary body, content type and metadata.
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{0}');
    let content_type = parts.next().filter(|c| !c.is_empty());
    let key = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let metadata: BTreeMap<String, String> = [(key.to_owned(), body.chars().take(8).collect())].into();
    let input = PublishInput {
        pubsub: "bus",
        topic: "t",
        app_id: "pub",
        data: body.as_bytes(),
        content_type,
        metadata: &metadata,
        traceparent: None,
        tracestate: None,
        event_type: EVENT_TYPE,
    };
    if let Ok(event) = envelope::build(&input) {
        assert_eq!(event.get("topic").and_then(Value::as_str), Some("t"));
        assert!(!event.contains_key(envelope::WARDSIG), "a publisher can never supply the signature");
        let _ = envelope::data_bytes(&event);
        let _ = envelope::is_expired(&event);
    }
});
