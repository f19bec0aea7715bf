//! The shape of Dapr's `kind: Configuration`, key by key, and what ward does with each key: the one table that
//! decides whether a key is applied, parsed but not implemented, unknown (listed so the runtime can refuse or warn),
//! or a load error.
//!
//! Owns: [`CONFIGURATION`] (Dapr's `pkg/config/configuration.go` `ConfigurationSpec` plus ward's `spec.ward`), the
//! walk over a document's generic tree that applies it, and the [`UnsupportedField`] list that walk produces.
//! Does not: check values or types (the typed serde pass in `configuration.rs` does, with its own path-naming
//! errors), decide what the runtime does with an unsupported field (refuse in production, warn in development:
//! the sidecar's settings do that), or know about features (their names are judged in `configuration.rs`).
//!
//! The rules:
//! - inside a *strict* section (`accessControl`, `secrets`, `api`, `components`, `mtls`, `httpPipeline`,
//!   `appHttpPipeline`, `ward`), an unknown key is a load error in every mode: a misspelt `defaultActon: deny`
//!   must never leave the default `allow` in force;
//! - anywhere, a key that differs from a known key only in ASCII case is a load error: Dapr matches keys
//!   case-insensitively and would honour it, so ward cannot quietly skip it;
//! - elsewhere, an unknown key is listed as [`UnsupportedKind::UnknownKey`];
//! - a key ward parses but does not implement is listed as [`UnsupportedKind::NotImplemented`] when its value asks
//!   for something (see [`requests_something`]); its inside is not walked further.

use std::fmt;

use serde_json::Value;

/// What ward does with one key of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Parsed into a typed field of [`crate::Configuration`] for the runtime to apply.
    Applied,
    /// Parsed (Dapr defines it) but ward does not implement it; the text says what is missing, for the warning.
    NotImplemented(&'static str),
}

