//! Every shell block of the README and the book runs as written against a gateway in front of the
//! simulator, with the settings the docs start it with (`dev-key`, `admin-key`, the routes the
//! webhook guide configures), or says why it is not run (`<!-- snippet: not run (why) -->`). A block
//! that starts the simulator and a gateway by hand (`<!-- snippet: processes -->`) runs too: its
//! processes start as written, and the blocks that follow it (`<!-- snippet: with the processes
//! above -->`) are sent to them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    Shell(String, Mark),
    Answer(String),
}

/// How a shell block runs, from the comment on the line before it.
#[derive(PartialEq)]
enum Mark {
    /// Against the suite's gateway, with the docs' settings.
    Run,
    /// Each command starts a process that keeps running, as in a terminal of its own.
    Processes,
    /// Against the processes the last `Processes` block of the page started.
    WithProcesses,
    /// Not run, for the reason given.
    NotRun(String),
}

impl Mark {
    fn of(comment: &str) -> Mark {
        match comment.trim() {
            "<!-- snippet: processes -->" => Mark::Processes,
            "<!-- snippet: with the processes above -->" => Mark::WithProcesses,
            other => other
                .strip_prefix("<!-- snippet: not run (")
                .and_then(|r| r.strip_suffix(") -->"))
                .map_or(Mark::Run, |r| Mark::NotRun(r.to_string())),
        }
    }
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
                let mark = i.checked_sub(1).map_or(Mark::Run, |p| Mark::of(lines[p]));
                let mut body = Vec::new();
                i += 1;
                while i < lines.len() && lines[i].trim() != "```" {
                    body.push(lines[i].get(indent..).unwrap_or("").to_string());
                    i += 1;
                }
                blocks.push((
                    page.display().to_string(),
                    Block::Shell(body.join("\n"), mark),
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
    let scratch = Scratch::new("snippets");
    let dir = scratch.0.clone();
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
        let (block, mark) = match block {
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
            Block::Shell(block, mark) => (block, mark),
        };
        match mark {
            Mark::Run => {}
            Mark::NotRun(reason) => {
                assert!(
                    !reason.trim().is_empty(),
                    "{page}: a block not run says why"
                );
                continue;
            }
            // Run by the next test, against processes of their own.
            Mark::Processes | Mark::WithProcesses => continue,
        }
        let script = as_built(&block.replace("localhost:8080", &host));
        let secret = if script.contains("/v1/hooks/billing") {
            "whsec_ZG9jLXN0YW5kYXJkLXdlYmhvb2tzLXNlY3JldA=="
        } else {
            "doc-secret"
        };
        let queue_path = app.queue_path.display().to_string();
        let out = run(
            &script,
            &dir,
            // A command run "on the same store" as the gateway, as `patchbay replay` is.
            &[("SECRET", secret), ("PATCHBAY__QUEUE__PATH", &queue_path)],
        )
        .await;
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
}

/// A directory of the test's own, removed when it is dropped, pass or fail.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("patchbay-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a shell block as the docs' reader would (`bash -euo pipefail`), in `dir`, with `env` set.
async fn run(script: &str, dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
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

/// Where the docs' hand-started gateway and simulator listen.
const DOCS_PORTS: [u16; 2] = [8080, 9090];

#[tokio::test]
async fn every_block_that_starts_the_simulator_and_a_gateway_runs_as_written() {
    for port in DOCS_PORTS {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken: the docs start the simulator and the gateway on 8080 and 9090, \
             and this test runs their blocks as written"
        );
    }
    // A directory of its own, so the gateway's store (`data/`) is not written into the checkout; the
    // recipes the blocks name are where the docs say.
    let scratch = Scratch::new("processes");
    let dir = &scratch.0;
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes"),
        dir.join("recipes"),
    )
    .unwrap();
    let (mut started, mut sent) = (0, 0);
    let mut processes: Option<Processes> = None;
    let mut last_page = String::new();
    for (page, block) in blocks() {
        if page != last_page {
            processes = None;
            last_page.clone_from(&page);
        }
        let Block::Shell(block, mark) = block else {
            continue;
        };
        match mark {
            Mark::Processes => {
                // Those a block above started stop before these bind the same ports.
                drop(processes.take());
                let running = Processes::start(&page, &block, dir).await;
                if block.contains("PATCHBAY__AUTH__ADMIN_KEYS") {
                    // The start-up line says where the user opens the console, in their browser.
                    let logs = running.logs();
                    assert!(
                        logs.contains("console=\"http://127.0.0.1:8080/console\""),
                        "{page}: the start-up line does not say where the console is:\n{logs}"
                    );
                }
                processes = Some(running);
                started += 1;
            }
            Mark::WithProcesses => {
                let running = processes
                    .as_mut()
                    .unwrap_or_else(|| panic!("{page}: no block above starts processes"));
                let out = run(&as_built(&block), dir, &[]).await;
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && !refused(&stdout),
                    "{page}: the block failed:\n{block}\n{stdout}\n{}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    running.logs()
                );
                let answer: serde_json::Value =
                    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
                        panic!("{page}: the block printed no answer ({e}): {stdout}")
                    });
                assert_eq!(answer["verified"], true, "{page}: {answer}");
                sent += 1;
            }
            Mark::Run | Mark::NotRun(_) => {}
        }
    }
    drop(processes);
    assert!(started >= 2, "{started} blocks started processes");
    assert!(sent >= 2, "{sent} blocks were sent to them");
}

/// The block as the test runs it: `cargo run --release --` is the `patchbay` binary the suite
/// built, which is what that command runs; nothing else changes.
fn as_built(block: &str) -> String {
    block.replace("cargo run --release --", env!("CARGO_BIN_EXE_patchbay"))
}

/// The processes one block started, each in a process group of its own, as a terminal would hold
/// it. Dropping kills every group, pass or fail.
struct Processes {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Processes {
    /// Starts each command of the block (a line, with its `\` continuations; a trailing `&` is the
    /// terminal's business), then waits until the gateway on 8080 is ready: it has a token from the
    /// simulator on 9090 and its store answers.
    async fn start(page: &str, block: &str, dir: &Path) -> Processes {
        let mut running = Processes {
            children: Vec::new(),
            logs: Vec::new(),
        };
        let joined = as_built(block).replace("\\\n", " ");
        for (n, command) in joined.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let command = command.trim().trim_end_matches('&').trim_end();
            let log = dir.join(format!("process-{n}.log"));
            let child = Command::new("bash")
                .args(["-c", command])
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .process_group(0)
                .spawn()
                .unwrap();
            running.children.push(child);
            running.logs.push(log);
        }
        let started = Instant::now();
        loop {
            let ready = reqwest::get("http://127.0.0.1:8080/readyz")
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return running;
            }
            for child in &mut running.children {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{page}: a process exited ({status}):\n{block}\n{}",
                        running.logs()
                    );
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{page}: the gateway never became ready on 8080:\n{block}\n{}",
                running.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What each process logged, for a failure's message.
    fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            // The group's id is the shell's pid (`process_group(0)`).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed listener's port is free a moment later: the next block binds the same ports.
        let started = Instant::now();
        while DOCS_PORTS
            .iter()
            .any(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_err())
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
