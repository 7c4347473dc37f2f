"""``make bench``: the figures of BENCHMARKS.md, each with its baseline from the same run, and their ratio.

Everything runs on 127.0.0.1 and is bounded. A real hub (uvicorn; in this
process where the internal API is timed, a separate ``aihub serve`` process
where its memory is), real ``aihub-client`` processes on temporary projects,
and the baselines: a raw websockets echo server, ``find``, ``git ls-files``,
``cat`` and ``grep -rn`` on the same trees. Prints a table and writes
``bench/results.json``.

    python -m benchmarks [-n 2000] [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx2
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve

from benchmarks.link import SlowLink
from benchmarks.processes import (
    free_port,
    rss_kib,
    start_client,
    start_hub,
    stop,
    wait_connected,
    wait_healthy,
)
from hub.app import create_app
from hub.component import WorkspaceHub
from hub.registry import Workspace
from hub.settings import HubSettings
from schemas.memory import keep_large_buffers

TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a loopback-only run
RESULTS = Path("bench/results.json")


@dataclass
class Row:
    figure: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    notes: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        verdict = {True: "met", False: "NOT met", None: ""}[row.met]
        print(
            f"{row.figure:<58} {row.value:>12,.1f} {row.unit:<6} {ratio:>8}  {row.target:<22} {verdict}",
            flush=True,
        )
        if row.baseline:
            base = f"{row.baseline_value:,.1f}" if row.baseline_value is not None else ""
            print(f"    baseline: {row.baseline:<48} {base:>12}", flush=True)
        if row.notes:
            print(f"    {row.notes}", flush=True)


# --- helpers ----------------------------------------------------------------


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


async def _throughput(total: int, in_flight: int, once: Callable[[], Awaitable[object]]) -> float:
    """Calls per second with ``in_flight`` callers each looping on ``once``."""
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await once()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return total / (time.perf_counter() - started)


def _run_seconds(command: list[str], cwd: Path | None = None, repeat: int = 3) -> float:
    """Best of ``repeat`` wall-clock runs of a command, output discarded."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - started)
    return best


async def _best_of(repeat: int, once: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        await once()
        best = min(best, time.perf_counter() - started)
    return best


class EchoServer:
    """The baseline: a raw websockets echo on loopback, Python on both ends.

    ``separate=True`` serves it from a process of its own (``benchmarks.echo``), as
    the client serves the hub: each round trip then wakes another process twice.
    Otherwise this process serves it too, and a round trip never leaves its loop.
    """

    def __init__(self, *, separate: bool) -> None:
        self.separate = separate
        self._process: subprocess.Popen[bytes] | None = None
        self._server: Server | None = None

    async def __aenter__(self) -> ClientConnection:
        if self.separate:
            port = free_port()
            self._process = subprocess.Popen(  # noqa: ASYNC220 - started before anything is timed
                [sys.executable, "-m", "benchmarks.echo", str(port)], stdout=subprocess.PIPE
            )
            assert self._process.stdout is not None
            ready = await asyncio.wait_for(asyncio.to_thread(self._process.stdout.readline), 20)
            if ready.strip() != b"ready":
                raise RuntimeError("the echo server did not start")
        else:

            async def echo(ws: ServerConnection) -> None:
                async for frame in ws:
                    await ws.send(frame)

            self._server = await serve(echo, "127.0.0.1", 0, compression=None).__aenter__()
            port = next(iter(self._server.sockets)).getsockname()[1]
        self._client = await connect(f"ws://127.0.0.1:{port}", compression=None).__aenter__()
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)


