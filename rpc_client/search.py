"""search_files: a regular expression over the project's text files, as ``grep -rn`` or ripgrep would.

The pattern comes from the model, so it runs on RE2 (``google-re2``): matching
takes time linear in the text whatever the pattern (``(a+)+$`` cannot freeze the
client as it would Python's backtracking ``re``), and a pattern's size is
bounded when it is compiled. RE2 has no backreferences or look-around, as
ripgrep.

Semantics, as grep's: a match lies within one line (RE2's ``never_nl``: the
pattern never matches a newline, even one written in it), ``^`` and ``$`` match
at each line's start and end, and a line is reported once however many
matches it holds. The whole file is searched at once and line numbers are
counted only up to each hit.

What is searched: the regular files at or below ``path`` that the sandbox's
walk reaches (no symbolic link is followed, FIFOs and devices are never
opened), less the ignore rules' secrets, ``.git/``, what ``.gitignore``
ignores (``respect_gitignore``, not applied when ``path`` itself is ignored),
binary files (a NUL byte in the first 8 KiB) and files over the size limit.
The search stops at ``max_results`` matching lines, at the answer budget, when
its time runs out, or when the request is withdrawn, and then says
``truncated``.

Time: RE2 is linear in the text, but its factor is the size of the compiled
pattern when its DFA gives up and it falls back to its NFA (``.{0,999}a|...``
took 1.5 ms a byte: hours for one 16 MiB file, in one call no deadline could
interrupt). So a file is searched in slices ending at line ends, each cut to
what RE2 does at worst in ``SLICE_SECONDS`` for this pattern's size, and the
deadline and the withdrawal are checked between slices; a call is never started
when its worst case would end past the deadline. A single line too long to
search within ``MAX_LINE_SECONDS`` at worst skips its file (counted in
``skipped_too_large``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from rpc_client.ignore import IgnoreRules, WalkFilter, project_gitignore, re2_text, walk_filter
from rpc_client.ignore import lexical_path as _lexical
from rpc_client.sandbox import Sandbox, SandboxError
from schemas.errors import ErrorCode, RpcError
from schemas.tools import SearchFilesParams

#: A file with a NUL byte in its first this-many bytes is binary (git's and grep's rule).
BINARY_SNIFF_BYTES = 8192
#: Longest line shown whole; a longer one is shown around its match.
MAX_LINE_CHARS = 300
#: Characters shown before the match in a shortened line.
LEAD_CHARS = 80
#: Memory RE2 may use for one compiled pattern (its default too): a larger pattern is refused.
MAX_PATTERN_MEMORY = 8 << 20
#: RE2's worst time per byte of text and instruction of the compiled pattern: its NFA steps
#: every live instruction for each byte (2 to 6 ns measured); a little more, for slower machines.
WORST_SECONDS_PER_BYTE_AND_INSTRUCTION = 8e-9
#: Longest one call of RE2 may take at worst, unless a single line needs more.
SLICE_SECONDS = 0.1
#: Longest one line may take at worst; a file with a longer one is skipped as too large.
MAX_LINE_SECONDS = 5.0
CUT = "…"


def _options(*, case_sensitive: bool = True, literal: bool = False, lines: bool = False) -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print each bad pattern on the client's stderr
    options.max_mem = MAX_PATTERN_MEMORY
    options.case_sensitive = case_sensitive
    options.literal = literal
    if lines:
        options.never_nl = True  # a match never spans lines
    else:
        options.dot_nl = True
    return options


def _engine_message(exc: Exception) -> str:
    message = exc.args[0] if exc.args else str(exc)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return str(message)


def compile_pattern(pattern: str, *, case_sensitive: bool = True, literal: bool = False) -> Any:
    """The compiled RE2 pattern, line by line; INVALID_PARAMS with RE2's own message when it is not valid."""
    options = _options(case_sensitive=case_sensitive, literal=literal, lines=True)
    try:
        # (?m): ^ and $ at every line's start and end, as grep.
        return re2.compile(pattern if literal else "(?m)" + pattern, options)
    except re2.error as exc:
        try:  # the message of the pattern as the caller wrote it, without our prefix
            re2.compile(pattern, options)
            reason = _engine_message(exc)
        except re2.error as plain:
            reason = _engine_message(plain)
        raise RpcError(
            ErrorCode.INVALID_PARAMS,
            f"the pattern is not a valid RE2 regular expression: {reason} (RE2 has no backreferences or "
            "look-around; to search for the text as is, pass literal=true)",
        ) from None


