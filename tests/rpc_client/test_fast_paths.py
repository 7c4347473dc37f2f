"""The fast paths of list_files, search_files and ranged reads answer exactly as the plain ones.

Each shortcut taken for speed (issue 6) is checked here against the straightforward
way it replaced, on inputs chosen to break it: names that are not UTF-8, hold a
newline, quotes or control characters; ignore lines that bring paths back, anchor
them or match folders only; nested ``.gitignore`` files; links, FIFOs and hidden
folders in the tree being listed or searched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import re2  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpc_client import files, search
from rpc_client.files import FileLimits
from rpc_client.ignore import (
    DEFAULT_PATTERNS,
    GitIgnore,
    IgnoreRules,
    WalkFilter,
    gitignore_spec,
    project_gitignore,
    re2_lines,
    re2_searcher,
    walk_filter,
)
from rpc_client.sandbox import Entry, Sandbox
from schemas.errors import ErrorCode, RpcError
from schemas.tools import ListFilesParams, ReadFilesParams, SearchFilesParams

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Names that trip matching up (never '.' or '..': no walk meets those): secrets by the default
# rules, dots, a newline, quotes, non-ASCII, a byte that is not UTF-8 (a surrogate escape), a
# leading '!' or '#'.
NAMES = [
    ".env",
    ".env.local",
    "env",
    "id_rsa.pub",
    "server.pem",
    ".ssh",
    ".aws",
    ".git",
    "node_modules",
    "build",
    "a.log",
    "keep.log",
    "src",
    "main.py",
    "x",
    "...",
    "a\nb",
    "line\n.env",
    'q"uote',
    "back\\slash",
    "tab\tname",
    "ctl\x01",
    "caf\u00e9",
    "\u2603.key",
    os.fsdecode(b"caf\xe9"),
    os.fsdecode(b"\xff.env"),
    "!bang",
    "#hash",
    " space ",
]
LINES = [
    *DEFAULT_PATTERNS,
    "*.log",
    "!keep.log",
    "build/",
    "/src",
    "src/*.py",
    "**/x",
    "a/**/b",
    "[a-c]*",
    "?nv",
    "node_modules",
    "!.env.local",
    "*\n*",
    "caf*",
    "\\#hash",
    "\\!bang",
    "*",
    "**",
    "x/",
    "line*",
    "# a comment",
    "",
]

names = st.sampled_from(NAMES) | st.text(alphabet='ab.\n/\\"*é', min_size=1, max_size=6).filter(
    lambda n: "/" not in n and n not in (".", "..")
)
folders = st.lists(st.sampled_from(["", "src", "a/b", "build", "node_modules/x", "x/.git", "caf\u00e9/d"]))
line_sets = st.lists(st.sampled_from(LINES), max_size=8)


def _paths(folder: str, entry_names: list[str]) -> list[str]:
    return [f"{folder}/{name}" if folder else name for name in entry_names]


@SETTINGS
@given(lines=line_sets, folder=st.sampled_from(["", "src", "a/b", "caf\u00e9"]), entry_names=st.lists(names))
def test_cleared_names_are_never_matched(lines: list[str], folder: str, entry_names: list[str]) -> None:
    spec = gitignore_spec(lines, strict=False)
    entry_names = list(dict.fromkeys(entry_names))
    head = f"{folder}/" if folder else ""
    answer = spec.cleared_names(head, entry_names)
    if answer is None:
        return
    as_files, as_folders = answer
    for name in entry_names:
        if name in as_files:
            assert not spec.match(head + name), (lines, head + name)
        if name in as_folders:
            assert not spec.match(head + name + "/"), (lines, head + name + "/")
    cleared = spec.cleared([head + name for name in entry_names])
    assert cleared is not None
    for index in cleared:
        assert not spec.match(head + entry_names[index])


def test_cleared_names_judge_most_names_at_once() -> None:
    spec = gitignore_spec(list(DEFAULT_PATTERNS))
    names = [f"f{i}.py" for i in range(50)] + [".env", "server.pem", ".aws"]
    answer = spec.cleared_names("src/", names)
    assert answer is not None
    as_files, as_folders = answer
    assert as_files == {f"f{i}.py" for i in range(50)} | {".aws"}  # `.aws/` hides folders only
    assert as_folders == {f"f{i}.py" for i in range(50)}
    # A name with a newline or that is not UTF-8 is judged alone (never cleared here).
    answer = spec.cleared_names("", ["a\nb", os.fsdecode(b"\xff"), "ok"])
    assert answer == ({os.fsdecode(b"\xff"), "ok"}, {os.fsdecode(b"\xff"), "ok"})


def test_re2_lines_reports_each_matching_line() -> None:
    options = re2.Options()
    options.never_nl = True
    lines = re2_lines(re2.compile("(?m:^a$|b$|^$)", options))
    assert lines(b"x\na\nxb\nb x\n\nbb") == {1, 2, 4, 5}
    assert lines(b"") == {0}
    assert re2_lines(re2.compile("(?m:z)", options))(b"a\nb") == set()


@given(text=st.text(max_size=20), pattern=st.sampled_from(["a", "^a$", "\\.env", "(?:^|/)x$", "", "[^/]*b"]))
def test_re2_searcher_answers_as_search(text: str, pattern: str) -> None:
    options = re2.Options()
    options.dot_nl = True
    regex = re2.compile(pattern, options)
    assert re2_searcher(regex)(text) is (regex.search(text) is not None)


@given(
    data=st.binary(max_size=40),
    pattern=st.sampled_from(["a", "^a", "a$", "", "\\bb", "(?m)^$"]),
    pos=st.integers(-2, 45),
    end=st.integers(-2, 45),
)
def test_search_finder_answers_as_search(data: bytes, pattern: str, pos: int, end: int) -> None:
    regex = re2.compile(pattern)
    found = regex.search(data, pos, end)
    assert search._finder(regex)(data, pos, end) == (-1 if found is None else found.start())


# --- the walk filter -------------------------------------------------------------------


def _fake_gitignore(contents: dict[str, str]) -> GitIgnore:
    def read(name: str) -> bytes:
        if name not in contents:
            raise RpcError(ErrorCode.NOT_FOUND, f"{name!r} does not exist")
        return contents[name].encode()

    return GitIgnore(read)


@SETTINGS
@given(
    rules_lines=line_sets,
    root_lines=line_sets,
    nested_lines=line_sets,
    layout=st.lists(st.tuples(folders, st.lists(names, max_size=6)), max_size=6),
    announce=st.booleans(),
    use_rules=st.booleans(),
    use_gitignore=st.booleans(),
)
def test_the_walk_filter_answers_as_the_rules_and_gitignore(
    rules_lines: list[str],
    root_lines: list[str],
    nested_lines: list[str],
    layout: list[tuple[list[str], list[str]]],
    announce: bool,
    use_rules: bool,
    use_gitignore: bool,
) -> None:
    try:
        rules = IgnoreRules(rules_lines) if use_rules else None
    except ValueError:  # a line the rules file may not hold
        return
    contents = {".gitignore": "\n".join(root_lines), "src/.gitignore": "\n".join(nested_lines)}
    reference = _fake_gitignore(contents) if use_gitignore else None
    judge = walk_filter(rules, _fake_gitignore(contents) if use_gitignore else None)
    if rules is None and reference is None:
        assert judge is None
        return
    assert isinstance(judge, WalkFilter)
    for folder_list, entry_names in layout:
        for folder in folder_list:
            entry_names = list(dict.fromkeys(entry_names))
            if announce:
                # As a listing shows them: a folder's .gitignore is among its names.
                here = (
                    [".gitignore"] if (f"{folder}/.gitignore" if folder else ".gitignore") in contents else []
                )
                judge.prepare(folder, list(dict.fromkeys(entry_names + here)))
            for rel in _paths(folder, entry_names):
                for is_dir in (False, True):
                    want = (rules is not None and rules.hidden(rel, is_dir=is_dir)) or (
                        reference is not None and reference.ignored(rel, is_dir)
                    )
                    assert judge(rel, is_dir) is want, (rel, is_dir)


def test_the_walk_filter_reads_no_gitignore_a_listing_did_not_show() -> None:
    asked: list[str] = []

    def read(name: str) -> bytes:
        asked.append(name)
        if name == "b/.gitignore":
            return b"*.tmp\n"
        raise RpcError(ErrorCode.NOT_FOUND, "none")

    judge = walk_filter(None, GitIgnore(read))
    assert judge is not None
    judge.prepare("", ["a", "b"])
    assert not judge("a", True) and not judge("b", True)
    judge.prepare("a", ["x.tmp"])
    assert not judge("a/x.tmp", False)
    judge.prepare("b", [".gitignore", "x.tmp"])
    assert judge("b/x.tmp", False)
    # The root's .git/info/exclude is still read; no folder's missing .gitignore is.
    assert asked == [".git/info/exclude", "b/.gitignore"]


def test_the_walk_filter_reads_no_gitignore_where_the_rules_hide_everything() -> None:
    asked: list[str] = []

    def read(name: str) -> bytes:
        asked.append(name)
        raise RpcError(ErrorCode.NOT_FOUND, "none")

    judge = walk_filter(IgnoreRules(list(DEFAULT_PATTERNS)), GitIgnore(read))
    assert judge is not None
    judge.prepare("deep", [".env", ".gitignore", "main.py", "server.pem"])
    assert judge("deep/.env", False) and judge("deep/server.pem", False)
    assert "deep/.gitignore" not in asked
    assert not judge("deep/main.py", False)
    assert "deep/.gitignore" in asked


# --- list_files --------------------------------------------------------------------------


def _tree(root: Path) -> None:
    for rel in [
        "src/main.py",
        "src/.env",
        "src/deep/id_rsa",
        "src/deep/ok.txt",
        "src/build/out.o",
        "logs/a.log",
        "logs/keep.log",
        ".git/config",
        ".aws/credentials",
        "caf\u00e9/\u2603.key",
        "caf\u00e9/plain",
        'odd/q"uote',
        "odd/back\\slash",
        "odd/ctl\x01",
        "odd/line\nbreak",
        "odd/line\n.env",
    ]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    os.makedirs(os.fsencode(root) + b"/bytes\xff", exist_ok=True)
    with open(os.fsencode(root) + b"/bytes\xff/\xfe.env", "w") as f:
        f.write("secret")
    with open(os.fsencode(root) + b"/bytes\xff/\xfe.txt", "w") as f:
        f.write("shown")
    (root / ".gitignore").write_text("*.log\n!keep.log\nbuild/\n")
    (root / "src" / ".gitignore").write_text("deep/ok.txt\n")
    os.mkfifo(root / "src" / "a-fifo")
    (root / "link-in").symlink_to("src/main.py")
    (root / "link-dir").symlink_to("src")
    (root / "link-secret").symlink_to("src/.env")
    (root / "link-out").symlink_to("/etc/passwd")
    (root / "link-dangling").symlink_to("nowhere")
    (root / ".env.d").mkdir()
    (root / ".env.d" / "inside.txt").write_text("x")


def _reference_listing(
    sandbox: Sandbox, params: ListFilesParams, budget: int, rules: IgnoreRules
) -> dict[str, Any]:
    """list_files as it was: a row's cost from its JSON, each path judged by hidden() and ignored()."""
    rows: list[dict[str, Any]] = []

    def accept(entry: Entry) -> bool:
        nonlocal budget
        row = files._row(entry)
        cost = files._json_size(row) + 1
        if cost > budget:
            return False
        budget -= cost
        rows.append(row)
        return True

    respect = params.recursive if params.respect_gitignore is None else params.respect_gitignore
    gitignore = project_gitignore(sandbox, rules) if respect else None

    def hide(rel: str, is_dir: bool) -> bool:
        return rules.hidden(rel, is_dir=is_dir) or (gitignore is not None and gitignore.ignored(rel, is_dir))

    _, truncated = sandbox.list_dir(
        params.path,
        recursive=params.recursive,
        max_entries=params.max_entries,
        accept=accept,
        hide=hide,
        # (a link to a hidden path is listed as one leading outside: test_walk_attacks.py)
        hidden_target=lambda rel: rules.hidden(rel) or rules.hidden(rel, is_dir=True),
    )
    return {"files": rows, "truncated": truncated}


