"""``make bench``: the round-trip figures of BENCHMARKS.md, each with its baseline and their ratio.

Everything runs on 127.0.0.1 and is bounded: a real hub (uvicorn, in this
process, so the internal API can be timed), a real ``aihub-client`` process
on a temporary project, and a raw websockets echo server as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2
import uvicorn
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from hub.app import create_app
from hub.component import WorkspaceHub
from hub.settings import HubSettings

TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a loopback-only run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


async def _time(n: int, once: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(min(50, n)):  # warm up
        await once()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await once()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


async def _echo_baseline(n: int, message: str) -> list[float]:
    async def echo(ws):  # type: ignore[no-untyped-def]
        async for frame in ws:
            await ws.send(frame)

    async with serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:

            async def once() -> None:
                await ws.send(message)
                await ws.recv()

            return await _time(n, once)


async def main(n: int) -> int:
    project = Path(tempfile.mkdtemp(prefix="aihub-bench-"))
    (project / "small.py").write_text("print('hello')\n" * 10)
    home = Path(tempfile.mkdtemp(prefix="aihub-bench-home-"))
    port = _free_port()
    settings = HubSettings(token=TOKEN, home=home)
    app = create_app(settings)
    hub: WorkspaceHub = app.state.hub
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    client = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [sys.executable, "-m", "rpc_client.cli", "--hub", f"ws://127.0.0.1:{port}/ws/workspace",
         "--root", str(project), "--name", "bench", "--dangerous", "deny", "--sandbox", "none"],
        env={**os.environ, "AIHUB_TOKEN": TOKEN, "AIHUB_HOME": str(home)},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while (workspace := hub.registry.find("bench")) is None:
            if time.monotonic() > deadline or client.poll() is not None:
                print("bench: the client did not connect", file=sys.stderr)
                return 1
            await asyncio.sleep(0.05)
        params = {"files": ["small.py"]}
        request_size = len('{"jsonrpc":"2.0","id":1,"method":"read_files","params":{"files":["small.py"]}}')
        echo = await _echo_baseline(n, "x" * request_size)
        internal = await _time(n, lambda: workspace.call("read_files", params, timeout=10))
        async with httpx2.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            healthz = await _time(n, lambda: http.get("/healthz"))
            rest = await _time(n, lambda: http.post("/api/workspaces/bench/tools/read_files", json=params))
    finally:
        client.terminate()
        try:  # waited for off the loop: the hub in this loop must answer the client's close
            await asyncio.to_thread(client.wait, 10)
        except subprocess.TimeoutExpired:
            client.kill()
        server.should_exit = True
        await serving

    e50, e99 = _percentiles(echo)
    i50, i99 = _percentiles(internal)
    h50, h99 = _percentiles(healthz)
    r50, r99 = _percentiles(rest)
    b50, b99 = h50 + e50, h99 + e99
    rows = [
        ("raw websockets echo round trip (baseline)", e50, e99, "", ""),
        (
            "read_files, internal API: hub -> client -> hub",
            i50,
            i99,
            f"{i50 / e50:.2f}x echo",
            "target <= 1.5x",
        ),
        ("GET /healthz, keep-alive (baseline part)", h50, h99, "", ""),
        (
            "read_files via POST /api/.../tools (keep-alive)",
            r50,
            r99,
            f"{r50 / b50:.2f}x (healthz + echo)",
            "target <= 2x",
        ),
    ]
    print(
        f"{n} round trips each, 127.0.0.1, Python {sys.version.split()[0]}, {os.cpu_count()} cores; microseconds"
    )
    print(f"{'figure':<50} {'p50':>9} {'p99':>9}  {'ratio (p50)':<26} target")
    for name, p50, p99, ratio, target in rows:
        print(f"{name:<50} {p50:>9.0f} {p99:>9.0f}  {ratio:<26} {target}")
    print(f"{'(p99 ratios)':<50} {'':>9} {'':>9}  internal {i99 / e99:.2f}x, REST {r99 / b99:.2f}x")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("-n", type=int, default=2000, help="round trips per figure (default 2000)")
    sys.exit(asyncio.run(main(parser.parse_args().n)))
