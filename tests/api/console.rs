//! The operator console, driven in a real browser (headless Chromium through WebDriver) and, for
//! what a browser does not show (cookie flags, headers, refusals), over plain HTTP.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use patchbay::sim::Op;
use serde_json::json;

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium of its own, through a chromedriver of its own, stopped when dropped, pass
/// or fail.
///
/// Killing chromedriver alone leaves its Chromium running (about 230 MB each), so the driver
/// starts in a process group of its own, which its browsers join: dropping ends the WebDriver
/// session (Chromium quits as it would for a user), then kills the whole group for whatever a
/// panic left behind.
struct Browser {
    client: Client,
    driver: Child,
    port: u16,
    session: Option<String>,
    /// Chromium's profile, which names every process of this browser on its command line.
    profile: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            end_session(self.port, session);
        }
        // The group's id is the driver's pid (`process_group(0)`).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/{id}` to chromedriver, blocking (a `Drop` cannot await), with short timeouts:
/// the process-group kill that follows stops whatever does not quit.
fn end_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    // chromedriver keeps the connection open after it answers, whatever the request said: read
    // the answer's own length, not to the end of the stream (which only the timeout ends).
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            return;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answered(&answer) {
            return;
        }
    }
}

/// Whether `answer` holds a whole HTTP response: its head, and as much body as its Content-Length
/// says (or a chunked body's last chunk).
fn answered(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(length) => body.len() >= length,
        None => body.ends_with("0\r\n\r\n"),
    }
}

/// The port on chromedriver's "started successfully on port N" line. The rest of what it writes is
/// read and dropped on a thread of its own, so it never blocks on a full pipe.
fn driver_port(stdout: std::process::ChildStdout) -> u16 {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let port = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split_once("started successfully on port ")
                .and_then(|(_, rest)| rest.trim_end_matches('.').trim().parse().ok())
        })
        .expect("chromedriver says which port it took");
    std::thread::spawn(move || lines.for_each(drop));
    port
}

/// axe-core's script, from the npm registry (`.ci/run` installs the pinned version into
/// target/axe), or where `PATCHBAY_TEST_AXE` says.
fn axe_source() -> String {
    let path = std::env::var("PATCHBAY_TEST_AXE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/axe/node_modules/axe-core/axe.min.js"
        )
        .into()
    });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the console's accessibility is checked by axe-core ({path}: {e}). Install it with \
             `npm install --prefix target/axe axe-core@4.14.1` (.ci/run does), or set PATCHBAY_TEST_AXE"
        )
    })
}

