//! The live mirror: with Genesys's notifications feeding it, an update is found, resolved and
//! verified with one Genesys call, the PATCH; whenever the feed cannot vouch for a call, the update
//! takes the REST path and is still answered truthfully.

use std::time::Duration;

use patchbay::mirror::Trust;
use patchbay::sim::wire::Conversation;
use patchbay::Settings;
use serde_json::{json, Value};

use crate::helpers::*;

/// The mirror on, with test-speed timings: a write waits 400 ms for its event before a read.
pub fn with_mirror(s: &mut Settings) {
    s.mirror.enabled = true;
    s.mirror.confirm_ms = 400;
    s.mirror.liveness_ms = 1500;
    s.mirror.reconnect_max_ms = 200;
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < give_up, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn mirror(app: &TestApp) -> &patchbay::mirror::Mirror {
    app.mirror.as_ref().expect("the mirror is on")
}

/// A gateway with the mirror on, once its feed is live.
async fn mirrored_app(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(|s| {
        with_mirror(s);
        adjust(s);
    })
    .await;
    eventually("the mirror's feed is live", || mirror(&app).is_live()).await;
    app
}

/// Live call `n` from `ani`, as the simulator's queue publishes it when it starts.
fn call(n: u32, ani: &str) -> (String, String, String, Conversation) {
    let cid = format!("44444444-0000-4000-8000-{n:012}");
    let customer = format!("55555555-0000-4000-8000-{n:012}");
    let agent = format!("66666666-0000-4000-8000-{n:012}");
    let start = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let c = serde_json::from_value(json!({
        "id": cid, "startTime": start,
        "participants": [
            {"id": customer, "purpose": "customer", "startTime": start, "ani": ani,
             "attributes": {}, "calls": [{"state": "connected"}]},
            {"id": agent, "purpose": "agent", "startTime": start,
             "userId": "5b1f7c2e-9d4a-4b8e-a1c3-7e2f0d9b6a41", "attributes": {},
             "calls": [{"state": "connected"}]}
        ]
    }))
    .unwrap();
    (cid, customer, agent, c)
}

/// Starts call `n` and waits until the mirror holds it, trusted.
async fn start_call(app: &TestApp, n: u32, ani: &str) -> (String, String, String) {
    let (cid, customer, agent, c) = call(n, ani);
    app.sim.insert_conversation(c);
    eventually("the mirror holds the new call", || {
        mirror(app)
            .get(&cid)
            .is_some_and(|s| s.trust == Trust::Trusted)
    })
    .await;
    (cid, customer, agent)
}

/// Genesys calls the gateway made, by kind, since `before`.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Calls {
    patches: usize,
    reads: usize,
    queries: usize,
}

/// What an update the mirror serves costs: the PATCH, and nothing else.
const ONLY_THE_PATCH: Calls = Calls {
    patches: 1,
    reads: 0,
    queries: 0,
};

fn calls(app: &TestApp) -> Calls {
    Calls {
        patches: app.sim.count("patch_attributes"),
        reads: app.sim.count("get_conversation"),
        queries: app.sim.count("analytics_query"),
    }
}

fn since(app: &TestApp, before: Calls) -> Calls {
    let now = calls(app);
    Calls {
        patches: now.patches - before.patches,
        reads: now.reads - before.reads,
        queries: now.queries - before.queries,
    }
}

fn by_number(ani: &str, value: &str) -> Value {
    json!({"lookup": {"ani": ani}, "attributes": {"vip": value}})
}

