"""A raw websockets echo server in a process of its own: the floor of a hub <-> client hop.

    python -m benchmarks.echo PORT

The hub and the client are two processes, so each call wakes another process
twice; an echo served by the measuring process itself never does, and is
reported beside it (BENCHMARKS.md, "Baselines").
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for frame in ws:
        await ws.send(frame)


async def main(port: int) -> None:
    async with serve(echo, "127.0.0.1", port, compression=None):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
