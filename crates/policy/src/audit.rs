//! Tamper-evident audit lines for authorization decisions (ARCHITECTURE invariant 6).
//!
//! Owns: the [`AuditEvent`] record, sealing events into JSON lines where each line carries the SHA-256 of the line
//! before it (`"prev"`), and verifying such a chain ([`verify_chain`] over lines, [`verify_log`] over a whole file,
//! naming real line numbers and telling a torn last line from a broken chain). Editing, deleting, inserting or
//! reordering a line breaks the chain at the next line.
//!
//! Does not own: writing or rotating files, clocks (the caller passes the time), or keeping the chain head
//! somewhere the writer cannot change. Without such an anchor a hash chain cannot reveal changes to, or removal
//! of, its *last* lines, nor lines appended by someone who can write the file; [`verify_chain_to`] checks a head
//! recorded elsewhere.
//!
//! Events must never carry secrets or tokens: only identities, operation names and the matched rule.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::acl::{AclDecision, AclRequest, AppProtocol, Caller};
use crate::capabilities::{CapabilityDecision, CapabilityRequest, RouteList};
use crate::invocation::{InvocationInput, InvocationMethod, InvocationOutcome, InvocationRefusal, Operation};

/// Event name of an allowed service invocation.
pub const AUTH_INTERNAL_ALLOW: &str = "AUTH_INTERNAL_ALLOW";
/// Event name of a denied service invocation.
pub const AUTH_INTERNAL_DENY: &str = "AUTH_INTERNAL_DENY";

/// Event name of a request refused by a middleware of `spec.httpPipeline` or `spec.appHttpPipeline`.
pub const MIDDLEWARE_DENY: &str = "MIDDLEWARE_DENY";

/// Event names of MCP `tools/call` decisions and of MCP messages refused before any decision (malformed, unknown
/// method, routing headers that disagree with the body).
pub const MCP_TOOL_ALLOW: &str = "MCP_TOOL_ALLOW";
pub const MCP_TOOL_DENY: &str = "MCP_TOOL_DENY";
pub const MCP_MESSAGE_REFUSED: &str = "MCP_MESSAGE_REFUSED";

/// Event names of pub/sub decisions: a publish judged by the topic scopes, a subscription refused by them, and a
/// delivery judged by the publisher check (`wardsig`), the subscription's `allowedPublishers` and the event's
/// expiry.
pub const PUBSUB_PUBLISH_ALLOW: &str = "PUBSUB_PUBLISH_ALLOW";
pub const PUBSUB_PUBLISH_DENY: &str = "PUBSUB_PUBLISH_DENY";
pub const PUBSUB_SUBSCRIBE_DENY: &str = "PUBSUB_SUBSCRIBE_DENY";
pub const PUBSUB_DELIVER_ALLOW: &str = "PUBSUB_DELIVER_ALLOW";
pub const PUBSUB_DELIVER_DENY: &str = "PUBSUB_DELIVER_DENY";

/// Event name of the record a writer adds when it opens a log whose last line was torn by a crash mid-write: the
/// torn bytes were moved to another file, named in `operation`.
pub const AUDIT_TORN_TAIL: &str = "AUDIT_TORN_TAIL";

/// The `prev` of the first line of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The outcome recorded in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
    /// Not an authorization decision: an event about the log itself (e.g. [`AUDIT_TORN_TAIL`]).
    Notice,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Notice => "notice",
        }
    }
}

/// One authorization decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 timestamp, supplied by the caller.
    pub time: String,
    /// [`AUTH_INTERNAL_ALLOW`], [`AUTH_INTERNAL_DENY`] or another event name.
    pub event: String,
    /// The caller's SPIFFE ID; `None` if the caller was not authenticated.
    pub caller: Option<String>,
    /// The callee app-id.
    pub callee: String,
    pub operation: String,
    /// HTTP verb; `None` for gRPC or requests without a verb.
    pub verb: Option<String>,
    pub decision: Decision,
    /// The rule that decided, e.g. `policies[0].operations[1].httpVerb[0]` or `global defaultAction`.
    pub rule: String,
    pub reason: String,
    /// The MCP tool of a `tools/call` decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The JSON-RPC id of the message an MCP decision was about (as JSON text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<String>,
}

impl AuditEvent {
    /// The event for one ACL decision on an inbound invocation of `callee`.
    pub fn for_acl(time: impl Into<String>, callee: &str, req: &AclRequest<'_>, decision: &AclDecision) -> Self {
        let (event, outcome) = if decision.allowed {
            (AUTH_INTERNAL_ALLOW, Decision::Allow)
        } else {
            (AUTH_INTERNAL_DENY, Decision::Deny)
        };
        Self {
            time: time.into(),
            event: event.to_owned(),
            caller: req.caller.map(spiffe_id),
            callee: callee.to_owned(),
            operation: req.operation.to_owned(),
            verb: req.verb.map(|v| v.as_str().to_owned()),
            decision: outcome,
            rule: decision.rule.to_string(),
            reason: decision.reason.to_owned(),
            tool: None,
            jsonrpc_id: None,
        }
    }
}

