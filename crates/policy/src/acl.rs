//! Service-invocation access control: Dapr's `spec.accessControl`, compiled once and evaluated per request.
//!
//! Owns: validating an [`AccessControlSpec`] into an [`AccessControl`] (per-policy operation tries for HTTP and
//! gRPC apps), and deciding one request from a caller identity, a normalised operation, a verb and the app
//! protocol. Every [`AclDecision`] names the exact rule that decided it, for the audit log.
//!
//! Does not own: reading the caller identity (the sidecar takes it from the verified peer certificate), path
//! normalisation ([`crate::path`] — pass its output here), or what a denial looks like on the wire.
//!
//! The evaluation is a faithful port of Dapr 1.17 `pkg/acl/acl.go` and `pkg/config/acl_trie.go` (DAPR-FACTS
//! §3.2, §3.3), including its wildcard quirks. Where ward is stricter, it refuses the configuration at load
//! rather than deciding differently at run time:
//! - an action other than `allow`/`deny` (any case) is an error; Dapr silently treats it as deny;
//! - an HTTP verb other than the nine methods or `*` is an error; Dapr silently never matches it. Verbs are
//!   case-insensitive here (`get` = `GET`); in Dapr a lower-case verb never matches;
//! - two policies with the same `appId` + `namespace` are an error; Dapr lets the later one win;
//! - two operations with the exact same name in one policy are an error; Dapr lets the first one win;
//! - an operation name that is empty or contains an empty, `.` or `..` segment (including a trailing `/`) is an
//!   error, because a normalised method can never contain one, so the rule could never apply.
//!
//! A missing operation `action` means deny, as in Dapr's code (its docs say allow).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::spec::{AccessControlSpec, AppPolicySpec, OperationSpec};

#[cfg(test)]
mod scan;
mod trie;

use self::trie::Node;
/// The glob matcher of one segment (`*` within a segment), for the tests and the scan oracle; other modules match
/// whole operation names through [`OperationPattern`].
#[cfg(test)]
use self::trie::glob_match;

/// Why an access-control configuration was refused. Field paths are relative to `spec.accessControl`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// One or more policies lack `appId`, `namespace` or `trustDomain`; all offenders are listed at once.
    #[error("invalid access control spec: {}", MissingList(.missing))]
    MissingPolicyFields { missing: Vec<MissingPolicyFields> },
    /// An action value other than `allow` or `deny`.
    #[error("{field}: unknown action {value:?} (expected allow or deny)")]
    InvalidAction { field: String, value: String },
    /// An HTTP verb other than the nine HTTP methods or `*`.
    #[error("{field}: unknown HTTP verb {value:?}")]
    UnknownHttpVerb { field: String, value: String },
    /// Two policies share `appId` + `namespace`, so which one applies would be ambiguous.
    #[error("policies[{second}]: appId {app_id:?} in namespace {namespace:?} is already defined by policies[{first}]")]
    DuplicatePolicy { first: usize, second: usize, app_id: String, namespace: String },
    /// Two operations of one policy have the same name.
    #[error("policies[{policy}].operations[{second}]: name {name:?} is already defined by operations[{first}]")]
    DuplicateOperation { policy: usize, first: usize, second: usize, name: String },
    /// An operation name that no normalised method could ever match.
    #[error("{field}: operation name {name:?} {problem}")]
    InvalidOperationName { field: String, name: String, problem: &'static str },
}

/// The missing required fields of one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingPolicyFields {
    /// Index in `policies`.
    pub policy: usize,
    /// The policy's `appId` (empty if that is what is missing).
    pub app_id: String,
    /// Names of the missing fields: `appId`, `namespace`, `trustDomain`.
    pub fields: Vec<&'static str>,
}

struct MissingList<'a>(&'a [MissingPolicyFields]);

impl fmt::Display for MissingList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, m) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "policies[{}] (appId {:?}) missing {}", m.policy, m.app_id, m.fields.join(", "))?;
        }
        Ok(())
    }
}

