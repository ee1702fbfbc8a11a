"""The console's fixes seen in headless Chromium (issue 14, "The console"), against the live
gateway, its real Celery worker and the Botpress and Zendesk stand-ins.

Screenshots for the README go to ``docs/screenshots/``: the session list at 1366 px, a session
whose ticket could not be created, a session page, the dashboard with data and empty, the
integration page and the lock-out page.
"""

from __future__ import annotations

import re
import socket
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sessions_app.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    HitlSession,
    Integration,
    SessionStatus,
    Ticket,
)
from sessions_app.services.operators import SUPERVISORS_GROUP
from tests.browser import docs_screenshot, screenshot, viewport
from tests.test_admin_browser import PASSWORD, _live_session, _login, _operator, _wait

pytestmark = pytest.mark.e2e


def _closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(gateway, *, name: str, email: str, title: str, priority: str = "", history: list | None = None) -> str:
    user = gateway.action("createUser", {"name": name, "email": email})
    assert user.status_code == 200, user.text
    body = {"userId": user.json()["userId"], "title": title, "messageHistory": history or []}
    if priority:
        body["hitlSession"] = {"priority": priority}
    started = gateway.action("startHitl", body)
    assert started.status_code == 200, started.text
    return started.json()["conversationId"]


def _no_horizontal_scroll(driver) -> None:
    widths = driver.execute_script(
        "const r = document.querySelector('#changelist .results') || document.body;"
        "return [document.documentElement.scrollWidth, window.innerWidth, r.scrollWidth, r.clientWidth];"
    )
    page, window, results, visible = widths
    if page > window or results > visible:
        screenshot(driver, "session-list-overflow")
        columns = driver.execute_script(
            "return [...document.querySelectorAll('#result_list thead th')]"
            ".map(th => th.className + ':' + th.offsetWidth)"
        )
        print("column widths:", columns)
    assert page <= window, f"the page scrolls sideways: {page} px in a {window} px window"
    assert results <= visible, f"the list scrolls sideways: {results} px in {visible} px"


