//! Several gateways on one Redis act as one service: one token, one rate budget, one queue; and a
//! Redis that goes away degrades them without losing anything.

use std::time::{Duration, Instant};

use patchbay::sim::{Op, Simulator};
use serde_json::json;

use crate::helpers::*;

fn agent_update(n: usize) -> serde_json::Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"n": n}})
}

/// `count` gateways on one Redis prefix, in front of one simulator.
async fn replicas(
    count: usize,
    adjust: impl Fn(&mut patchbay::Settings) + Clone,
) -> (Simulator, Vec<TestApp>) {
    let url = test_redis_url().await;
    let prefix = unique_prefix();
    let sim = Simulator::new();
    let mut apps = Vec::new();
    for _ in 0..count {
        let (url, prefix, adjust) = (url.clone(), prefix.clone(), adjust.clone());
        apps.push(
            spawn_app_on(sim.clone(), move |s| {
                on_redis(s, &url, &prefix);
                adjust(s);
            })
            .await,
        );
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
async fn the_rate_budget_holds_across_replicas() {
    // 120 a minute with a burst of 4: at most 4 + 2 calls in any second, whichever replica makes them.
    let (sim, apps) = replicas(3, |s| {
        s.genesys.rate_per_minute = 124;
        s.genesys.rate_burst = 4;
        s.verify.enabled = false;
        s.server.request_timeout_ms = 30_000;
    })
    .await;
    let started = Instant::now();
    let answers =
        futures::future::join_all((0..14).map(|n| apps[n % 3].post_attributes(agent_update(n))))
            .await;
    assert!(answers.iter().all(|a| a.status == 200));
    // 14 calls: 4 at once, then one every 500 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(4500),
        "took only {:?}",
        started.elapsed()
    );
    let times = sim.call_times("patch_attributes");
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(in_window <= 6, "{in_window} calls within one second");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_get_a_slot_in_time_is_rate_limited_with_retry_after() {
    let (_sim, apps) = replicas(2, |s| {
        s.genesys.rate_per_minute = 3;
        s.genesys.rate_burst = 1;
        s.verify.enabled = false;
        s.server.request_timeout_ms = 1000;
        s.verify.timeout_ms = 500;
    })
    .await;
    assert_eq!(apps[0].post_attributes(agent_update(1)).await.status, 200);
    let refused = apps[1].post_attributes(agent_update(2)).await;
    refused.assert_problem(429, "rate_limited");
    let wait: u64 = refused.header("retry-after").parse().unwrap();
    assert!((10..=31).contains(&wait), "Retry-After {wait}");
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
async fn without_redis_synchronous_requests_still_work_and_asynchronous_intake_refuses() {
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
    let refused = app.post_async(agent_update(2), &[]).await;
    refused.assert_problem(503, "queue_unavailable");
    assert!(!refused.header("retry-after").is_empty());
}
