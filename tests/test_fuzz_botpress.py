"""Bounded fuzz run of every Botpress-facing transport: no 5xx (issue 9 and issue 10 "Done when").

- schemathesis against the served OpenAPI (``/api/schema/``), called in-process through the WSGI
  application, with a valid key and the real integration id and URL secret in the path;
- hypothesis bodies for the wire protocol (``/botpress/<id>/<secret>/``, the SDK's headers, each
  ``x-bp-operation``), shaped like each operation's body with any JSON in any place, plus raw bytes;
- hypothesis bodies for the hitl-api endpoints, likewise.

Nothing leaves the machine: Botpress and Zendesk are the stand-ins on loopback. A 5xx is allowed
nowhere, not even the wire protocol's "transient" 500, since every outbound answer here is local.
``HITL_FUZZ_SCALE`` multiplies the examples (default 1: about 3,000 cases, well under two minutes).
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from botpress import wire
from outbound.guard import allowances_parse
from sessions_app.models import EndUser, HitlSession
from sessions_app.services.integrations import integration_botpress_configure
from tests.conftest import integration_for
from tests.test_wire_protocol import _caller

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db]

SCALE = float(os.environ.get("HITL_FUZZ_SCALE", "1"))
CONVERSATION = "conv_01FUZZ" + "0" * 21
USER = "user_01FUZZUSER00000000000000"


def _fuzz_settings(examples: int):
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,  # no .hypothesis folder in the checkout
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture
def in_process_requests():
    """Requests made straight to the WSGI app keep the test's connection, as Django's test client does."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def runtime_integration(botpress, zendesk):
    integration, api_key = integration_for(botpress_url=botpress.base_url, zendesk_url=zendesk.base_url)
    end_user = EndUser.objects.create(integration=integration, botpress_user_id=USER, name="Ada")
    HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id=CONVERSATION)
    return integration, api_key


@pytest.fixture
def hitl_api_integration(botpress, zendesk, settings):
    # The stand-in bot listens on loopback over http: allowed explicitly, as for local development.
    settings.HITL = {**settings.HITL, "BOTPRESS_ALLOW_INSECURE_URLS": allowances_parse("127.0.0.1")}
    integration, _ = integration_for(botpress_url=botpress.base_url, zendesk_url=zendesk.base_url, name="Hub")
    integration = integration_botpress_configure(
        integration=integration, transport="hitl_api", hitl_api_webhook_url=f"{botpress.base_url}/wh_fuzz"
    )
    end_user = EndUser.objects.create(integration=integration, botpress_user_id=USER, name="Ada")
    HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id=CONVERSATION)
    return integration


# --- schemathesis against the served OpenAPI ------------------------------------------------------------
def test_openapi_operations_never_answer_5xx(in_process_requests, runtime_integration, hitl_api_integration):
    """Valid (positive) and invalid (negative) cases of every operation the OpenAPI lists.

    schemathesis's strategies drive hypothesis directly (its pytest loader does not run on pytest 9).
    """
    integration, api_key = runtime_integration
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    answered = set()

    @_fuzz_settings(1000)
    @given(case=cases)
    def fuzz(case):
        if case.path.startswith("/hitl-api/"):
            case.path_parameters = {
                "integration_id": str(hitl_api_integration.pk),
                "secret": hitl_api_integration.botpress_url_secret,
            }
        else:
            case.path_parameters = {"integration_id": str(integration.pk)}
        response = case.call(headers={"Authorization": f"Bearer {api_key}"})
        case.validate_response(response, checks=[not_a_server_error])
        answered.add(response.status_code)

    fuzz()
    assert {200, 400} <= answered, answered


# --- hypothesis: any JSON in any place ------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
any_json = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
ids = st.sampled_from([CONVERSATION, USER, "", "x" * 65]) | st.text(max_size=70) | any_json
# Values at and past the stored limits, text PostgreSQL cannot store, any text, any JSON.
edges = ["Ada", "x" * 255, "x" * 256, "x" * 2049, "x" * 64_001, "a\x00b", "\ud800", "https://files.test/a.png"]
texts = st.sampled_from(edges) | st.text() | any_json
emails = st.sampled_from(["ada@example.test", "nope", "a" * 64 + "@" + "b" * 190 + ".test"]) | any_json


def _maybe(**fields):
    """An object with each of these keys or not, each value from its strategy."""
    return st.fixed_dictionaries({}, optional=fields)


def _shaped(kind: str, **fields):
    """A hitl-api body of this ``type``, each other key or not (wrong types come from ``any_json``)."""
    return st.fixed_dictionaries({"type": st.just(kind)}, optional=fields)


