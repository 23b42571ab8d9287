//! Finding a live conversation from what a sender knows instead of its id: the agent's user id, the
//! caller's number, or the external contact. Valid by construction, like the rest of the domain.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::{DomainError, Purpose};

/// A phone number in E.164: `+` and 8 to 15 digits, the country code first. (E.164 allows 7 digits
/// for a few small countries; they are refused, because a 7-digit local number without its country
/// code, `555-0123`, is the far likelier mistake.) Shown masked, in
/// `Display` and `Debug` alike, so no log holds a caller's whole number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl PhoneNumber {
    /// `+13175550123`.
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// Every form Genesys may hold the number in: `tel:+13175550123`, `+13175550123` and the bare
    /// digits `13175550123`.
    pub fn forms(&self) -> [String; 3] {
        [
            format!("tel:{}", self.0),
            self.0.clone(),
            self.0[1..].to_string(),
        ]
    }

    /// All but the last four digits masked, for logs and answers: `…0123`.
    pub fn masked(&self) -> String {
        format!("…{}", &self.0[self.0.len() - 4..])
    }
}

impl FromStr for PhoneNumber {
    type Err = DomainError;

    /// Accepts a number with its country code, as `+13175550123`, `13175550123`, `tel:+13175550123`
    /// or with spaces, dashes, dots and parentheses between the digits (`+1 (317) 555-0123`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            DomainError(
                "`ani` must be a phone number with its country code, such as +13175550123".into(),
            )
        };
        let trimmed = s.trim();
        let rest = trimmed
            .strip_prefix("tel:")
            .or_else(|| trimmed.strip_prefix("TEL:"))
            .unwrap_or(trimmed)
            .trim_start();
        let rest = rest.strip_prefix('+').unwrap_or(rest);
        let mut digits = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(invalid()),
            }
        }
        // E.164: at most 15 digits, and no country code starts with 0.
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(invalid());
        }
        Ok(Self(format!("+{digits}")))
    }
}

impl fmt::Display for PhoneNumber {
    /// Masked: a number is personal data, and this is what logs and answers show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// What a lookup searches by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LookupKey {
    /// The agent (a Genesys user) on the call.
    UserId(Uuid),
    /// The number the customer called from.
    Ani(PhoneNumber),
    /// The Genesys external contact on the call.
    ExternalContactId(Uuid),
}

/// Which of the three keys a lookup searches by, before its value is read: what a request's
/// `lookup` or a webhook route's `[lookup]` table names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    UserId,
    Ani,
    ExternalContactId,
}

impl KeyKind {
    /// Its name in a request's `lookup`, which is also the analytics segment dimension that holds it.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::UserId => "userId",
            KeyKind::Ani => "ani",
            KeyKind::ExternalContactId => "externalContactId",
        }
    }

    /// The one kind given, with what was given for it; `None` when none or several are.
    pub fn exactly_one<T>(
        user_id: Option<T>,
        ani: Option<T>,
        external_contact_id: Option<T>,
    ) -> Option<(KeyKind, T)> {
        let mut given = [
            (KeyKind::UserId, user_id),
            (KeyKind::Ani, ani),
            (KeyKind::ExternalContactId, external_contact_id),
        ]
        .into_iter()
        .filter_map(|(kind, value)| value.map(|v| (kind, v)));
        match (given.next(), given.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// `value` as this kind's key.
    pub fn key(self, value: &str) -> Result<LookupKey, DomainError> {
        let uuid = || {
            Uuid::try_parse(value.trim())
                .map_err(|_| DomainError(format!("`lookup.{}` must be a UUID", self.name())))
        };
        match self {
            KeyKind::UserId => uuid().map(LookupKey::UserId),
            KeyKind::Ani => PhoneNumber::from_str(value).map(LookupKey::Ani),
            KeyKind::ExternalContactId => uuid().map(LookupKey::ExternalContactId),
        }
    }
}

impl LookupKey {
    pub fn kind(&self) -> KeyKind {
        match self {
            LookupKey::UserId(_) => KeyKind::UserId,
            LookupKey::Ani(_) => KeyKind::Ani,
            LookupKey::ExternalContactId(_) => KeyKind::ExternalContactId,
        }
    }

    /// The analytics segment dimension that holds it.
    pub fn dimension(&self) -> &'static str {
        self.kind().name()
    }

    /// The participant an update is for when the caller names neither a participant nor a purpose:
    /// the agent for a user id, the customer otherwise.
    pub fn default_purpose(&self) -> Purpose {
        match self {
            LookupKey::UserId(_) => Purpose::from_str("agent").expect("a known purpose"),
            _ => Purpose::customer(),
        }
    }
}

impl fmt::Display for LookupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupKey::UserId(id) => write!(f, "userId {id}"),
            LookupKey::Ani(n) => write!(f, "ani {n}"),
            LookupKey::ExternalContactId(id) => write!(f, "externalContactId {id}"),
        }
    }
}