class Pipelined:
    """Echo calls with many in flight on one connection (answers come back in order)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.waiting: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for _ in self.ws:
            (await self.waiting.get()).set_result(None)

    async def call(self, message: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.put_nowait(future)
        await self.ws.send(message)
        await future


@dataclass
class Setup:
    hub: WorkspaceHub
    port: int
    home: Path
    clients: list[subprocess.Popen[bytes]] = field(default_factory=list)

    async def connect_client(
        self,
        root: Path,
        name: str,
        timeout: float = 30,
        *,
        options: tuple[str, ...] = (),
        port: int | None = None,
    ) -> Workspace:
        process = start_client(
            f"ws://127.0.0.1:{port or self.port}/ws/workspace",
            root,
            name,
            {"AIHUB_TOKEN": TOKEN, "AIHUB_HOME": str(self.home)},
            *options,
        )
        self.clients.append(process)
        deadline = time.monotonic() + timeout
        while (workspace := self.hub.registry.find(name)) is None:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the client for {name!r} did not connect")
            await asyncio.sleep(0.02)
        return workspace


# --- the figures -------------------------------------------------------------


async def _echo_figures(separate: bool, message: str, n: int, total: int) -> tuple[list[float], float]:
    """Round-trip times of a raw echo, and its calls/s with 64 in flight."""
    async with EchoServer(separate=separate) as ws:

        async def echo_once() -> None:
            await ws.send(message)
            await ws.recv()

        latencies = await _time(n, echo_once)
        piped = Pipelined(ws)
        rate = await _throughput(total, 64, lambda: piped.call(message))
        piped.reader.cancel()
    return latencies, rate


async def round_trips(report: Report, setup: Setup, project: Path, n: int) -> None:
    workspace = await setup.connect_client(project, "bench")
    params = {"files": ["small.py"]}
    request_size = len('{"jsonrpc":"2.0","id":1,"method":"read_files","params":{"files":["small.py"]}}')
    message = "x" * request_size
    total = max(2000, n * 2)
    # The floor of a hub <-> client hop is an echo served by another process; the same-process echo
    # (the first version's baseline) is shown beside it.
    echo, echo_rate = await _echo_figures(True, message, n, total)
    local_echo, local_rate = await _echo_figures(False, message, n, total)
    internal = await _time(n, lambda: workspace.call("read_files", params, timeout=10))
    e50, e99 = _percentiles(echo)
    l50, l99 = _percentiles(local_echo)
    i50, i99 = _percentiles(internal)
    report.add(Row("small read_files, internal API: p50", i50, "us", "echo p50 (another process)", e50,
                   i50 / e50, "<= 1.5x echo", i50 / e50 <= 1.5,
                   notes=f"{i50 / l50:.1f}x the same-process echo"))  # fmt: skip
    report.add(Row("small read_files, internal API: p99", i99, "us", "echo p99 (another process)", e99,
                   i99 / e99, "(p99, no target)", notes=f"{i99 / l99:.1f}x the same-process echo"))  # fmt: skip
    report.add(Row("raw echo in the same process: p50 (reference)", l50, "us", "echo p50 (another process)",
                   e50, l50 / e50, "(reference)"))  # fmt: skip

    async with httpx2.AsyncClient(
        base_url=f"http://127.0.0.1:{setup.port}", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as http:
        healthz = await _time(n, lambda: http.get("/healthz"))
        rest = await _time(n, lambda: http.post("/api/workspaces/bench/tools/read_files", json=params))
    h50, _ = _percentiles(healthz)
    r50, _ = _percentiles(rest)
    report.add(Row("small read_files via REST (keep-alive): p50", r50, "us", "GET /healthz p50 + echo p50",
                   h50 + e50, r50 / (h50 + e50), "<= 2x", r50 / (h50 + e50) <= 2))  # fmt: skip

    rate = await _throughput(total, 64, lambda: workspace.call("read_files", params, timeout=30))
    report.add(Row("calls/s, 1 workspace, 64 in flight", rate, "/s", "echo calls/s, 64 in flight (another process)",
                   echo_rate, rate / echo_rate, ">= 0.5x echo", rate / echo_rate >= 0.5,
                   notes=f"{rate / local_rate:.2f}x the same-process echo"))  # fmt: skip


def _make_tree(root: Path, files: int, per_dir: int = 100, content: str = "x = 1\n") -> None:
    for i in range(files):
        folder = root / f"d{i // (per_dir * per_dir)}" / f"s{(i // per_dir) % per_dir}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.py").write_text(content)


async def listing(report: Report, setup: Setup, scratch: Path, files: int) -> None:
    root = scratch / "tree"
    _make_tree(root, files)
    (root / "ignored").mkdir()
    for i in range(files // 10):
        (root / "ignored" / f"g{i}.log").write_text("log\n")
    (root / ".gitignore").write_text("ignored/\n*.log\n")
    git = shutil.which("git")
    if git:
        await asyncio.to_thread(subprocess.run, [git, "init", "-q"], cwd=root, check=True)
        await asyncio.to_thread(subprocess.run, [git, "add", "-A"], cwd=root, check=True)
    workspace = await setup.connect_client(root, "tree")

    async def list_all(respect: bool) -> int:
        answer = await workspace.call(
            "list_files",
            {"path": "./", "recursive": True, "respect_gitignore": respect, "max_entries": 100_000},
            timeout=120,
        )
        result = getattr(answer, "result", None) or {}
        return len(result.get("files", []))

    find = _run_seconds(["find", str(root), "-not", "-path", "*/.git/*"])
    everything = 0.0
    for respect in (False, True):
        ours = await _best_of(3, lambda respect=respect: list_all(respect))  # type: ignore[misc]
        everything = everything or ours
        count = await list_all(respect)
        label = "with .gitignore" if respect else "everything"
        report.add(Row(f"recursive list_files, {files:,} files ({label})", ours * 1000, "ms", "find on the same tree",
                       find * 1000, ours / find, "<= 2x find", ours / find <= 2, f"{count:,} entries answered"))  # fmt: skip
    if git:
        ls_files = _run_seconds([git, "ls-files"], cwd=root)
        report.add(Row("  (git ls-files on the same tree, for reference)", ls_files * 1000, "ms"))
    # find reads folders only; each of our rows has the size, one fstatat per entry: find with the
    # same information costs that too.
    same = _run_seconds(["find", str(root), "-not", "-path", "*/.git/*", "-printf", "%P\t%y\t%s\n"])
    report.add(Row("  (find -printf of path, type and size: the rows' information, for reference)",
                   same * 1000, "ms", notes=f"list_files (everything) is {everything / same:.1f}x it"))  # fmt: skip


async def reading(report: Report, setup: Setup, scratch: Path, big_mib: int, small_files: int) -> None:
    root = scratch / "reading"
    root.mkdir()
    line = "0123456789abcdef" * 7 + "\n"  # 113 bytes
    lines = big_mib * 1024 * 1024 // len(line)
    big = root / "big.txt"
    big.write_text(line * lines)
    small = root / "small"
    small.mkdir()
    for i in range(small_files):
        (small / f"s{i}.py").write_text(f"# file {i}\n" + "pass\n" * 20)
    workspace = await setup.connect_client(root, "reading")
    page = 60_000  # lines per ranged read: about 6.5 MiB, under the answer budget

    async def read_big() -> None:
        offset = 1
        while offset <= lines:
            await workspace.call(
                "read_files", {"files": ["big.txt"], "offset": offset, "limit": page}, timeout=60
            )
            offset += page

    ours = await _best_of(3, read_big)
    cat = _run_seconds(["cat", str(big)])
    size_mb = big.stat().st_size / 1e6
    report.add(Row(f"read_files of a {big_mib} MiB text file (ranged pages)", size_mb / ours, "MB/s", "cat of the same",
                   size_mb / cat, (size_mb / ours) / (size_mb / cat), ">= 200 MB/s", size_mb / ours >= 200))  # fmt: skip
    names = [f"small/s{i}.py" for i in range(small_files)]

    async def read_small() -> None:
        answer = await workspace.call("read_files", {"files": names}, timeout=60)
        result = getattr(answer, "result", None)
        if not result or len(result["files"]) != small_files:
            raise RuntimeError(f"read_files of {small_files} files failed: {answer!r:.300}")

    ours_small = await _best_of(3, read_small)
    cat_small = _run_seconds(["sh", "-c", "cat small/* > /dev/null"], cwd=root)
    report.add(Row(f"read_files of {small_files:,} small files in one call", ours_small * 1000, "ms", "cat of the same",
                   cat_small * 1000, ours_small / cat_small, "<= 1 s", ours_small <= 1))  # fmt: skip


async def searching(report: Report, setup: Setup, scratch: Path, files: int) -> None:
    root = scratch / "search"
    body = "".join(f"def function_{i}(x):\n    return x + {i}\n\n" for i in range(30))
    _make_tree(root, files, content=body)
    (root / "d0" / "s0" / "f0.py").write_text(body + "NEEDLE = 'found'\n")
    workspace = await setup.connect_client(root, "search")

    async def search() -> None:
        answer = await workspace.call("search_files", {"pattern": "NEEDLE = .found"}, timeout=120)
        if getattr(answer, "result", None) is None:
            raise RuntimeError(f"search_files failed: {answer!r:.300}")

    ours = await _best_of(3, search)
    grep = _run_seconds(["grep", "-rnE", "NEEDLE = .found", "."], cwd=root)
    report.add(Row(f"search_files over {files:,} files", ours * 1000, "ms", "grep -rn on the same", grep * 1000,
                   ours / grep, "<= 2x grep", ours / grep <= 2))  # fmt: skip


REPO = Path(__file__).resolve().parents[1]
#: The link of the compression figure: 20 Mbit/s each way, 20 ms round trip (a VPN, a laptop's Wi-Fi).
LINK_BYTES_PER_S = 2_500_000
LINK_DELAY_S = 0.010


async def link(report: Report, setup: Setup, scratch: Path, quick: bool) -> None:
    """Compression on and off, over a slow link and over loopback (the client's default picks by host)."""
    root = scratch / "link"
    sources = root / "src"
    sources.mkdir(parents=True)
    names = []
    for package in ("hub", "rpc_client", "schemas"):  # real source code, as the AI reads it
        for path in sorted((REPO / package).glob("*.py")):
            (sources / f"{package}_{path.name}").write_bytes(path.read_bytes())
            names.append(f"src/{package}_{path.name}")
    names = names[:10] if quick else names
    size = sum((root / n).stat().st_size for n in names)
    tree_files = 500 if quick else 5_000
    _make_tree(root / "tree", tree_files)

    async def timed(workspace: Workspace) -> tuple[float, float]:
        async def read() -> None:
            answer = await workspace.call("read_files", {"files": names}, timeout=60)
            if getattr(answer, "result", None) is None:
                raise RuntimeError(f"read_files failed: {answer!r:.300}")

        async def listing() -> None:
            answer = await workspace.call("list_files", {"path": "tree", "recursive": True}, timeout=60)
            if not (getattr(answer, "result", None) or {}).get("files"):
                raise RuntimeError(f"list_files failed: {answer!r:.300}")

        return await _best_of(3, read), await _best_of(3, listing)

    async def figures(port: int, label: str, remote: bool) -> None:
        timings: dict[str, tuple[float, float]] = {}
        for mode in ("deflate", "none"):
            workspace = await setup.connect_client(
                root, f"link-{label}-{mode}", options=("--compression", mode), port=port
            )
            timings[mode] = await timed(workspace)
        (read_on, list_on), (read_off, list_off) = timings["deflate"], timings["none"]
        # The client compresses by default to a remote hub only: that should be where it is faster.
        target = "< 1x: on by default" if remote else "(off by default)"
        report.add(Row(f"read_files of {len(names)} source files ({size / 1e3:,.0f} kB), {label}, compressed",
                       read_on * 1000, "ms", "the same uncompressed", read_off * 1000, read_on / read_off, target,
                       read_on < read_off if remote else None))  # fmt: skip
        report.add(Row(f"list_files of {tree_files:,} files, {label}, compressed", list_on * 1000, "ms",
                       "the same uncompressed", list_off * 1000, list_on / list_off, target,
                       list_on < list_off if remote else None))  # fmt: skip

    async with SlowLink(setup.port, LINK_BYTES_PER_S, LINK_DELAY_S) as slow:
        await figures(
            slow.port,
            f"over a {LINK_BYTES_PER_S * 8 / 1e6:g} Mbit/s link, {LINK_DELAY_S * 2e3:g} ms RTT",
            True,
        )
    await figures(setup.port, "on loopback", False)


async def idle_workspaces(report: Report, scratch: Path, count: int, n: int) -> None:
    """Hub memory per idle workspace, and a call's p99 with them connected (a separate hub process)."""
    home = scratch / "idle-home"
    home.mkdir()
    port = free_port()
    env = {"AIHUB_TOKEN": TOKEN, "AIHUB_HOME": str(home)}
    url = f"ws://127.0.0.1:{port}/ws/workspace"
    hub = start_hub(port, env, "--max-workspaces", str(count + 10))
    project = scratch / "idle-project"
    project.mkdir()
    (project / "small.py").write_text("print('hello')\n" * 10)
    client: subprocess.Popen[bytes] | None = None
    sockets: list[ClientConnection] = []
    try:
        async with httpx2.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as http:
            await wait_healthy(http)
            client = start_client(url, project, "busy", env)
            await wait_connected(http, "busy")

            async def call() -> None:
                await http.post("/api/workspaces/busy/tools/read_files", json={"files": ["small.py"]})

            alone = await _time(n, call)
            before = rss_kib(hub.pid)
            for i in range(count):
                ws = await connect(
                    url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, compression=None
                )
                hello = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {"workspace": f"idle-{i}"},
                }
                await ws.send(json.dumps(hello))
                await ws.recv()
                sockets.append(ws)
            await asyncio.sleep(1)
            after = rss_kib(hub.pid)
            crowded = await _time(n, call)
    finally:
        for ws in sockets:
            await ws.close()
        await stop([client, hub])
    per = (after - before) / count
    report.add(Row(f"hub memory per idle workspace ({count:,} connected)", per, "KiB", "", None, None,
                   "<= 100 KiB", per <= 100, f"hub RSS {before:,} -> {after:,} KiB"))  # fmt: skip
    _, a99 = _percentiles(alone)
    _, c99 = _percentiles(crowded)
    report.add(Row(f"p99 of a REST call with {count:,} idle workspaces", c99, "us", "the same call's p99 alone", a99,
                   c99 / a99, "<= 3x alone", c99 / a99 <= 3))  # fmt: skip


