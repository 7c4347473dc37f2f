"""Which commands are dangerous: the rules, applied to every simple command of a shell text.

A command is **dangerous** when any part of it deletes, truncates, moves away
or overwrites files or folders, raises privilege, or cannot be analysed (a
command name only known at run time, ``eval`` of built strings, a script piped
into a shell): when in doubt, it is dangerous. A short allow-list of read-only
commands is **safe**; everything else is **ordinary**.

Wrappers (``sudo``, ``env``, ``timeout``, ``xargs``, ``find -exec``, ``sh -c``,
``eval``...) are unwrapped and the command inside is judged too, so wrapping
never makes a dangerous command less dangerous.
"""

from __future__ import annotations

import enum
import glob
import itertools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rpc_client import shell

Kind = Literal["missing", "file", "dir", "outside", "special"]
Probe = Callable[[str], Kind]
Args = Sequence[str | None]

MAX_DEPTH = 6


class Level(enum.IntEnum):
    SAFE = 0
    ORDINARY = 1
    DANGEROUS = 2


@dataclass(frozen=True)
class Verdict:
    level: Level
    reasons: tuple[str, ...] = ()

    @property
    def dangerous(self) -> bool:
        return self.level is Level.DANGEROUS

    @property
    def safe(self) -> bool:
        return self.level is Level.SAFE


@dataclass(frozen=True)
class Finding:
    level: Level
    reason: str = ""


SAFE = Finding(Level.SAFE)
ORDINARY = Finding(Level.ORDINARY)


def danger(reason: str) -> Finding:
    return Finding(Level.DANGEROUS, reason)


def root_probe(root: Path) -> Probe:
    """What a path names, seen from ``root`` (a heuristic for judging; not the sandbox)."""
    base = os.path.realpath(root)

    def kind(path: str) -> Kind:
        if path.startswith("/dev/"):
            return "special"
        if path.startswith("~"):
            return "outside"
        full = path if os.path.isabs(path) else os.path.join(base, path)
        real = os.path.realpath(full)
        if real != base and not real.startswith(base + os.sep):
            return "outside"
        if os.path.isdir(real):
            return "dir"
        return "file" if os.path.lexists(full) else "missing"

    return kind


def _conservative_probe(path: str) -> Kind:
    """Without a root to look at: anything absolute or upward is outside, anything else exists."""
    if path.startswith("/dev/"):
        return "special"
    if path.startswith(("/", "~", "..")):
        return "outside"
    return "file"


