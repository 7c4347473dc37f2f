"""Canary files for destructive-command tests, and a fingerprint to tell if any was harmed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: An empty file list for xargs-style spellings lives outside the canaries.
CANARY_NAMES = ("canary.txt", "canary_dir", "canary_dir/inner.txt", "canary_empty_dir", "tracked.txt")


def make_canaries(root: Path) -> None:
    """A git repository with an untracked canary, a canary folder and a tracked file with uncommitted changes."""
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"}
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True, env=env)
    (root / "tracked.txt").write_text("committed\n")
    subprocess.run([*git, "add", "tracked.txt"], cwd=root, check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True, env=env)
    (root / "tracked.txt").write_text("uncommitted work\n")
    (root / "canary.txt").write_text("precious\n")
    (root / "canary_dir").mkdir()
    (root / "canary_dir" / "inner.txt").write_text("precious too\n")
    (root / "canary_empty_dir").mkdir()


def fingerprint(root: Path) -> dict[str, tuple[str, str, int]]:
    """What each canary is: its type, content and permission bits."""
    state: dict[str, tuple[str, str, int]] = {}
    for name in CANARY_NAMES:
        path = root / name
        if path.is_symlink():
            state[name] = ("link", os.readlink(path), 0)
        elif path.is_dir():
            state[name] = ("dir", "", path.stat().st_mode & 0o7777)
        elif path.is_file():
            state[name] = ("file", path.read_text(errors="replace"), path.stat().st_mode & 0o7777)
        else:
            state[name] = ("missing", "", 0)
    return state
