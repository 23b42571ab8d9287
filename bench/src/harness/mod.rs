//! `patchbay-bench`: measures the gateway against the floor set by its own upstream calls.
//!
//! The simulator and the gateway run as separate processes on loopback; this process is the load
//! generator. Scenarios: (a) closed loop at maximum rate, (b) open loop at a fixed rate with upstream
//! latency (latency timed from each event's scheduled send, so no coordinated omission), (c) a burst of
//! asynchronous updates, and (d) the baseline: the same upstream calls made directly, which is the
//! floor the gateway is compared with.

mod contact_center;
mod plot;
mod targets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use patchbay::sim::LiveCall;

const API_KEY: &str = "bench-key";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub quick: bool,
    pub duration: Duration,
    pub concurrency: usize,
    pub rate: u64,
    pub upstream_latency_ms: u64,
    pub burst_events: usize,
    pub burst_participants: usize,
    /// `delivery.linger_ms` for the contact-center scenarios; `None` keeps the default.
    pub linger_ms: Option<u64>,
    /// Run only (e) and (f).
    pub contact_center_only: bool,
    pub out_dir: PathBuf,
    /// The `patchbay` binary to run as simulator and gateway.
    pub binary: PathBuf,
}

impl BenchOptions {
    pub fn new(quick: bool, binary: PathBuf, out_dir: PathBuf) -> Self {
        Self {
            quick,
            duration: Duration::from_secs(if quick { 3 } else { 20 }),
            concurrency: 64,
            rate: 1000,
            upstream_latency_ms: 20,
            burst_events: if quick { 2_000 } else { 10_000 },
            burst_participants: if quick { 100 } else { 500 },
            linger_ms: None,
            contact_center_only: false,
            out_dir,
            binary,
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The figures of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub events: u64,
    pub errors: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub latency_ms: Option<Percentiles>,
    /// Genesys calls per event, by kind (`token`, `get_conversation`, `patch_attributes`).
    pub calls_per_event: BTreeMap<String, f64>,
    pub token_grants: u64,
    pub gateway_peak_rss_mib: Option<f64>,
    pub gateway_cpu_seconds_per_1000: Option<f64>,
    /// CPU seconds per 1,000 events of the simulator and of the load generator: where the rest of
    /// the two cores went.
    pub simulator_cpu_seconds_per_1000: Option<f64>,
    pub load_generator_cpu_seconds_per_1000: Option<f64>,
    /// Scenario (c): updates not found in Genesys at the end.
    pub lost: Option<u64>,
    /// Scenarios (e) and (f): how the events were answered on Genesys's real budget.
    pub budget: Option<BudgetFigures>,
    /// Scenarios (j), (k) and (l): each target's verified writes and Genesys calls.
    pub targets: Option<targets::TargetFigures>,
    /// The latency curve, (percentile, ms), for the plot.
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds of a process so far, from /proc (utime + stime, in USER_HZ ticks: 100 on Linux).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
}

/// CPU seconds spent by the simulator and this process between two points.
struct CpuMark {
    sim: Option<f64>,
    me: Option<f64>,
}

impl CpuMark {
    fn now(sim: &Process) -> Self {
        Self {
            sim: cpu_seconds(&sim.0.id().to_string()),
            me: cpu_seconds("self"),
        }
    }

    fn record(&self, sim: &Process, r: &mut ScenarioResult) {
        let later = Self::now(sim);
        let per_1000 =
            |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 1000.0 / r.events.max(1) as f64);
        r.simulator_cpu_seconds_per_1000 = per_1000(self.sim, later.sim);
        r.load_generator_cpu_seconds_per_1000 = per_1000(self.me, later.me);
    }
}

impl Process {
    /// (peak RSS in MiB, CPU seconds) from /proc, where there is one.
    fn usage(&self) -> (Option<f64>, Option<f64>) {
        let pid = self.0.id();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                    .map(|kb| kb / 1024.0)
            });
        (rss, cpu_seconds(&pid.to_string()))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("an address")
        .port()
}

