//! Typed settings: `config/default.toml`, then an optional file, then `PATCHBAY__SECTION__KEY`, validated once.

pub mod hooks;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// The commented defaults, compiled in so the binary starts from any working directory.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// The environment prefix: `PATCHBAY__GENESYS__CLIENT_ID` sets `genesys.client_id`.
pub const ENV_PREFIX: &str = "PATCHBAY";

/// Genesys Cloud domains, from the contract's region table. The login host is `login.<domain>`.
pub const REGIONS: &[(&str, &str)] = &[
    ("mypurecloud.com", "us-east-1"),
    ("mypurecloud.ie", "eu-west-1"),
    ("mypurecloud.com.au", "ap-southeast-2"),
    ("mypurecloud.jp", "ap-northeast-1"),
    ("mypurecloud.de", "eu-central-1"),
    ("usw2.pure.cloud", "us-west-2"),
    ("cac1.pure.cloud", "ca-central-1"),
    ("apne2.pure.cloud", "ap-northeast-2"),
    ("euw2.pure.cloud", "eu-west-2"),
    ("aps1.pure.cloud", "ap-south-1"),
    ("use2.us-gov-pure.cloud", "us-east-2"),
    ("sae1.pure.cloud", "sa-east-1"),
    ("mec1.pure.cloud", "me-central-1"),
    ("apne3.pure.cloud", "ap-northeast-3"),
    ("euc2.pure.cloud", "eu-central-2"),
    ("mxc1.pure.cloud", "mx-central-1"),
    ("apse1.pure.cloud", "ap-southeast-1"),
    ("edee1.eusc-pure.cloud", "eusc-de-east-1"),
];

/// What is wrong with the configuration: every problem found at once, each naming its key (or the
/// environment variable that set it), so an operator mends them in one round.
#[derive(Debug)]
pub struct ConfigError(pub Vec<Problem>);

/// One problem: where (`genesys.region`, `PATCHBAY__GENESYS__CLIENT_SECRT`, `file.toml [hooks.crm]`)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid configuration: {}: {}", one.key, one.reason),
            all => {
                write!(f, "invalid configuration ({} problems):", all.len())?;
                for p in all {
                    write!(f, "\n  - {}: {}", p.key, p.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// One problem at `key`.
    pub fn at(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self(vec![Problem {
            key: key.into(),
            reason: reason.into(),
        }])
    }

    pub fn problems(&self) -> &[Problem] {
        &self.0
    }
}

/// A problem that serde or the config crate found while reading the layers: it names the key in
/// its text (`for key `server.max_body_bytes``), which becomes the problem's key.
impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        let text = e.to_string();
        match text
            .split_once(" for key `")
            .and_then(|(reason, rest)| Some((reason, rest.split_once('`')?.0)))
        {
            Some((reason, key)) => Self::at(key, reason),
            None => Self::at("configuration", text),
        }
    }
}

/// The name of the `[table]` whose body holds byte `offset` of a TOML text.
fn enclosing_table(text: &str, offset: usize) -> Option<String> {
    text[..offset.min(text.len())]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
}

fn invalid(key: &'static str, reason: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Every key `config/default.toml` documents, set or commented out, as dotted paths
/// (`genesys.retry.max_attempts`). Webhook routes (`hooks.<name>`) are the operator's own names and
/// are checked by their own types instead.
fn known_keys() -> &'static std::collections::BTreeSet<String> {
    static KEYS: std::sync::OnceLock<std::collections::BTreeSet<String>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = std::collections::BTreeSet::new();
        let mut table = String::new();
        for line in DEFAULT_TOML.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.split_once(']')) {
                table = name.0.trim().to_string();
            } else if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !table.is_empty()
                    && !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    keys.insert(format!("{table}.{key}"));
                }
            }
        }
        keys.retain(|k| !k.starts_with("hooks."));
        keys
    })
}

/// Whether `path` is the operator's own webhook routes or inside them: their names are free, and
/// their fields are checked by their own types.
fn in_routes(path: &str) -> bool {
    path == "hooks" || path.starts_with("hooks.")
}

/// Whether `path` is a key, or inside the operator's own webhook routes.
fn is_known(path: &str) -> bool {
    in_routes(path) || known_keys().contains(path)
}

/// `; did you mean `genesys.client_secret`?` when a known key is a typo away, else nothing.
fn nearest(path: &str, shown: impl Fn(&str) -> String) -> String {
    known_keys()
        .iter()
        .map(|k| (strsim::damerau_levenshtein(path, k), k))
        .filter(|(d, k)| *d <= 3.max(k.len() / 5))
        .min()
        .map(|(_, k)| format!("; did you mean {}?", shown(k)))
        .unwrap_or_default()
}

