"""The file tools: list_files, read_files, write_file, on top of the sandbox.

Each function is synchronous (the dispatcher runs it in a worker thread so a
large read never holds up other requests), takes validated params and returns
the result model's fields as a dict, or raises :class:`RpcError`.

Every answer must be sendable as one WebSocket text frame under the hub's limit:

* No lone surrogates.  A file name that is not UTF-8 reaches Python as text with
  surrogate escapes (``b"caf\\xe9"`` is ``"caf\\udce9"``), which no UTF-8 frame can carry
  (the client's socket broke on it).  Such names are shown with the bad bytes
  written as ``\\xNN`` and the listing row says ``"not_utf8": true``; such a path
  cannot be named back through the hub.
* Bounded size.  A listing stops (``truncated``) when its rows reach the answer
  budget; a read charges each path as well as each content to the budget, and error
  messages are shortened in the middle (they quote the caller's path, maybe twice).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from rpc_client.checkpoints import Checkpoints
from rpc_client.ignore import GitIgnore, IgnoreRules
from rpc_client.ignore import lexical_path as _lexical
from rpc_client.sandbox import Entry, Sandbox, SandboxError
from schemas.errors import ErrorCode, RpcError
from schemas.tools import ListFilesParams, ReadFilesParams, WriteFileParams

MiB = 1024 * 1024
#: Longest error message kept per path in a read_files answer, and for its summary.
MAX_MESSAGE_CHARS = 1000
MAX_SUMMARY_CHARS = 4000


@dataclass(frozen=True)
class FileLimits:
    """Caps that keep one answer well below the hub's frame limit (16 MiB)."""

    max_file_bytes: int = 8 * MiB
    max_answer_bytes: int = 8 * MiB
    max_write_bytes: int = 8 * MiB
    #: Largest previous content a write checkpoints (a larger file is not overwritten).
    max_checkpoint_bytes: int = 64 * MiB


