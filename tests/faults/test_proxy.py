"""The fault-injection proxy itself, in front of an echo server: it passes bytes,
holds them while blackholed (and delivers them after), and resets when refusing."""

from __future__ import annotations

import asyncio

import pytest

from .proxy import FaultProxy


@pytest.fixture
async def echo_port():
    async def echo(reader, writer):
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
def proxy(echo_port):
    proxy = FaultProxy("127.0.0.1", echo_port).start()
    yield proxy
    proxy.stop()


async def _roundtrip(reader, writer, data: bytes, timeout: float = 5) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), timeout)


async def test_pass_blackhole_and_back(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await _roundtrip(reader, writer, b"ping") == b"ping"

    proxy.blackhole()
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    # A new connection is accepted, but nothing comes back either.
    new_reader, new_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    with pytest.raises(TimeoutError):
        await _roundtrip(new_reader, new_writer, b"new", timeout=0.3)

    proxy.pass_through()
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"  # what was held arrives, in order
    assert await asyncio.wait_for(new_reader.readexactly(3), 5) == b"new"
    assert await _roundtrip(reader, writer, b"again") == b"again"
    for w in (writer, new_writer):
        w.close()


async def test_refuse_resets_open_and_new_connections_until_passing_again(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await _roundtrip(reader, writer, b"ping") == b"ping"

    proxy.refuse()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _roundtrip(reader, writer, b"lost")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):  # reset while connecting, or at once after
        new_reader, new_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await _roundtrip(new_reader, new_writer, b"refused")

    proxy.pass_through()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await _roundtrip(reader, writer, b"back") == b"back"
    writer.close()
