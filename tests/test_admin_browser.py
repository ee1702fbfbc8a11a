"""The operators' console as a person uses it: headless Debian Chromium (Selenium) against the
live gateway, its real Celery worker and the Botpress and Zendesk stand-ins.

Screenshots of the dashboard and the session page are saved in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from sessions_app.models import (
    Delivery,
    DeliveryStatus,
    HitlSession,
    Message,
    OperatorAction,
    OperatorActionKind,
    SessionStatus,
    StoppedBy,
)
from sessions_app.services.operators import OPERATORS_GROUP, SUPERVISORS_GROUP, operator_groups_ensure
from tests.browser import screenshot

pytestmark = pytest.mark.e2e
PASSWORD = "correct-horse-battery-staple-42"
EMAIL = "ada.browser@example.com"
REASON = "Customer called: issue solved by phone"


def _operator(username: str, group: str | None = None, *, superuser: bool = False) -> User:
    # A transactional test's database was flushed: the migration's groups are made again.
    operator_groups_ensure()
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True, is_superuser=superuser)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def _login(driver, base_url: str, username: str) -> None:
    driver.get(f"{base_url}/admin/login/?next=/admin/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: "/admin/login/" not in d.current_url)


def _wait(driver, predicate, timeout: float = 10):
    return WebDriverWait(driver, timeout).until(predicate)


def _live_session(gateway, *, assign: bool = True) -> tuple[HitlSession, dict]:
    """A session made through the public API: an end user, history, messages, an agent's reply."""
    user = gateway.action("createUser", {"name": "Ada Lovelace", "email": EMAIL})
    assert user.status_code == 200, user.text
    user_id = user.json()["userId"]
    history = [{"source": {"type": "user", "userId": user_id}, "type": "text", "payload": {"text": "Hi bot"}}]
    started = gateway.action("startHitl", {"userId": user_id, "title": "Parcel lost", "messageHistory": history})
    assert started.status_code == 200, started.text
    conversation_id = started.json()["conversationId"]
    for body in (
        {"type": "text", "payload": {"text": "My parcel never arrived", "userId": user_id}},
        {"type": "image", "payload": {"imageUrl": "http://127.0.0.1:9/receipt.png", "title": "receipt"}},
        {"type": "file", "payload": {"fileUrl": "http://127.0.0.1:9/invoice.pdf", "title": "invoice"}},
    ):
        assert gateway.message({"conversationId": conversation_id} | body).status_code == 202
    zendesk = gateway.zendesk
    ticket = zendesk.wait_for(
        lambda: next((t for t in zendesk.tickets() if t.get("external_id") == conversation_id), None), timeout=20
    )
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    if assign:
        agent_id = zendesk.add_agent("Grace Hopper", "grace@acme.test")
        zendesk.assign(ticket["id"], agent_id)
        zendesk.agent_reply(ticket["id"], agent_id, "Sorry about that, Ada. Let me check.")
        zendesk.wait_for(
            lambda: (
                Message.objects.filter(session=session, direction="to_user").exists()
                and not Delivery.objects.filter(session=session, status=DeliveryStatus.PENDING).exists()
            ),
            timeout=30,
        )
    else:
        zendesk.wait_for(
            lambda: not Delivery.objects.filter(session=session, status=DeliveryStatus.PENDING).exists(), timeout=30
        )
    return session, ticket


