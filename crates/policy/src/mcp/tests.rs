use serde_json::json;

use super::*;
use crate::spec::McpRuleSpec;

fn policy(default_action: &str) -> McpPolicy {
    let spec = McpSpec {
        endpoint: "/mcp".into(),
        default_action: Some(default_action.into()),
        rules: vec![
            McpRuleSpec {
                callers: vec!["research-agent".into()],
                allow: vec!["search_docs".into(), "read_*".into()],
                deny: vec![],
            },
            McpRuleSpec {
                callers: vec!["ops-agent".into(), "spiffe://public/ns/other/auditor".into()],
                allow: vec!["*".into()],
                deny: vec!["delete_*".into()],
            },
        ],
        passthrough_unknown_methods: None,
    };
    McpPolicy::compile(&spec, "public", "default").unwrap()
}

fn caller<'a>(spiffe_id: &'a str, namespace: &'a str, app_id: &'a str) -> McpCaller<'a> {
    McpCaller { spiffe_id, trust_domain: "public", namespace, app_id }
}

#[test]
fn deny_wins_then_allow_then_default() {
    let p = policy("deny");
    let research = caller("spiffe://public/ns/default/research-agent", "default", "research-agent");
    let ops = caller("spiffe://public/ns/default/ops-agent", "default", "ops-agent");
    let auditor = caller("spiffe://public/ns/other/auditor", "other", "auditor");
    let foreign_ns = caller("spiffe://public/ns/other/research-agent", "other", "research-agent");
    let cases: &[(&McpCaller<'_>, &str, bool, &str)] = &[
        (&research, "search_docs", true, "spec.ward.mcp.rules[0].allow[0]"),
        (&research, "read_file", true, "spec.ward.mcp.rules[0].allow[1]"),
        (&research, "read", false, "spec.ward.mcp.defaultAction"),
        (&research, "delete_repo", false, "spec.ward.mcp.defaultAction"),
        (&ops, "delete_repo", false, "spec.ward.mcp.rules[1].deny[0]"),
        (&ops, "anything", true, "spec.ward.mcp.rules[1].allow[0]"),
        (&auditor, "delete_x", false, "spec.ward.mcp.rules[1].deny[0]"),
        (&auditor, "search_docs", true, "spec.ward.mcp.rules[1].allow[0]"),
        // An app id matches only in the callee's namespace.
        (&foreign_ns, "search_docs", false, "spec.ward.mcp.defaultAction"),
        (&research, "SEARCH_DOCS", false, "spec.ward.mcp.defaultAction"),
        (&research, "search_docs\u{200b}", false, "spec.ward.mcp.defaultAction"),
    ];
    for (who, tool, allowed, rule) in cases {
        let decision = p.decide_tool(Some(who), tool);
        assert_eq!((decision.allowed, decision.rule.as_str()), (*allowed, *rule), "{} {tool}", who.app_id);
    }
    assert!(!p.decide_tool(None, "search_docs").allowed, "an unverified caller matches no rule");
    assert!(policy("allow").decide_tool(None, "x").allowed);
    assert_eq!(policy("deny").unbounded_rules(), Vec::<usize>::new());
}

#[test]
fn bad_rules_name_the_field() {
    let compile = |spec: McpSpec| McpPolicy::compile(&spec, "public", "default").unwrap_err().to_string();
    let rule = |callers: &[&str], allow: &[&str]| McpRuleSpec {
        callers: callers.iter().map(|s| s.to_string()).collect(),
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: vec![],
    };
    let spec = |rules: Vec<McpRuleSpec>| McpSpec { endpoint: "/mcp".into(), rules, ..McpSpec::default() };
    assert!(compile(McpSpec { endpoint: "mcp".into(), ..McpSpec::default() }).contains("endpoint"));
    assert!(compile(McpSpec { endpoint: "/../x".into(), ..McpSpec::default() }).contains("endpoint"));
    assert!(
        compile(McpSpec { endpoint: "/mcp".into(), default_action: Some("maybe".into()), ..McpSpec::default() })
            .contains("defaultAction")
    );
    assert!(compile(spec(vec![rule(&[], &["x"])])).contains("rules[0].callers"));
    assert!(compile(spec(vec![rule(&["a*"], &["x"])])).contains("rules[0].callers[0]"));
    assert!(compile(spec(vec![rule(&["spiffe://"], &["x"])])).contains("callers[0]"));
    assert!(compile(spec(vec![rule(&["a"], &["x", "*_admin"])])).contains("rules[0].allow[1]"));
    assert!(compile(spec(vec![rule(&["a"], &[""])])).contains("rules[0].allow[0]"));
}

#[test]
fn json_rpc_edge_cases() {
    let tool = |name: &str| json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}});
    // (body, passthrough, expected: Ok(number of messages) or Err(code))
    let huge: Vec<_> = (0..=MAX_BATCH).map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping"})).collect();
    let cases: Vec<(String, bool, Result<usize, i64>)> = vec![
        (tool("search_docs").to_string(), false, Ok(1)),
        (tool("検索").to_string(), false, Ok(1)),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#.into(),
            false,
            Err(-32700),
        ),
        (r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#.into(), false, Err(-32700)),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#.into(), false, Err(-32602)),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#.into(), false, Err(-32602)),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#.into(), false, Err(-32602)),
        (r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into(), false, Ok(1)),
        (r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#.into(), false, Err(-32601)),
        (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#.into(), false, Err(-32600)),
        (r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#.into(), false, Err(-32600)),
        (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.into(), false, Err(-32600)),
        (r#"{"id":1,"method":"ping"}"#.into(), false, Err(-32600)),
        (r#"{"jsonrpc":"2.0","id":1,"method":"admin/exec"}"#.into(), false, Err(-32601)),
        (r#"{"jsonrpc":"2.0","id":1,"method":"admin/exec"}"#.into(), true, Ok(1)),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#.into(), false, Err(-32600)),
        (r#"{"jsonrpc":"2.0","id":"s1","result":{}}"#.into(), false, Ok(1)),
        (r#"{"jsonrpc":"2.0","id":"s1","result":{},"error":{}}"#.into(), false, Err(-32600)),
        (r#"[]"#.into(), false, Err(-32600)),
        (r#"[1]"#.into(), false, Err(-32600)),
        (json!([tool("a"), tool("b"), {"jsonrpc": "2.0", "method": "notifications/x"}]).to_string(), false, Ok(3)),
        (Value::Array(huge).to_string(), false, Err(-32600)),
        ("{".into(), false, Err(-32700)),
        ("".into(), false, Err(-32700)),
    ];
    for (body, passthrough, expected) in cases {
        let got = parse_body(body.as_bytes(), passthrough).map(|b| b.messages.len()).map_err(|e| e.code());
        assert_eq!(got, expected, "{}", &body[..body.len().min(120)]);
    }
    let parsed = parse_body(tool("検索").to_string().as_bytes(), false).unwrap();
    assert_eq!(
        parsed.messages[0].kind,
        MessageKind::Request { method: "tools/call".into(), tool: Some("検索".into()) }
    );
}

#[test]
fn routing_headers_must_agree_with_the_body() {
    let single =
        parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#, false).unwrap();
    assert!(check_routing_headers(&single, None, None).is_ok());
    assert!(check_routing_headers(&single, Some("tools/call"), Some("search")).is_ok());
    assert!(check_routing_headers(&single, Some("tools/list"), None).is_err());
    assert!(check_routing_headers(&single, Some("tools/call"), Some("delete")).is_err());
    let unicode =
        parse_body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"検索"}}"#.as_bytes(), false)
            .unwrap();
    assert!(check_routing_headers(&unicode, Some("tools/call"), Some("=?base64?5qSc57Si?=")).is_ok());
    assert!(check_routing_headers(&unicode, Some("tools/call"), Some("=?base64?!!?=")).is_err());
    let batch = parse_body(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, false).unwrap();
    assert!(check_routing_headers(&batch, Some("ping"), None).is_err());
    let ping = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, false).unwrap();
    assert!(check_routing_headers(&ping, Some("ping"), Some("x")).is_err(), "ping has no name");
}

#[test]
fn tools_list_results_are_filtered() {
    let mut answer = json!({"jsonrpc": "2.0", "id": 3, "result": {
        "tools": [{"name": "search_docs"}, {"name": "delete_repo"}, {"title": "no name"}, {"name": "read_x"}],
        "nextCursor": "c2"
    }});
    let removed = filter_tools(&mut answer, &|name| name != "delete_repo");
    assert_eq!(removed, 2);
    assert_eq!(answer["result"]["tools"], json!([{"name": "search_docs"}, {"name": "read_x"}]));
    assert_eq!(answer["result"]["nextCursor"], "c2", "pagination passes through");
    let mut other = json!({"jsonrpc": "2.0", "id": 4, "result": {"content": []}});
    assert_eq!(filter_tools(&mut other, &|_| false), 0);
    let body = parse_body(
        br#"[{"jsonrpc":"2.0","id":3,"method":"tools/list"},{"jsonrpc":"2.0","id":"x","method":"ping"}]"#,
        false,
    )
    .unwrap();
    assert_eq!(tools_list_ids(&body), HashSet::from(["3".to_owned()]));
}
