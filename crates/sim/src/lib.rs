//! An in-memory Genesys Cloud org that speaks the real shapes, with faults tests can inject.
//!
//! It serves the login host (`POST /oauth/token`) and the API host (`/api/v2/...`) on one port, which
//! is also how Genesys's SDKs derive the login URL from a base path that has no `api.` in it. It
//! depends on no other crate of the workspace: what it says is written from Genesys's own SDK models,
//! never from Patchbay's client, so a misreading in the client is not repeated here.
//!
//! Map of the crate:
//! - [`Simulator`] (this file): the org's state and its server: `new`, `router`, `spawn`, `describe`.
//! - [`Control`] (`sim.control()`): the one interface tests, the benchmark and the demo drive it
//!   through: how Genesys behaves (latency, 429s, 5xx, lost events, revoked tokens, …), the org's
//!   calls, and what the simulator saw. Its methods are in this file and in `notifications`.
//! - [`wire`]: the wire shapes, header names and topic names, from the SDK's models.
//! - `routes`: the REST API: the grant, conversations, attributes, the rate limit, the call log.
//! - `analytics`: the conversation details query.
//! - [`notifications`]: channels, subscriptions, queues and each channel's WebSocket.
//! - `seed`: the conversations a fresh simulator holds, with fixed ids.
//! - `errors`: Genesys's `ErrorBody` answer.

mod analytics;
mod custom;
mod errors;
pub mod notifications;
mod routes;
mod seed;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::time::Instant;

pub use crate::notifications::attributes_event_frame;
pub use crate::wire::Conversation;
pub use custom::{SEED_SCHEMA_ID, SEED_SCHEMA_NAME};
pub use routes::PERMISSIONS;

pub use seed::{
    SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT, SEED_ACTIVE_CALL_CUSTOMER, SEED_CALLER_AGENT,
    SEED_CALLER_CALL, SEED_CALLER_CUSTOMER, SEED_CALLER_NUMBER, SEED_CHAT, SEED_CHAT_CUSTOMER,
    SEED_ENDED, SEED_ENDED_CUSTOMER, SEED_ROLES, SEED_TRANSFER, SEED_TRANSFER_AGENT_NEW,
    SEED_TRANSFER_AGENT_OLD,
};

/// How many calls and writes the simulator remembers: enough for any test, bounded for a long
/// `patchbay sim` or a benchmark (totals stay exact).
pub const LOG_LIMIT: usize = 200_000;

/// The OAuth client the simulator accepts unless told otherwise.
pub const DEFAULT_CLIENT_ID: &str = "patchbay-sim";
pub const DEFAULT_CLIENT_SECRET: &str = "patchbay-sim-secret";

/// Which calls a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Any,
    Token,
    GetConversation,
    PatchAttributes,
    PatchSecureAttributes,
    AnalyticsQuery,
}

/// A call the simulator received, for tests to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    pub op: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// When the call arrived.
    pub at: Instant,
}

/// One accepted attribute write, as the simulator recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub conversation: String,
    pub participant: String,
    pub attributes: Vec<(String, String)>,
}

/// The ids of a call made by [`Simulator::add_live_calls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCall {
    pub conversation: String,
    pub customer: String,
    pub agent: String,
}

impl LiveCall {
    /// The ids of the `i`-th added call.
    pub fn numbered(i: usize) -> Self {
        Self {
            conversation: format!("00000000-0000-4000-8000-{i:012}"),
            customer: format!("00000000-0000-4000-9000-{:012}", i * 2),
            agent: format!("00000000-0000-4000-9000-{:012}", i * 2 + 1),
        }
    }
}

/// An answer to give instead of the real one, a number of times.
#[derive(Debug, Clone)]
struct ScriptedFault {
    op: Op,
    status: u16,
    retry_after: Option<u64>,
    remaining: usize,
}

/// An answer given instead of the real one on every `every`-th matching call.
#[derive(Debug, Clone)]
struct PeriodicFault {
    op: Op,
    every: usize,
    status: u16,
    retry_after: Option<u64>,
    seen: usize,
}

#[derive(Debug)]
struct PendingWrite {
    visible_at: Instant,
    conversation: String,
    participant: String,
    attributes: Vec<(String, String)>,
}

