"""Live command output over server-sent events, and withdrawing a call the caller gave up."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx2
import pytest

from tests.e2e.conftest import Hub, wait_until

pytestmark = pytest.mark.e2e


def events(response: httpx2.Response):  # type: ignore[no-untyped-def]
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: ") and name:
            yield name, json.loads(line[len("data: ") :])


def test_command_output_streams_live_then_the_result(hub: Hub, project: Path, start_client) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    command = "for i in 1 2 3; do echo line$i; sleep 0.4; done; echo oops >&2"
    seen: list[tuple[str, dict[str, object], float]] = []
    with httpx2.stream(
        "POST",
        f"{hub.http}/api/workspaces/{wid}/tools/execute_command",
        json={"command": command, "timeout": 30},
        headers={**hub.headers(), "Accept": "text/event-stream"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for name, data in events(response):
            seen.append((name, data, time.monotonic()))
    outputs = [d for n, d, _ in seen if n == "output"]
    assert len(outputs) >= 3  # one per line at least: they came as they were printed
    assert "".join(str(d["data"]) for d in outputs if d["stream"] == "stdout") == "line1\nline2\nline3\n"
    assert any(d["stream"] == "stderr" for d in outputs)
    name, result, _ = seen[-1]
    assert name == "result" and result["status"] == "success" and result["stdout"] == "line1\nline2\nline3\n"
    assert seen[0][2] < seen[-1][2] - 0.5  # the first line arrived well before the end


def test_a_caller_that_goes_away_withdraws_the_command_and_it_is_killed(
    hub: Hub, project: Path, start_client
) -> None:
    client = start_client(hub, project, "--dangerous", "deny")
    wid = hub.workspace_id(client.name)
    marker = f"{os.getpid() % 1000 + 4000}.{time.monotonic_ns() % 10_000}"
    with httpx2.stream(
        "POST",
        f"{hub.http}/api/workspaces/{wid}/tools/execute_command",
        json={"command": f"echo started; sleep {marker}", "timeout": 300},
        headers={**hub.headers(), "Accept": "text/event-stream"},
        timeout=60,
    ) as response:
        for name, data in events(response):
            assert name == "output" and data["data"] == "started\n"
            break  # and hang up
    wait_until(
        lambda: subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 1,
        what="the withdrawn command to be killed",
    )
    wait_until(lambda: "-> cancelled" in client.output(), what="the client to log the cancellation")
    assert hub.call(wid, "read_files", {"files": ["README.md"]}).json()["status"] == "success"


def test_errors_before_the_call_are_plain_http_even_when_streaming(
    hub: Hub, project: Path, start_client
) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    headers = {**hub.headers(), "Accept": "text/event-stream"}
    bad = httpx2.post(
        f"{hub.http}/api/workspaces/{wid}/tools/execute_command", json={"timeout": 1}, headers=headers
    )
    assert bad.status_code == 422
    refused = httpx2.post(
        f"{hub.http}/api/workspaces/{wid}/tools/execute_command",
        json={"command": "rm -rf src"},
        headers=headers,
    )
    assert refused.status_code == 200
    assert list(events(refused))[-1][1]["status"] == "error"


def test_a_plain_json_caller_that_hangs_up_withdraws_the_command_too(
    hub: Hub, project: Path, start_client
) -> None:
    client = start_client(hub, project, "--dangerous", "deny")
    wid = hub.workspace_id(client.name)
    marker = f"{os.getpid() % 1000 + 5000}.{time.monotonic_ns() % 10_000}"
    with pytest.raises(httpx2.ReadTimeout):  # the caller gives up after 1.5 s and closes its connection
        httpx2.post(
            f"{hub.http}/api/workspaces/{wid}/tools/execute_command",
            json={"command": f"sleep {marker}", "timeout": 300},
            headers=hub.headers(),
            timeout=httpx2.Timeout(1.5, connect=10),
        )
    wait_until(
        lambda: subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 1,
        what="the withdrawn command to be killed",
    )
    wait_until(lambda: "-> cancelled" in client.output(), what="the client to log the cancellation")
    assert hub.call(wid, "read_files", {"files": ["README.md"]}).json()["status"] == "success"
    assert "Exception in ASGI application" not in (hub.log.read_text() if hub.log else "")
