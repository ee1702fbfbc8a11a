"""The HITL interface's actions, shared by every transport that Botpress calls them through.

Each takes input already validated by the contract's serializer and calls the services, so the
REST endpoints, the wire protocol's ``action_triggered`` and the REST aliases under renamed
names differ only in how they authenticate, validate errors and answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rest_framework import serializers

from providers.registry import provider_entity_serializer
from sessions_app.api import contract
from sessions_app.models import Integration, StoppedBy
from sessions_app.services.sessions import (
    end_user_create,
    session_for_conversation,
    session_start,
    session_stop,
)


def create_user(integration: Integration, data: dict) -> dict:
    end_user = end_user_create(
        integration=integration,
        name=data["name"],
        email=data.get("email", ""),
        picture_url=data.get("pictureUrl", ""),
    )
    return {"userId": end_user.botpress_user_id}


def start_hitl(integration: Integration, data: dict) -> dict:
    session = session_start(
        integration=integration,
        user_id=data["userId"],
        title=data.get("title", ""),
        description=data.get("description", ""),
        extras=data.get("hitlSession", {}),
        message_history=data["messageHistory"],
    )
    return {"conversationId": session.botpress_conversation_id}


def stop_hitl(integration: Integration, data: dict) -> dict:
    session = session_for_conversation(integration=integration, conversation_id=data["conversationId"])
    session_stop(
        session=session, stopped_by=StoppedBy.BOTPRESS, reason="stopHitl", close_ticket=True, notify_botpress=False
    )
    return {}


@dataclass(frozen=True)
class Action:
    title: str
    description: str
    input: type[serializers.Serializer]
    output: type[serializers.Serializer] | None
    run: Callable[[Integration, dict], dict]


ACTIONS = {
    "createUser": Action(
        "Create user",
        "Create the end user in Botpress and in the help desk; returns the Botpress user id.",
        contract.CreateUserInput,
        contract.CreateUserOutput,
        create_user,
    ),
    "startHitl": Action(
        "Start HITL",
        "Open a ticket for the user, with the conversation so far; returns the HITL conversation id.",
        contract.StartHitlInput,
        contract.StartHitlOutput,
        start_hitl,
    ),
    "stopHitl": Action(
        "Stop HITL",
        "Close the ticket of a HITL conversation.",
        contract.StopHitlInput,
        None,
        stop_hitl,
    ),
}


def action_input(integration: Integration, action: str, data: object) -> serializers.Serializer:
    """The unvalidated input serializer of an interface action (``hitlSession`` is the provider's)."""
    if action == "startHitl":
        entity = provider_entity_serializer(integration.provider)
        return contract.StartHitlInput(data=data, entity_serializer=entity)
    return ACTIONS[action].input(data=data)
