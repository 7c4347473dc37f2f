"""Table-driven attack tests for rpc_client.sandbox.

Every row names one way an AI could try to reach outside the workspace root (or trip
the client up) and the ErrorCode it must get back.  The tree is rebuilt for each test:

    base/
      secret.txt                  <- the thing nobody may read
      outside/secret_in_dir.txt
      root-evil/evil.txt          <- sibling whose name starts with the root's name
      root/                       <- the workspace
        hello.txt, big.bin, sub/inner.txt, sub/deeper/deep.txt, odd names ...
        links pointing inside, outside, to /proc/self/root, to /dev, loops, dangling
        fifo

``{base}`` and ``{root}`` in a path or link target are replaced by the real absolute
paths of those folders.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from rpc_client.sandbox import (
    MAX_LINK_FOLLOWS,
    Entry,
    Sandbox,
    SandboxError,
    WriteResult,
    split_relative,
)
from schemas.errors import ErrorCode, RpcError

OUT = ErrorCode.PATH_OUTSIDE_ROOT
INVALID = ErrorCode.INVALID_PATH
MISSING = ErrorCode.NOT_FOUND
NOT_FILE = ErrorCode.NOT_A_FILE
NOT_DIR = ErrorCode.NOT_A_DIRECTORY
TOO_LARGE = ErrorCode.TOO_LARGE

MAX_BYTES = 1000

FILES = {
    "hello.txt": b"hello",
    "big.bin": b"x" * (MAX_BYTES + 1),
    "sub/inner.txt": b"inner",
    "sub/deeper/deep.txt": b"deep",
    "a..b": b"a..b",
    "..hidden": b"..hidden",
    "...": b"three dots",
    ".x": b"dot x",
    "üñî cödé.txt": "unicode ✓".encode(),
    "with space.txt": b"space",
    "back\\slash": b"backslash",
}

LINKS = {
    # inside the root
    "link_rel_in": "hello.txt",
    "link_abs_in": "{root}/sub/inner.txt",
    "link_abs_in_dotdot": "{root}/sub/../hello.txt",
    "link_dir_in": "sub",
    "link_root_dot": ".",
    "chain1": "chain2",
    "chain2": "chain3",
    "chain3": "hello.txt",
    "sub/link_parent": "..",
    "link_in_to_dev_null": "link_dev_null",
    "link_fifo": "fifo",
    # outside the root
    "link_rel_out": "../secret.txt",
    "link_abs_out": "{base}/secret.txt",
    "chain_out1": "chain_out2",
    "chain_out2": "../secret.txt",
    "link_outside_dir": "{base}/outside",
    "link_outside_dir_rel": "../outside",
    "link_evil": "../root-evil",
    "link_evil_abs": "{base}/root-evil/evil.txt",
    "link_same_prefix": "{root}-evil/evil.txt",
    "link_abs_root_dotdot": "{root}/../secret.txt",
    "link_proc": "/proc/self/root",
    "link_proc_secret": "/proc/self/root{base}/secret.txt",
    "link_dev": "/dev",
    "link_dev_null": "/dev/null",
    "sub/link_up_out": "../../secret.txt",
    # broken
    "loop_a": "loop_b",
    "loop_b": "loop_a",
    "self_loop": "self_loop",
    "dangling": "nothing_here",
    "dangling_out": "{base}/new_outside.txt",
    "dangling_dir_out": "../newdir_out",
}


@dataclass
class Tree:
    base: Path
    root: Path
    sandbox: Sandbox

    def fmt(self, path: Any) -> Any:
        if isinstance(path, str):
            return path.replace("{base}", str(self.base)).replace("{root}", str(self.root))
        return path


def build_tree(base: Path) -> Path:
    base = Path(os.path.realpath(base))
    (base / "secret.txt").write_bytes(b"TOP SECRET")
    (base / "outside").mkdir()
    (base / "outside" / "secret_in_dir.txt").write_bytes(b"OUTSIDE SECRET")
    (base / "root-evil").mkdir()
    (base / "root-evil" / "evil.txt").write_bytes(b"EVIL")
    root = base / "root"
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "empty_dir").mkdir()
    os.mkfifo(root / "fifo")
    for rel, target in LINKS.items():
        os.symlink(target.replace("{base}", str(base)).replace("{root}", str(root)), root / rel)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    root = build_tree(tmp_path)
    with Sandbox(root) as sandbox:
        yield Tree(base=root.parent, root=root, sandbox=sandbox)


class Hung(BaseException):
    """Raised by the watchdog; a BaseException so the sandbox cannot turn it into an error code."""


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """Fail (instead of hanging forever) if an operation blocks, e.g. on a FIFO."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hung("the operation blocked")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 20)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def snapshot(base: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Everything under ``base`` except the workspace root: kind, content/target, mode."""
    result: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if Path(dirpath) == base:
            dirnames.remove("root")
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                result[str(p)] = ("link", os.readlink(p), st.st_mode)
            elif stat.S_ISDIR(st.st_mode):
                result[str(p)] = ("dir", b"", st.st_mode)
            else:
                result[str(p)] = ("file", p.read_bytes(), st.st_mode)
    return result


def temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".aihub-" in p.name]


def run(tree: Tree, op: str, path: Any) -> Any:
    sb = tree.sandbox
    if op == "read":
        return sb.read_file(path, max_bytes=MAX_BYTES)
    if op == "write":
        return sb.write_file(path, b"PWNED")
    if op == "list":
        return sb.list_dir(path, recursive=True, max_entries=100)
    if op == "stat":
        return sb.stat_file(path)
    if op == "resolve":
        return sb.resolve(path)
    raise AssertionError(op)


def attack(name: str, op: str, path: Any, code: ErrorCode) -> Any:
    return pytest.param(op, path, code, id=f"{op}-{name}")


# fmt: off
ATTACKS = [
    # --- plain '..' and absolute paths ------------------------------------------------
    attack("dotdot", "read", "..", OUT),
    attack("dotdot_secret", "read", "../secret.txt", OUT),
    attack("down_then_up_past_root", "read", "sub/../../secret.txt", OUT),
    attack("deep_dotdot", "read", "sub/deeper/../../../secret.txt", OUT),
    attack("sibling_same_prefix", "read", "../root-evil/evil.txt", OUT),
    attack("back_in_via_parent", "read", "../root/hello.txt", OUT),  # goes out, even if it comes back
    attack("absolute", "read", "/etc/passwd", OUT),
    attack("double_slash_absolute", "read", "//etc/passwd", OUT),
    attack("absolute_into_root", "read", "{root}/hello.txt", OUT),  # absolute is refused even inside
    # --- malformed ------------------------------------------------------------------
    attack("nul", "read", "hello.txt\x00.png", INVALID),
    attack("empty", "read", "", INVALID),
    attack("bytes_path", "read", b"hello.txt", INVALID),
    attack("lone_surrogate", "read", "\ud800", INVALID),
    attack("name_too_long", "read", "a" * 300, INVALID),
    attack("path_too_long", "read", "a/" * 2100, INVALID),
    # --- links in the last component -----------------------------------------------
    attack("link_rel_out", "read", "link_rel_out", OUT),
    attack("link_abs_out", "read", "link_abs_out", OUT),
    attack("chain_of_links_out", "read", "chain_out1", OUT),
    attack("link_abs_sibling", "read", "link_evil_abs", OUT),
    attack("link_abs_same_string_prefix", "read", "link_same_prefix", OUT),
    attack("link_abs_root_then_dotdot", "read", "link_abs_root_dotdot", OUT),
    attack("link_proc_self_root_secret", "read", "link_proc_secret", OUT),
    attack("link_up_out_from_subdir", "read", "sub/link_up_out", OUT),
    attack("link_to_dev_null", "read", "link_dev_null", OUT),
    attack("in_root_link_to_device_link", "read", "link_in_to_dev_null", OUT),
    # --- links in a parent component -----------------------------------------------
    attack("link_in_parent_abs", "read", "link_outside_dir/secret_in_dir.txt", OUT),
    attack("link_in_parent_rel", "read", "link_outside_dir_rel/secret_in_dir.txt", OUT),
    attack("link_then_dotdot", "read", "link_outside_dir/..", OUT),  # lexically the root!
    attack("link_then_dotdot_back_in", "read", "link_outside_dir/../root/hello.txt", OUT),
    attack("link_sibling_dir", "read", "link_evil/evil.txt", OUT),
    attack("link_proc_self_root", "read", "link_proc/etc/passwd", OUT),
    attack("link_dev_dir", "read", "link_dev/null", OUT),
    attack("in_root_dir_link_then_escape", "read", "link_dir_in/../../secret.txt", OUT),
    attack("parent_link_then_escape", "read", "sub/link_parent/../secret.txt", OUT),
    attack("dot_link_then_escape", "read", "link_root_dot/../secret.txt", OUT),
    # --- broken links, odd files ---------------------------------------------------
    attack("link_loop", "read", "loop_a", INVALID),
    attack("self_loop", "read", "self_loop", INVALID),
    attack("dangling", "read", "dangling", MISSING),
    attack("fifo", "read", "fifo", NOT_FILE),
    attack("link_to_fifo", "read", "link_fifo", NOT_FILE),
    attack("dir_as_file", "read", "sub", NOT_FILE),
    attack("root_as_file", "read", ".", NOT_FILE),
    attack("too_large", "read", "big.bin", TOO_LARGE),
    attack("file_as_dir", "read", "hello.txt/x", NOT_DIR),
    attack("file_slash_dot", "read", "hello.txt/.", NOT_DIR),
    attack("missing", "read", "missing.txt", MISSING),
    attack("missing_parent", "read", "nope/x", MISSING),
    # --- writes --------------------------------------------------------------------
    attack("dotdot", "write", "../x.txt", OUT),
    attack("sibling_same_prefix", "write", "../root-evil/evil.txt", OUT),
    attack("absolute", "write", "/tmp/aihub-sandbox-test-should-not-exist", OUT),
    attack("absolute_root", "write", "/", OUT),
    attack("link_abs_out", "write", "link_abs_out", OUT),
    attack("link_rel_out", "write", "link_rel_out", OUT),
    attack("link_in_parent", "write", "link_outside_dir/new.txt", OUT),
    attack("link_in_parent_existing", "write", "link_outside_dir/secret_in_dir.txt", OUT),
    attack("link_in_parent_with_parents", "write", "link_outside_dir/a/b/c.txt", OUT),
    attack("dangling_link_out", "write", "dangling_out", OUT),
    attack("dangling_dir_link_out", "write", "dangling_dir_out/x.txt", OUT),
    attack("link_proc_self_root", "write", "link_proc_secret", OUT),
    attack("link_to_dev_null", "write", "link_dev_null", OUT),
    attack("link_up_out_from_subdir", "write", "sub/link_up_out", OUT),
    attack("new_dirs_then_escape", "write", "newdir/../../escape.txt", OUT),
    attack("dir", "write", "sub", NOT_FILE),
    attack("root", "write", ".", NOT_FILE),
    attack("dir_via_dotdot", "write", "sub/..", NOT_FILE),
    attack("fifo", "write", "fifo", NOT_FILE),
    attack("file_as_dir", "write", "hello.txt/x", NOT_DIR),
    attack("nul", "write", "x\x00.txt", INVALID),
    attack("loop", "write", "loop_a", INVALID),
    attack("trailing_slash", "write", "newfile/", INVALID),
    # --- listings ------------------------------------------------------------------
    attack("dotdot", "list", "..", OUT),
    attack("absolute_root", "list", "/", OUT),
    attack("link_outside_dir", "list", "link_outside_dir", OUT),
    attack("link_then_dotdot", "list", "link_outside_dir/..", OUT),
    attack("link_sibling_dir", "list", "link_evil", OUT),
    attack("link_proc_self_root", "list", "link_proc", OUT),
    attack("link_dev", "list", "link_dev", OUT),
    attack("file", "list", "hello.txt", NOT_DIR),
    attack("fifo", "list", "fifo", NOT_DIR),
    attack("missing", "list", "missing", MISSING),
    # --- stat / resolve ------------------------------------------------------------
    attack("link_abs_out", "stat", "link_abs_out", OUT),
    attack("link_then_dotdot", "resolve", "link_outside_dir/..", OUT),
    attack("dangling", "resolve", "dangling", MISSING),
]
# fmt: on


