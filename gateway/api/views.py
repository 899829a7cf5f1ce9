"""Store records as API response models (:mod:`gateway.api.schemas`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from gateway.api.schemas import (
    STORE_NAMES,
    AgentOut,
    CallConfigOut,
    EventOut,
    TransitionOut,
    TurnOut,
    VoicemailPolicyOut,
)
from gateway.store import AgentRecord, CallConfig, EventRecord, TurnRecord

__all__ = ["agent_out", "config_out", "turn_out", "event_out", "transition_out"]

#: Store field name → API field name (the inverse of :data:`STORE_NAMES`).
_API_NAMES = {store: api for api, store in STORE_NAMES.items()}


#: Per-call settings of a :class:`CallConfig` that agents do not have (shown by :func:`config_out`).
_CALL_ONLY = ("voicemail",)


def _config_fields(src: CallConfig | AgentRecord) -> dict[str, Any]:
    """Every agent-defined :class:`CallConfig` field of ``src`` under its API name, containers as JSON."""
    out = {_API_NAMES.get(f.name, f.name): getattr(src, f.name) for f in fields(CallConfig) if f.name not in _CALL_ONLY}
    out["tools"] = [dict(t) for t in src.tools]
    out["secret_refs"] = dict(src.secret_refs)
    return out


def agent_out(rec: AgentRecord) -> AgentOut:
    """An agent record as ``AgentOut``."""
    return AgentOut(id=rec.id, name=rec.name, created_at=rec.created_at, **_config_fields(rec))


def config_out(cfg: CallConfig) -> CallConfigOut:
    """A call's configuration snapshot as ``CallConfigOut`` (``voicemail`` from its snake_case dict)."""
    vm = cfg.voicemail
    voicemail = None if vm is None else VoicemailPolicyOut(
        detect=bool(vm.get("detect", True)), action=vm.get("action", "hangup"), message=str(vm.get("message", "")),
        hold_greeting_ms=int(vm.get("hold_greeting_ms", 0)),
    )  # fmt: skip
    return CallConfigOut(**_config_fields(cfg), voicemail=voicemail)


def turn_out(t: Mapping[str, Any] | TurnRecord) -> TurnOut:
    """A transcript turn (a stored record, or a live session's dict) as ``TurnOut``."""
    if isinstance(t, TurnRecord):
        return TurnOut(
            role=t.role, speaker=_SPEAKERS[t.role], text=t.text, at_ms=t.at_ms, start_ms=t.start_ms,
            end_ms=t.end_ms, interrupted=t.interrupted, heard_ms=t.heard_ms, latency_ms=t.latency_ms,
        )  # fmt: skip
    return TurnOut(
        role=t["role"],
        speaker=_SPEAKERS[t["role"]],
        text=str(t.get("text", "")),
        at_ms=int(t.get("at_ms", 0)),
        start_ms=_ms_or_none(t.get("start_ms")),
        end_ms=_ms_or_none(t.get("end_ms")),
        interrupted=bool(t.get("interrupted", False)),
        heard_ms=t.get("heard_ms"),
        latency_ms=_ms_or_none(t.get("latency_ms")),
    )


#: A turn's role → its speaker.
_SPEAKERS = {"user": "caller", "agent": "agent"}


def _ms_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def event_out(e: Mapping[str, Any] | EventRecord) -> EventOut:
    """A timeline event (a stored record, or a live session's dict) as ``EventOut``."""
    if isinstance(e, EventRecord):
        return EventOut(kind=e.kind, at_ms=e.at_ms, data=e.data)
    return EventOut(kind=str(e["kind"]), at_ms=int(e.get("at_ms", 0)), data=dict(e.get("data") or {}))


def transition_out(t: Mapping[str, Any]) -> TransitionOut:
    """A stored transition dict (``{"from", "to", "at", "source", "detail"}``) as ``TransitionOut``."""
    return TransitionOut(
        from_=t.get("from"), to=t["to"], at=t["at"], source=t["source"],  # type: ignore[call-arg]  # alias "from"
        detail={str(k): str(v) for k, v in (t.get("detail") or {}).items()},
    )  # fmt: skip