/// An HTTP method as used in `operations[].httpVerb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpVerb {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl HttpVerb {
    /// All verbs, in Dapr's `HTTPExtension_Verb` order.
    pub const ALL: [HttpVerb; 9] = [
        HttpVerb::Get,
        HttpVerb::Head,
        HttpVerb::Post,
        HttpVerb::Put,
        HttpVerb::Delete,
        HttpVerb::Connect,
        HttpVerb::Options,
        HttpVerb::Trace,
        HttpVerb::Patch,
    ];

    /// The upper-case method name, e.g. `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVerb::Get => "GET",
            HttpVerb::Head => "HEAD",
            HttpVerb::Post => "POST",
            HttpVerb::Put => "PUT",
            HttpVerb::Delete => "DELETE",
            HttpVerb::Connect => "CONNECT",
            HttpVerb::Options => "OPTIONS",
            HttpVerb::Trace => "TRACE",
            HttpVerb::Patch => "PATCH",
        }
    }
}

/// A request method other than the nine standard HTTP methods (issue 12 row 2). Dapr maps such a method to POST
/// or to "no verb", which skips every operation rule; ward refuses it before the ACL. Holds the method as received,
/// cut to [`UnsupportedVerb::MAX_CHARS`] characters so an error or log line stays bounded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported HTTP method {0:?} (expected GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or PATCH)")]
pub struct UnsupportedVerb(pub String);

impl UnsupportedVerb {
    /// The longest method echoed back.
    pub const MAX_CHARS: usize = 32;

    fn new(method: &str) -> Self {
        Self(method.chars().take(Self::MAX_CHARS).collect())
    }
}

impl HttpVerb {
    /// Parses a request method: the nine standard methods in any ASCII case; anything else (`FOO`, `PROPFIND`,
    /// `*`, empty) is an error, never "no verb".
    pub fn parse(method: &str) -> Result<Self, UnsupportedVerb> {
        HttpVerb::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(method))
            .ok_or_else(|| UnsupportedVerb::new(method))
    }

    /// Dapr's `common.v1.HTTPExtension.Verb` code (gRPC `InvokeService`): `0` (`NONE`) is `Ok(None)`, `1`–`9` are
    /// the nine methods in [`HttpVerb::ALL`] order, anything else is an error (answer `InvalidArgument`).
    pub fn from_extension_code(code: i32) -> Result<Option<Self>, UnsupportedVerb> {
        if code == 0 {
            return Ok(None);
        }
        usize::try_from(code)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| HttpVerb::ALL.get(i).copied())
            .map(Some)
            .ok_or_else(|| UnsupportedVerb(format!("verb code {code}")))
    }
}

impl FromStr for HttpVerb {
    type Err = UnsupportedVerb;

    /// Same as [`HttpVerb::parse`]: case-insensitive, `get`, `Get` and `GET` are all [`HttpVerb::Get`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for HttpVerb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol of the *callee* app: HTTP operation names are matched case-insensitively and by verb, gRPC ones
/// case-sensitively by the operation's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    Http,
    Grpc,
}

/// The verified identity of the calling app (from its SPIFFE ID `spiffe://<td>/ns/<ns>/<app-id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    pub trust_domain: &'a str,
    pub namespace: &'a str,
    pub app_id: &'a str,
}

/// One invocation to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclRequest<'a> {
    /// `None` when the caller could not be authenticated (no mTLS, no peer certificate).
    pub caller: Option<Caller<'a>>,
    /// The normalised operation ([`crate::path::MethodPath::as_str`] or [`crate::path::GrpcMethod::as_str`]);
    /// a leading `/` is optional.
    pub operation: &'a str,
    /// `None` is Dapr's `NONE` verb (no HTTP extension).
    pub verb: Option<HttpVerb>,
    pub app_protocol: AppProtocol,
}

/// The outcome of [`AccessControl::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclDecision {
    pub allowed: bool,
    /// What decided.
    pub rule: MatchedRule,
    /// A fixed, human-readable explanation (safe to log; contains no request data).
    pub reason: &'static str,
}

