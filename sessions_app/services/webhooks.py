"""Inbound help-desk webhooks: acknowledge fast, process in a task.

The acknowledgement does verify + one insert and no outbound HTTP and no broker round trip:
the committed row *is* the hand-off. The insert is also the deduplication: a unique
(integration, dedup key) row, so a webhook delivered twice is stored and processed once. The
workers hear of new rows from ``READY``: each web process, off the request thread and at most
once per ``HITL["WEBHOOK_SIGNAL_SECONDS"]``, rings the relay's doorbell (``services.relay``),
which sends one relay message per burst; the relay applies every due ticket queue
(``webhook_source``), each in order; the sweeper is the net for a lost signal.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, Max, OuterRef, Q, Subquery
from django.utils import timezone

from hitl_gateway import metrics
from hitl_gateway.compiled import CompiledQuery, row_insert, row_update, rows_update, run_unpinged
from outbound.http import OutboundError
from providers import provider_class
from providers.base import HelpDeskProvider, InboundEvent, ParsedWebhook, WebhookInvalid, WebhookRejected
from providers.registry import provider_spec
from providers.text import bytes_sanitize, text_sanitize, value_sanitize
from sessions_app.fields import EncryptedField
from sessions_app.models import (
    Delivery,
    DeliveryStatus,
    Direction,
    Heartbeat,
    HumanAgent,
    Integration,
    Message,
    SessionStatus,
    Ticket,
    WebhookEvent,
    WebhookRejection,
    WebhookStatus,
)
from sessions_app.services.integrations import integration_provider, integration_signing_secrets
from sessions_app.services.outbox import outbox_rings_coalesced, outbox_rows_written
from sessions_app.services.relay import ReadySignal, Source, relay_doorbell, relay_run, relay_send, relay_wake
from sessions_app.services.sessions import TRANSIENT_ERRORS, BatchReads, EventFailed, session_events_apply

log = structlog.get_logger(__name__)

MAX_HEADER_VALUE = 256
# An authenticated but malformed request is kept for audit only, so only its start is stored.
MAX_INVALID_BODY = 4096
# Rejected (unauthenticated) requests are counted, not stored: the last few samples per counter,
# each at most this many bytes of JSON.
SAMPLES_KEPT = 5
SAMPLE_MAX_BYTES = 512
# A webhook whose processing needs the help desk's API (a doorbell reading its ticket, an agent's
# profile) is retried when the desk fails: after 2, 4, 8 ... seconds, at most this far apart,
# at most this many times (about 1.7 hours), then it is ``failed`` and an operator re-applies it.
# A rate-limited desk (429) says when to come back (``Retry-After``): then, and not counted,
# since the desk is busy, not failing.
FETCH_RETRY_MAX_DELAY = 300
FETCH_RETRY_MAX_ATTEMPTS = 12


def kept_headers(provider: str) -> tuple[str, ...]:
    """The webhook headers kept for the audit trail: what the provider's spec names, never a signature."""
    return provider_spec(provider).kept_headers


@dataclass(frozen=True)
class WebhookOutcome:
    status_code: int
    body: dict = field(default_factory=dict)


UNAUTHORIZED = WebhookOutcome(401, {"error": "unauthorized", "message": "Webhook authentication failed."})
DUPLICATE = WebhookOutcome(200, {"status": "duplicate"})


# What the acknowledgement reads of the integration: every other column is left in the
# database (each encrypted one would cost a decryption per webhook).
ACK_FIELDS = (
    "id",
    "provider",
    "is_active",
    "webhook_signing_secret",
    "webhook_signing_secret_previous",
    "webhook_signing_secret_changed_at",
    "provider_installation",
)


# The integration's encrypted columns: left unread (undecrypted) when a webhook is applied,
# loaded on first use by the paths that need them (a doorbell's read of the ticket).
INTEGRATION_SECRETS = tuple(
    field.name for field in Integration._meta.concrete_fields if isinstance(field, EncryptedField)
)


def _integration(integration_id: str, provider: str) -> Integration | None:
    try:
        pk = uuid.UUID(integration_id)
    except ValueError:
        return None
    # No ``.first()``: its ORDER BY is a third of this query's compilation, and the pk is unique.
    found = list(Integration.objects.filter(pk=pk, provider=provider, is_active=True).only(*ACK_FIELDS).order_by()[:1])
    return found[0] if found else None


class AckIntegrations:
    """What the ack path verifies against, kept per process for ``HITL_ACK_INTEGRATION_SECONDS``.

    Reading the integration (and decrypting its signing secret) was one of the ack's two
    statements and a third of its database time; at hundreds of webhooks a second the row
    hardly ever changes. Kept: found integrations only (an unknown id is read each time, so
    random ids cannot fill the memory), at most ``MAX_KEPT``. A signature that fails against a
    kept row is checked again against a fresh read, so a new secret (``register``, an operator's
    re-install) works at once; a deactivated integration stops being accepted, and a previous
    secret's grace ends, up to the TTL late. 0 turns it off. The instances are only read, so
    the web threads can share them.
    """

    MAX_KEPT = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str], tuple[float, Integration]] = {}

    def get(self, integration_id: str, provider: str) -> tuple[Integration | None, bool]:
        """The integration, and whether it came from memory (so may be up to the TTL old)."""
        ttl = settings.HITL["ACK_INTEGRATION_SECONDS"]
        key, now = (integration_id, provider), time.monotonic()
        kept = self._kept.get(key) if ttl > 0 else None
        if kept is not None and now - kept[0] < ttl:
            return kept[1], True
        return self.read(integration_id, provider), False

    def read(self, integration_id: str, provider: str) -> Integration | None:
        """Read from the database, and keep what was found."""
        found = _integration(integration_id, provider)
        with self._lock:
            if found is None or settings.HITL["ACK_INTEGRATION_SECONDS"] <= 0:
                self._kept.pop((integration_id, provider), None)
            else:
                if len(self._kept) >= self.MAX_KEPT:
                    self._kept.clear()
                self._kept[(integration_id, provider)] = (time.monotonic(), found)
        return found

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


