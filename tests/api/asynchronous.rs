//! The asynchronous mode: durable acceptance, job status, retries, order, merging, idempotency,
//! dead letters and replay, and graceful shutdown.

use std::time::{Duration, Instant};

use patchbay::sim::Op;
use serde_json::{json, Value};

use crate::helpers::*;

fn agent_update(attributes: Value) -> Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": attributes})
}

fn job_id(answer: &Answer) -> String {
    assert_eq!(answer.status, 202, "{}", answer.body);
    answer.body["jobId"].as_str().unwrap().to_string()
}

/// The values the simulator saw written to `key` of the agent, in order.
fn written_values(app: &TestApp, key: &str) -> Vec<String> {
    app.sim
        .writes()
        .into_iter()
        .filter(|w| w.participant == SEED_ACTIVE_CALL_AGENT)
        .filter_map(|w| {
            w.attributes
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
        })
        .collect()
}

#[tokio::test]
async fn respond_async_answers_202_with_a_job_that_succeeds_with_the_synchronous_answer() {
    let app = spawn_app().await;
    let answer = app
        .post_async(agent_update(json!({"vip": true})), &[])
        .await;
    let id = job_id(&answer);
    assert_eq!(answer.body["status"], "queued");
    assert_eq!(answer.header("location"), format!("/v1/jobs/{id}"));
    let job = app.wait_for_job(&id, "succeeded").await;
    assert_eq!(job["result"]["verified"], true);
    assert_eq!(job["result"]["participantId"], SEED_ACTIVE_CALL_AGENT);
    assert_eq!(job["result"]["attributes"]["vip"], "true");
    assert_eq!(job["result"]["requestId"], answer.header("x-request-id"));
    assert_eq!(job["attempts"], 1);
}

#[tokio::test]
async fn a_route_in_async_mode_always_answers_202() {
    let app = spawn_app_with_hooks(
        "[hooks.crm]\nmode = \"async\"\nconversation_id = \"/c\"\n[hooks.crm.attributes]\ntier = \"/t\"\n",
    )
    .await;
    let body = json!({"c": SEED_ACTIVE_CALL, "t": "gold"}).to_string();
    let answer = app
        .post_raw("/v1/hooks/crm", body, &[("x-api-key", API_KEY)])
        .await;
    let job = app.wait_for_job(&job_id(&answer), "succeeded").await;
    assert_eq!(job["result"]["attributes"]["tier"], "gold");
}

#[tokio::test]
async fn validation_and_authentication_stay_synchronous() {
    let app = spawn_app().await;
    app.post_async(
        json!({"conversationId": "nope", "attributes": {"a": "b"}}),
        &[],
    )
    .await
    .assert_problem(400, "invalid_request");
    let body = agent_update(json!({"a": "b"})).to_string();
    app.post_raw("/v1/attributes", body, &[("prefer", "respond-async")])
        .await
        .assert_problem(401, "unauthorized");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(app.sim.calls().is_empty());
}

#[tokio::test]
async fn transient_failures_are_retried_until_the_job_lands() {
    let app = spawn_app_with(|s| s.genesys.retry.max_attempts = 1).await;
    app.sim.fail_next(Op::PatchAttributes, 503, 2);
    app.sim.rate_limit_next(Op::PatchAttributes, 1, 1);
    let id = job_id(&app.post_async(agent_update(json!({"k": "v"})), &[]).await);
    let job = app.wait_for_job(&id, "succeeded").await;
    assert_eq!(job["attempts"], 4);
    let statuses: Vec<u16> = app
        .sim
        .calls()
        .iter()
        .filter(|c| c.op == "patch_attributes")
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, vec![503, 503, 429, 202]);
}

#[tokio::test]
async fn a_permanent_failure_fails_at_once_with_its_problem() {
    let app = spawn_app().await;
    let id = job_id(
        &app.post_async(json!({"conversationId": SEED_ENDED, "participantId": SEED_ENDED_CUSTOMER, "attributes": {"a": "b"}}), &[])
            .await,
    );
    let job = app.wait_for_job(&id, "failed").await;
    assert_eq!(job["problem"]["code"], "conversation_ended");
    assert_eq!(job["problem"]["status"], 409);
    assert_eq!(job["attempts"], 1);
}

#[tokio::test]
async fn updates_to_one_participant_apply_in_order_under_retries() {
    let app = spawn_app_with(|s| s.genesys.retry.max_attempts = 1).await;
    app.sim.fail_next(Op::PatchAttributes, 500, 3);
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(job_id(
            &app.post_async(agent_update(json!({"n": n})), &[]).await,
        ));
    }
    for id in &ids {
        app.wait_for_job(id, "succeeded").await;
    }
    let seen: Vec<i64> = written_values(&app, "n")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "writes went out of order: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&19));
}

