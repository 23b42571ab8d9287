//! Lookups: an update addressed by the agent's user id, the caller's number or the external contact
//! finds its live conversation through analytics, confirmed by a read.

use std::time::Duration;

use patchbay::sim::wire::Conversation;
use serde_json::{json, Value};

use crate::helpers::*;

const AGENT_USER: &str = "5b1f7c2e-9d4a-4b8e-a1c3-7e2f0d9b6a41";
const CONTACT: &str = "c0ffee00-1234-4abc-8def-0123456789ab";

fn now_iso(offset_s: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_s))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A live voice call `n` from `ani`, taken by the agent user, with the external contact, started
/// `age_s` seconds ago.
fn call(n: u32, ani: &str, age_s: i64) -> (String, String, String, Conversation) {
    let cid = format!("11111111-0000-4000-8000-{n:012}");
    let customer = format!("22222222-0000-4000-8000-{n:012}");
    let agent = format!("33333333-0000-4000-8000-{n:012}");
    let start = now_iso(-age_s);
    let c = serde_json::from_value(json!({
        "id": cid, "startTime": start,
        "participants": [
            {"id": customer, "purpose": "customer", "startTime": start, "ani": ani,
             "externalContactId": CONTACT, "attributes": {}, "calls": [{"state": "connected"}]},
            {"id": agent, "purpose": "agent", "startTime": start, "userId": AGENT_USER,
             "ani": ani, "attributes": {}, "calls": [{"state": "connected"}]}
        ]
    }))
    .unwrap();
    (cid, customer, agent, c)
}

fn by(lookup: Value) -> Value {
    json!({"lookup": lookup, "attributes": {"crmCase": "00042"}})
}

#[tokio::test(start_paused = true)]
async fn an_update_addressed_by_the_callers_number_is_written_to_the_customer_of_its_call() {
    let app = spawn_app().await;
    let (cid, customer, _, c) = call(1, "tel:+13175550123", 30);
    app.sim.insert_conversation(c);
    let answer = app
        .post_attributes(by(json!({"ani": "+1 (317) 555-0123"})))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversationId"], cid);
    assert_eq!(answer.body["participantId"], customer);
    assert_eq!(answer.body["verified"], true);
}

#[tokio::test(start_paused = true)]
async fn a_number_genesys_holds_as_bare_digits_is_found_from_any_form() {
    let app = spawn_app().await;
    let (cid, _, _, c) = call(2, "13175550124", 30);
    app.sim.insert_conversation(c);
    for ani in ["tel:+13175550124", "13175550124", "+1.317.555.0124"] {
        let answer = app.post_attributes(by(json!({"ani": ani}))).await;
        assert_eq!(answer.body["conversationId"], cid, "{ani}: {}", answer.body);
    }
}

