"""Attacks on edit_file, ranged read_files, search_files and the ignore rules, found in an attack pass.

Each test pins down an attack that worked before its fix:

* the ignore rules (``.aihubignore``, ``.gitignore``) ran on Python's backtracking regular
  expressions: a ``.gitignore`` line such as ``*a*a*a*a*a*a*a*b`` (the AI may write one) against a
  long name took minutes to hours, holding the GIL: the whole client froze;
* a secret in a folder whose name holds a newline (``a\\nb/.env``) was not hidden: pathspec's
  ``.`` did not match the newline, git's wildcards do;
* a ``.gitignore`` line pathspec cannot read (``\\``) made every recursive listing and search fail;
* a ``.gitignore`` that is a link to a secret was read as rules: which names it ignores told what
  the secret holds;
* the client's state folder (hub token, checkpoints) was readable when inside the root (a root at
  the user's home folder);
* a glob search failed (internal error) on any file name that is not UTF-8 in the tree;
* RE2 is linear, but with a factor of the pattern's size once its DFA gives up: one pattern took
  1.5 ms a byte, hours for one file, in one call the 20 s deadline could not interrupt;
* edit_file's diff was quadratic in the occurrences of a replace_all on one line (or on lines
  close together): hours for 8 MiB, under the write lock; and a replace_all whose result is far
  over the limit was built in full (terabytes asked for) before being refused;
* one ranged read_files call could stream the same 1 GiB file a hundred times (minutes of work).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pathspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpc_client import files, search
from rpc_client.checkpoints import Checkpoints
from rpc_client.dispatcher import ClientContext
from rpc_client.files import FileLimits, edit_diff
from rpc_client.ignore import DEFAULT_PATTERNS, IgnoreRules, gitignore_spec
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from rpc_client.state import project_state_dir
from schemas.errors import ErrorCode
from schemas.tools import SearchFilesParams
from tests.rpc_client.helpers import NoApprover, call
from tests.rpc_client.test_edit_file import apply_unified

pytestmark = pytest.mark.anyio

#: A .gitignore line that makes Python's regex engine backtrack: n**7 steps on a name of n 'a's.
BACKTRACKING_LINE = "*a" * 7 + "*b"
#: A pattern RE2's DFA gives up on: its NFA then steps ~360 000 instructions for every byte.
SLOW_PATTERN = "(?:" + "|".join(".{0,999}" + c for c in "ab" * 20) + ")z"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("AIHUB_HOME", str(home))
    return home


@pytest.fixture
def root(tmp_path: Path, home: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("needle = 1\n")
    (root / ".env").write_text("TOKEN=s3cret\n")
    return root


def make_ctx(root: Path, limits: FileLimits | None = None, rules: IgnoreRules | None = None) -> ClientContext:
    sandbox = Sandbox(root)
    return ClientContext(
        sandbox=sandbox,
        policy=CommandPolicy(DangerousMode.DENY, read_only=False, approver=NoApprover()),
        limits=limits or FileLimits(),
        ignore=rules or IgnoreRules(list(DEFAULT_PATTERNS)),
        checkpoints=Checkpoints(project_state_dir(sandbox.root)),
        report=lambda line: None,
    )


@pytest.fixture
def ctx(root: Path) -> Iterator[ClientContext]:
    ctx = make_ctx(root)
    try:
        yield ctx
    finally:
        ctx.sandbox.close()


async def listed(ctx: ClientContext, **params: Any) -> set[str]:
    answer = await call(ctx, "list_files", {"path": ".", "recursive": True, **params})
    return {row["path"] for row in answer["result"]["files"]}


async def found(ctx: ClientContext, **params: Any) -> list[str]:
    answer = await call(ctx, "search_files", params)
    matches: list[str] = answer["result"]["matches"]
    return matches


# --- the ignore rules ---------------------------------------------------------------------


async def test_a_backtracking_gitignore_line_does_not_freeze_listings_or_searches(ctx: ClientContext) -> None:
    # Both written by the AI with write_file; before the fix the listing took 8 s here, and
    # every further '*a' multiplied that by 60 (with the GIL held: nothing else ran).
    for path, content in ((".gitignore", BACKTRACKING_LINE + "\n"), ("a" * 60, "needle\n")):
        assert "result" in await call(ctx, "write_file", {"path": path, "content": content})
    started = time.monotonic()
    assert "a" * 60 in await listed(ctx)
    assert f"{'a' * 60}:1: needle" in await found(ctx, pattern="needle")
    assert time.monotonic() - started < 2


def test_a_backtracking_ignore_file_line_is_matched_in_linear_time(tmp_path: Path) -> None:
    (tmp_path / ".aihubignore").write_text(BACKTRACKING_LINE + "\n")
    rules = IgnoreRules.load(tmp_path)
    started = time.monotonic()
    assert not rules.hidden("a" * 60)  # 8 s before (and each further '*a': 60 times more)
    assert rules.hidden("a" * 20 + "b")
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "folder", ["a\nb", "\n", "x\n\ny", "a\nb/c"], ids=["inside", "alone", "two", "parent"]
)
async def test_a_secret_in_a_folder_named_with_a_newline_is_hidden(ctx: ClientContext, folder: str) -> None:
    where = ctx.sandbox.root / folder
    where.mkdir(parents=True)
    (where / ".env").write_text("TOKEN=s3cret-newline\n")
    (where / "id_rsa").write_text("TOKEN=s3cret-newline\n")
    (where / ".ssh").mkdir()
    (where / ".ssh" / "config").write_text("TOKEN=s3cret-newline\n")
    (where / "ok.txt").write_text("TOKEN=public\n")
    for respect in (True, False):
        shown = await listed(ctx, respect_gitignore=respect)
        assert f"{folder}/ok.txt" in shown
        assert not any(p.endswith((".env", "id_rsa", ".ssh", "config")) for p in shown), shown
    shown_path = folder.replace("\n", "\\n")  # control characters are escaped in a search's answer
    assert await found(ctx, pattern="TOKEN", respect_gitignore=False) == [
        f"{shown_path}/ok.txt:1: TOKEN=public"
    ]
    for secret in (".env", "id_rsa", ".ssh/config"):
        answer = await call(ctx, "read_files", {"files": [f"{folder}/{secret}"]})
        assert answer["error"]["data"]["errors"], secret
        assert "s3cret" not in json.dumps(answer)
    masked = {p.relative_to(ctx.sandbox.root).as_posix() for p, _ in ctx.ignore.masked(ctx.sandbox.root)}
    assert {f"{folder}/.env", f"{folder}/id_rsa", f"{folder}/.ssh"} <= masked  # for commands too


ignore_lines = st.lists(st.text(alphabet="ab*?/![]:-\\.#", min_size=1, max_size=8), min_size=1, max_size=4)
ignore_paths = st.text(alphabet="ab/.:[]\\-!#*? \t\udce9", min_size=1, max_size=12)


@settings(max_examples=400, deadline=None)
@given(lines=ignore_lines, path=ignore_paths)
def test_rules_match_as_pathspecs_own_matching(lines: list[str], path: str) -> None:
    # RE2 in place of Python's engine changes nothing but the newline (not generated here).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Python's "possible nested set" for '[[': pathspec's regex
        try:
            expected_spec = pathspec.GitIgnoreSpec.from_lines(lines, backend="simple")
        except (ValueError, re.error):
            with pytest.raises((ValueError, re.error)):
                gitignore_spec(lines)
            return
        ours = gitignore_spec(lines)
    assert ours.match(path) == bool(expected_spec.match_file(path))


async def test_a_gitignore_line_pathspec_cannot_read_is_left_out(ctx: ClientContext) -> None:
    root = ctx.sandbox.root
    (root / ".gitignore").write_text("\\\n[z-a]\n*.log\n")
    (root / "debug.log").write_text("needle\n")
    shown = await listed(ctx)
    assert "src/main.py" in shown and "debug.log" not in shown
    assert await found(ctx, pattern="needle") == ["src/main.py:1: needle = 1"]


async def test_a_gitignore_that_links_to_a_secret_is_not_read_as_rules(ctx: ClientContext) -> None:
    root = ctx.sandbox.root
    (root / ".gitignore").symlink_to(".env")  # .env holds the line TOKEN=s3cret
    (root / "sub").mkdir()
    (root / "sub" / ".gitignore").symlink_to("../.env")
    for name in ("TOKEN=s3cret", "TOKEN=guess", "sub/TOKEN=s3cret"):
        (root / name).write_text("needle\n")
    # Were the secret's lines rules, only the right guess would be missing from the answers.
    assert {"TOKEN=s3cret", "TOKEN=guess", "sub/TOKEN=s3cret"} <= await listed(ctx)
    assert {"TOKEN=s3cret:1: needle", "TOKEN=guess:1: needle"} <= set(await found(ctx, pattern="needle"))


async def test_the_state_folder_inside_the_root_is_hidden_and_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "user-home"
    state = root / ".aihub"
    monkeypatch.setenv("AIHUB_HOME", str(state))
    (state / "projects").mkdir(parents=True)
    (root / "x").mkdir()
    (state / "token").write_text("hub-token-s3cret\n")
    (root / ".aihubignore").write_text("!.aihub/\n!.aihub/token\n")  # cannot bring it back
    for defaults in (True, False):
        rules = IgnoreRules.load(root, defaults=defaults)
        ctx = make_ctx(root, rules=rules)
        try:
            assert not any(p.split("/")[0] == ".aihub" for p in await listed(ctx, respect_gitignore=False))
            assert await found(ctx, pattern="s3cret", respect_gitignore=False) == []
            for path in (".aihub", ".aihub/token", "x/../.aihub"):
                answer = await call(ctx, "search_files", {"pattern": "s3cret", "path": path})
                assert answer["error"]["code"] == ErrorCode.DENIED
            answer = await call(ctx, "read_files", {"files": [".aihub/token"]})
            assert "s3cret" not in json.dumps(answer)
            for method, params in (
                ("write_file", {"path": ".aihub/token", "content": "planted"}),
                ("edit_file", {"path": ".aihub/token", "old_string": "hub", "new_string": "x"}),
            ):
                assert (await call(ctx, method, params))["error"]["code"] == ErrorCode.DENIED
        finally:
            ctx.sandbox.close()
    assert (state / "token").read_text() == "hub-token-s3cret\n"


# --- search_files -----------------------------------------------------------------------------


async def test_a_glob_search_survives_a_name_that_is_not_utf8(ctx: ClientContext) -> None:
    with open(os.path.join(os.fsencode(ctx.sandbox.root), b"caf\xe9.py"), "w") as f:
        f.write("needle = 2\n")
    assert await found(ctx, pattern="needle", glob="*.py") == [
        "caf\\xe9.py:1: needle = 2",
        "src/main.py:1: needle = 1",
    ]
    assert await found(ctx, pattern="needle", glob="caf?.py") == ["caf\\xe9.py:1: needle = 2"]


def _random_text(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.choice(b"abcd") for _ in range(size))


def test_a_pattern_that_defeats_re2s_dfa_stops_at_the_deadline(tmp_path: Path) -> None:
    # 30 KB in lines of 1000 bytes took 30 s in one RE2 call before, for a deadline of 1 s.
    text = _random_text(30_000)
    (tmp_path / "slow.txt").write_bytes(b"\n".join(text[i : i + 1000] for i in range(0, len(text), 1000)))
    with Sandbox(tmp_path) as sandbox:
        started = time.monotonic()
        result = search.search_files(
            sandbox,
            SearchFilesParams(pattern=SLOW_PATTERN),
            max_file_bytes=1 << 20,
            max_answer_bytes=1 << 20,
            seconds=1.0,
        )
        elapsed = time.monotonic() - started
    assert result["timed_out"] is True and result["truncated"] is True
    assert elapsed < 2


def test_a_withdrawn_search_stops_between_slices_of_one_file(tmp_path: Path) -> None:
    text = _random_text(60_000, seed=2)
    (tmp_path / "slow.txt").write_bytes(b"\n".join(text[i : i + 100] for i in range(0, len(text), 100)))
    withdrawn_at = time.monotonic() + 0.5
    with Sandbox(tmp_path) as sandbox:
        result = search.search_files(
            sandbox,
            SearchFilesParams(pattern=SLOW_PATTERN),
            max_file_bytes=1 << 20,
            max_answer_bytes=1 << 20,
            seconds=60,
            stop=lambda: time.monotonic() > withdrawn_at,
        )
    assert result["timed_out"] is True
    assert time.monotonic() - withdrawn_at < 1.5


def test_a_line_too_long_for_the_pattern_skips_its_file_not_the_search(tmp_path: Path) -> None:
    (tmp_path / "a-one-line.txt").write_bytes(_random_text(100_000))  # no newline at all
    (tmp_path / "b.txt").write_text("abz\n")
    with Sandbox(tmp_path) as sandbox:
        started = time.monotonic()
        result = search.search_files(
            sandbox,
            SearchFilesParams(pattern=SLOW_PATTERN),
            max_file_bytes=1 << 20,
            max_answer_bytes=1 << 20,
            seconds=20,
        )
    assert time.monotonic() - started < 5
    assert result["matches"] == ["b.txt:1: abz"]
    assert result["skipped_too_large"] == 1 and result["timed_out"] is False


def test_an_ordinary_pattern_still_searches_a_long_line_whole(tmp_path: Path) -> None:
    (tmp_path / "min.js").write_bytes(b"x" * 3_000_000 + b"needle" + b"y" * 100)
    with Sandbox(tmp_path) as sandbox:
        result = search.search_files(
            sandbox,
            SearchFilesParams(pattern=r"\bneedle|xneedley"),
            max_file_bytes=16 << 20,
            max_answer_bytes=1 << 20,
            seconds=20,
        )
    assert len(result["matches"]) == 1 and result["skipped_too_large"] == 0


search_lines = st.lists(st.sampled_from(["", "a", "ab", "b a", "aab", "x", "\r", "a\r", "ba"]), max_size=25)


@settings(max_examples=300, deadline=None)
@given(
    lines=search_lines,
    final_newline=st.booleans(),
    pattern=st.sampled_from(
        ["a", "^a", "a$", "^$", r"\ba", r"a\b", "b?", "^", "$", "ab|^x", r"a\r$", "(?:)"]
    ),
    slice_bytes=st.integers(1, 12),
)
def test_slices_find_the_lines_a_whole_search_finds(
    lines: list[str], final_newline: bool, pattern: str, slice_bytes: int
) -> None:
    data = ("\n".join(lines) + ("\n" if final_newline and lines else "")).encode()
    regex = search.compile_pattern(pattern)
    whole = list(search._matching_lines(regex, data))
    sliced = list(search._matching_lines(regex, data, search.Budget(regex, slice_bytes=slice_bytes)))
    assert [(n, line) for n, line, _ in sliced] == [(n, line) for n, line, _ in whole]


# --- edit_file -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a" * 300_000, "a\n" * 150_000, "ab " * 100_000])
async def test_replace_all_over_dense_occurrences_is_linear(ctx: ClientContext, text: str) -> None:
    # Before: 100 s for the one long line (a scan of the line per occurrence), 60 s for the
    # lines (the list of occurrences copied at each one); the write lock held all along.
    (ctx.sandbox.root / "dense.txt").write_text(text)
    started = time.monotonic()
    answer = await call(
        ctx, "edit_file", {"path": "dense.txt", "old_string": "a", "new_string": "b", "replace_all": True}
    )
    assert time.monotonic() - started < 5
    assert answer["result"]["replacements"] == text.count("a")
    assert (ctx.sandbox.root / "dense.txt").read_text() == text.replace("a", "b")


async def test_a_replace_all_far_over_the_limit_is_refused_before_it_is_built(root: Path) -> None:
    (root / "many.txt").write_text("a" * 100_000)
    ctx = make_ctx(root, FileLimits(max_write_bytes=1 << 20))
    try:
        started = time.monotonic()
        answer = await call(
            ctx,
            "edit_file",
            {"path": "many.txt", "old_string": "a", "new_string": "x" * 100_000, "replace_all": True},
        )
        # 100 000 copies of 100 KB: 10 GB that used to be joined before the size was looked at.
        assert answer["error"]["code"] == ErrorCode.TOO_LARGE
        assert "10000000000" in answer["error"]["message"]
        assert time.monotonic() - started < 1
    finally:
        ctx.sandbox.close()
    assert (root / "many.txt").read_text() == "a" * 100_000


async def test_a_replace_all_just_at_the_limit_is_written(root: Path) -> None:
    (root / "fit.txt").write_text("é" * 1000)  # 2000 bytes
    ctx = make_ctx(root, FileLimits(max_write_bytes=3000))
    try:
        ok = await call(
            ctx, "edit_file", {"path": "fit.txt", "old_string": "é", "new_string": "€", "replace_all": True}
        )
        assert ok["result"]["replacements"] == 1000  # 3000 bytes: at the limit
        over = await call(
            ctx, "edit_file", {"path": "fit.txt", "old_string": "€", "new_string": "€a", "replace_all": True}
        )
        assert over["error"]["code"] == ErrorCode.TOO_LARGE
    finally:
        ctx.sandbox.close()
    assert (root / "fit.txt").read_text() == "€" * 1000


dense_lines = st.lists(st.sampled_from(["a", "aa", "a a", "", "b", "ab", "ba a", "\r"]), max_size=40).map(
    "\n".join
)


@settings(max_examples=300, deadline=None)
@given(
    before=st.tuples(dense_lines, st.booleans()).map(lambda t: t[0] + ("\n" if t[1] else "")),
    old=st.sampled_from(["a", "aa", "a\n", "\na", " a", "a\na"]),
    new=st.sampled_from(["", "A", "\n", "A\nB", "aa"]),
    aligned=st.sampled_from([4000, 3]),
)
def test_the_diff_of_dense_replacements_is_a_correct_patch(
    before: str, old: str, new: str, aligned: int
) -> None:
    positions = files._occurrences(before, old, None)
    if not positions:
        return
    saved = files.MAX_ALIGNED_LINES
    files.MAX_ALIGNED_LINES = aligned  # 3: the path for long blocks, without difflib
    try:
        after, diff = edit_diff(before, positions, old, new, "f.txt", 10**9)
    finally:
        files.MAX_ALIGNED_LINES = saved
    assert after == before.replace(old, new)
    assert apply_unified(before, diff) == after


# --- ranged read_files -----------------------------------------------------------------------


async def test_one_ranged_call_cannot_stream_a_huge_file_again_and_again(root: Path) -> None:
    big = b"line\n" * 120_000  # 600 KB
    (root / "big.log").write_bytes(big)
    ctx = make_ctx(root, FileLimits(max_ranged_file_bytes=1_000_000))
    try:
        # Before: each of up to 100 spellings of the path streamed (and hashed) the whole file.
        spellings = ["big.log", "./big.log", "src/../big.log"]
        answer = await call(ctx, "read_files", {"files": spellings, "offset": 2, "limit": 1})
        data = answer["error"]["data"]
        assert data["files"] == {"big.log": "line\n"}
        assert data["sha256"]["big.log"] == hashlib.sha256(big).hexdigest()
        assert set(data["errors"]) == {"./big.log", "src/../big.log"}
        assert "a call of its own" in data["errors"]["./big.log"]
        alone = await call(ctx, "read_files", {"files": ["./big.log"], "offset": 2, "limit": 1})
        assert alone["result"]["files"] == {"./big.log": "line\n"}
    finally:
        ctx.sandbox.close()


# --- what held, kept as regressions ------------------------------------------------------------


async def test_a_hard_link_to_an_outside_file_is_read_as_read_files_reads_it_never_modified(
    ctx: ClientContext, tmp_path: Path
) -> None:
    # A documented limit (a hard link cannot be told from a file): reads see it, as they
    # always did; writes and edits replace the directory entry, never the far end.
    outside = tmp_path / "outside.txt"
    outside.write_text("needle outside\n")
    os.link(outside, ctx.sandbox.root / "hard.txt")
    read = await call(ctx, "read_files", {"files": ["hard.txt"]})
    assert read["result"]["files"]["hard.txt"] == "needle outside\n"
    assert "hard.txt:1: needle outside" in await found(ctx, pattern="needle")
    edited = await call(
        ctx, "edit_file", {"path": "hard.txt", "old_string": "outside", "new_string": "inside"}
    )
    assert edited["result"]["replacements"] == 1
    written = await call(ctx, "write_file", {"path": "hard.txt", "content": "rewritten\n"})
    assert "result" in written
    assert outside.read_text() == "needle outside\n" and os.stat(outside).st_nlink == 1
    assert (ctx.sandbox.root / "hard.txt").read_text() == "rewritten\n"
