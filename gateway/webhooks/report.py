"""The end-of-call report's body: the call's full record, as the API shows it.

``call.report`` rows are written by the post-call results' transaction with no payload; the
delivery worker renders the record at the first attempt (:func:`report_renderer`) and stores
it, so every attempt (and every restart) sends the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from gateway.store import CallRecord
from gateway.webhooks.worker import ReportRenderer

__all__ = ["report_renderer", "call_report_view"]


def report_renderer(store: Any, view: Callable[[CallRecord], BaseModel]) -> ReportRenderer:
    """A :data:`~gateway.webhooks.worker.ReportRenderer` over ``store``.

    Args:
        store: reads the record (``get_call``: turns, events and transitions included).
        view: the record as its API response model (what ``GET /calls/{id}`` answers).

    Returns:
        ``render(call_id)`` → the model as JSON (camelCase, by alias), ``None`` when the call
        no longer exists.
    """

    def render(call_id: str) -> dict[str, Any] | None:
        rec = store.get_call(call_id)
        if rec is None:
            return None
        return view(rec).model_dump(mode="json", by_alias=True)

    return render


def call_report_view(rec: CallRecord) -> BaseModel:
    """The record a ``call.report`` carries (the API's view of the call)."""
    from gateway.api.call_views import call_summary_out  # the API layer, imported when first used

    return call_summary_out(rec)
