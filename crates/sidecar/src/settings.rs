//! Settings, resolved once: flags (already parsed by the CLI into [`SidecarOptions`]) + the Configuration file →
//! every effective value the sidecar runs with, and a list of what the configuration asks for that ward does not
//! do. Pure: no I/O, so every rule is a table test.
//!
//! The rules for what ward cannot honour (nothing configured is ever silently ignored):
//! - a section or feature ward parses but does not implement, or an unknown key outside the security sections →
//!   refused in production (one line naming file and field), one loud warning per field in development;
//! - a pipeline handler with a `selector`, or an `appHttpPipeline` for a gRPC app (pipelines wrap HTTP only) →
//!   refused in production, warned about in development;
//! - `spec.mtls.enabled: true` without mTLS on →
//!   refused in every mode: each is an explicit request for a control ward would otherwise not apply.
//!
//! Unknown keys inside the security sections are load errors already (`ward-config`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ward_config::{Configuration, ResourceId};
use ward_identity::TrustDomain;
use ward_policy::{AccessControl, ApiAllowList, Capabilities};

use crate::audit::AuditTarget;
use crate::runtime::SidecarOptions;

/// daprd's default request body limit (`--max-body-size 4Mi`).
pub const DEFAULT_MAX_BODY_SIZE: u64 = 4 * 1024 * 1024;

/// Every effective value.
#[derive(Debug)]
pub struct Settings {
    /// `--production` or `spec.ward.productionMode`: either makes the sidecar production everywhere.
    pub production: bool,
    /// `--max-body-size`, else `spec.ward.maxBodySize`, else 4Mi.
    pub max_body_size: u64,
    /// `spec.mtls.allowedClockSkew`, else ward's default; applied to every certificate check of this sidecar.
    pub clock_skew: Duration,
    pub trust_domain: TrustDomain,
    pub acl: AccessControl,
    /// `spec.ward.capabilities`, compiled (none: every request is left to the ACL).
    pub capabilities: Capabilities,
    /// `spec.ward.provenance.enabled`, else on exactly when mTLS is.
    pub provenance: bool,
    pub api_list: ApiAllowList,
    pub api_log: ward_gate::ApiLogOptions,
    /// `--audit-log`, else `spec.ward.auditLog`, else stderr.
    pub audit: AuditTarget,
    /// `spec.ward.audit.fsync`, else `never` (the OS write only). Read at start: the audit sink is opened once.
    pub audit_fsync: ward_config::AuditFsync,
    /// `spec.ward.mcp`, compiled for this app's namespace and trust domain.
    pub mcp: Option<ward_policy::mcp::McpPolicy>,
    /// What the configuration asks for that ward does not do, in development mode (already logged by the caller).
    pub unhonoured: Vec<Unhonoured>,
}

/// One configured thing ward does not honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhonoured {
    /// `spec.tracing`, `spec.features[0] (Actors)`, …
    pub field: String,
    pub why: String,
    /// Refused even in development (an explicit request for a security control).
    pub always_refused: bool,
}

/// A daprd flag ward accepts (so a daprd command line starts) but does not implement: refused in production, one
/// warning in development, like an unhonoured Configuration field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedFlag {
    /// `--enable-app-health-check`
    pub flag: &'static str,
    pub why: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{flag}: {why} (refused in production mode)")]
    UnsupportedFlag { flag: &'static str, why: &'static str },
    #[error("{}: {}: {}", path.display(), ward_config::bounded(field), ward_config::bounded(why))]
    Unhonoured { path: PathBuf, field: String, why: String },
    /// `spec.accessControl` does not compile. The policy error is a plain field, not `#[source]`: an error chain
    /// printed with `{:#}` would repeat its text, uncut, after this bounded line.
    #[error("{}: {resource}: spec.accessControl: {}", path.display(), ward_config::bounded(&reason.to_string()))]
    Acl { path: PathBuf, resource: Box<ResourceId>, reason: Box<ward_policy::AclError> },
    /// `spec.ward.capabilities` does not compile (a plain field for the same reason as `Acl`).
    #[error("{}: {resource}: spec.ward.capabilities: {}", path.display(), ward_config::bounded(&reason.to_string()))]
    Capabilities { path: PathBuf, resource: Box<ResourceId>, reason: Box<ward_policy::CapabilityError> },
    /// `spec.api` does not compile (a plain field for the same reason as `Acl`).
    #[error("{}: {resource}: spec.api: {}", path.display(), ward_config::bounded(&reason.to_string()))]
    ApiList { path: PathBuf, resource: Box<ResourceId>, reason: Box<ward_policy::ApiListError> },
    /// `spec.accessControl.trustDomain` is not a trust domain. `value` is kept whole; the line echoes it cut.
    #[error(
        "{}: {resource}: spec.accessControl.trustDomain: {}: {reason}",
        path.display(),
        ward_config::quote_value(value)
    )]
    TrustDomain { path: PathBuf, resource: Box<ResourceId>, value: String, reason: Box<ward_identity::SpiffeIdError> },
    /// `spec.ward.mcp` does not compile.
    #[error("{}: {resource}: {}", path.display(), ward_config::bounded(&reason.to_string()))]
    Mcp { path: PathBuf, resource: Box<ResourceId>, reason: Box<ward_policy::mcp::McpError> },
    #[error("production mode (from {source_of}) requires mTLS (--enable-mtls with --sentry-address)")]
    ProductionWithoutMtls { source_of: String },
}

