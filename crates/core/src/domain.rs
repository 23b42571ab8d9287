//! Domain types parsed at the edge: ids, purposes and attribute maps that are valid by construction.

pub mod lookup;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use uuid::Uuid;

/// Why a piece of inbound data was refused. The text is safe to show to a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A Genesys Cloud ", $what, " id: always a UUID.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s.trim())
                    .map(Self)
                    .map_err(|_| DomainError(format!("{} `{}` is not a UUID", $what, s)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Genesys prints ids as lower-case hyphenated UUIDs.
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(ConversationId, "conversation id");
uuid_id!(ParticipantId, "participant id");

/// The participant purposes Genesys Cloud uses: those seen on conversations, then those analytics knows.
pub const PURPOSES: &[&str] = &[
    "customer",
    "agent",
    "user",
    "external",
    "acd",
    "ivr",
    "api",
    "botflow",
    "campaign",
    "dialer",
    "fax",
    "group",
    "inbound",
    "manual",
    "outbound",
    "station",
    "voicemail",
    "voicesurveyflow",
    "workflow",
];

/// A participant purpose from [`PURPOSES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Purpose(&'static str);

impl Purpose {
    pub fn customer() -> Self {
        Self("customer")
    }
    pub fn as_str(&self) -> &'static str {
        self.0
    }
    /// Genesys spells purposes in lower case; comparing that way tolerates a reader's other casing.
    pub fn matches(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl FromStr for Purpose {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PURPOSES
            .iter()
            .find(|p| p.eq_ignore_ascii_case(s.trim()))
            .map(|p| Self(p))
            .ok_or_else(|| {
                DomainError(format!(
                    "purpose `{s}` is not a Genesys participant purpose (one of: {})",
                    PURPOSES.join(", ")
                ))
            })
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A map of attribute names to string values, as `ParticipantAttributes` carries them: non-empty,
/// but for [`AttributeMap::none`].
///
/// Ordered so that answers, logs and merged writes are deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AttributeMap(BTreeMap<String, String>);

impl AttributeMap {
    /// Builds the map from inbound JSON: strings stay, numbers and booleans become their JSON text,
    /// and everything else is refused, naming the key.
    pub fn from_json(
        object: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, DomainError> {
        if object.is_empty() {
            return Err(DomainError("`attributes` must not be empty".into()));
        }
        let mut map = BTreeMap::new();
        for (key, value) in object {
            let value = coerce_value(key, value)?;
            map.insert(key.clone(), value);
        }
        Ok(Self(map))
    }

    /// No attribute: the participant part of a request that writes only the conversation's
    /// secure attributes, which writes no participant.
    pub fn none() -> Self {
        Self(BTreeMap::new())
    }

    /// The UTF-8 size of every key and value: what `limits.max_attributes_bytes` bounds.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// This map with `later`'s entries over it: later keys win, as when two writes are merged.
    pub fn merged(&self, later: &AttributeMap) -> AttributeMap {
        let mut map = self.0.clone();
        map.extend(later.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self(map)
    }

    /// The entries `keep` accepts, and the rest.
    pub fn partition(
        &self,
        mut keep: impl FnMut(&str, &str) -> bool,
    ) -> (AttributeMap, AttributeMap) {
        let (kept, rest) = self
            .0
            .iter()
            .partition::<BTreeMap<_, _>, _>(|(k, v)| keep(k, v));
        let owned = |m: BTreeMap<&String, &String>| {
            Self(m.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        };
        (owned(kept), owned(rest))
    }
}

/// Coerces one attribute value to the string Genesys stores.
pub fn coerce_value(key: &str, value: &serde_json::Value) -> Result<String, DomainError> {
    use serde_json::Value;
    if key.trim().is_empty() {
        return Err(DomainError("attribute names must not be empty".into()));
    }
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err(DomainError(format!(
            "attribute `{key}` is null; values must be strings, numbers or booleans"
        ))),
        Value::Array(_) | Value::Object(_) => Err(DomainError(format!(
            "attribute `{key}` is not a scalar; values must be strings, numbers or booleans"
        ))),
    }
}

/// Values for a conversation's secure attributes: personal data (a date of birth, an account
/// number, a verification answer) that only secure flows read. Each value is a secret: `Debug`
/// shows the keys alone, nothing serializes it, and it is compared in memory only. Values are
/// coerced as participant attributes' are.
#[derive(Clone)]
pub struct SecureValues(BTreeMap<String, SecretString>);

impl SecureValues {
    /// From inbound JSON; a refusal names the key, never the value.
    pub fn from_json(
        object: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, DomainError> {
        if object.is_empty() {
            return Err(DomainError("`secureAttributes` must not be empty".into()));
        }
        let mut map = BTreeMap::new();
        for (key, value) in object {
            map.insert(key.clone(), SecretString::from(coerce_value(key, value)?));
        }
        Ok(Self(map))
    }

    /// The keys, in order, owned: what answers, journals and jobs name instead of the values.
    pub fn key_names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The UTF-8 size of every key and value.
    pub fn byte_len(&self) -> usize {
        self.0
            .iter()
            .map(|(k, v)| k.len() + v.expose_secret().len())
            .sum()
    }

    /// Each key and its value, for the one place that sends them: the PATCH's body.
    pub fn expose(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.expose_secret()))
    }

    /// The keys whose value `seen` lacks or holds differently; compared in memory.
    pub fn differing(&self, seen: &BTreeMap<String, SecretString>) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| {
                seen.get(*k)
                    .is_none_or(|s| s.expose_secret() != v.expose_secret())
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Only the keys `keep` accepts; `None` when none is left.
    pub fn retain(mut self, mut keep: impl FnMut(&str) -> bool) -> Option<Self> {
        self.0.retain(|k, _| keep(k));
        (!self.0.is_empty()).then_some(self)
    }

    /// Adds `later`'s values, which win where both have a key.
    pub fn extend(&mut self, later: Self) {
        self.0.extend(later.0);
    }
}

impl fmt::Debug for SecureValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Which participant of a conversation an update is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A participant the caller named.
    Participant(ParticipantId),
    /// The participant with this purpose, resolved against the live conversation.
    Purpose(Purpose),
}

/// One validated request to set attributes on a participant.
#[derive(Debug, Clone)]
pub struct AttributeUpdate {
    pub conversation_id: ConversationId,
    pub target: Target,
    pub attributes: AttributeMap,
    /// `None` means "as configured".
    pub verify: Option<bool>,
}

/// Where an update goes: a conversation the caller named, or one to find first.
#[derive(Debug, Clone)]
pub enum Address {
    Conversation(ConversationId),
    Lookup(lookup::Lookup),
}

/// A validated request whose conversation may still have to be found.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    pub address: Address,
    /// `None`: the address's default participant (the customer, or the agent for a user id).
    pub target: Option<Target>,
    pub attributes: AttributeMap,
    pub verify: Option<bool>,
}

impl UpdateRequest {
    /// The update for `conversation_id`, the conversation the address names or was found to mean.
    pub fn into_update(self, conversation_id: ConversationId) -> AttributeUpdate {
        let target = self.target.unwrap_or_else(|| match &self.address {
            Address::Lookup(lookup) => Target::Purpose(lookup.key.default_purpose()),
            Address::Conversation(_) => Target::Purpose(Purpose::customer()),
        });
        AttributeUpdate {
            conversation_id,
            target,
            attributes: self.attributes,
            verify: self.verify,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn secure_values_show_their_keys_and_never_their_values_and_compare_in_memory() {
        let values = SecureValues::from_json(
            json!({"dob": "1970-07-04", "account": 88172635})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let shown = format!("{values:?}");
        assert_eq!(shown, r#"{"account", "dob"}"#);
        let seen: BTreeMap<String, SecretString> = [("dob", "1970-07-04"), ("account", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v)))
            .collect();
        assert_eq!(values.differing(&seen), ["account"]);
        // A refused value is named by its key alone.
        let e = SecureValues::from_json(json!({"dob": ["1970-07-04"]}).as_object().unwrap())
            .err()
            .unwrap();
        assert!(e.0.contains("dob") && !e.0.contains("1970"), "{}", e.0);
    }

    #[test]
    fn numbers_and_booleans_become_their_json_text() {
        let map = AttributeMap::from_json(
            json!({"a": 42, "b": true, "c": "x", "d": 1.5, "e": -7})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let got: Vec<_> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("a", "42"),
                ("b", "true"),
                ("c", "x"),
                ("d", "1.5"),
                ("e", "-7")
            ]
        );
    }

    #[test]
    fn null_arrays_objects_empty_keys_and_empty_maps_are_refused() {
        for bad in [
            json!({"a": null}),
            json!({"a": [1]}),
            json!({"a": {"b": 1}}),
            json!({"": "x"}),
            json!({"  ": "x"}),
            json!({}),
        ] {
            assert!(
                AttributeMap::from_json(bad.as_object().unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn purposes_parse_case_insensitively_and_unknown_ones_are_refused() {
        assert_eq!(Purpose::from_str("Agent").unwrap().as_str(), "agent");
        let err = Purpose::from_str("supervisor").unwrap_err();
        assert!(err.0.contains("customer"));
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(ConversationId::from_str("not-a-uuid").is_err());
        let id = ConversationId::from_str("3F2504E0-4F89-11D3-9A0C-0305E82C3301").unwrap();
        assert_eq!(id.to_string(), "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
    }

    proptest! {
        #[test]
        fn any_scalar_map_coerces_and_counts_its_bytes(
            entries in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_.]{0,20}", prop_oneof![
                any::<String>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
            ], 1..10)
        ) {
            let object: serde_json::Map<_, _> = entries.clone().into_iter().collect();
            let map = AttributeMap::from_json(&object).unwrap();
            prop_assert_eq!(map.len(), entries.len());
            for (k, v) in &entries {
                let expected = match v { serde_json::Value::String(s) => s.clone(), other => other.to_string() };
                prop_assert_eq!(map.as_map().get(k), Some(&expected));
            }
            let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
            prop_assert_eq!(map.byte_len(), bytes);
        }

        #[test]
        fn id_parsing_never_panics_and_round_trips(s in ".*") {
            if let Ok(id) = ConversationId::from_str(&s) {
                prop_assert_eq!(ConversationId::from_str(&id.to_string()).unwrap(), id);
            }
        }
    }
}
