"""execute_command on real subprocesses: exit codes, timeouts, output caps, environment."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rpc_client.commands import OutputBuffer, run_command
from schemas.errors import ErrorCode, RpcError

pytestmark = pytest.mark.anyio


async def test_a_non_zero_exit_is_a_result_with_its_code(tmp_path: Path) -> None:
    result = await run_command("echo out; echo err >&2; exit 7", cwd=tmp_path, timeout=10, output_cap=1000)
    assert (result["stdout"], result["stderr"], result["exit_code"]) == ("out\n", "err\n", 7)


async def test_it_runs_in_the_root_with_stdin_closed(tmp_path: Path) -> None:
    result = await run_command("pwd; cat; echo end", cwd=tmp_path, timeout=10, output_cap=1000)
    assert result["stdout"] == f"{tmp_path}\nend\n"


async def test_a_timeout_kills_the_whole_group_and_keeps_the_output_so_far(tmp_path: Path) -> None:
    with pytest.raises(RpcError) as timed_out:
        await run_command(
            "echo early; sleep 60 & echo $! > pid; wait", cwd=tmp_path, timeout=0.5, output_cap=1000
        )
    assert timed_out.value.code == ErrorCode.TIMEOUT
    assert timed_out.value.data is not None and timed_out.value.data["stdout"] == "early\n"
    assert _gone(int((tmp_path / "pid").read_text()))


def _gone(pid: int) -> bool:
    """Killed: no such process, or a zombie waiting only for its reaper (SIGKILL lands within moments)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


async def test_background_children_do_not_outlive_the_command(tmp_path: Path) -> None:
    result = await run_command("sleep 60 & echo $! > pid", cwd=tmp_path, timeout=10, output_cap=1000)
    assert result["exit_code"] == 0
    assert _gone(int((tmp_path / "pid").read_text()))


async def test_output_beyond_the_cap_keeps_head_and_tail_with_a_marker(tmp_path: Path) -> None:
    result = await run_command("seq 1 100000", cwd=tmp_path, timeout=30, output_cap=1000)
    out = result["stdout"]
    assert out.startswith("1\n2\n3\n") and out.endswith("99999\n100000\n")
    assert "bytes of output cut here" in out and result["truncated"] is True
    assert len(out) < 1200


async def test_a_signal_death_is_reported_like_a_shell_does(tmp_path: Path) -> None:
    result = await run_command("kill -TERM $$", cwd=tmp_path, timeout=10, output_cap=1000)
    assert result["exit_code"] == 128 + 15 and result["signal"] == "SIGTERM"


async def test_the_hub_token_is_not_passed_to_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIHUB_TOKEN", "secret-token")
    result = await run_command('echo "[$AIHUB_TOKEN]"', cwd=tmp_path, timeout=10, output_cap=1000)
    assert result["stdout"] == "[]\n"


async def test_a_command_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RpcError) as failed:
        await run_command("ls", cwd=tmp_path / "gone", timeout=10, output_cap=1000)
    assert failed.value.code == ErrorCode.CANNOT_START


def test_the_output_buffer_keeps_exact_bytes_under_the_cap() -> None:
    buffer = OutputBuffer(10)
    for chunk in (b"abc", b"def", b"ghij"):
        buffer.feed(chunk)
    assert buffer.text() == "abcdefghij" and not buffer.truncated
    buffer.feed(b"KLMNO")
    text = buffer.text()
    assert text.startswith("abcde") and text.endswith("KLMNO") and "5 bytes of output cut" in text
