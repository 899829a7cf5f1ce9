""":class:`gateway.picows_listener.PicowsTransport` over real loopback sockets: its send waits
(bounded, visible in ``send_pending_s``) when the peer stops reading, its receive queue is
bounded by pausing the socket, and nothing is lost or reordered meanwhile.

The peer is a raw socket speaking RFC 6455 by hand (masked client frames), so it can stop
reading, or flood, exactly as the test needs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import pytest
from picows import ws_create_server

from gateway.picows_listener import MAX_MESSAGE, RECV_HIGH_FRAMES, PicowsTransport, _StreamListener
from gateway.streams import StreamRequest


class _Owner:
    """Stands in for :class:`PicowsMediaListener`: keeps each connection's listener."""

    def __init__(self) -> None:
        self.connected: asyncio.Queue[_StreamListener] = asyncio.Queue()

    def _spawn(self, listener: _StreamListener) -> None:
        self.connected.put_nowait(listener)


def _client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (f"GET /stream/raw/c/t HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip
    response = b""
    while b"\r\n\r\n" not in response:
        response += await asyncio.wait_for(loop.sock_recv(sock, 1), 5)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


@pytest.fixture
async def served():
    owner = _Owner()
    request = StreamRequest("raw", "c", "t", {}, "ws://127.0.0.1/stream/raw/c/t")
    server = await ws_create_server(lambda _: _StreamListener(owner, request), "127.0.0.1", 0,
                                    max_frame_size=MAX_MESSAGE)  # fmt: skip
    port = server.sockets[0].getsockname()[1]
    yield owner, port
    server.close()


async def test_a_peer_that_stops_reading_makes_send_wait_boundedly_until_close(served) -> None:
    owner, port = served
    sock = await _connect(port, rcvbuf=4096)
    transport: PicowsTransport = (await asyncio.wait_for(owner.connected.get(), 5)).transport
    chunk = b"\x00" * 16_000
    sent, pending = 0, None
    while sent < 4000:  # 64 MB at most: far beyond any socket buffer
        task = asyncio.ensure_future(transport.send(chunk))
        await asyncio.sleep(0)
        if not task.done():
            pending = task
            break
        sent += 1
    assert pending is not None, "send never waited for a peer that reads nothing"
    buffered = transport.ws.underlying_transport.get_write_buffer_size()
    assert buffered <= 1 << 20, buffered  # the write buffer stays near its high-water mark
    await asyncio.sleep(0.3)
    assert 0.25 <= transport.send_pending_s() < 5
    await asyncio.wait_for(transport.close(1001, "going away"), 5)  # the peer never answers: dropped
    await asyncio.wait_for(pending, 1)
    assert transport.closed and transport.send_pending_s() == 0
    await transport.send(chunk)  # a no-op once closed
    sock.close()


async def test_a_flood_pauses_reading_and_every_message_arrives_in_order(served) -> None:
    owner, port = served
    sock = await _connect(port)
    transport: PicowsTransport = (await asyncio.wait_for(owner.connected.get(), 5)).transport
    loop = asyncio.get_running_loop()
    count = RECV_HIGH_FRAMES * 80  # ~300 kB of small messages
    data = b"".join(_client_frame(0x1, f'{{"n": {i}}}'.encode()) for i in range(count))
    send = asyncio.ensure_future(loop.sock_sendall(sock, data + _client_frame(0x2, b"\x01\x02")))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if transport._reading_paused:
            break
    assert transport._reading_paused
    queued = len(transport._frames)
    await asyncio.sleep(0.1)
    # bounded: past the mark, at most what one read of the socket held; the rest waits in it
    assert RECV_HIGH_FRAMES < queued == len(transport._frames) < count // 4, queued
    got = [await asyncio.wait_for(transport.receive(), 5) for _ in range(count + 1)]
    assert got[:count] == [f'{{"n": {i}}}' for i in range(count)] and got[count] == b"\x01\x02"
    await asyncio.wait_for(send, 5)
    await loop.sock_sendall(sock, _client_frame(0x8, struct.pack("!H", 1000)))  # close
    assert await asyncio.wait_for(transport.receive(), 5) is None
    reply = await asyncio.wait_for(loop.sock_recv(sock, 64), 5)
    assert reply[:4] == b"\x88\x02\x03\xe8"  # our close code echoed (RFC 6455 §5.5.1)
    sock.close()
