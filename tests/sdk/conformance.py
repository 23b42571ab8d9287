"""Points Genesys's official Python SDK at the Patchbay simulator.

It must get a client-credentials token, call patch_conversation_participant_attributes and
get_conversation, and its typed models must show both its own write and the one Patchbay made. It
then asks post_analytics_conversations_details_query for live voice conversations from a number, as
Patchbay's lookups do, and the typed answer must hold the expected conversation. It makes a
notification channel and subscribes it to a queue's conversations and a refused topic with
ignoreErrors, and the typed answers must say which was permitted and which rejected. It writes and
reads secure attributes and a custom-attributes record, as their models say.
Prints one JSON line of findings; exits non-zero on any failure.
"""
import datetime
import json
import os
import sys

import PureCloudPlatformClientV2 as gc
from PureCloudPlatformClientV2.rest import ApiException

base = os.environ["SIM_URL"]
conversation_id = os.environ["CONVERSATION_ID"]
participant_id = os.environ["PARTICIPANT_ID"]
expect_key, expect_value = os.environ["EXPECT_KEY"], os.environ["EXPECT_VALUE"]

gc.configuration.host = base
api_client = gc.api_client.ApiClient().get_client_credentials_token(
    os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"]
)
conversations = gc.ConversationsApi(api_client)

body = gc.ParticipantAttributes()
body.attributes = {"sdkKey": "sdk-value", "sdkNumber": "7"}
conversations.patch_conversation_participant_attributes(conversation_id, participant_id, body)

conversation = conversations.get_conversation(conversation_id)
assert isinstance(conversation, gc.Conversation), type(conversation)
participant = next(p for p in conversation.participants if p.id == participant_id)
assert isinstance(participant, gc.Participant), type(participant)
attributes = participant.attributes
assert attributes.get("sdkKey") == "sdk-value", attributes
assert attributes.get("sdkNumber") == "7", attributes
assert attributes.get(expect_key) == expect_value, attributes
assert conversation.end_time is None
# Secure attributes: the SDK's PATCH, then its GET read as ConversationSecureAttributes, twice, so
# the version is seen to count the writes.
versions = []
for value in ("1970-07-04", "1970-07-05"):
    secure_body = gc.ConversationSecureAttributes()
    secure_body.attributes = {"sdkDob": value, "sdkAccount": "88172635"}
    conversations.patch_conversation_secureattributes(conversation_id, secure_body)
    secure = conversations.get_conversation_secureattributes(conversation_id)
    assert isinstance(secure, gc.ConversationSecureAttributes), type(secure)
    assert secure.attributes == {"sdkDob": value, "sdkAccount": "88172635"}, secure.attributes
    assert isinstance(secure.version, int), secure.version
    versions.append(secure.version)
assert versions[1] > versions[0], versions

# Custom attributes: the schema by its listing and by id, a record created with PUT, amended with
# PATCH on its version, a stale version refused 409, a value the schema refuses 400, the record
# read back as CustomAttributes with a timestamp per field, and the bulk writes' answers.
import uuid
listing = conversations.get_conversations_customattributes_schemas()
assert isinstance(listing, gc.ConversationDataSchemaListing), type(listing)
named = next(s for s in listing.entities if s.json_schema.title == "crm_case")
schema = conversations.get_conversations_customattributes_schema(named.id)
assert isinstance(schema, gc.ConversationDataSchema), type(schema)
assert schema.json_schema.properties["priority"]["type"] == "integer", schema.json_schema.properties
record_id = str(uuid.uuid4())
create = gc.CustomAttributesUpdateRequest()
create.id, create.schema_id, create.divisions = record_id, schema.id, []
create.custom_attributes = {"caseNumber": "SDK-1", "priority": 2}
created = conversations.put_conversation_customattributes(conversation_id, body=create)
assert isinstance(created, gc.CustomAttributesIdResponse) and created.id == record_id, created
amend = gc.CustomAttributesPatchRequest()
amend.id, amend.version, amend.divisions = record_id, 1, []
amend.custom_attributes = {"vip": True}
conversations.patch_conversation_customattributes(conversation_id, body=amend)
try:
    conversations.patch_conversation_customattributes(conversation_id, body=amend)
    raise AssertionError("a stale version was accepted")
except ApiException as e:
    assert e.status == 409, e.status
wrong = gc.CustomAttributesPatchRequest()
wrong.id, wrong.divisions, wrong.custom_attributes = record_id, [], {"priority": "high"}
try:
    conversations.patch_conversation_customattributes(conversation_id, body=wrong)
    raise AssertionError("a value the schema refuses was accepted")
except ApiException as e:
    assert e.status == 400, e.status
