"""The file tools: list_files, read_files, write_file, on top of the sandbox.

Each function is synchronous (the dispatcher runs it in a worker thread so a
large read never holds up other requests), takes validated params and returns
the result model's fields as a dict, or raises :class:`RpcError`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from rpc_client.sandbox import Sandbox
from schemas.errors import ErrorCode, RpcError
from schemas.tools import ListFilesParams, ReadFilesParams, WriteFileParams

MiB = 1024 * 1024


@dataclass(frozen=True)
class FileLimits:
    """Caps that keep one answer well below the hub's frame limit (16 MiB)."""

    max_file_bytes: int = 8 * MiB
    max_answer_bytes: int = 8 * MiB
    max_write_bytes: int = 8 * MiB


def list_files(sandbox: Sandbox, params: ListFilesParams) -> dict[str, Any]:
    entries, truncated = sandbox.list_dir(
        params.path, recursive=params.recursive, max_entries=params.max_entries
    )
    files = []
    for entry in entries:
        row: dict[str, Any] = {
            "name": entry.name,
            "is_dir": entry.is_dir,
            "path": entry.path,
            "size": entry.size,
        }
        if entry.is_symlink:
            row["is_symlink"] = True
            if entry.target_outside:
                row["target_outside"] = True
        files.append(row)
    return {"files": files, "truncated": truncated}


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


def read_files(sandbox: Sandbox, params: ReadFilesParams, limits: FileLimits) -> dict[str, Any]:
    """Read every file it can; the failures are reported together with what was read.

    The answer budget counts the JSON-encoded size of each content, since a
    file of control characters grows six-fold when escaped.
    """
    files: dict[str, str] = {}
    errors: dict[str, str] = {}
    budget = limits.max_answer_bytes
    for path in dict.fromkeys(params.files):  # each path once, in the caller's order
        try:
            data = sandbox.read_file(path, max_bytes=limits.max_file_bytes)
            content = _decode(path, data, params.encoding)
            cost = len(json.dumps(content, ensure_ascii=False).encode("utf-8"))
            if cost > budget:
                raise RpcError(
                    ErrorCode.TOO_LARGE,
                    f"{path!r} does not fit in this answer ({cost} bytes encoded, {budget} left of "
                    f"{limits.max_answer_bytes}); read it in a call of its own",
                )
            budget -= cost
            files[path] = content
        except RpcError as exc:  # SandboxError is an RpcError
            errors[path] = exc.message
    if errors:
        failed = "; ".join(message for message in errors.values())
        raise RpcError(
            ErrorCode.PARTIAL_FAILURE,
            f"could not read {len(errors)} of {len(params.files)} file(s): {failed}",
            {"files": files, "errors": errors},
        )
    return {"files": files}


def write_file(sandbox: Sandbox, params: WriteFileParams, limits: FileLimits) -> dict[str, Any]:
    data = params.content.encode("utf-8")
    if len(data) > limits.max_write_bytes:
        raise RpcError(
            ErrorCode.TOO_LARGE,
            f"content for {params.path!r} is {len(data)} bytes; the limit is {limits.max_write_bytes}",
        )
    written = sandbox.write_file(params.path, data)
    return {"path": written.path, "bytes_written": written.bytes_written, "created": written.created}
