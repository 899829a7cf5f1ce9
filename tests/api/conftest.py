"""Fixtures: a Store on a temporary SQLite file, the REST API's FastAPI app over it, and the
whole gateway served on loopback (``served``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api import create_api
from gateway.config import Settings
from gateway.store import Store

BASE_URL = "https://gw.example.com"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'gw.db'}",
        public_url="",
        recordings_dir=tmp_path / "recordings",
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    s = Store(settings.database_url)
    s.create_all()
    yield s
    s.close()


@pytest.fixture
def api_key(store: Store) -> str:
    return store.create_api_key("tests")[0]


def fake_instructions(carrier: str, stream_url: str, *, parameters: Any = None) -> tuple[str, str] | None:
    """Stands in for gateway.carriers.instructions.instruction_document."""
    if carrier == "raw":
        return None
    return "application/xml", f'<Response><Connect><Stream url="{stream_url}"/></Connect></Response>'


@pytest.fixture
def make_client(store: Store, settings: Settings) -> Callable[..., httpx.AsyncClient]:
    def make(*, settings_: Settings | None = None, base_url: str = BASE_URL, **kw: Any) -> httpx.AsyncClient:
        kw.setdefault("instruction_document", fake_instructions)
        app = create_api(store, settings_ or settings, **kw)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)

    return make


@pytest.fixture
async def client(make_client: Callable[..., httpx.AsyncClient], api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        c.headers["X-API-Key"] = api_key
        yield c


@pytest.fixture
async def anon(make_client: Callable[..., httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c


@pytest.fixture
async def served(tmp_path: Path, local_engines: Any) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``app, port, key = await served(**settings)``, the whole gateway on loopback.

    uvicorn serves :func:`gateway.app.create_app` on a free port of 127.0.0.1 with a SQLite
    store in ``tmp_path``; ``public_url`` may use ``{port}``. Servers stop at teardown.
    """
    from gateway.simulator.demo import serve_in_background

    running = []

    async def start(**overrides: Any) -> tuple[Any, int, str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if "public_url" in overrides:
            overrides["public_url"] = overrides["public_url"].format(port=port)
        settings = Settings(
            _env_file=None, host="127.0.0.1", port=port,
            database_url=f"sqlite:///{tmp_path / f'gw-{port}.db'}", recordings_dir=tmp_path / "rec",
            **overrides,
        )  # fmt: skip
        server, task, app = await serve_in_background(settings, engines=local_engines, warm_up=False)
        running.append((server, task))
        key, _ = app.state.services.store.create_api_key("test")
        return app, port, key

    yield start
    for server, task in running:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
