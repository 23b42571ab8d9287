//! The simulator's Notifications API: channels and their topic subscriptions, with the limits
//! `NOTIFICATIONS.md` lists (20 channels per OAuth client, the least recently used evicted,
//! unconnected first; 1,000 topics a channel; 24 hours of life, extended by subscribing), topics
//! refused for missing permissions, the routing queues a client lists to know what to subscribe,
//! and one WebSocket per channel: heartbeats, a pong for a ping, a second connection dropping the
//! first, and a queue-conversation event (the whole conversation) on every change.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{Control, Simulator};
use crate::errors::error;
use crate::wire::{attributes_topic, queue_topic};

/// Channels one OAuth client may hold; creating one more evicts one.
pub const MAX_CHANNELS: usize = 20;
/// Topics one channel may hold.
pub const MAX_TOPICS: usize = 1000;
/// How long a channel lives without a new subscription.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// `GET /api/v2/routing/queues`' page size when none is asked for.
pub const DEFAULT_QUEUE_PAGE: usize = 25;

/// One channel: its topics, when it expires, and how recently it was used.
#[derive(Debug, Clone)]
struct Channel {
    id: String,
    topics: Vec<String>,
    /// On the runtime's clock, so a test that pauses time sees channels lapse.
    expires: Instant,
    last_used: Instant,
    /// Whether a WebSocket is open on it (the least recently used unconnected channel goes first).
    connected: bool,
    /// The open socket's outbox, and which connection it is (a newer one replaces it).
    socket: Option<(u64, tokio::sync::mpsc::UnboundedSender<String>)>,
}

/// A topic the client may not see: its prefix, and the permission it lacks.
#[derive(Debug, Clone)]
struct Refusal {
    prefix: String,
    missing_permission: String,
}

/// What the Notifications API holds for the simulator's one OAuth client.
#[derive(Debug, Clone)]
pub struct Notifications {
    channels: Vec<Channel>,
    refusals: Vec<Refusal>,
    /// Routing queues, by id and name, in name order.
    queues: Vec<(String, String)>,
    /// Channels the 21st evicted, by id.
    evicted: Vec<String>,
    /// How often an open socket gets a heartbeat.
    heartbeat: Duration,
    connections: u64,
    /// Conversation events still to lose, as a feed without durability does.
    lose: usize,
    /// Whether an attribute write produces a queue event (Genesys does not promise one).
    write_events: bool,
    /// How late every event frame reaches the sockets.
    event_delay: Duration,
    /// Connections that went silent: open, but sending nothing (no heartbeat, no pong, no event).
    muted: std::collections::HashSet<u64>,
    /// How long a channel lives without a new subscription.
    lifetime: Duration,
    /// Until when the streaming service is down: sockets refused, events lost.
    outage_until: Option<Instant>,
}

/// Genesys sends a heartbeat about every 30 s.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// The queue every seeded conversation is routed through.
pub const SEED_QUEUE: &str = "7e1d3b50-2c4a-4f6e-9b8d-0a1c2e3f4a01";

impl Default for Notifications {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            refusals: Vec::new(),
            queues: vec![(SEED_QUEUE.to_string(), "Support".to_string())],
            evicted: Vec::new(),
            heartbeat: HEARTBEAT,
            connections: 0,
            lose: 0,
            write_events: true,
            event_delay: Duration::ZERO,
            muted: Default::default(),
            lifetime: CHANNEL_LIFETIME,
            outage_until: None,
        }
    }
}

/// A topic's state in a subscription answer (`ChannelTopic`).
fn topic_entry(topic: &str, refusal: Option<&Refusal>) -> Value {
    match refusal {
        None => json!({"id": topic, "state": "Permitted"}),
        Some(r) => json!({
            "id": topic,
            "state": "Rejected",
            "rejectionReason": format!("Missing permission {}", r.missing_permission),
            "missingPermissions": [r.missing_permission],
        }),
    }
}

