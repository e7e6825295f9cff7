"""The key of a namespace whose configuration names none: made up at random, never a public one.

The official emulator's well-known ``SAS_KEY_VALUE`` is in every tutorial, so anyone who can
reach the port would hold the root key. A namespace without ``SharedAccessPolicies`` gets
``RootManageSharedAccessKey`` with a random key instead, the same for every namespace of the
process; the CLI prints it in the connection strings. With ``--data-dir`` it is kept in
``<data dir>/generated-key`` (mode 0600) so that clients keep working across restarts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["KEY_FILE", "current", "use_data_dir", "was_generated"]

KEY_FILE = "generated-key"
_key: str | None = None
_used = False


def current() -> str:
    """The made-up key (created on first use); marks it as used."""
    global _key, _used
    if _key is None:
        _key = secrets.token_urlsafe(32)
    _used = True
    return _key


def was_generated() -> bool:
    """Whether some namespace got the made-up key (the CLI then says so)."""
    return _used


def use_data_dir(path: Path) -> None:
    """Keep the made-up key in ``path`` (an opened data dir): reuse the stored one, else store it."""
    global _key
    file = path / KEY_FILE
    try:
        stored = file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        stored = ""
    if stored:
        _key = stored
        return
    if _key is None:
        _key = secrets.token_urlsafe(32)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(_key + "\n")
