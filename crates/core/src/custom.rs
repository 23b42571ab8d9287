//! Conversation custom attributes: typed records checked against a schema, the place Genesys
//! directs reporting and search to. Each conversation has one record per schema, whose id every
//! replica derives alike; the first write creates it (under a claim, so two replicas never both
//! do) and later writes amend it, always with the record's divisions (an update without them clears
//! them) and its version (a stale one is a 409, re-read and retried). No notification carries a
//! record's change: a write is verified by what Genesys shows of the record, each field's value
//! with a timestamp newer than before the write. The writes are the bulk forms, whose answer holds
//! the record as it stands after the write; a read back only when it does not show every field.
//!
//! Schemas are read once (by id, or by name through the listing) and cached; a write Genesys
//! refuses as invalid drops the cached schema, so the next write reads it again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::DeliverySettings;
use crate::domain::{ConversationId, DomainError};
use crate::genesys::model::{CustomRecordRead, CustomRecordWrite, CustomSchemaRead};
use crate::genesys::{CallContext, GenesysError};
use crate::lane::{Asked, Batch, Lanes, Merge};
use crate::service::{UpdateError, Updater, CALL_ALLOWANCE};
use crate::store::records::{KnownRecord as Known, RecordKey, Records};

/// Where every replica's record ids come from: a UUIDv5 namespace of Patchbay's own.
const RECORD_NAMESPACE: uuid::Uuid = uuid::uuid!("0b8f3c1e-6f5a-5d0e-9c7b-2a4d8e1f6b30");

/// Conflicts (409) re-read and retried before the write is answered `custom_conflict`.
const MAX_CONFLICTS: u32 = 3;

/// How often a write waiting for another replica's claim on a record looks again.
const CLAIM_POLL: Duration = Duration::from_millis(50);

/// What waiting for the claim on an unknown record gave.
enum Claimed {
    /// This replica's claim, by its token: it reads the record and creates it if absent.
    Ours(String),
    /// What the replica that held the claim learnt of the record.
    Learnt(Known),
}

/// The record of conversation `cid` under schema `schema_id`: the same on every replica.
pub fn record_id(cid: &ConversationId, schema_id: &str) -> String {
    uuid::Uuid::new_v5(&RECORD_NAMESPACE, format!("{cid}/{schema_id}").as_bytes()).to_string()
}

/// Values a sender wants in a custom-attributes record of a named schema.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomValues {
    /// The schema's id or name (its JSON Schema `title`).
    pub schema: String,
    pub values: Map<String, Value>,
}

impl CustomValues {
    /// From inbound JSON: a schema named by id or name, and a non-empty object of values.
    pub fn new(schema: &str, values: &Map<String, Value>) -> Result<Self, DomainError> {
        let schema = schema.trim();
        if schema.is_empty() || schema.len() > 200 {
            return Err(DomainError(
                "`customSchema` must name a schema by id or name (1 to 200 characters)".into(),
            ));
        }
        if values.is_empty() {
            return Err(DomainError("`customAttributes` must not be empty".into()));
        }
        Ok(Self {
            schema: schema.to_string(),
            values: values.clone(),
        })
    }
}

/// A field the schema refuses, and what the schema wants there; never the value sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub wants: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.wants)
    }
}

/// Why a custom-attributes write was not made or not finished.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CustomError {
    #[error("no custom-attributes schema is named `{0}`")]
    SchemaNotFound(String),
    #[error("the values do not fit schema `{schema}`: {}", list(.problems))]
    Invalid {
        schema: String,
        problems: Vec<FieldProblem>,
    },
    #[error(
        "the record kept changing under other writers ({0} conflicts); nothing more was written"
    )]
    Conflict(u32),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

fn list(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<GenesysError> for CustomError {
    fn from(e: GenesysError) -> Self {
        CustomError::Update(e.into())
    }
}

/// The JSON type a property wants, where a sender's string may be coerced to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Number,
    Boolean,
    Other,
}

