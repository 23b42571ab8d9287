//! `POST /v1/attributes`: parse the request, apply it, and answer with what Genesys shows.

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use tower_http::request_id::RequestId;

use super::body::{self, Shape};
use super::exchange::{read_body, request_id};
use super::intake::{self, Intake};
use super::problem::ApiError;
use crate::api::state::AppState;
use crate::domain::lookup::{KeyKind, Lookup};
use crate::domain::{
    Address, AttributeMap, AttributeUpdate, ConversationId, ParticipantId, Purpose, Target,
    UpdateRequest,
};

/// The inbound body, before parsing into an [`AttributeUpdate`]. Its fields are [`REQUEST_SHAPE`]'s.
#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a JSON object with `attributes` and a `conversationId` or a `lookup`"
)]
pub struct AttributesRequest {
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Instead of `conversationId`: what to find the live conversation by.
    #[serde(default)]
    pub lookup: Option<LookupRequest>,
    #[serde(default)]
    pub participant_id: Option<String>,
    #[serde(default)]
    pub purpose: Option<String>,
    pub attributes: serde_json::Value,
    #[serde(default)]
    pub verify: Option<bool>,
}

/// `lookup`: exactly one of `userId`, `ani` and `externalContactId`, with an optional `mediaType`
/// (default `voice`) and `pick` (`"latest"` takes the newest of several matches).
#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "an object with one of `userId`, `ani` and `externalContactId`"
)]
pub struct LookupRequest {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub ani: Option<String>,
    #[serde(default)]
    pub external_contact_id: Option<String>,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub pick: Option<String>,
}

/// What `POST /v1/attributes` takes, field by field, so a misspelling is refused by name.
pub const REQUEST_SHAPE: Shape = Shape {
    what: "a JSON object with `attributes` and a `conversationId` or a `lookup`",
    fields: &[
        "conversationId",
        "lookup",
        "participantId",
        "purpose",
        "attributes",
        "verify",
    ],
    nested: &[("lookup", &LOOKUP_SHAPE)],
};

pub const LOOKUP_SHAPE: Shape = Shape {
    what: "an object with one of `userId`, `ani` and `externalContactId`",
    fields: &["userId", "ani", "externalContactId", "mediaType", "pick"],
    nested: &[],
};

impl LookupRequest {
    pub fn parse(&self) -> Result<Lookup, ApiError> {
        let (kind, value) = KeyKind::exactly_one(
            present(self.user_id.as_deref()),
            present(self.ani.as_deref()),
            present(self.external_contact_id.as_deref()),
        )
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "`lookup` takes exactly one of `userId`, `ani` and `externalContactId`".into(),
            )
        })?;
        Ok(Lookup::new(
            kind.key(value)?,
            self.media_type.as_deref(),
            self.pick.as_deref(),
        )?)
    }
}

/// Text that callers such as Architect send for "no value": treated as absent.
fn present(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

impl AttributesRequest {
    /// Parses into a valid request, whose conversation may still have to be found.
    pub fn parse_request(self) -> Result<UpdateRequest, ApiError> {
        let address = match (present(self.conversation_id.as_deref()), &self.lookup) {
            (Some(cid), None) => Address::Conversation(ConversationId::from_str(cid)?),
            (None, Some(lookup)) => Address::Lookup(lookup.parse()?),
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidRequest(
                    "send either `conversationId` or `lookup`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(ApiError::InvalidRequest(
                    "`conversationId` (or a `lookup`) is required".into(),
                ))
            }
        };
        // A purpose is checked even when a participant id makes it unnecessary: a typo must not pass.
        let purpose = present(self.purpose.as_deref())
            .map(Purpose::from_str)
            .transpose()?;
        let target = match present(self.participant_id.as_deref()) {
            Some(pid) => Some(Target::Participant(ParticipantId::from_str(pid)?)),
            None => purpose.map(Target::Purpose),
        };
        let object = self
            .attributes
            .as_object()
            .ok_or_else(|| ApiError::InvalidRequest("`attributes` must be a JSON object".into()))?;
        let attributes = AttributeMap::from_json(object)?;
        Ok(UpdateRequest {
            address,
            target,
            attributes,
            verify: self.verify,
        })
    }

    /// Parses into a valid update for a named conversation.
    pub fn parse(self) -> Result<AttributeUpdate, ApiError> {
        let request = self.parse_request()?;
        match &request.address {
            Address::Conversation(cid) => {
                let cid = *cid;
                Ok(request.into_update(cid))
            }
            Address::Lookup(_) => Err(ApiError::InvalidRequest(
                "this route needs a `conversationId`".into(),
            )),
        }
    }
}

