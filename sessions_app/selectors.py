"""Reads for the operators' console: the dashboard's figures, session search, a session's story.

Percentiles are computed by PostgreSQL (``percentile_cont``) in one query; other databases (the
embedded SQLite default) get the same interpolation in Python over the window's rows.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from sessions_app.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Direction,
    EndUser,
    HitlSession,
    HumanAgent,
    Message,
    OperatorAction,
    OperatorActionKind,
    SessionStatus,
    StoppedBy,
    Ticket,
    WebhookEvent,
    WebhookRejection,
    WebhookStatus,
)

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
TREND_DAYS = 14


# --- percentiles ----------------------------------------------------------------------------
class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(f) WITHIN GROUP (ORDER BY expr)`` over intervals."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    allow_distinct = False

    def __init__(self, expression, *, fraction: float, **extra):
        # A float we format ourselves: never user input in the SQL.
        super().__init__(expression, fraction=repr(float(fraction)), output_field=DurationField(), **extra)


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: what ``percentile_cont`` computes."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Percentiles:
    count: int
    median: timedelta | None
    p90: timedelta | None


def _first_reply_at() -> Subquery:
    replies = Message.objects.filter(session=OuterRef("pk"), direction=Direction.TO_USER).order_by("created_at")
    return Subquery(replies.values("created_at")[:1])


def _durations_in_db(sessions: QuerySet, windows: dict[str, datetime]) -> dict[str, dict[str, Percentiles]]:
    to_assign = F("assigned_at") - F("created_at")
    to_reply = F("first_reply_at") - F("created_at")
    aggregates = {}
    for name, since in windows.items():
        recent = Q(created_at__gte=since)
        for metric, expression, present in (
            ("assignment", to_assign, Q(assigned_at__isnull=False)),
            ("first_reply", to_reply, Q(first_reply_at__isnull=False)),
        ):
            aggregates[f"{metric}_{name}_n"] = Count("pk", filter=recent & present)
            aggregates[f"{metric}_{name}_p50"] = PercentileCont(expression, fraction=0.5, filter=recent)
            aggregates[f"{metric}_{name}_p90"] = PercentileCont(expression, fraction=0.9, filter=recent)
    row = sessions.annotate(first_reply_at=_first_reply_at()).aggregate(**aggregates)
    return {
        metric: {
            name: Percentiles(row[f"{metric}_{name}_n"], row[f"{metric}_{name}_p50"], row[f"{metric}_{name}_p90"])
            for name in windows
        }
        for metric in ("assignment", "first_reply")
    }


def _durations_in_python(sessions: QuerySet, windows: dict[str, datetime]) -> dict[str, dict[str, Percentiles]]:
    rows = list(
        sessions.annotate(first_reply_at=_first_reply_at()).values_list("created_at", "assigned_at", "first_reply_at")
    )
    result: dict[str, dict[str, Percentiles]] = {"assignment": {}, "first_reply": {}}
    for name, since in windows.items():
        for metric, column in (("assignment", 1), ("first_reply", 2)):
            seconds = [(r[column] - r[0]).total_seconds() for r in rows if r[0] >= since and r[column] is not None]
            p50, p90 = percentile(seconds, 0.5), percentile(seconds, 0.9)
            result[metric][name] = Percentiles(
                len(seconds),
                timedelta(seconds=p50) if p50 is not None else None,
                timedelta(seconds=p90) if p90 is not None else None,
            )
    return result


def session_durations(*, now: datetime, force_python: bool = False) -> dict[str, dict[str, Percentiles]]:
    """Time to assignment and to the first agent reply, median and p90, per window.

    Over the sessions *started* in each window that got there (an unanswered session counts
    under "waiting" instead). First agent reply: the first ``to_user`` message.
    """
    windows = {name: now - span for name, span in WINDOWS.items()}
    sessions = HitlSession.objects.filter(created_at__gte=min(windows.values())).order_by()
    if connection.vendor == "postgresql" and not force_python:
        return _durations_in_db(sessions, windows)
    return _durations_in_python(sessions, windows)


# --- the dashboard --------------------------------------------------------------------------
@dataclass(frozen=True)
class Dashboard:
    now: datetime
    today: datetime
    waiting: int
    oldest_waiting_at: datetime | None
    assigned: int
    stopped_today: int
    durations: dict[str, dict[str, Percentiles]]
    deliveries_dead: int
    deliveries_failing: int
    sessions_needing_attention: int
    webhooks_rejected_24h: int
    webhooks_rejected_7d: int
    webhooks_failed: int
    # Sessions a lifecycle policy ended (timeouts, business hours) in the last 24 h.
    ended_by_policy_24h: int = 0
    # Open sessions whose ticket creation failed (retried or given up): nobody can answer them.
    tickets_not_created: int = 0
    started_per_hour: list[tuple[datetime, int]] = field(default_factory=list)
    assignment_median_per_day: list[tuple[datetime, timedelta | None]] = field(default_factory=list)

    @property
    def longest_wait(self) -> timedelta | None:
        return self.now - self.oldest_waiting_at if self.oldest_waiting_at else None


def _started_per_hour(now: datetime) -> list[tuple[datetime, int]]:
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    counts = dict(
        HitlSession.objects.filter(created_at__gte=start)
        .annotate(hour=TruncHour("created_at"))
        .order_by()
        .values("hour")
        .annotate(n=Count("pk"))
        .values_list("hour", "n")
    )
    hours = [start + timedelta(hours=i) for i in range(24)]
    return [(hour, counts.get(hour, 0)) for hour in hours]


def _assignment_median_per_day(today: datetime, *, force_python: bool) -> list[tuple[datetime, timedelta | None]]:
    start = today - timedelta(days=TREND_DAYS - 1)
    sessions = HitlSession.objects.filter(created_at__gte=start, assigned_at__isnull=False).order_by()
    days = [(start + timedelta(days=i)).date() for i in range(TREND_DAYS)]
    if connection.vendor == "postgresql" and not force_python:
        medians = dict(
            sessions.annotate(day=TruncDate("created_at"))
            .values("day")
            .annotate(median=PercentileCont(F("assigned_at") - F("created_at"), fraction=0.5))
            .values_list("day", "median")
        )
    else:
        per_day: dict = {}
        for created, assigned in sessions.values_list("created_at", "assigned_at"):
            per_day.setdefault(timezone.localtime(created).date(), []).append((assigned - created).total_seconds())
        medians = {day: timedelta(seconds=percentile(values, 0.5)) for day, values in per_day.items()}
    return [(day, medians.get(day)) for day in days]


def dashboard_get(*, now: datetime | None = None, force_python: bool = False) -> Dashboard:
    """Everything the dashboard shows, in a fixed number of queries whatever the volume."""
    now = now or timezone.now()
    today = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    sessions = (
        HitlSession.objects.filter(
            Q(status__in=[SessionStatus.PENDING, SessionStatus.ASSIGNED])
            | Q(stopped_at__gte=min(today, now - WINDOWS["24h"]))
        )
        .order_by()
        .aggregate(
            waiting=Count("pk", filter=Q(status=SessionStatus.PENDING)),
            oldest_waiting_at=Min("created_at", filter=Q(status=SessionStatus.PENDING)),
            assigned=Count("pk", filter=Q(status=SessionStatus.ASSIGNED)),
            stopped_today=Count("pk", filter=Q(status=SessionStatus.STOPPED, stopped_at__gte=today)),
            needing_attention=Count(
                "pk",
                filter=Q(needs_attention=True)
                | Q(
                    Exists(
                        Delivery.objects.filter(ticket_create_failing_q(), session=OuterRef("pk")).exclude(
                            session__status=SessionStatus.STOPPED
                        )
                    )
                ),
            ),
            ended_by_policy_24h=Count(
                "pk", filter=Q(stopped_by=StoppedBy.POLICY, stopped_at__gte=now - WINDOWS["24h"])
            ),
        )
    )
    deliveries = (
        Delivery.objects.filter(status__in=[DeliveryStatus.DEAD, DeliveryStatus.PENDING])
        .order_by()
        .aggregate(
            dead=Count("pk", filter=Q(status=DeliveryStatus.DEAD)),
            failing=Count("pk", filter=Q(delivery_failing_q())),
            # A ticket that cannot be created stops its session once given up: open ones only.
            no_ticket=Count(
                "session_id",
                distinct=True,
                filter=ticket_create_failing_q() & ~Q(session__status=SessionStatus.STOPPED),
            ),
        )
    )
    since_24h, since_7d = (
        rejections_since(now=now, window=WINDOWS["24h"]),
        rejections_since(now=now, window=WINDOWS["7d"]),
    )
    rejected = (
        WebhookRejection.objects.filter(bucket__gte=since_7d)
        .order_by()
        .aggregate(last_7d=Sum("count"), last_24h=Sum("count", filter=Q(bucket__gte=since_24h)))
    )
    return Dashboard(
        now=now,
        today=today,
        waiting=sessions["waiting"],
        oldest_waiting_at=sessions["oldest_waiting_at"],
        assigned=sessions["assigned"],
        stopped_today=sessions["stopped_today"],
        durations=session_durations(now=now, force_python=force_python),
        deliveries_dead=deliveries["dead"],
        deliveries_failing=deliveries["failing"],
        sessions_needing_attention=sessions["needing_attention"],
        webhooks_rejected_24h=rejected["last_24h"] or 0,
        webhooks_rejected_7d=rejected["last_7d"] or 0,
        webhooks_failed=WebhookEvent.objects.filter(status=WebhookStatus.FAILED).count(),
        ended_by_policy_24h=sessions["ended_by_policy_24h"],
        tickets_not_created=deliveries["no_ticket"],
        started_per_hour=_started_per_hour(now),
        assignment_median_per_day=_assignment_median_per_day(today, force_python=force_python),
    )


def rejections_since(*, now: datetime, window: timedelta) -> datetime:
    """The first hourly counter inside ``window``: rejections are counted per hour (UTC), so
    "24 h" is the current hour and the 23 before it."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour - window + timedelta(hours=1)


