//! Scenarios (e) to (i): a contact center on one token's real Genesys budget, each run with the live
//! mirror off (every update by REST) and on.
//!
//! The simulator enforces Genesys's limit (300 API calls a minute per token, 429 beyond) and answers
//! after 30 ms; the gateway runs on its defaults. Every call starts while the scenario runs (its queue
//! pushes the start, as Genesys's does), and its CRM's updates come after:
//! - (e) bursts: 30 live calls, one every 216 ms; each gets 4 CRM updates 53 ms apart (within 160 ms),
//!   alternately addressed by purpose and by participant id, each synchronous and verified;
//! - (f) over budget: then, on the same token's minute, 150 other calls, one update each, at 15 a
//!   second: more calls than the minute has left;
//! - (g) screen pops: one update per call, addressed by the caller's number, 500 ms after it starts;
//! - (h) three updates on one call: the customer by purpose, the agent by purpose 100 ms later, the
//!   customer again 150 ms after that;
//! - (i) screen pops through a feed gap: as (g), with the notification sockets down for 2 s in the
//!   middle (events of the gap lost), on the mirror only.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use super::{
    call_counts, histogram, result, sim_stats_raw, start_gateway_with, start_sim, BenchOptions,
    ScenarioResult, API_KEY,
};
use patchbay::sim::LiveCall;

/// Genesys's limit per token, which the simulator enforces here.
pub const GENESYS_LIMIT: u32 = 300;
const LATENCY_MS: u64 = 30;
const BURST_CALLS: usize = 30;
const UPDATES_PER_CALL: usize = 4;
const CALL_SPACING: Duration = Duration::from_millis(216);
const UPDATE_SPACING: Duration = Duration::from_millis(53);
const OVER_CALLS: usize = 150;
const OVER_SPACING: Duration = Duration::from_micros(66_667);
/// How long after a call starts its CRM's first update comes.
const START_LEAD: Duration = Duration::from_millis(300);
const POP_SPACING: Duration = Duration::from_millis(200);
const POP_LEAD: Duration = Duration::from_millis(500);
const THREE_SPACING: Duration = Duration::from_millis(300);
const GAP: Duration = Duration::from_secs(2);
/// The gateway's `server.request_timeout_ms` on its defaults.
const DEADLINE: Duration = Duration::from_secs(10);
/// A refusal faster than one Genesys call cannot have spent one.
const ONE_CALL: Duration = Duration::from_millis(LATENCY_MS);

/// How the events of a phase were answered, on Genesys's real budget.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BudgetFigures {
    pub verified: u64,
    /// 200 with `verified: false`.
    pub unverified: u64,
    /// 429 `rate_limited` with `Retry-After`.
    pub refused: u64,
    /// The slowest refusal, in ms.
    pub slowest_refusal_ms: f64,
    /// Refusals slower than one Genesys call: each may have spent one call on a read.
    pub refusals_after_a_call: u64,
    /// Anything else: 5xx, 504, a 429 without `Retry-After`, no answer.
    pub other: u64,
    /// Answers that came after the gateway's deadline.
    pub late: u64,
    /// Genesys's 429s during the phase.
    pub genesys_429: u64,
    /// API calls Genesys answered with success during the phase.
    pub genesys_calls: u64,
    /// Of the calls one token is allowed in the minute, the share that served answered events
    /// (both phases so far; refusals after a call counted as wasting one).
    pub window_served_pct: f64,
}

/// One event's answer.
/// How the gateway answered one update, and how long it took.
pub(super) struct Answer {
    pub(super) status: u16,
    /// The answer's JSON (null when it was not JSON).
    pub(super) body: Value,
    pub(super) retry_after: bool,
    pub(super) took: Duration,
}

impl Answer {
    fn verified(&self) -> bool {
        self.body["verified"] == true
    }
}

