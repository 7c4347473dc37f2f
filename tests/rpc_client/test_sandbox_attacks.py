"""More attacks on the sandbox and the file tools, found in a dedicated attack pass.

Two kinds of test live here:

* attacks that were already refused, kept as regressions (devices, sockets, magic
  ``/proc`` links, chains mixing relative and absolute targets, races on listings);
* attacks that worked before this file existed, each with the fix it pinned down:

  - a file name that is not UTF-8 made every answer that carried it unencodable: the
    client's WebSocket broke (code 1006) and every call in flight, running commands
    included, was lost;
  - ``read_files`` and ``list_files`` answers could grow past the hub's 16 MiB frame
    limit (the hub then closes the connection, code 1009) using nothing but
    ``write_file``: control characters cost six bytes each in JSON and a failed path is
    quoted up to five times (key, message, summary);
  - a chain of 40 links with long ``a/../a/..`` bodies costs ~64 000 steps to resolve,
    and a listing resolves every link it shows: 200 such links took 30 s, a default
    listing of 5000 of them about 15 minutes, a worker thread busy all along;
  - one folder that can be read but not searched (mode r--) made a recursive listing
    of everything above it fail with ``denied``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import rpc_client.sandbox as sandbox_module
from rpc_client import files
from rpc_client.dispatcher import ClientContext, dispatch
from rpc_client.files import FileLimits
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox, SandboxError
from schemas.errors import ErrorCode
from schemas.tools import ListFilesParams
from tests.rpc_client.helpers import NoApprover

OUT = ErrorCode.PATH_OUTSIDE_ROOT
NOT_FILE = ErrorCode.NOT_A_FILE
NOT_DIR = ErrorCode.NOT_A_DIRECTORY
#: The hub's frame limit (hub.settings.HubSettings.max_frame_bytes).
HUB_FRAME_BYTES = 16 * 1024 * 1024


class Hung(BaseException):
    """Raised by the watchdog; a BaseException so no ``except Exception`` can swallow it."""


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """Fail instead of hanging: no test here may take more than 15 s."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hung("the operation blocked or took far too long")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 15)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    base = Path(os.path.realpath(tmp_path))
    (base / "secret.txt").write_text("TOP SECRET")
    (base / "outside").mkdir()
    (base / "outside" / "s.txt").write_text("OUTSIDE SECRET")
    (base / "root").mkdir()
    (base / "root" / "ok.txt").write_text("ok")
    (base / "root" / "sub").mkdir()
    return base


@pytest.fixture
def sb(base: Path) -> Iterator[Sandbox]:
    with Sandbox(base / "root") as sandbox:
        yield sandbox


def wire(sb: Sandbox, method: str, params: dict[str, Any], limits: FileLimits | None = None) -> bytes:
    """The answer frame the client would send for one request, as bytes on the wire."""
    ctx = ClientContext(
        sandbox=sb,
        policy=CommandPolicy(DangerousMode.DENY, read_only=False, approver=NoApprover()),
        limits=limits or FileLimits(),
        report=lambda line: None,
    )
    # ensure_ascii: a lone surrogate travels as a \\udcxx escape, as any JSON peer may send it.
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    text = asyncio.run(dispatch(ctx, request))
    return text.encode("utf-8")  # what websockets does before sending; must not raise


# --- regressions: attacks that were already refused -------------------------------------


def test_devices_sockets_and_fifos_are_never_opened(base: Path, sb: Sandbox) -> None:
    root = base / "root"
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    os.mknod(root / "loop", stat.S_IFBLK | 0o666, os.makedev(7, 0))
    os.mkfifo(root / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "sock"))
    try:
        for name in ["null", "zero", "loop", "fifo", "sock"]:
            os.symlink(name, root / f"to_{name}")
            os.symlink(str(root / name), root / f"abs_to_{name}")
            for path in [name, f"to_{name}", f"abs_to_{name}", f"sub/../{name}"]:
                with pytest.raises(SandboxError) as info:
                    sb.read_file(path, max_bytes=10)
                assert info.value.code == NOT_FILE
                with pytest.raises(SandboxError) as info:
                    sb.write_file(path, b"x")
                assert info.value.code == NOT_FILE
                with pytest.raises(SandboxError) as info:
                    sb.list_dir(path, recursive=True, max_entries=10)
                assert info.value.code == NOT_DIR
        assert stat.S_ISCHR(os.lstat(root / "null").st_mode)  # not replaced by the write
        sb.list_dir(".", recursive=True, max_entries=1000)
    finally:
        server.close()