/// Processes whose command line names `needle`, read from /proc.
fn processes_naming(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

impl Browser {
    async fn start() -> Self {
        let chromium = std::env::var("PATCHBAY_TEST_CHROMIUM").unwrap_or(CHROMIUM.into());
        let driver = std::env::var("PATCHBAY_TEST_CHROMEDRIVER").unwrap_or(CHROMEDRIVER.into());
        for (what, path) in [("chromium", &chromium), ("chromedriver", &driver)] {
            assert!(
                std::path::Path::new(path).exists(),
                "the console tests drive a real browser: {what} is not at {path}. Install Debian's \
                 chromium and chromium-driver (`apt-get install chromium chromium-driver`; .ci/run \
                 does), or set PATCHBAY_TEST_CHROMIUM / PATCHBAY_TEST_CHROMEDRIVER"
            );
        }
        let mut child = {
            use std::os::unix::process::CommandExt;
            // Port 0: chromedriver takes a port the system chooses, and says which.
            Command::new(&driver)
                .arg("--port=0")
                .process_group(0)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts")
        };
        let port = driver_port(child.stdout.take().expect("piped"));
        let mut caps = serde_json::Map::new();
        let profile = tempfile_dir();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1500,1000", format!("--user-data-dir={profile}"),
                ]
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            // chromedriver speaks plain HTTP on loopback: no TLS stack is needed.
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver did not open a browser: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let session = client.session_id().await.ok().flatten();
        Self {
            client,
            driver: child,
            port,
            session,
            profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("page loads");
    }

    /// Signs in on the sign-in page with `key`.
    async fn sign_in(&self, app: &TestApp, key: &str) {
        self.goto(&format!("{}/console/sign-in", app.address)).await;
        let field = self.client.find(Locator::Css("#key")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(key).await.unwrap();
        self.client
            .execute("window.patchbayBeforeSignIn = true;", vec![])
            .await
            .unwrap();
        self.client
            .find(Locator::Css("#sign-in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.next_page_loaded().await;
    }

    /// Waits until the page a click navigated to has replaced the one marked before it, and has
    /// loaded: WebDriver's click returns once the click is dispatched, not once the next page is
    /// there (a wrong key lands on the same path, so the path cannot tell).
    async fn next_page_loaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let loaded = self
                .client
                .execute(
                    "return window.patchbayBeforeSignIn === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .map(|v| v == serde_json::Value::Bool(true))
                .unwrap_or(false);
            if loaded {
                return;
            }
            assert!(Instant::now() < deadline, "the next page never loaded");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// axe-core's serious and critical findings on the page shown, against WCAG 2.1 A and AA: each
    /// as its rule and the elements it found.
    async fn accessibility_findings(&self, axe: &str) -> Vec<String> {
        self.client
            .execute(axe, vec![])
            .await
            .expect("axe-core loads");
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
                   .then(r => done(r.violations
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
                   .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .expect("axe-core runs");
        serde_json::from_value(found).expect("a list of findings")
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    /// Waits for the navigation a click started to land on `wanted`: WebDriver's click returns
    /// once the click is dispatched, not once the next page is there.
    async fn lands_on(&self, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = self.path().await;
            if path == wanted {
                return;
            }
            assert!(Instant::now() < deadline, "on {path}, never on {wanted}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Waits (reloading, as an operator would) until `css` holds `wanted`.
    async fn until_text(&self, url: &str, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.goto(url).await;
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(wanted) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never showed `{wanted}`; it shows: {text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

fn tempfile_dir() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chromium-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

const CRM: &str = r#"
[hooks.crm]
conversation_id = "/ticket/conversation"
purpose = "customer"
[hooks.crm.attributes]
tier = "/ticket/tier"
note = { pointer = "/ticket/note", optional = true }
[hooks.crm.auth]
scheme = "hmac"
header = "X-Signature"
encoding = "hex"
secrets = "crm-signing-secret-do-not-show"
"#;

/// POSTs a signed CRM event to the `crm` route.
async fn crm_event(app: &TestApp, event: serde_json::Value) -> Answer {
    let body = event.to_string();
    let signature = hex::encode(hmac_sha256(
        "crm-signing-secret-do-not-show",
        body.as_bytes(),
    ));
    app.post_raw("/v1/hooks/crm", body, &[("x-signature", &signature)])
        .await
}

async fn console_app(show_values: bool) -> TestApp {
    let hooks = hooks_from_toml(CRM);
    spawn_app_with(move |s| {
        s.hooks = hooks;
        s.console.show_values = show_values;
    })
    .await
}

#[tokio::test]
async fn a_browser_the_tests_start_leaves_no_process_behind_even_when_a_test_panics() {
    let browser = Browser::start().await;
    let profile = browser.profile.clone();
    assert!(
        !processes_naming(&profile).is_empty(),
        "Chromium runs under its profile"
    );
    // A failing test drops its browser while unwinding.
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _browser = browser;
        panic!("a console test fails");
    }));
    assert!(unwound.is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_naming(&profile);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running after the browser was dropped: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_passes_axe_core_without_a_serious_or_critical_finding() {
    let axe = axe_source();
    let app = spawn_app_whose_jobs_die().await;
    let body = json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"wrapup": "done"}});
    for _ in 0..2 {
        let accepted = app.post_async(body.clone(), &[]).await;
        let id = accepted.body["jobId"].as_str().unwrap().to_string();
        app.wait_for_job(&id, "dead").await;
    }
    let browser = Browser::start().await;
    let mut report = Vec::new();
    browser
        .goto(&format!("{}/console/sign-in", app.address))
        .await;
    report.push(("sign-in", browser.accessibility_findings(&axe).await));
    browser.sign_in(&app, "not-the-key").await;
    assert_eq!(browser.text("#refused").await, "Sign-in failed.");
    report.push((
        "sign-in refused",
        browser.accessibility_findings(&axe).await,
    ));
    browser.sign_in(&app, ADMIN_KEY).await;
    browser.lands_on("/console/now").await;
    for page in ["now", "updates", "jobs", "routes"] {
        browser
            .goto(&format!("{}/console/{page}", app.address))
            .await;
        let headings = browser.client.find_all(Locator::Css("h1")).await.unwrap();
        assert_eq!(headings.len(), 1, "{page}: one h1");
        report.push((page, browser.accessibility_findings(&axe).await));
    }
    browser
        .goto(&format!("{}/console/updates", app.address))
        .await;
    let open = browser
        .client
        .find(Locator::Css("#updates a.open"))
        .await
        .expect("a recorded update to open");
    open.click().await.unwrap();
    browser.text("#record").await;
    report.push((
        "an update's record",
        browser.accessibility_findings(&axe).await,
    ));
    let findings: Vec<_> = report.iter().filter(|(_, f)| !f.is_empty()).collect();
    assert!(findings.is_empty(), "axe-core found: {findings:#?}");

    // Every dead job's button says which job it replays.
    browser.goto(&format!("{}/console/jobs", app.address)).await;
    let mut names = Vec::new();
    for button in browser
        .client
        .find_all(Locator::Css("button.replay"))
        .await
        .unwrap()
    {
        names.push(button.attr("aria-label").await.unwrap().unwrap_or_default());
    }
    assert_eq!(names.len(), 2);
    assert!(
        names.iter().all(|n| n.starts_with("Replay job ")),
        "{names:?}"
    );
    assert_ne!(names[0], names[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sign_in_is_announced_and_tied_to_the_key_field() {
    let app = console_app(false).await;
    let browser = Browser::start().await;
    browser.sign_in(&app, "not-the-key").await;
    let refused = browser
        .client
        .find(Locator::Css("#refused"))
        .await
        .expect("the refusal");
    assert_eq!(
        refused.attr("role").await.unwrap().as_deref(),
        Some("alert")
    );
    let field = browser.client.find(Locator::Css("#key")).await.unwrap();
    assert_eq!(
        field.attr("aria-describedby").await.unwrap().as_deref(),
        Some("refused")
    );
    assert_eq!(
        field.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_focus_in_the_live_part_stays_on_its_control_when_the_part_refreshes() {
    let app = console_app(false).await;
    let first = json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"n": 1}});
    assert_eq!(app.post_attributes(first).await.status, 200);
    let browser = Browser::start().await;
    browser.sign_in(&app, ADMIN_KEY).await;
    browser.lands_on("/console/now").await;
    browser
        .goto(&format!("{}/console/updates", app.address))
        .await;
    let link = browser
        .client
        .find(Locator::Css("#updates a.open"))
        .await
        .expect("a row to open");
    let href = link.attr("href").await.unwrap().expect("a link");
    browser
        .client
        .execute("document.querySelector('#updates a.open').focus();", vec![])
        .await
        .unwrap();
    let rows = browser
        .client
        .find_all(Locator::Css("#updates tbody tr"))
        .await
        .unwrap()
        .len();
    // A new update changes the live part: the next refresh replaces it.
    let second = json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"n": 2}});
    assert_eq!(app.post_attributes(second).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser
        .client
        .find_all(Locator::Css("#updates tbody tr"))
        .await
        .unwrap()
        .len()
        == rows
    {
        assert!(Instant::now() < deadline, "the live part never refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let focused = browser
        .client
        .execute(
            "return document.activeElement.getAttribute('href');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        focused.as_str(),
        Some(href.as_str()),
        "focus stays on the same row's link"
    );
}

#[tokio::test]
async fn signing_in_refuses_a_wrong_key_without_saying_why_then_takes_the_admin_key() {
    let app = console_app(false).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/console/now", app.address)).await;
    assert_eq!(
        browser.path().await,
        "/console/sign-in",
        "no session, no page"
    );

    browser.sign_in(&app, "not-the-key").await;
    assert_eq!(browser.path().await, "/console/sign-in");
    assert_eq!(browser.text("#refused").await, "Sign-in failed.");
    browser.sign_in(&app, API_KEY).await;
    assert_eq!(
        browser.text("#refused").await,
        "Sign-in failed.",
        "an ingest key is not an admin key"
    );

    browser.sign_in(&app, ADMIN_KEY).await;
    browser.lands_on("/console/now").await;
    assert!(browser
        .text("#budget")
        .await
        .contains("calls in the last 60 s"));
    let cookies = browser.client.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "patchbay_console")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(
        session.same_site().map(|s| s.to_string()),
        Some("Strict".to_string())
    );
    assert!(!session.value().contains(ADMIN_KEY));
    assert!(!browser
        .client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains(ADMIN_KEY));

    // Sign-out ends the session: the next page asks for the key again.
    browser
        .client
        .find(Locator::Css("#sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.lands_on("/console/sign-in").await;
    browser
        .goto(&format!("{}/console/updates", app.address))
        .await;
    assert_eq!(browser.path().await, "/console/sign-in");
}

#[tokio::test]
async fn updates_from_the_api_and_a_webhook_route_show_with_their_outcome_and_calls_and_a_row_opens(
) {
    let app = console_app(false).await;
    let by_api = app
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"vip": "true"}}))
        .await;
    assert_eq!(by_api.status, 200);
    let api_calls = |sim: &patchbay::sim::Control| -> usize {
        sim.counts()
            .iter()
            .filter(|(op, _)| **op != "token")
            .map(|(_, n)| n)
            .sum()
    };
    let spent = api_calls(&app.sim);
    let by_hook = crm_event(
        &app,
        json!({"ticket": {"conversation": SEED_CHAT, "tier": "gold"}}),
    )
    .await;
    assert_eq!(by_hook.status, 200, "{}", by_hook.body);
    let ended = app
        .post_attributes(json!({"conversationId": SEED_ENDED, "attributes": {"vip": "true"}}))
        .await;
    ended.assert_problem(409, "conversation_ended");

    let browser = Browser::start().await;
    browser.sign_in(&app, ADMIN_KEY).await;
    let updates = format!("{}/console/updates", app.address);
    let row = |answer: &Answer| format!("tr[data-request-id='{}']", answer.header("x-request-id"));
    let api_row = browser
        .until_text(&updates, &row(&by_api), "verified")
        .await;
    assert!(api_row.contains("api"), "{api_row}");
    assert!(api_row.contains(SEED_ACTIVE_CALL), "{api_row}");
    assert!(api_row.contains(SEED_ACTIVE_CALL_CUSTOMER), "{api_row}");
    assert!(
        api_row.contains("conversationId") && api_row.contains("read"),
        "{api_row}"
    );
    assert!(api_row.contains("vip"), "the key is shown: {api_row}");
    assert!(!api_row.contains("true"), "the value is not: {api_row}");
    // What the row says the update cost is what Genesys (the simulator) received for it.
    let calls = browser.text(&format!("{} td.calls", row(&by_api))).await;
    assert_eq!(calls, spent.to_string(), "{api_row}");

    let hook_row = browser.text(&row(&by_hook)).await;
    assert!(
        hook_row.contains("hook:crm") && hook_row.contains("verified"),
        "{hook_row}"
    );
    assert!(
        hook_row.contains(SEED_CHAT) && hook_row.contains("tier"),
        "{hook_row}"
    );
    let ended_row = browser.text(&row(&ended)).await;
    assert!(
        ended_row.contains("failed") && ended_row.contains("conversation_ended"),
        "{ended_row}"
    );

    // The filters: by outcome, by route, by conversation.
    browser.goto(&format!("{updates}?outcome=failed")).await;
    let table = browser.text("#updates tbody").await;
    assert!(
        table.contains(SEED_ENDED) && !table.contains(SEED_CHAT),
        "{table}"
    );
    browser.goto(&format!("{updates}?route=hook:crm")).await;
    let table = browser.text("#updates tbody").await;
    assert!(
        table.contains(SEED_CHAT) && !table.contains(SEED_ACTIVE_CALL),
        "{table}"
    );
    browser
        .goto(&format!(
            "{updates}?conversation={}",
            &SEED_ACTIVE_CALL[24..]
        ))
        .await;
    let table = browser.text("#updates tbody").await;
    assert!(
        table.contains(SEED_ACTIVE_CALL) && !table.contains(SEED_CHAT),
        "{table}"
    );

    // A row opens its whole record.
    browser
        .client
        .find(Locator::Css(&format!("{} a.open", row(&by_api))))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let record = browser.text("#record").await;
    assert!(browser.path().await.starts_with("/console/updates/"));
    for wanted in [
        SEED_ACTIVE_CALL,
        SEED_ACTIVE_CALL_CUSTOMER,
        by_api.header("x-request-id"),
        "verified",
        "read",
        "hidden (console.show_values)",
    ] {
        assert!(
            record.contains(wanted),
            "the record lacks `{wanted}`: {record}"
        );
    }
}

#[tokio::test]
async fn markup_sent_through_a_webhook_renders_as_text_and_the_pages_send_their_security_headers() {
    let app = console_app(true).await;
    let xss = "<img src=x onerror=alert(1)>";
    let answer = crm_event(
        &app,
        json!({"ticket": {"conversation": SEED_ACTIVE_CALL, "tier": xss, "note": "<script>alert(2)</script>"}}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let browser = Browser::start().await;
    browser.sign_in(&app, ADMIN_KEY).await;
    let updates = format!("{}/console/updates", app.address);
    let row = format!("tr[data-request-id='{}']", answer.header("x-request-id"));
    browser.until_text(&updates, &row, "verified").await;
    browser
        .client
        .find(Locator::Css(&format!("{row} a.open")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let writes = browser.text("#writes").await;
    assert!(writes.contains(xss), "shown as those characters: {writes}");
    assert!(writes.contains("<script>alert(2)</script>"), "{writes}");
    let images = browser.client.find_all(Locator::Css("img")).await.unwrap();
    assert!(images.is_empty(), "the value made an element");
    let scripts = browser
        .client
        .find_all(Locator::Css("#writes script"))
        .await
        .unwrap();
    assert!(scripts.is_empty(), "the value made a script");
    let alert = browser.client.get_alert_text().await;
    assert!(alert.is_err(), "an alert opened: {alert:?}");

    // The headers, on every page, signed in or not; no secret of the route on its page.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "/console/sign-in",
        "/console/now",
        "/console/assets/console.js",
    ] {
        let r = http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
    }
    browser
        .goto(&format!("{}/console/routes", app.address))
        .await;
    let routes = browser.text("#route-crm").await;
    assert!(
        routes.contains("hmac") && routes.contains("/ticket/tier"),
        "{routes}"
    );
    let source = browser.client.source().await.unwrap();
    assert!(
        !source.contains("crm-signing-secret"),
        "a secret on the routes page"
    );
}

#[tokio::test]
async fn a_job_killed_by_genesys_faults_is_replayed_from_the_console_and_succeeds() {
    let app = spawn_app_whose_jobs_die().await;
    let body = json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"wrapup": "done"}});
    let accepted = app.post_async(body, &[]).await;
    assert_eq!(accepted.status, 202);
    let id = accepted.body["jobId"].as_str().unwrap().to_string();
    app.wait_for_job(&id, "dead").await;

    let browser = Browser::start().await;
    browser.sign_in(&app, ADMIN_KEY).await;
    let jobs = format!("{}/console/jobs", app.address);
    browser.goto(&jobs).await;
    let dead = browser.text(&format!("tr[data-job-id='{id}']")).await;
    assert!(
        dead.contains("upstream_error"),
        "the error that killed it: {dead}"
    );
    assert!(dead.contains("wrapup"), "{dead}");

    app.sim.clear_faults();
    browser
        .client
        .find(Locator::Css(&format!(
            "tr[data-job-id='{id}'] button.replay"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("#replayed").await, "1 dead job queued again.");
    let job = app.wait_for_job(&id, "succeeded").await;
    assert_eq!(job["result"]["verified"], true);
    assert_eq!(
        app.sim
            .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT)
            .unwrap()
            .iter()
            .find(|(k, _)| k == "wrapup")
            .map(|(_, v)| v.as_str()),
        Some("done")
    );
    // Its attempts show in Recent updates: the failures, then the success, from the queue.
    let updates = format!("{}/console/updates?route=queue", app.address);
    let table = browser
        .until_text(&updates, "#updates tbody", "verified")
        .await;
    assert!(
        table.contains("failed") && table.contains("upstream_error"),
        "{table}"
    );
}

#[tokio::test]
async fn every_dead_job_matching_a_filter_is_replayed_at_once() {
    let app = spawn_app_whose_jobs_die().await;
    let mut ids = Vec::new();
    for (conversation, participant) in [
        (SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT),
        (SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_CUSTOMER),
        (SEED_CHAT, SEED_CHAT_CUSTOMER),
    ] {
        let body = json!({"conversationId": conversation, "participantId": participant, "attributes": {"k": "v"}});
        ids.push(
            app.post_async(body, &[]).await.body["jobId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for id in &ids {
        app.wait_for_job(id, "dead").await;
    }
    app.sim.clear_faults();
    let browser = Browser::start().await;
    browser.sign_in(&app, ADMIN_KEY).await;
    browser.goto(&format!("{}/console/jobs", app.address)).await;
    let field = browser
        .client
        .find(Locator::Css("#replay-conversation"))
        .await
        .unwrap();
    field.send_keys(SEED_ACTIVE_CALL).await.unwrap();
    browser
        .client
        .find(Locator::Css("#replay-all"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("#replayed").await, "2 dead jobs queued again.");
    app.wait_for_job(&ids[0], "succeeded").await;
    app.wait_for_job(&ids[1], "succeeded").await;
    let other = app.get_with(&format!("/v1/jobs/{}", ids[2]), API_KEY).await;
    assert_eq!(
        other.body["status"], "dead",
        "the other conversation's job is left"
    );
}

#[tokio::test]
async fn the_budget_panel_follows_the_standing_the_simulator_reports() {
    let app = console_app(false).await;
    // The simulator enforces Genesys's limit and reports its count in `inin-ratelimit-*`.
    app.sim.set_rate_limit(Some(300));
    for n in 0..4 {
        let a = app
            .post_attributes(
                json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"n": n.to_string()}}),
            )
            .await;
        assert_eq!(a.status, 200);
    }
    let browser = Browser::start().await;
    browser.sign_in(&app, ADMIN_KEY).await;
    let now = format!("{}/console/now", app.address);
    let sim_count: usize = app
        .sim
        .counts()
        .iter()
        .filter(|(op, _)| **op != "token")
        .map(|(_, n)| n)
        .sum();
    let reported = browser.until_text(&now, "#reported", "allowed 300").await;
    assert!(
        reported.contains(&format!("count {sim_count} of allowed 300")),
        "the simulator counted {sim_count} calls: {reported}"
    );
    let limit = browser.text("#budget-limit").await;
    assert_eq!(
        limit, "300",
        "Genesys's allowance, lower than the configured 600000"
    );
    let used: u32 = browser.text("#budget-used").await.parse().unwrap();
    assert!(used >= 8, "four updates, at least two calls each: {used}");
    assert_eq!(browser.text("#pause").await, "none");

    // Genesys says the window is spent: the panel shows the pause and its time left.
    app.sim.rate_limit_next(Op::PatchAttributes, 120, 1);
    let refused = app
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"n": "x"}}))
        .await;
    refused.assert_problem(429, "rate_limited");
    let pause = browser.until_text(&now, "#pause", "left").await;
    assert!(pause.contains("paused"), "{pause}");
    let codes = browser.text("#codes").await;
    assert!(
        codes.contains("ok 4") && codes.contains("rate_limited 1"),
        "{codes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_on_redis_an_update_sent_to_one_shows_in_the_others_console() {
    let (_sim, apps) = crate::redis_deployment::replicas(2, |_| {}).await;
    let answer = apps[0]
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"vip": "true"}}))
        .await;
    assert_eq!(answer.status, 200);
    let browser = Browser::start().await;
    browser.sign_in(&apps[1], ADMIN_KEY).await;
    let row = format!("tr[data-request-id='{}']", answer.header("x-request-id"));
    let shown = browser
        .until_text(
            &format!("{}/console/updates", apps[1].address),
            &row,
            "verified",
        )
        .await;
    assert!(shown.contains(SEED_ACTIVE_CALL), "{shown}");
    // Cookies ignore ports, so the browser offers the other replica the same session: signed under
    // the deployment's admin keys, it is good there too. One deployment, one console.
    browser
        .goto(&format!("{}/console/now", apps[0].address))
        .await;
    assert_eq!(browser.path().await, "/console/now");
}

#[tokio::test]
async fn screenshots_of_the_now_page_and_recent_updates() {
    // A contact center in small: the mirror live, Genesys's limit of 300 enforced, calls coming in
    // and screen pops by number, a CRM webhook, and an update for a call that has ended.
    let hooks = hooks_from_toml(CRM);
    let app = spawn_app_with(move |s| {
        crate::mirror::with_mirror(s);
        s.hooks = hooks;
    })
    .await;
    app.sim.set_rate_limit(Some(300));
    let mirror = app.mirror.clone().expect("the mirror is on");
    let give_up = Instant::now() + Duration::from_secs(10);
    while !mirror.is_live() {
        assert!(
            Instant::now() < give_up,
            "the mirror's feed never went live"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..5 {
        let call = app.sim.start_call(i);
        while mirror.get(&call.conversation).is_none() {
            assert!(Instant::now() < give_up, "the mirror never saw call {i}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pop = app
            .post_attributes(json!({"lookup": {"ani": patchbay::sim::Simulator::caller_number(i)}, "attributes": {"screenPop": format!("case-{i}")}}))
            .await;
        assert_eq!(pop.status, 200, "{}", pop.body);
        crm_event(
            &app,
            json!({"ticket": {"conversation": call.conversation, "tier": "gold"}}),
        )
        .await;
    }
    app.post_attributes(json!({"conversationId": SEED_ENDED, "attributes": {"vip": "true"}}))
        .await;
    let browser = Browser::start().await;
    browser.sign_in(&app, ADMIN_KEY).await;
    browser
        .until_text(
            &format!("{}/console/updates", app.address),
            "#updates tbody",
            "conversation_ended",
        )
        .await;
    browser.screenshot("updates.png").await;
    browser.goto(&format!("{}/console/now", app.address)).await;
    assert!(browser.text("#mirror").await.contains("live"));
    browser.screenshot("now.png").await;
}

/// Over plain HTTP: what a browser would not let a test do.
mod http {
    use super::*;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    async fn sign_in(app: &TestApp, key: &str) -> reqwest::Response {
        client()
            .post(format!("{}/console/sign-in", app.address))
            .form(&[("key", key)])
            .send()
            .await
            .unwrap()
    }

    async fn session(app: &TestApp) -> String {
        let r = sign_in(app, ADMIN_KEY).await;
        assert_eq!(r.status(), 303);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        cookie.split(';').next().unwrap().to_string()
    }

    /// A console page's HTML, with the session `cookie`.
    async fn page(app: &TestApp, cookie: &str, path: &str) -> String {
        client()
            .get(format!("{}{path}", app.address))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The form token on a signed-in page.
    async fn form_token(app: &TestApp, cookie: &str) -> String {
        let page = page(app, cookie, "/console/jobs").await;
        let at = page.find("name=\"csrf\" value=\"").expect("a form token") + 19;
        page[at..at + 64].to_string()
    }

    #[tokio::test]
    async fn repeated_wrong_keys_slow_down_and_are_refused_without_saying_why() {
        let app = spawn_app().await;
        for _ in 0..3 {
            assert_eq!(sign_in(&app, "guess").await.status(), 401);
        }
        // After three wrong keys in a row, as the console guide says, the fourth attempt waits 250 ms.
        let started = Instant::now();
        let r = sign_in(&app, "guess").await;
        assert_eq!(r.status(), 401);
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        let body = r.text().await.unwrap();
        assert!(body.contains("Sign-in failed.") && !body.contains("guess"));
        let r = sign_in(&app, ADMIN_KEY).await;
        assert_eq!(r.headers()["location"], "/console/now");
    }

    #[tokio::test]
    async fn a_post_without_the_sessions_token_or_from_another_origin_is_refused() {
        let app = spawn_app().await;
        let cookie = session(&app).await;
        let token = form_token(&app, &cookie).await;
        let post = |form: Vec<(&'static str, String)>, origin: Option<&'static str>| {
            let mut r = client()
                .post(format!("{}/console/jobs/replay", app.address))
                .header("cookie", cookie.clone())
                .form(&form);
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            r.send()
        };
        let none = post(vec![], None).await.unwrap();
        assert!(none.status().is_client_error(), "{}", none.status());
        let wrong = post(vec![("csrf", "0".repeat(64))], None).await.unwrap();
        assert_eq!(wrong.status(), 403);
        let foreign = post(vec![("csrf", token.clone())], Some("https://evil.example"))
            .await
            .unwrap();
        assert_eq!(foreign.status(), 403);
        let good = post(vec![("csrf", token)], None).await.unwrap();
        assert_eq!(good.status(), 303);
        assert_eq!(good.headers()["location"], "/console/jobs?replayed=0");
        // Another session's token is no good either.
        let other = session(&app).await;
        let token = form_token(&app, &other).await;
        let crossed = client()
            .post(format!("{}/console/sign-out", app.address))
            .header("cookie", cookie)
            .form(&[("csrf", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(crossed.status(), 403);
    }

    #[tokio::test]
    async fn a_callers_number_is_masked_in_recent_updates_and_its_record() {
        let app = spawn_app().await;
        app.sim.add_caller_call();
        let found = app
            .post_attributes(
                json!({"lookup": {"ani": "+13175550123"}, "attributes": {"tier": "gold"}}),
            )
            .await;
        assert_eq!(found.status, 200, "{}", found.body);
        let missing = app
            .post_attributes(
                json!({"lookup": {"ani": "+13175559876"}, "attributes": {"tier": "gold"}}),
            )
            .await;
        assert_eq!(missing.status, 404, "{}", missing.body);
        let cookie = session(&app).await;
        let list = page(&app, &cookie, "/console/updates").await;
        let mut ids = list
            .match_indices("/console/updates/")
            .map(|(at, _)| list[at + 17..at + 49].to_string());
        let (newest, oldest) = (ids.next().unwrap(), ids.next().unwrap());
        for id in [newest, oldest] {
            let record = page(&app, &cookie, &format!("/console/updates/{id}")).await;
            assert!(
                record.contains("ani …"),
                "the lookup is shown, masked: {record}"
            );
            assert!(
                !record.contains("3175550123") && !record.contains("3175559876"),
                "a caller's number in full: {record}"
            );
        }
        assert!(!list.contains("317555"), "{list}");
    }

    #[tokio::test]
    async fn secure_attributes_show_by_key_in_recent_updates_and_their_record_even_with_values_on()
    {
        let app = spawn_app_with(|s| s.console.show_values = true).await;
        let written = app
            .post_attributes(json!({
                "conversationId": SEED_ACTIVE_CALL,
                "participantId": SEED_ACTIVE_CALL_AGENT,
                "attributes": {"tier": "gold"},
                "secureAttributes": {"dob": "1970-07-04", "account": "88172635"}
            }))
            .await;
        assert_eq!(written.status, 200, "{}", written.body);
        let cookie = session(&app).await;
        let list = page(&app, &cookie, "/console/updates").await;
        assert!(list.contains("tier; secure: account, dob"), "{list}");
        let at = list
            .find("/console/updates/")
            .expect("a row opens its record");
        let id = &list[at + 17..at + 49];
        let record = page(&app, &cookie, &format!("/console/updates/{id}")).await;
        assert!(
            record.contains("account, dob (verified; values never kept)"),
            "{record}"
        );
        assert!(
            record.contains("gold"),
            "participant values show, as configured: {record}"
        );
        for page in [&list, &record] {
            assert!(
                !page.contains("1970-07-04") && !page.contains("88172635"),
                "{page}"
            );
        }
    }

    #[tokio::test]
    async fn the_session_cookie_is_secure_behind_tls() {
        let app = spawn_app().await;
        let r = client()
            .post(format!("{}/console/sign-in", app.address))
            .header("x-forwarded-proto", "https")
            .form(&[("key", ADMIN_KEY)])
            .send()
            .await
            .unwrap();
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        assert!(cookie.contains("; Secure"), "{cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        let plain = session(&app).await;
        assert!(!plain.contains("Secure"));
    }

    #[tokio::test]
    async fn the_console_is_served_on_the_admin_listener_when_there_is_one_and_only_with_an_admin_key(
    ) {
        let app = spawn_app_with(|s| {
            s.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        })
        .await;
        let public = client()
            .get(format!("{}/console/sign-in", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(public.status(), 404, "not on the public listener");
        let admin = app.admin_address.as_deref().expect("an admin listener");
        let admin = client()
            .get(format!("{admin}/console/sign-in"))
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 200);

        let keyless = spawn_app_with(|s| s.auth.admin_keys.clear()).await;
        let r = client()
            .get(format!("{}/console/sign-in", keyless.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "no admin key, no console");
    }
}

#[tokio::test]
async fn the_deployments_stream_of_updates_is_capped_and_read_newest_first() {
    use patchbay::journal::Journal;
    use patchbay::store::journal::redis::RedisJournal;
    use patchbay::store::journal::JournalStore;
    let prefix = RedisPrefix::new().await;
    let mut settings = patchbay::demo::settings_for_simulator("http://127.0.0.1:1", API_KEY);
    on_redis(&mut settings, &prefix.url, &prefix.name);
    let redis = patchbay::store::Redis::connect(&settings.redis).unwrap();
    let stream = RedisJournal::new(redis, 50);
    let journal = Journal::in_memory(1);
    for n in 0..600 {
        stream
            .push(&journal.begin("api", &format!("r{n}")))
            .await
            .unwrap();
    }
    let recent = stream.recent(50).await.unwrap();
    let ids: Vec<_> = recent.iter().map(|e| e.request_id.as_str()).collect();
    let expected: Vec<String> = (550..600).rev().map(|n| format!("r{n}")).collect();
    assert_eq!(ids, expected);
    // `MAXLEN ~` trims whole nodes of the stream (100 entries each by default): about 50, never 600.
    let mut conn = redis::Client::open(prefix.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len: usize = redis::cmd("XLEN")
        .arg(format!("{{{}}}:journal", prefix.name))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((50..=200).contains(&len), "{len} entries kept");
}
