"""Property tests for rpc_client.sandbox (hypothesis).

Random trees of files, folders and links (pointing inside, outside, to a same-prefix
sibling ``root-evil``, through ``/proc/self/root``, dangling, looping) are built in a
fresh temporary folder for every example:

    base/
      secret.txt, outside/..., root-evil/...   <- must never be read or changed
      root/                                     <- the workspace

Outside folders hold the same names as the tree generator uses, so a sandbox bug that
escapes finds something to read or overwrite instead of failing by luck.  Every outside
link target stays under ``base`` so a bug can be detected (and cannot damage the host).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from rpc_client.sandbox import Sandbox, SandboxError, split_relative
from schemas.errors import ErrorCode

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = ["a", "b", "a..b", "..x", ".h", "ü", "s p", "root-evil", "f"]
OUTSIDE_MARK = b"OUTSIDE"

# Link targets; {base} and {root} become the real absolute paths.
INSIDE_TARGETS = [
    "a",
    "b",
    "a/b",
    ".",
    "..",
    "../a",
    "a..b",
    "f",
    "{root}/a",
    "{root}",
    "{root}/./b",
    "{root}/a/../b",
]
OUTSIDE_TARGETS = [
    "../outside",
    "../../outside",
    "../../../outside/a",
    "../secret.txt",
    "../root-evil",
    "../root-evil/a",
    "{base}/outside",
    "{base}/outside/f",
    "{base}/secret.txt",
    "{base}/root-evil",
    "{root}-evil",
    "{root}-evil/f",
    "{root}/../outside",
    "{root}/../root/../outside/f",
    "/proc/self/root{base}/outside",
    "//{base}/outside/a",
    "nonexistent",
    "a/nonexistent/..",
]

# One operation that builds the tree: (kind, relative path, payload).
tree_ops = st.lists(
    st.tuples(
        st.sampled_from(["dir", "file", "file", "link"]),
        st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join),
        st.one_of(st.binary(max_size=8), st.sampled_from(INSIDE_TARGETS + OUTSIDE_TARGETS)),
    ),
    max_size=14,
)

# Trees with at least one file, for the "no false refusals" property.
tree_ops_with_files = st.builds(
    lambda ops, files: ops + files,
    tree_ops,
    st.lists(
        st.tuples(
            st.just("file"),
            st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map("/".join),
            st.binary(max_size=8),
        ),
        min_size=1,
        max_size=4,
    ),
)

segment = st.one_of(
    st.sampled_from([*NAMES, ".", "..", "", "...", "x\x00", "é", "nope", "outside", "root"]),
    st.text(min_size=1, max_size=4),
)
raw_path = st.builds(
    lambda prefix, parts: prefix + "/".join(parts),
    st.sampled_from(["", "", "", "/", "//", "./", "../"]),
    st.lists(segment, min_size=1, max_size=6),
)


@dataclass
class World:
    base: Path
    root: Path

    def fill(self, template: str) -> str:
        return template.replace("{base}", str(self.base)).replace("{root}", str(self.root))

    def inside(self, real: str) -> bool:
        return os.path.commonpath([real, str(self.root)]) == str(self.root)

    def snapshot_outside(self) -> dict[str, Any]:
        """Everything under base except the workspace: kind, content or target, mode."""
        result: dict[str, Any] = {}
        for dirpath, dirnames, filenames in os.walk(self.base):
            if Path(dirpath) == self.base:
                dirnames.remove("root")
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                st_ = p.lstat()
                if stat.S_ISLNK(st_.st_mode):
                    result[str(p)] = ("link", os.readlink(p))
                elif stat.S_ISREG(st_.st_mode):
                    result[str(p)] = ("file", p.read_bytes(), st_.st_mode, st_.st_ino)
                else:
                    result[str(p)] = ("other", st_.st_mode)
        return result

    def make_parents(self, rel: str) -> bool:
        """Create rel's missing parent folders; False if a parent is a link or not a folder.

        The builder must never follow a link: it would build outside the root.
        """
        here = self.root
        for part in rel.split("/")[:-1]:
            here = here / part
            if not os.path.lexists(here):
                here.mkdir()
            elif here.is_symlink() or not here.is_dir():
                return False
        return True


@contextmanager
def world(ops: list[tuple[str, str, Any]]) -> Iterator[World]:
    with tempfile.TemporaryDirectory(prefix="aihub-sbx-") as tmp:
        base = Path(os.path.realpath(tmp))
        (base / "secret.txt").write_bytes(OUTSIDE_MARK + b" secret")
        for folder in ("outside", "root-evil"):
            for name in NAMES:
                if name != "f":
                    (base / folder / name).mkdir(parents=True)
                    (base / folder / name / "f").write_bytes(OUTSIDE_MARK + b" " + name.encode())
            (base / folder / "f").write_bytes(OUTSIDE_MARK)
        root = base / "root"
        root.mkdir()
        w = World(base=base, root=root)
        order = {"dir": 0, "file": 1, "link": 2}
        # Folders first (shallow first), then files, then links: more of the ops take effect.
        for kind, rel, payload in sorted(ops, key=lambda op: (order[op[0]], op[1].count("/"))):
            if not w.make_parents(rel) or os.path.lexists(root / rel):
                continue
            if kind == "dir":
                (root / rel).mkdir()
            elif kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                (root / rel).write_bytes(b"in:" + data)
            else:
                target = payload if isinstance(payload, str) else "a"
                os.symlink(w.fill(target), root / rel)
        yield w


def existing(w: World) -> list[str]:
    """Every name in the workspace (files, folders, links, FIFOs), relative to the root."""
    found = []
    for dirpath, dirnames, filenames in os.walk(w.root):
        for name in dirnames + filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), w.root))
    return sorted(found)


def draw_paths(w: World, data: st.DataObject, count: int) -> list[str]:
    """Paths to try: random ones, and existing names with random tails like '/..' or '/f'."""
    names = existing(w)
    tail = st.lists(st.sampled_from([*NAMES, ".", "..", "", "f", "nope"]), max_size=3)
    options = [raw_path]
    files = [n for n in names if os.path.isfile(w.root / n)]  # also links to files, in or out
    if files:
        options.append(st.sampled_from(files))
    if names:
        options.append(st.builds(lambda e, t: "/".join([e, *t]), st.sampled_from(names), tail))
        options.append(st.builds(lambda e, t: "/".join([e, *t]), st.sampled_from(names), st.just([])))
    return data.draw(st.lists(st.one_of(options), min_size=1, max_size=count))


def message_is_clean(w: World, exc: SandboxError, path: object) -> None:
    rest = exc.message.replace(repr(path), "")
    assert str(w.base) not in rest, exc.message
    assert repr(path)[:40].rstrip("'") in exc.message


# --- (d) split_relative is total over text ---------------------------------------------


@SETTINGS
@given(st.one_of(st.text(), raw_path, st.binary(), st.integers(), st.none()))
def test_split_relative_only_raises_sandbox_error(path: Any) -> None:
    try:
        parts = split_relative(path)
    except SandboxError as exc:
        assert exc.code in (ErrorCode.INVALID_PATH, ErrorCode.PATH_OUTSIDE_ROOT)
        return
    assert isinstance(path, str) and not path.startswith("/")
    assert all(p and "/" not in p and "\x00" not in p for p in parts)
    assert "/".join(parts) == "/".join(p for p in path.split("/") if p)  # nothing normalised away


# --- (a) whatever is accepted is inside, and is what the kernel would have opened ------


@SETTINGS
@given(tree_ops, st.data())
def test_accepted_reads_stay_inside(ops: list[tuple[str, str, Any]], data: st.DataObject) -> None:
    with world(ops) as w, Sandbox(w.root) as sb:
        for path in draw_paths(w, data, 8):
            try:
                content = sb.read_file(path, max_bytes=1 << 16)
                resolved = sb.resolve(path)
            except SandboxError as exc:
                event(f"read refused: {ErrorCode(exc.code).name}")
                message_is_clean(w, exc, path)
                continue
            event("read accepted")
            real = os.path.realpath(os.path.join(w.root, path))
            assert w.inside(real)
            # The sandbox agrees with the kernel about where an accepted path leads.
            assert real == os.path.join(w.root, resolved) or (resolved == "" and real == str(w.root))
            assert content == Path(real).read_bytes()
            assert OUTSIDE_MARK not in content


@SETTINGS
@given(tree_ops, st.data())
def test_accepted_listings_stay_inside(ops: list[tuple[str, str, Any]], data: st.DataObject) -> None:
    with world(ops) as w, Sandbox(w.root) as sb:
        for path in draw_paths(w, data, 6):
            try:
                entries, _ = sb.list_dir(path, recursive=True, max_entries=500)
                resolved = sb.resolve(path)
            except SandboxError as exc:
                event(f"list refused: {ErrorCode(exc.code).name}")
                message_is_clean(w, exc, path)
                continue
            event("list accepted" + (" with links" if any(e.is_symlink for e in entries) else ""))
            real = os.path.realpath(os.path.join(w.root, path))
            assert w.inside(real)
            for e in entries:
                # Every row exists at its path without crossing a link: nothing was descended.
                full = os.path.join(w.root, e.path)
                assert os.path.normpath(os.path.realpath(os.path.dirname(full))) == os.path.dirname(full)
                assert e.path.startswith(resolved)
                assert os.path.islink(full) == e.is_symlink
                if e.is_symlink and not e.target_outside:
                    assert w.inside(os.path.realpath(full))
                if e.is_symlink and w.inside(os.path.realpath(full)) is False:
                    assert e.target_outside


# --- (b) no false refusals for honest routes -------------------------------------------


def real_dirs(w: World, rel: str) -> list[str]:
    """Real (non-link) sub-folders of rel."""
    with os.scandir(os.path.join(w.root, rel) if rel else w.root) as it:
        return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))


def detoured(w: World, start: str, parts: list[str], data: st.DataObject) -> list[str]:
    """A route from folder start through parts with harmless detours ('.', '', 'x/..')."""
    route: list[str] = []
    here = start
    for i, part in enumerate(parts):
        detour = data.draw(st.sampled_from(["none", "none", "dot", "empty", "subdir"]))
        if detour == "dot":
            route.append(".")
        elif detour == "empty":
            route.append("")
        elif detour == "subdir":
            subs = real_dirs(w, here)
            if subs:
                route += [data.draw(st.sampled_from(subs)), ".."]
        route.append(part)
        if i < len(parts) - 1:
            here = f"{here}/{part}" if here else part
    return route


@SETTINGS
@given(tree_ops_with_files, st.data())
def test_honest_routes_are_accepted(ops: list[tuple[str, str, Any]], data: st.DataObject) -> None:
    with world(ops) as w:
        files = []
        for dirpath, _dirnames, filenames in os.walk(w.root):
            for name in filenames:
                full = os.path.join(dirpath, name)
                if stat.S_ISREG(os.lstat(full).st_mode):
                    files.append(os.path.relpath(full, w.root))
        assume(files)
        target = data.draw(st.sampled_from(sorted(files)))
        parts = target.split("/")
        # Optionally enter through a good link, made now, to an ancestor (or the file).
        cut = data.draw(st.integers(0, len(parts)))
        ancestor = "/".join(parts[:cut])
        route: list[str]
        if data.draw(st.booleans()) and cut > 0:
            holders = ["", *sorted({os.path.dirname(f) for f in files} - {""})]
            holder = data.draw(st.sampled_from(holders))
            style = data.draw(st.sampled_from(["relative", "absolute"]))
            link_target = (
                os.path.relpath(os.path.join(w.root, ancestor), os.path.join(w.root, holder))
                if style == "relative"
                else os.path.join(w.root, ancestor)
            )
            link_name = "good link"
            assume(not os.path.lexists(os.path.join(w.root, holder, link_name)))
            os.symlink(link_target, os.path.join(w.root, holder, link_name))
            route = [*detoured(w, "", [*holder.split("/"), link_name] if holder else [link_name], data)]
            route += detoured(w, ancestor, parts[cut:], data)
        else:
            route = detoured(w, "", parts, data)
        path = "/".join(route)
        if path.startswith("/"):  # the route began with an empty segment
            path = "." + path
        expected = (w.root / target).read_bytes()
        with Sandbox(w.root) as sb:
            assert sb.read_file(path, max_bytes=1 << 16) == expected, path
            assert sb.resolve(path) == target
            result = sb.write_file(path, b"rewritten")
            assert result.path == target and not result.created
        assert (w.root / target).read_bytes() == b"rewritten"


# --- (c) writes never create or change anything outside --------------------------------


@SETTINGS
@given(tree_ops, st.data(), st.booleans())
def test_writes_never_touch_outside(
    ops: list[tuple[str, str, Any]], data: st.DataObject, parents: bool
) -> None:
    with world(ops) as w, Sandbox(w.root) as sb:
        before = w.snapshot_outside()
        for n, path in enumerate(draw_paths(w, data, 8)):
            payload = f"written {n}".encode()
            try:
                result = sb.write_file(path, payload, create_parents=parents)
            except SandboxError as exc:
                event(f"write refused: {ErrorCode(exc.code).name}")
                message_is_clean(w, exc, path)
                continue
            event("write accepted" + (" via link" if result.path != path else ""))
            written = os.path.join(w.root, result.path)
            assert w.inside(os.path.realpath(written))
            assert Path(written).read_bytes() == payload
            assert os.path.realpath(os.path.join(w.root, path)) == written
        assert w.snapshot_outside() == before
        assert not [p for p in w.root.rglob("*") if ".aihub-" in p.name]


# --- a state machine that keeps swapping the tree under the sandbox ---------------------


class SwappingTree(RuleBasedStateMachine):
    """Slots ``p`` and ``q`` (and ``p/s``) flip between files, folders, FIFOs and links
    (in and out) between operations; every accepted read/write/list must stay inside."""

    SLOTS = ("p", "q", "p/s")
    KINDS = ("file", "dir", "fifo", "link_in", "link_out_dir", "link_out_file", "link_proc", "link_evil")
    PATHS = (
        "p",
        "q",
        "p/f",
        "q/f",
        "p/s",
        "p/s/f",
        "p/../q/f",
        "q/f/..",
        "p/..",
        "p/s/../f",
        "q/../p/s/f",
        "./p//f",
    )

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="aihub-sbx-sm-")
        base = Path(os.path.realpath(self._tmp.name))
        (base / "outside").mkdir()
        (base / "outside" / "f").write_bytes(OUTSIDE_MARK)
        (base / "outside" / "s").mkdir()
        (base / "outside" / "s" / "f").write_bytes(OUTSIDE_MARK)
        (base / "root-evil").mkdir()
        (base / "root-evil" / "f").write_bytes(OUTSIDE_MARK)
        (base / "root").mkdir()
        self.w = World(base=base, root=base / "root")
        (self.w.root / "p" / "s").mkdir(parents=True)
        (self.w.root / "p" / "f").write_bytes(b"inside p/f")
        (self.w.root / "p" / "s" / "f").write_bytes(b"inside p/s/f")
        (self.w.root / "q").write_bytes(b"inside q")
        self.sb = Sandbox(self.w.root)
        self.before = self.w.snapshot_outside()

    def teardown(self) -> None:
        self.sb.close()
        self._tmp.cleanup()

    @rule(slot=st.sampled_from(SLOTS), kind=st.sampled_from(KINDS))
    def swap(self, slot: str, kind: str) -> None:
        where = self.w.root / slot
        if not os.path.isdir(where.parent) or os.path.islink(where.parent):
            return  # the builder never works through links
        if where.is_dir() and not where.is_symlink():
            shutil.rmtree(where)
        elif os.path.lexists(where):
            where.unlink()
        if kind == "file":
            where.write_bytes(b"inside " + slot.encode())
        elif kind == "dir":
            where.mkdir()
            (where / "f").write_bytes(b"inside dir " + slot.encode())
        elif kind == "fifo":
            os.mkfifo(where)
        elif kind == "link_in":
            os.symlink("../q" if "/" in slot else ("q" if slot == "p" else "p"), where)
        elif kind == "link_out_dir":
            os.symlink(str(self.w.base / "outside"), where)
        elif kind == "link_out_file":
            os.symlink("../" * (slot.count("/") + 1) + "outside/f", where)
        elif kind == "link_proc":
            os.symlink(f"/proc/self/root{self.w.base}/outside", where)
        else:
            os.symlink(f"{self.w.root}-evil", where)

    @rule(path=st.sampled_from(PATHS))
    def read(self, path: str) -> None:
        try:
            data = self.sb.read_file(path, max_bytes=4096)
        except SandboxError as exc:
            message_is_clean(self.w, exc, path)
            return
        event("stateful read accepted")
        assert OUTSIDE_MARK not in data
        assert self.w.inside(os.path.realpath(os.path.join(self.w.root, path)))

    @rule(path=st.sampled_from(PATHS))
    def write(self, path: str) -> None:
        try:
            result = self.sb.write_file(path, b"written", create_parents=False)
        except SandboxError as exc:
            message_is_clean(self.w, exc, path)
            return
        event("stateful write accepted")
        assert self.w.inside(os.path.realpath(os.path.join(self.w.root, result.path)))

    @rule(path=st.sampled_from(PATHS), recursive=st.booleans())
    def listing(self, path: str, recursive: bool) -> None:
        try:
            entries, _ = self.sb.list_dir(path, recursive=recursive, max_entries=100)
        except SandboxError as exc:
            message_is_clean(self.w, exc, path)
            return
        for e in entries:
            full = os.path.join(self.w.root, e.path)
            assert os.path.realpath(os.path.dirname(full)) == os.path.dirname(full)

    @invariant()
    def outside_untouched(self) -> None:
        assert self.w.snapshot_outside() == self.before


SwappingTree.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestSwappingTree = SwappingTree.TestCase