impl Notifications {
    /// Creates a channel; past [`MAX_CHANNELS`], the least recently used goes, unconnected first.
    fn create(&mut self, now: Instant) -> Channel {
        if self.channels.len() >= MAX_CHANNELS {
            let victim = self
                .channels
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| (c.connected, c.last_used))
                .map(|(i, _)| i)
                .expect("there are channels");
            let gone = self.channels.remove(victim);
            self.evicted.push(gone.id);
        }
        let channel = Channel {
            id: uuid::Uuid::new_v4().to_string(),
            topics: Vec::new(),
            expires: Instant::now() + self.lifetime,
            last_used: now,
            connected: false,
            socket: None,
        };
        self.channels.push(channel.clone());
        channel
    }

    fn channel_mut(&mut self, id: &str) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|c| c.id == id)
    }

    fn refusal(&self, topic: &str) -> Option<&Refusal> {
        self.refusals
            .iter()
            .find(|r| topic.to_ascii_lowercase().starts_with(&r.prefix))
    }

    /// The ids of the channels held now.
    pub fn channel_ids(&self) -> Vec<String> {
        self.channels.iter().map(|c| c.id.clone()).collect()
    }

    /// The topics channel `id` is subscribed to.
    pub fn topics(&self, id: &str) -> Option<Vec<String>> {
        self.channels
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.topics.clone())
    }

    /// Channels a newer one evicted.
    pub fn evicted(&self) -> &[String] {
        &self.evicted
    }

    /// Marks a channel as having a WebSocket open (or not).
    pub fn set_connected(&mut self, id: &str, connected: bool) {
        if let Some(c) = self.channel_mut(id) {
            c.connected = connected;
            c.last_used = Instant::now();
        }
    }
}

impl Control {
    /// Refuses every topic starting with `prefix` (case-insensitive), as Genesys does a topic the
    /// client lacks `missing_permission` for.
    pub fn refuse_topics(&self, prefix: &str, missing_permission: &str) {
        self.lock().notifications.refusals.push(Refusal {
            prefix: prefix.to_ascii_lowercase(),
            missing_permission: missing_permission.to_string(),
        });
    }

    /// Adds a routing queue; `GET /api/v2/routing/queues` lists it in name order.
    pub fn add_queue(&self, id: &str, name: &str) {
        let mut s = self.lock();
        let queues = &mut s.notifications.queues;
        queues.push((id.to_string(), name.to_string()));
        queues.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    }

    /// Marks channel `id` as having a WebSocket open, as a client's connection does.
    pub fn connect_channel(&self, id: &str) {
        self.lock().notifications.set_connected(id, true);
    }

    /// A copy of what the Notifications API holds now.
    pub fn notifications(&self) -> Notifications {
        self.lock().notifications.clone()
    }
}

/// The frame of the attributes detail event for a write of `attributes` to `participant`.
pub fn attributes_event_frame(
    id: &str,
    participant: &str,
    attributes: &[(String, String)],
) -> String {
    let body = json!({
        "eventTime": time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
        "conversationId": id,
        "participantId": participant,
        "attributes": attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect::<serde_json::Map<String, Value>>(),
    });
    envelope(&attributes_topic(id), body)
}

/// The queue topic every simulated conversation is published on.
pub fn seed_queue_topic() -> String {
    queue_topic(SEED_QUEUE)
}

/// `{"topicName", "version", "eventBody", "metadata"}`, as every frame is wrapped.
fn envelope(topic: &str, body: Value) -> String {
    json!({
        "topicName": topic,
        "version": "2",
        "eventBody": body,
        "metadata": {"CorrelationId": uuid::Uuid::new_v4().to_string()},
    })
    .to_string()
}

/// A conversation as a queue-conversation event carries it: each caller's number as `address`.
fn queue_event_body(c: &crate::wire::Conversation) -> Value {
    let mut body = serde_json::to_value(c).expect("conversations serialize");
    if let Some(participants) = body["participants"].as_array_mut() {
        for p in participants {
            if let Some(ani) = p.get("ani").cloned() {
                p["address"] = ani;
            }
        }
    }
    body
}

impl Notifications {
    /// Whether any open socket follows `topic`: a frame nobody would get is not built.
    fn followed(&self, topic: &str) -> bool {
        self.channels
            .iter()
            .any(|c| c.socket.is_some() && c.topics.iter().any(|t| t.eq_ignore_ascii_case(topic)))
    }

