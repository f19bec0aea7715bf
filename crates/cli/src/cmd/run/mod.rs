//! `ward run` and `ward stop`: argument parsing and wiring only; the orchestration (embedded CA, sidecars, apps,
//! generated tokens, ordered shutdown) lives in the `ward-run` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ward_run::{AppSpec, RunOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Multi-App Run file, or a directory holding dapr.yaml (or ward.yaml).
    #[arg(short = 'f', long = "run-file")]
    run_file: Option<PathBuf>,
    #[arg(long, conflicts_with = "run_file")]
    app_id: Option<String>,
    #[arg(long)]
    app_port: Option<u16>,
    #[arg(long = "resources-path", alias = "components-path")]
    resources_path: Vec<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    dapr_http_port: Option<u16>,
    #[arg(long)]
    dapr_grpc_port: Option<u16>,
    #[arg(long)]
    dapr_internal_grpc_port: Option<u16>,
    /// Log level of the sidecars.
    #[arg(long)]
    log_level: Option<String>,
    /// The app's command, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    #[arg(short = 'f', long = "run-file")]
    run_file: Option<PathBuf>,
    #[arg(long, conflicts_with = "run_file")]
    app_id: Option<String>,
}

pub fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let key = ward_run::run_key(args.run_file.as_deref(), args.app_id.as_deref())?;
    let pid = ward_run::stop(&super::ward_home(), &key)?;
    println!("stopped ward run (pid {pid})");
    Ok(ExitCode::SUCCESS)
}

fn apps_from_args(args: &Args) -> anyhow::Result<(Vec<AppSpec>, Option<PathBuf>)> {
    if let Some(file) = &args.run_file {
        let (path, run) = ward_run::runfile::load(file)?;
        println!(
            "== ward run: {} ({} apps)",
            run.name.as_deref().unwrap_or(&path.display().to_string()),
            run.apps.len()
        );
        return Ok((run.apps, Some(path)));
    }
    let app_id = args.app_id.clone().context("give --app-id (or -f FILE)")?;
    let cwd = std::env::current_dir().context("current directory")?;
    let mut app = AppSpec::new(app_id, cwd);
    app.app_port = args.app_port;
    app.command = args.command.clone();
    app.dapr_http_port = args.dapr_http_port;
    app.dapr_grpc_port = args.dapr_grpc_port;
    app.dapr_internal_grpc_port = args.dapr_internal_grpc_port;
    app.resources_paths = args.resources_path.clone();
    app.config = args.config.clone();
    app.log_level = args.log_level.clone();
    Ok((vec![app], None))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (apps, run_file) = apps_from_args(&args)?;
    let single = apps.first().map(|a| a.app_id.as_str()).filter(|_| run_file.is_none());
    let key = ward_run::run_key(run_file.as_deref(), single)?;
    let options = RunOptions {
        apps,
        key,
        home: super::ward_home(),
        ward_exe: std::env::current_exe().context("locating the ward binary")?,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let succeeded = runtime.block_on(ward_run::run(options, super::sentry::shutdown_signal()))?;
    Ok(if succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