/// Exactly which part of the configuration decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchedRule {
    /// No access control is configured: everything is allowed.
    NoPolicy,
    /// The global `defaultAction` applied.
    GlobalDefault(GlobalDefaultCause),
    /// `policies[policy].defaultAction` applied.
    AppDefault { policy: usize, cause: AppDefaultCause },
    /// `policies[policy].operations[operation]` matched and decided.
    Operation { policy: usize, operation: usize, verb: VerbEntry },
}

/// Why the global default applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlobalDefaultCause {
    /// The request carries no caller identity (or an empty app-id).
    NoCallerIdentity,
    /// No policy names the caller's app-id.
    NoPolicyForCaller,
    /// A policy names the caller's app-id, but only in other namespaces.
    NamespaceMismatch,
    /// The caller's policy has a different trust domain.
    TrustDomainMismatch { policy: usize },
    /// No operation matched and the caller's policy has no `defaultAction`.
    NoOperationMatched { policy: usize },
    /// An HTTP operation matched but lists neither the verb nor `*`, and the policy has no `defaultAction`.
    VerbNotListed { policy: usize, operation: usize },
}

/// Why the caller's policy `defaultAction` applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppDefaultCause {
    /// No operation matched.
    NoOperationMatched,
    /// An HTTP operation matched but lists neither the verb nor `*`.
    VerbNotListed { operation: usize },
    /// An HTTP operation matched but the request has no verb (Dapr's `NONE`).
    NoVerb { operation: usize },
}

/// Which part of a matched operation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerbEntry {
    /// `httpVerb[index]` names the request's verb.
    Verb { index: usize, verb: HttpVerb },
    /// `httpVerb[index]` is `*`.
    Wildcard { index: usize },
    /// gRPC app: the operation's `action` applies without a verb.
    Grpc,
    /// HTTP app, request without a verb, policy without `defaultAction`: Dapr denies.
    MissingVerb,
}

impl fmt::Display for MatchedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MatchedRule::NoPolicy => f.write_str("no accessControl"),
            MatchedRule::GlobalDefault(_) => f.write_str("global defaultAction"),
            MatchedRule::AppDefault { policy, .. } => write!(f, "policies[{policy}].defaultAction"),
            MatchedRule::Operation { policy, operation, verb } => {
                write!(f, "policies[{policy}].operations[{operation}]")?;
                match verb {
                    VerbEntry::Verb { index, .. } | VerbEntry::Wildcard { index } => write!(f, ".httpVerb[{index}]"),
                    VerbEntry::Grpc | VerbEntry::MissingVerb => Ok(()),
                }
            }
        }
    }
}

/// A compiled `spec.accessControl`. Cheap to evaluate; build it once per configuration (re)load.
#[derive(Debug, Clone, Default)]
pub struct AccessControl {
    /// `None`: the spec was absent or empty, so every request is allowed.
    compiled: Option<Compiled>,
}

/// Compact on purpose (issue 25, defect 4: 10,000 policies must fit a small sidecar): every list is a boxed slice
/// of exactly its length, namespaces and trust domains are interned (shared `Arc<str>`), policies with the same
/// operations share one compiled [`Rules`] (large configurations repeat a few operation lists across many callers),
/// and a rule set keeps one trie when its HTTP (lower-cased) and gRPC names are the same, the common case.
#[derive(Debug, Clone)]
struct Compiled {
    default_allow: bool,
    trust_domain: String,
    /// Policies by `appId`; each app-id usually has one entry, several only across namespaces.
    by_app_id: HashMap<Box<str>, Box<[Policy]>>,
}

#[derive(Debug, Clone)]
struct Policy {
    index: usize,
    namespace: Arc<str>,
    trust_domain: Arc<str>,
    default_allow: Option<bool>,
    rules: Arc<Rules>,
}

/// A policy's compiled `operations`; shared by every policy whose `operations` list is the same (same names,
/// verbs and actions in the same order, so the same indices and the same answers).
#[derive(Debug)]
struct Rules {
    operations: Box<[Operation]>,
    /// Names with ASCII letters lower-cased (Dapr lower-cases with full Unicode rules; see [`lower_case`]).
    http_trie: Node,
    /// Names as written, for gRPC apps; `None` when no name has an upper-case ASCII letter (then it would be
    /// `http_trie` again). Boxed: most rule sets have none, and an inline `Node` would cost each its size.
    grpc_trie: Option<Box<Node>>,
}