    /// Whether the next conversation event is one to lose (nobody gets one nobody follows either).
    fn loses_next(&mut self, topic: &str) -> bool {
        if self.lose > 0 {
            self.lose -= 1;
            return true;
        }
        !self.followed(topic)
    }

    /// Sends `frame` to every open socket whose channel follows `topic`, unless it is to be lost.
    fn publish(&mut self, topic: &str, frame: &str) {
        if self
            .outage_until
            .is_some_and(|until| Instant::now() < until)
        {
            return;
        }
        let now = Instant::now();
        let outboxes: Vec<_> = self
            .channels
            .iter()
            // A lapsed channel gets nothing more.
            .filter(|c| c.expires > now)
            .filter(|c| c.topics.iter().any(|t| t.eq_ignore_ascii_case(topic)))
            .filter_map(|c| c.socket.as_ref().map(|(_, outbox)| outbox.clone()))
            .collect();
        let (frame, delay) = (frame.to_string(), self.event_delay);
        if delay.is_zero() {
            for outbox in outboxes {
                let _ = outbox.send(frame.clone());
            }
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for outbox in outboxes {
                let _ = outbox.send(frame.clone());
            }
        });
    }
}

impl Simulator {
    /// After a write to `participant` showed: the conversation on its queue topic (unless writes
    /// make no queue event), and the attributes detail event with the keys written.
    pub(super) fn publish_write(
        &self,
        id: &str,
        participant: &str,
        attributes: &[(String, String)],
    ) {
        if self.lock().notifications.write_events {
            self.publish_conversation(id);
        }
        let topic = attributes_topic(id);
        if !self.lock().notifications.followed(&topic) {
            return;
        }
        let frame = attributes_event_frame(id, participant, attributes);
        self.lock().notifications.publish(&topic, &frame);
    }

    /// The frame that carries conversation `id`'s current state on its queue topic.
    pub(crate) fn queue_event_frame(&self, id: &str) -> Option<String> {
        let s = self.lock();
        let c = s.conversations.get(&id.to_lowercase())?;
        Some(envelope(&seed_queue_topic(), queue_event_body(c)))
    }

    /// Publishes conversation `id`'s current state on the queue topic, as Genesys does on a change.
    pub(crate) fn publish_conversation(&self, id: &str) {
        if self.lock().notifications.loses_next(&seed_queue_topic()) {
            return;
        }
        let Some(frame) = self.queue_event_frame(id) else {
            return;
        };
        self.lock()
            .notifications
            .publish(&seed_queue_topic(), &frame);
    }
}

impl Control {
    /// The frame that carries conversation `id`'s current state on its queue topic, as a channel
    /// following the queue would get it.
    pub fn queue_event_frame(&self, id: &str) -> Option<String> {
        self.0.queue_event_frame(id)
    }

    /// Delays every event frame by `delay`, as Genesys sometimes delivers seconds late.
    pub fn set_event_delay(&self, delay: Duration) {
        self.lock().notifications.event_delay = delay;
    }

    /// Removes every channel without a word, as one that lapsed does: its socket closes, and
    /// `HEAD` on it answers 404.
    pub fn forget_channels(&self) {
        let mut s = self.lock();
        let n = &mut s.notifications;
        let gone: Vec<String> = n.channels.drain(..).map(|c| c.id).collect();
        n.evicted.extend(gone);
    }

    /// Removes every channel, telling each open socket `no_longer_subscribed`, as a 21st channel
    /// made elsewhere by the same OAuth client would.
    pub fn evict_channels(&self) {
        let mut s = self.lock();
        let n = &mut s.notifications;
        for c in n.channels.drain(..) {
            if let Some((_, outbox)) = &c.socket {
                let frame = envelope(
                    &format!("v2.system.no_longer_subscribed.{}", c.id),
                    json!({"reason": "another_channel_subscribed"}),
                );
                let _ = outbox.send(frame);
            }
            n.evicted.push(c.id);
        }
    }

    /// Loses the next `n` conversation events, as events sent into a gap are lost.
    pub fn lose_events(&self, n: usize) {
        self.lock().notifications.lose = n;
    }

