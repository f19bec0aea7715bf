//! `kind: Configuration`: the sidecar's `--config` file (and any Configuration found in resource directories).
//!
//! Owns: the raw shape of the sections ward reads, durations and sizes parsed into typed values, the component
//! denylist with Dapr's matching rule, ward's own `spec.ward` extension, and the list of what the file asks for
//! that ward does not do ([`Configuration::unsupported`]: unknown keys outside the security sections, Dapr
//! sections and features ward does not implement). Which key is which is one table, `schema.rs`; unknown keys
//! inside the security sections are load errors. Does not compile policies: `accessControl`, `secrets` and `api`
//! are handed over raw ([`ward_policy::spec`]) for `ward-policy` to compile and judge; does not decide whether an
//! unsupported field stops the sidecar (production) or is a warning (development).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use ward_policy::spec::{AccessControlSpec, ApiSpec, CapabilitiesSpec, McpSpec, SecretsSpec};

use crate::error::{ConfigError, ResourceKind};
use crate::meta::{Header, RawObjectMeta, check_configuration_name};
use crate::schema::{UnsupportedField, UnsupportedKind};
use crate::units::{parse_byte_quantity, parse_go_duration};
use crate::yaml::{Document, check_key_case, child, scalar_string};

/// `spec.features` names ward implements. `HotReload`: ward always reloads components and the Configuration's
/// access control when their files change, so asking for it is honoured. Any other enabled feature is listed in
/// [`Configuration::unsupported`].
pub const IMPLEMENTED_FEATURES: &[&str] = &["HotReload"];

