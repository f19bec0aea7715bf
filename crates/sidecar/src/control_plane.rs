//! Kubernetes mode: the sidecar's Configuration, components and subscriptions come from the operator
//! (`--control-plane-address`, Dapr's `dapr.proto.operator.v1.Operator` over mTLS), not from files.
//!
//! Owns: the operator connection (the sidecar's SVID as client certificate; the operator must present
//! `spiffe://<cp-td>/ns/<cp-ns>/dapr-operator`), the first fetch at start, the update streams that keep an
//! in-memory [`Snapshot`] current, reconnection with backoff, and turning the operator's JSON objects into
//! `ward-config` resources. A lost connection keeps the last good snapshot: the sidecar goes on serving with it and
//! re-lists everything once it is back (events sent while it was away are not replayed by the operator).
//!
//! Does not: decide when to apply a change (the configuration watcher, `watcher.rs`, rebuilds from
//! [`OperatorFeed`] exactly as it does from files, so a resource that fails validation is refused and the old
//! registry kept), or filter by scope alone (the operator does, and the registry checks `scopes` again).
//!
//! Secrets: for a component whose `auth.secretStore` is empty or `kubernetes`, Dapr's operator resolves each
//! `secretKeyRef` itself (from the component's namespace) and sends the value base64-encoded in `value`, keeping
//! the reference; [`resolve_operator_secrets`] decodes it, so the sidecar needs no read access to Secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use ward_config::{ConfigError, Configuration, ResourceSet};
use ward_identity::{Authorizer, SpiffeId, SvidResolver, TrustBundleHandle};
use ward_operator_api::OperatorClient;
use ward_operator_api::proto::{
    ComponentUpdateRequest, ConfigurationUpdateRequest, GetConfigurationRequest, ListComponentsRequest,
    ListHttpEndpointsRequest, ListResiliencyRequest, ListSubscriptionsRequest, ResourceEventType,
    SubscriptionUpdateRequest,
};

/// How long one unary call may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection backoff: first wait and ceiling.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// `--control-plane-address` and what to ask for.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// `host:port` of the operator (the injector passes `dapr-api.<cp-ns>.svc.cluster.local:443`).
    pub address: String,
    /// `--config <name>`: the Configuration resource in the sidecar's namespace.
    pub config_name: Option<String>,
}

/// Why the operator could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("operator at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("operator at {address}: {rpc} refused: {status}")]
    Rpc { address: String, rpc: &'static str, status: Box<tonic::Status> },
    #[error("operator at {address}: Configuration {name:?} does not exist in namespace {namespace:?}")]
    ConfigurationMissing { address: String, name: String, namespace: String },
    #[error("{path}: {message}")]
    Resource { path: String, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("operator TLS: {0}")]
    Tls(String),
}

/// What the operator has sent, one JSON object per resource (secrets already decoded), keyed by name.
#[derive(Debug, Default, Clone, PartialEq)]
struct Snapshot {
    components: BTreeMap<String, String>,
    subscriptions: BTreeMap<String, String>,
    /// The named Configuration's JSON, when `--config` names one.
    configuration: Option<String>,
    /// Resources of kinds ward does not act on (Resiliency, HTTPEndpoint) that the operator has for this app: each
    /// is reported as skipped on every build, as a file holding one is.
    unsupported: Vec<String>,
}

/// The operator's view of this sidecar's resources, kept current by [`OperatorFeed::run`].
pub struct OperatorFeed {
    address: String,
    /// Replaced once at start: the bootstrap SVID's connection gives way to the renewing one.
    connection: Mutex<Connection>,
    namespace: String,
    config_name: Option<String>,
    snapshot: Mutex<Snapshot>,
    /// Bumped on every change of the snapshot; the configuration watcher rebuilds when it moves.
    generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for OperatorFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorFeed").field("address", &self.address).finish_non_exhaustive()
    }
}