@pytest.mark.parametrize(("op", "path", "code"), ATTACKS)
def test_attack_is_refused(tree: Tree, op: str, path: Any, code: ErrorCode) -> None:
    path = tree.fmt(path)
    before = snapshot(tree.base)
    with pytest.raises(SandboxError) as info:
        run(tree, op, path)
    err = info.value
    assert isinstance(err, RpcError)
    assert err.code == code, err.message
    # The message names the caller's path and no absolute path of this machine.
    assert repr(path)[:60].rstrip("'") in err.message
    rest = err.message.replace(repr(path), "")
    assert str(tree.base) not in rest
    assert "/proc" not in rest and "/dev" not in rest
    assert "SECRET" not in err.message
    # Nothing outside changed and no temp file was left behind.
    assert snapshot(tree.base) == before
    assert temp_files(tree.root) == []
    assert not Path("/tmp/aihub-sandbox-test-should-not-exist").exists()


# Names and routes that must keep working.
# fmt: off
READS = [
    pytest.param("hello.txt", b"hello", id="plain"),
    pytest.param("./hello.txt", b"hello", id="leading_dot"),
    pytest.param("sub/./inner.txt", b"inner", id="inner_dot"),
    pytest.param("sub//inner.txt", b"inner", id="double_slash"),
    pytest.param("sub/deeper/../inner.txt", b"inner", id="dotdot_inside"),
    pytest.param("sub/deeper/deep.txt/", b"deep", id="trailing_slash"),
    pytest.param("a..b", b"a..b", id="dots_inside_name"),
    pytest.param("..hidden", b"..hidden", id="dotdot_prefix_name"),
    pytest.param("...", b"three dots", id="three_dots"),
    pytest.param(".x", b"dot x", id="hidden"),
    pytest.param("üñî cödé.txt", "unicode ✓".encode(), id="unicode"),
    pytest.param("with space.txt", b"space", id="space"),
    pytest.param("back\\slash", b"backslash", id="backslash"),
    pytest.param("link_rel_in", b"hello", id="link_rel_in"),
    pytest.param("link_abs_in", b"inner", id="link_abs_in"),
    pytest.param("link_abs_in_dotdot", b"hello", id="link_abs_in_dotdot"),
    pytest.param("chain1", b"hello", id="chain_of_links"),
    pytest.param("link_dir_in/inner.txt", b"inner", id="link_in_parent_in_root"),
    pytest.param("link_dir_in/deeper/deep.txt", b"deep", id="link_in_parent_deeper"),
    pytest.param("link_dir_in/../hello.txt", b"hello", id="link_then_dotdot_in_root"),
    pytest.param("sub/link_parent/hello.txt", b"hello", id="link_to_parent"),
    pytest.param("link_root_dot/link_root_dot/hello.txt", b"hello", id="link_to_dot_twice"),
]
# fmt: on


