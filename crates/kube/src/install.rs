//! Installing and operating ward's control plane on a cluster (`ward init -k`, `ward uninstall -k`,
//! `ward status -k`, `ward mtls … -k`).
//!
//! Owns: the manifests of `deploy/kubernetes/` (embedded with `include_str!`, so the binary installs exactly what
//! the repository ships), rendering them for a namespace / image / mTLS setting / production flag, applying them
//! with server-side apply (field manager `ward`; CRDs first, then waiting until they are Established), deleting
//! exactly what was installed, the control plane's status, and reading the CA's Secret `dapr-trust-bundle`.
//!
//! Does not own: what the control-plane processes do (the sentry writes the Secret and the `dapr-root-ca.crt`
//! ConfigMaps, the injector patches its webhook's `caBundle`), and nothing here shells out to `kubectl` or `helm`.
//!
//! Every object carries the label `app.kubernetes.io/managed-by: ward`; uninstall deletes an object only if it
//! carries that label, so an object ward did not create (a namespace that already existed) is never deleted.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;
use ward_sentry::material::Expiry;

/// The field manager of every server-side apply ward does.
pub const FIELD_MANAGER: &str = "ward";
/// The label every installed object carries; uninstall only deletes objects that have it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "ward";
/// The control-plane namespace the manifests are written for (replaced when rendering for another one).
pub const DEFAULT_NAMESPACE: &str = "dapr-system";
/// The control plane's Configuration (Dapr's name).
pub const CONTROL_PLANE_CONFIGURATION: &str = "daprsystem";
/// The sentry's CA Secret (keys `ca.crt`, `issuer.crt`, `issuer.key`).
pub const TRUST_BUNDLE_SECRET: &str = "dapr-trust-bundle";
/// How long `install` waits for the CRDs to be Established before applying resources of their kinds.
const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// The manifests, in the order they are applied (each file is one or more YAML documents).
pub const MANIFESTS: [(&str, &str); 6] = [
    ("00-namespace.yaml", include_str!("../../../deploy/kubernetes/00-namespace.yaml")),
    ("10-crds.yaml", include_str!("../../../deploy/kubernetes/10-crds.yaml")),
    ("20-sentry.yaml", include_str!("../../../deploy/kubernetes/20-sentry.yaml")),
    ("30-injector.yaml", include_str!("../../../deploy/kubernetes/30-injector.yaml")),
    ("40-operator.yaml", include_str!("../../../deploy/kubernetes/40-operator.yaml")),
    ("50-configuration.yaml", include_str!("../../../deploy/kubernetes/50-configuration.yaml")),
];

