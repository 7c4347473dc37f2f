"""``--compression``: frames to the hub compressed or not, counted on the wire (a proxy between them)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks.link import SlowLink
from tests.e2e.conftest import Client, Hub

pytestmark = pytest.mark.e2e


class CountingProxy:
    """SlowLink at loopback speed, on a thread of its own: counts the bytes each way."""

    def __init__(self, target_port: int) -> None:
        self.link = SlowLink(target_port, rate=1e12, delay=0.0)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._serve(),), daemon=True
        )

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.link:
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.link.port}/ws/workspace"


@pytest.fixture
def source(project: Path) -> Iterator[int]:
    text = "".join(
        f"def handler_{i}(request):\n    return render(request, 'page_{i % 7}.html')\n\n" for i in range(4000)
    )
    (project / "views.py").write_text(text)
    yield len(text)


@pytest.mark.parametrize(("flags", "compressed"), [(["--compression", "deflate"], True),
                                                   (["--compression", "none"], False),
                                                   ([], False)])  # fmt: skip
def test_frames_are_compressed_as_the_flag_says(
    hub: Hub,
    project: Path,
    source: int,
    start_client: Callable[..., Client],
    flags: list[str],
    compressed: bool,
) -> None:
    """deflate shrinks a read of source code several-fold on the wire; none (and the default, to a hub on
    this machine) sends it as it is."""
    with CountingProxy(hub.port) as proxy:
        client = start_client(hub, project, "--hub", proxy.url, *flags, name="through-proxy")
        before = proxy.link.passed["up"]
        answer = hub.call(hub.workspace_id(client.name), "read_files", {"files": ["views.py"]})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["files"]["views.py"]) == source
        sent = proxy.link.passed["up"] - before
    if compressed:
        assert sent < source / 4
    else:
        assert sent > source
