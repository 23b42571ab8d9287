"""Points Genesys's official Python SDK at the Patchbay simulator.

It must get a client-credentials token, call patch_conversation_participant_attributes and
get_conversation, and its typed models must show both its own write and the one Patchbay made.
Prints one JSON line of findings; exits non-zero on any failure.
"""
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
states = [c.state for c in (participant.calls or [])] + [m.state for m in (participant.messages or [])]
assert states and "outdated_sdk_version" not in states, states

# A wrong token must surface as the SDK's ApiException with Genesys's 401.
api_client.access_token = "not-a-token"
try:
    conversations.get_conversation(conversation_id)
    raise AssertionError("a bad token was accepted")
except ApiException as e:
    assert e.status == 401, e.status
    assert json.loads(e.body)["code"] == "bad.credentials", e.body

print(json.dumps({"participant": participant.id, "purpose": participant.purpose, "attributes": attributes}))
