"""REST endpoints for the HITL contract and the help-desk webhooks."""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app.api import actions, contract
from sessions_app.api.auth import HasIntegration, IntegrationKeyAuthentication
from sessions_app.services.errors import NotFound
from sessions_app.services.integrations import integration_botpress_names
from sessions_app.services.sessions import message_relay_to_agent
from sessions_app.services.webhooks import webhook_receive

ERRORS = {
    400: OpenApiResponse(description="Invalid input; `fields` names each bad field."),
    401: OpenApiResponse(description="Unknown integration or wrong credential."),
}


class IntegrationApi(APIView):
    """Base of the Botpress-facing endpoints: one integration, authenticated by its key."""

    authentication_classes = [IntegrationKeyAuthentication]
    permission_classes = [HasIntegration]

    def validated(self, serializer_class, **kwargs):
        serializer = serializer_class(data=self.request.data, **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class CreateUserApi(IntegrationApi):
    @extend_schema(
        operation_id="createUser",
        request=contract.CreateUserInput,
        responses={200: contract.CreateUserOutput, **ERRORS},
    )
    def post(self, request, integration_id: str):
        return Response(actions.create_user(request.auth, self.validated(contract.CreateUserInput)))


class StartHitlApi(IntegrationApi):
    @extend_schema(
        operation_id="startHitl", request=contract.StartHitlInput, responses={200: contract.StartHitlOutput, **ERRORS}
    )
    def post(self, request, integration_id: str):
        serializer = actions.action_input(request.auth, "startHitl", request.data)
        serializer.is_valid(raise_exception=True)
        return Response(actions.start_hitl(request.auth, serializer.validated_data))


class StopHitlApi(IntegrationApi):
    @extend_schema(
        operation_id="stopHitl",
        request=contract.StopHitlInput,
        responses={200: OpenApiResponse(description="`{}`"), 404: OpenApiResponse(), **ERRORS},
    )
    def post(self, request, integration_id: str):
        return Response(actions.stop_hitl(request.auth, self.validated(contract.StopHitlInput)))


class ChannelMessageApi(IntegrationApi):
    @extend_schema(
        operation_id="hitlMessage",
        request=contract.ChannelMessageInput,
        responses={
            202: contract.ChannelMessageOutput,
            404: OpenApiResponse(),
            409: OpenApiResponse(description="The session is stopped."),
            **ERRORS,
        },
    )
    def post(self, request, integration_id: str):
        data = self.validated(contract.ChannelMessageInput)
        message, created = message_relay_to_agent(
            integration=request.auth,
            conversation_id=data["conversationId"],
            type=data["type"],
            payload=data["payload"],
            botpress_message_id=data.get("messageId", ""),
            sender_user_id=data.get("userId", ""),
        )
        return Response(
            {"id": message.pk, "status": "accepted", "duplicate": not created}, status=status.HTTP_202_ACCEPTED
        )


class RenamedActionApi(IntegrationApi):
    """``actions/<name>`` under the integration's own names (``createTicket`` for ``startHitl``)."""

    @extend_schema(exclude=True)
    def post(self, request, integration_id: str, action: str):
        interface_action = integration_botpress_names(integration=request.auth).interface_action(action)
        if interface_action is None:
            raise NotFound(f"No action {action} in this integration.", field="action")
        serializer = actions.action_input(request.auth, interface_action, request.data)
        serializer.is_valid(raise_exception=True)
        return Response(actions.ACTIONS[interface_action].run(request.auth, serializer.validated_data))


class RenamedChannelMessageApi(ChannelMessageApi):
    """``channels/<name>/messages`` under the integration's own channel name."""

    @extend_schema(exclude=True)
    def post(self, request, integration_id: str, channel: str):
        if channel != integration_botpress_names(integration=request.auth).channel:
            raise NotFound(f"No channel {channel} in this integration.", field="channel")
        return super().post(request, integration_id)


@csrf_exempt
@require_POST
def helpdesk_webhook(request, provider: str, integration_id: str):
    """A plain Django view: the signature covers the raw bytes, which DRF parsing would consume."""
    outcome = webhook_receive(
        integration_id=integration_id,
        provider=provider,
        headers=request.headers,
        body=request.body,
        remote_addr=request.META.get("REMOTE_ADDR"),
    )
    return JsonResponse(outcome.body, status=outcome.status_code)
