//! The audit sink: every authorization decision becomes one hash-chained JSON line (sealed by
//! `ward_policy::AuditChain`) on stderr or in an append-only file.
//!
//! Where a line is written depends on whether the destination can stall:
//! - a regular file (`--audit-log`, or stderr redirected to one) with `fsync: never`: on the request path itself,
//!   under a lock the writer thread shares ([`AuditWriter::never_blocks`]). Handing each line to a thread cost
//!   the callee two context switches per request (about a sixth of its CPU at saturation, `docs/benchmarks.md`);
//!   a write into the page cache costs a few microseconds. While the thread has a backlog, or the lock is busy,
//!   events queue behind it as below, so nothing overtakes;
//! - a pipe, a terminal or a socket (stderr under a container runtime) may block on its reader, and a sync waits
//!   for the disk: those lines are sealed and written on a dedicated thread, so the request path never blocks on
//!   them.
//!
//! Either way the chain order is the order the lines were sealed.
//!
//! Durability rules (issue 12 row 9):
//! - the queue is bounded ([`DEFAULT_QUEUE_CAPACITY`]); [`AuditSink::record`] fails with [`AuditUnavailable`] when
//!   it is full or when the writer is failing (its last write failed and no later write succeeded), so the request
//!   path fails closed (the sidecar answers 503 `ERR_AUDIT_UNAVAILABLE`) instead of acting without a record;
//! - the chain advances only for lines written completely; what a failed write left behind is removed
//!   ([`AuditWriter::discard_partial`], a file is cut back to its last complete line) before the next attempt;
//! - each line is handed to the OS together with its newline in one `write_all`, so a crash leaves either the whole
//!   line or a torn tail; a torn tail found on open is moved aside (never deleted) and recorded in the chain;
//! - an accepted event is never dropped while the sink is alive: the writer retries it with a bounded back-off
//!   until the destination accepts it again, so after a disk-full episode `ward audit verify` stays green;
//! - handed to the OS, a line survives a SIGKILL of the sidecar but not a power loss: [`AuditFsync`]
//!   (`spec.ward.audit.fsync`) adds `fdatasync` after every batch, before its waiting requests go on (`always`), or
//!   at most once per [`SYNC_INTERVAL`] off the request path (`interval`). A failed sync fails closed like a failed
//!   write: the batch's waiting requests are refused, new events are refused until a sync succeeds again, and the
//!   lines (already in the file) are never written twice.
//!
//! `ward audit verify FILE` checks the chain. This module does not decide anything.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use ward_config::AuditFsync;
use ward_policy::{AuditChain, AuditEvent};

/// Events that may wait for the writer before [`AuditSink::record`] refuses more.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// The longest pause between two attempts to write a line while the destination fails.
const MAX_RETRY_DELAY: Duration = Duration::from_millis(500);

/// With [`AuditFsync::Interval`], the longest time written lines stay unsynced (lines written while the writer is
/// idle are synced when this passes, not at the next event).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stderr,
    /// Stderr as daprd-shaped JSON log objects (`--log-as-json`): each audit event is one log line with
    /// `msg: "audit"`, the log keys (`time`, `level`, `scope`, `type`, `app_id`, `instance`, `ver`) and the audit
    /// fields with their chain hashes. The hash-chained record to verify is `--audit-log FILE`.
    StderrLog {
        app_id: String,
        instance: String,
    },
    File(PathBuf),
}

/// A handle that queues events for the writer thread. Cheap to clone; the writer stops when the last clone is
/// dropped (after writing what is queued).
#[derive(Debug, Clone)]
pub struct AuditSink {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    /// Unbounded channel, bounded by `State::queued`: a preallocated `sync_channel` of 10 000 events would cost
    /// every sidecar ~2.5 MB of resident memory for a queue that is nearly always empty.
    tx: Sender<Queued>,
    state: Arc<State>,
    capacity: usize,
    /// Shared with the writer thread.
    destination: Arc<Mutex<Destination>>,
    /// Lines may be written on the request path: the destination never blocks and nothing waits for a sync.
    inline: bool,
}

