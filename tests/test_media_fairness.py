"""A slow media host cannot starve other integrations: media deliveries run on their own queue.

Measured with real worker processes laid out as in the ``Procfile`` (one worker for the default
queue, one for the media queue, concurrency 1 each), against the layout without the split (one
worker for everything): integration A sends media from a host that keeps just above the minimum
rate but needs far longer than the deadline; meanwhile integration B sends text messages, and
we time each from the POST until the comment is in the help desk.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import statistics
import time
import uuid

import pytest
import requests

from tests.conftest import (
    _worker_env,
    delete_queues,
    integration_for,
    media_allow_list,
    start_worker,
)

DEADLINE = 4.0  # HITL_MEDIA_FETCH_TIMEOUT for this run
MEDIA_MESSAGES = 3
TEXT_MESSAGES = 6


class Client:
    def __init__(self, url: str, integration, api_key: str):
        self.url, self.integration, self.api_key = url, integration, api_key

    def post(self, path: str, body: dict) -> dict:
        response = requests.post(
            f"{self.url}/api/v1/integrations/{self.integration.pk}/{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )
        assert response.status_code in (200, 202), response.text
        return response.json() if response.content else {}

    def start(self, name: str) -> str:
        user = self.post("actions/createUser", {"name": name, "email": f"{name.lower()}@example.com"})["userId"]
        body = {"userId": user, "title": f"{name} needs help", "messageHistory": []}
        conversation = self.post("actions/startHitl", body)["conversationId"]
        return conversation

    def send(self, conversation: str, message_type: str, payload: dict) -> None:
        self.post(
            "channels/hitl/messages",
            {"conversationId": conversation, "messageId": f"msg_{uuid.uuid4().hex}", "type": message_type}
            | {"payload": payload},
        )


def _ticket(zendesk, conversation: str) -> dict:
    return zendesk.wait_for(
        lambda: next((t for t in zendesk.tickets() if t.get("external_id") == conversation), None), timeout=30
    )


@pytest.fixture
def stack(transactional_db, live_server, botpress, zendesk, settings, media_host, tmp_path):
    from django.db import connection

    from hitl_gateway.celery import app

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("needs a real broker: set CELERY_BROKER_URL")
    queue = f"hitl-fair-{uuid.uuid4().hex[:8]}"
    previous_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    settings.HITL = {**settings.HITL, "MEDIA_QUEUE": f"{queue}.media"}
    settings.PUBLIC_BASE_URL = live_server.url
    env = _worker_env(connection.settings_dict["NAME"], queue, media_allow=media_allow_list(media_host.port))
    env.update(HITL_MEDIA_FETCH_TIMEOUT=str(DEADLINE), HITL_HTTP_READ_TIMEOUT="10")
    workers = []

    def launch(layout: str) -> None:
        # "procfile": a worker per queue, as deployed; "shared": one worker for both (no split).
        layout_queues = [[queue], [f"{queue}.media"]] if layout == "procfile" else [[queue, f"{queue}.media"]]
        for index, queues in enumerate(layout_queues):
            name, beat = f"{queue}-{index}", index == 0
            workers.append(start_worker(queues=queues, name=name, env=env, workdir=tmp_path, beat=beat, concurrency=1))

    clients = []
    for name in ("A", "B"):
        integration, api_key = integration_for(botpress_url=botpress.base_url, zendesk_url=zendesk.base_url, name=name)
        clients.append(Client(live_server.url, integration, api_key))
    yield launch, clients, zendesk
    for worker in workers:
        worker.stop()
    delete_queues(queue, f"{queue}.media")
    app.conf.task_default_queue = previous_queue


def _measure(launch, clients, zendesk, media_host, layout: str) -> list[float]:
    launch(layout)
    a, b = clients
    a_conversations = [a.start(f"Slow{n}") for n in range(MEDIA_MESSAGES)]
    b_conversation = b.start("Quick")
    b_ticket = _ticket(zendesk, b_conversation)
    for conversation in a_conversations:
        _ticket(zendesk, conversation)
    # 12 KB/s keeps above the 10 KB/s minimum rate, but 1 MB would take 85 s: the deadline stops each.
    slow_url = media_host.url("/drip/big.png?bytes=1000000&every=0.1&size=1200")
    for conversation in a_conversations:
        a.send(conversation, "image", {"imageUrl": slow_url, "title": "slow"})
    time.sleep(0.5)  # the media worker is now busy with the first one
    latencies = []
    for n in range(TEXT_MESSAGES):
        text = f"quick {n}"
        sent = time.monotonic()
        b.send(b_conversation, "text", {"text": text})
        zendesk.wait_for(lambda text=text: any(c["body"] == text for c in zendesk.comments(b_ticket["id"])), timeout=60)
        latencies.append(time.monotonic() - sent)
        time.sleep(0.5)
    # Every media message ends as a link (too slow), none is retried or lost.
    for conversation in a_conversations:
        ticket = _ticket(zendesk, conversation)
        comments = zendesk.wait_for(lambda t=ticket: (c := zendesk.comments(t["id"]))[1:] and c, timeout=60)
        assert slow_url in comments[-1]["body"] and not comments[-1].get("attachments")
    print(
        f"\n[{layout}] {MEDIA_MESSAGES} slow media messages (deadline {DEADLINE:.0f} s each) while B sends "
        f"{TEXT_MESSAGES} texts: B latency max {max(latencies):.2f} s, median {statistics.median(latencies):.2f} s, "
        f"all {[round(x, 2) for x in latencies]}"
    )
    return latencies


@pytest.mark.e2e
def test_text_of_another_integration_is_prompt_while_a_media_host_drips(stack, media_host):
    launch, clients, zendesk = stack
    latencies = _measure(launch, clients, zendesk, media_host, "procfile")
    assert max(latencies) < 2.0, latencies


@pytest.mark.e2e
def test_without_the_media_queue_the_same_load_starves_the_text(stack, media_host):
    """The contrast that shows the measurement is sensitive: one worker for both queues."""
    launch, clients, zendesk = stack
    latencies = _measure(launch, clients, zendesk, media_host, "shared")
    assert max(latencies) > DEADLINE / 2, latencies


@pytest.mark.parametrize(
    ("message_type", "payload", "media"),
    [
        ("text", {"text": "hi"}, False),
        ("image", {"imageUrl": "https://cdn.example.com/a.png"}, True),
        ("file", {"fileUrl": "https://cdn.example.com/a.pdf", "title": "a"}, True),
        ("bloc", {"items": [{"type": "text", "payload": {"text": "x"}}]}, False),
        ("bloc", {"items": [{"type": "audio", "payload": {"audioUrl": "https://cdn.example.com/a.mp3"}}]}, True),
    ],
)
def test_media_messages_go_to_the_media_queue(db, settings, monkeypatch, message_type, payload, media):
    from sessions_app.models import EndUser, HitlSession
    from sessions_app.services import outbox
    from sessions_app.services.sessions import message_relay_to_agent
    from sessions_app.tasks import relay

    sent = []
    monkeypatch.setattr(relay, "apply_async", lambda args, **options: sent.append((args, options["queue"])))
    settings.HITL = {**settings.HITL, "MEDIA_QUEUE": "q.media"}
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    end_user = EndUser.objects.create(integration=integration, botpress_user_id="user_1", name="Ada")
    HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id="conv_1")
    message, _ = message_relay_to_agent(
        integration=integration, conversation_id="conv_1", type=message_type, payload=payload, sender_user_id="user_1"
    )
    assert message.delivery.queue == ("q.media" if media else "")
    outbox.delivery_schedule(delivery_id=message.delivery.pk)
    queue = "q.media" if media else ""
    assert sent == [((queue,), queue or None)], "the relay of the row's queue, on that queue"
