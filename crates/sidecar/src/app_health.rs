//! `--enable-app-health-check`: the sidecar probes its app, as daprd does, and reports it.
//!
//! An HTTP app is probed with `GET <--app-health-check-path>` (default `/healthz`; any 2xx is healthy), a gRPC app
//! with `AppCallbackHealthCheck/HealthCheck`. Every `--app-health-probe-interval` seconds (default 5), each probe
//! bounded by `--app-health-probe-timeout` milliseconds (default 500); the app becomes unhealthy after
//! `--app-health-threshold` failures in a row (default 3) and healthy again at the first success. While unhealthy,
//! `/v1.0/healthz` answers 500 `ERR_HEALTH_NOT_READY` (orchestrators take the pod out of rotation) and each change is
//! logged once. (Dapr also pauses pub/sub deliveries then; ward has no pub/sub yet.)

use std::time::Duration;

use crate::public::Readiness;

/// The probe settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHealthCheck {
    /// HTTP apps: the path probed.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures in a row before the app counts as unhealthy.
    pub threshold: u32,
}

impl Default for AppHealthCheck {
    /// daprd's defaults.
    fn default() -> Self {
        AppHealthCheck {
            path: "/healthz".to_owned(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_millis(500),
            threshold: 3,
        }
    }
}

/// What is probed.
pub(crate) enum Probe {
    Http { url: http::Uri },
    Grpc { endpoint: String },
}

impl Probe {
    async fn once(&self, timeout: Duration) -> bool {
        let attempt = async {
            match self {
                Probe::Http { url } => {
                    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                        .build_http::<http_body_util::Empty<bytes::Bytes>>();
                    client.get(url.clone()).await.is_ok_and(|r| r.status().is_success())
                }
                Probe::Grpc { endpoint } => {
                    use crate::grpc_api::pb::runtime::app_callback_health_check_client::AppCallbackHealthCheckClient;
                    match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
                        Ok(endpoint) => match endpoint.connect().await {
                            Ok(channel) => AppCallbackHealthCheckClient::new(channel).health_check(()).await.is_ok(),
                            Err(_) => false,
                        },
                        Err(_) => false,
                    }
                }
            }
        };
        tokio::time::timeout(timeout, attempt).await.unwrap_or(false)
    }
}

/// Probes until `stop` flips, keeping `readiness` told.
pub(crate) async fn run(
    check: AppHealthCheck,
    probe: Probe,
    readiness: Readiness,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(check.interval) => {}
            _ = stop.changed() => return,
        }
        if probe.once(check.timeout).await {
            failures = 0;
            if !readiness.app_healthy() {
                tracing::info!("the app is healthy again");
                readiness.set_app_healthy(true);
            }
        } else {
            failures = failures.saturating_add(1);
            if failures >= check.threshold && readiness.app_healthy() {
                tracing::warn!(failures, "the app failed its health checks; reporting unhealthy");
                readiness.set_app_healthy(false);
            }
        }
    }
}