# --- globs -----------------------------------------------------------------------------


def _brace_groups(glob: str) -> bool:
    depth = 0
    for c in glob:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def glob_to_regex(glob: str) -> str:
    """An RE2 pattern matching the same paths as ``glob`` (whole-string match).

    ``*`` any run of characters but ``/``, ``?`` one character but ``/``, ``**`` as a
    whole path segment any number of folders (``src/**/*.ts``, ``**/test_*``, ``a/**``),
    ``[abc]``/``[a-z]``/``[!abc]`` one character of a class, ``{a,b}`` alternatives
    (nested too), ``\\x`` the character x. Anything else matches itself.
    """
    braces = _brace_groups(glob)
    out: list[str] = []
    i, n, depth = 0, len(glob), 0
    while i < n:
        c = glob[i]
        if c == "*":
            j = i
            while j < n and glob[j] == "*":
                j += 1
            segment_start = i == 0 or glob[i - 1] in "/{,"
            segment_end = j == n or glob[j] in "/},"
            if j - i >= 2 and segment_start and segment_end:
                if j < n and glob[j] == "/":
                    out.append("(?:.*/)?")  # '**/': zero or more folders
                    j += 1
                else:
                    out.append(".*")  # a trailing '**': everything below
            else:
                out.append("[^/]*")
            i = j
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            first = i + 2 if i + 1 < n and glob[i + 1] in "!^" else i + 1
            end = glob.find("]", first + 1)  # a ']' first in a class is a member ('[]a]')
            if end < 0:
                out.append(re2.escape("["))
            else:
                body = glob[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                members = "".join("\\" + ch if ch in "\\]^[" else ch for ch in body)
                out.append(f"[^/{members}]" if negate else f"[{members}]")
                i = end + 1
                continue
        elif c == "\\" and i + 1 < n:
            out.append(re2.escape(glob[i + 1]))
            i += 2
            continue
        elif c == "{" and braces:
            depth += 1
            out.append("(?:")
        elif c == "}" and braces and depth > 0:
            depth -= 1
            out.append(")")
        elif c == "," and depth > 0:
            out.append("|")
        else:
            out.append(re2.escape(c))
        i += 1
    return "".join(out)


def compile_glob(glob: str) -> Callable[[str], bool]:
    """Whether a root-relative path matches ``glob`` (see :data:`SearchFilesParams.glob`).

    A glob without ``/`` is matched against the file's name at any depth (``*.py``,
    ``test_*.py``), as in .gitignore and ripgrep; one with ``/`` against the whole
    path from the workspace root (``src/**/*.ts``); a leading ``/`` or ``./`` is
    dropped, and a trailing ``/`` means everything below that folder.
    """
    text = glob
    while text.startswith("./"):
        text = text[2:]
    if text.endswith("/"):
        text += "**"
    whole_path = "/" in text  # a leading '/' too: '/README.md' is the root's README.md only
    text = text.lstrip("/")
    if not text:
        raise RpcError(ErrorCode.INVALID_PARAMS, f"the glob {glob!r} names no file")
    try:
        regex = re2.compile(glob_to_regex(text), _options())
    except re2.error as exc:
        raise RpcError(
            ErrorCode.INVALID_PARAMS, f"the glob {glob!r} is not valid: {_engine_message(exc)}"
        ) from None

    def matches(path: str) -> bool:
        subject = path if whole_path else path.rsplit("/", 1)[-1]
        # A name that is not UTF-8 ("caf\udce9") would make RE2 raise and fail the whole search.
        return regex.fullmatch(re2_text(subject)) is not None

    return matches


# --- showing a line --------------------------------------------------------------------


def _safe(text: str) -> str:
    """``text`` with control characters (but tabs) escaped: one line, nothing that moves a cursor."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c == "\t" else c.encode("unicode_escape").decode("ascii") for c in text
    )


def show_line(line: bytes, start: int) -> str:
    """The line holding a match at byte ``start``, for the answer: decoded, made safe, and
    shortened around the match when long (``…`` marks each cut)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) <= MAX_LINE_CHARS:
        return _safe(line.decode("utf-8", "replace"))
    begin = max(0, start - LEAD_CHARS)
    stop = min(len(line), begin + MAX_LINE_CHARS)
    # Cut on character boundaries: skip continuation bytes of a split UTF-8 character.
    while begin > 0 and begin < len(line) and line[begin] & 0xC0 == 0x80:
        begin -= 1
    while stop < len(line) and line[stop] & 0xC0 == 0x80:
        stop += 1
    shown = _safe(line[begin:stop].decode("utf-8", "replace"))
    return (CUT if begin > 0 else "") + shown + (CUT if stop < len(line) else "")