@pytest.mark.parametrize(("path", "expected"), READS)
def test_read_allowed(tree: Tree, path: str, expected: bytes) -> None:
    assert tree.sandbox.read_file(path, max_bytes=MAX_BYTES) == expected
    resolved = tree.sandbox.resolve(path)
    assert (tree.root / resolved).read_bytes() == expected
    assert tree.sandbox.stat_file(path).st_size == len(expected)


@pytest.mark.parametrize(
    ("path", "written"),
    [
        pytest.param("a..b", "a..b", id="dots_inside_name"),
        pytest.param("..hidden", "..hidden", id="dotdot_prefix_name"),
        pytest.param("new dir/ünï.txt", "new dir/ünï.txt", id="new_unicode_in_new_dir"),
        pytest.param("sub/deeper/../new.txt", "sub/new.txt", id="dotdot_inside"),
        pytest.param("link_rel_in", "hello.txt", id="through_rel_link"),
        pytest.param("link_abs_in", "sub/inner.txt", id="through_abs_link"),
        pytest.param("chain1", "hello.txt", id="through_chain"),
        pytest.param("link_dir_in/new.txt", "sub/new.txt", id="through_parent_link"),
        pytest.param("dangling", "nothing_here", id="dangling_in_root_link_creates_target"),
    ],
)
def test_write_allowed(tree: Tree, path: str, written: str) -> None:
    before = snapshot(tree.base)
    result = tree.sandbox.write_file(path, b"new content")
    assert result.path == written
    assert result.bytes_written == len(b"new content")
    assert (tree.root / written).read_bytes() == b"new content"
    assert tree.sandbox.read_file(path, max_bytes=MAX_BYTES) == b"new content"
    if os.path.islink(tree.root / path):  # the link stays a link
        assert os.readlink(tree.root / path) == tree.fmt(LINKS[path])
    assert snapshot(tree.base) == before
    assert temp_files(tree.root) == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".", ""),
        ("sub/..", ""),
        ("link_dir_in/..", ""),
        ("link_root_dot", ""),
        ("chain1", "hello.txt"),
        ("link_abs_in", "sub/inner.txt"),
        ("link_dir_in/deeper", "sub/deeper"),
        ("sub/link_parent/sub/link_parent", ""),
    ],
)
def test_resolve(tree: Tree, path: str, expected: str) -> None:
    assert tree.sandbox.resolve(path) == expected


