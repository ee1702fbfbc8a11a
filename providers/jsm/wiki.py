"""An agent's comment (Jira wiki text) as ordered message parts.

Jira's platform API v2 returns comment bodies as wiki markup, where a comment's files are
named, not linked: ``!name.png!`` or ``!name.png|thumbnail!`` shows an image, ``[^name.pdf]``
links a file [doc jira.atlassian.com "Text Formatting Notation Help"]. The files themselves are
the issue's ``fields.attachment`` (``filename``, ``content`` URL, ``mimeType``), so a reference
is resolved by file name; one the issue does not have stays as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from providers.base import MessagePart

# !name!, !name|options!  and  [^name]
_REFERENCE = re.compile(r"!(?P<image>[^!\s|][^!|\n]*?)(?:\|[^!\n]*)?!|\[\^(?P<file>[^\]\n]+)\]")


def wiki_file_names(body: str) -> set[str]:
    """The file names a comment refers to (``!name!``, ``[^name]``), whether or not they exist."""
    return {(m.group("image") or m.group("file") or "").strip() for m in _REFERENCE.finditer(body)} - {""}


def wiki_to_parts(body: str, attachments: Mapping[str, Mapping]) -> list[MessagePart]:
    """Text and media in the order the agent wrote them; blank text pieces are dropped."""
    parts: list[MessagePart] = []
    position = 0

    def text(piece: str) -> None:
        piece = piece.replace("\r\n", "\n").strip()
        if piece:
            parts.append(MessagePart(kind="text", text=piece))

    for match in _REFERENCE.finditer(body):
        name = (match.group("image") or match.group("file") or "").strip()
        attachment = attachments.get(name)
        url = str((attachment or {}).get("content") or "")
        if attachment is None or urlsplit(url).scheme.lower() not in ("http", "https"):
            continue  # not one of the files: left in the text
        text(body[position : match.start()])
        parts.append(
            MessagePart(
                kind="media",
                url=url,
                filename=name,
                content_type=str(attachment.get("mimeType") or ""),
            )
        )
        position = match.end()
    text(body[position:])
    return parts