async fn send(http: &reqwest::Client, url: &str, body: Value) -> Answer {
    let started = Instant::now();
    let sent = http
        .post(format!("{url}/v1/attributes"))
        .header("x-api-key", API_KEY)
        .json(&body)
        .send()
        .await;
    let (status, retry_after, body) = match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r.headers().contains_key("retry-after");
            (status, retry_after, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, false, Value::Null),
    };
    Answer {
        status,
        body,
        retry_after,
        took: started.elapsed(),
    }
}

/// The body of update `k` of `call`: even ones by purpose, odd ones by participant id.
fn update(call: &LiveCall, k: usize) -> Value {
    let attributes = json!({format!("crm{k}"): format!("value-{k}")});
    if k.is_multiple_of(2) {
        json!({"conversationId": call.conversation, "purpose": "customer", "attributes": attributes})
    } else {
        json!({"conversationId": call.conversation, "participantId": call.customer, "attributes": attributes})
    }
}

/// What happens at a moment of a scenario.
pub(super) enum Step {
    /// An update sent to the gateway.
    Update(Value),
    /// A simulator control call: a call starts, the feed goes down.
    Sim(String),
}

/// Runs `steps`, each at its offset from now, and gathers the updates' answers.
pub(super) async fn schedule(
    http: &reqwest::Client,
    url: &str,
    sim: &str,
    steps: Vec<(Duration, Step)>,
) -> (Vec<Answer>, f64) {
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (at, step) in steps {
        let (http, url, sim) = (http.clone(), url.to_string(), sim.to_string());
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(started + at).await;
            match step {
                Step::Update(body) => Some(send(&http, &url, body).await),
                Step::Sim(path) => {
                    let _ = http.post(format!("{sim}{path}")).send().await;
                    None
                }
            }
        });
        tasks.push(task);
    }
    let answers = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(|a| {
            a.unwrap_or(Some(Answer {
                status: 0,
                body: Value::Null,
                retry_after: false,
                took: Duration::ZERO,
            }))
        })
        .collect();
    (answers, started.elapsed().as_secs_f64())
}

/// Call `i` starts at `at`.
pub(super) fn start(i: usize, at: Duration) -> (Duration, Step) {
    (at, Step::Sim(format!("/__sim/calls/{i}/start")))
}

fn pop(i: usize) -> Value {
    json!({"lookup": {"ani": patchbay::sim::Simulator::caller_number(i)}, "attributes": {"screenPop": format!("case-{i}")}})
}

fn by_purpose(call: &LiveCall, purpose: &str, key: &str) -> Value {
    json!({"conversationId": call.conversation, "purpose": purpose, "attributes": {key: "set"}})
}

