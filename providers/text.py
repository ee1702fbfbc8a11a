"""Text from a help desk, made storable: PostgreSQL's ``text``/``jsonb`` refuse some code points.

PostgreSQL stores no NUL character (``invalid byte sequence for encoding "UTF8": 0x00``, and
jsonb rejects ``\\u0000``), and UTF-8 cannot encode a surrogate code point, which a JSON body can
still carry as an unpaired ``\\ud800`` escape (RFC 8259 section 8.2 allows it; Python's ``json``
decodes it to a lone surrogate). One such character made a whole webhook fail for good, so every
string a help desk sends passes through here before it is stored or relayed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _pair_join(match: re.Match) -> str:
    high, low = (ord(c) for c in match.group())
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def text_sanitize(value: str) -> str:
    """``value`` without NUL characters, and with every unpaired surrogate replaced by U+FFFD.

    A surrogate pair left as two code points (``"\\ud83d\\ude00"`` built by hand) is joined into
    the character it encodes. Strings without such characters are returned as they are.
    """
    if not _UNSTORABLE.search(value):
        return value
    value = _SURROGATE_PAIR.sub(_pair_join, value.replace("\x00", ""))
    return re.sub("[\ud800-\udfff]", "\ufffd", value)


def value_sanitize(value: T) -> T:
    """``value`` with ``text_sanitize`` applied to every string in it, however deeply nested.

    Walks dataclasses (rebuilt with ``dataclasses.replace``, so frozen ones work and fields
    added later are covered without a change here), lists, tuples, and mappings (keys too);
    other values are returned unchanged.
    """
    if isinstance(value, str):
        return text_sanitize(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: value_sanitize(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    if isinstance(value, list):
        return [value_sanitize(item) for item in value]
    if isinstance(value, tuple):
        items = (value_sanitize(item) for item in value)
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, Mapping):
        return {value_sanitize(key): value_sanitize(item) for key, item in value.items()}
    return value


def bytes_sanitize(body: bytes) -> str:
    """A raw body as storable text: invalid UTF-8 becomes U+FFFD, then ``text_sanitize``."""
    return text_sanitize(body.decode("utf-8", errors="replace"))
