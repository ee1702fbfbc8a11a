"""Faithful local stand-ins of the external APIs the gateway talks to (Botpress, Zendesk, Freshdesk, Slack).

They serve real HTTP on loopback so the gateway, its tests, the demo and the benchmarks reach them
exactly as they reach production: through a configured base URL.
"""

from .botpress import BotpressStandin
from .freshdesk import FreshdeskStandin
from .server import HttpError, Request, Response, StandinServer
from .slack import SlackStandin
from .zendesk import ZendeskStandin, sign_zendesk_webhook

__all__ = [
    "BotpressStandin",
    "FreshdeskStandin",
    "HttpError",
    "Request",
    "Response",
    "SlackStandin",
    "StandinServer",
    "ZendeskStandin",
    "sign_zendesk_webhook",
]
