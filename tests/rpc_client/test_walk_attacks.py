"""Attacks on the listing and search walks (the fast paths of issue 6 and what they kept).

Each test pins down something that answered wrongly before its fix:

* a link to a hidden file (``notes -> .env``, ``k -> .ssh/id_rsa``) was listed with the secret's
  size and type, and a link to a hidden path that does not exist as ``target_outside``: what the
  rules hide could be probed (its existence and size) by listing links to it;
* ``.git/info/exclude`` overrode the project's ``.gitignore`` (its lines were read after the root
  ``.gitignore``'s): git gives it the lowest precedence;
* a nested ``.gitignore`` could not bring back (``!``) what a ``.gitignore`` above it ignores: git
  lets the deeper file decide; and a line matching a folder above a path counted as the path's
  own verdict (``!b/c`` in the root's file kept exclude's ``d`` from hiding ``b/c/d``), ``b/**``
  hid ``b`` itself, ``b/*`` then ``!b/c`` hid all of ``b/c``;
* pathspec 1.x weighs lines from the last: ``!*`` in ``.aihubignore`` brought back the client's
  state folder (hub token), whose line is put last so that nothing can;
* a file matched by nothing in a small file's fast path was charged twice to the search's time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpc_client import files, search
from rpc_client.ignore import (
    DEFAULT_PATTERNS,
    GitIgnore,
    IgnoreRules,
    IgnoreSpec,
    project_gitignore,
    walk_filter,
)
from rpc_client.sandbox import Sandbox
from schemas.errors import ErrorCode, RpcError
from schemas.tools import ListFilesParams, SearchFilesParams

RULES = IgnoreRules(list(DEFAULT_PATTERNS))


def _listing(
    root: Path, *, recursive: bool = True, respect: bool | None = None
) -> dict[str, dict[str, object]]:
    with Sandbox(root) as sandbox:
        params = ListFilesParams(path=".", recursive=recursive, respect_gitignore=respect)
        answer = files.list_files(sandbox, params, rules=RULES)
    return {row["path"]: row for row in answer["files"]}


def _searched(root: Path, path: str = ".", pattern: str = ".") -> set[str]:
    with Sandbox(root) as sandbox:
        answer = search.search_files(
            sandbox,
            SearchFilesParams(pattern=pattern, path=path, max_results=1000),
            max_file_bytes=1 << 20,
            max_answer_bytes=1 << 20,
            seconds=20,
            rules=RULES,
        )
    return {line.split(":", 1)[0] for line in answer["matches"]}


# --- links to what the rules hide ----------------------------------------------------------


def test_a_link_to_a_secret_tells_nothing_of_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TOKEN=a-secret-of-some-length")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("key")
    (tmp_path / "plain.txt").write_text("hello")
    (tmp_path / "notes").symlink_to(".env")
    (tmp_path / "keys").symlink_to(".ssh")
    (tmp_path / "k").symlink_to(".ssh/id_rsa")
    (tmp_path / "missing").symlink_to(".ssh/nothing-here")
    (tmp_path / "pem").symlink_to("nowhere.pem")  # hidden, and dangling
    (tmp_path / "fine").symlink_to("plain.txt")
    rows = _listing(tmp_path)
    opaque = {"is_dir": False, "size": None, "is_symlink": True, "target_outside": True}
    for name in ("notes", "keys", "k", "missing", "pem"):
        row = rows[name]
        # A link to a secret, to a hidden folder, or to a hidden path that does not exist: alike.
        assert {key: row.get(key) for key in opaque} == opaque, row
    assert rows["fine"]["size"] == 5 and "target_outside" not in rows["fine"]
    assert ".env" not in rows and ".ssh" not in rows


def test_a_link_into_a_hidden_folder_by_another_link_tells_nothing(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("x" * 1234)
    (tmp_path / "d").symlink_to(".aws")
    (tmp_path / "via").symlink_to("d/credentials")
    rows = _listing(tmp_path)
    assert rows["via"].get("target_outside") is True and rows["via"]["size"] is None
    assert rows["d"].get("target_outside") is True and rows["d"]["is_dir"] is False


# --- .gitignore precedence, as git reads it ------------------------------------------------


def _fake(contents: dict[str, str]) -> GitIgnore:
    def read(name: str) -> bytes:
        if name not in contents:
            raise RpcError(ErrorCode.NOT_FOUND, f"{name!r} does not exist")
        return contents[name].encode()

    return GitIgnore(read)


def test_info_exclude_yields_to_the_gitignore() -> None:
    gitignore = _fake({".gitignore": "!keep.log\nx\n", ".git/info/exclude": "*.log\n!x\n"})
    assert gitignore.ignored("a.log", False)
    assert not gitignore.ignored("keep.log", False)  # the .gitignore brings it back
    assert gitignore.ignored("x", False)  # exclude's `!x` cannot bring back what .gitignore ignores
    gitignore = _fake({".gitignore": "!*/\n", ".git/info/exclude": "b/\n"})
    assert not gitignore.ignored("b", True)


def test_a_nested_gitignore_brings_back_what_one_above_ignores() -> None:
    gitignore = _fake({".gitignore": "*.log\nc/\n", "b/.gitignore": "!keep.log\n!*/\n"})
    assert gitignore.ignored("b/a.log", False)
    assert not gitignore.ignored("b/keep.log", False)
    assert gitignore.ignored("keep.log", False)  # not below b/
    assert not gitignore.ignored("b/c", True)
    assert gitignore.ignored("c", True)
    # But nothing comes back from inside a folder that is ignored.
    gitignore = _fake({".gitignore": "b/\n", "b/c/.gitignore": "!x\n"})
    assert gitignore.ignored("b/c/x", False)


def test_the_walk_filter_follows_the_deeper_gitignore() -> None:
    contents = {".gitignore": "*.log\n", "b/.gitignore": "!keep.log\n", ".git/info/exclude": "*.tmp\n"}
    judge = walk_filter(None, _fake(contents))
    assert judge is not None
    judge.prepare("", [".gitignore", "b", "keep.log", "x.tmp"])
    assert judge("keep.log", False) and judge("x.tmp", False) and not judge("b", True)
    judge.prepare("b", [".gitignore", "keep.log", "a.log", "x.tmp"])
    assert not judge("b/keep.log", False)
    assert judge("b/a.log", False) and judge("b/x.tmp", False)


_GIT = shutil.which("git")
_LINES = ["*.log", "!keep.log", "b/", "b", "/b", "x", "!x", "!b/c", "c/", "!b/c/", "**/c", "d", "!d/b"]
_LINES += ["*.txt", "!*.txt", "/x", "!b/x", "*", "!*/", "!b/", "c", "!c/keep.log", "x/", "!*", "b/**"]
_LINES += ["**/c/**", "b/*/", "!b/**", "*/", "**/", "/*/", "b/*", "!b/c/d", "a.*", "!/x"]
_FILES = [
    "a.log",
    "keep.log",
    "x",
    "b/x",
    "b/a.log",
    "b/c/d",
    "b/c/keep.log",
    "d/x",
    "d/b/y",
    "c/x.txt",
    "b/x.txt",
]


@pytest.mark.skipif(_GIT is None, reason="git is not installed")
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    top=st.lists(st.sampled_from(_LINES), max_size=3),
    middle=st.lists(st.sampled_from(_LINES), max_size=2),
    bottom=st.lists(st.sampled_from(_LINES), max_size=2),
    exclude=st.lists(st.sampled_from(_LINES), max_size=2),
)
def test_search_walks_what_git_calls_untracked_and_not_ignored(
    tmp_path_factory: pytest.TempPathFactory,
    top: list[str],
    middle: list[str],
    bottom: list[str],
    exclude: list[str],
) -> None:
    assert _GIT is not None
    root = tmp_path_factory.mktemp("repo")
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    subprocess.run([_GIT, "init", "-q", str(root)], check=True, env=env)
    for rel in _FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    (root / ".gitignore").write_text("\n".join(top) + "\n")
    (root / "b" / ".gitignore").write_text("\n".join(middle) + "\n")
    (root / "b" / "c" / ".gitignore").write_text("\n".join(bottom) + "\n")
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "exclude").write_text("\n".join(exclude) + "\n")
    listed = subprocess.run(
        [_GIT, "-C", str(root), "ls-files", "-o", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
        env=env,
    ).stdout
    want = {path for path in listed.decode().split("\0") if path}
    with Sandbox(root) as sandbox, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        judge = walk_filter(None, project_gitignore(sandbox, None))
        assert judge is not None
        walked = {found.path for found in sandbox.walk_files(".", hide=judge, prepare=judge.prepare)}
        gitignore = project_gitignore(sandbox, None)
        one_by_one = {rel for rel in walked if not gitignore.ignored(rel, False)}
    assert walked == want
    assert one_by_one == walked


def test_list_files_shows_what_a_nested_gitignore_brings_back(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for rel in ("a.log", "sub/a.log", "sub/keep.log"):
        (tmp_path / rel).write_text("x")
    (tmp_path / ".gitignore").write_text("*.log\n")
    (tmp_path / "sub" / ".gitignore").write_text("!keep.log\n")
    assert set(_listing(tmp_path)) == {".gitignore", "sub", "sub/.gitignore", "sub/keep.log"}
    assert _searched(tmp_path) == {".gitignore", "sub/.gitignore", "sub/keep.log"}


# --- search's fast path --------------------------------------------------------------------


def test_a_small_file_with_a_match_is_charged_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\nneedle\n")
    charged: list[int] = []
    spend = search.Budget.spend

    def counting(self: search.Budget, nbytes: int) -> None:
        charged.append(nbytes)
        spend(self, nbytes)

    monkeypatch.setattr(search.Budget, "spend", counting)
    assert _searched(tmp_path, pattern="needle") == {"a.txt"}
    assert sum(charged) == len("one\nneedle\n")


# --- the order of ignore lines -------------------------------------------------------------


@pytest.mark.parametrize("back", ["!*", "!**", "!.aihub", "!.aihub/", "!/.aihub/token", "!*/"])
def test_no_line_brings_back_the_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, back: str
) -> None:
    # pathspec 1.x weighs the lines from the last: a `!` line matching the path itself beat the
    # state folder's line (a folder line, put last so that nothing could undo it).
    monkeypatch.setenv("AIHUB_HOME", str(tmp_path / ".aihub"))
    (tmp_path / ".aihub").mkdir()
    (tmp_path / ".aihub" / "token").write_text("hub-token")
    (tmp_path / ".aihubignore").write_text(back + "\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.hidden(".aihub", is_dir=True) and rules.hidden(".aihub/token")
    with Sandbox(tmp_path) as sandbox:
        listed = files.list_files(sandbox, ListFilesParams(path=".", recursive=True), rules=rules)
    assert not [
        row for row in listed["files"] if row["path"].startswith(".aihub/") or row["path"] == ".aihub"
    ]


def test_a_later_folder_line_is_not_undone_by_an_earlier_bang_line() -> None:
    rules = IgnoreRules(["!*", "secrets/"])
    assert rules.hidden("secrets", is_dir=True) and rules.hidden("secrets/a.txt")
    assert not rules.hidden("other.txt")
    gitignore = _fake({".gitignore": "!*\nbuild\n"})
    assert gitignore.ignored("build", True) and gitignore.ignored("build", False)


@pytest.mark.parametrize(
    ("lines", "secret"),
    [
        (["*/", "!src/"], "src/.env"),  # the allow-list idiom: every folder hidden but src/
        (["deploy/*/", "!deploy/public/"], "deploy/public/server.pem"),
        (["deploy/*/", "!deploy/public/"], "deploy/public/id_rsa"),
        (["build/", "!build/"], "build/.env"),
    ],
)
def test_a_later_bang_folder_line_does_not_bring_back_a_secret_inside_it(
    tmp_path: Path, lines: list[str], secret: str
) -> None:
    """A folder brought back by `!folder/` shows its ordinary files, never its secrets: the secret
    patterns hide the file itself, which a line about a folder above it cannot undo (nor git)."""
    root = tmp_path / "root"
    (root / secret).parent.mkdir(parents=True)
    (root / secret).write_text("SECRET=1\n")
    (root / secret).with_name("ordinary.txt").write_text("SECRET=0 (not a secret)\n")
    (root / ".aihubignore").write_text("\n".join(lines) + "\n")
    rules = IgnoreRules.load(root)
    assert rules.hidden(secret) and rules.hidden_either(secret)
    assert not rules.hidden(str(Path(secret).with_name("ordinary.txt")))  # the `!` line works
    with pytest.raises(RpcError) as refused:
        rules.check_read(secret, secret)
    assert refused.value.code == ErrorCode.DENIED
    with Sandbox(root) as sandbox:
        listed = files.list_files(sandbox, ListFilesParams(path=".", recursive=True), rules=rules)
        found = search.search_files(
            sandbox, SearchFilesParams(pattern="SECRET"), max_file_bytes=1 << 20,
            max_answer_bytes=1 << 20, seconds=10, rules=rules,
        )  # fmt: skip
    assert secret not in {row["path"] for row in listed["files"]}
    assert all(not m.startswith(secret + ":") for m in found["matches"])
    assert any(m.startswith(str(Path(secret).with_name("ordinary.txt"))) for m in found["matches"])
    assert (root / secret, False) in set(rules.masked(root))  # confined commands cannot cat it either


_LINES = ["*/", "!src/", ".env", "*.pem", "build/", "!build/", "deploy/*/", "!deploy/public/", "secret/",
          "!secret/ok.txt", "!*", "!**", "*", "**/x", "a/**", "!a/**", "!.env", "src/", "!src/*", "*.key",
          "!*.key", "docs/", "!docs/", "**/node_modules/", "!**/keep/", "/top", "!/top", "x/y/", "!x/",
          "*.txt", "!keep.txt", "a/*/c", "!a/b/", "**/b", "!**/b/"]  # fmt: skip
_PATHS = ["src/.env", "src/main.py", ".env", "a/.env", "build/.env", "build/out.o", "deploy/public/server.pem",
          "secret/ok.txt", "secret/.env", "a/b/c", "a/b", "x/y/z", "x/y/.env", "top", "top/.env", "keep.txt",
          "docs/a.txt", "node_modules/k/keep/z", "b/.env", "a/b/c/.env", "id.key", "z/id.key", "src/x/server.pem"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.sampled_from(_LINES), min_size=1, max_size=7, unique=True))
def test_the_rules_hide_at_least_what_pathspec_hides(lines: list[str]) -> None:
    """Our lines' decision (RE2, in order) may hide more than pathspec's GitIgnoreSpec (as git does,
    nothing comes back from a hidden folder) but never less: no path it hides is shown."""
    import pathspec

    reference = pathspec.GitIgnoreSpec.from_lines(lines)
    ours = IgnoreSpec(lines)
    shown = [p for p in _PATHS if reference.match_file(p) and not ours.match(p)]
    assert shown == [], (lines, shown)
