//! Conversation custom attributes as Genesys keeps them: schemas (JSON Schema documents with a
//! version) under `/api/v2/conversations/customattributes/schemas`, and per conversation records
//! with a user-chosen id, a version that a stale write's `version` conflicts with (409), per-field
//! timestamps, and divisions that an update without them clears, written one at a time or in bulk
//! (whose answer shows each record as it stands after the write). Values are checked against the
//! record's schema: a violation is a 400 with Genesys's error body.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::errors::error;
use crate::wire::{
    ConversationDataSchema, ConversationDataSchemaListing, CustomAttributes,
    CustomAttributesBulkUpdateResponse, CustomAttributesBulkUpdateResponseMap,
    CustomAttributesIdResponse, CustomAttributesSchemaRef,
};
use crate::{Simulator, State as SimState};

/// The seeded schema's id and title (`customSchema` may name either).
pub const SEED_SCHEMA_ID: &str = "4b1d0c7e-5a43-4a8e-9f0c-2f8a6d1e3c21";
pub const SEED_SCHEMA_NAME: &str = "crm_case";

/// Schemas and records.
#[derive(Debug, Default)]
pub(crate) struct Custom {
    schemas: Vec<ConversationDataSchema>,
    /// Records by (conversation, record id).
    records: HashMap<(String, String), CustomAttributes>,
    /// Bulk writes answer each record's status alone, not the record.
    pub(crate) answers_without_records: bool,
}

impl Custom {
    pub(crate) fn seeded() -> Self {
        Self {
            schemas: vec![ConversationDataSchema {
                id: SEED_SCHEMA_ID.into(),
                version: 1,
                enabled: true,
                json_schema: json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "title": SEED_SCHEMA_NAME,
                    "description": "A CRM case, for reporting",
                    "type": "object",
                    "required": ["caseNumber"],
                    "properties": {
                        "caseNumber": {"type": "string", "maxLength": 32},
                        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                        "amount": {"type": "number", "minimum": 0},
                        "vip": {"type": "boolean"},
                        "tier": {"type": "string", "enum": ["gold", "silver", "bronze"]}
                    },
                    "additionalProperties": false
                }),
                self_uri: format!(
                    "/api/v2/conversations/customattributes/schemas/{SEED_SCHEMA_ID}"
                ),
            }],
            records: HashMap::new(),
            answers_without_records: false,
        }
    }

    fn schema(&self, id: &str) -> Option<&ConversationDataSchema> {
        self.schemas.iter().find(|s| s.id == id)
    }
}

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route(
            "/api/v2/conversations/customattributes/schemas",
            get(list_schemas),
        )
        .route(
            "/api/v2/conversations/customattributes/schemas/{id}",
            get(get_schema),
        )
        .route(
            "/api/v2/conversations/{id}/customattributes",
            get(list_records).put(put_record).patch(patch_record),
        )
        .route(
            "/api/v2/conversations/{id}/customattributes/bulk",
            axum::routing::put(put_records).patch(patch_records),
        )
        .route(
            "/api/v2/conversations/{id}/customattributes/{rid}",
            get(get_record),
        )
        .route(
            "/api/v2/conversations/participants/attributes/search",
            axum::routing::post(search_participant_attributes),
        )
}

/// The fields participant attribute search takes, as integrators who used it report Genesys's
/// documentation: an attribute's value is not among them.
const SEARCHABLE: &[&str] = &["conversationId", "startTime", "endTime", "divisionId"];