/// The only apiVersion Dapr defines for configurations.
pub const CONFIGURATION_API_VERSION: &str = "dapr.io/v1alpha1";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfiguration {
    #[serde(default)]
    metadata: RawObjectMeta,
    #[serde(default)]
    spec: RawConfigurationSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfigurationSpec {
    #[serde(default)]
    access_control: Option<AccessControlSpec>,
    #[serde(default)]
    secrets: Option<SecretsSpec>,
    #[serde(default)]
    api: Option<ApiSpec>,
    #[serde(default)]
    components: Option<RawComponentsSpec>,
    #[serde(default)]
    name_resolution: Option<RawNameResolution>,
    #[serde(default)]
    logging: Option<RawLogging>,
    #[serde(default)]
    mtls: Option<RawMtls>,
    #[serde(default)]
    http_pipeline: Option<RawPipeline>,
    #[serde(default)]
    app_http_pipeline: Option<RawPipeline>,
    #[serde(default)]
    features: Option<Vec<RawFeature>>,
    #[serde(default)]
    ward: Option<RawWardSpec>,
    #[serde(default)]
    tracing: Option<RawTracing>,
}

/// `spec.tracing` (Dapr's `TracingSpec`). Not strict: an unknown key is listed by the schema walk.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTracing {
    /// A string in Dapr ("0".."1"); a bare number is accepted too.
    #[serde(default)]
    sampling_rate: Option<Value>,
    #[serde(default)]
    stdout: Option<bool>,
    #[serde(default)]
    otel: Option<RawOtel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOtel {
    #[serde(default)]
    endpoint_address: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    is_secure: Option<bool>,
    /// `["k=v", …]`, `"k=v,k2=v2"` or Dapr's `[{name, value}]`: read by hand so every form names its field.
    #[serde(default)]
    headers: Option<Value>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawComponentsSpec {
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNameResolution {
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    configuration: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogging {
    #[serde(default)]
    api_logging: Option<RawApiLogging>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawApiLogging {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, rename = "obfuscateURLs")]
    obfuscate_urls: Option<bool>,
    #[serde(default)]
    omit_health_checks: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawMtls {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, rename = "workloadCertTTL")]
    workload_cert_ttl: Option<String>,
    #[serde(default)]
    allowed_clock_skew: Option<String>,
    #[serde(default)]
    sentry_address: Option<String>,
    #[serde(default)]
    control_plane_trust_domain: Option<String>,
    /// Not implemented (the schema walk lists it in `unsupported`); accepted here so the strict struct parses.
    #[serde(default, rename = "tokenValidators")]
    _token_validators: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    handlers: Vec<RawHandler>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawHandler {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    selector: Option<RawSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    fields: Vec<RawSelectorField>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSelectorField {
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFeature {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    enabled: bool,
}

/// `spec.ward`: ward's own settings. Unknown keys are refused: a misspelt security switch must not be silently
/// ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWardSpec {
    #[serde(default)]
    production_mode: Option<bool>,
    #[serde(default)]
    audit_log: Option<String>,
    #[serde(default)]
    audit: Option<RawAudit>,
    /// `"4Mi"` or a plain number of bytes.
    #[serde(default)]
    max_body_size: Option<Value>,
    /// Tool rules for an MCP server (compiled by `ward-policy`).
    #[serde(default)]
    mcp: Option<McpSpec>,
    #[serde(default)]
    capabilities: Option<CapabilitiesSpec>,
    #[serde(default)]
    provenance: Option<RawProvenance>,
    #[serde(default)]
    app_id_bindings: Option<Vec<AppIdBinding>>,
}

/// `spec.ward.audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAudit {
    /// `never`, `interval` or `always`; checked in `from_document` so the error names the field and the choices.
    #[serde(default)]
    fsync: Option<String>,
    /// Audit events also as OTLP log records.
    #[serde(default)]
    otlp: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProvenance {
    #[serde(default)]
    enabled: Option<bool>,
}

/// A checked `kind: Configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Configuration {
    pub name: String,
    pub namespace: Option<String>,
    /// `spec.accessControl`, unvalidated (ward-policy compiles it). `None` when absent.
    pub access_control: Option<AccessControlSpec>,
    /// `spec.secrets`, unvalidated. `None` when absent.
    pub secrets: Option<SecretsSpec>,
    /// `spec.api`, unvalidated. `None` when absent.
    pub api: Option<ApiSpec>,
    /// `spec.components.deny`.
    pub components_deny: ComponentDenyList,
    /// `spec.nameResolution`, when set.
    pub name_resolution: Option<NameResolution>,
    /// `spec.logging.apiLogging`.
    pub api_logging: ApiLogging,
    /// `spec.mtls`.
    pub mtls: MtlsSpec,
    /// `spec.httpPipeline.handlers`: run on the sidecar's HTTP API, in order.
    pub http_pipeline: Vec<HandlerSpec>,
    /// `spec.appHttpPipeline.handlers`: run on calls from the sidecar to the app, in order.
    pub app_http_pipeline: Vec<HandlerSpec>,
    /// `spec.features`.
    pub features: Vec<Feature>,
    /// `spec.ward`.
    pub ward: WardSpec,
    /// `spec.tracing`, when present.
    pub tracing: Option<TracingSpec>,
    /// What the file asks for that ward does not do, sorted by field path: unknown keys outside the security sections
    /// ([`UnsupportedKind::UnknownKey`]), and Dapr sections, fields and enabled features ward parses but does not
    /// implement ([`UnsupportedKind::NotImplemented`], e.g. `spec.tracing`, `spec.features[0]`). Empty when ward
    /// honours the whole file. The runtime refuses a non-empty list in production ([`Configuration::check_unsupported`])
    /// and warns once per entry in development ([`Configuration::unsupported_error`] gives the line).
    pub unsupported: Vec<UnsupportedField>,
    /// The file the configuration was read from.
    pub source: PathBuf,
}

/// Which security controls a Configuration sets ([`Configuration::controls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecurityControls {
    access_control: bool,
    secrets: bool,
    api: bool,
    components_deny: bool,
    http_pipeline: bool,
    app_http_pipeline: bool,
    production_mode: bool,
    capability_routes: bool,
    provenance: bool,
    mtls: bool,
}

impl SecurityControls {
    /// The controls `previous` had and these lack, by field path (a reload that removes one is refused in
    /// production: the classic half-written file).
    pub fn removed_since(&self, previous: &SecurityControls) -> Vec<&'static str> {
        [
            ("spec.accessControl", previous.access_control, self.access_control),
            ("spec.secrets", previous.secrets, self.secrets),
            ("spec.api", previous.api, self.api),
            ("spec.components.deny", previous.components_deny, self.components_deny),
            ("spec.httpPipeline", previous.http_pipeline, self.http_pipeline),
            ("spec.appHttpPipeline", previous.app_http_pipeline, self.app_http_pipeline),
            ("spec.ward.productionMode", previous.production_mode, self.production_mode),
            ("spec.ward.capabilities.routes", previous.capability_routes, self.capability_routes),
            ("spec.ward.provenance.enabled", previous.provenance, self.provenance),
            ("spec.mtls.enabled", previous.mtls, self.mtls),
        ]
        .into_iter()
        .filter(|(_, had, has)| *had && !*has)
        .map(|(field, _, _)| field)
        .collect()
    }
}

/// `spec.nameResolution`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameResolution {
    pub component: String,
    pub version: Option<String>,
    /// Values in their string form (`timeout: 1s`, `disableWAL: false` → `"false"`).
    pub configuration: BTreeMap<String, String>,
}

