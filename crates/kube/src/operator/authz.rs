//! Who is calling the operator, and for which namespace they may ask.
//!
//! Owns: the TLS client-certificate check (the chain must verify against the trust anchors — the file the
//! sentry's `dapr-root-ca.crt` ConfigMap is mounted as, reloaded when it changes — and carry exactly one SPIFFE
//! ID; like Dapr's operator, any trust domain those anchors sign is accepted, since apps get theirs from their
//! Configuration), turning the verified chain into a [`Caller`], and the per-request rule of Dapr's `authz.go`:
//! the requested namespace is the caller's. Every decision is one structured log line.
//!
//! Does not own: chain building and the SPIFFE checks themselves (`ward-identity`'s `verify_svid`), or what a
//! caller may see inside its namespace (scopes: the server).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use ward_identity::{Authorizer, SpiffeClientVerifier, SpiffeId, TrustBundle, TrustBundleHandle, TrustDomain};

/// The verified identity of the connection a request came on. Put into request extensions by the accept path,
/// from the verified TLS session only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: SpiffeId,
    pub namespace: String,
    pub app_id: String,
}

impl Caller {
    /// From a chain the TLS layer verified; `None` when there is none or its ID is not `.../ns/<ns>/<app-id>`.
    pub fn from_verified_chain(chain: Option<&[CertificateDer<'_>]>) -> Option<Caller> {
        let id = ward_identity::peer_spiffe_id(chain)?;
        let (namespace, app_id) = {
            let dapr = id.dapr_identity().ok()?;
            (dapr.namespace.to_owned(), dapr.app_id.to_owned())
        };
        Some(Caller { id, namespace, app_id })
    }
}

/// Why a request is refused before anything is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("no verified client identity")]
    NoIdentity,
    #[error("identity does not match requested namespace exp={requested} got={caller_namespace}")]
    WrongNamespace { requested: String, caller_namespace: String },
}

impl From<AuthzError> for tonic::Status {
    fn from(err: AuthzError) -> Self {
        match err {
            AuthzError::NoIdentity => tonic::Status::unauthenticated("failed to determine identity"),
            // Dapr's message, word for word.
            err @ AuthzError::WrongNamespace { .. } => tonic::Status::permission_denied(err.to_string()),
        }
    }
}

/// Dapr's `authz.Request`: the caller's SVID namespace must be the requested one (an empty request namespace
/// matches nobody). Logs the decision.
pub fn authorize(caller: Option<&Caller>, namespace: &str, rpc: &'static str) -> Result<Caller, AuthzError> {
    let Some(caller) = caller else {
        tracing::warn!(target: "ward::operator::authz", rpc, decision = "refused", reason = "no identity",
            namespace, "operator request refused");
        return Err(AuthzError::NoIdentity);
    };
    if namespace.is_empty() || caller.namespace != namespace {
        tracing::warn!(target: "ward::operator::authz", rpc, decision = "refused", caller = %caller.id,
            namespace, reason = "namespace", "operator request refused");
        return Err(AuthzError::WrongNamespace {
            requested: namespace.to_owned(),
            caller_namespace: caller.namespace.clone(),
        });
    }
    tracing::info!(target: "ward::operator::authz", rpc, decision = "allowed", caller = %caller.id, namespace,
        "operator request allowed");
    Ok(caller.clone())
}

/// The trust anchors clients are verified with, replaceable while the server runs. Filed under one trust-domain
/// label only because a bundle has one: the verifier accepts clients of any trust domain these roots sign.
#[derive(Debug, Clone)]
pub struct TrustAnchors(TrustBundleHandle);

/// The label the anchors are filed under (see [`TrustAnchors`]).
const ANCHORS_LABEL: &str = "cluster.local";

/// Why the anchors file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AnchorsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ward_identity::SvidError,
    },
    #[error("{path}: holds no certificate")]
    Empty { path: PathBuf },
    #[error("{path}: {source}")]
    Label {
        path: PathBuf,
        #[source]
        source: ward_identity::SpiffeIdError,
    },
    #[error("{path}: {source}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: ward_identity::BundleError,
    },
}

impl TrustAnchors {
    pub fn from_file(path: &std::path::Path) -> Result<Self, AnchorsError> {
        Ok(Self(TrustBundleHandle::new(read_anchors(path)?)))
    }