/// Where lines go and the chain they continue. Whoever holds the lock seals and writes.
struct Destination {
    writer: Box<dyn AuditWriter>,
    chain: AuditChain,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination").finish_non_exhaustive()
    }
}

/// Shared between the handles and the writer thread.
#[derive(Debug, Default)]
struct State {
    /// The last write failed and no later write has succeeded.
    failing: AtomicBool,
    /// Every handle is gone: a writer stuck retrying gives up.
    closed: AtomicBool,
    /// [`AuditSink::record`] calls refused.
    refused: AtomicU64,
    /// Events accepted for writing.
    accepted: AtomicU64,
    /// Failed write attempts.
    write_failures: AtomicU64,
    /// Events queued and not yet taken by the writer.
    queued: std::sync::atomic::AtomicUsize,
    /// Also given every written event (`spec.ward.audit.otlp`), after it is in the chain.
    mirror: std::sync::OnceLock<Mirror>,
}

/// What [`AuditSink::set_mirror`] installs.
pub type AuditMirror = Arc<dyn Fn(&AuditEvent) + Send + Sync>;

#[derive(Clone)]
struct Mirror(AuditMirror);

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mirror")
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::Release);
    }
}

/// Why [`AuditSink::record`] refused an event; the decision it records must then fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditUnavailable {
    /// The writer is behind by the whole queue capacity.
    #[error("the audit queue is full ({capacity} events waiting)")]
    QueueFull { capacity: usize },
    /// The last write failed and none has succeeded since (disk full, file-size limit, I/O error).
    #[error("the audit log cannot be written")]
    WriteFailing,
    /// The writer thread is gone.
    #[error("the audit writer has stopped")]
    WriterStopped,
}

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
    /// A line longer than any the writer produces: this is not an audit log (or not only one), and it is left as
    /// it is rather than read into memory or moved aside whole.
    #[error("audit log {path}: line {line} is longer than {limit} bytes; not an audit log, refusing to append")]
    LineTooLong { path: PathBuf, line: usize, limit: u64 },
}

/// The longest line `open` accepts, torn or complete. Sealed lines are a few KiB at most (every attacker-supplied
/// field is cut at `MAX_AUDIT_FIELD`), so this only stops a wrong `--audit-log` path from being slurped.
const MAX_LINE: u64 = 1 << 20;

/// A destination for sealed lines. Implemented for the audit file and stderr; tests inject failing ones.
pub trait AuditWriter: Send + 'static {
    /// Writes `lines` (one or more whole lines, each ending in `\n`) completely, or fails. A failure may leave part
    /// of them behind.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()>;

    /// Removes whatever failed [`AuditWriter::append`] calls left behind, so the destination ends with the last
    /// complete line again. Called after every failed append, before the next one.
    fn discard_partial(&mut self) -> std::io::Result<()>;

    /// Puts every appended line on stable storage (`fdatasync` for a file). Nothing to do for a stream.
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// Whether an append returns promptly whatever any reader does (a regular file: the page cache takes the
    /// bytes; a pipe or socket can block until its reader drains it). Only such a destination is written on the
    /// request path.
    fn never_blocks(&self) -> bool {
        false
    }
}

/// Whether `file` is a regular file (appends go to the page cache, never wait for a reader).
fn is_regular_file(file: &File) -> bool {
    file.metadata().is_ok_and(|m| m.is_file())
}

/// Whether this process's stderr is a regular file (redirected to one), checked once.
fn stderr_is_regular_file() -> bool {
    use std::os::fd::AsFd;
    static REGULAR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGULAR.get_or_init(|| {
        std::io::stderr().as_fd().try_clone_to_owned().map(File::from).is_ok_and(|file| is_regular_file(&file))
    })
}

/// The audit file, opened for appending, with the length of its complete lines.
#[derive(Debug)]
struct FileWriter {
    file: File,
    /// The file length after the last complete line.
    committed_len: u64,
}