/// `spec.logging.apiLogging` (all default false).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApiLogging {
    pub enabled: bool,
    pub obfuscate_urls: bool,
    pub omit_health_checks: bool,
}

/// `spec.mtls`. Absent fields stay `None` so the runtime applies its own defaults (and knows the user did not).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MtlsSpec {
    pub enabled: Option<bool>,
    pub workload_cert_ttl: Option<Duration>,
    pub allowed_clock_skew: Option<Duration>,
    /// Parsed, but the sidecar takes it from `--sentry-address`: when set, also listed in
    /// [`Configuration::unsupported`] as not implemented.
    pub sentry_address: Option<String>,
    /// Parsed, but the sidecar takes it from `--control-plane-trust-domain`: when set, also listed in
    /// [`Configuration::unsupported`] as not implemented.
    pub control_plane_trust_domain: Option<String>,
}

/// One middleware handler of `httpPipeline` / `appHttpPipeline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    /// The middleware component's name.
    pub name: String,
    /// e.g. `middleware.http.bearer`.
    pub type_: String,
    pub version: Option<String>,
    /// `selector.fields[]` as (field, value) pairs.
    pub selector: Vec<(String, String)>,
}

/// One `spec.features` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub name: String,
    pub enabled: bool,
}

/// `spec.tracing`: Dapr's `TracingSpec` minus `zipkin` (listed as not implemented by the schema).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TracingSpec {
    /// `samplingRate`, checked to lie in 0..=1; `None` when absent or empty (the sidecar applies Dapr's default).
    pub sampling_rate: Option<f64>,
    /// `stdout`: spans also written to standard output.
    pub stdout: bool,
    /// `otel`, when it names an endpoint.
    pub otel: Option<OtelSpec>,
}

// `sampling_rate` is checked to lie in 0..=1 when parsed, so it is never NaN and equality is total.
impl Eq for TracingSpec {}

/// The OTLP protocol of `spec.tracing.otel.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    Http,
}

/// `spec.tracing.otel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelSpec {
    /// `host:port` (Dapr's form) or a URL.
    pub endpoint_address: String,
    /// `protocol`. Dapr registers no exporter when it is empty; ward takes `grpc` (the usual collector port 4317),
    /// so an endpoint is never silently unused.
    pub protocol: OtlpProtocol,
    /// `isSecure` (Dapr's default: true).
    pub is_secure: bool,
    /// `headers`, sent with every export. Values may be credentials: never logged.
    pub headers: Vec<(String, String)>,
    /// `timeout` of one export.
    pub timeout: Option<Duration>,
}

