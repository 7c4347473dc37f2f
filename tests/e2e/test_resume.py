"""Sessions that survive a lost connection: the workspace keeps its id, a running command keeps
running, its answer reaches the caller still waiting, and nothing runs twice."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.conftest import Client, Hub, free_port, wait_until

pytestmark = pytest.mark.e2e


class Proxy:
    """A TCP relay between client and hub that the test can cut, as a network would (no close frame)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.transports: list[asyncio.Transport] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        ready = threading.Event()

        async def start() -> None:
            self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
            ready.set()

        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop)
        assert ready.wait(10)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.transports += [writer.transport, up_writer.transport]  # type: ignore[list-item]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        """Every connection through the relay dies at once, in both directions (RST, no close frame)."""

        def abort() -> None:
            for transport in self.transports:
                transport.abort()
            self.transports.clear()

        self.loop.call_soon_threadsafe(abort)

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


@pytest.fixture
def proxy(hub: Hub) -> Iterator[Proxy]:
    relay = Proxy(hub.port)
    yield relay
    relay.close()


class ViaProxy:
    """What start_client needs of a hub, with the client pointed at the relay."""

    def __init__(self, hub: Hub, proxy: Proxy) -> None:
        self.hub, self.token = hub, hub.token
        self.ws = f"ws://127.0.0.1:{proxy.port}/ws/workspace"

    def workspace_id(self, name: str, timeout: float = 20) -> str:
        return self.hub.workspace_id(name, timeout)


def test_a_command_survives_a_lost_connection_and_its_answer_reaches_the_caller(
    hub: Hub, proxy: Proxy, project: Path, start_client: Callable[..., Client]
) -> None:
    client = start_client(ViaProxy(hub, proxy), project, "--dangerous", "deny", name="roaming")  # type: ignore[arg-type]
    before = hub.workspace_id("roaming")
    outcome: dict[str, object] = {}

    def call() -> None:
        response = hub.call(
            before,
            "execute_command",
            {"command": "echo run >> runs.txt; sleep 2; echo finished", "timeout": 60},
        )
        outcome.update(status=response.status_code, body=response.json())

    worker = threading.Thread(target=call)
    worker.start()
    wait_until(lambda: (project / "runs.txt").exists(), what="the command to start")
    proxy.cut()
    worker.join(60)

    assert outcome["status"] == 200, outcome
    body = outcome["body"]
    assert isinstance(body, dict) and body["status"] == "success" and body["stdout"] == "finished\n"
    assert (project / "runs.txt").read_text() == "run\n"  # it ran once
    assert hub.workspace_id("roaming") == before
    assert "reconnected to" in client.output()
    assert hub.call(before, "read_files", {"files": ["README.md"]}).json()["status"] == "success"


def test_a_workspace_keeps_its_id_across_a_hub_restart(hub: Hub, project: Path, start_client) -> None:  # type: ignore[no-untyped-def]
    client = start_client(hub, project, "--dangerous", "deny", name="steady")
    first = hub.workspace_id("steady")
    hub.stop()
    hub.start()
    assert hub.workspace_id("steady", timeout=30) == first
    assert hub.call(first, "read_files", {"files": ["README.md"]}).json()["status"] == "success"
    assert client.process.poll() is None


def start_a_long_command(hub: Hub, wid: str, project: Path) -> tuple[dict[str, object], threading.Thread]:
    """A REST call of a minute-long command, in a thread, once the command has started."""
    outcome: dict[str, object] = {}

    def call() -> None:
        started = time.monotonic()
        response = hub.call(wid, "execute_command", {"command": "touch started; sleep 60", "timeout": 120})
        outcome.update(status=response.status_code, seconds=time.monotonic() - started)

    worker = threading.Thread(target=call)
    worker.start()
    wait_until(lambda: (project / "started").exists(), what="the command to start")
    return outcome, worker