def _path_shown(path: str) -> str:
    """A path on one line: undecodable bytes as ``\\xNN``, control characters escaped."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        path = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _safe(path)


# --- the search --------------------------------------------------------------------------


class _OutOfTime(Exception):
    """The search's deadline would pass during the next call of RE2, or the search was withdrawn."""


class _LineTooLong(Exception):
    """A line too long to search with this pattern within ``MAX_LINE_SECONDS`` at worst."""


class Budget:
    """The time a search may spend in RE2: slices of a file, and the check between them."""

    def __init__(
        self,
        regex: Any,
        deadline: float = float("inf"),
        stop: Callable[[], bool] | None = None,
        *,
        slice_bytes: int | None = None,
    ) -> None:
        # The reverse program finds where a match starts (-1: too large to build, then unused).
        size = max(1, int(regex.programsize), int(regex.reverseprogramsize))
        self.per_byte = size * WORST_SECONDS_PER_BYTE_AND_INSTRUCTION
        #: Bytes one call searches (then on to the end of its line).
        self.slice_bytes = slice_bytes or max(1, int(SLICE_SECONDS / self.per_byte))
        self.line_bytes = int(MAX_LINE_SECONDS / self.per_byte)
        self.deadline = deadline
        self.stop = stop
        #: The search of this pattern (made once: each file asks for it).
        self.find = _finder(regex)

    def spend(self, nbytes: int) -> None:
        """Before RE2 searches ``nbytes``: _OutOfTime or _LineTooLong unless it may.

        A slice longer than ``line_bytes`` (fifty slices) is one so long because the line
        it ends with is.
        """
        if self.stop is not None and self.stop():
            raise _OutOfTime
        if nbytes > max(self.line_bytes, self.slice_bytes):
            raise _LineTooLong
        if time.monotonic() + nbytes * self.per_byte > self.deadline:
            raise _OutOfTime


