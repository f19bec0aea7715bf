//! The operator's in-memory index of Dapr's resources, fed by kube-rs watchers, and the watchers that feed it.
//!
//! Owns: which kinds are served ([`Kind`]), what of an object is kept (the object as the API server sends it,
//! minus `metadata.managedFields` and `status`, which Dapr's typed objects do not carry either), validation with
//! `ward-config` (a create/update that does not parse is refused and the last good version stays served), and the
//! change feed ([`Change`]: the served version before and after, so each caller can judge scopes on both).
//!
//! Does not own: who may see what (the gRPC layer asks [`Resource::visible_to`]), secrets (never stored here: they
//! are read per caller), recording Kubernetes Events (the watcher edge does, from the [`Outcome`]s returned).
//! [`Index`] does no I/O: it is tested by feeding it objects.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::broadcast;

/// The Dapr kinds the operator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Component,
    Configuration,
    Subscription,
    Resiliency,
    HttpEndpoint,
}

impl Kind {
    pub const ALL: [Kind; 5] =
        [Kind::Component, Kind::Configuration, Kind::Subscription, Kind::Resiliency, Kind::HttpEndpoint];

    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Component => "Component",
            Kind::Configuration => "Configuration",
            Kind::Subscription => "Subscription",
            Kind::Resiliency => "Resiliency",
            Kind::HttpEndpoint => "HTTPEndpoint",
        }
    }

    /// The version watched: Dapr's operator serves subscriptions as `v2alpha1` (the stored version; the API server
    /// converts `v1alpha1` objects), everything else as `v1alpha1`.
    pub fn api_resource(self) -> ApiResource {
        let (version, plural) = match self {
            Kind::Component => ("v1alpha1", "components"),
            Kind::Configuration => ("v1alpha1", "configurations"),
            Kind::Subscription => ("v2alpha1", "subscriptions"),
            Kind::Resiliency => ("v1alpha1", "resiliencies"),
            Kind::HttpEndpoint => ("v1alpha1", "httpendpoints"),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(crate::dapr::GROUP, version, self.as_str()), plural)
    }

    /// Whether top-level `scopes` limit which apps get the resource (Configurations have none).
    pub fn scoped(self) -> bool {
        self != Kind::Configuration
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One served resource: the object as sent to sidecars (before secret resolution), and what the server checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// Top-level `scopes`; empty: every app of the namespace.
    pub scopes: Vec<String>,
    /// The Kubernetes object (apiVersion, kind, metadata, spec, and for components `auth` and `scopes`).
    pub object: Value,
}

impl Resource {
    /// Dapr's rule, applied here on the server: no scopes, or the app is listed.
    pub fn visible_to(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }
}

/// A served resource changed: `old` is what was served before (None: nothing), `new` what is served now (None:
/// deleted). A refused update is no change.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub old: Option<Arc<Resource>>,
    pub new: Option<Arc<Resource>>,
}

/// What the index did with one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Served now (created or updated).
    Served,
    /// Identical to what is served (e.g. a watch restart).
    Unchanged,
    /// Removed.
    Deleted,
    /// Refused by validation; the last good version (if any) stays. Reported once per resourceVersion.
    Refused(Refusal),
    /// Refused again (same resourceVersion): already reported.
    RefusedAgain,
}

/// Why an object is not served, and the object it concerns (for the Event's involvedObject).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub kind: Kind,
    pub api_version: String,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `ward-config`'s error, naming the field.
    pub reason: String,
    /// Whether a previous good version is still served.
    pub kept_previous: bool,
}

#[derive(Debug, Default)]
struct Slot {
    served: Option<Arc<Resource>>,
    /// The resourceVersion last refused, so a watch restart does not report it again.
    refused: Option<Option<String>>,
}

type Key = (String, String);

/// Every served resource by kind, namespace and name, plus the change feed.
#[derive(Debug)]
pub struct Index {
    kinds: RwLock<HashMap<Kind, BTreeMap<Key, Slot>>>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// Why an object from the API server cannot be indexed at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexError {
    #[error("{kind} object without metadata.name or metadata.namespace")]
    Unnamed { kind: Kind },
}