/// The media types analytics knows a session by.
pub const MEDIA_TYPES: &[&str] = &[
    "voice",
    "chat",
    "email",
    "message",
    "callback",
    "cobrowse",
    "video",
    "screenshare",
];

/// A media type from [`MEDIA_TYPES`]; `voice` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaType(&'static str);

impl MediaType {
    pub fn voice() -> Self {
        Self("voice")
    }
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl FromStr for MediaType {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MEDIA_TYPES
            .iter()
            .find(|m| m.eq_ignore_ascii_case(s.trim()))
            .map(|m| Self(m))
            .ok_or_else(|| {
                DomainError(format!(
                    "`mediaType` must be one of {}",
                    MEDIA_TYPES.join(", ")
                ))
            })
    }
}

/// What to do when several live conversations match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pick {
    /// Refuse, listing them: writing to the wrong call is worse than not writing.
    #[default]
    Only,
    /// The one that started last.
    Latest,
}

impl Pick {
    pub fn as_str(&self) -> &'static str {
        match self {
            Pick::Only => "only",
            Pick::Latest => "latest",
        }
    }
}

impl FromStr for Pick {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("latest") {
            Ok(Pick::Latest)
        } else {
            Err(DomainError("`lookup.pick` may only be \"latest\"".into()))
        }
    }
}

/// A search for the one live conversation a sender means.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lookup {
    pub key: LookupKey,
    pub media_type: MediaType,
    pub pick: Pick,
}

impl Lookup {
    /// A lookup by `key`, with the optional media type (`voice` by default) and pick (the only
    /// match by default); blank counts as absent.
    pub fn new(
        key: LookupKey,
        media_type: Option<&str>,
        pick: Option<&str>,
    ) -> Result<Self, DomainError> {
        let (media_type, pick) = Self::options(media_type, pick)?;
        Ok(Self {
            key,
            media_type,
            pick,
        })
    }

    /// The media type and the pick a lookup's optional texts name, defaults for blanks.
    pub fn options(
        media_type: Option<&str>,
        pick: Option<&str>,
    ) -> Result<(MediaType, Pick), DomainError> {
        fn given(s: Option<&str>) -> Option<&str> {
            s.filter(|s| !s.trim().is_empty())
        }
        Ok((
            given(media_type)
                .map(MediaType::from_str)
                .transpose()?
                .unwrap_or_else(MediaType::voice),
            given(pick)
                .map(Pick::from_str)
                .transpose()?
                .unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_in_every_common_form_become_one_e164_number() {
        for s in [
            "+13175550123",
            "13175550123",
            "tel:+13175550123",
            " +1 (317) 555-0123 ",
            "1.317.555.0123",
            "tel:13175550123",
        ] {
            assert_eq!(
                PhoneNumber::from_str(s).unwrap().e164(),
                "+13175550123",
                "{s}"
            );
        }
    }

    #[test]
    fn what_is_not_a_phone_number_is_refused() {
        for s in [
            "",
            "+",
            "12345",
            "555-0123",
            "+1234567890123456",
            "0317555012",
            "+1 317 555 0123 ext 4",
            "sip:+13175550123@example.com",
            "abc",
            "+44-20-7946-0958x",
        ] {
            assert!(PhoneNumber::from_str(s).is_err(), "{s}");
        }
    }

    #[test]
    fn a_number_is_matched_in_every_form_genesys_holds_and_shown_masked() {
        let n = PhoneNumber::from_str("+1 317 555 0123").unwrap();
        assert_eq!(
            n.forms(),
            [
                "tel:+13175550123".to_string(),
                "+13175550123".into(),
                "13175550123".into()
            ]
        );
        assert_eq!(n.to_string(), "…0123");
        assert!(!format!("{:?}", LookupKey::Ani(n.clone())).contains("5550123"));
    }

    proptest! {
        #[test]
        fn any_text_parses_to_a_valid_e164_number_or_is_refused(s in "\\PC{0,24}") {
            if let Ok(n) = PhoneNumber::from_str(&s) {
                let digits = &n.e164()[1..];
                prop_assert!(n.e164().starts_with('+'));
                prop_assert!((8..=15).contains(&digits.len()));
                prop_assert!(digits.chars().all(|c| c.is_ascii_digit()));
                // Parsing is idempotent.
                prop_assert_eq!(PhoneNumber::from_str(n.e164()).unwrap(), n.clone());
            }
        }

        #[test]
        fn separators_never_change_the_number(d in "[1-9][0-9]{7,14}") {
            let spaced: String = d.chars().flat_map(|c| [c, ' ']).collect();
            prop_assert_eq!(
                PhoneNumber::from_str(&spaced).unwrap(),
                PhoneNumber::from_str(&d).unwrap()
            );
        }
    }
}
