//! The delivery engine spends as few Genesys calls as it can: updates that wait together share a
//! PATCH and a read, and a young read finds a participant without another GET.

use std::time::Duration;

use patchbay::sim::Op;
use serde_json::{json, Value};

use crate::helpers::*;

/// The agent of the seeded live call, by id, with one key of its own.
fn to_the_agent(key: &str, value: &str) -> Value {
    json!({
        "conversationId": SEED_ACTIVE_CALL,
        "participantId": SEED_ACTIVE_CALL_AGENT,
        "attributes": {key: value}
    })
}

fn by_purpose(key: &str, value: &str) -> Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "purpose": "agent", "attributes": {key: value}})
}

#[tokio::test(start_paused = true)]
async fn concurrent_updates_to_one_participant_cost_one_patch_and_one_read_and_all_are_verified() {
    // The linger is far longer than the time the requests take to arrive together.
    let app = spawn_app_with(|s| s.delivery.linger_ms = 400).await;
    let n = 8;
    let answers = futures::future::join_all(
        (0..n).map(|i| app.post_attributes(to_the_agent(&format!("k{i}"), &format!("v{i}")))),
    )
    .await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["verified"], true, "{}", answer.body);
        assert_eq!(answer.body["attributes"][format!("k{i}")], format!("v{i}"));
    }
    assert_eq!(app.sim.count("patch_attributes"), 1, "one PATCH for all");
    assert_eq!(app.sim.count("get_conversation"), 1, "one shared read");
    let writes = app.sim.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].attributes.len(), n, "{:?}", writes[0]);
}

#[tokio::test(start_paused = true)]
async fn a_key_a_later_update_overwrote_is_answered_as_a_mismatch_with_the_newer_value() {
    let app = spawn_app_with(|s| s.delivery.linger_ms = 600).await;
    let first = app.post_attributes(to_the_agent("tier", "silver"));
    let second = async {
        // Accepted well after the first, well within the linger.
        tokio::time::sleep(Duration::from_millis(150)).await;
        app.post_attributes(to_the_agent("tier", "gold")).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(app.sim.count("patch_attributes"), 1);
    assert_eq!(second.body["verified"], true, "{}", second.body);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["verified"], false, "{}", first.body);
    assert_eq!(
        first.body["mismatches"],
        json!([{"key": "tier", "expected": "silver", "actual": "gold"}])
    );
    assert_eq!(
        app.sim
            .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "tier"),
        Some(("tier".into(), "gold".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn merged_updates_never_exceed_the_attribute_limit() {
    let app = spawn_app_with(|s| {
        s.delivery.linger_ms = 400;
        s.limits.max_attributes_bytes = 64;
    })
    .await;
    let value = "x".repeat(20);
    let answers = futures::future::join_all(
        (0..4).map(|i| app.post_attributes(to_the_agent(&format!("key{i}"), &value))),
    )
    .await;
    for answer in &answers {
        assert_eq!(answer.body["verified"], true, "{}", answer.body);
    }
    let writes = app.sim.writes();
    assert!(writes.len() > 1, "the four do not fit one PATCH");
    for w in writes {
        let bytes: usize = w.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(bytes <= 64, "{w:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_young_read_finds_the_participant_without_another_get() {
    let app = spawn_app().await;
    let first = app.post_attributes(by_purpose("a", "1")).await;
    assert_eq!(first.body["verified"], true, "{}", first.body);
    assert_eq!(app.sim.count("get_conversation"), 2, "find, then verify");
    let second = app.post_attributes(by_purpose("b", "2")).await;
    assert_eq!(second.body["verified"], true, "{}", second.body);
    assert_eq!(
        app.sim.count("get_conversation"),
        3,
        "the verifying read of the first found the participant of the second"
    );
}

#[tokio::test(start_paused = true)]
async fn a_read_older_than_the_reuse_age_is_made_again() {
    let app = spawn_app_with(|s| s.delivery.read_reuse_ms = 200).await;
    app.post_attributes(by_purpose("a", "1")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = app.post_attributes(by_purpose("b", "2")).await;
    assert_eq!(second.body["verified"], true, "{}", second.body);
    assert_eq!(app.sim.count("get_conversation"), 4);
}

#[tokio::test(start_paused = true)]
async fn a_patch_refused_after_a_reused_read_reads_afresh_and_writes_to_the_participant_now_there()
{
    let app = spawn_app().await;
    app.post_attributes(by_purpose("a", "1")).await;
    // The call is transferred; the reused read still names the first agent, and Genesys refuses it.
    let new_agent = "7a3c1f0e-2b4d-4e6f-8a9b-0c1d2e3f4a5b";
    app.sim.transfer(SEED_ACTIVE_CALL, new_agent);
    app.sim.fail_next(Op::PatchAttributes, 409, 1);
    let answer = app.post_attributes(by_purpose("vip", "true")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["participantId"], new_agent);
    assert_eq!(answer.body["verified"], true, "{}", answer.body);
    let landed = app
        .sim
        .stored_attributes(SEED_ACTIVE_CALL, new_agent)
        .unwrap();
    assert!(landed.contains(&("vip".into(), "true".into())));
}