/// `spec.ward`, ward's extension section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WardSpec {
    /// Refuse development shortcuts (plaintext peers, dev identity markers). Default false.
    pub production_mode: bool,
    /// Where to write audit events, when set.
    pub audit_log: Option<PathBuf>,
    /// `spec.ward.audit.otlp`: audit events also exported as OTLP log records to the tracing endpoint.
    pub audit_otlp: bool,
    /// `spec.ward.audit.fsync`, when set (the sidecar's default: [`AuditFsync::Never`]).
    pub audit_fsync: Option<AuditFsync>,
    /// Request body limit in bytes, when set.
    pub max_body_size: Option<u64>,
    /// `spec.ward.capabilities`, unvalidated (ward-policy compiles it). `None` when absent.
    pub capabilities: Option<CapabilitiesSpec>,
    /// `spec.ward.provenance.enabled`; `None` when absent (the sidecar's default: on with mTLS).
    pub provenance_enabled: Option<bool>,
    /// `spec.ward.mcp`, unvalidated (`ward-policy` compiles it).
    pub mcp: Option<McpSpec>,
    /// `spec.ward.appIdBindings`: which service accounts may hold an app id (read by sentry on Kubernetes from the
    /// control-plane Configuration only; a sidecar refuses or warns about it).
    pub app_id_bindings: Vec<AppIdBinding>,
}

/// One `spec.ward.appIdBindings` entry: app id `app_id` in `namespace` is issued only to pods running as one of
/// `service_accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppIdBinding {
    pub namespace: String,
    pub app_id: String,
    pub service_accounts: Vec<String>,
}

/// `spec.ward.audit.fsync`: when the audit file is flushed to stable storage. Every line is handed to the operating
/// system before the request it records goes on (it survives a SIGKILL of the sidecar) whatever this says; this adds
/// `fdatasync` for a power loss or kernel crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditFsync {
    /// The OS write only.
    #[default]
    Never,
    /// At most once per second, by the writer, off the request path: a power loss loses at most about a second.
    Interval,
    /// After every batch (group commit), before the requests waiting for it go on.
    Always,
}

impl AuditFsync {
    /// The spelling in a Configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Interval => "interval",
            Self::Always => "always",
        }
    }
}

impl std::str::FromStr for AuditFsync {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "never" => Ok(Self::Never),
            "interval" => Ok(Self::Interval),
            "always" => Ok(Self::Always),
            other => Err(format!("{} is not one of never, interval, always", crate::error::quoted(other))),
        }
    }
}

/// `spec.components.deny`: component types that may not be loaded, each `type` (any version) or `type/version`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ComponentDenyList {
    entries: Vec<(String, Option<String>)>,
}

impl ComponentDenyList {
    /// Dapr's rule (`pkg/runtime/authorizer` `componentDenyList.IsAllowed`): a component with an empty type or
    /// version is denied; otherwise it is denied when an entry's type equals its type (exact, case-sensitive) and
    /// the entry has no version or the same version.
    pub fn denies(&self, type_: &str, version: &str) -> bool {
        if type_.is_empty() || version.is_empty() {
            return true;
        }
        self.entries.iter().any(|(t, v)| t == type_ && v.as_deref().is_none_or(|v| v == version))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries as `(type, version)`.
    pub fn entries(&self) -> &[(String, Option<String>)] {
        &self.entries
    }
}

impl Configuration {
    /// Whether `spec.components.deny` forbids loading a component of `type_` at `version`.
    pub fn component_denied(&self, type_: &str, version: &str) -> bool {
        self.components_deny.denies(type_, version)
    }

    /// Whether `spec.features` enables the feature `name` (absent = disabled).
    pub fn feature_enabled(&self, name: &str) -> bool {
        self.features.iter().any(|f| f.name == name && f.enabled)
    }

    /// One unsupported field as the one-line error the runtime prints, e.g. `<file>: Configuration "<name>":
    /// spec.tracing: not implemented: ward does not export traces yet` (a refusal in production, a warning in
    /// development).
    pub fn unsupported_error(&self, field: &UnsupportedField) -> ConfigError {
        ConfigError::Unsupported { path: self.source.clone(), name: self.name.clone(), field: field.clone() }
    }

    /// `Err` for the first entry of [`Configuration::unsupported`], if any: what production mode calls.
    pub fn check_unsupported(&self) -> Result<(), ConfigError> {
        match self.unsupported.first() {
            Some(field) => Err(self.unsupported_error(field)),
            None => Ok(()),
        }
    }