impl AuditEvent {
    /// The event for one capability decision (issue 15), after the ACL allowed the call; `None` when no route
    /// applied (the ACL's event is the whole record then). A denial's `reason` is `missing capability <name>` and
    /// its `rule` the route that required it; an allow's `reason` lists the capabilities used (never the caller's
    /// whole grant set).
    pub fn for_capability(
        time: impl Into<String>,
        callee: &str,
        req: &CapabilityRequest<'_>,
        decision: &CapabilityDecision<'_>,
    ) -> Option<Self> {
        let (event, outcome, rule, reason) = match decision {
            CapabilityDecision::NoRoute => return None,
            CapabilityDecision::Allowed { routes, used } => (
                AUTH_INTERNAL_ALLOW,
                Decision::Allow,
                RouteList(routes).to_string(),
                format!("capabilities used: {}", used.join(", ")),
            ),
            CapabilityDecision::Missing { route, route_name, capability } => (
                AUTH_INTERNAL_DENY,
                Decision::Deny,
                format!("spec.ward.capabilities.routes[{route}] ({})", escape_raw(route_name)),
                format!("missing capability {capability}"),
            ),
        };
        Some(Self {
            time: time.into(),
            event: event.to_owned(),
            caller: req.caller.map(spiffe_id),
            callee: callee.to_owned(),
            operation: req.operation.to_owned(),
            verb: req.verb.map(|v| v.as_str().to_owned()),
            decision: outcome,
            rule,
            reason,
            tool: None,
            jsonrpc_id: None,
        })
    }
}

/// A refusal that happens before `accessControl` is consulted; each is audited as a deny like an ACL decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreAclRefusal {
    /// The method path is malformed or ambiguous.
    InvalidMethod,
    /// The request method is not one of the nine HTTP methods.
    UnsupportedVerb,
    /// The caller's identity could not be verified where one is required.
    UnverifiedCaller,
    /// The request body is larger than `--max-body-size`.
    BodyTooLarge,
    /// A proxied gRPC call to a reserved `dapr.proto.*` service.
    ReservedGrpcService,
    /// A request for something the internal port does not serve.
    UnknownEndpoint,
}

impl PreAclRefusal {
    /// A stable name, used in the event's `rule` (`refused before accessControl: invalid-method`).
    pub fn as_str(self) -> &'static str {
        match self {
            PreAclRefusal::InvalidMethod => "invalid-method",
            PreAclRefusal::UnsupportedVerb => "unsupported-verb",
            PreAclRefusal::UnverifiedCaller => "unverified-caller",
            PreAclRefusal::BodyTooLarge => "body-too-large",
            PreAclRefusal::ReservedGrpcService => "reserved-grpc-service",
            PreAclRefusal::UnknownEndpoint => "unknown-endpoint",
        }
    }
}

impl From<&InvocationRefusal> for PreAclRefusal {
    fn from(refusal: &InvocationRefusal) -> Self {
        match refusal {
            InvocationRefusal::InvalidMethod(_) => PreAclRefusal::InvalidMethod,
            InvocationRefusal::UnsupportedVerb(_) => PreAclRefusal::UnsupportedVerb,
            InvocationRefusal::ReservedGrpcService { .. } => PreAclRefusal::ReservedGrpcService,
        }
    }
}

/// Longest raw operation, verb or reason kept in an event, in bytes; longer values are cut (with a marker) so an
/// attacker cannot make one audit line arbitrarily large.
pub const MAX_AUDIT_FIELD: usize = 512;

impl AuditEvent {
    /// The event for a refusal before the ACL. `caller` is the verified SPIFFE ID, if any; `raw_operation` and
    /// `verb` are taken as received and escaped ([`escape_raw`]); `detail` says what exactly was wrong (it must not
    /// contain secrets; it is bounded and escaped too).
    pub fn for_refusal(
        time: impl Into<String>,
        caller: Option<&str>,
        callee: &str,
        raw_operation: &str,
        verb: Option<&str>,
        refusal: PreAclRefusal,
        detail: &str,
    ) -> Self {
        Self {
            time: time.into(),
            event: AUTH_INTERNAL_DENY.to_owned(),
            caller: caller.map(str::to_owned),
            callee: callee.to_owned(),
            operation: escape_raw(raw_operation),
            verb: verb.map(escape_raw),
            decision: Decision::Deny,
            rule: format!("refused before accessControl: {}", refusal.as_str()),
            reason: escape(detail, true),
            tool: None,
            jsonrpc_id: None,
        }
    }

    /// The event for a request a pipeline middleware refused: `rule` names the handler (e.g.
    /// `spec.appHttpPipeline.handlers[0] bearer (middleware.http.bearer)`), `reason` says why without any token.
    pub fn for_middleware(
        time: impl Into<String>,
        caller: Option<&str>,
        callee: &str,
        raw_operation: &str,
        verb: Option<&str>,
        rule: &str,
        reason: &str,
    ) -> Self {
        Self {
            time: time.into(),
            event: MIDDLEWARE_DENY.to_owned(),
            caller: caller.map(str::to_owned),
            callee: callee.to_owned(),
            operation: escape_raw(raw_operation),
            verb: verb.map(escape_raw),
            decision: Decision::Deny,
            rule: escape(rule, true),
            reason: escape(reason, true),
            tool: None,
            jsonrpc_id: None,
        }
    }

    /// The event for one pub/sub decision (`event` is one of the `PUBSUB_*` names). `caller` is the verified
    /// publisher (a SPIFFE ID) or, for a publish, the app; `operation` is `<pubsub>/<topic>`; never event data.
    #[allow(clippy::too_many_arguments)]
    pub fn for_pubsub(
        time: impl Into<String>,
        event: &str,
        caller: Option<&str>,
        callee: &str,
        operation: &str,
        decision: Decision,
        rule: &str,
        reason: &str,
    ) -> Self {
        Self {
            time: time.into(),
            event: event.to_owned(),
            caller: caller.map(escape_raw),
            callee: callee.to_owned(),
            operation: escape_raw(operation),
            verb: None,
            decision,
            rule: escape(rule, true),
            reason: escape(reason, true),
            tool: None,
            jsonrpc_id: None,
        }
    }

