//! Bad input: a 400 (or 413/422) problem, and nothing sent to Genesys.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn each_kind_of_bad_input_is_a_400_and_never_reaches_genesys() {
    let app = spawn_app().await;
    let cases = [
        ("malformed JSON", "{\"conversationId\": ".to_string()),
        ("not an object", "[1, 2]".to_string()),
        ("missing conversationId", json!({"attributes": {"a": "b"}}).to_string()),
        ("missing attributes", json!({"conversationId": SEED_ACTIVE_CALL}).to_string()),
        ("non-UUID conversation", json!({"conversationId": "abc", "attributes": {"a": "b"}}).to_string()),
        (
            "non-UUID participant",
            json!({"conversationId": SEED_ACTIVE_CALL, "participantId": "p-1", "attributes": {"a": "b"}}).to_string(),
        ),
        (
            "unknown purpose",
            json!({"conversationId": SEED_ACTIVE_CALL, "purpose": "supervisor", "attributes": {"a": "b"}}).to_string(),
        ),
        ("empty attributes", json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {}}).to_string()),
        ("attributes not an object", json!({"conversationId": SEED_ACTIVE_CALL, "attributes": "vip"}).to_string()),
        ("null value", json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": null}}).to_string()),
        ("object value", json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": {"b": 1}}}).to_string()),
        ("array value", json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": [1]}}).to_string()),
        ("empty key", json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"": "x"}}).to_string()),
        ("verify not a boolean", json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "b"}, "verify": "yes"}).to_string()),
    ];
    for (what, body) in cases {
        let answer = app
            .post_raw("/v1/attributes", body, &[("x-api-key", API_KEY)])
            .await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.body);
        answer.assert_problem(400, "invalid_request");
    }
    assert!(app.sim.calls().is_empty(), "{:?}", app.sim.calls());
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 1024).await;
    let body = json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "x".repeat(2000)}})
        .to_string();
    app.post_raw("/v1/attributes", body, &[("x-api-key", API_KEY)])
        .await
        .assert_problem(413, "payload_too_large");
    assert!(app.sim.calls().is_empty());
}

#[tokio::test]
async fn attributes_over_their_byte_limit_are_refused_before_any_upstream_call() {
    let app = spawn_app_with(|s| s.limits.max_attributes_bytes = 16).await;
    // 8 + 9 bytes: one over.
    let answer = app
        .post_attributes(
            json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"language": "fr-CA-xyz"}}),
        )
        .await;
    answer.assert_problem(422, "attributes_too_large");
    assert!(app.sim.calls().is_empty());
    // Bytes, not characters: 8 + 8 bytes of "ééé" + "xx" is exactly the limit.
    let answer = app
        .post_attributes(
            json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"language": "éééxx"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem() {
    let app = spawn_app().await;
    app.get("/v1/attributes")
        .await
        .assert_problem(405, "method_not_allowed");
}
