"""edit_file through the client's real dispatcher: exact replacement, refusals, checkpoints, the diff."""

from __future__ import annotations

import difflib
import hashlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpc_client import files
from rpc_client.checkpoints import Checkpoints
from rpc_client.dispatcher import ClientContext
from rpc_client.files import FileLimits, edit_diff
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from rpc_client.state import project_state_dir
from schemas.errors import ErrorCode
from schemas.tools import EditFileParams
from tests.rpc_client.helpers import NoApprover, call

pytestmark = pytest.mark.anyio


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("AIHUB_HOME", str(home))
    return home


def make_ctx(
    root: Path, *, read_only: bool = False, limits: FileLimits | None = None
) -> Iterator[ClientContext]:
    with Sandbox(root) as sandbox:
        yield ClientContext(
            sandbox=sandbox,
            policy=CommandPolicy(DangerousMode.DENY, read_only=read_only, approver=NoApprover()),
            limits=limits or FileLimits(),
            checkpoints=Checkpoints(project_state_dir(sandbox.root)),
            report=lambda line: None,
        )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text(
        "def greet():\n    return 'hello'\n\n\ndef part():\n    return 'bye'\n"
    )
    (root / "twice.txt").write_text("x = 1\ny = 2\nx = 1\n")
    (root / ".env").write_text("TOKEN=s3cret\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (tmp_path / "outside.txt").write_text("outside: old\n")
    return root


@pytest.fixture
def ctx(root: Path, home: Path) -> Iterator[ClientContext]:
    yield from make_ctx(root)


async def edit(ctx: ClientContext, **params: Any) -> dict[str, Any]:
    return await call(ctx, "edit_file", params)


async def test_a_unique_string_is_replaced_and_the_answer_says_how(ctx: ClientContext, root: Path) -> None:
    result = (await edit(ctx, path="src/app.py", old_string="return 'hello'", new_string="return 'hi'"))[
        "result"
    ]
    content = (root / "src" / "app.py").read_bytes()
    assert content == b"def greet():\n    return 'hi'\n\n\ndef part():\n    return 'bye'\n"
    assert result["path"] == "src/app.py" and result["replacements"] == 1
    assert result["sha256"] == sha(content)
    assert result["checkpoint"] == 1
    assert result["diff"] == (
        "--- a/src/app.py\n+++ b/src/app.py\n@@ -1,5 +1,5 @@\n def greet():\n-    return 'hello'\n"
        "+    return 'hi'\n \n \n def part():\n"
    )


async def test_the_diff_matches_difflibs_for_a_single_change(ctx: ClientContext, root: Path) -> None:
    before = "".join(f"line {i}\n" for i in range(40))
    (root / "long.txt").write_text(before)
    result = (await edit(ctx, path="long.txt", old_string="line 20\nline 21\n", new_string="changed\n"))[
        "result"
    ]
    after = (root / "long.txt").read_text()
    expected = "".join(
        difflib.unified_diff(
            before.splitlines(True), after.splitlines(True), "a/long.txt", "b/long.txt", lineterm="\n"
        )
    )
    assert result["diff"] == expected


async def test_an_edit_can_be_undone(ctx: ClientContext, root: Path) -> None:
    before = (root / "src" / "app.py").read_bytes()
    result = (await edit(ctx, path="src/app.py", old_string="'bye'", new_string="'ciao'"))["result"]
    undone = (await call(ctx, "undo", {"checkpoint": result["checkpoint"]}))["result"]
    assert undone == {
        "checkpoint": result["checkpoint"],
        "path": "src/app.py",
        "restored": "previous content",
    }
    assert (root / "src" / "app.py").read_bytes() == before


async def test_no_match_is_refused_and_says_to_read_the_file_again(ctx: ClientContext, root: Path) -> None:
    before = (root / "src" / "app.py").read_bytes()
    error = (await edit(ctx, path="src/app.py", old_string="return 'nope'", new_string="x"))["error"]
    assert error["code"] == ErrorCode.NO_MATCH
    assert "not found" in error["message"] and "read" in error["message"].lower()
    assert "whitespace" in error["message"]
    assert (root / "src" / "app.py").read_bytes() == before


async def test_a_whitespace_mismatch_is_pointed_out(ctx: ClientContext) -> None:
    error = (await edit(ctx, path="src/app.py", old_string="def greet():\n  return 'hello'", new_string="x"))[
        "error"
    ]
    assert error["code"] == ErrorCode.NO_MATCH
    assert "different whitespace" in error["message"]


async def test_several_matches_are_refused_with_the_count_unless_replace_all(
    ctx: ClientContext, root: Path
) -> None:
    error = (await edit(ctx, path="twice.txt", old_string="x = 1", new_string="x = 2"))["error"]
    assert error["code"] == ErrorCode.MULTIPLE_MATCHES and error["data"] == {"matches": 2}
    assert "2 times" in error["message"] and "lines 1, 3" in error["message"]
    assert "replace_all" in error["message"] and "surrounding" in error["message"]
    assert (root / "twice.txt").read_text() == "x = 1\ny = 2\nx = 1\n"
    result = (await edit(ctx, path="twice.txt", old_string="x = 1", new_string="x = 2", replace_all=True))[
        "result"
    ]
    assert result["replacements"] == 2
    assert (root / "twice.txt").read_text() == "x = 2\ny = 2\nx = 2\n"
    assert (
        result["diff"]
        == "--- a/twice.txt\n+++ b/twice.txt\n@@ -1,3 +1,3 @@\n-x = 1\n+x = 2\n y = 2\n-x = 1\n+x = 2\n"
    )


async def test_old_equal_to_new_is_refused(ctx: ClientContext) -> None:
    error = (await edit(ctx, path="twice.txt", old_string="y = 2", new_string="y = 2"))["error"]
    assert error["code"] == ErrorCode.INVALID_PARAMS and "same" in error["message"]


async def test_an_empty_old_string_is_invalid_params(ctx: ClientContext) -> None:
    error = (await edit(ctx, path="twice.txt", old_string="", new_string="y"))["error"]
    assert error["code"] == ErrorCode.INVALID_PARAMS and error["data"]["errors"][0]["loc"] == ["old_string"]


async def test_a_missing_file_is_not_found_and_points_to_write_file(ctx: ClientContext) -> None:
    error = (await edit(ctx, path="nope.py", old_string="a", new_string="b"))["error"]
    assert error["code"] == ErrorCode.NOT_FOUND and "write_file" in error["message"]


async def test_read_only_mode_refuses_the_edit(root: Path, home: Path) -> None:
    for ctx in make_ctx(root, read_only=True):
        error = (await edit(ctx, path="twice.txt", old_string="y = 2", new_string="y = 3"))["error"]
        assert error["code"] == ErrorCode.DENIED and "read-only" in error["message"]
    assert (root / "twice.txt").read_text() == "x = 1\ny = 2\nx = 1\n"


@pytest.mark.parametrize("path", [".env", "sub/.env", ".git/config", ".aihubignore", "./.env"])
async def test_secrets_git_and_the_rules_are_refused_before_the_file_system(
    ctx: ClientContext, path: str
) -> None:
    error = (await edit(ctx, path=path, old_string="TOKEN", new_string="x"))["error"]
    assert error["code"] == ErrorCode.DENIED
    assert "s3cret" not in str(error)


async def test_a_link_to_a_secret_is_refused(ctx: ClientContext, root: Path) -> None:
    (root / "innocent.txt").symlink_to(".env")
    error = (await edit(ctx, path="innocent.txt", old_string="TOKEN", new_string="x"))["error"]
    assert error["code"] == ErrorCode.DENIED
    assert (root / ".env").read_text() == "TOKEN=s3cret\n"


async def test_paths_that_leave_the_root_are_refused(ctx: ClientContext, root: Path, tmp_path: Path) -> None:
    (root / "out").symlink_to(tmp_path / "outside.txt")
    (root / "dir").symlink_to(tmp_path)
    for path in ("../outside.txt", str(tmp_path / "outside.txt"), "out", "dir/outside.txt"):
        error = (await edit(ctx, path=path, old_string="old", new_string="new"))["error"]
        assert error["code"] == ErrorCode.PATH_OUTSIDE_ROOT, path
    assert (tmp_path / "outside.txt").read_text() == "outside: old\n"


async def test_an_edit_through_a_link_inside_the_root_changes_its_target(
    ctx: ClientContext, root: Path
) -> None:
    (root / "alias.py").symlink_to("src/app.py")
    result = (await edit(ctx, path="alias.py", old_string="'bye'", new_string="'ciao'"))["result"]
    assert result["path"] == "src/app.py" and result["diff"].startswith("--- a/src/app.py\n")
    assert (root / "alias.py").is_symlink() and "'ciao'" in (root / "src" / "app.py").read_text()


async def test_a_stale_expected_sha256_is_a_conflict(ctx: ClientContext, root: Path) -> None:
    stale = sha(b"something else")
    error = (
        await edit(ctx, path="twice.txt", old_string="y = 2", new_string="y = 3", expected_sha256=stale)
    )["error"]
    assert error["code"] == ErrorCode.CONFLICT and "read it again" in error["message"]
    fresh = sha((root / "twice.txt").read_bytes())
    result = await edit(ctx, path="twice.txt", old_string="y = 2", new_string="y = 3", expected_sha256=fresh)
    assert result["result"]["replacements"] == 1


def test_a_change_made_between_the_read_and_the_write_is_a_conflict_not_overwritten(
    root: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user saves the file right after the client read it: the write must see it.
    real = files._write_bytes

    def user_saves_first(*args: Any, **kwargs: Any) -> dict[str, Any]:
        (root / "twice.txt").write_text("the user's version\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(files, "_write_bytes", user_saves_first)
    with Sandbox(root) as sandbox:
        params = EditFileParams(path="twice.txt", old_string="y = 2", new_string="y = 3")
        with pytest.raises(files.RpcError) as caught:
            files.edit_file(
                sandbox, params, FileLimits(), checkpoints=Checkpoints(project_state_dir(sandbox.root))
            )
    assert caught.value.code == ErrorCode.CONFLICT
    assert (root / "twice.txt").read_text() == "the user's version\n"


async def test_crlf_files_keep_their_line_endings(ctx: ClientContext, root: Path) -> None:
    (root / "win.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    # The model sent plain newlines (as most do): they stand for the file's CRLF.
    result = (await edit(ctx, path="win.txt", old_string="one\ntwo", new_string="ONE\nTWO\nextra"))["result"]
    assert (root / "win.txt").read_bytes() == b"ONE\r\nTWO\r\nextra\r\nthree\r\n"
    assert result["diff"].endswith("-one\r\n-two\r\n+ONE\r\n+TWO\r\n+extra\r\n three\r\n")
    # Given with the CRLF, it matches as is.
    await edit(ctx, path="win.txt", old_string="extra\r\n", new_string="")
    assert (root / "win.txt").read_bytes() == b"ONE\r\nTWO\r\nthree\r\n"


async def test_everything_outside_the_replacement_is_kept_byte_for_byte(
    ctx: ClientContext, root: Path
) -> None:
    original = "\ufeffmixed\r\nunix\nno newline at the end \t"
    (root / "odd.txt").write_bytes(original.encode("utf-8"))
    result = (await edit(ctx, path="odd.txt", old_string="unix", new_string="UNIX"))["result"]
    assert (root / "odd.txt").read_bytes() == original.replace("unix", "UNIX").encode("utf-8")
    assert result["diff"].endswith("+no newline at the end \t\n\\ No newline at end of file\n") or (
        "\\ No newline at end of file" in result["diff"]
    )


async def test_binary_and_non_utf8_files_are_refused(ctx: ClientContext, root: Path) -> None:
    (root / "latin1.txt").write_bytes(b"caf\xe9\n")
    error = (await edit(ctx, path="latin1.txt", old_string="caf", new_string="bar"))["error"]
    assert error["code"] == ErrorCode.NOT_TEXT
    assert (root / "latin1.txt").read_bytes() == b"caf\xe9\n"


async def test_a_fifo_is_refused_without_hanging(ctx: ClientContext, root: Path) -> None:
    import os

    os.mkfifo(root / "pipe")
    error = (await edit(ctx, path="pipe", old_string="a", new_string="b"))["error"]
    assert error["code"] == ErrorCode.NOT_A_FILE


async def test_a_long_diff_is_cut_with_a_marker(root: Path, home: Path) -> None:
    (root / "many.txt").write_text("".join(f"v{i} = old\n\n\n\n\n\n\n\n" for i in range(2000)))
    for ctx in make_ctx(root, limits=FileLimits(max_diff_chars=2000)):
        result = (await edit(ctx, path="many.txt", old_string="old", new_string="new", replace_all=True))[
            "result"
        ]
        assert result["replacements"] == 2000
        assert len(result["diff"]) < 2300
        assert result["diff"].rstrip().endswith("read the file to see them ...]")
        assert "more changed part(s) not shown" in result["diff"]
    assert (root / "many.txt").read_text().count("new") == 2000


async def test_replace_all_over_a_large_file_stays_fast(ctx: ClientContext, root: Path) -> None:
    # difflib over the whole file would take minutes here (scattered changes in 100k lines).
    import time

    (root / "big.py").write_text(
        "".join(f"x{i} = foo(bar)\n" if i % 10 else f"y{i} = foo(baz)\n" for i in range(100_000))
    )
    started = time.monotonic()
    result = (await edit(ctx, path="big.py", old_string="foo(baz)", new_string="qux(baz)", replace_all=True))[
        "result"
    ]
    assert time.monotonic() - started < 10
    assert result["replacements"] == 10_000


async def test_two_concurrent_edits_of_one_file_both_land(ctx: ClientContext, root: Path) -> None:
    # Each edit reads, computes and writes under the client's write lock: the second one
    # sees what the first one left, so neither change is lost (nor refused).
    import asyncio

    (root / "shared.txt").write_text("alpha\nbeta\n")
    first, second = await asyncio.gather(
        edit(ctx, path="shared.txt", old_string="alpha", new_string="ALPHA"),
        edit(ctx, path="shared.txt", old_string="beta", new_string="BETA"),
    )
    assert "result" in first and "result" in second
    assert (root / "shared.txt").read_text() == "ALPHA\nBETA\n"
    assert {first["result"]["checkpoint"], second["result"]["checkpoint"]} == {1, 2}


# --- the diff as a patch: applying it to the old text gives the new one --------------------------------


def apply_unified(before: str, diff: str) -> str:
    """Apply a unified diff made of whole-line hunks; every context and removed line is checked."""
    old = files._lines(before)
    out: list[str] = []
    at = 0
    lines = diff.split("\n")
    assert lines[0].startswith("--- a/") and lines[1].startswith("+++ b/")
    rows = [line + "\n" for line in lines[2:-1]]
    i = 0
    while i < len(rows):
        header = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@\n", rows[i])
        assert header, rows[i]
        start = int(header[1]) - (0 if header[2] != "0" else -1) - 1
        out.extend(old[at:start])
        at = start
        i += 1
        while i < len(rows) and not rows[i].startswith("@@"):
            mark, text = rows[i][0], rows[i][1:]
            if i + 1 < len(rows) and rows[i + 1] == "\\ No newline at end of file\n":
                text = text[:-1]
                i += 1
            if mark in " -":
                assert old[at] == text, (old[at], text)
                at += 1
            if mark in " +":
                out.append(text)
            i += 1
    out.extend(old[at:])
    return "".join(out)


lines_text = st.lists(st.sampled_from(["a", "b", "ab", "", " ", "\r", "x y"]), max_size=30).map("\n".join)


@given(
    before=st.tuples(lines_text, st.booleans()).map(lambda t: t[0] + ("\n" if t[1] else "")),
    old=st.sampled_from(["a", "b", "ab", "\n", "a\n", "\nb", "b\n\na", " "]),
    new=st.sampled_from(["", "A", "\n", "A\nB", "a\n\n", "b"]),
    replace_all=st.booleans(),
)
def test_the_diff_is_a_correct_patch_with_true_line_numbers(
    before: str, old: str, new: str, replace_all: bool
) -> None:
    positions = files._occurrences(before, old, None if replace_all else 1)
    if not positions or old == new:
        return
    after, diff = edit_diff(before, positions, old, new, "f.txt", 10**9)
    expected = before.replace(old, new) if replace_all else before.replace(old, new, 1)
    assert after == expected
    assert apply_unified(before, diff) == after


def test_edits_racing_a_writer_land_whole_or_are_refused(root: Path, home: Path) -> None:
    # Many edits racing a writer on the same file: every answer is either a landed edit or a conflict,
    # and the final file holds the writer's last version or an edit made on top of it.
    path = root / "race.txt"
    path.write_text("n = 0\n")
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            path.write_text(f"n = {n}\n")

    thread = threading.Thread(target=writer)
    thread.start()
    outcomes = []
    try:
        with Sandbox(root) as sandbox:
            for _ in range(50):
                params = EditFileParams(path="race.txt", old_string="n = ", new_string="n := ")
                try:
                    outcomes.append(files.edit_file(sandbox, params, FileLimits())["replacements"])
                except files.RpcError as exc:
                    assert exc.code in (ErrorCode.CONFLICT, ErrorCode.NO_MATCH, ErrorCode.IO_ERROR), (
                        exc.message
                    )
    finally:
        stop.set()
        thread.join()
    assert re.fullmatch(r"n :?= \d+\n", path.read_text())
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


async def test_a_change_during_the_write_itself_is_caught_just_before_the_rename(
    ctx: ClientContext, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rpc_client.sandbox as sandbox_module

    real = sandbox_module._check_unchanged

    def user_saves_meanwhile(dir_fd: int, name: str, shown: str, expect: str | None) -> None:
        (root / "twice.txt").write_text("the user's version\n")  # after the checkpoint, before the rename
        real(dir_fd, name, shown, expect)

    monkeypatch.setattr(sandbox_module, "_check_unchanged", user_saves_meanwhile)
    error = (await edit(ctx, path="twice.txt", old_string="y = 2", new_string="y = 3"))["error"]
    assert error["code"] == ErrorCode.CONFLICT and "while it was being written" in error["message"]
    assert (root / "twice.txt").read_text() == "the user's version\n"
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    # Its checkpoint was cancelled: there is nothing to undo.
    assert (await call(ctx, "undo", {}))["error"]["code"] == ErrorCode.NOT_FOUND
