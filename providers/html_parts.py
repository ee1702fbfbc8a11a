"""Help-desk HTML to what an end user can read: Markdown text and media, in the agent's order.

Help desks hand agents' replies over as HTML (Zendesk ``latest_public_comment_html``, Freshdesk
``body``, JSM's rendered comment). Botpress webchat renders Markdown in text messages, so the
text keeps its meaning as Markdown: links become ``[label](url)`` (a link whose label is its URL
appears once, bare), lists become ``- item`` / ``1. item``, paragraphs stay separated by a blank
line and ``<br>`` by a line break. ``style``, ``script``, ``head`` and comments are dropped;
entities are decoded exactly once (``&amp;lt;`` gives ``&lt;``). Each ``<img>`` ends the text
before it and becomes a media part, so text and images keep the order the agent wrote them in.

Built on the standard library's ``html.parser`` (a tolerant tokenizer, PSF licence): the
conversion needs to split the text at images, which the Markdown converters on PyPI do not
offer, and it adds no dependency to a service others ship.
"""

from __future__ import annotations

import mimetypes
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

from providers.base import MessagePart, filename_from_url

_SKIPPED = frozenset({"style", "script", "head", "title", "template", "noscript", "svg", "math"})
_PARAGRAPH = frozenset(
    {"p", "blockquote", "pre", "table", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "ul", "ol", "dl", "figure"}
)
_LINES = frozenset({"div", "tr", "section", "article", "header", "footer", "li", "dt", "dd", "address", "figcaption"})
_TAG = re.compile(r"<[A-Za-z/!?]")
_LINK_SCHEMES = ("http", "https", "mailto", "tel")
# Paragraph (blank line), line-break and list-indent markers, resolved once the whole fragment is read
# (NUL never survives in the text itself: it is removed from the input).
_PARA, _LINE_END, _BREAK, _INDENT = "\x00P", "\x00L", "\x00B", "\x00I"


def media_kind(content_type: str, filename: str = "") -> str:
    """The Botpress message type for a file: ``image``, ``audio``, ``video``, else ``file``.

    By the MIME type when it is specific, else guessed from the file name's extension.
    """
    content_type = (content_type or "").split(";")[0].strip().lower()
    if not content_type or content_type in ("application/octet-stream", "application/binary"):
        content_type = mimetypes.guess_type(filename or "")[0] or ""
    major = content_type.split("/")[0]
    return major if major in ("image", "audio", "video") else "file"


class _Converter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[MessagePart] = []
        self.out: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.lists: list[list] = []  # one [kind, counter] per open list
        self.links: list[tuple[str, int]] = []  # (href, position in out) per open <a>

    # --- tokens ----------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skip_depth += 1
            return
        if self.skip_depth:
            return
        attributes = {name: (value or "").replace("\x00", "") for name, value in attrs}
        if tag == "br":
            self.out.append(_BREAK)
        elif tag == "img":
            self._image(attributes)
        elif tag == "a":
            self.links.append((attributes.get("href", "").strip(), len(self.out)))
        elif tag in ("ul", "ol"):
            self.out.append(_PARA if not self.lists else _LINE_END)
            self.lists.append([tag, 0])
        elif tag == "li":
            self.out.append(_LINE_END)
            if self.lists:
                current = self.lists[-1]
                current[1] += 1
                bullet = f"{current[1]}. " if current[0] == "ol" else "- "
                self.out.append(_INDENT * (len(self.lists) - 1) + bullet)
        elif tag in _PARAGRAPH:
            self.out.append(_PARA)
            if tag == "pre":
                self.pre_depth += 1
        elif tag in _LINES:
            self.out.append(_LINE_END)
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "img", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if tag == "a" and self.links:
            self._link_close(*self.links.pop())
        elif tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self.out.append(_PARA if not self.lists else _LINE_END)
        elif tag in _PARAGRAPH:
            self.out.append(_PARA)
            if tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)
        elif tag in _LINES:
            self.out.append(_LINE_END)

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        data = data.replace("\x00", "")
        if self.pre_depth:
            self.out.append(data.replace("\r\n", "\n"))  # kept as written, spaces included
        else:
            self.out.append(_collapse(data))

    # --- pieces ----------------------------------------------------------------------------
    def _link_close(self, href: str, start: int) -> None:
        label = _collapse(re.sub(r"\x00[PLBI]", " ", "".join(self.out[start:]))).strip()
        if urlsplit(href).scheme.lower() not in _LINK_SCHEMES:
            return  # no URL worth keeping (relative, javascript:, anchors): the label stays as is
        del self.out[start:]
        if not label or _same_url(label, href):
            self.out.append(href)
        else:
            self.out.append(f"[{_escape_label(label)}]({_escape_url(href)})")

    def _image(self, attributes: dict[str, str]) -> None:
        src = attributes.get("src", "").strip()
        if urlsplit(src).scheme.lower() not in ("http", "https"):
            return  # data: and relative images cannot be fetched or opened by the end user
        self._flush()
        alt = _collapse(attributes.get("alt", "")).strip()
        self.parts.append(MessagePart(kind="media", url=src, filename=filename_from_url(src), alt=alt))

    def _flush(self) -> None:
        text = _render("".join(self.out))
        self.out = []
        if text:
            self.parts.append(MessagePart(kind="text", text=text))

    def finish(self) -> list[MessagePart]:
        self.close()
        while self.links:  # an <a> never closed still keeps its URL
            self._link_close(*self.links.pop())
        self._flush()
        return self.parts


def _collapse(text: str) -> str:
    """HTML's white space (not Unicode's: a non-breaking space stays) collapsed to one space."""
    return re.sub(r"[ \t\r\n\f]+", " ", text)


def _render(raw: str) -> str:
    """Resolve the markers into newlines and indents, and tidy the spacing around them."""
    text = re.sub(r" *(\x00[PLB]) *", r"\1", raw)
    text = re.sub(r"(?:\x00[PLB])+", _breaks, text).replace(_INDENT, "  ")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _breaks(match: re.Match[str]) -> str:
    """A paragraph gives a blank line; block ends merge into one line break; each ``<br>`` counts."""
    run = match.group(0)
    if _PARA in run:
        return "\n\n"
    return "\n" * min(2, max(run.count(_BREAK), 1))


def _same_url(label: str, href: str) -> bool:
    def norm(url: str) -> str:
        url = re.sub(r"^(mailto:|tel:|https?://)", "", url.strip().lower())
        return url.rstrip("/")

    return norm(label) == norm(href)


def _escape_label(label: str) -> str:
    return re.sub(r"([\[\]\\])", r"\\\1", label)


def _escape_url(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def html_to_parts(markup: str) -> list[MessagePart]:
    """Text and media parts of an HTML fragment, in document order; empty text is left out.

    Never raises on malformed markup: the parser is tolerant, unclosed tags simply end with the
    input. A fragment without any tag is plain text, whose line breaks are kept. Media parts
    carry the ``src``, a file name and the ``alt`` text; their content type is unknown until
    they are downloaded.
    """
    markup = markup or ""
    if not _TAG.search(markup):
        markup = markup.replace("\r\n", "\n").replace("\n", "<br>")
    converter = _Converter()
    converter.feed(markup)
    return converter.finish()


def html_to_text(markup: str) -> str:
    """The text of an HTML fragment as Markdown (images left out), as ``html_to_parts`` renders it."""
    return "\n\n".join(part.text for part in html_to_parts(markup) if part.kind == "text")
