"""Pydantic v2 models of the REST API's request and response bodies (camelCase on the wire).

Request bodies are strict (``"0.5"`` is not a number, ``"true"`` is not a boolean) and
forbid unknown fields, so a typo is a 422 naming the field rather than a silently ignored
setting. Python attribute names are snake_case; :func:`pydantic.alias_generators.to_camel`
gives the wire names (``system_prompt`` ↔ ``systemPrompt``).
"""

from __future__ import annotations

import re

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_serializer

from gateway.api.after_call_schemas import AfterCallFields
from gateway.api.context import scope_of
from gateway.api.record_schemas import LatencyOut, PostCallOut, TransferOut
from gateway.api.schema_base import TOOL_URL, _Request, _Response
from gateway.llm.endpoints import ENDPOINT_NAME, SelectorError, check_selector
from gateway.llm.tools import ToolConfigError, parse_tools
from gateway.tenants import UNAVAILABLE

__all__ = [
    "ConnectionType",
    "ToolSpec",
    "AgentCreate",
    "CallCreate",
    "InlineCallCreate",
    "AgentOut",
    "Instructions",
    "CallCreated",
    "IceServer",
    "TurnOut",
    "EventOut",
    "CallErrorOut",
    "RecordingOut",
    "CallConfigOut",
    "VoicemailPolicyOut",
    "TransitionOut",
    "CallStatusT",
    "CallOut",
    "FieldError",
    "ErrorBody",
    "ErrorResponse",
    "HealthOut",
]

ConnectionType = Literal["twilio", "telnyx", "plivo", "vonage", "exotel", "raw", "webrtc"]
FirstSpeaker = Literal["agent", "user"]
TurnModeT = Literal["gateway", "server_vad", "semantic_vad"]
BargeInModeT = Literal["off", "immediate", "pause_then_commit"]
InactivityAction = Literal["hangup", "prompt"]


#: API field name → the name of the same setting in the store (``CallConfig``, ``AgentRecord``,
#: ``Store.create_agent``), where the two differ: the API leaves out the unit suffix. Every
#: other configuration field has one name in both.
STORE_NAMES: dict[str, str] = {"max_duration": "max_duration_s", "inactivity_timeout": "inactivity_timeout_s"}

#: A credential's name, as the model registry and tool declarations look it up.
SECRET_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Environment variables a secret reference may name (nothing else of the process is reachable).
SECRET_VAR = re.compile(r"GATEWAY_SECRET_[A-Z0-9_]{1,100}")


