//! The happy paths: a write lands, on the right participant, with values coerced.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_write_by_participant_id_is_patched_and_verified() {
    let app = spawn_app().await;
    let answer = app
        .post_attributes(json!({
            "conversationId": SEED_ACTIVE_CALL,
            "participantId": SEED_ACTIVE_CALL_AGENT,
            "attributes": {"vip": "true"}
        }))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversationId"], SEED_ACTIVE_CALL);
    assert_eq!(answer.body["participantId"], SEED_ACTIVE_CALL_AGENT);
    assert_eq!(answer.body["updated"], true);
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["attributes"]["vip"], "true");
    assert_eq!(answer.body["mismatches"], json!([]));
    assert_eq!(
        answer.body["requestId"].as_str(),
        Some(answer.header("x-request-id"))
    );
    // Exactly the calls the contract names: the attributes PATCH, then a read-back.
    assert_eq!(
        app.api_calls(),
        vec!["patch_attributes", "get_conversation"]
    );
    let patch = app
        .sim
        .calls()
        .into_iter()
        .find(|c| c.op == "patch_attributes")
        .unwrap();
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.path,
        format!("/api/v2/conversations/{SEED_ACTIVE_CALL}/participants/{SEED_ACTIVE_CALL_AGENT}/attributes")
    );
}

#[tokio::test]
async fn without_a_participant_id_the_customer_is_the_target() {
    let app = spawn_app().await;
    let answer = app
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"vip": true}}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["participantId"], SEED_ACTIVE_CALL_CUSTOMER);
    // The read-back map is the participant's whole map, not just what was sent.
    assert_eq!(answer.body["attributes"]["ivr.language"], "en-US");
    assert_eq!(
        app.api_calls(),
        vec!["get_conversation", "patch_attributes", "get_conversation"]
    );
}

#[tokio::test]
async fn a_purpose_selects_the_connected_and_most_recent_participant() {
    let app = spawn_app().await;
    let answer = app
        .post_attributes(
            json!({"conversationId": SEED_TRANSFER, "purpose": "agent", "attributes": {"x": "1"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["participantId"], SEED_TRANSFER_AGENT_NEW);
}

#[tokio::test]
async fn a_purpose_works_on_messaging_conversations_too() {
    let app = spawn_app().await;
    let answer = app
        .post_attributes(
            json!({"conversationId": SEED_CHAT, "purpose": "Customer", "attributes": {"x": "1"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["participantId"], SEED_CHAT_CUSTOMER);
}

#[tokio::test]
async fn numbers_and_booleans_are_written_as_their_json_text() {
    let app = spawn_app().await;
    let answer = app
        .post_attributes(json!({
            "conversationId": SEED_ACTIVE_CALL,
            "attributes": {"openCases": 42, "vip": true, "score": 4.5, "name": "Ada"}
        }))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let stored = app
        .sim
        .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_CUSTOMER)
        .unwrap();
    for (k, v) in [
        ("openCases", "42"),
        ("vip", "true"),
        ("score", "4.5"),
        ("name", "Ada"),
    ] {
        assert!(
            stored.contains(&(k.to_string(), v.to_string())),
            "{k} in {stored:?}"
        );
        assert_eq!(answer.body["attributes"][k], v);
    }
}

#[tokio::test]
async fn a_callers_request_id_is_echoed_back() {
    let app = spawn_app().await;
    let answer = app
        .post_raw(
            "/v1/attributes",
            json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "b"}}).to_string(),
            &[("x-api-key", API_KEY), ("x-request-id", "crm-event-77")],
        )
        .await;
    assert_eq!(answer.header("x-request-id"), "crm-event-77");
    assert_eq!(answer.body["requestId"], "crm-event-77");
}

#[tokio::test]
async fn healthz_needs_no_credential() {
    let app = spawn_app().await;
    let answer = app.get("/healthz").await;
    assert_eq!(answer.status, 200);
    assert!(!answer.header("x-request-id").is_empty());
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = spawn_app().await;
    app.get("/v1/nothing")
        .await
        .assert_problem(404, "not_found");
}

/// The bodies the book's `curl` examples send to `/v1/attributes`, as written.
fn readme_bodies() -> Vec<String> {
    let readme = crate::docs::pages()
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join("\n");
    let mut bodies = Vec::new();
    for command in readme.split("curl ").skip(1) {
        let command = command.split("\n```").next().unwrap();
        if !command.starts_with("-s localhost:8080/v1/attributes") {
            continue;
        }
        if let Some((_, rest)) = command.split_once("-d '") {
            bodies.push(rest.split('\'').next().unwrap().to_string());
        }
    }
    bodies
}

#[tokio::test]
async fn every_body_the_readme_sends_is_accepted_as_written() {
    let app = spawn_app().await;
    app.sim.add_caller_call();
    let bodies = readme_bodies();
    assert!(bodies.len() >= 3, "{bodies:?}");
    for body in bodies {
        let answer = app
            .post_raw("/v1/attributes", body.clone(), &[("x-api-key", API_KEY)])
            .await;
        assert_eq!(answer.status, 200, "{body}: {}", answer.body);
        assert_eq!(answer.body["verified"], true, "{body}");
    }
}
