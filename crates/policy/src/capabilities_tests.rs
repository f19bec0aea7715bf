use super::*;

const SPEC: &str = r#"
grants:
- appId: workflow-runtime
  namespace: default
  capabilities: ["managed-table:agent-create", "secrets:internal"]
- appId: analytics
  namespace: default
  capabilities: ["managed-table:read"]
- spiffeId: spiffe://other.td/ns/batch/loader
  capabilities: ["managed-table:read", "managed-table:agent-create"]
routes:
- name: /tables/agent/**
  httpVerb: [POST]
  requires: ["managed-table:agent-create"]
- name: /tables/*/rows
  httpVerb: [GET]
  requires: ["managed-table:read"]
- name: /secrets/**
  requires: ["secrets:internal"]
- name: /tables/agent/admin
  requires: ["secrets:internal"]
"#;

fn compiled() -> Capabilities {
    let spec: CapabilitiesSpec = serde_saphyr::from_str(SPEC).unwrap();
    Capabilities::compile(&spec, "public").unwrap()
}

fn caller<'a>(td: &'a str, ns: &'a str, app: &'a str) -> Option<Caller<'a>> {
    Some(Caller { trust_domain: td, namespace: ns, app_id: app })
}

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    NoRoute,
    Allowed(&'static [usize], &'static [&'static str]),
    Missing(usize, &'static str),
}

#[test]
fn decisions_table() {
    struct Case {
        name: &'static str,
        caller: Option<Caller<'static>>,
        verb: Option<HttpVerb>,
        path: &'static str,
        protocol: AppProtocol,
        expected: Expected,
    }
    use AppProtocol::{Grpc, Http};
    use Expected::*;
    let wf = caller("public", "default", "workflow-runtime");
    let an = caller("public", "default", "analytics");
    let post = Some(HttpVerb::Post);
    let get = Some(HttpVerb::Get);
    let cases = [
        Case {
            name: "holder allowed",
            caller: wf,
            verb: post,
            path: "tables/agent/new",
            protocol: Http,
            expected: Allowed(&[0], &["managed-table:agent-create"]),
        },
        Case {
            name: "missing capability",
            caller: an,
            verb: post,
            path: "tables/agent/new",
            protocol: Http,
            expected: Missing(0, "managed-table:agent-create"),
        },
        Case {
            name: "verb not listed: route does not apply",
            caller: an,
            verb: get,
            path: "tables/agent/new",
            protocol: Http,
            expected: NoRoute,
        },
        Case {
            name: "single-segment wildcard",
            caller: an,
            verb: get,
            path: "tables/t1/rows",
            protocol: Http,
            expected: Allowed(&[1], &["managed-table:read"]),
        },
        Case {
            name: "wildcard does not cross segments",
            caller: an,
            verb: get,
            path: "tables/a/b/rows",
            protocol: Http,
            expected: NoRoute,
        },
        Case { name: "no route", caller: an, verb: get, path: "health", protocol: Http, expected: NoRoute },
        Case {
            name: "route without verbs applies to every verb",
            caller: an,
            verb: Some(HttpVerb::Delete),
            path: "secrets/x",
            protocol: Http,
            expected: Missing(2, "secrets:internal"),
        },
        Case {
            name: "several routes: all requirements",
            caller: wf,
            verb: post,
            path: "tables/agent/admin",
            protocol: Http,
            expected: Allowed(&[0, 3], &["managed-table:agent-create", "secrets:internal"]),
        },
        Case {
            name: "several routes: one missing denies",
            caller: caller("other.td", "batch", "loader"),
            verb: post,
            path: "tables/agent/admin",
            protocol: Http,
            expected: Missing(3, "secrets:internal"),
        },
        Case {
            name: "grant by SPIFFE ID",
            caller: caller("other.td", "batch", "loader"),
            verb: post,
            path: "tables/agent/x",
            protocol: Http,
            expected: Allowed(&[0], &["managed-table:agent-create"]),
        },
        Case {
            name: "appId grant is for the own trust domain only",
            caller: caller("other.td", "default", "workflow-runtime"),
            verb: post,
            path: "tables/agent/x",
            protocol: Http,
            expected: Missing(0, "managed-table:agent-create"),
        },
        Case {
            name: "namespace must match",
            caller: caller("public", "prod", "workflow-runtime"),
            verb: post,
            path: "tables/agent/x",
            protocol: Http,
            expected: Missing(0, "managed-table:agent-create"),
        },
        Case {
            name: "unverified caller holds nothing",
            caller: None,
            verb: post,
            path: "tables/agent/x",
            protocol: Http,
            expected: Missing(0, "managed-table:agent-create"),
        },
        Case {
            name: "unverified caller, no route",
            caller: None,
            verb: get,
            path: "health",
            protocol: Http,
            expected: NoRoute,
        },
        Case {
            name: "HTTP names fold ASCII case like the ACL",
            caller: an,
            verb: post,
            path: "Tables/AGENT/x",
            protocol: Http,
            expected: Missing(0, "managed-table:agent-create"),
        },
        Case {
            name: "no verb: every route whose name matches",
            caller: an,
            verb: None,
            path: "tables/agent/x",
            protocol: Http,
            expected: Missing(0, "managed-table:agent-create"),
        },
        Case {
            name: "gRPC: exact case, no verb",
            caller: wf,
            verb: None,
            path: "secrets/Get",
            protocol: Grpc,
            expected: Allowed(&[2], &["secrets:internal"]),
        },
        Case {
            name: "gRPC: case-sensitive",
            caller: an,
            verb: None,
            path: "Secrets/Get",
            protocol: Grpc,
            expected: NoRoute,
        },
        Case {
            name: "prefix rule of the ACL: /x matches /x/y",
            caller: an,
            verb: post,
            path: "tables/agent/admin/deep",
            protocol: Http,
            expected: Missing(0, "managed-table:agent-create"),
        },
    ];
    let caps = compiled();
    for c in cases {
        let req = CapabilityRequest { caller: c.caller, operation: c.path, verb: c.verb, app_protocol: c.protocol };
        let got = match caps.decide(&req) {
            CapabilityDecision::NoRoute => Expected::NoRoute,
            CapabilityDecision::Allowed { routes, used } => {
                let routes: &'static [usize] = Box::leak(routes.into_boxed_slice());
                let used: Vec<&'static str> =
                    used.into_iter().map(|s| &*Box::leak(s.to_owned().into_boxed_str())).collect();
                Expected::Allowed(routes, Box::leak(used.into_boxed_slice()))
            }
            CapabilityDecision::Missing { route, capability, .. } => {
                Expected::Missing(route, Box::leak(capability.to_owned().into_boxed_str()))
            }
        };
        assert_eq!(got, c.expected, "{}", c.name);
    }
}

#[test]
fn bad_specs_are_refused_naming_the_field() {
    let compile = |yaml: &str| {
        let spec: CapabilitiesSpec = serde_saphyr::from_str(yaml).unwrap();
        Capabilities::compile(&spec, "public").map(|_| ()).map_err(|e| e.to_string())
    };
    let cases: &[(&str, &str)] = &[
        ("routes:\n- name: /x\n  requires: [Admin]\n", "routes[0].requires[0]: invalid capability name"),
        ("routes:\n- name: /x\n  requires: ['*']\n", "routes[0].requires[0]"),
        ("routes:\n- name: /x\n  requires: ['a::b']\n", "routes[0].requires[0]"),
        ("routes:\n- name: /x\n  requires: []\n", "routes[0].requires: is empty"),
        ("routes:\n- name: /x\n  httpVerb: [PSOT]\n  requires: [a]\n", "routes[0].httpVerb[0]: unknown HTTP verb"),
        ("routes:\n- name: /x/\n  requires: [a]\n", "routes[0].name"),
        ("grants:\n- appId: a\n  namespace: n\n  capabilities: ['*']\n", "grants[0].capabilities[0]"),
        ("grants:\n- appId: '*'\n  namespace: n\n  capabilities: [a]\n", "grants[0]: appId, namespace"),
        ("grants:\n- appId: a\n  namespace: '*'\n  capabilities: [a]\n", "grants[0]: appId, namespace"),
        ("grants:\n- appId: a\n  capabilities: [a]\n", "grants[0]: appId needs a namespace"),
        ("grants:\n- capabilities: [a]\n", "grants[0]: needs appId"),
        ("grants:\n- appId: a\n  namespace: n\n  spiffeId: spiffe://td/ns/n/a\n  capabilities: [a]\n", "not both"),
        ("grants:\n- spiffeId: spiffe://td/a\n  capabilities: [a]\n", "is not spiffe://"),
        ("grants:\n- spiffeId: spiffe://td/ns/*/a\n  capabilities: [a]\n", "grants[0]: appId, namespace"),
        ("grants:\n- appId: a\n  namespace: n\n  capabilities: []\n", "grants[0].capabilities: is empty"),
    ];
    for (yaml, needle) in cases {
        let err = compile(yaml).expect_err(yaml);
        assert!(err.contains(needle), "{yaml}: {err}");
    }
    assert!(compile("routes:\n- name: /x\n  httpVerb: ['*', get]\n  requires: [a-b:c1]\n").is_ok());
}

