"""The live output streamer: batching, order, whole characters, a cap."""

from __future__ import annotations

from typing import Any

import pytest

from rpc_client.scope import OutputStreamer, RequestScope

pytestmark = pytest.mark.anyio


async def test_output_is_sent_in_order_in_whole_characters_and_capped() -> None:
    sent: list[dict[str, Any]] = []

    async def notify(method: str, params: dict[str, Any]) -> None:
        assert method == "command_output_chunk"
        sent.append(params)

    streamer = OutputStreamer(RequestScope(7, notify), batch=4, limit=20)
    streamer("stdout", b"caf\xc3")  # the first byte of an é
    streamer("stdout", b"\xa9 ")
    streamer("stderr", b"warn\n")
    for _ in range(10):
        streamer("stdout", b"0123456789")
    await streamer.close()
    stdout = "".join(p["data"] for p in sent if p["stream"] == "stdout")
    assert stdout.startswith("café ") and "\ufffd" not in stdout.split("\n")[0]
    assert "live output stops here" in stdout
    assert all(p["id"] == 7 for p in sent)
    assert sum(len(p["data"].split("\n[...")[0]) for p in sent) <= 20
