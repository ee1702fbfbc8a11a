"""Jira Service Management's ``hitlSession`` entity: what a bot may set on the request it opens.

Values are checked here so that an error names the entity's field. Whether the request type
declares a field is only known to Jira: the adapter checks that when it creates the request
(``JsmProvider.ticket_create``) and names the field it refuses. Priorities are Jira's default
scheme's names [doc support.atlassian.com "What are priority levels in Jira"].
"""

from rest_framework import serializers

PRIORITIES = {"lowest": "Lowest", "low": "Low", "medium": "Medium", "high": "High", "highest": "Highest"}
# The values of Botpress's help-desk entities (Zendesk's ``low/normal/high/urgent``), so a bot
# written for another desk keeps working.
PRIORITIES |= {"normal": "Medium", "urgent": "Highest"}
MAX_LABELS = 20
MAX_LABEL_LENGTH = 255  # Jira's limit for one label
MAX_FIELDS = 50


class JsmHitlSessionSerializer(serializers.Serializer):
    priority = serializers.ChoiceField(choices=list(PRIORITIES), required=False)
    # Jira labels cannot contain spaces [doc support.atlassian.com "Use labels"].
    labels = serializers.ListField(
        child=serializers.RegexField(r"^\S+$", max_length=MAX_LABEL_LENGTH), required=False, max_length=MAX_LABELS
    )
    components = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=255), required=False, max_length=MAX_LABELS
    )
    # Any other field the request type declares, by Jira field id ("customfield_10010") with the
    # value in Jira's field input format [doc "Field input formats"].
    fields = serializers.DictField(required=False)
    chatbotName = serializers.CharField(required=False, min_length=1, max_length=255)
    chatbotPhotoUrl = serializers.URLField(required=False, max_length=255)

    def validate_fields(self, value):
        if len(value) > MAX_FIELDS:
            raise serializers.ValidationError(f"At most {MAX_FIELDS} fields.")
        for key in value:
            if key in ("summary", "description"):
                raise serializers.ValidationError(f"{key!r}: set by the gateway from the title and the transcript.")
            if not (key.startswith("customfield_") and key[12:].isdigit()) and not key.isidentifier():
                raise serializers.ValidationError(f"{key!r}: not a Jira field id.")
        return value
