"""A TCP proxy the tests take down and bring back: a server made unreachable for exactly the
seconds a test wants (the FHIR server for the writing services, the broker for a publisher),
without stopping the real server that every other test shares."""

from __future__ import annotations

import asyncio

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards TCP on a free loopback port to `target_port`; `down()` refuses new connections and
    cuts the open ones until `up()` (on the same port)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # one side closed: the other side is closed below
        finally:
            writer.close()

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer)
        )

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:  # cut the open keep-alive connections too
                writer.close()
            self._writers.clear()
            self._server = None