record = conversations.get_conversation_customattribute(conversation_id, record_id)
assert isinstance(record, gc.CustomAttributes), type(record)
assert record.custom_attributes == {"caseNumber": "SDK-1", "priority": 2, "vip": True}, record.custom_attributes
assert sorted(record.custom_attributes_timestamps) == ["caseNumber", "priority", "vip"], record.custom_attributes_timestamps
assert isinstance(record.date_modified, datetime.datetime), record.date_modified
# The bulk writes Patchbay makes: one record each, answered with the record as it stands after the
# write (CustomAttributesBulkUpdateResponseMap), or the record's own error status.
bulk = gc.CustomAttributesPatchRequest()
bulk.id, bulk.version, bulk.divisions = record_id, record.version, []
bulk.custom_attributes = {"tier": "gold"}
answered = conversations.patch_conversation_customattributes_bulk(conversation_id, body=[bulk])
assert isinstance(answered, gc.CustomAttributesBulkUpdateResponseMap), type(answered)
result = answered.results[record_id]
assert isinstance(result, gc.CustomAttributesBulkUpdateResponse), type(result)
assert result.status_code == 200, result
assert isinstance(result.attributes, gc.CustomAttributes), type(result.attributes)
assert result.attributes.custom_attributes["tier"] == "gold", result.attributes.custom_attributes
assert result.attributes.version == record.version + 1, result.attributes.version
assert "tier" in result.attributes.custom_attributes_timestamps, result.attributes
stale = conversations.patch_conversation_customattributes_bulk(conversation_id, body=[bulk])
assert stale.results[record_id].status_code == 409 and stale.results[record_id].attributes is None, stale
other_id = str(uuid.uuid4())
make = gc.CustomAttributesUpdateRequest()
make.id, make.schema_id, make.divisions = other_id, schema.id, []
make.custom_attributes = {"caseNumber": "SDK-2"}
made = conversations.put_conversation_customattributes_bulk(conversation_id, body=[make])
assert made.results[other_id].attributes.version == 1, made
record = result.attributes
custom = {"version": record.version, "schema": record.schema.id, "title": named.json_schema.title}

# Participant attribute search: by the conversation's id, and refused by an attribute's value.
def search(field, value):
    criteria = gc.ConversationParticipantSearchCriteria()
    criteria.type, criteria.fields, criteria.value = "EXACT", [field], value
    request = gc.ConversationParticipantSearchRequest()
    request.query = [criteria]
    return conversations.post_conversations_participants_attributes_search(request)
found = search("conversationId", conversation_id)
assert isinstance(found, gc.JsonCursorSearchResponse), type(found)
assert [r["conversationId"] for r in found.results] == [conversation_id], found.results
try:
    search("sdkKey", "sdk-value")
    raise AssertionError("a search by an attribute's value was accepted")
except ApiException as e:
    assert e.status == 400, e.status
custom["searchedBy"] = "conversationId"

states = [c.state for c in (participant.calls or [])] + [m.state for m in (participant.messages or [])]
assert states and "outdated_sdk_version" not in states, states

# The details query a lookup sends, built from the SDK's own models.
lookup_ani, lookup_conversation = os.environ["LOOKUP_ANI"], os.environ["LOOKUP_CONVERSATION"]
today = datetime.datetime.now(datetime.timezone.utc).date()
query = gc.ConversationQuery()
query.interval = f"{today - datetime.timedelta(days=1)}T00:00:00Z/{today + datetime.timedelta(days=1)}T00:00:00Z"
query.order = "desc"
query.order_by = "conversationStart"
paging = gc.PagingSpec()
paging.page_size, paging.page_number = 5, 1
query.paging = paging
def predicate(cls, dimension, operator, value=None):
    p = cls()
    p.type, p.dimension, p.operator = "dimension", dimension, operator
    if value is not None:
        p.value = value
    return p
live = gc.ConversationDetailQueryFilter()
live.type = "and"
live.predicates = [predicate(gc.ConversationDetailQueryPredicate, "conversationEnd", "notExists")]
query.conversation_filters = [live]
number = gc.SegmentDetailQueryFilter()
number.type = "or"
number.predicates = [predicate(gc.SegmentDetailQueryPredicate, "ani", "matches", form)
                     for form in (f"tel:{lookup_ani}", lookup_ani, lookup_ani[1:])]
voice = gc.SegmentDetailQueryFilter()
voice.type = "and"
voice.predicates = [predicate(gc.SegmentDetailQueryPredicate, "mediaType", "matches", "voice")]
query.segment_filters = [number, voice]
found = gc.AnalyticsApi(api_client).post_analytics_conversations_details_query(query)
assert isinstance(found, gc.AnalyticsConversationQueryResponse), type(found)
assert [c.conversation_id for c in found.conversations] == [lookup_conversation], found.conversations
hit = found.conversations[0]
assert isinstance(hit, gc.AnalyticsConversationWithoutAttributes), type(hit)
assert hit.conversation_end is None and hit.conversation_start is not None
customer = next(p for p in hit.participants if p.purpose == "customer")
assert isinstance(customer, gc.AnalyticsParticipantWithoutAttributes), type(customer)
assert customer.sessions[0].ani == f"tel:{lookup_ani}", customer.sessions
assert customer.sessions[0].media_type == "voice", customer.sessions

