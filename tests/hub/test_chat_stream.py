"""A turn's event stream whose caller hangs up early (hub/chat.py streamed_turn)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.chat import ChatRequest, EventQueue, streamed_turn
from hub.component import WorkspaceHub
from hub.llm.model import ModelTurn, TextDelta
from hub.registry import Workspace
from hub.settings import HubSettings
from schemas.framing import Framing

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowModel:
    name = "slow"

    def __init__(self) -> None:
        self.finished = False

    async def stream(self, messages: Any, tools: Any) -> AsyncIterator[Any]:
        yield TextDelta("thinking")
        await asyncio.sleep(0.5)
        self.finished = True
        yield ModelTurn(content="thinking", tool_calls=[], usage=None, finish_reason="stop")


async def silent(text: str) -> None:
    json.loads(text)


async def _turn(tmp_path: Path) -> tuple[WorkspaceHub, SlowModel, Any, AsyncIterator[str]]:
    model = SlowModel()
    hub = WorkspaceHub(HubSettings(home=tmp_path, token="t"), model=model)
    workspace = Workspace(name="proj", framing=Framing.JSONRPC, send=silent)
    hub.registry.add(workspace)
    events = EventQueue()
    turn, recorder, task = hub.chat.begin(workspace, ChatRequest(message="hi"), events.put)
    return hub, model, recorder, streamed_turn(hub.chat, turn, recorder, task, events)


async def test_a_caller_gone_after_start_cancels_the_turn_and_frees_the_conversation(tmp_path: Path) -> None:
    """Found by review: the turn was waited for only after the first event, so a body closed there left
    the turn running unheard and its conversation busy for ever (every later turn a 409)."""
    hub, model, recorder, body = await _turn(tmp_path)
    assert "event: start" in await body.__anext__()
    await body.aclose()  # StreamingResponse closes the body when the caller hangs up
    await asyncio.sleep(1.0)
    assert not model.finished
    assert recorder.conversation_id not in hub.chat.running
    assert hub.chat.store.get(recorder.conversation_id) is not None


async def test_a_body_never_started_still_records_the_turns_end(tmp_path: Path) -> None:
    hub, model, recorder, body = await _turn(tmp_path)
    del body  # the response never started (the caller left before its headers)
    async with asyncio.timeout(10):
        while recorder.conversation_id in hub.chat.running:
            await asyncio.sleep(0.05)
    assert model.finished


async def test_every_event_then_done(tmp_path: Path) -> None:
    hub, _, recorder, body = await _turn(tmp_path)
    text = "".join([part async for part in body])
    names = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert names[0] == "start" and names[-1] == "done" and "text" in names
    assert recorder.conversation_id not in hub.chat.running