/// The shape of a value.
#[derive(Debug)]
pub(crate) enum Shape {
    /// A scalar, or a value whose inside is not Dapr's schema (e.g. `nameResolution.configuration`, free-form
    /// component metadata; `metadata`, Kubernetes' object metadata). Not walked.
    Value,
    /// A mapping with these keys.
    Map(&'static [Key]),
    /// A sequence whose elements have this shape.
    List(&'static Shape),
}

/// One key of a mapping.
#[derive(Debug)]
pub(crate) struct Key {
    pub name: &'static str,
    pub shape: Shape,
    pub status: Status,
    /// Unknown keys anywhere below this key are load errors (security sections).
    pub strict: bool,
}

const fn applied(name: &'static str) -> Key {
    Key { name, shape: Shape::Value, status: Status::Applied, strict: false }
}

const fn section(name: &'static str, shape: Shape) -> Key {
    Key { name, shape, status: Status::Applied, strict: false }
}

const fn strict(name: &'static str, shape: Shape) -> Key {
    Key { name, shape, status: Status::Applied, strict: true }
}

const fn not_implemented(name: &'static str, why: &'static str) -> Key {
    Key { name, shape: Shape::Value, status: Status::NotImplemented(why), strict: false }
}

const OPERATION: &[Key] = &[applied("name"), applied("httpVerb"), applied("action")];
const APP_POLICY: &[Key] = &[
    applied("appId"),
    applied("namespace"),
    applied("trustDomain"),
    applied("defaultAction"),
    section("operations", Shape::List(&Shape::Map(OPERATION))),
];
const ACCESS_CONTROL: &[Key] =
    &[applied("defaultAction"), applied("trustDomain"), section("policies", Shape::List(&Shape::Map(APP_POLICY)))];
const SECRET_SCOPE: &[Key] =
    &[applied("storeName"), applied("defaultAccess"), applied("allowedSecrets"), applied("deniedSecrets")];
const API_RULE: &[Key] = &[applied("name"), applied("version"), applied("protocol")];
const SELECTOR_FIELD: &[Key] = &[applied("field"), applied("value")];
const SELECTOR: &[Key] = &[section("fields", Shape::List(&Shape::Map(SELECTOR_FIELD)))];
const HANDLER: &[Key] =
    &[applied("name"), applied("type"), applied("version"), section("selector", Shape::Map(SELECTOR))];
const PIPELINE: &[Key] = &[section("handlers", Shape::List(&Shape::Map(HANDLER)))];
const API_LOGGING: &[Key] = &[applied("enabled"), applied("obfuscateURLs"), applied("omitHealthChecks")];
const FEATURE: &[Key] = &[applied("name"), applied("enabled")];

/// The sidecar takes its sentry address and control-plane trust domain from flags (as daprd does; in Dapr these
/// keys are read by the operator and injector), so a value here would not be used.
const FROM_FLAGS: &str = "the sidecar takes it from its command-line flags (--sentry-address, --control-plane-trust-domain), not from the Configuration";

const MTLS: &[Key] = &[
    applied("enabled"),
    applied("workloadCertTTL"),
    applied("allowedClockSkew"),
    not_implemented("sentryAddress", FROM_FLAGS),
    not_implemented("controlPlaneTrustDomain", FROM_FLAGS),
    not_implemented(
        "tokenValidators",
        "sentry token validators are configured with `ward sentry --token-validator`, not in a Configuration",
    ),
];
const NAME_RESOLUTION: &[Key] = &[applied("component"), applied("version"), applied("configuration")];
const LOGGING: &[Key] = &[section("apiLogging", Shape::Map(API_LOGGING))];
const GRANT: &[Key] = &[applied("appId"), applied("namespace"), applied("spiffeId"), applied("capabilities")];
const CAPABILITY_ROUTE: &[Key] = &[applied("name"), applied("httpVerb"), applied("requires")];
const CAPABILITIES: &[Key] = &[
    section("grants", Shape::List(&Shape::Map(GRANT))),
    section("routes", Shape::List(&Shape::Map(CAPABILITY_ROUTE))),
];
const PROVENANCE: &[Key] = &[applied("enabled")];
const MCP_RULE: &[Key] = &[applied("callers"), applied("allow"), applied("deny")];
const MCP: &[Key] = &[
    applied("endpoint"),
    applied("defaultAction"),
    section("rules", Shape::List(&Shape::Map(MCP_RULE))),
    applied("passthroughUnknownMethods"),
];
const AUDIT: &[Key] = &[applied("fsync"), applied("otlp")];
const OTEL: &[Key] =
    &[applied("endpointAddress"), applied("protocol"), applied("isSecure"), applied("headers"), applied("timeout")];
const TRACING: &[Key] = &[
    applied("samplingRate"),
    applied("stdout"),
    section("otel", Shape::Map(OTEL)),
    not_implemented("zipkin", "ward exports traces over OTLP (spec.tracing.otel) and to stdout, not to Zipkin"),
];
const WARD: &[Key] = &[
    applied("productionMode"),
    applied("auditLog"),
    section("audit", Shape::Map(AUDIT)),
    applied("maxBodySize"),
    section("mcp", Shape::Map(MCP)),
    section("capabilities", Shape::Map(CAPABILITIES)),
    section("provenance", Shape::Map(PROVENANCE)),
    section("appIdBindings", Shape::List(&Shape::Map(APP_ID_BINDING))),
];
const APP_ID_BINDING: &[Key] = &[applied("namespace"), applied("appId"), applied("serviceAccounts")];

/// `spec` of a Configuration: every section of Dapr's `ConfigurationSpec`, plus `ward`.
const SPEC: &[Key] = &[
    strict("accessControl", Shape::Map(ACCESS_CONTROL)),
    strict("secrets", Shape::Map(&[section("scopes", Shape::List(&Shape::Map(SECRET_SCOPE)))])),
    strict(
        "api",
        Shape::Map(&[
            section("allowed", Shape::List(&Shape::Map(API_RULE))),
            section("denied", Shape::List(&Shape::Map(API_RULE))),
        ]),
    ),
    // A misspelt denylist would let a denied component type load: as strict as the other controls.
    strict("components", Shape::Map(&[applied("deny")])),
    strict("mtls", Shape::Map(MTLS)),
    strict("httpPipeline", Shape::Map(PIPELINE)),
    strict("appHttpPipeline", Shape::Map(PIPELINE)),
    strict("ward", Shape::Map(WARD)),
    section("nameResolution", Shape::Map(NAME_RESOLUTION)),
    section("logging", Shape::Map(LOGGING)),
    // Which feature names ward implements is decided per entry (`configuration.rs`), not by the schema.
    section("features", Shape::List(&Shape::Map(FEATURE))),
    section("tracing", Shape::Map(TRACING)),
    not_implemented("metric", "ward does not export metrics yet"),
    not_implemented("metrics", "ward does not export metrics yet"),
    not_implemented("wasm", "ward has no Wasm components"),
    not_implemented("workflow", "ward has no workflow engine"),
];

/// A whole `kind: Configuration` document. `metadata` is Kubernetes' object metadata: `name` and `namespace` are
/// read by the typed pass; labels, annotations and the rest configure nothing.
pub(crate) const CONFIGURATION: &[Key] =
    &[applied("apiVersion"), applied("kind"), applied("metadata"), section("spec", Shape::Map(SPEC))];

/// Why a field of a Configuration is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnsupportedKind {
    /// Not a key of Dapr's Configuration schema (a typo, or a field newer than ward knows), outside the strict
    /// sections.
    UnknownKey,
    /// A Dapr field or feature that ward parses but does not implement.
    NotImplemented,
}

/// Something a Configuration asks for that ward does not do. The runtime refuses it in production and warns about
/// it in development; it is never silently dropped. Holds no value from the file, only the field path and, for a
/// feature, its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnsupportedField {
    /// Where, e.g. `spec.tracing`, `spec.logging.bar`, `spec.features[2]`.
    pub field: String,
    pub kind: UnsupportedKind,
    /// What is not done, one short phrase (e.g. `ward does not export traces yet`, `feature "ActorStateTTL" is not
    /// implemented by ward`).
    pub detail: String,
}

