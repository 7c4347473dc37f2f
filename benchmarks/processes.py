"""The real processes the benchmarks and the soak run: a hub, clients, and their memory; loopback only."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """A process's resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user and system (Linux): steadier than wall time on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_hub(port: int, env: Mapping[str, str], *flags: str) -> subprocess.Popen[bytes]:
    """``aihub serve`` on 127.0.0.1:``port``, quiet."""
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(port), "--log-level", "error", *flags],
        env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def start_client(
    url: str, root: Path, name: str, env: Mapping[str, str], *options: str
) -> subprocess.Popen[bytes]:
    """``aihub-client`` for ``root``: dangerous commands denied, no bubblewrap (the figures are the hub's)."""
    return subprocess.Popen(
        [sys.executable, "-m", "rpc_client.cli", "--hub", url, "--root", str(root), "--name", name,
         "--dangerous", "deny", "--sandbox", "none", *options],
        env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def wait_healthy(http: httpx2.AsyncClient, timeout: float = 20.0, poll: float = 0.05) -> None:
    """Until the hub answers ``GET /healthz``; RuntimeError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            await asyncio.sleep(poll)


async def wait_connected(
    http: httpx2.AsyncClient, name: str, timeout: float = 20.0, poll: float = 0.05
) -> None:
    """Until a workspace of that name is listed."""
    async with asyncio.timeout(timeout):
        while not any(w["name"] == name for w in (await http.get("/api/workspaces")).json()):  # noqa: ASYNC110 - polling another process
            await asyncio.sleep(poll)


async def stop(processes: Iterable[subprocess.Popen[bytes] | None]) -> None:
    """Terminate each, waited for off the event loop (a hub in this loop must answer their close)."""
    for process in processes:
        if process is None:
            continue
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