@pytest.mark.parametrize("respect", [True, False])
@pytest.mark.parametrize("path", [".", "src", "odd", "caf\u00e9"])
def test_list_files_answers_as_before(tmp_path: Path, respect: bool, path: str) -> None:
    _tree(tmp_path)
    rules = IgnoreRules(list(DEFAULT_PATTERNS))
    with Sandbox(tmp_path) as sandbox:
        params = ListFilesParams(path=path, recursive=True, respect_gitignore=respect, max_entries=1000)
        got = files.list_files(sandbox, params, FileLimits(), rules)
        assert got == _reference_listing(sandbox, params, FileLimits().max_answer_bytes, rules)
        shown = {row["path"] for row in got["files"]}
        if path == ".":
            assert not {".env.d", ".env.d/inside.txt", "src/deep/id_rsa", "caf\u00e9/\u2603.key"} & shown
            assert {"link-in", "link-secret", "link-out", "src/a-fifo"} <= shown
            assert "src/.env" not in shown and ".aws" not in shown
            assert (".git" in shown) is not respect  # .git/ is left out with the .gitignore rules
            assert ("logs/a.log" in shown) is not respect and "logs/keep.log" in shown
            fifo = next(row for row in got["files"] if row["path"] == "src/a-fifo")
            assert fifo == {"name": "a-fifo", "is_dir": False, "path": "src/a-fifo", "size": None}
            out = next(row for row in got["files"] if row["path"] == "link-out")
            assert out["is_symlink"] and out["target_outside"] and out["size"] is None
            odd = [row for row in got["files"] if row.get("not_utf8")]
            assert {row["path"] for row in odd} == {
                "bytes\\xff",
                "bytes\\xff/\\xfe.txt",
                "bytes\\xff/\\xfe.env",
            }