def _wire(text: str) -> str:
    """``text`` as it can travel in UTF-8: undecodable bytes become ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name has
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_size(value: object) -> int:
    """Bytes ``value`` takes in the answer frame (compact JSON, UTF-8)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _shorten(message: str, limit: int) -> str:
    """``message`` cut in the middle to at most about ``limit`` characters; the ends are kept."""
    if len(message) <= limit:
        return message
    keep = max(0, (limit - 40) // 2)
    return f"{message[:keep]} [... {len(message) - 2 * keep} characters cut ...] {message[-keep:]}"


def _row(entry: Entry) -> dict[str, Any]:
    name, path = _wire(entry.name), _wire(entry.path)
    row: dict[str, Any] = {"name": name, "is_dir": entry.is_dir, "path": path, "size": entry.size}
    if entry.is_symlink:
        row["is_symlink"] = True
        if entry.target_outside:
            row["target_outside"] = True
    if path != entry.path:
        row["not_utf8"] = True
    return row


def list_files(
    sandbox: Sandbox,
    params: ListFilesParams,
    limits: FileLimits | None = None,
    rules: IgnoreRules | None = None,
) -> dict[str, Any]:
    """The listing, cut short (``truncated``) when its rows would pass the answer budget."""
    rows: list[dict[str, Any]] = []
    budget = (limits or FileLimits()).max_answer_bytes

    def accept(entry: Entry) -> bool:
        nonlocal budget
        row = _row(entry)
        cost = _json_size(row) + 1  # and a comma
        if cost > budget:
            return False
        budget -= cost
        rows.append(row)
        return True

    respect = params.recursive if params.respect_gitignore is None else params.respect_gitignore
    gitignore = GitIgnore(lambda name: sandbox.read_file(name, max_bytes=1024 * 1024)) if respect else None

    def hide(rel: str, is_dir: bool) -> bool:
        return (rules is not None and rules.hidden(rel, is_dir=is_dir)) or (
            gitignore is not None and gitignore.ignored(rel, is_dir)
        )

    if rules is not None:
        rules.check_read(params.path, _lexical(params.path))  # before the file system: no probing
        rules.check_read(params.path, sandbox.resolve(params.path))
    _, truncated = sandbox.list_dir(
        params.path, recursive=params.recursive, max_entries=params.max_entries, accept=accept, hide=hide
    )
    return {"files": rows, "truncated": truncated}


def _decode(path: str, data: bytes, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RpcError(
            ErrorCode.NOT_TEXT,
            f"{path!r} is not UTF-8 text (a binary file?); read it with encoding='base64'",
        ) from None


def read_files(
    sandbox: Sandbox, params: ReadFilesParams, limits: FileLimits, rules: IgnoreRules | None = None
) -> dict[str, Any]:
    """Read every file it can; the failures are reported together with what was read.

    The answer budget counts the JSON-encoded size of each content and of its path,
    since a file (or a name) of control characters grows six-fold when escaped.  The
    failures are not charged but are bounded: a path of at most 4 KB and a message
    shortened to ``MAX_MESSAGE_CHARS`` each.
    """
    files: dict[str, str] = {}
    digests: dict[str, str] = {}
    errors: dict[str, str] = {}
    budget = limits.max_answer_bytes
    for path in dict.fromkeys(params.files):  # each path once, in the caller's order
        key = _wire(path)
        try:
            if rules is not None:
                # Judged before the file system is touched: a hidden path that does not exist
                # answers like one that does, so the AI cannot probe for secrets.
                rules.check_read(path, _lexical(path))
            guard = None if rules is None else (lambda rel, shown=path: rules.check_read(shown, rel))
            data = sandbox.read_file(path, max_bytes=limits.max_file_bytes, guard=guard)
            content = _decode(path, data, params.encoding)
            cost = _json_size(content) + _json_size(key)
            if cost > budget:
                raise RpcError(
                    ErrorCode.TOO_LARGE,
                    f"{path!r} does not fit in this answer ({cost} bytes encoded, {budget} left of "
                    f"{limits.max_answer_bytes}); read it in a call of its own",
                )
            budget -= cost
            files[key] = content
            digests[key] = hashlib.sha256(data).hexdigest()
        except RpcError as exc:  # SandboxError is an RpcError
            errors[key] = _shorten(exc.message, MAX_MESSAGE_CHARS)
    if errors:
        failed = "; ".join(message for message in errors.values())
        raise RpcError(
            ErrorCode.PARTIAL_FAILURE,
            _shorten(
                f"could not read {len(errors)} of {len(params.files)} file(s): {failed}", MAX_SUMMARY_CHARS
            ),
            {"files": files, "sha256": digests, "errors": errors},
        )
    return {"files": files, "sha256": digests}


def write_file(
    sandbox: Sandbox,
    params: WriteFileParams,
    limits: FileLimits,
    rules: IgnoreRules | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[str, Any]:
    """Check, checkpoint, then atomically replace the file.

    The previous content is read (and compared with ``expected_sha256``) at the
    path the write resolves to, so a checkpoint always holds what the write
    replaced.
    """
    data = params.content.encode("utf-8")
    if len(data) > limits.max_write_bytes:
        raise RpcError(
            ErrorCode.TOO_LARGE,
            f"content for {params.path!r} is {len(data)} bytes; the limit is {limits.max_write_bytes}",
        )
    guard = None if rules is None else (lambda rel: rules.check_write(params.path, rel))
    if guard is not None:
        guard(_lexical(params.path))
    try:
        target: str | None = sandbox.resolve(params.path, must_exist=False)
    except SandboxError as exc:
        if exc.code != ErrorCode.NOT_FOUND:
            raise
        target = None  # a parent folder is missing: the file is new, the write makes its folders
    previous: bytes | None = None
    if target is not None:
        if guard is not None:
            guard(target)
        if checkpoints is not None or params.expected_sha256 is not None:
            try:
                previous = sandbox.read_file(target, max_bytes=limits.max_checkpoint_bytes)
            except SandboxError as exc:
                if exc.code != ErrorCode.NOT_FOUND:
                    raise
    if params.expected_sha256 is not None and (
        previous is None or hashlib.sha256(previous).hexdigest() != params.expected_sha256
    ):
        raise RpcError(
            ErrorCode.CONFLICT,
            f"{params.path!r} changed since it was read (its sha256 is not expected_sha256): read it again",
        )
    checkpoint = None
    if checkpoints is not None and target is not None:
        checkpoint = checkpoints.record(target, previous, data)
    try:
        written = sandbox.write_file(target if target is not None else params.path, data, guard=guard)
    except BaseException:
        if checkpoint is not None and checkpoints is not None:
            checkpoints.cancel(checkpoint)  # nothing changed: nothing to undo
        raise
    if checkpoints is not None and target is None:
        checkpoint = checkpoints.record(written.path, None, data)
    result = {"path": _wire(written.path), "bytes_written": written.bytes_written, "created": written.created}
    if checkpoint is not None:
        result["checkpoint"] = checkpoint
    return result
