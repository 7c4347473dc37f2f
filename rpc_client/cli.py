"""``aihub-client``: connect one project folder to the hub.

    aihub-client [--hub URL] [--root DIR] [--name NAME] [--token T]
                 [--dangerous ask|deny|allow] [--read-only] [--sandbox auto|bwrap|none] ...
    aihub-client log [--root DIR] [-n N]           the audit log of this project
    aihub-client undo [--root DIR] [N] [--list]    undo the last (or N-th) write_file


Exit status: 0 stopped by the user, 1 other failure, 2 bad usage, 3 bad root,
4 token refused, 5 handshake refused.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

from rpc_client.audit import AuditLog, format_entry
from rpc_client.checkpoints import Checkpoints
from rpc_client.confine import ConfinementUnavailable, SandboxMode, choose, state_folders
from rpc_client.dispatcher import ClientContext
from rpc_client.errors import BadRoot, ClientExit, UsageError
from rpc_client.files import LOCAL_FILESYSTEMS, FileLimits, filesystem_type
from rpc_client.ignore import IgnoreFileError, IgnoreRules
from rpc_client.policy import CommandPolicy, DangerousMode, TerminalApprover
from rpc_client.rules import root_probe
from rpc_client.sandbox import Sandbox, SandboxError
from rpc_client.state import project_state_dir
from rpc_client.terminal import printable
from rpc_client.transport import HubTarget, is_loopback, run_until_stopped
from schemas.errors import RpcError
from schemas.memory import keep_large_buffers
from schemas.protocol import TOKEN_FILE, aihub_home

DEFAULT_HUB = "ws://127.0.0.1:8765/ws/workspace"


def find_token(flag: str | None) -> str:
    """``--token``, else ``AIHUB_TOKEN``, else the token file the hub writes."""
    path = aihub_home() / TOKEN_FILE
    if flag:
        token, source = flag.strip(), "--token"
    elif os.environ.get("AIHUB_TOKEN", "").strip():
        token, source = os.environ["AIHUB_TOKEN"].strip(), "AIHUB_TOKEN"
    else:
        try:
            token, source = path.read_text(encoding="utf-8").strip(), str(path)
        except OSError:
            token, source = "", str(path)
    if not token:
        raise UsageError(f"no token: pass --token, set AIHUB_TOKEN, or start the hub once to create {path}")
    if not (token.isascii() and token.isprintable()) or " " in token:
        # It goes into an HTTP header: never print it, never retry with it.
        raise UsageError(f"the token from {source} has characters a token cannot have")
    return token


def websocket_url(text: str) -> str:
    """``--hub``, checked: a ws:// or wss:// URL with a host and a valid port."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a valid URL: {text!r} ({exc})") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"must be a ws:// or wss:// URL, not {text!r}")
    return text


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text!r}")
    return value


#: --compression: None lets the hub's host decide (see transport.compresses).
COMPRESSION: dict[str, bool | None] = {"auto": None, "deflate": True, "none": False}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aihub-client", description="Connect a project folder to an AI Hub.")
    p.add_argument(
        "--hub",
        default=DEFAULT_HUB,
        type=websocket_url,
        help=f"the hub's WebSocket URL (default {DEFAULT_HUB})",
    )
    p.add_argument(
        "--root", default=".", help="the project folder the AI may work in (default: current folder)"
    )
    p.add_argument("--name", help="the workspace's name (default: the root folder's name)")
    p.add_argument("--token", help="the hub's token (default: AIHUB_TOKEN, then $AIHUB_HOME/token)")
    p.add_argument(
        "--dangerous",
        choices=[m.value for m in DangerousMode],
        default=DangerousMode.ASK.value,
        help="dangerous commands: ask on this terminal (default), deny, or allow",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="refuse write_file and every command not known to be read-only",
    )
    p.add_argument(
        "--sandbox",
        choices=[m.value for m in SandboxMode],
        default=SandboxMode.AUTO.value,
        help="confine commands with bubblewrap: auto (where it works, the default), bwrap (required), none",
    )
    p.add_argument("--allow-network", action="store_true", help="let confined commands use the network")
    p.add_argument(
        "--ignore-file", help="gitignore-style file of paths to hide from the AI (default: ROOT/.aihubignore)"
    )
    p.add_argument(
        "--no-default-ignores",
        action="store_true",
        help="do not hide the built-in secret patterns (.env, *.pem, .ssh/...)",
    )
    p.add_argument(
        "--approval-timeout",
        type=positive_seconds,
        default=120.0,
        help="seconds to wait for a yes (default 120)",
    )
    p.add_argument(
        "--ca-file",
        help="PEM file of the authority that signed the hub's certificate (default: the system's)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a plain ws:// URL to a host other than this machine (the token and your code cross the network unencrypted)",
    )
    p.add_argument(
        "--compression",
        choices=["auto", "deflate", "none"],
        default="auto",
        help="compress frames (permessage-deflate): auto (to a hub on another host, the default), deflate, none",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def tls_context(url: str, ca_file: str | None, insecure: bool) -> ssl.SSLContext | None:
    """How to reach the hub safely: certificates verified for wss://, plain ws:// only on loopback."""
    parts = urlsplit(url)
    if parts.scheme == "ws":
        if ca_file:
            raise UsageError("--ca-file is for wss:// URLs; this one is ws://")
        if not is_loopback(url) and not insecure:
            raise UsageError(
                f"refusing ws:// to {parts.hostname}: the token and your code would cross the network "
                "unencrypted. Use wss:// (aihub serve --ssl-certfile/--ssl-keyfile, or a TLS proxy), "
                "or pass --insecure on a network you trust"
            )
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--ca-file {ca_file!r}: {getattr(exc, 'strerror', None) or exc}") from None


def report(line: str) -> None:
    # One write of the whole line (print writes the line and its end apart): one per request.
    sys.stderr.write(f"aihub-client: {line}\n")
    sys.stderr.flush()


def state_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"aihub-client {command}")
    p.add_argument("--root", default=".", help="the project folder (default: current folder)")
    if command == "log":
        p.add_argument(
            "-n", "--lines", type=int, default=50, help="how many of the last requests (default 50)"
        )
    else:
        p.add_argument(
            "checkpoint", nargs="?", type=int, help="the checkpoint to undo (default: the last change)"
        )
        p.add_argument("--list", action="store_true", help="list the checkpoints instead")
    return p