#[test]
fn grants_for_one_caller_are_united() {
    let spec: CapabilitiesSpec = serde_saphyr::from_str(
        "grants:\n- appId: a\n  namespace: n\n  capabilities: [x]\n- spiffeId: spiffe://public/ns/n/a\n  capabilities: [y, x]\n",
    )
    .unwrap();
    let caps = Capabilities::compile(&spec, "public").unwrap();
    let held: Vec<&str> =
        caps.held(Caller { trust_domain: "public", namespace: "n", app_id: "a" }).iter().map(|c| &**c).collect();
    assert_eq!(held, ["x", "y"]);
}

#[test]
fn lint_finds_unheld_requirements_and_unused_grants() {
    let spec: CapabilitiesSpec = serde_saphyr::from_str(
        "grants:\n- appId: a\n  namespace: n\n  capabilities: [x, unused]\nroutes:\n- name: /r\n  requires: [x, nobody-has]\n",
    )
    .unwrap();
    let lint = Capabilities::compile(&spec, "public").unwrap().lint();
    assert_eq!(lint.len(), 2, "{lint:?}");
    assert!(lint[0].contains("routes[0] (/r): requires \"nobody-has\", which no grant holds"), "{lint:?}");
    assert!(lint[1].contains("(spiffe://public/ns/n/a): capability \"unused\" is never required"), "{lint:?}");
    assert!(compiled().lint().is_empty(), "{:?}", compiled().lint());
}

#[test]
fn none_decides_nothing() {
    let req = CapabilityRequest { caller: None, operation: "x", verb: None, app_protocol: AppProtocol::Http };
    assert_eq!(Capabilities::none().decide(&req), CapabilityDecision::NoRoute);
    assert!(!Capabilities::none().is_configured());
}