/// The handler: parse, then hand over to [`intake::accept`].
#[utoipa::path(post, path = "/v1/attributes", tag = "attributes",
    request_body(content = crate::api::openapi::AttributesRequestDoc, content_type = "application/json"),
    params(
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the job is committed"),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within idempotency.ttl_s answers with the original job or answer"),
    ),
    responses(crate::api::openapi::WriteResponses),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn set_attributes(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Option<axum::Extension<RequestId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let deadline = state.request_deadline();
    let request_id = request_id(&headers, id.as_ref().map(|e| &e.0));
    let mut entry = state.journal.begin("api", &request_id);
    let result = async {
        let body = read_body(body, state.settings.server.max_body_bytes)?;
        let request: AttributesRequest = body::parse(&body, &REQUEST_SHAPE)?;
        let request = request.parse_request()?;
        let update = intake::address(&state, request, deadline, &mut entry).await?;
        let intake = Intake::from_request(
            &headers,
            request_id.clone(),
            "attributes",
            &body,
            None,
            false,
            false,
        )?;
        intake::accept(&state, update, intake, deadline, &mut entry).await
    }
    .await;
    intake::journal(&state, entry, started, &result);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::exchange::check_attribute_bytes;
    use proptest::prelude::*;
    use serde_json::json;

    const CID: &str = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a01";

    fn parse(v: serde_json::Value) -> Result<AttributeUpdate, ApiError> {
        let update = serde_json::from_value::<AttributesRequest>(v)
            .unwrap()
            .parse()?;
        check_attribute_bytes(&update.attributes, 2048)?;
        Ok(update)
    }

    #[test]
    fn purpose_defaults_to_customer_and_an_empty_participant_id_is_absent() {
        let u = parse(json!({"conversationId": CID, "participantId": "", "attributes": {"a": 1}}))
            .unwrap();
        assert_eq!(u.target, Target::Purpose(Purpose::customer()));
    }

    #[test]
    fn an_unknown_purpose_is_refused_even_beside_a_participant_id() {
        let e = parse(
            json!({"conversationId": CID, "participantId": CID, "purpose": "boss", "attributes": {"a": 1}}),
        );
        assert!(matches!(e, Err(ApiError::InvalidRequest(_))));
    }

    #[test]
    fn attributes_over_the_limit_are_refused_by_their_byte_count() {
        let e = parse(json!({"conversationId": CID, "attributes": {"k": "é".repeat(1024)}}));
        assert!(matches!(
            e,
            Err(ApiError::AttributesTooLarge {
                size: 2049,
                limit: 2048
            })
        ));
        assert!(
            parse(json!({"conversationId": CID, "attributes": {"k": "x".repeat(2047)}})).is_ok()
        );
    }

    #[test]
    fn every_field_the_shape_names_is_one_the_request_takes() {
        // The strict struct is the backstop: a name in the shape it does not know fails here.
        let nulls = |shape: &Shape| -> serde_json::Value {
            shape
                .fields
                .iter()
                .map(|f| (f.to_string(), serde_json::Value::Null))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        serde_json::from_value::<AttributesRequest>(nulls(&REQUEST_SHAPE)).unwrap();
        serde_json::from_value::<LookupRequest>(nulls(&LOOKUP_SHAPE)).unwrap();
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_json_never_panics(body in ".{0,200}") {
            let _ = body::parse::<AttributesRequest>(body.as_bytes(), &REQUEST_SHAPE).map(|r| r.parse());
        }
    }
}