/// The image the manifests run by default: this build's version.
pub fn default_image() -> String {
    format!("ghcr.io/ward-mesh/ward:{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("namespace {namespace:?}: {reason}")]
    InvalidNamespace { namespace: String, reason: &'static str },
    #[error("image {image:?}: {reason}")]
    InvalidImage { image: String, reason: &'static str },
    #[error("--production requires mTLS: --enable-mtls=false is a development setting")]
    ProductionWithoutMtls,
    #[error("manifest {file}: {source}")]
    ManifestYaml {
        file: &'static str,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("manifest {file}: {reason}")]
    ManifestShape { file: &'static str, reason: String },
    #[error("manifest {file}: {api_version} {kind} is not a kind ward installs")]
    UnknownKind { file: &'static str, api_version: String, kind: String },
    #[error("{action} {kind} {name}{}: {source}", in_namespace(namespace))]
    Api {
        action: &'static str,
        kind: String,
        name: String,
        namespace: Option<String>,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("CustomResourceDefinition {name} not Established after {waited:?}")]
    CrdNotEstablished { name: String, waited: Duration },
    #[error("timed out after {waited:?} waiting for Deployments to be ready in {namespace}: {}", pending.join(", "))]
    NotReady { namespace: String, pending: Vec<String>, waited: Duration },
    #[error("timed out after {waited:?} waiting for deletion of: {}", pending.join(", "))]
    NotDeleted { pending: Vec<String>, waited: Duration },
    #[error("{kind} {name} not found in namespace {namespace}: is ward installed there? (ward init -k)")]
    NotInstalled { kind: &'static str, name: &'static str, namespace: String },
    #[error("Secret {TRUST_BUNDLE_SECRET} in {namespace}: key {key} is missing or empty")]
    BundleMissingKey { namespace: String, key: &'static str },
    #[error("Secret {TRUST_BUNDLE_SECRET} in {namespace}: key {key}: {reason}")]
    BundleBadCertificate { namespace: String, key: &'static str, reason: String },
}

fn in_namespace(namespace: &Option<String>) -> String {
    namespace.as_ref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default()
}

/// What `ward init -k` installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// The control-plane namespace (`--namespace`, default `dapr-system`).
    pub namespace: String,
    /// The image every control-plane container runs and the injector injects (`--image`).
    pub image: String,
    /// `spec.mtls.enabled` of the `daprsystem` Configuration (`--enable-mtls`, default true).
    pub enable_mtls: bool,
    /// `--production`: the sentry runs with `--production` (refuses settings it does not honour) and mTLS cannot
    /// be turned off.
    pub production: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self { namespace: DEFAULT_NAMESPACE.to_owned(), image: default_image(), enable_mtls: true, production: false }
    }
}

/// One rendered object, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The manifest file it comes from.
    pub file: &'static str,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The whole object as JSON (what is sent to the API server).
    pub value: Value,
}

impl Object {
    /// `Kind name` or `Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    fn api(&self, client: &Client) -> Result<Api<DynamicObject>, InstallError> {
        let (resource, namespaced) =
            resource_of(&self.api_version, &self.kind).ok_or_else(|| InstallError::UnknownKind {
                file: self.file,
                api_version: self.api_version.clone(),
                kind: self.kind.clone(),
            })?;
        Ok(match (&self.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        })
    }

    fn api_error(&self, action: &'static str, source: kube::Error) -> InstallError {
        InstallError::Api {
            action,
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            source: Box::new(source),
        }
    }
}

/// The kinds the manifests may contain, with their plural and whether they are namespaced. A fixed table rather
/// than discovery: ward installs only these, and a typo in a manifest is an error at render time.
fn resource_of(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (plural, namespaced) = match (api_version, kind) {
        ("v1", "Namespace") => ("namespaces", false),
        ("v1", "ServiceAccount") => ("serviceaccounts", true),
        ("v1", "Service") => ("services", true),
        ("apps/v1", "Deployment") => ("deployments", true),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => ("clusterroles", false),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => ("clusterrolebindings", false),
        ("rbac.authorization.k8s.io/v1", "Role") => ("roles", true),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => ("rolebindings", true),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => ("mutatingwebhookconfigurations", false),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => ("customresourcedefinitions", false),
        ("dapr.io/v1alpha1", "Configuration") => ("configurations", true),
        _ => return None,
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

/// A DNS-1123 label, as Kubernetes requires of namespace names. Checked before the name is put into the
/// manifests' text, so it can never change their YAML structure.
fn check_namespace(namespace: &str) -> Result<(), InstallError> {
    let fail = |reason| Err(InstallError::InvalidNamespace { namespace: namespace.to_owned(), reason });
    if namespace.is_empty() || namespace.len() > 63 {
        return fail("must be 1 to 63 characters");
    }
    if !namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return fail("only lowercase letters, digits and '-' are allowed");
    }
    if namespace.starts_with('-') || namespace.ends_with('-') {
        return fail("must start and end with a letter or digit");
    }
    if namespace == "kube-system" {
        return fail("the control plane cannot live in kube-system");
    }
    Ok(())
}

fn check_image(image: &str) -> Result<(), InstallError> {
    let fail = |reason| Err(InstallError::InvalidImage { image: image.to_owned(), reason });
    if image.is_empty() || image.len() > 512 {
        return fail("must be 1 to 512 characters");
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return fail("must not contain whitespace or control characters");
    }
    Ok(())
}

/// The manifests rendered for `options`: the control-plane namespace replaces `dapr-system` everywhere (object
/// namespaces, RBAC subjects, the webhook's service and namespace selector, the sentry's SPIFFE ID in the token
/// audience), every container runs `options.image` (and the injector injects it), the `daprsystem`
/// Configuration's `spec.mtls.enabled` is `options.enable_mtls`, and with `production` the sentry gets
/// `--production`. Objects come in apply order.
pub fn render(options: &InstallOptions) -> Result<Vec<Object>, InstallError> {
    check_namespace(&options.namespace)?;
    check_image(&options.image)?;
    if options.production && !options.enable_mtls {
        return Err(InstallError::ProductionWithoutMtls);
    }
    let mut objects = Vec::new();
    for (file, text) in MANIFESTS {
        let text = text.replace(DEFAULT_NAMESPACE, &options.namespace);
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|source| InstallError::ManifestYaml { file, source: Box::new(source) })?;
        // A file's leading comment block parses as an empty document.
        for mut value in documents.into_iter().filter(|v| !v.is_null()) {
            customise(&mut value, options);
            objects.push(object_of(file, value)?);
        }
    }
    Ok(objects)
}

fn object_of(file: &'static str, value: Value) -> Result<Object, InstallError> {
    let shape = |reason: String| InstallError::ManifestShape { file, reason };
    let text = |pointer: &str| value.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let api_version = text("/apiVersion").ok_or_else(|| shape("a document without apiVersion".into()))?;
    let kind = text("/kind").ok_or_else(|| shape("a document without kind".into()))?;
    let name = text("/metadata/name").ok_or_else(|| shape(format!("a {kind} without metadata.name")))?;
    let namespace = text("/metadata/namespace");
    let (_, namespaced) = resource_of(&api_version, &kind).ok_or_else(|| InstallError::UnknownKind {
        file,
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    if namespaced != namespace.is_some() {
        return Err(shape(format!("{kind} {name}: metadata.namespace must be set exactly for namespaced kinds")));
    }
    if text(&format!("/metadata/labels/{}", MANAGED_BY_LABEL.replace('/', "~1"))).as_deref() != Some(MANAGED_BY_VALUE) {
        return Err(shape(format!("{kind} {name}: missing label {MANAGED_BY_LABEL}: {MANAGED_BY_VALUE}")));
    }
    Ok(Object { file, api_version, kind, name, namespace, value })
}

/// The structural part of rendering (what a text substitution could not do safely).
fn customise(value: &mut Value, options: &InstallOptions) {
    match value.get("kind").and_then(Value::as_str) {
        Some("Deployment") => {
            let Some(containers) = value.pointer_mut("/spec/template/spec/containers").and_then(Value::as_array_mut)
            else {
                return;
            };
            for container in containers {
                container["image"] = Value::String(options.image.clone());
                if let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) {
                    for var in env.iter_mut().filter(|var| var["name"] == "SIDECAR_IMAGE") {
                        var["value"] = Value::String(options.image.clone());
                    }
                }
                let is_sentry = container["args"].get(0).and_then(Value::as_str) == Some("sentry");
                if options.production
                    && is_sentry
                    && let Some(args) = container.get_mut("args").and_then(Value::as_array_mut)
                {
                    args.push(Value::String("--production".into()));
                }
            }
        }
        Some("Configuration") => {
            if let Some(mtls) = value.pointer_mut("/spec/mtls").and_then(Value::as_object_mut) {
                mtls.insert("enabled".into(), Value::Bool(options.enable_mtls));
            }
        }
        _ => {}
    }
}

/// What `install` did.
#[derive(Debug, Clone, Default)]
pub struct InstallReport {
    /// Every object applied, `Kind [ns/]name`.
    pub applied: Vec<String>,
    /// Objects left alone because they exist and are not ward's (a namespace that existed before).
    pub skipped: Vec<String>,
}

/// Applies the rendered manifests with server-side apply: the namespace (unless it exists and is not ward's),
/// the CRDs (then waits until they are Established), then everything else. Running it twice changes nothing the
/// second time (apply is declarative), and fields other managers own (the injector's `caBundle`) are kept.
pub async fn install(client: &Client, options: &InstallOptions) -> Result<InstallReport, InstallError> {
    let objects = render(options)?;
    let mut report = InstallReport::default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut crds: Vec<String> = Vec::new();
    for object in &objects {
        if object.kind == "Namespace" && !namespace_is_ours_or_absent(client, &object.name).await? {
            report.skipped.push(object.describe());
            continue;
        }
        if object.kind != "CustomResourceDefinition" && !crds.is_empty() {
            // The first object after the CRDs: resources of their kinds need them served.
            for name in std::mem::take(&mut crds) {
                wait_established(client, &name, CRD_ESTABLISHED_TIMEOUT).await?;
            }
        }
        let api = object.api(client)?;
        api.patch(&object.name, &params, &Patch::Apply(&object.value))
            .await
            .map_err(|source| object.api_error("applying", source))?;
        if object.kind == "CustomResourceDefinition" {
            crds.push(object.name.clone());
        }
        report.applied.push(object.describe());
    }
    for name in crds {
        wait_established(client, &name, CRD_ESTABLISHED_TIMEOUT).await?;
    }
    Ok(report)
}

async fn namespace_is_ours_or_absent(client: &Client, name: &str) -> Result<bool, InstallError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let existing = namespaces.get_opt(name).await.map_err(|source| InstallError::Api {
        action: "reading",
        kind: "Namespace".into(),
        name: name.to_owned(),
        namespace: None,
        source: Box::new(source),
    })?;
    Ok(existing.is_none_or(|ns| is_ours(&ns.metadata.labels)))
}

fn is_ours(labels: &Option<std::collections::BTreeMap<String, String>>) -> bool {
    labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).is_some_and(|v| v == MANAGED_BY_VALUE)
}

async fn wait_established(client: &Client, name: &str, limit: Duration) -> Result<(), InstallError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let started = Instant::now();
    loop {
        let crd = crds.get(name).await.map_err(|source| InstallError::Api {
            action: "reading",
            kind: "CustomResourceDefinition".into(),
            name: name.to_owned(),
            namespace: None,
            source: Box::new(source),
        })?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        if established {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(InstallError::CrdNotEstablished { name: name.to_owned(), waited: limit });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What `ward uninstall -k` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UninstallOptions {
    pub namespace: String,
    /// `--all`: also the CRDs, and with them every Dapr resource users created (Components, Configurations, …).
    pub all: bool,
    /// Wait (up to this long) until every deleted object is gone, the namespace included (which needs the
    /// cluster's namespace controller to finish).
    pub wait: Option<Duration>,
}

/// What `uninstall` did.
#[derive(Debug, Clone, Default)]
pub struct UninstallReport {
    pub deleted: Vec<String>,
    /// Not found (already gone, or never installed).
    pub absent: Vec<String>,
    /// Present but not labelled as ward's, or kept on purpose (CRDs without `--all`): left alone.
    pub kept: Vec<String>,
}

/// Deletes what `install` created, in reverse order: only objects carrying ward's label, the CRDs only with
/// `all`, the namespace only if ward created it.
pub async fn uninstall(client: &Client, options: &UninstallOptions) -> Result<UninstallReport, InstallError> {
    let objects = render(&InstallOptions { namespace: options.namespace.clone(), ..InstallOptions::default() })?;
    let mut report = UninstallReport::default();
    let mut deleted = Vec::new();
    for object in objects.iter().rev() {
        if object.kind == "CustomResourceDefinition" && !options.all {
            report.kept.push(object.describe());
            continue;
        }
        let api = object.api(client)?;
        let existing = match api.get_opt(&object.name).await {
            Ok(existing) => existing,
            // The Configuration's CRD may already be gone (an earlier `--all`): nothing of that kind exists.
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(source) => return Err(object.api_error("reading", source)),
        };
        let Some(existing) = existing else {
            report.absent.push(object.describe());
            continue;
        };
        if !is_ours(&existing.metadata.labels) {
            report.kept.push(object.describe());
            continue;
        }
        match api.delete(&object.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(object.api_error("deleting", source)),
        }
        report.deleted.push(object.describe());
        deleted.push(object);
    }
    if let Some(limit) = options.wait {
        let started = Instant::now();
        loop {
            let mut pending = Vec::new();
            for object in &deleted {
                match object.api(client)?.get_opt(&object.name).await {
                    Ok(None) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Ok(Some(_)) => pending.push(object.describe()),
                    Err(source) => return Err(object.api_error("reading", source)),
                }
            }
            if pending.is_empty() {
                break;
            }
            if started.elapsed() >= limit {
                return Err(InstallError::NotDeleted { pending, waited: limit });
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(report)
}

/// One control-plane Deployment, as `ward status -k` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub name: String,
    pub namespace: String,
    pub desired: i32,
    pub ready: i32,
    /// The tag of its first container's image (Dapr's VERSION column).
    pub version: String,
    pub created: Option<SystemTime>,
}

impl DeploymentStatus {
    /// Ready as Dapr's `status -k` counts it: every desired replica ready (and at least one desired).
    pub fn healthy(&self) -> bool {
        self.desired > 0 && self.ready >= self.desired
    }
}

/// The control plane's Deployments (those labelled as ward's in `namespace`), sorted by name.
pub async fn deployments(client: &Client, namespace: &str) -> Result<Vec<DeploymentStatus>, InstallError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let list = api.list(&ListParams::default().labels(&selector)).await.map_err(|source| InstallError::Api {
        action: "listing",
        kind: "Deployment".into(),
        name: "*".into(),
        namespace: Some(namespace.to_owned()),
        source: Box::new(source),
    })?;
    let mut out: Vec<DeploymentStatus> = list.items.iter().map(|d| deployment_status(d, namespace)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn deployment_status(deployment: &Deployment, namespace: &str) -> DeploymentStatus {
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.as_ref();
    // A status from an older generation says nothing about the current spec.
    let current = status.and_then(|s| s.observed_generation) >= deployment.metadata.generation;
    let ready = if current { status.and_then(|s| s.ready_replicas).unwrap_or(0) } else { 0 };
    let image = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let version = image.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map(|(_, tag)| tag.to_owned());
    DeploymentStatus {
        name: deployment.metadata.name.clone().unwrap_or_default(),
        namespace: namespace.to_owned(),
        desired,
        ready,
        version: version.unwrap_or_else(|| "latest".into()),
        created: deployment.metadata.creation_timestamp.as_ref().map(|t| SystemTime::from(t.0)),
    }
}

/// Waits until every control-plane Deployment in `namespace` is ready (`ward init -k --wait`).
pub async fn wait_ready(client: &Client, namespace: &str, limit: Duration) -> Result<(), InstallError> {
    let started = Instant::now();
    loop {
        let all = deployments(client, namespace).await?;
        let pending: Vec<String> = all
            .iter()
            .filter(|d| !d.healthy())
            .map(|d| format!("{} ({}/{} ready)", d.name, d.ready, d.desired))
            .collect();
        if pending.is_empty() && !all.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= limit {
            let pending = if all.is_empty() { vec!["no control-plane Deployments".into()] } else { pending };
            return Err(InstallError::NotReady { namespace: namespace.to_owned(), pending, waited: limit });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether mTLS is on: `spec.mtls.enabled` of the `daprsystem` Configuration in the control-plane namespace
/// (absent = false, as Dapr's `MTLSSpec`).
pub async fn mtls_enabled(client: &Client, namespace: &str) -> Result<bool, InstallError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &crate::dapr::configuration());
    let configuration = match api.get_opt(CONTROL_PLANE_CONFIGURATION).await {
        Ok(c) => c,
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(source) => {
            return Err(InstallError::Api {
                action: "reading",
                kind: "Configuration".into(),
                name: CONTROL_PLANE_CONFIGURATION.into(),
                namespace: Some(namespace.to_owned()),
                source: Box::new(source),
            });
        }
    };
    let configuration = configuration.ok_or_else(|| InstallError::NotInstalled {
        kind: "Configuration",
        name: CONTROL_PLANE_CONFIGURATION,
        namespace: namespace.to_owned(),
    })?;
    Ok(configuration.data.pointer("/spec/mtls/enabled").and_then(Value::as_bool).unwrap_or(false))
}

/// The CA material of Secret `dapr-trust-bundle`. `Debug` leaves out the key.
#[derive(Clone)]
pub struct TrustBundleSecret {
    pub namespace: String,
    /// PEM roots.
    pub ca_crt: Vec<u8>,
    /// PEM issuer chain.
    pub issuer_crt: Vec<u8>,
    /// PEM issuer key.
    pub issuer_key: Vec<u8>,
}

impl std::fmt::Debug for TrustBundleSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundleSecret").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl TrustBundleSecret {
    /// When each root and the issuer expire (the same shape `ward mtls expiry` prints for files).
    pub fn expiry(&self) -> Result<Expiry, InstallError> {
        let roots = describe_all(&self.namespace, "ca.crt", &self.ca_crt)?;
        let issuer = describe_all(&self.namespace, "issuer.crt", &self.issuer_crt)?
            .into_iter()
            .next()
            .ok_or_else(|| InstallError::BundleMissingKey { namespace: self.namespace.clone(), key: "issuer.crt" })?;
        Ok(Expiry { roots, issuer })
    }
}

fn describe_all(namespace: &str, key: &'static str, pem: &[u8]) -> Result<Vec<(String, SystemTime)>, InstallError> {
    let bad = |reason: String| InstallError::BundleBadCertificate { namespace: namespace.to_owned(), key, reason };
    let certs = ward_identity::parse_certificates(pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate".into()));
    }
    certs
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
            let secs = cert.validity().not_after.timestamp();
            let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0).unsigned_abs());
            Ok((cert.subject().to_string(), not_after))
        })
        .collect()
}

/// Reads Secret `dapr-trust-bundle` from the control-plane namespace; every key must be present and non-empty.
pub async fn trust_bundle(client: &Client, namespace: &str) -> Result<TrustBundleSecret, InstallError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(TRUST_BUNDLE_SECRET)
        .await
        .map_err(|source| InstallError::Api {
            action: "reading",
            kind: "Secret".into(),
            name: TRUST_BUNDLE_SECRET.into(),
            namespace: Some(namespace.to_owned()),
            source: Box::new(source),
        })?
        .ok_or_else(|| InstallError::NotInstalled {
            kind: "Secret",
            name: TRUST_BUNDLE_SECRET,
            namespace: namespace.to_owned(),
        })?;
    let data = secret.data.unwrap_or_default();
    let key = |key: &'static str| {
        data.get(key)
            .map(|v| v.0.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| InstallError::BundleMissingKey { namespace: namespace.to_owned(), key })
    };
    Ok(TrustBundleSecret {
        namespace: namespace.to_owned(),
        ca_crt: key("ca.crt")?,
        issuer_crt: key("issuer.crt")?,
        issuer_key: key("issuer.key")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Object {
        objects.iter().find(|o| o.kind == kind && o.name == name).unwrap_or_else(|| panic!("{kind} {name}"))
    }

    #[test]
    fn default_render_names_dapr_objects_and_labels_everything() {
        let objects = render(&InstallOptions::default()).unwrap();
        for (kind, name) in [
            ("Namespace", "dapr-system"),
            ("Deployment", "dapr-sentry"),
            ("Deployment", "dapr-sidecar-injector"),
            ("Service", "dapr-sentry"),
            ("Service", "dapr-sidecar-injector"),
            ("Service", "dapr-api"),
            ("ServiceAccount", "dapr-operator"),
            ("MutatingWebhookConfiguration", "dapr-sidecar-injector"),
            ("Configuration", "daprsystem"),
            ("CustomResourceDefinition", "components.dapr.io"),
            ("CustomResourceDefinition", "subscriptions.dapr.io"),
            ("CustomResourceDefinition", "mcpservers.dapr.io"),
        ] {
            find(&objects, kind, name);
        }
        // Namespace first, CRDs before anything that is not one, the Configuration after its CRD.
        assert_eq!(objects[0].kind, "Namespace");
        let last_crd = objects.iter().rposition(|o| o.kind == "CustomResourceDefinition").unwrap();
        assert!(objects[1..=last_crd].iter().all(|o| o.kind == "CustomResourceDefinition"));
        for deployment in objects.iter().filter(|o| o.kind == "Deployment") {
            let app = deployment.value.pointer("/spec/template/metadata/labels/app").unwrap();
            assert_eq!(app, &Value::String(deployment.name.clone()));
            let image = deployment.value.pointer("/spec/template/spec/containers/0/image").unwrap();
            assert_eq!(image, &Value::String(default_image()));
        }
    }

    #[test]
    fn namespace_image_mtls_and_production_are_rendered() {
        let options = InstallOptions {
            namespace: "ward-cp".into(),
            image: "registry.example/ward:1.2.3".into(),
            enable_mtls: true,
            production: true,
        };
        let objects = render(&options).unwrap();
        let all = serde_json::to_string(&objects.iter().map(|o| &o.value).collect::<Vec<_>>()).unwrap();
        assert!(!all.contains("dapr-system"), "a dapr-system left in the rendered manifests");
        assert!(!all.contains("ghcr.io/ward-mesh"), "the default image left in the rendered manifests");
        let webhook = find(&objects, "MutatingWebhookConfiguration", "dapr-sidecar-injector");
        assert_eq!(
            webhook.value.pointer("/webhooks/0/namespaceSelector/matchExpressions/0/values").unwrap(),
            &serde_json::json!(["kube-system", "ward-cp"])
        );
        let injector = find(&objects, "Deployment", "dapr-sidecar-injector");
        let env = injector.value.pointer("/spec/template/spec/containers/0/env").unwrap().as_array().unwrap();
        let sidecar_image = env.iter().find(|v| v["name"] == "SIDECAR_IMAGE").unwrap();
        assert_eq!(sidecar_image["value"], "registry.example/ward:1.2.3");
        let audience =
            injector.value.pointer("/spec/template/spec/volumes/0/projected/sources/0/serviceAccountToken/audience");
        assert_eq!(audience.unwrap(), "spiffe://cluster.local/ns/ward-cp/dapr-sentry");
        let sentry = find(&objects, "Deployment", "dapr-sentry");
        let args = sentry.value.pointer("/spec/template/spec/containers/0/args").unwrap().as_array().unwrap();
        assert_eq!(args.last().unwrap(), "--production");
        assert!(!injector.value.to_string().contains("--production"));

        let dev = render(&InstallOptions { enable_mtls: false, ..InstallOptions::default() }).unwrap();
        let config = find(&dev, "Configuration", "daprsystem");
        assert_eq!(config.value.pointer("/spec/mtls/enabled").unwrap(), &Value::Bool(false));
        let sentry = find(&dev, "Deployment", "dapr-sentry");
        assert!(!sentry.value.to_string().contains("--production"));
    }

    #[test]
    fn bad_options_are_refused() {
        let with = |namespace: &str, image: &str| InstallOptions {
            namespace: namespace.into(),
            image: image.into(),
            ..InstallOptions::default()
        };
        for namespace in ["", "Dapr", "a_b", "-a", "a-", "kube-system", "x\n  evil: true", &"a".repeat(64)] {
            assert!(
                matches!(render(&with(namespace, "i:1")), Err(InstallError::InvalidNamespace { .. })),
                "{namespace:?}"
            );
        }
        for image in ["", "a b", "img\n- x"] {
            assert!(matches!(render(&with("ns", image)), Err(InstallError::InvalidImage { .. })), "{image:?}");
        }
        let prod_no_mtls = InstallOptions { production: true, enable_mtls: false, ..InstallOptions::default() };
        assert!(matches!(render(&prod_no_mtls), Err(InstallError::ProductionWithoutMtls)));
    }

    #[test]
    fn webhook_and_pods_are_hardened() {
        let objects = render(&InstallOptions::default()).unwrap();
        let webhook = &find(&objects, "MutatingWebhookConfiguration", "dapr-sidecar-injector").value["webhooks"][0];
        assert_eq!(webhook["failurePolicy"], "Fail");
        assert_eq!(webhook["sideEffects"], "None");
        assert_eq!(webhook["admissionReviewVersions"], serde_json::json!(["v1"]));
        assert_eq!(webhook["rules"][0]["operations"], serde_json::json!(["CREATE"]));
        assert_eq!(webhook["rules"][0]["resources"], serde_json::json!(["pods"]));
        assert_eq!(webhook["clientConfig"]["service"]["path"], "/mutate");
        for deployment in objects.iter().filter(|o| o.kind == "Deployment") {
            let pod = deployment.value.pointer("/spec/template/spec").unwrap();
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{}", deployment.name);
            for container in pod["containers"].as_array().unwrap() {
                let sc = &container["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", deployment.name);
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", deployment.name);
                assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{}", deployment.name);
                assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{}", deployment.name);
                assert!(container["resources"]["requests"].is_object(), "{}", deployment.name);
                assert!(container["readinessProbe"].is_object() && container["livenessProbe"].is_object());
                assert_eq!(container["command"], serde_json::json!(["/ward"]));
            }
        }
    }
}
