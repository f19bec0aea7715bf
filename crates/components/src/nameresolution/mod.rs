//! Name resolution: app id → `host:port` of a sidecar's internal endpoint.
//!
//! Owns: Kubernetes DNS names ([`KubernetesDns`], `nameresolution.kubernetes`, the default in Kubernetes mode), and
//! for self-hosted mode the Dapr-compatible SQLite registry ([`SqliteRegistry`], components-contrib `nameresolution/sqlite`,
//! DAPR-FACTS §11.1). Every sidecar registers its own address and keeps the row fresh; resolving an app id picks a
//! random fresh row, so several instances of one app share the load. Sidecars on one machine share the file
//! (WAL + busy timeout make concurrent processes safe); network file systems are not supported, as in Dapr.
//!
//! Does not: dial the resolved address, check the peer's identity (the mTLS client verifies that the peer is
//! `spiffe://<td>/ns/<ns>/<app-id>`, so a forged row cannot impersonate an app), or implement mDNS.

mod kubernetes;
mod sqlite;

pub use kubernetes::{DEFAULT_CLUSTER_DOMAIN, KubernetesDns, KubernetesOptions, OVERRIDES_ENV};
pub use sqlite::{Registration, RegistryError, RegistryOptions, SqliteRegistry};