    /// The event for one MCP `tools/call` decision (never the arguments).
    #[allow(clippy::too_many_arguments)]
    pub fn for_mcp_tool(
        time: impl Into<String>,
        caller: Option<&str>,
        callee: &str,
        operation: &str,
        tool: &str,
        jsonrpc_id: Option<&str>,
        allowed: bool,
        rule: &str,
    ) -> Self {
        Self {
            time: time.into(),
            event: if allowed { MCP_TOOL_ALLOW } else { MCP_TOOL_DENY }.to_owned(),
            caller: caller.map(str::to_owned),
            callee: callee.to_owned(),
            operation: escape_raw(operation),
            verb: Some("POST".to_owned()),
            decision: if allowed { Decision::Allow } else { Decision::Deny },
            rule: rule.to_owned(),
            reason: if allowed { String::new() } else { format!("tool {} is not permitted", escape(tool, true)) },
            tool: Some(escape(tool, true)),
            jsonrpc_id: jsonrpc_id.map(|id| escape(id, true)),
        }
    }

    /// The event for an MCP message refused before any tool decision.
    pub fn for_mcp_refusal(
        time: impl Into<String>,
        caller: Option<&str>,
        callee: &str,
        operation: &str,
        reason: &str,
    ) -> Self {
        Self {
            time: time.into(),
            event: MCP_MESSAGE_REFUSED.to_owned(),
            caller: caller.map(str::to_owned),
            callee: callee.to_owned(),
            operation: escape_raw(operation),
            verb: Some("POST".to_owned()),
            decision: Decision::Deny,
            rule: "spec.ward.mcp".to_owned(),
            reason: escape(reason, true),
            tool: None,
            jsonrpc_id: None,
        }
    }

    /// The event for one [`decide_invocation`](crate::invocation::decide_invocation) outcome: a refusal before the
    /// ACL (raw operation and verb, escaped) or the ACL decision (normalised operation, canonical verb).
    pub fn for_invocation(
        time: impl Into<String>,
        callee: &str,
        input: &InvocationInput<'_>,
        outcome: &InvocationOutcome,
    ) -> Self {
        match outcome {
            InvocationOutcome::Refused(refusal) => {
                let (raw, verb) = match input.method {
                    InvocationMethod::Http { raw, verb } => (raw, Some(verb)),
                    InvocationMethod::GrpcProxy { full_method } => (full_method, None),
                };
                let caller = input.caller.map(spiffe_id);
                Self::for_refusal(time, caller.as_deref(), callee, raw, verb, refusal.into(), &refusal.to_string())
            }
            InvocationOutcome::Decided(d) => {
                let app_protocol = match d.operation {
                    Operation::Http(_) => input.app_protocol,
                    Operation::Grpc(_) => AppProtocol::Grpc,
                };
                let req =
                    AclRequest { caller: input.caller, operation: d.operation.as_str(), verb: d.verb, app_protocol };
                Self::for_acl(time, callee, &req, &d.decision)
            }
        }
    }
}

impl AuditEvent {
    /// The event recording that `bytes` bytes without a newline (SHA-256 `sha256_hex`), found after line
    /// `after_line` of the log, were moved to the file `moved_to` (a name next to the log) before writing resumed.
    pub fn for_torn_tail(
        time: impl Into<String>,
        callee: &str,
        moved_to: &str,
        bytes: u64,
        sha256_hex: &str,
        after_line: usize,
    ) -> Self {
        Self {
            time: time.into(),
            event: AUDIT_TORN_TAIL.to_owned(),
            caller: None,
            callee: callee.to_owned(),
            operation: escape_raw(moved_to),
            verb: None,
            decision: Decision::Notice,
            rule: "torn tail moved aside".to_owned(),
            reason: escape(
                &format!(
                    "{bytes} bytes without a newline after line {after_line} (a write cut short by a crash) moved to \
                     {moved_to}, sha256 {sha256_hex}"
                ),
                true,
            ),
            tool: None,
            jsonrpc_id: None,
        }
    }
}

fn spiffe_id(c: Caller<'_>) -> String {
    format!("spiffe://{}/ns/{}/{}", c.trust_domain, c.namespace, c.app_id)
}

/// Makes attacker-supplied text safe and bounded for an audit line: every byte outside printable ASCII (and `%`
/// itself, so the result decodes unambiguously) becomes `%XX`, and the result is cut at [`MAX_AUDIT_FIELD`] bytes
/// with a `…(cut)` marker. JSON escaping alone would keep control characters and invisible Unicode readable only
/// to a JSON parser, not to a person reading the line.
pub fn escape_raw(s: &str) -> String {
    escape(s, false)
}

