"""A webhook receiver on loopback (real HTTP, uvicorn): records each request, verifies it with
``standardwebhooks``, and answers what the test tells it to (fail the first attempts, 410)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Delivery:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool
    at: float = 0.0  # time.monotonic() on arrival

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """What the receiver got, per path, and how it answers.

    ``secrets[path]``: the secret it verifies that path's requests with. ``answer(path, id,
    attempt)``: the status to answer (attempt counts from 1 per webhook-id); default 204.
    """

    port: int = 0
    secrets: dict[str, str] = field(default_factory=dict)
    answer: Callable[[str, str, int], int] = lambda path, msg_id, attempt: 204
    got: list[Delivery] = field(default_factory=list)
    hang_s: float = 0.0
    hang: dict[str, float] = field(default_factory=dict)  # per path, added to hang_s
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def attempts(self, msg_id: str) -> int:
        return sum(d.id == msg_id for d in self.got)

    def accepted(self, path: str | None = None) -> list[Delivery]:
        """The requests it answered 2xx (of ``path``)."""
        return [d for d in self.got if 200 <= d.status < 300 and (path is None or d.path == path)]

    async def wait(self, cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not cond():
                await asyncio.sleep(0.01)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        path = request.url.path
        try:
            Webhook(self.secrets[path]).verify(body, headers)
            verified = True
        except (WebhookVerificationError, KeyError):
            verified = False
        msg_id = headers.get("webhook-id", "")
        status = self.answer(path, msg_id, self.attempts(msg_id) + 1)
        self.got.append(Delivery(path, headers, body, status, verified, time.monotonic()))
        if hang := self.hang_s + self.hang.get(path, 0.0):
            with contextlib.suppress(TimeoutError):  # until the fixture shuts the receiver down
                await asyncio.wait_for(self.closing.wait(), hang)
        return Response(status_code=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = Starlette(routes=[Route("/{path:path}", rec.endpoint, methods=["POST"])])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        rec.port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=rec.port, log_level="warning",
                                           log_config=None, lifespan="off"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield rec
    rec.closing.set()
    server.should_exit = True
    await asyncio.wait_for(task, 5)
