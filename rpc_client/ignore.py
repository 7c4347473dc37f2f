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
from pathspec.util import normalize_file

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

    def check_read(self, shown: str, rel: str) -> None:
        # As a file and as a folder: `.ssh` is refused whether it is one or the other.
        candidates = (rel, lexical_path(shown))
        if any(self.hidden(c) or self.hidden(c, is_dir=True) for c in candidates):
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
    return name.translate(_NAME_SAFE)


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
        sources: list[str] = []
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
            if include:
                # pathspec marks a folder match with a named group; one name cannot appear twice.
                sources.append("(?:" + source.replace("(?P<ps_d>", "(?:") + ")")
        self._spec = _pathspec_of(kept)
        #: Whether any line hides anything (``!`` lines only bring paths back).
        self._hides = bool(sources)
        #: One RE2 expression matching wherever any hiding line matches; None: ask each line.
        self._any: Any = None
        if sources:
            with contextlib.suppress(re2.error):  # too large as one expression
                self._any = re2.compile("|".join(sources), options)

    def match(self, path: str) -> bool:
        """Whether the lines ignore ``path`` (relative, '/'-separated; a folder ends with '/')."""
        if not self._hides:
            return False
        path = re2_text(path)
        # What the spec will match: it drops a leading '/' or './' (once) itself.
        if self._any is not None and self._any.search(normalize_file(path)) is None:
            return False  # no line that hides anything matches: most paths end here
        return bool(self._spec.match_file(path))


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


def _pathspec_of(patterns: list[Any]) -> pathspec.GitIgnoreSpec:
    try:
        return pathspec.GitIgnoreSpec(patterns, backend="simple")
    except TypeError:
        return pathspec.GitIgnoreSpec(patterns)


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


class GitIgnore:
    """The project's own ``.gitignore`` files (each folder's, and ``.git/info/exclude``), read through the sandbox.

    Used to keep listings of real repositories free of ``node_modules/``,
    ``.venv/`` and build output. ``.git/`` itself is left out too.
    """

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self._read = read
        self._specs: dict[str, IgnoreSpec | None] = {}
        #: For each folder: the (folder, spec) of itself and its parents that have rules.
        self._chains: dict[str, list[tuple[str, IgnoreSpec]]] = {}

    def _spec(self, folder: str) -> IgnoreSpec | None:
        if folder not in self._specs:
            lines: list[str] = []
            names = [f"{folder}/.gitignore" if folder else ".gitignore"] + (
                [] if folder else [".git/info/exclude"]
            )
            for name in names:
                try:
                    lines += self._read(name).decode("utf-8", errors="replace").splitlines()
                except RpcError:
                    continue  # none there, or not readable inside the root: no rules from it
            # A line git would not take is left out, not an error that fails every listing; and
            # past MAX_GITIGNORE_LINES the lines are left out too (each costs every path it is
            # asked about a match: a .gitignore is the AI's to write, unlike .aihubignore).
            lines = lines[:MAX_GITIGNORE_LINES]
            self._specs[folder] = gitignore_spec(lines, strict=False) if lines else None
        return self._specs[folder]

    def _chain(self, folder: str) -> list[tuple[str, IgnoreSpec]]:
        chain = self._chains.get(folder)
        if chain is None:
            parent = [] if not folder else self._chain(folder.rsplit("/", 1)[0] if "/" in folder else "")
            spec = self._spec(folder)
            chain = parent if spec is None else [*parent, (folder, spec)]
            self._chains[folder] = chain
        return chain

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether the rules of any folder above ``rel`` (each matching the path below it) ignore it."""
        rel = rel.strip("/")
        parts = rel.split("/")
        if ".git" in parts:
            return True
        suffix = "/" if is_dir else ""
        for folder, spec in self._chain("/".join(parts[:-1])):
            below = rel[len(folder) + 1 :] if folder else rel
            if spec.match(below + suffix):
                return True
        return False