def _integral(value: Any) -> Any:
    """``600.0`` → ``600``: JSON Schema's ``integer`` is any number with no fractional part."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: An integer field of a (strict) request body: ``60`` or ``60.0``; never ``"60"`` or ``true``.
WholeNumber = Annotated[int, BeforeValidator(_integral)]


class ToolSpec(_Request):
    """A function the model may call; the gateway POSTs its arguments to ``url``.

    Same shape as :mod:`gateway.llm.tools` declarations (``timeout_s`` may also be spelled
    ``timeoutS``); checked with :func:`gateway.llm.tools.parse_tools`.
    """

    type: Literal["function"] = "function"
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Function name.")
    description: str = Field("", max_length=1024)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the function's arguments.",
    )
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the arguments are POSTed: https:// to a public host; private, loopback "
        "and link-local targets (and http://) only when the operator allows them "
        "(GATEWAY_OUTBOUND_ALLOW).",
        json_schema_extra={"pattern": f"^{TOOL_URL.pattern}$"},  # what _url_form accepts
    )
    timeout_s: float = Field(10.0, gt=0, le=30, alias="timeoutS", description="Request time limit (s).")
    secret: str | None = Field(
        None,
        max_length=200,
        description="Name of a per-call secret sent as Authorization: Bearer <value>.",
    )

    @field_validator("url")
    @classmethod
    def _url_form(cls, url: str) -> str:
        """The URL's form only; which hosts are allowed is the outbound policy's (``tools``)."""
        if not TOOL_URL.fullmatch(url):
            raise ValueError("must be http(s)://host[:port][/path] with no user name, password or spaces")
        return url

    def declaration(self) -> dict[str, Any]:
        """The declaration dict stored with the agent (``gateway.llm.tools`` shape)."""
        out = self.model_dump(by_alias=False)
        if out["secret"] is None:
            del out["secret"]
        return out


class _AgentFields(_Request):
    """Fields shared by agents and inline calls; they map onto ``AgentConfig`` + call policy."""

    system_prompt: str = Field(min_length=1, max_length=50_000, description="Instructions for the model.")
    voice: str = Field(min_length=1, max_length=100, description="Voice name (backend-specific).")
    language: str = Field(
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$",
        max_length=35,
        description="BCP-47 language tag, e.g. en-US.",
    )
    greeting: str = Field(max_length=2_000, description="What the agent says first (firstSpeaker agent).")
    model: str = Field(
        "local",
        min_length=1,
        max_length=200,
        description="Backend selector: local, openai:<model>, azure:<deployment>, xai:<model>, "
        "compat:<model>, gemini:<model>; <selector>@<name> picks an endpoint the operator "
        "configured (GATEWAY_MODEL_ENDPOINTS). A URL is refused.",
        # the form parse_selector accepts after ':' (the endpoint must also be configured)
        json_schema_extra={"pattern": f"^[^:]*(?::[^@]*(?:@{ENDPOINT_NAME.pattern})?)?$"},
    )
    temperature: float = Field(0.0, ge=0.0, le=1.0, description="Sampling temperature, 0–1.")
    first_speaker: FirstSpeaker = Field("agent", description="Who speaks first.")
    interruptible: bool = Field(False, description="Whether caller speech barges in on the agent.")
    turn_mode: TurnModeT = Field(
        "gateway", description="Who detects end of turn: the gateway's VAD or the model's."
    )
    barge_in_mode: BargeInModeT | None = Field(
        None,
        description="What caller speech over the agent does on an interruptible call: immediate "
        "(the agent stops at once: carrier clear, reply cancelled and truncated at what the "
        "caller heard); pause_then_commit (the agent pauses at once, with no clear; if the "
        "caller goes on for bargeInCommitMs it stops as in immediate, at what played before the "
        "pause, else it resumes where it paused: backchannels and coughs do not cut it); off "
        "(never). null: the operator's default (GATEWAY_BARGE_IN_MODE, immediate unless set). "
        "interruptible false is off whatever this says.",
    )
    barge_in_commit_ms: WholeNumber = Field(
        400, ge=50, le=5000,
        description="pause_then_commit: caller speech from its onset (ms) that makes a pause a "
        "barge-in; shorter speech resumes the agent.",
    )
    max_duration: WholeNumber = Field(3000, ge=60, le=7200, description="Maximum call length (s).")
    inactivity_timeout: WholeNumber = Field(
        30, ge=10, le=300, description="Silence from both sides before inactivityAction (s)."
    )
    inactivity_action: InactivityAction = Field("hangup", description="What inactivity does.")
    recording_enabled: bool = Field(True, description="Record the call (two-channel WAV).")
    tools: list[ToolSpec] = Field(default_factory=list, max_length=64)
    secret_refs: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Credentials by reference: credential name (e.g. openai_api_key, or a tool's "
            "secret) → the name of an environment variable of the gateway that holds it, which "
            "must start with GATEWAY_SECRET_ and be granted to the API key's tenant "
            "(GATEWAY_SECRET_<TENANT>_*, or GATEWAY_TENANT_SECRETS). Only the reference is "
            "stored or returned."
        ),
        json_schema_extra={  # what _refs_resolvable accepts, so clients and tests can know it
            "propertyNames": {"pattern": f"^{SECRET_NAME.pattern}$"},
            "additionalProperties": {"type": "string", "pattern": f"^{SECRET_VAR.pattern}$"},
        },
    )

    @field_validator("secret_refs")
    @classmethod
    def _refs_resolvable(cls, refs: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """Each reference must be granted to the key's tenant and set; both failures get the
        same message (:data:`gateway.tenants.UNAVAILABLE`), so no key learns what exists."""
        scope = scope_of(info)
        for name, var in refs.items():
            if not SECRET_NAME.fullmatch(name):
                raise ValueError(f"{name!r}: credential names are lower_snake_case, at most 64 characters")
            if not SECRET_VAR.fullmatch(var):
                raise ValueError(f"{name}: {var!r} must name an environment variable starting with GATEWAY_SECRET_")
            if not scope.grants.available(scope.tenant, var, scope.environ):
                raise ValueError(f"{name}: {var} {UNAVAILABLE}")
        return refs

    @field_validator("model")
    @classmethod
    def _model_selects_no_url(cls, model: str, info: ValidationInfo) -> str:
        try:
            check_selector(model, scope_of(info).endpoints)
        except SelectorError as exc:
            raise ValueError(str(exc)) from None
        return model

    @field_validator("tools")
    @classmethod
    def _tools_usable(cls, tools: list[ToolSpec], info: ValidationInfo) -> list[ToolSpec]:
        decls = [{k: v for k, v in t.declaration().items() if k != "secret"} for t in tools]
        try:
            parse_tools(decls, policy=scope_of(info).outbound)
        except ToolConfigError as exc:
            raise ValueError(str(exc)) from None
        return tools

    def policy(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``CallConfig`` / ``Store.create_agent``
        (renamed by :data:`STORE_NAMES`; ``tools`` as declaration dicts)."""
        out = {STORE_NAMES.get(name, name): getattr(self, name) for name in _AgentFields.model_fields}
        out["tools"] = tuple(t.declaration() for t in self.tools)
        out["secret_refs"] = dict(self.secret_refs)
        return out


