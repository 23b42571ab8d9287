//! What every handler shares about an exchange: reading a request's body and id, the attribute
//! size limit, and the 200 answer an applied update gets, synchronous or as a job's result. The
//! handlers (`attributes`, `hooks`), intake and jobs import it; it imports none of them.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tower_http::request_id::RequestId;

use super::problem::ApiError;
use crate::custom::CustomOutcome;
use crate::domain::{AttributeMap, ConversationId};
use crate::secure::SecureOutcome;
use crate::service::{Mismatch, UpdateOutcome};

/// The header that carries a request's id, the caller's or one made for it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The 200 answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributesResponse {
    pub conversation_id: String,
    pub participant_id: String,
    pub updated: bool,
    pub verified: bool,
    pub attributes: BTreeMap<String, String>,
    pub mismatches: Vec<MismatchBody>,
    /// `mismatches.len()`, flat, so an Architect data action can output it without a JSONPath function.
    pub mismatch_count: usize,
    /// How the conversation was named: `conversationId` (the caller's), `mirror`, `cache` or
    /// `analytics` (a lookup).
    #[serde(default)]
    pub found_by: String,
    /// What showed the write: `queueEvent` or `detailEvent` (pushed to the mirror, no call) or
    /// `read`; `none` when unverified.
    #[serde(default)]
    pub verified_by: String,
    pub request_id: String,
    /// The keys of the conversation's secure attributes written: never their values. Present when
    /// the request sent `secureAttributes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub secure_keys: Option<Vec<String>>,
    /// Whether a read showed every secure key with the value sent (compared in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub secure_verified: Option<bool>,
    /// The secure keys the read did not show as sent, flat for an Architect output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub secure_unconfirmed: Option<Vec<String>>,
    /// The conversation's custom-attributes record written (the same id on every replica, one per
    /// conversation and schema). Present when the request sent `customAttributes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub custom_record_id: Option<String>,
    /// The record's fields written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub custom_keys: Option<Vec<String>>,
    /// Whether a read showed every field with its value, written after the write began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub custom_verified: Option<bool>,
    /// The fields the read did not show as written, flat for an Architect output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub custom_unconfirmed: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MismatchBody {
    pub key: String,
    pub expected: String,
    pub actual: Option<String>,
}

impl From<Mismatch> for MismatchBody {
    fn from(m: Mismatch) -> Self {
        Self {
            key: m.key,
            expected: m.expected,
            actual: m.actual,
        }
    }
}

impl AttributesResponse {
    pub fn from_outcome(outcome: UpdateOutcome, request_id: String) -> Self {
        Self {
            conversation_id: outcome.conversation_id.to_string(),
            participant_id: outcome.participant_id,
            updated: true,
            verified: outcome.verified,
            attributes: outcome.attributes,
            mismatch_count: outcome.mismatches.len(),
            mismatches: outcome.mismatches.into_iter().map(Into::into).collect(),
            found_by: "conversationId".into(),
            verified_by: crate::service::Confirmation::answer_name(outcome.verified_by).into(),
            request_id,
            secure_keys: None,
            secure_verified: None,
            secure_unconfirmed: None,
            custom_record_id: None,
            custom_keys: None,
            custom_verified: None,
            custom_unconfirmed: None,
        }
    }

    /// The answer to a request that wrote only the conversation's targets (secure attributes, a
    /// custom-attributes record): no participant, and `verified` is theirs.
    pub fn conversation_only(conversation_id: ConversationId, request_id: String) -> Self {
        Self {
            conversation_id: conversation_id.to_string(),
            participant_id: String::new(),
            updated: true,
            verified: true,
            attributes: BTreeMap::new(),
            mismatch_count: 0,
            mismatches: Vec::new(),
            found_by: "conversationId".into(),
            verified_by: "read".into(),
            request_id,
            secure_keys: None,
            secure_verified: None,
            secure_unconfirmed: None,
            custom_record_id: None,
            custom_keys: None,
            custom_verified: None,
            custom_unconfirmed: None,
        }
    }

    /// The answer, with what became of the secure attributes. A request that wrote nothing else
    /// is verified when they are.
    pub fn with_secure(mut self, outcome: SecureOutcome) -> Self {
        self.conversation_target(outcome.verified);
        self.secure_verified = Some(outcome.verified);
        self.secure_keys = Some(outcome.keys);
        self.secure_unconfirmed = Some(outcome.unconfirmed);
        self
    }

    /// The answer, with what became of the custom-attributes record. A request that wrote no
    /// participant is verified when every target it wrote is.
    pub fn with_custom(mut self, outcome: CustomOutcome) -> Self {
        self.conversation_target(outcome.verified);
        self.custom_record_id = Some(outcome.record_id);
        self.custom_verified = Some(outcome.verified);
        self.custom_keys = Some(outcome.keys);
        self.custom_unconfirmed = Some(outcome.unconfirmed);
        self
    }

    /// Without a participant, `verified` is every conversation target's.
    fn conversation_target(&mut self, verified: bool) {
        if self.participant_id.is_empty() {
            self.verified = self.verified && verified;
            if !self.verified {
                self.verified_by = "none".into();
            }
        }
    }

    /// The answer, naming how a lookup found its conversation.
    pub fn found_by(mut self, found_by: &str) -> Self {
        self.found_by = found_by.to_string();
        self
    }
}

/// The body's bytes, or the problem for a body that is too large or unreadable.
pub fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::InvalidRequest("the request body could not be read".into())
        }
    })
}

pub fn request_id(headers: &HeaderMap, id: Option<&RequestId>) -> String {
    id.and_then(|id| id.header_value().to_str().ok())
        .or_else(|| headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()))
        .unwrap_or_default()
        .to_owned()
}

/// Refuses attributes over `limits.max_attributes_bytes`, counted in UTF-8 bytes of keys and values.
pub fn check_attribute_bytes(attributes: &AttributeMap, limit: usize) -> Result<(), ApiError> {
    let size = attributes.byte_len();
    if size > limit {
        return Err(ApiError::AttributesTooLarge { size, limit });
    }
    Ok(())
}
