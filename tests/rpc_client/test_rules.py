"""The command rules: the table of destructive spellings, ordinary commands, and wrapping properties."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpc_client.commands import SHELL
from rpc_client.rules import Judge, Level, classify, root_probe
from tests.canaries import fingerprint, make_canaries
from tests.dangerous_spellings import PRIVILEGED, SPELLINGS


@pytest.mark.parametrize("command", SPELLINGS + PRIVILEGED)
def test_every_destructive_spelling_is_dangerous(command: str, tmp_path: Path) -> None:
    make_canaries(tmp_path)
    verdict = classify(command, root_probe(tmp_path))
    assert verdict.dangerous, command
    assert verdict.reasons


@pytest.mark.parametrize("command", SPELLINGS)
def test_every_spelling_in_the_table_really_harms_a_canary(command: str, tmp_path: Path) -> None:
    # Proof that the table is real: run by the client's shell, each spelling harms something.
    make_canaries(tmp_path)
    before = fingerprint(tmp_path)
    subprocess.run(
        [SHELL, "-c", command], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, timeout=30
    )
    assert fingerprint(tmp_path) != before, f"{command!r} harmed nothing"


ORDINARY = [
    "pytest -q",
    "python -m pytest tests/",
    "npm test",
    "npm run build",
    "cargo test",
    "go test ./...",
    "make build",
    "python -c 'print(1)'",
    "python3 -c 'import sys; print(sys.version)'",
    "node -e 'console.log(1)'",
    "pip install -e .",
    "echo hi > new_file.txt",
    "echo more >> notes.md",
    "cat README.md > build/readme.txt",
    "pytest 2>&1 | tee build/test.log",
    "cp README.md new_copy.md",
    "mkdir -p src/new",
    "touch new.py",
    "sed -i 's/a/b/' src/main.py",
    "git add -A && git commit -m 'x'",
    "git checkout -b feature",
    "ruff check . --fix",
]
SAFE = [
    "ls -la",
    "cat README.md",
    "grep -rn TODO .",
    "git status",
    "git diff HEAD~1",
    "git log --oneline -5 | head",
    "find . -name '*.py' | wc -l",
    "head -n 20 src/main.py 2>/dev/null",
    "pwd; whoami; uname -a",
    "command -v python3",
    "sort README.md | uniq -c",
]


@pytest.mark.parametrize("command", ORDINARY)
def test_ordinary_commands_of_a_coding_session_are_not_dangerous(command: str, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("x\n")
    verdict = classify(command, root_probe(tmp_path))
    assert verdict.level is Level.ORDINARY, verdict


@pytest.mark.parametrize("command", SAFE)
def test_read_only_commands_are_known_safe(command: str, tmp_path: Path) -> None:
    verdict = classify(command, root_probe(tmp_path))
    assert verdict.level is Level.SAFE, verdict


@pytest.mark.parametrize(
    "command",
    [
        "echo x > ../outside.txt",
        "echo x >> /etc/profile",
        "cp a /tmp/elsewhere",
        "cd .. && ls",
        "cd ~; ls",
        "echo x > ~/.bashrc",
    ],
)
def test_writing_or_moving_outside_the_project_is_dangerous(command: str, tmp_path: Path) -> None:
    assert classify(command, root_probe(tmp_path)).dangerous


@pytest.mark.parametrize(
    "command", ["echo 'unbalanced", "rm $(", "if then fi", 'eval "$CMD"', "$CMD", 'sh -c "$X"']
)
def test_what_cannot_be_analysed_is_dangerous(command: str) -> None:
    assert classify(command).dangerous


# --- properties: wrapping never hides danger -------------------------------

DANGEROUS_CORES = [
    "rm -rf x",
    "shred secret",
    "git clean -fdx",
    "dd of=disk",
    "chmod -R 777 .",
    "sudo id",
    "mkfs.ext4 d",
    "truncate -s0 f",
]
WRAPPERS = [
    "sudo {}",
    "env A=1 {}",
    "env -i {}",
    "command {}",
    "exec {}",
    "nice -n 5 {}",
    "nohup {}",
    "timeout 5 {}",
    "stdbuf -o0 {}",
    "{} &",
    "ls; {}",
    "true && {}",
    "false || {}",
    "echo x | {}",
    "{} | cat",
    "( {} )",
    "{{ {}; }}",
    "echo $({})",
    "echo `{}`",
    "cat <({})",
    "if true; then {}; fi",
    "while false; do {}; done",
    "for i in 1; do {}; done",
    "f() {{ {}; }}; f",
    "bash -c {q}",
    "sh -c {q}",
    "eval {q}",
    "echo {q} | sh",
    "find . -exec {} \\;",
    "xargs {}",
    "{}\n",
    "\n{}",
]


def _wrap(template: str, inner: str) -> str:
    return (
        template.replace("{q}", shlex.quote(inner))
        .replace("{{", "\0")
        .replace("}}", "\1")
        .replace("{}", inner)
        .replace("\0", "{")
        .replace("\1", "}")
    )


@given(
    core=st.sampled_from(DANGEROUS_CORES),
    wrappers=st.lists(st.sampled_from(WRAPPERS), min_size=1, max_size=3),
)
def test_wrapping_a_dangerous_command_keeps_it_dangerous(core: str, wrappers: list[str]) -> None:
    command = core
    for template in wrappers:
        if template in ("find . -exec {} \\;", "xargs {}") and any(c in command for c in ";&|()`$\n<>{"):
            continue  # these take a simple command, not shell text
        command = _wrap(template, command)
    assert classify(command).dangerous, command


@given(text=st.text(max_size=200))
def test_any_text_gets_a_verdict_never_an_exception(text: str) -> None:
    assert classify(text).level in Level


def test_text_that_crashed_the_bash_grammar_is_judged_in_a_live_process() -> None:
    # tree-sitter-bash segfaulted on this (found by fuzzing); run it in a child so a
    # regression fails this test instead of killing the test run.
    crashed = "'\\x9a\\xc8\\x93{\\U0010f4a2'"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from rpc_client.rules import classify; print(classify({crashed}).level.name)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("SAFE", "ORDINARY", "DANGEROUS")


@pytest.mark.parametrize(
    "command", ["rm -rf ünïcode", "echo é > README.md", "r'm' \"café\"", "echo 'ü' | sh"]
)
def test_non_ascii_text_does_not_hide_a_dangerous_command(command: str, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("x")
    assert classify(command, root_probe(tmp_path)).dangerous


# Found by a review: each of these destroys or plants something, and was judged safe or ordinary.
REVIEW_FINDINGS = [
    "env -S'rm -rf src'",
    "env -iS'rm -rf src'",
    "env 'BASH_FUNC_ls%%=() { rm -rf src; }' bash -c ls",
    "env BASH_ENV=/dev/stdin bash -c true <<<'rm -rf src'",
    "env GIT_EXTERNAL_DIFF='rm -rf src #' git diff",
    "echo src | xargs -l rm -rf",
    "xargs -e rm -rf",
    "sed -n '1e rm -rf src' f",
    "sed -n 'w src/main.py' /dev/null",
    "uniq /dev/null f",
    "xxd /dev/null f",
    "sort --output f x",
    "sort -of x",
    "git diff --output=f",
    "git grep -O'rm -rf' -e print",
    "[[ 'a[$(rm -rf src)]' -eq 0 ]]",
    'awk \'BEGIN{print "!*" >> (".aihu" "bignore")}\'',
    "printf '[core]\\n\\tfsmonitor = x\\n' >> .git/config",
    "cp x .git/hooks/pre-commit",
    "cat .en?",
    "r\\\nm -rf src",
    "bash /dev/stdin <<EOF\nrm -rf src\nEOF",
    "source /dev/stdin <<EOF\nrm -rf src\nEOF",
    ". <(echo rm -rf src)",
    "printf 'all:\\n\\trm -rf src\\n' | make -f -",
    "make --eval='$(shell rm -rf src)'",
    "awk 'BEGIN{system(\"rm -rf src\")}'",
    "vim -es -c '!rm -rf src' -c q",
    "ed -s f",
    "sqlite3 :memory: '.shell rm -rf src'",
    "gdb -batch -ex 'shell rm -rf src'",
    "cmake -E rm -rf src",
    "cd src && : > main.py",
    "(cd src && tee main.py </dev/null)",
    "find src -name main.py -exec cp /dev/null {} \\;",
    "find src -type f -exec tee {} + </dev/null",
    "cp -r e/. src/",
    "tar --remove-files -cf /tmp/x.tar src",
    "zip -qrm /tmp/x.zip src",
    "gzip -r src",
    "tar -xf a.tar",
    "git checkout src/main.py",
    "git checkout ./",
    "git -C src checkout main.py",
    "git checkout-index -a -f",
    "git read-tree -u --reset HEAD",
    "git stash -u",
    "git mv -f a b",
    "alias ls='rm -rf src'",
    "hash -p /bin/rm ls",
    "trap 'rm -rf src' EXIT",
    "let 'x=a[$(rm -rf src)]'",
    "coproc rm -rf src",
    "unshare -r rm -rf src",
    "flock f -c 'rm -rf src'",
]


@pytest.mark.parametrize("command", REVIEW_FINDINGS)
def test_review_findings_are_dangerous(command: str, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("x")
    (tmp_path / "f").write_text("x")
    (tmp_path / ".env").write_text("x")
    (tmp_path / ".git" / "hooks").mkdir(parents=True)
    from rpc_client.ignore import DEFAULT_PATTERNS, IgnoreRules

    judge = Judge(root_probe(tmp_path), secret=IgnoreRules(list(DEFAULT_PATTERNS)).hidden, root=tmp_path)
    verdict = judge.classify(command)
    assert verdict.dangerous, (command, verdict)