impl AuditWriter for FileWriter {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        // One write_all of the whole line: O_APPEND puts it at the end even if the file was cut back meanwhile.
        self.file.write_all(line)?;
        self.committed_len += line.len() as u64;
        Ok(())
    }

    fn discard_partial(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.committed_len)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        // Data and the length it needs; the file's other metadata (mtime) need not reach the disk first.
        self.file.sync_data()
    }

    fn never_blocks(&self) -> bool {
        // `--audit-log` may name a FIFO or a device.
        is_regular_file(&self.file)
    }
}

#[derive(Debug)]
struct StderrWriter;

impl AuditWriter for StderrWriter {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut err = std::io::stderr().lock();
        err.write_all(line)?;
        err.flush()
    }

    /// A stream cannot be cut back; the reader sees the fragment followed by the retried line.
    fn discard_partial(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn never_blocks(&self) -> bool {
        stderr_is_regular_file()
    }
}

/// Audit lines as daprd-shaped JSON log objects on stderr (`--log-as-json`, no `--audit-log`).
struct StderrLogWriter {
    app_id: String,
    instance: String,
}

impl StderrLogWriter {
    /// One sealed audit line as a log object: the log keys first, then every audit field.
    fn log_line(&self, sealed: &[u8]) -> Vec<u8> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(sealed) else {
            // Not an object (cannot happen for sealed lines): passed through as written.
            return sealed.to_vec();
        };
        let mut object = serde_json::Map::new();
        object.insert("time".into(), fields.get("time").cloned().unwrap_or_default());
        object.insert("level".into(), "info".into());
        object.insert("msg".into(), "audit".into());
        object.insert("scope".into(), "ward.audit".into());
        object.insert("type".into(), "log".into());
        object.insert("app_id".into(), self.app_id.clone().into());
        object.insert("instance".into(), self.instance.clone().into());
        object.insert("ver".into(), env!("CARGO_PKG_VERSION").into());
        for (key, value) in fields {
            object.entry(key).or_insert(value);
        }
        let mut line = serde_json::to_vec(&serde_json::Value::Object(object)).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

impl AuditWriter for StderrLogWriter {
    fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        // A batch holds one or more sealed lines (group commit); each becomes one log line, written in one go.
        let mut out = Vec::with_capacity(batch.len() + 256);
        for line in batch.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.extend_from_slice(&self.log_line(line));
        }
        let mut err = std::io::stderr().lock();
        err.write_all(&out)?;
        err.flush()
    }

    fn discard_partial(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn never_blocks(&self) -> bool {
        stderr_is_regular_file()
    }
}

/// One queued event, and who waits for it to reach the operating system.
struct Queued {
    event: AuditEvent,
    written: Option<tokio::sync::oneshot::Sender<Result<(), AuditUnavailable>>>,
}

/// Resolves once an event's line has been handed to the operating system (it then survives a SIGKILL of the
/// sidecar), or with the reason it was not. Lines written by the thread go in groups: one write for every event
/// queued meanwhile, so each request waits for its own batch only. A line written on the request path is
/// [`Written`] already.
pub struct Written(WrittenInner);

enum WrittenInner {
    Done(Option<Result<(), AuditUnavailable>>),
    Waiting(tokio::sync::oneshot::Receiver<Result<(), AuditUnavailable>>),
}

impl std::future::Future for Written {
    type Output = Result<(), AuditUnavailable>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            WrittenInner::Done(answer) => {
                std::task::Poll::Ready(answer.take().unwrap_or(Err(AuditUnavailable::WriterStopped)))
            }
            WrittenInner::Waiting(rx) => {
                std::pin::Pin::new(rx).poll(cx).map(|answer| answer.unwrap_or(Err(AuditUnavailable::WriterStopped)))
            }
        }
    }
}

