"""The Slack app manifest for one integration: creating the app is "paste this manifest".

Manifest schema [doc docs.slack.dev/reference/app-manifest]: ``display_information``,
``features.bot_user``, ``oauth_config.scopes.bot``, ``settings.event_subscriptions``
(``request_url``, ``bot_events``), ``settings.interactivity`` (``is_enabled``,
``request_url``). Both URLs are the integration's webhook URL: the gateway tells events (JSON)
from button presses (a form) by their content type.
"""

from __future__ import annotations

import json

BOT_SCOPES = (
    "chat:write",  # root messages, thread replies, chat.update, chat.postEphemeral
    "chat:write.customize",  # username/icon_url: the end user's or the bot's name and picture
    "channels:history",  # message events and conversations.history/replies in a public channel
    "groups:history",  # the same for a private channel
    "channels:read",  # conversations.info at set-up
    "groups:read",
    "users:read",  # users.info: the agent's name and picture
    "users:read.email",  # and their e-mail
    "files:read",  # downloading an agent's file (url_private) to re-host it
    "files:write",  # files.getUploadURLExternal / files.completeUploadExternal
    "reactions:read",  # reaction_added (the ✅ that closes a session)
)
BOT_EVENTS = ("message.channels", "message.groups", "reaction_added")


def app_manifest(*, url: str, name: str = "Botpress HITL") -> dict:
    return {
        "display_information": {
            "name": name[:35],
            "description": "Hands Botpress conversations to the agents in this channel, one thread per conversation.",
        },
        "features": {"bot_user": {"display_name": name[:80], "always_online": True}},
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "event_subscriptions": {"request_url": url, "bot_events": list(BOT_EVENTS)},
            "interactivity": {"is_enabled": True, "request_url": url},
            "org_deploy_enabled": False,
            "socket_mode_enabled": False,
            "token_rotation_enabled": False,
        },
    }


def instructions(*, url: str) -> str:
    manifest = json.dumps(app_manifest(url=url), indent=2)
    return (
        "\n".join(
            [
                "Create the Slack app from this manifest:",
                "1. https://api.slack.com/apps > Create New App > From a manifest > pick the workspace.",
                "2. Paste the JSON below (it fills in the scopes, the bot events and both request URLs).",
                "3. Install to Workspace; copy the Bot User OAuth Token (xoxb-...) and, from Basic",
                "   Information, the Signing Secret into the integration's credentials.",
                "4. In the agents' channel type /invite @Botpress HITL (the bot must be a member), and",
                "   copy the channel id (channel details, bottom) into the integration's credentials.",
                "5. Install the webhook (admin action or create_integration --install-webhook): it",
                "   checks the token (auth.test) and the channel (conversations.info).",
                "",
                manifest,
            ]
        )
        + "\n"
    )
