"""A served gateway with a simulated Twilio account, for the client and MCP tests.

:func:`outbound_gateway` serves the carrier simulator (Twilio's API) and the whole gateway
(uvicorn on a free loopback port, a SQLite store in ``workdir``, the local agent), registers a
carrier account through ``POST /carrier-accounts`` (credentials by ``GATEWAY_SECRET_*``
reference, set in this process for the block) and yields a :class:`Served`. The callee
numbers below answer cheaply: :data:`QUIET` picks up, stays silent for half a second and
hangs up (a call that completes in about a second, with no speech to synthesise or
recognise); :data:`LISTENER` does the same for three seconds (long enough to hear an agent's
first message); :data:`RINGING` rings for a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.config import Settings
from gateway.simulator.carrier_api import CarrierSimulator, ScriptBook, simple
from gateway.simulator.carrier_api.accounts import new_account, secret_refs
from gateway.simulator.demo import serve_in_background

QUIET, RINGING, LISTENER, FROM = "+14155550111", "+14155550112", "+14155550113", "+14155550199"
#: An inline agent that waits for the callee (no greeting: nothing to synthesise).
AGENT: dict[str, Any] = {"systemPrompt": "You are a test agent.", "objective": "Say nothing.", "ringTimeout": 30}


@dataclass
class Served:
    """A running gateway: base URL, an API key, its app and the carrier simulator."""

    url: str
    key: str
    app: Any
    sim: CarrierSimulator
    account_id: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def outbound_gateway(workdir: Path, engines: Any, **overrides: Any) -> AsyncIterator[Served]:
    """Serve the simulator and a gateway placing calls through it (see the module docstring)."""
    creds = new_account("twilio")
    refs, env = secret_refs("twilio", creds)
    saved = {var: os.environ.get(var) for var in env}
    os.environ.update(env)
    book = ScriptBook({QUIET: simple("silence", ring_ms=100, answer_pause_ms=0, silence_ms=500),
                       LISTENER: simple("silence", ring_ms=100, answer_pause_ms=0, silence_ms=3000),
                       RINGING: simple("no_answer", ring_ms=60_000)})  # fmt: skip
    sim = CarrierSimulator({"twilio": creds}, scripts=book)
    try:
        async with sim.serving() as api:
            port = _free_port()
            settings = Settings(
                _env_file=None, host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}",
                database_url=f"sqlite:///{workdir / 'gw.db'}", recordings_dir=workdir / "rec",
                carrier_api_urls={"twilio": api}, **overrides,
            )  # fmt: skip
            server, task, app = await serve_in_background(settings, engines=engines, warm_up=False)
            try:
                key, _ = await asyncio.to_thread(app.state.services.store.create_api_key, "test")
                url = f"http://127.0.0.1:{port}"
                async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=10) as http:
                    r = await http.post("/carrier-accounts", json={"kind": "twilio", "name": "sim", "secretRefs": refs,
                                                                   "numbers": [FROM], "default": True})  # fmt: skip
                assert r.status_code == 201, r.text
                yield Served(url, key, app, sim, r.json()["id"])
            finally:
                server.should_exit = True
                await asyncio.wait_for(task, 15)
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
