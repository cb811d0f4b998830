"""A loopback TCP proxy a test controls, to cut a worker off from its broker and restore it.

    with CutProxy(upstream_port) as proxy:   # listens on 127.0.0.1:proxy.port
        ...; proxy.cut(); ...; proxy.restore()

With `tls` (an ssl server context) it accepts TLS only and forwards the plain bytes: a
TLS-terminating listener in front of a broker that speaks plaintext.

While cut, every open connection is closed and new ones are accepted and closed at once (as
a broker that went away, or a network partition with resets). The broker must advertise
the proxy's port, or clients would reach it directly after their first metadata request.
"""
from __future__ import annotations

import asyncio
import ssl
import threading
from types import TracebackType

from worker.harness.broker import free_port

CHUNK = 65536


class CutProxy:
    def __init__(self, upstream_port: int, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.upstream_port, self.tls = upstream_port, tls
        self.connections = 0  # accepted so far (with tls: handshakes completed)
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cut-proxy", daemon=True)
        self._open: set[asyncio.StreamWriter] = set()
        self._cut = False
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> CutProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> None:
        """Close every connection through the proxy and refuse new ones until `restore`."""
        asyncio.run_coroutine_threadsafe(self._set(True), self._loop).result(10)

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set(False), self._loop).result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.tls)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._set(True)

    async def _set(self, cut: bool) -> None:
        self._cut = cut
        if cut:
            for writer in list(self._open):
                writer.transport.abort()  # a reset, as a dead peer gives
            self._open.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._open.discard(writer)
            writer.transport.abort()
