"""Session tokens: a client that reconnects gets its workspace (and its id) back.

A token is ``<workspace id>.<HMAC-SHA256 of it>`` under a secret kept in
``$AIHUB_HOME/session_secret`` (mode 0600), so it stays valid across hub
restarts without the hub storing sessions: a conversation keeps pointing at the
same workspace id. Only the client that was given a token can present it (it
travels over the same authenticated connection as everything else).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = "session_secret"  # noqa: S105 - a file name


def _load_or_create_secret(home: Path) -> bytes:
    path = home / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = home / f".{SECRET_FILE}.{secrets.token_hex(8)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(temporary, path)  # of two hubs starting at once, the first one wins
        except FileExistsError:
            if len(path.read_bytes()) < 32:
                os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return path.read_bytes()


class SessionSigner:
    def __init__(self, home: Path) -> None:
        self._secret = _load_or_create_secret(home)

    def _mac(self, workspace_id: str) -> str:
        return hmac.new(self._secret, workspace_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def issue(self, workspace_id: str) -> str:
        return f"{workspace_id}.{self._mac(workspace_id)}"

    def verify(self, token: object) -> str | None:
        """The workspace id a token was issued for, or None for anything else."""
        if not isinstance(token, str) or len(token) > 200:
            return None
        workspace_id, dot, mac = token.rpartition(".")
        if not dot or not workspace_id:
            return None
        # As bytes: compare_digest raises TypeError for a str with non-ASCII text (the token is the client's).
        expected = self._mac(workspace_id).encode("ascii")
        return workspace_id if hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), expected) else None