impl fmt::Display for UnsupportedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            UnsupportedKind::UnknownKey => {
                write!(f, "{}: unknown field, not part of Dapr's Configuration schema; {}", self.field, self.detail)
            }
            UnsupportedKind::NotImplemented => write!(f, "{}: not implemented: {}", self.field, self.detail),
        }
    }
}

/// Walk `root` (a whole Configuration document) against [`CONFIGURATION`]. `Err((field, message))` for the first
/// load error; otherwise the unsupported fields (keys of a mapping in
/// the parsed tree's order, which is not the file's).
pub(crate) fn walk(root: &Value) -> Result<Vec<UnsupportedField>, (String, String)> {
    let mut out = Vec::new();
    walk_map(root, CONFIGURATION, "", false, &mut out)?;
    Ok(out)
}

/// `at.key`. A key from the file that is not a plain identifier (control characters, dots, brackets, very long) is
/// written quoted and escaped, `at["a\nb"]`, so an unknown key cannot forge a log line or fake a path.
fn join(at: &str, key: &str) -> String {
    let plain =
        !key.is_empty() && key.len() <= 100 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (plain, at.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{at}.{key}"),
        (false, _) => format!("{at}[{}]", crate::error::quoted(key)),
    }
}

fn walk_shape(
    value: &Value,
    shape: &Shape,
    at: &str,
    strict: bool,
    out: &mut Vec<UnsupportedField>,
) -> Result<(), (String, String)> {
    match shape {
        Shape::Value => Ok(()),
        Shape::Map(keys) => walk_map(value, keys, at, strict, out),
        Shape::List(element) => {
            // Anything but a sequence is a type error the typed pass reports with its path.
            for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                walk_shape(item, element, &format!("{at}[{i}]"), strict, out)?;
            }
            Ok(())
        }
    }
}

fn walk_map(
    value: &Value,
    keys: &[Key],
    at: &str,
    strict: bool,
    out: &mut Vec<UnsupportedField>,
) -> Result<(), (String, String)> {
    // Anything but a mapping is a type error the typed pass reports with its path.
    let Value::Object(map) = value else {
        return Ok(());
    };
    for (name, child) in map {
        let field = join(at, name);
        let Some(key) = keys.iter().find(|k| k.name == name) else {
            if let Some(exact) = keys.iter().find(|k| k.name.eq_ignore_ascii_case(name)) {
                return Err((
                    field,
                    format!(
                        "key differs from \"{}\" only in case; write \"{}\" (Dapr would accept it, ward requires the exact spelling)",
                        exact.name, exact.name
                    ),
                ));
            }
            if strict {
                return Err((field, format!("unknown field; expected one of: {}", expected(keys))));
            }
            out.push(UnsupportedField {
                field,
                kind: UnsupportedKind::UnknownKey,
                detail: format!("known keys here: {}", expected(keys)),
            });
            continue;
        };
        match key.status {
            Status::NotImplemented(why) => {
                if requests_something(child) {
                    out.push(UnsupportedField {
                        field,
                        kind: UnsupportedKind::NotImplemented,
                        detail: why.to_string(),
                    });
                }
            }
            Status::Applied => walk_shape(child, &key.shape, &field, strict || key.strict, out)?,
        }
    }
    Ok(())
}

