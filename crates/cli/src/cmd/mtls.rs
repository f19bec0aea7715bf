//! `ward mtls …`: root and issuer material managed offline (Dapr's CLI does this only on Kubernetes), and with
//! `-k` the same views of the cluster's CA (Secret `dapr-trust-bundle`) and mTLS setting (`daprsystem`).

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ward_identity::TrustDomain;
use ward_sentry::material::{self, CaFiles, Expiry, RootRenewal};

/// `ward mtls [-k] [SUBCOMMAND]`: with `-k` and no subcommand, whether mTLS is on in the cluster (`dapr mtls -k`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubernetes: read the cluster's CA (Secret dapr-trust-bundle) and Configuration daprsystem instead of files.
    #[arg(short = 'k', long = "kubernetes", global = true)]
    kubernetes: bool,
    /// With -k: the kubeconfig file (default: in-cluster, else $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// With -k: the control-plane namespace.
    #[arg(short = 'n', long, default_value = ward_kube::install::DEFAULT_NAMESPACE, global = true)]
    namespace: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a self-signed root and an issuer (intermediate CA) in DIR: ca.crt, issuer.crt, issuer.key (and the
    /// root key ca.key, needed only to renew with the same root; keep it offline if you can).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "public", value_parser = TrustDomain::new)]
        trust_domain: TrustDomain,
        /// Lifetime of the root and the issuer.
        #[arg(long, default_value = "8760h", value_parser = super::parse_duration)]
        valid_for: Duration,
        /// Replace existing material.
        #[arg(long)]
        force: bool,
    },
    /// Print when the root(s) and the issuer expire; exit code 2 when fewer than --warn-days remain.
    Expiry {
        /// The CA directory (self-hosted); not used with -k.
        #[arg(long, required_unless_present = "kubernetes")]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 30)]
        warn_days: u64,
    },
    /// Copy the trust bundle and the issuer certificate and key to OUT (with -k: from Secret dapr-trust-bundle).
    Export {
        /// The CA directory (self-hosted); not used with -k.
        #[arg(long, required_unless_present = "kubernetes")]
        dir: Option<PathBuf>,
        #[arg(short = 'o', long)]
        out: PathBuf,
    },
    /// Issue a new root and issuer. With --keep-root-key the root key stays, so running sidecars keep trusting
    /// the new issuer; without it the new root is added next to the old one(s) in ca.crt (rotation without
    /// downtime: remove the old root once all workloads have renewed).
    #[command(alias = "renew-cert", alias = "rnc")]
    RenewCertificate {
        #[arg(long, required_unless_present = "kubernetes")]
        dir: Option<PathBuf>,
        /// The new root's lifetime: a duration (720h, 365d) or a plain number of days.
        #[arg(long, default_value = "365", value_parser = super::parse_days_or_duration)]
        valid_until: Duration,
        #[arg(long)]
        keep_root_key: bool,
        #[arg(long, default_value = "public", value_parser = TrustDomain::new)]
        trust_domain: TrustDomain,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.kubernetes {
        return kubernetes(args);
    }
    let Some(command) = args.command else {
        anyhow::bail!("ward mtls: give a subcommand (init, expiry, export, renew-certificate), or -k for the cluster");
    };
    match command {
        Command::Init { dir, trust_domain, valid_for, force } => {
            let generated = material::generate(&trust_domain, valid_for)?;
            let files = material::write(&dir, &generated, force)?;
            println!("Created CA material for trust domain {trust_domain:?} in {}:", dir.display());
            for path in [&files.root_cert, &files.issuer_cert, &files.issuer_key, &files.root_key] {
                println!("  {}", path.display());
            }
            println!("Trust anchors for sidecars: DAPR_TRUST_ANCHORS=\"$(cat {})\"", files.root_cert.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Expiry { dir, warn_days } => {
            let dir = dir.context("--dir is required without -k")?;
            Ok(print_expiry(&material::expiry(&CaFiles::in_dir(&dir))?, warn_days))
        }
        Command::Export { dir, out } => {
            let dir = dir.context("--dir is required without -k")?;
            for path in material::export(&dir, &out)? {
                println!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::RenewCertificate { dir, valid_until, keep_root_key, trust_domain } => {
            let dir = dir.context("--dir is required without -k")?;
            let mode = if keep_root_key { RootRenewal::KeepKey } else { RootRenewal::NewKey };
            material::renew(&dir, &trust_domain, valid_until, mode)
                .with_context(|| format!("renewing CA material in {}", dir.display()))?;
            match mode {
                RootRenewal::KeepKey => println!(
                    "Renewed root and issuer with the same root key in {}; a running sentry reloads them, and \
                     sidecars keep trusting the new issuer.",
                    dir.display()
                ),
                RootRenewal::NewKey => println!(
                    "Renewed with a NEW root key in {}; ca.crt now holds the new root and the old one(s). \
                     Distribute ca.crt as the trust anchors, and remove the old root once all workloads renewed.",
                    dir.display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints each root's and the issuer's expiry (the same lines for files and for the cluster's Secret); exit code 2
/// when fewer than `warn_days` remain.
fn print_expiry(expiry: &Expiry, warn_days: u64) -> ExitCode {
    let now = SystemTime::now();
    let mut soonest = u64::MAX;
    let mut report = |what: &str, subject: &str, not_after: SystemTime| {
        let days = not_after.duration_since(now).map(|d| d.as_secs() / 86_400).unwrap_or(0);
        let expired = not_after <= now;
        soonest = soonest.min(if expired { 0 } else { days });
        if expired {
            println!("{what} ({subject}): notAfter {}: EXPIRED", rfc3339(not_after));
        } else {
            println!("{what} ({subject}): notAfter {}: {days} days until expiry", rfc3339(not_after));
        }
    };
    for (subject, not_after) in &expiry.roots {
        report("root", subject, *not_after);
    }
    report("issuer", &expiry.issuer.0, expiry.issuer.1);
    if soonest < warn_days {
        println!("WARNING: fewer than {warn_days} days remain; run `ward mtls renew-certificate`");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Dapr's one-line summary (`dapr mtls expiry`): `Root certificate expires in <n> hours. Expiry date: …`.
pub fn root_expiry_line(not_after: SystemTime, now: SystemTime) -> String {
    match not_after.duration_since(now) {
        Ok(left) => {
            format!("Root certificate expires in {} hours. Expiry date: {}", left.as_secs() / 3600, rfc3339(not_after))
        }
        Err(_) => format!("Root certificate EXPIRED. Expiry date: {}", rfc3339(not_after)),
    }
}

/// `ward mtls … -k`.
fn kubernetes(args: Args) -> anyhow::Result<ExitCode> {
    use ward_kube::install;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        let client =
            ward_kube::connect(args.kubeconfig.as_deref()).await.context("connecting to the Kubernetes API server")?;
        let namespace = &args.namespace;
        match args.command {
            None => {
                let enabled = install::mtls_enabled(&client, namespace).await?;
                let state = if enabled { "enabled" } else { "disabled" };
                println!("Mutual TLS is {state} in your Kubernetes cluster");
                // As Dapr: warn when the root expires within 30 days (no CA yet is not an error here).
                if let Ok(bundle) = install::trust_bundle(&client, namespace).await {
                    let now = SystemTime::now();
                    let soonest = bundle.expiry()?.roots.iter().map(|(_, t)| *t).min();
                    if let Some(soonest) = soonest.filter(|t| *t < now + Duration::from_secs(30 * 86_400)) {
                        println!("WARNING: {}", root_expiry_line(soonest, now));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Some(Command::Expiry { warn_days, .. }) => {
                let bundle = install::trust_bundle(&client, namespace).await?;
                Ok(print_expiry(&bundle.expiry()?, warn_days))
            }
            Some(Command::Export { out, .. }) => {
                let bundle = install::trust_bundle(&client, namespace).await?;
                // Parse before writing: exporting broken material helps nobody.
                bundle.expiry()?;
                material::create_private_dir(&out)?;
                let to = CaFiles::in_dir(&out);
                for (path, bytes) in
                    [(&to.root_cert, &bundle.ca_crt), (&to.issuer_cert, &bundle.issuer_crt), (&to.issuer_key, &bundle.issuer_key)]
                {
                    material::write_private(path, bytes)?;
                    println!("wrote {}", path.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            Some(Command::Init { .. }) => anyhow::bail!(
                "ward mtls init -k: on Kubernetes the sentry creates its CA (Secret {}) on first start; run `ward init -k`",
                install::TRUST_BUNDLE_SECRET
            ),
            // Starts an in-place rotation that sentry drives: new root appended, issuer switched once every
            // namespace has it, old root retired after the last certificate under it expired.
            Some(Command::RenewCertificate { valid_until, keep_root_key, trust_domain, .. }) => {
                if keep_root_key {
                    anyhow::bail!(
                        "--keep-root-key does not apply with -k: the cluster does not store the root key; -k rotates \
                         to a new root without downtime"
                    );
                }
                let phase = ward_kube::rotation::start(&client, namespace, &trust_domain, valid_until).await?;
                println!(
                    "Root rotation started ({phase}): the new root is published to every dapr-root-ca.crt; sentry \
                     switches the issuer once all namespaces carry it and retires the old root after the last \
                     certificate under it expires. No restarts needed."
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("mtls").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn k_goes_anywhere_and_replaces_dir() {
        let status = parse(&["-k"]).unwrap();
        assert!(status.kubernetes && status.command.is_none() && status.namespace == "dapr-system");
        let expiry = parse(&["expiry", "-k", "--kubeconfig", "/k", "-n", "cp"]).unwrap();
        assert!(expiry.kubernetes && matches!(expiry.command, Some(Command::Expiry { dir: None, warn_days: 30 })));
        assert_eq!((expiry.kubeconfig, expiry.namespace.as_str()), (Some(PathBuf::from("/k")), "cp"));
        let export = parse(&["export", "-k", "-o", "out"]).unwrap();
        assert!(matches!(export.command, Some(Command::Export { dir: None, ref out }) if out == Path::new("out")));
        // Self-hosted: --dir stays required.
        assert!(parse(&["expiry"]).is_err());
        assert!(parse(&["export", "--out", "o"]).is_err());
        let files = parse(&["export", "--dir", "d", "--out", "o"]).unwrap();
        assert!(!files.kubernetes);
    }

    #[test]
    fn expiry_line_reads_like_dapr() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let line = root_expiry_line(now + Duration::from_secs(50 * 3600 + 59), now);
        assert_eq!(line, "Root certificate expires in 50 hours. Expiry date: 1970-01-14T15:47:39Z");
        assert!(root_expiry_line(now, now + Duration::from_secs(1)).contains("EXPIRED"));
    }
}