def test_resolve_missing_allowed_when_asked(tree: Tree) -> None:
    assert tree.sandbox.resolve("link_dir_in/new.txt", must_exist=False) == "sub/new.txt"
    with pytest.raises(SandboxError) as info:
        tree.sandbox.resolve("link_outside_dir/new.txt", must_exist=False)
    assert info.value.code == OUT


def test_split_relative() -> None:
    assert split_relative("a//b/") == ["a", "b"]
    assert split_relative("a/../b/./c") == ["a", "..", "b", ".", "c"]
    assert split_relative(".") == ["."]
    assert split_relative("a..b/...") == ["a..b", "..."]
    for bad, code in [("", INVALID), ("a\x00", INVALID), ("/x", OUT), ("//x", OUT), (None, INVALID)]:
        with pytest.raises(SandboxError) as info:
            split_relative(bad)  # type: ignore[arg-type]
        assert info.value.code == code


# --- listing ---------------------------------------------------------------------------


def entry_map(entries: list[Entry]) -> dict[str, Entry]:
    return {e.path: e for e in entries}


def test_list_recursive_preorder_and_links(tree: Tree) -> None:
    entries, truncated = tree.sandbox.list_dir(".", recursive=True, max_entries=1000)
    assert not truncated
    paths = [e.path for e in entries]
    # Sorted by name within a folder; a folder's row comes right before its contents.
    assert paths.index("sub") + 1 == paths.index("sub/deeper")
    assert paths.index("sub/deeper") + 1 == paths.index("sub/deeper/deep.txt")
    top = [p for p in paths if "/" not in p]
    assert top == sorted(top)
    by = entry_map(entries)
    assert by["hello.txt"] == Entry("hello.txt", "hello.txt", False, 5)
    assert by["sub"] == Entry("sub", "sub", True, None)
    assert by["fifo"] == Entry("fifo", "fifo", False, None)
    assert by["link_rel_in"] == Entry("link_rel_in", "link_rel_in", False, 5, is_symlink=True)
    assert by["link_dir_in"] == Entry("link_dir_in", "link_dir_in", True, None, is_symlink=True)
    for name in ["link_outside_dir", "link_abs_out", "link_proc", "link_dev_null", "loop_a", "dangling"]:
        assert by[name] == Entry(name, name, False, None, is_symlink=True, target_outside=True)
    assert by["sub/link_up_out"].target_outside
    assert not by["sub/link_parent"].target_outside and by["sub/link_parent"].is_dir
    # Links are never descended: nothing from outside or through in-root links shows up.
    assert not any(p.startswith(("link_dir_in/", "link_outside_dir/", "link_proc/")) for p in paths)
    assert not any(p.endswith(("secret_in_dir.txt", "evil.txt", "passwd")) for p in paths)


def test_list_non_recursive_and_paths(tree: Tree) -> None:
    entries, truncated = tree.sandbox.list_dir("link_dir_in", recursive=False, max_entries=100)
    assert not truncated
    assert [e.path for e in entries] == ["sub/deeper", "sub/inner.txt", "sub/link_parent", "sub/link_up_out"]
    assert tree.sandbox.list_dir("empty_dir", recursive=True, max_entries=10) == ([], False)


def test_list_truncation(tree: Tree) -> None:
    full, _ = tree.sandbox.list_dir(".", recursive=True, max_entries=1000)
    part, truncated = tree.sandbox.list_dir(".", recursive=True, max_entries=5)
    assert truncated and part == full[:5]
    exact, truncated = tree.sandbox.list_dir(".", recursive=True, max_entries=len(full))
    assert exact == full and not truncated
    none, truncated = tree.sandbox.list_dir(".", recursive=False, max_entries=0)
    assert none == [] and truncated


