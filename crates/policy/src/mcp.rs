//! Tool-level rules for MCP servers (`spec.ward.mcp`): which verified caller may call which tool, decided on the
//! JSON-RPC body of each message at the server's streamable-HTTP endpoint.
//!
//! Owns: compiling the rules ([`McpPolicy::compile`]), the decision for one caller and tool
//! ([`McpPolicy::decide_tool`]: a matching rule's `deny` wins over any `allow`, then an `allow`, then
//! `defaultAction`), parsing a request body into classified messages ([`parse_body`]: strict JSON — a duplicate key
//! anywhere is refused, since two parsers could each read a different value — JSON-RPC 2.0 shape, the methods of
//! the MCP revisions ward supports), checking the `Mcp-Method` / `Mcp-Name` routing headers against the body
//! ([`check_routing_headers`]), and filtering a `tools/list` result ([`filter_tools`]).
//!
//! Does not own: HTTP, buffering, forwarding or auditing (the sidecar's `inbound/mcp.rs`). Never looks at a tool's
//! arguments.
//!
//! Supported MCP revisions: 2025-03-26, 2025-06-18, 2025-11-25 and 2026-07-28 — every method the official MCP Python
//! SDK 2.x client sends (see [`KNOWN_REQUESTS`]); any `notifications/*`; and responses to server requests.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::path::normalize_http_method;
use crate::spec::McpSpec;

/// The JSON-RPC error code of a `tools/call` refused by the rules (JSON-RPC's server-error range).
pub const TOOL_DENIED_CODE: i64 = -32001;

/// The most messages one batch may hold.
pub const MAX_BATCH: usize = 1000;

/// Request methods a client may send to a server, from every MCP revision ward supports.
pub const KNOWN_REQUESTS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
];

/// Why a rule set does not compile. Names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    #[error("spec.ward.mcp.endpoint: {0}")]
    Endpoint(String),
    #[error("spec.ward.mcp.defaultAction: {0:?} is not allow or deny")]
    DefaultAction(String),
    #[error("spec.ward.mcp.rules[{rule}].{field}: {message}")]
    Rule { rule: usize, field: String, message: String },
}

/// A compiled `spec.ward.mcp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpPolicy {
    endpoint: String,
    default_allow: bool,
    passthrough_unknown: bool,
    rules: Vec<Rule>,
    trust_domain: String,
    namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    callers: Vec<CallerMatch>,
    allow: Vec<NamePattern>,
    deny: Vec<NamePattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallerMatch {
    /// An app id in the callee's namespace and trust domain.
    AppId(String),
    /// A whole SPIFFE ID.
    Spiffe(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    Exact(String),
    /// `read_*`: the prefix before the `*`; `*` alone is the empty prefix.
    Prefix(String),
}

impl NamePattern {
    fn parse(raw: &str) -> Result<NamePattern, String> {
        if raw.is_empty() {
            return Err("an empty tool name".to_owned());
        }
        match raw.find('*') {
            None => Ok(NamePattern::Exact(raw.to_owned())),
            Some(at) if at + 1 == raw.len() => Ok(NamePattern::Prefix(raw[..at].to_owned())),
            Some(_) => Err(format!("{raw:?}: `*` is allowed only at the end")),
        }
    }

    fn matches(&self, tool: &str) -> bool {
        match self {
            NamePattern::Exact(name) => name == tool,
            NamePattern::Prefix(prefix) => tool.starts_with(prefix.as_str()),
        }
    }

    fn is_everything(&self) -> bool {
        matches!(self, NamePattern::Prefix(p) if p.is_empty())
    }
}

/// The verified caller of one request.
#[derive(Debug, Clone, Copy)]
pub struct McpCaller<'a> {
    pub spiffe_id: &'a str,
    pub trust_domain: &'a str,
    pub namespace: &'a str,
    pub app_id: &'a str,
}

/// The decision for one `tools/call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDecision {
    pub allowed: bool,
    /// What decided, e.g. `spec.ward.mcp.rules[1].deny[0]` or `spec.ward.mcp.defaultAction`.
    pub rule: String,
}