#: Read-only commands, known safe when no other rule applies to them.
SAFE_COMMANDS = frozenset(
    [
        "ls",
        "cat",
        "head",
        "tail",
        "grep",
        "egrep",
        "fgrep",
        "rg",
        "ag",
        "ack",
        "wc",
        "pwd",
        "echo",
        "printf",
        "true",
        "false",
        ":",
        "which",
        "type",
        "whereis",
        "file",
        "stat",
        "du",
        "df",
        "tree",
        "date",
        "whoami",
        "id",
        "uname",
        "hostname",
        "diff",
        "cmp",
        "comm",
        "sort",
        "cut",
        "tr",
        "basename",
        "dirname",
        "realpath",
        "readlink",
        "nl",
        "jq",
        "md5sum",
        "sha1sum",
        "sha256sum",
        "sha512sum",
        "cksum",
        "seq",
        "column",
        "od",
        "hexdump",
        "strings",
        "less",
        "more",
        "test",
        "[",
        "printenv",
        "tac",
        "rev",
        "fold",
        "fmt",
        "expand",
        "unexpand",
        "paste",
        "join",
        "nproc",
        "free",
        "uptime",
        "ps",
        "pgrep",
        "env",
        "find",
        "git",
    ]
)
DELETERS = {
    "rm": "deletes files or folders",
    "rmdir": "deletes folders",
    "unlink": "deletes files",
    "shred": "destroys file contents",
    "srm": "destroys files",
    "wipe": "destroys files",
    "truncate": "truncates files",
    "mv": "moves files away (and overwrites the destination)",
}
SYSTEM = {
    "mkfs": "formats a file system",
    "mke2fs": "formats a file system",
    "mkswap": "formats a device",
    "wipefs": "erases file system signatures",
    "fdisk": "rewrites a partition table",
    "sfdisk": "rewrites a partition table",
    "cfdisk": "rewrites a partition table",
    "parted": "rewrites a partition table",
    "sgdisk": "rewrites a partition table",
    "blkdiscard": "erases a device",
    "chown": "changes file ownership",
    "chgrp": "changes file ownership",
    "setcap": "grants capabilities",
    "chroot": "changes the root (needs privilege)",
    "nsenter": "enters other namespaces (needs privilege)",
    "mount": "mounts file systems",
    "umount": "unmounts file systems",
    "passwd": "changes passwords",
    "useradd": "changes users",
    "usermod": "changes users",
    "userdel": "deletes users",
    "visudo": "changes privileges",
    "shutdown": "stops the machine",
    "reboot": "restarts the machine",
    "halt": "stops the machine",
    "poweroff": "stops the machine",
    "pkill": "kills processes by name",
    "killall": "kills processes by name",
}
PRIVILEGE = {"sudo", "doas", "pkexec", "run0", "su"}
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "yash"}
INLINE_FLAGS = {
    "python": ("-c",),
    "pypy": ("-c",),
    "node": ("-e", "--eval", "-p", "--print"),
    "nodejs": ("-e", "--eval", "-p", "--print"),
    "deno": ("eval",),
    "bun": ("-e", "--eval"),
    "perl": ("-e", "-E"),
    "ruby": ("-e",),
    "php": ("-r",),
    "lua": ("-e",),
}
_PYTHON = re.compile(r"^(python|pypy)(\d+(\.\d+)?)?$")
#: Inline code that deletes, overwrites, renames or runs other programs.
_RISKY_CODE = re.compile(
    r"""(
      \b(os|shutil|fs|FileUtils|File|Dir|pathlib|Path)\s*\.\s*\w*(remove|unlink|rmtree|rmdir|rm|rename|move|
          replace|truncate|delete|write|system|popen|exec|spawn|chmod|chown|kill)\w*\s*\(
    | \.\s*(unlink\w*|rmdir\w*|rm|rmSync|rename\w*|write_text|write_bytes|writeFile\w*|truncate\w*|chmod\w*|
          rmtree|copyFile\w*|cpSync|symlink\w*)\s*\(
    | \b(subprocess|child_process|ctypes|pty)\b
    | \b(__import__|exec|eval|compile|system|unlink|rmtree|qx)\s*[\(\s'"{]
    | \bopen\s*\([^)]*,\s*(mode\s*=\s*)?f?['"][^'"]*[wxa+>]
    | \bopen\s*\(?\s*\w*\s*,?\s*['"]\s*\+?[>|]
    | `
    | %x
    )""",
    re.VERBOSE,
)
_RESERVED = frozenset(
    [
        "then",
        "else",
        "elif",
        "fi",
        "do",
        "done",
        "esac",
        "in",
        "{",
        "}",
        "!",
        "[[",
        "]]",
        "function",
        "select",
        "case",
        "if",
        "while",
        "until",
        "for",
    ]
)
_GLOB = re.compile(r"[*?\[]")
_BUILD_OUTPUT_DIRS = {
    "build", "dist", "target", "out", "node_modules", "__pycache__", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", "coverage", "htmlcov", ".tox", ".nox", ".cache", ".next", ".parcel-cache",
}  # fmt: skip
_BUILD_OUTPUT_SUFFIXES = (".log", ".o", ".pyc", ".out", ".tmp", ".class")
_DEVICES_OK = ("/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty", "/dev/fd/")


#: Variables that make programs load or run other code.
_RISKY_VARIABLES = re.compile(
    r"^(LD_\w+|BASH_ENV|ENV|PROMPT_COMMAND|PS4|IFS|GIT_\w+|PAGER|MANPAGER|EDITOR|VISUAL|LESSOPEN|LESSCLOSE|"
    r"NODE_OPTIONS|PERL5OPT|PERL5LIB|PERLLIB|RUBYOPT|RUBYLIB|PYTHONSTARTUP|PYTHONPATH|PYTHONHOME|SHELLOPTS|BASHOPTS)$"
)


def _assignment(name: str) -> Finding:
    if _RISKY_VARIABLES.match(name):
        return danger(f"sets {name}, which can make programs run other code")
    return ORDINARY  # a variable changes what a command does: never "known safe"


def is_build_output(path: str) -> bool:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return bool(parts) and (parts[0] in _BUILD_OUTPUT_DIRS or parts[-1].endswith(_BUILD_OUTPUT_SUFFIXES))


