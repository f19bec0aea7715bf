//! `middleware.http.opa`: a Rego policy decides each request (Dapr's input and result shapes).
//!
//! Metadata: `rego` (required; package `http`, decision `data.http.allow`), `defaultStatus` (403),
//! `includedHeaders` (comma-separated; matched case-insensitively, passed with Go's canonical names such as
//! `Dapr-Caller-App-Id`), `readBody` (`"true"` buffers the body, at most the sidecar's body limit, into
//! `input.request.body`).
//!
//! Input: `input.request{method, path, path_parts, raw_query, query, headers, scheme, body}`. The decision is a
//! bool, or `{allow, additional_headers, status_code}`: when denied the headers go on the answer, when allowed they
//! are set on the request. Undefined, or anything else, is an evaluation error: the request is refused with
//! `defaultStatus` and `x-dapr-opa-error: true` (fail closed, as Dapr).
//!
//! The engine is regorus (Microsoft's Rego interpreter in Rust, maintained, no cgo/wasm runtime to carry): the
//! policy is parsed and compiled once at load; each request evaluates a clone of the prepared engine. Policies in
//! Rego v0 syntax (`allow = true { … }`, what Dapr's documentation shows) load unchanged; Rego v1 (`import rego.v1`,
//! `allow if { … }`) works too. Evaluation is time-bounded so a pathological policy cannot hold a request forever.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use regorus::Value;
use serde_json::json;
use ward_components::{ComponentError, ComponentMetadata};

use crate::{BuildOptions, Middleware, Refusal, Request};

/// The rule Dapr's middleware queries.
const DECISION: &str = "data.http.allow";

/// Header Dapr sets on an answer when the policy could not be evaluated.
pub const OPA_ERROR_HEADER: &str = "x-dapr-opa-error";

/// The longest one evaluation may run.
const EVAL_LIMIT: Duration = Duration::from_millis(250);

pub struct Opa {
    engine: regorus::Engine,
    default_status: StatusCode,
    /// Lowercase names of the headers passed to the policy.
    included_headers: Vec<String>,
    /// `Some(limit)` when `readBody` is on.
    read_body: Option<usize>,
}

impl Opa {
    pub fn new(metadata: &ComponentMetadata, options: &BuildOptions) -> Result<Opa, ComponentError> {
        let rego = metadata.require("rego")?;
        let engine = compile(rego).map_err(|message| ComponentError::new("rego", message))?;
        let default_status = match metadata.get_u64("defaultStatus")? {
            None => StatusCode::FORBIDDEN,
            Some(code) => status(code).ok_or_else(|| {
                ComponentError::new("defaultStatus", "expected an HTTP status code between 100 and 599")
            })?,
        };
        let included_headers = metadata
            .get("includedHeaders")
            .unwrap_or("")
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let read_body = metadata.get_bool("readBody")?.unwrap_or(false).then_some(options.max_body_bytes);
        Ok(Opa { engine, default_status, included_headers, read_body })
    }

    fn input(&self, parts: &http::request::Parts, body: &str) -> serde_json::Value {
        let path = parts.uri.path();
        let raw_query = parts.uri.query().unwrap_or("");
        let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            query.entry(unescape_query(k)).or_default().push(unescape_query(v));
        }
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for name in &self.included_headers {
            let values: Vec<&str> =
                parts.headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
            if !values.is_empty() {
                headers.insert(canonical_header_name(name), values.join(", "));
            }
        }
        json!({
            "request": {
                "method": parts.method.as_str(),
                "path": path,
                "path_parts": path.trim_matches('/').split('/').collect::<Vec<_>>(),
                "raw_query": raw_query,
                "query": query,
                "headers": headers,
                "scheme": parts.uri.scheme_str().unwrap_or("http"),
                "body": body,
            }
        })
    }

    fn evaluate(&self, input: serde_json::Value) -> Result<Decision, String> {
        let mut engine = self.engine.clone();
        let input = Value::from_json_str(&input.to_string()).map_err(|e| format!("building the input: {e}"))?;
        engine.set_input(input);
        let result = engine.eval_rule(DECISION.to_owned()).map_err(|e| format!("evaluating {DECISION}: {e}"))?;
        decision(&result)
    }

    fn error(&self, reason: String) -> Refusal {
        let mut refusal = Refusal::status_text(self.default_status, format!("policy evaluation failed: {reason}"));
        refusal.response.headers_mut().insert(OPA_ERROR_HEADER, HeaderValue::from_static("true"));
        refusal
    }
}

/// What the policy decided.
#[derive(Debug, PartialEq)]
struct Decision {
    allow: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
    status: Option<StatusCode>,
}

