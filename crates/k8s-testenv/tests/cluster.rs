//! The test cluster itself: it starts, serves bound service-account tokens that TokenReview judges, and answers
//! impersonating clients with RBAC's verdicts.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_tokens_review_with_their_pod_and_rbac_answers_impersonated_clients() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("bound_tokens_review_with_their_pod") else { return };
    let client = cluster.client().await;
    let ns = cluster.fresh_namespace(&client, "testenv").await;
    let post = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    accounts.create(&post, &serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app-0"},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    let pod = pods.create(&post, &pod).await.unwrap();
    let request: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": ["ward-test"], "expirationSeconds": 600,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "app-0", "uid": pod.metadata.uid}
    }}))
    .unwrap();
    let token = accounts.create_token_request("app", &post, &request).await.unwrap().status.unwrap().token;

    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review: TokenReview =
        serde_json::from_value(json!({"spec": {"token": token, "audiences": ["ward-test"]}})).unwrap();
    let status = reviews.create(&post, &review).await.unwrap().status.unwrap();
    assert_eq!(status.authenticated, Some(true), "{:?}", status.error);
    let user = status.user.unwrap();
    assert_eq!(user.username.as_deref(), Some(format!("system:serviceaccount:{ns}:app").as_str()));
    let extra = user.extra.unwrap();
    assert_eq!(extra["authentication.kubernetes.io/pod-name"], vec!["app-0".to_owned()]);

    let other: TokenReview =
        serde_json::from_value(json!({"spec": {"token": token_of(&status.audiences), "audiences": ["x"]}})).unwrap();
    assert_ne!(reviews.create(&post, &other).await.unwrap().status.unwrap().authenticated, Some(true));

    // RBAC through impersonation: a service account with no grants cannot list pods.
    let app = cluster.client_as_service_account(&ns, "app").await;
    let err = Api::<Pod>::namespaced(app, &ns).list(&Default::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref status) if status.code == 403), "{err}");
}

fn token_of(_audiences: &Option<Vec<String>>) -> String {
    "not-a-token".to_owned()
}
