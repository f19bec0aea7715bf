//! Sentry's Kubernetes validator (Dapr's `KUBERNETES`), plus what Dapr lacks.
//!
//! A sidecar proves who it is with its **pod-bound** projected service-account token (audience: sentry's SPIFFE
//! ID). The cluster judges the token (TokenReview); then the pod it is bound to is fetched, because a TokenReview
//! answer is cached by the API server for about 10 s and says nothing about the pod's current state:
//!
//! - the token's namespace is the requested one;
//! - the pod exists, has the token's uid (a pod deleted and recreated under the same name is another pod), runs
//!   as the token's service account and is not being deleted;
//! - the requested app id is the pod's `dapr.io/app-id` annotation (else its name: Dapr's rule);
//! - the app id is not bound (`spec.ward.appIdBindings` of the control-plane Configuration) to other service
//!   accounts — Dapr has no such check: any pod that can set an annotation gets any app id of its namespace;
//! - control-plane identities (`dapr-operator`, `dapr-injector`, …) only in the control-plane namespace, only for
//!   the matching service account, in the control-plane trust domain.
//!
//! The trust domain of an app is its pod's `dapr.io/config` Configuration's `spec.accessControl.trustDomain`,
//! else `public` (Dapr's rule). What this module does not do: sign (ward-sentry does, after a grant).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, PostParams};
use sha2::{Digest, Sha256};
use ward_identity::TrustDomain;
use ward_sentry::{BootstrapRequest, CredentialError, Grant, NetworkValidator, ValidationFuture};

/// The annotation naming a pod's app id.
pub const APP_ID_ANNOTATION: &str = "dapr.io/app-id";
/// The annotation naming a pod's Configuration.
pub const CONFIG_ANNOTATION: &str = "dapr.io/config";
/// The Configuration read (only) from the control-plane namespace.
pub const CONTROL_PLANE_CONFIGURATION: &str = "daprsystem";

const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// Control-plane app ids and the service account that may hold each (the names `deploy/kubernetes` uses).
const CONTROL_PLANE: &[(&str, &str)] = &[
    ("dapr-operator", "dapr-operator"),
    ("dapr-injector", "dapr-sidecar-injector"),
    ("dapr-placement", "dapr-placement"),
    ("dapr-scheduler", "dapr-scheduler"),
];

/// Who may hold which app id: `(namespace, app id)` → service accounts. Empty: nothing is bound.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppIdBindings(HashMap<(String, String), Vec<String>>);

impl AppIdBindings {
    pub fn from_config(bindings: &[ward_config::AppIdBinding]) -> Self {
        Self(bindings.iter().map(|b| ((b.namespace.clone(), b.app_id.clone()), b.service_accounts.clone())).collect())
    }

