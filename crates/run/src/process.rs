//! Child processes of a run: spawning with piped output, prefixing each line, and stopping with SIGTERM then
//! SIGKILL after a grace period. No policy about which process stops when (that is `run`'s).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// A child process whose output is being pumped.
pub(crate) struct Proc {
    pub(crate) child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> Option<String> {
        self.child.id().map(|id| id.to_string())
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit status if it could be collected.
    pub(crate) async fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if let Some(pid) = self.pid() {
            signal(&pid, "TERM");
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.kill().await;
                self.child.wait().await.ok()
            }
        }
    }
}

/// Sends a signal by name to one pid.
pub(crate) fn signal(pid: &str, name: &str) {
    // std has no portable signal API and the workspace forbids unsafe; `kill` is everywhere ward runs.
    let _ = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid).stderr(Stdio::null()).status();
}

/// True while the process exists and is not a zombie (a zombie has exited; only its parent has not reaped it).
pub(crate) fn process_alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces or parentheses.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// Copies `reader` to stdout line by line with `name` in front. A line starting with `ready_prefix` is sent to
/// `ready` instead of printed (ward run prints its own, friendlier line for it).
pub(crate) fn pump(
    name: String,
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ready: Option<(&'static str, tokio::sync::mpsc::Sender<String>)>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((prefix, tx)) = &ready
                && line.starts_with(prefix)
            {
                let _ = tx.send(line.clone()).await;
                continue;
            }
            println!("{name} {line}");
        }
    });
}
