//! The body of `POST /v1/attributes` and its parsing: one struct serde reads, the shape check takes
//! its field names from, and OpenAPI is derived from.

use std::str::FromStr;
use std::sync::LazyLock;

use serde::Deserialize;

use super::body::Shape;
use super::problem::ApiError;
use crate::custom::CustomValues;
use crate::domain::lookup::{KeyKind, Lookup};
use crate::domain::{
    Address, AttributeMap, AttributeUpdate, ConversationId, ParticipantId, Purpose, SecureValues,
    Target, UpdateRequest,
};

/// A parsed request: the participant's update (its attributes empty when only the conversation's
/// targets were sent), the conversation's secure attributes and its custom-attributes record's
/// values, if any.
#[derive(Debug)]
pub struct Parsed {
    pub update: UpdateRequest,
    pub secure: Option<SecureValues>,
    pub custom: Option<CustomValues>,
}

/// The inbound body, before parsing into an [`AttributeUpdate`]. This one struct is the request's
/// definition: serde reads it, [`REQUEST_SHAPE`] takes its field names from serde, and the OpenAPI
/// document is derived from it, with the rules between fields that [`Self::parse_request`]
/// enforces added by [`request_rules`].
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a JSON object with `attributes` and a `conversationId` or a `lookup`"
)]
#[schema(as = AttributesRequest)]
pub struct AttributesRequest {
    /// The live conversation. Exactly one of `conversationId` and `lookup`.
    #[serde(default)]
    #[schema(
        nullable = false,
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        example = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a01"
    )]
    pub conversation_id: Option<String>,
    /// Instead of `conversationId`: what to find the live conversation by.
    #[serde(default)]
    #[schema(nullable = false)]
    pub lookup: Option<LookupRequest>,
    /// The participant to write to. Absent (or empty): the purpose selects one.
    #[serde(default)]
    #[schema(
        nullable = false,
        pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub participant_id: Option<String>,
    /// A Genesys participant purpose, in any letter case; `customer` by default.
    #[serde(default)]
    #[schema(nullable = false, schema_with = purpose_schema)]
    pub purpose: Option<String>,
    /// The participant's attributes: strings are written as they are, numbers and booleans as their
    /// JSON text. The UTF-8 bytes of keys and values must fit `limits.max_attributes_bytes` (2048 by
    /// default; 422 `attributes_too_large` beyond). Required, unless `secureAttributes` is sent.
    #[serde(default)]
    #[schema(schema_with = attributes_schema)]
    pub attributes: serde_json::Value,
    /// The conversation's secure attributes, which only secure flows read: personal data such as a
    /// date of birth or an account number. Coerced as `attributes` are, bounded by the same limit,
    /// written with PATCH and read back; the answer names their keys, and no answer, log, trace,
    /// metric or console ever shows their values. Synchronous only: a request that would be stored
    /// (`Prefer: respond-async`, an `Idempotency-Key`) is refused with 422 `secure_not_stored`.
    #[serde(default)]
    #[schema(nullable = false, schema_with = attributes_schema)]
    pub secure_attributes: Option<serde_json::Value>,
    /// The custom-attributes schema `customAttributes` are written under: its id, or its name (its
    /// JSON Schema's `title`). Required with `customAttributes`.
    #[serde(default)]
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        example = "crm_case"
    )]
    pub custom_schema: Option<String>,
    /// Typed values for the conversation's record of `customSchema`, for reporting and search:
    /// checked against the schema before any write (422 `custom_invalid` names each field and what
    /// the schema wants), a string coerced to an integer, number or boolean where the schema wants
    /// one and the text is exactly one. Written to the conversation's one record of that schema and
    /// read back.
    #[serde(default)]
    #[schema(nullable = false, schema_with = custom_values_schema)]
    pub custom_attributes: Option<serde_json::Value>,
    /// Overrides `verify.enabled` for this update.
    #[serde(default)]
    #[schema(nullable = false)]
    pub verify: Option<bool>,
}