#[derive(Debug, Clone)]
struct Operation {
    allow: bool,
    verbs: Box<[VerbRule]>,
}

#[derive(Debug, Clone, Copy)]
struct VerbRule {
    index: usize,
    /// `None` is `*`.
    verb: Option<HttpVerb>,
}

/// One `Arc<str>` per distinct value, for strings most policies repeat (namespace, trust domain).
#[derive(Default)]
struct Interner(HashMap<Box<str>, Arc<str>>);

impl Interner {
    fn get(&mut self, value: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(value) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(value);
        self.0.insert(value.into(), shared.clone());
        shared
    }
}

const DEFAULT_TRUST_DOMAIN: &str = "public";

impl AccessControl {
    /// No access control: every request is allowed (Dapr's behaviour without `spec.accessControl`).
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Validates and compiles a spec. All missing `appId`/`namespace`/`trustDomain` fields are reported in one
    /// error; any other problem is reported at its first occurrence.
    pub fn compile(spec: &AccessControlSpec) -> Result<Self, AclError> {
        let trust_domain = spec.trust_domain.as_deref().unwrap_or_default();
        let default_action = spec.default_action.as_deref().unwrap_or_default();
        let policies = spec.policies.as_deref();
        if trust_domain.is_empty() && default_action.is_empty() && policies.is_none_or(<[_]>::is_empty) {
            return Ok(Self::allow_all());
        }

        let default_allow = match parse_action(spec.default_action.as_deref(), || "defaultAction".to_owned())? {
            Some(allow) => allow,
            // Dapr: with policies present (or the key absent) the secure default is deny; only an explicitly
            // empty list means "nothing to restrict".
            None => matches!(policies, Some([])),
        };

        let specs = policies.unwrap_or_default();
        check_required_fields(specs)?;

        // Every policy compiled into one vector first, then moved into one exact-size slice per app id: a growing
        // `Vec` per app id would leave ~1 KB of freed capacity per policy behind in the heap.
        let mut interner = Interner::default();
        let mut shared: HashMap<&[OperationSpec], Arc<Rules>> = HashMap::new();
        let mut compiled: Vec<Option<Policy>> = Vec::with_capacity(specs.len());
        let mut seen: HashMap<(&str, &str), usize> = HashMap::with_capacity(specs.len());
        for (index, p) in specs.iter().enumerate() {
            let policy = compile_policy(index, p, &mut interner, &mut shared)?;
            if let Some(&first) = seen.get(&(p.app_id.as_str(), p.namespace.as_str())) {
                return Err(AclError::DuplicatePolicy {
                    first,
                    second: index,
                    app_id: p.app_id.clone(),
                    namespace: p.namespace.clone(),
                });
            }
            seen.insert((p.app_id.as_str(), p.namespace.as_str()), index);
            compiled.push(Some(policy));
        }
        drop(seen);
        drop(shared);
        let mut order: Vec<usize> = (0..specs.len()).collect();
        order.sort_by(|&a, &b| specs.get(a).map(|p| &p.app_id).cmp(&specs.get(b).map(|p| &p.app_id)));
        let mut by_app_id: HashMap<Box<str>, Box<[Policy]>> = HashMap::new();
        for run in order.chunk_by(|&a, &b| specs.get(a).map(|p| &p.app_id) == specs.get(b).map(|p| &p.app_id)) {
            let mut same_app = Vec::with_capacity(run.len());
            same_app.extend(run.iter().filter_map(|&i| compiled.get_mut(i).and_then(Option::take)));
            if let Some(app_id) = run.first().and_then(|&i| specs.get(i)) {
                by_app_id.insert(app_id.app_id.as_str().into(), same_app.into_boxed_slice());
            }
        }

        Ok(Self {
            compiled: Some(Compiled {
                default_allow,
                trust_domain: if trust_domain.is_empty() { DEFAULT_TRUST_DOMAIN } else { trust_domain }.to_owned(),
                by_app_id,
            }),
        })
    }

