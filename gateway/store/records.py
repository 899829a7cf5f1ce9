"""Plain, immutable records the store returns, and the per-call configuration snapshot.

The store never hands out ORM objects: every method returns these frozen dataclasses, so
callers on other threads (or after the session closed) can read them freely.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, Mapping

from gateway.llm.base import AgentConfig, TurnMode
from gateway.store.models import CallStatus

__all__ = [
    "CallConfig",
    "ApiKeyRecord",
    "AgentRecord",
    "TurnRecord",
    "EventRecord",
    "CallRecord",
]

_AGENT_DEFAULTS = AgentConfig()

#: The model-facing fields: every :class:`AgentConfig` field but the per-call ``secrets``.
#: :class:`CallConfig` holds each under the same name.
_MODEL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AgentConfig) if f.name != "secrets")


def _copy_fields(src: object, names: Iterable[str]) -> dict[str, Any]:
    """``{name: src.<name>}`` for each of ``names``, as keyword arguments for another record.

    The containers are copied as every such copy needs: ``tools`` as a tuple (of the same
    dicts), ``secret_refs`` as a new dict.

    Raises:
        AttributeError: ``src`` lacks one of ``names`` (the records drifted apart).
    """
    out = {name: getattr(src, name) for name in names}
    if "tools" in out:
        out["tools"] = tuple(out["tools"])
    if "secret_refs" in out:
        out["secret_refs"] = dict(out["secret_refs"])
    return out


@dataclass(frozen=True, slots=True)
class CallConfig:
    """Everything a call runs with: the model's :class:`AgentConfig` plus call policy.

    Stored as JSON in ``calls.config`` when the call is created (a snapshot: editing the
    agent later does not change calls already created). Holds no secrets.

    Attributes:
        system_prompt, voice, language, greeting, model, temperature, first_speaker,
        interruptible, turn_mode, tools: as in :class:`gateway.llm.base.AgentConfig`.
        barge_in_mode: ``off``, ``immediate`` or ``pause_then_commit`` (see
            :mod:`gateway.session.bargein`); ``None``: the operator's default
            (``GATEWAY_BARGE_IN_MODE``), taken when the call runs. Not interruptible: off.
        barge_in_commit_ms: pause-then-commit: caller speech (ms from its onset) that commits.
        max_duration_s: the call is hung up after this many seconds (60–7,200).
        inactivity_timeout_s: seconds of silence from both sides before ``inactivity_action``.
        inactivity_action: ``hangup`` ends the call; ``prompt`` asks the caller if they are
            still there.
        recording_enabled: record the call to a two-channel WAV.
        voicemail: an outbound call's voicemail policy, snake_case: ``{"detect": bool,
            "action": "hangup" | "leave_message", "message": str, "hold_greeting_ms": int}``
            (read by ``gateway.session.voicemail.VoicemailConfig.from_mapping``); ``None``:
            no answering-machine detection (inbound calls, agents).
    """

    system_prompt: str = _AGENT_DEFAULTS.system_prompt
    voice: str = _AGENT_DEFAULTS.voice
    language: str = _AGENT_DEFAULTS.language
    greeting: str = _AGENT_DEFAULTS.greeting
    model: str = "local"
    temperature: float = 0.0
    first_speaker: Literal["agent", "user"] = "agent"
    interruptible: bool = False
    turn_mode: TurnMode = "gateway"
    tools: tuple[dict[str, Any], ...] = ()
    barge_in_mode: Literal["off", "immediate", "pause_then_commit"] | None = None
    barge_in_commit_ms: int = 400
    max_duration_s: int = 3000
    inactivity_timeout_s: int = 30
    inactivity_action: Literal["hangup", "prompt"] = "hangup"
    recording_enabled: bool = True
    #: Credential name → environment variable holding it (references only, never values).
    #: They resolve per call with :meth:`gateway.tenants.SecretGrants.resolve`, only within
    #: the call's tenant's grant.
    secret_refs: Mapping[str, str] = field(default_factory=dict)
    voicemail: Mapping[str, Any] | None = None

    def agent_config(self, *, secrets: Mapping[str, str] | None = None) -> AgentConfig:
        """The model-facing part, with per-call ``secrets`` (never stored) attached."""
        return AgentConfig(**_copy_fields(self, _MODEL_FIELDS), secrets=dict(secrets or {}))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with snake_case keys (``tools`` as a list)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["tools"] = [dict(t) for t in self.tools]
        out["secret_refs"] = dict(self.secret_refs)
        out["voicemail"] = dict(self.voicemail) if self.voicemail is not None else None
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CallConfig:
        """Rebuild from :meth:`to_json` output; missing keys take defaults, unknown are ignored."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "tools" in kwargs:
            kwargs["tools"] = tuple(dict(t) for t in kwargs["tools"] or ())
        if "secret_refs" in kwargs:
            kwargs["secret_refs"] = dict(kwargs["secret_refs"] or {})
        if kwargs.get("voicemail") is not None:
            kwargs["voicemail"] = dict(kwargs["voicemail"])
        return cls(**kwargs)

    @classmethod
    def from_agent_config(cls, config: AgentConfig, **policy: Any) -> CallConfig:
        """Wrap an :class:`AgentConfig` (dropping its secrets) with call policy ``policy``."""
        return cls(**_copy_fields(config, _MODEL_FIELDS), **policy)