# --- writes ----------------------------------------------------------------------------


def test_write_replaces_atomically(tree: Tree) -> None:
    target = tree.root / "hello.txt"
    old_ino = target.stat().st_ino
    result = tree.sandbox.write_file("hello.txt", b"replaced")
    assert result == WriteResult(path="hello.txt", bytes_written=8, created=False)
    assert target.read_bytes() == b"replaced"
    assert target.stat().st_ino != old_ino  # a new file was renamed into place
    assert temp_files(tree.root) == []
    created = tree.sandbox.write_file("brand/new/file.txt", b"")
    assert created == WriteResult(path="brand/new/file.txt", bytes_written=0, created=True)


def test_write_without_create_parents(tree: Tree) -> None:
    with pytest.raises(SandboxError) as info:
        tree.sandbox.write_file("nodir/x.txt", b"x", create_parents=False)
    assert info.value.code == MISSING
    assert not (tree.root / "nodir").exists()


@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
@pytest.mark.parametrize("path", ["hello.txt", "fresh/dir/new.txt"])
def test_write_failure_leaves_nothing_behind(
    tree: Tree, monkeypatch: pytest.MonkeyPatch, where: str, path: str
) -> None:
    real_write = os.write

    def failing_write(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[:2]))  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/some/absolute/tmpname")

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/some/absolute/tmpname")

    before = {p: p.read_bytes() for p in tree.root.rglob("*") if p.is_file() and not p.is_symlink()}
    monkeypatch.setattr(os, where, failing_write if where == "write" else failing)
    with pytest.raises(SandboxError) as info:
        tree.sandbox.write_file(path, b"a much longer new content")
    monkeypatch.undo()
    assert info.value.code == ErrorCode.IO_ERROR
    assert "/some/absolute" not in info.value.message
    assert os.strerror(errno.ENOSPC if where == "write" else errno.EIO) in info.value.message
    after = {p: p.read_bytes() for p in tree.root.rglob("*") if p.is_file() and not p.is_symlink()}
    assert after == before  # old content intact, no half file, no temp file
    assert not (tree.root / "fresh").exists()  # folders made for the failed write are gone


def test_write_through_parent_link_creates_nothing_outside(tree: Tree) -> None:
    before = snapshot(tree.base)
    for path in [
        "link_outside_dir/x/y/z.txt",
        "link_evil/new.txt",
        "link_proc/tmp/pwned",
        "dangling_dir_out/a",
    ]:
        with pytest.raises(SandboxError) as info:
            tree.sandbox.write_file(path, b"PWNED")
        assert info.value.code == OUT
    assert snapshot(tree.base) == before
    assert not (tree.base / "newdir_out").exists()
    assert not Path("/tmp/pwned").exists()


