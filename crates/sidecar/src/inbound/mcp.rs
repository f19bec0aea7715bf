//! MCP tool rules (`spec.ward.mcp`) on the callee side, after access control: a `POST` to the MCP server's
//! endpoint is read (bounded by `--max-body-size`), parsed as JSON-RPC and judged message by message for the
//! verified caller before any code of the server runs.
//!
//! - A denied `tools/call` never reaches the server: the sidecar answers it with a JSON-RPC error for that id
//!   (code [`TOOL_DENIED_CODE`], HTTP 200, so clients surface a tool error). In a batch, allowed messages are
//!   forwarded as a smaller batch and the answers merged back in request order.
//! - The answer to a `tools/list` (JSON, or an SSE stream) is filtered so each caller sees only tools it may call.
//! - A body that is not JSON-RPC, holds a method ward does not know (unless `passthroughUnknownMethods`), or whose
//!   `Mcp-Method` / `Mcp-Name` headers disagree with it is refused with `400` and a JSON-RPC error.
//! - `GET` / `DELETE` at the endpoint (the session stream) pass under the ACL alone.
//!
//! Every `tools/call` decision is an audit event (`MCP_TOOL_ALLOW` / `MCP_TOOL_DENY`, never the arguments), written
//! before the call is forwarded; refused messages are `MCP_MESSAGE_REFUSED`.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use serde_json::Value;
use ward_policy::mcp::{
    McpBody, McpCaller, McpPolicy, MessageKind, TOOL_DENIED_CODE, check_routing_headers, error_response, filter_tools,
    parse_body, tools_list_ids,
};
use ward_policy::{AuditEvent, Operation, PreparedInvocation};

use super::accept::CallerIdentity;
use super::{InboundRequest, InboundResponse};
use crate::audit::AuditSink;
use crate::error::InboundError;

