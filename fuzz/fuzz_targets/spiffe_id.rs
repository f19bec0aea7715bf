//! SPIFFE ID parsing: never panics; an accepted ID round-trips exactly, its parts rebuild it, and the Dapr form
//! (when present) rebuilds the same ID through the constructor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_identity::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(id) = SpiffeId::parse(text) else { return };
    assert_eq!(id.as_str(), text);
    let td = TrustDomain::new(id.trust_domain_str()).expect("an accepted ID has a valid trust domain");
    assert_eq!(SpiffeId::from_parts(&td, id.path()).expect("parts rebuild"), id);
    if let Ok(dapr) = id.dapr_identity() {
        assert_eq!(SpiffeId::dapr(&td, dapr.namespace, dapr.app_id).expect("dapr form rebuilds"), id);
    }
});