impl Middleware for Opa {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Request, Refusal>> {
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let (text, body) = match self.read_body {
                None => (String::new(), body),
                Some(limit) => match http_body_util::Limited::new(body, limit).collect().await {
                    Ok(collected) => {
                        let bytes: Bytes = collected.to_bytes();
                        (String::from_utf8_lossy(&bytes).into_owned(), axum::body::Body::from(bytes))
                    }
                    Err(err) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                        return Err(Refusal::status_text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("body larger than {limit} bytes, the limit for readBody"),
                        ));
                    }
                    Err(_) => return Err(Refusal::status_text(StatusCode::BAD_REQUEST, "the body could not be read")),
                },
            };
            let input = self.input(&parts, &text);
            let decision = match self.evaluate(input) {
                Ok(decision) => decision,
                Err(reason) => {
                    tracing::warn!(reason = %reason, "OPA policy evaluation failed; request refused");
                    return Err(self.error(reason));
                }
            };
            if decision.allow {
                for (name, value) in decision.headers {
                    parts.headers.insert(name, value);
                }
                return Ok(Request::from_parts(parts, body));
            }
            let mut refusal = Refusal::status_text(decision.status.unwrap_or(self.default_status), "denied by policy");
            for (name, value) in decision.headers {
                refusal.response.headers_mut().insert(name, value);
            }
            Err(refusal)
        })
    }
}

/// Parses and prepares the policy: Rego v0 first (Dapr's documented policies), then v1. Fails unless the policy
/// is package `http`.
fn compile(rego: &str) -> Result<regorus::Engine, String> {
    let attempt = |v0: bool| -> Result<regorus::Engine, String> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(v0);
        let package = engine.add_policy("policy.rego".to_owned(), rego.to_owned()).map_err(|e| e.to_string())?;
        if package != "data.http" {
            return Err(format!("the policy's package is {package:?}; Dapr's OPA middleware requires `package http`"));
        }
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: EVAL_LIMIT,
            check_interval: NonZeroU32::MIN,
        });
        Ok(engine)
    };
    match attempt(true) {
        Ok(engine) => Ok(engine),
        Err(v0_error) => attempt(false).map_err(|v1_error| {
            if v0_error == v1_error { v0_error } else { format!("{v0_error} (as Rego v1: {v1_error})") }
        }),
    }
}

fn status(code: u64) -> Option<StatusCode> {
    u16::try_from(code).ok().filter(|c| (100..=599).contains(c)).and_then(|c| StatusCode::from_u16(c).ok())
}

/// Dapr's result shapes: a bool, or `{allow, additional_headers, status_code}`.
fn decision(result: &Value) -> Result<Decision, String> {
    match result {
        Value::Bool(allow) => Ok(Decision { allow: *allow, headers: Vec::new(), status: None }),
        Value::Object(fields) => {
            let mut out = Decision { allow: false, headers: Vec::new(), status: None };
            for (key, value) in fields.iter() {
                match (key.as_string().map(|s| s.as_ref()), value) {
                    (Ok("allow"), Value::Bool(allow)) => out.allow = *allow,
                    (Ok("additional_headers"), Value::Object(headers)) => {
                        for (name, value) in headers.iter() {
                            let (Ok(name), Value::String(value)) = (name.as_string(), value) else {
                                return Err("additional_headers must map names to strings".to_owned());
                            };
                            let name = HeaderName::from_bytes(name.as_bytes())
                                .map_err(|_| "additional_headers holds an invalid header name".to_owned())?;
                            let value = HeaderValue::from_str(value)
                                .map_err(|_| "additional_headers holds an invalid header value".to_owned())?;
                            out.headers.push((name, value));
                        }
                    }
                    (Ok("status_code"), Value::Number(n)) => {
                        let code = n.as_u64().and_then(status).ok_or("status_code is not an HTTP status code")?;
                        out.status = Some(code);
                    }
                    (Ok("allow" | "additional_headers" | "status_code"), _) => {
                        return Err(format!("the result's {key} has the wrong type"));
                    }
                    _ => {}
                }
            }
            Ok(out)
        }
        Value::Undefined => Err(format!("{DECISION} is undefined")),
        _ => Err(format!("{DECISION} is neither a bool nor an object")),
    }
}