impl AuditSink {
    /// Opens the target with [`DEFAULT_QUEUE_CAPACITY`]; a file is appended to, continuing the chain from its
    /// last complete line (an unterminated last line, left by a crash mid-write, is moved aside to
    /// `<file>.torn-<timestamp>` and recorded in the chain first; see `open_file`).
    pub fn open(target: &AuditTarget) -> Result<Self, AuditError> {
        Self::open_with_capacity(target, DEFAULT_QUEUE_CAPACITY)
    }

    /// [`AuditSink::open`] with a chosen queue capacity (at least 1).
    pub fn open_with_capacity(target: &AuditTarget, capacity: usize) -> Result<Self, AuditError> {
        Self::open_with(target, capacity, AuditFsync::Never)
    }

    /// [`AuditSink::open`] with a chosen queue capacity (at least 1) and sync policy (`spec.ward.audit.fsync`).
    pub fn open_with(target: &AuditTarget, capacity: usize, fsync: AuditFsync) -> Result<Self, AuditError> {
        if fsync != AuditFsync::Never {
            tracing::info!(fsync = fsync.as_str(), "audit lines are synced to stable storage (spec.ward.audit.fsync)");
        }
        match target {
            AuditTarget::Stderr => Self::from_writer_with(StderrWriter, AuditChain::new(), capacity, fsync),
            AuditTarget::StderrLog { app_id, instance } => {
                let writer = StderrLogWriter { app_id: app_id.clone(), instance: instance.clone() };
                Self::from_writer_with(writer, AuditChain::new(), capacity, fsync)
            }
            AuditTarget::File(path) => {
                let (writer, chain) = open_file(path)?;
                Self::from_writer_with(writer, chain, capacity, fsync)
            }
        }
    }

    /// A sink over any [`AuditWriter`], continuing `chain`, never syncing. For tests (a writer that fails on
    /// demand) and for destinations other than a file.
    pub fn from_writer(writer: impl AuditWriter, chain: AuditChain, capacity: usize) -> Result<Self, AuditError> {
        Self::from_writer_with(writer, chain, capacity, AuditFsync::Never)
    }

