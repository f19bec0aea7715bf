//! Where subscriptions come from, normalised into one [`SubscriptionSpec`]: declarative `Subscription` resources
//! (`dapr.io/v1alpha1` and `v2alpha1`, with `scopes`, loaded by the component registry), programmatic ones (the
//! app's `GET /dapr/subscribe`, or `AppCallback/ListTopicSubscriptions` for a gRPC app, called with the app token
//! once the app listens), and streaming ones (`SubscribeTopicEventsAlpha1`, `grpc_api`).
//!
//! Does not check topic scopes or start consuming (`delivery.rs` does both, so every form is judged the same way).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::routing::Routes;
use crate::grpc_api::pb::runtime as rt;
use crate::inbound::app_channel::AppChannel;

/// `metadata.allowedPublishers` of a subscription: the app ids whose verified events it accepts (beyond Dapr).
pub(crate) const ALLOWED_PUBLISHERS: &str = "allowedPublishers";

/// Where a subscription was declared (for logs, audit and metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    Declarative { name: String },
    Programmatic,
    Streaming,
}

impl Origin {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Origin::Declarative { .. } => "DECLARATIVE",
            Origin::Programmatic => "PROGRAMMATIC",
            Origin::Streaming => "STREAMING",
        }
    }
}

/// One subscription, whatever its form.
#[derive(Debug)]
pub(crate) struct SubscriptionSpec {
    pub(crate) pubsub: String,
    pub(crate) topic: String,
    pub(crate) routes: Routes,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) origin: Origin,
    /// `None`: any verified publisher.
    pub(crate) allowed_publishers: Option<Vec<String>>,
    /// The rules as declared, for `/v1.0/metadata`.
    pub(crate) declared_rules: Vec<(String, String)>,
    /// A streaming subscription's client: events go there instead of to the app channel.
    pub(crate) stream: Option<Arc<super::delivery::StreamSink>>,
}

impl SubscriptionSpec {
    pub(crate) fn new(
        pubsub: String,
        topic: String,
        rules: Vec<(String, String)>,
        default: Option<String>,
        dead_letter_topic: Option<String>,
        metadata: BTreeMap<String, String>,
        origin: Origin,
    ) -> Result<SubscriptionSpec, String> {
        let routes = Routes::compile(&rules, default)?;
        let allowed_publishers = metadata.get(ALLOWED_PUBLISHERS).map(|list| {
            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>()
        });
        Ok(SubscriptionSpec {
            pubsub,
            topic,
            routes,
            dead_letter_topic: dead_letter_topic.filter(|t| !t.is_empty()),
            metadata,
            origin,
            allowed_publishers,
            declared_rules: rules,
            stream: None,
        })
    }

    /// Whether the raw message bytes are the payload (`rawPayload: "true"`), not a CloudEvent.
    pub(crate) fn raw_payload(&self) -> bool {
        self.metadata.get("rawPayload").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// The declarative subscriptions of the registry.
pub(crate) fn declarative(subscriptions: &[ward_config::Subscription]) -> Vec<Result<SubscriptionSpec, String>> {
    subscriptions
        .iter()
        .map(|s| {
            let rules = s.rules.iter().map(|r| (r.match_expr.clone(), r.path.clone())).collect();
            SubscriptionSpec::new(
                s.pubsub_name.clone(),
                s.topic.clone(),
                rules,
                s.default_route.clone(),
                s.dead_letter_topic.clone(),
                s.metadata.clone(),
                Origin::Declarative { name: s.name.clone() },
            )
            .map_err(|err| format!("{}: Subscription {:?}: spec.{err}", s.source.display(), s.name))
        })
        .collect()
}

/// One entry of `GET /dapr/subscribe` (Dapr's `SubscriptionJSON`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProgrammaticJson {
    #[serde(rename = "pubsubname")]
    pubsub_name: String,
    topic: String,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    routes: Option<RoutesJson>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    dead_letter_topic: Option<String>,
}

#[derive(Deserialize, Default)]
struct RoutesJson {
    #[serde(default)]
    rules: Vec<RuleJson>,
    #[serde(default)]
    default: Option<String>,
}

#[derive(Deserialize)]
struct RuleJson {
    #[serde(rename = "match")]
    match_expr: String,
    path: String,
}

/// Why the app's subscriptions could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProgrammaticError {
    #[error("GET /dapr/subscribe failed: {0}")]
    Http(String),
    #[error("GET /dapr/subscribe answered {0}")]
    Status(http::StatusCode),
    #[error("GET /dapr/subscribe is not a JSON list of subscriptions: {0}")]
    Json(String),
    #[error("ListTopicSubscriptions failed: {0}")]
    Grpc(String),
}

