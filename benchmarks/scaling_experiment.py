"""The experiment behind docs/scaling.md: what one hub holds, and what one hop between two hubs costs.

An experiment, not product code: nothing in ``hub/`` imports this, and the
forwarding "front" and the bus responders below are prototypes. Everything
runs on 127.0.0.1, every loop is bounded, and the whole run has a deadline.

    .venv/bin/python -m benchmarks.scaling_experiment [-n 1000] [--idle 997] [--quick] [--parts one two dies]

1. **One hub** (a stock ``aihub serve`` process, one ``aihub-client``): a
   small ``read_files`` over REST, its latency and the hub's CPU time per call
   (``/proc/PID/stat``), calls/s from wrk on one and on three workspaces, then
   ``--idle`` raw WebSockets that only ``initialize``: connect rate, memory per
   idle workspace (RSS), the hub's CPU while they idle, and the call's p99
   with them connected; then the hub's CPU per chat turn and per streamed
   chunk, against a stand-in model that answers at once.
2. **Two hubs.** Hub A holds the client's socket (the hub's own app, plus the
   prototype responders of each bus and a registry writer); hub B (the
   "front") holds no socket and forwards each call to A by one of: HTTP
   (streamed passthrough to A's REST route, with httpx2 or aiohttp), Redis Streams, Redis Pub/Sub,
   NATS request-reply. B looks the workspace up in Redis on every call. The
   same call direct to A is the baseline; the routes are interleaved in
   rounds. Also: a 4 MiB answer through each route, the time to the first
   live-output event through the HTTP forwarder, and a caller hanging up on
   B (does the command on the client die?).
3. **A hub dies.** A second client reaches the hubs through a stand-in load
   balancer (a TCP proxy that picks the first hub that accepts); hub A is
   killed (SIGKILL) during a call: how the caller learns it, and how long
   until the workspace is routable again on hub C.

Redis, NATS and wrk come from Debian (``apt-get install -y redis-server
nats-server wrk``), the Python clients from a venv outside the project
(``python3 -m venv /tmp/aihub-scaling-venv && /tmp/aihub-scaling-venv/bin/pip
install redis nats-py aiohttp``; another place: ``AIHUB_SCALING_SITE=<its
site-packages>``): none of them is a project dependency. Without them, the
parts that need them are skipped. Prints the figures and writes
``bench/scaling.json``. docs/scaling.md reports the figures and the method.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"
DEFAULT_SITE = Path("/tmp/aihub-scaling-venv/lib", PYTHON, "site-packages")  # noqa: S108
SITE = Path(os.environ.get("AIHUB_SCALING_SITE", str(DEFAULT_SITE)))
if SITE.is_dir() and str(SITE) not in sys.path:
    sys.path.append(str(SITE))  # after the project's venv: its packages win

import httpx2  # noqa: E402
import uvicorn  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from hub.api import answer_payload, call_timeout  # noqa: E402
from hub.app import create_app  # noqa: E402
from hub.component import WorkspaceHub  # noqa: E402
from hub.errors import AmbiguousName, CallTimeout, WorkspaceBusy, WorkspaceGone  # noqa: E402
from hub.settings import HubSettings  # noqa: E402
from schemas.tools import TOOLS  # noqa: E402

TOKEN = "scaling-token"  # noqa: S105 - a throwaway token for a loopback-only run
RESULTS = ROOT / "bench" / "scaling.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Registry entries: ``aihub:ws:<name>`` -> "<hub id> <hub address> <workspace id>", with a TTL.
WS_KEY = "aihub:ws:{}"
REGISTRY_TTL_S = 15
REGISTRY_REFRESH_S = 5.0
#: How often the prototype registry writer looks for new or gone workspaces (a real hub writes on connect).
REGISTRY_SCAN_S = 0.05
TRANSPORTS = ("http", "http-aiohttp", "redis-streams", "redis-pubsub", "nats")
#: Compare-and-delete: remove a registry entry only if it is still ours.
CAD = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def redis_client(url: str) -> Any:
    """No socket timeout: redis-py 8's default of 5 s would end a blocking XREAD or an idle subscription."""
    return optional("redis.asyncio").Redis.from_url(url, max_connections=64, socket_timeout=None)


# --- helpers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p99": p99, "n": len(ordered)}


async def timed(n: int, once: Callable[[], Awaitable[object]], warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        await once()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await once()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Seconds until ``check()`` is true; RuntimeError after ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - started
        except (httpx2.HTTPError, OSError):
            pass
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def env() -> dict[str, str]:
    extra = [str(ROOT)] + ([str(SITE)] if SITE.is_dir() else [])
    path = os.pathsep.join([*extra, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "AIHUB_TOKEN": TOKEN, "PYTHONPATH": path}


class Processes:
    """Every process this run starts, ended in reverse order whatever happens; stderr kept in ``logs``."""

    def __init__(self, logs: Path) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, command: list[str], home: Path | None = None) -> subprocess.Popen[bytes]:
        extra = {"AIHUB_HOME": str(home)} if home is not None else {}
        with (self.logs / f"{len(self.started):02d}-{Path(command[0]).name}.log").open("wb") as log:
            log.write((" ".join(command) + "\n").encode())
            log.flush()
            process = subprocess.Popen(
                command, cwd=ROOT, env={**env(), **extra}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        self.started.append(process)
        return process

    def report_deaths(self) -> None:
        """Print the end of the log of each process that exited on its own."""
        for i, process in enumerate(self.started):
            if process.returncode not in (None, 0, -signal.SIGTERM, -signal.SIGKILL):
                for log in self.logs.glob(f"{i:02d}-*.log"):
                    say(f"--- {log.name} (exit {process.returncode}) ---\n" + log.read_text()[-3000:])

    def client(self, hub_port: int, root: Path, name: str, home: Path) -> subprocess.Popen[bytes]:
        return self.start(
            [sys.executable, "-m", "rpc_client.cli", "--hub", f"ws://127.0.0.1:{hub_port}/ws/workspace",
             "--root", str(root), "--name", name, "--dangerous", "deny", "--sandbox", "none"],
            home,
        )  # fmt: skip

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.started):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def api(port: int, timeout: float = 60) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=timeout
    )