def test_supervisor_finds_a_session_by_email_closes_it_and_sees_the_audit(gateway, browser):
    session, ticket = _live_session(gateway)
    _operator("lead", SUPERVISORS_GROUP)
    base = gateway.url
    _login(browser, base, "lead")

    # The index leads to the dashboard; its figures link to the lists.
    browser.find_element(By.LINK_TEXT, "Open the dashboard").click()
    _wait(browser, lambda d: "/dashboard/" in d.current_url)
    assigned = browser.find_element(By.CSS_SELECTOR, "[data-figure=assigned] .value").text
    assert assigned == "1"
    assert browser.find_elements(By.CSS_SELECTOR, ".dash-chart svg rect.bar")
    screenshot(browser, "dashboard")

    # Find the session by the end user's email.
    browser.get(f"{base}/admin/sessions_app/hitlsession/")
    search = browser.find_element(By.ID, "searchbar")
    search.send_keys(EMAIL, Keys.ENTER)
    _wait(browser, lambda d: "q=" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 1
    assert ticket and str(ticket["id"]) in rows[0].text
    rows[0].find_element(By.CSS_SELECTOR, "th a").click()
    _wait(browser, lambda d: str(session.pk) in d.current_url)

    # The session page: the conversation both ways, with delivery states.
    timeline = browser.find_element(By.ID, "timeline").text
    for expected in ("My parcel never arrived", "receipt", "invoice", "Sorry about that, Ada", "delivered"):
        assert expected in timeline
    assert not browser.find_elements(By.CSS_SELECTOR, "#timeline img"), "no end user's image is loaded"
    assert "image: receipt" in [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#timeline a.msg-file")]
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline a.msg-file"), "files show as links"
    assert "Assigned" in browser.find_element(By.ID, "transitions").text
    screenshot(browser, "session-page")

    # Close it, with a reason.
    browser.find_element(By.CSS_SELECTOR, "a.close-session").click()
    _wait(browser, lambda d: "/close/" in d.current_url)
    browser.find_element(By.ID, "id_reason").send_keys(REASON)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][name=confirm]").click()
    _wait(browser, lambda d: "/close/" not in d.current_url)
    assert "Closed 1 session" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    audit = browser.find_element(By.ID, "operator-actions").text
    assert "lead" in audit and "Closed the session" in audit and REASON in audit
    assert not browser.find_elements(By.CSS_SELECTOR, "a.close-session")
    assert "last operator action: lead — closed the session" in browser.find_element(By.ID, "session-summary").text
    screenshot(browser, "session-closed")
    browser.execute_script("document.getElementById('operator-actions').scrollIntoView()")
    screenshot(browser, "session-audit")

    session.refresh_from_db()
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.OPERATOR
    assert session.stop_reason == REASON
    entry = OperatorAction.objects.get(session=session)
    assert (entry.username, entry.action, entry.reason) == ("lead", OperatorActionKind.SESSION_CLOSE, REASON)
    # What the close did outside: the ticket is closed and Botpress was told.
    gateway.zendesk.wait_for(lambda: gateway.zendesk.ticket(ticket["id"])["status"] == "closed", timeout=20)
    stopped = gateway.botpress.wait_for(lambda: gateway.botpress.events(type="hitlStopped"), timeout=20)
    assert stopped[0]["payload"]["conversationId"] == session.botpress_conversation_id


def test_read_only_operator_has_no_close_button_and_the_url_refuses(gateway, browser):
    session, _ = _live_session(gateway, assign=False)
    _operator("watcher", OPERATORS_GROUP)
    base = gateway.url
    _login(browser, base, "watcher")

    page = f"{base}/admin/sessions_app/hitlsession/{session.pk}/change/"
    browser.get(page)
    assert "My parcel never arrived" in browser.find_element(By.ID, "timeline").text
    assert not browser.find_elements(By.CSS_SELECTOR, "a.close-session")
    assert not browser.find_elements(By.CSS_SELECTOR, "a.resend")
    screenshot(browser, "session-page-read-only")

    close_url = f"{base}/admin/sessions_app/hitlsession/{session.pk}/close/"
    browser.get(close_url)
    assert "403" in browser.title or "Forbidden" in browser.page_source
    # A forged POST, with the operator's own session and CSRF token, is refused as well.
    status = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken=')).split('=')[1];
        fetch(arguments[0], {method: 'POST', credentials: 'same-origin',
              headers: {'X-CSRFToken': token, 'Content-Type': 'application/x-www-form-urlencoded'},
              body: 'reason=forged'}).then(r => done(r.status));
        """,
        close_url,
    )
    assert status == 403
    session.refresh_from_db()
    assert session.status != SessionStatus.STOPPED
    assert not OperatorAction.objects.exists()


def test_integration_page_tests_the_connections(gateway, browser):
    _operator("root", superuser=True)
    _login(browser, gateway.url, "root")
    browser.get(f"{gateway.url}/admin/sessions_app/integration/{gateway.integration.pk}/change/")
    assert "TEST CONNECTION" in browser.find_element(By.CSS_SELECTOR, ".object-tools").text.upper()
    browser.find_element(By.ID, "test-connection").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "connection-answers"))
    answers = browser.find_element(By.ID, "connection-answers").text
    assert "Zendesk Support" in answers and "authenticated as gateway (admin)" in answers
    assert "webhook active, triggers active 3/3" in answers
    assert "Botpress" in answers and len(browser.find_elements(By.CSS_SELECTOR, "tr.answer.ok")) == 2
    screenshot(browser, "integration-connection-test")
    assert OperatorAction.objects.filter(action=OperatorActionKind.CONNECTION_TEST).count() == 1