def test_list_fits_1366_and_a_ticket_never_created_reads_as_a_problem(gateway, browser):
    assigned, _ = _live_session(gateway)  # an agent took it and replied
    waiting, _ = _live_session(gateway, assign=False)
    ended = _start(gateway, name="Linus Torvalds", email="linus@example.com", title="Kernel panic on boot")
    gateway.zendesk.wait_for(lambda: Ticket.objects.filter(session__botpress_conversation_id=ended).exists(), 20)
    assert gateway.action("stopHitl", {"conversationId": ended}).status_code == 200
    closed = Delivery.objects.filter(session__botpress_conversation_id=ended, kind=DeliveryKind.TICKET_CLOSE)
    gateway.zendesk.wait_for(lambda: closed.filter(status=DeliveryStatus.SUCCEEDED).exists(), 30)

    # The help desk goes down: the next ticket cannot be created (connection refused).
    desk_url = gateway.integration.provider_base_url
    Integration.objects.filter(pk=gateway.integration.pk).update(provider_base_url=f"http://127.0.0.1:{_closed_port()}")
    orphan_id = _start(
        gateway,
        name="Margaret Hamilton",
        email="margaret.hamilton@example.com",
        title="Cannot log in to the customer portal after resetting my password",
        priority="high",
    )
    orphan = HitlSession.objects.get(botpress_conversation_id=orphan_id)
    create = Delivery.objects.filter(session=orphan, kind=DeliveryKind.TICKET_CREATE)
    gateway.zendesk.wait_for(lambda: create.filter(attempts__gte=2).exclude(last_error="").exists(), 30)

    _operator("lead", SUPERVISORS_GROUP)
    _login(browser, gateway.url, "lead")
    viewport(browser, 1366, 768)
    browser.get(f"{gateway.url}/admin/sessions_app/hitlsession/")
    _no_horizontal_scroll(browser)
    headers = [th.text.strip() for th in browser.find_elements(By.CSS_SELECTOR, "#result_list thead th")][1:]
    assert [h.upper() for h in headers] == ["STATUS", "END USER", "TITLE", "AGENT", "TICKET", "PROBLEM", "STARTED"]
    rows = {
        row.find_element(By.CSS_SELECTOR, "td.field-end_user_display").text: row
        for row in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    }
    orphan_row = rows["margaret.hamilton@example.com"]
    assert orphan_row.find_element(By.CSS_SELECTOR, ".problem-badge").text == "ticket not created"
    assert re.match(r"waiting \d+", orphan_row.find_element(By.CSS_SELECTOR, "th, td.field-status_text").text)
    assert "Cannot log in" in orphan_row.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#result_list img[src$='icon-no.svg']")
    badges = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#result_list .problem-badge")]
    assert badges == ["ticket not created"], "healthy sessions show no problem"
    statuses = " | ".join(r.text for r in rows.values())
    assert "assigned after" in statuses and "ended after" in statuses
    docs_screenshot(browser, "session-list-1366")

    # The session page: a banner from the first failed attempt.
    browser.get(f"{gateway.url}/admin/sessions_app/hitlsession/{orphan.pk}/change/")
    banner = browser.find_element(By.ID, "ticket-problem").text
    assert re.match(r"ticket not created: help desk unreachable, \d+ attempts, (next in \d+ s|retrying now)", banner), (
        banner
    )
    assert "connection refused" in banner
    assert browser.find_element(By.CSS_SELECTOR, "#session-head .session-title").text.startswith("Cannot log in")
    assert browser.find_element(By.CSS_SELECTOR, "#session-head .priority").text == "priority: high"
    deliveries = browser.find_element(By.ID, "deliveries").text
    assert "Create the ticket" in deliveries and "ticket_create" not in deliveries
    assert "not delivered yet: connection refused (help desk unreachable)" in deliveries
    assert "Maybe delivered" not in browser.page_source
    docs_screenshot(browser, "session-ticket-not-created", full_page=True)

    # The dashboard counts it.
    viewport(browser, 1366, 768)
    browser.get(f"{gateway.url}/admin/sessions_app/hitlsession/dashboard/")
    card = browser.find_element(By.CSS_SELECTOR, "[data-figure=tickets-not-created]")
    assert card.find_element(By.CSS_SELECTOR, ".value").text == "1" and "alert" in card.get_attribute("class")
    attention = browser.find_element(By.CSS_SELECTOR, "[data-figure=sessions-needing-attention] .value").text
    assert int(attention) >= 1

    # The help desk is back: the ticket is created and the problem is gone.
    Integration.objects.filter(pk=gateway.integration.pk).update(provider_base_url=desk_url)
    gateway.zendesk.wait_for(lambda: Ticket.objects.filter(session=orphan).exists(), 30)
    browser.get(f"{gateway.url}/admin/sessions_app/hitlsession/{orphan.pk}/change/")
    assert not browser.find_elements(By.ID, "ticket-problem")
    assert "ticket:" in browser.find_element(By.ID, "ticket-state").text

    # A session the end user ended says so, with how long it lasted.
    stopped = HitlSession.objects.get(botpress_conversation_id=ended)
    browser.get(f"{gateway.url}/admin/sessions_app/hitlsession/{stopped.pk}/change/")
    end = browser.find_element(By.ID, "session-end").text
    assert re.match(r"ended by the end user \(stopHitl\), after \d+", end), end
    assert "waited -" not in browser.find_element(By.ID, "session-summary").text
    assert assigned.pk and waiting.pk


