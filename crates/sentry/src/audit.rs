//! Sentry's audit log (`ward sentry --audit-log FILE`): every certificate decision on a bootstrap credential —
//! issued, or refused with the validator's reason — as one line of the same hash chain the sidecars write
//! (`ward audit verify FILE` checks it). Fail closed: a certificate whose issuance cannot be recorded is not handed
//! out. Renewals by certificate are recorded too (rule `renewal`).
//!
//! Sentry signs at most thousands of certificates a second, so lines are written synchronously under a lock, each
//! handed to the operating system before the answer leaves (it survives a crash of sentry; `fdatasync` is not
//! done).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ward_policy::audit::{AuditChain, AuditEvent, Decision, verify_log};

/// The event names of sentry's lines.
pub const SENTRY_CERTIFICATE_ISSUED: &str = "SENTRY_CERTIFICATE_ISSUED";
pub const SENTRY_CERTIFICATE_REFUSED: &str = "SENTRY_CERTIFICATE_REFUSED";

#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the audit chain is broken: {source}; keep this file as evidence and start a new one")]
    Chain {
        path: PathBuf,
        #[source]
        source: ward_policy::audit::ChainError,
    },
    #[error(
        "{path}: line {line} is incomplete ({bytes} bytes without a newline, a write cut short by a crash); check it \
         with `ward audit verify`, then move the file aside"
    )]
    TornTail { path: PathBuf, line: usize, bytes: usize },
}

/// An append-only, hash-chained log of certificate decisions.
#[derive(Debug)]
pub struct SentryAudit {
    path: PathBuf,
    state: Mutex<(File, AuditChain)>,
}

impl SentryAudit {
    /// Opens (or creates, mode 0600) `path` and continues its chain; a broken chain or an incomplete last line is
    /// refused rather than continued.
    pub fn open(path: &Path) -> Result<Self, AuditLogError> {
        let io = |source| AuditLogError::Io { path: path.to_owned(), source };
        let existing = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(io(err)),
        };
        let report = verify_log(&existing).map_err(|source| AuditLogError::Chain { path: path.to_owned(), source })?;
        if let Some(tail) = report.torn_tail {
            return Err(AuditLogError::TornTail { path: path.to_owned(), line: tail.line, bytes: tail.bytes });
        }
        let chain = match existing.split(|b| *b == b'\n').rev().find(|l| !l.iter().all(u8::is_ascii_whitespace)) {
            Some(last) => AuditChain::resume(&String::from_utf8_lossy(last))
                .map_err(|source| AuditLogError::Chain { path: path.to_owned(), source })?,
            None => AuditChain::new(),
        };
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(io)?;
        Ok(Self { path: path.to_owned(), state: Mutex::new((file, chain)) })
    }

    /// Records one decision about a certificate for `identity` (the requested SPIFFE ID, or `namespace/app-id`
    /// when the request did not name a valid one). `rule` is the validator (`kubernetes`, `join-token`, `jwks`,
    /// `insecure`, `renewal`); `reason` is the refusal's reason or what was issued.
    pub fn record(&self, identity: &str, issued: bool, rule: &str, reason: &str) -> Result<(), AuditLogError> {
        let event = AuditEvent {
            time: crate::server::humantime_rfc3339(std::time::SystemTime::now()),
            event: if issued { SENTRY_CERTIFICATE_ISSUED } else { SENTRY_CERTIFICATE_REFUSED }.to_owned(),
            caller: None,
            callee: identity.to_owned(),
            operation: "SignCertificate".to_owned(),
            verb: None,
            decision: if issued { Decision::Allow } else { Decision::Deny },
            rule: rule.to_owned(),
            reason: ward_policy::audit::escape_raw(reason),
            tool: None,
            jsonrpc_id: None,
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (file, chain) = &mut *state;
        let sealed = chain.seal(&event);
        let mut line = sealed.line().to_owned();
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(|source| AuditLogError::Io { path: self.path.clone(), source })?;
        // Only a line that reached the file advances the chain.
        let _ = chain.commit(&sealed);
        Ok(())
    }
}

#[cfg(test)]
impl SentryAudit {
    /// An audit log writing to `file` (e.g. `/dev/full`, whose writes fail), chain from genesis.
    pub(crate) fn on_file(path: &Path, file: File) -> Self {
        Self { path: path.to_owned(), state: Mutex::new((file, AuditChain::new())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_continue_one_chain_across_reopens_and_a_torn_tail_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sentry-audit.log");
        let audit = SentryAudit::open(&path).unwrap();
        audit.record("spiffe://public/ns/shop/orders", true, "kubernetes", "valid until 2026-12-06T00:00:00Z").unwrap();
        audit.record("shop/billing", false, "kubernetes", "the pod's app id is \"orders\"\n").unwrap();
        drop(audit);
        SentryAudit::open(&path).unwrap().record("shop/x", false, "kubernetes", "no").unwrap();
        let report = verify_log(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(report.lines, 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("SENTRY_CERTIFICATE_ISSUED") && text.contains("SENTRY_CERTIFICATE_REFUSED"));
        assert_eq!(text.lines().count(), 3, "a newline in a reason does not split a line");

        std::fs::write(&path, format!("{text}{{\"half\":")).unwrap();
        assert!(matches!(SentryAudit::open(&path), Err(AuditLogError::TornTail { line: 4, .. })));
        std::fs::write(&path, text.replace("shop/billing", "shop/bi11ing")).unwrap();
        assert!(matches!(SentryAudit::open(&path), Err(AuditLogError::Chain { .. })));
    }
}
