//! API allow/deny lists: Dapr's `spec.api` (DAPR-FACTS §5).
//!
//! Owns: validating the lists and answering "is this Dapr API reachable" for a classified public HTTP request
//! ([`ApiAllowList::allows_http`] over [`crate::routing::classify_public`], so invocation through `dapr-app-id` is the
//! `invoke` API at any path) or a gRPC full method (`/dapr.proto.runtime.v1.Dapr/GetState`).
//!
//! Does not own: routing, or the answer for a refused API (HTTP 404 / gRPC `Unimplemented` in Dapr).
//!
//! HTTP matching follows `pkg/api/http/endpoints/endpoint.go`: first the endpoint group (`v1/state`, with
//! `v1.0` ↔ `v1`, `v1.0-alpha1` ↔ `v1alpha1`, …), then Dapr's legacy prefix match of `<version>/<name>`.
//! gRPC matching follows `pkg/api/grpc/endpoints.go`: `<name>.<version>` selects a fixed method list, and only
//! methods under `/dapr.proto.runtime.` are subject to the lists. Deviations, all failing closed:
//! - Dapr prefix-matches rules against route *templates*; ward has only the request path, so a deny rule is
//!   prefix-matched against the whole path (denies at least what Dapr denies) and an allow rule only against
//!   `<version>/<api name>` (allows at most what Dapr allows);
//! - a path with `.` or `..` segments is refused whenever a list is configured; empty segments are ignored;
//! - a gRPC allow list counts as present as soon as it has one gRPC rule, even if no rule names a known API; Dapr
//!   then ignores the list and allows everything;
//! - `protocol` must be `http`, `grpc` (any case) or empty (= `http`), and `name` must be set.

use std::collections::HashSet;

use crate::routing::{PublicApi, PublicRequest, SecretsRoute, StateRoute, classify_public};
use crate::spec::{ApiRuleSpec, ApiSpec};

/// Why a `spec.api` section was refused. `list` is `allowed` or `denied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiListError {
    #[error("api.{list}[{index}].protocol: unknown protocol {value:?} (expected http or grpc)")]
    InvalidProtocol { list: &'static str, index: usize, value: String },
    #[error("api.{list}[{index}].name: required")]
    MissingName { list: &'static str, index: usize },
}

/// A compiled `spec.api`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiAllowList {
    /// `<version>/<name>` keys, as Dapr builds them.
    http_allowed: Vec<String>,
    http_denied: Vec<String>,
    /// `None`: no gRPC allow rule, so every runtime method not denied is allowed.
    grpc_allowed: Option<HashSet<&'static str>>,
    grpc_denied: HashSet<&'static str>,
}

const RUNTIME_PREFIX: &str = "/dapr.proto.runtime.";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Grpc,
}

impl ApiAllowList {
    /// No lists: every API is allowed.
    pub fn allow_all() -> Self {
        Self::default()
    }

    pub fn compile(spec: &ApiSpec) -> Result<Self, ApiListError> {
        let mut out = Self::default();
        let allowed = classify("allowed", spec.allowed.as_deref().unwrap_or_default())?;
        let denied = classify("denied", spec.denied.as_deref().unwrap_or_default())?;
        for (protocol, rule) in allowed {
            match protocol {
                Protocol::Http => out.http_allowed.push(format!("{}/{}", rule.version, rule.name)),
                Protocol::Grpc => out.grpc_allowed.get_or_insert_default().extend(grpc_methods(rule)),
            }
        }
        for (protocol, rule) in denied {
            match protocol {
                Protocol::Http => out.http_denied.push(format!("{}/{}", rule.version, rule.name)),
                Protocol::Grpc => out.grpc_denied.extend(grpc_methods(rule)),
            }
        }
        Ok(out)
    }

