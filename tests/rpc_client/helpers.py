"""What the client's unit tests share: an approver that never says yes, and one JSON-RPC call."""

from __future__ import annotations

import json
from typing import Any

from rpc_client.dispatcher import ClientContext, dispatch


class NoApprover:
    """Nobody at the terminal: every dangerous command is declined."""

    async def approve(self, command: str, reasons: tuple[str, ...], timeout: float) -> bool:
        return False


async def call(ctx: ClientContext, method: str, params: Any = None, id: int = 1) -> dict[str, Any]:
    """Dispatch one JSON-RPC request through the client's real dispatcher; its decoded answer."""
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        request["params"] = params
    answer: dict[str, Any] = json.loads(await dispatch(ctx, json.dumps(request)))
    assert answer["id"] == id
    return answer
