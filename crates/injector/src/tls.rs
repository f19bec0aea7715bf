//! The webhook's serving certificate, read from `--tls-cert-file` / `--tls-key-file` and swapped in for the next
//! handshake whenever the files change (a renewed certificate needs no restart).
//!
//! Owns: loading the pair, the rustls resolver, the poll loop. Polling rather than inotify, for the reason the
//! token files are polled (`ward-gate`'s watch): Kubernetes secret volumes change by symlink swaps that file
//! events report unreliably. A pair that does not load (half-written, mismatched) keeps the last good one.
//! The other source, an SVID from sentry, is `ward-sentry`'s client (see [`crate::server::ServingCert`]).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Certificate and key files are small; anything larger is not one.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: no PEM certificate: {source}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{key_path} does not go with {cert_path}, or is of an unsupported type: {source}")]
    Pair {
        cert_path: PathBuf,
        key_path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(TlsError::TooLarge { path: path.to_owned() });
    }
    Ok(bytes)
}

/// Builds the certified key from the two files' contents.
fn certified_key(cert_path: &Path, cert: &[u8], key_path: &Path, key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Certificate { path: cert_path.to_owned(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path.to_owned() });
    }
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|source| TlsError::Key { path: key_path.to_owned(), source })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|source| TlsError::Pair {
        cert_path: cert_path.to_owned(),
        key_path: key_path.to_owned(),
        source,
    })
}

fn fingerprint(cert: &[u8], key: &[u8]) -> u64 {
    // Change detection only, not a security boundary.
    let mut hasher = DefaultHasher::new();
    cert.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

/// The current serving certificate, for rustls.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertResolver {
    /// Loads the pair now (an error is a start-up error) and, on the current tokio runtime, polls the files
    /// every `poll` until the resolver is dropped.
    pub fn load_and_watch(cert_path: PathBuf, key_path: PathBuf, poll: Duration) -> Result<Arc<Self>, TlsError> {
        let cert = read(&cert_path)?;
        let key = read(&key_path)?;
        let resolver = Arc::new(CertResolver {
            current: ArcSwap::from_pointee(certified_key(&cert_path, &cert, &key_path, &key)?),
        });
        let last = fingerprint(&cert, &key);
        tokio::spawn(watch(Arc::downgrade(&resolver), cert_path, key_path, poll, last));
        Ok(resolver)
    }

    /// The leaf certificate served now.
    pub fn current_leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }
}

async fn watch(target: Weak<CertResolver>, cert_path: PathBuf, key_path: PathBuf, poll: Duration, mut last: u64) {
    let mut failing = false;
    loop {
        tokio::time::sleep(poll).await;
        let Some(resolver) = target.upgrade() else { return };
        let loaded = (|| {
            let cert = read(&cert_path)?;
            let key = read(&key_path)?;
            let print = fingerprint(&cert, &key);
            if print == last {
                return Ok(None);
            }
            certified_key(&cert_path, &cert, &key_path, &key).map(|k| Some((k, print)))
        })();
        match loaded {
            Ok(None) => failing = false,
            Ok(Some((key, print))) => {
                resolver.current.store(Arc::new(key));
                last = print;
                failing = false;
                tracing::info!(cert = %cert_path.display(), "serving certificate changed; reloaded");
            }
            Err(err) => {
                if !failing {
                    tracing::error!(error = %err, "serving certificate files do not load; keeping the last good pair");
                }
                failing = true;
            }
        }
    }
}

/// rustls settings for the webhook: the resolver's certificate (from files, or sentry's SVID resolver), no client
/// certificates (the API server
/// authenticates the webhook, not the reverse), HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