impl Settings {
    /// Resolves flags + configuration. `configuration` is `None` without `--config`.
    pub fn resolve(options: &SidecarOptions, configuration: Option<&Configuration>) -> Result<Settings, SettingsError> {
        let path = configuration.map(|c| c.source.clone()).unwrap_or_default();
        let production_from_file = configuration.is_some_and(|c| c.ward.production_mode);
        let production = options.production || production_from_file;
        if production && options.mtls.is_none() {
            let source_of = if options.production {
                "--production".to_owned()
            } else {
                format!("{}: spec.ward.productionMode", path.display())
            };
            return Err(SettingsError::ProductionWithoutMtls { source_of });
        }

        if production && let Some(flag) = options.unsupported_flags.first() {
            return Err(SettingsError::UnsupportedFlag { flag: flag.flag, why: flag.why });
        }
        let unhonoured =
            configuration.map(|c| unhonoured(c, options.mtls.is_some(), options.app_protocol_grpc)).unwrap_or_default();
        for item in &unhonoured {
            if production || item.always_refused {
                return Err(SettingsError::Unhonoured {
                    path: path.clone(),
                    field: item.field.clone(),
                    why: item.why.clone(),
                });
            }
        }

        let Policies { acl, capabilities, api_list, trust_domain } = compile_policies(configuration)?;
        let provenance = configuration.and_then(|c| c.ward.provenance_enabled).unwrap_or(options.mtls.is_some());
        let logging = configuration.map(|c| c.api_logging).unwrap_or_default();
        let api_log = ward_gate::ApiLogOptions {
            enabled: options.enable_api_logging.unwrap_or(logging.enabled),
            obfuscate_urls: logging.obfuscate_urls,
            omit_health_checks: logging.omit_health_checks,
        };
        let max_body_size = options
            .max_body_size
            .or_else(|| configuration.and_then(|c| c.ward.max_body_size))
            .unwrap_or(DEFAULT_MAX_BODY_SIZE);
        let clock_skew =
            configuration.and_then(|c| c.mtls.allowed_clock_skew).unwrap_or(ward_identity::DEFAULT_CLOCK_SKEW);
        let audit = match (&options.audit, configuration.and_then(|c| c.ward.audit_log.clone())) {
            (AuditTarget::Stderr | AuditTarget::StderrLog { .. }, Some(file)) => AuditTarget::File(file),
            (target, _) => target.clone(),
        };
        let mcp = match configuration.and_then(|c| c.ward.mcp.as_ref().map(|spec| (c, spec))) {
            None => None,
            Some((c, spec)) => {
                Some(ward_policy::mcp::McpPolicy::compile(spec, trust_domain.as_str(), &options.namespace).map_err(
                    |reason| SettingsError::Mcp {
                        path: path.clone(),
                        resource: Box::new(ResourceId::configuration(&c.name)),
                        reason: Box::new(reason),
                    },
                )?)
            }
        };
        Ok(Settings {
            production,
            max_body_size,
            clock_skew,
            trust_domain,
            acl,
            capabilities,
            provenance,
            api_list,
            api_log,
            audit,
            audit_fsync: configuration.and_then(|c| c.ward.audit_fsync).unwrap_or_default(),
            mcp,
            unhonoured,
        })
    }

    /// Logs one loud warning per unsupported flag (development mode; production refused them already).
    pub fn warn_unsupported_flags(options: &SidecarOptions) {
        for flag in &options.unsupported_flags {
            tracing::warn!(
                "{}: NOT APPLIED: {} (development mode only; a production sidecar refuses to start)",
                flag.flag,
                flag.why
            );
        }
    }

    /// Logs one loud warning per unhonoured Configuration field (development mode; production refused them
    /// already).
    pub fn warn_unhonoured(&self, path: &Path) {
        for item in &self.unhonoured {
            tracing::warn!(
                "{}: {}: NOT APPLIED: {} (development mode only; a production sidecar refuses to start)",
                path.display(),
                item.field,
                item.why
            );
        }
    }
}

/// What a sidecar compiles from a Configuration whatever its flags: the access-control policy, the capability
/// routes and grants, the API allow/deny lists and its trust domain.
#[derive(Debug)]
pub struct Policies {
    pub acl: AccessControl,
    pub capabilities: Capabilities,
    pub api_list: ApiAllowList,
    pub trust_domain: TrustDomain,
}

