"""The external-service side of Botpress Hub's "Human in the Loop API" integration (plus/hitl-api).

The Hub integration calls ``<endpointBaseUrl>/ping``, ``/createRemoteUser``,
``/createRemoteConversation``, ``/botSendsMessage`` and ``/closeRemoteTicket`` with the bodies of
``botpress/openapi/hitl-api-external-service.json``; our ``endpointBaseUrl`` is
``/hitl-api/<integration id>/<secret>``. The integration sends no credential, so the URL's
secret is the credential. The REST API's serializers validate what maps onto them, and the
same services run.

What the contract leaves out, and how it is bridged:
- ``createRemoteConversation`` names no user: the bot requests the ticket, and each message
  is authored by the user ``botSendsMessage`` names.
- ``botSendsMessage`` carries no message type: it is read from the payload's shape.
- ``closeRemoteTicket`` names Botpress's conversation id, not ours: the sink resolves it.
"""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import authentication, exceptions, permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app.api import actions, contract
from sessions_app.api.auth import HasIntegration
from sessions_app.models import BotpressTransport, StoppedBy
from sessions_app.services.errors import NotFound
from sessions_app.services.integrations import integration_url_authenticate
from sessions_app.services.sessions import (
    message_relay_to_agent,
    session_for_botpress_conversation,
    session_start,
    session_stop,
)

# The hitl-api's remoteUserId for messages the bot itself sends.
BOT_USER = "BOT"
# A channel payload's type, told by its shape (the contract's botSendsMessage has no type).
PAYLOAD_TYPES = (("items", "bloc"), ("imageUrl", "image"), ("audioUrl", "audio"), ("videoUrl", "video"))
PAYLOAD_TYPES += (("fileUrl", "file"), ("text", "text"))


def _literal(value: str) -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=[value])


def _string(*, max_length: int = contract.TEXT_MAX, **kwargs) -> serializers.CharField:
    """A string as long as what stores it allows (``contract``'s limits), checked before any call."""
    return serializers.CharField(trim_whitespace=False, max_length=max_length, **kwargs)


# --- the documents' schemas, field for field ----------------------------------------------------
class CreateRemoteUserPayload(contract.ContractSerializer):
    type = _literal("createRemoteUser")
    payload = serializers.DictField(help_text="whatever user payload sent from Botpress")


class RemoteMessage(contract.ContractSerializer):
    text = _string(allow_blank=True)
    author = _string(required=False, allow_blank=True, max_length=contract.ID_MAX)
    timestamp = _string(required=False, allow_blank=True, max_length=contract.ID_MAX)


class RemoteConversation(contract.ContractSerializer):
    title = _string(required=False, allow_blank=True, max_length=contract.NAME_MAX)
    description = _string(required=False, allow_blank=True)
    messages = RemoteMessage(many=True, required=False)


class CreateRemoteConversationPayload(contract.ContractSerializer):
    type = _literal("createRemoteConversation")
    payload = RemoteConversation()


class RemoteTicket(contract.ContractSerializer):
    botpressConversationId = _string(max_length=contract.ID_MAX)


class CloseRemoteTicketPayload(contract.ContractSerializer):
    type = _literal("closeRemoteTicket")
    payload = RemoteTicket()


class BotSendsMessagePayload(contract.ContractSerializer):
    type = _literal("botSendsMessage")
    remoteConversationId = _string(
        max_length=contract.ID_MAX, help_text="The ID of the conversation on the live agent platform"
    )
    remoteUserId = _string(max_length=contract.ID_MAX, help_text="The ID of the chat-user on the live agent platform")
    payload = serializers.DictField(help_text="The message payload in the botpress format")


class CreateRemoteConversationResponse(contract.ContractSerializer):
    id = serializers.CharField(help_text="The ID of the conversation / ticket on the live agent platform")


class CreateRemoteUserResponse(contract.ContractSerializer):
    id = serializers.CharField(help_text="The ID of the chat-user on the live agent platform")


# --- authentication -----------------------------------------------------------------------------
class UrlSecretAuthentication(authentication.BaseAuthentication):
    """The secret in the URL; unknown integration and wrong secret give the same 401."""

    def authenticate(self, request):
        kwargs = request.parser_context["kwargs"]
        integration = integration_url_authenticate(
            integration_id=kwargs.get("integration_id", ""), secret=kwargs.get("secret", "")
        )
        if integration is None:
            raise exceptions.AuthenticationFailed()
        return (None, integration)

    def authenticate_header(self, request):
        return 'Path-Secret realm="hitl-gateway"'