ACK_INTEGRATIONS = AckIntegrations()


def webhook_receive(
    *, integration_id: str, provider: str, headers: Mapping[str, str], body: bytes, remote_addr: str | None
) -> WebhookOutcome:
    """Verify, record, enqueue. An unknown integration looks exactly like a bad signature.

    A rejected request is only counted (``webhook_rejection_count``); an authentic one is stored
    once, deduplicated by the adapter's dedup key and by its replay key (what was signed). Every
    text stored is sanitised (``providers.text``): a raw body may hold NUL bytes or invalid UTF-8.
    A webhook the adapter answers synchronously (``ParsedWebhook.reply``, such as Slack's
    ``url_verification``) gets that answer with 200 and stores nothing.
    """
    integration, from_memory = ACK_INTEGRATIONS.get(integration_id, provider)
    if integration is None:
        log.warning("webhook.unknown_integration", provider=provider, remote_addr=remote_addr)
        metrics.webhook_counted(provider=provider, result="rejected", reason="unknown integration")
        return UNAUTHORIZED
    adapter = provider_class(provider)
    lowered = {key.lower(): value for key, value in headers.items()}
    kept = {
        key: text_sanitize(str(lowered[key]))[:MAX_HEADER_VALUE] for key in kept_headers(provider) if key in lowered
    }
    try:
        try:
            _verify(adapter, integration, headers=lowered, body=body)
        except WebhookRejected:
            if not from_memory:
                raise
            # Perhaps signed with a secret newer than the row kept in memory: read it again.
            integration = ACK_INTEGRATIONS.read(integration_id, provider)
            if integration is None:
                metrics.webhook_counted(provider=provider, result="rejected", reason="unknown integration")
                return UNAUTHORIZED
            _verify(adapter, integration, headers=lowered, body=body)
    except WebhookRejected as exc:
        webhook_rejection_count(
            integration=integration, reason=str(exc), headers=kept, body=body, remote_addr=remote_addr
        )
        log.warning("webhook.rejected", integration_id=str(integration.pk), reason=str(exc))
        metrics.webhook_counted(provider=provider, result="rejected", reason=str(exc))
        return UNAUTHORIZED
    record = {"integration": integration, "provider": provider, "headers": kept, "remote_addr": remote_addr}
    try:
        # Only what is stored or answered here is sanitised: the worker parses the stored body
        # again and sanitises each event it applies (``session_events_apply``).
        parsed = adapter.webhook_parse(headers=lowered, body=body, installation=integration.provider_installation or {})
    except WebhookInvalid as exc:
        metrics.webhook_counted(provider=provider, result="rejected", reason="invalid payload")
        WebhookEvent.objects.create(
            status=WebhookStatus.FAILED,
            detail=text_sanitize(f"invalid: {exc}")[:2000],
            body=bytes_sanitize(body[:MAX_INVALID_BODY]),
            **record,
        )
        return WebhookOutcome(
            400,
            {
                "error": "invalid_payload",
                "message": "The webhook body is invalid.",
                "fields": {exc.field: [exc.message]},
            },
        )
    if parsed.reply is not None:
        return WebhookOutcome(200, value_sanitize(dict(parsed.reply)))
    replay_key = adapter.webhook_replay_key(headers=lowered, body=body) or None
    fields = {
        "status": WebhookStatus.ACCEPTED,
        "dedup_key": text_sanitize(parsed.dedup_key),
        "replay_key": replay_key and text_sanitize(replay_key),
        "event_type": text_sanitize(parsed.event_type),
        "ticket_external_id": text_sanitize(parsed.ticket_external_id),
        "body": bytes_sanitize(body),
        **record,
    }
    if webhook_event_insert(fields=fields) is None:  # the same dedup key, or the same signed content (a replay)
        return DUPLICATE
    metrics.webhook_counted(provider=provider, result="accepted")
    transaction.on_commit(READY.ring)  # at once in autocommit
    return WebhookOutcome(200, {"status": "accepted"})


def webhook_event_insert(*, fields: Mapping) -> int | None:
    """Store one accepted webhook: its id, or None when its dedup or replay key is taken.

    One ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` statement (PostgreSQL, SQLite 3.35+):
    a duplicate is no error, so it needs no savepoint inside a transaction and no exception
    path, and the statement is built once per process rather than compiled by the ORM per
    webhook (``row_insert``), and sent without Django's health-check ping before it
    (``run_unpinged``: a dropped connection is replaced and the insert sent again, which the
    dedup key makes safe). The values still go through each field's own conversion
    (``get_db_prep_save``), defaults and ``auto_now_add`` included, exactly as ``Model.save`` would.
    """
    event = WebhookEvent(**fields)
    return run_unpinged(lambda: row_insert(event, skip_conflicts=True))


READY = ReadySignal(
    send=lambda: relay_wake(name=relay_doorbell(""), send=_relay_send),
    interval=lambda: settings.HITL["WEBHOOK_SIGNAL_SECONDS"],
)