#[tokio::test(start_paused = true)]
async fn an_agents_user_id_finds_the_agent_and_an_external_contact_the_customer() {
    let app = spawn_app().await;
    let (cid, customer, agent, c) = call(3, "+13175550125", 30);
    app.sim.insert_conversation(c);
    let answer = app.post_attributes(by(json!({"userId": AGENT_USER}))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversationId"], cid);
    assert_eq!(answer.body["participantId"], agent);
    let answer = app
        .post_attributes(by(json!({"externalContactId": CONTACT})))
        .await;
    assert_eq!(answer.body["participantId"], customer, "{}", answer.body);
    // A participant id or purpose still chooses the participant.
    let mut body = by(json!({"userId": AGENT_USER}));
    body["purpose"] = json!("customer");
    let answer = app.post_attributes(body).await;
    assert_eq!(answer.body["participantId"], customer, "{}", answer.body);
}

#[tokio::test(start_paused = true)]
async fn what_is_not_a_phone_number_or_not_one_lookup_is_a_400() {
    let app = spawn_app().await;
    for lookup in [
        json!({"ani": "call me maybe"}),
        json!({"ani": "555-0123"}),
        json!({}),
        json!({"ani": "+13175550123", "userId": AGENT_USER}),
        json!({"userId": "not-a-uuid"}),
        json!({"ani": "+13175550123", "mediaType": "pigeon"}),
        json!({"ani": "+13175550123", "pick": "first"}),
    ] {
        app.post_attributes(by(lookup.clone()))
            .await
            .assert_problem(400, "invalid_request");
    }
    let mut both = by(json!({"ani": "+13175550123"}));
    both["conversationId"] = json!(SEED_ACTIVE_CALL);
    app.post_attributes(both)
        .await
        .assert_problem(400, "invalid_request");
    assert_eq!(app.sim.count("analytics_query"), 0);
}

#[tokio::test(start_paused = true)]
async fn no_live_match_is_a_404_that_says_what_was_searched_without_the_whole_number() {
    let app = spawn_app_with(|s| s.lookup.analytics_wait_ms = 300).await;
    let answer = app
        .post_attributes(by(json!({"ani": "+13175550199"})))
        .await;
    answer.assert_problem(404, "conversation_not_found");
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(detail.contains("ani …0199"), "{detail}");
    assert!(!detail.contains("5550199"), "{detail}");
}

#[tokio::test(start_paused = true)]
async fn several_live_matches_are_a_409_listing_them_unless_the_latest_is_asked_for() {
    let app = spawn_app().await;
    let (older, ..) = call(4, "+13175550126", 120);
    let (newer, ..) = call(5, "+13175550126", 10);
    app.sim.insert_conversation(call(4, "+13175550126", 120).3);
    app.sim.insert_conversation(call(5, "+13175550126", 10).3);
    let answer = app
        .post_attributes(by(json!({"ani": "+13175550126"})))
        .await;
    answer.assert_problem(409, "ambiguous_lookup");
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&older) && detail.contains(&newer),
        "{detail}"
    );
    let answer = app
        .post_attributes(by(json!({"ani": "+13175550126", "pick": "latest"})))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversationId"], newer);
}

#[tokio::test(start_paused = true)]
async fn a_call_analytics_does_not_show_yet_is_found_once_it_does() {
    let app = spawn_app_with(|s| {
        s.lookup.analytics_retry_ms = 100;
        s.lookup.analytics_wait_ms = 4000;
    })
    .await;
    app.sim.set_analytics_lag(Duration::from_millis(600));
    let (cid, _, _, c) = call(6, "+13175550127", 1);
    app.sim.insert_conversation(c);
    let answer = app
        .post_attributes(by(json!({"ani": "+13175550127"})))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversationId"], cid);
    assert!(app.sim.count("analytics_query") > 1, "it asked again");
}

#[tokio::test(start_paused = true)]
async fn an_analytics_hit_the_read_shows_is_no_longer_a_match_is_not_written() {
    let app = spawn_app_with(|s| s.lookup.analytics_wait_ms = 200).await;
    // The caller hung up; the agent is still on the call, so analytics still lists it.
    let (cid, _, _, mut c) = call(7, "+13175550128", 60);
    c.participants[0].end_time = Some(now_iso(0));
    c.participants[0]
        .communications
        .insert("calls".into(), json!([{"state": "disconnected"}]));
    app.sim.insert_conversation(c);
    app.post_attributes(by(json!({"ani": "+13175550128"})))
        .await
        .assert_problem(404, "conversation_not_found");
    assert!(app.sim.count("get_conversation") >= 1, "the hit was read");
    assert!(app.sim.writes().iter().all(|w| w.conversation != cid));
}

