"""examples/existing_app under uvicorn, with a real aihub-client: the hub mounted in a host application.

The host's own routes call the typed Python API (``workspaces.call``,
``tools_for_llm``); its own auth (X-Api-Key, a per-client secret) stands in
for the hub's token, which is never set; its lifespan closes the clients.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.e2e.conftest import Client, free_port, stop, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
API_KEY = "alice-key-0123"
CLIENT_SECRET = "laptop-secret-4567"
APP = "examples.existing_app.app:app_from_env"


@dataclass
class ExistingApp:
    """The example app in a uvicorn process; ``ws``, ``token`` and ``workspace_id`` serve ``start_client``."""

    port: int
    home: Path
    token: str = CLIENT_SECRET
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ai/ws/workspace"

    def get(
        self, route: str, key: str | None = API_KEY, params: dict[str, str] | None = None
    ) -> httpx2.Response:
        headers = {"X-Api-Key": key} if key else {}
        return httpx2.get(self.http + route, headers=headers, params=params, timeout=30)

    def post(self, route: str, body: object, key: str | None = API_KEY) -> httpx2.Response:
        headers = {"X-Api-Key": key} if key else {}
        return httpx2.post(self.http + route, json=body, headers=headers, timeout=30)

    def flags(self) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]

    def start(self) -> None:
        # No AIHUB_TOKEN, and an AIHUB_HOME without a token file: the hub's token is not needed.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AIHUB_"))}
        env = {
            **inherited,
            "AIHUB_HOME": str(self.home / "aihub-home"),
            "EXAMPLE_HOME": str(self.home / "example-home"),
            "EXAMPLE_API_KEYS": f"alice:{API_KEY}",
            "EXAMPLE_CLIENT_SECRETS": f"laptop:{CLIENT_SECRET}",
        }
        self.log = self.home / f"app-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", APP, *self.flags()],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the app exited: {self.output()}")
            try:
                return self.get("/hello", key=None).status_code == 200
            except httpx2.HTTPError:
                return False

        wait_until(up, what="the example app to answer /hello")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""

    def workspace_id(self, name: str, timeout: float = 20) -> str:
        def find() -> str | None:
            return next((p["id"] for p in self.get("/projects").json() if p["name"] == name), None)

        return str(wait_until(find, timeout, what=f"workspace {name!r} to connect"))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ExistingApp]:
    existing = ExistingApp(port=free_port(), home=tmp_path)
    existing.start()
    yield existing
    if existing.process is not None:
        stop(existing.process)


def test_the_host_drives_a_real_client_through_its_own_routes_and_the_hubs(
    app: ExistingApp, project: Path, start_client: Callable[..., Client]
) -> None:
    client = start_client(app, project, name="proj")
    assert app.get("/hello", key=None).json() == {"message": "hello from the existing app"}

    # The host's routes, over workspaces.call: typed results in, the host's own JSON out.
    files = app.get("/projects/proj/files", params={"path": "./"})
    assert files.status_code == 200 and files.json() == {"user": "alice", "paths": ["README.md"]}
    read = app.get("/projects/proj/file", params={"path": "src/main.py"}).json()
    assert read["content"] == "print('hello')\n" and len(read["sha256"]) == 64
    outside = app.get("/projects/proj/file", params={"path": "../outside-secret.txt"})
    assert outside.status_code == 422 and outside.json()["error"] == "ToolError"
    assert "TOP SECRET" not in outside.text
    assert app.get("/projects/elsewhere/files").json()["error"] == "WorkspaceNotFound"

    # The host's LLM side, over tools_for_llm: tool names, then tool messages' content.
    assert {"read_files", "list_files"} <= set(app.get("/projects/proj/llm-tools").json())
    content = app.post(
        "/projects/proj/llm-tool", {"name": "read_files", "arguments": '{"files": ["README.md"]}'}
    )
    assert '"status":"success"' in content.json()["content"] and "# demo project" in content.json()["content"]
    mistake = app.post("/projects/proj/llm-tool", {"name": "read_files", "arguments": '{"files": '})
    assert mistake.status_code == 200 and "not valid JSON" in mistake.json()["content"]

    # The hub's own REST routes, mounted under /ai, behind the host's X-Api-Key.
    workspace_id = app.workspace_id("proj")
    answer = app.post(f"/ai/api/workspaces/{workspace_id}/tools/read_files", {"files": ["README.md"]})
    assert answer.status_code == 200 and answer.json()["status"] == "success"
    assert answer.json()["files"] == {"README.md": "# demo project\n"}
    log = client.output()
    assert "connected to " + app.ws in log and "list_files ./ -> ok" in log and "read_files README.md" in log


def test_wrong_host_credentials_are_refused_and_the_hubs_token_is_never_needed(
    app: ExistingApp, project: Path, start_client: Callable[..., Client]
) -> None:
    for key in (None, "wrong"):
        assert app.get("/projects", key=key).status_code == 401
        assert app.get("/ai/api/workspaces", key=key).status_code == 401
    bearer = {"Authorization": f"Bearer {CLIENT_SECRET}"}  # a client's secret is no user key
    assert httpx2.get(app.http + "/ai/api/tools", headers=bearer, timeout=5).status_code == 401
    assert app.get("/ai/api/tools").status_code == 200

    refused = start_client(app, project, name="intruder", token="not-a-client-secret", wait=False)
    assert refused.process.wait(20) == 4  # aihub-client's exit status for a refused token
    assert "refused the token (HTTP 403)" in refused.output()
    assert app.get("/projects").json() == []

    start_client(app, project, name="proj")
    assert [p["name"] for p in app.get("/projects").json()] == ["proj"]
    assert not (app.home / "aihub-home" / "token").exists()


def test_shutdown_closes_the_clients_and_the_hosts_teardown_follows(
    app: ExistingApp, project: Path, start_client: Callable[..., Client]
) -> None:
    client = start_client(app, project, name="proj")
    assert app.process is not None
    stop(app.process)  # SIGTERM: uvicorn shuts down gracefully, then ends by the same signal
    assert app.process.returncode in (0, -signal.SIGTERM)
    assert "example: stopped; 0 workspaces connected" in app.output()
    wait_until(lambda: "reconnecting in" in client.output(), what="the client to notice the shutdown")

    app.start()  # same port: the client comes back by itself
    app.workspace_id("proj")
    assert client.output().count("connected to " + app.ws) == 2
