//! The component registry: which state and secret stores this sidecar's app may use, built from the
//! `--resources-path` directories and the Configuration, and swapped whole on hot reload.
//!
//! Owns, in this order (each step fail-closed): loading the [`ResourceSet`] (namespace filter as daprd), keeping
//! only components in scope for the app, skipping types denied by `spec.components.deny`, compiling
//! `spec.secrets.scopes`, building secret stores, resolving every other component's `secretKeyRef`/`envRef` through
//! them — with the app's secret scopes applied (beyond Dapr: a component cannot be used to read a secret its app
//! may not read) — and building the state stores. Also the lookups the APIs use ([`Registry::state_store`],
//! [`Registry::secret_store`]) whose answers make an out-of-scope or denied component indistinguishable from a
//! missing one (invariant 3: such a component is simply never in the registry), and the polling reload task.
//!
//! Does not: parse YAML (`ward-config`), implement stores (`ward-components`), decide secret-scope semantics
//! (`ward-policy`), or shape HTTP answers (`state_api`, `secrets_api`, `error`). No error or log line built here
//! contains a metadata value or a secret: only file, component, field, store and secret names.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::middleware::{PipelineHandles, Pipelines};
use arc_swap::ArcSwap;
use ward_components::pubsub::{PubSub, build_pubsub};
use ward_components::secretstores::{Secret, SecretStore, build_secret_store};
use ward_components::state::{KeyPrefix, StateStore, build_state_store};
use ward_components::{BuildContext, ComponentError, ComponentMetadata, ComponentSupport};
use ward_config::{Component, ConfigError, Configuration, MetadataValue, ResolveError, ResourceSet};
use ward_policy::{SecretScopeError, SecretScopes};

/// Dapr's default `spec.initTimeout`.
const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the registry needs to know about the sidecar.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `--resources-path` directories, in the order given.
    pub dirs: Vec<PathBuf>,
    /// `Some(ns)` when env `NAMESPACE` was set (daprd filters on it only then).
    pub namespace_filter: Option<String>,
    pub app_id: String,
    /// The app's namespace (used for `keyPrefix: namespace`).
    pub namespace: String,
    /// `$WARD_HOME`.
    pub data_dir: PathBuf,
    /// A production sidecar refuses components it would otherwise skip.
    pub production: bool,
    /// `--max-body-size`: the most an OPA middleware with `readBody` buffers.
    pub max_body_size: u64,
    /// Kubernetes mode: add Dapr's built-in secret store `kubernetes` (`secretstores.kubernetes`, the sidecar's own
    /// namespace) unless a component of that name is declared.
    pub builtin_kubernetes_secret_store: bool,
    /// Kubernetes mode with `--control-plane-address`: components and subscriptions come from the operator (and
    /// `dirs` is empty).
    pub operator: Option<std::sync::Arc<crate::control_plane::OperatorFeed>>,
}

/// Dapr's built-in Kubernetes secret store, as if it were declared (so scopes and every rule apply as to any store).
const BUILTIN_KUBERNETES_SECRET_STORE: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: \
     kubernetes\nspec:\n  type: secretstores.kubernetes\n  version: v1\n  metadata: []\n";

/// Why a registry could not be built. `Display` is one line naming the file, the resource and the field; never a
/// value.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A resource file does not load, or a component's type/version/metadata is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A `secretKeyRef`/`envRef` could not be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A `secretKeyRef` names a secret the app's secret scopes deny.
    #[error(
        "{}: Component {component:?}: spec.metadata {item:?}: secretKeyRef to secret {secret:?} in secret store \
         {store:?} is denied by the app's spec.secrets.scopes (a component cannot read a secret its app may not)",
        path.display()
    )]
    SecretRefDenied { path: PathBuf, component: String, item: String, store: String, secret: String },
    /// A `secretKeyRef` names a secret store this app has not loaded (missing, out of scope or denied).
    #[error(
        "{}: Component {component:?}: auth.secretStore: secret store {store:?} is not loaded for this app",
        path.display()
    )]
    SecretStoreNotLoaded { path: PathBuf, component: String, store: String },
    /// A declarative subscription's routing rule does not compile.
    #[error("{}: Subscription {name:?}: spec.{message}", path.display())]
    Subscription { path: PathBuf, name: String, message: String },
    /// `spec.secrets.scopes` is invalid.
    #[error("{}: spec.secrets.scopes: {source}", path.display())]
    SecretScopes {
        path: PathBuf,
        #[source]
        source: SecretScopeError,
    },
}

