"""An OS sandbox for commands: bubblewrap.

A path check cannot confine a shell, so under ``--sandbox bwrap`` every
command runs with the whole file system read-only except the project root
and a private ``/tmp``, in its own PID namespace (killing bubblewrap kills
everything the command started), without network unless
``--allow-network``, and with the client's state folder hidden.
"""

from __future__ import annotations

import dataclasses
import enum
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.protocol import aihub_home


class SandboxMode(enum.StrEnum):
    AUTO = "auto"
    BWRAP = "bwrap"
    NONE = "none"


class ConfinementUnavailable(Exception):
    """``--sandbox bwrap`` was asked for and cannot work here."""


@dataclass(frozen=True)
class Confinement:
    bwrap: str
    root: Path
    allow_network: bool = False
    #: Folders replaced by an empty tmpfs (the client's own state, its token).
    hidden: tuple[Path, ...] = ()
    #: Paths inside the root masked for commands (ignored by the rules): (path, is_dir).
    masked: tuple[tuple[Path, bool], ...] = ()
    #: Paths inside the root that commands may read but not change.
    frozen: tuple[Path, ...] = ()

    def masking(self, masked: Sequence[tuple[Path, bool]], frozen: Sequence[Path] = ()) -> Confinement:
        """The same confinement with ``masked`` paths hidden (an empty folder or an empty file)
        and ``frozen`` ones read-only."""
        return dataclasses.replace(self, masked=tuple(masked), frozen=tuple(frozen))

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The bubblewrap command line that runs ``argv`` confined to the root."""
        root = str(self.root)
        private_tmp = "/tmp"  # noqa: S108 - a fresh tmpfs mounted there, not a file in the host's /tmp
        args = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", private_tmp]
        for folder in self.hidden:
            if folder.is_dir() and folder != self.root and self.root not in folder.parents:
                args += ["--tmpfs", str(folder)]
        # After /tmp's tmpfs, so a root under /tmp is bound on top of it, not hidden by it.
        args += ["--bind", root, root]
        for path in self.frozen:  # the ignore rules, git's config and hooks: code that runs outside later
            args += ["--ro-bind", str(path), str(path)]
        for path, is_dir in self.masked:  # after the root's bind, so they cover what it shows
            args += ["--tmpfs", str(path)] if is_dir else ["--ro-bind", "/dev/null", str(path)]
        args += ["--chdir", root, "--unshare-pid", "--die-with-parent"]
        if not self.allow_network:
            args.append("--unshare-net")
        return [*args, "--", *argv]


def _bwrap_problem(bwrap: str) -> str | None:
    """Why bubblewrap cannot run here (no user namespaces, seccomp...), or ``None`` if it can."""
    try:
        done = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--die-with-parent", "true"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
    return None


def choose(
    mode: SandboxMode, root: Path, *, allow_network: bool, hidden: Sequence[Path] = ()
) -> tuple[Confinement | None, str]:
    """The confinement for ``mode`` and a line saying which one is active.

    ``auto`` uses bubblewrap where it works and says so when it does not;
    ``bwrap`` raises :class:`ConfinementUnavailable` instead.
    """
    if mode is SandboxMode.NONE:
        return None, "commands are not confined (--sandbox none)"
    bwrap = shutil.which("bwrap")
    problem = "bubblewrap (bwrap) is not installed" if bwrap is None else _bwrap_problem(bwrap)
    if bwrap is None or problem is not None:
        if mode is SandboxMode.BWRAP:
            raise ConfinementUnavailable(f"--sandbox bwrap: {problem}")
        return None, f"commands are NOT confined: {problem} (install bubblewrap; see the README)"
    confinement = Confinement(bwrap, root, allow_network=allow_network, hidden=tuple(hidden))
    network = "with network" if allow_network else "without network"
    return (
        confinement,
        f"commands run under bubblewrap: writable only in the root and a private /tmp, {network}",
    )


def state_folders() -> list[Path]:
    """The client's and hub's state folder (the token lives there)."""
    return [aihub_home()]