    /// The security controls `previous` had that `self` no longer has, as field paths: a whole section removed
    /// (`spec.accessControl`, `spec.secrets`, `spec.api`), a list emptied (`spec.components.deny`,
    /// `spec.httpPipeline`, `spec.appHttpPipeline`), or a switch turned off (`spec.ward.productionMode`,
    /// `spec.mtls.enabled`), capability routes emptied (`spec.ward.capabilities.routes`) or provenance turned off
    /// (`spec.ward.provenance.enabled`). A reload that removes a control may be a half-written file as easily as a decision, so
    /// the configuration watcher refuses it in production (the old snapshot stays until a restart) and applies it
    /// with a warning naming the file and these fields in development (issue 12, row 10). Tightening is never listed.
    pub fn security_controls_removed(&self, previous: &Configuration) -> Vec<&'static str> {
        self.controls().removed_since(&previous.controls())
    }

    /// Which security controls this configuration sets, without their content: what a running sidecar keeps to
    /// judge the next reload (keeping the whole previous Configuration would hold every policy's spec twice).
    pub fn controls(&self) -> SecurityControls {
        SecurityControls {
            access_control: self.access_control.is_some(),
            secrets: self.secrets.is_some(),
            api: self.api.is_some(),
            components_deny: !self.components_deny.is_empty(),
            http_pipeline: !self.http_pipeline.is_empty(),
            app_http_pipeline: !self.app_http_pipeline.is_empty(),
            production_mode: self.ward.production_mode,
            capability_routes: self.ward.capabilities.as_ref().is_some_and(|caps| !caps.routes.is_empty()),
            provenance: self.ward.provenance_enabled != Some(false),
            mtls: self.mtls.enabled == Some(true),
        }
    }

    pub(crate) fn from_document(path: &Path, doc: Document, header: &Header) -> Result<Configuration, ConfigError> {
        let resource = header.resource_id(ResourceKind::Configuration, doc.index);
        header.check_api_version(path, &resource, &[CONFIGURATION_API_VERSION])?;
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            resource: resource.clone(),
            field: field.to_string(),
            message,
        };
        check_key_case(child(Some(&doc.value), "metadata"), "metadata", &["name", "namespace"])
            .map_err(|(f, m)| invalid(&f, m))?;
        // Unknown keys first: in a security section one is a load error, whatever else is wrong.
        let mut unsupported = crate::schema::walk(&doc.value).map_err(|(f, m)| invalid(&f, m))?;
        let raw: RawConfiguration = crate::yaml::deserialize(doc.value, path, &resource)?;
        let name = check_configuration_name(raw.metadata.name.as_deref()).map_err(|m| invalid("metadata.name", m))?;
        let spec = raw.spec;