class UsesHitlApi(permissions.BasePermission):
    message = "This integration does not reach Botpress through the hitl-api: set its transport to hitl_api."

    def has_permission(self, request, view):
        return request.auth.botpress_transport == BotpressTransport.HITL_API


class HitlApiView(APIView):
    authentication_classes = [UrlSecretAuthentication]
    permission_classes = [HasIntegration, UsesHitlApi]

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response._has_been_logged = True  # Django would log the path, which holds the secret
        return response

    def validated(self, serializer_class: type[serializers.Serializer], data: object = None, prefix: str = "") -> dict:
        serializer = serializer_class(data=self.request.data if data is None else data)
        if not serializer.is_valid():
            raise exceptions.ValidationError({prefix: serializer.errors} if prefix else serializer.errors)
        return serializer.validated_data


OK = {200: OpenApiResponse(description="`{}`")}


class PingApi(HitlApiView):
    @extend_schema(operation_id="hitlApiPing", request=None, responses=OK)
    def post(self, request, integration_id: str, secret: str):
        """Botpress checks, when the integration is saved, that the URL and its secret are right."""
        return Response({})


class CreateRemoteUserApi(HitlApiView):
    @extend_schema(
        operation_id="hitlApiCreateRemoteUser",
        request=CreateRemoteUserPayload,
        responses={200: CreateRemoteUserResponse},
    )
    def post(self, request, integration_id: str, secret: str):
        body = self.validated(CreateRemoteUserPayload)
        data = self.validated(contract.CreateUserInput, body["payload"], prefix="payload")
        return Response({"id": actions.create_user(request.auth, data)["userId"]})


class CreateRemoteConversationApi(HitlApiView):
    @extend_schema(
        operation_id="hitlApiCreateRemoteConversation",
        request=CreateRemoteConversationPayload,
        responses={200: CreateRemoteConversationResponse},
    )
    def post(self, request, integration_id: str, secret: str):
        payload = self.validated(CreateRemoteConversationPayload)["payload"]
        history = [
            {
                "source": {"type": "user", "userId": item["author"]} if item.get("author") else {"type": "bot"},
                "type": "text",
                "payload": {"text": item["text"]},
            }
            for item in payload.get("messages", [])
            if item["text"].strip()
        ]
        session = session_start(
            integration=request.auth,
            title=payload.get("title", ""),
            description=payload.get("description", ""),
            message_history=history,
        )
        return Response({"id": session.botpress_conversation_id})


class BotSendsMessageApi(HitlApiView):
    @extend_schema(operation_id="hitlApiBotSendsMessage", request=BotSendsMessagePayload, responses=OK)
    def post(self, request, integration_id: str, secret: str):
        body = self.validated(BotSendsMessagePayload)
        # payload.userId is Botpress's id of the author; remoteUserId is ours.
        payload = {key: value for key, value in body["payload"].items() if key != "userId"}
        kind = next((kind for key, kind in PAYLOAD_TYPES if key in payload), None)
        if kind is None:
            raise exceptions.ValidationError(
                {"payload": ["Not a message the hitl channel relays: text, image, audio, video, file or bloc."]}
            )
        message = self.validated(contract.ChannelMessage, {"type": kind, "payload": payload})
        message_relay_to_agent(
            integration=request.auth,
            conversation_id=body["remoteConversationId"],
            type=kind,
            payload=message["payload"],
            sender_user_id="" if body["remoteUserId"] == BOT_USER else body["remoteUserId"],
        )
        return Response({})


class CloseRemoteTicketApi(HitlApiView):
    @extend_schema(operation_id="hitlApiCloseRemoteTicket", request=CloseRemoteTicketPayload, responses=OK)
    def post(self, request, integration_id: str, secret: str):
        conversation_id = self.validated(CloseRemoteTicketPayload)["payload"]["botpressConversationId"]
        try:
            session = session_for_botpress_conversation(integration=request.auth, conversation_id=conversation_id)
        except NotFound as exc:
            raise NotFound(exc.message, field="payload.botpressConversationId") from None
        session_stop(
            session=session,
            stopped_by=StoppedBy.BOTPRESS,
            reason="closeRemoteTicket",
            close_ticket=True,
            notify_botpress=False,
        )
        return Response({})


@csrf_exempt
def hitl_api_not_found(request, integration_id: str, secret: str, rest: str = ""):
    """Any other path under the base URL: a plain 404, without Django logging the secret.

    CSRF-exempt like the endpoints beside it: Botpress posts without a cookie, and the CSRF
    failure would otherwise be logged with the path (and so the secret) before this view runs.
    """
    response = JsonResponse({"error": "not_found", "message": "No such hitl-api endpoint."}, status=404)
    response._has_been_logged = True
    return response
