//! The `<app-id>-dapr` Services (Dapr's `dapr_handler.go`), which name resolution in the cluster relies on: for
//! each Deployment and StatefulSet whose pod template has `dapr.io/enabled: "true"`, a headless Service in its
//! namespace, selecting the workload's pods, with Dapr's ports, owned by the workload (deleting the workload
//! deletes it). Beyond Dapr (which leaves it behind): when the annotation goes, or the app id changes, the
//! Service the workload owned is deleted.
//!
//! Owns: the Service's shape ([`desired_service`], a pure function), applying it (server-side apply, field
//! manager `dapr-operator`), and watching the workloads. Does not own name resolution (the sidecar).

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::{Value, json};

pub const ENABLED_ANNOTATION: &str = "dapr.io/enabled";
pub const APP_ID_ANNOTATION: &str = "dapr.io/app-id";
const GRPC_PORT_ANNOTATION: &str = "dapr.io/grpc-port";
const INTERNAL_GRPC_PORT_ANNOTATION: &str = "dapr.io/internal-grpc-port";
const METRICS_PORT_ANNOTATION: &str = "dapr.io/metrics-port";
const ENABLE_METRICS_ANNOTATION: &str = "dapr.io/enable-metrics";
/// The label Dapr puts on these Services (and by which ward finds the ones it manages).
pub const SERVICE_LABEL: &str = "dapr.io/enabled";
const FIELD_MANAGER: &str = "dapr-operator";

/// The workload facts the Service is derived from.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `Deployment` or `StatefulSet`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub template_annotations: BTreeMap<String, String>,
    pub match_labels: BTreeMap<String, String>,
    pub deleting: bool,
}

impl Workload {
    fn from_deployment(d: &Deployment) -> Option<Self> {
        let spec = d.spec.as_ref()?;
        Self::from_parts("Deployment", &d.metadata, &spec.template, &spec.selector)
    }

    fn from_stateful_set(s: &StatefulSet) -> Option<Self> {
        let spec = s.spec.as_ref()?;
        Self::from_parts("StatefulSet", &s.metadata, &spec.template, &spec.selector)
    }

    /// What both workload kinds share: identity, the pod template's annotations, the selector.
    fn from_parts(
        kind: &'static str,
        metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Option<Self> {
        Some(Workload {
            kind,
            namespace: metadata.namespace.clone()?,
            name: metadata.name.clone()?,
            uid: metadata.uid.clone()?,
            template_annotations: template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default(),
            match_labels: selector.match_labels.clone().unwrap_or_default(),
            deleting: metadata.deletion_timestamp.is_some(),
        })
    }

    /// Dapr's `IsAnnotatedForDapr`: `dapr.io/enabled` parses as true.
    pub fn annotated(&self) -> bool {
        self.template_annotations
            .get(ENABLED_ANNOTATION)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "t" | "y" | "yes" | "on"))
    }

    fn port(&self, annotation: &str, default: i32) -> i32 {
        self.template_annotations.get(annotation).and_then(|v| v.parse().ok()).filter(|p| *p > 0).unwrap_or(default)
    }
}