        let mut deny = Vec::new();
        for (i, entry) in spec.components.unwrap_or_default().deny.into_iter().enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue; // Dapr skips empty entries; they deny nothing either way.
            }
            // Dapr silently ignores an entry with more than one '/', so a typo would leave the type allowed.
            let parsed = match entry.split('/').collect::<Vec<_>>().as_slice() {
                [t] if !t.is_empty() => Some((t.to_string(), None)),
                [t, v] if !t.is_empty() && !v.is_empty() => Some((t.to_string(), Some(v.to_string()))),
                _ => None,
            };
            let Some(parsed) = parsed else {
                return Err(invalid(
                    &format!("spec.components.deny[{i}]"),
                    format!("{} is not \"<type>\" or \"<type>/<version>\"", crate::error::quoted(entry)),
                ));
            };
            deny.push(parsed);
        }

        let name_resolution = match spec.name_resolution {
            None => None,
            Some(nr) => {
                let component = nr.component.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
                    invalid("spec.nameResolution.component", "is required (e.g. \"sqlite\")".to_string())
                })?;
                Some(NameResolution {
                    component,
                    version: nr.version.filter(|v| !v.is_empty()),
                    configuration: nr
                        .configuration
                        .unwrap_or_default()
                        .iter()
                        .map(|(k, v)| (k.clone(), scalar_string(v)))
                        .collect(),
                })
            }
        };

        let logging = spec.logging.unwrap_or_default().api_logging.unwrap_or_default();
        let api_logging = ApiLogging {
            enabled: logging.enabled.unwrap_or(false),
            obfuscate_urls: logging.obfuscate_urls.unwrap_or(false),
            omit_health_checks: logging.omit_health_checks.unwrap_or(false),
        };

        let raw_mtls = spec.mtls.unwrap_or_default();
        let duration = |value: Option<String>, field: &str| -> Result<Option<Duration>, ConfigError> {
            match value.as_deref() {
                None | Some("") => Ok(None),
                Some(text) => parse_go_duration(text).map(Some).map_err(|m| invalid(field, m)),
            }
        };
        let mtls = MtlsSpec {
            enabled: raw_mtls.enabled,
            workload_cert_ttl: duration(raw_mtls.workload_cert_ttl, "spec.mtls.workloadCertTTL")?,
            allowed_clock_skew: duration(raw_mtls.allowed_clock_skew, "spec.mtls.allowedClockSkew")?,
            sentry_address: raw_mtls.sentry_address.filter(|s| !s.is_empty()),
            control_plane_trust_domain: raw_mtls.control_plane_trust_domain.filter(|s| !s.is_empty()),
        };
        if mtls.workload_cert_ttl == Some(Duration::ZERO) {
            return Err(invalid("spec.mtls.workloadCertTTL", "must be greater than 0".to_string()));
        }

        let pipeline = |raw: Option<RawPipeline>, at: &str| -> Result<Vec<HandlerSpec>, ConfigError> {
            let mut handlers = Vec::new();
            for (i, h) in raw.unwrap_or_default().handlers.into_iter().enumerate() {
                let field = |f: &str| format!("{at}.handlers[{i}].{f}");
                let name = h
                    .name
                    .filter(|n| !n.trim().is_empty())
                    .ok_or_else(|| invalid(&field("name"), "is required".to_string()))?;
                let type_ = h.type_.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
                    invalid(&field("type"), "is required (e.g. \"middleware.http.bearer\")".to_string())
                })?;
                handlers.push(HandlerSpec {
                    name,
                    type_,
                    version: h.version.filter(|v| !v.is_empty()),
                    selector: h
                        .selector
                        .map(|s| s.fields.into_iter().map(|f| (f.field, f.value)).collect())
                        .unwrap_or_default(),
                });
            }
            Ok(handlers)
        };
        let http_pipeline = pipeline(spec.http_pipeline, "spec.httpPipeline")?;
        let app_http_pipeline = pipeline(spec.app_http_pipeline, "spec.appHttpPipeline")?;

        let mut features = Vec::new();
        for (i, f) in spec.features.unwrap_or_default().into_iter().enumerate() {
            let name = f
                .name
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| invalid(&format!("spec.features[{i}].name"), "is required".to_string()))?;
            // A disabled feature asks for nothing; an enabled one ward does not have is a request it cannot meet.
            if f.enabled && !IMPLEMENTED_FEATURES.contains(&name.as_str()) {
                unsupported.push(UnsupportedField {
                    field: format!("spec.features[{i}]"),
                    kind: UnsupportedKind::NotImplemented,
                    detail: format!("feature {} is not implemented by ward", crate::error::quoted(&name)),
                });
            }
            features.push(Feature { name, enabled: f.enabled });
        }

        let raw_ward = spec.ward.unwrap_or_default();
        let max_body_size = match raw_ward.max_body_size {
            None | Some(Value::Null) => None,
            Some(v @ (Value::String(_) | Value::Number(_))) => {
                let bytes = parse_byte_quantity(&scalar_string(&v)).map_err(|m| invalid("spec.ward.maxBodySize", m))?;
                if bytes == 0 {
                    return Err(invalid("spec.ward.maxBodySize", "must be greater than 0".to_string()));
                }
                Some(bytes)
            }
            Some(other) => {
                return Err(invalid(
                    "spec.ward.maxBodySize",
                    format!("invalid type: {}, expected a size like \"4Mi\"", crate::yaml::type_name(&other)),
                ));
            }
        };
        let audit_otlp = raw_ward.audit.as_ref().and_then(|a| a.otlp).unwrap_or(false);
        let audit_fsync = match raw_ward.audit.and_then(|audit| audit.fsync) {
            None => None,
            Some(value) => Some(value.parse::<AuditFsync>().map_err(|m| invalid("spec.ward.audit.fsync", m))?),
        };
        let app_id_bindings = raw_ward.app_id_bindings.unwrap_or_default();
        for (i, binding) in app_id_bindings.iter().enumerate() {
            let field = |name: &str| format!("spec.ward.appIdBindings[{i}].{name}");
            if binding.namespace.trim().is_empty() {
                return Err(invalid(&field("namespace"), "must not be empty".to_owned()));
            }
            if binding.app_id.trim().is_empty() {
                return Err(invalid(&field("appId"), "must not be empty".to_owned()));
            }
            // An empty list would bind the app id to nobody: say so rather than lock it out silently.
            if binding.service_accounts.is_empty() || binding.service_accounts.iter().any(|sa| sa.trim().is_empty()) {
                return Err(invalid(&field("serviceAccounts"), "must list at least one non-empty name".to_owned()));
            }
            if app_id_bindings[..i].iter().any(|b| b.namespace == binding.namespace && b.app_id == binding.app_id) {
                return Err(invalid(
                    &field("appId"),
                    format!("{}/{} is bound twice", binding.namespace, binding.app_id),
                ));
            }
        }
        let ward = WardSpec {
            production_mode: raw_ward.production_mode.unwrap_or(false),
            audit_log: raw_ward.audit_log.filter(|p| !p.is_empty()).map(PathBuf::from),
            audit_otlp,
            audit_fsync,
            max_body_size,
            capabilities: raw_ward.capabilities,
            provenance_enabled: raw_ward.provenance.and_then(|p| p.enabled),
            mcp: raw_ward.mcp,
            app_id_bindings,
        };

        let tracing = match spec.tracing {
            None => None,
            Some(raw) => Some(tracing_spec(raw).map_err(|(f, m)| invalid(&f, m))?),
        };

        Ok(Configuration {
            name: name.to_string(),
            tracing,
            namespace: raw.metadata.namespace.filter(|ns| !ns.is_empty()),
            access_control: spec.access_control,
            secrets: spec.secrets,
            api: spec.api,
            components_deny: ComponentDenyList { entries: deny },
            name_resolution,
            api_logging,
            mtls,
            http_pipeline,
            app_http_pipeline,
            features,
            ward,
            unsupported: {
                // The parsed tree does not keep key order; sorted, the list is the same for the same file.
                unsupported.sort_by(|a, b| a.field.cmp(&b.field));
                unsupported
            },
            source: path.to_path_buf(),
        })
    }
}