def webhook_rejections_count(*, since: datetime, integration=None) -> int:
    """Rejected (unauthenticated) webhooks counted from the hour ``since`` on."""
    counters = WebhookRejection.objects.filter(bucket__gte=since)
    if integration is not None:
        counters = counters.filter(integration=integration)
    return counters.order_by().aggregate(n=Sum("count"))["n"] or 0


def delivery_failing_q() -> Q:
    """Still pending, but its last attempt failed: the outbox is retrying it."""
    return Q(status=DeliveryStatus.PENDING, attempts__gt=0) & ~Q(last_error="")


# --- the session list -----------------------------------------------------------------------
def session_list_annotate(queryset: QuerySet) -> QuerySet:
    """The list's extra columns, in the list's own query (no query per row)."""
    deliveries = Delivery.objects.filter(session=OuterRef("pk"))
    return queryset.annotate(
        has_failed_deliveries=Exists(deliveries.filter(status=DeliveryStatus.DEAD)),
        has_failing_deliveries=Exists(deliveries.filter(delivery_failing_q())),
        ticket_failing=Exists(deliveries.filter(ticket_create_failing_q())),
        waited=ExpressionWrapper(F("assigned_at") - F("created_at"), output_field=DurationField()),
    )


PROBLEMS = {
    "any": "Any problem",
    "ticket": "Ticket not created",
    "dead": "Delivery failed (gave up)",
    "attention": "Needs attention (flagged)",
    "failing": "Delivery being retried",
}


