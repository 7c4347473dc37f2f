"""``make soak``: mixed traffic against a real hub for a set time, with clients coming and going.

A real ``aihub serve`` process and a real ``aihub-client`` on a temporary
project, plus ``--clients`` light peers (raw WebSockets speaking the protocol,
answering ``read_files`` at once) that connect, serve a while, and drop at
random, some mid-call. REST callers send a mix of calls to all of them. At the
end it prints what was sent, answered and failed, and the memory of both
processes at the start and the end; it exits 1 if a call failed in a way the
churn does not explain (a 5xx other than 502/504, a hang), or if calls are
still in flight on the hub once the traffic stopped (a leaked future).

    python -m benchmarks.soak [--seconds 60] [--clients 200] [--callers 16]

Loopback only, bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from benchmarks.processes import free_port, rss_kib, start_client, start_hub, wait_connected, wait_healthy
from benchmarks.processes import stop as stop_processes

TOKEN = "soak-token"  # noqa: S105 - a throwaway token for a loopback-only run


async def light_peer(url: str, name: str, stop: asyncio.Event, stats: collections.Counter[str]) -> None:
    """Connect, answer requests for a random while, drop (sometimes without answering), again."""
    rng = random.Random(name)  # noqa: S311 - traffic, not secrets
    while not stop.is_set():
        try:
            async with connect(
                url,
                additional_headers={"Authorization": f"Bearer {TOKEN}"},
                compression=None,
                open_timeout=10,
            ) as ws:
                await ws.send(
                    json.dumps(
                        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"workspace": name}}
                    )
                )
                await ws.recv()
                stats["peer connects"] += 1
                life = time.monotonic() + rng.uniform(0.2, 3.0)
                while not stop.is_set() and time.monotonic() < life:
                    try:
                        frame = await asyncio.wait_for(ws.recv(), timeout=max(0.01, life - time.monotonic()))
                    except TimeoutError:
                        break
                    message = json.loads(frame)
                    if "id" not in message or "method" not in message:
                        continue
                    if rng.random() < 0.02:
                        stats["peer drops mid-call"] += 1
                        break  # gone without answering: the caller must get 502, at once
                    files = (message.get("params") or {}).get("files", [])
                    await ws.send(
                        json.dumps(
                            {
                                "jsonrpc": "2.0",
                                "id": message["id"],
                                "result": {"files": {f: "x\n" for f in files}},
                            }
                        )
                    )
        except (OSError, ConnectionClosed, InvalidStatus, TimeoutError):
            stats["peer connect errors"] += 1
        await asyncio.sleep(rng.uniform(0, 0.5))


async def caller(
    http: httpx2.AsyncClient,
    names: list[str],
    stop: asyncio.Event,
    stats: collections.Counter[str],
    latencies: list[float],
) -> None:
    rng = random.Random()  # noqa: S311 - traffic, not secrets
    while not stop.is_set():
        name = rng.choice(names)
        if name == "real":
            method, body = rng.choice(
                [
                    ("read_files", {"files": ["a.txt"]}),
                    ("list_files", {"path": "./", "recursive": True}),
                    ("search_files", {"pattern": "line"}),
                    ("execute_command", {"command": "echo hi", "timeout": 10}),
                    (
                        "write_file",
                        {"path": f"out/{rng.randrange(20)}.txt", "content": "x" * rng.randrange(1, 5000)},
                    ),
                ]
            )
        else:
            method, body = "read_files", {"files": ["a.txt"]}
        started = time.monotonic()
        stats["sent"] += 1
        try:
            response = await http.post(f"/api/workspaces/{name}/tools/{method}", json=body)
        except httpx2.HTTPError as exc:
            stats[f"failed: {type(exc).__name__}"] += 1
            continue
        latencies.append(time.monotonic() - started)
        code = response.status_code
        if code == 200:
            stats["answered"] += 1
        elif code in (404, 502, 409):  # the peer is away, left mid-call, or two share a name for a moment
            stats[f"churn: {code}"] += 1
        else:
            stats[f"failed: HTTP {code}"] += 1


async def main(seconds: float, clients: int, callers: int) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="aihub-soak-"))
    home, project = scratch / "home", scratch / "project"
    home.mkdir()
    project.mkdir()
    (project / "a.txt").write_text("line\n" * 100)
    port = free_port()
    env = {"AIHUB_TOKEN": TOKEN, "AIHUB_HOME": str(home)}
    hub = start_hub(port, env, "--max-workspaces", str(clients + 10), "--call-timeout", "10")
    client: subprocess.Popen[bytes] | None = None
    stats: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    stop = asyncio.Event()
    url = f"ws://127.0.0.1:{port}/ws/workspace"
    try:
        async with httpx2.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as http:
            await wait_healthy(http)
            client = start_client(url, project, "real", env)
            await wait_connected(http, "real")
            hub_start, client_start = rss_kib(hub.pid) / 1024, rss_kib(client.pid) / 1024
            names = ["real", *(f"peer-{i}" for i in range(clients))]
            peers = [asyncio.create_task(light_peer(url, n, stop, stats)) for n in names[1:]]
            calls = [asyncio.create_task(caller(http, names, stop, stats, latencies)) for _ in range(callers)]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*calls), timeout=60)
            for task in peers:
                task.cancel()
            await asyncio.gather(*peers, return_exceptions=True)
            await asyncio.sleep(1)
            left = [w for w in (await http.get("/api/workspaces")).json() if w["in_flight"]]
            hub_end, client_end = rss_kib(hub.pid) / 1024, rss_kib(client.pid) / 1024
    finally:
        await stop_processes([client, hub])
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0
    print(f"soak: {seconds:g} s, {clients} light peers + 1 aihub-client, {callers} REST callers, 127.0.0.1")
    for key, value in sorted(stats.items()):
        print(f"  {key:<28} {value:>9,}")
    print(f"  {'latency p50 / p99':<28} {p50:>8.1f} / {p99:.1f} ms")
    print(f"  {'hub RSS start -> end':<28} {hub_start:>8.1f} -> {hub_end:.1f} MiB")
    print(f"  {'client RSS start -> end':<28} {client_start:>8.1f} -> {client_end:.1f} MiB")
    print(f"  {'calls in flight after':<28} {sum(w['in_flight'] for w in left):>9}")
    failed = sum(v for k, v in stats.items() if k.startswith("failed"))
    if failed or left or not stats["answered"]:
        print("soak: FAILED (unexplained failures, calls left in flight, or nothing answered)")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the traffic runs (default 60)")
    parser.add_argument("--clients", type=int, default=200, help="light peers coming and going (default 200)")
    parser.add_argument("--callers", type=int, default=16, help="concurrent REST callers (default 16)")
    args = parser.parse_args()
    if not (0 < args.seconds <= 3600 and 0 <= args.clients <= 2000 and 1 <= args.callers <= 256):
        parser.error("--seconds 0-3600, --clients 0-2000, --callers 1-256")
    sys.exit(asyncio.run(main(args.seconds, args.clients, args.callers)))
