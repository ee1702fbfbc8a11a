"""The Botpress HITL interface (v2.1.0) as serializers: field for field, required for required.

Non-empty strings (``minLength 1`` in the interface) are ``CharField(allow_blank=False)``;
``additionalData`` is at most 500 characters, the runtime's message-tag size.

Every string has a ``max_length`` (served in the OpenAPI and the definition as ``maxLength``),
checked before any call to Botpress or the help desk, so nothing too long for the database is
accepted, half-applied, and then refused with a 500:

- ids (``ID_MAX``): the ``CharField(max_length=64)`` columns that store Botpress's user,
  conversation and message ids;
- ``name``/``title`` 255, ``email`` 254, URLs 2048: the model columns they are stored in;
- free text (``TEXT_MAX``: message text, markdown, the ticket description, media titles, card
  and choice labels): 64,000 characters. It becomes the body of a help-desk comment, and Zendesk
  refuses comments over about 65,000 characters (support.zendesk.com community post
  4719863289498); the margin leaves room for the author line the gateway adds.
"""

from __future__ import annotations

import copy
import functools

from rest_framework import serializers

ID_MAX = 64
NAME_MAX = 255
EMAIL_MAX = 254
URL_MAX = 2048
TEXT_MAX = 64_000


# Field types that keep nothing per request: after __init__ their validators, choices and error
# messages are only read, and bind() sets its attributes on the copy itself.
_LEAF_FIELDS = (
    serializers.BooleanField,
    serializers.CharField,
    serializers.ChoiceField,
    serializers.FloatField,
    serializers.IntegerField,
)


class ContractSerializer(serializers.Serializer):
    """A serializer that copies its leaf fields shallowly for each instance.

    Why: DRF deep-copies every declared field for every serializer instance, running each
    field's ``__init__`` again; a py-spy profile of the gateway under ``make bench`` found that
    copy to be about a sixth of the web tier's CPU per bot message (``channels/hitl/messages``
    builds the message serializer, then its payload's). A leaf field's state is read-only once
    built, so a shallow copy validates alike and stays independent where it matters (its own
    binding, label and attributes); nested serializers and container fields (``DictField``,
    ``many=True``) are still deep-copied, as DRF does.
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            name: copy.copy(field) if isinstance(field, _LEAF_FIELDS) else copy.deepcopy(field)
            for name, field in self._declared_fields.items()
        }


def _text(*, max_length: int = TEXT_MAX, **kwargs) -> serializers.CharField:
    return serializers.CharField(trim_whitespace=False, max_length=max_length, **kwargs)


def _optional_text(max_length: int = TEXT_MAX) -> serializers.CharField:
    return _text(required=False, allow_blank=True, max_length=max_length)


def _id(**kwargs) -> serializers.CharField:
    return _text(max_length=ID_MAX, **kwargs)


class TextPayload(ContractSerializer):
    text = _text()


class MarkdownPayload(ContractSerializer):
    markdown = _text()


def _media(url_field: str) -> type[serializers.Serializer]:
    fields = {url_field: _text(max_length=URL_MAX), "title": _optional_text()}
    return type(f"{url_field[:-3].capitalize()}Payload", (ContractSerializer,), fields)


ImagePayload, AudioPayload = _media("imageUrl"), _media("audioUrl")
VideoPayload, FilePayload = _media("videoUrl"), _media("fileUrl")


class LocationPayload(ContractSerializer):
    latitude = serializers.FloatField(min_value=-90, max_value=90)
    longitude = serializers.FloatField(min_value=-180, max_value=180)
    address = _optional_text()
    title = _optional_text()


class CardAction(ContractSerializer):
    action = serializers.ChoiceField(choices=["postback", "url", "say"])
    label = _text()
    value = _text()


class CardPayload(ContractSerializer):
    title = _text()
    subtitle = _optional_text()
    imageUrl = _optional_text(URL_MAX)
    actions = CardAction(many=True)


class ChoiceOption(ContractSerializer):
    label = _text()
    value = _text()


class ChoicePayload(ContractSerializer):
    text = _text()
    options = ChoiceOption(many=True)


class CarouselPayload(ContractSerializer):
    items = CardPayload(many=True)


class TypedPayloadSerializer(ContractSerializer):
    """``{type, payload}`` where the payload's schema depends on the type."""

    PAYLOADS: dict[str, type[serializers.Serializer]] = {}

    @classmethod
    @functools.cache
    def _type_field(cls) -> serializers.ChoiceField:
        """The ``type`` field, built once per class and copied per instance (a ``Field`` class
        attribute would be declared, and come before the subclass's own fields)."""
        return serializers.ChoiceField(choices=list(cls.PAYLOADS))

    def get_fields(self):
        fields = super().get_fields()
        fields["type"] = copy.copy(self._type_field())
        fields["payload"] = serializers.DictField()
        return fields

    def validate(self, attrs):
        payload = self.PAYLOADS[attrs["type"]](data=attrs["payload"])
        if not payload.is_valid():
            raise serializers.ValidationError({"payload": payload.errors})
        attrs["payload"] = dict(payload.validated_data)
        return attrs