    /// Whether any access control is in force (false for [`Self::allow_all`] and an absent/empty spec).
    pub fn is_configured(&self) -> bool {
        self.compiled.is_some()
    }

    /// This app's own trust domain (`spec.accessControl.trustDomain`, default `public`).
    pub fn trust_domain(&self) -> &str {
        self.compiled.as_ref().map_or(DEFAULT_TRUST_DOMAIN, |c| c.trust_domain.as_str())
    }

    /// Decides one request. Allocation-free except for lower-casing an HTTP operation that has upper-case
    /// characters.
    pub fn decide(&self, req: &AclRequest<'_>) -> AclDecision {
        let Some(c) = &self.compiled else {
            return AclDecision { allowed: true, rule: MatchedRule::NoPolicy, reason: "no access control configured" };
        };
        let global = |cause: GlobalDefaultCause| AclDecision {
            allowed: c.default_allow,
            rule: MatchedRule::GlobalDefault(cause),
            reason: global_reason(cause),
        };

        let Some(caller) = req.caller.filter(|caller| !caller.app_id.is_empty()) else {
            return global(GlobalDefaultCause::NoCallerIdentity);
        };
        let Some(same_app) = c.by_app_id.get(caller.app_id) else {
            return global(GlobalDefaultCause::NoPolicyForCaller);
        };
        let Some(policy) = same_app.iter().find(|p| *p.namespace == *caller.namespace) else {
            return global(GlobalDefaultCause::NamespaceMismatch);
        };
        if *policy.trust_domain != *caller.trust_domain {
            return global(GlobalDefaultCause::TrustDomainMismatch { policy: policy.index });
        }

        // What applies when the operation does not decide: the app default if set, else the global one.
        let fallback = |app: AppDefaultCause, glob: GlobalDefaultCause| match policy.default_allow {
            Some(allowed) => AclDecision {
                allowed,
                rule: MatchedRule::AppDefault { policy: policy.index, cause: app },
                reason: app_reason(app),
            },
            None => global(glob),
        };

        let (trie, operation) = match req.app_protocol {
            AppProtocol::Http => (&policy.rules.http_trie, lower_case(req.operation)),
            AppProtocol::Grpc => {
                (policy.rules.grpc_trie.as_deref().unwrap_or(&policy.rules.http_trie), Cow::Borrowed(req.operation))
            }
        };
        let Some((op_index, op)) =
            trie.search(&operation).and_then(|i| policy.rules.operations.get(i).map(|op| (i, op)))
        else {
            return fallback(
                AppDefaultCause::NoOperationMatched,
                GlobalDefaultCause::NoOperationMatched { policy: policy.index },
            );
        };
        let matched = |allowed: bool, verb: VerbEntry, reason: &'static str| AclDecision {
            allowed,
            rule: MatchedRule::Operation { policy: policy.index, operation: op_index, verb },
            reason,
        };

        match (req.app_protocol, req.verb) {
            (AppProtocol::Grpc, _) => matched(op.allow, VerbEntry::Grpc, "operation matched"),
            (AppProtocol::Http, None) => match policy.default_allow {
                Some(allowed) => AclDecision {
                    allowed,
                    rule: MatchedRule::AppDefault {
                        policy: policy.index,
                        cause: AppDefaultCause::NoVerb { operation: op_index },
                    },
                    reason: app_reason(AppDefaultCause::NoVerb { operation: op_index }),
                },
                None => matched(
                    false,
                    VerbEntry::MissingVerb,
                    "operation matched a request without HTTP verb and the app policy has no defaultAction",
                ),
            },
            (AppProtocol::Http, Some(verb)) => match op.lookup(verb) {
                Some(entry) => matched(op.allow, entry, "operation and HTTP verb matched"),
                None => fallback(
                    AppDefaultCause::VerbNotListed { operation: op_index },
                    GlobalDefaultCause::VerbNotListed { policy: policy.index, operation: op_index },
                ),
            },
        }
    }
}