def test_session_page_history_live_ticket_status_and_resend(gateway, browser):
    session, ticket = _live_session(gateway)
    _operator("lead", SUPERVISORS_GROUP)
    _login(browser, gateway.url, "lead")
    page = f"{gateway.url}/admin/sessions_app/hitlsession/{session.pk}/change/"
    browser.get(page)

    # messageHistory opens the timeline, marked "before handoff", then the handoff line.
    entries = browser.find_elements(By.CSS_SELECTOR, "#timeline .timeline > div")
    assert "before handoff" in entries[0].text and "Hi bot" in entries[0].text
    assert "handoff to a human agent" in entries[1].text
    assert "My parcel never arrived" in entries[2].text
    assert browser.find_element(By.CSS_SELECTOR, "#session-head .session-title").text == "Parcel lost"
    assert "(assigned" in browser.find_element(By.ID, "ticket-state").text

    # "Resend" only on messages that were delivered.
    for message in browser.find_elements(By.CSS_SELECTOR, "#timeline .msg[id^=message-]"):
        outcome = message.find_element(By.CSS_SELECTOR, ".state").text
        has_resend = bool(message.find_elements(By.CSS_SELECTOR, "a.resend"))
        assert has_resend == outcome.startswith("delivered"), outcome
    docs_screenshot(browser, "session-page", full_page=True)

    # The agent solves the ticket: the page follows.
    agent = next(u["id"] for u in gateway.zendesk.users() if u.get("email") == "grace@acme.test")
    gateway.zendesk.solve(ticket["id"], agent)
    gateway.zendesk.wait_for(lambda: HitlSession.objects.get(pk=session.pk).status == SessionStatus.STOPPED, 30)
    browser.get(page)
    assert "(solved" in browser.find_element(By.ID, "ticket-state").text
    assert browser.find_element(By.ID, "session-end").text.startswith(
        "ended by the agent (ticket solved in the help desk), after"
    )
    assert not browser.find_elements(By.CSS_SELECTOR, "a.resend")  # nothing more can be sent


def test_integration_page_buttons_and_labels(gateway, browser):
    _operator("root", superuser=True)
    _login(browser, gateway.url, "root")
    viewport(browser, 1366, 768)
    page = f"{gateway.url}/admin/sessions_app/integration/{gateway.integration.pk}/change/"
    browser.get(page)
    labels = [label.text for label in browser.find_elements(By.CSS_SELECTOR, "fieldset label")]
    for expected in ("API key prefix:", "Botpress API URL:", "Help-desk bot user id:"):
        assert expected in labels, labels
    docs_screenshot(browser, "integration-page")

    browser.find_element(By.ID, "install-webhook").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "ul.messagelist"))
    assert "help-desk webhook installed" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text

    old_hash = Integration.objects.get(pk=gateway.integration.pk).api_key_hash
    browser.find_element(By.ID, "rotate-api-key").click()
    _wait(browser, lambda d: "/rotate-api-key/" in d.current_url)
    assert "stops working at once" in browser.find_element(By.ID, "content").text
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][name=confirm]").click()
    _wait(browser, lambda d: "/rotate-api-key/" not in d.current_url)
    note = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert "New API key" in note and "shown only this once" in note
    assert Integration.objects.get(pk=gateway.integration.pk).api_key_hash != old_hash


def _replaced(element):
    """A wait condition: the page holding ``element`` was replaced by the next one.

    Selenium's ``staleness_of`` knows only the standard "stale element" answer; Chromium also
    answers "Node with given id does not belong to the document" while the old page is torn
    down, which is the same fact.
    """

    def check(_driver) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in (exc.msg or ""):
                return True
            raise
        return False

    return check


