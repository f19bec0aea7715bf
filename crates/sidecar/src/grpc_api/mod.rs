//! The public Dapr gRPC API (`dapr.proto.runtime.v1.Dapr`, from the `dapr` crate's generated server) on
//! `--dapr-grpc-port`, the same listen addresses as HTTP.
//!
//! A thin adapter: every implemented method translates its protobuf request into the protocol-neutral core the
//! HTTP API uses (`state`, `secrets_api::{secret, all_secrets}`, `metadata`, `invoke::Invoker`) and maps the same
//! `ApiError` to a gRPC status in one place (`ApiError::to_status`). The same gates apply: the API token layer from
//! `ward-gate` (no exempt methods) and the `spec.api` allow list (a denied method answers Unimplemented). Methods
//! ward does not implement answer Unimplemented (`dispatch.rs`, generated).

mod dispatch;
mod proxy;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use tonic::{Request, Response, Status};
use ward_components::state::Concurrency;
use ward_policy::ApiAllowList;

use crate::components::Components;
use crate::error::{ApiError, InvokeError, StateFailure};
use crate::invoke::Invoker;
use crate::metadata::MetadataCore;
use crate::state::{self, StateCore};

/// The `dapr` crate's generated types.
pub mod pb {
    pub use dapr::dapr::proto::common;
    pub use dapr::dapr::proto::runtime::v1 as runtime;
}

use pb::common::v1 as common;
use pb::runtime as rt;

/// The gRPC service: one per sidecar, holding one handle per core it serves.
#[derive(Clone)]
pub(crate) struct GrpcApi {
    /// Publishing, and streaming subscriptions (which share the delivery steps).
    pub(crate) delivery: Arc<crate::pubsub::delivery::DeliveryHandles>,
    pub(crate) state: Arc<StateCore>,
    pub(crate) components: Arc<Components>,
    pub(crate) metadata: Arc<MetadataCore>,
    pub(crate) invoker: Arc<Invoker>,
}

impl std::fmt::Debug for GrpcApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcApi").finish_non_exhaustive()
    }
}

fn concurrency(options: Option<&common::StateOptions>) -> Concurrency {
    match options.map(|o| o.concurrency) {
        Some(1) => Concurrency::FirstWrite,
        _ => Concurrency::LastWrite,
    }
}

fn etag(etag: Option<common::Etag>) -> Option<String> {
    etag.map(|e| e.value).filter(|v| !v.is_empty())
}

fn save_item(item: common::StateItem, store: &str) -> Result<state::SaveItem, ApiError> {
    state::refuse_unapplied_metadata(item.metadata.keys().map(String::as_str))
        .map_err(|detail| ApiError::StateSave { store: store.to_owned(), failure: StateFailure::BadRequest, detail })?;
    let ttl = state::parse_ttl(item.metadata.get("ttlInSeconds").map(String::as_str))
        .map_err(|detail| ApiError::StateSave { store: store.to_owned(), failure: StateFailure::BadRequest, detail })?;
    Ok(state::SaveItem {
        concurrency: concurrency(item.options.as_ref()),
        key: item.key,
        value: Bytes::from(item.value),
        etag: etag(item.etag),
        ttl,
    })
}

fn sorted(metadata: HashMap<String, String>) -> BTreeMap<String, String> {
    metadata.into_iter().collect()
}

use crate::state_api::traced;

