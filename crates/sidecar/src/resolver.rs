//! Name resolution as the invocation core sees it: app id + namespace → the internal address of one instance.
//! A trait, so tests and resolvers plug in: the SQLite registry of self-hosted mode and Kubernetes DNS names, each
//! used through [`Cached`].
//!
//! Why a cache: without one every invocation paid a SQLite query on the blocking pool (a thread hop and a lock)
//! on the hot path. [`Cached`] keeps every fresh address of an app for [`CACHE_TTL`] and picks one at random per
//! call, so load still spreads over instances; a failed connection evicts the entry, and an app with no instance
//! is never cached (a newly started one is found at once). A row stays in the registry for its freshness window
//! (5 s by default) after an instance dies anyway, so one more second of staleness changes little.
//!
//! A sidecar killed and restarted on other ports leaves such a row behind. When a connection to a resolved address
//! is refused, the caller asks [`NameResolver::re_resolve`]: the source again, bypassing the cache, without the
//! refused address; if that gives another address the call is sent there once (see `invoke.rs`: only a refused
//! connect, which sent nothing, is retried).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ward_components::nameresolution::{KubernetesDns, SqliteRegistry};

/// How long a resolved set of addresses is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// Why an address could not be looked up (not: "no instance", which is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
#[error("name resolution failed: {0}")]
pub struct ResolveError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, ResolveError>> + Send + 'a>>;
pub type ResolveAllFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, ResolveError>> + Send + 'a>>;

/// Finds a callee's sidecar.
pub trait NameResolver: Send + Sync + 'static {
    /// `host:port` of the internal port of one instance of `app_id` in `namespace`; `None` when none is known.
    fn resolve<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> ResolveFuture<'a>;

    /// Forgets what is known about `address` of `app_id` (it did not answer).
    fn evict(&self, _app_id: &str, _namespace: &str, _address: &str) {}

    /// Looks `app_id` up again after a connection to `refused` was refused: at the source, bypassing any cache, and
    /// never answering `refused` itself. `None` when no other instance is known.
    fn re_resolve<'a>(&'a self, app_id: &'a str, namespace: &'a str, refused: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            self.evict(app_id, namespace, refused);
            Ok(self.resolve(app_id, namespace).await?.filter(|address| address != refused))
        })
    }
}

/// A source of every instance's address, for [`Cached`].
pub trait InstanceSource: Send + Sync + 'static {
    fn resolve_all<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> ResolveAllFuture<'a>;
}

impl InstanceSource for SqliteRegistry {
    fn resolve_all<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> ResolveAllFuture<'a> {
        Box::pin(async move {
            SqliteRegistry::resolve_all(self, app_id, namespace).await.map_err(|e| ResolveError(Box::new(e)))
        })
    }
}

impl InstanceSource for KubernetesDns {
    fn resolve_all<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> ResolveAllFuture<'a> {
        // Forming a name (and, in tests, a stat of the override file) needs no blocking pool.
        Box::pin(
            async move { KubernetesDns::resolve_all(self, app_id, namespace).map_err(|e| ResolveError(Box::new(e))) },
        )
    }
}

/// namespace → app id → when looked up, and every address found. Nested rather than keyed by a pair so a look-up
/// borrows the two names instead of copying them into a key on every invocation.
type Entries = HashMap<String, HashMap<String, (Instant, Vec<String>)>>;

/// Caches `addresses` for the app (an empty answer is not cached: a missing app is asked for again).
fn store(entries: &mut Entries, app_id: &str, namespace: &str, addresses: Vec<String>) {
    if addresses.is_empty() {
        forget(entries, app_id, namespace);
    } else {
        entries.entry(namespace.to_owned()).or_default().insert(app_id.to_owned(), (Instant::now(), addresses));
    }
}

fn forget(entries: &mut Entries, app_id: &str, namespace: &str) {
    if let Some(apps) = entries.get_mut(namespace) {
        apps.remove(app_id);
        if apps.is_empty() {
            entries.remove(namespace);
        }
    }
}

/// Caches an [`InstanceSource`] for [`CACHE_TTL`]; picks a random instance per call.
pub struct Cached<S> {
    source: S,
    entries: Mutex<Entries>,
}

impl<S> Cached<S> {
    pub fn new(source: S) -> Self {
        Self { source, entries: Mutex::new(HashMap::new()) }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, app_id: &str, namespace: &str) -> Option<String> {
        let entries = self.lock();
        let (at, addresses) = entries.get(namespace)?.get(app_id)?;
        if at.elapsed() > CACHE_TTL || addresses.is_empty() {
            return None;
        }
        pick(addresses)
    }
}

