//! Genesys's own Python SDK, pinned, talks to the simulator: proof it speaks what real clients expect.
//!
//! The test makes its own virtualenv under `target/sdk-venv` on first use (PyPI only), so `cargo test`
//! needs nothing installed by hand beyond Python 3. Without Python it fails and says why.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_reads_writes_queries_analytics_and_subscribes_on_the_simulator() {
    let app = spawn_app().await;
    let written = app
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_CUSTOMER, "attributes": {"vip": true}}))
        .await;
    assert_eq!(written.body["verified"], true, "{}", written.body);

    // A live call from a number, for the analytics details query.
    let start = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let looked_up = "44444444-0000-4000-8000-000000000001";
    app.sim.insert_conversation(
        serde_json::from_value(json!({"id": looked_up, "startTime": start, "participants": [
            {"id": "44444444-0000-4000-8000-000000000002", "purpose": "customer", "startTime": start,
             "ani": "tel:+13175550142", "attributes": {}, "calls": [{"state": "connected"}]}
        ]}))
        .unwrap(),
    );

    // A topic the client lacks the permission for, answered Rejected.
    app.sim
        .refuse_topics("v2.detail.events.", "analytics:conversationDetail:view");
    let queue_topic = format!(
        "v2.routing.queues.{}.conversations",
        patchbay::sim::notifications::SEED_QUEUE
    );
    let refused_topic = format!("v2.detail.events.conversation.{SEED_ACTIVE_CALL}.attributes");

    let python = tokio::task::spawn_blocking(python_tools)
        .await
        .unwrap()
        .join("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/conformance.py");
    let sim_url = app.sim_url.clone();
    let topics = (queue_topic.clone(), refused_topic.clone());
    // The frames the simulator pushes on a channel, for the SDK's event models.
    let queue_event = app.sim.queue_event_frame(looked_up).unwrap();
    let attributes_event = patchbay::sim::attributes_event_frame(
        SEED_ACTIVE_CALL,
        SEED_ACTIVE_CALL_CUSTOMER,
        &[("vip".into(), "true".into())],
    );
    let frames = serde_json::to_string(&live_frames().await).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        run_command(
            Command::new(python)
                .arg(script)
                .env("SIM_URL", sim_url)
                .env("CLIENT_ID", patchbay::sim::DEFAULT_CLIENT_ID)
                .env("CLIENT_SECRET", patchbay::sim::DEFAULT_CLIENT_SECRET)
                .env("CONVERSATION_ID", SEED_ACTIVE_CALL)
                .env("PARTICIPANT_ID", SEED_ACTIVE_CALL_CUSTOMER)
                .env("EXPECT_KEY", "vip")
                .env("EXPECT_VALUE", "true")
                .env("LOOKUP_ANI", "+13175550142")
                .env("LOOKUP_CONVERSATION", looked_up)
                .env("QUEUE_TOPIC", &topics.0)
                .env("REFUSED_TOPIC", &topics.1)
                .env("QUEUE_EVENT", queue_event)
                .env("ATTRIBUTES_EVENT", attributes_event)
                .env("FRAMES", frames),
        )
    })
    .await
    .unwrap();
    let findings: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    assert_eq!(findings["purpose"], "customer");
    assert_eq!(findings["attributes"]["sdkKey"], "sdk-value");
    assert_eq!(findings["lookup"], looked_up);
    assert_eq!(findings["topics"][&queue_topic], "Permitted");
    assert_eq!(findings["topics"][&refused_topic], "Rejected");
    assert_eq!(findings["queueEvent"]["id"], looked_up);
    assert_eq!(findings["queueEvent"]["address"], "tel:+13175550142");
    assert_eq!(findings["queueEvent"]["callState"], "connected");
    assert_eq!(findings["attributesEvent"], "true");
    assert_eq!(
        findings["secureVersions"],
        json!([1, 2]),
        "the SDK read the secure attributes"
    );
    assert_eq!(
        findings["custom"],
        json!({"version": 3, "schema": patchbay::sim::SEED_SCHEMA_ID, "title": patchbay::sim::SEED_SCHEMA_NAME, "searchedBy": "conversationId"}),
        "the SDK read the custom-attributes schema, the record and the bulk writes' answers"
    );
    assert_eq!(
        findings["frames"],
        json!({
            "channel.metadata": ["WebSocket Heartbeat", "pong"],
            "v2.routing.queues.conversations": "QueueConversationEventTopicConversation",
            "v2.detail.events.conversation.attributes": "AttributeDetailEventTopicAttributeUpdateEvent",
            "v2.system.socket_closing": "SystemMessageSystemMessage",
            "v2.system.no_longer_subscribed": "SystemMessageSystemMessage",
        }),
        "every kind of frame the simulator sends, read by the SDK"
    );

    // The SDK made the same calls Patchbay makes: a grant, the attributes PATCH, a GET.
    let sdk_calls: Vec<_> = app
        .sim
        .calls()
        .into_iter()
        .skip_while(|c| c.op != "token" || c.status != 200)
        .collect();
    let ops: Vec<_> = app.sim.calls().iter().map(|c| c.op).collect();
    assert!(
        ops.iter().filter(|o| **o == "token").count() == 2,
        "{ops:?}"
    );
    assert!(sdk_calls
        .iter()
        .any(|c| c.op == "patch_attributes" && c.status == 202));
    let stored = app
        .sim
        .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_CUSTOMER)
        .unwrap();
    assert!(stored.contains(&("sdkNumber".into(), "7".into())));
}

/// One frame of every kind the simulator pushes on a channel's socket, as sent: a heartbeat, the
/// pong to a ping, a queue conversation event, an attributes detail event, `socket_closing` and
/// `no_longer_subscribed`.
async fn live_frames() -> Vec<serde_json::Value> {
    use crate::notifications_sim::{cx, genesys_client, next_frame, seed_queue_socket};
    use futures::SinkExt;
    let app = spawn_app().await;
    app.sim.set_heartbeat(std::time::Duration::from_millis(100));
    let (channel, mut socket) = seed_queue_socket(&app).await;
    let detail = format!("v2.detail.events.conversation.{SEED_ACTIVE_CALL}.attributes");
    genesys_client(&app)
        .add_subscriptions(&mut cx(), &channel, &[detail])
        .await
        .unwrap();
    let mut frames = Vec::new();
    let take = |frame: serde_json::Value, frames: &mut Vec<serde_json::Value>| {
        let topic = frame["topicName"].as_str().unwrap_or_default().to_string();
        let message = frame["eventBody"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let seen = |f: &serde_json::Value| {
            f["topicName"] == topic.as_str()
                && (topic != "channel.metadata" || f["eventBody"]["message"] == message.as_str())
        };
        if !frames.iter().any(seen) {
            frames.push(frame);
        }
    };
    // A heartbeat, then the pong to a ping.
    take(next_frame(&mut socket).await, &mut frames);
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            r#"{"message":"ping"}"#.into(),
        ))
        .await
        .unwrap();
    let written = app
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_CUSTOMER, "attributes": {"tier": "gold"}}))
        .await;
    assert_eq!(written.status, 200, "{}", written.body);
    app.sim
        .announce_socket_closing(std::time::Duration::from_secs(5));
    app.sim.evict_channels();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while frames.len() < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "frames seen: {frames:#?}"
        );
        take(next_frame(&mut socket).await, &mut frames);
    }
    frames
}
