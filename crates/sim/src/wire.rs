//! Genesys Cloud's wire shapes as the simulator serves them, written from the models of Genesys's
//! own Python SDK (`purecloudplatformclientv2/models/`: `Conversation`, `Participant`, `ErrorBody`,
//! `AnalyticsConversationQueryResponse`, …), never from Patchbay's client: a fake that shared the
//! client's structs would agree with every misreading of them. The SDK conformance test reads what
//! the simulator serves with those models.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every answer carries it; Genesys's support asks for it.
pub const CORRELATION_HEADER: &str = "ININ-Correlation-Id";
/// The token's standing, on every API answer: calls counted in its window, the limit, and the
/// seconds until the window resets.
pub const RATELIMIT_COUNT: &str = "inin-ratelimit-count";
pub const RATELIMIT_ALLOWED: &str = "inin-ratelimit-allowed";
pub const RATELIMIT_RESET: &str = "inin-ratelimit-reset";

/// `v2.routing.queues.{id}.conversations`: a queue's conversations, whole, on every change.
pub fn queue_topic(queue: &str) -> String {
    format!("v2.routing.queues.{queue}.conversations")
}

/// `v2.detail.events.conversation.{id}.attributes`: a conversation's attribute changes.
pub fn attributes_topic(conversation: &str) -> String {
    format!("v2.detail.events.conversation.{conversation}.attributes")
}

/// `Conversation`'s fields the simulator keeps.
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

/// `Participant`'s fields the simulator keeps; its communications (`calls`, `chats`, …) are kept as
/// the JSON lists they are, each entry with its `state`.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_contact_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ani: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// `calls`, `callbacks`, `chats`, `cobrowsesessions`, `emails`, `messages`, `screenshares`,
    /// `socialExpressions`, `videos`.
    #[serde(flatten)]
    pub communications: BTreeMap<String, Value>,
}

/// The participant's communication lists, by the SDK's names.
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

/// Analytics' media types, and the participant list that holds each.
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

impl Participant {
    /// The `state` of each of its communications.
    fn states(&self) -> impl Iterator<Item = &str> {
        MEDIA_LISTS
            .iter()
            .filter_map(|list| self.communications.get(*list)?.as_array())
            .flatten()
            .filter_map(|c| c.get("state")?.as_str())
    }

    /// Still on the conversation: no end time, and a communication not yet over.
    pub fn is_connected(&self) -> bool {
        self.end_time.is_none() && self.states().any(|s| !finished(s))
    }
}

fn finished(state: &str) -> bool {
    matches!(state, "disconnected" | "terminated")
}

impl Conversation {
    /// Over: an `endTime`, or every communication of every participant finished.
    pub fn is_ended(&self) -> bool {
        if self.end_time.is_some() {
            return true;
        }
        let mut states = self
            .participants
            .iter()
            .flat_map(Participant::states)
            .peekable();
        states.peek().is_some() && states.all(finished)
    }

    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants
            .iter()
            .find(|p| p.id.eq_ignore_ascii_case(id))
    }
}

/// `ConversationSecureAttributes`: the conversation's secure attributes and their version (which
/// Genesys checks on a PUT only; a PATCH ignores it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConversationSecureAttributes {
    pub attributes: std::collections::BTreeMap<String, String>,
    pub version: i64,
}

/// `ErrorBody`: Genesys's answer on failure.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub message: String,
    pub code: String,
    pub status: u16,
    pub context_id: String,
    pub message_with_params: String,
    pub message_params: BTreeMap<String, String>,
    pub details: Vec<Value>,
    pub errors: Vec<Value>,
}

/// `AnalyticsConversationQueryResponse`: the details query's answer.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsConversationQueryResponse {
    pub conversations: Vec<AnalyticsConversation>,
    pub total_hits: u64,
}

/// `AnalyticsConversationWithoutAttributes`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsConversation {
    pub conversation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_end: Option<String>,
    pub participants: Vec<AnalyticsParticipant>,
}

/// `AnalyticsParticipantWithoutAttributes`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsParticipant {
    pub participant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_contact_id: Option<String>,
    pub sessions: Vec<AnalyticsSession>,
}

/// `AnalyticsSession`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsSession {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ani: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnis: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

/// `ConversationDataSchema`: a custom-attributes schema, its JSON Schema document and version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationDataSchema {
    pub id: String,
    pub version: i64,
    pub enabled: bool,
    pub json_schema: serde_json::Value,
    pub self_uri: String,
}

/// `ConversationDataSchemaListing`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationDataSchemaListing {
    pub total: i64,
    pub entities: Vec<ConversationDataSchema>,
    pub self_uri: String,
}

/// The schema a record was written under, as `CustomAttributes.schema` names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAttributesSchemaRef {
    pub id: String,
    pub version: i64,
}

/// `CustomAttributes`: one record of a conversation, with each field's time of writing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAttributes {
    pub id: String,
    pub conversation_id: String,
    pub divisions: Vec<String>,
    pub schema: CustomAttributesSchemaRef,
    pub custom_attributes: serde_json::Map<String, serde_json::Value>,
    pub custom_attributes_timestamps: BTreeMap<String, String>,
    pub version: i64,
    pub date_created: String,
    pub date_modified: String,
    pub self_uri: String,
}

/// `CustomAttributesBulkUpdateResponse`: one record's result of a bulk write.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAttributesBulkUpdateResponse {
    /// The record as it stands after the write; absent when the write failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<CustomAttributes>,
    pub status_code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// `CustomAttributesBulkUpdateResponseMap`: a bulk write's answer, each record's result by its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomAttributesBulkUpdateResponseMap {
    pub results: BTreeMap<String, CustomAttributesBulkUpdateResponse>,
}

/// `CustomAttributesIdResponse`: a PUT's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomAttributesIdResponse {
    pub id: String,
}
