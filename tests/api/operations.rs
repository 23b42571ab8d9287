//! What operators see: Prometheus metrics, readiness, and structured logs that carry the ids.

use serde_json::json;

use crate::helpers::*;

fn agent_update() -> serde_json::Value {
    json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"vip": true}})
}

#[tokio::test(start_paused = true)]
async fn metrics_count_requests_genesys_calls_tokens_verifications_and_the_queue_by_template() {
    let app = spawn_app().await;
    assert_eq!(app.post_attributes(agent_update()).await.status, 200);
    app.get_with("/v1/jobs/00000000-0000-0000-0000-000000000000", API_KEY)
        .await
        .assert_problem(404, "job_not_found");
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").starts_with("text/plain"));
    let text = metrics.body.as_str().unwrap();
    for expected in [
        r#"patchbay_http_requests_total{route="/v1/attributes",method="POST",status="200"}"#,
        r#"patchbay_http_requests_total{route="/v1/jobs/{id}",method="GET",status="404"}"#,
        r#"patchbay_http_request_duration_seconds_bucket{route="/v1/attributes",method="POST",le="0.005"}"#,
        r#"patchbay_genesys_calls_total{operation="patch_participant_attributes",status="202"}"#,
        r#"patchbay_genesys_call_duration_seconds_bucket{operation="get_conversation""#,
        r#"patchbay_token_grants_total{outcome="granted"}"#,
        r#"patchbay_verifications_total{outcome="verified"}"#,
        "patchbay_queue_depth ",
        "patchbay_queue_oldest_job_age_seconds ",
        "patchbay_dead_letters ",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    // Labels are templates: no id of a conversation, participant or job.
    for id in [
        SEED_ACTIVE_CALL,
        SEED_ACTIVE_CALL_AGENT,
        "00000000-0000-0000-0000-000000000000",
    ] {
        assert!(!text.contains(id), "{id} leaked into a label");
    }
    // Every metric says what it is.
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(types.len() >= 8, "{text}");
    for name in types {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no # HELP for {name} in\n{text}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_move_to_the_admin_address_when_one_is_set() {
    let app =
        spawn_app_with(|s| s.server.admin_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    app.get("/metrics").await.assert_problem(404, "not_found");
    // Bound before the app runs: the address is ready when the app is handed back.
    let admin = app.admin_address.as_deref().expect("an admin listener");
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("patchbay_"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn readyz_is_ready_with_a_token_and_a_queue_and_healthz_stays_live() {
    let app = spawn_app().await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        ready.body,
        json!({"status": "ready", "checks": {"config": "ok", "queue": "ok", "genesys": "ok"}})
    );
}

#[tokio::test(start_paused = true)]
async fn readyz_is_not_ready_when_genesys_refuses_the_client_and_probes_do_not_hammer_login() {
    let app = spawn_app_with(|s| s.genesys.client_secret = "wrong".to_string().into()).await;
    for _ in 0..5 {
        let answer = app.get("/readyz").await;
        assert_eq!(answer.status, 503);
        assert_eq!(answer.body["status"], "not_ready");
        assert_eq!(answer.body["checks"]["genesys"], "upstream_auth_failed");
        assert_eq!(app.get("/healthz").await.status, 200);
    }
    assert_eq!(app.sim.count("token"), 1);
}

#[tokio::test]
async fn readyz_is_not_ready_without_its_queue() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(|s| {
        on_redis(s, &format!("redis://127.0.0.1:{port}"), &unique_prefix());
        s.redis.timeout_ms = 200;
    })
    .await;
    let answer = app.get("/readyz").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.body["checks"]["queue"], "queue_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_route_conversation_participant_and_correlation_ids() {
    let server = patchbay::sim::Simulator::new();
    let sim_url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut gateway = Gateway::in_front_of(
        &sim_url,
        &[
            ("PATCHBAY__LOG__FORMAT", "json"),
            ("RUST_LOG", "patchbay=debug"),
        ],
    );
    gateway.start();
    gateway.ready().await;
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/attributes", gateway.address))
        .header("x-api-key", API_KEY)
        .header("x-request-id", "req-logs-1")
        .json(&agent_update())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    gateway.terminate();
    let logs = gateway.log_text();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["message"] == "attributes updated")
        .unwrap_or_else(|| panic!("the update is logged:\n{logs}"));
    // The update came alone: it did not share its PATCH and its read back.
    assert_eq!(line["genesys_calls"], 2, "{line}");
    assert_eq!(line["shared_with"], 1, "{line}");
    let span = &line["span"];
    assert_eq!(span["request_id"], "req-logs-1");
    assert_eq!(span["route"], "/v1/attributes");
    assert_eq!(span["conversation_id"], SEED_ACTIVE_CALL);
    assert_eq!(span["participant_id"], SEED_ACTIVE_CALL_AGENT);
    let correlation = span["genesys_correlation_id"]
        .as_str()
        .expect("a correlation id");
    assert_eq!(correlation.len(), 36);
    // Every upstream call is logged at debug with its own correlation id.
    let calls: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "Genesys call")
        .collect();
    assert!(calls.len() >= 2, "{logs}");
    assert!(
        calls.iter().all(|c| c["correlation_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36)),
        "{logs}"
    );
}

/// The value of an unlabelled metric in a Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("missing {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn metrics_show_the_calls_saved_the_budget_genesys_reports_and_the_updates_refused_for_it() {
    // A budget of 5 calls; the recorder is the process's, so figures only ever grow past ours.
    let app = spawn_app_with(|s| {
        s.genesys.rate_per_minute = 5;
        s.delivery.linger_ms = 400;
    })
    .await;
    // Four updates for the agent at once: one PATCH and one read for all (2 calls, 3 coalesced).
    let burst = futures::future::join_all((0..4).map(|i| {
        app.post_attributes(serde_json::json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {format!("k{i}"): i}}))
    }))
    .await;
    assert!(burst.iter().all(|a| a.status == 200));
    // By purpose, right after: the read just made finds the agent (a PATCH and a read: 4 calls).
    let by_purpose = serde_json::json!({"conversationId": SEED_ACTIVE_CALL, "purpose": "agent", "attributes": {"p": 1}});
    assert_eq!(app.post_attributes(by_purpose).await.status, 200);
    // The fifth call alone cannot serve another update.
    app.post_attributes(agent_update())
        .await
        .assert_problem(429, "rate_limited");
    let text = app.get("/metrics").await.body.as_str().unwrap().to_string();
    // Five reached the engine; the refused one never did.
    assert!(metric(&text, "patchbay_updates_total") >= 5.0, "{text}");
    assert!(metric(&text, "patchbay_updates_coalesced_total") >= 3.0);
    assert!(metric(&text, "patchbay_reads_reused_total") >= 1.0);
    assert!(metric(&text, "patchbay_admission_refusals_total") >= 1.0);
    for gauge in [
        "patchbay_genesys_ratelimit_calls",
        "patchbay_genesys_ratelimit_allowed",
        "patchbay_genesys_ratelimit_reset_seconds",
    ] {
        metric(&text, gauge);
    }
    promtool_accepts(&text);
}

/// Prometheus's own linter reads the scrape: names, types, units and help as Prometheus wants them
/// (a gauge must not end in `_count`, a counter must end in `_total`).
fn promtool_accepts(scrape: &str) {
    use std::io::Write;
    let promtool = std::env::var("PATCHBAY_TEST_PROMTOOL").unwrap_or("promtool".into());
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the scrape is checked by Prometheus's promtool ({promtool}: {e}). Install Debian's \
                 prometheus package (.ci/run does), or set PATCHBAY_TEST_PROMTOOL"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