#[derive(Clone)]
pub(crate) struct McpLayer {
    pub(crate) policy: Arc<ArcSwapOption<McpPolicy>>,
    pub(crate) audit: AuditSink,
    pub(crate) app_id: Arc<str>,
    pub(crate) max_body_size: u64,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl<S> tower::Layer<S> for McpLayer {
    type Service = McpRules<S>;
    fn layer(&self, inner: S) -> Self::Service {
        McpRules { inner, step: self.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct McpRules<S> {
    inner: S,
    step: McpLayer,
}

impl<S> tower::Service<InboundRequest> for McpRules<S>
where
    S: tower::Service<InboundRequest, Response = InboundResponse, Error = InboundError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = InboundResponse;
    type Error = InboundError;
    type Future = BoxFuture<'static, Result<InboundResponse, InboundError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: InboundRequest) -> Self::Future {
        let Some(policy) = self.step.policy.load_full() else { return self.inner.call(request).boxed() };
        let at_endpoint = request.method() == http::Method::POST
            && matches!(
                request.extensions().get::<PreparedInvocation>().map(|p| &p.operation),
                Some(Operation::Http(method)) if method.as_str() == policy.endpoint()
            );
        if !at_endpoint {
            return self.inner.call(request).boxed();
        }
        let step = self.step.clone();
        let inner = self.inner.clone();
        judge(step, policy, inner, request).boxed()
    }
}

/// Everything about one caller the rules need.
struct Who {
    spiffe_id: Option<String>,
    trust_domain: String,
    namespace: String,
    app_id: String,
}

impl Who {
    fn of(request: &InboundRequest) -> Who {
        // Only a verified caller can match a rule: a development marker names nobody (invariant 9).
        let extensions = request.extensions();
        let id = extensions.get::<CallerIdentity>().and_then(|c| c.for_policy(extensions).cloned());
        let dapr = id.as_ref().and_then(|id| {
            id.dapr_identity().ok().map(|d| (d.trust_domain.to_owned(), d.namespace.to_owned(), d.app_id.to_owned()))
        });
        let (trust_domain, namespace, app_id) = dapr.unwrap_or_default();
        Who { spiffe_id: id.map(|i| i.to_string()), trust_domain, namespace, app_id }
    }

    fn caller(&self) -> Option<McpCaller<'_>> {
        let spiffe_id = self.spiffe_id.as_deref()?;
        (!self.app_id.is_empty()).then_some(McpCaller {
            spiffe_id,
            trust_domain: &self.trust_domain,
            namespace: &self.namespace,
            app_id: &self.app_id,
        })
    }

    fn name(&self) -> &str {
        self.spiffe_id.as_deref().unwrap_or("an unverified caller")
    }
}

async fn judge<S>(
    step: McpLayer,
    policy: Arc<McpPolicy>,
    mut inner: S,
    request: InboundRequest,
) -> Result<InboundResponse, InboundError>
where
    S: tower::Service<InboundRequest, Response = InboundResponse, Error = InboundError>,
{
    let who = Who::of(&request);
    let operation = format!("/{}", policy.endpoint());
    let (mut parts, body) = request.into_parts();
    let bytes = crate::body::read_limited(body, step.max_body_size).await.map_err(|e| match e {
        crate::body::ReadBodyError::TooLarge { limit } => InboundError::BodyTooLarge { limit },
        crate::body::ReadBodyError::Read(detail) => {
            InboundError::AppUnavailable(format!("reading the request: {detail}"))
        }
    })?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let parsed = parse_body(&bytes, policy.passthrough_unknown_methods()).and_then(|body| {
        check_routing_headers(&body, header("mcp-method").as_deref(), header("mcp-name").as_deref()).map(|()| body)
    });
    let body = match parsed {
        Ok(body) => body,
        Err(err) => {
            let event = AuditEvent::for_mcp_refusal(
                crate::runtime::now_rfc3339(),
                who.spiffe_id.as_deref(),
                &step.app_id,
                &operation,
                &err.to_string(),
            );
            let _ = step.audit.record(event);
            step.metrics.authz("mcp", false, "malformed or unknown message");
            return Ok(json_answer(http::StatusCode::BAD_REQUEST, &error_response(None, err.code(), &err.to_string())));
        }
    };

    // Judge every tools/call; the decisions are on record before anything is forwarded.
    let caller = who.caller();
    let mut denied: Vec<(usize, Value)> = Vec::new();
    let mut written = Vec::new();
    for (index, message) in body.messages.iter().enumerate() {
        let MessageKind::Request { tool: Some(tool), .. } = &message.kind else { continue };
        let decision = policy.decide_tool(caller.as_ref(), tool);
        step.metrics.mcp_tool(who.name(), tool, decision.allowed, &decision.rule);
        let id = message.id.as_ref().map(Value::to_string);
        let event = AuditEvent::for_mcp_tool(
            crate::runtime::now_rfc3339(),
            who.spiffe_id.as_deref(),
            &step.app_id,
            &operation,
            tool,
            id.as_deref(),
            decision.allowed,
            &decision.rule,
        );
        if decision.allowed {
            written.push(step.audit.record_written(event).map_err(|_| InboundError::AuditUnavailable)?);
        } else {
            let _ = step.audit.record(event);
            let text = format!("tool {tool} is not permitted for {}", who.name());
            denied.push((index, error_response(message.id.as_ref(), TOOL_DENIED_CODE, &text)));
        }
    }
    for line in written {
        line.await.map_err(|_| InboundError::AuditUnavailable)?;
    }

    let filter_ids = tools_list_ids(&body);
    let forward_body = if denied.is_empty() {
        bytes
    } else {
        let kept: Vec<Value> = (body.messages.iter().enumerate())
            .filter(|(i, _)| !denied.iter().any(|(d, _)| d == i))
            .map(|(_, m)| m.value.clone())
            .collect();
        if kept.is_empty() {
            // Nothing left for the server: the sidecar's own answer.
            return Ok(match body.batch {
                false => json_answer(http::StatusCode::OK, &denied.remove(0).1),
                true => json_answer(http::StatusCode::OK, &Value::Array(denied.into_iter().map(|(_, v)| v).collect())),
            });
        }
        Bytes::from(Value::Array(kept).to_string())
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let forwarded = InboundRequest::from_parts(parts, Body::from(forward_body));
    let response = inner.call(forwarded).await?;
    if filter_ids.is_empty() && denied.is_empty() {
        return Ok(response);
    }
    let allowed = move |tool: &str| policy.decide_tool(who.caller().as_ref(), tool).allowed;
    let rewrite =
        Rewrite { filter_ids, denied: denied.into_iter().map(|(_, v)| v).collect(), allowed: Arc::new(allowed) };
    rewrite.apply(response, &body, step.max_body_size).await
}

type ToolFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the server's answer needs: `tools/list` results filtered, the sidecar's own error answers merged in.
struct Rewrite {
    filter_ids: HashSet<String>,
    denied: Vec<Value>,
    allowed: ToolFilter,
}

impl Rewrite {
    fn message(&self, message: &mut Value) {
        let is_list_answer = message.get("id").is_some_and(|id| self.filter_ids.contains(&id.to_string()));
        if is_list_answer {
            filter_tools(message, &*self.allowed);
        }
    }

    async fn apply(
        self,
        response: InboundResponse,
        request: &McpBody,
        limit: u64,
    ) -> Result<InboundResponse, InboundError> {
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default();
        let (mut parts, body) = response.into_parts();
        if content_type == "text/event-stream" {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            return Ok(InboundResponse::from_parts(parts, sse(body, self)));
        }
        if content_type == "application/json" {
            let bytes = crate::body::read_limited(body, limit.saturating_mul(4)).await.map_err(|_| {
                InboundError::AppUnavailable("the MCP server's answer could not be read within the limit".to_owned())
            })?;
            let mut value: Value = serde_json::from_slice(&bytes)
                .map_err(|_| InboundError::AppUnavailable("the MCP server answered with invalid JSON".to_owned()))?;
            match &mut value {
                Value::Array(items) => items.iter_mut().for_each(|m| self.message(m)),
                single => self.message(single),
            }
            let merged = merge(value, self.denied, request);
            parts.headers.remove(http::header::CONTENT_LENGTH);
            return Ok(InboundResponse::from_parts(parts, Body::from(merged.to_string())));
        }
        if !parts.status.is_success() {
            return Ok(InboundResponse::from_parts(parts, body));
        }
        if parts.status == http::StatusCode::ACCEPTED && self.filter_ids.is_empty() {
            // Only notifications were forwarded: the sidecar's answers are the whole answer.
            return Ok(json_answer(http::StatusCode::OK, &Value::Array(self.denied)));
        }
        // A successful answer ward cannot read would carry an unfiltered tool list: refused.
        Err(InboundError::AppUnavailable(format!(
            "the MCP server answered with {content_type:?}, which ward cannot filter (expected application/json or text/event-stream)"
        )))
    }
}

/// The server's answer (one message or a batch) with the sidecar's answers merged in the order of the request.
fn merge(answer: Value, denied: Vec<Value>, request: &McpBody) -> Value {
    if denied.is_empty() {
        return answer;
    }
    let mut all: Vec<Value> = match answer {
        Value::Array(items) => items,
        single => vec![single],
    };
    all.extend(denied);
    let position = |m: &Value| {
        let id = m.get("id");
        request.messages.iter().position(|r| r.id.as_ref() == id).unwrap_or(usize::MAX)
    };
    all.sort_by_key(position);
    Value::Array(all)
}

fn json_answer(status: http::StatusCode, value: &Value) -> InboundResponse {
    let mut response = InboundResponse::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// An SSE answer, event by event: the sidecar's own answers first, then each server event, with `tools/list`
/// results filtered. An event larger than 16 MiB ends the stream with an error.
fn sse(body: Body, rewrite: Rewrite) -> Body {
    const MAX_EVENT: usize = 16 << 20;
    let mut first = BytesMut::new();
    for answer in &rewrite.denied {
        first.extend_from_slice(format!("event: message\ndata: {answer}\n\n").as_bytes());
    }
    let state = (body.into_data_stream(), BytesMut::new(), Some(first.freeze()), false, rewrite);
    Body::from_stream(futures_util::stream::unfold(
        state,
        |(mut stream, mut buf, mut first, mut done, rewrite)| async move {
            if let Some(first_bytes) = first.take()
                && !first_bytes.is_empty()
            {
                return Some((Ok(first_bytes), (stream, buf, None, done, rewrite)));
            }
            loop {
                if let Some((end, separator)) = event_end(&buf) {
                    let event = buf.split_to(end + separator).freeze();
                    let out = rewrite_event(&event[..end], &event[end..], &rewrite);
                    return Some((Ok(out), (stream, buf, None, done, rewrite)));
                }
                if done {
                    if buf.is_empty() {
                        return None;
                    }
                    let rest = buf.split().freeze();
                    return Some((Ok(rest), (stream, buf, None, done, rewrite)));
                }
                if buf.len() > MAX_EVENT {
                    let err = axum::Error::new(std::io::Error::other("an SSE event from the MCP server is too large"));
                    return Some((Err(err), (stream, buf, None, true, rewrite)));
                }
                match stream.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(err)) => return Some((Err(err), (stream, buf, None, true, rewrite))),
                    None => done = true,
                }
            }
        },
    ))
}

/// Where the first complete event in `buf` ends, and the length of the blank-line separator after it.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// One event, with its `data` filtered if it answers a `tools/list`; anything else is passed on byte for byte.
fn rewrite_event(event: &[u8], separator: &[u8], rewrite: &Rewrite) -> Bytes {
    let unchanged = || Bytes::from([event, separator].concat());
    let Ok(text) = std::str::from_utf8(event) else { return unchanged() };
    let mut other_lines = Vec::new();
    let mut data = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("data:") {
            Some(value) => data.push(value.strip_prefix(' ').unwrap_or(value)),
            None => other_lines.push(line),
        }
    }
    if data.is_empty() {
        return unchanged();
    }
    let Ok(mut message) = serde_json::from_str::<Value>(&data.join("\n")) else { return unchanged() };
    let is_list_answer = message.get("id").is_some_and(|id| rewrite.filter_ids.contains(&id.to_string()));
    if !is_list_answer {
        return unchanged();
    }
    rewrite.message(&mut message);
    let mut out = String::new();
    for line in other_lines {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&message.to_string());
    out.push_str("\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(ids: &[&str]) -> Rewrite {
        Rewrite {
            filter_ids: ids.iter().map(|s| s.to_string()).collect(),
            denied: Vec::new(),
            allowed: Arc::new(|tool: &str| tool.starts_with("ok")),
        }
    }

