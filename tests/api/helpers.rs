//! `spawn_app()`: a gateway and its own simulator, each on port 0, for one test.

use std::process::{Child, Command, Stdio};
use std::sync::Once;

use patchbay::config::Settings;
use patchbay::demo::settings_for_simulator;
use patchbay::sim::{Control, Simulator};
use patchbay::Application;
use serde_json::Value;
use tokio::net::TcpListener;

pub use patchbay::sim::{
    SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT, SEED_ACTIVE_CALL_CUSTOMER, SEED_CHAT,
    SEED_CHAT_CUSTOMER, SEED_ENDED, SEED_ENDED_CUSTOMER, SEED_TRANSFER, SEED_TRANSFER_AGENT_NEW,
};

pub const API_KEY: &str = "test-key-3b8f0c1d";
pub const ADMIN_KEY: &str = "admin-key-9e2a7c44";

static TRACING: Once = Once::new();

/// Logs show only with `TEST_LOG=1`, so a failing test's output stays readable.
fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            patchbay::telemetry::init(patchbay::config::LogFormat::Pretty, "debug");
        }
    });
}

pub struct TestApp {
    pub address: String,
    /// `server.admin_listen`'s address as bound, when the test set one.
    pub admin_address: Option<String>,
    /// The test controls of the simulator in front of which the gateway runs.
    pub sim: Control,
    pub sim_url: String,
    pub http: reqwest::Client,
    pub queue_path: std::path::PathBuf,
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    server: tokio::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
    /// The shared Redis prefix this gateway uses, if any: its keys go when the last user drops it.
    pub redis: Option<std::sync::Arc<RedisPrefix>>,
    /// The gateway's live mirror, when `mirror.enabled`.
    pub mirror: Option<patchbay::mirror::Mirror>,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// A gateway with test-speed retries, in front of a fresh simulator.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with the settings adjusted first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(Simulator::new(), adjust).await
}

/// Like [`spawn_app_with`], in front of a given simulator.
pub async fn spawn_app_on(sim: Simulator, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    init_tracing();
    let sim_url = sim.spawn(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut settings = settings_for_simulator(&sim_url, API_KEY);
    settings.auth.admin_keys = vec![ADMIN_KEY.to_string().into()];
    // Tests of the rate budget set their own; the rest must not wait for it.
    settings.genesys.rate_per_minute = 600_000;
    settings.queue.backoff_base_ms = 20;
    settings.queue.backoff_max_ms = 200;
    settings.queue.poll_interval_ms = 50;
    settings.genesys.retry.base_delay_ms = 10;
    settings.genesys.retry.max_delay_ms = 40;
    settings.verify.timeout_ms = 1500;
    settings.verify.poll_initial_ms = 20;
    settings.verify.poll_max_ms = 100;
    // The REST path, unless a test turns the mirror on (`with_mirror`).
    settings.mirror.enabled = false;
    adjust(&mut settings);
    settings.validate().expect("test settings are valid");
    let queue_path = settings.queue.path.clone();
    let application = Application::build(settings).await.unwrap();
    let address = format!("http://{}", application.address());
    let admin_address = application.admin_address().map(|a| format!("http://{a}"));
    let mirror = application.state().org.mirror().cloned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        admin_address,
        sim: sim.control(),
        sim_url,
        http: reqwest::Client::new(),
        queue_path,
        stop: std::sync::Mutex::new(Some(stop)),
        server: tokio::sync::Mutex::new(Some(server)),
        redis: None,
        mirror,
    }
}

