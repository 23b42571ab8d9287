//! The Notifications API's REST side: channels, their topic subscriptions, and the routing queues to
//! subscribe to. Each is an ordinary API call, admitted by the budget like every other.
//!
//! A channel's id opens its WebSocket with no token, and its connect URI carries the id: both are
//! secrets, held as `SecretString` so no `Debug` or log line shows them.

use std::collections::HashSet;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::client::{decode, CallContext, GenesysClient};
use super::GenesysError;

/// Queues asked for a page; Genesys's queue listing pages past it.
const QUEUE_PAGE_SIZE: u32 = 100;
/// A bound on the pages read, so an answer whose `pageCount` never ends cannot loop forever:
/// 100,000 queues, far past any contact center's.
const MAX_QUEUE_PAGES: u32 = 1000;

/// A notification channel (`Channel`).
#[derive(Debug, Clone)]
pub struct Channel {
    id: SecretString,
    connect_uri: SecretString,
    /// When it lapses unless subscribed again (RFC 3339), as Genesys last said.
    pub expires: Option<String>,
}

impl Channel {
    /// The id, for the channel's own calls only.
    pub fn id(&self) -> &str {
        self.id.expose_secret()
    }

    /// The WebSocket address, opened as it is.
    pub fn connect_uri(&self) -> &str {
        self.connect_uri.expose_secret()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelBody {
    id: String,
    connect_uri: String,
    #[serde(default)]
    expires: Option<String>,
}

/// What Genesys made of one topic of a subscription (`ChannelTopic`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicState {
    pub id: String,
    /// `Permitted` or `Rejected`; kept as text, so a new state never stops a subscription.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub rejection_reason: Option<String>,
    #[serde(default)]
    pub missing_permissions: Vec<String>,
}

impl TopicState {
    pub fn is_rejected(&self) -> bool {
        self.state.eq_ignore_ascii_case("rejected")
    }
}

#[derive(Deserialize)]
struct TopicListing {
    #[serde(default)]
    entities: Vec<TopicState>,
}

/// A routing queue, as the listing names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueueRef {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueListing {
    #[serde(default)]
    entities: Vec<QueueRef>,
    #[serde(default)]
    page_count: Option<u32>,
}

/// `GET /api/v2/notifications/availabletopics`'s answer: the topics' ids.
#[derive(Debug, Deserialize)]
struct AvailableTopics {
    #[serde(default)]
    entities: Vec<TopicId>,
}

#[derive(Debug, Deserialize)]
struct TopicId {
    id: String,
}

impl GenesysClient {
    /// `GET /api/v2/notifications/availabletopics`: the ids of the topics a channel can subscribe to
    /// (their templates, as `v2.routing.queues.{id}.conversations`).
    pub async fn available_topics(
        &self,
        cx: &mut CallContext,
    ) -> Result<Vec<String>, GenesysError> {
        let url = self.api_url("/api/v2/notifications/availabletopics");
        let response = self
            .send_api(cx, "available_topics", |http| http.get(url.clone()))
            .await?;
        let body: AvailableTopics = decode(response, "available topics").await?;
        Ok(body.entities.into_iter().map(|t| t.id).collect())
    }

    /// `POST /api/v2/notifications/channels`: a new channel. A client holds at most 20; Genesys
    /// evicts the least recently used past that.
    pub async fn create_channel(&self, cx: &mut CallContext) -> Result<Channel, GenesysError> {
        let url = self.api_url("/api/v2/notifications/channels");
        let response = self
            .send_api(cx, "create_channel", |http| http.post(url.clone()))
            .await?;
        let body: ChannelBody = decode(response, "channel").await?;
        Ok(Channel {
            id: body.id.into(),
            connect_uri: body.connect_uri.into(),
            expires: body.expires,
        })
    }

