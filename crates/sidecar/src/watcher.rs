//! The one configuration watcher: polls the Configuration file and the resource directories, and on a change
//! builds a complete new snapshot off to the side (configuration parsed and validated, settings resolved, policies
//! compiled, components built) before swapping any of it in. A reload that fails keeps the previous snapshot and
//! logs one error line naming file and field.
//!
//! Half-written files: a change is applied only once two reads `SETTLE` apart agree, and only if it loads and
//! validates in full. Editors and deploy tools should still write a new file and `rename` it over the old one
//! (atomic on POSIX), as `docs/sidecar.md` says. A reload that removes a security control entirely
//! (`accessControl`, `secrets`, `api`, `components.deny`, … — the classic half-written file) is refused in
//! production (the old configuration stays until a restart) and applied with one warning per control in
//! development.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ward_config::Configuration;
use ward_policy::{AccessControl, ApiAllowList, Capabilities};

use crate::components::Components;
use crate::runtime::SidecarOptions;
use crate::settings::Settings;

/// How often the files are checked.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a change must stay unchanged before it is read as a whole.
const SETTLE: Duration = Duration::from_millis(100);

/// What a reload swaps.
#[derive(Clone)]
pub(crate) struct Reloadable {
    pub(crate) acl: Arc<ArcSwap<AccessControl>>,
    pub(crate) capabilities: Arc<ArcSwap<Capabilities>>,
    pub(crate) api_list: Arc<ArcSwap<ApiAllowList>>,
    pub(crate) api_log: ward_gate::ApiLogHandle,
    pub(crate) mcp: Arc<arc_swap::ArcSwapOption<ward_policy::mcp::McpPolicy>>,
    pub(crate) components: Arc<Components>,
    /// Whether this sidecar signs provenance tokens (fixed at start: the key lives as long as the process).
    pub(crate) provenance: bool,
}

/// The watcher's inputs: the flags (settings are resolved again on every reload) and the running configuration.
pub(crate) struct Watcher {
    pub(crate) options: SidecarOptions,
    /// Kubernetes: the Configuration and resources come from the operator; a change there wakes the watcher.
    pub(crate) feed: Option<Arc<crate::control_plane::OperatorFeed>>,
    pub(crate) production: bool,
    /// What the running configuration sets: its security controls and its tracing (judged on the next reload);
    /// not the Configuration itself, whose policy specs are compiled and need not stay in memory twice.
    pub(crate) current: Option<Applied>,
    pub(crate) targets: Reloadable,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// What the watcher keeps of the configuration in force.
pub(crate) struct Applied {
    controls: ward_config::SecurityControls,
    /// `spec.tracing` and `spec.ward.audit.otlp`: built at start, so a change is reported, not applied.
    tracing: (Option<ward_config::TracingSpec>, bool),
}

impl Applied {
    pub(crate) fn of(configuration: &Configuration) -> Applied {
        Applied {
            controls: configuration.controls(),
            tracing: (configuration.tracing.clone(), configuration.ward.audit_otlp),
        }
    }
}

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error(transparent)]
    Config(#[from] ward_config::ConfigError),
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error(transparent)]
    Components(#[from] crate::components::RegistryError),
    #[error("{0}: {1} was removed; a production sidecar keeps the previous configuration until a restart")]
    ControlRemoved(PathBuf, &'static str),
}

impl Watcher {
    pub(crate) async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut last = self.fingerprint().await;
        let mut operator = self.feed.as_ref().map(|feed| feed.watch());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = operator_changed(&mut operator) => {}
                _ = stop.changed() => return,
            }
            let current = self.fingerprint().await;
            if current == last {
                continue;
            }
            // Files may be half-written: wait for them to settle. The operator's snapshot changes one whole
            // resource at a time, so a change that is only the operator's is applied at once.
            let files_changed = (&current.0, &current.1) != (&last.0, &last.1);
            if files_changed {
                tokio::time::sleep(SETTLE).await;
                if self.fingerprint().await != current {
                    continue; // still being written: look again next round
                }
            }
            last = current;
            match self.reload().await {
                Ok(()) => {
                    self.metrics.reload(true);
                    tracing::info!("configuration or resources changed; reloaded")
                }
                Err(err) => {
                    self.metrics.reload(false);
                    tracing::error!("reload refused, keeping the previous configuration: {err}")
                }
            }
        }
    }

    /// Fingerprints of the Configuration file and of the resource directories, and the operator feed's generation.
    async fn fingerprint(&self) -> (Option<u64>, Option<u64>, u64) {
        let config = match self.options.config_path.clone() {
            Some(path) if self.feed.is_none() => {
                tokio::task::spawn_blocking(move || ward_config::file_fingerprint(&path)).await.unwrap_or(None)
            }
            _ => None,
        };
        let operator = self.feed.as_ref().map_or(0, |feed| feed.generation());
        (config, self.targets.components.fingerprint().await, operator)
    }

    /// Loads, validates and builds everything, then swaps it in; on any error nothing changes.
    pub(crate) async fn reload(&mut self) -> Result<(), ReloadError> {
        // A Configuration file is a few kilobytes: reading it inline is cheaper than a blocking-pool hop.
        let configuration: Option<Configuration> = match (&self.feed, &self.options.config_path) {
            (Some(feed), _) => feed.configuration()?,
            (None, Some(path)) => Some(ward_config::load_configuration(path)?),
            (None, None) => None,
        };
        let settings = Settings::resolve(&self.options, configuration.as_ref())?;
        let path = match &self.feed {
            Some(feed) => feed.configuration_source(),
            None => self.options.config_path.clone().unwrap_or_default(),
        };
        let removed = match (&self.current, &configuration) {
            (Some(previous), Some(next)) => next.controls().removed_since(&previous.controls),
            _ => Vec::new(),
        };
        if let Some(first) = removed.first()
            && (self.production || settings.production)
        {
            return Err(ReloadError::ControlRemoved(path, first));
        }
        for control in &removed {
            tracing::warn!("{}: {control} was removed by this reload (development mode: applied)", path.display());
        }
        let registry = self.targets.components.rebuild(configuration.as_ref()).await?;
        settings.warn_unhonoured(&path);
        if settings.provenance != self.targets.provenance {
            tracing::warn!(
                "{}: spec.ward.provenance.enabled changed to {}: NOT APPLIED until the sidecar restarts",
                path.display(),
                settings.provenance
            );
        }
        // The tracer and its exporters are built at start (issue 17): a change is reported, not silently dropped.
        let next = configuration.as_ref().map(Applied::of);
        if self.current.as_ref().map(|c| &c.tracing) != next.as_ref().map(|c| &c.tracing) {
            tracing::warn!(
                "{}: spec.tracing / spec.ward.audit.otlp changed: NOT APPLIED until the sidecar restarts",
                path.display()
            );
        }
        self.targets.acl.store(Arc::new(settings.acl));
        self.targets.capabilities.store(Arc::new(settings.capabilities));
        self.targets.api_list.store(Arc::new(settings.api_list));
        self.targets.api_log.store(Arc::new(settings.api_log));
        self.targets.mcp.store(settings.mcp.map(Arc::new));
        self.targets.components.install(registry);
        self.current = next;
        drop(configuration);
        // The parse and the build peaked above what stays live; hand the freed pages back, and the code that ran
        // only for them.
        ward_memory::release_freed();
        ward_memory::release_startup_code();
        Ok(())
    }
}

/// Resolves when the operator feed moves on; never without one (or once its sender is gone).
async fn operator_changed(receiver: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match receiver {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}
