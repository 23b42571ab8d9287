//! Inbound authentication: the configured keys, and nothing else, get in.

use serde_json::json;

use crate::helpers::*;

fn body() -> String {
    json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "b"}}).to_string()
}

#[tokio::test]
async fn a_key_is_accepted_as_bearer_or_x_api_key() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {API_KEY}");
    assert_eq!(
        app.post_raw("/v1/attributes", body(), &[("authorization", &bearer)])
            .await
            .status,
        200
    );
    assert_eq!(
        app.post_raw("/v1/attributes", body(), &[("x-api-key", API_KEY)])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_a_401_problem_and_nothing_goes_upstream() {
    let app = spawn_app().await;
    for headers in [
        vec![],
        vec![("x-api-key", "wrong")],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Basic dGVzdDp0ZXN0")],
    ] {
        app.post_raw("/v1/attributes", body(), &headers)
            .await
            .assert_problem(401, "unauthorized");
    }
    assert!(app.sim.calls().is_empty(), "{:?}", app.sim.calls());
}

#[tokio::test]
async fn anonymous_access_works_only_when_allowed() {
    let app = spawn_app_with(|s| {
        s.auth.api_keys.clear();
        s.auth.allow_anonymous = true;
    })
    .await;
    assert_eq!(
        app.post_raw("/v1/attributes", body(), &[]).await.status,
        200
    );
}
