//! Capabilities per route: ward's third layer of the trust chain (issue 15), after transport and `accessControl`.
//!
//! Owns: validating `spec.ward.capabilities` ([`CapabilitiesSpec`]) into [`Capabilities`] once per load, and
//! deciding one request from the verified caller, the normalised operation and the verb. A route applies when its
//! name matches the operation (the same matcher, syntax and case rules as an `accessControl` operation, through
//! [`crate::acl::OperationPattern`]) and its verbs include the request's (no `httpVerb` = every verb; a call without
//! a verb, such as a proxied gRPC call, is judged by every route whose name matches: missing information never
//! removes a requirement). When several routes apply, all their requirements hold. A request no route applies to is
//! left to the ACL alone.
//!
//! Does not own: the ACL (which runs first and must have allowed the call), reading the caller identity (the
//! sidecar passes only a verified one; an unverified development caller is `None` and holds nothing), auditing, or
//! what a denial looks like on the wire.
//!
//! Stricter than it needs to be, on purpose: capability names must be `[a-z0-9-]+(:[a-z0-9-]+)*`, grants name one
//! caller exactly (no wildcard app id, namespace or capability), a route or grant listing nothing is refused, and a
//! verb outside the nine HTTP methods (or `*`) is refused.

use std::collections::HashMap;
use std::fmt;

use crate::acl::{AclError, AppProtocol, Caller, HttpVerb, OperationPattern};
use crate::spec::{CapabilitiesSpec, CapabilityRouteSpec, GrantSpec};

/// Why `spec.ward.capabilities` was refused. Field paths are relative to `spec.ward.capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// A capability name outside `[a-z0-9-]+(:[a-z0-9-]+)*`.
    #[error(
        "{field}: invalid capability name {value:?} (expected lower-case words joined by ':', e.g. \"managed-table:read\")"
    )]
    InvalidName { field: String, value: String },
    /// A grant names its caller neither by `appId` + `namespace` nor by `spiffeId`, or by both, or partly.
    #[error("{field}: {problem}")]
    InvalidCaller { field: String, problem: String },
    /// A route or grant lists no capability.
    #[error("{field}: is empty")]
    Empty { field: String },
    /// An HTTP verb other than the nine methods or `*`.
    #[error("{field}: unknown HTTP verb {value:?}")]
    UnknownHttpVerb { field: String, value: String },
    /// A route name no normalised method could match (same rule as accessControl operation names).
    #[error("{0}")]
    InvalidRouteName(AclError),
}

/// A checked capability name.
fn check_name(value: &str, field: impl FnOnce() -> String) -> Result<Box<str>, CapabilityError> {
    let word_ok =
        |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if value.split(':').all(word_ok) {
        Ok(value.into())
    } else {
        Err(CapabilityError::InvalidName { field: field(), value: value.to_owned() })
    }
}

/// An identity segment of a grant: non-empty, and without the characters that would make it a pattern or a path.
fn check_segment(value: &str) -> bool {
    !value.is_empty()
        && !value.bytes().any(|b| matches!(b, b'*' | b'/' | b'?' | b'#' | b'%') || b.is_ascii_whitespace())
}

/// A compiled `spec.ward.capabilities`. Cheap to evaluate; built once per configuration (re)load.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    routes: Vec<Route>,
    /// Callers by app id; each holds the union of every grant naming it.
    grants: HashMap<String, Vec<Holder>>,
}

#[derive(Debug, Clone)]
struct Route {
    index: usize,
    /// As written, for audit events and explanations.
    name: Box<str>,
    pattern: OperationPattern,
    /// Empty: every verb.
    verbs: Vec<HttpVerb>,
    requires: Vec<Box<str>>,
}

#[derive(Debug, Clone)]
struct Holder {
    trust_domain: String,
    namespace: String,
    capabilities: Vec<Box<str>>,
}

/// One request to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilityRequest<'a> {
    /// The verified caller; `None` when it is unverified (development marker, no certificate): it holds nothing.
    pub caller: Option<Caller<'a>>,
    /// The normalised operation the ACL judged.
    pub operation: &'a str,
    /// `None` for calls without a verb (proxied gRPC).
    pub verb: Option<HttpVerb>,
    pub app_protocol: AppProtocol,
}

/// The outcome of [`Capabilities::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapabilityDecision<'c> {
    /// No route applies: the ACL's decision stands, and no capability is used.
    NoRoute,
    /// Every applying route's requirements are held.
    Allowed {
        /// Indexes of the applying routes, in declaration order.
        routes: Vec<usize>,
        /// The capabilities they required (each once, in first-required order); all held by the caller.
        used: Vec<&'c str>,
    },
    /// The caller lacks `capability`, required by `routes[route]` (the first missing one, in declaration order).
    Missing { route: usize, route_name: &'c str, capability: &'c str },
}

impl CapabilityDecision<'_> {
    pub fn allowed(&self) -> bool {
        !matches!(self, CapabilityDecision::Missing { .. })
    }

    /// The capabilities to put in the provenance token's `cap` claim (empty unless allowed by a route).
    pub fn used(&self) -> &[&str] {
        match self {
            CapabilityDecision::Allowed { used, .. } => used,
            _ => &[],
        }
    }
}

