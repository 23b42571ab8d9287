//! Maps any JSON event to an attribute update with JSON Pointers (RFC 6901), checked at start-up.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::Value;

use super::settings::{AttributeSource, HookLookupSettings, HookSettings};
use crate::api::request::Parsed;
use crate::custom::CustomValues;
use crate::domain::lookup::{KeyKind, Lookup, LookupKey, MediaType, Pick};
use crate::domain::{
    coerce_value, Address, AttributeMap, ConversationId, DomainError, ParticipantId, Purpose,
    SecureValues, Target, UpdateRequest,
};

/// A pointer that is valid RFC 6901 syntax and addresses something inside the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer(String);

impl Pointer {
    pub fn parse(what: &str, text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "{what} `{text}` is not a JSON Pointer: it must start with `/`"
            ));
        }
        // `~` may only escape `0` or `1` (RFC 6901 section 3).
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "{what} `{text}` has a `~` that is not `~0` or `~1`"
                ));
            }
        }
        Ok(Self(text.to_string()))
    }

    /// The value found, treating JSON `null` as nothing found.
    pub fn find<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        doc.pointer(&self.0).filter(|v| !v.is_null())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
enum PurposeSource {
    Fixed(Purpose),
    Pointer(Pointer),
}

#[derive(Debug, Clone)]
enum ValueSource {
    Pointer { pointer: Pointer, optional: bool },
    Constant(String),
}

/// A route's mapping, compiled once and valid by construction.
#[derive(Debug, Clone)]
pub struct Mapping {
    conversation_id: Option<Pointer>,
    lookup: Option<LookupMapping>,
    participant_id: Option<Pointer>,
    purpose: Option<PurposeSource>,
    attributes: BTreeMap<String, ValueSource>,
    attributes_from: Option<Pointer>,
    secure_attributes: BTreeMap<String, ValueSource>,
    /// The custom-attributes schema, and its fields' sources.
    custom: Option<(String, BTreeMap<String, ValueSource>)>,
    verify: Option<bool>,
}

/// Where a lookup's key comes from: one pointer, and the fixed rest.
#[derive(Debug, Clone)]
struct LookupMapping {
    kind: KeyKind,
    pointer: Pointer,
    media_type: MediaType,
    pick: Pick,
}

impl LookupMapping {
    fn compile(s: &HookLookupSettings) -> Result<Self, String> {
        let (kind, pointer) = KeyKind::exactly_one(
            s.user_id.as_deref(),
            s.ani.as_deref(),
            s.external_contact_id.as_deref(),
        )
        .ok_or("lookup needs exactly one of user_id, ani and external_contact_id")?;
        let (media_type, pick) = Lookup::options(s.media_type.as_deref(), s.pick.as_deref())
            .map_err(|e| format!("lookup: {e}"))?;
        Ok(Self {
            kind,
            pointer: Pointer::parse(&format!("lookup.{}", kind.name()), pointer)?,
            media_type,
            pick,
        })
    }

    /// The lookup for `key`, with the route's fixed parts.
    fn with(&self, key: LookupKey) -> Lookup {
        Lookup {
            key,
            media_type: self.media_type,
            pick: self.pick,
        }
    }
}

/// A mapping that does not fit the event, in words safe for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

impl From<DomainError> for MappingError {
    fn from(e: DomainError) -> Self {
        MappingError(e.0)
    }
}

