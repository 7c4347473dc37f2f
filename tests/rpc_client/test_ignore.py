"""Ignore rules: secrets hidden from list/read/write (also through links), .git/ and the rules never written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rpc_client.dispatcher import ClientContext
from rpc_client.ignore import DEFAULT_PATTERNS, IgnoreRules
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from schemas.errors import ErrorCode
from tests.rpc_client.helpers import NoApprover, call

pytestmark = pytest.mark.anyio

DEFAULTS = IgnoreRules(list(DEFAULT_PATTERNS))


@pytest.mark.parametrize(
    ("path", "is_dir", "hidden"),
    [
        (".env", False, True),
        ("services/api/.env", False, True),
        (".env.production", False, True),
        ("certs/server.pem", False, True),
        ("deploy/prod.key", False, True),
        ("id_rsa", False, True),
        ("keys/id_ed25519.pub", False, True),
        (".aws", True, True),
        (".aws/credentials", False, True),
        ("home/.ssh/config", False, True),
        ("src/main.py", False, False),
        ("src/env.py", False, False),
        ("docs/keys.md", False, False),
        ("environment.yml", False, False),
    ],
)
def test_default_secret_patterns(path: str, is_dir: bool, hidden: bool) -> None:
    assert DEFAULTS.hidden(path, is_dir=is_dir) is hidden


def test_the_project_file_adds_patterns_and_can_bring_paths_back(tmp_path: Path) -> None:
    (tmp_path / ".aihubignore").write_text("# comment\nprivate/\n*.sqlite\n!.env.example\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.hidden("private/notes.md") and rules.hidden("db/app.sqlite")
    assert not rules.hidden(".env.example") and rules.hidden(".env")
    assert "defaults" in rules.source and ".aihubignore" in rules.source
    assert not IgnoreRules.load(tmp_path, defaults=False).hidden(".env")


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ClientContext]:
    root = tmp_path / "root"
    (root / "config").mkdir(parents=True)
    (root / ".env").write_text("API_KEY=sk-live-123\n")
    (root / "config" / "prod.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (root / "main.py").write_text("print(1)\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    os.symlink(".env", root / "innocent.txt")
    os.symlink("config", root / "conf")
    with Sandbox(root) as sandbox:
        policy = CommandPolicy(
            DangerousMode.DENY, read_only=False, approver=NoApprover(), secret=DEFAULTS.hidden
        )
        yield ClientContext(sandbox=sandbox, policy=policy, ignore=DEFAULTS, report=lambda line: None)


async def test_secrets_are_hidden_from_listings(ctx: ClientContext) -> None:
    listing = (await call(ctx, "list_files", {"path": ".", "recursive": True}))["result"]["files"]
    paths = {row["path"] for row in listing}
    assert "main.py" in paths and "config" in paths
    assert not any(p.endswith((".env", ".pem")) for p in paths)


@pytest.mark.parametrize(
    "path", [".env", "./.env", "config/prod.pem", "conf/prod.pem", "innocent.txt", "config/../.env"]
)
async def test_secrets_cannot_be_read_by_any_name(ctx: ClientContext, path: str) -> None:
    answer = await call(ctx, "read_files", {"files": [path, "main.py"]})
    assert answer["error"]["data"]["files"] == {"main.py": "print(1)\n"}
    assert "ignore rules" in answer["error"]["data"]["errors"][path]
    assert "sk-live" not in json.dumps(answer)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (".env", "ignore rules"),
        ("innocent.txt", "ignore rules"),
        ("conf/new.pem", "ignore rules"),
        (".aihubignore", "ignore rules"),
        (".git/config", ".git/"),
        (".git/hooks/pre-commit", ".git/"),
        ("sub/.git/config", ".git/"),
    ],
)
async def test_secrets_the_rules_and_git_cannot_be_written(ctx: ClientContext, path: str, why: str) -> None:
    before = (ctx.sandbox.root / ".env").read_text()
    error = (await call(ctx, "write_file", {"path": path, "content": "pwned"}))["error"]
    assert error["code"] == ErrorCode.DENIED and why in error["message"]
    assert (ctx.sandbox.root / ".env").read_text() == before
    assert (ctx.sandbox.root / ".git" / "config").read_text() == "[core]\n"
    assert not (ctx.sandbox.root / ".aihubignore").exists()
    assert not (ctx.sandbox.root / "sub").exists()  # folders made for a refused write are removed


async def test_commands_naming_a_secret_are_dangerous(ctx: ClientContext) -> None:
    error = (await call(ctx, "execute_command", {"command": "cat .env"}))["error"]
    assert error["code"] == ErrorCode.DENIED and "ignore rules" in error["message"]


def test_the_mask_walk_finds_ignored_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / ".aws").mkdir(parents=True)
    (tmp_path / "a" / ".env").write_text("x")
    (tmp_path / "node_modules" / "pkg").mkdir(parents=True)
    (tmp_path / "node_modules" / "pkg" / ".env").write_text("x")  # pruned: not walked
    masked = {(str(p.relative_to(tmp_path)), d) for p, d in DEFAULTS.masked(tmp_path)}
    assert masked == {("a/.aws", True), ("a/.env", False)}


async def test_recursive_listings_respect_gitignore_files_unless_asked_not_to(ctx: ClientContext) -> None:
    root = ctx.sandbox.root
    (root / ".gitignore").write_text("node_modules/\n*.log\n")
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "node_modules" / "pkg" / "index.js").write_text("x")
    (root / "app.log").write_text("x")
    (root / "web").mkdir()
    (root / "web" / ".gitignore").write_text("dist/\n")
    (root / "web" / "dist").mkdir()
    (root / "web" / "dist" / "bundle.js").write_text("x")
    (root / "web" / "src.js").write_text("x")

    async def paths(**params: Any) -> set[str]:
        return {
            row["path"] for row in (await call(ctx, "list_files", {"path": ".", **params}))["result"]["files"]
        }

    default = await paths(recursive=True)
    assert "web/src.js" in default and "main.py" in default
    assert not any(p.startswith(("node_modules", ".git/", "web/dist")) or p.endswith(".log") for p in default)
    assert ".git" not in default
    everything = await paths(recursive=True, respect_gitignore=False)
    assert {"node_modules/pkg/index.js", "app.log", "web/dist/bundle.js", ".git/config"} <= everything
    assert "app.log" in await paths()  # a flat listing shows everything by default


@pytest.mark.parametrize("path", [".ssh", ".aws", "nope/.ssh", ".env"])
async def test_listing_a_hidden_folder_is_refused_whether_it_exists_or_not(
    ctx: ClientContext, path: str
) -> None:
    (ctx.sandbox.root / ".ssh").mkdir()
    error = (await call(ctx, "list_files", {"path": path}))["error"]
    assert error["code"] == ErrorCode.DENIED and "ignore rules" in error["message"]


def test_the_mask_walk_fails_closed_past_its_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rpc_client.ignore as ignore

    monkeypatch.setattr(ignore, "_MAX_WALK", 50)
    for i in range(100):
        (tmp_path / f"f{i}").write_text("x")
    (tmp_path / "zzz").mkdir()
    (tmp_path / "zzz" / ".env").write_text("secret")
    with pytest.raises(ignore.TooManyFiles):
        list(DEFAULTS.masked(tmp_path))


def test_the_mask_walk_skips_links_even_dangling_ones(tmp_path: Path) -> None:
    os.symlink("/nonexistent", tmp_path / ".env")
    (tmp_path / "real.key").write_text("k")
    assert [(p.name, d) for p, d in DEFAULTS.masked(tmp_path)] == [("real.key", False)]
