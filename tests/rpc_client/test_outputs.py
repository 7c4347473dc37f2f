"""Cut command output is kept in full and read back in pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpc_client.dispatcher import ClientContext
from rpc_client.outputs import KEEP
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from tests.rpc_client.helpers import NoApprover, call

pytestmark = pytest.mark.anyio


async def test_a_cut_output_is_read_back_whole_in_pages(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with Sandbox(tmp_path / "root") as sandbox:
        policy = CommandPolicy(DangerousMode.DENY, read_only=False, approver=NoApprover())
        ctx = ClientContext(
            sandbox=sandbox,
            policy=policy,
            output_cap=1000,
            outputs=tmp_path / "outputs",
            report=lambda s: None,
        )
        result = (await call(ctx, "execute_command", {"command": "seq 1 20000; echo err >&2"}))["result"]
        assert result["truncated"] is True and "cut here" in result["stdout"]
        pages, offset = [], 0
        while True:
            page = (
                await call(
                    ctx, "read_output", {"output_id": result["output_id"], "offset": offset, "limit": 10000}
                )
            )["result"]
            pages.append(page["data"])
            offset = page["next_offset"]
            if page["eof"]:
                break
        assert "".join(pages) == "".join(f"{i}\n" for i in range(1, 20001))
        err = (await call(ctx, "read_output", {"output_id": result["output_id"], "stream": "stderr"}))[
            "result"
        ]
        assert err["data"] == "err\n" and err["eof"] is True

        short = (await call(ctx, "execute_command", {"command": "echo short"}))["result"]
        assert "output_id" not in short  # nothing was cut: nothing kept
        assert len(list((tmp_path / "outputs").glob("*.stdout"))) == 1

        for _ in range(KEEP + 2):
            await call(ctx, "execute_command", {"command": "seq 1 2000"})
        assert len(list((tmp_path / "outputs").glob("*.stdout"))) == KEEP
        gone = await call(ctx, "read_output", {"output_id": result["output_id"]})
        assert gone["error"]["code"] == -32002
        bad = await call(ctx, "read_output", {"output_id": "../../etc/passwd"})
        assert bad["error"]["code"] == -32602