/// How to reach the operator: address, expected identity, anchors, and the SVID to present.
#[derive(Clone)]
pub struct Connection {
    pub address: String,
    pub operator_id: SpiffeId,
    /// The anchors under the control plane's trust domain (they verify the operator).
    pub anchors: TrustBundleHandle,
    pub svid: Arc<SvidResolver>,
    pub skew: Duration,
}

impl Connection {
    fn channel(&self) -> Result<Channel, ControlPlaneError> {
        let tls = ward_identity::client_config(
            self.svid.clone(),
            self.anchors.clone(),
            Authorizer::Exact(self.operator_id.clone()),
            self.skew,
            &[b"h2"],
        )
        .map_err(|err| ControlPlaneError::Tls(err.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let address = self.address.clone();
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| ControlPlaneError::Connect { address: address.clone(), message: "not host:port".into() })?
            .connect_timeout(RPC_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            let address = address.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                tcp.set_nodelay(true)?;
                // The name is not checked (the SPIFFE verifier is); it only has to be syntactically valid.
                let name = ServerName::try_from("dapr-api").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })))
    }

    fn client(&self) -> Result<OperatorClient<Channel>, ControlPlaneError> {
        Ok(OperatorClient::new(self.channel()?))
    }

    fn rpc_error(&self, rpc: &'static str) -> impl Fn(tonic::Status) -> ControlPlaneError + '_ {
        move |status| ControlPlaneError::Rpc { address: self.address.clone(), rpc, status: Box::new(status) }
    }
}

