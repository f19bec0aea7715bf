//! `ward policy check` explains one access-control decision exactly as a sidecar would make it: it calls
//! `ward_policy::decide_invocation`, the function the callee sidecar's ACL layer calls, so refusals before the ACL
//! (invalid method spelling, unsupported verb, reserved gRPC service), normalisation and matching are the same.
//! With `spec.ward.capabilities` routes configured, `check` also explains the capability decision that follows an
//! allow (required capabilities and the routes requiring them, what the caller holds, the final decision).
//! `ward policy lint` warns about risky configurations, including a route requiring a capability nobody is granted
//! and a granted capability no route requires. Both read a Configuration file and nothing else, so they fit
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
    /// Warn about risky access-control settings; exit 1 when there are warnings. With -k: app ids of annotated
    /// pods in the cluster that spec.ward.appIdBindings leaves unbound (or that sentry will refuse).
    Lint {
        #[arg(long, required_unless_present = "kubernetes")]
        config: Option<PathBuf>,
        #[arg(short = 'k', long)]
        kubernetes: bool,
        /// With -k: the control-plane namespace, whose `daprsystem` Configuration holds the bindings.
        #[arg(short = 'n', long, default_value = "dapr-system")]
        namespace: String,
        /// With -k: a kubeconfig file (default: in-cluster, else KUBECONFIG).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
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
            let policies = ward_sidecar::compile_policies(Some(&configuration))?;
            let (acl, capabilities) = (policies.acl, policies.capabilities);
            let caller_id = caller.as_deref().map(SpiffeId::parse).transpose().context("--caller")?;
            let dapr = caller_id.as_ref().map(|id| id.dapr_identity()).transpose().context("--caller")?;
            let caller =
                dapr.map(|d| Caller { trust_domain: d.trust_domain, namespace: d.namespace, app_id: d.app_id });
            let input = InvocationInput {
                caller,
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
                    let acl_line = format!(
                        "{}: operation {:?} verb {verb}: decided by {} ({})",
                        if d.decision.allowed { "allow" } else { "deny" },
                        d.operation.as_str(),
                        d.decision.rule,
                        d.decision.reason
                    );
                    if !capabilities.is_configured() {
                        println!("{acl_line}");
                        return Ok(if d.decision.allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
                    }
                    println!("accessControl: {acl_line}");
                    if !d.decision.allowed {
                        println!("capabilities: not consulted (the ACL denied)");
                        println!("deny");
                        return Ok(ExitCode::FAILURE);
                    }
                    let app_protocol = match d.operation {
                        ward_policy::Operation::Grpc(_) => AppProtocol::Grpc,
                        ward_policy::Operation::Http(_) => input.app_protocol,
                    };
                    let request = ward_policy::CapabilityRequest {
                        caller,
                        operation: d.operation.as_str(),
                        verb: d.verb,
                        app_protocol,
                    };
                    Ok(explain_capabilities(&capabilities, &request))
                }
            }
        }
        Command::Lint { kubernetes: true, namespace, kubeconfig, .. } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let findings = runtime.block_on(async {
                let client = ward_kube::connect(kubeconfig.as_deref()).await?;
                ward_kube::sentry::lint_app_id_bindings(
                    &client,
                    &namespace,
                    ward_kube::sentry::CONTROL_PLANE_CONFIGURATION,
                )
                .await
                .map_err(|err| anyhow::anyhow!(err))
            })?;
            for finding in &findings {
                println!("warning: {finding}");
            }
            if findings.is_empty() {
                println!("ok: every app id of an annotated pod is bound to its service accounts");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(ExitCode::from(1))
        }
        Command::Lint { config, .. } => {
            let config = config.context("--config FILE (or -k for the cluster)")?;
            let configuration = ward_config::load_configuration(&config)?;
            let policies = ward_sidecar::compile_policies(Some(&configuration))?;
            let mut warnings = policies.capabilities.lint();
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

/// Prints the capability half of `ward policy check` after an ACL allow and returns the exit code.
fn explain_capabilities(
    capabilities: &ward_policy::Capabilities,
    request: &ward_policy::CapabilityRequest<'_>,
) -> ExitCode {
    let held: Vec<&str> =
        request.caller.map(|c| capabilities.held(c)).unwrap_or_default().iter().map(|c| &**c).collect();
    let applying: Vec<(usize, &str, &[Box<str>])> = capabilities.applying(request).collect();
    if applying.is_empty() {
        println!("capabilities: no route applies; required none");
        println!("allow");
        return ExitCode::SUCCESS;
    }
    for (index, name, requires) in &applying {
        let requires: Vec<&str> = requires.iter().map(|c| &**c).collect();
        println!("capabilities: spec.ward.capabilities.routes[{index}] ({name}) requires [{}]", requires.join(", "));
    }
    match request.caller {
        Some(_) => println!("capabilities: caller holds [{}]", held.join(", ")),
        None => println!("capabilities: caller unverified, holds none"),
    }
    match capabilities.decide(request) {
        ward_policy::CapabilityDecision::Missing { capability, route, .. } => {
            println!("deny: missing capability {capability} (spec.ward.capabilities.routes[{route}])");
            ExitCode::FAILURE
        }
        _ => {
            println!("allow");
            ExitCode::SUCCESS
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
