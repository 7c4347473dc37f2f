"""The cheap path of a small read_files call, and that it judges exactly what the slow one judged.

* Each path's ignore verdict is worked out once (:meth:`IgnoreRules.hidden_either`) and
  remembered, per compiled rules: the memo must never answer from other rules (rules
  compiled again, a new :class:`IgnoreRules` after ``.aihubignore`` changed), must stay
  bounded, and a secret must stay hidden through every spelling, however often asked.
* The sandbox reads a small file with fewer system calls: the last component judged
  by ``fstatat`` (no O_PATH handle), plain parent folders opened with O_DIRECTORY (no
  ``fstat``), and the content read by one ``read``.  Links, swaps between the judgment
  and the open, FIFOs, folders and files that grow are all judged as before.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import rpc_client.ignore as ignore_module
import rpc_client.sandbox as sandbox_module
from rpc_client.dispatcher import ClientContext
from rpc_client.ignore import DEFAULT_PATTERNS, IgnoreRules, gitignore_spec
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox, SandboxError, _read_whole
from schemas.errors import ErrorCode
from tests.rpc_client.helpers import NoApprover, call

# --- the verdict memo ---------------------------------------------------------------------

RULE_SETS = [
    list(DEFAULT_PATTERNS),
    [*DEFAULT_PATTERNS, "!.env.example", "private/", "!private/ok", "*.sqlite"],
    ["*", "!*/", "/.aihub/"],
    ["!*", "/.aihub/"],
    ["docs/**/secret", "build/", "!build/keep", "a?c", "[ab]*.log"],
    [],
]

SPELLINGS = [
    "",
    ".",
    "/",
    "./",
    ".env",
    ".env/",
    "/.env",
    "./.env",
    ".//.env",
    "a/.env",
    "a//.env",
    "a/./.env",
    "a/../.env",
    "a/.env/b",
    ".env.example",
    ".env.production",
    ".ssh",
    ".ssh/",
    ".ssh/id",
    "x/.ssh/y/z",
    "home/.aws/credentials",
    "private",
    "private/",
    "private/ok",
    "private/ok/x",
    "private/no",
    "db/app.sqlite",
    "src/main.py",
    "src/env.py",
    "caf\udce9/.env",
    "caf\udce9",
    "a\nb/.env",
    "\u00e9t\u00e9/id_rsa",
    ".aihub",
    ".aihub/token",
    "x/.aihub/token",
    "docs/a/b/secret",
    "build/keep",
    "build/x",
    "abc",
    "b.log",
    "x" * 300 + "/.env",
    "x" * 300,
]


@pytest.mark.parametrize("lines", RULE_SETS)
def test_the_memo_answers_what_hidden_answers(lines: list[str]) -> None:
    rules = IgnoreRules(list(lines))
    for _ in range(3):  # the first time worked out, then remembered
        for path in SPELLINGS:
            expected = rules.hidden(path) or rules.hidden(path, is_dir=True)
            assert rules.hidden_either(path) is expected, path


def test_rules_compiled_again_never_answer_from_the_old_memo() -> None:
    rules = IgnoreRules(["secret.txt"])
    assert rules.hidden_either("secret.txt") and not rules.hidden_either("other.txt")
    rules.patterns = ["other.txt"]
    rules.__post_init__()  # compiled again: its own memo
    assert not rules.hidden_either("secret.txt") and rules.hidden_either("other.txt")
    rules._spec = gitignore_spec(["third/"])  # even compiled rules put in by hand
    assert rules.hidden_either("third/x") and not rules.hidden_either("other.txt")
    other = dataclasses.replace(rules, patterns=["secret.txt"])
    assert other.hidden_either("secret.txt") and not other.hidden_either("third/x")
    assert rules.hidden_either("third/x")  # the first one is untouched


def test_a_verdict_is_remembered_with_the_rules_it_was_worked_out_by(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rules compiled again while a verdict is being worked out (another thread): the verdict
    # goes to the memo of the rules that gave it, never to the new rules' memo.
    rules = IgnoreRules(["a"])
    new_spec = gitignore_spec([])
    judge = ignore_module._hidden_either

    def meanwhile(spec: ignore_module.IgnoreSpec, rel: str) -> bool:
        rules._spec = new_spec
        return judge(spec, rel)

    monkeypatch.setattr(ignore_module, "_hidden_either", meanwhile)
    assert rules.hidden_either("a") is True  # asked before the change: the old rules' answer
    monkeypatch.setattr(ignore_module, "_hidden_either", judge)
    assert rules.hidden_either("a") is False  # now: the new rules', not the remembered one


def test_rules_loaded_again_after_the_ignore_file_changes(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("x")
    before = IgnoreRules.load(tmp_path)
    assert not before.hidden_either("notes.md")
    (tmp_path / ".aihubignore").write_text("notes.md\n")
    after = IgnoreRules.load(tmp_path)
    assert after.hidden_either("notes.md")
    (tmp_path / ".aihubignore").write_text("!notes.md\n")
    assert not IgnoreRules.load(tmp_path).hidden_either("notes.md")
    assert after.hidden_either("notes.md") and not before.hidden_either("notes.md")


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ignore_module, "VERDICT_MEMO_PATHS", 8)
    rules = IgnoreRules(list(DEFAULT_PATTERNS))
    for i in range(100):
        assert rules.hidden_either(f"d{i}/.env") and not rules.hidden_either(f"d{i}/main.py")
        assert len(rules._memo[1]) <= 8
    long = "x" * (ignore_module.VERDICT_MEMO_CHARS + 1)
    assert rules.hidden_either(long + "/.env") and not rules.hidden_either(long)
    assert long not in rules._memo[1] and long + "/.env" not in rules._memo[1]


def test_the_memo_under_threads() -> None:
    rules = IgnoreRules(list(DEFAULT_PATTERNS))
    wrong: list[str] = []

    def ask() -> None:
        for i in range(2000):
            path = f"t{i % 300}/.env" if i % 2 else f"t{i % 300}/ok.py"
            if rules.hidden_either(path) is not bool(i % 2):
                wrong.append(path)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ClientContext]:
    root = tmp_path / "root"
    (root / "config").mkdir(parents=True)
    (root / ".env").write_text("API_KEY=sk-live-123\n")
    (root / "config" / "prod.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (root / "main.py").write_text("print(1)\n")
    os.symlink(".env", root / "innocent.txt")
    os.symlink("config", root / "conf")
    rules = IgnoreRules(list(DEFAULT_PATTERNS))
    with Sandbox(root) as sandbox:
        policy = CommandPolicy(
            DangerousMode.DENY, read_only=False, approver=NoApprover(), secret=rules.hidden
        )
        yield ClientContext(sandbox=sandbox, policy=policy, ignore=rules, report=lambda line: None)


SECRET_SPELLINGS = [
    ".env",
    "./.env",
    ".//.env",
    ".env/",
    "config/../.env",
    "conf/../.env",
    "main.py/../.env",
    "innocent.txt",
    "./innocent.txt",
    "config/prod.pem",
    "conf/prod.pem",
    "./conf//prod.pem",
    "nope/../.env",
]


@pytest.mark.anyio
@pytest.mark.parametrize("inline", [False, True])
async def test_a_secret_stays_hidden_through_every_spelling_however_often_asked(
    ctx: ClientContext, inline: bool
) -> None:
    ctx.inline_reads = inline
    for _ in range(3):
        for path in SECRET_SPELLINGS:
            answer = await call(ctx, "read_files", {"files": [path]})
            assert answer["error"]["code"] == ErrorCode.PARTIAL_FAILURE, path
            assert answer["error"]["data"]["files"] == {}
            assert "hidden by the ignore rules" in answer["error"]["data"]["errors"][path], path
            assert "sk-live" not in str(answer) and "PRIVATE" not in str(answer)
        ok = await call(ctx, "read_files", {"files": ["main.py", "./main.py"]})
        assert ok["result"]["files"] == {"main.py": "print(1)\n", "./main.py": "print(1)\n"}


@pytest.mark.anyio
async def test_a_link_retargeted_is_judged_by_where_it_leads_now(ctx: ClientContext) -> None:
    # The memo holds verdicts of names, never "this path is fine": a link's name is not
    # hidden, what it leads to is judged again on each read.
    root = ctx.sandbox.root
    for target, readable in [(".env", False), ("main.py", True), (".env", False), ("main.py", True)]:
        os.unlink(root / "innocent.txt")
        os.symlink(target, root / "innocent.txt")
        answer = await call(ctx, "read_files", {"files": ["innocent.txt"]})
        if readable:
            assert answer["result"]["files"] == {"innocent.txt": "print(1)\n"}
        else:
            assert "hidden by the ignore rules" in answer["error"]["data"]["errors"]["innocent.txt"]


@pytest.mark.anyio
async def test_new_rules_for_the_client_take_effect_at_once(ctx: ClientContext, tmp_path: Path) -> None:
    assert "result" in await call(ctx, "read_files", {"files": ["main.py"]})
    (ctx.sandbox.root / ".aihubignore").write_text("*.py\n")
    ctx.ignore = IgnoreRules.load(ctx.sandbox.root)
    answer = await call(ctx, "read_files", {"files": ["main.py"]})
    assert "hidden by the ignore rules" in answer["error"]["data"]["errors"]["main.py"]


# --- the sandbox's small reads ------------------------------------------------------------


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c.txt").write_bytes(b"deep")
    (root / "small.txt").write_bytes(b"x" * 150)
    (root / "file").write_bytes(b"f")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"OUTSIDE")
    os.symlink("a", root / "in_link")
    os.symlink(str(tmp_path / "outside"), root / "out_link")
    os.symlink("small.txt", root / "file_link")
    os.symlink("a", root / "dir_link")
    os.symlink("missing", root / "dangling")
    os.mkfifo(root / "fifo")
    with Sandbox(root) as sandbox:
        yield sandbox


def test_a_small_file_is_read_by_one_read(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real_read = os.read

    def counted(fd: int, n: int) -> bytes:
        reads.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", counted)
    assert sb.read_file("small.txt", max_bytes=1 << 20) == b"x" * 150
    assert reads == [151]


def test_a_file_that_grew_is_read_to_its_end_or_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    try:
        for size in (0, 3, 9, 10):  # as fstat said it when it was opened (0: a file of /proc)
            os.lseek(fd, 0, os.SEEK_SET)
            assert _read_whole(fd, "f", size, 100) == b"0123456789"
            os.lseek(fd, 0, os.SEEK_SET)
            assert _read_whole(fd, "f", size, 10) == b"0123456789"
            os.lseek(fd, 0, os.SEEK_SET)
            with pytest.raises(SandboxError) as info:
                _read_whole(fd, "f", size, 9)
            assert info.value.code == ErrorCode.TOO_LARGE
    finally:
        os.close(fd)


def test_a_file_system_that_reads_less_than_asked_is_read_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 4)))  # 4 bytes a call at most
    fd = os.open(path, os.O_RDONLY)
    try:
        for size in (4, 10, 20):  # a short read at the size said, before it, and a file that shrank
            os.lseek(fd, 0, os.SEEK_SET)
            expected = b"0123" if size == 4 else b"0123456789"  # (exactly the size said: its end)
            assert _read_whole(fd, "f", size, 100) == expected
    finally:
        os.close(fd)
    with Sandbox(tmp_path) as sandbox:
        assert sandbox.read_file("f", max_bytes=100) == b"0123456789"
        with pytest.raises(SandboxError) as info:
            sandbox.read_file("f", max_bytes=9)
        assert info.value.code == ErrorCode.TOO_LARGE


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc")
def test_a_file_whose_size_says_nothing_is_read_whole() -> None:
    with Sandbox("/proc/self") as sandbox:
        data = sandbox.read_file("status", max_bytes=1 << 20)
    assert data.startswith(b"Name:") and data.endswith(b"\n")


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("a/b/c.txt", None, None),
        ("in_link/b/c.txt", None, None),
        ("dir_link/b/c.txt", None, None),
        ("file_link", None, None),
        ("a/../small.txt", None, None),
        ("out_link/secret.txt", ErrorCode.PATH_OUTSIDE_ROOT, "points outside the workspace root"),
        ("out_link", ErrorCode.PATH_OUTSIDE_ROOT, "points outside the workspace root"),
        ("dangling", ErrorCode.NOT_FOUND, "'dangling' is a symbolic link whose target does not exist"),
        ("missing", ErrorCode.NOT_FOUND, "'missing' does not exist"),
        ("nope/x", ErrorCode.NOT_FOUND, "'nope/x': 'nope' does not exist"),
        ("file/x", ErrorCode.NOT_A_DIRECTORY, "'file/x': 'file' is not a directory"),
        ("fifo/x", ErrorCode.NOT_A_DIRECTORY, "'fifo/x': 'fifo' is not a directory"),
        ("file_link/x", ErrorCode.NOT_A_DIRECTORY, "'file_link/x': 'small.txt' is not a directory"),
        ("fifo", ErrorCode.NOT_A_FILE, "'fifo' is not a regular file (FIFO)"),
        ("a", ErrorCode.NOT_A_FILE, "'a' is a directory"),
        ("dir_link", ErrorCode.NOT_A_FILE, "'dir_link' is a directory"),
        ("small.txt/.", ErrorCode.NOT_A_DIRECTORY, "'small.txt/.': 'small.txt' is not a directory"),
        ("../root/small.txt", ErrorCode.PATH_OUTSIDE_ROOT, "leaves the workspace root"),
    ],
)
def test_every_kind_of_path_is_judged_as_before(
    sb: Sandbox, path: str, code: ErrorCode | None, message: str
) -> None:
    judged: list[str] = []
    if code is None:
        data = sb.read_file(path, max_bytes=1000, guard=judged.append)
        assert data in (b"deep", b"x" * 150)
        assert judged == ["a/b/c.txt" if data == b"deep" else "small.txt"]  # where it leads
        with sb.open_file(path, max_bytes=1000) as reader:  # the streaming way agrees
            assert reader.read_all() == data
        return
    for read in (
        lambda: sb.read_file(path, max_bytes=1000),
        lambda: sb.open_file(path, max_bytes=1000).__enter__(),
    ):
        with pytest.raises(SandboxError) as info:
            read()
        assert info.value.code == code and message in info.value.message


@pytest.mark.parametrize("swap", ["file", "link", "fifo", "folder", "gone"])
def test_a_file_swapped_after_it_was_judged_is_not_read(sb: Sandbox, tmp_path: Path, swap: str) -> None:
    # The guard runs between the judgment (fstatat) and the open: what is there by then
    # must be the very file judged, or nothing is read.
    target = sb.root / "small.txt"

    def guard(rel: str) -> None:
        os.unlink(target)
        if swap == "file":
            target.write_bytes(b"SWAPPED")  # another file (another inode) under the same name
        elif swap == "link":
            os.symlink(str(tmp_path / "outside" / "secret.txt"), target)
        elif swap == "fifo":
            os.mkfifo(target)
        elif swap == "folder":
            target.mkdir()

    os.link(target, sb.root / "keep")  # holds the old inode: the new file cannot reuse its number
    with pytest.raises(SandboxError) as info:
        sb.read_file("small.txt", max_bytes=1000, guard=guard)
    expected = ErrorCode.NOT_FOUND if swap == "gone" else ErrorCode.IO_ERROR
    assert info.value.code == expected
    assert "SWAPPED" not in info.value.message and "OUTSIDE" not in info.value.message


def test_a_guard_refusal_opens_nothing(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = os.open

    def watched(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if not flags & os.O_PATH:
            opened.append(path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    def refuse(rel: str) -> None:
        raise SandboxError(ErrorCode.DENIED, "no")

    monkeypatch.setattr(os, "open", watched)
    for path in ("small.txt", "a/b/c.txt", "file_link", "in_link/b/c.txt"):
        with pytest.raises(SandboxError):
            sb.read_file(path, max_bytes=1000, guard=refuse)
    assert opened == []


def test_nesting_past_the_limit_is_refused_on_the_quick_way_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "_MAX_DEPTH", 3)
    deep = tmp_path / "d1" / "d2" / "d3" / "d4"
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")
    (tmp_path / "d1" / "d2" / "f").write_bytes(b"y")
    with Sandbox(tmp_path) as sandbox:
        assert sandbox.read_file("d1/d2/f", max_bytes=10) == b"y"
        with pytest.raises(SandboxError) as info:
            sandbox.read_file("d1/d2/d3/d4/f", max_bytes=10)
        assert info.value.code == ErrorCode.INVALID_PATH and "nested too deeply" in info.value.message