impl OperatorFeed {
    /// Fetches everything once (a failure fails the start: a sidecar without its configuration must not serve).
    pub async fn fetch(
        connection: Connection,
        namespace: String,
        config_name: Option<String>,
    ) -> Result<Arc<OperatorFeed>, ControlPlaneError> {
        let snapshot = list_all(&connection, &namespace, config_name.as_deref()).await?;
        tracing::info!(
            operator = %connection.address,
            components = snapshot.components.len(),
            subscriptions = snapshot.subscriptions.len(),
            configuration = config_name.as_deref().unwrap_or("-"),
            "loaded resources from the operator"
        );
        Ok(Arc::new(OperatorFeed {
            address: connection.address.clone(),
            connection: Mutex::new(connection),
            namespace,
            config_name,
            snapshot: Mutex::new(snapshot),
            generation: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Connects from now on with `connection` (at start: the renewing SVID instead of the bootstrap one).
    pub fn set_connection(&self, connection: Connection) {
        *self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = connection;
    }

    fn connection(&self) -> Connection {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The components and subscriptions as a resource set, parsed as if from files named after the operator.
    pub fn resource_set(&self) -> Result<ResourceSet, ConfigError> {
        let snapshot = self.lock().clone();
        let mut set = ResourceSet::default();
        for (name, json) in snapshot.components.iter().chain(snapshot.subscriptions.iter()) {
            let one = ResourceSet::from_yaml(&self.source(name), json, Some(&self.namespace))?;
            set.components.extend(one.components);
            set.subscriptions.extend(one.subscriptions);
            set.warnings.extend(one.warnings);
        }
        set.warnings.extend(snapshot.unsupported.iter().map(|what| format!("{what}: not supported by ward; skipped")));
        Ok(set)
    }

    /// The named Configuration, parsed; `None` when `--config` names none.
    pub fn configuration(&self) -> Result<Option<Configuration>, ConfigError> {
        let json = self.lock().configuration.clone();
        match (json, &self.config_name) {
            (Some(json), Some(name)) => {
                Ok(Some(ward_config::configuration_from_yaml(&self.source(name), json.as_bytes())?))
            }
            _ => Ok(None),
        }
    }

    /// What errors name as the "file" of a resource from the operator.
    fn source(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("operator:{}/{}/{name}", self.address, self.namespace))
    }

    /// The label the watcher reports a Configuration from the operator under.
    pub fn configuration_source(&self) -> PathBuf {
        self.source(self.config_name.as_deref().unwrap_or("-"))
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn replace(&self, next: Snapshot) {
        let mut current = self.lock();
        if *current != next {
            *current = next;
            drop(current);
            self.generation.send_modify(|n| *n += 1);
        }
    }

    fn apply(&self, change: impl FnOnce(&mut Snapshot) -> bool) {
        let mut current = self.lock();
        if change(&mut current) {
            drop(current);
            self.generation.send_modify(|n| *n += 1);
        }
    }

    /// Follows the update streams until `stop`; on any failure keeps the snapshot, waits, reconnects and re-lists.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = BACKOFF_START;
        loop {
            let result = tokio::select! {
                result = self.follow() => result,
                _ = stop.changed() => return,
            };
            match result {
                Ok(()) => {
                    tracing::warn!(operator = %self.address, "the operator closed the update streams; keeping the last configuration and reconnecting");
                    backoff = BACKOFF_START;
                }
                Err(err) => {
                    tracing::warn!(operator = %self.address, error = %err, retry_in = ?backoff, "lost the operator; keeping the last configuration");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One session: the three streams at once; returns when any ends.
    async fn follow(&self) -> Result<(), ControlPlaneError> {
        let connection = self.connection();
        let mut client = connection.client()?;
        let namespace = self.namespace.clone();
        let mut components = client
            .component_update(ComponentUpdateRequest { namespace: namespace.clone() })
            .await
            .map_err(connection.rpc_error("ComponentUpdate"))?
            .into_inner();
        let mut subscriptions = client
            .subscription_update(SubscriptionUpdateRequest { namespace: namespace.clone() })
            .await
            .map_err(connection.rpc_error("SubscriptionUpdate"))?
            .into_inner();
        let mut configurations = match &self.config_name {
            Some(_) => {
                match client.configuration_update(ConfigurationUpdateRequest { namespace: namespace.clone() }).await {
                    Ok(stream) => Some(stream.into_inner()),
                    // An operator without the stream (older Dapr): the Configuration is re-read on each reconnect only.
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        tracing::warn!(operator = %self.address, "the operator does not stream Configuration changes; they apply when the sidecar reconnects or restarts");
                        None
                    }
                    Err(status) => return Err(connection.rpc_error("ConfigurationUpdate")(status)),
                }
            }
            None => None,
        };
        // Listed after the streams are open, so nothing that changes in between is missed (and whatever changed
        // while a previous session was down is picked up: the operator does not replay events).
        let snapshot = list_all(&connection, &self.namespace, self.config_name.as_deref()).await?;
        self.replace(snapshot);
        loop {
            tokio::select! {
                event = components.next() => {
                    let Some(event) = event else { return Ok(()) };
                    let event = event.map_err(connection.rpc_error("ComponentUpdate"))?;
                    self.on_event(Kind::Component, &event.component, event.r#type);
                }
                event = subscriptions.next() => {
                    let Some(event) = event else { return Ok(()) };
                    let event = event.map_err(connection.rpc_error("SubscriptionUpdate"))?;
                    self.on_event(Kind::Subscription, &event.subscription, event.r#type);
                }
                event = next_or_pending(&mut configurations) => {
                    let Some(event) = event else { return Ok(()) };
                    let event = event.map_err(connection.rpc_error("ConfigurationUpdate"))?;
                    self.on_event(Kind::Configuration, &event.configuration, event.r#type);
                }
            }
        }
    }

    fn on_event(&self, kind: Kind, bytes: &[u8], event_type: i32) {
        let deleted = event_type == ResourceEventType::Deleted as i32;
        // A deletion needs only the name: its secrets are not resolved (nor needed), so it is not decoded in full.
        let decoded = if deleted { decode_name(kind, bytes) } else { decode_object(kind, bytes) };
        let object = match decoded {
            Ok(object) => object,
            Err(message) => {
                // Kept out of the snapshot: the watcher would refuse the whole set for it, so the old one stays
                // either way; saying why here names the object.
                tracing::error!(kind = kind.name(), error = %message, "refused an update from the operator; keeping the previous version");
                return;
            }
        };
        let name = object.name;
        if object.namespace.as_deref().is_some_and(|ns| ns != self.namespace) {
            tracing::error!(kind = kind.name(), %name, "the operator sent a resource of another namespace; ignored");
            return;
        }
        self.apply(|snapshot| {
            let map = match kind {
                Kind::Component => &mut snapshot.components,
                Kind::Subscription => &mut snapshot.subscriptions,
                Kind::Configuration => {
                    if self.config_name.as_deref() != Some(name.as_str()) {
                        return false;
                    }
                    let next = (!deleted).then_some(object.json);
                    if deleted {
                        tracing::warn!(configuration = %name, "the operator reports this sidecar's Configuration deleted; keeping the last one until it returns");
                        return false;
                    }
                    let changed = snapshot.configuration != next;
                    snapshot.configuration = next;
                    return changed;
                }
            };
            if deleted {
                map.remove(&name).is_some()
            } else {
                map.insert(name, object.json.clone()).as_ref() != Some(&object.json)
            }
        });
    }
}

async fn next_or_pending<S: futures_util::Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Component,
    Subscription,
    Configuration,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Component => "Component",
            Kind::Subscription => "Subscription",
            Kind::Configuration => "Configuration",
        }
    }
}

/// One object from the operator: its name, namespace and JSON (component secrets decoded).
struct Decoded {
    name: String,
    namespace: Option<String>,
    json: String,
}

fn decode_object(kind: Kind, bytes: &[u8]) -> Result<Decoded, String> {
    decode(kind, bytes, true)
}

/// Name and namespace only (for a deletion).
fn decode_name(kind: Kind, bytes: &[u8]) -> Result<Decoded, String> {
    decode(kind, bytes, false)
}

fn decode(kind: Kind, bytes: &[u8], in_full: bool) -> Result<Decoded, String> {
    let mut object: Value =
        serde_json::from_slice(bytes).map_err(|err| format!("{}: not a JSON object: {err}", kind.name()))?;
    let metadata = object.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{}: metadata.name is missing", kind.name()))?
        .to_owned();
    let namespace =
        metadata.and_then(|m| m.get("namespace")).and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_owned);
    if !in_full {
        return Ok(Decoded { name, namespace, json: String::new() });
    }
    if let Kind::Component = kind {
        resolve_operator_secrets(&mut object).map_err(|message| format!("Component {name:?}: {message}"))?;
    }
    // `kind` is set by the operator; add it when a daprd-style operator left it out of the object.
    if let Value::Object(map) = &mut object {
        map.entry("kind").or_insert_with(|| Value::String(kind.name().to_owned()));
        map.entry("apiVersion").or_insert_with(|| Value::String("dapr.io/v1alpha1".to_owned()));
    }
    Ok(Decoded { name, namespace, json: object.to_string() })
}

/// Dapr's operator contract for components whose secret store is the Kubernetes one (`auth.secretStore` empty or
/// `kubernetes`): each `secretKeyRef` item arrives with `value` = base64 of the secret, resolved by the operator.
/// The value is decoded and the reference dropped; a reference the operator could not resolve (no `value`) is an
/// error naming the item, never an empty value.
pub fn resolve_operator_secrets(component: &mut Value) -> Result<(), String> {
    let store = component.get("auth").and_then(|a| a.get("secretStore")).and_then(Value::as_str).unwrap_or("");
    if !(store.is_empty() || store == "kubernetes") {
        return Ok(());
    }
    let Some(items) = component.get_mut("spec").and_then(|s| s.get_mut("metadata")).and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    for (i, item) in items.iter_mut().enumerate() {
        let Some(map) = item.as_object_mut() else { continue };
        let has_ref = map
            .get("secretKeyRef")
            .and_then(|r| r.get("name"))
            .and_then(Value::as_str)
            .is_some_and(|name| !name.is_empty());
        if !has_ref {
            continue;
        }
        let reference = map.remove("secretKeyRef").unwrap_or(Value::Null);
        let secret = reference.get("name").and_then(Value::as_str).unwrap_or_default();
        let key = reference.get("key").and_then(Value::as_str).filter(|k| !k.is_empty()).unwrap_or(secret);
        let encoded = match map.get("value") {
            Some(Value::String(encoded)) if !encoded.is_empty() => encoded.clone(),
            _ => {
                return Err(format!(
                    "spec.metadata[{i}].secretKeyRef: secret {secret:?} key {key:?} was not resolved by the operator \
                     (missing in the component's namespace?)"
                ));
            }
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|_| format!("spec.metadata[{i}].value: the operator's resolved secret is not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| format!("spec.metadata[{i}].value: secret {secret:?} key {key:?} is not UTF-8 text"))?;
        map.insert("value".to_owned(), Value::String(decoded));
    }
    Ok(())
}

/// Everything, listed at once.
async fn list_all(
    connection: &Connection,
    namespace: &str,
    config_name: Option<&str>,
) -> Result<Snapshot, ControlPlaneError> {
    let mut client = connection.client()?;
    let call = |rpc| move |status| connection.rpc_error(rpc)(status);
    let mut snapshot = Snapshot::default();
    let components = tokio::time::timeout(
        RPC_TIMEOUT,
        client.list_components(ListComponentsRequest { namespace: namespace.to_owned() }),
    )
    .await
    .map_err(|_| timeout(connection, "ListComponents"))?
    .map_err(call("ListComponents"))?
    .into_inner();
    for bytes in components.components {
        let object = decode_object(Kind::Component, &bytes).map_err(|message| resource_error(connection, message))?;
        snapshot.components.insert(object.name, object.json);
    }
    let subscriptions = tokio::time::timeout(
        RPC_TIMEOUT,
        client.list_subscriptions_v2(ListSubscriptionsRequest { namespace: namespace.to_owned() }),
    )
    .await
    .map_err(|_| timeout(connection, "ListSubscriptionsV2"))?
    .map_err(call("ListSubscriptionsV2"))?
    .into_inner();
    for bytes in subscriptions.subscriptions {
        let object =
            decode_object(Kind::Subscription, &bytes).map_err(|message| resource_error(connection, message))?;
        snapshot.subscriptions.insert(object.name, object.json);
    }
    // Kinds ward does not implement: listed so they are reported, never silently dropped. An operator that does
    // not serve a kind (Unimplemented) has none to report.
    let resiliencies = tokio::time::timeout(
        RPC_TIMEOUT,
        client.list_resiliency(ListResiliencyRequest { namespace: namespace.to_owned() }),
    )
    .await
    .map_err(|_| timeout(connection, "ListResiliency"))?;
    let endpoints = tokio::time::timeout(
        RPC_TIMEOUT,
        client.list_http_endpoints(ListHttpEndpointsRequest { namespace: namespace.to_owned() }),
    )
    .await
    .map_err(|_| timeout(connection, "ListHTTPEndpoints"))?;
    let unimplemented = |status: &tonic::Status| status.code() == tonic::Code::Unimplemented;
    let objects = match resiliencies {
        Ok(list) => list.into_inner().resiliencies.into_iter().map(|b| ("Resiliency", b)).collect(),
        Err(status) if unimplemented(&status) => Vec::new(),
        Err(status) => return Err(call("ListResiliency")(status)),
    }
    .into_iter()
    .chain(match endpoints {
        Ok(list) => list.into_inner().http_endpoints.into_iter().map(|b| ("HTTPEndpoint", b)).collect(),
        Err(status) if unimplemented(&status) => Vec::new(),
        Err(status) => return Err(call("ListHTTPEndpoints")(status)),
    });
    for (kind, bytes) in objects {
        let name = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("metadata")?.get("name")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        snapshot.unsupported.push(format!("operator:{}/{namespace}: {kind} {name:?}", connection.address));
    }
    if let Some(name) = config_name {
        let request = GetConfigurationRequest { name: name.to_owned(), namespace: namespace.to_owned() };
        let answer = tokio::time::timeout(RPC_TIMEOUT, client.get_configuration(request))
            .await
            .map_err(|_| timeout(connection, "GetConfiguration"))?;
        let missing = || ControlPlaneError::ConfigurationMissing {
            address: connection.address.clone(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        };
        let bytes = match answer {
            Ok(response) => response.into_inner().configuration,
            Err(status) if status.code() == tonic::Code::NotFound => return Err(missing()),
            Err(status) => return Err(call("GetConfiguration")(status)),
        };
        if bytes.is_empty() {
            return Err(missing());
        }
        let object =
            decode_object(Kind::Configuration, &bytes).map_err(|message| resource_error(connection, message))?;
        snapshot.configuration = Some(object.json);
    }
    Ok(snapshot)
}

fn timeout(connection: &Connection, rpc: &'static str) -> ControlPlaneError {
    ControlPlaneError::Connect { address: connection.address.clone(), message: format!("{rpc} timed out") }
}

fn resource_error(connection: &Connection, message: String) -> ControlPlaneError {
    ControlPlaneError::Resource { path: format!("operator:{}", connection.address), message }
}

/// Is `path` a label this module made (errors from operator resources name no file on disk)?
pub fn is_operator_source(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with("operator:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubernetes_store_secrets_arrive_base64_and_are_decoded() {
        let mut component = json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": "s"},
            "spec": {"type": "state.redis", "version": "v1", "metadata": [
                {"name": "redisHost", "value": "localhost:6379"},
                {"name": "redisPassword", "value": "czNjcjN0", "secretKeyRef": {"name": "redis", "key": "password"}},
            ]},
        });
        resolve_operator_secrets(&mut component).unwrap();
        let items = component["spec"]["metadata"].as_array().unwrap();
        assert_eq!(items[1], json!({"name": "redisPassword", "value": "s3cr3t"}));
        assert_eq!(items[0], json!({"name": "redisHost", "value": "localhost:6379"}));
    }

    #[test]
    fn an_unresolved_reference_is_an_error_not_an_empty_value() {
        let mut component = json!({"spec": {"metadata": [
            {"name": "password", "secretKeyRef": {"name": "redis", "key": "password"}},
        ]}});
        let err = resolve_operator_secrets(&mut component).unwrap_err();
        assert!(err.contains("spec.metadata[0].secretKeyRef") && err.contains("\"redis\""), "{err}");
    }

    #[test]
    fn references_to_another_store_are_left_for_that_store() {
        let original = json!({"auth": {"secretStore": "vault"}, "spec": {"metadata": [
            {"name": "password", "secretKeyRef": {"name": "redis", "key": "password"}},
        ]}});
        let mut component = original.clone();
        resolve_operator_secrets(&mut component).unwrap();
        assert_eq!(component, original);
    }

    #[test]
    fn a_deletion_needs_no_resolved_secrets() {
        let deleted = br#"{"metadata": {"name": "cache"}, "spec": {"metadata": [
            {"name": "connectionString", "secretKeyRef": {"name": "db", "key": "url"}}]}}"#;
        assert!(decode_object(Kind::Component, deleted).is_err());
        assert_eq!(decode_name(Kind::Component, deleted).unwrap().name, "cache");
    }

    #[test]
    fn objects_without_a_name_are_refused() {
        let err = decode_object(Kind::Component, br#"{"metadata": {}}"#).err().unwrap();
        assert!(err.contains("metadata.name"), "{err}");
        assert!(decode_object(Kind::Component, b"not json").is_err());
    }
}
