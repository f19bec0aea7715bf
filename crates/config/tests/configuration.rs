//! The `--config` file: every section ward reads, the single-Configuration rule, `spec.ward` strictness and the
//! component denylist.

use std::path::Path;
use std::time::Duration;

use ward_config::{ConfigError, ResourceSet, UnsupportedKind, configuration_from_yaml, load_configuration};

const FULL: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: bearer
spec:
  type: middleware.http.bearer
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
  namespace: default
spec:
  tracing:
    samplingRate: "1"
    someFutureKey: ignored
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: app1
      defaultAction: allow
      namespace: default
      operations:
      - name: /op1
        httpVerb: ["POST", "GET"]
        action: deny
  secrets:
    scopes:
    - storeName: vault
      defaultAccess: deny
      allowedSecrets: ["s1"]
  api:
    allowed:
    - name: state
      version: v1.0
      protocol: http
  components:
    deny:
    - bindings.smtp
    - secretstores.local.file/v1
    - ""
  nameResolution:
    component: sqlite
    version: v1
    configuration:
      connectionString: /tmp/nr.db
      timeout: 1s
      disableWAL: false
      updateInterval: 5
  logging:
    apiLogging:
      enabled: true
      obfuscateURLs: true
      omitHealthChecks: true
  mtls:
    enabled: true
    workloadCertTTL: 24h
    allowedClockSkew: 1h30m
    sentryAddress: localhost:50001
    controlPlaneTrustDomain: cluster.local
    tokenValidators: []
  httpPipeline:
    handlers:
    - name: bearer
      type: middleware.http.bearer
      selector:
        fields:
        - field: path
          value: /v1.0/state
  appHttpPipeline:
    handlers:
    - name: upper
      type: middleware.http.uppercase
      version: v1
  features:
  - name: SomeFeature
    enabled: true
  - name: Other
    enabled: false
  ward:
    productionMode: true
    auditLog: /var/log/ward/audit.jsonl
    maxBodySize: 4Mi
"#;

#[test]
fn full_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, FULL).expect("write");
    let c = load_configuration(&path).expect("loads");
    assert_eq!(c.name, "appconfig");
    assert_eq!(c.namespace.as_deref(), Some("default"));
    assert_eq!(c.source, path);

    let acl = c.access_control.as_ref().expect("accessControl");
    assert_eq!(acl.default_action.as_deref(), Some("deny"));
    let policies = acl.policies.as_ref().expect("policies");
    assert_eq!(policies[0].app_id, "app1");
    assert_eq!(policies[0].operations[0].http_verb, ["POST", "GET"]);
    assert_eq!(c.secrets.as_ref().expect("secrets").scopes[0].allowed_secrets, ["s1"]);
    assert_eq!(c.api.as_ref().expect("api").allowed.as_ref().expect("allowed")[0].name, "state");

    assert!(c.component_denied("bindings.smtp", "v1"));
    assert!(c.component_denied("secretstores.local.file", "v1"));
    assert!(!c.component_denied("secretstores.local.file", "v2"));
    assert!(!c.component_denied("state.redis", "v1"));
    assert_eq!(c.components_deny.entries().len(), 2, "empty entries are skipped");

    let nr = c.name_resolution.as_ref().expect("nameResolution");
    assert_eq!(nr.component, "sqlite");
    assert_eq!(nr.version.as_deref(), Some("v1"));
    assert_eq!(nr.configuration["connectionString"], "/tmp/nr.db");
    assert_eq!(nr.configuration["disableWAL"], "false");
    assert_eq!(nr.configuration["updateInterval"], "5");

    assert!(c.api_logging.enabled && c.api_logging.obfuscate_urls && c.api_logging.omit_health_checks);

    assert_eq!(c.mtls.enabled, Some(true));
    assert_eq!(c.mtls.workload_cert_ttl, Some(Duration::from_secs(24 * 3600)));
    assert_eq!(c.mtls.allowed_clock_skew, Some(Duration::from_secs(5400)));
    assert_eq!(c.mtls.sentry_address.as_deref(), Some("localhost:50001"));
    assert_eq!(c.mtls.control_plane_trust_domain.as_deref(), Some("cluster.local"));

    assert_eq!(c.http_pipeline.len(), 1);
    assert_eq!(c.http_pipeline[0].type_, "middleware.http.bearer");
    assert_eq!(c.http_pipeline[0].selector, [("path".to_string(), "/v1.0/state".to_string())]);
    assert_eq!(c.app_http_pipeline[0].version.as_deref(), Some("v1"));

    assert!(c.feature_enabled("SomeFeature"));
    assert!(!c.feature_enabled("Other"));
    assert!(!c.feature_enabled("Missing"));

    assert!(c.ward.production_mode);
    assert_eq!(c.ward.audit_log.as_deref(), Some(Path::new("/var/log/ward/audit.jsonl")));
    assert_eq!(c.ward.max_body_size, Some(4 * 1024 * 1024));

    // What ward does not do is listed, sorted by field (`tokenValidators: []` asks for nothing; `Other` is
    // disabled).
    let listed: Vec<(&str, UnsupportedKind)> = c.unsupported.iter().map(|u| (u.field.as_str(), u.kind)).collect();
    assert_eq!(
        listed,
        [
            ("spec.features[0]", UnsupportedKind::NotImplemented),
            ("spec.mtls.controlPlaneTrustDomain", UnsupportedKind::NotImplemented),
            ("spec.mtls.sentryAddress", UnsupportedKind::NotImplemented),
            ("spec.tracing.someFutureKey", UnsupportedKind::UnknownKey),
        ]
    );
    assert_eq!(c.tracing.as_ref().and_then(|t| t.sampling_rate), Some(1.0));
    let line = c.check_unsupported().expect_err("production refuses").to_string();
    assert_eq!(
        line,
        format!(
            "{}: Configuration \"appconfig\": spec.features[0]: not implemented: feature \"SomeFeature\" is not implemented by ward",
            path.display()
        )
    );
    assert!(c.unsupported_error(&c.unsupported[3]).to_string().contains("spec.tracing.someFutureKey: unknown field"));
}

