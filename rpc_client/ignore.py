"""Paths the AI may not see: secrets by default, plus the project's ``.aihubignore``.

Gitignore syntax (via ``pathspec``, the library git-style tools use): a
pattern matches at any depth, ``dir/`` matches a folder and everything in it,
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

import pathspec

from schemas.errors import ErrorCode, RpcError

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
        self._any = _any_ignoring(self._spec)

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
        rules = cls(patterns, " + ".join(sources) or "none")
        # The file that holds the rules may never be written by the AI, wherever it is.
        with contextlib.suppress(ValueError):
            rules.rules_file = path.resolve().relative_to(root.resolve()).as_posix()
        return rules

    def hidden(self, rel: str, *, is_dir: bool = False) -> bool:
        """Whether ``rel`` (relative, '/'-separated) or a folder it is in is ignored."""
        rel = rel.strip("/")
        if not rel or rel == ".":
            return False
        if self._spec.match_file(rel + "/" if is_dir else rel):
            return True
        # A file inside an ignored folder: check each parent as a folder.
        parts = rel.split("/")
        return any(self._spec.match_file("/".join(parts[:i]) + "/") for i in range(1, len(parts)))

    def hidden_entry(self, rel: str, *, is_dir: bool) -> bool:
        """Whether an entry met in a walk is hidden, its folders being known not to be.

        :meth:`hidden` without the check of each parent folder: a walk that enters only
        folders this said were not hidden (from a start that :meth:`check_read`
        allowed) has checked them already, and searching a large tree pays once per
        entry instead of once per entry and level.
        """
        subject = rel + "/" if is_dir else rel
        if self._any is not None and self._any.search(subject) is None:
            return False  # no pattern that hides anything matches: most entries end here
        return bool(self._spec.match_file(subject))

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


def gitignore_spec(lines: list[str]) -> pathspec.GitIgnoreSpec:
    """``lines`` compiled with pathspec's pure-Python backend.

    pathspec 1.x switches by itself to its RE2 backend when ``google-re2`` is
    installed (search_files needs it), and that backend cannot take a file name
    that is not UTF-8 (``"caf\\udce9"``): it raised instead of answering. The
    simple backend matches any ``str``, as before.
    """
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines, backend="simple")
    except TypeError:  # pathspec < 1.0 has no backends (and never picks RE2)
        return pathspec.GitIgnoreSpec.from_lines(lines)


def _any_ignoring(spec: pathspec.GitIgnoreSpec) -> re.Pattern[str] | None:
    """One regular expression matching wherever any of ``spec``'s hiding patterns matches.

    A path it does not match is not ignored (``!`` patterns only bring paths back), so
    a walk asks the full spec, pattern by pattern, only about the few paths it
    matches. None when the patterns are not the regular expressions expected.
    """
    sources = []
    for pattern in spec.patterns:
        regex = getattr(pattern, "regex", None)
        include = getattr(pattern, "include", None)
        if include is None:
            continue  # a comment or blank line
        if not isinstance(regex, re.Pattern):
            return None
        if include:
            # pathspec marks a folder match with a named group; one name cannot appear twice.
            sources.append("(?:" + regex.pattern.replace("(?P<ps_d>", "(?:") + ")")
    if not sources:
        return re.compile(r"(?!)")  # nothing is ever hidden
    try:
        return re.compile("|".join(sources))
    except re.error:
        return None


def lexical_path(path: str) -> str:
    # The path as the caller wrote it, without './' and '//' (for matching only; the
    # sandbox resolves the real one).
    return "/".join(p for p in path.split("/") if p not in ("", "."))


class GitIgnore:
    """The project's own ``.gitignore`` files (each folder's, and ``.git/info/exclude``), read through the sandbox.

    Used to keep listings of real repositories free of ``node_modules/``,
    ``.venv/`` and build output. ``.git/`` itself is left out too.
    """

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self._read = read
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}
        #: For each folder: the (folder, spec) of itself and its parents that have rules.
        self._chains: dict[str, list[tuple[str, pathspec.GitIgnoreSpec]]] = {}

    def _spec(self, folder: str) -> pathspec.GitIgnoreSpec | None:
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
            self._specs[folder] = gitignore_spec(lines) if lines else None
        return self._specs[folder]

    def _chain(self, folder: str) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
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
            if spec.match_file(below + suffix):
                return True
        return False