@pytest.mark.parametrize("budget", [1, 60, 200, 333, 1000, 2500])
def test_list_files_cuts_where_the_json_says(tmp_path: Path, budget: int) -> None:
    _tree(tmp_path)
    rules = IgnoreRules(list(DEFAULT_PATTERNS))
    with Sandbox(tmp_path) as sandbox:
        params = ListFilesParams(path=".", recursive=True, max_entries=1000)
        got = files.list_files(sandbox, params, FileLimits(max_answer_bytes=budget), rules)
        assert got == _reference_listing(sandbox, params, budget, rules)


entries = st.builds(
    Entry,
    name=st.text(max_size=8) | st.binary(max_size=8).map(os.fsdecode),
    path=st.text(max_size=12) | st.binary(max_size=12).map(os.fsdecode),
    is_dir=st.booleans(),
    size=st.none() | st.integers(0, 10**15),
    is_symlink=st.booleans(),
    target_outside=st.booleans(),
)


@given(entry=entries)
def test_a_rows_cost_is_its_json(entry: Entry) -> None:
    row, cost = files._row_and_cost(entry)
    assert row == files._row(entry)
    assert cost == files._json_size(row) + 1


# --- read_files ----------------------------------------------------------------------------


@given(
    text=st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)
    | st.sampled_from(["line\n" * 2000, 'quote"\\\n' * 900, "\x01\x1f\x7f\u2028é\n" * 1500, "plain" * 2000])
)
def test_a_contents_cost_is_its_json(text: str) -> None:
    assert files._content_size(text, text.encode()) == files._json_size(text)