    /// [`AuditSink::from_writer`] with a sync policy.
    pub fn from_writer_with(
        writer: impl AuditWriter,
        chain: AuditChain,
        capacity: usize,
        fsync: AuditFsync,
    ) -> Result<Self, AuditError> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel::<Queued>();
        let state = Arc::new(State::default());
        let thread_state = state.clone();
        let inline = fsync == AuditFsync::Never && writer.never_blocks();
        let destination = Arc::new(Mutex::new(Destination { writer: Box::new(writer), chain }));
        let thread_destination = destination.clone();
        std::thread::Builder::new()
            .name("ward-audit".into())
            .spawn(move || write_loop(rx, &thread_destination, &thread_state, fsync))
            .map_err(|source| AuditError::Io { path: PathBuf::from("<audit thread>"), source })?;
        Ok(Self { handle: Arc::new(Handle { tx, state, capacity, destination, inline }) })
    }

    /// Queues one event. `Err` means the event will not be recorded: the caller must refuse the request it
    /// describes (fail closed). Never blocks.
    pub fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        match self.write_inline(event)? {
            Inline::Written(_) => Ok(()),
            Inline::Queue(event) => self.enqueue(Queued { event, written: None }),
        }
    }

    /// Queues one event and returns a [`Written`] to await before acting on the decision it records ("audit,
    /// then forward"). `Err` as for [`AuditSink::record`].
    pub fn record_written(&self, event: AuditEvent) -> Result<Written, AuditUnavailable> {
        match self.write_inline(event)? {
            Inline::Written(result) => Ok(Written(WrittenInner::Done(Some(result)))),
            Inline::Queue(event) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.enqueue(Queued { event, written: Some(tx) })?;
                Ok(Written(WrittenInner::Waiting(rx)))
            }
        }
    }

    /// Refuses the event while the writer is failing; else writes it here when the destination allows (see the
    /// module comment) and nothing is queued before it, or gives it back to be queued.
    fn write_inline(&self, event: AuditEvent) -> Result<Inline, AuditUnavailable> {
        let (handle, state) = (&self.handle, &self.handle.state);
        if state.failing.load(Ordering::Acquire) {
            state.refused.fetch_add(1, Ordering::Relaxed);
            return Err(AuditUnavailable::WriteFailing);
        }
        if !handle.inline || state.queued.load(Ordering::Acquire) > 0 {
            return Ok(Inline::Queue(event));
        }
        // Busy (the thread is writing a batch): behind it, through the queue.
        let Ok(mut destination) = handle.destination.try_lock() else { return Ok(Inline::Queue(event)) };
        // Sealed on a copy of the chain: it advances only once the line is written.
        let mut next = destination.chain.clone();
        let mut line = next.seal_and_commit(&event).into_bytes();
        line.push(b'\n');
        state.accepted.fetch_add(1, Ordering::Relaxed);
        match destination.writer.append(&line) {
            Ok(()) => {
                destination.chain = next;
                drop(destination);
                if let Some(Mirror(mirror)) = state.mirror.get() {
                    mirror(&event);
                }
                Ok(Inline::Written(Ok(())))
            }
            Err(err) => {
                // As the thread does: new events are refused, the partial line goes, and the event is retried
                // (by the thread, which backs off and clears the failure once a write works); whoever waits for
                // this one is refused now (fail closed).
                note_failure(state, "writing an audit line", &err);
                if let Err(err) = destination.writer.discard_partial() {
                    tracing::error!(error = %err, "cutting a partial audit line failed; will retry");
                }
                drop(destination);
                state.queued.fetch_add(1, Ordering::AcqRel);
                if handle.tx.send(Queued { event, written: None }).is_err() {
                    state.queued.fetch_sub(1, Ordering::AcqRel);
                }
                Ok(Inline::Written(Err(AuditUnavailable::WriteFailing)))
            }
        }
    }

    fn enqueue(&self, queued: Queued) -> Result<(), AuditUnavailable> {
        let state = &self.handle.state;
        let refused = |why: AuditUnavailable| {
            state.refused.fetch_add(1, Ordering::Relaxed);
            Err(why)
        };
        if state.queued.fetch_add(1, Ordering::AcqRel) >= self.handle.capacity {
            state.queued.fetch_sub(1, Ordering::AcqRel);
            return refused(AuditUnavailable::QueueFull { capacity: self.handle.capacity });
        }
        match self.handle.tx.send(queued) {
            Ok(()) => {
                state.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                state.queued.fetch_sub(1, Ordering::AcqRel);
                refused(AuditUnavailable::WriterStopped)
            }
        }
    }

    /// Gives every event, once written to the log, also to `mirror` (on the writer thread; it must not block).
    /// The log stays the record: a mirror sees only what the chain holds. Set once; later calls are ignored.
    pub fn set_mirror(&self, mirror: AuditMirror) {
        let _ = self.handle.state.mirror.set(Mirror(mirror));
    }

    /// How many [`AuditSink::record`] calls were refused so far (for a metric).
    pub fn refused_count(&self) -> u64 {
        self.handle.state.refused.load(Ordering::Relaxed)
    }

    /// How many events were accepted for writing so far (for a metric).
    pub fn accepted_count(&self) -> u64 {
        self.handle.state.accepted.load(Ordering::Relaxed)
    }

    /// How many write attempts failed so far (for a metric).
    pub fn write_failure_count(&self) -> u64 {
        self.handle.state.write_failures.load(Ordering::Relaxed)
    }

    /// Whether the writer is failing now (its last write failed).
    pub fn is_failing(&self) -> bool {
        self.handle.state.failing.load(Ordering::Acquire)
    }
}

/// What [`AuditSink::write_inline`] did with an event.
// Returned once per event and moved straight on: boxing the event would cost an allocation per queued call.
#[allow(clippy::large_enum_variant)]
enum Inline {
    /// Written here (or, `Err`, the write failed and the event went to the thread to be retried).
    Written(Result<(), AuditUnavailable>),
    /// To be queued for the thread.
    Queue(AuditEvent),
}

