//! CA material on disk: the root(s) (`ca.crt`, the trust bundle; several roots during a rotation), the issuer
//! (`issuer.crt`, an intermediate CA with pathlen 0) and its key (`issuer.key`), plus the root key (`ca.key`)
//! that only `ward mtls renew-certificate --keep-root-key` needs. Keys are written with mode 0600.
//!
//! This module generates, loads (checking the issuer really is a CA, chains to a root and matches its key),
//! renews and describes material. It does not sign workload certificates (`signer` does) and does not watch
//! files (the server does).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_identity::{TrustDomain, parse_certificates, pem_encode};
use x509_parser::prelude::X509Certificate;

pub const ROOT_CERT_FILE: &str = "ca.crt";
pub const ROOT_KEY_FILE: &str = "ca.key";
pub const ISSUER_CERT_FILE: &str = "issuer.crt";
pub const ISSUER_KEY_FILE: &str = "issuer.key";

/// Backdating of CA certificates, so a CA made a moment ago is valid on a host whose clock is a little behind.
const CA_BACKDATE: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists (use --force to overwrite CA material)")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: no certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not valid PEM")]
    Pem {
        path: PathBuf,
        #[source]
        source: ward_identity::SvidError,
    },
    #[error("{path}: certificate does not parse: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: private key does not parse")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: the issuer certificate is not a CA")]
    IssuerNotCa { path: PathBuf },
    #[error("{path}: the issuer key does not match the issuer certificate")]
    KeyMismatch { path: PathBuf },
    #[error("{path}: the issuer certificate is not signed by any root in {root_path}")]
    IssuerNotSignedByRoot { path: PathBuf, root_path: PathBuf },
    #[error("{path}: the root key does not match the newest root certificate")]
    RootKeyMismatch { path: PathBuf },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("validity {0:?} is too long")]
    ValidityTooLong(Duration),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MaterialError + '_ {
    move |source| MaterialError::Io { path: path.to_owned(), source }
}

/// The file names of CA material inside one directory.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub issuer_cert: PathBuf,
    pub issuer_key: PathBuf,
}

impl CaFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            root_cert: dir.join(ROOT_CERT_FILE),
            root_key: dir.join(ROOT_KEY_FILE),
            issuer_cert: dir.join(ISSUER_CERT_FILE),
            issuer_key: dir.join(ISSUER_KEY_FILE),
        }
    }

    /// True when any of the files exists.
    pub fn any_exist(&self) -> bool {
        [&self.root_cert, &self.root_key, &self.issuer_cert, &self.issuer_key].iter().any(|p| p.exists())
    }

    /// True when the three files sentry needs exist.
    pub fn complete(&self) -> bool {
        [&self.root_cert, &self.issuer_cert, &self.issuer_key].iter().all(|p| p.exists())
    }
}

/// Freshly generated PEM texts.
pub struct GeneratedMaterial {
    pub root_cert_pem: String,
    pub root_key_pem: String,
    pub issuer_cert_pem: String,
    pub issuer_key_pem: String,
}

impl std::fmt::Debug for GeneratedMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedMaterial").finish_non_exhaustive()
    }
}

fn offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn root_params(trust_domain: &TrustDomain, not_before: SystemTime, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationName, trust_domain.as_str());
    params.distinguished_name.push(DnType::CommonName, format!("ward root CA ({trust_domain})"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    params
}

fn issuer_params(trust_domain: &TrustDomain, not_before: SystemTime, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationName, format!("spiffe://{trust_domain}/ns/default/dapr-sentry"));
    params.distinguished_name.push(DnType::CommonName, format!("ward issuer CA ({trust_domain})"));
    // pathlen 0: the issuer signs workloads, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    params
}

fn checked_add(now: SystemTime, valid_for: Duration) -> Result<SystemTime, MaterialError> {
    // X.509 GeneralizedTime tops out at year 9999; stay well inside it.
    if valid_for > Duration::from_secs(100 * 365 * 24 * 3600) {
        return Err(MaterialError::ValidityTooLong(valid_for));
    }
    now.checked_add(valid_for).ok_or(MaterialError::ValidityTooLong(valid_for))
}

/// Generates a self-signed root valid for `valid_for` and an issuer valid for as long as the root.
pub fn generate(trust_domain: &TrustDomain, valid_for: Duration) -> Result<GeneratedMaterial, MaterialError> {
    let now = SystemTime::now();
    let not_before = now - CA_BACKDATE;
    let not_after = checked_add(now, valid_for)?;
    let root_key = KeyPair::generate()?;
    let root_params = root_params(trust_domain, not_before, not_after);
    let root_cert = root_params.self_signed(&root_key)?;
    let root = Issuer::new(root_params, &root_key);
    let (issuer_cert_pem, issuer_key_pem) = new_issuer(trust_domain, &root, not_before, not_after)?;
    Ok(GeneratedMaterial {
        root_cert_pem: root_cert.pem(),
        root_key_pem: root_key.serialize_pem(),
        issuer_cert_pem,
        issuer_key_pem,
    })
}

