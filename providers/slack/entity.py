"""Slack's ``hitlSession`` entity: what a bot may set on the thread it opens.

Slack has no ticket fields, so the entity only shapes the root message: a priority shown on
it (and kept in its metadata), and the bot's display name and picture for the bot's posts.
"""

from rest_framework import serializers

# Slack only shows the priority, so both help desks' words are taken (Zendesk says "normal",
# Freshdesk "medium"): a bot moved from one to Slack keeps working.
PRIORITIES = ("low", "normal", "medium", "high", "urgent")
PRIORITY_EMOJI = {
    "low": ":white_circle:",
    "normal": ":large_blue_circle:",
    "medium": ":large_blue_circle:",
    "high": ":large_orange_circle:",
    "urgent": ":red_circle:",
}


class SlackHitlSessionSerializer(serializers.Serializer):
    priority = serializers.ChoiceField(choices=list(PRIORITIES), required=False)
    chatbotName = serializers.CharField(required=False, min_length=1, max_length=80)
    chatbotPhotoUrl = serializers.URLField(required=False, max_length=255)