async def start_times(report: Report, scratch: Path) -> None:
    home = scratch / "start-home"
    home.mkdir()
    port = free_port()
    env = {"AIHUB_TOKEN": TOKEN, "AIHUB_HOME": str(home)}
    project = scratch / "start-project"
    project.mkdir()
    (project / "a.txt").write_text("a\n")
    started = time.perf_counter()
    hub = start_hub(port, env)
    client: subprocess.Popen[bytes] | None = None
    try:
        async with httpx2.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        ) as http:
            await wait_healthy(http, poll=0.005)
            hub_ready = time.perf_counter() - started
            started = time.perf_counter()
            client = start_client(f"ws://127.0.0.1:{port}/ws/workspace", project, "start", env)
            await wait_connected(http, "start", poll=0.005)
            client_ready = time.perf_counter() - started
            answer = await http.post("/api/workspaces/start/tools/read_files", json={"files": ["a.txt"]})
            first_call = time.perf_counter() - started
            assert answer.json()["status"] == "success"
    finally:
        await stop([client, hub])
    report.add(
        Row("hub start to answering /healthz", hub_ready * 1000, "ms", target="<= 1 s", met=hub_ready <= 1)
    )
    report.add(Row("client start to connected", client_ready * 1000, "ms", target="<= 1 s", met=client_ready <= 1,
                   notes=f"and to its first answered call: {first_call * 1000:,.0f} ms"))  # fmt: skip