fn new_issuer(
    trust_domain: &TrustDomain,
    root: &Issuer<'_, &KeyPair>,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(String, String), MaterialError> {
    let issuer_key = KeyPair::generate()?;
    let issuer_cert = issuer_params(trust_domain, not_before, not_after).signed_by(&issuer_key, root)?;
    Ok((issuer_cert.pem(), issuer_key.serialize_pem()))
}

/// Writes material into `dir` (created 0700 if missing). Refuses to replace existing files unless `force`.
pub fn write(dir: &Path, material: &GeneratedMaterial, force: bool) -> Result<CaFiles, MaterialError> {
    let files = CaFiles::in_dir(dir);
    if !force {
        for path in [&files.root_cert, &files.root_key, &files.issuer_cert, &files.issuer_key] {
            if path.exists() {
                return Err(MaterialError::AlreadyExists { path: path.clone() });
            }
        }
    }
    create_private_dir(dir)?;
    write_private(&files.root_cert, material.root_cert_pem.as_bytes())?;
    write_private(&files.root_key, material.root_key_pem.as_bytes())?;
    write_private(&files.issuer_cert, material.issuer_cert_pem.as_bytes())?;
    write_private(&files.issuer_key, material.issuer_key_pem.as_bytes())?;
    Ok(files)
}

pub fn create_private_dir(dir: &Path) -> Result<(), MaterialError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_err(dir))
}

/// Writes a file readable by its owner only, replacing it atomically (write to a temporary file, then rename),
/// so a watcher never reads half a key.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), MaterialError> {
    let tmp = path.with_extension("tmp-ward");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    let certs = parse_certificates(&pem).map_err(|source| MaterialError::Pem { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(MaterialError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

fn parse<'a>(path: &Path, der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, MaterialError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|err| MaterialError::BadCertificate { path: path.to_owned(), reason: err.to_string() })
}

fn read_key(path: &Path) -> Result<KeyPair, MaterialError> {
    let pem = fs::read_to_string(path).map_err(io_err(path))?;
    KeyPair::from_pem(&pem).map_err(|source| MaterialError::BadKey { path: path.to_owned(), source })
}

pub(crate) fn not_after(cert: &X509Certificate<'_>) -> SystemTime {
    let secs = cert.validity().not_after.timestamp();
    UNIX_EPOCH + Duration::from_secs(secs.max(0).unsigned_abs())
}

/// Loaded, checked material ready to sign with.
pub struct CaMaterial {
    pub roots: Vec<CertificateDer<'static>>,
    pub issuer_chain: Vec<CertificateDer<'static>>,
    pub issuer: Issuer<'static, KeyPair>,
    pub issuer_not_after: SystemTime,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("roots", &self.roots.len())
            .field("issuer_chain", &self.issuer_chain.len())
            .field("issuer_not_after", &self.issuer_not_after)
            .finish_non_exhaustive()
    }
}

impl CaMaterial {
    pub fn load(files: &CaFiles) -> Result<Self, MaterialError> {
        let roots = read_certs(&files.root_cert)?;
        let issuer_chain = read_certs(&files.issuer_cert)?;
        let issuer_key = read_key(&files.issuer_key)?;
        let issuer_der = &issuer_chain[0];
        let issuer = parse(&files.issuer_cert, issuer_der)?;
        if !issuer.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca) {
            return Err(MaterialError::IssuerNotCa { path: files.issuer_cert.clone() });
        }
        if issuer.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&issuer_key).as_slice() {
            return Err(MaterialError::KeyMismatch { path: files.issuer_key.clone() });
        }
        // Each certificate of issuer.crt must be signed by the next one, and the last by one of the roots.
        let mut chain = Vec::with_capacity(issuer_chain.len());
        for der in &issuer_chain {
            chain.push(parse(&files.issuer_cert, der)?);
        }
        let parsed_roots = roots.iter().map(|der| parse(&files.root_cert, der)).collect::<Result<Vec<_>, _>>()?;
        let signed_by = |child: &X509Certificate<'_>, parent: &X509Certificate<'_>| {
            child.verify_signature(Some(parent.public_key())).is_ok()
        };
        let chained = chain.windows(2).all(|pair| signed_by(&pair[0], &pair[1]))
            && chain.last().is_some_and(|top| parsed_roots.iter().any(|root| signed_by(top, root)));
        if !chained {
            return Err(MaterialError::IssuerNotSignedByRoot {
                path: files.issuer_cert.clone(),
                root_path: files.root_cert.clone(),
            });
        }
        let issuer_not_after = not_after(&issuer);
        let signing_issuer = Issuer::from_ca_cert_der(issuer_der, issuer_key)?;
        Ok(Self { roots, issuer_chain, issuer: signing_issuer, issuer_not_after })
    }

    pub fn roots_pem(&self) -> String {
        self.roots.iter().map(|der| pem_encode("CERTIFICATE", der)).collect()
    }

    pub fn issuer_chain_pem(&self) -> String {
        self.issuer_chain.iter().map(|der| pem_encode("CERTIFICATE", der)).collect()
    }
}