/// Opens `path` for appending and resumes the chain from its last complete line. A tail without a newline (a crash
/// in the middle of a write) is never appended to nor deleted: it is copied to `<file>.torn-<timestamp>` (synced),
/// cut off, and an [`AUDIT_TORN_TAIL`](ward_policy::audit::AUDIT_TORN_TAIL) event naming that file, its size and
/// SHA-256 is written as the next line of the chain before the sink starts. A last complete line that is not a
/// sealed line is refused ([`AuditError::BrokenTail`], naming its line number) and nothing is changed.
fn open_file(path: &Path) -> Result<(FileWriter, AuditChain), AuditError> {
    let io = |source| AuditError::Io { path: path.to_owned(), source };
    let file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path).map_err(io)?;
    let mut reader = std::io::BufReader::new(&file);
    let mut complete_len = 0u64;
    // Lines of the file so far, blank ones included, so errors name the number an editor shows.
    let mut line_count = 0usize;
    // The last non-blank complete line and its number.
    let mut last: Option<(String, usize)> = None;
    let mut torn: Option<Vec<u8>> = None;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader).take(MAX_LINE + 1).read_until(b'\n', &mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        if n as u64 > MAX_LINE {
            return Err(AuditError::LineTooLong { path: path.to_owned(), line: line_count + 1, limit: MAX_LINE });
        }
        if buf.last() != Some(&b'\n') {
            torn = Some(std::mem::take(&mut buf));
            break;
        }
        complete_len += n as u64;
        line_count += 1;
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if !line.trim().is_empty() {
            last = Some((line.to_owned(), line_count));
        }
    }
    drop(reader);
    let mut chain = match &last {
        None => AuditChain::new(),
        Some((line, number)) => AuditChain::resume_at(line, *number)
            .map_err(|source| AuditError::BrokenTail { path: path.to_owned(), source })?,
    };
    let mut writer = FileWriter { file, committed_len: complete_len };
    if let Some(torn) = torn {
        let moved = move_aside(path, &torn).map_err(io)?;
        writer.file.set_len(complete_len).map_err(io)?;
        writer.file.sync_data().map_err(io)?;
        let moved_name = moved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        tracing::warn!(
            path = %path.display(),
            moved_to = %moved.display(),
            bytes = torn.len(),
            after_line = line_count,
            "the audit log ended in a torn line (a write cut short by a crash); moved it aside and recorded that in the chain"
        );
        // The app this log belongs to, as its last event says (the sink is not told its app id).
        let callee = last
            .as_ref()
            .and_then(|(line, _)| ward_policy::audit::parse_line(line).ok())
            .map(|event| event.callee)
            .unwrap_or_default();
        let event = AuditEvent::for_torn_tail(
            crate::runtime::now_rfc3339(),
            &callee,
            &moved_name,
            torn.len() as u64,
            &ward_policy::audit::digest_hex(&torn),
            line_count,
        );
        let sealed = chain.seal(&event);
        let mut line = Vec::with_capacity(sealed.line().len() + 1);
        line.extend_from_slice(sealed.line().as_bytes());
        line.push(b'\n');
        if let Err(err) = writer.append(&line) {
            // Best effort: leave the file ending with its last complete line; the caller fails to start anyway.
            let _ = writer.discard_partial();
            return Err(io(err));
        }
        chain.commit(&sealed).map_err(|err| io(std::io::Error::other(err)))?;
    }
    Ok((writer, chain))
}

