//! Verification: the answer says what Genesys really shows.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

fn update() -> serde_json::Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"vip": true, "tier": "gold"}})
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
async fn the_first_read_back_learns_how_long_genesys_takes_so_later_writes_verify_in_one_read() {
    let app = spawn_app_with(|s| {
        s.verify.poll_initial_ms = 20;
        s.verify.poll_max_ms = 400;
    })
    .await;
    app.sim.set_visibility_delay(Duration::from_millis(100));
    let mut reads = Vec::new();
    for n in 0..6 {
        let before = app.sim.count("get_conversation");
        let answer = app
            .post_attributes(json!({
                "conversationId": SEED_ACTIVE_CALL,
                "participantId": SEED_ACTIVE_CALL_AGENT,
                "attributes": {"n": n}
            }))
            .await;
        assert_eq!(answer.body["verified"], true, "{}", answer.body);
        reads.push(app.sim.count("get_conversation") - before);
    }
    // The first write is read at once, then polled for (after 20, 60 and 140 ms); the next waits
    // about as long as that took, and its first read shows it. Shortening the wait by a tenth a
    // time, no later write needs more than a second read within these six, and most need one.
    assert!(reads[0] >= 2, "{reads:?}");
    assert_eq!(reads[1], 1, "{reads:?}");
    assert!(reads[1..].iter().all(|r| *r <= 2), "{reads:?}");
    assert!(reads[1..].iter().sum::<usize>() <= 6, "{reads:?}");
}