/// The notAfter of each root and of the issuer, for `ward mtls expiry` and sentry's expiry warning.
#[derive(Debug, Clone)]
pub struct Expiry {
    pub roots: Vec<(String, SystemTime)>,
    pub issuer: (String, SystemTime),
}

pub fn expiry(files: &CaFiles) -> Result<Expiry, MaterialError> {
    let describe = |path: &Path, der: &CertificateDer<'_>| -> Result<(String, SystemTime), MaterialError> {
        let cert = parse(path, der)?;
        Ok((cert.subject().to_string(), not_after(&cert)))
    };
    let roots = read_certs(&files.root_cert)?;
    let issuer = read_certs(&files.issuer_cert)?;
    Ok(Expiry {
        roots: roots.iter().map(|der| describe(&files.root_cert, der)).collect::<Result<_, _>>()?,
        issuer: describe(&files.issuer_cert, &issuer[0])?,
    })
}

/// How `renew` treats the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootRenewal {
    /// Re-issue the root with its existing key: everything that trusts the old root trusts the new issuer.
    KeepKey,
    /// A new root key: the new root is added to `ca.crt` next to the old ones, so both are trusted during the
    /// rotation; drop the old root from `ca.crt` once every workload has a certificate from the new issuer.
    NewKey,
}

/// Renews root and issuer in `dir`. The new root is valid for `valid_for`; the issuer never outlives it.
pub fn renew(
    dir: &Path,
    trust_domain: &TrustDomain,
    valid_for: Duration,
    mode: RootRenewal,
) -> Result<CaFiles, MaterialError> {
    let files = CaFiles::in_dir(dir);
    let old_roots = read_certs(&files.root_cert)?;
    let now = SystemTime::now();
    let not_before = now - CA_BACKDATE;
    let not_after = checked_add(now, valid_for)?;
    let root_key = match mode {
        RootRenewal::KeepKey => {
            let key = read_key(&files.root_key)?;
            let newest = parse(&files.root_cert, &old_roots[0])?;
            if newest.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
                return Err(MaterialError::RootKeyMismatch { path: files.root_key.clone() });
            }
            key
        }
        RootRenewal::NewKey => KeyPair::generate()?,
    };
    let params = root_params(trust_domain, not_before, not_after);
    let root_cert = params.self_signed(&root_key)?;
    let root = Issuer::new(params, &root_key);
    let (issuer_cert_pem, issuer_key_pem) = new_issuer(trust_domain, &root, not_before, not_after)?;

    let mut bundle = root_cert.pem();
    if mode == RootRenewal::NewKey {
        // Keep every old root that has not expired: workloads still holding certificates from the old issuer
        // must keep verifying until they renew.
        for der in &old_roots {
            if not_after_of(der).is_some_and(|t| t > now) {
                bundle.push_str(&pem_encode("CERTIFICATE", der));
            }
        }
    }
    write_private(&files.root_key, root_key.serialize_pem().as_bytes())?;
    write_private(&files.issuer_key, issuer_key_pem.as_bytes())?;
    write_private(&files.issuer_cert, issuer_cert_pem.as_bytes())?;
    write_private(&files.root_cert, bundle.as_bytes())?;
    Ok(files)
}

fn not_after_of(der: &CertificateDer<'_>) -> Option<SystemTime> {
    x509_parser::parse_x509_certificate(der).ok().map(|(_, cert)| not_after(&cert))
}

/// Copies the public root bundle and the issuer certificate and key to `out` (e.g. to feed another sentry).
pub fn export(dir: &Path, out: &Path) -> Result<Vec<PathBuf>, MaterialError> {
    let from = CaFiles::in_dir(dir);
    // Load first: exporting broken material helps nobody.
    CaMaterial::load(&from)?;
    create_private_dir(out)?;
    let to = CaFiles::in_dir(out);
    let mut written = Vec::new();
    for (src, dst) in
        [(&from.root_cert, &to.root_cert), (&from.issuer_cert, &to.issuer_cert), (&from.issuer_key, &to.issuer_key)]
    {
        let bytes = fs::read(src).map_err(io_err(src))?;
        write_private(dst, &bytes)?;
        written.push(dst.clone());
    }
    Ok(written)
}
