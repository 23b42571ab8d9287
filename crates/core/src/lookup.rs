//! Lookups: the one live conversation a sender means when it knows the agent's user id, the caller's
//! number or the external contact instead of the conversation id.
//!
//! Analytics finds candidates (conversations without an end that started in a bounded, day-aligned
//! interval, with the segment filter), and a `GET /api/v2/conversations/{id}` confirms each, because
//! analytics lags behind: a hit must still be live and still match. When analytics finds nothing yet,
//! the query is repeated briefly within the request's deadline. A found conversation is cached for a
//! short while per lookup (on Redis, for every replica), so a CRM's burst for one record costs one
//! query; a cached conversation is confirmed again by a read (which the update then reuses), and one
//! that ended is dropped.
//!
//! Lookups of one key in flight at the same time are one flight: the first runs the cache check, the
//! query and the confirmation, and the others wait for its answer instead of asking analytics too,
//! so a CRM's burst by one number costs one query even before the first find is remembered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use serde_json::json;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::LookupSettings;
use crate::domain::lookup::{Lookup, LookupKey, Pick};
use crate::domain::ConversationId;
use crate::engine::Engine;
use crate::genesys::model::{media_list, Conversation};
use crate::genesys::CallContext;
use crate::mirror::Trust;
use crate::service::{UpdateError, CALL_ALLOWANCE};
use crate::store::finds::Finds;

/// The largest page the details query returns (Genesys's developer-center blog on the details query;
/// the book's lookups guide lists each published limit and its source).
pub const DETAILS_QUERY_MAX_PAGE_SIZE: u32 = 200;
/// The analytics namespace's `request.bytes.max`, the largest request body it accepts.
pub const DETAILS_QUERY_REQUEST_BYTES_MAX: usize = 512_000;

// A lookup asks for one page of at most `lookup.max_candidates` and never pages further, so the page
// limit (and the 100000-result paging cap behind it) cannot be reached by any valid configuration.
const _: () = assert!(crate::config::MAX_LOOKUP_CANDIDATES <= DETAILS_QUERY_MAX_PAGE_SIZE);

/// Why no conversation could be named.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// No live conversation matches. `searched` says what was searched for, the number masked.
    #[error("no live {media} conversation found for {searched}")]
    NotFound {
        searched: String,
        media: &'static str,
    },
    /// Several live conversations match.
    #[error("{} live {media} conversations match {searched}", candidates.len())]
    Ambiguous {
        searched: String,
        media: &'static str,
        candidates: Vec<ConversationId>,
    },
    #[error(transparent)]
    Update(#[from] UpdateError),
}

/// What named a lookup's conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The live mirror, which saw the call on its unbroken feed: no query, no read.
    Mirror,
    /// A remembered find, confirmed by a read.
    Cache,
    Analytics,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Mirror => "mirror",
            Source::Cache => "cache",
            Source::Analytics => "analytics",
        }
    }
}

/// Whether a lookup may be answered from the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Path {
    Any,
    /// REST only: after Genesys refused what the mirror named.
    Rest,
}

/// The conversation, what named it, and whether another lookup in flight shared its answer.
type Resolution = Result<(ConversationId, Source, bool), LookupError>;
/// How many flights may be registered before dead ones are swept; live ones are bounded by the
/// requests in flight.
const FLIGHTS_PRUNED_PAST: usize = 1024;
type FlightFuture = BoxFuture<'static, Resolution>;
type Flight = Shared<FlightFuture>;
/// The flights in progress, by lookup and path.
type Flights = HashMap<(Lookup, Path), WeakShared<FlightFuture>>;

/// Finds conversations through analytics, confirmed by a read.
#[derive(Clone)]
pub struct Finder {
    engine: Engine,
    settings: LookupSettings,
    found: Arc<dyn Finds>,
    /// The lookups being resolved now, by key. Held weakly: a flight every waiter gave up on is
    /// dropped, and the next lookup starts its own rather than resuming one past its deadline.
    flights: Arc<Mutex<Flights>>,
}

