"""Real processes on 127.0.0.1: an ``aihub serve`` hub and ``aihub-client`` clients.

Every process is started with ``sys.executable -m ...`` on a free port, waited
for by polling its real interface (bounded), and killed at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

TOKEN = "e2e-test-token-0123456789"
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], object], timeout: float = START_TIMEOUT_S, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class Hub:
    port: int
    home: Path
    token: str = TOKEN
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    #: Extra flags of ``aihub serve`` and extra environment.
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: Set when the hub serves TLS: the CA that signed its certificate (https:// and wss://).
    ca_file: str | None = None

    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True

    @property
    def http(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"{'wss' if self.ca_file else 'ws'}://127.0.0.1:{self.port}/ws/workspace"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        # A developer's own model settings must not leak into the tests' hubs.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AIHUB_LLM_"))}
        env = {**inherited, "AIHUB_HOME": str(self.home), "AIHUB_TOKEN": self.token, **self.env}
        self.log = self.home / f"hub-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hub.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    *self.args,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"hub exited: {self.log.read_text() if self.log else ''}")
            try:
                return httpx2.get(self.http + "/healthz", timeout=1, verify=self.verify()).status_code == 200
            except httpx2.HTTPError:
                return False

        wait_until(healthy, what="the hub to answer /healthz")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop(self.process, sig)

    def workspaces(self) -> list[dict[str, object]]:
        response = httpx2.get(
            self.http + "/api/workspaces", headers=self.headers(), timeout=5, verify=self.verify()
        )
        response.raise_for_status()
        result: list[dict[str, object]] = response.json()
        return result

    def workspace_id(self, name: str, timeout: float = START_TIMEOUT_S) -> str:
        def find() -> str | None:
            for w in self.workspaces():
                if w["name"] == name:
                    return str(w["id"])
            return None

        return str(wait_until(find, timeout, what=f"workspace {name!r} to connect"))

    def call(self, workspace_id: str, method: str, params: object, timeout: float = 60) -> httpx2.Response:
        return httpx2.post(
            f"{self.http}/api/workspaces/{workspace_id}/tools/{method}",
            json=params,
            headers=self.headers(),
            timeout=timeout,
            verify=self.verify(),
        )


@dataclass
class Client:
    process: subprocess.Popen[bytes]
    log: Path
    name: str
    extra: list[str] = field(default_factory=list)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    home = tmp_path / "aihub-home"
    home.mkdir()
    h = Hub(port=free_port(), home=home)
    h.start()
    yield h
    h.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('hello')\n")
    (root / "README.md").write_text("# demo project\n")
    (tmp_path / "outside-secret.txt").write_text("TOP SECRET\n")
    return root


@pytest.fixture
def start_client(tmp_path: Path) -> Iterator[Callable[..., Client]]:
    started: list[Client] = []

    def start(
        hub: Hub,
        root: Path,
        *args: str,
        name: str | None = None,
        token: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> Client:
        name = name or f"ws-{len(started)}-{root.name}"
        log = tmp_path / f"client-{name}.log"
        command = [
            sys.executable, "-m", "rpc_client.cli",
            "--hub", hub.ws, "--root", str(root), "--name", name,
            "--token", token or hub.token, *args,
        ]  # fmt: skip
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        client = Client(process, log, name, list(args))
        started.append(client)
        if wait:
            hub.workspace_id(name)
        return client

    yield start
    for client in started:
        stop(client.process)
