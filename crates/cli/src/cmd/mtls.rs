//! `ward mtls …`: root and issuer material managed offline (Dapr's CLI does this only on Kubernetes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ward_identity::TrustDomain;
use ward_sentry::material::{self, CaFiles, RootRenewal};

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
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        warn_days: u64,
    },
    /// Copy the trust bundle and the issuer certificate and key to OUT.
    Export {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a new root and issuer. With --keep-root-key the root key stays, so running sidecars keep trusting
    /// the new issuer; without it the new root is added next to the old one(s) in ca.crt (rotation without
    /// downtime: remove the old root once all workloads have renewed).
    #[command(alias = "renew-cert", alias = "rnc")]
    RenewCertificate {
        #[arg(long)]
        dir: PathBuf,
        /// The new root's lifetime: a duration (720h, 365d) or a plain number of days.
        #[arg(long, default_value = "365", value_parser = super::parse_days_or_duration)]
        valid_until: Duration,
        #[arg(long)]
        keep_root_key: bool,
        #[arg(long, default_value = "public", value_parser = TrustDomain::new)]
        trust_domain: TrustDomain,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
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
            let expiry = material::expiry(&CaFiles::in_dir(&dir))?;
            let now = SystemTime::now();
            let mut soonest = u64::MAX;
            let mut report = |what: &str, subject: &str, not_after: SystemTime| {
                let days = not_after.duration_since(now).map(|d| d.as_secs() / 86_400).unwrap_or(0);
                let expired = not_after <= now;
                soonest = soonest.min(if expired { 0 } else { days });
                let date = time::OffsetDateTime::from(not_after)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                if expired {
                    println!("{what} ({subject}): notAfter {date}: EXPIRED");
                } else {
                    println!("{what} ({subject}): notAfter {date}: {days} days until expiry");
                }
            };
            for (subject, not_after) in &expiry.roots {
                report("root", subject, *not_after);
            }
            report("issuer", &expiry.issuer.0, expiry.issuer.1);
            if soonest < warn_days {
                println!("WARNING: fewer than {warn_days} days remain; run `ward mtls renew-certificate`");
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { dir, out } => {
            for path in material::export(&dir, &out)? {
                println!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::RenewCertificate { dir, valid_until, keep_root_key, trust_domain } => {
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