#[tokio::test(start_paused = true)]
async fn a_screen_pop_by_the_callers_number_costs_one_call_the_patch() {
    let app = mirrored_app(|_| {}).await;
    let (cid, customer, _) = start_call(&app, 1, "tel:+13175550101").await;
    let before = calls(&app);
    let answer = app
        .post_attributes(by_number("+1 317 555 0101", "true"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversationId"], cid);
    assert_eq!(answer.body["participantId"], customer);
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["foundBy"], "mirror");
    assert_eq!(answer.body["verifiedBy"], "queueEvent");
    assert_eq!(since(&app, before), ONLY_THE_PATCH);
    // Operators see what the mirror served, and its state.
    let metrics = app.get("/metrics").await.body;
    let metrics = metrics.as_str().expect("Prometheus text");
    for name in [
        r#"patchbay_mirror_served_total{what="lookup",by="mirror"}"#,
        r#"patchbay_mirror_confirmations_total{source="queue_event"}"#,
        "patchbay_mirror_live",
        "patchbay_mirror_conversations",
        "patchbay_mirror_channels",
        "patchbay_mirror_topics",
        "patchbay_mirror_seconds_since_last_frame",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(start_paused = true)]
async fn a_participant_addressed_by_purpose_is_found_in_the_mirror_without_a_read() {
    let app = mirrored_app(|_| {}).await;
    let (cid, _, agent) = start_call(&app, 2, "tel:+13175550102").await;
    let before = calls(&app);
    let answer = app
        .post_attributes(
            json!({"conversationId": cid, "purpose": "agent", "attributes": {"script": "vip"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["participantId"], agent);
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["foundBy"], "conversationId");
    assert_eq!(answer.body["verifiedBy"], "queueEvent");
    assert_eq!(since(&app, before).reads, 0);
    assert_eq!(since(&app, before).patches, 1);
}

#[tokio::test(start_paused = true)]
async fn after_a_gap_a_lookup_takes_analytics_and_a_call_of_the_gap_is_found_there() {
    let app = mirrored_app(|_| {}).await;
    start_call(&app, 3, "tel:+13175550103").await;
    // The socket drops; the call's snapshot is from before the gap, and the next call's start
    // event is lost in it.
    app.sim.drop_sockets();
    eventually("the gap is seen", || mirror(&app).status().gaps >= 1).await;
    app.sim.lose_events(1);
    let (late, _, _, c) = call(4, "tel:+13175550104");
    app.sim.insert_conversation(c);
    for (number, expected) in [("+13175550103", None), ("+13175550104", Some(&late))] {
        let before = calls(&app);
        let answer = app.post_attributes(by_number(number, "true")).await;
        assert_eq!(answer.status, 200, "{number}: {}", answer.body);
        assert_eq!(answer.body["foundBy"], "analytics", "{number}");
        assert_eq!(answer.body["verified"], true, "{number}");
        if let Some(late) = expected {
            assert_eq!(answer.body["conversationId"], late.as_str());
        }
        assert_eq!(since(&app, before).queries, 1, "{number}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_is_verified_by_the_detail_event_when_no_queue_event_comes() {
    let app = mirrored_app(|_| {}).await;
    app.sim.set_write_events(false);
    let (cid, customer, _) = start_call(&app, 5, "tel:+13175550105").await;
    let body = |n: usize| json!({"conversationId": cid, "participantId": customer, "attributes": {"n": n.to_string()}});
    // With no queue event for a write, a read decides, and the feed turns detail topics on.
    for n in 0..2 {
        let answer = app.post_attributes(body(n)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["verified"], true);
        assert_eq!(answer.body["verifiedBy"], "read");
    }
    let topic = format!("v2.detail.events.conversation.{cid}.attributes");
    eventually("the conversation's detail topic is subscribed", || {
        let n = app.sim.notifications();
        n.channel_ids()
            .iter()
            .any(|id| n.topics(id).unwrap_or_default().contains(&topic))
    })
    .await;
    let before = calls(&app);
    let answer = app.post_attributes(body(2)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["verifiedBy"], "detailEvent");
    assert_eq!(answer.body["attributes"]["n"], "2");
    assert_eq!(since(&app, before), ONLY_THE_PATCH);
}

#[tokio::test(start_paused = true)]
async fn a_write_no_event_shows_is_verified_by_one_read() {
    let app = mirrored_app(|_| {}).await;
    app.sim.set_write_events(false);
    let (cid, customer, _) = start_call(&app, 6, "tel:+13175550106").await;
    let before = calls(&app);
    let answer = app
        .post_attributes(json!({"conversationId": cid, "participantId": customer, "attributes": {"vip": "true"}}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["verifiedBy"], "read");
    assert_eq!(since(&app, before).reads, 1);
}

#[tokio::test(start_paused = true)]
async fn a_write_genesys_accepts_but_never_applies_is_answered_unverified() {
    let app = mirrored_app(|_| {}).await;
    let (cid, customer, _) = start_call(&app, 7, "tel:+13175550107").await;
    app.sim.set_visibility_delay(Duration::from_secs(3600));
    let answer = app
        .post_attributes(json!({"conversationId": cid, "participantId": customer, "attributes": {"vip": "true"}}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["verified"], false);
    assert_eq!(answer.body["verifiedBy"], "none");
    assert_eq!(answer.body["mismatches"][0]["key"], "vip");
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_end_event_was_lost_is_never_answered_verified() {
    let app = mirrored_app(|_| {}).await;
    let (cid, _, _) = start_call(&app, 8, "tel:+13175550108").await;
    app.sim.lose_events(1);
    app.sim.end_conversation(&cid);
    // The mirror still holds the call as live and trusted: Genesys's refusal is what tells.
    assert_eq!(mirror(&app).get(&cid).unwrap().trust, Trust::Trusted);
    let by_number = app.post_attributes(by_number("+13175550108", "true")).await;
    assert_ne!(by_number.status, 200, "{}", by_number.body);
    assert_eq!(by_number.body["code"], "conversation_not_found");
    let (cid2, _, _) = start_call(&app, 9, "tel:+13175550109").await;
    app.sim.lose_events(1);
    app.sim.end_conversation(&cid2);
    let by_purpose = app
        .post_attributes(json!({"conversationId": cid2, "attributes": {"vip": "true"}}))
        .await;
    assert_ne!(by_purpose.status, 200, "{}", by_purpose.body);
    assert!(
        mirror(&app).get(&cid2).is_none(),
        "the refused call left the mirror"
    );
}

#[tokio::test(start_paused = true)]
async fn socket_closing_moves_to_a_new_socket_with_no_gap_and_no_update_lost() {
    let app = mirrored_app(|_| {}).await;
    let (cid, customer, _) = start_call(&app, 10, "tel:+13175550110").await;
    let gaps = mirror(&app).status().gaps;
    let updates = (0..5).map(|n| {
        let app = &app;
        // Each its own key: a key a later update overwrote is answered as a mismatch.
        let body = json!({"conversationId": cid, "participantId": customer, "attributes": {format!("k{n}"): "v"}});
        async move { app.post_attributes(body).await }
    });
    // The old socket closes 300 ms later: a feed that waited for that would have a gap.
    app.sim.announce_socket_closing(Duration::from_millis(300));
    for answer in futures::future::join_all(updates).await {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["verified"], true, "{}", answer.body);
    }
    // Past the old socket's close, a call that starts is seen on the new socket, trusted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    start_call(&app, 11, "tel:+13175550111").await;
    assert_eq!(mirror(&app).status().gaps, gaps, "no gap");
    assert!(mirror(&app).is_live());
}

#[tokio::test(start_paused = true)]
async fn an_evicted_channel_is_replaced_and_the_mirror_is_live_again() {
    let app = mirrored_app(|_| {}).await;
    let first = app.sim.notifications().channel_ids();
    app.sim.evict_channels();
    eventually("a new channel is made and subscribed", || {
        let n = app.sim.notifications();
        n.channel_ids()
            .iter()
            .any(|id| !first.contains(id) && !n.topics(id).unwrap_or_default().is_empty())
    })
    .await;
    eventually("the mirror is live again", || mirror(&app).is_live()).await;
    start_call(&app, 12, "tel:+13175550112").await;
    let answer = app.post_attributes(by_number("+13175550112", "true")).await;
    assert_eq!(answer.body["foundBy"], "mirror", "{}", answer.body);
}

#[tokio::test(start_paused = true)]
async fn a_channel_gone_without_a_word_is_found_gone_by_its_404_and_replaced() {
    let app = mirrored_app(|_| {}).await;
    let first = app.sim.notifications().channel_ids();
    // The socket closes; the channel is gone too, which only HEAD tells.
    app.sim.forget_channels();
    eventually("a new channel is made and the mirror is live again", || {
        let n = app.sim.notifications();
        mirror(&app).is_live()
            && n.channel_ids()
                .iter()
                .any(|id| !first.contains(id) && !n.topics(id).unwrap_or_default().is_empty())
    })
    .await;
    assert!(app.sim.count("channel_exists") >= 1);
    start_call(&app, 21, "tel:+13175550121").await;
}

#[tokio::test(start_paused = true)]
async fn refused_queue_topics_leave_every_update_to_the_rest_path() {
    let server = patchbay::sim::Simulator::new();
    let sim = server.control();
    sim.refuse_topics("v2.routing.queues.", "routing:queue:view");
    let app = spawn_app_on(server.clone(), with_mirror).await;
    eventually("the subscription was refused", || {
        app.sim.count("subscriptions") >= 1
    })
    .await;
    let (cid, _, _, c) = call(13, "tel:+13175550113");
    app.sim.insert_conversation(c);
    let answer = app.post_attributes(by_number("+13175550113", "true")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversationId"], cid);
    assert_eq!(answer.body["foundBy"], "analytics");
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["verifiedBy"], "read");
    assert!(!mirror(&app).is_live());
    // The gateway is ready all the same: the mirror is a saving, not a dependency.
    assert_eq!(app.get("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_redis_stay_within_the_deployments_channels() {
    // Two channels for three replicas: one replica finds none free and serves by REST.
    let (sim, apps) = crate::redis_deployment::replicas(3, |s| {
        with_mirror(s);
        s.mirror.max_channels = 2;
    })
    .await;
    eventually("two replicas' feeds are live", || {
        apps.iter().filter(|a| mirror(a).is_live()).count() == 2
    })
    .await;
    // Let the third try for a while: it must not make a channel.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.notifications().channel_ids().len(), 2);
    assert!(sim.notifications().evicted().is_empty());
    let (cid, customer, _, c) = call(14, "tel:+13175550114");
    sim.insert_conversation(c);
    for (n, app) in apps.iter().enumerate() {
        let answer = app
            .post_attributes(json!({"conversationId": cid, "participantId": customer, "attributes": {"n": n.to_string()}}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["verified"], true, "{}", answer.body);
        let expected = if mirror(app).is_live() {
            "queueEvent"
        } else {
            "read"
        };
        assert_eq!(answer.body["verifiedBy"], expected);
    }
}

#[tokio::test(start_paused = true)]
async fn a_socket_gone_silent_is_replaced_after_the_liveness_window() {
    let app = mirrored_app(|_| {}).await;
    let (cid, _, _) = start_call(&app, 15, "tel:+13175550115").await;
    // Open, but silent: no heartbeat, no pong, no event.
    app.sim.mute_sockets();
    eventually("the silence is taken for a gap", || {
        mirror(&app).status().gaps >= 1
    })
    .await;
    // What was held before the silence is only a hint now.
    eventually("a new socket is live", || mirror(&app).is_live()).await;
    assert_eq!(mirror(&app).get(&cid).unwrap().trust, Trust::Hint);
    start_call(&app, 16, "tel:+13175550116").await;
}

#[tokio::test(start_paused = true)]
async fn a_channel_is_subscribed_again_before_it_expires() {
    let server = patchbay::sim::Simulator::new();
    let sim = server.control();
    sim.set_channel_lifetime(Duration::from_secs(4));
    let app = spawn_app_on(server.clone(), with_mirror).await;
    eventually("the mirror's feed is live", || mirror(&app).is_live()).await;
    let first = app.sim.count("subscriptions");
    let channels = app.sim.notifications().channel_ids();
    // Twice the channel's life: it lives on, on the same channel, because each subscription
    // (at half the life left, read again from Genesys's listing) extends it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let again = app.sim.count("subscriptions") - first;
    assert!((2..=5).contains(&again), "subscribed again {again} times");
    assert_eq!(app.sim.notifications().channel_ids(), channels);
    start_call(&app, 18, "tel:+13175550118").await;
    assert_eq!(mirror(&app).status().gaps, 0);
}

#[tokio::test(start_paused = true)]
async fn a_conversation_event_of_several_mebibytes_reaches_the_mirror() {
    let app = mirrored_app(|_| {}).await;
    let (cid, _, _, mut c) = call(17, "tel:+13175550117");
    // 3 MiB of attributes: a long-running chat with a large transcript summary, say.
    for i in 0..48 {
        c.participants[0]
            .attributes
            .insert(format!("note{i}"), "x".repeat(64 * 1024));
    }
    app.sim.insert_conversation(c);
    eventually("the mirror holds the large call", || {
        mirror(&app).get(&cid).is_some()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_late_event_verifies_within_confirm_ms_and_past_it_a_read_decides() {
    let app = mirrored_app(|_| {}).await;
    let (cid, customer, _) = start_call(&app, 19, "tel:+13175550119").await;
    let body = |v: &str| json!({"conversationId": cid, "participantId": customer, "attributes": {"vip": v}});
    // 200 ms late, within the 400 ms the write waits for its event.
    app.sim.set_event_delay(Duration::from_millis(200));
    let before = calls(&app);
    let answer = app.post_attributes(body("late")).await;
    assert_eq!(answer.body["verified"], true, "{}", answer.body);
    assert_eq!(answer.body["verifiedBy"], "queueEvent");
    assert_eq!(since(&app, before).reads, 0);
    // 2 s late: past it, one read decides.
    app.sim.set_event_delay(Duration::from_secs(2));
    let answer = app.post_attributes(body("later")).await;
    assert_eq!(answer.body["verified"], true, "{}", answer.body);
    assert_eq!(answer.body["verifiedBy"], "read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_id_never_reaches_the_log_through_evictions_drops_and_silence() {
    let server = patchbay::sim::Simulator::new();
    let sim = server.control();
    let sim_url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut gateway = Gateway::in_front_of(
        &sim_url,
        &[
            ("PATCHBAY__MIRROR__ENABLED", "true"),
            ("PATCHBAY__MIRROR__LIVENESS_MS", "1500"),
            ("PATCHBAY__MIRROR__RECONNECT_MAX_MS", "200"),
            ("RUST_LOG", "trace"),
        ],
    );
    gateway.start();
    gateway.ready().await;
    let subscribed = |sim: &patchbay::sim::Control| {
        let n = sim.notifications();
        n.channel_ids()
            .into_iter()
            .filter(|id| !n.topics(id).unwrap_or_default().is_empty())
            .collect::<Vec<_>>()
    };
    eventually("a channel is subscribed", || !subscribed(&sim).is_empty()).await;
    let first = subscribed(&sim);
    sim.evict_channels();
    eventually("a new channel is subscribed", || {
        subscribed(&sim).iter().any(|id| !first.contains(id))
    })
    .await;
    sim.drop_sockets();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.mute_sockets();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let log = gateway.log_text();
    assert!(
        log.contains("Genesys ended the notification channel"),
        "{log}"
    );
    assert!(log.contains("went silent"), "{log}");
    let n = sim.notifications();
    for id in n.channel_ids().iter().chain(n.evicted()) {
        let leak: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
        assert!(leak.is_empty(), "channel id {id} in the log: {leak:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_past_one_channel_are_spread_over_a_second_when_they_are_listed() {
    let app = mirrored_app(|s| s.mirror.queue_refresh_ms = 300).await;
    assert_eq!(mirror(&app).status().channels, 1);
    // 800 more queues: more topics than one channel holds beside its room for detail topics.
    for i in 0..800 {
        app.sim.add_queue(
            &format!("{i:08}-0000-4000-8000-000000000000"),
            &format!("q{i}"),
        );
    }
    eventually("two channels are subscribed and live", || {
        let status = mirror(&app).status();
        status.live && status.channels == 2 && status.topics == 801
    })
    .await;
    let n = app.sim.notifications();
    let held: Vec<usize> = n
        .channel_ids()
        .iter()
        .filter_map(|id| n.topics(id))
        .map(|t| t.len())
        .collect();
    assert!(held.iter().all(|&len| len <= 800), "{held:?}");
    assert!(held.contains(&800), "{held:?}");
    start_call(&app, 20, "tel:+13175550120").await;
}
