"""Lifecycle policies: the gateway ends sessions nobody answers, and respects business hours.

Per integration (``LifecyclePolicy``), all off by default:

- assignment timeout: a session still pending after N open minutes ends (``assignment_timeout``);
- inactivity timeout: an assigned session silent both ways for N minutes ends
  (``inactivity_timeout``), after an optional warning to the end user M minutes before;
- business hours: outside them ``startHitl`` still opens the ticket, the end user is told at
  once, and the assignment clock only runs while open (or the session ends at once).

Timers are durable columns, never Celery countdowns: ``HitlSession.assignment_due_at`` (set at
start, business hours counted) and ``last_activity_at`` (moved by every message). The beat
scheduler calls ``session_timeouts_sweep`` every few seconds (``tasks.outbox_sweep``); whatever was due while the
gateway was down is ended by the first sweep after it. Each end locks the session and checks
again that it is still due, so a reply in flight and a timer never both win: the reply's
transaction holds the same row lock (``locked_sessions``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from zoneinfo import ZoneInfo, available_timezones

import structlog
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily

from sessions_app.models import (
    HitlSession,
    Integration,
    LifecyclePolicy,
    OperatorAction,
    OperatorActionKind,
    SessionStatus,
    StoppedBy,
)
from sessions_app.services.errors import InvalidInput
from sessions_app.services.sessions import (
    locked_sessions,
    session_bot_message_to_user,
    session_bot_note,
    session_stop,
)

log = structlog.get_logger(__name__)

# The ``stop_reason`` of each automatic end (``StoppedBy.POLICY``).
ASSIGNMENT_TIMEOUT, INACTIVITY_TIMEOUT = "assignment_timeout", "inactivity_timeout"
OUTSIDE_HOURS = "outside_business_hours"
POLICY_ACTOR = "lifecycle policy"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# At most this many sessions ended per kind per sweep; the next sweep takes the rest.
SWEEP_BATCH = 200
# How far ahead the business-hours calendar is searched for an opening (holidays included).
MAX_CLOSED_DAYS = 366


class PolicyEndsCollector:
    """Prometheus ``hitl_sessions_ended_by_policy_total{reason}``, read from the audit trail.

    The sweep runs in the Celery worker while ``/metrics`` is served by the web processes, so
    an in-process counter would never be seen there: the figure is counted from the
    ``OperatorAction`` rows the policy writes, one query per scrape, and survives restarts.
    A scrape without a database (a test, a startup) yields nothing rather than failing.
    """

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "hitl_sessions_ended_by_policy",
            "HITL sessions the gateway ended on its own, by lifecycle policy reason.",
            labels=["reason"],
        )

    def describe(self):
        """What ``collect`` yields, without a query (read when the collector is registered)."""
        yield self._family()

    def collect(self):
        from sessions_app.selectors import policy_ends_count

        try:
            counts = policy_ends_count()
        except Exception:  # a scrape must never fail because of one figure
            log.warning("metrics.policy_ends_unavailable", exc_info=True)
            return
        family = self._family()
        for reason in (ASSIGNMENT_TIMEOUT, INACTIVITY_TIMEOUT, OUTSIDE_HOURS):
            family.add_metric([reason], counts.get(reason, 0))
        yield family


TICKET_NOTES = {
    ASSIGNMENT_TIMEOUT: "No agent took this ticket within {minutes} min: the gateway ended the chat session. "
    "The end user was told: “{message}”",
    INACTIVITY_TIMEOUT: "Nobody wrote for {minutes} min: the gateway ended the chat session. "
    "The end user was told: “{message}”",
    OUTSIDE_HOURS: "This request arrived outside business hours: the gateway ended the chat session; "
    "follow up by e-mail. The end user was told: “{message}”",
}
TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
FIELDS = {
    "assignment_timeout_minutes",
    "assignment_timeout_message",
    "assignment_timeout_keep_ticket_open",
    "inactivity_timeout_minutes",
    "inactivity_timeout_message",
    "inactivity_warning_minutes",
    "inactivity_warning_message",
    "business_hours",
    "time_zone",
    "holidays",
    "outside_hours_message",
    "outside_hours_close",
}


# --- reading a policy -----------------------------------------------------------------------
def integration_policy_get(*, integration: Integration) -> LifecyclePolicy:
    """The integration's policy; an unsaved all-off default when it never had one."""
    policy = LifecyclePolicy.objects.filter(integration=integration).first()
    return policy or LifecyclePolicy(integration=integration)


