//! The simulator's Notifications API keeps Genesys's channel rules: topics refused for missing
//! permissions, 20 channels per client with the least recently used evicted, 1,000 topics a
//! channel, and the routing queues to subscribe to, every call counted against the token.

use patchbay::genesys::notifications::Channel;
use patchbay::genesys::stream::queue_topic;
use patchbay::sim::notifications::{MAX_CHANNELS, MAX_TOPICS, SEED_QUEUE};
use serde_json::{json, Value};

use crate::helpers::*;

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn new(app: &TestApp) -> Self {
        Self {
            http: app.http.clone(),
            base: app.sim_url.clone(),
            token: sim_token(&app.sim_url).await,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert!(
            response.headers().contains_key("inin-ratelimit-count"),
            "{path}: an ordinary API call, counted against the token"
        );
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn channel(&self) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v2/notifications/channels",
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A context for one test call: ten seconds to be made.
pub fn cx() -> patchbay::genesys::CallContext {
    patchbay::genesys::CallContext::until(
        tokio::time::Instant::now() + std::time::Duration::from_secs(10),
    )
}

#[tokio::test]
async fn a_channel_is_made_subscribed_and_listed_with_refused_topics_named() {
    let app = spawn_app().await;
    app.sim
        .refuse_topics("v2.detail.events.", "analytics:conversationDetail:view");
    let client = Client::new(&app).await;
    let channel = client.channel().await;
    let id = channel["id"].as_str().unwrap();
    assert!(channel["connectUri"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/channels/{id}")));
    assert!(channel["expires"].as_str().is_some());
    let (status, _) = client
        .call(
            reqwest::Method::HEAD,
            &format!("/api/v2/notifications/channels/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let detail = format!("v2.detail.events.conversation.{SEED_ACTIVE_CALL}.attributes");
    let topics = json!([{"id": queue_topic(SEED_QUEUE)}, {"id": detail}]);
    // Without ignoreErrors, one refused topic fails the whole request and nothing is subscribed.
    let path = format!("/api/v2/notifications/channels/{id}/subscriptions");
    let (status, _) = client
        .call(reqwest::Method::PUT, &path, Some(topics.clone()))
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        app.sim.notifications().topics(id).unwrap(),
        Vec::<String>::new()
    );
    let (status, answer) = client
        .call(
            reqwest::Method::PUT,
            &format!("{path}?ignoreErrors=true"),
            Some(topics),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["entities"][0]["state"], "Permitted");
    assert_eq!(answer["entities"][1]["state"], "Rejected");
    assert_eq!(
        answer["entities"][1]["missingPermissions"],
        json!(["analytics:conversationDetail:view"])
    );
    assert_eq!(
        app.sim.notifications().topics(id).unwrap(),
        vec![queue_topic(SEED_QUEUE)]
    );
    let (_, listed) = client.call(reqwest::Method::GET, &path, None).await;
    assert_eq!(listed["entities"].as_array().unwrap().len(), 1);
    let (status, _) = client
        .call(
            reqwest::Method::HEAD,
            "/api/v2/notifications/channels/no-such-channel",
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_twenty_first_channel_evicts_the_least_recently_used_unconnected_one() {
    let app = spawn_app().await;
    let client = Client::new(&app).await;
    let mut ids = Vec::new();
    for _ in 0..MAX_CHANNELS {
        ids.push(client.channel().await["id"].as_str().unwrap().to_string());
    }
    // The oldest has a socket open: the oldest of the unconnected ones goes instead.
    app.sim.connect_channel(&ids[0]);
    let newest = client.channel().await;
    let held = app.sim.notifications().channel_ids();
    assert_eq!(held.len(), MAX_CHANNELS);
    assert!(held.contains(&ids[0]));
    assert!(!held.contains(&ids[1]));
    assert!(held.contains(&newest["id"].as_str().unwrap().to_string()));
    assert_eq!(app.sim.notifications().evicted(), [ids[1].clone()]);
    let (status, _) = client
        .call(
            reqwest::Method::HEAD,
            &format!("/api/v2/notifications/channels/{}", ids[1]),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_channel_takes_at_most_a_thousand_topics() {
    let app = spawn_app().await;
    let client = Client::new(&app).await;
    let id = client.channel().await["id"].as_str().unwrap().to_string();
    let path = format!("/api/v2/notifications/channels/{id}/subscriptions?ignoreErrors=true");
    let topics = |n: usize| -> Value {
        (0..n)
            .map(|i| json!({"id": queue_topic(&format!("00000000-0000-4000-8000-{i:012}"))}))
            .collect()
    };
    let (status, _) = client
        .call(reqwest::Method::PUT, &path, Some(topics(MAX_TOPICS)))
        .await;
    assert_eq!(status, 200);
    let (status, _) = client
        .call(reqwest::Method::PUT, &path, Some(topics(MAX_TOPICS + 1)))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        app.sim.notifications().topics(&id).unwrap().len(),
        MAX_TOPICS
    );
}

#[tokio::test]
async fn routing_queues_are_listed_a_page_at_a_time() {
    let app = spawn_app().await;
    for n in 0..4 {
        app.sim.add_queue(
            &format!("00000000-0000-4000-a000-{n:012}"),
            &format!("Queue {n}"),
        );
    }
    let client = Client::new(&app).await;
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let (status, body) = client
            .call(
                reqwest::Method::GET,
                &format!("/api/v2/routing/queues?pageSize=2&pageNumber={page}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["total"], 5);
        assert_eq!(body["pageCount"], 3);
        seen.extend(
            body["entities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q["name"].as_str().unwrap().to_string()),
        );
        if page == body["pageCount"].as_u64().unwrap() {
            break;
        }
        page += 1;
    }
    assert_eq!(
        seen,
        ["Queue 0", "Queue 1", "Queue 2", "Queue 3", "Support"]
    );
}

/// Patchbay's own Genesys client for `settings`, with a budget of its own.
fn genesys_client_for(
    settings: &patchbay::config::GenesysSettings,
) -> patchbay::genesys::GenesysClient {
    use patchbay::store::budget::{local::LocalBudget, Budget};
    use patchbay::store::token::local::LocalToken;
    use std::sync::Arc;
    let budget = LocalBudget::new(Budget {
        per_minute: 600_000,
    });
    patchbay::genesys::GenesysClient::new(settings, Arc::new(budget), Arc::new(LocalToken)).unwrap()
}

/// Patchbay's own Genesys client, in front of the app's simulator.
pub fn genesys_client(app: &TestApp) -> patchbay::genesys::GenesysClient {
    genesys_client_for(&patchbay::demo::settings_for_simulator(&app.sim_url, API_KEY).genesys)
}

#[tokio::test]
async fn the_client_makes_a_channel_subscribes_and_names_what_was_refused() {
    let app = spawn_app().await;
    app.sim
        .refuse_topics("v2.detail.events.", "analytics:conversationDetail:view");
    let genesys = genesys_client(&app);
    let channel = genesys.create_channel(&mut cx()).await.unwrap();
    assert!(channel.connect_uri().ends_with(channel.id()));
    assert!(!format!("{channel:?}").contains(channel.id()));
    let detail = format!("v2.detail.events.conversation.{SEED_ACTIVE_CALL}.attributes");
    let states = genesys
        .subscribe(
            &mut cx(),
            &channel,
            &[queue_topic(SEED_QUEUE), detail.clone()],
        )
        .await
        .unwrap();
    assert_eq!(states.len(), 2);
    assert!(!states[0].is_rejected());
    assert!(states[1].is_rejected());
    assert_eq!(states[1].id, detail);
    assert_eq!(
        states[1].missing_permissions,
        ["analytics:conversationDetail:view"]
    );
    assert_eq!(
        app.sim.notifications().topics(channel.id()).unwrap(),
        vec![queue_topic(SEED_QUEUE)]
    );
    let mut rejections = patchbay::genesys::notifications::Rejections::default();
    assert_eq!(rejections.report(&states), 1);
    assert_eq!(rejections.report(&states), 0, "reported once");
    assert!(genesys.channel_exists(&mut cx(), &channel).await.unwrap());
    // Twenty more channels evict this one, the least recently used.
    for _ in 0..MAX_CHANNELS {
        genesys.create_channel(&mut cx()).await.unwrap();
    }
    assert!(!genesys.channel_exists(&mut cx(), &channel).await.unwrap());
}

#[tokio::test]
async fn the_client_reads_every_page_of_the_routing_queues() {
    let app = spawn_app().await;
    for n in 0..150 {
        app.sim.add_queue(
            &format!("00000000-0000-4000-a000-{n:012}"),
            &format!("Queue {n:03}"),
        );
    }
    let queues = genesys_client(&app)
        .routing_queues(&mut cx())
        .await
        .unwrap();
    assert_eq!(queues.len(), 151);
    assert_eq!(queues[0].name.as_deref(), Some("Queue 000"));
    assert_eq!(app.sim.count("list_queues"), 2, "two pages of 100");
}

#[tokio::test]
async fn a_failed_channel_call_never_shows_the_channel_id() {
    let app = spawn_app().await;
    let genesys = genesys_client(&app);
    let channel = genesys.create_channel(&mut cx()).await.unwrap();
    // The API host stops answering: the transport error must not carry the URL, and with it the id.
    let mut settings = patchbay::demo::settings_for_simulator(&app.sim_url, API_KEY);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    settings.genesys.api_url = Some(format!("http://127.0.0.1:{port}").parse().unwrap());
    settings.genesys.retry.max_attempts = 1;
    let offline = genesys_client_for(&settings.genesys);
    let error = offline
        .subscribe(&mut cx(), &channel, &[queue_topic(SEED_QUEUE)])
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("could not reach Genesys"), "{text}");
    assert!(!text.contains(channel.id()), "{text}");
}

/// A notification channel's socket, as the tests read it.
pub trait Frames:
    futures::Stream<
        Item = Result<
            tokio_tungstenite::tungstenite::Message,
            tokio_tungstenite::tungstenite::Error,
        >,
    > + Unpin
{
}

impl<S> Frames for S where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin
{
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A channel subscribed to the seed queue's conversations, and its open socket.
pub async fn seed_queue_socket(app: &TestApp) -> (Channel, Socket) {
    let genesys = genesys_client(app);
    let channel = genesys.create_channel(&mut cx()).await.unwrap();
    genesys
        .subscribe(&mut cx(), &channel, &[queue_topic(SEED_QUEUE)])
        .await
        .unwrap();
    let (socket, _) = tokio_tungstenite::connect_async(channel.connect_uri())
        .await
        .unwrap();
    (channel, socket)
}

/// The next text frame as JSON, within two seconds.
pub async fn next_frame(socket: &mut impl Frames) -> Value {
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(2), socket.next())
            .await
            .expect("a frame within 2 s")
            .expect("the socket is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Whether the socket closes within 2 s, whatever it sends first.
async fn closes(socket: &mut impl Frames) -> bool {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await
    .is_ok()
}

/// The next frame that is not a heartbeat.
async fn next_event(socket: &mut impl Frames) -> Value {
    loop {
        let frame = next_frame(socket).await;
        if frame["eventBody"]["message"] != "WebSocket Heartbeat" {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channels_socket_beats_answers_pings_and_pushes_each_change_of_a_queue_conversation() {
    use futures::SinkExt;
    let app = spawn_app().await;
    app.sim.set_heartbeat(std::time::Duration::from_millis(100));
    let (channel, mut socket) = seed_queue_socket(&app).await;
    let beat = next_frame(&mut socket).await;
    assert_eq!(beat["topicName"], "channel.metadata");
    assert_eq!(beat["eventBody"]["message"], "WebSocket Heartbeat");
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"message": "ping"}).to_string().into(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut socket).await["eventBody"]["message"],
        "pong"
    );

    // A write shows on the queue topic as the whole conversation, with the new attribute.
    let answer = app
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_CUSTOMER, "attributes": {"vip": "true"}}))
        .await;
    assert_eq!(answer.body["verified"], true);
    let event = next_event(&mut socket).await;
    assert_eq!(event["topicName"], queue_topic(SEED_QUEUE));
    assert_eq!(event["eventBody"]["id"], SEED_ACTIVE_CALL);
    let customer = event["eventBody"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == SEED_ACTIVE_CALL_CUSTOMER)
        .unwrap()
        .clone();
    assert_eq!(customer["attributes"]["vip"], "true");
    assert!(event["metadata"]["CorrelationId"].is_string());

    // A call's end is pushed too.
    app.sim.end_conversation(SEED_ACTIVE_CALL);
    let ended: patchbay::sim::wire::Conversation =
        serde_json::from_value(next_event(&mut socket).await["eventBody"].clone()).unwrap();
    assert!(ended.is_ended());

    // Maintenance is announced; a second connection to the channel drops the first.
    // A long grace: the second connection, not the grace, must drop the first.
    app.sim
        .announce_socket_closing(std::time::Duration::from_secs(60));
    assert_eq!(
        next_event(&mut socket).await["topicName"],
        "v2.system.socket_closing"
    );
    let (mut second, _) = tokio_tungstenite::connect_async(channel.connect_uri())
        .await
        .unwrap();
    assert!(closes(&mut socket).await, "the first socket closed");
    assert_eq!(
        next_frame(&mut second).await["eventBody"]["message"],
        "WebSocket Heartbeat"
    );
    // A dropped socket is closed.
    app.sim.drop_sockets();
    assert!(closes(&mut second).await, "a dropped socket closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_can_be_lost_and_writes_can_come_without_one() {
    let app = spawn_app().await;
    let (_, mut socket) = seed_queue_socket(&app).await;
    // Writes make no event; then the next event is lost; the one after comes.
    app.sim.set_write_events(false);
    let answer = app
        .post_attributes(json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_CUSTOMER, "attributes": {"vip": "true"}}))
        .await;
    assert_eq!(answer.body["verified"], true, "verified by a read");
    app.sim.lose_events(1);
    app.sim
        .transfer(SEED_TRANSFER, "0c5a1f0e-8d2b-4c8e-9b1a-1e2f3a4b5c99");
    app.sim.end_conversation(SEED_CHAT);
    let event = next_event(&mut socket).await;
    assert_eq!(
        event["eventBody"]["id"], SEED_CHAT,
        "the write and the transfer made none: {event}"
    );
}