/// [`escape_raw`], optionally keeping spaces (for our own prose in `reason`).
fn escape(s: &str, keep_space: bool) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_AUDIT_FIELD) + 8);
    for &b in s.as_bytes() {
        if out.len() + 3 > MAX_AUDIT_FIELD {
            out.push_str("…(cut)");
            break;
        }
        if ((0x21..=0x7e).contains(&b) && b != b'%') || (keep_space && b == b' ') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Why a chain failed to verify. `line` is 1-based.
#[derive(Debug, thiserror::Error)]
#[error("audit chain broken at line {line}: {kind}")]
pub struct ChainError {
    pub line: usize,
    pub kind: ChainErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainErrorKind {
    /// Not a JSON audit event with a `prev` field.
    #[error("not a sealed audit line")]
    Malformed(#[source] serde_json::Error),
    /// The line is not UTF-8 text.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// `prev` is not 64 lower-case hex digits.
    #[error("prev is not a SHA-256 hex digest")]
    BadPrev,
    /// `prev` differs from the hash of the line before: that line was edited, or lines were removed, inserted or
    /// reordered.
    #[error("prev {found} does not match the previous line ({expected})")]
    PrevMismatch { expected: String, found: String },
    /// The chain is intact but does not end at the recorded head: its tail was changed or cut off.
    #[error("chain ends at {found}, expected head {expected}")]
    HeadMismatch { expected: String, found: String },
}

/// The appender's state: the hash of the last sealed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChain {
    prev: String,
}

impl Default for AuditChain {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Deserialize)]
struct ParsedLine {
    #[serde(flatten)]
    _event: AuditEvent,
    prev: String,
}

/// A sealed line's fields, borrowed, in the order the line has always had: keys sorted (the order of the
/// `serde_json::Map` the line was first built from), `caller` and `verb` always present (`null` when unknown), `tool`
/// and `jsonrpc_id` only on the events that have them. Serialized straight from the event: no copy of each field
/// into a `Value` per decision (this runs on the request path).
#[derive(Serialize)]
struct SealedFields<'a> {
    callee: &'a str,
    caller: Option<&'a str>,
    decision: &'a str,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    jsonrpc_id: Option<&'a str>,
    operation: &'a str,
    prev: &'a str,
    reason: &'a str,
    rule: &'a str,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    verb: Option<&'a str>,
}

/// `event` chained to `prev`, as one JSON line without its newline.
fn sealed_json(event: &AuditEvent, prev: &str) -> String {
    let fields = SealedFields {
        callee: &event.callee,
        caller: event.caller.as_deref(),
        decision: event.decision.as_str(),
        event: &event.event,
        jsonrpc_id: event.jsonrpc_id.as_deref(),
        operation: &event.operation,
        prev,
        reason: &event.reason,
        rule: &event.rule,
        time: &event.time,
        tool: event.tool.as_deref(),
        verb: event.verb.as_deref(),
    };
    // Strings and options of strings only: serializing them cannot fail.
    serde_json::to_string(&fields).unwrap_or_default()
}

impl AuditChain {
    /// A new chain; its first line will have `prev` = [`GENESIS_HASH`].
    pub fn new() -> Self {
        Self { prev: GENESIS_HASH.to_owned() }
    }

    /// Continues an existing file whose last line is `last_line` (without its newline). The line must itself be a
    /// sealed audit line; errors report it as line 1 (use [`AuditChain::resume_at`] to name its real number).
    pub fn resume(last_line: &str) -> Result<Self, ChainError> {
        Self::resume_at(last_line, 1)
    }

    /// [`AuditChain::resume`] for a last line that is line `line` (1-based) of its file, so an error names it.
    pub fn resume_at(last_line: &str, line: usize) -> Result<Self, ChainError> {
        parse_prev(last_line).map_err(|kind| ChainError { line, kind })?;
        Ok(Self { prev: sha256_hex(last_line) })
    }

    /// The hash the next line will carry as `prev`: record it elsewhere to anchor the chain.
    pub fn head(&self) -> &str {
        &self.prev
    }

    /// Seals `event` into one JSON line (no trailing newline) chained to the current head. The chain does not move:
    /// write [`SealedLine::line`] out completely, then [`AuditChain::commit`] it. A line that was not (fully) written
    /// is simply dropped and the next event is sealed against the same head, so the chain on disk never has a gap
    /// (issue 12 row 9).
    #[must_use = "a sealed line only joins the chain once it is written and committed"]
    pub fn seal(&self, event: &AuditEvent) -> SealedLine {
        let line = sealed_json(event, &self.prev);
        let hash = sha256_hex(&line);
        SealedLine { line, prev: self.prev.clone(), hash }
    }

    /// Advances the chain past `sealed`, once the caller has written it completely. Refuses a line sealed against
    /// another head (sealed before a different line was committed): writing it would have broken the chain.
    pub fn commit(&mut self, sealed: &SealedLine) -> Result<(), StaleSeal> {
        if sealed.prev != self.prev {
            return Err(StaleSeal { sealed_at: sealed.prev.clone(), head: self.prev.clone() });
        }
        self.prev.clone_from(&sealed.hash);
        Ok(())
    }

    /// Seals and commits in one step, for writers that cannot fail (tests, in-memory logs).
    pub fn seal_and_commit(&mut self, event: &AuditEvent) -> String {
        let sealed = self.seal(event);
        self.prev.clone_from(&sealed.hash);
        sealed.line
    }
}

/// One event sealed by [`AuditChain::seal`], not yet part of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedLine {
    line: String,
    /// The head it was sealed against.
    prev: String,
    /// The head after it.
    hash: String,
}

impl SealedLine {
    /// The JSON line, without a newline.
    pub fn line(&self) -> &str {
        &self.line
    }
}

/// [`AuditChain::commit`] was given a line sealed against another head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit line was sealed against head {sealed_at}, but the chain is at {head}")]
pub struct StaleSeal {
    pub sealed_at: String,
    pub head: String,
}

/// Parses a sealed line back into its event (ignoring `prev`).
pub fn parse_line(line: &str) -> Result<AuditEvent, ChainErrorKind> {
    serde_json::from_str(line).map_err(ChainErrorKind::Malformed)
}

/// Verifies that `lines` form one chain starting at [`GENESIS_HASH`]; returns the number of lines.
pub fn verify_chain<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<usize, ChainError> {
    walk(lines.into_iter().enumerate().map(|(index, line)| (index + 1, line))).map(|(count, _)| count)
}

