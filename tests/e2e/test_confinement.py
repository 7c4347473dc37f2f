"""Commands under bubblewrap, through the real hub and client: they cannot leave the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Hub

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)"
    ),
]


@pytest.fixture
def outside() -> Iterator[Path]:
    # Not under /tmp: commands get a private /tmp, which would hide a write rather than refuse it.
    folder = Path(tempfile.mkdtemp(prefix="aihub-outside-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run(hub: Hub, wid: str, command: str) -> dict[str, object]:
    answer: dict[str, object] = hub.call(wid, "execute_command", {"command": command, "timeout": 20}).json()
    assert answer["status"] == "success", answer
    return answer


def test_a_confined_command_cannot_write_outside_the_root_but_can_inside(
    hub: Hub, project: Path, outside: Path, start_client
) -> None:
    # --dangerous allow: the policy lets everything through; the OS sandbox alone must hold.
    client = start_client(hub, project, "--sandbox", "bwrap", "--dangerous", "allow")
    wid = hub.workspace_id(client.name)
    (outside / "precious").write_text("keep\n")
    assert run(hub, wid, f"rm -f {outside}/precious")["exit_code"] != 0
    assert (outside / "precious").read_text() == "keep\n"
    target = outside / "file"
    # No interpreter from the test's venv: it may live under /tmp, which commands see as a fresh tmpfs.
    answer = run(hub, wid, f"echo escaped > {target}")
    assert answer["exit_code"] != 0 and "Read-only file system" in str(answer["stderr"])
    assert not target.exists()
    python3 = shutil.which("python3")
    if python3 and not python3.startswith("/tmp/"):  # the issue's own example, where python3 is visible
        answer = run(hub, wid, f"python3 -c \"open('{outside / 'by-python'}', 'w')\"")
        assert answer["exit_code"] != 0 and "Read-only file system" in str(answer["stderr"]), answer
        assert not (outside / "by-python").exists()
    assert run(hub, wid, "echo inside > made.txt && cat made.txt")["stdout"] == "inside\n"
    assert (project / "made.txt").read_text() == "inside\n"
    assert "bubblewrap" in client.output()


def test_a_confined_command_has_no_network_unless_allowed(hub: Hub, project: Path, start_client) -> None:
    probe = f": < /dev/tcp/127.0.0.1/{hub.port}"  # bash opens a TCP connection for this redirection
    wid = hub.workspace_id(start_client(hub, project, "--sandbox", "bwrap", "--dangerous", "deny").name)
    assert run(hub, wid, probe)["exit_code"] != 0
    wid = hub.workspace_id(
        start_client(
            hub, project, "--sandbox", "bwrap", "--allow-network", "--dangerous", "deny", name="net"
        ).name
    )
    assert run(hub, wid, probe)["exit_code"] == 0


def test_the_token_folder_is_hidden_from_confined_commands(hub: Hub, project: Path, start_client) -> None:
    (hub.home / "token").write_text(hub.token + "\n")
    env = {**os.environ, "AIHUB_HOME": str(hub.home)}
    deny = hub.workspace_id(
        start_client(hub, project, "--sandbox", "bwrap", "--dangerous", "deny", env=env).name
    )
    refused = hub.call(deny, "execute_command", {"command": f"cat {hub.home}/token"}).json()
    assert refused["status"] == "error" and "state folder" in refused["error_message"]  # the policy sees it
    # With the policy out of the way (allow), the OS sandbox still hides it.
    allow = hub.workspace_id(
        start_client(hub, project, "--sandbox", "bwrap", "--dangerous", "allow", env=env, name="allow").name
    )
    answer = run(hub, allow, f"cat {hub.home}/token; ls -a {hub.home}")
    assert hub.token not in str(answer["stdout"])


def test_processes_started_by_a_confined_command_die_with_it(hub: Hub, project: Path, start_client) -> None:
    wid = hub.workspace_id(start_client(hub, project, "--sandbox", "bwrap", "--dangerous", "deny").name)
    run(hub, wid, "sleep 3217 & echo started")
    assert subprocess.run(["pgrep", "-f", "sleep 3217"], capture_output=True).returncode == 1


def test_sandbox_bwrap_without_bubblewrap_is_a_clear_usage_error_and_auto_says_so(
    hub: Hub, project: Path, start_client
) -> None:
    env = {**os.environ, "PATH": "/nonexistent"}
    required = start_client(hub, project, "--sandbox", "bwrap", env=env, wait=False)
    assert required.process.wait(20) == 2
    assert "bwrap" in required.output() and "Traceback" not in required.output()
    auto = start_client(hub, project, "--dangerous", "deny", env=env, name="auto")
    assert "NOT confined" in auto.output()


def test_ignored_paths_are_masked_for_confined_commands(hub: Hub, project: Path, start_client) -> None:
    (project / ".env").write_text("API_KEY=sk-live-123\n")
    (project / "deploy" / ".aws").mkdir(parents=True)
    (project / "deploy" / ".aws" / "credentials").write_text("aws_secret=abc\n")
    (project / ".aihubignore").write_text("private/\n")
    (project / "private").mkdir()
    (project / "private" / "notes.md").write_text("secret plans\n")
    # --dangerous allow: the policy would refuse `cat .env`; the OS sandbox must still hide it.
    client = start_client(hub, project, "--sandbox", "bwrap", "--dangerous", "allow")
    wid = hub.workspace_id(client.name)
    answer = run(
        hub,
        wid,
        "cat .env; grep -rs 'sk-live\\|aws_secret\\|secret plans' . ; ls deploy/.aws private; echo done",
    )
    out = str(answer["stdout"])
    assert "sk-live" not in out and "aws_secret" not in out and "secret plans" not in out
    assert out.rstrip().endswith("done")
    assert run(hub, wid, "echo pwned > .env")["exit_code"] != 0
    assert (project / ".env").read_text() == "API_KEY=sk-live-123\n"
    listing = hub.call(wid, "list_files", {"recursive": True}).json()
    assert not any(".env" in f["path"] or "private" in f["path"] for f in listing["files"])
    assert "hidden from the AI" in client.output()


def test_confined_commands_cannot_change_git_config_hooks_or_the_ignore_rules(
    hub: Hub, project: Path, start_client
) -> None:
    (project / ".git" / "hooks").mkdir(parents=True)
    (project / ".git" / "config").write_text("[core]\n")
    (project / ".aihubignore").write_text("private/\n")
    # --dangerous allow: only the OS sandbox stands in the way.
    wid = hub.workspace_id(start_client(hub, project, "--sandbox", "bwrap", "--dangerous", "allow").name)
    for command in (
        "printf '[core]\\n\\tfsmonitor = x\\n' >> .git/config",
        "echo x > .git/hooks/pre-commit",
        "echo '!*' >> .aihubignore",
    ):
        assert run(hub, wid, command)["exit_code"] != 0, command
    assert (project / ".git" / "config").read_text() == "[core]\n"
    assert not (project / ".git" / "hooks" / "pre-commit").exists()
    assert (project / ".aihubignore").read_text() == "private/\n"
    assert run(hub, wid, "echo ok > fine.txt && git --version >/dev/null; echo done")["stdout"] == "done\n"
