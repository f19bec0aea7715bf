//! `Settings::resolve` as a table: what each flag/field combination resolves to, and what is refused.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::runtime::MtlsOptions;

fn options(production: bool, mtls: bool) -> SidecarOptions {
    SidecarOptions {
        app_id: "orders".into(),
        namespace: "default".into(),
        app_port: None,
        app_channel_address: "127.0.0.1".into(),
        app_protocol_grpc: false,
        http_port: 0,
        grpc_port: 0,
        internal_port: 0,
        internal_listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        listen_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        config_path: Some(PathBuf::from("config.yaml")),
        mtls: mtls.then(|| MtlsOptions {
            sentry_address: "127.0.0.1:1".into(),
            trust_anchors_pem: Vec::new(),
            control_plane_trust_domain: None,
            control_plane_namespace: "default".into(),
            sentry_token_file: None,
            kubernetes: false,
            trust_anchors_file: None,
        }),
        production,
        max_body_size: None,
        ward_home: PathBuf::from("/nonexistent"),
        audit: AuditTarget::Stderr,
        api_tokens: ward_gate::ApiTokens::from_env_value(None).expect("tokens"),
        app_token: ward_gate::AppToken::from_env_value(None).expect("token"),
        enable_api_logging: None,
        drain_timeout: Duration::from_secs(1),
        listener_limits: ward_net::ListenerLimits::default(),
        unsupported_flags: Vec::new(),
        app_max_concurrency: None,
        resources_paths: Vec::new(),
        builtin_kubernetes_secret_store: false,
        control_plane: None,
        filter_namespace: false,
        metrics: None,
        public_health: None,
        app_health: None,
        unix_domain_socket: None,
    }
}

fn config(spec: &str) -> Configuration {
    let yaml = format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n{spec}");
    ward_config::configuration_from_yaml(Path::new("config.yaml"), yaml.as_bytes()).expect("loads")
}