MAGIC_LINKS = {
    "fd": "/proc/self/fd/0",
    "fd_rel": "../" * 30 + "proc/self/fd/0",
    "cwd": "/proc/self/cwd",
    "self_root": "/proc/self/root",
    "stdin": "/dev/stdin",
    "thread_root": "/proc/thread-self/root",
    "evil": "{root}-evil/x",
    "dotted_sibling": "{root}.d/x",
    "mixed1": "sub/mixed2",  # relative -> absolute in -> relative -> absolute out
    "sub/mixed2": "{root}/sub/mixed3",
    "sub/mixed3": "../mixed4",
    "mixed4": "{root}/../secret.txt",
}


@pytest.mark.parametrize("op", ["read", "write", "list"])
def test_magic_and_mixed_links_are_refused(base: Path, sb: Sandbox, op: str) -> None:
    root = base / "root"
    for name, target in MAGIC_LINKS.items():
        os.symlink(target.replace("{root}", str(root)), root / name)
    for name in MAGIC_LINKS:
        for path in [name, f"{name}/etc/passwd", f"{name}/..", f"./{name}/../secret.txt"]:
            with pytest.raises(SandboxError) as info:
                if op == "read":
                    sb.read_file(path, max_bytes=100)
                elif op == "write":
                    sb.write_file(path, b"PWNED")
                else:
                    sb.list_dir(path, recursive=True, max_entries=10)
            assert info.value.code in (OUT, ErrorCode.NOT_FOUND, NOT_DIR, NOT_FILE), (path, info.value)
            rest = info.value.message.replace(repr(path), "")
            assert "SECRET" not in rest and "/proc" not in rest and str(base) not in rest
    assert (base / "secret.txt").read_text() == "TOP SECRET"
    assert sorted(p.name for p in base.iterdir()) == ["outside", "root", "secret.txt"]


def test_writes_into_the_root_itself_make_nothing(base: Path, sb: Sandbox) -> None:
    before = sorted(os.listdir(base / "root"))
    for path in [".", "./", "x/..", "x/.", "x/y/../..", "sub/..", "sub/x/../.."]:
        with pytest.raises(SandboxError) as info:
            sb.write_file(path, b"x")
        assert info.value.code in (NOT_FILE, ErrorCode.INVALID_PATH), path
    with pytest.raises(SandboxError):
        sb.write_file("", b"x")
    assert sorted(os.listdir(base / "root")) == before
    assert os.listdir(base / "root" / "sub") == []


