//! Pure authorization decisions for ward: service-invocation access control and the one invocation decision built
//! on it ([`decide_invocation`]), method-path normalisation, the public HTTP routing decision ([`classify_public`],
//! from which the API-token exemption and the API allow/deny lists are judged), secret scopes and tamper-evident
//! audit lines. No I/O, no async, no clock: callers hand
//! in everything a decision needs, so every rule is a table-tested function.
//!
//! Each `compile` turns a raw [`spec`] shape into a checked value once per configuration load; the per-request
//! functions (`decide`, `is_allowed`, `is_http_allowed`, …) never parse configuration.

pub mod acl;
pub mod api;
pub mod audit;
pub mod capabilities;
pub mod invocation;
pub mod mcp;
pub mod path;
pub mod routing;
pub mod secrets;
pub mod spec;
pub mod topics;

pub use acl::{
    AccessControl, AclDecision, AclError, AclRequest, AppDefaultCause, AppProtocol, Caller, GlobalDefaultCause,
    HttpVerb, MatchedRule, UnsupportedVerb, VerbEntry,
};
pub use api::{ApiAllowList, ApiListError, is_always_allowed};
pub use audit::{
    AuditChain, AuditEvent, ChainError, ChainErrorKind, Decision, PreAclRefusal, SealedLine, StaleSeal, verify_chain,
    verify_chain_to,
};
pub use capabilities::{Capabilities, CapabilityDecision, CapabilityError, CapabilityRequest, RouteList};
pub use invocation::{
    InvocationDecision, InvocationInput, InvocationMethod, InvocationOutcome, InvocationRefusal, Operation,
    PreparedInvocation, decide_invocation, is_reserved_grpc_service, prepare_invocation,
};
pub use path::{GrpcMethod, MethodPath, PathError, ascii_confusable, normalize_grpc_method, normalize_http_method};
pub use routing::{InvokeForm, PublicApi, PublicRequest, SecretsRoute, StateRoute, classify_public, is_token_exempt};
pub use secrets::{SecretScopeError, SecretScopes};
pub use topics::{TopicOperation, TopicScopes};
