"""Zendesk Support: tickets, public comments, trigger-connected signed webhooks."""

from providers.zendesk.provider import ZendeskProvider
from providers.zendesk.spec import SPEC

__all__ = ["SPEC", "ZendeskProvider"]
