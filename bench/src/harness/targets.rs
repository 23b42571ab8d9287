//! Scenarios (j) and (k): the conversation's other targets, on one token's real Genesys budget (the
//! simulator's limit and latency, as in (e) to (i)), the mirror off:
//! - (j) one CRM update per call carrying all three targets: a participant attribute, a secure
//!   attribute and a field of the call's custom-attributes record, 300 ms after the call starts;
//! - (k) bursts of custom-attribute updates: 4 per call, 53 ms apart, each another field of the
//!   call's record;
//! - (l) bursts of secure-attribute updates, alike: each another secure attribute of the call.
//!
//! Each target's cost is its own Genesys calls per write that was verified: the secure attributes'
//! PATCH and reads, the custom record's reads and bulk writes. The schema's reads are counted
//! apart: one per `custom.schema_ttl_s` serves every record's writes.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::contact_center::{fresh, schedule, start, Answer, Step};
use super::{call_counts, histogram, result, sim_stats_raw, BenchOptions, ScenarioResult};
use patchbay::sim::{LiveCall, SEED_SCHEMA_NAME};

const CALL_SPACING: Duration = Duration::from_millis(216);
const START_LEAD: Duration = Duration::from_millis(300);
const UPDATE_SPACING: Duration = Duration::from_millis(53);
const SECURE_OPS: &[&str] = &["patch_secure_attributes", "get_secure_attributes"];
/// A record's own calls: its reads and its (bulk) writes.
const CUSTOM_OPS: &[&str] = &[
    "get_custom_attributes",
    "put_custom_attributes_bulk",
    "patch_custom_attributes_bulk",
];
/// The schema's reads: once per `custom.schema_ttl_s` for every record, not a write's own.
const SCHEMA_OPS: &[&str] = &["list_custom_schemas", "get_custom_schema"];

/// How each target of a scenario's updates was answered, and what it cost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetFigures {
    pub participant_verified: u64,
    pub secure_writes: u64,
    pub secure_verified: u64,
    pub secure_calls: u64,
    pub custom_writes: u64,
    pub custom_verified: u64,
    /// The records' own calls: their reads and writes.
    pub custom_calls: u64,
    /// The schema's reads, shared by every record's writes.
    pub schema_calls: u64,
}

impl TargetFigures {
    pub fn secure_calls_per_verified(&self) -> Option<f64> {
        (self.secure_verified > 0).then(|| self.secure_calls as f64 / self.secure_verified as f64)
    }

    pub fn custom_calls_per_verified(&self) -> Option<f64> {
        (self.custom_verified > 0).then(|| self.custom_calls as f64 / self.custom_verified as f64)
    }
}

fn ops(before: &Value, after: &Value, ops: &[&str]) -> u64 {
    let n = |v: &Value, op: &str| v["calls"][op].as_u64().unwrap_or(0);
    ops.iter().map(|op| n(after, op) - n(before, op)).sum()
}

fn scenario(
    name: &str,
    answers: &[Answer],
    seconds: f64,
    before: &Value,
    after: &Value,
) -> ScenarioResult {
    let mut t = TargetFigures::default();
    let mut h = histogram();
    let mut errors = 0;
    for a in answers {
        if a.status != 200 {
            errors += 1;
            continue;
        }
        let _ = h.record(a.took.as_micros().max(1) as u64);
        let b = &a.body;
        if b["participantId"] != "" && b["verified"] == true {
            t.participant_verified += 1;
        }
        if b.get("secureVerified").is_some() {
            t.secure_writes += 1;
            t.secure_verified += u64::from(b["secureVerified"] == true);
        }
        if b.get("customVerified").is_some() {
            t.custom_writes += 1;
            t.custom_verified += u64::from(b["customVerified"] == true);
        }
    }
    t.secure_calls = ops(before, after, SECURE_OPS);
    t.custom_calls = ops(before, after, CUSTOM_OPS);
    t.schema_calls = ops(before, after, SCHEMA_OPS);
    let grants = after["grants"].as_u64().unwrap_or(0) - before["grants"].as_u64().unwrap_or(0);
    let mut r = result(
        name,
        Some(&h),
        answers.len() as u64,
        errors,
        seconds,
        &call_counts(before),
        &call_counts(after),
        grants,
        (None, None),
    );
    r.targets = Some(t);
    r
}

/// On a fresh simulator and gateway, starts calls `0..n`, [`CALL_SPACING`] apart, sends `updates`
/// at their offsets, and measures them as scenario `name`.
async fn measure(
    o: &BenchOptions,
    http: &reqwest::Client,
    name: &str,
    n: usize,
    updates: Vec<(Duration, Value)>,
) -> anyhow::Result<ScenarioResult> {
    let (_sim_process, _gateway, sim, url) = fresh(o, http, 0, false).await?;
    let (sim, url) = (sim.as_str(), url.as_str());
    let starts = (0..n).map(|i| start(i, CALL_SPACING * i as u32));
    let updates = updates
        .into_iter()
        .map(|(at, body)| (at, Step::Update(body)));
    let before = sim_stats_raw(http, sim).await?;
    let (answers, seconds) = schedule(http, url, sim, starts.chain(updates).collect()).await;
    let after = sim_stats_raw(http, sim).await?;
    Ok(scenario(name, &answers, seconds, &before, &after))
}

/// (j), (k) and (l).
pub async fn run(o: &BenchOptions, http: &reqwest::Client) -> anyhow::Result<Vec<ScenarioResult>> {
    let n = if o.quick { 10 } else { 30 };
    let mut results = Vec::new();

    let updates: Vec<(Duration, Value)> = (0..n)
        .map(|i| {
            let call = LiveCall::numbered(i);
            let body = json!({
                "conversationId": call.conversation, "purpose": "customer",
                "attributes": {"crmCase": format!("C-{i}")},
                "secureAttributes": {"dob": "1970-07-04"},
                "customSchema": SEED_SCHEMA_NAME,
                "customAttributes": {"caseNumber": format!("C-{i}"), "priority": "2"}
            });
            (CALL_SPACING * i as u32 + START_LEAD, body)
        })
        .collect();
    results.push(measure(o, http, "j) one update, three targets, REST", n, updates).await?);

    let custom = bursts(n, |i, field, value| {
        json!({
            "conversationId": LiveCall::numbered(i).conversation,
            "customSchema": SEED_SCHEMA_NAME,
            "customAttributes": {"caseNumber": format!("C-{i}"), field: value}
        })
    });
    results.push(measure(o, http, "k) custom-attribute bursts, REST", n, custom).await?);

    let secure = bursts(n, |i, field, value| {
        json!({
            "conversationId": LiveCall::numbered(i).conversation,
            "secureAttributes": {"account": format!("A-{i}"), field: value}
        })
    });
    results.push(measure(o, http, "l) secure-attribute bursts, REST", n, secure).await?);
    Ok(results)
}

/// Bursts for calls `0..n`: 4 updates per call, [`UPDATE_SPACING`] apart, each `body` of the call's
/// number and another field.
fn bursts(n: usize, body: impl Fn(usize, &str, Value) -> Value) -> Vec<(Duration, Value)> {
    let fields = [
        ("priority", json!("3")),
        ("amount", json!("19.90")),
        ("vip", json!("true")),
        ("tier", json!("gold")),
    ];
    let body = &body;
    (0..n)
        .flat_map(|i| {
            fields.iter().enumerate().map(move |(k, (field, value))| {
                (
                    CALL_SPACING * i as u32 + START_LEAD + UPDATE_SPACING * k as u32,
                    body(i, field, value.clone()),
                )
            })
        })
        .collect()
}