/// One loaded state store.
pub struct StateEntry {
    pub store: Arc<dyn StateStore>,
    pub prefix: KeyPrefix,
    /// The definition and resolved metadata it was built from: an unchanged component is reused on reload (an
    /// in-memory store keeps its data, a Redis store its connection).
    component: Component,
    metadata: ComponentMetadata,
}

/// One loaded secret store.
pub struct SecretEntry {
    pub store: Arc<dyn SecretStore>,
    component: Component,
    metadata: ComponentMetadata,
}

/// One loaded pub/sub broker, with the metadata the sidecar reads itself (topic scopes, `verifyPublishers`,
/// `maxDeliveryAttempts`).
pub struct PubSubEntry {
    pub pubsub: Arc<dyn PubSub>,
    pub metadata: ComponentMetadata,
    /// `publishingScopes`, `subscriptionScopes`, `allowedTopics`, `protectedTopics`, compiled once.
    pub scopes: ward_policy::TopicScopes,
    /// `verifyPublishers`, when set (the default follows mTLS: `pubsub::PubSubCore`).
    pub verify_publishers: Option<bool>,
    /// `maxDeliveryAttempts`, when set.
    pub max_delivery_attempts: Option<u32>,
    component: Component,
}

/// One loaded HTTP middleware component (a pipeline handler names it).
pub struct MiddlewareEntry {
    pub(crate) middleware: Arc<dyn ward_middleware::Middleware>,
    component: Component,
    metadata: ComponentMetadata,
}

impl MiddlewareEntry {
    pub(crate) fn component_type(&self) -> &str {
        self.component.component_type()
    }

    pub(crate) fn version(&self) -> &str {
        self.component.version()
    }
}

/// A lookup that found nothing. The two cases are Dapr's; both are chosen only from what *is* loaded, so an
/// out-of-scope or denied component answers exactly like one that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No store of this building block is loaded at all.
    NotConfigured,
    /// Others are loaded, this name is not.
    NotFound,
}

/// What `/v1.0/metadata` lists for one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    pub name: String,
    pub component_type: String,
    pub version: String,
    /// Dapr's capability names, for what ward's implementation does.
    pub capabilities: Vec<&'static str>,
}

