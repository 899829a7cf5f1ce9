"""Parts of the call record (``CallOut``) added after the call: the post-call step's state and
the latency figures.

Kept apart from :mod:`gateway.api.schemas` (which builds ``CallOut`` from them) to keep that
module small; built on :mod:`gateway.api.schema_base` so neither imports the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from gateway.api.schema_base import _Response

__all__ = ["PostCallStatusT", "PostCallOut", "TurnLatencyOut", "LatencyOut", "TransferOut"]

#: ``calls.post_call_status`` values (``None``: the call has not ended).
PostCallStatusT = Literal["pending", "running", "completed", "skipped", "failed"]


class PostCallOut(_Response):
    """The post-call step (summary and extracted fields): where it is, and why it failed or
    was skipped."""

    status: PostCallStatusT | None = Field(
        description="pending, running, completed, skipped (no chat endpoint configured) or failed; "
        "null while the call runs."
    )
    error: str | None = Field(description="Why it failed or was skipped (else null).")


class TransferOut(_Response):
    """Where the call was transferred (``POST /calls/{callId}/control`` ``transfer``)."""

    to: str = Field(description="E.164.")
    at: datetime | None = Field(description="When the carrier took the transfer.")


class TurnLatencyOut(_Response):
    """One agent reply's response time."""

    turn: int = Field(ge=0, description="Index of the agent's turn in transcript.")
    ms: int = Field(
        ge=0, description="The end of the caller's speech → the reply's first audio sent to the carrier (ms)."
    )


class LatencyOut(_Response):
    """The call's latency figures (ms, on the gateway's clock); empty lists when nothing was
    measured (a call that never streamed, or no reply followed caller speech)."""

    turns: list[TurnLatencyOut] = Field(description="Per agent reply that followed caller speech, in order.")
    response_p50_ms: int | None = Field(description="Median response time over every reply (ms).")
    response_max_ms: int | None = Field(description="Longest response time (ms).")
    barge_in_ms: list[int] = Field(
        description="Per barge-in: the caller's speech onset → the agent's audio cleared at the carrier (ms)."
    )
