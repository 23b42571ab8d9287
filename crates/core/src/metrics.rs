//! The metrics' names, kinds and help, and the helpers that record what the core does. The
//! recorder that renders them, and the HTTP middleware, are the server's.
//!
//! Labels are route templates (`/v1/jobs/{id}`) and operation names, never raw paths or ids, so the
//! number of series stays bounded.

use std::time::Duration;

pub const HTTP_REQUESTS: &str = "patchbay_http_requests_total";
pub const HTTP_DURATION: &str = "patchbay_http_request_duration_seconds";
pub const GENESYS_CALLS: &str = "patchbay_genesys_calls_total";
pub const GENESYS_DURATION: &str = "patchbay_genesys_call_duration_seconds";
pub const TOKEN_GRANTS: &str = "patchbay_token_grants_total";
pub const RETRIES: &str = "patchbay_genesys_retries_total";
pub const VERIFICATIONS: &str = "patchbay_verifications_total";
pub const QUEUE_DEPTH: &str = "patchbay_queue_depth";
pub const QUEUE_RUNNING: &str = "patchbay_queue_running";
pub const QUEUE_OLDEST_AGE: &str = "patchbay_queue_oldest_job_age_seconds";
pub const DEAD_LETTERS: &str = "patchbay_dead_letters";
pub const JOBS_FINISHED: &str = "patchbay_jobs_finished_total";
pub const RATE_BUDGET_WAITS: &str = "patchbay_rate_budget_waits_total";
pub const REDIS_FALLBACKS: &str = "patchbay_redis_fallbacks_total";
/// Where the token stands as Genesys last reported it (`inin-ratelimit-*`).
pub const GENESYS_BUDGET_CALLS: &str = "patchbay_genesys_ratelimit_calls";
pub const GENESYS_BUDGET_ALLOWED: &str = "patchbay_genesys_ratelimit_allowed";
pub const GENESYS_BUDGET_RESET: &str = "patchbay_genesys_ratelimit_reset_seconds";
/// Lookups by key kind and outcome (`cached`, `found`, `shared`, `not_found`, `ambiguous`, `failed`).
pub const LOOKUPS: &str = "patchbay_lookups_total";
/// Synchronous updates refused at once because the budget could not serve them before their deadline.
pub const ADMISSION_REFUSALS: &str = "patchbay_admission_refusals_total";
/// Notification topics Genesys refused, each counted once.
pub const NOTIFICATION_TOPICS_REJECTED: &str = "patchbay_notification_topics_rejected_total";
/// Updates coalesced into another's PATCH, reads reused, and updates submitted to the engine.
pub const COALESCED: &str = "patchbay_updates_coalesced_total";
pub const READS_REUSED: &str = "patchbay_reads_reused_total";
pub const UPDATES: &str = "patchbay_updates_total";
pub const SECURE_WRITES: &str = "patchbay_secure_writes_total";
pub const CUSTOM_WRITES: &str = "patchbay_custom_writes_total";
pub const CUSTOM_CONFLICTS: &str = "patchbay_custom_conflicts_total";
/// The live mirror: its feed, what it holds, and what it served.
pub const MIRROR_CHANNELS: &str = "patchbay_mirror_channels";
pub const MIRROR_TOPICS: &str = "patchbay_mirror_topics";
pub const MIRROR_LIVE: &str = "patchbay_mirror_live";
pub const MIRROR_CONVERSATIONS: &str = "patchbay_mirror_conversations";
pub const MIRROR_LAST_FRAME: &str = "patchbay_mirror_seconds_since_last_frame";
pub const MIRROR_GAPS: &str = "patchbay_mirror_gaps_total";
pub const MIRROR_SERVED: &str = "patchbay_mirror_served_total";
pub const MIRROR_CONFIRMATIONS: &str = "patchbay_mirror_confirmations_total";
pub const TRACE_SPANS_DROPPED: &str = "patchbay_trace_spans_dropped_total";