impl McpPolicy {
    /// Compiles the rules of the sidecar of an app in `namespace` under `trust_domain`.
    pub fn compile(spec: &McpSpec, trust_domain: &str, namespace: &str) -> Result<McpPolicy, McpError> {
        if !spec.endpoint.starts_with('/') {
            return Err(McpError::Endpoint(format!("{:?} must be a path starting with /", spec.endpoint)));
        }
        let endpoint = normalize_http_method(&spec.endpoint)
            .map_err(|e| McpError::Endpoint(format!("{:?}: {e}", spec.endpoint)))?
            .as_str()
            .to_owned();
        let default_allow = match spec.default_action.as_deref().map(str::trim) {
            None | Some("") => false,
            Some(a) if a.eq_ignore_ascii_case("deny") => false,
            Some(a) if a.eq_ignore_ascii_case("allow") => true,
            Some(other) => return Err(McpError::DefaultAction(other.to_owned())),
        };
        let mut rules = Vec::with_capacity(spec.rules.len());
        for (index, raw) in spec.rules.iter().enumerate() {
            let err = |field: String, message: String| McpError::Rule { rule: index, field, message };
            if raw.callers.is_empty() {
                return Err(err("callers".into(), "at least one caller is required".into()));
            }
            let mut callers = Vec::with_capacity(raw.callers.len());
            for (i, caller) in raw.callers.iter().enumerate() {
                let caller = caller.trim();
                if let Some(rest) = caller.strip_prefix("spiffe://") {
                    if rest.is_empty() || !rest.contains('/') || caller.contains(char::is_whitespace) {
                        return Err(err(format!("callers[{i}]"), format!("{caller:?} is not a SPIFFE ID")));
                    }
                    callers.push(CallerMatch::Spiffe(caller.to_owned()));
                } else if caller.is_empty() || caller.contains(['/', '*']) || caller.contains(char::is_whitespace) {
                    return Err(err(
                        format!("callers[{i}]"),
                        format!("{caller:?} is not an app id or a spiffe:// ID (callers never use wildcards)"),
                    ));
                } else {
                    callers.push(CallerMatch::AppId(caller.to_owned()));
                }
            }
            let patterns = |list: &[String], field: &str| -> Result<Vec<NamePattern>, McpError> {
                list.iter()
                    .enumerate()
                    .map(|(i, p)| NamePattern::parse(p).map_err(|m| err(format!("{field}[{i}]"), m)))
                    .collect()
            };
            rules.push(Rule { callers, allow: patterns(&raw.allow, "allow")?, deny: patterns(&raw.deny, "deny")? });
        }
        Ok(McpPolicy {
            endpoint,
            default_allow,
            passthrough_unknown: spec.passthrough_unknown_methods.unwrap_or(false),
            rules,
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
        })
    }

    /// The endpoint as the ACL judges paths (normalised, without the leading `/`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn passthrough_unknown_methods(&self) -> bool {
        self.passthrough_unknown
    }

    fn rule_matches(&self, rule: &Rule, caller: &McpCaller<'_>) -> bool {
        rule.callers.iter().any(|m| match m {
            CallerMatch::Spiffe(id) => id == caller.spiffe_id,
            CallerMatch::AppId(app) => {
                app == caller.app_id && caller.namespace == self.namespace && caller.trust_domain == self.trust_domain
            }
        })
    }

    /// Whether `caller` may call `tool`. An unverified caller (`None`) matches no rule: `defaultAction` decides.
    pub fn decide_tool(&self, caller: Option<&McpCaller<'_>>, tool: &str) -> ToolDecision {
        let matching: Vec<(usize, &Rule)> = match caller {
            Some(caller) => self.rules.iter().enumerate().filter(|(_, r)| self.rule_matches(r, caller)).collect(),
            None => Vec::new(),
        };
        for (index, rule) in &matching {
            if let Some(i) = rule.deny.iter().position(|p| p.matches(tool)) {
                return ToolDecision { allowed: false, rule: format!("spec.ward.mcp.rules[{index}].deny[{i}]") };
            }
        }
        for (index, rule) in &matching {
            if let Some(i) = rule.allow.iter().position(|p| p.matches(tool)) {
                return ToolDecision { allowed: true, rule: format!("spec.ward.mcp.rules[{index}].allow[{i}]") };
            }
        }
        ToolDecision { allowed: self.default_allow, rule: "spec.ward.mcp.defaultAction".to_owned() }
    }

    /// Rules that allow every tool (`*`) without any deny: `ward policy lint` warns about them.
    pub fn unbounded_rules(&self) -> Vec<usize> {
        (self.rules.iter().enumerate())
            .filter(|(_, r)| r.deny.is_empty() && r.allow.iter().any(NamePattern::is_everything))
            .map(|(i, _)| i)
            .collect()
    }
}