#: The :class:`CallConfig` fields an agent defines; :class:`AgentRecord` holds each under the
#: same name (``voicemail`` is per outbound call, not an agent's).
_CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CallConfig) if f.name != "voicemail")


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key's metadata (the key itself is shown once, at creation, and never stored)."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    #: The tenant the key acts for (:mod:`gateway.tenants`).
    tenant: str = "default"


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """A stored agent."""

    id: str
    name: str
    system_prompt: str
    voice: str
    language: str
    greeting: str
    model: str
    temperature: float
    first_speaker: Literal["agent", "user"]
    interruptible: bool
    turn_mode: TurnMode
    max_duration_s: int
    inactivity_timeout_s: int
    inactivity_action: Literal["hangup", "prompt"]
    recording_enabled: bool
    tools: tuple[dict[str, Any], ...]
    created_at: datetime
    secret_refs: Mapping[str, str] = field(default_factory=dict)
    barge_in_mode: Literal["off", "immediate", "pause_then_commit"] | None = None
    barge_in_commit_ms: int = 400
    #: The tenant of the API key that created the agent.
    tenant: str = "default"

    def call_config(self) -> CallConfig:
        """The configuration a call created from this agent runs with."""
        return CallConfig(**_copy_fields(self, _CONFIG_FIELDS))


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """A transcript turn: ``role`` ``user`` (caller) or ``agent``; ``at_ms`` since call start
    (when its text was final). ``start_ms`` / ``end_ms``: the caller's speech onset and end, or
    the agent's first audio sent and the end of its audio (the heard part when interrupted);
    ``latency_ms``: for an agent turn that followed caller speech, the end of that speech → its
    first audio. All ms since the call started; ``None`` when not measured."""

    seq: int
    role: Literal["user", "agent"]
    text: str
    at_ms: int
    interrupted: bool = False
    heard_ms: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A timeline event; ``at_ms`` since call start, ``data`` free-form JSON."""

    seq: int
    at_ms: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call, with its transcript turns and events when loaded by ``Store.get_call``.

    ``turns`` and ``events`` are empty for records returned by other methods.

    Recording: ``recording_status`` is ``recording`` while the stream runs, then ``completed``
    (``recording_path`` is a valid WAV) or ``failed`` (``recording_error`` says why; the call
    went on without it); ``None`` when the call was not recorded. ``node_id`` is the gateway
    node that served the media stream.

    Outbound calls: ``carrier_account_id`` the account placed through, ``answered_at`` when
    the callee answered, ``carrier_status`` the carrier's final word when it came after the
    gateway finalised the call, ``voicemail`` the answering-machine detection outcome,
    ``outbound`` the request details kept for the record.

    ``transitions`` (filled by ``Store.get_call``, else empty): every status change in order,
    each ``{"from": str | None, "to": str, "at": datetime (aware UTC), "source": "gateway" |
    "carrier" | "media", "detail": {str: str}}``; the first is the creation (``None`` →
    ``queued``). Lifecycle: see :data:`gateway.store.models.TRANSITIONS`.
    """

    id: str
    agent_id: str | None
    config: dict[str, Any]
    connection_type: str
    direction: str
    status: CallStatus
    stream_token_expires_at: datetime
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    duration_ms: int | None = None
    recording_path: str | None = None
    recording_status: str | None = None
    recording_error: str | None = None
    node_id: str | None = None
    #: The claiming process run and its lease (:mod:`gateway.store.leases`); ``None``: no lease.
    node_run: str | None = None
    lease_until: datetime | None = None
    lease_renewed_at: datetime | None = None
    metrics: dict[str, Any] | None = None
    carrier_call_id: str | None = None
    stream_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    #: The tenant of the API key that created the call (its secrets resolve within its grant).
    tenant: str = "default"
    carrier_account_id: str | None = None
    answered_at: datetime | None = None
    carrier_status: str | None = None
    voicemail: dict[str, Any] | None = None
    outbound: dict[str, Any] | None = None
    #: After the call (:mod:`gateway.api.after_call_schemas`): the fields asked for, the
    #: post-call step's status / error / summary / extracted values, the per-call webhook URL.
    post_call_fields: list[dict[str, Any]] | None = None
    post_call_status: str | None = None
    post_call_error: str | None = None
    summary: str | None = None
    extracted: dict[str, Any] | None = None
    webhook_url: str | None = None
    #: Where the API transferred the call (E.164) and when (``Store.mark_transferred``).
    transferred_to: str | None = None
    transferred_at: datetime | None = None
    turns: tuple[TurnRecord, ...] = ()
    events: tuple[EventRecord, ...] = ()
    transitions: list[dict[str, Any]] = field(default_factory=list)

    def call_config(self) -> CallConfig:
        """The call's configuration snapshot as a :class:`CallConfig`."""
        return CallConfig.from_json(self.config)

    @property
    def recording_state(self) -> str | None:
        """``recording_status``, reading a row that predates it (path, no status) as ``completed``."""
        if self.recording_status:
            return self.recording_status
        return "completed" if self.recording_path else None
