"""A few minutes of a help desk's day through a real gateway, so every panel has something to show.

Sessions open one after another; in each, the desk takes the ticket (an agent assigns it to
themself a few seconds later), the agent answers, the bot and the agent then exchange messages
until the bot stops the session (some are still open at the end). One session in six is taken by
no agent, so the lifecycle policy's assignment timeout ends it. Around them: the chaos run's
background faults on both sides (5xx, 429, timeouts, slow answers, lost answers), a window in
which the desk's API answers only 503 (retries pile up, the oldest pending delivery ages, what
outlives the retry budget dies), and now and then a forged help-desk webhook (rejected).
Everything goes through the gateway's public doors (Botpress's API, the desk's webhooks).
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import requests

from chaos.run import ChaosRun
from chaos.stack import Session, Stack, log

# What the stack runs with: short timeouts and backoffs (chaos.run's), and a retry budget short
# enough that a delivery caught at the start of the desk's outage dies within it.
TRAFFIC_ENV = {
    "HITL_HTTP_CONNECT_TIMEOUT": "2",
    "HITL_HTTP_READ_TIMEOUT": "2",
    "HITL_DELIVERY_BACKOFF_BASE_SECONDS": "0.5",
    "HITL_DELIVERY_BACKOFF_MAX_SECONDS": "4",
    "HITL_DELIVERY_RETRY_BUDGET_SECONDS": "25",
    "HITL_DELIVERY_STALE_SECONDS": "3",
    "HITL_SWEEP_SECONDS": "1",
    "HITL_TASK_TIME_LIMIT": "15",
    "HITL_DELIVERY_LEASE_SECONDS": "20",
}
FAULT_RATE = 0.03
OUTAGE = (0.40, 0.58)  # the desk's API down, as fractions of the run
AGENTS = 6
UNTAKEN_EVERY = 6  # one session in six waits for an agent in vain


@dataclass
class Tally:
    """What the traffic did, counted on the client side (printed with the picture's figures)."""

    opened: int = 0
    tickets: int = 0
    assigned: int = 0
    to_agent: int = 0
    to_user: int = 0
    stopped: int = 0
    forged_webhooks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return {name: value for name, value in vars(self).items() if name != "lock"}


class Traffic:
    """``sessions`` sessions opened over the first three quarters of ``seconds``, then ``run()`` returns."""

    def __init__(self, stack: Stack, *, seconds: float, sessions: int, seed: int = 16) -> None:
        self.stack, self.seconds, self.sessions = stack, seconds, sessions
        self.random = random.Random(seed)
        self.stopping = threading.Event()
        self.tally = Tally()
        self.agents: list[int] = []
        self.faults = ChaosRun(argparse.Namespace(sessions=0, fault_rate=FAULT_RATE), stack)

    def run(self) -> Tally:
        helpdesk = self.stack.helpdesk
        self.agents = [helpdesk.add_agent(f"Agent {n}", f"agent{n}@traffic.test") for n in range(AGENTS)]
        self.faults.inject_faults()
        started = time.monotonic()
        spacing = 0.75 * self.seconds / max(1, self.sessions)
        threads: list[threading.Thread] = []
        outage_from, outage_to = (started + f * self.seconds for f in OUTAGE)
        in_outage, next_forgery = False, started + 10
        while (now := time.monotonic()) < started + self.seconds:
            while len(threads) < self.sessions and now >= started + len(threads) * spacing:
                seed = self.random.randrange(1 << 30)
                thread = threading.Thread(target=self._session, args=(len(threads), seed), daemon=True)
                thread.start()
                threads.append(thread)
            if not in_outage and outage_from <= now < outage_to:
                in_outage = True
                helpdesk.clear_faults()
                helpdesk.add_fault(path=self.stack.desk.api_prefix, kind="status", status=503)
                log(f"the desk's API is down (every call 503) for {outage_to - outage_from:.0f} s")
            elif in_outage and now >= outage_to:
                in_outage = False
                helpdesk.clear_faults()
                self.faults.inject_faults()
                log("the desk's API is back")
            if now >= next_forgery:
                self._forged_webhook()
                next_forgery = now + self.random.uniform(8, 20)
            time.sleep(0.5)
        self.stopping.set()
        for thread in threads:
            thread.join(timeout=30)
        return self.tally

    # --- one session ----------------------------------------------------------------------------
    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when the run ended meanwhile."""
        return not self.stopping.wait(seconds)

    def _session(self, index: int, seed: int) -> None:
        rng = random.Random(seed)
        stack, desk = self.stack, self.stack.desk
        session = Session(index=index)
        try:
            stack.open_session(session)
            self.tally.add("opened")
            ticket = None
            deadline = time.monotonic() + 90
            while ticket is None and time.monotonic() < deadline and self._wait(1):
                ticket = desk.ticket_ids({session.conversation_id}).get(session.conversation_id)
            if ticket is None:
                return  # its ticket's creation died in the outage: the session needs an operator
            self.tally.add("tickets")
            if index % UNTAKEN_EVERY == UNTAKEN_EVERY - 1:
                return  # no agent takes it: the lifecycle policy ends it (run.py sets a 1 min timeout)
            agent = self.agents[index % len(self.agents)]
            if not self._wait(rng.uniform(2, 30)):
                return
            stack.helpdesk.assign(ticket, agent)
            self.tally.add("assigned")
            if not self._wait(rng.uniform(2, 20)):
                return
            self._agent_says(ticket, agent, f"Hi, this is agent {agent}: looking at it now.")
            ends = time.monotonic() + rng.uniform(50, 140)
            round_ = 0
            while time.monotonic() < ends:
                round_ += 1
                self._bot_says(session, f"Message {round_} from user {index}", f"traffic-{index}-{round_}")
                if not self._wait(rng.uniform(2, 7)):
                    return
                if rng.random() < 0.7:
                    self._agent_says(ticket, agent, f"Answer {round_} to user {index}")
                if not self._wait(rng.uniform(2, 7)):
                    return
            if stack.post("actions/stopHitl", {"conversationId": session.conversation_id}).ok:
                self.tally.add("stopped")
        except Exception as exc:  # one session's failure is logged; the others go on
            log(f"session {index}: {type(exc).__name__}: {exc}")

    def _bot_says(self, session: Session, text: str, message_id: str) -> None:
        body = {
            "conversationId": session.conversation_id,
            "messageId": message_id,
            "type": "text",
            "payload": {"text": text, "userId": session.user_id},
        }
        if self.stack.post("channels/hitl/messages", body).status_code == 202:
            self.tally.add("to_agent")

    def _agent_says(self, ticket: int, agent: int, text: str) -> None:
        self.stack.desk.agent_reply(ticket, agent, text, attachments=[])
        self.tally.add("to_user")

    # --- forged webhooks ------------------------------------------------------------------------
    def _forged_webhook(self) -> None:
        """A webhook the desk never sent: a wrong signature, no signature, or an unknown integration."""
        gateway, kind = self.stack.gateway.url, self.stack.desk.kind
        integration = self.stack.integration_id
        headers = {
            "x-zendesk-webhook-signature-timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "x-zendesk-webhook-signature": "Zm9yZ2Vk",
        }
        choice = self.random.choice(["signature", "signature", "missing", "integration"])
        if choice == "missing":
            headers = {}
        elif choice == "integration":
            integration = str(uuid.uuid4())
        try:
            requests.post(
                f"{gateway}/webhooks/{kind}/{integration}/", data=b'{"ticket": {}}', headers=headers, timeout=5
            )
            self.tally.add("forged_webhooks")
        except requests.RequestException as exc:
            log(f"forged webhook: {exc}")
