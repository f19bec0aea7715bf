//! `ward init -k` then `ward uninstall -k` on a cluster of its own (with the controller manager, so namespace
//! deletion completes): init is idempotent, and uninstall leaves the cluster as it was. (`--wait` and `status` are
//! tested in `install_rbac.rs`, on a cluster without the Deployment controller, which would overwrite the
//! Deployment status the test writes in place of a kubelet.)

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use ward_k8s_testenv::{Options, TestCluster};
use ward_kube::install::{self, InstallOptions, UninstallOptions};

/// Names (and resource versions) of the cluster-wide things an install touches.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    namespaces: BTreeSet<String>,
    crds: BTreeSet<String>,
    cluster_roles: BTreeSet<String>,
    cluster_role_bindings: BTreeSet<String>,
    webhooks: BTreeSet<String>,
}

async fn names<K>(client: &Client) -> BTreeSet<String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = Api::<K>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    list.items.iter().filter_map(|o| o.meta().name.clone()).collect()
}

async fn snapshot(client: &Client) -> Snapshot {
    Snapshot {
        namespaces: names::<Namespace>(client).await,
        crds: names::<CustomResourceDefinition>(client).await,
        cluster_roles: names::<ClusterRole>(client).await,
        cluster_role_bindings: names::<ClusterRoleBinding>(client).await,
        webhooks: names::<MutatingWebhookConfiguration>(client).await,
    }
}

/// `Kind ns/name -> resourceVersion` of every installed object: unchanged by a second, identical install.
async fn versions(client: &Client, options: &InstallOptions) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for object in install::render(options).unwrap() {
        let (group, version) = object.api_version.split_once('/').unwrap_or(("", &object.api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &object.kind);
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<kube::api::DynamicObject> = match &object.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let live = api.get(&object.name).await.unwrap_or_else(|e| panic!("{}: {e}", object.describe()));
        out.push((object.describe(), live.metadata.resource_version.unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_and_uninstall_restores_the_cluster() {
    let Some(assets) = ward_k8s_testenv::assets() else {
        ward_k8s_testenv::shared_or_skip("init_is_idempotent_and_uninstall_restores_the_cluster");
        return;
    };
    let cluster = TestCluster::start(&assets, Options { controller_manager: true }).expect("test cluster");
    let client = cluster.client().await;
    // The controller manager creates its service accounts and the like on start: let that settle first.
    let before = settle(&client).await;

    let options = InstallOptions { namespace: "ward-system".into(), ..InstallOptions::default() };
    let limit = Duration::from_secs(120);
    let first = tokio::time::timeout(limit, install::install(&client, &options)).await.expect("init").unwrap();
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    assert!(first.applied.contains(&"Namespace ward-system".to_owned()));
    let installed = snapshot(&client).await;
    assert!(installed.crds.contains("components.dapr.io"));
    assert!(installed.webhooks.contains("dapr-sidecar-injector"));
    assert!(installed.cluster_roles.contains("dapr-sentry"));

    // Twice = same: the second server-side apply changes no object (same resourceVersion everywhere).
    let versions_before = versions(&client, &options).await;
    tokio::time::timeout(limit, install::install(&client, &options)).await.expect("init again").unwrap();
    assert_eq!(versions(&client, &options).await, versions_before, "a second identical init changed objects");
    assert_eq!(snapshot(&client).await, installed);
    assert!(install::mtls_enabled(&client, "ward-system").await.unwrap());

    // Uninstall without --all keeps the CRDs (and users' resources in them).
    let keep = UninstallOptions { namespace: "ward-system".into(), all: false, wait: Some(Duration::from_secs(60)) };
    let report = install::uninstall(&client, &keep).await.unwrap();
    assert!(report.kept.iter().all(|k| k.starts_with("CustomResourceDefinition")), "{:?}", report.kept);
    let after_keep = snapshot(&client).await;
    assert_eq!(after_keep.crds, installed.crds);
    assert_eq!(after_keep.namespaces, before.namespaces);
    assert_eq!(after_keep.webhooks, before.webhooks);

    // Install again, then uninstall --all: exactly the cluster from before.
    tokio::time::timeout(limit, install::install(&client, &options)).await.expect("init").unwrap();
    let all = UninstallOptions { all: true, ..keep };
    let report = install::uninstall(&client, &all).await.unwrap();
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    assert_eq!(snapshot(&client).await, before);
    // Nothing left to delete: a second uninstall finds everything absent and succeeds.
    let again = install::uninstall(&client, &all).await.unwrap();
    assert!(again.deleted.is_empty(), "{:?}", again.deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_leaves_a_namespace_ward_did_not_create() {
    let Some(assets) = ward_k8s_testenv::assets() else {
        ward_k8s_testenv::shared_or_skip("uninstall_leaves_a_namespace_ward_did_not_create");
        return;
    };
    let cluster = TestCluster::start(&assets, Options { controller_manager: true }).expect("test cluster");
    let client = cluster.client().await;
    ward_k8s_testenv::create_namespace(&client, "mine").await;
    let options = InstallOptions { namespace: "mine".into(), ..InstallOptions::default() };
    let report = install::install(&client, &options).await.unwrap();
    assert_eq!(report.skipped, ["Namespace mine"]);
    let all = UninstallOptions { namespace: "mine".into(), all: true, wait: Some(Duration::from_secs(60)) };
    let report = install::uninstall(&client, &all).await.unwrap();
    assert_eq!(report.kept, ["Namespace mine"]);
    let namespace = Api::<Namespace>::all(client.clone()).get("mine").await.unwrap();
    assert!(namespace.metadata.deletion_timestamp.is_none(), "ward deleted a namespace it did not create");
    let deployments: Api<Deployment> = Api::namespaced(client, "mine");
    assert!(deployments.list(&ListParams::default()).await.unwrap().items.is_empty());
}

/// Waits until the cluster-wide lists stop changing (the controller manager's start-up writes), then returns them.
async fn settle(client: &Client) -> Snapshot {
    let mut last = snapshot(client).await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = snapshot(client).await;
        if now == last {
            return now;
        }
        last = now;
    }
    last
}