fn global_reason(cause: GlobalDefaultCause) -> &'static str {
    match cause {
        GlobalDefaultCause::NoCallerIdentity => "caller identity unknown; global defaultAction applied",
        GlobalDefaultCause::NoPolicyForCaller => "no policy for the caller's app id; global defaultAction applied",
        GlobalDefaultCause::NamespaceMismatch => {
            "policies for the caller's app id exist only in other namespaces; global defaultAction applied"
        }
        GlobalDefaultCause::TrustDomainMismatch { .. } => {
            "caller trust domain differs from its policy; global defaultAction applied"
        }
        GlobalDefaultCause::NoOperationMatched { .. } => {
            "no operation matched and the app policy has no defaultAction; global defaultAction applied"
        }
        GlobalDefaultCause::VerbNotListed { .. } => {
            "operation matched but not for this HTTP verb, and the app policy has no defaultAction; global defaultAction applied"
        }
    }
}

fn app_reason(cause: AppDefaultCause) -> &'static str {
    match cause {
        AppDefaultCause::NoOperationMatched => "no operation matched; app defaultAction applied",
        AppDefaultCause::VerbNotListed { .. } => {
            "operation matched but not for this HTTP verb; app defaultAction applied"
        }
        AppDefaultCause::NoVerb { .. } => "operation matched a request without HTTP verb; app defaultAction applied",
    }
}

/// ASCII-only lower-casing (issue 12 row 8). Full Unicode lower-casing maps e.g. `K` (U+212A) to `k`, so the ACL
/// would judge a different string than an app that folds differently; path normalisation refuses every character
/// that any folding could turn into ASCII, so folding ASCII alone is both sufficient and unambiguous.
fn lower_case(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(s.to_ascii_lowercase()) } else { Cow::Borrowed(s) }
}

/// `None` for an absent or empty action; an unknown value is an error naming `field`.
fn parse_action(value: Option<&str>, field: impl FnOnce() -> String) -> Result<Option<bool>, AclError> {
    match value.unwrap_or_default() {
        "" => Ok(None),
        v if v.eq_ignore_ascii_case("allow") => Ok(Some(true)),
        v if v.eq_ignore_ascii_case("deny") => Ok(Some(false)),
        v => Err(AclError::InvalidAction { field: field(), value: v.to_owned() }),
    }
}

fn check_required_fields(specs: &[AppPolicySpec]) -> Result<(), AclError> {
    let missing: Vec<MissingPolicyFields> = specs
        .iter()
        .enumerate()
        .filter_map(|(policy, p)| {
            let fields: Vec<&'static str> =
                [("appId", &p.app_id), ("namespace", &p.namespace), ("trustDomain", &p.trust_domain)]
                    .into_iter()
                    .filter(|(_, v)| v.is_empty())
                    .map(|(name, _)| name)
                    .collect();
            (!fields.is_empty()).then(|| MissingPolicyFields { policy, app_id: p.app_id.clone(), fields })
        })
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(AclError::MissingPolicyFields { missing }) }
}

fn compile_policy<'a>(
    index: usize,
    p: &'a AppPolicySpec,
    interner: &mut Interner,
    shared: &mut HashMap<&'a [OperationSpec], Arc<Rules>>,
) -> Result<Policy, AclError> {
    let default_allow = parse_action(p.default_action.as_deref(), || format!("policies[{index}].defaultAction"))?;
    let rules = match shared.get(p.operations.as_slice()) {
        Some(rules) => rules.clone(),
        None => {
            let rules = Arc::new(compile_rules(index, &p.operations)?);
            shared.insert(p.operations.as_slice(), rules.clone());
            rules
        }
    };
    Ok(Policy {
        index,
        namespace: interner.get(&p.namespace),
        trust_domain: interner.get(&p.trust_domain),
        default_allow,
        rules,
    })
}