    /// `None`: the app id is not bound (any service account); `Some(accounts)`: only those.
    pub fn accounts(&self, namespace: &str, app_id: &str) -> Option<&[String]> {
        self.0.get(&(namespace.to_owned(), app_id.to_owned())).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct PodValidatorConfig {
    /// sentry's SPIFFE ID: the audience a sidecar's token must carry.
    pub audience: String,
    pub control_plane_namespace: String,
    pub control_plane_trust_domain: TrustDomain,
    /// For the injector's webhook certificate (`dapr-sidecar-injector.<ns>.svc.<cluster domain>`).
    pub cluster_domain: String,
    /// Production mode: an app id without a binding is still issued (drop-in) but warned about.
    pub production: bool,
    /// How long a successful TokenReview is reused for the same token (0: ask every time). The pod is fetched
    /// on every request regardless, so a deleted pod is refused at once.
    pub review_cache: Duration,
}

/// The Kubernetes validator. Cheap to clone.
#[derive(Clone)]
pub struct PodValidator {
    client: kube::Client,
    config: Arc<PodValidatorConfig>,
    bindings: Arc<ArcSwap<AppIdBindings>>,
    reviews: Arc<std::sync::Mutex<ReviewCache>>,
}

impl std::fmt::Debug for PodValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodValidator").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Successful reviews by SHA-256 of the token, with when they were made.
type ReviewCache = HashMap<[u8; 32], (Instant, ReviewedUser)>;

/// What TokenReview said about a token.
#[derive(Debug, Clone)]
struct ReviewedUser {
    namespace: String,
    service_account: String,
    pod_name: String,
    pod_uid: String,
}

fn refused(message: impl Into<String>) -> CredentialError {
    CredentialError::Refused(message.into())
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> CredentialError {
    CredentialError::Unavailable(format!("{what}: {err}"))
}

impl PodValidator {
    pub fn new(client: kube::Client, config: PodValidatorConfig, bindings: Arc<ArcSwap<AppIdBindings>>) -> Self {
        Self { client, config: Arc::new(config), bindings, reviews: Arc::default() }
    }

    pub async fn check(&self, request: BootstrapRequest<'_>) -> Result<Grant, CredentialError> {
        if request.token.is_empty() {
            return Err(CredentialError::MissingToken);
        }
        let user = self.review(request.token).await?;
        if user.namespace != request.namespace {
            return Err(refused(format!(
                "the token belongs to namespace {:?}, the request names {:?}",
                user.namespace, request.namespace
            )));
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &user.namespace);
        let pod =
            pods.get_opt(&user.pod_name).await.map_err(|err| unavailable("reading the token's pod", err))?.ok_or_else(
                || refused(format!("the token's pod {}/{} does not exist", user.namespace, user.pod_name)),
            )?;
        let meta = &pod.metadata;
        if meta.uid.as_deref() != Some(user.pod_uid.as_str()) {
            return Err(refused(format!(
                "the token was issued for another pod named {}/{} (uid differs: deleted and recreated)",
                user.namespace, user.pod_name
            )));
        }
        if meta.deletion_timestamp.is_some() {
            return Err(refused(format!("the pod {}/{} is being deleted", user.namespace, user.pod_name)));
        }
        let pod_account = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
        if pod_account != user.service_account {
            return Err(refused(format!(
                "the pod runs as service account {pod_account:?}, the token is {:?}'s",
                user.service_account
            )));
        }
        let annotations = meta.annotations.clone().unwrap_or_default();
        let pod_app_id = annotations.get(APP_ID_ANNOTATION).map(String::as_str).unwrap_or(&user.pod_name);

        let control_plane = CONTROL_PLANE.iter().find(|(id, _)| *id == request.app_id);
        if user.namespace == self.config.control_plane_namespace || control_plane.is_some() {
            return self.control_plane_grant(request, &user, control_plane.copied());
        }
        if pod_app_id != request.app_id {
            return Err(refused(format!(
                "the pod's app id is {pod_app_id:?} ({APP_ID_ANNOTATION}), the request asks for {:?}",
                request.app_id
            )));
        }
        match self.bindings.load().accounts(request.namespace, request.app_id) {
            Some(accounts) if !accounts.contains(&user.service_account) => {
                return Err(refused(format!(
                    "app id {}/{} is bound to service accounts {accounts:?} (spec.ward.appIdBindings), not {:?}",
                    request.namespace, request.app_id, user.service_account
                )));
            }
            Some(_) => {}
            None if self.config.production => tracing::warn!(
                namespace = request.namespace, app_id = request.app_id, service_account = %user.service_account,
                "app id has no binding (spec.ward.appIdBindings): any pod of the namespace may claim it"
            ),
            None => {}
        }
        let trust_domain = self.trust_domain(&user.namespace, annotations.get(CONFIG_ANNOTATION)).await?;
        Ok(Grant { trust_domain, dns_names: Vec::new() })
    }

    fn control_plane_grant(
        &self,
        request: BootstrapRequest<'_>,
        user: &ReviewedUser,
        control_plane: Option<(&str, &str)>,
    ) -> Result<Grant, CredentialError> {
        let Some((app_id, account)) = control_plane else {
            return Err(refused(format!(
                "only control-plane identities are issued in the control-plane namespace {:?}",
                self.config.control_plane_namespace
            )));
        };
        if user.namespace != self.config.control_plane_namespace {
            return Err(refused(format!("{app_id} is a control-plane identity: not issued outside the control plane")));
        }
        if user.service_account != account {
            return Err(refused(format!("{app_id} is issued only to service account {account:?}")));
        }
        let dns_names = if app_id == "dapr-injector" {
            let service = format!("dapr-sidecar-injector.{}.svc", request.namespace);
            vec![format!("{service}.{}", self.config.cluster_domain), service]
        } else {
            Vec::new()
        };
        Ok(Grant { trust_domain: self.config.control_plane_trust_domain.clone(), dns_names })
    }

    async fn review(&self, token: &str) -> Result<ReviewedUser, CredentialError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !self.config.review_cache.is_zero() {
            let reviews = self.reviews.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, user)) = reviews.get(&key)
                && at.elapsed() < self.config.review_cache
            {
                return Ok(user.clone());
            }
        }
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.config.audience.clone()]),
            },
            ..Default::default()
        };
        let status = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|err| unavailable("TokenReview", err))?
            .status
            .ok_or_else(|| unavailable("TokenReview", "no status in the answer"))?;
        if status.authenticated != Some(true) {
            // The API server's reason (expired, wrong audience, bad signature, object deleted) is safe to repeat:
            // it never contains the token.
            let why = status.error.unwrap_or_else(|| "not authenticated".to_owned());
            return Err(refused(format!("the token is not valid for audience {}: {why}", self.config.audience)));
        }
        // A server that does not support audiences answers without them: that is not our audience.
        if !status.audiences.unwrap_or_default().iter().any(|a| *a == self.config.audience) {
            return Err(refused(format!("the token is not valid for audience {}", self.config.audience)));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let Some((namespace, service_account)) =
            username.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':'))
        else {
            return Err(refused("the token is not a service-account token"));
        };
        let extra = user.extra.unwrap_or_default();
        let first = |key: &str| extra.get(key).and_then(|values| values.first()).cloned();
        let (Some(pod_name), Some(pod_uid)) = (first(POD_NAME_EXTRA), first(POD_UID_EXTRA)) else {
            return Err(refused(
                "the token is not bound to a pod: a projected service-account token (audience sentry) is required",
            ));
        };
        let reviewed = ReviewedUser {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            pod_name,
            pod_uid,
        };
        if !self.config.review_cache.is_zero() {
            let mut reviews = self.reviews.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: entries older than the cache time are dropped whenever a new one is added.
            let ttl = self.config.review_cache;
            reviews.retain(|_, (at, _)| at.elapsed() < ttl);
            reviews.insert(key, (Instant::now(), reviewed.clone()));
        }
        Ok(reviewed)
    }

    /// Dapr's rule: the pod's Configuration's `spec.accessControl.trustDomain`, else `public`. A Configuration
    /// the pod names that does not exist is refused (Dapr fails the request too): fail closed.
    async fn trust_domain(&self, namespace: &str, config: Option<&String>) -> Result<TrustDomain, CredentialError> {
        let public = || TrustDomain::new("public").map_err(|err| unavailable("trust domain", err));
        let Some(name) = config.filter(|n| !n.is_empty()) else { return public() };
        let configurations: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &crate::dapr::configuration());
        let object = configurations
            .get_opt(name)
            .await
            .map_err(|err| unavailable("reading the pod's Configuration", err))?
            .ok_or_else(|| {
                refused(format!("the pod's Configuration {namespace}/{name} ({CONFIG_ANNOTATION}) does not exist"))
            })?;
        match object.data.pointer("/spec/accessControl/trustDomain").and_then(|v| v.as_str()) {
            None | Some("") => public(),
            Some(domain) => TrustDomain::new(domain).map_err(|err| {
                refused(format!("Configuration {namespace}/{name}: spec.accessControl.trustDomain: {err}"))
            }),
        }
    }
}

