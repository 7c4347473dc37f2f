"""The file tools: list_files, read_files, write_file, edit_file, on top of the sandbox.

(search_files lives in :mod:`rpc_client.search`.)

Each function is synchronous (the dispatcher runs it in a worker thread so a
large read never holds up other requests), takes validated params and returns
the result model's fields as a dict, or raises :class:`RpcError`.

Every answer must be sendable as one WebSocket text frame under the hub's limit:

* No lone surrogates.  A file name that is not UTF-8 reaches Python as text with
  surrogate escapes (``b"caf\\xe9"`` is ``"caf\\udce9"``), which no UTF-8 frame can carry
  (the client's socket broke on it).  Such names are shown with the bad bytes
  written as ``\\xNN`` and the listing row says ``"not_utf8": true``; such a path
  cannot be named back through the hub.
* Bounded size.  A listing stops (``truncated``) when its rows reach the answer
  budget; a read charges each path as well as each content to the budget, and error
  messages are shortened in the middle (they quote the caller's path, maybe twice).
"""

from __future__ import annotations

import base64
import bisect
import collections
import difflib
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring as _encode_string  # what json.dumps writes a string as
from typing import Any

from rpc_client.checkpoints import Checkpoints
from rpc_client.ignore import IgnoreRules, project_gitignore, walk_filter
from rpc_client.ignore import lexical_path as _lexical
from rpc_client.sandbox import Entry, FileReader, Sandbox, SandboxError
from schemas.errors import ErrorCode, RpcError
from schemas.tools import EditFileParams, ListFilesParams, ReadFilesParams, WriteFileParams

MiB = 1024 * 1024
#: Held from a write's first read to its rename, so two writes of this client (an edit and
#: another edit, a write, an undo) never interleave: the second sees what the first left.
WRITES = threading.Lock()
#: Longest error message kept per path in a read_files answer, and for its summary.
MAX_MESSAGE_CHARS = 1000
MAX_SUMMARY_CHARS = 4000


@dataclass(frozen=True)
class FileLimits:
    """Caps that keep one answer well below the hub's frame limit (16 MiB)."""

    max_file_bytes: int = 8 * MiB
    max_answer_bytes: int = 8 * MiB
    max_write_bytes: int = 8 * MiB
    #: Largest previous content a write checkpoints (a larger file is not overwritten).
    max_checkpoint_bytes: int = 64 * MiB
    #: Largest file a ranged read (offset/limit) streams through, hashing all of it; and the
    #: most one read_files call streams in all (100 paths to one such file took minutes).
    max_ranged_file_bytes: int = 1024 * MiB
    #: Files larger than this are skipped by search_files (counted in skipped_too_large).
    max_search_file_bytes: int = 16 * MiB
    #: A search stops (truncated, timed_out) after this long: well within the hub's 30 s.
    search_seconds: float = 20.0
    #: So does a listing (a tree of millions of ignored files is walked, not answered).
    list_seconds: float = 20.0
    #: Longest diff an edit_file answer carries; the rest is cut with a marker.
    max_diff_chars: int = 32_000


def _wire(text: str) -> str:
    """``text`` as it can travel in UTF-8: undecodable bytes become ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name has
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_size(value: object) -> int:
    """Bytes ``value`` takes in the answer frame (compact JSON, UTF-8)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


#: The bytes JSON writes as a two-character escape (a newline as backslash and n, a quote as
#: backslash and quote ...), and the other control characters, which it writes as six (\u001b).
_SHORT_ESCAPES = b'\b\f\n\r\t"\\'
_LONG_ESCAPES = bytes(c for c in range(0x20) if c not in _SHORT_ESCAPES)
_ESCAPES = _SHORT_ESCAPES + _LONG_ESCAPES


def _content_size(content: str, data: bytes, newlines: int | None = None) -> int:
    """``_json_size(content)`` for the text ``content`` decoded (strictly) from the UTF-8 ``data``.

    Counted on the bytes instead of encoding the text twice (a page of a large file is
    megabytes): JSON keeps each character as it is but the ones it escapes, all of them
    ASCII, so one byte each in ``data``. ``newlines``, the exact number of newlines in ``data``
    when the caller knows it, saves counting them.
    """
    if len(data) < 4096:
        return _text_cost(content)  # small: as fast either way (what _json_size says of a string)
    if newlines is None:
        newlines = data.count(b"\n")
    escaped = len(data) - len(data.translate(None, _ESCAPES))
    if escaped == newlines:  # the usual text: newlines are all it escapes
        return len(data) + 2 + newlines
    long = len(data) - len(data.translate(None, _LONG_ESCAPES))
    return len(data) + 2 + (escaped - long) + 5 * long