/// `lookup`: exactly one of `userId`, `ani` and `externalContactId`, with an optional `mediaType`
/// (default `voice`) and `pick` (`"latest"` takes the newest of several matches).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "an object with one of `userId`, `ani` and `externalContactId`"
)]
#[schema(as = Lookup)]
pub struct LookupRequest {
    /// The agent's Genesys user id: their live conversation (the agent by default).
    #[serde(default)]
    #[schema(
        nullable = false,
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub user_id: Option<String>,
    /// The number the customer called from, with its country code: `+13175550123`; the parser
    /// also takes `tel:+13175550123` and spaces, dashes, dots and parentheses between digits.
    #[serde(default)]
    #[schema(
        nullable = false,
        pattern = "^\\+?[1-9][0-9]{7,14}$",
        example = "+13175550123"
    )]
    pub ani: Option<String>,
    /// The Genesys external contact on the conversation.
    #[serde(default)]
    #[schema(
        nullable = false,
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub external_contact_id: Option<String>,
    /// `voice` by default.
    #[serde(default)]
    #[schema(nullable = false, schema_with = media_type_schema)]
    pub media_type: Option<String>,
    /// `latest`: the newest of several matches, instead of 409 `ambiguous_lookup`.
    #[serde(default)]
    #[schema(nullable = false, schema_with = pick_schema)]
    pub pick: Option<String>,
}

/// One of `values`, as text.
fn one_of(values: &[&'static str]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

pub fn purpose_schema() -> utoipa::openapi::Object {
    one_of(crate::domain::PURPOSES)
}

fn media_type_schema() -> utoipa::openapi::Object {
    one_of(crate::domain::lookup::MEDIA_TYPES)
}

fn pick_schema() -> utoipa::openapi::Object {
    one_of(&["latest"])
}

/// An attribute's value: a string, a number or a boolean.
pub fn scalar_schema() -> utoipa::openapi::OneOf {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    utoipa::openapi::OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .build()
}

/// Named attribute values, every name with a character that is not a space.
pub fn attribute_map_schema() -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(
            scalar_schema(),
        )))))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("\\S")),
        ))
}

/// A non-empty object of named JSON values, which the schema types.
fn custom_values_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .min_properties(Some(1))
        .build()
}

/// A non-empty object of named strings, numbers and booleans.
fn attributes_schema() -> utoipa::openapi::Object {
    attribute_map_schema().min_properties(Some(1)).build()
}

/// The rules between fields that [`AttributesRequest::parse_request`] and
/// [`LookupRequest::parse`] enforce, as JSON Schema for the document: a request names exactly one
/// of `conversationId` and `lookup`, and at least one of `attributes` and `secureAttributes`; a
/// lookup exactly one key. Each "exactly one" is a `oneOf` of the derived object, every alternative
/// requiring its own field and allowing none of the others.
pub fn request_rules(schemas: &mut serde_json::Map<String, serde_json::Value>) {
    fn exactly_one(schema: &mut serde_json::Value, alternatives: &[&str]) {
        let base = schema.clone();
        let branches = alternatives
            .iter()
            .map(|chosen| {
                let mut branch = base.clone();
                if let Some(properties) = branch["properties"].as_object_mut() {
                    properties
                        .retain(|name, _| name == chosen || !alternatives.contains(&name.as_str()));
                }
                let mut required: Vec<serde_json::Value> =
                    branch["required"].as_array().cloned().unwrap_or_default();
                required.push((*chosen).into());
                branch["required"] = required.into();
                branch["additionalProperties"] = false.into();
                branch
            })
            .collect::<Vec<_>>();
        let mut rules = serde_json::Map::new();
        if let Some(description) = base.get("description") {
            rules.insert("description".into(), description.clone());
        }
        rules.insert("oneOf".into(), branches.into());
        *schema = rules.into();
    }
    if let Some(request) = schemas.get_mut("AttributesRequest") {
        exactly_one(request, &["conversationId", "lookup"]);
        // And something to write: the participant's attributes, the secure ones, or both.
        if let Some(rules) = request.as_object_mut() {
            rules.insert(
                "anyOf".into(),
                serde_json::json!([
                    {"required": ["attributes"]},
                    {"required": ["secureAttributes"]},
                    {"required": ["customAttributes", "customSchema"]}
                ]),
            );
            // A schema and its values come together.
            rules.insert(
                "dependentRequired".into(),
                serde_json::json!({"customAttributes": ["customSchema"], "customSchema": ["customAttributes"]}),
            );
        }
    }
    if let Some(lookup) = schemas.get_mut("Lookup") {
        exactly_one(lookup, &["userId", "ani", "externalContactId"]);
    }
}

