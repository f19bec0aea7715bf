//! Fuzzes access-control compilation and evaluation. The input is split on newlines: line 0 picks protocol and
//! verb, line 1 is the request operation, the remaining lines are operation names of one policy (a line starting
//! with `!` denies). Invariants: never panics; a decision is deterministic; HTTP operations are judged
//! case-insensitively; with no policy everything is allowed; a caller without identity always gets the global
//! default; the reported rule points at an operation that exists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_policy::spec::{AccessControlSpec, AppPolicySpec, OperationSpec};
use ward_policy::{AccessControl, AclRequest, AppProtocol, Caller, HttpVerb, MatchedRule};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let selector = lines.next().unwrap_or_default().bytes().next().unwrap_or(0);
    let operation = lines.next().unwrap_or_default();
    let operations: Vec<OperationSpec> = lines
        .take(16)
        .map(|line| {
            let (name, action) = match line.strip_prefix('!') {
                Some(rest) => (rest, "deny"),
                None => (line, "allow"),
            };
            OperationSpec {
                name: name.to_owned(),
                http_verb: vec!["GET".into(), "*".into()],
                action: Some(action.into()),
            }
        })
        .collect();
    let operation_count = operations.len();
    let spec = AccessControlSpec {
        default_action: Some(if selector & 1 == 0 { "deny" } else { "allow" }.into()),
        trust_domain: None,
        policies: Some(vec![AppPolicySpec {
            app_id: "caller".into(),
            namespace: "default".into(),
            trust_domain: "public".into(),
            default_action: (selector & 2 == 0).then(|| "deny".into()),
            operations,
        }]),
    };
    let Ok(acl) = AccessControl::compile(&spec) else { return };

    let protocol = if selector & 4 == 0 { AppProtocol::Http } else { AppProtocol::Grpc };
    let verb = (selector & 8 == 0).then(|| HttpVerb::ALL[usize::from(selector >> 4) % HttpVerb::ALL.len()]);
    let caller = Some(Caller { trust_domain: "public", namespace: "default", app_id: "caller" });
    let req = AclRequest { caller, operation, verb, app_protocol: protocol };

    let decision = acl.decide(&req);
    assert_eq!(decision, acl.decide(&req));
    if let MatchedRule::Operation { policy, operation, .. } = decision.rule {
        assert_eq!(policy, 0);
        assert!(operation < operation_count);
    }
    if protocol == AppProtocol::Http {
        let upper = operation.to_ascii_uppercase();
        let lower = operation.to_ascii_lowercase();
        let d1 = acl.decide(&AclRequest { operation: &upper, ..req });
        let d2 = acl.decide(&AclRequest { operation: &lower, ..req });
        assert_eq!(d1, d2, "{upper:?} vs {lower:?}");
    }

    let anonymous = acl.decide(&AclRequest { caller: None, ..req });
    assert!(matches!(anonymous.rule, MatchedRule::GlobalDefault(_)));
    assert_eq!(anonymous.allowed, selector & 1 == 1);
    assert!(AccessControl::allow_all().decide(&req).allowed);
});
