"""Destructive commands in many spellings, each aimed at the canaries of tests/canaries.py.

Each row really harms a canary when run by the client's shell (tests/rpc_client/test_rules.py
proves it), so a policy that lets one through would be caught.
"""

from __future__ import annotations

SPELLINGS: list[str] = [
    # plain and respelled names
    "rm canary.txt",
    "rm -f canary.txt",
    "rm -rf canary_dir",
    "rm -r -f canary_dir",
    "rm --recursive --force canary_dir",
    "/bin/rm canary.txt",
    "/usr/bin/rm canary.txt",
    "\\rm canary.txt",
    "r''m canary.txt",
    '"rm" canary.txt',
    "'rm' canary.txt",
    "r\\m canary.txt",
    "$'\\x72\\x6d' canary.txt",
    "$'rm' canary.txt",
    'r""m canary.txt',
    # other deleting or truncating programs
    "unlink canary.txt",
    "rmdir canary_empty_dir",
    "shred -u canary.txt",
    "truncate -s 0 canary.txt",
    "dd if=/dev/null of=canary.txt",
    "mv canary.txt moved.txt",
    "cp /dev/null canary.txt",
    "ln -sf /dev/null canary.txt",
    "tee canary.txt < /dev/null",
    "sort -o canary.txt /dev/null",
    "chmod -R 000 canary_dir",
    # redirections onto an existing file
    ": > canary.txt",
    "> canary.txt",
    "echo pwned > canary.txt",
    "echo pwned 1> canary.txt",
    "echo pwned >| canary.txt",
    "cat /dev/null > canary.txt",
    "exec 3> canary.txt",
    # wrappers
    "command rm canary.txt",
    "command -p rm canary.txt",
    "exec rm canary.txt",
    "env rm canary.txt",
    "env -i PATH=/usr/bin:/bin rm canary.txt",
    "env -S 'rm canary.txt'",
    "nice rm canary.txt",
    "nice -n 5 rm canary.txt",
    "nohup rm canary.txt",
    "timeout 5 rm canary.txt",
    "timeout -s KILL 5 rm canary.txt",
    "stdbuf -o0 rm canary.txt",
    "echo canary.txt | xargs rm",
    "printf canary.txt | xargs -I{} rm {}",
    "find . -name canary.txt -delete",
    "find . -name canary.txt -exec rm {} \\;",
    "find . -name canary.txt -exec rm {} +",
    "find . -name canary.txt -execdir rm {} \\;",
    "find . -name canary.txt | xargs rm",
    # shells, eval, and scripts fed to a shell
    "bash -c 'rm canary.txt'",
    'sh -c "rm canary.txt"',
    "sh -ec 'rm canary.txt'",
    'sh -c "$(echo rm) canary.txt"',
    "eval 'rm canary.txt'",
    'eval "r""m canary.txt"',
    "echo rm canary.txt | sh",
    "echo 'rm canary.txt' | bash",
    "printf 'rm canary.txt' | sh -s",
    "sh <<EOF\nrm canary.txt\nEOF",
    "bash <<< 'rm canary.txt'",
    "echo cm0gY2FuYXJ5LnR4dA== | base64 -d | sh",
    # names built at run time
    "$(echo rm) canary.txt",
    "`echo rm` canary.txt",
    "X=rm; $X canary.txt",
    # hidden in compound commands
    "f() { rm canary.txt; }; f",
    "(rm canary.txt)",
    "{ rm canary.txt; }",
    "true && rm canary.txt",
    "false || rm canary.txt",
    "ls; rm canary.txt",
    "ls\nrm canary.txt",
    "if true; then rm canary.txt; fi",
    'for f in canary.txt; do rm "$f"; done',
    "cat <(rm canary.txt)",
    "echo $(rm canary.txt)",
    # interpreters with inline code
    "python3 -c \"import os; os.remove('canary.txt')\"",
    "python3 -c \"open('canary.txt', 'w')\"",
    "python3 -c \"import shutil; shutil.rmtree('canary_dir')\"",
    "python3 -c \"__import__('os').unlink('canary.txt')\"",
    "python3 -c \"from pathlib import Path; Path('canary.txt').unlink()\"",
    "perl -e 'unlink \"canary.txt\"'",
    # git commands that throw work away
    "git clean -fdx",
    "git clean -f -d",
    "git reset --hard",
    "git checkout -- .",
    "git checkout .",
    "git restore tracked.txt",
    "git stash && git stash drop",
]

#: Dangerous by privilege: nothing to prove on canaries (and sudo may be absent).
PRIVILEGED: list[str] = [
    "sudo rm canary.txt",
    "sudo -u root ls",
    "doas ls",
    "su -c 'rm canary.txt'",
    "pkexec ls",
]
