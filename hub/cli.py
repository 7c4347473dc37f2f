"""``aihub``: the hub's command line.

aihub serve [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from hub.app import create_app
from hub.auth import load_or_create_token
from hub.settings import HubSettings
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
    return p


def serve(host: str, port: int, log_level: str) -> int:
    home = aihub_home()
    try:
        token, source = load_or_create_token(home)
    except OSError as exc:
        print(f"aihub: cannot read or create the token under {home}: {exc.strerror}", file=sys.stderr)
        return 1
    settings = HubSettings(token=token, home=home)
    logging.basicConfig(level=log_level.upper(), format="aihub: %(message)s")
    print(f"aihub: token ({source}): {token}", flush=True)
    print(f"aihub: clients connect to ws://{host}:{port}/ws/workspace", flush=True)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        ws_max_size=settings.max_frame_bytes,
        timeout_graceful_shutdown=5,
    )
    # uvicorn's debug log prints request headers, the bearer token among them.
    redact = RedactSecret(token)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(redact)
    uvicorn.Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port, args.log_level)
    return 2


if __name__ == "__main__":
    sys.exit(main())
