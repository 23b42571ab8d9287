//! The simulator keeps the contract's shapes, so tests against it mean something.

use serde_json::json;

use crate::helpers::*;

async fn token(app: &TestApp) -> String {
    sim_token(&app.sim_url).await
}

#[tokio::test]
async fn the_media_variant_answers_participant_attributes() {
    let app = spawn_app().await;
    let token = token(&app).await;
    let response = app
        .http
        .patch(format!(
            "{}/api/v2/conversations/calls/{SEED_ACTIVE_CALL}/participants/{SEED_ACTIVE_CALL_CUSTOMER}/attributes",
            app.sim_url
        ))
        .bearer_auth(&token)
        .json(&json!({"attributes": {"k": "v"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("inin-correlation-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, json!({"attributes": {"k": "v"}}));
}

#[tokio::test]
async fn the_tutorials_participant_patch_does_not_set_attributes() {
    let app = spawn_app().await;
    let token = token(&app).await;
    let response = app
        .http
        .patch(format!(
            "{}/api/v2/conversations/{SEED_ACTIVE_CALL}/participants/{SEED_ACTIVE_CALL_AGENT}",
            app.sim_url
        ))
        .bearer_auth(&token)
        .json(&json!({"attributes": {"vip": "true"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let stored = app
        .sim
        .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT)
        .unwrap();
    assert!(stored.is_empty(), "{stored:?}");
}

#[tokio::test]
async fn errors_are_error_bodies_whose_context_id_is_the_correlation_id() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!(
            "{}/api/v2/conversations/{SEED_ACTIVE_CALL}",
            app.sim_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let correlation = response.headers()["inin-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "bad.credentials");
    assert_eq!(body["status"], 401);
    assert_eq!(body["contextId"], correlation);
}

#[test]
fn the_banner_lists_every_conversation_with_its_participants_caller_and_purpose() {
    let server = patchbay::sim::Simulator::new();
    let sim = server.control();
    sim.add_caller_call();
    let added = sim.add_live_calls(2);
    let banner = server.describe();
    for (id, role) in patchbay::sim::SEED_ROLES {
        assert!(banner.contains(&format!("{id} {role}")), "{id}: {banner}");
    }
    for id in [
        SEED_ACTIVE_CALL_CUSTOMER,
        SEED_ACTIVE_CALL_AGENT,
        SEED_TRANSFER_AGENT_NEW,
        SEED_CHAT_CUSTOMER,
    ] {
        assert!(banner.contains(id), "{id}: {banner}");
    }
    assert!(
        banner.contains(&format!(
            "{} (left)",
            patchbay::sim::SEED_TRANSFER_AGENT_OLD
        )),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("caller {}", patchbay::sim::SEED_CALLER_NUMBER)),
        "{banner}"
    );
    for call in added {
        assert!(
            banner.contains(&format!("{} live call (added)", call.conversation)),
            "{banner}"
        );
        assert!(
            banner.contains(&call.customer) && banner.contains(&call.agent),
            "{banner}"
        );
    }
}

#[test]
fn the_simulators_help_speaks_of_the_command_not_the_source() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(["sim", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--calls"), "{help}");
    for source in ["Simulator::", "src/", "`add_"] {
        assert!(!help.contains(source), "{source}: {help}");
    }
}