/// The app's programmatic subscriptions. An HTTP app without the endpoint (404) or a gRPC app that does not
/// implement the call has none.
pub(crate) async fn programmatic(
    channel: &AppChannel,
    app_token: &ward_gate::AppToken,
) -> Result<Vec<Result<SubscriptionSpec, String>>, ProgrammaticError> {
    let mut headers = http::HeaderMap::new();
    app_token.apply(&mut headers);
    if let Some(answer) = channel.http_get("/dapr/subscribe", headers.clone(), 1 << 20).await {
        let (status, body) = answer.map_err(ProgrammaticError::Http)?;
        if status == http::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(ProgrammaticError::Status(status));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let list: Vec<ProgrammaticJson> =
            serde_json::from_slice(&body).map_err(|err| ProgrammaticError::Json(err.to_string()))?;
        return Ok(list
            .into_iter()
            .map(|s| {
                let routes = s.routes.unwrap_or_default();
                let rules = routes.rules.into_iter().map(|r| (r.match_expr, r.path)).collect();
                let default = s.route.filter(|r| !r.is_empty()).or(routes.default);
                SubscriptionSpec::new(
                    s.pubsub_name,
                    s.topic,
                    rules,
                    default,
                    s.dead_letter_topic,
                    s.metadata,
                    Origin::Programmatic,
                )
            })
            .collect());
    }
    let Some(mut callback) = channel.callback() else { return Ok(Vec::new()) };
    let mut request = tonic::Request::new(());
    if let Some(token) = headers.get(crate::headers::API_TOKEN).and_then(|v| v.to_str().ok())
        && let Ok(value) = token.parse()
    {
        request.metadata_mut().insert(crate::headers::API_TOKEN, value);
    }
    let list: rt::ListTopicSubscriptionsResponse = match callback.list_topic_subscriptions(request).await {
        Ok(answer) => answer.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(Vec::new()),
        Err(status) => return Err(ProgrammaticError::Grpc(status.message().to_owned())),
    };
    Ok(list
        .subscriptions
        .into_iter()
        .map(|s| {
            let (rules, default) = match s.routes {
                Some(routes) => (routes.rules.into_iter().map(|r| (r.r#match, r.path)).collect(), Some(routes.default)),
                None => (Vec::new(), None),
            };
            // A gRPC subscription without routes is delivered to OnTopicEvent with an empty path.
            let default = default.filter(|d| !d.is_empty()).or_else(|| Some("/".to_owned()));
            SubscriptionSpec::new(
                s.pubsub_name,
                s.topic,
                rules,
                default,
                Some(s.dead_letter_topic),
                s.metadata.into_iter().collect(),
                Origin::Programmatic,
            )
        })
        .collect())
}

/// What `/v1.0/metadata` shows of the active subscriptions.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionInfo {
    pub(crate) pubsubname: String,
    pub(crate) topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) rules: Vec<RuleInfo>,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RuleInfo {
    #[serde(rename = "match")]
    pub(crate) match_expr: String,
    pub(crate) path: String,
}

impl SubscriptionInfo {
    pub(crate) fn of(spec: &Arc<SubscriptionSpec>) -> SubscriptionInfo {
        let mut rules: Vec<RuleInfo> =
            spec.declared_rules.iter().map(|(m, p)| RuleInfo { match_expr: m.clone(), path: p.clone() }).collect();
        if let Some(default) = spec.routes.paths().last().filter(|_| spec.routes.paths().count() > rules.len()) {
            rules.push(RuleInfo { match_expr: String::new(), path: default.to_owned() });
        }
        SubscriptionInfo {
            pubsubname: spec.pubsub.clone(),
            topic: spec.topic.clone(),
            dead_letter_topic: spec.dead_letter_topic.clone(),
            metadata: spec.metadata.clone(),
            rules,
            kind: spec.origin.kind(),
        }
    }
}