/// `PATCHBAY__GENESYS__CLIENT_ID` for `genesys.client_id`.
fn variable_for(key: &str) -> String {
    format!(
        "{ENV_PREFIX}__{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// The problem with an environment variable of Patchbay's that sets no key.
fn unknown_variable(name: &str) -> Option<Problem> {
    let rest = name.strip_prefix(ENV_PREFIX)?.strip_prefix("__")?;
    let path = rest.to_ascii_lowercase().replace("__", ".");
    if is_known(&path) {
        return None;
    }
    Some(Problem {
        key: name.to_string(),
        reason: format!(
            "sets `{path}`, which is not a key{}",
            nearest(&path, |k| format!("{} (`{k}`)", variable_for(k)))
        ),
    })
}

/// Takes the keys that are not known out of a configuration file's `table`, each a problem.
fn prune_unknown(table: &mut toml::Table, prefix: &str, file: &str, problems: &mut Vec<Problem>) {
    table.retain(|key, value| {
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        if in_routes(&path) {
            return true;
        }
        if let toml::Value::Table(inner) = value {
            if known_keys()
                .iter()
                .any(|k| k.starts_with(&format!("{path}.")))
            {
                prune_unknown(inner, &path, file, problems);
                return true;
            }
        }
        if known_keys().contains(&path) {
            return true;
        }
        problems.push(Problem {
            key: format!("{file}: {path}"),
            reason: format!("is not a key{}", nearest(&path, |k| format!("`{k}`"))),
        });
        false
    });
}

/// Every problem as one error, or none.
fn any(problems: Vec<Problem>) -> Result<(), ConfigError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError(problems))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub genesys: GenesysSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub verify: VerifySettings,
    pub delivery: DeliverySettings,
    pub lookup: LookupSettings,
    pub mirror: MirrorSettings,
    pub console: ConsoleSettings,
    pub telemetry: TelemetrySettings,
    pub log: LogSettings,
    pub queue: QueueSettings,
    pub idempotency: IdempotencySettings,
    pub secure: SecureSettings,
    pub custom: CustomSettings,
    pub redis: RedisSettings,
    /// Webhook routes, `[hooks.<name>]`, served at `POST /v1/hooks/<name>`.
    #[serde(default)]
    pub hooks: std::collections::BTreeMap<String, hooks::HookSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    pub shutdown_timeout_ms: u64,
    /// Serve `/metrics` here instead of on `listen`.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesysSettings {
    pub region: String,
    #[serde(default)]
    pub login_url: Option<Url>,
    #[serde(default)]
    pub api_url: Option<Url>,
    pub client_id: String,
    pub client_secret: SecretString,
    pub timeout_ms: u64,
    pub token_expiry_margin_s: u64,
    pub auth_failure_cache_ms: u64,
    pub rate_per_minute: u32,
    pub retry: RetrySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    pub max_elapsed_ms: u64,
    pub max_retry_after_ms: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub api_keys: Vec<SecretString>,
    pub allow_anonymous: bool,
    /// Keys for the admin endpoints (dead letters, replay); never the ingest keys.
    #[serde(default)]
    pub admin_keys: Vec<SecretString>,
}