#[tokio::test]
async fn pending_updates_for_one_participant_merge_into_fewer_patches() {
    let app = spawn_app().await;
    // A slow Genesys lets updates pile up behind the one in flight.
    app.sim.set_latency(Duration::from_millis(150));
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(job_id(
            &app.post_async(agent_update(json!({"n": n, format!("k{}", n % 3): n})), &[])
                .await,
        ));
    }
    for id in &ids {
        let job = app.wait_for_job(id, "succeeded").await;
        assert_eq!(job["result"]["verified"], true);
    }
    let patches = app.sim.count("patch_attributes");
    println!("merging: 30 queued updates for one participant took {patches} PATCHes");
    assert!(
        patches < 30 / 2,
        "merging saved too little: {patches} PATCHes for 30 updates"
    );
    let stored = app
        .sim
        .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT)
        .unwrap();
    for (k, v) in [("n", "29"), ("k0", "27"), ("k1", "28"), ("k2", "29")] {
        assert!(
            stored.contains(&(k.into(), v.into())),
            "{k}={v} in {stored:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_duplicates_with_one_idempotency_key_make_one_job_and_one_write() {
    let app = spawn_app().await;
    let body = agent_update(json!({"vip": "true"}));
    let answers = futures::future::join_all(
        (0..12).map(|_| app.post_async(body.clone(), &[("idempotency-key", "evt-42")])),
    )
    .await;
    let ids: std::collections::BTreeSet<String> = answers.iter().map(job_id).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.into_iter().next().unwrap();
    app.wait_for_job(&id, "succeeded").await;
    // A later repeat answers with the same job, now succeeded.
    let again = app
        .post_async(body.clone(), &[("idempotency-key", "evt-42")])
        .await;
    assert_eq!(again.body, json!({"jobId": id, "status": "succeeded"}));
    assert_eq!(app.sim.count("patch_attributes"), 1);
    // The same key with another body is refused.
    app.post_async(
        agent_update(json!({"vip": "false"})),
        &[("idempotency-key", "evt-42")],
    )
    .await
    .assert_problem(422, "idempotency_key_reused");
}

#[tokio::test]
async fn the_synchronous_mode_honours_idempotency_keys_too() {
    let app = spawn_app().await;
    let body = agent_update(json!({"tier": "gold"})).to_string();
    let headers = [("x-api-key", API_KEY), ("idempotency-key", "sf-1001")];
    let first = app.post_raw("/v1/attributes", body.clone(), &headers).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = app.post_raw("/v1/attributes", body.clone(), &headers).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("idempotent-replayed"), "true");
    assert_eq!(app.sim.count("patch_attributes"), 1);
    let other = agent_update(json!({"tier": "silver"})).to_string();
    app.post_raw("/v1/attributes", other, &headers)
        .await
        .assert_problem(422, "idempotency_key_reused");
}

#[tokio::test]
async fn a_synchronous_transient_failure_does_not_pin_its_key() {
    let app = spawn_app_with(|s| s.genesys.retry.max_attempts = 1).await;
    app.sim.fail_next(Op::PatchAttributes, 503, 1);
    let body = agent_update(json!({"tier": "gold"})).to_string();
    let headers = [("x-api-key", API_KEY), ("idempotency-key", "sf-1002")];
    app.post_raw("/v1/attributes", body.clone(), &headers)
        .await
        .assert_problem(502, "upstream_error");
    assert_eq!(
        app.post_raw("/v1/attributes", body, &headers).await.status,
        200
    );
}

#[tokio::test]
async fn a_standard_webhooks_retry_is_answered_from_its_webhook_id() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = spawn_app_with_hooks(&format!(
        "[hooks.sw]\nconversation_id = \"/c\"\n[hooks.sw.attributes]\ntier = \"/t\"\n[hooks.sw.auth]\nscheme = \"standard_webhooks\"\nsecrets = [\"{secret}\"]\n"
    ))
    .await;
    let body = json!({"c": SEED_ACTIVE_CALL, "t": "gold"}).to_string();
    let send = |at: i64| {
        let sig = standardwebhooks::Webhook::new(secret)
            .unwrap()
            .sign("msg_77", at, body.as_bytes())
            .unwrap();
        let (app, body) = (&app, body.clone());
        async move {
            let ts = at.to_string();
            app.post_raw(
                "/v1/hooks/sw",
                body,
                &[
                    ("webhook-id", "msg_77"),
                    ("webhook-timestamp", &ts),
                    ("webhook-signature", &sig),
                ],
            )
            .await
        }
    };
    let first = send(now()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    // The sender retries: same webhook-id, new timestamp and signature. (A timestamp one second
    // ahead is always new; an identical signed delivery would be a replay, and refused as one.)
    let retry = send(now() + 1).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body, first.body);
    assert_eq!(app.sim.count("patch_attributes"), 1);
}