/// The figures of one phase; `served_before` carries the calls that served answered events so far.
fn figures(
    answers: &[Answer],
    before: &Value,
    after: &Value,
    served_before: &mut u64,
) -> (BudgetFigures, Histogram<u64>) {
    let mut f = BudgetFigures::default();
    let mut h = histogram();
    for a in answers {
        if a.took > DEADLINE {
            f.late += 1;
        }
        match (a.status, a.verified()) {
            (200, true) => f.verified += 1,
            (200, false) => f.unverified += 1,
            (429, _) if a.retry_after => {
                f.refused += 1;
                f.slowest_refusal_ms = f.slowest_refusal_ms.max(a.took.as_secs_f64() * 1000.0);
                if a.took > ONE_CALL {
                    f.refusals_after_a_call += 1;
                }
            }
            _ => f.other += 1,
        }
        if a.status == 200 {
            let _ = h.record(a.took.as_micros().max(1) as u64);
        }
    }
    // Every API call counts, the feed's own (channels, subscriptions, queue listings) too.
    let api_calls = |v: &Value| -> u64 {
        v["calls"]
            .as_object()
            .map(|calls| {
                calls
                    .iter()
                    .filter(|(op, _)| *op != "token")
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    let limited = |v: &Value| v["rateLimited"].as_u64().unwrap_or(0);
    f.genesys_429 = limited(after) - limited(before);
    f.genesys_calls = (api_calls(after) - api_calls(before)).saturating_sub(f.genesys_429);
    *served_before += f.genesys_calls.saturating_sub(f.refusals_after_a_call);
    f.window_served_pct = *served_before as f64 * 100.0 / f64::from(GENESYS_LIMIT);
    (f, h)
}

fn scenario(
    name: &str,
    answers: &[Answer],
    seconds: f64,
    before: &Value,
    after: &Value,
    served: &mut u64,
) -> ScenarioResult {
    let (f, h) = figures(answers, before, after, served);
    let grants = after["grants"].as_u64().unwrap_or(0) - before["grants"].as_u64().unwrap_or(0);
    let mut r = result(
        name,
        Some(&h),
        answers.len() as u64,
        f.other + f.late,
        seconds,
        &call_counts(before),
        &call_counts(after),
        grants,
        (None, None),
    );
    r.budget = Some(f);
    r
}

/// A simulator with Genesys's limit and latency, and a gateway on its defaults, the mirror on or
/// off; with the mirror on, once its feed is live.
pub(super) async fn fresh(
    o: &BenchOptions,
    http: &reqwest::Client,
    calls: usize,
    mirror: bool,
) -> anyhow::Result<(super::Process, super::Process, String, String)> {
    let (sim_process, sim) = start_sim(o, calls).await?;
    http.post(format!("{sim}/__sim/latency/{LATENCY_MS}"))
        .send()
        .await?;
    http.post(format!("{sim}/__sim/rate-limit/{GENESYS_LIMIT}"))
        .send()
        .await?;
    let mut extra: Vec<(&str, String)> = o
        .linger_ms
        .map(|ms| ("PATCHBAY__DELIVERY__LINGER_MS", ms.to_string()))
        .into_iter()
        .collect();
    extra.push(("PATCHBAY__MIRROR__ENABLED", mirror.to_string()));
    let (gateway, url) = start_gateway_with(o, &sim, &extra).await?;
    if mirror {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let text = http
                .get(format!("{url}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            if text.lines().any(|l| l.trim() == "patchbay_mirror_live 1") {
                break;
            }
            anyhow::ensure!(
                Instant::now() < give_up,
                "the gateway's mirror never went live"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((sim_process, gateway, sim, url))
}

/// Runs every scenario with the mirror off, then on.
pub async fn run(o: &BenchOptions, http: &reqwest::Client) -> anyhow::Result<Vec<ScenarioResult>> {
    let mut results = Vec::new();
    for mirror in [false, true] {
        results.extend(bursts_and_over(o, http, mirror).await?);
        results.push(screen_pops(o, http, mirror, false).await?);
        results.push(three_updates(o, http, mirror).await?);
    }
    results.push(screen_pops(o, http, true, true).await?);
    Ok(results)
}

fn label(name: &str, mirror: bool) -> String {
    format!("{name}, {}", if mirror { "mirror" } else { "REST" })
}

/// (e) then (f) against one simulator and one gateway.
async fn bursts_and_over(
    o: &BenchOptions,
    http: &reqwest::Client,
    mirror: bool,
) -> anyhow::Result<Vec<ScenarioResult>> {
    let calls: Vec<LiveCall> = (0..BURST_CALLS + OVER_CALLS)
        .map(LiveCall::numbered)
        .collect();
    let (_sim_process, _gateway, sim, url) = fresh(o, http, 0, mirror).await?;
    let mut served = 0;

    let bursts: Vec<(Duration, Step)> = calls[..BURST_CALLS]
        .iter()
        .enumerate()
        .flat_map(|(i, call)| {
            let at = CALL_SPACING * i as u32;
            std::iter::once(start(i, at)).chain((0..UPDATES_PER_CALL).map(move |k| {
                (
                    at + START_LEAD + UPDATE_SPACING * k as u32,
                    Step::Update(update(call, k)),
                )
            }))
        })
        .collect();
    let before = sim_stats_raw(http, &sim).await?;
    let (answers, seconds) = schedule(http, &url, &sim, bursts).await;
    let after = sim_stats_raw(http, &sim).await?;
    let e = scenario(
        &label("e) contact center, bursts", mirror),
        &answers,
        seconds,
        &before,
        &after,
        &mut served,
    );

    let over: Vec<(Duration, Step)> = calls[BURST_CALLS..]
        .iter()
        .enumerate()
        .flat_map(|(i, call)| {
            let at = OVER_SPACING * i as u32;
            [
                start(BURST_CALLS + i, at),
                (at + START_LEAD, Step::Update(update(call, i % 2))),
            ]
        })
        .collect();
    let (answers, seconds) = schedule(http, &url, &sim, over).await;
    let later = sim_stats_raw(http, &sim).await?;
    let f = scenario(
        &label("f) contact center, over budget", mirror),
        &answers,
        seconds,
        &after,
        &later,
        &mut served,
    );
    Ok(vec![e, f])
}

/// (g): one screen pop per call by the caller's number; (i) with a feed gap in the middle.
async fn screen_pops(
    o: &BenchOptions,
    http: &reqwest::Client,
    mirror: bool,
    gap: bool,
) -> anyhow::Result<ScenarioResult> {
    let n = if o.quick { 20 } else { 60 };
    let (_sim_process, _gateway, sim, url) = fresh(o, http, 0, mirror).await?;
    let mut steps: Vec<(Duration, Step)> = (0..n)
        .flat_map(|i| {
            let at = POP_SPACING * i as u32;
            [start(i, at), (at + POP_LEAD, Step::Update(pop(i)))]
        })
        .collect();
    if gap {
        steps.push((
            POP_SPACING * (n / 3) as u32,
            Step::Sim(format!("/__sim/feed-outage/{}", GAP.as_millis())),
        ));
    }
    let before = sim_stats_raw(http, &sim).await?;
    let (answers, seconds) = schedule(http, &url, &sim, steps).await;
    let after = sim_stats_raw(http, &sim).await?;
    let name = if gap {
        "i) screen pops through a 2 s feed gap, mirror".to_string()
    } else {
        label("g) screen pops by number", mirror)
    };
    Ok(scenario(&name, &answers, seconds, &before, &after, &mut 0))
}

/// (h): three updates on one call, by purpose: customer, agent 100 ms later, customer 150 ms later.
async fn three_updates(
    o: &BenchOptions,
    http: &reqwest::Client,
    mirror: bool,
) -> anyhow::Result<ScenarioResult> {
    let n = if o.quick { 10 } else { 30 };
    let (_sim_process, _gateway, sim, url) = fresh(o, http, 0, mirror).await?;
    let steps: Vec<(Duration, Step)> = (0..n)
        .flat_map(|i| {
            let call = LiveCall::numbered(i);
            let at = THREE_SPACING * i as u32;
            let first = at + START_LEAD;
            [
                start(i, at),
                (
                    first,
                    Step::Update(by_purpose(&call, "customer", "crmCase")),
                ),
                (
                    first + Duration::from_millis(100),
                    Step::Update(by_purpose(&call, "agent", "script")),
                ),
                (
                    first + Duration::from_millis(250),
                    Step::Update(by_purpose(&call, "customer", "vip")),
                ),
            ]
        })
        .collect();
    let before = sim_stats_raw(http, &sim).await?;
    let (answers, seconds) = schedule(http, &url, &sim, steps).await;
    let after = sim_stats_raw(http, &sim).await?;
    Ok(scenario(
        &label("h) three updates on one call", mirror),
        &answers,
        seconds,
        &before,
        &after,
        &mut 0,
    ))
}
