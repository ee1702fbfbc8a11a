"""Zendesk's ``hitlSession`` entity, as Botpress's own Zendesk integration (``hitlTicket``) defines it."""

from rest_framework import serializers


class ZendeskHitlSessionSerializer(serializers.Serializer):
    priority = serializers.ChoiceField(choices=["low", "normal", "high", "urgent"], required=False)
    chatbotName = serializers.CharField(required=False, min_length=1, max_length=255)
    chatbotPhotoUrl = serializers.URLField(required=False, max_length=255)
    requesterName = serializers.CharField(required=False, min_length=1, max_length=255)
    requesterEmail = serializers.EmailField(required=False)
    ticketFormId = serializers.RegexField(r"^\d+$", required=False, max_length=20)

    def validate(self, attrs):
        # Zendesk only creates a requester from an email together with a name.
        if "requesterEmail" in attrs and "requesterName" not in attrs:
            raise serializers.ValidationError({"requesterName": "Required when requesterEmail is given."})
        return attrs