def _sample(*, headers: Mapping[str, str], body: bytes, remote_addr: str | None, at: datetime) -> dict:
    """What an operator sees of one rejected request: at most ``SAMPLE_MAX_BYTES`` of JSON."""
    sample = {"at": at.isoformat(), "remote_addr": remote_addr, "headers": dict(headers), "body": ""}
    if len(json.dumps(sample).encode()) > SAMPLE_MAX_BYTES // 2:  # long header values: names only
        sample["headers"] = dict.fromkeys(headers, "…")
    text = bytes_sanitize(body[:SAMPLE_MAX_BYTES])
    while text and (overflow := len(json.dumps(sample | {"body": text}).encode()) - SAMPLE_MAX_BYTES) > 0:
        text = text[: len(text) - max(1, overflow // 12)]  # a character is at most 12 bytes of JSON
    sample["body"] = text
    return sample


_REJECTION_UPSERT = {
    "postgresql": """
        INSERT INTO {table} (integration_id, reason, bucket, count, first_at, last_at, samples)
        VALUES (%s, %s, %s, 1, %s, %s, %s::jsonb)
        ON CONFLICT (integration_id, reason, bucket) DO UPDATE SET
            count = {table}.count + 1,
            last_at = EXCLUDED.last_at,
            samples = jsonb_path_query_array({table}.samples || EXCLUDED.samples, '$[last - {keep} to last]')
    """,
    "sqlite": """
        INSERT INTO {table} (integration_id, reason, bucket, count, first_at, last_at, samples)
        VALUES (%s, %s, %s, 1, %s, %s, %s)
        ON CONFLICT (integration_id, reason, bucket) DO UPDATE SET
            count = {table}.count + 1,
            last_at = excluded.last_at,
            samples = json_insert(
                CASE WHEN json_array_length({table}.samples) > {keep}
                     THEN json_remove({table}.samples, '$[0]') ELSE {table}.samples END,
                '$[#]', json(json_extract(excluded.samples, '$[0]'))
            )
    """,
}


def webhook_rejection_count(
    *, integration: Integration, reason: str, headers: Mapping[str, str], body: bytes, remote_addr: str | None
) -> None:
    """Count one rejected webhook in its (integration, reason, hour) counter: one upsert, no row.

    ``INSERT ... ON CONFLICT DO UPDATE count = count + 1`` keeps the rows bounded (one per
    reason and hour) whatever the flood, and concurrent rejections never lose a count.
    """
    now = timezone.now()
    bucket = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    sample = _sample(headers=headers, body=body, remote_addr=remote_addr, at=now)
    table = connection.ops.quote_name(WebhookRejection._meta.db_table)
    sql = _REJECTION_UPSERT[connection.vendor].format(table=table, keep=SAMPLES_KEPT - 1)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                integration.pk.hex if connection.vendor == "sqlite" else integration.pk,
                text_sanitize(reason)[:128],
                bucket,
                now,
                now,
                json.dumps([sample]),
            ],
        )


def _verify(adapter, integration: Integration, *, headers: Mapping[str, str], body: bytes) -> None:
    """Accept a signature by the current secret, or by the previous one during its grace period."""
    window = timedelta(seconds=settings.HITL["WEBHOOK_REPLAY_WINDOW_SECONDS"])
    first_error = None
    for secret in integration_signing_secrets(integration=integration):
        try:
            adapter.webhook_verify(headers=headers, body=body, secret=secret, now=timezone.now(), window=window)
            return
        except WebhookRejected as exc:
            first_error = first_error or exc
    raise first_error


def webhook_schedule(*, webhook_event_id: int, countdown: float | None = None) -> None:
    """Wake the relay now or after ``countdown`` seconds (retries, sweeper, operators).

    The relay applies whatever is due, this webhook's ticket queue among it; a lost message is
    the sweeper's.
    """
    relay_send(queue="", countdown=countdown)


def _schedule_if_queue_head(event: WebhookEvent) -> None:
    """Tell the relay a committed webhook is ready: one message per burst (doorbell).

    The relay turns the doorbell off before it claims, so it applies this webhook or a later
    ring sends another message (``services.relay``); a lost message is the sweeper's.
    """
    relay_wake(name=relay_doorbell(""), send=lambda: _relay_send())


def _relay_send() -> bool:
    return relay_send(queue="")


QUEUE_BUDGET = 100  # webhooks one drain applies before handing the ticket's queue back
APPLY_BATCH = 16  # webhooks of one ticket applied in one transaction
QUEUE_SLICE_SECONDS = 1.0  # the relay's drain of one ticket's queue stops after this much work
QUEUE_REST_SECONDS = 0.5  # a queue held elsewhere (or waiting for its retry) is not asked for again meanwhile
HEADS_SPREAD = 4  # a claim picks its heads at random among this many times as many of the oldest
RELAY_MAX_SECONDS = 20.0  # a relay task claims for this long, then hands over to a fresh task


def webhook_queue_drain(*, webhook_event_id: int) -> int:
    """Apply the accepted webhooks of this event's ticket, oldest first; return how many.

    Webhooks about one ticket are applied in the order they were accepted, whatever worker
    runs which task: only the queue's head is applied, under a row lock taken with SKIP LOCKED,
    so a second worker backs off and the first carries on with the queue.
    """
    # The ticket's queue and its head in one statement (the key is read from this event).
    this = WebhookEvent.objects.filter(pk=webhook_event_id).order_by()
    found = (
        _ticket_queue(Subquery(this.values("integration_id")[:1]), Subquery(this.values("ticket_external_id")[:1]))
        .order_by("id")
        .values_list("id", "integration_id", "ticket_external_id")
        .first()
    )
    if found is None:
        return 0
    done = _queue_drain(found)
    if done == QUEUE_BUDGET:
        webhook_schedule(webhook_event_id=webhook_event_id)
    return done


def _queue_drain(head: tuple, *, seconds: float | None = None, relayed: bool = False) -> int:
    """Apply a ticket's queue from its head ``(id, integration_id, ticket_external_id)``, up to
    ``QUEUE_BUDGET`` webhooks or ``seconds`` of work; return how many were applied. ``relayed``:
    the relay engine runs this drain and claims the queue's heads again once it is settled.

    Webhooks are applied in batches of up to ``APPLY_BATCH``, each in one transaction
    (``_queue_batch``).
    """
    head_id, *key = head
    done, until = 0, None if seconds is None else time.monotonic() + seconds
    while done < QUEUE_BUDGET and head_id is not None:
        applied, emptied = _queue_batch(*key, head_id=head_id, size=min(APPLY_BATCH, QUEUE_BUDGET - done))
        if not applied:
            return done
        done += applied
        if emptied and relayed:
            # Nothing more of the queue could be locked. A webhook accepted since rang the relay,
            # whose next claim finds it: no read of a next head that is nearly always missing.
            return done
        if until is not None and time.monotonic() >= until:
            return done  # a time slice: the relay claims the queue again, after the others
        # Read only after the previous batch committed (lanes are strictly serial).
        head_id = _QUEUE_HEAD.first(integration_id=key[0], ticket=key[1])
    return done