class AgentCreate(_AgentFields):
    """Body of ``POST /agents``."""

    name: str = Field(min_length=1, max_length=200)


class CallCreate(AfterCallFields):
    """Body of ``POST /calls/create``: a call running a stored agent."""

    agent_id: str = Field(min_length=1, max_length=64)
    connection_type: ConnectionType = "twilio"


class InlineCallCreate(_AgentFields, AfterCallFields):
    """Body of ``POST /calls/inline``: a call with its configuration in the request."""

    connection_type: ConnectionType = "twilio"


class AgentOut(_Response):
    """An agent."""

    id: str
    name: str
    system_prompt: str
    voice: str
    language: str
    greeting: str
    model: str
    temperature: float
    first_speaker: FirstSpeaker
    interruptible: bool
    turn_mode: TurnModeT
    barge_in_mode: BargeInModeT | None = Field(
        None, description="immediate, pause_then_commit or off; null: the operator's default."
    )
    barge_in_commit_ms: int = Field(400, description="pause_then_commit: caller speech that commits (ms).")
    max_duration: int = Field(description="Maximum call length (s).")
    inactivity_timeout: int = Field(description="Seconds of silence before inactivityAction.")
    inactivity_action: InactivityAction
    recording_enabled: bool
    tools: list[dict[str, Any]]
    secret_refs: dict[str, str] = Field(default_factory=dict, description="Credential references (never values).")
    created_at: datetime


class Instructions(_Response):
    """The document to give the carrier so it streams the call to this gateway."""

    content_type: str = Field(description="e.g. application/xml (TwiML), application/json (NCCO).")
    body: str


class IceServer(_Response):
    """A STUN or TURN server for the browser's ``RTCPeerConnection`` (``iceServers`` entry)."""

    urls: list[str] = Field(description="stun:host:port, turn:host:port?transport=udp, turns:…")
    username: str | None = Field(None, description="TURN only (absent for STUN).")
    credential: str | None = Field(None, description="TURN only (absent for STUN).")

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: Any) -> dict[str, Any]:
        """``username`` and ``credential`` are left out, not null, when unset (a browser reads
        a null username as the string "null")."""
        return {k: v for k, v in handler(self).items() if v is not None}


class CallCreated(_Response):
    """Response of ``POST /calls/create`` and ``POST /calls/inline``."""

    call_id: str
    stream_url: str = Field(
        description="wss://<host>/stream/<connectionType>/<callId>/<token>; the token is in the "
        "path because some carriers drop query strings. Valid once, until streamUrlExpiresAt. "
        "For webrtc: the offer URL (offerUrl)."
    )
    stream_url_expires_at: datetime
    connection_type: ConnectionType
    instructions: Instructions | None = Field(
        description="Carrier instruction document (TwiML for twilio), or null when the carrier "
        "has none (raw, webrtc)."
    )
    offer_url: str | None = Field(
        None, description="webrtc only: https://<host>/webrtc/<callId>/<token>/offer; POST the "
        "SDP offer there ({type: offer, sdp}) to get the answer. One use, until streamUrlExpiresAt; "
        "null for other connection types.",
    )
    ice_servers: list[IceServer] | None = Field(
        None, description="webrtc only: the STUN/TURN servers for the RTCPeerConnection (empty: "
        "host candidates only); null for other connection types.",
    )


class TurnOut(_Response):
    """A transcript turn."""

    role: Literal["user", "agent"]
    speaker: Literal["caller", "agent"] = Field(description="Who spoke: the caller (role user) or the agent.")
    text: str
    at_ms: int = Field(description="ms since the call started, when the turn's text was final.")
    start_ms: int | None = Field(None, description="Caller: speech onset; agent: first audio sent (ms since start).")
    end_ms: int | None = Field(None, description="Caller: end of speech; agent: end of its audio (heard part).")
    interrupted: bool
    heard_ms: int | None = Field(None, description="For interrupted agent turns: ms the caller heard.")
    latency_ms: int | None = Field(
        None, description="Agent turns: the caller's end of speech → this reply's first audio sent (ms)."
    )


class EventOut(_Response):
    """A call timeline event."""

    kind: str
    at_ms: int = Field(description="ms since the call started.")
    data: dict[str, Any]


class CallErrorOut(_Response):
    """Why a call failed."""

    code: str
    message: str