/// The components this app may use, immutable once built; reloads build a new one and swap it in.
#[derive(Default)]
pub struct Registry {
    state: BTreeMap<String, StateEntry>,
    secrets: BTreeMap<String, SecretEntry>,
    middleware: BTreeMap<String, MiddlewareEntry>,
    pubsubs: BTreeMap<String, PubSubEntry>,
    /// Declarative `Subscription`s in scope for this app, in load order.
    subscriptions: Vec<ward_config::Subscription>,
    /// `spec.httpPipeline` and `spec.appHttpPipeline`, resolved against `middleware`.
    pipelines: Pipelines,
    secret_scopes: SecretScopes,
    listing: Vec<ComponentInfo>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("state", &self.state.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The state store `name`, if loaded for this app.
    pub fn state_store(&self, name: &str) -> Result<&StateEntry, Missing> {
        match self.state.get(name) {
            Some(entry) => Ok(entry),
            None if self.state.is_empty() => Err(Missing::NotConfigured),
            None => Err(Missing::NotFound),
        }
    }

    /// The secret store `name`, if loaded for this app.
    pub fn secret_store(&self, name: &str) -> Result<&SecretEntry, Missing> {
        match self.secrets.get(name) {
            Some(entry) => Ok(entry),
            None if self.secrets.is_empty() => Err(Missing::NotConfigured),
            None => Err(Missing::NotFound),
        }
    }

    /// The pub/sub component `name`, if loaded for this app.
    pub fn pubsub(&self, name: &str) -> Result<&PubSubEntry, Missing> {
        match self.pubsubs.get(name) {
            Some(entry) => Ok(entry),
            None if self.pubsubs.is_empty() => Err(Missing::NotConfigured),
            None => Err(Missing::NotFound),
        }
    }

    /// The declarative subscriptions in scope for this app.
    pub fn subscriptions(&self) -> &[ward_config::Subscription] {
        &self.subscriptions
    }

    /// Every loaded pub/sub component, by name.
    pub fn pubsubs(&self) -> impl Iterator<Item = (&str, &PubSubEntry)> {
        self.pubsubs.iter().map(|(name, entry)| (name.as_str(), entry))
    }

    /// Whether the app may read secret `name` of store `store` (`spec.secrets.scopes`).
    pub fn secret_allowed(&self, store: &str, name: &str) -> bool {
        self.secret_scopes.is_allowed(store, name)
    }

    /// The loaded components, in load order.
    pub fn components(&self) -> &[ComponentInfo] {
        &self.listing
    }

    /// Builds a registry. `previous` lends stores whose definition and resolved metadata did not change.
    pub async fn build(
        options: &RegistryOptions,
        configuration: Option<&Configuration>,
        previous: Option<&Registry>,
    ) -> Result<Registry, RegistryError> {
        let secret_scopes = match configuration.and_then(|c| c.secrets.as_ref()) {
            Some(spec) => SecretScopes::compile(spec).map_err(|source| RegistryError::SecretScopes {
                path: configuration.map(|c| c.source.clone()).unwrap_or_default(),
                source,
            })?,
            None => SecretScopes::allow_all(),
        };
        let mut resources = if let Some(feed) = &options.operator {
            feed.resource_set()?
        } else if options.dirs.is_empty() {
            ResourceSet::default()
        } else {
            let dirs = options.dirs.clone();
            let filter = options.namespace_filter.clone();
            tokio::task::spawn_blocking(move || ResourceSet::load(&dirs, filter.as_deref())).await.map_err(|_| {
                ConfigError::Io {
                    path: options.dirs.first().cloned().unwrap_or_default(),
                    action: "loading resources",
                    source: std::io::Error::other("the loading task failed"),
                }
            })??
        };
        for warning in &resources.warnings {
            tracing::warn!("{warning}");
        }
        if options.builtin_kubernetes_secret_store && resources.component("kubernetes").is_none() {
            let builtin = ResourceSet::from_yaml(
                Path::new("<built-in secret store kubernetes>"),
                BUILTIN_KUBERNETES_SECRET_STORE,
                None,
            )?;
            resources.components.extend(builtin.components);
        }

        let mut secret_components = Vec::new();
        let mut state_components = Vec::new();
        let mut middleware_components = Vec::new();
        let mut pubsub_components = Vec::new();
        for component in resources.components_for(&options.app_id) {
            if let Some(configuration) = configuration
                && configuration.component_denied(component.component_type(), component.version())
            {
                tracing::warn!(
                    "component '{}' cannot be loaded because components of type '{}/{}' are not allowed",
                    component.name(),
                    component.component_type(),
                    component.version()
                );
                continue;
            }
            // Classified before anything is built, so `ignoreErrors` can never turn an unknown type into a skip.
            match ward_components::classify_component(component.component_type(), component.version()) {
                Ok(ComponentSupport::State) => state_components.push(component),
                Ok(ComponentSupport::SecretStore) => secret_components.push(component),
                Ok(ComponentSupport::Middleware) => middleware_components.push(component),
                Ok(ComponentSupport::PubSub) => pubsub_components.push(component),
                Ok(ComponentSupport::NotImplemented { building_block }) if options.production => {
                    return Err(ConfigError::invalid_component(
                        component,
                        "spec.type",
                        format!("{building_block} components are not supported by ward yet (refused in production)"),
                    )
                    .into());
                }
                Ok(ComponentSupport::NotImplemented { .. }) => tracing::warn!(
                    component = component.name(),
                    file = %component.source().display(),
                    "NOT APPLIED: components of type '{}' are not supported by ward yet; skipped (development mode \
                     only; a production sidecar refuses to start)",
                    component.component_type()
                ),
                Err(err) => return Err(component_error(component, err).into()),
            }
        }

        // Routing rules are compiled now, so a bad `match` refuses the start (or the reload) naming the rule.
        for subscription in resources.subscriptions_for(&options.app_id) {
            let rules: Vec<(String, String)> =
                subscription.rules.iter().map(|r| (r.match_expr.clone(), r.path.clone())).collect();
            crate::pubsub::routing::Routes::compile(&rules, subscription.default_route.clone()).map_err(|message| {
                RegistryError::Subscription {
                    path: subscription.source.clone(),
                    name: subscription.name.clone(),
                    message,
                }
            })?;
        }
        let mut registry = Registry {
            secret_scopes,
            subscriptions: resources.subscriptions_for(&options.app_id).cloned().collect(),
            ..Registry::default()
        };

        // Secret stores first: the other components' secretKeyRefs are read through them. A secret store's own
        // metadata may use envRef but not secretKeyRef (there is nothing loaded yet to read it from).
        for component in secret_components {
            let metadata = resolve(component, &HashMap::new())?;
            let reused = previous
                .and_then(|p| p.secrets.get(component.name()))
                .filter(|old| old.component == *component && old.metadata == metadata)
                .map(|old| old.store.clone());
            let ctx = build_context(options, component);
            let build =
                build_secret_store(component.component_type(), component.version(), component.name(), &metadata, &ctx);
            let Some(store) = reuse_or_init(reused, component, build).await? else { continue };
            registry.listing.push(info(component, &metadata));
            registry
                .secrets
                .insert(component.name().to_owned(), SecretEntry { store, component: component.clone(), metadata });
        }

        for component in state_components {
            let secrets = fetch_secret_refs(&registry, component).await?;
            let metadata = resolve(component, &secrets)?;
            // Dapr's transactional outbox (state and pub/sub in one transaction) is not implemented yet.
            if let Some(key) = metadata.keys().find(|k| k.starts_with("outbox")) {
                let why = "the transactional outbox is not implemented by ward yet";
                if options.production {
                    return Err(ConfigError::invalid_component(
                        component,
                        format!("spec.metadata[{key}]"),
                        format!("{why} (refused in production)"),
                    )
                    .into());
                }
                tracing::warn!(
                    component = component.name(),
                    file = %component.source().display(),
                    "NOT APPLIED: spec.metadata[{key}]: {why}; transactions asking for it are refused (development \
                     mode only; a production sidecar refuses to start)"
                );
            }
            let prefix = KeyPrefix::from_metadata(&metadata).map_err(|err| component_error(component, err))?;
            let reused = previous
                .and_then(|p| p.state.get(component.name()))
                .filter(|old| old.component == *component && old.metadata == metadata)
                .map(|old| old.store.clone());
            let ctx = build_context(options, component);
            let build =
                build_state_store(component.component_type(), component.version(), component.name(), &metadata, &ctx);
            let Some(store) = reuse_or_init(reused, component, build).await? else { continue };
            registry.listing.push(info(component, &metadata));
            registry.state.insert(
                component.name().to_owned(),
                StateEntry { store, prefix, component: component.clone(), metadata },
            );
        }
        for component in pubsub_components {
            let secrets = fetch_secret_refs(&registry, component).await?;
            let metadata = resolve(component, &secrets)?;
            // An unchanged broker keeps its connection and, for in-memory, its subscribers.
            let reused = previous
                .and_then(|p| p.pubsubs.get(component.name()))
                .filter(|old| old.component == *component && old.metadata == metadata)
                .map(|old| old.pubsub.clone());
            let ctx = build_context(options, component);
            let build =
                build_pubsub(component.component_type(), component.version(), component.name(), &metadata, &ctx);
            let verify_publishers =
                metadata.get_bool("verifyPublishers").map_err(|err| component_error(component, err))?;
            let max_delivery_attempts = match metadata.get("maxDeliveryAttempts") {
                None => None,
                Some(text) => match text.trim().parse::<u32>() {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        return Err(ConfigError::invalid_component(
                            component,
                            "spec.metadata[maxDeliveryAttempts]",
                            "must be a whole number of at least 1",
                        )
                        .into());
                    }
                },
            };
            let scopes = ward_policy::TopicScopes::from_metadata(|key| metadata.get(key));
            let Some(pubsub) = reuse_or_init(reused, component, build).await? else { continue };
            registry.listing.push(info(component, &metadata));
            registry.pubsubs.insert(
                component.name().to_owned(),
                PubSubEntry {
                    pubsub,
                    metadata,
                    scopes,
                    verify_publishers,
                    max_delivery_attempts,
                    component: component.clone(),
                },
            );
        }
        let middleware_options = ward_middleware::BuildOptions {
            max_body_bytes: usize::try_from(options.max_body_size).unwrap_or(usize::MAX),
        };
        for component in middleware_components {
            let secrets = fetch_secret_refs(&registry, component).await?;
            let metadata = resolve(component, &secrets)?;
            // An unchanged middleware keeps its state: a bearer its cached keys, a rate limit its bucket.
            let reused = previous
                .and_then(|p| p.middleware.get(component.name()))
                .filter(|old| old.component == *component && old.metadata == metadata)
                .map(|old| old.middleware.clone());
            // A middleware is a control: `ignoreErrors` never turns a failed one into a skipped one.
            let middleware = match reused {
                Some(middleware) => middleware,
                None => {
                    let build = ward_middleware::build(component.component_type(), &metadata, &middleware_options);
                    init(component, build).await?
                }
            };
            registry.listing.push(info(component, &metadata));
            registry.middleware.insert(
                component.name().to_owned(),
                MiddlewareEntry { middleware, component: component.clone(), metadata },
            );
        }
        registry.pipelines = crate::middleware::build_pipelines(configuration, &registry.middleware)?;
        Ok(registry)
    }

