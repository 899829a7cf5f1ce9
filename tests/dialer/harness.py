"""Loopback harness for dialer tests: the gateway's side of a carrier, built small.

* :func:`serve` runs an ASGI app with uvicorn on a free loopback port.
* :class:`CallbackReceiver` is the status-callback (and Plivo answer-URL) endpoint: every request
  is checked with the dialer's ``verify_callback`` (403 when it fails, as the gateway's routes
  will) and read with ``parse_callback``; the raw requests are kept for tampering tests.
* :class:`MediaSink` is a WebSocket server standing in for the gateway's media endpoint: it keeps
  every frame the callee sends and closes when a carrier's ``stop`` arrives.
* :func:`loopback` serves the carrier simulator and a receiver around one carrier's dialer;
  :func:`check_timeout_then_network` proves a silent API is ``timeout`` and a closed one
  ``network``; :func:`check_resends_refused` that altered re-sends of a callback get 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve as ws_serve
from websockets.exceptions import ConnectionClosed

import pytest

from gateway.carriers.instructions import instruction_document
from gateway.dialer.base import CallbackEvent, CarrierError, OutboundRequest, make_dialer
from gateway.simulator.carrier_api import CarrierSimulator, ScriptBook


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serve(app):
    """Serve ``app`` on loopback; yields ``http://127.0.0.1:<port>``."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class Received:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    event: CallbackEvent | None


@dataclass
class CallbackReceiver:
    """Status callbacks checked by ``dialer`` with ``creds``; ``/answer`` serves ``kind``'s
    instruction document pointing at ``stream_url`` (set before the call is answered)."""

    dialer: object
    creds: dict
    kind: str
    stream_url: str = ""
    parameters: dict = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    base_url: str = ""

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/status/{call_id}", self._status, methods=["POST", "GET"]),
                                 Route("/answer/{call_id}", self._answer, methods=["POST", "GET"])])

    async def _check(self, request: Request) -> Received:
        body = await request.body()
        url = str(request.url)
        ok = self.dialer.verify_callback(request.method, url, dict(request.headers), body, self.creds)
        event = self.dialer.parse_callback(request.method, url, dict(request.headers), body) if ok else None
        rec = Received(request.method, url, dict(request.headers), body, ok, event)
        self.received.append(rec)
        return rec

    async def _status(self, request: Request) -> Response:
        rec = await self._check(request)
        return Response(status_code=204 if rec.verified else 403)

    async def _answer(self, request: Request) -> Response:
        rec = await self._check(request)
        if not rec.verified:
            return Response(status_code=403)
        ctype, body = instruction_document(self.kind, self.stream_url, parameters=self.parameters)
        return Response(body, media_type=ctype)

    def statuses(self) -> list[str]:
        return [r.event.status for r in self.received if r.event is not None and "/status/" in r.url]

    def status_url(self, call_id: str) -> str:
        return f"{self.base_url}/status/{call_id}"

    def answer_url(self, call_id: str) -> str:
        return f"{self.base_url}/answer/{call_id}"


@dataclass
class MediaSink:
    """A media WebSocket endpoint that only listens (see the module docstring)."""

    frames: list = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def _handler(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path)
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                self.frames.append(frame)
                msg = orjson.loads(frame) if isinstance(frame, str) else {}
                if msg.get("event") == "start":
                    self.started.set()
                if msg.get("event") == "stop":
                    return

    def json_events(self) -> list[dict]:
        return [orjson.loads(f) for f in self.frames if isinstance(f, str)]

    @contextlib.asynccontextmanager
    async def running(self):
        async with ws_serve(self._handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            yield self


@contextlib.asynccontextmanager
async def loopback(kind: str, account: dict[str, str], book: ScriptBook | None = None, *, timeout_s: float = 5.0):
    """(dialer, receiver, simulator) for carrier ``kind`` with the simulator and the callback
    receiver served on loopback; the dialer is closed on the way out."""
    sim = CarrierSimulator({kind: account}, scripts=book or ScriptBook())
    async with sim.serving() as api:
        dialer = make_dialer(kind, api_base_url=api, timeout_s=timeout_s)
        receiver = CallbackReceiver(dialer, account, kind)
        async with serve(receiver.app) as base:
            receiver.base_url = base
            try:
                yield dialer, receiver, sim
            finally:
                dialer.close()


async def check_timeout_then_network(dialer_for: Callable[[str, float], object], req: OutboundRequest,
                                     creds: dict[str, str], *, within_s: float) -> None:
    """``dialer_for(api_base_url, timeout_s)`` placing ``req`` against a server that never
    answers fails ``timeout`` (limit 0.5 s) in under ``within_s``; once that server is closed
    (limit 2 s) it fails ``network``."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dialer = dialer_for(f"http://127.0.0.1:{port}", 0.5)
    try:
        t = time.monotonic()
        with pytest.raises(CarrierError) as slow:
            await dialer.place(req, creds)
        assert slow.value.code == "timeout" and time.monotonic() - t < within_s
    finally:
        server.close()
        await server.wait_closed()
        dialer.close()
    dialer = dialer_for(f"http://127.0.0.1:{port}", 2)
    with pytest.raises(CarrierError) as down:
        await dialer.place(req, creds)
    assert down.value.code == "network"
    dialer.close()


async def check_resends_refused(sim: CarrierSimulator, receiver: CallbackReceiver, original: Received,
                                resends: Callable[[dict[str, str]], list[tuple[dict[str, str], bytes]]]) -> None:
    """Each ``(headers, body)`` of ``resends(headers)`` (``headers``: ``original``'s without
    ``content-length``) posted again to ``original.url`` is answered 403 and fails verification."""
    headers = {k: v for k, v in original.headers.items() if k.lower() != "content-length"}
    replay = resends(headers)
    for hdrs, body in replay:
        r = await sim.http.post(original.url, headers=hdrs, content=body)
        assert r.status_code == 403
    assert [r.verified for r in receiver.received[-len(replay):]] == [False] * len(replay)