/// Whether `conversation` is live and still holds a connected participant matching `lookup`.
/// A conversation read names a caller's number `ani`; a queue event, `address`.
fn still_matches(conversation: &Conversation, lookup: &Lookup) -> bool {
    if conversation.is_ended() {
        return false;
    }
    let list = media_list(lookup.media_type.as_str());
    let on_media = |p: &crate::genesys::model::Participant| {
        list.is_some_and(|list| p.media.get(list).is_some_and(|v| v.is_array()))
    };
    conversation.participants.iter().any(|p| {
        // A number or an external contact names the caller's side, never the agent's.
        let callers_side = matches!(p.purpose.as_deref(), Some("customer" | "external"));
        let key_holds = match &lookup.key {
            LookupKey::UserId(id) => p
                .field("userId")
                .is_some_and(|u| u.eq_ignore_ascii_case(&id.to_string())),
            LookupKey::ExternalContactId(id) => {
                callers_side
                    && p.field("externalContactId")
                        .is_some_and(|u| u.eq_ignore_ascii_case(&id.to_string()))
            }
            LookupKey::Ani(number) => {
                callers_side
                    && p.field("ani")
                        .or_else(|| p.field("address"))
                        .and_then(|a| a.parse::<crate::domain::lookup::PhoneNumber>().ok())
                        .is_some_and(|a| &a == number)
            }
        };
        key_holds && p.is_connected() && on_media(p)
    })
}