impl NetworkValidator for PodValidator {
    fn validate<'a>(&'a self, request: BootstrapRequest<'a>) -> ValidationFuture<'a> {
        Box::pin(self.check(request))
    }
}

/// Reads `spec.ward.appIdBindings` (and the rest, through ward's Configuration parser) of the control-plane
/// Configuration `name` in `namespace` — only there: a Configuration elsewhere cannot grant app ids.
pub async fn read_control_plane_configuration(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<ward_config::Configuration>, String> {
    let configurations: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &crate::dapr::configuration());
    let object = match configurations.get_opt(name).await {
        Ok(Some(object)) => object,
        Ok(None) => return Ok(None),
        // A 404 that is not an object's: the resource type itself is missing.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return Err("the dapr.io CRDs are not installed (no configurations.dapr.io): run `ward init -k`, or \
                        apply deploy/kubernetes/10-crds.yaml"
                .to_owned());
        }
        Err(err) => return Err(err.to_string()),
    };
    parse_configuration(namespace, name, &object).map(Some)
}

fn parse_configuration(
    namespace: &str,
    name: &str,
    object: &DynamicObject,
) -> Result<ward_config::Configuration, String> {
    // The same parser as for files: JSON is YAML. Only the fields a user wrote are passed on (no status or
    // server-managed metadata, which the strict parser would refuse).
    let document = serde_json::json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": object.data.get("spec").cloned().unwrap_or_else(|| serde_json::json!({})),
    });
    let source = std::path::PathBuf::from(format!("configurations.dapr.io/{namespace}/{name}"));
    ward_config::configuration_from_yaml(&source, document.to_string().as_bytes()).map_err(|err| err.to_string())
}