/// Why a workload gets no Service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("{kind} {namespace}/{name}: {APP_ID_ANNOTATION} {app_id:?}: {reason}")]
    BadAppId { kind: &'static str, namespace: String, name: String, app_id: String, reason: String },
    #[error("{kind} {namespace}/{name}: the selector has no matchLabels")]
    NoSelector { kind: &'static str, namespace: String, name: String },
}

/// The Service Dapr keeps for `workload` (None: it should have none).
pub fn desired_service(workload: &Workload) -> Result<Option<Value>, ServiceError> {
    if !workload.annotated() || workload.deleting {
        return Ok(None);
    }
    let app_id = workload.template_annotations.get(APP_ID_ANNOTATION).cloned().unwrap_or_default();
    ward_identity::validate_kubernetes_app_id(&app_id).map_err(|err| ServiceError::BadAppId {
        kind: workload.kind,
        namespace: workload.namespace.clone(),
        name: workload.name.clone(),
        app_id: app_id.clone(),
        reason: err.to_string(),
    })?;
    if workload.match_labels.is_empty() {
        return Err(ServiceError::NoSelector {
            kind: workload.kind,
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        });
    }
    let grpc = workload.port(GRPC_PORT_ANNOTATION, 50001);
    let internal = workload.port(INTERNAL_GRPC_PORT_ANNOTATION, 50002);
    let metrics = workload.port(METRICS_PORT_ANNOTATION, 9090);
    let mut annotations = json!({ APP_ID_ANNOTATION: app_id });
    let metrics_enabled = workload.template_annotations.get(ENABLE_METRICS_ANNOTATION).is_none_or(|v| v != "false");
    if metrics_enabled {
        annotations["prometheus.io/probe"] = json!("true");
        annotations["prometheus.io/scrape"] = json!("true");
        annotations["prometheus.io/port"] = json!(metrics.to_string());
        annotations["prometheus.io/path"] = json!("/");
    }
    Ok(Some(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": format!("{app_id}-dapr"),
            "namespace": workload.namespace,
            "labels": { SERVICE_LABEL: "true" },
            "annotations": annotations,
            // No blockOwnerDeletion: it would need update rights on the workload's finalizers.
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": workload.kind, "name": workload.name,
                "uid": workload.uid, "controller": true}],
        },
        "spec": {
            "selector": workload.match_labels,
            "clusterIP": "None",
            "ports": [
                {"name": "dapr-http", "port": 80, "targetPort": 3500, "protocol": "TCP"},
                {"name": "dapr-grpc", "port": grpc, "targetPort": grpc, "protocol": "TCP"},
                {"name": "dapr-internal", "port": internal, "targetPort": internal, "protocol": "TCP"},
                {"name": "dapr-metrics", "port": metrics, "targetPort": metrics, "protocol": "TCP"},
            ],
        },
    })))
}

/// Keeps the Services in step with Deployments and StatefulSets until the task is dropped.
pub async fn run(client: kube::Client) {
    let mut owned = owned_services(&client).await;
    let deployments = watcher(kube::Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(|e| WorkloadEvent::from_event(e, Workload::from_deployment)));
    let stateful_sets = watcher(kube::Api::<StatefulSet>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(|e| WorkloadEvent::from_event(e, Workload::from_stateful_set)));
    let mut events = std::pin::pin!(futures_util::stream::select(deployments, stateful_sets));
    while let Some(event) = events.next().await {
        let workload = match event {
            Ok(WorkloadEvent::Apply(w)) => w,
            // The Service goes with its owner (garbage collection); forget it.
            Ok(WorkloadEvent::Delete(w)) => {
                owned.remove(&w.uid);
                continue;
            }
            Ok(WorkloadEvent::Other) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "watching workloads failed; retrying with backoff");
                continue;
            }
        };
        reconcile(&client, &workload, &mut owned).await;
    }
}

enum WorkloadEvent {
    Apply(Workload),
    Delete(Workload),
    Other,
}

impl WorkloadEvent {
    fn from_event<K>(event: watcher::Event<K>, read: fn(&K) -> Option<Workload>) -> Self {
        match event {
            watcher::Event::Apply(k) | watcher::Event::InitApply(k) => read(&k).map_or(Self::Other, Self::Apply),
            watcher::Event::Delete(k) => read(&k).map_or(Self::Other, Self::Delete),
            watcher::Event::Init | watcher::Event::InitDone => Self::Other,
        }
    }
}

