"""Small reads on the event loop (local file systems only), with the same answers as the thread path."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpc_client import dispatcher
from rpc_client.dispatcher import ClientContext
from rpc_client.files import LOCAL_FILESYSTEMS, filesystem_type
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from tests.rpc_client.helpers import NoApprover, call

pytestmark = pytest.mark.anyio

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /mnt/share rw,relatime shared:2 - nfs4 server:/export rw
31 30 0:27 / /mnt/share/local\\040disk rw - xfs /dev/sdb1 rw
"""


def test_the_file_system_of_a_path_is_its_longest_mount_point(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert filesystem_type("/home/me/project", str(info)) == "ext4"
    assert filesystem_type("/mnt/share/code", str(info)) == "nfs4"
    assert filesystem_type("/mnt/share/local disk/code", str(info)) == "xfs"
    assert filesystem_type("/mnt/sharedthing", str(info)) == "ext4"  # a sibling with the same prefix
    assert filesystem_type("/x", str(tmp_path / "missing")) is None
    assert "nfs4" not in LOCAL_FILESYSTEMS and "ext4" in LOCAL_FILESYSTEMS


@pytest.mark.parametrize("inline", [False, True])
async def test_inline_and_threaded_reads_answer_the_same(tmp_path: Path, inline: bool) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "small.py").write_text("x = 1\n")
    (root / "big.txt").write_text("y" * (dispatcher.INLINE_MAX_BYTES + 1))  # past the fast path's cap
    (root / ".env").write_text("SECRET=1\n")
    ctx = ClientContext(
        sandbox=Sandbox(root),
        policy=CommandPolicy(DangerousMode.DENY, read_only=False, approver=NoApprover()),
        inline_reads=inline,
    )
    ok = await call(ctx, "read_files", {"files": ["small.py", "big.txt"]})
    assert ok["result"]["files"] == {
        "small.py": "x = 1\n",
        "big.txt": "y" * (dispatcher.INLINE_MAX_BYTES + 1),
    }
    partial = await call(ctx, "read_files", {"files": ["small.py", "missing.py", ".env"]})
    assert partial["error"]["data"]["files"] == {"small.py": "x = 1\n"}
    assert set(partial["error"]["data"]["errors"]) == {"missing.py", ".env"}