    /// The pipelines this registry's Configuration and middleware make.
    pub(crate) fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }
}

fn info(component: &Component, metadata: &ComponentMetadata) -> ComponentInfo {
    let multi_valued = metadata.get_bool("multiValued").ok().flatten().unwrap_or(false);
    ComponentInfo {
        name: component.name().to_owned(),
        component_type: component.component_type().to_owned(),
        version: component.version().to_owned(),
        capabilities: ward_components::component_capabilities(component.component_type(), multi_valued),
    }
}

/// Relative paths in metadata (e.g. `secretsFile`) are opened from the working directory, as daprd does (with the
/// component file's folder as a fallback, see `secretstores::local_file`).
fn build_context(options: &RegistryOptions, component: &Component) -> BuildContext {
    BuildContext {
        data_dir: options.data_dir.clone(),
        base_dir: component.source().parent().map(Path::to_path_buf).unwrap_or_default(),
        working_dir: std::env::current_dir().unwrap_or_default(),
        app_id: options.app_id.clone(),
        namespace: options.namespace.clone(),
    }
}

/// Runs a factory within the component's `initTimeout`, reporting failures in the one-line shape.
/// The store of an unchanged component is reused (its data and connections survive a reload); otherwise it is
/// built. `None`: it failed and its `ignoreErrors` says to skip it.
async fn reuse_or_init<T>(
    reused: Option<T>,
    component: &Component,
    build: impl Future<Output = Result<T, ComponentError>>,
) -> Result<Option<T>, ConfigError> {
    if let Some(store) = reused {
        return Ok(Some(store));
    }
    match init(component, build).await {
        Ok(store) => Ok(Some(store)),
        Err(err) if component.ignore_errors() => {
            tracing::warn!(error = %err, "component failed to initialise; skipped (ignoreErrors)");
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

async fn init<T>(
    component: &Component,
    factory: impl Future<Output = Result<T, ComponentError>>,
) -> Result<T, ConfigError> {
    let timeout = component.init_timeout().unwrap_or(DEFAULT_INIT_TIMEOUT);
    match tokio::time::timeout(timeout, factory).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(component_error(component, err)),
        Err(_) => Err(ConfigError::invalid_component(
            component,
            "spec.initTimeout",
            format!("initialisation did not finish within {timeout:?}"),
        )),
    }
}

/// A factory error in the one-line shape: `<file>: Component "<name>": spec.metadata[redisHost]: <message>: <cause>`.
fn component_error(component: &Component, err: ComponentError) -> ConfigError {
    let mut message = err.message.clone();
    let mut source = err.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static));
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their source in their own text; say it once.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    let field = err.path().unwrap_or_else(|| "spec".to_owned());
    ConfigError::invalid_component(component, field, message)
}