impl Mapping {
    /// Each field the route fills and where from, as an operator reads it: JSON Pointers and
    /// fixed values.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        let mut row = |field: &str, source: String| rows.push((field.to_string(), source));
        if let Some(p) = &self.conversation_id {
            row("conversationId", p.as_str().to_string());
        }
        if let Some(l) = &self.lookup {
            row(
                &format!("lookup.{}", l.kind.name()),
                format!(
                    "{} (mediaType {}, pick {})",
                    l.pointer.as_str(),
                    l.media_type.as_str(),
                    l.pick.as_str()
                ),
            );
        }
        if let Some(p) = &self.participant_id {
            row("participantId", p.as_str().to_string());
        }
        match &self.purpose {
            Some(PurposeSource::Fixed(p)) => row("purpose", format!("= {p}")),
            Some(PurposeSource::Pointer(p)) => row("purpose", p.as_str().to_string()),
            None => {}
        }
        let described = |source: &ValueSource| match source {
            ValueSource::Pointer { pointer, optional } => {
                let optional = if *optional { " (optional)" } else { "" };
                format!("{}{optional}", pointer.as_str())
            }
            ValueSource::Constant(v) => format!("= {v}"),
        };
        for (name, source) in &self.attributes {
            row(&format!("attributes.{name}"), described(source));
        }
        if let Some(p) = &self.attributes_from {
            row("attributes (every entry of)", p.as_str().to_string());
        }
        for (name, source) in &self.secure_attributes {
            row(&format!("secure_attributes.{name}"), described(source));
        }
        if let Some((schema, fields)) = &self.custom {
            row("custom_schema", format!("= {schema}"));
            for (name, source) in fields {
                row(&format!("custom_attributes.{name}"), described(source));
            }
        }
        if let Some(v) = self.verify {
            row("verify", format!("= {v}"));
        }
        rows
    }

    /// Checks a route's settings; the error says what is wrong (the caller adds the route's name).
    pub fn compile(s: &HookSettings) -> Result<Self, String> {
        let conversation_id = s
            .conversation_id
            .as_deref()
            .map(|p| Pointer::parse("conversation_id", p))
            .transpose()?;
        let lookup = s.lookup.as_ref().map(LookupMapping::compile).transpose()?;
        if conversation_id.is_none() && lookup.is_none() {
            return Err("conversation_id (or a lookup table) is required".into());
        }
        let participant_id = s
            .participant_id
            .as_deref()
            .map(|p| Pointer::parse("participant_id", p))
            .transpose()?;
        let purpose = match s.purpose.as_deref() {
            None => None,
            Some(p) if p.starts_with('/') => {
                Some(PurposeSource::Pointer(Pointer::parse("purpose", p)?))
            }
            Some(p) => Some(PurposeSource::Fixed(Purpose::from_str(p).map_err(|e| e.0)?)),
        };
        let attributes_from = s
            .attributes_from
            .as_deref()
            .map(|p| Pointer::parse("attributes_from", p))
            .transpose()?;
        if s.attributes.is_empty()
            && attributes_from.is_none()
            && s.secure_attributes.is_empty()
            && s.custom_attributes.is_empty()
        {
            return Err(
                "the attributes table is empty (and there is no attributes_from, secure_attributes or custom_attributes)"
                    .into(),
            );
        }
        let attributes = compile_sources(&s.attributes, "attribute")?;
        let secure_attributes = compile_sources(&s.secure_attributes, "secure attribute")?;
        let custom = match (
            s.custom_schema.as_deref().map(str::trim),
            s.custom_attributes.is_empty(),
        ) {
            (None, true) => None,
            (Some(schema), false) if !schema.is_empty() => Some((
                schema.to_string(),
                compile_sources(&s.custom_attributes, "custom attribute")?,
            )),
            (_, false) => {
                return Err("custom_attributes need custom_schema: the schema's id or name".into())
            }
            (Some(_), true) => return Err("custom_schema needs a custom_attributes table".into()),
        };
        Ok(Self {
            conversation_id,
            lookup,
            participant_id,
            purpose,
            attributes,
            attributes_from,
            secure_attributes,
            custom,
            verify: s.verify,
        })
    }

    /// Builds the request an event asks for, with the conversation's secure attributes and custom
    /// attributes it carries.
    pub fn apply(&self, event: &Value) -> Result<Parsed, MappingError> {
        let named = match &self.conversation_id {
            Some(p) => optional_text(p, event)?,
            None => None,
        };
        let address = match (named, &self.lookup, &self.conversation_id) {
            (Some(cid), _, _) => Address::Conversation(ConversationId::from_str(&cid)?),
            (None, Some(lookup), _) => {
                let value = required_text(&lookup.pointer, event)?;
                let key = lookup
                    .kind
                    .key(&value)
                    .map_err(|e| MappingError(format!("{e} (at `{}`)", lookup.pointer.as_str())))?;
                Address::Lookup(lookup.with(key))
            }
            (None, None, Some(p)) => {
                return Err(MappingError(format!("nothing found at `{}`", p.as_str())))
            }
            (None, None, None) => unreachable!("compile requires an address"),
        };
        let participant = match &self.participant_id {
            Some(p) => optional_text(p, event)?,
            None => None,
        };
        let target = match participant {
            Some(pid) => Some(Target::Participant(ParticipantId::from_str(&pid)?)),
            None => match &self.purpose {
                None => None,
                Some(PurposeSource::Fixed(p)) => Some(Target::Purpose(p.clone())),
                Some(PurposeSource::Pointer(p)) => optional_text(p, event)?
                    .map(|text| Purpose::from_str(&text).map(Target::Purpose))
                    .transpose()?,
            },
        };

        let mut object = serde_json::Map::new();
        if let Some(from) = &self.attributes_from {
            let found = from.find(event).ok_or_else(|| {
                MappingError(format!(
                    "nothing found at `{}` (attributes_from)",
                    from.as_str()
                ))
            })?;
            let entries = found.as_object().ok_or_else(|| {
                MappingError(format!("the value at `{}` is not an object", from.as_str()))
            })?;
            object.extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        collect(&self.attributes, event, &mut object, false)?;
        let attributes = if object.is_empty() && self.attributes_from.is_none() {
            // A route of secure attributes alone writes no participant.
            AttributeMap::none()
        } else {
            AttributeMap::from_json(&object)?
        };
        let mut secure = serde_json::Map::new();
        collect(&self.secure_attributes, event, &mut secure, false)?;
        let mut custom = None;
        if let Some((schema, fields)) = &self.custom {
            let mut values = serde_json::Map::new();
            collect(fields, event, &mut values, true)?;
            if !values.is_empty() {
                custom = Some(CustomValues::new(schema, &values)?);
            }
        }
        if secure.is_empty() && custom.is_none() && attributes.is_empty() {
            return Err(MappingError(
                "the event carries no attribute to write".into(),
            ));
        }
        let secure = match secure.is_empty() {
            true => None,
            false => Some(SecureValues::from_json(&secure)?),
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
}

/// Each named source's value in `event`, coerced, into `object`. An error names the pointer and the
/// attribute, never the value found.
/// Each source's value from `event` into `object`: as text (attributes), or, with `typed`, as the
/// JSON value found (custom attributes, which their schema checks).
fn collect(
    sources: &BTreeMap<String, ValueSource>,
    event: &Value,
    object: &mut serde_json::Map<String, Value>,
    typed: bool,
) -> Result<(), MappingError> {
    for (name, source) in sources {
        match source {
            ValueSource::Constant(v) => {
                object.insert(name.clone(), Value::String(v.clone()));
            }
            ValueSource::Pointer { pointer, optional } => match pointer.find(event) {
                Some(value) if typed => {
                    object.insert(name.clone(), value.clone());
                }
                Some(value) => {
                    // Coerced here so an error can name the pointer, not just the attribute.
                    let text = coerce_value(name, value).map_err(|e| {
                        MappingError(format!("{} (at `{}`)", e.0, pointer.as_str()))
                    })?;
                    object.insert(name.clone(), Value::String(text));
                }
                None if *optional => {}
                None => {
                    return Err(MappingError(format!(
                        "nothing found at `{}` (attribute `{name}`)",
                        pointer.as_str()
                    )))
                }
            },
        }
    }
    Ok(())
}

/// A table of name → source, checked: `what` names its entries in errors.
fn compile_sources(
    table: &BTreeMap<String, AttributeSource>,
    what: &str,
) -> Result<BTreeMap<String, ValueSource>, String> {
    let mut compiled = BTreeMap::new();
    for (name, source) in table {
        if name.trim().is_empty() {
            return Err(format!("an {what} name is empty"));
        }
        let what = format!("{what} `{name}`");
        let value = match source {
            AttributeSource::Pointer(p) => ValueSource::Pointer {
                pointer: Pointer::parse(&what, p)?,
                optional: false,
            },
            AttributeSource::Table(t) => match (&t.pointer, &t.value) {
                (Some(p), None) => ValueSource::Pointer {
                    pointer: Pointer::parse(&what, p)?,
                    optional: t.optional,
                },
                (None, Some(v)) => ValueSource::Constant(v.clone()),
                _ => return Err(format!("{what} needs exactly one of `pointer` or `value`")),
            },
        };
        // TOML already refuses a repeated key; this catches the same name reached twice by other layers.
        if compiled.insert(name.clone(), value).is_some() {
            return Err(format!("{what} is defined twice"));
        }
    }
    Ok(compiled)
}

impl Mapping {
    /// The JSON Schema of the events this route takes, from its own pointers: every pointer the
    /// mapping needs is a required path to a value of the kind it must find there, every optional
    /// one an optional path. The OpenAPI document serves it for the route, so a sender (or a
    /// fuzzer) reads what the mapping will refuse.
    pub fn body_schema(&self) -> Value {
        // The request body's own schemas, so a route and `POST /v1/attributes` say the same.
        use crate::api::request;
        let lookup = json(<request::LookupRequest as utoipa::PartialSchema>::schema());
        let kind_of = |field: &str| {
            let mut schema = lookup["properties"][field].clone();
            if let Some(o) = schema.as_object_mut() {
                o.retain(|k, _| k == "type" || k == "pattern");
            }
            schema
        };
        let mut root = serde_json::json!({"type": "object"});
        let uuid = kind_of("userId");
        let scalar = json(request::scalar_schema());
        if let Some(p) = &self.conversation_id {
            place(&mut root, p, uuid.clone(), true);
        }
        if let Some(l) = &self.lookup {
            let key = match l.kind {
                KeyKind::Ani => kind_of("ani"),
                KeyKind::UserId | KeyKind::ExternalContactId => uuid.clone(),
            };
            // With a conversation id to go by, the lookup is the fallback and its key optional.
            place(&mut root, &l.pointer, key, self.conversation_id.is_none());
        }
        if let Some(p) = &self.participant_id {
            place(&mut root, p, uuid, false);
        }
        if let Some(PurposeSource::Pointer(p)) = &self.purpose {
            place(&mut root, p, json(request::purpose_schema()), false);
        }
        if let Some(from) = &self.attributes_from {
            let mut object = request::attribute_map_schema();
            if self.attributes.is_empty() {
                object = object.min_properties(Some(1));
            }
            place(&mut root, from, json(object.build()), true);
        }
        for source in self
            .attributes
            .values()
            .chain(self.secure_attributes.values())
            .chain(self.custom.iter().flat_map(|(_, fields)| fields.values()))
        {
            if let ValueSource::Pointer { pointer, optional } = source {
                place(&mut root, pointer, scalar.clone(), !optional);
            }
        }
        root
    }
}

/// A schema as the JSON the document carries.
fn json(schema: impl serde::Serialize) -> Value {
    serde_json::to_value(schema).expect("schemas serialize")
}

/// Puts `leaf` at `pointer` in the object schema `root`, the objects on the way made as needed, and
/// each step required when `required`.
fn place(root: &mut Value, pointer: &Pointer, leaf: Value, required: bool) {
    let tokens: Vec<String> = pointer
        .as_str()
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut node = root;
    for (i, token) in tokens.iter().enumerate() {
        if required {
            let list = node["required"].as_array_mut();
            match list {
                Some(list) if list.iter().any(|r| r == token.as_str()) => {}
                Some(list) => list.push(token.as_str().into()),
                None => node["required"] = serde_json::json!([token]),
            }
        }
        if !node["properties"].is_object() {
            node["properties"] = serde_json::json!({});
        }
        let last = i + 1 == tokens.len();
        let child = &mut node["properties"][token.as_str()];
        if last {
            *child = leaf.clone();
        } else if !child.is_object() || child.get("type") != Some(&Value::from("object")) {
            *child = serde_json::json!({"type": "object"});
        }
        node = child;
    }
}

/// The text at `pointer`; numbers are accepted as their JSON text (some senders send ids as numbers).
fn optional_text(pointer: &Pointer, event: &Value) -> Result<Option<String>, MappingError> {
    match pointer.find(event) {
        None => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(MappingError(format!(
            "the value at `{}` is not a string",
            pointer.as_str()
        ))),
    }
}

fn required_text(pointer: &Pointer, event: &Value) -> Result<String, MappingError> {
    optional_text(pointer, event)?
        .ok_or_else(|| MappingError(format!("nothing found at `{}`", pointer.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const CID: &str = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a01";

    /// A route's settings from the body of its `[hooks.<name>]` table, read as start-up reads it.
    fn settings(toml: &str) -> HookSettings {
        let table: Vec<String> = toml
            .lines()
            .map(|line| match line.trim_start().strip_prefix('[') {
                Some(rest) => format!("[hooks.test.{rest}"),
                None => line.to_string(),
            })
            .collect();
        crate::config::hooks::hooks_from_toml(&format!("[hooks.test]\n{}", table.join("\n")))
            .unwrap()
            .remove("test")
            .unwrap()
    }

    fn mapping() -> Mapping {
        Mapping::compile(&settings(
            r#"
            conversation_id = "/ticket/conversation"
            participant_id = "/ticket/participant"
            purpose = "/ticket/who"
            [attributes]
            ticketId = "/ticket/id"
            priority = { pointer = "/ticket/priority", optional = true }
            source = { value = "zendesk" }
            "a/b" = "/ticket/odd~1key"
            "#,
        ))
        .unwrap()
    }

    #[test]
    fn pointers_constants_and_optional_values_map_to_an_update() {
        let u = mapping()
            .apply(&json!({"ticket": {"conversation": CID, "id": 981, "who": "agent", "odd/key": true}}))
            .unwrap()
            .update;
        assert!(matches!(u.address, Address::Conversation(c) if c.to_string() == CID));
        assert_eq!(
            u.target,
            Some(Target::Purpose(Purpose::from_str("agent").unwrap()))
        );
        let attrs: Vec<_> = u
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attrs,
            vec![("a/b", "true"), ("source", "zendesk"), ("ticketId", "981")]
        );
    }

    #[test]
    fn a_required_pointer_that_finds_nothing_names_the_pointer() {
        let e = mapping()
            .apply(&json!({"ticket": {"conversation": CID, "odd/key": 1}}))
            .unwrap_err();
        assert!(e.0.contains("/ticket/id"), "{e}");
        let e = mapping().apply(&json!({"ticket": {"id": 1}})).unwrap_err();
        assert!(e.0.contains("/ticket/conversation"), "{e}");
    }

    #[test]
    fn a_bad_value_at_a_pointer_names_it() {
        let e = mapping()
            .apply(&json!({"ticket": {"conversation": CID, "id": {"x": 1}, "odd/key": 1}}))
            .unwrap_err();
        assert!(e.0.contains("/ticket/id"), "{e}");
    }

    #[test]
    fn a_lookup_pointer_addresses_the_update_when_the_event_has_no_conversation_id() {
        let m = Mapping::compile(&settings(
            "conversation_id = \"/cid\"\n[lookup]\nani = \"/caller/phone\"\npick = \"latest\"\n[attributes]\na = \"/a\"",
        ))
        .unwrap();
        let u = m
            .apply(&json!({"caller": {"phone": "+1 317 555 0123"}, "a": 1}))
            .unwrap()
            .update;
        match u.address {
            Address::Lookup(l) => {
                assert_eq!(l.key.to_string(), "ani …0123");
                assert_eq!(l.pick, crate::domain::lookup::Pick::Latest);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(u.target, None, "the lookup's default participant");
        // The id wins when the event carries one.
        let u = m.apply(&json!({"cid": CID, "a": 1})).unwrap().update;
        assert!(matches!(u.address, Address::Conversation(_)));
        // A number that is not one names its pointer.
        let e = m
            .apply(&json!({"caller": {"phone": "ask Bob"}, "a": 1}))
            .unwrap_err();
        assert!(e.0.contains("/caller/phone"), "{e}");
    }

    #[test]
    fn mistakes_in_a_mapping_are_refused_at_compile_time() {
        for (bad, why) in [
            (
                "conversation_id = \"ticket/id\"\n[attributes]\na = \"/a\"",
                "start with `/`",
            ),
            (
                "conversation_id = \"/c\"\n[attributes]\na = \"a\"",
                "start with `/`",
            ),
            ("conversation_id = \"/c\"\n[attributes]\n", "empty"),
            (
                "conversation_id = \"/c\"\npurpose = \"boss\"\n[attributes]\na = \"/a\"",
                "purpose",
            ),
            (
                "conversation_id = \"/c\"\n[attributes]\na = { value = \"x\", pointer = \"/a\" }",
                "exactly one",
            ),
            ("conversation_id = \"/c~2\"\n[attributes]\na = \"/a\"", "~"),
            ("[attributes]\na = \"/a\"", "conversation_id (or a lookup"),
            (
                "[lookup]\nani = \"/a\"\nuser_id = \"/u\"\n[attributes]\na = \"/a\"",
                "exactly one",
            ),
            (
                "[lookup]\nani = \"/a\"\nmedia_type = \"fax\"\n[attributes]\na = \"/a\"",
                "mediaType",
            ),
        ] {
            let e = Mapping::compile(&settings(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn mapping_any_json_never_panics(s in "\\PC{0,64}", n in any::<i64>(), b in any::<bool>()) {
            let m = mapping();
            for event in [json!({"ticket": {"conversation": s.clone(), "id": n, "odd/key": b}}), json!(s.clone()), json!([n]), json!({"ticket": s})] {
                let _ = m.apply(&event);
            }
        }
    }
}
