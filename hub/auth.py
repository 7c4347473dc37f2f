"""The hub's bearer token: where it comes from, and checking it in constant time."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

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


CLIENT_TOKENS_FILE = "client_tokens.json"
#: Client tokens start with this, so a leaked one is recognisable (and never mistaken for the admin token).
CLIENT_TOKEN_PREFIX = "aihc_"  # noqa: S105 - a prefix, not a secret


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ClientTokens:
    """Tokens that only connect a workspace (no REST), stored hashed in ``home/client_tokens.json``.

    ``aihub token create --name laptop`` prints a token once; the file keeps its
    sha256 only. The file is read again when it changes, so a revocation takes
    effect for the next connection without restarting the hub.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / CLIENT_TOKENS_FILE
        self._seen: tuple[int, int] | None = None
        self._entries: list[dict[str, Any]] = []

    def entries(self) -> list[dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._entries = None, []
            return []
        if self._seen != (stat.st_mtime_ns, stat.st_size):
            data = json.loads(self.path.read_text(encoding="utf-8") or '{"tokens": []}')
            tokens = data.get("tokens", []) if isinstance(data, dict) else []
            self._entries = [t for t in tokens if isinstance(t, dict) and isinstance(t.get("sha256"), str)]
            self._seen = (stat.st_mtime_ns, stat.st_size)
        return list(self._entries)

    def match(self, header: str | None) -> str | None:
        """The name of the client token an ``Authorization`` header carries, else None."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value.startswith(CLIENT_TOKEN_PREFIX):
            return None
        digest = _digest(value).encode("ascii")
        try:
            entries = self.entries()
        except (OSError, ValueError):
            return None  # an unreadable file lets nobody in
        found = None
        for entry in entries:  # every entry compared, in constant time each
            if hmac.compare_digest(digest, str(entry["sha256"]).encode("ascii")):
                found = str(entry.get("name", "?"))
        return found

    def _save(self, entries: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{CLIENT_TOKENS_FILE}.{secrets.token_hex(8)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"tokens": entries}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)

    def create(self, name: str) -> str:
        if any(e.get("name") == name for e in self.entries()):
            raise ValueError(f"a client token named {name!r} exists: revoke it first")
        token = CLIENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
        entry = {"name": name, "sha256": _digest(token), "created_at": time.time()}
        self._save([*self.entries(), entry])
        return token

    def revoke(self, name: str) -> bool:
        entries = self.entries()
        kept = [e for e in entries if e.get("name") != name]
        if len(kept) == len(entries):
            return False
        self._save(kept)
        return True