    /// Whether an attribute write produces a queue event: Genesys does not promise one.
    pub fn set_write_events(&self, on: bool) {
        self.lock().notifications.write_events = on;
    }

    /// Every socket open now goes silent: it stays open but sends nothing more, as a connection
    /// that died without closing does. Newer connections are not affected.
    pub fn mute_sockets(&self) {
        let mut s = self.lock();
        let n = &mut s.notifications;
        let open: Vec<u64> = n
            .channels
            .iter()
            .filter_map(|c| c.socket.as_ref().map(|(k, _)| *k))
            .collect();
        n.muted.extend(open);
    }

    /// The streaming service goes down for `length`: every socket closes, new ones are refused
    /// (503), and events of the outage are lost. The REST API stays up.
    pub fn feed_outage(&self, length: Duration) {
        self.lock().notifications.outage_until = Some(Instant::now() + length);
        self.drop_sockets();
    }

    /// How long a new or newly subscribed channel lives (Genesys: 24 hours).
    pub fn set_channel_lifetime(&self, lifetime: Duration) {
        self.lock().notifications.lifetime = lifetime;
    }

    /// How often open sockets get a heartbeat (Genesys: about every 30 s).
    pub fn set_heartbeat(&self, every: Duration) {
        self.lock().notifications.heartbeat = every;
    }

    /// Closes every open socket, as a network failure would.
    pub fn drop_sockets(&self) {
        for c in &mut self.lock().notifications.channels {
            c.socket = None;
            c.connected = false;
        }
    }

    /// Tells every open socket that it will close for maintenance (`v2.system.socket_closing`),
    /// and closes each `grace` later unless a newer connection replaced it by then.
    pub fn announce_socket_closing(&self, grace: Duration) {
        let s = self.lock();
        let frame = envelope(
            "v2.system.socket_closing",
            json!({"message": "Socket closing for maintenance"}),
        );
        let mut closing = Vec::new();
        for c in &s.notifications.channels {
            if let Some((connection, outbox)) = &c.socket {
                let _ = outbox.send(frame.clone());
                closing.push((c.id.clone(), *connection));
            }
        }
        drop(s);
        let sim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let mut s = sim.lock();
            for (id, connection) in closing {
                if let Some(c) = s.notifications.channel_mut(&id) {
                    if c.socket.as_ref().is_some_and(|(n, _)| *n == connection) {
                        c.socket = None;
                        c.connected = false;
                    }
                }
            }
        });
    }
}

/// `GET /channels/{id}`: the channel's WebSocket. No token: the channel id is the secret.
async fn websocket(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if sim.lock().notifications.channels.iter().all(|c| c.id != id) {
        return no_channel();
    }
    if sim
        .lock()
        .notifications
        .outage_until
        .is_some_and(|until| Instant::now() < until)
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    upgrade
        .max_message_size(16 << 20)
        .on_upgrade(move |socket| serve_socket(sim, id, socket))
}

/// One connection: frames from the outbox, a heartbeat on a timer, a pong for each ping. A newer
/// connection to the same channel takes the outbox, and this one closes.
async fn serve_socket(sim: Simulator, id: String, mut socket: WebSocket) {
    let (outbox, mut frames) = tokio::sync::mpsc::unbounded_channel();
    let (connection, every) = {
        let mut s = sim.lock();
        let n = &mut s.notifications;
        n.connections += 1;
        let connection = n.connections;
        let every = n.heartbeat;
        let Some(channel) = n.channel_mut(&id) else {
            return;
        };
        channel.socket = Some((connection, outbox));
        channel.connected = true;
        channel.last_used = Instant::now();
        (connection, every)
    };
    let heartbeat = envelope(
        "channel.metadata",
        json!({"message": "WebSocket Heartbeat"}),
    );
    let pong = envelope("channel.metadata", json!({"message": "pong"}));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let muted = |sim: &Simulator| sim.lock().notifications.muted.contains(&connection);
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(_) if muted(&sim) => {}
                Some(frame) => if socket.send(Message::Text(frame.into())).await.is_err() { break },
                // Replaced by a newer connection, or dropped by a test.
                None => break,
            },
            _ = beat.tick() => {
                if muted(&sim) { continue }
                if socket.send(Message::Text(heartbeat.clone().into())).await.is_err() { break }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let ping = serde_json::from_str::<Value>(&text)
                        .is_ok_and(|v| v["message"] == "ping");
                    if ping && !muted(&sim) && socket.send(Message::Text(pong.clone().into())).await.is_err() { break }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    let mut s = sim.lock();
    if let Some(channel) = s.notifications.channel_mut(&id) {
        if channel
            .socket
            .as_ref()
            .is_some_and(|(n, _)| *n == connection)
        {
            channel.socket = None;
            channel.connected = false;
        }
    }
}