class Judge:
    """Classifies shell text. ``probe`` tells what a path names (for overwrite checks)."""

    def __init__(
        self,
        probe: Probe | None = None,
        protected: Sequence[str] = (),
        secret: Callable[[str], bool] | None = None,
        *,
        root: Path | None = None,
        frozen: Sequence[str] = (),
    ) -> None:
        self.probe: Probe = probe or _conservative_probe
        #: Text that no command may mention: the state folder, where the token lives.
        self.protected = (*protected, ".aihub")
        #: Whether a word names a path the ignore rules hide (``.env``, ``id_rsa``...).
        self.secret = secret
        #: Paths no command may touch (relative): the rules file, git's config and hooks.
        self.frozen = (*frozen, ".aihubignore", ".git/config", ".git/hooks")
        #: Where glob words are expanded, to judge what they would name.
        self.root = root

    # --- entry point -----------------------------------------------------

    def classify(self, text: str, depth: int = 0) -> Verdict:
        findings = self._script(text, depth)
        level = max((f.level for f in findings), default=Level.SAFE)
        reasons = tuple(dict.fromkeys(f.reason for f in findings if f.level is level and f.reason))
        return Verdict(level, reasons)

    def _script(self, text: str, depth: int) -> list[Finding]:
        if depth > MAX_DEPTH:
            return [danger("nests shells too deeply to be analysed")]
        try:
            script = shell.parse(text)
        except Exception:  # the grammar must never be the way around the policy
            return [danger("cannot be analysed")]
        findings = [danger(f"cannot be analysed ({error})") for error in script.errors]
        moves = any(c.argv and c.argv[0] in ("cd", "pushd", "popd") for c in script.commands)
        probe = self.probe
        if moves:
            # After a cd, a relative name may be any file: judge it as an existing one.
            self.probe = lambda path: "file" if probe(path) == "missing" else probe(path)
        try:
            for command in script.commands:
                findings += self._command(command.argv, depth, command.stdin_fed)
                findings += self._protected(command.argv)
        finally:
            self.probe = probe
        for redirect in script.redirects:
            target = redirect.target
            relative = target is None or not (target.startswith(("/", "&")) or target.isdigit())
            if moves and redirect.op.startswith((">", "&>")) and relative:
                findings.append(danger("writes to a file after changing folder: cannot tell which file"))
                continue
            findings.append(self._redirect(redirect))
            findings += self._protected([redirect.target])
        for name, _value in script.assignments:
            findings.append(_assignment(name))
        return findings

    def _protected(self, words: Args) -> list[Finding]:
        for word in words:
            if word is None:
                continue
            for name in self._expand(word):
                if found := self._protected_name(word, name):
                    return [found]
        return []

    def _expand(self, word: str) -> list[str]:
        """The word, and what it names as a file pattern (``.en?`` -> ``.env``), as bash would expand it."""
        value = word.split("=", 1)[-1]  # --env-file=./.env
        if not _GLOB.search(value):
            return [value]
        pattern = os.path.expanduser(value)
        try:
            # As bash: a pattern matches dot files only when it starts with a dot itself.
            found = list(itertools.islice(glob.iglob(pattern, root_dir=self.root), 1000))
        except (OSError, ValueError, re.error):
            found = []
        return [value, *found]

    def _protected_name(self, word: str, name: str) -> Finding | None:
        if any(p in name for p in self.protected):
            return danger(f"touches the client's state folder (its token): {word!r}")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        wrapped = "/" + "/".join(parts) + "/"
        for frozen in self.frozen:
            if f"/{frozen}/" in wrapped:
                return danger(
                    f"touches {word!r}: {frozen} may not be changed by commands (it runs code later)"
                )
        candidate = "/".join(parts)
        if self.secret is not None and candidate and not candidate.startswith("-") and self.secret(candidate):
            return danger(f"touches {word!r}, which the ignore rules hide from the AI")
        return None

    # --- pieces ----------------------------------------------------------

    def _overwrite(self, target: str | None, what: str = "writes to") -> Finding:
        if target is None:
            return danger(f"{what} a file named only at run time")
        if target.startswith(_DEVICES_OK):
            return SAFE
        kind = self.probe(target)
        if kind == "outside":
            return danger(f"{what} {target!r}, outside the project")
        if kind == "special":
            return danger(f"{what} the device {target!r}")
        if kind == "file" and not is_build_output(target):
            return danger(f"overwrites the existing file {target!r}")
        return ORDINARY

    def _redirect(self, redirect: shell.Redirect) -> Finding:
        op, target = redirect.op, redirect.target
        if not op or op.startswith("<"):  # reads (and <>, which never truncates)
            return SAFE
        if op in (">&", "<&", "&>") and target is not None and (target.isdigit() or target == "-"):
            return SAFE if op != "&>" else self._overwrite(target)
        if op in (">>", "&>>"):
            if target is not None and target.startswith(_DEVICES_OK):
                return SAFE
            if target is None or self.probe(target) in ("outside", "special"):
                return danger(
                    f"appends to {target!r}, outside the project"
                    if target
                    else "appends to a file named at run time"
                )
            return ORDINARY
        return self._overwrite(target, "redirects output onto")

    def _command(self, argv: Args, depth: int, stdin_fed: bool = False) -> list[Finding]:
        if not argv:
            return []
        name = argv[0]
        if name is None:
            return [danger("the command's name is only known at run time")]
        if _GLOB.search(name):
            return [danger(f"the command name {name!r} is a pattern")]
        if name in _RESERVED:
            # tree-sitter reads a misplaced keyword as a command name; bash would refuse the text.
            return [danger(f"cannot be analysed (misplaced {name!r})")]
        base = name.rsplit("/", 1)[-1]
        args = list(argv[1:])
        if base.startswith("mkfs."):
            base = "mkfs"
        if base in DELETERS:
            return [danger(f"{base}: {DELETERS[base]}")]
        if base in SYSTEM:
            return [danger(f"{base}: {SYSTEM[base]}")]
        if base in SCRIPTED:
            return [danger(f"{base}: {SCRIPTED[base]}")]
        rule = _RULES.get(base)
        if rule is not None:
            return rule(self, base, args, depth, stdin_fed)
        if _PYTHON.match(base):
            return self._interpreter("python", args, depth, stdin_fed)
        if base in INLINE_FLAGS:
            return self._interpreter(base, args, depth, stdin_fed)
        if base in SHELLS:
            return self._shell(base, args, depth, stdin_fed)
        return [SAFE if base in SAFE_COMMANDS else ORDINARY]

    def _inner(self, args: Args, depth: int, stdin_fed: bool = False) -> list[Finding]:
        return self._command(args, depth, stdin_fed) if args else [SAFE]

    def _text(self, text: str | None, depth: int, what: str) -> list[Finding]:
        if text is None:
            return [danger(f"{what} text built at run time")]
        return self._script(text, depth + 1)

    def _shell(self, base: str, args: Args, depth: int, stdin_fed: bool) -> list[Finding]:
        i = 0
        inline = False
        while i < len(args):
            arg = args[i]
            if arg is None:
                return [danger(f"{base} is given arguments built at run time")]
            if arg == "--":
                i += 1
                break
            if arg in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
                i += 2
                continue
            if arg.startswith(("-", "+")) and len(arg) > 1:
                if not arg.startswith("--") and "c" in arg[1:]:
                    inline = True
                i += 1
                continue
            break
        rest = args[i:]
        if inline:
            if not rest:
                return [danger(f"{base} -c without a command")]
            return self._text(rest[0], depth, f"{base} -c of")
        if rest:
            return [_script_file(base, rest[0])]
        if stdin_fed:
            return [danger(f"pipes a script into {base}")]
        return [ORDINARY]

    def _interpreter(self, lang: str, args: Args, depth: int, stdin_fed: bool) -> list[Finding]:
        flags = INLINE_FLAGS[lang]
        for i, arg in enumerate(args):
            if arg is None:
                return [danger(f"{lang} is given arguments built at run time")]
            inline = arg in flags or (
                lang in ("perl", "ruby")
                and arg.startswith("-")
                and not arg.startswith("--")
                and "e" in arg[1:].lower()
            )
            if inline:
                code = args[i + 1] if i + 1 < len(args) else None
                if code is None:
                    return [danger(f"inline {lang} code built at run time")]
                if _RISKY_CODE.search(code):
                    return [danger(f"inline {lang} code that deletes, overwrites or runs other programs")]
                return [ORDINARY]
            if arg == "-":
                return [danger(f"pipes a script into {lang}")] if stdin_fed else [ORDINARY]
            if arg in ("-m", "-W", "-X", "--require", "-r", "--import") and lang in (
                "python",
                "node",
                "nodejs",
            ):
                return [ORDINARY]
            if not arg.startswith("-"):
                return [_script_file(lang, arg)]
        return [danger(f"pipes a script into {lang}")] if stdin_fed else [ORDINARY]


