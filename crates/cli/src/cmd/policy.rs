//! `ward policy check` explains one access-control decision exactly as a sidecar would make it (same
//! normalisation, same compiled matcher), and `ward policy lint` warns about risky configurations. Both read a
//! Configuration file and nothing else, so they fit in CI before a deploy.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ward_identity::SpiffeId;
use ward_policy::{
    AccessControl, AclRequest, AppProtocol, Caller, HttpVerb, normalize_grpc_method, normalize_http_method,
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Decide one call: exit 0 for allow, 1 for deny.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// The caller's SPIFFE ID, spiffe://<td>/ns/<namespace>/<app-id>; omit for an unauthenticated caller.
        #[arg(long)]
        caller: Option<String>,
        #[arg(long, default_value = "GET")]
        verb: String,
        /// The method path as the caller would send it (percent-encoding allowed), or /pkg.Service/Method with
        /// --grpc.
        #[arg(long)]
        path: String,
        /// The callee is a gRPC app: match the full gRPC method name.
        #[arg(long)]
        grpc: bool,
    },
    /// Warn about risky access-control settings; exit 1 when there are warnings.
    Lint {
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { config, caller, verb, path, grpc } => {
            let configuration = ward_config::load_configuration(&config)?;
            let acl = match &configuration.access_control {
                Some(spec) => {
                    AccessControl::compile(spec).with_context(|| format!("{}: spec.accessControl", config.display()))?
                }
                None => AccessControl::allow_all(),
            };
            let caller_id = caller.as_deref().map(SpiffeId::parse).transpose().context("--caller")?;
            let dapr = caller_id.as_ref().map(|id| id.dapr_identity()).transpose().context("--caller")?;
            let verb_parsed: HttpVerb =
                verb.parse().map_err(|_| anyhow::anyhow!("--verb {verb:?} is not an HTTP verb"))?;
            let operation = if grpc {
                match normalize_grpc_method(&path) {
                    Ok(method) => method.as_str().to_owned(),
                    Err(err) => {
                        println!("deny: the method is refused before any policy applies: {err}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            } else {
                match normalize_http_method(path.trim_start_matches('/')) {
                    Ok(method) => method.as_str().to_owned(),
                    Err(err) => {
                        println!("deny: the path is refused before any policy applies: {err}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            };
            let request = AclRequest {
                caller: dapr.map(|d| Caller { trust_domain: d.trust_domain, namespace: d.namespace, app_id: d.app_id }),
                operation: &operation,
                verb: (!grpc).then_some(verb_parsed),
                app_protocol: if grpc { AppProtocol::Grpc } else { AppProtocol::Http },
            };
            let decision = acl.decide(&request);
            println!(
                "{}: operation {operation:?} verb {verb}: decided by {} ({})",
                if decision.allowed { "allow" } else { "deny" },
                decision.rule,
                decision.reason
            );
            Ok(if decision.allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Lint { config } => {
            let configuration = ward_config::load_configuration(&config)?;
            let mut warnings = Vec::new();
            match &configuration.access_control {
                None => warnings.push("no spec.accessControl: every caller may invoke every method".to_owned()),
                Some(spec) => {
                    AccessControl::compile(spec)
                        .with_context(|| format!("{}: spec.accessControl", config.display()))?;
                    let global = spec.default_action.as_deref().unwrap_or("");
                    if global.eq_ignore_ascii_case("allow") {
                        warnings.push(
                            "spec.accessControl.defaultAction is allow: callers without a policy are let in".to_owned(),
                        );
                    }
                    let td = spec.trust_domain.as_deref().filter(|t| !t.is_empty()).unwrap_or("public");
                    for (index, policy) in spec.policies.iter().flatten().enumerate() {
                        if policy.default_action.as_deref().is_some_and(|a| a.eq_ignore_ascii_case("allow")) {
                            warnings.push(format!(
                                "policies[{index}] ({}): defaultAction allow lets this caller reach every method not listed",
                                policy.app_id
                            ));
                        }
                        if policy.trust_domain != td {
                            warnings.push(format!(
                                "policies[{index}] ({}): trustDomain {:?} differs from this app's {td:?}; ward's sentry signs one trust domain, so this policy can never match",
                                policy.app_id, policy.trust_domain
                            ));
                        }
                        for (op_index, op) in policy.operations.iter().enumerate() {
                            if op.http_verb.is_empty() && !policy.operations.is_empty() {
                                warnings.push(format!(
                                    "policies[{index}].operations[{op_index}] ({}): no httpVerb, so it never decides an HTTP call",
                                    op.name
                                ));
                            }
                        }
                    }
                }
            }
            if warnings.is_empty() {
                println!("{}: no warnings", config.display());
                return Ok(ExitCode::SUCCESS);
            }
            for warning in &warnings {
                println!("warning: {warning}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