def sessions_with_problem(*, queryset: QuerySet, problem: str) -> QuerySet:
    """The sessions showing ``problem`` (a key of ``PROBLEMS``) in the list; "any" is any of them."""
    deliveries = Delivery.objects.filter(session=OuterRef("pk"))
    conditions = {
        "ticket": Q(Exists(deliveries.filter(ticket_create_failing_q()))),
        "dead": Q(Exists(deliveries.filter(status=DeliveryStatus.DEAD))),
        "attention": Q(needs_attention=True),
        "failing": Q(Exists(deliveries.filter(delivery_failing_q()))),
    }
    if problem == "any":
        combined = Q()
        for condition in conditions.values():
            combined |= condition
        return queryset.filter(combined)
    return queryset.filter(conditions[problem]) if problem in conditions else queryset


def session_search(*, queryset: QuerySet, term: str) -> QuerySet:
    """Sessions matching ``term``: ticket id, conversation id or session id exactly; end-user
    email or name, or the text of any message, as a substring (case-insensitive).

    The matching ids are one UNION of index look-ups, each on its own table (btree for the ids;
    on PostgreSQL trigram GIN indexes for the substrings, see migration ``operators_console``),
    so the list never scans the sessions to search them.
    """
    term = " ".join(term.split())
    if not term:
        return queryset
    people = EndUser.objects.filter(Q(email__icontains=term) | Q(name__icontains=term)).values("pk")
    branches = [
        Ticket.objects.filter(external_id=term).values("session_id"),
        HitlSession.objects.filter(botpress_conversation_id=term).values("pk"),
        HitlSession.objects.filter(end_user__in=people).values("pk"),
        Message.objects.filter(payload__text__icontains=term).values("session_id"),
    ]
    with contextlib.suppress(ValueError):
        branches.append(HitlSession.objects.filter(pk=uuid.UUID(term)).values("pk"))
    first, *others = (branch.order_by() for branch in branches)
    return queryset.filter(pk__in=first.union(*others))


