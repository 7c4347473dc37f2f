"""The client's state folder for one project: outside the root, private to the user.

``$AIHUB_HOME/projects/<hash of the root's real path>/`` holds the audit log
and the checkpoints, so they survive restarts and never appear in the project
(nor in what the AI can read: the state folder is hidden from commands too).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from schemas.protocol import aihub_home


def project_state_dir(root: Path, home: Path | None = None) -> Path:
    """The state folder of the project at ``root`` (created, mode 0700)."""
    digest = hashlib.sha256(os.fsencode(root.resolve())).hexdigest()[:16]
    folder = (home or aihub_home()) / "projects" / f"{root.name[:40]}-{digest}"
    private_dirs(folder)
    return folder


def private_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each one mode 0700 (only the user may look in)."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; one ``write`` of the whole line, so lines never interleave."""
    line = (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every well-formed line (a torn last line after a crash is skipped)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records