    #[test]
    fn sse_events_answering_tools_list_are_filtered_and_others_pass_unchanged() {
        let r = rewrite(&["3"]);
        let list = br#"event: message
id: e1
data: {"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"ok_a"},{"name":"secret"}]}}"#;
        let out = rewrite_event(list, b"\n\n", &r);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("event: message\nid: e1\ndata: "), "{text}");
        assert!(text.contains("ok_a") && !text.contains("secret"), "{text}");
        assert!(text.ends_with("\n\n"));
        let other = br#"data: {"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"secret"}]}}"#;
        assert_eq!(rewrite_event(other, b"\r\n\r\n", &r).as_ref(), [&other[..], b"\r\n\r\n"].concat().as_slice());
        assert_eq!(event_end(b"data: x\r\n\r\ndata: y\n\n"), Some((7, 4)));
        assert_eq!(event_end(b"data: x\n"), None);
    }

    #[test]
    fn merged_answers_follow_the_request_order() {
        let request = parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}},{"jsonrpc":"2.0","id":3,"method":"ping"}]"#,
            false,
        )
        .unwrap();
        let server = serde_json::json!([{"jsonrpc":"2.0","id":3,"result":{}},{"jsonrpc":"2.0","id":1,"result":{}}]);
        let denied = vec![error_response(Some(&Value::from(2)), TOOL_DENIED_CODE, "no")];
        let merged = merge(server, denied, &request);
        let ids: Vec<i64> = merged.as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
