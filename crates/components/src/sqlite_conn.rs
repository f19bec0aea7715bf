//! Opening a SQLite database the way Dapr's SQLite components do (components-contrib
//! `common/authentication/sqlite`), shared by `state.sqlite` and the name-resolution registry.
//!
//! Owns: interpreting `connectionString` (a plain path, a `file:` URI, or `:memory:`), the Go driver's `_pragma` /
//! `_txlock` query parameters, and the pragmas ward always sets (busy timeout, WAL unless disabled,
//! `synchronous=FULL` so an acknowledged write survives a crash).
//!
//! Does not: create tables or run queries, and never runs on an async thread (callers use `spawn_blocking`).

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How to open the database.
#[derive(Debug, Clone)]
pub(crate) struct ConnOptions {
    pub connection_string: String,
    pub busy_timeout: Duration,
    pub disable_wal: bool,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// A `_pragma` in the connection string that ward sets itself (Dapr refuses the same ones).
    #[error("the connection string must not set _pragma={0}; use the busyTimeout / disableWAL metadata instead")]
    ForbiddenPragma(&'static str),
    /// A `_pragma` that is not of the form `name(value)` with plain characters.
    #[error("the connection string has a malformed _pragma parameter")]
    MalformedPragma,
    /// SQLite refused.
    #[error("cannot open the SQLite database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// True for Dapr's in-memory spellings.
pub(crate) fn is_memory(connection_string: &str) -> bool {
    let lc = connection_string.trim().to_ascii_lowercase();
    lc.starts_with(":memory:") || lc.starts_with("file::memory:")
}

struct Parsed {
    /// What to hand to `sqlite3_open_v2` (with `SQLITE_OPEN_URI`).
    target: String,
    pragmas: Vec<(String, String)>,
    read_only: bool,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'%') => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            Some(b'+') => out.push(b' '),
            Some(&b) => out.push(b),
            None => break,
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_pragma(raw: &str) -> Result<(String, String), OpenError> {
    let lc = raw.trim().to_ascii_lowercase();
    for forbidden in ["busy_timeout", "journal_mode", "foreign_keys"] {
        if lc.starts_with(forbidden) {
            return Err(OpenError::ForbiddenPragma(forbidden));
        }
    }
    // `name(value)` as the Go driver accepts it; only plain characters so the PRAGMA text is never an injection.
    let (name, rest) = lc.split_once('(').ok_or(OpenError::MalformedPragma)?;
    let value = rest.strip_suffix(')').ok_or(OpenError::MalformedPragma)?;
    let plain = |s: &str, extra: &[char]| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
    };
    if !plain(name, &[]) || !plain(value, &['-']) {
        return Err(OpenError::MalformedPragma);
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn parse(connection_string: &str) -> Result<Parsed, OpenError> {
    let cs = connection_string.trim();
    let Some(idx) = cs.find('?').filter(|i| *i > 0) else {
        return Ok(Parsed { target: cs.to_owned(), pragmas: Vec::new(), read_only: false });
    };
    let (base, query) = (&cs[..idx], &cs[idx + 1..]);
    let mut kept = Vec::new();
    let mut pragmas = Vec::new();
    let mut read_only = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(v);
        match k {
            "_pragma" => pragmas.push(parse_pragma(&value)?),
            // Transactions that write are always BEGIN IMMEDIATE here, which is what Dapr recommends.
            "_txlock" => {
                if !value.eq_ignore_ascii_case("immediate") {
                    tracing::warn!("ignoring _txlock in the SQLite connection string: ward always uses immediate");
                }
            }
            _ => {
                if (k == "mode" && value == "ro") || (k == "immutable" && value == "1") {
                    read_only = true;
                }
                kept.push(pair);
            }
        }
    }
    // Like Dapr, a connection string with parameters is a URI, with or without the `file:` prefix.
    let mut target =
        if base.to_ascii_lowercase().starts_with("file:") { base.to_owned() } else { format!("file:{base}") };
    if !kept.is_empty() {
        target.push('?');
        target.push_str(&kept.join("&"));
    }
    Ok(Parsed { target, pragmas, read_only })
}

/// Opens the database and applies ward's pragmas. Blocking: call from `spawn_blocking`.
///
/// Processes that start together may open one fresh file at the same moment. Turning it to WAL needs its write
/// lock, and SQLite answers "database is locked" at once, without waiting in the busy handler, to a connection
/// that would otherwise deadlock with another one doing the same; so a busy open is retried on a fresh connection
/// for as long as `busyTimeout` allows.
pub(crate) fn open(opts: &ConnOptions) -> Result<Connection, OpenError> {
    let deadline = std::time::Instant::now() + opts.busy_timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        match open_once(opts) {
            Err(OpenError::Sqlite(err)) if is_busy(&err) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            opened => return opened,
        }
    }
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED`: another connection holds a lock this one needs.
pub(crate) fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn open_once(opts: &ConnOptions) -> Result<Connection, OpenError> {
    let memory = is_memory(&opts.connection_string);
    let parsed = parse(&opts.connection_string)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&parsed.target, flags)?;
    conn.busy_timeout(opts.busy_timeout)?;
    let journal = if memory {
        "MEMORY"
    } else if opts.disable_wal || parsed.read_only {
        "DELETE"
    } else {
        "WAL"
    };
    // journal_mode answers with the mode in force; a database that cannot do WAL answers something else.
    let mode: String = conn.query_row(&format!("PRAGMA journal_mode = {journal}"), [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case(journal) {
        tracing::warn!(wanted = journal, got = %mode, "SQLite journal mode not applied");
    }
    // FULL: in WAL mode the WAL is synced at every commit, so an acknowledged write survives a kill or power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    for (name, value) in &parsed.pragmas {
        // Names and values are restricted to [A-Za-z0-9_-] by parse_pragma.
        conn.execute_batch(&format!("PRAGMA {name} = {value}"))?;
    }
    Ok(conn)
}

/// Dapr's `ValidIdentifier`: table names are spliced into SQL, so only `[A-Za-z0-9_]+`.
pub(crate) fn valid_identifier(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let p = parse("/tmp/x.db").unwrap();
        assert_eq!(p.target, "/tmp/x.db");
        let p = parse("file:/tmp/x.db?mode=rwc&_txlock=immediate&_pragma=cache_size(2000)").unwrap();
        assert_eq!(p.target, "file:/tmp/x.db?mode=rwc");
        assert_eq!(p.pragmas, vec![("cache_size".into(), "2000".into())]);
        let p = parse("data.db?mode=ro").unwrap();
        assert_eq!(p.target, "file:data.db?mode=ro");
        assert!(p.read_only);
        assert!(matches!(parse("x.db?_pragma=busy_timeout(10)"), Err(OpenError::ForbiddenPragma("busy_timeout"))));
        assert!(matches!(
            parse("x.db?_pragma=journal_mode%28DELETE%29"),
            Err(OpenError::ForbiddenPragma("journal_mode"))
        ));
        assert!(matches!(parse("x.db?_pragma=a(1);drop"), Err(OpenError::MalformedPragma)));
        assert!(is_memory(":memory:"));
        assert!(is_memory("file::memory:?cache=shared"));
        assert!(!is_memory("/tmp/memory.db"));
    }

    #[test]
    fn identifiers() {
        assert!(valid_identifier("state_1"));
        assert!(!valid_identifier("state; drop table x"));
        assert!(!valid_identifier(""));
    }

    #[test]
    fn percent_decoding_never_panics() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%28x%29"), "(x)");
    }
}
