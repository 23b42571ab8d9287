//! The OAuth token: one grant, cached, renewed on a 401, and a rejected client reported honestly.

use std::time::Duration;

use patchbay::sim::Op;
use serde_json::json;

use crate::helpers::*;

fn update(value: usize) -> serde_json::Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"n": value}})
}

#[tokio::test(start_paused = true)]
async fn the_token_is_granted_once_and_reused() {
    let app = spawn_app().await;
    for n in 0..5 {
        assert_eq!(app.post_attributes(update(n)).await.status, 200);
    }
    assert_eq!(app.sim.grants(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_against_an_empty_cache_cause_exactly_one_grant() {
    let app = spawn_app().await;
    // Slow grants widen the window in which every request finds the cache empty.
    app.sim.set_latency(Duration::from_millis(100));
    let requests = (0..48).map(|n| app.post_attributes(update(n)));
    let answers = futures::future::join_all(requests).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(app.sim.grants(), 1);
    assert_eq!(app.sim.count("token"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_is_replaced_once_and_the_call_retried() {
    let app = spawn_app().await;
    assert_eq!(app.post_attributes(update(1)).await.status, 200);
    app.sim.revoke_tokens();
    let answer = app.post_attributes(update(2)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["verified"], true);
    assert_eq!(app.sim.grants(), 2);
    let statuses: Vec<u16> = app
        .sim
        .calls()
        .iter()
        .filter(|c| c.op == "patch_attributes")
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, vec![202, 401, 202]);
}

#[tokio::test(start_paused = true)]
async fn a_short_lived_token_is_renewed_before_it_expires() {
    let app = spawn_app_with(|s| s.genesys.token_expiry_margin_s = 1).await;
    app.sim.set_token_lifetime(2);
    assert_eq!(app.post_attributes(update(1)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.post_attributes(update(2)).await.status, 200);
    assert_eq!(app.sim.grants(), 2);
    // The cached token was replaced before Genesys could refuse it.
    assert!(app.sim.calls().iter().all(|c| c.status != 401));
}

#[tokio::test(start_paused = true)]
async fn rejected_client_credentials_are_upstream_auth_failed_and_not_retried_in_a_loop() {
    for reject_status in [400, 401] {
        let app = spawn_app_with(|s| s.genesys.client_secret = "wrong".to_string().into()).await;
        app.sim.set_grant_reject_status(reject_status);
        for n in 0..3 {
            app.post_attributes(update(n))
                .await
                .assert_problem(502, "upstream_auth_failed");
        }
        // A short negative cache: one grant attempt, however many requests.
        assert_eq!(
            app.sim.count("token"),
            1,
            "grant rejected with {reject_status}"
        );
        assert!(app.api_calls().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_refused_even_when_fresh_is_upstream_auth_failed() {
    let app = spawn_app().await;
    app.sim.fail_next(Op::PatchAttributes, 401, 2);
    app.post_attributes(update(1))
        .await
        .assert_problem(502, "upstream_auth_failed");
    assert_eq!(app.sim.grants(), 2);
}
