"""On a real network: TLS with verified certificates, plain ws:// only on loopback, Origin
checks against browser pages, and client tokens that connect a workspace but open no REST route."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import Client, Hub, free_port, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_hub(tmp_path: Path) -> Iterator[Hub]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "hub.pem", tmp_path / "hub.key", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    home = tmp_path / "tls-home"
    home.mkdir()
    hub = Hub(
        port=free_port(),
        home=home,
        args=["--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file)],
        ca_file=str(ca_file),
    )
    hub.start()
    yield hub
    hub.stop()


def test_a_client_reaches_a_tls_hub_over_wss_with_the_ca_it_is_given(
    tls_hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    assert tls_hub.ws.startswith("wss://") and tls_hub.http.startswith("https://")
    start_client(tls_hub, project, "--ca-file", str(tls_hub.ca_file), name="secure")
    answer = tls_hub.call("secure", "read_files", {"files": ["README.md"]}).json()
    assert answer["status"] == "success" and answer["files"] == {"README.md": "# demo project\n"}
    # Plain HTTP to the TLS port gets nowhere.
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(f"http://127.0.0.1:{tls_hub.port}/healthz", timeout=5).raise_for_status()


def test_a_client_refuses_a_certificate_it_cannot_verify(
    tls_hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    client = start_client(tls_hub, project, name="untrusting", wait=False)  # system store only
    assert client.process.wait(30) == 6
    assert "certificate is not trusted" in client.output() and "--ca-file" in client.output()
    assert tls_hub.workspaces() == []


def run_client(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpc_client.cli", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_plain_ws_leaves_this_machine_only_with_insecure(project: Path) -> None:
    refused = run_client("--hub", "ws://192.0.2.1:9/ws/workspace", "--root", str(project), "--token", "t")
    assert refused.returncode == 2
    assert "refusing ws:// to 192.0.2.1" in refused.stderr and "wss://" in refused.stderr
    wrong = run_client(
        "--hub", "ws://127.0.0.1:9/ws/workspace", "--root", str(project), "--token", "t", "--ca-file", "x.pem"
    )
    assert wrong.returncode == 2 and "--ca-file is for wss://" in wrong.stderr
    missing = run_client(
        "--hub",
        "wss://127.0.0.1:9/ws/workspace",
        "--root",
        str(project),
        "--token",
        "t",
        "--ca-file",
        "/nope.pem",
    )
    assert missing.returncode == 2 and "--ca-file" in missing.stderr


def _open(url: str, token: str, origin: str | None) -> str:
    async def attempt() -> str:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with connect(url, additional_headers=headers, origin=origin, open_timeout=10) as ws:  # type: ignore[arg-type]
                await ws.send('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"workspace":"o"}}')
                return str(await ws.recv())
        except InvalidStatus as exc:
            return f"HTTP {exc.response.status_code}"

    return asyncio.run(attempt())


def test_a_browser_page_from_another_origin_cannot_open_a_workspace(hub: Hub, tmp_path: Path) -> None:
    assert _open(hub.ws, hub.token, "https://evil.example") == "HTTP 403"
    assert _open(hub.ws, hub.token, "null") == "HTTP 403"
    assert "workspace_id" in _open(hub.ws, hub.token, None)  # aihub-client sends no Origin

    home = tmp_path / "origin-home"
    home.mkdir()
    allowing = Hub(port=free_port(), home=home, args=["--allowed-origin", "https://hub.example"])
    allowing.start()
    try:
        assert "workspace_id" in _open(allowing.ws, allowing.token, "https://hub.example")
        assert _open(allowing.ws, allowing.token, "https://hub.example.evil") == "HTTP 403"
    finally:
        allowing.stop()


def aihub(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIHUB_HOME": str(hub.home)}
    env.pop("AIHUB_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_a_client_token_connects_a_workspace_and_nothing_else(
    hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    created = aihub(hub, "token", "create", "--name", "laptop")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("aihc_") and "shown only this once" in created.stderr
    stored = hub.home / "client_tokens.json"
    assert token not in stored.read_text() and stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert aihub(hub, "token", "create", "--name", "laptop").returncode == 1  # names are unique
    assert aihub(hub, "token", "list").stdout.startswith("laptop\t")

    client = start_client(hub, project, token=token, name="laptop-project")
    assert hub.call("laptop-project", "read_files", {"files": ["README.md"]}).json()["status"] == "success"
    as_laptop = {"Authorization": f"Bearer {token}"}
    assert httpx2.get(f"{hub.http}/api/workspaces", headers=as_laptop, timeout=5).status_code == 401
    assert (
        httpx2.post(
            f"{hub.http}/api/workspaces/laptop-project/tools/read_files",
            json={"files": ["README.md"]},
            headers=as_laptop,
            timeout=5,
        ).status_code
        == 401
    )

    revoked = aihub(hub, "token", "revoke", "laptop")
    assert revoked.returncode == 0 and aihub(hub, "token", "revoke", "laptop").returncode == 1
    again = start_client(hub, project, token=token, name="after-revoke", wait=False)
    assert again.process.wait(30) == 4
    assert client.process.poll() is None  # a connected client stays until it reconnects
    wait_until(lambda: "after-revoke" not in str(hub.workspaces()), what="no workspace for the revoked token")