def _minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _intervals(policy: LifecyclePolicy, day: dt.date) -> list[tuple[int, int]]:
    """The open intervals of a local date, in minutes after midnight; none on a holiday."""
    if day.isoformat() in set(policy.holidays or ()):
        return []
    spans = (policy.business_hours or {}).get(WEEKDAYS[day.weekday()], [])
    return sorted((_minutes(start), _minutes(end)) for start, end in spans)


def _has_hours(policy: LifecyclePolicy) -> bool:
    return bool(policy.business_hours)


def policy_is_open(*, policy: LifecyclePolicy, at: dt.datetime) -> bool:
    """Whether ``at`` (aware) falls in the business hours; no schedule means always open."""
    if not _has_hours(policy):
        return True
    local = at.astimezone(ZoneInfo(policy.time_zone))
    minute = local.hour * 60 + local.minute
    return any(start <= minute < end for start, end in _intervals(policy, local.date()))


def open_minutes_add(*, policy: LifecyclePolicy, start: dt.datetime, minutes: int) -> dt.datetime:
    """The instant ``minutes`` open minutes after ``start``: closed time does not count.

    Local wall-clock intervals are turned into instants with ``zoneinfo``, so a DST change
    inside an interval shortens or lengthens it as the clock on the wall does. Raises
    ``ValueError`` when the schedule has no opening within ``MAX_CLOSED_DAYS``.
    """
    if not _has_hours(policy):
        return start + dt.timedelta(minutes=minutes)
    zone = ZoneInfo(policy.time_zone)
    remaining = dt.timedelta(minutes=minutes)
    day = start.astimezone(zone).date()
    for _ in range(MAX_CLOSED_DAYS + 8):
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=zone)
        for first, last in _intervals(policy, day):
            opens = max(start, (midnight + dt.timedelta(minutes=first)).astimezone(dt.UTC))
            closes = (midnight + dt.timedelta(minutes=last)).astimezone(dt.UTC)
            if closes <= opens:
                continue
            if opens + remaining <= closes:
                return opens + remaining
            remaining -= closes - opens
        day += dt.timedelta(days=1)
    raise ValueError("the business hours never open")


# --- changing a policy ----------------------------------------------------------------------
def _policy_errors(values: Mapping[str, object]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for name in ("assignment_timeout_minutes", "inactivity_timeout_minutes", "inactivity_warning_minutes"):
        value = values.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 525600):
            errors[name] = "A whole number of minutes from 1 to 525600, or null (off)."
    warning, timeout = values.get("inactivity_warning_minutes"), values.get("inactivity_timeout_minutes")
    if (warning is not None and "inactivity_warning_minutes" not in errors) and (
        timeout is None or "inactivity_timeout_minutes" in errors or warning >= timeout
    ):
        errors["inactivity_warning_minutes"] = "Must be less than inactivity_timeout_minutes."
    zone = values.get("time_zone")
    if not isinstance(zone, str) or zone not in available_timezones():
        errors["time_zone"] = "An IANA time zone name, e.g. Europe/Paris."
    hours = values.get("business_hours")
    if not isinstance(hours, dict) or set(hours) - set(WEEKDAYS):
        errors["business_hours"] = f"An object whose keys are among {', '.join(WEEKDAYS)}."
    else:
        for day, spans in hours.items():
            ok = isinstance(spans, list) and all(
                isinstance(span, list | tuple)
                and len(span) == 2
                and all(isinstance(t, str) and TIME.match(t) for t in span)
                and _minutes(span[0]) < _minutes(span[1])
                for span in spans
            )
            if not ok:
                errors["business_hours"] = f'{day}: a list of ["HH:MM", "HH:MM"] intervals, each start before its end.'
                break
    holidays = values.get("holidays")
    if not isinstance(holidays, list) or not all(isinstance(d, str) for d in holidays):
        errors["holidays"] = 'A list of dates, e.g. ["2026-12-25"].'
    else:
        try:
            for day in holidays:
                dt.date.fromisoformat(day)
        except ValueError:
            errors["holidays"] = 'A list of dates, e.g. ["2026-12-25"].'
    texts = ("assignment_timeout_message", "inactivity_timeout_message", "inactivity_warning_message")
    for name in (*texts, "outside_hours_message"):
        if not isinstance(values.get(name), str):
            errors[name] = "A text."
    if hours and not errors.get("business_hours") and not errors.get("time_zone") and not errors.get("holidays"):
        probe = LifecyclePolicy(business_hours=hours, time_zone=zone, holidays=holidays)
        try:
            open_minutes_add(policy=probe, start=timezone.now(), minutes=1)
        except ValueError:
            errors["business_hours"] = "The schedule never opens."
    return errors


