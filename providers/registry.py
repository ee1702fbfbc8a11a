"""Which adapter serves which provider kind; adding a help desk means one line here."""

from __future__ import annotations

from providers.base import HelpDeskProvider


def provider_class(kind: str) -> type[HelpDeskProvider]:
    from providers.freshdesk import FreshdeskProvider
    from providers.zendesk import ZendeskProvider

    registry: dict[str, type[HelpDeskProvider]] = {ZendeskProvider.kind: ZendeskProvider}
    registry[FreshdeskProvider.kind] = FreshdeskProvider
    try:
        return registry[kind]
    except KeyError:
        raise LookupError(f"no provider {kind!r}") from None
