"""Paths the AI may not see: secrets by default, plus the project's ``.aihubignore``.

Gitignore syntax (via ``pathspec``, the library git-style tools use, its
patterns matched by RE2 in linear time: see :class:`IgnoreSpec`): a pattern
matches at any depth, ``dir/`` matches a folder and everything in it,
``!pattern`` brings a path back. Ignored paths are hidden from ``list_files``
and refused by ``read_files`` and ``write_file`` (judged on the path as given
and on where it leads after links), and masked for commands under bubblewrap.
Some paths are never writable at all: the ignore file itself and ``.git/``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pathspec
import re2  # type: ignore[import-untyped]  # google-re2 ships no type information
from pathspec.util import NORMALIZE_PATH_SEPS, normalize_file

from schemas.errors import ErrorCode, RpcError
from schemas.protocol import aihub_home

if TYPE_CHECKING:
    from rpc_client.sandbox import Sandbox

IGNORE_FILE = ".aihubignore"
#: Secrets a repository commonly holds; ``--no-default-ignores`` drops them.
DEFAULT_PATTERNS = (
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.keystore",
    "*.jks",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".aws/",
    ".ssh/",
    ".gnupg/",
    ".netrc",
    ".pypirc",
    ".npmrc",
    ".docker/config.json",
    ".kube/",
    ".git-credentials",
    "*.tfstate",
    "*.tfstate.*",
)
#: Folders the mask walk does not enter (huge, and not where a project keeps its secrets).
_WALK_PRUNE = {
    ".git",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    "target",
}
_MAX_WALK = 200_000
#: Lines of one folder's .gitignore files that are applied (real ones have a few hundred).
MAX_GITIGNORE_LINES = 5_000


class TooManyFiles(RpcError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.DENIED, message)


class IgnoreFileError(Exception):
    """The ignore file cannot be read."""


@dataclass
class IgnoreRules:
    """Which relative paths are hidden from the AI, and which may never be written."""

    patterns: list[str] = field(default_factory=list)
    source: str = "built-in defaults"
    #: The rules file's path relative to the root (if it is inside): never writable.
    rules_file: str = IGNORE_FILE

    def __post_init__(self) -> None:
        self._spec = gitignore_spec(self.patterns)
        #: (the spec, its verdicts): see :meth:`hidden_either`.
        self._memo: tuple[IgnoreSpec, dict[str, bool]] = (self._spec, {})

    @classmethod
    def load(cls, root: Path, *, ignore_file: Path | None = None, defaults: bool = True) -> IgnoreRules:
        """The defaults (unless ``defaults`` is off) and the ignore file (``root/.aihubignore`` unless given)."""
        patterns = list(DEFAULT_PATTERNS) if defaults else []
        path = ignore_file or root / IGNORE_FILE
        sources = ["built-in defaults"] if defaults else []
        try:
            patterns += path.read_text(encoding="utf-8", errors="strict").splitlines()
            sources.append(str(path))
        except FileNotFoundError:
            if ignore_file is not None:
                raise IgnoreFileError(f"{path}: no such file") from None
        except UnicodeDecodeError:
            raise IgnoreFileError(f"{path}: not UTF-8 text") from None
        except OSError as exc:
            raise IgnoreFileError(f"{path}: {exc.strerror}") from None
        state = _state_folder_pattern(root)
        if state is not None:
            # Last, so no line of the project's can bring it back; whatever the flags.
            patterns.append(state)
            sources.append("the client's state folder")
        try:
            rules = cls(patterns, " + ".join(sources) or "none")
        except (ValueError, re.error) as exc:  # a line pathspec or RE2 cannot take
            raise IgnoreFileError(f"{path}: {exc}") from None
        # The file that holds the rules may never be written by the AI, wherever it is.
        with contextlib.suppress(ValueError):
            rules.rules_file = path.resolve().relative_to(root.resolve()).as_posix()
        return rules

    def hidden(self, rel: str, *, is_dir: bool = False) -> bool:
        """Whether ``rel`` (relative, '/'-separated) or a folder it is in is ignored."""
        rel = rel.strip("/")
        if not rel or rel == ".":
            return False
        if self._spec.match(rel + "/" if is_dir else rel):
            return True
        # A file inside an ignored folder: check each parent as a folder.
        parts = rel.split("/")
        return any(self._spec.match("/".join(parts[:i]) + "/") for i in range(1, len(parts)))

    def hidden_entry(self, rel: str, *, is_dir: bool) -> bool:
        """Whether an entry met in a walk is hidden, its folders being known not to be.

        :meth:`hidden` without the check of each parent folder: a walk that enters only
        folders this said were not hidden (from a start that :meth:`check_read`
        allowed) has checked them already, and searching a large tree pays once per
        entry instead of once per entry and level.
        """
        return self._spec.match(rel + "/" if is_dir else rel)

    def hidden_either(self, rel: str) -> bool:
        """``hidden(rel) or hidden(rel, is_dir=True)``: whether ``rel`` is hidden as a file or as a folder.

        Each path's parent folders are asked about once (not once for each), and the answer
        is remembered for the next call about the same path: an AI reads the same few files
        again and again, and each was judged about eight times per read.  The memo is
        keyed by the exact text asked about and belongs to the compiled rules it was
        worked out with (``_spec``): rules compiled again (another :class:`IgnoreRules`,
        or this one's :meth:`__post_init__` run again) start with an empty one, so it can
        never answer from other rules.  A path longer than ``VERDICT_MEMO_CHARS`` is not
        remembered, and past ``VERDICT_MEMO_PATHS`` paths all are forgotten (bounded memory).
        """
        spec = self._spec
        memo_spec, memo = self._memo
        if memo_spec is not spec:  # compiled again since: what was remembered is of other rules
            memo = {}
            self._memo = (spec, memo)
        known = memo.get(rel)
        if known is not None:
            return known
        known = _hidden_either(spec, rel)
        if len(rel) <= VERDICT_MEMO_CHARS:
            if len(memo) >= VERDICT_MEMO_PATHS:
                memo.clear()
            memo[rel] = known
        return known

    def check_read(self, shown: str, rel: str) -> None:
        # As a file and as a folder: `.ssh` is refused whether it is one or the other.
        lexical = lexical_path(shown)
        if self.hidden_either(rel) or (lexical != rel and self.hidden_either(lexical)):
            raise RpcError(ErrorCode.DENIED, f"{shown!r} is hidden by the ignore rules ({self.source})")

    def check_write(self, shown: str, rel: str) -> None:
        for candidate in (rel, lexical_path(shown)):
            parts = candidate.split("/")
            if candidate in (IGNORE_FILE, self.rules_file):
                raise RpcError(ErrorCode.DENIED, f"{shown!r}: the AI may not change the ignore rules")
            if ".git" in parts:
                raise RpcError(ErrorCode.DENIED, f"{shown!r}: the AI may not write into .git/")
        self.check_read(shown, rel)

    def frozen(self, root: Path) -> list[Path]:
        """What commands may not change: the rules file, and git's config and hooks (they run code later, unconfined)."""
        candidates = [root / self.rules_file, root / ".git" / "config", root / ".git" / "hooks"]
        return [p for p in candidates if p.exists() and not p.is_symlink()]

    def masked(self, root: Path) -> Iterator[tuple[Path, bool]]:
        """Ignored files and folders under ``root`` (path, is_dir), for masking under bubblewrap.

        Raises :class:`TooManyFiles` past the walk budget: commands are refused rather
        than run with secrets left unmasked. Links are skipped (a masked link would
        break bubblewrap, and what one points to is judged where it lies).
        """
        seen = 0
        for folder, dirs, files in os.walk(root):
            rel_folder = os.path.relpath(folder, root)
            rel_folder = "" if rel_folder == "." else rel_folder
            keep = []
            for name in sorted(dirs):
                rel = f"{rel_folder}/{name}" if rel_folder else name
                if os.path.islink(os.path.join(folder, name)):
                    continue
                if self.hidden(rel, is_dir=True):
                    yield Path(folder, name), True
                elif name not in _WALK_PRUNE:
                    keep.append(name)
            dirs[:] = keep
            for name in files:
                rel = f"{rel_folder}/{name}" if rel_folder else name
                if self.hidden(rel) and not os.path.islink(os.path.join(folder, name)):
                    yield Path(folder, name), False
            seen += len(files) + len(dirs)
            if seen > _MAX_WALK:
                raise TooManyFiles(
                    f"the project has more than {_MAX_WALK} files outside node_modules/.venv/.git: too many to "
                    "check for secrets before a confined command; commands are refused (list bulky folders in "
                    ".aihubignore, or start the client with --sandbox none)"
                )


def _hidden_either(spec: IgnoreSpec, rel: str) -> bool:
    """What ``IgnoreRules.hidden(rel) or IgnoreRules.hidden(rel, is_dir=True)`` says, under ``spec``."""
    rel = rel.strip("/")
    if not rel or rel == ".":
        return False
    if spec.match(rel) or spec.match(rel + "/"):
        return True
    # Inside an ignored folder: each parent as a folder (the same for a file and a folder).
    parts = rel.split("/")
    return any(spec.match("/".join(parts[:i]) + "/") for i in range(1, len(parts)))


#: Paths whose verdict one set of rules remembers (:meth:`IgnoreRules.hidden_either`); past
#: this many, all are forgotten and the memo starts again.
VERDICT_MEMO_PATHS = 4096
#: Longest path (in characters) whose verdict is remembered: the memo holds at most about
#: VERDICT_MEMO_PATHS * VERDICT_MEMO_CHARS characters of keys (about a megabyte).
VERDICT_MEMO_CHARS = 256
#: Memory RE2 may use for one ignore pattern (its default).
_PATTERN_MEMORY = 8 << 20
# Every undecodable byte of a file name (a surrogate escape, ``"caf\udce9"``) stands for
# one character of Unicode's private use plane 15, which RE2 can take (it takes UTF-8 only).
_NAME_SAFE = {code: 0xF0000 + code - 0xD800 for code in range(0xD800, 0xE000)}


def _state_folder_pattern(root: Path) -> str | None:
    """A line hiding the client's state folder (the hub token, checkpoints, conversations) if it is in ``root``.

    It is, for instance, when the root is the user's home folder and ``~/.aihub`` the
    state folder: the AI could read the token with read_files or search_files.
    """
    try:
        rel = aihub_home().resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return None  # outside the root (as it should be), or unresolvable
    if not rel.parts:
        return "*"  # the root is the state folder itself: hide everything
    return "/" + re.sub(r"([\\*?\[\]!# ])", r"\\\1", rel.as_posix()) + "/"


def re2_text(name: str) -> str:
    """``name`` as RE2 can take it: each undecodable byte of a file name one private-use character."""
    if name.isascii():  # most names: no surrogate escape to replace (and translate() is slow)
        return name
    return name.translate(_NAME_SAFE)


def re2_searcher(regex: Any) -> Callable[[str], bool]:
    """Whether ``regex`` (compiled by ``re2.compile``) finds a match anywhere in a text (``str``).

    The same answer as ``regex.search(text) is not None``, for a fraction of the cost:
    google-re2's ``search`` is written in Python (a generator, offsets converted from
    bytes to characters) and took most of a large listing's time in ignore matching.
    Here the compiled program is asked directly on the UTF-8 text; where that part of
    google-re2 is not there (another version), its ``search`` is used.
    """
    program = getattr(regex, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    match = getattr(program, "Match", None)
    if match is None or anchor is None:
        return lambda text: regex.search(text) is not None

    def search(text: str) -> bool:
        data = text.encode("utf-8")
        return bool(match(anchor, data, 0, len(data))[0] != (-1, -1))

    return search


def re2_lines(regex: Any) -> Callable[[bytes], set[int]]:
    """Which lines of a text ``regex`` matches: the indexes (from 0) of those where it finds a match.

    For many paths judged at once, one a line: the caller's ``regex`` must never match
    across a newline (RE2's ``never_nl``) and have ``^`` and ``$`` match at each line's
    start and end (``(?m)``).  One call of RE2 for all the lines that do not match, and
    one more for each line that does.
    """
    program = getattr(regex, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    match = getattr(program, "Match", None)

    def first(text: bytes, pos: int) -> int:
        if match is None or anchor is None:
            found = regex.search(text, pos)
            return -1 if found is None else int(found.start())
        return int(match(anchor, text, pos, len(text))[0][0])

    def lines(text: bytes) -> set[int]:
        found: set[int] = set()
        pos = index = 0  # `pos` starts line `index`
        while pos <= len(text):
            at = first(text, pos)
            if at < 0:
                break
            index += text.count(b"\n", pos, at)  # (a match at a line's end is that line's)
            found.add(index)
            end = text.find(b"\n", at)
            if end < 0:
                break
            pos, index = end + 1, index + 1
        return found

    return lines


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _PATTERN_MEMORY
    # '.' matches a newline too: in git a wildcard matches any character of a name but '/',
    # so `.env` hides `a\nb/.env` (Python's '.' would not, and the secret was shown).
    options.dot_nl = True
    return options


def _re2_source(regex: str) -> str:
    """pathspec's regular expression (Python syntax) as RE2 reads it the same way.

    The only difference in what pathspec writes: RE2 reads ``[:alpha:]`` in a class as a
    POSIX class, Python as the characters; ``\\:`` is a colon to both.
    """
    return regex.replace("[:", "[\\:")


def _exact_regex(regex: Any) -> Any:
    """``regex`` (a line compiled by :class:`IgnoreSpec`) matching only the path itself, not a
    path inside a folder it matches: pathspec's regular expressions end where a folder's '/'
    is (``(?P<ps_d>/)``, alone or as an alternative to ``$``), so must end with the path; one
    for ``dir/**`` ends with ``dir/`` and must go on (what is in ``dir``, not ``dir`` itself).
    ``*`` and ``**`` (``.``) match every path as they are.  ``regex`` itself if that fails."""
    source = regex.pattern
    if source == ".":
        return regex
    source = source + "." if source.endswith("/") else source + r"\z"
    try:
        return re2.compile(source, _re2_options())
    except re2.error:
        return regex


def _joint(
    sources: list[str], options: Any
) -> tuple[Callable[[str], bool] | None, Callable[[bytes], set[int]] | None]:
    """One RE2 search for any of ``sources`` (:func:`re2_searcher`) and the same over many paths,
    one a line (:func:`re2_lines`); (None, None) when they are too large as one expression."""
    try:
        anywhere = re2_searcher(re2.compile("|".join(sources), options))
    except re2.error:
        return None, None
    per_line = _re2_options()
    per_line.never_nl = True  # a match lies within one line: one path
    try:
        return anywhere, re2_lines(re2.compile("(?m:" + "|".join(sources) + ")", per_line))
    except re2.error:
        return anywhere, None


class IgnoreSpec:
    """Compiled gitignore lines: pathspec's semantics, matched by RE2 (linear time).

    pathspec compiles each line to a Python regular expression, and Python's engine
    backtracks: a line such as ``*a*a*a*a*a*a*a*a*a*b`` (which the AI can write into a
    ``.gitignore``) against a long name took hours while holding the GIL, freezing
    the whole client. Here each line's regular expression is recompiled with RE2 and
    one RE2 expression of all the hiding lines answers first for most paths.
    """

    def __init__(self, lines: list[str], *, strict: bool = True) -> None:
        """``strict``: a line that is not a valid pattern (or that RE2 cannot take) is an error;
        otherwise it is left out, as git leaves out a line it cannot read."""
        try:
            spec = _pathspec(lines)
        except (ValueError, re.error):  # pathspec's GitIgnorePatternError is a ValueError
            if strict:
                raise
            spec = _pathspec([line for line in lines if _valid(line)])
        options = _re2_options()
        kept: list[Any] = []
        sources: list[str] = []  # of the lines that hide
        returns: list[str] = []  # of the `!` lines
        for pattern in spec.patterns:
            regex = getattr(pattern, "regex", None)
            include = getattr(pattern, "include", None)
            if include is None or regex is None:
                continue  # a comment or a blank line
            source = _re2_source(regex.pattern) if isinstance(regex, re.Pattern) else None
            try:
                if not isinstance(source, str):
                    raise re2.error("not a regular expression of text")
                pattern.regex = re2.compile(source, options)
            except re2.error:
                if strict:
                    raise ValueError(
                        f"the pattern {getattr(pattern, 'pattern', '')!r} is too complex to match safely"
                    ) from None
                continue
            kept.append(pattern)
            # pathspec marks a folder match with a named group; one name cannot appear twice.
            (sources if include else returns).append("(?:" + source.replace("(?P<ps_d>", "(?:") + ")")
        #: (hides, regex) of each line, in order: see :meth:`_decide`.
        self._checks: list[tuple[bool, Any]] = [(bool(pattern.include), pattern.regex) for pattern in kept]
        #: The same, each regex matching the path itself only (see :meth:`verdict`); made when first asked.
        self._exact: list[tuple[bool, Any]] | None = None
        #: Whether any line hides anything (``!`` lines only bring paths back).
        self._hides = bool(sources)
        #: Whether any line brings paths back (``!``).
        self._returns = bool(returns)
        #: One RE2 expression matching wherever any hiding line matches; None: ask each line.
        self._any: Callable[[str], bool] | None = None
        #: The same over many paths at once, one a line (see :meth:`cleared`); None: ask each path.
        self._lines: Callable[[bytes], set[int]] | None = None
        #: Those two for every line, hiding or bringing back (see :meth:`verdict`).
        self._any_line: Callable[[str], bool] | None = None
        self._every_line: Callable[[bytes], set[int]] | None = None
        if sources:
            self._any, self._lines = _joint(sources, options)
        if returns:
            self._any_line, self._every_line = _joint(sources + returns, options)
        else:
            self._any_line, self._every_line = self._any, self._lines

    def match(self, path: str) -> bool:
        """Whether the lines ignore ``path`` (relative, '/'-separated; a folder ends with '/')."""
        if not self._hides:
            return False
        path = re2_text(path)
        if self._any is not None:
            # What the spec will match: it drops a leading '/' or './' (once) itself.
            plain = not NORMALIZE_PATH_SEPS and not path.startswith(("/", "./"))
            if not self._any(path if plain else normalize_file(path)):
                return False  # no line that hides anything matches: most paths end here
        return self._decide(normalize_file(path)) is True

    def _decide(self, path: str) -> bool | None:
        """What the lines say of the normalised ``path``: True (ignored), False (brought back by a
        ``!`` line) or None (no line matches).

        pathspec's ``GitIgnoreSpec`` rule, applied in the lines' order: the last line that
        matches decides, except that a later line matching only as a folder above the path (or
        as the folder itself) does not undo a line that hides that folder.  (pathspec 1.x
        checks the lines from the last and lets a line matching the path itself win over a
        later folder line: ``!*`` then ``/.aihub/`` no longer hid the state folder.)
        """
        decided: bool | None = None
        priority = 0
        for hides, regex in self._checks:
            found = regex.search(path)
            if found is None:
                continue
            folder = found.groupdict().get("ps_d")  # matched as a folder (pathspec's mark)
            rank = 1 if folder else 2
            if hides and folder:
                # A folder above it is hidden: the path is, whatever came before, and what hid the
                # path itself keeps its rank (a later `!folder/` must not bring back `folder/.env`).
                decided, priority = True, max(priority, rank)
            elif rank >= priority:
                decided, priority = hides, rank
        return decided

    def verdict(self, path: str) -> bool | None:
        """What the lines say of ``path`` itself (as :meth:`match` takes it), as git reads a
        ``.gitignore``: the last line that matches it decides, True if it ignores it, False if
        it is a ``!`` line; None if no line matches it (a ``.gitignore`` further up then decides).

        Unlike :meth:`match`, a line does not match what is inside a folder it matches (the
        caller asks about the folders above first: nothing comes back from an ignored folder),
        and ``dir/**`` matches what is inside ``dir``, not ``dir`` itself.
        """
        if not (self._hides or self._returns):
            return None
        path = normalize_file(re2_text(path))
        if self._any_line is not None and not self._any_line(path):
            return None  # no line matches: most paths end here
        if self._exact is None:
            self._exact = [(hides, _exact_regex(regex)) for hides, regex in self._checks]
        decided: bool | None = None
        for hides, regex in self._exact:
            if regex.search(path) is not None:
                decided = hides
        return decided

    def cleared(self, paths: list[str], *, every_line: bool = False) -> set[int] | None:
        """The indexes of ``paths`` that :meth:`match` is sure to say False of (None: not known).

        Asked of many paths at once: a path outside the answer may still be ignored, or
        not (ask :meth:`match`); one inside is not ignored.  A path holding a newline, or
        starting with '/' or './', is never in it.  With ``every_line``: the paths that no
        line matches at all, not even a ``!`` line (:meth:`verdict` is sure to say None of).
        """
        lines = self._every_line if every_line else self._lines
        if not (self._hides or (every_line and self._returns)):
            return set(range(len(paths)))
        if lines is None or NORMALIZE_PATH_SEPS:
            return None
        unsure: set[int] = set()
        encoded: list[bytes] = []
        for index, path in enumerate(paths):
            path = re2_text(path)
            if "\n" in path or path.startswith(("/", "./")):
                unsure.add(index)
                path = ""
            encoded.append(path.encode("utf-8"))
        unsure |= lines(b"\n".join(encoded))
        return {index for index in range(len(paths)) if index not in unsure}

    def cleared_names(
        self, head: str, names: list[str], *, every_line: bool = False
    ) -> tuple[set[str], set[str]] | None:
        """(files, folders): which of ``names``, each asked about as ``head + name`` (and as a
        folder, with '/' after it), :meth:`match` is sure to say False of; None: not known.

        :meth:`cleared` for the entries of one folder, with the text for RE2 built in a
        few steps instead of a few per name (ASCII names without newlines; other names
        take the way of :meth:`cleared`; ``every_line`` as there).
        """
        lines = self._every_line if every_line else self._lines
        if not (self._hides or (every_line and self._returns)):
            return set(names), set(names)
        if lines is None or NORMALIZE_PATH_SEPS:
            return None
        files = head + ("\n" + head).join(names)
        simple = (
            files.isascii()
            and files.count("\n") == len(names) - 1  # no newline in a name (or the head)
            and not files.startswith(("/", "./"))
            and "\n/" not in files
            and "\n./" not in files
        )
        count = len(names)
        if simple:
            text = files + "\n" + files.replace("\n", "/\n") + "/"
            matched = lines(text.encode("ascii"))
        else:
            cleared = self.cleared(
                [head + name for name in names] + [head + name + "/" for name in names], every_line=every_line
            )
            if cleared is None:
                return None
            matched = set(range(2 * count)) - cleared
        if not matched:
            return set(names), set(names)
        return (
            set(names) - {names[i] for i in matched if i < count},
            set(names) - {names[i - count] for i in matched if i >= count},
        )

    def matcher(self) -> Callable[[str], bool]:
        """:meth:`match` as one function, for the many paths of a walk (the same answers)."""
        quick = self._any
        if not self._hides:
            return _never
        if quick is None or NORMALIZE_PATH_SEPS:
            return self.match
        full = self._decide
        slow = self.match

        def match(path: str) -> bool:
            # An ASCII path holds no surrogate escape (re2_text leaves it as it is); one that
            # does not start with '/' or './' is the same once pathspec has normalised it.
            if not path.isascii() or path.startswith(("/", "./")):
                return slow(path)
            return quick(path) and full(path) is True

        return match


def _never(path: str) -> bool:
    return False


def _valid(line: str) -> bool:
    try:
        _pathspec([line])
    except (ValueError, re.error):
        return False
    return True


def _pathspec(lines: list[str]) -> pathspec.GitIgnoreSpec:
    """``lines`` compiled by pathspec with its pure-Python backend (whose patterns IgnoreSpec recompiles).

    pathspec 1.x switches by itself to its RE2 backend when ``google-re2`` is
    installed, and that backend cannot take a file name that is not UTF-8; its
    ``re2.Set`` also answers "no match" when it runs out of memory, which would
    show a secret. The simple backend asks each pattern's ``regex.search``.
    """
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines, backend="simple")
    except TypeError:  # pathspec < 1.0 has no backends (and never picks RE2)
        return pathspec.GitIgnoreSpec.from_lines(lines)


def gitignore_spec(lines: list[str], *, strict: bool = True) -> IgnoreSpec:
    """``lines`` (gitignore syntax) compiled; see :class:`IgnoreSpec`."""
    return IgnoreSpec(lines, strict=strict)


def lexical_path(path: str) -> str:
    # The path as the caller wrote it, without './' and '//' (for matching only; the
    # sandbox resolves the real one).
    return "/".join(p for p in path.split("/") if p not in ("", "."))


def project_gitignore(sandbox: Sandbox, rules: IgnoreRules | None) -> GitIgnore:
    """The project's ``.gitignore`` files, read through ``sandbox``.

    One that is hidden, or a link to a hidden file (``.gitignore -> .env``), is not
    read: which names its lines ignore would tell, line by line, what the secret holds.
    """

    def read(name: str) -> bytes:
        guard = None if rules is None else (lambda rel: rules.check_read(name, rel))
        return sandbox.read_file(name, max_bytes=1024 * 1024, guard=guard)

    return GitIgnore(read)


def walk_filter(rules: IgnoreRules | None, gitignore: GitIgnore | None) -> WalkFilter | None:
    """A :class:`WalkFilter` for one walk; None when there is nothing to hide."""
    if rules is None and gitignore is None:
        return None
    return WalkFilter(rules, gitignore)


#: A folder's .gitignore files not looked at yet.
_UNKNOWN: Any = object()


class _Folder:
    """What a :class:`WalkFilter` knows of one folder of the walk."""

    __slots__ = ("chain", "git_clear", "hidden", "names", "secret_clear")

    def __init__(self, names: list[str] | None) -> None:
        #: Whether the rules hide it (it or a folder above it); None: not asked yet.
        self.hidden: bool | None = None
        #: Its entries' names, as the walk announced them (None: not announced).
        self.names = names
        #: (files, folders): names of its entries the rules surely do not hide; None: ask each.
        self.secret_clear: tuple[set[str], set[str]] | None = None
        #: None if it is in .git or ignored, else the (offset of the path below it, rules, verdict) of each
        #: .gitignore that applies; _UNKNOWN until needed.
        self.chain: Any = _UNKNOWN
        #: For each of ``chain``: (files, folders) that surely do not match; None: ask each.
        self.git_clear: list[tuple[set[str], set[str]] | None] = []


class WalkFilter:
    """``hide(rel, is_dir)`` for the many entries of one walk: whether ``rules`` hide the entry
    (:meth:`IgnoreRules.hidden`) or ``gitignore`` ignores it (:meth:`GitIgnore.ignored`).

    The same answers as asking those two, in that order (a folder's ``.gitignore`` is read
    only once an entry there is not hidden by the rules), for a fraction of the cost:

    * what can be said of an entry's folder (is it, or a folder above it, hidden? is it
      in ``.git``? which ``.gitignore`` files apply?) is worked out once per folder;
    * a walk that announces a folder's names (:meth:`prepare`) before it asks about them
      has them judged together, one call of RE2 per folder and set of rules for all
      the names that nothing matches (:meth:`IgnoreSpec.cleared`); only a name that
      something may match is then judged alone, exactly as before.  A name that was not
      announced is judged alone too.

    Paths are taken as a walk builds them (relative, '/'-separated, no empty, '.' or
    '..' component).  The walk must go depth first: announcing a folder forgets what
    was known of the folders that are not above it (asking again would only cost time).
    """

    def __init__(self, rules: IgnoreRules | None, gitignore: GitIgnore | None) -> None:
        self._rules = rules
        self._gitignore = gitignore
        self._secret = _never if rules is None else rules._spec.matcher()
        self._folders: dict[str, _Folder] = {}

    def prepare(self, folder: str, names: list[str]) -> None:
        """The walk is about to ask about the entries ``names`` of ``folder``."""
        for known in [k for k in self._folders if not _above(k, folder)]:
            del self._folders[known]  # walked already (depth first)
        self._folders[folder] = _Folder(names)
        if self._gitignore is not None and ".gitignore" not in names:
            self._gitignore.absent(folder)

    def __call__(self, rel: str, is_dir: bool) -> bool:
        parent, _, name = rel.rpartition("/")
        state = self._folders.get(parent)
        if state is None:
            state = self._folders[parent] = _Folder(None)
        if self._rules is not None:
            if state.hidden is None:
                state.hidden = self._rules.hidden(parent, is_dir=True)
            if state.hidden:
                return True
            clear = state.secret_clear
            if clear is None and state.names is not None:
                clear = state.secret_clear = _cleared(self._rules._spec, parent, 0, state.names)
            if (clear is None or name not in clear[is_dir]) and self._secret(rel + "/" if is_dir else rel):
                return True
        if self._gitignore is None:
            return False
        if name == ".git":
            return True
        chain = state.chain
        if chain is _UNKNOWN:
            chain = state.chain = self._gitignore.matchers(parent)
            state.git_clear = [None] * len(chain or ())
        if chain is None:
            return True
        # The deepest .gitignore with a line matching the entry decides (see GitIgnore).
        for index in range(len(chain) - 1, -1, -1):
            cut, spec, verdict = chain[index]
            clear = state.git_clear[index]
            if clear is None and state.names is not None:
                clear = state.git_clear[index] = _cleared(spec, parent, cut, state.names, every_line=True)
            if clear is not None and name in clear[is_dir]:
                continue  # no line of it matches: it has no say
            said = verdict(rel[cut:] + "/" if is_dir else rel[cut:])
            if said is not None:
                return bool(said)
        return False


def _above(folder: str, below: str) -> bool:
    """Whether ``folder`` is ``below`` or a folder above it."""
    return not folder or folder == below or below.startswith(folder + "/")


def _cleared(
    spec: IgnoreSpec, folder: str, cut: int, names: list[str], *, every_line: bool = False
) -> tuple[set[str], set[str]] | None:
    """(files, folders): which of the entries ``names`` of ``folder`` ``spec`` surely does not
    match, each asked about as ``path[cut:]``; None if that cannot be told."""
    return spec.cleared_names((f"{folder}/" if folder else "")[cut:], names, every_line=every_line)


class GitIgnore:
    """The project's own ``.gitignore`` files (each folder's, and ``.git/info/exclude``), read through the sandbox.

    Used to keep listings of real repositories free of ``node_modules/``,
    ``.venv/`` and build output. ``.git/`` itself is left out too.

    Read as git reads them: of the files that apply to a path, the one in the deepest
    folder that has a line matching it decides (its last such line, so a ``!`` line
    there brings back what a ``.gitignore`` further up ignores), the root's
    ``.git/info/exclude`` last of all; and nothing inside an ignored folder comes back.
    """

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self._read = read
        self._specs: dict[str, IgnoreSpec | None] = {}
        #: For each folder: the (folder, spec) of itself and its parents that have rules, from
        #: the root down (``.git/info/exclude`` first, as the root's: it yields to all of them).
        self._chains: dict[str, list[tuple[str, IgnoreSpec]]] = {}
        #: Folders whose listing showed no .gitignore (not looked for again: see :meth:`absent`).
        self._absent: set[str] = set()
        #: Whether each folder (or one above it) is ignored, as far as asked.
        self._folders: dict[str, bool] = {"": False}

    def absent(self, folder: str) -> None:
        """``folder`` was listed and holds no ``.gitignore``: do not try to read one there.

        A walk that has just read the folder's names spares a failed read through the
        sandbox per folder (a walk from the root for each).  One created since the listing
        is missed, as if it had been created a moment later.
        """
        if folder not in self._specs:
            self._absent.add(folder)

    def _lines_of(self, name: str) -> IgnoreSpec | None:
        try:
            lines = self._read(name).decode("utf-8", errors="replace").splitlines()
        except RpcError:
            return None  # none there, or not readable inside the root: no rules from it
        # A line git would not take is left out, not an error that fails every listing; and
        # past MAX_GITIGNORE_LINES the lines are left out too (each costs every path it is
        # asked about a match: a .gitignore is the AI's to write, unlike .aihubignore).
        lines = lines[:MAX_GITIGNORE_LINES]
        return gitignore_spec(lines, strict=False) if lines else None

    def _spec(self, folder: str) -> IgnoreSpec | None:
        if folder not in self._specs:
            name = f"{folder}/.gitignore" if folder else ".gitignore"
            self._specs[folder] = None if folder in self._absent else self._lines_of(name)
        return self._specs[folder]

    def _chain(self, folder: str) -> list[tuple[str, IgnoreSpec]]:
        chain = self._chains.get(folder)
        if chain is None:
            if folder:
                parent = self._chain(folder.rsplit("/", 1)[0] if "/" in folder else "")
            else:
                exclude = self._lines_of(".git/info/exclude")
                parent = [] if exclude is None else [("", exclude)]
            spec = self._spec(folder)
            chain = parent if spec is None else [*parent, (folder, spec)]
            self._chains[folder] = chain
        return chain

    def matchers(self, folder: str) -> list[tuple[int, IgnoreSpec, Callable[[str], bool | None]]] | None:
        """For the entries of ``folder``: None if it is in ``.git`` or ignored (or a folder above
        it is), else the (offset, rules, their verdict) of each ``.gitignore`` above them, from
        the root down, to be asked about ``entry_path[offset:]``: the last to answer decides."""
        if ".git" in folder.split("/") or self.folder_ignored(folder):
            return None
        return [(len(above) + 1 if above else 0, spec, spec.verdict) for above, spec in self._chain(folder)]

    def folder_ignored(self, folder: str) -> bool:
        """Whether the folder ``folder`` (relative, no '/' at either end) or one above it is ignored."""
        known = self._folders.get(folder)
        if known is None:
            parent = folder.rsplit("/", 1)[0] if "/" in folder else ""
            known = self.folder_ignored(parent) or self._decide(folder, True)
            self._folders[folder] = known
        return known

    def _decide(self, rel: str, is_dir: bool) -> bool:
        """What the deepest ``.gitignore`` with a line matching ``rel`` says (its folders not asked about)."""
        suffix = "/" if is_dir else ""
        for folder, spec in reversed(self._chain(rel.rpartition("/")[0])):
            verdict = spec.verdict((rel[len(folder) + 1 :] if folder else rel) + suffix)
            if verdict is not None:
                return verdict
        return False

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` is ignored: it is in ``.git``, a folder above it is ignored, or the
        deepest ``.gitignore`` (or ``.git/info/exclude``) with a line that matches it ignores it."""
        rel = rel.strip("/")
        # `.git` as any component (as `".git" in rel.split("/")`, without the list).
        if rel == ".git" or rel.startswith(".git/") or rel.endswith("/.git") or "/.git/" in rel:
            return True
        if not rel:
            return False
        return self.folder_ignored(rel.rpartition("/")[0]) or self._decide(rel, is_dir)
