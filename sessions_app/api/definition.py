"""The integration's definition as Botpress reads one, and how an operator connects Botpress.

The definition lists what the gateway implements under the integration's own names: the HITL
interface's actions (input and output JSON schemas), its events, the channel and its messages,
and the provider's ``hitlSession`` entity, plus the interface mapping Botpress uses to route
the plugin's calls to them.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from botpress import names as hitl
from botpress.names import names_errors
from botpress.sink import EXTERNAL_MESSAGE_TAG, SESSION_TAG, TICKET_TAG
from providers.registry import provider_entity_serializer
from sessions_app.api import actions, contract
from sessions_app.api.jsonschema import serializer_schema
from sessions_app.api.views import IntegrationApi
from sessions_app.models import BotpressTransport, Integration
from sessions_app.services.integrations import (
    integration_botpress_configure,
    integration_botpress_endpoints,
    integration_botpress_names,
    integration_url_secret_rotate,
)

DEFINITION_VERSION = "1.0.0"
EVENTS = {
    "hitlAssigned": (
        "Agent assigned",
        "A human agent took the ticket.",
        {"conversationId": "The HITL conversation", "userId": "The Botpress user standing for the agent"},
    ),
    "hitlStopped": ("HITL stopped", "The agent closed the ticket.", {"conversationId": "The HITL conversation"}),
}


# Every tag the gateway writes, per object; Botpress refuses a tag its definition does not declare.
DECLARED_TAGS = {
    "user": {
        "id": {"title": "Help-desk user id"},
        "email": {"title": "Email"},
        "role": {"title": "Role (end-user or agent)"},
    },
    "conversation": {SESSION_TAG: {"title": "Gateway session id"}, TICKET_TAG: {"title": "Help-desk ticket id"}},
    "message": {EXTERNAL_MESSAGE_TAG: {"title": "Help-desk message id"}},
}


def _title(name: str) -> str:
    """``createTicket`` → "Create ticket"."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).capitalize()


def _string_properties(described: dict[str, str]) -> dict:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": text} for name, text in described.items()},
        "required": list(described),
    }


def definition_build(*, integration: Integration) -> dict:
    names = integration_botpress_names(integration=integration)
    entity = serializer_schema(provider_entity_serializer(integration.provider))
    definition_actions = {}
    for interface_name, action in actions.ACTIONS.items():
        name = names.action(interface_name)
        input_schema = serializer_schema(action.input)
        if interface_name == "startHitl":
            input_schema["properties"]["hitlSession"] = entity
        definition_actions[name] = {
            "title": action.title if name == interface_name else _title(name),
            "description": action.description,
            "input": {"schema": input_schema},
            "output": {"schema": serializer_schema(action.output) if action.output else {"type": "object"}},
        }
    events = {
        names.event(event): {
            "title": title if names.event(event) == event else _title(names.event(event)),
            "description": description,
            "schema": _string_properties(fields),
        }
        for event, (title, description, fields) in EVENTS.items()
    }
    channel = {
        "title": "HITL" if names.channel == hitl.CHANNEL else _title(names.channel),
        "description": "The conversation with the agent: one per ticket.",
        "messages": {
            kind: {"schema": serializer_schema(message)} for kind, message in contract.CHANNEL_PAYLOADS.items()
        },
        "conversation": {"tags": DECLARED_TAGS["conversation"]},
        "message": {"tags": DECLARED_TAGS["message"]},
    }
    return {
        "name": "hitl-gateway",
        "version": DEFINITION_VERSION,
        "title": f"HITL gateway: {integration.name}",
        "description": f"Hands conversations over to human agents in {integration.get_provider_display()}.",
        "configuration": {"schema": {"type": "object", "properties": {}}},
        "user": {"tags": DECLARED_TAGS["user"]},
        "actions": definition_actions,
        "events": events,
        "channels": {names.channel: channel},
        "entities": {
            hitl.ENTITY: {
                "title": "HITL session",
                "description": f"Options of the {integration.get_provider_display()} ticket.",
                "schema": entity,
            }
        },
        "interfaces": {
            hitl.INTERFACE: {
                "name": hitl.INTERFACE,
                "version": hitl.INTERFACE_VERSION,
                "entities": {hitl.ENTITY: {"name": hitl.ENTITY}},
                "actions": {action: {"name": names.action(action)} for action in hitl.ACTIONS},
                "events": {event: {"name": names.event(event)} for event in hitl.EVENTS},
                "channels": {hitl.CHANNEL: {"name": names.channel}},
            }
        },
    }


