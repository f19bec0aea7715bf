//! The one decision for an inbound service invocation: raw method + verb + caller + app protocol → either a
//! refusal before the ACL or the ACL's decision together with the normalised operation the app must receive.
//!
//! Owns: the order of the checks (verb, then method shape, then reserved gRPC services, then `accessControl`) and
//! which normaliser applies to which kind of call. The callee sidecar's ACL layer and `ward policy check` both call
//! [`decide_invocation`], so the explanation a user gets is the decision a sidecar makes.
//!
//! Does not own: where the caller identity comes from (the verified peer certificate, in the sidecar), what a
//! refusal looks like on the wire, or writing the audit event ([`crate::audit::AuditEvent::for_invocation`] builds
//! it from the outcome).

use crate::acl::{AccessControl, AclDecision, AclRequest, AppProtocol, Caller, HttpVerb, UnsupportedVerb};
use crate::path::{GrpcMethod, MethodPath, PathError, normalize_grpc_method, normalize_http_method};

/// How the call reached the callee's sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationMethod<'a> {
    /// Service invocation (`/v1.0/invoke/{id}/method/<raw>`, the `dapr-app-id` form, or gRPC `InvokeService`):
    /// `raw` is the method part still percent-encoded as received (query split off), `verb` the request method as
    /// received (e.g. `http::Method::as_str`).
    Http { raw: &'a str, verb: &'a str },
    /// A proxied gRPC call: the full method name `/package.Service/Method`.
    GrpcProxy { full_method: &'a str },
}

/// Everything [`decide_invocation`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationInput<'a> {
    /// The verified caller; `None` when it could not be authenticated.
    pub caller: Option<Caller<'a>>,
    pub method: InvocationMethod<'a>,
    /// The callee app's protocol. For [`InvocationMethod::Http`] it selects how operation names match (a gRPC app
    /// receives the call as `AppCallback/OnInvoke` and its rules match case-sensitively, without verb). A proxied
    /// gRPC call is always judged as gRPC, whatever this says.
    pub app_protocol: AppProtocol,
}

/// The normalised operation: what the ACL judged, and exactly what the app must receive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Forward with [`MethodPath::to_uri_path`] (HTTP app) or [`MethodPath::as_str`] (`OnInvoke` method).
    Http(MethodPath),
    /// Forward to `:path` [`GrpcMethod::as_str`].
    Grpc(GrpcMethod),
}

impl Operation {
    /// The string the ACL judged.
    pub fn as_str(&self) -> &str {
        match self {
            Operation::Http(m) => m.as_str(),
            Operation::Grpc(m) => m.as_str(),
        }
    }
}

/// Why a call was refused before `accessControl` was consulted. Each maps to one wire error in the sidecar:
/// [`InvocationRefusal::InvalidMethod`] → 400 `InvalidArgument`, [`InvocationRefusal::UnsupportedVerb`] → 405
/// `ERR_MALFORMED_REQUEST` (`InvalidArgument` on gRPC), [`InvocationRefusal::ReservedGrpcService`] →
/// `PermissionDenied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvocationRefusal {
    /// The method path is ambiguous or malformed ([`PathError`]).
    #[error("invalid method: {0}")]
    InvalidMethod(#[source] PathError),
    /// The request method is not one of the nine standard HTTP methods.
    #[error(transparent)]
    UnsupportedVerb(UnsupportedVerb),
    /// A proxied gRPC call to a `dapr.proto.*` service (`AppCallback`, `AppCallbackHealthCheck`,
    /// `AppCallbackAlpha`, `Dapr`): the ACL would judge the outer method while the app dispatches on the inner
    /// request (issue 12 row 5), so these are never proxied.
    #[error("gRPC service {service:?} is reserved and cannot be invoked through the proxy")]
    ReservedGrpcService { service: String },
}

/// The outcome of [`decide_invocation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationOutcome {
    /// Refused before the ACL.
    Refused(InvocationRefusal),
    /// The ACL decided (allow or deny).
    Decided(InvocationDecision),
}

/// The ACL's decision on a well-formed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationDecision {
    /// The normalised operation (judged, and to be forwarded when allowed).
    pub operation: Operation,
    /// The canonical verb (forward with [`HttpVerb::as_str`], so the app sees the method the ACL judged); `None`
    /// for proxied gRPC calls.
    pub verb: Option<HttpVerb>,
    pub decision: AclDecision,
}

