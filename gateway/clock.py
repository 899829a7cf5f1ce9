"""Injected clocks: the session takes time from one, so tests can drive time by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

__all__ = ["Clock", "MonotonicClock", "wait_for"]

T = TypeVar("T")


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