impl std::fmt::Debug for AuthSettings {
    // Keys are secrets: say how many there are, never what they are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("allow_anonymous", &self.allow_anonymous)
            .field(
                "admin_keys",
                &format_args!("[{} redacted]", self.admin_keys.len()),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// The embedded SQLite store: durable on one machine, no server.
    Sqlite,
    /// Redis: one queue, one token and one rate budget for every replica.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: SecretString,
    pub key_prefix: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub backend: QueueBackend,
    pub path: std::path::PathBuf,
    pub workers: usize,
    pub max_batch: usize,
    pub retry_horizon_s: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub poll_interval_ms: u64,
    pub lease_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSettings {
    /// How long a custom-attributes schema is used before it is read again.
    pub schema_ttl_s: u64,
    /// The divisions of a record Patchbay creates.
    pub divisions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureSettings {
    /// The keys that seal secure attributes at rest, newest first (see [`crate::seal`]).
    pub keys: SecretString,
}

impl SecureSettings {
    /// The keyring; validation has already refused a malformed one.
    pub fn keyring(&self) -> crate::seal::Keyring {
        crate::seal::Keyring::parse(&self.keys).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    pub ttl_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_attributes_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    pub enabled: bool,
    pub timeout_ms: u64,
    pub poll_initial_ms: u64,
    pub poll_max_ms: u64,
}

/// How the delivery engine spends Genesys calls: coalescing and read reuse.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    pub linger_ms: u64,
    pub read_reuse_ms: u64,
}

/// The most days a lookup searches back: a lookup wants a live call, and a longer interval only
/// makes the details query slower.
pub const MAX_LOOKBACK_DAYS: u32 = 7;
/// The most candidates a lookup confirms, which is also the one page it asks analytics for; kept
/// under the details query's largest page (see `lookup::DETAILS_QUERY_MAX_PAGE_SIZE`).
pub const MAX_LOOKUP_CANDIDATES: u32 = 100;

/// `[lookup]`: finding a conversation by user id, number or external contact.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupSettings {
    pub lookback_days: u32,
    pub cache_ms: u64,
    pub analytics_retry_ms: u64,
    pub analytics_wait_ms: u64,
    pub max_candidates: u32,
}

impl LookupSettings {
    pub fn analytics_retry(&self) -> Duration {
        Duration::from_millis(self.analytics_retry_ms)
    }
    pub fn analytics_wait(&self) -> Duration {
        Duration::from_millis(self.analytics_wait_ms)
    }
}

impl DeliverySettings {
    /// The linger at a budget `pressure` (the share of the token's window spent, 0 to 1): the
    /// configured one while half the window is free, growing to four times it as the window fills,
    /// so more updates share each call when calls are scarce.
    pub fn linger(&self, pressure: f64) -> Duration {
        let tight = ((pressure - 0.5) / 0.5).clamp(0.0, 1.0);
        Duration::from_millis(self.linger_ms).mul_f64(1.0 + 3.0 * tight)
    }
    pub fn read_reuse(&self) -> Duration {
        Duration::from_millis(self.read_reuse_ms)
    }
}

/// Genesys's limits on notifications: channels per OAuth client, topics per channel.
pub const MAX_NOTIFICATION_CHANNELS: u32 = 20;
pub const MAX_CHANNEL_TOPICS: usize = 1000;

/// Which routing queues the mirror follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorQueues {
    /// Every queue `GET /api/v2/routing/queues` lists, listed again every `queue_refresh_ms`.
    All,
    /// These queue ids.
    Listed(Vec<String>),
}

impl<'de> Deserialize<'de> for MirrorQueues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w.eq_ignore_ascii_case("all") => Ok(MirrorQueues::All),
            // An environment variable gives a list as comma-separated text.
            Raw::Word(w) => Ok(MirrorQueues::Listed(
                w.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            )),
            Raw::List(l) => Ok(MirrorQueues::Listed(l)),
        }
    }
}

/// `[mirror]`: the live mirror of the queues' conversations, fed by Genesys's notifications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSettings {
    pub enabled: bool,
    pub queues: MirrorQueues,
    pub queue_refresh_ms: u64,
    pub confirm_ms: u64,
    pub max_conversations: usize,
    pub max_channels: u32,
    pub max_frame_bytes: usize,
    pub liveness_ms: u64,
    pub reconnect_max_ms: u64,
}

impl MirrorSettings {
    /// How long a write waits for an event: `confirm_ms`, but never more than half of
    /// `verify_timeout_ms`, so a read can still decide when no event comes.
    pub fn confirm(&self, verify_timeout_ms: u64) -> Duration {
        Duration::from_millis(self.confirm_ms.min(verify_timeout_ms / 2))
    }
    pub fn liveness(&self) -> Duration {
        Duration::from_millis(self.liveness_ms)
    }
}

/// `[console]`: the operator console at `/console`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Served wherever an admin key is configured, unless turned off.
    pub enabled: bool,
    /// Updates kept for Recent updates: this process's ring, or the deployment's Redis stream.
    pub recent: usize,
    /// Keep and show the values written (they may be personal data).
    pub show_values: bool,
    pub session_ttl_s: u64,
}

/// `[telemetry]`: OpenTelemetry traces, exported over OTLP/HTTP with protobuf.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The collector's base URL (`/v1/traces` is added); empty: no export, unless the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub otlp_endpoint: String,
    pub service_name: String,
    /// `key=value` pairs, comma-separated, added to the resource (as `OTEL_RESOURCE_ATTRIBUTES`).
    pub resource_attributes: String,
    /// The share of new traces recorded, 0 to 1; a caller's sampled trace is always continued.
    pub sampling_ratio: f64,
    /// Finished spans waiting for export; past it, spans are dropped and counted.
    pub max_queue_size: usize,
    pub export_timeout_ms: u64,
}

impl TelemetrySettings {
    pub fn export_timeout(&self) -> Duration {
        Duration::from_millis(self.export_timeout_ms)
    }

    /// `resource_attributes` as key-values; malformed pairs are refused by `validate`.
    pub fn resource_attributes(&self) -> Vec<opentelemetry::KeyValue> {
        self.resource_attributes
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| opentelemetry::KeyValue::new(k.trim().to_string(), v.trim().to_string()))
            .collect()
    }
}

/// The most updates `console.recent` may keep: entries are about 1 KiB each, and a page of Recent
/// updates reads them all to filter them.
pub const MAX_CONSOLE_RECENT: usize = 20_000;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

