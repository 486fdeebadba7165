"""A TCP proxy the tests put between the service and a server it depends on (MariaDB,
the Auth service), to make that server fail on command without touching it:

* `pass_through()`: bytes flow both ways (the start).
* `refuse()`: the server is stopped: open connections are reset, new ones are accepted
  and reset at once (as a closed port would refuse them).
* `blackhole()`: the server hangs (a frozen process, a lost network): connections stay
  open and new ones are accepted, but nothing is forwarded either way. Bytes wait in the
  socket buffers and flow again after `pass_through()`, as they would when a frozen
  process resumes.

It runs on its own thread and event loop, so it keeps working while a test blocks
(a subprocess, a synchronous client).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from enum import Enum


class Mode(Enum):
    PASS = "pass"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0  # connections accepted, in every mode
        self._mode = Mode.PASS
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"fault-proxy-{target_port}", daemon=True)
        self._flowing: asyncio.Event | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def pass_through(self) -> None:
        self._call(self._set(Mode.PASS))

    def refuse(self) -> None:
        self._call(self._set(Mode.REFUSE))

    def blackhole(self) -> None:
        self._call(self._set(Mode.BLACKHOLE))

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        await self._set(Mode.REFUSE)
        self._flowing.set()  # lets the held connections see theirs are gone, and end
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        for task in self._handlers:
            task.cancel()
        await self._server.wait_closed()

    async def _set(self, mode: Mode) -> None:
        self._mode = mode
        if mode == Mode.PASS:
            self._flowing.set()
            return
        self._flowing.clear()
        if mode == Mode.REFUSE:
            for writer in list(self._connections):
                _reset(writer)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode == Mode.REFUSE:
            _reset(client_writer)
            return
        handler = asyncio.current_task()
        self._handlers.add(handler)
        self._connections.add(client_writer)
        upstream_writer = None
        try:
            await self._flowing.wait()  # a hung server does not complete the handshake either
            if self._mode == Mode.REFUSE:
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            self._connections.add(upstream_writer)
            await asyncio.gather(self._pump(client_reader, upstream_writer), self._pump(upstream_reader, client_writer))
        except OSError:
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self._connections.discard(writer)
                    writer.close()
            self._handlers.discard(handler)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copies until either side closes; holds everything while the mode is not PASS."""
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # read just before a blackhole began: hold it too
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with a RST, as a port nobody listens on (or a killed server) answers."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
