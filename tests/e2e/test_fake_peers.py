"""Misbehaving peers, written here from the protocol: a client that answers badly, a hub that asks badly."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import Hub

pytestmark = pytest.mark.e2e


def test_a_client_answer_with_nan_or_a_lone_surrogate_fails_that_call_not_the_hub(hub: Hub) -> None:
    with connect(hub.ws, additional_headers=hub.headers(), open_timeout=10) as ws:
        ws.send(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": "bad"}})
        )
        wid = json.loads(ws.recv(timeout=10))["result"]["workspace_id"]
        for bad in ('{"x": NaN}', '{"x": "\\ud800"}', '{"x": Infinity}'):
            outcome: dict[str, object] = {}
            worker = threading.Thread(
                target=lambda out=outcome: out.update(r=hub.call(wid, "list_files", {}, timeout=20))
            )
            worker.start()
            request = json.loads(ws.recv(timeout=10))
            ws.send('{"jsonrpc": "2.0", "id": ' + str(request["id"]) + ', "result": ' + bad + "}")
            worker.join(20)
            response = outcome["r"]
            assert response.status_code == 200, bad  # type: ignore[attr-defined]
            body = response.json()  # type: ignore[attr-defined]
            assert body["status"] == "error" and "malformed" in body["error_message"]
        assert hub.workspaces()[0]["id"] == wid  # still connected


def test_a_lone_surrogate_in_a_rest_body_is_422_not_a_lost_client(
    hub: Hub, project: Path, start_client
) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--dangerous", "deny").name)
    response = httpx2.post(
        f"{hub.http}/api/workspaces/{wid}/tools/read_files",
        content=b'{"files": ["\\udce9"]}',
        headers=hub.headers(),
    )
    assert response.status_code == 422
    assert hub.call(wid, "read_files", {"files": ["README.md"]}).json()["status"] == "success"


class FakeHub:
    """A hub written here from the protocol, to send what a real hub never would."""

    def __init__(self, script) -> None:  # type: ignore[no-untyped-def]
        from websockets.sync.server import serve

        self.script = script
        self.result: dict[str, object] = {}
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, ws) -> None:  # type: ignore[no-untyped-def]
        try:
            self.script(ws, self.result)
        except Exception as exc:  # the test reads it
            self.result["error"] = repr(exc)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/workspace"

    def close(self) -> None:
        self.server.shutdown()


def _accept_initialize(ws) -> None:  # type: ignore[no-untyped-def]
    hello = json.loads(ws.recv(timeout=10))
    ws.send(json.dumps({"jsonrpc": "2.0", "id": hello["id"], "result": {"workspace_id": "fake"}}))


def _client(url: str, root: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(root.parent / "fake-hub-client.log", "wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rpc_client.cli",
                "--hub",
                url,
                "--root",
                str(root),
                "--token",
                "t",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def test_an_unsendable_answer_becomes_an_error_and_the_connection_lives(project: Path) -> None:
    def script(ws, result) -> None:  # type: ignore[no-untyped-def]
        _accept_initialize(ws)
        # A path that is a lone surrogate: its error message cannot be encoded as UTF-8.
        ws.send('{"jsonrpc": "2.0", "id": 1, "method": "read_files", "params": {"files": ["\\ud800"]}}')
        result["first"] = json.loads(ws.recv(timeout=20))
        ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 2, "method": "read_files", "params": {"files": ["README.md"]}}
            )
        )
        result["second"] = json.loads(ws.recv(timeout=20))

    hub = FakeHub(script)
    client = _client(hub.url, project, "--dangerous", "deny")
    try:
        hub.thread.join(0)
        deadline = time.monotonic() + 30
        while "second" not in hub.result and "error" not in hub.result and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "error" not in hub.result, hub.result
        assert "error" in hub.result["first"]  # type: ignore[operator]
        assert hub.result["second"]["result"]["files"] == {"README.md": "# demo project\n"}  # type: ignore[index]
    finally:
        client.kill()
        client.wait(10)
        hub.close()


def test_tool_notifications_are_not_run_and_excess_requests_are_refused_busy(project: Path) -> None:
    def script(ws, result) -> None:  # type: ignore[no-untyped-def]
        _accept_initialize(ws)
        ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "method": "write_file", "params": {"path": "notified.txt", "content": "x"}}
            )
        )
        for i in range(70):  # more than the client serves at once
            ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "execute_command",
                        "params": {"command": "sleep 3", "timeout": 10},
                    }
                )
            )
        answers = [json.loads(ws.recv(timeout=30)) for _ in range(6)]
        result["busy"] = answers

    hub = FakeHub(script)
    client = _client(hub.url, project, "--dangerous", "deny", "--sandbox", "none")
    try:
        deadline = time.monotonic() + 30
        while "busy" not in hub.result and "error" not in hub.result and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "error" not in hub.result, hub.result
        answers = hub.result["busy"]
        assert all(a["error"]["code"] == -32013 for a in answers), answers  # type: ignore[union-attr]
        assert not (project / "notified.txt").exists()
    finally:
        client.kill()
        client.wait(10)
        hub.close()


def test_a_handshake_refused_with_1002_ends_the_client(project: Path) -> None:
    def script(ws, result) -> None:  # type: ignore[no-untyped-def]
        ws.recv(timeout=10)
        ws.close(1002, "bad first message")

    hub = FakeHub(script)
    client = _client(hub.url, project)
    try:
        assert client.wait(30) == 5
        assert b"refused the handshake" in (project.parent / "fake-hub-client.log").read_bytes()
    finally:
        client.kill()
        hub.close()


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["--hub", "ws://127.0.0.1:99999/ws"], 2),
        (["--hub", "ws://[::1/ws"], 2),
        (["--hub", "http://127.0.0.1:8765/ws"], 2),
        (["--approval-timeout", "-1"], 2),
        (["--approval-timeout", "nan"], 2),
        (["--token", "tök€n"], 2),
        (["--token", "two words"], 2),
    ],
)
def test_bad_client_arguments_are_one_line_errors(project: Path, args: list[str], status: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rpc_client.cli", "--root", str(project), "--token", "t", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip()
    assert "tök€n" not in done.stderr


def test_bad_hub_arguments_are_one_line_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
