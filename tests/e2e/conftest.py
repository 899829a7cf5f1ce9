"""End-to-end harness: the real gateway served by uvicorn on loopback, a real SQLite store.

``gateway`` is a factory fixture: ``gw = await gateway(**settings_overrides)`` starts a server
and returns a :class:`Gateway` with its base URLs and an API key. The local agent's speech
engines (one worker process) load once per test session and are shared by every app.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.config import Settings
from gateway.simulator.demo import serve_in_background


#: Every terminal call status.
TERMINAL = frozenset({"completed", "failed", "expired", "no_answer", "busy", "declined", "voicemail", "canceled"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    """A running gateway: ``http`` base URL, API ``key``, the ``app`` and its services."""

    http: str
    key: str
    app: object
    settings: Settings

    @property
    def services(self):
        return self.app.state.services

    @property
    def ws(self) -> str:
        """The base of stream URLs (``ws://127.0.0.1:<port>``: the media listener in use)."""
        from gateway.api.urls import stream_url

        return stream_url(self.settings, None, "raw", "x", "y").removesuffix("/stream/raw/x/y")

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.http, headers={"X-API-Key": self.key}, timeout=30)

    async def create_inline_call(self, **body) -> dict:
        payload = {
            "systemPrompt": "You are a test agent.",
            "voice": "joe",
            "language": "en-US",
            "greeting": "Hello, thanks for calling. How can I help you today?",
        }
        payload.update(body)
        async with self.client() as c:
            r = await c.post("/calls/inline", json=payload)
            assert r.status_code == 201, r.text
            return r.json()

    async def call_record(self, call_id: str, *, final: bool = True) -> dict:
        """``GET /calls/{id}``; with ``final``, waits (up to 10 s) until the record is final."""
        import asyncio

        async with self.client() as c:
            for _ in range(200):
                r = await c.get(f"/calls/{call_id}")
                assert r.status_code == 200, r.text
                rec = r.json()
                if not final or rec["status"] in TERMINAL:
                    return rec
                await asyncio.sleep(0.05)
        raise AssertionError(f"call {call_id} never finalised: {rec}")


#: ``GATEWAY_TEST_MEDIA_LISTENER=picows`` serves every ``gateway`` fixture's streams on the picows
#: listener (``make test-e2e-picows``); a test's own ``media_listener=`` override wins.
MEDIA_LISTENER = os.environ.get("GATEWAY_TEST_MEDIA_LISTENER", "starlette")


async def start_gateway(tmp_path: Path, engines, **overrides) -> tuple[Gateway, object, object]:
    """Serve a gateway on a free loopback port: ``(gateway, server, serve task)``; stop it with
    :func:`stop_gateway`. Its SQLite file and recordings are under ``tmp_path``; ``overrides``
    are :class:`Settings` fields."""
    port = free_port()
    overrides.setdefault("media_listener", MEDIA_LISTENER)
    if overrides["media_listener"] == "picows":
        overrides.setdefault("media_port", free_port())
    settings = Settings(
        host="127.0.0.1",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        database_url=f"sqlite:///{tmp_path}/gw-{port}.db",
        recordings_dir=tmp_path / "recordings",
        **overrides,
    )
    server, task, app = await serve_in_background(settings, engines=engines, warm_up=False)
    key, _ = app.state.services.store.create_api_key("test")
    return Gateway(f"http://127.0.0.1:{port}", key, app, settings), server, task


async def stop_gateway(server, task) -> None:
    """Stop a gateway :func:`start_gateway` served (its live calls end, its records are written)."""
    server.should_exit = True
    await task


@pytest.fixture
async def gateway(tmp_path: Path, local_engines):
    started = []

    async def start(**overrides) -> Gateway:
        gw, server, task = await start_gateway(tmp_path, local_engines, **overrides)
        started.append((server, task))
        return gw

    yield start
    for server, task in started:
        await stop_gateway(server, task)