/// What one JSON-RPC message is.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageKind {
    /// A request: has an `id`. `tool` is `params.name` of a `tools/call`.
    Request { method: String, tool: Option<String> },
    /// A notification: no `id`.
    Notification { method: String },
    /// The client's answer to a request of the server (sampling, elicitation, roots).
    Response,
}

/// One message of a body.
#[derive(Debug, Clone, PartialEq)]
pub struct McpMessage {
    pub id: Option<Value>,
    pub kind: MessageKind,
    /// The message as parsed (for re-sending a batch without the refused calls).
    pub value: Value,
}

impl McpMessage {
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            MessageKind::Request { method, .. } | MessageKind::Notification { method } => Some(method),
            MessageKind::Response => None,
        }
    }

    /// `params.<key>` as a string.
    fn param(&self, key: &str) -> Option<&str> {
        self.value.get("params")?.get(key)?.as_str()
    }
}

/// A POST body at the endpoint: one message or a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct McpBody {
    pub batch: bool,
    pub messages: Vec<McpMessage>,
}

/// Why a body was refused, with JSON-RPC's code for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpParseError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a valid JSON-RPC 2.0 request: {0}")]
    InvalidRequest(String),
    #[error("method {0:?} is not an MCP method ward knows")]
    UnknownMethod(String),
    #[error("invalid params: {0}")]
    InvalidParams(String),
}

impl McpParseError {
    /// JSON-RPC's error code for it.
    pub fn code(&self) -> i64 {
        match self {
            McpParseError::NotJson(_) => -32700,
            McpParseError::InvalidRequest(_) => -32600,
            McpParseError::UnknownMethod(_) => -32601,
            McpParseError::InvalidParams(_) => -32602,
        }
    }
}

/// A JSON value parsed with every object's keys unique.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("a number JSON cannot hold"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Parses a POST body at the endpoint. Every message must be JSON-RPC 2.0 with a method ward knows (or any method,
/// with `passthrough_unknown`); a `tools/call` must name its tool with a string.
pub fn parse_body(body: &[u8], passthrough_unknown: bool) -> Result<McpBody, McpParseError> {
    let Strict(value) = serde_json::from_slice(body).map_err(|e| McpParseError::NotJson(e.to_string()))?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(McpParseError::InvalidRequest("an empty batch".into()));
            }
            if items.len() > MAX_BATCH {
                return Err(McpParseError::InvalidRequest(format!("a batch of more than {MAX_BATCH} messages")));
            }
            let messages =
                items.into_iter().map(|v| classify(v, passthrough_unknown)).collect::<Result<Vec<_>, _>>()?;
            Ok(McpBody { batch: true, messages })
        }
        single => Ok(McpBody { batch: false, messages: vec![classify(single, passthrough_unknown)?] }),
    }
}