def _shorten(message: str, limit: int) -> str:
    """``message`` cut in the middle to at most about ``limit`` characters; the ends are kept."""
    if len(message) <= limit:
        return message
    keep = max(0, (limit - 40) // 2)
    return f"{message[:keep]} [... {len(message) - 2 * keep} characters cut ...] {message[-keep:]}"


def _row(entry: Entry) -> dict[str, Any]:
    return _row_and_cost(entry)[0]


def _text_cost(text: str) -> int:
    """Bytes ``text`` (with no lone surrogate) takes as a JSON string in the answer frame."""
    encoded = _encode_string(text)
    return len(encoded) if encoded.isascii() else len(encoded.encode("utf-8"))


#: Bytes of a listing row's keys and punctuation: ``{"name":,"is_dir":,"path":,"size":}``.
_ROW_FRAME = len('{"name":,"is_dir":,"path":,"size":}')
#: Bytes each optional flag adds (``,"is_symlink":true`` ...).
_FLAG_COST = {flag: len(f',"{flag}":true') for flag in ("is_symlink", "target_outside", "not_utf8")}


def _row_and_cost(entry: Entry) -> tuple[dict[str, Any], int]:
    """A listing row and the bytes it takes in the answer (its compact JSON and a comma).

    The cost is counted from the parts (exactly what ``_json_size(row) + 1`` says, without
    encoding each row a first time only to measure it).
    """
    name, path, is_dir, size, is_symlink, target_outside = entry
    if name.isascii() and path.isascii():  # no surrogate escape, and one byte a character
        cost = len(_encode_string(name)) + len(_encode_string(path))
        wired = False
    else:
        name, path = _wire(name), _wire(path)
        cost = _text_cost(name) + _text_cost(path)
        wired = path != entry.path
    row: dict[str, Any] = {"name": name, "is_dir": is_dir, "path": path, "size": size}
    cost += _ROW_FRAME + 1 + (4 if is_dir else 5) + (4 if size is None else len(str(size)))
    if is_symlink:
        row["is_symlink"] = True
        cost += _FLAG_COST["is_symlink"]
        if target_outside:
            row["target_outside"] = True
            cost += _FLAG_COST["target_outside"]
    if wired:
        row["not_utf8"] = True
        cost += _FLAG_COST["not_utf8"]
    return row, cost


class _OutOfTime(Exception):
    """The listing's time is up, or its request was withdrawn."""


def list_files(
    sandbox: Sandbox,
    params: ListFilesParams,
    limits: FileLimits | None = None,
    rules: IgnoreRules | None = None,
    *,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """The listing, cut short (``truncated``) when its rows would pass the answer budget, and
    (``truncated`` and ``timed_out``) after ``limits.list_seconds`` or when ``stop()`` says so."""
    rows: list[dict[str, Any]] = []
    limits = limits or FileLimits()
    budget = limits.max_answer_bytes
    deadline = time.monotonic() + limits.list_seconds

    def check_time() -> None:
        if time.monotonic() > deadline or (stop is not None and stop()):
            raise _OutOfTime

    def accept(entry: Entry) -> bool:
        nonlocal budget
        if len(rows) % 256 == 0:
            check_time()
        row, cost = _row_and_cost(entry)  # its JSON and a comma
        if cost > budget:
            return False
        budget -= cost
        rows.append(row)
        return True

    respect = params.recursive if params.respect_gitignore is None else params.respect_gitignore
    gitignore = project_gitignore(sandbox, rules) if respect else None

    hide = walk_filter(rules, gitignore)  # rules.hidden(), then gitignore.ignored()

    def prepare(folder: str, names: list[str]) -> None:  # once per folder
        check_time()
        if hide is not None:
            hide.prepare(folder, names)

    judged = 0

    def hide_in_time(rel: str, is_dir: bool) -> bool:  # hidden entries are never accepted
        nonlocal judged
        judged += 1
        if judged % 1024 == 0:
            check_time()
        return hide is not None and hide(rel, is_dir)

    if rules is not None:
        rules.check_read(params.path, _lexical(params.path))  # before the file system: no probing
        rules.check_read(params.path, sandbox.resolve(params.path))
    try:
        _, truncated = sandbox.list_dir(
            params.path,
            recursive=params.recursive,
            max_entries=params.max_entries,
            accept=accept,
            hide=None if hide is None else hide_in_time,
            prepare=prepare,
            collect=False,  # the rows are in `rows`
            # A link to a secret is listed as one leading outside: neither its type nor its size, nor
            # whether it exists (a link to a hidden path that does not exist dangles, so looks the same).
            hidden_target=None
            if rules is None
            else rules.hidden_either,  # rules.hidden(rel) or rules.hidden(rel, is_dir=True)
        )
    except _OutOfTime:
        return {"files": rows, "truncated": True, "timed_out": True}
    return {"files": rows, "truncated": truncated}


def _decode(path: str, data: bytes, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RpcError(
            ErrorCode.NOT_TEXT,
            f"{path!r} is not UTF-8 text (a binary file?); read it with encoding='base64'",
        ) from None


def count_lines(data: bytes) -> int:
    """Lines in ``data``: its newlines, and one more for a last line without one."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _too_large_hint(exc: RpcError) -> RpcError:
    if exc.code != ErrorCode.TOO_LARGE:
        return exc
    return RpcError(exc.code, f"{exc.message}; read it in pages of lines with offset and limit", exc.data)


def _too_many_lines(path: str, budget: int) -> RpcError:
    return RpcError(
        ErrorCode.TOO_LARGE,
        f"the lines asked of {path!r} do not fit in this answer (over {budget} bytes): ask fewer lines (a smaller "
        "limit)",
    )


def _read_lines(
    sandbox: Sandbox,
    path: str,
    first: int,
    count: int | None,
    *,
    max_file_bytes: int,
    budget: int,
    guard: Callable[[str], None] | None,
    streamed: Callable[[int], None] | None = None,
) -> tuple[bytes, str, int]:
    """Lines ``first`` to ``first + count - 1`` of ``path`` (1-based; to the end when ``count`` is None),
    the sha256 of the whole file and its number of lines.

    The file is streamed in chunks, so it may be far larger than a whole-file read
    allows (up to ``max_file_bytes``); only the lines asked for are kept, and more
    than ``budget`` bytes of them is TOO_LARGE. ``streamed`` is told the size of each chunk read.
    A file paged before (and unchanged) is not streamed again: its index says which bytes
    hold the lines asked, and only those are read (:func:`_indexed_page`).
    """
    last = None if count is None else first + count - 1
    with sandbox.open_file(path, max_bytes=max_file_bytes, guard=guard) as reader:
        identity = reader.identity()
        with _LINE_INDEX_LOCK:  # reads run in worker threads
            known = _LINE_INDEX.get(identity)
            if known is not None:
                _LINE_INDEX.move_to_end(identity)
        if known is not None:
            page = _indexed_page(reader, path, first, last, known, budget, streamed)
            if page is not None:
                return page, known[0], known[1]
            with _LINE_INDEX_LOCK:  # it changed without its identity changing: read it afresh
                _LINE_INDEX.pop(identity, None)
            reader.seek(0)
        digest = hashlib.sha256()
        picked: list[bytes] = []
        kept = 0
        line = 1  # the number of the line the next byte belongs to
        tail_newline = True  # whether the bytes read so far end with a newline (none read: no open line)
        # (line, byte offset) at the start of each chunk: where a later page can start reading.
        index: list[tuple[int, int]] = []
        offset = 0
        for chunk in reader.chunks():
            if streamed is not None:
                streamed(len(chunk))
            index.append((line, offset))
            offset += len(chunk)
            digest.update(chunk)
            tail_newline = chunk.endswith(b"\n")
            pos, size = 0, len(chunk)
            if line < first:
                newlines = chunk.count(b"\n")
                if line + newlines < first:
                    line += newlines
                    continue
                pos = _after_newlines(chunk, 0, first - line)  # the first line wanted starts in this chunk
                line = first
            newlines = chunk.count(b"\n", pos)
            if last is not None and line > last:
                line += newlines
                continue
            end = size
            if last is not None and line + newlines > last:  # the last line wanted ends in this chunk
                end = _after_newlines(chunk, pos, last - line + 1)
            line += newlines

            kept += end - pos
            if kept > budget:
                raise _too_many_lines(path, budget)
            picked.append(chunk[pos:end])
    total = line - 1 + (0 if tail_newline else 1)
    with _LINE_INDEX_LOCK:
        _LINE_INDEX[identity] = (digest.hexdigest(), total, index)
        while len(_LINE_INDEX) > LINE_INDEX_FILES:
            _LINE_INDEX.popitem(last=False)
    return b"".join(picked), digest.hexdigest(), total


def _after_newlines(data: bytes, start: int, n: int, stop: int | None = None) -> int:
    """The position just past the ``n``-th newline (``n`` >= 1) in ``data[start:stop]``; ValueError if fewer.

    Halves the span by counting (C speed) while many newlines are left, then steps line by
    line: a chunk of short lines holds a great many.
    """
    lo, hi = start, len(data) if stop is None else stop
    while n > 16 and hi - lo > 4096:
        mid = (lo + hi) // 2
        newlines = data.count(b"\n", lo, mid)
        if newlines >= n:
            hi = mid
        else:
            n -= newlines
            lo = mid
    pos = lo
    for _ in range(n):
        pos = data.index(b"\n", pos, hi) + 1
    return pos


def _indexed_page(
    reader: FileReader,
    path: str,
    first: int,
    last: int | None,
    known: tuple[str, int, list[tuple[int, int]]],
    budget: int,
    streamed: Callable[[int], None] | None,
) -> bytes | None:
    """Lines ``first`` to ``last`` of a file paged before, read in one go from where its index says they are.

    None if the bytes no longer hold the lines the index says (the file changed without its
    size or time changing): the caller reads it afresh. What is answered holds exactly the
    lines asked (their newlines are counted), so the caller's newline count is exact.
    """
    _, total, index = known
    if first > total or not index:
        return b""
    last = total if last is None else min(last, total)
    if last < first:
        return b""

    # The chunk the first line starts in (the last one that starts before it), and the first
    # chunk past the last line: between them, every byte asked for.
    i = max(0, bisect.bisect_left(index, (first, -1)) - 1)
    k = bisect.bisect_right(index, (last, sys.maxsize))
    line, begin = index[i]
    end = index[k][1] if k < len(index) else reader.size
    if i + 1 < k - 1 and index[k - 1][1] - index[i + 1][1] > budget:  # the chunks between are all kept
        raise _too_many_lines(path, budget)
    data = reader.read_at(begin, end - begin)
    if streamed is not None:
        streamed(len(data))
    if len(data) != end - begin:
        return None
    try:
        # Line `first` starts at the latest where the next chunk does.
        bound = index[i + 1][1] - begin if i + 1 < len(index) else None
        start = 0 if first == line else _after_newlines(data, 0, first - line, bound)
        stop = len(data)
        if last < total:  # the last line asked ends with a newline in the last chunk read
            tail_line, tail = index[k - 1]
            stop = _after_newlines(data, max(start, tail - begin), last - max(tail_line, first) + 1)
    except ValueError:
        return None
    lines = last - first + 1
    ends = stop > start and data[stop - 1] == 0x0A  # or it is the file's last line, which has no newline
    whole = ends or (last == total and stop == len(data))
    if not whole or data.count(b"\n", start, stop) != (lines if ends else lines - 1):
        return None  # the index is stale: its line numbers do not match these bytes
    if stop - start > budget:
        raise _too_many_lines(path, budget)
    return data[start:stop]


#: Files paged recently: their digest, line count and where each 1 MiB chunk starts, keyed by
#: (device, inode, size, mtime, ctime). Paging through a large file then reads only each page,
#: not the whole file again for its digest. (A file rewritten to the same size within the
#: file system's time resolution would keep a stale digest: a later expected_sha256 would then
#: conflict, never overwrite; a page whose bytes no longer hold the lines the index says is
#: read afresh.)
LINE_INDEX_FILES = 16
_LINE_INDEX_LOCK = threading.Lock()

_LINE_INDEX: collections.OrderedDict[
    tuple[int, int, int, int, int], tuple[str, int, list[tuple[int, int]]]
] = collections.OrderedDict()


def read_files(
    sandbox: Sandbox, params: ReadFilesParams, limits: FileLimits, rules: IgnoreRules | None = None
) -> dict[str, Any]:
    """Read every file it can; the failures are reported together with what was read.

    The answer budget counts the JSON-encoded size of each content and of its path,
    since a file (or a name) of control characters grows six-fold when escaped.  The
    failures are not charged but are bounded: a path of at most 4 KB and a message
    shortened to ``MAX_MESSAGE_CHARS`` each.

    With ``offset`` or ``limit`` each content holds only those lines, read by
    streaming the file (so a file over ``max_file_bytes`` can be read in pages);
    ``sha256`` and ``total_lines`` are always of the whole file.
    """
    files: dict[str, str] = {}
    digests: dict[str, str] = {}
    line_counts: dict[str, int] = {}
    errors: dict[str, str] = {}
    budget = limits.max_answer_bytes
    ranged = params.offset is not None or params.limit is not None
    stream_left = limits.max_ranged_file_bytes  # for the whole call: each path may name one huge file

    def streamed(size: int) -> None:
        nonlocal stream_left
        stream_left -= size

    for path in dict.fromkeys(params.files):  # each path once, in the caller's order
        key = _wire(path)
        try:
            if rules is not None:
                # Judged before the file system is touched: a hidden path that does not exist
                # answers like one that does, so the AI cannot probe for secrets.
                rules.check_read(path, _lexical(path))
            guard = None if rules is None else (lambda rel, shown=path: rules.check_read(shown, rel))
            if ranged:
                cap = max(0, stream_left)
                try:
                    data, digest, total = _read_lines(
                        sandbox,
                        path,
                        params.offset or 1,
                        params.limit,
                        max_file_bytes=cap,
                        budget=budget,
                        guard=guard,
                        streamed=streamed,
                    )
                except RpcError as exc:
                    if exc.code != ErrorCode.TOO_LARGE or cap >= limits.max_ranged_file_bytes:
                        raise
                    raise RpcError(
                        ErrorCode.TOO_LARGE,
                        f"{path!r} does not fit in what this call may still read ({cap} of "
                        f"{limits.max_ranged_file_bytes} bytes, the rest went to the files before it): read it "
                        "in a call of its own",
                    ) from None
            else:
                try:
                    data = sandbox.read_file(path, max_bytes=limits.max_file_bytes, guard=guard)
                except RpcError as exc:
                    raise _too_large_hint(exc) from None
                digest, total = hashlib.sha256(data).hexdigest(), count_lines(data)
            content = _decode(path, data, params.encoding)
            if params.encoding == "base64":
                encoded = len(content) + 2  # ASCII that JSON does not escape
            else:
                # The lines `data` holds are known: all of them, or the page's; each ends with a
                # newline but a last line that has none.
                first = params.offset or 1
                last = total if params.limit is None else min(total, first + params.limit - 1)
                lines = max(0, last - first + 1) if ranged else total

                encoded = _content_size(
                    content, data, lines - (1 if data and not data.endswith(b"\n") else 0)
                )
            cost = encoded + _text_cost(key)  # `key` has no lone surrogate (_wire)
            if cost > budget:
                hint = "ask fewer lines (a smaller limit)" if ranged else "read it in a call of its own"
                raise RpcError(
                    ErrorCode.TOO_LARGE,
                    f"{path!r} does not fit in this answer ({cost} bytes encoded, {budget} left of "
                    f"{limits.max_answer_bytes}); {hint}, or in pages of lines with offset and limit",
                )
            budget -= cost
            files[key] = content
            digests[key] = digest
            line_counts[key] = total
        except RpcError as exc:  # SandboxError is an RpcError
            errors[key] = _shorten(exc.message, MAX_MESSAGE_CHARS)
    if errors:
        failed = "; ".join(message for message in errors.values())
        raise RpcError(
            ErrorCode.PARTIAL_FAILURE,
            _shorten(
                f"could not read {len(errors)} of {len(params.files)} file(s): {failed}", MAX_SUMMARY_CHARS
            ),
            {"files": files, "sha256": digests, "total_lines": line_counts, "errors": errors},
        )
    return {"files": files, "sha256": digests, "total_lines": line_counts}


def write_file(
    sandbox: Sandbox,
    params: WriteFileParams,
    limits: FileLimits,
    rules: IgnoreRules | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[str, Any]:
    """Check, checkpoint, then atomically replace the file."""
    data = params.content.encode("utf-8")
    if len(data) > limits.max_write_bytes:
        raise RpcError(
            ErrorCode.TOO_LARGE,
            f"content for {params.path!r} is {len(data)} bytes; the limit is {limits.max_write_bytes}",
        )
    with WRITES:
        return _write_bytes(sandbox, params.path, data, params.expected_sha256, limits, rules, checkpoints)


def _write_bytes(
    sandbox: Sandbox,
    path: str,
    data: bytes,
    expected_sha256: str | None,
    limits: FileLimits,
    rules: IgnoreRules | None,
    checkpoints: Checkpoints | None,
) -> dict[str, Any]:
    """What write_file and edit_file share: check, checkpoint, then atomically replace.

    The previous content is read (and compared with ``expected_sha256``) at the
    path the write resolves to, so a checkpoint always holds what the write
    replaced.
    """
    guard = None if rules is None else (lambda rel: rules.check_write(path, rel))
    if guard is not None:
        guard(_lexical(path))
    try:
        target: str | None = sandbox.resolve(path, must_exist=False)
    except SandboxError as exc:
        if exc.code != ErrorCode.NOT_FOUND:
            raise
        target = None  # a parent folder is missing: the file is new, the write makes its folders
    previous: bytes | None = None
    known = target is None  # whether `previous` is what the file holds now (None: no file)
    if target is not None:
        if guard is not None:
            guard(target)
        if checkpoints is not None or expected_sha256 is not None:
            known = True
            try:
                previous = sandbox.read_file(target, max_bytes=limits.max_checkpoint_bytes)
            except SandboxError as exc:
                if exc.code != ErrorCode.NOT_FOUND:
                    raise
    if expected_sha256 is not None and (
        previous is None or hashlib.sha256(previous).hexdigest() != expected_sha256
    ):
        raise RpcError(
            ErrorCode.CONFLICT,
            f"{path!r} changed since it was read (its sha256 is not expected_sha256): read it again",
        )
    checkpoint = None
    if checkpoints is not None and target is not None:
        checkpoint = checkpoints.record(target, previous, data)
    try:
        # What was read (and checkpointed, and compared) must still be there at the rename:
        # a change made meanwhile is a CONFLICT, never overwritten unseen.
        written = sandbox.write_file(
            target if target is not None else path,
            data,
            guard=guard,
            expect_sha256=hashlib.sha256(previous).hexdigest() if previous is not None else None,
            expect_absent=known and previous is None,
        )
    except BaseException:
        if checkpoint is not None and checkpoints is not None:
            checkpoints.cancel(checkpoint)  # nothing changed: nothing to undo
        raise
    if checkpoints is not None and target is None:
        checkpoint = checkpoints.record(written.path, None, data)
    result = {"path": _wire(written.path), "bytes_written": written.bytes_written, "created": written.created}
    if checkpoint is not None:
        result["checkpoint"] = checkpoint
    return result


# --- edit_file ----------------------------------------------------------------------------

#: Lines of context around each change in an edit's diff (as git's default).
DIFF_CONTEXT = 3
#: A changed block this many lines long (old and new) is shown as removed-then-added
#: lines instead of being aligned line by line (difflib's matching is quadratic).
MAX_ALIGNED_LINES = 4000
#: Where occurrences are listed in a MULTIPLE_MATCHES message.
MAX_LINES_NAMED = 10


def _lines(text: str) -> list[str]:
    """``text`` split after each newline (only ``\n``: a lone ``\r`` or a form feed is no line end)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _to_crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _occurrences(text: str, old: str, limit: int | None) -> list[int]:
    """Where ``old`` occurs in ``text``, left to right and not overlapping (as ``str.replace``)."""
    found: list[int] = []
    at = text.find(old)
    while at >= 0 and (limit is None or len(found) < limit):
        found.append(at)
        at = text.find(old, at + len(old))
    return found


def _line_end(text: str, at: int) -> int:
    """The offset just past the line holding offset ``at`` (past its newline)."""
    if at >= len(text):
        return len(text)
    newline = text.find("\n", at)
    return len(text) if newline < 0 else newline + 1


def _line_start(text: str, at: int) -> int:
    return text.rfind("\n", 0, at) + 1


def _extend_lines(text: str, start: int, end: int, lines: int) -> tuple[int, int]:
    """``[start, end)`` (whole lines) grown by up to ``lines`` lines on each side."""
    for _ in range(lines):
        if start == 0:
            break
        start = _line_start(text, start - 1)
    return start, _extend_end(text, end, lines)


def _extend_end(text: str, end: int, lines: int) -> int:
    """``end`` (a line boundary) moved down by up to ``lines`` lines."""
    for _ in range(lines):
        if end >= len(text):
            break
        end = _line_end(text, end)
    return end


def _blocks(text: str, positions: list[int], old_len: int) -> Iterator[tuple[int, int, list[int]]]:
    """The stretches of whole lines of ``text`` that a diff shows: (start, end, occurrences in it).

    Each occurrence takes the lines from the one it starts on to the one holding the
    character after it (so a newline it removes or adds stays inside the stretch);
    stretches grown by DIFF_CONTEXT lines each way that touch are merged, as a unified
    diff merges hunks. Outside the stretches the text is unchanged, and a stretch's
    edges are line boundaries in the new text too.

    Linear in the text: an occurrence that ends on the line where the previous one
    ended changes nothing but the list (finding its line again, in a long line full of
    occurrences, was a scan of the line for each: hours for a replace_all of one
    character in a file of 8 MiB on one line).
    """
    current: tuple[int, int, list[int]] | None = None
    last_line_end = -1  # the end of the line holding the character after the previous occurrence
    for at in positions:
        if current is not None and at + old_len < last_line_end:
            current[2].append(at)  # the same last line: the stretch stays as it is
            continue
        last_line_end = _line_end(text, at + old_len)
        if current is not None and at <= current[1]:
            # Starts inside the stretch: it merges, whatever context it has before it.
            end = _extend_end(text, last_line_end, DIFF_CONTEXT)
            current[2].append(at)
            current = (current[0], max(current[1], end), current[2])
            continue
        start, end = _extend_lines(text, _line_start(text, at), last_line_end, DIFF_CONTEXT)
        if current is not None and start <= current[1]:
            current[2].append(at)
            current = (current[0], max(current[1], end), current[2])
            continue
        if current is not None:
            yield current
        current = (start, end, [at])
    if current is not None:
        yield current


def _hunk_range(start: int, length: int) -> str:
    """A unified diff range: 1-based start, and the length unless it is 1 (as difflib)."""
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _grouped_opcodes(a: list[str], b: list[str]) -> list[list[tuple[str, int, int, int, int]]]:
    if len(a) + len(b) <= MAX_ALIGNED_LINES:
        return list(difflib.SequenceMatcher(None, a, b).get_grouped_opcodes(DIFF_CONTEXT))
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    lo = max(0, head - DIFF_CONTEXT)
    group = [("equal", lo, head, lo, head), ("replace", head, len(a) - tail, head, len(b) - tail)]
    group.append(
        (
            "equal",
            len(a) - tail,
            len(a) - tail + min(tail, DIFF_CONTEXT),
            len(b) - tail,
            len(b) - tail + min(tail, DIFF_CONTEXT),
        )
    )
    return [[op for op in group if op[1] != op[2] or op[3] != op[4]]]


def _hunk_lines(group: list[tuple[str, int, int, int, int]], a: list[str], b: list[str]) -> Iterator[str]:
    for tag, o1, o2, n1, n2 in group:
        if tag == "equal":
            yield from (_diff_line(" ", line) for line in a[o1:o2])
            continue
        yield from (_diff_line("-", line) for line in a[o1:o2])
        yield from (_diff_line("+", line) for line in b[n1:n2])


def _diff_line(mark: str, line: str) -> str:
    if line.endswith("\n"):
        return mark + line
    return f"{mark}{line}\n\\ No newline at end of file\n"


def edit_diff(text: str, positions: list[int], old: str, new: str, path: str, limit: int) -> tuple[str, str]:
    """(the new text, a unified diff of the change) for ``old`` replaced by ``new`` at ``positions``.

    Built from the known places of the change, block by block (difflib only aligns
    lines within a block), so a replace_all over a large file costs time linear in
    the file. The diff stops at about ``limit`` characters, with a marker.
    """
    pieces: list[str] = []
    at = 0
    for position in positions:
        pieces.append(text[at:position])
        pieces.append(new)
        at = position + len(old)
    pieces.append(text[at:])
    after = "".join(pieces)

    out = [f"--- a/{path}\n", f"+++ b/{path}\n"]
    size = len(out[0]) + len(out[1])
    line_no, counted, shift = 0, 0, 0  # old line of offset `counted`; new-minus-old lines so far
    blocks = list(_blocks(text, positions, len(old)))
    for shown, (start, end, inside) in enumerate(blocks):
        line_no += text.count("\n", counted, start)
        counted = start
        block = text[start:end]
        new_block = block
        if inside:
            parts, cursor = [], 0
            for position in inside:
                parts.append(block[cursor : position - start])
                parts.append(new)
                cursor = position - start + len(old)
            parts.append(block[cursor:])
            new_block = "".join(parts)
        a, b = _lines(block), _lines(new_block)
        for group in _grouped_opcodes(a, b):
            i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
            hunk = [
                f"@@ -{_hunk_range(line_no + i1, i2 - i1)} +{_hunk_range(line_no + shift + j1, j2 - j1)} @@\n"
            ]
            hunk_size = len(hunk[0])
            for line in _hunk_lines(group, a, b):
                if size + hunk_size > limit:
                    break  # cut below anyway: the rest of a huge hunk is never built
                hunk.append(line)
                hunk_size += len(line)
            if size + hunk_size > limit:
                left = len(blocks) - shown
                out.append(
                    f"[... diff cut here: {left} more changed part(s) not shown; read the file to see them ...]\n"
                )
                return after, "".join(out)
            out.extend(hunk)
            size += hunk_size
        shift += len(b) - len(a)
    return after, "".join(out)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def edit_file(
    sandbox: Sandbox,
    params: EditFileParams,
    limits: FileLimits,
    rules: IgnoreRules | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[str, Any]:
    """Replace ``old_string`` by ``new_string`` in a text file: read, check, write as write_file does.

    The file is read with its sha256, the new text computed, and written with that
    sha256 as the expected one: a change made in between is a CONFLICT, never
    overwritten. Bytes outside the replaced text are kept as they were (line
    endings, a BOM, the last newline or its absence). In a file with CRLF line
    endings, ``\n`` in old_string and new_string stands for ``\r\n`` when old_string
    as given does not occur.
    """
    with WRITES:
        return _edit(sandbox, params, limits, rules, checkpoints)


def _edit(
    sandbox: Sandbox,
    params: EditFileParams,
    limits: FileLimits,
    rules: IgnoreRules | None,
    checkpoints: Checkpoints | None,
) -> dict[str, Any]:
    path, old, new = params.path, params.old_string, params.new_string
    if old == new:
        raise RpcError(
            ErrorCode.INVALID_PARAMS, "old_string and new_string are the same: nothing would change"
        )
    if rules is not None:
        rules.check_write(path, _lexical(path))  # before the file system: no probing
    guard = None if rules is None else (lambda rel: rules.check_write(path, rel))
    try:
        data = sandbox.read_file(path, max_bytes=limits.max_write_bytes, guard=guard)
    except SandboxError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            raise RpcError(
                exc.code, f"{exc.message}; edit_file changes existing files: create one with write_file"
            ) from None
        if exc.code == ErrorCode.TOO_LARGE:
            raise RpcError(
                exc.code, f"{exc.message}; edit_file changes files up to {limits.max_write_bytes} bytes"
            ) from None
        raise
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RpcError(
            ErrorCode.NOT_TEXT, f"{path!r} is not UTF-8 text: edit_file changes text files only"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if params.expected_sha256 is not None and digest != params.expected_sha256:
        raise RpcError(
            ErrorCode.CONFLICT,
            f"{path!r} changed since it was read (its sha256 is not expected_sha256): read it again",
        )
    count = text.count(old)
    if count == 0 and "\r\n" in text and "\n" in old and "\r" not in old:
        crlf = _to_crlf(old)
        if crlf in text:  # the file's CRLF line endings, sent as plain newlines
            old, new = crlf, _to_crlf(new)
            count = text.count(old)
    if count == 0:
        hint = ""
        if _squash(old) and _squash(old) in _squash(text):
            hint = " (the same text with different whitespace, indentation or line breaks is in the file)"
        raise RpcError(
            ErrorCode.NO_MATCH,
            f"old_string was not found in {path!r}{hint}: it must match the file exactly, whitespace and "
            "indentation included. Read the file again (read_files) and copy the text from it.",
        )
    if count > 1 and not params.replace_all:
        where = _occurrences(text, old, MAX_LINES_NAMED)
        lines, counted, line_no = [], 0, 1
        for at in where:
            line_no += text.count("\n", counted, at)
            counted = at
            lines.append(str(line_no))
        more = ", ..." if count > len(where) else ""
        raise RpcError(
            ErrorCode.MULTIPLE_MATCHES,
            f"old_string occurs {count} times in {path!r} (at lines {', '.join(lines)}{more}): include more "
            f"of the surrounding lines to make it unique, or set replace_all=true to replace all {count}",
            {"matches": count},
        )
    replaced = count if params.replace_all else 1
    # Known before the new text is built: a replace_all of a character by 8 MiB would
    # otherwise ask for terabytes.
    new_size = len(data) + replaced * (len(new.encode("utf-8")) - len(old.encode("utf-8")))
    if new_size > limits.max_write_bytes:
        raise RpcError(
            ErrorCode.TOO_LARGE,
            f"the edited {path!r} would be {new_size} bytes; the limit is {limits.max_write_bytes}",
        )
    positions = _occurrences(text, old, None if params.replace_all else 1)
    written_path = _wire(sandbox.resolve(path))
    after, diff = edit_diff(text, positions, old, new, written_path, limits.max_diff_chars)
    new_data = after.encode("utf-8")
    # The sha256 of what was read is the expected one: a change since is a CONFLICT.
    written = _write_bytes(sandbox, path, new_data, digest, limits, rules, checkpoints)
    result: dict[str, Any] = {
        "path": written["path"],
        "replacements": len(positions),
        "diff": diff,
        "sha256": hashlib.sha256(new_data).hexdigest(),
    }
    if "checkpoint" in written:
        result["checkpoint"] = written["checkpoint"]
    return result


#: File systems whose reads of a small file take microseconds and cannot hang (no network).
LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "jfs", "reiserfs", "bcachefs"}
)


def filesystem_type(path: str | os.PathLike[str], mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the file system ``path`` is on (Linux), or None when it cannot be told."""
    try:
        target = os.path.realpath(path)
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best, kind = "", None
    for line in lines:
        fields = line.split()
        try:
            point = fields[4].encode("latin-1").decode("unicode_escape")  # octal escapes such as \040
            fs = fields[fields.index("-") + 1]
        except (IndexError, ValueError, UnicodeDecodeError):
            continue
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs
    return kind