# Every ticket queue's head (PostgreSQL's DISTINCT ON; ``_queue_heads``).
_QUEUE_HEADS = CompiledQuery(
    lambda: (
        WebhookEvent.objects.filter(status=WebhookStatus.ACCEPTED)
        .order_by("integration_id", "ticket_external_id", "id")
        .distinct("integration_id", "ticket_external_id")
        .values_list("id", "integration_id", "ticket_external_id", "retry_at")
    )
)


def _queue_heads(limit: int, skip: set) -> list[tuple]:
    """Up to ``limit`` due heads of ticket queues not in ``skip``: ``(id, integration_id, ticket)``.

    The head is the accepted webhook with no earlier accepted one of its ticket; a head waiting
    for its retry holds its queue back, so nothing behind it is listed either. On PostgreSQL
    one ``DISTINCT ON`` walk of the ``webhook_ticket_queue`` partial index (no probe per
    candidate: a burst of a thousand webhooks about one ticket costs a fraction of a
    millisecond); elsewhere an anti-join. A plain read: the apply locks the head (SKIP LOCKED).

    Near the oldest first: ``limit`` heads at random among the ``HEADS_SPREAD * limit`` oldest.
    Why: every relay process reads the same heads, and taking exactly the oldest, processes
    collided on them; under ``make chaos`` more than half of all drains found their queue held
    by another process and applied nothing, each costing a thread's round trips.
    """
    now = timezone.now()
    if connection.vendor == "postgresql":
        heads = _QUEUE_HEADS.fetch()
        due = [row[:3] for row in heads if (row[3] is None or row[3] <= now) and (row[1], row[2]) not in skip]
        oldest = sorted(due, key=lambda row: row[0])[: limit * HEADS_SPREAD]
        return sorted(random.sample(oldest, min(limit, len(oldest))), key=lambda row: row[0])
    accepted = WebhookEvent.objects.filter(status=WebhookStatus.ACCEPTED)
    earlier = WebhookEvent.objects.filter(
        integration_id=OuterRef("integration_id"),
        ticket_external_id=OuterRef("ticket_external_id"),
        status=WebhookStatus.ACCEPTED,
        id__lt=OuterRef("id"),
    )
    heads = (
        accepted.filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
        .exclude(Exists(earlier))
        .order_by("id")
        .values_list("id", "integration_id", "ticket_external_id")[: limit + len(skip)]
    )
    return [head for head in heads if (head[1], head[2]) not in skip][:limit]


def webhook_source() -> Source:
    """Accepted webhooks as a source of the relay engine (``services.relay``): a lane is a
    ticket's queue, drained on one thread for a time slice (``QUEUE_SLICE_SECONDS``), so a run
    keeps to its time and a busy ticket does not hold a thread; a queue that made no progress
    (its head is held elsewhere or waits for a retry) rests for ``QUEUE_REST_SECONDS``. An
    item's outcome is whether its drain wrote outbox rows (what ``Source.feeds`` looks at).
    """
    resting: dict[tuple, float] = {}  # ticket queue -> monotonic time its rest ends (pool threads write)
    lock = threading.Lock()

    def run(head: tuple) -> bool:
        written = outbox_rows_written()
        done = _queue_drain(head, seconds=QUEUE_SLICE_SECONDS, relayed=True)
        if done == 0:
            with lock:
                resting[(head[1], head[2])] = time.monotonic() + QUEUE_REST_SECONDS
        return outbox_rows_written() > written  # the outcome: whether it wrote outbox rows

    def claim(limit: int, running: set) -> list[tuple]:
        now = time.monotonic()
        with lock:
            for key in [key for key, until in resting.items() if until <= now]:
                del resting[key]
            skip = running | resting.keys()
        return _queue_heads(limit, skip)

    return Source(
        name="webhooks",
        claim=claim,
        lane_of=lambda head: (head[1], head[2]),
        execute=run,
        settle=lambda finished: None,  # each apply committed its own outcome
    )


def webhook_relay() -> int:
    """Apply due webhooks until none is left (webhooks alone: tests, tools; workers run
    ``relays.relay_queue_serve``). Returns how many ticket queues were run."""
    return relay_run(sources=[webhook_source()], max_seconds=RELAY_MAX_SECONDS)[0]


def _ticket_queue(integration_id, ticket_external_id):
    return WebhookEvent.objects.filter(
        integration_id=integration_id, ticket_external_id=ticket_external_id, status=WebhookStatus.ACCEPTED
    )


# A ticket queue's head id; and its first webhooks from the head on, locked (these rows only:
# FOR UPDATE through a join would also lock the integration row) with their integration, whose
# secrets stay unread. SKIP LOCKED: whoever holds the head holds the queue, so a head held
# elsewhere is not returned and the rows behind it are never applied out of turn.
_QUEUE_HEAD = CompiledQuery(
    lambda integration_id, ticket: _ticket_queue(integration_id, ticket).order_by("id").values_list("id", flat=True)[:1]
)
_QUEUE_BATCH_LOCKED = CompiledQuery(
    lambda integration_id, ticket, head_id: (
        _ticket_queue(integration_id, ticket)
        .select_for_update(skip_locked=True, of=("self",))
        .select_related("integration")
        .defer(*(f"integration__{name}" for name in INTEGRATION_SECRETS))
        .filter(pk__gte=head_id)
        .order_by("pk")[:APPLY_BATCH]
    )
)