/// Renders applying routes as `spec.ward.capabilities.routes[0], routes[2]` for an audit `rule`.
pub struct RouteList<'a>(pub &'a [usize]);

impl fmt::Display for RouteList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, index) in self.0.iter().enumerate() {
            if n == 0 {
                write!(f, "spec.ward.capabilities.routes[{index}]")?;
            } else {
                write!(f, ", routes[{index}]")?;
            }
        }
        Ok(())
    }
}

impl Capabilities {
    /// Nothing required of anyone: every request is left to the ACL.
    pub fn none() -> Self {
        Self::default()
    }

    /// Validates and compiles `spec`. `own_trust_domain` is the trust domain of callers named by `appId` +
    /// `namespace` (this sidecar's own, as for accessControl); callers elsewhere are named by `spiffeId`. Every
    /// problem is reported at its first occurrence, naming the field.
    pub fn compile(spec: &CapabilitiesSpec, own_trust_domain: &str) -> Result<Self, CapabilityError> {
        let mut routes = Vec::with_capacity(spec.routes.len());
        for (index, route) in spec.routes.iter().enumerate() {
            routes.push(compile_route(index, route)?);
        }
        let mut grants: HashMap<String, Vec<Holder>> = HashMap::new();
        for (index, grant) in spec.grants.iter().enumerate() {
            let (trust_domain, namespace, app_id, capabilities) = compile_grant(index, grant, own_trust_domain)?;
            let same_app = grants.entry(app_id).or_default();
            match same_app.iter_mut().find(|h| h.trust_domain == trust_domain && h.namespace == namespace) {
                Some(holder) => {
                    for c in capabilities {
                        if !holder.capabilities.contains(&c) {
                            holder.capabilities.push(c);
                        }
                    }
                }
                None => same_app.push(Holder { trust_domain, namespace, capabilities }),
            }
        }
        Ok(Self { routes, grants })
    }

    /// Whether any route requires anything (false: the layer is a no-op).
    pub fn is_configured(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Decides one request. Allocates only when a route applies.
    pub fn decide(&self, req: &CapabilityRequest<'_>) -> CapabilityDecision<'_> {
        let mut applying = self.routes.iter().filter(|r| r.applies(req)).peekable();
        if applying.peek().is_none() {
            return CapabilityDecision::NoRoute;
        }
        let held = req.caller.map(|c| self.held(c)).unwrap_or_default();
        let mut routes = Vec::new();
        let mut used: Vec<&str> = Vec::new();
        for route in applying {
            for capability in &route.requires {
                if !held.iter().any(|h| **h == **capability) {
                    return CapabilityDecision::Missing { route: route.index, route_name: &route.name, capability };
                }
                if !used.contains(&&**capability) {
                    used.push(capability);
                }
            }
            routes.push(route.index);
        }
        CapabilityDecision::Allowed { routes, used }
    }

    /// What `caller` holds (empty when no grant names it).
    pub fn held(&self, caller: Caller<'_>) -> &[Box<str>] {
        self.grants
            .get(caller.app_id)
            .and_then(|same| {
                same.iter().find(|h| h.trust_domain == caller.trust_domain && h.namespace == caller.namespace)
            })
            .map_or(&[], |h| h.capabilities.as_slice())
    }

    /// The routes as `(index, name, verbs, requires)`, for explanations and lint.
    pub fn routes(&self) -> impl Iterator<Item = (usize, &str, &[HttpVerb], &[Box<str>])> {
        self.routes.iter().map(|r| (r.index, &*r.name, r.verbs.as_slice(), r.requires.as_slice()))
    }

    /// The routes that apply to `req`, as `(index, name, requires)`, for explanations.
    pub fn applying<'s>(
        &'s self,
        req: &'s CapabilityRequest<'_>,
    ) -> impl Iterator<Item = (usize, &'s str, &'s [Box<str>])> + 's {
        self.routes.iter().filter(|r| r.applies(req)).map(|r| (r.index, &*r.name, r.requires.as_slice()))
    }

    /// Every grant as `(spiffe id, capabilities)`, for lint.
    pub fn grants(&self) -> impl Iterator<Item = (String, &[Box<str>])> {
        self.grants.iter().flat_map(|(app_id, same)| {
            same.iter().map(move |h| {
                (format!("spiffe://{}/ns/{}/{app_id}", h.trust_domain, h.namespace), h.capabilities.as_slice())
            })
        })
    }

    /// Lint findings: a route requiring a capability nobody is granted; a granted capability no route requires.
    /// Sorted, one line each.
    pub fn lint(&self) -> Vec<String> {
        let mut out = Vec::new();
        let granted = |c: &str| self.grants.values().flatten().any(|h| h.capabilities.iter().any(|g| &**g == c));
        for route in &self.routes {
            for c in &route.requires {
                if !granted(c) {
                    out.push(format!(
                        "spec.ward.capabilities.routes[{}] ({}): requires {c:?}, which no grant holds: every call to \
                         this route is denied",
                        route.index, route.name
                    ));
                }
            }
        }
        let required = |c: &str| self.routes.iter().any(|r| r.requires.iter().any(|q| &**q == c));
        let mut grants: Vec<(String, &[Box<str>])> = self.grants().collect();
        grants.sort();
        for (caller, caps) in grants {
            for c in caps {
                if !required(c) {
                    out.push(format!(
                        "spec.ward.capabilities.grants ({caller}): capability {c:?} is never required by a route"
                    ));
                }
            }
        }
        out
    }
}