/// `POST /api/v2/conversations/participants/attributes/search` (`ConversationParticipantSearchRequest`
/// → `JsonCursorSearchResponse`): criteria `EXACT` on `conversationId` and `DATE_RANGE` on
/// `startTime`; a criterion on any other field is refused (400), as Genesys refuses a search by an
/// attribute. The results carry each matching conversation's participants and their attributes,
/// which the caller filters itself.
async fn search_participant_attributes(State(sim): State<Simulator>, body: Bytes) -> Response {
    let Some(sent) = body_object(&body) else {
        return bad_request(
            "The request could not be understood by the server due to malformed syntax.",
        );
    };
    let criteria = sent
        .get("query")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut ids: Option<Vec<String>> = None;
    for c in &criteria {
        let fields: Vec<&str> = c
            .get("fields")
            .and_then(Value::as_array)
            .map(|f| f.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(field) = fields.iter().find(|f| !SEARCHABLE.contains(f)) {
            return bad_request(&format!("Search not supported for field {field}"));
        }
        if fields.contains(&"conversationId")
            && c.get("type").and_then(Value::as_str) == Some("EXACT")
        {
            let wanted = c
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            ids = Some(vec![wanted]);
        }
    }
    let s = sim.lock();
    let results: Vec<Value> = s
        .conversations
        .values()
        .filter(|c| ids.as_ref().is_none_or(|ids| ids.contains(&c.id)))
        .map(|c| {
            json!({
                "conversationId": c.id,
                "participants": c.participants.iter().map(|p| json!({"id": p.id, "attributes": p.attributes})).collect::<Vec<_>>()
            })
        })
        .collect();
    Json(json!({"results": results, "types": ["participants"]})).into_response()
}

async fn list_schemas(State(sim): State<Simulator>) -> Json<ConversationDataSchemaListing> {
    let s = sim.lock();
    Json(ConversationDataSchemaListing {
        total: s.custom.schemas.len() as i64,
        entities: s.custom.schemas.clone(),
        self_uri: "/api/v2/conversations/customattributes/schemas".into(),
    })
}

async fn get_schema(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    match sim.lock().custom.schema(&id) {
        Some(schema) => Json(schema.clone()).into_response(),
        None => not_found("The requested schema was not found."),
    }
}

async fn list_records(State(sim): State<Simulator>, Path(cid): Path<String>) -> Response {
    let cid = cid.to_lowercase();
    let s = sim.lock();
    if !s.conversations.contains_key(&cid) {
        return not_found("The requested conversation was not found.");
    }
    let results: Vec<_> = s
        .custom
        .records
        .iter()
        .filter(|((c, _), _)| *c == cid)
        .map(|(_, r)| r.clone())
        .collect();
    Json(json!({ "results": results })).into_response()
}

async fn get_record(
    State(sim): State<Simulator>,
    Path((cid, rid)): Path<(String, String)>,
) -> Response {
    match sim.lock().custom.records.get(&(cid.to_lowercase(), rid)) {
        Some(record) => Json(record.clone()).into_response(),
        None => not_found("The requested custom attributes record was not found."),
    }
}

/// Why a record's write was refused: Genesys's status and message.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn bad_request(message: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad.request",
            message: message.into(),
        }
    }

    fn not_found(message: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not.found",
            message: message.into(),
        }
    }

    fn response(&self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

/// `PUT`: creates a record (`schemaId` required) or replaces one, checking `version` if sent;
/// answers the record's id.
async fn put_record(
    State(sim): State<Simulator>,
    Path(cid): Path<String>,
    body: Bytes,
) -> Response {
    match write_record(&sim, &cid, &body, put_one) {
        Ok(record) => Json(CustomAttributesIdResponse { id: record.id }).into_response(),
        Err(refused) => refused.response(),
    }
}

/// `PATCH`: amends the fields sent (see [`patch_one`]); answers 204.
async fn patch_record(
    State(sim): State<Simulator>,
    Path(cid): Path<String>,
    body: Bytes,
) -> Response {
    match write_record(&sim, &cid, &body, patch_one) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused.response(),
    }
}

/// A single record's write: the one record `body` holds, written by `write`.
fn write_record(
    sim: &Simulator,
    cid: &str,
    body: &Bytes,
    write: WriteOne,
) -> Result<CustomAttributes, Refusal> {
    let sent = body_object(body).ok_or_else(malformed)?;
    write(&mut sim.lock(), &cid.to_lowercase(), sent)
}

/// `PUT …/customattributes/bulk`: [`put_one`] for each record sent.
async fn put_records(
    State(sim): State<Simulator>,
    Path(cid): Path<String>,
    body: Bytes,
) -> Response {
    write_records(&sim, &cid, &body, put_one)
}

/// `PATCH …/customattributes/bulk`: [`patch_one`] for each record sent.
async fn patch_records(
    State(sim): State<Simulator>,
    Path(cid): Path<String>,
    body: Bytes,
) -> Response {
    write_records(&sim, &cid, &body, patch_one)
}

/// One record's write ([`put_one`] or [`patch_one`]) to a conversation.
type WriteOne = fn(&mut SimState, &str, Map<String, Value>) -> Result<CustomAttributes, Refusal>;

