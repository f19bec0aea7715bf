//! `ward audit verify FILE`: checks the hash chain of an audit log, names the file's real line number when it is
//! broken, and reports a torn last line (a write cut short by a crash) separately from a broken chain.
//!
//! Exit codes: 0 intact; 1 the chain is broken (tampering or corruption); 3 the chain is intact but the file ends
//! in a torn line (the sidecar moves it aside to `<file>.torn-<timestamp>` on its next start).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

/// Exit code of `verify` for an intact chain followed by a torn last line.
const TORN_TAIL_EXIT: u8 = 3;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify that no line of an audit log was edited, removed, inserted or reordered. Exit 0: intact; 1: broken;
    /// 3: intact, but the last line is torn (cut short by a crash).
    Verify { file: PathBuf },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify { file } => verify(&file),
    }
}

fn verify(file: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let report = match ward_policy::audit::verify_log(&bytes) {
        Ok(report) => report,
        Err(err) => {
            println!("{}: hash chain BROKEN at line {}: {}", file.display(), err.line, err.kind);
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{}: {} lines, hash chain intact", file.display(), report.lines);
    for moved in &report.moved_tails {
        // The event names a file next to the log; say whether that evidence is still there.
        let kept = file.parent().map(|dir| dir.join(&moved.operation)).is_some_and(|path| path.is_file());
        println!(
            "{}: torn tail recorded at {}: {} ({})",
            file.display(),
            moved.time,
            moved.reason,
            if kept { "file present" } else { "file MISSING" }
        );
    }
    match report.torn_tail {
        None => Ok(ExitCode::SUCCESS),
        Some(torn) => {
            println!(
                "{}: torn tail: line {} ({} bytes) has no newline (a write cut short by a crash); it is not part of \
                 the chain and the sidecar moves it aside on its next start",
                file.display(),
                torn.line,
                torn.bytes
            );
            Ok(ExitCode::from(TORN_TAIL_EXIT))
        }
    }
}