/// Secrets fetched for one component, by (store, secret name); `None` = the store has no such secret.
type Fetched = HashMap<(String, String), Option<Secret>>;

/// Why a secret reference could not be resolved from what was fetched.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StoreFailed(&'static str);

/// Reads every secret `component`'s `secretKeyRef`s name, after checking the app's secret scopes allow it.
/// `resolve_metadata` takes a synchronous resolver, so the (async) reads happen here first.
async fn fetch_secret_refs(registry: &Registry, component: &Component) -> Result<Fetched, RegistryError> {
    let mut fetched = Fetched::new();
    for item in component.metadata() {
        let MetadataValue::SecretKeyRef { name, key } = &item.value else { continue };
        // Without auth.secretStore, resolve_metadata reports the item itself.
        let Some(store_name) = component.secret_store() else { continue };
        if !registry.secret_scopes.is_allowed(store_name, name) {
            return Err(RegistryError::SecretRefDenied {
                path: component.source().to_path_buf(),
                component: component.name().to_owned(),
                item: item.name.clone(),
                store: store_name.to_owned(),
                secret: name.clone(),
            });
        }
        let cache_key = (store_name.to_owned(), name.clone());
        if fetched.contains_key(&cache_key) {
            continue;
        }
        let Some(entry) = registry.secrets.get(store_name) else {
            return Err(RegistryError::SecretStoreNotLoaded {
                path: component.source().to_path_buf(),
                component: component.name().to_owned(),
                store: store_name.to_owned(),
            });
        };
        match entry.store.get_secret(name, &BTreeMap::new()).await {
            Ok(secret) => {
                fetched.insert(cache_key, secret);
            }
            Err(err) => {
                return Err(ResolveError::SecretStore {
                    at: Box::new(ward_config::MetadataItemRef {
                        path: component.source().to_path_buf(),
                        component: component.name().to_owned(),
                        item: item.name.clone(),
                    }),
                    store: store_name.to_owned(),
                    secret: name.clone(),
                    key: key.clone(),
                    source: Box::new(err),
                }
                .into());
            }
        }
    }
    Ok(fetched)
}