impl Settings {
    /// Reads every layer and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment given explicitly (tests must not share theirs).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let settings = Self::read(file, env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Reads every layer and checks only the store's keys (`queue.*`, `redis.*`): for commands
    /// such as `patchbay replay` that open the store and nothing else, so they need neither a
    /// Genesys client nor an inbound key.
    pub fn load_for_store(file: Option<&Path>) -> Result<Self, ConfigError> {
        let settings = Self::read(file, std::env::vars())?;
        settings.validate_store()?;
        Ok(settings)
    }

    /// Every layer, deserialized, not yet validated. Unknown keys, in the file or the environment,
    /// are all reported, each with the nearest known key; they are left out so that the rest is
    /// still read and checked in the same round.
    fn read(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(name, _)| match unknown_variable(name) {
                Some(problem) => {
                    problems.push(problem);
                    false
                }
                None => true,
            })
            .collect();
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::at(&shown, format!("cannot be read: {e}")))?;
            // Parse errors only give a line; name the table it is in, which names the route too.
            let mut table = text.parse::<toml::Table>().map_err(|e| {
                let table = e
                    .span()
                    .and_then(|span| enclosing_table(&text, span.start))
                    .map(|t| format!(" [{t}]"))
                    .unwrap_or_default();
                ConfigError::at(format!("{shown}{table}"), e.message())
            })?;
            prune_unknown(&mut table, "", &shown, &mut problems);
            let pruned =
                toml::to_string(&table).map_err(|e| ConfigError::at(&shown, e.to_string()))?;
            builder = builder.add_source(config::File::from_str(&pruned, config::FileFormat::Toml));
        }
        let read = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("auth.api_keys")
                    .with_list_parse_key("auth.admin_keys")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .and_then(|c| c.try_deserialize::<Settings>());
        match read {
            Ok(settings) if problems.is_empty() => Ok(settings),
            Ok(settings) => {
                // The rest is checked too, so one round shows everything.
                settings.check(&mut problems);
                Err(ConfigError(problems))
            }
            Err(e) => {
                problems.extend(ConfigError::from(e).0);
                Err(ConfigError(problems))
            }
        }
    }

    /// The defaults alone, validated except for the rules a real deployment must satisfy by hand.
    pub fn defaults() -> Self {
        config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("config/default.toml is valid")
    }

    /// The rules serde cannot express: ranges, known regions and cross-field constraints.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.check(&mut problems);
        any(problems)
    }

    fn check(&self, problems: &mut Vec<Problem>) {
        let g = &self.genesys;
        if !REGIONS.iter().any(|(domain, _)| *domain == g.region) {
            let valid: Vec<_> = REGIONS.iter().map(|(d, _)| *d).collect();
            problems.push(invalid(
                "genesys.region",
                format!(
                    "`{}` is not a Genesys Cloud region; valid regions are: {}",
                    g.region,
                    valid.join(", ")
                ),
            ));
        }
        for (key, url) in [
            ("genesys.login_url", &g.login_url),
            ("genesys.api_url", &g.api_url),
        ] {
            if let Some(url) = url {
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    problems.push(invalid(key, "must be an http(s) base URL"));
                }
            }
        }
        if g.client_id.trim().is_empty() {
            problems.push(invalid(
                "genesys.client_id",
                "is required: the id of an OAuth client with the client-credentials grant",
            ));
        }
        if g.client_secret.expose_secret().is_empty() {
            problems.push(invalid(
                "genesys.client_secret",
                "is required: the secret of the OAuth client",
            ));
        }
        positive(problems, "genesys.timeout_ms", g.timeout_ms);
        positive(
            problems,
            "server.request_timeout_ms",
            self.server.request_timeout_ms,
        );
        positive(
            problems,
            "server.max_body_bytes",
            self.server.max_body_bytes as u64,
        );
        positive(
            problems,
            "limits.max_attributes_bytes",
            self.limits.max_attributes_bytes as u64,
        );
        let r = &g.retry;
        if !(1..=10).contains(&r.max_attempts) {
            problems.push(invalid(
                "genesys.retry.max_attempts",
                "must be between 1 and 10",
            ));
        }
        positive(problems, "genesys.retry.base_delay_ms", r.base_delay_ms);
        if r.max_delay_ms < r.base_delay_ms {
            problems.push(invalid(
                "genesys.retry.max_delay_ms",
                "must not be below genesys.retry.base_delay_ms",
            ));
        }
        if self.verify.enabled {
            positive(problems, "verify.timeout_ms", self.verify.timeout_ms);
            positive(
                problems,
                "verify.poll_initial_ms",
                self.verify.poll_initial_ms,
            );
            if self.verify.timeout_ms >= self.server.request_timeout_ms {
                problems.push(invalid(
                    "verify.timeout_ms",
                    "must be below server.request_timeout_ms, or no answer could carry the verification",
                ));
            }
        }
        if self.auth.api_keys.is_empty() && !self.auth.allow_anonymous {
            problems.push(invalid(
                "auth.api_keys",
                "no inbound credential is configured; set auth.api_keys, or auth.allow_anonymous = true to run without one",
            ));
        }
        if self
            .auth
            .api_keys
            .iter()
            .any(|k| k.expose_secret().trim().is_empty())
        {
            problems.push(invalid("auth.api_keys", "keys must not be empty"));
        }
        if self
            .auth
            .admin_keys
            .iter()
            .any(|k| k.expose_secret().trim().is_empty())
        {
            problems.push(invalid("auth.admin_keys", "keys must not be empty"));
        }
        if self.auth.admin_keys.iter().any(|a| {
            self.auth
                .api_keys
                .iter()
                .any(|k| k.expose_secret() == a.expose_secret())
        }) {
            problems.push(invalid(
                "auth.admin_keys",
                "an admin key must not also be an ingest key (auth.api_keys)",
            ));
        }
        positive(
            problems,
            "server.shutdown_timeout_ms",
            self.server.shutdown_timeout_ms,
        );
        self.check_store(problems);
        positive(problems, "idempotency.ttl_s", self.idempotency.ttl_s);
        positive(problems, "custom.schema_ttl_s", self.custom.schema_ttl_s);
        if self
            .custom
            .divisions
            .iter()
            .any(|d| uuid::Uuid::parse_str(d).is_err())
        {
            problems.push(invalid(
                "custom.divisions",
                "each division is a division's id (a UUID)",
            ));
        }
        if let Err(found) = crate::seal::Keyring::parse(&self.secure.keys) {
            problems.extend(found.into_iter().map(|p| invalid("secure.keys", p)));
        }
        if g.rate_per_minute < 3 {
            // A synchronous update may need three calls (resolve, write, read back) at once.
            problems.push(invalid("genesys.rate_per_minute", "must be at least 3"));
        }
        if !(1..=MAX_LOOKBACK_DAYS).contains(&self.lookup.lookback_days) {
            problems.push(invalid(
                "lookup.lookback_days",
                format!("must be 1 to {MAX_LOOKBACK_DAYS}"),
            ));
        }
        if !(1..=MAX_LOOKUP_CANDIDATES).contains(&self.lookup.max_candidates) {
            problems.push(invalid(
                "lookup.max_candidates",
                format!("must be 1 to {MAX_LOOKUP_CANDIDATES}"),
            ));
        }
        positive(
            problems,
            "lookup.analytics_retry_ms",
            self.lookup.analytics_retry_ms,
        );
        self.check_mirror(problems);
        if !(1..=MAX_CONSOLE_RECENT).contains(&self.console.recent) {
            problems.push(invalid(
                "console.recent",
                format!("must be 1 to {MAX_CONSOLE_RECENT}"),
            ));
        }
        let t = &self.telemetry;
        if !(0.0..=1.0).contains(&t.sampling_ratio) {
            problems.push(invalid("telemetry.sampling_ratio", "must be 0 to 1"));
        }
        positive(
            problems,
            "telemetry.max_queue_size",
            t.max_queue_size as u64,
        );
        positive(problems, "telemetry.export_timeout_ms", t.export_timeout_ms);
        let endpoint = t.otlp_endpoint.trim();
        if !endpoint.is_empty()
            && url::Url::parse(endpoint).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        {
            problems.push(invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL, such as http://otel-collector:4318",
            ));
        }
        if let Some(bad) = t
            .resource_attributes
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .find(|p| p.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()))
        {
            problems.push(invalid(
                "telemetry.resource_attributes",
                format!("`{}` is not key=value", bad.trim()),
            ));
        }
        if !(60..=7 * 86_400).contains(&self.console.session_ttl_s) {
            problems.push(invalid(
                "console.session_ttl_s",
                "must be 60 to 604800 (a week)",
            ));
        }
        // Webhook routes are checked where they are compiled, when the application state is built
        // at start (before the listener binds), so configuration does not depend on the HTTP layer.
    }

    fn check_mirror(&self, problems: &mut Vec<Problem>) {
        let m = &self.mirror;
        if !m.enabled {
            return;
        }
        if let MirrorQueues::Listed(ids) = &m.queues {
            if ids.is_empty() {
                problems.push(invalid(
                    "mirror.queues",
                    "must be \"all\" or a non-empty list of queue ids",
                ));
            }
            if let Some(bad) = ids.iter().find(|id| uuid::Uuid::parse_str(id).is_err()) {
                problems.push(invalid(
                    "mirror.queues",
                    format!("`{bad}` is not a queue id (a UUID)"),
                ));
            }
        }
        positive(problems, "mirror.queue_refresh_ms", m.queue_refresh_ms);
        positive(
            problems,
            "mirror.max_conversations",
            m.max_conversations as u64,
        );
        if !(1..=MAX_NOTIFICATION_CHANNELS).contains(&m.max_channels) {
            problems.push(invalid(
                "mirror.max_channels",
                format!(
                    "must be 1 to {MAX_NOTIFICATION_CHANNELS}, Genesys's channels per OAuth client"
                ),
            ));
        }
        if m.max_frame_bytes < 1 << 20 {
            problems.push(invalid(
                "mirror.max_frame_bytes",
                "must be at least 1048576: a conversation event carries every participant and attribute",
            ));
        }
        if m.liveness_ms < 1000 {
            problems.push(invalid("mirror.liveness_ms", "must be at least 1000"));
        }
        positive(problems, "mirror.reconnect_max_ms", m.reconnect_max_ms);
    }

    /// The store's rules: what opening the queue needs, and nothing else.
    pub fn validate_store(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.check_store(&mut problems);
        any(problems)
    }

    fn check_store(&self, problems: &mut Vec<Problem>) {
        let q = &self.queue;
        if !(1..=256).contains(&q.workers) {
            problems.push(invalid("queue.workers", "must be between 1 and 256"));
        }
        positive(problems, "queue.max_batch", q.max_batch as u64);
        positive(problems, "queue.retry_horizon_s", q.retry_horizon_s);
        positive(problems, "queue.backoff_base_ms", q.backoff_base_ms);
        positive(problems, "queue.poll_interval_ms", q.poll_interval_ms);
        positive(problems, "queue.lease_s", q.lease_s);
        if q.backoff_max_ms < q.backoff_base_ms {
            problems.push(invalid(
                "queue.backoff_max_ms",
                "must not be below queue.backoff_base_ms",
            ));
        }
        if q.path.as_os_str().is_empty() {
            problems.push(invalid("queue.path", "must name a file"));
        }
        if q.backend == QueueBackend::Redis {
            let url = self.redis.url.expose_secret();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                problems.push(invalid("redis.url", "must be a redis:// or rediss:// URL"));
            }
            if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}', ' ']) {
                problems.push(invalid(
                    "redis.key_prefix",
                    "must be non-empty, without braces or spaces",
                ));
            }
            positive(problems, "redis.timeout_ms", self.redis.timeout_ms);
        }
    }
}

