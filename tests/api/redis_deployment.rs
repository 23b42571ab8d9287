//! Several gateways on one Redis act as one service: one token, one rate budget, one queue; and a
//! Redis that goes away degrades them without losing anything.

use std::time::{Duration, Instant};

use patchbay::sim::{Control, Op, Simulator};
use serde_json::json;

use crate::helpers::*;

fn agent_update(n: usize) -> serde_json::Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"n": n}})
}

/// `count` gateways on one Redis prefix, in front of one simulator.
pub(crate) async fn replicas(
    count: usize,
    adjust: impl Fn(&mut patchbay::Settings) + Clone,
) -> (Control, Vec<TestApp>) {
    let prefix = std::sync::Arc::new(RedisPrefix::new().await);
    let server = Simulator::new();
    let sim = server.control();
    let mut apps = Vec::new();
    for _ in 0..count {
        let (url, name, adjust) = (prefix.url.clone(), prefix.name.clone(), adjust.clone());
        let mut app = spawn_app_on(server.clone(), move |s| {
            on_redis(s, &url, &name);
            adjust(s);
        })
        .await;
        // The last replica dropped takes the prefix's keys with it.
        app.redis = Some(prefix.clone());
        apps.push(app);
    }
    (sim, apps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_token_and_renew_it_once_after_a_401() {
    let (sim, apps) = replicas(3, |_| {}).await;
    sim.set_latency(Duration::from_millis(50));
    let answers =
        futures::future::join_all((0..30).map(|n| apps[n % 3].post_attributes(agent_update(n))))
            .await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(sim.grants(), 1, "one grant for the whole deployment");

    sim.revoke_tokens();
    let answers =
        futures::future::join_all((0..30).map(|n| apps[n % 3].post_attributes(agent_update(n))))
            .await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(
        sim.grants(),
        2,
        "a 401 renews the token once, not once per replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_budget_holds_across_replicas_and_refuses_the_rest_at_once() {
    // 12 calls a minute for the deployment; each update by participant id, unverified, is one call.
    let (sim, apps) = replicas(3, |s| {
        s.genesys.rate_per_minute = 12;
        s.verify.enabled = false;
    })
    .await;
    // 18 different calls, so that no two updates share a PATCH.
    let calls = sim.add_live_calls(18);
    let answers = futures::future::join_all(calls.iter().enumerate().map(|(n, call)| {
        let app = &apps[n % 3];
        async move {
            let started = Instant::now();
            let update = json!({"conversationId": call.conversation, "participantId": call.agent,
                                "attributes": {"n": n}});
            let answer = app.post_attributes(update).await;
            (answer, started.elapsed())
        }
    }))
    .await;
    let served = answers.iter().filter(|(a, _)| a.status == 200).count();
    assert_eq!(served, 12, "the budget's 12 calls serve 12 updates");
    assert_eq!(sim.count("patch_attributes"), 12);
    for (refused, took) in answers.iter().filter(|(a, _)| a.status != 200) {
        refused.assert_problem(429, "rate_limited");
        let wait: u64 = refused.header("retry-after").parse().unwrap();
        assert!((50..=61).contains(&wait), "Retry-After {wait}");
        // The deadline is 10 s: a refusal that waited for it would not be "at once".
        assert!(*took < Duration::from_secs(5), "refused after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_whose_calls_do_not_all_fit_is_refused_whole() {
    let (sim, apps) = replicas(2, |s| s.genesys.rate_per_minute = 3).await;
    // Write and read back: 2 of the 3 calls.
    assert_eq!(apps[0].post_attributes(agent_update(1)).await.status, 200);
    let refused = apps[1].post_attributes(agent_update(2)).await;
    refused.assert_problem(429, "rate_limited");
    let wait: u64 = refused.header("retry-after").parse().unwrap();
    assert!((50..=61).contains(&wait), "Retry-After {wait}");
    // The one call left was not spent on a write that could not be verified.
    assert_eq!(sim.count("patch_attributes"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_slows_every_replica_down() {
    let (sim, apps) = replicas(2, |s| {
        s.genesys.retry.max_attempts = 1;
        s.verify.enabled = false;
    })
    .await;
    sim.rate_limit_next(Op::PatchAttributes, 2, 1);
    apps[0]
        .post_attributes(agent_update(1))
        .await
        .assert_problem(429, "rate_limited");
    let started = Instant::now();
    assert_eq!(apps[1].post_attributes(agent_update(2)).await.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the other replica did not wait: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn without_redis_synchronous_requests_still_work_custom_records_too_and_asynchronous_intake_refuses(
) {
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(|s| {
        on_redis(s, &format!("redis://127.0.0.1:{port}"), &unique_prefix());
        s.redis.timeout_ms = 200;
    })
    .await;
    let answer = app.post_attributes(agent_update(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["verified"], true);
    // A custom record too: with nothing known of it and no claim to be had, it is read first.
    let custom = app
        .post_attributes(json!({
            "conversationId": SEED_ACTIVE_CALL,
            "customSchema": patchbay::sim::SEED_SCHEMA_NAME,
            "customAttributes": {"caseNumber": "C-99"}
        }))
        .await;
    assert_eq!(custom.body["customVerified"], true, "{}", custom.body);
    assert_eq!(
        crate::custom::record_calls(&app.sim),
        ["get_custom_attributes", "put_custom_attributes_bulk"]
    );
    let refused = app.post_async(agent_update(2), &[]).await;
    refused.assert_problem(503, "queue_unavailable");
    assert!(!refused.header("retry-after").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_leaves_no_redis_key_behind_when_it_ends() {
    let (_sim, apps) = replicas(2, |_| {}).await;
    let prefix = apps[0].redis.clone().expect("replicas share a prefix");
    let (url, name) = (prefix.url.clone(), prefix.name.clone());
    // A synchronous update and a job: the budget's log, the token, the queue and its indexes.
    assert_eq!(
        apps[0]
            .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "1"}}))
            .await
            .status,
        200
    );
    let accepted = apps[1]
        .post_async(
            json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "2"}}),
            &[],
        )
        .await;
    apps[1]
        .wait_for_job(accepted.body["jobId"].as_str().unwrap(), "succeeded")
        .await;
    assert!(
        !keys_under(&url, &name).is_empty(),
        "the gateways wrote nothing"
    );
    drop(prefix);
    drop(apps);
    assert_eq!(keys_under(&url, &name), Vec::<String>::new());

    // And when a test fails: the unwinding drops the prefix, which sweeps its keys.
    let failing = RedisPrefix::new().await;
    let (url, name) = (failing.url.clone(), failing.name.clone());
    let key = format!("{{{name}}}:left-behind");
    let failed = tokio::spawn({
        let (url, name, key) = (url.clone(), name.clone(), key.clone());
        async move {
            let _prefix = failing;
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg("x")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(keys_under(&url, &name), vec![key]);
            panic!("a failing test");
        }
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    assert_eq!(keys_under(&url, &name), Vec::<String>::new());
}