/// `spec.tracing`, checked. `Err((field, message))`.
fn tracing_spec(raw: RawTracing) -> Result<TracingSpec, (String, String)> {
    let sampling_rate = match raw.sampling_rate {
        None | Some(Value::Null) => None,
        Some(v @ (Value::String(_) | Value::Number(_))) => {
            let text = scalar_string(&v);
            let text = text.trim();
            if text.is_empty() {
                None
            } else {
                let rate = text.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                    (
                        "spec.tracing.samplingRate".to_owned(),
                        format!("{} is not a number from \"0\" to \"1\"", crate::error::quoted(text)),
                    )
                })?;
                Some(rate)
            }
        }
        Some(other) => {
            return Err((
                "spec.tracing.samplingRate".to_owned(),
                format!("invalid type: {}, expected a string like \"0.01\"", crate::yaml::type_name(&other)),
            ));
        }
    };
    let otel = match raw.otel {
        None => None,
        Some(o) => {
            let endpoint = o.endpoint_address.map(|e| e.trim().to_owned()).unwrap_or_default();
            let protocol = match o.protocol.as_deref().map(str::trim) {
                None | Some("") | Some("grpc") => OtlpProtocol::Grpc,
                Some("http") => OtlpProtocol::Http,
                Some(other) => {
                    return Err((
                        "spec.tracing.otel.protocol".to_owned(),
                        format!("{} is not \"grpc\" or \"http\"", crate::error::quoted(other)),
                    ));
                }
            };
            let headers = otel_headers(o.headers.as_ref())?;
            let timeout = match o.timeout.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(text) => Some(parse_go_duration(text).map_err(|m| ("spec.tracing.otel.timeout".to_owned(), m))?),
            };
            if endpoint.is_empty() {
                // Dapr registers no exporter without an address; a section that still sets something is an error
                // rather than a silent no-op.
                if o.protocol.is_some() || !headers.is_empty() || timeout.is_some() || o.is_secure.is_some() {
                    return Err((
                        "spec.tracing.otel.endpointAddress".to_owned(),
                        "is required when spec.tracing.otel sets anything".to_owned(),
                    ));
                }
                None
            } else {
                Some(OtelSpec {
                    endpoint_address: endpoint,
                    protocol,
                    is_secure: o.is_secure.unwrap_or(true),
                    headers,
                    timeout,
                })
            }
        }
    };
    Ok(TracingSpec { sampling_rate, stdout: raw.stdout.unwrap_or(false), otel })
}

