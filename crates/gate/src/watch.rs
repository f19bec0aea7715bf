//! Keeps a value loaded from a small local file current: read once at start (an error there is a start-up
//! error), then poll the file and swap in a freshly parsed value whenever its content changes.
//!
//! Polling (rather than inotify) works the same for editors that rewrite in place, for atomic renames and for
//! Kubernetes secret volumes, whose symlink swaps filesystem events report unreliably. A bad reload (unreadable,
//! empty, unparsable) keeps the last good value: a token file mid-rewrite must never open the gate.
//!
//! This module does not know what the file holds; the caller's parser does.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncReadExt;

use crate::GateError;

/// How often a watched file is read. Half a second keeps a change inside the promised 2 s at negligible cost
/// (the files are a few hundred bytes).
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The parser a watched file goes through: returns the value and how many entries it holds (for the log line).
pub(crate) trait Parse<T>: Fn(&Path, &[u8]) -> Result<(T, usize), GateError> + Send + 'static {}
impl<T, F: Fn(&Path, &[u8]) -> Result<(T, usize), GateError> + Send + 'static> Parse<T> for F {}

/// Reads and parses `path` now (errors are returned: fail closed at start), then spawns a task on the current
/// tokio runtime that reloads it on change. The task ends once every handle to the returned value is dropped.
pub(crate) fn load_and_watch<T, P>(
    path: PathBuf,
    what: &'static str,
    limit: u64,
    parse: P,
) -> Result<Arc<ArcSwap<T>>, GateError>
where
    T: Send + Sync + 'static,
    P: Parse<T>,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| GateError::NoRuntime { path: path.clone() })?;
    let bytes = read_limited(&path, what, limit)?;
    let (value, _count) = parse(&path, &bytes)?;
    let current = Arc::new(ArcSwap::from_pointee(value));
    let last_hash = content_hash(&bytes);
    runtime.spawn(poll(path, what, limit, parse, Arc::downgrade(&current), last_hash));
    Ok(current)
}

async fn poll<T, P>(
    path: PathBuf,
    what: &'static str,
    limit: u64,
    parse: P,
    target: Weak<ArcSwap<T>>,
    mut last_hash: u64,
) where
    T: Send + Sync + 'static,
    P: Parse<T>,
{
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Log a failure once when it starts, not twice a second while it lasts.
    let mut failing = false;
    loop {
        ticker.tick().await;
        if target.strong_count() == 0 {
            tracing::debug!(path = %path.display(), "{what} file watcher stopped: no more users");
            return;
        }
        let bytes = match read_limited_async(&path, what, limit).await {
            Ok(bytes) => bytes,
            Err(err) => {
                if !failing {
                    tracing::error!(path = %path.display(), error = %error_chain(&err),
                        "{what} file unreadable; keeping the last good value");
                    failing = true;
                }
                continue;
            }
        };
        let hash = content_hash(&bytes);
        if hash == last_hash {
            if failing {
                tracing::info!(path = %path.display(), "{what} file readable again and unchanged");
                failing = false;
            }
            continue;
        }
        last_hash = hash;
        match parse(&path, &bytes) {
            Ok((value, count)) => {
                let Some(target) = target.upgrade() else { return };
                target.store(Arc::new(value));
                failing = false;
                tracing::info!(path = %path.display(), count, "{what} file changed; reloaded");
            }
            Err(err) => {
                tracing::error!(path = %path.display(), error = %error_chain(&err),
                    "{what} file changed but is not usable; keeping the last good value");
                failing = true;
            }
        }
    }
}

/// Change detection only (not a security boundary), so the std SipHash is enough.
pub(crate) fn content_hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Start-up read: synchronous, once, bounded in size.
pub(crate) fn read_limited(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>, GateError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| file_read(what, path, source))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(|source| file_read(what, path, source))?;
    check_limit(what, path, limit, bytes)
}

async fn read_limited_async(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>, GateError> {
    let file = tokio::fs::File::open(path).await.map_err(|source| file_read(what, path, source))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).await.map_err(|source| file_read(what, path, source))?;
    check_limit(what, path, limit, bytes)
}

fn check_limit(what: &'static str, path: &Path, limit: u64, bytes: Vec<u8>) -> Result<Vec<u8>, GateError> {
    if bytes.len() as u64 > limit {
        return Err(GateError::FileTooLarge { what, path: path.to_path_buf(), limit });
    }
    Ok(bytes)
}

fn file_read(what: &'static str, path: &Path, source: std::io::Error) -> GateError {
    GateError::FileRead { what, path: path.to_path_buf(), source }
}

/// `error: cause: cause` for one log field; none of our errors carries a secret, so the chain is safe to print.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
