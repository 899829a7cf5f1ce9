"""``AsyncGatewayClient``: the gateway's REST API from asyncio code, on ``httpx.AsyncClient``.

Every method builds its request with :mod:`gateway.client.core` (the layer
:class:`gateway.client.GatewayClient` shares) and returns the API's own response model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from gateway.api.calls_schemas import CallList
from gateway.api.control import ControlOut
from gateway.api.outbound_schemas import OutboundCallCreate, OutboundCallCreated
from gateway.api.schemas import CallCreate, CallCreated, CallOut, InlineCallCreate
from gateway.client import core
from gateway.client.core import DEFAULT_TIMEOUT_S, GatewayError, Op, WaitPlan

__all__ = ["AsyncGatewayClient"]

T = TypeVar("T", bound=BaseModel)


class AsyncGatewayClient:
    """An asyncio client of one gateway, acting with one API key.

    Use it as ``async with AsyncGatewayClient(url, api_key=key) as gw: ...`` (or call
    :meth:`aclose`).

    Args:
        base_url: the gateway's base URL, e.g. ``https://gw.example.com``.
        api_key: sent as ``X-API-Key`` (``gateway keys create``).
        timeout: limit of each request (s; connect, read, write and pool wait each).
        transport: an httpx transport to use instead of the network (e.g.
            ``httpx.ASGITransport(app)`` to call an app in this process).
        headers: more headers for every request.

    Raises (every request method):
        GatewayError: the gateway answered with an error (its code, message and fields).
        GatewayConnectionError: no answer (``timeout`` or ``network``).
    """

    def __init__(self, base_url: str, *, api_key: str, timeout: float = DEFAULT_TIMEOUT_S,
                 transport: httpx.AsyncBaseTransport | None = None,
                 headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=base_url, headers={**(headers or {}), "X-API-Key": api_key},
            timeout=httpx.Timeout(timeout), transport=transport,
        )  # fmt: skip

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def send(self, op: Op[T], *, timeout: float | None = None) -> T:
        """Send one operation of :mod:`gateway.client.core` and read its answer."""
        try:
            response = await self._http.send(op.request(self._http, timeout))
        except httpx.TransportError as exc:
            raise core.transport_error(op, exc) from exc
        return core.parse(op, response)

    async def create_call(self, body: CallCreate | Mapping[str, Any] | None = None, **fields: Any) -> CallCreated:
        """``POST /calls/create``: a call running a stored agent (``agent_id=…``)."""
        return await self.send(core.create_call(body, fields))

    async def create_inline_call(self, body: InlineCallCreate | Mapping[str, Any] | None = None,
                                 **fields: Any) -> CallCreated:  # fmt: skip
        """``POST /calls/inline``: a call configured in the request (``system_prompt=…``)."""
        return await self.send(core.create_inline_call(body, fields))

    async def place_call(self, body: OutboundCallCreate | Mapping[str, Any] | None = None,
                         **fields: Any) -> OutboundCallCreated:  # fmt: skip
        """``POST /calls/outbound``: dial ``to=…`` through a carrier account (queued at once)."""
        return await self.send(core.place_call(body, fields))

    async def get_call(self, call_id: str, *, timeout: float | None = None) -> CallOut:
        """``GET /calls/{callId}``: the call's record."""
        return await self.send(core.get_call(call_id), timeout=timeout)

    async def list_calls(self, *, limit: int | None = None, offset: int | None = None, status: str | None = None,
                         direction: str | None = None, start_date: datetime | str | None = None,
                         end_date: datetime | str | None = None) -> CallList:  # fmt: skip
        """``GET /calls``: a page of this key's calls, newest first, with the total."""
        return await self.send(core.list_calls(limit=limit, offset=offset, status=status, direction=direction,
                                               start_date=start_date, end_date=end_date))  # fmt: skip

    async def control(self, call_id: str, action: str, **fields: Any) -> ControlOut:
        """``POST /calls/{callId}/control``: e.g. ``control(id, "hangup")``,
        ``control(id, "send_dtmf", digits="12#")``."""
        return await self.send(core.control(call_id, action, fields))

    async def hangup(self, call_id: str) -> ControlOut:
        """``control(call_id, "hangup")``."""
        return await self.control(call_id, "hangup")

    async def wait_for_call(self, call_id: str, timeout: float = 300.0) -> CallOut:
        """Poll ``GET /calls/{callId}`` with growing delays (0.2 s up to 2 s) until the call
        ended and its post-call results are final; returns that record.

        Args:
            call_id: the call.
            timeout: longest wait (s).

        Raises:
            CallWaitTimeout: not final within ``timeout`` (it carries the last record read).
            GatewayError: a 4xx answer (e.g. ``not_found``); no-answers and 5xx are retried
                until the time is up.
        """
        plan = WaitPlan(call_id, timeout)
        while True:
            try:
                rec = await self.get_call(call_id, timeout=plan.request_timeout(self.timeout))
                if plan.done(rec):
                    return rec
            except GatewayError as exc:
                if plan.remaining() <= 0:
                    raise plan.expired() from exc
                if not plan.retryable(exc):
                    raise
            delay = plan.next_delay()
            if delay is None:
                raise plan.expired()
            await asyncio.sleep(delay)
