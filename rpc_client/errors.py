"""Failures that end the client, each with its own exit status (as click does).

The CLI prints ``aihub-client: <message>`` and exits with ``exit_code``; no
traceback is shown for any of them.
"""

from __future__ import annotations


class ClientExit(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ClientExit):
    exit_code = 2


class BadRoot(ClientExit):
    exit_code = 3


class AuthRefused(ClientExit):
    exit_code = 4


class HandshakeRefused(ClientExit):
    exit_code = 5


class TlsRefused(ClientExit):
    """The hub's certificate is not trusted: retrying cannot help."""

    exit_code = 6
