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
from hub.settings import HubSettings, default_home


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aihub", description="AI Hub Workspaces")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the hub")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def serve(host: str, port: int, log_level: str) -> int:
    home = default_home()
    try:
        token, source = load_or_create_token(home)
    except OSError as exc:
        print(f"aihub: cannot read or create the token under {home}: {exc.strerror}", file=sys.stderr)
        return 1
    settings = HubSettings(token=token, home=home)
    logging.basicConfig(level=log_level.upper(), format="aihub: %(message)s")
    print(f"aihub: token ({source}): {token}", flush=True)
    print(f"aihub: clients connect to ws://{host}:{port}/ws/workspace", flush=True)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        ws_max_size=settings.max_frame_bytes,
        timeout_graceful_shutdown=5,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port, args.log_level)
    return 2


if __name__ == "__main__":
    sys.exit(main())