def test_a_client_that_does_not_come_back_fails_its_calls_after_the_grace(
    hub: Hub, proxy: Proxy, project: Path, start_client: Callable[..., Client]
) -> None:
    client = start_client(ViaProxy(hub, proxy), project, "--dangerous", "deny", name="lost")  # type: ignore[arg-type]
    wid = hub.workspace_id("lost")
    outcome, worker = start_a_long_command(hub, wid, project)
    proxy.server.close()  # no way back: the relay stops listening
    proxy.cut()
    listed = wait_until(
        lambda: [w for w in hub.workspaces() if w["id"] == wid and w["connected"] is False],
        what="the workspace to show as disconnected",
    )
    assert listed
    assert hub.call(wid, "read_files", {"files": ["README.md"]}).status_code == 502  # new calls: at once
    worker.join(60)
    assert outcome["status"] == 502 and float(outcome["seconds"]) < 60  # type: ignore[arg-type]
    wait_until(lambda: not hub.workspaces(), what="the workspace to be removed")
    assert client.process.poll() is None  # still trying to reconnect


def test_a_client_that_stops_on_purpose_fails_its_calls_at_once(
    hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    client = start_client(hub, project, "--dangerous", "deny", name="leaving")
    wid = hub.workspace_id("leaving")
    outcome, worker = start_a_long_command(hub, wid, project)
    client.process.terminate()  # Ctrl-C / SIGTERM: a clean close
    worker.join(30)
    assert outcome["status"] == 502
    assert float(outcome["seconds"]) < 8  # type: ignore[arg-type]  # not after the 10 s grace
    assert not [w for w in hub.workspaces() if w["id"] == wid]


def keyed_call(hub: Hub, wid: str, key: str, command: str) -> httpx2.Response:
    return httpx2.post(
        f"{hub.http}/api/workspaces/{wid}/tools/execute_command",
        json={"command": command, "timeout": 120},
        headers={**hub.headers(), "Idempotency-Key": key},
        timeout=60,
    )


def test_a_hub_killed_mid_command_comes_back_and_a_retry_with_the_key_gets_the_one_run(
    hub: Hub, project: Path, start_client: Callable[..., Client]
) -> None:
    client = start_client(hub, project, "--dangerous", "deny", name="keyed")
    wid = hub.workspace_id("keyed")
    # Runs until the test lets it finish; counts its runs.
    command = "echo run >> runs.txt; while [ ! -e go ]; do sleep 0.05; done; echo finished"
    first: dict[str, object] = {}

    def call() -> None:
        try:
            first["status"] = keyed_call(hub, wid, "deploy-7", command).status_code
        except httpx2.HTTPError as exc:  # the hub died under it
            first["error"] = type(exc).__name__

    worker = threading.Thread(target=call)
    worker.start()
    wait_until(lambda: (project / "runs.txt").exists(), what="the command to start")
    hub.stop(signal.SIGKILL)
    worker.join(30)
    assert "error" in first, first
    hub.start()
    assert hub.workspace_id("keyed", timeout=30) == wid  # the same workspace, on the new hub

    retried: dict[str, httpx2.Response] = {}
    retry = threading.Thread(target=lambda: retried.update(r=keyed_call(hub, wid, "deploy-7", command)))
    retry.start()
    time.sleep(0.5)  # the retry waits for the run still going; it does not start another
    assert retry.is_alive()
    (project / "go").touch()
    retry.join(60)
    body = retried["r"].json()
    assert retried["r"].status_code == 200 and body["status"] == "success", body
    assert body["stdout"] == "finished\n"
    assert (project / "runs.txt").read_text() == "run\n"  # it ran once

    again = keyed_call(hub, wid, "deploy-7", command)  # done: answered from the client's cache
    assert again.json() == body
    assert (project / "runs.txt").read_text() == "run\n"
    fresh = keyed_call(hub, wid, "deploy-8", command)  # another key is another run
    assert fresh.json()["status"] == "success"
    assert (project / "runs.txt").read_text() == "run\nrun\n"
    assert client.process.poll() is None


def test_an_idempotency_key_must_be_visible_ascii(hub: Hub, project: Path, start_client) -> None:  # type: ignore[no-untyped-def]
    start_client(hub, project, "--dangerous", "deny", name="strict")
    wid = hub.workspace_id("strict")
    for bad in ("", "has space", "x" * 129, "caf\u00e9".encode()):
        response = httpx2.post(
            f"{hub.http}/api/workspaces/{wid}/tools/read_files",
            json={"files": ["README.md"]},
            headers={**hub.headers(), "Idempotency-Key": bad},
            timeout=10,
        )
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
