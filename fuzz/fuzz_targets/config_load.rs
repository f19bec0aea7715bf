//! Fuzzes Configuration loading (`ward_config::configuration_from_yaml`) and the access-control compilation every
//! sidecar runs on it. Invariants: never panics; a refusal is one line of bounded length (the value echoed at most
//! ~100 characters); and what loads is what enforces: the parsed `accessControl`, written back as a canonical
//! document and loaded again, is the same spec and decides every probe request (each policy's caller, each
//! operation name and a few others, with and without verbs, HTTP and gRPC, and an unauthenticated caller)
//! exactly as the one loaded from the input.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ward_policy::spec::AccessControlSpec;
use ward_policy::{AccessControl, AclRequest, AppProtocol, Caller, HttpVerb};

/// The longest error line the loader may produce: path + resource name (100) + field (120) + message (400) and
/// the separators, with margin.
const MAX_ERROR_LINE: usize = 800;

fn canonical(spec: &AccessControlSpec) -> String {
    let policies = spec.policies.as_ref().map(|policies| {
        policies
            .iter()
            .map(|p| {
                serde_json::json!({
                    "appId": p.app_id,
                    "namespace": p.namespace,
                    "trustDomain": p.trust_domain,
                    "defaultAction": p.default_action,
                    "operations": p.operations.iter().map(|o| serde_json::json!({
                        "name": o.name,
                        "httpVerb": o.http_verb,
                        "action": o.action,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect::<Vec<_>>()
    });
    let mut access_control = serde_json::Map::new();
    if let Some(action) = &spec.default_action {
        access_control.insert("defaultAction".into(), action.clone().into());
    }
    if let Some(td) = &spec.trust_domain {
        access_control.insert("trustDomain".into(), td.clone().into());
    }
    if let Some(policies) = policies {
        access_control.insert("policies".into(), policies.into());
    }
    // JSON is YAML: the canonical form goes through the same loader as the input.
    serde_json::json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "metadata": {"name": "canonical"},
        "spec": {"accessControl": access_control},
    })
    .to_string()
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.yaml");
    let configuration = match ward_config::configuration_from_yaml(path, data) {
        Ok(configuration) => configuration,
        Err(err) => {
            let line = err.to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(line.chars().count() <= MAX_ERROR_LINE, "{} chars", line.chars().count());
            return;
        }
    };
    let Some(spec) = configuration.access_control.as_ref() else { return };
    let Ok(acl) = AccessControl::compile(spec) else { return };

    let again = ward_config::configuration_from_yaml(path, canonical(spec).as_bytes()).expect("canonical form loads");
    let respec = again.access_control.as_ref().expect("canonical form keeps accessControl");
    assert_eq!(respec.default_action, spec.default_action);
    assert_eq!(respec.trust_domain, spec.trust_domain);
    assert_eq!(respec.policies, spec.policies);
    let reacl = AccessControl::compile(respec).expect("the same rules compile");

    let mut operations: Vec<&str> = vec!["", "/", "x", "/x/y", "admin"];
    let mut callers = vec![None, Some(Caller { trust_domain: "public", namespace: "default", app_id: "other" })];
    for policy in spec.policies.iter().flatten().take(8) {
        callers.push(Some(Caller {
            trust_domain: &policy.trust_domain,
            namespace: &policy.namespace,
            app_id: &policy.app_id,
        }));
        operations.extend(policy.operations.iter().take(8).map(|o| o.name.as_str()));
    }
    let verbs = [None, Some(HttpVerb::ALL[0]), Some(HttpVerb::ALL[HttpVerb::ALL.len() - 1])];
    for caller in &callers {
        for operation in &operations {
            for verb in verbs {
                for app_protocol in [AppProtocol::Http, AppProtocol::Grpc] {
                    let req = AclRequest { caller: *caller, operation, verb, app_protocol };
                    assert_eq!(acl.decide(&req), reacl.decide(&req), "{req:?}");
                }
            }
        }
    }
});
