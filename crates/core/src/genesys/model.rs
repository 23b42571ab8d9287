//! The Genesys Cloud wire shapes Patchbay reads and writes, lenient on input as the SDK models are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `ParticipantAttributes`: the body of the attributes PATCH.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParticipantAttributes {
    pub attributes: BTreeMap<String, String>,
}

/// `ConversationSecureAttributes` as read: the values are secrets from the moment they are
/// decoded, so nothing that holds the answer can print them. `version` counts the writes; Genesys
/// checks it on a PUT only, and Patchbay writes with PATCH.
#[derive(Clone, Deserialize)]
pub struct SecureAttributesRead {
    #[serde(default)]
    pub attributes: BTreeMap<String, secrecy::SecretString>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// `ConversationDataSchema`: a custom-attributes schema. Its name is its JSON Schema's `title`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomSchemaRead {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub json_schema: serde_json::Value,
}

/// `ConversationDataSchemaListing`.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomSchemaListing {
    #[serde(default)]
    pub entities: Vec<CustomSchemaRead>,
}

/// The schema a record was written under.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomRecordSchema {
    pub id: String,
    #[serde(default)]
    pub version: Option<i64>,
}

/// `CustomAttributes`: one record, with each field's time of writing.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomRecordRead {
    pub id: String,
    #[serde(default)]
    pub divisions: Vec<String>,
    #[serde(default)]
    pub schema: Option<CustomRecordSchema>,
    #[serde(default)]
    pub custom_attributes: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub custom_attributes_timestamps: BTreeMap<String, String>,
    #[serde(default)]
    pub version: i64,
}

/// `CustomAttributesBulkUpdateResponseMap`: a bulk write's answer, each record's result by its id.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomRecordResults {
    #[serde(default)]
    pub results: BTreeMap<String, CustomRecordResult>,
}

/// `CustomAttributesBulkUpdateResponse`: one record's result: its status, and the record as it
/// stands after the write, or why it failed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomRecordResult {
    #[serde(default)]
    pub attributes: Option<CustomRecordRead>,
    #[serde(default)]
    pub status_code: Option<u16>,
    #[serde(default)]
    pub error_message: Option<String>,
}

/// `CustomAttributesUpdateRequest` (PUT) and `CustomAttributesPatchRequest` (PATCH, without
/// `schemaId`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomRecordWrite {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Always sent: Genesys clears a record's divisions on an update without them.
    pub divisions: Vec<String>,
    pub custom_attributes: serde_json::Map<String, serde_json::Value>,
}

/// The client-credentials grant's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    pub expires_in: u64,
}

/// `Conversation`, as `GET /api/v2/conversations/{id}` returns it (only the fields Patchbay uses).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default)]
    pub participants: Vec<Participant>,
}

/// The media lists a participant may carry; each entry has its own `state`.
pub const MEDIA_LISTS: &[&str] = &[
    "calls",
    "callbacks",
    "chats",
    "cobrowsesessions",
    "emails",
    "messages",
    "screenshares",
    "socialExpressions",
    "videos",
];

/// The media list of a conversation participant that holds each analytics media type.
pub const MEDIA_TYPE_LISTS: &[(&str, &str)] = &[
    ("voice", "calls"),
    ("callback", "callbacks"),
    ("chat", "chats"),
    ("email", "emails"),
    ("message", "messages"),
    ("video", "videos"),
    ("cobrowse", "cobrowsesessions"),
    ("screenshare", "screenshares"),
];

/// The media list that holds `media_type` (analytics' name for it), if any.
pub fn media_list(media_type: &str) -> Option<&'static str> {
    MEDIA_TYPE_LISTS
        .iter()
        .find(|(m, _)| *m == media_type)
        .map(|(_, list)| *list)
}

/// `Participant`. Communications are kept as raw JSON per media list, since only `state` matters here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// `calls`, `chats`, … and any other field, so a read-back loses nothing the simulator serves.
    #[serde(flatten)]
    pub media: BTreeMap<String, serde_json::Value>,
}

/// A communication state that means the communication is over.
fn is_finished_state(state: &str) -> bool {
    matches!(state, "disconnected" | "terminated")
}

impl Participant {
    /// A top-level text field of the participant (`ani`, `userId`, `externalContactId`, …).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.media.get(name).and_then(|v| v.as_str())
    }

    /// The `state` of every communication in every media list.
    pub fn communication_states(&self) -> impl Iterator<Item = &str> {
        MEDIA_LISTS
            .iter()
            .filter_map(|list| self.media.get(*list))
            .filter_map(|v| v.as_array())
            .flatten()
            .filter_map(|c| c.get("state").and_then(|s| s.as_str()))
    }

    /// Still on the conversation: no end time, and some communication not yet over.
    pub fn is_connected(&self) -> bool {
        self.end_time.is_none() && self.communication_states().any(|s| !is_finished_state(s))
    }
}

impl Conversation {
    /// Ended: it has an `endTime`, or every communication of every participant is over.
    pub fn is_ended(&self) -> bool {
        if self.end_time.is_some() {
            return true;
        }
        let mut states = self
            .participants
            .iter()
            .flat_map(|p| p.communication_states())
            .peekable();
        states.peek().is_some() && states.all(is_finished_state)
    }

    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants
            .iter()
            .find(|p| p.id.eq_ignore_ascii_case(id))
    }
}

/// `ErrorBody`: what Genesys answers on failure.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub context_id: Option<String>,
    #[serde(default)]
    pub message_with_params: Option<String>,
    #[serde(default)]
    pub message_params: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub details: Vec<serde_json::Value>,
    #[serde(default)]
    pub errors: Vec<serde_json::Value>,
}

/// `AnalyticsConversationQueryResponse`: the answer of the conversation details query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsConversationQueryResponse {
    #[serde(default)]
    pub conversations: Vec<AnalyticsConversation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_hits: Option<u64>,
}

/// `AnalyticsConversationWithoutAttributes`, the fields a lookup uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsConversation {
    pub conversation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_end: Option<String>,
    #[serde(default)]
    pub participants: Vec<AnalyticsParticipant>,
}

/// `AnalyticsParticipantWithoutAttributes`, the fields a lookup uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsParticipant {
    pub participant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_contact_id: Option<String>,
    #[serde(default)]
    pub sessions: Vec<AnalyticsSession>,
}

/// `AnalyticsSession`, the fields a lookup uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ani: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(v: serde_json::Value) -> Conversation {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_conversation_with_an_end_time_has_ended() {
        assert!(conv(json!({"id": "c", "endTime": "2026-01-01T00:00:00Z"})).is_ended());
    }

    #[test]
    fn a_conversation_whose_every_communication_is_over_has_ended() {
        let c = conv(json!({"id": "c", "participants": [
            {"id": "a", "calls": [{"state": "disconnected"}]},
            {"id": "b", "chats": [{"state": "terminated"}]}
        ]}));
        assert!(c.is_ended());
        let live = conv(json!({"id": "c", "participants": [
            {"id": "a", "calls": [{"state": "disconnected"}]},
            {"id": "b", "calls": [{"state": "connected"}]}
        ]}));
        assert!(!live.is_ended());
        assert!(!conv(json!({"id": "c", "participants": []})).is_ended());
    }
}
