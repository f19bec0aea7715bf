//! Fuzzes the MCP JSON-RPC classification an MCP server's sidecar runs on every POST to the endpoint
//! (`ward_policy::mcp`). Invariants: never panics; what the strict parser accepts, a lenient JSON parser reads the
//! same way (no duplicate keys, so no two readings); every `tools/call` it accepts names its tool with exactly the
//! string a server reads from `params.name`; a tool a matching rule denies is never allowed; a filtered
//! `tools/list` result holds only permitted tools.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ward_policy::mcp::{McpCaller, McpPolicy, MessageKind, filter_tools, parse_body};
use ward_policy::spec::{McpRuleSpec, McpSpec};

fn policy() -> McpPolicy {
    let spec = McpSpec {
        endpoint: "/mcp".into(),
        default_action: Some("deny".into()),
        rules: vec![McpRuleSpec {
            callers: vec!["agent".into()],
            allow: vec!["search".into(), "read_*".into(), "*".into()],
            deny: vec!["delete_*".into()],
        }],
        passthrough_unknown_methods: None,
    };
    McpPolicy::compile(&spec, "public", "default").expect("the fixed policy compiles")
}

fuzz_target!(|data: &[u8]| {
    let passthrough = data.first().is_some_and(|b| b & 1 == 1);
    let Ok(body) = parse_body(data, passthrough) else { return };
    let lenient: Value = serde_json::from_slice(data).expect("strictly parsed JSON is JSON");
    let messages: Vec<&Value> = match &lenient {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    assert_eq!(messages.len(), body.messages.len());
    let p = policy();
    let caller = McpCaller {
        spiffe_id: "spiffe://public/ns/default/agent",
        trust_domain: "public",
        namespace: "default",
        app_id: "agent",
    };
    for (parsed, read) in body.messages.iter().zip(messages) {
        assert_eq!(&parsed.value, read, "the strict and the lenient reading differ");
        if let MessageKind::Request { method, tool: Some(tool) } = &parsed.kind {
            assert_eq!(method, "tools/call");
            assert_eq!(read["params"]["name"].as_str(), Some(tool.as_str()));
            let decision = p.decide_tool(Some(&caller), tool);
            if tool.starts_with("delete_") {
                assert!(!decision.allowed, "deny must win: {tool:?}");
            }
        }
        let mut answer = read.clone();
        filter_tools(&mut answer, &|name| name.starts_with("read_"));
        if let Some(tools) = answer.get("result").and_then(|r| r.get("tools")).and_then(Value::as_array) {
            assert!(tools.iter().all(|t| t["name"].as_str().is_some_and(|n| n.starts_with("read_"))));
        }
    }
});
