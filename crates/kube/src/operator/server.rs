//! Dapr's operator gRPC API (`dapr.proto.operator.v1.Operator`) over the index.
//!
//! Owns: each RPC's answer — authorization first ([`super::authz::authorize`]), then only resources of the
//! caller's namespace whose scopes include its app id (lists, gets and update streams alike; a resource whose
//! scopes change so that a caller falls out of them is a DELETED event for that caller, coming into them a
//! CREATED), secrets resolved per caller after the scope check, and the update streams' fan-out with a bounded
//! queue per client (a client that falls behind is disconnected with `RESOURCE_EXHAUSTED`; it lists again on
//! reconnect, as daprd does). Kinds ward does not serve (MCP servers, workflow access policies) answer
//! `UNIMPLEMENTED` rather than an empty list, which a sidecar would read as "none configured".
//!
//! Does not own: TLS and who the caller is (the accept path puts a verified [`Caller`] into each request), or the
//! index itself.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status};
use ward_operator_api::ResourceEventType;
use ward_operator_api::proto::*;

use super::authz::{Caller, authorize};
use super::events::{EventRecorder, ObjectRef};
use super::secrets::{self, SecretError};
use super::store::{Change, Index, Kind, Resource};

/// The gRPC service. Cheap to clone.
#[derive(Clone)]
pub struct OperatorService {
    pub(crate) index: Arc<Index>,
    pub(crate) client: kube::Client,
    pub(crate) events: Arc<EventRecorder>,
    /// Per update stream: events queued for a client before it is considered too slow.
    pub(crate) queue: usize,
}

type EventStream<E> = Pin<Box<dyn Stream<Item = Result<E, Status>> + Send + 'static>>;

