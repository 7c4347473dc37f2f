"""The product end to end: a real uvicorn hub, real client processes, real files and commands."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import Hub, wait_until

pytestmark = pytest.mark.e2e


def test_the_original_plan_lists_the_files_then_reads_one_of_them(
    hub: Hub, project: Path, start_client
) -> None:
    client = start_client(hub, project, "--dangerous", "deny")
    wid = hub.workspace_id(client.name)

    listing = hub.call(wid, "list_files", {"path": "./"})
    assert listing.status_code == 200
    body = listing.json()
    assert body["status"] == "success"
    names = {f["name"]: f for f in body["files"]}
    assert names["src"]["is_dir"] is True and names["README.md"]["is_dir"] is False

    nested = hub.call(wid, "list_files", {"path": "src", "recursive": True}).json()
    main = next(f for f in nested["files"] if f["name"] == "main.py")
    read = hub.call(wid, "read_files", {"files": [main["path"]]}).json()
    assert read["status"] == "success"
    assert read["files"] == {"src/main.py": "print('hello')\n"}
    assert read["sha256"]["src/main.py"] == hashlib.sha256(b"print('hello')\n").hexdigest()
    wait_until(lambda: "read_files src/main.py -> ok" in client.output(), what="the client's log line")


def test_a_write_is_read_back_and_creates_missing_folders(hub: Hub, project: Path, start_client) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    content = "def f():\n    return 'é✓'\n"
    written = hub.call(wid, "write_file", {"path": "pkg/new/mod.py", "content": content}).json()
    assert written["status"] == "success"
    assert written["bytes_written"] == len(content.encode())
    assert (project / "pkg/new/mod.py").read_text(encoding="utf-8") == content
    assert hub.call(wid, "read_files", {"files": ["pkg/new/mod.py"]}).json()["files"] == {
        "pkg/new/mod.py": content
    }


def test_a_command_reports_its_output_and_exit_code(hub: Hub, project: Path, start_client) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    ran = hub.call(wid, "execute_command", {"command": "ls src; echo oops >&2; exit 3"}).json()
    assert ran["status"] == "success"
    assert ran["stdout"] == "main.py\n" and ran["stderr"] == "oops\n" and ran["exit_code"] == 3


def test_a_command_that_times_out_leaves_no_process_behind(hub: Hub, project: Path, start_client) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    # A duration no other process uses, so pgrep finds only ours (pids differ inside a sandbox's namespace).
    marker = f"{os.getpid() % 1000 + 3000}.{time.monotonic_ns() % 10_000}"
    answer = hub.call(
        wid, "execute_command", {"command": f"sleep {marker} & echo started; sleep {marker}", "timeout": 1}
    ).json()
    assert answer["status"] == "error"
    assert "timed out" in answer["error_message"]
    assert answer["stdout"] == "started\n"

    def gone() -> bool:
        return subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 1

    wait_until(gone, timeout=10, what="the command's processes to be killed")


def test_paths_outside_the_root_are_refused_through_the_hub(hub: Hub, project: Path, start_client) -> None:
    os.symlink("../outside-secret.txt", project / "leak")
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    for path in [
        "../outside-secret.txt",
        str(project.parent / "outside-secret.txt"),
        "leak",
        "src/../../outside-secret.txt",
    ]:
        answer = hub.call(wid, "read_files", {"files": [path]}).json()
        assert answer["status"] == "error", path
        assert "outside" in answer["error_message"] or "leaves" in answer["error_message"], answer
        assert "TOP SECRET" not in json.dumps(answer)
    denied = hub.call(wid, "write_file", {"path": "../evil.txt", "content": "x"}).json()
    assert denied["status"] == "error"
    assert not (project.parent / "evil.txt").exists()


def test_a_partial_read_names_each_failure_and_keeps_what_was_read(
    hub: Hub, project: Path, start_client
) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    answer = hub.call(
        wid, "read_files", {"files": ["src/main.py", "missing.py", "../outside-secret.txt"]}
    ).json()
    assert answer["status"] == "error"
    assert answer["files"] == {"src/main.py": "print('hello')\n"}
    assert "missing.py" in answer["error_message"] and "outside-secret.txt" in answer["error_message"]
    assert set(answer["errors"]) == {"missing.py", "../outside-secret.txt"}


def test_a_dangerous_command_is_refused_with_deny_and_the_file_survives(
    hub: Hub, project: Path, start_client
) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    answer = hub.call(wid, "execute_command", {"command": "rm -rf src"}).json()
    assert answer["status"] == "error" and "dangerous" in answer["error_message"]
    assert (project / "src" / "main.py").exists()


def test_read_only_refuses_writes_and_commands(hub: Hub, project: Path, start_client) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--read-only").name)
    assert hub.call(wid, "write_file", {"path": "x.txt", "content": "x"}).json()["status"] == "error"
    assert hub.call(wid, "execute_command", {"command": "touch y.txt"}).json()["status"] == "error"
    assert not (project / "x.txt").exists() and not (project / "y.txt").exists()
    assert hub.call(wid, "read_files", {"files": ["README.md"]}).json()["status"] == "success"


def test_a_long_command_does_not_hold_up_a_read(hub: Hub, project: Path, start_client) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    os.mkfifo(project / "go")
    results: dict[str, dict[str, object]] = {}

    def long_command() -> None:
        # Blocks until the test writes to the FIFO: it cannot finish before the read.
        results["command"] = hub.call(wid, "execute_command", {"command": "cat go", "timeout": 30}).json()

    worker = threading.Thread(target=long_command)
    worker.start()
    wait_until(lambda: any(w["in_flight"] for w in hub.workspaces()), what="the command to be in flight")
    read = hub.call(wid, "read_files", {"files": ["README.md"]}, timeout=20).json()
    assert read["status"] == "success"
    assert "command" not in results
    with open(project / "go", "w") as fifo:
        fifo.write("done\n")
    worker.join(30)
    assert results["command"]["stdout"] == "done\n"


def test_a_client_killed_mid_call_gives_502_at_once(hub: Hub, project: Path, start_client) -> None:
    client = start_client(hub, project, "--dangerous", "deny")
    wid = hub.workspace_id(client.name)
    outcome: dict[str, object] = {}

    def call() -> None:
        started = time.monotonic()
        response = hub.call(wid, "execute_command", {"command": "sleep 5", "timeout": 120})
        outcome.update(status=response.status_code, body=response.json(), seconds=time.monotonic() - started)

    worker = threading.Thread(target=call)
    worker.start()
    wait_until(lambda: any(w["in_flight"] for w in hub.workspaces()), what="the call to be in flight")
    client.process.send_signal(signal.SIGKILL)
    worker.join(60)
    assert outcome["status"] == 502
    # The call's own timeout is 130 s: an answer in well under that came from the disconnect.
    assert float(outcome["seconds"]) < 60  # type: ignore[arg-type]
    wait_until(lambda: not hub.workspaces(), what="the workspace to be removed")


def test_the_client_comes_back_by_itself_after_a_hub_restart(hub: Hub, project: Path, start_client) -> None:
    client = start_client(hub, project, "--dangerous", "deny")
    first = hub.workspace_id(client.name)
    hub.stop()
    hub.start()
    second = hub.workspace_id(client.name, timeout=30)
    assert second != first or second  # a new connection; the id may be new
    assert hub.call(second, "read_files", {"files": ["README.md"]}).json()["status"] == "success"
    assert client.process.poll() is None
    assert "reconnecting in" in client.output()


def test_wrong_and_missing_tokens_are_refused(hub: Hub, project: Path, start_client) -> None:
    assert httpx2.get(hub.http + "/healthz").status_code == 200
    assert httpx2.get(hub.http + "/api/workspaces").status_code == 401
    assert (
        httpx2.get(hub.http + "/api/workspaces", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    assert (
        httpx2.get(hub.http + "/api/tools", headers={"Authorization": "Basic " + hub.token}).status_code
        == 401
    )
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with (
            pytest.raises(InvalidStatus) as refused,
            connect(hub.ws, additional_headers=headers, open_timeout=5),
        ):
            pass
        assert refused.value.response.status_code in (401, 403)
    client = start_client(hub, project, token="wrong-token", wait=False)
    assert client.process.wait(20) == 4
    assert "refused the token" in client.output()


def test_rest_errors_unknown_workspace_unknown_tool_bad_params(hub: Hub, project: Path, start_client) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    assert hub.call("nope", "list_files", {}).status_code == 404
    assert hub.call(wid, "format_disk", {}).status_code == 404
    assert hub.call(wid, "read_files", {"files": "README.md"}).status_code == 422
    assert hub.call(wid, "read_files", {}).status_code == 422
    assert hub.call(wid, "execute_command", {"command": "ls", "timeout": "5"}).status_code == 422
    assert hub.call(wid, "execute_command", {"command": "ls", "timeout": 10**9}).status_code == 422
    assert hub.call(wid, "list_files", [1, 2]).status_code == 422
    raw = httpx2.post(
        f"{hub.http}/api/workspaces/{wid}/tools/list_files", content=b"{not json", headers=hub.headers()
    )
    assert raw.status_code == 422
    tools = httpx2.get(hub.http + "/api/tools", headers=hub.headers()).json()
    assert {t["function"]["name"] for t in tools} == {
        "list_files",
        "read_files",
        "search_files",
        "edit_file",
        "execute_command",
        "write_file",
        "undo",
        "read_output",
    }
    assert all(t["function"]["parameters"]["type"] == "object" for t in tools)


def test_the_client_shuts_down_cleanly_on_ctrl_c(hub: Hub, project: Path, start_client) -> None:
    client = start_client(hub, project, "--dangerous", "deny")
    client.process.send_signal(signal.SIGINT)
    assert client.process.wait(20) == 0
    assert "Traceback" not in client.output()
    wait_until(lambda: not hub.workspaces(), what="the workspace to be removed")


def test_the_client_exits_with_a_clear_message_for_a_bad_root(hub: Hub, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rpc_client.cli",
            "--hub",
            hub.ws,
            "--root",
            str(tmp_path / "nope"),
            "--token",
            hub.token,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 3
    assert "Traceback" not in done.stderr and "--root" in done.stderr