#[test]
fn minimal_configuration_has_defaults() {
    let c = configuration_from_yaml(
        Path::new("c.yaml"),
        b"apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\n",
    )
    .expect("loads");
    assert!(c.access_control.is_none() && c.secrets.is_none() && c.api.is_none());
    assert!(c.components_deny.is_empty());
    assert!(!c.component_denied("state.redis", "v1"));
    assert_eq!(c.mtls.enabled, None, "absent stays absent so the runtime picks the default");
    assert!(!c.api_logging.enabled);
    assert!(!c.ward.production_mode);
    assert_eq!(c.ward.max_body_size, None);
    assert!(c.unsupported.is_empty());
    assert!(c.check_unsupported().is_ok());
}

#[test]
fn configuration_count_must_be_one() {
    let one = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\n";
    let component = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\n";
    for (text, found) in [(component.to_string(), 0), (format!("{one}---\n{one}"), 2)] {
        let err = configuration_from_yaml(Path::new("cfg.yaml"), text.as_bytes()).expect_err("count");
        assert!(matches!(err, ConfigError::ConfigurationCount { found: f, .. } if f == found), "{err}");
        let line = err.to_string();
        assert!(line.starts_with("cfg.yaml: expected exactly one `kind: Configuration` document"), "{line}");
    }
    // Other kinds beside the one Configuration are ignored, even if they would not validate.
    let c = configuration_from_yaml(Path::new("cfg.yaml"), format!("{component}---\n{one}").as_bytes()).expect("loads");
    assert_eq!(c.name, "c");
}

#[test]
fn missing_file_names_it() {
    let err = load_configuration(Path::new("/nonexistent/config.yaml")).expect_err("missing");
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().starts_with("/nonexistent/config.yaml: cannot read file:"), "{err}");
}

fn config_error(spec: &str) -> String {
    let text =
        format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n{spec}");
    configuration_from_yaml(Path::new("cfg.yaml"), text.as_bytes()).expect_err(spec).to_string()
}

#[test]
fn bad_configuration_values_name_the_field() {
    let cases = [
        (
            "  mtls:\n    allowedClockSkew: -5m\n",
            "cfg.yaml: Configuration \"appconfig\": spec.mtls.allowedClockSkew: duration \"-5m\" must not be negative",
        ),
        ("  mtls:\n    workloadCertTTL: 0s\n", "spec.mtls.workloadCertTTL: must be greater than 0"),
        ("  mtls:\n    enabled: maybe\n", "spec.mtls.enabled: invalid type: string, expected a boolean"),
        ("  ward:\n    maxBodySize: 4MB\n", "spec.ward.maxBodySize: invalid size \"4MB\""),
        ("  ward:\n    maxBodySize: [1]\n", "spec.ward.maxBodySize: invalid type: sequence"),
        (
            "  ward:\n    productionMode: yes please\n",
            "spec.ward.productionMode: invalid type: string, expected a boolean",
        ),
        (
            "  components:\n    deny: [\"a/b/c\"]\n",
            "spec.components.deny[0]: \"a/b/c\" is not \"<type>\" or \"<type>/<version>\"",
        ),
        ("  httpPipeline:\n    handlers:\n    - name: x\n", "spec.httpPipeline.handlers[0].type: is required"),
        (
            "  appHttpPipeline:\n    handlers:\n    - type: middleware.http.bearer\n",
            "spec.appHttpPipeline.handlers[0].name: is required",
        ),
        ("  nameResolution:\n    version: v1\n", "spec.nameResolution.component: is required"),
        ("  features:\n  - enabled: true\n", "spec.features[0].name: is required"),
        (
            "  accessControl:\n    policies:\n    - appId: a\n      operations:\n      - name: /x\n        httpverb: [GET]\n",
            "spec.accessControl.policies[0].operations[0].httpverb: key differs from \"httpVerb\" only in case",
        ),
        ("  secrets:\n    scopes: {storeName: x}\n", "spec.secrets.scopes: invalid type: map, expected a sequence"),
    ];
    for (spec, want) in cases {
        let line = config_error(spec);
        assert!(line.starts_with("cfg.yaml: Configuration \"appconfig\": "), "{line}");
        assert!(line.contains(want), "{line:?} should contain {want:?}");
    }
}