/// What each metric is: a counter, a gauge or a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric with its `# HELP` text, described once when the recorder is installed.
pub const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (TRACE_SPANS_DROPPED, Kind::Counter, "Trace spans not exported, by why: queue_full (the export queue was full) or export_failed (the collector refused them or did not answer)."),
    (HTTP_REQUESTS, Kind::Counter, "Inbound requests by route template, method and status."),
    (HTTP_DURATION, Kind::Histogram, "Inbound request latency in seconds, by route template and method."),
    (GENESYS_CALLS, Kind::Counter, "Genesys API calls (every attempt) by operation and status."),
    (GENESYS_DURATION, Kind::Histogram, "Genesys API call latency in seconds, by operation."),
    (TOKEN_GRANTS, Kind::Counter, "OAuth client-credentials grants, by outcome."),
    (RETRIES, Kind::Counter, "Genesys calls retried, by reason."),
    (VERIFICATIONS, Kind::Counter, "Read-back results of written updates, by outcome."),
    (QUEUE_DEPTH, Kind::Gauge, "Jobs queued and waiting to run."),
    (QUEUE_RUNNING, Kind::Gauge, "Jobs running now."),
    (QUEUE_OLDEST_AGE, Kind::Gauge, "Age in seconds of the oldest queued job."),
    (DEAD_LETTERS, Kind::Gauge, "Dead jobs, waiting for a replay."),
    (JOBS_FINISHED, Kind::Counter, "Job outcomes, by whether the store recorded them."),
    (RATE_BUDGET_WAITS, Kind::Counter, "Genesys calls that waited for the rate budget."),
    (REDIS_FALLBACKS, Kind::Counter, "Times a replica fell back to its own state while Redis was unreachable, by what."),
    (GENESYS_BUDGET_CALLS, Kind::Gauge, "Calls in the token's current window, as Genesys last reported (inin-ratelimit-count)."),
    (GENESYS_BUDGET_ALLOWED, Kind::Gauge, "Calls the token is allowed in its window, as Genesys last reported (inin-ratelimit-allowed)."),
    (GENESYS_BUDGET_RESET, Kind::Gauge, "Seconds until the token's window resets, as Genesys last reported (inin-ratelimit-reset)."),
    (LOOKUPS, Kind::Counter, "Lookups of a live conversation, by key kind and outcome."),
    (ADMISSION_REFUSALS, Kind::Counter, "Synchronous updates the budget could not serve before their deadline: refused at once or queued."),
    (COALESCED, Kind::Counter, "Updates merged into another update's PATCH."),
    (READS_REUSED, Kind::Counter, "Participants found from a young conversation read, without a GET."),
    (UPDATES, Kind::Counter, "Updates submitted to the delivery engine, synchronous or jobs."),
    (SECURE_WRITES, Kind::Counter, "Writes to conversations' secure attributes, by outcome (verified, unverified or failed); never their keys or values."),
    (CUSTOM_WRITES, Kind::Counter, "Writes to conversations' custom-attributes records, by outcome (verified, unverified, conflict or failed)."),
    (CUSTOM_CONFLICTS, Kind::Counter, "Custom-attributes writes Genesys refused for a stale version (409), each re-read and retried."),
    (MIRROR_CHANNELS, Kind::Gauge, "Notification channels this replica holds open."),
    (MIRROR_TOPICS, Kind::Gauge, "Topics this replica's channels are subscribed to."),
    (MIRROR_LIVE, Kind::Gauge, "1 while the mirror's feed is connected and subscribed with no gap, else 0."),
    (MIRROR_CONVERSATIONS, Kind::Gauge, "Conversations the mirror holds."),
    (MIRROR_LAST_FRAME, Kind::Gauge, "Seconds since the feed's last frame."),
    (MIRROR_GAPS, Kind::Counter, "Gaps in the feed (a socket lost or silent, a channel gone): events in them are lost."),
    (MIRROR_SERVED, Kind::Counter, "Lookups, resolutions and verifications, by what served them (mirror or rest)."),
    (MIRROR_CONFIRMATIONS, Kind::Counter, "Writes to mirrored conversations, by what showed them (queue_event, detail_event or read)."),
    (NOTIFICATION_TOPICS_REJECTED, Kind::Counter, "Notification topics Genesys refused (missing permissions), each counted once."),
];

/// API calls this process has sent (token grants aside: they are not charged to the budget), read
/// by the console for its calls an event; Prometheus has them by operation and status.
static API_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn api_calls_sent() -> u64 {
    API_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// One attempt of a Genesys call; `status` is the HTTP status, or `timeout` / `error`.
pub fn genesys_call(operation: &'static str, status: String, elapsed: Duration) {
    if operation != "token_grant" {
        API_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    metrics::counter!(GENESYS_CALLS, "operation" => operation, "status" => status).increment(1);
    metrics::histogram!(GENESYS_DURATION, "operation" => operation).record(elapsed.as_secs_f64());
}

/// A lookup, a resolution or a verification, served by the mirror or by REST.
pub fn mirror_served(what: &'static str, by_mirror: bool) {
    let by = if by_mirror { "mirror" } else { "rest" };
    metrics::counter!(MIRROR_SERVED, "what" => what, "by" => by).increment(1);
}

/// Where the token stands, as Genesys reported it on its latest answer.
pub fn genesys_budget(count: u32, allowed: u32, reset: Duration) {
    metrics::gauge!(GENESYS_BUDGET_CALLS).set(f64::from(count));
    metrics::gauge!(GENESYS_BUDGET_ALLOWED).set(f64::from(allowed));
    metrics::gauge!(GENESYS_BUDGET_RESET).set(reset.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_named_here_is_described_once() {
        let source = include_str!("metrics.rs");
        let named: Vec<&str> = source
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const "))
            .filter_map(|l| l.split_once("= \"").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_once('"').map(|(name, _)| name))
            .collect();
        let mut described: Vec<&str> = DESCRIPTIONS.iter().map(|(name, ..)| *name).collect();
        described.sort();
        described.dedup();
        assert_eq!(
            described.len(),
            DESCRIPTIONS.len(),
            "a metric described twice"
        );
        let mut named_sorted = named.clone();
        named_sorted.sort();
        assert_eq!(named_sorted, described);
    }
}