#[tokio::test(start_paused = true)]
async fn a_found_call_is_remembered_until_it_ends() {
    let app = spawn_app_with(|s| s.lookup.analytics_wait_ms = 200).await;
    let (first, _, _, c) = call(8, "+13175550129", 60);
    app.sim.insert_conversation(c);
    for _ in 0..3 {
        let answer = app
            .post_attributes(by(json!({"ani": "+13175550129"})))
            .await;
        assert_eq!(answer.body["conversationId"], first, "{}", answer.body);
    }
    assert_eq!(
        app.sim.count("analytics_query"),
        1,
        "one query for the burst"
    );
    // The caller hangs up and calls again: the ended call drops out.
    app.sim.end_conversation(&first);
    let (second, _, _, c) = call(9, "+13175550129", 1);
    app.sim.insert_conversation(c);
    let answer = app
        .post_attributes(by(json!({"ani": "+13175550129"})))
        .await;
    assert_eq!(answer.body["conversationId"], second, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_number_share_one_query_and_its_confirmation() {
    // The cache is off, so only the flight can spare the later lookups their query.
    let app = spawn_app_with(|s| s.lookup.cache_ms = 0).await;
    let (cid, customer, _, c) = call(12, "+13175550142", 30);
    app.sim.insert_conversation(c);
    // Slow enough that all four are in flight before the first query is answered.
    app.sim.set_latency(Duration::from_millis(100));
    let answers = futures::future::join_all((0..4).map(|n| {
        app.post_attributes(
            json!({"lookup": {"ani": "+13175550142"}, "attributes": {format!("crm{n}"): n}}),
        )
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["conversationId"], cid);
        assert_eq!(answer.body["participantId"], customer);
        assert_eq!(answer.body["verified"], true);
    }
    assert_eq!(
        app.sim.count("analytics_query"),
        1,
        "one query for the four"
    );
    let metrics = app.get("/metrics").await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains(r#"patchbay_lookups_total{kind="ani",outcome="shared"} 3"#),
        "{text}"
    );
    // Once answered, the next lookup starts a flight of its own.
    app.sim.set_latency(Duration::ZERO);
    let later = app
        .post_attributes(by(json!({"ani": "+13175550142"})))
        .await;
    assert_eq!(later.body["conversationId"], cid, "{}", later.body);
    assert_eq!(app.sim.count("analytics_query"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_redis_share_what_a_lookup_found_and_what_ended() {
    let (sim, apps) =
        crate::redis_deployment::replicas(3, |s| s.lookup.analytics_wait_ms = 200).await;
    let (first, _, _, c) = call(20, "+13175550140", 60);
    sim.insert_conversation(c);
    // A CRM's burst for one record, spread over the replicas by the load balancer.
    for app in apps.iter().chain(&apps) {
        let answer = app
            .post_attributes(by(json!({"ani": "+13175550140"})))
            .await;
        assert_eq!(answer.body["conversationId"], first, "{}", answer.body);
    }
    assert_eq!(
        sim.count("analytics_query"),
        1,
        "one query for the deployment"
    );
    // The caller hangs up and calls again. One replica finds the new call; the others, whose own
    // copy is stale, take the new one from Redis instead of searching again.
    sim.end_conversation(&first);
    let (second, _, _, c) = call(21, "+13175550140", 1);
    sim.insert_conversation(c);
    for app in &apps {
        let answer = app
            .post_attributes(by(json!({"ani": "+13175550140"})))
            .await;
        assert_eq!(answer.body["conversationId"], second, "{}", answer.body);
    }
    assert_eq!(
        sim.count("analytics_query"),
        2,
        "one more query for the new call"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lookups_calls_count_against_the_genesys_budget() {
    // The query, its confirming read, the PATCH and the read back: 4 calls, the whole budget.
    let app = spawn_app_with(|s| s.genesys.rate_per_minute = 4).await;
    let (_, _, _, c) = call(10, "+13175550130", 60);
    app.sim.insert_conversation(c);
    let answer = app
        .post_attributes(by(json!({"ani": "+13175550130"})))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        app.sim.count("analytics_query")
            + app.sim.count("get_conversation")
            + app.sim.count("patch_attributes"),
        4
    );
    let answer = app
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"a": 1}}))
        .await;
    answer.assert_problem(429, "rate_limited");
}

#[tokio::test(start_paused = true)]
async fn a_webhook_route_finds_the_call_from_the_number_in_its_event() {
    let app = spawn_app_with_hooks(
        "[hooks.crm]\n[hooks.crm.lookup]\nani = \"/contact/phone\"\n[hooks.crm.attributes]\nvip = \"/contact/vip\"",
    )
    .await;
    let (cid, customer, _, c) = call(11, "tel:+13175550131", 30);
    app.sim.insert_conversation(c);
    let event = json!({"contact": {"phone": "+1 (317) 555-0131", "vip": true}});
    let answer = app
        .post_raw(
            "/v1/hooks/crm",
            event.to_string(),
            &[("x-api-key", API_KEY)],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversationId"], cid);
    assert_eq!(answer.body["participantId"], customer);
    let bad = json!({"contact": {"phone": "unknown", "vip": true}});
    app.post_raw("/v1/hooks/crm", bad.to_string(), &[("x-api-key", API_KEY)])
        .await
        .assert_problem(400, "invalid_request");
}

#[tokio::test(start_paused = true)]
async fn a_lookup_searches_voice_calls_unless_it_names_another_media_type() {
    let app = spawn_app_with(|s| s.lookup.analytics_wait_ms = 200).await;
    let (cid, _, _, c) = call(12, "+13175550132", 30);
    app.sim.insert_conversation(c);
    app.post_attributes(by(json!({"ani": "+13175550132", "mediaType": "message"})))
        .await
        .assert_problem(404, "conversation_not_found");
    let answer = app
        .post_attributes(by(json!({"ani": "+13175550132", "mediaType": "voice"})))
        .await;
    assert_eq!(answer.body["conversationId"], cid, "{}", answer.body);
}

/// The value of `patchbay_lookups_total` for `kind` and `outcome` (0 before the first).
fn lookups(text: &str, kind: &str, outcome: &str) -> f64 {
    let (kind, outcome) = (format!("kind=\"{kind}\""), format!("outcome=\"{outcome}\""));
    text.lines()
        .filter(|l| l.starts_with("patchbay_lookups_total{"))
        .find(|l| l.contains(&kind) && l.contains(&outcome))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(start_paused = true)]
async fn metrics_count_lookups_by_kind_and_how_they_ended() {
    let app = spawn_app_with(|s| s.lookup.analytics_wait_ms = 200).await;
    let (_, _, _, c) = call(30, "+13175550150", 60);
    app.sim.insert_conversation(c);
    let before = app.get("/metrics").await.body.as_str().unwrap().to_string();
    for number in ["+13175550150", "+13175550150", "+13175550151"] {
        app.post_attributes(by(json!({"ani": number}))).await;
    }
    let after = app.get("/metrics").await.body.as_str().unwrap().to_string();
    // The recorder is the process's, shared with tests running alongside: figures only grow past ours.
    for (outcome, ours) in [("found", 1.0), ("cached", 1.0), ("not_found", 1.0)] {
        assert!(
            lookups(&after, "ani", outcome) >= lookups(&before, "ani", outcome) + ours,
            "{outcome}: {after}"
        );
    }
}

fn update_by_id() -> Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"byId": "yes"}})
}

