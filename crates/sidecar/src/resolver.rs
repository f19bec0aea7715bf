//! Name resolution as the invocation core sees it: app id + namespace → the internal address of one instance.
//! A trait, so tests and later resolvers (Kubernetes DNS) plug in; the SQLite registry of self-hosted mode is one
//! implementation.

use std::future::Future;
use std::pin::Pin;

use ward_components::nameresolution::SqliteRegistry;

/// Why an address could not be looked up (not: "no instance", which is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
#[error("name resolution failed: {0}")]
pub struct ResolveError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, ResolveError>> + Send + 'a>>;

/// Finds a callee's sidecar.
pub trait NameResolver: Send + Sync + 'static {
    /// `host:port` of the internal port of one instance of `app_id` in `namespace`; `None` when none is known.
    fn resolve<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> ResolveFuture<'a>;
}

impl NameResolver for SqliteRegistry {
    fn resolve<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            SqliteRegistry::resolve(self, app_id, namespace).await.map_err(|e| ResolveError(Box::new(e)))
        })
    }
}
