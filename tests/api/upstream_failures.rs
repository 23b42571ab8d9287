//! Genesys failing: rate limits, server errors, timeouts, missing and ended conversations.

use std::time::Duration;

use tokio::time::Instant;

use patchbay::sim::Op;
use serde_json::json;

use crate::helpers::*;

fn update() -> serde_json::Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"vip": "true"}})
}

fn patch_statuses(app: &TestApp) -> Vec<u16> {
    app.sim
        .calls()
        .iter()
        .filter(|c| c.op == "patch_attributes")
        .map(|c| c.status)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_its_retry_after_then_succeeds() {
    let app = spawn_app().await;
    app.sim.rate_limit_next(Op::PatchAttributes, 1, 1);
    let started = Instant::now();
    let answer = app.post_attributes(update()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    assert_eq!(patch_statuses(&app), vec![429, 202]);
}

#[tokio::test(start_paused = true)]
async fn a_429_that_persists_is_rate_limited_with_retry_after() {
    let app = spawn_app_with(|s| s.genesys.retry.max_attempts = 2).await;
    app.sim.rate_limit_next(Op::PatchAttributes, 1, 5);
    let answer = app.post_attributes(update()).await;
    answer.assert_problem(429, "rate_limited");
    assert_eq!(answer.header("retry-after"), "1");
    assert_eq!(patch_statuses(&app), vec![429, 429]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_bound_is_answered_at_once() {
    let app = spawn_app().await;
    app.sim.rate_limit_next(Op::PatchAttributes, 120, 1);
    let started = Instant::now();
    let answer = app.post_attributes(update()).await;
    answer.assert_problem(429, "rate_limited");
    assert_eq!(answer.header("retry-after"), "120");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_transient_5xx_is_retried() {
    let app = spawn_app().await;
    app.sim.fail_next(Op::PatchAttributes, 503, 2);
    let answer = app.post_attributes(update()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(patch_statuses(&app), vec![503, 503, 202]);
}

#[tokio::test(start_paused = true)]
async fn a_persistent_5xx_ends_after_the_bounded_attempts() {
    let app = spawn_app_with(|s| s.genesys.retry.max_attempts = 3).await;
    app.sim.fail_next(Op::PatchAttributes, 500, 100);
    let answer = app.post_attributes(update()).await;
    answer.assert_problem(502, "upstream_error");
    assert_eq!(patch_statuses(&app), vec![500, 500, 500]);
    // Internals stay inside: no upstream status text or correlation id in the body.
    assert!(!answer.body["detail"]
        .as_str()
        .unwrap()
        .contains("correlation"));
}

#[tokio::test(start_paused = true)]
async fn a_5xx_on_the_read_before_the_write_is_retried_too() {
    let app = spawn_app().await;
    app.sim.fail_next(Op::GetConversation, 502, 1);
    let answer = app
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "b"}}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(start_paused = true)]
async fn a_genesys_that_does_not_answer_in_time_is_upstream_timeout() {
    let app = spawn_app_with(|s| {
        s.genesys.timeout_ms = 100;
        s.genesys.retry.max_attempts = 2;
    })
    .await;
    // The token comes quickly; then every API call hangs past the client timeout.
    app.post_attributes(update()).await;
    app.sim.set_latency(Duration::from_millis(400));
    app.post_attributes(update())
        .await
        .assert_problem(504, "upstream_timeout");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_conversation_is_conversation_not_found() {
    let app = spawn_app().await;
    let missing = "11111111-2222-3333-4444-555555555555";
    app.post_attributes(json!({"conversationId": missing, "attributes": {"a": "b"}}))
        .await
        .assert_problem(404, "conversation_not_found");
    app.post_attributes(json!({"conversationId": missing, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"a": "b"}}))
        .await
        .assert_problem(404, "conversation_not_found");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_participant_is_participant_not_found() {
    let app = spawn_app().await;
    app.post_attributes(json!({
        "conversationId": SEED_ACTIVE_CALL,
        "participantId": "11111111-2222-3333-4444-555555555555",
        "attributes": {"a": "b"}
    }))
    .await
    .assert_problem(404, "participant_not_found");
    // No participant has this purpose: nothing is written.
    app.post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "purpose": "voicemail", "attributes": {"a": "b"}}))
        .await
        .assert_problem(404, "participant_not_found");
    assert_eq!(app.sim.count("patch_attributes"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_ended_conversation_is_conversation_ended_whatever_genesys_answers() {
    for status in [400, 404, 409] {
        let app = spawn_app().await;
        app.sim.set_ended_patch_status(status);
        app.post_attributes(json!({
            "conversationId": SEED_ENDED,
            "participantId": SEED_ENDED_CUSTOMER,
            "attributes": {"a": "b"}
        }))
        .await
        .assert_problem(409, "conversation_ended");
        // One refused PATCH, then a read to tell the truth; never retried.
        assert_eq!(
            app.api_calls(),
            vec!["patch_attributes", "get_conversation"],
            "PATCH answered {status}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_ended_conversation_found_by_purpose_is_never_written() {
    let app = spawn_app().await;
    app.post_attributes(json!({"conversationId": SEED_ENDED, "attributes": {"a": "b"}}))
        .await
        .assert_problem(409, "conversation_ended");
    assert_eq!(app.api_calls(), vec!["get_conversation"]);
}

#[tokio::test(start_paused = true)]
async fn a_conversation_that_ends_during_the_call_is_reported_as_ended() {
    let app = spawn_app().await;
    app.sim.end_conversation(SEED_ACTIVE_CALL);
    app.post_attributes(update())
        .await
        .assert_problem(409, "conversation_ended");
}

#[tokio::test(start_paused = true)]
async fn a_request_over_its_overall_deadline_is_upstream_timeout() {
    let app = spawn_app_with(|s| {
        s.server.request_timeout_ms = 300;
        s.verify.timeout_ms = 100;
    })
    .await;
    app.sim.set_latency(Duration::from_millis(1000));
    let started = Instant::now();
    app.post_attributes(update())
        .await
        .assert_problem(504, "upstream_timeout");
    assert!(started.elapsed() < Duration::from_millis(900));
}
