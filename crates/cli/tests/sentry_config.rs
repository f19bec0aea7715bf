//! `ward sentry --config`: the control plane's Configuration (Dapr's `daprsystem`) sets the workload certificate
//! lifetime and clock skew, as Dapr's sentry reads them; anything else it sets is refused in production.

mod support;

use std::time::Duration;

use support::{Sentry, path_str, ward_output};
use ward_identity::{SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};
use ward_sentry::{SentryClient, SentryClientConfig};

#[test]
fn the_control_plane_configuration_sets_the_certificate_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daprsystem.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec:\n  mtls:\n    enabled: true\n    workloadCertTTL: 2h\n    allowedClockSkew: 2m\n",
    )
    .unwrap();
    let sentry = Sentry::start(&dir.path().join("ca"), &["--config", path_str(&config)]);
    let td = TrustDomain::new("public").unwrap();
    let client = SentryClient::new(SentryClientConfig {
        address: sentry.grpc.clone(),
        sentry_id: SpiffeId::parse("spiffe://public/ns/default/dapr-sentry").unwrap(),
        bundle: TrustBundleHandle::new(TrustBundle::from_pem(td.clone(), &sentry.roots_pem()).unwrap()),
        app_id: "orders".to_owned(),
        namespace: "default".to_owned(),
        trust_domain: td,
        token_file: None,
        skew: Duration::from_secs(60),
        kubernetes: false,
        sentry_trust: None,
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    let (svid, _) = runtime.block_on(client.fetch()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&svid.chain()[0]).unwrap();
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(lifetime, 2 * 3600 + 120, "workloadCertTTL plus the backdated allowedClockSkew");
}

#[test]
fn sections_sentry_does_not_use_are_refused_in_production() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daprsystem.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec:\n  accessControl:\n    defaultAction: deny\n",
    )
    .unwrap();
    let ca = dir.path().join("ca");
    let (code, _, stderr) = ward_output(
        &[
            "sentry",
            "--issuer-credentials",
            path_str(&ca),
            "--port",
            "0",
            "--healthz-port",
            "0",
            "--config",
            path_str(&config),
            "--production",
            "--token-validator",
            "join-token",
            "--join-tokens",
            path_str(&dir.path().join("tokens")),
        ],
        &[],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("daprsystem.yaml: spec.accessControl: not used by sentry"), "{stderr}");
}
