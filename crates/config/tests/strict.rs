//! Strict security sections: an unknown or misspelt key inside `accessControl`, `api`, `secrets`, `components`,
//! `mtls`, `httpPipeline`, `appHttpPipeline` or `spec.ward` is a load error naming file, resource and field, so a
//! typo can never quietly weaken a control (a misspelt `defaultActon: deny` must not fall back to allow).

use std::path::Path;

use ward_config::{UnsupportedKind, configuration_from_yaml};

/// The load error line, or `None` when the file loaded.
fn load_err(spec: &str) -> Option<String> {
    let text = format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: acl\nspec:\n{spec}");
    configuration_from_yaml(Path::new("acl.yaml"), text.as_bytes()).err().map(|e| e.to_string())
}

#[test]
fn misspelt_keys_in_security_sections_are_load_errors() {
    let cases = [
        (
            "  accessControl:\n    defaultAction: allow\n    policies:\n    - appId: a\n      defaultActon: deny\n",
            "spec.accessControl.policies[0].defaultActon: unknown field",
        ),
        ("  accessControl:\n    defaultActon: deny\n", "spec.accessControl.defaultActon: unknown field"),
        (
            "  accessControl:\n    policies:\n    - appId: a\n      operations:\n      - name: /admin\n        actoin: deny\n",
            "spec.accessControl.policies[0].operations[0].actoin: unknown field",
        ),
        (
            "  secrets:\n    scopes:\n    - storeName: s\n      defaultAcess: deny\n",
            "spec.secrets.scopes[0].defaultAcess: unknown field",
        ),
        ("  secrets:\n    scope: []\n", "spec.secrets.scope: unknown field"),
        ("  api:\n    denyed:\n    - name: invoke\n", "spec.api.denyed: unknown field"),
        ("  api:\n    denied:\n    - name: invoke\n      protocl: http\n", "spec.api.denied[0].protocl: unknown field"),
        ("  components:\n    denylist: [bindings.smtp]\n", "spec.components.denylist: unknown field"),
        ("  mtls:\n    enable: true\n", "spec.mtls.enable: unknown field"),
        (
            "  httpPipeline:\n    handler:\n    - name: a\n      type: middleware.http.bearer\n",
            "spec.httpPipeline.handler: unknown field",
        ),
        (
            "  appHttpPipeline:\n    handlers:\n    - name: a\n      type: middleware.http.bearer\n      selektor: {}\n",
            "spec.appHttpPipeline.handlers[0].selektor: unknown field",
        ),
        (
            "  appHttpPipeline:\n    handlers:\n    - name: a\n      type: middleware.http.bearer\n      selector:\n        fields:\n        - field: path\n          valeu: /x\n",
            "spec.appHttpPipeline.handlers[0].selector.fields[0].valeu: unknown field",
        ),
        ("  ward:\n    prodMode: true\n", "spec.ward.prodMode: unknown field"),
    ];
    let mut wrong = Vec::new();
    for (spec, want) in cases {
        match load_err(spec) {
            Some(line) if line.starts_with("acl.yaml: Configuration \"acl\": ") && line.contains(want) => {}
            Some(line) => wrong.push(format!("{want}: wrong error {line:?}")),
            None => wrong.push(format!("{want}: loaded")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Strictness does not depend on the mode: a development configuration is refused the same way.
#[test]
fn misspelt_keys_are_refused_in_development_too() {
    for mode in ["false", "true"] {
        let spec = format!("  ward:\n    productionMode: {mode}\n  accessControl:\n    defaultActon: deny\n");
        let line = load_err(&spec).unwrap_or_else(|| panic!("productionMode {mode}: loaded"));
        assert!(line.contains("spec.accessControl.defaultActon: unknown field"), "{line}");
    }
}

/// Outside the security sections nothing is refused at load, and nothing is dropped either: it is listed for the
/// runtime to refuse (production) or warn about (development).
#[test]
fn unimplemented_sections_and_unknown_keys_are_listed() {
    let text = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprConfig\nspec:\n  tracing:\n    samplingRate: \"1\"\n    zipkin:\n      endpointAddress: http://localhost:9411/api/v2/spans\n  bogus: true\n  metric:\n    enabled: false\n";
    let c = configuration_from_yaml(Path::new("config.yaml"), text.as_bytes()).expect("loads");
    let listed: Vec<(&str, UnsupportedKind)> = c.unsupported.iter().map(|u| (u.field.as_str(), u.kind)).collect();
    assert_eq!(
        listed,
        [("spec.bogus", UnsupportedKind::UnknownKey), ("spec.tracing.zipkin", UnsupportedKind::NotImplemented)],
        "`metric: {{enabled: false}}` only switches off what ward does not have"
    );
    let lines: Vec<String> = c.unsupported.iter().map(|u| c.unsupported_error(u).to_string()).collect();
    assert_eq!(
        lines,
        [
            "config.yaml: Configuration \"daprConfig\": spec.bogus: unknown field, not part of Dapr's Configuration schema; known keys here: accessControl, secrets, api, components, mtls, httpPipeline, appHttpPipeline, ward, nameResolution, logging, features, tracing, metric, metrics, wasm, workflow",
            "config.yaml: Configuration \"daprConfig\": spec.tracing.zipkin: not implemented: ward exports traces over OTLP (spec.tracing.otel) and to stdout, not to Zipkin",
        ]
    );
    assert!(c.check_unsupported().is_err());
}
