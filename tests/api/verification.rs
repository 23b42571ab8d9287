//! Verification: the answer says what Genesys really shows.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

fn update() -> serde_json::Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"vip": true, "tier": "gold"}})
}

#[tokio::test]
async fn an_eventually_consistent_write_is_verified_once_it_shows() {
    let app = spawn_app().await;
    app.sim.set_visibility_delay(Duration::from_millis(300));
    let answer = app.post_attributes(update()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["mismatches"], json!([]));
    // It took more than one read to see the write.
    assert!(app.sim.count("get_conversation") > 1);
}

#[tokio::test]
async fn a_write_that_never_shows_is_200_unverified_with_every_missing_key() {
    let app = spawn_app_with(|s| s.verify.timeout_ms = 400).await;
    app.sim.set_visibility_delay(Duration::from_secs(3600));
    let answer = app.post_attributes(update()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["updated"], true);
    assert_eq!(answer.body["verified"], false);
    assert_eq!(
        answer.body["mismatches"],
        json!([
            {"key": "tier", "expected": "gold", "actual": null},
            {"key": "vip", "expected": "true", "actual": null}
        ])
    );
}

#[tokio::test]
async fn a_value_overwritten_by_someone_else_is_a_mismatch_with_its_actual_value() {
    let app = spawn_app_with(|s| s.verify.timeout_ms = 300).await;
    app.post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"tier": "silver"}}))
        .await;
    app.sim.set_visibility_delay(Duration::from_secs(3600));
    let answer = app.post_attributes(update()).await;
    assert_eq!(answer.body["verified"], false);
    assert_eq!(
        answer.body["mismatches"][0],
        json!({"key": "tier", "expected": "gold", "actual": "silver"})
    );
    assert_eq!(answer.body["attributes"]["tier"], "silver");
}

#[tokio::test]
async fn verification_can_be_skipped_per_request_or_by_configuration() {
    let app = spawn_app().await;
    let mut body = update();
    body["verify"] = json!(false);
    let answer = app.post_attributes(body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["verified"], false);
    assert_eq!(app.api_calls(), vec!["patch_attributes"]);

    let app = spawn_app_with(|s| s.verify.enabled = false).await;
    let answer = app.post_attributes(update()).await;
    assert_eq!(answer.body["verified"], false);
    assert_eq!(app.api_calls(), vec!["patch_attributes"]);
    // A caller can still ask for it.
    let mut body = update();
    body["verify"] = json!(true);
    assert_eq!(app.post_attributes(body).await.body["verified"], true);
}
