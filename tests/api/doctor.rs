//! `patchbay doctor` against the simulator: every check passes on a client with every permission,
//! and each permission taken away in turn is named, and fails the run when the configuration uses it.

use patchbay::config::Settings;
use patchbay::sim::Simulator;

use crate::helpers::*;

/// A configuration that uses every capability: a route with a lookup, secure attributes and a
/// custom record, a sealing key, and the mirror.
fn everything(sim_url: &str) -> Settings {
    let mut s = patchbay::demo::settings_for_simulator(sim_url, API_KEY);
    s.hooks = hooks_from_toml(
        r#"
        [hooks.crm]
        conversation_id = "/call"
        mode = "sync"
        [hooks.crm.lookup]
        ani = "/phone"
        [hooks.crm.attributes]
        case = "/case"
        [hooks.crm.secure_attributes]
        dob = "/dob"
        [hooks.crm.custom_attributes]
        caseNumber = "/case"
        "#,
    );
    s.hooks.get_mut("crm").unwrap().custom_schema = Some("crm_case".into());
    s.secure.keys = format!("k1:{}", "A".repeat(43) + "=").into();
    s.mirror.enabled = true;
    s.validate().expect("valid settings");
    s
}

async fn doctor(settings: &Settings) -> (bool, String) {
    let mut out = Vec::new();
    let ok = patchbay::doctor::run(settings, &mut out).await.unwrap();
    (ok, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn with_every_permission_every_check_passes_within_the_printed_bound() {
    let server = Simulator::new();
    let url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let (ok, out) = doctor(&everything(&url)).await;
    assert!(ok, "{out}");
    for check in [
        "region and client",
        "read a conversation",
        "write participant attributes",
        "lookups (analytics details query)",
        "live mirror: list queues",
        "live mirror: notification topics",
        "secure attributes: write",
        "secure attributes: read back",
        "custom attributes: schemas",
        "custom attributes: write",
        "custom attributes: read back",
        "token standing",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "{check} is not ok:\n{out}"
        );
    }
    assert!(out.contains("route crm"), "{out}");
    assert!(out.contains("sealed under `k1`"), "{out}");
    // What granted the token is named: here the simulator's login URL, not the default region.
    assert!(
        out.contains(&format!("{url}/ granted a token"))
            || out.contains(&format!("{url} granted a token")),
        "{out}"
    );
    let spent = server
        .control()
        .calls()
        .iter()
        .filter(|c| c.op != "token")
        .count() as u32;
    assert!(spent <= patchbay::doctor::MAX_CALLS, "{spent} calls");
    assert!(
        out.contains(&format!(
            "{spent} Genesys calls spent (at most {})",
            patchbay::doctor::MAX_CALLS
        )),
        "{out}"
    );
    assert!(!out.contains("AAAA"), "a key never shows");
}

#[tokio::test]
async fn each_permission_taken_away_in_turn_is_named_and_fails_the_run() {
    for permission in patchbay::sim::PERMISSIONS {
        let server = Simulator::new();
        let url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        server.control().revoke(permission);
        let (ok, out) = doctor(&everything(&url)).await;
        assert!(!ok, "{permission}: the run passed:\n{out}");
        let missing: Vec<_> = out.lines().filter(|l| l.starts_with("MISSING")).collect();
        assert!(!missing.is_empty(), "{permission}:\n{out}");
        assert!(
            missing
                .iter()
                .all(|l| l.contains(&format!("missing permission {permission}"))),
            "{permission}:\n{out}"
        );
        assert!(out.contains("will not work:"), "{out}");
    }
}

#[tokio::test]
async fn a_capability_the_configuration_does_not_use_is_reported_without_failing_the_run() {
    let server = Simulator::new();
    let url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    server
        .control()
        .revoke("conversation:customAttributes:edit");
    let mut settings = patchbay::demo::settings_for_simulator(&url, API_KEY);
    settings.mirror.enabled = false;
    let (ok, out) = doctor(&settings).await;
    assert!(ok, "{out}");
    assert!(out.contains("missing permission conversation:customAttributes:edit (not used by this configuration)"), "{out}");
    assert!(
        out.contains("not configured: mirror.enabled = false"),
        "{out}"
    );
}

#[tokio::test]
async fn a_refused_client_stops_the_run_at_once() {
    let server = Simulator::new();
    let url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut settings = patchbay::demo::settings_for_simulator(&url, API_KEY);
    settings.genesys.client_secret = "not-the-secret".to_string().into();
    let (ok, out) = doctor(&settings).await;
    assert!(!ok);
    assert!(
        out.contains("FAILED") && out.contains("region and client"),
        "{out}"
    );
    assert!(!out.contains("not-the-secret"), "{out}");
    assert!(server.control().calls().iter().all(|c| c.op == "token"));
}