/// The end of a log that is not a complete line: bytes after the last newline, as a crash in the middle of a write
/// leaves them. Not part of the chain, and not evidence of tampering by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Its line number (1-based, counting every line of the file).
    pub line: usize,
    /// Its length in bytes.
    pub bytes: usize,
}

/// What [`verify_log`] found in an intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    /// Sealed lines in the chain (blank lines are not counted).
    pub lines: usize,
    /// The hash the next line would carry as `prev`.
    pub head: String,
    /// Bytes after the last newline, if any.
    pub torn_tail: Option<TornTail>,
    /// The [`AUDIT_TORN_TAIL`] events in the chain: tails moved aside by a writer after earlier crashes.
    pub moved_tails: Vec<AuditEvent>,
}

/// Verifies a whole log file as written by a writer: every complete line (ending in `\n`, a trailing `\r` ignored,
/// blank lines skipped) must continue the chain from [`GENESIS_HASH`]. Errors name the line's number in the file,
/// blank lines included. Bytes after the last newline are reported as a [`TornTail`], separately from the chain.
pub fn verify_log(bytes: &[u8]) -> Result<LogReport, ChainError> {
    let mut torn_tail = None;
    let mut complete = Vec::new();
    for (index, segment) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        let Some(line) = segment.strip_suffix(b"\n") else {
            torn_tail = Some(TornTail { line: number, bytes: segment.len() });
            break;
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line).map_err(|_| ChainError { line: number, kind: ChainErrorKind::NotUtf8 })?;
        if !line.trim().is_empty() {
            complete.push((number, line));
        }
    }
    let (lines, head) = walk(complete.iter().copied())?;
    let moved_tails = complete
        .iter()
        .filter_map(|(_, line)| parse_line(line).ok())
        .filter(|event| event.event == AUDIT_TORN_TAIL)
        .collect();
    Ok(LogReport { lines, head, torn_tail, moved_tails })
}

/// The SHA-256 of `bytes` as lower-case hex (the digest the chain uses), e.g. to record a moved-aside tail.
pub fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Like [`verify_chain`], and also checks that the chain ends at `expected_head` (an [`AuditChain::head`]
/// recorded out of reach of the writer), which reveals an edited, removed or appended tail.
pub fn verify_chain_to<'a>(lines: impl IntoIterator<Item = &'a str>, expected_head: &str) -> Result<usize, ChainError> {
    let (count, head) = walk(lines.into_iter().enumerate().map(|(index, line)| (index + 1, line)))?;
    if head != expected_head {
        return Err(ChainError {
            line: count,
            kind: ChainErrorKind::HeadMismatch { expected: expected_head.to_owned(), found: head },
        });
    }
    Ok(count)
}

/// Walks `(line number, line)` pairs; returns the number of lines and the head after the last.
fn walk<'a>(lines: impl IntoIterator<Item = (usize, &'a str)>) -> Result<(usize, String), ChainError> {
    let mut expected = GENESIS_HASH.to_owned();
    let mut count = 0;
    for (number, line) in lines {
        let found = parse_prev(line).map_err(|kind| ChainError { line: number, kind })?;
        if found != expected {
            return Err(ChainError { line: number, kind: ChainErrorKind::PrevMismatch { expected, found } });
        }
        expected = sha256_hex(line);
        count += 1;
    }
    Ok((count, expected))
}

fn parse_prev(line: &str) -> Result<String, ChainErrorKind> {
    let sealed: ParsedLine = serde_json::from_str(line).map_err(ChainErrorKind::Malformed)?;
    let well_formed = sealed.prev.len() == 64 && sealed.prev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if well_formed { Ok(sealed.prev) } else { Err(ChainErrorKind::BadPrev) }
}