/// Copies `torn` to a new file `<path>.torn-<UTC timestamp>` next to `path` and syncs it (and, best effort, the
/// directory) before anything is cut off, so the bytes survive a crash at any point. Never overwrites a file.
fn move_aside(path: &Path, torn: &[u8]) -> std::io::Result<PathBuf> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    );
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".torn-{stamp}"));
    let base = PathBuf::from(name);
    for attempt in 0..100u32 {
        let candidate = if attempt == 0 {
            base.clone()
        } else {
            let mut name = base.as_os_str().to_owned();
            name.push(format!("-{attempt}"));
            PathBuf::from(name)
        };
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&candidate) {
            Ok(mut file) => {
                file.write_all(torn)?;
                file.sync_all()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                    && let Ok(dir) = File::open(dir)
                {
                    // A directory fsync makes the new name durable; not every file system allows it.
                    let _ = dir.sync_all();
                }
                return Ok(candidate);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free name for the torn audit tail"))
}

/// Most events written in one append.
const MAX_BATCH: usize = 512;

/// Records a failed write or sync: counted, logged once per failing episode, and every later event refused until
/// one succeeds (the caller then clears the flag).
fn note_failure(state: &State, what: &str, err: &std::io::Error) {
    state.write_failures.fetch_add(1, Ordering::Relaxed);
    if !state.failing.swap(true, Ordering::AcqRel) {
        tracing::error!(error = %err, "{what} failed; refusing new events until it works");
    }
}

/// Syncs until it succeeds (with the write path's back-off), failing closed meanwhile. `false` if the sink was
/// closed while syncs kept failing (the writer then stops).
fn sync_until_done(writer: &mut (impl AuditWriter + ?Sized), state: &State) -> bool {
    let mut delay = Duration::from_millis(5);
    loop {
        match writer.sync() {
            Ok(()) => return true,
            Err(err) => {
                note_failure(state, "syncing the audit log to disk", &err);
                if state.closed.load(Ordering::Acquire) {
                    tracing::error!(
                        "audit sink closed while syncing the log was failing; its last lines may not be on disk"
                    );
                    return false;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

fn write_loop(rx: Receiver<Queued>, destination: &Mutex<Destination>, state: &State, fsync: AuditFsync) {
    let lock = || destination.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // `interval`: when the oldest line not yet synced was written, if any.
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let next = match unsynced_since {
            // Wake in time to sync lines written before the writer fell idle.
            Some(since) => match rx.recv_timeout((since + SYNC_INTERVAL).saturating_duration_since(Instant::now())) {
                Ok(queued) => Some(queued),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = sync_until_done(&mut *lock().writer, state);
                    return;
                }
            },
            None => match rx.recv() {
                Ok(queued) => Some(queued),
                Err(_) => return,
            },
        };
        if unsynced_since.is_some_and(|since| since.elapsed() >= SYNC_INTERVAL) {
            if !sync_until_done(&mut *lock().writer, state) {
                return;
            }
            unsynced_since = None;
            if state.failing.swap(false, Ordering::AcqRel) {
                tracing::warn!("audit log synced again; accepting events");
            }
        }
        let Some(first) = next else { continue };
        // Group commit: everything queued meanwhile goes out in the same write.
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(MAX_BATCH - 1));
        // Taken off the queue: room for as many more (the events are still written, or retried, below).
        state.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        // Held for the batch, retries included: the request path then queues behind it instead of writing.
        let mut guard = lock();
        let Destination { writer, chain } = &mut *guard;
        // Sealed on a copy of the chain: it advances only once the whole batch is written.
        let mut next = chain.clone();
        let mut bytes = Vec::new();
        for queued in &batch {
            bytes.extend_from_slice(next.seal_and_commit(&queued.event).as_bytes());
            bytes.push(b'\n');
        }
        let mut waiters: Vec<_> = batch.iter_mut().filter_map(|q| q.written.take()).collect();
        let mut delay = Duration::from_millis(5);
        loop {
            match writer.append(&bytes) {
                Ok(()) => {
                    // The lines are in the file: the chain continues from them whatever a sync does next.
                    *chain = next;
                    match fsync {
                        AuditFsync::Never => {}
                        AuditFsync::Interval => {
                            unsynced_since.get_or_insert_with(Instant::now);
                        }
                        AuditFsync::Always => {
                            if let Err(err) = writer.sync() {
                                note_failure(state, "syncing the audit log to disk", &err);
                                // Not known to be durable: whoever waits is refused (fail closed). The lines stay
                                // (the decisions were made) and are synced, never written twice.
                                for waiter in waiters.drain(..) {
                                    let _ = waiter.send(Err(AuditUnavailable::WriteFailing));
                                }
                                if !sync_until_done(&mut **writer, state) {
                                    return;
                                }
                            }
                        }
                    }
                    // `spec.ward.audit.otlp`: the events the file now holds, also to the OTLP exporter.
                    if let Some(Mirror(mirror)) = state.mirror.get() {
                        for queued in &batch {
                            mirror(&queued.event);
                        }
                    }
                    if state.failing.swap(false, Ordering::AcqRel) {
                        tracing::warn!("audit log writable again; accepting events");
                    }
                    for waiter in waiters.drain(..) {
                        let _ = waiter.send(Ok(()));
                    }
                    break;
                }
                Err(err) => {
                    note_failure(state, "writing an audit line", &err);
                    // Whoever waits for these lines is refused now (fail closed); the lines are still retried, so
                    // the log keeps the decisions that were made.
                    for waiter in waiters.drain(..) {
                        let _ = waiter.send(Err(AuditUnavailable::WriteFailing));
                    }
                    if let Err(err) = writer.discard_partial() {
                        tracing::error!(error = %err, "cutting a partial audit line failed; will retry");
                    }
                    if state.closed.load(Ordering::Acquire) {
                        let lost = 1 + rx.try_iter().count();
                        tracing::error!(lost, "audit sink closed while the log was failing; events not written");
                        return;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }
}

/// A writer for tests that keeps lines in memory and fails on demand, leaving half a line behind like a full
/// disk does. `pub` so the sidecar's layer tests can use it too.
#[derive(Debug, Clone, Default)]
pub struct MemoryWriter {
    inner: Arc<Mutex<MemoryInner>>,
    /// What [`AuditWriter::never_blocks`] says: `false` (lines written by the thread) unless made with
    /// [`MemoryWriter::never_blocking`].
    never_blocks: bool,
}

#[derive(Debug, Default)]
struct MemoryInner {
    bytes: Vec<u8>,
    committed: usize,
    fail: bool,
    fail_sync: bool,
    /// Bytes covered by the last successful sync.
    synced: usize,
    syncs: usize,
}

impl MemoryWriter {
    /// A writer that claims never to block, as a regular file does: lines are written on the request path.
    pub fn never_blocking() -> Self {
        Self { never_blocks: true, ..Self::default() }
    }

    /// Makes later appends fail (`true`) or succeed (`false`).
    pub fn set_failing(&self, fail: bool) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.fail = fail;
        }
    }

    /// Makes later syncs fail (`true`) or succeed (`false`).
    pub fn set_sync_failing(&self, fail: bool) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.fail_sync = fail;
        }
    }

    /// Successful syncs so far, and how many bytes the last one covered.
    pub fn synced(&self) -> (usize, usize) {
        self.inner.lock().map(|i| (i.syncs, i.synced)).unwrap_or_default()
    }

    /// Everything written so far, including any partial line not yet discarded.
    pub fn contents(&self) -> String {
        self.inner.lock().map(|i| String::from_utf8_lossy(&i.bytes).into_owned()).unwrap_or_default()
    }
}

impl AuditWriter for MemoryWriter {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut inner = self.inner.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        if inner.fail {
            let half = line.get(..line.len() / 2).unwrap_or_default();
            inner.bytes.extend_from_slice(half);
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        inner.bytes.extend_from_slice(line);
        inner.committed = inner.bytes.len();
        Ok(())
    }

    fn discard_partial(&mut self) -> std::io::Result<()> {
        let mut inner = self.inner.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        let committed = inner.committed;
        inner.bytes.truncate(committed);
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let mut inner = self.inner.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        if inner.fail_sync {
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        inner.syncs += 1;
        inner.synced = inner.bytes.len();
        Ok(())
    }

    fn never_blocks(&self) -> bool {
        self.never_blocks
    }
}

#[cfg(test)]
mod tests;