fn refused(result: Result<Settings, SettingsError>) -> String {
    match result {
        Ok(_) => panic!("expected a refusal"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn production_from_the_file_is_production() {
    let c = config("  ward:\n    productionMode: true\n");
    let err = refused(Settings::resolve(&options(false, false), Some(&c)));
    assert!(err.contains("config.yaml: spec.ward.productionMode") && err.contains("requires mTLS"), "{err}");
    let settings = Settings::resolve(&options(false, true), Some(&c)).expect("with mTLS");
    assert!(settings.production);
    assert!(!Settings::resolve(&options(false, true), Some(&config("  ward: {}\n"))).expect("ok").production);
    assert!(Settings::resolve(&options(true, true), None).expect("flag").production);
}

#[test]
fn body_size_flag_then_file_then_default() {
    let c = config("  ward:\n    maxBodySize: 1Mi\n");
    assert_eq!(Settings::resolve(&options(false, false), Some(&c)).unwrap().max_body_size, 1024 * 1024);
    let mut flagged = options(false, false);
    flagged.max_body_size = Some(10);
    assert_eq!(Settings::resolve(&flagged, Some(&c)).unwrap().max_body_size, 10);
    assert_eq!(Settings::resolve(&options(false, false), None).unwrap().max_body_size, DEFAULT_MAX_BODY_SIZE);
}

#[test]
fn clock_skew_logging_and_audit_come_from_the_file() {
    let c = config(
        "  mtls:\n    allowedClockSkew: 2m\n  logging:\n    apiLogging:\n      enabled: true\n      \
         omitHealthChecks: true\n  ward:\n    auditLog: /tmp/a.log\n",
    );
    let s = Settings::resolve(&options(false, false), Some(&c)).unwrap();
    assert_eq!(s.clock_skew, Duration::from_secs(120));
    assert!(s.api_log.enabled && s.api_log.omit_health_checks);
    assert_eq!(s.audit, AuditTarget::File(PathBuf::from("/tmp/a.log")));
    let mut flagged = options(false, false);
    flagged.enable_api_logging = Some(false);
    assert!(!Settings::resolve(&flagged, Some(&c)).unwrap().api_log.enabled, "the flag wins");
}

#[test]
fn audit_fsync_comes_from_the_file_and_defaults_to_never() {
    use ward_config::AuditFsync;
    assert_eq!(Settings::resolve(&options(false, false), None).unwrap().audit_fsync, AuditFsync::Never);
    let c = config("  ward:\n    auditLog: /tmp/a.log\n");
    assert_eq!(Settings::resolve(&options(false, false), Some(&c)).unwrap().audit_fsync, AuditFsync::Never);
    for (value, expected) in
        [("never", AuditFsync::Never), ("interval", AuditFsync::Interval), ("always", AuditFsync::Always)]
    {
        let c = config(&format!("  ward:\n    audit:\n      fsync: {value}\n"));
        assert_eq!(Settings::resolve(&options(true, true), Some(&c)).unwrap().audit_fsync, expected, "{value}");
    }
}

#[test]
fn pipelines_resolve_here_and_what_they_cannot_apply_is_refused_in_production() {
    // A plain pipeline is the component registry's business (handlers resolve against loaded middleware).
    let plain = "  appHttpPipeline:\n    handlers:\n    - name: bearer\n      type: middleware.http.bearer\n";
    assert!(Settings::resolve(&options(true, true), Some(&config(plain))).is_ok());
    let selector = "  httpPipeline:\n    handlers:\n    - name: limit\n      type: middleware.http.ratelimit\n      \
                    selector:\n        fields:\n        - field: path\n          value: /v1.0/state\n";
    let err = refused(Settings::resolve(&options(true, true), Some(&config(selector))));
    assert!(err.contains("spec.httpPipeline.handlers[0].selector"), "{err}");
    assert!(Settings::resolve(&options(false, false), Some(&config(selector))).is_ok(), "development: warned");
    // Pipelines wrap HTTP only: an appHttpPipeline in front of a gRPC app would never run.
    let mut grpc_app = options(true, true);
    grpc_app.app_protocol_grpc = true;
    let err = refused(Settings::resolve(&grpc_app, Some(&config(plain))));
    assert!(err.contains("spec.appHttpPipeline") && err.contains("gRPC"), "{err}");
}

#[test]
fn mtls_requested_in_the_file_without_mtls_is_refused() {
    let err = refused(Settings::resolve(&options(false, false), Some(&config("  mtls:\n    enabled: true\n"))));
    assert!(err.contains("spec.mtls.enabled"), "{err}");
    Settings::resolve(&options(false, true), Some(&config("  mtls:\n    enabled: true\n"))).expect("mTLS on");
}

#[test]
fn unimplemented_fields_refused_in_production_warned_in_development() {
    for spec in ["  features:\n  - name: Actors\n    enabled: true\n", "  mtls:\n    workloadCertTTL: 1h\n"] {
        let c = config(spec);
        let dev = Settings::resolve(&options(false, false), Some(&c)).expect("development starts");
        assert_eq!(dev.unhonoured.len(), 1, "{spec}");
        let err = refused(Settings::resolve(&options(true, true), Some(&c)));
        assert!(err.starts_with("config.yaml: spec."), "{err}");
    }
    let disabled = config("  features:\n  - name: Actors\n    enabled: false\n");
    assert!(Settings::resolve(&options(true, true), Some(&disabled)).expect("nothing asked").unhonoured.is_empty());
}

#[test]
fn acl_and_api_lists_are_compiled_or_refused() {
    let c = config("  accessControl:\n    defaultAction: deny\n    trustDomain: corp\n");
    let s = Settings::resolve(&options(false, false), Some(&c)).unwrap();
    assert!(s.acl.is_configured());
    assert_eq!(s.trust_domain.as_str(), "corp");
    let bad = config("  api:\n    allowed:\n    - name: state\n      version: v1\n      protocol: smtp\n");
    let err = refused(Settings::resolve(&options(false, false), Some(&bad)));
    assert!(err.starts_with("config.yaml: Configuration \"c\": spec.api: api.allowed[0].protocol"), "{err}");
    // Issue 26 defect 3: file, resource and field named, the value cut at 100 characters.
    let long = config(&format!("  accessControl:\n    trustDomain: {}\n", "a".repeat(300)));
    let err = refused(Settings::resolve(&options(false, false), Some(&long)));
    let cut = format!("\"{}\"…", "a".repeat(100));
    assert_eq!(
        err,
        format!(
            "config.yaml: Configuration \"c\": spec.accessControl.trustDomain: {cut}: trust domain is longer than 255 characters (300)"
        )
    );
}

#[test]
fn unsupported_flags_are_refused_in_production_and_listed_in_development() {
    let flag = UnsupportedFlag { flag: "--enable-app-health-check", why: "ward does not probe the app yet" };
    let mut dev = options(false, false);
    dev.unsupported_flags = vec![flag.clone()];
    Settings::resolve(&dev, None).expect("development starts");
    let mut prod = options(true, true);
    prod.unsupported_flags = vec![flag];
    let err = refused(Settings::resolve(&prod, None));
    assert!(err.starts_with("--enable-app-health-check: ward does not probe the app yet"), "{err}");
}

/// Name resolution by cluster DNS: the default in Kubernetes mode, its test override refused in production, and
/// Dapr's `template` refused rather than ignored.
#[tokio::test]
async fn kubernetes_name_resolution_is_the_default_there_and_its_test_override_is_refused_in_production() {
    use crate::runtime::name_resolution;
    let mut kubernetes = options(false, true);
    if let Some(mtls) = kubernetes.mtls.as_mut() {
        mtls.kubernetes = true;
    }
    let (_, sqlite) = name_resolution(&kubernetes, None, false, None).await.unwrap();
    assert!(sqlite.is_none(), "Kubernetes mode registers nowhere: the operator's Service is the record");
    let overrides = Some(PathBuf::from("/tmp/cluster-dns"));
    assert!(name_resolution(&kubernetes, None, false, overrides.clone()).await.is_ok());
    let Err(refused) = name_resolution(&kubernetes, None, true, overrides).await else {
        panic!("a production sidecar accepted the DNS test override")
    };
    assert!(refused.to_string().contains("WARD_NAME_RESOLUTION_OVERRIDES"), "{refused}");

    let templated = ward_config::configuration_from_yaml(
        Path::new("config.yaml"),
        b"apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  nameResolution:\n    \
          component: kubernetes\n    configuration: {template: '{{.ID}}.internal:{{.Port}}'}\n",
    )
    .unwrap();
    let Err(refused) = name_resolution(&kubernetes, Some(&templated), false, None).await else {
        panic!("an unsupported nameResolution setting was ignored")
    };
    assert!(refused.to_string().contains("template"), "{refused}");
}