# A notification channel and its subscriptions, through the SDK's own models.
notifications = gc.NotificationsApi(api_client)
channel = notifications.post_notifications_channels()
assert isinstance(channel, gc.Channel), type(channel)
assert channel.id and channel.connect_uri.endswith(channel.id) and channel.expires is not None, channel
queue_topic, refused_topic = os.environ["QUEUE_TOPIC"], os.environ["REFUSED_TOPIC"]
topics = []
for topic_id in (queue_topic, refused_topic):
    topic = gc.ChannelTopic()
    topic.id = topic_id
    topics.append(topic)
listing = notifications.put_notifications_channel_subscriptions(channel.id, topics, ignore_errors=True)
assert isinstance(listing, gc.ChannelTopicEntityListing), type(listing)
states = {t.id: t.state for t in listing.entities}
assert states == {queue_topic: "Permitted", refused_topic: "Rejected"}, states
rejected = next(t for t in listing.entities if t.id == refused_topic)
assert rejected.missing_permissions, rejected
queues = gc.RoutingApi(api_client).get_routing_queues(page_size=100, page_number=1)
assert isinstance(queues, gc.QueueEntityListing), type(queues)
assert queue_topic.split(".")[3] in [q.id for q in queues.entities], queues.entities

# The frames the simulator pushes, read with the SDK's own event models.
deserialize = api_client._ApiClient__deserialize
queue_frame = json.loads(os.environ["QUEUE_EVENT"])
assert queue_frame["topicName"] == queue_topic, queue_frame["topicName"]
event = deserialize(queue_frame["eventBody"], "QueueConversationEventTopicConversation")
assert isinstance(event, gc.QueueConversationEventTopicConversation), type(event)
event_customer = next(p for p in event.participants if p.purpose == "customer")
assert isinstance(event_customer, gc.QueueConversationEventTopicParticipant), type(event_customer)
call_state = event_customer.calls[0].state
attributes_frame = json.loads(os.environ["ATTRIBUTES_EVENT"])
attributes_event = deserialize(attributes_frame["eventBody"], "AttributeDetailEventTopicAttributeUpdateEvent")
assert isinstance(attributes_event, gc.AttributeDetailEventTopicAttributeUpdateEvent), type(attributes_event)
assert attributes_event.conversation_id == conversation_id, attributes_event

# Every kind of frame the simulator pushes on a live socket. Each topic's event body is read with
# the SDK's model for it. The SDK has none for `channel.metadata` (heartbeats and pongs): those are
# read as the bare `{"message": …}` the Notifications API documents.
frame_kinds = {}
for frame in json.loads(os.environ["FRAMES"]):
    assert set(frame) >= {"topicName", "eventBody"}, frame
    topic = frame["topicName"]
    if topic == "channel.metadata":
        body = deserialize(frame["eventBody"], "dict(str, str)")
        assert body["message"] in ("WebSocket Heartbeat", "pong"), body
        frame_kinds.setdefault(topic, []).append(body["message"])
        continue
    parts = topic.split(".")
    if topic.startswith("v2.routing.queues.") and topic.endswith(".conversations"):
        kind, model = "v2.routing.queues.conversations", "QueueConversationEventTopicConversation"
    elif topic.startswith("v2.detail.events.conversation.") and topic.endswith(".attributes"):
        kind, model = "v2.detail.events.conversation.attributes", "AttributeDetailEventTopicAttributeUpdateEvent"
    elif topic == "v2.system.socket_closing":
        kind, model = topic, "SystemMessageSystemMessage"
    elif topic.startswith("v2.system.no_longer_subscribed."):
        kind, model = "v2.system.no_longer_subscribed", "SystemMessageSystemMessage"
    else:
        raise AssertionError(f"a frame kind this check does not know: {topic}")
    read = deserialize(frame["eventBody"], model)
    assert isinstance(read, getattr(gc, model)), (topic, type(read))
    frame_kinds[kind] = model
frame_kinds["channel.metadata"] = sorted(set(frame_kinds.get("channel.metadata", [])), key=lambda m: m != "WebSocket Heartbeat")

# A wrong token must surface as the SDK's ApiException with Genesys's 401.
api_client.access_token = "not-a-token"
try:
    conversations.get_conversation(conversation_id)
    raise AssertionError("a bad token was accepted")
except ApiException as e:
    assert e.status == 401, e.status
    assert json.loads(e.body)["code"] == "bad.credentials", e.body

print(json.dumps({"secureVersions": versions, "custom": custom, "participant": participant.id, "purpose": participant.purpose, "attributes": attributes,
                  "lookup": hit.conversation_id, "topics": states,
                  "queueEvent": {"id": event.id, "address": event_customer.address,
                                 "callState": call_state},
                  "attributesEvent": attributes_event.attributes.get("vip"),
                  "frames": frame_kinds}))
