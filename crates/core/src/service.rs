//! The core operation: resolve the participant, PATCH its attributes, and read the conversation back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::VerifySettings;
use crate::domain::{AttributeMap, AttributeUpdate, ConversationId, Purpose, Target};
use crate::genesys::model::{Conversation, Participant};
use crate::genesys::{CallContext, GenesysClient, GenesysError};

/// What a request's calls need after the last of them may start: the call itself, and a read-back
/// that may have to be repeated while the write becomes visible.
pub const CALL_ALLOWANCE: Duration = Duration::from_secs(1);

/// How long a call may wait for its budget slot and still start [`CALL_ALLOWANCE`] before `deadline`.
pub fn slot_wait(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(CALL_ALLOWANCE)
}

/// Why an update could not be applied, in the caller's terms.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpdateError {
    #[error("conversation {0} does not exist")]
    ConversationNotFound(ConversationId),
    #[error("no matching participant on conversation {0}")]
    ParticipantNotFound(ConversationId, String),
    #[error("conversation {0} has ended")]
    ConversationEnded(ConversationId),
    #[error(transparent)]
    Upstream(#[from] GenesysError),
}

impl UpdateError {
    /// Whether Genesys refused the target itself (400, 404 or 409 on the PATCH, or what a fresh
    /// read made of them): what was read of the conversation before is not to be trusted.
    pub fn refused_target(&self) -> bool {
        match self {
            UpdateError::ConversationNotFound(_)
            | UpdateError::ParticipantNotFound(..)
            | UpdateError::ConversationEnded(_) => true,
            UpdateError::Upstream(e) => matches!(e.status(), Some(400 | 404 | 409)),
        }
    }
}

/// Which event showed a write (or that a read had to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    QueueEvent,
    DetailEvent,
    Read,
}

impl Confirmation {
    pub fn name(self) -> &'static str {
        match self {
            Confirmation::QueueEvent => "queue_event",
            Confirmation::DetailEvent => "detail_event",
            Confirmation::Read => "read",
        }
    }

    /// The name answers and the console give it: `queueEvent`, `detailEvent`, `read`; `none` for
    /// an unverified write.
    pub fn answer_name(how: Option<Self>) -> &'static str {
        match how {
            Some(Confirmation::QueueEvent) => "queueEvent",
            Some(Confirmation::DetailEvent) => "detailEvent",
            Some(Confirmation::Read) => "read",
            None => "none",
        }
    }
}

/// A key whose read-back value differs from what was written. `actual` is `None` when the key is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub key: String,
    pub expected: String,
    pub actual: Option<String>,
}

/// What happened, as verified against Genesys.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateOutcome {
    pub conversation_id: ConversationId,
    pub participant_id: String,
    pub verified: bool,
    /// The participant's attributes as last read back; what was written when verification is off.
    pub attributes: BTreeMap<String, String>,
    pub mismatches: Vec<Mismatch>,
    /// The Genesys calls this update took part in, how many updates shared them, and the
    /// `ININ-Correlation-Id` of the latest answer among them.
    #[serde(skip)]
    pub shared: CallShare,
    /// What showed the write, when it was verified: an event the mirror received, or a read.
    #[serde(skip)]
    pub verified_by: Option<Confirmation>,
    /// Whether the participant was found by purpose in the mirror, without a read.
    #[serde(skip)]
    pub resolved_by_mirror: bool,
    /// Whether a read was made to find the participant by purpose (not reused from an earlier
    /// one): a call beside the round's.
    #[serde(skip)]
    pub resolving_read: bool,
    /// The span of the lane round that applied it, when traces are recorded.
    #[serde(skip)]
    pub round: Option<opentelemetry::trace::SpanContext>,
}

impl UpdateOutcome {
    /// How the participant was found, as logs say it: `mirror` or `rest`.
    pub fn resolved_by(&self) -> &'static str {
        if self.resolved_by_mirror {
            "mirror"
        } else {
            "rest"
        }
    }
}

/// Genesys calls shared by the updates of one lane's round: its PATCHes and reads, and its updates,
/// with the correlation id of Genesys's latest answer to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallShare {
    pub calls: u32,
    pub updates: u32,
    pub correlation_id: Option<String>,
}

