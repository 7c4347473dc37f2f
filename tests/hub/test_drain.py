"""The hub draining for a shutdown, through its routes in-process: what a caller sees meanwhile."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from hub import HubSettings, WorkspaceHub
from hub.registry import Workspace
from schemas.framing import Framing

AUTH = {"Authorization": "Bearer t"}


class CountingModel:
    """A model that must not be asked: it counts the turns that reached it."""

    name = "counting"

    def __init__(self) -> None:
        self.asked = 0

    async def stream(self, messages: Any, tools: Any) -> AsyncIterator[Any]:
        self.asked += 1
        raise NotImplementedError
        yield


async def silent(text: str) -> None:
    json.loads(text)


def test_a_chat_turn_asked_for_during_the_drain_is_refused_with_503_before_the_model_runs(
    tmp_path: Path,
) -> None:
    model = CountingModel()
    hub = WorkspaceHub(HubSettings(home=tmp_path, token="t"), model=model)
    app = FastAPI(lifespan=hub.lifespan)
    app.include_router(hub.router)
    hub.registry.add(Workspace(name="proj", framing=Framing.JSONRPC, send=silent))
    with TestClient(app) as client:
        assert client.portal is not None
        client.portal.call(hub.drain, 0)
        for accept in ("application/json", "text/event-stream"):
            answer = client.post(
                "/api/workspaces/proj/chat", json={"message": "hi"}, headers=AUTH | {"Accept": accept}
            )
            assert answer.status_code == 503, answer.text
            assert answer.headers.get("retry-after") == "2" and "shutting down" in answer.text
        assert model.asked == 0
        assert client.get("/api/conversations", headers=AUTH).json() == []  # no turn was begun
