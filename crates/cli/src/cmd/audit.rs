//! `ward audit verify FILE`: checks the hash chain of an audit log.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify that no line of an audit log was edited, removed, inserted or reordered.
    Verify { file: PathBuf },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let lines = text.lines().filter(|line| !line.trim().is_empty());
            match ward_policy::verify_chain(lines) {
                Ok(count) => {
                    println!("{}: {count} lines, hash chain intact", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    println!("{}: hash chain BROKEN at line {}: {}", file.display(), err.line, err.kind);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
