//! The OpenAPI document, checked by a fuzzer: schemathesis (pinned, from PyPI) drives a running
//! gateway, with the simulator behind it, through a few hundred generated requests, valid and
//! invalid. No 5xx, no answer outside the documented statuses, content types, headers or schemas,
//! and no request the document calls valid refused as malformed.

use std::process::Command;

use crate::helpers::*;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance,positive_data_acceptance";

/// What a request valid under the document may be answered: anything but 400. Beside schemathesis's
/// defaults, 413 and 422: the body and attribute limits are settings the document cannot know.
const SCHEMATHESIS_TOML: &str = "[checks.positive_data_acceptance]\n\
expected-statuses = [\"2xx\", \"401\", \"403\", \"404\", \"409\", \"413\", \"422\", \"429\", \"5xx\"]\n";

const CRM_ROUTE: &str =
    "[hooks.crm]\nconversation_id = \"/c\"\n[hooks.crm.attributes]\na = \"/a\"\n";
const ADMIN: &str = "schemathesis-admin-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_5xx_and_only_documented_answers() {
    let server = patchbay::sim::Simulator::new();
    let sim_url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let config = std::env::temp_dir().join(format!(
        "patchbay-st-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&config, CRM_ROUTE).unwrap();
    let st_config = config.with_extension("schemathesis.toml");
    std::fs::write(&st_config, SCHEMATHESIS_TOML).unwrap();
    let config_arg = config.display().to_string();
    // Valid lookups of numbers no call has wait for analytics to catch up: not long, here.
    let mut gateway = Gateway::in_front_of(
        &sim_url,
        &[
            ("PATCHBAY__AUTH__ADMIN_KEYS", ADMIN),
            ("PATCHBAY__LOOKUP__ANALYTICS_WAIT_MS", "50"),
        ],
    )
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
        let (schema, bin, st_config) = (schema.clone(), bin.clone(), st_config.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(bin.join("schemathesis"))
                .arg("--config-file")
                .arg(&st_config)
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
    let _ = std::fs::remove_file(st_config);
}
