//! Secrets `ward run` makes for one run: the per-app API token (`DAPR_API_TOKEN`) and the per-app join token, and
//! the 0600 file a join token travels in. Nothing here prints or logs a secret.
//!
//! It does not decide how sentry checks a join token (`ward-sentry`'s validator does) or how a sidecar checks an
//! API token (`ward-gate`).

use std::io::Write;
use std::path::Path;

use ring::rand::SecureRandom;

use crate::RunError;
use crate::runfile::AppSpec;

/// The env variable an app and its sidecar share: the app sends it, the sidecar demands it.
pub const DAPR_API_TOKEN: &str = "DAPR_API_TOKEN";

/// 32 bytes from the operating system's CSPRNG, as 64 lowercase hex characters.
pub fn random_token() -> Result<String, RunError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| RunError::Randomness)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The API token of an app: the run file's `DAPR_API_TOKEN` if it sets one, else a fresh random one, so no app
/// of a run has an open sidecar by default.
pub fn api_token_for(app: &AppSpec) -> Result<String, RunError> {
    match app.env.get(DAPR_API_TOKEN).filter(|token| !token.trim().is_empty()) {
        Some(token) => Ok(token.clone()),
        None => random_token(),
    }
}

/// Writes a secret to a new file readable by its owner only. The file must not exist yet (`create_new`): an
/// existing file, or a link planted in its place, is an error rather than something to write through.
pub fn write_secret_file(path: &Path, secret: &str) -> Result<(), RunError> {
    let io = |source| RunError::Io { what: path.display().to_string(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(secret.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_run_file_token_wins_else_each_app_gets_its_own() {
        let dir = std::env::temp_dir();
        let mut set = AppSpec::new("a", dir.clone());
        set.env.insert(DAPR_API_TOKEN.to_owned(), "from-the-run-file".to_owned());
        assert_eq!(api_token_for(&set).unwrap(), "from-the-run-file");
        let mut blank = AppSpec::new("b", dir.clone());
        blank.env.insert(DAPR_API_TOKEN.to_owned(), " ".to_owned());
        assert_eq!(api_token_for(&blank).unwrap().len(), 64, "a blank token is no token");
        let unset = AppSpec::new("c", dir);
        assert_ne!(api_token_for(&unset).unwrap(), api_token_for(&unset).unwrap());
    }

    #[test]
    fn secret_files_are_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.token");
        write_secret_file(&path, "s3cret-0123456789").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret-0123456789");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(write_secret_file(&path, "other").is_err(), "an existing file is not written through");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret-0123456789");
    }
}