def lifecycle_policy_errors(*, integration: Integration, changes: Mapping[str, object]) -> dict[str, str]:
    """What is wrong with applying ``changes`` (model field names) to the current policy: field → error."""
    unknown = set(changes) - FIELDS
    if unknown:
        return {name: "Unknown setting." for name in sorted(unknown)}
    current = integration_policy_get(integration=integration)
    values = {name: getattr(current, name) for name in FIELDS} | dict(changes)
    return _policy_errors(values)


@transaction.atomic
def integration_policy_update(*, integration: Integration, changes: Mapping[str, object]) -> LifecyclePolicy:
    """Change some settings of the integration's policy (model field names → values).

    The waiting sessions' assignment deadlines are recomputed from their start under the new
    settings, so turning the timeout off (or on) applies to them too. Raises ``InvalidInput``
    naming the first bad field.
    """
    errors = lifecycle_policy_errors(integration=integration, changes=changes)
    if errors:
        field, message = next(iter(errors.items()))
        raise InvalidInput(message, field=field)
    policy, _ = LifecyclePolicy.objects.select_for_update().get_or_create(integration=integration)
    for name, value in changes.items():
        setattr(policy, name, value)
    policy.save()
    waiting = locked_sessions().filter(integration=integration, status=SessionStatus.PENDING)
    for session in waiting:
        session.assignment_due_at = _assignment_due(policy, session.created_at)
        session.save(update_fields=["assignment_due_at"])
    return policy


def _assignment_due(policy: LifecyclePolicy, started: dt.datetime) -> dt.datetime | None:
    minutes = policy.assignment_timeout_minutes
    return open_minutes_add(policy=policy, start=started, minutes=minutes) if minutes else None


# --- enforcing it ---------------------------------------------------------------------------
def session_lifecycle_start(*, session: HitlSession, now: dt.datetime | None = None) -> None:
    """Arm the session's timers at ``startHitl`` (in its transaction), and handle closed hours.

    Outside business hours the end user gets the policy's message at once, before anything an
    agent writes; with ``outside_hours_close`` the session ends right away (the ticket stays
    open, so the agents answer by e-mail).
    """
    policy = LifecyclePolicy.objects.filter(integration_id=session.integration_id).first()
    if policy is None:
        return
    now = now or timezone.now()
    if not policy_is_open(policy=policy, at=now):
        if policy.outside_hours_message:
            session_bot_message_to_user(session=session, text=policy.outside_hours_message)
        if policy.outside_hours_close:
            _session_end(session, policy=policy, reason=OUTSIDE_HOURS, user_message="", close_ticket=False, now=now)
            return
    due = _assignment_due(policy, now)
    if due is not None:
        HitlSession.objects.filter(pk=session.pk).update(assignment_due_at=due)
        session.assignment_due_at = due


def _session_end(
    session: HitlSession,
    *,
    policy: LifecyclePolicy,
    reason: str,
    user_message: str,
    close_ticket: bool,
    now: dt.datetime,
) -> None:
    """End a locked session for ``reason``: a note for the agents, the end user's message, then
    ``hitlStopped`` (the to-user lane keeps that order), and the audit record."""
    minutes = {
        ASSIGNMENT_TIMEOUT: policy.assignment_timeout_minutes,
        INACTIVITY_TIMEOUT: policy.inactivity_timeout_minutes,
    }.get(reason)
    told = user_message or policy.outside_hours_message
    session_bot_note(session=session, text=TICKET_NOTES[reason].format(minutes=minutes, message=told))
    if user_message:
        session_bot_message_to_user(session=session, text=user_message)
    session_stop(
        session=session,
        stopped_by=StoppedBy.POLICY,
        reason=reason,
        close_ticket=close_ticket,
        notify_botpress=True,
        now=now,
    )
    OperatorAction.objects.create(
        username=POLICY_ACTOR,
        action=OperatorActionKind.SESSION_POLICY_END,
        reason=reason,
        session=session,
        integration_id=session.integration_id,
        detail={"reason": reason, "minutes": minutes, "ticket_closed": close_ticket},
    )
    log.info("session.ended_by_policy", session=str(session.pk), reason=reason)


