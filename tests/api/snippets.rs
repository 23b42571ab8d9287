//! Every shell block of the README and the book runs as written against a gateway in front of the
//! simulator, with the settings the docs start it with (`dev-key`, `admin-key`, the routes the
//! webhook guide configures), or says why it is not run (`<!-- snippet: not run (why) -->`).

use std::process::Command;

use serde_json::json;

use crate::docs::pages;
use crate::helpers::*;

/// The routes the webhook guide configures, with its auth tables and secrets, each mapping the
/// guide's `event.json`.
const ROUTES: &str = r#"
[hooks.internal]
conversation_id = "/c"
attributes = { a = "/a" }
auth = { scheme = "api_key", keys = ["a-long-random-key"] }

[hooks.architect]
conversation_id = "/c"
attributes = { a = "/a" }
auth = { scheme = "basic", username = "architect", password = "PASSWORD" }

[hooks.github]
conversation_id = "/c"
attributes = { a = "/a" }
auth = { scheme = "hmac", header = "X-Hub-Signature-256", prefix = "sha256=", encoding = "hex", secrets = ["doc-secret"] }

[hooks.zendesk]
conversation_id = "/c"
attributes = { a = "/a" }
auth = { scheme = "hmac", header = "X-Zendesk-Webhook-Signature", timestamp_header = "X-Zendesk-Webhook-Signature-Timestamp", signed = ["timestamp", "body"], encoding = "base64", secrets = ["doc-secret"] }

[hooks.hubspot]
conversation_id = "/c"
attributes = { a = "/a" }
auth = { scheme = "hmac", header = "X-HubSpot-Signature-v3", timestamp_header = "X-HubSpot-Request-Timestamp", signed = ["method", "uri", "body", "timestamp"], public_url = "https://patchbay.example.com", encoding = "base64", secrets = ["doc-secret"] }

[hooks.billing]
conversation_id = "/c"
attributes = { a = "/a" }
auth = { scheme = "standard_webhooks", secrets = ["whsec_ZG9jLXN0YW5kYXJkLXdlYmhvb2tzLXNlY3JldA=="] }
"#;

/// A block of a page: a shell block, or a sample answer (`<!-- snippet: answer -->` before a
/// ```json block), which is what the shell block before it must print.
enum Block {
    Shell(String, Option<String>),
    Answer(String),
}

/// Each block with the page it is on.
fn blocks() -> Vec<(String, Block)> {
    let mut blocks = Vec::new();
    for (page, text) in pages() {
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let marked_answer = i > 0 && lines[i - 1].trim() == "<!-- snippet: answer -->";
            if lines[i].trim() == "```json" && marked_answer {
                let mut body = Vec::new();
                i += 1;
                while i < lines.len() && lines[i].trim() != "```" {
                    body.push(lines[i]);
                    i += 1;
                }
                blocks.push((page.display().to_string(), Block::Answer(body.join("\n"))));
            } else if lines[i].trim() == "```sh" {
                let indent = lines[i].len() - lines[i].trim_start().len();
                let reason = i
                    .checked_sub(1)
                    .and_then(|p| lines[p].trim().strip_prefix("<!-- snippet: not run ("))
                    .and_then(|r| r.strip_suffix(") -->"))
                    .map(str::to_string);
                let mut body = Vec::new();
                i += 1;
                while i < lines.len() && lines[i].trim() != "```" {
                    body.push(lines[i].get(indent..).unwrap_or("").to_string());
                    i += 1;
                }
                blocks.push((
                    page.display().to_string(),
                    Block::Shell(body.join("\n"), reason),
                ));
            }
            i += 1;
        }
    }
    blocks
}

#[tokio::test]
async fn every_shell_block_runs_against_the_simulator_or_says_why_not() {
    let app = spawn_app_with(|s| {
        s.hooks = hooks_from_toml(ROUTES);
        s.auth.api_keys.push("dev-key".to_string().into());
        s.auth.admin_keys.push("admin-key".to_string().into());
        jobs_die_soon(s);
    })
    .await;
    app.sim.add_caller_call();
    // A dead job, for the dead-letter blocks to list and replay: Genesys fails its write until its
    // one second of retries is spent, then heals.
    app.sim
        .fail_next(patchbay::sim::Op::PatchAttributes, 503, 10_000);
    let queued = app
        .post_raw(
            "/v1/attributes",
            json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"a": "1"}}).to_string(),
            &[("x-api-key", API_KEY), ("prefer", "respond-async")],
        )
        .await;
    assert_eq!(queued.status, 202, "{}", queued.body);
    app.wait_for_job(queued.body["jobId"].as_str().unwrap(), "dead")
        .await;
    app.sim.clear_faults();
    let host = app.address.trim_start_matches("http://").to_string();
    let dir = std::env::temp_dir().join(format!(
        "patchbay-snippets-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("event.json"),
        // Another conversation than the API reference's sample, whose answer shows every attribute.
        format!(r#"{{"c":"{SEED_CHAT}","a":"x"}}"#),
    )
    .unwrap();
    let mut ran = 0;
    let mut answers = 0;
    let mut last_output = String::new();
    for (page, block) in blocks() {
        let (block, reason) = match block {
            Block::Answer(sample) => {
                // The sample is what the command before it printed, but for the request's own id.
                let strip = |mut v: serde_json::Value| {
                    v.as_object_mut().map(|o| o.remove("requestId"));
                    v
                };
                let sample: serde_json::Value = serde_json::from_str(&sample)
                    .unwrap_or_else(|e| panic!("{page}: the sample answer is not JSON: {e}"));
                let got: serde_json::Value = serde_json::from_str(last_output.trim())
                    .unwrap_or_else(|e| {
                        panic!("{page}: the command printed no JSON ({e}): {last_output}")
                    });
                assert_eq!(
                    strip(got),
                    strip(sample),
                    "{page}: the sample answer is not what the command returns"
                );
                answers += 1;
                continue;
            }
            Block::Shell(block, reason) => (block, reason),
        };
        if let Some(reason) = reason {
            assert!(
                !reason.trim().is_empty(),
                "{page}: a block not run says why"
            );
            continue;
        }
        let script = block.replace("localhost:8080", &host);
        let secret = if script.contains("/v1/hooks/billing") {
            "whsec_ZG9jLXN0YW5kYXJkLXdlYmhvb2tzLXNlY3JldA=="
        } else {
            "doc-secret"
        };
        let (dir, script2) = (dir.clone(), script.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", &script2])
                .current_dir(dir)
                .env("SECRET", secret)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{page}: the block failed:\n{block}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !refused(&stdout),
            "{page}: the block was refused:\n{block}\n{stdout}"
        );
        last_output = stdout.into_owned();
        ran += 1;
    }
    assert!(ran >= 10, "{ran} blocks ran");
    assert!(answers >= 1, "no sample answer was checked");
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether a block's output holds a problem answer: a JSON object whose own `status` is 4xx or 5xx
/// (a dead letter's problem, inside a listing, is not the listing's). `curl -s` prints one answer
/// after another without a separator, so each line is read as a stream of JSON values; a line that
/// is not all JSON is refused on any `"status":4xx|5xx` in it.
fn refused(stdout: &str) -> bool {
    stdout.lines().any(|line| {
        let values: Result<Vec<serde_json::Value>, _> = serde_json::Deserializer::from_str(line)
            .into_iter()
            .collect();
        match values {
            Ok(values) => values
                .iter()
                .any(|v| v["status"].as_u64().is_some_and(|s| s >= 400)),
            Err(_) => line.contains("\"status\":4") || line.contains("\"status\":5"),
        }
    })
}
