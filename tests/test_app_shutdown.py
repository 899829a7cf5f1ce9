"""The lifespan's shutdown always completes: a post-call worker whose close fails (its hand-back
hits a database that is down) or hangs is logged and passed over, and the retention purge,
the webhook worker, the outbound service and the HTTP clients are still closed, in order."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.config import Settings


def _app(tmp_path: Path, **kw: Any) -> Any:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'gw.db'}",
                        recordings_dir=tmp_path / "rec", public_url="", retention_days=30, **kw)  # fmt: skip
    return create_app(settings, warm_up=False)


def _watch(services: Any, closed: list[str]) -> None:
    """Note each later part's close as it runs (the real close still runs)."""

    def wrap(name: str, part: Any) -> None:
        real = part.aclose

        async def aclose(*args: Any, **kwargs: Any) -> None:
            closed.append(name)
            await real(*args, **kwargs)

        part.aclose = aclose

    for name in ("retention", "webhooks", "outbound", "clients"):
        wrap(name, getattr(services, name))


@pytest.mark.parametrize("how", ["raises", "hangs"])
async def test_a_failing_post_call_close_does_not_stop_the_shutdown(tmp_path: Path, how: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    app = _app(tmp_path, shutdown_timeout_s=0.3)
    services = app.state.services
    closed: list[str] = []
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        async with app.router.lifespan_context(app):
            postcall, clients = services.postcall, services.clients
            real = postcall.aclose

            async def broken() -> None:
                await real()  # its own work stops; then the hand-back's database is down, or hangs
                if how == "raises":
                    raise RuntimeError("database is down")
                await asyncio.sleep(3600)

            postcall.aclose = broken
            _watch(services, closed)
            started = time.monotonic()
        took = time.monotonic() - started
    assert closed == ["retention", "webhooks", "outbound", "clients"]
    assert clients.tools.is_closed and clients.operator.is_closed and services.clients is None
    assert took < 3.0, took
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "the post-call worker" in said and ("failed" if how == "raises" else "did not close within 0.3 s") in said
