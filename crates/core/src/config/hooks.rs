//! The `[hooks.<name>]` configuration as written in TOML, before it is compiled into a route.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

/// One webhook route, served at `POST /v1/hooks/<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    /// JSON Pointer to the conversation id. Required unless `lookup` is set; with both, the id wins
    /// when the event has one.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Find the conversation from the event instead: `[hooks.<name>.lookup]`.
    #[serde(default)]
    pub lookup: Option<HookLookupSettings>,
    /// JSON Pointer to the participant id. When it finds nothing, the purpose decides.
    #[serde(default)]
    pub participant_id: Option<String>,
    /// A fixed purpose (`"customer"`), or a JSON Pointer to one (`"/detail/purpose"`).
    #[serde(default)]
    pub purpose: Option<String>,
    /// Attribute name → pointer, or `{ pointer = "/x", optional = true }`, or `{ value = "constant" }`.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeSource>,
    /// JSON Pointer to an object whose every entry becomes an attribute (the `/v1/attributes` shape).
    #[serde(default)]
    pub attributes_from: Option<String>,
    /// The conversation's secure attributes, mapped as `attributes` are: personal data only secure
    /// flows read, never shown or stored by Patchbay.
    #[serde(default)]
    pub secure_attributes: BTreeMap<String, AttributeSource>,
    /// The custom-attributes schema (id or name) `custom_attributes` are written under.
    #[serde(default)]
    pub custom_schema: Option<String>,
    /// Fields of the conversation's record of `custom_schema`, mapped as `attributes` are; their
    /// values keep their JSON type, and the schema checks and coerces them.
    #[serde(default)]
    pub custom_attributes: BTreeMap<String, AttributeSource>,
    /// Override `verify.enabled` for this route.
    #[serde(default)]
    pub verify: Option<bool>,
    /// `async` answers 202 and applies through the queue; `sync` (default) answers after the write;
    /// `sync_or_async` answers after the write, or 202 when the Genesys budget cannot serve it in time.
    #[serde(default)]
    pub mode: HookMode,
    /// How callers of this route prove who they are. Default: `api_key` with `auth.api_keys`.
    #[serde(default)]
    pub auth: Option<HookAuthSettings>,
}

/// `[hooks.<name>.lookup]`: JSON Pointers to exactly one of `user_id`, `ani` and
/// `external_contact_id`, with a fixed `media_type` (default `voice`) and `pick` (`"latest"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookLookupSettings {
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookMode {
    #[default]
    Sync,
    Async,
    #[serde(rename = "sync_or_async")]
    SyncOrAsync,
}

/// Where one attribute's value comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AttributeSource {
    /// A bare string is a JSON Pointer.
    Pointer(String),
    Table(AttributeSourceTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSourceTable {
    #[serde(default)]
    pub pointer: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub optional: bool,
}

/// `[hooks.<name>.auth]`, chosen by `scheme`.
#[derive(Clone, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum HookAuthSettings {
    /// `Authorization: Bearer KEY` or `X-API-Key: KEY`; the route's own keys, else `auth.api_keys`.
    ApiKey {
        #[serde(default, deserialize_with = "one_or_many_opt")]
        keys: Option<Vec<SecretString>>,
    },
    /// HTTP Basic, as an Architect Web Services Data Action integration sends it.
    Basic {
        username: String,
        password: SecretString,
    },
    /// Generic HMAC-SHA256 over the raw body (and optionally method, URI and a timestamp).
    Hmac(HmacSettings),
    /// The Standard Webhooks specification (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks {
        #[serde(deserialize_with = "one_or_many")]
        secrets: Vec<SecretString>,
    },
}

impl std::fmt::Debug for HookAuthSettings {
    // Secrets stay out of Debug output: name the scheme only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self {
            HookAuthSettings::ApiKey { .. } => "api_key",
            HookAuthSettings::Basic { .. } => "basic",
            HookAuthSettings::Hmac(_) => "hmac",
            HookAuthSettings::StandardWebhooks { .. } => "standard_webhooks",
        };
        write!(f, "HookAuthSettings({scheme})")
    }
}

/// A part of the signed message, joined in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignedPart {
    /// The raw request body.
    Body,
    /// The timestamp header's value, exactly as sent.
    Timestamp,
    /// The HTTP method (`POST`).
    Method,
    /// `public_url` followed by the request's path and query: the URI the sender called.
    Uri,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacSettings {
    /// The header carrying the signature.
    pub header: String,
    /// The shared secrets; any of them may have signed (rotation without downtime).
    #[serde(deserialize_with = "one_or_many")]
    pub secrets: Vec<SecretString>,
    /// Text before the signature in the header, such as `sha256=`.
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default = "default_encoding")]
    pub encoding: SignatureEncoding,
    /// A header with the time of signing, checked against `tolerance_s`.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default = "default_tolerance")]
    pub tolerance_s: u64,
    /// What is signed, in order. Default `["body"]`, or `["timestamp", "body"]` with a timestamp header.
    #[serde(default)]
    pub signed: Option<Vec<SignedPart>>,
    /// Put between the signed parts (Stripe-style senders use `"."`).
    #[serde(default)]
    pub separator: String,
    /// The public base URL the sender calls, for `uri` in `signed` (a proxy hides it from Patchbay).
    #[serde(default)]
    pub public_url: Option<String>,
}

fn default_encoding() -> SignatureEncoding {
    SignatureEncoding::Hex
}

/// Five minutes: the usual window of Zendesk, HubSpot and Standard Webhooks.
pub const DEFAULT_TOLERANCE_S: u64 = 300;

fn default_tolerance() -> u64 {
    DEFAULT_TOLERANCE_S
}

/// Accepts a list, or one comma-separated string (how an environment variable gives a list).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<String>),
    One(String),
}

fn split(v: OneOrMany) -> Vec<SecretString> {
    match v {
        OneOrMany::Many(list) => list.into_iter().map(SecretString::from).collect(),
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_string()))
            .collect(),
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    OneOrMany::deserialize(d).map(split)
}

fn one_or_many_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<SecretString>>, D::Error> {
    Option::<OneOrMany>::deserialize(d).map(|o| o.map(split))
}

/// The `[hooks.*]` tables of a TOML text, as `config/default.toml` or `--config FILE` would hold them.
pub fn hooks_from_toml(
    toml: &str,
) -> Result<BTreeMap<String, HookSettings>, ::config::ConfigError> {
    #[derive(Deserialize)]
    struct Doc {
        hooks: BTreeMap<String, HookSettings>,
    }
    config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()?
        .try_deserialize::<Doc>()
        .map(|d| d.hooks)
}
