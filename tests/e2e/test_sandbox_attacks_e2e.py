"""Sandbox attacks through the real product: a uvicorn hub, an ``aihub-client`` process, REST calls.

Each test builds its tree on disk, starts one client on it and attacks through
``POST /api/workspaces/{id}/tools/{method}``. Every HTTP call has a short
timeout of its own, so an answer that never comes fails the test quickly
instead of waiting for the hub's 30 s.

The last three tests failed before the fixes in ``rpc_client/files.py``: a non-UTF-8
file name broke the client's socket (1006) and answers over the hub's 16 MiB frame
limit made the hub drop the connection (1009); both lost every call in flight.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.e2e.conftest import Client, Hub

pytestmark = pytest.mark.e2e

#: Well under the hub's 30 s call timeout: an answer that does not come fails fast.
ANSWER_S = 10.0
OUT = -32001


def call(hub: Hub, wid: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        response = hub.call(wid, method, params, timeout=ANSWER_S)
    except httpx2.TimeoutException:
        raise AssertionError(f"{method} {params!r:.80}: no answer within {ANSWER_S} s") from None
    assert response.status_code == 200, (response.status_code, response.text[:300])
    body: dict[str, Any] = response.json()
    return body


def connect(hub: Hub, root: Path, start_client: Callable[..., Client]) -> tuple[str, Client]:
    client = start_client(hub, root, "--dangerous", "deny")
    return hub.workspace_id(client.name), client


def still_connected(hub: Hub, wid: str) -> bool:
    return any(w["id"] == wid for w in hub.workspaces())


def test_links_and_dotdot_are_refused_through_the_hub(
    hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    secret_dir = project.parent / "outside"
    secret_dir.mkdir()
    (secret_dir / "s.txt").write_text("TOP SECRET\n")
    evil = project.parent / (project.name + "-evil")
    evil.mkdir()
    (evil / "e.txt").write_text("TOP SECRET evil\n")
    links = {
        "l_rel": "../outside-secret.txt",
        "l_abs": str(project.parent / "outside-secret.txt"),
        "l_dir": str(secret_dir),
        "l_evil": f"{project}-evil",
        "l_proc": "/proc/self/root",
        "l_cwd": "/proc/self/cwd",
        "l_fd": "/proc/self/fd/0",
        "l_stdin": "/dev/stdin",
        "src/l_up": "../../outside-secret.txt",
        "l_chain": "src/l_chain2",
        "src/l_chain2": f"{project}/src/../l_rel",
    }
    for name, target in links.items():
        os.symlink(target, project / name)
    wid, _ = connect(hub, project, start_client)
    reads = [
        "../outside-secret.txt", "/etc/passwd", "//etc/passwd", f"{project}/README.md",
        "src/../../outside-secret.txt", f"../{evil.name}/e.txt", *links,
        "l_dir/s.txt", "l_dir/../outside-secret.txt", "l_proc/etc/passwd", "l_cwd/README.md",
        "l_evil/e.txt", "src/../l_dir/s.txt",
    ]  # fmt: skip
    body = call(hub, wid, "read_files", {"files": reads})
    assert body["status"] == "error" and body["files"] == {}
    assert set(body["errors"]) == set(reads)
    assert "SECRET" not in str(body) and str(project.parent) not in str(body).replace(str(project), "")
    for path in ["../x.txt", "l_dir/new.txt", "l_abs", "l_evil/new.txt", "l_fd", "src/l_up", "n/../../x"]:
        answer = call(hub, wid, "write_file", {"path": path, "content": "PWNED"})
        assert answer["status"] == "error" and answer["error_code"] == OUT, (path, answer)
    for path in ["..", "l_dir", "l_proc", "l_dir/..", "l_evil"]:
        answer = call(hub, wid, "list_files", {"path": path, "recursive": True})
        assert answer["status"] == "error" and answer["error_code"] == OUT, (path, answer)
    assert not (secret_dir / "new.txt").exists() and not (evil / "new.txt").exists()
    assert (project.parent / "outside-secret.txt").read_text() == "TOP SECRET\n"
    listing = call(hub, wid, "list_files", {"recursive": True})
    rows = {row["path"]: row for row in listing["files"]}
    assert all(rows[name].get("target_outside") for name in links if name != "src/l_chain2")
    assert not any(row["path"].startswith("l_") and row["is_dir"] for row in listing["files"])


def test_fifo_socket_and_links_to_them_do_not_hang_the_client(
    hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    os.mkfifo(project / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(project / "sock"))
    try:
        os.symlink("fifo", project / "to_fifo")
        os.symlink(str(project / "fifo"), project / "to_fifo_abs")
        wid, _ = connect(hub, project, start_client)
        started = time.monotonic()
        for path in ["fifo", "sock", "to_fifo", "to_fifo_abs"]:
            answer = call(hub, wid, "read_files", {"files": [path]})
            assert answer["status"] == "error" and "regular file" in answer["errors"][path]
            written = call(hub, wid, "write_file", {"path": path, "content": "x"})
            assert written["status"] == "error" and written["error_code"] == -32006
            listed = call(hub, wid, "list_files", {"path": path})
            assert listed["status"] == "error" and listed["error_code"] == -32007
        assert call(hub, wid, "list_files", {"recursive": True})["status"] == "success"
        assert time.monotonic() - started < ANSWER_S
    finally:
        sock.close()


# --- answers that cannot be sent ------------------------------------------------------


def test_a_non_utf8_file_name_is_listed_not_left_unanswered(
    hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    # A name the AI never chose (a checked-out repo, a tool's output) that is not UTF-8.
    raw = os.fsencode(project)
    os.mkdir(raw + b"/caf\xe9")
    with open(raw + b"/caf\xe9/menu.txt", "wb") as f:
        f.write(b"soup")
    os.symlink(b"caf\xe9/menu.txt", raw + b"/menu")
    wid, client = connect(hub, project, start_client)
    listing = call(hub, wid, "list_files", {"recursive": True})
    assert listing["status"] == "success", listing
    paths = {row["path"] for row in listing["files"]}
    assert {"README.md", "src/main.py", "menu"} <= paths
    assert any("menu.txt" in path and path != "menu" for path in paths)
    # Writing through the link answers too, and the file got the bytes.
    written = call(hub, wid, "write_file", {"path": "menu", "content": "salad"})
    assert written["status"] == "success", written
    with open(raw + b"/caf\xe9/menu.txt", "rb") as f:
        assert f.read() == b"salad"
    assert call(hub, wid, "read_files", {"files": ["menu"]})["files"] == {"menu": "salad"}
    assert still_connected(hub, wid)
    assert "Traceback" not in client.output()


def _control_chain(root: Path, levels: int, name_len: int) -> int:
    """Make ``levels`` nested folders with names of ``name_len`` control characters.

    Returns a descriptor on the deepest one (the caller closes it).
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(levels):
        name = chr(0x0E + i % 16) * name_len  # each one is six bytes in JSON
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def test_a_huge_listing_is_truncated_not_a_dropped_connection(
    hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    # Names of control characters cost six bytes each in JSON: ~26 KB per row.
    deepest = _control_chain(project, 15, 250)
    try:
        for i in range(1200):
            fd = os.open(f"{i:03d}" + "\x02" * 240, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=deepest)
            os.close(fd)
    finally:
        os.close(deepest)
    wid, _ = connect(hub, project, start_client)
    listing = call(hub, wid, "list_files", {"recursive": True, "max_entries": 100_000})
    assert listing["status"] == "success", str(listing)[:300]
    assert listing["truncated"] is True
    assert still_connected(hub, wid)


def test_a_huge_read_answer_stays_under_the_frame_limit(
    hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    # Only write_file's powers are needed: a deep folder of control-character names and a
    # big text file; then 99 missing paths whose error messages quote the path twice.
    prefix = "/".join(chr(0x0E + i) * 250 for i in range(15))
    (project / "big.txt").write_text("a" * (8 * 1024 * 1024 - 100))
    wid, _ = connect(hub, project, start_client)
    assert call(hub, wid, "write_file", {"path": prefix + "/f", "content": "x"})["status"] == "success"
    missing = [f"{prefix}/m{i:02d}{chr(3) * 40}/x" for i in range(99)]
    answer = call(hub, wid, "read_files", {"files": ["big.txt", *missing]})
    assert answer["status"] == "error" and answer["error_code"] == -32011, str(answer)[:300]
    assert len(answer["errors"]) == 99
    assert answer["files"]["big.txt"].startswith("aaa")
    assert still_connected(hub, wid)
