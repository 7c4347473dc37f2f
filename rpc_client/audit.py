"""The audit log: one JSON line per request the client served, with its decision and outcome."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpc_client.state import append_jsonl, read_jsonl

AUDIT_FILE = "audit.jsonl"


@dataclass
class CallRecord:
    """What one request did; filled in while it runs, written when it ends."""

    method: str
    summary: str
    started: float = field(default_factory=time.time)
    #: For commands: "allowed" (not dangerous), "approved"/"refused" (asked), "denied" (policy, read-only).
    decision: str = "allowed"
    details: dict[str, Any] = field(default_factory=dict)


class AuditLog:
    def __init__(self, folder: Path) -> None:
        self.path = folder / AUDIT_FILE

    def write(self, record: CallRecord, status: str, duration_ms: float) -> None:
        append_jsonl(
            self.path,
            {
                "time": round(record.started, 3),
                "method": record.method,
                "summary": record.summary,
                "decision": record.decision,
                "status": status,
                "duration_ms": round(duration_ms, 1),
                **record.details,
            },
        )

    def tail(self, count: int) -> list[dict[str, Any]]:
        return read_jsonl(self.path)[-count:] if count > 0 else []


def format_entry(entry: dict[str, Any]) -> str:
    """One line for ``aihub-client log``."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry.get("time", 0))))
    extra = " ".join(f"{k}={entry[k]}" for k in ("checkpoint", "bytes_written", "exit_code") if k in entry)
    return (
        f"{when}  {entry.get('method', '?'):<15} {entry.get('status', '?'):<16} {entry.get('decision', ''):<9} "
        f"{entry.get('duration_ms', 0):>8} ms  {entry.get('summary', '')}" + (f"  [{extra}]" if extra else "")
    )