# --- per-command rules ----------------------------------------------------------

Rule = Callable[[Judge, str, list[str | None], int, bool], list[Finding]]


def _skip(args: Args, valued: set[str], *, positional_before: int = 0) -> tuple[int, bool]:
    """Index of the wrapped command after options (``valued`` take a value); ``False`` if dynamic."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg is None:
            return i, False
        if arg == "--":
            i += 1
            break
        if arg in valued:
            i += 2
            continue
        if arg.startswith("-") and len(arg) > 1:
            i += 1
            continue
        break
    return i + positional_before, True


def _wrapper(valued: set[str], positional_before: int = 0, reason: str | None = None) -> Rule:
    def rule(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
        i, ok = _skip(args, valued, positional_before=positional_before)
        found = [danger(f"{base}: {reason}")] if reason else []
        if not ok:
            return [*found, danger(f"{base} wraps a command built at run time")]
        return found + judge._inner(args[i:], depth, stdin_fed)

    return rule


def _env(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg is None:
            return [danger("env wraps a command built at run time")]
        if arg in ("-S", "--split-string"):
            return judge._text(args[i + 1] if i + 1 < len(args) else "", depth, "env -S of")
        if arg.startswith("--split-string="):
            return judge._text(arg.split("=", 1)[1], depth, "env -S of")
        if arg.startswith("-") and not arg.startswith("--") and "S" in arg:
            return judge._text(
                arg[arg.index("S") + 1 :] or (args[i + 1] if i + 1 < len(args) else ""), depth, "env -S of"
            )
        if arg in ("-u", "--unset", "-C", "--chdir"):
            i += 2
        elif "=" in arg and not arg.startswith(("=", "-")):
            name = arg.split("=", 1)[0]
            if name.startswith("BASH_FUNC_") or _RISKY_VARIABLES.match(name):
                return [danger(f"env sets {name}, which can make programs run other code")]
            found = _assignment(name)
            i += 1
            return [found, *_env(judge, base, args[i:], depth, stdin_fed)]
        elif arg.startswith("-"):
            i += 1
        else:
            break
    return judge._inner(args[i:], depth, stdin_fed)


def _command_builtin(
    judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool
) -> list[Finding]:
    if any(a in ("-v", "-V") for a in args[:2]):
        return [SAFE]
    return _wrapper(set())(judge, base, args, depth, stdin_fed)


def _eval(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    if any(a is None for a in args):
        return [danger("eval of text built at run time")]
    return judge._text(" ".join(a for a in args if a is not None), depth, "eval of")


def _su(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    found = [danger("su: raises privilege")]
    for i, arg in enumerate(args):
        if arg in ("-c", "--command"):
            return found + judge._text(args[i + 1] if i + 1 < len(args) else "", depth, "su -c of")
    return found


def _xargs(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    valued = {"-I", "-n", "-P", "-L", "-d", "-E", "-s", "-a"}  # -i, -l, -e take only an attached value
    i = 0
    while i < len(args):
        arg = args[i]
        if arg is None:
            return [danger("xargs runs a command built at run time")]
        if arg in valued:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            break
    return judge._inner(args[i:], depth) if args[i:] else [SAFE]  # plain xargs runs echo


def _find(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    found: list[Finding] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-delete":
            found.append(danger("find -delete: deletes files"))
        elif arg in ("-exec", "-execdir", "-ok", "-okdir"):
            end = i + 1
            while end < len(args) and args[end] not in (";", "+"):
                end += 1
            # {} stands for each file found: for judging, a name only known at run time.
            found += judge._inner(
                [None if a is not None and "{}" in a else a for a in args[i + 1 : end]], depth
            )
            i = end
        elif arg in ("-fprint", "-fprint0", "-fls", "-fprintf"):
            found.append(
                judge._overwrite(args[i + 1] if i + 1 < len(args) else None, f"find {arg} writes to")
            )
        i += 1
    return found or [SAFE]


def _targets_overwritten(judge: Judge, base: str, targets: Args) -> list[Finding]:
    return [judge._overwrite(t, f"{base} writes to") for t in targets] or [ORDINARY]


def _copy(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    if base == "rsync" and any(
        a and (a.startswith("--delete") or a == "--remove-source-files") for a in args
    ):
        return [danger("rsync: deletes files")]
    if base == "ln" and not any(
        a and (a in ("--force", "-f") or (a.startswith("-") and not a.startswith("--") and "f" in a))
        for a in args
    ):
        return [ORDINARY]  # ln without -f never replaces anything
    positional = [a for a in args if a is None or not a.startswith("-")]
    explicit = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-t", "--target-directory")]
    if explicit or len(positional) >= 2:
        dest = explicit[0] if explicit else positional[-1]
        sources = positional if explicit else positional[:-1]
        recursive = any(
            a is not None
            and (
                a in ("--recursive", "-T", "--no-target-directory")
                or (a.startswith("-") and not a.startswith("--") and set(a[1:]) & set("rRaT"))
            )
            for a in args
        )
        if dest is not None and judge.probe(dest) == "dir" and recursive:
            return [danger(f"{base} -r into the existing folder {dest!r} may overwrite files in it")]
        if dest is not None and judge.probe(dest) == "dir":
            names = [f"{dest.rstrip('/')}/{s.rstrip('/').rsplit('/', 1)[-1]}" if s else None for s in sources]
            return _targets_overwritten(judge, base, names)
        return [judge._overwrite(dest, f"{base} writes to")]
    return [ORDINARY]


def _tee(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    if any(a in ("-a", "--append") for a in args):
        return [ORDINARY]
    return _targets_overwritten(judge, base, [a for a in args if a is None or not a.startswith("-")])


def _sort(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    for i, arg in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else None
        if arg is None:
            continue
        if arg.startswith("--o"):  # --output, --out, --o (getopt takes any unique prefix)
            target = arg.split("=", 1)[1] if "=" in arg else following
            return [judge._overwrite(target, "sort -o writes to")]
        if arg.startswith("-") and not arg.startswith("--") and "o" in arg[1:]:
            attached = arg[arg.index("o") + 1 :]
            return [judge._overwrite(attached or following, "sort -o writes to")]
    return [SAFE]


#: sed scripts that run commands (e, s///e) or write files (w, W, s///w).
_SED_RISKY = re.compile(r"(^|[;{}\n]|[0-9$/])\s*[eEwW](\s|$)|s(.).*\3.*\3[a-zA-Z0-9]*[ew]")


def _sed(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    if any(
        a is None or (a.startswith("-") and "f" in a.lstrip("-")[:1]) or a.startswith("--file") for a in args
    ):
        return [danger("sed runs a script from a file or built at run time")]
    if any(a is not None and not a.startswith("-") and _SED_RISKY.search(a) for a in args):
        return [danger("sed script runs commands or writes files (e, w)")]
    return [ORDINARY]  # sed -i edits files in place, as an editor would


#: awk programs that write files, run commands or read them as commands.
_AWK_RISKY = re.compile(r"system\s*\(|[>|]|getline|close\s*\(|fflush")


def _awk(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    program = next((a for a in args if a is None or not a.startswith("-")), "")
    if any(a is not None and a.startswith("-f") for a in args) or program is None:
        return [danger(f"{base} runs a program from a file or built at run time")]
    if _AWK_RISKY.search(program):
        return [danger(f"{base} program writes files or runs commands")]
    return [ORDINARY]


#: Programs that run commands or edit files from a script of their own.
SCRIPTED = {
    "ed": "edits files from a script",
    "ex": "edits files from a script",
    "vim": "runs editor commands",
    "vi": "runs editor commands",
    "nvim": "runs editor commands",
    "emacs": "runs editor commands",
    "gdb": "runs debugger commands (shell among them)",
    "sqlite3": "runs dot-commands (.shell among them)",
    "tclsh": "runs Tcl code",
    "wish": "runs Tcl code",
    "expect": "runs Tcl code",
    "alias": "redefines commands",
    "unalias": "redefines commands",
    "hash": "redefines where commands are found",
    "trap": "runs code on a signal or at exit",
    "enable": "redefines builtins",
    "shopt": "changes how bash reads commands",
    "unzip": "extracts over existing files",
    "fallocate": "may punch holes in files",
    "crontab": "changes scheduled jobs",
    "systemctl": "changes services",
}


def _script_file(runner: str, path: str | None) -> Finding:
    """A script file run by a shell or interpreter: ordinary, unless fed at run time."""
    if path is None or path == "-" or path.startswith(("/dev/", "/proc/")):
        return danger(f"{runner} runs a script fed at run time ({path or 'a process substitution'})")
    return ORDINARY


def _arithmetic(base: str, args: Args) -> Finding:
    # bash evaluates array subscripts in arithmetic: 'a[$(cmd)]' runs cmd.
    if any(a is None or "$(" in a or "`" in a for a in args):
        return danger(f"{base}: arithmetic that can run commands")
    return ORDINARY


def _second_operand_is_output(
    judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool
) -> list[Finding]:
    operands = [a for a in args if a is None or not a.startswith("-") or a == "-"]
    if len(operands) >= 2:
        return [judge._overwrite(operands[1], f"{base} writes its output to")]
    return [SAFE]


def _tar(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    first = args[0] if args else ""
    bundled = first is not None and not first.startswith("--") and first.lstrip("-")
    extracting = (bundled and "x" in bundled) or any(
        a is not None
        and (a in ("--extract", "--get") or (a.startswith("-") and not a.startswith("--") and "x" in a))
        for a in args
    )
    if extracting:
        return [danger("tar -x: extracts over existing files")]
    if any(a is None or a in ("--remove-files", "--delete") for a in args):
        return [danger("tar: removes files")]
    return [ORDINARY]


def _compressor(
    judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool
) -> list[Finding]:
    keeps = any(
        a is not None
        and (
            a in ("--stdout", "--to-stdout", "--keep", "--list", "--test")
            or (a.startswith("-") and not a.startswith("--") and set(a[1:]) & set("cklt"))
        )
        for a in args
    )
    return [ORDINARY] if keeps else [danger(f"{base}: replaces files with (de)compressed ones")]


def _make(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    for i, arg in enumerate(args):
        if arg is None or arg.startswith(("--eval", "-E")):
            return [danger(f"{base}: evaluates makefile text given on the command line")]
        if arg in ("-f", "--file", "--makefile") or arg.startswith(("-f", "--file=", "--makefile=")):
            value = (
                arg.split("=", 1)[1]
                if "=" in arg
                else (arg[2:] if len(arg) > 2 and not arg.startswith("--") else None)
            )
            path = value if value else (args[i + 1] if i + 1 < len(args) else None)
            found = _script_file(base, path)
            if found.level is Level.DANGEROUS:
                return [found]
    return [ORDINARY]


def _dd(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    if any(a is None or a.startswith("of=") for a in args):
        return [danger("dd of=: writes raw data over a file or device")]
    return [ORDINARY]


def _chmod(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    recursive = any(
        a and (a == "--recursive" or (a.startswith("-") and not a.startswith("--") and "R" in a))
        for a in args
    )
    return [danger("chmod -R: changes permissions of a whole tree")] if recursive else [ORDINARY]


def _kill(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    if any(a is None or a in ("-1", "0") for a in args[1:] + args[:1]) and "-l" not in args:
        return [danger("kill: signals every process it can")]
    return [ORDINARY]


def _cd(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    target = next((a for a in args if a is None or not a.startswith("-")), "~")
    if target is None or target == "-" or judge.probe(target) == "outside":
        return [danger(f"{base}: leaves the project folder")]
    return [SAFE]


_RISKY_GIT_KEY = re.compile(
    r"^(core\.(fsmonitor|sshcommand|pager|editor|hookspath|askpass|gitproxy)|alias\.|diff\.|difftool\.|"
    r"merge\.|mergetool\.|filter\.|credential|sequence\.editor|gpg\.|include|uploadpack\.|receive\.|pager\.)",
    re.IGNORECASE,
)
_GIT_VALUED = {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path", "--config-env"}
_GIT_SAFE = {
    "status", "diff", "log", "show", "blame", "rev-parse", "ls-files", "ls-tree",  "describe", "shortlog",
    "cat-file", "rev-list", "merge-base", "name-rev", "help", "version", "whatchanged", "reflog", "remote", "tag",
    "branch", "config",  "worktree", "diff-tree", "diff-files", "diff-index", "for-each-ref", "show-ref",
}  # fmt: skip


def _has(args: Args, *options: str) -> bool:
    return any(a in options for a in args)


def _git(judge: Judge, base: str, args: list[str | None], depth: int, stdin_fed: bool) -> list[Finding]:
    i = 0
    while i < len(args) and args[i] is not None and str(args[i]).startswith("-"):
        i += 2 if args[i] in _GIT_VALUED else 1
    if i >= len(args):
        return [SAFE]
    sub, rest = args[i], args[i + 1 :]
    if any(a is None or a.startswith(("-c", "--config-env", "--exec-path")) for a in args[:i]):
        return [danger("git -c/--config-env/--exec-path can make git run any program")]
    if sub is None:
        return [danger("git runs a subcommand built at run time")]
    if sub == "config" and any(a and _RISKY_GIT_KEY.match(a) for a in rest):
        return [danger("git config sets a key that makes git run a program")]
    if sub == "clean":
        dry = _has(rest, "-n", "--dry-run") or any(
            a and a.startswith("-") and not a.startswith("--") and "n" in a for a in rest
        )
        return [SAFE] if dry else [danger("git clean: deletes untracked files")]
    if sub == "reset" and _has(rest, "--hard", "--merge", "--keep"):
        return [danger("git reset --hard: discards uncommitted changes")]
    if any(a is not None and a.startswith(("--output", "-O", "--open-files-in-pager")) for a in rest):
        return [danger(f"git {sub}: --output/-O writes a file or runs a program")]
    changes_dir = any(a is not None and a.startswith(("-C", "--work-tree", "--git-dir")) for a in args[:i])
    if sub in ("checkout", "switch") and (
        _has(rest, "--", ".", "./", "-f", "--force", "--discard-changes", "-p", "--patch")
        or changes_dir
        or any(
            a is None or (not a.startswith("-") and judge.probe(a) in ("file", "dir", "outside"))
            for a in rest
        )
    ):
        return [danger(f"git {sub}: discards uncommitted changes to files")]
    if sub in ("checkout-index", "read-tree") and (
        _has(rest, "-f", "--force", "-u", "--reset") or changes_dir
    ):
        return [danger(f"git {sub}: overwrites files in the working tree")]
    if sub == "mv" and _has(rest, "-f", "--force"):
        return [danger("git mv -f: overwrites files")]
    if sub == "restore" and not (_has(rest, "--staged", "-S") and not _has(rest, "--worktree", "-W")):
        return [danger("git restore: discards uncommitted changes")]
    if sub == "stash" and rest and rest[0] in ("drop", "clear", "-u", "--include-untracked", "-a", "--all"):
        return [danger("git stash drop/clear: deletes stashed changes")]
    if sub == "branch" and _has(rest, "-D", "-d", "--delete", "-M", "-f", "--force", "-C"):
        return [danger("git branch -D: deletes or overwrites a branch")]
    if sub == "push" and (
        _has(rest, "-f", "--force", "--force-with-lease", "--delete", "-d", "--mirror", "--prune")
        or any(a and (a.startswith((":", "+")) or a.startswith("--force")) for a in rest)
    ):
        return [danger("git push --force/--delete: overwrites or deletes remote history")]
    if sub == "rm" and not _has(rest, "--cached"):
        return [danger("git rm: deletes files")]
    if sub in ("filter-branch", "filter-repo", "prune"):
        return [danger(f"git {sub}: rewrites or deletes history")]
    if sub == "reflog" and rest and rest[0] in ("expire", "delete"):
        return [danger("git reflog expire: deletes history")]
    if sub == "gc" and any(a and a.startswith("--prune") for a in rest):
        return [danger("git gc --prune: deletes unreachable history")]
    if sub == "worktree" and rest and rest[0] in ("remove", "prune"):
        return [danger("git worktree remove: deletes a working tree")]
    if sub == "update-ref" and _has(rest, "-d"):
        return [danger("git update-ref -d: deletes a ref")]
    if sub in _GIT_SAFE and not (sub in ("branch", "tag", "remote", "config", "stash", "worktree") and rest):
        return [SAFE]
    return [ORDINARY]


_RULES: dict[str, Rule] = {
    "sudo": _wrapper({"-u", "-g", "-C", "-h", "-p", "-r", "-t", "-U", "-D", "-R"}, reason="raises privilege"),
    "doas": _wrapper({"-u", "-C"}, reason="raises privilege"),
    "pkexec": _wrapper({"--user"}, reason="raises privilege"),
    "run0": _wrapper({"--user", "-u", "--group", "-g"}, reason="raises privilege"),
    "su": _su,
    "env": _env,
    "command": _command_builtin,
    "builtin": _wrapper(set()),
    "exec": _wrapper({"-a"}),
    "nice": _wrapper({"-n", "--adjustment"}),
    "nohup": _wrapper(set()),
    "timeout": _wrapper({"-s", "--signal", "-k", "--kill-after"}, positional_before=1),
    "stdbuf": _wrapper({"-i", "-o", "-e"}),
    "time": _wrapper({"-o", "-f"}),
    "ionice": _wrapper({"-c", "-n", "-p", "-P", "-u"}),
    "setsid": _wrapper(set()),
    "taskset": _wrapper(set(), positional_before=1),
    "chrt": _wrapper(set(), positional_before=1),
    "flock": lambda j, b, a, d, s: (
        j._text(a[a.index("-c") + 1] if a.index("-c") + 1 < len(a) else "", d, "flock -c of")
        if "-c" in a
        else _wrapper({"-w", "-E", "--timeout", "--conflict-exit-code"}, positional_before=1)(j, b, a, d, s)
    ),
    "strace": _wrapper({"-o", "-e", "-p", "-s", "-u", "-E", "-a", "-I", "-X", "-O", "-S", "-b", "-P"}),
    "ltrace": _wrapper({"-o", "-e", "-p", "-s", "-u", "-n", "-a"}),
    "busybox": _wrapper(set()),
    "toybox": _wrapper(set()),
    "watch": lambda j, b, a, d, s: (
        j._text(" ".join(x for x in a[_skip(a, {"-n", "--interval", "-d"})[0] :] if x) or "", d, "watch of")
        if all(x is not None for x in a)
        else [danger("watch runs a command built at run time")]
    ),
    "eval": _eval,
    "xargs": _xargs,
    "find": _find,
    "cp": _copy,
    "install": _copy,
    "rsync": _copy,
    "ln": _copy,
    "tee": _tee,
    "sort": _sort,
    "sed": _sed,
    "dd": _dd,
    "chmod": _chmod,
    "awk": _awk,
    "gawk": _awk,
    "mawk": _awk,
    "nawk": _awk,
    "kill": _kill,
    "cd": _cd,
    "source": lambda j, b, a, d, s: [_script_file(b, a[0] if a else None)],
    ".": lambda j, b, a, d, s: [_script_file(b, a[0] if a else None)],
    "let": lambda j, b, a, d, s: [_arithmetic(b, a)],
    "make": _make,
    "uniq": _second_operand_is_output,
    "xxd": _second_operand_is_output,
    "tar": _tar,
    "zip": lambda j, b, a, d, s: (
        [danger("zip -m: moves files into the archive")]
        if any(
            (x and x.startswith("-") and not x.startswith("--") and "m" in x) or x in ("--move",) for x in a
        )
        else [ORDINARY]
    ),
    "gzip": _compressor,
    "gunzip": _compressor,
    "bzip2": _compressor,
    "xz": _compressor,
    "zstd": _compressor,
    "cmake": lambda j, b, a, d, s: (
        [danger("cmake -E: runs file commands (rm among them)")] if "-E" in a else [ORDINARY]
    ),
    "gmake": _make,
    "unshare": _wrapper({"--map-user", "--map-group", "--setuid", "--setgid", "-S", "-G", "-R", "-w"}),
    "setpriv": _wrapper({"--reuid", "--regid", "--groups", "--inh-caps", "--bounding-set", "--securebits"}),
    "prlimit": _wrapper({"-p", "--pid"}),
    "coproc": _wrapper(set()),
    "bwrap": lambda j, b, a, d, s: [danger("bwrap: runs a command in a sandbox of its own choosing")],
    "script": lambda j, b, a, d, s: [danger("script: runs a command given as text")],
    "pushd": _cd,
    "git": _git,
}


def classify(command: str, probe: Probe | None = None) -> Verdict:
    """Judge a shell command before it runs."""
    return Judge(probe).classify(command)
