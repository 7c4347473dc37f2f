"""A network link slower than loopback, for measuring compression: a TCP proxy on 127.0.0.1.

Bytes pass in each direction at ``rate`` bytes per second, each read arriving
``delay`` seconds late (half a round trip), as over a LAN, a VPN or a laptop's
Wi-Fi; the hub and the client are the real ones on either side.
"""

from __future__ import annotations

import asyncio
import contextlib


class SlowLink:
    """``async with SlowLink(port, rate, delay) as link``: ``link.port`` leads to 127.0.0.1:``port``."""

    def __init__(self, target_port: int, rate: float, delay: float) -> None:
        self.target_port, self.rate, self.delay = target_port, rate, delay
        self.port = 0
        #: Bytes passed: from the connecting side (the client) to the target, and back.
        self.passed = {"up": 0, "down": 0}
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SlowLink:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        for source, sink, way in ((reader, up_writer, "up"), (up_reader, writer, "down")):
            pipe = asyncio.create_task(self._pipe(source, sink, way))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str) -> None:
        """Each read is due ``delay`` after it came; the link sends one at a time, at ``rate``."""
        loop = asyncio.get_running_loop()
        waiting: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            free_at = 0.0
            while True:
                due, data = await waiting.get()
                if not data:
                    return
                free_at = max(free_at, due) + len(data) / self.rate
                await asyncio.sleep(max(0.0, free_at - loop.time()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while not sender.done() and (data := await reader.read(64 * 1024)):  # a failed sender ends it
                self.passed[way] += len(data)
                waiting.put_nowait((loop.time() + self.delay, data))
            waiting.put_nowait((loop.time() + self.delay, b""))
            await sender
        except ConnectionError:
            pass
        finally:
            sender.cancel()
            writer.close()
