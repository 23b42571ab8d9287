//! Scenarios (e) and (f): a contact center on one token's real Genesys budget.
//!
//! The simulator enforces Genesys's limit (300 API calls a minute per token, 429 beyond) and answers
//! after 30 ms; the gateway runs on its defaults. Both phases share one token's minute, as a real
//! deployment's traffic does:
//! - (e) bursts: 30 live calls, one every 216 ms; each gets 4 CRM updates 53 ms apart (within 160 ms),
//!   alternately addressed by purpose and by participant id, each synchronous and verified;
//! - (f) over budget: then 150 other calls, one update each, at 15 a second: more calls than the
//!   minute has left.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use super::{
    call_counts, histogram, result, sim_stats_raw, start_gateway_with, start_sim, BenchOptions,
    ScenarioResult, API_KEY,
};
use crate::sim::LiveCall;

/// Genesys's limit per token, which the simulator enforces here.
pub const GENESYS_LIMIT: u32 = 300;
const LATENCY_MS: u64 = 30;
const BURST_CALLS: usize = 30;
const UPDATES_PER_CALL: usize = 4;
const CALL_SPACING: Duration = Duration::from_millis(216);
const UPDATE_SPACING: Duration = Duration::from_millis(53);
const OVER_CALLS: usize = 150;
const OVER_SPACING: Duration = Duration::from_micros(66_667);
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
struct Answer {
    status: u16,
    verified: bool,
    retry_after: bool,
    took: Duration,
}

async fn send(http: &reqwest::Client, url: &str, body: Value) -> Answer {
    let started = Instant::now();
    let sent = http
        .post(format!("{url}/v1/attributes"))
        .header("x-api-key", API_KEY)
        .json(&body)
        .send()
        .await;
    let (status, retry_after, verified) = match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r.headers().contains_key("retry-after");
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (status, retry_after, v["verified"] == true)
        }
        Err(_) => (0, false, false),
    };
    Answer {
        status,
        verified,
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

/// Sends `bodies`, each at its offset from now, and gathers the answers.
async fn schedule(
    http: &reqwest::Client,
    url: &str,
    bodies: Vec<(Duration, Value)>,
) -> (Vec<Answer>, f64) {
    let started = tokio::time::Instant::now();
    let tasks = bodies.into_iter().map(|(at, body)| {
        let (http, url) = (http.clone(), url.to_string());
        tokio::spawn(async move {
            tokio::time::sleep_until(started + at).await;
            send(&http, &url, body).await
        })
    });
    let answers = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|a| {
            a.unwrap_or(Answer {
                status: 0,
                verified: false,
                retry_after: false,
                took: Duration::ZERO,
            })
        })
        .collect();
    (answers, started.elapsed().as_secs_f64())
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
        match (a.status, a.verified) {
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
    let api_calls = |v: &Value| -> u64 {
        ["get_conversation", "patch_attributes"]
            .iter()
            .map(|op| v["calls"][op].as_u64().unwrap_or(0))
            .sum()
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

/// Runs (e) then (f) against one simulator and one gateway.
pub async fn run(o: &BenchOptions, http: &reqwest::Client) -> anyhow::Result<Vec<ScenarioResult>> {
    let calls: Vec<LiveCall> = (0..BURST_CALLS + OVER_CALLS)
        .map(LiveCall::numbered)
        .collect();
    let (_sim_process, sim) = start_sim(o, calls.len()).await?;
    http.post(format!("{sim}/__sim/latency/{LATENCY_MS}"))
        .send()
        .await?;
    http.post(format!("{sim}/__sim/rate-limit/{GENESYS_LIMIT}"))
        .send()
        .await?;
    let extra: Vec<(&str, String)> = o
        .linger_ms
        .map(|ms| ("PATCHBAY__DELIVERY__LINGER_MS", ms.to_string()))
        .into_iter()
        .collect();
    let (_gateway, url) = start_gateway_with(o, &sim, &extra).await?;
    let mut served = 0;

    let bursts: Vec<(Duration, Value)> = calls[..BURST_CALLS]
        .iter()
        .enumerate()
        .flat_map(|(i, call)| {
            (0..UPDATES_PER_CALL).map(move |k| {
                (
                    CALL_SPACING * i as u32 + UPDATE_SPACING * k as u32,
                    update(call, k),
                )
            })
        })
        .collect();
    let before = sim_stats_raw(http, &sim).await?;
    let (answers, seconds) = schedule(http, &url, bursts).await;
    let after = sim_stats_raw(http, &sim).await?;
    let e = scenario(
        "e) contact center, bursts",
        &answers,
        seconds,
        &before,
        &after,
        &mut served,
    );

    let over: Vec<(Duration, Value)> = calls[BURST_CALLS..]
        .iter()
        .enumerate()
        .map(|(i, call)| (OVER_SPACING * i as u32, update(call, i % 2)))
        .collect();
    let (answers, seconds) = schedule(http, &url, over).await;
    let later = sim_stats_raw(http, &sim).await?;
    let f = scenario(
        "f) contact center, over budget",
        &answers,
        seconds,
        &after,
        &later,
        &mut served,
    );
    Ok(vec![e, f])
}