async fn wait_up(url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while reqwest::get(url)
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "{url} never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Starts `patchbay <args>` listening on `port` with `env`, and waits for `health` to answer.
async fn start(
    o: &BenchOptions,
    args: &[String],
    env: &[(&str, String)],
    port: u16,
    health: &str,
) -> anyhow::Result<(Process, String)> {
    let child = Command::new(&o.binary)
        .args(args)
        .env("RUST_LOG", "error")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let p = Process(child);
    wait_up(&format!("{url}{health}")).await?;
    Ok((p, url))
}

/// The simulator process with `calls` numbered live calls.
async fn start_sim(o: &BenchOptions, calls: usize) -> anyhow::Result<(Process, String)> {
    let port = free_port();
    let args = [
        "sim".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--calls".into(),
        calls.to_string(),
    ];
    start(o, &args, &[], port, "/__sim/stats").await
}

/// A gateway process in front of `sim`, measuring Patchbay's own cost: Genesys's call budget is
/// lifted and lanes do not linger (scenarios (e) and (f) measure the delivery defaults).
async fn start_gateway(o: &BenchOptions, sim: &str) -> anyhow::Result<(Process, String)> {
    start_gateway_with(
        o,
        sim,
        &[
            (
                "PATCHBAY__GENESYS__RATE_PER_MINUTE",
                "100000000".to_string(),
            ),
            ("PATCHBAY__DELIVERY__LINGER_MS", "0".to_string()),
            // The REST path, whose floor (d) measures.
            ("PATCHBAY__MIRROR__ENABLED", "false".to_string()),
        ],
    )
    .await
}

/// A gateway process in front of `sim`, on its defaults but for `extra`.
async fn start_gateway_with(
    o: &BenchOptions,
    sim: &str,
    extra: &[(&str, String)],
) -> anyhow::Result<(Process, String)> {
    let port = free_port();
    let store =
        std::env::temp_dir().join(format!("patchbay-bench-{}", uuid::Uuid::new_v4().simple()));
    let env = [
        ("PATCHBAY__SERVER__LISTEN", format!("127.0.0.1:{port}")),
        ("PATCHBAY__GENESYS__LOGIN_URL", sim.to_string()),
        ("PATCHBAY__GENESYS__API_URL", sim.to_string()),
        (
            "PATCHBAY__GENESYS__CLIENT_ID",
            patchbay::sim::DEFAULT_CLIENT_ID.to_string(),
        ),
        (
            "PATCHBAY__GENESYS__CLIENT_SECRET",
            patchbay::sim::DEFAULT_CLIENT_SECRET.to_string(),
        ),
        ("PATCHBAY__AUTH__API_KEYS", API_KEY.to_string()),
        (
            "PATCHBAY__QUEUE__PATH",
            store.join("queue.sqlite3").display().to_string(),
        ),
        ("PATCHBAY__QUEUE__WORKERS", "8".to_string()),
        ("PATCHBAY__QUEUE__POLL_INTERVAL_MS", "20".to_string()),
    ];
    let env: Vec<(&str, String)> = env.into_iter().chain(extra.iter().cloned()).collect();
    start(o, &["serve".to_string()], &env, port, "/healthz").await
}

async fn sim_stats(
    http: &reqwest::Client,
    sim: &str,
) -> anyhow::Result<(u64, BTreeMap<String, u64>)> {
    let v = sim_stats_raw(http, sim).await?;
    Ok((v["grants"].as_u64().unwrap_or(0), call_counts(&v)))
}

/// The simulator's calls by operation, from its stats.
fn call_counts(stats: &Value) -> BTreeMap<String, u64> {
    stats["calls"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

async fn sim_stats_raw(http: &reqwest::Client, sim: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{sim}/__sim/stats"))
        .send()
        .await?
        .json()
        .await?)
}

fn per_event(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    events: u64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0)) as f64 / events.max(1) as f64,
            )
        })
        .collect()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    [
        0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999,
    ]
    .iter()
    .map(|q| (*q, h.value_at_quantile(*q) as f64 / 1000.0))
    .collect()
}