/// Resolves all metadata of `component` from literal values, `fetched` secrets and the environment. A secret
/// store's own references are never fetched, so for it a `secretKeyRef` is an error.
fn resolve(component: &Component, fetched: &Fetched) -> Result<ComponentMetadata, RegistryError> {
    let resolver = |r: ward_config::SecretRef<'_>| match fetched.get(&(r.store.to_owned(), r.name.to_owned())) {
        Some(secret) => Ok(secret.as_ref().and_then(|s| s.get(r.key).cloned())),
        None => {
            Err(StoreFailed("secret stores cannot read their own metadata from a secret store; use a value or envRef"))
        }
    };
    let env = |var: &str| std::env::var(var).ok();
    let resolved = component.resolve_metadata(resolver, env)?;
    Ok(ComponentMetadata::from(resolved.into_inner()))
}

/// The live registry plus what is needed to rebuild it. The configuration watcher (`watcher.rs`) decides when.
pub struct Components {
    current: ArcSwap<Registry>,
    options: RegistryOptions,
    /// The pipelines the request paths run; swapped with the registry.
    pipelines: PipelineHandles,
    /// Bumped on every install, so the pub/sub subscriber re-reads subscriptions and brokers.
    generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components").field("current", &self.current.load()).finish_non_exhaustive()
    }
}