    /// `HEAD /api/v2/notifications/channels/{channelId}`: whether the channel still exists.
    pub async fn channel_exists(
        &self,
        cx: &mut CallContext,
        channel: &Channel,
    ) -> Result<bool, GenesysError> {
        let url = self.api_url(&format!("/api/v2/notifications/channels/{}", channel.id()));
        match self
            .send_api(cx, "channel_exists", |http| http.head(url.clone()))
            .await
        {
            Ok(_) => Ok(true),
            Err(GenesysError::Rejected { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PUT …/channels/{channelId}/subscriptions?ignoreErrors=true`: the channel's topics become
    /// `topics`. With `ignoreErrors`, a topic the client may not see is answered `Rejected`
    /// instead of failing the whole request; the answer says which, and why.
    pub async fn subscribe(
        &self,
        cx: &mut CallContext,
        channel: &Channel,
        topics: &[String],
    ) -> Result<Vec<TopicState>, GenesysError> {
        self.subscriptions(cx, "subscribe", reqwest::Method::PUT, channel, topics)
            .await
    }

    /// `POST …/channels/{channelId}/subscriptions?ignoreErrors=true`: `topics` join the channel's.
    pub async fn add_subscriptions(
        &self,
        cx: &mut CallContext,
        channel: &Channel,
        topics: &[String],
    ) -> Result<Vec<TopicState>, GenesysError> {
        self.subscriptions(
            cx,
            "add_subscriptions",
            reqwest::Method::POST,
            channel,
            topics,
        )
        .await
    }

    /// A subscription call, `method` (PUT replaces the list, POST adds to it), with `ignoreErrors`.
    async fn subscriptions(
        &self,
        cx: &mut CallContext,
        op: &'static str,
        method: reqwest::Method,
        channel: &Channel,
        topics: &[String],
    ) -> Result<Vec<TopicState>, GenesysError> {
        let url = self.api_url(&format!(
            "/api/v2/notifications/channels/{}/subscriptions",
            channel.id()
        ));
        let body: Vec<serde_json::Value> = topics.iter().map(|t| json!({"id": t})).collect();
        let response = self
            .send_api(cx, op, |http| {
                http.request(method.clone(), url.clone())
                    .query(&[("ignoreErrors", "true")])
                    .json(&body)
            })
            .await?;
        let listing: TopicListing = decode(response, "subscription").await?;
        Ok(listing.entities)
    }

    /// When `channel` lapses now, as `GET /api/v2/notifications/channels` lists it: subscribing
    /// extends a channel's life, and the subscription's answer does not say until when.
    pub async fn channel_expires(
        &self,
        cx: &mut CallContext,
        channel: &Channel,
    ) -> Result<Option<String>, GenesysError> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            entities: Vec<ChannelBody>,
        }
        let url = self.api_url("/api/v2/notifications/channels");
        let response = self
            .send_api(cx, "list_channels", |http| {
                http.get(url.clone())
                    .query(&[("includechannels", "oauthclient")])
            })
            .await?;
        let listing: Listing = decode(response, "channel listing").await?;
        Ok(listing
            .entities
            .into_iter()
            .find(|c| c.id == channel.id())
            .and_then(|c| c.expires))
    }

    /// `GET /api/v2/routing/queues`, every page: the queues whose conversations to follow.
    pub async fn routing_queues(
        &self,
        cx: &mut CallContext,
    ) -> Result<Vec<QueueRef>, GenesysError> {
        self.routing_queue_pages(cx, MAX_QUEUE_PAGES).await
    }

    /// `GET /api/v2/routing/queues`, at most `pages` pages.
    pub async fn routing_queue_pages(
        &self,
        cx: &mut CallContext,
        pages: u32,
    ) -> Result<Vec<QueueRef>, GenesysError> {
        let url = self.api_url("/api/v2/routing/queues");
        let mut queues = Vec::new();
        for page in 1..=pages {
            let response = self
                .send_api(cx, "routing_queues", |http| {
                    http.get(url.clone()).query(&[
                        ("pageSize", QUEUE_PAGE_SIZE.to_string()),
                        ("pageNumber", page.to_string()),
                    ])
                })
                .await?;
            let listing: QueueListing = decode(response, "queue listing").await?;
            let last = listing.entities.is_empty() || listing.page_count.is_none_or(|n| page >= n);
            queues.extend(listing.entities);
            if last {
                break;
            }
        }
        Ok(queues)
    }
}

/// Topics Genesys refused, each reported once: a warning naming the topic, its reason and the
/// missing permissions, and `patchbay_notification_topics_rejected_total`. Subscribing again
/// (every day, and after each new channel) does not repeat a refusal already reported.
#[derive(Debug, Default)]
pub struct Rejections {
    reported: HashSet<String>,
}

impl Rejections {
    /// Reports the refusals in `states` not reported before; returns how many were new.
    pub fn report(&mut self, states: &[TopicState]) -> usize {
        let mut new = 0;
        for topic in states.iter().filter(|t| t.is_rejected()) {
            if !self.reported.insert(topic.id.to_ascii_lowercase()) {
                continue;
            }
            new += 1;
            metrics::counter!(crate::metrics::NOTIFICATION_TOPICS_REJECTED).increment(1);
            tracing::warn!(
                topic = %topic.id,
                reason = topic.rejection_reason.as_deref().unwrap_or_default(),
                missing_permissions = %topic.missing_permissions.join(","),
                "Genesys refused a notification topic; what it would tell goes through the REST API instead"
            );
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_shows_neither_its_id_nor_its_address_in_debug_output() {
        let channel = Channel {
            id: "8d3c1e6a-secret-id".to_string().into(),
            connect_uri: "wss://streaming.example/channels/8d3c1e6a-secret-id"
                .to_string()
                .into(),
            expires: None,
        };
        let shown = format!("{channel:?}");
        assert!(!shown.contains("8d3c1e6a"), "{shown}");
        assert_eq!(channel.id(), "8d3c1e6a-secret-id");
    }

    #[test]
    fn a_refused_topic_is_reported_once_however_often_it_is_refused() {
        let refused = TopicState {
            id: "v2.detail.events.conversation.c.attributes".into(),
            state: "Rejected".into(),
            rejection_reason: Some("missing permission".into()),
            missing_permissions: vec!["analytics:conversationDetail:view".into()],
        };
        let permitted = TopicState {
            id: "v2.routing.queues.q.conversations".into(),
            state: "Permitted".into(),
            rejection_reason: None,
            missing_permissions: vec![],
        };
        let mut rejections = Rejections::default();
        assert_eq!(rejections.report(&[refused.clone(), permitted.clone()]), 1);
        assert_eq!(rejections.report(&[refused, permitted]), 0);
    }
}
