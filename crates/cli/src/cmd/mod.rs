//! One module per `ward` subcommand, plus the small helpers they share.

pub mod audit;
pub mod injector;
pub mod k8s;
mod logjson;
pub mod mtls;
pub mod operator;
pub mod policy;
pub mod run;
pub mod sentry;
pub mod sidecar;

use std::time::Duration;

/// Parses a duration the way Dapr's flags write them: `24h`, `15m`, `1h30m`, `500ms`, `365d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("invalid duration {text:?}: {err}"))
}

/// Like `parse_duration`, but a plain number means days (as `dapr mtls renew-certificate --valid-until`).
pub fn parse_days_or_duration(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(days) => Ok(Duration::from_secs(days * 86_400)),
        Err(_) => parse_duration(text),
    }
}

/// Limits every listener of a process gets (`ward-net`): a slow or idle client cannot hold a port open.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenerArgs {
    /// A TLS handshake must complete within this after accept.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// The first request (HTTP/1.1 headers, or the HTTP/2 preface and first HEADERS) must arrive within this.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Open connections per listener; more are refused at accept.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
}

impl ListenerArgs {
    pub fn limits(&self) -> anyhow::Result<ward_net::ListenerLimits> {
        let limits = ward_net::ListenerLimits {
            handshake_timeout: self.handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            ..ward_net::ListenerLimits::default()
        };
        limits.validate().map_err(|err| anyhow::anyhow!("listener limits: {err}"))?;
        Ok(limits)
    }
}

/// `--log-level` / `--log-as-json`, as daprd's.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// debug, info, warn or error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Write logs as JSON lines.
    #[arg(long)]
    pub log_as_json: bool,
}

impl LogArgs {
    /// `app_id` is the `app_id` of every JSON line (`dapr-sentry` for sentry).
    pub fn init(&self, app_id: &str) -> anyhow::Result<()> {
        let filter =
            tracing_subscriber::EnvFilter::try_new(format!("{},h2=warn,hyper=warn,rustls=warn", self.log_level))
                .map_err(|err| anyhow::anyhow!("--log-level {:?}: {err}", self.log_level))?;
        use std::io::IsTerminal;
        // Colours only for a person at a terminal; `ward run` and log collectors get plain text.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        if self.log_as_json {
            builder.event_format(logjson::DaprJson::new(app_id)).try_init()
        } else {
            builder.try_init()
        }
        .map_err(|err| anyhow::anyhow!("initialising logs: {err}"))
    }
}

/// `$WARD_HOME`, default `~/.ward`.
pub fn ward_home() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("WARD_HOME").filter(|v| !v.is_empty()) {
        return home.into();
    }
    std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| ".".into()).join(".ward")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_days_or_duration("30"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_days_or_duration("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert!(parse_duration("soon").is_err());
    }
}
