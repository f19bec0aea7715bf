//! `kind: Subscription` (declarative pub/sub subscriptions), `dapr.io/v1alpha1` (`spec.route`) and
//! `dapr.io/v2alpha1` (`spec.routes.rules[]` + `spec.routes.default`), normalised into one [`Subscription`].
//!
//! Owns the shape and the required fields. Does not check that the pub/sub component exists, evaluate `match`
//! expressions, or apply topic scoping (`publishingScopes`/`subscriptionScopes` are component metadata).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ConfigError, ResourceKind};
use crate::meta::{Header, RawObjectMeta, check_resource_name};
use crate::yaml::{Document, check_key_case, child, scalar_string};

/// The apiVersions Dapr defines for subscriptions.
pub const SUBSCRIPTION_API_VERSIONS: [&str; 2] = ["dapr.io/v1alpha1", "dapr.io/v2alpha1"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSubscription {
    #[serde(default)]
    metadata: RawObjectMeta,
    #[serde(default)]
    spec: RawSubscriptionSpec,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSubscriptionSpec {
    /// Dapr's YAML key is all lowercase.
    #[serde(default, rename = "pubsubname")]
    pubsub_name: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    /// v1alpha1.
    #[serde(default)]
    route: Option<String>,
    /// v2alpha1.
    #[serde(default)]
    routes: Option<RawRoutes>,
    #[serde(default)]
    dead_letter_topic: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoutes {
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    #[serde(default, rename = "match")]
    match_: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

/// A checked `kind: Subscription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub name: String,
    pub namespace: Option<String>,
    /// `dapr.io/v1alpha1` or `dapr.io/v2alpha1`.
    pub api_version: String,
    /// `spec.pubsubname`.
    pub pubsub_name: String,
    pub topic: String,
    /// Routing rules in file order; empty for v1alpha1.
    pub rules: Vec<RouteRule>,
    /// `spec.route` (v1alpha1) or `spec.routes.default` (v2alpha1).
    pub default_route: Option<String>,
    pub dead_letter_topic: Option<String>,
    /// `spec.metadata` (e.g. `rawPayload: "true"`), values in their string form.
    pub metadata: BTreeMap<String, String>,
    /// Top-level `scopes` (empty = every app).
    pub scopes: Vec<String>,
    pub source: PathBuf,
}

/// One `spec.routes.rules[]` entry: deliver to `path` when the CEL expression `match` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub match_expr: String,
    pub path: String,
}

impl Subscription {
    /// Whether the app `app_id` receives this subscription (empty scopes = every app).
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app_id)
    }

    pub(crate) fn from_document(path: &Path, doc: Document, header: &Header) -> Result<Subscription, ConfigError> {
        let resource = header.resource_id(ResourceKind::Subscription, doc.index);
        header.check_api_version(path, &resource, &SUBSCRIPTION_API_VERSIONS)?;
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            resource: resource.clone(),
            field: field.to_string(),
            message,
        };
        let spec = child(Some(&doc.value), "spec");
        check_key_case(child(Some(&doc.value), "metadata"), "metadata", &["name", "namespace"])
            .and_then(|()| {
                check_key_case(
                    spec,
                    "spec",
                    &["pubsubname", "topic", "route", "routes", "deadLetterTopic", "metadata", "bulkSubscribe"],
                )
            })
            .and_then(|()| check_key_case(child(spec, "routes"), "spec.routes", &["rules", "default"]))
            .map_err(|(f, m)| invalid(&f, m))?;
        let raw: RawSubscription = crate::yaml::deserialize(doc.value, path, &resource)?;

        let name = check_resource_name(raw.metadata.name.as_deref()).map_err(|m| invalid("metadata.name", m))?;
        let required = |value: Option<String>, field: &str| {
            value.filter(|v| !v.trim().is_empty()).ok_or_else(|| invalid(field, "is required".to_string()))
        };
        let pubsub_name = required(raw.spec.pubsub_name, "spec.pubsubname")?;
        let topic = required(raw.spec.topic, "spec.topic")?;

        let routes = raw.spec.routes.unwrap_or_default();
        let mut rules = Vec::with_capacity(routes.rules.len());
        for (i, rule) in routes.rules.into_iter().enumerate() {
            let at = format!("spec.routes.rules[{i}]");
            let path = required(rule.path, &format!("{at}.path"))?;
            let match_expr = required(rule.match_, &format!("{at}.match"))?;
            rules.push(RouteRule { match_expr, path });
        }
        let route = raw.spec.route.filter(|r| !r.is_empty());
        let default = routes.default.filter(|r| !r.is_empty());
        if route.is_some() && default.is_some() {
            return Err(invalid("spec.route", "set either spec.route or spec.routes.default, not both".to_string()));
        }
        let default_route = route.or(default);
        if default_route.is_none() && rules.is_empty() {
            let field =
                if header.api_version.as_deref() == Some("dapr.io/v1alpha1") { "spec.route" } else { "spec.routes" };
            return Err(invalid(field, "a subscription needs a route (spec.route or spec.routes)".to_string()));
        }

        let scopes = raw.scopes.unwrap_or_default();
        for (i, scope) in scopes.iter().enumerate() {
            if scope.trim().is_empty() {
                return Err(invalid(&format!("scopes[{i}]"), "an app-id must not be empty".to_string()));
            }
        }

        Ok(Subscription {
            name: name.to_string(),
            namespace: raw.metadata.namespace.filter(|ns| !ns.is_empty()),
            api_version: header.api_version.clone().unwrap_or_default(),
            pubsub_name,
            topic,
            rules,
            default_route,
            dead_letter_topic: raw.spec.dead_letter_topic.filter(|t| !t.is_empty()),
            metadata: raw
                .spec
                .metadata
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| (k.clone(), scalar_string(v)))
                .collect(),
            scopes,
            source: path.to_path_buf(),
        })
    }
}