def test_ranged_pages_answer_as_whole_reads(tmp_path: Path) -> None:
    lines = [f'{i}: "q" \\ \t\x01 é\n' for i in range(30_000)]
    (tmp_path / "big.txt").write_text("".join(lines))
    with Sandbox(tmp_path) as sandbox:
        limits = FileLimits()
        for offset, limit in [(1, 7), (5000, 13000), (29_990, 100), (1, None), (12_345, None)]:
            for _ in range(2):  # the first page indexes the file, the second uses the index
                got = files.read_files(
                    sandbox, ReadFilesParams(files=["big.txt"], offset=offset, limit=limit), limits
                )
                want = "".join(lines[offset - 1 : None if limit is None else offset - 1 + limit])
                assert got["files"]["big.txt"] == want
                assert got["total_lines"]["big.txt"] == 30_000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(
        st.sampled_from(["x" * 5000 + "\n", "\n", "tab\t\n", 'q"\\\n', "\x01é\n", "end"]), max_size=80
    ),
    offset=st.none() | st.integers(1, 90),
    limit=st.none() | st.integers(1, 90),
)
def test_an_answer_fits_a_budget_of_exactly_its_json(
    tmp_path: Path, lines: list[str], offset: int | None, limit: int | None
) -> None:
    """The newlines a page holds are worked out from its lines, not counted: its cost must still be exact."""
    text = "".join(lines)
    (tmp_path / "f.txt").write_text(text)
    every = text.splitlines(keepends=True)
    first = offset or 1
    want = (
        "".join(every[first - 1 : None if limit is None else first - 1 + limit]) if offset or limit else text
    )
    exact = files._json_size(want) + files._json_size("f.txt")
    params = ReadFilesParams(files=["f.txt"], offset=offset, limit=limit)
    content_size = files._content_size

    def checked(content: str, data: bytes, newlines: int | None = None) -> int:
        assert newlines == data.count(b"\n")
        return content_size(content, data, newlines)

    with Sandbox(tmp_path) as sandbox, pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "_content_size", checked)
        for _ in range(2):  # a ranged read indexes the file the first time
            assert (
                files.read_files(sandbox, params, FileLimits(max_answer_bytes=exact))["files"]["f.txt"]
                == want
            )
            with pytest.raises(RpcError):
                files.read_files(sandbox, params, FileLimits(max_answer_bytes=exact - 1))