def test_write_keeps_mode(tree: Tree) -> None:
    script = tree.root / "run.sh"
    script.write_bytes(b"#!/bin/sh\n")
    script.chmod(0o750)
    tree.sandbox.write_file("run.sh", b"#!/bin/sh\necho hi\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    secret = tree.root / "private.txt"
    secret.write_bytes(b"x")
    secret.chmod(0o600)
    tree.sandbox.write_file("private.txt", b"y")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    tree.sandbox.write_file("fresh.txt", b"z")
    assert stat.S_IMODE((tree.root / "fresh.txt").stat().st_mode) == 0o644


def test_write_drops_setuid(tree: Tree) -> None:
    f = tree.root / "suid"
    f.write_bytes(b"x")
    f.chmod(0o4755)
    tree.sandbox.write_file("suid", b"y")
    assert stat.S_IMODE(f.stat().st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write read-only files")
def test_write_read_only_file_refused(tree: Tree) -> None:
    f = tree.root / "ro.txt"
    f.write_bytes(b"keep")
    f.chmod(0o444)
    with pytest.raises(SandboxError) as info:
        tree.sandbox.write_file("ro.txt", b"changed")
    assert info.value.code == ErrorCode.DENIED
    assert f.read_bytes() == b"keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_permission_errors_are_denied(tree: Tree) -> None:
    locked = tree.root / "locked"
    locked.mkdir()
    (locked / "x.txt").write_bytes(b"x")
    locked.chmod(0)
    try:
        for op in ("read", "write", "list"):
            with pytest.raises(SandboxError) as info:
                run(tree, op, "locked/x.txt" if op != "list" else "locked")
            assert info.value.code == ErrorCode.DENIED
            assert str(tree.base) not in info.value.message
    finally:
        locked.chmod(0o755)


def test_failed_write_removes_the_folders_it_made(tree: Tree) -> None:
    with pytest.raises(SandboxError) as info:
        tree.sandbox.write_file("made/deeper/../../../escape.txt", b"x")
    assert info.value.code == OUT
    assert not (tree.root / "made").exists()
    with pytest.raises(SandboxError) as info:
        tree.sandbox.write_file("made/x/../../hello.txt/y", b"x")  # folders made, then a file as a folder
    assert info.value.code == NOT_DIR
    assert not (tree.root / "made").exists()
    # A write that succeeds keeps the folders it made.
    assert tree.sandbox.write_file("made/sub/x.txt", b"x").created
    assert (tree.root / "made" / "sub" / "x.txt").read_bytes() == b"x"


def test_write_long_name_temp_fits(tree: Tree) -> None:
    name = "é" * 127  # 254 bytes: the temp name must still fit in NAME_MAX
    assert tree.sandbox.write_file(name, b"ok").path == name
    assert (tree.root / name).read_bytes() == b"ok"


# --- reading limits --------------------------------------------------------------------


def test_read_size_limits(tree: Tree) -> None:
    assert tree.sandbox.read_file("big.bin", max_bytes=MAX_BYTES + 1) == FILES["big.bin"]
    with pytest.raises(SandboxError) as info:
        tree.sandbox.read_file("big.bin", max_bytes=MAX_BYTES)
    assert info.value.code == TOO_LARGE
    assert tree.sandbox.read_file("hello.txt", max_bytes=5) == b"hello"
    with pytest.raises(SandboxError):
        tree.sandbox.read_file("hello.txt", max_bytes=-1)


def test_stat_file_is_of_target(tree: Tree) -> None:
    st = tree.sandbox.stat_file("link_rel_in")
    assert stat.S_ISREG(st.st_mode) and st.st_ino == (tree.root / "hello.txt").stat().st_ino
    assert stat.S_ISDIR(tree.sandbox.stat_file("link_dir_in").st_mode)


def test_link_limit_is_enforced(tree: Tree) -> None:
    # A chain of exactly MAX_LINK_FOLLOWS links works; one more is refused.
    for i in range(MAX_LINK_FOLLOWS + 1):
        os.symlink(f"c{i + 1}" if i < MAX_LINK_FOLLOWS else "hello.txt", tree.root / f"c{i}")
    assert tree.sandbox.read_file("c1", max_bytes=10) == b"hello"
    with pytest.raises(SandboxError) as info:
        tree.sandbox.read_file("c0", max_bytes=10)
    assert info.value.code == INVALID


# --- descriptors, life cycle, races ----------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_leak(tree: Tree) -> None:
    def everything() -> None:
        for param in ATTACKS:
            op, path, _ = param.values
            with pytest.raises(SandboxError):
                run(tree, op, tree.fmt(path))
        for param in READS:
            run(tree, "read", param.values[0])
        tree.sandbox.list_dir(".", recursive=True, max_entries=1000)
        tree.sandbox.write_file("leak/check.txt", b"x")

    everything()  # warm up (lazy imports, caches)
    before = open_fds()
    for _ in range(20):
        everything()
    assert open_fds() == before


def test_link_created_after_sandbox_is_refused(tree: Tree) -> None:
    os.symlink(str(tree.base / "secret.txt"), tree.root / "late_link")
    os.rename(tree.root / "sub", tree.root / "sub_real")
    os.symlink(str(tree.base / "outside"), tree.root / "sub")  # a parent swapped for a link
    for path in ["late_link", "sub/secret_in_dir.txt"]:
        with pytest.raises(SandboxError) as info:
            tree.sandbox.read_file(path, max_bytes=MAX_BYTES)
        assert info.value.code == OUT
    with pytest.raises(SandboxError):
        tree.sandbox.write_file("sub/secret_in_dir.txt", b"PWNED")
    assert (tree.base / "outside" / "secret_in_dir.txt").read_bytes() == b"OUTSIDE SECRET"


def test_root_renamed_keeps_working(tree: Tree) -> None:
    moved = tree.base / "moved"
    os.rename(tree.root, moved)
    sb = tree.sandbox
    assert sb.read_file("hello.txt", max_bytes=MAX_BYTES) == b"hello"
    assert sb.write_file("sub/after.txt", b"after").path == "sub/after.txt"
    assert (moved / "sub" / "after.txt").read_bytes() == b"after"
    assert not (tree.root / "sub").exists()
    assert any(e.name == "after.txt" for e in sb.list_dir("sub", recursive=False, max_entries=100)[0])
    with pytest.raises(SandboxError) as info:
        sb.read_file("../secret.txt", max_bytes=MAX_BYTES)
    assert info.value.code == OUT


def test_root_given_through_a_link(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    alias = root.parent / "alias"
    os.symlink(root, alias)
    os.symlink(f"{alias}/hello.txt", root / "via_alias")
    os.symlink(f"{alias}-evil/x", root / "via_alias_prefix")
    with Sandbox(alias) as sb:
        assert sb.root == root
        assert sb.read_file("via_alias", max_bytes=10) == b"hello"
        with pytest.raises(SandboxError) as info:
            sb.read_file("via_alias_prefix", max_bytes=10)
        assert info.value.code == OUT


def test_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(SandboxError) as info:
        Sandbox(tmp_path / "nope")
    assert info.value.code == MISSING and str(tmp_path) not in info.value.message
    (tmp_path / "file").write_text("x")
    with pytest.raises(SandboxError) as info:
        Sandbox(tmp_path / "file")
    assert info.value.code == NOT_DIR


def test_close_is_idempotent(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path)
    before = open_fds()
    sb.close()
    sb.close()
    assert open_fds() == before - 1
    with pytest.raises(SandboxError):
        sb.read_file("x", max_bytes=1)


def race(swap: Callable[[bool], None], attempt: Callable[[], None], rounds: int = 3000) -> None:
    """Flip the tree with ``swap`` in a thread while ``attempt`` runs in a loop."""
    stop = threading.Event()

    def flipper() -> None:
        state = False
        while not stop.is_set():
            state = not state
            swap(state)

    thread = threading.Thread(target=flipper, daemon=True)
    thread.start()
    try:
        for _ in range(rounds):
            attempt()
    finally:
        stop.set()
        thread.join()


def test_race_parent_swapped_for_link(tree: Tree) -> None:
    (tree.root / "real").mkdir()
    (tree.root / "real" / "data.txt").write_bytes(b"inside")
    (tree.base / "outside" / "data.txt").write_bytes(b"OUTSIDE")
    link = tree.root / "flip"
    tmp_link = tree.root / "flip.tmp"

    def swap(to_outside: bool) -> None:
        os.symlink(str(tree.base / "outside") if to_outside else "real", tmp_link)
        os.rename(tmp_link, link)  # atomic replace

    swap(False)
    seen: set[bytes] = set()

    def attempt() -> None:
        try:
            seen.add(tree.sandbox.read_file("flip/data.txt", max_bytes=100))
        except SandboxError as exc:
            assert exc.code == OUT

    race(swap, attempt)
    assert seen <= {b"inside"}


def test_race_file_swapped_for_link_and_fifo(tree: Tree) -> None:
    target = tree.root / "flipfile"
    staging = tree.root / "staging"

    def swap(bad: bool) -> None:
        with_link = bad and os.urandom(1)[0] % 2 == 0
        if with_link:
            os.symlink(str(tree.base / "secret.txt"), staging)
        elif bad:
            os.mkfifo(staging)
        else:
            staging.write_bytes(b"inside")
        os.rename(staging, target)

    swap(False)
    seen: set[bytes] = set()
    before = snapshot(tree.base)

    def attempt() -> None:
        try:
            seen.add(tree.sandbox.read_file("flipfile", max_bytes=100))
        except SandboxError as exc:
            assert exc.code in (OUT, NOT_FILE, ErrorCode.IO_ERROR, MISSING)
        try:
            tree.sandbox.write_file("flipfile", b"written")
        except SandboxError as exc:
            assert exc.code in (OUT, NOT_FILE, ErrorCode.IO_ERROR, MISSING)

    race(swap, attempt, rounds=1500)
    assert seen <= {b"inside", b"written"}
    assert snapshot(tree.base) == before