class RecordingOut(_Response):
    """A call's two-channel WAV (left caller, right agent) and how its recording went.

    Recording is best effort: a full disk or an unwritable directory stops it (``failed``,
    with the ``error``) and the call goes on.
    """

    status: Literal["recording", "completed", "failed"] = Field(
        description="recording: the call is streaming; completed: path and url give the WAV; "
        "failed: error says why (the call went on without it)."
    )
    path: str | None = Field(None, description="The WAV on the gateway's disk (recording, completed).")
    url: str | None = Field(None, description="GET it with the X-API-Key header (completed only).")
    error: str | None = Field(None, description="Why recording failed, e.g. 'write: [Errno 28] No space left on device'.")


class VoicemailPolicyOut(_Response):
    """An outbound call's answering-machine policy (as ``POST /calls/outbound`` set it)."""

    detect: bool
    action: Literal["hangup", "leave_message"]
    message: str
    hold_greeting_ms: int = Field(description="How long the agent's first words waited for the verdict (ms).")


class CallConfigOut(_Response):
    """The configuration a call ran with (snapshot taken when it was created)."""

    system_prompt: str
    voice: str
    language: str
    greeting: str
    model: str
    temperature: float
    first_speaker: FirstSpeaker
    interruptible: bool
    turn_mode: TurnModeT
    barge_in_mode: BargeInModeT | None = Field(
        None, description="immediate, pause_then_commit or off; null: the operator's default at the time the call ran."
    )
    barge_in_commit_ms: int = Field(400, description="pause_then_commit: caller speech that commits (ms).")
    max_duration: int
    inactivity_timeout: int
    inactivity_action: InactivityAction
    recording_enabled: bool
    tools: list[dict[str, Any]]
    secret_refs: dict[str, str] = Field(default_factory=dict, description="Credential references (never values).")
    voicemail: VoicemailPolicyOut | None = Field(None, description="Outbound calls' voicemail policy (else null).")


CallStatusT = Literal[
    "queued", "initiated", "ringing", "in_progress", "completed", "failed", "no_answer", "busy",
    "declined", "voicemail", "canceled", "expired",
]  # fmt: skip


class TransitionOut(_Response):
    """One status change of a call (the first is its creation, from null to queued)."""

    from_: CallStatusT | None = Field(alias="from")
    to: CallStatusT
    at: datetime
    source: Literal["gateway", "carrier", "media"] = Field(
        description="Who moved it: the gateway (API, expiry, hang-up), a carrier callback, or the media stream."
    )
    detail: dict[str, str] = Field(description="e.g. carrierCallId, rawStatus, sipCode.")


class CallOut(_Response):
    """A call record (``GET /calls/{callId}``)."""

    id: str
    agent_id: str | None
    status: CallStatusT
    live: bool = Field(description="True when transcript and events come from the running call.")
    direction: str
    connection_type: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    error: CallErrorOut | None
    duration_ms: int | None
    from_: str | None = Field(alias="from")
    to: str | None
    carrier_call_id: str | None
    carrier_account_id: str | None = Field(description="The carrier account an outbound call was placed through.")
    answered_at: datetime | None = Field(description="When the carrier reported the callee answered.")
    carrier_status: str | None = Field(
        description="The carrier's final status when it came after the gateway ended the call (e.g. completed)."
    )
    stream_id: str | None
    transitions: list[TransitionOut] = Field(description="Every status change, oldest first.")
    voicemail: dict[str, Any] | None = Field(
        description="Answering-machine detection outcome: verdict, decidedMs, cues, beepEndMs, action "
        "(none, hung_up, message_left, released), events; null when detection did not run."
    )
    config: CallConfigOut
    transcript: list[TurnOut]
    events: list[EventOut]
    recording: RecordingOut | None
    metrics: dict[str, Any] | None
    # after the call (gateway.api.call_views.call_out)
    objective: str | None = Field(description="An outbound call's objective, as requested.")
    summary: str | None = Field(description="Plain-language summary (post-call step); null until done.")
    extracted: dict[str, Any] | None = Field(description="The requested fields' values (null: not supported).")
    post_call: PostCallOut
    recording_url: str | None = Field(description="recording.url: the finished WAV (X-API-Key), else null.")
    duration_sec: float | None = Field(description="Call length (s), null until it ended.")
    latency: LatencyOut
    transfer: TransferOut | None = Field(None, description="Where the call was transferred (control transfer).")


class FieldError(_Response):
    """One invalid field: its dotted path in the body (``tools.0.name``) and what is wrong."""

    field: str
    message: str


class ErrorBody(_Response):
    """An error: a stable ``code`` and a human-readable ``message``."""

    code: str = Field(
        description="unauthorized, not_found, validation_error, invalid_json, payload_too_large, "
        "unsupported_media_type, method_not_allowed, unavailable, internal_error"
    )
    message: str
    fields: list[FieldError] | None = Field(None, description="Present for validation_error.")


class ErrorResponse(_Response):
    """Every error response: ``{"error": {...}}``."""

    error: ErrorBody


class HealthOut(_Response):
    """``GET /health``."""

    status: Literal["ok"]