fn caller<T>(request: &Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

fn to_bytes(object: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail.
    serde_json::to_vec(object).unwrap_or_default()
}

impl OperatorService {
    /// The object as this caller gets it: secrets resolved where the kind has them. A resource whose secrets do
    /// not resolve is withheld from the caller (logged, and a Warning Event on the object): a component without
    /// its password would start half-configured; the caller's other resources are still served.
    async fn render(&self, resource: &Resource, caller: &Caller) -> Option<Vec<u8>> {
        if !matches!(resource.kind, Kind::Component | Kind::HttpEndpoint) || !secrets::needs_resolution(resource) {
            return Some(to_bytes(&resource.object));
        }
        match secrets::resolve(&self.client, resource).await {
            Ok(object) => Some(to_bytes(&object)),
            Err(err) => {
                self.secret_failed(resource, caller, &err).await;
                None
            }
        }
    }

    async fn secret_failed(&self, resource: &Resource, caller: &Caller, err: &SecretError) {
        tracing::error!(kind = %resource.kind, namespace = %resource.namespace, name = %resource.name,
            caller = %caller.id, error = %err, "secretKeyRef not resolved; resource withheld from this caller");
        let object = object_ref(resource);
        self.events.warn(&object, "SecretNotResolved", &err.to_string()).await;
    }

    /// Everything of `kind` the caller may see, rendered.
    async fn list(&self, kind: Kind, caller: &Caller) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for resource in self.index.list(kind, &caller.namespace) {
            if !resource.visible_to(&caller.app_id) {
                continue;
            }
            if let Some(bytes) = self.render(&resource, caller).await {
                out.push(bytes);
            }
        }
        out
    }

    /// An update stream of `kind` for `caller`: changes from now on, as this caller sees them.
    fn stream<E: Send + 'static>(
        &self,
        kind: Kind,
        caller: Caller,
        rpc: &'static str,
        make: fn(Vec<u8>, i32) -> E,
    ) -> EventStream<E> {
        let feed = self.index.subscribe();
        let (tx, rx) = mpsc::channel::<Result<E, Status>>(self.queue.max(1));
        let service = self.clone();
        tracing::info!(rpc, caller = %caller.id, "update stream opened");
        tokio::spawn(async move { service.pump(kind, caller, rpc, feed, tx, make).await });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    async fn pump<E: Send + 'static>(
        &self,
        kind: Kind,
        caller: Caller,
        rpc: &'static str,
        mut feed: broadcast::Receiver<Arc<Change>>,
        tx: mpsc::Sender<Result<E, Status>>,
        make: fn(Vec<u8>, i32) -> E,
    ) {
        loop {
            let change = tokio::select! {
                () = tx.closed() => break,
                change = feed.recv() => change,
            };
            let change = match change {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(rpc, caller = %caller.id, missed, "update stream fell behind; disconnected");
                    // The queue may be full: the error is best effort, the close is not.
                    let _ = tx.try_send(Err(Status::resource_exhausted("too slow: reconnect and list again")));
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if change.kind != kind || change.namespace != caller.namespace {
                continue;
            }
            let Some((event_type, resource)) = event_for(&change, &caller.app_id) else { continue };
            let bytes = if event_type == ResourceEventType::Deleted {
                // A deletion needs only the name; no Secret is read for it.
                to_bytes(&resource.object)
            } else {
                match self.render(&resource, &caller).await {
                    Some(bytes) => bytes,
                    None => continue,
                }
            };
            match tx.try_send(Ok(make(bytes, event_type as i32))) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(rpc, caller = %caller.id, queue = self.queue,
                        "update stream client does not keep up; disconnected");
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        tracing::info!(rpc, caller = %caller.id, "update stream closed");
    }
}

/// What `app_id` is told about a change: judged on the version it could see before and the one after.
pub fn event_for(change: &Change, app_id: &str) -> Option<(ResourceEventType, Arc<Resource>)> {
    let before = change.old.as_ref().filter(|r| r.visible_to(app_id));
    let after = change.new.as_ref().filter(|r| r.visible_to(app_id));
    match (before, after) {
        (None, Some(new)) => Some((ResourceEventType::Created, new.clone())),
        (Some(_), Some(new)) => Some((ResourceEventType::Updated, new.clone())),
        (Some(old), None) => Some((ResourceEventType::Deleted, old.clone())),
        (None, None) => None,
    }
}

pub(crate) fn object_ref(resource: &Resource) -> ObjectRef {
    ObjectRef {
        api_version: resource.object.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned(),
        kind: resource.kind.as_str().to_owned(),
        namespace: resource.namespace.clone(),
        name: resource.name.clone(),
        uid: resource.uid.clone(),
        resource_version: resource.resource_version.clone(),
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!(
        "ward's operator does not serve {what}; refusing rather than answering an empty list, which would read as \
         \"none configured\""
    ))
}

#[tonic::async_trait]
impl ward_operator_api::Operator for OperatorService {
    type ComponentUpdateStream = EventStream<ComponentUpdateEvent>;
    type SubscriptionUpdateStream = EventStream<SubscriptionUpdateEvent>;
    type HTTPEndpointUpdateStream = EventStream<HttpEndpointUpdateEvent>;
    type MCPServerUpdateStream = EventStream<McpServerUpdateEvent>;
    type ConfigurationUpdateStream = EventStream<ConfigurationUpdateEvent>;
    type ResiliencyUpdateStream = EventStream<ResiliencyUpdateEvent>;
    type WorkflowAccessPolicyUpdateStream = EventStream<WorkflowAccessPolicyUpdateEvent>;

    async fn component_update(
        &self,
        request: Request<ComponentUpdateRequest>,
    ) -> Result<Response<Self::ComponentUpdateStream>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "ComponentUpdate")?;
        Ok(Response::new(self.stream(Kind::Component, who, "ComponentUpdate", |component, r#type| {
            ComponentUpdateEvent { component, r#type }
        })))
    }

    async fn list_components(
        &self,
        request: Request<ListComponentsRequest>,
    ) -> Result<Response<ListComponentResponse>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "ListComponents")?;
        Ok(Response::new(ListComponentResponse { components: self.list(Kind::Component, &who).await }))
    }

    async fn get_configuration(
        &self,
        request: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationResponse>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "GetConfiguration")?;
        let name = &request.get_ref().name;
        match self.index.get(Kind::Configuration, &who.namespace, name) {
            Some(config) => Ok(Response::new(GetConfigurationResponse { configuration: to_bytes(&config.object) })),
            None => {
                Err(Status::not_found(format!("configuration {:?} not found in namespace {:?}", name, who.namespace)))
            }
        }
    }

    /// Dapr answers this (namespace-less) request by failing its namespace check; ward answers for the caller's
    /// own namespace, which is all `ListSubscriptionsV2` would give it.
    async fn list_subscriptions(&self, request: Request<()>) -> Result<Response<ListSubscriptionsResponse>, Status> {
        let namespace = caller(&request).map(|c| c.namespace.clone()).unwrap_or_default();
        let who = authorize(caller(&request), &namespace, "ListSubscriptions")?;
        Ok(Response::new(ListSubscriptionsResponse { subscriptions: self.list(Kind::Subscription, &who).await }))
    }

    async fn get_resiliency(
        &self,
        request: Request<GetResiliencyRequest>,
    ) -> Result<Response<GetResiliencyResponse>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "GetResiliency")?;
        let name = &request.get_ref().name;
        match self.index.get(Kind::Resiliency, &who.namespace, name).filter(|r| r.visible_to(&who.app_id)) {
            Some(r) => Ok(Response::new(GetResiliencyResponse { resiliency: to_bytes(&r.object) })),
            None => Err(Status::not_found(format!("resiliency {:?} not found in namespace {:?}", name, who.namespace))),
        }
    }

    async fn list_resiliency(
        &self,
        request: Request<ListResiliencyRequest>,
    ) -> Result<Response<ListResiliencyResponse>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "ListResiliency")?;
        Ok(Response::new(ListResiliencyResponse { resiliencies: self.list(Kind::Resiliency, &who).await }))
    }

    async fn list_subscriptions_v2(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "ListSubscriptionsV2")?;
        Ok(Response::new(ListSubscriptionsResponse { subscriptions: self.list(Kind::Subscription, &who).await }))
    }

    async fn subscription_update(
        &self,
        request: Request<SubscriptionUpdateRequest>,
    ) -> Result<Response<Self::SubscriptionUpdateStream>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "SubscriptionUpdate")?;
        Ok(Response::new(self.stream(Kind::Subscription, who, "SubscriptionUpdate", |subscription, r#type| {
            SubscriptionUpdateEvent { subscription, r#type }
        })))
    }

    async fn list_http_endpoints(
        &self,
        request: Request<ListHttpEndpointsRequest>,
    ) -> Result<Response<ListHttpEndpointsResponse>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "ListHTTPEndpoints")?;
        Ok(Response::new(ListHttpEndpointsResponse { http_endpoints: self.list(Kind::HttpEndpoint, &who).await }))
    }

    async fn http_endpoint_update(
        &self,
        request: Request<HttpEndpointUpdateRequest>,
    ) -> Result<Response<Self::HTTPEndpointUpdateStream>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "HTTPEndpointUpdate")?;
        Ok(Response::new(self.stream(Kind::HttpEndpoint, who, "HTTPEndpointUpdate", |http_endpoints, r#type| {
            HttpEndpointUpdateEvent { http_endpoints, r#type }
        })))
    }

    async fn list_mcp_servers(
        &self,
        request: Request<ListMcpServersRequest>,
    ) -> Result<Response<ListMcpServersResponse>, Status> {
        authorize(caller(&request), &request.get_ref().namespace, "ListMCPServers")?;
        Err(unimplemented("MCPServer resources"))
    }

    async fn mcp_server_update(
        &self,
        request: Request<McpServerUpdateRequest>,
    ) -> Result<Response<Self::MCPServerUpdateStream>, Status> {
        authorize(caller(&request), &request.get_ref().namespace, "MCPServerUpdate")?;
        Err(unimplemented("MCPServer resources"))
    }

    async fn configuration_update(
        &self,
        request: Request<ConfigurationUpdateRequest>,
    ) -> Result<Response<Self::ConfigurationUpdateStream>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "ConfigurationUpdate")?;
        Ok(Response::new(self.stream(Kind::Configuration, who, "ConfigurationUpdate", |configuration, r#type| {
            ConfigurationUpdateEvent { configuration, r#type }
        })))
    }

    async fn resiliency_update(
        &self,
        request: Request<ResiliencyUpdateRequest>,
    ) -> Result<Response<Self::ResiliencyUpdateStream>, Status> {
        let who = authorize(caller(&request), &request.get_ref().namespace, "ResiliencyUpdate")?;
        Ok(Response::new(self.stream(Kind::Resiliency, who, "ResiliencyUpdate", |resiliency, r#type| {
            ResiliencyUpdateEvent { resiliency, r#type }
        })))
    }

    async fn list_workflow_access_policy(
        &self,
        request: Request<ListWorkflowAccessPolicyRequest>,
    ) -> Result<Response<ListWorkflowAccessPolicyResponse>, Status> {
        authorize(caller(&request), &request.get_ref().namespace, "ListWorkflowAccessPolicy")?;
        Err(unimplemented("workflow access policies"))
    }

    async fn workflow_access_policy_update(
        &self,
        request: Request<WorkflowAccessPolicyUpdateRequest>,
    ) -> Result<Response<Self::WorkflowAccessPolicyUpdateStream>, Status> {
        authorize(caller(&request), &request.get_ref().namespace, "WorkflowAccessPolicyUpdate")?;
        Err(unimplemented("workflow access policies"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn resource(scopes: &[&str]) -> Arc<Resource> {
        Arc::new(Resource {
            kind: Kind::Component,
            namespace: "shop".into(),
            name: "store".into(),
            uid: None,
            resource_version: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            object: json!({}),
        })
    }

    fn unreachable_client() -> kube::Client {
        // Never contacted: the resources below have no secrets to read.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn caller(app: &str) -> Caller {
        let td = ward_identity::TrustDomain::new("public").unwrap();
        Caller {
            id: ward_identity::SpiffeId::dapr(&td, "shop", app).unwrap(),
            namespace: "shop".into(),
            app_id: app.into(),
        }
    }

    fn component(name: &str, scopes: &[&str]) -> Value {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1"},
            "spec": {"type": "state.redis", "version": "v1", "metadata": []}, "scopes": scopes})
    }

    #[tokio::test]
    async fn a_stream_gets_its_namespaces_changes_in_scope_and_a_slow_client_is_cut_off() {
        use futures_util::StreamExt;
        let client = unreachable_client();
        let index = Arc::new(Index::new(64));
        let service = OperatorService {
            index: index.clone(),
            client: client.clone(),
            events: Arc::new(EventRecorder::new(client)),
            queue: 4,
        };
        let make = |component, r#type| ComponentUpdateEvent { component, r#type };
        let mut stream = service.stream(Kind::Component, caller("a"), "ComponentUpdate", make);
        index.apply(Kind::Component, component("theirs", &["b"])).unwrap();
        let mut elsewhere = component("elsewhere", &[]);
        elsewhere["metadata"]["namespace"] = json!("bank");
        index.apply(Kind::Component, elsewhere).unwrap();
        index.apply(Kind::Component, component("mine", &["a"])).unwrap();
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        let object: Value = serde_json::from_slice(&event.component).unwrap();
        assert_eq!(object["metadata"]["name"], "mine", "only the caller's namespace and scope");
        assert_eq!(event.r#type, ResourceEventType::Created as i32);

        // A client that reads nothing: after `queue` events the stream ends instead of buffering more.
        for i in 0..20 {
            index.apply(Kind::Component, component(&format!("c{i}"), &[])).unwrap();
        }
        let mut received = 0;
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(item) = stream.next().await {
                assert!(item.is_ok());
                received += 1;
            }
        })
        .await;
        assert!(drained.is_ok(), "the stream of a slow client was not closed");
        assert!((1..=4).contains(&received), "{received} events queued for a queue of 4");
    }

    #[test]
    fn each_caller_is_told_what_it_could_see_before_and_after() {
        use ResourceEventType::*;
        let change = |old: Option<&[&str]>, new: Option<&[&str]>| Change {
            kind: Kind::Component,
            namespace: "shop".into(),
            name: "store".into(),
            old: old.map(resource),
            new: new.map(resource),
        };
        let cases: [(&str, Change, &str, Option<ResourceEventType>); 8] = [
            ("created, in scope", change(None, Some(&["a"])), "a", Some(Created)),
            ("created, out of scope", change(None, Some(&["a"])), "b", None),
            ("created, unscoped", change(None, Some(&[])), "b", Some(Created)),
            ("updated, in scope", change(Some(&["a"]), Some(&["a", "b"])), "a", Some(Updated)),
            ("came into scope", change(Some(&["a"]), Some(&["a", "b"])), "b", Some(Created)),
            ("fell out of scope", change(Some(&[]), Some(&["a"])), "b", Some(Deleted)),
            ("deleted, was out of scope", change(Some(&["a"]), None), "b", None),
            ("deleted, in scope", change(Some(&["a"]), None), "a", Some(Deleted)),
        ];
        for (name, change, app, expected) in cases {
            assert_eq!(event_for(&change, app).map(|(t, _)| t), expected, "{name}");
        }
    }
}
