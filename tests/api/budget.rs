//! The Genesys budget as a caller meets it: the simulator limits each token as Genesys does, the
//! gateway follows what Genesys reports, and an update the budget cannot serve in time is refused at
//! once, or queued when the caller opted into that.

use std::time::{Duration, Instant};

use patchbay::sim::Simulator;
use serde_json::json;

use crate::helpers::*;

fn agent_update(n: usize) -> serde_json::Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"n": n}})
}

/// GETs the seeded live call with `token`.
async fn get_call(url: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{url}/api/v2/conversations/{SEED_ACTIVE_CALL}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn the_simulator_limits_each_token_and_reports_where_it_stands_on_every_answer() {
    let server = Simulator::new();
    let sim = server.control();
    sim.set_rate_limit(Some(3));
    let url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let token = sim_token(&url).await;
    for n in 1..=3 {
        let r = get_call(&url, &token).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "inin-ratelimit-count"), n.to_string());
        assert_eq!(header(&r, "inin-ratelimit-allowed"), "3");
        let reset: u64 = header(&r, "inin-ratelimit-reset").parse().unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    let refused = get_call(&url, &token).await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(header(&refused, "inin-ratelimit-count"), "4");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "too.many.requests");
    assert_eq!(body["status"], 429);
    // Another token has a window of its own.
    let other = self::sim_token(&url).await;
    assert_eq!(get_call(&url, &other).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_follows_what_genesys_reports_and_genesys_never_has_to_refuse() {
    // Genesys allows 10 calls a minute; the gateway believes its default of 280.
    let server = Simulator::new();
    let sim = server.control();
    sim.set_rate_limit(Some(10));
    let app = spawn_app_on(server.clone(), |s| {
        s.genesys.rate_per_minute = 280;
        s.verify.enabled = false;
    })
    .await;
    assert_eq!(app.post_attributes(agent_update(0)).await.status, 200);
    // Someone else spends 6 calls of the same token.
    let token = sim.issued_tokens().pop().unwrap();
    for _ in 0..6 {
        assert_eq!(get_call(&app.sim_url, &token).await.status(), 200);
    }
    // The gateway learns of them from the next answer's headers and stops at Genesys's limit itself.
    let answers: Vec<u16> = {
        let mut statuses = Vec::new();
        for n in 1..=5 {
            statuses.push(app.post_attributes(agent_update(n)).await.status);
        }
        statuses
    };
    assert_eq!(
        answers,
        [200, 200, 200, 429, 429],
        "10 calls in all: 1 + 6 + 3"
    );
    assert!(
        sim.calls().iter().all(|c| c.status != 429),
        "Genesys never had to answer 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_the_budget_cannot_serve_in_time_is_refused_at_once_or_queued_when_asked() {
    let app = spawn_app_with(|s| s.genesys.rate_per_minute = 3).await;
    // Write and read back: 2 of the 3 calls.
    assert_eq!(app.post_attributes(agent_update(1)).await.status, 200);

    let started = Instant::now();
    let refused = app.post_attributes(agent_update(2)).await;
    refused.assert_problem(429, "rate_limited");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(refused.header("retry-after").parse::<u64>().unwrap() >= 50);
    // The refused update spent nothing of the one call left.
    assert_eq!(app.sim.count("patch_attributes"), 1);

    let queued = app
        .post_raw(
            "/v1/attributes",
            agent_update(3).to_string(),
            &[("x-api-key", API_KEY), ("prefer", "async-fallback")],
        )
        .await;
    assert_eq!(queued.status, 202, "{}", queued.body);
    let job = queued.body["jobId"].as_str().unwrap();
    let status = app.get_with(&format!("/v1/jobs/{job}"), API_KEY).await;
    assert_eq!(status.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_admitted_for_every_target_it_writes_or_refused_with_none_written() {
    let app = spawn_app_with(|s| s.genesys.rate_per_minute = 4).await;
    assert_eq!(app.post_attributes(agent_update(1)).await.status, 200);
    // Two calls are left: the participant's write and read alone would fit, not with a secure
    // write and its read beside them.
    let mut both = agent_update(2);
    both["secureAttributes"] = json!({"dob": "1970-07-04"});
    app.post_attributes(both)
        .await
        .assert_problem(429, "rate_limited");
    assert_eq!(
        app.sim.count("patch_secure_attributes"),
        0,
        "nothing was written"
    );
    assert_eq!(app.sim.count("patch_attributes"), 1);
    // What does fit is served.
    let secure_only =
        json!({"conversationId": SEED_ACTIVE_CALL, "secureAttributes": {"dob": "1970-07-04"}});
    let served = app.post_attributes(secure_only).await;
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(served.body["secureVerified"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_record_nothing_is_known_of_is_admitted_for_its_first_read_too() {
    let app = spawn_app_with(|s| s.genesys.rate_per_minute = 6).await;
    assert_eq!(app.post_attributes(agent_update(1)).await.status, 200);
    // The schema's read leaves three calls: the record's read and write (whose answer shows it)
    // fit; the participant's two besides them do not.
    let mut both = agent_update(2);
    both["customSchema"] = json!(patchbay::sim::SEED_SCHEMA_NAME);
    both["customAttributes"] = json!({"caseNumber": "C-1"});
    app.post_attributes(both)
        .await
        .assert_problem(429, "rate_limited");
    assert_eq!(
        app.sim.count("get_custom_attributes"),
        0,
        "nothing was read"
    );
    assert_eq!(
        app.sim.count("put_custom_attributes_bulk"),
        0,
        "nothing was written"
    );
    assert_eq!(app.sim.count("patch_attributes"), 1);
    let custom_only = json!({
        "conversationId": SEED_ACTIVE_CALL,
        "customSchema": patchbay::sim::SEED_SCHEMA_NAME,
        "customAttributes": {"caseNumber": "C-1"}
    });
    let served = app.post_attributes(custom_only).await;
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(served.body["customVerified"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_may_fall_back_to_asynchronous_delivery_when_the_budget_is_short() {
    let app = spawn_app_with(|s| {
        s.genesys.rate_per_minute = 3;
        s.hooks = hooks_from_toml(
            r#"
[hooks.crm]
conversation_id = "/c"
participant_id = "/p"
mode = "sync_or_async"
[hooks.crm.attributes]
n = "/n"
"#,
        );
    })
    .await;
    let event =
        |n: u32| json!({"c": SEED_ACTIVE_CALL, "p": SEED_ACTIVE_CALL_AGENT, "n": n}).to_string();
    let first = app
        .post_raw("/v1/hooks/crm", event(1), &[("x-api-key", API_KEY)])
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["verified"], true);
    let second = app
        .post_raw("/v1/hooks/crm", event(2), &[("x-api-key", API_KEY)])
        .await;
    assert_eq!(second.status, 202, "{}", second.body);
}

#[tokio::test(start_paused = true)]
async fn a_genesys_call_reports_what_it_spent_and_waits_for_the_budget_only_until_its_deadline() {
    use patchbay::genesys::{CallContext, GenesysClient, GenesysError};
    use patchbay::store::budget::{local::LocalBudget, Budget};
    use patchbay::store::token::local::LocalToken;
    use std::sync::Arc;
    let app = spawn_app().await;
    let settings = patchbay::demo::settings_for_simulator(&app.sim_url, API_KEY).genesys;
    let budget = LocalBudget::new(Budget { per_minute: 3 });
    let client = GenesysClient::new(&settings, Arc::new(budget), Arc::new(LocalToken)).unwrap();
    let cid = SEED_ACTIVE_CALL.parse().unwrap();
    let mut cx = CallContext::until(tokio::time::Instant::now() + Duration::from_secs(5));
    for _ in 0..3 {
        client.get_conversation(&mut cx, &cid).await.unwrap();
    }
    assert_eq!(cx.calls(), 3, "every call sent is counted");
    assert!(cx.correlation_id().is_some_and(|id| !id.is_empty()));
    // The window is spent: a call given half a second is refused at once, never held for a
    // default wait it was not given.
    let started = Instant::now();
    let mut short = CallContext::until(tokio::time::Instant::now() + Duration::from_millis(500));
    let refused = client.get_conversation(&mut short, &cid).await;
    assert!(
        matches!(
            refused,
            Err(GenesysError::RateLimited {
                retry_after: Some(_),
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(short.calls(), 0, "nothing was sent");
    assert_eq!(app.sim.count("get_conversation"), 3);
}