async def workspace_listed(http: httpx2.AsyncClient, name: str) -> bool:
    return any(w["name"] == name for w in (await http.get("/api/workspaces")).json())


def make_project(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "small.py").write_text("print('hello')\n" * 10)
    line = "0123456789abcdef" * 7 + "\n"
    (path / "big.txt").write_text(line * (4 * 1024 * 1024 // len(line)))  # 4 MiB
    return path


def say(text: str) -> None:
    print(text, flush=True)


# --- part 1: one hub ----------------------------------------------------------


async def one_hub(
    out: dict[str, Any], procs: Processes, scratch: Path, n: int, idle: int, idle_s: float
) -> None:
    say("\n== 1. one hub (aihub serve, one aihub-client) ==")
    home = scratch / "one-home"
    home.mkdir()
    port, model_port = free_port(), free_port()
    procs.start(
        [sys.executable, "-m", "benchmarks.scaling_experiment", "--role", "model", "--port", str(model_port)]
    )
    await wait_for(functools.partial(_accepts, "127.0.0.1", model_port), 30, "the stand-in model")
    hub = procs.start(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(port), "--log-level", "warning",
         "--llm-base-url", f"http://127.0.0.1:{model_port}/v1", "--llm-model", "stand-in", "--llm-api-key", "unused"],
        home,
    )  # fmt: skip
    project = make_project(scratch / "one-project")
    async with api(port) as http:
        await wait_for(lambda: _healthy(http), 30, "the hub")
        client = procs.client(port, project, "busy", home)
        await wait_for(lambda: workspace_listed(http, "busy"), 30, "the client")

        async def call() -> None:
            answer = await http.post("/api/workspaces/busy/tools/read_files", json={"files": ["small.py"]})
            if answer.status_code != 200 or answer.json()["status"] != "success":
                raise RuntimeError(f"read_files failed: {answer.status_code} {answer.text[:200]}")

        alone = pct(await timed(n, call))
        hub_cpu, client_cpu, started = cpu_seconds(hub.pid), cpu_seconds(client.pid), time.perf_counter()
        for _ in range(n):
            await call()
        wall = time.perf_counter() - started
        seq = {
            "hub_cpu_us_per_call": (cpu_seconds(hub.pid) - hub_cpu) / n * 1e6,
            "client_cpu_us_per_call": (cpu_seconds(client.pid) - client_cpu) / n * 1e6,
            "wall_us_per_call": wall / n * 1e6,
        }
        say(f"small read_files via REST, sequential: p50 {alone['p50']:,.0f} us, p99 {alone['p99']:,.0f} us")
        say(f"  CPU per call: hub {seq['hub_cpu_us_per_call']:,.0f} us, client {seq['client_cpu_us_per_call']:,.0f} us"
            f" (wall {seq['wall_us_per_call']:,.0f} us)")  # fmt: skip

        busy: dict[str, Any] = {}
        if shutil.which("wrk"):  # a load generator in C, so the caller is not the bottleneck
            seconds = 4 if n < 500 else 8
            busy["wrk_1_workspace"] = await wrk_load(
                scratch, port, ["busy"], 16, seconds, hub.pid, [client.pid]
            )
            more = [procs.client(port, project, name, home) for name in ("busy2", "busy3")]
            for name in ("busy2", "busy3"):
                await wait_for(functools.partial(workspace_listed, http, name), 30, name)
            names, pids = ["busy", "busy2", "busy3"], [client.pid] + [p.pid for p in more]
            busy["wrk_3_workspaces"] = await wrk_load(scratch, port, names, 48, seconds, hub.pid, pids)
            for label, figures in busy.items():
                say(f"{label}: {figures['calls_per_s']:,.0f} calls/s ({figures['non_2xx']} not 2xx), p50 "
                    f"{figures['p50_ms']} ms, p99 {figures['p99_ms']} ms; hub CPU {figures['hub_cpu_share']:.0%} of "
                    f"a core ({figures['hub_cpu_us_per_call']:,.0f} us/call), clients "
                    f"{figures['clients_cpu_share']:.0%}, wrk {figures['connections']} connections")  # fmt: skip
        else:
            say("(no wrk: apt-get install -y wrk for the calls/s figure)")

        rss_before = rss_kib(hub.pid)
        hub_cpu, started = cpu_seconds(hub.pid), time.perf_counter()
        sockets = await _connect_idle(port, idle)
        connect_wall = time.perf_counter() - started
        connect_cpu = cpu_seconds(hub.pid) - hub_cpu
        try:
            await asyncio.sleep(1)
            rss_after = rss_kib(hub.pid)
            hub_cpu = cpu_seconds(hub.pid)
            await asyncio.sleep(idle_s)  # the hub pings each socket every 20 s
            idle_share = (cpu_seconds(hub.pid) - hub_cpu) / idle_s
            crowded = pct(await timed(n, call))
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        held = {
            "idle_workspaces": idle,
            "connect_s": connect_wall,
            "connects_per_s": idle / connect_wall,
            "hub_cpu_us_per_connect": connect_cpu / idle * 1e6,
            "rss_kib_before": rss_before,
            "rss_kib_after": rss_after,
            "kib_per_idle_workspace": (rss_after - rss_before) / idle,
            "hub_cpu_share_idle": idle_share,
            "idle_window_s": idle_s,
            "call_alone": alone,
            "call_with_idle": crowded,
        }
        say(f"{idle} idle workspaces: connected in {connect_wall:.1f} s ({held['connects_per_s']:,.0f}/s, hub CPU "
            f"{held['hub_cpu_us_per_connect']:,.0f} us each); RSS {rss_before:,} -> {rss_after:,} KiB "
            f"({held['kib_per_idle_workspace']:.1f} KiB each); hub CPU while idle {idle_share:.1%} of a core "
            f"over {idle_s:g} s")  # fmt: skip
        say(f"  the same call with them connected: p50 {crowded['p50']:,.0f} us, p99 {crowded['p99']:,.0f} us "
            f"(alone: {alone['p50']:,.0f} / {alone['p99']:,.0f})")  # fmt: skip
        chat = await chat_turns(http, hub.pid, turns=5 if n < 500 else 20)
    out["one_hub"] = {"sequential": seq, "concurrent": busy, "idle": held, "chat": chat}


async def wrk_load(
    scratch: Path, port: int, names: list[str], connections: int, seconds: int, hub: int, clients: list[int]
) -> dict[str, Any]:
    """Calls/s of a small read_files over REST from wrk (one thread), with the hub's and clients' CPU share."""
    paths = ", ".join(f'"/api/workspaces/{name}/tools/read_files"' for name in names)
    script = scratch / f"wrk-{len(names)}.lua"
    script.write_text(
        f'paths = {{{paths}}}\ni = 0\nwrk.method = "POST"\n'
        f'wrk.body = \'{{"files": ["small.py"]}}\'\n'
        f'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
        "request = function()\n  i = i + 1\n  return wrk.format(nil, paths[(i % #paths) + 1])\nend\n"
    )
    hub_cpu, client_cpu = cpu_seconds(hub), sum(map(cpu_seconds, clients))
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
        f"http://127.0.0.1:{port}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await process.communicate())[0].decode()
    wall = time.perf_counter() - started
    hub_cpu, client_cpu = cpu_seconds(hub) - hub_cpu, sum(map(cpu_seconds, clients)) - client_cpu
    figures: dict[str, Any] = {"connections": connections, "workspaces": len(names), "non_2xx": 0}
    for line in output.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            figures["calls_per_s"] = float(words[1])
        elif "requests in" in line:
            figures["calls"] = int(words[0])
        elif line.startswith("  Non-2xx"):
            figures["non_2xx"] = int(words[-1])
        elif words and words[0] in ("50%", "99%"):
            value = (
                float(words[1].rstrip("mus"))
                * {"us": 1e-3, "ms": 1.0, "s": 1e3}[words[1].lstrip("0123456789.")]
            )
            figures[f"p{words[0][:2]}_ms"] = round(value, 2)
    if "calls" not in figures:
        raise RuntimeError(f"wrk failed: {output[-1000:]}")
    figures["hub_cpu_share"] = hub_cpu / wall
    figures["clients_cpu_share"] = client_cpu / wall
    figures["hub_cpu_us_per_call"] = hub_cpu / figures["calls"] * 1e6
    return figures


async def chat_turns(http: httpx2.AsyncClient, hub: int, turns: int) -> dict[str, Any]:
    """The hub's CPU per chat turn (two model calls that answer at once, one read_files), streamed as events.

    Run with 5 and with 200 text chunks per model call: the difference is the cost of a streamed chunk
    (the SDK parses it, the loop passes it on, the route sends an event), the rest the cost of a turn.
    """
    figures: dict[str, Any] = {"turns": turns}
    warm = await http.post(
        "/api/workspaces/busy/chat", json={"message": "chunks=5"}
    )  # the model's client starts
    if warm.status_code != 200:
        raise RuntimeError(f"the chat turn failed: {warm.status_code} {warm.text[:300]}")
    for chunks in (5, 200):
        before, started = cpu_seconds(hub), time.perf_counter()
        for _ in range(turns):
            events = 0
            async with http.stream("POST", "/api/workspaces/busy/chat", json={"message": f"chunks={chunks}"},
                                   headers={"accept": "text/event-stream"}) as stream:  # fmt: skip
                async for line in stream.aiter_lines():
                    events += line.startswith("event:")
                    if line in ("event: done", "event: error"):
                        if line == "event: error":
                            raise RuntimeError("the chat turn failed")
                        break
        figures[f"chunks_{chunks}"] = {
            "hub_cpu_ms_per_turn": (cpu_seconds(hub) - before) / turns * 1000,
            "wall_ms_per_turn": (time.perf_counter() - started) / turns * 1000,
            "events_per_turn": events,
        }
    low, high = figures["chunks_5"]["hub_cpu_ms_per_turn"], figures["chunks_200"]["hub_cpu_ms_per_turn"]
    per_chunk = (high - low) / (2 * (200 - 5))
    figures["hub_cpu_us_per_chunk"] = per_chunk * 1000
    figures["hub_cpu_ms_per_turn_without_chunks"] = low - 2 * 5 * per_chunk
    say(f"chat turn (2 model calls, 1 read_files, streamed): hub CPU {low:.1f} ms with 5 chunks per model call, "
        f"{high:.1f} ms with 200: {per_chunk * 1000:,.0f} us per chunk, "
        f"{figures['hub_cpu_ms_per_turn_without_chunks']:.1f} ms per turn besides")  # fmt: skip
    return figures


class StandInModel:
    """An OpenAI-compatible endpoint that answers at once, streamed: ``chunks=N`` in the user's message
    gives N text chunks per answer; a read_files call first, then (after the tool's answer) a stop."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        first = next(m for m in request["messages"] if m["role"] == "user")["content"]
        chunks = int(str(first).split("chunks=")[1].split()[0]) if "chunks=" in str(first) else 5
        call = request["messages"][-1]["role"] != "tool"
        base = {
            "id": "chatcmpl-stand-in",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "stand-in",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()

        parts = [chunk({"role": "assistant", "content": ""})]
        parts += [chunk({"content": f"word{i} "}) for i in range(chunks)]
        if call:
            arguments = json.dumps({"files": ["small.py"]})
            tool = {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "read_files", "arguments": arguments},
            }
            parts.append(chunk({"tool_calls": [tool]}))
        parts.append(chunk({}, "tool_calls" if call else "stop"))
        usage = {"prompt_tokens": 100, "completion_tokens": chunks, "total_tokens": 100 + chunks}
        parts.append(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        parts.append(b"data: [DONE]\n\n")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _healthy(http: httpx2.AsyncClient) -> bool:
    return (await http.get("/healthz")).status_code == 200


async def _connect_idle(port: int, count: int, parallel: int = 50) -> list[ClientConnection]:
    """``count`` sockets that send ``initialize`` and then only answer pings."""
    sockets: list[ClientConnection] = []
    names = iter(range(count))

    async def worker() -> None:
        for i in names:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws/workspace",
                additional_headers={"Authorization": f"Bearer {TOKEN}"},
                compression=None,
            )
            params = {"workspace": f"idle-{i}"}
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}))
            await ws.recv()
            sockets.append(ws)

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return sockets


# --- the roles: hub A (holds sockets) and the front B (forwards) ----------------


async def execute(hub: WorkspaceHub, request: dict[str, Any]) -> tuple[int, Any]:
    """One call arriving over a bus, run as the REST route runs it: (HTTP status, body)."""
    try:
        workspace = hub.registry.find(request["workspace"])
    except AmbiguousName as exc:
        return 409, {"detail": str(exc)}
    spec = TOOLS.get(request["method"])
    if workspace is None or spec is None:
        return 404, {"detail": "no such workspace or tool"}
    try:
        params = spec.params.model_validate(request["params"])
    except ValidationError as exc:
        return 422, {"detail": str(exc)}
    try:
        answer = await workspace.call(
            request["method"],
            params.model_dump(exclude_unset=True),
            timeout=call_timeout(hub.settings, params),
        )
    except CallTimeout as exc:
        return 504, {"detail": str(exc)}
    except WorkspaceGone as exc:
        return 502, {"detail": str(exc)}
    except WorkspaceBusy as exc:
        return 429, {"detail": str(exc)}
    return 200, answer_payload(answer)


class Spawner:
    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, key: str, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks[key] = task
        task.add_done_callback(lambda _t: self.tasks.pop(key, None))

    def cancel(self, key: str) -> None:
        if (task := self.tasks.get(key)) is not None:
            task.cancel()


async def registry_writer(r: Any, hub: WorkspaceHub, hub_id: str, address: str) -> None:
    """Publish this hub's workspaces: new ones at once, all of them every REGISTRY_REFRESH_S, each with a TTL."""
    known: dict[str, str] = {}
    refreshed = 0.0
    while True:
        now = time.monotonic()
        current = {w.name: f"{hub_id} {address} {w.id}" for w in hub.registry.all()}
        refresh = now - refreshed >= REGISTRY_REFRESH_S
        pipe = r.pipeline(transaction=False)
        writes = 0
        for name, value in current.items():
            if refresh or known.get(name) != value:
                pipe.set(WS_KEY.format(name), value, ex=REGISTRY_TTL_S)
                writes += 1
        for name, value in known.items():
            if current.get(name) != value:
                pipe.eval(CAD, 1, WS_KEY.format(name), value)
                writes += 1
        if writes:
            await pipe.execute()
        if refresh:
            refreshed = now
        known = current
        await asyncio.sleep(REGISTRY_SCAN_S)


async def streams_responder(r: Any, hub: WorkspaceHub, hub_id: str) -> None:
    stream, last, spawner = f"aihub:calls:{hub_id}", "$", Spawner()

    async def handle(corr: str, reply: str, body: bytes) -> None:
        status, payload = await execute(hub, json.loads(body))
        data = json.dumps({"status": status, "body": payload})
        await r.xadd(reply, {"corr": corr, "body": data}, maxlen=10_000, approximate=True)

    while True:
        for _stream, entries in await r.xread({stream: last}, block=5000, count=500) or []:
            for entry_id, fields in entries:
                last = entry_id
                corr = fields[b"corr"].decode()
                if b"cancel" in fields:
                    spawner.cancel(corr)
                else:
                    spawner.spawn(corr, handle(corr, fields[b"reply"].decode(), fields[b"body"]))


async def pubsub_responder(r: Any, hub: WorkspaceHub, hub_id: str) -> None:
    pubsub, spawner = r.pubsub(), Spawner()
    await pubsub.subscribe(f"aihub:calls:{hub_id}")

    async def handle(message: dict[str, Any]) -> None:
        status, payload = await execute(hub, message["request"])
        await r.publish(
            message["reply"], json.dumps({"corr": message["corr"], "status": status, "body": payload})
        )

    async for event in pubsub.listen():
        if event["type"] != "message":
            continue
        message = json.loads(event["data"])
        if "cancel" in message:
            spawner.cancel(message["corr"])
        else:
            spawner.spawn(message["corr"], handle(message))


async def nats_responder(nc: Any, hub: WorkspaceHub, hub_id: str) -> None:
    spawner = Spawner()

    async def handle(msg: Any) -> None:
        status, payload = await execute(hub, json.loads(msg.data))
        try:
            await msg.respond(json.dumps({"status": status, "body": payload}).encode())
        except Exception as exc:  # an answer over the server's max_payload (1 MiB by default)
            await msg.respond(json.dumps({"status": 502, "body": {"detail": f"nats: {exc!r}"}}).encode())

    async def on_message(msg: Any) -> None:  # callbacks run one at a time: the work goes to a task
        spawner.spawn(secrets.token_hex(8), handle(msg))

    await nc.subscribe(f"aihub.calls.{hub_id}", cb=on_message)
    await asyncio.Event().wait()


async def role_hub(args: argparse.Namespace) -> None:
    app = create_app(HubSettings(token=TOKEN, home=Path(args.home)))
    hub: WorkspaceHub = app.state.hub
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")
    )
    jobs: list[Awaitable[None]] = [server.serve()]
    address = f"http://127.0.0.1:{args.port}"
    redis_asyncio = optional("redis.asyncio")
    if args.redis_url and redis_asyncio is not None:
        r = redis_client(args.redis_url)
        jobs += [
            registry_writer(r, hub, args.hub_id, address),
            streams_responder(redis_client(args.redis_url), hub, args.hub_id),
            pubsub_responder(redis_client(args.redis_url), hub, args.hub_id),
        ]
    nats = optional("nats")
    if args.nats_url and nats is not None:
        jobs.append(nats_responder(await nats.connect(args.nats_url), hub, args.hub_id))
    await asyncio.gather(*jobs)