class DefinitionApi(IntegrationApi):
    @extend_schema(
        operation_id="integrationDefinition",
        responses={200: OpenApiResponse(description="The Botpress integration definition, as JSON.")},
    )
    def get(self, request, integration_id: str):
        return Response(definition_build(integration=request.auth))


# --- connecting Botpress --------------------------------------------------------------------
class BotpressConnectionInput(serializers.Serializer):
    transport = serializers.ChoiceField(choices=BotpressTransport.values, required=False)
    names = serializers.DictField(
        required=False,
        help_text='Renames, e.g. {"actions": {"startHitl": "createTicket"}, '
        '"events": {"hitlAssigned": "agentAssigned"}, "channel": "supportTicket"}.',
    )
    hitlApiWebhookUrl = serializers.URLField(required=False, allow_blank=True, max_length=2048)

    def validate_names(self, value):
        errors = names_errors(value)
        if errors:
            raise serializers.ValidationError(errors)
        return value


class BotpressConnectionOutput(serializers.Serializer):
    transport = serializers.CharField()
    names = serializers.DictField(help_text="The resulting names: interface name → the integration's.")
    hitlApiWebhookUrlSet = serializers.BooleanField()
    wireUrl = serializers.CharField(help_text="The URL Botpress calls with the integration wire protocol.")
    hitlApiBaseUrl = serializers.CharField(help_text="The hitl-api integration's `endpointBaseUrl`.")
    definitionUrl = serializers.CharField()


def _connection(integration: Integration, request) -> dict:
    names = integration_botpress_names(integration=integration)
    endpoints = integration_botpress_endpoints(integration=integration)
    return {
        "transport": integration.botpress_transport,
        "names": {"actions": dict(names.actions), "events": dict(names.events), "channel": names.channel},
        "hitlApiWebhookUrlSet": bool(integration.hitl_api_webhook_url),
        "wireUrl": endpoints["wire_url"],
        "hitlApiBaseUrl": endpoints["hitl_api_base_url"],
        "definitionUrl": request.build_absolute_uri(f"/api/v1/integrations/{integration.pk}/definition"),
    }


class BotpressConnectionApi(IntegrationApi):
    """How Botpress reaches this integration: the URLs it calls, the transport, the names.

    The URLs hold the integration's URL secret; the key that reads them can do everything
    those URLs can, so they are shown to it.
    """

    @extend_schema(operation_id="botpressConnection", responses={200: BotpressConnectionOutput})
    def get(self, request, integration_id: str):
        return Response(_connection(request.auth, request))

    @extend_schema(
        operation_id="botpressConnectionUpdate",
        request=BotpressConnectionInput,
        responses={200: BotpressConnectionOutput},
    )
    def patch(self, request, integration_id: str):
        data = self.validated(BotpressConnectionInput)
        integration = integration_botpress_configure(
            integration=request.auth,
            transport=data.get("transport"),
            names=data.get("names"),
            hitl_api_webhook_url=data.get("hitlApiWebhookUrl"),
        )
        return Response(_connection(integration, request))


class BotpressUrlSecretApi(IntegrationApi):
    @extend_schema(operation_id="botpressUrlSecretRotate", request=None, responses={200: BotpressConnectionOutput})
    def post(self, request, integration_id: str):
        """A new URL secret: the old wire and hitl-api URLs stop working at once."""
        integration_url_secret_rotate(integration=request.auth)
        return Response(_connection(request.auth, request))