/// Midnight UTC `days` days before `now`, and the midnight after `now`: the day-aligned interval a
/// lookup searches.
pub fn interval(now: OffsetDateTime, days: u32) -> String {
    let today = now.to_offset(time::UtcOffset::UTC).date();
    let day = |d: time::Date| {
        format!(
            "{:04}-{:02}-{:02}T00:00:00Z",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    };
    let from = today - time::Duration::days(i64::from(days));
    let to = today + time::Duration::days(1);
    format!("{}/{}", day(from), day(to))
}

/// The `ConversationQuery` for `lookup`.
pub fn query(lookup: &Lookup, interval: &str, page_size: u32) -> serde_json::Value {
    let values: Vec<String> = match &lookup.key {
        LookupKey::Ani(n) => n.forms().to_vec(),
        LookupKey::UserId(id) | LookupKey::ExternalContactId(id) => vec![id.to_string()],
    };
    let predicates: Vec<serde_json::Value> = values
        .into_iter()
        .map(|v| json!({"type": "dimension", "dimension": lookup.key.dimension(), "operator": "matches", "value": v}))
        .collect();
    json!({
        "interval": interval,
        "order": "desc",
        "orderBy": "conversationStart",
        "paging": {"pageSize": page_size, "pageNumber": 1},
        "conversationFilters": [{"type": "and", "predicates": [
            {"type": "dimension", "dimension": "conversationEnd", "operator": "notExists"}
        ]}],
        "segmentFilters": [
            {"type": "or", "predicates": predicates},
            {"type": "and", "predicates": [
                {"type": "dimension", "dimension": "mediaType", "operator": "matches", "value": lookup.media_type.as_str()}
            ]}
        ]
    })
}

impl Finder {
    /// A finder that keeps its finds in `found`: this process's, or every replica's.
    pub fn new(engine: Engine, settings: LookupSettings, found: Arc<dyn Finds>) -> Self {
        Self {
            engine,
            settings,
            found,
            flights: Arc::default(),
        }
    }

    /// The one live conversation `lookup` means, found by `deadline`, and what named it.
    pub async fn find(
        &self,
        lookup: &Lookup,
        deadline: Instant,
    ) -> Result<(ConversationId, Source), LookupError> {
        self.find_on(lookup, Path::Any, deadline).await
    }

    /// Like [`Finder::find`], through the REST API only: for a lookup whose mirror answer Genesys
    /// refused. The conversation it named leaves the mirror.
    pub async fn find_by_rest(
        &self,
        lookup: &Lookup,
        refused: ConversationId,
        deadline: Instant,
    ) -> Result<(ConversationId, Source), LookupError> {
        if let Some(mirror) = self.engine.mirror() {
            mirror.forget(&refused.to_string());
        }
        self.find_on(lookup, Path::Rest, deadline).await
    }

    async fn find_on(
        &self,
        lookup: &Lookup,
        path: Path,
        deadline: Instant,
    ) -> Result<(ConversationId, Source), LookupError> {
        let result = self.in_flight(lookup, path, deadline).await;
        let outcome = match &result {
            Ok((_, _, true)) => "shared",
            Ok((_, Source::Mirror, _)) => "mirror",
            Ok((_, Source::Cache, _)) => "cached",
            Ok((_, Source::Analytics, _)) => "found",
            Err(LookupError::NotFound { .. }) => "not_found",
            Err(LookupError::Ambiguous { .. }) => "ambiguous",
            Err(LookupError::Update(_)) => "failed",
        };
        metrics::counter!(
            crate::metrics::LOOKUPS,
            "kind" => lookup.key.kind().name(),
            "outcome" => outcome
        )
        .increment(1);
        if self.engine.mirror().is_some() && !matches!(result, Ok((_, _, true))) {
            crate::metrics::mirror_served("lookup", matches!(result, Ok((_, Source::Mirror, _))));
        }
        result.map(|(cid, source, _)| (cid, source))
    }

    /// Joins the lookup of the same key in flight, or starts one. A joiner waits until its own
    /// deadline; the flight runs to its starter's.
    async fn in_flight(&self, lookup: &Lookup, path: Path, deadline: Instant) -> Resolution {
        let key = (lookup.clone(), path);
        let (flight, joined) = {
            let mut flights = self
                .flights
                .lock()
                .expect("the flights lock is never poisoned");
            match flights.get(&key).and_then(WeakShared::upgrade) {
                Some(flight) => (flight, true),
                None => {
                    if flights.len() >= FLIGHTS_PRUNED_PAST {
                        // Flights every waiter gave up on leave a dead entry behind: drop them.
                        flights.retain(|_, weak| weak.upgrade().is_some());
                    }
                    let flight: Flight = {
                        let (finder, key) = (self.clone(), key.clone());
                        async move {
                            let resolution = finder
                                .resolve(&key.0, key.1, deadline)
                                .await
                                .map(|(cid, source)| (cid, source, false));
                            finder.land(&key);
                            resolution
                        }
                        .boxed()
                        .shared()
                    };
                    if let Some(weak) = flight.downgrade() {
                        flights.insert(key, weak);
                    }
                    (flight, false)
                }
            }
        };
        if !joined {
            return flight.await;
        }
        match tokio::time::timeout_at(deadline, flight).await {
            Ok(Ok((cid, source, _))) => Ok((cid, source, true)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(UpdateError::Upstream(crate::genesys::GenesysError::Timeout).into()),
        }
    }

    /// A flight has its answer: the next lookup of the key starts afresh (and meets the cache).
    fn land(&self, key: &(Lookup, Path)) {
        self.flights
            .lock()
            .expect("the flights lock is never poisoned")
            .remove(key);
    }

    /// The one conversation the mirror vouches for under `lookup`. Anything less than exactly one
    /// trusted live match, and no hint beside it, is for the REST path to settle: a hint may be a
    /// call that changed in a gap, and two matches are analytics' to tell apart or refuse.
    fn in_mirror(&self, lookup: &Lookup) -> Option<ConversationId> {
        let held = self.engine.mirror()?.find(&lookup.key);
        if held.iter().any(|s| s.trust == Trust::Hint) {
            return None;
        }
        let mut live = held
            .iter()
            .filter(|s| still_matches(&s.conversation, lookup));
        let one = live.next()?;
        if live.next().is_some() {
            return None;
        }
        one.conversation.id.parse().ok()
    }

    /// The conversation, and whether the mirror, a remembered find or analytics named it.
    async fn resolve(
        &self,
        lookup: &Lookup,
        path: Path,
        deadline: Instant,
    ) -> Result<(ConversationId, Source), LookupError> {
        if path == Path::Any {
            if let Some(cid) = self.in_mirror(lookup) {
                return Ok((cid, Source::Mirror));
            }
        }
        // This replica's find first, then the deployment's: after a stale local find, another
        // replica may already know the caller's new call. Two finds at most: each costs a read.
        let mut stale = None;
        for _ in 0..2 {
            let Some(cid) = self.found.get(lookup).await.filter(|c| stale != Some(*c)) else {
                break;
            };
            // Confirmed again by a read, which the update then uses to find its participant: a
            // call that ended, or that the caller left, drops out.
            match self.engine.read_fresh(cid, deadline).await {
                Ok(c) if still_matches(&c, lookup) => return Ok((cid, Source::Cache)),
                Ok(_) | Err(UpdateError::ConversationNotFound(_)) => {
                    self.found.forget(lookup, cid).await;
                    stale = Some(cid);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let cid = self.search(lookup, deadline).await?;
        self.found.insert(lookup, cid).await;
        Ok((cid, Source::Analytics))
    }

    /// Queries analytics until it names a live match or the wait for its lag is over.
    async fn search(
        &self,
        lookup: &Lookup,
        deadline: Instant,
    ) -> Result<ConversationId, LookupError> {
        let genesys = self.engine.updater().genesys();
        let started = Instant::now();
        let give_up = (started + self.settings.analytics_wait()).min(deadline - CALL_ALLOWANCE);
        // The query and a confirmation are the least a lookup spends: refuse at once without them.
        self.engine.updater().admit_calls(2, deadline).await?;
        let interval = interval(OffsetDateTime::now_utc(), self.settings.lookback_days);
        let body = query(lookup, &interval, self.settings.max_candidates);
        loop {
            let answer = genesys
                .query_conversation_details(&mut CallContext::until(deadline), &body)
                .await
                .map_err(UpdateError::Upstream)?;
            let mut live: Vec<(Option<String>, ConversationId)> = Vec::new();
            for candidate in answer
                .conversations
                .iter()
                .take(self.settings.max_candidates as usize)
            {
                let Ok(cid) = candidate.conversation_id.parse::<ConversationId>() else {
                    continue;
                };
                match self.engine.read_fresh(cid, deadline).await {
                    Ok(c) if still_matches(&c, lookup) => live.push((c.start_time.clone(), cid)),
                    // Analytics lags: a hit that ended or no longer matches is not the one.
                    Ok(_) | Err(UpdateError::ConversationNotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if live.len() > 1 && lookup.pick == Pick::Latest {
                // ISO-8601 UTC times sort as text.
                live.sort_by(|a, b| b.0.cmp(&a.0));
                live.truncate(1);
            }
            match live.len() {
                1 => return Ok(live[0].1),
                0 if Instant::now() + self.settings.analytics_retry() < give_up => {
                    tokio::time::sleep(self.settings.analytics_retry()).await;
                }
                0 => {
                    return Err(LookupError::NotFound {
                        searched: lookup.key.to_string(),
                        media: lookup.media_type.as_str(),
                    })
                }
                _ => {
                    return Err(LookupError::Ambiguous {
                        searched: lookup.key.to_string(),
                        media: lookup.media_type.as_str(),
                        candidates: live.into_iter().map(|(_, cid)| cid).collect(),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn the_interval_is_day_aligned_and_covers_today_and_the_days_before() {
        let now = OffsetDateTime::from_unix_timestamp(1_764_070_000).unwrap(); // 2025-11-25T11:26:40Z
        assert_eq!(
            interval(now, 1),
            "2025-11-24T00:00:00Z/2025-11-26T00:00:00Z"
        );
        assert_eq!(
            interval(now, 0),
            "2025-11-25T00:00:00Z/2025-11-26T00:00:00Z"
        );
    }

    #[test]
    fn an_ani_query_matches_every_form_of_the_number_for_live_conversations() {
        let lookup = Lookup {
            key: LookupKey::Ani(FromStr::from_str("+1 317 555 0123").unwrap()),
            media_type: crate::domain::lookup::MediaType::voice(),
            pick: Pick::Only,
        };
        let q = query(&lookup, "a/b", 5);
        let values: Vec<&str> = q["segmentFilters"][0]["predicates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["value"].as_str().unwrap())
            .collect();
        assert_eq!(values, ["tel:+13175550123", "+13175550123", "13175550123"]);
        assert_eq!(q["segmentFilters"][0]["type"], "or");
        assert_eq!(
            q["conversationFilters"][0]["predicates"][0]["operator"],
            "notExists"
        );
        assert_eq!(q["segmentFilters"][1]["predicates"][0]["value"], "voice");
    }

    #[test]
    fn the_largest_query_any_configuration_sends_stays_within_the_details_query_limits() {
        use crate::config::{MAX_LOOKBACK_DAYS, MAX_LOOKUP_CANDIDATES};
        use crate::domain::lookup::{KeyKind, MediaType, MEDIA_TYPES};
        let longest_media = MEDIA_TYPES.iter().max_by_key(|m| m.len()).unwrap();
        let uuid = "00000000-0000-4000-8000-000000000000";
        let keys = [
            (KeyKind::Ani, "+999999999999999"),
            (KeyKind::UserId, uuid),
            (KeyKind::ExternalContactId, uuid),
        ];
        let now = OffsetDateTime::now_utc();
        for (kind, value) in keys {
            let key = kind.name();
            let lookup = Lookup {
                key: kind.key(value).unwrap(),
                media_type: MediaType::from_str(longest_media).unwrap(),
                pick: Pick::Latest,
            };
            let q = query(
                &lookup,
                &interval(now, MAX_LOOKBACK_DAYS),
                MAX_LOOKUP_CANDIDATES,
            );
            let page = q["paging"]["pageSize"].as_u64().unwrap();
            assert!(
                page <= u64::from(DETAILS_QUERY_MAX_PAGE_SIZE),
                "{key}: page {page}"
            );
            assert_eq!(q["paging"]["pageNumber"], 1, "{key}: one page only");
            let bytes = serde_json::to_vec(&q).unwrap().len();
            assert!(
                bytes < DETAILS_QUERY_REQUEST_BYTES_MAX / 100,
                "{key}: {bytes} bytes"
            );
        }
    }
}
