"""``aihub``: the hub's command line.

aihub serve [--host H] [--port P] [--llm-base-url URL] [--llm-model NAME] [--max-steps N]
aihub chat [--hub URL] [--workspace NAME] [--conversation ID] [MESSAGE]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import socket
import sys
import time
from types import FrameType

import uvicorn

from hub import chat_cli
from hub.app import create_app
from hub.auth import ClientTokens, load_or_create_token
from hub.component import WorkspaceHub
from hub.llm.factory import ModelConfig, ModelConfigError, model_config
from hub.settings import HubSettings
from schemas.memory import keep_large_buffers
from schemas.protocol import aihub_home


class RedactSecret(logging.Filter):
    """Replaces a secret in every log record that passes through a handler."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, "<token>"), None
        return True


class DrainingServer(uvicorn.Server):
    """uvicorn, with the hub drained before the connections close.

    uvicorn's own shutdown closes every WebSocket (1012) at once, then waits for the
    HTTP requests still running: a REST call waiting for its client's answer would
    lose it. Here the listening sockets close first, then the hub drains
    (:meth:`hub.WorkspaceHub.drain`: calls in flight are answered, new ones get 503),
    then uvicorn's shutdown runs. A second Ctrl-C or SIGTERM ends the drain at once.
    """

    def __init__(self, config: uvicorn.Config, hub: WorkspaceHub, drain_timeout: float) -> None:
        super().__init__(config)
        self.hub, self.drain_timeout = hub, drain_timeout

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn forces an exit on a second SIGINT only; `kill` twice means the same.
        if self.should_exit and sig == signal.SIGTERM:
            self.force_exit = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connection while draining
        if self.drain_timeout > 0 and self.hub.registry.in_flight:
            logging.getLogger("aihub.hub").info(
                "draining: %d call(s) in flight get up to %g s",
                self.hub.registry.in_flight,
                self.drain_timeout,
            )
        try:
            await self.hub.drain(self.drain_timeout, lambda: self.force_exit)
        except Exception:  # a bug in the drain must not keep the server from stopping
            logging.getLogger("aihub.hub").exception("the drain failed; shutting down at once")
        await super().shutdown(sockets)


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aihub", description="AI Hub Workspaces")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the hub")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=8765, help="port (default 8765)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    tls = serve.add_argument_group("TLS: serve https:// and wss:// (both files, PEM)")
    tls.add_argument("--ssl-certfile", help="the certificate chain")
    tls.add_argument("--ssl-keyfile", help="its private key")
    serve.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin that may open workspace connections (repeatable; default none: "
        "a WebSocket with an Origin header is refused)",
    )
    serve.add_argument(
        "--max-workspaces",
        type=int,
        default=1000,
        help="workspaces connected at once (default 1000; one more is told to try again later)",
    )
    serve.add_argument(
        "--call-timeout",
        type=float,
        default=30.0,
        help="seconds a REST caller waits for a file tool's answer (commands: their own timeout + 10 s)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        help="on SIGTERM/Ctrl-C, seconds the calls in flight get to finish before the hub closes "
        "its connections (default 10; new calls get 503 meanwhile)",
    )
    serve.add_argument(
        "--ping-interval",
        type=float,
        default=20.0,
        help="seconds between WebSocket pings to each client (default 20)",
    )
    serve.add_argument(
        "--ping-timeout",
        type=float,
        default=20.0,
        help="seconds a client has to answer a ping before its connection counts as dead (default 20)",
    )
    llm = serve.add_argument_group("the model (default: AIHUB_LLM_*, then OPENAI_BASE_URL/OPENAI_API_KEY)")
    llm.add_argument("--llm-base-url", help="an OpenAI-compatible base URL, or 'local' for the demo model")
    llm.add_argument("--llm-model", help="the model's name at that endpoint")
    llm.add_argument("--llm-api-key", help="prefer AIHUB_LLM_API_KEY: a flag is visible to other users in ps")
    llm.add_argument(
        "--llm-timeout", type=float, default=120.0, help="seconds per model request (default 120)"
    )
    llm.add_argument(
        "--llm-max-retries", type=int, default=2, help="retries of errors, 429 and 5xx (default 2)"
    )
    llm.add_argument("--max-steps", type=int, default=30, help="model calls per chat turn (default 30)")
    chat_cli.add_parser(sub)
    tokens = sub.add_parser("token", help="client tokens: they connect a workspace, and open no REST route")
    token_sub = tokens.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a client token and print it (once)")
    create.add_argument("--name", required=True, help="whose it is, e.g. laptop")
    token_sub.add_parser("list", help="the client tokens' names")
    revoke = token_sub.add_parser("revoke", help="revoke a client token (effective for new connections)")
    revoke.add_argument("name")
    return p


