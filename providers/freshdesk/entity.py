"""Freshdesk's ``hitlSession`` entity: what a bot may set on the ticket it opens.

Values are checked here so that an error names the entity's field, not Freshdesk's. Ticket
priorities are 1 Low, 2 Medium, 3 High, 4 Urgent [doc developers.freshdesk.com/api, tickets];
custom fields are keyed by their API name (``cf_...``); tags are strings.
"""

from rest_framework import serializers

PRIORITIES = {"low": 1, "medium": 2, "high": 3, "urgent": 4}
MAX_TAGS = 20
MAX_TAG_LENGTH = 32  # *(inferred)* the length Freshdesk accepts for one tag
MAX_CUSTOM_FIELDS = 50


class FreshdeskHitlSessionSerializer(serializers.Serializer):
    priority = serializers.ChoiceField(choices=list(PRIORITIES), required=False)
    groupId = serializers.RegexField(r"^\d+$", required=False, max_length=20)
    type = serializers.CharField(required=False, min_length=1, max_length=255)
    tags = serializers.ListField(
        child=serializers.RegexField(r"^[^,]+$", max_length=MAX_TAG_LENGTH),
        required=False,
        max_length=MAX_TAGS,
    )
    customFields = serializers.DictField(required=False)
    chatbotName = serializers.CharField(required=False, min_length=1, max_length=255)
    chatbotPhotoUrl = serializers.URLField(required=False, max_length=255)

    def validate_customFields(self, value):
        if len(value) > MAX_CUSTOM_FIELDS:
            raise serializers.ValidationError(f"At most {MAX_CUSTOM_FIELDS} custom fields.")
        for key, item in value.items():
            if not key.startswith("cf_") or not key[3:].replace("_", "").isalnum():
                raise serializers.ValidationError(f"{key!r}: a custom field's API name starts with 'cf_'.")
            if item is not None and not isinstance(item, str | int | float | bool):
                raise serializers.ValidationError(f"{key!r}: must be a string, number, boolean or null.")
        return value
