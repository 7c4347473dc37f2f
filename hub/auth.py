"""The hub's bearer token: where it comes from, and checking it in constant time."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

from schemas.protocol import TOKEN_FILE


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def load_or_create_token(home: Path) -> tuple[str, str]:
    """``AIHUB_TOKEN`` if set, else ``home/token``, created with mode 0600 on first use.

    Never returns an empty token: an empty token file is replaced by a new token.
    Returns the token and where it came from (for the start-up line).
    """
    if token := os.environ.get("AIHUB_TOKEN", "").strip():
        return token, "AIHUB_TOKEN"
    path = home / TOKEN_FILE
    if token := _read_token(path):
        return token, str(path)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: a reader
    # never sees half a token, and of two hubs starting at once the first one wins.
    temporary = home / f".{TOKEN_FILE}.{secrets.token_hex(8)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            if not _read_token(path):  # an empty file left behind: replace it
                os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    token = _read_token(path)
    if not token:
        raise OSError(f"{path} is empty")
    return token, str(path)


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token``, compared in constant time."""
    if not header or not token:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8"), token.encode("utf-8"))