impl TestApp {
    /// POSTs `body` to `/v1/attributes` with the test key.
    pub async fn post_attributes(&self, body: Value) -> Answer {
        self.post_raw(
            "/v1/attributes",
            body.to_string(),
            &[("x-api-key", API_KEY)],
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: String, headers: &[(&str, &str)]) -> Answer {
        let mut request = self
            .http
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Answer::from(request.send().await.expect("gateway answers")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::from(
            self.http
                .get(format!("{}{path}", self.address))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// GETs `path` with `key` as `X-API-Key`.
    pub async fn get_with(&self, path: &str, key: &str) -> Answer {
        Answer::from(
            self.http
                .get(format!("{}{path}", self.address))
                .header("x-api-key", key)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// POSTs `body` to `/v1/attributes` asking for asynchronous handling, with extra headers.
    pub async fn post_async(&self, body: Value, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("x-api-key", API_KEY), ("prefer", "respond-async")];
        all.extend_from_slice(headers);
        self.post_raw("/v1/attributes", body.to_string(), &all)
            .await
    }

    /// Polls a job until it reaches `status`, for at most 20 seconds.
    pub async fn wait_for_job(&self, id: &str, status: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let job = self.get_with(&format!("/v1/jobs/{id}"), API_KEY).await;
            assert_eq!(job.status, 200, "{}", job.body);
            if job.body["status"] == status {
                return job.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} never became {status}: {}",
                job.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn begin_shutdown(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the gateway to stop.
    pub async fn stopped(&self) {
        if let Some(server) = self.server.lock().await.take() {
            server.await.unwrap().unwrap();
        }
    }

    /// Upstream calls that are not token grants.
    pub fn api_calls(&self) -> Vec<String> {
        self.sim
            .calls()
            .into_iter()
            .filter(|c| c.op != "token")
            .map(|c| c.op.to_string())
            .collect()
    }
}

impl Answer {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            headers,
            body,
        }
    }

    /// Asserts a problem+json answer with `status` and `code`, and a request id in the body.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["code"], code, "{}", self.body);
        assert_eq!(self.header("content-type"), "application/problem+json");
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"].as_str().unwrap().ends_with(code));
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        assert_eq!(
            self.body["requestId"].as_str(),
            Some(self.header("x-request-id"))
        );
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// `[hooks.*]` tables from TOML, as an operator would write them.
pub fn hooks_from_toml(
    toml: &str,
) -> std::collections::BTreeMap<String, patchbay::config::hooks::HookSettings> {
    patchbay::config::hooks::hooks_from_toml(toml).expect("valid hooks TOML")
}

/// Settings under which a job dies soon after it first fails: one attempt per delivery, retried
/// for a second.
pub fn jobs_die_soon(s: &mut Settings) {
    s.genesys.retry.max_attempts = 1;
    s.queue.retry_horizon_s = 1;
}

/// A gateway whose jobs die at their first failure, in front of a simulator that answers every
/// PATCH 503 until its faults are cleared.
pub async fn spawn_app_whose_jobs_die() -> TestApp {
    let app = spawn_app_with(jobs_die_soon).await;
    app.sim
        .fail_next(patchbay::sim::Op::PatchAttributes, 503, 10_000);
    app
}

/// A gateway serving the routes in `toml`.
pub async fn spawn_app_with_hooks(toml: &str) -> TestApp {
    let hooks = hooks_from_toml(toml);
    spawn_app_with(move |s| s.hooks = hooks).await
}

/// A token from the simulator at `url`, as any OAuth client would get one.
pub async fn sim_token(url: &str) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/oauth/token"))
        .basic_auth(
            patchbay::sim::DEFAULT_CLIENT_ID,
            Some(patchbay::sim::DEFAULT_CLIENT_SECRET),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// HMAC-SHA256 of `message` under `secret`.
pub fn hmac_sha256(secret: &str, message: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The Redis the tests share: `PATCHBAY_TEST_REDIS_URL`, or the local default. Fails clearly when
/// it does not answer (`.ci/run` starts one).
pub async fn test_redis_url() -> String {
    let url = std::env::var("PATCHBAY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url.as_str()).expect("a valid Redis URL");
    let answered = match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(mut conn)) => redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok(),
        _ => false,
    };
    assert!(
        answered,
        "these tests need Redis at {url} (set PATCHBAY_TEST_REDIS_URL, or run `redis-server`; .ci/run starts one)"
    );
    url
}

/// A key prefix no other test run uses.
pub fn unique_prefix() -> String {
    format!("patchbay-test-{}", uuid::Uuid::new_v4().simple())
}

/// A prefix of its own on the shared Redis, whose keys are deleted when it is dropped: when its
/// test ends, pass or fail (a failing assertion unwinds through it). Declare it before the gateways
/// that use it, so they stop first.
pub struct RedisPrefix {
    pub url: String,
    pub name: String,
}

impl RedisPrefix {
    pub async fn new() -> Self {
        Self {
            url: test_redis_url().await,
            name: unique_prefix(),
        }
    }

    /// Keys under the prefix now.
    pub fn keys(&self) -> Vec<String> {
        keys_under(&self.url, &self.name)
    }

    fn delete(&self) {
        let keys = self.keys();
        if keys.is_empty() {
            return;
        }
        if let Ok(mut conn) = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_secs(2)))
        {
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(chunk).query(&mut conn);
            }
        }
    }
}

/// Keys of the Redis at `url` under the prefix `name` (`{name}:…`, as
/// `patchbay::store::Redis::key` makes them).
pub fn keys_under(url: &str, name: &str) -> Vec<String> {
    let Ok(mut conn) = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_secs(2)))
    else {
        return Vec::new();
    };
    redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{{{name}}}:*"))
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter::<String>(&mut conn)
        .map(|keys| keys.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        self.delete();
        // A gateway's tasks stop asynchronously after it is dropped: one may still be finishing a
        // write. A second sweep a moment later takes what it left.
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.delete();
    }
}

/// Settings adjustments that put a gateway on Redis under `prefix`.
pub fn on_redis(settings: &mut Settings, url: &str, prefix: &str) {
    settings.queue.backend = patchbay::config::QueueBackend::Redis;
    settings.redis.url = url.to_string().into();
    settings.redis.key_prefix = prefix.to_string();
}

/// A `patchbay serve` process, started and killed by a test, logging to a file of its own.
pub struct Gateway {
    env: Vec<(String, String)>,
    args: Vec<String>,
    child: Option<Child>,
    pub address: String,
    pub log: std::path::PathBuf,
}

impl Gateway {
    /// A gateway process with `env`. Without `PATCHBAY__SERVER__LISTEN` it listens on a port the
    /// system chooses, which [`Gateway::start`] reads from the gateway's own start-up line.
    pub fn new(mut env: Vec<(String, String)>) -> Self {
        if !env.iter().any(|(k, _)| k == LISTEN) {
            env.push((LISTEN.into(), "127.0.0.1:0".into()));
        }
        Self {
            env,
            args: Vec::new(),
            child: None,
            address: String::new(),
            log: std::env::temp_dir().join(format!(
                "patchbay-gateway-{}.log",
                uuid::Uuid::new_v4().simple()
            )),
        }
    }

    /// A gateway in front of `sim_url` with test-speed settings; `extra` overrides or adds variables.
    pub fn in_front_of(sim_url: &str, extra: &[(&str, &str)]) -> Self {
        let store =
            std::env::temp_dir().join(format!("patchbay-gw-{}", uuid::Uuid::new_v4().simple()));
        let mut env: std::collections::BTreeMap<String, String> = [
            ("PATCHBAY__GENESYS__LOGIN_URL", sim_url.to_string()),
            ("PATCHBAY__GENESYS__API_URL", sim_url.to_string()),
            (
                "PATCHBAY__GENESYS__CLIENT_ID",
                patchbay::sim::DEFAULT_CLIENT_ID.into(),
            ),
            (
                "PATCHBAY__GENESYS__CLIENT_SECRET",
                patchbay::sim::DEFAULT_CLIENT_SECRET.into(),
            ),
            ("PATCHBAY__GENESYS__RETRY__BASE_DELAY_MS", "10".into()),
            ("PATCHBAY__GENESYS__RATE_PER_MINUTE", "600000".into()),
            ("PATCHBAY__AUTH__API_KEYS", API_KEY.into()),
            (
                "PATCHBAY__QUEUE__PATH",
                store.join("q.sqlite3").display().to_string(),
            ),
            ("PATCHBAY__VERIFY__TIMEOUT_MS", "1000".into()),
            ("PATCHBAY__MIRROR__ENABLED", "false".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        Self::new(env.into_iter().collect())
    }

    /// Extra command-line arguments after `serve`.
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Starts the process and waits for its start-up line, which names the address it bound. A
    /// restart listens on the same address again, as a restarted replica would.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let logged_before = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchbay"));
        // The start-up line is logged at info under its own target, whatever else is quiet.
        cmd.arg("serve")
            .args(&self.args)
            .env("RUST_LOG", "warn,patchbay::serving=info");
        let mut child = cmd
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the patchbay binary starts");
        let started = std::time::Instant::now();
        let address = loop {
            let text = self.log_text();
            if let Some(address) = serving_address(&text[logged_before.min(text.len())..]) {
                break address;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the gateway exited ({status}) before serving:\n{text}");
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(15),
                "the gateway never said where it serves:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        self.address = format!("http://{address}");
        if let Some((_, listen)) = self.env.iter_mut().find(|(k, _)| k == LISTEN) {
            *listen = address;
        }
        self.child = Some(child);
    }

    /// Waits until `/healthz` answers.
    pub async fn ready(&self) {
        let started = std::time::Instant::now();
        while reqwest::get(format!("{}/healthz", self.address))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(15),
                "{} never came up",
                self.address
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, and wait for the exit, so every log line is written.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            child.wait().unwrap();
        }
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

const LISTEN: &str = "PATCHBAY__SERVER__LISTEN";

/// The address on the gateway's start-up line (`patchbay is serving`), in either log format.
fn serving_address(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("patchbay is serving"))?;
    let at = line
        .find("listen=")
        .map(|i| i + "listen=".len())
        .or_else(|| {
            line.find("\"listen\":\"")
                .map(|i| i + "\"listen\":\"".len())
        })?;
    let address: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    (!address.is_empty()).then_some(address)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs a command, failing the test with its output when it fails.
pub fn run_command(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e}. These tests need python3 with venv and pip.")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `bin` directory of the virtualenv with the pinned Python tools (`tests/sdk/requirements.txt`),
/// made under `target/sdk-venv` on first use (or at `PATCHBAY_SDK_VENV`).
pub fn python_tools() -> std::path::PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("PATCHBAY_SDK_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target/sdk-venv"));
    let bin = venv.join("bin");
    let marker = venv.join(".installed");
    let requirements = root.join("tests/sdk/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("tests/sdk/requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        run_command(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run_command(
            Command::new(bin.join("python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements),
        );
        std::fs::write(&marker, &wanted).unwrap();
    }
    bin
}

/// Polls every job, spreading the reads over `addresses`, until all have succeeded; fails on a job
/// that failed or died, or after `within`.
pub async fn wait_all_succeeded(
    http: &reqwest::Client,
    addresses: &[String],
    jobs: &[String],
    within: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + within;
    let mut pending: Vec<&String> = jobs.iter().collect();
    while !pending.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} jobs never succeeded",
            pending.len()
        );
        let mut still = Vec::new();
        for (i, id) in pending.into_iter().enumerate() {
            let job: serde_json::Value = http
                .get(format!("{}/v1/jobs/{id}", addresses[i % addresses.len()]))
                .header("x-api-key", API_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match job["status"].as_str().unwrap() {
                "succeeded" => {}
                "failed" | "dead" => panic!("job {id} ended {}: {job}", job["status"]),
                _ => still.push(id),
            }
        }
        pending = still;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
