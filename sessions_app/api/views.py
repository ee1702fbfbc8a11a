"""REST endpoints for the HITL contract and the help-desk webhooks."""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from providers import provider_class
from sessions_app.api import contract
from sessions_app.api.auth import HasIntegration, IntegrationKeyAuthentication
from sessions_app.models import StoppedBy
from sessions_app.services.sessions import (
    end_user_create,
    message_relay_to_agent,
    session_for_conversation,
    session_start,
    session_stop,
)
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
        data = self.validated(contract.CreateUserInput)
        end_user = end_user_create(
            integration=request.auth,
            name=data["name"],
            email=data.get("email", ""),
            picture_url=data.get("pictureUrl", ""),
        )
        return Response({"userId": end_user.botpress_user_id})


class StartHitlApi(IntegrationApi):
    @extend_schema(
        operation_id="startHitl", request=contract.StartHitlInput, responses={200: contract.StartHitlOutput, **ERRORS}
    )
    def post(self, request, integration_id: str):
        entity = provider_class(request.auth.provider).entity_serializer
        data = self.validated(contract.StartHitlInput, entity_serializer=entity)
        session = session_start(
            integration=request.auth,
            user_id=data["userId"],
            title=data.get("title", ""),
            description=data.get("description", ""),
            extras=data.get("hitlSession", {}),
            message_history=data["messageHistory"],
        )
        return Response({"conversationId": session.botpress_conversation_id})


class StopHitlApi(IntegrationApi):
    @extend_schema(
        operation_id="stopHitl",
        request=contract.StopHitlInput,
        responses={200: OpenApiResponse(description="`{}`"), 404: OpenApiResponse(), **ERRORS},
    )
    def post(self, request, integration_id: str):
        data = self.validated(contract.StopHitlInput)
        session = session_for_conversation(integration=request.auth, conversation_id=data["conversationId"])
        session_stop(
            session=session, stopped_by=StoppedBy.BOTPRESS, reason="stopHitl", close_ticket=True, notify_botpress=False
        )
        return Response({})


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
