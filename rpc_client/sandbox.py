"""The workspace sandbox: every file the AI reads, writes or lists goes through here.

The promise is simple: a path given by the AI names something inside ONE folder (the
workspace root, pinned when the client starts) or it is refused.  Nothing outside that
folder can be read, written, listed or even probed, whatever the route: ``..`` past the
root, absolute paths, symbolic links in the last or any parent component (also links
made after start-up or swapped in while we work), same-prefix siblings such as
``../root-evil``, or ``/proc/self/root``-style magic links.

How
---
Paths are never handed to the kernel whole.  A path is split into components (without
``os.path.normpath``: ``link/..`` must be judged by where ``link`` points, not
lexically) and walked one component at a time from a duplicate of a file descriptor held
on the root for the sandbox's whole life.  Each step is
``openat(dir, component, O_PATH | O_NOFOLLOW)`` followed by ``fstat``, so the kernel never
follows a link for us and a link swapped in after a check cannot redirect an open.  The
walker keeps a stack of directory descriptors: ``..`` pops it and is refused at the
root.  A symbolic link is read with ``readlinkat`` and its target spliced in front of the
remaining components: a relative target continues from the link's directory, an
absolute target is accepted only if it lies under the root (its real path or the path
it was given as) and then restarts from the root.  At most ``MAX_LINK_FOLLOWS`` links are
followed per path, and at most ``_MAX_STEPS`` components are walked per path (40 link
bodies of ``a/../a/..`` would otherwise cost some 64 000 steps); a listing, which
resolves every link it shows, shares ``_LIST_STEPS`` among all of them and stops
(truncated) when they run out.

Files are opened for reading with ``O_NONBLOCK | O_NOFOLLOW | O_NOCTTY`` relative to the
verified parent directory and checked with ``fstat`` against the handle that was judged,
so a FIFO or device can neither hang the client nor be read (``open_file`` streams one in
chunks, for ranged reads of files larger than a whole read allows).  A search walks with
``walk_files``: from the resolved start, each folder opened with ``O_NOFOLLOW |
O_DIRECTORY`` relative to its parent's descriptor, entry types taken from the listing
itself, and no symbolic link followed at all.  Writes go to a fresh
temporary file in the same directory that is then renamed over the target (atomic
replace, no half-written files, and the rename replaces a directory entry instead of
writing through a hard link).

Known limits (documented, not fixed)
------------------------------------
* Hard links and bind mounts inside the root cannot be told apart from ordinary files
  and folders: a hard link to a file outside the root, or a bind mount of an outside
  folder, is readable (and a bind mount writable) like anything else in the root.
  Writes replace the directory entry, so they never modify the far end of a hard link.
* A process that can write OUTSIDE the root could move a directory out of the root while
  a walk holds a descriptor on it; the rest of that one walk then happens outside.
  Closing this would need ``openat2(RESOLVE_BENEATH)``, which Python 3.11 does not expose.
* Absolute links are matched against the root's path as known at start-up; after the
  root folder is renamed, absolute links using the new name are refused (safe side).
* Directories nested deeper than ``_MAX_DEPTH`` levels are refused (each level holds a
  file descriptor while it is walked), and so are paths that take more than
  ``_MAX_STEPS`` steps to resolve, although the kernel would follow them.
* A listing reads all the names of each folder it enters before it sorts them, so a
  folder of millions of entries costs memory and time in proportion.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG
from types import TracebackType
from typing import NamedTuple

from schemas.errors import ErrorCode, RpcError

__all__ = [
    "MAX_LINK_FOLLOWS",
    "Entry",
    "FileReader",
    "Sandbox",
    "SandboxError",
    "WalkedFile",
    "WriteResult",
    "split_relative",
]

#: Most symbolic links followed while resolving one path (Linux's own limit is 40 too).
MAX_LINK_FOLLOWS = 40
#: Deepest directory nesting walked; every level holds one descriptor during a walk.
_MAX_DEPTH = 256
#: Longest path accepted, in bytes (Linux PATH_MAX).
_MAX_PATH_BYTES = 4096
#: Most components walked (``..`` included) while resolving one path, links' bodies included.
_MAX_STEPS = 2048
#: Most steps one listing may spend resolving the links it shows (a few seconds at worst).
_LIST_STEPS = 2_000_000
#: Bytes of a walked file shown to a search's ``accept_head`` (where binary files are told apart).
_HEAD_BYTES = 8192
#: Most a whole-file read asks for at once (well below what Linux reads in one call, 2 GiB).
_FIRST_READ_BYTES = 64 * 1024 * 1024
#: A walked file up to this size is read whole at once, before ``accept_head`` sees its start.
_SNIFF_WHOLE_BYTES = 256 * 1024

# O_PATH handles can be fstat'ed and used as dir_fd, but never read: perfect for judging.
_STEP_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a tty never becomes ours.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_MODE = 0o644

# Why an OS error happened, in words for the AI.  Only os.strerror() is used for the
# rest: exception text would carry the absolute file name.
_ERRNO_CODES: dict[int, tuple[ErrorCode, str]] = {
    errno.ENOENT: (ErrorCode.NOT_FOUND, "does not exist"),
    errno.ENOTDIR: (ErrorCode.NOT_A_DIRECTORY, "has a component that is not a directory"),
    errno.EACCES: (ErrorCode.DENIED, "permission denied"),
    errno.EPERM: (ErrorCode.DENIED, "operation not permitted"),
    errno.EROFS: (ErrorCode.DENIED, "is on a read-only file system"),
    errno.ELOOP: (ErrorCode.INVALID_PATH, "is a symbolic link that was not followed"),
    errno.ENAMETOOLONG: (ErrorCode.INVALID_PATH, "has a name that is too long"),
    errno.EISDIR: (ErrorCode.NOT_A_FILE, "is a directory"),
}


class SandboxError(RpcError):
    """A refused or failed sandbox operation.

    The message is meant for the AI: it names the relative path it was given and says
    why, and never holds the absolute root path or any absolute path outside the root.
    """


class Entry(NamedTuple):
    """One row of a directory listing (a named tuple: a listing makes one per entry, and a
    frozen dataclass took twice as long to build)."""

    name: str
    path: str
    is_dir: bool
    size: int | None
    is_symlink: bool = False
    target_outside: bool = False


@dataclass(frozen=True)
class WriteResult:
    """What :meth:`Sandbox.write_file` did."""

    path: str
    bytes_written: int
    created: bool


def split_relative(path: str) -> list[str]:
    """Validate a caller's path and split it into raw components.

    Nothing is normalised: ``..`` and ``.`` are kept (the walk judges them after links
    are resolved); only empty segments from ``a//b`` or a trailing ``/`` are dropped.
    Raises SandboxError(INVALID_PATH) for a non-string, an empty string, NUL bytes, text
    that cannot be a file name or an over-long path, and SandboxError(PATH_OUTSIDE_ROOT)
    for absolute paths.
    """
    if not isinstance(path, str):
        raise SandboxError(ErrorCode.INVALID_PATH, f"{path!r} is not a path: a string is needed")
    if not path:
        raise SandboxError(ErrorCode.INVALID_PATH, "the path is empty; use '.' for the workspace root")
    if "\x00" in path:
        raise SandboxError(ErrorCode.INVALID_PATH, f"{path!r} contains a NUL byte")
    try:
        encoded = os.fsencode(path)
    except UnicodeError:
        # Lone surrogates other than surrogateescape ones cannot be file names.
        raise SandboxError(ErrorCode.INVALID_PATH, f"{path!r} cannot be encoded as a file name") from None
    if len(encoded) >= _MAX_PATH_BYTES:
        raise SandboxError(ErrorCode.INVALID_PATH, f"{path[:64]!r}... is too long")
    if path.startswith("/"):
        raise SandboxError(
            ErrorCode.PATH_OUTSIDE_ROOT,
            f"{path!r} is an absolute path; give a path relative to the workspace root",
        )
    return [part for part in path.split("/") if part]


def _kind(mode: int) -> str:
    """Human name of a file type, for messages."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _os_error(exc: OSError, shown: object, *, label: str | None = None) -> SandboxError:
    """Turn an OSError into a SandboxError naming only the caller's relative path.

    ``label`` replaces the quoted path as the subject of the message.
    """
    code, why = _ERRNO_CODES.get(
        exc.errno or 0, (ErrorCode.IO_ERROR, os.strerror(exc.errno) if exc.errno else "I/O error")
    )
    return SandboxError(code, f"{label if label is not None else repr(shown)}: {why}")