/// `spec.tracing.otel.headers`: `"k=v,k2=v2"`, `["k=v"]` or `[{name, value}]`. Values are never echoed.
fn otel_headers(value: Option<&Value>) -> Result<Vec<(String, String)>, (String, String)> {
    let field = "spec.tracing.otel.headers";
    let bad = |i: usize| (format!("{field}[{i}]"), "expected \"name=value\" or {name, value}".to_owned());
    let pair = |text: &str, i: usize| -> Result<(String, String), (String, String)> {
        let (k, v) = text.split_once('=').ok_or_else(|| bad(i))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(bad(i));
        }
        Ok((k.to_owned(), v.trim().to_owned()))
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => {
            s.split(',').filter(|p| !p.trim().is_empty()).enumerate().map(|(i, p)| pair(p, i)).collect()
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => pair(s, i),
                Value::Object(map) => {
                    if map.contains_key("secretKeyRef") || map.contains_key("envRef") {
                        return Err((
                            format!("{field}[{i}]"),
                            "secretKeyRef/envRef values are not supported; give the value".to_owned(),
                        ));
                    }
                    let name = map.get("name").and_then(Value::as_str).filter(|n| !n.trim().is_empty());
                    let value = map.get("value").map(scalar_string);
                    match (name, value) {
                        (Some(n), Some(v)) => Ok((n.trim().to_owned(), v)),
                        _ => Err(bad(i)),
                    }
                }
                _ => Err(bad(i)),
            })
            .collect(),
        Some(_) => Err((field.to_owned(), "expected a list of \"name=value\"".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(entries: &[(&str, Option<&str>)]) -> ComponentDenyList {
        ComponentDenyList { entries: entries.iter().map(|(t, v)| (t.to_string(), v.map(str::to_string))).collect() }
    }

    #[test]
    fn deny_list_semantics() {
        struct Case {
            name: &'static str,
            type_: &'static str,
            version: &'static str,
            expected: bool,
        }
        let list = deny(&[("bindings.smtp", None), ("secretstores.local.file", Some("v1"))]);
        let cases = [
            Case { name: "type entry denies any version", type_: "bindings.smtp", version: "v1", expected: true },
            Case { name: "type entry denies v2", type_: "bindings.smtp", version: "v2", expected: true },
            Case {
                name: "type/version denies that version",
                type_: "secretstores.local.file",
                version: "v1",
                expected: true,
            },
            Case {
                name: "type/version allows another version",
                type_: "secretstores.local.file",
                version: "v2",
                expected: false,
            },
            Case { name: "unlisted type allowed", type_: "state.redis", version: "v1", expected: false },
            Case { name: "case-sensitive like Dapr", type_: "Bindings.SMTP", version: "v1", expected: false },
            Case { name: "prefix is not a match", type_: "bindings.smtp2", version: "v1", expected: false },
            Case { name: "empty type denied", type_: "", version: "v1", expected: true },
            Case { name: "empty version denied", type_: "state.redis", version: "", expected: true },
        ];
        for c in cases {
            assert_eq!(list.denies(c.type_, c.version), c.expected, "{}", c.name);
        }
        assert!(!ComponentDenyList::default().denies("state.redis", "v1"));
        assert!(ComponentDenyList::default().denies("", ""));
    }
}