payloads = (
    _maybe(
        text=texts,
        markdown=texts,
        imageUrl=texts,
        audioUrl=texts,
        videoUrl=texts,
        fileUrl=texts,
        title=texts,
        userId=ids,
        additionalData=texts,
        items=st.lists(
            _maybe(type=st.sampled_from(["text", "image", "location"]) | any_json, payload=any_json), max_size=3
        )
        | any_json,
        latitude=any_json,
        longitude=any_json,
    )
    | any_json
)
message_types = st.sampled_from(["text", "image", "audio", "video", "file", "bloc", "card", ""]) | any_json
history = st.lists(
    _maybe(
        source=_maybe(type=st.sampled_from(["user", "bot"]) | any_json, userId=ids),
        type=message_types,
        payload=payloads,
    ),
    max_size=3,
)
# Each action's input with its required keys (any value), optional keys or not; or any JSON.
user_input = st.fixed_dictionaries({"name": texts}, optional={"email": emails, "pictureUrl": texts})
start_input = st.fixed_dictionaries(
    {"userId": ids, "messageHistory": history | any_json},
    optional={
        "title": texts,
        "description": texts,
        "hitlSession": _maybe(priority=any_json, requesterEmail=any_json, ticketFormId=any_json) | any_json,
    },
)
stop_input = st.fixed_dictionaries({"conversationId": ids})
action_inputs = user_input | start_input | stop_input | any_json
WIRE_BODIES = {
    "message_created": st.fixed_dictionaries(
        {
            "type": message_types,
            "payload": payloads,
            "conversation": st.fixed_dictionaries({"id": ids, "channel": st.just("hitl") | any_json}) | any_json,
            "user": _maybe(id=ids) | any_json,
            "message": _maybe(id=ids) | any_json,
        }
    ),
    "action_triggered": st.one_of(
        st.fixed_dictionaries({"type": st.just("createUser"), "input": user_input}),
        st.fixed_dictionaries({"type": st.just("startHitl"), "input": start_input}),
        st.fixed_dictionaries({"type": st.just("stopHitl"), "input": stop_input}),
        _maybe(type=st.sampled_from(["createUser", "startHitl", "nope"]) | any_json, input=action_inputs),
    ),
    "register": _maybe(webhookUrl=st.sampled_from(["https://webhook.botpress.test/wh_1"]) | texts),
    "webhook_received": _maybe(
        req=_maybe(method=st.sampled_from(["POST", "GET"]) | any_json, headers=any_json, body=texts) | any_json
    ),
}
wire_calls = st.one_of(
    *(
        st.tuples(st.just(operation), body.map(lambda b: json.dumps(b).encode()))
        for operation, body in WIRE_BODIES.items()
    ),
    st.tuples(st.sampled_from(wire.OPERATIONS) | st.text(min_size=1, alphabet="abcdefgh_"), st.binary(max_size=64)),
    st.tuples(st.sampled_from(wire.OPERATIONS), any_json.map(lambda b: json.dumps(b).encode())),
    st.tuples(st.sampled_from(wire.OPERATIONS), st.integers(10, 2000).map(lambda n: b"[" * n + b"]" * n)),
)


def test_wire_protocol_never_answers_5xx(client, runtime_integration):
    integration, _ = runtime_integration
    caller = _caller(client, integration)
    answered = set()

    @_fuzz_settings(1500)
    @given(call=wire_calls)
    def fuzz(call):
        operation, body = call
        response = caller.send(operation, raw=body)
        assert response.status_code < 500, (operation, body[:300], response.content[:500])
        answered.add(response.status_code)

    fuzz()
    assert {200, 400} <= answered, answered  # the bodies reach the handlers, not only the parser


HITL_API_BODIES = {
    "ping": any_json,
    "createRemoteUser": _shaped("createRemoteUser", payload=user_input | any_json),
    "createRemoteConversation": _shaped(
        "createRemoteConversation",
        payload=_maybe(
            title=texts,
            description=texts,
            messages=st.lists(_maybe(text=texts, author=ids, timestamp=texts), max_size=3) | any_json,
        )
        | any_json,
    ),
    "botSendsMessage": _shaped("botSendsMessage", remoteConversationId=ids, remoteUserId=ids, payload=payloads),
    "closeRemoteTicket": _shaped("closeRemoteTicket", payload=_maybe(botpressConversationId=ids) | any_json),
}
hitl_api_calls = st.one_of(
    st.tuples(st.sampled_from(list(HITL_API_BODIES)), any_json.map(lambda b: json.dumps(b).encode())),
    *(st.tuples(st.just(path), body.map(lambda b: json.dumps(b).encode())) for path, body in HITL_API_BODIES.items()),
    st.tuples(st.sampled_from(list(HITL_API_BODIES)), st.binary(max_size=64)),
)


def test_hitl_api_never_answers_5xx(hitl_api_integration):
    api = APIClient()
    base = f"/hitl-api/{hitl_api_integration.pk}/{hitl_api_integration.botpress_url_secret}"
    answered = set()

    @_fuzz_settings(800)
    @given(call=hitl_api_calls)
    def fuzz(call):
        path, body = call
        response = api.post(f"{base}/{path}", body, content_type="application/json")
        assert response.status_code < 500, (path, body[:300], response.content[:500])
        answered.add(response.status_code)

    fuzz()
    assert {200, 400} <= answered, answered