    pub fn current(&self) -> Arc<TrustBundle> {
        self.0.load()
    }

    /// Re-reads `path` every `poll` while the returned task runs; a file that does not parse keeps the last good
    /// anchors (logged once until it parses again). Polled, like every mounted file ward watches: a ConfigMap
    /// volume changes by symlink swaps that file events report unreliably.
    pub fn watch_file(&self, path: PathBuf, poll: Duration) -> tokio::task::JoinHandle<()> {
        let anchors = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(poll).await;
                match read_anchors(&path) {
                    Ok(bundle) if anchors.current().roots() == bundle.roots() => failing = false,
                    Ok(bundle) => {
                        tracing::info!(path = %path.display(), roots = bundle.roots().len(), "trust anchors changed; reloaded");
                        anchors.0.store(bundle);
                        failing = false;
                    }
                    Err(err) => {
                        if !failing {
                            tracing::error!(error = %err, "trust anchors do not load; keeping the last good ones");
                        }
                        failing = true;
                    }
                }
            }
        })
    }
}

fn read_anchors(path: &std::path::Path) -> Result<TrustBundle, AnchorsError> {
    let pem = std::fs::read(path).map_err(|source| AnchorsError::Read { path: path.to_owned(), source })?;
    let roots = ward_identity::parse_certificates(&pem)
        .map_err(|source| AnchorsError::Parse { path: path.to_owned(), source })?;
    if roots.is_empty() {
        return Err(AnchorsError::Empty { path: path.to_owned() });
    }
    let label =
        TrustDomain::new(ANCHORS_LABEL).map_err(|source| AnchorsError::Label { path: path.to_owned(), source })?;
    TrustBundle::new(label, roots).map_err(|source| AnchorsError::Bundle { path: path.to_owned(), source })
}

/// The operator's TLS settings: its SVID; mandatory client certificates of any trust domain the anchors sign,
/// carrying a Dapr-shaped SPIFFE ID (`.../ns/<ns>/<app-id>`; what it may ask is [`authorize`]'s); TLS 1.3, HTTP/2.
pub fn server_config(
    svid: Arc<ward_identity::SvidResolver>,
    anchors: TrustAnchors,
    skew: Duration,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let dapr_workloads = Authorizer::Custom(Arc::new(|id: &SpiffeId| id.dapr_identity().is_ok()));
    let verifier = SpiffeClientVerifier::for_any_trust_domain(anchors.0, dapr_workloads, skew);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(svid);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(ns: &str, app: &str) -> Caller {
        let td = ward_identity::TrustDomain::new("public").unwrap();
        Caller { id: SpiffeId::dapr(&td, ns, app).unwrap(), namespace: ns.to_owned(), app_id: app.to_owned() }
    }

    #[test]
    fn the_requested_namespace_must_be_the_callers() {
        struct Case {
            name: &'static str,
            caller: Option<Caller>,
            namespace: &'static str,
            expected: Result<(), AuthzError>,
        }
        let cases = [
            Case { name: "own namespace", caller: Some(caller("shop", "a")), namespace: "shop", expected: Ok(()) },
            Case {
                name: "another namespace",
                caller: Some(caller("shop", "a")),
                namespace: "bank",
                expected: Err(AuthzError::WrongNamespace { requested: "bank".into(), caller_namespace: "shop".into() }),
            },
            Case {
                name: "empty namespace",
                caller: Some(caller("shop", "a")),
                namespace: "",
                expected: Err(AuthzError::WrongNamespace { requested: "".into(), caller_namespace: "shop".into() }),
            },
            Case { name: "no identity", caller: None, namespace: "shop", expected: Err(AuthzError::NoIdentity) },
        ];
        for case in cases {
            let got = authorize(case.caller.as_ref(), case.namespace, "ListComponents").map(|_| ());
            assert_eq!(got, case.expected, "{}", case.name);
        }
        let status: tonic::Status =
            AuthzError::WrongNamespace { requested: "bank".into(), caller_namespace: "shop".into() }.into();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(tonic::Status::from(AuthzError::NoIdentity).code(), tonic::Code::Unauthenticated);
    }
}
