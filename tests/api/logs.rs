//! No secret ever reaches a log: not the client secret, a token, an API key, a Basic credential, a
//! webhook secret or a signature, at any level, in either format. The gateways run as real processes
//! with `RUST_LOG=trace`, so every library's logging is included.

use base64::Engine;
use patchbay::sim::{Op, Simulator};
use serde_json::json;

use crate::helpers::*;

const HOOKS: &str = r#"
[hooks.crm]
conversation_id = "/c"
[hooks.crm.attributes]
a = "/a"
[hooks.crm.auth]
scheme = "basic"
username = "u"
password = "basic-pass-51ab"

[hooks.gh]
conversation_id = "/c"
[hooks.gh.attributes]
a = "/a"
[hooks.gh.auth]
scheme = "hmac"
header = "X-Sig"
secrets = ["hmac-secret-77fe"]
"#;

const CONSOLE_KEY: &str = "console-admin-key-4f1a";
const CONSOLE_GUESS: &str = "console-guess-88aa";

async fn post(http: &reqwest::Client, url: String, body: String, headers: &[(&str, &str)]) -> u16 {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_the_logs_at_any_level() {
    let server = Simulator::new();
    let sim = server.control();
    // A call found by its caller's number: numbers, like secrets, never appear in full.
    sim.add_caller_call();
    let sim_url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let config = std::env::temp_dir().join(format!(
        "patchbay-logs-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&config, HOOKS).unwrap();
    let config_arg = config.display().to_string();
    let http = reqwest::Client::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    let good_basic = format!("Basic {}", b64.encode("u:basic-pass-51ab"));
    let bad_basic = format!("Basic {}", b64.encode("u:basic-guess-0c1d"));
    let wrong_key = "wrong-key-6d1e0a";
    let event = json!({"c": SEED_ACTIVE_CALL, "a": "x"}).to_string();
    let signature = hex::encode(hmac_sha256("hmac-secret-77fe", event.as_bytes()));
    let ok = json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"a": "b"}})
        .to_string();
    // Personal data sent as secure attributes, with a participant's and alone.
    let (dob, account) = ("dob-1970-07-04-e5c1", "acct-88172635-f0a9");
    let secure = [
        json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"a": "b"}, "secureAttributes": {"dob": dob, "account": account}}),
        json!({"conversationId": SEED_ACTIVE_CALL, "secureAttributes": {"dob": dob}}),
    ];

    // Bytes that are valid base64 and unmistakable in a log.
    let sealing_key = b64.encode(*b"sealing-key-4c2e-32-bytes-long!!");
    let sealing_keys = format!("k1:{sealing_key}");

    let mut all_logs = String::new();
    let mut sessions = Vec::new();
    for format in ["json", "pretty"] {
        let env = [
            ("PATCHBAY__LOG__FORMAT", format),
            ("RUST_LOG", "trace"),
            ("PATCHBAY__GENESYS__RETRY__MAX_ATTEMPTS", "4"),
            ("PATCHBAY__LOOKUP__ANALYTICS_WAIT_MS", "200"),
            ("PATCHBAY__AUTH__ADMIN_KEYS", CONSOLE_KEY),
            // Values on: secure ones must stay out of the console all the same.
            ("PATCHBAY__CONSOLE__SHOW_VALUES", "true"),
            // A key to seal queued secure attributes: itself a secret.
            ("PATCHBAY__SECURE__KEYS", &sealing_keys),
        ];
        let mut gateway =
            Gateway::in_front_of(&sim_url, &env).with_args(&["--config", &config_arg]);
        gateway.start();
        gateway.ready().await;
        let url = |path: &str| format!("{}{path}", gateway.address);
        assert_eq!(
            post(
                &http,
                url("/v1/attributes"),
                ok.clone(),
                &[("x-api-key", API_KEY)]
            )
            .await,
            200
        );
        for body in &secure {
            assert_eq!(
                post(
                    &http,
                    url("/v1/attributes"),
                    body.to_string(),
                    &[("x-api-key", API_KEY)]
                )
                .await,
                200
            );
        }
        // Queued, sealed, then written by a worker: its values stay out of the logs there too.
        let queued = http
            .post(url("/v1/attributes"))
            .header("x-api-key", API_KEY)
            .header("prefer", "respond-async")
            .header("idempotency-key", format!("logs-{format}"))
            .body(secure[0].to_string())
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(queued.status(), 202);
        let job: serde_json::Value = queued.json().await.unwrap();
        let job_url = url(&format!("/v1/jobs/{}", job["jobId"].as_str().unwrap()));
        let done = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let state: serde_json::Value = http
                .get(&job_url)
                .header("x-api-key", API_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if state["status"] == "succeeded" {
                break;
            }
            assert!(
                std::time::Instant::now() < done,
                "the job never ran: {state}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        sim.revoke_tokens();
        assert_eq!(
            post(
                &http,
                url("/v1/attributes"),
                ok.clone(),
                &[("authorization", &format!("Bearer {API_KEY}"))]
            )
            .await,
            200
        );
        sim.fail_next(Op::PatchAttributes, 503, 1);
        sim.rate_limit_next(Op::GetConversation, 1, 1);
        assert_eq!(
            post(
                &http,
                url("/v1/attributes"),
                ok.clone(),
                &[("x-api-key", API_KEY)]
            )
            .await,
            200
        );
        assert_eq!(
            post(
                &http,
                url("/v1/attributes"),
                ok.clone(),
                &[("x-api-key", wrong_key)]
            )
            .await,
            401
        );
        assert_eq!(
            post(
                &http,
                url("/v1/hooks/crm"),
                event.clone(),
                &[("authorization", &good_basic)]
            )
            .await,
            200
        );
        assert_eq!(
            post(
                &http,
                url("/v1/hooks/crm"),
                event.clone(),
                &[("authorization", &bad_basic)]
            )
            .await,
            401
        );
        assert_eq!(
            post(
                &http,
                url("/v1/hooks/gh"),
                event.clone(),
                &[("x-sig", &signature)]
            )
            .await,
            200
        );
        assert_eq!(
            post(
                &http,
                url("/v1/hooks/gh"),
                event.clone(),
                &[("x-sig", &signature)]
            )
            .await,
            401
        );
        for (number, status) in [("+1 317 555 0123", 200), ("+1 317 555 0164", 404)] {
            let lookup = json!({"lookup": {"ani": number}, "attributes": {"a": "b"}}).to_string();
            assert_eq!(
                post(
                    &http,
                    url("/v1/attributes"),
                    lookup,
                    &[("x-api-key", API_KEY)]
                )
                .await,
                status
            );
        }
        // The console: a wrong admin key, the right one, and pages read with the session.
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        for (key, status) in [(CONSOLE_GUESS, 401), (CONSOLE_KEY, 303)] {
            let answer = no_redirects
                .post(url("/console/sign-in"))
                .form(&[("key", key)])
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), status);
            if let Some(cookie) = answer.headers().get("set-cookie") {
                let cookie = cookie
                    .to_str()
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .to_string();
                let page = no_redirects
                    .get(url("/console/updates"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(page.status(), 200);
                let page = page.text().await.unwrap();
                for value in [dob, account] {
                    assert!(!page.contains(value), "a secure value reached the console");
                }
                sessions.push(cookie.split_once('=').unwrap().1.to_string());
            }
        }
        gateway.terminate();

        let mut denied = Gateway::in_front_of(
            &sim_url,
            &[
                ("PATCHBAY__LOG__FORMAT", format),
                ("RUST_LOG", "trace"),
                ("PATCHBAY__GENESYS__CLIENT_SECRET", "not-the-secret-9f2c"),
            ],
        );
        denied.start();
        denied.ready().await;
        let refused = post(
            &http,
            format!("{}/v1/attributes", denied.address),
            ok.clone(),
            &[("x-api-key", API_KEY)],
        )
        .await;
        assert_eq!(refused, 502);
        denied.terminate();

        let logs = gateway.log_text() + &denied.log_text();
        assert!(
            logs.contains("Genesys call failed; retrying"),
            "the capture saw the retries:\n{logs}"
        );
        assert!(
            logs.contains("replayed"),
            "the capture saw why a webhook was refused"
        );
        assert!(
            logs.contains("TRACE") || logs.contains("\"level\":\"TRACE\""),
            "trace level was on"
        );
        all_logs.push_str(&logs);
    }

    let basic = |secret: &str| b64.encode(format!("{}:{secret}", patchbay::sim::DEFAULT_CLIENT_ID));
    let mut secrets = vec![
        patchbay::sim::DEFAULT_CLIENT_SECRET.to_string(),
        "not-the-secret-9f2c".to_string(),
        basic(patchbay::sim::DEFAULT_CLIENT_SECRET),
        basic("not-the-secret-9f2c"),
        // The callers' numbers, in any form: only their last four digits may show.
        "5550123".to_string(),
        "5550164".to_string(),
        API_KEY.to_string(),
        wrong_key.to_string(),
        "basic-pass-51ab".to_string(),
        "basic-guess-0c1d".to_string(),
        good_basic.trim_start_matches("Basic ").to_string(),
        bad_basic.trim_start_matches("Basic ").to_string(),
        "hmac-secret-77fe".to_string(),
        dob.to_string(),
        account.to_string(),
        sealing_key.clone(),
        signature.clone(),
        CONSOLE_KEY.to_string(),
        CONSOLE_GUESS.to_string(),
    ];
    assert_eq!(sessions.len(), 2, "a console session in each format");
    secrets.extend(sessions);
    let tokens = sim.issued_tokens();
    assert!(tokens.len() >= 3);
    secrets.extend(tokens);
    for secret in secrets {
        assert!(
            !all_logs.contains(&secret),
            "`{secret}` leaked into the logs"
        );
    }
    let _ = std::fs::remove_file(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_is_logged_once() {
    let server = Simulator::new();
    let sim_url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut gateway = Gateway::in_front_of(
        &sim_url,
        &[
            ("PATCHBAY__LOG__FORMAT", "json"),
            ("PATCHBAY__GENESYS__CLIENT_SECRET", "not-the-secret-3c7d"),
        ],
    );
    gateway.start();
    gateway.ready().await;
    let body = json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"a": "b"}});
    let status = post(
        &reqwest::Client::new(),
        format!("{}/v1/attributes", gateway.address),
        body.to_string(),
        &[("x-api-key", API_KEY)],
    )
    .await;
    assert_eq!(status, 502);
    gateway.terminate();
    let logs = gateway.log_text();
    let errors: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one ERROR line per failed request:\n{logs}"
    );
    assert!(errors[0].contains("upstream_auth_failed"), "{}", errors[0]);
}