/// A bulk write: each record of the list sent written by `write`, answered 200 with
/// `CustomAttributesBulkUpdateResponseMap`, each record's result by its id: its status, and the
/// record as it stands after the write, or the error's message. A conversation that does not exist
/// is a 404 for the whole list.
fn write_records(sim: &Simulator, cid: &str, body: &Bytes, write: WriteOne) -> Response {
    let Ok(Value::Array(sent)) = serde_json::from_slice::<Value>(body) else {
        return malformed().response();
    };
    let cid = cid.to_lowercase();
    let mut s = sim.lock();
    if !s.conversations.contains_key(&cid) {
        return not_found("The requested conversation was not found.");
    }
    let mut results = BTreeMap::new();
    for sent in sent {
        let Value::Object(sent) = sent else {
            return malformed().response();
        };
        let rid = match record_id(&sent) {
            Ok(rid) => rid,
            Err(refused) => return refused.response(),
        };
        let result = match write(&mut s, &cid, sent) {
            Ok(record) => CustomAttributesBulkUpdateResponse {
                attributes: (!s.custom.answers_without_records).then_some(record),
                status_code: 200,
                error_message: None,
            },
            Err(refused) => CustomAttributesBulkUpdateResponse {
                attributes: None,
                status_code: refused.status.as_u16(),
                error_message: Some(refused.message),
            },
        };
        results.insert(rid, result);
    }
    Json(CustomAttributesBulkUpdateResponseMap { results }).into_response()
}

fn malformed() -> Refusal {
    Refusal::bad_request(
        "The request could not be understood by the server due to malformed syntax.",
    )
}

/// Creates conversation `cid`'s record `sent` names (`schemaId` required) or replaces it, checking
/// `version` if sent.
fn put_one(
    s: &mut SimState,
    cid: &str,
    sent: Map<String, Value>,
) -> Result<CustomAttributes, Refusal> {
    let rid = record_id(&sent)?;
    if !s.conversations.contains_key(cid) {
        return Err(Refusal::not_found(
            "The requested conversation was not found.",
        ));
    }
    let key = (cid.to_string(), rid.clone());
    let existing = s.custom.records.get(&key).cloned();
    stale(existing.as_ref(), &sent)?;
    let schema_id = match (&existing, sent.get("schemaId").and_then(Value::as_str)) {
        (Some(r), _) => r.schema.id.clone(),
        (None, Some(id)) => id.to_string(),
        (None, None) => {
            return Err(Refusal::bad_request(
                "schemaId is required to create a record",
            ))
        }
    };
    let Some(schema) = s.custom.schema(&schema_id).cloned() else {
        return Err(Refusal::bad_request("schemaId does not name a schema"));
    };
    let values = object(&sent, "customAttributes");
    check(&schema.json_schema, &values).map_err(|why| Refusal::bad_request(&why))?;
    let now = timestamp(existing.as_ref());
    let record = CustomAttributes {
        id: rid.clone(),
        conversation_id: cid.to_string(),
        divisions: divisions(&sent),
        schema: CustomAttributesSchemaRef {
            id: schema.id.clone(),
            version: schema.version,
        },
        custom_attributes_timestamps: values.keys().map(|k| (k.clone(), now.clone())).collect(),
        custom_attributes: values,
        version: existing.as_ref().map_or(1, |r| r.version + 1),
        date_created: existing
            .as_ref()
            .map_or(now.clone(), |r| r.date_created.clone()),
        date_modified: now,
        self_uri: format!("/api/v2/conversations/{cid}/customattributes/{rid}"),
    };
    s.custom.records.insert(key, record.clone());
    Ok(record)
}