impl Route {
    fn applies(&self, req: &CapabilityRequest<'_>) -> bool {
        let verb_ok = match req.verb {
            Some(verb) => self.verbs.is_empty() || self.verbs.contains(&verb),
            None => true,
        };
        verb_ok && self.pattern.matches(req.operation, req.app_protocol)
    }
}

fn compile_route(index: usize, route: &CapabilityRouteSpec) -> Result<Route, CapabilityError> {
    let at = format!("routes[{index}]");
    // Dapr's matcher never matches a `*` segment in the middle of a name (DAPR-FACTS §3.3) while its `**` there
    // matches exactly one segment, which is what `/tables/*/rows` means to a reader. A route that silently never
    // applied would drop its requirement, so a middle `*` is given that meaning here (matching more only ever adds
    // requirements). The name as written is kept for audit and explanations.
    let matched_name = middle_star_as_one_segment(&route.name);
    let pattern =
        OperationPattern::compile(&matched_name, &|| at.clone()).map_err(CapabilityError::InvalidRouteName)?;
    let mut verbs = Vec::new();
    for (i, v) in route.http_verb.iter().enumerate() {
        if v == "*" {
            verbs.clear();
            break;
        }
        let verb = v
            .parse::<HttpVerb>()
            .map_err(|_| CapabilityError::UnknownHttpVerb { field: format!("{at}.httpVerb[{i}]"), value: v.clone() })?;
        if !verbs.contains(&verb) {
            verbs.push(verb);
        }
    }
    if route.requires.is_empty() {
        return Err(CapabilityError::Empty { field: format!("{at}.requires") });
    }
    let mut requires: Vec<Box<str>> = Vec::new();
    for (i, c) in route.requires.iter().enumerate() {
        let c = check_name(c, || format!("{at}.requires[{i}]"))?;
        if !requires.contains(&c) {
            requires.push(c);
        }
    }
    Ok(Route { index, name: route.name.as_str().into(), pattern, verbs, requires })
}

type CompiledGrant = (String, String, String, Vec<Box<str>>);

fn compile_grant(index: usize, grant: &GrantSpec, own_trust_domain: &str) -> Result<CompiledGrant, CapabilityError> {
    let at = format!("grants[{index}]");
    let invalid = |problem: &str| CapabilityError::InvalidCaller { field: at.clone(), problem: problem.to_owned() };
    let (trust_domain, namespace, app_id) =
        match (nonempty(&grant.app_id), nonempty(&grant.namespace), nonempty(&grant.spiffe_id)) {
            (Some(app_id), Some(namespace), None) => (own_trust_domain, namespace, app_id),
            (None, None, Some(id)) => parse_spiffe_id(id).ok_or_else(|| {
                invalid(&format!("spiffeId {id:?} is not spiffe://<trust-domain>/ns/<namespace>/<app-id>"))
            })?,
            (_, _, Some(_)) => return Err(invalid("name the caller by spiffeId or by appId + namespace, not both")),
            (Some(_), None, None) => return Err(invalid("appId needs a namespace")),
            (None, _, None) => return Err(invalid("needs appId + namespace, or spiffeId")),
        };
    if ![trust_domain, namespace, app_id].into_iter().all(check_segment) {
        return Err(invalid("appId, namespace and trust domain name one caller exactly (no '*', '/', spaces)"));
    }
    if grant.capabilities.is_empty() {
        return Err(CapabilityError::Empty { field: format!("{at}.capabilities") });
    }
    let mut capabilities: Vec<Box<str>> = Vec::new();
    for (i, c) in grant.capabilities.iter().enumerate() {
        let c = check_name(c, || format!("{at}.capabilities[{i}]"))?;
        if !capabilities.contains(&c) {
            capabilities.push(c);
        }
    }
    Ok((trust_domain.to_owned(), namespace.to_owned(), app_id.to_owned(), capabilities))
}

/// `spiffe://<td>/ns/<ns>/<app-id>` → `(td, ns, app-id)`.
/// `/a/*/b` → `/a/**/b`; a trailing `*` segment and `*` within a segment are left as they are.
fn middle_star_as_one_segment(name: &str) -> String {
    let segments: Vec<&str> = name.split('/').collect();
    let last = segments.len().saturating_sub(1);
    segments.iter().enumerate().map(|(i, s)| if *s == "*" && i < last { "**" } else { s }).collect::<Vec<_>>().join("/")
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn parse_spiffe_id(id: &str) -> Option<(&str, &str, &str)> {
    let rest = id.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(td), Some("ns"), Some(ns), Some(app), None) => Some((td, ns, app)),
        _ => None,
    }
}

#[cfg(test)]
#[path = "capabilities_tests.rs"]
mod tests;
