//! Start-up: the binary refuses a bad configuration and names the key; the demo succeeds.

use std::process::Command;

use crate::helpers::Gateway;

fn serve_with(env: &[(&str, &str)]) -> (bool, String) {
    let (code, all) = serve_exit(env);
    (code == Some(0), all)
}

/// Runs `patchbay serve` with only `env` of Patchbay's, returning its exit code and everything it
/// wrote.
fn serve_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchbay"));
    cmd.arg("serve").env_remove("RUST_LOG");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PATCHBAY__")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    // Both streams: the logs go to one, the start-up error to the other.
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
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

#[test]
fn every_start_up_failure_is_one_line_style_and_exit_status_2_naming_what_to_mend() {
    let mut typo = CREDENTIALS.to_vec();
    typo.push(("PATCHBAY__GENESYS__CLIENT_SECRT", "x"));
    typo.push(("PATCHBAY__QUEUE__WORKERS", "0"));
    let (code, all) = serve_exit(&typo);
    assert_eq!(code, Some(2), "{all}");
    assert!(
        all.starts_with("patchbay: invalid configuration (2 problems):"),
        "{all}"
    );
    assert!(
        all.contains("PATCHBAY__GENESYS__CLIENT_SECRT: sets `genesys.client_secrt`, which is not a key; did you mean PATCHBAY__GENESYS__CLIENT_SECRET"),
        "{all}"
    );
    assert!(
        all.contains("queue.workers: must be between 1 and 256"),
        "{all}"
    );

    let mut routes = CREDENTIALS.to_vec();
    routes.push(("PATCHBAY__HOOKS__CRM__PURPOSE", "customer"));
    routes.push(("PATCHBAY__HOOKS__ZENDESK__PURPOSE", "customer"));
    let (code, all) = serve_exit(&routes);
    assert_eq!(code, Some(2), "{all}");
    assert!(all.starts_with("patchbay: invalid configuration"), "{all}");
    assert!(
        all.contains("(2 problems)"),
        "every route's problem at once: {all}"
    );
    assert!(
        all.contains("hooks.crm:") && all.contains("hooks.zendesk:"),
        "{all}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("patchbay-bind-{}", uuid::Uuid::new_v4().simple()));
    let path = dir.join("q.sqlite3").display().to_string();
    let mut bind = CREDENTIALS.to_vec();
    bind.push(("PATCHBAY__SERVER__LISTEN", &listen));
    bind.push(("PATCHBAY__QUEUE__PATH", &path));
    let (code, all) = serve_exit(&bind);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(2), "{all}");
    let last = all.lines().last().unwrap_or_default();
    assert!(last.starts_with("patchbay: cannot listen on"), "{all}");
    assert!(!all.contains("Error:"), "Rust's own error form: {all}");
}

#[test]
fn serve_help_names_the_environment_variables_and_the_required_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needed in [
        "PATCHBAY__<SECTION>__<KEY>",
        "PATCHBAY__GENESYS__CLIENT_SECRET",
        "genesys.client_id",
        "genesys.client_secret",
        "auth.api_keys",
        "config/default.toml",
    ] {
        assert!(help.contains(needed), "`{needed}` missing from:\n{help}");
    }
}

