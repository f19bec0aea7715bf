//! The `ward` binary: argument parsing and wiring only. Every subcommand lives in `cmd/<name>.rs` as an `Args`
//! struct plus a `run` function; errors become one readable line on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Debug, Parser)]
#[command(name = "ward", version, about = "A security-first, Dapr-compatible sidecar runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// CA material: init, expiry, export, renew-certificate (offline files, or with -k the cluster's CA).
    Mtls(cmd::mtls::Args),
    /// Install ward's control plane on Kubernetes (-k).
    Init(Box<cmd::k8s::InitArgs>),
    /// Remove ward's control plane from Kubernetes (-k).
    Uninstall(Box<cmd::k8s::UninstallArgs>),
    /// The control plane's Deployments and CA expiry on Kubernetes (-k).
    Status(Box<cmd::k8s::StatusArgs>),
    /// The certificate authority that issues SPIFFE X.509 certificates to sidecars (Dapr Sentry's role).
    Sentry(Box<cmd::sentry::Args>),
    /// The sidecar (a drop-in for daprd): public Dapr API for one app, mTLS to other sidecars.
    Sidecar(Box<cmd::sidecar::Args>),
    /// Local development: an embedded CA, one sidecar per app with mTLS, and the apps (one app, or a Multi-App
    /// Run file).
    Run(Box<cmd::run::Args>),
    /// Stop a `ward run` started from another terminal.
    Stop(cmd::run::StopArgs),
    /// Access-control policies: explain a decision, lint a configuration.
    #[command(subcommand)]
    Policy(cmd::policy::Command),
    /// Audit logs: verify the hash chain.
    #[command(subcommand)]
    Audit(cmd::audit::Command),
    /// Kubernetes: the sidecar injector, a mutating admission webhook adding `daprd` to annotated pods.
    Injector(Box<cmd::injector::Args>),
    /// Kubernetes: Dapr's operator, serving the cluster's components, configurations and subscriptions to sidecars.
    Operator(Box<cmd::operator::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mtls(args) => cmd::mtls::run(args),
        Command::Init(args) => cmd::k8s::init(*args),
        Command::Uninstall(args) => cmd::k8s::uninstall(*args),
        Command::Status(args) => cmd::k8s::status(*args),
        Command::Sentry(args) => cmd::sentry::run(*args),
        Command::Sidecar(args) => cmd::sidecar::run(*args),
        Command::Run(args) => cmd::run::run(*args),
        Command::Stop(args) => cmd::run::stop(args),
        Command::Policy(command) => cmd::policy::run(command),
        Command::Audit(command) => cmd::audit::run(command),
        Command::Injector(args) => cmd::injector::run(*args),
        Command::Operator(args) => cmd::operator::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` joins the context chain into one line: "loading issuer credentials: /x/issuer.key: ...".
            eprintln!("ward: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
