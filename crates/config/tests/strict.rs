//! Strict security sections: an unknown or misspelt key inside `accessControl`, `api`, `secrets`, `components`,
//! `mtls`, `httpPipeline`, `appHttpPipeline` or `spec.ward` is a load error naming file, resource and field, so a
//! typo can never quietly weaken a control (a misspelt `defaultActon: deny` must not fall back to allow).

use std::path::Path;

use ward_config::configuration_from_yaml;

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