    /// Whether the HTTP API at `path` (request path, no query, e.g. `/v1.0/state/mystore/key`) is enabled, judged on
    /// the path alone. Prefer [`ApiAllowList::allows_http`], which judges the API the router resolves (a
    /// `dapr-app-id` invocation at any path is the `invoke` API). The health endpoints, spelled exactly, are
    /// always enabled.
    pub fn is_http_allowed(&self, path: &str) -> bool {
        if self.http_allowed.is_empty() && self.http_denied.is_empty() {
            return true;
        }
        if is_health_path(path) {
            return true;
        }
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        if segments.clone().any(|s| s == "." || s == "..") {
            return false;
        }
        let version = segments.next().unwrap_or_default();
        let name = segments.next().unwrap_or_default();
        let full: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.allows_api(version, name, &full.join("/"))
    }

    /// Whether any HTTP rule is configured (without one every HTTP API is allowed, and callers can skip
    /// classifying the request).
    pub fn restricts_http(&self) -> bool {
        !(self.http_allowed.is_empty() && self.http_denied.is_empty())
    }

    /// Whether the classified public request may reach its API. The decision is made on the API the router resolves
    /// (issue 12 row 4): an invocation is the `invoke` API in both forms (`/v1.0/invoke/{id}/method/{m}` and any
    /// path with `dapr-app-id`), judged as the path `/v1.0/invoke/{id}/method/{m}` so that deep deny rules apply to
    /// both forms alike. Health is always allowed; a request that routes nowhere is refused whenever a list is
    /// configured (it is answered 404 either way).
    pub fn allows_http(&self, request: &PublicRequest<'_>) -> bool {
        if self.http_allowed.is_empty() && self.http_denied.is_empty() {
            return true;
        }
        let api = match request.api() {
            // The provenance JWKS is public key material every app needs to verify its tokens (issue 15); an
            // allow list that forgot it would switch layer four off, so it is never listed out (the token still
            // applies).
            Some(PublicApi::Healthz | PublicApi::Provenance) => return true,
            Some(api) => api,
            None => return false,
        };
        // The path the deny rules are prefix-matched against (Dapr matches route templates; this is at least as
        // strict, see the module doc).
        let full = match request {
            PublicRequest::State(route) => match *route {
                StateRoute::Save { store } => format!("v1.0/state/{store}"),
                StateRoute::BulkGet { store } => format!("v1.0/state/{store}/bulk"),
                StateRoute::Transaction { store } => format!("v1.0/state/{store}/transaction"),
                StateRoute::Get { store, key } | StateRoute::Delete { store, key } => {
                    format!("v1.0/state/{store}/{key}")
                }
            },
            PublicRequest::Secrets(route) => match *route {
                SecretsRoute::Bulk { store } => format!("v1.0/secrets/{store}/bulk"),
                SecretsRoute::Get { store, name } => format!("v1.0/secrets/{store}/{name}"),
            },
            PublicRequest::Invoke { target, raw_method, .. } => format!("v1.0/invoke/{target}/method/{raw_method}"),
            _ => format!("v1.0/{}", api.name()),
        };
        self.allows_api("v1.0", api.name(), &full)
    }

    /// The list decision for API `name` at `version`, with `full` (segments joined by `/`, no leading `/`) for the
    /// legacy prefix match of deny rules.
    fn allows_api(&self, version: &str, name: &str, full: &str) -> bool {
        let group = group_key(version, name);
        if self.http_denied.iter().any(|key| group.is_some_and(|g| g.matches(key)) || full.starts_with(key.as_str())) {
            return false;
        }
        if self.http_allowed.is_empty() {
            return true;
        }
        self.http_allowed
            .iter()
            .any(|key| group.is_some_and(|g| g.matches(key)) || is_prefix_of_pair(key, version, name))
    }

    /// Whether the gRPC method `full_method` (`/package.Service/Method`) is enabled. Methods outside the Dapr
    /// runtime API (for example proxied app calls) are never restricted here.
    pub fn is_grpc_allowed(&self, full_method: &str) -> bool {
        if !full_method.starts_with(RUNTIME_PREFIX) {
            return true;
        }
        if self.grpc_denied.contains(full_method) {
            return false;
        }
        self.grpc_allowed.as_ref().is_none_or(|allowed| allowed.contains(full_method))
    }
}

