//! The OpenAPI document, checked by a fuzzer: schemathesis (pinned, from PyPI) drives a running
//! gateway, with the simulator behind it, through a few hundred generated requests. No 5xx, no
//! answer outside the documented statuses, content types, headers or schemas.

use std::process::Command;

use crate::helpers::*;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance";

const CRM_ROUTE: &str =
    "[hooks.crm]\nconversation_id = \"/c\"\n[hooks.crm.attributes]\na = \"/a\"\n";
const ADMIN: &str = "schemathesis-admin-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_5xx_and_only_documented_answers() {
    let sim = patchbay::sim::Simulator::new();
    let sim_url = sim.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let config = std::env::temp_dir().join(format!(
        "patchbay-st-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&config, CRM_ROUTE).unwrap();
    let config_arg = config.display().to_string();
    let mut gateway = Gateway::in_front_of(&sim_url, &[("PATCHBAY__AUTH__ADMIN_KEYS", ADMIN)])
        .with_args(&["--config", &config_arg]);
    gateway.start();
    gateway.ready().await;

    let bin = tokio::task::spawn_blocking(python_tools).await.unwrap();
    let schema = format!("{}/openapi.json", gateway.address);
    // Ingest endpoints with an ingest key, then the admin endpoints with an admin key.
    for (key, filter) in [
        (API_KEY, "--exclude-path-regex"),
        (ADMIN, "--include-path-regex"),
    ] {
        let (schema, bin) = (schema.clone(), bin.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(bin.join("schemathesis"))
                .args([
                    "run",
                    &schema,
                    "--checks",
                    CHECKS,
                    "--max-examples",
                    "40",
                    "--seed",
                    "7",
                ])
                .args([
                    "--phases",
                    "examples,coverage,fuzzing",
                    "--header",
                    &format!("X-API-Key: {key}"),
                ])
                // One worker: Hypothesis describes strategies with `ast.parse`, and CPython 3.11's
                // parser can fail with "AST constructor recursion depth mismatch" when two threads
                // parse at once (CPython gh-106905), an error of the tool, not of the API.
                .args([filter, "dead-letters", "--workers", "1"])
                .env("NO_COLOR", "1")
                .output()
                .expect("schemathesis runs")
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let cases = text
            .lines()
            .find(|l| l.contains(" generated,"))
            .unwrap_or_default()
            .trim()
            .to_string();
        println!("schemathesis ({key}): {cases}");
        assert!(
            out.status.success(),
            "schemathesis found problems:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_file(config);
}
