//! Trust bundles: the set of root certificates a trust domain trusts. A bundle holds several roots at once so a
//! root can be rotated without downtime (old and new are both trusted while workloads move over), and a
//! `TrustBundleHandle` lets a running process swap the bundle in place (a renewal may bring new roots).
//!
//! This module does not verify chains; `verifier` does, using the anchors prepared here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use webpki::anchor_from_trusted_cert;

use crate::spiffe::TrustDomain;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("reading trust anchors from {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("trust anchors are not valid PEM")]
    Pem(#[source] rustls_pki_types::pem::Error),
    #[error("no trust anchors: the bundle holds no certificate")]
    Empty,
    #[error("trust anchor #{index} is not a usable root certificate")]
    BadAnchor {
        index: usize,
        #[source]
        source: webpki::Error,
    },
}

/// The roots trusted for one trust domain.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
}

impl TrustBundle {
    pub fn new(trust_domain: TrustDomain, roots: Vec<CertificateDer<'static>>) -> Result<Self, BundleError> {
        if roots.is_empty() {
            return Err(BundleError::Empty);
        }
        let anchors = roots
            .iter()
            .enumerate()
            .map(|(index, der)| {
                anchor_from_trusted_cert(der)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|source| BundleError::BadAnchor { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { trust_domain, roots, anchors })
    }

    /// Parses every `CERTIFICATE` block of a PEM text (e.g. `DAPR_TRUST_ANCHORS`).
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        let roots = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(BundleError::Pem)?;
        Self::new(trust_domain, roots)
    }

    pub fn from_pem_file(trust_domain: TrustDomain, path: &Path) -> Result<Self, BundleError> {
        let pem = std::fs::read(path).map_err(|source| BundleError::Read { path: path.to_owned(), source })?;
        Self::from_pem(trust_domain, &pem)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub(crate) fn anchors(&self) -> &[rustls_pki_types::TrustAnchor<'static>] {
        &self.anchors
    }

    /// The bundle as PEM text, roots in order.
    pub fn to_pem(&self) -> String {
        self.roots.iter().map(|der| pem_encode("CERTIFICATE", der)).collect()
    }
}

/// PEM text with `\n` line endings (the `pem` crate defaults to `\r\n`).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let block = pem::Pem::new(label, der.to_vec());
    pem::encode_config(&block, pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF))
}

/// A bundle that can be replaced while verifiers that hold the handle keep running.
#[derive(Debug, Clone)]
pub struct TrustBundleHandle(Arc<ArcSwap<TrustBundle>>);

impl TrustBundleHandle {
    pub fn new(bundle: TrustBundle) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(bundle)))
    }

    pub fn load(&self) -> Arc<TrustBundle> {
        self.0.load_full()
    }

    /// Replaces the bundle; connections already established are unaffected, new handshakes use the new roots.
    pub fn store(&self, bundle: TrustBundle) {
        self.0.store(Arc::new(bundle));
    }
}

impl From<TrustBundle> for TrustBundleHandle {
    fn from(bundle: TrustBundle) -> Self {
        Self::new(bundle)
    }
}
