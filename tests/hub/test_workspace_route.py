"""The /ws/workspace route and the REST routes in-process (no network): handshake, framing, auth."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from hub.app import create_app
from hub.auth import bearer_matches, load_or_create_token
from hub.settings import HubSettings

TOKEN = "unit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = HubSettings(token=TOKEN, home=tmp_path, handshake_timeout=0.3, call_timeout=2)
    return TestClient(create_app(settings))


def test_jsonrpc_initialize_gets_a_workspace_id(client: TestClient) -> None:
    with client.websocket_connect("/ws/workspace", headers=AUTH) as ws:
        ws.send_text(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": "p"}})
        )
        answer = ws.receive_json()
        assert answer["id"] == 1 and isinstance(answer["result"]["workspace_id"], str)
        listed = client.get("/api/workspaces", headers=AUTH).json()
        assert [w["name"] for w in listed] == ["p"] and listed[0]["id"] == answer["result"]["workspace_id"]
    assert client.get("/api/workspaces", headers=AUTH).json() == []


def test_envelope_initialize_gets_an_initialize_response(client: TestClient) -> None:
    with client.websocket_connect("/ws/workspace", headers=AUTH) as ws:
        ws.send_text(json.dumps({"type": "initialize", "request_id": "1", "payload": {"workspace": "p"}}))
        answer = ws.receive_json()
        assert answer["type"] == "initialize_response" and answer["request_id"] == "1"
        assert answer["payload"]["status"] == "success" and answer["payload"]["workspace_id"]


@pytest.mark.parametrize(
    "first",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "list_files", "params": {}}),
        json.dumps({"type": "list_files", "request_id": "1", "payload": {}}),
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": ""}}),
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": 5}}),
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize"}),
    ],
    ids=["garbage", "array", "other-method", "other-type", "empty-name", "name-not-string", "no-params"],
)
def test_anything_but_initialize_first_is_closed_with_a_reason(client: TestClient, first: str) -> None:
    with client.websocket_connect("/ws/workspace", headers=AUTH) as ws:
        ws.send_text(first)
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_text()
        assert closed.value.code == 1008 and closed.value.reason
    assert client.get("/api/workspaces", headers=AUTH).json() == []


def test_a_binary_first_frame_is_closed_with_a_reason(client: TestClient) -> None:
    with client.websocket_connect("/ws/workspace", headers=AUTH) as ws:
        ws.send_bytes(b"\x00\x01")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1008 and "binary" in closed.value.reason


def test_silence_after_connecting_is_closed_after_the_handshake_timeout(client: TestClient) -> None:
    with client.websocket_connect("/ws/workspace", headers=AUTH) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1008 and "initialize" in closed.value.reason


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_the_websocket_is_refused_before_accept_without_the_token(
    client: TestClient, headers: dict[str, str]
) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/ws/workspace", headers=headers),
    ):
        pass
    assert refused.value.code == 1008


def test_rest_needs_the_token_except_healthz(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    for route in ("/api/workspaces", "/api/tools"):
        assert client.get(route).status_code == 401
        assert client.get(route, headers={"Authorization": "Bearer x"}).status_code == 401
        assert client.get(route, headers=AUTH).status_code == 200
    assert client.post("/api/workspaces/x/tools/list_files", json={}).status_code == 401


def test_a_call_to_a_silent_client_times_out_with_504(client: TestClient) -> None:
    with client.websocket_connect("/ws/workspace", headers=AUTH) as ws:
        ws.send_text(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": "p"}})
        )
        wid = ws.receive_json()["result"]["workspace_id"]
        response = client.post(f"/api/workspaces/{wid}/tools/list_files", json={}, headers=AUTH)
        assert response.status_code == 504
        assert ws.receive_json()["method"] == "list_files"  # it was sent; nobody answered


def test_requests_from_the_client_after_the_handshake_get_method_not_found(client: TestClient) -> None:
    with client.websocket_connect("/ws/workspace", headers=AUTH) as ws:
        ws.send_text(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": "p"}})
        )
        ws.receive_json()
        ws.send_text(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "shutdown_hub"}))
        assert ws.receive_json()["error"]["code"] == -32601
        ws.send_bytes(b"\xff")
        assert ws.receive_json()["error"]["code"] == -32600


def test_the_token_file_is_created_once_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIHUB_TOKEN", raising=False)
    home = tmp_path / "home"
    token, source = load_or_create_token(home)
    assert len(token) >= 32 and source == str(home / "token")
    assert stat.S_IMODE(os.stat(home / "token").st_mode) == 0o600
    assert load_or_create_token(home)[0] == token
    monkeypatch.setenv("AIHUB_TOKEN", "from-env")
    assert load_or_create_token(home) == ("from-env", "AIHUB_TOKEN")


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer t0k", True),
        ("bearer t0k", True),
        ("Bearer t0k ", True),
        ("Bearer t0", False),
        ("t0k", False),
        (None, False),
        ("Basic t0k", False),
    ],
)
def test_bearer_matching(header: str | None, ok: bool) -> None:
    assert bearer_matches(header, "t0k") is ok


def test_an_empty_token_file_is_replaced_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIHUB_TOKEN", raising=False)
    (tmp_path / "token").write_text("\n")
    token, _ = load_or_create_token(tmp_path)
    assert len(token) >= 32 and (tmp_path / "token").read_text().strip() == token
    assert not bearer_matches("Bearer ", "") and not bearer_matches("Bearer", "")


def test_rest_bodies_that_are_not_json_objects_or_too_big_are_refused(tmp_path: Path) -> None:
    settings = HubSettings(token=TOKEN, home=tmp_path, max_body_bytes=1000)
    client = TestClient(create_app(settings))
    with client.websocket_connect("/ws/workspace", headers=AUTH) as ws:
        ws.send_text(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": "p"}})
        )
        wid = ws.receive_json()["result"]["workspace_id"]
        route = f"/api/workspaces/{wid}/tools/read_files"
        for body in (b'{"files": ["\\ud800"]}', b'{"files": NaN}', b"[1]", b"{"):
            assert client.post(route, content=body, headers=AUTH).status_code == 422, body
        big = json.dumps({"files": ["x" * 2000]}).encode()
        assert client.post(route, content=big, headers=AUTH).status_code == 413


def test_a_name_two_workspaces_share_is_409_and_ids_still_work(client: TestClient) -> None:
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": "twin"}})
    with (
        client.websocket_connect("/ws/workspace", headers=AUTH) as a,
        client.websocket_connect("/ws/workspace", headers=AUTH) as b,
    ):
        a.send_text(init)
        b.send_text(init)
        ids = {a.receive_json()["result"]["workspace_id"], b.receive_json()["result"]["workspace_id"]}
        response = client.post("/api/workspaces/twin/tools/list_files", json={}, headers=AUTH)
        assert response.status_code == 409
        assert all(i in response.json()["detail"] for i in ids)


def test_there_are_no_unauthenticated_doc_routes(client: TestClient) -> None:
    for route in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(route).status_code == 404


def test_the_hub_log_never_shows_the_token() -> None:
    import logging

    from hub.cli import RedactSecret

    record = logging.LogRecord(
        "uvicorn.error", logging.DEBUG, __file__, 1, "< %s: %s", ("authorization", "Bearer s3cr3t"), None
    )
    RedactSecret("s3cr3t").filter(record)
    assert "s3cr3t" not in record.getMessage() and "<token>" in record.getMessage()


def test_a_workspace_past_the_hub_maximum_is_told_to_try_again_later(tmp_path: Path) -> None:
    client = TestClient(create_app(HubSettings(token=TOKEN, home=tmp_path, max_workspaces=1)))
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"workspace": "p"}}
    with client.websocket_connect("/ws/workspace", headers=AUTH) as first:
        first.send_text(json.dumps(hello))
        assert "workspace_id" in first.receive_json()["result"]
        with client.websocket_connect("/ws/workspace", headers=AUTH) as second:
            second.send_text(json.dumps(hello))
            with pytest.raises(WebSocketDisconnect) as closed:
                second.receive_json()
            assert closed.value.code == 1013 and "maximum of 1 workspaces" in closed.value.reason
        assert len(client.get("/api/workspaces", headers=AUTH).json()) == 1
    with client.websocket_connect("/ws/workspace", headers=AUTH) as again:  # a slot is free again
        again.send_text(json.dumps(hello))
        assert "workspace_id" in again.receive_json()["result"]