fn positive(problems: &mut Vec<Problem>, key: &'static str, value: u64) {
    if value == 0 {
        problems.push(invalid(key, "must be greater than 0"));
    }
}

impl ServerSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl GenesysSettings {
    /// `https://login.<region>` unless overridden.
    pub fn login_base(&self) -> Url {
        self.login_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("https://login.{}", self.region)).expect("region hosts are valid")
        })
    }
    /// `https://api.<region>` unless overridden.
    pub fn api_base(&self) -> Url {
        self.api_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("https://api.{}", self.region)).expect("region hosts are valid")
        })
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl VerifySettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The wait before the read after one that waited `wait`: doubling from `poll_initial_ms` (the
    /// first, after no wait at all) up to `poll_max_ms`.
    pub fn next_poll(&self, wait: Duration) -> Duration {
        let initial = Duration::from_millis(self.poll_initial_ms);
        let max = Duration::from_millis(self.poll_max_ms.max(self.poll_initial_ms));
        (wait * 2).clamp(initial, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linger_grows_as_the_budget_window_fills() {
        let d = DeliverySettings {
            linger_ms: 100,
            read_reuse_ms: 0,
        };
        assert_eq!(d.linger(0.0), Duration::from_millis(100));
        assert_eq!(d.linger(0.5), Duration::from_millis(100));
        assert_eq!(d.linger(0.75), Duration::from_millis(250));
        assert_eq!(d.linger(1.0), Duration::from_millis(400));
        assert_eq!(d.linger(7.0), Duration::from_millis(400));
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all = vec![
            ("PATCHBAY__GENESYS__CLIENT_ID".to_string(), "id".to_string()),
            (
                "PATCHBAY__GENESYS__CLIENT_SECRET".to_string(),
                "s3cret".to_string(),
            ),
            ("PATCHBAY__AUTH__API_KEYS".to_string(), "k1,k2".to_string()),
        ];
        all.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        all
    }

    fn error_of(pairs: &[(&str, &str)]) -> String {
        Settings::load_with_env(None, env(pairs))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_with_credentials_from_the_environment_load() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.server.max_body_bytes, 65536);
        assert_eq!(s.limits.max_attributes_bytes, 2048);
        assert_eq!(s.auth.api_keys.len(), 2);
        let with_admin =
            Settings::load_with_env(None, env(&[("PATCHBAY__AUTH__ADMIN_KEYS", "a1,a2")])).unwrap();
        assert_eq!(with_admin.auth.admin_keys.len(), 2);
        assert!(s.verify.enabled);
        assert_eq!(s.verify.timeout_ms, 3000);
        assert_eq!(
            s.genesys.login_base().as_str(),
            "https://login.mypurecloud.com/"
        );
        assert_eq!(
            s.genesys.api_base().as_str(),
            "https://api.mypurecloud.com/"
        );
    }

    #[test]
    fn the_environment_overrides_the_defaults() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("PATCHBAY__GENESYS__REGION", "mypurecloud.ie"),
                ("PATCHBAY__VERIFY__ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(s.genesys.api_base().as_str(), "https://api.mypurecloud.ie/");
        assert!(!s.verify.enabled);
    }

    #[test]
    fn an_unknown_region_fails_and_lists_the_valid_ones() {
        let e = error_of(&[("PATCHBAY__GENESYS__REGION", "example.com")]);
        assert!(e.contains("genesys.region"), "{e}");
        assert!(
            e.contains("mypurecloud.de") && e.contains("usw2.pure.cloud"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_fails_naming_it() {
        let e = error_of(&[("PATCHBAY__SERVER__LISTN", "x")]);
        assert!(e.contains("listn"), "{e}");
    }

    #[test]
    fn a_mistyped_variable_is_named_with_the_nearest_key() {
        let e = Settings::load_with_env(None, env(&[("PATCHBAY__GENESYS__CLIENT_SECRT", "s")]))
            .unwrap_err();
        assert_eq!(
            e.problems(),
            &[Problem {
                key: "PATCHBAY__GENESYS__CLIENT_SECRT".into(),
                reason: "sets `genesys.client_secrt`, which is not a key; did you mean \
                         PATCHBAY__GENESYS__CLIENT_SECRET (`genesys.client_secret`)?"
                    .into()
            }]
        );
        let far = error_of(&[("PATCHBAY__NOTHING__LIKE_IT", "x")]);
        assert!(!far.contains("did you mean"), "{far}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = Settings::load_with_env(
            None,
            env(&[
                ("PATCHBAY__GENESYS__CLIENT_SECRT", "s"),
                ("PATCHBAY__GENESYS__REGION", "mypurecloud.moon"),
                ("PATCHBAY__QUEUE__WORKERS", "0"),
                ("PATCHBAY__LOOKUP__MAX_CANDIDATES", "0"),
            ]),
        )
        .unwrap_err();
        let keys: Vec<_> = e.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "PATCHBAY__GENESYS__CLIENT_SECRT",
                "genesys.region",
                "queue.workers",
                "lookup.max_candidates"
            ]
        );
        let text = e.to_string();
        assert!(
            text.starts_with("invalid configuration (4 problems):"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_key_in_a_file_is_named_with_the_file_and_the_nearest_key() {
        let dir = std::env::temp_dir().join(format!("patchbay-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("patchbay.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1\"\n\n[genesys.retry]\nmax_atempts = 2\n",
        )
        .unwrap();
        let e = Settings::load_with_env(Some(&file), env(&[])).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.problems().len(), 1, "{e}");
        let p = &e.problems()[0];
        assert!(
            p.key.ends_with("patchbay.toml: genesys.retry.max_atempts"),
            "{p:?}"
        );
        assert!(
            p.reason
                .contains("did you mean `genesys.retry.max_attempts`?"),
            "{p:?}"
        );
    }

    #[test]
    fn every_key_of_the_defaults_is_known() {
        let defaults: toml::Table = DEFAULT_TOML.parse().unwrap();
        fn leaves(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in table {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(t) => leaves(t, &path, out),
                    _ => out.push(path),
                }
            }
        }
        let mut all = Vec::new();
        leaves(&defaults, "", &mut all);
        assert!(all.len() > 50);
        for key in all {
            assert!(known_keys().contains(&key), "{key}");
        }
        for optional in [
            "server.admin_listen",
            "genesys.login_url",
            "genesys.api_url",
        ] {
            assert!(known_keys().contains(optional), "{optional}");
        }
    }

    #[test]
    fn an_invalid_value_fails_naming_the_key() {
        let e = error_of(&[("PATCHBAY__SERVER__MAX_BODY_BYTES", "lots")]);
        assert!(e.contains("max_body_bytes"), "{e}");
        let e = error_of(&[("PATCHBAY__GENESYS__API_URL", "ftp://x")]);
        assert!(e.contains("genesys.api_url"), "{e}");
    }

    #[test]
    fn a_lookup_searching_more_than_the_details_query_allows_refuses_to_start() {
        let e = error_of(&[("PATCHBAY__LOOKUP__MAX_CANDIDATES", "101")]);
        assert!(
            e.contains("lookup.max_candidates") && e.contains("1 to 100"),
            "{e}"
        );
        let e = error_of(&[("PATCHBAY__LOOKUP__LOOKBACK_DAYS", "8")]);
        assert!(
            e.contains("lookup.lookback_days") && e.contains("1 to 7"),
            "{e}"
        );
        let s = Settings::load_with_env(
            None,
            env(&[
                ("PATCHBAY__LOOKUP__MAX_CANDIDATES", "100"),
                ("PATCHBAY__LOOKUP__LOOKBACK_DAYS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(s.lookup.max_candidates, MAX_LOOKUP_CANDIDATES);
    }

    #[test]
    fn no_inbound_credential_refuses_to_start_unless_anonymous_is_allowed() {
        let base = [
            ("PATCHBAY__GENESYS__CLIENT_ID", "id"),
            ("PATCHBAY__GENESYS__CLIENT_SECRET", "s"),
        ];
        let to_env = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
            base.iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let e = Settings::load_with_env(None, to_env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.api_keys"), "{e}");
        assert!(Settings::load_with_env(
            None,
            to_env(&[("PATCHBAY__AUTH__ALLOW_ANONYMOUS", "true")])
        )
        .is_ok());
    }

    #[test]
    fn telemetry_is_off_by_default_and_a_bad_setting_names_its_key() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert!(s.telemetry.otlp_endpoint.is_empty());
        assert_eq!(s.telemetry.sampling_ratio, 1.0);
        let on = Settings::load_with_env(
            None,
            env(&[
                (
                    "PATCHBAY__TELEMETRY__OTLP_ENDPOINT",
                    "http://collector:4318",
                ),
                ("PATCHBAY__TELEMETRY__RESOURCE_ATTRIBUTES", "a=1, b = two"),
            ]),
        )
        .unwrap();
        let attrs: Vec<String> = on
            .telemetry
            .resource_attributes()
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        assert_eq!(attrs, ["a=1", "b=two"]);
        for (key, value, named) in [
            (
                "PATCHBAY__TELEMETRY__SAMPLING_RATIO",
                "1.5",
                "telemetry.sampling_ratio",
            ),
            (
                "PATCHBAY__TELEMETRY__OTLP_ENDPOINT",
                "collector:4318",
                "telemetry.otlp_endpoint",
            ),
            (
                "PATCHBAY__TELEMETRY__RESOURCE_ATTRIBUTES",
                "a=1,oops",
                "telemetry.resource_attributes",
            ),
            (
                "PATCHBAY__TELEMETRY__MAX_QUEUE_SIZE",
                "0",
                "telemetry.max_queue_size",
            ),
        ] {
            let e = error_of(&[(key, value)]);
            assert!(e.contains(named), "{e}");
        }
    }

    #[test]
    fn mirror_queues_are_all_by_default_or_the_ids_an_operator_lists_and_never_a_bad_one() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert!(s.mirror.enabled);
        assert_eq!(s.mirror.queues, MirrorQueues::All);
        let q1 = "7e1d3b50-2c4a-4f6e-9b8d-0a1c2e3f4a01";
        let q2 = "7e1d3b50-2c4a-4f6e-9b8d-0a1c2e3f4a02";
        let listed = Settings::load_with_env(
            None,
            env(&[("PATCHBAY__MIRROR__QUEUES", &format!("{q1}, {q2}"))]),
        )
        .unwrap();
        assert_eq!(
            listed.mirror.queues,
            MirrorQueues::Listed(vec![q1.into(), q2.into()])
        );
        let bad = error_of(&[("PATCHBAY__MIRROR__QUEUES", "support-queue")]);
        assert!(bad.contains("mirror.queues"), "{bad}");
        let bad = error_of(&[("PATCHBAY__MIRROR__MAX_CHANNELS", "21")]);
        assert!(bad.contains("mirror.max_channels"), "{bad}");
        // Off, its settings are not checked: a REST-only deployment need not care.
        assert!(Settings::load_with_env(
            None,
            env(&[
                ("PATCHBAY__MIRROR__ENABLED", "false"),
                ("PATCHBAY__MIRROR__MAX_CHANNELS", "21")
            ])
        )
        .is_ok());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("k1"),
            "{shown}"
        );
    }

    #[test]
    fn a_config_file_layers_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("patchbay-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:9999\"\nmax_body_bytes = 10\n",
        )
        .unwrap();
        let s = Settings::load_with_env(
            Some(&file),
            env(&[("PATCHBAY__SERVER__MAX_BODY_BYTES", "20")]),
        )
        .unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(s.server.max_body_bytes, 20);
    }
}
