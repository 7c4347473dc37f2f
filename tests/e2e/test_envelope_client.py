"""A client that speaks the original typed envelope, written here from the original schema."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.e2e.conftest import Hub

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def _initialize(hub: Hub, name: str) -> Iterator[tuple[ClientConnection, str]]:
    with connect(hub.ws, additional_headers=hub.headers(), open_timeout=10) as ws:
        yield _handshake(ws, name)


def _handshake(ws: ClientConnection, name: str) -> tuple[ClientConnection, str]:
    ws.send(json.dumps({"type": "initialize", "request_id": "1", "payload": {"workspace": name}}))
    answer = json.loads(ws.recv(timeout=10))
    assert answer["type"] == "initialize_response"
    assert answer["request_id"] == "1"
    assert answer["payload"]["status"] == "success"
    return ws, answer["payload"]["workspace_id"]


def _call_in_background(
    hub: Hub, wid: str, method: str, params: dict[str, object]
) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def run() -> None:
        response = hub.call(wid, method, params, timeout=30)
        outcome.update(status=response.status_code, body=response.json())

    worker = threading.Thread(target=run)
    worker.start()
    return worker, outcome


def test_an_envelope_client_is_sent_envelopes_and_its_answers_reach_the_rest_caller(hub: Hub) -> None:
    with _initialize(hub, "typed") as (ws, wid):
        # list_files -> list_files_response
        worker, outcome = _call_in_background(hub, wid, "list_files", {"path": "./"})
        request = json.loads(ws.recv(timeout=10))
        assert request["type"] == "list_files"
        assert request["payload"] == {"path": "./"}
        assert isinstance(request["request_id"], str)
        files = [{"name": "main.py", "is_dir": False}]
        ws.send(
            json.dumps(
                {
                    "type": "list_files_response",
                    "request_id": request["request_id"],
                    "payload": {"status": "success", "files": files},
                }
            )
        )
        worker.join(30)
        assert outcome == {"status": 200, "body": {"status": "success", "files": files}}

        # execute_command -> command_output, the irregular name
        worker, outcome = _call_in_background(hub, wid, "execute_command", {"command": "npm test"})
        request = json.loads(ws.recv(timeout=10))
        assert request["type"] == "execute_command" and request["payload"]["command"] == "npm test"
        ws.send(
            json.dumps(
                {
                    "type": "command_output",
                    "request_id": request["request_id"],
                    "payload": {"status": "success", "stdout": "ok\n", "stderr": ""},
                }
            )
        )
        worker.join(30)
        assert outcome["body"] == {"status": "success", "stdout": "ok\n", "stderr": ""}

        # an error answer keeps its human-readable message
        worker, outcome = _call_in_background(hub, wid, "read_files", {"files": ["nope.py"]})
        request = json.loads(ws.recv(timeout=10))
        ws.send(
            json.dumps(
                {
                    "type": "read_files_response",
                    "request_id": request["request_id"],
                    "payload": {"status": "error", "error_message": "nope.py: file not found"},
                }
            )
        )
        worker.join(30)
        body = outcome["body"]
        assert isinstance(body, dict)
        assert body["status"] == "error" and body["error_message"] == "nope.py: file not found"


def test_answers_out_of_order_each_reach_their_own_caller(hub: Hub) -> None:
    with _initialize(hub, "typed-ooo") as (ws, wid):
        first, first_outcome = _call_in_background(hub, wid, "read_files", {"files": ["a"]})
        req_a = json.loads(ws.recv(timeout=10))
        second, second_outcome = _call_in_background(hub, wid, "read_files", {"files": ["b"]})
        req_b = json.loads(ws.recv(timeout=10))
        for req in (req_b, req_a):
            name = req["payload"]["files"][0]
            ws.send(
                json.dumps(
                    {
                        "type": "read_files_response",
                        "request_id": req["request_id"],
                        "payload": {"status": "success", "files": {name: name.upper()}},
                    }
                )
            )
        first.join(30)
        second.join(30)
        assert first_outcome["body"] == {"status": "success", "files": {"a": "A"}}
        assert second_outcome["body"] == {"status": "success", "files": {"b": "B"}}


def test_a_garbage_frame_after_the_handshake_is_answered_and_the_connection_lives(hub: Hub) -> None:
    with _initialize(hub, "typed-garbage") as (ws, wid):
        ws.send("{this is not json")
        answer = json.loads(ws.recv(timeout=10))
        assert answer["payload"]["status"] == "error"
        ws.send(
            json.dumps(
                {
                    "type": "list_files_response",
                    "request_id": "999",
                    "payload": {"status": "success", "files": []},
                }
            )
        )
        worker, outcome = _call_in_background(hub, wid, "list_files", {})
        request = json.loads(ws.recv(timeout=10))
        ws.send(
            json.dumps(
                {
                    "type": "list_files_response",
                    "request_id": request["request_id"],
                    "payload": {"status": "success", "files": []},
                }
            )
        )
        worker.join(30)
        assert outcome["status"] == 200