impl Index {
    /// `feed_capacity`: how many changes a stream may fall behind before it is disconnected (the feed's memory is
    /// bounded by it, whatever the number of clients).
    pub fn new(feed_capacity: usize) -> Self {
        let (changes, _) = broadcast::channel(feed_capacity.max(1));
        Self { kinds: RwLock::new(HashMap::new()), changes }
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Served resources of `kind` in `namespace`, by name.
    pub fn list(&self, kind: Kind, namespace: &str) -> Vec<Arc<Resource>> {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        let Some(map) = kinds.get(&kind) else { return Vec::new() };
        map.range((namespace.to_owned(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .filter_map(|(_, slot)| slot.served.clone())
            .collect()
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Resource>> {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        kinds.get(&kind)?.get(&(namespace.to_owned(), name.to_owned()))?.served.clone()
    }

    /// How many resources are served, all kinds.
    pub fn len(&self) -> usize {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        kinds.values().map(|m| m.values().filter(|s| s.served.is_some()).count()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An object was created or updated.
    pub fn apply(&self, kind: Kind, object: Value) -> Result<Outcome, IndexError> {
        let resource = build(kind, object)?;
        let key = (resource.namespace.clone(), resource.name.clone());
        let checked = validate(&resource);
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        let slot = kinds.entry(kind).or_default().entry(key).or_default();
        match checked {
            Err(reason) => {
                if slot.refused.as_ref() == Some(&resource.resource_version) {
                    return Ok(Outcome::RefusedAgain);
                }
                slot.refused = Some(resource.resource_version.clone());
                let api_version =
                    resource.object.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
                Ok(Outcome::Refused(Refusal {
                    kind,
                    api_version,
                    namespace: resource.namespace,
                    name: resource.name,
                    uid: resource.uid,
                    resource_version: resource.resource_version,
                    reason,
                    kept_previous: slot.served.is_some(),
                }))
            }
            Ok(()) => {
                slot.refused = None;
                if slot.served.as_deref().is_some_and(|s| s.object == resource.object) {
                    return Ok(Outcome::Unchanged);
                }
                let new = Arc::new(resource);
                let old = slot.served.replace(new.clone());
                drop(kinds);
                self.publish(kind, old, Some(new));
                Ok(Outcome::Served)
            }
        }
    }

    /// An object was deleted.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Outcome {
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        let removed = kinds.get_mut(&kind).and_then(|m| m.remove(&(namespace.to_owned(), name.to_owned())));
        drop(kinds);
        match removed.and_then(|slot| slot.served) {
            Some(old) => {
                self.publish(kind, Some(old), None);
                Outcome::Deleted
            }
            None => Outcome::Unchanged,
        }
    }

    /// A full listing (a watch (re)started): everything not in it is deleted, everything in it applied.
    pub fn resync(&self, kind: Kind, objects: Vec<Value>) -> Vec<Result<Outcome, IndexError>> {
        let mut present = std::collections::BTreeSet::new();
        for object in &objects {
            let meta = object.get("metadata");
            let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_owned);
            if let (Some(ns), Some(name)) = (field("namespace"), field("name")) {
                present.insert((ns, name));
            }
        }
        let gone: Vec<Key> = {
            let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
            kinds.get(&kind).map(|m| m.keys().filter(|k| !present.contains(*k)).cloned().collect()).unwrap_or_default()
        };
        let mut outcomes: Vec<_> = gone.iter().map(|(ns, name)| Ok(self.delete(kind, ns, name))).collect();
        outcomes.extend(objects.into_iter().map(|o| self.apply(kind, o)));
        outcomes
    }

    fn publish(&self, kind: Kind, old: Option<Arc<Resource>>, new: Option<Arc<Resource>>) {
        let Some(any) = new.as_ref().or(old.as_ref()) else { return };
        let change = Change {
            kind,
            namespace: any.namespace.clone(),
            name: any.name.clone(),
            old: old.clone(),
            new: new.clone(),
        };
        // No receiver is not an error: no stream is open.
        let _ = self.changes.send(Arc::new(change));
    }
}

fn build(kind: Kind, mut object: Value) -> Result<Resource, IndexError> {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    let meta = object.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_owned);
    let (Some(namespace), Some(name)) = (field("namespace"), field("name")) else {
        return Err(IndexError::Unnamed { kind });
    };
    let scopes = if kind.scoped() {
        object
            .get("scopes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(Resource {
        kind,
        uid: field("uid"),
        resource_version: field("resourceVersion"),
        namespace,
        name,
        scopes,
        object,
    })
}

/// The sidecar's own parsers judge the object (JSON is YAML). Resiliency and HTTPEndpoint have no parser in
/// ward yet: they are served as the API server's schema admitted them.
fn validate(resource: &Resource) -> Result<(), String> {
    let label = format!("{} {}/{}", resource.kind, resource.namespace, resource.name);
    let path = Path::new(&label);
    let text = if resource.kind == Kind::Component && resource.object.pointer("/auth/secretStore").is_none() {
        // In Kubernetes mode a component without `auth.secretStore` uses the built-in `kubernetes` store
        // (Dapr's rule); ward-config's self-hosted check would refuse its `secretKeyRef`s. Only the copy judged
        // here says so: the object is served as stored.
        let mut object = resource.object.clone();
        if let Some(map) = object.as_object_mut() {
            map.insert("auth".to_owned(), serde_json::json!({"secretStore": super::secrets::KUBERNETES_SECRET_STORE}));
        }
        object.to_string()
    } else {
        resource.object.to_string()
    };
    let namespace = Some(resource.namespace.as_str());
    match resource.kind {
        Kind::Component | Kind::Subscription => {
            let set = ward_config::ResourceSet::from_yaml(path, &text, namespace).map_err(|e| e.to_string())?;
            let count = if resource.kind == Kind::Component { set.components.len() } else { set.subscriptions.len() };
            if count != 1 {
                return Err(format!("{label}: not read as one {}", resource.kind));
            }
            Ok(())
        }
        Kind::Configuration => {
            ward_config::configuration_from_yaml(path, text.as_bytes()).map(|_| ()).map_err(|e| e.to_string())
        }
        Kind::Resiliency | Kind::HttpEndpoint => Ok(()),
    }
}

/// What the watchers report to the edge that records Kubernetes Events.
pub type RefusalSink = tokio::sync::mpsc::UnboundedSender<Refusal>;

/// Watches `kind` cluster-wide and folds the events into `index` until the task is dropped. Signals `synced` after
/// the first complete listing. Refusals go to `refusals` (logged here, recorded as Events by the receiver).
pub async fn watch(
    client: kube::Client,
    kind: Kind,
    index: Arc<Index>,
    refusals: RefusalSink,
    synced: tokio::sync::mpsc::UnboundedSender<Kind>,
) {
    let api: kube::Api<DynamicObject> = kube::Api::all_with(client, &kind.api_resource());
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut buffer: Option<Vec<Value>> = None;
    let mut first = true;
    let to_value = |object: DynamicObject| serde_json::to_value(object).unwrap_or(Value::Null);
    while let Some(event) = stream.next().await {
        let outcomes = match event {
            Ok(watcher::Event::Init) => {
                buffer = Some(Vec::new());
                continue;
            }
            Ok(watcher::Event::InitApply(object)) => {
                buffer.get_or_insert_with(Vec::new).push(to_value(object));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let outcomes = index.resync(kind, buffer.take().unwrap_or_default());
                if first {
                    first = false;
                    let _ = synced.send(kind);
                    tracing::info!(kind = %kind, served = index.list_all_count(kind), "initial listing indexed");
                }
                outcomes
            }
            Ok(watcher::Event::Apply(object)) => vec![index.apply(kind, to_value(object))],
            Ok(watcher::Event::Delete(object)) => {
                let ns = object.metadata.namespace.clone().unwrap_or_default();
                let name = object.metadata.name.clone().unwrap_or_default();
                vec![Ok(index.delete(kind, &ns, &name))]
            }
            Err(err) => {
                tracing::warn!(kind = %kind, error = %err, "watch failed; retrying with backoff");
                continue;
            }
        };
        for outcome in outcomes {
            match outcome {
                Ok(Outcome::Refused(refusal)) => {
                    tracing::error!(
                        kind = %refusal.kind, namespace = %refusal.namespace, name = %refusal.name,
                        kept_previous = refusal.kept_previous, error = %refusal.reason,
                        "invalid resource refused; not served"
                    );
                    let _ = refusals.send(refusal);
                }
                Ok(Outcome::Served) | Ok(Outcome::Deleted) => {}
                Ok(Outcome::Unchanged | Outcome::RefusedAgain) => {}
                Err(err) => tracing::warn!(error = %err, "object ignored"),
            }
        }
    }
}

impl Index {
    fn list_all_count(&self, kind: Kind) -> usize {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        kinds.get(&kind).map(|m| m.values().filter(|s| s.served.is_some()).count()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn component(name: &str, rv: &str, scopes: &[&str], type_: &str) -> Value {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv, "uid": format!("u-{name}"),
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"type": type_, "version": "v1", "metadata": [{"name": "k", "value": "v"}]},
            "scopes": scopes})
    }

    #[test]
    fn a_valid_component_is_served_without_managed_fields_and_announced() {
        let index = Index::new(16);
        let mut feed = index.subscribe();
        assert_eq!(
            index.apply(Kind::Component, component("store", "1", &["a"], "state.in-memory")),
            Ok(Outcome::Served)
        );
        let served = index.get(Kind::Component, "shop", "store").unwrap();
        assert!(served.object["metadata"].get("managedFields").is_none());
        assert_eq!(served.scopes, vec!["a".to_owned()]);
        assert!(served.visible_to("a") && !served.visible_to("b"));
        let change = feed.try_recv().unwrap();
        assert!(change.old.is_none() && change.new.is_some());
        // The same object again (a watch restart) is no change.
        assert_eq!(
            index.apply(Kind::Component, component("store", "1", &["a"], "state.in-memory")),
            Ok(Outcome::Unchanged)
        );
        assert!(feed.try_recv().is_err());
    }

    #[test]
    fn an_invalid_update_keeps_the_last_good_version_and_is_reported_once() {
        let index = Index::new(16);
        index.apply(Kind::Component, component("store", "1", &[], "state.in-memory")).unwrap();
        let mut feed = index.subscribe();
        // `type` without a dot is not a component type ward-config accepts.
        let outcome = index.apply(Kind::Component, component("store", "2", &[], "")).unwrap();
        let Outcome::Refused(refusal) = outcome else { panic!("{outcome:?}") };
        assert!(refusal.kept_previous);
        assert!(refusal.reason.contains("Component shop/store"), "{}", refusal.reason);
        assert!(refusal.reason.contains("spec.type"), "{}", refusal.reason);
        assert_eq!(index.apply(Kind::Component, component("store", "2", &[], "")), Ok(Outcome::RefusedAgain));
        assert_eq!(
            index.get(Kind::Component, "shop", "store").unwrap().object["spec"]["type"],
            json!("state.in-memory")
        );
        assert!(feed.try_recv().is_err(), "a refused update is no change");
        // Never served, refused: nothing served.
        let Outcome::Refused(refusal) = index.apply(Kind::Component, component("other", "3", &[], "")).unwrap() else {
            panic!()
        };
        assert!(!refusal.kept_previous);
        assert!(index.get(Kind::Component, "shop", "other").is_none());
    }

    #[test]
    fn a_secret_reference_without_a_store_means_the_kubernetes_store() {
        let index = Index::new(4);
        let mut c = component("store", "1", &[], "state.redis");
        c["spec"]["metadata"] = json!([{"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "pw"}}]);
        assert_eq!(index.apply(Kind::Component, c), Ok(Outcome::Served));
        assert!(index.get(Kind::Component, "shop", "store").unwrap().object.get("auth").is_none());
    }

    #[test]
    fn resync_deletes_what_is_gone_and_lists_by_namespace() {
        let index = Index::new(16);
        index.apply(Kind::Component, component("a", "1", &[], "state.in-memory")).unwrap();
        index.apply(Kind::Component, component("b", "1", &[], "state.in-memory")).unwrap();
        let mut other = component("c", "1", &[], "state.in-memory");
        other["metadata"]["namespace"] = json!("shopx");
        index.apply(Kind::Component, other).unwrap();
        assert_eq!(index.list(Kind::Component, "shop").len(), 2);
        let mut feed = index.subscribe();
        index.resync(Kind::Component, vec![component("b", "1", &[], "state.in-memory")]);
        let names: Vec<_> = index.list(Kind::Component, "shop").iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, vec!["b".to_owned()]);
        let change = feed.try_recv().unwrap();
        assert_eq!(change.name, "a");
        assert!(change.new.is_none());
        assert_eq!(index.delete(Kind::Component, "shop", "nothing"), Outcome::Unchanged);
        assert!(index.list(Kind::Component, "nobody").is_empty());
    }

    #[test]
    fn configurations_are_checked_by_the_sidecars_parser() {
        let index = Index::new(4);
        let good = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "appconfig", "namespace": "shop", "resourceVersion": "1"},
            "spec": {"accessControl": {"defaultAction": "deny", "trustDomain": "public"}}});
        assert_eq!(index.apply(Kind::Configuration, good), Ok(Outcome::Served));
        let bad = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "broken", "namespace": "shop", "resourceVersion": "2"},
            "spec": {"accessControl": ["not", "a", "mapping"]}});
        assert!(matches!(index.apply(Kind::Configuration, bad), Ok(Outcome::Refused(_))));
        assert_eq!(
            index.apply(Kind::Configuration, json!({"metadata": {"name": "x"}})),
            Err(IndexError::Unnamed { kind: Kind::Configuration })
        );
    }
}