/// `GET /v1.0/healthz` and `GET /v1.0/healthz/outbound`, spelled exactly as routed (no slash trimming: issue 12
/// row 3), are exempt from the API lists. Same as [`crate::routing::is_token_exempt`].
pub fn is_always_allowed(method: &str, path: &str) -> bool {
    crate::routing::is_token_exempt(method, path)
}

fn is_health_path(path: &str) -> bool {
    matches!(classify_public("GET", path, None), PublicRequest::Healthz | PublicRequest::HealthzOutbound)
}

fn classify<'a>(
    list: &'static str,
    rules: &'a [ApiRuleSpec],
) -> Result<Vec<(Protocol, &'a ApiRuleSpec)>, ApiListError> {
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            if rule.name.is_empty() {
                return Err(ApiListError::MissingName { list, index });
            }
            let protocol = match rule.protocol.as_str() {
                "" => Protocol::Http,
                p if p.eq_ignore_ascii_case("http") => Protocol::Http,
                p if p.eq_ignore_ascii_case("grpc") => Protocol::Grpc,
                p => return Err(ApiListError::InvalidProtocol { list, index, value: p.to_owned() }),
            };
            Ok((protocol, rule))
        })
        .collect()
}

/// An endpoint group, e.g. `v1alpha1` + `state`.
#[derive(Clone, Copy)]
struct Group {
    version: &'static str,
    name: &'static str,
}

impl Group {
    /// Dapr's "new method": the rule key equals `<group version>/<group name>`.
    fn matches(self, key: &str) -> bool {
        key.strip_prefix(self.version).and_then(|rest| rest.strip_prefix('/')) == Some(self.name)
    }
}

fn group_key(version: &str, name: &str) -> Option<Group> {
    let version = match version {
        "v1.0" => "v1",
        "v1.0-alpha1" => "v1alpha1",
        "v1.0-alpha2" => "v1alpha2",
        "v1.0-beta1" => "v1beta1",
        _ => return None,
    };
    let name = match name {
        "invoke" => "invoke",
        "state" => "state",
        "publish" => "publish",
        "bindings" => "bindings",
        "secrets" => "secrets",
        "actors" => "actors",
        "metadata" => "metadata",
        "configuration" => "configuration",
        "lock" => "lock",
        "unlock" => "unlock",
        "crypto" => "crypto",
        "subtlecrypto" => "subtlecrypto",
        "workflows" => "workflows",
        "job" | "jobs" => "jobs",
        "conversation" => "conversation",
        "healthz" => "healthz",
        "shutdown" => "shutdown",
        _ => return None,
    };
    Some(Group { version, name })
}

/// Whether `key` is a prefix of `<version>/<name>`, without building that string.
fn is_prefix_of_pair(key: &str, version: &str, name: &str) -> bool {
    match key.strip_prefix(version) {
        Some(rest) => rest.is_empty() || rest.strip_prefix('/').is_some_and(|rest| name.starts_with(rest)),
        None => version.starts_with(key),
    }
}

fn grpc_methods(rule: &ApiRuleSpec) -> impl Iterator<Item = &'static str> {
    GRPC_ENDPOINTS
        .iter()
        .filter(|(name, version, _)| *name == rule.name && *version == rule.version)
        .flat_map(|(_, _, methods)| methods.iter().copied())
}