impl CallShare {
    /// Adds what a call's context spent, and its correlation id when Genesys sent one.
    pub fn spent(&mut self, cx: &CallContext) {
        self.calls += cx.calls();
        if let Some(id) = cx.correlation_id() {
            self.correlation_id = Some(id.to_string());
        }
    }
}

/// Applies updates through one [`GenesysClient`].
///
/// Every request clones the application state, so the client sits behind an `Arc`: its URLs,
/// credentials and caches are shared, not copied (profiling showed the copies among the top costs).
#[derive(Clone, Debug)]
pub struct Updater {
    genesys: std::sync::Arc<GenesysClient>,
    verify: std::sync::Arc<VerifySettings>,
}

impl Updater {
    pub fn new(genesys: GenesysClient, verify: VerifySettings) -> Self {
        Self {
            genesys: std::sync::Arc::new(genesys),
            verify: std::sync::Arc::new(verify),
        }
    }

    pub fn genesys(&self) -> &GenesysClient {
        &self.genesys
    }

    /// The client, shared: for the mirror's feed, which calls it from its own tasks.
    pub fn shared_genesys(&self) -> std::sync::Arc<GenesysClient> {
        self.genesys.clone()
    }

    /// The Genesys calls `update` makes when all goes well: a read to find the participant (by
    /// purpose), the write, and one read back (when verifying).
    pub fn calls_needed(&self, update: &AttributeUpdate) -> u32 {
        let resolve = u32::from(matches!(update.target, Target::Purpose(_)));
        let verify = u32::from(self.verifies(update.verify));
        resolve + 1 + verify
    }

    /// Admission: whether the budget could give `calls` calls so that the last starts by
    /// `deadline` less [`CALL_ALLOWANCE`]. Nothing is reserved: the lane that applies it takes its
    /// slots, and an update that shares another's calls takes none. Refused, the error says when to
    /// retry, so a caller is told at once instead of waiting for a slot it would get too late.
    pub async fn admit_calls(&self, calls: u32, deadline: Instant) -> Result<(), UpdateError> {
        self.genesys
            .check_calls(calls, slot_wait(deadline))
            .await
            .map_err(UpdateError::Upstream)
    }

    /// The verification settings every update is read back under.
    pub fn verify_settings(&self) -> &VerifySettings {
        &self.verify
    }

    /// Whether a write is read back: as its caller asked (`requested`), else `verify.enabled`.
    pub fn verifies(&self, requested: Option<bool>) -> bool {
        requested.unwrap_or(self.verify.enabled)
    }

    /// A refused write to conversation `cid`'s own data (its secure attributes, a custom record)
    /// in the caller's terms, from a fresh read: the conversation is gone or has ended, or the
    /// refusal stands as Genesys gave it.
    pub async fn explain_conversation(
        &self,
        cx: &mut CallContext,
        cid: ConversationId,
        original: GenesysError,
    ) -> UpdateError {
        match self.read(cx, &cid).await {
            Err(e @ UpdateError::ConversationNotFound(_)) => e,
            Ok(conversation) if conversation.is_ended() => UpdateError::ConversationEnded(cid),
            _ => original.into(),
        }
    }

    /// `GET` the conversation; a 404 is the caller's `ConversationNotFound`.
    pub async fn read(
        &self,
        cx: &mut CallContext,
        cid: &ConversationId,
    ) -> Result<Conversation, UpdateError> {
        self.genesys
            .get_conversation(cx, cid)
            .await
            .map_err(|e| match e.status() {
                Some(404) => UpdateError::ConversationNotFound(*cid),
                _ => e.into(),
            })
    }

    /// The participant `purpose` names on a live `conversation`.
    pub fn resolve(
        conversation: &Conversation,
        cid: ConversationId,
        purpose: &Purpose,
    ) -> Result<String, UpdateError> {
        // A write to an ended conversation is lost to analytics: say so rather than write it.
        if conversation.is_ended() {
            return Err(UpdateError::ConversationEnded(cid));
        }
        select_participant(conversation, purpose)
            .map(|p| p.id.clone())
            .ok_or_else(|| UpdateError::ParticipantNotFound(cid, purpose.to_string()))
    }

