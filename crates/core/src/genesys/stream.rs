//! A notification channel's WebSocket: opening it (over rustls), and what its frames mean.
//!
//! The frames' envelope is `{"topicName", "eventBody", …}`; routing is on the topic, compared without
//! case. A frame this does not understand is `Frame::Other`, never an error: Genesys adds topics.

use std::collections::BTreeMap;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::model::Conversation;
use super::notifications::Channel;
use super::GenesysError;

/// The ping Genesys answers with a pong on `channel.metadata`.
pub const PING: &str = r#"{"message":"ping"}"#;

/// What one frame says.
#[derive(Debug, Clone)]
pub enum Frame {
    /// `channel.metadata`: a heartbeat or a pong. The socket is alive.
    Alive,
    /// A queue's conversation event: the whole conversation as it is now.
    Conversation(Conversation),
    /// `v2.detail.events.conversation.{id}.attributes`: a participant's attributes, as the event
    /// names them (whether the change alone or the whole map is not settled; either confirms the
    /// keys it names).
    Attributes {
        conversation_id: String,
        participant_id: String,
        attributes: BTreeMap<String, String>,
    },
    /// `v2.system.socket_closing`: connect a new socket, then let this one go.
    SocketClosing,
    /// `v2.system.no_longer_subscribed` or `v2.system.token_revoked`: the channel is gone.
    ChannelGone { reason: String },
    /// Anything else, by topic.
    Other(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    topic_name: String,
    #[serde(default)]
    event_body: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttributeEvent {
    conversation_id: String,
    participant_id: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

impl Frame {
    /// Reads one text frame. `None` when it is not an envelope at all.
    pub fn parse(text: &str) -> Option<Frame> {
        let envelope: Envelope = serde_json::from_str(text).ok()?;
        let topic = envelope.topic_name.to_ascii_lowercase();
        if topic == "channel.metadata" {
            return Some(Frame::Alive);
        }
        if topic == "v2.system.socket_closing" {
            return Some(Frame::SocketClosing);
        }
        if topic.starts_with("v2.system.no_longer_subscribed")
            || topic.starts_with("v2.system.token_revoked")
        {
            let reason = envelope.event_body["reason"]
                .as_str()
                .or_else(|| envelope.event_body["message"].as_str())
                .unwrap_or(&topic)
                .to_string();
            return Some(Frame::ChannelGone { reason });
        }
        if topic.starts_with("v2.routing.queues.") && topic.ends_with(".conversations") {
            return Some(
                serde_json::from_value(envelope.event_body)
                    .map(Frame::Conversation)
                    .unwrap_or(Frame::Other(topic)),
            );
        }
        if topic.starts_with("v2.detail.events.conversation.") && topic.ends_with(".attributes") {
            return Some(
                serde_json::from_value::<AttributeEvent>(envelope.event_body)
                    .map(|e| Frame::Attributes {
                        conversation_id: e.conversation_id,
                        participant_id: e.participant_id,
                        attributes: e.attributes,
                    })
                    .unwrap_or(Frame::Other(topic)),
            );
        }
        Some(Frame::Other(topic))
    }
}

/// The topic that carries queue `id`'s conversations.
pub fn queue_topic(id: &str) -> String {
    format!("v2.routing.queues.{id}.conversations")
}

/// The topic that carries conversation `id`'s attribute changes.
pub fn attributes_topic(id: &str) -> String {
    format!("v2.detail.events.conversation.{id}.attributes")
}

type Inner =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An open channel socket.
pub struct Socket {
    inner: Inner,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The socket's address carries the channel id, a secret.
        f.write_str("Socket")
    }
}

/// What a socket gave.
#[derive(Debug)]
pub enum Received {
    Text(String),
    /// A frame that is not text (a WebSocket ping or pong, binary): alive, and nothing to read.
    Control,
    Closed,
}

impl Socket {
    /// Opens `channel`'s WebSocket, accepting frames up to `max_frame_bytes`.
    pub async fn connect(channel: &Channel, max_frame_bytes: usize) -> Result<Self, GenesysError> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_frame_bytes))
            .max_frame_size(Some(max_frame_bytes));
        // Nagle off: a ping must not wait for the server's delayed ACK of the previous frame.
        let (inner, _) =
            tokio_tungstenite::connect_async_with_config(channel.connect_uri(), Some(config), true)
                .await
                // The error's text may carry the address, and with it the channel id: say only its kind.
                .map_err(|e| GenesysError::Transport(format!("channel socket: {}", kind(&e))))?;
        Ok(Self { inner })
    }

    /// The next frame; `Closed` once the socket is gone.
    pub async fn recv(&mut self) -> Received {
        match self.inner.next().await {
            Some(Ok(Message::Text(text))) => Received::Text(text.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Received::Closed,
            Some(Ok(_)) => Received::Control,
        }
    }

    /// Sends Genesys's `{"message":"ping"}`.
    pub async fn ping(&mut self) -> bool {
        self.inner.send(Message::Text(PING.into())).await.is_ok()
    }

    /// Closes the socket, politely.
    pub async fn close(mut self) {
        let _ = self.inner.close(None).await;
    }
}

