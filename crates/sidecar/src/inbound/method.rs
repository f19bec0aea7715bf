//! Normalise the method once. The internal path names what is called: `/v1.0/internal/invoke/<raw method>` (an
//! HTTP service invocation; the request's own method is the verb) or `/v1.0/internal/grpc/<pkg.Service/Method>`
//! (a proxied gRPC call). The normalised operation goes into the request extensions as [`InboundCall`]; every later
//! layer judges, and the app channel delivers, exactly that value.
//!
//! Refused here, before access control: unknown endpoints, invalid or ambiguous method paths, HTTP methods outside
//! the nine standard ones, and `dapr.proto.*` services on the proxy path (an app trusts the inner fields of
//! `AppCallback/OnInvoke`, `OnTopicEvent`, … so proxying them would let a caller pick the operation the ACL never saw).

use ward_policy::{AppProtocol, GrpcMethod, HttpVerb, MethodPath, normalize_grpc_method, normalize_http_method};

use super::InboundRequest;
use super::check::Check;
use crate::error::InboundError;

/// The path prefix of invocations between sidecars.
pub(crate) const INTERNAL_INVOKE_PREFIX: &str = "/v1.0/internal/invoke/";
/// The path prefix of proxied gRPC calls between sidecars (followed by `pkg.Service/Method`).
pub(crate) const INTERNAL_GRPC_PREFIX: &str = "/v1.0/internal/grpc/";

/// What is being called, normalised once.
#[derive(Debug, Clone)]
pub(crate) enum InboundCall {
    /// A service invocation: the normalised method path and the verb.
    Invoke { method: MethodPath, verb: HttpVerb },
    /// A proxied gRPC call: `/pkg.Service/Method`.
    Grpc { method: GrpcMethod },
}

impl InboundCall {
    /// The operation as the ACL judges it and the audit records it.
    pub(crate) fn operation(&self) -> &str {
        match self {
            Self::Invoke { method, .. } => method.as_str(),
            Self::Grpc { method } => method.as_str(),
        }
    }

    /// The verb as the ACL judges it (`None`: gRPC).
    pub(crate) fn verb(&self) -> Option<HttpVerb> {
        match self {
            Self::Invoke { verb, .. } => Some(*verb),
            Self::Grpc { .. } => None,
        }
    }
}

/// Parses an HTTP method: the nine standard ones in any ASCII case; anything else is refused (Dapr maps unknown
/// methods to POST; ward does not, so `FOO /admin` cannot slip past a verb-specific deny).
pub(crate) fn parse_verb(method: &http::Method) -> Result<HttpVerb, InboundError> {
    method.as_str().parse::<HttpVerb>().map_err(|_| InboundError::UnsupportedVerb(method.as_str().to_owned()))
}

/// Whether a gRPC method belongs to one of Dapr's own services, which are never proxied.
pub(crate) fn is_reserved_grpc_service(method: &str) -> bool {
    let service = method.trim_start_matches('/');
    service.get(.."dapr.proto.".len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case("dapr.proto."))
}

/// The normalisation layer's check.
#[derive(Clone)]
pub(crate) struct NormaliseMethod {
    /// How the app is reached, which decides how operation names match (`AppProtocol` of the ACL).
    pub(crate) app_protocol: AppProtocol,
}

impl Check for NormaliseMethod {
    fn check(&self, request: &mut InboundRequest) -> Result<(), InboundError> {
        let call = parse_call(request.method(), request.uri().path())?;
        request.extensions_mut().insert(call);
        Ok(())
    }
}

impl NormaliseMethod {
    /// The ACL's view of the callee app's protocol for this call.
    pub(crate) fn protocol_for(&self, call: &InboundCall) -> AppProtocol {
        match call {
            InboundCall::Invoke { .. } => self.app_protocol,
            InboundCall::Grpc { .. } => AppProtocol::Grpc,
        }
    }
}

/// The pure part: internal path + method → the call, or the refusal.
pub(crate) fn parse_call(method: &http::Method, path: &str) -> Result<InboundCall, InboundError> {
    if let Some(raw) = path.strip_prefix(INTERNAL_INVOKE_PREFIX) {
        let verb = parse_verb(method)?;
        let method = normalize_http_method(raw).map_err(|err| InboundError::InvalidMethod(err.to_string()))?;
        return Ok(InboundCall::Invoke { method, verb });
    }
    if let Some(raw) = path.strip_prefix(INTERNAL_GRPC_PREFIX) {
        let raw = format!("/{raw}");
        let method = normalize_grpc_method(&raw).map_err(|err| InboundError::InvalidMethod(err.to_string()))?;
        if is_reserved_grpc_service(method.as_str()) {
            return Err(InboundError::ReservedService(method.as_str().to_owned()));
        }
        return Ok(InboundCall::Grpc { method });
    }
    Err(InboundError::UnknownEndpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_refusals() {
        let m = |s: &str| http::Method::from_bytes(s.as_bytes()).unwrap();
        let ok = parse_call(&m("post"), "/v1.0/internal/invoke/orders/1").unwrap();
        assert_eq!(ok.operation(), "orders/1");
        assert_eq!(ok.verb(), Some(HttpVerb::Post));
        for verb in ["FOO", "PROPFIND", "get2"] {
            assert_eq!(
                parse_call(&m(verb), "/v1.0/internal/invoke/admin").unwrap_err(),
                InboundError::UnsupportedVerb(verb.to_owned())
            );
        }
        assert!(matches!(
            parse_call(&m("GET"), "/v1.0/internal/invoke/a%2Fb").unwrap_err(),
            InboundError::InvalidMethod(_)
        ));
        assert_eq!(parse_call(&m("GET"), "/v1.0/other").unwrap_err(), InboundError::UnknownEndpoint);
        let grpc = parse_call(&m("POST"), "/v1.0/internal/grpc/pkg.Svc/Do").unwrap();
        assert_eq!(grpc.operation(), "/pkg.Svc/Do");
        for reserved in [
            "dapr.proto.runtime.v1.AppCallback/OnInvoke",
            "dapr.proto.runtime.v1.AppCallback/OnTopicEvent",
            "dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck",
            "dapr.proto.runtime.v1.AppCallbackAlpha/OnBulkTopicEventAlpha1",
            "dapr.proto.runtime.v1.Dapr/GetState",
            "Dapr.Proto.runtime.v1.AppCallback/OnInvoke",
        ] {
            assert!(
                matches!(
                    parse_call(&m("POST"), &format!("/v1.0/internal/grpc/{reserved}")),
                    Err(InboundError::ReservedService(_)) | Err(InboundError::InvalidMethod(_))
                ),
                "{reserved}"
            );
        }
    }
}