#[tokio::test(start_paused = true)]
async fn lookups_past_analytics_own_limit_are_refused_at_once_and_updates_by_id_go_on() {
    // Analytics allows this token 2 queries a minute; the token itself has plenty.
    let server = patchbay::sim::Simulator::new();
    let sim = server.control();
    sim.set_analytics_rate_limit(Some(2));
    let app = spawn_app_on(server.clone(), |s| s.lookup.analytics_wait_ms = 200).await;
    for (n, number) in [
        (40, "+13175550160"),
        (41, "+13175550161"),
        (42, "+13175550162"),
    ] {
        let (_, _, _, c) = call(n, number, 60);
        sim.insert_conversation(c);
    }
    for number in ["+13175550160", "+13175550161"] {
        let answer = app.post_attributes(by(json!({"ani": number}))).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // Analytics reported its limit spent: the third lookup is refused without asking again.
    let refused = app
        .post_attributes(by(json!({"ani": "+13175550162"})))
        .await;
    refused.assert_problem(429, "rate_limited");
    let wait: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        sim.count("analytics_query"),
        2,
        "Genesys never had to refuse"
    );
    // Analytics' limit is not the token's: an update that names its conversation is served.
    let answer = app.post_attributes(update_by_id()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["verified"], true);
}

#[tokio::test(start_paused = true)]
async fn a_429_from_analytics_is_answered_at_once_and_pauses_only_lookups() {
    let server = patchbay::sim::Simulator::new();
    let sim = server.control();
    sim.rate_limit_next(patchbay::sim::Op::AnalyticsQuery, 7, 1);
    let app = spawn_app_on(server.clone(), |s| s.lookup.analytics_wait_ms = 200).await;
    let (_, _, _, c) = call(43, "+13175550163", 60);
    sim.insert_conversation(c);
    let started = std::time::Instant::now();
    let refused = app
        .post_attributes(by(json!({"ani": "+13175550163"})))
        .await;
    refused.assert_problem(429, "rate_limited");
    assert_eq!(refused.header("retry-after"), "7");
    // Not after waiting out Genesys's 7 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Lookups wait out the pause without asking Genesys again; updates by id do not wait at all.
    let again = app
        .post_attributes(by(json!({"ani": "+13175550163"})))
        .await;
    again.assert_problem(429, "rate_limited");
    assert_eq!(sim.count("analytics_query"), 1);
    let answer = app.post_attributes(update_by_id()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(start_paused = true)]
async fn a_query_answer_that_reports_the_tokens_window_spent_holds_back_every_call() {
    // The token's limit is 10 a minute, as the gateway's budget says; no limit of the query's own.
    let server = patchbay::sim::Simulator::new();
    let sim = server.control();
    sim.set_rate_limit(Some(10));
    let app = spawn_app_on(server.clone(), |s| {
        s.genesys.rate_per_minute = 10;
        s.verify.enabled = false;
    })
    .await;
    let (_, _, _, c) = call(44, "+13175550164", 60);
    sim.insert_conversation(c);
    assert_eq!(app.post_attributes(update_by_id()).await.status, 200);
    // Someone else spends 8 calls of the same token: the query is the tenth.
    let token = sim.issued_tokens().pop().unwrap();
    for _ in 0..8 {
        let r = reqwest::Client::new()
            .get(format!(
                "{}/api/v2/conversations/{SEED_ACTIVE_CALL}",
                app.sim_url
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The query's answer reports the token's window spent: the lookup's read is not sent, and
    // neither is the next update's PATCH.
    app.post_attributes(by(json!({"ani": "+13175550164"})))
        .await
        .assert_problem(429, "rate_limited");
    app.post_attributes(update_by_id())
        .await
        .assert_problem(429, "rate_limited");
    assert!(
        sim.calls().iter().all(|c| c.status != 429),
        "Genesys never had to answer 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_redis_share_analytics_own_limit() {
    let (sim, apps) =
        crate::redis_deployment::replicas(2, |s| s.lookup.analytics_wait_ms = 200).await;
    sim.set_analytics_rate_limit(Some(1));
    for (n, number) in [(45, "+13175550165"), (46, "+13175550166")] {
        let (_, _, _, c) = call(n, number, 60);
        sim.insert_conversation(c);
    }
    let answer = apps[0]
        .post_attributes(by(json!({"ani": "+13175550165"})))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The other replica knows analytics' limit is spent without asking Genesys.
    apps[1]
        .post_attributes(by(json!({"ani": "+13175550166"})))
        .await
        .assert_problem(429, "rate_limited");
    assert_eq!(sim.count("analytics_query"), 1);
    assert!(
        sim.calls().iter().all(|c| c.status != 429),
        "Genesys never had to answer 429"
    );
}