def policy_ends_count() -> dict[str, int]:
    """Sessions ended by a lifecycle policy since the start, per reason (``{reason: n}``)."""
    rows = (
        OperatorAction.objects.filter(action=OperatorActionKind.SESSION_POLICY_END)
        .order_by()
        .values("reason")
        .annotate(n=Count("pk"))
        .values_list("reason", "n")
    )
    return dict(rows)


# --- one session ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Transition:
    at: datetime
    state: str
    detail: str


@dataclass
class SessionStory:
    messages: list[Message]
    deliveries: list[Delivery]
    webhooks: list[WebhookEvent]
    actions: list[OperatorAction]
    transitions: list[Transition]
    dead_deliveries: int
    # The conversation before the handoff, the start of the timeline.
    history: list = field(default_factory=list)
    # Set while the ticket does not exist because creating it failed.
    ticket_problem: TicketProblem | None = None


def session_story(*, session: HitlSession) -> SessionStory:
    """Everything that happened in a session, each list in time order, in a fixed number of queries.

    There is no transition log: the transitions are read from the session's own timestamps and
    from the ``hitlAssigned`` events it emitted (one per assignment or reassignment).
    """
    messages = list(
        session.messages.select_related("author_end_user", "author_agent", "delivery").order_by("created_at", "id")
    )
    deliveries = list(
        session.deliveries.select_related("message").prefetch_related(Prefetch("attempt_log")).order_by("id")
    )
    webhooks = list(session.webhooks.order_by("received_at", "id"))
    actions = list(session.operator_actions.select_related("user").order_by("created_at", "id"))
    agents = {
        a.pk: a
        for a in HumanAgent.objects.filter(
            pk__in=[d.payload.get("agent_id") for d in deliveries if d.payload.get("agent_id")]
        )
    }
    transitions = [Transition(session.created_at, SessionStatus.PENDING.label, "startHitl accepted")]
    for delivery in deliveries:
        if delivery.kind == DeliveryKind.TICKET_CREATE and delivery.status == DeliveryStatus.SUCCEEDED:
            ticket = delivery.result.get("ticket_id") or ""
            transitions.append(Transition(delivery.completed_at or delivery.created_at, "Ticket created", ticket))
        elif delivery.kind == DeliveryKind.EVENT_TO_USER and delivery.payload.get("event") == "hitlAssigned":
            agent = agents.get(delivery.payload.get("agent_id"))
            transitions.append(Transition(delivery.created_at, SessionStatus.ASSIGNED.label, f"agent {agent or '?'}"))
    if session.assigned_at and not any(t.state == SessionStatus.ASSIGNED.label for t in transitions):
        transitions.append(
            Transition(session.assigned_at, SessionStatus.ASSIGNED.label, f"agent {session.agent or '?'}")
        )
    if session.stopped_at:
        transitions.append(
            Transition(
                session.stopped_at,
                SessionStatus.STOPPED.label,
                f"{session.get_stopped_by_display()}: {session.stop_reason}".strip(": "),
            )
        )
    transitions.sort(key=lambda t: t.at)
    return SessionStory(
        messages=messages,
        deliveries=deliveries,
        webhooks=webhooks,
        actions=actions,
        transitions=transitions,
        dead_deliveries=sum(1 for d in deliveries if d.status == DeliveryStatus.DEAD),
        history=session_history(session=session),
        ticket_problem=ticket_problem(deliveries=deliveries),
    )


