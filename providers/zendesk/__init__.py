"""Zendesk Support: tickets, public comments, trigger-connected signed webhooks."""

from providers.zendesk.provider import ZendeskProvider

__all__ = ["ZendeskProvider"]