/// Workload uid → (namespace, Service name) for the Services ward manages, found by label and owner.
async fn owned_services(client: &kube::Client) -> HashMap<String, (String, String)> {
    let api: kube::Api<Service> = kube::Api::all(client.clone());
    let mut owned = HashMap::new();
    match api.list(&ListParams::default().labels(&format!("{SERVICE_LABEL}=true"))).await {
        Ok(list) => {
            for service in list {
                let (Some(ns), Some(name)) = (service.metadata.namespace.clone(), service.metadata.name.clone()) else {
                    continue;
                };
                for owner in service.metadata.owner_references.iter().flatten() {
                    if matches!(owner.kind.as_str(), "Deployment" | "StatefulSet") && name.ends_with("-dapr") {
                        owned.insert(owner.uid.clone(), (ns.clone(), name.clone()));
                    }
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "listing existing <app-id>-dapr Services"),
    }
    owned
}

async fn reconcile(client: &kube::Client, workload: &Workload, owned: &mut HashMap<String, (String, String)>) {
    let desired = match desired_service(workload) {
        Ok(desired) => desired,
        Err(err) => {
            tracing::warn!(error = %err, "no <app-id>-dapr Service for this workload");
            None
        }
    };
    let api: kube::Api<Service> = kube::Api::namespaced(client.clone(), &workload.namespace);
    let desired_name = desired.as_ref().and_then(|s| s["metadata"]["name"].as_str().map(str::to_owned));
    // A Service this workload owned under another name (app id changed) or no longer wants.
    if let Some((ns, old)) = owned.get(&workload.uid).cloned()
        && Some(&old) != desired_name.as_ref()
    {
        match api.delete(&old, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(namespace = %ns, service = %old, workload = %workload.name, "deleted <app-id>-dapr Service")
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => {
                tracing::warn!(namespace = %ns, service = %old, error = %err, "deleting <app-id>-dapr Service");
                return;
            }
        }
        owned.remove(&workload.uid);
    }
    let (Some(service), Some(name)) = (desired, desired_name) else { return };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(&service)).await {
        Ok(_) => {
            if owned.insert(workload.uid.clone(), (workload.namespace.clone(), name.clone())).is_none() {
                tracing::info!(namespace = %workload.namespace, service = %name, workload = %workload.name,
                    "applied <app-id>-dapr Service");
            }
        }
        Err(err) => tracing::warn!(namespace = %workload.namespace, service = %name, error = %err,
            "applying <app-id>-dapr Service"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(annotations: &[(&str, &str)]) -> Workload {
        Workload {
            kind: "Deployment",
            namespace: "shop".into(),
            name: "orders".into(),
            uid: "uid-1".into(),
            template_annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            match_labels: [("app".to_owned(), "orders".to_owned())].into(),
            deleting: false,
        }
    }

    #[test]
    fn an_annotated_workload_gets_daprs_headless_service() {
        let service = desired_service(&workload(&[(ENABLED_ANNOTATION, "true"), (APP_ID_ANNOTATION, "orders")]))
            .unwrap()
            .unwrap();
        assert_eq!(service["metadata"]["name"], "orders-dapr");
        assert_eq!(service["spec"]["clusterIP"], "None");
        assert_eq!(service["spec"]["selector"], json!({"app": "orders"}));
        assert_eq!(service["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        let ports: Vec<(String, i64, i64)> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (p["name"].as_str().unwrap().to_owned(), p["port"].as_i64().unwrap(), p["targetPort"].as_i64().unwrap())
            })
            .collect();
        assert_eq!(
            ports,
            vec![
                ("dapr-http".into(), 80, 3500),
                ("dapr-grpc".into(), 50001, 50001),
                ("dapr-internal".into(), 50002, 50002),
                ("dapr-metrics".into(), 9090, 9090)
            ]
        );
        assert!(service["spec"]["ports"].as_array().unwrap().iter().all(|p| p["protocol"] == "TCP"));
    }

    #[test]
    fn no_service_without_the_annotation_or_with_a_bad_app_id() {
        assert_eq!(desired_service(&workload(&[(APP_ID_ANNOTATION, "orders")])), Ok(None));
        assert_eq!(desired_service(&workload(&[(ENABLED_ANNOTATION, "false"), (APP_ID_ANNOTATION, "o")])), Ok(None));
        assert!(matches!(
            desired_service(&workload(&[(ENABLED_ANNOTATION, "true")])),
            Err(ServiceError::BadAppId { .. })
        ));
        assert!(matches!(
            desired_service(&workload(&[(ENABLED_ANNOTATION, "true"), (APP_ID_ANNOTATION, "Not_Valid")])),
            Err(ServiceError::BadAppId { .. })
        ));
        let mut deleting = workload(&[(ENABLED_ANNOTATION, "true"), (APP_ID_ANNOTATION, "orders")]);
        deleting.deleting = true;
        assert_eq!(desired_service(&deleting), Ok(None));
    }
}
