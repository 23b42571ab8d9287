//! The simulator's `POST /api/v2/analytics/conversations/details/query`: the filters a lookup sends
//! (conversation end, interval, segment dimensions), answered in the SDK's
//! `AnalyticsConversationQueryResponse` shape, over the conversations analytics has caught up with.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::wire::{
    AnalyticsConversation, AnalyticsConversationQueryResponse, AnalyticsParticipant,
    AnalyticsSession, Conversation, Participant, MEDIA_TYPE_LISTS,
};

/// The segment dimensions the simulator filters on.
const DIMENSIONS: &[&str] = &[
    "ani",
    "dnis",
    "userId",
    "externalContactId",
    "purpose",
    "mediaType",
];

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| format!("`{s}` is not an ISO-8601 time"))
}

/// A participant as analytics shows it: one session per media list it has.
fn participant(p: &Participant) -> AnalyticsParticipant {
    let sessions = MEDIA_TYPE_LISTS
        .iter()
        .filter(|(_, list)| p.communications.get(*list).is_some_and(|v| v.is_array()))
        .map(|(media_type, _)| AnalyticsSession {
            media_type: Some(media_type.to_string()),
            ani: p.ani.clone(),
            dnis: p.dnis.clone(),
            direction: None,
        })
        .collect();
    AnalyticsParticipant {
        participant_id: p.id.clone(),
        purpose: p.purpose.clone(),
        user_id: p.user_id.clone(),
        external_contact_id: p.external_contact_id.clone(),
        sessions,
    }
}

fn conversation(c: &Conversation) -> AnalyticsConversation {
    AnalyticsConversation {
        conversation_id: c.id.clone(),
        conversation_start: c.start_time.clone(),
        conversation_end: c.end_time.clone(),
        participants: c.participants.iter().map(participant).collect(),
    }
}

/// One dimension's value on a (participant, session) pair.
fn dimension<'a>(p: &'a AnalyticsParticipant, s: &'a AnalyticsSession, d: &str) -> Option<&'a str> {
    match d {
        "ani" => s.ani.as_deref(),
        "dnis" => s.dnis.as_deref(),
        "mediaType" => s.media_type.as_deref(),
        "userId" => p.user_id.as_deref(),
        "externalContactId" => p.external_contact_id.as_deref(),
        "purpose" => p.purpose.as_deref(),
        _ => None,
    }
}

fn predicate_holds(value: Option<&str>, predicate: &Value) -> Result<bool, String> {
    let operator = predicate["operator"].as_str().unwrap_or("matches");
    Ok(match operator {
        "exists" => value.is_some(),
        "notExists" => value.is_none(),
        "matches" => {
            let wanted = predicate["value"]
                .as_str()
                .ok_or("a `matches` predicate needs a `value`")?;
            value.is_some_and(|v| v.eq_ignore_ascii_case(wanted))
        }
        other => return Err(format!("operator `{other}` is not supported")),
    })
}

/// Whether `filter` (`{"type": "and"|"or", "predicates": [...]}`) holds for the values `of` gives.
fn filter_holds(filter: &Value, of: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    let predicates = filter["predicates"].as_array().cloned().unwrap_or_default();
    let mut results = Vec::with_capacity(predicates.len());
    for p in &predicates {
        let d = p["dimension"]
            .as_str()
            .ok_or("a predicate needs a `dimension`")?;
        results.push(predicate_holds(of(d).as_deref(), p)?);
    }
    Ok(match filter["type"].as_str().unwrap_or("and") {
        "or" => results.iter().any(|r| *r),
        _ => results.iter().all(|r| *r),
    })
}

/// Answers `query` over `conversations` (those analytics already shows).
pub fn answer<'a>(
    conversations: impl Iterator<Item = &'a Conversation>,
    query: &Value,
) -> Result<AnalyticsConversationQueryResponse, String> {
    let interval = query["interval"].as_str().ok_or("`interval` is required")?;
    let (from, to) = interval
        .split_once('/')
        .ok_or("`interval` must be two ISO-8601 times separated by `/`")?;
    let (from, to) = (parse_time(from)?, parse_time(to)?);
    for filter in query["segmentFilters"].as_array().into_iter().flatten() {
        for p in filter["predicates"].as_array().into_iter().flatten() {
            let d = p["dimension"].as_str().unwrap_or_default();
            if !DIMENSIONS.contains(&d) {
                return Err(format!("segment dimension `{d}` is not supported"));
            }
        }
    }
    let mut found = Vec::new();
    for c in conversations {
        let a = conversation(c);
        let Some(start) = a
            .conversation_start
            .as_deref()
            .map(parse_time)
            .transpose()?
        else {
            continue;
        };
        if start < from || start >= to {
            continue;
        }
        let mut holds = true;
        for filter in query["conversationFilters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            holds &= filter_holds(filter, |d| match d {
                "conversationEnd" => a.conversation_end.clone(),
                "conversationId" => Some(a.conversation_id.clone()),
                _ => None,
            })?;
        }
        for filter in query["segmentFilters"].as_array().into_iter().flatten() {
            let mut any = false;
            for p in &a.participants {
                for s in &p.sessions {
                    any |= filter_holds(filter, |d| dimension(p, s, d).map(str::to_string))?;
                }
            }
            holds &= any;
        }
        if holds {
            found.push((start, a));
        }
    }
    found.sort_by_key(|x| std::cmp::Reverse(x.0));
    if query["order"].as_str() == Some("asc") {
        found.reverse();
    }
    let total = found.len() as u64;
    let size = query["paging"]["pageSize"]
        .as_u64()
        .unwrap_or(25)
        .clamp(1, 100) as usize;
    let page = query["paging"]["pageNumber"].as_u64().unwrap_or(1).max(1) as usize;
    Ok(AnalyticsConversationQueryResponse {
        conversations: found
            .into_iter()
            .skip((page - 1) * size)
            .take(size)
            .map(|(_, a)| a)
            .collect(),
        total_hits: total,
    })
}