def test_a_page_too_large_for_the_answer_is_refused_as_before(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("\x01\n" * 10_000)  # 20 kB that JSON writes as 70 kB
    with Sandbox(tmp_path) as sandbox:
        params = ReadFilesParams(files=["big.txt"], offset=1, limit=10_000)
        encoded = files._json_size("\x01\n" * 10_000) + files._json_size("big.txt")
        assert files.read_files(sandbox, params, FileLimits(max_answer_bytes=encoded))["files"]
        with pytest.raises(RpcError) as refused:
            files.read_files(sandbox, params, FileLimits(max_answer_bytes=encoded - 1))
        assert refused.value.code == ErrorCode.PARTIAL_FAILURE
        assert "does not fit in this answer" in json.dumps(refused.value.data)


# --- search_files ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [".", "src", "odd"])
def test_search_skips_exactly_what_the_rules_hide(tmp_path: Path, path: str) -> None:
    _tree(tmp_path)
    rules = IgnoreRules(list(DEFAULT_PATTERNS))
    with Sandbox(tmp_path) as sandbox:
        answer = search.search_files(
            sandbox,
            SearchFilesParams(pattern=".", path=path, max_results=1000),
            max_file_bytes=1 << 20,
            max_answer_bytes=1 << 20,
            seconds=20,
            rules=rules,
        )
        found = {line.split(":", 1)[0] for line in answer["matches"]}
        gitignore = project_gitignore(sandbox, rules)
        expected = set()
        for walked in sandbox.walk_files(path):
            rel = walked.path
            parts = rel.split("/")
            if ".git" in parts or rules.hidden(rel) or gitignore.ignored(rel, False):
                continue
            if any(rules.hidden("/".join(parts[:i]), is_dir=True) for i in range(1, len(parts))):
                continue
            expected.add(search._path_shown(rel))
        assert found == expected
        assert not {"src/.env", "src/deep/id_rsa", ".aws/credentials", ".env.d/inside.txt"} & found