def test_listing_races_never_show_or_enter_outside(base: Path, sb: Sandbox) -> None:
    """A folder flips between a real folder and a link to outside while listings run."""
    root = base / "root"
    (root / "real").mkdir()
    (root / "real" / "in.txt").write_text("in")
    for i in range(20):
        (base / "outside" / f"leak{i}.txt").write_text("x")
    os.symlink("real", root / "flip")
    stop = threading.Event()

    def flipper() -> None:
        flip = False
        while not stop.is_set():
            flip = not flip
            os.symlink(str(base / "outside") if flip else "real", root / "flip.tmp")
            os.rename(root / "flip.tmp", root / "flip")

    thread = threading.Thread(target=flipper, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for path in ["flip", ".", "flip/."]:
                try:
                    entries, _ = sb.list_dir(path, recursive=True, max_entries=100)
                except SandboxError as exc:
                    assert exc.code in (OUT, ErrorCode.NOT_FOUND)
                    continue
                assert not any(e.name.startswith("leak") for e in entries), entries
            try:
                sb.write_file("flip/new.txt", b"w")
            except SandboxError as exc:
                assert exc.code in (OUT, ErrorCode.NOT_FOUND)
    finally:
        stop.set()
        thread.join()
    assert not (base / "outside" / "new.txt").exists()


# --- non-UTF-8 names: answers that could not be sent -------------------------------------


@pytest.fixture
def latin1_tree(base: Path) -> Path:
    raw = os.fsencode(base / "root")
    os.mkdir(raw + b"/caf\xe9")
    with open(raw + b"/caf\xe9/menu.txt", "wb") as f:
        f.write(b"soup")
    os.symlink(b"caf\xe9/menu.txt", raw + b"/menu")
    return base / "root"


def test_listing_non_utf8_names_gives_a_sendable_answer(latin1_tree: Path, sb: Sandbox) -> None:
    answer = json.loads(wire(sb, "list_files", {"recursive": True}))
    rows = {row["path"]: row for row in answer["result"]["files"]}
    assert rows["caf\\xe9"]["is_dir"] is True and rows["caf\\xe9"]["not_utf8"] is True
    assert rows["caf\\xe9/menu.txt"]["size"] == 4 and rows["caf\\xe9/menu.txt"]["not_utf8"] is True
    assert rows["menu"]["is_symlink"] is True and rows["menu"]["size"] == 4
    assert "not_utf8" not in rows["menu"] and "not_utf8" not in rows["ok.txt"]


def test_writing_through_a_link_to_a_non_utf8_name_gives_a_sendable_answer(
    latin1_tree: Path, sb: Sandbox
) -> None:
    answer = json.loads(wire(sb, "write_file", {"path": "menu", "content": "salad"}))
    assert answer["result"]["path"] == "caf\\xe9/menu.txt"
    with open(os.fsencode(latin1_tree) + b"/caf\xe9/menu.txt", "rb") as f:
        assert f.read() == b"salad"


def test_reading_with_surrogate_escaped_paths_gives_a_sendable_answer(latin1_tree: Path, sb: Sandbox) -> None:
    # A peer may name the file by its surrogate escape, or send a surrogate no file name has:
    # neither is a valid string on the wire (the hub refuses them too), and the answer
    # that says so must itself be sendable.
    # The client reads requests with the same strict parser as the wire: a parse error that
    # keeps the request's id, so the hub's call ends at once rather than at its timeout.
    frame = wire(sb, "read_files", {"files": ["caf\udce9/menu.txt", "\ud800", "ok.txt"]})
    answer = json.loads(frame.decode("utf-8"))  # sendable: strict UTF-8
    assert answer["error"]["code"] == -32700 and "surrogate" in answer["error"]["message"]
    assert answer["id"] == 1


# --- answers larger than the hub's frame limit ---------------------------------------------


def control_chain(root: Path, levels: int) -> str:
    """Nested folders named by 250 control characters (six JSON bytes each); their path."""
    path = "/".join(chr(0x0E + i % 16) * 250 for i in range(levels))
    (root / path).mkdir(parents=True)
    return path


def test_a_read_answer_full_of_quoted_paths_fits_the_hub_frame(base: Path, sb: Sandbox) -> None:
    root = base / "root"
    prefix = control_chain(root, 15)
    (root / "big.txt").write_text("a" * (8 * 1024 * 1024 - 100))
    # Missing below an existing folder: the message quotes the path and the missing part.
    missing = [f"{prefix}/m{i:02d}{chr(3) * 40}/x" for i in range(99)]
    frame = wire(sb, "read_files", {"files": ["big.txt", *missing]})
    assert len(frame) < HUB_FRAME_BYTES
    error = json.loads(frame)["error"]
    assert error["code"] == ErrorCode.PARTIAL_FAILURE
    assert len(error["data"]["errors"]) == 99 and error["data"]["files"]["big.txt"].startswith("aaa")
    # Messages are shortened in the middle, so each still says why at its end.
    assert all(message.endswith("does not exist") for message in error["data"]["errors"].values())


def test_the_read_budget_counts_the_paths_too(base: Path, sb: Sandbox) -> None:
    root = base / "root"
    prefix = control_chain(root, 15)
    (root / prefix / "f").write_text("x")
    paths = [f"{prefix}/{'./' * i}f" for i in range(5)]  # five spellings of one file
    limits = FileLimits(max_answer_bytes=3 * 24_000)
    error = json.loads(wire(sb, "read_files", {"files": paths}, limits))["error"]
    assert len(error["data"]["files"]) < 5
    assert any("does not fit" in message for message in error["data"]["errors"].values())


def test_a_listing_of_long_control_names_is_truncated_to_fit_the_hub_frame(base: Path, sb: Sandbox) -> None:
    root = base / "root"
    deepest = root / control_chain(root, 15)
    fd = os.open(deepest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(900):
            os.close(os.open(f"{i:03d}" + "\x02" * 240, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    frame = wire(sb, "list_files", {"recursive": True, "max_entries": 100_000})
    assert len(frame) < HUB_FRAME_BYTES
    result = json.loads(frame)["result"]
    assert result["truncated"] is True and len(result["files"]) > 100


def test_list_files_budget_is_the_answer_budget(base: Path, sb: Sandbox) -> None:
    for i in range(100):
        (base / "root" / f"file{i:03d}.txt").write_text("x")
    result = files.list_files(sb, ListFilesParams(max_entries=1000), FileLimits(max_answer_bytes=2000))
    assert result["truncated"] is True
    assert 10 < len(result["files"]) < 100
    assert len(json.dumps(result["files"], ensure_ascii=False, separators=(",", ":"))) <= 2000
    full = files.list_files(sb, ListFilesParams(max_entries=1000))
    assert full["truncated"] is False and len(full["files"]) == 102


# --- link chains that cost a lot to resolve -------------------------------------------------


def expensive_chain(root: Path, name: str = "c") -> None:
    """``{name}1`` -> ... -> ``{name}40`` -> ok.txt, each body ``a/../`` x 800 (~4 KB)."""
    (root / "a").mkdir(exist_ok=True)
    body = "a/.." + "/a/.." * 799
    for i in range(1, 40):
        os.symlink(f"{body}/{name}{i + 1}", root / f"{name}{i}")
    os.symlink(f"{body}/ok.txt", root / f"{name}40")


def test_one_path_cannot_cost_tens_of_thousands_of_steps(base: Path, sb: Sandbox) -> None:
    expensive_chain(base / "root")
    started = time.monotonic()
    with pytest.raises(SandboxError) as info:
        sb.read_file("c1", max_bytes=100)
    assert info.value.code == ErrorCode.INVALID_PATH
    assert "steps" in info.value.message
    assert time.monotonic() - started < 1.0
    # A few links with ordinary bodies stay fine.
    os.symlink("sub/../ok.txt", base / "root" / "plain1")
    os.symlink("plain1", base / "root" / "plain2")
    assert sb.read_file("plain2", max_bytes=100) == b"ok"


def test_a_listing_of_expensive_links_stops_in_time(
    base: Path, sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = base / "root"
    expensive_chain(root)
    (root / "d").mkdir()
    for i in range(300):
        os.symlink("../c1", root / "d" / f"l{i:03d}")
    monkeypatch.setattr(sandbox_module, "_LIST_STEPS", 100_000, raising=False)
    started = time.monotonic()
    entries, truncated = sb.list_dir("d", recursive=False, max_entries=5000)
    assert time.monotonic() - started < 5.0
    assert truncated is True and 0 < len(entries) < 300
    assert all(e.is_symlink and e.target_outside for e in entries)


def test_many_honest_links_are_listed_in_full(base: Path, sb: Sandbox) -> None:
    root = base / "root"
    pkg = root / "node_modules" / "pkg" / "bin"
    pkg.mkdir(parents=True)
    (pkg / "cli.js").write_text("x")
    bin_dir = root / "node_modules" / ".bin"
    bin_dir.mkdir()
    for i in range(3000):
        os.symlink("../pkg/bin/cli.js", bin_dir / f"tool{i:04d}")
    entries, truncated = sb.list_dir(".", recursive=True, max_entries=100_000)
    assert truncated is False
    links = [e for e in entries if e.is_symlink]
    assert len(links) == 3000 and all(e.size == 1 and not e.target_outside for e in links)


# --- permissions (as an ordinary user: root ignores permission bits) ------------------------

LIST_AS_NOBODY = """
import json, sys
sys.path.insert(0, sys.argv[2])
from rpc_client.sandbox import Sandbox, SandboxError
with Sandbox(sys.argv[1]) as sb:
    try:
        entries, truncated = sb.list_dir(".", recursive=True, max_entries=100)
        print(json.dumps(sorted(e.path for e in entries)))
    except SandboxError as exc:
        print(json.dumps({"code": int(exc.code), "message": exc.message}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_folder_that_cannot_be_searched_does_not_fail_the_whole_listing() -> None:
    # Not under tmp_path: pytest's base folder is private to root.
    top = Path(tempfile.mkdtemp(prefix="aihub-perm-"))
    try:
        os.chmod(top, 0o755)
        listed = _list_as_nobody(top / "root")
    finally:
        shutil.rmtree(top)
    assert isinstance(listed, list), listed
    assert {"a", "a/f.txt", "noexec", "noaccess", "z.txt"} <= set(listed)


def _list_as_nobody(root: Path) -> Any:
    for d in ["a", "noexec", "noaccess"]:
        (root / d).mkdir(parents=True)
    (root / "a" / "f.txt").write_text("x")
    (root / "noexec" / "hidden.txt").write_text("x")
    (root / "z.txt").write_text("x")
    os.chmod(root / "noexec", 0o444)  # readable names, but nothing in it can be looked up
    os.chmod(root / "noaccess", 0o000)
    for p in [root, root / "a", root / "a" / "f.txt", root / "z.txt"]:
        os.chown(p, 65534, 65534)
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", LIST_AS_NOBODY,
         str(root), str(Path(__file__).resolve().parents[2])],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
