"""Property: a correctly signed Zendesk webhook, whatever it carries, is never answered with a
5xx, and once accepted and applied it ends processed or ignored, or failed with a reason an
operator sees. Arbitrary text (NUL, lone surrogates as JSON escapes, 100 KB comments, deep
HTML) and odd types in every field of the trigger body."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sessions_app.models import WebhookEvent, WebhookStatus
from sessions_app.services import webhooks
from tests.test_inbound_webhooks import scene, send  # noqa: F401 - the fixture

SPECIAL = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\ud83d\ude00", "<p>", "</p>", "<br>", "&amp;", "&#0;", "\r\n", "!*** ", " ***!", "-"]
)
TEXT = st.lists(st.one_of(st.characters(), SPECIAL), max_size=40).map("".join)
HUGE = st.sampled_from(
    [
        "<p>" + "x" * 100_000 + "\x00</p>",
        "<div>" * 3000 + "deep\x00" + "</div>" * 3000,
        "<p>" + "\ud800" * 20_000 + "</p>",
    ]
)
SCALAR = st.one_of(TEXT, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
ODD = st.one_of(SCALAR, st.lists(SCALAR, max_size=3), st.dictionaries(TEXT, SCALAR, max_size=3))
DIGITS = st.one_of(st.just("42"), st.integers(min_value=0, max_value=10**80).map(str), st.integers(min_value=0))


def _person(role):
    return st.fixed_dictionaries({"id": DIGITS, "name": TEXT, "email": TEXT, "role": role, "remote_photo_url": TEXT})


# The trigger's body as Zendesk renders it, every text arbitrary ...
VALID = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["newMessage", "ticketAssigned", "ticketSolved"]),
        "ticketId": DIGITS,
        "externalId": st.one_of(st.just("conv_1"), TEXT),
        "status": TEXT,
        "commentId": DIGITS,
        "comment": st.one_of(TEXT.map(lambda t: f"<p>{t}</p>"), HUGE),
        "agent": _person(st.just("agent")),
        "currentUser": _person(st.one_of(st.just("agent"), TEXT)),
    }
)


def _one_field_odd(body: dict):
    """... or with one field (or one person's field) of an odd type."""
    paths = [(key,) for key in body] + [(who, key) for who in ("agent", "currentUser") for key in body[who]]

    def replace(path, value):
        changed = json.loads(json.dumps(body))
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return changed

    return st.tuples(st.sampled_from(paths), ODD).map(lambda pv: replace(*pv))


TRIGGER = st.one_of(VALID, VALID, VALID.flatmap(_one_field_odd))
BODY = st.one_of(
    TRIGGER.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),
    st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3), max_leaves=20).map(
        lambda v: json.dumps(v).encode()
    ),
)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=BODY)
def test_signed_webhooks_never_5xx_and_never_vanish(scene, client, body):  # noqa: F811
    before = set(WebhookEvent.objects.values_list("pk", flat=True))
    response = send(client, scene.integration, body)
    assert response.status_code < 500
    assert response.status_code in (200, 400), response.content
    event(f"answered {response.status_code} {response.json().get('status', '')}")
    if response.json().get("status") != "accepted":
        return
    (record,) = WebhookEvent.objects.exclude(pk__in=before)
    webhooks.webhook_queue_drain(webhook_event_id=record.pk)
    record.refresh_from_db()
    event(f"applied: {record.status}")
    assert record.status in (WebhookStatus.PROCESSED, WebhookStatus.IGNORED, WebhookStatus.FAILED), record.detail
    if record.status == WebhookStatus.FAILED:  # visible to operators: the reason is on the record
        assert record.detail and "failed" in record.detail
        assert all(f["reason"] for f in record.failed_events)
