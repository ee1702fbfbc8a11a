"""Faithful local stand-ins of the external APIs the gateway talks to (Botpress, Zendesk, Freshdesk, Jira
Service Management, Slack).

They serve real HTTP on loopback so the gateway, its tests, the demo and the benchmarks reach them
exactly as they reach production: through a configured base URL.
"""

from .botpress import BotpressStandin
from .freshdesk import FreshdeskStandin
from .jsm import JsmStandin
from .server import HttpError, Request, Response, StandinServer
from .slack import SlackStandin
from .zendesk import ZendeskStandin, sign_zendesk_webhook

__all__ = [
    "BotpressStandin",
    "FreshdeskStandin",
    "HttpError",
    "JsmStandin",
    "Request",
    "Response",
    "SlackStandin",
    "StandinServer",
    "ZendeskStandin",
    "sign_zendesk_webhook",
]