/// Keeps `bindings` equal to the control-plane Configuration's `spec.ward.appIdBindings`: watched, so a change
/// applies within seconds. A Configuration that fails to parse keeps the previous bindings (logged); a deleted one
/// clears them.
pub async fn watch_bindings(
    client: kube::Client,
    namespace: String,
    name: String,
    bindings: Arc<ArcSwap<AppIdBindings>>,
) {
    use kube::runtime::watcher;
    let configurations: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &crate::dapr::configuration());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(configurations, config));
    // A relist that does not contain the object means it was deleted while the watch was down.
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitDone) if !listed => {
                bindings.store(Arc::new(AppIdBindings::default()));
            }
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                listed = true;
                match parse_configuration(&namespace, &name, &object) {
                    Ok(configuration) => {
                        let next = AppIdBindings::from_config(&configuration.ward.app_id_bindings);
                        tracing::info!(bindings = next.len(), "app-id bindings loaded from {namespace}/{name}");
                        bindings.store(Arc::new(next));
                    }
                    Err(err) => tracing::error!("{err}: keeping the previous app-id bindings"),
                }
            }
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!("control-plane Configuration {namespace}/{name} deleted: no app-id bindings");
                bindings.store(Arc::new(AppIdBindings::default()));
            }
            Ok(watcher::Event::InitDone) => {}
            Err(err) => {
                tracing::warn!("watching {namespace}/{name}: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// `ward policy lint -k`: what the app-id bindings leave open or will refuse, for every pod annotated
/// `dapr.io/enabled: "true"` in the cluster. One line per finding, sorted; empty when all is bound and consistent.
pub async fn lint_app_id_bindings(
    client: &kube::Client,
    control_plane_namespace: &str,
    config_name: &str,
) -> Result<Vec<String>, String> {
    let configuration = read_control_plane_configuration(client, control_plane_namespace, config_name).await?;
    let bindings = AppIdBindings::from_config(
        configuration.as_ref().map(|c| c.ward.app_id_bindings.as_slice()).unwrap_or_default(),
    );
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods.list(&Default::default()).await.map_err(|err| format!("listing pods: {err}"))?;
    let mut findings = std::collections::BTreeSet::new();
    for pod in list.items {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let enabled =
            annotations.get(crate::trust_bundle::ENABLED_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let (Some(namespace), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
            continue;
        };
        if !enabled || namespace == control_plane_namespace {
            continue;
        }
        let app_id = annotations.get(APP_ID_ANNOTATION).map(String::as_str).unwrap_or(name);
        let account = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
        match bindings.accounts(namespace, app_id) {
            None => findings.insert(format!(
                "app id {namespace}/{app_id} (pod {name}) has no spec.ward.appIdBindings entry in \
                 {control_plane_namespace}/{config_name}: any pod of {namespace} may claim it"
            )),
            Some(accounts) if !accounts.iter().any(|a| a == account) => findings.insert(format!(
                "pod {namespace}/{name} runs as {account:?} but app id {app_id} is bound to {accounts:?}: sentry \
                 will refuse its certificate"
            )),
            Some(_) => false,
        };
    }
    Ok(findings.into_iter().collect())
}