class BlocItem(TypedPayloadSerializer):
    PAYLOADS = {
        "text": TextPayload,
        "image": ImagePayload,
        "audio": AudioPayload,
        "video": VideoPayload,
        "file": FilePayload,
        "location": LocationPayload,
        "markdown": MarkdownPayload,
    }


class BlocPayload(ContractSerializer):
    items = BlocItem(many=True, allow_empty=False)

    def validate_items(self, items):
        return [dict(item) for item in items]


def _channel(payload: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """A channel payload: the type's fields plus the optional real author and additional data."""
    fields = {"userId": _id(required=False), "additionalData": _text(required=False, max_length=500)}
    return type(f"Channel{payload.__name__}", (payload,), fields)


CHANNEL_PAYLOADS = {
    "text": _channel(TextPayload),
    "image": _channel(ImagePayload),
    "audio": _channel(AudioPayload),
    "video": _channel(VideoPayload),
    "file": _channel(FilePayload),
    "bloc": _channel(BlocPayload),
}

HISTORY_PAYLOADS = {
    "text": TextPayload,
    "image": ImagePayload,
    "audio": AudioPayload,
    "video": VideoPayload,
    "file": FilePayload,
    "location": LocationPayload,
    "carousel": CarouselPayload,
    "card": CardPayload,
    "dropdown": ChoicePayload,
    "choice": ChoicePayload,
    "bloc": BlocPayload,
    "markdown": MarkdownPayload,
}


class HistorySource(ContractSerializer):
    type = serializers.ChoiceField(choices=["user", "bot"])
    userId = _id(required=False)

    def validate(self, attrs):
        if attrs["type"] == "user" and not attrs.get("userId"):
            raise serializers.ValidationError({"userId": "Required when type is user."})
        return attrs


class HistoryElement(TypedPayloadSerializer):
    PAYLOADS = HISTORY_PAYLOADS
    source = HistorySource()


class ChannelMessage(TypedPayloadSerializer):
    PAYLOADS = CHANNEL_PAYLOADS


# --- actions ---------------------------------------------------------------------------------
class CreateUserInput(ContractSerializer):
    name = _text(max_length=NAME_MAX)
    pictureUrl = _text(required=False, max_length=URL_MAX)
    email = serializers.EmailField(required=False, max_length=EMAIL_MAX)


class CreateUserOutput(ContractSerializer):
    userId = serializers.CharField()


class StartHitlInput(ContractSerializer):
    userId = _id()
    title = _optional_text(NAME_MAX)
    description = _optional_text()
    hitlSession = serializers.DictField(required=False)
    messageHistory = HistoryElement(many=True, allow_empty=True)

    def __init__(self, *args, entity_serializer: type[serializers.Serializer] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.entity_serializer = entity_serializer

    def validate_hitlSession(self, value):
        if self.entity_serializer is None:
            return value
        entity = self.entity_serializer(data=value)
        entity.is_valid(raise_exception=True)
        return dict(entity.validated_data)

    def validate_messageHistory(self, items):
        return [{"source": dict(i["source"]), "type": i["type"], "payload": i["payload"]} for i in items]


class StartHitlOutput(ContractSerializer):
    conversationId = serializers.CharField()


class StopHitlInput(ContractSerializer):
    conversationId = _id()


class ChannelMessageInput(ChannelMessage):
    conversationId = _id()
    messageId = _id(required=False, help_text="Botpress message id; the same id twice is relayed once.")
    userId = _id(required=False, help_text="The Botpress user who sent the message (usually the bot).")


class ChannelMessageOutput(ContractSerializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    duplicate = serializers.BooleanField()
