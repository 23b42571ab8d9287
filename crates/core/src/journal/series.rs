//! This replica's figures by the minute over the last hour: updates, Genesys calls, answers by code,
//! latency percentiles and the budget's peak use, for the console's Now page and chart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use rand::Rng;

use super::Entry;

/// Minutes kept: the chart's hour.
pub const MINUTES: usize = 60;
/// Latency samples kept a minute. Past it, a uniform sample (reservoir sampling) stands for the
/// minute, so a busy minute costs bounded memory and its percentiles stay unbiased.
const SAMPLES: usize = 1024;

/// One minute's figures.
#[derive(Debug, Clone, Default)]
pub struct Minute {
    /// Minutes since the epoch.
    pub minute: i64,
    pub updates: u64,
    /// Genesys API calls this replica sent in the minute: lookups', reads' and the feed's too.
    pub calls: u64,
    pub codes: BTreeMap<String, u64>,
    /// The most calls the budget showed in its window during the minute, and its limit.
    pub budget_peak: Option<(u32, u32)>,
    seen: u64,
    latencies: Vec<u64>,
}

impl Minute {
    /// The `q` quantile (0..=1) of the minute's latencies in ms, nearest rank.
    pub fn latency_quantile(&self, q: f64) -> Option<u64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }

    fn sample(&mut self, latency: u64) {
        self.seen += 1;
        if self.latencies.len() < SAMPLES {
            self.latencies.push(latency);
        } else {
            let slot = rand::rng().random_range(0..self.seen);
            if let Some(s) = self.latencies.get_mut(slot as usize) {
                *s = latency;
            }
        }
    }
}

/// The last hour, a minute a bucket. Cloning is cheap.
#[derive(Clone, Default)]
pub struct Series(Arc<Mutex<Buckets>>);

#[derive(Default)]
struct Buckets {
    minutes: VecDeque<Minute>,
    /// The process's call count when last noted: each noting adds what was sent since.
    calls_noted: Option<u64>,
}

fn minute_now() -> i64 {
    super::now_ms().div_euclid(60_000)
}

impl Series {
    fn with_minute<T>(&self, minute: i64, f: impl FnOnce(&mut Minute) -> T) -> T {
        let mut buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let sent = crate::metrics::api_calls_sent();
        let since = sent.saturating_sub(buckets.calls_noted.unwrap_or(sent));
        buckets.calls_noted = Some(sent);
        let minutes = &mut buckets.minutes;
        while minutes
            .front()
            .is_some_and(|m| m.minute <= minute - MINUTES as i64)
        {
            minutes.pop_front();
        }
        if minutes.back().is_none_or(|m| m.minute < minute) {
            minutes.push_back(Minute {
                minute,
                ..Minute::default()
            });
        }
        let current = minutes.back_mut().expect("pushed above");
        current.calls += since;
        f(current)
    }

    /// Counts an update in its minute.
    pub fn record(&self, entry: &Entry) {
        let minute = entry.at_ms.div_euclid(60_000).max(minute_now());
        self.with_minute(minute, |m| {
            m.updates += 1;
            *m.codes.entry(entry.outcome.code().to_string()).or_default() += 1;
            m.sample(entry.latency_ms);
        });
    }

    /// Notes the budget's use at a sampling: calls in its window against its limit.
    pub fn note_budget(&self, used: u32, limit: u32) {
        self.with_minute(minute_now(), |m| {
            let peak = m.budget_peak.map_or(0, |(u, _)| u);
            if used >= peak {
                m.budget_peak = Some((used, limit));
            }
        });
    }

    /// The minutes of the last hour that saw anything, oldest first.
    pub fn minutes(&self) -> Vec<Minute> {
        let now = minute_now();
        let buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .minutes
            .iter()
            .filter(|m| m.minute > now - MINUTES as i64)
            .cloned()
            .collect()
    }

    /// Updates, Genesys calls and answers by code over the last `span` minutes (the current one
    /// included).
    pub fn totals(&self, span: i64) -> (u64, u64, BTreeMap<String, u64>) {
        self.with_minute(minute_now(), |_| ());
        let since = minute_now() - span;
        let mut codes = BTreeMap::new();
        let (mut updates, mut calls) = (0, 0);
        for m in self.minutes().iter().filter(|m| m.minute > since) {
            updates += m.updates;
            calls += m.calls;
            for (code, n) in &m.codes {
                *codes.entry(code.clone()).or_default() += n;
            }
        }
        (updates, calls, codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, Outcome};
    use proptest::prelude::*;

    #[test]
    fn a_minute_counts_its_updates_and_codes_and_samples_latency() {
        let journal = Journal::in_memory(0);
        let series = Series::default();
        for (calls, shared, outcome) in [
            (2, 1, Outcome::Verified),
            (2, 2, Outcome::Verified),
            (
                1,
                1,
                Outcome::Failed {
                    code: "rate_limited".into(),
                    status: 429,
                    detail: String::new(),
                },
            ),
        ] {
            let mut e = journal.begin("api", "r");
            e.calls = Some(calls);
            e.shared_with = shared;
            e.outcome = outcome;
            e.latency_ms = 40;
            series.record(&e);
        }
        let (updates, _, codes) = series.totals(5);
        assert_eq!(updates, 3);
        assert_eq!(codes["ok"], 2);
        assert_eq!(codes["rate_limited"], 1);
        assert_eq!(series.minutes()[0].latency_quantile(0.99), Some(40));
    }

    proptest! {
        #[test]
        fn quantiles_are_latencies_that_were_seen_and_ordered(latencies in proptest::collection::vec(0u64..10_000, 1..3000)) {
            let mut m = Minute::default();
            for l in &latencies {
                m.sample(*l);
            }
            prop_assert!(m.latencies.len() <= SAMPLES);
            let p50 = m.latency_quantile(0.5).unwrap();
            let p99 = m.latency_quantile(0.99).unwrap();
            prop_assert!(p50 <= p99);
            prop_assert!(latencies.contains(&p50) && latencies.contains(&p99));
        }
    }
}
