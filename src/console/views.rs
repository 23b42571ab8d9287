//! What the console's pages show, as plain text ready for the templates: recorded updates, jobs,
//! the budget and the chart's points. Templates escape every value they print.

use crate::journal::{Entry, Minute, Outcome};
use crate::store::queue::Job;

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
pub fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// RFC 3339 (UTC) of a time in ms since the epoch.
pub fn timestamp(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Calls as a number of one decimal when shared (`0.5`), whole otherwise.
pub fn calls(n: f64) -> String {
    if (n - n.round()).abs() < 1e-9 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

/// One row of Recent updates.
pub struct UpdateRow {
    pub id: String,
    pub time: String,
    pub source: String,
    pub replica: String,
    pub conversation: String,
    pub participant: String,
    pub found_by: String,
    pub verified_by: String,
    pub keys: String,
    pub outcome: &'static str,
    pub code: String,
    pub calls: String,
    pub latency_ms: u64,
    pub request_id: String,
}

impl From<&Entry> for UpdateRow {
    fn from(e: &Entry) -> Self {
        let dash = || "—".to_string();
        Self {
            id: e.id.clone(),
            time: clock(e.at_ms),
            source: e.source.clone(),
            replica: e.replica.clone(),
            conversation: e.conversation_id.clone().unwrap_or_else(dash),
            participant: e.participant_id.clone().unwrap_or_else(dash),
            found_by: e.found_by.clone().unwrap_or_else(dash),
            verified_by: e.verified_by.clone().unwrap_or_else(dash),
            keys: {
                // Each target's keys; the secure ones by name only: their values never reach
                // the journal.
                let mut parts = Vec::new();
                if !e.keys.is_empty() {
                    parts.push(e.keys.join(", "));
                }
                if !e.secure_keys.is_empty() {
                    parts.push(format!("secure: {}", e.secure_keys.join(", ")));
                }
                if !e.custom_keys.is_empty() {
                    parts.push(format!("custom: {}", e.custom_keys.join(", ")));
                }
                if parts.is_empty() {
                    dash()
                } else {
                    parts.join("; ")
                }
            },
            outcome: e.outcome.name(),
            code: e.outcome.code().to_string(),
            calls: e.calls_share().map_or("—".into(), calls),
            latency_ms: e.latency_ms,
            request_id: e.request_id.clone(),
        }
    }
}

/// One line of a record's whole view.
pub struct Field {
    pub name: &'static str,
    pub value: String,
}

/// A key Genesys showed otherwise, as the record shows it.
pub struct MismatchRow {
    pub key: String,
    pub expected: String,
    pub actual: String,
}

/// Everything recorded of one update.
pub struct Record {
    pub row: UpdateRow,
    pub fields: Vec<Field>,
    /// Keys and values written; values read "hidden" unless `console.show_values`.
    pub writes: Vec<(String, String)>,
    pub mismatches: Vec<MismatchRow>,
    pub problem: Option<(String, u16, String)>,
}

pub const HIDDEN: &str = "hidden (console.show_values)";

impl From<&Entry> for Record {
    fn from(e: &Entry) -> Self {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
        let hidden = || HIDDEN.to_string();
        let fields = vec![
            Field {
                name: "time",
                value: timestamp(e.at_ms),
            },
            Field {
                name: "source",
                value: e.source.clone(),
            },
            Field {
                name: "replica",
                value: e.replica.clone(),
            },
            Field {
                name: "request id",
                value: e.request_id.clone(),
            },
            Field {
                name: "conversation",
                value: opt(&e.conversation_id),
            },
            Field {
                name: "participant",
                value: opt(&e.participant_id),
            },
            Field {
                name: "lookup",
                value: opt(&e.lookup),
            },
            Field {
                name: "found by",
                value: opt(&e.found_by),
            },
            Field {
                name: "verified by",
                value: opt(&e.verified_by),
            },
            Field {
                name: "outcome",
                value: format!("{} ({})", e.outcome.name(), e.outcome.code()),
            },
            Field {
                name: "Genesys calls",
                value: match (e.calls_share(), e.calls) {
                    (Some(share), Some(round)) => format!(
                        "{}: {} to find the participant, and its share of a round of {round} \
                         (PATCH and reads) shared by {} (a lookup's query is not counted)",
                        calls(share),
                        e.own_calls,
                        e.shared_with
                    ),
                    _ => "not known for a failure".into(),
                },
            },
            Field {
                name: "latency",
                value: format!("{} ms", e.latency_ms),
            },
            Field {
                name: "job",
                value: opt(&e.job_id),
            },
            Field {
                name: "secure attributes",
                value: match (e.secure_keys.is_empty(), e.secure_verified) {
                    (true, _) => "—".into(),
                    (false, Some(true)) => {
                        format!("{} (verified; values never kept)", e.secure_keys.join(", "))
                    }
                    (false, _) => format!(
                        "{} (unverified; values never kept)",
                        e.secure_keys.join(", ")
                    ),
                },
            },
            Field {
                name: "custom attributes",
                value: match (e.custom_keys.is_empty(), e.custom_verified) {
                    (true, _) => "—".into(),
                    (false, Some(true)) => format!("{} (verified)", e.custom_keys.join(", ")),
                    (false, _) => format!("{} (unverified)", e.custom_keys.join(", ")),
                },
            },
        ];
        let writes = e
            .keys
            .iter()
            .map(|k| {
                let value = e
                    .values
                    .as_ref()
                    .and_then(|v| v.get(k).cloned())
                    .unwrap_or_else(hidden);
                (k.clone(), value)
            })
            .collect();
        let (mismatches, problem) = match &e.outcome {
            Outcome::Mismatched { mismatches } => (
                mismatches
                    .iter()
                    .map(|m| MismatchRow {
                        key: m.key.clone(),
                        expected: m.expected.clone().unwrap_or_else(hidden),
                        actual: match (&e.values, &m.actual) {
                            (None, _) => hidden(),
                            (Some(_), Some(a)) => a.clone(),
                            (Some(_), None) => "absent".into(),
                        },
                    })
                    .collect(),
                None,
            ),
            Outcome::Failed {
                code,
                status,
                detail,
            } => (Vec::new(), Some((code.clone(), *status, detail.clone()))),
            _ => (Vec::new(), None),
        };
        Self {
            row: UpdateRow::from(e),
            fields,
            writes,
            mismatches,
            problem,
        }
    }
}

/// One job, as the Jobs page lists it.
pub struct JobRow {
    pub id: String,
    pub status: &'static str,
    pub conversation: String,
    pub keys: String,
    pub attempts: u32,
    pub created: String,
    /// For a dead job, the problem that killed it: `code: detail`.
    pub error: String,
}

impl From<&Job> for JobRow {
    fn from(j: &Job) -> Self {
        let error = match (&j.problem, &j.last_error) {
            (Some(p), _) => format!("{}: {}", p.code, p.detail),
            (None, Some(e)) => e.clone(),
            (None, None) => String::new(),
        };
        Self {
            id: j.id.clone(),
            status: j.status.as_str(),
            conversation: j.update.conversation_id.clone(),
            keys: j
                .update
                .attributes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            attempts: j.attempts,
            created: clock(j.created_at_ms),
            error,
        }
    }
}

/// The chart: budget use (share of the limit) and p50/p99 latency over the hour, as SVG
/// polyline points in a `WIDTH` × `HEIGHT` box, with the newest minute at the right.
pub struct Chart {
    pub budget: Line,
    pub p50: Line,
    pub p99: Line,
    /// The latency axis' top, in ms.
    pub latency_top: u64,
    pub minutes: usize,
}

/// One series: its polyline's points, and the same points as dots, so a lone minute still shows.
pub struct Line {
    pub points: String,
    pub dots: Vec<(f64, f64)>,
}

pub const WIDTH: f64 = 600.0;
pub const HEIGHT: f64 = 120.0;

impl Chart {
    pub fn new(minutes: &[Minute], now_minute: i64) -> Self {
        let span = crate::journal::series::MINUTES as i64;
        let x =
            |m: i64| (WIDTH * (m - (now_minute - span + 1)) as f64 / (span - 1) as f64).max(0.0);
        let y = |share: f64| HEIGHT - HEIGHT * share.clamp(0.0, 1.0);
        let points = |f: &dyn Fn(&Minute) -> Option<f64>| {
            let dots: Vec<(f64, f64)> = minutes
                .iter()
                .filter_map(|m| f(m).map(|v| (x(m.minute), y(v))))
                .collect();
            Line {
                points: dots
                    .iter()
                    .map(|(x, y)| format!("{x:.1},{y:.1}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                dots,
            }
        };
        let p99_max = minutes
            .iter()
            .filter_map(|m| m.latency_quantile(0.99))
            .max()
            .unwrap_or(0);
        let latency_top = nice_ceiling(p99_max.max(10));
        let top = latency_top as f64;
        Self {
            budget: points(&|m| {
                m.budget_peak
                    .map(|(used, limit)| f64::from(used) / f64::from(limit.max(1)))
            }),
            p50: points(&|m| m.latency_quantile(0.5).map(|l| l as f64 / top)),
            p99: points(&|m| m.latency_quantile(0.99).map(|l| l as f64 / top)),
            latency_top,
            minutes: minutes.len(),
        }
    }
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `v`: an axis top a reader takes in at a glance.
pub fn nice_ceiling(v: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m) >= v {
                return step.saturating_mul(m);
            }
        }
        step = step.saturating_mul(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times_read_as_clock_and_rfc3339() {
        assert_eq!(clock(1_764_601_262_000), "15:01:02");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
    }

    proptest! {
        #[test]
        fn the_charts_points_stay_in_their_box_and_p99_is_drawn_above_p50(
            latencies in proptest::collection::vec(0u64..60_000, 1..200),
            used in 0u32..1000,
            limit in 1u32..600,
        ) {
            let series = crate::journal::Series::default();
            let journal = crate::journal::Journal::in_memory(1);
            for l in &latencies {
                let mut e = journal.begin("api", "r");
                e.latency_ms = *l;
                series.record(&e);
            }
            series.note_budget(used, limit);
            let now = crate::journal::now_ms().div_euclid(60_000);
            let chart = Chart::new(&series.minutes(), now);
            for line in [&chart.budget, &chart.p50, &chart.p99] {
                prop_assert_eq!(line.dots.len(), 1);
                for (x, y) in &line.dots {
                    prop_assert!((0.0..=WIDTH).contains(x) && (0.0..=HEIGHT).contains(y));
                }
            }
            prop_assert!(chart.p99.dots[0].1 <= chart.p50.dots[0].1);
            let p99 = series.minutes()[0].latency_quantile(0.99).unwrap();
            prop_assert!(chart.latency_top >= p99);
        }

        #[test]
        fn an_axis_top_is_at_or_above_its_value_and_within_two_and_a_half_times(v in 1u64..10_000_000_000) {
            let top = nice_ceiling(v);
            prop_assert!(top >= v);
            prop_assert!(top as f64 <= v as f64 * 2.5);
        }
    }
}