class Front:
    """Hub B's forwarding path, as a raw ASGI app: ``POST /<transport>/api/workspaces/<name>/tools/<method>``.

    Looks the workspace up in Redis (``aihub:ws:<name>``) on every call, then forwards the call to the
    hub that holds its socket: ``http`` streams the request and the answer through (server-sent events
    included; a caller hanging up closes the upstream request, so hub A withdraws the call), the buses
    carry one JSON request and one JSON answer (a prototype: no live output through them).
    """

    def __init__(self, r: Any, nc: Any, me: str) -> None:
        self.r, self.nc, self.me = r, nc, me
        self.http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(10, read=None), limits=httpx2.Limits(max_connections=200)
        )
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reply_stream = f"aihub:replies:{me}"
        self.reply_channel = f"aihub:replies:{me}"
        self.readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        aiohttp = optional("aiohttp")
        if aiohttp is not None:
            self.aio = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                connector=aiohttp.TCPConnector(limit=200),
                auto_decompress=False,
            )
        if self.r is not None:
            self.pubsub = self.r.pubsub()
            await self.pubsub.subscribe(self.reply_channel)
            self.readers += [
                asyncio.create_task(self._read_stream()),
                asyncio.create_task(self._read_pubsub()),
            ]

    def _settle(self, corr: str, answer: dict[str, Any]) -> None:
        future = self.waiting.pop(corr, None)
        if future is not None and not future.done():
            future.set_result(answer)

    async def _read_stream(self) -> None:
        last = "$"
        while True:
            for _stream, entries in (
                await self.r.xread({self.reply_stream: last}, block=5000, count=500) or []
            ):
                for entry_id, fields in entries:
                    last = entry_id
                    self._settle(fields[b"corr"].decode(), json.loads(fields[b"body"]))

    async def _read_pubsub(self) -> None:
        async for event in self.pubsub.listen():
            if event["type"] == "message":
                answer = json.loads(event["data"])
                self._settle(answer["corr"], answer)

    async def lookup(self, name: str) -> tuple[str, str] | None:
        value = await self.r.get(WS_KEY.format(name))
        if value is None:
            return None
        hub_id, address, _workspace_id = value.decode().split(" ")
        return hub_id, address

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        parts = scope["path"].split("/")  # '', transport, 'api', 'workspaces', name, 'tools', method
        if len(parts) != 7 or parts[1] not in TRANSPORTS:
            await respond(send, 404, {"detail": "not a forwarded route"})
            return
        transport, name, method = parts[1], parts[4], parts[6]
        target = await self.lookup(name)
        if target is None:
            await respond(send, 404, {"detail": f"no hub holds workspace {name!r}"})
            return
        hub_id, address = target
        headers = dict(scope["headers"])
        work = (
            self.forward_http(transport, address, "/" + "/".join(parts[2:]), body, headers, send)
            if transport.startswith("http")
            else self.forward_bus(transport, hub_id, name, method, body, send)
        )
        await until_disconnected(receive, work)

    async def forward_http(
        self, transport: str, address: str, path: str, body: bytes, headers: dict[bytes, bytes], send: Any
    ) -> None:
        accept = headers.get(b"accept", b"application/json").decode()
        upstream_headers = {
            "authorization": f"Bearer {TOKEN}",
            "accept": accept,
            "content-type": "application/json",
        }
        unreachable = (
            "the hub holding the workspace is unreachable (nothing was sent; the entry is stale): {!r}"
        )
        lost: dict[str, Any] = {"status_code": 502, "detail": "the hub holding the workspace went away: {!r}"}
        if transport == "http-aiohttp":
            aiohttp = optional("aiohttp")
            try:
                response = await self.aio.post(address + path, data=body, headers=upstream_headers)
            except aiohttp.ClientConnectorError as exc:
                await respond(send, 503, {"detail": unreachable.format(exc)})
                return
            except aiohttp.ClientError as exc:  # sent, then lost: never retried elsewhere (it may have run)
                await respond(send, 502, {**lost, "detail": lost["detail"].format(exc)})
                return
            try:
                await self._pipe(send, accept, response.status, response.headers.get("content-type", ""),
                                 response.content.iter_any(), aiohttp.ClientError, lost)  # fmt: skip
            finally:
                response.close()
            return
        request = self.http.build_request("POST", address + path, content=body, headers=upstream_headers)
        try:
            upstream = await self.http.send(request, stream=True)
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            await respond(send, 503, {"detail": unreachable.format(exc)})
            return
        except httpx2.TransportError as exc:  # sent, then lost: never retried elsewhere (it may have run)
            await respond(send, 502, {**lost, "detail": lost["detail"].format(exc)})
            return
        try:
            await self._pipe(send, accept, upstream.status_code, upstream.headers.get("content-type", ""),
                             upstream.aiter_raw(), httpx2.TransportError, lost)  # fmt: skip
        finally:
            await upstream.aclose()

    async def _pipe(
        self,
        send: Any,
        accept: str,
        status: int,
        content_type: str,
        chunks: Any,
        errors: Any,
        lost: dict[str, Any],
    ) -> None:
        """Relay hub A's answer as it comes (server-sent events unbuffered); hub A lost mid-answer: 502."""
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except errors as exc:
            if "event-stream" in accept:
                detail = {**lost, "detail": lost["detail"].format(exc)}
                event = f"event: error\ndata: {json.dumps(detail)}\n\n".encode()
                await send({"type": "http.response.body", "body": event, "more_body": False})
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def forward_bus(
        self, transport: str, hub_id: str, name: str, method: str, body: bytes, send: Any
    ) -> None:
        params = json.loads(body or b"{}")
        request = {"workspace": name, "method": method, "params": params}
        timeout = 40.0 + float(params.get("timeout", 0) if isinstance(params, dict) else 0)
        try:
            if transport == "nats":
                reply = await self.nc.request(
                    f"aihub.calls.{hub_id}", json.dumps(request).encode(), timeout=timeout
                )
                answer = json.loads(reply.data)
            else:
                answer = await self._redis_call(transport, hub_id, request, timeout)
        except Exception as exc:  # no responders, payload too large, timeout: the caller is told which
            await respond(send, 502, {"detail": f"{transport}: {type(exc).__name__}: {exc}"[:500]})
            return
        await respond(send, answer["status"], answer["body"])

    async def _redis_call(
        self, transport: str, hub_id: str, request: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        corr = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[corr] = future
        try:
            if transport == "redis-streams":
                await self.r.xadd(f"aihub:calls:{hub_id}", {"corr": corr, "reply": self.reply_stream,
                                  "body": json.dumps(request)}, maxlen=10_000, approximate=True)  # fmt: skip
            else:
                receivers = await self.r.publish(
                    f"aihub:calls:{hub_id}",
                    json.dumps({"corr": corr, "reply": self.reply_channel, "request": request}),
                )
                if receivers == 0:
                    raise RuntimeError(f"no hub listens on aihub:calls:{hub_id}")
            async with asyncio.timeout(timeout):
                return await future
        except BaseException:
            if not future.done():  # withdraw: hub A cancels the call, which sends $/cancelRequest
                with contextlib.suppress(Exception):
                    if transport == "redis-streams":
                        await self.r.xadd(f"aihub:calls:{hub_id}", {"corr": corr, "cancel": "1"})
                    else:
                        await self.r.publish(
                            f"aihub:calls:{hub_id}", json.dumps({"corr": corr, "cancel": True})
                        )
            raise
        finally:
            self.waiting.pop(corr, None)


async def respond(send: Any, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def until_disconnected(receive: Any, work: Awaitable[None]) -> None:
    """Run ``work``; if the caller hangs up first, cancel it (closing the upstream request)."""

    async def hung_up() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task, watcher = asyncio.ensure_future(work), asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def role_front(args: argparse.Namespace) -> None:
    nats = optional("nats")
    r = redis_client(args.redis_url)
    nc = await nats.connect(args.nats_url) if args.nats_url and nats is not None else None
    front = Front(r, nc, args.hub_id)
    await front.start()
    server = uvicorn.Server(
        uvicorn.Config(front, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")
    )
    await server.serve()


# --- part 2: two hubs, one hop -------------------------------------------------


class Buses:
    """redis-server and nats-server on loopback ports, started for this run."""

    def __init__(self, procs: Processes, scratch: Path) -> None:
        self.redis_url = self.nats_url = ""
        self.redis_pid = self.nats_pid = 0
        if shutil.which("redis-server") and optional("redis.asyncio") is not None:
            port = free_port()
            process = procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(scratch)])  # fmt: skip
            self.redis_url, self.redis_pid = f"redis://127.0.0.1:{port}", process.pid
        if shutil.which("nats-server") and optional("nats") is not None:
            port = free_port()
            process = procs.start(["nats-server", "-a", "127.0.0.1", "-p", str(port)])
            self.nats_url, self.nats_pid = f"nats://127.0.0.1:{port}", process.pid

    async def ready(self) -> None:
        for url in (self.redis_url, self.nats_url):
            if url:
                host, port = url.rsplit("/", 1)[1].split(":")
                await wait_for(functools.partial(_accepts, host, int(port)), 10, url)


async def _accepts(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


def role_command(role: str, port: int, hub_id: str, buses: Buses, home: Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.scaling_experiment", "--role", role, "--port", str(port),
               "--hub-id", hub_id, "--redis-url", buses.redis_url, "--nats-url", buses.nats_url]  # fmt: skip
    return command + (["--home", str(home)] if home is not None else [])


async def two_hubs(
    out: dict[str, Any], procs: Processes, scratch: Path, buses: Buses, n: int, rounds: int
) -> dict[str, Any]:
    say("\n== 2. two hubs: the call lands on B, the socket is on A ==")
    r = redis_client(buses.redis_url)
    home_a = scratch / "home-a"
    home_a.mkdir()
    port_a, port_b = free_port(), free_port()
    hub_a = procs.start(role_command("hub", port_a, "A", buses, home_a), home_a)
    front = procs.start(role_command("front", port_b, "B", buses), scratch)
    project = make_project(scratch / "two-project")
    async with api(port_a) as direct, api(port_b) as via:
        await wait_for(lambda: _healthy(direct), 30, "hub A")
        procs.client(port_a, project, "busy", home_a)
        await wait_for(lambda: _registered(r, "busy", "A"), 30, "the client on hub A, in the registry")
        await wait_for(lambda: _accepts("127.0.0.1", port_b), 30, "hub B")
        get = pct(await timed(n, lambda: r.get(WS_KEY.format("busy"))))
        say(
            f"registry lookup (one Redis GET from Python): p50 {get['p50']:,.0f} us, p99 {get['p99']:,.0f} us"
        )

        routes: dict[str, tuple[httpx2.AsyncClient, str]] = {"direct to A": (direct, "")}
        for transport in TRANSPORTS:
            if (transport == "nats" and not buses.nats_url) or (
                transport == "http-aiohttp" and optional("aiohttp") is None
            ):
                continue
            routes[f"via B, {transport}"] = (via, f"/{transport}")
        pids = {"A": hub_a.pid, "B": front.pid, "redis": buses.redis_pid, "nats": buses.nats_pid}
        samples: dict[str, list[float]] = {name: [] for name in routes}
        cpu: dict[str, dict[str, float]] = {name: dict.fromkeys(pids, 0.0) for name in routes}
        per_round = max(1, n // rounds)
        for _ in range(rounds):
            for name, (http, prefix) in routes.items():
                url = f"{prefix}/api/workspaces/busy/tools/read_files"

                async def once(http: httpx2.AsyncClient = http, url: str = url) -> None:
                    answer = await http.post(url, json={"files": ["small.py"]})
                    if answer.status_code != 200 or answer.json().get("status") != "success":
                        raise RuntimeError(f"{url}: {answer.status_code} {answer.text[:300]}")

                before = {k: cpu_seconds(pid) for k, pid in pids.items() if pid}
                samples[name] += await timed(per_round, once, warmup=5)
                for k, value in before.items():
                    cpu[name][k] += cpu_seconds(pids[k]) - value
        hop: dict[str, Any] = {"registry_get_us": get}
        base = pct(samples["direct to A"])
        say(
            f"{'small read_files over REST':<32} {'p50 us':>8} {'p99 us':>8} {'+p50':>7}   CPU us/call: A, B, redis, nats"
        )
        for name in routes:
            figures = pct(samples[name])
            per_call = {k: v / len(samples[name]) * 1e6 for k, v in cpu[name].items() if pids[k]}
            hop[name] = {**figures, "extra_p50_us": figures["p50"] - base["p50"], "cpu_us_per_call": per_call}
            say(f"{name:<32} {figures['p50']:>8,.0f} {figures['p99']:>8,.0f} {figures['p50'] - base['p50']:>+7,.0f}   "
                + ", ".join(f"{per_call.get(k, 0):,.0f}" for k in pids))  # fmt: skip

        big: dict[str, Any] = {}
        for name, (http, prefix) in routes.items():
            best, outcome = float("inf"), ""
            for _ in range(3):
                started = time.perf_counter()
                answer = await http.post(
                    f"{prefix}/api/workspaces/busy/tools/read_files", json={"files": ["big.txt"]}
                )
                best = min(best, time.perf_counter() - started)
                ok = answer.status_code == 200 and answer.json().get("status") == "success"
                outcome = "ok" if ok else f"{answer.status_code}: {answer.text[:160]}"
            big[name] = {"best_ms": best * 1000, "outcome": outcome}
            say(f"4 MiB read_files, {name:<22} {best * 1000:8,.0f} ms  {outcome}")
        hop["big_answer_4mib"] = big

        streaming = {}
        for name, (http, prefix) in (("direct to A", (direct, "")), ("via B, http", (via, "/http"))):
            streaming[name] = await _first_output(http, prefix)
            say(f"live output, {name:<14}: first event after {streaming[name]['first_output_ms']:,.0f} ms, "
                f"result after {streaming[name]['result_ms']:,.0f} ms (the command prints, sleeps 1 s, prints)")  # fmt: skip
        hop["live_output"] = streaming
        cancel = {}
        for name, (http, prefix) in (("direct to A", (direct, "")), ("via B, http", (via, "/http"))):
            cancel[name] = await _hang_up(http, prefix, direct)
            say(f"caller hangs up on a running command, {name:<14}: the command's process gone after "
                f"{cancel[name]['command_gone_ms']:,.0f} ms, hub A's call ended after {cancel[name]['call_ended_ms']:,.0f} ms")  # fmt: skip
        hop["hang_up"] = cancel
    await r.aclose()
    out["two_hubs"] = hop
    return hop


async def _registered(r: Any, name: str, hub_id: str) -> bool:
    value = await r.get(WS_KEY.format(name))
    return value is not None and value.decode().startswith(hub_id + " ")


async def _first_output(http: httpx2.AsyncClient, prefix: str) -> dict[str, float]:
    started = time.perf_counter()
    first = result = 0.0
    body = {"command": "echo first; sleep 1; echo second", "timeout": 20}
    async with http.stream("POST", f"{prefix}/api/workspaces/busy/tools/execute_command", json=body,
                           headers={"accept": "text/event-stream"}) as stream:  # fmt: skip
        async for line in stream.aiter_lines():
            if line == "event: output" and not first:
                first = time.perf_counter() - started
            if line in ("event: result", "event: error"):
                result = time.perf_counter() - started
                break
    return {"first_output_ms": first * 1000, "result_ms": result * 1000}


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    found.append(int(entry.name))
    return found


async def _hang_up(http: httpx2.AsyncClient, prefix: str, hub_a: httpx2.AsyncClient) -> dict[str, float]:
    seconds = f"{30 + secrets.randbelow(1000) / 1000:.3f}"
    body = {"command": f"sleep {seconds}", "timeout": 60}
    marker = f"sleep {seconds}".encode()
    async with http.stream("POST", f"{prefix}/api/workspaces/busy/tools/execute_command", json=body,
                           headers={"accept": "text/event-stream"}):  # fmt: skip
        await wait_for(lambda: _true(bool(_processes_with(marker))), 10, "the command to start")
    hung_up = time.perf_counter()  # leaving the block closed the connection
    await wait_for(lambda: _true(not _processes_with(marker)), 10, "the command to be killed")
    gone = time.perf_counter() - hung_up

    async def call_ended() -> bool:
        listed = (await hub_a.get("/api/workspaces")).json()
        return all(w["in_flight"] == 0 for w in listed if w["name"] == "busy")

    await wait_for(call_ended, 10, "hub A's call to end")
    return {"command_gone_ms": gone * 1000, "call_ended_ms": (time.perf_counter() - hung_up) * 1000}


async def _true(value: bool) -> bool:
    return value


# --- part 3: a hub dies ---------------------------------------------------------------


class Balancer:
    """A stand-in load balancer: each TCP connection goes to the first backend that accepts it."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.backends:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        self.server.close()


async def hub_dies(out: dict[str, Any], procs: Processes, scratch: Path, buses: Buses) -> None:
    say("\n== 3. hub A dies (SIGKILL) while a call to its workspace is in flight ==")
    r = redis_client(buses.redis_url)
    homes = {h: scratch / f"home-{h}-3" for h in ("A", "C")}
    for home in homes.values():
        home.mkdir()
    ports = {"A": free_port(), "C": free_port(), "B": free_port()}
    hub_a = procs.start(role_command("hub", ports["A"], "A3", buses, homes["A"]), homes["A"])
    procs.start(role_command("hub", ports["C"], "C3", buses, homes["C"]), homes["C"])
    procs.start(role_command("front", ports["B"], "B3", buses), scratch)
    balancer = Balancer([ports["A"], ports["C"]])
    lb_port = await balancer.start()
    project = make_project(scratch / "mobile-project")
    try:
        async with api(ports["A"]) as a, api(ports["C"]) as c, api(ports["B"]) as via:
            await wait_for(lambda: _healthy(a), 30, "hub A")
            await wait_for(lambda: _healthy(c), 30, "hub C")
            await wait_for(lambda: _accepts("127.0.0.1", ports["B"]), 30, "hub B")
            procs.client(lb_port, project, "mobile", homes["A"])
            await wait_for(lambda: _registered(r, "mobile", "A3"), 30, "the client on hub A")
            call = asyncio.create_task(via.post("/http/api/workspaces/mobile/tools/execute_command",
                                                json={"command": "sleep 10", "timeout": 20}))  # fmt: skip
            await asyncio.sleep(0.5)
            killed = time.perf_counter()
            hub_a.send_signal(signal.SIGKILL)
            answer = await call
            failed_after = time.perf_counter() - killed
            say(f"the call in flight through B: HTTP {answer.status_code} after {failed_after * 1000:,.0f} ms "
                f"({answer.text[:120]})")  # fmt: skip
            stale = await r.get(WS_KEY.format("mobile"))
            during = await via.post(
                "/http/api/workspaces/mobile/tools/read_files", json={"files": ["small.py"]}
            )
            say(f"a new call before the client is back: HTTP {during.status_code} ({during.text[:100]}); "
                f"registry still says {stale.decode().split()[0] if stale else None!r}")  # fmt: skip
            moved = await wait_for(lambda: _registered(r, "mobile", "C3"), 30, "the client on hub C")
            started = time.perf_counter()

            async def routable() -> bool:
                answer = await via.post(
                    "/http/api/workspaces/mobile/tools/read_files", json={"files": ["small.py"]}
                )
                return answer.status_code == 200

            await wait_for(routable, 30, "a call through B to succeed again")
            back = moved + (time.perf_counter() - started)
            say(f"the client reconnected through the balancer to hub C and was registered there after "
                f"{moved * 1000:,.0f} ms; calls through B succeed again after {back * 1000:,.0f} ms")  # fmt: skip
            out["hub_dies"] = {
                "in_flight_status": answer.status_code,
                "in_flight_failed_ms": failed_after * 1000,
                "new_call_status_before_reconnect": during.status_code,
                "stale_entry_before_reconnect": stale.decode() if stale else None,
                "registered_on_c_ms": moved * 1000,
                "routable_again_ms": back * 1000,
            }
    finally:
        await balancer.close()
        await r.aclose()


# --- main ---------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    n = args.n or (200 if args.quick else 1000)
    idle = args.idle or (100 if args.quick else 997)  # + the 3 busy clients: the hub's maximum of 1,000
    idle_s = 3.0 if args.quick else 25.0
    scratch = Path(tempfile.mkdtemp(prefix="aihub-scaling-"))
    procs = Processes(scratch / "logs")
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "python": sys.version.split()[0], "cores": os.cpu_count(),
        "n": n, "quick": args.quick,
    }  # fmt: skip
    say(f"127.0.0.1, Python {out['python']}, {out['cores']} cores; n={n}, {idle} idle workspaces")
    try:
        async with asyncio.timeout(args.deadline):
            if "one" in args.parts:
                await one_hub(out, procs, scratch, n, idle, idle_s)
            if {"two", "dies"} & set(args.parts):
                buses = Buses(procs, scratch)
                if not buses.redis_url:
                    say(
                        "\nparts 2 and 3 need redis-server and the redis package (see the docstring): skipped"
                    )
                else:
                    if not buses.nats_url:
                        say("(no nats-server or nats-py: the NATS route is skipped)")
                    await buses.ready()
                    if "two" in args.parts:
                        await two_hubs(out, procs, scratch, buses, n, rounds=5)
                    if "dies" in args.parts:
                        await hub_dies(out, procs, scratch, buses)
    finally:
        for process in procs.started:
            process.poll()
        procs.report_deaths()
        await asyncio.to_thread(procs.stop_all)
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))
    say(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling_experiment")
    parser.add_argument(
        "-n", type=int, default=0, help="calls per latency figure (default 1000; --quick 200)"
    )
    parser.add_argument(
        "--idle", type=int, default=0, help="idle workspaces in part 1 (default 999; --quick 100)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--parts", nargs="+", default=["one", "two", "dies"], choices=["one", "two", "dies"])
    parser.add_argument("--deadline", type=float, default=900, help="seconds before the whole run is stopped")
    parser.add_argument("--role", choices=["hub", "front", "model"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hub-id", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", default="", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.role == "hub":
        asyncio.run(role_hub(parsed))
    elif parsed.role == "front":
        asyncio.run(role_front(parsed))
    elif parsed.role == "model":
        config = uvicorn.Config(
            StandInModel(), host="127.0.0.1", port=parsed.port, log_level="warning", lifespan="off"
        )
        asyncio.run(uvicorn.Server(config).serve())
    else:
        sys.exit(asyncio.run(main(parsed)))