/// One event's work: through the gateway, or the same upstream calls made directly (the baseline).
#[derive(Clone)]
enum Driver {
    Gateway { url: String },
    Baseline { sim: String, token: String },
}

impl Driver {
    async fn event(&self, http: &reqwest::Client, call: &LiveCall, n: u64) -> bool {
        let attributes = json!({"seq": n.to_string()});
        match self {
            Driver::Gateway { url } => {
                let body = json!({"conversationId": call.conversation, "participantId": call.customer, "attributes": attributes});
                match http
                    .post(format!("{url}/v1/attributes"))
                    .header("x-api-key", API_KEY)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        v["verified"] == true
                    }
                    _ => false,
                }
            }
            Driver::Baseline { sim, token } => {
                let patch = http
                    .patch(format!(
                        "{sim}/api/v2/conversations/{}/participants/{}/attributes",
                        call.conversation, call.customer
                    ))
                    .bearer_auth(token)
                    .json(&json!({"attributes": attributes}))
                    .send()
                    .await;
                if !matches!(&patch, Ok(r) if r.status().is_success()) {
                    return false;
                }
                let get = http
                    .get(format!("{sim}/api/v2/conversations/{}", call.conversation))
                    .bearer_auth(token)
                    .send()
                    .await;
                match get {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }
    }
}

