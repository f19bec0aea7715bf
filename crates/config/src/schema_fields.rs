//! The test that enumerates Dapr's Configuration fields (issue 11, "Done when"): every field of Dapr's
//! `ConfigurationSpec` (dapr/dapr `pkg/config/configuration.go`, checked against the 2026-08 master; plus
//! `metadata` and ward's `spec.ward`) is set in a file, the file is loaded, and the field must end up in exactly one
//! of three places: a typed field of [`Configuration`] carrying the value, an entry of
//! [`Configuration::unsupported`], or a load error. A second check ties this list to the schema table, so a key
//! added to the table without a case here, or a case the table does not know, fails too.
//!
//! The list below is written from Dapr's source, not derived from `schema.rs`, on purpose: it is the independent
//! witness.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::schema::{Status, UnsupportedKind, paths};
use crate::{Configuration, configuration_from_yaml};

/// Where a field must end up.
enum Expect {
    /// Exposed typed; the function checks the value arrived.
    Typed(fn(&Configuration) -> bool),
    /// Listed in `unsupported` at this field path with this kind.
    Listed(&'static str, UnsupportedKind),
    /// A load error whose line contains this text.
    Error(&'static str),
}

struct Case {
    /// The Dapr field, `[]` for any list index.
    field: &'static str,
    /// What to write: (path with indices, value). The first entry sets the field; the others are companions the
    /// section needs to be valid (e.g. an operation's `name`).
    set: Vec<(&'static str, Value)>,
    expect: Expect,
}

fn case(field: &'static str, set: Vec<(&'static str, Value)>, expect: Expect) -> Case {
    Case { field, set, expect }
}

use Expect::{Error, Listed, Typed};
use UnsupportedKind::NotImplemented;

fn otel(c: &Configuration) -> Option<&crate::OtelSpec> {
    c.tracing.as_ref().and_then(|t| t.otel.as_ref())
}

fn cases() -> Vec<Case> {
    vec![
        // the document header
        case("apiVersion", vec![("apiVersion", json!("dapr.io/v2"))], Error("apiVersion: unsupported apiVersion")),
        case("kind", vec![("kind", json!("Configurations"))], Error("expected exactly one `kind: Configuration`")),
        // metadata (Kubernetes object metadata; only name and namespace mean anything to a sidecar)
        case("metadata.name", vec![("metadata.name", json!("daprConfig"))], Typed(|c| c.name == "daprConfig")),
        case(
            "metadata.namespace",
            vec![("metadata.namespace", json!("prod"))],
            Typed(|c| c.namespace.as_deref() == Some("prod")),
        ),
        // accessControl
        case(
            "spec.accessControl.defaultAction",
            vec![("spec.accessControl.defaultAction", json!("deny"))],
            Typed(|c| c.access_control.as_ref().and_then(|a| a.default_action.as_deref()) == Some("deny")),
        ),
        case(
            "spec.accessControl.trustDomain",
            vec![("spec.accessControl.trustDomain", json!("td.example"))],
            Typed(|c| c.access_control.as_ref().and_then(|a| a.trust_domain.as_deref()) == Some("td.example")),
        ),
        case(
            "spec.accessControl.policies[].appId",
            vec![("spec.accessControl.policies[0].appId", json!("app1"))],
            Typed(|c| policy(c).is_some_and(|p| p.app_id == "app1")),
        ),
        case(
            "spec.accessControl.policies[].defaultAction",
            vec![("spec.accessControl.policies[0].defaultAction", json!("allow"))],
            Typed(|c| policy(c).is_some_and(|p| p.default_action.as_deref() == Some("allow"))),
        ),
        case(
            "spec.accessControl.policies[].trustDomain",
            vec![("spec.accessControl.policies[0].trustDomain", json!("public"))],
            Typed(|c| policy(c).is_some_and(|p| p.trust_domain == "public")),
        ),
        case(
            "spec.accessControl.policies[].namespace",
            vec![("spec.accessControl.policies[0].namespace", json!("ns1"))],
            Typed(|c| policy(c).is_some_and(|p| p.namespace == "ns1")),
        ),
        case(
            "spec.accessControl.policies[].operations[].name",
            vec![("spec.accessControl.policies[0].operations[0].name", json!("/op"))],
            Typed(|c| policy(c).is_some_and(|p| p.operations.first().is_some_and(|o| o.name == "/op"))),
        ),
        case(
            "spec.accessControl.policies[].operations[].httpVerb",
            vec![
                ("spec.accessControl.policies[0].operations[0].httpVerb", json!(["GET"])),
                ("spec.accessControl.policies[0].operations[0].name", json!("/op")),
            ],
            Typed(|c| policy(c).is_some_and(|p| p.operations.first().is_some_and(|o| o.http_verb == ["GET"]))),
        ),
        case(
            "spec.accessControl.policies[].operations[].action",
            vec![
                ("spec.accessControl.policies[0].operations[0].action", json!("deny")),
                ("spec.accessControl.policies[0].operations[0].name", json!("/op")),
            ],
            Typed(|c| {
                policy(c).is_some_and(|p| p.operations.first().is_some_and(|o| o.action.as_deref() == Some("deny")))
            }),
        ),
        // secrets
        case(
            "spec.secrets.scopes[].storeName",
            vec![("spec.secrets.scopes[0].storeName", json!("vault"))],
            Typed(|c| scope(c).is_some_and(|s| s.store_name == "vault")),
        ),
        case(
            "spec.secrets.scopes[].defaultAccess",
            vec![
                ("spec.secrets.scopes[0].defaultAccess", json!("deny")),
                ("spec.secrets.scopes[0].storeName", json!("vault")),
            ],
            Typed(|c| scope(c).is_some_and(|s| s.default_access.as_deref() == Some("deny"))),
        ),
        case(
            "spec.secrets.scopes[].allowedSecrets",
            vec![
                ("spec.secrets.scopes[0].allowedSecrets", json!(["a"])),
                ("spec.secrets.scopes[0].storeName", json!("vault")),
            ],
            Typed(|c| scope(c).is_some_and(|s| s.allowed_secrets == ["a"])),
        ),
        case(
            "spec.secrets.scopes[].deniedSecrets",
            vec![
                ("spec.secrets.scopes[0].deniedSecrets", json!(["b"])),
                ("spec.secrets.scopes[0].storeName", json!("vault")),
            ],
            Typed(|c| scope(c).is_some_and(|s| s.denied_secrets == ["b"])),
        ),
        // api
        case(
            "spec.api.allowed[].name",
            vec![("spec.api.allowed[0].name", json!("state"))],
            Typed(|c| api_rule(c, true).is_some_and(|r| r.name == "state")),
        ),
        case(
            "spec.api.allowed[].version",
            vec![("spec.api.allowed[0].version", json!("v1.0")), ("spec.api.allowed[0].name", json!("state"))],
            Typed(|c| api_rule(c, true).is_some_and(|r| r.version == "v1.0")),
        ),
        case(
            "spec.api.allowed[].protocol",
            vec![("spec.api.allowed[0].protocol", json!("grpc")), ("spec.api.allowed[0].name", json!("state"))],
            Typed(|c| api_rule(c, true).is_some_and(|r| r.protocol == "grpc")),
        ),
        case(
            "spec.api.denied[].name",
            vec![("spec.api.denied[0].name", json!("invoke"))],
            Typed(|c| api_rule(c, false).is_some_and(|r| r.name == "invoke")),
        ),
        case(
            "spec.api.denied[].version",
            vec![("spec.api.denied[0].version", json!("v1.0")), ("spec.api.denied[0].name", json!("invoke"))],
            Typed(|c| api_rule(c, false).is_some_and(|r| r.version == "v1.0")),
        ),
        case(
            "spec.api.denied[].protocol",
            vec![("spec.api.denied[0].protocol", json!("http")), ("spec.api.denied[0].name", json!("invoke"))],
            Typed(|c| api_rule(c, false).is_some_and(|r| r.protocol == "http")),
        ),
        // components
        case(
            "spec.components.deny",
            vec![("spec.components.deny", json!(["bindings.smtp"]))],
            Typed(|c| c.component_denied("bindings.smtp", "v1")),
        ),
        // nameResolution
        case(
            "spec.nameResolution.component",
            vec![("spec.nameResolution.component", json!("sqlite"))],
            Typed(|c| c.name_resolution.as_ref().is_some_and(|n| n.component == "sqlite")),
        ),
        case(
            "spec.nameResolution.version",
            vec![("spec.nameResolution.version", json!("v1")), ("spec.nameResolution.component", json!("sqlite"))],
            Typed(|c| c.name_resolution.as_ref().is_some_and(|n| n.version.as_deref() == Some("v1"))),
        ),
        case(
            "spec.nameResolution.configuration",
            vec![
                ("spec.nameResolution.configuration", json!({"connectionString": "/tmp/nr.db"})),
                ("spec.nameResolution.component", json!("sqlite")),
            ],
            Typed(|c| {
                c.name_resolution
                    .as_ref()
                    .is_some_and(|n| n.configuration.get("connectionString").map(String::as_str) == Some("/tmp/nr.db"))
            }),
        ),
        // logging
        case(
            "spec.logging.apiLogging.enabled",
            vec![("spec.logging.apiLogging.enabled", json!(true))],
            Typed(|c| c.api_logging.enabled),
        ),
        case(
            "spec.logging.apiLogging.obfuscateURLs",
            vec![("spec.logging.apiLogging.obfuscateURLs", json!(true))],
            Typed(|c| c.api_logging.obfuscate_urls),
        ),
        case(
            "spec.logging.apiLogging.omitHealthChecks",
            vec![("spec.logging.apiLogging.omitHealthChecks", json!(true))],
            Typed(|c| c.api_logging.omit_health_checks),
        ),
        // mtls
        case("spec.mtls.enabled", vec![("spec.mtls.enabled", json!(true))], Typed(|c| c.mtls.enabled == Some(true))),
        case(
            "spec.mtls.workloadCertTTL",
            vec![("spec.mtls.workloadCertTTL", json!("1h"))],
            Typed(|c| c.mtls.workload_cert_ttl == Some(Duration::from_secs(3600))),
        ),
        case(
            "spec.mtls.allowedClockSkew",
            vec![("spec.mtls.allowedClockSkew", json!("1m"))],
            Typed(|c| c.mtls.allowed_clock_skew == Some(Duration::from_secs(60))),
        ),
        case(
            "spec.mtls.sentryAddress",
            vec![("spec.mtls.sentryAddress", json!("localhost:50001"))],
            Listed("spec.mtls.sentryAddress", NotImplemented),
        ),
        case(
            "spec.mtls.controlPlaneTrustDomain",
            vec![("spec.mtls.controlPlaneTrustDomain", json!("cluster.local"))],
            Listed("spec.mtls.controlPlaneTrustDomain", NotImplemented),
        ),
        case(
            "spec.mtls.tokenValidators[].name",
            vec![("spec.mtls.tokenValidators[0].name", json!("jwks"))],
            Listed("spec.mtls.tokenValidators", NotImplemented),
        ),
        case(
            "spec.mtls.tokenValidators[].options",
            vec![("spec.mtls.tokenValidators[0].options", json!({"source": "https://issuer.example/jwks"}))],
            Listed("spec.mtls.tokenValidators", NotImplemented),
        ),
        // pipelines: typed as HandlerSpec (the sidecar resolves each handler against its middleware components)
        case(
            "spec.httpPipeline.handlers[].name",
            vec![
                ("spec.httpPipeline.handlers[0].name", json!("bearer")),
                ("spec.httpPipeline.handlers[0].type", json!("middleware.http.bearer")),
            ],
            Typed(|c| c.http_pipeline.first().is_some_and(|h| h.name == "bearer")),
        ),
        case(
            "spec.httpPipeline.handlers[].type",
            vec![
                ("spec.httpPipeline.handlers[0].type", json!("middleware.http.bearer")),
                ("spec.httpPipeline.handlers[0].name", json!("bearer")),
            ],
            Typed(|c| c.http_pipeline.first().is_some_and(|h| h.type_ == "middleware.http.bearer")),
        ),
        case(
            "spec.httpPipeline.handlers[].version",
            vec![
                ("spec.httpPipeline.handlers[0].version", json!("v1")),
                ("spec.httpPipeline.handlers[0].name", json!("bearer")),
                ("spec.httpPipeline.handlers[0].type", json!("middleware.http.bearer")),
            ],
            Typed(|c| c.http_pipeline.first().is_some_and(|h| h.version.as_deref() == Some("v1"))),
        ),
        case(
            "spec.httpPipeline.handlers[].selector.fields[].field",
            vec![
                ("spec.httpPipeline.handlers[0].selector.fields[0].field", json!("path")),
                ("spec.httpPipeline.handlers[0].name", json!("bearer")),
                ("spec.httpPipeline.handlers[0].type", json!("middleware.http.bearer")),
            ],
            Typed(|c| c.http_pipeline.first().is_some_and(|h| h.selector.first().is_some_and(|s| s.0 == "path"))),
        ),
        case(
            "spec.httpPipeline.handlers[].selector.fields[].value",
            vec![
                ("spec.httpPipeline.handlers[0].selector.fields[0].value", json!("/v1.0/state")),
                ("spec.httpPipeline.handlers[0].name", json!("bearer")),
                ("spec.httpPipeline.handlers[0].type", json!("middleware.http.bearer")),
            ],
            Typed(|c| {
                c.http_pipeline.first().is_some_and(|h| h.selector.first().is_some_and(|s| s.1 == "/v1.0/state"))
            }),
        ),
        case(
            "spec.appHttpPipeline.handlers[].name",
            vec![
                ("spec.appHttpPipeline.handlers[0].name", json!("upper")),
                ("spec.appHttpPipeline.handlers[0].type", json!("middleware.http.uppercase")),
            ],
            Typed(|c| c.app_http_pipeline.first().is_some_and(|h| h.name == "upper")),
        ),
        case(
            "spec.appHttpPipeline.handlers[].type",
            vec![
                ("spec.appHttpPipeline.handlers[0].type", json!("middleware.http.uppercase")),
                ("spec.appHttpPipeline.handlers[0].name", json!("upper")),
            ],
            Typed(|c| c.app_http_pipeline.first().is_some_and(|h| h.type_ == "middleware.http.uppercase")),
        ),
        case(
            "spec.appHttpPipeline.handlers[].version",
            vec![
                ("spec.appHttpPipeline.handlers[0].version", json!("v1")),
                ("spec.appHttpPipeline.handlers[0].name", json!("upper")),
                ("spec.appHttpPipeline.handlers[0].type", json!("middleware.http.uppercase")),
            ],
            Typed(|c| c.app_http_pipeline.first().is_some_and(|h| h.version.as_deref() == Some("v1"))),
        ),
        case(
            "spec.appHttpPipeline.handlers[].selector.fields[].field",
            vec![
                ("spec.appHttpPipeline.handlers[0].selector.fields[0].field", json!("path")),
                ("spec.appHttpPipeline.handlers[0].name", json!("upper")),
                ("spec.appHttpPipeline.handlers[0].type", json!("middleware.http.uppercase")),
            ],
            Typed(|c| c.app_http_pipeline.first().is_some_and(|h| h.selector.first().is_some_and(|s| s.0 == "path"))),
        ),
        case(
            "spec.appHttpPipeline.handlers[].selector.fields[].value",
            vec![
                ("spec.appHttpPipeline.handlers[0].selector.fields[0].value", json!("/admin")),
                ("spec.appHttpPipeline.handlers[0].name", json!("upper")),
                ("spec.appHttpPipeline.handlers[0].type", json!("middleware.http.uppercase")),
            ],
            Typed(|c| c.app_http_pipeline.first().is_some_and(|h| h.selector.first().is_some_and(|s| s.1 == "/admin"))),
        ),
        // features: typed, and each enabled name ward does not implement is listed
        case(
            "spec.features[].name",
            vec![("spec.features[0].name", json!("HotReload")), ("spec.features[0].enabled", json!(true))],
            Typed(|c| c.feature_enabled("HotReload")),
        ),
        case(
            "spec.features[].enabled",
            vec![
                ("spec.features[1].enabled", json!(true)),
                ("spec.features[1].name", json!("ActorStateTTL")),
                ("spec.features[0].name", json!("HotReload")),
            ],
            Listed("spec.features[1]", NotImplemented),
        ),
        // ward's own extension
        case(
            "spec.ward.productionMode",
            vec![("spec.ward.productionMode", json!(true))],
            Typed(|c| c.ward.production_mode),
        ),
        case(
            "spec.ward.auditLog",
            vec![("spec.ward.auditLog", json!("/var/log/ward.jsonl"))],
            Typed(|c| c.ward.audit_log.as_deref() == Some(Path::new("/var/log/ward.jsonl"))),
        ),
        case(
            "spec.ward.audit.fsync",
            vec![("spec.ward.audit.fsync", json!("always"))],
            Typed(|c| c.ward.audit_fsync == Some(crate::AuditFsync::Always)),
        ),
        case(
            "spec.ward.maxBodySize",
            vec![("spec.ward.maxBodySize", json!("1Mi"))],
            Typed(|c| c.ward.max_body_size == Some(1024 * 1024)),
        ),
        case(
            "spec.ward.appIdBindings[].namespace",
            vec![
                ("spec.ward.appIdBindings[0].namespace", json!("shop")),
                ("spec.ward.appIdBindings[0].appId", json!("orders")),
                ("spec.ward.appIdBindings[0].serviceAccounts", json!(["orders"])),
            ],
            Typed(|c| c.ward.app_id_bindings.first().is_some_and(|b| b.namespace == "shop")),
        ),
        case(
            "spec.ward.appIdBindings[].appId",
            vec![
                ("spec.ward.appIdBindings[0].namespace", json!("shop")),
                ("spec.ward.appIdBindings[0].appId", json!("orders")),
                ("spec.ward.appIdBindings[0].serviceAccounts", json!(["orders"])),
            ],
            Typed(|c| c.ward.app_id_bindings.first().is_some_and(|b| b.app_id == "orders")),
        ),
        case(
            "spec.ward.appIdBindings[].serviceAccounts",
            vec![
                ("spec.ward.appIdBindings[0].namespace", json!("shop")),
                ("spec.ward.appIdBindings[0].appId", json!("orders")),
                ("spec.ward.appIdBindings[0].serviceAccounts", json!(["orders", "orders-v2"])),
            ],
            Typed(|c| c.ward.app_id_bindings.first().is_some_and(|b| b.service_accounts.len() == 2)),
        ),
        case(
            "spec.ward.capabilities.grants[].appId",
            vec![
                ("spec.ward.capabilities.grants[0].appId", json!("analytics")),
                ("spec.ward.capabilities.grants[0].namespace", json!("default")),
                ("spec.ward.capabilities.grants[0].capabilities", json!(["managed-table:read"])),
            ],
            Typed(|c| grant(c).is_some_and(|g| g.app_id.as_deref() == Some("analytics"))),
        ),
        case(
            "spec.ward.capabilities.grants[].namespace",
            vec![
                ("spec.ward.capabilities.grants[0].namespace", json!("prod")),
                ("spec.ward.capabilities.grants[0].appId", json!("analytics")),
            ],
            Typed(|c| grant(c).is_some_and(|g| g.namespace.as_deref() == Some("prod"))),
        ),
        case(
            "spec.ward.capabilities.grants[].spiffeId",
            vec![("spec.ward.capabilities.grants[0].spiffeId", json!("spiffe://td/ns/n/a"))],
            Typed(|c| {
                c.ward.capabilities.as_ref().is_some_and(|caps| {
                    caps.grants.iter().any(|g| g.spiffe_id.as_deref() == Some("spiffe://td/ns/n/a"))
                })
            }),
        ),
        case(
            "spec.ward.capabilities.grants[].capabilities",
            vec![("spec.ward.capabilities.grants[0].capabilities", json!(["a:b"]))],
            Typed(|c| grant(c).is_some_and(|g| g.capabilities.iter().any(|x| x == "a:b"))),
        ),
        case(
            "spec.ward.capabilities.routes[].name",
            vec![
                ("spec.ward.capabilities.routes[0].name", json!("/tables/*/rows")),
                ("spec.ward.capabilities.routes[0].requires", json!(["managed-table:read"])),
            ],
            Typed(|c| route(c).is_some_and(|r| r.name == "/tables/*/rows")),
        ),
        case(
            "spec.ward.capabilities.routes[].httpVerb",
            vec![
                ("spec.ward.capabilities.routes[0].httpVerb", json!(["GET"])),
                ("spec.ward.capabilities.routes[0].name", json!("/tables/*/rows")),
            ],
            Typed(|c| route(c).is_some_and(|r| r.http_verb == ["GET"])),
        ),
        case(
            "spec.ward.capabilities.routes[].requires",
            vec![
                ("spec.ward.capabilities.routes[0].requires", json!(["managed-table:read"])),
                ("spec.ward.capabilities.routes[0].name", json!("/tables/*/rows")),
            ],
            Typed(|c| route(c).is_some_and(|r| r.requires == ["managed-table:read"])),
        ),
        case(
            "spec.ward.provenance.enabled",
            vec![("spec.ward.provenance.enabled", json!(false))],
            Typed(|c| c.ward.provenance_enabled == Some(false)),
        ),
        case(
            "spec.ward.mcp.endpoint",
            vec![("spec.ward.mcp.endpoint", json!("/mcp"))],
            Typed(|c| c.ward.mcp.as_ref().is_some_and(|m| m.endpoint == "/mcp")),
        ),
        case(
            "spec.ward.mcp.defaultAction",
            vec![("spec.ward.mcp.defaultAction", json!("allow")), ("spec.ward.mcp.endpoint", json!("/mcp"))],
            Typed(|c| c.ward.mcp.as_ref().is_some_and(|m| m.default_action.as_deref() == Some("allow"))),
        ),
        case(
            "spec.ward.mcp.passthroughUnknownMethods",
            vec![("spec.ward.mcp.passthroughUnknownMethods", json!(true)), ("spec.ward.mcp.endpoint", json!("/mcp"))],
            Typed(|c| c.ward.mcp.as_ref().is_some_and(|m| m.passthrough_unknown_methods == Some(true))),
        ),
        case(
            "spec.ward.mcp.rules[].callers",
            vec![("spec.ward.mcp.rules[0].callers[0]", json!("agent")), ("spec.ward.mcp.endpoint", json!("/mcp"))],
            Typed(|c| c.ward.mcp.as_ref().is_some_and(|m| m.rules[0].callers == ["agent"])),
        ),
        case(
            "spec.ward.mcp.rules[].allow",
            vec![("spec.ward.mcp.rules[0].allow[0]", json!("search")), ("spec.ward.mcp.endpoint", json!("/mcp"))],
            Typed(|c| c.ward.mcp.as_ref().is_some_and(|m| m.rules[0].allow == ["search"])),
        ),
        case(
            "spec.ward.mcp.rules[].deny",
            vec![("spec.ward.mcp.rules[0].deny[0]", json!("delete_*")), ("spec.ward.mcp.endpoint", json!("/mcp"))],
            Typed(|c| c.ward.mcp.as_ref().is_some_and(|m| m.rules[0].deny == ["delete_*"])),
        ),
        // sections ward parses but does not implement
        // tracing (issue 17)
        case(
            "spec.tracing.samplingRate",
            vec![("spec.tracing.samplingRate", json!("0.5"))],
            Typed(|c| c.tracing.as_ref().is_some_and(|t| t.sampling_rate == Some(0.5))),
        ),
        case(
            "spec.tracing.stdout",
            vec![("spec.tracing.stdout", json!(true))],
            Typed(|c| c.tracing.as_ref().is_some_and(|t| t.stdout)),
        ),
        case(
            "spec.tracing.zipkin.endpointAddress",
            vec![("spec.tracing.zipkin.endpointAddress", json!("http://localhost:9411/api/v2/spans"))],
            Listed("spec.tracing.zipkin", NotImplemented),
        ),
        case(
            "spec.tracing.otel.protocol",
            vec![
                ("spec.tracing.otel.protocol", json!("grpc")),
                ("spec.tracing.otel.endpointAddress", json!("localhost:4317")),
            ],
            Typed(|c| otel(c).is_some_and(|o| o.protocol == crate::OtlpProtocol::Grpc)),
        ),
        case(
            "spec.tracing.otel.endpointAddress",
            vec![("spec.tracing.otel.endpointAddress", json!("localhost:4317"))],
            Typed(|c| otel(c).is_some_and(|o| o.endpoint_address == "localhost:4317")),
        ),
        case(
            "spec.tracing.otel.isSecure",
            vec![
                ("spec.tracing.otel.isSecure", json!(false)),
                ("spec.tracing.otel.endpointAddress", json!("localhost:4317")),
            ],
            Typed(|c| otel(c).is_some_and(|o| !o.is_secure)),
        ),
        case(
            "spec.tracing.otel.headers",
            vec![
                ("spec.tracing.otel.headers", json!(["a=b"])),
                ("spec.tracing.otel.endpointAddress", json!("localhost:4317")),
            ],
            Typed(|c| otel(c).is_some_and(|o| o.headers == [("a".to_owned(), "b".to_owned())])),
        ),
        case(
            "spec.tracing.otel.timeout",
            vec![
                ("spec.tracing.otel.timeout", json!("5s")),
                ("spec.tracing.otel.endpointAddress", json!("localhost:4317")),
            ],
            Typed(|c| otel(c).is_some_and(|o| o.timeout == Some(Duration::from_secs(5)))),
        ),
        case("spec.ward.audit.otlp", vec![("spec.ward.audit.otlp", json!(true))], Typed(|c| c.ward.audit_otlp)),
    ]
    .into_iter()
    .chain(metric_cases("metric"))
    .chain(metric_cases("metrics"))
    .chain([
        case(
            "spec.wasm.strictSandbox",
            vec![("spec.wasm.strictSandbox", json!(true))],
            Listed("spec.wasm", NotImplemented),
        ),
        case(
            "spec.workflow.maxConcurrentWorkflowInvocations",
            vec![("spec.workflow.maxConcurrentWorkflowInvocations", json!(10))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.maxConcurrentActivityInvocations",
            vec![("spec.workflow.maxConcurrentActivityInvocations", json!(10))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.globalMaxConcurrentWorkflowInvocations",
            vec![("spec.workflow.globalMaxConcurrentWorkflowInvocations", json!(10))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.globalMaxConcurrentActivityInvocations",
            vec![("spec.workflow.globalMaxConcurrentActivityInvocations", json!(10))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.workflowConcurrencyLimits[].name",
            vec![("spec.workflow.workflowConcurrencyLimits[0].name", json!("wf"))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.workflowConcurrencyLimits[].maxConcurrent",
            vec![("spec.workflow.workflowConcurrencyLimits[0].maxConcurrent", json!(2))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.activityConcurrencyLimits[].name",
            vec![("spec.workflow.activityConcurrencyLimits[0].name", json!("act"))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.activityConcurrencyLimits[].maxConcurrent",
            vec![("spec.workflow.activityConcurrencyLimits[0].maxConcurrent", json!(2))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.stateRetentionPolicy.anyTerminal",
            vec![("spec.workflow.stateRetentionPolicy.anyTerminal", json!("72h"))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.stateRetentionPolicy.completed",
            vec![("spec.workflow.stateRetentionPolicy.completed", json!("1h"))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.stateRetentionPolicy.failed",
            vec![("spec.workflow.stateRetentionPolicy.failed", json!("1h"))],
            Listed("spec.workflow", NotImplemented),
        ),
        case(
            "spec.workflow.stateRetentionPolicy.terminated",
            vec![("spec.workflow.stateRetentionPolicy.terminated", json!("1h"))],
            Listed("spec.workflow", NotImplemented),
        ),
    ])
    .collect()
}

/// `spec.metric` and `spec.metrics` (Dapr reads both, same `MetricSpec`).
fn metric_cases(section: &'static str) -> Vec<Case> {
    let listed: &'static str = if section == "metric" { "spec.metric" } else { "spec.metrics" };
    let fields: [(&'static str, Value); 11] = [
        ("enabled", json!(true)),
        ("recordErrorCodes", json!(true)),
        ("http.increasedCardinality", json!(true)),
        ("http.pathMatching", json!(["/orders/{id}"])),
        ("http.excludeVerbs", json!(true)),
        ("latencyDistributionBuckets", json!([1, 5, 10])),
        ("workflow.latencyDistributionBuckets", json!([1, 5])),
        ("workflow.latencyDistributionUnits", json!("1s")),
        ("rules[].name", json!("dapr_runtime_service_invocation_req_sent_total")),
        ("rules[].labels[].name", json!("method")),
        ("rules[].labels[].regex", json!({"orders/": "orders/.+"})),
    ];
    fields
        .into_iter()
        .map(|(sub, value)| {
            let field: &'static str = Box::leak(format!("spec.{section}.{sub}").into_boxed_str());
            let path: &'static str = Box::leak(format!("spec.{section}.{}", sub.replace("[]", "[0]")).into_boxed_str());
            case(field, vec![(path, value)], Listed(listed, NotImplemented))
        })
        .collect()
}

fn grant(c: &Configuration) -> Option<&ward_policy::spec::GrantSpec> {
    c.ward.capabilities.as_ref()?.grants.first()
}

fn route(c: &Configuration) -> Option<&ward_policy::spec::CapabilityRouteSpec> {
    c.ward.capabilities.as_ref()?.routes.first()
}

fn policy(c: &Configuration) -> Option<&ward_policy::spec::AppPolicySpec> {
    c.access_control.as_ref()?.policies.as_ref()?.first()
}

fn scope(c: &Configuration) -> Option<&ward_policy::spec::SecretScopeSpec> {
    c.secrets.as_ref()?.scopes.first()
}

fn api_rule(c: &Configuration, allowed: bool) -> Option<&ward_policy::spec::ApiRuleSpec> {
    let api = c.api.as_ref()?;
    if allowed { api.allowed.as_ref()?.first() } else { api.denied.as_ref()?.first() }
}

/// Set `path` (`a.b[0].c`) in `root`, creating mappings and sequences on the way.
fn set(root: &mut Value, path: &str, value: Value) {
    let mut steps: Vec<Result<&str, usize>> = Vec::new();
    for segment in path.split('.') {
        let (key, mut rest) = segment.split_once('[').map_or((segment, ""), |(k, r)| (k, r));
        steps.push(Ok(key));
        while !rest.is_empty() {
            let (index, after) = rest.split_once(']').expect("closing bracket");
            steps.push(Err(index.parse().expect("index")));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    let mut at = root;
    for step in steps {
        at = match step {
            Ok(key) => {
                if !at.is_object() {
                    *at = json!({});
                }
                at.as_object_mut().expect("object").entry(key).or_insert(Value::Null)
            }
            Err(index) => {
                if !at.is_array() {
                    *at = json!([]);
                }
                let items = at.as_array_mut().expect("array");
                while items.len() <= index {
                    items.push(Value::Null);
                }
                &mut items[index]
            }
        };
    }
    *at = value;
}

fn document(cases: &[&Case]) -> Value {
    let mut doc = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "c"}});
    for case in cases {
        for (path, value) in &case.set {
            set(&mut doc, path, value.clone());
        }
    }
    doc
}

fn load(doc: &Value) -> Result<Configuration, String> {
    // JSON is YAML: the file goes through the same parser as any hand-written one.
    configuration_from_yaml(Path::new("all-fields.yaml"), doc.to_string().as_bytes()).map_err(|e| e.to_string())
}

/// Whether `c` accounts for `case`; `Err` says how it does not.
fn accounted(case: &Case, loaded: &Result<Configuration, String>) -> Result<(), String> {
    match (&case.expect, loaded) {
        (Typed(check), Ok(c)) if check(c) => Ok(()),
        (Typed(_), Ok(c)) => Err(format!("not in the typed value: {c:?}")),
        (Listed(field, kind), Ok(c)) if c.unsupported.iter().any(|u| u.field == *field && u.kind == *kind) => Ok(()),
        (Listed(field, _), Ok(c)) => Err(format!("{field} not listed in unsupported: {:?}", c.unsupported)),
        (Error(text), Err(line)) if line.contains(text) => Ok(()),
        (Error(text), Ok(_)) => Err(format!("loaded, expected an error containing {text:?}")),
        (_, Err(line)) => Err(format!("load error: {line}")),
    }
}

#[test]
fn every_dapr_configuration_field_is_typed_listed_or_refused() {
    let cases = cases();
    let mut wrong = Vec::new();
    // Each field alone.
    for case in &cases {
        if let Err(why) = accounted(case, &load(&document(&[case]))) {
            wrong.push(format!("{}: {why}", case.field));
        }
    }
    // All of them in one file: nothing masks anything else.
    let all: Vec<&Case> = cases.iter().filter(|c| !matches!(c.expect, Error(_))).collect();
    let loaded = load(&document(&all));
    for case in &all {
        if let Err(why) = accounted(case, &loaded) {
            wrong.push(format!("{} (all fields in one file): {why}", case.field));
        }
    }
    // A Dapr field is never an unknown key.
    if let Ok(c) = &loaded {
        for u in c.unsupported.iter().filter(|u| u.kind == UnsupportedKind::UnknownKey) {
            wrong.push(format!("{}: a Dapr field was reported as an unknown key", u.field));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The schema table and the list above describe the same fields: every key of the table is exercised by a case,
/// and every case's field is a key of the table (or lies inside a key whose inside ward does not walk).
#[test]
fn schema_table_matches_the_enumerated_fields() {
    let cases = cases();
    let schema = paths();
    let mut wrong = Vec::new();
    for (path, status, _) in &schema {
        if !cases.iter().any(|c| {
            c.field == path || c.field.starts_with(&format!("{path}.")) || c.field.starts_with(&format!("{path}["))
        }) {
            wrong.push(format!("schema key {path} ({status:?}) has no case"));
        }
    }
    for case in &cases {
        let known = schema.iter().any(|(path, status, _)| {
            case.field == path
                || (matches!(status, Status::NotImplemented(_))
                    && (case.field.starts_with(&format!("{path}.")) || case.field.starts_with(&format!("{path}["))))
                || (path == "metadata" && case.field.starts_with("metadata."))
                || (path == "spec.nameResolution.configuration" && case.field.starts_with(&format!("{path}.")))
        });
        if !known {
            wrong.push(format!("case {} is not a key of the schema table", case.field));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Unknown keys and misspellings, the other half of the rules, one row each.
#[test]
fn unknown_keys_are_listed_outside_security_sections_and_refused_inside() {
    let rows = [
        case("spec.bogus", vec![("spec.bogus", json!(1))], Listed("spec.bogus", UnsupportedKind::UnknownKey)),
        case(
            "spec.logging.bar",
            vec![("spec.logging.bar", json!(true))],
            Listed("spec.logging.bar", UnsupportedKind::UnknownKey),
        ),
        case(
            "spec.nameResolution.extra",
            vec![("spec.nameResolution.extra", json!("x")), ("spec.nameResolution.component", json!("sqlite"))],
            Listed("spec.nameResolution.extra", UnsupportedKind::UnknownKey),
        ),
        case(
            "spec.features[].enabeld",
            vec![("spec.features[0].enabeld", json!(true)), ("spec.features[0].name", json!("HotReload"))],
            Listed("spec.features[0].enabeld", UnsupportedKind::UnknownKey),
        ),
        case("status", vec![("status", json!({"x": 1}))], Listed("status", UnsupportedKind::UnknownKey)),
        case(
            "spec.ward.prodMode",
            vec![("spec.ward.prodMode", json!(true))],
            Error("spec.ward.prodMode: unknown field"),
        ),
        case(
            "spec.ward.capabilities.grant",
            vec![("spec.ward.capabilities.grant", json!([]))],
            Error("spec.ward.capabilities.grant: unknown field"),
        ),
        case(
            "spec.ward.capabilities.routes[].require",
            vec![
                ("spec.ward.capabilities.routes[0].require", json!(["x"])),
                ("spec.ward.capabilities.routes[0].name", json!("/x")),
            ],
            Error("spec.ward.capabilities.routes[0].require: unknown field"),
        ),
        case(
            "spec.ward.provenance.enable",
            vec![("spec.ward.provenance.enable", json!(true))],
            Error("spec.ward.provenance.enable: unknown field"),
        ),
        case(
            "spec.accessControl.policies[].defaultActon",
            vec![("spec.accessControl.policies[0].defaultActon", json!("deny"))],
            Error("spec.accessControl.policies[0].defaultActon: unknown field"),
        ),
        case(
            "spec.mtls.tokenValidator",
            vec![("spec.mtls.tokenValidator", json!([]))],
            Error("spec.mtls.tokenValidator: unknown field"),
        ),
        case(
            "spec.Tracing",
            vec![("spec.Tracing", json!({}))],
            Error("spec.Tracing: key differs from \"tracing\" only in case"),
        ),
    ];
    let mut wrong = Vec::new();
    for case in rows {
        if let Err(why) = accounted(&case, &load(&document(&[&case]))) {
            wrong.push(format!("{}: {why}", case.field));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