fn sha256_hex(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

#[cfg(test)]
mod tests {

    /// The line as it was built before it was serialized straight from the event (a `serde_json::Map` of copies):
    /// every existing log was written this way, so the bytes must not change.
    fn sealed_json_by_map(event: &AuditEvent, prev: &str) -> String {
        use serde_json::{Map, Value};
        let mut map = Map::new();
        let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        map.insert("time".into(), Value::String(event.time.clone()));
        map.insert("event".into(), Value::String(event.event.clone()));
        map.insert("caller".into(), opt(&event.caller));
        map.insert("callee".into(), Value::String(event.callee.clone()));
        map.insert("operation".into(), Value::String(event.operation.clone()));
        map.insert("verb".into(), opt(&event.verb));
        map.insert("decision".into(), Value::String(event.decision.as_str().to_owned()));
        map.insert("rule".into(), Value::String(event.rule.clone()));
        map.insert("reason".into(), Value::String(event.reason.clone()));
        if let Some(tool) = &event.tool {
            map.insert("tool".into(), Value::String(tool.clone()));
        }
        if let Some(id) = &event.jsonrpc_id {
            map.insert("jsonrpc_id".into(), Value::String(id.clone()));
        }
        map.insert("prev".into(), Value::String(prev.to_owned()));
        Value::Object(map).to_string()
    }

    #[test]
    fn sealed_lines_keep_their_bytes() {
        let plain = AuditEvent {
            time: "2026-05-01T10:00:00Z".into(),
            event: AUTH_INTERNAL_ALLOW.into(),
            caller: Some("spiffe://public/ns/default/caller".into()),
            callee: "callee".into(),
            operation: "orders/1".into(),
            verb: Some("GET".into()),
            decision: Decision::Allow,
            rule: "policies[0].operations[0]".into(),
            reason: "allowed".into(),
            tool: None,
            jsonrpc_id: None,
        };
        let odd = AuditEvent {
            caller: None,
            verb: None,
            decision: Decision::Deny,
            operation: "a\"b\\c\n\u{1}/ü/\u{2028}".into(),
            reason: "tab\there".into(),
            tool: Some("delete_all".into()),
            jsonrpc_id: Some("\"7\"".into()),
            ..plain.clone()
        };
        let only_tool = AuditEvent { tool: Some("t".into()), ..plain.clone() };
        for event in [&plain, &odd, &only_tool] {
            assert_eq!(sealed_json(event, GENESIS_HASH), sealed_json_by_map(event, GENESIS_HASH));
        }
    }
    use super::*;
    use crate::acl::{AccessControl, AppProtocol, Caller, HttpVerb};

    fn event(n: usize, decision: Decision) -> AuditEvent {
        AuditEvent {
            time: format!("2026-05-01T10:00:{n:02}Z"),
            event: if decision == Decision::Allow { AUTH_INTERNAL_ALLOW } else { AUTH_INTERNAL_DENY }.into(),
            caller: Some("spiffe://public/ns/default/caller".into()),
            callee: "callee".into(),
            operation: format!("orders/{n}"),
            verb: Some("GET".into()),
            decision,
            rule: "policies[0].operations[0].httpVerb[0]".into(),
            reason: "operation and HTTP verb matched".into(),
            tool: None,
            jsonrpc_id: None,
        }
    }

    fn sealed(n: usize) -> Vec<String> {
        let mut chain = AuditChain::new();
        (0..n)
            .map(|i| chain.seal_and_commit(&event(i, if i % 2 == 0 { Decision::Allow } else { Decision::Deny })))
            .collect()
    }

    fn verify(lines: &[String]) -> Result<usize, ChainError> {
        verify_chain(lines.iter().map(String::as_str))
    }

    #[test]
    fn intact_chain_verifies() {
        let lines = sealed(5);
        assert_eq!(verify(&lines).ok(), Some(5));
        assert_eq!(verify(&[]).ok(), Some(0));
        let first = lines.first().map(String::as_str).unwrap_or_default();
        assert!(first.contains(&format!("\"prev\":\"{GENESIS_HASH}\"")), "{first}");
        assert!(!first.contains('\n'));
    }

    #[test]
    fn line_round_trips_to_the_event() {
        let mut chain = AuditChain::new();
        let e = event(1, Decision::Deny);
        let line = chain.seal_and_commit(&e);
        assert_eq!(parse_line(&line).ok(), Some(e));
        assert!(line.contains("\"decision\":\"deny\""), "{line}");
        let no_caller = AuditEvent { caller: None, verb: None, ..event(2, Decision::Allow) };
        let line = chain.seal_and_commit(&no_caller);
        assert!(line.contains("\"caller\":null") && line.contains("\"verb\":null"), "{line}");
        assert!(matches!(parse_line("{}"), Err(ChainErrorKind::Malformed(_))));
    }

    fn broken_at(lines: &[String]) -> Option<(usize, &'static str)> {
        verify(lines).err().map(|e| {
            let kind = match e.kind {
                ChainErrorKind::Malformed(_) => "malformed",
                ChainErrorKind::NotUtf8 => "not utf-8",
                ChainErrorKind::BadPrev => "bad prev",
                ChainErrorKind::PrevMismatch { .. } => "mismatch",
                ChainErrorKind::HeadMismatch { .. } => "head",
            };
            (e.line, kind)
        })
    }

    #[test]
    fn tampering_is_detected() {
        let lines = sealed(5);
        let mut edited = lines.clone();
        if let Some(l) = edited.get_mut(1) {
            *l = l.replace("\"decision\":\"deny\"", "\"decision\":\"allow\"");
        }
        assert_ne!(edited, lines);
        assert_eq!(broken_at(&edited), Some((3, "mismatch")), "edited line 2");

        let mut deleted = lines.clone();
        deleted.remove(2);
        assert_eq!(broken_at(&deleted), Some((3, "mismatch")), "deleted line 3");

        let mut deleted_first = lines.clone();
        deleted_first.remove(0);
        assert_eq!(broken_at(&deleted_first), Some((1, "mismatch")), "deleted line 1");

        let mut inserted = lines.clone();
        let mut forged_chain = AuditChain::resume(&lines[1]).unwrap_or_else(|e| panic!("{e}"));
        inserted.insert(2, forged_chain.seal_and_commit(&event(9, Decision::Allow)));
        assert_eq!(broken_at(&inserted), Some((4, "mismatch")), "inserted after line 2");

        let mut reordered = lines.clone();
        reordered.swap(1, 3);
        assert_eq!(broken_at(&reordered), Some((2, "mismatch")), "swapped lines 2 and 4");

        let mut garbage = lines.clone();
        garbage.insert(1, "not json".into());
        assert_eq!(broken_at(&garbage), Some((2, "malformed")));

        let mut bad_prev = lines;
        if let Some(l) = bad_prev.get_mut(0) {
            *l = l.replace(GENESIS_HASH, "zz");
        }
        assert_eq!(broken_at(&bad_prev), Some((1, "bad prev")));
    }

    /// `verify_log` numbers lines as the file does (blank lines count), and tells a torn tail (bytes after the last
    /// newline) from a broken chain.
    #[test]
    fn verify_log_reports_real_line_numbers_and_torn_tails() {
        let lines = sealed(4);
        let file = |parts: &[&str]| parts.join("\n").into_bytes();
        let (l1, l2, l3, l4) = (&lines[0], &lines[1], &lines[2], &lines[3]);

        let report = verify_log(&file(&[l1, l2, l3, l4, ""])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.lines, report.torn_tail, report.moved_tails.len()), (4, None, 0));
        assert_eq!(verify_log(b"").ok().map(|r| r.lines), Some(0));

        let report = verify_log(&file(&[l1, "", "  ", l2, l3, ""])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.lines, 3, "blank lines are skipped");
        let crlf = format!("{l1}\r\n{l2}\r\n");
        assert_eq!(verify_log(crlf.as_bytes()).ok().map(|r| r.lines), Some(2), "CRLF line ends");

        let torn = &l4[..l4.len() / 2];
        let report = verify_log(&file(&[l1, l2, l3, torn])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.lines, 3);
        assert_eq!(report.torn_tail, Some(TornTail { line: 4, bytes: torn.len() }));
        // A whole sealed line without its newline is still torn: the write that carried it did not finish.
        let report = verify_log(&file(&[l1, l4])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.lines, report.torn_tail.map(|t| t.line)), (1, Some(2)));

        let edited = l2.replace("orders/1", "orders/X");
        let err = verify_log(&file(&[l1, "", &edited, l3, l4, ""])).err();
        assert!(matches!(err, Some(ChainError { line: 4, kind: ChainErrorKind::PrevMismatch { .. } })), "{err:?}");
        let err = verify_log(&file(&[l1, "", "", "{\"half\": ", l2, ""])).err();
        assert!(matches!(err, Some(ChainError { line: 4, kind: ChainErrorKind::Malformed(_) })), "{err:?}");
        let mut bytes = file(&[l1, ""]);
        bytes.extend_from_slice(b"\xff\xfe\n");
        let err = verify_log(&bytes).err();
        assert!(matches!(err, Some(ChainError { line: 2, kind: ChainErrorKind::NotUtf8 })), "{err:?}");
        // A chain broken before a torn tail is reported as broken.
        let err = verify_log(&file(&[l2, torn])).err();
        assert!(matches!(err, Some(ChainError { line: 1, .. })), "{err:?}");

        let err = AuditChain::resume_at("garbage", 17).err();
        assert!(matches!(err, Some(ChainError { line: 17, kind: ChainErrorKind::Malformed(_) })), "{err:?}");
    }

    #[test]
    fn torn_tail_event_continues_the_chain() {
        let mut lines = sealed(2);
        let mut chain = AuditChain::resume_at(&lines[1], 2).unwrap_or_else(|e| panic!("{e}"));
        let digest = digest_hex(b"{\"half");
        assert_eq!(digest.len(), 64);
        let e = AuditEvent::for_torn_tail("t", "orders", "audit.log.torn-1", 6, &digest, 2);
        assert_eq!(
            (e.event.as_str(), e.decision, e.operation.as_str()),
            (AUDIT_TORN_TAIL, Decision::Notice, "audit.log.torn-1")
        );
        assert!(
            e.reason.contains("6 bytes") && e.reason.contains(&digest) && e.reason.contains("after line 2"),
            "{e:?}"
        );
        let line = chain.seal_and_commit(&e);
        assert!(line.contains("\"decision\":\"notice\""), "{line}");
        assert_eq!(parse_line(&line).ok(), Some(e.clone()));
        lines.push(line);
        let report = verify_log((lines.join("\n") + "\n").as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.lines, report.moved_tails), (3, vec![e]));
    }

    #[test]
    fn anchored_head_reveals_tail_changes() {
        let mut chain = AuditChain::new();
        let lines: Vec<String> = (0..3).map(|i| chain.seal_and_commit(&event(i, Decision::Allow))).collect();
        let head = chain.head().to_owned();
        assert_eq!(verify_chain_to(lines.iter().map(String::as_str), &head).ok(), Some(3));

        let truncated = &lines[..2];
        assert_eq!(verify(truncated).ok(), Some(2), "a cut tail is invisible without an anchor");
        let err = verify_chain_to(truncated.iter().map(String::as_str), &head).err();
        assert!(matches!(err, Some(ChainError { line: 2, kind: ChainErrorKind::HeadMismatch { .. } })), "{err:?}");

        let mut edited_last = lines.clone();
        if let Some(l) = edited_last.last_mut() {
            *l = l.replace("orders/2", "orders/X");
        }
        let err = verify_chain_to(edited_last.iter().map(String::as_str), &head).err();
        assert!(matches!(err, Some(ChainError { line: 3, kind: ChainErrorKind::HeadMismatch { .. } })), "{err:?}");
    }

    #[test]
    fn resume_continues_the_chain() {
        let mut chain = AuditChain::new();
        let mut lines: Vec<String> = (0..2).map(|i| chain.seal_and_commit(&event(i, Decision::Allow))).collect();
        let last = lines.last().cloned().unwrap_or_default();
        let mut resumed = AuditChain::resume(&last).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resumed, chain);
        lines.push(resumed.seal_and_commit(&event(2, Decision::Deny)));
        assert_eq!(verify(&lines).ok(), Some(3));

        let err = AuditChain::resume("{\"prev\":\"00\"}").err();
        assert!(matches!(err, Some(ChainError { line: 1, kind: ChainErrorKind::Malformed(_) })), "{err:?}");
        let err = AuditChain::resume("").err();
        assert!(matches!(err, Some(ChainError { line: 1, kind: ChainErrorKind::Malformed(_) })), "{err:?}");
    }

    #[test]
    fn seal_does_not_advance_until_commit() {
        let mut chain = AuditChain::new();
        let first = chain.seal(&event(0, Decision::Allow));
        assert_eq!(chain.head(), GENESIS_HASH, "sealing alone must not move the head");
        // The write of `first` failed: the next event is sealed against the same head and the file stays a chain.
        let retry = chain.seal(&event(1, Decision::Deny));
        assert!(retry.line().contains(GENESIS_HASH));
        assert_eq!(chain.commit(&retry), Ok(()));
        let stale = chain.commit(&first).err();
        assert_eq!(stale, Some(StaleSeal { sealed_at: GENESIS_HASH.into(), head: chain.head().into() }));
        let second = chain.seal(&event(2, Decision::Allow));
        assert_eq!(chain.commit(&second), Ok(()));
        assert_eq!(verify_chain_to([retry.line(), second.line()], chain.head()).ok(), Some(2));
    }

    #[test]
    fn refusal_events() {
        let e = AuditEvent::for_refusal(
            "t",
            Some("spiffe://public/ns/default/a"),
            "b",
            "adm%C4%B1n/\u{1b}[31m x",
            Some("FOO"),
            PreAclRefusal::InvalidMethod,
            "invalid method: character 'ı' could be read as ASCII",
        );
        assert_eq!(e.event, AUTH_INTERNAL_DENY);
        assert_eq!(e.decision, Decision::Deny);
        assert_eq!(e.operation, "adm%25C4%25B1n/%1B[31m%20x");
        assert_eq!(e.verb.as_deref(), Some("FOO"));
        assert_eq!(e.rule, "refused before accessControl: invalid-method");
        assert_eq!(e.reason, "invalid method: character '%C4%B1' could be read as ASCII");
        let long = AuditEvent::for_refusal("t", None, "b", &"a".repeat(10_000), None, PreAclRefusal::BodyTooLarge, "");
        assert!(long.operation.len() <= MAX_AUDIT_FIELD + "…(cut)".len() && long.operation.ends_with("…(cut)"));
        assert_eq!((long.caller, long.verb), (None, None));
        let mut chain = AuditChain::new();
        let line = chain.seal_and_commit(&e);
        assert_eq!(parse_line(&line).ok(), Some(e));
        let names: Vec<&str> = [
            PreAclRefusal::InvalidMethod,
            PreAclRefusal::UnsupportedVerb,
            PreAclRefusal::UnverifiedCaller,
            PreAclRefusal::BodyTooLarge,
            PreAclRefusal::ReservedGrpcService,
        ]
        .iter()
        .map(|r| r.as_str())
        .collect();
        assert_eq!(
            names,
            ["invalid-method", "unsupported-verb", "unverified-caller", "body-too-large", "reserved-grpc-service"]
        );
    }

    #[test]
    fn invocation_events() {
        use crate::invocation::{InvocationInput, InvocationMethod, decide_invocation};
        let acl = AccessControl::allow_all();
        let caller = Some(Caller { trust_domain: "public", namespace: "default", app_id: "a" });
        let input = InvocationInput {
            caller,
            method: InvocationMethod::Http { raw: "admin", verb: "PROPFIND" },
            app_protocol: AppProtocol::Http,
        };
        let e = AuditEvent::for_invocation("t", "b", &input, &decide_invocation(&acl, &input));
        assert_eq!(e.rule, "refused before accessControl: unsupported-verb");
        assert_eq!((e.operation.as_str(), e.verb.as_deref()), ("admin", Some("PROPFIND")));
        assert_eq!(e.caller.as_deref(), Some("spiffe://public/ns/default/a"));

        let input = InvocationInput { method: InvocationMethod::Http { raw: "x/%2e%2E/Orders", verb: "get" }, ..input };
        let e = AuditEvent::for_invocation("t", "b", &input, &decide_invocation(&acl, &input));
        assert_eq!((e.decision, e.operation.as_str(), e.verb.as_deref()), (Decision::Allow, "Orders", Some("GET")));

        let input = InvocationInput {
            method: InvocationMethod::GrpcProxy { full_method: "/dapr.proto.runtime.v1.AppCallback/OnInvoke" },
            ..input
        };
        let e = AuditEvent::for_invocation("t", "b", &input, &decide_invocation(&acl, &input));
        assert_eq!(e.rule, "refused before accessControl: reserved-grpc-service");
        assert_eq!((e.decision, e.verb), (Decision::Deny, None));
    }

    #[test]
    fn event_from_an_acl_decision() {
        let acl = AccessControl::compile(&crate::spec::AccessControlSpec {
            default_action: Some("deny".into()),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let req = AclRequest {
            caller: Some(Caller { trust_domain: "public", namespace: "default", app_id: "a" }),
            operation: "admin/x",
            verb: Some(HttpVerb::Post),
            app_protocol: AppProtocol::Http,
        };
        let e = AuditEvent::for_acl("2026-05-01T10:00:00Z", "b", &req, &acl.decide(&req));
        assert_eq!(e.event, AUTH_INTERNAL_DENY);
        assert_eq!(e.decision, Decision::Deny);
        assert_eq!(e.caller.as_deref(), Some("spiffe://public/ns/default/a"));
        assert_eq!(e.verb.as_deref(), Some("POST"));
        assert_eq!(e.rule, "global defaultAction");

        let allowed = AuditEvent::for_acl(
            "t",
            "b",
            &AclRequest { caller: None, ..req },
            &AccessControl::allow_all().decide(&req),
        );
        assert_eq!(
            (allowed.event.as_str(), allowed.decision, allowed.caller),
            (AUTH_INTERNAL_ALLOW, Decision::Allow, None)
        );
    }
}
