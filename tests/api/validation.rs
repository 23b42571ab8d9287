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
async fn a_misspelled_field_is_refused_by_name_and_nothing_is_written() {
    let app = spawn_app().await;
    let answer = app
        .post_attributes(json!({
            "conversationId": SEED_ACTIVE_CALL,
            "purpse": "agent",
            "attributes": {"typoTest": 1}
        }))
        .await;
    answer.assert_problem(400, "invalid_request");
    assert_eq!(
        answer.body["detail"],
        "unknown field `purpse`; did you mean `purpose`?"
    );
    let nested = app
        .post_attributes(json!({"lookup": {"anii": "+13175550123"}, "attributes": {"a": "b"}}))
        .await;
    nested.assert_problem(400, "invalid_request");
    assert_eq!(
        nested.body["detail"],
        "unknown field `anii` in `lookup`; did you mean `ani`?"
    );
    assert!(app.sim.calls().is_empty(), "{:?}", app.sim.calls());
}

#[tokio::test]
async fn a_refusal_says_what_the_body_must_be_in_the_callers_terms() {
    let app = spawn_app().await;
    let detail = |body: &str| {
        let app = &app;
        let body = body.to_string();
        async move {
            let answer = app
                .post_raw("/v1/attributes", body, &[("x-api-key", API_KEY)])
                .await;
            answer.assert_problem(400, "invalid_request");
            answer.body["detail"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(
        detail("[]").await,
        "the body must be a JSON object with `attributes` and a `conversationId` or a `lookup`"
    );
    assert_eq!(
        detail(&json!({"lookup": "+13175550123", "attributes": {"a": "b"}}).to_string()).await,
        "`lookup` must be an object with one of `userId`, `ani` and `externalContactId`"
    );
    let typed = detail(
        &json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "b"}, "verify": "yes"})
            .to_string(),
    )
    .await;
    assert!(typed.starts_with("`verify` is not valid: "), "{typed}");
    for body in [
        "[]".to_string(),
        "{".to_string(),
        json!({"conversationId": 5, "attributes": {"a": "b"}}).to_string(),
        json!({"conversationId": SEED_ACTIVE_CALL}).to_string(),
        json!({"lookup": [], "attributes": {"a": "b"}}).to_string(),
    ] {
        let d = detail(&body).await;
        // Neither a Rust type nor serde's description of one.
        for internal in [
            "struct",
            "Request",
            "elements",
            "invalid length",
            "Option",
            "usize",
        ] {
            assert!(!d.contains(internal), "{body}: {d}");
        }
    }
}

#[tokio::test]
async fn a_misspelled_dead_letters_parameter_is_refused_by_name() {
    let app = spawn_app().await;
    let answer = app.get_with("/v1/dead-letters?limt=5", ADMIN_KEY).await;
    answer.assert_problem(400, "invalid_request");
    assert_eq!(
        answer.body["detail"],
        "unknown parameter `limt`; did you mean `limit`?"
    );
    let answer = app.get_with("/v1/dead-letters?limit=many", ADMIN_KEY).await;
    answer.assert_problem(400, "invalid_request");
    assert_eq!(
        answer.body["detail"],
        "`limit` must be a whole number from 1 to 500"
    );
    let answer = app.get_with("/v1/dead-letters?limit=2", ADMIN_KEY).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
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