def _outside(shown: object, via: str | None) -> SandboxError:
    if via is None:
        return SandboxError(ErrorCode.PATH_OUTSIDE_ROOT, f"{shown!r} leaves the workspace root")
    where = f"{shown!r}" if via == shown else f"{shown!r}: {via!r}"
    return SandboxError(
        ErrorCode.PATH_OUTSIDE_ROOT, f"{where} is a symbolic link that points outside the workspace root"
    )


def _regular_file(res: _Resolved, path: str) -> None:
    """Refuse with NOT_A_FILE (naming ``path``) unless the walk ended on a regular file."""
    if res.name is None:
        raise SandboxError(ErrorCode.NOT_A_FILE, f"{path!r} is a directory")
    assert res.st is not None  # the walk found something (missing_ok is off)
    if not stat.S_ISREG(res.st.st_mode):
        raise SandboxError(ErrorCode.NOT_A_FILE, f"{path!r} is not a regular file ({_kind(res.st.st_mode)})")


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open_regular(
    dir_fd: int, name: str, shown: str, judged: os.stat_result | None
) -> tuple[int, os.stat_result]:
    """Open ``name`` in ``dir_fd`` for reading: only a regular file, and only ``judged`` if given.

    Without ``judged`` (a walk, which knows the name's type from its folder listing)
    whatever is there now is checked instead.  O_NONBLOCK: a FIFO swapped in cannot
    hang the open.
    """
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a link since it was judged
            raise Sandbox._changed(shown) from None
        raise _os_error(exc, shown) from None
    try:
        st = os.fstat(fd)
        # The name may have been swapped since it was judged: read only the very
        # file we checked, and only if it is (still) a regular file.
        if not stat.S_ISREG(st.st_mode) or (judged is not None and not _same_file(st, judged)):
            raise Sandbox._changed(shown)
    except OSError as exc:
        os.close(fd)
        raise _os_error(exc, shown) from None
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _check_unchanged(dir_fd: int, name: str, shown: str, expect_sha256: str | None) -> None:
    """CONFLICT unless ``name`` holds content with digest ``expect_sha256`` (None: unless it is absent)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if expect_sha256 is None:
            return
        raise SandboxError(
            ErrorCode.CONFLICT, f"{shown!r} was deleted while it was being written: nothing was written"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link was put in its place
            raise SandboxError(
                ErrorCode.CONFLICT, f"{shown!r} changed while it was being written: nothing was written"
            ) from None
        raise
    try:
        if expect_sha256 is None:
            raise SandboxError(
                ErrorCode.CONFLICT,
                f"{shown!r} was created by someone else while it was being written: nothing was written; "
                "read it",
            )
        digest = hashlib.sha256()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            while chunk := os.read(fd, 1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != expect_sha256:
            raise SandboxError(
                ErrorCode.CONFLICT,
                f"{shown!r} changed while it was being written: nothing was written; read it again",
            )
    finally:
        os.close(fd)


def _files_and_folders(dfd: int) -> list[tuple[str, bool]]:
    """(name, is_dir) of the regular files and folders in ``dfd``, sorted; links and the rest left out.

    The types come from the folder listing itself (``d_type``), which never follows a
    link; where the file system does not give them, ``DirEntry`` asks ``lstat``.
    """
    found: list[tuple[str, bool]] = []
    with os.scandir(dfd) as it:
        for entry in it:
            try:
                if entry.is_dir(follow_symlinks=False):
                    found.append((entry.name, True))
                elif entry.is_file(follow_symlinks=False):
                    found.append((entry.name, False))
            except OSError:
                continue  # vanished since it was listed
    found.sort()
    return found


def _read_whole(fd: int, shown: str, size: int, max_bytes: int) -> bytes:
    """The rest of the regular file open on ``fd``, which had ``size`` bytes when it was opened;
    TOO_LARGE (naming ``shown``) past ``max_bytes``, as :meth:`FileReader.read_all` reads it.

    The first read asks for the size and one byte more: when it answers exactly the size,
    the file has not grown and that is all of it, read by one call (not two, the second
    of them with a buffer of a mebibyte).  Any other answer (a file that grew or shrank,
    one whose size says nothing such as a file of ``/proc``, a file system that reads
    less than asked) is read on to its end, as before.
    """
    want = min(max_bytes + 1, size + 1, _FIRST_READ_BYTES)
    try:
        first = os.read(fd, want)
        if len(first) == size < want:
            return first  # all it held, and not a byte more: its end
        return _read_on(fd, first, shown, max_bytes)
    except OSError as exc:
        raise _os_error(exc, shown) from None


def _read_on(fd: int, first: bytes, shown: str, max_bytes: int) -> bytes:
    """``first`` and the rest of the file open on ``fd``, to its end; TOO_LARGE past ``max_bytes``."""
    chunks, total = [first], len(first)
    while total <= max_bytes:
        chunk = os.read(fd, min(max_bytes + 1 - total, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        raise Sandbox._too_large(shown, None, max_bytes)
    return b"".join(chunks)


class FileReader:
    """A regular file open for reading, from :meth:`Sandbox.open_file`; valid inside its ``with``."""

    def __init__(self, fd: int, path: str, size: int, max_bytes: int) -> None:
        self._fd = fd
        self.path = path
        #: The size when it was opened (it may still grow or shrink).
        self.size = size
        self.max_bytes = max_bytes

    def chunks(self, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The content in chunks of at most ``chunk_bytes``; TOO_LARGE past ``max_bytes``."""
        remaining = self.max_bytes + 1  # one byte more tells us it grew past the limit
        while remaining > 0:
            try:
                chunk = os.read(self._fd, min(remaining, chunk_bytes))
            except OSError as exc:
                raise _os_error(exc, self.path) from None
            if not chunk:
                return
            remaining -= len(chunk)
            if remaining <= 0:
                raise Sandbox._too_large(self.path, None, self.max_bytes)
            yield chunk

    def read_all(self) -> bytes:
        """The whole content (what is left of it); TOO_LARGE past ``max_bytes``."""
        return b"".join(self.chunks())

    def identity(self) -> tuple[int, int, int, int, int]:
        """(device, inode, size, mtime and ctime in ns) now: what a cache of this file's digest is keyed by.

        The ctime changes with every write and every ``utime``, and cannot be set back: a file
        rewritten to the same size with its mtime put back is still told apart.
        """
        st = os.fstat(self._fd)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def seek(self, offset: int) -> None:
        """Go on reading from byte ``offset`` (``max_bytes`` then counts from there)."""
        os.lseek(self._fd, offset, os.SEEK_SET)

    def read_at(self, offset: int, size: int) -> bytes:
        """``size`` bytes from byte ``offset`` in one buffer (fewer at the end of the file); TOO_LARGE when
        ``size`` is over ``max_bytes``, which the bytes read are then charged to (a later read of the
        same reader may read only what is left)."""
        if size > self.max_bytes:
            raise Sandbox._too_large(self.path, None, self.max_bytes)
        parts: list[bytes] = []
        got = 0
        try:
            while got < size:
                part = os.pread(self._fd, size - got, offset + got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except OSError as exc:
            raise _os_error(exc, self.path) from None
        self.max_bytes -= got
        return parts[0] if len(parts) == 1 else b"".join(parts)


class WalkedFile:
    """A regular file found by :meth:`Sandbox.walk_files`; readable until the walk moves on."""

    __slots__ = ("_dir_fd", "_judged", "_name", "path")

    def __init__(self, path: str, dir_fd: int, name: str, *, judged: os.stat_result | None = None) -> None:
        #: Relative to the root.
        self.path = path
        self._dir_fd = dir_fd
        self._name = name
        self._judged = judged

    def read(self, max_bytes: int, *, accept_head: Callable[[bytes], bool] | None = None) -> bytes | None:
        """The file's bytes; TOO_LARGE past ``max_bytes``.

        ``accept_head`` is shown the first bytes read (at least 8 KiB, or the whole
        file if smaller); when it says False the rest is not read and None is answered
        (e.g. a binary file that a search skips).
        """
        fd, st = _open_regular(self._dir_fd, self._name, self.path, self._judged)
        try:
            size = st.st_size
            if size > max_bytes:
                raise Sandbox._too_large(self.path, size, max_bytes)
            # Most files are read whole by the first read: their size and one byte more. A
            # large one is sniffed first, so a skipped binary file costs 8 KiB, not all of it.
            want = min(max_bytes + 1, max(size + 1, _HEAD_BYTES))
            if accept_head is not None and want > _SNIFF_WHOLE_BYTES:
                want = _HEAD_BYTES
            first = os.read(fd, want)
            if accept_head is not None and not accept_head(first[:_HEAD_BYTES]):
                return None
            if len(first) < want:
                return first  # a short read of a regular file: its end
            return _read_on(fd, first, self.path, max_bytes)
        except OSError as exc:
            raise _os_error(exc, self.path) from None
        finally:
            os.close(fd)


class _Steps:
    """Walk steps left to a listing, shared by every link it resolves."""

    def __init__(self, left: int) -> None:
        self.left = left


class _OutOfSteps(SandboxError):
    """The listing's shared step budget ran out (not the path's fault)."""


@dataclass
class _Listing:
    """One listing in progress: its rows and what may still be added."""

    limit: int
    recursive: bool
    accept: Callable[[Entry], bool] | None
    steps: _Steps
    hide: Callable[[str, bool], bool] | None = None
    prepare: Callable[[str, list[str]], None] | None = None
    #: Whether the rows are kept in ``out`` (a caller that takes them from ``accept`` need not).
    collect: bool = True
    #: Whether a link's target (its resolved path) may not be described (see :meth:`Sandbox.list_dir`).
    hidden_target: Callable[[str], bool] | None = None
    out: list[Entry] = field(default_factory=list)
    #: Rows added so far.
    count: int = 0

    def add(self, entry: Entry) -> bool:
        """Add a row; False (and nothing added) if the caller's ``accept`` refuses it."""
        if self.accept is not None and not self.accept(entry):
            return False
        self.count += 1
        if self.collect:
            self.out.append(entry)
        return True


class _Resolved:
    """Where a walk ended.  Owns every descriptor it holds; always close() it.

    ``dirs`` are O_PATH descriptors from the root down.  If ``name`` is None the walk
    ended on a directory, ``dirs[-1]``; otherwise it ended on ``name`` inside ``dirs[-1]``
    and ``fd``/``st`` describe it (both None if it does not exist yet; ``fd`` None too when
    ``_walk``'s ``stat_last`` judged it by ``fstatat``).
    """

    def __init__(self, root_fd: int) -> None:
        self.dirs: list[int] = [root_fd]
        self.names: list[str] = []
        self.name: str | None = None
        self.fd: int | None = None
        self.st: os.stat_result | None = None

    @property
    def parent_fd(self) -> int:
        return self.dirs[-1]

    def rel(self, extra: str | None = None) -> str:
        """Root-relative path of the end of the walk (or of ``extra`` inside the last dir)."""
        parts = [*self.names]
        if self.name is not None:
            parts.append(self.name)
        if extra is not None:
            parts.append(extra)
        return "/".join(parts)

    def back_to_root(self) -> None:
        while len(self.dirs) > 1:
            os.close(self.dirs.pop())
        self.names.clear()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        while self.dirs:
            os.close(self.dirs.pop())


class Sandbox:
    """File access confined to one root folder; see the module docstring."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Pin ``root``: resolve its real path and hold an O_PATH descriptor on it for life."""
        given = os.path.abspath(os.fspath(root))
        real = os.path.realpath(given)
        try:
            fd = os.open(real, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SandboxError(ErrorCode.NOT_FOUND, "the workspace root does not exist") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise SandboxError(
                    ErrorCode.NOT_A_DIRECTORY, "the workspace root is not a directory"
                ) from None
            raise _os_error(exc, None, label="the workspace root") from None
        try:
            # The real path was computed before the open: make sure both name one folder.
            if not _same_file(os.fstat(fd), os.stat(real, follow_symlinks=False)):
                raise SandboxError(ErrorCode.IO_ERROR, "the workspace root changed while it was being opened")
        except OSError as exc:
            os.close(fd)
            raise _os_error(exc, None, label="the workspace root") from None
        except BaseException:
            os.close(fd)
            raise
        self.root = Path(real)
        self._fd = fd
        self._lock = threading.Lock()
        # Absolute link targets are accepted under either spelling of the root.
        prefixes = [[p for p in real.split("/") if p]]
        given_parts = [p for p in given.split("/") if p]
        if given_parts != prefixes[0]:
            prefixes.append(given_parts)
        self._prefixes = prefixes

    # -- life cycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Release the root descriptor.  Idempotent."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort for a sandbox that was never closed; never raise from a finaliser.
        with suppress(Exception):
            self.close()

    def _dup_root(self) -> int:
        # Under the lock: a concurrent close() could otherwise let the number be reused by
        # an unrelated open and we would walk from there.
        with self._lock:
            if self._fd < 0:
                raise SandboxError(ErrorCode.IO_ERROR, "the workspace sandbox is closed")
            return os.dup(self._fd)

    # -- the walk -----------------------------------------------------------------------

    def _map_absolute(self, target: str) -> list[str] | None:
        """Components of an absolute link target relative to the root, or None if outside.

        Matching is by whole components ('root-evil' never matches 'root'); '' and '.'
        are skipped in the prefix because they cannot change where a path goes.
        """
        parts = target.split("/")
        for prefix in self._prefixes:
            i = 0
            matched = True
            for want in prefix:
                while i < len(parts) and parts[i] in ("", "."):
                    i += 1
                if i >= len(parts) or parts[i] != want:
                    matched = False
                    break
                i += 1
            if matched:
                return parts[i:]
        return None

    def _walk(
        self,
        shown: object,
        parts: list[str],
        *,
        missing_ok: bool = False,
        created: list[tuple[int, str]] | None = None,
        shared: _Steps | None = None,
        stat_last: bool = False,
    ) -> _Resolved:
        """Resolve ``parts`` inside the root, following links only where they stay inside.

        ``missing_ok``: a missing last component is not an error (for writes).  With
        ``created`` given, missing parent folders are made and recorded there as
        (dup of parent fd, name) so a failed write can remove them again.  ``shared``:
        a listing's step budget, also charged for every step (_OutOfSteps when spent).

        ``stat_last``: a last component that is a regular file is judged by ``fstatat``
        without following links (``res.fd`` stays None) instead of an O_PATH handle and its
        ``fstat``: one system call instead of three, for a caller that opens the file by name
        in ``res.parent_fd`` with O_NOFOLLOW and checks that it opened that very file
        (device and inode: :func:`_open_regular`).  Anything else there (a link, a folder,
        nothing, an error) is judged through a handle, exactly as without it.
        """
        res = _Resolved(self._dup_root())
        # A stack of (component, link it came from); the link is only used in messages.
        pending: list[tuple[str, str | None]] = [(p, None) for p in reversed(parts)]
        follows = 0
        steps = 0
        done = False
        try:
            while pending:
                comp, via = pending.pop()
                if comp in ("", "."):
                    continue
                steps += 1
                if steps > _MAX_STEPS:
                    raise SandboxError(
                        ErrorCode.INVALID_PATH,
                        f"{shown!r} takes more than {_MAX_STEPS} steps to resolve (links within links?)",
                    )
                if shared is not None:
                    shared.left -= 1
                    if shared.left < 0:
                        raise _OutOfSteps(ErrorCode.INVALID_PATH, "the listing ran out of steps")
                if comp == "..":
                    if len(res.dirs) == 1:
                        raise _outside(shown, via)
                    os.close(res.dirs.pop())
                    res.names.pop()
                    continue
                last = not pending
                if last and stat_last:
                    try:
                        st = os.stat(comp, dir_fd=res.parent_fd, follow_symlinks=False)
                    except OSError:
                        pass  # judged below, through a handle: the same answer as ever
                    else:
                        if stat.S_ISREG(st.st_mode):
                            res.name, res.st = comp, st
                            done = True
                            return res
                elif not last:
                    # Most components before the last are plain folders: O_DIRECTORY with O_NOFOLLOW
                    # opens one only if it is a folder itself (a link to one fails, ENOTDIR), so no
                    # fstat is needed to tell.  Anything else is judged below, through a handle.
                    try:
                        folder = os.open(comp, _STEP_FLAGS | os.O_DIRECTORY, dir_fd=res.parent_fd)
                    except OSError:
                        pass
                    else:
                        if len(res.dirs) > _MAX_DEPTH:
                            os.close(folder)
                            raise SandboxError(ErrorCode.INVALID_PATH, f"{shown!r} is nested too deeply")
                        res.dirs.append(folder)
                        res.names.append(comp)
                        continue
                here = res.rel(comp)
                fd = self._step(res.parent_fd, comp, None if last else created)
                if fd is None:
                    if last and missing_ok:
                        res.name = comp
                        done = True
                        return res
                    if via is not None:
                        where = f"{shown!r}" if via == shown else f"{shown!r}: {via!r}"
                        raise SandboxError(
                            ErrorCode.NOT_FOUND, f"{where} is a symbolic link whose target does not exist"
                        )
                    if last:
                        raise SandboxError(ErrorCode.NOT_FOUND, f"{shown!r} does not exist")
                    raise SandboxError(ErrorCode.NOT_FOUND, f"{shown!r}: {here!r} does not exist")
                try:
                    st = os.fstat(fd)
                    if stat.S_ISLNK(st.st_mode):
                        follows += 1
                        if follows > MAX_LINK_FOLLOWS:
                            raise SandboxError(
                                ErrorCode.INVALID_PATH,
                                f"{shown!r}: too many levels of symbolic links (a link loop?)",
                            )
                        # readlinkat(fd, "") reads exactly the link we just fstat'ed.
                        target = os.readlink("", dir_fd=fd)
                        if target.startswith("/"):
                            rest = self._map_absolute(target)
                            if rest is None:
                                raise _outside(shown, here)
                            res.back_to_root()
                        else:
                            rest = target.split("/")
                        pending.extend((p, here) for p in reversed(rest))
                    elif stat.S_ISDIR(st.st_mode):
                        if len(res.dirs) > _MAX_DEPTH:
                            raise SandboxError(ErrorCode.INVALID_PATH, f"{shown!r} is nested too deeply")
                        res.dirs.append(fd)
                        res.names.append(comp)
                        fd = None  # now owned by res
                    elif last:
                        res.name, res.fd, res.st = comp, fd, st
                        fd = None
                        done = True
                        return res
                    else:
                        raise SandboxError(
                            ErrorCode.NOT_A_DIRECTORY, f"{shown!r}: {here!r} is not a directory"
                        )
                finally:
                    if fd is not None:
                        os.close(fd)
            # Every component consumed and the walk stands on a directory.
            res.st = os.fstat(res.parent_fd)
            done = True
            return res
        except OSError as exc:
            raise _os_error(exc, shown) from None
        finally:
            if not done:
                res.close()

    @staticmethod
    def _step(dir_fd: int, comp: str, created: list[tuple[int, str]] | None) -> int | None:
        """O_PATH|O_NOFOLLOW handle on ``comp`` in ``dir_fd``; None if missing.

        With ``created``, a missing component is made a folder first.  Whatever is there
        afterwards (even if someone raced us) is judged by the caller like any component.
        """
        try:
            return os.open(comp, _STEP_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if created is None:
                return None
        try:
            os.mkdir(comp, 0o777, dir_fd=dir_fd)
        except FileExistsError:
            pass
        else:
            created.append((os.dup(dir_fd), comp))
        try:
            return os.open(comp, _STEP_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None

    @contextmanager
    def _resolved(
        self,
        path: str,
        *,
        missing_ok: bool = False,
        created: list[tuple[int, str]] | None = None,
        shared: _Steps | None = None,
    ) -> Iterator[_Resolved]:
        res = self._walk(path, split_relative(path), missing_ok=missing_ok, created=created, shared=shared)
        try:
            yield res
        finally:
            res.close()

    # -- public operations --------------------------------------------------------------

    def resolve(self, path: str, *, must_exist: bool = True) -> str:
        """The in-root relative path ``path`` leads to after links ('' for the root).

        With ``must_exist=False`` the last component may be missing (as for a write).
        """
        with self._resolved(path, missing_ok=not must_exist) as res:
            return res.rel()

    def stat_file(self, path: str) -> os.stat_result:
        """``stat`` of what ``path`` resolves to (a link inside the root is followed)."""
        with self._resolved(path) as res:
            assert res.st is not None  # missing_ok is off: the walk found something
            return res.st

    def read_file(self, path: str, *, max_bytes: int, guard: Callable[[str], None] | None = None) -> bytes:
        """Bytes of the regular file ``path``; more than ``max_bytes`` is TOO_LARGE.

        ``guard`` is called with the resolved relative path before anything is opened;
        it refuses by raising.
        """
        # What open_file and FileReader.read_all do, judged the same way step for step, without
        # their context managers and generator: most reads are of small files, where those
        # were a third of the cost.
        if max_bytes < 0:
            raise SandboxError(ErrorCode.INVALID_PARAMS, "max_bytes must not be negative")
        res = self._walk(path, split_relative(path), stat_last=True)
        try:
            fd, st = self._judged_open(res, path, max_bytes, guard)
        finally:
            res.close()  # the walk's descriptors: the file is open (or refused) now
        try:
            return _read_whole(fd, path, st.st_size, max_bytes)
        finally:
            os.close(fd)

    def _judged_open(
        self, res: _Resolved, path: str, max_bytes: int, guard: Callable[[str], None] | None
    ) -> tuple[int, os.stat_result]:
        """The one judgement of :meth:`read_file` and :meth:`open_file`: ``guard`` on the resolved
        path before anything is opened, a regular file within ``max_bytes``, and only the very
        file that was judged opened (its descriptor and ``fstat``; the caller closes it)."""
        if guard is not None:
            guard(res.rel())
        _regular_file(res, path)
        assert res.name is not None and res.st is not None  # for the type checker: just checked
        if res.st.st_size > max_bytes:
            raise self._too_large(path, res.st.st_size, max_bytes)
        fd, st = _open_regular(res.parent_fd, res.name, path, res.st)
        if st.st_size > max_bytes:
            os.close(fd)
            raise self._too_large(path, st.st_size, max_bytes)
        return fd, st

    @contextmanager
    def open_file(
        self, path: str, *, max_bytes: int, guard: Callable[[str], None] | None = None
    ) -> Iterator[FileReader]:
        """The regular file ``path``, open for reading in chunks (:class:`FileReader`).

        Judged as :meth:`read_file` judges: ``guard`` is called with the resolved
        relative path before anything is opened, only the very regular file that was
        judged is opened, and more than ``max_bytes`` (now, or grown while it is read)
        is TOO_LARGE.
        """
        if max_bytes < 0:
            raise SandboxError(ErrorCode.INVALID_PARAMS, "max_bytes must not be negative")
        with self._resolved(path) as res:
            fd, st = self._judged_open(res, path, max_bytes, guard)
            try:
                yield FileReader(fd, path, st.st_size, max_bytes)
            finally:
                os.close(fd)

    def walk_files(
        self,
        path: str,
        *,
        hide: Callable[[str, bool], bool] | None = None,
        guard: Callable[[str], None] | None = None,
        prepare: Callable[[str, list[str]], None] | None = None,
    ) -> Generator[WalkedFile, None, None]:
        """Every regular file at or below ``path``, for a search.

        ``path`` is resolved like any path (links in it are followed inside the root);
        a regular file yields just itself.  Below a folder the walk goes depth first,
        names sorted in each folder (the order of :meth:`list_dir`), and follows no
        symbolic link at all (as ``grep -r`` and ripgrep): a link to a file or a folder
        is skipped, whatever it points to, so nothing outside the root and nothing
        hidden behind a link is reached.  FIFOs, sockets and devices are skipped and
        never opened.  ``guard`` is called with the resolved relative path of the start
        (as the walk itself resolved it) before anything below it is read; it refuses by
        raising.  ``hide(path, is_dir)`` leaves an entry out, and a hidden folder is not
        entered; ``prepare(folder, names)`` is told the names of each folder before
        ``hide`` is asked about them (as for :meth:`list_dir`).  Folders that cannot be
        read, or nested deeper than ``_MAX_DEPTH``, are skipped.

        The walk holds descriptors while it is suspended: close the generator
        (``contextlib.closing``) when stopping early.  Each :class:`WalkedFile` can be
        read until the walk moves on.
        """
        with self._resolved(path) as res:
            assert res.st is not None  # missing_ok is off: the walk found something
            if guard is not None:
                guard(res.rel())
            if res.name is not None:
                _regular_file(res, path)
                yield WalkedFile(res.rel(), res.parent_fd, res.name, judged=res.st)
                return
            base, depth, want = res.rel(), len(res.dirs), res.st
            try:
                dfd = os.open(".", _DIR_FLAGS, dir_fd=res.parent_fd)
            except OSError as exc:
                raise _os_error(exc, path) from None
        # (name, is_dir) of the folders being walked, from the top down, with their descriptors.
        stack: list[tuple[int, str, Iterator[tuple[str, bool]], int]] = []
        try:
            if not _same_file(os.fstat(dfd), want):
                raise self._changed(path)
            try:
                entries = _files_and_folders(dfd)
            except OSError as exc:
                raise _os_error(exc, path) from None
            if prepare is not None and entries:
                prepare(base, [name for name, _ in entries])
            stack.append((dfd, base, iter(entries), depth))
            while stack:
                fd, prefix, names, level = stack[-1]
                item = next(names, None)
                if item is None:
                    stack.pop()
                    if fd != dfd:
                        os.close(fd)
                    continue
                name, is_dir = item
                rel = f"{prefix}/{name}" if prefix else name
                if hide is not None and hide(rel, is_dir):
                    continue
                if not is_dir:
                    yield WalkedFile(rel, fd, name)
                    continue
                if level >= _MAX_DEPTH:
                    continue
                try:
                    # O_NOFOLLOW | O_DIRECTORY: a folder swapped for a link since the listing fails here.
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # vanished, swapped for a link or a file, or unreadable
                try:
                    entries = _files_and_folders(child)
                except OSError:
                    os.close(child)
                    continue
                stack.append((child, rel, iter(entries), level + 1))
                if prepare is not None and entries:
                    prepare(rel, [name for name, _ in entries])
        finally:
            for fd, *_ in stack:
                if fd != dfd:
                    os.close(fd)
            os.close(dfd)

    @staticmethod
    def _changed(path: str) -> SandboxError:
        return SandboxError(ErrorCode.IO_ERROR, f"{path!r} changed while it was being opened; try again")

    @staticmethod
    def _too_large(path: str, size: int | None, max_bytes: int) -> SandboxError:
        what = f"{size} bytes" if size is not None else "larger"
        return SandboxError(
            ErrorCode.TOO_LARGE, f"{path!r} is too large ({what}; the limit is {max_bytes} bytes)"
        )

    def list_dir(
        self,
        path: str,
        *,
        recursive: bool,
        max_entries: int,
        accept: Callable[[Entry], bool] | None = None,
        hide: Callable[[str, bool], bool] | None = None,
        prepare: Callable[[str, list[str]], None] | None = None,
        collect: bool = True,
        hidden_target: Callable[[str], bool] | None = None,
    ) -> tuple[list[Entry], bool]:
        """List a directory: (entries, truncated).

        Entries are sorted by name within each directory; ``recursive`` walks depth first
        in pre-order (a folder's row, then its contents).  Symbolic links are reported,
        never descended.  At most ``max_entries`` rows are returned; ``truncated`` says
        whether anything was left out.  ``accept`` is asked about each row before it is
        added; False stops the listing there (truncated), e.g. when an answer is full.
        The listing also stops when resolving its links has used ``_LIST_STEPS`` steps.
        ``hide(path, is_dir)`` leaves a row out (and a hidden folder is not entered);
        ``prepare(folder, names)`` is told the names of each folder (``folder`` as the
        rows' paths start) before ``hide`` is asked about them, for a ``hide`` that judges
        them faster together.  Rows that cannot be examined (a folder that may be read
        but not searched) are left out.  Without ``collect`` no entry is returned (a
        caller that keeps what ``accept`` is shown spares a list of them all).
        ``hidden_target(resolved_path)`` True: a link leading there is listed as one whose
        target is outside (no type, no size), as a dangling one is, so that links cannot
        tell whether a hidden path exists, what it is or how large.
        """
        with self._resolved(path) as res:
            if res.name is not None:
                assert res.st is not None
                raise SandboxError(
                    ErrorCode.NOT_A_DIRECTORY, f"{path!r} is not a directory ({_kind(res.st.st_mode)})"
                )
            assert res.st is not None
            base, depth, want = res.rel(), len(res.dirs), res.st
            try:
                # Re-open the very directory we judged ('.' of its O_PATH handle) for reading.
                dfd = os.open(".", _DIR_FLAGS, dir_fd=res.parent_fd)
            except OSError as exc:
                raise _os_error(exc, path) from None
        try:
            if not _same_file(os.fstat(dfd), want):
                raise self._changed(path)
            listing = _Listing(
                max(0, max_entries),
                recursive,
                accept,
                _Steps(_LIST_STEPS),
                hide,
                prepare,
                collect,
                hidden_target,
            )
            truncated = self._list_into(dfd, base, depth, listing)
            return listing.out, truncated
        except OSError as exc:
            raise _os_error(exc, path) from None
        finally:
            os.close(dfd)

    def _list_into(self, dfd: int, prefix: str, depth: int, listing: _Listing) -> bool:
        """Append the rows of directory ``dfd`` (at ``prefix``) to the listing; True if truncated."""
        with os.scandir(dfd) as it:
            entries = sorted(it, key=_entry_name)
        out, limit, hide, accept = listing.out, listing.limit, listing.hide, listing.accept
        collect = listing.collect
        if listing.prepare is not None and entries:
            listing.prepare(prefix, [entry.name for entry in entries])
        for entry in entries:
            if listing.count >= limit:
                return True
            name = entry.name
            rel = f"{prefix}/{name}" if prefix else name
            try:
                # An entry of a listing of a descriptor stats relative to it, without following
                # a link: fstatat(dfd, name, AT_SYMLINK_NOFOLLOW), made now (not a cached d_type).
                st = entry.stat(follow_symlinks=False)
            except (FileNotFoundError, PermissionError):
                continue  # vanished since it was listed, or in a folder we may read but not search
            mode = st.st_mode
            is_dir = S_ISDIR(mode)
            if hide is not None and hide(rel, is_dir):
                continue
            if S_ISLNK(mode):
                row = self._link_entry(name, rel, listing.steps, listing.hidden_target)
                if row is None or not listing.add(row):
                    return True  # out of steps or of room: the listing is incomplete
                continue
            row = Entry(name, rel, is_dir, st.st_size if S_ISREG(mode) else None)
            if accept is not None and not accept(row):
                return True
            listing.count += 1
            if collect:
                out.append(row)
            if not (is_dir and listing.recursive):
                continue
            if depth >= _MAX_DEPTH:
                return True  # too deep to walk: say the listing is incomplete
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES):
                    continue  # vanished, swapped for a link/file, or unreadable: don't descend
                raise
            try:
                if not _same_file(os.fstat(child), st):
                    continue  # swapped since the stat: it is not the folder we reported
                if self._list_into(child, rel, depth + 1, listing):
                    return True
            finally:
                os.close(child)
        return False

    def _link_entry(
        self, name: str, rel: str, steps: _Steps, hidden_target: Callable[[str], bool] | None = None
    ) -> Entry | None:
        """A listing row for a link, judged by resolving it inside the sandbox.

        None when the listing's step budget ran out before the link could be judged.
        A link whose target ``hidden_target`` refuses is described as one that leaves the root.
        """
        outside = Entry(name=name, path=rel, is_dir=False, size=None, is_symlink=True, target_outside=True)
        try:
            with self._resolved(rel, shared=steps) as res:
                assert res.st is not None
                if hidden_target is not None and hidden_target(res.rel()):
                    return outside
                is_dir = res.name is None
                size = res.st.st_size if not is_dir and stat.S_ISREG(res.st.st_mode) else None
                return Entry(name=name, path=rel, is_dir=is_dir, size=size, is_symlink=True)
        except _OutOfSteps:
            return None
        except SandboxError:
            # Leaves the root, dangles or loops: say so, reveal nothing about the target.
            return outside

    def write_file(
        self,
        path: str,
        data: bytes,
        *,
        create_parents: bool = True,
        guard: Callable[[str], None] | None = None,
        expect_sha256: str | None = None,
        expect_absent: bool = False,
    ) -> WriteResult:
        """Atomically replace (or create) the regular file ``path`` with ``data``.

        A link inside the root is written through (the link stays a link); missing parent
        folders are created inside the root when ``create_parents``.  The existing file's
        permission bits are kept (new files get 0o644).  ``guard`` is called with the
        resolved relative path before anything is written; it refuses by raising.

        ``expect_sha256`` (the file must still hold content with that digest) and
        ``expect_absent`` (there must still be no file) are checked at the last moment,
        after the new content is on disk and just before the rename: a change made by
        someone else meanwhile is CONFLICT and nothing is replaced.  (Without a lock the
        file system cannot compare and rename in one step; what is left is the time
        between that check and the rename.)
        """
        split_relative(path)  # validate first: '/' is outside the root before it is a folder
        if path.endswith("/"):
            raise SandboxError(ErrorCode.INVALID_PATH, f"{path!r} ends with '/': a file name is needed")
        created: list[tuple[int, str]] = []
        ok = False
        try:
            with self._resolved(path, missing_ok=True, created=created if create_parents else None) as res:
                if res.name is None:
                    raise SandboxError(ErrorCode.NOT_A_FILE, f"{path!r} is a directory")
                if guard is not None:
                    guard(res.rel())
                existed = res.st is not None
                mode = _NEW_FILE_MODE
                if res.st is not None:
                    if not stat.S_ISREG(res.st.st_mode):
                        raise SandboxError(
                            ErrorCode.NOT_A_FILE, f"{path!r} is not a regular file ({_kind(res.st.st_mode)})"
                        )
                    # Keep rwx bits only: replaced content must not inherit setuid/setgid.
                    mode = res.st.st_mode & 0o777
                try:
                    if existed and not os.access(
                        res.name, os.W_OK, dir_fd=res.parent_fd, effective_ids=True, follow_symlinks=False
                    ):
                        # rename() would bypass a read-only file's mode: honour it instead
                        # (as open() would: effective ids; root may still write).
                        raise SandboxError(ErrorCode.DENIED, f"{path!r} is read-only")
                    check = None
                    if expect_sha256 is not None or expect_absent:
                        parent_fd, name = res.parent_fd, res.name

                        def check() -> None:
                            _check_unchanged(parent_fd, name, path, expect_sha256)

                    written = self._replace(res.parent_fd, res.name, data, mode, res.st, check)
                except OSError as exc:
                    raise _os_error(exc, path) from None
                ok = True
                return WriteResult(path=res.rel(), bytes_written=written, created=not existed)
        finally:
            for dir_fd, name in reversed(created):
                if not ok:
                    # Folders made for a write that failed: remove them if still empty.
                    with suppress(OSError):
                        os.rmdir(name, dir_fd=dir_fd)
                os.close(dir_fd)

    def remove_file(self, path: str) -> None:
        """Delete the regular file ``path`` (its directory entry; a link in the root is followed)."""
        with self._resolved(path) as res:
            _regular_file(res, path)
            assert res.name is not None and res.st is not None  # for the type checker: just checked
            try:
                os.unlink(res.name, dir_fd=res.parent_fd)
            except OSError as exc:
                raise _os_error(exc, path) from None

    @staticmethod
    def _replace(
        dir_fd: int,
        name: str,
        data: bytes,
        mode: int,
        old: os.stat_result | None,
        before_rename: Callable[[], None] | None = None,
    ) -> int:
        """Write a temp file beside ``name`` and rename it over ``name``; clean up on failure.

        ``before_rename`` may refuse (by raising) once the new content is on disk.
        """
        stem = name
        while len(os.fsencode(stem)) > 200:  # leave room for the decoration within NAME_MAX
            stem = stem[:-1]
        for _ in range(100):
            tmp = f".{stem}.aihub-{secrets.token_hex(4)}.tmp"
            try:
                fd = os.open(tmp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
                break
            except FileExistsError:
                continue
        else:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        placed = False
        try:
            try:
                view = memoryview(data).cast("B")
                done = 0
                while done < len(view):
                    done += os.write(fd, view[done:])
                os.fchmod(fd, mode)
                if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                    with suppress(OSError):  # keep the owner when we may (e.g. running as root)
                        os.fchown(fd, old.st_uid, old.st_gid)
                os.fsync(fd)
            finally:
                os.close(fd)
            if before_rename is not None:
                before_rename()
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            placed = True
        finally:
            if not placed:
                with suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
        # Make the rename itself durable (some file systems cannot fsync a folder: EINVAL).
        dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            os.fsync(dfd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        finally:
            os.close(dfd)
        return done
