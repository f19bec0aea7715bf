//! Who is calling, proven: SPIFFE IDs and trust domains that can only hold valid values, trust bundles with
//! several roots (for rotation), X.509 SVIDs that can be swapped while connections stay up, and the rustls
//! client and server verifiers that delegate chain checking to webpki and then insist on exactly one SPIFFE URI
//! SAN that an explicit rule authorizes.
//!
//! This crate does not fetch certificates (the sentry client does) and does not decide what an identity may
//! do (`ward-policy` does); it only answers "which SPIFFE ID did this peer prove, if any".

mod bundle;
mod jose;
mod spiffe;
mod svid;
mod verifier;

pub use bundle::{BundleError, TrustBundle, TrustBundleHandle, pem_encode};
pub use jose::{JoseError, verify_jose};
pub use spiffe::{
    DaprField, DaprIdentity, DaprNameError, MAX_DAPR_NAME_LEN, SpiffeId, SpiffeIdError, TrustDomain, validate_app_id,
    validate_kubernetes_app_id, validate_kubernetes_namespace, validate_namespace,
};
pub use svid::{SvidError, SvidResolver, X509Svid, certificate_not_after, parse_certificates};
pub use verifier::{
    Authorizer, ClientConfigResult, SpiffeClientVerifier, SpiffeServerVerifier, Usage, VerifyError, client_config,
    peer_not_after, peer_spiffe_id, server_config, verify_svid,
};

/// The default tolerance for clocks that disagree, as Dapr's `allowedClockSkew` (15 minutes).
pub const DEFAULT_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(15 * 60);