fn classify(value: Value, passthrough_unknown: bool) -> Result<McpMessage, McpParseError> {
    let invalid = |m: &str| McpParseError::InvalidRequest(m.to_owned());
    let object = value.as_object().ok_or_else(|| invalid("a message must be an object"))?;
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let id = match object.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id.clone()),
        Some(_) => return Err(invalid("\"id\" must be a string or a number")),
    };
    let Some(method) = object.get("method") else {
        // A response to one of the server's requests.
        let has_result = object.contains_key("result");
        let has_error = object.contains_key("error");
        if id.is_none() || has_result == has_error {
            return Err(invalid("a message without a method must be a response (an id and one of result, error)"));
        }
        return Ok(McpMessage { id, kind: MessageKind::Response, value });
    };
    let method = method.as_str().ok_or_else(|| invalid("\"method\" must be a string"))?.to_owned();
    if let Some(params) = object.get("params")
        && !params.is_object()
        && !params.is_array()
    {
        return Err(invalid("\"params\" must be an object or an array"));
    }
    if id.is_none() {
        if !method.starts_with("notifications/") && !passthrough_unknown {
            return Err(McpParseError::UnknownMethod(method));
        }
        return Ok(McpMessage { id, kind: MessageKind::Notification { method }, value });
    }
    let tool = if method == "tools/call" {
        match value.get("params").and_then(|p| p.get("name")) {
            Some(Value::String(name)) => Some(name.clone()),
            Some(_) => return Err(McpParseError::InvalidParams("params.name of tools/call must be a string".into())),
            None => return Err(McpParseError::InvalidParams("tools/call without params.name".into())),
        }
    } else {
        if !KNOWN_REQUESTS.contains(&method.as_str()) && !passthrough_unknown {
            return Err(McpParseError::UnknownMethod(method));
        }
        None
    };
    Ok(McpMessage { id, kind: MessageKind::Request { method, tool }, value })
}

/// The body field `Mcp-Name` mirrors, by method (MCP 2026-07-28 transports).
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// A header value, decoding the `=?base64?…?=` form clients use for names that are not visible ASCII.
fn header_text(raw: &str) -> Option<String> {
    use base64::Engine as _;
    match raw.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(raw.to_owned()),
    }
}

/// The routing headers newer clients send must agree with the body, which is what ward judges: a request whose
/// `Mcp-Method` or `Mcp-Name` says something else is refused (something between could route on the header).
pub fn check_routing_headers(
    body: &McpBody,
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
) -> Result<(), McpParseError> {
    if mcp_method.is_none() && mcp_name.is_none() {
        return Ok(());
    }
    let disagree =
        |what: &str| Err(McpParseError::InvalidRequest(format!("the {what} header disagrees with the body")));
    let [message] = body.messages.as_slice() else {
        return disagree("Mcp-Method/Mcp-Name (a batch has no single method)");
    };
    if body.batch {
        return disagree("Mcp-Method/Mcp-Name (a batch has no single method)");
    }
    if let Some(header) = mcp_method
        && message.method() != Some(header)
    {
        return disagree("Mcp-Method");
    }
    if let Some(header) = mcp_name {
        let body_name = message.method().and_then(name_field).and_then(|field| message.param(field));
        if body_name.is_none() || header_text(header).as_deref() != body_name {
            return disagree("Mcp-Name");
        }
    }
    Ok(())
}

/// JSON-RPC's error response for `id`.
pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": { "code": code, "message": message },
    })
}

/// Removes from a `tools/list` result the tools `allowed` refuses (and any entry without a string name). Returns
/// how many were removed; a message that is not a `tools/list` result is left alone.
pub fn filter_tools(message: &mut Value, allowed: &dyn Fn(&str) -> bool) -> usize {
    let Some(tools) = message.get_mut("result").and_then(|r| r.get_mut("tools")).and_then(Value::as_array_mut) else {
        return 0;
    };
    let before = tools.len();
    tools.retain(|tool| tool.get("name").and_then(Value::as_str).is_some_and(allowed));
    before - tools.len()
}

/// The ids of the `tools/list` requests in a body (their answers must be filtered).
pub fn tools_list_ids(body: &McpBody) -> HashSet<String> {
    (body.messages.iter())
        .filter(|m| m.method() == Some("tools/list"))
        .filter_map(|m| m.id.as_ref().map(Value::to_string))
        .collect()
}

#[cfg(test)]
mod tests;