/// Compiles the policies of `configuration` (`None`: no `--config`) exactly as [`Settings::resolve`] does; it is
/// the one validation path for them, so `ward policy check|lint` accept and refuse the same files as a sidecar.
/// Pure. Refusals that depend on flags or mode (production, mTLS) stay in `resolve`.
pub fn compile_policies(configuration: Option<&Configuration>) -> Result<Policies, SettingsError> {
    let path = || configuration.map(|c| c.source.clone()).unwrap_or_default();
    // Boxed parts keep `Result<_, SettingsError>` small (clippy::result_large_err).
    let resource = || Box::new(ResourceId::configuration(configuration.map_or("", |c| c.name.as_str())));
    let acl = match configuration.and_then(|c| c.access_control.as_ref()) {
        Some(spec) => AccessControl::compile(spec).map_err(|reason| SettingsError::Acl {
            path: path(),
            resource: resource(),
            reason: Box::new(reason),
        })?,
        None => AccessControl::allow_all(),
    };
    let api_list = match configuration.and_then(|c| c.api.as_ref()) {
        Some(spec) => ApiAllowList::compile(spec).map_err(|reason| SettingsError::ApiList {
            path: path(),
            resource: resource(),
            reason: Box::new(reason),
        })?,
        None => ApiAllowList::allow_all(),
    };
    let td = configuration
        .and_then(|c| c.access_control.as_ref())
        .and_then(|a| a.trust_domain.as_deref())
        .filter(|td| !td.is_empty())
        .unwrap_or("public");
    let trust_domain = TrustDomain::new(td).map_err(|reason| SettingsError::TrustDomain {
        path: path(),
        resource: resource(),
        value: td.to_owned(),
        reason: Box::new(reason),
    })?;
    // Callers named by appId + namespace are in this sidecar's own trust domain, as for accessControl.
    let capabilities = match configuration.and_then(|c| c.ward.capabilities.as_ref()) {
        Some(spec) => Capabilities::compile(spec, trust_domain.as_str()).map_err(|reason| {
            SettingsError::Capabilities { path: path(), resource: resource(), reason: Box::new(reason) }
        })?,
        None => Capabilities::none(),
    };
    Ok(Policies { acl, capabilities, api_list, trust_domain })
}

/// What `configuration` asks for that ward does not do.
pub fn unhonoured(configuration: &Configuration, mtls_on: bool, app_grpc: bool) -> Vec<Unhonoured> {
    let mut out = Vec::new();
    let mut push = |field: String, why: &str, always_refused: bool| {
        out.push(Unhonoured { field, why: why.to_owned(), always_refused })
    };
    for (section, handlers) in [
        ("spec.httpPipeline", &configuration.http_pipeline),
        ("spec.appHttpPipeline", &configuration.app_http_pipeline),
    ] {
        for (i, handler) in handlers.iter().enumerate() {
            if !handler.selector.is_empty() {
                push(
                    format!("{section}.handlers[{i}].selector"),
                    "handler selectors are not applied (Dapr parses them but does not apply them either); the \
                     middleware would run on every request, not only the selected ones",
                    false,
                );
            }
        }
    }
    if app_grpc && configuration.ward.mcp.is_some() {
        push(
            "spec.ward.mcp".to_owned(),
            "the app speaks gRPC (--app-protocol grpc); MCP tool rules apply to a streamable-HTTP endpoint: calls to \
             this app would not be checked",
            false,
        );
    }
    if app_grpc && !configuration.app_http_pipeline.is_empty() {
        push(
            "spec.appHttpPipeline".to_owned(),
            "the app speaks gRPC (--app-protocol grpc) and middleware pipelines wrap HTTP calls only (as in Dapr): \
             calls to this app would not pass through its middleware",
            false,
        );
    }
    if configuration.mtls.enabled == Some(true) && !mtls_on {
        push(
            "spec.mtls.enabled".to_owned(),
            "mTLS is requested but this sidecar was started without --enable-mtls and --sentry-address",
            true,
        );
    }
    if configuration.mtls.workload_cert_ttl.is_some() {
        push(
            "spec.mtls.workloadCertTTL".to_owned(),
            "the certificate lifetime is sentry's setting (its control-plane Configuration: ward sentry --config, or \
             --workload-cert-ttl), not the sidecar's",
            false,
        );
    }
    if !configuration.ward.app_id_bindings.is_empty() {
        push(
            "spec.ward.appIdBindings".to_owned(),
            "app-id bindings are enforced by sentry on Kubernetes (the control-plane Configuration), not by a sidecar",
            false,
        );
    }
    // Everything else the file asks for that ward does not do, as `ward-config` found it (unknown keys outside the
    // security sections, Dapr sections and features ward does not implement).
    for item in &configuration.unsupported {
        let why = match item.kind {
            ward_config::UnsupportedKind::UnknownKey => format!("unknown field: {}", item.detail),
            ward_config::UnsupportedKind::NotImplemented => item.detail.clone(),
        };
        out.push(Unhonoured { field: item.field.clone(), why, always_refused: false });
    }
    out
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