/// `Dapr-Caller-App-Id` from `dapr-caller-app-id` (Go's `textproto.CanonicalMIMEHeaderKey`).
fn canonical_header_name(lower: &str) -> String {
    let mut out = String::with_capacity(lower.len());
    let mut upper = true;
    for c in lower.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

fn unescape_query(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0_POLICY: &str = r#"
package http

default allow = false

allow = { "status_code": 418, "additional_headers": { "x-why": "teapot" } } {
    input.request.path == "/teapot"
}

allow = true {
    input.request.method == "GET"
    startswith(input.request.path, "/public/")
}

allow = { "allow": true, "additional_headers": { "x-policy": "passed" } } {
    input.request.headers["Dapr-Caller-App-Id"] == "agent"
    body := json.unmarshal(input.request.body)
    body.method == "tools/call"
    body.params.name == "search"
}
"#;

    fn opa(rego: &str, extra: &[(&str, &str)]) -> Result<Opa, ComponentError> {
        let mut meta = ComponentMetadata::new();
        meta.insert("rego", rego);
        for (k, v) in extra {
            meta.insert(*k, *v);
        }
        Opa::new(&meta, &BuildOptions { max_body_bytes: 1024 })
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(axum::body::Body::from(body.to_owned())).expect("request")
    }

    #[tokio::test]
    async fn dapr_shapes_allow_deny_and_headers() {
        let opa = opa(V0_POLICY, &[("includedHeaders", "dapr-caller-app-id, X-Other"), ("readBody", "true")]).unwrap();
        let allowed = opa.handle(request("GET", "/public/x?a=1", &[], "")).await.expect("allowed");
        assert!(allowed.headers().get("x-policy").is_none());

        let denied = opa.handle(request("POST", "/public/x", &[], "")).await.expect_err("denied");
        assert_eq!(denied.response.status(), 403);
        assert_eq!(denied.response.body().as_ref(), b"Forbidden");

        let teapot = opa.handle(request("GET", "/teapot", &[], "")).await.expect_err("teapot");
        assert_eq!(teapot.response.status(), 418);
        assert_eq!(teapot.response.headers()["x-why"], "teapot");

        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#;
        let tool = opa.handle(request("POST", "/mcp", &[("dapr-caller-app-id", "agent")], call)).await.expect("tool");
        assert_eq!(tool.headers()["x-policy"], "passed");
        // The body the policy read is still there for the app.
        let body = tool.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), call.as_bytes());

        let other_tool = call.replace("search", "delete_everything");
        let refused = opa.handle(request("POST", "/mcp", &[("dapr-caller-app-id", "agent")], &other_tool)).await;
        assert_eq!(refused.expect_err("other tool").response.status(), 403);
        let other_caller = opa.handle(request("POST", "/mcp", &[("dapr-caller-app-id", "intruder")], call)).await;
        assert_eq!(other_caller.expect_err("other caller").response.status(), 403);

        let big = "x".repeat(2048);
        let too_big = opa.handle(request("POST", "/mcp", &[], &big)).await.expect_err("too big");
        assert_eq!(too_big.response.status(), 413);
    }

    #[tokio::test]
    async fn v1_syntax_and_evaluation_errors() {
        let v1 = "package http\nimport rego.v1\nallow if input.request.query.ok[0] == \"yes\"\n";
        let opa1 = opa(v1, &[("defaultStatus", "401")]).unwrap();
        assert!(opa1.handle(request("GET", "/x?ok=yes", &[], "")).await.is_ok());
        // Undefined decision: an evaluation error, refused with defaultStatus and Dapr's header.
        let err = opa1.handle(request("GET", "/x", &[], "")).await.expect_err("undefined");
        assert_eq!(err.response.status(), 401);
        assert_eq!(err.response.headers()[OPA_ERROR_HEADER], "true");

        let not_bool = opa("package http\nallow = \"yes\"\n", &[]).unwrap();
        let err = not_bool.handle(request("GET", "/", &[], "")).await.expect_err("string result");
        assert_eq!(err.response.headers()[OPA_ERROR_HEADER], "true");
        assert_eq!(err.response.status(), 403);
    }

    #[test]
    fn bad_policies_and_metadata_name_the_field() {
        for (rego, extra) in [
            ("package http\nallow = {", vec![]),
            ("package other\nallow = true\n", vec![]),
            ("package http\ndefault allow = true\n", vec![("defaultStatus", "99")]),
            ("package http\ndefault allow = true\n", vec![("readBody", "maybe")]),
        ] {
            let err = opa(rego, &extra).err().expect(rego);
            let text = err.to_string();
            assert!(text.contains("rego") || text.contains("defaultStatus") || text.contains("readBody"), "{text}");
        }
        assert!(opa("", &[]).err().expect("missing").to_string().contains("rego"));
    }

    #[test]
    fn canonical_names_match_go() {
        assert_eq!(canonical_header_name("dapr-caller-app-id"), "Dapr-Caller-App-Id");
        assert_eq!(canonical_header_name("x"), "X");
    }
}
