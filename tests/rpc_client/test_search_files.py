"""search_files: grep-like results through the sandbox, the ignore rules and a linear-time regex engine."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpc_client import search
from rpc_client.dispatcher import ClientContext
from rpc_client.files import FileLimits
from rpc_client.ignore import DEFAULT_PATTERNS, IgnoreRules
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from schemas.errors import ErrorCode
from schemas.tools import SearchFilesParams
from tests.rpc_client.helpers import NoApprover, call

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "main.py").write_text("import os\n\ndef main():\n    needle = 1\n    return needle\n")
    (root / "src" / "pkg" / "util.ts").write_text("export const needle = 2;\n")
    (root / "README.md").write_text("# Needle in a haystack\n")
    (root / ".env").write_text("needle=s3cret-env\n")
    (root / "sub").mkdir()
    (root / "sub" / ".env.local").write_text("needle=s3cret-local\n")
    (root / "server.pem").write_text("needle s3cret-pem\n")
    (root / ".ssh").mkdir()
    (root / ".ssh" / "config").write_text("needle s3cret-ssh\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("needle in git\n")
    (root / "node_modules" / "dep").mkdir(parents=True)
    (root / "node_modules" / "dep" / "index.js").write_text("var needle = 3;\n")
    (root / ".gitignore").write_text("node_modules/\n*.log\n")
    (root / "debug.log").write_text("needle in a log\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "loot.txt").write_text("needle outside s3cret-outside\n")
    return root


def make_ctx(
    root: Path, limits: FileLimits | None = None, patterns: list[str] | None = None
) -> Iterator[ClientContext]:
    with Sandbox(root) as sandbox:
        yield ClientContext(
            sandbox=sandbox,
            policy=CommandPolicy(DangerousMode.DENY, read_only=False, approver=NoApprover()),
            limits=limits or FileLimits(),
            ignore=IgnoreRules([*DEFAULT_PATTERNS, *(patterns or [])]),
            report=lambda line: None,
        )


@pytest.fixture
def ctx(root: Path) -> Iterator[ClientContext]:
    yield from make_ctx(root)


async def find(ctx: ClientContext, **params: Any) -> dict[str, Any]:
    return await call(ctx, "search_files", params)


async def test_matching_lines_come_as_path_line_text_in_path_order(ctx: ClientContext) -> None:
    result = (await find(ctx, pattern="needle"))["result"]
    assert result["matches"] == [
        "src/main.py:4:     needle = 1",
        "src/main.py:5:     return needle",
        "src/pkg/util.ts:1: export const needle = 2;",
    ]
    assert result["truncated"] is False and result["timed_out"] is False
    assert result["files_matched"] == 2
    # .gitignore, README.md, main.py, util.ts: no secret, no .git/, nothing git ignores.
    assert result["files_searched"] == 4


async def test_secrets_are_never_searched_nor_shown(ctx: ClientContext) -> None:
    for params in (
        {"pattern": "s3cret"},
        {"pattern": "s3cret", "respect_gitignore": False},
        {"pattern": "."},
    ):
        answer = await find(ctx, **params)
        assert "s3cret" not in json.dumps(answer)
        assert not any(".env" in m or ".pem" in m or ".ssh" in m for m in answer["result"]["matches"])


@pytest.mark.parametrize(
    "path", [".env", ".ssh", ".ssh/config", "sub/.env.local", "./server.pem", "sub/../.env"]
)
async def test_a_secret_named_as_the_path_is_refused(ctx: ClientContext, path: str) -> None:
    error = (await find(ctx, pattern="needle", path=path))["error"]
    assert error["code"] == ErrorCode.DENIED and "hidden" in error["message"]
    assert "s3cret" not in json.dumps(error)


async def test_a_missing_secret_is_refused_like_an_existing_one(ctx: ClientContext) -> None:
    # Judged before the file system is touched: no probing for which secrets exist.
    assert (await find(ctx, pattern="x", path="nope/.env"))["error"]["code"] == ErrorCode.DENIED


async def test_links_are_never_followed_so_nothing_outside_or_hidden_is_reached(
    ctx: ClientContext, root: Path, tmp_path: Path
) -> None:
    (root / "src" / "escape").symlink_to(tmp_path / "outside")
    (root / "src" / "loot.txt").symlink_to(tmp_path / "outside" / "loot.txt")
    (root / "src" / "abs").symlink_to("/")
    (root / "src" / "innocent.txt").symlink_to("../.env")
    (root / "src" / "secrets").symlink_to("../.ssh")
    (root / "src" / "loop").symlink_to("loop")
    (root / "src" / "again").symlink_to(".")
    answer = await find(ctx, pattern="needle|s3cret", respect_gitignore=False)
    text = json.dumps(answer)
    assert "s3cret" not in text and "outside" not in text
    assert not any(
        m.startswith(("src/escape", "src/loot", "src/abs", "src/innocent", "src/secrets", "src/again"))
        for m in answer["result"]["matches"]
    )


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("..", ErrorCode.PATH_OUTSIDE_ROOT),
        ("../outside", ErrorCode.PATH_OUTSIDE_ROOT),
        ("/etc", ErrorCode.PATH_OUTSIDE_ROOT),
        ("escape", ErrorCode.PATH_OUTSIDE_ROOT),
        ("escape/loot.txt", ErrorCode.PATH_OUTSIDE_ROOT),
        ("nope", ErrorCode.NOT_FOUND),
        ("a\x00b", ErrorCode.INVALID_PATH),
    ],
)
async def test_paths_that_leave_the_root_are_refused(
    ctx: ClientContext, root: Path, tmp_path: Path, path: str, code: int
) -> None:
    (root / "escape").symlink_to(tmp_path / "outside")
    error = (await find(ctx, pattern="needle", path=path))["error"]
    assert error["code"] == code
    assert "s3cret" not in json.dumps(error) and str(tmp_path) not in error["message"]


async def test_a_link_to_a_folder_inside_the_root_may_be_the_starting_path(
    ctx: ClientContext, root: Path
) -> None:
    (root / "code").symlink_to("src")
    result = (await find(ctx, pattern="needle = 2", path="code"))["result"]
    assert result["matches"] == ["src/pkg/util.ts:1: export const needle = 2;"]


async def test_a_single_file_can_be_searched(ctx: ClientContext) -> None:
    result = (await find(ctx, pattern="return", path="src/main.py"))["result"]
    assert result["matches"] == ["src/main.py:5:     return needle"]


async def test_git_internals_are_never_searched(ctx: ClientContext) -> None:
    for respect in (True, False):
        matches = (await find(ctx, pattern="in git", respect_gitignore=respect))["result"]["matches"]
        assert matches == []


async def test_gitignored_files_are_skipped_unless_asked(ctx: ClientContext) -> None:
    skipped = (await find(ctx, pattern="needle = 3|in a log"))["result"]["matches"]
    assert skipped == []
    included = (await find(ctx, pattern="needle = 3|in a log", respect_gitignore=False))["result"]["matches"]
    assert included == ["debug.log:1: needle in a log", "node_modules/dep/index.js:1: var needle = 3;"]
    # A path that is itself ignored is searched when named.
    named = (await find(ctx, pattern="needle", path="node_modules/dep"))["result"]["matches"]
    assert named == ["node_modules/dep/index.js:1: var needle = 3;"]


async def test_an_aihubignore_pattern_hides_files_from_the_search(root: Path) -> None:
    (root / "private").mkdir()
    (root / "private" / "notes.md").write_text("needle private\n")
    for ctx in make_ctx(root, patterns=["private/"]):
        answer = await find(ctx, pattern="private")
        assert answer["result"]["matches"] == []
        assert (await find(ctx, pattern="x", path="private"))["error"]["code"] == ErrorCode.DENIED


async def test_a_fifo_socket_or_device_in_the_tree_never_hangs_the_search(
    ctx: ClientContext, root: Path
) -> None:
    os.mkfifo(root / "src" / "a-fifo")
    done = threading.Event()
    answers: list[dict[str, Any]] = []

    def run() -> None:
        with Sandbox(root) as sandbox:
            answers.append(
                search.search_files(
                    sandbox,
                    SearchFilesParams(pattern="needle"),
                    max_file_bytes=1 << 20,
                    max_answer_bytes=1 << 20,
                    seconds=10,
                )
            )
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert done.wait(10), "the search hung on a FIFO"
    assert answers[0]["files_matched"] >= 2
    # Named directly, it is refused, not opened.
    assert (await find(ctx, pattern="x", path="src/a-fifo"))["error"]["code"] == ErrorCode.NOT_A_FILE


async def test_binary_files_are_skipped_and_counted(ctx: ClientContext, root: Path) -> None:
    (root / "blob.bin").write_bytes(b"needle\x00binary")
    (root / "late.bin").write_bytes(b"needle " * 2000 + b"\x00")  # NUL past the first 8 KiB: text
    result = (await find(ctx, pattern="needle", path="./", glob="*.bin"))["result"]
    assert result["skipped_binary"] == 1
    assert [m.split(":")[0] for m in result["matches"]] == ["late.bin"]


async def test_files_over_the_size_limit_are_skipped_and_counted(root: Path) -> None:
    (root / "big.txt").write_text("needle\n" * 1000)
    for ctx in make_ctx(root, FileLimits(max_search_file_bytes=1000)):
        result = (await find(ctx, pattern="needle", glob="big.txt"))["result"]
        assert result["skipped_too_large"] == 1 and result["matches"] == []


async def test_a_huge_line_is_shown_shortened_around_the_match(ctx: ClientContext, root: Path) -> None:
    (root / "min.js").write_text("a" * 5_000_000 + "NEEDLE" + "b" * 5_000_000 + "\nnext\n")
    started = time.monotonic()
    result = (await find(ctx, pattern="NEEDLE"))["result"]
    assert time.monotonic() - started < 5
    [match] = result["matches"]
    assert match.startswith("min.js:1: …") and match.endswith("…")
    assert "NEEDLE" in match and len(match) < 400


async def test_control_characters_are_escaped_and_crlf_is_dropped(ctx: ClientContext, root: Path) -> None:
    (root / "term.txt").write_bytes(b"red \x1b[31mneedle\x1b[0m\tand a bell\x07\r\nplain needle\r\n")
    result = (await find(ctx, pattern="needle", glob="term.txt"))["result"]
    assert result["matches"] == [
        "term.txt:1: red \\x1b[31mneedle\\x1b[0m\tand a bell\\x07",
        "term.txt:2: plain needle",
    ]


async def test_names_with_control_characters_or_bad_utf8_are_shown_safely(
    ctx: ClientContext, root: Path
) -> None:
    (root / "new\nline.txt").write_text("needle\n")
    with open(os.fsencode(root) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"needle\n")
    matches = (await find(ctx, pattern="^needle$"))["result"]["matches"]
    assert "caf\\xe9.txt:1: needle" in matches
    assert "new\\nline.txt:1: needle" in matches
    assert all("\n" not in m for m in matches)


async def test_catastrophic_patterns_finish_fast(ctx: ClientContext, root: Path) -> None:
    (root / "evil.txt").write_text("a" * 100_000 + "!\n" + ("ab" * 50_000) + "\n")
    for pattern in ("(a+)+$", "(a|a)*b", "(a*)*$", "^(a|aa)+$", "(x+x+)+y", "(.*a){20}"):
        started = time.monotonic()
        answer = await find(ctx, pattern=pattern, glob="evil.txt")
        assert "result" in answer, answer
        assert time.monotonic() - started < 2, pattern


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(a", "missing )"),
        ("(a)\\1", "invalid escape"),
        ("a(?=b)", "invalid perl operator"),
        ("x{2,1}", "invalid repetition size"),
    ],
)
async def test_an_invalid_pattern_is_invalid_params_with_the_engines_message(
    ctx: ClientContext, pattern: str, why: str
) -> None:
    error = (await find(ctx, pattern=pattern))["error"]
    assert error["code"] == ErrorCode.INVALID_PARAMS
    assert why in error["message"] and "literal=true" in error["message"]
    assert "(?m)" not in error["message"]


async def test_a_pattern_too_large_for_the_engine_is_refused(ctx: ClientContext) -> None:
    error = (await find(ctx, pattern="((((a{100}){100}){100}){100})"))["error"]
    assert error["code"] == ErrorCode.INVALID_PARAMS


async def test_literal_and_case_insensitive_search(ctx: ClientContext, root: Path) -> None:
    (root / "calls.py").write_text("foo(1)\nFOO(2)\nfoo.bar\n")
    assert (await find(ctx, pattern="foo(", glob="calls.py", literal=True))["result"]["matches"] == [
        "calls.py:1: foo(1)"
    ]
    insensitive = (await find(ctx, pattern="foo\\(", glob="calls.py", case_sensitive=False))["result"]
    assert insensitive["matches"] == ["calls.py:1: foo(1)", "calls.py:2: FOO(2)"]
    dot = (await find(ctx, pattern="foo.bar", glob="calls.py", literal=True))["result"]["matches"]
    assert dot == ["calls.py:3: foo.bar"]


async def test_matches_never_span_lines_and_anchors_are_per_line(ctx: ClientContext, root: Path) -> None:
    (root / "lines.txt").write_text("alpha\nbeta\n")
    assert (await find(ctx, pattern="alpha\\nbeta", glob="lines.txt"))["result"]["matches"] == []
    assert (await find(ctx, pattern="alpha\\sbeta", glob="lines.txt"))["result"]["matches"] == []
    assert (await find(ctx, pattern="^beta$", glob="lines.txt"))["result"]["matches"] == ["lines.txt:2: beta"]
    assert (await find(ctx, pattern="[^x]+a$", glob="lines.txt"))["result"]["matches"] == [
        "lines.txt:1: alpha",
        "lines.txt:2: beta",
    ]


async def test_max_results_truncates(ctx: ClientContext, root: Path) -> None:
    (root / "many.txt").write_text("hit\n" * 50)
    result = (await find(ctx, pattern="hit", max_results=10))["result"]
    assert len(result["matches"]) == 10 and result["truncated"] is True
    exact = (await find(ctx, pattern="hit", max_results=50))["result"]
    assert len(exact["matches"]) == 50 and exact["truncated"] is False


async def test_the_answer_budget_truncates(root: Path) -> None:
    (root / "wide.txt").write_text(("w" * 250 + "\n") * 100)
    for ctx in make_ctx(root, FileLimits(max_answer_bytes=2000)):
        result = (await find(ctx, pattern="w+", max_results=100))["result"]
        assert 0 < len(result["matches"]) < 10 and result["truncated"] is True
        assert len(json.dumps(result["matches"])) <= 2000


async def test_the_time_limit_stops_the_search_and_says_so(root: Path) -> None:
    for ctx in make_ctx(root, FileLimits(search_seconds=0)):
        result = (await find(ctx, pattern="needle"))["result"]
        assert result["truncated"] is True and result["timed_out"] is True


def test_a_withdrawn_request_stops_the_search(root: Path) -> None:
    with Sandbox(root) as sandbox:
        result = search.search_files(
            sandbox,
            SearchFilesParams(pattern="needle"),
            max_file_bytes=1 << 20,
            max_answer_bytes=1 << 20,
            seconds=60,
            stop=lambda: True,
        )
    assert result["timed_out"] is True and result["matches"] == []


async def test_each_search_is_logged_with_its_pattern(root: Path) -> None:
    lines: list[str] = []
    for ctx in make_ctx(root):
        ctx.report = lines.append
        await find(ctx, pattern="needle\x1b]0;", path="src")
    assert "search_files needle\\x1b]0; in src -> ok" in lines[0]


# --- globs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "yes", "no"),
    [
        ("*.py", ["a.py", "src/a.py", "src/deep/b.py"], ["a.pyc", "a.py/x", "py"]),
        ("test_*", ["test_a.py", "tests/test_b.py"], ["a_test.py"]),
        ("src/*.ts", ["src/a.ts"], ["src/x/a.ts", "a.ts", "lib/src/a.ts"]),
        ("src/**/*.ts", ["src/a.ts", "src/x/y/a.ts"], ["a.ts", "lib/a.ts", "src/a.tsx"]),
        ("**/fixtures/*.json", ["fixtures/a.json", "x/fixtures/a.json"], ["fixtures/x/a.json"]),
        ("docs/", ["docs/a.md", "docs/x/y.md"], ["a/docs/b.md", "docs"]),
        ("src/**", ["src/a", "src/x/y"], ["src", "lib/src/a"]),
        ("*.{js,ts}", ["a.js", "x/a.ts"], ["a.jsx", "a.py"]),
        ("{src,lib}/**/*.{c,h}", ["src/a.c", "lib/x/b.h"], ["test/a.c"]),
        ("file?.txt", ["file1.txt", "d/fileA.txt"], ["file10.txt", "file.txt"]),
        ("[ab]*.md", ["a.md", "b1.md"], ["c.md"]),
        ("[!ab]*.md", ["c.md"], ["a.md"]),
        ("/README.md", ["README.md"], ["docs/README.md"]),
        ("./src/*.py", ["src/a.py"], ["a.py"]),
        ("a+b(c).txt", ["a+b(c).txt"], ["aab(c).txt"]),
        ("\\*.txt", ["*.txt"], ["a.txt"]),
        ("{a,b", ["{a,b"], ["a"]),
        ("[]x].txt", ["].txt", "x.txt"], ["a.txt"]),
        ("[!]]*", ["a"], ["]"]),
        ("[a", ["[a"], ["a"]),
    ],
)
def test_glob_semantics(glob: str, yes: list[str], no: list[str]) -> None:
    matches = search.compile_glob(glob)
    for path in yes:
        assert matches(path), (glob, path)
    for path in no:
        assert not matches(path), (glob, path)


@given(st.text(max_size=30))
def test_any_glob_compiles_or_is_refused_cleanly(glob: str) -> None:
    try:
        matches = search.compile_glob(glob)
    except search.RpcError as exc:
        assert exc.code == ErrorCode.INVALID_PARAMS
        return
    matches("some/path.txt")


# --- line numbers -------------------------------------------------------------------------------------------


@given(
    lines=st.lists(st.sampled_from(["", "a", "ab", "ba", "b", "aab", " a", "\t", "é", "a\r"]), max_size=40),
    final_newline=st.booleans(),
    pattern=st.sampled_from(["a", "ab", "^a", "b$", "a.b", "^$", "é", "a*", "\\s", "^"]),
)
def test_line_numbers_and_lines_are_greps(lines: list[str], final_newline: bool, pattern: str) -> None:
    text = "\n".join(lines) + ("\n" if final_newline and lines else "")
    data = text.encode("utf-8")
    regex = search.compile_pattern(pattern)
    got = [(n, line.decode()) for n, line, _ in search._matching_lines(regex, data)]
    file_lines = text.split("\n")
    if text.endswith("\n") or not text:
        file_lines.pop()
    want = [(i + 1, line) for i, line in enumerate(file_lines) if re.search(pattern, line)]
    assert got == want


def test_a_search_of_a_large_tree_is_quick(tmp_path: Path) -> None:
    # Not a benchmark: a guard against an accidental quadratic walk or per-line search.
    root = tmp_path / "tree"
    for d in range(40):
        folder = root / f"pkg{d}" / "sub"
        folder.mkdir(parents=True)
        for f in range(50):
            (folder / f"mod{f}.py").write_text(f"def f{f}():\n    return {d * f}\n" * 50)
    with Sandbox(root) as sandbox:
        started = time.monotonic()
        result = search.search_files(
            sandbox,
            SearchFilesParams(pattern="return 1369$"),
            max_file_bytes=1 << 20,
            max_answer_bytes=1 << 20,
            seconds=60,
            rules=IgnoreRules(list(DEFAULT_PATTERNS)),
        )
        elapsed = time.monotonic() - started
    assert result["files_searched"] == 2000 and len(result["matches"]) == 50
    assert elapsed < 5


async def test_a_link_to_a_hidden_folder_as_the_path_is_refused_where_it_leads(
    ctx: ClientContext, root: Path
) -> None:
    (root / "keys").symlink_to(".ssh")
    (root / "cfg").symlink_to(".ssh/config")
    for path in ("keys", "cfg", "keys/config"):
        error = (await find(ctx, pattern="needle", path=path))["error"]
        assert error["code"] == ErrorCode.DENIED, path
        assert "s3cret" not in json.dumps(error)


def test_the_walk_judges_the_start_it_resolved_itself(root: Path) -> None:
    seen: list[str] = []
    (root / "code").symlink_to("src")
    with Sandbox(root) as sandbox:
        walked = [f.path for f in sandbox.walk_files("code", guard=seen.append)]
    assert seen == ["src"] and walked == ["src/main.py", "src/pkg/util.ts"]
