//! CloudEvents for ward's pub/sub: the envelope a publish makes, exactly as Dapr writes it ([`envelope`]), its
//! canonical bytes, and the publisher signature `wardsig` that a subscribing sidecar verifies against its trust
//! bundle before anything is delivered ([`signature`]; the format is in `docs/pubsub.md`).
//!
//! A crate of its own so that the parsing and verification an attacker with broker access steers can be fuzzed
//! without the sidecar's runtime, and so that other verifiers have one reference. No I/O, no HTTP, no brokers.

pub mod envelope;
pub mod signature;