impl Components {
    /// Builds the first registry; any problem fails start-up.
    pub async fn start(
        options: RegistryOptions,
        configuration: Option<&Configuration>,
    ) -> Result<Components, RegistryError> {
        let registry = Registry::build(&options, configuration, None).await?;
        for c in registry.components() {
            tracing::info!(name = %c.name, r#type = %c.component_type, version = %c.version, "component loaded");
        }
        let pipelines = PipelineHandles::new(registry.pipelines());
        Ok(Components {
            current: ArcSwap::from_pointee(registry),
            options,
            pipelines,
            generation: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The registry requests use now.
    pub fn load(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    /// The resource directories' fingerprint now (names and contents; `None` where unreadable).
    pub(crate) async fn fingerprint(&self) -> Option<u64> {
        let dirs = self.options.dirs.clone();
        tokio::task::spawn_blocking(
            move || if dirs.is_empty() { Some(0) } else { ward_config::fingerprint(&dirs).ok() },
        )
        .await
        .unwrap_or(None)
    }

    /// Builds a new registry off to the side from the resource directories and `configuration` (scopes, deny list).
    /// Nothing changes until [`Components::install`].
    pub(crate) async fn rebuild(&self, configuration: Option<&Configuration>) -> Result<Registry, RegistryError> {
        let previous = self.current.load_full();
        Registry::build(&self.options, configuration, Some(&previous)).await
    }

    /// Makes `registry` the one new requests use (a request in flight keeps the one it started with).
    pub(crate) fn install(&self, registry: Registry) {
        self.pipelines.install(registry.pipelines());
        self.current.store(Arc::new(registry));
        self.generation.send_modify(|n| *n += 1);
    }

    /// Changes whenever a new registry is installed.
    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The live pipelines, for the public API and the inbound stack.
    pub(crate) fn pipelines(&self) -> &PipelineHandles {
        &self.pipelines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> RegistryOptions {
        RegistryOptions {
            dirs: vec![dir.to_path_buf()],
            namespace_filter: None,
            app_id: "app1".into(),
            namespace: "default".into(),
            data_dir: dir.join("home"),
            production: false,
            max_body_size: 4 << 20,
            builtin_kubernetes_secret_store: false,
            operator: None,
        }
    }

    fn config(yaml: &str) -> Configuration {
        ward_config::configuration_from_yaml(Path::new("config.yaml"), yaml.as_bytes()).unwrap()
    }

    const SECRETS: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: vault}
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - {name: secretsFile, value: secrets.json}
"#;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[tokio::test]
    async fn scopes_deny_list_and_lookup_answers() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "secrets.json", r#"{"pw": "hunter2"}"#);
        write(dir.path(), "a.yaml", SECRETS);
        write(
            dir.path(),
            "b.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: mine}\nspec: {type: state.in-memory, \
             version: v1}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: theirs}\nspec: \
             {type: state.in-memory, version: v1}\nscopes: [app2]\n---\napiVersion: dapr.io/v1alpha1\nkind: \
             Component\nmetadata: {name: bus}\nspec: {type: bindings.http, version: v1}\n",
        );
        let registry = Registry::build(&options(dir.path()), None, None).await.unwrap();
        assert!(registry.state_store("mine").is_ok());
        assert_eq!(registry.state_store("theirs").err(), Some(Missing::NotFound));
        assert_eq!(registry.state_store("nope").err(), Some(Missing::NotFound));
        assert!(registry.secret_store("vault").is_ok());
        let names: Vec<_> = registry.components().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["vault", "mine"]);

        let deny = config(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  components:\n    \
             deny: [state.in-memory, secretstores.local.file/v1]\n",
        );
        let registry = Registry::build(&options(dir.path()), Some(&deny), None).await.unwrap();
        assert_eq!(registry.state_store("mine").err(), Some(Missing::NotConfigured));
        assert_eq!(registry.secret_store("vault").err(), Some(Missing::NotConfigured));
        assert!(registry.components().is_empty());
    }

    #[tokio::test]
    async fn secret_refs_obey_secret_scopes_and_errors_hold_no_values() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "secrets.json", r#"{"pw": "hunter2", "other": "x"}"#);
        write(dir.path(), "a.yaml", SECRETS);
        write(
            dir.path(),
            "b.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: store}\nspec:\n  type: \
             state.in-memory\n  version: v1\n  metadata:\n  - name: keyPrefix\n    secretKeyRef: {name: pw, key: \
             pw}\nauth: {secretStore: vault}\n",
        );
        let allowed = Registry::build(&options(dir.path()), None, None).await;
        // keyPrefix "hunter2" is a literal prefix: the reference resolved.
        let allowed = allowed.unwrap();
        assert_eq!(
            allowed.state_store("store").map(|e| e.prefix.clone()).ok(),
            Some(KeyPrefix::Literal("hunter2".into()))
        );

        let deny = config(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  secrets:\n    \
             scopes:\n    - {storeName: vault, defaultAccess: deny, allowedSecrets: [other]}\n",
        );
        let err = Registry::build(&options(dir.path()), Some(&deny), None).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RegistryError::SecretRefDenied { .. }), "{text}");
        assert!(text.contains("b.yaml") && text.contains("\"store\"") && text.contains("keyPrefix"), "{text}");
        assert!(text.contains("\"vault\"") && text.contains("\"pw\""), "{text}");
        assert!(!text.contains("hunter2") && !text.contains('\n'), "{text}");

        // A missing key inside an existing secret.
        write(
            dir.path(),
            "b.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: store}\nspec:\n  type: \
             state.in-memory\n  version: v1\n  metadata:\n  - name: keyPrefix\n    secretKeyRef: {name: nope}\nauth: \
             {secretStore: vault}\n",
        );
        let err = Registry::build(&options(dir.path()), None, None).await.unwrap_err();
        assert!(matches!(err, RegistryError::Resolve(ResolveError::SecretNotFound { .. })), "{err}");
    }