FIGURES = ("round_trips", "listing", "reading", "searching", "link", "idle", "start")


async def main(args: argparse.Namespace) -> int:
    only = set(args.only or FIGURES)
    quick = args.quick
    scratch = Path(tempfile.mkdtemp(prefix="aihub-bench-"))
    project = scratch / "project"
    project.mkdir()
    (project / "small.py").write_text("print('hello')\n" * 10)
    home = scratch / "home"
    home.mkdir()
    port = free_port()
    app = create_app(HubSettings(token=TOKEN, home=home))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    setup = Setup(app.state.hub, port, home)
    report = Report()
    print(f"127.0.0.1, Python {sys.version.split()[0]}, {os.cpu_count()} cores, {platform.machine()}; "
          f"{'quick sizes' if quick else 'full sizes'}", flush=True)  # fmt: skip
    print(f"{'figure':<58} {'value':>12} {'unit':<6} {'ratio':>8}  {'target':<22}", flush=True)
    try:
        if "round_trips" in only:
            await round_trips(report, setup, project, args.n)
        if "listing" in only:
            await listing(report, setup, scratch, 2_000 if quick else 100_000)
        if "reading" in only:
            await reading(report, setup, scratch, 2 if quick else 50, 100 if quick else 2_000)
        if "searching" in only:
            await searching(report, setup, scratch, 500 if quick else 20_000)
        if "link" in only:
            await link(report, setup, scratch, quick)
        if "idle" in only:
            await idle_workspaces(report, scratch, 50 if quick else 1_000, min(args.n, 500))
        if "start" in only:
            await start_times(report, scratch)
    finally:
        await stop(setup.clients)
        server.should_exit = True
        await serving
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(  # noqa: ASYNC240
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "python": sys.version.split()[0],
                "cores": os.cpu_count(),
                "quick": quick,
                "n": args.n,
                "rows": [asdict(row) for row in report.rows],
            },
            indent=1,
        )
    )
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("-n", type=int, default=2000, help="round trips per latency figure (default 2000)")
    parser.add_argument("--quick", action="store_true", help="small trees and files (the smoke test)")
    parser.add_argument("--only", nargs="+", choices=FIGURES, help="run only these figures")
    # The hub timed here runs on the loop and the allocator settings `aihub serve` runs with
    # (uvicorn picks uvloop when installed).
    keep_large_buffers()
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main(parser.parse_args())))
    sys.exit(uvloop.run(main(parser.parse_args())))