/// The channels' WebSockets, outside the authenticated API.
pub fn socket_routes() -> Router<Simulator> {
    Router::new().route("/channels/{id}", get(websocket))
}

/// The Notifications API and the queue listing, to merge into the authenticated API.
pub fn routes() -> Router<Simulator> {
    Router::new()
        .route(
            "/api/v2/notifications/channels",
            get(list_channels).post(create_channel),
        )
        .route(
            "/api/v2/notifications/channels/{id}",
            axum::routing::head(channel_exists),
        )
        .route(
            "/api/v2/notifications/channels/{id}/subscriptions",
            get(list_subscriptions)
                .put(replace_subscriptions)
                .post(add_subscriptions)
                .delete(remove_subscriptions),
        )
        .route(
            "/api/v2/notifications/availabletopics",
            get(available_topics),
        )
        .route("/api/v2/routing/queues", get(list_queues))
}

/// `at`, on the wall clock, in RFC 3339.
fn rfc3339(at: Instant) -> String {
    let wall = time::OffsetDateTime::now_utc() + at.saturating_duration_since(Instant::now());
    wall.format(&time::format_description::well_known::Rfc3339)
        .expect("a time formats")
}

/// `Channel {id, connectUri, expires}`; the connect URI is this simulator's own WebSocket path.
fn channel_body(headers: &HeaderMap, c: &Channel) -> Value {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    json!({
        "id": c.id,
        "connectUri": format!("ws://{host}/channels/{}", c.id),
        "expires": rfc3339(c.expires),
    })
}

fn no_channel() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not.found",
        "The requested channel was not found.",
    )
}

/// `POST /api/v2/notifications/channels`.
async fn create_channel(State(sim): State<Simulator>, headers: HeaderMap) -> Response {
    let channel = sim.lock().notifications.create(Instant::now());
    Json(channel_body(&headers, &channel)).into_response()
}

/// `GET /api/v2/notifications/channels`: `ChannelEntityListing`.
async fn list_channels(State(sim): State<Simulator>, headers: HeaderMap) -> Response {
    let s = sim.lock();
    let entities: Vec<Value> = s
        .notifications
        .channels
        .iter()
        .map(|c| channel_body(&headers, c))
        .collect();
    Json(json!({"entities": entities})).into_response()
}

/// `HEAD /api/v2/notifications/channels/{id}`: 200 while it exists.
async fn channel_exists(State(sim): State<Simulator>, Path(id): Path<String>) -> StatusCode {
    let s = sim.lock();
    match s.notifications.channels.iter().find(|c| c.id == id) {
        Some(c) if c.expires > Instant::now() => StatusCode::OK,
        _ => StatusCode::NOT_FOUND,
    }
}

#[derive(Debug, Deserialize)]
struct SubscriptionParams {
    #[serde(default, rename = "ignoreErrors")]
    ignore_errors: bool,
}

#[derive(Debug, Deserialize)]
struct TopicRef {
    id: String,
}

fn listing(n: &Notifications, c: &Channel) -> Value {
    let entities: Vec<Value> = c
        .topics
        .iter()
        .map(|t| topic_entry(t, n.refusal(t)))
        .collect();
    json!({"entities": entities})
}

