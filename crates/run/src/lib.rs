//! `ward run`: local development with security on from the first command. This crate owns the orchestration;
//! the `ward` binary only parses arguments and calls [`run`] / [`stop`].
//!
//! A run starts an embedded CA (material under `$WARD_HOME/ca`, created on first use) that signs only the
//! identities of this run (one single-use join token per app, never the insecure validator), one `ward sidecar`
//! per app with mTLS on, then the apps with `DAPR_HTTP_PORT`, `DAPR_GRPC_PORT`, `APP_ID` and `DAPR_API_TOKEN`
//! set. Each app's `DAPR_API_TOKEN` is the run file's, or a random one made for this run; it goes to the app and
//! its sidecar by environment only and is printed nowhere. Logs are prefixed per process.
//!
//! Shutdown order on Ctrl-C / SIGTERM / `ward stop`: apps, then sidecars, then the CA, each within a bound.
//!
//! What it does not do: parse command-line flags (the binary), check credentials (`ward-sentry`), or serve any
//! API itself (the sidecars it starts do).

mod process;
mod run;
pub mod runfile;
pub mod token;

use std::path::PathBuf;

pub use run::{RunOptions, pid_file, run, run_key, stop};
pub use runfile::{AppSpec, RunFile, RunFileError};

/// Why a run could not start, or `ward stop` could not stop one.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    RunFile(#[from] RunFileError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the embedded CA: {0}")]
    Sentry(#[from] ward_sentry::SentryError),
    #[error("CA material: {0}")]
    Material(#[from] ward_sentry::material::MaterialError),
    #[error("join tokens: {0}")]
    JoinTokens(String),
    #[error("the embedded CA did not start")]
    CaNotReady,
    #[error("the operating system's random number generator failed")]
    Randomness,
    #[error("the sidecar of {app_id} exited during start-up ({status})")]
    SidecarExited { app_id: String, status: String },
    #[error("the sidecar of {app_id} did not become ready within 30s")]
    SidecarNotReady { app_id: String },
    #[error("{app_id}: empty command")]
    EmptyCommand { app_id: String },
    #[error("starting {app_id}: {command}: {source}")]
    AppStart {
        app_id: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("give -f FILE or --app-id")]
    NoTarget,
    #[error("no running `ward run` found ({} is missing)", path.display())]
    NotRunning { path: PathBuf },
    #[error("ward run (pid {pid}) did not stop within 15s")]
    StopTimeout { pid: String },
}
