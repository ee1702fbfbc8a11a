"""Keys the embedded default makes for itself, so ``make run`` needs no set-up and no key is shared.

A key is generated once, on first start, into a file of ``var/`` readable by its owner only
(mode 0600), and read back on every later start by every process (web workers, Celery).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def local_key(path: Path, *, make=lambda: secrets.token_urlsafe(50)) -> str:
    """The key stored at ``path``, made by ``make()`` and stored first if there is none.

    Safe when several processes start at once: the key is written to a private temporary file
    that is then hard-linked into place, which fails if another process got there first (its
    key is then read). Raises OSError when ``path``'s folder cannot be written.
    """
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(make() + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text().strip()
