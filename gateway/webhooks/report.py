"""The end-of-call report's body: the call's full record, as ``GET /calls/{callId}`` shows it.

``call.report`` rows are written by the post-call results' transaction with no payload; the
delivery worker renders the record at the first attempt (:func:`report_renderer`) and stores
it, so every attempt (and every restart) sends the same bytes. The record is built by the
API's own view (:func:`gateway.api.call_views.call_out`), outside any request: its URLs are
absolute with ``GATEWAY_PUBLIC_URL`` set, paths otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from gateway.api.call_views import call_out
from gateway.api.deps import ApiServices
from gateway.config import Settings
from gateway.store import CallRecord
from gateway.webhooks.worker import ReportRenderer, offload

__all__ = ["report_renderer", "call_report_renderer"]


def report_renderer(store: Any, view: Callable[[CallRecord], Awaitable[BaseModel]]) -> ReportRenderer:
    """A :data:`~gateway.webhooks.worker.ReportRenderer` over ``store``.

    The whole render (read, view, dump: ~35 ms for a one-hour call) runs in a thread
    (:func:`~gateway.webhooks.worker.offload`: the worker's own), the view on an event loop
    of its own there, so it must not await anything bound to the app's loop (the app's
    view has no live overlay: a reported call has ended).

    Args:
        store: reads the record (``get_call``: turns, events and transitions included).
        view: the record as its API response model.

    Returns:
        ``await render(call_id)`` → the model as JSON (camelCase, by alias), ``None`` when the
        call no longer exists.
    """

    def render_sync(call_id: str) -> dict[str, Any] | None:
        rec = store.get_call(call_id)
        if rec is None:
            return None
        return asyncio.run(view(rec)).model_dump(mode="json", by_alias=True)

    async def render(call_id: str) -> dict[str, Any] | None:
        return await offload(render_sync, call_id)

    return render


def call_report_renderer(store: Any, settings: Settings) -> ReportRenderer:
    """The app's renderer: :func:`~gateway.api.call_views.call_out` with no request (a call
    that ended has no live view to overlay)."""
    api = ApiServices(store=store, settings=settings)
    return report_renderer(store, lambda rec: call_out(rec, api))
