//! The conversations a fresh simulator holds, with fixed ids so examples and docs can name them.

use serde_json::json;

use crate::wire::Conversation;

/// A live voice call: customer, IVR and queue (both done) and an agent.
pub const SEED_ACTIVE_CALL: &str = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a01";
pub const SEED_ACTIVE_CALL_CUSTOMER: &str = "0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c01";
pub const SEED_ACTIVE_CALL_AGENT: &str = "0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c02";
/// A live call that was transferred: the first agent left, a second one is connected.
pub const SEED_TRANSFER: &str = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a02";
pub const SEED_TRANSFER_AGENT_OLD: &str = "0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c12";
pub const SEED_TRANSFER_AGENT_NEW: &str = "0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c13";
/// A live web message conversation.
pub const SEED_CHAT: &str = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a03";
pub const SEED_CHAT_CUSTOMER: &str = "0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c21";
/// A call that ended an hour before the simulator's day began.
pub const SEED_ENDED: &str = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a04";
pub const SEED_ENDED_CUSTOMER: &str = "0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c31";

/// What each seeded conversation is for, as the simulator's banner says it.
pub const SEED_ROLES: &[(&str, &str)] = &[
    (
        SEED_ACTIVE_CALL,
        "live voice call: customer, IVR and queue (done), agent",
    ),
    (
        SEED_TRANSFER,
        "transferred call: the first agent left, a second is connected",
    ),
    (
        SEED_CHAT,
        "live web message conversation (mediaType message)",
    ),
    (SEED_ENDED, "ended call: updates to it are refused"),
    (
        SEED_CALLER_CALL,
        "live call to find by its caller's number (a lookup by ani)",
    ),
];

fn call(state: &str) -> serde_json::Value {
    json!([{"id": uuid::Uuid::new_v4().to_string(), "state": state, "direction": "inbound", "recordingState": "none"}])
}

fn participant(
    id: &str,
    purpose: &str,
    start: &str,
    media: &str,
    state: &str,
    attributes: serde_json::Value,
) -> serde_json::Value {
    let mut p = json!({
        "id": id,
        "purpose": purpose,
        "startTime": start,
        "attributes": attributes,
        "name": format!("{purpose} participant"),
    });
    p[media] = call(state);
    if matches!(state, "disconnected" | "terminated") {
        p["endTime"] = json!(start);
    }
    p
}

pub fn conversations() -> Vec<Conversation> {
    let raw = vec![
        json!({
            "id": SEED_ACTIVE_CALL,
            "startTime": "2026-11-24T09:00:00.000Z",
            "participants": [
                participant(SEED_ACTIVE_CALL_CUSTOMER, "customer", "2026-11-24T09:00:00.000Z", "calls", "connected", json!({"ivr.language": "en-US"})),
                participant("0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c03", "ivr", "2026-11-24T09:00:01.000Z", "calls", "disconnected", json!({})),
                participant("0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c04", "acd", "2026-11-24T09:00:30.000Z", "calls", "disconnected", json!({})),
                participant(SEED_ACTIVE_CALL_AGENT, "agent", "2026-11-24T09:01:00.000Z", "calls", "connected", json!({})),
            ]
        }),
        json!({
            "id": SEED_TRANSFER,
            "startTime": "2026-11-24T09:10:00.000Z",
            "participants": [
                participant("0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c11", "customer", "2026-11-24T09:10:00.000Z", "calls", "connected", json!({})),
                participant(SEED_TRANSFER_AGENT_OLD, "agent", "2026-11-24T09:11:00.000Z", "calls", "disconnected", json!({})),
                participant(SEED_TRANSFER_AGENT_NEW, "agent", "2026-11-24T09:14:00.000Z", "calls", "connected", json!({})),
            ]
        }),
        json!({
            "id": SEED_CHAT,
            "startTime": "2026-11-24T09:20:00.000Z",
            "participants": [
                participant(SEED_CHAT_CUSTOMER, "customer", "2026-11-24T09:20:00.000Z", "messages", "connected", json!({})),
                participant("0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c22", "agent", "2026-11-24T09:21:00.000Z", "messages", "connected", json!({})),
            ]
        }),
        json!({
            "id": SEED_ENDED,
            "startTime": "2026-11-24T07:00:00.000Z",
            "endTime": "2026-11-24T07:30:00.000Z",
            "participants": [
                participant(SEED_ENDED_CUSTOMER, "customer", "2026-11-24T07:00:00.000Z", "calls", "disconnected", json!({})),
                participant("0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c32", "agent", "2026-11-24T07:01:00.000Z", "calls", "disconnected", json!({})),
            ]
        }),
    ];
    raw.into_iter()
        .map(|v| serde_json::from_value(v).expect("seed conversations are valid"))
        .collect()
}

/// The live call the demo finds from its caller's number: started now, from [`SEED_CALLER_NUMBER`].
pub const SEED_CALLER_CALL: &str = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a05";
pub const SEED_CALLER_CUSTOMER: &str = "0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c41";
pub const SEED_CALLER_AGENT: &str = "0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c42";
pub const SEED_CALLER_NUMBER: &str = "tel:+13175550123";

/// A live voice call from `ani`, started at `start` (RFC 3339), as the conversation GET shows it.
pub fn call_from(id: &str, customer: &str, agent: &str, ani: &str, start: &str) -> Conversation {
    let mut c = json!({
        "id": id,
        "startTime": start,
        "participants": [
            participant(customer, "customer", start, "calls", "connected", json!({})),
            participant(agent, "agent", start, "calls", "connected", json!({})),
        ]
    });
    c["participants"][0]["ani"] = json!(ani);
    serde_json::from_value(c).expect("a valid conversation")
}

/// A live call with a connected customer and agent.
pub fn live_call(call: &super::LiveCall) -> Conversation {
    let start = "2026-11-24T09:00:00.000Z";
    serde_json::from_value(json!({
        "id": call.conversation,
        "startTime": start,
        "participants": [
            participant(&call.customer, "customer", start, "calls", "connected", json!({})),
            participant(&call.agent, "agent", start, "calls", "connected", json!({})),
        ]
    }))
    .expect("a valid conversation")
}

/// Transfers `c` from its connected agent to a new agent `to`, as a blind transfer does: the old
/// agent's call is disconnected and a newer agent participant joins, connected.
pub fn transfer(c: &mut Conversation, to: &str) {
    let at = "2026-11-24T09:30:00.000Z";
    for p in c
        .participants
        .iter_mut()
        .filter(|p| p.purpose.as_deref() == Some("agent") && p.is_connected())
    {
        p.end_time = Some(at.into());
        if let Some(serde_json::Value::Array(items)) = p.communications.get_mut("calls") {
            for item in items {
                item["state"] = json!("disconnected");
            }
        }
    }
    c.participants.push(
        serde_json::from_value(participant(
            to,
            "agent",
            at,
            "calls",
            "connected",
            json!({}),
        ))
        .expect("a valid participant"),
    );
}

/// Ends `c`: an end time, and every communication disconnected.
pub fn end(c: &mut Conversation) {
    c.end_time = Some("2026-11-24T12:00:00.000Z".into());
    for p in &mut c.participants {
        p.end_time
            .get_or_insert_with(|| "2026-11-24T12:00:00.000Z".into());
        for list in crate::wire::MEDIA_LISTS {
            if let Some(serde_json::Value::Array(items)) = p.communications.get_mut(*list) {
                for item in items {
                    item["state"] = json!("disconnected");
                }
            }
        }
    }
}
