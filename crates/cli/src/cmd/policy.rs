//! `ward policy check` explains one access-control decision exactly as a sidecar would make it: it calls
//! `ward_policy::decide_invocation`, the function the callee sidecar's ACL layer calls, so refusals before the ACL
//! (invalid method spelling, unsupported verb, reserved gRPC service), normalisation and matching are the same.
//! `ward policy lint` warns about risky configurations. Both read a Configuration file and nothing else, so they fit
//! in CI before a deploy. Both load and compile it through the sidecar's own path (`ward_config::load_configuration`
//! then `ward_sidecar::compile_policies`), so they accept and refuse exactly the files a sidecar does, with the
//! same error line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ward_identity::SpiffeId;
use ward_policy::{AppProtocol, Caller, InvocationInput, InvocationMethod, InvocationOutcome, decide_invocation};

/// The callee app's protocol, as `--app-protocol` of the sidecar (grpc and grpcs are the same for matching).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppProtocolArg {
    Http,
    Grpc,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Decide one call: exit 0 for allow, 1 for deny or a refusal before the policy.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// The caller's SPIFFE ID, spiffe://<td>/ns/<namespace>/<app-id>; omit for an unauthenticated caller.
        #[arg(long)]
        caller: Option<String>,
        /// The request method; anything but the nine standard HTTP methods is refused, as by a sidecar.
        #[arg(long, default_value = "GET")]
        verb: String,
        /// The method path as the caller would send it (percent-encoding allowed), or /pkg.Service/Method with
        /// --grpc. Not used with --mcp.
        #[arg(long, required_unless_present = "mcp")]
        path: Option<String>,
        /// The call is a proxied gRPC call: --path is the full gRPC method name.
        #[arg(long)]
        grpc: bool,
        /// The callee app's protocol for a service invocation (a gRPC app gets it as AppCallback/OnInvoke and its
        /// operation names match case-sensitively, without verb).
        #[arg(long, value_enum, default_value = "http")]
        app_protocol: AppProtocolArg,
        /// Decide an MCP `tools/call` under `spec.ward.mcp` instead (needs --tool).
        #[arg(long, requires = "tool")]
        mcp: bool,
        /// The MCP tool name, with --mcp.
        #[arg(long)]
        tool: Option<String>,
        /// The MCP server app's namespace, with --mcp (app ids in rules match callers in this namespace).
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Warn about risky access-control settings; exit 1 when there are warnings.
    Lint {
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { config, caller, verb, path, grpc, app_protocol, mcp, tool, namespace } => {
            let configuration = ward_config::load_configuration(&config)?;
            if mcp {
                return check_mcp(&configuration, caller.as_deref(), tool.as_deref().unwrap_or(""), &namespace);
            }
            let path = path.unwrap_or_default();
            let acl = ward_sidecar::compile_policies(Some(&configuration))?.acl;
            let caller_id = caller.as_deref().map(SpiffeId::parse).transpose().context("--caller")?;
            let dapr = caller_id.as_ref().map(|id| id.dapr_identity()).transpose().context("--caller")?;
            let input = InvocationInput {
                caller: dapr.map(|d| Caller { trust_domain: d.trust_domain, namespace: d.namespace, app_id: d.app_id }),
                method: if grpc {
                    InvocationMethod::GrpcProxy { full_method: &path }
                } else {
                    InvocationMethod::Http { raw: &path, verb: &verb }
                },
                app_protocol: match app_protocol {
                    AppProtocolArg::Http => AppProtocol::Http,
                    AppProtocolArg::Grpc => AppProtocol::Grpc,
                },
            };
            match decide_invocation(&acl, &input) {
                InvocationOutcome::Refused(refusal) => {
                    println!("deny: refused before any policy applies: {refusal}");
                    Ok(ExitCode::FAILURE)
                }
                InvocationOutcome::Decided(d) => {
                    let verb = d.verb.map_or("NONE", |v| v.as_str());
                    println!(
                        "{}: operation {:?} verb {verb}: decided by {} ({})",
                        if d.decision.allowed { "allow" } else { "deny" },
                        d.operation.as_str(),
                        d.decision.rule,
                        d.decision.reason
                    );
                    Ok(if d.decision.allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
                }
            }
        }
        Command::Lint { config } => {
            let configuration = ward_config::load_configuration(&config)?;
            ward_sidecar::compile_policies(Some(&configuration))?;
            let mut warnings = Vec::new();
            match &configuration.access_control {
                None => warnings.push("no spec.accessControl: every caller may invoke every method".to_owned()),
                Some(spec) => {
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
                            if let Some(ch) = ward_policy::ascii_confusable(&op.name) {
                                warnings.push(format!(
                                    "policies[{index}].operations[{op_index}] ({}): {ch:?} could be read as ASCII by case folding or NFKC; methods containing it are refused, so this operation never matches",
                                    op.name
                                ));
                            }
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
            if let Some(spec) = &configuration.ward.mcp {
                let trust_domain = ward_sidecar::compile_policies(Some(&configuration))?.trust_domain;
                let policy = ward_policy::mcp::McpPolicy::compile(spec, trust_domain.as_str(), "default")?;
                for index in policy.unbounded_rules() {
                    warnings.push(format!(
                        "spec.ward.mcp.rules[{index}]: allows every tool (\"*\") without a deny list: a tool added to the \
                         server later is callable at once"
                    ));
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

/// `ward policy check --mcp`: one `tools/call` decision, as the MCP server's sidecar makes it.
fn check_mcp(
    configuration: &ward_config::Configuration,
    caller: Option<&str>,
    tool: &str,
    namespace: &str,
) -> anyhow::Result<ExitCode> {
    let Some(spec) = &configuration.ward.mcp else {
        anyhow::bail!(
            "{}: no spec.ward.mcp: every tool is callable by whoever accessControl lets in",
            configuration.source.display()
        );
    };
    let trust_domain = ward_sidecar::compile_policies(Some(configuration))?.trust_domain;
    let policy = ward_policy::mcp::McpPolicy::compile(spec, trust_domain.as_str(), namespace)?;
    let caller_id = caller.map(SpiffeId::parse).transpose().context("--caller")?;
    let dapr = caller_id.as_ref().map(|id| id.dapr_identity()).transpose().context("--caller")?;
    let spiffe = caller_id.as_ref().map(ToString::to_string).unwrap_or_default();
    let mcp_caller = dapr.map(|d| ward_policy::mcp::McpCaller {
        spiffe_id: &spiffe,
        trust_domain: d.trust_domain,
        namespace: d.namespace,
        app_id: d.app_id,
    });
    let decision = policy.decide_tool(mcp_caller.as_ref(), tool);
    println!(
        "{}: tool {tool:?} for {}: decided by {}",
        if decision.allowed { "allow" } else { "deny" },
        caller.unwrap_or("an unverified caller"),
        decision.rule
    );
    Ok(if decision.allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
