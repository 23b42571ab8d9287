//! Reading a caller's JSON strictly: a field the contract does not name is refused with the
//! nearest one it does, and every error is said in the caller's terms, never in serde's or Rust's.
//!
//! Why strict: every field of a request is optional but `attributes`, so a misspelled `purpose`
//! would otherwise be dropped in silence and the default participant written to: a wrong success.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::problem::ApiError;

/// What a JSON object must look like: its fields, and the objects nested under some of them.
pub struct Shape {
    /// The object, in a caller's words, completing "… must be": "a JSON object with …".
    pub what: &'static str,
    /// Every field the object may carry, spelled as on the wire.
    pub fields: &'static [&'static str],
    /// Fields whose value, when present and not null, is an object of its own shape.
    pub nested: Vec<(&'static str, &'static Shape)>,
}

impl Shape {
    /// The shape of `T` as its derived `Deserialize` reads it: the fields are serde's own wire
    /// names, so the check, the parser and the OpenAPI document (derived from the same struct)
    /// cannot disagree.
    pub fn of<T: DeserializeOwned>(
        what: &'static str,
        nested: Vec<(&'static str, &'static Shape)>,
    ) -> Self {
        Self {
            what,
            fields: serde_fields::<T>(),
            nested,
        }
    }
}

/// The field names a derived `Deserialize` asks for. Serde passes them to `deserialize_struct`;
/// this deserializer keeps them and stops. No crate exposes them: serde's derive keeps its `FIELDS`
/// constant private.
fn serde_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Fields(Option<&'static [&'static str]>);
    impl<'de> de::Deserializer<'de> for &mut Fields {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0.expect("a struct with named fields")
}

/// How alike two field names must be (Jaro–Winkler, case-insensitive) for one to be suggested for
/// the other: close enough for a dropped, doubled or swapped letter, far enough for unrelated words.
const SUGGESTION_SIMILARITY: f64 = 0.8;

/// The known field most like `unknown`, if any is close.
fn nearest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let unknown = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (k, strsim::jaro_winkler(&unknown, &k.to_ascii_lowercase())))
        .filter(|(_, score)| *score >= SUGGESTION_SIMILARITY)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| *k)
}

/// "unknown field `x`; did you mean `y`?", or the list of known ones when none is close. `noun` is
/// what the caller sent: a body's `field` or a query's `parameter`.
pub fn unknown(noun: &str, field: &str, within: Option<&str>, known: &[&str]) -> ApiError {
    let place = within.map(|w| format!(" in `{w}`")).unwrap_or_default();
    let hint = match nearest(field, known) {
        Some(k) => format!("did you mean `{k}`?"),
        None => format!(
            "the known {noun}s are {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    ApiError::InvalidRequest(format!("unknown {noun} `{field}`{place}; {hint}"))
}

fn check(object: &Map<String, Value>, shape: &Shape, within: Option<&str>) -> Result<(), ApiError> {
    // Object keys are sorted (serde_json's map), so the first unknown one named is stable.
    if let Some(field) = object.keys().find(|k| !shape.fields.contains(&k.as_str())) {
        return Err(unknown("field", field, within, shape.fields));
    }
    for (name, inner) in &shape.nested {
        match object.get(*name) {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) => check(o, inner, Some(name))?,
            Some(_) => {
                return Err(ApiError::InvalidRequest(format!(
                    "`{name}` must be {}",
                    inner.what
                )))
            }
        }
    }
    Ok(())
}

/// Parses `bytes` as a `T` of the given shape: JSON first, then the fields, then their types.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], shape: &Shape) -> Result<T, ApiError> {
    let value = json(bytes)?;
    let Value::Object(object) = &value else {
        return Err(ApiError::InvalidRequest(format!(
            "the body must be {}",
            shape.what
        )));
    };
    check(object, shape, None)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::InvalidRequest(format!("the body is not valid: {inner}"))
        } else {
            ApiError::InvalidRequest(format!("`{path}` is not valid: {inner}"))
        }
    })
}

/// Any JSON value, or `invalid_request` saying where the text stops being JSON.
pub fn json(bytes: &[u8]) -> Result<Value, ApiError> {
    // serde_json's syntax errors name a line and column and nothing of our types.
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    static INNER: Shape = Shape {
        what: "an object with `x`",
        fields: &["x"],
        nested: Vec::new(),
    };
    static OUTER: std::sync::LazyLock<Shape> = std::sync::LazyLock::new(|| Shape {
        what: "a JSON object with `purpose` and `inner`",
        fields: &["purpose", "conversationId", "inner"],
        nested: vec![("inner", &INNER)],
    });

    #[test]
    fn a_shape_names_the_fields_serde_reads_as_they_are_spelled_on_the_wire() {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            conversation_id: String,
            #[serde(rename = "type")]
            kind: u8,
        }
        assert_eq!(serde_fields::<Wire>(), ["conversationId", "type"]);
        let read: Wire = serde_json::from_str(r#"{"conversationId": "c", "type": 1}"#).unwrap();
        assert_eq!((read.conversation_id.as_str(), read.kind), ("c", 1));
    }

    fn detail(bytes: &str) -> String {
        match parse::<Value>(bytes.as_bytes(), &OUTER) {
            Err(ApiError::InvalidRequest(d)) => d,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_misspelled_field_is_named_with_the_nearest_known_one() {
        assert_eq!(
            detail(r#"{"purpse": "agent"}"#),
            "unknown field `purpse`; did you mean `purpose`?"
        );
        assert_eq!(
            detail(r#"{"conversationid": "c"}"#),
            "unknown field `conversationid`; did you mean `conversationId`?"
        );
        assert_eq!(
            detail(r#"{"inner": {"y": 1}}"#),
            "unknown field `y` in `inner`; the known fields are `x`"
        );
    }

    #[test]
    fn an_unrelated_field_lists_the_known_ones() {
        assert_eq!(
            detail(r#"{"zebra": 1}"#),
            "unknown field `zebra`; the known fields are `purpose`, `conversationId`, `inner`"
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_says_what_it_must_be() {
        for body in ["[]", "3", "\"x\"", "null"] {
            assert_eq!(
                detail(body),
                "the body must be a JSON object with `purpose` and `inner`"
            );
        }
        assert_eq!(
            detail(r#"{"inner": []}"#),
            "`inner` must be an object with `x`"
        );
        assert!(detail("{").starts_with("the body is not valid JSON: "));
    }

    proptest! {
        #[test]
        fn a_suggestion_is_always_a_known_field(field in "[a-zA-Z]{1,20}") {
            if let Some(k) = nearest(&field, OUTER.fields) {
                prop_assert!(OUTER.fields.contains(&k));
            }
        }
    }
}