# --- what operators must see, in words ----------------------------------------------------------
# Every sentence below is help-desk-agnostic: "help desk" and "Botpress" name the two sides, the
# desk's own name comes from its spec where a page needs it.
def duration_text(value: timedelta | None) -> str:
    """``3 h 05 min``, ``12 min 30 s``, ``42 s``, or a dash: how long, for a person to read."""
    if value is None:
        return "-"
    seconds = max(0, int(value.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def ticket_create_failing_q(prefix: str = "") -> Q:
    """A ticket-creation delivery whose last attempt failed: retried (pending) or given up (dead).

    ``attempts`` counts a claim before its call, so an attempt in flight has no ``last_error`` yet
    and does not count as failing. ``prefix`` reaches the delivery from another model
    (``"deliveries__"`` from a session).
    """
    return Q(
        **{
            f"{prefix}kind": DeliveryKind.TICKET_CREATE,
            f"{prefix}status__in": [DeliveryStatus.PENDING, DeliveryStatus.DEAD],
            f"{prefix}attempts__gt": 0,
        }
    ) & ~Q(**{f"{prefix}last_error": ""})


@dataclass(frozen=True)
class FailureWords:
    """What one failed call means: ``delivered`` is False (surely not), or None (nobody knows)."""

    delivered: bool | None
    reason: str  # "connection refused", "timed out after 10 s", "HTTP 503: Service unavailable"
    unreachable: bool = False  # no connection at all: the remote side is down or unreachable


def failure_words(*, error: str, status_code: int | None, duration_ms: int | None = None) -> FailureWords:
    """Read one failed attempt (``outbound.http``'s messages) as what is known about it.

    - no connection (``could not reach <origin>: <reason>``, or a connect timeout) or an address
      the outbound guard refused: nothing was sent;
    - an HTTP error answer: the remote side answered, so it did not do it;
    - a read timeout or any other failure with no answer: the request may have been processed.
    """
    error = " ".join((error or "").split())
    seconds = f" after {round(duration_ms / 1000)} s" if duration_ms else ""
    if error.startswith("could not reach "):
        return FailureWords(False, error.rpartition(": ")[2] or error, unreachable=True)
    if error.startswith("timed out: ConnectTimeout"):
        return FailureWords(False, f"could not connect{seconds}", unreachable=True)
    if error.startswith("address refused"):
        return FailureWords(False, error)
    if status_code:
        return FailureWords(False, error if error.startswith("HTTP ") else f"HTTP {status_code}: {error}")
    if error.startswith("timed out"):
        return FailureWords(None, f"timed out{seconds}")
    return FailureWords(None, error or "the call ended without an answer")


def _remote_side(delivery: Delivery) -> str:
    return "help desk" if delivery.direction == Direction.TO_AGENT else "Botpress"


def delivery_outcome(*, delivery: Delivery, last_attempt=None, now: datetime | None = None) -> str:
    """A delivery's state as what is known, in words ("not delivered: connection refused").

    ``last_attempt``: its latest ``DeliveryAttempt`` if already loaded (else read from the
    delivery's prefetched ``attempt_log`` or the database); ``now`` for "next try in 30 s".
    """
    if delivery.status == DeliveryStatus.SUCCEEDED:
        return "delivered" if delivery.attempts <= 1 else f"delivered after {delivery.attempts} attempts"
    if delivery.status == DeliveryStatus.SKIPPED:
        return f"not needed: {delivery.last_error}" if delivery.last_error else "not needed"
    if last_attempt is None:
        attempts = list(delivery.attempt_log.all())
        last_attempt = max(attempts, key=lambda a: a.number) if attempts else None
    if last_attempt is None or last_attempt.outcome == DeliveryStatus.SUCCEEDED:
        if delivery.status == DeliveryStatus.PENDING and delivery.lease_until:
            return "being sent"
        if delivery.status == DeliveryStatus.PENDING:
            return "waiting to be sent" + (
                ", after a call that never reported back" if delivery.maybe_delivered else ""
            )
        return "not delivered"
    words = failure_words(
        error=last_attempt.error or delivery.last_error,
        status_code=last_attempt.status_code,
        duration_ms=last_attempt.duration_ms,
    )
    if words.delivered is None:
        text = f"outcome unknown: {words.reason}"
    elif delivery.status == DeliveryStatus.DEAD:
        text = f"not delivered, gave up: {words.reason}"
    else:
        text = f"not delivered yet: {words.reason}"
    if words.unreachable:
        text += f" ({_remote_side(delivery)} unreachable)"
    if delivery.status == DeliveryStatus.PENDING:
        now = now or timezone.now()
        text += f"; next try in {duration_text(max(delivery.next_attempt_at - now, timedelta(0)))}"
    return text


@dataclass(frozen=True)
class TicketProblem:
    """The session's ticket was not created: nobody in the help desk can answer the end user."""

    attempts: int
    reason: str  # "help desk unreachable", "help desk answered HTTP 422: ...", "timed out after 10 s"
    last_error: str
    gave_up: bool
    next_attempt_in: timedelta | None

    @property
    def banner(self) -> str:
        """``ticket not created: help desk unreachable, 4 attempts, next in 30 s``."""
        attempts = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.gave_up:
            then = "gave up"
        elif self.next_attempt_in is None or self.next_attempt_in < timedelta(seconds=1):
            then = "retrying now"
        else:
            then = f"next in {duration_text(self.next_attempt_in)}"
        return f"ticket not created: {self.reason}, {attempts}, {then}"


def ticket_problem(*, deliveries: list[Delivery], now: datetime | None = None) -> TicketProblem | None:
    """Why the ticket of a session does not exist, from its deliveries (``session_story``'s list);
    None when it exists, or its creation has not failed (yet)."""
    create = next((d for d in deliveries if d.kind == DeliveryKind.TICKET_CREATE), None)
    if create is None or create.status not in (DeliveryStatus.PENDING, DeliveryStatus.DEAD):
        return None
    if create.attempts == 0 or not create.last_error:
        return None
    attempts = sorted(create.attempt_log.all(), key=lambda a: a.number)
    last = attempts[-1] if attempts else None
    words = failure_words(
        error=create.last_error,
        status_code=create.last_status_code,
        duration_ms=last.duration_ms if last else None,
    )
    if words.unreachable:
        reason = "help desk unreachable"
    elif create.last_status_code:
        reason = f"help desk answered {words.reason}"
    else:
        reason = words.reason
    now = now or timezone.now()
    dead = create.status == DeliveryStatus.DEAD
    return TicketProblem(
        attempts=len(attempts) or create.attempts,
        reason=reason,
        last_error=create.last_error,
        gave_up=dead,
        next_attempt_in=None if dead else max(create.next_attempt_at - now, timedelta(0)),
    )


def session_problem(session: HitlSession) -> str:
    """The one problem the list shows for a session, worded as a problem, or '' when it has none.

    Reads the flags ``session_list_annotate`` adds (no query). In order of what hurts the end
    user most: no ticket (nobody can answer), dead deliveries (something was lost), a failed
    webhook or another reason to look (``needs_attention``), deliveries being retried.
    """
    if getattr(session, "ticket_failing", False):
        return "ticket not created"
    if getattr(session, "has_failed_deliveries", False):
        return "delivery failed (gave up)"
    if session.needs_attention:
        return "needs attention"
    if getattr(session, "has_failing_deliveries", False):
        return "delivery being retried"
    return ""


def session_status_text(session: HitlSession, *, now: datetime | None = None) -> str:
    """The list's status with its wait: ``waiting 24 s``, ``assigned after 1 min 02 s``, ``ended``."""
    now = now or timezone.now()
    if session.status == SessionStatus.PENDING:
        return f"waiting {duration_text(now - session.created_at)}"
    if session.status == SessionStatus.ASSIGNED:
        waited = session.assigned_at - session.created_at if session.assigned_at else None
        return f"assigned after {duration_text(waited)}" if waited is not None else "assigned"
    lasted = session.stopped_at - session.created_at if session.stopped_at else None
    return f"ended after {duration_text(lasted)}" if lasted is not None else "ended"


END_WORDS = {
    StoppedBy.BOTPRESS: "ended by the end user (stopHitl)",
    StoppedBy.AGENT: "ended by the agent (ticket solved in the help desk)",
    StoppedBy.OPERATOR: "closed by an operator",
    StoppedBy.HELPDESK_REFUSED: "ended: the help desk did not create the ticket",
    StoppedBy.POLICY: "ended by a lifecycle policy",
}


def session_end_text(session: HitlSession) -> str:
    """How a stopped session ended and how long it lasted, or '' while it runs.

    ``ended by the end user (stopHitl), after 4 min 12 s``; an operator's or a policy's reason is
    added (``closed by an operator: customer called``), the others' reasons say the same again.
    """
    if session.status != SessionStatus.STOPPED:
        return ""
    text = END_WORDS.get(session.stopped_by, "ended")
    if session.stopped_by in (StoppedBy.OPERATOR, StoppedBy.POLICY) and session.stop_reason:
        text += f": {session.stop_reason}"
    if session.stopped_at:
        text += f", after {duration_text(session.stopped_at - session.created_at)}"
    return text


@dataclass(frozen=True)
class HistoryEntry:
    """One message of ``messageHistory``: what was said to the bot before the handoff."""

    author: str  # "end user: Ada", "bot"
    role: str  # "user" | "bot"
    type: str
    payload: dict


def session_history(*, session: HitlSession) -> list[HistoryEntry]:
    """The conversation before the handoff (``messageHistory``, validated at startHitl), in order.

    Botpress marks each message's ``source``: ``{"type": "user", "userId"}`` or ``{"type": "bot"}``
    (HITL interface, ``startHitl`` input). Anything unreadable is skipped, not shown raw.
    """
    entries = []
    for item in session.message_history or []:
        if not isinstance(item, dict) or not isinstance(item.get("payload"), dict):
            continue
        source = item.get("source") if isinstance(item.get("source"), dict) else {}
        if source.get("type") == "user":
            author, role = f"end user: {session.end_user}", "user"
        else:
            author, role = "bot", "bot"
        entries.append(
            HistoryEntry(author=author, role=role, type=str(item.get("type") or ""), payload=item["payload"])
        )
    return entries


def session_priority(session: HitlSession) -> str:
    """The priority Botpress asked for (``hitlSession.priority``), else the ticket's, else ''."""
    extras = session.extras if isinstance(session.extras, dict) else {}
    ticket = getattr(session, "ticket", None) if _ticket_loaded(session) else None
    return str(extras.get("priority") or (ticket.priority if ticket else "") or "")


def _ticket_loaded(session: HitlSession) -> bool:
    try:
        session.ticket  # noqa: B018 - a reverse one-to-one raises when there is none
    except Ticket.DoesNotExist:
        return False
    return True