#[test]
fn unknown_keys_outside_security_sections_are_listed_not_dropped() {
    let text = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\n  labels: {a: b}\nspec:\n  wasm: {strictSandbox: true}\n  mtls:\n    enabled: false\n  logging:\n    apiLogging:\n      enabled: true\n      newKnob: x\n";
    let c = configuration_from_yaml(Path::new("c.yaml"), text.as_bytes()).expect("loads");
    assert_eq!(c.mtls.enabled, Some(false));
    assert!(c.api_logging.enabled);
    let listed: Vec<(&str, UnsupportedKind)> = c.unsupported.iter().map(|u| (u.field.as_str(), u.kind)).collect();
    assert_eq!(
        listed,
        [
            ("spec.logging.apiLogging.newKnob", UnsupportedKind::UnknownKey),
            ("spec.wasm", UnsupportedKind::NotImplemented),
        ],
        "metadata.labels configures nothing and is not listed"
    );
    // Inside a security section the same kind of key is a load error.
    let strict = text.replace("    enabled: false\n", "    enabled: false\n    futureThing: 1\n");
    let err = configuration_from_yaml(Path::new("c.yaml"), strict.as_bytes()).expect_err("strict");
    assert!(err.to_string().starts_with("c.yaml: Configuration \"c\": spec.mtls.futureThing: unknown field"), "{err}");
}

#[test]
fn configurations_in_resource_dirs_follow_namespaces() {
    let text = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\n  namespace: other\n";
    let set = ResourceSet::from_yaml(Path::new("r.yaml"), text, Some("mine")).expect("loads");
    assert!(set.configurations.is_empty());
    let set = ResourceSet::from_yaml(Path::new("r.yaml"), text, None).expect("loads");
    assert_eq!(set.configurations.len(), 1);
}

/// Issue 12 row 10 (config side): a reload that drops a security control is visible as such, so the watcher can
/// refuse it in production instead of silently running allow-all.
#[test]
fn removed_security_controls_are_named() {
    let load = |spec: &str| {
        let text = format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n{spec}");
        configuration_from_yaml(Path::new("c.yaml"), text.as_bytes()).expect("loads")
    };
    let full = load(
        "  accessControl:\n    defaultAction: deny\n  secrets:\n    scopes: []\n  api:\n    denied: []\n  components:\n    deny: [bindings.smtp]\n  mtls:\n    enabled: true\n  ward:\n    productionMode: true\n  appHttpPipeline:\n    handlers:\n    - {name: b, type: middleware.http.bearer}\n",
    );
    let half_written = load("  secrets:\n    scopes: []\n");
    assert_eq!(
        half_written.security_controls_removed(&full),
        [
            "spec.accessControl",
            "spec.api",
            "spec.components.deny",
            "spec.appHttpPipeline",
            "spec.ward.productionMode",
            "spec.mtls.enabled"
        ]
    );
    assert!(full.security_controls_removed(&half_written).is_empty(), "tightening is not a removal");
    assert!(full.security_controls_removed(&full).is_empty());
    let empty = load("  mtls:\n    enabled: false\n");
    assert_eq!(empty.security_controls_removed(&half_written), ["spec.secrets"]);
    // Issue 15: emptying the capability routes, or turning provenance off, removes a control too.
    let chain = load(
        "  ward:\n    capabilities:\n      routes:\n      - {name: /x, requires: [a]}\n    provenance:\n      enabled: true\n",
    );
    let off = load("  ward:\n    capabilities:\n      routes: []\n    provenance:\n      enabled: false\n");
    assert_eq!(
        off.security_controls_removed(&chain),
        ["spec.ward.capabilities.routes", "spec.ward.provenance.enabled"]
    );
    assert!(chain.security_controls_removed(&off).is_empty());
}