    #[tokio::test]
    async fn unknown_type_and_missing_metadata_name_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "s.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {type: state.nope, version: \
             v1}\n",
        );
        let err = Registry::build(&options(dir.path()), None, None).await.unwrap_err().to_string();
        assert!(err.contains("s.yaml: Component \"s\": spec.type:"), "{err}");
        write(
            dir.path(),
            "s.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {type: state.redis, version: \
             v1}\n",
        );
        let err = Registry::build(&options(dir.path()), None, None).await.unwrap_err().to_string();
        assert!(err.contains("s.yaml: Component \"s\": spec.metadata[redisHost]:"), "{err}");
        write(
            dir.path(),
            "s.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {type: foo.bar, version: v1}\n",
        );
        let err = Registry::build(&options(dir.path()), None, None).await.unwrap_err().to_string();
        assert!(err.contains("spec.type: unknown component type"), "{err}");
    }

    /// Issue 19 row 9: outbox metadata is never silently ignored.
    #[tokio::test]
    async fn outbox_metadata_is_refused_in_production_and_warned_in_development() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "s.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec:\n  type: state.in-memory\n  \
             version: v1\n  metadata:\n  - {name: outboxPublishPubsub, value: pubsub}\n",
        );
        assert!(Registry::build(&options(dir.path()), None, None).await.is_ok(), "development: warned");
        let mut production = options(dir.path());
        production.production = true;
        let err = Registry::build(&production, None, None).await.unwrap_err().to_string();
        assert!(err.contains("spec.metadata[outboxPublishPubsub]") && err.contains("outbox"), "{err}");
    }

    #[tokio::test]
    async fn unchanged_components_are_reused_on_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "s.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {type: state.in-memory, \
             version: v1}\n",
        );
        let first = Registry::build(&options(dir.path()), None, None).await.unwrap();
        let second = Registry::build(&options(dir.path()), None, Some(&first)).await.unwrap();
        let (Ok(a), Ok(b)) = (first.state_store("s"), second.state_store("s")) else { panic!("store missing") };
        assert!(Arc::ptr_eq(&a.store, &b.store));
    }
}