def _assignment_timeouts(now: dt.datetime) -> int:
    due = HitlSession.objects.filter(status=SessionStatus.PENDING, assignment_due_at__lte=now)
    ended = 0
    for session_id in due.order_by("assignment_due_at").values_list("pk", flat=True)[:SWEEP_BATCH]:
        with transaction.atomic():
            # Checked again under the lock: an agent who took the ticket meanwhile wins.
            session = (
                locked_sessions()
                .filter(pk=session_id, status=SessionStatus.PENDING, assignment_due_at__lte=now)
                .first()
            )
            policy = session and LifecyclePolicy.objects.filter(integration_id=session.integration_id).first()
            if policy is None or not policy.assignment_timeout_minutes:
                continue
            _session_end(
                session,
                policy=policy,
                reason=ASSIGNMENT_TIMEOUT,
                user_message=policy.assignment_timeout_message,
                close_ticket=not policy.assignment_timeout_keep_ticket_open,
                now=now,
            )
            ended += 1
    return ended


def _inactivity(now: dt.datetime) -> tuple[int, int]:
    ended = warned = 0
    policies = LifecyclePolicy.objects.filter(inactivity_timeout_minutes__isnull=False)
    for policy in policies:
        silent_since = now - dt.timedelta(minutes=policy.inactivity_timeout_minutes)
        assigned = HitlSession.objects.filter(integration_id=policy.integration_id, status=SessionStatus.ASSIGNED)
        for session_id in assigned.filter(last_activity_at__lte=silent_since).values_list("pk", flat=True)[
            :SWEEP_BATCH
        ]:
            with transaction.atomic():
                session = (
                    locked_sessions()
                    .filter(pk=session_id, status=SessionStatus.ASSIGNED, last_activity_at__lte=silent_since)
                    .first()
                )
                if session is None:  # a message arrived meanwhile
                    continue
                _session_end(
                    session,
                    policy=policy,
                    reason=INACTIVITY_TIMEOUT,
                    user_message=policy.inactivity_timeout_message,
                    close_ticket=True,
                    now=now,
                )
                ended += 1
        if not policy.inactivity_warning_minutes or not policy.inactivity_warning_message:
            continue
        warn_since = silent_since + dt.timedelta(minutes=policy.inactivity_warning_minutes)
        # Warned once per silence: a warning about an earlier silence does not count.
        unwarned = assigned.filter(last_activity_at__lte=warn_since, last_activity_at__gt=silent_since).exclude(
            inactivity_warned_for__gte=F("last_activity_at")
        )
        for session_id in unwarned.values_list("pk", flat=True)[:SWEEP_BATCH]:
            with transaction.atomic():
                session = (
                    locked_sessions()
                    .filter(pk=session_id, status=SessionStatus.ASSIGNED, last_activity_at__lte=warn_since)
                    .exclude(inactivity_warned_for__gte=F("last_activity_at"))
                    .first()
                )
                if session is None:
                    continue
                # A warning is not activity: ``last_activity_at`` stays, so the timeout still comes.
                session_bot_message_to_user(session=session, text=policy.inactivity_warning_message)
                HitlSession.objects.filter(pk=session.pk).update(inactivity_warned_for=session.last_activity_at)
                warned += 1
    return ended, warned


def session_timeouts_sweep(*, now: dt.datetime | None = None) -> dict[str, int]:
    """End every session whose timer is due at ``now`` and send the warnings due; return counts.

    Shape: ``{"assignment_timeout": n, "inactivity_timeout": n, "inactivity_warning": n}``.
    Safe to run concurrently with itself and with webhooks: each session is decided under its
    row lock, in its own transaction.
    """
    now = now or timezone.now()
    assignment = _assignment_timeouts(now)
    inactivity, warned = _inactivity(now)
    return {ASSIGNMENT_TIMEOUT: assignment, INACTIVITY_TIMEOUT: inactivity, "inactivity_warning": warned}
