"""Plain-text rendering of every Botpress message type, shared by all help desks.

Used for the ticket transcript of ``messageHistory`` and for message parts a help desk cannot
show natively. Botpress's own builder prints only ``[ Bloc ]`` and ``[ Carousel ]``; agents
asked for the whole conversation (botpress#13304, #13810), so here every part is rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

SEPARATOR = "\n\n---\n\n"
MEDIA = {
    "image": ("Image", "imageUrl"),
    "audio": ("Audio", "audioUrl"),
    "video": ("Video", "videoUrl"),
    "file": ("File", "fileUrl"),
}


def render_payload(kind: str, payload: Mapping) -> str:
    """One message as plain text."""
    if kind == "text":
        return str(payload.get("text", "")).replace("\r\n", "\n").strip()
    if kind == "markdown":
        return str(payload.get("markdown", "")).replace("\r\n", "\n").strip()
    if kind in MEDIA:
        label, key = MEDIA[kind]
        title = payload.get("title")
        return f"[ {label}{': ' + title if title else ''} ] {payload.get(key, '')}"
    if kind == "location":
        lines = [
            "[ Location ]",
            payload.get("title", ""),
            payload.get("address", ""),
            f"{payload.get('latitude')}, {payload.get('longitude')}",
        ]
        return "\n".join(line for line in lines if line)
    if kind in ("choice", "dropdown"):
        options = "\n".join(f'- "{o.get("label", "")}" ({o.get("value", "")})' for o in payload.get("options", []))
        return f"{payload.get('text', '')}\n[ Choice options ]\n{options}".strip()
    if kind == "card":
        return _card(payload)
    if kind == "carousel":
        return "[ Carousel ]\n" + "\n\n".join(_card(card) for card in payload.get("items", []))
    if kind == "bloc":
        return "\n".join(
            render_payload(item.get("type", ""), item.get("payload", {})) for item in payload.get("items", [])
        )
    return f"[ {kind} ]"


def _card(card: Mapping) -> str:
    lines = [f'[ Card: "{card.get("title", "")}" ]', card.get("subtitle", ""), card.get("imageUrl", "")]
    lines += [f"- {a.get('label', '')} ({a.get('action', '')}: {a.get('value', '')})" for a in card.get("actions", [])]
    return "\n".join(line for line in lines if line)


def transcript_render(history: list[Mapping], *, user_name: Callable[[str], str], bot_name: str) -> str:
    entries = []
    for item in history:
        source = item.get("source", {})
        header = f"🤖 {bot_name}" if source.get("type") == "bot" else f"👤 {user_name(source.get('userId', ''))}"
        entries.append(f"{header}:\n{render_payload(item.get('type', ''), item.get('payload', {}))}")
    return SEPARATOR.join(entries)
