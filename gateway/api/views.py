"""Store records as API response models (:mod:`gateway.api.schemas`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from gateway.api.schemas import AgentOut, CallConfigOut, EventOut, STORE_NAMES, TurnOut
from gateway.store import AgentRecord, CallConfig, EventRecord, TurnRecord

__all__ = ["agent_out", "config_out", "turn_out", "event_out"]

#: Store field name → API field name (the inverse of :data:`STORE_NAMES`).
_API_NAMES = {store: api for api, store in STORE_NAMES.items()}


def _config_fields(src: CallConfig | AgentRecord) -> dict[str, Any]:
    """Every :class:`CallConfig` field of ``src`` under its API name, containers as JSON."""
    out = {_API_NAMES.get(f.name, f.name): getattr(src, f.name) for f in fields(CallConfig)}
    out["tools"] = [dict(t) for t in src.tools]
    out["secret_refs"] = dict(src.secret_refs)
    return out


def agent_out(rec: AgentRecord) -> AgentOut:
    """An agent record as ``AgentOut``."""
    return AgentOut(id=rec.id, name=rec.name, created_at=rec.created_at, **_config_fields(rec))


def config_out(cfg: CallConfig) -> CallConfigOut:
    """A call's configuration snapshot as ``CallConfigOut``."""
    return CallConfigOut(**_config_fields(cfg))


def turn_out(t: Mapping[str, Any] | TurnRecord) -> TurnOut:
    """A transcript turn (a stored record, or a live session's dict) as ``TurnOut``."""
    if isinstance(t, TurnRecord):
        return TurnOut(role=t.role, text=t.text, at_ms=t.at_ms, interrupted=t.interrupted, heard_ms=t.heard_ms)
    return TurnOut(
        role=t["role"],
        text=str(t.get("text", "")),
        at_ms=int(t.get("at_ms", 0)),
        interrupted=bool(t.get("interrupted", False)),
        heard_ms=t.get("heard_ms"),
    )


def event_out(e: Mapping[str, Any] | EventRecord) -> EventOut:
    """A timeline event (a stored record, or a live session's dict) as ``EventOut``."""
    if isinstance(e, EventRecord):
        return EventOut(kind=e.kind, at_ms=e.at_ms, data=e.data)
    return EventOut(kind=str(e["kind"]), at_ms=int(e.get("at_ms", 0)), data=dict(e.get("data") or {}))