def state_command(command: str, argv: list[str]) -> int:
    """``aihub-client log`` and ``aihub-client undo``: read the audit log, undo a write. Work offline."""
    args = state_parser(command).parse_args(argv)
    try:
        try:
            sandbox = Sandbox(args.root)
        except SandboxError as exc:
            raise BadRoot(f"--root {args.root!r}: {exc.message}") from None
        with sandbox:
            state = project_state_dir(sandbox.root)
            if command == "log":
                try:
                    for entry in AuditLog(state).tail(args.lines):
                        print(printable(format_entry(entry)))
                    sys.stdout.flush()
                except BrokenPipeError:  # `aihub-client log | head`
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
            checkpoints = Checkpoints(state)
            if args.list:
                ended = {e["undo_of"]: e for e in checkpoints.entries() if "undo_of" in e}
                for e in checkpoints.entries():
                    if "checkpoint" in e:
                        end = ended.get(e["checkpoint"])
                        mark = (
                            "" if end is None else " (write failed)" if end.get("cancelled") else " (undone)"
                        )
                        made = "created" if e["previous"] is None else "changed"
                        print(printable(f"{e['checkpoint']:>5}  {made:<8} {e['path']}{mark}"))
                return 0
            try:
                done = checkpoints.undo(sandbox, args.checkpoint, max_bytes=FileLimits().max_checkpoint_bytes)
            except RpcError as exc:
                raise ClientExit(exc.message) from None
            except OSError as exc:
                raise ClientExit(f"the checkpoints cannot be read: {exc.strerror}") from None
            report(f"undid checkpoint {done['checkpoint']}: {printable(done['path'])} ({done['restored']})")
            return 0
    except ClientExit as exc:
        report(exc.message)
        return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("log", "undo"):
        return state_command(argv[0], argv[1:])
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="aihub-client: %(message)s"
    )
    # websockets' debug log prints the handshake's headers, the bearer token among them.
    logging.getLogger("websockets").setLevel(logging.INFO)
    keep_large_buffers()

    try:
        token = find_token(args.token)
        tls = tls_context(args.hub, args.ca_file, args.insecure)

        try:
            sandbox = Sandbox(args.root)
        except SandboxError as exc:
            raise BadRoot(f"--root {args.root!r}: {exc.message}") from None
        name = args.name or sandbox.root.name or "root"
        try:
            ignore = IgnoreRules.load(
                sandbox.root,
                ignore_file=Path(args.ignore_file) if args.ignore_file else None,
                defaults=not args.no_default_ignores,
            )
        except IgnoreFileError as exc:
            raise UsageError(f"ignore rules: {exc}") from None
        mode = DangerousMode(args.dangerous)
        policy = CommandPolicy(
            mode,
            read_only=args.read_only,
            approver=TerminalApprover(timeout=args.approval_timeout),
            probe=root_probe(sandbox.root),
            protected=[str(aihub_home())],
            secret=ignore.hidden,
            root=sandbox.root,
            frozen=[ignore.rules_file],
        )
        try:
            confinement, confinement_line = choose(
                SandboxMode(args.sandbox),
                sandbox.root,
                allow_network=args.allow_network,
                hidden=state_folders(),
            )
        except ConfinementUnavailable as exc:
            raise UsageError(str(exc)) from None
        state = project_state_dir(sandbox.root)
        ctx = ClientContext(
            sandbox=sandbox,
            policy=policy,
            report=report,
            confinement=confinement,
            ignore=ignore,
            audit=AuditLog(state),
            checkpoints=Checkpoints(state),
            outputs=state / "outputs",
            inline_reads=filesystem_type(sandbox.root) in LOCAL_FILESYSTEMS,
        )
        report(confinement_line)
        report(f"hidden from the AI: {ignore.source}")
        report(
            f"serving {sandbox.root} as {name!r}; dangerous commands: {mode.value}"
            + ("; read-only" if args.read_only else "")
        )
        with sandbox:
            asyncio.run(
                run_until_stopped(
                    HubTarget(args.hub, token, name, tls, COMPRESSION[args.compression]), ctx, report=report
                )
            )
        return 0
    except ClientExit as exc:
        report(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        report("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
