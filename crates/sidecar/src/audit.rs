//! The audit sink: every authorization decision becomes one hash-chained JSON line (sealed by
//! `ward_policy::AuditChain`) on stderr or in an append-only file. Lines are sealed and written on a dedicated
//! thread, so the request path never blocks on disk and the chain order is the order decisions were made.
//!
//! `ward audit verify FILE` checks the chain. This module does not decide anything.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use ward_policy::{AuditChain, AuditEvent};

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stderr,
    File(PathBuf),
}

/// A handle that queues events for the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
}

/// The audit sink cannot take an event now; the decision it would have recorded must fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit log is unavailable")]
pub struct AuditUnavailable;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path}: the last line does not continue a hash chain ({source}); refusing to append")]
    BrokenTail {
        path: PathBuf,
        #[source]
        source: ward_policy::ChainError,
    },
}

impl AuditSink {
    /// Opens the target; a file is appended to, continuing the chain from its last line.
    pub fn open(target: &AuditTarget) -> Result<Self, AuditError> {
        let (writer, chain): (Box<dyn Write + Send>, AuditChain) = match target {
            AuditTarget::Stderr => (Box::new(std::io::stderr()), AuditChain::new()),
            AuditTarget::File(path) => {
                let chain = resume_chain(path)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError::Io { path: path.clone(), source })?;
                (Box::new(file), chain)
            }
        };
        let (tx, rx) = mpsc::channel::<AuditEvent>();
        std::thread::Builder::new()
            .name("ward-audit".into())
            .spawn(move || write_loop(rx, writer, chain))
            .map_err(|source| AuditError::Io { path: PathBuf::from("<audit thread>"), source })?;
        Ok(Self { tx })
    }

    /// Queues one event. An error means the event will not be written: the caller must refuse (fail closed).
    pub fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        self.tx.send(event).map_err(|_| {
            tracing::error!("audit writer has stopped; refusing the request");
            AuditUnavailable
        })
    }
}

fn resume_chain(path: &Path) -> Result<AuditChain, AuditError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(AuditChain::new()),
        Err(source) => return Err(AuditError::Io { path: path.to_owned(), source }),
    };
    let mut last = None;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|source| AuditError::Io { path: path.to_owned(), source })?;
        if !line.trim().is_empty() {
            last = Some(line);
        }
    }
    match last {
        None => Ok(AuditChain::new()),
        Some(line) => {
            AuditChain::resume(&line).map_err(|source| AuditError::BrokenTail { path: path.to_owned(), source })
        }
    }
}

fn write_loop(rx: mpsc::Receiver<AuditEvent>, mut writer: Box<dyn Write + Send>, mut chain: AuditChain) {
    for event in rx {
        let line = chain.seal(&event);
        if writeln!(writer, "{line}").and_then(|()| writer.flush()).is_err() {
            // Keep going: the next write may succeed, and the chain stays consistent for what was written.
            tracing::error!("writing an audit line failed");
        }
    }
}