#[derive(Debug)]
struct State {
    client_id: String,
    client_secret: String,
    token_lifetime_s: u64,
    grant_reject_status: u16,
    tokens: HashSet<String>,
    /// Every token ever issued, revoked or not, so tests can look for them in logs.
    issued: Vec<String>,
    grants: usize,
    conversations: HashMap<String, Conversation>,
    pending: Vec<PendingWrite>,
    /// The most recent calls, at most [`LOG_LIMIT`]; `counts` keeps exact totals.
    calls: VecDeque<RecordedCall>,
    counts: HashMap<&'static str, usize>,
    latency: Duration,
    /// Every accepted attribute write (the last [`LOG_LIMIT`]), in order.
    writes: VecDeque<Write>,
    visibility_delay: Duration,
    ended_patch_status: u16,
    faults: VecDeque<ScriptedFault>,
    periodic: Vec<PeriodicFault>,
    /// API calls a token may make in one window; `None` counts without refusing.
    rate_limit: Option<u32>,
    /// Each token's current window: when it started and how many calls it has counted.
    windows: HashMap<String, (Instant, u32)>,
    /// The analytics details query's own limit per token and window, on top of the token's.
    analytics_rate_limit: Option<u32>,
    /// Each token's current window of analytics details queries.
    analytics_windows: HashMap<String, (Instant, u32)>,
    /// API calls answered 429, by the limit or by a scripted fault.
    rate_limited: usize,
    /// How long a new conversation takes to show in analytics.
    analytics_lag: Duration,
    /// When each conversation was added (seeds: at start), for the analytics lag.
    added_at: HashMap<String, Instant>,
    /// Channels, subscriptions and queues of the Notifications API.
    notifications: notifications::Notifications,
    /// Each conversation's secure attributes, by conversation id.
    secure: HashMap<String, wire::ConversationSecureAttributes>,
    /// Custom-attributes schemas and records.
    custom: custom::Custom,
    /// Permissions the client's role lacks: each call that needs one answers 403.
    revoked: std::collections::HashSet<String>,
}

impl State {
    /// Applies the pending writes due by `now` to their conversations.
    fn apply_due_writes(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|w| w.visible_at <= now);
        self.pending = later;
        for w in due {
            if let Some(p) = self.conversations.get_mut(&w.conversation).and_then(|c| {
                c.participants
                    .iter_mut()
                    .find(|p| p.id.eq_ignore_ascii_case(&w.participant))
            }) {
                p.attributes.extend(w.attributes);
            }
        }
    }
}

/// Genesys's rate window: calls are counted per token over a minute.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// What `inin-ratelimit-allowed` says while the simulator enforces no limit: far past what the
/// benchmark's fastest loop makes in a minute (over 1,000,000 calls on 2 cores), so "no limit" never
/// answers 429.
pub const UNLIMITED_ALLOWED: u32 = 1_000_000_000;

/// A token's standing after a call, as the `inin-ratelimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub count: u32,
    pub allowed: u32,
    /// Whole seconds until the window resets (rounded up).
    pub reset_s: u64,
}

impl State {
    /// Counts one API call of `token` at `now` in its window, which starts with the first call and
    /// resets a minute later.
    fn count_call(&mut self, token: &str, now: Instant) -> Standing {
        count_in(&mut self.windows, self.rate_limit, token, now)
    }

    /// Counts one analytics details query of `token` against that endpoint's own limit, when one
    /// is set.
    pub(crate) fn count_analytics_query(&mut self, token: &str, now: Instant) -> Option<Standing> {
        let limit = self.analytics_rate_limit?;
        Some(count_in(
            &mut self.analytics_windows,
            Some(limit),
            token,
            now,
        ))
    }
}

/// Counts one call of `token` at `now` in its window of `windows`, under `limit`.
fn count_in(
    windows: &mut HashMap<String, (Instant, u32)>,
    limit: Option<u32>,
    token: &str,
    now: Instant,
) -> Standing {
    let window = windows.entry(token.to_string()).or_insert((now, 0));
    if now.duration_since(window.0) >= RATE_WINDOW {
        *window = (now, 0);
    }
    window.1 += 1;
    let left = RATE_WINDOW.saturating_sub(now.duration_since(window.0));
    Standing {
        count: window.1,
        allowed: limit.unwrap_or(UNLIMITED_ALLOWED),
        reset_s: left.as_millis().div_ceil(1000).max(1) as u64,
    }
}

/// A handle on a running (or not yet running) simulated org. Clones share the org.
#[derive(Clone, Debug)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
}

/// The simulator's test controls, in one place: how Genesys behaves (faults, limits, delays, the
/// notification service's misbehaviour), the org's conversations (calls that start, end or are
/// transferred), and what the simulator saw (calls, writes, grants). Tests and the benchmark drive
/// the simulator through it; the simulator's own routes never need it. Clones share the org.
#[derive(Clone, Debug)]
pub struct Control(Simulator);