impl InvocationOutcome {
    /// Whether the call may go on to the app.
    pub fn is_allowed(&self) -> bool {
        matches!(self, InvocationOutcome::Decided(d) if d.decision.allowed)
    }
}

/// A well-formed call, before `accessControl`: the result of [`prepare_invocation`]. The sidecar's normalisation
/// layer produces it and its ACL layer decides it ([`PreparedInvocation::decide`]); [`decide_invocation`] is the
/// two steps in one, so `ward policy check` and the sidecar share every step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedInvocation {
    pub operation: Operation,
    /// The canonical verb; `None` for proxied gRPC calls.
    pub verb: Option<HttpVerb>,
    /// How operation names match (a proxied gRPC call is always gRPC).
    pub app_protocol: AppProtocol,
}

/// The checks before `accessControl`, in order: the verb (an unsupported method is refused whatever the path), the
/// method's shape (normalised once), reserved gRPC services.
pub fn prepare_invocation(
    method: &InvocationMethod<'_>,
    app_protocol: AppProtocol,
) -> Result<PreparedInvocation, InvocationRefusal> {
    match *method {
        InvocationMethod::Http { raw, verb } => {
            let verb = HttpVerb::parse(verb).map_err(InvocationRefusal::UnsupportedVerb)?;
            let method = normalize_http_method(raw).map_err(InvocationRefusal::InvalidMethod)?;
            Ok(PreparedInvocation { operation: Operation::Http(method), verb: Some(verb), app_protocol })
        }
        InvocationMethod::GrpcProxy { full_method } => {
            let method = normalize_grpc_method(full_method).map_err(InvocationRefusal::InvalidMethod)?;
            if is_reserved_grpc_service(method.service()) {
                return Err(InvocationRefusal::ReservedGrpcService { service: method.service().to_owned() });
            }
            Ok(PreparedInvocation { operation: Operation::Grpc(method), verb: None, app_protocol: AppProtocol::Grpc })
        }
    }
}

impl PreparedInvocation {
    /// `accessControl`'s decision on this call for `caller`.
    pub fn decide(&self, acl: &AccessControl, caller: Option<Caller<'_>>) -> AclDecision {
        acl.decide(&AclRequest {
            caller,
            operation: self.operation.as_str(),
            verb: self.verb,
            app_protocol: self.app_protocol,
        })
    }
}

/// Decides one inbound invocation: [`prepare_invocation`], then [`PreparedInvocation::decide`].
pub fn decide_invocation(acl: &AccessControl, input: &InvocationInput<'_>) -> InvocationOutcome {
    match prepare_invocation(&input.method, input.app_protocol) {
        Err(refusal) => InvocationOutcome::Refused(refusal),
        Ok(prepared) => {
            let decision = prepared.decide(acl, input.caller);
            InvocationOutcome::Decided(InvocationDecision {
                operation: prepared.operation,
                verb: prepared.verb,
                decision,
            })
        }
    }
}

