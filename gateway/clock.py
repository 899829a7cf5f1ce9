"""Injected clocks: the session takes time from one, so tests can drive time by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import datetime, timezone
from typing import Protocol, TypeVar

__all__ = ["Clock", "MonotonicClock", "iso_utc", "wait_for"]

T = TypeVar("T")


def iso_utc(at: datetime) -> str:
    """``at`` as ISO 8601 UTC with microseconds and a ``Z``: ``2026-12-02T08:24:20.000000Z``.

    One fixed width, so instants written by the gateway and those taken from a carrier's
    whole-second timestamps sort as text in time order (``…20Z`` sorts after ``…20.3Z``).
    A naive ``at`` is read as UTC. Source: ISO 8601-1:2019 §5.3.4.2, RFC 3339 §5.6.
    """
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class Clock(Protocol):
    """A monotonic clock in seconds with a matching sleep."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: :func:`time.monotonic` and :func:`asyncio.sleep`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def wait_for(clock: Clock, awaitable: Awaitable[T], seconds: float) -> T:
    """``awaitable``'s result, within ``seconds`` on ``clock`` (as :func:`asyncio.wait_for`).

    Raises:
        TimeoutError: ``seconds`` passed first; ``awaitable`` is then cancelled (and so is it
            when the caller is cancelled).
        Exception: whatever ``awaitable`` raises.
    """
    work = asyncio.ensure_future(awaitable)
    limit = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((work, limit), return_when=asyncio.FIRST_COMPLETED)
    finally:
        limit.cancel()
        if not work.done():
            work.cancel()
    if not work.done() or work.cancelled():
        raise TimeoutError(f"no result within {seconds} s")
    return work.result()