impl Control {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock()
    }
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Simulator {
    /// An org seeded with a few conversations, accepting [`DEFAULT_CLIENT_ID`] and [`DEFAULT_CLIENT_SECRET`].
    pub fn new() -> Self {
        let conversations = seed::conversations()
            .into_iter()
            .map(|c| (c.id.to_lowercase(), c))
            .collect();
        Self {
            state: Arc::new(Mutex::new(State {
                client_id: DEFAULT_CLIENT_ID.into(),
                client_secret: DEFAULT_CLIENT_SECRET.into(),
                token_lifetime_s: 86_400,
                grant_reject_status: 401,
                tokens: HashSet::new(),
                issued: Vec::new(),
                grants: 0,
                conversations,
                pending: Vec::new(),
                calls: VecDeque::new(),
                counts: HashMap::new(),
                latency: Duration::ZERO,
                writes: VecDeque::new(),
                visibility_delay: Duration::ZERO,
                ended_patch_status: 400,
                faults: VecDeque::new(),
                periodic: Vec::new(),
                rate_limit: None,
                rate_limited: 0,
                analytics_rate_limit: None,
                analytics_windows: HashMap::new(),
                windows: HashMap::new(),
                analytics_lag: Duration::ZERO,
                added_at: HashMap::new(),
                notifications: notifications::Notifications::default(),
                secure: HashMap::new(),
                custom: custom::Custom::seeded(),
                revoked: Default::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not wedge a simulator other tests still use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers a `ConversationQuery` over the conversations analytics has caught up with.
    pub(crate) fn analytics_query(
        &self,
        query: &serde_json::Value,
    ) -> Result<crate::wire::AnalyticsConversationQueryResponse, String> {
        let s = self.lock();
        let now = Instant::now();
        let caught_up = s.conversations.iter().filter(|(id, _)| {
            s.added_at
                .get(*id)
                .is_none_or(|at| now.duration_since(*at) >= s.analytics_lag)
        });
        analytics::answer(caught_up.map(|(_, c)| c), query)
    }

    /// The test controls of this simulated org.
    pub fn control(&self) -> Control {
        Control(self.clone())
    }

    /// The simulator's router; `serve` it on any listener.
    pub fn router(&self) -> Router {
        routes::router(self.clone())
    }

    /// Serves the simulator on `listener` in the background and returns its base URL.
    pub fn spawn(&self, listener: TcpListener) -> String {
        let addr = listener.local_addr().expect("listener has an address");
        let router = self.router();
        tokio::spawn(async move {
            let _ = axum::serve(without_nagle(listener), router).await;
        });
        format!("http://{addr}")
    }

    // ----- set-up and fault injection -----

    /// What the simulator holds, one conversation a line: its id, what it is for, the caller's
    /// number, and each participant's purpose, id and whether it is still connected. Seeded
    /// conversations come first, in the order of [`seed::SEED_ROLES`], then the rest by id.
    pub fn describe(&self) -> String {
        let s = self.lock();
        let mut ids: Vec<&String> = s.conversations.keys().collect();
        let rank = |id: &str| {
            seed::SEED_ROLES
                .iter()
                .position(|(seeded, _)| *seeded == id)
                .unwrap_or(usize::MAX)
        };
        ids.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
        let mut out = String::new();
        for id in ids {
            let c = &s.conversations[id];
            let role = seed::SEED_ROLES
                .iter()
                .find(|(seeded, _)| *seeded == id.as_str())
                .map(|(_, role)| *role)
                .unwrap_or(if c.is_ended() {
                    "ended call"
                } else {
                    "live call (added)"
                });
            out.push_str(&format!("  {} {role}\n", c.id));
            if let Some(ani) = c.participants.iter().find_map(|p| p.ani.as_deref()) {
                out.push_str(&format!("      caller {ani}\n"));
            }
            for p in &c.participants {
                out.push_str(&format!(
                    "      {:<9} {}{}\n",
                    p.purpose.as_deref().unwrap_or("-"),
                    p.id,
                    if p.is_connected() { "" } else { " (left)" }
                ));
            }
        }
        out
    }

    /// The caller's number of the `i`-th call [`Simulator::start_call`] starts.
    pub fn caller_number(i: usize) -> String {
        format!("tel:+1555{i:07}")
    }
}

impl Control {
    /// The `expires_in` of granted tokens.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.lock().token_lifetime_s = seconds;
    }

    /// The status of a rejected grant: Genesys's is 400 or 401.
    pub fn set_grant_reject_status(&self, status: u16) {
        self.lock().grant_reject_status = status;
    }

    /// Added before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Enforces Genesys's per-token limit: `per_minute` API calls in a token's window, then 429 with
    /// `Retry-After` (the seconds left in the window) and the code `too.many.requests`. `None` (the
    /// default) counts calls and reports them without refusing any.
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        self.lock().rate_limit = per_minute;
    }

    /// Enforces a limit of the analytics details query's own, as Genesys's analytics namespace does:
    /// `per_minute` queries in a token's window, then 429 with `Retry-After`. Its answers report that
    /// limit's standing in the `inin-ratelimit-*` headers. `None` (the default) leaves the query
    /// under the token's limit only.
    pub fn set_analytics_rate_limit(&self, per_minute: Option<u32>) {
        let mut s = self.lock();
        s.analytics_rate_limit = per_minute;
        s.analytics_windows.clear();
    }

    /// How long an accepted write stays invisible to reads (eventual consistency).
    pub fn set_visibility_delay(&self, delay: Duration) {
        self.lock().visibility_delay = delay;
    }

    /// What a PATCH on an ended conversation answers (400, 404 or 409: Genesys's is unconfirmed).
    pub fn set_ended_patch_status(&self, status: u16) {
        self.lock().ended_patch_status = status;
    }

    /// The next `times` calls matching `op` answer `status` with an `ErrorBody`.
    pub fn fail_next(&self, op: Op, status: u16, times: usize) {
        self.push_fault(op, status, None, times);
    }

    /// The next `times` calls matching `op` answer 429 with `Retry-After: seconds`.
    pub fn rate_limit_next(&self, op: Op, retry_after_s: u64, times: usize) {
        self.push_fault(op, 429, Some(retry_after_s), times);
    }

    fn push_fault(&self, op: Op, status: u16, retry_after: Option<u64>, remaining: usize) {
        self.lock().faults.push_back(ScriptedFault {
            op,
            status,
            retry_after,
            remaining,
        });
    }

    /// Every `every`-th call matching `op` answers `status` (429 with `Retry-After: retry_after_s`).
    pub fn fail_every(&self, op: Op, every: usize, status: u16, retry_after_s: Option<u64>) {
        self.lock().periodic.push(PeriodicFault {
            op,
            every: every.max(1),
            status,
            retry_after: retry_after_s,
            seen: 0,
        });
    }

    /// Drops every fault, scripted or periodic.
    pub fn clear_faults(&self) {
        let mut s = self.lock();
        s.faults.clear();
        s.periodic.clear();
    }

    /// Forgets every issued token, as an admin revoking them would: callers then get `bad.credentials`.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Ends a conversation now: sets `endTime` and disconnects every communication.
    pub fn end_conversation(&self, id: &str) {
        if let Some(c) = self.lock().conversations.get_mut(&id.to_lowercase()) {
            seed::end(c);
        }
        self.0.publish_conversation(id);
    }

    /// Transfers a live call to a new agent participant `to`: the old agent is disconnected.
    pub fn transfer(&self, id: &str, to: &str) {
        if let Some(c) = self.lock().conversations.get_mut(&id.to_lowercase()) {
            seed::transfer(c, to);
        }
        self.0.publish_conversation(id);
    }

    /// Adds the live call the demo finds by its caller's number ([`SEED_CALLER_NUMBER`]), started
    /// now, so analytics' day-aligned interval holds it whatever the date.
    pub fn add_caller_call(&self) {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("a time formats");
        self.insert_conversation(seed::call_from(
            SEED_CALLER_CALL,
            SEED_CALLER_CUSTOMER,
            SEED_CALLER_AGENT,
            SEED_CALLER_NUMBER,
            &now,
        ));
    }

    /// Starts the `i`-th numbered call afresh, now, from [`Simulator::caller_number`]: a live call
    /// whose start its queue pushes, as a call that just came in.
    pub fn start_call(&self, i: usize) -> LiveCall {
        let call = LiveCall::numbered(i);
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("a time formats");
        self.insert_conversation(seed::call_from(
            &call.conversation,
            &call.customer,
            &call.agent,
            &Simulator::caller_number(i),
            &now,
        ));
        call
    }

    /// Adds `n` live calls, each with a connected customer and agent, with ids derived from `n`'s
    /// index (`…-4000-8000-<index>` for the call, `…-4000-9000-<2·index>` and `<2·index+1>` for the
    /// customer and the agent), so a load generator in another process can name them.
    pub fn add_live_calls(&self, n: usize) -> Vec<LiveCall> {
        (0..n)
            .map(|i| {
                let call = LiveCall::numbered(i);
                self.insert_conversation(seed::live_call(&call));
                call
            })
            .collect()
    }

    /// Adds (or replaces) a conversation. Analytics shows it once `analytics_lag` has passed.
    pub fn insert_conversation(&self, conversation: Conversation) {
        let id = conversation.id.to_lowercase();
        {
            let mut s = self.lock();
            s.added_at.entry(id.clone()).or_insert_with(Instant::now);
            s.conversations.insert(id.clone(), conversation);
        }
        self.0.publish_conversation(&id);
    }

    /// How long a new conversation takes to show in the analytics details query (Genesys's lags
    /// by seconds).
    pub fn set_analytics_lag(&self, lag: Duration) {
        self.lock().analytics_lag = lag;
    }

    // ----- observation -----

    /// Counts of calls by operation, over the simulator's whole life.
    pub fn counts(&self) -> HashMap<&'static str, usize> {
        self.lock().counts.clone()
    }

    /// Every accepted attribute write (the last [`LOG_LIMIT`]), in order.
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.iter().cloned().collect()
    }

    /// Every access token the simulator has issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    /// How many API calls were answered 429.
    pub fn rate_limited(&self) -> usize {
        self.lock().rate_limited
    }

    pub fn grants(&self) -> usize {
        self.lock().grants
    }

    /// Every call received (the last [`LOG_LIMIT`]), in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.iter().cloned().collect()
    }

    /// When each call of an operation arrived, in order.
    pub fn call_times(&self, op: &str) -> Vec<Instant> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.op == op)
            .map(|c| c.at)
            .collect()
    }

    /// The secure attributes conversation `id` holds now, as a secure flow would read them.
    pub fn secure_attributes(
        &self,
        id: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        self.lock()
            .secure
            .get(&id.to_lowercase())
            .map(|s| s.attributes.clone())
    }

    /// Conversation `cid`'s custom-attributes record `rid`: its values, divisions and version.
    pub fn custom_record(
        &self,
        cid: &str,
        rid: &str,
    ) -> Option<(serde_json::Map<String, serde_json::Value>, Vec<String>, i64)> {
        custom::record(&self.lock().custom, cid, rid)
    }

    /// An org admin edits schema `id`: `json_schema` under its next version; `false` when there is
    /// no such schema.
    pub fn edit_custom_schema(&self, id: &str, json_schema: serde_json::Value) -> bool {
        custom::edit_schema(&mut self.lock().custom, id, json_schema)
    }

    /// Whether a bulk write's answer holds each record as it stands after the write (as Genesys
    /// documents it, and by default), or only each record's status.
    pub fn custom_answers_hold_records(&self, hold: bool) {
        self.lock().custom.answers_without_records = !hold;
    }

    /// Another writer (a flow) amends record `rid` of conversation `cid`; `false` when it does not
    /// exist.
    pub fn amend_custom_record(
        &self,
        cid: &str,
        rid: &str,
        values: std::collections::BTreeMap<String, serde_json::Value>,
    ) -> bool {
        custom::amend(&mut self.lock().custom, cid, rid, values)
    }

    /// Takes `permission` from the client's role: every call that needs it answers 403, as Genesys
    /// does (`missing.permissions`), until [`Control::grant`].
    pub fn revoke(&self, permission: &str) {
        self.lock().revoked.insert(permission.to_string());
    }

    /// Gives a revoked permission back.
    pub fn grant(&self, permission: &str) {
        self.lock().revoked.remove(permission);
    }

    /// How many calls of an operation were received (`"token"`, `"get_conversation"`, `"patch_attributes"`, …).
    pub fn count(&self, op: &str) -> usize {
        self.lock().counts.get(op).copied().unwrap_or(0)
    }

    /// A participant's attributes as they are stored now, visible or not yet.
    pub fn stored_attributes(
        &self,
        conversation: &str,
        participant: &str,
    ) -> Option<Vec<(String, String)>> {
        let s = self.lock();
        let mut attrs: std::collections::BTreeMap<String, String> = s
            .conversations
            .get(&conversation.to_lowercase())?
            .participant(participant)?
            .attributes
            .clone();
        for w in s.pending.iter().filter(|w| {
            w.conversation == conversation.to_lowercase()
                && w.participant.eq_ignore_ascii_case(participant)
        }) {
            attrs.extend(w.attributes.iter().cloned());
        }
        Some(attrs.into_iter().collect())
    }
}

/// `listener`, its connections sending each write at once. An event frame written just after a
/// pong would otherwise wait, under Nagle's algorithm, for the client's delayed ACK of the pong:
/// tens of milliseconds Genesys does not add.
pub fn without_nagle(
    listener: TcpListener,
) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}