fn kind(e: &tokio_tungstenite::tungstenite::Error) -> &'static str {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Http(r) if r.status() == 404 => "the channel does not exist (404)",
        E::Http(_) => "refused by the server",
        E::Io(_) => "could not connect",
        E::Tls(_) => "TLS failed",
        E::Url(_) => "bad address",
        _ => "protocol error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn frame(topic: &str, body: serde_json::Value) -> String {
        json!({"topicName": topic, "version": "2", "eventBody": body, "metadata": {"CorrelationId": "x"}})
            .to_string()
    }

    #[test]
    fn each_kind_of_frame_is_told_apart_by_its_topic_in_any_case() {
        assert!(matches!(
            Frame::parse(&frame(
                "channel.metadata",
                json!({"message": "WebSocket Heartbeat"})
            )),
            Some(Frame::Alive)
        ));
        assert!(matches!(
            Frame::parse(&frame("V2.System.Socket_Closing", json!({}))),
            Some(Frame::SocketClosing)
        ));
        assert!(matches!(
            Frame::parse(&frame(
                "v2.system.no_longer_subscribed.abc",
                json!({"reason": "another_channel_subscribed"})
            )),
            Some(Frame::ChannelGone { reason }) if reason == "another_channel_subscribed"
        ));
        assert!(matches!(
            Frame::parse(&frame("v2.system.token_revoked.abc", json!({"message": "token revoked"}))),
            Some(Frame::ChannelGone { reason }) if reason == "token revoked"
        ));
        let conversation = frame(
            "v2.routing.queues.q1.conversations",
            json!({"id": "c1", "participants": [{"id": "p1", "purpose": "customer", "attributes": {"vip": "true"}}]}),
        );
        match Frame::parse(&conversation) {
            Some(Frame::Conversation(c)) => {
                assert_eq!(c.id, "c1");
                assert_eq!(c.participants[0].attributes["vip"], "true");
            }
            other => panic!("{other:?}"),
        }
        let attributes = frame(
            "v2.detail.events.conversation.c1.attributes",
            json!({"eventTime": 1, "conversationId": "c1", "participantId": "p1", "attributes": {"vip": "true"}}),
        );
        assert!(matches!(
            Frame::parse(&attributes),
            Some(Frame::Attributes { conversation_id, participant_id, attributes })
                if conversation_id == "c1" && participant_id == "p1" && attributes["vip"] == "true"
        ));
        assert!(matches!(
            Frame::parse(&frame("v2.users.u.presence", json!({}))),
            Some(Frame::Other(topic)) if topic == "v2.users.u.presence"
        ));
    }

    proptest! {
        #[test]
        fn no_text_makes_the_parser_fail(text in ".{0,200}", topic in "[a-zA-Z0-9._]{0,60}") {
            let _ = Frame::parse(&text);
            let _ = Frame::parse(&frame(&topic, json!({"id": text})));
        }
    }
}