/// `dapr.proto.*` in any ASCII case: gRPC servers match case-sensitively, but a lenient one must not be the gap.
/// `service` is the service part (`dapr.proto.runtime.v1.AppCallback`) or a whole method path.
pub fn is_reserved_grpc_service(service: &str) -> bool {
    const RESERVED: &str = "dapr.proto.";
    let service = service.trim_start_matches('/');
    service.get(..RESERVED.len()).is_some_and(|p| p.eq_ignore_ascii_case(RESERVED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::MatchedRule;
    use crate::spec::AccessControlSpec;

    /// Global deny; `checkout` may do anything except `/admin/**` (any verb) and `/pkg.Admin/*` (gRPC).
    fn acl() -> AccessControl {
        let yaml = "{defaultAction: deny, policies: [{appId: checkout, namespace: default, trustDomain: public, \
                    defaultAction: allow, operations: [{name: /admin, httpVerb: ['*'], action: deny}, \
                    {name: /pkg.Admin/*, action: deny}]}]}";
        let spec: AccessControlSpec = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        AccessControl::compile(&spec).unwrap_or_else(|e| panic!("{e}"))
    }

    const CHECKOUT: Caller<'static> = Caller { trust_domain: "public", namespace: "default", app_id: "checkout" };

    #[derive(Debug, PartialEq, Eq)]
    enum Want {
        Allow(&'static str, Option<HttpVerb>),
        Deny(&'static str),
        Refused(InvocationRefusal),
    }

    struct Case {
        name: &'static str,
        caller: Option<Caller<'static>>,
        method: InvocationMethod<'static>,
        app: AppProtocol,
        want: Want,
    }

    fn http(raw: &'static str, verb: &'static str) -> InvocationMethod<'static> {
        InvocationMethod::Http { raw, verb }
    }

    fn grpc(full_method: &'static str) -> InvocationMethod<'static> {
        InvocationMethod::GrpcProxy { full_method }
    }

    fn unsupported(v: &str) -> Want {
        Want::Refused(InvocationRefusal::UnsupportedVerb(UnsupportedVerb(v.to_owned())))
    }

    fn invalid(e: PathError) -> Want {
        Want::Refused(InvocationRefusal::InvalidMethod(e))
    }

    #[test]
    fn decision_table() {
        use AppProtocol::{Grpc, Http};
        use HttpVerb::{Delete, Get, Post};
        let c = Some(CHECKOUT);
        let cases = [
            Case {
                name: "allowed",
                caller: c,
                method: http("orders/1", "GET"),
                app: Http,
                want: Want::Allow("orders/1", Some(Get)),
            },
            Case { name: "denied", caller: c, method: http("admin", "GET"), app: Http, want: Want::Deny("admin") },
            Case {
                name: "denied, upper case",
                caller: c,
                method: http("ADMIN/x", "POST"),
                app: Http,
                want: Want::Deny("ADMIN/x"),
            },
            Case {
                name: "verb in lower case",
                caller: c,
                method: http("orders", "post"),
                app: Http,
                want: Want::Allow("orders", Some(Post)),
            },
            Case {
                name: "verb in mixed case",
                caller: c,
                method: http("orders", "dElEtE"),
                app: Http,
                want: Want::Allow("orders", Some(Delete)),
            },
            // Issue 12 row 2: an unknown method used to become "no verb" and reach the app by the app default.
            Case {
                name: "FOO on a denied path",
                caller: c,
                method: http("admin", "FOO"),
                app: Http,
                want: unsupported("FOO"),
            },
            Case {
                name: "PROPFIND",
                caller: c,
                method: http("orders", "PROPFIND"),
                app: Http,
                want: unsupported("PROPFIND"),
            },
            Case { name: "empty verb", caller: c, method: http("orders", ""), app: Http, want: unsupported("") },
            Case {
                name: "verb refused before the path",
                caller: c,
                method: http("a%2Fb", "FOO"),
                app: Http,
                want: unsupported("FOO"),
            },
            Case {
                name: "unknown verb to a gRPC app",
                caller: c,
                method: http("admin", "FOO"),
                app: Grpc,
                want: unsupported("FOO"),
            },
            Case {
                name: "encoded slash",
                caller: c,
                method: http("admin%2F..%2Fx", "GET"),
                app: Http,
                want: invalid(PathError::EncodedSlash { offset: 5 }),
            },
            Case {
                name: "dotdot out",
                caller: c,
                method: http("../admin", "GET"),
                app: Http,
                want: invalid(PathError::EscapesRoot),
            },
            Case {
                name: "dotdot inside",
                caller: c,
                method: http("x/../admin", "GET"),
                app: Http,
                want: Want::Deny("admin"),
            },
            Case {
                name: "dotless i",
                caller: c,
                method: http("adm%C4%B1n", "GET"),
                app: Http,
                want: invalid(PathError::AsciiConfusable { ch: '\u{131}' }),
            },
            Case {
                name: "fullwidth A",
                caller: c,
                method: http("%EF%BC%A1dmin", "GET"),
                app: Http,
                want: invalid(PathError::AsciiConfusable { ch: '\u{ff21}' }),
            },
            Case {
                name: "no caller: global deny",
                caller: None,
                method: http("orders", "GET"),
                app: Http,
                want: Want::Deny("orders"),
            },
            Case {
                name: "gRPC app via OnInvoke: case-sensitive",
                caller: c,
                method: http("ADMIN", "GET"),
                app: Grpc,
                want: Want::Allow("ADMIN", Some(Get)),
            },
            Case {
                name: "gRPC app via OnInvoke: exact",
                caller: c,
                method: http("admin", "GET"),
                app: Grpc,
                want: Want::Deny("admin"),
            },
            Case {
                name: "proxy allowed",
                caller: c,
                method: grpc("/pkg.Orders/Get"),
                app: Grpc,
                want: Want::Allow("/pkg.Orders/Get", None),
            },
            Case {
                name: "proxy denied",
                caller: c,
                method: grpc("/pkg.Admin/Drop"),
                app: Grpc,
                want: Want::Deny("/pkg.Admin/Drop"),
            },
            Case {
                name: "proxy is gRPC whatever the app says",
                caller: c,
                method: grpc("/pkg.Admin/Drop"),
                app: Http,
                want: Want::Deny("/pkg.Admin/Drop"),
            },
            Case {
                name: "proxy bad shape",
                caller: c,
                method: grpc("/a/b/c"),
                app: Grpc,
                want: invalid(PathError::WrongSegmentCount { segments: 3 }),
            },
            Case {
                name: "proxy to AppCallback",
                caller: c,
                method: grpc("/dapr.proto.runtime.v1.AppCallback/OnInvoke"),
                app: Grpc,
                want: Want::Refused(InvocationRefusal::ReservedGrpcService {
                    service: "dapr.proto.runtime.v1.AppCallback".into(),
                }),
            },
            Case {
                name: "proxy to Dapr, odd case",
                caller: c,
                method: grpc("/DAPR.Proto.runtime.v1.Dapr/GetState"),
                app: Grpc,
                want: Want::Refused(InvocationRefusal::ReservedGrpcService {
                    service: "DAPR.Proto.runtime.v1.Dapr".into(),
                }),
            },
            Case {
                name: "proxy to a look-alike",
                caller: c,
                method: grpc("/daprx.proto.Svc/M"),
                app: Grpc,
                want: Want::Allow("/daprx.proto.Svc/M", None),
            },
        ];
        let acl = acl();
        for case in cases {
            let input = InvocationInput { caller: case.caller, method: case.method, app_protocol: case.app };
            let outcome = decide_invocation(&acl, &input);
            let got = match &outcome {
                InvocationOutcome::Refused(r) => Want::Refused(r.clone()),
                InvocationOutcome::Decided(d) if d.decision.allowed => {
                    assert_eq!(d.verb, if let Want::Allow(_, v) = case.want { v } else { d.verb }, "{}", case.name);
                    let Want::Allow(op, v) = case.want else {
                        panic!("case {:?}: allowed {:?}", case.name, d.operation)
                    };
                    assert_eq!(d.operation.as_str(), op, "case {:?}", case.name);
                    Want::Allow(op, v)
                }
                InvocationOutcome::Decided(d) => {
                    let Want::Deny(op) = case.want else { panic!("case {:?}: denied, {:?}", case.name, d) };
                    assert_eq!(d.operation.as_str(), op, "case {:?}", case.name);
                    Want::Deny(op)
                }
            };
            assert_eq!(got, case.want, "case {:?}", case.name);
            assert_eq!(outcome.is_allowed(), matches!(case.want, Want::Allow(..)), "case {:?}", case.name);
        }
    }

    #[test]
    fn operation_kinds_and_rules() {
        let acl = acl();
        let input =
            InvocationInput { caller: Some(CHECKOUT), method: http("a%20b/c", "GET"), app_protocol: AppProtocol::Http };
        let InvocationOutcome::Decided(d) = decide_invocation(&acl, &input) else { panic!("refused") };
        assert!(matches!(&d.operation, Operation::Http(m) if m.to_uri_path() == "/a%20b/c"));
        assert!(matches!(d.decision.rule, MatchedRule::AppDefault { policy: 0, .. }));
        let input = InvocationInput { method: grpc("/pkg.Admin/X"), ..input };
        let InvocationOutcome::Decided(d) = decide_invocation(&acl, &input) else { panic!("refused") };
        assert!(matches!(&d.operation, Operation::Grpc(m) if m.service() == "pkg.Admin"));
        assert!(!d.decision.allowed);
    }
}