#[test]
fn serve_that_cannot_open_its_store_exits_before_it_binds_or_says_it_serves() {
    // The store's directory would have to be created inside a regular file: it cannot open.
    let blocker = std::env::temp_dir().join(format!("patchbay-file-{}", uuid::Uuid::new_v4()));
    std::fs::write(&blocker, b"not a directory").unwrap();
    let path = blocker.join("queue.sqlite3");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env = CREDENTIALS.to_vec();
    let listen = format!("127.0.0.1:{port}");
    let path = path.display().to_string();
    env.push(("PATCHBAY__SERVER__LISTEN", &listen));
    env.push(("PATCHBAY__QUEUE__PATH", &path));
    let (ok, all) = serve_with(&env);
    let _ = std::fs::remove_file(&blocker);
    assert!(!ok, "{all}");
    assert!(all.contains("queue.path"), "{all}");
    assert!(!all.contains("serving"), "it announced itself first: {all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_gets_every_answer_right() {
    let mut out = Vec::new();
    let ok = patchbay::demo::run(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("verified:     true"));
    assert!(
        !text.contains("WARN"),
        "the demo's output is the user's: {text}"
    );
    assert!(text.contains("409 conversation_ended"));
    // The signed CRM webhook went through its TOML route, and the forged copy did not.
    assert!(text.contains("\"ticketId\":\"4711\""), "{text}");
    assert!(text.contains("recipes/zendesk/route.toml"), "{text}");
    assert!(text.contains("401 unauthorized"), "{text}");
    // The summary gives the cost per update and why verification polled, then the next step.
    assert!(text.contains("per update"), "{text}");
    assert!(text.contains("polls again"), "{text}");
    assert!(text.contains("Next: wire your CRM"), "{text}");
    // It speaks the caller's words: a participant sent by id is named so.
    assert!(
        text.contains("addressed by: the conversationId it sent; the participantId it sent"),
        "{text}"
    );
    // The screen pop by number, for the call the mirror saw come in: one Genesys call, the PATCH.
    let pop = text
        .split("\n\n")
        .find(|event| event.contains("knowing only the number"))
        .expect("the screen pop by number");
    assert!(pop.contains("answered by the mirror (no call)"), "{pop}");
    assert!(
        pop.contains("confirmed by: an event Genesys pushed (no call)"),
        "{pop}"
    );
    assert!(pop.contains("Genesys calls: 1\n"), "{pop}");
}

#[tokio::test]
async fn patchbay_replay_requeues_dead_jobs_in_the_shared_store() {
    use patchbay::store::queue::sqlite::SqliteQueue;
    use patchbay::store::queue::{Enqueued, JobQueue, JobStatus, StoredProblem, StoredUpdate};
    use std::time::Duration;

    let dir =
        std::env::temp_dir().join(format!("patchbay-replay-{}", uuid::Uuid::new_v4().simple()));
    let path = dir.join("queue.sqlite3");
    let queue = SqliteQueue::open(&path, Duration::from_secs(60), Duration::from_secs(60)).unwrap();
    let update = StoredUpdate {
        conversation_id: patchbay::sim::SEED_ACTIVE_CALL.into(),
        participant_id: Some(patchbay::sim::SEED_ACTIVE_CALL_AGENT.into()),
        purpose: None,
        attributes: [("k".to_string(), "v".to_string())].into(),
        verify: None,
        ..Default::default()
    };
    let Enqueued::Created(job) = queue.enqueue(update, "req-1", None).await.unwrap() else {
        panic!("not created")
    };
    let batch = queue.claim(10).await.unwrap().unwrap();
    let problem = StoredProblem {
        code: "upstream_error".into(),
        status: 502,
        title: "t".into(),
        detail: "d".into(),
    };
    // A horizon of zero: the first transient failure kills the job.
    queue
        .retry(
            &batch,
            patchbay::store::queue::now_ms() + 1000,
            0,
            "503",
            problem,
        )
        .await
        .unwrap();
    assert_eq!(
        queue.get(&job.id).await.unwrap().unwrap().status,
        JobStatus::Dead
    );

    // Only the store's settings: no Genesys client, no inbound key.
    let replay = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_patchbay"))
            .arg("replay")
            .args(args)
            .env("PATCHBAY__QUEUE__PATH", &path)
            .output()
            .unwrap()
    };
    let bad_store = Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(["replay", "--all"])
        .env("PATCHBAY__QUEUE__BACKEND", "redis")
        .env("PATCHBAY__REDIS__URL", "http://127.0.0.1:6379")
        .output()
        .unwrap();
    assert_eq!(bad_store.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_store.stderr).contains("redis.url"));
    let missing = replay(&["--id", "no-such-job"]);
    assert!(!missing.status.success());
    let all = replay(&["--all"]);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    assert!(String::from_utf8_lossy(&all.stdout).contains("1 dead job(s) queued again"));
    assert_eq!(
        queue.get(&job.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigterm_stops_the_gateway_within_its_shutdown_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("patchbay-term-{}", uuid::Uuid::new_v4().simple()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .arg("serve")
        .envs(CREDENTIALS)
        .env("PATCHBAY__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("PATCHBAY__SERVER__SHUTDOWN_TIMEOUT_MS", "2000")
        .env("PATCHBAY__QUEUE__PATH", dir.join("q.sqlite3"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let health = format!("http://127.0.0.1:{port}/healthz");
    let started = std::time::Instant::now();
    while reqwest::get(&health)
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the gateway never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let asked = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(5),
            "still running after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < std::time::Duration::from_millis(2000),
        "took {:?}",
        asked.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_start_up_line_says_where_the_console_is_when_it_is_served() {
    let server = patchbay::sim::Simulator::new();
    let sim_url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut with_console =
        Gateway::in_front_of(&sim_url, &[("PATCHBAY__AUTH__ADMIN_KEYS", "admin-key")]);
    with_console.start();
    let console = format!("{}/console", with_console.address);
    let line = serving_line(&with_console.log_text());
    assert!(line.contains(&console), "{line}");
    let page = reqwest::get(format!("{console}/sign-in")).await.unwrap();
    assert_eq!(page.status(), 200, "the console is where the line says");

    // Without an admin key there is no console, and the line names none.
    let mut without = Gateway::in_front_of(&sim_url, &[]);
    without.start();
    let line = serving_line(&without.log_text());
    assert!(!line.contains("/console"), "{line}");
}

/// The gateway's start-up line (`patchbay is serving`).
fn serving_line(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("patchbay is serving"))
        .expect("the gateway said it serves")
        .to_string()
}