def test_lockout_page_and_favicon(live_server, transactional_db, browser, settings):
    User.objects.create_user("ops", password=PASSWORD, is_staff=True)
    viewport(browser, 1366, 768)
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        browser.get(f"{live_server.url}/admin/login/?next=/admin/")
        if not browser.find_elements(By.ID, "id_username"):
            break
        browser.find_element(By.ID, "id_username").send_keys("ops")
        browser.find_element(By.ID, "id_password").send_keys("not the password")
        submit = browser.find_element(By.CSS_SELECTOR, "input[type=submit]")
        submit.click()
        # The answer to this attempt, before the next one: a GET sent while the POST is still in
        # flight cancels it, and an attempt that never reached the server is not counted.
        WebDriverWait(browser, 30).until(_replaced(submit))
    text = browser.find_element(By.ID, "content").text
    assert "locked" in text and "15 minutes" in text, text
    assert browser.find_element(By.CSS_SELECTOR, "#site-name").text == "HITL gateway"
    docs_screenshot(browser, "login-locked")

    icon = browser.find_element(By.CSS_SELECTOR, "link[rel=icon]").get_attribute("href")
    answers = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        Promise.all([fetch(arguments[0]), fetch('/favicon.ico')])
          .then(rs => done(rs.map(r => [r.status, r.headers.get('content-type')])));
        """,
        icon,
    )
    assert [status for status, _ in answers] == [200, 200]
    assert all(kind.startswith("image/svg+xml") for _, kind in answers)


def test_dashboard_readable_empty_and_with_data(live_server, transactional_db, browser):
    from tests.test_admin import make_integration, make_session

    _operator("lead", SUPERVISORS_GROUP)
    _login(browser, live_server.url, "lead")
    dashboard = f"{live_server.url}/admin/sessions_app/hitlsession/dashboard/"
    viewport(browser, 1366, 768)
    browser.get(dashboard)
    empty = [p.text for p in browser.find_elements(By.CSS_SELECTOR, ".dash-chart .chart-empty")]
    assert empty == [
        "No session started in the last 24 hours.",
        "No session was assigned to an agent in the last 14 days.",
    ]
    docs_screenshot(browser, "dashboard-empty", full_page=True)

    # A day and a fortnight of sessions: a few per hour, assigned after a few minutes.
    integration, _ = make_integration()
    now = timezone.now()
    for n in range(30):
        session = make_session(integration, n)
        created = now - timedelta(hours=(n * 7) % 24, minutes=n) - timedelta(days=0 if n < 18 else n % 14)
        assigned = created + timedelta(minutes=1 + n % 9, seconds=17 * n % 60)
        waiting = n in (0, 5)
        HitlSession.objects.filter(pk=session.pk).update(
            created_at=created,
            assigned_at=None if waiting else assigned,
            status=SessionStatus.PENDING if waiting else SessionStatus.ASSIGNED,
        )
        session.messages.filter(direction="to_user").update(created_at=assigned + timedelta(minutes=n % 4 + 1))
        if n % 10:  # most deliveries went out in the end
            Delivery.objects.filter(session=session, status=DeliveryStatus.DEAD).update(status=DeliveryStatus.SUCCEEDED)
    browser.get(dashboard)
    charts = browser.find_elements(By.CSS_SELECTOR, ".dash-chart svg")
    assert len(charts) == 2
    hourly, daily = charts
    assert len(hourly.find_elements(By.CSS_SELECTOR, "rect.bar")) >= 10
    ticks = [t.text for t in hourly.find_elements(By.CSS_SELECTOR, "text.y-tick")]
    assert ticks[0] == "0" and all(t.isdigit() for t in ticks)
    assert [t.text for t in hourly.find_elements(By.CSS_SELECTOR, "text.axis-title")] == [
        "sessions",
        "hour started (local time)",
    ]
    assert len(hourly.find_elements(By.CSS_SELECTOR, "text.x-tick")) == 8
    assert "median wait (min)" in [t.text for t in daily.find_elements(By.CSS_SELECTOR, "text.axis-title")]
    daily_ticks = [t.text for t in daily.find_elements(By.CSS_SELECTOR, "text.y-tick")]
    assert daily_ticks[0] == "0" and all(re.fullmatch(r"\d+(\.\d)?", t) for t in daily_ticks), daily_ticks
    assert daily.find_elements(By.CSS_SELECTOR, "text.bar-value")
    docs_screenshot(browser, "dashboard", full_page=True)
    assert Delivery.objects.filter(status=DeliveryStatus.DEAD).exists()  # make_session's dead delivery
