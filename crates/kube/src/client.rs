//! Reaching the API server: `--kubeconfig` when given, else the in-cluster service account, else `KUBECONFIG` /
//! `~/.kube/config` (kube-rs' inference order).

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (not in a cluster, no KUBECONFIG or ~/.kube/config): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the cluster: from `kubeconfig` if given, else inferred.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let wrap = |source| KubeError::Kubeconfig { path: path.display().to_string(), source };
            let file = Kubeconfig::read_from(path).map_err(wrap)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await.map_err(wrap)?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}
