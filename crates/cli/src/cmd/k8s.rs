//! `ward init -k`, `ward uninstall -k`, `ward status -k`: the control plane on Kubernetes, with Dapr CLI's flags
//! and messages where Dapr has them. Argument parsing and printing only; the work is `ward_kube::install`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ward_kube::install::{self, InstallOptions, UninstallOptions};

/// Flags every `-k` command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Act on the Kubernetes cluster of the current kubeconfig context (the only target these commands have).
    #[arg(short = 'k', long = "kubernetes")]
    pub kubernetes: bool,
    /// The kubeconfig file (default: in-cluster, else $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The control-plane namespace.
    #[arg(short = 'n', long, default_value = install::DEFAULT_NAMESPACE)]
    pub namespace: String,
}

impl KubeArgs {
    fn require(&self, command: &str) -> anyhow::Result<()> {
        if !self.kubernetes {
            anyhow::bail!(
                "ward {command} works on Kubernetes only: add -k (for local development, `ward run` needs no init)"
            );
        }
        Ok(())
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        ward_kube::connect(self.kubeconfig.as_deref()).await.context("connecting to the Kubernetes API server")
    }
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    kube: KubeArgs,
    /// Production settings: the sentry refuses configuration it does not honour, and mTLS cannot be turned off.
    #[arg(long)]
    production: bool,
    /// Wait until the control-plane Deployments are ready.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The image of the control plane and of injected sidecars.
    #[arg(long, default_value_t = install::default_image())]
    image: String,
    /// mTLS between sidecars (`--enable-mtls=false` is a development setting).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    enable_mtls: bool,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    kube: KubeArgs,
    /// Also remove Dapr's CRDs, and with them every Component, Configuration, Subscription, … in the cluster.
    #[arg(long)]
    all: bool,
    /// Wait until everything removed is gone (the namespace included).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    kube: KubeArgs,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    args.kube.require("init")?;
    let options = InstallOptions {
        namespace: args.kube.namespace.clone(),
        image: args.image.clone(),
        enable_mtls: args.enable_mtls,
        production: args.production,
    };
    // Refuse bad options before touching the cluster.
    install::render(&options)?;
    runtime()?.block_on(async {
        let client = args.kube.client().await?;
        println!("Making the jump to hyperspace...");
        println!("Deploying the ward control plane ({}) to namespace {}...", options.image, options.namespace);
        let report = install::install(&client, &options).await?;
        for skipped in &report.skipped {
            println!("  kept {skipped}: it exists and was not created by ward");
        }
        println!(
            "  applied {} objects (server-side apply, field manager {})",
            report.applied.len(),
            install::FIELD_MANAGER
        );
        if !options.enable_mtls {
            println!("WARNING: mTLS is disabled (development setting)");
        }
        if args.wait {
            println!("Waiting for the control plane to be ready (up to {}s)...", args.timeout);
            install::wait_ready(&client, &options.namespace, Duration::from_secs(args.timeout)).await?;
        }
        println!(
            "Success! ward has been installed to namespace {}. To verify, run `ward status -k` in your terminal.",
            options.namespace
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    args.kube.require("uninstall")?;
    let options = UninstallOptions {
        namespace: args.kube.namespace.clone(),
        all: args.all,
        wait: args.wait.then(|| Duration::from_secs(args.timeout)),
    };
    runtime()?.block_on(async {
        let client = args.kube.client().await?;
        println!("Removing ward from your cluster...");
        let report = install::uninstall(&client, &options).await?;
        for deleted in &report.deleted {
            println!("  deleted {deleted}");
        }
        for kept in &report.kept {
            println!("  kept {kept}");
        }
        if !args.all && report.kept.iter().any(|k| k.starts_with("CustomResourceDefinition")) {
            println!("Dapr's CRDs (and your resources in them) were kept; remove them with --all.");
        }
        println!("ward has been removed successfully");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    args.kube.require("status")?;
    runtime()?.block_on(async {
        let client = args.kube.client().await?;
        let namespace = &args.kube.namespace;
        let deployments = install::deployments(&client, namespace).await?;
        if deployments.is_empty() {
            anyhow::bail!("no ward control plane in namespace {namespace} (install it with `ward init -k`)");
        }
        let now = SystemTime::now();
        println!(
            "  {:<24}{:<16}{:<9}{:<10}{:<10}{:<12}AGE",
            "NAME", "NAMESPACE", "HEALTHY", "STATUS", "REPLICAS", "VERSION"
        );
        for d in &deployments {
            let age = d.created.and_then(|c| now.duration_since(c).ok()).map(short_age).unwrap_or_else(|| "-".into());
            let (healthy, status) = if d.healthy() { ("True", "Running") } else { ("False", "Pending") };
            println!(
                "  {:<24}{:<16}{:<9}{:<10}{:<10}{:<12}{}",
                d.name,
                d.namespace,
                healthy,
                status,
                format!("{}/{}", d.ready, d.desired),
                d.version,
                age
            );
        }
        match install::trust_bundle(&client, namespace).await {
            Ok(bundle) => {
                let expiry = bundle.expiry()?;
                if let Some(soonest) = expiry.roots.iter().map(|(_, t)| *t).min() {
                    println!("{}", super::mtls::root_expiry_line(soonest, now));
                }
            }
            // Before the sentry's first start there is no CA yet: say so, it is not an error of the status.
            Err(install::InstallError::NotInstalled { .. }) => {
                println!("No CA yet: the sentry creates Secret {} on its first start.", install::TRUST_BUNDLE_SECRET)
            }
            Err(err) => return Err(err.into()),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn short_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    enum Cli {
        Init(InitArgs),
        Uninstall(UninstallArgs),
        Status(StatusArgs),
    }

    #[test]
    fn dapr_cli_flags_parse() {
        let Cli::Init(init) = Cli::try_parse_from([
            "ward",
            "init",
            "-k",
            "--namespace",
            "cp",
            "--production",
            "--wait",
            "--timeout",
            "10",
            "--image",
            "r/w:1",
            "--kubeconfig",
            "/k",
        ])
        .unwrap() else {
            panic!("not init")
        };
        assert!(init.kube.kubernetes && init.production && init.wait && init.enable_mtls);
        assert_eq!((init.kube.namespace.as_str(), init.timeout, init.image.as_str()), ("cp", 10, "r/w:1"));
        assert_eq!(init.kube.kubeconfig, Some(PathBuf::from("/k")));
        let Cli::Init(dev) = Cli::try_parse_from(["ward", "init", "-k", "--enable-mtls=false"]).unwrap() else {
            panic!("not init")
        };
        assert!(!dev.enable_mtls);
        assert_eq!(dev.kube.namespace, "dapr-system");
        assert_eq!(dev.image, install::default_image());
        let Cli::Uninstall(un) = Cli::try_parse_from(["ward", "uninstall", "-k", "-n", "cp", "--all"]).unwrap() else {
            panic!("not uninstall")
        };
        assert!(un.all && !un.wait && un.kube.namespace == "cp");
        assert!(matches!(Cli::try_parse_from(["ward", "status", "-k"]).unwrap(), Cli::Status(_)));
        // Dapr's `--dev` installs Redis and Zipkin; ward does not pretend to.
        assert!(Cli::try_parse_from(["ward", "init", "-k", "--dev"]).is_err());
    }

    #[test]
    fn without_k_the_commands_refuse() {
        let Cli::Init(init) = Cli::try_parse_from(["ward", "init"]).unwrap() else { panic!("not init") };
        let err = super::init(init).unwrap_err().to_string();
        assert!(err.contains("add -k"), "{err}");
        let Cli::Status(status) = Cli::try_parse_from(["ward", "status"]).unwrap() else { panic!("not status") };
        assert!(super::status(status).is_err());
    }
}
