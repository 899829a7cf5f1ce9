"""What the parts of a call session share: its public contracts and its counters.

:class:`Transport` (the carrier socket as the session sees it), :class:`CallPolicy` (per-call
limits and switches), :class:`CallHooks` (the app's callbacks), :class:`CallOutcome` (what the
store gets when the call ends), and two internal pieces: :class:`CallEnded`, the exception that
ends a call with a status and reason, and :class:`CallStats`, the counters every part adds to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.carriers import events as ev

__all__ = ["Transport", "CallPolicy", "CallOutcome", "CallHooks", "CallEnded", "CallStats", "MAX_SAMPLES"]

MAX_SAMPLES = 1000  # latency samples kept per call and metric


class Transport(Protocol):
    """One call's carrier WebSocket, as the session sees it."""

    async def receive(self) -> ev.Frame | None:
        """The next message, or ``None`` once the peer has closed."""
        ...

    async def send(self, frame: ev.Frame) -> None: ...

    # Optional: ``send_pending_s() -> float``, how long (s, real time) the send now in progress
    # has waited for the peer (0 when none is). A session ends the call as ``carrier_stalled``
    # once it passes :data:`gateway.session.call.SEND_STALL_S`.
    #
    # Optional: ``observe(kind: str, payload: dict) -> None``, called synchronously and never
    # raising, with the call's journal events (``"event"``, the record's event dict; an event
    # a journal bound left out of the record comes as ``"moment"``, same dict), its
    # transcript turns as they are added or change (``"turn"``, ``{"index", "turn"}``) and its
    # end (``"ended"``, ``{"status", "endReason"}``, before :meth:`close`): a transport with a
    # live view of the call (the WebRTC data channel, :mod:`gateway.webrtc.transport`).

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """Per-call limits and switches from the agent or inline call (seconds, unless in ms).

    ``barge_in_mode``, ``barge_in_commit_ms``, ``barge_in_resume_gap_ms``: what caller speech
    over agent audio does on an interruptible call (``off``, ``immediate``,
    ``pause_then_commit``; see :mod:`gateway.session.bargein`); a call that is not
    ``interruptible`` is ``off`` whatever the mode. ``barge_in_cues``: in ``pause_then_commit``,
    a likely onset the VAD has not confirmed yet pauses too (:class:`~gateway.vadrun.VadCue`).
    """

    max_duration_s: float = 3000
    inactivity_timeout_s: float = 30
    inactivity_action: str = "hangup"  # or "prompt": ask once, then hang up
    inactivity_prompt: str = "Are you still there?"
    recording_enabled: bool = True
    barge_in_mode: str = "immediate"
    barge_in_commit_ms: float = 400.0
    barge_in_resume_gap_ms: float = 400.0
    barge_in_cues: bool = True


@dataclass(slots=True)
class CallOutcome:
    """What the session hands to the store when the call ends."""

    status: str  # completed | voicemail | failed
    end_reason: str
    duration_ms: int
    transcript: list[dict[str, Any]]
    events: list[dict[str, Any]]
    metrics: dict[str, Any]
    error_code: str | None = None
    error_message: str | None = None
    recording_path: str | None = None
    recording_status: str | None = None  # completed | failed; None: not recorded
    recording_error: str | None = None  # why the recording failed (the call went on)
    started: ev.Started | None = None
    #: The voicemail detector's outcome when the call ran it (see
    #: :meth:`gateway.session.voicemail.VoicemailPolicy.outcome`), else ``None``.
    voicemail: dict[str, Any] | None = None


@dataclass(slots=True)
class CallHooks:
    """Optional callbacks into the app (store, recorder), injected so tests can omit them."""

    on_started: Callable[[ev.Started], Awaitable[None]] | None = None
    open_recorder: Callable[[int], Any] | None = None  # sample rate -> recorder or None
    on_finished: Callable[[CallOutcome], Awaitable[None]] | None = None


class CallEnded(Exception):
    """Raised inside the session to end the call: ``status`` (``completed``, ``voicemail`` or
    ``failed``),
    ``reason`` (the record's ``end_reason``), and for a failure its ``code`` and ``msg``."""

    def __init__(self, reason: str, status: str = "completed", code: str | None = None, msg: str | None = None):
        super().__init__(reason)
        self.reason, self.status, self.code, self.msg = reason, status, code, msg


@dataclass(slots=True)
class CallStats:
    """One call's counters and latency samples (ms), shared by the parts that count them."""

    frames_in: int = 0
    frames_out: int = 0  # agent audio frames (the adapter's frame_ms each) sent
    messages_out: int = 0  # media messages they left in (several frames each where the carrier allows)
    marks_acked: int = 0
    barge_ins: int = 0
    barge_in_pauses: int = 0  # pause-then-commit: pauses begun, and how they ended
    barge_in_resumes: int = 0
    barge_in_commits: int = 0
    other_track_frames: int = 0
    vad_fallback_ticks: int = 0  # media-engine ticks scored by the cheap VAD (the scorer failed)
    turn_latency_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
