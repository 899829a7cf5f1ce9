"""Loopback harness for dialer tests: the gateway's side of a carrier, built small.

* :func:`serve` runs an ASGI app with uvicorn on a free loopback port.
* :class:`CallbackReceiver` is the status-callback (and Plivo answer-URL) endpoint: every request
  is checked with the dialer's ``verify_callback`` (403 when it fails, as the gateway's routes
  will) and read with ``parse_callback``; the raw requests are kept for tampering tests.
* :class:`MediaSink` is a WebSocket server standing in for the gateway's media endpoint: it keeps
  every frame the callee sends and closes when a carrier's ``stop`` arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve as ws_serve
from websockets.exceptions import ConnectionClosed

from gateway.carriers.instructions import instruction_document
from gateway.dialer.base import CallbackEvent


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
