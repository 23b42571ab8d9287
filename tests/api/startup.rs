//! Start-up: the binary refuses a bad configuration and names the key; the demo succeeds.

use std::process::Command;

fn serve_with(env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchbay"));
    cmd.arg("serve").env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CREDENTIALS: [(&str, &str); 3] = [
    ("PATCHBAY__GENESYS__CLIENT_ID", "id"),
    ("PATCHBAY__GENESYS__CLIENT_SECRET", "top-secret-value"),
    ("PATCHBAY__AUTH__API_KEYS", "k"),
];

#[test]
fn serve_refuses_an_unknown_region_listing_the_valid_ones() {
    let mut env = CREDENTIALS.to_vec();
    env.push(("PATCHBAY__GENESYS__REGION", "mypurecloud.moon"));
    let (ok, stderr) = serve_with(&env);
    assert!(!ok);
    assert!(
        stderr.contains("genesys.region") && stderr.contains("mypurecloud.ie"),
        "{stderr}"
    );
    assert!(!stderr.contains("top-secret-value"));
}

#[test]
fn serve_refuses_to_start_without_an_inbound_credential() {
    let (ok, stderr) = serve_with(&CREDENTIALS[..2]);
    assert!(!ok);
    assert!(stderr.contains("auth.api_keys"), "{stderr}");
}

#[test]
fn serve_refuses_an_unknown_key() {
    let mut env = CREDENTIALS.to_vec();
    env.push(("PATCHBAY__VERIFY__TIMEOUT", "5"));
    let (ok, stderr) = serve_with(&env);
    assert!(!ok);
    assert!(stderr.contains("timeout"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_gets_every_answer_right() {
    let mut out = Vec::new();
    let ok = patchbay::demo::run(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("verified:     true"));
    assert!(text.contains("409 conversation_ended"));
    // The signed CRM webhook went through its TOML route, and the forged copy did not.
    assert!(text.contains("\"zendeskTicket\":\"4711\""), "{text}");
    assert!(text.contains("401 unauthorized"), "{text}");
}