def _finder(regex: Any) -> Callable[[bytes, int, int], int]:
    """Where ``regex`` first matches in ``data[pos:end]`` (an offset in ``data``), or -1.

    ``regex.search(data, pos, end).start()``, asking the compiled program directly:
    google-re2's ``search`` is a Python generator that builds a match object (a third
    of the time of searching a small file).  Another version of google-re2 gets its
    ``search``.
    """
    program = getattr(regex, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    match = getattr(program, "Match", None)
    if match is None or anchor is None:

        def search(data: bytes, pos: int, end: int) -> int:
            found = regex.search(data, pos, end)
            return -1 if found is None else int(found.start())

        return search

    def find(data: bytes, pos: int, end: int) -> int:
        size = len(data)
        pos, end = max(0, min(pos, size)), max(0, min(end, size))  # as search() clamps them
        if pos > end:
            return -1
        return int(match(anchor, data, pos, end)[0][0])

    return find


def _matching_lines(
    regex: Any, data: bytes, budget: Budget | None = None, *, first: int | None = None
) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line bytes, where the match starts in it) of each line with a match, in order.

    With ``budget`` the text is searched in slices that end at line ends (a match never
    spans lines, and RE2 sees the whole text around a slice, so ``$`` and ``\\b`` at its
    edges judge as without slices), and the budget is asked before each.  ``first``: where
    the search of the whole of ``data`` (one slice) found its first match, already paid for.
    """
    size = len(data)
    find = _finder(regex) if budget is None else budget.find
    pos = 0
    line_no = 1
    counted = 0  # line_no is the number of the line holding byte `counted`
    while pos <= size:
        end = size
        if first is not None:
            start, first = first, None  # (the caller searched data[0:size] in one call)
        else:
            if budget is not None:
                if size - pos > budget.slice_bytes:
                    newline = data.find(b"\n", pos + budget.slice_bytes - 1)
                    end = size if newline < 0 else newline + 1
                budget.spend(end - pos)
            start = find(data, pos, end)
        if start < 0:
            if end >= size:
                return
            pos = end
            continue
        if start >= size and (size == 0 or data[size - 1] == 0x0A):
            return  # an empty match after the last newline: there is no line there
        line_start = data.rfind(b"\n", 0, start) + 1
        line_end = data.find(b"\n", start)
        if line_end < 0:
            line_end = size
        line_no += data.count(b"\n", counted, line_start)
        counted = line_start
        yield line_no, data[line_start:line_end], start - line_start
        pos = line_end + 1


def search_files(
    sandbox: Sandbox,
    params: SearchFilesParams,
    *,
    max_file_bytes: int,
    max_answer_bytes: int,
    seconds: float,
    rules: IgnoreRules | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Search; the answer's fields are those of ``SearchFilesResult``."""
    regex = compile_pattern(params.pattern, case_sensitive=params.case_sensitive, literal=params.literal)
    wanted = compile_glob(params.glob) if params.glob is not None else None
    if rules is not None:
        rules.check_read(params.path, _lexical(params.path))  # before the file system: no probing
    gitignore = None
    if params.respect_gitignore:
        gitignore = project_gitignore(sandbox, rules)

    def guard(start: str) -> None:
        """The start as the walk resolved it: judged there, so a link swapped meanwhile changes nothing."""
        nonlocal gitignore
        if rules is not None:
            rules.check_read(params.path, start)
        if (
            gitignore is not None
            and start
            and (gitignore.ignored(start, is_dir=True) or gitignore.ignored(start, is_dir=False))
        ):
            gitignore = None  # asked for by name: search it, as ripgrep searches a path it is given

    deadline = time.monotonic() + seconds
    expired = False
    budget = Budget(regex, deadline, stop)

    # The rules' verdict, then the .gitignore files' (see WalkFilter): made once the guard has
    # judged the start (which may drop the .gitignore files).
    ignored: list[WalkFilter | None] = []

    def current() -> WalkFilter | None:
        if not ignored:
            ignored.append(walk_filter(rules, gitignore))
        return ignored[0]

    def prepare(folder: str, names: list[str]) -> None:
        judge = current()
        if judge is not None:
            judge.prepare(folder, names)

    def hide(rel: str, is_dir: bool) -> bool:
        nonlocal expired
        if expired or time.monotonic() > deadline or (stop is not None and stop()):
            expired = True  # out of time: leave the rest out (a tree of empty folders ends too)
            return True
        if is_dir and rel.rsplit("/", 1)[-1] == ".git":
            return True
        judge = current()
        return judge is not None and judge(rel, is_dir)

    def text_file(head: bytes) -> bool:
        return b"\0" not in head[:BINARY_SNIFF_BYTES]

    matches: list[str] = []
    room = max_answer_bytes
    searched = matched = binary = too_large = 0
    truncated = timed_out = False
    with contextlib.closing(sandbox.walk_files(params.path, hide=hide, guard=guard, prepare=prepare)) as walk:
        for found in walk:
            if expired or time.monotonic() > deadline or (stop is not None and stop()):
                truncated = timed_out = True
                break
            if wanted is not None and not wanted(found.path):
                continue
            try:
                data = found.read(max_file_bytes, accept_head=text_file)
            except SandboxError as exc:
                if exc.code == ErrorCode.TOO_LARGE:
                    too_large += 1
                continue  # vanished, swapped or unreadable since the walk listed it: not searched
            if data is None:
                binary += 1
                continue
            shown = None
            try:
                first = None
                if len(data) <= budget.slice_bytes:
                    # Most files: one call of RE2 (the first _matching_lines would make) finds nothing.
                    budget.spend(len(data))
                    first = budget.find(data, 0, len(data))
                    if first < 0:
                        searched += 1
                        continue
                for line_no, line, column in _matching_lines(regex, data, budget, first=first):
                    if len(matches) >= params.max_results:
                        truncated = True
                        break
                    if shown is None:
                        shown = _path_shown(found.path)
                        matched += 1
                    row = f"{shown}:{line_no}: {show_line(line, column)}"
                    cost = len(json.dumps(row, ensure_ascii=False).encode("utf-8")) + 1  # and a comma
                    if cost > room:
                        truncated = True
                        break
                    room -= cost
                    matches.append(row)
            except _OutOfTime:
                searched += 1
                truncated = timed_out = True
                break
            except _LineTooLong:
                too_large += 1  # (the lines before the long one may have matched)
                continue
            searched += 1
            if truncated:
                break
    if expired:
        truncated = timed_out = True
    return {
        "matches": matches,
        "truncated": truncated,
        "files_searched": searched,
        "files_matched": matched,
        "skipped_binary": binary,
        "skipped_too_large": too_large,
        "timed_out": timed_out,
    }