/// Field names of one pretty line: every `name=` token, in the spans' part and the event's.
fn pretty_fields(line: &str) -> Vec<String> {
    line.split(|c: char| c.is_whitespace() || c == '{' || c == '}' || c == ':')
        .filter_map(|token| token.split_once('='))
        .map(|(name, _)| name.to_string())
        .filter(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .collect()
}

/// Field names of one JSON line: the event's, then every span's.
fn json_fields(line: &str) -> Vec<String> {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let mut names = Vec::new();
    let mut objects = vec![value];
    while let Some(serde_json::Value::Object(object)) = objects.pop() {
        for (name, inner) in object {
            match (name.as_str(), inner) {
                ("span", inner @ serde_json::Value::Object(_)) => objects.push(inner),
                ("spans", serde_json::Value::Array(items)) => objects.extend(items),
                (_, _) => names.push(name),
            }
        }
    }
    names.retain(|n| n != "name");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_field_appears_once_on_a_line_and_a_file_gets_no_colours() {
    let server = Simulator::new();
    let sim_url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let http = reqwest::Client::new();
    for format in ["pretty", "json"] {
        let mut gateway = Gateway::in_front_of(
            &sim_url,
            &[
                ("PATCHBAY__LOG__FORMAT", format),
                ("RUST_LOG", "info"),
                ("PATCHBAY__LOOKUP__ANALYTICS_WAIT_MS", "300"),
                ("PATCHBAY__LOOKUP__ANALYTICS_RETRY_MS", "50"),
            ],
        );
        gateway.start();
        gateway.ready().await;
        let url = format!("{}/v1/attributes", gateway.address);
        // By purpose: a read, the PATCH and the read back, each with a correlation id.
        let by_purpose = json!({"conversationId": SEED_ACTIVE_CALL, "purpose": "agent", "attributes": {"a": "b"}});
        assert_eq!(
            post(
                &http,
                url.clone(),
                by_purpose.to_string(),
                &[("x-api-key", API_KEY)]
            )
            .await,
            200
        );
        // A lookup that finds nothing, after several queries.
        let not_found = json!({"lookup": {"ani": "+13175550999"}, "attributes": {"a": "b"}});
        assert_eq!(
            post(
                &http,
                url.clone(),
                not_found.to_string(),
                &[("x-api-key", API_KEY)]
            )
            .await,
            404
        );
        gateway.terminate();
        let logs = gateway.log_text();
        assert!(
            !logs.contains('\u{1b}'),
            "{format}: ANSI escapes in a file:\n{logs}"
        );
        let mut lines = 0;
        for line in logs.lines().filter(|l| !l.trim().is_empty()) {
            let mut names = match format {
                "json" => json_fields(line),
                _ => pretty_fields(line),
            };
            let all = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), all, "{format}: a field twice in\n{line}");
            lines += 1;
        }
        assert!(logs.contains("attributes updated"), "{logs}");
        assert!(logs.contains("genesys_correlation_id"), "{logs}");
        assert!(lines >= 3, "{logs}");
    }
}