fn pick(addresses: &[String]) -> Option<String> {
    match addresses.len() {
        0 => None,
        1 => addresses.first().cloned(),
        n => addresses.get(rand::random_range(0..n)).cloned(),
    }
}

impl<S: InstanceSource> NameResolver for Cached<S> {
    fn resolve<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            if let Some(address) = self.cached(app_id, namespace) {
                return Ok(Some(address));
            }
            let addresses = self.source.resolve_all(app_id, namespace).await?;
            let chosen = pick(&addresses);
            store(&mut self.lock(), app_id, namespace, addresses);
            Ok(chosen)
        })
    }

    fn re_resolve<'a>(&'a self, app_id: &'a str, namespace: &'a str, refused: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            let mut addresses = self.source.resolve_all(app_id, namespace).await?;
            // The refused instance's row may still be fresh in the registry (it is refreshed until it dies, and
            // then read as fresh for the registry's window): leave it out of this answer and of the cache.
            addresses.retain(|address| address != refused);
            let chosen = pick(&addresses);
            store(&mut self.lock(), app_id, namespace, addresses);
            Ok(chosen)
        })
    }

    fn evict(&self, app_id: &str, namespace: &str, address: &str) {
        let mut entries = self.lock();
        if let Some((_, addresses)) = entries.get_mut(namespace).and_then(|apps| apps.get_mut(app_id)) {
            addresses.retain(|a| a != address);
            if addresses.is_empty() {
                forget(&mut entries, app_id, namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts look-ups; answers what `addresses` holds now.
    struct Source {
        calls: AtomicUsize,
        addresses: Mutex<Vec<String>>,
    }

    impl InstanceSource for Source {
        fn resolve_all<'a>(&'a self, _: &'a str, _: &'a str) -> ResolveAllFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let addresses = self.addresses.lock().unwrap().clone();
            Box::pin(async move { Ok(addresses) })
        }
    }

    #[tokio::test]
    async fn caches_found_instances_never_missing_ones_and_evicts_failures() {
        let cached = Cached::new(Source { calls: AtomicUsize::new(0), addresses: Mutex::new(Vec::new()) });
        assert_eq!(cached.resolve("a", "ns").await.unwrap(), None);
        assert_eq!(cached.resolve("a", "ns").await.unwrap(), None);
        assert_eq!(cached.source().calls.load(Ordering::SeqCst), 2, "a missing app is asked for every time");

        *cached.source().addresses.lock().unwrap() = vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            seen.insert(cached.resolve("a", "ns").await.unwrap().unwrap());
        }
        assert_eq!(cached.source().calls.load(Ordering::SeqCst), 3, "found instances are reused");
        assert_eq!(seen.len(), 2, "calls spread over every instance");

        cached.evict("a", "ns", "127.0.0.1:1");
        for _ in 0..16 {
            assert_eq!(cached.resolve("a", "ns").await.unwrap().as_deref(), Some("127.0.0.1:2"));
        }
        cached.evict("a", "ns", "127.0.0.1:2");
        cached.resolve("a", "ns").await.unwrap();
        assert_eq!(cached.source().calls.load(Ordering::SeqCst), 4, "an emptied entry is looked up again");
    }

    #[tokio::test]
    async fn re_resolving_after_a_refusal_asks_the_source_and_never_answers_the_refused_address() {
        let old = "127.0.0.1:1".to_owned();
        let new = "127.0.0.1:2".to_owned();
        let cached = Cached::new(Source { calls: AtomicUsize::new(0), addresses: Mutex::new(vec![old.clone()]) });
        assert_eq!(cached.resolve("a", "ns").await.unwrap(), Some(old.clone()));
        // Restarted elsewhere; the dead instance's row is still fresh at the source.
        *cached.source().addresses.lock().unwrap() = vec![old.clone(), new.clone()];
        for _ in 0..16 {
            assert_eq!(cached.re_resolve("a", "ns", &old).await.unwrap(), Some(new.clone()));
        }
        assert_eq!(cached.source().calls.load(Ordering::SeqCst), 17, "the cache is bypassed every time");
        // And the cache now holds only the other address.
        for _ in 0..16 {
            assert_eq!(cached.resolve("a", "ns").await.unwrap(), Some(new.clone()));
        }
        // Only the refused address is known: no answer, nothing cached.
        *cached.source().addresses.lock().unwrap() = vec![old.clone()];
        assert_eq!(cached.re_resolve("a", "ns", &old).await.unwrap(), None);
        assert_eq!(cached.resolve("a", "ns").await.unwrap(), Some(old.clone()), "looked up again, not cached empty");
    }
}
