//! Kubernetes Events the operator records on Dapr objects (`type: Warning`), so `kubectl describe` shows why an
//! object is not served: `InvalidResource` (validation refused a create/update) and `SecretNotResolved` (a
//! `secretKeyRef` names a Secret or key that does not exist).
//!
//! Owns: writing core/v1 Events (the API every supported server has) and not repeating one (the same reason for
//! the same object version is recorded once). Does not decide what is wrong.

use std::collections::HashSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Event;
use serde_json::json;

/// Who records (`source.component`, `reportingComponent`).
pub const REPORTER: &str = "dapr-operator";

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// Records Events, each (object version, reason, message) once.
pub struct EventRecorder {
    client: kube::Client,
    seen: Mutex<HashSet<(ObjectRef, String, String)>>,
}

/// Events recorded before the set is cleared (it only prevents repeats; a cleared set at worst repeats one).
const MAX_REMEMBERED: usize = 10_000;
/// Kubernetes refuses longer Event messages.
const MAX_MESSAGE: usize = 1024;

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder").finish_non_exhaustive()
    }
}

impl EventRecorder {
    pub fn new(client: kube::Client) -> Self {
        Self { client, seen: Mutex::new(HashSet::new()) }
    }

    /// A Warning Event on `object`. Failures are logged, never returned: an Event is a report, not a decision.
    pub async fn warn(&self, object: &ObjectRef, reason: &str, message: &str) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
            if !seen.insert((object.clone(), reason.to_owned(), message.to_owned())) {
                return;
            }
        }
        let mut message = message.to_owned();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let event = json!({
            "metadata": {"name": format!("{}.{nanos:x}", object.name), "namespace": object.namespace},
            "involvedObject": {"apiVersion": object.api_version, "kind": object.kind, "namespace": object.namespace,
                "name": object.name, "uid": object.uid, "resourceVersion": object.resource_version},
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": REPORTER},
            "reportingComponent": REPORTER,
            "reportingInstance": std::env::var("HOSTNAME").unwrap_or_else(|_| REPORTER.to_owned()),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let event: Event = match serde_json::from_value(event) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(error = %err, "building an Event");
                return;
            }
        };
        let api: kube::Api<Event> = kube::Api::namespaced(self.client.clone(), &object.namespace);
        if let Err(err) = api.create(&kube::api::PostParams::default(), &event).await {
            tracing::warn!(namespace = %object.namespace, name = %object.name, reason, error = %err,
                "recording an Event failed");
        }
    }
}