/// The baseline's one token grant, as the gateway makes it.
async fn grant(http: &reqwest::Client, sim: &str) -> anyhow::Result<String> {
    let v: Value = http
        .post(format!("{sim}/oauth/token"))
        .basic_auth(
            patchbay::sim::DEFAULT_CLIENT_ID,
            Some(patchbay::sim::DEFAULT_CLIENT_SECRET),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .json()
        .await?;
    Ok(v["access_token"].as_str().unwrap_or_default().to_string())
}

/// Closed loop: `concurrency` clients, each sending its next event when the last one answers.
async fn closed_loop(
    o: &BenchOptions,
    http: &reqwest::Client,
    driver: Driver,
    calls: &[LiveCall],
) -> (Histogram<u64>, u64, u64, f64) {
    let hist = Arc::new(Mutex::new(histogram()));
    let (events, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let deadline = started + o.duration;
    let clients = (0..o.concurrency).map(|c| {
        let (http, driver, hist, events, errors) = (
            http.clone(),
            driver.clone(),
            hist.clone(),
            events.clone(),
            errors.clone(),
        );
        let calls = calls.to_vec();
        async move {
            let mut local = histogram();
            let mut n = 0u64;
            while Instant::now() < deadline {
                // Each client has participants of its own: two writes racing on one participant would
                // each read the other's value back, and verification would rightly say so.
                let own = (calls.len() / o.concurrency).max(1);
                let call = &calls[(c + (n as usize % own) * o.concurrency) % calls.len()];
                let sent = Instant::now();
                let ok = driver.event(&http, call, n).await;
                local
                    .record(sent.elapsed().as_micros().max(1) as u64)
                    .expect("in bounds");
                events.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            hist.lock()
                .expect("not poisoned")
                .add(&local)
                .expect("same bounds");
        }
    });
    futures::future::join_all(clients).await;
    let seconds = started.elapsed().as_secs_f64();
    let h = hist.lock().expect("not poisoned").clone();
    (
        h,
        events.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        seconds,
    )
}

/// Open loop: one event every 1/rate s, each timed from when it was due, whatever came before.
async fn open_loop(
    o: &BenchOptions,
    http: &reqwest::Client,
    driver: Driver,
    calls: &[LiveCall],
) -> (Histogram<u64>, u64, u64, f64) {
    let hist = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let total = o.rate * o.duration.as_secs();
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = started + Duration::from_nanos(n * 1_000_000_000 / o.rate);
        tokio::time::sleep_until(due).await;
        let (http, driver, hist, errors) =
            (http.clone(), driver.clone(), hist.clone(), errors.clone());
        let call = calls[n as usize % calls.len()].clone();
        tasks.push(tokio::spawn(async move {
            let ok = driver.event(&http, &call, n).await;
            let waited = due.elapsed().as_micros().max(1) as u64;
            hist.lock()
                .expect("not poisoned")
                .record(waited)
                .expect("in bounds");
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    futures::future::join_all(tasks).await;
    let seconds = started.elapsed().as_secs_f64();
    let h = hist.lock().expect("not poisoned").clone();
    (h, total, errors.load(Ordering::Relaxed), seconds)
}

#[allow(clippy::too_many_arguments)]
fn result(
    name: &str,
    hist: Option<&Histogram<u64>>,
    events: u64,
    errors: u64,
    seconds: f64,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    grants: u64,
    usage: (Option<f64>, Option<f64>),
) -> ScenarioResult {
    ScenarioResult {
        name: name.into(),
        events,
        errors,
        seconds,
        events_per_second: events as f64 / seconds,
        latency_ms: hist.map(Percentiles::of),
        calls_per_event: per_event(before, after, events),
        token_grants: grants,
        gateway_peak_rss_mib: usage.0,
        gateway_cpu_seconds_per_1000: usage.1.map(|cpu| cpu * 1000.0 / events.max(1) as f64),
        simulator_cpu_seconds_per_1000: None,
        load_generator_cpu_seconds_per_1000: None,
        lost: None,
        budget: None,
        targets: None,
        curve: hist.map(curve).unwrap_or_default(),
    }
}

/// One closed- or open-loop measurement against a running simulator.
struct Measure<'a> {
    o: &'a BenchOptions,
    http: &'a reqwest::Client,
    sim: &'a str,
    sim_process: &'a Process,
    calls: &'a [LiveCall],
    open: bool,
}

impl Measure<'_> {
    /// Drives `driver` and gathers the figures; `gateway` is the process whose usage is reported.
    async fn scenario(
        &self,
        name: &str,
        driver: Driver,
        gateway: Option<&Process>,
    ) -> anyhow::Result<ScenarioResult> {
        let (grants_before, before) = sim_stats(self.http, self.sim).await?;
        let mark = CpuMark::now(self.sim_process);
        let (h, events, errors, secs) = if self.open {
            open_loop(self.o, self.http, driver, self.calls).await
        } else {
            closed_loop(self.o, self.http, driver, self.calls).await
        };
        let (grants_after, after) = sim_stats(self.http, self.sim).await?;
        // The baseline's grant happens before `before`: count it as the one it makes.
        let grants = if gateway.is_some() {
            grants_after - grants_before
        } else {
            1
        };
        let usage = gateway.map(Process::usage).unwrap_or((None, None));
        let mut r = result(
            name,
            Some(&h),
            events,
            errors,
            secs,
            &before,
            &after,
            grants,
            usage,
        );
        if !self.open {
            mark.record(self.sim_process, &mut r);
        }
        Ok(r)
    }
}

/// Runs every scenario and writes the report. `Ok(false)` when an event failed or an update was lost.
pub async fn run(o: &BenchOptions, out: &mut impl std::io::Write) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&o.out_dir)?;
    let calls: Vec<LiveCall> = (0..512).map(LiveCall::numbered).collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut results = Vec::new();

    // (a) closed loop and (b) open loop with upstream latency, each through the gateway and then as
    // (d) the baseline, on a simulator of their own.
    let loops = if o.contact_center_only {
        vec![]
    } else {
        vec![(false, 0), (true, o.upstream_latency_ms)]
    };
    for (open, latency_ms) in loops {
        let (sim_process, sim) = start_sim(o, calls.len()).await?;
        http.post(format!("{sim}/__sim/latency/{latency_ms}"))
            .send()
            .await?;
        let (gateway, url) = start_gateway(o, &sim).await?;
        let run = Measure {
            o,
            http: &http,
            sim: &sim,
            sim_process: &sim_process,
            calls: &calls,
            open,
        };
        let name = if open {
            "b) gateway, open loop"
        } else {
            "a) gateway, closed loop"
        };
        results.push(
            run.scenario(name, Driver::Gateway { url }, Some(&gateway))
                .await?,
        );
        drop(gateway);
        let token = grant(&http, &sim).await?;
        let name = if open {
            "d) baseline, open loop"
        } else {
            "d) baseline, closed loop"
        };
        results.push(
            run.scenario(
                name,
                Driver::Baseline {
                    sim: sim.clone(),
                    token,
                },
                None,
            )
            .await?,
        );
    }

    // (c) a burst of asynchronous updates.
    if !o.contact_center_only {
        results.push(burst(o, &http).await?);
    }

    // (e) and (f): a contact center on Genesys's real budget.
    results.extend(contact_center::run(o, &http).await?);

    // (j), (k) and (l): secure and custom attributes on the same budget.
    results.extend(targets::run(o, &http).await?);

    let report = Report::new(o, results);
    report.print(out)?;
    std::fs::write(
        o.out_dir.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    plot::latency_curves(&report.scenarios, &o.out_dir.join("latency.png"))?;
    writeln!(
        out,
        "\nwrote {} and {}",
        o.out_dir.join("bench.json").display(),
        o.out_dir.join("latency.png").display()
    )?;
    Ok(report
        .scenarios
        .iter()
        .all(|s| s.errors == 0 && s.lost.unwrap_or(0) == 0))
}

pub use contact_center::BudgetFigures;

/// (c): `burst_events` asynchronous updates over `burst_participants`, then wait for the queue to drain.
async fn burst(o: &BenchOptions, http: &reqwest::Client) -> anyhow::Result<ScenarioResult> {
    let participants: Vec<LiveCall> = (0..o.burst_participants).map(LiveCall::numbered).collect();
    let (_sim, sim) = start_sim(o, participants.len()).await?;
    let (gateway, url) = start_gateway(o, &sim).await?;
    let (_, before) = sim_stats(http, &sim).await?;
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let per_participant = o.burst_events / o.burst_participants;
    // Each sender takes whole participants, so one participant's updates are sent in order.
    let senders = (0..o.concurrency).map(|_| {
        let (http, url, errors, next, participants) = (http.clone(), url.clone(), errors.clone(), next.clone(), participants.clone());
        async move {
            loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                let Some(call) = participants.get(p) else { break };
                for n in 0..per_participant {
                    let body = json!({"conversationId": call.conversation, "participantId": call.customer,
                                      "attributes": {"n": n.to_string(), format!("k{}", n % 5): n.to_string()}});
                    let sent = http
                        .post(format!("{url}/v1/attributes"))
                        .header("x-api-key", API_KEY)
                        .header("prefer", "respond-async")
                        .json(&body)
                        .send()
                        .await;
                    if !matches!(sent, Ok(r) if r.status() == 202) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    futures::future::join_all(senders).await;
    let accepted_in = started.elapsed();
    // Drained when every participant shows its last value.
    let last = (per_participant - 1).to_string();
    let mut pending: Vec<&LiveCall> = participants.iter().collect();
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    while !pending.is_empty() && Instant::now() < drain_deadline {
        let mut still = Vec::new();
        for call in pending {
            let v: Value = http
                .get(format!("{sim}/api/v2/conversations/{}", call.conversation))
                .bearer_auth(grant(http, &sim).await.unwrap_or_default())
                .send()
                .await?
                .json()
                .await?;
            let shown = v["participants"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["id"] == call.customer.as_str()))
                .and_then(|p| p["attributes"]["n"].as_str().map(str::to_string));
            if shown.as_deref() != Some(last.as_str()) {
                still.push(call);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (_, after) = sim_stats(http, &sim).await?;
    let events = (per_participant * participants.len()) as u64;
    let mut r = result(
        "c) gateway, async burst",
        None,
        events,
        errors.load(Ordering::Relaxed),
        seconds,
        &before,
        &after,
        1,
        gateway.usage(),
    );
    // The check reads above asked for tokens of their own: count the gateway's only.
    r.calls_per_event.remove("token");
    r.calls_per_event.remove("get_conversation");
    r.lost = Some((pending.len() * per_participant) as u64);
    r.name = format!(
        "c) gateway, async burst (accepted in {:.2} s)",
        accepted_in.as_secs_f64()
    );
    Ok(r)
}

/// Everything the bench measured, and how it compares with its targets.
#[derive(Serialize)]
pub struct Report {
    pub machine: String,
    pub quick: bool,
    pub scenarios: Vec<ScenarioResult>,
    pub throughput_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    pub added_latency_ms: Option<Percentiles>,
    pub targets: Vec<(String, bool)>,
}

impl Report {
    fn new(o: &BenchOptions, scenarios: Vec<ScenarioResult>) -> Self {
        let find = |prefix: &str| scenarios.iter().find(|s| s.name.starts_with(prefix));
        let (a, d, b, bb, c) = (
            find("a)"),
            find("d) baseline, closed"),
            find("b)"),
            find("d) baseline, open"),
            find("c)"),
        );
        let throughput_ratio = a
            .zip(d)
            .map(|(a, d)| a.events_per_second / d.events_per_second);
        let p99 = |s: &ScenarioResult| s.latency_ms.as_ref().map(|l| l.p99);
        let p99_ratio = a.zip(d).and_then(|(a, d)| Some(p99(a)? / p99(d)?));
        let added_latency_ms = b.zip(bb).and_then(|(b, bb)| {
            let (g, base) = (b.latency_ms.as_ref()?, bb.latency_ms.as_ref()?);
            Some(Percentiles {
                p50: g.p50 - base.p50,
                p90: g.p90 - base.p90,
                p99: g.p99 - base.p99,
                p999: g.p999 - base.p999,
                max: g.max - base.max,
            })
        });
        let calls = |s: &ScenarioResult| {
            s.calls_per_event
                .iter()
                .filter(|(k, _)| *k != "token")
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        let mut targets = if a.is_none() {
            vec![]
        } else {
            vec![
                (
                    "a) throughput >= 50% of the baseline".to_string(),
                    throughput_ratio.is_some_and(|r| r >= 0.5),
                ),
                (
                    "b) added p99 <= 2 ms at the open-loop rate".to_string(),
                    added_latency_ms.as_ref().is_some_and(|l| l.p99 <= 2.0),
                ),
                (
                    "exactly 1 token grant per run".to_string(),
                    [a, b].iter().flatten().all(|s| s.token_grants == 1),
                ),
                (
                    "2.0 Genesys calls per synchronous verified event".to_string(),
                    [a, b]
                        .iter()
                        .flatten()
                        .all(|s| (calls(s) - 2.0).abs() < 0.01),
                ),
                (
                    "c) fewer than 1 PATCH per event with merging".to_string(),
                    c.is_some_and(|c| {
                        c.calls_per_event
                            .get("patch_attributes")
                            .is_some_and(|p| *p < 1.0)
                    }),
                ),
                (
                    "a) peak RSS <= 64 MiB".to_string(),
                    a.and_then(|a| a.gateway_peak_rss_mib)
                        .is_some_and(|m| m <= 64.0),
                ),
                (
                    "c) drained with none lost".to_string(),
                    c.is_some_and(|c| c.lost == Some(0) && c.errors == 0),
                ),
            ]
        };
        let (e, f) = (find("e) contact center, bursts, REST"), find("f)"));
        let budget = |s: Option<&ScenarioResult>| s.and_then(|s| s.budget.clone());
        if let Some(eb) = budget(e) {
            let e = e.expect("e) ran");
            targets.extend([
                (
                    "e) bursts: 100% answered verified".to_string(),
                    eb.verified == e.events,
                ),
                (
                    "e) bursts: at most 1.0 Genesys call per event".to_string(),
                    calls(e) <= 1.0,
                ),
                (
                    "e) bursts: no 429 from Genesys".to_string(),
                    eb.genesys_429 == 0,
                ),
                (
                    "e) bursts: p99 within 3 s".to_string(),
                    p99(e).is_some_and(|p| p <= 3000.0),
                ),
            ]);
        }
        if let Some(fb) = budget(f) {
            targets.extend([
                (
                    "f) over budget: every refusal is 429 with Retry-After, within 1 s".to_string(),
                    fb.other == 0 && fb.slowest_refusal_ms <= 1000.0,
                ),
                (
                    "f) over budget: no answer after the deadline".to_string(),
                    fb.late == 0,
                ),
                (
                    "f) over budget: no 429 from Genesys".to_string(),
                    fb.genesys_429 == 0,
                ),
                (
                    "f) over budget: >= 90% of the window's calls serve answered events"
                        .to_string(),
                    fb.window_served_pct >= 90.0,
                ),
            ]);
        }
        // The live mirror: found, resolved and verified without asking, so one call an event.
        let all_verified =
            |s: &ScenarioResult| s.budget.as_ref().is_some_and(|b| b.verified == s.events);
        for (name, at_most) in [
            ("g) screen pops by number, mirror", 1.1),
            ("h) three updates on one call, mirror", 1.0),
            ("e) contact center, bursts, mirror", 0.5),
        ] {
            if let Some(s) = find(name) {
                targets.push((
                    format!("{name}: at most {at_most} Genesys calls per verified event"),
                    all_verified(s) && calls(s) <= at_most,
                ));
            }
        }
        if let Some(g) = find("g) screen pops by number, mirror") {
            targets.push((
                "g) screen pops by number, mirror: p99 within 1.5 s".to_string(),
                p99(g).is_some_and(|p| p <= 1500.0),
            ));
        }
        for name in [
            "g) screen pops by number, REST",
            "h) three updates on one call, REST",
            "i) screen pops through a 2 s feed gap, mirror",
        ] {
            if let Some(s) = find(name) {
                targets.push((format!("{name}: every event verified"), all_verified(s)));
            }
        }
        if let (Some(i), Some(g)) = (
            find("i) screen pops through"),
            find("g) screen pops by number, REST"),
        ) {
            targets.push((
                "i) through a feed gap: at most the REST path's calls per event".to_string(),
                calls(i) <= calls(g) + 0.01,
            ));
        }
        let per_target = |name: &str| find(name).and_then(|s| s.targets.clone());
        if let Some(j) = per_target("j) one update, three targets") {
            targets.push((
                "j) three targets: at most 2.0 Genesys calls per verified secure write".to_string(),
                j.secure_verified == j.secure_writes
                    && j.secure_calls_per_verified().is_some_and(|c| c <= 2.0),
            ));
            targets.push((
                "j) three targets: at most 2.0 Genesys calls per verified custom write (schema reads apart)".to_string(),
                j.custom_verified == j.custom_writes
                    && j.custom_calls_per_verified().is_some_and(|c| c <= 2.0),
            ));
        }
        if let Some(k) = per_target("k) custom-attribute bursts") {
            targets.push((
                "k) custom bursts: at most 1.0 Genesys call per verified custom write (schema reads apart)".to_string(),
                k.custom_verified == k.custom_writes
                    && k.custom_calls_per_verified().is_some_and(|c| c <= 1.0),
            ));
        }
        if let Some(l) = per_target("l) secure-attribute bursts") {
            targets.push((
                "l) secure bursts: at most 1.0 Genesys call per verified secure write".to_string(),
                l.secure_verified == l.secure_writes
                    && l.secure_calls_per_verified().is_some_and(|c| c <= 1.0),
            ));
        }
        if o.quick {
            targets.push(("(quick run: figures are indicative only)".into(), true));
        }
        Self {
            machine: machine(),
            quick: o.quick,
            scenarios,
            throughput_ratio,
            p99_ratio,
            added_latency_ms,
            targets,
        }
    }

    fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "machine: {}\n", self.machine)?;
        writeln!(
            out,
            "{:<46} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}  {:<40} {:>6} {:>8} {:>9} {:>9} {:>9}",
            "scenario", "events", "errors", "events/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "Genesys calls per event", "grants", "RSS MiB", "CPU s/1k", "sim s/1k", "load s/1k"
        )?;
        for s in &self.scenarios {
            let l = s.latency_ms.as_ref();
            let f = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
            let calls: Vec<String> = s
                .calls_per_event
                .iter()
                .map(|(k, v)| format!("{k}={v:.3}"))
                .collect();
            writeln!(
                out,
                "{:<46} {:>8} {:>6} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>8}  {:<40} {:>6} {:>8} {:>9} {:>9} {:>9}",
                s.name,
                s.events,
                s.errors,
                s.events_per_second,
                f(l.map(|l| l.p50)),
                f(l.map(|l| l.p90)),
                f(l.map(|l| l.p99)),
                f(l.map(|l| l.p999)),
                f(l.map(|l| l.max)),
                calls.join(" "),
                s.token_grants,
                f(s.gateway_peak_rss_mib),
                f(s.gateway_cpu_seconds_per_1000),
                f(s.simulator_cpu_seconds_per_1000),
                f(s.load_generator_cpu_seconds_per_1000),
            )?;
            if let Some(lost) = s.lost {
                writeln!(out, "{:<46} lost: {lost}", "")?;
            }
            if let Some(t) = &s.targets {
                let per = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.2}"));
                writeln!(
                    out,
                    "{:<46} participant verified {}; secure verified {}/{} ({} calls, {} per verified); custom verified {}/{} ({} calls, {} per verified; schema reads {})",
                    "",
                    t.participant_verified,
                    t.secure_verified,
                    t.secure_writes,
                    t.secure_calls,
                    per(t.secure_calls_per_verified()),
                    t.custom_verified,
                    t.custom_writes,
                    t.custom_calls,
                    per(t.custom_calls_per_verified()),
                    t.schema_calls,
                )?;
            }
            if let Some(b) = &s.budget {
                writeln!(
                    out,
                    "{:<46} verified {}, unverified {}, refused {} (slowest {:.0} ms, {} after a call), other {}, late {}; Genesys: {} calls, {} answered 429; window served {:.1}% of {} calls",
                    "",
                    b.verified,
                    b.unverified,
                    b.refused,
                    b.slowest_refusal_ms,
                    b.refusals_after_a_call,
                    b.other,
                    b.late,
                    b.genesys_calls,
                    b.genesys_429,
                    b.window_served_pct,
                    contact_center::GENESYS_LIMIT,
                )?;
            }
        }
        writeln!(out)?;
        if let (Some(t), Some(p)) = (self.throughput_ratio, self.p99_ratio) {
            writeln!(
                out,
                "gateway / baseline (closed loop): throughput {t:.2}, p99 {p:.2}"
            )?;
        }
        if let Some(a) = &self.added_latency_ms {
            writeln!(
                out,
                "added latency over the upstream's own (open loop): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
                a.p50, a.p90, a.p99, a.p999
            )?;
        }
        writeln!(out, "\ntargets:")?;
        for (target, met) in &self.targets {
            writeln!(out, "  [{}] {target}", if *met { "met " } else { "MISS" })?;
        }
        Ok(())
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

/// The default output directory: `target/bench` beside the binary's target directory.
pub fn default_out_dir(binary: &Path) -> PathBuf {
    binary
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("bench"))
        .unwrap_or_else(|| PathBuf::from("bench-out"))
}