/// A schema, compiled.
pub struct Schema {
    pub id: String,
    pub name: String,
    pub version: i64,
    validator: jsonschema::Validator,
    properties: BTreeMap<String, Value>,
    required: Vec<String>,
    definitions: Value,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

impl Schema {
    /// Compiles a schema as Genesys returned it.
    pub fn compile(read: &CustomSchemaRead) -> Result<Self, GenesysError> {
        let json = &read.json_schema;
        let validator = jsonschema::validator_for(json).map_err(|e| {
            GenesysError::InvalidResponse(format!(
                "schema {} is not a JSON Schema this version understands ({e})",
                read.id
            ))
        })?;
        Ok(Self {
            id: read.id.clone(),
            name: json
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            version: read.version,
            validator,
            properties: json
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.clone().into_iter().collect())
                .unwrap_or_default(),
            required: json
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            definitions: json
                .get("definitions")
                .or_else(|| json.get("$defs"))
                .cloned()
                .unwrap_or(Value::Null),
        })
    }

    /// The property's schema, following one local `$ref` (or an `allOf` of one), as Genesys's
    /// core types are written.
    fn property(&self, field: &str) -> Option<&Value> {
        let mut p = self.properties.get(field)?;
        for _ in 0..4 {
            let reference = p.get("$ref").or_else(|| {
                p.get("allOf")
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == 1)
                    .and_then(|a| a[0].get("$ref"))
            });
            let Some(name) = reference
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
            else {
                break;
            };
            match self.definitions.get(name) {
                Some(d) => p = d,
                None => break,
            }
        }
        Some(p)
    }

    fn kind(&self, field: &str) -> Kind {
        let types: Vec<&str> = match self.property(field).and_then(|p| p.get("type")) {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        // A property that also takes a string keeps the sender's string as it is.
        match types.as_slice() {
            ["integer"] => Kind::Integer,
            ["number"] => Kind::Number,
            ["boolean"] => Kind::Boolean,
            _ => Kind::Other,
        }
    }

    /// What the schema wants for `field`, in words: its type and its limits.
    fn wants(&self, field: &str) -> String {
        let Some(p) = self.property(field) else {
            return "not a field of the schema".into();
        };
        let mut words = Vec::new();
        match p.get("type") {
            Some(Value::String(t)) => words.push(format!("a value of type {t}")),
            Some(Value::Array(ts)) => words.push(format!(
                "a value of type {}",
                ts.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
            _ => words.push("a value".into()),
        }
        if let Some(e) = p.get("enum").and_then(Value::as_array) {
            words.push(format!(
                "one of {}",
                e.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for (key, say) in [
            ("minimum", "at least"),
            ("maximum", "at most"),
            ("exclusiveMinimum", "above"),
            ("exclusiveMaximum", "below"),
            ("pattern", "matching"),
        ] {
            if let Some(v) = p.get(key) {
                words.push(format!("{say} {v}"));
            }
        }
        for (key, say) in [("minLength", "at least"), ("maxLength", "at most")] {
            if let Some(v) = p.get(key) {
                words.push(format!("{say} {v} characters"));
            }
        }
        words.join(", ")
    }

    /// The sender's values, coerced where unambiguous and checked against the schema: every
    /// problem, each naming its field and what the schema wants.
    ///
    /// Coercion: a string becomes an integer when it is one written in decimal (`"42"`, `"-7"`), a
    /// number when it parses as a finite one (`"4.5"`), a boolean when it is `"true"` or
    /// `"false"`, and only where the property takes that type alone. Nothing else is changed.
    pub fn prepare(&self, values: &Map<String, Value>) -> Result<Map<String, Value>, CustomError> {
        let mut problems = Vec::new();
        let mut prepared = Map::new();
        for (field, value) in values {
            if !self.properties.contains_key(field) {
                problems.push(FieldProblem {
                    field: field.clone(),
                    wants: "not a field of the schema".into(),
                });
                continue;
            }
            prepared.insert(field.clone(), coerce(self.kind(field), value));
        }
        let instance = Value::Object(prepared.clone());
        let mut refused = BTreeSet::new();
        for error in self.validator.iter_errors(&instance) {
            let path = error.instance_path().to_string();
            let field = path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            if field.is_empty() {
                // The object as a whole: a required field is missing, or one is not allowed.
                for missing in self.missing_required(&prepared) {
                    if refused.insert(missing.clone()) {
                        problems.push(FieldProblem {
                            wants: format!("required: {}", self.wants(&missing)),
                            field: missing,
                        });
                    }
                }
            } else if refused.insert(field.clone()) && values.contains_key(&field) {
                problems.push(FieldProblem {
                    wants: self.wants(&field),
                    field,
                });
            }
        }
        if problems.is_empty() {
            Ok(prepared)
        } else {
            problems.sort_by(|a, b| a.field.cmp(&b.field));
            Err(CustomError::Invalid {
                schema: self.name_or_id().to_string(),
                problems,
            })
        }
    }

    /// Read from the schema itself: the validator reports them without a field's path.
    fn missing_required(&self, values: &Map<String, Value>) -> Vec<String> {
        self.required
            .iter()
            .filter(|r| !values.contains_key(*r))
            .cloned()
            .collect()
    }

    fn name_or_id(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }
}

fn plain_decimal(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}

fn coerce(kind: Kind, value: &Value) -> Value {
    let Value::String(s) = value else {
        return value.clone();
    };
    let coerced = match kind {
        // Only an integer's own text: not "007", "+5" or "-0", whose meaning a sender may not share.
        Kind::Integer => s
            .parse::<i64>()
            .ok()
            .filter(|n| n.to_string() == *s)
            .map(Value::from),
        // Plain decimal notation only: digits, an optional sign and fraction; no exponent.
        Kind::Number => plain_decimal(s)
            .then(|| s.parse::<f64>().ok())
            .flatten()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Kind::Boolean => match s.as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        Kind::Other => None,
    };
    coerced.unwrap_or_else(|| value.clone())
}

impl From<&CustomRecordRead> for Known {
    fn from(r: &CustomRecordRead) -> Self {
        Self {
            version: r.version,
            divisions: r.divisions.clone(),
            timestamps: r.custom_attributes_timestamps.clone(),
        }
    }
}

/// What became of a write to a custom-attributes record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomOutcome {
    pub schema_id: String,
    pub record_id: String,
    /// The keys written, in order.
    pub keys: Vec<String>,
    /// Whether Genesys showed every key with its value, written after the write began: the write's
    /// answer, or a read back.
    pub verified: bool,
    /// The keys Genesys did not show as written (all of them when nothing showed the record).
    pub unconfirmed: Vec<String>,
    /// Whether this write created the record.
    pub created: bool,
    /// Version conflicts re-read and retried.
    pub conflicts: u32,
    pub calls: u32,
}

/// What a record's lane merges: the values, under the schema the latest caller named.
pub struct RecordValues {
    schema: Arc<Schema>,
    values: Map<String, Value>,
}

impl Merge for RecordValues {
    fn merge(&mut self, later: Self) {
        self.values.extend(later.values);
        self.schema = later.schema;
    }
}

type Pending = Batch<RecordValues, Result<CustomOutcome, CustomError>>;

impl CustomOutcome {
    /// The outcome as one caller of a shared write sees it: its own keys.
    fn for_keys(mut self, keys: &[String]) -> Self {
        self.unconfirmed.retain(|k| keys.contains(k));
        self.verified = self.verified && self.unconfirmed.is_empty();
        self.keys = keys.to_vec();
        self
    }
}

/// The org's custom attributes: its schemas, what it knows of records, and each record's lane.
/// Cheap to clone.
#[derive(Clone)]
pub struct CustomAttributes {
    /// Schemas by the reference a sender used (id or name), and by id.
    schemas: moka::future::Cache<String, Arc<Schema>>,
    /// What Genesys last showed of each record (a read, or a write's answer), to this replica or
    /// (on Redis) any: a record is amended with the version last shown, and a stale one costs a
    /// conflict and a read, never a field.
    known: Arc<dyn Records>,
    /// The divisions a record Patchbay creates belongs to.
    divisions: Arc<Vec<String>>,
    /// Each record's lane: its writes run one at a time, so two of this replica's never conflict,
    /// and those that wait share the next write.
    lanes: Lanes<RecordKey, RecordValues, Result<CustomOutcome, CustomError>>,
    delivery: Arc<DeliverySettings>,
}

impl CustomAttributes {
    pub fn new(
        schema_ttl: Duration,
        divisions: Vec<String>,
        delivery: DeliverySettings,
        known: Arc<dyn Records>,
    ) -> Self {
        Self {
            lanes: Lanes::default(),
            delivery: Arc::new(delivery),
            schemas: moka::future::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(schema_ttl)
                .build(),
            known,
            divisions: Arc::new(divisions),
        }
    }

    /// The schema `reference` names (an id, or a name through the listing): from the cache, or
    /// read once however many writes ask at the same time. Each read is one admitted call.
    pub async fn schema(
        &self,
        updater: &Updater,
        reference: &str,
        deadline: Instant,
    ) -> Result<Arc<Schema>, CustomError> {
        let load = async {
            updater.admit_calls(1, deadline).await?;
            let mut cx = CallContext::until(deadline);
            let genesys = updater.genesys();
            let read = if uuid::Uuid::parse_str(reference).is_ok() {
                match genesys.get_custom_schema(&mut cx, reference).await {
                    Ok(read) => read,
                    Err(e) if e.status() == Some(404) => {
                        return Err(CustomError::SchemaNotFound(reference.to_string()))
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                genesys
                    .list_custom_schemas(&mut cx)
                    .await?
                    .into_iter()
                    .find(|s| s.json_schema.get("title").and_then(Value::as_str) == Some(reference))
                    .ok_or_else(|| CustomError::SchemaNotFound(reference.to_string()))?
            };
            Ok(Arc::new(Schema::compile(&read)?))
        };
        self.schemas
            .try_get_with(reference.to_string(), load)
            .await
            .map_err(|e: Arc<CustomError>| (*e).clone())
    }

    /// Forgets a schema, so the next write reads it again.
    async fn forget_schema(&self, schema: &Schema) {
        let stale: Vec<String> = self
            .schemas
            .iter()
            .filter(|(_, s)| s.id == schema.id)
            .map(|(k, _)| (*k).clone())
            .collect();
        for k in stale {
            self.schemas.invalidate(&k).await;
        }
    }

    /// The Genesys calls a write to conversation `cid`'s record of `schema` takes when all goes
    /// well: a read first when nothing is known of the record, and the write, whose answer shows
    /// the record (a read back only when it does not).
    pub async fn calls_needed(&self, cid: ConversationId, schema: &Schema) -> u32 {
        let known = self
            .known
            .get(&(cid, record_id(&cid, &schema.id)))
            .await
            .is_some();
        Self::calls_for(known)
    }

    fn calls_for(known: bool) -> u32 {
        1 + u32::from(!known)
    }

    /// Writes `values` (prepared by `schema`) to conversation `cid`'s record of `schema` by
    /// `asked.deadline`, and, when `asked.verify`, verifies it by what Genesys shows of the record
    /// (the write's answer, else reads back) until every key shows its value.
    ///
    /// Writes to one record go through its lane: the first lingers briefly (`delivery.linger_ms`,
    /// longer as the budget fills) so a burst shares one write, and those that come while a write
    /// is under way share the next. Each caller is answered for its own keys; `asked.written`
    /// hears once Genesys accepted the write.
    pub async fn write(
        &self,
        updater: &Updater,
        cid: ConversationId,
        schema: Arc<Schema>,
        values: Map<String, Value>,
        asked: Asked,
    ) -> Result<CustomOutcome, CustomError> {
        let key = (cid, record_id(&cid, &schema.id));
        let keys = values.keys().cloned().collect();
        let (answer, idle) =
            self.lanes
                .join(key.clone(), RecordValues { schema, values }, keys, asked);
        if idle {
            // The lane's writes outlive any one caller (each is answered by its deadline), so they
            // run on a task of their own, in the trace of the write that opened the lane.
            let lane = self.clone();
            let updater = updater.clone();
            tokio::spawn(
                async move { lane.drain(&updater, key).await }.instrument(tracing::Span::current()),
            );
        }
        let merged = answer.await.unwrap_or_else(|_| {
            Err(CustomError::Update(UpdateError::Upstream(
                GenesysError::InvalidResponse("the record's lane stopped".into()),
            )))
        });
        let outcome = match &merged {
            Ok(o) if o.verified => "verified",
            Ok(_) => "unverified",
            Err(CustomError::Conflict(_)) => "conflict",
            Err(_) => "failed",
        };
        metrics::counter!(crate::metrics::CUSTOM_WRITES, "outcome" => outcome).increment(1);
        merged
    }

    /// Runs a record's lane until nothing waits in it: each round makes one write of every write
    /// that came, and answers each of its callers for its own keys.
    async fn drain(&self, updater: &Updater, key: RecordKey) {
        let linger = || self.delivery.linger(updater.genesys().budget_pressure());
        self.lanes
            .drain(key.clone(), linger, |mut batch| {
                let key = key.clone();
                async move {
                    let result = self.write_and_verify(updater, &key, &mut batch).await;
                    if batch.callers() > 1 {
                        metrics::counter!(crate::metrics::COALESCED)
                            .increment(batch.callers() as u64 - 1);
                    }
                    batch.answer(|keys| result.clone().map(|o| o.for_keys(keys)));
                }
            })
            .await
    }

    /// Makes one write of `batch` (and of what joins it before the write is sent) and verifies
    /// it.
    ///
    /// A record nobody knows is written under this replica's claim on it: another replica that
    /// finds it unknown too waits, and amends it with what this one learnt, instead of creating
    /// it again over this one's fields.
    async fn write_and_verify(
        &self,
        updater: &Updater,
        key: &RecordKey,
        batch: &mut Pending,
    ) -> Result<CustomOutcome, CustomError> {
        let known = match self.known.get(key).await {
            Some(known) => Some(known),
            None => match self.claim(key, batch.deadline).await? {
                Claimed::Ours(token) => {
                    let written = self.write_known(updater, key, batch, None).await;
                    self.known.end_claim(key, &token).await;
                    return written;
                }
                Claimed::Learnt(known) => Some(known),
            },
        };
        self.write_known(updater, key, batch, known).await
    }

    /// The claim on unknown record `key`: this replica's, or, once another replica that held it
    /// learnt the record, what it learnt. Waiting past `deadline` is a conflict.
    async fn claim(&self, key: &RecordKey, deadline: Instant) -> Result<Claimed, CustomError> {
        let token = uuid::Uuid::new_v4().to_string();
        // Held for as long as this write may take; ended as soon as it is answered.
        let hold = deadline.saturating_duration_since(Instant::now()) + CALL_ALLOWANCE;
        loop {
            if self.known.claim_create(key, &token, hold).await {
                return Ok(Claimed::Ours(token));
            }
            tokio::time::sleep(CLAIM_POLL).await;
            if let Some(known) = self.known.get(key).await {
                return Ok(Claimed::Learnt(known));
            }
            if Instant::now() >= deadline {
                // Another writer held the record all along: one conflict, answered honestly.
                return Err(CustomError::Conflict(1));
            }
        }
    }

    /// [`CustomAttributes::write_and_verify`] of a record `known` as given (`None`: read it first).
    async fn write_known(
        &self,
        updater: &Updater,
        cache_key: &RecordKey,
        batch: &mut Pending,
        known: Option<Known>,
    ) -> Result<CustomOutcome, CustomError> {
        let (cid, rid) = (cache_key.0, cache_key.1.clone());
        let schema = batch.values.schema.clone();
        let deadline = batch.deadline;
        updater
            .admit_calls(Self::calls_for(known.is_some()), deadline)
            .await?;
        let genesys = updater.genesys();
        let mut cx = CallContext::until(deadline);
        let mut current = match known {
            Some(k) => Some(k),
            None => self.read(updater, &mut cx, cache_key).await?,
        };
        let before = current
            .as_ref()
            .map(|k| k.timestamps.clone())
            .unwrap_or_default();
        let mut conflicts = 0;
        let (created, shown);
        loop {
            // Writes that came while the record was read go in this write too.
            self.lanes.gather(cache_key, batch);
            let body = CustomRecordWrite {
                id: rid.clone(),
                schema_id: current.is_none().then(|| schema.id.clone()),
                version: current.as_ref().map(|k| k.version),
                divisions: current
                    .as_ref()
                    .map_or_else(|| self.divisions.to_vec(), |k| k.divisions.clone()),
                custom_attributes: batch.values.values.clone(),
            };
            let sent = match &current {
                None => genesys.put_custom_record(&mut cx, &cid, &body).await,
                Some(_) => genesys.patch_custom_record(&mut cx, &cid, &body).await,
            };
            match sent {
                Ok(record) => {
                    created = current.is_none();
                    shown = record;
                    batch.written();
                    break;
                }
                // Another writer moved the record on (409), created it (409 on the create) or
                // deleted it (404 on the amend): read it again and write again.
                Err(e)
                    if matches!(e.status(), Some(409))
                        || (e.status() == Some(404) && current.is_some()) =>
                {
                    self.known.forget(cache_key).await;
                    conflicts += 1;
                    metrics::counter!(crate::metrics::CUSTOM_CONFLICTS).increment(1);
                    if conflicts > MAX_CONFLICTS || Instant::now() >= deadline {
                        return Err(CustomError::Conflict(conflicts));
                    }
                    updater.admit_calls(2, deadline).await?;
                    current = self.read(updater, &mut cx, cache_key).await?;
                }
                Err(e) => {
                    self.known.forget(cache_key).await;
                    if e.status() == Some(400) {
                        // Perhaps the schema changed under the cached copy: read it next time.
                        self.forget_schema(&schema).await;
                    }
                    return Err(refused(updater, &mut cx, cid, e).await);
                }
            }
        }
        let values = batch.values.values.clone();
        let keys: Vec<String> = values.keys().cloned().collect();
        let outcome = |unconfirmed: Vec<String>, calls: u32| CustomOutcome {
            schema_id: schema.id.clone(),
            record_id: rid.clone(),
            verified: unconfirmed.is_empty(),
            keys: keys.clone(),
            unconfirmed,
            created,
            conflicts,
            calls,
        };
        // The write's answer shows the record as it stands after the write, as a read back would:
        // it verifies the write when it shows every field with its value, written after `before`.
        match &shown {
            Some(record) => self.learn(cache_key, record, &schema).await,
            // What Patchbay knows now is stale: the next write reads first.
            None => self.known.forget(cache_key).await,
        }
        let answered = unconfirmed_keys(&values, &before, shown.as_ref());
        if answered.is_empty() || !batch.verify {
            return Ok(outcome(answered, cx.calls()));
        }
        // Not shown by the answer: a read is admitted now, or the write stays unverified, never
        // guessed.
        if updater.admit_calls(1, deadline).await.is_err() {
            return Ok(outcome(answered, cx.calls()));
        }
        let settings = updater.verify_settings();
        let give_up = (Instant::now() + settings.timeout()).min(deadline);
        let mut wait = Duration::ZERO;
        let mut unconfirmed = keys.clone();
        let mut repaired = false;
        loop {
            tokio::time::sleep(wait).await;
            let read = match genesys.get_custom_record(&mut cx, &cid, &rid).await {
                Ok(read) => read,
                // A read that fails leaves the write unverified, never refused: it was accepted.
                Err(e) => {
                    tracing::warn!(conversation_id = %cid, error = %e, "could not read the custom attributes back");
                    break;
                }
            };
            if let Some(read) = &read {
                self.learn(cache_key, read, &schema).await;
            }
            unconfirmed = unconfirmed_keys(&values, &before, read.as_ref());
            if unconfirmed.is_empty() {
                break;
            }
            // A concurrent create replaced the record after this write: write the missing
            // fields again, once, on the version just read.
            let missing: Map<String, Value> = values
                .iter()
                .filter(|(k, _)| {
                    read.as_ref()
                        .is_some_and(|r| !r.custom_attributes.contains_key(*k))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let (false, false, Some(read)) = (repaired, missing.is_empty(), &read) {
                repaired = true;
                if updater.admit_calls(2, deadline).await.is_ok() {
                    let body = CustomRecordWrite {
                        id: rid.clone(),
                        schema_id: None,
                        version: Some(read.version),
                        divisions: read.divisions.clone(),
                        custom_attributes: missing,
                    };
                    if let Err(e) = genesys.patch_custom_record(&mut cx, &cid, &body).await {
                        tracing::warn!(conversation_id = %cid, error = %e, "could not write back the fields a concurrent write removed");
                        break;
                    }
                    continue;
                }
            }
            wait = settings.next_poll(wait);
            if Instant::now() + wait >= give_up {
                break;
            }
            if updater.admit_calls(1, deadline).await.is_err() {
                break;
            }
        }
        Ok(outcome(unconfirmed, cx.calls()))
    }

    /// Remembers what Genesys showed of a record (by a read or a write's answer), and drops the
    /// cached schema when the record stands under another version of it.
    async fn learn(&self, key: &RecordKey, record: &CustomRecordRead, schema: &Schema) {
        self.known.insert(key, &Known::from(record)).await;
        if record
            .schema
            .as_ref()
            .and_then(|s| s.version)
            .is_some_and(|v| v != schema.version)
        {
            self.forget_schema(schema).await;
        }
    }

    /// Reads the record, and remembers what it says.
    async fn read(
        &self,
        updater: &Updater,
        cx: &mut CallContext,
        key: &(ConversationId, String),
    ) -> Result<Option<Known>, CustomError> {
        let read = match updater
            .genesys()
            .get_custom_record(cx, &key.0, &key.1)
            .await
        {
            Ok(read) => read,
            Err(e) => return Err(refused(updater, cx, key.0, e).await),
        };
        let known = read.as_ref().map(Known::from);
        if let Some(k) = &known {
            self.known.insert(key, k).await;
        }
        Ok(known)
    }
}

/// The keys `read` does not show as written: absent, with another value, or with a timestamp no
/// newer than before the write (`before`; a field the record did not have needs only to be there).
fn unconfirmed_keys(
    values: &Map<String, Value>,
    before: &BTreeMap<String, String>,
    read: Option<&CustomRecordRead>,
) -> Vec<String> {
    let Some(read) = read else {
        return values.keys().cloned().collect();
    };
    values
        .iter()
        .filter(|(k, v)| {
            let shown = read
                .custom_attributes
                .get(*k)
                .is_some_and(|seen| same(seen, v));
            let fresh = match (before.get(*k), read.custom_attributes_timestamps.get(*k)) {
                (None, _) => true,
                (Some(old), Some(new)) => newer(new, old),
                (Some(_), None) => false,
            };
            !(shown && fresh)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Equal JSON values; numbers by value (Genesys may answer `5` as `5.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Whether timestamp `new` is later than `old` (RFC 3339); unparsable ones never are.
fn newer(new: &str, old: &str) -> bool {
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    };
    matches!((parse(new), parse(old)), (Some(n), Some(o)) if n > o)
}

/// A refused write or read in the caller's terms: a conversation that is gone or has ended, or
/// Genesys's refusal as it was.
async fn refused(
    updater: &Updater,
    cx: &mut CallContext,
    cid: ConversationId,
    error: GenesysError,
) -> CustomError {
    match error.status() {
        Some(404) => updater.explain_conversation(cx, cid, error).await.into(),
        _ => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::compile(&CustomSchemaRead {
            id: "s-1".into(),
            version: 1,
            enabled: Some(true),
            json_schema: json!({
                "title": "crm_case",
                "type": "object",
                "required": ["caseNumber"],
                "properties": {
                    "caseNumber": {"type": "string", "maxLength": 8},
                    "priority": {"allOf": [{"$ref": "#/definitions/priority"}]},
                    "amount": {"type": "number"},
                    "vip": {"type": "boolean"},
                    "note": {"type": ["string", "integer"]}
                },
                "definitions": {"priority": {"type": "integer", "minimum": 1, "maximum": 5}},
                "additionalProperties": false
            }),
        })
        .unwrap()
    }

    fn values(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unambiguous_strings_are_coerced_to_the_schemas_type_and_nothing_else_is() {
        let prepared = schema()
            .prepare(&values(json!({
                "caseNumber": "42", "priority": "3", "amount": "4.5", "vip": "true", "note": "7"
            })))
            .unwrap();
        assert_eq!(
            Value::Object(prepared),
            json!({"caseNumber": "42", "priority": 3, "amount": 4.5, "vip": true, "note": "7"})
        );
    }

    #[test]
    fn every_problem_names_its_field_and_what_the_schema_wants_never_the_value() {
        let Err(CustomError::Invalid {
            problems,
            schema: name,
        }) = schema().prepare(&values(
            json!({"priority": "9", "vip": "yes", "unknown": 1, "amount": "1e999"}),
        ))
        else {
            panic!("accepted")
        };
        assert_eq!(name, "crm_case");
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["amount", "caseNumber", "priority", "unknown", "vip"]
        );
        let text = list(&problems);
        assert!(text.contains("at most 5"), "{text}");
        assert!(text.contains("required"), "{text}");
        assert!(!text.contains("yes") && !text.contains("1e999"), "{text}");
    }

    #[test]
    fn every_replica_derives_the_same_record_id_and_another_per_schema() {
        let cid: ConversationId = "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a01".parse().unwrap();
        assert_eq!(record_id(&cid, "a"), record_id(&cid, "a"));
        assert_ne!(record_id(&cid, "a"), record_id(&cid, "b"));
    }

    #[test]
    fn a_field_is_confirmed_only_with_its_value_and_a_newer_timestamp() {
        let read = |v: Value, ts: &str| CustomRecordRead {
            id: "r".into(),
            divisions: vec![],
            schema: None,
            custom_attributes: values(json!({ "priority": v })),
            custom_attributes_timestamps: [("priority".to_string(), ts.to_string())].into(),
            version: 2,
        };
        let sent = values(json!({"priority": 3}));
        let before: BTreeMap<_, _> = [(
            "priority".to_string(),
            "2026-12-07T10:00:00.000Z".to_string(),
        )]
        .into();
        let old = read(json!(3), "2026-12-07T10:00:00.000Z");
        let new = read(json!(3.0), "2026-12-07T10:00:00.001Z");
        let other = read(json!(4), "2026-12-07T10:00:00.001Z");
        assert_eq!(unconfirmed_keys(&sent, &before, Some(&old)), ["priority"]);
        assert!(unconfirmed_keys(&sent, &before, Some(&new)).is_empty());
        assert_eq!(unconfirmed_keys(&sent, &before, Some(&other)), ["priority"]);
        assert!(unconfirmed_keys(&sent, &BTreeMap::new(), Some(&old)).is_empty());
        assert_eq!(unconfirmed_keys(&sent, &before, None), ["priority"]);
    }

    proptest! {
        #[test]
        fn an_integers_decimal_text_is_coerced_to_it(n in any::<i64>()) {
            let prepared = schema()
                .prepare(&values(json!({"caseNumber": "c", "note": 1, "priority": n.to_string()})));
            match prepared {
                Ok(p) => prop_assert_eq!(&p["priority"], &json!(n)),
                Err(CustomError::Invalid { problems, .. }) => {
                    prop_assert!(!(1..=5).contains(&n));
                    prop_assert_eq!(problems[0].field.as_str(), "priority");
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn a_string_that_is_not_exactly_an_integer_is_left_as_it_is(s in "[0-9 .+eE-]{0,6}") {
            prop_assume!(s.parse::<i64>().map(|n| n.to_string() != s).unwrap_or(true));
            // "+5", "007", "-0" and the rest of what only looks like an integer stay text.
            let coerced = coerce(Kind::Integer, &json!(s));
            prop_assert_eq!(coerced, json!(s));
        }
    }
}