impl GrpcApi {
    async fn handle_get_state(
        &self,
        request: Request<rt::GetStateRequest>,
    ) -> Result<Response<rt::GetStateResponse>, Status> {
        let r = request.into_inner();
        let item = traced("get", &r.store_name, state::get(&self.state, &r.store_name, &r.key))
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(match item {
            Some(item) => rt::GetStateResponse { data: item.value.to_vec(), etag: item.etag, metadata: HashMap::new() },
            None => rt::GetStateResponse::default(),
        }))
    }

    async fn handle_get_bulk_state(
        &self,
        request: Request<rt::GetBulkStateRequest>,
    ) -> Result<Response<rt::GetBulkStateResponse>, Status> {
        let r = request.into_inner();
        let found = traced("bulk_get", &r.store_name, state::bulk_get(&self.state, &r.store_name, r.keys))
            .await
            .map_err(|e| e.to_status())?;
        let items = found
            .into_iter()
            .map(|(key, item)| match item {
                Some(item) => {
                    rt::BulkStateItem { key, data: item.value.to_vec(), etag: item.etag, ..Default::default() }
                }
                None => rt::BulkStateItem { key, ..Default::default() },
            })
            .collect();
        Ok(Response::new(rt::GetBulkStateResponse { items }))
    }

    async fn handle_save_state(&self, request: Request<rt::SaveStateRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let store = r.store_name;
        let items = r.states.into_iter().map(|item| save_item(item, &store)).collect::<Result<Vec<_>, _>>();
        let items = items.map_err(|e| e.to_status())?;
        traced("save", &store, state::save(&self.state, &store, items)).await.map_err(|e| e.to_status())?;
        Ok(Response::new(()))
    }

    async fn handle_delete_state(&self, request: Request<rt::DeleteStateRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let concurrency = concurrency(r.options.as_ref());
        traced("delete", &r.store_name, state::delete(&self.state, &r.store_name, &r.key, etag(r.etag), concurrency))
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(()))
    }

    async fn handle_delete_bulk_state(
        &self,
        request: Request<rt::DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        for item in r.states {
            let concurrency = concurrency(item.options.as_ref());
            let delete = state::delete(&self.state, &r.store_name, &item.key, etag(item.etag), concurrency);
            traced("delete", &r.store_name, delete).await.map_err(|e| e.to_status())?;
        }
        Ok(Response::new(()))
    }

    async fn handle_execute_state_transaction(
        &self,
        request: Request<rt::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let store = r.store_name;
        let mut items = Vec::with_capacity(r.operations.len());
        for op in r.operations {
            let Some(item) = op.request else {
                return Err(
                    ApiError::Malformed { detail: "transaction operation without a request".to_owned() }.to_status()
                );
            };
            items.push(match op.operation_type.as_str() {
                "upsert" => state::TxItem::Upsert(save_item(item, &store).map_err(|e| e.to_status())?),
                "delete" => state::TxItem::Delete {
                    concurrency: {
                        state::refuse_unapplied_metadata(item.metadata.keys().map(String::as_str)).map_err(
                            |detail| {
                                ApiError::StateTransaction { failure: StateFailure::BadRequest, detail }.to_status()
                            },
                        )?;
                        concurrency(item.options.as_ref())
                    },
                    key: item.key,
                    etag: etag(item.etag),
                },
                other => {
                    return Err(ApiError::StateNotSupported {
                        detail: format!("operation type {other} not supported"),
                    }
                    .to_status());
                }
            });
        }
        traced("transaction", &store, state::transact(&self.state, &store, items)).await.map_err(|e| e.to_status())?;
        Ok(Response::new(()))
    }

    async fn handle_get_secret(
        &self,
        request: Request<rt::GetSecretRequest>,
    ) -> Result<Response<rt::GetSecretResponse>, Status> {
        let r = request.into_inner();
        let secret = crate::secrets_api::secret(&self.components, &r.store_name, &r.key, &sorted(r.metadata))
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(rt::GetSecretResponse { data: secret.into_iter().collect() }))
    }

    async fn handle_get_bulk_secret(
        &self,
        request: Request<rt::GetBulkSecretRequest>,
    ) -> Result<Response<rt::GetBulkSecretResponse>, Status> {
        let r = request.into_inner();
        let all = crate::secrets_api::all_secrets(&self.components, &r.store_name, &sorted(r.metadata))
            .await
            .map_err(|e| e.to_status())?;
        let data = all
            .into_iter()
            .map(|(name, secrets)| (name, rt::SecretResponse { secrets: secrets.into_iter().collect() }))
            .collect();
        Ok(Response::new(rt::GetBulkSecretResponse { data }))
    }

    async fn handle_get_metadata(
        &self,
        _request: Request<rt::GetMetadataRequest>,
    ) -> Result<Response<rt::GetMetadataResponse>, Status> {
        let metadata = self.metadata.metadata();
        Ok(Response::new(rt::GetMetadataResponse {
            id: metadata.id,
            registered_components: metadata
                .components
                .into_iter()
                .map(|c| rt::RegisteredComponents {
                    name: c.name,
                    r#type: c.component_type,
                    version: c.version,
                    capabilities: c.capabilities.iter().map(|c| (*c).to_owned()).collect(),
                })
                .collect(),
            extended_metadata: metadata.extended.into_iter().collect(),
            subscriptions: metadata
                .subscriptions
                .iter()
                .map(|s| rt::PubsubSubscription {
                    pubsub_name: s.pubsubname.clone(),
                    topic: s.topic.clone(),
                    metadata: s.metadata.clone().into_iter().collect(),
                    rules: Some(rt::PubsubSubscriptionRules {
                        rules: s
                            .rules
                            .iter()
                            .map(|r| rt::PubsubSubscriptionRule { r#match: r.match_expr.clone(), path: r.path.clone() })
                            .collect(),
                    }),
                    dead_letter_topic: s.dead_letter_topic.clone().unwrap_or_default(),
                    r#type: match s.kind {
                        "DECLARATIVE" => rt::PubsubSubscriptionType::Declarative as i32,
                        "PROGRAMMATIC" => rt::PubsubSubscriptionType::Programmatic as i32,
                        _ => rt::PubsubSubscriptionType::Streaming as i32,
                    },
                })
                .collect(),
            runtime_version: crate::metadata::RUNTIME_VERSION.to_owned(),
            app_connection_properties: Some(rt::AppConnectionProperties {
                port: i32::from(metadata.app_connection.port),
                protocol: metadata.app_connection.protocol.to_owned(),
                channel_address: metadata.app_connection.channel_address,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn handle_set_metadata(&self, request: Request<rt::SetMetadataRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.metadata.set(r.key, r.value).map_err(|err| ApiError::Malformed { detail: err.to_string() }.to_status())?;
        Ok(Response::new(()))
    }

    /// The deprecated unary invocation API: the same core as HTTP invocation, answering with the app's body
    /// (buffered, so bounded by `--max-body-size`).
    async fn handle_invoke_service(
        &self,
        request: Request<rt::InvokeServiceRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        let r = request.into_inner();
        let Some(message) = r.message else {
            return Err(
                ApiError::Malformed { detail: "InvokeServiceRequest.message is required".to_owned() }.to_status()
            );
        };
        // Dapr's HTTPExtension verb: none (POST) or one of the nine; anything else is refused, not POST.
        let code = message.http_extension.as_ref().map_or(0, |h| h.verb);
        let verb = match ward_policy::HttpVerb::from_extension_code(code) {
            Ok(Some(verb)) => http::Method::from_bytes(verb.as_str().as_bytes()).unwrap_or(http::Method::POST),
            Ok(None) => http::Method::POST,
            Err(err) => {
                return Err(ApiError::Malformed { detail: format!("HTTPExtension.verb: {err}") }.to_status());
            }
        };
        let query = message.http_extension.as_ref().map(|h| h.querystring.as_str()).filter(|q| !q.is_empty());
        // Only the query matters here: the method travels separately, still as the app wrote it.
        let uri = match query {
            Some(q) => format!("/?{q}"),
            None => "/".to_owned(),
        };
        let mut builder = http::Request::builder().method(verb).uri(uri);
        if !message.content_type.is_empty() {
            builder = builder.header(http::header::CONTENT_TYPE, message.content_type.as_str());
        }
        let (type_url, body) = message.data.map(|any| (any.type_url, any.value)).unwrap_or_default();
        if !type_url.is_empty() {
            builder = builder.header(crate::headers::ANY_TYPE_URL, type_url.as_str());
        }
        let (parts, body) = builder
            .body(Body::from(body))
            .map_err(|err| ApiError::Malformed { detail: format!("invalid invocation: {err}") }.to_status())?
            .into_parts();
        let invoke_error = |error| ApiError::Invoke { app_id: r.id.clone(), error }.to_status();
        let response = self.invoker.invoke(&r.id, &message.method, parts, body).await.map_err(invoke_error)?;
        let status = response.status();
        let (content_type, type_url) = {
            let header =
                |name| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let type_url = header(crate::headers::ANY_TYPE_URL);
            // Typed data keeps the app's own content type on the gRPC API (HTTP callers get x-protobuf).
            let content_type = if type_url.is_empty() {
                header(http::header::CONTENT_TYPE.as_str())
            } else {
                header(crate::headers::ANY_CONTENT_TYPE)
            };
            (content_type, type_url)
        };
        let limit = self.invoker.max_body_size;
        let bytes = crate::body::read_limited(response.into_body(), limit).await.map_err(|err| match err {
            crate::body::ReadBodyError::TooLarge { limit } => invoke_error(InvokeError::ResponseTooLarge { limit }),
            crate::body::ReadBodyError::Read(detail) => invoke_error(InvokeError::CalleeUnavailable(detail)),
        })?;
        if !status.is_success() {
            // The app's own error status becomes Dapr's mapping, with the app's body as the message.
            return Err(Status::new(crate::error::grpc_code_for_http(status), String::from_utf8_lossy(&bytes)));
        }
        Ok(Response::new(common::InvokeResponse {
            data: Some(prost_types::Any { type_url, value: bytes.to_vec() }),
            content_type,
        }))
    }
}

/// The gRPC API as one service: API log → API token → `spec.api` allow list → the Dapr service, with calls for
/// other services going to the gRPC proxy (`dapr-app-id` names the target app). Served by `listeners::serve_grpc`.
pub(crate) fn service(
    api: GrpcApi,
    tokens: ward_gate::ApiTokens,
    api_list: Arc<ArcSwap<ApiAllowList>>,
    api_log: ward_gate::ApiLogHandle,
    tracing: Option<Arc<crate::otel::Tracing>>,
) -> impl tower::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let invoker = api.invoker.clone();
    // Requests are decoded whole: bounded by `--max-body-size` like every other buffered body.
    let limit = usize::try_from(api.invoker.max_body_size).unwrap_or(usize::MAX);
    let dapr = pb::runtime::dapr_server::DaprServer::new(api).max_decoding_message_size(limit);
    let mut router =
        tonic::service::Routes::new(dapr).into_axum_router().fallback(move |request: axum::extract::Request| {
            let invoker = invoker.clone();
            async move { proxy::forward(&invoker, request).await }
        });
    // The public API's span (tracing on): `traceparent` or `grpc-trace-bin` continued. Inside the token and list
    // checks, which answer before routing; the span covers what the app asked for.
    if let Some(tracing) = tracing {
        router = router.layer(axum::middleware::from_fn_with_state(tracing, crate::otel::public_api));
    }
    tower::ServiceBuilder::new()
        .layer(ward_gate::ApiLogLayer::reloadable(api_log))
        .layer(ward_gate::GrpcApiTokenLayer::new(tokens))
        .layer(crate::api_list::ApiListLayer::<crate::api_list::Grpc>::new(api_list))
        .map_request(|request: http::Request<hyper::body::Incoming>| request.map(Body::new))
        .service(router)
}
