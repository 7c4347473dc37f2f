"""A hub that stops: calls in flight are answered, new ones refused, clients told (1012) and back.

And a hub that stops answering pings is noticed: a half-open connection (a client
frozen, a laptop asleep) is detected by the hub's WebSocket pings.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest

from tests.e2e.conftest import Client, Hub, free_port, wait_until

pytestmark = pytest.mark.e2e


def command_call(hub: Hub, wid: str, command: str, key: str | None = None) -> httpx2.Response:
    headers = hub.headers() | ({"Idempotency-Key": key} if key else {})
    return httpx2.post(
        f"{hub.http}/api/workspaces/{wid}/tools/execute_command",
        json={"command": command, "timeout": 120},
        headers=headers,
        timeout=60,
    )


def in_thread(work: Callable[[], httpx2.Response]) -> tuple[dict[str, object], threading.Thread]:
    outcome: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            response = work()
            outcome.update(status=response.status_code, body=response.json())
        except httpx2.HTTPError as exc:
            outcome.update(error=repr(exc))
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run)
    worker.start()
    return outcome, worker


def make_hub(tmp_path: Path, *args: str) -> Hub:
    home = tmp_path / "aihub-home"
    home.mkdir(exist_ok=True)
    hub = Hub(port=free_port(), home=home, args=list(args))
    hub.start()
    return hub


def test_a_stopping_hub_answers_the_calls_in_flight_then_its_clients_come_back(
    tmp_path: Path, project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub(tmp_path, "--drain-timeout", "20")
    try:
        client = start_client(hub, project, "--dangerous", "deny", name="draining")
        wid = hub.workspace_id("draining")
        outcome, worker = in_thread(
            lambda: command_call(hub, wid, "touch started; while [ ! -e go ]; do sleep 0.05; done; echo done")
        )
        wait_until(lambda: (project / "started").exists(), what="the command to start")
        assert hub.process is not None
        hub.process.send_signal(signal.SIGTERM)
        # Draining: the listening socket is closed, so nobody new gets in...
        wait_until(lambda: refused(hub), what="the hub to stop accepting connections")
        assert hub.process.poll() is None and worker.is_alive()  # ...while the call in flight goes on
        (project / "go").touch()
        worker.join(30)
        assert outcome.get("status") == 200, outcome
        assert outcome["body"] == {**outcome["body"], "status": "success", "stdout": "done\n"}  # type: ignore[dict-item]
        assert hub.process.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught
        wait_until(lambda: "1012" in client.output(), what="the client to be told the hub restarts")
        hub.start()
        assert hub.workspace_id("draining", timeout=30) == wid  # back by itself, the same workspace
        assert client.process.poll() is None
    finally:
        hub.stop()


def refused(hub: Hub) -> bool:
    try:
        httpx2.get(hub.http + "/healthz", timeout=1)
    except httpx2.ConnectError:
        return True
    except httpx2.HTTPError:
        return False
    return False


KEYED_COMMAND = "echo run >> keyed-runs; while [ ! -e go ]; do sleep 0.05; done; echo keyed done"


def test_calls_still_running_when_the_drain_ends_get_503_and_only_keyed_work_runs_on(
    tmp_path: Path, project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub(tmp_path, "--drain-timeout", "1")
    try:
        # --sandbox none: the command's $$ is then a pid of this machine's, not of a namespace.
        client = start_client(hub, project, "--dangerous", "deny", "--sandbox", "none", name="cut-short")
        wid = hub.workspace_id("cut-short")
        plain, plain_worker = in_thread(
            lambda: command_call(hub, wid, "echo $$ > plain.pid; sleep 60; touch plain-finished")
        )
        keyed, keyed_worker = in_thread(lambda: command_call(hub, wid, KEYED_COMMAND, key="nightly-1"))
        wait_until(
            lambda: (project / "plain.pid").exists() and (project / "keyed-runs").exists(),
            what="both commands to start",
        )
        assert hub.process is not None
        hub.process.send_signal(signal.SIGTERM)
        plain_worker.join(30)
        keyed_worker.join(30)
        for outcome in (plain, keyed):
            assert outcome.get("status") == 503, outcome
            assert "shutting down" in str(outcome["body"]) and "Idempotency-Key" in str(outcome["body"])
            assert float(outcome["seconds"]) < 15  # type: ignore[arg-type]
        assert hub.process.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught
        # The plain command was withdrawn (killed); the keyed one runs on for a retry.
        pid = int((project / "plain.pid").read_text())
        wait_until(lambda: not alive(pid), what="the withdrawn command to be killed")
        hub.start()
        assert hub.workspace_id("cut-short", timeout=30) == wid
        (project / "go").touch()
        retried = command_call(hub, wid, KEYED_COMMAND, key="nightly-1")
        assert retried.status_code == 200 and retried.json()["stdout"] == "keyed done\n", retried.text
        assert (project / "keyed-runs").read_text() == "run\n"
        reused = command_call(hub, wid, "echo other work", key="nightly-1")  # the key names other work
        assert reused.json()["status"] == "error" and "first used for another request" in reused.text
        assert not (project / "plain-finished").exists()
        assert client.process.poll() is None
    finally:
        hub.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


def test_a_frozen_client_is_noticed_by_the_hubs_pings_and_resumes_when_it_thaws(
    tmp_path: Path, project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub(tmp_path, "--ping-interval", "0.5", "--ping-timeout", "1")
    try:
        client = start_client(hub, project, "--dangerous", "deny", name="sleepy")
        wid = hub.workspace_id("sleepy")
        client.process.send_signal(signal.SIGSTOP)  # the TCP connection stays up; nobody answers pings
        try:
            wait_until(
                lambda: [w for w in hub.workspaces() if w["id"] == wid and w["connected"] is False],
                timeout=15,
                what="the hub to notice the frozen client",
            )
        finally:
            client.process.send_signal(signal.SIGCONT)
        wait_until(
            lambda: [w for w in hub.workspaces() if w["id"] == wid and w["connected"] is True],
            timeout=30,
            what="the client to come back",
        )
        answer = hub.call(wid, "read_files", {"files": ["README.md"]})
        assert answer.json()["status"] == "success"
    finally:
        hub.stop()


def test_a_second_sigterm_ends_the_drain_at_once(
    tmp_path: Path, project: Path, start_client: Callable[..., Client]
) -> None:
    hub = make_hub(tmp_path, "--drain-timeout", "60")
    try:
        start_client(hub, project, "--dangerous", "deny", name="impatient")
        wid = hub.workspace_id("impatient")
        outcome, worker = in_thread(lambda: command_call(hub, wid, "touch started; sleep 60"))
        wait_until(lambda: (project / "started").exists(), what="the command to start")
        assert hub.process is not None
        hub.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(hub), what="the hub to start draining")
        time.sleep(0.5)
        assert hub.process.poll() is None  # draining: it would wait up to 60 s
        stopped = time.monotonic()
        hub.process.send_signal(signal.SIGTERM)  # `kill` again: stop now
        hub.process.wait(15)
        assert time.monotonic() - stopped < 10
        worker.join(30)
        assert outcome.get("status") == 503 or "error" in outcome, outcome
    finally:
        hub.stop()
