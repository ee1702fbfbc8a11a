"""The HITL interface's names, and an integration's renames of them.

Botpress lets an integration implement the ``hitl`` interface under its own words (Zendesk's
integration calls its entity ``hitlTicket``): Botpress then sends and expects the integration's
names, and maps them to the interface's. An integration here may rename the three actions, the
two events and the channel; the default is the interface's own names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

INTERFACE, INTERFACE_VERSION = "hitl", "2.1.0"
ACTIONS = ("createUser", "startHitl", "stopHitl")
EVENTS = ("hitlAssigned", "hitlStopped")
CHANNEL = "hitl"
ENTITY = "hitlSession"
# Botpress definition names: an identifier, as in its own integrations (createTicket, hitlAssigned).
NAME_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,99}$")


@dataclass(frozen=True)
class HitlNames:
    """Interface name → the integration's name, for actions and events; the channel's name."""

    actions: Mapping[str, str] = field(default_factory=lambda: {name: name for name in ACTIONS})
    events: Mapping[str, str] = field(default_factory=lambda: {name: name for name in EVENTS})
    channel: str = CHANNEL

    @classmethod
    def from_config(cls, config: Mapping | None) -> HitlNames:
        """Names from a stored configuration (assumed valid: see ``names_errors``)."""
        config = config or {}
        actions = config.get("actions") or {}
        events = config.get("events") or {}
        return cls(
            actions={name: actions.get(name) or name for name in ACTIONS},
            events={name: events.get(name) or name for name in EVENTS},
            channel=config.get("channel") or CHANNEL,
        )

    def action(self, interface_name: str) -> str:
        return self.actions[interface_name]

    def event(self, interface_name: str) -> str:
        return self.events[interface_name]

    def interface_action(self, name: str) -> str | None:
        """The interface action Botpress means by ``name`` (the integration's name), if any."""
        return next((interface for interface, own in self.actions.items() if own == name), None)


def names_errors(config: object) -> dict[str, str]:
    """What is wrong with a renames configuration, by dotted field path (empty when valid)."""
    if config in (None, {}):
        return {}
    if not isinstance(config, Mapping):
        return {"": "must be an object"}
    errors: dict[str, str] = {}
    for key in set(config) - {"actions", "events", "channel"}:
        errors[key] = "unknown key: only actions, events and channel can be renamed"
    for kind, interface_names in (("actions", ACTIONS), ("events", EVENTS)):
        renames = config.get(kind)
        renames = {} if renames is None else renames
        if not isinstance(renames, Mapping):
            errors[kind] = "must be an object"
            continue
        for interface_name, name in renames.items():
            path = f"{kind}.{interface_name}"
            if interface_name not in interface_names:
                errors[path] = f"not an interface {kind[:-1]}: expected one of {', '.join(interface_names)}"
            elif not isinstance(name, str) or not NAME_PATTERN.match(name):
                errors[path] = "must be an identifier (a letter, then letters, digits or _; at most 100)"
        resulting = {interface: renames.get(interface) or interface for interface in interface_names}
        seen: dict[str, str] = {}
        for interface_name, name in resulting.items():
            if name in seen:
                errors[f"{kind}.{interface_name}"] = f"{name!r} is already the name of {seen[name]}"
            seen[name] = interface_name
    channel = config.get("channel")
    if channel is not None and (not isinstance(channel, str) or not NAME_PATTERN.match(channel)):
        errors["channel"] = "must be an identifier (a letter, then letters, digits or _; at most 100)"
    return errors