#[tokio::test]
async fn dead_letters_are_listed_for_admins_only_and_replay_applies_them() {
    let app = spawn_app_whose_jobs_die().await;
    let mut ids = Vec::new();
    for (n, (conversation, participant)) in [
        (SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT),
        (SEED_TRANSFER, SEED_TRANSFER_AGENT_NEW),
        (SEED_CHAT, SEED_CHAT_CUSTOMER),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"conversationId": conversation, "participantId": participant, "attributes": {"n": n}});
        ids.push(job_id(&app.post_async(body, &[]).await));
    }
    for id in &ids {
        let job = app.wait_for_job(id, "dead").await;
        assert_eq!(job["problem"]["code"], "upstream_error");
    }
    // Admin endpoints take admin keys only.
    app.get_with("/v1/dead-letters", API_KEY)
        .await
        .assert_problem(401, "unauthorized");
    app.get("/v1/dead-letters")
        .await
        .assert_problem(401, "unauthorized");
    // Paged, in acceptance order.
    let page = app.get_with("/v1/dead-letters?limit=2", ADMIN_KEY).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let listed: Vec<&str> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[0].as_str(), ids[1].as_str()]);
    let next = page.body["next"].as_str().unwrap().to_string();
    let rest = app
        .get_with(&format!("/v1/dead-letters?limit=2&after={next}"), ADMIN_KEY)
        .await;
    assert_eq!(rest.body["items"][0]["jobId"], ids[2].as_str());
    assert!(rest.body.get("next").is_none());

    app.sim.clear_faults();
    let replay = |id: &str, key: &'static str| {
        let url = format!("{}/v1/dead-letters/{id}/replay", app.address);
        let http = app.http.clone();
        async move {
            http.post(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(replay(&ids[0], API_KEY).await, 401);
    assert_eq!(replay(&ids[0], ADMIN_KEY).await, 202);
    assert_eq!(
        replay(&ids[0], ADMIN_KEY).await,
        409,
        "only a dead job can be replayed"
    );
    assert_eq!(replay("no-such-job", ADMIN_KEY).await, 404);
    let job = app.wait_for_job(&ids[0], "succeeded").await;
    assert_eq!(job["result"]["verified"], true);
}

#[tokio::test]
async fn a_replayed_older_update_never_overwrites_a_newer_value() {
    let app = spawn_app_whose_jobs_die().await;
    let old = job_id(
        &app.post_async(agent_update(json!({"tier": "silver", "note": "old"})), &[])
            .await,
    );
    app.wait_for_job(&old, "dead").await;
    app.sim.clear_faults();
    let new = job_id(
        &app.post_async(agent_update(json!({"tier": "gold"})), &[])
            .await,
    );
    app.wait_for_job(&new, "succeeded").await;
    let status = app
        .http
        .post(format!("{}/v1/dead-letters/{old}/replay", app.address))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    app.wait_for_job(&old, "succeeded").await;
    let stored = app
        .sim
        .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT)
        .unwrap();
    // The newer tier stands; the key only the old job carried is written.
    assert!(
        stored.contains(&("tier".into(), "gold".into())),
        "{stored:?}"
    );
    assert!(
        stored.contains(&("note".into(), "old".into())),
        "{stored:?}"
    );
    assert_eq!(written_values(&app, "tier"), vec!["gold"]);
}

#[tokio::test]
async fn shutdown_refuses_new_requests_finishes_those_in_flight_and_ends_in_time() {
    let app = spawn_app_with(|s| s.server.shutdown_timeout_ms = 3000).await;
    app.sim.set_latency(Duration::from_millis(400));
    let in_flight = app.post_attributes(agent_update(json!({"a": "b"})));
    let stop = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        app.begin_shutdown();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = app.post_attributes(agent_update(json!({"c": "d"}))).await;
        app.stopped().await;
        (refused, started.elapsed())
    };
    let (finished, (refused, took)) = tokio::join!(in_flight, stop);
    assert_eq!(finished.status, 200, "{}", finished.body);
    refused.assert_problem(503, "shutting_down");
    assert!(!refused.header("retry-after").is_empty());
    assert!(took < Duration::from_millis(3000), "took {took:?}");
}

#[tokio::test]
async fn a_job_cut_off_by_shutdown_runs_at_the_next_start() {
    let first = spawn_app_with(|s| s.server.shutdown_timeout_ms = 500).await;
    first.sim.set_latency(Duration::from_millis(2000));
    let id = job_id(
        &first
            .post_async(agent_update(json!({"late": "yes"})), &[])
            .await,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    first.begin_shutdown();
    first.stopped().await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    // A new process on the same store and a healthy Genesys finishes it.
    let path = first.queue_path.clone();
    let second = spawn_app_with(move |s| s.queue.path = path).await;
    let job = second.wait_for_job(&id, "succeeded").await;
    assert_eq!(job["result"]["attributes"]["late"], "yes");
}