/// Compiles one `operations` list (of the policy at `index`, which load errors name).
fn compile_rules(index: usize, specs: &[OperationSpec]) -> Result<Rules, AclError> {
    let mut operations = Vec::with_capacity(specs.len());
    let mut http_trie = Node::default();
    let mut grpc_trie = Node::default();
    let mut mixed_case = false;
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(specs.len());
    for (op_index, op) in specs.iter().enumerate() {
        let field = || format!("policies[{index}].operations[{op_index}]");
        let compiled = compile_operation(op, &field)?;
        check_operation_name(&op.name, &field)?;
        // Dapr adds a missing leading '/', so "op1" and "/op1" are the same operation.
        let name = op.name.strip_prefix('/').unwrap_or(&op.name);
        if let Some(&first) = names.get(name) {
            return Err(AclError::DuplicateOperation { policy: index, first, second: op_index, name: op.name.clone() });
        }
        names.insert(name, op_index);

        grpc_trie.insert(name, op_index);
        let lower = lower_case(name);
        mixed_case |= matches!(lower, Cow::Owned(_));
        http_trie.insert(&lower, op_index);
        operations.push(compiled);
    }
    http_trie.shrink();
    Ok(Rules {
        operations: operations.into_boxed_slice(),
        http_trie,
        // Same insertions in the same order give the same trie: keep one.
        grpc_trie: mixed_case.then(|| {
            grpc_trie.shrink();
            Box::new(grpc_trie)
        }),
    })
}

fn compile_operation(op: &OperationSpec, field: &dyn Fn() -> String) -> Result<Operation, AclError> {
    let allow = parse_action(op.action.as_deref(), || format!("{}.action", field()))?.unwrap_or(false);
    let verbs = op
        .http_verb
        .iter()
        .enumerate()
        .map(|(index, v)| {
            if v == "*" {
                return Ok(VerbRule { index, verb: None });
            }
            match v.parse::<HttpVerb>() {
                Ok(verb) => Ok(VerbRule { index, verb: Some(verb) }),
                Err(_) => {
                    Err(AclError::UnknownHttpVerb { field: format!("{}.httpVerb[{index}]", field()), value: v.clone() })
                }
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Operation { allow, verbs })
}

fn check_operation_name(name: &str, field: &dyn Fn() -> String) -> Result<(), AclError> {
    let invalid = |problem| {
        Err(AclError::InvalidOperationName { field: format!("{}.name", field()), name: name.to_owned(), problem })
    };
    let body = name.strip_prefix('/').unwrap_or(name);
    if body.is_empty() {
        return invalid("is empty");
    }
    for segment in body.split('/') {
        match segment {
            "" => return invalid("has an empty segment (a '//' or a trailing '/')"),
            "." | ".." => return invalid("has a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

impl Operation {
    /// Dapr: the exact verb's entry wins, else the `*` entry.
    fn lookup(&self, verb: HttpVerb) -> Option<VerbEntry> {
        let exact = self.verbs.iter().find(|r| r.verb == Some(verb)).map(|r| VerbEntry::Verb { index: r.index, verb });
        exact.or_else(|| self.verbs.iter().find(|r| r.verb.is_none()).map(|r| VerbEntry::Wildcard { index: r.index }))
    }
}

/// One operation name compiled on its own and matched exactly as an `accessControl` operation is: same syntax
/// (`*`, `**`, Dapr's prefix rule), same load-time checks, ASCII case folding for HTTP apps. The capability routes
/// ([`crate::capabilities`]) use it so that the two layers never disagree on what a name covers; this type is their
/// only coupling to the matcher's internals.
#[derive(Debug, Clone)]
pub(crate) struct OperationPattern {
    http: Node,
    grpc: Node,
}

impl OperationPattern {
    /// Checks `name` as an operation name (`field` names it in the error) and compiles it.
    pub(crate) fn compile(name: &str, field: &dyn Fn() -> String) -> Result<Self, AclError> {
        check_operation_name(name, field)?;
        let name = name.strip_prefix('/').unwrap_or(name);
        let mut pattern = Self { http: Node::default(), grpc: Node::default() };
        pattern.grpc.insert(name, 0);
        pattern.http.insert(&name.to_ascii_lowercase(), 0);
        Ok(pattern)
    }

    /// Whether the normalised `operation` falls under this name for an app speaking `protocol`.
    pub(crate) fn matches(&self, operation: &str, protocol: AppProtocol) -> bool {
        match protocol {
            AppProtocol::Http => self.http.search(&lower_case(operation)).is_some(),
            AppProtocol::Grpc => self.grpc.search(operation).is_some(),
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