fn expected(keys: &[Key]) -> String {
    keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Whether a value of a not-implemented field asks for anything. A field ward does not implement at all is honoured
/// when it is absent, null, empty, or only switches things off (`metric: {enabled: false}`, `tracing: {stdout:
/// false}`): every scalar inside is `false`, `0`, `""` or null. Anything else is a request ward cannot meet.
pub(crate) fn requests_something(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(requests_something),
        Value::Object(map) => map.values().any(requests_something),
    }
}

/// Every key path of the schema with its status and strictness (`spec.accessControl.policies[].appId`), for the
/// test that enumerates Dapr's fields.
#[cfg(test)]
pub(crate) fn paths() -> Vec<(String, Status, bool)> {
    fn add(keys: &[Key], at: &str, strict: bool, out: &mut Vec<(String, Status, bool)>) {
        for key in keys {
            let path = join(at, key.name);
            let strict = strict || key.strict;
            out.push((path.clone(), key.status, strict));
            let mut shape = &key.shape;
            let mut path = path;
            while let Shape::List(element) = shape {
                path.push_str("[]");
                shape = element;
            }
            if let Shape::Map(inner) = shape {
                add(inner, &path, strict, out);
            }
        }
    }
    let mut out = Vec::new();
    add(CONFIGURATION, "", false, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn off_switches_request_nothing() {
        for v in
            [json!(null), json!({}), json!([]), json!({"enabled": false}), json!({"stdout": false, "samplingRate": ""})]
        {
            assert!(!requests_something(&v), "{v}");
        }
        for v in [
            json!({"samplingRate": "1"}),
            json!({"enabled": true}),
            json!([{"name": "jwks"}]),
            json!({"maxConcurrentWorkflowInvocations": 5}),
            json!("x"),
        ] {
            assert!(requests_something(&v), "{v}");
        }
    }

    #[test]
    fn strictness_is_inherited_and_unknown_keys_elsewhere_are_listed() {
        let doc = json!({
            "spec": {
                "logging": {"bar": 1, "apiLogging": {"enabled": true, "baz": true}},
                "foo": {"x": 1},
                "tracing": {"samplingRate": "1", "typo": 1, "zipkin": {"endpointAddress": "http://z", "x": 1}},
            },
            "extra": 1,
        });
        let listed = walk(&doc).expect("walks");
        let fields: Vec<(&str, UnsupportedKind)> = listed.iter().map(|u| (u.field.as_str(), u.kind)).collect();
        assert!(fields.contains(&("spec.logging.bar", UnsupportedKind::UnknownKey)), "{fields:?}");
        assert!(fields.contains(&("spec.logging.apiLogging.baz", UnsupportedKind::UnknownKey)), "{fields:?}");
        assert!(fields.contains(&("spec.foo", UnsupportedKind::UnknownKey)), "{fields:?}");
        assert!(fields.contains(&("extra", UnsupportedKind::UnknownKey)), "{fields:?}");
        assert!(fields.contains(&("spec.tracing.typo", UnsupportedKind::UnknownKey)), "{fields:?}");
        assert!(fields.contains(&("spec.tracing.zipkin", UnsupportedKind::NotImplemented)), "{fields:?}");
        assert_eq!(fields.len(), 6, "nothing inside a not-implemented section is walked: {fields:?}");

        let deep =
            json!({"spec": {"accessControl": {"policies": [{"operations": [{"name": "/a", "verb": ["GET"]}]}]}}});
        let (field, message) = walk(&deep).expect_err("strict");
        assert_eq!(field, "spec.accessControl.policies[0].operations[0].verb");
        assert!(message.starts_with("unknown field; expected one of: name, httpVerb, action"), "{message}");
    }

    #[test]
    fn odd_keys_are_quoted_in_field_paths() {
        let doc = json!({"spec": {"a\nb": 1, "x.y": 2, "ok_key-1": 3}});
        let fields: Vec<String> = walk(&doc).expect("walks").into_iter().map(|u| u.field).collect();
        assert!(fields.contains(&"spec[\"a\\nb\"]".to_string()), "{fields:?}");
        assert!(fields.contains(&"spec[\"x.y\"]".to_string()), "{fields:?}");
        assert!(fields.contains(&"spec.ok_key-1".to_string()), "{fields:?}");
        assert!(fields.iter().all(|f| !f.contains('\n')), "{fields:?}");
    }

    #[test]
    fn case_variants_are_errors_even_outside_strict_sections() {
        let doc = json!({"spec": {"logging": {"apilogging": {"enabled": true}}}});
        let (field, message) = walk(&doc).expect_err("case");
        assert_eq!(field, "spec.logging.apilogging");
        assert!(message.contains("only in case"), "{message}");
    }
}
