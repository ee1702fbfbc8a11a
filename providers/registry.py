"""The help desks the gateway knows; adding one means one line in ``SPECS``.

Everything outside a desk's own package asks here: which desks exist (``provider_specs``),
what one declares (``provider_spec``) and its adapter (``provider_class``).
"""

from __future__ import annotations

from functools import cache

from providers.base import HelpDeskProvider
from providers.freshdesk import SPEC as FRESHDESK
from providers.jsm import SPEC as JSM
from providers.slack import SPEC as SLACK
from providers.spec import ProviderSpec, import_path_load
from providers.zendesk.spec import SPEC as ZENDESK

SPECS: tuple[ProviderSpec, ...] = (ZENDESK, FRESHDESK, JSM, SLACK)


def provider_specs() -> tuple[ProviderSpec, ...]:
    return SPECS


def provider_spec(kind: str) -> ProviderSpec:
    """The spec of ``kind``; ``LookupError`` for a desk the gateway does not know."""
    for spec in SPECS:
        if spec.kind == kind:
            return spec
    raise LookupError(f"no provider {kind!r}")


@cache
def provider_class(kind: str) -> type[HelpDeskProvider]:
    return import_path_load(provider_spec(kind).adapter)


@cache
def provider_entity_serializer(kind: str) -> type:
    """The DRF serializer validating ``kind``'s ``hitlSession`` entity."""
    return import_path_load(provider_spec(kind).entity_serializer)


def provider_choices() -> list[tuple[str, str]]:
    """``(kind, label)`` of every desk: the choices of ``Integration.provider`` (a callable, so a
    new desk needs no migration)."""
    return [(spec.kind, spec.label) for spec in SPECS]


def provider_default() -> str:
    return SPECS[0].kind


def secret_credential_names() -> tuple[str, ...]:
    """The names of every desk's secret credential fields, for log redaction."""
    return tuple(sorted({f.name for spec in SPECS for f in spec.secret_fields}))