/// Subscribes channel `id` to `body`'s topics, replacing its list or adding to it. Without
/// `ignoreErrors`, one refused topic fails the whole request with 403 and nothing changes; with
/// it, refused topics are answered `Rejected` and not subscribed. Subscribing extends the channel.
fn subscribe(
    sim: &Simulator,
    id: &str,
    params: SubscriptionParams,
    body: &[u8],
    replace: bool,
) -> Response {
    let Ok(asked) = serde_json::from_slice::<Vec<TopicRef>>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad.request",
            "The request could not be understood by the server due to malformed syntax.",
        );
    };
    let mut s = sim.lock();
    let n = &mut s.notifications;
    let Some(current) = n
        .channels
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.topics.clone())
    else {
        return no_channel();
    };
    let entries: Vec<Value> = asked
        .iter()
        .map(|t| topic_entry(&t.id, n.refusal(&t.id)))
        .collect();
    let refused = entries.iter().any(|e| e["state"] == "Rejected");
    if refused && !params.ignore_errors {
        return error(
            StatusCode::FORBIDDEN,
            "missing.any.permissions",
            "Unable to subscribe to one or more topics: missing permissions.",
        );
    }
    let mut topics = if replace { Vec::new() } else { current };
    for t in &asked {
        if n.refusal(&t.id).is_none() && !topics.iter().any(|have| have.eq_ignore_ascii_case(&t.id))
        {
            topics.push(t.id.clone());
        }
    }
    if topics.len() > MAX_TOPICS {
        return error(
            StatusCode::BAD_REQUEST,
            "bad.request",
            "A channel may not be subscribed to more than 1000 topics.",
        );
    }
    let lifetime = n.lifetime;
    let channel = n.channel_mut(id).expect("found above");
    channel.topics = topics;
    channel.expires = Instant::now() + lifetime;
    channel.last_used = Instant::now();
    Json(json!({"entities": entries})).into_response()
}

/// `PUT …/subscriptions`: the channel's whole list becomes the body's.
async fn replace_subscriptions(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    Query(params): Query<SubscriptionParams>,
    body: axum::body::Bytes,
) -> Response {
    subscribe(&sim, &id, params, &body, true)
}

/// `POST …/subscriptions`: the body's topics are added.
async fn add_subscriptions(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    Query(params): Query<SubscriptionParams>,
    body: axum::body::Bytes,
) -> Response {
    subscribe(&sim, &id, params, &body, false)
}

/// `GET …/subscriptions`: `ChannelTopicEntityListing`.
async fn list_subscriptions(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    let s = sim.lock();
    let n = &s.notifications;
    match n.channels.iter().find(|c| c.id == id) {
        Some(c) => Json(listing(n, c)).into_response(),
        None => no_channel(),
    }
}

/// `DELETE …/subscriptions`: removes every topic.
async fn remove_subscriptions(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    match sim.lock().notifications.channel_mut(&id) {
        Some(c) => {
            c.topics.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        None => no_channel(),
    }
}

/// `GET /api/v2/notifications/availabletopics`: the topics the simulator can serve. Which
/// permissions each needs in a real org is left out: `refuse_topics` sets what a test needs.
async fn available_topics() -> Response {
    Json(json!({"entities": [
        {"id": "v2.routing.queues.{id}.conversations", "description": "Conversations routed through a queue",
         "transports": ["Websocket", "EventBridge"]},
        {"id": "v2.detail.events.conversation.{id}.attributes", "description": "A conversation's attribute changes",
         "transports": ["Websocket", "EventBridge"]},
    ]}))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(rename = "pageSize")]
    page_size: Option<usize>,
    #[serde(rename = "pageNumber")]
    page_number: Option<usize>,
}

/// `GET /api/v2/routing/queues`: `QueueEntityListing`, paged, in name order.
async fn list_queues(State(sim): State<Simulator>, Query(page): Query<Page>) -> Response {
    let s = sim.lock();
    let queues = &s.notifications.queues;
    let size = page.page_size.unwrap_or(DEFAULT_QUEUE_PAGE).max(1);
    let number = page.page_number.unwrap_or(1).max(1);
    let entities: Vec<Value> = queues
        .iter()
        .skip((number - 1) * size)
        .take(size)
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect();
    Json(json!({
        "entities": entities,
        "pageSize": size,
        "pageNumber": number,
        "total": queues.len(),
        "pageCount": queues.len().div_ceil(size),
    }))
    .into_response()
}