/// `pkg/api/grpc/endpoints.go`: `(name, version, full methods)`.
const GRPC_ENDPOINTS: &[(&str, &str, &[&str])] = &[
    ("invoke", "v1", &["/dapr.proto.runtime.v1.Dapr/InvokeService"]),
    (
        "state",
        "v1",
        &[
            "/dapr.proto.runtime.v1.Dapr/GetState",
            "/dapr.proto.runtime.v1.Dapr/GetBulkState",
            "/dapr.proto.runtime.v1.Dapr/SaveState",
            "/dapr.proto.runtime.v1.Dapr/DeleteState",
            "/dapr.proto.runtime.v1.Dapr/DeleteBulkState",
            "/dapr.proto.runtime.v1.Dapr/ExecuteStateTransaction",
        ],
    ),
    ("state", "v1alpha1", &["/dapr.proto.runtime.v1.Dapr/QueryStateAlpha1"]),
    ("publish", "v1", &["/dapr.proto.runtime.v1.Dapr/PublishEvent", "/dapr.proto.runtime.v1.Dapr/BulkPublishEvent"]),
    ("publish", "v1alpha1", &["/dapr.proto.runtime.v1.Dapr/BulkPublishEventAlpha1"]),
    ("bindings", "v1", &["/dapr.proto.runtime.v1.Dapr/InvokeBinding"]),
    ("secrets", "v1", &["/dapr.proto.runtime.v1.Dapr/GetSecret", "/dapr.proto.runtime.v1.Dapr/GetBulkSecret"]),
    (
        "actors",
        "v1",
        &[
            "/dapr.proto.runtime.v1.Dapr/RegisterActorTimer",
            "/dapr.proto.runtime.v1.Dapr/UnregisterActorTimer",
            "/dapr.proto.runtime.v1.Dapr/RegisterActorReminder",
            "/dapr.proto.runtime.v1.Dapr/GetActorReminder",
            "/dapr.proto.runtime.v1.Dapr/UnregisterActorReminder",
            "/dapr.proto.runtime.v1.Dapr/UnregisterActorRemindersByType",
            "/dapr.proto.runtime.v1.Dapr/ListActorReminders",
            "/dapr.proto.runtime.v1.Dapr/GetActorState",
            "/dapr.proto.runtime.v1.Dapr/ExecuteActorStateTransaction",
            "/dapr.proto.runtime.v1.Dapr/InvokeActor",
        ],
    ),
    ("actors", "v1alpha1", &["/dapr.proto.runtime.v1.Dapr/SubscribeActorEventsAlpha1"]),
    ("metadata", "v1", &["/dapr.proto.runtime.v1.Dapr/GetMetadata", "/dapr.proto.runtime.v1.Dapr/SetMetadata"]),
    (
        "configuration",
        "v1alpha1",
        &[
            "/dapr.proto.runtime.v1.Dapr/GetConfigurationAlpha1",
            "/dapr.proto.runtime.v1.Dapr/SubscribeConfigurationAlpha1",
            "/dapr.proto.runtime.v1.Dapr/UnsubscribeConfigurationAlpha1",
        ],
    ),
    (
        "configuration",
        "v1",
        &[
            "/dapr.proto.runtime.v1.Dapr/GetConfiguration",
            "/dapr.proto.runtime.v1.Dapr/SubscribeConfiguration",
            "/dapr.proto.runtime.v1.Dapr/UnsubscribeConfiguration",
        ],
    ),
    ("lock", "v1alpha1", &["/dapr.proto.runtime.v1.Dapr/TryLockAlpha1"]),
    ("unlock", "v1alpha1", &["/dapr.proto.runtime.v1.Dapr/UnlockAlpha1"]),
    (
        "subtlecrypto",
        "v1alpha1",
        &[
            "/dapr.proto.runtime.v1.Dapr/SubtleGetKeyAlpha1",
            "/dapr.proto.runtime.v1.Dapr/SubtleEncryptAlpha1",
            "/dapr.proto.runtime.v1.Dapr/SubtleDecryptAlpha1",
            "/dapr.proto.runtime.v1.Dapr/SubtleSignAlpha1",
            "/dapr.proto.runtime.v1.Dapr/SubtleVerifyAlpha1",
            "/dapr.proto.runtime.v1.Dapr/SubtleWrapKeyAlpha1",
            "/dapr.proto.runtime.v1.Dapr/SubtleUnwrapKeyAlpha1",
        ],
    ),
    ("crypto", "v1alpha1", &["/dapr.proto.runtime.v1.Dapr/EncryptAlpha1", "/dapr.proto.runtime.v1.Dapr/DecryptAlpha1"]),
    (
        "workflows",
        "v1alpha1",
        &[
            "/dapr.proto.runtime.v1.Dapr/StartWorkflowAlpha1",
            "/dapr.proto.runtime.v1.Dapr/GetWorkflowAlpha1",
            "/dapr.proto.runtime.v1.Dapr/TerminateWorkflowAlpha1",
            "/dapr.proto.runtime.v1.Dapr/RaiseEventWorkflowAlpha1",
            "/dapr.proto.runtime.v1.Dapr/PurgeWorkflowAlpha1",
            "/dapr.proto.runtime.v1.Dapr/PauseWorkflowAlpha1",
            "/dapr.proto.runtime.v1.Dapr/ResumeWorkflowAlpha1",
        ],
    ),
    (
        "workflows",
        "v1beta1",
        &[
            "/dapr.proto.runtime.v1.Dapr/StartWorkflowBeta1",
            "/dapr.proto.runtime.v1.Dapr/GetWorkflowBeta1",
            "/dapr.proto.runtime.v1.Dapr/TerminateWorkflowBeta1",
            "/dapr.proto.runtime.v1.Dapr/RaiseEventWorkflowBeta1",
            "/dapr.proto.runtime.v1.Dapr/PurgeWorkflowBeta1",
            "/dapr.proto.runtime.v1.Dapr/PauseWorkflowBeta1",
            "/dapr.proto.runtime.v1.Dapr/ResumeWorkflowBeta1",
        ],
    ),
    (
        "jobs",
        "v1alpha1",
        &[
            "/dapr.proto.runtime.v1.Dapr/ScheduleJobAlpha1",
            "/dapr.proto.runtime.v1.Dapr/DeleteJobAlpha1",
            "/dapr.proto.runtime.v1.Dapr/GetJobAlpha1",
            "/dapr.proto.runtime.v1.Dapr/DeleteJobsByPrefixAlpha1",
            "/dapr.proto.runtime.v1.Dapr/ListJobsAlpha1",
        ],
    ),
    (
        "jobs",
        "v1",
        &[
            "/dapr.proto.runtime.v1.Dapr/ScheduleJob",
            "/dapr.proto.runtime.v1.Dapr/DeleteJob",
            "/dapr.proto.runtime.v1.Dapr/GetJob",
            "/dapr.proto.runtime.v1.Dapr/DeleteJobsByPrefix",
            "/dapr.proto.runtime.v1.Dapr/ListJobs",
        ],
    ),
    ("shutdown", "v1", &["/dapr.proto.runtime.v1.Dapr/Shutdown"]),
    ("subscribe", "v1alpha1", &["/dapr.proto.runtime.v1.Dapr/SubscribeTopicEventsAlpha1"]),
    ("conversation", "v1alpha1", &["/dapr.proto.runtime.v1.Dapr/ConverseAlpha1"]),
    ("conversation", "v1alpha2", &["/dapr.proto.runtime.v1.Dapr/ConverseAlpha2"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_yaml(yaml: &str) -> Result<ApiAllowList, ApiListError> {
        let spec: ApiSpec = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bad test YAML: {e}"));
        ApiAllowList::compile(&spec)
    }

    fn list(yaml: &str) -> ApiAllowList {
        compile_yaml(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn http_table() {
        let none = ApiAllowList::allow_all();
        let state_legacy = list("{allowed: [{name: state, version: v1.0, protocol: http}]}");
        let state_group = list("{allowed: [{name: state, version: v1}]}");
        let state_alpha_group = list("{allowed: [{name: state, version: v1alpha1, protocol: HTTP}]}");
        let deny_invoke = list("{denied: [{name: invoke, version: v1.0, protocol: http}]}");
        let both = list(
            "{allowed: [{name: state, version: v1}, {name: invoke, version: v1}], denied: [{name: invoke, version: v1}]}",
        );
        let grpc_only = list("{allowed: [{name: state, version: v1, protocol: grpc}]}");
        let short_prefix = list("{denied: [{name: s, version: v1.0}]}");
        let deep_deny = list("{denied: [{name: state/secret, version: v1.0}]}");
        let cases: &[(&str, &ApiAllowList, &str, bool)] = &[
            ("no lists: anything", &none, "/v1.0/state/s/k", true),
            ("no lists: even odd paths", &none, "/v1.0/../x", true),
            ("legacy allow: state", &state_legacy, "/v1.0/state/s/k", true),
            ("legacy allow: other api refused", &state_legacy, "/v1.0/invoke/app/method/x", false),
            ("legacy allow: alpha state is another version", &state_legacy, "/v1.0-alpha1/state/s/query", false),
            ("legacy allow: healthz always allowed", &state_legacy, "/v1.0/healthz", true),
            ("legacy allow: healthz/outbound always allowed", &state_legacy, "/v1.0/healthz/outbound", true),
            ("legacy allow: healthz spelled otherwise is not health", &state_legacy, "/v1.0/healthz/outbound/", false),
            ("legacy allow: metadata refused", &state_legacy, "/v1.0/metadata", false),
            ("group allow: v1 matches v1.0 routes", &state_group, "/v1.0/state/s/k", true),
            ("group allow: v1 does not match alpha", &state_group, "/v1.0-alpha1/state/s/query", false),
            ("group allow: secrets refused", &state_group, "/v1.0/secrets/vault/k", false),
            ("group allow alpha", &state_alpha_group, "/v1.0-alpha1/state/s/query", true),
            ("group allow alpha: v1 refused", &state_alpha_group, "/v1.0/state/s/k", false),
            ("deny invoke", &deny_invoke, "/v1.0/invoke/app/method/x", false),
            ("deny invoke: state allowed", &deny_invoke, "/v1.0/state/s/k", true),
            ("deny invoke: empty segments ignored", &deny_invoke, "//v1.0//invoke/app/method/x", false),
            ("deny list: dot segments refused", &deny_invoke, "/v1.0/x/../invoke/app", false),
            ("both: denied wins", &both, "/v1.0/invoke/app/method/x", false),
            ("both: allowed", &both, "/v1.0/state/s/k", true),
            ("both: unlisted refused", &both, "/v1.0/publish/p/t", false),
            ("grpc rules do not restrict http", &grpc_only, "/v1.0/invoke/app/method/x", true),
            ("legacy prefix is a string prefix", &short_prefix, "/v1.0/secrets/v/k", false),
            ("legacy prefix: other apis", &short_prefix, "/v1.0/invoke/a/method/x", true),
            ("deny rule matched against the full path", &deep_deny, "/v1.0/state/secret/k", false),
            ("deny rule with deeper name, other store", &deep_deny, "/v1.0/state/public/k", true),
            ("jobs alias", &list("{allowed: [{name: jobs, version: v1alpha1}]}"), "/v1.0-alpha1/jobs/j", true),
            ("unknown api under allow list", &state_group, "/v1.0/unknown", false),
            ("root path under allow list", &state_group, "/", false),
        ];
        for (name, lists, path, expected) in cases {
            assert_eq!(lists.is_http_allowed(path), *expected, "case {name:?}");
        }
    }

    /// The example configuration of DAPR-FACTS §5 / the Dapr docs.
    #[test]
    fn facts_example() {
        let lists = list(
            r#"
allowed:
  - {name: state, version: v1.0, protocol: http}
  - {name: state, version: v1, protocol: grpc}
denied:
  - {name: invoke, version: v1.0, protocol: http}
"#,
        );
        assert!(lists.is_http_allowed("/v1.0/state/store/key"));
        assert!(!lists.is_http_allowed("/v1.0/invoke/app/method/m"));
        assert!(!lists.is_http_allowed("/v1.0/publish/pubsub/topic"));
        assert!(lists.is_http_allowed("/v1.0/healthz"));
        assert!(lists.is_grpc_allowed("/dapr.proto.runtime.v1.Dapr/SaveState"));
        assert!(!lists.is_grpc_allowed("/dapr.proto.runtime.v1.Dapr/PublishEvent"));
        // The HTTP deny rule does not touch gRPC, but the gRPC allow list does.
        assert!(!lists.is_grpc_allowed("/dapr.proto.runtime.v1.Dapr/InvokeService"));
        assert!(lists.is_grpc_allowed("/app.Greeter/SayHello"));
    }

    /// Issue 12 row 4: `spec.api` judges the API the request resolves to, so invocation through `dapr-app-id` is the
    /// `invoke` API like the path form.
    #[test]
    fn classified_requests() {
        use crate::routing::classify_public;
        let deny_invoke = list("{denied: [{name: invoke, version: v1.0, protocol: http}]}");
        let allow_state = list("{allowed: [{name: state, version: v1}]}");
        let deny_orders = list("{denied: [{name: invoke/orders, version: v1.0}]}");
        let none = ApiAllowList::allow_all();
        // (name, lists, method, path, dapr-app-id, allowed)
        type Case<'a> = (&'a str, &'a ApiAllowList, &'a str, &'a str, Option<&'a str>, bool);
        let cases: &[Case<'_>] = &[
            ("deny invoke: header form", &deny_invoke, "POST", "/orders", Some("orders"), false),
            ("deny invoke: path form", &deny_invoke, "POST", "/v1.0/invoke/orders/method/x", None, false),
            ("deny invoke: missing app id", &deny_invoke, "GET", "/v1.0/invoke", None, false),
            ("deny invoke: state still allowed", &deny_invoke, "GET", "/v1.0/state/s/k", Some("orders"), true),
            ("deny invoke: health allowed", &deny_invoke, "GET", "/v1.0/healthz", Some("orders"), true),
            (
                "allow state: look-alike path with header",
                &allow_state,
                "GET",
                "/v1.0/stateful/x",
                Some("orders"),
                false,
            ),
            (
                "allow state: header form on a state-looking path",
                &allow_state,
                "GET",
                "/v1.0/state/s/k/x",
                Some("o"),
                false,
            ),
            ("allow state: state", &allow_state, "POST", "/v1.0/state/s", None, true),
            ("allow state: state 405 is judged as state", &allow_state, "GET", "/v1.0/state/s", None, true),
            ("allow state: metadata refused", &allow_state, "GET", "/v1.0/metadata", None, false),
            ("allow state: secrets refused", &allow_state, "GET", "/v1.0/secrets/v/n", None, false),
            ("allow state: not found refused", &allow_state, "GET", "/nowhere", None, false),
            ("allow state: health allowed", &allow_state, "GET", "/v1.0/healthz/outbound", None, true),
            ("deep deny: header form to orders", &deny_orders, "GET", "/x", Some("orders"), false),
            ("deep deny: path form to orders", &deny_orders, "GET", "/v1.0/invoke/orders/method/x", None, false),
            ("deep deny: other app", &deny_orders, "GET", "/x", Some("billing"), true),
            ("no lists: anything", &none, "GET", "/nowhere", None, true),
            ("no lists: header form", &none, "GET", "/x", Some("orders"), true),
        ];
        for (name, lists, method, path, app_id, expected) in cases {
            let request = classify_public(method, path, *app_id);
            assert_eq!(lists.allows_http(&request), *expected, "case {name:?}: {request:?}");
        }
    }

    #[test]
    fn always_allowed_helper() {
        assert!(is_always_allowed("GET", "/v1.0/healthz"));
        assert!(is_always_allowed("GET", "/v1.0/healthz/outbound"));
        assert!(!is_always_allowed("GET", "v1.0/healthz/"));
        assert!(!is_always_allowed("GET", "/v1.0/healthz/"));
        assert!(!is_always_allowed("GET", "//v1.0/healthz"));
        assert!(!is_always_allowed("POST", "/v1.0/healthz"));
        assert!(!is_always_allowed("get", "/v1.0/healthz"));
        assert!(!is_always_allowed("GET", "/v1.0/healthz/other"));
        assert!(!is_always_allowed("GET", "/v1.0/state/x/healthz"));
        assert!(!is_always_allowed("GET", "/v1.0/metadata"));
    }

    #[test]
    fn grpc_table() {
        const GET_STATE: &str = "/dapr.proto.runtime.v1.Dapr/GetState";
        const QUERY: &str = "/dapr.proto.runtime.v1.Dapr/QueryStateAlpha1";
        const INVOKE: &str = "/dapr.proto.runtime.v1.Dapr/InvokeService";
        const APP: &str = "/my.app.Service/Method";
        let none = ApiAllowList::allow_all();
        let allow_state = list("{allowed: [{name: state, version: v1, protocol: grpc}]}");
        let deny_invoke = list("{denied: [{name: invoke, version: v1, protocol: GRPC}]}");
        let both = list(
            "{allowed: [{name: state, version: v1, protocol: grpc}, {name: invoke, version: v1, protocol: grpc}], \
              denied: [{name: invoke, version: v1, protocol: grpc}]}",
        );
        let typo = list("{allowed: [{name: state, version: v1.0, protocol: grpc}]}");
        let http_only = list("{allowed: [{name: state, version: v1.0}]}");
        let cases: &[(&str, &ApiAllowList, &str, bool)] = &[
            ("no lists", &none, GET_STATE, true),
            ("allow state: GetState", &allow_state, GET_STATE, true),
            ("allow state: alpha is another version", &allow_state, QUERY, false),
            ("allow state: invoke refused", &allow_state, INVOKE, false),
            ("allow state: app methods unrestricted", &allow_state, APP, true),
            ("allow state: unknown runtime method refused", &allow_state, "/dapr.proto.runtime.v1.Dapr/Nope", false),
            ("deny invoke", &deny_invoke, INVOKE, false),
            ("deny invoke: state allowed", &deny_invoke, GET_STATE, true),
            ("both: denied wins", &both, INVOKE, false),
            ("both: allowed", &both, GET_STATE, true),
            ("allow list with only unknown rules fails closed", &typo, GET_STATE, false),
            ("http rules do not restrict grpc", &http_only, GET_STATE, true),
            ("method names are case-sensitive", &allow_state, "/dapr.proto.runtime.v1.Dapr/getstate", false),
        ];
        for (name, lists, method, expected) in cases {
            assert_eq!(lists.is_grpc_allowed(method), *expected, "case {name:?}");
        }
    }

    #[test]
    fn every_grpc_api_is_reachable_by_its_rule() {
        for (name, version, methods) in GRPC_ENDPOINTS {
            let rule = ApiRuleSpec { name: (*name).into(), version: (*version).into(), protocol: "grpc".into() };
            let spec = ApiSpec { allowed: Some(vec![rule]), denied: None };
            let lists = ApiAllowList::compile(&spec).unwrap_or_else(|e| panic!("{e}"));
            for method in *methods {
                assert!(lists.is_grpc_allowed(method), "{name}.{version}: {method}");
            }
        }
    }

    #[test]
    fn compile_errors() {
        let cases = [
            (
                "unknown protocol",
                "{allowed: [{name: state, version: v1, protocol: grpc}, {name: state, version: v1, protocol: websocket}]}",
                ApiListError::InvalidProtocol { list: "allowed", index: 1, value: "websocket".into() },
            ),
            (
                "missing name",
                "{denied: [{name: '', version: v1}]}",
                ApiListError::MissingName { list: "denied", index: 0 },
            ),
        ];
        for (name, yaml, expected) in cases {
            assert_eq!(compile_yaml(yaml).err(), Some(expected), "case {name:?}");
        }
    }

    #[test]
    fn prefix_of_pair() {
        assert!(is_prefix_of_pair("v1.0/state", "v1.0", "state"));
        assert!(is_prefix_of_pair("v1.0/st", "v1.0", "state"));
        assert!(is_prefix_of_pair("v1.0/", "v1.0", "state"));
        assert!(is_prefix_of_pair("v1.0", "v1.0", "state"));
        assert!(is_prefix_of_pair("v1", "v1.0", "state"));
        assert!(!is_prefix_of_pair("v1.0/state/x", "v1.0", "state"));
        assert!(!is_prefix_of_pair("v1.0/secrets", "v1.0", "state"));
        assert!(!is_prefix_of_pair("/state", "v1.0", "state"));
    }
}