    /// `PATCH` the participant's attributes. A refusal that may mean the conversation or the
    /// participant is gone is explained from a fresh read.
    pub async fn write(
        &self,
        cx: &mut CallContext,
        cid: &ConversationId,
        participant_id: &str,
        attributes: &AttributeMap,
    ) -> Result<(), UpdateError> {
        match self
            .genesys
            .patch_participant_attributes(cx, cid, participant_id, attributes)
            .await
        {
            Ok(()) => Ok(()),
            // Genesys's answer for a gone conversation or participant is not settled: read and tell the truth.
            Err(err) => Err(match err.status() {
                Some(400 | 404 | 409) => self.explain(cx, cid, participant_id, err).await,
                _ => err.into(),
            }),
        }
    }

    /// Turns a refused PATCH into what is really the matter, from a fresh read of the conversation.
    async fn explain(
        &self,
        cx: &mut CallContext,
        cid: &ConversationId,
        pid: &str,
        original: GenesysError,
    ) -> UpdateError {
        match self.read(cx, cid).await {
            Err(UpdateError::ConversationNotFound(c)) => UpdateError::ConversationNotFound(c),
            Ok(conversation) if conversation.is_ended() => UpdateError::ConversationEnded(*cid),
            Ok(conversation) if conversation.participant(pid).is_none() => {
                UpdateError::ParticipantNotFound(*cid, pid.to_string())
            }
            Ok(conversation) => match conversation.participant(pid) {
                Some(p) if p.end_time.is_some() => UpdateError::ConversationEnded(*cid),
                _ => original.into(),
            },
            Err(_) => original.into(),
        }
    }
}

/// Every expected key whose read-back value differs.
pub fn compare(expected: &AttributeMap, seen: &BTreeMap<String, String>) -> Vec<Mismatch> {
    expected
        .iter()
        .filter(|(k, v)| seen.get(*k) != Some(*v))
        .map(|(k, v)| Mismatch {
            key: k.clone(),
            expected: v.clone(),
            actual: seen.get(k).cloned(),
        })
        .collect()
}

/// The participant with `purpose`; among several, the one still connected and most recently started.
pub fn select_participant<'a>(
    conversation: &'a Conversation,
    purpose: &Purpose,
) -> Option<&'a Participant> {
    conversation
        .participants
        .iter()
        .filter(|p| p.purpose.as_deref().is_some_and(|x| purpose.matches(x)))
        // ISO-8601 UTC timestamps from Genesys sort correctly as text.
        .max_by(|a, b| {
            (a.is_connected(), a.start_time.as_deref())
                .cmp(&(b.is_connected(), b.start_time.as_deref()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    #[test]
    fn the_connected_and_most_recent_participant_of_a_purpose_is_chosen() {
        let c: Conversation = serde_json::from_value(json!({"id": "c", "participants": [
            {"id": "old", "purpose": "agent", "startTime": "2026-01-01T10:00:00Z", "calls": [{"state": "disconnected"}]},
            {"id": "new", "purpose": "agent", "startTime": "2026-01-01T10:05:00Z", "calls": [{"state": "connected"}]},
            {"id": "newest-gone", "purpose": "agent", "startTime": "2026-01-01T10:09:00Z", "calls": [{"state": "terminated"}]},
            {"id": "cust", "purpose": "customer", "calls": [{"state": "connected"}]}
        ]}))
        .unwrap();
        let agent = Purpose::from_str("agent").unwrap();
        assert_eq!(select_participant(&c, &agent).unwrap().id, "new");
        assert!(select_participant(&c, &Purpose::from_str("ivr").unwrap()).is_none());
    }

    #[test]
    fn mismatches_name_missing_and_different_keys() {
        let expected =
            AttributeMap::from_json(json!({"a": "1", "b": "2", "c": "3"}).as_object().unwrap())
                .unwrap();
        let seen = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "x".to_string()),
        ]);
        let m = compare(&expected, &seen);
        assert_eq!(
            m,
            vec![
                Mismatch {
                    key: "b".into(),
                    expected: "2".into(),
                    actual: Some("x".into())
                },
                Mismatch {
                    key: "c".into(),
                    expected: "3".into(),
                    actual: None
                },
            ]
        );
    }
}