def _queue_batch(
    integration_id, ticket_external_id: str, *, head_id: int, size: int, isolated: bool = False
) -> tuple[int, bool]:
    """Apply up to ``size`` webhooks of the queue from its head (read by the caller), in order and
    in one transaction; return how many were applied, a head that failed for good counted (0:
    the head is held elsewhere, waits for its retry, or failed and will be retried), and whether
    they were all of the queue this call could lock (fewer than ``size``, every one applied):
    what it has left is held by another worker or was accepted since.

    Why: under load a ticket's queue fills faster than it is applied, and a webhook applied in a
    transaction of its own paid the lock read, BEGIN, COMMIT (a WAL flush) and the next head's
    read. The outcome is the one of applying them one by one: the same order, each event on its
    own (``session_events_apply``), then one commit. Only the head may call the help
    desk (a doorbell's read, an agent named by id only), and it then ends its batch: a later
    webhook that would waits for a batch it heads, so a failed call is the head's and is handled
    as such (``_step_failed``), and nothing is asked twice. A later webhook failing otherwise
    (the database) rolls the batch back, and the webhooks before it are applied again as a batch
    of their own.

    Events are first applied without a savepoint each (``isolated=False``, see
    ``session_events_apply``), except a webhook that calls the desk; if one fails, the batch is
    rolled back and applied again isolated, which records the failure. The outcome is the same.
    """
    failed_at = 0
    try:
        with transaction.atomic(), outbox_rings_coalesced():
            events = _queue_locked(integration_id, ticket_external_id, head_id=head_id, size=size)
            if not events:
                return 0, False  # another worker holds the queue
            now, applied, outcomes, reads = timezone.now(), 0, [], BatchReads()
            for index, event in enumerate(events):
                failed_at = index
                if event.retry_at and event.retry_at > now:
                    break  # waiting for its retry: the task scheduled then carries on
                parsed = _stored_parse(event, event.integration.provider_installation or {})
                calls_desk = parsed.doorbell or _agents_named_by_id_only(parsed.events)
                if index and calls_desk:
                    break
                _webhook_event_apply(
                    event, parsed=parsed, outcomes=outcomes, isolated=isolated or calls_desk, reads=reads
                )
                applied = index + 1
                if calls_desk:
                    # Nothing behind it may fail and have this call made again; and a doorbell's
                    # read may have answered the webhooks behind it (``_doorbells_covered``).
                    break
            rows_update(outcomes, _OUTCOME_FIELDS)
        return applied, len(events) < size and applied == len(events)
    except EventFailed as exc:
        log.info("webhook.batch_isolated", webhook_event_id=head_id, size=size, error=str(exc))
        return _queue_batch(integration_id, ticket_external_id, head_id=head_id, size=size, isolated=True)
    except Exception as exc:  # noqa: BLE001 - every failure ends applied, retried or recorded (``_step_failed``)
        if failed_at:
            log.info("webhook.batch_again", webhook_event_id=head_id, size=failed_at, error=type(exc).__name__)
            return _queue_batch(integration_id, ticket_external_id, head_id=head_id, size=failed_at)
        return int(_step_failed(head_id, exc)), False


