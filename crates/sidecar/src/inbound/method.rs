//! Normalise the method once. The internal path names what is called: `/v1.0/internal/invoke/<raw method>` (an
//! HTTP service invocation; the request's own method is the verb) or `/v1.0/internal/grpc/<pkg.Service/Method>`
//! (a proxied gRPC call). `ward_policy::prepare_invocation` (the first half of the one invocation decision that
//! `ward policy check` uses too) turns it into a [`PreparedInvocation`] in the request extensions; every later
//! layer judges, and the app channel delivers, exactly that value.
//!
//! Refused here, before access control: unknown endpoints, invalid or ambiguous method paths (also look-alike
//! Unicode an app could fold onto ASCII), HTTP methods outside the nine standard ones, and `dapr.proto.*` services
//! on the proxy path (an app trusts the inner fields of `AppCallback/OnInvoke`, `OnTopicEvent`, … so proxying them
//! would let a caller pick the operation the ACL never saw).

use ward_policy::{AppProtocol, InvocationMethod, InvocationRefusal, PreparedInvocation, prepare_invocation};

use super::InboundRequest;
use super::check::Check;
use crate::error::InboundError;

pub(crate) use ward_policy::routing::{INTERNAL_GRPC_PREFIX, INTERNAL_INVOKE_PREFIX};

/// The normalisation layer's check.
#[derive(Clone)]
pub(crate) struct NormaliseMethod {
    /// How the app is reached, which decides how operation names match (`AppProtocol` of the ACL).
    pub(crate) app_protocol: AppProtocol,
}

impl Check for NormaliseMethod {
    fn check(&self, request: &mut InboundRequest) -> Result<(), InboundError> {
        let call = parse_call(request.method(), request.uri().path(), self.app_protocol)?;
        request.extensions_mut().insert(call);
        Ok(())
    }
}

/// The pure part: internal path + method → the prepared call, or the refusal.
pub(crate) fn parse_call(
    method: &http::Method,
    path: &str,
    app_protocol: AppProtocol,
) -> Result<PreparedInvocation, InboundError> {
    let full_method;
    let invocation = if let Some(raw) = path.strip_prefix(INTERNAL_INVOKE_PREFIX) {
        InvocationMethod::Http { raw, verb: method.as_str() }
    } else if let Some(raw) = path.strip_prefix(INTERNAL_GRPC_PREFIX) {
        full_method = format!("/{raw}");
        InvocationMethod::GrpcProxy { full_method: &full_method }
    } else {
        return Err(InboundError::UnknownEndpoint);
    };
    prepare_invocation(&invocation, app_protocol).map_err(|refusal| match refusal {
        InvocationRefusal::InvalidMethod(err) => InboundError::InvalidMethod(err.to_string()),
        InvocationRefusal::UnsupportedVerb(verb) => InboundError::UnsupportedVerb(verb.0),
        InvocationRefusal::ReservedGrpcService { service } => InboundError::ReservedService(service),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_refusals() {
        let m = |s: &str| http::Method::from_bytes(s.as_bytes()).unwrap();
        let http = AppProtocol::Http;
        let ok = parse_call(&m("post"), "/v1.0/internal/invoke/orders/1", http).unwrap();
        assert_eq!(ok.operation.as_str(), "orders/1");
        assert_eq!(ok.verb, Some(ward_policy::HttpVerb::Post));
        for verb in ["FOO", "PROPFIND", "get2"] {
            assert_eq!(
                parse_call(&m(verb), "/v1.0/internal/invoke/admin", http).unwrap_err(),
                InboundError::UnsupportedVerb(verb.to_owned())
            );
        }
        for bad in ["a%2Fb", "adm%C4%B1n", "%EF%BC%A1dmin"] {
            assert!(
                matches!(
                    parse_call(&m("GET"), &format!("/v1.0/internal/invoke/{bad}"), http).unwrap_err(),
                    InboundError::InvalidMethod(_)
                ),
                "{bad}"
            );
        }
        assert_eq!(parse_call(&m("GET"), "/v1.0/other", http).unwrap_err(), InboundError::UnknownEndpoint);
        let grpc = parse_call(&m("POST"), "/v1.0/internal/grpc/pkg.Svc/Do", http).unwrap();
        assert_eq!(grpc.operation.as_str(), "/pkg.Svc/Do");
        assert_eq!(grpc.app_protocol, AppProtocol::Grpc);
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
                    parse_call(&m("POST"), &format!("/v1.0/internal/grpc/{reserved}"), http),
                    Err(InboundError::ReservedService(_)) | Err(InboundError::InvalidMethod(_))
                ),
                "{reserved}"
            );
        }
    }
}