/// Amends the fields `sent` names in conversation `cid`'s record, which must exist. Divisions are
/// set to what is sent, and cleared when none are.
fn patch_one(
    s: &mut SimState,
    cid: &str,
    sent: Map<String, Value>,
) -> Result<CustomAttributes, Refusal> {
    let rid = record_id(&sent)?;
    let key = (cid.to_string(), rid);
    let Some(existing) = s.custom.records.get(&key).cloned() else {
        return Err(Refusal::not_found(
            "The requested custom attributes record was not found.",
        ));
    };
    stale(Some(&existing), &sent)?;
    let Some(schema) = s.custom.schema(&existing.schema.id).cloned() else {
        return Err(Refusal::bad_request("the record's schema is gone"));
    };
    let sent_values = object(&sent, "customAttributes");
    let mut values = existing.custom_attributes.clone();
    values.extend(sent_values.clone());
    check(&schema.json_schema, &values).map_err(|why| Refusal::bad_request(&why))?;
    let now = timestamp(Some(&existing));
    let mut record = existing;
    for k in sent_values.keys() {
        record
            .custom_attributes_timestamps
            .insert(k.clone(), now.clone());
    }
    record.custom_attributes = values;
    record.divisions = divisions(&sent);
    // The record now stands under the schema version its values were checked against.
    record.schema.version = schema.version;
    record.version += 1;
    record.date_modified = now;
    s.custom.records.insert(key, record.clone());
    Ok(record)
}

/// The record id a write names.
fn record_id(sent: &Map<String, Value>) -> Result<String, Refusal> {
    sent.get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Refusal::bad_request("id is required"))
}

fn body_object(body: &Bytes) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body).ok()? {
        Value::Object(o) => Some(o),
        _ => None,
    }
}

fn object(sent: &Map<String, Value>, field: &str) -> Map<String, Value> {
    sent.get(field)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Omitted or `[]`: no division (Genesys: "Omitting or setting to [] clears existing values").
fn divisions(sent: &Map<String, Value>) -> Vec<String> {
    sent.get("divisions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A 409 when the write names a version the record has moved past.
fn stale(existing: Option<&CustomAttributes>, sent: &Map<String, Value>) -> Result<(), Refusal> {
    let Some(sent_version) = sent.get("version").and_then(Value::as_i64) else {
        return Ok(());
    };
    let current = existing.map_or(0, |r| r.version);
    if sent_version == current {
        return Ok(());
    }
    Err(Refusal {
        status: StatusCode::CONFLICT,
        code: "conflict",
        message: "The version supplied does not match the current version of the resource.".into(),
    })
}

/// Each field's time of writing: now, and always after the record's last write, so a field written
/// again within one millisecond still shows a newer timestamp.
fn timestamp(existing: Option<&CustomAttributes>) -> String {
    let format = time::format_description::well_known::Rfc3339;
    let mut now = time::OffsetDateTime::now_utc();
    if let Some(last) = existing
        .and_then(|r| time::OffsetDateTime::parse(&r.date_modified, &format).ok())
        .filter(|last| *last >= now)
    {
        now = last + time::Duration::milliseconds(1);
    }
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now);
    now.format(&format).expect("a UTC time formats")
}

/// The record's values against its schema, as Genesys checks them.
fn check(schema: &Value, values: &Map<String, Value>) -> Result<(), String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
    let instance = Value::Object(values.clone());
    let problems: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("customAttributes{}: {e}", e.instance_path()))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn bad_request(message: &str) -> Response {
    Refusal::bad_request(message).response()
}

fn not_found(message: &str) -> Response {
    Refusal::not_found(message).response()
}

/// An org admin edits schema `id`: its JSON Schema becomes `json_schema`, under the next version.
pub(crate) fn edit_schema(custom: &mut Custom, id: &str, json_schema: Value) -> bool {
    let Some(schema) = custom.schemas.iter_mut().find(|s| s.id == id) else {
        return false;
    };
    schema.json_schema = json_schema;
    schema.version += 1;
    true
}

/// What a test reads: a record's values and divisions, by conversation and record id.
pub(crate) fn record(
    custom: &Custom,
    cid: &str,
    rid: &str,
) -> Option<(Map<String, Value>, Vec<String>, i64)> {
    custom
        .records
        .get(&(cid.to_lowercase(), rid.to_string()))
        .map(|r| (r.custom_attributes.clone(), r.divisions.clone(), r.version))
}

/// A flow's write, as another writer: amends `values` without Patchbay.
pub(crate) fn amend(
    custom: &mut Custom,
    cid: &str,
    rid: &str,
    values: BTreeMap<String, Value>,
) -> bool {
    let Some(record) = custom
        .records
        .get_mut(&(cid.to_lowercase(), rid.to_string()))
    else {
        return false;
    };
    let now = timestamp(Some(record));
    for (k, v) in values {
        record
            .custom_attributes_timestamps
            .insert(k.clone(), now.clone());
        record.custom_attributes.insert(k, v);
    }
    record.version += 1;
    record.date_modified = now;
    true
}