/// What `POST /v1/attributes` takes, field by field, so a misspelling is refused by name.
pub static REQUEST_SHAPE: LazyLock<Shape> = LazyLock::new(|| {
    Shape::of::<AttributesRequest>(
        "a JSON object with `attributes` and a `conversationId` or a `lookup`",
        vec![("lookup", &*LOOKUP_SHAPE)],
    )
});

pub static LOOKUP_SHAPE: LazyLock<Shape> = LazyLock::new(|| {
    Shape::of::<LookupRequest>(
        "an object with one of `userId`, `ani` and `externalContactId`",
        Vec::new(),
    )
});

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
    pub fn parse_request(self) -> Result<Parsed, ApiError> {
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
        let secure = match &self.secure_attributes {
            None => None,
            Some(value) => Some(SecureValues::from_json(value.as_object().ok_or_else(
                || ApiError::InvalidRequest("`secureAttributes` must be a JSON object".into()),
            )?)?),
        };
        let custom = match (
            present(self.custom_schema.as_deref()),
            &self.custom_attributes,
        ) {
            (None, None) => None,
            (Some(schema), Some(values)) => Some(CustomValues::new(
                schema,
                values.as_object().ok_or_else(|| {
                    ApiError::InvalidRequest("`customAttributes` must be a JSON object".into())
                })?,
            )?),
            (None, Some(_)) => {
                return Err(ApiError::InvalidRequest(
                    "`customAttributes` needs `customSchema`: the schema's id or name".into(),
                ))
            }
            (Some(_), None) => {
                return Err(ApiError::InvalidRequest(
                    "`customSchema` needs `customAttributes`".into(),
                ))
            }
        };
        let attributes = match (&self.attributes, secure.is_some() || custom.is_some()) {
            // The conversation's targets alone: no participant is written.
            (serde_json::Value::Null, true) => AttributeMap::none(),
            (serde_json::Value::Null, false) => {
                return Err(ApiError::InvalidRequest(
                    "`attributes` (or `secureAttributes`, or `customAttributes`) is required"
                        .into(),
                ))
            }
            (value, _) => AttributeMap::from_json(value.as_object().ok_or_else(|| {
                ApiError::InvalidRequest("`attributes` must be a JSON object".into())
            })?)?,
        };
        Ok(Parsed {
            update: UpdateRequest {
                address,
                target,
                attributes,
                verify: self.verify,
            },
            secure,
            custom,
        })
    }

    /// Parses into a valid update of a named conversation's participant.
    pub fn parse(self) -> Result<AttributeUpdate, ApiError> {
        let Parsed {
            update: request,
            secure,
            custom,
        } = self.parse_request()?;
        if secure.is_some() || custom.is_some() {
            return Err(ApiError::InvalidRequest(
                "this route writes participant attributes only".into(),
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::body;
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

    proptest! {
        #[test]
        fn parsing_arbitrary_json_never_panics(body in ".{0,200}") {
            let _ = body::parse::<AttributesRequest>(body.as_bytes(), &REQUEST_SHAPE).map(|r| r.parse());
        }
    }
}
