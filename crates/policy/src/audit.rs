//! Tamper-evident audit lines for authorization decisions (ARCHITECTURE invariant 6).
//!
//! Owns: the [`AuditEvent`] record, sealing events into JSON lines where each line carries the SHA-256 of the line
//! before it (`"prev"`), and verifying such a chain. Editing, deleting, inserting or reordering a line breaks the
//! chain at the next line.
//!
//! Does not own: writing or rotating files, clocks (the caller passes the time), or keeping the chain head
//! somewhere the writer cannot change. Without such an anchor a hash chain cannot reveal changes to, or removal
//! of, its *last* lines, nor lines appended by someone who can write the file; [`verify_chain_to`] checks a head
//! recorded elsewhere.
//!
//! Events must never carry secrets or tokens: only identities, operation names and the matched rule.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::acl::{AclDecision, AclRequest};

/// Event name of an allowed service invocation.
pub const AUTH_INTERNAL_ALLOW: &str = "AUTH_INTERNAL_ALLOW";
/// Event name of a denied service invocation.
pub const AUTH_INTERNAL_DENY: &str = "AUTH_INTERNAL_DENY";

/// The `prev` of the first line of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The outcome recorded in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
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
            caller: req.caller.map(|c| format!("spiffe://{}/ns/{}/{}", c.trust_domain, c.namespace, c.app_id)),
            callee: callee.to_owned(),
            operation: req.operation.to_owned(),
            verb: req.verb.map(|v| v.as_str().to_owned()),
            decision: outcome,
            rule: decision.rule.to_string(),
            reason: decision.reason.to_owned(),
        }
    }
}

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
struct SealedLine {
    #[serde(flatten)]
    _event: AuditEvent,
    prev: String,
}

impl AuditChain {
    /// A new chain; its first line will have `prev` = [`GENESIS_HASH`].
    pub fn new() -> Self {
        Self { prev: GENESIS_HASH.to_owned() }
    }

    /// Continues an existing file whose last line is `last_line` (without its newline). The line must itself be a
    /// sealed audit line; errors report it as line 1.
    pub fn resume(last_line: &str) -> Result<Self, ChainError> {
        parse_prev(last_line).map_err(|kind| ChainError { line: 1, kind })?;
        Ok(Self { prev: sha256_hex(last_line) })
    }

    /// The hash the next line will carry as `prev`: record it elsewhere to anchor the chain.
    pub fn head(&self) -> &str {
        &self.prev
    }

    /// Seals `event` into one JSON line (no trailing newline) and advances the chain.
    pub fn seal(&mut self, event: &AuditEvent) -> String {
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
        map.insert("prev".into(), Value::String(self.prev.clone()));
        // Built from a `Value`, whose Display cannot fail, rather than `to_string(event)`, which returns a Result.
        let line = Value::Object(map).to_string();
        self.prev = sha256_hex(&line);
        line
    }
}

/// Parses a sealed line back into its event (ignoring `prev`).
pub fn parse_line(line: &str) -> Result<AuditEvent, ChainErrorKind> {
    serde_json::from_str(line).map_err(ChainErrorKind::Malformed)
}

/// Verifies that `lines` form one chain starting at [`GENESIS_HASH`]; returns the number of lines.
pub fn verify_chain<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<usize, ChainError> {
    walk(lines).map(|(count, _)| count)
}

/// Like [`verify_chain`], and also checks that the chain ends at `expected_head` (an [`AuditChain::head`]
/// recorded out of reach of the writer), which reveals an edited, removed or appended tail.
pub fn verify_chain_to<'a>(lines: impl IntoIterator<Item = &'a str>, expected_head: &str) -> Result<usize, ChainError> {
    let (count, head) = walk(lines)?;
    if head != expected_head {
        return Err(ChainError {
            line: count,
            kind: ChainErrorKind::HeadMismatch { expected: expected_head.to_owned(), found: head },
        });
    }
    Ok(count)
}

fn walk<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<(usize, String), ChainError> {
    let mut expected = GENESIS_HASH.to_owned();
    let mut count = 0;
    for (index, line) in lines.into_iter().enumerate() {
        let number = index + 1;
        let found = parse_prev(line).map_err(|kind| ChainError { line: number, kind })?;
        if found != expected {
            return Err(ChainError { line: number, kind: ChainErrorKind::PrevMismatch { expected, found } });
        }
        expected = sha256_hex(line);
        count = number;
    }
    Ok((count, expected))
}

fn parse_prev(line: &str) -> Result<String, ChainErrorKind> {
    let sealed: SealedLine = serde_json::from_str(line).map_err(ChainErrorKind::Malformed)?;
    let well_formed = sealed.prev.len() == 64 && sealed.prev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if well_formed { Ok(sealed.prev) } else { Err(ChainErrorKind::BadPrev) }
}

fn sha256_hex(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

#[cfg(test)]
mod tests {
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
        }
    }

    fn sealed(n: usize) -> Vec<String> {
        let mut chain = AuditChain::new();
        (0..n).map(|i| chain.seal(&event(i, if i % 2 == 0 { Decision::Allow } else { Decision::Deny }))).collect()
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
        let line = chain.seal(&e);
        assert_eq!(parse_line(&line).ok(), Some(e));
        assert!(line.contains("\"decision\":\"deny\""), "{line}");
        let no_caller = AuditEvent { caller: None, verb: None, ..event(2, Decision::Allow) };
        let line = chain.seal(&no_caller);
        assert!(line.contains("\"caller\":null") && line.contains("\"verb\":null"), "{line}");
        assert!(matches!(parse_line("{}"), Err(ChainErrorKind::Malformed(_))));
    }

    fn broken_at(lines: &[String]) -> Option<(usize, &'static str)> {
        verify(lines).err().map(|e| {
            let kind = match e.kind {
                ChainErrorKind::Malformed(_) => "malformed",
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
        inserted.insert(2, forged_chain.seal(&event(9, Decision::Allow)));
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

    #[test]
    fn anchored_head_reveals_tail_changes() {
        let mut chain = AuditChain::new();
        let lines: Vec<String> = (0..3).map(|i| chain.seal(&event(i, Decision::Allow))).collect();
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
        let mut lines: Vec<String> = (0..2).map(|i| chain.seal(&event(i, Decision::Allow))).collect();
        let last = lines.last().cloned().unwrap_or_default();
        let mut resumed = AuditChain::resume(&last).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resumed, chain);
        lines.push(resumed.seal(&event(2, Decision::Deny)));
        assert_eq!(verify(&lines).ok(), Some(3));

        let err = AuditChain::resume("{\"prev\":\"00\"}").err();
        assert!(matches!(err, Some(ChainError { line: 1, kind: ChainErrorKind::Malformed(_) })), "{err:?}");
        let err = AuditChain::resume("").err();
        assert!(matches!(err, Some(ChainError { line: 1, kind: ChainErrorKind::Malformed(_) })), "{err:?}");
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