# The accepted webhooks of a queue between two ids, as a plain read (rows locked elsewhere too).
_QUEUE_SPAN = CompiledQuery(
    lambda integration_id, ticket, first, last: (
        _ticket_queue(integration_id, ticket)
        .filter(pk__gte=first, pk__lte=last)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
)


def _queue_locked(integration_id, ticket_external_id: str, *, head_id: int, size: int) -> list[WebhookEvent]:
    """The queue's first webhooks from ``head_id`` on, up to ``size``, locked; [] when the head
    is held elsewhere.

    SKIP LOCKED passes over rows another worker holds. Whoever holds a queue's head holds the
    queue, but an older webhook accepted again (an operator's re-apply) becomes a new head
    while the queue's next rows are held: the rows returned are then cut at the first one the
    queue has between them and we do not (one plain read of the span, only for several rows),
    so nothing behind a held row is applied out of turn.
    """
    events = _QUEUE_BATCH_LOCKED.fetch(integration_id=integration_id, ticket=ticket_external_id, head_id=head_id)
    if not events or events[0].pk != head_id:
        return []
    events = events[:size]
    if len(events) > 1:
        span = _QUEUE_SPAN.fetch(
            integration_id=integration_id, ticket=ticket_external_id, first=head_id, last=events[-1].pk
        )
        kept = next(
            (n for n, (ours, queued) in enumerate(zip(events, span, strict=False)) if ours.pk != queued), len(events)
        )
        events = events[:kept]
    return events


def _agents_named_by_id_only(events) -> bool:
    """Whether an event names its agent by id only (``_agent_profiles_complete`` asks the desk)."""
    return any(e.agent and e.agent.external_id and not e.agent.name for e in events)


def _step_failed(head_id: int, exc: Exception) -> bool:
    """The queue's head failed (its transaction rolled back); return whether the queue goes on."""
    if isinstance(exc, TRANSIENT_ERRORS):
        # Transient (a deadlock victim, a lost connection): the event stays accepted and is
        # applied again shortly, still ahead of the rest of its ticket's queue.
        log.warning("webhook.apply_retry", webhook_event_id=head_id, error=type(exc).__name__)
        webhook_schedule(webhook_event_id=head_id, countdown=1.0)
        return False
    if isinstance(exc, OutboundError):
        return _fetch_retry(head_id, exc)
    log.exception("webhook.apply_failed", webhook_event_id=head_id)  # (called in the except block)
    WebhookEvent.objects.filter(pk=head_id, status=WebhookStatus.ACCEPTED).update(
        status=WebhookStatus.FAILED,
        detail=text_sanitize(f"failed: {type(exc).__name__}: {exc}")[:2000],
        processed_at=timezone.now(),
    )
    return True


def _fetch_retry(webhook_event_id: int, exc: OutboundError) -> bool:
    """The help desk failed while this webhook was processed: retry it later, or give up.

    Its ticket's queue waits (order), other tickets' queues do not. Returns whether the queue
    may go on (only once the webhook was given up as ``failed``).
    """
    event = WebhookEvent.objects.filter(pk=webhook_event_id, status=WebhookStatus.ACCEPTED).first()
    if event is None:
        return True
    reason = text_sanitize(f"{type(exc).__name__}: {exc}")[:1000]
    if exc.status_code == 429 and exc.retry_after is not None:
        delay = min(max(exc.retry_after, 1.0), FETCH_RETRY_MAX_DELAY)
        log.info("webhook.fetch_rate_limited", webhook_event_id=webhook_event_id, delay=delay)
        WebhookEvent.objects.filter(pk=webhook_event_id, status=WebhookStatus.ACCEPTED).update(
            retry_at=timezone.now() + timedelta(seconds=delay),
            detail=f"rate limited: retrying in {delay:.0f} s (not counted): {reason}",
        )
        webhook_schedule(webhook_event_id=webhook_event_id, countdown=delay)
        return False
    attempts = event.attempts + 1
    if attempts >= FETCH_RETRY_MAX_ATTEMPTS:
        log.error("webhook.fetch_failed", webhook_event_id=webhook_event_id, attempts=attempts, error=reason)
        WebhookEvent.objects.filter(pk=webhook_event_id, status=WebhookStatus.ACCEPTED).update(
            status=WebhookStatus.FAILED,
            attempts=attempts,
            retry_at=None,
            detail=f"failed: the help desk failed {attempts} times; last: {reason}",
            processed_at=timezone.now(),
        )
        return True
    delay = min(2.0**attempts, FETCH_RETRY_MAX_DELAY)
    log.warning("webhook.fetch_retry", webhook_event_id=webhook_event_id, attempts=attempts, delay=delay, error=reason)
    WebhookEvent.objects.filter(pk=webhook_event_id, status=WebhookStatus.ACCEPTED).update(
        attempts=attempts,
        retry_at=timezone.now() + timedelta(seconds=delay),
        detail=f"retrying in {delay:.0f} s (attempt {attempts}): {reason}",
    )
    webhook_schedule(webhook_event_id=webhook_event_id, countdown=delay)
    return False


_OUTCOME_FIELDS = ("session", "status", "detail", "failed_events", "processed_at", "retry_at")


def _webhook_event_apply(
    event: WebhookEvent,
    *,
    parsed: ParsedWebhook | None = None,
    outcomes: list | None = None,
    isolated: bool = True,
    reads: BatchReads | None = None,
) -> bool:
    """Apply the webhook's events, each on its own (see ``session_events_apply``); return
    whether it was a doorbell (its read may have answered the webhooks queued behind it).
    ``outcomes``: where to leave the webhook's row for the caller to write (a batch writes its
    rows in one statement, ``rows_update``); written here otherwise.

    Events that fail for good are listed in ``failed_events`` and the webhook is ``failed``;
    after an operator's re-apply only those are applied again. A doorbell's events are read
    from the help desk here (``webhook_events_fetch``), and agents named by id only are looked
    up (``agent_profile_fetch``): both raise ``OutboundError`` for ``_queue_batch`` to retry.
    ``isolated=False``, ``reads``: see ``session_events_apply`` (a batch that can apply it again).
    """
    integration = event.integration
    installation = integration.provider_installation or {}
    parsed = parsed or _stored_parse(event, installation)
    events, only = list(parsed.events), {failure["index"] for failure in event.failed_events} or None
    adapter = None
    if parsed.doorbell:
        # The ticket's last webhook stored before the read (ids, not clocks: web and worker may
        # run on different hosts); those queued up to it are answered by this read.
        read_covers = (
            WebhookEvent.objects.filter(integration=integration, ticket_external_id=parsed.ticket_external_id)
            .order_by("-id")
            .values_list("id", flat=True)
            .first()
        )
        adapter = integration_provider(integration=integration)
        events = adapter.webhook_events_fetch(
            parsed=parsed,
            installation=installation,
            known_message_ids=_known_message_ids(integration, parsed.ticket_external_id),
        )
        only = None  # a fresh read: its indexes are not those of the failed list, and dedup makes it safe
    if _agents_named_by_id_only(events):
        events = _agent_profiles_complete(adapter or integration_provider(integration=integration), integration, events)
    applied = session_events_apply(integration=integration, events=events, only=only, isolated=isolated, reads=reads)
    event.session = applied.session or event.session
    event.failed_events = applied.failures
    if applied.failures:
        event.status = WebhookStatus.FAILED
    else:
        event.status = WebhookStatus.PROCESSED if applied.session else WebhookStatus.IGNORED
    event.detail, event.processed_at, event.retry_at = text_sanitize(applied.detail)[:2000], timezone.now(), None
    if outcomes is None:
        row_update(event, _OUTCOME_FIELDS)
    else:
        outcomes.append(event)
    if parsed.doorbell and event.status != WebhookStatus.FAILED:
        _doorbells_covered(event, up_to_id=read_covers)
    return parsed.doorbell


def _doorbells_covered(event: WebhookEvent, *, up_to_id: int) -> int:
    """Doorbells of the same ticket queued behind ``event`` and stored before its read began
    (ids up to ``up_to_id``) are answered by that read: each rang for a change the desk had made
    before it called us, so the ticket as read already showed it. They get ``event``'s outcome
    without a read of their own (a burst of agent actions costs one read, which matters under a
    desk's rate limit). A sequence id is taken when the row is inserted, so a doorbell with a
    lower id was sent before the read even if it committed later.
    """
    return WebhookEvent.objects.filter(
        integration_id=event.integration_id,
        ticket_external_id=event.ticket_external_id,
        status=WebhookStatus.ACCEPTED,
        id__gt=event.pk,
        id__lte=up_to_id,
    ).update(
        status=event.status,
        session=event.session,
        detail=f"answered by the read of webhook #{event.pk}",
        processed_at=timezone.now(),
    )


def webhook_doorbells_reread(*, integration: Integration, ticket_external_id: str) -> bool:
    """The ticket's Ticket row was just stored: apply again what arrived before and found nothing.

    A webhook that names only the desk's ticket, without our reference, and arrived before the
    row was stored (an agent acting while our answer to the ticket's creation was lost, or in
    flight) was ``ignored``. A doorbell: its latest such one is accepted again (it reads the
    whole ticket, so one is enough). A webhook carrying its events (Slack's thread replies and
    button presses): each such one that has events is accepted again, in their order. After
    the caller's transaction commits. Returns whether any was. Desks whose webhooks carry our
    reference find the session without the row and have none ignored for that reason.
    """
    ignored = list(
        WebhookEvent.objects.filter(
            integration=integration, ticket_external_id=ticket_external_id, status=WebhookStatus.IGNORED
        ).order_by("-id")[:QUEUE_BUDGET]
    )
    if not ignored:
        return False
    again = []
    for event in ignored:
        parsed = _stored_parse(event, integration.provider_installation or {})
        if parsed.doorbell:
            again = again or [event]  # the latest doorbell only
            break
        if parsed.events:
            again.append(event)
    if not again:
        return False
    ids = sorted(event.pk for event in again)
    WebhookEvent.objects.filter(pk__in=ids, status=WebhookStatus.IGNORED).update(
        status=WebhookStatus.ACCEPTED, retry_at=None, detail="read again: its ticket is now stored"
    )
    transaction.on_commit(lambda: webhook_schedule(webhook_event_id=ids[0]))
    return True


def _stored_parse(event: WebhookEvent, installation: Mapping) -> ParsedWebhook:
    """A stored webhook parsed again; a sweep's re-read (no body) is a doorbell for its ticket."""
    if event.event_type == REREAD_EVENT_TYPE:
        return ParsedWebhook(
            dedup_key=event.dedup_key or "",
            event_type=REREAD_EVENT_TYPE,
            ticket_external_id=event.ticket_external_id,
            events=[],
            doorbell=True,
        )
    return provider_class(event.provider).webhook_parse(
        headers=event.headers, body=event.body.encode(), installation=installation
    )


def _known_message_ids(integration: Integration, ticket_external_id: str) -> set[str]:
    """Ids of every message the gateway relayed or posted on this ticket, and its first message."""
    ticket = Ticket.objects.filter(integration=integration, external_id=ticket_external_id).first()
    if ticket is None:
        return set()
    known = set(
        Message.objects.filter(session_id=ticket.session_id)
        .exclude(external_message_id="")
        .values_list("external_message_id", flat=True)
    )
    return known | ({ticket.initial_message_id} if ticket.initial_message_id else set())


def _agent_profiles_complete(
    adapter: HelpDeskProvider, integration: Integration, events: list[InboundEvent]
) -> list[InboundEvent]:
    """Events whose agent is named by id only get the agent's profile from the help desk.

    Once; an agent the gateway already knows by name costs no call. ``human_agent_upsert``
    then stores the profile when the event is applied.
    """
    profiles = {}
    completed = []
    for event in events:
        agent = event.agent
        if agent and agent.external_id and not agent.name:
            if agent.external_id not in profiles:
                known = (
                    HumanAgent.objects.filter(integration=integration, external_user_id=agent.external_id)
                    .exclude(name="")
                    .exists()
                )
                fetched = None if known else adapter.agent_profile_fetch(external_id=agent.external_id)
                profiles[agent.external_id] = fetched
            profile = profiles[agent.external_id]
            if profile is not None:
                event = replace(event, agent=replace(profile, external_id=agent.external_id))
        completed.append(event)
    return completed


def webhook_events_sweep(*, older_than_seconds: int) -> int:
    """Wake the relay if accepted webhooks wait whose message was lost; return how many wait."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    # A webhook waiting for its retry (``retry_at``) has its task scheduled already.
    due = Q(retry_at__isnull=True) | Q(retry_at__lte=timezone.now())
    ids = list(
        WebhookEvent.objects.filter(due, status=WebhookStatus.ACCEPTED, received_at__lte=cutoff).values_list(
            "pk", flat=True
        )[:1000]
    )
    if ids:  # one relay applies them all
        webhook_schedule(webhook_event_id=ids[0])
    return len(ids)


# --- the doorbell sweep ---------------------------------------------------------------------
# A doorbell provider's webhook only says "read ticket N". If one never reaches us (our web was
# down longer than the desk retries, a proxy dropped it, a rule was switched off), the agent's
# reply would wait for the ticket's next doorbell. The beat sweep closes that gap itself: it asks
# the desk which tickets changed (one listing call per integration per ``DOORBELL_SWEEP_SECONDS``)
# and re-reads, through the same queue and ``webhook_events_fetch``, the open sessions' tickets
# changed after anything reached us about them. Messages are deduplicated by id as for doorbells.
REREAD_EVENT_TYPE = "gateway.reread"
_SWEEP_CLAIM = "doorbell-sweep:"  # Heartbeat rows: when an integration was last swept ...
_SWEEP_MARK = "doorbell-mark:"  # ... and up to when its desk's listing was complete
# Listings overlap the previous one by this much on top of the grace period: the desk's clock
# and ours may differ a little, and a ticket listed twice costs nothing (it is explained).
LIST_OVERLAP = timedelta(seconds=60)


def webhook_doorbells_sweep(*, now: datetime | None = None) -> int:
    """Re-read the tickets of doorbell providers whose doorbell may have been lost; return how many.

    Per active integration whose adapter has ``doorbell_webhooks``, at most once per
    ``DOORBELL_SWEEP_SECONDS`` (claimed in one UPDATE, so concurrent sweeps do not both list).
    Only tickets of open sessions active within ``DOORBELL_ACTIVE_SECONDS`` are candidates; with
    none, the desk is not called at all. A desk failing is logged and tried on the next run.
    """
    now = now or timezone.now()
    reread = 0
    for integration in Integration.objects.filter(is_active=True).order_by("created_at"):
        if not provider_class(integration.provider).doorbell_webhooks:
            continue
        if not _sweep_claim(integration, now=now):
            continue
        try:
            reread += _integration_doorbells_sweep(integration, now=now)
        except OutboundError as exc:  # the desk is down or busy: the next run lists again
            log.warning("webhook.doorbell_sweep_failed", integration_id=str(integration.pk), error=type(exc).__name__)
        except Exception:  # one integration's fault must not stop the others' sweep
            log.exception("webhook.doorbell_sweep_error", integration_id=str(integration.pk))
    return reread


def _sweep_claim(integration: Integration, *, now: datetime) -> bool:
    """Whether this run sweeps ``integration``: its last sweep is ``DOORBELL_SWEEP_SECONDS`` old."""
    name = f"{_SWEEP_CLAIM}{integration.pk}"
    due = now - timedelta(seconds=settings.HITL["DOORBELL_SWEEP_SECONDS"])
    if Heartbeat.objects.filter(name=name, beat_at__lte=due).update(beat_at=now):
        return True
    try:
        with transaction.atomic():
            _, created = Heartbeat.objects.get_or_create(name=name, defaults={"beat_at": now})
    except IntegrityError:  # another sweep created it just now
        return False
    return created


def _integration_doorbells_sweep(integration: Integration, *, now: datetime) -> int:
    """One integration: find the tickets changed since we last heard of them, queue a re-read each."""
    config = settings.HITL
    active_since = now - timedelta(seconds=config["DOORBELL_ACTIVE_SECONDS"])
    grace = timedelta(seconds=config["DOORBELL_GRACE_SECONDS"])
    mark_name = f"{_SWEEP_MARK}{integration.pk}"
    candidates = dict(
        Ticket.objects.filter(
            integration=integration,
            session__status__in=(SessionStatus.PENDING, SessionStatus.ASSIGNED),
            session__last_activity_at__gte=active_since,
        ).values_list("external_id", "session_id")
    )
    if not candidates:
        Heartbeat.objects.update_or_create(name=mark_name, defaults={"beat_at": now})
        return 0
    mark = Heartbeat.objects.filter(name=mark_name).values_list("beat_at", flat=True).first()
    since = max(active_since, (mark or active_since) - grace - LIST_OVERLAP)
    changes = integration_provider(integration=integration).tickets_changed_list(
        since=since, limit=config["DOORBELL_LIST_LIMIT"]
    )
    pending = set(
        WebhookEvent.objects.filter(
            integration=integration, ticket_external_id__in=candidates, status=WebhookStatus.ACCEPTED
        ).values_list("ticket_external_id", flat=True)
    )
    heard = _last_heard(integration, candidates)
    cap = config["DOORBELL_REREAD_CAP"]
    if changes is None:
        # The desk cannot list changes: re-read quiet tickets on a slower timer instead.
        idle = now - timedelta(seconds=config["DOORBELL_IDLE_REREAD_SECONDS"])
        due = sorted(
            (heard.get(t) or datetime.min.replace(tzinfo=UTC), t)
            for t in candidates
            if t not in pending and (heard.get(t) is None or heard[t] <= idle)
        )
        chosen = [t for _, t in due[:cap]]
        reason = "no webhook for this long"
    else:
        missed = sorted(
            (changed_by, t)
            for t, changed_by in changes.changed.items()
            if t in candidates
            and t not in pending
            and changed_by <= now - grace  # newer: its doorbell may still be on its way
            and (heard.get(t) is None or heard[t] < changed_by)
        )
        chosen = [t for _, t in missed[:cap]]
        # Tickets left for the next run (over the cap) are listed again: the mark stays before them.
        through = missed[cap][0] - timedelta(seconds=1) if len(missed) > cap else changes.through
        Heartbeat.objects.update_or_create(name=mark_name, defaults={"beat_at": through})
        reason = "the desk changed it after the last webhook we received"
    for ticket_external_id in chosen:
        _reread_enqueue(integration, ticket_external_id=ticket_external_id, reason=reason)
    if chosen:
        log.info("webhook.doorbell_sweep", integration_id=str(integration.pk), reread=len(chosen))
    return len(chosen)


def _last_heard(integration: Integration, tickets: Mapping[str, object]) -> dict[str, datetime]:
    """When we last heard of each ticket: a webhook (or re-read) stored, or our own successful post.

    Our own posts change the ticket on the desk too; a change made before we heard of the ticket
    is covered (a webhook rings after its change; our post's answer comes after the desk made it).
    """
    heard = dict(
        WebhookEvent.objects.filter(integration=integration, ticket_external_id__in=tickets)
        .exclude(status=WebhookStatus.FAILED)
        .values("ticket_external_id")
        .annotate(at=Max("received_at"))
        .values_list("ticket_external_id", "at")
    )
    by_session = {session_id: ticket for ticket, session_id in tickets.items()}
    posted = (
        Delivery.objects.filter(
            session_id__in=by_session, direction=Direction.TO_AGENT, status=DeliveryStatus.SUCCEEDED
        )
        .values("session_id")
        .annotate(at=Max("completed_at"))
        .values_list("session_id", "at")
    )
    for session_id, at in posted:
        ticket = by_session[session_id]
        if at is not None and (heard.get(ticket) is None or at > heard[ticket]):
            heard[ticket] = at
    return heard


def _reread_enqueue(integration: Integration, *, ticket_external_id: str, reason: str) -> WebhookEvent:
    """Queue a re-read of the ticket: a bodiless doorbell, applied in its ticket's webhook order."""
    event = WebhookEvent.objects.create(
        integration=integration,
        provider=integration.provider,
        dedup_key=f"{REREAD_EVENT_TYPE}:{uuid.uuid4().hex}",
        event_type=REREAD_EVENT_TYPE,
        ticket_external_id=ticket_external_id,
        status=WebhookStatus.ACCEPTED,
        detail=f"re-read by the doorbell sweep: {reason}",
    )
    transaction.on_commit(lambda: _schedule_if_queue_head(event))
    return event