def token_command(args: argparse.Namespace) -> int:
    tokens = ClientTokens(aihub_home())
    try:
        if args.token_command == "create":  # noqa: S105
            if not args.name.strip() or len(args.name) > 100:
                print("aihub: --name must be 1 to 100 characters", file=sys.stderr)
                return 2
            print(tokens.create(args.name))
            print(
                f"aihub: client token {args.name!r} created; it is shown only this once. "
                "Use it as the client's --token (or AIHUB_TOKEN).",
                file=sys.stderr,
            )
        elif args.token_command == "list":  # noqa: S105
            for entry in tokens.entries():
                created = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.get("created_at", 0)))
                print(f"{entry.get('name')}\tcreated {created}")
        elif not tokens.revoke(args.name):
            print(f"aihub: no client token named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"aihub: client token {args.name!r} revoked", file=sys.stderr)
    except ValueError as exc:
        print(f"aihub: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aihub: cannot use {tokens.path}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def serve(args: argparse.Namespace) -> int:
    host, port, log_level = args.host, args.port, args.log_level
    try:
        llm: ModelConfig | None = model_config(
            os.environ, args.llm_base_url, args.llm_model, args.llm_api_key
        )
    except ModelConfigError as exc:
        print(f"aihub: {exc}", file=sys.stderr)
        return 2
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print("aihub: --ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    for path in filter(None, (args.ssl_certfile, args.ssl_keyfile)):
        if not os.access(path, os.R_OK):
            print(f"aihub: cannot read {path}", file=sys.stderr)
            return 2
    if not args.call_timeout > 0 or args.max_workspaces < 1:
        print("aihub: --call-timeout must be over 0 and --max-workspaces at least 1", file=sys.stderr)
        return 2
    timings = (args.ping_interval, args.ping_timeout, args.drain_timeout)
    if not (args.ping_interval > 0 and args.ping_timeout > 0 and args.drain_timeout >= 0) or not all(
        math.isfinite(t) for t in timings
    ):
        print(
            "aihub: --ping-interval and --ping-timeout must be over 0, --drain-timeout 0 or more (finite seconds)",
            file=sys.stderr,
        )
        return 2
    if args.max_steps < 1 or args.llm_max_retries < 0 or not args.llm_timeout > 0:
        print(
            "aihub: --max-steps must be 1 or more, --llm-max-retries 0 or more, --llm-timeout over 0",
            file=sys.stderr,
        )
        return 2
    keep_large_buffers()
    home = aihub_home()
    try:
        token, source = load_or_create_token(home)
    except OSError as exc:
        print(f"aihub: cannot read or create the token under {home}: {exc.strerror}", file=sys.stderr)
        return 1
    settings = HubSettings(
        token=token,
        home=home,
        llm_base_url=llm.base_url if llm else None,
        llm_model=llm.model if llm else None,
        llm_api_key=llm.api_key if llm else None,
        llm_timeout=args.llm_timeout,
        llm_max_retries=args.llm_max_retries,
        max_steps=args.max_steps,
        allowed_origins=tuple(args.allowed_origin),
        call_timeout=args.call_timeout,
        max_workspaces=args.max_workspaces,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        drain_timeout=args.drain_timeout,
    )
    logging.basicConfig(level=log_level.upper(), format="aihub: %(message)s")
    print(f"aihub: token ({source}): {token}", flush=True)
    scheme = "wss" if args.ssl_certfile else "ws"
    print(f"aihub: clients connect to {scheme}://{host}:{port}/ws/workspace", flush=True)
    if llm is None:
        print("aihub: no model configured (AIHUB_LLM_BASE_URL, AIHUB_LLM_MODEL): chat is off", flush=True)
    else:
        print(f"aihub: model {llm.model or 'SmolLM2-135M (local)'} at {llm.base_url}", flush=True)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        timeout_graceful_shutdown=5,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    # uvicorn's debug log prints request headers, the bearer token among them.
    secrets = [token, *([llm.api_key] if llm and llm.api_key else [])]
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            for secret in secrets:
                handler.addFilter(RedactSecret(secret))
    DrainingServer(config, app.state.hub, settings.drain_timeout).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "chat":
        return chat_cli.run(args)
    if args.command == "token":
        return token_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
